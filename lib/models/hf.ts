/**
 * Hugging Face checkpoints (`config.json` + `model.safetensors`, or shards listed in `model.safetensors.index.json`)
 * of the Llama-style families to and from {@link LlamaLM}: `LlamaForCausalLM` (Llama 2, Llama 3.x, TinyLlama,
 * SmolLM), `Qwen2ForCausalLM` (q/k/v biases), `Qwen3ForCausalLM` (per-head q/k RMSNorm, explicit `head_dim`) and
 * `MistralForCausalLM`.
 *
 * `config.json` is read as `transformers` reads it: every key the modelling code of these classes consults is
 * either implemented or, with a value that would change the math, refused by name (`rope_type: "longrope"`,
 * `partial_rotary_factor`, an activation other than SiLU, ...). RoPE settings come from `rope_parameters`
 * (transformers 5) or the older top-level `rope_theta` / `rope_scaling` (with `type` or `rope_type`), with the
 * same precedence as `transformers`; rope types `default`, `linear`, `llama3`, `yarn` (with `beta_fast`,
 * `beta_slow`, `truncate`, `attention_factor`, `mscale` / `mscale_all_dim`) and `dynamic` (whose frequencies
 * transformers changes only for sequences longer than `max_position_embeddings`, which the model refuses) are
 * implemented; `longrope`, whose frequencies change past `original_max_position_embeddings`, is refused.
 * Sliding-window attention (position `p` sees positions `p − W + 1 .. p`, transformers'
 * `kv_idx > q_idx − sliding_window`) is read as `transformers` 5 reads it: Mistral slides on every layer over
 * `sliding_window` (4096 when the key is absent, none when null); Qwen2 and Qwen3 only with `use_sliding_window`,
 * over `sliding_window`, on the layers that `layer_types` marks `"sliding_attention"` or, without that list, the
 * layers from `max_window_layers` on. Saving writes the window back (`sliding_window`, and for Qwen
 * `use_sliding_window` and `layer_types`).
 *
 * Names map one to one (`model.layers.{i}.self_attn.q_proj` ↔ `layers.{i}.attention.wq`, `mlp.gate_proj` ↔
 * `feed_forward.w1`, `mlp.up_proj` ↔ `w3`, `mlp.down_proj` ↔ `w2`, `input_layernorm` ↔ `attention_norm`,
 * `post_attention_layernorm` ↔ `ffn_norm`, `self_attn.q_norm` ↔ `attention.q_norm`, `model.embed_tokens` ↔
 * `tok_embeddings`, `model.norm` ↔ `norm`, `lm_head` ↔ `output`). One layout differs: Hugging Face's RoPE rotates
 * the two halves of each head (`rotate_half`) where tessera rotates interleaved pairs, so the rows of `q_proj` and
 * `k_proj` (and their biases, and the `q_norm`/`k_norm` gains) are permuted per head: Hugging Face row `j·hd/2 + i`
 * is tessera row `2i + j` (the permutation of `convert_llama_weights_to_hf.py`). Loading and saving apply it in
 * opposite directions, exactly.
 *
 * @module
 */
import { writeTextFileAtomic } from "../io/atomic.ts";
import {
  openSafetensors,
  type SafetensorsFile,
  type StEntry,
  toFloat32,
  writeSafetensors,
} from "../io/safetensors.ts";
import type { DeviceName } from "../ir/node.ts";
import type { RopeScaling } from "../nn/attention.ts";
import type { F16, F32 } from "../nn/linear.ts";
import { getBackend, getDefaultDevice } from "../runtime/realize.ts";
import { tensor } from "../tensor/creation.ts";
import { realize } from "../tensor/tensor.ts";
import { hfName, ropeRowsFromHf, ropeRowsToHf } from "./names.ts";
import {
  checkLoadOptions,
  type HostWeight,
  isTokenId,
  type LlamaConfig,
  type LlamaFamily,
  LlamaLM,
  type LlamaLoadOptions,
  llamaParameterShapes,
  resolveLlamaConfig,
} from "./llama.ts";

/** What {@link readHf} returns: the config and the weights under tessera names, in tessera's RoPE layout. */
export interface HfCheckpoint {
  /** Hyper-parameters from `config.json`. */
  config: LlamaConfig;
  /** Weights by tessera name (`layers.0.attention.wq.weight`, ...). */
  weights: Map<string, HostWeight>;
}

/** The `architectures` entry of each family, and back. */
const ARCHITECTURE: Record<LlamaFamily, string> = {
  llama: "LlamaForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
  mistral: "MistralForCausalLM",
};

/**
 * How many heads the rows of parameter `name` hold when they are in a RoPE layout (queries, keys, their biases
 * and norm gains), or 0 when the parameter is not permuted between the two layouts.
 */
function ropeHeads(name: string, config: LlamaConfig): number {
  const c = resolveLlamaConfig(config);
  if (/\.attention\.wq\.(weight|bias)$/.test(name)) return c.nHeads;
  if (/\.attention\.wk\.(weight|bias)$/.test(name)) return c.nKvHeads;
  if (/\.attention\.[qk]_norm\.weight$/.test(name)) return 1;
  return 0;
}

/** A weight in tessera's layout from its Hugging Face layout (or back, with `toHf`). */
function convertLayout(
  name: string,
  data: Float32Array,
  shape: number[],
  config: LlamaConfig,
  toHf: boolean,
) {
  const heads = ropeHeads(name, config);
  if (heads === 0) return data;
  const inF = shape.length === 2 ? shape[1] : 1;
  return toHf ? ropeRowsToHf(data, heads, inF) : ropeRowsFromHf(data, heads, inF);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

async function readJson(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot read ${what} "${path}": ${reason}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`${what} "${path}" is not valid JSON (${reason})`);
  }
}

/**
 * The token ids at which transformers' `generate` stops for the checkpoint in `dir`: the `eos_token_id` of
 * `generation_config.json` when the directory has that file (transformers then reads nothing from `config.json`,
 * so a file without the key stops nowhere), else the `eos_token_id` of `config.json`. A single id or a list; an
 * absent or null value gives `[]`. Anything else is refused with the file and the value.
 *
 * @example
 * ```ts
 * import { hfEosTokenIds } from "./hf.ts";
 * await hfEosTokenIds("tests/fixtures/models/llama"); // [2]: config.json's, as there is no generation_config.json
 * ```
 */
export async function hfEosTokenIds(dir: string): Promise<number[]> {
  const { path, what } = await generationFile(dir);
  return await eosTokenIdsIn(path, what);
}

