/** Shared helpers of the linalg tests: reading tensors into float64 matrices and error assertions. */
import type { Tensor } from "../../mod.ts";
import { TEST_SEED } from "../_helpers.ts";
import { at, type M64, mat, maxAbs, zerosM } from "./_ref64.ts";

/** Reads a 2-D tensor into a float64 matrix. */
export async function readMat(t: Tensor): Promise<M64> {
  if (t.ndim !== 2) throw new Error(`readMat: expected 2-D, got [${t.shape}]`);
  return mat(t.shape[0], t.shape[1], await t.data() as Float32Array);
}

/** Reads a 1-D tensor into a Float64Array. */
export async function readVec(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.data() as Float32Array);
}

/** Throws unless `value <= bound`, naming the quantity and the seed. */
export function assertBelow(what: string, value: number, bound: number): void {
  if (!(value <= bound)) {
    throw new Error(
      `${what}: ${value.toExponential(3)} exceeds ${bound.toExponential(1)} (TEST_SEED=${TEST_SEED})`,
    );
  }
}

/** The index of the largest-magnitude entry of column j (first on ties). */
export function argmaxAbsCol(a: M64, j: number): number {
  let best = 0;
  for (let i = 1; i < a.rows; i++) if (Math.abs(at(a, i, j)) > Math.abs(at(a, best, j))) best = i;
  return best;
}

/** Flips columns of `a` so that the largest-magnitude entry of each column of `decider` is positive. */
export function flipLike(a: M64, decider: M64): M64 {
  const out = zerosM(a.rows, a.cols);
  for (let j = 0; j < a.cols; j++) {
    const sign = at(decider, argmaxAbsCol(decider, j), j) < 0 ? -1 : 1;
    for (let i = 0; i < a.rows; i++) out.data[i * a.cols + j] = sign * at(a, i, j);
  }
  return out;
}

/** Largest |a − b| over all entries, relative to max |b|. */
export function relMaxDiff(a: M64, b: M64): number {
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(a.data[i] - b.data[i]));
  return m / Math.max(maxAbs(b), 1e-300);
}
