/**
 * The compiled training step: after two consecutive steps built the same graph, the {@link Trainer} replays the
 * second one's kernels instead of building, scheduling and binding the step again.
 *
 * A traced step is realized with a recording (`realizeNodes`' `record`), which gives its plan and the storage of
 * every leaf. Each leaf is given a role: the buffer of one of the optimiser's parameter packs (fed by that pack's
 * update), a batch tensor (written from the new batch each step), the optimiser's step scalars (written
 * from {@link Optimizer.stepScalars}), or a fixed tensor (a frozen weight, a rotary table: bound as is). Two traces
 * that agree on the plan, on every constant and seed, and on every role (fixed leaves by identity) make the step
 * replayable; a leaf that is new at every step and has no role (a dropout key drawn per step) keeps the trainer
 * tracing, which stays correct and still reuses the plan.
 *
 * The replay binds the plan twice over two sets of state buffers (ping-pong: one binding reads set A and writes
 * set B, the other the reverse), so a step costs writes of the batch and scalars, one prepared submission and a
 * copy of the metrics vector. The model and optimiser are brought up to date lazily ({@link ReplayedStep.sync}:
 * copies of the current state, handed over with {@link Optimizer.adopt}) before anything outside the step can
 * look at them.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { bufferNode, type DeviceName, type Node, type Storage } from "../ir/node.ts";
import type { Backend } from "../runtime/backend.ts";
import { BoundPlan, copyStorages, writeStorage } from "../runtime/plan.ts";
import { HostStorage, type Recording, resolveStorage } from "../runtime/realize.ts";
import { boundsOf, type HostBound, outOfBound, realize, Tensor } from "../tensor/tensor.ts";
import type { Optimizer } from "../nn/optim/optimizer.ts";
import { modelFacts } from "../nn/module.ts";

/** What a leaf of a traced step stands for. */
export type LeafRole =
  | { readonly kind: "state"; readonly pack: string }
  | { readonly kind: "batch"; readonly name: string }
  | { readonly kind: "scalars" }
  | { readonly kind: "fixed" };

/** A traced step: its recording, the role of each leaf, and which roots hold what. */
export interface TracedStep {
  /** The realization's recording. */
  readonly rec: Recording;
  /** Role of each leaf slot. */
  readonly roles: readonly LeafRole[];
  /** Pairs of batch names that held one tensor (the first name is the one in {@link roles}). */
  readonly sameBatch: readonly (readonly [string, string])[];
  /** Root index of each parameter pack's update, by pack key. */
  readonly packedRoot: ReadonlyMap<string, number>;
  /** Root index of the metrics vector. */
  readonly vectorRoot: number;
}

/** The storage at the bottom of a tensor's view chain (the buffer a parameter or state slot is a view of). */
export function baseStorage(t: Tensor): Storage | null {
  let n: Node = t.node;
  while (n.storage === null && n.src.length === 1) n = n.src[0];
  return n.storage;
}

/**
 * Gives each leaf of `rec` its role. `state` maps the storage of each current parameter pack to its key, `batch`
 * each batch tensor's storage to its name, `scalars` is the storage of the optimiser's uploaded step scalars.
 */
export function leafRoles(
  rec: Recording,
  state: ReadonlyMap<Storage, string>,
  batch: ReadonlyMap<Storage, string>,
  scalars: Storage,
): LeafRole[] {
  return rec.leafNodes.map((n): LeafRole => {
    const s = n.storage!;
    const pack = state.get(s);
    if (pack !== undefined) return { kind: "state", pack };
    const name = batch.get(s);
    if (name !== undefined) return { kind: "batch", name };
    if (s === scalars) return { kind: "scalars" };
    return { kind: "fixed" };
  });
}

/**
 * Whether a loss function may read its third argument, the step number, and must then be traced at every step.
 * `length` counts only the parameters before the first one with a default value or a rest parameter, so
 * `(m, b, step = 0) => ...` has length 2 and `(...args) => ...` length 0; a function is therefore taken to read the
 * step when it declares three parameters, when its parameter list holds a default value or a rest parameter, when
 * its source mentions `arguments`, and when its parameter list cannot be read from its source (a bound or native
 * function, quotes or comments among the parameters).
 */
