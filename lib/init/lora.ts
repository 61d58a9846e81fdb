/**
 * Vanilla LoRA, "Noise & Zeros" with noise on A — Init[A] (Hu et al. 2021, LoRA, arXiv 2106.09685; PEFT's default
 * `init_lora_weights=True`; Hayou, Ghosh & Yu 2024, arXiv 2406.08447). `A ~ U(−1/√d_in, 1/√d_in)` (PEFT's
 * kaiming-uniform with a = √5), `B = 0`, so `B·A = 0` and the base weight is untouched.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { loraInit } from "./lora.ts";
 * const { a, b, scale } = await loraInit(randn([16, 32], { seed: 0 }), { rank: 4, seed: 1 });
 * console.log(a.shape, b.shape, scale); // [4, 32] [16, 4] 1
 * ```
 *
 * @module
 */
import { uniformParam } from "../nn/init.ts";
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

/** Options of `lora` besides the common ones: none. */
export const LORA_OPTIONS = z.object({});

/** Init[A]: uniform A with bound 1/√d_in, zero B. */
export function loraInit(weight: F32, opts: CommonInitOptions = {}): Promise<LoraInit> {
  checkInitOptions("lora", LORA_OPTIONS, opts);
  const rank = opts.rank ?? 8;
  const [dOut, dIn] = checkLayer("lora", weight, rank, Math.max(weight.shape[0], weight.shape[1]));
  const alpha = opts.alpha ?? rank;
  const bound = 1 / Math.sqrt(dIn);
  const a = uniformParam([rank, dIn], -bound, bound, { seed: opts.seed ?? 0, device: weight.device });
  const b = tensor(new Float32Array(dOut * rank), { shape: [dOut, rank], device: weight.device });
  return Promise.resolve({ a, b, rank, alpha, scale: loraScale(alpha, rank, opts.useRslora) });
}
