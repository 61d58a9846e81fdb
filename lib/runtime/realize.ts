/**
 * Realization: finds the plan of the unrealized graph below some nodes (scheduled and lowered once per graph
 * structure, see `plan.ts`), allocates outputs from the pool (intermediates are released right after their last
 * use, so later kernels of the same submission reuse their buffers), and runs everything in one submission.
 *
 * @module
 */
import type { AnyDataArray, DType } from "../dtype.ts";
import { type DeviceName, type Node, printGraph, type Storage } from "../ir/node.ts";
import { paramValue } from "../codegen/lower.ts";
import type { Backend, RawStep, Step } from "./backend.ts";
import { graphSignature, type Plan, planFor, planStep } from "./plan.ts";
import { LOOP_BUDGET } from "../codegen/split_loops.ts";
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
import { showValue } from "../options.ts";
import { yieldIfDue } from "./event_loop.ts";

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

/** Uploads `s` now when it still holds host data (so the host copy can be freed); other storage is left alone. */
export async function uploadStorage(s: Storage): Promise<void> {
  if (s instanceof HostStorage && !s.released && s.host !== null) s.resolve(await getBackend(s.device));
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
  defaultChoice = checkDeviceChoice(d, "setDefaultDevice: device");
  defaultDevice = resolveChoice(defaultChoice, AUTO_DEVICE);
}

/** The device a choice names (`"auto"` resolved), for code that takes `--device auto|webgpu|wasm|cpu`. */
export function resolveDevice(d: DeviceChoice | undefined): DeviceName {
  return d === undefined
    ? getDefaultDevice()
    : resolveChoice(checkDeviceChoice(d, "resolveDevice: device"), AUTO_DEVICE);
}

/** getBackend's refusal of a name that is no device; "auto" is a choice, which {@link resolveDevice} resolves. */
function unknownDevice(d: unknown): string {
  const hint = d === "auto" ? ' ("auto" is a choice: resolveDevice("auto") names its device)' : "";
  return `getBackend: unknown device ${showValue(d)}; expected "cpu", "wasm" or "webgpu"${hint}`;
}

/** The backend of a device (`"cpu"`, `"wasm"` or `"webgpu"`), created on first use. */
export function getBackend(d: DeviceName): Promise<Backend> {
  let b = backends[d];
  if (b === undefined) {
    b = d === "cpu"
      ? Promise.resolve(new CpuBackend())
      : d === "wasm"
      ? Promise.resolve(createWasmBackend())
      : d === "webgpu"
      ? createWebGPUBackend()
      : Promise.reject(new TypeError(unknownDevice(d)));
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

/** What one realization ran: its plan, and the storages and values it bound (see {@link RealizeOptions.record}). */
export interface Recording {
  /** The plan (shared by every realization of a graph with the same signature). */
  readonly plan: Plan;
  /** The node of each leaf slot (its `storage` may be a {@link HostStorage}). */
  readonly leafNodes: readonly Node[];
  /** The device storage bound to each leaf slot. */
  readonly leaves: readonly Storage[];
  /** Value of each parameter slot. */
  readonly params: readonly number[];
  /** The storage of each root (owned by the caller, as the return value of {@link realizeNodes}). */
  readonly roots: readonly Storage[];
}

/** Computes `roots` (all on one device); returns a fresh storage per root, owned by the caller. */
export async function realizeNodes(
  roots: readonly Node[],
  opts: RealizeOptions & { record?: (r: Recording) => void } = {},
): Promise<Storage[]> {
  if (roots.length === 0) return [];
  await yieldIfDue(); // lets finalizers release the memory of unreachable tensors (see event_loop.ts)
  const device = roots[0].device;
  const be = await getBackend(device);
  if (debugLevel() >= 3) console.error(printGraph(roots));
  for (const r of roots) if (r.storage !== null) throw new Error(`realizeNodes: ${r} is already realized`);
  const sig = graphSignature(roots);
  const plan = planFor(roots, sig, {
    maxInputs: be.maxInputs,
    noFusion: opts.noFusion,
    noMatmulTemplate: opts.noMatmulTemplate,
    loopBudget: be.loopBudget ?? LOOP_BUDGET,
    rowKernels: be.rowKernels,
    viewAlign: be.range === undefined ? undefined : be.viewAlign,
  });
  const params = sig.params.map(paramValue);
  // Upload every host-side leaf before any intermediate is released: an upload is queued ahead of this
  // submission, so it must never land in a pooled buffer that an earlier step of the same submission still uses.
  const leaves = sig.leaves.map((n) => resolveStorage(n.storage!, be));
  const rootSet = new Set(plan.roots);
  const buffers: Storage[] = new Array(plan.buffers.length);
  const steps: (Step | RawStep)[] = [];
  try {
    plan.kernels.forEach((k, i) => {
      const b = plan.buffers[i];
      try {
        buffers[i] = be.alloc(b.dtype, b.size);
      } catch (e) {
        throw new RangeError(
          `result of ${b.op} with shape [${b.shape.join(", ")}] ${b.dtype}: ${(e as Error).message}`,
        );
      }
      const step = planStep(plan, i, leaves, buffers, params, be.range?.bind(be));
      if (step !== null) steps.push(step);
      for (const inp of k.inputs) {
        if (inp.buf !== undefined && !rootSet.has(inp.buf) && plan.lastUse[inp.buf] === i) {
          // Safe to reuse inside this submission: later steps are ordered after this one.
          buffers[inp.buf].release();
        }
      }
    });
    await be.run(steps);
  } catch (e) {
    for (const s of buffers) s?.release();
    throw e;
  }
  const out = plan.roots.map((b) => buffers[b]);
  opts.record?.({ plan, leafNodes: sig.leaves, leaves, params, roots: out });
  return out;
}
