/**
 * The optimiser base class: parameter selection and groups, device-resident state, and the lazy update that is
 * realized in one submission per step.
 *
 * An optimiser works on a *target* (a module, or any tree or record of tensors). It selects the trainable
 * parameters by path, splits them into groups with their own learning rate and weight decay (LoRA+ trains `B`
 * with a larger rate), and keeps its state (momenta, second moments) as device tensors keyed by path. A step
 * builds the new parameters and state as one lazy expression per tensor, with the step-dependent scalars
 * (scheduled learning rate, bias corrections) in one small uploaded tensor, so every step compiles to the same
 * kernels; `step()` realizes them together, puts the new parameters into the target (everywhere the old tensors
 * occurred) and disposes the old parameter and state buffers, so device memory stays flat.
 *
 * @module
 */
import type { DeviceName } from "../../ir/node.ts";
import { stack, tensor, zeros } from "../../tensor/creation.ts";
import { realize, Tensor } from "../../tensor/tensor.ts";
import type { F32 } from "../linear.ts";
import {
  checkDistinctParameters,
  getAt,
  namedParameters,
  type ParamDict,
  type ParamFilter,
  paramFilter,
  replaceTensors,
} from "../module.ts";

/** Parameters that share a learning rate and weight decay. */
export interface ParamGroup {
  /** Name of the group, used in metrics (`grad_norm/<name>`) and checkpoints. Not `"default"`. */
  name: string;
  /** Which trainable parameters belong to it (the first group that matches a path wins). */
  params: ParamFilter;
  /** Learning rate of the group (default: the optimiser's). */
  lr?: number;
  /** Weight decay of the group (default: the optimiser's). */
  weightDecay?: number;
}

/** Options shared by every optimiser. */
export interface OptimizerOptions {
  /** Learning rate (of the default group). */
  lr: number;
  /** Weight decay (of the default group; its meaning depends on the optimiser). */
  weightDecay?: number;
  /** Which parameters of the target to train (default: all). The others are left alone (frozen). */
  trainable?: ParamFilter;
  /** Groups with their own rate or decay; trainable parameters that match none form the `"default"` group. */
  groups?: readonly ParamGroup[];
}

/** A group after matching: its settings and the paths of its parameters. */
export interface ResolvedGroup {
  /** Group name (`"default"` for the unmatched parameters). */
  readonly name: string;
  /** Base learning rate (before the schedule's factor). */
  readonly lr: number;
  /** Weight decay. */
  readonly weightDecay: number;
  /** Paths of the group's parameters. */
  readonly paths: readonly string[];
}

/** Options of {@link Optimizer.update}. */
export interface UpdateOptions {
  /** Factor applied to every group's learning rate for this step (a schedule's value; default 1). */
  lrScale?: number;
}

/** Options of {@link Optimizer.step}. */
export interface StepOptions extends UpdateOptions {
  /** Further tensors to compute in the same submission (the loss, metrics that read the old parameters). */
  realize?: readonly Tensor[];
}

/**
 * The lazy result of {@link Optimizer.update}: realize `tensors`, then {@link Optimizer.commit}. `params` and
 * `state` are lazy views meant for use in the same `realize` (e.g. metrics of the new parameters); after
 * `commit`, read the optimiser's `params` instead.
 */
export interface PendingUpdate {
  /** The step this update makes (1 for the first). */
  readonly step: number;
  /** New parameter values by path. */
  readonly params: ParamDict;
  /** New state by slot and path. */
  readonly state: Readonly<Record<string, ParamDict>>;
  /**
   * Per parameter, the one tensor holding the new value and state stacked (`[1 + slots, ...shape]`; just the
   * new value when the optimiser has no state), so each parameter's update is one kernel.
   */
  readonly packed: Readonly<Record<string, Tensor>>;
  /** The packed tensors: pass them all to one `realize`. */
  readonly tensors: readonly Tensor[];
  /** The uploaded step scalars the update reads (see {@link Optimizer.stepScalars}). */
  readonly scalars: Tensor;
}

