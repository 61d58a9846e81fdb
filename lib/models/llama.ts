/**
 * A Llama-2 style causal language model with llama2.c semantics: RMSNorm (eps 1e-5), rotary embeddings on
 * the interleaved pairs `(2i, 2i+1)` of each head (theta 1e4), grouped-query attention, a SwiGLU feed-forward
 * `w2(silu(w1 x) · w3 x)` and a tied or untied classifier.
 *
 * Module paths follow llama2.c's names, so parameters are `tok_embeddings.weight`,
 * `layers.{i}.attention.{wq,wk,wv,wo}.weight`, `layers.{i}.feed_forward.{w1,w2,w3}.weight`,
 * `layers.{i}.attention_norm.weight`, `layers.{i}.ffn_norm.weight`, `norm.weight` and (untied only)
 * `output.weight`. Every projection is a `Linear`, so LoRA attaches by name (`targetModules: ["wq", "wv"]`).
 *
 * Two forward passes share the weights: {@link LlamaLM.forward} over whole sequences (training, perplexity)
 * and {@link LlamaLM.forwardCached}, which appends to a {@link KvCache} (sampling).
 *
 * @module
 */
import { z } from "../../deps.ts";
import type { DeviceName } from "../ir/node.ts";
import { checkOptions, opt } from "../options.ts";
import type { Shape } from "../shape.ts";
import { arange, tensor, zeros } from "../tensor/creation.ts";
import { realize, type Tensor } from "../tensor/tensor.ts";
import { stopGradient } from "../autodiff/grad.ts";
import { getDefaultDevice } from "../runtime/realize.ts";
import { type Llama2cConfig, type Llama2cWeight, readLlama2c } from "../io/llama2c.ts";
import {
  Attention,
  type CachedStep,
  ropeInverseFrequencies,
  type RopeScaling,
  type RopeTables,
  ropeTables,
} from "../nn/attention.ts";
import { SwiGLU } from "../nn/mlp.ts";
import { TransformerBlock } from "../nn/transformer.ts";
import { constantParam, deriveSeed, normalParam } from "../nn/init.ts";
import { asF32, Embedding, type F16, type F32, Linear, linear, type LinearLayer } from "../nn/linear.ts";
import { type AliasedModule, Module, namedParameters } from "../nn/module.ts";
import { hfModulePath, ropeRowsFromHf, ropeRowsToHf } from "./names.ts";
import { RMSNorm } from "../nn/norm.ts";
import { crossEntropy, type CrossEntropyOptions } from "../nn/loss.ts";

/**
 * The Hugging Face families a {@link LlamaLM} can be (each its `*ForCausalLM` class in `transformers`): they share
 * the decoder and differ in the features below (biases, q/k norms), which {@link resolveLlamaConfig} checks
 * against the family so that a saved checkpoint means the same model to `transformers`.
 */
export type LlamaFamily = "llama" | "qwen2" | "qwen3" | "mistral";

/** Hyper-parameters of a {@link LlamaLM}: the llama2.c header fields plus what Hugging Face families add. */
export interface LlamaConfig extends Llama2cConfig {
  /** RMSNorm epsilon (default 1e-5). */
  normEps?: number;
  /** RoPE base (default 1e4). */
  ropeTheta?: number;
  /** Long-context rescaling of the RoPE frequencies (default: none). */
  ropeScaling?: RopeScaling;
  /** Size of one attention head (default `dim / nHeads`; must be even). */
  headDim?: number;
  /** Biases on `wq`, `wk`, `wv` (default false; Qwen2 has them). */
  qkvBias?: boolean;
  /** Bias on `wo` (default false). */
  outBias?: boolean;
  /** Biases on `w1`, `w2`, `w3` (default false). */
  mlpBias?: boolean;
  /** Per-head RMSNorm of queries and keys before RoPE (`q_norm`, `k_norm`; Qwen3). Default false. */
  qkNorm?: boolean;
  /** The Hugging Face family (default "llama"; decides names and `config.json` when saving). */
  family?: LlamaFamily;
  /**
   * Sliding-window attention (Mistral, Qwen2/Qwen3 `use_sliding_window`): a sliding layer's position `p` attends to
   * positions `p − slidingWindow + 1 .. p` only (default: none, every layer full causal attention).
   */
  slidingWindow?: number;
  /**
   * Which layers slide, one flag per layer (default: all of them when there is a `slidingWindow`); a layer whose
   * flag is false attends to every earlier position.
   */
  slidingLayers?: readonly boolean[];
  /** The checkpoint's `bos_token_id` (kept so that saving writes it back; the model itself does not use it). */
  bosTokenId?: number;
  /**
   * The checkpoint's `pad_token_id`. As in transformers' models, whose embedding is torch's
   * `nn.Embedding(padding_idx=pad_token_id)`, the table's row for this token gets no gradient from the lookup (a
   * shared classifier still trains it); the values computed do not change. Absent: every row trains.
   */
  padTokenId?: number;
  /**
   * The ids at which transformers' `generate` stops for the checkpoint (`generation_config.json`'s
   * `eos_token_id`, else `config.json`'s; see `hfEosTokenIds`), kept so that saving writes them back.
   */
  eosTokenIds?: readonly number[];
}

/** One host-side float32 weight and its shape (the format of the llama2.c and Hugging Face loaders). */
export type HostWeight = Llama2cWeight;

/** Options of {@link LlamaLM.random}. */
export interface LlamaRandomOptions {
  /** Seed of every weight (each derives its own stream from it and its path). */
  seed: number;
  /** Standard deviation of the normal weights (default 0.02, as llama2.c's training script). */
  std?: number;
  /** Device of the parameters (default: the default device). */
  device?: DeviceName;
}

