/**
 * Moore–Penrose pseudo-inverse through the SVD.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";
import { type F32, realize, type Tensor, withShape } from "../tensor/tensor.ts";
import { checkMatrix, JACOBI_OPTION_FIELDS } from "./common.ts";
import { refuseUnreadJacobiOptions, type SvdOptions, svdRows } from "./svd.ts";

/** Machine epsilon of float32 (`numpy.finfo(numpy.float32).eps`, 2⁻²³). */
export const F32_EPS = 2 ** -23;

const PINV_OPTIONS = z.object({
  ...JACOBI_OPTION_FIELDS,
  fused: z.boolean().optional(),
  rcond: z.number().min(0).optional(),
}).strict();

/** Options of {@link pinv}. */
export interface PinvOptions extends Omit<SvdOptions, "flip"> {
  /**
   * Relative cutoff: singular values `σ ≤ rcond · σ_max` are treated as zero. Default `max(m, n) · eps` with
   * eps = 2⁻²³, numpy's default for float32 (`numpy.linalg.pinv(..., rtol=None)`, `torch.linalg.pinv`).
   */
  rcond?: number;
}

/**
 * Pseudo-inverse `A⁺ = V diag(σ⁺) Uᵀ` of an m×n matrix, where `σ⁺ = 1/σ` for `σ > rcond·σ_max` and 0
 * otherwise, computed on the device of `a` from {@link svd} (no read-back unless `check` is set).
 *
 * @example
 * ```ts
 * import { tensor } from "../../mod.ts";
 * import { pinv } from "./mod.ts";
 * const p = await pinv(tensor([[1, 2], [2, 4], [0, 0]])); // rank 1
 * console.log(p.shape); // [2, 3]
 * ```
 */
export async function pinv<M extends number, N extends number>(
  a: Tensor<[M, N], "f32"> | F32,
  opts: PinvOptions = {},
): Promise<Tensor<[N, M], "f32">> {
  const [m, n] = checkMatrix("pinv", a);
  const { rcond = Math.max(m, n) * F32_EPS, ...svdOpts } = checkOptions("pinv", PINV_OPTIONS, opts);
  refuseUnreadJacobiOptions("pinv", m, n, svdOpts);
  const { uRows, s, vRows } = await svdRows(a, svdOpts);
  const k = s.shape[0];
  const cutoff = s.max().mul(rcond);
  const inv = s.gt(cutoff).where(s.reciprocal(), 0).reshape([k, 1]);
  const p = (vRows.mul(inv).transpose()).matmul(uRows); // V diag(σ⁺) Uᵀ
  await realize(p);
  uRows.dispose();
  s.dispose();
  vRows.dispose();
  return withShape<[N, M]>(p, [n, m]);
}
