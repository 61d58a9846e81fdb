/**
 * Plans: what a realization runs, without its data. A graph's *signature* prints its structure (ops, arguments,
 * shapes, dtypes) with each buffer leaf replaced by a leaf slot and each constant or seed by a parameter slot;
 * graphs with equal signatures schedule, split and lower to the same kernels. A {@link Plan} is that kernel list
 * with every binding expressed by slot (a leaf, or one of the plan's own buffers), cached by signature, so a loop
 * that builds the same graph every iteration schedules and lowers it once.
 *
 * On a device that binds buffers from an offset (WebGPU), a kernel reads a contiguous view of stored data that
 * starts at an aligned offset (a parameter inside an optimiser's pack) as a buffer of its own, a *range*: its
 * kernel is then the one of a standalone tensor of that shape, wherever the view starts.
 *
 * A {@link BoundPlan} ties a plan to storages for good (leaves, root outputs, and intermediates packed by liveness
 * into few buffers) and prepares it on the backend, so running it again costs no graph building, scheduling or
 * binding work: the compiled training step replays one per step.
 *
 * @module
 */
import { type AnyDataArray, type DType, DTYPE_INFO } from "../dtype.ts";
import { argKey, type Node, type Storage, toposort } from "../ir/node.ts";
import { type CustomKernelArg, Op } from "../ir/ops.ts";
import { schedule } from "../codegen/schedule.ts";
import { LOOP_BUDGET, splitLongLoops } from "../codegen/split_loops.ts";
import { isParamNode, lowerCached } from "../codegen/lower.ts";
import { KBuilder, type Kernel } from "../codegen/kexpr.ts";
import { verifyKernel } from "../codegen/verify.ts";
import { LruCache } from "../codegen/lru.ts";
import { type Backend, type PreparedSteps, type RawStep, sizeClass, type Step } from "./backend.ts";

/** A graph's structure with leaves and parameters as slots, plus the nodes that fill the slots. */
export interface GraphSignature {
  /** The structure as text (equal for graphs that lower to the same kernels). */
  readonly key: string;
  /** The buffer leaves, by leaf slot. */
  readonly leaves: readonly Node[];
  /** The Const and Rand nodes, by parameter slot. */
  readonly params: readonly Node[];
}

/** The signature of the graph below `roots` (see the module comment). */
export function graphSignature(roots: readonly Node[]): GraphSignature {
  const order = toposort(roots);
  const index = new Map<Node, number>();
  const leaves: Node[] = [];
  const params: Node[] = [];
  const parts: string[] = [];
  for (const n of order) {
    index.set(n, index.size);
    const head = `[${n.shape.join(",")}]${n.dtype}`;
    if (n.storage !== null) {
      parts.push(`L${leaves.length}${head}`);
      leaves.push(n);
    } else if (isParamNode(n)) {
      parts.push(`${n.op}%${params.length}${head}`);
      params.push(n);
    } else {
      const arg = n.arg === null || n.op === Op.CustomVjp ? "" : argKey(n.arg);
      parts.push(`${n.op}${arg}${head}(${n.src.map((s) => index.get(s)).join(",")})`);
    }
  }
  parts.push(`roots:${roots.map((r) => index.get(r)).join(",")}`);
  return { key: parts.join(";"), leaves, params };
}

/**
 * A binding of a plan kernel: `{ leaf: i }` (leaf slot i) or `{ buf: j }` (the plan's buffer j); with `range`,
 * only `size` elements from element `offset` of it (a contiguous view of stored data bound as a buffer of its own).
 */
export type PlanRef =
  & ({ readonly leaf: number; readonly buf?: undefined } | {
    readonly buf: number;
    readonly leaf?: undefined;
  })
  & { readonly range?: { readonly offset: number; readonly size: number } };

/** One kernel of a plan: it writes the plan buffer of the same index. */
export interface PlanKernel {
  /** What to run; null for an empty result (nothing to compute) or a hand-written kernel. */
  readonly kernel: Kernel | null;
  /** The hand-written kernel to run (an {@link Op.Custom} node), or null. */
  readonly raw: CustomKernelArg | null;
  /** Each input binding. */
  readonly inputs: readonly PlanRef[];
  /** The graph parameter slot behind each of the kernel's parameter slots. */
  readonly params: readonly number[];
}

