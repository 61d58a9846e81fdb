/**
 * Adapter files in Hugging Face PEFT's format, so adapters move between tessera and PEFT (0.21):
 *
 * - `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight` `[r, d_in]`,
 *   `base_model.model.<module>.lora_B.weight` `[d_out, r]` and, with DoRA, `base_model.model.<module>.lora_magnitude_vector`
 *   `[d_out]` (float32), and `base_model.model.<module>.base_layer.weight` for a base weight that is not the
 *   original's (PEFT writes it for a targeted `lm_head`, and loads any such weight over the base's, as tessera
 *   does). For a model with a second naming convention (a Llama-family model answers with `transformers`'
 *   module paths, `model.layers.0.self_attn.q_proj`) `<module>` is that name and rows are in that convention's
 *   layout (queries and keys: rotate-half RoPE), so `PeftModel.from_pretrained` on the original base gives tessera's
 *   logits.
 * - `adapter_config.json`: `peft_type: "LORA"`, `r`, `lora_alpha`, `target_modules`, `use_rslora`, `use_dora`,
 *   `rank_pattern`, `alpha_pattern` (full module paths as keys), `lora_dropout`, `init_lora_weights: true` (the
 *   adapter is data, not an init recipe; `"mica"` for layers whose B stays frozen in training, which PEFT 0.21
 *   reads as its MiCA variant) and PEFT's other standard keys. `layers_to_transform` is written null: modules of some
 *   layers only are listed by full name, which PEFT adapts in any layer; read, it selects layers as PEFT does.
 *
 * An initialisation that rewrote the base as `W_res = W − s·B₀·A₀` (PiSSA, MiLoRA, OLoRA, CorDA, LoRA-GA, LoRAM) is
 * saved, by default, as the plain LoRA of rank 2r that gives the same weight on the unmodified W:
 * `A' = [A; A₀]`, `B' = [B, −B₀]`, with `lora_alpha` scaled so that the scale stays `s` (2α, or √2·α with rsLoRA),
 * the conversion PEFT documents for PiSSA and OLoRA. A base that is not an offset of W (LoftQ's quantised W, or a
 * base weight read from a PEFT file) cannot be expressed that way: the adapter corrects that base, so the base is
 * saved with it as `base_model.model.<module>.base_layer.weight` in `adapter_model.safetensors`, which PEFT loads
 * over the original base's. `{ form: "raw" }` keeps rank r and writes every rewritten base, under the same keys, to
 * `base_model_weights.safetensors` instead, for tessera-to-tessera use. Directories written before keep LoftQ's base
 * there under `<module>.weight`, and still load. Read back, an adapter PEFT saved without conversion after exact PiSSA
 * or OLoRA (`init_lora_weights` `"pissa"` / `"olora"`, no base in the files) gets its residual base derived from the
 * model's weight, as PEFT's `from_pretrained` derives it; other base-rewriting inits are refused without their base.
 *
 * @module
 */
import { readSafetensors, type StEntry, toFloat32, writeSafetensors } from "../io/safetensors.ts";
import { writeTextFileAtomic } from "../io/atomic.ts";
import {
  type AliasedModule,
  asAliased,
  getAt,
  namedModules,
  namedParameters,
  replaceModule,
} from "../nn/module.ts";
import { checkFinite } from "../nn/finite.ts";
import { asF32, type F32, Linear } from "../nn/linear.ts";
import { concat, tensor } from "../tensor/creation.ts";
import { type LoraInit, LoraLinear, loraScale } from "./linear.ts";
import { loraLayers } from "./layers.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";
import { pissaInit } from "../init/pissa.ts";
import { oloraInit } from "../init/olora.ts";

const SAVE_OPTIONS = z.object({
  baseModel: z.string().optional(),
  dropout: z.number().min(0).lt(1).optional(),
  form: z.enum(["peft", "raw"]).optional(),
  init: z.string().min(1).optional(),
}).strict();
const LOAD_OPTIONS = z.object({
  allowRewrittenBase: z.boolean().optional(),
  training: z.boolean().optional(),
})
  .strict();

const PREFIX = "base_model.model.";

/**
 * The files of an adapter directory: {@link saveAdapter} writes them (the base weights, which only the raw form
 * writes, removed when not needed).
 */
export const ADAPTER_FILES: Readonly<Record<"model" | "config" | "base", string>> = {
  model: "adapter_model.safetensors",
  config: "adapter_config.json",
  base: "base_model_weights.safetensors",
};

/** Options of {@link saveAdapter}. */
export interface SaveAdapterOptions {
  /** `base_model_name_or_path` in the config (the original base model's directory or hub name). */
  baseModel?: string;
  /** Dropout used in training (`lora_dropout`; default: the layers' own). */
  dropout?: number;
  /**
   * `"peft"` (default): what PEFT loads onto the original base (offset initialisations as rank-2r LoRA, other
   * rewritten bases as `base_layer.weight` tensors of the adapter file);
   * `"raw"`: rank r with every rewritten base in `base_model_weights.safetensors` (tessera only).
   */
  form?: "peft" | "raw";
  /** The initialisation's name, written as `init_lora_weights` in the raw form (the peft form writes `true`). */
  init?: string;
}

