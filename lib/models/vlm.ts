/**
 * A toy vision-language model in the LLaVA mould: a small ViT-style image encoder (patches embedded by a `Linear`,
 * pre-norm transformer blocks with bidirectional attention), a two-layer projector into the language model's
 * embedding space, and a {@link LlamaLM} that reads the projected visual tokens before the text tokens.
 *
 * Module paths (what LoRA's `targetModules` match): the LM's `lm.layers.{i}.attention.{wq,wk,wv,wo}` and
 * `lm.layers.{i}.feed_forward.{w1,w2,w3}`; the encoder's `encoder.patch_embed`,
 * `encoder.blocks.{i}.attn.{q_proj,k_proj,v_proj,out_proj}`, `encoder.blocks.{i}.mlp.{fc1,fc2}` and the
 * classification `encoder.head`; the projector's `projector.linear_1`, `projector.linear_2`. The names differ
 * between the parts, so `["wq", "wv"]` selects the LM only.
 *
 * Training follows LLaVA's stages, with a text-only warm-up of the LM first (the LLaVA LM is pretrained):
 * (0) the LM on the captions as plain text, (a) the encoder on a classification task (shape × colour of
 * `generateShapes`, or the emoji group), (b) the projector on captioning with encoder and LM frozen, and (c) LoRA on
 * the LM (see {@link captionTrainer}). {@link cachedVlm} runs (0)–(b) once and keeps the result on disk.
 *
 * @module
 */
import type { DeviceName } from "../ir/node.ts";
import type { Shape } from "../shape.ts";
import { concat, tensor } from "../tensor/creation.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { causalAttention, type RopeTables, ropeTables } from "../nn/attention.ts";
import { deriveSeed, normalParam } from "../nn/init.ts";
import { type F32, Linear, linear, type LinearLayer } from "../nn/linear.ts";
import { loadParameters, Module, namedParameters, type ParamFilter } from "../nn/module.ts";
import { LayerNorm } from "../nn/norm.ts";
import { crossEntropy } from "../nn/loss.ts";
import { AdamW } from "../nn/optim/adam.ts";
import { cosineSchedule } from "../nn/optim/schedule.ts";
import { Trainer, type TrainerOptions } from "../train/trainer.ts";
import { sampleWindows } from "../train/batches.ts";
import { Rng } from "../data/rng.ts";
import { type CharVocab, charVocab, generateShapes } from "../data/generated.ts";
import { loadEmojiPack, rgbaOnWhite } from "../data/images.ts";
import { collectActivations } from "../init/calibrate.ts";
import type { LayerData } from "../init/types.ts";
import { readSafetensors, type StEntry, writeSafetensors } from "../io/safetensors.ts";
import { removeTemporaries } from "../io/atomic.ts";
import { processAlive } from "../io/lock.ts";
import { checkFinite } from "../nn/finite.ts";
import { type LlamaConfig, LlamaLM } from "./llama.ts";
import { cacheKey, loadCacheEntry } from "./cache.ts";

type M = Tensor<number[], "f32">;
/** An i32 tensor of any shape (token ids, targets). */
export type I32 = Tensor<Shape, "i32">;

// ----- configuration -----

/** Hyper-parameters of a {@link ToyVlm}. */
export interface VlmConfig {
  /** Image side in pixels (images are `[B, size, size, channels]`). */
  imageSize: number;
  /** Channels per pixel (3 for RGB). */
  channels: number;
  /** Patch side; must divide `imageSize`. */
  patchSize: number;
  /** Width of the image encoder. */
  visionDim: number;
  /** Encoder blocks. */
  visionLayers: number;
  /** Encoder attention heads (must divide `visionDim`). */
  visionHeads: number;
  /** Inner width of the encoder MLP. */
  visionMlp: number;
  /** Classes of the encoder's pretraining head (stage a). */
  nClasses: number;
  /** The language model; `seqLen` must hold the visual tokens plus the text. */
  lm: LlamaConfig;
}

/** Number of visual tokens (patches) of a config. */
export function visualTokens(config: VlmConfig): number {
  return (config.imageSize / config.patchSize) ** 2;
}

function checkConfig(c: VlmConfig): void {
  if (c.imageSize % c.patchSize !== 0) {
    throw new RangeError(`ToyVlm: patchSize ${c.patchSize} does not divide imageSize ${c.imageSize}`);
  }
  if (c.visionDim % c.visionHeads !== 0) {
    throw new RangeError(`ToyVlm: visionHeads ${c.visionHeads} does not divide visionDim ${c.visionDim}`);
  }
  if (visualTokens(c) >= c.lm.seqLen) {
    throw new RangeError(
      `ToyVlm: ${visualTokens(c)} visual tokens leave no room for text in the LM's seqLen ${c.lm.seqLen}`,
    );
  }
}

// ----- image encoder -----

/** Bidirectional multi-head self-attention of the encoder, CLIP-style names (`q_proj`, ..., `out_proj`). */
export class VisionAttention extends Module {
  /** Query projection. */
  q_proj: LinearLayer;
  /** Key projection. */
  k_proj: LinearLayer;
  /** Value projection. */
  v_proj: LinearLayer;
  /** Output projection. */
  out_proj: LinearLayer;
  #heads: number;

