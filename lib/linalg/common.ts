/**
 * Helpers shared by the linear-algebra routines: argument checks, scaling, sorting permutations and the sign
 * convention, all as lazy tensor expressions (no read-back).
 *
 * @module
 */
import { z } from "../../deps.ts";
import { opt } from "../options.ts";
import type { F32, I32 } from "../tensor/tensor.ts";
import type { DeviceName } from "../ir/node.ts";
import { arange } from "../tensor/creation.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** Checks that `a` is a non-empty 2-D float32 tensor and returns its dimensions. */
export function checkMatrix(op: string, a: Tensor): [number, number] {
  if (a.dtype !== "f32") throw new TypeError(`${op}: expected a float32 matrix, got dtype ${a.dtype}`);
  if (a.ndim !== 2) throw new RangeError(`${op}: expected a 2-D matrix, got shape [${a.shape}]`);
  const [m, n] = a.shape;
  if (m === 0 || n === 0) throw new RangeError(`${op}: the matrix is empty (shape [${a.shape}])`);
  return [m, n];
}

/**
 * Schema fields of the Jacobi options that svd, eigh, pinv and IncrementalPCA's inner SVD share: `tol` is a
 * threshold on the cosine of two columns, so one of 1 or more (or NaN, which compares false) would take every
 * sweep as converged, and 0 none.
 */
export const JACOBI_OPTION_FIELDS = {
  sweeps: opt.count().optional(),
  check: opt.index().optional(),
  tol: z.number().gt(0).lt(1).optional(),
};

/** Checks that an option is an integer in [lo, hi]. */
export function checkInt(op: string, name: string, v: number, lo: number, hi = Infinity): number {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    const range = hi === Infinity ? `>= ${lo}` : `in [${lo}, ${hi}]`;
    throw new RangeError(`${op}: ${name} must be an integer ${range}, got ${v}`);
  }
  return v;
}

/**
 * `Σ a·0` as a 0-d tensor: 0, or NaN exactly when `a` holds a NaN or an infinity (IEEE). Added to every factor a
 * decomposition returns, it makes them all NaN on every device for such input, where the rotations and reflectors
 * (whose comparisons with NaN are false) left some finite (σ = [NaN, 2.236] for [[1, NaN], [2, 3]] on the CPU).
 */
export function nonFinitePoison(a: F32): F32 {
  return a.mul(0).sum() as F32;
}

/** `max |a|` as a 0-d tensor, or 1 when `a` is all zeros (so dividing by it is always safe). */
export function absMaxScale(a: F32): F32 {
  const m = a.abs().max();
  return m.gt(0).where(m, 1);
}

/** `0, 1, ..., n-1` as float32 on `device`. */
export function iota(n: number, device: DeviceName): F32 {
  return arange(0, n, 1, { device });
}

/**
 * The permutation that sorts `values` (1-D, length n) in descending order, ties kept in index order, as an
 * i32 tensor: `values.gather(perm)` is sorted. Computed by ranking (O(n²) comparisons, fused into two
 * reductions). NaN values make the result unspecified.
 */
export function descendingPerm(values: F32): I32 {
  const n = values.shape[0];
  const dev = values.device;
  const vi = values.reshape([n, 1]);
  const vj = values.reshape([1, n]);
  const idx = iota(n, dev);
  const ii = idx.reshape([n, 1]);
  const jj = idx.reshape([1, n]);
  // before[i, j] = 1 when element j sorts before element i.
  const greater = vj.gt(vi).cast("f32");
  const tieFirst = vj.eq(vi).cast("f32").mul(jj.lt(ii).cast("f32"));
  const rank = greater.add(tieFirst).sum(1); // rank[i]: final position of element i
  // perm[k] = the i whose rank is k.
  const hit = (rank.reshape([1, n])).eq(ii);
  return (hit.where(jj, 0).sum(1)).cast("i32");
}

/**
 * Signs (±1, one per row of `rows`) that make the largest-magnitude entry of each row positive; on ties of
 * magnitude the first such entry decides (numpy's argmax), as in scikit-learn's `svd_flip`.
 */
export function largestPositiveSigns(rows: F32): F32 {
  const [k, n] = rows.shape;
  const at = rows.abs().argmax(1, { keepdims: true }); // [k, 1]
  const cols = iota(n, rows.device).cast("i32").reshape([1, n]);
  const pick = cols.eq(at).where(rows, 0).sum(1); // the entry at the argmax, per row
  return pick.lt(0).where(-1, 1).reshape([k, 1]) as F32;
}

/**
 * Disposes `t` unless one of `keep` shares its storage (some tensor ops return a new tensor over the same
 * node when they have nothing to do, e.g. a full slice).
 */
export function disposeUnless(t: Tensor, ...keep: Tensor[]): void {
  const st = t.node.storage;
  if (st !== null && keep.some((k) => k.node.storage === st)) return;
  t.dispose();
}
