/**
 * Every LoRA initialisation, one module each, and the registry that scripts, `attachLora` and `deno task init`
 * look methods up in. Each entry records the paper, what the method promises (`kind`), the calibration data it
 * needs, and a zod schema of its own options (defaults and descriptions for `--help`; unknown options rejected).
 *
 * @module
 */
import { z } from "../../deps.ts";
import { entry, type InitMethod } from "./registry.ts";
import { loraInit } from "./lora.ts";
import { gaussianInit } from "./gaussian.ts";
import { initBInit } from "./init_b.ts";
import { SPECTRAL_METHODS } from "./spectral_methods.ts";
import { DATA_METHODS } from "./data_methods.ts";

export * from "./types.ts";
export type { InitKind, InitLayer, InitMethod, InitNeed } from "./registry.ts";
export { loraInit } from "./lora.ts";
export { gaussianInit } from "./gaussian.ts";
export { initBInit, type InitBOptions } from "./init_b.ts";
export { pissaInit, type PissaOptions } from "./pissa.ts";
export { miloraInit, type MiloraOptions } from "./milora.ts";
export { oloraInit, type OloraOptions } from "./olora.ts";
export { loftqInit, type LoftqOptions } from "./loftq.ts";
export { type LoramGain, loramInit, loramLogGain, type LoramOptions, type LoramTracking } from "./loram.ts";
export {
  cordaCovariance,
  cordaDecompose,
  type CordaDecomposition,
  cordaInit,
  type CordaOptions,
} from "./corda.ts";
export { evaInit, evaInitLayers, type EvaOptions, roundHalfEven } from "./eva.ts";
export {
  type LoraGaDirection,
  loraGaIndices,
  loraGaInit,
  type LoraGaOptions,
  type LoraGaScale,
} from "./lora_ga.ts";
export {
  cntloraEstimate,
  cntloraInit,
  cntloraInitLayers,
  type CntLoraMode,
  type CntLoraOptions,
  cntloraTarget,
  type CntLoraTargetOptions,
  vasRanks,
} from "./cntlora.ts";
export { gapInit, type GapInitOptions } from "./gap_init.ts";
export { collectActivations, type CollectActivationsOptions, collectGradients } from "./calibrate.ts";

/** Weights-only random methods. */
const BASIC: Readonly<Record<string, InitMethod>> = {
  lora: entry({
    name: "lora",
    paper: "Hu et al., LoRA (arXiv 2106.09685); Init[A] of Hayou et al. (arXiv 2406.08447); PEFT default",
    kind: "zero",
    needs: [],
    options: z.object({}),
    run: loraInit,
  }),
  gaussian: entry({
    name: "gaussian",
    paper: 'PEFT init_lora_weights="gaussian" (A ~ N(0, 1/r²))',
    kind: "zero",
    needs: [],
    options: z.object({}),
    run: gaussianInit,
  }),
  "init-b": entry({
    name: "init-b",
    paper:
      "Hayou, Ghosh & Yu, The Impact of Initialization on LoRA Finetuning Dynamics (arXiv 2406.08447), Init[B]",
    kind: "zero",
    needs: [],
    options: z.object({
      distribution: z.enum(["uniform", "normal"]).default("uniform").describe("distribution of B"),
      std: z.number().positive().optional().describe(
        "standard deviation of B for the normal distribution (1/√r)",
      ),
    }),
    run: initBInit,
  }),
};

/** Every registered method by name. */
export const INIT_METHODS: Readonly<Record<string, InitMethod>> = {
  ...BASIC,
  ...SPECTRAL_METHODS,
  ...DATA_METHODS,
};

/** The method registered as `name`, or an error listing the known names. */
export function getInitMethod(name: string): InitMethod {
  const m = INIT_METHODS[name];
  if (m === undefined) {
    throw new RangeError(
      `unknown LoRA init method "${name}"; known: ${Object.keys(INIT_METHODS).join(", ")}`,
    );
  }
  return m;
}
export * from "./spectral_gain.ts";
