/**
 * The WebGPU backend: compiles rendered WGSL into pipelines cached by source, pools buffers by size class,
 * records every kernel of a realization into one command buffer and submits it once, and reads back only when
 * asked. Every WebGPU error is turned into a thrown error that names the kernel.
 *
 * Kernels are specialised to shapes and each pipeline stays for the life of the process (Deno frees none), so every
 * distinct shape a script runs adds its kernels for good: evaluate at a few padded sizes, not at every length
 * (`stats().cachedKernels` counts the pipelines).
 *
 * @module
 */
import { type AnyDataArray, type DType, DTYPE_INFO } from "../dtype.ts";
import type { Storage } from "../ir/node.ts";
import { MAX_GROUPS_PER_DIM, paramVec4s, type RenderedKernel, renderWGSL } from "../codegen/render_wgsl.ts";
import type { Kernel } from "../codegen/kexpr.ts";
import { LruCache } from "../codegen/lru.ts";
import { type MatmulPolicy, matmulPolicyFor } from "../codegen/matmul_policy.ts";
import {
  type Backend,
  type BackendStats,
  BufferPool,
  type PreparedSteps,
  type RawStep,
  type ReadSpec,
  sizeClass,
  type Step,
} from "./backend.ts";
import { debugLevel } from "./debug.ts";
import { chosenBackendNote, requestGpuAdapter } from "./gpu_adapter.ts";
import { launchGroups } from "./launch_groups.ts";
import { canMerge, type MergedBranch, renderMerged, workgroupsOf } from "../codegen/render_merged.ts";
import { type LaunchPolicy, launchPolicyFor, namedLaunchPolicy } from "../codegen/launch_policy.ts";

/** No WebGPU adapter could be found. */
export class NoAdapterError extends Error {
  /** Builds the message that tells the user what to install. */
  constructor(detail = "") {
    super(
      "No WebGPU adapter found" + (detail ? ` (${detail})` : "") +
        ". On a CPU-only Linux machine install Mesa's " +
        "Vulkan driver (lavapipe): `apt-get install -y mesa-vulkan-drivers`; choose a backend with " +
        'DENO_WEBGPU_BACKEND=vulkan|gl|metal|dx12, or run on the host with device "cpu".',
    );
    this.name = "NoAdapterError";
  }
}

/** Milliseconds a failed readback waits for the device's `lost` promise, to tell a lost device from other failures. */
const LOST_WAIT_MS = 200;

/** The error of work on a lost device; `why` is its reason and message. */
function lostMessage(why: string): string {
  return `device lost (${why}); its buffers are gone, so tensors on webgpu can no longer be computed or read`;
}

/** A WebGPU error raised while running a kernel. */
export class WebGPUError extends Error {
  /** `kernel` names the failing kernel. */
  constructor(kernel: string, message: string) {
    super(`WebGPU error in kernel ${kernel}: ${message}`);
    this.name = "WebGPUError";
  }
}