/** The kernels of a realization, with bindings by slot (see the module comment). */
export interface Plan {
  /** The graph signature the plan was made for. */
  readonly key: string;
  /** Leaf slots the plan reads. */
  readonly leafCount: number;
  /** Parameter slots of the graph. */
  readonly paramCount: number;
  /** Dtype, element count, shape and producing op of each plan buffer (one per kernel, in kernel order). */
  readonly buffers: readonly {
    readonly dtype: DType;
    readonly size: number;
    readonly shape: readonly number[];
    readonly op: Op;
  }[];
  /** The kernels, producers before consumers; kernel i writes buffer i. */
  readonly kernels: readonly PlanKernel[];
  /** The buffer holding each root. */
  readonly roots: readonly number[];
  /** Per buffer, the index of the last kernel that reads it (-1: none). */
  readonly lastUse: readonly number[];
  /** Kernels that launch work (non-empty results). */
  readonly launches: number;
}

/** Options of {@link planFor}. */
export interface PlanOptions {
  /** Input buffers one kernel may bind. */
  maxInputs: number;
  /** Give every non-view op its own kernel (tests). */
  noFusion?: boolean;
  /** Disable the tiled matmul template (tests). */
  noMatmulTemplate?: boolean;
  /** Most loop iterations one kernel invocation may run on the device (default: llvmpipe's budget). */
  loopBudget?: number;
  /** Fuse row reductions into the kernels that broadcast them (see `schedule.ts`; the device's choice). */
  rowKernels?: boolean;
  /**
   * Bytes at which the device can bind a buffer from an offset (WebGPU's `minStorageBufferOffsetAlignment`); with
   * it, a kernel reads a contiguous view of stored data that starts at such an offset as a buffer of its own (see
   * {@link contiguousView}). Absent: views are read through their index arithmetic.
   */
  viewAlign?: number;
}

/** Most plans kept (least recently used ones are evicted). */
export const PLAN_CACHE_SIZE = 64;

/** Most characters of graph signatures kept by the plan cache (a big model's step has a signature of ~1 MB). */
export const PLAN_CACHE_CHARS = 16 * 2 ** 20;

const planCache = new LruCache<string, Plan>(PLAN_CACHE_SIZE, {
  weigh: (key) => key.length,
  maxWeight: PLAN_CACHE_CHARS,
});

/** The plan of the graph below `roots` (whose signature is `sig`): from the cache, or scheduled and lowered. */
export function planFor(roots: readonly Node[], sig: GraphSignature, opts: PlanOptions): Plan {
  const key = `${opts.maxInputs}|${opts.loopBudget ?? "default"}|${opts.noFusion ? "nofuse" : ""}|${
    opts.noMatmulTemplate ? "naive" : ""
  }|${opts.rowKernels ? "rows" : ""}|${opts.viewAlign ?? ""}|${sig.key}`;
  const hit = planCache.get(key);
  if (hit !== undefined) return hit;
  const plan = buildPlan(roots, sig, key, opts);
  planCache.set(key, plan);
  return plan;
}

/** Number of plans in the cache (tests and benchmarks). */
export function cachedPlans(): number {
  return planCache.size;
}

