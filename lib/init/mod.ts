/**
 * Every LoRA initialisation, one module each, the registry that scripts, `attachLora` and `deno task init` look
 * methods up in, and {@link attachLora}, which adapts a model's layers with any of them. Each entry records the
 * paper, what the method promises (`kind`), the calibration data it needs, and a zod schema of its own options
 * (defaults and descriptions for `--help`; unknown options rejected).
 *
 * @module
 */
export * from "./types.ts";
export type { InitKind, InitLayer, InitMethod, InitNeed } from "./registry.ts";
export { loraInit } from "./lora.ts";
export { gaussianInit } from "./gaussian.ts";
export { initBInit, type InitBOptions } from "./init_b.ts";
export { pissaInit, type PissaOptions } from "./pissa.ts";
export { miloraInit, type MiloraOptions } from "./milora.ts";
export { oloraInit, type OloraOptions } from "./olora.ts";
export { loftqInit, type LoftqOptions } from "./loftq.ts";
export {
  type LoramBasis,
  type LoramGain,
  loramInit,
  loramLogGain,
  type LoramOptions,
  type LoramTracking,
} from "./loram.ts";
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
  type CntLoraGram,
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
export { getInitMethod, INIT_METHODS } from "./methods.ts";
export { attachLora, type AttachResult, initTensors, type LoraConfig } from "./attach.ts";

export * from "./spectral_gain.ts";