/** The `eos_token_id` of `dir/generation_config.json` (see {@link hfEosTokenIds}), or undefined without that file. */
async function generationEosTokenIds(dir: string): Promise<number[] | undefined> {
  const { path, what, own } = await generationFile(dir);
  return own ? await eosTokenIdsIn(path, what) : undefined;
}

/**
 * The file transformers' `generate` reads a checkpoint's generation settings from: `generation_config.json` when
 * the directory has that file (`own`), else `config.json`; `what` names it in errors.
 */
async function generationFile(dir: string): Promise<{ path: string; what: string; own: boolean }> {
  const path = `${dir}/generation_config.json`;
  return await Deno.stat(path).then((s) => s.isFile, () => false)
    ? { path, what: "generation config", own: true }
    : { path: `${dir}/config.json`, what: "Hugging Face config", own: false };
}

/** What transformers' `generate` takes from a checkpoint's generation settings, as {@link hfGenerationSettings} reads them. */
export interface HfGenerationSettings {
  /** The file the settings were read from (`generation_config.json`, else `config.json`). */
  path: string;
  /** `repetition_penalty` (1: none). */
  repetitionPenalty: number;
  /** The sampling keys when the file has `do_sample` true (transformers then samples), else undefined. */
  sampling?: Record<string, unknown>;
  /** The `max_new_tokens` / `max_length` the file names, if any. */
  length?: Record<string, unknown>;
}

/**
 * Generation keys that change what transformers' `generate` returns for one sequence and that tessera does not
 * implement, with the values that leave it unchanged (transformers' defaults). A value outside the list is refused.
 */
const UNSUPPORTED_GENERATION: Record<string, readonly unknown[]> = {
  num_beams: [null, 1],
  num_beam_groups: [null, 1],
  num_return_sequences: [null, 1],
  penalty_alpha: [null],
  guidance_scale: [null, 1],
  no_repeat_ngram_size: [null, 0],
  encoder_no_repeat_ngram_size: [null, 0],
  encoder_repetition_penalty: [null, 1],
  min_length: [null, 0],
  min_new_tokens: [null, 0],
  bad_words_ids: [null],
  suppress_tokens: [null],
  begin_suppress_tokens: [null],
  forced_bos_token_id: [null],
  forced_eos_token_id: [null],
  sequence_bias: [null],
  exponential_decay_length_penalty: [null],
  stop_strings: [null],
  watermarking_config: [null],
  dola_layers: [null],
  max_time: [null],
};

/**
 * The generation settings transformers' `generate` reads for the checkpoint in `dir`: those of
 * `generation_config.json` when the directory has that file, else the generation keys of `config.json` (as for
 * {@link hfEosTokenIds}). `repetition_penalty` is read (a number > 0); a key of `UNSUPPORTED_GENERATION` with a
 * value other than its default is refused with the file, key and value, as is `repetition_penalty` that is not a
 * positive number. The sampling keys (`do_sample` true and its temperature, top_k, top_p, ...) and the lengths
 * are returned for the caller, whose own settings decide them.
 *
 * @example
 * ```ts
 * import { hfGenerationSettings } from "./hf.ts";
 * await hfGenerationSettings("tests/fixtures/models/llama"); // { path: ".../config.json", repetitionPenalty: 1 }
 * ```
 */
export async function hfGenerationSettings(dir: string): Promise<HfGenerationSettings> {
  const { path, what } = await generationFile(dir);
  const json = await readJson(path, what);
  if (!isRecord(json)) throw new Error(`"${path}" must hold a JSON object`);
  for (const [key, defaults] of Object.entries(UNSUPPORTED_GENERATION)) {
    const value = json[key] ?? null;
    const empty = Array.isArray(value) && value.length === 0 &&
      (key === "suppress_tokens" || key.startsWith("begin"));
    if (!empty && !defaults.includes(value)) {
      throw new Error(
        `"${path}": ${key} ${JSON.stringify(value)} is not supported (generation here supports only ${
          defaults.map((d) => JSON.stringify(d)).join(" or ")
        } for it), so transformers' generate would give another result`,
      );
    }
  }
  const penalty = json.repetition_penalty ?? 1;
  if (typeof penalty !== "number" || !(penalty > 0) || !Number.isFinite(penalty)) {
    throw new Error(
      `"${path}": repetition_penalty must be a number > 0, got ${JSON.stringify(json.repetition_penalty)}`,
    );
  }
  const pick = (keys: string[]) =>
    Object.fromEntries(
      keys.filter((k) => json[k] !== undefined && json[k] !== null).map((k) => [k, json[k]]),
    );
  const sampling = json.do_sample === true
    ? pick([
      "do_sample",
      "temperature",
      "top_k",
      "top_p",
      "min_p",
      "typical_p",
      "epsilon_cutoff",
      "eta_cutoff",
    ])
    : undefined;
  const length = pick(["max_new_tokens", "max_length"]);
  return {
    path,
    repetitionPenalty: penalty,
    ...(sampling ? { sampling } : {}),
    ...(Object.keys(length).length > 0 ? { length } : {}),
  };
}

/** The `eos_token_id` of the JSON file `path` as a list ([] when absent or null); anything else is refused. */
async function eosTokenIdsIn(path: string, what: string): Promise<number[]> {
  const json = await readJson(path, what);
  if (!isRecord(json)) throw new Error(`"${path}" must hold a JSON object`);
  const ids = tokenIdList(json.eos_token_id);
  if (ids === null) {
    throw new Error(
      `"${path}": eos_token_id must be a token id or a list of them, got ${
        JSON.stringify(json.eos_token_id)
      }`,
    );
  }
  return ids;
}

/** A config's token id entry as a list: one id or a list of them ([] when absent or null), else null. */
function tokenIdList(value: unknown): number[] | null {
  if (value === undefined || value === null) return [];
  const ids: unknown[] = Array.isArray(value) ? value : [value];
  return ids.every(isTokenId) ? ids : null;
}

/** Per-family defaults of `transformers`' config classes, for keys a `config.json` may leave out. */
interface FamilyDefaults {
  modelType: string;
  kvHeads: (heads: number) => number;
  headDim: (hidden: number, heads: number) => number;
  maxPositions: number;
  /** Sliding-window default when the key is absent (Mistral: 4096), or "qwen" for `use_sliding_window`. */
  sliding: "none" | "qwen" | number;
}