class GpuStorage implements Storage {
  readonly device = "webgpu" as const;
  readonly bytes: number;
  readonly buffer: GPUBuffer;
  readonly cls: number;
  #released = false;
  readonly #owner: WebGPUBackend;
  constructor(owner: WebGPUBackend, buffer: GPUBuffer, cls: number, bytes: number) {
    this.#owner = owner;
    this.buffer = buffer;
    this.cls = cls;
    this.bytes = bytes;
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

/**
 * A run of bytes of another storage, bound as a kernel input of its own ({@link WebGPUBackend.range}). It owns
 * nothing: releasing it leaves the storage it is part of alone.
 */
class GpuRange implements Storage {
  readonly device = "webgpu" as const;
  readonly buffer: GPUBuffer;
  /**
   * Bytes bound: `bytes` up to a whole vec4 where the buffer has them, as a kernel reading the range by vec4 may
   * load its last one whole (a bound range is all the shader can see; bounds checks would move such a load).
   */
  readonly bound: number;
  constructor(readonly of: GpuStorage, readonly offset: number, readonly bytes: number) {
    this.buffer = of.buffer;
    this.bound = Math.min(Math.ceil(bytes / 16) * 16, of.cls - offset);
  }
  get released(): boolean {
    return this.of.released;
  }
  release(): void {}
  /** Which part of the buffer it is, as a key (ranges of one buffer are bindings of their own). */
  get key(): string {
    return `${this.offset}+${this.bytes}`;
  }
}

/** How a bind group entry names storage `s`: the whole buffer, or a range's part of it. */
function bufferBinding(s: Storage): GPUBufferBinding {
  if (s instanceof GpuRange) return { buffer: s.buffer, offset: s.offset, size: s.bound };
  return { buffer: (s as GpuStorage).buffer };
}

/** Encodes host data in the storage layout of dtype `d`. */
function encode(d: DType, data: AnyDataArray): Uint8Array {
  let arr: ArrayBufferView;
  switch (d) {
    case "f32":
      arr = data instanceof Float32Array ? data : Float32Array.from(data);
      break;
    case "f16":
      arr = Float16Array.from(data);
      break;
    case "i32":
      arr = data instanceof Int32Array ? data : Int32Array.from(data);
      break;
    default:
      arr = data instanceof Uint32Array ? data : Uint32Array.from(data);
  }
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

/** Most kernels one launch of a prepared sequence runs (bounds the size of a merged shader). */
export const MAX_MERGED_STEPS = 24;

/**
 * Most bytes of readback staging buffers kept for reuse: one readback waits for the queue anyway (~11 ms), and
 * reads running at once (150 reads of 1 MiB held 150 MiB for good) are not worth keeping buffers for.
 */
const STAGING_POOL_BYTES = 16 * 2 ** 20;

/**
 * Writes a kernel's parameter values into `words` from word `at` on, as the shader reads them: 32-bit words,
 * f32 (and f16, widened) as float bits, i32 as two's complement, u32 as is, bool as 0/1.
 */
export function encodeParams(
  kernel: Kernel,
  values: readonly number[],
  words: Uint32Array,
  at: number,
): void {
  const dtypes = kernel.params ?? [];
  if (values.length !== dtypes.length) {
    throw new Error(
      `kernel ${kernel.name}: ${values.length} parameter value(s) for ${dtypes.length} slot(s)`,
    );
  }
  const f = new Float32Array(words.buffer, words.byteOffset, words.length);
  const i = new Int32Array(words.buffer, words.byteOffset, words.length);
  dtypes.forEach((d, k) => {
    const v = values[k];
    if (d === "f32") f[at + k] = v;
    else if (d === "f16") f[at + k] = Math.f16round(v);
    else if (d === "i32") i[at + k] = v;
    else if (d === "bool") words[at + k] = v ? 1 : 0;
    else words[at + k] = v >>> 0;
  });
}

/** Decodes storage bytes of dtype `d` into the host array type of `await t.data()`. */
function decode(d: DType, bytes: ArrayBuffer, n: number): AnyDataArray {
  switch (d) {
    case "f32":
      return new Float32Array(bytes, 0, n).slice();
    case "f16":
      return Float32Array.from(new Float16Array(bytes, 0, n));
    case "i32":
      return new Int32Array(bytes, 0, n).slice();
    case "u32":
      return new Uint32Array(bytes, 0, n).slice();
    case "bool":
      return Uint8Array.from(new Uint32Array(bytes, 0, n));
  }
}

/** Encodes one dispatch per launch into `pass` (setting each pipeline only where it changes). */
function encodeLaunches(
  pass: GPUComputePassEncoder,
  launches: readonly {
    pipeline: GPUComputePipeline;
    group: GPUBindGroup;
    dispatch: readonly [number, number, number];
  }[],
): void {
  let last: GPUComputePipeline | null = null;
  for (const b of launches) {
    if (b.pipeline !== last) pass.setPipeline(b.pipeline);
    last = b.pipeline;
    pass.setBindGroup(0, b.group);
    pass.dispatchWorkgroups(b.dispatch[0], b.dispatch[1], b.dispatch[2]);
  }
}

/** The WebGPU device backend. Create it with {@link createWebGPUBackend}. */
export class WebGPUBackend implements Backend {
  readonly name = "webgpu" as const;
  readonly description: string;
  readonly maxInputs: number;
  readonly maxBufferBytes: number;
  /** The adapter's info, for reports. */
  readonly adapterInfo: GPUAdapterInfo;
  /** True when the adapter is a software fallback. */
  readonly isFallback: boolean;
  /** Whether `shader-f16` is available. */
  readonly hasF16: boolean;
  /** How matmuls are blocked on this adapter (see `matmul_policy.ts`). */
  readonly matmulPolicy: MatmulPolicy;
  /**
   * Which kernels of a prepared sequence share launches on this adapter (see `launch_policy.ts`), or the policy
   * `TESSERA_LAUNCH_POLICY` names.
   */
  readonly launchPolicy: LaunchPolicy;
  /** Whether row reductions are fused into the kernels that broadcast them (the launch policy's choice). */
  readonly rowKernels: boolean;
  /** The device's `minStorageBufferOffsetAlignment` (16 at least): ranges of buffers bind from multiples of it. */
  readonly viewAlign: number;
  readonly #device: GPUDevice;
  #pool = new BufferPool<GPUBuffer>();
  #staging = new BufferPool<GPUBuffer>();
  /** Bytes of the staging buffers parked in {@link #staging} (at most {@link STAGING_POOL_BYTES}). */
  #stagingParked = 0;
  #uniforms = new BufferPool<GPUBuffer>();
  /**
   * Compiled pipelines by shader source, never dropped. Deno frees no dropped `GPUComputePipeline` (WebGPU has no
   * destroy() for them), so a bounded cache only made memory grow faster: on lavapipe 1,200 shaders run 4 times
   * over with a least-recently-used cache of 1,024 grew the resident memory 367 -> 432 -> 462 -> 481 MB (about
   * 30 KB per pipeline made again, never returned, and 0.41 ms per kernel to make it again from Mesa's shader
   * cache, 9 ms without it), while keeping all 1,200 stayed at 315-324 MB at 0.28 ms per kernel. Memory grows
   * with the number of distinct kernels, as it did with the bounded cache: on lavapipe 150 pipelines of 50 shapes
   * of a small matmul, ReLU and row sum grew the resident memory by 165-176 MB (1.1-1.2 MB a pipeline), and
   * stories260K's kernels cost about 2 MB each.
   */
  #pipelines = new Map<string, GPUComputePipeline>();
  /**
   * Cache keys of the pipelines (by source) and merged shaders made since they were last taken for a run: a run
   * that fails drops them from the caches. A shader that does not compile leaves an invalid pipeline, and its
   * later uses reported only "ComputePipeline with 'bad' label is invalid", under the name of the kernel that made
   * it, where a pipeline made anew reports the compiler's message under the kernel that runs it.
   */
  #made: { pipelines: string[]; merged: string[] } = { pipelines: [], merged: [] };
  #rendered = new WeakMap<Kernel, RenderedKernel>();
  #layouts = new Map<string, GPUBindGroupLayout>();
  #live = 0;
  #liveBytes = 0;
  #deviceBytes = 0;
  #lost: string | null = null;
  #uncaptured: string | null = null;

  /** Use {@link createWebGPUBackend}. */
  constructor(adapter: GPUAdapter, device: GPUDevice) {
    this.#device = device;
    this.adapterInfo = adapter.info;
    this.isFallback = adapter.info.isFallbackAdapter ?? false;
    this.hasF16 = device.features.has("shader-f16");
    const i = adapter.info;
    this.maxInputs = Math.min(device.limits.maxStorageBuffersPerShaderStage - 1, 30);
    // At least 16 bytes, so that a range read as vec4 starts at a vec4 of its buffer on every adapter.
    this.viewAlign = Math.max(16, device.limits.minStorageBufferOffsetAlignment);
    // The device has subgroups only when TESSERA_SUBGROUP_MATMUL=1 asked for them (createWebGPUBackend).
    const subgroups = device.features.has("subgroups" as GPUFeatureName);
    this.matmulPolicy = matmulPolicyFor({
      description: i.description ?? "",
      isFallback: this.isFallback,
      subgroups,
    });
    const requested = envValue("TESSERA_LAUNCH_POLICY");
    this.launchPolicy = requested === undefined || requested === ""
      ? launchPolicyFor({ description: i.description ?? "", isFallback: this.isFallback })
      : namedLaunchPolicy(requested);
    this.rowKernels = this.launchPolicy.rowKernels;
    // The settings made by environment variables change the kernels, so the description (which reports and
    // resumed experiments compare) names them; the adapter's own choices follow from its name.
    const chosen = [
      requested ? `TESSERA_LAUNCH_POLICY=${requested}` : "",
      subgroups ? "TESSERA_SUBGROUP_MATMUL=1" : "",
    ].filter(Boolean);
    this.description = [i.description || "unknown adapter", i.vendor && `vendor ${i.vendor}`, i.architecture]
      .filter(Boolean).join(", ") +
      (this.isFallback ? " (fallback adapter)" : "") +
      (chosen.length > 0 ? `, with ${chosen.join(" ")}` : "");
    this.maxBufferBytes = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    device.lost.then((info) => {
      this.#lost = `${info.reason}: ${info.message}`;
    });
    device.addEventListener("uncapturederror", (e) => {
      this.#uncaptured = (e as GPUUncapturedErrorEvent).error.message;
    });
  }

  /** The underlying device (benchmarks and hand-written kernels). */
  get device(): GPUDevice {
    return this.#device;
  }

  #check(kernel: string): void {
    if (this.#lost !== null) throw new WebGPUError(kernel, lostMessage(this.#lost));
    if (this.#uncaptured !== null) {
      const m = this.#uncaptured;
      this.#uncaptured = null;
      throw new WebGPUError(kernel, m);
    }
  }

  alloc(d: DType, n: number): Storage {
    const bytes = Math.max(4, Math.ceil((n * DTYPE_INFO[d].bytes) / 4) * 4);
    if (bytes > this.maxBufferBytes) {
      throw new RangeError(
        `Cannot allocate ${n} ${d} elements (${bytes} bytes): the adapter's largest storage buffer is ` +
          `${this.maxBufferBytes} bytes; split the tensor`,
      );
    }
    const cls = Math.min(sizeClass(bytes), this.maxBufferBytes);
    let buf = this.#pool.take(cls);
    if (buf === undefined) {
      this.#deviceBytes += cls;
      this.#device.pushErrorScope("out-of-memory");
      buf = this.#device.createBuffer({
        size: cls,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      this.#device.popErrorScope().then((e) => {
        if (e) this.#uncaptured = `out of memory allocating ${cls} bytes: ${e.message}`;
      });
    }
    this.#live++;
    this.#liveBytes += cls;
    return new GpuStorage(this, buf, cls, bytes);
  }

  range(s: Storage, byteOffset: number, bytes: number): Storage {
    const of = s as GpuStorage;
    if (byteOffset % this.viewAlign !== 0 || byteOffset + bytes > of.bytes) {
      throw new RangeError(
        `range of ${bytes} bytes at ${byteOffset} does not fit a ${of.bytes}-byte buffer aligned to ${this.viewAlign}`,
      );
    }
    return new GpuRange(of, byteOffset, bytes);
  }

  /** Returns a released storage's buffer to the pool (called by the storage). */
  recycle(storage: Storage): void {
    const s = storage as GpuStorage;
    this.#live--;
    this.#liveBytes -= s.cls;
    this.#pool.give(s.cls, s.buffer);
  }

  upload(d: DType, data: AnyDataArray): Storage {
    const s = this.alloc(d, data.length) as GpuStorage;
    const bytes = encode(d, data);
    if (bytes.byteLength === 0) return s; // writeBuffer with no data crashes some Deno versions
    if (bytes.byteLength % 4 === 0) {
      this.#device.queue.writeBuffer(s.buffer, 0, bytes as Uint8Array<ArrayBuffer>);
    } else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.#device.queue.writeBuffer(s.buffer, 0, padded);
    }
    return s;
  }