/** PEFT's `adapter_config.json` fields that tessera reads and writes. */
export interface AdapterConfig {
  /** Always "LORA". */
  peft_type: "LORA";
  /** Default rank. */
  r: number;
  /** Default alpha. */
  lora_alpha: number;
  /** Adapted module names (matched as PEFT does: the whole path, or its end after a dot), or one regex. */
  target_modules: string[] | string;
  /** rsLoRA scaling. */
  use_rslora: boolean;
  /** DoRA. */
  use_dora: boolean;
  /** Per-module ranks differing from `r` (keys are regular expressions matched at the end of module paths). */
  rank_pattern: Record<string, number>;
  /** Per-module alphas differing from `lora_alpha` (matched like `rank_pattern`). */
  alpha_pattern: Record<string, number>;
  /** Dropout. */
  lora_dropout: number;
  /** true (the weights are data) or the name of the initialisation that made them. */
  init_lora_weights: boolean | string;
  /** Base model name. */
  base_model_name_or_path: string | null;
  /**
   * The layers whose modules a `target_modules` entry selects by the end of their name (a full name is selected in
   * any layer): one index, or a list (empty: every layer). Null (written so) for every layer.
   */
  layers_to_transform?: number | number[] | null;
  /**
   * The path segment (a regex) before the layer index in module names, or several tried in order; null or empty: the
   * first number that follows a segment after another (`model.layers.3.…`).
   */
  layers_pattern?: string | string[] | null;
  /** Other PEFT keys are kept as read. */
  [key: string]: unknown;
}

function mostCommon(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0][0]; // ties: the larger value
}

/** `s` as a regular expression matching itself literally (PEFT reads pattern keys as regular expressions). */
function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The module names of the model's second convention, or the paths themselves; and back. */
function naming(model: object): {
  aliased: AliasedModule | undefined;
  external: (path: string) => string;
  internal: (name: string) => string | undefined;
} {
  const aliased = asAliased(model);
  const toPath = new Map<string, string>();
  for (const [path] of namedModules(model)) {
    toPath.set(path, path);
    const alias = aliased?.moduleAlias(path);
    if (alias !== undefined) toPath.set(alias, path);
  }
  return {
    aliased,
    external: (path) => aliased?.moduleAlias(path) ?? path,
    internal: (name) => toPath.get(name),
  };
}

/** A tensor's values as host rows in the external layout of `path`'s module. */
async function rowsOut(t: F32, path: string, aliased: AliasedModule | undefined): Promise<StEntry> {
  const shape = [...t.shape];
  let data: Float32Array = Float32Array.from(await t.data() as Float32Array);
  if (aliased !== undefined && shape.length <= 2) data = aliased.convertRows(path, data, shape[1] ?? 1, true);
  return { dtype: "F32", shape, data };
}

/**
 * Writes the model's adapters to `dir` (created if needed) in PEFT's format; see the module documentation for what
 * is written and how rewritten bases are handled. Returns the config written. Each file is replaced atomically, and
 * `adapter_config.json` is removed before the weights are written and written after them: a save that is stopped
 * midway (killed, a full disk) leaves a directory without a config, which neither tessera nor PEFT loads, rather
 * than new weights beside an older adapter's config.
 *
 * @example
 * ```ts
 * import { Linear } from "../nn/linear.ts";
 * import { attachLora } from "../init/attach.ts";
 * import { loadAdapter, saveAdapter } from "./adapter.ts";
 * const model = { q: new Linear(16, 16, { seed: 0 }) };
 * await attachLora(model, { targetModules: ["q"], rank: 4, init: "pissa" });
 * const dir = await Deno.makeTempDir();
 * const config = await saveAdapter(dir, model); // rank 8: [A; A0], [B, -B0] on the original weight
 * await loadAdapter(dir, { q: new Linear(16, 16, { seed: 0 }) });
 * ```
 */
