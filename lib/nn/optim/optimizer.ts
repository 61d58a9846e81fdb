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
 * Parameters are updated in *packs*: the parameters of a group, in order, up to `paramsPerPack` of them (the
 * device's choice, {@link PARAMS_PER_PACK}) and {@link PACK_MAX_ELEMENTS} elements, keep their values and state
 * flattened side by side in one buffer `[1 + slots, total]`, so a pack's update is one kernel (reading the
 * gradients of its parameters) and every parameter and state tensor between steps is a view of its pack. Adam's
 * and SGD's rules are elementwise, so packing changes no value; an optimiser whose rule is not packs each
 * parameter alone (see `elementwiseRule`).
 *
 * @module
 */
import type { DeviceName, Node } from "../../ir/node.ts";
import { size } from "../../shape.ts";
import { concat, stack, tensor, zeros } from "../../tensor/creation.ts";
import { realize, Tensor } from "../../tensor/tensor.ts";
import type { F32 } from "../linear.ts";
import { namesWhich, shortList } from "../../options.ts";
import {
  checkDistinctParameters,
  frozenParameters,
  getAt,
  namedParameters,
  type ParamDict,
  type ParamFilter,
  paramFilter,
  replaceTensors,
} from "../module.ts";

/** Parameters that share a learning rate and weight decay. */
export interface ParamGroup {
  /**
   * Name of the group, used in metrics (`grad_norm/<name>`) and checkpoints. Not `"default"`, and not the name
   * of another group.
   */
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
  /**
   * Which parameters of the target to train (default: all). The others are left alone (frozen), as are those their
   * modules declare frozen (`frozenParameters`, e.g. MiCA's B), whatever the filter says.
   */
  trainable?: ParamFilter;
  /** Groups with their own rate or decay; trainable parameters that match none form the `"default"` group. */
  groups?: readonly ParamGroup[];
  /**
   * Most parameters updated by one kernel, over one buffer (see the module comment); default: the device's
   * choice, {@link PARAMS_PER_PACK}. It changes no value, only how the update is launched.
   */
  paramsPerPack?: number;
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

/**
 * Most parameters in one pack, by device. A pack's update reads one gradient buffer per parameter, so each element
 * reads every gradient of its pack and keeps the one whose range it falls in.
 *
 * - `webgpu`: 24, within the ~30 buffers a kernel binds on common adapters (more would split the update into
 *   several kernels, still correct). On lavapipe the stories260K LoRA step runs 257 kernels instead of 324 and
 *   1.18x as fast, side by side with per-parameter updates; on a GPU, three launches replace 71.
 * - `wasm` and `cpu`: 1 (a parameter per kernel). On wasm, packs of 4 and 8 made that step 0.94x and 0.92x as fast:
 *   there a kernel costs microseconds, and every extra gradient read is a clamped gather.
 */
export const PARAMS_PER_PACK: Readonly<Record<DeviceName, number>> = { webgpu: 24, wasm: 1, cpu: 1 };

/**
 * Most elements in one pack (a parameter larger than this is a pack of its own). Every element of a pack reads
 * every gradient of the pack, so an update costs (parameters x elements): small parameters gain one kernel for
 * many, large ones fill the device alone. Side by side in one process on lavapipe, training every weight of the
 * stories260K-sized LM, packs of at most 2^15 elements ran 1.05x as fast as one parameter per kernel, and packs
 * without this bound 0.95x.
 */
export const PACK_MAX_ELEMENTS = 1 << 15;

/**
 * Elements between the starts of a pack's parameters: each starts at a multiple of 64 (256 bytes of f32, the
 * largest `minStorageBufferOffsetAlignment` WebGPU allows an adapter), so that a kernel can bind a parameter from
 * its pack's buffer as a buffer of its own. Its kernels then do not depend on where in the pack the parameter
 * sits, and every layer's share one pipeline (as they do before the first step, when parameters have buffers of
 * their own). The gaps hold zeros, which the elementwise update rules keep at zero.
 */
export const PACK_ALIGN = 64;

/** `n` rounded up to a multiple of {@link PACK_ALIGN}. */
function packAligned(n: number): number {
  return Math.ceil(n / PACK_ALIGN) * PACK_ALIGN;
}

/** Where the parameters of one pack sit in its buffer `[1 + slots, total]` (row 0 values, row `1 + k` slot k). */
export interface PackLayout {
  /** Key of the pack in {@link PendingUpdate.packed} and {@link Optimizer.adopt}: `<group>/<index>`. */
  readonly key: string;
  /** Index of the pack's group in {@link Optimizer.groups}. */
  readonly group: number;
  /** Paths of its parameters, in order. */
  readonly paths: readonly string[];
  /** Offset of each parameter in a row. */
  readonly offsets: readonly number[];
  /** Shape of each parameter. */
  readonly shapes: readonly (readonly number[])[];
  /** Elements per row. */
  readonly total: number;
}

/** Splits each group's parameters into packs of at most `perPack` parameters and {@link PACK_MAX_ELEMENTS}. */
function packLayouts(
  groups: readonly ResolvedGroup[],
  shapeOf: (path: string) => readonly number[],
  perPack: number,
): PackLayout[] {
  const packs: PackLayout[] = [];
  groups.forEach((g, gi) => {
    let paths: string[] = [];
    let shapes: (readonly number[])[] = [];
    let offsets: number[] = [];
    let total = 0;
    const close = () => {
      if (paths.length === 0) return;
      const key = `${g.name}/${packs.filter((p) => p.group === gi).length}`;
      packs.push({ key, group: gi, paths, offsets, shapes, total });
      paths = [], shapes = [], offsets = [], total = 0;
    };
    for (const path of g.paths) {
      const shape = shapeOf(path);
      const n = size(shape);
      if (paths.length === perPack || (total > 0 && packAligned(total) + n > PACK_MAX_ELEMENTS)) close();
      const start = packAligned(total);
      paths.push(path), shapes.push(shape), offsets.push(start);
      total = start + n;
    }
    close();
  });
  return packs;
}

/** One flat tensor of the elements of `ts` (a pack's tensors, in order) at the pack's offsets, zeros between. */
function flatConcat(pack: PackLayout, ts: readonly Tensor[]): F32 {
  const flat = ts.map((t, i) => {
    const gap = (pack.offsets[i + 1] ?? pack.total) - pack.offsets[i] - t.size;
    const f = t.reshape([t.size]) as F32;
    return gap === 0 ? f : f.pad([[0, gap]]) as F32;
  });
  return (flat.length === 1 ? flat[0] : concat(flat)) as F32;
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
   * Per pack (keyed as {@link PackLayout.key}), the one tensor holding the new values and state of its
   * parameters, `[1 + slots, total]`, so each pack's update is one kernel.
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
  #version = 0;
  #hyper: Tensor | null = null;
  #packs: readonly PackLayout[];
  /** The realized buffer of each pack, by key, as installed by the last step. */
  #packed = new Map<string, Tensor>();
  /** The views of its pack installed for each path: the parameter's node and the state tensors. */
  #installed = new Map<string, { param: Node; state: readonly Tensor[] }>();
  /** The trainable filter, to find parameters added to the target later ({@link checkTarget}). */
  #trainable: (path: string, t: Tensor) => boolean;
  /** Paths of every parameter of the target at the last {@link checkTarget} that passed (or at creation). */
  #checked: readonly string[];

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
    // Parameters their modules declare frozen (MiCA's B) are never trained, whatever the filter selects.
    const frozen = new Set(frozenParameters(target));
    this.#trainable = paramFilter(options.trainable);
    const all = namedParameters(target);
    this.#checked = all.map(([p]) => p);
    // A listed path that names no parameter (a misspelt "l.bais") would leave that parameter out unnoticed.
    const unknown = Array.isArray(options.trainable)
      ? options.trainable.filter((p) => !this.#checked.includes(p))
      : [];
    if (unknown.length > 0) {
      throw new RangeError(
        `${what}: trainable lists ${namesWhich(unknown, "no parameter of the target")} (its parameters: ${
          shortList(this.#checked)
        })`,
      );
    }
    const named = all.filter(([p, t]) => this.#trainable(p, t) && !frozen.has(p));
    const listed = Array.isArray(options.trainable) ? options.trainable.filter((p) => frozen.has(p)) : [];
    if (listed.length > 0) {
      throw new RangeError(
        `${what}: trainable lists ${listed.map((p) => `"${p}"`).join(", ")}, which ${
          listed.length > 1 ? "their modules declare" : "its module declares"
        } frozen`,
      );
    }
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
    const filters = userGroups.map((g, k) => {
      if (g.name === "default") throw new RangeError(`${what}: the group name "default" is reserved`);
      // Packs, learning rates and the trainer's metrics are keyed by group name: two groups of one name
      // would share those keys, and one group's parameters would take the other's update.
      const first = userGroups.findIndex((h) => h.name === g.name);
      if (first !== k) {
        throw new RangeError(
          `${what}: groups ${first} and ${k} are both named "${g.name}"; names must differ`,
        );
      }
      // A listed path that names no trainable parameter would leave that parameter in the default group.
      const stray = Array.isArray(g.params) ? g.params.filter((p) => !named.some(([q]) => q === p)) : [];
      if (stray.length > 0) {
        throw new RangeError(
          `${what}: group "${g.name}" lists ${namesWhich(stray, "no trainable parameter")} (trainable: ${
            shortList(named.map(([p]) => p))
          })`,
        );
      }
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
          `${what}: group "${g.name}" matches no trainable parameter (trainable: ${shortList(this.#paths)})`,
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
    const perPack = options.paramsPerPack ?? PARAMS_PER_PACK[this.#device];
    if (!Number.isInteger(perPack) || perPack < 1) {
      throw new RangeError(`${what}: paramsPerPack must be a whole number of at least 1, got ${perPack}`);
    }
    if (perPack > 1 && options.paramsPerPack !== undefined && !this.elementwiseRule) {
      throw new RangeError(
        `${what}: paramsPerPack ${perPack} needs an elementwise update rule; this optimiser updates each ` +
          `parameter as a whole`,
      );
    }
    const shapes = new Map(named.map(([p, t]) => [p, t.shape]));
    this.#packs = packLayouts(this.#groups, (p) => shapes.get(p)!, this.elementwiseRule ? perPack : 1);
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

  /**
   * The update of parameters `p` with gradient `g` and state `state` (one tensor per slot): one parameter in its
   * own shape, or the flattened parameters of a pack of several (only when {@link elementwiseRule} holds).
   */
  protected abstract rule(
    p: F32,
    g: F32,
    state: F32[],
    scalars: GroupScalars,
    group: ResolvedGroup,
  ): RuleResult;

  /**
   * Whether {@link rule} is elementwise (every element's update reads only that element of `p`, `g` and the
   * state), so several parameters may share one update kernel. An optimiser whose rule reads a parameter as a
   * whole (a norm, a factored moment) overrides this with false, and each parameter is then a pack of its own.
   */
  protected get elementwiseRule(): boolean {
    return true;
  }

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

  /**
   * Throws when the target has parameters that the trainable filter selects, and that their modules do not declare
   * frozen, but that this optimiser does not hold: it knows the parameters present at its creation, so those added
   * since (a LoRA adapter attached or loaded afterwards) would never be trained, without a word. A parameter
   * replaced at its path is still held. Called by every {@link update}; the paths are only matched against the
   * filter when they differ from those of the last check, so an unchanged target costs one walk.
   */
  checkTarget(): void {
    const named = namedParameters(this.#target);
    const last = this.#checked;
    if (named.length === last.length && named.every(([p], i) => p === last[i])) return;
    const held = new Set(this.#paths);
    const frozen = new Set(frozenParameters(this.#target));
    const missed = named.filter(([p, t]) => !held.has(p) && !frozen.has(p) && this.#trainable(p, t));
    if (missed.length > 0) {
      const shown = missed.slice(0, 8).map(([p]) => `"${p}"`).join(", ");
      throw new Error(
        `${this.name}: the model has ${missed.length} parameter(s) that the trainable filter selects but that ` +
          `this optimiser does not hold, so they would never be trained: ${shown}${
            missed.length > 8 ? ", ..." : ""
          } (added to the model after the optimiser was created?); create the optimiser after changing the model`,
      );
    }
    this.#checked = named.map(([p]) => p);
  }

  /** Paths of the trainable parameters. */
  get paths(): readonly string[] {
    return this.#paths;
  }

  /** The groups, with their parameters. */
  get groups(): readonly ResolvedGroup[] {
    return this.#groups;
  }

  /** How the parameters are packed: one update kernel and one buffer per pack. */
  get packs(): readonly PackLayout[] {
    return this.#packs;
  }

  /**
   * Views of the parameters and state in a pack buffer `packed` (`[1 + slots, total]`, laid out as the pack
   * `key`): parameters by path, state by `<slot>.<path>` (as {@link stateDict}).
   */
  unpack(key: string, packed: Tensor): { params: ParamDict; state: ParamDict } {
    const pack = this.#packs.find((p) => p.key === key);
    if (pack === undefined) throw new RangeError(`${this.name}: no pack "${key}"`);
    const want = [1 + this.#slots.length, pack.total].join();
    if (packed.shape.join() !== want) {
      throw new RangeError(`${this.name}: pack "${key}" is [${want}], got [${packed.shape.join(", ")}]`);
    }
    const params: ParamDict = {};
    const state: ParamDict = {};
    for (const [path, v] of this.#views(pack, packed)) {
      params[path] = v.param;
      this.#slots.forEach((s, k) => (state[`${s}.${path}`] = v.state[k]));
    }
    return { params, state };
  }

  /** Per path of `pack`, views of its value and of each slot's state in the pack buffer `packed`. */
  #views(pack: PackLayout, packed: Tensor): Map<string, { param: Tensor; state: Tensor[] }> {
    const rows = [packed.slice(0), ...this.#slots.map((_, k) => packed.slice(k + 1))];
    return new Map(pack.paths.map((path, i) => {
      const at = (row: Tensor) =>
        row.slice([pack.offsets[i], pack.offsets[i] + size(pack.shapes[i])]).reshape(
          pack.shapes[i],
        ) as Tensor;
      return [path, { param: at(rows[0]), state: rows.slice(1).map(at) }];
    }));
  }

  /**
   * The realized pack buffers whose views are still the target's parameters and the optimiser's state (none
   * before the first step, or after parameters or state were loaded from elsewhere), by key.
   */
  get currentPacks(): ReadonlyMap<string, Tensor> {
    const out = new Map<string, Tensor>();
    const current = this.params;
    for (const pack of this.#packs) {
      const all = this.#packed.get(pack.key);
      const intact = all !== undefined && pack.paths.every((path) => {
        const views = this.#installed.get(path);
        return views !== undefined && current[path].node === views.param &&
          this.#slots.every((s, k) => this.#state.get(s)!.get(path) === views.state[k]);
      });
      if (intact) out.set(pack.key, all!);
    }
    return out;
  }

  /**
   * Each pack's values and state as one `[1 + slots, total]` tensor, by key: the realized pack buffer where it
   * is current ({@link currentPacks}), else a lazy expression that gathers them.
   */
  packedState(): Record<string, Tensor> {
    const current = this.currentPacks;
    const params = this.params;
    const out: Record<string, Tensor> = {};
    for (const pack of this.#packs) {
      out[pack.key] = current.get(pack.key) ?? stack(this.#gather(pack, params));
    }
    return out;
  }

  /** A pack's parameters and then each slot's state, each flattened side by side (one row of its buffer). */
  #gather(pack: PackLayout, params: ParamDict): F32[] {
    return [
      flatConcat(pack, pack.paths.map((p) => params[p])),
      ...this.#slots.map((s) => flatConcat(pack, pack.paths.map((p) => this.#state.get(s)!.get(p)!))),
    ];
  }

  /** Names of the state slots. */
  get slots(): readonly string[] {
    return this.#slots;
  }

  /**
   * Counts the changes of the state and step count made through this optimiser (updates committed, state adopted
   * or loaded): equal counts mean the optimiser has not been changed in between.
   */
  get stateVersion(): number {
    return this.#version;
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
    this.#checkLrScale(lrScale);
    this.checkTarget();
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
    for (const path of this.#paths) {
      const [p, g] = [current[path], grads[path]];
      if (g.shape.join() !== p.shape.join() || g.dtype !== p.dtype) {
        throw new RangeError(
          `${this.name}: gradient of "${path}" is [${g.shape.join(", ")}] ${g.dtype}, the parameter is ` +
            `[${p.shape.join(", ")}] ${p.dtype}`,
        );
      }
    }
    const params: ParamDict = {};
    const state: Record<string, ParamDict> = Object.fromEntries(this.#slots.map((s) => [s, {}]));
    const packed: Record<string, Tensor> = {};
    const live = this.currentPacks;
    for (const pack of this.#packs) {
      // A current pack is read as it is; otherwise its parameters and state are gathered (first step, loads).
      const all = live.get(pack.key);
      const [p, ...old] = all !== undefined
        ? Array.from({ length: 1 + this.#slots.length }, (_, k) => all.slice(k) as F32)
        : this.#gather(pack, current);
      const g = flatConcat(pack, pack.paths.map((q) => grads[q]));
      // A pack of one parameter is updated in the parameter's own shape.
      const own = pack.paths.length === 1 ? pack.shapes[0] : null;
      const shaped = (t: F32) => (own === null ? t : t.reshape(own) as F32);
      const flat = (t: Tensor) => t.reshape([pack.total]) as F32;
      const r = this.rule(
        shaped(p),
        shaped(g),
        old.map(shaped),
        groupScalars[pack.group],
        this.#groups[pack.group],
      );
      const next = stack([flat(r.param), ...r.state.map(flat)]) as F32;
      packed[pack.key] = next;
      for (const [path, v] of this.#views(pack, next)) {
        params[path] = v.param;
        this.#slots.forEach((s, k) => (state[s][path] = v.state[k]));
      }
    }
    return { step, params, state, packed, tensors: Object.values(packed), scalars: hyper };
  }

  #checkLrScale(lrScale: number): void {
    if (!Number.isFinite(lrScale) || lrScale < 0) {
      throw new RangeError(`${this.name}: lrScale must be a finite number >= 0, got ${lrScale}`);
    }
  }

  /**
   * The step scalars an update of step `step` (1-based) with learning-rate factor `lrScale` uploads, group after
   * group in the order of the rule's scalar names. A compiled training step writes these into its replayed
   * update's input instead of building the update again.
   */
  stepScalars(step: number, lrScale = 1): Float32Array {
    this.#checkLrScale(lrScale);
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
   * Makes realized pack buffers current as of step `step`, as {@link commit} does (one `[1 + slots, total]`
   * tensor per pack key, see {@link packs}): a compiled training step that ran several updates without building
   * them hands over its latest state this way.
   */
  adopt(packed: Readonly<Record<string, Tensor>>, step: number): void {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`${this.name}: bad step ${step}`);
    for (const pack of this.#packs) {
      const t = packed[pack.key];
      const want = [1 + this.#slots.length, pack.total].join();
      if (!(t instanceof Tensor) || !t.isRealized || t.shape.join() !== want) {
        throw new RangeError(
          `${this.name}: adopt() needs a realized [${want}] tensor for pack "${pack.key}"`,
        );
      }
    }
    this.#install(packed, step);
  }

  #install(packed: Readonly<Record<string, Tensor>>, step: number): void {
    const current = this.params;
    const keep = new Set(this.#packs.map((p) => packed[p.key].node));
    const retired: Tensor[] = [];
    const swap = new Map<Tensor, Tensor>();
    for (const pack of this.#packs) {
      const all = packed[pack.key];
      // Fresh views of the realized buffer (views made before realization still point at the expression).
      for (const [path, v] of this.#views(pack, all)) {
        swap.set(current[path], v.param);
        retired.push(current[path]);
        this.#slots.forEach((s, k) => {
          const m = this.#state.get(s)!;
          retired.push(m.get(path)!);
          m.set(path, v.state[k]);
        });
        this.#installed.set(path, { param: v.param.node, state: v.state });
      }
      const before = this.#packed.get(pack.key);
      if (before !== undefined) retired.push(before);
      this.#packed.set(pack.key, all);
    }
    replaceTensors(this.#target, swap);
    this.#dispose(retired, keep);
    this.#hyper?.dispose();
    this.#hyper = null;
    this.#step = step;
    this.#version++;
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
    this.#version++;
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
