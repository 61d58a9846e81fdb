/**
 * Language models: a Llama-2 style causal LM with llama2.c semantics, its loaders (llama2.c `.bin`, Hugging Face
 * `config.json` + safetensors) and savers, and sampling with a key/value cache.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "../io/tokenizer.ts";
 * import { generate, loadLlama } from "./mod.ts";
 * const model = await loadLlama("../shared/data/models/stories260K/stories260K.bin");
 * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
 * const ids = await generate(model, tok.encode("Once"), { steps: 16, temperature: 0 });
 * console.log(tok.decode(ids));
 * ```
 *
 * @module
 */
export {
  type ForwardCachedOptions,
  type HostWeight,
  KvCache,
  LlamaAttention,
  LlamaBlock,
  type LlamaConfig,
  type LlamaFamily,
  LlamaFeedForward,
  LlamaLM,
  type LlamaLoadOptions,
  llamaParameterShapes,
  type LlamaRandomOptions,
  type ResolvedLlamaConfig,
  resolveLlamaConfig,
} from "./llama.ts";
export {
  HF_PROJECTION_NAMES,
  hfModulePath,
  hfName,
  modulePathFromHf,
  ropeRowsFromHf,
  ropeRowsToHf,
} from "./names.ts";
export {
  type HfCheckpoint,
  hfConfigFromLlama,
  hfEosTokenIds,
  type HfGenerationSettings,
  hfGenerationSettings,
  llamaConfigFromHf,
  loadHf,
  readHf,
  saveHf,
} from "./hf.ts";
export { loadLlama, modelEosTokenIds, modelGenerationSettings } from "./load.ts";
export { argmax, generate, type GenerateOptions, sampleToken, type SampleTokenOptions } from "./sample.ts";

// Types from other areas that the API above refers to.
export type { AxisArg, NestedArray, Tensor } from "../tensor/tensor.ts";
export type { DataArray, DType } from "../dtype.ts";
export type { DeviceName, Node, Storage } from "../ir/node.ts";
export type { Op, OpArgs } from "../ir/ops.ts";
export type * from "../shape.ts";
export type { Module } from "../nn/module.ts";
export type { Embedding, EmbeddingOptions, F32, LinearLayer } from "../nn/linear.ts";
export type { RMSNorm, RMSNormModuleOptions, RmsNormOptions } from "../nn/norm.ts";
export type { RopeTables } from "../nn/attention.ts";
export type { CrossEntropyOptions, Reduction } from "../nn/loss.ts";
export * from "./vlm.ts";
