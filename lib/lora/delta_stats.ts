/**
 * How far a LoRA update moved during fine-tuning: the cosine similarity and the spectral-norm distance between the
 * initial update `ΔW₀ = s·B₀·A₀` and the final one `ΔW = s·B·A` of a layer (CNTLoRA, Das et al., arXiv 2507.08044,
 * Table 2). Host-side (Float32Array in, numbers out): the matrices of the experiments are small and are read back
 * once per run.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

/** Options of {@link spectralNorm}. */
export interface SpectralNormOptions {
  /** Most power iterations on `MᵀM` (default 500). */
  maxIter?: number;
  /** Stop when the estimate changes by less than this relative amount (default 1e-10). */
  tol?: number;
}

// A maxIter of 0 (or NaN) ran no iteration and returned 0; a NaN tol never stopped early.
const SPECTRAL_NORM_OPTIONS = z.object({ maxIter: opt.count().optional(), tol: opt.nonNegative().optional() })
  .strict();

function checkShape(what: string, data: Float32Array | Float64Array, shape: readonly [number, number]) {
  const [rows, cols] = shape;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1) {
    throw new RangeError(`${what}: shape must be two positive integers, got [${shape}]`);
  }
  if (data.length !== rows * cols) {
    throw new RangeError(
      `${what}: shape [${rows}, ${cols}] needs ${rows * cols} values but the matrix has ${data.length}`,
    );
  }
}

/**
 * The spectral norm `‖M‖₂ = σ_max(M)` of a row-major `[rows, cols]` matrix, by power iteration on `MᵀM` in float64
 * from a fixed, deterministic start vector. 0 for the zero matrix. Power iteration converges as (σ₂/σ₁)² a
 * step: where the two largest singular values are close, `maxIter` ends it first and the result, always between
 * σ₂ and σ₁, is off by up to their gap (σ = 1 and 1 − 1e-4 give 0.99990 at the default 500 iterations).
 *
 * @example
 * ```ts
 * import { spectralNorm } from "./delta_stats.ts";
 * console.log(spectralNorm(new Float32Array([3, 0, 0, -4]), [2, 2])); // ≈ 4
 * ```
 */
export function spectralNorm(
  data: Float32Array | Float64Array,
  shape: readonly [number, number],
  opts: SpectralNormOptions = {},
): number {
  checkOptions("spectralNorm", SPECTRAL_NORM_OPTIONS, opts);
  checkShape("spectralNorm", data, shape);
  const [rows, cols] = shape;
  const maxIter = opts.maxIter ?? 500;
  const tol = opts.tol ?? 1e-10;
  // A start vector with no special structure (not orthogonal to the top singular vector except by accident).
  let v = new Float64Array(cols);
  for (let j = 0; j < cols; j++) v[j] = 1 + 0.37 * Math.sin(1.3 * j + 0.5);
  const mv = new Float64Array(rows);
  let sigma = 0;
  for (let it = 0; it < maxIter; it++) {
    let vn = 0;
    for (let j = 0; j < cols; j++) vn += v[j] * v[j];
    vn = Math.sqrt(vn);
    if (vn === 0) return 0;
    for (let j = 0; j < cols; j++) v[j] /= vn;
    // mv = M v
    for (let i = 0; i < rows; i++) {
      let s = 0;
      for (let j = 0; j < cols; j++) s += data[i * cols + j] * v[j];
      mv[i] = s;
    }
    let next = 0;
    for (let i = 0; i < rows; i++) next += mv[i] * mv[i];
    next = Math.sqrt(next);
    // v = Mᵀ (M v)
    const w = new Float64Array(cols);
    for (let i = 0; i < rows; i++) {
      const m = mv[i];
      if (m === 0) continue;
      for (let j = 0; j < cols; j++) w[j] += data[i * cols + j] * m;
    }
    v = w;
    const done = Math.abs(next - sigma) <= tol * Math.max(next, 1e-300);
    sigma = next;
    if (done || next === 0) break;
  }
  return sigma;
}

/** The comparison of an initial and a final update of one layer. */
export interface UpdateSimilarity {
  /** `⟨ΔW₀, ΔW⟩_F / (‖ΔW₀‖_F ‖ΔW‖_F)`; `null` when either update is zero (e.g. Noise & Zeros at step 0). */
  cosine: number | null;
  /** `‖ΔW − ΔW₀‖₂`. */
  spectralDistance: number;
  /** `‖ΔW − ΔW₀‖₂ / ‖ΔW‖₂`; `null` when the final update is zero. */
  relativeSpectralDistance: number | null;
  /** `‖ΔW₀‖₂`. */
  initialSpectralNorm: number;
  /** `‖ΔW‖₂`. */
  finalSpectralNorm: number;
}

/**
 * Cosine similarity (Frobenius inner product) and spectral-norm distance between the initial update `initial` and
 * the final update `final` of a layer, both row-major `[d_out, d_in]`.
 *
 * @example
 * ```ts
 * import { updateSimilarity } from "./delta_stats.ts";
 * const s = updateSimilarity(new Float32Array([1, 0, 0, 1]), new Float32Array([2, 0, 0, 1]), [2, 2]);
 * console.log(s.cosine, s.spectralDistance); // ≈ 0.949, 1
 * ```
 */
export function updateSimilarity(
  initial: Float32Array,
  final: Float32Array,
  shape: readonly [number, number],
): UpdateSimilarity {
  checkShape("updateSimilarity (initial)", initial, shape);
  checkShape("updateSimilarity (final)", final, shape);
  let dot = 0, n0 = 0, n1 = 0;
  const diff = new Float64Array(initial.length);
  for (let i = 0; i < initial.length; i++) {
    dot += initial[i] * final[i];
    n0 += initial[i] * initial[i];
    n1 += final[i] * final[i];
    diff[i] = final[i] - initial[i];
  }
  const finalNorm = spectralNorm(final, shape);
  const distance = spectralNorm(diff, shape);
  return {
    cosine: n0 > 0 && n1 > 0 ? dot / Math.sqrt(n0 * n1) : null,
    spectralDistance: distance,
    relativeSpectralDistance: finalNorm > 0 ? distance / finalNorm : null,
    initialSpectralNorm: spectralNorm(initial, shape),
    finalSpectralNorm: finalNorm,
  };
}
