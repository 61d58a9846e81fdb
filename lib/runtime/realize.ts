/**
 * Realization: schedules the unrealized graph below some nodes into kernels, lowers and verifies each, allocates
 * outputs from the pool (intermediates are released right after their last use, so later kernels of the same
 * submission reuse their buffers), and runs everything in one submission.
 *
 * @module
 */
import type { AnyDataArray, DType } from "../dtype.ts";
import { type DeviceName, type Node, printGraph, type Storage } from "../ir/node.ts";
import { schedule } from "../codegen/schedule.ts";
import { LOOP_BUDGET, splitLongLoops } from "../codegen/split_loops.ts";
import { lowerCached } from "../codegen/lower.ts";
import { verifyKernel } from "../codegen/kexpr.ts";
import type { Backend, Step } from "./backend.ts";
import { CpuBackend } from "./cpu.ts";
import { createWebGPUBackend, type WebGPUBackend } from "./webgpu.ts";
import { createWasmBackend, type WasmBackend } from "./wasm.ts";
import {
  type AutoDevice,
  checkDeviceChoice,
  type DeviceChoice,
  probeAutoDevice,
  resolveChoice,
} from "./device.ts";
import { debugLevel } from "./debug.ts";

/**
 * Storage whose data is still on the host: uploaded to its device on first use. Lets tensors be created
 * synchronously before the (asynchronously created) device exists.
 */
export class HostStorage implements Storage {
  readonly device: DeviceName;
  readonly bytes: number;
  #host: AnyDataArray | null;
  readonly #dtype: DType;
  #real: Storage | null = null;
  #released = false;
  /** Keeps `data` (not copied) to upload later as dtype `dtype`. */
  constructor(device: DeviceName, dtype: DType, data: AnyDataArray) {
    this.device = device;
    this.#dtype = dtype;
    this.#host = data;
    this.bytes = data.byteLength;
  }
  get released(): boolean {
    return this.#released;
  }
  /** The host data, while not yet uploaded. */
  get host(): AnyDataArray | null {
    return this.#host;
  }
  /** The device storage, uploading on first call. */
  resolve(be: Backend): Storage {
    if (this.#released) throw new Error("tensor used after dispose()");
    if (this.#real === null) {
      this.#real = be.upload(this.#dtype, this.#host!);
      this.#host = null;
    }
    return this.#real;
  }
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#real?.release();
    this.#host = null;
  }
}

/** Device storage behind `s`, uploading host data when needed. */
export function resolveStorage(s: Storage, be: Backend): Storage {
  if (s.released) throw new Error("tensor used after dispose(): its device memory was released");
  return s instanceof HostStorage ? s.resolve(be) : s;
}

let defaultDevice: DeviceName | null = null;
let defaultChoice: DeviceChoice = "auto";
const backends: Partial<Record<DeviceName, Promise<Backend>>> = {};

/** What the device `"auto"` is in this process: probed once, when the runtime is loaded. */
export const AUTO_DEVICE: AutoDevice = await probeAutoDevice();

/**
 * The device new tensors go to: `TESSERA_DEVICE` if set (and readable), else `"auto"` — a hardware WebGPU
 * adapter when there is one, else `"wasm"` (see {@link AUTO_DEVICE} for the reason).
 */
export function getDefaultDevice(): DeviceName {
  if (defaultDevice === null) {
    let choice: DeviceChoice = "auto";
    let readable = false;
    try {
      readable = Deno.permissions.querySync({ name: "env", variable: "TESSERA_DEVICE" }).state === "granted";
    } catch {
      // No permission API (or no access): the default stands.
    }
    const v = readable ? Deno.env.get("TESSERA_DEVICE") : undefined;
    if (v) choice = checkDeviceChoice(v, "TESSERA_DEVICE");
    defaultChoice = choice;
    defaultDevice = resolveChoice(choice, AUTO_DEVICE);
  }
  return defaultDevice;
}

/** Sets the device new tensors go to (`"auto"` picks as {@link AUTO_DEVICE} says). */
export function setDefaultDevice(d: DeviceChoice): void {
  defaultChoice = checkDeviceChoice(d);
  defaultDevice = resolveChoice(defaultChoice, AUTO_DEVICE);
}

/** The device a choice names (`"auto"` resolved), for code that takes `--device auto|webgpu|wasm|cpu`. */
export function resolveDevice(d: DeviceChoice | undefined): DeviceName {
  return d === undefined ? getDefaultDevice() : resolveChoice(checkDeviceChoice(d), AUTO_DEVICE);
}