export function mayReadStep(fn: (...args: never[]) => unknown): boolean {
  if (fn.length >= 3) return true;
  const src = Function.prototype.toString.call(fn);
  if (src.includes("[native code]") || /\barguments\b/.test(src)) return true;
  // One parameter without parentheses: `m => ...`, `async m => ...`.
  if (/^(async\s+)?[\w$]+\s*=>/.test(src)) return false;
  const open = src.indexOf("(");
  if (open < 0) return true;
  let depth = 0;
  for (let i = open; i < src.length; i++) {
    const c = src[i];
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
    else if (c === "=" || c === "." || c === "/" || c === "'" || c === '"' || c === "`") return true;
    if (depth === 0) return false;
  }
  return true;
}

/** Why two traces do not make a replayable step (null: they do). */
export function replayBlocker(prev: TracedStep, cur: TracedStep, packs: readonly string[]): string | null {
  const a = prev.rec;
  const b = cur.rec;
  if (a.plan.key !== b.plan.key) return "the step's graph changed";
  const changed = a.params.findIndex((v, i) => !Object.is(v, b.params[i]));
  if (changed >= 0) {
    return `a constant or seed changed between steps (${a.params[changed]} then ${b.params[changed]})`;
  }
  const seen = new Set<string>();
  for (let i = 0; i < b.leafNodes.length; i++) {
    const [ra, rb] = [prev.roles[i], cur.roles[i]];
    if (ra.kind !== rb.kind) return "a tensor changed its role between steps";
    if (rb.kind === "fixed" && a.leafNodes[i].storage !== b.leafNodes[i].storage) {
      const { shape, dtype } = b.leafNodes[i];
      const what = `a [${shape.join(", ")}] ${dtype} tensor`;
      return `the step reads ${what} that is new at every step and is neither batch nor optimiser state`;
    }
    if (rb.kind === "state") {
      if (rb.pack !== (ra as { pack: string }).pack || seen.has(rb.pack)) return "state leaves do not match";
      seen.add(rb.pack);
      const root = cur.packedRoot.get(rb.pack);
      const leaf = b.leafNodes[i];
      const out = root === undefined ? undefined : b.plan.buffers[b.plan.roots[root]];
      if (out === undefined || out.shape.join() !== leaf.shape.join() || out.dtype !== leaf.dtype) {
        return `the update of pack "${rb.pack}" does not have the layout of its input`;
      }
    }
    if (rb.kind === "batch" && rb.name !== (ra as { name: string }).name) return "batch leaves do not match";
  }
  if (seen.size !== packs.length) return "some parameter packs are not read by the step";
  if (prev.sameBatch.join(";") !== cur.sameBatch.join(";")) {
    return "batch entries that were one tensor are not";
  }
  const batchNames = cur.roles.filter((r) => r.kind === "batch").map((r) => (r as { name: string }).name);
  if (new Set(batchNames).size !== batchNames.length) return "two batch entries share one tensor";
  return null;
}

interface BatchSlot {
  name: string;
  dtype: DType;
  shape: readonly number[];
  device: DeviceName;
  storage: Storage;
  /** The ranges the traced step checked this entry's values against (token ids, targets). */
  bounds: readonly HostBound[];
}

/**
 * Frees the bindings and buffers of a replay that became unreachable without being disposed: its trainer was
 * dropped before its last step and not closed (a run abandoned in a sweep). The held value does not refer to the
 * replay.
 */
const abandoned = new FinalizationRegistry<{ bound: readonly BoundPlan[]; owned: readonly Storage[] }>(
  ({ bound, owned }) => {
    for (const b of bound) b.dispose();
    for (const s of owned) s.release();
  },
);

/** A traced step bound for replay (see the module comment). */
export class ReplayedStep {
  readonly #be: Backend;
  readonly #bound: [BoundPlan, BoundPlan];
  readonly #sets: [Map<string, Storage>, Map<string, Storage>];
  readonly #packedShape = new Map<string, { shape: readonly number[]; dtype: DType }>();
  readonly #batch: BatchSlot[] = [];
  readonly #sameBatch: TracedStep["sameBatch"];
  readonly #scalars: Storage | null;
  readonly #vector: Storage;
  readonly #vectorShape: readonly number[];
  readonly #fixed: readonly Node[];
  readonly #owned: Storage[] = [];
  /** The set holding the latest state (0: A, 1: B). */
  #current: 0 | 1 = 0;
  #optStep: number;
  #synced = true;
  #installed: Map<string, Node>;
  /** The optimiser's {@link Optimizer.stateVersion} when its state was last the replay's (creation, sync). */
  #syncVersion: number;
  /** The model's parameters and training modes the replay was traced with (see {@link modelFacts}). */
  #facts: unknown[];
  #disposed = false;

