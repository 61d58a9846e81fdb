/**
 * Thin singular value decomposition on the GPU by one-sided (Hestenes) Jacobi.
 *
 * @module
 */
import { JACOBI_TINY, JACOBI_ZERO_REL } from "../../kernels/jacobi.wgsl.ts";
import { eye, randn, tensor } from "../tensor/creation.ts";
import { type F32, realize, type Tensor, withShape } from "../tensor/tensor.ts";
import { z } from "../../deps.ts";
import { checkOptions, OptionsError } from "../options.ts";
import {
  absMaxScale,
  checkMatrix,
  descendingPerm,
  JACOBI_OPTION_FIELDS,
  largestPositiveSigns,
  nonFinitePoison,
} from "./common.ts";
import { defaultSweeps, F32_UNIT_ROUNDOFF, jacobiSweeps, roundUp4 } from "./jacobi.ts";
import {
  JACOBI_SOLVE_WGSL,
  jacobiSolveHost,
  jacobiSolveParams,
  SOLVE_DISPATCH,
  SOLVE_MAX_COLS,
  SOLVE_MAX_ROWS,
  solveShape,
  solveSweepBudget,
} from "../../kernels/jacobi_solve.wgsl.ts";
import { LOOP_BUDGET } from "../codegen/split_loops.ts";
import { runKernels } from "../tensor/custom.ts";
import { householderColumns, upperR } from "./qr.ts";

/** Seed of the random vectors that complete V where singular values are numerically zero. */
const COMPLETION_SEED = 0x51d0_c0de;

const SVD_OPTIONS = z.object({
  ...JACOBI_OPTION_FIELDS,
  fused: z.boolean().optional(),
  flip: z.enum(["u", "v"]).optional(),
}).strict();

/** Options of {@link svd}. */
export interface SvdOptions {
  /**
   * Jacobi sweeps, at least 1 (the maximum when `check` is set). Default: `max(8, ⌈5 + 0.9·log2 k⌉)` for k = min(m, n)
   * (11 at 64, 13 at 256, 14 at 1024, 16 at 4096), measured to converge on random, rank-deficient (also with
   * repeated or dependent columns among independent ones), ill-conditioned and clustered spectra with 1–3
   * sweeps of margin (see `defaultSweeps` in jacobi.ts).
   */
  sweeps?: number;
  /**
   * Read the rotation counter back to the host every `check` sweeps (~11 ms each) and stop early once a
   * sweep made no rotation above `tol`. Default 0: no read-back, run exactly `sweeps` sweeps. Refused where the
   * one-kernel solver runs (see `fused`), which stops at convergence itself.
   */
  check?: number;
  /**
   * Convergence threshold on the cosine of two columns, in (0, 1): of `check`, and of the one-kernel solver's
   * stop (default √k · 2⁻²⁴, k = min(m, n)). Refused where neither runs (no `check`, and a matrix the one-kernel
   * solver does not take), as it would change nothing.
   */
  tol?: number;
  /**
   * Run the whole Jacobi iteration in one kernel without QR preconditioning (`kernels/jacobi_solve.wgsl.ts`: one
   * launch instead of about a thousand, stopping at convergence without a read-back; `sweeps` is then the most
   * it runs, default {@link FUSED_SWEEPS}). Default: for matrices with min(m, n) ≤ 64 and max(m, n) ≤ 128.
   */
  fused?: boolean;
  /**
   * Sign convention: `"u"` (default) makes the largest-magnitude entry of each left singular vector
   * positive; `"v"` does so for each right singular vector (scikit-learn's
   * `svd_flip(u_based_decision=False)`, used by PCA). Ties in magnitude: the first entry decides.
   */
  flip?: "u" | "v";
}

/** Thin SVD factors of an m×n matrix, K = min(m, n): `A = U diag(S) Vᵀ`. */
export interface SvdResult<M extends number, N extends number> {
  /** m×K, orthonormal columns (left singular vectors). */
  u: Tensor<[M, number], "f32">;
  /** K singular values, descending, non-negative. */
  s: Tensor<[number], "f32">;
  /** n×K, orthonormal columns (right singular vectors): a lazy view of `vh` (disposing `vh` releases it). */
  v: Tensor<[N, number], "f32">;
  /** K×n, `Vᵀ` (what numpy and `torch.linalg.svd` return). */
  vh: Tensor<[number, N], "f32">;
}

