/**
 * Tensors: `Tensor<S, D>` with its shape and dtype in the type, creation (`tensor`, `randn`, `arange`, ...), lazy
 * elementwise, movement, reduction and matmul methods that only build IR, and hand-written kernels run as part of
 * a graph (`runKernels`).
 *
 * @example
 * ```ts
 * import { randn, tensor } from "./mod.ts";
 * const a = randn([4, 3], { seed: 1 });
 * const y = a.matmul(tensor([[1], [2], [3]])).relu();
 * console.log(await y.data());
 * ```
 *
 * @module
 */
export {
  type AxisArg,
  type F16,
  type F32,
  type I32,
  type NestedArray,
  type Operand,
  realize,
  Tensor,
} from "./tensor.ts";
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
} from "./creation.ts";
export {
  customKernel,
  type CustomKernelSpec,
  type KernelLaunch,
  type KernelOutputs,
  type OutputSpec,
  runKernels,
} from "./custom.ts";