const DEFAULTS: Record<LlamaFamily, FamilyDefaults> = {
  llama: {
    modelType: "llama",
    kvHeads: (h) => h,
    headDim: (d, h) => Math.floor(d / h),
    maxPositions: 2048,
    sliding: "none",
  },
  qwen2: {
    modelType: "qwen2",
    kvHeads: () => 32,
    headDim: (d, h) => Math.floor(d / h),
    maxPositions: 32768,
    sliding: "qwen",
  },
  qwen3: { modelType: "qwen3", kvHeads: () => 32, headDim: () => 128, maxPositions: 32768, sliding: "qwen" },
  mistral: {
    modelType: "mistral",
    kvHeads: () => 8,
    headDim: (d, h) => Math.floor(d / h),
    maxPositions: 131072,
    sliding: 4096,
  },
};

/** Config keys that do not change the forward or backward math of these models (read by nothing in them). */
const INERT_KEYS = new Set([
  "architectures",
  "model_type",
  "dtype",
  "torch_dtype",
  "transformers_version",
  "_name_or_path",
  "bos_token_id",
  "eos_token_id",
  "use_cache",
  "initializer_range",
  "pretraining_tp", // transformers 5 no longer reads it
  "is_llama_config", // SmolLM's own marker; transformers ignores it
  "rope_interleaved", // written by nanotron (SmolLM); transformers ignores it
  "tokenizer_class",
  "output_attentions",
  "output_hidden_states",
  "return_dict",
  "tie_encoder_decoder",
  "is_decoder",
  "is_encoder_decoder",
  "id2label",
  "label2id",
  "problem_type",
  "task_specific_params",
  "chunk_size_feed_forward",
  "torchscript",
  "use_bfloat16",
  "prefix",
  "sep_token_id",
  "decoder_start_token_id",
  "finetuning_task",
  "cross_attention_hidden_size",
  "add_cross_attention",
]);

/** Keys whose meaning this reader implements (or checks and refuses), handled below. */
const READ_KEYS = new Set([
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "vocab_size",
  "max_position_embeddings",
  "rms_norm_eps",
  "tie_word_embeddings",
  "head_dim",
  "hidden_act",
  "attention_bias",
  "mlp_bias",
  "attention_dropout",
  "rope_theta",
  "rope_scaling",
  "rope_parameters",
  "partial_rotary_factor",
  "original_max_position_embeddings",
  "sliding_window",
  "use_sliding_window",
  "max_window_layers",
  "layer_types",
  "pad_token_id",
]);

/** Generation settings some checkpoints keep in config.json; they do not change the model. */
const GENERATION_KEYS = new Set([
  "max_length",
  "min_length",
  "do_sample",
  "early_stopping",
  "num_beams",
  "temperature",
  "top_k",
  "top_p",
  "typical_p",
  "repetition_penalty",
  "length_penalty",
  "no_repeat_ngram_size",
  "num_return_sequences",
  "bad_words_ids",
  "begin_suppress_tokens",
  "forced_bos_token_id",
  "forced_eos_token_id",
  "remove_invalid_values",
  "exponential_decay_length_penalty",
  "suppress_tokens",
  "diversity_penalty",
  "num_beam_groups",
  "encoder_no_repeat_ngram_size",
  "output_scores",
  "return_dict_in_generate",
]);

/** The family named by `architectures` (or, without it, `model_type`). */
function familyOf(json: Record<string, unknown>, where: string): LlamaFamily {
  const supported = Object.entries(ARCHITECTURE);
  const arch = json.architectures;
  if (arch !== undefined && arch !== null) {
    if (!Array.isArray(arch) || arch.length !== 1 || typeof arch[0] !== "string") {
      throw new Error(`${where}: "architectures" must list one class, found ${JSON.stringify(arch)}`);
    }
    const hit = supported.find(([, a]) => a === arch[0]);
    if (hit === undefined) {
      throw new Error(
        `${where}: "architectures" is ${JSON.stringify(arch)}; supported: ${
          supported.map(([, a]) => a).join(", ")
        }`,
      );
    }
    const family = hit[0] as LlamaFamily;
    if (json.model_type !== undefined && json.model_type !== DEFAULTS[family].modelType) {
      throw new Error(
        `${where}: "model_type" ${JSON.stringify(json.model_type)} does not match "architectures" ${arch[0]}`,
      );
    }
    return family;
  }
  const hit = Object.entries(DEFAULTS).find(([, d]) => d.modelType === json.model_type);
  if (hit === undefined) {
    throw new Error(
      `${where} names no supported model: "architectures" is missing and "model_type" is ${
        JSON.stringify(json.model_type)
      } (supported: ${Object.values(DEFAULTS).map((d) => d.modelType).join(", ")})`,
    );
  }
  return hit[0] as LlamaFamily;
}

/**
 * The RoPE settings as `transformers` 5 resolves them: `rope_scaling` (older checkpoints) takes precedence over
 * `rope_parameters`; `rope_theta` comes from that dict, else the top-level key, else 1e4; the type from
 * `rope_type`, else `type`, else "default".
 */
function ropeOf(
  json: Record<string, unknown>,
  maxPositions: number,
  where: string,
): { theta: number; scaling?: RopeScaling } {
  const legacy = json.rope_scaling;
  const params = (isRecord(legacy) && Object.keys(legacy).length > 0) ? legacy : json.rope_parameters ?? {};
  const key = params === legacy ? "rope_scaling" : "rope_parameters";
  if (legacy !== undefined && legacy !== null && !isRecord(legacy)) {
    throw new Error(`${where}: "rope_scaling" must be an object or null, found ${JSON.stringify(legacy)}`);
  }
  if (!isRecord(params)) {
    throw new Error(`${where}: "rope_parameters" must be an object, found ${JSON.stringify(params)}`);
  }
  if (Object.values(params).some(isRecord)) {
    throw new Error(
      `${where}: "${key}" is nested by layer type (${Object.keys(params).join(", ")}); ` +
        `per-layer RoPE is not implemented`,
    );
  }
  const positive = (v: unknown, name: string): number => {
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      throw new Error(`${where}: "${name}" must be a positive number, found ${JSON.stringify(v)}`);
    }
    return v;
  };
  // An explicit null theta is refused (transformers fails on it) rather than read as the default.
  const theta = params.rope_theta !== undefined
    ? positive(params.rope_theta, `${key}.rope_theta`)
    : positive(json.rope_theta === undefined ? 1e4 : json.rope_theta, "rope_theta");
  const partial = params.partial_rotary_factor ?? json.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1) {
    throw new Error(
      `${where}: "partial_rotary_factor" is ${
        JSON.stringify(partial)
      }; only full rotary embeddings (1) are implemented`,
    );
  }
  const type = params.rope_type ?? params.type ?? "default";
  switch (type) {
    case "default":
      return { theta };
    case "linear":
      return { theta, scaling: { type: "linear", factor: positive(params.factor, `${key}.factor`) } };
    case "llama3": {
      const original = json.original_max_position_embeddings ?? params.original_max_position_embeddings ??
        maxPositions;
      return {
        theta,
        scaling: {
          type: "llama3",
          factor: positive(params.factor, `${key}.factor`),
          lowFreqFactor: positive(params.low_freq_factor, `${key}.low_freq_factor`),
          highFreqFactor: positive(params.high_freq_factor, `${key}.high_freq_factor`),
          originalMaxPositionEmbeddings: positive(original, `${key}.original_max_position_embeddings`),
        },
      };
    }
    case "yarn":
      return { theta, scaling: yarnOf(json, params, key, maxPositions, where) };
    case "dynamic": {
      // transformers recomputes the frequencies only for a sequence longer than max_position_embeddings, which
      // the model refuses; up to it they are fixed.
      const factor = params.factor;
      if (typeof factor !== "number" || !(factor >= 1) || !Number.isFinite(factor)) {
        throw new Error(
          `${where}: "${key}.factor" is ${
            JSON.stringify(factor)
          }; dynamic scaling needs a factor of at least 1`,
        );
      }
      return { theta, scaling: { type: "dynamic", factor, maxPositionEmbeddings: maxPositions } };
    }
    default:
      throw new Error(
        `${where}: "${key}.rope_type" is ${
          JSON.stringify(type)
        }; implemented: "default", "linear", "llama3", "yarn", "dynamic"`,
      );
  }
}

