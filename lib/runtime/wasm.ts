/**
 * The wasm backend: the CPU device that compiles each kernel to a WebAssembly module (128-bit SIMD, relaxed-SIMD
 * fused multiply-add where the runtime has it), caches it by its bytes, and runs it over one shared linear memory
 * that holds every tensor of the device (a size-class pool of byte ranges). Kernels whose work is large enough are
 * split over a pool of worker threads (see `wasm_pool.ts`); small ones run on the calling thread. Hand-written
 * kernels (`RawStep`) run their wasm form where they have one (the fused attention, `wasm_attention.ts`), else their
 * host function over views of the memory.
 *
 * Work is queued: runs, uploads, writes, copies and reads happen in the order they were issued, so a buffer released
 * by one realization and reused by the next is never written before the earlier run is done with it. A run calls
 * its kernels one after another without yielding to the event loop; {@link WasmBackend.prepare} resolves kernels,
 * addresses and parameter values once for steps that are replayed (the compiled training step).
 *
 * @module
 */
import type { AnyDataArray, DType } from "../dtype.ts";
import { type Kernel, matmulDepth } from "../codegen/kexpr.ts";
import type { Storage } from "../ir/node.ts";
import type { CustomWasmKernel } from "../ir/ops.ts";
import { renderWasm, type WasmKernel } from "../codegen/render_wasm.ts";
import { hostParams } from "../codegen/render_js.ts";
import { elemBytes, WASM_MAX_PAGES } from "../codegen/wasm_emit.ts";
import { FnBuilder, ModuleBuilder } from "../codegen/wasm_encode.ts";
import {
  type Backend,
  type BackendStats,
  BufferPool,
  type PreparedSteps,
  type RawStep,
  sizeClass,
  type Step,
} from "./backend.ts";
import { type KernelFn, PoolFailure, ThreadPool } from "./wasm_pool.ts";
import { debugLevel } from "./debug.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";

const PAGE = 65536;
/** Bytes below this address are never handed out (a zero pointer is always a bug). */
const RESERVED = 1024;
/**
 * Work below this many estimated nanoseconds runs on the calling thread. With workers that sleep between jobs a
 * split waited for a worker's wake-up (tens of µs, more on a loaded host) and paid from 0.05-0.1 ms of work on; the
 * pool's threads now poll briefly between jobs (see `wasm_pool.ts`), and measured on a shared 2-core host the
 * stories260K LoRA step was fastest splitting kernels estimated above 15-30 µs (flat in between).
 */
const PARALLEL_MIN_NS = 30_000;
/** Chunks of a parallel job get at least this much estimated work. */
const CHUNK_MIN_NS = 15_000;

/** Whether this runtime validates a module using `f32x4.relaxed_madd` (detected once, at start). */
export const HAS_RELAXED_SIMD: boolean = (() => {
  const mb = new ModuleBuilder();
  const f = new FnBuilder(["v128", "v128", "v128"], ["v128"]);
  f.get(0, 1, 2).op("f32x4.relaxed_madd");
  mb.exportFunction("f", mb.addFunction(f));
  try {
    return WebAssembly.validate(mb.encode());
  } catch {
    return false;
  }
})();

class WasmStorage implements Storage {
  readonly device = "wasm" as const;
  readonly bytes: number;
  /** Byte address in the device memory. */
  readonly offset: number;
  /** Pool size class. */
  readonly cls: number;
  /** Element type. */
  readonly dtype: DType;
  #released = false;
  readonly #owner: WasmBackend;
  constructor(owner: WasmBackend, offset: number, cls: number, bytes: number, dtype: DType) {
    this.#owner = owner;
    this.offset = offset;
    this.cls = cls;
    this.bytes = bytes;
    this.dtype = dtype;
  }
  get released(): boolean {
    return this.#released;
  }
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#owner.recycle(this);
  }
}

