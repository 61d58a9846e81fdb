/**
 * Hugging Face Llama checkpoints (`config.json` + `model.safetensors`, or shards listed in
 * `model.safetensors.index.json`) to and from {@link LlamaLM} weights.
 *
 * Names map one to one (`model.layers.{i}.self_attn.q_proj.weight` ↔ `layers.{i}.attention.wq.weight`,
 * `mlp.gate_proj` ↔ `feed_forward.w1`, `mlp.up_proj` ↔ `w3`, `mlp.down_proj` ↔ `w2`, `input_layernorm` ↔
 * `attention_norm`, `post_attention_layernorm` ↔ `ffn_norm`, `model.embed_tokens` ↔ `tok_embeddings`,
 * `model.norm` ↔ `norm`, `lm_head` ↔ `output`). One layout differs: Hugging Face's RoPE rotates the two
 * halves of each head (`rotate_half`) where llama2.c rotates interleaved pairs, so the rows of `q_proj` and
 * `k_proj` are permuted per head: Hugging Face row `j·hd/2 + i` is llama2.c row `2i + j` (the permutation of
 * `convert_llama_weights_to_hf.py`). Loading and saving apply it in opposite directions, exactly.
 *
 * @module
 */
import { writeTextFileAtomic } from "../io/atomic.ts";
import { readSafetensors, type StEntry, toFloat32, writeSafetensors } from "../io/safetensors.ts";
import {
  type HostWeight,
  type LlamaConfig,
  type LlamaLM,
  llamaParameterShapes,
  resolveLlamaConfig,
} from "./llama.ts";

/** What {@link readHf} returns: the config and the weights under tessera names, in llama2.c's RoPE layout. */
export interface HfCheckpoint {
  /** Hyper-parameters from `config.json`. */
  config: LlamaConfig;
  /** Weights by tessera name (`layers.0.attention.wq.weight`, ...). */
  weights: Map<string, HostWeight>;
}

/** Tessera name → Hugging Face name, or `undefined` for a name that is not a Llama parameter. */
export function hfName(name: string): string | undefined {
  const top: Record<string, string> = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
  };
  if (Object.hasOwn(top, name)) return top[name];
  const m = /^layers\.(\d+)\.(.+)$/.exec(name);
  if (m === null) return undefined;
  const inLayer: Record<string, string> = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
  };
  const suffix = inLayer[m[2]];
  return suffix === undefined ? undefined : `model.layers.${m[1]}.${suffix}`;
}

/**
 * Reorders the rows of a llama2.c `wq`/`wk` (`[nHeads·hd, in]`, interleaved RoPE pairs) into Hugging Face's
 * layout (rotate-half): within each head, rows `0, 2, 4, ..., 1, 3, 5, ...`.
 *
 * @example
 * ```ts
 * import { ropeRowsFromHf, ropeRowsToHf } from "./hf.ts";
 * const w = Float32Array.from({ length: 8 }, (_, i) => i); // one head of size 4, in = 2
 * const hf = ropeRowsToHf(w, 1, 2); // rows 0, 2, 1, 3: [0, 1, 4, 5, 2, 3, 6, 7]
 * ropeRowsFromHf(hf, 1, 2); // back to [0, 1, ..., 7]
 * ```
 */
export function ropeRowsToHf(w: Float32Array, nHeads: number, inFeatures: number): Float32Array {
  return permuteRows(w, nHeads, inFeatures, true);
}

/** The inverse of {@link ropeRowsToHf}: Hugging Face `q_proj`/`k_proj` rows back to llama2.c's interleaved layout. */
export function ropeRowsFromHf(w: Float32Array, nHeads: number, inFeatures: number): Float32Array {
  return permuteRows(w, nHeads, inFeatures, false);
}

function permuteRows(w: Float32Array, nHeads: number, inF: number, toHf: boolean): Float32Array {
  const rows = w.length / inF;
  const hd = rows / nHeads;
  if (!Number.isInteger(rows) || !Number.isInteger(hd) || hd % 2 !== 0) {
    throw new RangeError(
      `RoPE row permutation: ${w.length} values are not ${nHeads} heads of an even size times ${inF} columns`,
    );
  }
  const half = hd / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const interleaved = (h * hd + 2 * i + j) * inF;
        const halves = (h * hd + j * half + i) * inF;
        const [from, to] = toHf ? [interleaved, halves] : [halves, interleaved];
        out.set(w.subarray(from, from + inF), to);
      }
    }
  }
  return out;
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
 * The {@link LlamaConfig} described by a Hugging Face `config.json` object; `source` names the file in errors.
 * Defaults follow `transformers.LlamaConfig` (`num_key_value_heads` = `num_attention_heads`, `rms_norm_eps` 1e-6,
 * `rope_theta` 1e4, `tie_word_embeddings` false). Features this model does not have (biases, `rope_scaling`,
 * a `head_dim` other than `hidden_size / num_attention_heads`, an activation other than SiLU) are rejected.
 *
 * @example
 * ```ts
 * import { llamaConfigFromHf } from "./hf.ts";
 * const c = llamaConfigFromHf({
 *   model_type: "llama", hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5,
 *   num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 512, max_position_embeddings: 512,
 *   rms_norm_eps: 1e-5, tie_word_embeddings: true,
 * });
 * c.sharedClassifier; // true
 * ```
 */