/**
 * YaRN's settings as `transformers` 5 reads them (`_compute_yarn_parameters` after `standardize_rope_params`):
 * `factor` is required, and null means `max_position_embeddings / original_max_position_embeddings`; the original
 * context is the top-level key when the config has one, else the one in the dict, else `max_position_embeddings`;
 * `beta_fast` / `beta_slow` default to 32 / 1 when absent, null or 0; `truncate` is tested for truth (absent: true,
 * null: false); the attention factor is `attention_factor`, else `get_mscale(factor, mscale) /
 * get_mscale(factor, mscale_all_dim)` when both are non-zero, else `get_mscale(factor)`. Values that transformers
 * warns are invalid (`factor` below 1, `beta_fast` below `beta_slow`, a negative attention factor) or fails on are
 * refused. Other keys in the dict are ignored, as transformers ignores them.
 */
function yarnOf(
  json: Record<string, unknown>,
  params: Record<string, unknown>,
  key: string,
  maxPositions: number,
  where: string,
): RopeScaling {
  const refuse = (name: string, value: unknown, why: string): never => {
    throw new Error(`${where}: "${name}" is ${JSON.stringify(value)}; ${why}`);
  };
  const number = (name: string, value: unknown): number =>
    typeof value === "number" && Number.isFinite(value) ? value : refuse(name, value, "it must be a number");
  const top = json.original_max_position_embeddings !== undefined;
  const originalName = top ? "original_max_position_embeddings" : `${key}.original_max_position_embeddings`;
  const originalValue = top
    ? json.original_max_position_embeddings
    : params.original_max_position_embeddings === undefined
    ? maxPositions
    : params.original_max_position_embeddings;
  const original = number(originalName, originalValue);
  if (!(original > 0)) refuse(originalName, originalValue, "it must be a positive number");
  if (params.factor === undefined) {
    throw new Error(`${where}: "${key}" has rope_type "yarn" but no "factor" (transformers requires it)`);
  }
  const factor = params.factor === null ? maxPositions / original : number(`${key}.factor`, params.factor);
  if (!(factor >= 1)) {
    refuse(
      `${key}.factor`,
      params.factor,
      `${
        params.factor === null
          ? `max_position_embeddings / original_max_position_embeddings is ${factor}, `
          : ""
      }` +
        `YaRN's factor must be at least 1`,
    );
  }
  const beta = (name: string, fallback: number): number => {
    const v = params[name];
    if (v === undefined || v === null || v === 0) return fallback;
    if (!(number(`${key}.${name}`, v) > 0)) refuse(`${key}.${name}`, v, "it must be a positive number");
    return v as number;
  };
  const betaFast = beta("beta_fast", 32);
  const betaSlow = beta("beta_slow", 1);
  if (betaFast < betaSlow) {
    refuse(
      `${key}.beta_fast`,
      params.beta_fast,
      `it must be at least beta_slow (${betaSlow}); defaults 32 and 1`,
    );
  }
  const truncate = params.truncate === undefined ? true : params.truncate === null ? false : params.truncate;
  if (typeof truncate !== "boolean") {
    refuse(`${key}.truncate`, params.truncate, "it must be true, false or null");
  }
  const mscale = (scale: number, m: number) => scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1;
  const optional = (name: string): number | undefined =>
    params[name] === undefined || params[name] === null ? undefined : number(`${key}.${name}`, params[name]);
  let attentionFactor = optional("attention_factor");
  const m = optional("mscale");
  const mAll = optional("mscale_all_dim");
  if (attentionFactor === undefined && m && mAll) {
    const divisor = mscale(factor, mAll);
    if (divisor === 0) {
      refuse(`${key}.mscale_all_dim`, mAll, `it gives get_mscale(factor, mscale_all_dim) = 0`);
    }
    attentionFactor = mscale(factor, m) / divisor;
  }
  if (attentionFactor !== undefined && !(attentionFactor >= 0)) {
    refuse(`${key}.attention_factor`, attentionFactor, "the attention factor must not be negative");
  }
  const scaling = {
    type: "yarn" as const,
    factor,
    originalMaxPositionEmbeddings: original,
    betaFast,
    betaSlow,
    truncate: truncate as boolean,
  };
  return attentionFactor === undefined ? scaling : { ...scaling, attentionFactor };
}

/**
 * The {@link LlamaConfig} described by a Hugging Face `config.json` object; `source` names the file in errors.
 * Missing keys take the defaults of the family's `transformers` config class. Every key the family's modelling
 * code reads is honoured or refused; keys it never reads (generation settings, token ids, bookkeeping) are
 * ignored, and any other key is refused by name, so no config that `transformers` would read differently loads
 * silently.
 *
 * @example
 * ```ts
 * import { llamaConfigFromHf } from "./hf.ts";
 * const c = llamaConfigFromHf({
 *   architectures: ["Qwen2ForCausalLM"], hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2,
 *   num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 512, max_position_embeddings: 512,
 *   rope_parameters: { rope_type: "default", rope_theta: 1e6 }, tie_word_embeddings: true,
 * });
 * c.qkvBias; // true
 * ```
 */