/** Internal result: factors as rows (uRows = Uᵀ, vRows = Vᵀ), realized. */
export interface SvdRows {
  uRows: F32;
  s: F32;
  vRows: F32;
}

/** Options of the SVD core. */
export interface SvdCoreOptions extends SvdOptions {
  /** Skip forming V (only U and S are needed: {@link eigh}); `vRows` is then the same tensor as `s`. */
  noV?: boolean;
  /**
   * Skip forming U where it costs work of its own (only S and V are needed: PCA); `uRows` is then the same tensor
   * as `s`. The one-kernel solver forms U on the way and returns it.
   */
  noU?: boolean;
}

/**
 * Whether {@link svdColumns} solves a tall `rows × cols` working matrix in one kernel (`fused` when given, else
 * min(m, n) ≤ 64 and max(m, n) ≤ 128).
 */
function solvesFused(rows: number, cols: number, fused: boolean | undefined): boolean {
  return fused ?? (cols <= SOLVE_MAX_COLS && rows <= SOLVE_MAX_ROWS);
}

/**
 * Throws an {@link OptionsError} of `where` for a Jacobi option that nothing would read for an `m × n` matrix
 * (either orientation); `prefix` goes before the keys in the message (`"svd."` for IncrementalPCA's). On the
 * preconditioned solver `tol` only decides whether a sweep counts as converged for the read-backs of `check`, so
 * without `check` every sweep runs and any `tol` gives the same factors. The one-kernel solver reads `tol` for
 * its own stop and has no read-back, so there `check` changes nothing.
 */
export function refuseUnreadJacobiOptions(
  where: string,
  m: number,
  n: number,
  opts: Pick<SvdOptions, "tol" | "check" | "fused">,
  prefix = "",
): void {
  const check = opts.check ?? 0;
  const fused = solvesFused(Math.max(m, n), Math.min(m, n), opts.fused);
  const solver = opts.fused === undefined ? `for a ${m} x ${n} matrix` : `with fused: ${opts.fused}`;
  const sizes = `min(m, n) <= ${SOLVE_MAX_COLS} and max(m, n) <= ${SOLVE_MAX_ROWS}`;
  if (fused && check > 0) {
    throw new OptionsError(where, [
      `option "${prefix}check" is ${check} but nothing reads it: ${solver} the one-kernel solver runs, which ` +
      `stops at convergence without read-backs; check is read by the preconditioned solver (fused: false, or ` +
      `a matrix beyond ${sizes})`,
    ]);
  }
  if (!fused && check === 0 && opts.tol !== undefined) {
    throw new OptionsError(where, [
      `option "${prefix}tol" is ${opts.tol} but nothing reads it: ${solver} the solver runs every sweep, and tol ` +
      `is read only by the read-backs of "check" (>= 1) or by the one-kernel solver (fused, ${sizes})`,
    ]);
  }
}

/**
 * The SVD core on a tall working matrix W (rows ≥ cols) given column-major (`wc`: `cols` records of `rows`),
 * already scaled. W = Q R (Householder), then one-sided Jacobi on the columns of Rᵀ: Rᵀ V' = B' with B'
 * having orthogonal columns, so R = V' Σ Ûᵀ (Û = B'/σ) and W = (Q V') Σ Ûᵀ. U = Q V' is a product of
 * orthonormal factors, so it is orthonormal whatever the rank; V = Û is completed where σ is numerically zero
 * (at most 2⁻²³‖W‖_F; see `JACOBI_ZERO_REL` in kernels/jacobi.wgsl.ts).
 * Returns Uᵀ (cols×rows), S (cols, descending) and Vᵀ (cols×cols), unsigned.
 */