const RANDOM_OPTIONS = z.object({
  seed: opt.seed(),
  std: opt.positive().optional(),
  device: opt.device().optional(),
}).strict();
const LOAD_FIELDS = {
  device: opt.device().optional(),
  weightDtype: z.enum(["auto", "f16", "f32"]).optional(),
};
const LOAD_OPTIONS = z.object(LOAD_FIELDS).strict();
const FROM_WEIGHTS_OPTIONS = z.object({ ...LOAD_FIELDS, source: z.string().optional() }).strict();
// The tensors keep their own device and dtypes: a device or weightDtype given here would be ignored.
const FROM_TENSORS_OPTIONS = z.object({ source: z.string().optional() }).strict();

/**
 * Throws an `OptionsError` of `where` (the loader) unless `options` are {@link LlamaLoadOptions}: a misspelt key or a
 * `weightDtype` other than "auto", "f16" and "f32" would otherwise load the model as if it were not given.
 */
export function checkLoadOptions(where: string, options: LlamaLoadOptions): void {
  checkOptions(where, LOAD_OPTIONS, options);
}
// The capacity's upper bound is the model's seqLen, checked in createCache itself.
const CACHE_OPTIONS = z.object({
  batch: opt.count().optional(),
  capacity: opt.number().optional(),
  device: opt.device().optional(),
}).strict();

/** Options of the loaders ({@link LlamaLM.fromWeights}, {@link LlamaLM.fromLlama2c}, `loadLlama`). */
export interface LlamaLoadOptions {
  /** Device of the parameters (default: the default device). */
  device?: DeviceName;
  /**
   * Storage of the frozen matrices (embedding, projections, classifier): `"f16"` halves their memory (arithmetic
   * and accumulation stay f32), `"f32"` keeps full precision, `"auto"` (default) picks f16 when the checkpoint
   * stores 16-bit floats and the device has `shader-f16`, else f32. Norms and biases are always f32.
   */
  weightDtype?: "auto" | "f16" | "f32";
}

/** Options of {@link LlamaLM.forwardCached}. */
export interface ForwardCachedOptions {
  /** Return the logits of the last new position only (`[B, 1, V]`), as sampling needs. */
  lastOnly?: boolean;
  /**
   * How many of the `T` new tokens are real (default `T`): the ones after them are padding, which lets steps of
   * different lengths share the kernels of one length. The cache advances by `valid` only and `lastOnly` takes
   * position `valid − 1`. Causal attention keeps the padding from the real positions, and the next steps overwrite
   * its cache entries before any position can see them.
   */
  valid?: number;
}

/**
 * The config with its optional fields filled in (`ropeScaling` stays optional: absent means none; so do
 * `slidingWindow` and `slidingLayers`, which are both present or both absent).
 */
export type ResolvedLlamaConfig =
  & Required<
    Omit<
      LlamaConfig,
      "ropeScaling" | "slidingWindow" | "slidingLayers" | "bosTokenId" | "padTokenId" | "eosTokenIds"
    >
  >
  & {
    ropeScaling?: RopeScaling;
    slidingWindow?: number;
    slidingLayers?: readonly boolean[];
    bosTokenId?: number;
    padTokenId?: number;
    eosTokenIds?: readonly number[];
  };

