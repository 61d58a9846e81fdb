/**
 * Modules and parameter trees.
 *
 * A module is a plain class extending {@link Module} whose public fields hold its parameters (tensors) and its
 * submodules (modules, arrays of modules, plain objects of either). Everything else a module needs (sizes,
 * options, cached non-trainable tables) lives in `#private` fields or getters, so the public fields alone form a
 * tree of tensors whose dotted paths name every parameter: `layers.3.attention.wq.weight`.
 *
 * Tensors are immutable values; a module is the mutable container. Training replaces a module's tensors with
 * new ones ({@link loadParameters}), and LoRA replaces whole submodules ({@link replaceModule}). Gradients are
 * taken with respect to a flat record of tensors keyed by path ({@link parameters}), and
 * {@link functionalCall} runs the module with such a record swapped in, so the forward pass is a function of
 * the record that `valueAndGrad` can differentiate.
 *
 * Each parameter must be its own concrete tensor (created from data, e.g. by the initialisers in `init.ts`):
 * lazy constants are shared between equal expressions (`ones([4])` twice is one node), and two parameters that
 * share a node would share their gradient.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";
import { realize, Tensor } from "../tensor/tensor.ts";

const FILTER_OPTIONS = z.object({ filter: opt.paramFilter().optional() }).strict();
const LOAD_OPTIONS = z.object({ strict: z.boolean().optional() }).strict();

/**
 * Base class of layers. It has no fields of its own: a subclass's public fields are its parameters and
 * submodules; sizes and options go in `#private` fields exposed by getters.
 *
 * @example
 * ```ts
 * import { Linear, Module, namedParameters } from "./mod.ts";
 * class TwoLayer extends Module {
 *   readonly fc1: Linear;
 *   readonly fc2: Linear;
 *   constructor(seed: number) {
 *     super();
 *     this.fc1 = new Linear(4, 8, { seed });
 *     this.fc2 = new Linear(8, 2, { seed: seed + 1 });
 *   }
 * }
 * console.log(namedParameters(new TwoLayer(0)).map(([path]) => path));
 * // ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
 * ```
 */
export abstract class Module {}

/**
 * A model whose modules also answer to a second naming convention: `moduleAlias(path)` gives the other name of
 * the module at `path` (a Llama model answers with Hugging Face's, `layers.0.attention.wq` →
 * `model.layers.0.self_attn.q_proj`), so LoRA targets can be written either way.
 */
export interface AliasedModule {
  /** The module's name in the other convention, or `undefined` when it has none. */
  moduleAlias(path: string): string | undefined;
  /**
   * Output rows of the module at `path` (a row-major `[rows, cols]` array: a weight, a bias with `cols` 1, a LoRA
   * `B`) reordered into the other convention's layout (`toAlias`) or back; the rows themselves when both agree.
   */
  convertRows(path: string, rows: Float32Array, cols: number, toAlias: boolean): Float32Array;
}

/** `root` as an {@link AliasedModule}, when it is one. */
export function asAliased(root: object): AliasedModule | undefined {
  const r = root as Partial<AliasedModule>;
  return typeof r.moduleAlias === "function" && typeof r.convertRows === "function"
    ? r as AliasedModule
    : undefined;
}

/**
 * Switches every module below `root` that has a boolean `training` field (LoRA layers with dropout, ...) to
 * training (`true`) or evaluation (`false`) behaviour, as `model.train()` / `model.eval()` do in PyTorch; returns how
 * many modules it set.
 *
 * @example
 * ```ts
 * import { Linear } from "./linear.ts";
 * import { setTraining } from "./module.ts";
 * setTraining({ fc: new Linear(4, 2, { seed: 0 }) }, false); // 0: a plain Linear has no training mode
 * ```
 */
export function setTraining(root: object, training: boolean): number {
  let n = 0;
  for (const [, m] of namedModules(root)) {
    if ("training" in m && typeof m.training === "boolean") {
      m.training = training;
      n++;
    }
  }
  return n;
}

/**
 * A module with parameters of its own that no optimiser trains (PyTorch's `requires_grad = False` on them, e.g. the
 * `B` that PEFT's MiCA keeps fixed): `frozenParameters` lists their paths relative to the module. It is a getter,
 * not a field, so it is no part of the parameter tree. The parameters stay in it (checkpoints, `parameters`).
 */
