/**
 * Running kernels: the small `Backend` interface, the WebGPU and WebAssembly backends, and the device choice
 * (`auto` picks a hardware WebGPU adapter, else wasm) that `realize()` uses by default.
 *
 * @module
 */
export type { Backend, BackendStats, PreparedSteps, RawStep, ReadSpec, Step } from "./backend.ts";
export {
  AUTO_DEVICE,
  deviceLine,
  getBackend,
  getDefaultDevice,
  getWasm,
  getWebGPU,
  resolveDevice,
  setDefaultDevice,
} from "./realize.ts";
export { NoAdapterError, type WebGPUBackend, WebGPUError } from "./webgpu.ts";
export { createWasmBackend, type WasmBackend, type WasmBackendOptions } from "./wasm.ts";
export { type AutoDevice, checkDeviceChoice, DEVICE_CHOICES, type DeviceChoice } from "./device.ts";