function buildPlan(roots: readonly Node[], sig: GraphSignature, key: string, opts: PlanOptions): Plan {
  const leafSlot = new Map(sig.leaves.map((n, i) => [n, i]));
  const paramSlot = new Map(sig.params.map((n, i) => [n, i]));
  const loopBudget = opts.loopBudget ?? LOOP_BUDGET;
  const split = splitLongLoops(roots, loopBudget);
  const order = schedule(split, {
    maxInputs: opts.maxInputs,
    noFusion: opts.noFusion,
    loopBudget,
    rowKernels: opts.rowKernels,
  });
  const bufOf = new Map(order.map((n, i) => [n, i]));
  const materialized = new Set(order);
  // The views a kernel may bind as ranges (see contiguousView).
  const ranges = new Map<Node, { base: Node; offset: number }>();
  if (opts.viewAlign !== undefined) {
    for (const n of toposort(split)) {
      if (n.storage !== null || materialized.has(n) || n.size === 0) continue;
      const r = contiguousView(n, materialized);
      if (r !== null && (r.offset * DTYPE_INFO[n.dtype].bytes) % opts.viewAlign === 0) ranges.set(n, r);
    }
  }
  const lastUse = order.map(() => -1);
  let launches = 0;
  const kernels = order.map((n, i): PlanKernel => {
    if (n.size === 0) return { kernel: null, raw: null, inputs: [], params: [] };
    if (n.op === Op.Custom) {
      launches++;
      const inputs = n.src.map((inp): PlanRef => {
        if (inp.storage !== null) return { leaf: leafSlot.get(inp)! };
        const buf = bufOf.get(inp)!;
        lastUse[buf] = i;
        return { buf };
      });
      return { kernel: null, raw: n.argOf(Op.Custom), inputs, params: [] };
    }
    const lowerOpts = { matmulTemplate: !opts.noMatmulTemplate, loopBudget };
    let l = lowerCached(n, (m) => materialized.has(m) || ranges.has(m), lowerOpts);
    // A view bound on its own takes a binding of its own; past the device's limit the views stay in the kernel.
    if (l.inputs.length > opts.maxInputs && l.inputs.some((m) => ranges.has(m))) {
      l = lowerCached(n, (m) => materialized.has(m), lowerOpts);
    }
    verifyKernel(l.kernel, loopBudget);
    launches++;
    const slotOf = (inp: Node): PlanRef => {
      if (inp.storage !== null) {
        const leaf = leafSlot.get(inp);
        if (leaf === undefined) throw new Error(`plan: leaf ${inp} is not in the graph's signature`);
        return { leaf };
      }
      const buf = bufOf.get(inp)!;
      lastUse[buf] = i;
      return { buf };
    };
    const inputs = l.inputs.map((inp): PlanRef => {
      const r = ranges.get(inp);
      return r === undefined
        ? slotOf(inp)
        : { ...slotOf(r.base), range: { offset: r.offset, size: inp.size } };
    });
    const params = l.params.map((p) => {
      const slot = paramSlot.get(p);
      if (slot === undefined) throw new Error(`plan: parameter ${p} is not in the graph's signature`);
      return slot;
    });
    return { kernel: l.kernel, raw: null, inputs, params };
  });
  return {
    key,
    leafCount: sig.leaves.length,
    paramCount: sig.params.length,
    buffers: order.map((n) => ({ dtype: n.dtype, size: n.size, shape: n.shape, op: n.op })),
    kernels,
    roots: split.map((r) => {
      const b = bufOf.get(r);
      if (b === undefined) throw new Error(`plan: root ${r} is already realized`);
      return b;
    }),
    lastUse,
    launches,
  };
}

/**
 * Where a chain of views (reshapes and unit-step slices) over stored or materialized data reads a contiguous run
 * of it in order: the node below the chain and the element offset of the run; null for any other node.
 */
export function contiguousView(
  n: Node,
  materialized: ReadonlySet<Node>,
): { base: Node; offset: number } | null {
  if (n.op !== Op.Reshape && n.op !== Op.Shrink) return null;
  let offset = 0;
  let sliced = false;
  let at: Node = n;
  while (at.storage === null && !materialized.has(at)) {
    if (at.op === Op.Reshape) {
      at = at.src[0];
      continue;
    }
    if (at.op !== Op.Shrink) return null;
    const { start, step, len } = at.argOf(Op.Shrink);
    const shape = at.src[0].shape;
    // A run in row-major order: the axes before the last one cut keep one index, and the cut axes step by one.
    let cut = -1;
    shape.forEach((d, j) => (cut = len[j] !== d ? j : cut));
    if (len.some((m, j) => (j < cut && m !== 1) || (m > 1 && step[j] !== 1))) return null;
    let stride = 1;
    for (let j = shape.length - 1; j >= 0; j--) {
      offset += start[j] * stride;
      stride *= shape[j];
    }
    sliced = true;
    at = at.src[0];
  }
  // A reshape alone reads the buffer from its start: its kernel depends on shapes only, as a range's would.
  return sliced ? { base: at, offset } : null;
}

/**
 * What a plan's kernel `i` binds, given the storages of the leaves and of the plan's buffers; `range` gives the
 * storage of a contiguous run of another (bytes from a byte offset), for plans made with `viewAlign`.
 */
export function planStep(
  plan: Plan,
  i: number,
  leaves: readonly Storage[],
  buffers: readonly Storage[],
  params: readonly number[],
  range?: (s: Storage, byteOffset: number, bytes: number) => Storage,
): Step | RawStep | null {
  const k = plan.kernels[i];
  const whole = (r: PlanRef) => (r.leaf !== undefined ? leaves[r.leaf] : buffers[r.buf]);
  const bind = (r: PlanRef, dtype: DType) => {
    if (r.range === undefined) return whole(r);
    if (range === undefined) {
      throw new Error(`plan: kernel ${i} binds a range of a buffer, and no range maker was given`);
    }
    const bytes = DTYPE_INFO[dtype].bytes;
    return range(whole(r), r.range.offset * bytes, r.range.size * bytes);
  };
  if (k.raw !== null) {
    const raw = k.raw;
    return {
      name: raw.name,
      wgsl: raw.wgsl,
      dispatch: raw.dispatch,
      host: (b) => raw.host(b),
      wasm: raw.wasm,
      buffers: [buffers[i], ...k.inputs.map(whole)],
    };
  }
  if (k.kernel === null) return null;
  return {
    kernel: k.kernel,
    inputs: k.inputs.map((r, j) => bind(r, k.kernel!.inputs[j].dtype)),
    output: buffers[i],
    params: k.params.map((p) => params[p]),
  };
}

