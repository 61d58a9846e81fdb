/**
 * LoRAM — magnitude-driven initialisation ("The Primacy of Magnitude in Low-Rank Adaptation", Zhang et al.,
 * NeurIPS 2025, arXiv 2507.06558; METHODS.md §10). For `W ∈ R^{n×m}` (n = d_out, m = d_in), with the magnitude
 * `ν[X] = ‖X‖_F² / #entries` and bases `Φ_n [n, r]`, `Φ_m [m, r]` (orthonormal: the DST-I basis of Eq. 12 by default):
 *
 *   Eq. 11:  `A = β·Φ_mᵀ`,  `B = β·Φ_n`,  `β = (Q[r]·ν[W] / ν[Φ_n Φ_mᵀ])^{1/4}`  ⇒  `ν[B·A] = Q[r]·ν[W]`,
 *
 * and `W_res = W − s·B·A` (Algorithm 1 with α = s; the paper fixes α = 1). For orthonormal bases
 * `ν[Φ_n Φ_mᵀ] = r/(nm)` and `β⁴ = Q[r]·‖W‖_F² / r`. The Gaussian basis of the Sec. 4.3 ablation (`basis:
 * "gaussian"`: entries i.i.d. `N(0, 1/n)` and `N(0, 1/m)`, so `E[ΦᵀΦ] = I`, not orthonormalised) uses Eq. 11 as
 * written, `β⁴ = Q[r]·‖W‖_F² / ‖Φ_n Φ_mᵀ‖_F²`, so `ν[B·A] = Q[r]·ν[W]` holds exactly for it too. The gain Q[r] is the logarithmic gain of Algorithm 1,
 * `ln r / ln min(n, m)` (default), the spectral gain of Eq. 10 `(Σ_{i≤r} σ_i)² / (r·Σ_i σ_i²)` (`gain: "exact"`,
 * one SVD), or a fixed number. In tracking mode (Sec. 4.3 ablation) β is chosen instead so that `ν[B·A]` equals
 * `ν[B_ref·A_ref]` of a reference initialisation (PiSSA, MiLoRA, OLoRA, CorDA or LoRA-GA with their default
 * options) run with the same rank, alpha, rsLoRA setting and seed.
 *
 * Rank 1 with the logarithmic gain is degenerate, as published: Q[1] = 0 ⇒ β = 0 ⇒ A = B = 0 (no gradient ever
 * reaches the adapter). It is reproduced, with a warning printed once.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { loramInit } from "./loram.ts";
 * const w = randn([32, 24], { seed: 0 });
 * const { a, b, base, info } = await loramInit(w, { rank: 4 });
 * console.log(a.shape, b.shape, base!.shape, info); // [4, 24] [32, 4] [32, 24] { basis: "dst", gain: 0.436... }
 * ```
 *
 * @module
 */
import { deriveSeed } from "../nn/init.ts";
import { dstBasis } from "../linalg/dst.ts";
import { qr } from "../linalg/qr.ts";
import { svd } from "../linalg/svd.ts";
import { randn } from "../tensor/creation.ts";
import { realize } from "../tensor/tensor.ts";
import type { DeviceName } from "../ir/node.ts";
import { OptionsError, showValue } from "../options.ts";
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
import { pissaInit, warnZeroTriplets } from "./pissa.ts";
import { miloraInit } from "./milora.ts";
import { oloraInit } from "./olora.ts";
import { cordaInit } from "./corda.ts";
import { loraGaInit } from "./lora_ga.ts";

/** The gain Q[r]: logarithmic (Algorithm 1), exact spectral (Eq. 10), or a fixed value ≥ 0. */
export type LoramGain = "log" | "exact" | number;

/** LoRAM's bases: DST-I (Eq. 12), random orthogonal, or Gaussian (the ablations of Sec. 4.3). */
export type LoramBasis = "dst" | "random-orthogonal" | "gaussian";

/** Reference initialisations whose `ν[B·A]` LoRAM's tracking mode can match. */
export type LoramTracking = "pissa" | "milora" | "olora" | "corda" | "lora-ga";

