/**
 * Attaching LoRA to a model by name patterns (PEFT's `target_modules`), with per-module rank and alpha (PEFT's
 * `rank_pattern` / `alpha_pattern`, needed when EVA or VAS redistribute ranks) and any registered initialisation.
 *
 * @module
 */
import { asF32, Linear } from "../nn/linear.ts";
import { namedModules, replaceModule } from "../nn/module.ts";
import { findTargets, matchesKey, moduleNames } from "../nn/targets.ts";
import { deriveSeed } from "../nn/init.ts";
import { checkFinite, NonFiniteWeightsError } from "../nn/finite.ts";
import { realize, Tensor } from "../tensor/tensor.ts";
import { tensor } from "../tensor/creation.ts";
import { LoraLinear } from "../lora/linear.ts";
import { loraLayers } from "../lora/layers.ts";
import { getInitMethod } from "./methods.ts";
import { DATA_KEYS, type InitMethod } from "./registry.ts";
import { COMMON_OPTION_KEYS, type F32, type LayerData, type LoraInit } from "./types.ts";
import { z } from "../../deps.ts";
import { checkOptions, namesWhich, opt, OptionsError, showValue } from "../options.ts";

const TENSOR = z.custom<Tensor>((v) => v instanceof Tensor, { message: "must be a tensor" });

const LORA_CONFIG = z.object({
  targetModules: z.union([z.array(z.string().min(1)).min(1), z.instanceof(RegExp)]),
  rank: opt.count().optional(),
  alpha: opt.positive().optional(),
  rankPattern: z.record(z.string(), opt.index()).optional(),
  alphaPattern: z.record(z.string(), opt.positive()).optional(),
  useRslora: z.boolean().optional(),
  useDora: z.boolean().optional(),
  dropout: z.number().min(0).lt(1).optional(),
  init: z.string().min(1).optional(),
  initOptions: z.record(z.string(), z.unknown()).optional(),
  data: z.record(
    z.string(),
    z.object({
      activations: TENSOR.optional(),
      grads: TENSOR.optional(),
      gap: TENSOR.optional(),
      zText: TENSOR.optional(),
      zVision: TENSOR.optional(),
    }).strict(),
  ).optional(),
  seed: opt.seed().optional(),
}).strict();

/** How to adapt a model. Field names follow PEFT's `LoraConfig` (camel-cased). */
export interface LoraConfig {
  /**
   * Which `Linear` modules to adapt: a list of names matched as PEFT does (the module path equals the entry or ends
   * with `.` + entry, e.g. `["wq", "wv"]`), or a regular expression matched against the whole path.
   */
  targetModules: readonly string[] | RegExp;
  /** Rank (default 8). */
  rank?: number;
  /** lora_alpha (default 8, PEFT's default). */
  alpha?: number;
  /**
   * Per-module ranks: keys are matched like target entries (suffix, under either of a model's names), values
   * override `rank`; a key that selects no target is an error.
   */
  rankPattern?: Readonly<Record<string, number>>;
  /** Per-module alphas, matched like `rankPattern`. */
  alphaPattern?: Readonly<Record<string, number>>;
  /** rsLoRA scaling `alpha/√r`. */
  useRslora?: boolean;
  /** DoRA. */
  useDora?: boolean;
  /** Dropout on the LoRA path (default 0). */
  dropout?: number;
  /** The initialisation: a registered method name (default `"lora"`). */
  init?: string;
  /** Method-specific options of the initialisation. */
  initOptions?: Readonly<Record<string, unknown>>;
  /**
   * Calibration data per module path, for data-driven inits: keys are the target modules' whole paths (a key that
   * names no target is an error); kinds of data the method does not read are left unused.
   */
  data?: Readonly<Record<string, LayerData>>;
  /** Seed (each layer derives its own from it and its path; default 0). */
  seed?: number;
}

/** The value of the first key of `pattern` that selects a module going by `names` (as a target entry would). */
function patternValue(
  names: readonly string[],
  pattern: Readonly<Record<string, number>> | undefined,
): number | undefined {
  if (pattern === undefined) return undefined;
  for (const [k, v] of Object.entries(pattern)) if (names.some((n) => matchesKey(n, k))) return v;
  return undefined;
}

/**
 * A method's error for one layer, with the layer's path: a method sees a weight, not where it sits in the model.
 * Range and type errors keep their kind; a non-finite input is named by its path (`v.weight`); option errors, the
 * same for every layer, pass through.
 */
