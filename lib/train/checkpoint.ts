/**
 * Training checkpoints as safetensors files, written atomically: the model's parameters (`params.<path>`), the
 * optimiser's state (`optim.<slot>.<path>`), and in the metadata the step count, the run's seed, the
 * optimiser's description and any string metadata of the caller. With batches and dropout keys that are pure
 * functions of `(seed, step)` and schedules that are functions of the step, this is everything a run needs to
 * continue exactly where it stopped.
 *
 * @module
 */
import type { DeviceName } from "../ir/node.ts";
import { readSafetensors, type StEntry, writeSafetensors } from "../io/safetensors.ts";
import { getAt, loadParameters, namedModules, namedParameters, type ParamDict } from "../nn/module.ts";
import { checkFinite } from "../nn/finite.ts";
import type { Optimizer } from "../nn/optim/optimizer.ts";
import { tensor } from "../tensor/creation.ts";
import { Tensor } from "../tensor/tensor.ts";
import { z } from "../../deps.ts";
import { checkOptions, namesWhich, opt, OptionsError, shortList } from "../options.ts";

/** Value of the `format` metadata key. */
export const CHECKPOINT_FORMAT = "tessera-checkpoint";
const VERSION = "1";
const RESERVED = new Set(["format", "version", "step", "seed", "optimizer", "modules"]);

const OPTIMIZER = z.custom<Optimizer>(
  (v) => typeof v === "object" && v !== null && "stateDict" in v && "loadState" in v,
  { message: "must be an optimiser (new AdamW(model, ...))" },
);
// step and seed are checked by numberText, which also checks a step taken from the optimiser.
const SAVE_OPTIONS = z.object({
  optimizer: OPTIMIZER.optional(),
  step: z.unknown().optional(),
  seed: z.unknown().optional(),
  metadata: z.record(z.string(), z.string()).optional(),
  keepPrevious: z.boolean().optional(),
  paths: z.array(z.string()).optional(),
}).strict();
const LOAD_OPTIONS = z.object({ device: opt.device().optional() }).strict();
const RESTORE_OPTIONS = z.object({ optimizer: OPTIMIZER.optional(), accept: opt.fn().optional() }).strict();

/**
 * A module with state besides its parameters that a run must carry on from (e.g. the counter a LoRA layer's dropout
 * masks are drawn from): checkpoints save {@link extraState} under the module's path and give it back to
 * {@link loadExtraState} on restore.
 */
export interface StatefulModule {
  /** The state, as JSON-serialisable values. */
  extraState(): Record<string, number>;
  /** Takes back what {@link extraState} gave. */
  loadExtraState(state: Record<string, number>): void;
}

/**
 * A module whose computation depends on settings besides its parameters (a LoRA layer's scaling and dropout, a
 * norm's epsilon, attention's heads and RoPE base, a dropout layer's rate): the trainer records {@link runSettings}
 * in its checkpoints under the module's path (the model's own under the path `model`), and a resume with other
 * values is refused as a changed configuration.
 */
export interface ConfiguredModule {
  /** The settings that change what the module computes, as JSON values. */
  runSettings(): Record<string, number | boolean | string>;
}

/** What a checkpoint's step and seed must be, checked alike when writing and when reading. */
const NUMBER_RULES = {
  step: { holds: (n: number) => Number.isSafeInteger(n) && n >= 0, expected: "a non-negative integer" },
  seed: { holds: (n: number) => Number.isSafeInteger(n), expected: "a safe integer" },
};

/** `value` as the metadata text of `key`, or a RangeError: a file loadCheckpoint refuses is never written. */
function numberText(key: keyof typeof NUMBER_RULES, value: number): string {
  if (!NUMBER_RULES[key].holds(value)) {
    throw new RangeError(`saveCheckpoint: ${key} must be ${NUMBER_RULES[key].expected}, got ${value}`);
  }
  return String(value);
}

/** The number that metadata `key` of checkpoint `path` holds, written exactly as {@link numberText} writes it. */
function readNumber(path: string, key: keyof typeof NUMBER_RULES, text: string | undefined): number {
  if (text === undefined) throw new Error(`checkpoint "${path}" has no ${key}`);
  const value = Number(text); // also "" (0), " 7", "1e3" and "0x10": refused below, as saveCheckpoint never writes them
  if (String(value) !== text || !NUMBER_RULES[key].holds(value)) {
    throw new Error(
      `checkpoint "${path}" has a bad ${key} ${JSON.stringify(text)}; expected ${NUMBER_RULES[key].expected}`,
    );
  }
  return value;
}