  /**
   * The bind-group layout of generated kernels with `inputs` inputs: binding 0 is the output, the rest read-only,
   * then the parameter uniform when `params`. Explicit (not "auto") so that a binding the shader happens not to
   * read is still valid.
   */
  #layout(inputs: number, params: boolean): GPUBindGroupLayout {
    return this.#layoutOf([true, ...new Array<boolean>(inputs).fill(false)], params);
  }

  /** The bind-group layout of storage bindings that are written (true) or only read, then the uniform if `params`. */
  #layoutOf(writes: readonly boolean[], params: boolean): GPUBindGroupLayout {
    const key = `${writes.map((w) => (w ? "w" : "r")).join("")}|${params}`;
    let l = this.#layouts.get(key);
    if (l === undefined) {
      const entries: GPUBindGroupLayoutEntry[] = writes.map((w, i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: w ? "storage" : "read-only-storage" },
      }));
      if (params) {
        entries.push({
          binding: writes.length,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: "uniform" },
        });
      }
      l = this.#device.createBindGroupLayout({ entries });
      this.#layouts.set(key, l);
    }
    return l;
  }

  /** The WGSL of a kernel (kernels from the lowering cache are rendered once). */
  #render(k: Kernel): RenderedKernel {
    let r = this.#rendered.get(k);
    if (r === undefined) {
      r = renderWGSL(k, { policy: this.matmulPolicy });
      this.#rendered.set(k, r);
    }
    return r;
  }

  /** A cached pipeline; `layout` null means "auto" (hand-written kernels). */
  #pipeline(source: string, name: string, layout: GPUBindGroupLayout | null): GPUComputePipeline {
    let p = this.#pipelines.get(source);
    if (p === undefined) {
      if (debugLevel() >= 4) console.error(`// kernel ${name}\n${source}`);
      const module = this.#device.createShaderModule({ code: source, label: name });
      const pl = layout === null ? "auto" : this.#device.createPipelineLayout({ bindGroupLayouts: [layout] });
      p = this.#device.createComputePipeline({
        layout: pl,
        compute: { module, entryPoint: "main" },
        label: name,
      });
      this.#pipelines.set(source, p);
      this.#made.pipelines.push(source);
    }
    return p;
  }

  /**
   * The pipeline, bind group and dispatch size of one step; its parameter block (if any) is at `offset` in
   * `params`.
   */
  #bind(
    s: Step | RawStep,
    params: GPUBuffer | null,
    offset: number,
  ): { pipeline: GPUComputePipeline; group: GPUBindGroup; dispatch: readonly [number, number, number] } {
    const raw = "wgsl" in s;
    const name = raw ? s.name : s.kernel.name;
    if (raw && s.wgsl === null) {
      throw new Error(`webgpu: kernel ${name} has no WGSL (cpu and wasm devices only)`);
    }
    const r = raw ? { source: s.wgsl!, dispatch: s.dispatch } : this.#render(s.kernel);
    if (!this.hasF16 && r.source.startsWith("enable f16;")) {
      throw new TypeError(
        `kernel ${name} uses f16, but the adapter (${this.description}) lacks the shader-f16 feature; ` +
          `cast to f32 or run on device "cpu"`,
      );
    }
    const withParams = offset >= 0;
    const layout = raw ? null : this.#layout(s.inputs.length, withParams);
    const pipeline = this.#pipeline(r.source, name, layout);
    if (r.dispatch.some((d) => d > MAX_GROUPS_PER_DIM)) {
      throw new RangeError(
        `kernel ${name}: dispatch ${r.dispatch.join("x")} exceeds ${MAX_GROUPS_PER_DIM} per dimension`,
      );
    }
    const buffers = raw ? s.buffers : [s.output, ...s.inputs];
    const entries: GPUBindGroupEntry[] = buffers.map((b, i) => ({ binding: i, resource: bufferBinding(b) }));
    if (withParams) {
      entries.push({
        binding: buffers.length,
        resource: { buffer: params!, offset, size: paramVec4s((s as Step).kernel) * 16 },
      });
    }
    const group = this.#device.createBindGroup({
      layout: layout ?? pipeline.getBindGroupLayout(0),
      entries,
    });
    return { pipeline, group, dispatch: r.dispatch };
  }

  /**
   * Packs the parameter values of every step that has parameter slots into one uniform buffer (each step's block
   * at an offset aligned as the device requires); returns the buffer and each step's offset (-1: none).
   */
  #packParams(
    steps: readonly (Step | RawStep)[],
    pooled = true,
  ): { buffer: GPUBuffer | null; cls: number; offsets: number[] } {
    return this.#packBlocks(steps.map((s) => ("wgsl" in s ? null : [s])), pooled);
  }

  /**
   * Packs parameter blocks into one uniform buffer, each at an offset aligned as the device requires: a block is
   * the parameters of one or more steps, each step's at the next whole `vec4` (null: no parameters).
   */
  #packBlocks(
    blocks: readonly (readonly Step[] | null)[],
    pooled: boolean,
  ): { buffer: GPUBuffer | null; cls: number; offsets: number[] } {
    const align = this.#device.limits.minUniformBufferOffsetAlignment;
    const offsets: number[] = [];
    let bytes = 0;
    for (const b of blocks) {
      const vecs = b === null ? 0 : b.reduce((a, s) => a + paramVec4s(s.kernel), 0);
      if (vecs === 0) {
        offsets.push(-1);
        continue;
      }
      offsets.push(bytes);
      bytes += Math.ceil((vecs * 16) / align) * align;
    }
    if (bytes === 0) return { buffer: null, cls: 0, offsets };
    const words = new Uint32Array(bytes / 4);
    blocks.forEach((b, i) => {
      if (offsets[i] < 0) return;
      let at = offsets[i] / 4;
      for (const s of b!) {
        encodeParams(s.kernel, s.params ?? [], words, at);
        at += paramVec4s(s.kernel) * 4;
      }
    });
    const cls = sizeClass(bytes);
    let buffer = pooled ? this.#uniforms.take(cls) : undefined;
    if (buffer === undefined) {
      buffer = this.#device.createBuffer({
        size: cls,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
    }
    this.#device.queue.writeBuffer(buffer, 0, words);
    return { buffer, cls, offsets };
  }

  /** Launches (dispatches) of the latest {@link run}: fewer than its steps where independent kernels shared one. */
  get lastRunLaunches(): number {
    return this.#lastRunLaunches;
  }
  #lastRunLaunches = 0;

  /**
   * Runs `steps` in one submission. Where the launch policy says so (`mergeRuns`), independent generated kernels
   * share launches as in {@link prepare}; with `DEBUG` >= 1 every step is its own launch, timed on its own.
   */
  async run(steps: readonly (Step | RawStep)[]): Promise<void> {
    if (steps.length === 0) return;
    const names = steps.map((s) => ("wgsl" in s ? s.name : s.kernel.name));
    this.#check(names[0]);
    if (debugLevel() >= 1 || !this.launchPolicy.mergeRuns) return this.#runEach(steps, names);
    // The scopes cover making the pipelines too, so that a shader that does not compile is named here.
    this.#device.pushErrorScope("validation");
    this.#device.pushErrorScope("internal");
    let launches;
    try {
      launches = this.#launches(steps, true);
    } catch (e) {
      this.#dropMade(this.#takeMade());
      await this.#device.popErrorScope();
      await this.#device.popErrorScope();
      throw e;
    }
    const { bound, packed } = launches;
    const encoder = this.#device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    encodeLaunches(pass, bound);
    pass.end();
    this.#device.queue.submit([encoder.finish()]);
    await this.#settle(names, packed, bound.length, this.#takeMade());
  }

  /** {@link run} with every step its own launch; with `DEBUG` >= 1 each is submitted and timed on its own. */
  async #runEach(steps: readonly (Step | RawStep)[], names: readonly string[]): Promise<void> {
    const packed = this.#packParams(steps);
    const perKernel = debugLevel() >= 1;
    this.#device.pushErrorScope("validation");
    this.#device.pushErrorScope("internal");
    try {
      let encoder = this.#device.createCommandEncoder();
      let pass = encoder.beginComputePass();
      for (const [si, s] of steps.entries()) {
        const { pipeline, group, dispatch } = this.#bind(s, packed.buffer, packed.offsets[si]);
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(dispatch[0], dispatch[1], dispatch[2]);
        if (perKernel) {
          pass.end();
          const t0 = performance.now();
          this.#device.queue.submit([encoder.finish()]);
          await this.#device.queue.onSubmittedWorkDone();
          console.error(
            `webgpu ${names[si]} ${dispatch.join("x")} ${(performance.now() - t0).toFixed(3)} ms`,
          );
          encoder = this.#device.createCommandEncoder();
          pass = encoder.beginComputePass();
        }
      }
      pass.end();
      this.#device.queue.submit([encoder.finish()]);
    } catch (e) {
      // A step refused before submission (a dispatch too large, f16 without the feature): the scopes go too, or
      // they would stay on the device's stack and swallow the errors of every later command.
      this.#dropMade(this.#takeMade());
      await this.#device.popErrorScope();
      await this.#device.popErrorScope();
      throw e;
    }
    await this.#settle(names, packed, steps.length, this.#takeMade());
  }

  /** The cache keys of what was made since they were last taken (see {@link #made}). */
  #takeMade(): { pipelines: string[]; merged: string[] } {
    const made = this.#made;
    this.#made = { pipelines: [], merged: [] };
    return made;
  }

  /** Drops the pipelines and merged shaders `made` by a run that failed from the caches. */
  #dropMade(made: { pipelines: string[]; merged: string[] }): void {
    for (const source of made.pipelines) this.#pipelines.delete(source);
    for (const key of made.merged) this.#merged.delete(key);
  }

  /**
   * After a run's submission: gives its parameter buffer back to the pool, records its launches and throws what
   * its commands raised (the two error scopes that the run pushed), dropping what the run `made` from the caches.
   */
  async #settle(
    names: readonly string[],
    packed: { buffer: GPUBuffer | null; cls: number },
    launches: number,
    made: { pipelines: string[]; merged: string[] },
  ): Promise<void> {
    this.#lastRunLaunches = launches;
    // Later writes to the parameter buffer are queued after this submission, so it can be reused at once.
    if (packed.buffer !== null) this.#uniforms.give(packed.cls, packed.buffer);
    const internal = await this.#device.popErrorScope();
    const validation = await this.#device.popErrorScope();
    const err = validation ?? internal;
    if (err) {
      this.#dropMade(made);
      const which = names.length === 1 ? names[0] : `one of [${names.join(", ")}]`;
      throw new WebGPUError(which, err.message);
    }
    this.#check(names[names.length - 1]);
  }

  /**
   * The launches of `steps`, in order: independent generated kernels share one (see `launch_groups.ts` and
   * `render_merged.ts`), with the parameters of all of them in one uniform buffer, taken from the pool when
   * `pooled` (one submission) or made for the caller to keep.
   */
  #launches(steps: readonly (Step | RawStep)[], pooled: boolean) {
    const rendered = steps.map((s) => ("wgsl" in s ? null : this.#render(s.kernel)));
    const groups = launchGroups(
      steps.map((s, i) => {
        const r = rendered[i];
        const types = r?.pieces?.bindingTypes;
        const buffers = "wgsl" in s ? s.buffers : [s.output, ...s.inputs];
        return {
          uses: buffers.map((b, j) => ({
            buffer: (b as GpuStorage).buffer,
            range: b instanceof GpuRange ? b.key : undefined,
            type: types?.[j] ?? "",
            write: j === 0,
          })),
          mergeable: r !== null && canMerge(r.pieces) &&
            this.launchPolicy.mayShare(workgroupsOf(r.dispatch), r.pieces.loops),
        };
      }),
      { maxBindings: this.#device.limits.maxStorageBuffersPerShaderStage, maxSteps: MAX_MERGED_STEPS },
    );
    const packed = this.#packBlocks(
      groups.map((g) => ("wgsl" in steps[g[0]] ? null : g.map((i) => steps[i] as Step))),
      pooled,
    );
    const bound = groups.map((g, i) =>
      g.length === 1
        ? this.#bind(steps[g[0]], packed.buffer, packed.offsets[i])
        : this.#bindMerged(g.map((j) => steps[j] as Step), packed.buffer, packed.offsets[i])
    );
    return { bound, packed };
  }

  /**
   * Prepares `steps` for repeated runs: pipelines, bind groups and a parameter buffer of their own are made once,
   * so a run only encodes the dispatches and submits them.
   */
  prepare(steps: readonly (Step | RawStep)[]): PreparedSteps {
    if (debugLevel() >= 1) return { run: () => this.run(steps), dispose: () => {}, launches: steps.length };
    const { bound, packed } = this.#launches(steps, false);
    const made = this.#takeMade();
    const names = steps.map((s) => ("wgsl" in s ? s.name : s.kernel.name));
    let disposed = false;
    // Validation errors are a property of the commands, which never change: only the first run is checked with
    // error scopes; later failures (a lost device, memory) surface through the device's error handlers.
    let validated = false;
    return {
      run: async (copies = []) => {
        if (disposed) throw new Error("prepared steps used after dispose()");
        this.#check(names[0] ?? "copy");
        for (const [src, dst] of copies) {
          if (src.bytes !== dst.bytes) {
            throw new RangeError(`copy: ${src.bytes} bytes into ${dst.bytes} bytes`);
          }
        }
        const scoped = !validated;
        if (scoped) {
          this.#device.pushErrorScope("validation");
          this.#device.pushErrorScope("internal");
        }
        try {
          const encoder = this.#device.createCommandEncoder();
          if (bound.length > 0) {
            const pass = encoder.beginComputePass();
            encodeLaunches(pass, bound);
            pass.end();
          }
          for (const [src, dst] of copies) {
            const a = src as GpuStorage;
            encoder.copyBufferToBuffer(a.buffer, 0, (dst as GpuStorage).buffer, 0, a.bytes);
          }
          this.#device.queue.submit([encoder.finish()]);
        } catch (e) {
          // The scopes go with the error (see #runEach).
          if (scoped) {
            await this.#device.popErrorScope();
            await this.#device.popErrorScope();
          }
          throw e;
        }
        if (scoped) {
          const internal = await this.#device.popErrorScope();
          const validation = await this.#device.popErrorScope();
          const err = validation ?? internal;
          if (err) {
            this.#dropMade(made);
            throw new WebGPUError(`one of [${names.join(", ")}]`, err.message);
          }
          validated = true;
        }
        this.#check(names[names.length - 1] ?? "copy");
      },
      dispose: () => {
        if (disposed) return;
        disposed = true;
        packed.buffer?.destroy();
      },
      launches: bound.length,
    };
  }

  /**
   * The pipeline, bind group and dispatch size of independent generated kernels run by one launch (see
   * `render_merged.ts`); their parameters are at `offset` in `params`, each step's at the next whole vec4.
   */
  #bindMerged(
    steps: readonly Step[],
    params: GPUBuffer | null,
    offset: number,
  ): { pipeline: GPUComputePipeline; group: GPUBindGroup; dispatch: readonly [number, number, number] } {
    const bindings: { storage: Storage; type: string; write: boolean }[] = [];
    const index = new Map<string, number>();
    const ids = new Map<GPUBuffer, number>();
    let paramBase = 0;
    const branches = steps.map((s): MergedBranch => {
      const r = this.#render(s.kernel);
      const pieces = r.pieces!;
      const slots = [s.output, ...s.inputs].map((st, j) => {
        const buffer = (st as GpuStorage).buffer;
        if (!ids.has(buffer)) ids.set(buffer, ids.size);
        const range = st instanceof GpuRange ? st.key : "";
        const key = `${ids.get(buffer)}|${range}|${pieces.bindingTypes[j]}|${j === 0}`;
        let at = index.get(key);
        if (at === undefined) {
          at = bindings.length;
          bindings.push({ storage: st, type: pieces.bindingTypes[j], write: j === 0 });
          index.set(key, at);
        }
        return at;
      });
      const branch = { pieces, dispatch: r.dispatch, bindings: slots, paramBase };
      paramBase += pieces.paramVec4s;
      return branch;
    });
    // The merged shader depends on the kernels and on which of their bindings share a buffer, not on the buffers.
    const key =
      branches.map((b, i) => `${this.#kernelId(steps[i].kernel)}:${b.bindings.join(",")}`).join(" ") +
      `|${bindings.map((b) => `${b.type}${b.write ? "w" : ""}`).join(",")}`;
    let made = this.#merged.get(key);
    if (made === undefined) {
      const r = renderMerged(branches, bindings, paramBase);
      const name = `merged(${steps.map((s) => s.kernel.name).join(", ")})`;
      const layout = this.#layoutOf(bindings.map((b) => b.write), paramBase > 0);
      made = { dispatch: r.dispatch, layout, pipeline: this.#pipeline(r.source, name, layout) };
      this.#merged.set(key, made);
      this.#made.merged.push(key);
    }
    const { layout, pipeline } = made;
    const entries: GPUBindGroupEntry[] = bindings.map((b, i) => ({
      binding: i,
      resource: bufferBinding(b.storage),
    }));
    if (paramBase > 0) {
      entries.push({ binding: bindings.length, resource: { buffer: params!, offset, size: paramBase * 16 } });
    }
    const group = this.#device.createBindGroup({ layout, entries });
    return { pipeline, group, dispatch: made.dispatch };
  }

  /** A number naming kernel `k` (kernels are made once per computation and shape, see `lowerCached`). */
  #kernelId(k: Kernel): number {
    let id = this.#kernelIds.get(k);
    if (id === undefined) {
      id = this.#nextKernelId++;
      this.#kernelIds.set(k, id);
    }
    return id;
  }
  #kernelIds = new WeakMap<Kernel, number>();
  #nextKernelId = 0;
  /** Merged shaders by their kernels and binding pattern (see {@link #bindMerged}). */
  #merged = new LruCache<
    string,
    { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout; dispatch: readonly [number, number, number] }
  >(512);

  /** Overwrites `s` with `data` (queued: ordered after every earlier submission). */
  write(s: Storage, d: DType, data: AnyDataArray): Promise<void> {
    const g = s as GpuStorage;
    const bytes = encode(d, data);
    if (bytes.byteLength > g.cls) {
      throw new RangeError(`write: ${bytes.byteLength} bytes into a storage of ${g.bytes} bytes`);
    }
    if (bytes.byteLength === 0) return Promise.resolve();
    if (bytes.byteLength % 4 === 0) {
      this.#device.queue.writeBuffer(g.buffer, 0, bytes as Uint8Array<ArrayBuffer>);
    } else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.#device.queue.writeBuffer(g.buffer, 0, padded);
    }
    return Promise.resolve();
  }

  /** Copies each `[src, dst]` pair in one submission. */
  copy(pairs: readonly (readonly [Storage, Storage])[]): Promise<void> {
    if (pairs.length === 0) return Promise.resolve();
    const enc = this.#device.createCommandEncoder();
    for (const [src, dst] of pairs) {
      const a = src as GpuStorage;
      const b = dst as GpuStorage;
      if (a.bytes !== b.bytes) throw new RangeError(`copy: ${a.bytes} bytes into ${b.bytes} bytes`);
      enc.copyBufferToBuffer(a.buffer, 0, b.buffer, 0, a.bytes);
    }
    this.#device.queue.submit([enc.finish()]);
    this.#check("copy");
    return Promise.resolve();
  }

  async read(s: Storage, d: DType, n: number): Promise<AnyDataArray> {
    const [values] = await this.readMany([{ storage: s, dtype: d, n }]);
    return values;
  }

  /** Reads several storages with one staging buffer and one map (see {@link read}: every map waits ~11 ms). */
  async readMany(parts: readonly ReadSpec[]): Promise<AnyDataArray[]> {
    if (parts.length === 0) return [];
    const offsets: number[] = [];
    let bytes = 0;
    for (const p of parts) {
      offsets.push(bytes);
      bytes += (p.storage as GpuStorage).bytes;
    }
    const cls = sizeClass(Math.max(bytes, 4));
    let staging = this.#staging.take(cls);
    if (staging !== undefined) this.#stagingParked -= cls;
    else {
      staging = this.#device.createBuffer({
        size: cls,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      this.#deviceBytes += cls;
    }
    const enc = this.#device.createCommandEncoder();
    parts.forEach((p, i) => {
      const g = p.storage as GpuStorage | GpuRange;
      enc.copyBufferToBuffer(g.buffer, g instanceof GpuRange ? g.offset : 0, staging, offsets[i], g.bytes);
    });
    this.#device.queue.submit([enc.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      staging.destroy();
      this.#deviceBytes -= cls;
      throw new WebGPUError("readback", await this.#mapFailure(bytes, e as Error));
    }
    const all = staging.getMappedRange().slice(0);
    staging.unmap();
    if (this.#stagingParked + cls <= STAGING_POOL_BYTES) {
      this.#staging.give(cls, staging);
      this.#stagingParked += cls;
    } else {
      staging.destroy();
      this.#deviceBytes -= cls;
    }
    this.#check("readback");
    return parts.map((p, i) =>
      decode(p.dtype, all.slice(offsets[i], offsets[i] + (p.storage as GpuStorage).bytes), p.n)
    );
  }

  /**
   * Why mapping `bytes` of read-back data failed. A lost device (destroyed, or reset by the driver) rejects the map
   * with "validation error occurred" before its `lost` promise settles, so that promise is given a moment.
   */
  async #mapFailure(bytes: number, e: Error): Promise<string> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const wait = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), LOST_WAIT_MS));
    const info = await Promise.race([this.#device.lost, wait]);
    clearTimeout(timer);
    if (info !== null) this.#lost ??= `${info.reason}: ${info.message}`;
    if (this.#lost !== null) return lostMessage(this.#lost);
    return `mapping ${bytes} bytes to read them back failed (${e.message})`;
  }

  /** Waits until all submitted work has finished (benchmarks). */
  async sync(): Promise<void> {
    await this.#device.queue.onSubmittedWorkDone();
  }

  stats(): BackendStats {
    return {
      liveBuffers: this.#live,
      liveBytes: this.#liveBytes,
      pooledBuffers: this.#pool.size,
      cachedKernels: this.#pipelines.size,
      deviceBytes: this.#deviceBytes,
    };
  }
}

/** Whether `TESSERA_SUBGROUP_MATMUL=1` asks for the subgroup matmul tiles (false without env access). */
function subgroupMatmulRequested(): boolean {
  return envValue("TESSERA_SUBGROUP_MATMUL") === "1";
}

/** The environment variable `name`, or undefined when it is unset or env access to it is not granted. */
function envValue(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Requests the adapter and a device with the adapter's own limits (not WebGPU's low defaults). */
export async function createWebGPUBackend(): Promise<WebGPUBackend> {
  if (typeof navigator === "undefined" || navigator.gpu === undefined) {
    throw new NoAdapterError("navigator.gpu missing");
  }
  const adapter = await requestGpuAdapter();
  if (adapter === null) throw new NoAdapterError(chosenBackendNote());
  const l = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
  };
  const requiredFeatures: GPUFeatureName[] = adapter.features.has("shader-f16") ? ["shader-f16"] : [];
  // Subgroup matmul tiles only when asked for (unverified on real subgroups; see matmul_policy.ts).
  if (adapter.features.has("subgroups" as GPUFeatureName) && subgroupMatmulRequested()) {
    requiredFeatures.push("subgroups" as GPUFeatureName);
  }
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  return new WebGPUBackend(adapter, device);
}