/** The backend of a device, created on first use. */
export function getBackend(d: DeviceName): Promise<Backend> {
  let b = backends[d];
  if (b === undefined) {
    b = d === "cpu"
      ? Promise.resolve(new CpuBackend())
      : d === "wasm"
      ? Promise.resolve(createWasmBackend())
      : d === "webgpu"
      ? createWebGPUBackend()
      : Promise.reject(new TypeError(`unknown device ${JSON.stringify(d)}`));
    b.catch(() => delete backends[d]);
    backends[d] = b;
  }
  return b;
}

/**
 * One line naming a device choice (default: the default device) as resolved, its adapter, and why `auto` picked
 * it, e.g. `wasm: WebAssembly SIMD128 + relaxed FMA, 2 threads (auto: the WebGPU adapter is a software one
 * (llvmpipe ...))`. Experiments, benchmarks and CLIs print it.
 */
export async function deviceLine(choice?: DeviceChoice): Promise<string> {
  const d = resolveDevice(choice);
  const c = choice ?? defaultChoice;
  const desc = (await getBackend(d)).description;
  return `${d}: ${desc}${c === "auto" ? ` (${AUTO_DEVICE.reason})` : ""}`;
}

/** The wasm backend (for benchmarks that set its thread count). */
export async function getWasm(): Promise<WasmBackend> {
  return (await getBackend("wasm")) as WasmBackend;
}

/** The WebGPU backend (for benchmarks and reports that need the adapter). */
export async function getWebGPU(): Promise<WebGPUBackend> {
  return (await getBackend("webgpu")) as WebGPUBackend;
}

/** Options of {@link realizeNodes}. */
export interface RealizeOptions {
  /** Give every non-view op its own kernel (tests compare fused with unfused results). */
  noFusion?: boolean;
  /** Disable the tiled matmul template (tests). */
  noMatmulTemplate?: boolean;
}

/** Computes `roots` (all on one device); returns a fresh storage per root, owned by the caller. */
export async function realizeNodes(roots: readonly Node[], opts: RealizeOptions = {}): Promise<Storage[]> {
  if (roots.length === 0) return [];
  const device = roots[0].device;
  const be = await getBackend(device);
  if (debugLevel() >= 3) console.error(printGraph(roots));
  const loopBudget = be.loopBudget ?? LOOP_BUDGET;
  const split = splitLongLoops(roots, loopBudget);
  const order = schedule(split, { maxInputs: be.maxInputs, noFusion: opts.noFusion, loopBudget });
  const materialized = new Set(order);
  const lowered = order.map((n) => {
    if (n.size === 0) return { kernel: null, inputs: [] }; // nothing to compute
    const l = lowerCached(n, (m) => materialized.has(m), { matmulTemplate: !opts.noMatmulTemplate });
    verifyKernel(l.kernel, loopBudget);
    return l;
  });
  const lastUse = new Map<Node, number>();
  lowered.forEach((l, i) => l.inputs.forEach((inp) => lastUse.set(inp, i)));
  const rootSet = new Set(split);
  const out = new Map<Node, Storage>();
  const steps: Step[] = [];
  // Upload every host-side leaf before any intermediate is released: an upload is queued ahead of this
  // submission, so it must never land in a pooled buffer that an earlier step of the same submission still uses.
  const leaves = new Map<Storage, Storage>();
  for (const l of lowered) {
    for (const inp of l.inputs) {
      if (inp.storage !== null) leaves.set(inp.storage, resolveStorage(inp.storage, be));
    }
  }
  try {
    order.forEach((n, i) => {
      const inputs = lowered[i].inputs.map((
        inp,
      ) => (inp.storage !== null ? leaves.get(inp.storage)! : out.get(inp)!));
      let output: Storage;
      try {
        output = be.alloc(n.dtype, n.size);
      } catch (e) {
        throw new RangeError(
          `result of ${n.op} with shape [${n.shape.join(", ")}] ${n.dtype}: ${(e as Error).message}`,
        );
      }
      out.set(n, output);
      const kernel = lowered[i].kernel;
      if (kernel !== null) steps.push({ kernel, inputs, output });
      for (const inp of lowered[i].inputs) {
        if (inp.storage === null && !rootSet.has(inp) && lastUse.get(inp) === i) {
          // Safe to reuse inside this submission: later steps are ordered after this one.
          out.get(inp)!.release();
        }
      }
    });
    await be.run(steps);
  } catch (e) {
    for (const s of out.values()) s.release();
    throw e;
  }
  return split.map((r) => {
    if (r.storage !== null) throw new Error(`realizeNodes: ${r} is already realized`);
    return out.get(r)!;
  });
}
