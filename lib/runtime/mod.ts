/**
 * Running kernels: the small `Backend` interface, the WebGPU backend, and the default device that `realize()` uses.
 *
 * @module
 */
export type { Backend, BackendStats, PreparedSteps, RawStep, Step } from "./backend.ts";
export { getBackend, getDefaultDevice, getWebGPU, setDefaultDevice } from "./realize.ts";
export { NoAdapterError, type WebGPUBackend, WebGPUError } from "./webgpu.ts";
