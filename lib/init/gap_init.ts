/**
 * Gap-Init (Zhao, Han & Hovy, "When Is Rank-1 Enough?", arXiv 2602.01522, ICML 2026): the first column of B is the
 * unit text–vision modality-gap direction of the layer's output space, `A = 0`.
 *
 * @module
 */
import { randn, tensor } from "../tensor/creation.ts";
import { realize } from "../tensor/tensor.ts";
import { qr } from "../linalg/qr.ts";
import { deriveSeed } from "../nn/init.ts";
import { OptionsError } from "../options.ts";
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

/** Options of {@link gapInit}. */
export interface GapInitOptions extends CommonInitOptions {
  /** The gap direction `[d_out]` (used as is; it is normalised to unit length). */
  gap?: F32;
  /** Text-side representations `[N, d_out]`, paired row by row with `zVision` (instead of `gap`). */
  zText?: F32;
  /** Vision-side representations `[N, d_out]`. */
  zVision?: F32;
  /**
   * The paper's undefined `smooth(·)` applied to each `g_i = z_text,i − z_vision,i` before averaging: false
   * (default) is the identity, true scales each `g_i` to unit length.
   */
  normalize?: boolean;
  /**
   * The other r − 1 columns of B: `"zeros"` (default; they and the matching rows of A then get no gradient at the
   * first step) or `"orthonormal"` (a seeded random orthonormal basis of a subspace orthogonal to g).
   */
  complement?: "zeros" | "orthonormal";
  /**
   * The noise-level ablation: the unit gap direction ĝ is perturbed by isotropic Gaussian noise of relative size σ
   * (`ĝ + σ·n/‖n‖`, n ~ N(0, I), seeded) and renormalised (default 0: Gap-Init itself; large σ approaches a random
   * direction).
   */
  noise?: number;
}

/** The options schema of {@link gapInit} (the registry's). */
export const GAP_INIT_OPTIONS = z.object({
  normalize: z.boolean().default(false).describe("L2-normalise each z_text − z_vision before averaging"),
  complement: z.enum(["zeros", "orthonormal"]).default("zeros").describe(
    "other columns of B for r > 1: zeros, or a random orthonormal complement of the gap",
  ),
  noise: z.number().min(0).default(0).describe(
    "noise-level ablation: the unit gap plus isotropic Gaussian noise of norm σ, renormalised (0 = Gap-Init)",
  ),
});

/** The gap vector `[d_out]` from `gap` or `mean_i smooth(z_text,i − z_vision,i)`. */
function gapVector(dOut: number, opts: GapInitOptions): F32 {
  if (opts.gap !== undefined) {
    if (opts.gap.ndim !== 1 || opts.gap.shape[0] !== dOut) {
      throw new RangeError(`gap-init: gap is [${opts.gap.shape}], expected [${dOut}] (the layer's d_out)`);
    }
    return opts.gap;
  }
  const { zText, zVision } = opts;
  if (zText === undefined || zVision === undefined) {
    throw new RangeError("gap-init: needs gap [d_out], or zText and zVision [N, d_out]");
  }
  for (const [n, z] of [["zText", zText], ["zVision", zVision]] as const) {
    if (z.ndim !== 2 || z.shape[1] !== dOut || z.shape[0] === 0) {
      throw new RangeError(
        `gap-init: ${n} is [${z.shape}], expected [N, ${dOut}] (N ≥ 1, d_out of the layer)`,
      );
    }
  }
  if (zText.shape[0] !== zVision.shape[0]) {
    throw new RangeError(
      `gap-init: zText has ${zText.shape[0]} rows but zVision has ${zVision.shape[0]}; they must be paired`,
    );
  }
  let g = zText.sub(zVision); // [N, d_out]
  if (opts.normalize) g = g.div(g.square().sum(1, { keepdims: true }).sqrt());
  return g.mean(0);
}