  /** A layer of width `dim` with `heads` heads. */
  constructor(dim: number, heads: number, opts: { seed: number; device?: DeviceName }) {
    super();
    const lin = (key: string) =>
      new Linear(dim, dim, { seed: deriveSeed(opts.seed, key), device: opts.device });
    this.q_proj = lin("q_proj");
    this.k_proj = lin("k_proj");
    this.v_proj = lin("v_proj");
    this.out_proj = lin("out_proj");
    this.#heads = heads;
  }

  /** Attention of every token over every token of `x` (`[B, T, dim]`). */
  forward(x: F32): Tensor<number[], "f32"> {
    const [b, t, d] = x.shape;
    const hd = d / this.#heads;
    const split = (y: M) => y.reshape([b, t, this.#heads, hd]) as F32;
    const o = causalAttention(
      split(this.q_proj.forward(x)),
      split(this.k_proj.forward(x)),
      split(this.v_proj.forward(x)),
      { causal: false },
    );
    return this.out_proj.forward(o.reshape([b, t, d]) as F32);
  }
}

/** The encoder MLP `fc2(gelu(fc1 x))`. */
export class VisionMlp extends Module {
  /** `dim → hidden`. */
  fc1: LinearLayer;
  /** `hidden → dim`. */
  fc2: LinearLayer;

  /** An MLP for width `dim`. */
  constructor(dim: number, hidden: number, opts: { seed: number; device?: DeviceName }) {
    super();
    this.fc1 = new Linear(dim, hidden, { seed: deriveSeed(opts.seed, "fc1"), device: opts.device });
    this.fc2 = new Linear(hidden, dim, { seed: deriveSeed(opts.seed, "fc2"), device: opts.device });
  }

  /** `fc2(gelu(fc1 x))`. */
  forward(x: F32): Tensor<number[], "f32"> {
    return this.fc2.forward(this.fc1.forward(x).gelu() as F32);
  }
}

/** One pre-norm ViT block: `h = x + attn(norm1(x))`, `y = h + mlp(norm2(h))`. */
export class VisionBlock extends Module {
  /** LayerNorm before attention. */
  norm1: LayerNorm;
  /** Self-attention. */
  attn: VisionAttention;
  /** LayerNorm before the MLP. */
  norm2: LayerNorm;
  /** MLP. */
  mlp: VisionMlp;

  /** A block of width `dim`. */
  constructor(dim: number, opts: { heads: number; hidden: number; seed: number; device?: DeviceName }) {
    super();
    const d = { device: opts.device };
    this.norm1 = new LayerNorm(dim, d);
    this.attn = new VisionAttention(dim, opts.heads, { seed: deriveSeed(opts.seed, "attn"), ...d });
    this.norm2 = new LayerNorm(dim, d);
    this.mlp = new VisionMlp(dim, opts.hidden, { seed: deriveSeed(opts.seed, "mlp"), ...d });
  }

  /** The block over `[B, T, dim]`. */
  forward(x: F32): Tensor<number[], "f32"> {
    const h = x.add(this.attn.forward(this.norm1.forward(x) as F32)) as F32;
    return h.add(this.mlp.forward(this.norm2.forward(h) as F32)) as M;
  }
}

/**
 * A ViT-style encoder: non-overlapping patches flattened and embedded by `patch_embed`, learned position embeddings,
 * `visionLayers` blocks and a final LayerNorm; `head` classifies the mean-pooled tokens (stage a).
 */
export class VisionEncoder extends Module {
  /** `patch²·channels → visionDim`. */
  patch_embed: LinearLayer;
  /** Position embeddings `[patches, visionDim]`. */
  pos_embed: F32;
  /** The transformer blocks. */
  blocks: VisionBlock[];
  /** Final LayerNorm. */
  norm: LayerNorm;
  /** Classifier of the pooled tokens. */
  head: LinearLayer;
  #patch: number;

  /** An encoder for `config`. */
  constructor(config: VlmConfig, opts: { seed: number; device?: DeviceName }) {
    super();
    const { patchSize: p, channels: c, visionDim: d } = config;
    const device = opts.device;
    this.patch_embed = new Linear(p * p * c, d, { seed: deriveSeed(opts.seed, "patch_embed"), device });
    this.pos_embed = normalParam([visualTokens(config), d], 0.02, {
      seed: deriveSeed(opts.seed, "pos_embed"),
      device,
    }) as F32;
    this.blocks = Array.from({ length: config.visionLayers }, (_, i) =>
      new VisionBlock(d, {
        heads: config.visionHeads,
        hidden: config.visionMlp,
        seed: deriveSeed(opts.seed, "blocks", i),
        device,
      }));
    this.norm = new LayerNorm(d, { device });
    this.head = new Linear(d, config.nClasses, { seed: deriveSeed(opts.seed, "head"), device });
    this.#patch = p;
  }

  /** Patch tokens `[B, patches, visionDim]` of images `[B, H, W, C]`. */
  forward(images: F32): Tensor<number[], "f32"> {
    if (images.ndim !== 4) {
      throw new RangeError(`VisionEncoder: images must be [B, H, W, C], got [${images.shape.join(", ")}]`);
    }
    const [b, h, w, c] = images.shape;
    const p = this.#patch;
    // [B, H, W, C] → [B, H/p, p, W/p, p·C] → [B, H/p, W/p, p, p·C] → [B, patches, p·p·C]
    const patches = images.reshape([b, h / p, p, w / p, p * c]).permute([0, 1, 3, 2, 4])
      .reshape([b, (h / p) * (w / p), p * p * c]) as F32;
    let x = this.patch_embed.forward(patches).add(this.pos_embed) as F32;
    for (const block of this.blocks) x = block.forward(x) as F32;
    return this.norm.forward(x);
  }

  /** Class logits `[B, nClasses]` of the mean-pooled tokens. */
  classify(images: F32): Tensor<number[], "f32"> {
    return this.head.forward(this.forward(images).mean(1) as F32);
  }
}

/** LLaVA-1.5's projector: `linear_2(gelu(linear_1 v))`, from the encoder width to the LM width. */
export class Projector extends Module {
  /** `visionDim → lmDim`. */
  linear_1: LinearLayer;
  /** `lmDim → lmDim`. */
  linear_2: LinearLayer;

  /** A projector `inDim → outDim`. */
  constructor(inDim: number, outDim: number, opts: { seed: number; device?: DeviceName }) {
    super();
    this.linear_1 = new Linear(inDim, outDim, {
      seed: deriveSeed(opts.seed, "linear_1"),
      device: opts.device,
    });
    this.linear_2 = new Linear(outDim, outDim, {
      seed: deriveSeed(opts.seed, "linear_2"),
      device: opts.device,
    });
  }

  /** `linear_2(gelu(linear_1 v))`. */
  forward(v: F32): Tensor<number[], "f32"> {
    return this.linear_2.forward(this.linear_1.forward(v).gelu() as F32);
  }
}

// ----- the model -----

/** Options of {@link ToyVlm.random}. */
export interface VlmRandomOptions {
  /** Seed of every weight. */
  seed: number;
  /** Standard deviation of the LM's normal weights (default 0.02, as `LlamaLM.random`). */
  lmStd?: number;
  /** Device of the parameters. */
  device?: DeviceName;
}

/**
 * The toy vision-language model: `lm(concat(projector(encoder(images)), embed(tokens)))`.
 *
 * @example
 * ```ts
 * import { rand, tensor } from "../tensor/creation.ts";
 * import { ToyVlm } from "./vlm.ts";
 * const vlm = ToyVlm.random({
 *   imageSize: 8, channels: 3, patchSize: 4, visionDim: 16, visionLayers: 1, visionHeads: 2, visionMlp: 32,
 *   nClasses: 4,
 *   lm: { dim: 16, hiddenDim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 10, seqLen: 16,
 *     sharedClassifier: true },
 * }, { seed: 0 });
 * const logits = vlm.forward(rand([2, 8, 8, 3], { seed: 1 }), tensor([[1, 2, 3], [4, 5, 6]], { dtype: "i32" }));
 * // [2, 4 + 3, 10]: 4 visual tokens, then the 3 text tokens
 * ```
 */
export class ToyVlm extends Module {
  /** The image encoder. */
  encoder: VisionEncoder;
  /** Encoder tokens → LM embedding space. */
  projector: Projector;
  /** The language model. */
  lm: LlamaLM;
  #config: VlmConfig;
  #rope = new Map<string, RopeTables>();

  /** Use {@link ToyVlm.random}. */
  private constructor(config: VlmConfig, options: VlmRandomOptions) {
    super();
    checkConfig(config);
    this.#config = structuredClone(config);
    const device = options.device;
    this.encoder = new VisionEncoder(config, { seed: deriveSeed(options.seed, "encoder"), device });
    this.projector = new Projector(config.visionDim, config.lm.dim, {
      seed: deriveSeed(options.seed, "projector"),
      device,
    });
    this.lm = LlamaLM.random(config.lm, { seed: deriveSeed(options.seed, "lm"), std: options.lmStd, device });
  }

  /** A model with fresh weights. */
  static random(config: VlmConfig, options: VlmRandomOptions): ToyVlm {
    return new ToyVlm(config, options);
  }

  /** The hyper-parameters. */
  get config(): VlmConfig {
    return structuredClone(this.#config);
  }

  /** Number of visual tokens per image. */
  get visualTokens(): number {
    return visualTokens(this.#config);
  }

  /** The visual tokens `[B, P, lmDim]` of images `[B, H, W, C]`. */
  embedImages(images: F32): Tensor<number[], "f32"> {
    return this.projector.forward(this.encoder.forward(images) as F32);
  }

  /** Final hidden states `[B, P + T, lmDim]` (before the LM's final norm). */
  hidden(images: F32, tokens: I32): Tensor<number[], "f32"> {
    if (tokens.dtype !== "i32" || tokens.ndim !== 2 || tokens.shape[0] !== images.shape[0]) {
      throw new RangeError(
        `ToyVlm: tokens must be i32 [B, T] with the images' batch ${images.shape[0]}, got ${tokens.dtype} ` +
          `[${tokens.shape.join(", ")}]`,
      );
    }
    const total = this.visualTokens + tokens.shape[1];
    const lm = this.lm.config;
    if (total > lm.seqLen) {
      throw new RangeError(
        `ToyVlm: ${this.visualTokens} visual + ${
          tokens.shape[1]
        } text tokens exceed the LM's seqLen ${lm.seqLen}`,
      );
    }
    const key = `${total}:${tokens.device}`;
    let rope = this.#rope.get(key);
    if (rope === undefined) {
      rope = ropeTables(lm.dim / lm.nHeads, total, { theta: lm.ropeTheta, device: tokens.device });
      this.#rope.set(key, rope);
    }
    const text = this.lm.tok_embeddings.forward(tokens) as F32;
    let h = concat([this.embedImages(images) as F32, text], 1) as F32;
    for (const layer of this.lm.layers) h = layer.forward(h, rope) as F32;
    return h as M;
  }

  /** Final norm and classifier of hidden states. */
  #logits(h: F32): Tensor<number[], "f32"> {
    const x = this.lm.norm.forward(h) as F32;
    return this.lm.output === undefined
      ? linear(x, this.lm.tok_embeddings.weight)
      : this.lm.output.forward(x);
  }

  /** Logits `[B, P + T, vocab]`: visual positions first, then the text positions (causal over both). */
  forward(images: F32, tokens: I32): Tensor<number[], "f32"> {
    return this.#logits(this.hidden(images, tokens) as F32);
  }

  /**
   * Mean cross-entropy of the text positions: `targets` `[B, T]` is the token following each text input
   * (`-100` = ignored, e.g. padding).
   */
  loss(images: F32, tokens: I32, targets: I32): Tensor<number[], "f32"> {
    const p = this.visualTokens;
    const h = this.hidden(images, tokens).slice(null, [p, p + tokens.shape[1]]) as F32;
    return crossEntropy(this.#logits(h) as F32, targets);
  }
}

// ----- data -----

/** Images with captions and class labels, as plain arrays. */
export interface VlmData {
  /** `n × size × size × 3` floats in [0, 1]. */
  images: Float32Array;
  /** One caption per image. */
  captions: string[];
  /** One class label per image (stage a). */
  labels: Int32Array;
  /** Number of classes. */
  nClasses: number;
  /** Number of images. */
  n: number;
  /** Image side. */
  size: number;
  /** Where the data came from. */
  description: string;
}

/**
 * Captioned shapes from `generateShapes`; the class is `shape·8 + colour` (32 classes).
 *
 * @example
 * ```ts
 * import { shapesVlmData } from "./vlm.ts";
 * const data = shapesVlmData({ n: 10, seed: 0 });
 * data.captions[0]; // e.g. "two red circles at the top left"
 * ```
 */
export function shapesVlmData(opts: { n: number; seed: number; size?: number }): VlmData {
  const d = generateShapes({ n: opts.n, seed: opts.seed, size: opts.size ?? 16 });
  const labels = Int32Array.from(d.labels.shape, (s, i) => s * 8 + d.labels.colour[i]);
  return {
    images: d.images,
    captions: d.captions,
    labels,
    nClasses: 32,
    n: d.n,
    size: d.size,
    description: `generateShapes (n ${opts.n}, seed ${opts.seed}, ${d.size} px)`,
  };
}

/**
 * The Noto emoji pack at `dir` (e.g. `../shared/data/vl/noto_emoji32`) as captioned images: composited on white,
 * average-pooled from 32 px to `size` (a divisor of 32, default 16), captions = lower-cased CLDR names cut to
 * `maxCaption` characters (default 40), class = CLDR group (10). `start`/`count` pick a slice of the rows.
 */
export async function emojiVlmData(
  dir: string,
  opts: { size?: number; maxCaption?: number; start?: number; count?: number } = {},
): Promise<VlmData> {
  const pack = await loadEmojiPack(dir);
  const size = opts.size ?? 16;
  if (32 % size !== 0) throw new RangeError(`emojiVlmData: size ${size} must divide 32`);
  const start = opts.start ?? 0;
  const count = Math.min(opts.count ?? pack.n - start, pack.n - start);
  if (count < 1) throw new RangeError(`emojiVlmData: no rows from ${start} in "${dir}" (${pack.n} images)`);
  const rgb = rgbaOnWhite(pack.rgba.subarray(start * 32 * 32 * 4, (start + count) * 32 * 32 * 4));
  const f = 32 / size;
  const images = new Float32Array(count * size * size * 3);
  for (let i = 0; i < count; i++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        for (let c = 0; c < 3; c++) {
          let s = 0;
          for (let dy = 0; dy < f; dy++) {
            for (let dx = 0; dx < f; dx++) s += rgb[((i * 32 + y * f + dy) * 32 + x * f + dx) * 3 + c];
          }
          images[((i * size + y) * size + x) * 3 + c] = s / (f * f);
        }
      }
    }
  }
  const groups = [...new Set(pack.rows.map((r) => r.group))];
  const rows = pack.rows.slice(start, start + count);
  return {
    images,
    captions: rows.map((r) => r.name.toLowerCase().slice(0, opts.maxCaption ?? 40)),
    labels: Int32Array.from(rows, (r) => groups.indexOf(r.group)),
    nClasses: groups.length,
    n: count,
    size,
    description: `Noto emoji pack "${dir}" rows ${start}..${start + count - 1} (${size} px, CLDR names)`,
  };
}

/** The character vocabulary of captions: their characters plus `"\n"` (begin/end of a caption). */
export function captionVocab(captions: readonly string[]): CharVocab {
  return charVocab(captions.join("\n") + "\n");
}

/** One captioning batch as host arrays. */
export interface CaptionBatch {
  /** `[B, size, size, 3]` floats. */
  images: Float32Array;
  /** Text inputs `[B, textLen]`: `"\n"`, the caption, then `"\n"` padding. */
  tokens: Int32Array;
  /** Next-token targets `[B, textLen]`: the caption, `"\n"` (end), then -100. */
  targets: Int32Array;
}

/**
 * The captioning batch of the images `indices` of `data`: input `"\n" + caption` (cut to `textLen`), targets
 * shifted by one and ending in `"\n"`; padding positions have target -100.
 */
export function captionBatch(
  data: VlmData,
  vocab: CharVocab,
  indices: ArrayLike<number>,
  textLen: number,
): CaptionBatch {
  const b = indices.length;
  const px = data.size * data.size * 3;
  const images = new Float32Array(b * px);
  const tokens = new Int32Array(b * textLen);
  const targets = new Int32Array(b * textLen).fill(-100);
  const nl = vocab.encode("\n")[0];
  for (let i = 0; i < b; i++) {
    const k = indices[i];
    images.set(data.images.subarray(k * px, (k + 1) * px), i * px);
    const ids = vocab.encode(data.captions[k]).subarray(0, textLen - 1);
    tokens.fill(nl, i * textLen, (i + 1) * textLen);
    tokens.set(ids, i * textLen + 1);
    targets.set(ids, i * textLen);
    targets[i * textLen + ids.length] = nl;
  }
  return { images, tokens, targets };
}

/** Seeded random indices `[batchSize]` into `n` items for step `step` (a pure function of seed and step). */
export function batchIndices(n: number, batchSize: number, seed: number, step: number): Int32Array {
  const rng = new Rng(deriveSeed(seed, "batch", step));
  return Int32Array.from({ length: batchSize }, () => Math.floor(rng.next() * n));
}

/** The tensors of a {@link CaptionBatch} (`images`, `tokens`, `targets`). */
export function captionTensors(
  batch: CaptionBatch,
  shape: { batchSize: number; size: number; textLen: number },
  device?: DeviceName,
): { images: F32; tokens: I32; targets: I32 } {
  const { batchSize: b, size, textLen } = shape;
  return {
    images: tensor(batch.images, { shape: [b, size, size, 3], device }) as F32,
    tokens: tensor(batch.tokens, { shape: [b, textLen], dtype: "i32", device }) as I32,
    targets: tensor(batch.targets, { shape: [b, textLen], dtype: "i32", device }) as I32,
  };
}

// ----- training stages -----

/** Common settings of a training stage. */
export interface StageOptions {
  /** Optimiser steps. */
  steps: number;
  /** Images (or windows) per batch. */
  batchSize: number;
  /** Peak learning rate (AdamW, cosine with `warmupRatio` warm-up). */
  lr: number;
  /** Seed of the batches. */
  seed: number;
  /** Warm-up fraction (default 0.05). */
  warmupRatio?: number;
  /** Text positions per caption (default 40). */
  textLen?: number;
  /** Device of the batches (default: the model's). */
  device?: DeviceName;
  /** Progress-bar label (default none). */
  progress?: string | false;
}

function stageTrainer<B extends Record<string, Tensor>>(
  model: ToyVlm,
  trainable: ParamFilter,
  opts: StageOptions,
  batch: (step: number) => B,
  loss: TrainerOptions<ToyVlm, B>["loss"],
): Trainer<ToyVlm, B> {
  return new Trainer<ToyVlm, B>({
    model,
    optimizer: new AdamW(model, { lr: opts.lr, weightDecay: 0, trainable }),
    batch,
    loss,
    steps: opts.steps,
    schedule: cosineSchedule({ totalSteps: opts.steps, warmupRatio: opts.warmupRatio ?? 0.05 }),
    clipNorm: 1,
    readEvery: 25,
    progress: opts.progress ?? false,
    seed: opts.seed,
  });
}

/** Stage 0: the LM alone on the captions as a text stream (`"\n"`-separated). Returns the per-step losses. */
export async function pretrainLmOnCaptions(
  model: ToyVlm,
  data: VlmData,
  vocab: CharVocab,
  opts: StageOptions,
): Promise<number[]> {
  const stream = vocab.encode(data.captions.join("\n") + "\n");
  const seqLen = Math.min(opts.textLen ?? 40, model.lm.config.seqLen);
  const device = opts.device ?? model.lm.device;
  const trainer = stageTrainer(model, /^lm\./, opts, (step) => {
    const { x, y } = sampleWindows(stream, { batchSize: opts.batchSize, seqLen, seed: opts.seed, step });
    const shape = [opts.batchSize, seqLen];
    return {
      x: tensor(x, { shape, dtype: "i32", device }) as I32,
      y: tensor(y, { shape, dtype: "i32", device }) as I32,
    };
  }, (m, b) => m.lm.loss(b.x as I32, b.y as I32));
  return (await trainer.run()).map((r) => r.loss);
}

/** Stage a: the encoder (and its head) on the class labels. Returns the per-step losses. */
export async function pretrainEncoder(model: ToyVlm, data: VlmData, opts: StageOptions): Promise<number[]> {
  const device = opts.device ?? model.lm.device;
  const px = data.size * data.size * 3;
  const trainer = stageTrainer(model, /^encoder\./, opts, (step) => {
    const idx = batchIndices(data.n, opts.batchSize, opts.seed, step);
    const images = new Float32Array(idx.length * px);
    idx.forEach((k, i) => images.set(data.images.subarray(k * px, (k + 1) * px), i * px));
    return {
      images: tensor(images, { shape: [idx.length, data.size, data.size, 3], device }) as F32,
      labels: tensor(Int32Array.from(idx, (k) => data.labels[k]), { dtype: "i32", device }) as I32,
    };
  }, (m, b) => crossEntropy(m.encoder.classify(b.images as F32) as F32, b.labels as I32));
  return (await trainer.run()).map((r) => r.loss);
}

/**
 * A trainer of the captioning loss on random batches of `data` (`trainable` selects what moves: the projector for
 * stage b, `LORA_TRAINABLE` after `attachLora` for stage c).
 */
export function captionTrainer(
  model: ToyVlm,
  data: VlmData,
  vocab: CharVocab,
  opts: StageOptions & {
    trainable: ParamFilter;
    metrics?: TrainerOptions<ToyVlm, Record<string, Tensor>>["metrics"];
  },
): Trainer<ToyVlm, Record<string, Tensor>> {
  const device = opts.device ?? model.lm.device;
  const textLen = opts.textLen ?? 40;
  const shape = { batchSize: opts.batchSize, size: data.size, textLen };
  return new Trainer<ToyVlm, Record<string, Tensor>>({
    model,
    optimizer: new AdamW(model, { lr: opts.lr, weightDecay: 0, trainable: opts.trainable }),
    batch: (step) =>
      captionTensors(
        captionBatch(data, vocab, batchIndices(data.n, opts.batchSize, opts.seed, step), textLen),
        shape,
        device,
      ),
    loss: (m, b) => m.loss(b.images as F32, b.tokens as I32, b.targets as I32),
    steps: opts.steps,
    schedule: cosineSchedule({ totalSteps: opts.steps, warmupRatio: opts.warmupRatio ?? 0.05 }),
    clipNorm: 1,
    readEvery: 25,
    metrics: opts.metrics,
    progress: opts.progress ?? false,
    seed: opts.seed,
  });
}

/** Stage b: the projector on captioning, encoder and LM frozen. Returns the per-step losses. */
export async function trainProjector(
  model: ToyVlm,
  data: VlmData,
  vocab: CharVocab,
  opts: StageOptions,
): Promise<number[]> {
  return (await captionTrainer(model, data, vocab, { ...opts, trainable: /^projector\./ }).run()).map((r) =>
    r.loss
  );
}

/** Mean captioning loss over `batches` fixed batches (seeded by `seed`), one readback. */
export async function captionLoss(
  model: ToyVlm,
  data: VlmData,
  vocab: CharVocab,
  opts: { batches: number; batchSize: number; seed: number; textLen?: number; device?: DeviceName },
): Promise<number> {
  const textLen = opts.textLen ?? 40;
  let total: M | null = null;
  for (let i = 1; i <= opts.batches; i++) {
    const b = captionTensors(
      captionBatch(data, vocab, batchIndices(data.n, opts.batchSize, opts.seed, i), textLen),
      { batchSize: opts.batchSize, size: data.size, textLen },
      opts.device ?? model.lm.device,
    );
    const l = model.loss(b.images, b.tokens, b.targets) as M;
    total = total === null ? l : total.add(l) as M;
  }
  return (await total!.item()) / opts.batches;
}

// ----- base-model cache for stages 0, a, b -----

/** Everything that determines a pretrained toy VLM. */
export interface VlmPretrainSpec {
  /** Architecture. */
  model: VlmConfig;
  /** Seed of the weights and batches. */
  seed: number;
  /** Stage 0 steps (LM on caption text). */
  lmSteps: number;
  /** Stage a steps (encoder classification). */
  encoderSteps: number;
  /** Stage b steps (projector on captions). */
  projectorSteps: number;
  /** Batch size of every stage. */
  batchSize: number;
  /** Peak learning rate of every stage. */
  lr: number;
  /** Text positions per caption. */
  textLen: number;
}

/** What {@link cachedVlm} returns. */
export interface CachedVlm {
  /** The pretrained model. */
  model: ToyVlm;
  /** The caption vocabulary (characters of the pretraining captions). */
  vocab: CharVocab;
  /** True when loaded from the cache. */
  cached: boolean;
  /** The cache directory. */
  dir: string;
  /** Seconds spent (loading or pretraining). */
  seconds: number;
  /** Per-stage losses (first and last step) recorded at pretraining time. */
  stages: Record<string, { first: number; last: number }>;
}

/** The per-stage losses recorded in a cache entry's info.json, checked to be what cachedVlm wrote. */
function readStages(value: unknown, file: string): CachedVlm["stages"] {
  const ok = typeof value === "object" && value !== null && !Array.isArray(value) &&
    Object.values(value).every((s) =>
      typeof s === "object" && s !== null && typeof s.first === "number" && typeof s.last === "number"
    );
  if (!ok) throw new Error(`"${file}" has no per-stage {first, last} losses under "stages"`);
  return value as CachedVlm["stages"];
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The toy VLM after stages 0, a and b on `data`: loaded from `<cacheDir>/<key>/` when present (key = hash of the
 * spec and the data), else trained and saved there (`vlm.safetensors` + `info.json`, written to a temporary
 * directory renamed into place).
 */
export async function cachedVlm(
  spec: VlmPretrainSpec,
  data: VlmData,
  opts: { cacheDir?: string; device?: DeviceName; progress?: boolean } = {},
): Promise<CachedVlm> {
  const vocab = captionVocab(data.captions);
  if (vocab.size !== spec.model.lm.vocabSize) {
    throw new RangeError(
      `cachedVlm: the captions have ${vocab.size} distinct characters (with "\\n") but the LM's vocabSize is ` +
        `${spec.model.lm.vocabSize}`,
    );
  }
  const pixels = Int32Array.from(data.images, (v) => Math.round(v * 255));
  const fingerprint = new Int32Array(pixels.length + data.labels.length);
  fingerprint.set(pixels);
  fingerprint.set(data.labels, pixels.length);
  const key = cacheKey(JSON.stringify(spec) + data.captions.join("\n"), fingerprint);
  const dir = `${opts.cacheDir ?? ".cache/vlm"}/${key}`;
  const t0 = performance.now();
  const model = ToyVlm.random(spec.model, { seed: spec.seed, device: opts.device });
  const root = opts.cacheDir ?? ".cache/vlm";
  removeTemporaries(root, { alive: processAlive });
  if (await exists(`${dir}/vlm.safetensors`)) {
    const stages = await loadCacheEntry(dir, "cached VLM", async () => {
      const { tensors } = await readSafetensors(`${dir}/vlm.safetensors`);
      const params: Record<string, Tensor> = {};
      for (const [name, e] of tensors) {
        params[name] = tensor(e.data as Float32Array, { shape: e.shape, device: opts.device });
      }
      loadParameters(model, params);
      await checkFinite(namedParameters(model), { what: "its weights" });
      const info = JSON.parse(await Deno.readTextFile(`${dir}/info.json`));
      return readStages(info?.stages, `${dir}/info.json`);
    });
    return { model, vocab, cached: true, dir, seconds: (performance.now() - t0) / 1000, stages };
  }
  const common = {
    batchSize: spec.batchSize,
    lr: spec.lr,
    seed: spec.seed,
    textLen: spec.textLen,
    device: opts.device,
  };
  const bar = (s: string) => (opts.progress ? s : false);
  const lm = await pretrainLmOnCaptions(model, data, vocab, {
    ...common,
    steps: spec.lmSteps,
    progress: bar("stage 0: LM on captions"),
  });
  const enc = await pretrainEncoder(model, data, {
    ...common,
    steps: spec.encoderSteps,
    progress: bar("stage a: encoder"),
  });
  const proj = await trainProjector(model, data, vocab, {
    ...common,
    steps: spec.projectorSteps,
    progress: bar("stage b: projector"),
  });
  const ends = (l: number[]) => ({ first: l[0], last: l.at(-1)! });
  const stages = { lm: ends(lm), encoder: ends(enc), projector: ends(proj) };
  const entries: Record<string, StEntry> = {};
  for (const [name, t] of namedParameters(model)) {
    entries[name] = {
      dtype: "F32",
      shape: [...t.shape],
      data: Float32Array.from(await t.data() as Float32Array),
    };
  }
  const tmp = `${dir}.tmp-${Deno.pid}-${Math.floor(Math.random() * 1e9)}`;
  await writeSafetensors(`${tmp}/vlm.safetensors`, entries);
  await Deno.writeTextFile(`${tmp}/info.json`, JSON.stringify({ spec, stages }, null, 1));
  try {
    await Deno.rename(tmp, dir);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true });
    if (!(await exists(`${dir}/vlm.safetensors`))) throw e; // a concurrent run may have won the race
  }
  return { model, vocab, cached: false, dir, seconds: (performance.now() - t0) / 1000, stages };
}

// ----- per-modality activation statistics -----

/** Statistics of one adapted layer's inputs, split by modality. */
export interface ModalityStats {
  /** Mean over input features of the variance over visual tokens. */
  visualVar: number;
  /** Mean over input features of the variance over (non-padding) text tokens. */
  textVar: number;
  /** Mean squared entry of the visual-token inputs. */
  visualMeanSq: number;
  /** Mean squared entry of the text-token inputs. */
  textMeanSq: number;
  /** ‖mean_text − mean_visual‖ of the inputs. */
  inputGapNorm: number;
}

/** What {@link modalityAnalysis} returns. */
export interface ModalityAnalysis {
  /** Per adapted layer (module path), the input statistics. */
  stats: Record<string, ModalityStats>;
  /**
   * Per layer, Gap-Init's calibration data: `zText`/`zVision` `[N, d_out]`, the per-image means of the layer's
   * base output `W·x` over its text and its visual tokens (paired by image).
   */
  gapData: Record<string, LayerData>;
  /** Per layer, all inputs `[NB, B·(P+T), d_in]` (for EVA). */
  activations: Record<string, LayerData>;
}

/**
 * Runs `batches` captioning batches through `model`, records the inputs of the `targets` layers, and splits
 * each image's tokens into its P visual positions and its text positions (padding excluded: a text position
 * counts while its target is not -100). Returns the input statistics per modality, Gap-Init's paired per-image
 * output means, and the raw activations.
 */
export async function modalityAnalysis(
  model: ToyVlm,
  targets: readonly string[] | RegExp,
  batches: readonly CaptionBatch[],
  shape: { size: number; textLen: number; device?: DeviceName },
): Promise<ModalityAnalysis> {
  const p = model.visualTokens;
  const t = shape.textLen;
  const acts = await collectActivations(model, targets, (m, i) => {
    const b = batches[i];
    const bs = b.tokens.length / t;
    const x = captionTensors(
      b,
      { batchSize: bs, size: shape.size, textLen: t },
      shape.device ?? model.lm.device,
    );
    m.forward(x.images, x.tokens);
  }, { batches: batches.length });
  const stats: Record<string, ModalityStats> = {};
  const gapData: Record<string, LayerData> = {};
  const weights = new Map(namedParameters(model));
  for (const [path, d] of Object.entries(acts)) {
    const a = d.activations!;
    const dIn = a.shape[a.ndim - 1];
    const host = (await a.data()) as Float32Array;
    const w = weights.get(`${path}.weight`)!;
    const wHost = (await w.data()) as Float32Array;
    const dOut = w.shape[0];
    const sum = { v: new Float64Array(dIn), t: new Float64Array(dIn) };
    const sq = { v: new Float64Array(dIn), t: new Float64Array(dIn) };
    const count = { v: 0, t: 0 };
    const zText: number[] = [];
    const zVision: number[] = [];
    let row = 0;
    for (const b of batches) {
      const bs = b.tokens.length / t;
      for (let s = 0; s < bs; s++) {
        const mv = new Float64Array(dIn);
        const mt = new Float64Array(dIn);
        let nv = 0;
        let nt = 0;
        for (let j = 0; j < p + t; j++, row++) {
          const visual = j < p;
          if (!visual && b.targets[s * t + (j - p)] === -100) continue;
          const key = visual ? "v" : "t";
          const m = visual ? mv : mt;
          for (let f = 0; f < dIn; f++) {
            const v = host[row * dIn + f];
            sum[key][f] += v;
            sq[key][f] += v * v;
            m[f] += v;
          }
          count[key]++;
          if (visual) nv++;
          else nt++;
        }
        // Per-image modality means in the output space: W·mean(x) (the layer is linear and bias-free here).
        for (const [m, n, out] of [[mv, nv, zVision], [mt, nt, zText]] as const) {
          for (let o = 0; o < dOut; o++) {
            let acc = 0;
            for (let f = 0; f < dIn; f++) acc += wHost[o * dIn + f] * m[f];
            out.push(acc / Math.max(n, 1));
          }
        }
      }
    }
    const variance = (k: "v" | "t") => {
      let v = 0;
      for (let f = 0; f < dIn; f++) {
        const mean = sum[k][f] / count[k];
        v += sq[k][f] / count[k] - mean * mean;
      }
      return v / dIn;
    };
    const meanSq = (k: "v" | "t") => sq[k].reduce((x, y) => x + y, 0) / (count[k] * dIn);
    let gap = 0;
    for (let f = 0; f < dIn; f++) gap += (sum.t[f] / count.t - sum.v[f] / count.v) ** 2;
    stats[path] = {
      visualVar: variance("v"),
      textVar: variance("t"),
      visualMeanSq: meanSq("v"),
      textMeanSq: meanSq("t"),
      inputGapNorm: Math.sqrt(gap),
    };
    const n = zText.length / dOut;
    const device = a.device;
    gapData[path] = {
      zText: tensor(Float32Array.from(zText), { shape: [n, dOut], device }) as F32,
      zVision: tensor(Float32Array.from(zVision), { shape: [n, dOut], device }) as F32,
    };
  }
  return { stats, gapData, activations: acts };
}

// ----- experiment helpers -----

/**
 * Captioned images by name: `"shapes"` (generated, `n` images from `seed`), `"emoji"` (the shared Noto emoji pack
 * at `emojiDir`, default `../shared/data/vl/noto_emoji32`), or a directory holding an emoji-pack layout.
 */
export async function loadVlmData(
  source: string,
  opts: { n: number; seed: number; emojiDir?: string },
): Promise<VlmData> {
  if (source === "shapes") return shapesVlmData({ n: opts.n, seed: opts.seed });
  const dir = source === "emoji" ? (opts.emojiDir ?? "../shared/data/vl/noto_emoji32") : source;
  return await emojiVlmData(dir, { count: opts.n });
}

/**
 * The pretraining spec of the experiments' toy VLM: 16 px images in 4 × 4 patches (16 visual tokens), a 2-block
 * encoder of width 32 (`quick`) or 48, and a 2-layer LM of width 32 or 64 with `textLen` text positions.
 */
export function defaultVlmSpec(
  data: VlmData,
  opts: { quick: boolean; pretrainSteps: number; textLen: number; seed?: number },
): VlmPretrainSpec {
  const vocab = captionVocab(data.captions);
  const dim = opts.quick ? 32 : 64;
  return {
    model: {
      imageSize: data.size,
      channels: 3,
      patchSize: 4,
      visionDim: opts.quick ? 32 : 48,
      visionLayers: 2,
      visionHeads: 4,
      visionMlp: opts.quick ? 64 : 96,
      nClasses: data.nClasses,
      lm: {
        dim,
        hiddenDim: dim * 2,
        nLayers: 2,
        nHeads: 4,
        nKvHeads: 2,
        vocabSize: vocab.size,
        seqLen: (data.size / 4) ** 2 + opts.textLen,
        sharedClassifier: true,
      },
    },
    seed: opts.seed ?? 1234,
    lmSteps: opts.pretrainSteps,
    encoderSteps: opts.pretrainSteps,
    projectorSteps: opts.pretrainSteps,
    batchSize: 16,
    lr: 3e-3,
    textLen: opts.textLen,
  };
}

/** A new model with a copy of `model`'s parameters (its own buffers), e.g. a fresh base for each fine-tuning run. */
export async function copyVlm(model: ToyVlm, opts: { device?: DeviceName } = {}): Promise<ToyVlm> {
  const out = ToyVlm.random(model.config, { seed: 0, device: opts.device ?? model.lm.device });
  const params: Record<string, Tensor> = {};
  for (const [name, t] of namedParameters(model)) {
    params[name] = tensor(await t.data() as Float32Array, {
      shape: [...t.shape],
      device: opts.device ?? t.device,
    });
  }
  loadParameters(out, params);
  return out;
}
