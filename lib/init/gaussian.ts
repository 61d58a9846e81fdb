/**
 * LoRA with Gaussian noise on A (PEFT's `init_lora_weights="gaussian"`): `A ~ N(0, (1/r)²)` — the standard
 * deviation is 1/r, not 1/√r — and `B = 0`, so `B·A = 0` and the base weight is untouched.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { gaussianInit } from "./gaussian.ts";
 * const { a } = await gaussianInit(randn([16, 32], { seed: 0 }), { rank: 4, seed: 1 });
 * console.log(a.shape); // [4, 32]
 * ```
 *
 * @module
 */
import { normalParam } from "../nn/init.ts";
import { tensor } from "../tensor/creation.ts";
import { z } from "../../deps.ts";
import {
  checkInitOptions,
  checkLayer,
  type CommonInitOptions,
  type F32,
  type LoraInit,
  loraScale,
} from "./types.ts";

/** Options of `gaussian` besides the common ones: none. */
export const GAUSSIAN_OPTIONS = z.object({});

/** Gaussian A with standard deviation 1/r, zero B. */
export function gaussianInit(weight: F32, opts: CommonInitOptions = {}): Promise<LoraInit> {
  checkInitOptions("gaussian", GAUSSIAN_OPTIONS, opts);
  const rank = opts.rank ?? 8;
  const [dOut, dIn] = checkLayer("gaussian", weight, rank, Math.max(weight.shape[0], weight.shape[1]));
  const alpha = opts.alpha ?? rank;
  const a = normalParam([rank, dIn], 1 / rank, { seed: opts.seed ?? 0, device: weight.device });
  const b = tensor(new Float32Array(dOut * rank), { shape: [dOut, rank], device: weight.device });
  return Promise.resolve({ a, b, rank, alpha, scale: loraScale(alpha, rank, opts.useRslora) });
}