export async function svdColumns(
  wc: F32,
  rows: number,
  cols: number,
  opts: SvdCoreOptions,
): Promise<SvdRows> {
  if (solvesFused(rows, cols, opts.fused)) {
    return await svdFused(wc, rows, cols, opts);
  }
  const dev = wc.device;
  const f = await householderColumns(wc, rows, cols, { wantQ: opts.noU !== true });
  const r = upperR(f.factored, rows, cols); // [cols, cols]; row j of R = column j of Rᵀ
  const qc = f.q;
  const slots = cols + (cols % 2);
  // Records [column of Rᵀ; column of V'] (each padded to a multiple of 4, V' starting as the identity); an
  // odd column count gets one zero record. The kernel reads them as vec4. V' serves only to form U = Q V': without
  // U the records are Rᵀ's columns alone (the rotations depend on them only, so B' is the same bit for bit, and a
  // sweep moves half the data).
  const p4 = roundUp4(cols);
  const records =
    (qc === null
      ? r.pad([[0, slots - cols], [0, p4 - cols]])
      : r.pad([[0, slots - cols], [0, 2 * p4 - cols]]).add(
        eye(cols, cols, { device: dev }).pad([[0, slots - cols], [p4, p4 - cols]]),
      )) as F32;
  await realize(records);
  f.factored.dispose();
  f.taus.dispose();
  const run = await jacobiSweeps(records, p4, {
    sweeps: opts.sweeps ?? defaultSweeps(cols),
    check: opts.check,
    tol: opts.tol,
  });
  const fin = run.records;
  const b = fin.slice([0, cols], [0, cols]) as F32; // rows: Rᵀ v'_j
  const sig = b.square().sum(1).sqrt() as F32;
  const perm = descendingPerm(sig);
  const s = sig.gather(perm, 0) as F32;
  // (Q V')ᵀ, sorted; rows of the records' second half: v'_j.
  const uRows = qc === null
    ? s
    : (fin.slice([0, cols], [p4, p4 + cols]).gather(perm, 0) as F32).matmul(qc) as F32;
  if (opts.noV) {
    await realize(s, uRows);
    if (fin !== records) fin.dispose();
    records.dispose();
    qc?.dispose();
    return { uRows, s, vRows: s };
  }
  // Columns that the Jacobi kernel treated as zero carry no direction: replace them by random vectors and
  // re-orthonormalise by Householder QR, which is queued always but skipped on the GPU when none is zero. Σσ² =
  // ‖W‖_F², so the kernel's floor is Σσ²·JACOBI_ZERO_REL; twice its norm leaves a margin for the rounding of σ.
  const bs = b.gather(perm, 0) as F32;
  const s2 = s.square();
  const good = s2.gt(s2.sum().mul(4 * JACOBI_ZERO_REL).maximum(4 * JACOBI_TINY));
  const rand = randn([cols, cols], { seed: COMPLETION_SEED, device: dev });
  const vFill = good.reshape([cols, 1]).where(bs.div(s.reshape([cols, 1])), rand);
  const flag = (good.logicalNot().cast("f32").sum()).gt(0).cast("u32") as Tensor<number[], "u32">;
  await realize(vFill, flag, s, uRows);
  if (fin !== records) fin.dispose();
  records.dispose();
  qc?.dispose();
  const c = await householderColumns(vFill, cols, cols, { wantQ: true, guard: flag });
  // Q's columns match the filled columns up to the signs of R's diagonal.
  const diag = c.factored.reshape([cols * cols]).slice([0, cols * cols, cols + 1]);
  const d = diag.lt(0).where(-1, 1).reshape([cols, 1]) as F32;
  const vRows = flag.gt(0).where(c.q!.mul(d), vFill) as F32;
  await realize(vRows);
  c.factored.dispose();
  c.taus.dispose();
  c.q!.dispose();
  vFill.dispose();
  flag.dispose();
  return { uRows, s, vRows };
}

/** Most sweeps of the one-kernel solver (it stops at convergence: 5–25 sweeps on 64-column inputs). */
export const FUSED_SWEEPS = 40;

/**
 * The SVD core of {@link svdColumns} in one kernel (`kernels/jacobi_solve.wgsl.ts`): one-sided Jacobi on the
 * columns of W itself, `W V = B`, stopping at convergence inside the kernel; U = B/σ completed where σ is zero, V
 * orthonormal by construction. Sorted by σ; same conventions as {@link svdColumns}.
 */