export async function saveAdapter(
  dir: string,
  model: object,
  opts: SaveAdapterOptions = {},
): Promise<AdapterConfig> {
  checkOptions("saveAdapter", SAVE_OPTIONS, opts);
  const layers = loraLayers(model);
  if (layers.length === 0) throw new Error("saveAdapter: the model has no LoRA layers");
  const form = opts.form ?? "peft";
  const rslora = new Set(layers.map(([, l]) => l.useRslora));
  if (rslora.size > 1) throw new Error("saveAdapter: some layers use rsLoRA scaling and others do not");
  const useRslora = rslora.has(true);
  // PEFT's use_dora is one flag for the whole adapter: a file with magnitudes on some layers only would load in
  // PEFT with the others' magnitudes missing (and different outputs).
  const dora = layers.filter(([, l]) => l.lora_magnitude_vector !== undefined).map(([p]) => p);
  if (dora.length > 0 && dora.length < layers.length) {
    const plain = layers.find(([, l]) => l.lora_magnitude_vector === undefined)![0];
    throw new Error(
      `saveAdapter: ${dora.length} of ${layers.length} LoRA layers use DoRA (e.g. "${
        dora[0]
      }") and the others ` +
        `do not (e.g. "${plain}"); PEFT's use_dora covers every layer of an adapter`,
    );
  }
  // MiCA's frozen B is recorded as PEFT records it (init_lora_weights "mica"), which covers the whole adapter.
  const frozenB = layers.filter(([, l]) => l.frozenParameters.includes("lora_B.weight")).map(([p]) => p);
  if (frozenB.length > 0 && frozenB.length < layers.length) {
    throw new Error(
      `saveAdapter: ${frozenB.length} of ${layers.length} LoRA layers keep B frozen (e.g. "${
        frozenB[0]
      }") and the ` +
        `others do not; PEFT's init_lora_weights "mica" covers every layer of an adapter`,
    );
  }
  const { aliased, external } = naming(model);
  const tensors: Record<string, StEntry> = {};
  const bases: Record<string, StEntry> = {};
  const ranks: [string, number][] = [];
  const alphas: [string, number][] = [];
  for (const [path, l] of layers) {
    const name = external(path);
    let a = l.lora_A.weight;
    let b = l.lora_B.weight;
    const initial = l.initialAdapter;
    if (form === "peft" && initial !== undefined) {
      // W + s·[B, −B₀]·[A; A₀] = (W − s·B₀·A₀) + s·B·A: the same weight on the original W.
      a = concat([a, initial.a], 0) as F32;
      b = concat([b, initial.b.neg() as F32], 1) as F32;
    } else if (l.baseRewritten) {
      // PEFT loads a base_layer weight it finds in the adapter file over the base's (as it writes lm_head's).
      (form === "raw" ? bases : tensors)[`${PREFIX}${name}.base_layer.weight`] = await rowsOut(
        asF32(l.base_layer.weight),
        path,
        aliased,
      );
    }
    const rank = a.shape[0];
    tensors[`${PREFIX}${name}.lora_A.weight`] = await rowsOut(a, "", undefined);
    tensors[`${PREFIX}${name}.lora_B.weight`] = await rowsOut(b, path, aliased);
    if (l.lora_magnitude_vector !== undefined) {
      tensors[`${PREFIX}${name}.lora_magnitude_vector`] = await rowsOut(
        l.lora_magnitude_vector,
        path,
        aliased,
      );
    }
    ranks.push([name, rank]);
    // PEFT recomputes the scale as lora_alpha / r (or / √r): write the alpha that gives this layer's scale.
    alphas.push([name, l.scale * (useRslora ? Math.sqrt(rank) : rank)]);
  }
  const r = mostCommon(ranks.map(([, v]) => v));
  const alpha = mostCommon(alphas.map(([, v]) => v));
  const config: AdapterConfig = {
    peft_type: "LORA",
    task_type: null,
    r,
    lora_alpha: alpha,
    target_modules: targetModules(model, layers.map(([p]) => p), external),
    use_rslora: useRslora,
    use_dora: dora.length > 0,
    rank_pattern: pattern(ranks, r),
    alpha_pattern: pattern(alphas, alpha),
    lora_dropout: opts.dropout ?? mostCommon(layers.map(([, l]) => l.dropout)),
    bias: "none",
    fan_in_fan_out: false,
    init_lora_weights: frozenB.length > 0
      ? "mica"
      : form === "raw" && opts.init !== undefined && opts.init !== "lora"
      ? opts.init
      : true,
    modules_to_save: null,
    inference_mode: true,
    base_model_name_or_path: opts.baseModel ?? null,
    revision: null,
    layers_to_transform: null,
    layers_pattern: null,
  };
  await Deno.mkdir(dir, { recursive: true });
  // The config goes last, and the old one first: a save stopped midway leaves no config, never new weights
  // beside the config of the adapter they replace (which PEFT would load with its alpha and ranks).
  await Deno.remove(`${dir}/${ADAPTER_FILES.config}`).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  const meta = { format: "pt", producer: "tessera" };
  await writeSafetensors(`${dir}/${ADAPTER_FILES.model}`, tensors, meta);
  if (Object.keys(bases).length > 0) {
    await writeSafetensors(`${dir}/${ADAPTER_FILES.base}`, bases, meta);
  } else await Deno.remove(`${dir}/${ADAPTER_FILES.base}`).catch(() => {});
  await writeTextFileAtomic(`${dir}/${ADAPTER_FILES.config}`, JSON.stringify(config, null, 2) + "\n");
  return config;
}

/**
 * PEFT's `rank_pattern` / `alpha_pattern` for per-module values that differ from the default: keyed by the last
 * name (`v_proj`) when every adapted module of that name has the same value, else by the full path, escaped and
 * anchored (`^a\.q`): PEFT matches a key at the end of a name after a dot (`(.*\.)?(key)$`), so a bare `a\.q`
 * would give `b.a.q` the value of `a.q` too, while `^` holds only at the start of the name.
 */
function pattern(values: [string, number][], fallback: number): Record<string, number> {
  const last = (n: string) => n.slice(n.lastIndexOf(".") + 1);
  const out: Record<string, number> = {};
  for (const [name, v] of values) {
    if (v === fallback) continue;
    const same = values.filter(([n]) => last(n) === last(name));
    if (same.every(([, w]) => w === v)) out[escapeRegex(last(name))] = v;
    else out[`^${escapeRegex(name)}`] = v;
  }
  return out;
}

/**
 * `target_modules` for the adapted `paths`: the distinct last names (`q_proj`, `v_proj`) when they select exactly
 * these modules among the model's `Linear` layers (PEFT matches an entry at the end of a path), else every path
 * when those select exactly them, else (a path that ends another module's path: `a.q` and `b.a.q`) one regular
 * expression that PEFT matches against whole paths, the paths escaped and joined by `|`.
 */
function targetModules(model: object, paths: string[], external: (p: string) => string): string[] | string {
  const names = paths.map(external);
  const linears = namedModules(model)
    .filter(([, m]) => m instanceof Linear || m instanceof LoraLinear)
    .map(([p]) => external(p));
  const selects = (list: string[]) => {
    const selected = linears.filter((n) => list.some((k) => n === k || n.endsWith(`.${k}`)));
    return selected.length === names.length && selected.every((n) => names.includes(n));
  };
  const short = [...new Set(names.map((n) => n.slice(n.lastIndexOf(".") + 1)))].sort();
  if (selects(short)) return short;
  return selects(names) ? names : names.map(escapeRegex).join("|");
}

