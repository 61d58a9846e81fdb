/**
 * Symmetric eigendecomposition on the GPU by Jacobi rotations.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";
import { eye } from "../tensor/creation.ts";
import { type F32, realize, type Tensor, withShape } from "../tensor/tensor.ts";
import {
  absMaxScale,
  checkMatrix,
  descendingPerm,
  iota,
  JACOBI_OPTION_FIELDS,
  largestPositiveSigns,
  nonFinitePoison,
} from "./common.ts";
import { refuseUnreadJacobiOptions, svdColumns } from "./svd.ts";

const EIGH_OPTIONS = z.object({
  ...JACOBI_OPTION_FIELDS,
  order: z.enum(["ascending", "descending"]).optional(),
}).strict();

/** Options of {@link eigh}. */
export interface EighOptions {
  /** Order of the eigenvalues: `"ascending"` (default, like numpy and torch) or `"descending"`. */
  order?: "ascending" | "descending";
  /** Jacobi sweeps, at least 1 (default as in {@link svd}: `max(8, ⌈5 + 0.9·log2 n⌉)`). */
  sweeps?: number;
  /**
   * Read back the rotation counter every `check` sweeps and stop early (default 0: no read-back). Refused for
   * n ≤ 64, where the one-kernel solver runs, which stops at convergence itself.
   */
  check?: number;
  /**
   * Convergence threshold on the cosine between columns, in (0, 1) (default √n · 2⁻²⁴): of `check`, and for
   * n ≤ 64 of the one-kernel solver's stop; refused where neither runs, as it would change nothing.
   */
  tol?: number;
}

/** Eigenpairs of a symmetric n×n matrix: `S · vectors = vectors · diag(values)`. */
export interface EighResult<N extends number> {
  /** The n eigenvalues, sorted as asked. */
  values: Tensor<[N], "f32">;
  /** n×n, orthonormal eigenvectors as columns (column k belongs to `values[k]`). */
  vectors: Tensor<[N, N], "f32">;
}

/**
 * Eigendecomposition of a real symmetric matrix, `S = V diag(λ) Vᵀ`, computed on its device.
 *
 * Like `numpy.linalg.eigh`, only the lower triangle of `s` is read (the upper one is taken as its mirror).
 * Method: with `c = ‖S‖_F ≥ ‖S‖₂`, the shifted matrix `S + cI` is positive semi-definite with the same
 * eigenvectors, so its singular vectors are eigenvectors of S even when eigenvalues of S differ only in sign.
 * Its SVD is computed by the preconditioned one-sided Jacobi method of {@link svd} (Householder QR, then
 * Jacobi rotations on Rᵀ accumulated into `Q V'`, which is orthonormal by construction), and the eigenvalues
 * are the Rayleigh quotients `λ_k = v_kᵀ S v_k` (accurate to about `eps·‖S‖`, independent of the shift).
 * Eigenvectors of a repeated eigenvalue are an arbitrary orthonormal basis of its eigenspace.
 *
 * Sign convention: the largest-magnitude entry of each eigenvector is positive (first one on ties). The lower
 * triangle must be finite: NaN or infinite entries give all-NaN results on every device.
 *
 * Read-backs: none unless `check` is set (see {@link EighOptions.check}).
 *
 * @example
 * ```ts
 * import { tensor } from "../../mod.ts";
 * import { eigh } from "./mod.ts";
 * const { values, vectors } = await eigh(tensor([[2, 1], [1, 2]]));
 * console.log(await values.data(), vectors.shape); // ≈ [1, 3], [2, 2]
 * ```
 */
export async function eigh<N extends number>(
  s: Tensor<[N, N], "f32"> | F32,
  opts: EighOptions = {},
): Promise<EighResult<N>> {
  const [n, n2] = checkMatrix("eigh", s);
  if (n !== n2) throw new RangeError(`eigh: expected a square matrix, got shape [${s.shape}]`);
  checkOptions("eigh", EIGH_OPTIONS, opts);
  refuseUnreadJacobiOptions("eigh", n, n, opts);
  const order = opts.order ?? "ascending";
  const x = s;
  const dev = x.device;
  const i = iota(n, dev).reshape([n, 1]) as F32;
  const j = iota(n, dev).reshape([1, n]) as F32;
  const sym = i.ge(j).where(x, x.transpose()); // lower triangle, mirrored
  const scale = absMaxScale(sym);
  const sn = sym.div(scale);
  const poison = nonFinitePoison(sym as F32); // of the lower triangle, the part eigh reads
  await realize(scale, sn, poison);
  const c = sn.square().sum().sqrt();
  // Symmetric, so it is its own column-major form.
  const shifted = sn.add((eye(n, n, { device: dev })).mul(c));
  const core = await svdColumns(shifted, n, n, {
    sweeps: opts.sweeps,
    check: opts.check,
    tol: opts.tol,
    noV: true,
  });
  const vecRows = core.uRows;
  const lam = vecRows.matmul(sn).mul(vecRows).sum(1); // Rayleigh quotients of the scaled matrix
  const perm = descendingPerm(order === "ascending" ? lam.neg() : lam);
  const sorted = vecRows.gather(perm, 0);
  const vectors = sorted.mul(largestPositiveSigns(sorted)).transpose().add(poison);
  const values = lam.gather(perm, 0).mul(scale).add(poison);
  await realize(values, vectors);
  for (const t of [core.uRows, core.s, sn, scale, poison]) t.dispose();
  return {
    values: withShape<[N]>(values, [n]),
    vectors: withShape<[N, N]>(vectors, [n, n]),
  };
}
