/**
 * CorDA — Context-oriented Decomposition Adaptation (Yang et al., NeurIPS 2024, arXiv 2406.05223; PEFT
 * `tuners/lora/corda.py` + `layer.py::corda_init`; METHODS.md §8). From the layer's input covariance C:
 *
 *   `C_fix = C + mean(diag C)·damp·I`,  `U S Vhᵀ = svd(W·C_fix)`,  `V = (Vh·C_fix⁻¹)ᵀ`  ⇒  `W = U S Vᵀ`;
 *   `S_sel ← S_sel / s`,  `A = diag(√S_sel) Vᵀ_sel`,  `B = U_sel diag(√S_sel)`,  `W_res = W − s·B·A`,
 *
 * selecting the top-r triplets (IPM, instruction-previewed mode, default) or the bottom-r ones (KPM,
 * knowledge-preserved mode). The covariance follows PEFT's quirks: each sample X `[T, d_in]` is divided by
 * `|max(X)|` (the signed maximum, then its absolute value), `C = Σ XᵀX / n_samples`, where activations `[T, d_in]`
 * count as one sample and `[NB, T, d_in]` as NB samples. The damping starts at 0.01 and doubles until
 * `‖C_fix·C_fix⁻¹ − I‖_F < 0.05` (evaluated in float32); C_fix⁻¹ comes from one eigendecomposition of C
 * (C_fix has the same eigenvectors).
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { cordaInit } from "./corda.ts";
 * const w = randn([32, 24], { seed: 0 });
 * const activations = randn([2, 48, 24], { seed: 1 });
 * const ipm = await cordaInit(w, { rank: 4, activations });
 * const kpm = await cordaInit(w, { rank: 4, activations, mode: "kpm" });
 * console.log(ipm.a.shape, kpm.b.shape, ipm.info); // [4, 24] [32, 4] { mode: "ipm", damping: 0.01, ... }
 * ```
 *
 * @module
 */
import { eigh } from "../linalg/eigh.ts";
import { svd } from "../linalg/svd.ts";
import { disposeUnless } from "../linalg/common.ts";
import { eye } from "../tensor/creation.ts";
import { realize } from "../tensor/tensor.ts";
import { z } from "../../deps.ts";
import {
  checkInitOptions,
  checkInputsFinite,
  checkLayer,
  type CommonInitOptions,
  type F32,
  type LoraInit,
  loraScale,
} from "./types.ts";
import { splitTriplets, warnZeroTriplets } from "./pissa.ts";

/** Options of {@link cordaInit}. */
export interface CordaOptions extends CommonInitOptions {
  /** Inputs of the layer: `[T, d_in]` (one sample) or `[NB, T, d_in]` (NB samples). Required. */
  activations?: F32;
  /** `"ipm"` (default): the top-r triplets; `"kpm"`: the bottom-r triplets. */
  mode?: "ipm" | "kpm";
  /** Initial damping factor, doubled until the inverse is accurate (default 0.01, PEFT's). */
  damping?: number;
}

/** The options schema of {@link cordaInit} (the registry's). */
export const CORDA_OPTIONS = z.object({
  mode: z.enum(["ipm", "kpm"]).default("ipm").describe(
    "ipm: top-r covariance-oriented triplets (instruction-previewed); kpm: bottom-r (knowledge-preserved)",
  ),
  damping: z.number().positive().default(0.01).describe(
    "initial covariance damping, doubled until ‖C·C⁻¹ − I‖_F < 0.05 (PEFT: 0.01)",
  ),
});

/** The context-oriented decomposition of a weight, `W = U diag(S) Vᵀ`. */
export interface CordaDecomposition {
  /** `[d_out, K]`, orthonormal columns (K = min(d_out, d_in)). */
  u: F32;
  /** `[K]`, descending singular values of `W·C_fix`. */
  s: F32;
  /** `[K, d_in]`: `Vᵀ = Vh·C_fix⁻¹` (not orthonormal). */
  vt: F32;
  /** The damped covariance `C_fix`, `[d_in, d_in]`. */
  covariance: F32;
  /** Its inverse, `[d_in, d_in]`. */
  inverse: F32;
  /** The accepted damping factor. */
  damping: number;
  /** `‖C_fix·C_fix⁻¹ − I‖_F` at the accepted damping (float32). */
  inverseError: number;
  /** Number of samples the covariance averages. */
  samples: number;
}

/** Doublings of the damping before giving up (0.01·2⁴⁰ is far beyond any useful damping). */
const MAX_DOUBLINGS = 40;

/**
 * The covariance of the layer's inputs with PEFT's normalisation: per sample `X ← X / |max(X)|`, `C = Σ XᵀX /
 * n_samples`. Throws naming the shape when the activations do not match `d_in`, or when a sample's maximum is 0.
 */
