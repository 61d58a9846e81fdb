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
 * A step that accumulates gradients over k micro-batches (the trainer's `accumulate`) is k realizations of one
 * micro-batch graph (parameters, micro-batch and the running sums in, the new sums out) and one of the update graph
 * (parameters, state and the sums in). The replay binds the micro-batch plan once per set of state buffers and per
 * pair of sum buffers it may read and write: zeros for the first micro-batch, then two sets in turn (zeros → A,
 * A → B, B → A, ...), and binds the update to the set the last micro-batch writes. Its intermediates are those of
 * one micro-batch: the activations of the others are never alive at the same time.
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
  | { readonly kind: "acc"; readonly name: string }
  | { readonly kind: "fixed" };

/** One traced realization: its recording, the role of each leaf, and the batch names that held one tensor. */
export interface TracedRun {
  /** The realization's recording. */
  readonly rec: Recording;
  /** Role of each leaf slot. */
  readonly roles: readonly LeafRole[];
  /** Pairs of batch names that held one tensor (the first name is the one in {@link roles}). */
  readonly sameBatch: readonly (readonly [string, string])[];
}

/** A traced micro-batch of an accumulating step: the running sums' new values by name (root index). */
export interface MicroTrace extends TracedRun {
  /** Root index of each running sum (a gradient by parameter path, the loss and metrics). */
  readonly accRoot: ReadonlyMap<string, number>;
}

/** A traced step (its update's realization), and which roots hold what. */
export interface TracedStep extends TracedRun {
  /** The micro-batches of an accumulating step, in order (empty: the update's realization reads the batch). */
  readonly micro: readonly MicroTrace[];
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
 * each batch tensor's storage to its name, `scalars` is the storage of the optimiser's uploaded step scalars (null:
 * none read), `acc` each running sum's storage to its name.
 */
export function leafRoles(
  rec: Recording,
  state: ReadonlyMap<Storage, string>,
  batch: ReadonlyMap<Storage, string>,
  scalars: Storage | null,
  acc: ReadonlyMap<Storage, string> = new Map(),
): LeafRole[] {
  return rec.leafNodes.map((n): LeafRole => {
    const s = n.storage!;
    const pack = state.get(s);
    if (pack !== undefined) return { kind: "state", pack };
    const name = batch.get(s);
    if (name !== undefined) return { kind: "batch", name };
    if (s === scalars) return { kind: "scalars" };
    const sum = acc.get(s);
    if (sum !== undefined) return { kind: "acc", name: sum };
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
  const why = runBlocker(prev, cur);
  if (why !== null) return why;
  const b = cur.rec;
  const seen = new Set<string>();
  for (let i = 0; i < b.leafNodes.length; i++) {
    const role = cur.roles[i];
    if (role.kind !== "state") continue;
    seen.add(role.pack);
    const root = cur.packedRoot.get(role.pack);
    const leaf = b.leafNodes[i];
    const out = root === undefined ? undefined : b.plan.buffers[b.plan.roots[root]];
    if (out === undefined || out.shape.join() !== leaf.shape.join() || out.dtype !== leaf.dtype) {
      return `the update of pack "${role.pack}" does not have the layout of its input`;
    }
  }
  if (seen.size !== packs.length) return "some parameter packs are not read by the step";
  if (prev.micro.length !== cur.micro.length) return "the number of micro-batches changed";
  // Every micro-batch of a step replays one plan: each is compared with the one before (the first with the previous
  // step's last).
  for (let j = 0; j < cur.micro.length; j++) {
    const m = runBlocker(j === 0 ? prev.micro[prev.micro.length - 1] : cur.micro[j - 1], cur.micro[j]);
    if (m !== null) return `micro-batch ${j}: ${m}`;
  }
  return null;
}

/** Why two traced realizations do not replay one bound plan (null: they do). */
function runBlocker(prev: TracedRun, cur: TracedRun): string | null {
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
    }
    if (rb.kind === "batch" && rb.name !== (ra as { name: string }).name) return "batch leaves do not match";
    if (rb.kind === "acc" && rb.name !== (ra as { name: string }).name) return "running sums do not match";
  }
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

/** The buffers a running sum of an accumulating step lives in: zeros, A and B (see the module comment). */
interface SumBuffers {
  readonly dtype: DType;
  readonly size: number;
  /** Zeros (read by the first micro-batch), then the two buffers written in turn. */
  readonly at: readonly [Storage, Storage, Storage];
}

/** A traced step bound for replay (see the module comment). */
export class ReplayedStep {
  readonly #be: Backend;
  readonly #bound: [BoundPlan, BoundPlan];
  readonly #sets: [Map<string, Storage>, Map<string, Storage>];
  readonly #packedShape = new Map<string, { shape: readonly number[]; dtype: DType }>();
  /** The slots of the batch entries, read by the update or, when the step accumulates, by each micro-batch. */
  readonly #batch: BatchSlot[] = [];
  readonly #sameBatch: TracedStep["sameBatch"];
  readonly #scalars: Storage | null;
  readonly #vector: Storage;
  readonly #vectorShape: readonly number[];
  readonly #fixed: readonly Node[];
  readonly #owned: Storage[] = [];
  /** The running sums of an accumulating step, by name. */
  readonly #sums = new Map<string, SumBuffers>();
  /** The micro-batch plan bound per state set and per sums read (zeros, A, B); empty without accumulation. */
  readonly #micro: (readonly BoundPlan[])[] = [];
  /** Micro-batches per step (1: the update reads the batch). */
  readonly #microCount: number;
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
    for (const { dtype, size, at } of r.#sums.values()) {
      await writeStorage(be, at[0], dtype, new (dtype === "f32" ? Float32Array : Int32Array)(size));
    }
    return r;
  }

  private constructor(be: Backend, trace: TracedStep, opt: Optimizer) {
    this.#be = be;
    const plan = trace.rec.plan;
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
    const micro = trace.micro.length > 0 ? trace.micro[0] : null;
    this.#microCount = Math.max(1, trace.micro.length);
    for (const [name, root] of micro?.accRoot ?? []) {
      const { dtype, size } = micro!.rec.plan.buffers[micro!.rec.plan.roots[root]];
      this.#sums.set(name, { dtype, size, at: [alloc(dtype, size), alloc(dtype, size), alloc(dtype, size)] });
    }
    let scalars: Storage | null = null;
    const fixed = new Set<Node>();
    // The leaves of a binding of `run` over state set `set`, its running sums read from buffer `sum` of each.
    const leaves = (run: TracedRun, set: 0 | 1, sum: number) =>
      run.roles.map((role, i) => {
        const n = run.rec.leafNodes[i];
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
          case "acc": {
            const buffers = this.#sums.get(role.name);
            if (buffers === undefined) {
              throw new Error(`ReplayedStep: no micro-batch writes the sum "${role.name}"`);
            }
            return buffers.at[sum];
          }
          case "fixed":
            fixed.add(n);
            return run.rec.leaves[i];
        }
      });
    if (micro !== null) {
      // A micro-batch reading the zeros or B writes A; one reading A writes B.
      const next = [1, 2, 1];
      const outputs = (from: number) =>
        new Map([...micro.accRoot].map(([name, root]) => [root, this.#sums.get(name)!.at[next[from]]]));
      let first: BoundPlan | undefined;
      for (const set of [0, 1] as const) {
        this.#micro.push([0, 1, 2].map((from) => {
          const bound = new BoundPlan(be, micro.rec.plan, {
            leaves: leaves(micro, set, from),
            params: micro.rec.params,
            outputs: outputs(from),
            shareWith: first,
          });
          first ??= bound;
          return bound;
        }));
      }
    }
    // The last micro-batch wrote A when their count is odd, B when it is even.
    const last = this.#microCount % 2 === 1 ? 1 : 2;
    const outputs = (set: 0 | 1) => {
      const m = new Map<number, Storage>([[trace.vectorRoot, this.#vector]]);
      for (const [key, root] of trace.packedRoot) m.set(root, this.#sets[set].get(key)!);
      return m;
    };
    const rec = trace.rec;
    const first = new BoundPlan(be, plan, {
      leaves: leaves(trace, 0, last),
      params: rec.params,
      outputs: outputs(1),
    });
    const second = new BoundPlan(be, plan, {
      leaves: leaves(trace, 1, last),
      params: rec.params,
      outputs: outputs(0),
      shareWith: first,
    });
    this.#bound = [first, second];
    this.#scalars = scalars;
    this.#sameBatch = (micro ?? trace).sameBatch;
    this.#fixed = [...fixed];
    this.#optStep = opt.stepCount;
    this.#syncVersion = opt.stateVersion;
    this.#installed = installedNodes(opt);
    this.#facts = modelFacts(opt.target);
    const bound = [...this.#bound, ...this.#micro.flat()];
    abandoned.register(this, { bound, owned: this.#owned }, this);
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
   * Runs one step on `batches` (one per micro-batch, each checked with {@link fits}) with the optimiser's step
   * scalars for learning-rate factor `lrScale`; returns the step's metrics vector (a fresh tensor owned by the
   * caller). Throws what the traced step throws for a factor or batch values it refuses, before the step counts.
   */
  async run(
    batches: readonly Readonly<Record<string, Tensor>>[],
    opt: Optimizer,
    lrScale: number,
  ): Promise<Tensor> {
    if (batches.length !== this.#microCount) {
      throw new Error(`ReplayedStep: ${batches.length} micro-batches for a step of ${this.#microCount}`);
    }
    const be = this.#be;
    const step = this.#optStep + 1;
    // The optimiser refuses a factor its update refuses (negative, NaN) with the update's message.
    const scalars = opt.stepScalars(step, lrScale);
    if (this.#micro.length === 0) await this.#writeBatch(batches[0]);
    else {
      // Micro-batch j reads the zeros (j = 0), A (odd j) or B (even j > 0); each write of a micro-batch is queued
      // after the run of the one before.
      for (let j = 0; j < batches.length; j++) {
        await this.#writeBatch(batches[j]);
        await this.#micro[this.#current][j === 0 ? 0 : j % 2 === 1 ? 1 : 2].run();
      }
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

  /** Writes `batch`'s entries into the batch slots, checking the values the traced step's ops checked. */
  async #writeBatch(batch: Readonly<Record<string, Tensor>>): Promise<void> {
    const be = this.#be;
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
    for (const b of [...this.#bound, ...this.#micro.flat()]) b.dispose();
    for (const s of this.#owned) s.release();
  }
}

function installedNodes(opt: Optimizer): Map<string, Node> {
  return new Map(Object.entries(opt.params).map(([p, t]) => [p, t.node]));
}
