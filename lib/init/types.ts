/**
 * The contract every LoRA initialisation follows: one pure function of a weight matrix (and, for data-driven
 * methods, its activations, gradients or modality gap) to a `LoraInit` `{ a, b, base?, rank, alpha, scale }` (the
 * type `lib/lora` wraps). It never mutates a layer; attaching the result is `attach.ts`'s job.
 *
 * Conventions (see ../shared/METHODS.md §0): `W` is `[d_out, d_in]`, `A = lora_A.weight` is `[r, d_in]`,
 * `B = lora_B.weight` is `[d_out, r]`, and the adapted layer computes `y = x·baseᵀ + s·x·Aᵀ·Bᵀ` with
 * `s = alpha/r` (or `alpha/√r` with rsLoRA).
 *
 * @module
 */
import type { F32 } from "../nn/linear.ts";
import type { LoraInit } from "../lora/linear.ts";
import { z } from "../../deps.ts";
import { checkOptions, type ConfigSchema, opt } from "../options.ts";
import { checkFinite } from "../nn/finite.ts";

export type { F32, LoraInit };
export { loraScale } from "../lora/linear.ts";

/** Calibration data of one layer, for the data-driven methods. */
export interface LayerData {
  /** Inputs of the layer: `[T, d_in]` for one batch or `[NB, T, d_in]` for NB minibatches / samples. */
  activations?: F32;
  /** Gradient of the loss w.r.t. W: `[d_out, d_in]`, or `[NB, d_out, d_in]` to be averaged (LoRA-GA). */
  grads?: F32;
  /** Gap-Init: the text–vision gap direction `[d_out]`. */
  gap?: F32;
  /** Gap-Init: text-side representations `[N, d_out]` (with `zVision`). */
  zText?: F32;
  /** Gap-Init: vision-side representations `[N, d_out]` (with `zText`). */
  zVision?: F32;
}

/** Options every method takes. */
export interface CommonInitOptions {
  /** Rank r (default 8, PEFT's default). */
  rank?: number;
  /** lora_alpha (default: equal to the rank, so s = 1). */
  alpha?: number;
  /** rsLoRA scaling `alpha/√r` instead of `alpha/r`. */
  useRslora?: boolean;
  /** Seed of every random draw (default 0). */
  seed?: number;
}

const COMMON_OPTIONS = z.object({
  rank: opt.count().optional(),
  alpha: opt.positive().optional(),
  useRslora: z.boolean().optional(),
  seed: opt.seed().optional(),
});

/** The names of the options every method takes (`rank`, `alpha`, `useRslora`, `seed`). */
export const COMMON_OPTION_KEYS: ReadonlySet<string> = new Set(Object.keys(COMMON_OPTIONS.shape));

/**
 * Checks the options every method takes (rank an integer >= 1, alpha a finite number > 0, useRslora a boolean, seed
 * an integer), throwing an `OptionsError` naming the method, the key and the value. Other keys are the method's own
 * and are left to it.
 *
 * @param method The method's name, for the message.
 * @param opts The options given to it.
 */
export function checkCommonOptions(method: string, opts: CommonInitOptions): void {
  checkOptions(method, COMMON_OPTIONS, opts);
}

/**
 * Checks every option given to a method, strictly: the common ones, the calibration data it takes (`data`, tensors)
 * and its own, by `schema` (the option schema it is registered with). An unknown key or a bad value throws an
 * `OptionsError` naming the method, the key and the value.
 *
 * @param method The method's name, for the message.
 * @param schema Its own options (a `z.object(...)` schema).
 * @param opts The options given to it.
 * @param data The calibration data keys it takes.
 */
export function checkInitOptions(
  method: string,
  schema: ConfigSchema & { readonly shape: Readonly<Record<string, unknown>> },
  opts: object,
  data: readonly (keyof LayerData)[] = [],
): void {
  const tensors = Object.fromEntries(data.map((k) => [k, opt.tensor().optional()]));
  const own = schema.shape as Record<string, z.ZodType>;
  checkOptions(method, COMMON_OPTIONS.extend(tensors).extend(own).strict(), opts);
}

/**
 * Checks that the tensors a method computes from (its weight, its calibration data) hold no NaN or infinity, which
 * an SVD or a PCA can lose, returning a finite and wrong init: throws a `NonFiniteWeightsError` naming each bad
 * tensor, with the count and the first bad element. One read-back of one value per tensor.
 *
 * @param method The method's name, for the message.
 * @param tensors The tensors by name; undefined ones (data not given) are skipped.
 */
export async function checkInputsFinite(
  method: string,
  tensors: Readonly<Record<string, F32 | undefined>>,
): Promise<void> {
  const given = Object.entries(tensors).filter((e): e is [string, F32] => e[1] !== undefined);
  await checkFinite(given, { what: method });
}

/** Checks the weight is a 2-D float tensor and the rank is a usable integer; returns `[d_out, d_in]`. */
export function checkLayer(method: string, weight: F32, rank: number, maxRank?: number): [number, number] {
  if (weight.ndim !== 2 || (weight.dtype as string) !== "f32") {
    throw new TypeError(
      `${method}: weight must be a 2-D f32 tensor [d_out, d_in], got [${weight.shape}] ${weight.dtype}`,
    );
  }
  const [dOut, dIn] = weight.shape;
  const limit = maxRank ?? Math.min(dOut, dIn);
  if (!Number.isInteger(rank) || rank < 1 || rank > limit) {
    throw new RangeError(
      `${method}: rank ${rank} is not possible for a [${dOut}, ${dIn}] weight (it must be an integer in 1..${limit})`,
    );
  }
  return [dOut, dIn];
}