/** Whether `v` can be a token id: a non-negative safe integer (what `bosTokenId`, `eosTokenIds` and configs hold). */
export function isTokenId(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

/**
 * Checks that a config describes a consistent Llama shape and fills in the defaults; errors start with
 * `where` (e.g. the file the config came from).
 *
 * @example
 * ```ts
 * import { resolveLlamaConfig } from "./llama.ts";
 * const c = resolveLlamaConfig({
 *   dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512,
 *   sharedClassifier: true,
 * });
 * c.normEps; // 1e-5
 * ```
 */
export function resolveLlamaConfig(config: LlamaConfig, where = "Llama config"): ResolvedLlamaConfig {
  const ints = ["dim", "hiddenDim", "nLayers", "nHeads", "nKvHeads", "vocabSize", "seqLen"] as const;
  for (const key of ints) {
    const v = config[key];
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new RangeError(`${where}: ${key} must be a positive integer, found ${JSON.stringify(v)}`);
    }
  }
  if (config.headDim === undefined && config.dim % config.nHeads !== 0) {
    throw new RangeError(`${where}: dim ${config.dim} is not divisible by nHeads ${config.nHeads}`);
  }
  const headDim = config.headDim ?? config.dim / config.nHeads;
  if (!Number.isSafeInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) {
    throw new RangeError(
      `${where}: the head size ${headDim} must be a positive even integer for rotary embeddings`,
    );
  }
  if (config.nHeads % config.nKvHeads !== 0) {
    throw new RangeError(`${where}: nHeads ${config.nHeads} is not divisible by nKvHeads ${config.nKvHeads}`);
  }
  const flags = ["qkvBias", "outBias", "mlpBias", "qkNorm"] as const;
  for (const key of flags) {
    const v = config[key];
    if (v !== undefined && typeof v !== "boolean") {
      throw new RangeError(`${where}: ${key} must be true or false, found ${JSON.stringify(v)}`);
    }
  }
  if (typeof config.sharedClassifier !== "boolean") {
    throw new RangeError(
      `${where}: sharedClassifier must be true or false, found ${JSON.stringify(config.sharedClassifier)}`,
    );
  }
  const normEps = config.normEps ?? 1e-5;
  const ropeTheta = config.ropeTheta ?? 1e4;
  if (!(normEps > 0) || !Number.isFinite(normEps)) {
    throw new RangeError(`${where}: normEps must be a positive number, found ${JSON.stringify(normEps)}`);
  }
  if (!(ropeTheta > 0) || !Number.isFinite(ropeTheta)) {
    throw new RangeError(`${where}: ropeTheta must be a positive number, found ${JSON.stringify(ropeTheta)}`);
  }
  if (config.ropeScaling !== undefined) ropeInverseFrequencies(headDim, ropeTheta, config.ropeScaling);
  const dynamic = config.ropeScaling?.type === "dynamic"
    ? config.ropeScaling.maxPositionEmbeddings
    : undefined;
  if (dynamic !== undefined && config.seqLen > dynamic) {
    throw new RangeError(
      `${where}: seqLen ${config.seqLen} exceeds the dynamic RoPE scaling's maxPositionEmbeddings ${dynamic}; ` +
        `its frequencies for longer sequences are not implemented`,
    );
  }
  const c: ResolvedLlamaConfig = {
    dim: config.dim,
    hiddenDim: config.hiddenDim,
    nLayers: config.nLayers,
    nHeads: config.nHeads,
    nKvHeads: config.nKvHeads,
    vocabSize: config.vocabSize,
    seqLen: config.seqLen,
    sharedClassifier: config.sharedClassifier,
    normEps,
    ropeTheta,
    headDim,
    qkvBias: config.qkvBias ?? false,
    outBias: config.outBias ?? false,
    mlpBias: config.mlpBias ?? false,
    qkNorm: config.qkNorm ?? false,
    family: config.family ?? "llama",
  };
  if (config.ropeScaling !== undefined) c.ropeScaling = config.ropeScaling;
  if (config.bosTokenId !== undefined) {
    if (!isTokenId(config.bosTokenId)) {
      throw new RangeError(
        `${where}: bosTokenId must be a token id, found ${JSON.stringify(config.bosTokenId)}`,
      );
    }
    c.bosTokenId = config.bosTokenId;
  }
  if (config.padTokenId !== undefined) {
    if (!isTokenId(config.padTokenId) || config.padTokenId >= c.vocabSize) {
      throw new RangeError(
        `${where}: padTokenId must be a token id below vocabSize ${c.vocabSize}, found ${
          JSON.stringify(config.padTokenId)
        }`,
      );
    }
    c.padTokenId = config.padTokenId;
  }
  if (config.eosTokenIds !== undefined) {
    if (!Array.isArray(config.eosTokenIds) || !config.eosTokenIds.every(isTokenId)) {
      throw new RangeError(
        `${where}: eosTokenIds must be a list of token ids, found ${JSON.stringify(config.eosTokenIds)}`,
      );
    }
    c.eosTokenIds = [...config.eosTokenIds];
  }
  Object.assign(c, slidingOf(config, where));
  checkFamily(c, where);
  return c;
}

/** The checked `slidingWindow` and `slidingLayers` of a config (none, or both with one flag per layer). */
function slidingOf(
  config: LlamaConfig,
  where: string,
): { slidingWindow?: number; slidingLayers?: readonly boolean[] } {
  const { slidingWindow: w, slidingLayers: layers } = config;
  if (w === undefined) {
    if (layers !== undefined) {
      throw new RangeError(
        `${where}: slidingLayers ${JSON.stringify(layers)} are given without a slidingWindow`,
      );
    }
    return {};
  }
  if (!Number.isSafeInteger(w) || w <= 0) {
    throw new RangeError(`${where}: slidingWindow must be a positive integer, found ${JSON.stringify(w)}`);
  }
  if (
    layers !== undefined &&
    (!Array.isArray(layers) || layers.length !== config.nLayers || layers.some((x) => typeof x !== "boolean"))
  ) {
    throw new RangeError(
      `${where}: slidingLayers must be ${config.nLayers} flags (true or false), one per layer, found ${
        JSON.stringify(layers)
      }`,
    );
  }
  return { slidingWindow: w, slidingLayers: [...(layers ?? Array(config.nLayers).fill(true))] };
}

/** The features each family's `transformers` class can express (what a saved `config.json` can say). */
function checkFamily(c: ResolvedLlamaConfig, where: string): void {
  const bad = (what: string): never => {
    throw new RangeError(`${where}: a ${c.family} model cannot have ${what}`);
  };
  switch (c.family) {
    case "llama":
      if (c.qkvBias !== c.outBias) {
        bad(`qkvBias ${c.qkvBias} with outBias ${c.outBias} (attention_bias sets both)`);
      }
      if (c.qkNorm) bad("qkNorm");
      if (c.slidingWindow !== undefined) bad(`a slidingWindow (${c.slidingWindow})`);
      return;
    case "qwen2":
      if (!c.qkvBias || c.outBias || c.mlpBias) bad("biases other than on wq, wk and wv");
      if (c.qkNorm) bad("qkNorm");
      return;
    case "qwen3":
      if (c.qkvBias !== c.outBias) {
        bad(`qkvBias ${c.qkvBias} with outBias ${c.outBias} (attention_bias sets both)`);
      }
      if (c.mlpBias) bad("mlpBias");
      if (!c.qkNorm) bad("attention without qkNorm");
      return;
    case "mistral":
      if (c.qkvBias || c.outBias || c.mlpBias) bad("biases");
      if (c.qkNorm) bad("qkNorm");
      if (c.slidingLayers?.includes(false)) {
        bad(`full layers beside sliding ones (slidingLayers ${JSON.stringify(c.slidingLayers)})`);
      }
      return;
    default:
      bad(`the unknown family ${JSON.stringify(c.family)}`);
  }
}