/** PEFT config keys that do not change the adapted model's forward pass (or only how PEFT runs it). */
const INERT_KEYS = new Set([
  "peft_type",
  "task_type",
  "auto_mapping",
  "base_model_name_or_path",
  "revision",
  "inference_mode",
  "peft_version",
  "init_lora_weights",
  "loftq_config",
  "eva_config",
  "corda_config",
  "lora_ga_config",
  "megatron_core",
  "qalora_group_size",
  "runtime_config",
]);

/** Keys tessera implements. */
const READ_KEYS = new Set([
  "r",
  "lora_alpha",
  "target_modules",
  "exclude_modules",
  "use_rslora",
  "use_dora",
  "rank_pattern",
  "alpha_pattern",
  "lora_dropout",
  "layers_to_transform",
  "layers_pattern",
]);

/** Keys whose value must be the "off" value given here; anything else changes the math and is refused. */
const OFF_VALUES: Record<string, unknown[]> = {
  bias: ["none"],
  fan_in_fan_out: [false],
  modules_to_save: [null],
  layer_replication: [null],
  lora_bias: [false],
  use_qalora: [false],
  target_parameters: [null],
  trainable_token_indices: [null],
  alora_invocation_tokens: [null],
  megatron_config: [null],
  use_bdlora: [null],
  arrow_config: [null],
  kasa_config: [null],
  monteclora_config: [null],
  velora_config: [null],
  ensure_weight_tying: [false],
};

/** Initialisations whose adapters only make sense on a rewritten base (PEFT warns to convert them). */
const REWRITING_INITS = /^(pissa|olora|corda|loftq|milora|loram|lora-ga|lora_ga)/i;

/**
 * The rewriting inits whose base PEFT's `from_pretrained` derives again from the original weight, deterministically,
 * before it loads A and B (its `update_layer` re-runs the init): exact PiSSA (`"pissa"`, the thin SVD:
 * `W_res = W − U_r S_r V_rᵀ`) and OLoRA (`"olora"`, any case: `W_res = W − s·Q_r R_r`). Row permutations (the rotary
 * layouts) commute with both, so tessera's own init on its own layout gives the same residual.
 */