/**
 * Gap-Init (Zhao, Han & Hovy, arXiv 2602.01522): with the modality gap `g = mean_i (z_text,i − z_vision,i)` in the
 * adapted layer's output space (or a given `gap`), `B[:, 0] = g/‖g‖` and `A = 0`, so `B·A = 0` and the base weight
 * is untouched; the first gradient step then moves the layer along the gap. Rank 1 is the paper's setting; for
 * r > 1 the other columns of B are zeros or a random orthonormal complement (METHODS.md §12).
 *
 * With `noise: σ` (the noise-level ablation) the direction is `(ĝ + σ·n/‖n‖) / ‖ĝ + σ·n/‖n‖‖` for a seeded
 * `n ~ N(0, I)`, ĝ = g/‖g‖.
 *
 * `info`: `gapNorm` (‖g‖ before normalisation) and, with noise, `gapCosine` (cos of B's first column with ĝ).
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { gapInit } from "./gap_init.ts";
 * const { a, b } = await gapInit(randn([16, 8], { seed: 0 }), { rank: 1, gap: randn([16], { seed: 1 }) });
 * console.log(a.shape, b.shape); // [1, 8] [16, 1]
 * ```
 */
export async function gapInit(weight: F32, opts: GapInitOptions = {}): Promise<LoraInit> {
  checkInitOptions("gap-init", GAP_INIT_OPTIONS, opts, ["gap", "zText", "zVision"]);
  if (opts.gap !== undefined && (opts.zText !== undefined || opts.zVision !== undefined)) {
    throw new OptionsError("gap-init", [
      'the gap is given both as "gap" and as "zText"/"zVision"; give one of them',
    ]);
  }
  if (opts.gap !== undefined && opts.normalize === true) {
    throw new OptionsError("gap-init", [
      'option "normalize" (true) applies to each zText − zVision pair; it does not apply to a given "gap"',
    ]);
  }
  const rank = opts.rank ?? 8;
  const [dOut, dIn] = checkLayer("gap-init", weight, rank, weight.shape[0]);
  const alpha = opts.alpha ?? rank;
  const device = weight.device;
  const g = gapVector(dOut, opts);
  await checkInputsFinite("gap-init", { gap: opts.gap, zText: opts.zText, zVision: opts.zVision });
  const norm = g.square().sum().sqrt();
  const normValue = await norm.item();
  if (!(normValue > 0) || !Number.isFinite(normValue)) {
    throw new RangeError(`gap-init: the gap vector has norm ${normValue}; it must be finite and non-zero`);
  }
  const sigma = opts.noise ?? 0;
  const info: Record<string, number> = { gapNorm: normValue };
  let unit = g.div(normValue).reshape([dOut, 1]);
  if (sigma > 0) {
    const n = randn([dOut, 1], { seed: deriveSeed(opts.seed ?? 0, "gap-noise"), device });
    const moved = unit.add(n.div(n.square().sum().sqrt()).mul(sigma));
    const movedNorm = await moved.square().sum().sqrt().item();
    if (!(movedNorm > 0)) {
      throw new RangeError(`gap-init: the noise cancelled the gap direction (σ = ${sigma})`);
    }
    const perturbed = moved.div(movedNorm);
    info.gapCosine = await perturbed.mul(unit).sum().item();
    unit = perturbed;
  }
  let b: F32;
  if (rank === 1) b = unit;
  else if ((opts.complement ?? "zeros") === "zeros") {
    b = unit.pad([[0, 0], [0, rank - 1]]);
  } else {
    // QR of [g, Gaussian]: Q's first column is ±g/‖g‖, the others an orthonormal basis orthogonal to it.
    const noise = randn([dOut, rank - 1], { seed: opts.seed ?? 0, device });
    const { q } = await qr(unit.pad([[0, 0], [0, rank - 1]]).add(noise.pad([[0, 0], [1, 0]])));
    b = unit.pad([[0, 0], [0, rank - 1]]).add(
      q.slice(null, [1, rank]).pad([[0, 0], [1, 0]]),
    );
  }
  await realize(b);
  const a = tensor(new Float32Array(rank * dIn), { shape: [rank, dIn], device });
  return {
    a,
    b: b,
    rank,
    alpha,
    scale: loraScale(alpha, rank, opts.useRslora),
    info,
  };
}