export function llamaConfigFromHf(json: unknown, source = "config.json"): LlamaConfig {
  const where = `Hugging Face config "${source}"`;
  if (!isRecord(json)) throw new Error(`${where} is not a JSON object`);
  const modelType = json.model_type;
  if (modelType !== undefined && modelType !== "llama") {
    throw new Error(
      `${where} has model_type ${JSON.stringify(modelType)}; only "llama" models are supported`,
    );
  }
  const int = (key: string, fallback?: number): number => {
    const v = json[key] ?? fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw new Error(`${where}: "${key}" must be a positive integer, found ${JSON.stringify(json[key])}`);
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = json[key] ?? fallback;
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      throw new Error(`${where}: "${key}" must be a positive number, found ${JSON.stringify(json[key])}`);
    }
    return v;
  };
  const dim = int("hidden_size");
  const nHeads = int("num_attention_heads");
  const tied = json.tie_word_embeddings ?? false;
  if (typeof tied !== "boolean") {
    throw new Error(`${where}: "tie_word_embeddings" must be true or false, found ${JSON.stringify(tied)}`);
  }
  const unsupported: string[] = [];
  if (json.attention_bias === true) unsupported.push(`"attention_bias": true`);
  if (json.mlp_bias === true) unsupported.push(`"mlp_bias": true`);
  if (json.rope_scaling !== undefined && json.rope_scaling !== null) unsupported.push(`"rope_scaling"`);
  const act = json.hidden_act;
  if (act !== undefined && act !== "silu") unsupported.push(`"hidden_act": ${JSON.stringify(act)}`);
  const headDim = json.head_dim;
  if (headDim !== undefined && headDim !== null && headDim !== dim / nHeads) {
    unsupported.push(
      `"head_dim": ${JSON.stringify(headDim)} (hidden_size / num_attention_heads = ${dim / nHeads})`,
    );
  }
  if (unsupported.length > 0) {
    throw new Error(
      `${where} uses features this Llama implementation does not have: ${unsupported.join(", ")}`,
    );
  }
  const config: LlamaConfig = {
    dim,
    hiddenDim: int("intermediate_size"),
    nLayers: int("num_hidden_layers"),
    nHeads,
    nKvHeads: int("num_key_value_heads", nHeads),
    vocabSize: int("vocab_size"),
    seqLen: int("max_position_embeddings"),
    sharedClassifier: tied,
    normEps: num("rms_norm_eps", 1e-6),
    ropeTheta: num("rope_theta", 1e4),
  };
  resolveLlamaConfig(config, where);
  return config;
}

/**
 * A Hugging Face `config.json` object for a model with this config (`LlamaForCausalLM`, float32).
 *
 * @example
 * ```ts
 * import { hfConfigFromLlama } from "./hf.ts";
 * const json = hfConfigFromLlama({
 *   dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512,
 *   sharedClassifier: true,
 * });
 * json.rope_theta; // 10000
 * ```
 */
export function hfConfigFromLlama(config: LlamaConfig): Record<string, unknown> {
  const c = resolveLlamaConfig(config);
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.dim / c.nHeads,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.seqLen,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: c.sharedClassifier,
    hidden_act: "silu",
    attention_bias: false,
    mlp_bias: false,
    attention_dropout: 0,
    initializer_range: 0.02,
    pretraining_tp: 1,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
    use_cache: true,
  };
}

