/**
 * LoRAM's spectral gain factor and its logarithmic approximation ("The Primacy of Magnitude in Low-Rank
 * Adaptation", Zhang et al., NeurIPS 2025, arXiv 2507.06558; METHODS.md §10). For a weight with singular values
 * `s_1 ≥ … ≥ s_K` (K = min(n, m)), Eq. 10 defines
 *
 *   `Q[r] = (Σ_{i≤r} s_i)² / (r · Σ_{i≤K} s_i²)`  ∈ [0, 1],
 *
 * the share of W's magnitude a rank-r spectral (PiSSA-like) initialisation carries, and Algorithm 1 replaces it
 * by `log_K r = ln r / ln K`. With K equal singular values `Q[r] = r/K`; with a single non-zero singular value
 * `Q[r] = 1/r`; always `Q[1] = s_1²/Σ s_i²` and, by Cauchy–Schwarz, `Q[r] ≤ 1`.
 *
 * @example
 * ```ts
 * import { logGainCurve, spectralGainCurve } from "./spectral_gain.ts";
 * const q = spectralGainCurve([3, 2, 1]); // [9/14, 25/28, 36/42]
 * const l = logGainCurve(3); // [0, ln 2 / ln 3, 1]
 * ```
 *
 * @module
 */
import type { F32 } from "../tensor/tensor.ts";
import { svd } from "../linalg/svd.ts";
import type { Tensor } from "../tensor/tensor.ts";

/**
 * `Q[r]` for r = 1..K from singular values (any order, non-negative; sorted descending here). Returns a
 * Float64Array of length K with `Q[r]` at index r − 1. Throws on an empty list or a negative or non-finite value;
 * an all-zero spectrum gives all zeros.
 */
export function spectralGainCurve(singularValues: ArrayLike<number>): Float64Array {
  const k = singularValues.length;
  if (k === 0) throw new RangeError("spectralGainCurve: need at least one singular value, got none");
  const s = Float64Array.from(singularValues);
  for (let i = 0; i < k; i++) {
    if (!(Number.isFinite(s[i]) && s[i] >= 0)) {
      throw new RangeError(
        `spectralGainCurve: singular value ${i} is ${s[i]}; expected a finite number >= 0`,
      );
    }
  }
  s.sort().reverse();
  let total = 0;
  for (const v of s) total += v * v;
  const q = new Float64Array(k);
  if (total === 0) return q;
  let head = 0;
  for (let r = 1; r <= k; r++) {
    head += s[r - 1];
    q[r - 1] = (head * head) / (r * total);
  }
  return q;
}

/** LoRAM's logarithmic gain `ln r / ln K` for r = 1..K (index r − 1); for K = 1 it is `[1]` (r = K). */
export function logGainCurve(k: number): Float64Array {
  if (!Number.isInteger(k) || k < 1) {
    throw new RangeError(`logGainCurve: K must be an integer >= 1, got ${k}`);
  }
  if (k === 1) return Float64Array.of(1);
  return Float64Array.from({ length: k }, (_, i) => Math.log(i + 1) / Math.log(k));
}

/** The spectral and logarithmic gain curves of one weight matrix, and how far apart they are. */
export interface GainComparison {
  /** `K = min(n, m)`. */
  k: number;
  /** Singular values, descending. */
  singularValues: Float64Array;
  /** `Q[r]`, r = 1..K. */
  spectral: Float64Array;
  /** `log_K r`, r = 1..K. */
  logarithmic: Float64Array;
  /** Mean over r of `|Q[r] − log_K r|`. */
  meanAbsError: number;
  /** Max over r of `|Q[r] − log_K r|`. */
  maxAbsError: number;
}

/** Compares {@link spectralGainCurve} with {@link logGainCurve} for given singular values. */
export function compareGains(singularValues: ArrayLike<number>): GainComparison {
  const spectral = spectralGainCurve(singularValues);
  const k = spectral.length;
  const logarithmic = logGainCurve(k);
  let sum = 0;
  let max = 0;
  for (let i = 0; i < k; i++) {
    const d = Math.abs(spectral[i] - logarithmic[i]);
    sum += d;
    max = Math.max(max, d);
  }
  const sv = Float64Array.from(singularValues).sort().reverse();
  return { k, singularValues: sv, spectral, logarithmic, meanAbsError: sum / k, maxAbsError: max };
}

/**
 * {@link compareGains} for a weight matrix `[n, m]` on the device: one SVD, singular values read back.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { weightGains } from "./spectral_gain.ts";
 * const g = await weightGains(randn([32, 24], { seed: 0 }));
 * console.log(g.k, g.meanAbsError);
 * ```
 */
export async function weightGains(weight: Tensor<[number, number], "f32"> | F32): Promise<GainComparison> {
  if (weight.ndim !== 2) {
    throw new RangeError(`weightGains: weight must be a matrix [n, m], got [${weight.shape.join(", ")}]`);
  }
  const f = await svd(weight);
  const s = await f.s.data();
  for (const t of [f.u, f.s, f.vh]) t.dispose();
  return compareGains(s as ArrayLike<number>);
}
