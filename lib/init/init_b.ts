/**
 * Init[B] (Hayou, Ghosh & Yu, "The Impact of Initialization on LoRA Finetuning Dynamics", NeurIPS 2024,
 * arXiv 2406.08447): `A = 0` and noise on B. The paper's σ_B is not recoverable from the sources, so (as METHODS.md
 * §1 settles) B is PEFT's Linear default with fan-in r: `B ~ U(−1/√r, 1/√r)`; `distribution: "normal"` gives
 * `N(0, (1/√r)²)` and `std` sets another scale. `B·A = 0`; the base weight is untouched.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { initBInit } from "./init_b.ts";
 * const { a, b } = await initBInit(randn([16, 32], { seed: 0 }), { rank: 4, seed: 1 });
 * console.log(a.shape, b.shape);
 * ```
 *
 * @module
 */
import { normalParam, uniformParam } from "../nn/init.ts";
import { tensor } from "../tensor/creation.ts";
import { OptionsError, showValue } from "../options.ts";
import { z } from "../../deps.ts";
import {
  checkInitOptions,
  checkLayer,
  type CommonInitOptions,
  type F32,
  type LoraInit,
  loraScale,
} from "./types.ts";

/** Options of {@link initBInit}. */
export interface InitBOptions extends CommonInitOptions {
  /** `"uniform"` (default: U(±1/√r)) or `"normal"` (N(0, 1/√r) unless `std` is given). */
  distribution?: "uniform" | "normal";
  /** Standard deviation for the normal distribution (default 1/√r). */
  std?: number;
}

/** The options schema of {@link initBInit} (the registry's). */
export const INIT_B_OPTIONS = z.object({
  distribution: z.enum(["uniform", "normal"]).default("uniform").describe("distribution of B"),
  std: z.number().positive().optional().describe(
    "standard deviation of B for the normal distribution (1/√r)",
  ),
});

/** Zero A, random B. Throws when `std` is given without `distribution: "normal"`. */
export function initBInit(weight: F32, opts: InitBOptions = {}): Promise<LoraInit> {
  checkInitOptions("init-b", INIT_B_OPTIONS, opts);
  if (opts.std !== undefined && opts.distribution !== "normal") {
    throw new OptionsError("init-b", [
      `option "std" (${opts.std}) is the standard deviation of distribution "normal"; it does not apply to ` +
      `distribution ${showValue(opts.distribution ?? "uniform")} (give distribution "normal" with it)`,
    ]);
  }
  const rank = opts.rank ?? 8;
  const [dOut, dIn] = checkLayer("init-b", weight, rank, Math.max(weight.shape[0], weight.shape[1]));
  const alpha = opts.alpha ?? rank;
  const seed = { seed: opts.seed ?? 0, device: weight.device };
  const bound = 1 / Math.sqrt(rank);
  const b = (opts.distribution ?? "uniform") === "uniform"
    ? uniformParam([dOut, rank], -bound, bound, seed)
    : normalParam([dOut, rank], opts.std ?? bound, seed);
  const a = tensor(new Float32Array(rank * dIn), { shape: [rank, dIn], device: weight.device });
  return Promise.resolve({ a, b, rank, alpha, scale: loraScale(alpha, rank, opts.useRslora) });
}