export function llamaConfigFromHf(json: unknown, source = "config.json"): LlamaConfig {
  const where = `Hugging Face config "${source}"`;
  if (!isRecord(json)) throw new Error(`${where} is not a JSON object`);
  const family = familyOf(json, where);
  const d = DEFAULTS[family];
  const unknown = Object.keys(json).filter((k) =>
    !READ_KEYS.has(k) && !INERT_KEYS.has(k) && !GENERATION_KEYS.has(k) && !k.startsWith("_")
  );
  if (unknown.length > 0) {
    throw new Error(
      `${where} has key(s) this ${ARCHITECTURE[family]} reader does not implement: ${
        unknown.map((k) => `"${k}": ${JSON.stringify(json[k])}`).join(", ")
      }`,
    );
  }
  const int = (key: string, fallback?: number): number => {
    // An explicit null is not "absent": transformers' configs refuse it where they do not give it a meaning.
    const v = json[key] === undefined ? fallback : json[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw new Error(`${where}: "${key}" must be a positive integer, found ${JSON.stringify(json[key])}`);
    }
    return v;
  };
  // Explicit nulls of flags, rms_norm_eps and hidden_act are refused: transformers' configs refuse them too.
  const flag = (key: string): boolean => {
    const v = json[key] === undefined ? false : json[key];
    if (typeof v !== "boolean") {
      throw new Error(`${where}: "${key}" must be true or false, found ${JSON.stringify(v)}`);
    }
    return v;
  };
  const dim = int("hidden_size");
  const nHeads = int("num_attention_heads");
  const seqLen = int("max_position_embeddings", d.maxPositions);
  const refuse = (key: string, why: string): never => {
    throw new Error(`${where}: "${key}" is ${JSON.stringify(json[key])}; ${why}`);
  };
  const act = json.hidden_act === undefined ? "silu" : json.hidden_act;
  if (act !== "silu" && act !== "swish") refuse("hidden_act", `only "silu" is implemented`);
  const dropout = json.attention_dropout ?? 0;
  if (dropout !== 0) refuse("attention_dropout", "attention dropout is not implemented (only 0)");
  if (family === "qwen2" || family === "mistral") {
    if (json.attention_bias !== undefined) {
      refuse("attention_bias", `${ARCHITECTURE[family]} does not read it`);
    }
  }
  if (family !== "llama" && json.mlp_bias !== undefined && json.mlp_bias !== false) {
    refuse("mlp_bias", `${ARCHITECTURE[family]} has no MLP biases`);
  }
  // Llama's classes read no window key and Mistral's not use_sliding_window (transformers' logits are the same
  // with and without them); both are ignored here too.
  const sliding = slidingOf(json, family, int("num_hidden_layers"), where);
  const eps = json.rms_norm_eps === undefined ? 1e-6 : json.rms_norm_eps;
  if (typeof eps !== "number" || !(eps > 0) || !Number.isFinite(eps)) {
    refuse("rms_norm_eps", "it must be a positive number");
  }
  // Llama's and Mistral's configs take hidden_size / heads when head_dim is null; Qwen3's config refuses null, and
  // Qwen2's attention fails on it (it reads the key when present, and None ** -0.5 raises).
  const nullHeadDim = family === "llama" || family === "mistral";
  const headDim = json.head_dim === undefined || (json.head_dim === null && nullHeadDim)
    ? d.headDim(dim, nHeads)
    : int("head_dim");
  const rope = ropeOf(json, seqLen, where);
  const attentionBias = flag("attention_bias");
  const config: LlamaConfig = {
    dim,
    hiddenDim: int("intermediate_size"),
    nLayers: int("num_hidden_layers"),
    nHeads,
    // An explicit null means one key/value head per query head (transformers' Llama and Qwen configs; Mistral's
    // refuses it).
    nKvHeads: json.num_key_value_heads === null && family !== "mistral"
      ? nHeads
      : int("num_key_value_heads", d.kvHeads(nHeads)),
    vocabSize: int("vocab_size"),
    seqLen,
    sharedClassifier: flag("tie_word_embeddings"),
    normEps: eps as number,
    ropeTheta: rope.theta,
    headDim,
    qkvBias: family === "qwen2" ? true : family === "mistral" ? false : attentionBias,
    outBias: family === "qwen2" || family === "mistral" ? false : attentionBias,
    mlpBias: family === "llama" ? flag("mlp_bias") : false,
    qkNorm: family === "qwen3",
    family,
  };
  if (rope.scaling !== undefined) config.ropeScaling = rope.scaling;
  Object.assign(config, sliding);
  // Token ids the model does not use, kept so that saveHf writes them back (null or absent: none).
  const ids = (key: string): number[] | undefined => {
    if (json[key] === undefined || json[key] === null) return undefined;
    const list = tokenIdList(json[key]) ??
      refuse(key, "it must be a token id (or, for eos_token_id, a list of them)");
    if (key === "bos_token_id" && Array.isArray(json[key])) refuse(key, "it must be one token id");
    return list;
  };
  const bos = ids("bos_token_id"), eos = ids("eos_token_id");
  if (bos !== undefined) config.bosTokenId = bos[0];
  if (eos !== undefined) config.eosTokenIds = eos;
  // The embedding's padding_idx: its row gets no gradient from the lookup. torch counts a negative index from the
  // end of the table, and transformers fails on one outside it.
  const pad = json.pad_token_id;
  if (pad !== undefined && pad !== null) {
    if (
      typeof pad !== "number" || !Number.isSafeInteger(pad) || pad >= config.vocabSize ||
      pad < -config.vocabSize
    ) {
      refuse(
        "pad_token_id",
        `it must be a token id below vocab_size ${config.vocabSize} (or, counted from the end, down to -${config.vocabSize})`,
      );
    }
    config.padTokenId = (pad as number) < 0 ? config.vocabSize + (pad as number) : pad as number;
  }
  resolveLlamaConfig(config, where);
  return config;
}

/**
 * The sliding window of a config as `transformers` 5 reads it. Mistral: `sliding_window` on every layer (4096 when
 * the key is absent, none when null). Qwen2 / Qwen3: a window only with `use_sliding_window` (then
 * `sliding_window`, 4096 when absent, none when null); the layers that slide are the `"sliding_attention"` entries of
 * `layer_types`, or without that list the layers from `max_window_layers` (default 28) on. Llama has none. A
 * window that covers the whole context is kept (it is saved back as it came); attention skips it.
 */