async function svdFused(wc: F32, rows: number, cols: number, opts: SvdCoreOptions): Promise<SvdRows> {
  if (cols > SOLVE_MAX_COLS || rows > SOLVE_MAX_ROWS) {
    throw new RangeError(
      `svd: fused takes at most ${SOLVE_MAX_ROWS} x ${SOLVE_MAX_COLS} (after transposing to tall), got ` +
        `${rows} x ${cols}`,
    );
  }
  const layout = {
    rows,
    cols,
    sweeps: Math.min(opts.sweeps ?? FUSED_SWEEPS, solveSweepBudget(rows, cols, LOOP_BUDGET)),
    tol: opts.tol ?? Math.sqrt(rows) * F32_UNIT_ROUNDOFF,
  };
  const { p4r, stride, slots } = solveShape(layout);
  // Records [w_j | e_j | 0] (the identity starts V), one zero record for an odd column count.
  const records = wc.pad([[0, slots - cols], [0, stride - rows]]).add(
    eye(cols, cols, { device: wc.device }).pad([[0, slots - cols], [
      p4r,
      stride - p4r - cols,
    ]]),
  ) as F32;
  const params = tensor(jacobiSolveParams(layout), { dtype: "u32", device: wc.device });
  const [out] = await runKernels([records, params], [{ shape: [slots, stride], dtype: "f32" }], [{
    name: "jacobi_solve",
    wgsl: JACOBI_SOLVE_WGSL,
    dispatch: SOLVE_DISPATCH,
    bindings: [2, 0, 1],
    host: jacobiSolveHost(layout),
  }]) as [F32];
  records.dispose();
  params.dispose();
  const sig = out.slice([0, cols], stride - 4) as F32;
  const perm = descendingPerm(sig);
  const s = sig.gather(perm, 0) as F32;
  const uRows = out.slice([0, cols], [0, rows]).gather(perm, 0) as F32;
  const vRows = opts.noV ? s : out.slice([0, cols], [p4r, p4r + cols]).gather(perm, 0) as F32;
  await realize(...new Set([s, uRows, vRows]));
  out.dispose();
  return { uRows, s, vRows };
}

/**
 * Thin SVD `A = U diag(S) Vᵀ` of any m×n float32 matrix, computed on its device by one-sided Jacobi with QR
 * preconditioning.
 *
 * Method: the working matrix W (A, or Aᵀ when m < n, so that it is tall) is scaled to max|w| = 1 and factored
 * `W = Q R` by Householder QR. The columns of Rᵀ are then orthogonalised by cyclic Jacobi rotations in the
 * parallel circle ordering (all disjoint pairs of a round in one dispatch, n−1 rounds per sweep) while the
 * same rotations accumulate V'. From `Rᵀ V' = B'` (orthogonal columns, norms σ): `W = (Q V') Σ Ûᵀ` with
 * `Û = B'/σ`. One-sided (Hestenes) Jacobi is backward stable and keeps small singular values accurate
 * relative to their size, so ill-conditioned and rank-deficient matrices are handled (an eigendecomposition
 * of the Gram matrix would square the condition number); the QR step (Drmač–Veselić preconditioning, here
 * without pivoting) makes the number of sweeps nearly independent of the spectrum: 9–10 sweeps at n = 128
 * for Gaussian, rank-deficient and 10⁶-conditioned inputs, against 10, 18 and 22 without it. U = Q V' is
 * orthonormal by construction. Columns of B' at most 2⁻²⁴‖W‖_F in norm, the size of rounding W to float32,
 * count as zero: the rotations leave them alone (their directions are rounding noise, and rotating them kept
 * the null space of a matrix with repeated columns from converging for 7–10 more sweeps), and the columns of Û
 * with σ at most 2⁻²³‖W‖_F are replaced by an orthonormal completion from a Householder QR that is queued
 * always and skipped on the GPU when not needed. Rotations use Rutishauser's update `x − s(y + τx)`, which
 * keeps the accumulated V' orthogonal to ~1e-5 (Frobenius) at n = 200 in float32, where the textbook
 * `c·x − s·y` drifts to ~5e-4.
 *
 * Accuracy (float32, n = 200): ‖A − U S Vᵀ‖/‖A‖ ≈ 1e-6, ‖UᵀU − I‖_F and ‖VᵀV − I‖_F ≈ 1e-5, singular
 * values to about 2⁻²⁴‖A‖_F absolute (smaller ones are rounding noise, and their singular vectors an
 * orthonormal basis of what the others leave). The input must be finite (NaN or infinite entries give
 * all-NaN factors on every device).
 *
 * Small matrices (min(m, n) ≤ 64, max(m, n) ≤ 128; see {@link SvdOptions.fused}) skip the QR step and run the
 * whole Jacobi iteration in one kernel (`kernels/jacobi_solve.wgsl.ts`): one workgroup, a barrier between rounds
 * instead of a launch, and a convergence test after every sweep inside the kernel; U = B/σ there, completed by
 * Gram–Schmidt of fixed pseudo-random vectors where σ is exactly zero, and V is orthonormal by construction.
 *
 * Read-backs: none by default — all sweeps run in one submission and the results stay on the device. With
 * `check: k` the rotation counter is read back every k sweeps (~11 ms each) to stop early.
 *
 * Sign convention: see {@link SvdOptions.flip} (default: the largest-|·| entry of each column of U positive).
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { svd } from "./mod.ts";
 * const a = randn([40, 30], { seed: 3 });
 * const { u, s, vh } = await svd(a);
 * const back = u.mul(s).matmul(vh); // ≈ a
 * console.log(u.shape, s.shape, vh.shape, back.shape);
 * ```
 */
