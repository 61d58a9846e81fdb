/**
 * LoRA-GA — Low-Rank Adaptation with Gradient Approximation (Wang, Yu & Li, NeurIPS 2024, arXiv 2407.05000).
 *
 * @module
 */
import { tensor } from "../tensor/creation.ts";
import { realize, type Tensor } from "../tensor/tensor.ts";
import { svd } from "../linalg/svd.ts";
import { svdLowRank } from "../linalg/svd_lowrank.ts";
import { Rng } from "../data/rng.ts";
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
import { warnZeroTriplets } from "./pissa.ts";

/** Which singular directions go into A and B. */
export type LoraGaDirection = "ArB2r" | "A2rBr" | "ArBr" | "random";
/** How A and B are scaled after the directions are chosen. */
export type LoraGaScale = "stable" | "gd" | "unit" | "weightS";

/** Options of {@link loraGaInit}. */
export interface LoraGaOptions extends CommonInitOptions {
  /** `∂L/∂W` `[d_out, d_in]`, or `[NB, d_out, d_in]` to be averaged over the NB batches. Required. */
  grads?: F32;
  /**
   * `"ArB2r"` (default): `A = Vᵀ[0:r]`, `B = U[:, r:2r]`; `"A2rBr"`: `A = Vᵀ[r:2r]`, `B = U[:, :r]`; `"ArBr"`: A the
   * odd indices 1, 3, …, 2r−1, B the even ones 0, 2, …; `"random"`: a seeded permutation of 0..2r−1 (official: A
   * its first r entries, B the other r; PEFT: both its first r).
   */
  direction?: LoraGaDirection;
  /**
   * `"stable"` (default): × `d_out^{1/4}/√γ` (official: A and B; PEFT: B only); `"gd"`: A and B ÷ s; `"unit"`: no
   * scaling; `"weightS"`: official A, B × mean(√(S_W[:r]/s)), PEFT (`weight_svd`) B × S_W[0]/S_B[0], with S_W the
   * singular values of W.
   */
  scale?: LoraGaScale;
  /** γ of the stable scale (default 16, `stable_gamma`). */
  gamma?: number;
  /**
   * `"official"` (default; the authors' code and the paper) or `"peft"` (PEFT's `lora_ga_init`, which folds the
   * gradient's singular values into B: `B = U[:, idx_B]·diag(S[idx_B])`). See METHODS.md §9.
   */
  variant?: "official" | "peft";
  /**
   * Exact (Jacobi) SVD of G (default true, deterministic). `false`: the reference codes' randomized
   * `svdLowRank(G, q = min(4r, min(d_out, d_in)), niter = 4)`, seeded with `seed`.
   */
  exact?: boolean;
}

/** The options schema of {@link loraGaInit} (the registry's). */
export const LORA_GA_OPTIONS = z.object({
  direction: z.enum(["ArB2r", "A2rBr", "ArBr", "random"]).default("ArB2r").describe(
    "singular directions of A and B (ArB2r: A = Vᵀ[0:r], B = U[:, r:2r])",
  ),
  scale: z.enum(["stable", "gd", "unit", "weightS"]).default("stable").describe(
    "scaling of A and B (stable: × d_out^¼/√γ)",
  ),
  gamma: z.number().positive().default(16).describe("γ of the stable scale (stable_gamma)"),
  variant: z.enum(["official", "peft"]).default("official").describe(
    "official code / paper, or PEFT's lora_ga_init (B × S, only B gets the stable factor)",
  ),
  exact: z.boolean().default(true).describe(
    "exact SVD of the gradient (false: svd_lowrank with q = min(4r, min(G.shape)), niter 4)",
  ),
});

/** The singular indices of A and B for a direction. */
export function loraGaIndices(
  direction: LoraGaDirection,
  rank: number,
  variant: "official" | "peft",
  seed: number,
): { a: number[]; b: number[] } {
  const range = (start: number, step = 1) => Array.from({ length: rank }, (_, i) => start + i * step);
  switch (direction) {
    case "ArB2r":
      return { a: range(0), b: range(rank) };
    case "A2rBr":
      return { a: range(rank), b: range(0) };
    case "ArBr":
      return { a: range(1, 2), b: range(0, 2) };
    case "random": {
      const perm = new Rng(seed).shuffle(Array.from({ length: 2 * rank }, (_, i) => i));
      return variant === "official"
        ? { a: perm.slice(0, rank), b: perm.slice(rank) }
        : { a: perm.slice(0, rank), b: perm.slice(0, rank) };
    }
    default:
      throw new RangeError(`lora-ga: unknown direction ${JSON.stringify(direction)}`);
  }
}

/** The mean gradient `[d_out, d_in]`, after checking the shape against the weight. */
function meanGrad(grads: F32 | undefined, dOut: number, dIn: number): F32 {
  if (grads === undefined) throw new RangeError("lora-ga: needs grads (∂L/∂W of the layer)");
  const s = grads.shape;
  const ok = (s.length === 2 || s.length === 3) && s[s.length - 2] === dOut && s[s.length - 1] === dIn;
  if (!ok || s[0] === 0) {
    throw new RangeError(
      `lora-ga: grads are [${s}], expected [${dOut}, ${dIn}] or [NB, ${dOut}, ${dIn}] for a [${dOut}, ${dIn}] weight`,
    );
  }
  return (s.length === 3 ? grads.mean(0) : grads);
}