/** Step scalars of one group, as scalar device tensors keyed by name. */
export type GroupScalars = Readonly<Record<string, Tensor<[], "f32">>>;

/** What an update rule returns for one parameter. */
export interface RuleResult {
  /** The new parameter. */
  param: F32;
  /** The new state, one tensor per slot, in slot order. */
  state: F32[];
}

function checkRate(what: string, v: number): number {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${what} must be a finite number >= 0, got ${v}`);
  return v;
}

/**
 * Base class of the optimisers. Subclasses name their state slots and per-step scalars and give the update
 * rule of one parameter; everything else (groups, state, realization, disposal, checkpoints) is here.
 */
export abstract class Optimizer {
  #target: object;
  #paths: string[];
  #groups: ResolvedGroup[];
  #groupIndex = new Map<string, number>();
  #slots: readonly string[];
  #scalarNames: readonly string[];
  #state = new Map<string, Map<string, Tensor>>();
  #device: DeviceName;
  #step = 0;
  #hyper: Tensor | null = null;
  #packed = new Map<string, Tensor>();

  /**
   * Selects the trainable parameters of `target` and builds the groups.
   *
   * @param target A module or a tree/record of tensors; its tensors are replaced by each step.
   * @param options Learning rate, weight decay, trainable filter and groups.
   * @param slots Names of the per-parameter state tensors (e.g. `exp_avg`, `exp_avg_sq`).
   * @param scalarNames Names of the per-group step scalars the rule reads.
   */
  protected constructor(
    target: object,
    options: OptimizerOptions,
    slots: readonly string[],
    scalarNames: readonly string[],
  ) {
    const what = this.constructor.name;
    checkRate(`${what}: lr`, options.lr);
    checkRate(`${what}: weightDecay`, options.weightDecay ?? 0);
    this.#target = target;
    this.#slots = slots;
    this.#scalarNames = scalarNames;
    const named = namedParameters(target, { filter: options.trainable });
    if (named.length === 0) throw new Error(`${what}: the target has no trainable parameters`);
    checkDistinctParameters(named, what);
    const devices = new Set(named.map(([, t]) => t.device));
    if (devices.size !== 1) {
      throw new Error(`${what}: trainable parameters are on several devices: ${[...devices]}`);
    }
    this.#device = named[0][1].device;
    for (const [path, t] of named) {
      if (t.dtype !== "f32") {
        throw new TypeError(`${what}: parameter "${path}" is ${t.dtype}; only f32 is trained`);
      }
    }
    this.#paths = named.map(([p]) => p);
    const userGroups = options.groups ?? [];
    const filters = userGroups.map((g) => {
      if (g.name === "default") throw new RangeError(`${what}: the group name "default" is reserved`);
      return paramFilter(g.params);
    });
    const members: string[][] = userGroups.map(() => []);
    const rest: string[] = [];
    for (const [path, t] of named) {
      const k = filters.findIndex((f) => f(path, t));
      if (k >= 0) members[k].push(path);
      else rest.push(path);
    }
    this.#groups = [];
    userGroups.forEach((g, k) => {
      if (members[k].length === 0) {
        throw new RangeError(
          `${what}: group "${g.name}" matches no trainable parameter (trainable: ${
            this.#paths.slice(0, 6).join(", ")
          }` +
            `${this.#paths.length > 6 ? ", ..." : ""})`,
        );
      }
      this.#groups.push({
        name: g.name,
        lr: checkRate(`${what}: lr of group "${g.name}"`, g.lr ?? options.lr),
        weightDecay: checkRate(
          `${what}: weightDecay of group "${g.name}"`,
          g.weightDecay ?? options.weightDecay ?? 0,
        ),
        paths: members[k],
      });
    });
    if (rest.length > 0) {
      this.#groups.push({
        name: "default",
        lr: options.lr,
        weightDecay: options.weightDecay ?? 0,
        paths: rest,
      });
    }
    this.#groups.forEach((g, i) => g.paths.forEach((p) => this.#groupIndex.set(p, i)));
    for (const slot of slots) {
      this.#state.set(
        slot,
        new Map(named.map(([p, t]) => [p, zeros(t.shape, { device: t.device }) as Tensor])),
      );
    }
  }

  /** Name of the algorithm (stored in checkpoints). */
  abstract get name(): string;

  /** The constant hyperparameters (betas, momentum, ...), stored in checkpoints. */
  abstract get hyperparameters(): Record<string, number | boolean>;

  /** The per-group scalars of step `step` (1-based) with learning-rate factor `lrScale`, in `scalarNames` order. */
  protected abstract scalars(group: ResolvedGroup, step: number, lrScale: number): number[];

  /** The update of one parameter `p` with gradient `g` and state `state` (one tensor per slot). */
  protected abstract rule(
    p: F32,
    g: F32,
    state: F32[],
    scalars: GroupScalars,
    group: ResolvedGroup,
  ): RuleResult;

  /** The tree or module whose parameters this optimiser updates. */
  get target(): object {
    return this.#target;
  }

  /** The current trainable parameters by path (read from the target). */
  get params(): ParamDict {
    const out: ParamDict = {};
    for (const path of this.#paths) {
      const t = getAt(this.#target, path);
      if (!(t instanceof Tensor)) {
        throw new Error(
          `${this.name}: the target no longer has a tensor at "${path}" (was a layer replaced after the ` +
            `optimiser was created? create the optimiser after changing the model)`,
        );
      }
      out[path] = t;
    }
    return out;
  }

  /** Paths of the trainable parameters. */
  get paths(): readonly string[] {
    return this.#paths;
  }

  /** The groups, with their parameters. */
  get groups(): readonly ResolvedGroup[] {
    return this.#groups;
  }

  /** Names of the state slots. */
  get slots(): readonly string[] {
    return this.#slots;
  }

  /** Steps taken so far. */
  get stepCount(): number {
    return this.#step;
  }

  /** The group a parameter belongs to. */
  groupOf(path: string): ResolvedGroup {
    const i = this.#groupIndex.get(path);
    if (i === undefined) throw new RangeError(`${this.name}: "${path}" is not a trainable parameter`);
    return this.#groups[i];
  }

  /** The learning rate of each group at step `step` (1-based) for a schedule factor `lrScale`. */
  learningRates(lrScale = 1): Record<string, number> {
    return Object.fromEntries(this.#groups.map((g) => [g.name, g.lr * lrScale]));
  }

  /**
   * Builds the new parameters and state (lazily; nothing runs). Realize `tensors` of the result in one call
   * together with anything else that reads the current parameters, then {@link commit} it.
   */
  update(grads: ParamDict, opts: UpdateOptions = {}): PendingUpdate {
    const lrScale = opts.lrScale ?? 1;
    if (!Number.isFinite(lrScale) || lrScale < 0) {
      throw new RangeError(`${this.name}: lrScale must be a finite number >= 0, got ${lrScale}`);
    }
    const missing = this.#paths.filter((p) => !(grads[p] instanceof Tensor));
    if (missing.length > 0) {
      throw new RangeError(
        `${this.name}: no gradient for ${missing.length} parameter(s): ${missing.slice(0, 5).join(", ")}` +
          `${missing.length > 5 ? ", ..." : ""}`,
      );
    }
    const step = this.#step + 1;
    const names = this.#scalarNames;
    const values = this.stepScalars(step, lrScale);
    this.#hyper?.dispose();
    const hyper = tensor(values, { shape: [values.length], device: this.#device }) as F32;
    this.#hyper = hyper;
    const groupScalars: GroupScalars[] = this.#groups.map((_, gi) =>
      Object.fromEntries(names.map((n, j) => [n, hyper.slice(gi * names.length + j) as Tensor<[], "f32">]))
    );
    const current = this.params;
    const params: ParamDict = {};
    const state: Record<string, ParamDict> = Object.fromEntries(this.#slots.map((s) => [s, {}]));
    const packed: Record<string, Tensor> = {};
    for (const path of this.#paths) {
      const p = current[path] as F32;
      const g = grads[path] as F32;
      if (g.shape.join() !== p.shape.join() || g.dtype !== p.dtype) {
        throw new RangeError(
          `${this.name}: gradient of "${path}" is [${g.shape.join(", ")}] ${g.dtype}, the parameter is ` +
            `[${p.shape.join(", ")}] ${p.dtype}`,
        );
      }
      const gi = this.#groupIndex.get(path)!;
      const old = this.#slots.map((s) => this.#state.get(s)!.get(path)! as F32);
      const r = this.rule(p, g, old, groupScalars[gi], this.#groups[gi]);
      if (this.#slots.length === 0) {
        packed[path] = r.param;
        params[path] = r.param;
      } else {
        const all = stack([r.param, ...r.state]) as F32;
        packed[path] = all;
        params[path] = all.slice(0);
        this.#slots.forEach((s, k) => (state[s][path] = all.slice(k + 1)));
      }
    }
    return { step, params, state, packed, tensors: Object.values(packed), scalars: hyper };
  }

  /**
   * The step scalars an update of step `step` (1-based) with learning-rate factor `lrScale` uploads, group after
   * group in the order of the rule's scalar names. A compiled training step writes these into its replayed
   * update's input instead of building the update again.
   */
  stepScalars(step: number, lrScale = 1): Float32Array {
    const names = this.#scalarNames;
    const values = new Float32Array(Math.max(1, this.#groups.length * names.length));
    this.#groups.forEach((g, gi) => {
      const v = this.scalars(g, step, lrScale);
      v.forEach((x, j) => (values[gi * names.length + j] = x));
    });
    return values;
  }

  /**
   * Makes a realized update current: its parameters replace the old ones in the target (everywhere they
   * occur) and its state replaces the old state; the old parameter and state buffers are disposed.
   */
  commit(update: PendingUpdate): void {
    if (update.step !== this.#step + 1) {
      throw new Error(
        `${this.name}: this update is for step ${update.step}, but step ${this.#step + 1} is next`,
      );
    }
    if (update.tensors.some((t) => !t.isRealized)) {
      throw new Error(`${this.name}: realize(...update.tensors) before commit()`);
    }
    this.#install(update.packed, update.step);
  }

  /**
   * Makes realized packed tensors current as of step `step`, as {@link commit} does (each is
   * `[1 + slots, ...shape]` per path, or just the parameter without slots): a compiled training step that ran
   * several updates without building them hands over its latest state this way.
   */
  adopt(packed: Readonly<Record<string, Tensor>>, step: number): void {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`${this.name}: bad step ${step}`);
    const current = this.params;
    for (const path of this.#paths) {
      const t = packed[path];
      const want = this.#slots.length === 0
        ? current[path].shape.join()
        : [1 + this.#slots.length, ...current[path].shape].join();
      if (!(t instanceof Tensor) || !t.isRealized || t.shape.join() !== want) {
        throw new RangeError(`${this.name}: adopt() needs a realized [${want}] tensor for "${path}"`);
      }
    }
    this.#install(packed, step);
  }

  #install(packed: Readonly<Record<string, Tensor>>, step: number): void {
    const tensors = this.#paths.map((p) => packed[p]);
    const current = this.params;
    const keep = new Set(tensors.map((t) => t.node));
    const retired: Tensor[] = [];
    const swap = new Map<Tensor, Tensor>();
    for (const path of this.#paths) {
      const all = packed[path];
      // Fresh views of the realized buffer (views made before realization still point at the expression).
      const next = this.#slots.length === 0 ? all : all.slice(0);
      swap.set(current[path], next);
      retired.push(current[path]);
      this.#slots.forEach((s, k) => {
        const m = this.#state.get(s)!;
        retired.push(m.get(path)!);
        m.set(path, all.slice(k + 1));
      });
      const before = this.#packed.get(path);
      if (before !== undefined) retired.push(before);
      if (this.#slots.length > 0) this.#packed.set(path, all);
    }
    replaceTensors(this.#target, swap);
    this.#dispose(retired, keep);
    this.#hyper?.dispose();
    this.#hyper = null;
    this.#step = step;
  }

  #dispose(tensors: readonly Tensor[], keep: ReadonlySet<unknown>): void {
    const done = new Set<unknown>();
    for (const t of tensors) {
      if (!t.isRealized || keep.has(t.node) || done.has(t.node)) continue;
      done.add(t.node);
      t.dispose();
    }
  }

  /**
   * One step: {@link update}, one `realize` of the new parameters and state together with `opts.realize`,
   * then {@link commit}. Returns the new parameters.
   *
   * @example
   * ```ts
   * import { valueAndGrad } from "../../autodiff/mod.ts";
   * import { randn } from "../../tensor/creation.ts";
   * import { Linear } from "../linear.ts";
   * import { functionalCall, type ParamDict } from "../module.ts";
   * import { SGD } from "./sgd.ts";
   * const layer = new Linear(4, 1, { seed: 0 });
   * const x = randn([8, 4], { seed: 1 });
   * const opt = new SGD(layer, { lr: 0.1, momentum: 0.9 });
   * const lossOf = (p: ParamDict) => functionalCall(layer, p, () => layer.forward(x).square().mean());
   * const { value, grads } = valueAndGrad(lossOf)(opt.params);
   * await opt.step(grads, { realize: [value] });
   * ```
   */
  async step(grads: ParamDict, opts: StepOptions = {}): Promise<ParamDict> {
    const pending = this.update(grads, opts);
    await realize(...pending.tensors, ...(opts.realize ?? []));
    this.commit(pending);
    return this.params;
  }

  /** The state as a flat record keyed `<slot>.<path>` (e.g. `exp_avg.layers.0.weight`), for checkpoints. */
  stateDict(): ParamDict {
    const out: ParamDict = {};
    for (const s of this.#slots) for (const [p, t] of this.#state.get(s)!) out[`${s}.${p}`] = t;
    return out;
  }

  /**
   * Restores the state saved by {@link stateDict} and the step count (the parameters are loaded into the
   * target separately). Every slot of every trainable parameter must be present with the right shape.
   */
  loadState(state: ParamDict, step: number): void {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`${this.name}: bad step ${step}`);
    const expected = new Set<string>();
    const next = new Map<string, Map<string, Tensor>>();
    for (const s of this.#slots) {
      const m = new Map<string, Tensor>();
      for (const p of this.#paths) {
        const key = `${s}.${p}`;
        expected.add(key);
        const t = state[key];
        const cur = this.#state.get(s)!.get(p)!;
        if (!(t instanceof Tensor)) throw new RangeError(`${this.name}: the saved state has no "${key}"`);
        if (t.shape.join() !== cur.shape.join() || t.dtype !== cur.dtype || t.device !== cur.device) {
          throw new RangeError(
            `${this.name}: saved state "${key}" is [${
              t.shape.join(", ")
            }] ${t.dtype} on ${t.device}, expected ` +
              `[${cur.shape.join(", ")}] ${cur.dtype} on ${cur.device}`,
          );
        }
        m.set(p, t);
      }
      next.set(s, m);
    }
    const extra = Object.keys(state).filter((k) => !expected.has(k));
    if (extra.length > 0) {
      throw new RangeError(
        `${this.name}: the saved state has entries for parameters this optimiser does not train: ` +
          `${extra.slice(0, 5).join(", ")}${extra.length > 5 ? ", ..." : ""}`,
      );
    }
    const keep = new Set<unknown>(Object.values(state).map((t) => t.node));
    const retired = [...this.#state.values()].flatMap((m) => [...m.values()]);
    this.#state = next;
    this.#dispose(retired, keep);
    this.#step = step;
  }

  /** A JSON-able description: name, hyperparameters and groups (with parameter counts). */
  describe(): Record<string, unknown> {
    return {
      name: this.name,
      hyperparameters: this.hyperparameters,
      groups: this.#groups.map((g) => ({
        name: g.name,
        lr: g.lr,
        weightDecay: g.weightDecay,
        params: g.paths.length,
      })),
    };
  }
}
