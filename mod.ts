/**
 * tessera: typed tensors compiled to WGSL on Deno's WebGPU, for studying LoRA fine-tuning from a script. What
 * exists to run, record and show experiments (configuration, results directories, plots, cached base models) is the
 * lab, the package's second entry point (`./lab`, `lab/mod.ts`).
 *
 * @example
 * ```ts
 * import { randn, tensor } from "./mod.ts";
 * const a = randn([64, 32], { seed: 1 });
 * const b = tensor([[1, 2], [3, 4]]);
 * const y = a.matmul(randn([32, 8], { seed: 2 })).relu().sum(0);
 * console.log(await y.data(), await b.sum().item());
 * ```
 *
 * @module
 */
export type { AnyDataArray, DataArray, DType } from "./lib/dtype.ts";
export type * from "./lib/shape.ts";
export * from "./lib/tensor/mod.ts";
export {
  backprop,
  customVjp,
  flattenParams,
  grad,
  gradcheck,
  type GradcheckOptions,
  type GradcheckResult,
  type GradOptions,
  type Params,
  stopGradient,
  unflattenParams,
  type ValueAndGrad,
  valueAndGrad,
  VJP_RULES,
  type VjpRule,
} from "./lib/autodiff/mod.ts";
export {
  dstBasis,
  type DstOptions,
  eigh,
  type EighOptions,
  type EighResult,
  F32_EPS,
  IncrementalPCA,
  type IncrementalPCAOptions,
  NF4_CODE_TABLE,
  NF4_THRESHOLDS,
  nf4Dequantize,
  type Nf4Options,
  nf4Qdq,
  nf4Quantize,
  type Nf4Quantized,
  pinv,
  type PinvOptions,
  qr,
  type QrOptions,
  type QrResult,
  svd,
  svdLowRank,
  type SvdLowRankOptions,
  type SvdOptions,
  type SvdResult,
} from "./lib/linalg/mod.ts";
export * from "./lib/ir/mod.ts";
export * from "./lib/codegen/mod.ts";
export * from "./lib/runtime/mod.ts";
export {
  checkOptions,
  type ConfigSchema,
  OptionsError,
  type OptionsSchema,
  showValue,
} from "./lib/options.ts";
export * from "./lib/nn/mod.ts";
export * from "./lib/train/mod.ts";
export * from "./lib/lora/mod.ts";
export * from "./lib/init/mod.ts";
export * from "./lib/models/mod.ts";
export * from "./lib/data/mod.ts";
export * from "./lib/io/mod.ts";