function indexTensor(idx: number[], device: F32["device"]): Tensor<number[], "i32"> {
  return tensor(Int32Array.from(idx), { dtype: "i32", device });
}

/**
 * LoRA-GA (Wang, Yu & Li, NeurIPS 2024, arXiv 2407.05000): with `G = ∂L/∂W` averaged over calibration batches and
 * `G = U S Vᵀ`, the default `A = Vᵀ[0:r]`, `B = U[:, r:2r]` makes the first LoRA step reproduce the top-2r part of
 * the full-fine-tuning gradient (`B Bᵀ G + G Aᵀ A = G_{2r}` at unit scale); A and B are then scaled (default
 * "stable": × `d_out^{1/4}/√γ`, γ = 16) and the base weight becomes `W_res = W − s·B·A` (offset init: the
 * layer's output is unchanged). Defaults follow the official code; `variant: "peft"` gives PEFT's
 * `lora_ga_init`, which multiplies B by the gradient's singular values and scales only B (METHODS.md §9: the
 * two differ by orders of magnitude in `B·A`).
 *
 * `info`: `gradSingularValues` (the first 2r singular values of G), `direction`, `scale`, `variant`.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { loraGaInit } from "./lora_ga.ts";
 * const weight = randn([24, 16], { seed: 0 });
 * const grads = randn([24, 6], { seed: 1 }).matmul(randn([6, 16], { seed: 2 }));
 * const { a, b, base, scale } = await loraGaInit(weight, { rank: 2, alpha: 4, grads });
 * console.log(a.shape, b.shape, base?.shape, scale); // [2, 16] [24, 2] [24, 16] 2
 * ```
 */
export async function loraGaInit(weight: F32, opts: LoraGaOptions = {}): Promise<LoraInit> {
  checkInitOptions("lora-ga", LORA_GA_OPTIONS, opts, ["grads"]);
  const rank = opts.rank ?? 8;
  const [dOut, dIn] = checkLayer(
    "lora-ga",
    weight,
    rank,
    Math.floor(Math.min(weight.shape[0], weight.shape[1]) / 2),
  );
  const alpha = opts.alpha ?? rank;
  const s = loraScale(alpha, rank, opts.useRslora);
  const direction = opts.direction ?? "ArB2r";
  const scale = opts.scale ?? "stable";
  const variant = opts.variant ?? "official";
  const gamma = opts.gamma ?? 16;
  const seed = opts.seed ?? 0;
  const g = meanGrad(opts.grads, dOut, dIn);
  await checkInputsFinite("lora-ga", { weight, grads: opts.grads });
  const q = Math.min(4 * rank, dOut, dIn);
  const dec = (opts.exact ?? true) ? await svd(g) : await svdLowRank(g, q, { niter: 4, seed });
  const top = dec.s.slice([0, Math.min(2 * rank, dec.s.shape[0])]);
  const gradSingularValues = Array.from((await top.data()) as Float32Array);
  // A zero gradient has no singular directions: A and B would be whatever basis the SVD returns for it.
  if (gradSingularValues[0] === 0) {
    throw new RangeError(
      `lora-ga: the gradient [${
        opts.grads!.shape
      }] is zero, so it has no directions to align A and B with; ` +
        `the layer received no gradient from the calibration batches (is it on the loss's path, are the labels ` +
        `all masked?)`,
    );
  }
  const idx = loraGaIndices(direction, rank, variant, seed);
  const dev = weight.device;
  let a = dec.vh.gather(indexTensor(idx.a, dev), 0); // [r, d_in]
  let b = dec.u.gather(indexTensor(idx.b, dev), 1); // [d_out, r]
  const sB = dec.s.gather(indexTensor(idx.b, dev), 0); // [r]
  if (variant === "peft") b = b.mul(sB);
  const stable = dOut ** 0.25 / Math.sqrt(gamma);
  switch (scale) {
    case "stable":
      if (variant === "official") a = a.mul(stable);
      b = b.mul(stable);
      break;
    case "gd":
      a = a.div(s);
      b = b.div(s);
      break;
    case "unit":
      break;
    case "weightS": {
      const w2 = weight;
      const qW = Math.min(4 * rank, dOut, dIn);
      const sw = ((opts.exact ?? true) ? await svd(w2) : await svdLowRank(w2, qW, { niter: 4, seed })).s;
      if (variant === "official") {
        // Both factors are scaled by the mean of √(σ_i/s) over W's top r: 0 for an all-zero W (PEFT's variant
        // scales B only, and A keeps its unit rows).
        const values = (await sw.data()) as Float32Array;
        if (!(values[0] > 0)) warnZeroTriplets("lora-ga", weight.shape, values, [...Array(rank).keys()]);
        const avg = sw.slice([0, rank]).div(s).sqrt().mean();
        a = a.mul(avg);
        b = b.mul(avg);
      } else {
        b = b.mul(sw.slice([0, 1]).div(sB.slice([0, 1])).reshape([]));
      }
      break;
    }
    default:
      throw new RangeError(`lora-ga: unknown scale ${JSON.stringify(scale)}`);
  }
  const base = weight.sub(b.matmul(a).mul(s));
  await realize(a, b, base);
  return {
    a: a,
    b: b,
    base: base,
    rank,
    alpha,
    scale: s,
    info: { gradSingularValues, direction, scale, variant },
  };
}