/** The JSON object that metadata `key` of checkpoint `path` holds. */
function readObject(path: string, key: string, text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`checkpoint "${path}": metadata "${key}" is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`checkpoint "${path}": metadata "${key}" is ${text.slice(0, 40)}, not a JSON object`);
  }
  return value as Record<string, unknown>;
}

function isStateful(m: unknown): m is StatefulModule {
  return typeof (m as StatefulModule).extraState === "function" &&
    typeof (m as StatefulModule).loadExtraState === "function";
}

/**
 * A checkpoint that can be read but does not fit the model or optimiser it is restored into (another shape, another
 * optimiser): the file is fine, the run is not the one that wrote it.
 */
export class CheckpointMismatchError extends Error {
  /** An error for checkpoint `path` with the reason. */
  constructor(path: string, reason: string) {
    super(`checkpoint "${path}" does not fit this run: ${reason}`);
    this.name = "CheckpointMismatchError";
  }
}

/** Options of {@link saveCheckpoint}. */
export interface SaveCheckpointOptions {
  /** Optimiser whose state (and description) to save. */
  optimizer?: Optimizer;
  /** Steps completed (default: the optimiser's step count, else 0). */
  step?: number;
  /** Seed of the run. */
  seed?: number;
  /** Further string metadata (not `format`, `version`, `step`, `seed`, `optimizer` or `modules`). */
  metadata?: Record<string, string>;
  /**
   * Keep the checkpoint being replaced at {@link previousCheckpointPath} (default false), so that a damaged newest
   * file still leaves one to continue from (see {@link restoreLatestCheckpoint}).
   */
  keepPrevious?: boolean;
  /**
   * Save only the parameters at these paths (e.g. the optimiser's trainable ones, a small fraction of a LoRA model);
   * the others must then be rebuilt identically before restoring; each must name a parameter of the model. Default:
   * every parameter.
   */
  paths?: readonly string[];
}

/**
 * Where {@link saveCheckpoint} with `keepPrevious` keeps the checkpoint it replaces: `<path>.previous`.
 *
 * @param path The checkpoint file.
 * @returns The path of the previous one.
 */
export function previousCheckpointPath(path: string): string {
  return `${path}.previous`;
}

/**
 * Whether a run has a checkpoint to continue from at `path`: the file itself or, when a save was interrupted, the
 * one {@link previousCheckpointPath} kept (`Trainer.resume(path)` restores whichever is complete).
 *
 * @param path The checkpoint file.
 */
export async function hasCheckpoint(path: string): Promise<boolean> {
  for (const p of [path, previousCheckpointPath(path)]) {
    if (await Deno.stat(p).then(() => true, () => false)) return true;
  }
  return false;
}

/**
 * The steps `from..to` that `have` lacks, as ranges (`"2-3, 6"`), or null when it has them all: what a resume's
 * refusal names when a metrics file misses records before the checkpoint.
 *
 * @example
 * ```ts
 * import { missingSteps } from "./checkpoint.ts";
 * missingSteps(new Set([1, 4, 5]), 1, 6); // "2-3, 6"
 * ```
 */
export function missingSteps(have: ReadonlySet<unknown>, from: number, to: number): string | null {
  const missing: [number, number][] = [];
  for (let s = from; s <= to; s++) {
    if (have.has(s)) continue;
    const last = missing.at(-1);
    if (last !== undefined && last[1] === s - 1) last[1] = s;
    else missing.push([s, s]);
  }
  return missing.length === 0 ? null : missing.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(", ");
}

/** A checkpoint read back by {@link loadCheckpoint}. */
export interface Checkpoint {
  /** Steps completed when it was written. */
  step: number;
  /** Seed of the run, when it was saved. */
  seed?: number;
  /** Parameters by path, as tensors on the requested device. */
  params: ParamDict;
  /** Optimiser state keyed `<slot>.<path>` (empty without an optimiser). */
  state: ParamDict;
  /** The saving optimiser's description (name, hyperparameters, groups), when one was saved. */
  optimizer?: Record<string, unknown>;
  /** The extra state of stateful modules ({@link StatefulModule}) by path, when there were any. */
  modules?: Record<string, Record<string, number>>;
  /** The caller's metadata. */
  metadata: Record<string, string>;
}

/**
 * Host copies of many f32 tensors, reading them back concurrently (one queue wait for all of them). Lazy
 * tensors (e.g. parameters that are views of an optimiser's buffers) are computed without being replaced by
 * their results, so the model keeps its views.
 */
export async function readTensors(tensors: readonly Tensor[]): Promise<Float32Array[]> {
  return await Promise.all(tensors.map(async (t) => {
    if (t.dtype !== "f32") throw new TypeError(`readTensors: only f32 tensors are saved, got ${t.dtype}`);
    const source = t.isRealized ? t : new Tensor(t.node);
    return await source.data() as Float32Array;
  }));
}

/**
 * Writes the model's parameters and the optimiser's state to `path` (atomically: a reader never sees a
 * half-written file).
 *
 * @example
 * ```ts
 * import { Mlp } from "../nn/mlp.ts";
 * import { AdamW } from "../nn/optim/adam.ts";
 * import { saveCheckpoint } from "./checkpoint.ts";
 * const model = new Mlp([4, 8, 2], { seed: 0 });
 * const optimizer = new AdamW(model, { lr: 1e-3 });
 * await saveCheckpoint(`${Deno.makeTempDirSync()}/ckpt.safetensors`, model, { optimizer, seed: 0 });
 * ```
 */
export async function saveCheckpoint(
  path: string,
  model: object,
  opts: SaveCheckpointOptions = {},
): Promise<void> {
  checkOptions("saveCheckpoint", SAVE_OPTIONS, opts);
  const step = numberText("step", opts.step ?? opts.optimizer?.stepCount ?? 0);
  const seed = opts.seed === undefined ? undefined : numberText("seed", opts.seed);
  const named = namedParameters(model);
  const only = opts.paths === undefined ? undefined : new Set(opts.paths);
  // A listed path that names no parameter (a misspelt "l.bais") would leave that tensor out of every checkpoint.
  const unknown = [...only ?? []].filter((p) => !named.some(([q]) => q === p));
  if (unknown.length > 0) {
    const names = named.map(([p]) => p);
    throw new OptionsError("saveCheckpoint", [
      `option "paths" lists ${namesWhich(unknown, "no parameter of the model")} (its parameters: ${
        shortList(names)
      })`,
    ]);
  }
  const params = named.filter(([p]) => only === undefined || only.has(p));
  const state = opts.optimizer === undefined ? [] : Object.entries(opts.optimizer.stateDict());
  const all = [
    ...params.map(([p, t]) => [`params.${p}`, t] as const),
    ...state.map(([k, t]) => [`optim.${k}`, t] as const),
  ];
  const data = await readTensors(all.map(([, t]) => t));
  const entries: Record<string, StEntry> = {};
  all.forEach(([name, t], i) => (entries[name] = { dtype: "F32", shape: [...t.shape], data: data[i] }));
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.metadata ?? {})) {
    if (RESERVED.has(k)) throw new RangeError(`saveCheckpoint: metadata key "${k}" is reserved`);
    metadata[k] = v;
  }
  metadata.format = CHECKPOINT_FORMAT;
  metadata.version = VERSION;
  metadata.step = step;
  if (seed !== undefined) metadata.seed = seed;
  if (opts.optimizer !== undefined) metadata.optimizer = JSON.stringify(opts.optimizer.describe());
  const extra = namedModules(model).filter(([, m]) => isStateful(m));
  if (extra.length > 0) {
    metadata.modules = JSON.stringify(
      Object.fromEntries(extra.map(([p, m]) => [p, (m as StatefulModule).extraState()])),
    );
  }
  if (opts.keepPrevious) await keepAsPrevious(path);
  await writeSafetensors(path, entries, metadata);
}

/**
 * Puts the checkpoint at `path` (if any) at its previous path, before a new one is written over it. A hard link
 * leaves `path` in place, so the atomic write that follows replaces it with the file's permissions kept (a rename
 * left the new file with the default ones: a 0600 checkpoint became 0644); where links are not supported, a
 * rename. Either way the newest complete checkpoint is at every moment at `path` or at the previous path.
 */
async function keepAsPrevious(path: string): Promise<void> {
  const previous = previousCheckpointPath(path);
  try {
    await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  await Deno.remove(previous).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  try {
    await Deno.link(path, previous);
  } catch {
    await Deno.rename(path, previous);
  }
}

/** Options of {@link loadCheckpoint}. */
export interface LoadCheckpointOptions {
  /** Device of the loaded tensors (default: the default device). */
  device?: DeviceName;
}

/**
 * Reads a checkpoint written by {@link saveCheckpoint}.
 *
 * @example
 * ```ts ignore
 * import { loadCheckpoint } from "./checkpoint.ts";
 * const ckpt = await loadCheckpoint("results/run/checkpoint.safetensors");
 * console.log(ckpt.step, Object.keys(ckpt.params));
 * ```
 */
export async function loadCheckpoint(path: string, opts: LoadCheckpointOptions = {}): Promise<Checkpoint> {
  checkOptions("loadCheckpoint", LOAD_OPTIONS, opts);
  const { tensors, metadata } = await readSafetensors(path);
  if (metadata.format !== CHECKPOINT_FORMAT) {
    throw new Error(
      `"${path}" is not a tessera checkpoint: its metadata "format" is ${JSON.stringify(metadata.format)}, ` +
        `expected "${CHECKPOINT_FORMAT}"`,
    );
  }
  if (metadata.version !== VERSION) {
    throw new Error(
      `checkpoint "${path}" has version ${metadata.version}; this code reads version ${VERSION}`,
    );
  }
  const step = readNumber(path, "step", metadata.step);
  const seed = metadata.seed === undefined ? undefined : readNumber(path, "seed", metadata.seed);
  const optimizer = metadata.optimizer === undefined
    ? undefined
    : readObject(path, "optimizer", metadata.optimizer);
  const modules = metadata.modules === undefined ? undefined : readObject(path, "modules", metadata.modules);
  const params: ParamDict = {};
  const state: ParamDict = {};
  for (const [name, entry] of tensors) {
    if (entry.dtype !== "F32" || !(entry.data instanceof Float32Array)) {
      throw new Error(`checkpoint "${path}": tensor "${name}" is ${entry.dtype}, expected F32`);
    }
    const t = tensor(entry.data, { shape: entry.shape, device: opts.device });
    if (name.startsWith("params.")) params[name.slice(7)] = t;
    else if (name.startsWith("optim.")) state[name.slice(6)] = t;
    else throw new Error(`checkpoint "${path}": unexpected tensor "${name}" (neither params.* nor optim.*)`);
  }
  await checkFinite(
    [
      ...Object.entries(params).map(([k, t]) => [`params.${k}`, t] as const),
      ...Object.entries(state).map(([k, t]) => [`optim.${k}`, t] as const),
    ],
    { what: `checkpoint "${path}"` },
  );
  const user = Object.fromEntries(Object.entries(metadata).filter(([k]) => !RESERVED.has(k)));
  return {
    step,
    seed,
    params,
    state,
    optimizer,
    modules: modules as Checkpoint["modules"],
    metadata: user,
  };
}

/** Options of {@link restoreCheckpoint}. */
export interface RestoreCheckpointOptions {
  /** Optimiser to restore (its state and step count); it must be of the kind that saved the checkpoint. */
  optimizer?: Optimizer;
  /**
   * Called with the checkpoint read back, before anything is loaded into the model: it throws (or rejects) to
   * refuse the checkpoint (the error becomes a {@link CheckpointMismatchError}).
   */
  accept?: (ckpt: Checkpoint) => void | Promise<void>;
}

/**
 * Loads a checkpoint into a model (every saved parameter must exist in it with the same shape) and, when
 * given, into an optimiser over that model. Returns the checkpoint. A checkpoint refused (by `accept`, the optimiser
 * or the model) leaves the model and the optimiser as they were.
 *
 * @example
 * ```ts ignore
 * import { Mlp } from "../nn/mlp.ts";
 * import { AdamW } from "../nn/optim/adam.ts";
 * import { restoreCheckpoint } from "./checkpoint.ts";
 * const model = new Mlp([4, 8, 2], { seed: 0 });
 * const optimizer = new AdamW(model, { lr: 1e-3 });
 * const { step } = await restoreCheckpoint("ckpt.safetensors", model, { optimizer });
 * ```
 */
export async function restoreCheckpoint(
  path: string,
  model: object,
  opts: RestoreCheckpointOptions = {},
): Promise<Checkpoint> {
  checkOptions("restoreCheckpoint", RESTORE_OPTIONS, opts);
  const device = namedParameters(model)[0]?.[1].device;
  const ckpt = await loadCheckpoint(path, { device });
  try {
    await opts.accept?.(ckpt);
  } catch (err) {
    throw new CheckpointMismatchError(path, (err as Error).message);
  }
  const opt = opts.optimizer;
  if (opt !== undefined) {
    const saved = ckpt.optimizer?.name;
    if (saved !== opt.name) {
      throw new CheckpointMismatchError(
        path,
        `it holds ${
          saved === undefined ? "no optimiser state" : `${saved} state`
        }, the optimiser is ${opt.name}`,
      );
    }
  }
  const stateful = Object.entries(ckpt.modules ?? {}).map(([p, st]) => {
    const m = getAt(model, p);
    if (!isStateful(m)) throw new CheckpointMismatchError(path, `the model has no stateful module "${p}"`);
    return [m, st] as const;
  });
  const previous = Object.fromEntries(namedParameters(model));
  try {
    loadParameters(model, ckpt.params);
    opt?.loadState(ckpt.state, ckpt.step);
  } catch (err) {
    // The optimiser refuses its state after the parameters were loaded: they are put back, so that a refused
    // checkpoint leaves the model as it was (a trainer can then run from the start or resume another).
    loadParameters(model, previous);
    throw new CheckpointMismatchError(path, (err as Error).message);
  }
  for (const [m, st] of stateful) m.loadExtraState(st);
  return ckpt;
}

/** What {@link restoreLatestCheckpoint} restored, and what it had to pass over. */
export interface RestoredCheckpoint {
  /** The checkpoint restored. */
  checkpoint: Checkpoint;
  /** Its file: the given path or the previous one. */
  path: string;
  /** Files that could not be used (damaged, truncated, non-finite), with the reason. */
  skipped: { path: string; reason: string }[];
}

/**
 * Restores the newest usable checkpoint of `path`: the file itself, or, when it is missing or cannot be read (a
 * damaged or truncated file, non-finite values), the one kept at {@link previousCheckpointPath}. When neither can
 * be used the error names both files, why, and what to remove to start over.
 *
 * @param path The checkpoint file (as given to {@link saveCheckpoint} with `keepPrevious`).
 * @param model The model to load the parameters into.
 * @param opts The optimiser to restore.
 * @returns The checkpoint, its file and the files passed over.
 */
export async function restoreLatestCheckpoint(
  path: string,
  model: object,
  opts: RestoreCheckpointOptions = {},
): Promise<RestoredCheckpoint> {
  // Checked here too: restoreCheckpoint's refusal would be taken below for a damaged file.
  checkOptions("restoreLatestCheckpoint", RESTORE_OPTIONS, opts);
  const skipped: { path: string; reason: string }[] = [];
  for (const candidate of [path, previousCheckpointPath(path)]) {
    try {
      await Deno.stat(candidate);
    } catch {
      continue;
    }
    try {
      return { checkpoint: await restoreCheckpoint(candidate, model, opts), path: candidate, skipped };
    } catch (err) {
      // A readable file for another run is not damage: the previous one would not fit either.
      if (err instanceof CheckpointMismatchError) throw err;
      skipped.push({ path: candidate, reason: err instanceof Error ? err.message : String(err) });
    }
  }
  if (skipped.length === 0) {
    throw new Error(
      `no checkpoint to continue from: neither "${path}" nor "${previousCheckpointPath(path)}" exists`,
    );
  }
  throw new Error(
    `no usable checkpoint: ${skipped.map((s) => `"${s.path}" (${s.reason})`).join("; ")}. Remove ${
      skipped.map((s) => `"${s.path}"`).join(" and ")
    } to run from the start`,
  );
}