/** A compiled kernel. */
interface Compiled {
  readonly id: number;
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly module: WebAssembly.Module;
  readonly fn: KernelFn;
  readonly items: number;
  readonly itemCost: number;
  readonly scratchBytes: number;
  readonly usesMath: boolean;
  /** The product's dimensions, for a matmul kernel (DEBUG output). */
  readonly matmul:
    | { readonly batch: number; readonly m: number; readonly n: number; readonly k: number }
    | null;
}

/** A step resolved for running: its kernel (or host function) and arguments. */
interface Launch {
  readonly name: string;
  /** The compiled kernel; null for a hand-written kernel without a wasm form (its host function runs). */
  readonly c: Compiled | null;
  /** The hand-written step, when `c` is null. */
  readonly raw: RawStep | null;
  /** Kernel arguments after `(start, end, scratch)`: output, inputs, and a generic kernel's parameter address. */
  readonly args: readonly number[];
  /** `[0, items, scratch, ...args]`: the call on the calling thread alone (scratch set per run). */
  readonly call: number[];
}

/**
 * How long (ms) the calling thread blocks for the workers of a split kernel before it yields to the event loop
 * and waits there (where a worker that died is noticed).
 */
const POOL_WAIT_MS = 50;

/** Most threads of one backend. */
const MAX_THREADS = 256;

/** FNV-1a over the module bytes (a cache key; hits are confirmed byte by byte). */
function hashBytes(b: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return `${b.length}:${(h >>> 0).toString(16)}`;
}

const WASM_BACKEND_OPTIONS = z.object({ threads: z.int().min(1).max(MAX_THREADS).optional() }).strict();

/** Options of {@link createWasmBackend}. */
export interface WasmBackendOptions {
  /** Threads that run one kernel, the calling thread included (default `navigator.hardwareConcurrency`). */
  threads?: number;
}

/** The WebAssembly CPU backend. Create it with {@link createWasmBackend} (or `getBackend("wasm")`). */
export class WasmBackend implements Backend {
  readonly name = "wasm" as const;
  readonly maxInputs = 256;
  readonly maxBufferBytes = 2 ** 31;
  /** No per-invocation loop cap: reductions are split only to spread them over threads. */
  readonly loopBudget: number = Infinity;
  /**
   * Whether row reductions are fused into the kernels that broadcast them, one row per work item (see
   * `schedule.ts`). Off: side by side with it off, the training steps of `bench/train_step_bench.ts` were no
   * faster with it beyond the noise of a shared 2-core host, and a statistic read by several kernels is recomputed by
   * each. Tests and benchmarks switch it on to compare both schedules.
   */
  rowKernels = false;
  /** Whether the matmul micro-kernel uses relaxed-SIMD fused multiply-add. */
  readonly relaxedSimd: boolean = HAS_RELAXED_SIMD;
  readonly #memory: WebAssembly.Memory;
  #pool: ThreadPool | null = null;
  #threads = 1;
  #poolError: string | null = null;
  #buffers = new BufferPool<number>();
  #top = RESERVED;
  #live = 0;
  #liveBytes = 0;
  #compiled = new WeakMap<Kernel, Compiled>();
  #compiledRaw = new WeakMap<CustomWasmKernel, Compiled>();
  #byBytes = new Map<string, Compiled>();
  #nextId = 1;
  #scratch: { offset: number; cls: number; stride: number; threads: number } | null = null;
  /** Where launch parameter values are written before each kernel (grown on demand, like the scratch). */
  #params: { offset: number; cls: number } | null = null;
  /** Outgrown scratch ranges, returned to the pool when the run that replaced them ends. */
  #retired: { offset: number; cls: number }[] = [];
  #queue: Promise<void> = Promise.resolve();
  #pending = 0;

  /** Use {@link createWasmBackend}. */
  constructor(opts: WasmBackendOptions = {}) {
    checkOptions("createWasmBackend", WASM_BACKEND_OPTIONS, opts);
    this.#memory = new WebAssembly.Memory({ initial: 64, maximum: WASM_MAX_PAGES, shared: true });
    this.setThreads(opts.threads ?? defaultThreads());
  }