/** Options of {@link loramInit}. */
export interface LoramOptions extends CommonInitOptions {
  /** Q[r] (default `"log"`: `ln r / ln min(n, m)`). Not with `trackingMode`, which sets β instead. */
  gain?: LoramGain;
  /**
   * The basis: `"dst"` (default, deterministic DST-I of Eq. 12), `"random-orthogonal"` (Haar, seeded) or
   * `"gaussian"` (i.i.d. `N(0, 1/n)` entries, seeded; the Sec. 4.3 ablation).
   */
  basis?: LoramBasis;
  /** Choose β so that `ν[B·A]` matches this reference initialisation's (default: unset, use the gain). */
  trackingMode?: LoramTracking;
  /** Calibration inputs `[T, d_in]` or `[NB, T, d_in]`, needed only by `trackingMode: "corda"`. */
  activations?: F32;
  /** Gradients `[d_out, d_in]` or `[NB, d_out, d_in]`, needed only by `trackingMode: "lora-ga"`. */
  grads?: F32;
}

/** The options schema of {@link loramInit} (the registry's). */
export const LORAM_OPTIONS = z.object({
  gain: z.union([z.enum(["log", "exact"]), z.number().min(0)]).default("log").describe(
    'Q[r]: "log" = ln r / ln min(n, m) (Algorithm 1), "exact" = spectral gain (Eq. 10), or a fixed number',
  ),
  basis: z.enum(["dst", "random-orthogonal", "gaussian"]).default("dst").describe(
    "basis: DST-I (Eq. 12, deterministic), random orthogonal or Gaussian N(0, 1/n) (seeded; Sec. 4.3 ablations)",
  ),
  trackingMode: z.enum(["pissa", "milora", "olora", "corda", "lora-ga"]).optional().describe(
    "choose β so that ν[B·A] matches this reference init's (corda needs activations, lora-ga grads); " +
      "default: unset = use the gain",
  ),
});

let warnedRankOne = false;

/** The logarithmic gain of LoRAM's Algorithm 1, `ln r / ln min(n, m)` (0 for r = 1). */
export function loramLogGain(rank: number, dOut: number, dIn: number): number {
  if (rank <= 1) return 0;
  return Math.log(rank) / Math.log(Math.min(dOut, dIn));
}

/** A Haar-distributed n×r matrix with orthonormal columns: QR of a Gaussian with R's diagonal made positive. */
async function randomOrthonormal(n: number, r: number, seed: number, device: DeviceName): Promise<F32> {
  const g = randn([n, r], { seed, device });
  const f = await qr(g);
  const diag = f.r.reshape([r * r]).slice([0, r * r, r + 1]);
  const signs: F32 = diag.lt(0).where(-1, 1);
  const phi = f.q.mul(signs) as F32;
  await realize(phi);
  f.r.dispose();
  return phi;
}

async function basisOf(
  kind: LoramBasis,
  n: number,
  r: number,
  seed: number,
  device: DeviceName,
): Promise<F32> {
  switch (kind) {
    case "dst":
      return await dstBasis(n, r, { device });
    case "random-orthogonal":
      return await randomOrthonormal(n, r, seed, device);
    case "gaussian": {
      // Columns of expected squared norm 1, as an orthonormal basis's.
      const g = randn([n, r], { seed, device }).mul(1 / Math.sqrt(n));
      await realize(g);
      return g;
    }
  }
}

/**
 * LoRAM: scaled deterministic (or random) orthonormal bases whose product carries the fraction Q[r] of W's
 * magnitude. Deterministic with the DST basis; the random-orthogonal basis is seeded by `seed`.
 * Throws when the rank is not in `1..min(d_out, d_in)`, the gain is negative or not finite or given with a tracking
 * mode, or when tracking CorDA without activations or LoRA-GA without gradients.
 */