function derivedBase(
  init: unknown,
): ((w: F32, rank: number, alpha: number, rs: boolean) => Promise<LoraInit>) | undefined {
  if (init === "pissa") return (w, rank, alpha, useRslora) => pissaInit(w, { rank, alpha, useRslora });
  if (typeof init === "string" && init.toLowerCase() === "olora") {
    return (w, rank, alpha, useRslora) => oloraInit(w, { rank, alpha, useRslora });
  }
  return undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads `adapter_config.json` with clear errors (every key checked: implemented, inert, or off). */
export async function readAdapterConfig(dir: string): Promise<AdapterConfig> {
  const path = `${dir}/adapter_config.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    const weights = await Deno.stat(`${dir}/${ADAPTER_FILES.model}`).then(() => true, () => false);
    if (e instanceof Deno.errors.NotFound && weights) {
      throw new Error(
        `cannot read adapter config "${path}": the directory holds ${ADAPTER_FILES.model} without it, as a ` +
          `save stopped before its end leaves it (saveAdapter writes the config last); save the adapter again`,
      );
    }
    throw new Error(`cannot read adapter config "${path}": ${(e as Error).message}`);
  }
  if (!isRecord(raw)) throw new Error(`adapter config "${path}" is not a JSON object`);
  const c = raw as Partial<AdapterConfig>;
  const where = `adapter config "${path}"`;
  if (c.peft_type !== undefined && c.peft_type !== "LORA") {
    throw new Error(`${where}: peft_type is ${JSON.stringify(c.peft_type)}, only "LORA" is supported`);
  }
  for (const [key, value] of Object.entries(raw)) {
    if (READ_KEYS.has(key) || INERT_KEYS.has(key)) continue;
    const off = OFF_VALUES[key];
    if (off === undefined) {
      throw new Error(`${where}: key "${key}" (${JSON.stringify(value)}) is not implemented`);
    }
    // An empty modules_to_save saves no module, as null (PEFT tests it for truth).
    const none = value === undefined ||
      (key === "modules_to_save" && Array.isArray(value) && value.length === 0);
    if (!off.some((v) => v === value || (v === null && none))) {
      throw new Error(
        `${where}: "${key}" is ${JSON.stringify(value)}; only ${
          off.map((v) => JSON.stringify(v)).join(" or ")
        } ` +
          `is supported`,
      );
    }
  }
  const positive = (k: "r" | "lora_alpha") => {
    const v = c[k];
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      throw new Error(`${where}: "${k}" must be a positive number, found ${JSON.stringify(v)}`);
    }
    return v;
  };
  const pattern = (k: "rank_pattern" | "alpha_pattern") => {
    const v = c[k] ?? {};
    if (!isRecord(v) || Object.values(v).some((x) => typeof x !== "number" || !(x > 0))) {
      throw new Error(
        `${where}: "${k}" must map module patterns to positive numbers, found ${JSON.stringify(v)}`,
      );
    }
    for (const key of Object.keys(v)) patternRegex(key, where, k); // each compiles, or names the key
    return v as Record<string, number>;
  };
  const dropout = c.lora_dropout ?? 0;
  if (typeof dropout !== "number" || !(dropout >= 0 && dropout < 1)) {
    throw new Error(`${where}: "lora_dropout" must be in [0, 1), found ${JSON.stringify(dropout)}`);
  }
  const names = (k: "target_modules" | "exclude_modules", v: unknown) => {
    if (!(typeof v === "string" || (Array.isArray(v) && v.every((t) => typeof t === "string")))) {
      throw new Error(`${where}: "${k}" must be a list of names or a regex, found ${JSON.stringify(v)}`);
    }
    if (typeof v === "string") fullRegex(v, where, k); // compiles, or names the key
  };
  const targets = c.target_modules;
  names("target_modules", targets);
  if (typeof targets === "string" && targets.toLowerCase() === "all-linear") {
    throw new Error(
      `${where}: "target_modules" is ${
        JSON.stringify(targets)
      }, PEFT's shorthand for every Linear layer but the ` +
        `output head, which tessera does not expand: list the modules (PEFT's save_pretrained writes them out)`,
    );
  }
  if (c.exclude_modules !== undefined && c.exclude_modules !== null) {
    names("exclude_modules", c.exclude_modules);
  }
  const layers = c.layers_to_transform ?? null;
  if (
    layers !== null && !Number.isInteger(layers) &&
    !(Array.isArray(layers) && layers.every((i) => Number.isInteger(i)))
  ) {
    throw new Error(
      `${where}: "layers_to_transform" must be a layer index or a list of them, found ${
        JSON.stringify(layers)
      }`,
    );
  }
  const layersPattern = c.layers_pattern ?? null;
  if (
    layersPattern !== null && typeof layersPattern !== "string" &&
    !(Array.isArray(layersPattern) && layersPattern.every((p) => typeof p === "string"))
  ) {
    throw new Error(
      `${where}: "layers_pattern" must be a name, a regex or a list of them, found ${
        JSON.stringify(layersPattern)
      }`,
    );
  }
  // PEFT's LoraConfig refuses these three combinations when it reads the file.
  for (const [k, v] of [["layers_to_transform", layers], ["layers_pattern", layersPattern]] as const) {
    if (typeof targets === "string" && v !== null) {
      throw new Error(
        `${where}: "${k}" is ${JSON.stringify(v)} while "target_modules" is the regex ${
          JSON.stringify(targets)
        }; PEFT refuses ${k} with a regex of targets`,
      );
    }
  }
  if (layers === null && layersPattern !== null && layersPattern.length > 0) {
    throw new Error(
      `${where}: "layers_pattern" is ${
        JSON.stringify(layersPattern)
      } but "layers_to_transform" is null; PEFT refuses a ` +
        `layers_pattern without layers_to_transform`,
    );
  }
  for (const p of typeof layersPattern === "string" ? [layersPattern] : layersPattern ?? []) {
    layerRegex(p, where); // compiles, or names the key
  }
  for (const k of ["use_rslora", "use_dora"] as const) {
    if (c[k] !== undefined && c[k] !== null && typeof c[k] !== "boolean") {
      throw new Error(`${where}: "${k}" must be true or false, found ${JSON.stringify(c[k])}`);
    }
  }
  return {
    ...c,
    peft_type: "LORA",
    r: positive("r"),
    lora_alpha: positive("lora_alpha"),
    target_modules: targets as string[] | string,
    use_rslora: c.use_rslora ?? false,
    use_dora: c.use_dora ?? false,
    rank_pattern: pattern("rank_pattern"),
    alpha_pattern: pattern("alpha_pattern"),
    lora_dropout: dropout,
    init_lora_weights: c.init_lora_weights ?? true,
    base_model_name_or_path: c.base_model_name_or_path ?? null,
    layers_to_transform: layers,
    layers_pattern: layersPattern,
  };
}

/**
 * A regex of an adapter config (Python's `re` syntax, which PEFT uses) as a JavaScript RegExp matching `wrap`'s
 * result: `\A` / `\Z` become `^` / `$`, named groups `(?P<n>…)` / `(?P=n)` their JavaScript spelling, and a
 * leading `(?i)` the `i` flag. Anything else JavaScript cannot compile is an error naming the key and the pattern
 * (never a silent mismatch).
 */