export async function svd<M extends number, N extends number>(
  a: Tensor<[M, N], "f32"> | F32,
  opts: SvdOptions = {},
): Promise<SvdResult<M, N>> {
  const r = await svdRows(a, opts);
  const u = r.uRows.transpose();
  await realize(u);
  r.uRows.dispose();
  return svdResult(u, r.s, r.vRows);
}

/** The public result of plain factors `U`, `s` and `Vᵀ` (`v` a lazy view of `vh`), their ranks checked. */
export function svdResult<M extends number, N extends number>(u: F32, s: F32, vh: F32): SvdResult<M, N> {
  return {
    u: withShape<[M, number]>(u, 2),
    s: withShape<[number]>(s, 1),
    v: withShape<[N, number]>(vh.transpose(), 2),
    vh: withShape<[number, N]>(vh, 2),
  };
}

/**
 * {@link svd} returning Uᵀ and Vᵀ (row-major factors), realized. With `only.noU` (and `flip: "v"`, the signs then
 * follow V) U is not formed where that is work of its own, and `uRows` is the same tensor as `s`; S and V are those
 * of the full SVD, bit for bit.
 */
export async function svdRows(a: F32, opts: SvdOptions = {}, only: { noU?: boolean } = {}): Promise<SvdRows> {
  const [m, n] = checkMatrix("svd", a);
  checkOptions("svd", SVD_OPTIONS, opts);
  refuseUnreadJacobiOptions("svd", m, n, opts);
  const noU = only.noU === true;
  if (noU && opts.flip !== "v") {
    throw new RangeError(
      `svd: without U the signs follow V: pass flip "v" (got ${JSON.stringify(opts.flip)})`,
    );
  }
  const wide = m < n;
  const rows = Math.max(m, n);
  const cols = Math.min(m, n);
  const scale = absMaxScale(a);
  const wc = (wide ? a : a.transpose()).div(scale);
  const poison = nonFinitePoison(a);
  await realize(scale, wc, poison); // one pass over a (possibly lazy) input
  // A's U is the core's U for a tall input, its V for a wide one.
  const core = await svdColumns(
    wc,
    rows,
    cols,
    noU ? { ...opts, ...(wide ? { noV: true } : { noU: true }) } : opts,
  );
  wc.dispose();
  // For a wide input the core factored Aᵀ = U' S V'ᵀ, so A = V' S U'ᵀ.
  let uRows = wide ? core.vRows : core.uRows;
  let vRows = wide ? core.uRows : core.vRows;
  const signs = largestPositiveSigns((opts.flip ?? "u") === "u" ? uRows : vRows);
  vRows = vRows.mul(signs).add(poison);
  const s = core.s.mul(scale).add(poison);
  if (noU) {
    await realize(vRows, s);
    uRows = s;
  } else {
    uRows = uRows.mul(signs).add(poison);
    await realize(uRows, vRows, s);
  }
  for (const t of new Set([core.uRows, core.vRows, core.s, scale, poison])) t.dispose();
  return { uRows, s, vRows };
}