function slidingOf(
  json: Record<string, unknown>,
  family: LlamaFamily,
  nLayers: number,
  where: string,
): { slidingWindow?: number; slidingLayers?: boolean[] } {
  const refuse = (key: string, why: string): never => {
    throw new Error(`${where}: "${key}" is ${JSON.stringify(json[key])}; ${why}`);
  };
  const d = DEFAULTS[family];
  if (d.sliding === "none") return {};
  const window = json.sliding_window === undefined
    ? (d.sliding === "qwen" ? 4096 : d.sliding)
    : json.sliding_window;
  const on = d.sliding !== "qwen" || json.use_sliding_window === true;
  const flag = json.use_sliding_window;
  if (d.sliding === "qwen" && flag !== undefined && typeof flag !== "boolean") {
    throw new Error(`${where}: "use_sliding_window" must be true or false, found ${JSON.stringify(flag)}`);
  }
  // transformers drops the window unless use_sliding_window is on (Qwen); a null window is none.
  const size = on ? window : null;
  if (size !== null && (typeof size !== "number" || !Number.isSafeInteger(size) || size <= 0)) {
    throw new Error(
      `${where}: "sliding_window" is ${JSON.stringify(window)}${
        json.sliding_window === undefined ? " (the default)" : ""
      }; a sliding window must be a positive integer number of positions (or null for none)`,
    );
  }
  if (d.sliding !== "qwen") {
    // transformers' Auto classes read a Mistral config that has "layer_types" as Ministral's, with a window on the
    // "sliding_attention" layers only, while MistralForCausalLM ignores the list and slides every layer: only a
    // list on which both agree (null, or every layer sliding under a window) is read.
    const types = json.layer_types;
    if (
      types !== undefined && types !== null &&
      (size === null || !Array.isArray(types) || types.length !== nLayers ||
        types.some((t) => t !== "sliding_attention"))
    ) {
      refuse(
        "layer_types",
        `transformers' AutoModelForCausalLM reads it as Ministral's per-layer windows, MistralForCausalLM ` +
          `ignores it (sliding_window ${JSON.stringify(size)} on every layer); only null or ${nLayers} ` +
          `"sliding_attention" entries with a sliding_window are read`,
      );
    }
    return size === null ? {} : { slidingWindow: size, slidingLayers: Array(nLayers).fill(true) };
  }
  let layers: boolean[];
  const types = json.layer_types;
  if (types !== undefined && types !== null) {
    if (
      !Array.isArray(types) || types.length !== nLayers ||
      types.some((t) => t !== "full_attention" && t !== "sliding_attention")
    ) {
      refuse(
        "layer_types",
        `expected ${nLayers} entries (num_hidden_layers), each "full_attention" or "sliding_attention"`,
      );
    }
    layers = (types as string[]).map((t) => t === "sliding_attention");
    if (size === null && layers.includes(true)) {
      refuse(
        "layer_types",
        `sliding layers need a window, and there is none (use_sliding_window ${
          JSON.stringify(json.use_sliding_window ?? false)
        }, sliding_window ${JSON.stringify(window)}); transformers fails on this config`,
      );
    }
  } else {
    const from = json.max_window_layers === undefined ? 28 : json.max_window_layers;
    if (typeof from !== "number" || !Number.isSafeInteger(from)) {
      refuse("max_window_layers", "it must be an integer (the first layer with a sliding window)");
    }
    layers = Array.from({ length: nLayers }, (_, i) => size !== null && i >= (from as number));
  }
  return size === null || !layers.includes(true) ? {} : { slidingWindow: size, slidingLayers: layers };
}

/**
 * A Hugging Face `config.json` object for a model with this config (its family's `*ForCausalLM`, float32), with the
 * RoPE settings under `rope_parameters` as `transformers` 5 writes them.
 *
 * @example
 * ```ts
 * import { hfConfigFromLlama } from "./hf.ts";
 * const json = hfConfigFromLlama({
 *   dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512,
 *   sharedClassifier: true,
 * });
 * json.rope_parameters; // { rope_type: "default", rope_theta: 10000 }
 * ```
 */
export function hfConfigFromLlama(config: LlamaConfig): Record<string, unknown> {
  const c = resolveLlamaConfig(config);
  const s = c.ropeScaling;
  const rope: Record<string, unknown> = s === undefined
    ? { rope_type: "default", rope_theta: c.ropeTheta }
    : s.type === "linear"
    ? { rope_type: "linear", rope_theta: c.ropeTheta, factor: s.factor }
    : s.type === "dynamic"
    ? { rope_type: "dynamic", rope_theta: c.ropeTheta, factor: s.factor }
    : s.type === "yarn"
    ? {
      rope_type: "yarn",
      rope_theta: c.ropeTheta,
      factor: s.factor,
      original_max_position_embeddings: s.originalMaxPositionEmbeddings,
      beta_fast: s.betaFast ?? 32,
      beta_slow: s.betaSlow ?? 1,
      truncate: s.truncate ?? true,
      // Absent, transformers derives the same default from factor.
      ...(s.attentionFactor === undefined ? {} : { attention_factor: s.attentionFactor }),
    }
    : {
      rope_type: "llama3",
      rope_theta: c.ropeTheta,
      factor: s.factor,
      low_freq_factor: s.lowFreqFactor,
      high_freq_factor: s.highFreqFactor,
      original_max_position_embeddings: s.originalMaxPositionEmbeddings,
    };
  const json: Record<string, unknown> = {
    architectures: [ARCHITECTURE[c.family]],
    model_type: DEFAULTS[c.family].modelType,
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.headDim,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.seqLen,
    rms_norm_eps: c.normEps,
    rope_parameters: rope,
    tie_word_embeddings: c.sharedClassifier,
    hidden_act: "silu",
    attention_dropout: 0,
    initializer_range: 0.02,
    dtype: "float32",
    use_cache: true,
  };
  if (c.family === "llama") Object.assign(json, { attention_bias: c.qkvBias, mlp_bias: c.mlpBias });
  // The token ids the checkpoint came with (EOS: the ids its generate stopped at, which transformers reads from
  // config.json when there is no generation_config.json; a model from a llama2.c file has llama2.c's 1 and 2). None
  // written when it has none: transformers' generate then stops nowhere, as it did on the checkpoint.
  const eos = c.eosTokenIds;
  if (c.bosTokenId !== undefined) json.bos_token_id = c.bosTokenId;
  if (c.padTokenId !== undefined) json.pad_token_id = c.padTokenId;
  if (eos !== undefined) json.eos_token_id = eos.length === 1 ? eos[0] : [...eos];
  if (c.family === "qwen3") json.attention_bias = c.qkvBias;
  const layers = c.slidingLayers;
  if (c.family === "qwen2" || c.family === "qwen3") {
    Object.assign(
      json,
      layers === undefined ? { use_sliding_window: false, sliding_window: null } : {
        use_sliding_window: true,
        sliding_window: c.slidingWindow,
        layer_types: layers.map((slides) => slides ? "sliding_attention" : "full_attention"),
      },
    );
  }
  if (c.family === "mistral") json.sliding_window = c.slidingWindow ?? null;
  return json;
}