function inLayer(err: unknown, method: string, path: string): unknown {
  if (err instanceof OptionsError || !(err instanceof Error)) return err;
  if (err instanceof NonFiniteWeightsError) {
    const named = err.tensors.map((t) => ({ ...t, name: `${path}.${t.name}` }));
    return new NonFiniteWeightsError(`attachLora: the "${method}" initialisation's input`, named);
  }
  const Kind = err instanceof RangeError ? RangeError : err instanceof TypeError ? TypeError : Error;
  return new Kind(`attachLora: layer "${path}": ${err.message}`, { cause: err });
}

/** Makes every tensor of `inits` its own buffer (equal lazy expressions would otherwise share a node). */
async function makeConcrete(inits: LoraInit[]): Promise<void> {
  const all: Tensor[] = inits.flatMap((i) => [i.a, i.b, ...(i.base ? [i.base] : [])]);
  await realize(...all);
  const seen = new Set<unknown>();
  for (const i of inits) {
    for (const k of ["a", "b", "base"] as const) {
      const t = i[k];
      if (t === undefined) continue;
      if (seen.has(t.node)) {
        i[k] = tensor(await t.data(), { shape: [...t.shape], device: t.device });
      }
      seen.add(i[k]!.node);
    }
  }
}

/**
 * The tensors of initialised layers as `[name, tensor]`, named as in a PEFT adapter: `<path>.lora_A.weight`,
 * `<path>.lora_B.weight` and (when the method changes the base) `<path>.base_layer.weight`. Layers given rank 0 are
 * left out.
 */
export function initTensors(inits: ReadonlyMap<string, LoraInit>): [string, Tensor][] {
  const out: [string, Tensor][] = [];
  for (const [path, init] of inits) {
    if (init.rank === 0) continue;
    out.push([`${path}.lora_A.weight`, init.a], [`${path}.lora_B.weight`, init.b]);
    if (init.base !== undefined) out.push([`${path}.base_layer.weight`, init.base]);
  }
  return out;
}

/** What {@link attachLora} did. */
export interface AttachResult {
  /** Adapted module paths, in model order. */
  layers: string[];
  /** Per-layer rank, alpha and scale actually used (rank 0: left without adapter). */
  perLayer: Record<string, { rank: number; alpha: number; scale: number }>;
  /** Method diagnostics per layer. */
  info: Record<string, LoraInit["info"]>;
}

/**
 * Replaces every target `Linear` of `model` with a `LoraLinear` initialised by `cfg.init`. Layers given rank 0
 * (by EVA/VAS redistribution or `rankPattern`) are left as they are.
 *
 * @example
 * ```ts
 * import { Linear } from "../nn/linear.ts";
 * import { attachLora } from "./attach.ts";
 * const model = { q: new Linear(16, 16, { seed: 0 }), v: new Linear(16, 16, { seed: 1 }) };
 * const { layers } = await attachLora(model, { targetModules: ["q", "v"], rank: 4, alpha: 8, init: "lora" });
 * console.log(layers); // ["q", "v"]
 * ```
 */
