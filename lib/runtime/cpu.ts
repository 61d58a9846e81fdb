/**
 * The CPU backend: runs the same kernels as WebGPU through host functions rendered from the kernel IR, computing
 * in float64 and rounding to the dtype on store. It is the user-selectable `device: "cpu"` and a test oracle.
 *
 * @module
 */
import { allocData, type AnyDataArray, type DType, DTYPE_INFO, toI32, toU32 } from "../dtype.ts";
import type { Storage } from "../ir/node.ts";
import { randUniform } from "../ir/rng.ts";
import { powRef } from "../ir/reference.ts";
import { hostParams, type JsRuntime, renderJS } from "../codegen/render_js.ts";
import { LruCache } from "../codegen/lru.ts";
import type { Kernel } from "../codegen/kexpr.ts";
import type { Backend, BackendStats, PreparedSteps, RawStep, Step } from "./backend.ts";
import { debugLevel } from "./debug.ts";

type HostArray = Float32Array | Float16Array | Int32Array | Uint32Array;

function hostArray(d: DType, n: number): HostArray {
  switch (d) {
    case "f32":
      return new Float32Array(n);
    case "f16":
      return new Float16Array(n);
    case "i32":
      return new Int32Array(n);
    default:
      return new Uint32Array(n);
  }
}

class CpuStorage implements Storage {
  readonly device = "cpu" as const;
  readonly bytes: number;
  #released = false;
  readonly data: HostArray;
  readonly #owner: CpuBackend;
  constructor(owner: CpuBackend, data: HostArray) {
    this.#owner = owner;
    this.data = data;
    this.bytes = data.byteLength;
    owner.live++;
    owner.liveBytes += this.bytes;
  }
  get released(): boolean {
    return this.#released;
  }
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#owner.live--;
    this.#owner.liveBytes -= this.bytes;
  }
}

const RT: JsRuntime = {
  rand: randUniform,
  toI32,
  toU32,
  idiv: (a, b, signed) => {
    if (b === 0) return a;
    const q = Math.trunc(a / b);
    return signed ? q | 0 : q >>> 0;
  },
  pow: powRef,
};

type HostKernel = (ins: HostArray[], out: HostArray, rt: JsRuntime, prm: number[]) => void;

/** Most host functions the CPU backend keeps compiled. */
const HOST_KERNEL_CACHE = 1024;

/** The float64 host backend. */
export class CpuBackend implements Backend {
  readonly name = "cpu" as const;
  readonly description = "cpu (float64 reference interpreter of the kernel IR)";
  readonly maxInputs = 1024;
  readonly maxBufferBytes = 2 ** 31;
  /** Live storage count (for stats). */
  live = 0;
  /** Bytes held by live storage (for stats). */
  liveBytes = 0;
  #cache = new LruCache<string, HostKernel>(HOST_KERNEL_CACHE);
  #sources = new WeakMap<Kernel, string>();

  alloc(d: DType, n: number): Storage {
    return new CpuStorage(this, hostArray(d, this.#checkSize(d, n)));
  }

  /** `n`, unless `n` elements of `d` exceed {@link maxBufferBytes}: then an error naming both. */
  #checkSize(d: DType, n: number): number {
    const bytes = n * DTYPE_INFO[d].bytes;
    if (bytes > this.maxBufferBytes) {
      throw new RangeError(
        `Cannot allocate ${n} ${d} elements (${bytes} bytes): the cpu device's largest buffer is ` +
          `${this.maxBufferBytes} bytes; split the tensor`,
      );
    }
    return n;
  }

  upload(d: DType, data: AnyDataArray): Storage {
    const arr = hostArray(d, this.#checkSize(d, data.length));
    arr.set(data);
    return new CpuStorage(this, arr);
  }

  run(steps: readonly (Step | RawStep)[]): Promise<void> {
    for (const s of steps) {
      if ("wgsl" in s) {
        s.host(s.buffers.map((b) => (b as CpuStorage).data as Float32Array | Int32Array | Uint32Array));
        continue;
      }
      let src = this.#sources.get(s.kernel);
      if (src === undefined) {
        src = renderJS(s.kernel);
        this.#sources.set(s.kernel, src);
      }
      let fn = this.#cache.get(src);
      if (fn === undefined) {
        if (debugLevel() >= 4) console.error(`// ${s.kernel.name}\n${src}`);
        fn = new Function("ins", "out", "rt", "prm", src) as HostKernel;
        this.#cache.set(src, fn);
      }
      const t0 = performance.now();
      const prm = hostParams(s.kernel, s.params);
      fn(s.inputs.map((i) => (i as CpuStorage).data), (s.output as CpuStorage).data, RT, prm);
      if (debugLevel() >= 1) console.error(`cpu ${s.kernel.name} ${(performance.now() - t0).toFixed(3)} ms`);
    }
    return Promise.resolve();
  }

  /** Prepared steps are the same steps run again (host functions are compiled on first use anyway). */
  prepare(steps: readonly (Step | RawStep)[]): PreparedSteps {
    return {
      run: async (copies = []) => {
        await this.run(steps);
        await this.copy(copies);
      },
      dispose: () => {},
    };
  }

  /** Overwrites `s` with `data`. */
  write(s: Storage, _d: DType, data: AnyDataArray): Promise<void> {
    const dst = (s as CpuStorage).data;
    if (data.length > dst.length) throw new RangeError(`write: ${data.length} elements into ${dst.length}`);
    dst.set(data as ArrayLike<number>);
    return Promise.resolve();
  }

  /** Copies each `[src, dst]` pair. */
  copy(pairs: readonly (readonly [Storage, Storage])[]): Promise<void> {
    for (const [src, dst] of pairs) {
      const a = (src as CpuStorage).data;
      const b = (dst as CpuStorage).data;
      if (a.length !== b.length) throw new RangeError(`copy: ${a.length} elements into ${b.length}`);
      b.set(a as ArrayLike<number> & Float32Array);
    }
    return Promise.resolve();
  }

  read(s: Storage, d: DType, n: number): Promise<AnyDataArray> {
    const out = allocData(d, n);
    const src = (s as CpuStorage).data;
    for (let i = 0; i < n; i++) out[i] = src[i];
    return Promise.resolve(out);
  }

  stats(): BackendStats {
    return {
      liveBuffers: this.live,
      liveBytes: this.liveBytes,
      pooledBuffers: 0,
      cachedKernels: this.#cache.size,
    };
  }
}