export async function loramInit(weight: F32, opts: LoramOptions = {}): Promise<LoraInit> {
  checkInitOptions("loram", LORAM_OPTIONS, opts, ["activations", "grads"]);
  if (opts.trackingMode !== undefined && opts.gain !== undefined) {
    throw new OptionsError("loram", [
      `option "gain" (${showValue(opts.gain)}) is not used with trackingMode ${
        showValue(opts.trackingMode)
      }, ` +
      "which sets β from the reference init's ν[B·A]; give one of them",
    ]);
  }
  const rank = opts.rank ?? 8;
  const [n, m] = checkLayer("loram", weight, rank);
  await checkInputsFinite("loram", { weight });
  const alpha = opts.alpha ?? rank;
  const scale = loraScale(alpha, rank, opts.useRslora);
  const basis = opts.basis ?? "dst";
  const gain = opts.gain ?? "log";
  const seed = opts.seed ?? 0;
  const info: Record<string, number | string> = { basis };
  const dev = weight.device;
  const phiN = await basisOf(basis, n, rank, deriveSeed(seed, "loram", "out"), dev);
  const phiM = await basisOf(basis, m, rank, deriveSeed(seed, "loram", "in"), dev);
  // The target energy ν[B·A]·nm, a 0-d tensor on the weight's device.
  let energy: F32;
  // What sets it, for the warning when it is 0 (undefined: rank 1 with the log gain, warned about below).
  let source: string | undefined;
  if (opts.trackingMode !== undefined) {
    const common = { rank, alpha, useRslora: opts.useRslora, seed };
    const ref = await referenceInit(opts.trackingMode, weight, common, opts);
    // ν[BA] = ν_ref.
    energy = ref.b.matmul(ref.a).square().mean().mul(n * m);
    await realize(energy);
    for (const t of [ref.a, ref.b, ref.base]) t?.dispose();
    info.trackingMode = opts.trackingMode;
    source = `ν[B·A] of the ${opts.trackingMode} reference`;
  } else {
    let q: number;
    if (gain === "log") {
      q = loramLogGain(rank, n, m);
      if (rank === 1 && !warnedRankOne) {
        warnedRankOne = true;
        console.warn(
          "loram: rank 1 with the logarithmic gain gives Q[1] = ln 1 / ln min(n, m) = 0, so β = 0 and A = B = 0 " +
            '(the adapter never receives a gradient); use gain: "exact" or a fixed gain',
        );
      }
    } else if (gain === "exact") {
      const f = await svd(weight);
      const sv = f.s;
      const head = sv.slice([0, rank]).sum().square();
      const qt = head.div(sv.square().sum().mul(rank));
      q = await qt.item() as number;
      for (const t of [f.s, f.vh]) t.dispose();
    } else if (typeof gain === "number" && Number.isFinite(gain) && gain >= 0) {
      q = gain;
    } else {
      throw new RangeError(`loram: gain must be "log", "exact" or a finite number >= 0, got ${String(gain)}`);
    }
    info.gain = q;
    if (!Number.isFinite(q)) {
      throw new RangeError(
        `loram: the exact gain (Σ_{i≤r} σ_i)²/(r·Σ σ_i²) is ${q} for the [${weight.shape}] weight (all-zero?)`,
      );
    }
    if (!(rank === 1 && gain === "log")) source = `Q[r]·‖W‖_F² (Q[r] = ${q.toPrecision(4)})`;
    // ν[BA] = Q[r]·ν[W].
    energy = weight.square().sum().mul(q);
  }
  // ν[B·A]·nm = β⁴·‖Φ_n Φ_mᵀ‖_F², and ‖Φ_n Φ_mᵀ‖_F² = r for orthonormal bases.
  const beta4 = basis === "gaussian"
    ? energy.div(phiN.matmul(phiM.transpose()).square().sum())
    : energy.div(rank);
  const beta = beta4.sqrt().sqrt();
  const b = phiN.mul(beta);
  const a = phiM.transpose().mul(beta);
  const base = weight.sub(b.matmul(a).mul(scale));
  await realize(a, b, base);
  if (source !== undefined) {
    // β = 0 when the energy is: an all-zero W, a zero gain, a reference whose B·A is 0.
    const e = await energy.item() as number;
    const beta2 = new Float32Array(rank).fill(Math.sqrt(Math.max(e, 0) / rank));
    warnZeroTriplets(
      "loram",
      weight.shape,
      beta2,
      [...Array(rank).keys()],
      `B·A = β²·Φ_n·Φ_mᵀ, with β⁴ ∝ ${source} = ${e} for the [${weight.shape}] weight,`,
    );
  }
  phiN.dispose();
  phiM.dispose();
  energy.dispose();
  return { a, b, base, rank, alpha, scale, info };
}

/** The reference initialisation of tracking mode, run with the same common options. */
function referenceInit(
  mode: LoramTracking,
  weight: F32,
  common: CommonInitOptions,
  data: { activations?: F32; grads?: F32 },
): Promise<LoraInit> {
  switch (mode) {
    case "pissa":
      return pissaInit(weight, common);
    case "milora":
      return miloraInit(weight, common);
    case "olora":
      return oloraInit(weight, common);
    case "corda":
      if (data.activations === undefined) {
        throw new TypeError('loram: trackingMode "corda" needs the layer\'s activations');
      }
      return cordaInit(weight, { ...common, activations: data.activations });
    case "lora-ga":
      if (data.grads === undefined) {
        throw new TypeError('loram: trackingMode "lora-ga" needs the layer\'s gradients');
      }
      return loraGaInit(weight, { ...common, grads: data.grads });
    default:
      throw new RangeError(
        `loram: trackingMode must be "pissa", "milora", "olora", "corda" or "lora-ga", got ${
          JSON.stringify(mode)
        }`,
      );
  }
}
