/**
 * The backend interface: a device that allocates memory, runs kernels and reads results back. Buffer lifetime
 * lives here and in `realize.ts` only; math code never handles it.
 *
 * @module
 */
import type { AnyDataArray, DType } from "../dtype.ts";
import type { Kernel } from "../codegen/kexpr.ts";
import type { DeviceName, Storage } from "../ir/node.ts";
import type { CustomWasmKernel, WasmFeatures } from "../ir/ops.ts";

/** One kernel launch: its kernel, the storage of each input binding, and the output storage. */
export interface Step {
  /** What to run. */
  readonly kernel: Kernel;
  /** Storage bound to each input binding. */
  readonly inputs: readonly Storage[];
  /** Storage the kernel writes. */
  readonly output: Storage;
  /** One value per parameter slot of the kernel (`kernel.params`): constants and seeds of this launch. */
  readonly params?: readonly number[];
}

/**
 * One launch of a hand-written kernel (from `kernels/`): WGSL for GPUs, and a host function with the same effect
 * for the CPU backends (`cpu`, and `wasm` over views of its memory). Binding `i` of the shader is `buffers[i]`.
 */
export interface RawStep {
  /** Name used in errors and DEBUG output. */
  readonly name: string;
  /** The compute shader (entry point `main`); null for a step of the CPU backends only, which WebGPU refuses. */
  readonly wgsl: string | null;
  /** Workgroup counts. */
  readonly dispatch: readonly [number, number, number];
  /** The same computation on host arrays (f32 data as Float32Array, i32 as Int32Array, u32/bool as Uint32Array). */
  readonly host: (buffers: (Float32Array | Int32Array | Uint32Array)[]) => void;
  /** Optional: the same computation as a WebAssembly module, which the `wasm` device runs instead of `host`. */
  readonly wasm?: (features: WasmFeatures) => CustomWasmKernel;
  /** Storage of each binding. */
  readonly buffers: readonly Storage[];
}

/** Steps prepared by {@link Backend.prepare} for repeated runs over the same storages. */
export interface PreparedSteps {
  /**
   * Runs the steps again over the current contents of their storages, then copies each `[src, dst]` pair of
   * `copies` (equal sizes), all in one submission on GPUs.
   */
  run(copies?: readonly (readonly [Storage, Storage])[]): Promise<void>;
  /** Frees what preparing made (not the storages). */
  dispose(): void;
  /** Launches (dispatches) one run makes: fewer than the steps where independent kernels share one. */
  readonly launches?: number;
}

/** What to read back: `n` elements of dtype `dtype` from `storage`. */
export interface ReadSpec {
  /** The storage. */
  readonly storage: Storage;
  /** Its element type. */
  readonly dtype: DType;
  /** Elements to read. */
  readonly n: number;
}

