/**
 * Randomized SVD with the semantics of `torch.svd_lowrank` (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1).
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";
import { randn } from "../tensor/creation.ts";
import { type F32, realize, type Tensor } from "../tensor/tensor.ts";
import { checkInt, checkMatrix, disposeUnless, largestPositiveSigns } from "./common.ts";
import { qr } from "./qr.ts";
import { type SvdOptions, type SvdResult, svdResult, svdRows } from "./svd.ts";

const SVD_LOW_RANK_OPTIONS = z.object({
  sweeps: opt.count().optional(),
  flip: z.enum(["u", "v"]).optional(),
  niter: opt.index().optional(),
  seed: opt.seed().optional(),
  oversample: opt.index().optional(),
}).strict();

/** Options of {@link svdLowRank}. */
export interface SvdLowRankOptions extends Pick<SvdOptions, "sweeps" | "flip"> {
  /** Subspace (power) iterations, each followed by re-orthonormalisation as in torch (default 2, torch's). */
  niter?: number;
  /** Seed of the Gaussian test matrix (default 0; the same seed gives the same result). */
  seed?: number;
  /**
   * Extra random columns beyond `q` (default 0: torch's semantics, q columns and no oversampling). The range
   * is then found with `q + oversample` columns and the result truncated to q.
   */
  oversample?: number;
}

/**
 * Approximate top-q SVD `A ≈ U diag(S) Vᵀ` by randomized subspace iteration, with the semantics of
 * `torch.svd_lowrank(A, q, niter)` (used by PEFT's `pissa_niter_K`): a wide A is transposed ("assume A is
 * tall"); `Y = A Ω` with Ω an n×q Gaussian (`randn`, seeded), `Q = qr(Y).Q`; then `niter` times
 * `Q = qr(Aᵀ Q).Q, Q = qr(A Q).Q`; finally the exact SVD of the small `B = Qᵀ A` gives `U = Q U_B`, S and
 * V. With q columns and no oversampling the k-th vector converges like `(σ_(q+1)/σ_k)^(2·niter+1)`, so
 * `niter = 16` recovers the top-q subspace of a matrix whose spectrum decays well past q.
 *
 * Everything runs on the device of `a` (Householder QR and Jacobi SVD kernels, tensor matmuls), in about
 * `2·niter + 2` submissions without read-back. Unlike torch, the signs follow {@link SvdOptions.flip}
 * (largest-|·| entry of each column of U positive by default) and the random numbers are the project's
 * counter-based generator, so results are reproducible across devices but not equal to torch's.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { svdLowRank } from "./mod.ts";
 * const a = randn([64, 8], { seed: 1 }).matmul(randn([8, 48], { seed: 2 }));
 * const { u, s, v } = await svdLowRank(a, 8, { niter: 4, seed: 7 });
 * console.log(u.shape, s.shape, v.shape); // [64, 8] [8] [48, 8]
 * ```
 */
export async function svdLowRank<M extends number, N extends number>(
  a: Tensor<[M, N], "f32"> | F32,
  q: number,
  opts: SvdLowRankOptions = {},
): Promise<SvdResult<M, N>> {
  const [m, n] = checkMatrix("svdLowRank", a);
  checkInt("svdLowRank", "q", q, 1, Math.min(m, n));
  const { niter = 2, oversample = 0, seed = 0 } = checkOptions("svdLowRank", SVD_LOW_RANK_OPTIONS, opts);
  const l = Math.min(q + oversample, Math.min(m, n));
  await a.realize(); // it is read 2·niter + 2 times
  const tall = m >= n;
  const x = tall ? a : a.transpose(); // working matrix, tall: rows ≥ cols
  const cols = tall ? n : m;
  const omega = randn([cols, l], { seed, device: a.device });
  // Only Q of each factorisation is used: R is released at once (not left to the garbage collector).
  const orth = async (y: F32) => {
    const f = await qr(y as Tensor<[number, number], "f32">);
    f.r.dispose();
    return f.q;
  };
  let basis = await orth(x.matmul(omega));
  for (let i = 0; i < niter; i++) {
    const z = await orth((x.transpose()).matmul(basis));
    basis.dispose();
    basis = await orth(x.matmul(z));
    z.dispose();
  }
  const b = (basis.transpose()).matmul(x); // l × cols
  const small = await svdRows(b, { sweeps: opts.sweeps });
  // Working factors: U = Q U_B (rows: U_Bᵀ Qᵀ), V = V_B; truncated to q.
  let uRows: F32 = (small.uRows.slice([0, q])).matmul(basis.transpose());
  let vRows = small.vRows.slice([0, q]) as F32;
  if (!tall) [uRows, vRows] = [vRows, uRows]; // A = Xᵀ = V S Uᵀ
  const signs = largestPositiveSigns((opts.flip ?? "u") === "u" ? uRows : vRows);
  const u = uRows.mul(signs).transpose();
  const vh = vRows.mul(signs);
  const s = small.s.slice([0, q]);
  await realize(u, vh, s);
  basis.dispose();
  for (const t of [small.uRows, small.vRows, small.s]) disposeUnless(t, u, vh, s);
  return svdResult(u, s, vh);
}