// ----- storage helpers with fallbacks for backends without the optional methods -----

const copyKernels = new LruCache<string, Kernel>(64);

/** A kernel copying `n` elements of dtype `d` from its input to its output. */
function copyKernel(d: DType, n: number): Kernel {
  const key = `${d}|${n}`;
  let k = copyKernels.get(key);
  if (k === undefined) {
    const kb = new KBuilder();
    const gid = kb.var("gid", 0, Math.max(n - 1, 0));
    k = {
      name: `copy_${n}`,
      inputs: [{ dtype: d, size: n }],
      outShape: [n],
      outDtype: d,
      body: kb.load(0, gid, d),
      matmul: null,
    };
    copyKernels.set(key, k);
  }
  return k;
}

/** One copy of `n` elements of dtype `dtype` from `src` to `dst`. */
export interface CopySpec {
  /** Source storage. */
  readonly src: Storage;
  /** Destination storage (not `src`). */
  readonly dst: Storage;
  /** Element type of both. */
  readonly dtype: DType;
  /** Elements to copy. */
  readonly n: number;
}

/** Copies each `src` into its `dst`, after all work queued so far (the backend's `copy`, or copy kernels). */
export async function copyStorages(be: Backend, copies: readonly CopySpec[]): Promise<void> {
  if (copies.length === 0) return;
  if (be.copy !== undefined) return be.copy(copies.map((c) => [c.src, c.dst] as const));
  await be.run(
    copies.map((c) => ({ kernel: copyKernel(c.dtype, c.n), inputs: [c.src], output: c.dst, params: [] })),
  );
}

/** Overwrites storage `s` with `data` (dtype `d`), after all work queued so far. */
export async function writeStorage(be: Backend, s: Storage, d: DType, data: AnyDataArray): Promise<void> {
  if (be.write !== undefined) return be.write(s, d, data);
  const tmp = be.upload(d, data);
  try {
    await copyStorages(be, [{ src: tmp, dst: s, dtype: d, n: data.length }]);
  } finally {
    tmp.release();
  }
}

/** `steps` prepared for repeated runs (the backend's `prepare`, or plain runs of the same steps). */
export function prepareSteps(be: Backend, steps: readonly (Step | RawStep)[]): PreparedSteps {
  if (be.prepare !== undefined) return be.prepare(steps);
  return {
    run: async (copies = []) => {
      await be.run(steps);
      await copyStorages(be, copies.map(([src, dst]) => copySpecOf(src, dst)));
    },
    dispose: () => {},
  };
}

/** A copy of all of `src`'s elements, as 32-bit words (storage sizes are whole words). */
function copySpecOf(src: Storage, dst: Storage): CopySpec {
  return { src, dst, dtype: "u32", n: Math.ceil(src.bytes / 4) };
}

// ----- bound plans -----

/** Dependency level of each kernel of a plan: 0 for kernels that read only leaves, else one more than its inputs'. */
export function planLevels(plan: Plan): number[] {
  const level: number[] = [];
  plan.kernels.forEach((k, i) => {
    let l = 0;
    for (const r of k.inputs) if (r.buf !== undefined) l = Math.max(l, level[r.buf] + 1);
    level[i] = l;
  });
  return level;
}

/** Options of {@link BoundPlan}. */
export interface BindOptions {
  /** Device storage of each leaf slot. */
  leaves: readonly Storage[];
  /** Graph parameter values (by slot). */
  params: readonly number[];
  /** Storage for some roots (by root index); the others get storage owned by the bound plan. */
  outputs?: ReadonlyMap<number, Storage>;
  /** Share the intermediate buffers of another binding of the same plan (never run both at once). */
  shareWith?: BoundPlan;
}

/**
 * A plan bound to storages and prepared on its backend: {@link run} replays its kernels over whatever its leaves
 * hold now. Intermediates are packed by liveness into few buffers (one per size class in use at once).
 */
export class BoundPlan {
  /** The plan. */
  readonly plan: Plan;
  readonly #be: Backend;
  readonly #prepared: PreparedSteps;
  readonly #owned: Storage[] = [];
  readonly #scratch: ReadonlyMap<number, Storage>;
  readonly #buffers: Storage[];
  #disposed = false;