export interface FreezingModule {
  /** Paths, relative to this module, of its parameters that stay fixed in training. */
  readonly frozenParameters: readonly string[];
}

/**
 * The parameters below `root` that their modules declare frozen ({@link FreezingModule}), by the path
 * {@link namedParameters} gives them (the first path of a tied tensor). Optimisers leave them out.
 *
 * @example
 * ```ts
 * import { Linear, frozenParameters } from "./mod.ts";
 * frozenParameters({ fc: new Linear(4, 2, { seed: 0 }) }); // []: a plain Linear declares none
 * ```
 */
export function frozenParameters(root: object): string[] {
  const frozen = new Set<Tensor>();
  for (const [path, m] of namedModules(root)) {
    const list = (m as Partial<FreezingModule>).frozenParameters;
    if (list === undefined) continue;
    for (const p of list) {
      const t = getAt(m, p);
      if (!(t instanceof Tensor)) {
        throw new TypeError(`frozenParameters: "${join(path, p)}" holds ${describe(t)}, not a tensor`);
      }
      frozen.add(t);
    }
  }
  if (frozen.size === 0) return [];
  return namedParameters(root).filter(([, t]) => frozen.has(t)).map(([p]) => p);
}

/** Parameters (or gradients, or optimiser state) keyed by dotted path. */
export type ParamDict = Record<string, Tensor>;

/** Selects parameters by path: a regular expression, a list of paths, or a predicate. */
export type ParamFilter = RegExp | readonly string[] | ((path: string, tensor: Tensor) => boolean);

