/**
 * tessera: typed tensors compiled to WGSL on Deno's WebGPU, for studying LoRA fine-tuning from a script.
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
export { type AxisArg, type NestedArray, type Operand, realize, Tensor } from "./lib/tensor/tensor.ts";
export {
  arange,
  concat,
  type CreateOptions,
  eye,
  full,
  type Nested,
  ones,
  rand,
  randn,
  type RandOptions,
  setSeed,
  type ShapeOf,
  stack,
  tensor,
  where,
  zeros,
} from "./lib/tensor/creation.ts";
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
export {
  customKernel,
  type CustomKernelSpec,
  type KernelLaunch,
  type OutputSpec,
  runKernels,
} from "./lib/tensor/custom.ts";
export type { DeviceName, Node, Storage } from "./lib/ir/node.ts";
export {
  type CustomKernelArg,
  type CustomVjpArg,
  type CustomWasmKernel,
  type HostBuffer,
  Op,
  type OpArgs,
} from "./lib/ir/ops.ts";
export { type AdapterTraits, type MatmulPolicy, matmulPolicyFor } from "./lib/codegen/matmul_policy.ts";
export type { MatmulTile } from "./kernels/matmul.wgsl.ts";
export type * from "./lib/codegen/kexpr.ts";
export type { Backend, BackendStats, PreparedSteps, RawStep, Step } from "./lib/runtime/backend.ts";
export {
  AUTO_DEVICE,
  deviceLine,
  getBackend,
  getDefaultDevice,
  getWasm,
  getWebGPU,
  resolveDevice,
  setDefaultDevice,
} from "./lib/runtime/realize.ts";
export { NoAdapterError, type WebGPUBackend, WebGPUError } from "./lib/runtime/webgpu.ts";
export { createWasmBackend, type WasmBackend, type WasmBackendOptions } from "./lib/runtime/wasm.ts";
export {
  type AutoDevice,
  checkDeviceChoice,
  DEVICE_CHOICES,
  type DeviceChoice,
} from "./lib/runtime/device.ts";
export { OptionsError } from "./lib/options.ts";
export * from "./lib/nn/mod.ts";
export * from "./lib/train/mod.ts";
export * from "./lib/lora/mod.ts";
export * from "./lib/init/mod.ts";
export * from "./lib/models/mod.ts";
export * from "./lib/data/mod.ts";
export * from "./lib/io/mod.ts";
export * from "./lib/util/mod.ts";