/**
 * Every parameter of a model with this config, as `{ name, shape }` in module order (the llama2.c file
 * order): the names {@link LlamaLM.fromWeights} expects and `namedParameters` returns.
 *
 * @example
 * ```ts
 * import { llamaParameterShapes } from "./llama.ts";
 * const shapes = llamaParameterShapes({
 *   dim: 8, hiddenDim: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 10, seqLen: 4, sharedClassifier: true,
 * });
 * shapes.find((e) => e.name === "layers.0.attention.wk.weight")!.shape; // [4, 8]
 * ```
 */
export function llamaParameterShapes(config: LlamaConfig): { name: string; shape: number[] }[] {
  const c = resolveLlamaConfig(config);
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  // Module order: per layer attention_norm, wq, wk, wv, wo (q_norm, k_norm), ffn_norm, w1, w2, w3.
  const out: { name: string; shape: number[] }[] = [{
    name: "tok_embeddings.weight",
    shape: [c.vocabSize, c.dim],
  }];
  const linear = (p: string, outF: number, inF: number, bias: boolean) => {
    out.push({ name: `${p}.weight`, shape: [outF, inF] });
    if (bias) out.push({ name: `${p}.bias`, shape: [outF] });
  };
  for (let i = 0; i < c.nLayers; i++) {
    const p = `layers.${i}`;
    out.push({ name: `${p}.attention_norm.weight`, shape: [c.dim] });
    linear(`${p}.attention.wq`, qDim, c.dim, c.qkvBias);
    linear(`${p}.attention.wk`, kvDim, c.dim, c.qkvBias);
    linear(`${p}.attention.wv`, kvDim, c.dim, c.qkvBias);
    linear(`${p}.attention.wo`, c.dim, qDim, c.outBias);
    if (c.qkNorm) {
      out.push({ name: `${p}.attention.q_norm.weight`, shape: [c.headDim] });
      out.push({ name: `${p}.attention.k_norm.weight`, shape: [c.headDim] });
    }
    out.push({ name: `${p}.ffn_norm.weight`, shape: [c.dim] });
    linear(`${p}.feed_forward.w1`, c.hiddenDim, c.dim, c.mlpBias);
    linear(`${p}.feed_forward.w2`, c.dim, c.hiddenDim, c.mlpBias);
    linear(`${p}.feed_forward.w3`, c.hiddenDim, c.dim, c.mlpBias);
  }
  out.push({ name: "norm.weight", shape: [c.dim] });
  if (!c.sharedClassifier) out.push({ name: "output.weight", shape: [c.vocabSize, c.dim] });
  return out;
}

/** Makes the parameter `name` of `shape` (random, or taken from a checkpoint); matrices may be stored as f16. */
type WeightSource = (name: string, shape: number[]) => F32 | F16;

/** An `Embedding` around an existing table (lib/nn has no `Embedding.fromWeights`). */
function embeddingFromWeights(weight: F32 | F16): Embedding {
  const layer = Object.create(Embedding.prototype) as Embedding;
  layer.weight = weight;
  return layer;
}

/** An `RMSNorm` with a given gain. */
function rmsNormFrom(weight: F32 | F16, eps: number): RMSNorm {
  const norm = new RMSNorm(weight.shape[0], { eps, device: weight.device });
  norm.weight = asF32(weight);
  return norm;
}

/** The Llama name of `Attention` (nn/attention.ts): one block's self-attention. */
export const LlamaAttention: typeof Attention = Attention;
/** The Llama name of `Attention`. */
export type LlamaAttention = Attention;
/** The Llama name of `SwiGLU` (nn/mlp.ts): one block's feed-forward `w2(silu(w1 x) · w3 x)`. */
export const LlamaFeedForward: typeof SwiGLU = SwiGLU;
/** The Llama name of `SwiGLU`. */
export type LlamaFeedForward = SwiGLU;
/** The Llama name of `TransformerBlock` (nn/transformer.ts): one pre-norm decoder layer. */
export const LlamaBlock: typeof TransformerBlock = TransformerBlock;
/** The Llama name of `TransformerBlock`. */
export type LlamaBlock = TransformerBlock;

/**
 * Keys and values of the positions a {@link LlamaLM} has seen, one `[B, capacity, nKvHeads, headDim]` pair per
 * layer. Make one with {@link LlamaLM.createCache}; {@link LlamaLM.forwardCached} extends it, and
 * {@link KvCache.realize} computes the new entries (with any other tensors, in one submission) and frees the
 * old ones.
 */
export class KvCache {
  /** Keys per layer. */
  readonly k: F32[];
  /** Values per layer. */
  readonly v: F32[];
  #length = 0;
  #capacity: number;
  #batch: number;
  #stale: F32[] = [];

  /** An empty cache (zeros) for `nLayers` layers. */
  constructor(
    shape: { nLayers: number; batch: number; capacity: number; nKvHeads: number; headDim: number },
    device: DeviceName,
  ) {
    const s = [shape.batch, shape.capacity, shape.nKvHeads, shape.headDim];
    this.k = Array.from({ length: shape.nLayers }, () => zeros(s, { device }));
    this.v = Array.from({ length: shape.nLayers }, () => zeros(s, { device }));
    this.#capacity = shape.capacity;
    this.#batch = shape.batch;
  }

  /** Positions filled so far. */
  get length(): number {
    return this.#length;
  }

  /** Positions the cache can hold. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Batch size. */
  get batch(): number {
    return this.#batch;
  }

  /** Records the new entries of `layer` (used by the model; the old ones are freed at the next realize). */
  set(layer: number, k: F32, v: F32): void {
    this.#stale.push(this.k[layer], this.v[layer]);
    this.k[layer] = k;
    this.v[layer] = v;
  }