/** A device able to run kernels. */
export interface Backend {
  /** `"webgpu"`, `"wasm"` or `"cpu"`. */
  readonly name: DeviceName;
  /** Human-readable adapter description, printed by every experiment. */
  readonly description: string;
  /** Storage buffers one kernel may bind besides its output. */
  readonly maxInputs: number;
  /**
   * Optional: whether reductions over whole rows are fused into the kernels that broadcast them, one invocation
   * per row (the renderer then uses a kernel's row form, see `KernelRow`). Default false.
   */
  readonly rowKernels?: boolean;
  /** Largest single buffer in bytes. */
  readonly maxBufferBytes: number;
  /**
   * Most loop iterations one kernel invocation may run (llvmpipe's cap, see `split_loops.ts`); longer reductions
   * are split into passes. Absent: the default `LOOP_BUDGET`.
   */
  readonly loopBudget?: number;
  /**
   * Optional, with {@link range}: the byte alignment at which a buffer can be bound from an offset. Kernels then
   * read a contiguous view of stored data (a parameter inside an optimiser's pack) as a buffer of its own, so they
   * do not depend on where the view starts (see `plan.ts`, `contiguousView`).
   */
  readonly viewAlign?: number;
  /** Optional: `bytes` of `s` from `byteOffset` (aligned to {@link viewAlign}), to bind as a kernel input. */
  range?(s: Storage, byteOffset: number, bytes: number): Storage;
  /** Allocates (from the pool) storage for `n` elements of dtype `d`. */
  alloc(d: DType, n: number): Storage;
  /** Allocates storage holding a copy of `data`. */
  upload(d: DType, data: AnyDataArray): Storage;
  /** Runs the steps in order (one submission on GPUs); resolves when they are queued (or done, on the CPU). */
  run(steps: readonly (Step | RawStep)[]): Promise<void>;
  /** Reads `n` elements of dtype `d` back to the host. */
  read(s: Storage, d: DType, n: number): Promise<AnyDataArray>;
  /** Live buffers and pool statistics, for leak tests and benchmarks. */
  stats(): BackendStats;
  /**
   * Optional: prepares `steps` for repeated runs (pipelines, bindings and parameter values resolved once, so a
   * run costs no per-step work beyond launching). Without it, a prepared run is a plain {@link run}.
   */
  prepare?(steps: readonly (Step | RawStep)[]): PreparedSteps;
  /** Optional: overwrites storage `s` with `data` as dtype `d`, after all work queued so far. */
  write?(s: Storage, d: DType, data: AnyDataArray): Promise<void>;
  /** Optional: copies each `[src, dst]` pair (equal sizes), after all work queued so far. */
  copy?(pairs: readonly (readonly [Storage, Storage])[]): Promise<void>;
  /** Optional: reads several storages back at once (one wait for the device instead of one per storage). */
  readMany?(parts: readonly ReadSpec[]): Promise<AnyDataArray[]>;
}

/** Memory statistics of a backend. */
export interface BackendStats {
  /** Buffers currently owned by live storage. */
  readonly liveBuffers: number;
  /** Bytes in live buffers. */
  readonly liveBytes: number;
  /** Buffers parked in the pool for reuse. */
  readonly pooledBuffers: number;
  /** Compiled pipelines (or host functions) in the cache. */
  readonly cachedKernels: number;
  /**
   * Bytes of device memory the backend holds in buffers: storage buffers, live or pooled (a GPU backend never frees
   * a pooled one), and on WebGPU the staging buffers of readbacks (those beyond 16 MiB are freed after their read).
   * The small uniform buffers of kernel parameters are not counted. Absent where the backend does not track it.
   */
  readonly deviceBytes?: number;
}

/** Rounds a byte count up to its pool size class: 4 classes per power of two, at least 256 bytes. */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const p = 2 ** Math.floor(Math.log2(bytes));
  for (const f of [1, 1.25, 1.5, 1.75, 2]) {
    const c = Math.ceil((p * f) / 256) * 256;
    if (c >= bytes) return c;
  }
  return 2 * p;
}

/** A size-class pool of device buffers of type `B`. */
export class BufferPool<B> {
  #free = new Map<number, B[]>();
  #pooled = 0;

  /** A pooled buffer of exactly `cls` bytes, or undefined. */
  take(cls: number): B | undefined {
    const list = this.#free.get(cls);
    const b = list?.pop();
    if (b !== undefined) this.#pooled--;
    return b;
  }

  /** Parks a buffer of `cls` bytes for reuse. */
  give(cls: number, b: B): void {
    const list = this.#free.get(cls) ?? [];
    list.push(b);
    this.#free.set(cls, list);
    this.#pooled++;
  }

  /** Number of parked buffers. */
  get size(): number {
    return this.#pooled;
  }

  /** Removes and returns every parked buffer. */
  drain(): B[] {
    const all = [...this.#free.values()].flat();
    this.#free.clear();
    this.#pooled = 0;
    return all;
  }
}