/** True for the containers a parameter tree may hold: modules, arrays and plain objects. */
function isContainer(v: unknown): v is object {
  if (v === null || typeof v !== "object" || v instanceof Tensor) return false;
  if (v instanceof Module || Array.isArray(v)) return true;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** The children of a container as `[key, value]` pairs, in definition order. */
function entriesOf(v: object): [string, unknown][] {
  return Array.isArray(v) ? v.map((x, i) => [String(i), x]) : Object.entries(v);
}

function join(prefix: string, key: string): string {
  return prefix === "" ? key : `${prefix}.${key}`;
}

/**
 * Throws when an object at `path` that parameter discovery does not enter (a Map, a Set, an instance of a class
 * that is not a Module) holds a tensor or module, directly or in what it holds: its parameters would be missing,
 * without a word, from `parameters`, optimisers, checkpoints and adapters.
 */
function refuseHidden(v: object, path: string): void {
  const seen = new Set<unknown>();
  const holds = (x: unknown): boolean => {
    if (x instanceof Tensor || x instanceof Module) return true;
    if (x === null || typeof x !== "object" || ArrayBuffer.isView(x) || seen.has(x)) return false;
    seen.add(x);
    const values = x instanceof Map
      ? [...x.keys(), ...x.values()]
      : x instanceof Set
      ? [...x]
      : Object.values(x);
    return values.some(holds);
  };
  if (!holds(v)) return;
  const name = v.constructor?.name ?? "object";
  const collection = v instanceof Map || v instanceof Set;
  const what = collection ? `a ${name}` : `an instance of ${name}, which is not a Module,`;
  throw new TypeError(
    `"${path}" is ${what} holding tensors or modules, which parameter discovery does not enter ` +
      `(its parameters would be neither listed nor trained nor saved); hold them in a plain object or an array` +
      (collection ? "" : `, or make ${name} extend Module`),
  );
}

/** Calls `visit` on every tensor and container below `root` once (the first path wins), depth first. */
function walk(
  root: object,
  visit: (path: string, value: Tensor | object, parent: object | null, key: string) => void,
): void {
  const seen = new Set<unknown>();
  const go = (v: unknown, path: string, parent: object | null, key: string) => {
    if (seen.has(v)) return;
    if (v instanceof Tensor) {
      seen.add(v);
      visit(path, v, parent, key);
      return;
    }
    if (!isContainer(v)) {
      if (v !== null && typeof v === "object") refuseHidden(v, path);
      return;
    }
    seen.add(v);
    visit(path, v, parent, key);
    for (const [k, c] of entriesOf(v)) go(c, join(path, k), v, k);
  };
  go(root, "", null, "");
}

/** Compiles a {@link ParamFilter} to a predicate. */
export function paramFilter(filter: ParamFilter | undefined): (path: string, tensor: Tensor) => boolean {
  if (filter === undefined) return () => true;
  if (filter instanceof RegExp) {
    const re = new RegExp(filter.source, filter.flags.replace("g", "").replace("y", ""));
    return (path) => re.test(path);
  }
  if (typeof filter === "function") return filter;
  const set = new Set(filter);
  return (path) => set.has(path);
}

/**
 * Every parameter below `root` as `[path, tensor]`, in field-definition order. A tensor reachable by two paths
 * (tied weights) is listed once, under the first path.
 *
 * @example
 * ```ts
 * import { Linear, namedParameters } from "./mod.ts";
 * const model = { encoder: new Linear(3, 4, { seed: 0 }), head: new Linear(4, 1, { seed: 1, bias: false }) };
 * namedParameters(model).map(([path, t]) => `${path} ${t.shape}`);
 * // ["encoder.weight 4,3", "encoder.bias 4", "head.weight 1,4"]
 * ```
 */
export function namedParameters(root: object, opts: { filter?: ParamFilter } = {}): [string, Tensor][] {
  checkOptions("namedParameters", FILTER_OPTIONS, opts);
  const keep = paramFilter(opts.filter);
  const out: [string, Tensor][] = [];
  walk(root, (path, v) => {
    if (v instanceof Tensor && keep(path, v)) out.push([path, v]);
  });
  return out;
}

/**
 * The parameters below `root` as a record keyed by path (see {@link namedParameters}): the tree that
 * `valueAndGrad` differentiates with respect to, and what optimisers and checkpoints work on.
 */
export function parameters(root: object, opts: { filter?: ParamFilter } = {}): ParamDict {
  checkOptions("parameters", FILTER_OPTIONS, opts);
  return Object.fromEntries(namedParameters(root, opts));
}

/**
 * Every module below `root` (and `root` itself, with path `""`, when it is a module) as `[path, module]`.
 *
 * @example
 * ```ts
 * import { Linear, namedModules } from "./mod.ts";
 * const model = { layers: [new Linear(2, 2, { seed: 0 }), new Linear(2, 2, { seed: 1 })] };
 * namedModules(model).map(([path]) => path); // ["layers.0", "layers.1"]
 * ```
 */
export function namedModules(root: object): [string, Module][] {
  const out: [string, Module][] = [];
  walk(root, (path, v) => {
    if (v instanceof Module) out.push([path, v]);
  });
  return out;
}

/**
 * What a computation built from `root` reads of it, in walk order: each parameter's node and each module's training
 * mode. Two equal lists mean the same parameters in the same modes (a parameter replaced by `loadParameters`, or a
 * mode set by `setTraining`, changes the list). One walk without paths: cheap enough to check at every step.
 */
export function modelFacts(root: object): unknown[] {
  const out: unknown[] = [];
  const seen = new Set<unknown>();
  const go = (v: unknown) => {
    if (seen.has(v)) return;
    if (v instanceof Tensor) {
      seen.add(v);
      out.push(v.node);
      return;
    }
    if (!isContainer(v)) return;
    seen.add(v);
    const training = v instanceof Module ? (v as { training?: unknown }).training : undefined;
    if (typeof training === "boolean") out.push(training);
    for (const c of Array.isArray(v) ? v : Object.values(v)) go(c);
  };
  go(root);
  return out;
}

/** Total number of parameter elements below `root`. */
export function parameterCount(root: object, opts: { filter?: ParamFilter } = {}): number {
  checkOptions("parameterCount", FILTER_OPTIONS, opts);
  return namedParameters(root, opts).reduce((a, [, t]) => a + t.size, 0);
}

/** Splits a dotted path into the parent container and the last key, with a readable error when a step is missing. */
function locate(root: object, path: string, what: string): { parent: Record<string, unknown>; key: string } {
  if (path === "") throw new RangeError(`${what}: the path is empty`);
  const keys = path.split(".");
  let cur: unknown = root;
  for (let i = 0; i < keys.length - 1; i++) {
    const next = isContainer(cur) ? (cur as Record<string, unknown>)[keys[i]] : undefined;
    if (!isContainer(next)) {
      throw new RangeError(
        `${what}: "${keys.slice(0, i + 1).join(".")}" (from path "${path}") is not a module, array or object`,
      );
    }
    cur = next;
  }
  const key = keys[keys.length - 1];
  const parent = cur as Record<string, unknown>;
  if (!Object.hasOwn(parent, key)) throw new RangeError(`${what}: no field "${key}" at path "${path}"`);
  return { parent, key };
}

/** The tensor, module or container at a dotted path (`layers.3.attention.wq`). Throws when the path does not exist. */
export function getAt(root: object, path: string): unknown {
  if (path === "") return root;
  const { parent, key } = locate(root, path, "getAt");
  return parent[key];
}

/**
 * Replaces the field at a dotted path (a tensor or a submodule) with `value`. Throws when the path does not
 * exist; to swap a layer, use {@link replaceModule}, which also checks the kind of value.
 */
export function setAt(root: object, path: string, value: unknown): void {
  const { parent, key } = locate(root, path, "setAt");
  parent[key] = value;
}

/**
 * Replaces the submodule at `path` with `module` (LoRA swaps `Linear` layers this way) and returns the old one.
 *
 * @example
 * ```ts
 * import { Linear, replaceModule } from "./mod.ts";
 * const model = { proj: new Linear(4, 4, { seed: 0 }) };
 * const old = replaceModule(model, "proj", new Linear(4, 4, { seed: 1, bias: false }));
 * ```
 */
export function replaceModule<M extends Module>(root: object, path: string, module: M): Module {
  const old = getAt(root, path);
  if (!(old instanceof Module)) {
    throw new TypeError(`replaceModule: "${path}" holds ${describe(old)}, not a module`);
  }
  if (!(module instanceof Module)) {
    throw new TypeError(`replaceModule: the replacement for "${path}" is ${describe(module)}, not a module`);
  }
  setAt(root, path, module);
  return old;
}

function describe(v: unknown): string {
  if (v instanceof Tensor) return `a tensor of shape [${v.shape.join(", ")}]`;
  if (v === null || v === undefined) return String(v);
  if (typeof v === "object") return `a ${v.constructor?.name ?? "object"}`;
  return `a ${typeof v}`;
}

/** Replaces every occurrence (by identity) of the keys of `swap` below `root` with their values. */
export function replaceTensors(root: object, swap: ReadonlyMap<Tensor, Tensor>): void {
  swapSlots(root, swap);
}

/** One place a tensor was replaced: the container, the key, and the tensor that was there. */
type Slot = [Record<string, unknown>, string, Tensor];

/** {@link replaceTensors}, returning every place it changed, to be put back by {@link restoreSlots}. */
function swapSlots(root: object, swap: ReadonlyMap<Tensor, Tensor>): Slot[] {
  const changed: Slot[] = [];
  if (swap.size === 0) return changed;
  const seen = new Set<object>();
  const go = (v: object) => {
    if (seen.has(v)) return;
    seen.add(v);
    const rec = v as Record<string, unknown>;
    for (const [k, c] of entriesOf(v)) {
      if (c instanceof Tensor) {
        const r = swap.get(c);
        if (r !== undefined) {
          changed.push([rec, k, c]);
          rec[k] = r;
        }
      } else if (isContainer(c)) go(c);
    }
  };
  go(root);
  return changed;
}

/** Puts back what {@link swapSlots} replaced, place by place. */
function restoreSlots(changed: readonly Slot[]): void {
  for (const [rec, k, was] of changed) rec[k] = was;
}

/**
 * Puts new tensors into a model: each entry of `params` replaces the parameter at its path, everywhere that
 * tensor occurs (so tied weights stay tied). Shapes and dtypes must match. Paths that the model does not
 * have are an error (listing them) unless `strict` is false; parameters missing from `params` keep their
 * values.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { Linear, loadParameters } from "./mod.ts";
 * const layer = new Linear(2, 1, { seed: 0 });
 * loadParameters(layer, { weight: tensor([[0.5, -1]]), bias: tensor([0.25]) });
 * ```
 */
export function loadParameters(root: object, params: ParamDict, opts: { strict?: boolean } = {}): void {
  checkOptions("loadParameters", LOAD_OPTIONS, opts);
  const current = new Map(namedParameters(root));
  const unknown = Object.keys(params).filter((p) => !current.has(p));
  if (unknown.length > 0 && (opts.strict ?? true)) {
    const have = [...current.keys()];
    throw new RangeError(
      `loadParameters: ${unknown.length} path(s) not in the model: ${unknown.slice(0, 5).join(", ")}` +
        `${unknown.length > 5 ? ", ..." : ""}; the model has ${have.length}: ${have.slice(0, 8).join(", ")}` +
        `${have.length > 8 ? ", ..." : ""}`,
    );
  }
  const swap = new Map<Tensor, Tensor>();
  for (const [path, t] of Object.entries(params)) {
    const old = current.get(path);
    if (old === undefined) continue;
    if (!(t instanceof Tensor)) {
      throw new TypeError(`loadParameters: "${path}" is ${describe(t)}, not a tensor`);
    }
    if (old.shape.join() !== t.shape.join() || old.dtype !== t.dtype) {
      throw new RangeError(
        `loadParameters: "${path}" is [${
          old.shape.join(", ")
        }] ${old.dtype} in the model but the new tensor ` +
          `is [${t.shape.join(", ")}] ${t.dtype}`,
      );
    }
    if (old.device !== t.device) {
      throw new RangeError(
        `loadParameters: "${path}" is on ${old.device} in the model but the new tensor is on ${t.device}`,
      );
    }
    if (old !== t) swap.set(old, t);
  }
  replaceTensors(root, swap);
}

/**
 * Runs `fn` with the model's parameters at the paths of `params` replaced by those tensors, then puts the
 * original tensors back (also when `fn` throws). This makes a forward pass a function of a parameter record,
 * which is what `valueAndGrad` differentiates.
 *
 * @example
 * ```ts
 * import { valueAndGrad } from "../autodiff/mod.ts";
 * import { functionalCall, Linear, parameters } from "./mod.ts";
 * import { randn } from "../tensor/creation.ts";
 * const layer = new Linear(3, 2, { seed: 0 });
 * const x = randn([5, 3], { seed: 1 });
 * const lossOf = (p: Record<string, import("../tensor/tensor.ts").Tensor>) =>
 *   functionalCall(layer, p, () => layer.forward(x).square().mean());
 * const { value, grads } = valueAndGrad(lossOf)(parameters(layer));
 * console.log(await value.item(), grads.weight.shape);
 * ```
 */
export function functionalCall<R>(root: object, params: ParamDict, fn: () => R): R {
  const current = new Map(namedParameters(root));
  const swap = new Map<Tensor, Tensor>();
  for (const [path, t] of Object.entries(params)) {
    const old = current.get(path);
    if (old === undefined) {
      throw new RangeError(`functionalCall: the model has no parameter "${path}"`);
    }
    if (!(t instanceof Tensor)) throw new TypeError(`functionalCall: "${path}" is not a tensor (${t})`);
    if (old.shape.join() !== t.shape.join() || old.dtype !== t.dtype) {
      throw new RangeError(
        `functionalCall: "${path}" is [${old.shape.join(", ")}] ${old.dtype} in the model, got ` +
          `[${t.shape.join(", ")}] ${t.dtype}`,
      );
    }
    if (old !== t) swap.set(old, t);
  }
  // Restored place by place, not by swapping back by identity: a tensor passed in may also sit at another path
  // of the model, or be passed for two paths, and swapping it back would overwrite those places too.
  const changed = swapSlots(root, swap);
  try {
    return fn();
  } finally {
    restoreSlots(changed);
  }
}

/**
 * Computes every pending parameter below `root` (one submission per device) so they live on the device. Use it
 * after building a model from lazy expressions; parameters that are views of an optimiser's packed buffers (as
 * they are between training steps) become standalone copies, which is correct but not needed.
 */
export async function realizeParameters(root: object): Promise<void> {
  await realize(...namedParameters(root).map(([, t]) => t));
}

/**
 * Throws when two parameters share one IR node (e.g. two `ones([n])` made without data): they would share
 * their gradient and their update. `what` names the caller in the message.
 */
export function checkDistinctParameters(params: readonly (readonly [string, Tensor])[], what: string): void {
  const byNode = new Map<unknown, string>();
  for (const [path, t] of params) {
    const other = byNode.get(t.node);
    if (other !== undefined) {
      throw new Error(
        `${what}: parameters "${other}" and "${path}" are the same expression (node %${t.node.id}), so they ` +
          `would share gradients and updates; create each parameter from its own data (see lib/nn/init.ts)`,
      );
    }
    byNode.set(t.node, path);
  }
}