  /** `WebAssembly SIMD128 + relaxed FMA, 2 threads`: printed by experiments and benchmarks. */
  get description(): string {
    const simd = this.relaxedSimd ? "SIMD128 + relaxed FMA" : "SIMD128";
    const threads = this.#threads === 1 ? "1 thread" : `${this.#threads} threads`;
    return `WebAssembly ${simd}, ${threads}${this.#poolError !== null ? ` (${this.#poolError})` : ""}`;
  }

  /** Threads that run one kernel (the calling thread included). */
  get threads(): number {
    return this.#threads;
  }

  /**
   * Sets the number of threads (the calling thread included; 1 runs everything on the calling thread). Worker
   * threads that cannot be started leave the backend single-threaded and say why in {@link description}.
   */
  setThreads(n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
      throw new RangeError(`wasm backend: threads must be an integer in [1, ${MAX_THREADS}], got ${n}`);
    }
    this.#pool?.close();
    this.#pool = null;
    this.#threads = 1;
    this.#poolError = null;
    if (n === 1) return;
    try {
      this.#pool = new ThreadPool(this.#memory, n);
      this.#threads = n;
    } catch (e) {
      this.#poolError = `worker threads unavailable: ${(e as Error).message}`;
    }
  }

  /** Ends the worker threads (the backend keeps working on the calling thread). */
  close(): void {
    this.setThreads(1);
  }

  /** Byte range of `cls` bytes from the pool, or from the top of the memory (growing it). */
  #reserve(cls: number): number {
    return this.#buffers.take(cls) ?? this.#fresh(cls);
  }