  /** Marks `n` more positions as filled (used by the model). */
  advance(n: number): void {
    this.#length += n;
  }

  /**
   * Computes the pending entries together with `others` in one submission, then frees the replaced entries.
   * Pass every lazy tensor of the steps since the last call (e.g. each step's logits) that is still needed:
   * afterwards the entries they were computed from are gone.
   */
  async realize(...others: Tensor[]): Promise<void> {
    await realize(...others, ...this.k, ...this.v);
    for (const t of this.#stale) t.dispose();
    this.#stale = [];
  }
}

/**
 * The Llama-2 causal language model.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { LlamaLM } from "./llama.ts";
 * const model = await LlamaLM.fromLlama2c("../shared/data/models/stories260K/stories260K.bin");
 * const logits = model.forward(tensor([[1, 403, 407]], { dtype: "i32" })); // [1, 3, 512]
 * ```
 */
export class LlamaLM extends Module implements AliasedModule {
  /** Token embedding `[vocabSize, dim]` (also the classifier when it is shared). */
  tok_embeddings: Embedding;
  /** The decoder layers. */
  layers: LlamaBlock[];
  /** Final RMSNorm. */
  norm: RMSNorm;
  /** Classifier `[vocabSize, dim]`; absent when it is shared with the embedding. */
  declare output?: LinearLayer;
  #config: ResolvedLlamaConfig;
  #rope = new Map<DeviceName, RopeTables>();

  /** A model whose parameters come from `source`; use {@link LlamaLM.random} or the loaders. */
  private constructor(config: ResolvedLlamaConfig, source: WeightSource) {
    super();
    this.#config = config;
    const shapes = new Map(llamaParameterShapes(config).map((e) => [e.name, e.shape]));
    const get = (name: string) => source(name, shapes.get(name)!);
    const eps = config.normEps;
    this.tok_embeddings = embeddingFromWeights(get("tok_embeddings.weight"));
    this.layers = Array.from({ length: config.nLayers }, (_, i) => {
      const p = `layers.${i}`;
      const lin = (name: string) => {
        const bias = `${p}.${name}.bias`;
        return Linear.fromWeights(
          get(`${p}.${name}.weight`),
          shapes.has(bias) ? asF32(get(bias)) : undefined,
        );
      };
      const norms = config.qkNorm
        ? {
          q_norm: rmsNormFrom(get(`${p}.attention.q_norm.weight`), eps),
          k_norm: rmsNormFrom(get(`${p}.attention.k_norm.weight`), eps),
        }
        : undefined;
      const window = config.slidingLayers?.[i] ? config.slidingWindow : undefined;
      const attention = new Attention(config.dim, {
        nHeads: config.nHeads,
        nKvHeads: config.nKvHeads,
        // The model passes its own rotary tables; the layer's base is the model's, for its tables and its record.
        ropeTheta: config.ropeTheta,
        ...(window === undefined ? {} : { window }),
        layers: {
          wq: lin("attention.wq"),
          wk: lin("attention.wk"),
          wv: lin("attention.wv"),
          wo: lin("attention.wo"),
          ...norms,
        },
      });
      const ffn = { w1: lin("feed_forward.w1"), w2: lin("feed_forward.w2"), w3: lin("feed_forward.w3") };
      return new TransformerBlock(config.dim, {
        nHeads: config.nHeads,
        hiddenDim: config.hiddenDim,
        layers: {
          attention_norm: rmsNormFrom(get(`${p}.attention_norm.weight`), eps),
          attention,
          ffn_norm: rmsNormFrom(get(`${p}.ffn_norm.weight`), eps),
          feed_forward: new SwiGLU(config.dim, config.hiddenDim, { layers: ffn }),
        },
      });
    });
    this.norm = rmsNormFrom(get("norm.weight"), eps);
    if (!config.sharedClassifier) this.output = Linear.fromWeights(get("output.weight"));
  }

  /**
   * A model with fresh weights: every matrix normal with standard deviation `std` (default 0.02), the output
   * projections `wo` and `w2` scaled by `1/√(2·nLayers)` (as llama2.c's `model.py`), norm gains 1.
   *
   * @example
   * ```ts
   * import { LlamaLM } from "./llama.ts";
   * const model = LlamaLM.random({
   *   dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 50, seqLen: 16, sharedClassifier: false,
   * }, { seed: 1 });
   * ```
   */
  static random(config: LlamaConfig, options: LlamaRandomOptions): LlamaLM {
    checkOptions("LlamaLM.random", RANDOM_OPTIONS, options);
    const c = resolveLlamaConfig(config);
    const std = options.std ?? 0.02;
    const device = options.device;
    return new LlamaLM(c, (name, shape) => {
      if (name.endsWith(".bias")) return constantParam(shape, 0, { device });
      if (shape.length === 1) return constantParam(shape, 1, { device }) as F32;
      const scaled = /\.(wo|w2)\.weight$/.test(name);
      const s = scaled ? std / Math.sqrt(2 * c.nLayers) : std;
      return normalParam(shape, s, { seed: deriveSeed(options.seed, name), device }) as F32;
    });
  }

