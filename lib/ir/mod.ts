/**
 * The intermediate representation: the closed set of primitives ({@link Op}) with the argument each carries
 * (a hand-written kernel's included), and the immutable, hash-consed nodes tensors build.
 *
 * @module
 */
export type { DeviceName, Node, Storage } from "./node.ts";
export {
  type CustomKernelArg,
  type CustomVjpArg,
  type CustomWasmKernel,
  type HostBuffer,
  Op,
  type OpArgs,
  type WasmFeatures,
} from "./ops.ts";