  /** Byte range of `cls` bytes above everything handed out so far (growing the memory). */
  #fresh(cls: number): number {
    const offset = this.#top;
    const end = offset + cls;
    const have = this.#memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / PAGE);
      const max = WASM_MAX_PAGES * PAGE;
      try {
        if (have + pages * PAGE > max) throw new RangeError("beyond the 4 GiB of a wasm32 memory");
        this.#memory.grow(Math.max(pages, Math.min(WASM_MAX_PAGES - have / PAGE, have / PAGE / 4)));
      } catch (e) {
        throw new RangeError(
          `wasm backend: cannot grow memory from ${have} to ${end} bytes (${(e as Error).message}); ` +
            `${this.#liveBytes} bytes are live in ${this.#live} buffers`,
        );
      }
    }
    this.#top = end;
    return offset;
  }

  alloc(d: DType, n: number): Storage {
    const bytes = Math.max(4, Math.ceil((n * elemBytes(d)) / 4) * 4);
    if (bytes > this.maxBufferBytes) {
      throw new RangeError(
        `Cannot allocate ${n} ${d} elements (${bytes} bytes): the wasm device's largest buffer is ` +
          `${this.maxBufferBytes} bytes; split the tensor`,
      );
    }
    const cls = sizeClass(bytes);
    const offset = this.#reserve(cls);
    this.#live++;
    this.#liveBytes += cls;
    return new WasmStorage(this, offset, cls, bytes, d);
  }

  /** Returns a released storage's range to the pool (called by the storage). */
  recycle(storage: Storage): void {
    const s = storage as WasmStorage;
    this.#live--;
    this.#liveBytes -= s.cls;
    this.#buffers.give(s.cls, s.offset);
  }

  /** A typed view of `n` elements of storage `s`. */
  #view(s: WasmStorage, n: number): Float32Array | Int32Array | Uint32Array | Uint16Array {
    const buf = this.#memory.buffer;
    switch (s.dtype) {
      case "f32":
        return new Float32Array(buf, s.offset, n);
      case "f16":
        return new Uint16Array(buf, s.offset, n);
      case "i32":
        return new Int32Array(buf, s.offset, n);
      default:
        return new Uint32Array(buf, s.offset, n);
    }
  }

  #write(s: WasmStorage, data: AnyDataArray): void {
    const view = this.#view(s, data.length);
    if (s.dtype === "f16") view.set(new Uint16Array(Float16Array.from(data).buffer));
    else view.set(data);
  }

  upload(d: DType, data: AnyDataArray): Storage {
    const s = this.alloc(d, data.length) as WasmStorage;
    // Behind queued runs, the range may still be an intermediate of an earlier realization: write in order.
    if (this.#pending === 0) this.#write(s, data);
    else this.#enqueue(() => this.#write(s, data));
    return s;
  }

  #enqueue<T>(task: () => T | Promise<T>): Promise<T> {
    this.#pending++;
    const p = this.#queue.then(task).finally(() => this.#pending--);
    this.#queue = p.then(() => {}, () => {});
    return p;
  }

  run(steps: readonly (Step | RawStep)[]): Promise<void> {
    if (steps.length === 0) return this.#queue;
    return this.#enqueue(() => this.#runNow(steps));
  }

  read(s: Storage, d: DType, n: number): Promise<AnyDataArray> {
    return this.#enqueue(() => {
      const view = this.#view(s as WasmStorage, n);
      switch (d) {
        case "f32":
          return (view as Float32Array).slice();
        case "f16":
          return Float32Array.from(new Float16Array(view.buffer, view.byteOffset, n));
        case "i32":
          return (view as Int32Array).slice();
        case "u32":
          return (view as Uint32Array).slice();
        case "bool":
          return Uint8Array.from(view as Uint32Array);
      }
    });
  }

  /** Waits until every queued run, upload and read is done (benchmarks). */
  sync(): Promise<void> {
    return this.#queue;
  }

  #compile(kernel: Kernel): Compiled {
    let c = this.#compiled.get(kernel);
    if (c !== undefined) return c;
    const mm = kernel.matmul;
    c = {
      ...this.#instantiate(kernel.name, renderWasm(kernel, { relaxedSimd: this.relaxedSimd })),
      matmul: mm === null ? null : { batch: mm.batch, m: mm.m, n: mm.n, k: matmulDepth(mm) },
    };
    this.#compiled.set(kernel, c);
    return c;
  }

  /** Instantiates a rendered module, or reuses the instance of an earlier one with the same bytes. */
  #instantiate(name: string, r: WasmKernel): Compiled {
    let c: Compiled;
    const key = hashBytes(r.bytes);
    const hit = this.#byBytes.get(key);
    if (
      hit !== undefined && hit.bytes.length === r.bytes.length && hit.bytes.every((b, i) => b === r.bytes[i])
    ) {
      // The same code; the item count and costs are this kernel's (a module does not fix its output size).
      c = { ...hit, name, items: r.items, itemCost: r.itemCost, scratchBytes: r.scratchBytes };
    } else {
      if (debugLevel() >= 4) console.error(`// wasm kernel ${name}: ${r.bytes.length} bytes`);
      let module: WebAssembly.Module;
      try {
        module = new WebAssembly.Module(r.bytes);
      } catch (e) {
        throw new Error(`wasm backend: kernel ${name} did not compile: ${(e as Error).message}`);
      }
      const imports = r.usesMath
        ? { env: { mem: this.#memory }, math: { sin: Math.sin, cos: Math.cos } }
        : { env: { mem: this.#memory } };
      const fn = new WebAssembly.Instance(module, imports as WebAssembly.Imports).exports.run as KernelFn;
      c = { ...r, id: this.#nextId++, name, module, fn, matmul: null };
      if (this.#byBytes.size > 8192) this.#byBytes.clear();
      this.#byBytes.set(key, c);
    }
    return c;
  }

  /** The compiled wasm form `r` of the hand-written kernel `name`. */
  #compileRaw(name: string, r: CustomWasmKernel): Compiled {
    let c = this.#compiledRaw.get(r);
    if (c === undefined) {
      c = this.#instantiate(name, r);
      this.#compiledRaw.set(r, c);
    }
    return c;
  }

  /**
   * Scratch for every thread, at least `bytes` each; returns the base address and per-thread stride. It is taken
   * while a run executes, when the pool may hold ranges that later steps of the run still read (intermediates are
   * released when the run is planned), so it always comes from the top of the memory.
   */
  #scratchFor(bytes: number): { offset: number; stride: number } {
    if (this.#scratch === null || this.#scratch.stride < bytes || this.#scratch.threads < this.#threads) {
      const stride = Math.ceil(bytes / 4096) * 4096;
      const cls = sizeClass(stride * this.#threads);
      if (this.#scratch !== null) this.#retired.push(this.#scratch);
      this.#scratch = { offset: this.#fresh(cls), cls, stride, threads: this.#threads };
    }
    return this.#scratch;
  }

  /** Parameter words of the steps' generic kernels, in step order. */
  #paramWords(steps: readonly (Step | RawStep)[]): number {
    let words = 0;
    for (const s of steps) if (!("wgsl" in s)) words += s.kernel.params?.length ?? 0;
    return words;
  }

  /**
   * Resolves steps to launches: kernels compiled, arguments as addresses; the parameter words of the generic kernels
   * are assigned in step order from byte address `params` on (see {@link #writeParams}).
   */
  #resolve(steps: readonly (Step | RawStep)[], params: number): Launch[] {
    const launches: Launch[] = [];
    let at = params;
    for (const s of steps) {
      if ("wgsl" in s) {
        const offsets = s.buffers.map((b) => (b as WasmStorage).offset);
        if (s.wasm === undefined) {
          launches.push({ name: s.name, c: null, raw: s, call: [], args: offsets });
          continue;
        }
        const r = s.wasm({ relaxedSimd: this.relaxedSimd, threads: this.#threads });
        const c = this.#compileRaw(s.name, r);
        if (c.items > 0) launches.push(this.#launchOf(c, [...offsets, ...(r.args ?? [])]));
        continue;
      }
      const c = this.#compile(s.kernel);
      const slots = s.kernel.params?.length ?? 0;
      const args = [(s.output as WasmStorage).offset, ...s.inputs.map((i) => (i as WasmStorage).offset), 0];
      if (slots > 0) {
        args[args.length - 1] = at;
        at += 4 * slots;
      }
      if (c.items > 0) launches.push(this.#launchOf(c, args));
    }
    return launches;
  }

  /**
   * Writes the parameter values of the steps' generic kernels to consecutive words from byte address `params` on,
   * as {@link #resolve} assigned them: one 4-byte word per slot, an f32 for float slots and an i32 otherwise,
   * rounded as the kernel's dtypes say.
   */
  #writeParams(steps: readonly (Step | RawStep)[], params: number): void {
    const f32 = new Float32Array(this.#memory.buffer);
    const i32 = new Int32Array(this.#memory.buffer);
    let word = params / 4;
    for (const s of steps) {
      if ("wgsl" in s) continue;
      const slots = s.kernel.params ?? [];
      if (slots.length === 0) continue;
      hostParams(s.kernel, s.params).forEach((v, i) => {
        const d = slots[i];
        if (d === "f32" || d === "f16") f32[word + i] = v;
        else i32[word + i] = v | 0;
      });
      word += slots.length;
    }
  }

  /** A launch of `c` with `args`. */
  #launchOf(c: Compiled, args: number[]): Launch {
    return { name: c.name, c, raw: null, call: [0, c.items, 0, ...args], args };
  }

  /** Items per chunk when `c` is split over the pool, or 0 when its estimated work is too small to split. */
  #chunkOf(c: Compiled): number {
    const threads = this.#threads;
    if (threads === 1 || c.items < 2 || c.items * c.itemCost < PARALLEL_MIN_NS) return 0;
    const chunk = Math.max(Math.ceil(CHUNK_MIN_NS / c.itemCost), Math.ceil(c.items / (threads * 4)));
    return chunk < c.items ? chunk : 0;
  }

  /** A parameter area of at least `bytes` for one run (kernels of a run share it: each has its own words). */
  #paramArea(bytes: number): number {
    if (bytes === 0) return 0;
    if (this.#params === null || this.#params.cls < bytes) {
      if (this.#params !== null) this.#retired.push(this.#params);
      const cls = sizeClass(Math.max(bytes, 256));
      this.#params = { offset: this.#fresh(cls), cls };
    }
    return this.#params.offset;
  }

  async #runNow(steps: readonly (Step | RawStep)[]): Promise<void> {
    try {
      const params = this.#paramArea(4 * this.#paramWords(steps));
      const launches = this.#resolve(steps, params);
      this.#writeParams(steps, params);
      await this.#exec(launches);
    } finally {
      this.#releaseRetired();
    }
  }

  #releaseRetired(): void {
    for (const r of this.#retired.splice(0)) this.#buffers.give(r.cls, r.offset);
  }

  /**
   * Runs launches in order: on the calling thread one after another, without yielding to the event loop, except
   * where a split kernel's workers are still busy after a short blocking wait.
   */
  async #exec(launches: readonly Launch[]): Promise<void> {
    const timing = debugLevel() >= 1;
    let scratchBytes = 0;
    for (const l of launches) {
      if (l.c !== null && l.c.scratchBytes > scratchBytes) scratchBytes = l.c.scratchBytes;
    }
    const scratch = scratchBytes > 0 ? this.#scratchFor(scratchBytes) : { offset: 0, stride: 0 };
    for (const l of launches) {
      const t0 = timing ? performance.now() : 0;
      let threads = 1;
      if (l.c === null) {
        const raw = l.raw!;
        raw.host(raw.buffers.map((b) => {
          const w = b as WasmStorage;
          return this.#view(w, w.bytes / elemBytes(w.dtype)) as Float32Array | Int32Array | Uint32Array;
        }));
      } else {
        try {
          const chunk = this.#pool === null ? 0 : this.#chunkOf(l.c);
          threads = chunk > 0
            ? await this.#split(l, chunk, scratch.offset, scratch.stride)
            : this.#single(l, scratch.offset);
        } catch (e) {
          throw new Error(
            `wasm kernel ${l.name} (${l.c.items} items; output @${l.args[0]}; inputs @${
              l.args.slice(1).join(", @")
            }): ${(e as Error).message}`,
          );
        }
      }
      if (timing) {
        const what = l.c === null ? "(host)" : `${l.c.items} items x${threads}${this.#shape(l)}`;
        console.error(`wasm ${l.name} ${what} ${(performance.now() - t0).toFixed(3)} ms`);
      }
    }
  }

  /** Runs a launch on the calling thread; returns 1. */
  #single(l: Launch, scratch: number): number {
    l.call[2] = scratch;
    l.c!.fn.apply(null, l.call as Parameters<KernelFn>);
    return 1;
  }

  /** Runs a launch over the pool; returns the threads used (1 when the pool failed and the kernel ran here). */
  async #split(l: Launch, chunk: number, scratch: number, stride: number): Promise<number> {
    const pool = this.#pool!;
    const c = l.c!;
    try {
      pool.share(c.id, c.module, c.usesMath);
      const job = { kernel: c.id, fn: c.fn, items: c.items, chunk, scratch, stride, args: l.args };
      if (!pool.runSync(job, POOL_WAIT_MS)) await pool.finish();
      return pool.threads;
    } catch (e) {
      if (!(e instanceof PoolFailure)) throw e;
      // A worker stopped: go on with the calling thread alone, and run this kernel again there.
      this.setThreads(1);
      this.#poolError = e.message;
      return this.#single(l, scratch);
    }
  }

  /** ` matmul BxMxNxK` for a matmul launch (DEBUG output). */
  #shape(l: Launch): string {
    const mm = l.c!.matmul;
    return mm === null ? "" : ` matmul ${mm.batch}x${mm.m}x${mm.n}x${mm.k}`;
  }

  /**
   * Prepares steps for repeated runs: kernels compiled, arguments resolved and parameter values written once (in
   * an area of their own), so a run only calls the kernels, one after another.
   */
  prepare(steps: readonly (Step | RawStep)[]): PreparedSteps {
    const words = this.#paramWords(steps);
    const area = words > 0 ? this.alloc("u32", words) as WasmStorage : null;
    const launches = this.#resolve(steps, area?.offset ?? 0);
    // The area may still be read by queued work that released it: write the values in queue order.
    if (area !== null) this.#enqueue(() => this.#writeParams(steps, area.offset));
    let disposed = false;
    return {
      run: (copies = []) => {
        if (disposed) throw new Error("wasm backend: prepared steps used after dispose()");
        for (const [src, dst] of copies) checkCopy(src, dst);
        return this.#enqueue(async () => {
          try {
            await this.#exec(launches);
          } finally {
            this.#releaseRetired();
          }
          this.#copyNow(copies);
        });
      },
      dispose: () => {
        if (disposed) return;
        disposed = true;
        area?.release();
      },
    };
  }

  /** Overwrites storage `s` with `data` (dtype `d`), after all work queued so far. */
  write(s: Storage, d: DType, data: AnyDataArray): Promise<void> {
    const w = s as WasmStorage;
    if (d !== w.dtype || data.length * elemBytes(d) > w.bytes) {
      throw new RangeError(
        `wasm backend: cannot write ${data.length} ${d} values into a storage of ${w.bytes} bytes of ${w.dtype}`,
      );
    }
    return this.#enqueue(() => this.#write(w, data));
  }

  /** Copies each `[src, dst]` pair (equal sizes), after all work queued so far. */
  copy(pairs: readonly (readonly [Storage, Storage])[]): Promise<void> {
    for (const [src, dst] of pairs) checkCopy(src, dst);
    return this.#enqueue(() => this.#copyNow(pairs));
  }

  #copyNow(pairs: readonly (readonly [Storage, Storage])[]): void {
    if (pairs.length === 0) return;
    const bytes = new Uint8Array(this.#memory.buffer);
    for (const [src, dst] of pairs) {
      const a = src as WasmStorage;
      bytes.copyWithin((dst as WasmStorage).offset, a.offset, a.offset + a.bytes);
    }
  }

  stats(): BackendStats {
    return {
      liveBuffers: this.#live,
      liveBytes: this.#liveBytes,
      pooledBuffers: this.#buffers.size,
      cachedKernels: this.#byBytes.size,
    };
  }
}