  /**
   * A model from host weights keyed by parameter name (see {@link llamaParameterShapes}). Every weight must be
   * present with exactly its shape, and unknown names are rejected; `source` names where they came from in errors.
   *
   * @example
   * ```ts
   * import { readLlama2c } from "../io/llama2c.ts";
   * import { LlamaLM } from "./llama.ts";
   * const { config, weights } = await readLlama2c("../shared/data/models/stories260K/stories260K.bin");
   * const model = LlamaLM.fromWeights(config, weights);
   * ```
   */
  static fromWeights(
    config: LlamaConfig,
    weights: ReadonlyMap<string, HostWeight>,
    options: LlamaLoadOptions & { source?: string } = {},
  ): LlamaLM {
    checkOptions("LlamaLM.fromWeights", FROM_WEIGHTS_OPTIONS, options);
    const where = options.source === undefined ? "LlamaLM.fromWeights" : `"${options.source}"`;
    const c = resolveLlamaConfig(config, `${where}: config`);
    const expected = llamaParameterShapes(c);
    const known = new Set(expected.map((e) => e.name));
    const unknown = [...weights.keys()].filter((k) => !known.has(k));
    if (unknown.length > 0) {
      const hint = c.sharedClassifier && unknown.includes("output.weight")
        ? " (the config says the classifier is shared with the embedding)"
        : "";
      throw new RangeError(`${where}: unexpected weight(s) ${unknown.slice(0, 5).join(", ")}${hint}`);
    }
    for (const { name, shape } of expected) {
      const w = weights.get(name);
      if (w === undefined) {
        throw new RangeError(`${where}: weight "${name}" [${shape.join(", ")}] is missing`);
      }
      const count = shape.reduce((a, b) => a * b, 1);
      if (w.shape.join() !== shape.join() || w.data.length !== count) {
        throw new RangeError(
          `${where}: weight "${name}" has shape [${
            w.shape.join(", ")
          }] (${w.data.length} values), expected [${shape.join(", ")}]`,
        );
      }
    }
    const device = options.device ?? getDefaultDevice();
    const half = options.weightDtype === "f16";
    return new LlamaLM(c, (name, shape) => {
      const dtype = half && shape.length === 2 ? "f16" : "f32";
      return tensor(weights.get(name)!.data, { shape, device, dtype }) as F32 | F16;
    });
  }

  /**
   * A model around device tensors keyed by parameter name (what a streaming loader builds one tensor at a time).
   * Every parameter must be present with its shape; matrices may be f16, vectors (norms, biases) must be f32.
   *
   * @example
   * ```ts
   * import { LlamaLM } from "./llama.ts";
   * import { namedParameters } from "../nn/module.ts";
   * import type { F32 } from "../nn/linear.ts";
   * const a = LlamaLM.random({
   *   dim: 16, hiddenDim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 20, seqLen: 8, sharedClassifier: true,
   * }, { seed: 0 });
   * const b = LlamaLM.fromTensors(a.config, new Map(namedParameters(a) as [string, F32][]));
   * ```
   */
  static fromTensors(
    config: LlamaConfig,
    tensors: ReadonlyMap<string, F32 | F16>,
    options: { source?: string } = {},
  ): LlamaLM {
    checkOptions("LlamaLM.fromTensors", FROM_TENSORS_OPTIONS, options);
    const where = options.source === undefined ? "LlamaLM.fromTensors" : `"${options.source}"`;
    const c = resolveLlamaConfig(config, `${where}: config`);
    const expected = llamaParameterShapes(c);
    const known = new Set(expected.map((e) => e.name));
    const unknown = [...tensors.keys()].filter((k) => !known.has(k));
    if (unknown.length > 0) {
      throw new RangeError(`${where}: unexpected weight(s) ${unknown.slice(0, 5).join(", ")}`);
    }
    for (const { name, shape } of expected) {
      const t = tensors.get(name);
      if (t === undefined) {
        throw new RangeError(`${where}: weight "${name}" [${shape.join(", ")}] is missing`);
      }
      const okDtype = t.dtype === "f32" || (t.dtype === "f16" && shape.length === 2);
      if (t.shape.join() !== shape.join() || !okDtype) {
        throw new RangeError(
          `${where}: weight "${name}" is ${t.dtype} [${t.shape.join(", ")}], expected ${
            shape.length === 2 ? "f32 or f16" : "f32"
          } [${shape.join(", ")}]`,
        );
      }
    }
    return new LlamaLM(c, (name) => tensors.get(name)!);
  }

  /**
   * Loads a llama2.c checkpoint (legacy version-0 layout, e.g. `stories260K.bin`).
   *
   * @example
   * ```ts
   * import { LlamaLM } from "./llama.ts";
   * const model = await LlamaLM.fromLlama2c("../shared/data/models/stories260K/stories260K.bin");
   * model.config.nKvHeads; // 4
   * ```
   */
  static async fromLlama2c(path: string, options: LlamaLoadOptions = {}): Promise<LlamaLM> {
    checkLoadOptions("LlamaLM.fromLlama2c", options);
    const { config, weights } = await readLlama2c(path);
    // The file names no token ids; llama2.c's tokenizers have BOS 1 and EOS 2 (kept so that saveHf writes them).
    return LlamaLM.fromWeights({ ...config, bosTokenId: 1, eosTokenIds: [2] }, weights, {
      ...options,
      source: path,
    });
  }

  /**
   * The Hugging Face name of the module at `path` (`layers.0.attention.wq` → `model.layers.0.self_attn.q_proj`),
   * so LoRA `targetModules` may use either convention (`["q_proj", "v_proj"]` or `["wq", "wv"]`).
   */
  moduleAlias(path: string): string | undefined {
    return hfModulePath(path);
  }