/**
 * The safetensors files of a checkpoint directory, each opened (header only), with the file of every tensor. As in
 * transformers, a sharded checkpoint opens every shard its index's `weight_map` names and takes each tensor from the
 * shard that holds it; `weight_map` (empty for a single file) is kept to name the shard in errors.
 */
async function openHfTensors(
  dir: string,
): Promise<{ files: SafetensorsFile[]; fileOf: Map<string, SafetensorsFile>; index: HfIndex | undefined }> {
  const single = `${dir}/model.safetensors`;
  const index = `${dir}/model.safetensors.index.json`;
  const exists = async (p: string) => {
    try {
      return (await Deno.stat(p)).isFile;
    } catch {
      return false;
    }
  };
  let names: string[];
  let weightMap: Map<string, string> | undefined;
  if (await exists(single)) names = ["model.safetensors"];
  else if (await exists(index)) {
    const json = await readJson(index, "safetensors index");
    const map = isRecord(json) ? json.weight_map : undefined;
    if (!isRecord(map)) throw new Error(`safetensors index "${index}" has no "weight_map" object`);
    const shards = new Set<string>();
    for (const [name, file] of Object.entries(map)) {
      if (
        typeof file !== "string" || file.includes("/") || file.includes("\\") || file === "" ||
        file === "." ||
        file === ".."
      ) {
        throw new Error(
          `safetensors index "${index}": tensor "${name}" maps to ${JSON.stringify(file)}, not a file name`,
        );
      }
      shards.add(file);
    }
    names = [...shards];
    weightMap = new Map(Object.entries(map as Record<string, string>));
  } else {
    throw new Error(
      `Hugging Face checkpoint "${dir}" has neither model.safetensors nor model.safetensors.index.json`,
    );
  }
  const files: SafetensorsFile[] = [];
  const fileOf = new Map<string, SafetensorsFile>();
  try {
    for (const name of names) {
      let file: SafetensorsFile;
      try {
        file = await openSafetensors(`${dir}/${name}`);
      } catch (err) {
        if (weightMap === undefined) throw err;
        const listed = [...weightMap].filter(([, shard]) => shard === name).map(([tensor]) => tensor);
        const reason = err instanceof Error ? err.message : String(err);
        throw new Error(
          `safetensors index "${index}" names shard "${name}" (for ${listed.length} tensors, e.g. "${
            listed[0]
          }"), ` +
            `which cannot be opened: ${reason}`,
          { cause: err },
        );
      }
      files.push(file);
      for (const tensorName of file.specs.keys()) {
        const other = fileOf.get(tensorName);
        if (other !== undefined) {
          throw new Error(`tensor "${tensorName}" appears in both "${other.path}" and "${file.path}"`);
        }
        fileOf.set(tensorName, file);
      }
    }
  } catch (err) {
    for (const f of files) f.close();
    throw err;
  }
  return { files, fileOf, index: weightMap === undefined ? undefined : { path: index, weightMap } };
}

/** A sharded checkpoint's index: its path and its `weight_map` (tensor name → shard file name). */
interface HfIndex {
  path: string;
  weightMap: Map<string, string>;
}

/** Why `key` is in no opened file, for a sharded checkpoint: the shard its index names, or that it names none. */
function indexNote(index: HfIndex | undefined, key: string): string {
  if (index === undefined) return "";
  const shard = index.weightMap.get(key);
  return shard === undefined
    ? ` (its index "${index.path}" names no shard for it)`
    : ` (its index "${index.path}" names shard "${shard}", which does not hold it)`;
}

/** An open checkpoint: its config, and every parameter's file entry, validated against the config. */
interface OpenCheckpoint {
  config: LlamaConfig;
  files: SafetensorsFile[];
  /** tessera name → [file, Hugging Face name, shape], in module order. */
  params: { name: string; key: string; shape: number[]; file: SafetensorsFile }[];
}

/** Opens a checkpoint directory and checks that its tensors are exactly what its config implies. */
async function openHf(dir: string): Promise<OpenCheckpoint> {
  const configPath = `${dir}/config.json`;
  let config = llamaConfigFromHf(await readJson(configPath, "Hugging Face config"), configPath);
  // transformers' generate stops at generation_config.json's EOS ids when there is one (see hfEosTokenIds); kept
  // as the model's, so that saveHf writes them back into config.json, where the saved checkpoint's generate reads.
  const eos = await generationEosTokenIds(dir);
  if (eos !== undefined) {
    const { eosTokenIds: _, ...rest } = config;
    config = eos.length === 0 ? rest : { ...rest, eosTokenIds: eos };
  }
  const { files, fileOf, index } = await openHfTensors(dir);
  try {
    // Tied embeddings with an lm_head.weight stored as well: transformers ties them only when the two hold the same
    // values, and otherwise keeps the stored head (with a warning). So does this reader.
    const head = fileOf.get("lm_head.weight"), embed = fileOf.get("model.embed_tokens.weight");
    if (config.sharedClassifier && head !== undefined && embed !== undefined) {
      const [h, e] = [
        toFloat32(await head.read("lm_head.weight")),
        toFloat32(await embed.read("model.embed_tokens.weight")),
      ];
      if (h.length !== e.length || h.some((v, i) => !Object.is(v, e[i]))) {
        config = { ...config, sharedClassifier: false };
      }
    }
    const expected = llamaParameterShapes(config);
    const wanted = new Set(expected.map((e) => hfName(e.name)!));
    const unknown = [...fileOf.keys()].filter((k) =>
      !wanted.has(k) && !k.endsWith(".rotary_emb.inv_freq") &&
      !(config.sharedClassifier && k === "lm_head.weight")
    );
    if (unknown.length > 0) {
      throw new Error(
        `Hugging Face checkpoint "${dir}" has tensors a ${config.family} model with this config does not: ${
          unknown.slice(0, 5).map((k) => `"${k}" (in "${fileOf.get(k)!.path}")`).join(", ")
        }${unknown.length > 5 ? `, ... (${unknown.length} in all)` : ""}`,
      );
    }
    const params = expected.map(({ name, shape }) => {
      const key = hfName(name)!;
      const file = fileOf.get(key);
      if (file === undefined) {
        throw new Error(
          `Hugging Face checkpoint "${dir}" lacks tensor "${key}" [${shape.join(", ")}]${
            indexNote(index, key)
          }`,
        );
      }
      const spec = file.specs.get(key)!;
      if (spec.shape.join() !== shape.join()) {
        throw new Error(
          `"${file.path}": tensor "${key}" has shape [${
            spec.shape.join(", ")
          }], but "${configPath}" implies [${shape.join(", ")}]`,
        );
      }
      if (!["F32", "F16", "BF16", "F64"].includes(spec.dtype)) {
        throw new Error(`"${file.path}": tensor "${key}" has dtype ${spec.dtype}; expected a float type`);
      }
      return { name, key, shape, file };
    });
    return { config, files, params };
  } catch (err) {
    for (const f of files) f.close();
    throw err;
  }
}