  /** Binds `plan` on `be` (see {@link BindOptions}). */
  constructor(be: Backend, plan: Plan, opts: BindOptions) {
    if (opts.leaves.length !== plan.leafCount || opts.params.length !== plan.paramCount) {
      throw new Error(
        `BoundPlan: ${opts.leaves.length} leaves and ${opts.params.length} parameters for a plan of ` +
          `${plan.leafCount} and ${plan.paramCount}`,
      );
    }
    this.plan = plan;
    this.#be = be;
    const rootOf = new Map(plan.roots.map((b, r) => [b, r]));
    const buffers: Storage[] = new Array(plan.buffers.length);
    plan.roots.forEach((b, r) => {
      const given = opts.outputs?.get(r);
      if (given !== undefined) buffers[b] = given;
      else {
        const s = be.alloc(plan.buffers[b].dtype, plan.buffers[b].size);
        this.#owned.push(s);
        buffers[b] = s;
      }
    });
    // Intermediates: a buffer is free again after its last reader's kernel (never bound as the input and the
    // output of one kernel); free buffers are reused by dtype and size class. A backend may run independent
    // kernels in one launch (kernels of one dependency level, see `launch_groups.ts`), so a buffer is reused only
    // by a kernel of a later level than every kernel that used it: reuse then adds no ordering of its own.
    let scratch = opts.shareWith === undefined ? undefined : opts.shareWith.#scratch;
    if (scratch === undefined) {
      const level = planLevels(plan);
      const usedUpTo = plan.buffers.map((_, j) => level[j]);
      plan.kernels.forEach((k, i) => {
        for (const r of k.inputs) {
          if (r.buf !== undefined) usedUpTo[r.buf] = Math.max(usedUpTo[r.buf], level[i]);
        }
      });
      const own = new Map<number, Storage>();
      const free = new Map<string, { st: Storage; level: number }[]>();
      const freedAt = new Map<number, number[]>();
      plan.lastUse.forEach((k, j) => {
        if (rootOf.has(j)) return;
        const at = Math.max(k, j);
        freedAt.set(at, [...(freedAt.get(at) ?? []), j]);
      });
      const classKey = (j: number) => {
        const b = plan.buffers[j];
        return `${b.dtype}|${sizeClass(Math.max(4, b.size * DTYPE_INFO[b.dtype].bytes))}`;
      };
      plan.buffers.forEach((b, i) => {
        if (!rootOf.has(i)) {
          const list = free.get(classKey(i)) ?? [];
          const at = list.findIndex((f) => f.level < level[i]);
          let st = at < 0 ? undefined : list.splice(at, 1)[0].st;
          if (st === undefined) {
            const bytes = sizeClass(Math.max(4, b.size * DTYPE_INFO[b.dtype].bytes));
            st = be.alloc(b.dtype, Math.ceil(bytes / DTYPE_INFO[b.dtype].bytes));
            this.#owned.push(st);
          }
          own.set(i, st);
        }
        for (const j of freedAt.get(i) ?? []) {
          const key = classKey(j);
          free.set(key, [...(free.get(key) ?? []), { st: own.get(j)!, level: usedUpTo[j] }]);
        }
      });
      scratch = own;
    }
    plan.buffers.forEach((_, i) => {
      if (!rootOf.has(i)) buffers[i] = scratch.get(i)!;
    });
    this.#scratch = scratch;
    this.#buffers = buffers;
    const steps: (Step | RawStep)[] = [];
    plan.kernels.forEach((_, i) => {
      const s = planStep(plan, i, opts.leaves, buffers, opts.params, be.range?.bind(be));
      if (s !== null) steps.push(s);
    });
    this.#prepared = prepareSteps(be, steps);
  }

  /** Launches one run makes (kernels that share a launch count once; see `launch_groups.ts`). */
  get launches(): number {
    return this.#prepared.launches ?? this.plan.launches;
  }

  /** The storage holding root `r` after a run. */
  root(r: number): Storage {
    return this.#buffers[this.plan.roots[r]];
  }

  /** Runs the plan's kernels, then the copies `[src, dst]` (one submission on GPUs). */
  run(copies: readonly (readonly [Storage, Storage])[] = []): Promise<void> {
    if (this.#disposed) throw new Error("BoundPlan: run() after dispose()");
    return this.#prepared.run(copies);
  }

  /** Releases the storage the binding owns (not the leaves, given outputs or shared intermediates). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#prepared.dispose();
    for (const s of this.#owned) s.release();
  }
}