/** Tensors of a checkpoint directory: `model.safetensors`, or the shards of `model.safetensors.index.json`. */
async function readHfTensors(
  dir: string,
): Promise<{ tensors: Map<string, StEntry>; fileOf: Map<string, string> }> {
  const single = `${dir}/model.safetensors`;
  const index = `${dir}/model.safetensors.index.json`;
  const exists = async (p: string) => {
    try {
      return (await Deno.stat(p)).isFile;
    } catch {
      return false;
    }
  };
  const tensors = new Map<string, StEntry>();
  const fileOf = new Map<string, string>();
  if (await exists(single)) {
    for (const [name, entry] of (await readSafetensors(single)).tensors) {
      tensors.set(name, entry);
      fileOf.set(name, single);
    }
    return { tensors, fileOf };
  }
  if (!(await exists(index))) {
    throw new Error(
      `Hugging Face checkpoint "${dir}" has neither model.safetensors nor model.safetensors.index.json`,
    );
  }
  const json = await readJson(index, "safetensors index");
  const map = isRecord(json) ? json.weight_map : undefined;
  if (!isRecord(map)) throw new Error(`safetensors index "${index}" has no "weight_map" object`);
  const shards = new Set<string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== "string" || file.includes("/") || file.includes("\\")) {
      throw new Error(
        `safetensors index "${index}": tensor "${name}" maps to ${JSON.stringify(file)}, not a file name`,
      );
    }
    shards.add(file);
  }
  for (const file of shards) {
    const path = `${dir}/${file}`;
    for (const [name, entry] of (await readSafetensors(path)).tensors) {
      if (tensors.has(name)) {
        throw new Error(`tensor "${name}" appears in both "${fileOf.get(name)}" and "${path}"`);
      }
      tensors.set(name, entry);
      fileOf.set(name, path);
    }
  }
  return { tensors, fileOf };
}

/**
 * Reads a Hugging Face Llama checkpoint directory: `config.json` and `model.safetensors` (or its shards).
 * F32, F16, BF16 and F64 tensors are accepted (converted to float32). Every Llama tensor must be present with the
 * shape the config implies; unknown tensors are an error (except `rotary_emb.inv_freq` buffers, and `lm_head.weight`
 * when the embeddings are tied). `q_proj`/`k_proj` rows are converted to llama2.c's interleaved RoPE layout.
 *
 * @example
 * ```ts ignore
 * import { readHf } from "./hf.ts";
 * const { config, weights } = await readHf("results/stories260K-hf");
 * ```
 */
export async function readHf(dir: string): Promise<HfCheckpoint> {
  const configPath = `${dir}/config.json`;
  const config = llamaConfigFromHf(await readJson(configPath, "Hugging Face config"), configPath);
  const { tensors, fileOf } = await readHfTensors(dir);
  const expected = llamaParameterShapes(config);
  const wanted = new Set(expected.map((e) => hfName(e.name)!));
  const unknown = [...tensors.keys()].filter((k) =>
    !wanted.has(k) && !k.endsWith(".rotary_emb.inv_freq") &&
    !(config.sharedClassifier && k === "lm_head.weight")
  );
  if (unknown.length > 0) {
    throw new Error(
      `Hugging Face checkpoint "${dir}" has tensors a Llama model with this config does not: ${
        unknown.slice(0, 5).map((k) => `"${k}" (in "${fileOf.get(k)}")`).join(", ")
      }${unknown.length > 5 ? ", ..." : ""}`,
    );
  }
  const weights = new Map<string, HostWeight>();
  for (const { name, shape } of expected) {
    const key = hfName(name)!;
    const entry = tensors.get(key);
    if (entry === undefined) {
      throw new Error(`Hugging Face checkpoint "${dir}" lacks tensor "${key}" [${shape.join(", ")}]`);
    }
    if (entry.shape.join() !== shape.join()) {
      throw new Error(
        `"${fileOf.get(key)}": tensor "${key}" has shape [${
          entry.shape.join(", ")
        }], but "${configPath}" implies [${shape.join(", ")}]`,
      );
    }
    if (!["F32", "F16", "BF16", "F64"].includes(entry.dtype)) {
      throw new Error(
        `"${fileOf.get(key)}": tensor "${key}" has dtype ${entry.dtype}; expected a float type`,
      );
    }
    let data = toFloat32(entry);
    if (name.endsWith("attention.wq.weight")) data = ropeRowsFromHf(data, config.nHeads, config.dim);
    if (name.endsWith("attention.wk.weight")) data = ropeRowsFromHf(data, config.nKvHeads, config.dim);
    weights.set(name, { shape: [...shape], data });
  }
  return { config, weights };
}

/**
 * Writes a model as a Hugging Face Llama checkpoint: `dir/config.json` and `dir/model.safetensors` (F32, names and
 * RoPE layout of `transformers`' `LlamaForCausalLM`), each written atomically. LoRA layers must be merged first.
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
    let data = w.data;
    if (name.endsWith("attention.wq.weight")) data = ropeRowsToHf(data, config.nHeads, config.dim);
    if (name.endsWith("attention.wk.weight")) data = ropeRowsToHf(data, config.nKvHeads, config.dim);
    tensors.set(hfName(name)!, { dtype: "F32", shape: w.shape, data });
  }
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
  await writeTextFileAtomic(`${dir}/config.json`, JSON.stringify(hfConfigFromLlama(config), null, 2) + "\n");
}