  /** Binds `trace` (already checked with {@link replayBlocker}) for replay, starting from `opt`'s state. */
  static async create(be: Backend, trace: TracedStep, opt: Optimizer): Promise<ReplayedStep> {
    const r = new ReplayedStep(be, trace, opt);
    // Set A starts as a copy of the state the trace committed (the optimiser keeps owning its own tensors).
    const rec = trace.rec;
    const copies = [...trace.packedRoot].map(([key, root]) => {
      const buf = rec.plan.buffers[rec.plan.roots[root]];
      return { src: rec.roots[root], dst: r.#sets[0].get(key)!, dtype: buf.dtype, n: buf.size };
    });
    await copyStorages(be, copies);
    return r;
  }

  private constructor(be: Backend, trace: TracedStep, opt: Optimizer) {
    this.#be = be;
    const { rec, roles } = trace;
    const plan = rec.plan;
    const alloc = (dtype: DType, n: number) => {
      const s = be.alloc(dtype, n);
      this.#owned.push(s);
      return s;
    };
    this.#sets = [new Map(), new Map()];
    for (const [key, root] of trace.packedRoot) {
      const b = plan.buffers[plan.roots[root]];
      this.#packedShape.set(key, { shape: b.shape, dtype: b.dtype });
      this.#sets[0].set(key, alloc(b.dtype, b.size));
      this.#sets[1].set(key, alloc(b.dtype, b.size));
    }
    const vb = plan.buffers[plan.roots[trace.vectorRoot]];
    this.#vector = alloc(vb.dtype, vb.size);
    this.#vectorShape = vb.shape;
    let scalars: Storage | null = null;
    const fixed: Node[] = [];
    const leaves = (set: 0 | 1) =>
      roles.map((role, i) => {
        const n = rec.leafNodes[i];
        switch (role.kind) {
          case "state":
            return this.#sets[set].get(role.pack)!;
          case "batch": {
            let slot = this.#batch.find((b) => b.name === role.name);
            if (slot === undefined) {
              const bounds = boundsOf(n.storage!);
              slot = {
                name: role.name,
                dtype: n.dtype,
                shape: n.shape,
                device: n.device,
                storage: alloc(n.dtype, n.size),
                bounds,
              };
              this.#batch.push(slot);
            }
            return slot.storage;
          }
          case "scalars":
            scalars ??= alloc(n.dtype, n.size);
            return scalars;
          case "fixed":
            if (set === 0) fixed.push(n);
            return rec.leaves[i];
        }
      });
    const outputs = (set: 0 | 1) => {
      const m = new Map<number, Storage>([[trace.vectorRoot, this.#vector]]);
      for (const [key, root] of trace.packedRoot) m.set(root, this.#sets[set].get(key)!);
      return m;
    };
    const first = new BoundPlan(be, plan, { leaves: leaves(0), params: rec.params, outputs: outputs(1) });
    const second = new BoundPlan(be, plan, {
      leaves: leaves(1),
      params: rec.params,
      outputs: outputs(0),
      shareWith: first,
    });
    this.#bound = [first, second];
    this.#scalars = scalars;
    this.#sameBatch = trace.sameBatch;
    this.#fixed = fixed;
    this.#optStep = opt.stepCount;
    this.#syncVersion = opt.stateVersion;
    this.#installed = installedNodes(opt);
    this.#facts = modelFacts(opt.target);
    abandoned.register(this, { bound: this.#bound, owned: this.#owned }, this);
  }

  /**
   * Whether the replay still describes the model: nobody changed the optimiser's state since the last sync, the
   * model's parameters and training modes are those it was traced with (nobody loaded others or switched a mode), and
   * no fixed input was disposed.
   */
  valid(opt: Optimizer): boolean {
    // The model's facts hold every parameter's node, so they cover ownsModel's parameter check in one walk.
    if (this.#disposed || opt.stateVersion !== this.#syncVersion) return false;
    const facts = modelFacts(opt.target);
    if (facts.length !== this.#facts.length || facts.some((f, i) => f !== this.#facts[i])) return false;
    return this.#fixed.every((n) => n.storage !== null && !n.storage.released);
  }

  /**
   * Whether the optimiser's parameters and state are still the tensors this replay installed at its last sync,
   * at the same step count (nobody loaded others, e.g. with `loadParameters` or `loadState`).
   */
  ownsModel(opt: Optimizer): boolean {
    const params = opt.params;
    for (const [path, node] of this.#installed) if (params[path]?.node !== node) return false;
    return opt.stateVersion === this.#syncVersion;
  }

  /**
   * Whether `batch` has the names, shapes, dtypes and devices the replayed step was traced with, and one tensor
   * under the names that held one tensor then (the step reads it once). A batch that does not fit is traced, so
   * that building the step refuses what it refuses (a tensor on another device than the model's) with the same
   * error.
   */
  fits(batch: Readonly<Record<string, Tensor>>): boolean {
    const names = Object.keys(batch);
    if (names.length < this.#batch.length) return false;
    for (const [a, b] of this.#sameBatch) if (batch[a] !== batch[b]) return false;
    return this.#batch.every((b) => {
      const t = batch[b.name];
      return t instanceof Tensor && t.device === b.device && t.dtype === b.dtype &&
        t.shape.join() === b.shape.join();
    });
  }

  /**
   * Runs one step on `batch` (checked with {@link fits}) with the optimiser's step scalars for learning-rate
   * factor `lrScale`; returns the step's metrics vector (a fresh tensor owned by the caller). Throws what the
   * traced step throws for a factor or batch values it refuses, before the step counts.
   */
  async run(batch: Readonly<Record<string, Tensor>>, opt: Optimizer, lrScale: number): Promise<Tensor> {
    const be = this.#be;
    const step = this.#optStep + 1;
    // The optimiser refuses a factor its update refuses (negative, NaN) with the update's message.
    const scalars = opt.stepScalars(step, lrScale);
    const copies = [];
    // A lazy entry is computed into a buffer of the step's own, and stays lazy (as the traced step leaves it).
    const computed: Tensor[] = [];
    try {
      for (const b of this.#batch) {
        let t = batch[b.name];
        if (!t.isRealized) {
          t = new Tensor(t.node);
          computed.push(t);
          await realize(t);
        }
        const st = t.node.storage!;
        if (st instanceof HostStorage && st.host !== null) {
          // The graph is not built again, so the checks its ops made of the traced batch are made here.
          for (const bound of b.bounds) {
            const err = outOfBound(st.host, t.shape, bound, `batch "${b.name}" (${bound.op})`);
            if (err !== null) throw err;
          }
          await writeStorage(be, b.storage, b.dtype, st.host);
        } else copies.push({ src: resolveStorage(st, be), dst: b.storage, dtype: b.dtype, n: t.size });
      }
      await copyStorages(be, copies);
    } finally {
      for (const t of computed) t.dispose();
    }
    if (this.#scalars !== null) await writeStorage(be, this.#scalars, "f32", scalars);
    // The metrics vector is copied out in the same submission (the next replay overwrites it).
    const out = be.alloc("f32", this.#vectorShape.reduce((a, b) => a * b, 1));
    await this.#bound[this.#current].run([[this.#vector, out]]);
    this.#optStep = step;
    this.#current = this.#current === 0 ? 1 : 0;
    this.#synced = false;
    return new Tensor(bufferNode(out, this.#vectorShape, "f32"));
  }

  /** Hands copies of the latest state to the optimiser (and so to the model), if the replay ran since. */
  async sync(opt: Optimizer): Promise<void> {
    if (this.#synced || this.#disposed) return;
    opt.adopt(await this.snapshot(), this.#optStep);
    this.#installed = installedNodes(opt);
    this.#syncVersion = opt.stateVersion;
    this.#facts = modelFacts(opt.target);
    this.#synced = true;
  }

  /**
   * Copies of the latest parameters and optimiser state, one `[1 + slots, total]` tensor per pack key (as
   * {@link Optimizer.adopt} takes them), owned by the caller; the optimiser is left as it is.
   */
  async snapshot(): Promise<Record<string, Tensor>> {
    if (this.#disposed) throw new Error("ReplayedStep: snapshot() after dispose()");
    const be = this.#be;
    const set = this.#sets[this.#current];
    const packed: Record<string, Tensor> = {};
    const copies = [];
    for (const [key, { shape, dtype }] of this.#packedShape) {
      const n = shape.reduce((a, b) => a * b, 1);
      const dst = be.alloc(dtype, n);
      copies.push({ src: set.get(key)!, dst, dtype, n });
      packed[key] = new Tensor(bufferNode(dst, shape, dtype));
    }
    await copyStorages(be, copies);
    return packed;
  }

  /** Steps the optimiser has taken, counting the replayed ones. */
  get stepCount(): number {
    return this.#optStep;
  }

  /** Frees the replay's buffers and bindings. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    abandoned.unregister(this);
    for (const b of this.#bound) b.dispose();
    for (const s of this.#owned) s.release();
  }
}

function installedNodes(opt: Optimizer): Map<string, Node> {
  return new Map(Object.entries(opt.params).map(([p, t]) => [p, t.node]));
}