export async function cordaCovariance(
  activations: F32,
  dIn: number,
): Promise<{ covariance: F32; samples: number }> {
  const sh = activations.shape;
  if (
    (sh.length !== 2 && sh.length !== 3) || sh[sh.length - 1] !== dIn ||
    (activations.dtype as string) !== "f32"
  ) {
    throw new RangeError(
      `corda: activations must be f32 [T, ${dIn}] or [NB, T, ${dIn}], got [${sh}] ${activations.dtype}`,
    );
  }
  const samples = sh.length === 3 ? sh[0] : 1;
  const tokens = sh.length === 3 ? sh[1] : sh[0];
  const x = activations.reshape([samples, tokens * dIn]);
  const peak = x.max(1, { keepdims: true }).abs(); // |signed max| per sample
  const xs = x.div(peak).reshape([samples * tokens, dIn]);
  const covariance = xs.transpose().matmul(xs).div(samples);
  const smallest = peak.min();
  await realize(covariance, smallest);
  const p = await smallest.item() as number;
  if (!(p > 0) || !Number.isFinite(p)) {
    covariance.dispose();
    throw new RangeError(
      `corda: a sample of the activations [${sh}] has maximum ${p}; PEFT divides each sample by |max(X)|, ` +
        "which must be a positive finite number",
    );
  }
  return { covariance, samples };
}

/**
 * CorDA's decomposition `W = U S Vᵀ` with `U S Vh = svd(W·C_fix)` and `V = (Vh·C_fix⁻¹)ᵀ`, damping the covariance
 * of `activations` until its inverse is accurate (see the module documentation).
 */
export async function cordaDecompose(
  weight: F32,
  activations: F32,
  opts: { damping?: number } = {},
): Promise<CordaDecomposition> {
  if (weight.ndim !== 2) {
    throw new TypeError(`corda: weight must be 2-D [d_out, d_in], got [${weight.shape}]`);
  }
  const dIn = weight.shape[1];
  let damp = opts.damping ?? 0.01;
  if (!(damp > 0) || !Number.isFinite(damp)) {
    throw new RangeError(`corda: damping must be a positive finite number, got ${damp}`);
  }
  const { covariance: c, samples } = await cordaCovariance(activations, dIn);
  const dev = weight.device;
  const { values, vectors } = await eigh(c);
  const id = eye(dIn, dIn, { device: dev });
  const meanDiag = c.mul(id).sum().div(dIn);
  let inverse: F32 | null = null;
  let fixed: F32 | null = null;
  let inverseError = Infinity;
  for (let k = 0; k <= MAX_DOUBLINGS; k++) {
    const delta = meanDiag.mul(damp);
    const cf = c.add(id.mul(delta));
    const inv = vectors.mul(values.add(delta).reciprocal()).matmul(vectors.transpose());
    const err = cf.matmul(inv).sub(id).square().sum().sqrt().reshape([1]);
    await realize(cf, inv, err);
    inverseError = (await err.data() as Float32Array)[0];
    err.dispose();
    if (inverseError < 0.05) {
      inverse = inv;
      fixed = cf;
      break;
    }
    cf.dispose();
    inv.dispose();
    damp *= 2;
  }
  values.dispose();
  c.dispose();
  if (inverse === null || fixed === null) {
    throw new RangeError(
      `corda: the damped covariance [${dIn}, ${dIn}] could not be inverted to ‖C·C⁻¹ − I‖_F < 0.05 ` +
        `(last error ${inverseError}) after ${MAX_DOUBLINGS} doublings of the damping`,
    );
  }
  const f = await svd(weight.matmul(fixed));
  const vt = f.vh.matmul(inverse);
  await realize(vt);
  f.vh.dispose();
  return {
    u: f.u,
    s: f.s,
    vt,
    covariance: fixed,
    inverse,
    damping: damp,
    inverseError,
    samples,
  };
}

/**
 * CorDA: the covariance-oriented singular triplets (top r for IPM, bottom r for KPM) become the adapter.
 * Deterministic. Throws when the activations are missing or do not match `d_in`, or the rank is not in
 * `1..min(d_out, d_in)`.
 */
export async function cordaInit(weight: F32, opts: CordaOptions = {}): Promise<LoraInit> {
  checkInitOptions("corda", CORDA_OPTIONS, opts, ["activations"]);
  const rank = opts.rank ?? 8;
  const [dOut, dIn] = checkLayer("corda", weight, rank);
  const alpha = opts.alpha ?? rank;
  const scale = loraScale(alpha, rank, opts.useRslora);
  const mode = opts.mode ?? "ipm";
  if (opts.activations === undefined) {
    throw new TypeError(`corda: needs the layer's activations [T, ${dIn}] or [NB, T, ${dIn}] (none given)`);
  }
  await checkInputsFinite("corda", { weight, activations: opts.activations });
  const d = await cordaDecompose(weight, opts.activations, { damping: opts.damping });
  const k = Math.min(dOut, dIn);
  const [lo, hi] = mode === "ipm" ? [0, rank] : [k - rank, k];
  // C_fix is invertible, so W·C_fix has the rank of W.
  warnZeroTriplets(
    "corda",
    weight.shape,
    (await d.s.data()) as Float32Array,
    Array.from({ length: rank }, (_, i) => lo + i),
    `W·C_fix for the [${weight.shape}] weight`,
  );
  const { a, b, base } = await splitTriplets(weight, {
    u: d.u.slice(null, [lo, hi]),
    s: d.s.slice([lo, hi]),
    vh: d.vt.slice([lo, hi]),
  }, scale);
  for (const t of [d.u, d.s, d.vt, d.covariance, d.inverse]) disposeUnless(t, a, b, base);
  return {
    a,
    b,
    base,
    rank,
    alpha,
    scale,
    info: { mode, damping: d.damping, inverseError: d.inverseError, samples: d.samples },
  };
}