  /**
   * Rows of the module at `path` in Hugging Face's layout (`toAlias`) or back: queries and keys (and their norms)
   * rotate interleaved pairs here and halves there, so their output rows are permuted per head; every other module
   * keeps its rows.
   */
  convertRows(path: string, rows: Float32Array, cols: number, toAlias: boolean): Float32Array {
    const m = /\.attention\.(wq|wk|q_norm|k_norm)$/.exec(path);
    if (m === null) return rows;
    const heads = m[1] === "wq" ? this.#config.nHeads : m[1] === "wk" ? this.#config.nKvHeads : 1;
    return toAlias ? ropeRowsToHf(rows, heads, cols) : ropeRowsFromHf(rows, heads, cols);
  }

  /** The hyper-parameters (with defaults filled in). */
  get config(): ResolvedLlamaConfig {
    return { ...this.#config };
  }

  /** Size of one attention head. */
  get headDim(): number {
    return this.#config.headDim;
  }

  /**
   * The settings a resumed run must share with the run that wrote its checkpoint (`ConfiguredModule`; the layers
   * record theirs): the RoPE base and scaling of the model's rotary tables, and the padding token whose embedding row
   * gets no gradient.
   */
  runSettings(): Record<string, number | boolean | string> {
    const { ropeTheta, ropeScaling, padTokenId } = this.#config;
    return {
      ropeTheta,
      ...Object.fromEntries(Object.entries(ropeScaling ?? {}).map(([k, v]) => [`ropeScaling.${k}`, v])),
      ...(padTokenId === undefined ? {} : { padTokenId }),
    };
  }

  /** The device of the parameters. */
  get device(): DeviceName {
    return this.tok_embeddings.weight.device;
  }

  /**
   * The embedding rows of `tokens` `[B, T]`, `[B, T, dim]`. Rows looked up for the config's `padTokenId` pass no
   * gradient back to the table, as torch's `nn.Embedding(padding_idx)` in transformers' models.
   */
  embed(tokens: Tensor<Shape, "i32">): F32 {
    const rows = this.tok_embeddings.forward(tokens) as F32;
    const pad = this.#config.padTokenId;
    if (pad === undefined) return rows;
    // d(rows)/d(table) is zero at the pad token's positions, and the values are those of the lookup.
    return tokens.eq(pad).reshape([...tokens.shape, 1]).where(stopGradient(rows), rows) as F32;
  }

  /**
   * RoPE tables on `device` covering at least positions `0 .. needed−1`: the whole context when it is at most 4096
   * positions, else a power of two (from 4096) that grows when a longer sequence arrives, so a 128k-context model
   * does not build 128k-row tables for short sequences.
   */
  #ropeTables(device: DeviceName, needed: number): RopeTables {
    const { seqLen, ropeTheta, ropeScaling } = this.#config;
    let t = this.#rope.get(device);
    if (t === undefined || t.cos.shape[0] < needed) {
      let length = Math.min(seqLen, 4096);
      while (length < needed) length = Math.min(seqLen, length * 2);
      t = ropeTables(this.headDim, length, { theta: ropeTheta, scaling: ropeScaling, device });
      this.#rope.set(device, t);
    }
    return t;
  }

  #checkTokens(tokens: Tensor, what: string): [number, number] {
    if (tokens.dtype !== "i32" || tokens.ndim !== 2) {
      throw new TypeError(
        `${what}: tokens must be an i32 tensor [B, T], got ${tokens.dtype} [${tokens.shape}]`,
      );
    }
    return [tokens.shape[0], tokens.shape[1]];
  }

