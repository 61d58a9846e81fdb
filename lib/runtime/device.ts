/**
 * Device choice: the names a user may give (`auto` and the three devices) and what `auto` picks — a hardware
 * WebGPU adapter when the runtime finds one, else the `wasm` CPU device. A software adapter (Mesa's
 * llvmpipe/lavapipe, SwiftShader, any adapter that reports `isFallbackAdapter`) is not hardware: on such a
 * machine WebAssembly SIMD runs the same kernels several times faster. An explicit `"webgpu"` still uses it.
 *
 * @module
 */
import type { DeviceName } from "../ir/node.ts";
import { chosenBackendNote, requestGpuAdapter } from "./gpu_adapter.ts";

/** Every device name a user may pass (`--device`, `TESSERA_DEVICE`, `{ device }`), `auto` first. */
export const DEVICE_CHOICES = ["auto", "webgpu", "wasm", "cpu"] as const;

/** A device name or `"auto"`. */
export type DeviceChoice = (typeof DEVICE_CHOICES)[number];

/** What `auto` resolved to, and why. */
export interface AutoDevice {
  /** The chosen device. */
  readonly device: "webgpu" | "wasm";
  /** One line: the adapter found (or not) and the rule applied. */
  readonly reason: string;
}

/** Names of software rasterisers that report themselves only by description on some platforms. */
const SOFTWARE = /llvmpipe|lavapipe|softpipe|swiftshader|microsoft basic render/i;

/** Throws unless `d` names a device or `"auto"`. `what` names the source (a flag, a variable). */
export function checkDeviceChoice(d: unknown, what = "device"): DeviceChoice {
  if (typeof d !== "string" || !(DEVICE_CHOICES as readonly string[]).includes(d)) {
    throw new TypeError(`${what} must be one of ${DEVICE_CHOICES.join(", ")}, got ${JSON.stringify(d)}`);
  }
  return d as DeviceChoice;
}

/** Asks the runtime for a WebGPU adapter and applies the `auto` rule. Never throws. */
export async function probeAutoDevice(): Promise<AutoDevice> {
  if (typeof navigator === "undefined" || navigator.gpu === undefined) {
    return { device: "wasm", reason: "auto: no WebGPU in this runtime" };
  }
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await requestGpuAdapter();
  } catch (e) {
    return { device: "wasm", reason: `auto: requesting a WebGPU adapter failed (${(e as Error).message})` };
  }
  if (adapter === null) {
    const note = chosenBackendNote();
    return { device: "wasm", reason: `auto: no WebGPU adapter${note ? ` (${note})` : ""}` };
  }
  const info = adapter.info;
  const name = info.description || info.device || info.vendor || "unknown adapter";
  if (info.isFallbackAdapter || SOFTWARE.test(`${info.description} ${info.device} ${info.vendor}`)) {
    return { device: "wasm", reason: `auto: the WebGPU adapter is a software one (${name})` };
  }
  return { device: "webgpu", reason: `auto: hardware WebGPU adapter (${name})` };
}

/** `"wasm"`-style resolution of a choice given what `auto` found. */
export function resolveChoice(choice: DeviceChoice, auto: AutoDevice): DeviceName {
  return choice === "auto" ? auto.device : choice;
}