/** Checks that a copy joins two storages of the wasm device of equal sizes. */
function checkCopy(src: Storage, dst: Storage): void {
  if (!(src instanceof WasmStorage) || !(dst instanceof WasmStorage)) {
    throw new TypeError(`wasm backend: copy between storages of devices ${src.device} and ${dst.device}`);
  }
  if (src.bytes !== dst.bytes) throw new RangeError(`copy: ${src.bytes} bytes into ${dst.bytes} bytes`);
}

/** Threads of a new backend: `TESSERA_THREADS` when set and readable, else the machine's hardware threads. */
function defaultThreads(): number {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: "TESSERA_THREADS" }).state === "granted") {
      const v = Deno.env.get("TESSERA_THREADS");
      if (v !== undefined && v !== "") {
        // Decimal digits only: Number() also read "0x4" as 4, "1e1" as 10 and " 2 " as 2.
        const n = /^[0-9]+$/.test(v) ? Number(v) : NaN;
        if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
          throw new RangeError(
            `TESSERA_THREADS must be a decimal integer in [1, ${MAX_THREADS}], got ${JSON.stringify(v)}`,
          );
        }
        const cores = navigator.hardwareConcurrency;
        if (cores !== undefined && n > cores) {
          console.warn(
            `TESSERA_THREADS=${n} is more than this machine's ${cores} hardware threads: the wasm device's ` +
              `threads take turns on them (the results are the same, the device slower; ${cores} or fewer runs best)`,
          );
        }
        return n;
      }
    }
  } catch (e) {
    if (e instanceof RangeError) throw e;
  }
  return Math.max(1, Math.min(navigator.hardwareConcurrency ?? 1, 64));
}

/**
 * Creates a wasm backend (the device `"wasm"` uses one shared instance from `getBackend("wasm")`). An unknown option
 * or a thread count outside 1 .. 256 is an `OptionsError` naming it.
 */
export function createWasmBackend(opts: WasmBackendOptions = {}): WasmBackend {
  return new WasmBackend(opts);
}