export async function attachLora(model: object, cfg: LoraConfig): Promise<AttachResult> {
  checkOptions("attachLora", LORA_CONFIG, cfg);
  // A common option or layer data inside initOptions would reach some methods and not others (initLayers).
  const misplaced = Object.entries(cfg.initOptions ?? {}).flatMap(([k, v]) =>
    COMMON_OPTION_KEYS.has(k)
      ? [`option "initOptions.${k}" (${showValue(v)}) is not a method option: set ${k} on the config itself`]
      : DATA_KEYS.has(k)
      ? [`option "initOptions.${k}" (${showValue(v)}) is calibration data: give it per layer in data`]
      : []
  );
  if (misplaced.length > 0) throw new OptionsError("attachLora", misplaced);
  const method: InitMethod = getInitMethod(cfg.init ?? "lora");
  const targets = findTargets(model, cfg.targetModules);
  if (targets.length === 0) {
    const names = namedModules(model).filter(([, m]) => m instanceof Linear).map(([p]) => p);
    throw new RangeError(
      `attachLora: no Linear module matches targetModules ${String(cfg.targetModules)}; the model has: ${
        names.join(", ") || "none"
      }`,
    );
  }
  // Data for a path that is no target would be dropped (a misspelt path, or the layers of another target list).
  const strays = Object.keys(cfg.data ?? {}).filter((p) => !targets.some(([path]) => path === p));
  if (strays.length > 0) {
    throw new OptionsError("attachLora", [
      `option "data" has data for ${
        namesWhich(strays, "no target module", "no target modules")
      } (the targets: ${targets.map(([p]) => `"${p}"`).join(", ")})`,
    ]);
  }
  // Pattern keys select among the targets, under either name; one that selects none is a mistake, not a no-op.
  for (const key of ["rankPattern", "alphaPattern"] as const) {
    const keys = Object.keys(cfg[key] ?? {});
    if (keys.length > 0 && method.initLayers !== undefined) {
      throw new RangeError(
        `attachLora: init "${method.name}" sets each layer's rank itself; ${key} is not supported`,
      );
    }
    for (const k of keys) {
      if (!targets.some(([path]) => moduleNames(model, path).some((n) => matchesKey(n, k)))) {
        throw new RangeError(
          `attachLora: ${key} key "${k}" selects none of the ${targets.length} target modules (e.g. ` +
            `${moduleNames(model, targets[0][0]).map((n) => `"${n}"`).join(" or ")})`,
        );
      }
    }
  }
  for (const need of method.needs) {
    for (const [path] of targets) {
      const d = cfg.data?.[path];
      const ok = need === "activations"
        ? d?.activations
        : need === "grads"
        ? d?.grads
        : d?.gap ?? (d?.zText && d?.zVision);
      if (!ok) throw new RangeError(`attachLora: init "${method.name}" needs ${need} for layer "${path}"`);
    }
  }
  // Calibration data with a NaN or an infinity need not give a non-finite init (an SVD can lose a NaN): check it.
  const data: [string, Tensor][] = [];
  for (const [path] of targets) {
    for (const [key, t] of Object.entries(cfg.data?.[path] ?? {})) {
      if (t instanceof Tensor) data.push([`${path}.${key}`, t]);
    }
  }
  await checkFinite(data, {
    what: "attachLora: the calibration data",
    hint: "Check the batches the activations or gradients were collected on, and the model's weights",
  });
  const base = {
    rank: cfg.rank ?? 8,
    alpha: cfg.alpha ?? 8,
    useRslora: cfg.useRslora ?? false,
    seed: cfg.seed ?? 0,
  };
  const inits = new Map<string, LoraInit>();
  if (method.initLayers !== undefined) {
    const res = await method.initLayers(
      targets.map(([name, m]) => ({ name, weight: asF32(m.weight), data: cfg.data?.[name] })),
      { ...base, ...cfg.initOptions },
    );
    for (const [k, v] of res) inits.set(k, v);
  } else {
    for (const [path, m] of targets) {
      const rank = patternValue(moduleNames(model, path), cfg.rankPattern) ?? base.rank;
      const alpha = patternValue(moduleNames(model, path), cfg.alphaPattern) ?? base.alpha;
      if (rank === 0) continue;
      try {
        inits.set(
          path,
          await method.init(asF32(m.weight), {
            ...cfg.initOptions,
            ...cfg.data?.[path],
            rank,
            alpha,
            useRslora: base.useRslora,
            seed: deriveSeed(base.seed, path),
          }),
        );
      } catch (err) {
        throw inLayer(err, method.name, path);
      }
    }
  }
  const list = [...inits.values()].filter((i) => i.rank > 0);
  await makeConcrete(list);
  await checkFinite(initTensors(inits), {
    what: `attachLora: the "${method.name}" initialisation's output`,
    hint: "Check the model's weights, the calibration data (activations, gradients) and the method's options",
  });
  // Offset inits keep copies of B₀, A₀ (the trained A and B are replaced step by step) for exporting the adapter.
  const initials = new Map<string, { a: F32; b: F32 }>();
  if (method.kind === "offset") {
    for (const [path, i] of inits) {
      if (i.rank > 0) initials.set(path, { a: i.a.mul(1), b: i.b.mul(1) });
    }
    await realize(...[...initials.values()].flatMap((c) => [c.a, c.b]));
  }
  const result: AttachResult = { layers: [], perLayer: {}, info: {} };
  for (const [path, m] of targets) {
    const init = inits.get(path);
    if (init === undefined || init.rank === 0) {
      result.perLayer[path] = { rank: 0, alpha: 0, scale: 0 };
      continue;
    }
    replaceModule(
      model,
      path,
      LoraLinear.wrap(m, init, {
        dropout: cfg.dropout,
        useDora: cfg.useDora,
        seed: deriveSeed(base.seed, path, "dropout"),
        useRslora: base.useRslora,
        initial: initials.get(path),
      }),
    );
    result.layers.push(path);
    result.perLayer[path] = { rank: init.rank, alpha: init.alpha, scale: init.scale };
    if (init.info !== undefined) result.info[path] = init.info;
  }
  // DoRA magnitudes are computed from the new weights: make them concrete too.
  const mags = loraLayers(model).map(([, l]) => l.lora_magnitude_vector).filter((t): t is F32 =>
    t !== undefined
  );
  await realize(...mags);
  return result;
}