function pyRegex(pattern: string, wrap: (p: string) => string, where: string, key: string): RegExp {
  let flags = "";
  let p = pattern;
  if (p.startsWith("(?i)")) [flags, p] = ["i", p.slice(4)];
  p = p.replace(
    /\\\\|\\A|\\Z|\(\?P<|\(\?P=(\w+)\)/g,
    (m, name) =>
      m === "\\\\" ? m : m === "\\A" ? "^" : m === "\\Z" ? "$" : m === "(?P<" ? "(?<" : `\\k<${name}>`,
  );
  try {
    return new RegExp(wrap(p), flags);
  } catch (e) {
    throw new Error(
      `${where}: "${key}" holds ${JSON.stringify(pattern)}, not a regular expression this reader can match ` +
        `(${(e as Error).message})`,
    );
  }
}

/** PEFT's pattern rule, `re.match(rf"(.*\.)?({key})$", name)`. */
const patternRegex = (k: string, where: string, key: string) =>
  pyRegex(k, (p) => `^(.*\\.)?(${p})$`, where, key);
/** PEFT's rule for a string of target (or excluded) modules: `re.fullmatch`. */
const fullRegex = (t: string, where: string, key: string) => pyRegex(t, (p) => `^(?:${p})$`, where, key);

/** PEFT's pattern lookup: the first key (in order) that matches the end of `name` after a dot. */
function patternValue(
  pattern: Record<string, number>,
  name: string,
  where: string,
  key: string,
): number | undefined {
  for (const [k, v] of Object.entries(pattern)) if (patternRegex(k, where, key).test(name)) return v;
  return undefined;
}

/** PEFT's target rule: a string is a regex over the whole name; a list entry equals the name or ends it. */
function isTarget(targets: string[] | string, name: string, where: string, key: string): boolean {
  if (typeof targets === "string") return fullRegex(targets, where, key).test(name);
  return targets.some((t) => name === t || name.endsWith(`.${t}`));
}

/** PEFT's layer index search with no `layers_pattern`: the first number that is a segment after two others. */
const ANY_LAYER = /^.*?\.[^.]*\.(?<idx>\d+)\./;

/**
 * PEFT's layer index search after `layers_pattern` entry `pattern`,
 * `re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", name)`. A leading inline flag (`(?i)`) lands mid-pattern
 * there, which Python refuses, and so is refused here.
 */
function layerRegex(pattern: string, where: string): RegExp {
  if (/^\(\?[aiLmsux]+\)/.test(pattern)) {
    throw new Error(
      `${where}: "layers_pattern" holds ${
        JSON.stringify(pattern)
      }, whose leading inline flag Python refuses inside ` +
        `PEFT's layer regex`,
    );
  }
  return pyRegex(pattern, (p) => `^(?:(?:^|.*?\\.)${p}\\.(?<idx>\\d+)\\.)`, where, "layers_pattern");
}

/** The layer index PEFT reads in module name `name`: after the first of `patterns` that matches (none: undefined). */
function layerIndex(name: string, patterns: readonly RegExp[]): number | undefined {
  for (const re of patterns) {
    const m = re.exec(name);
    if (m !== null) return m.groups?.idx === undefined ? undefined : Number(m.groups.idx);
  }
  return undefined;
}

/** What decides, in PEFT's `check_target_module_exists`, whether a module is adapted (`exclude_modules` aside). */
interface Selection {
  targets: string[] | string;
  /** The layers a target selects in by the end of a name; undefined: every layer. */
  layers: number[] | undefined;
  /** The layer index searches, tried in order. */
  patterns: RegExp[];
}

function selection(config: AdapterConfig, where: string): Selection {
  const v = config.layers_to_transform ?? null;
  const layers = v === null ? undefined : typeof v === "number" ? [v] : v.length === 0 ? undefined : v;
  const p = config.layers_pattern ?? null;
  const list = p === null ? [] : typeof p === "string" ? [p] : p;
  // PEFT tests the pattern's length: "" and [] search as no pattern does.
  const patterns = list.length === 0 ? [ANY_LAYER] : list.map((q) => layerRegex(q, where));
  return { targets: config.target_modules, layers, patterns };
}

/**
 * PEFT's target rule with layers: a regex selects by the whole name; a list entry equal to the name selects it in
 * any layer, one that ends it only where `layers_to_transform` holds the name's layer index.
 */
function selects(sel: Selection, name: string, where: string): boolean {
  if (typeof sel.targets === "string") return fullRegex(sel.targets, where, "target_modules").test(name);
  if (sel.targets.includes(name)) return true;
  if (!sel.targets.some((t) => name.endsWith(`.${t}`))) return false;
  if (sel.layers === undefined) return true;
  const index = layerIndex(name, sel.patterns);
  return index !== undefined && sel.layers.includes(index);
}

/**
 * Refuses a `layers_to_transform` index at which no module that a target entry names by its end sits (PEFT adapts
 * nothing there): `names` are the model's Linear modules under each of their names.
 */
function checkLayers(sel: Selection, value: unknown, names: string[], where: string): void {
  const targets = sel.targets as string[];
  const found = new Set<number>();
  for (const n of names) {
    if (!targets.some((t) => n.endsWith(`.${t}`))) continue;
    const index = layerIndex(n, sel.patterns);
    if (index !== undefined) found.add(index);
  }
  for (const i of sel.layers ?? []) {
    if (found.has(i)) continue;
    const how = sel.patterns[0] === ANY_LAYER ? "" : " after its layers_pattern";
    throw new Error(
      `${where}: "layers_to_transform" is ${JSON.stringify(value)}, but layer ${i} holds no module that ` +
        `target_modules names by its end (${
          found.size === 0
            ? `no such module's name has a layer index${how}`
            : `their layers${how}: ${[...found].sort((a, b) => a - b).join(", ")}`
        })`,
    );
  }
}

/** Options of {@link loadAdapter}. */
export interface LoadAdapterOptions {
  /** Accept an adapter made by a base-rewriting init without its base (the caller supplies that base). */
  allowRewrittenBase?: boolean;
  /**
   * Leave the loaded layers in training mode, so that they apply the adapter's `lora_dropout` (default false: in
   * evaluation mode, as PEFT's `from_pretrained` without `is_trainable`; `setTraining` switches later).
   */
  training?: boolean;
}

/**
 * Attaches the adapters stored in `dir` (PEFT's format, written by PEFT or by {@link saveAdapter}) to `model`, whose
 * target modules must still be plain `Linear` layers of matching shapes. Names may be the model's second convention
 * (Hugging Face module paths for a Llama-family model; rows converted back) or its own paths. `use_rslora`,
 * `rank_pattern`, `alpha_pattern` (PEFT's regex matching), DoRA magnitudes, `lora_dropout`, `exclude_modules`,
 * `layers_to_transform` and `layers_pattern` (PEFT's layer index search) are honoured; anything else that would change
 * the model (`modules_to_save`, a bias mode,
 * a `target_modules` entry that matches nothing, an unknown key) is an error naming it. The layers come in
 * evaluation mode, as PEFT loads them (`training: true` for dropout). A MiCA adapter (`init_lora_weights: "mica"`)
 * keeps B frozen, as PEFT does: optimisers train only its A. An exact PiSSA or OLoRA adapter saved without its base
 * (`init_lora_weights` `"pissa"` / `"olora"`) is applied to the residual `W − s·B₀·A₀` that the init derives from each
 * layer's weight with the adapter's rank and alpha, as PEFT's `from_pretrained` applies it; other base-rewriting
 * inits (`pissa_niter_K`, CorDA, LoftQ, ...) need their base. Returns the adapted paths.
 *
 * @example
 * ```ts ignore
 * import { loadLlama } from "../models/load.ts";
 * import { loadAdapter } from "./adapter.ts";
 * const model = await loadLlama("path/to/base");
 * await loadAdapter("path/to/adapter", model);
 * ```
 */
export async function loadAdapter(
  dir: string,
  model: object,
  opts: LoadAdapterOptions = {},
): Promise<string[]> {
  checkOptions("loadAdapter", LOAD_OPTIONS, opts);
  const config = await readAdapterConfig(dir);
  const where = `adapter config "${dir}/adapter_config.json"`;
  const file = `${dir}/adapter_model.safetensors`;
  const { tensors } = await readSafetensors(file);
  let bases = new Map<string, StEntry>();
  const basePath = `${dir}/base_model_weights.safetensors`;
  if (await Deno.stat(basePath).then(() => true, () => false)) {
    bases = (await readSafetensors(basePath)).tensors;
  }
  const { aliased, external, internal } = naming(model);
  const strip = (k: string) => (k.startsWith(PREFIX) ? k.slice(PREFIX.length) : k);
  const byModule = new Map<string, Map<string, StEntry>>();
  for (const [k, v] of tensors) {
    const m = /^(.*)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector|base_layer\.weight)$/.exec(
      strip(k),
    );
    if (m === null) throw new Error(`adapter "${file}": unexpected tensor "${k}"`);
    const entry = byModule.get(m[1]) ?? new Map<string, StEntry>();
    entry.set(m[2], v);
    byModule.set(m[1], entry);
  }
  const init = config.init_lora_weights;
  // Exact PiSSA and OLoRA get their residual base as PEFT's from_pretrained gives it (from the original weight),
  // unless the files hold a base or the caller brings the rewritten one.
  const derive = bases.size === 0 && !opts.allowRewrittenBase ? derivedBase(init) : undefined;
  if (
    typeof init === "string" && REWRITING_INITS.test(init) && bases.size === 0 && !opts.allowRewrittenBase &&
    derive === undefined
  ) {
    throw new Error(
      `adapter "${dir}" was saved with init_lora_weights "${init}", which rewrites the base weights, and without ` +
        `them: on the original base it gives a different model. Save it converted (PEFT: ` +
        `path_initial_model_for_weight_conversion; tessera: saveAdapter's default form), or pass ` +
        `allowRewrittenBase with the rewritten base loaded`,
    );
  }
  // PEFT 0.21 picks its MiCA variant when init_lora_weights is exactly "mica": B stays frozen in training.
  const mica = init === "mica";
  if (mica && config.use_dora) {
    throw new Error(
      `adapter "${dir}": init_lora_weights "mica" with use_dora true is no variant PEFT 0.21 has`,
    );
  }
  // The modules PEFT would adapt: every Linear whose name the targets select (excluded ones left out).
  const excluded = config.exclude_modules as string[] | string | null | undefined;
  const candidates = namedModules(model).filter(([, m]) => m instanceof Linear).map(([p]) => p);
  const sel = selection(config, where);
  const wanted = new Set(candidates.filter((p) => {
    const names = [external(p), p];
    return names.some((n) => selects(sel, n, where)) &&
      !(excluded !== undefined && excluded !== null &&
        names.some((n) => isTarget(excluded, n, where, "exclude_modules")));
  }));
  if (sel.layers !== undefined) {
    checkLayers(sel, config.layers_to_transform, candidates.flatMap((p) => [external(p), p]), where);
  }
  if (Array.isArray(config.target_modules)) {
    for (const t of config.target_modules) {
      if (!candidates.some((p) => [external(p), p].some((n) => n === t || n.endsWith(`.${t}`)))) {
        const adapted = loraLayers(model).some(([p]) =>
          [external(p), p].some((n) => n === t || n.endsWith(`.${t}`))
        );
        // A tied head is no module of its own: the classifier multiplies by the embedding table.
        const tied = "config" in model &&
          (model.config as { sharedClassifier?: unknown }).sharedClassifier === true;
        const head = ["output", external("output")].some((n) => n === t || n.endsWith(`.${t}`));
        throw new Error(
          tied && head
            ? `adapter "${dir}": target_modules entry "${t}" names the output head, which this model ties to its ` +
              `embedding (tie_word_embeddings): it has no separate Linear module to adapt`
            : `adapter "${dir}": target_modules entry "${t}" matches no Linear module of the model` +
              (adapted ? " (it matches LoRA layers: is an adapter already attached?)" : ""),
        );
      }
    }
  }
  const plan: { path: string; name: string; parts: Map<string, StEntry> }[] = [];
  for (const [name, parts] of byModule) {
    const path = internal(name);
    if (path === undefined) throw new Error(`adapter "${file}": the model has no module "${name}"`);
    const twice = plan.find((e) => e.path === path);
    if (twice !== undefined) {
      throw new Error(
        `adapter "${file}": module "${path}" has weights under two names, "${twice.name}" and "${name}"`,
      );
    }
    if (!wanted.has(path)) {
      const target = getAt(model, path);
      throw new Error(
        target instanceof Linear
          ? `adapter "${file}": module "${name}" has weights but target_modules ${
            JSON.stringify(config.target_modules)
          }${
            sel.layers === undefined
              ? ""
              : ` with layers_to_transform ${JSON.stringify(config.layers_to_transform)}`
          } does not select it`
          : `adapter "${file}": module "${name}" is not a plain Linear layer (already adapted?)`,
      );
    }
    plan.push({ path, name, parts });
  }
  const missing = [...wanted].filter((p) => !plan.some((e) => e.path === p));
  if (missing.length > 0) {
    throw new Error(
      `adapter "${file}" has no weights for ${missing.length} module(s) target_modules selects: ${
        missing.slice(0, 4).map(external).join(", ")
      }${missing.length > 4 ? ", ..." : ""}`,
    );
  }
  const layers: [string, LoraLinear][] = [];
  for (const { path, name, parts } of plan) {
    const target = getAt(model, path) as Linear;
    const a = parts.get("lora_A.weight");
    const b = parts.get("lora_B.weight");
    if (a === undefined || b === undefined) {
      throw new Error(`adapter "${file}": module "${name}" needs both lora_A.weight and lora_B.weight`);
    }
    const [dOut, dIn] = target.weight.shape;
    const rank = a.shape[0];
    if (
      a.shape.length !== 2 || a.shape[1] !== dIn || b.shape.length !== 2 || b.shape[0] !== dOut ||
      b.shape[1] !== rank
    ) {
      throw new Error(
        `adapter "${file}": module "${path}" has lora_A [${a.shape}] and lora_B [${b.shape}], which do not fit ` +
          `its [${dOut}, ${dIn}] weight`,
      );
    }
    const r = patternValue(config.rank_pattern, name, where, "rank_pattern") ?? config.r;
    if (r !== rank) {
      throw new Error(
        `adapter "${file}": module "${name}" has rank ${rank} but the config (r, rank_pattern) says ${r}`,
      );
    }
    const alpha = patternValue(config.alpha_pattern, name, where, "alpha_pattern") ?? config.lora_alpha;
    const dev = target.weight.device;
    // Rows are in the alias's layout only when the file names the module by its alias (a file in the model's own
    // names, as tessera wrote them before it wrote Hugging Face names, holds its own layout).
    const byAlias = aliased !== undefined && name === aliased.moduleAlias(path);
    const rowsIn = (e: StEntry) => {
      const data = toFloat32(e);
      const back = byAlias ? aliased.convertRows(path, data, e.shape[1] ?? 1, false) : data;
      return tensor(back, { shape: e.shape, device: dev }) as F32;
    };
    // PEFT writes the base weight of a targeted embedding layer (lm_head) beside its adapter and loads it over the
    // base's, as it would any base_layer weight the file holds (saveAdapter writes LoftQ's base so). The raw form
    // keeps the base in its own file, as did the peft form before (under "<module>.weight").
    const baseEntry = parts.get("base_layer.weight") ?? bases.get(`${PREFIX}${name}.base_layer.weight`) ??
      bases.get(`${name}.weight`);
    if (baseEntry !== undefined && baseEntry.shape.join() !== `${dOut},${dIn}`) {
      throw new Error(
        `adapter: base weight of "${name}" is [${baseEntry.shape}], expected [${dOut}, ${dIn}]`,
      );
    }
    // The initial adapter is kept, so that saveAdapter's PEFT form writes the rank-2r LoRA of the original base.
    const initial = baseEntry === undefined && derive !== undefined
      ? await derive(asF32(target.weight), rank, alpha, config.use_rslora)
      : undefined;
    const layer = LoraLinear.wrap(target, {
      a: tensor(toFloat32(a), { shape: a.shape, device: dev }) as F32,
      b: rowsIn(b),
      base: baseEntry !== undefined ? rowsIn(baseEntry) : initial?.base,
      rank,
      alpha,
      scale: loraScale(alpha, rank, config.use_rslora),
    }, {
      dropout: config.lora_dropout,
      useRslora: config.use_rslora,
      freezeB: mica,
      initial: initial === undefined ? undefined : { a: initial.a, b: initial.b },
    });
    layer.training = opts.training ?? false;
    const mag = parts.get("lora_magnitude_vector");
    if ((mag !== undefined) !== config.use_dora) {
      throw new Error(
        `adapter "${file}": module "${name}" ${
          mag === undefined ? "lacks" : "has"
        } a lora_magnitude_vector but ` +
          `use_dora is ${config.use_dora}`,
      );
    }
    if (mag !== undefined) {
      if (mag.shape.join() !== `${dOut}`) {
        throw new Error(
          `adapter "${file}": lora_magnitude_vector of "${name}" is [${mag.shape}], expected [${dOut}]`,
        );
      }
      layer.lora_magnitude_vector = rowsIn(mag);
    }
    layers.push([path, layer]);
  }
  // Checked before the model is touched: a damaged adapter leaves it as it was.
  await checkFinite(
    layers.flatMap(([path, layer]) => namedParameters(layer).map(([k, t]) => [`${path}.${k}`, t] as const)),
    { what: `adapter "${dir}"` },
  );
  const loaded: string[] = [];
  for (const [path, layer] of layers) {
    replaceModule(model, path, layer);
    loaded.push(path);
  }
  return loaded;
}