  /** Final norm and classifier. */
  #logits(h: F32): Tensor<number[], "f32"> {
    const x = this.norm.forward(h);
    return this.output === undefined ? linear(x, this.tok_embeddings.weight) : this.output.forward(x);
  }

  /**
   * Logits `[B, T, vocabSize]` of a batch of token ids `[B, T]` (i32, `T ≤ seqLen`), causally: position `t` sees
   * tokens `0 .. t` (in a sliding layer only `t − slidingWindow + 1 .. t`).
   */
  forward(tokens: Tensor<Shape, "i32">): Tensor<number[], "f32"> {
    const [, t] = this.#checkTokens(tokens, "LlamaLM.forward");
    if (t > this.#config.seqLen) {
      throw new RangeError(
        `LlamaLM.forward: ${t} positions exceed the context length ${this.#config.seqLen}`,
      );
    }
    const full = this.#ropeTables(tokens.device, t);
    const rope = { cos: full.cos.slice([0, t]), sin: full.sin.slice([0, t]) };
    let h = this.embed(tokens);
    for (const layer of this.layers) h = layer.forward(h, { rope });
    return this.#logits(h);
  }

  /**
   * Mean cross-entropy of next-token predictions: `targets` `[B, T]` (i32) holds the token that should follow
   * each input position; targets equal to `ignoreIndex` (default -100) are left out.
   *
   * @example
   * ```ts
   * import { tensor } from "../tensor/creation.ts";
   * import { LlamaLM } from "./llama.ts";
   * const model = LlamaLM.random({
   *   dim: 16, hiddenDim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 20, seqLen: 8, sharedClassifier: true,
   * }, { seed: 0 });
   * const loss = model.loss(tensor([[1, 5, 7]], { dtype: "i32" }), tensor([[5, 7, -100]], { dtype: "i32" }));
   * ```
   */
  loss(
    tokens: Tensor<Shape, "i32">,
    targets: Tensor<Shape, "i32">,
    options: Omit<CrossEntropyOptions, "weights"> & { weights?: F32 } = {},
  ): Tensor<number[], "f32"> {
    return crossEntropy(this.forward(tokens), targets, options);
  }

  /**
   * An empty key/value cache for `batch` sequences of up to `capacity` positions (default `seqLen`).
   */
  createCache(options: { batch?: number; capacity?: number; device?: DeviceName } = {}): KvCache {
    checkOptions("LlamaLM.createCache", CACHE_OPTIONS, options);
    const capacity = options.capacity ?? this.#config.seqLen;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > this.#config.seqLen) {
      throw new RangeError(
        `LlamaLM.createCache: capacity must be an integer in 1..${this.#config.seqLen}, got ${capacity}`,
      );
    }
    return new KvCache({
      nLayers: this.#config.nLayers,
      batch: options.batch ?? 1,
      capacity,
      nKvHeads: this.#config.nKvHeads,
      headDim: this.headDim,
    }, options.device ?? this.device);
  }

  /**
   * Logits of new tokens `[B, T]` at positions `cache.length .. cache.length + T − 1`, attending to the cached
   * positions; the cache is extended by `T` (its new entries are lazy until {@link KvCache.realize}).
   * Kernels do not depend on the position, so decoding one token at a time reuses compiled pipelines.
   *
   * @example
   * ```ts
   * import { tensor } from "../tensor/creation.ts";
   * import { LlamaLM } from "./llama.ts";
   * const model = await LlamaLM.fromLlama2c("../shared/data/models/stories260K/stories260K.bin");
   * const cache = model.createCache({ capacity: 16 });
   * let logits = model.forwardCached(tensor([[1, 403]], { dtype: "i32" }), cache, { lastOnly: true });
   * await cache.realize(logits);
   * logits = model.forwardCached(tensor([[407]], { dtype: "i32" }), cache); // position 2
   * await cache.realize(logits);
   * ```
   */
  forwardCached(
    tokens: Tensor<Shape, "i32">,
    cache: KvCache,
    options: ForwardCachedOptions = {},
  ): Tensor<number[], "f32"> {
    const [b, t] = this.#checkTokens(tokens, "LlamaLM.forwardCached");
    if (t === 0) throw new RangeError(`LlamaLM.forwardCached: no new tokens (tokens are [${b}, 0])`);
    if (b !== cache.batch) {
      throw new RangeError(
        `LlamaLM.forwardCached: batch ${b} does not match the cache's batch ${cache.batch}`,
      );
    }
    if (cache.k.length !== this.layers.length) {
      throw new RangeError(
        `LlamaLM.forwardCached: the cache has ${cache.k.length} layers, the model ${this.layers.length}`,
      );
    }
    const valid = options.valid ?? t;
    if (!Number.isInteger(valid) || valid < 1 || valid > t) {
      throw new RangeError(`LlamaLM.forwardCached: valid must be an integer in 1..${t}, got ${valid}`);
    }
    const start = cache.length;
    const cap = cache.capacity;
    if (start + t > cap) {
      throw new RangeError(
        `LlamaLM.forwardCached: ${t} new position(s) after ${start} exceed the cache capacity ${cap}`,
      );
    }
    const device = tokens.device;
    const positions = Int32Array.from({ length: t }, (_, i) => start + i);
    const source = Int32Array.from({ length: cap }, (_, j) => Math.min(Math.max(j - start, 0), t - 1));
    const write = Uint8Array.from({ length: cap }, (_, j) => (j >= start && j < start + t ? 1 : 0));
    const pos = tensor(positions, { dtype: "i32", device }) as Tensor<Shape, "i32">;
    const full = this.#ropeTables(device, start + t);
    const slots = arange(cap, undefined, 1, { dtype: "i32", device }).reshape([1, cap]) as Tensor<
      Shape,
      "i32"
    >;
    const step: CachedStep = {
      rope: { cos: full.cos.gather(pos, 0) as F32, sin: full.sin.gather(pos, 0) as F32 },
      positions: pos,
      mask: slots.le(pos.reshape([t, 1]) as Tensor<Shape, "i32">) as Tensor<Shape, "bool">,
      write: tensor(write, { dtype: "bool", device }) as Tensor<Shape, "bool">,
      source: tensor(source, { dtype: "i32", device }) as Tensor<Shape, "i32">,
    };
    let h = this.embed(tokens);
    this.layers.forEach((layer, i) => {
      const r = layer.forwardCached(h, step, { k: cache.k[i], v: cache.v[i] });
      cache.set(i, r.k, r.v);
      h = r.y;
    });
    cache.advance(valid);
    if (options.lastOnly && t > 1) {
      // A gather, whose index is data: a slice's offset is part of the kernel on some backends.
      const last = tensor(Int32Array.of(valid - 1), { dtype: "i32", device }) as Tensor<Shape, "i32">;
      h = h.gather(last, 1) as F32;
    }
    return this.#logits(h);
  }

  /**
   * The weights as host arrays keyed by parameter name (the input of {@link LlamaLM.fromWeights}, and what the
   * savers write). Throws when the model's parameters are not exactly the plain Llama ones (e.g. LoRA layers
   * are attached: merge them first).
   */
  async hostWeights(): Promise<Map<string, HostWeight>> {
    const params = new Map(namedParameters(this));
    const expected = llamaParameterShapes(this.#config);
    const extra = [...params.keys()].filter((k) => !expected.some((e) => e.name === k));
    if (extra.length > 0) {
      throw new RangeError(
        `LlamaLM.hostWeights: the model has parameters beyond the Llama ones (${
          extra.slice(0, 3).join(", ")
        }${extra.length > 3 ? ", ..." : ""}); merge LoRA layers (mergeLora) before saving`,
      );
    }
    const out = new Map<string, HostWeight>();
    for (const { name, shape } of expected) {
      const t = params.get(name);
      if (t === undefined) throw new RangeError(`LlamaLM.hostWeights: parameter "${name}" is missing`);
      out.set(name, { shape: [...shape], data: Float32Array.from(await t.data() as Float32Array) });
    }
    return out;
  }
}