/**
 * Reads a Hugging Face checkpoint directory into host memory: `config.json` and `model.safetensors` (or its
 * shards). F32, F16, BF16 and F64 tensors are accepted (converted to float32). Every tensor must be present with
 * the shape the config implies; unknown tensors are an error (except `rotary_emb.inv_freq` buffers, and
 * `lm_head.weight` when the embeddings are tied: a stored head that differs from them unties the model, as
 * transformers does). Query/key rows are converted to tessera's RoPE layout. To build a
 * model without holding all weights on the host, use {@link loadHf}.
 *
 * @example
 * ```ts ignore
 * import { readHf } from "./hf.ts";
 * const { config, weights } = await readHf("tests/fixtures/models/qwen2");
 * ```
 */
export async function readHf(dir: string): Promise<HfCheckpoint> {
  const { config, files, params } = await openHf(dir);
  try {
    const weights = new Map<string, HostWeight>();
    for (const { name, key, shape, file } of params) {
      const data = convertLayout(name, toFloat32(await file.read(key)), shape, config, false);
      weights.set(name, { shape: [...shape], data });
    }
    return { config, weights };
  } finally {
    for (const f of files) f.close();
  }
}

/** Bytes of one element of each storage dtype. */
const BYTES = { f16: 2, f32: 4 } as const;

/**
 * Loads a Hugging Face checkpoint directory as a {@link LlamaLM}, streaming: tensors are read, converted and
 * uploaded one at a time, so host memory holds about one tensor besides the model on the device. Before anything is
 * allocated, every tensor is checked against the device's largest storage binding (the error names the tensor,
 * its size and the limit). Matrices are stored as f16 when `weightDtype` says so (default `"auto"`: when the
 * checkpoint stores 16-bit floats and the device has `shader-f16`); a matrix whose values overflow f16 stays f32.
 * A bf16 value keeps its value in f16 when its magnitude is 2^-14 or more (f16's normal range holds bf16's 8-bit
 * significand); a smaller one becomes an f16 subnormal within 2^-25 (3.0e-8) of it, or 0 below 2^-25. Normal
 * weights of standard deviation 0.02 have about 2 in 1,000 such values; `weightDtype: "f32"` keeps every value.
 *
 * @example
 * ```ts
 * import { loadHf } from "./hf.ts";
 * const model = await loadHf("tests/fixtures/models/qwen3");
 * model.config.family; // "qwen3"
 * ```
 */
export async function loadHf(dir: string, options: LlamaLoadOptions = {}): Promise<LlamaLM> {
  checkLoadOptions("loadHf", options);
  const device: DeviceName = options.device ?? getDefaultDevice();
  const { config, files, params } = await openHf(dir);
  try {
    const backend = await getBackend(device);
    const halfFile = params.some((p) => {
      const d = p.file.specs.get(p.key)!.dtype;
      return d === "F16" || d === "BF16";
    });
    const deviceHasF16 = device !== "webgpu" || ("hasF16" in backend && backend.hasF16 === true);
    const want = options.weightDtype ?? "auto";
    if (want === "f16" && !deviceHasF16) {
      throw new Error(
        `loading "${dir}" with weightDtype "f16": the adapter (${backend.description}) lacks the shader-f16 feature`,
      );
    }
    const half = want === "f16" || (want === "auto" && halfFile && deviceHasF16);
    for (const { key, shape, file } of params) {
      const bytes = shape.reduce((a, b) => a * b, 1) * (half && shape.length === 2 ? BYTES.f16 : BYTES.f32);
      if (bytes > backend.maxBufferBytes) {
        throw new Error(
          `"${file.path}": tensor "${key}" [${
            shape.join(", ")
          }] needs ${bytes} bytes on the device, more than its ` +
            `largest storage binding (${backend.maxBufferBytes} bytes, ${backend.description})`,
        );
      }
    }
    const tensors = new Map<string, F32 | F16>();
    for (const { name, key, shape, file } of params) {
      const data = convertLayout(name, toFloat32(await file.read(key)), shape, config, false);
      let dtype: "f16" | "f32" = half && shape.length === 2 ? "f16" : "f32";
      if (dtype === "f16" && !fitsF16(data)) dtype = "f32";
      const t = tensor(data, { shape, dtype, device }) as F32 | F16;
      await realize(t); // uploads now, so the host copy can go
      tensors.set(name, t);
    }
    return LlamaLM.fromTensors(config, tensors, { source: dir });
  } finally {
    for (const f of files) f.close();
  }
}

/** True when every finite value of `data` stays finite in f16 (|x| below 65520, where rounding reaches Inf). */
function fitsF16(data: Float32Array): boolean {
  for (let i = 0; i < data.length; i++) {
    const v = Math.abs(data[i]);
    if (v >= 65520 && Number.isFinite(v)) return false;
  }
  return true;
}

/**
 * Writes a model as a Hugging Face checkpoint: `dir/config.json` and `dir/model.safetensors` (F32, names and
 * RoPE layout of its family's `*ForCausalLM`), each written atomically. LoRA layers must be merged first. The
 * config names the token ids the model was loaded with (`bos_token_id`; as `eos_token_id`, the ids its
 * checkpoint's `generate` stopped at, so the saved one stops at the same), or llama2.c's 1 and 2 for a llama-family
 * model that has none.
 *
 * @example
 * ```ts
 * import { LlamaLM } from "./llama.ts";
 * import { saveHf } from "./hf.ts";
 * const model = await LlamaLM.fromLlama2c("../shared/data/models/stories260K/stories260K.bin");
 * await saveHf(model, await Deno.makeTempDir());
 * ```
 */
export async function saveHf(model: LlamaLM, dir: string): Promise<void> {
  const config = model.config;
  const weights = await model.hostWeights();
  const tensors = new Map<string, StEntry>();
  for (const [name, w] of weights) {
    tensors.set(hfName(name)!, {
      dtype: "F32",
      shape: w.shape,
      data: convertLayout(name, w.data, w.shape, config, true),
    });
  }
  await Deno.mkdir(dir, { recursive: true });
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
  await writeTextFileAtomic(`${dir}/config.json`, JSON.stringify(hfConfigFromLlama(config), null, 2) + "\n");
}
