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
 * Data are captioned images ({@link VlmData}: the emoji pack by {@link emojiVlmData}; the lab adds generated shapes),
 * turned into captioning batches by {@link captionBatch}. Training follows LLaVA's stages; the lab's `toy_vlm.ts`
 * runs the pretraining stages and keeps the result on disk.
 *
 * @module
 */
import type { DeviceName } from "../ir/node.ts";
import { concat, tensor } from "../tensor/creation.ts";
import type { I32, Tensor } from "../tensor/tensor.ts";
import { causalAttention, type RopeTables, ropeTables } from "../nn/attention.ts";
import { deriveSeed, normalParam } from "../nn/init.ts";
import { type F32, Linear, linear, type LinearLayer } from "../nn/linear.ts";
import { loadParameters, Module, namedParameters } from "../nn/module.ts";
import { LayerNorm } from "../nn/norm.ts";
import { crossEntropy } from "../nn/loss.ts";
import { Rng } from "../data/rng.ts";
import { checkOptions, checkSize, opt } from "../options.ts";
import { z } from "../../deps.ts";
import { type CharVocab, charVocab } from "../data/text.ts";
import { loadEmojiPack, rgbaOnWhite } from "../data/images.ts";
import { type LlamaConfig, LlamaLM } from "./llama.ts";

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

/** Refuses images that are not `[B, imageSize, imageSize, channels]` (naming the shape given and the one expected). */
function checkImages(c: VlmConfig, images: F32, where: string): void {
  const [, h, w, ch] = images.shape;
  if (images.ndim !== 4 || h !== c.imageSize || w !== c.imageSize || ch !== c.channels) {
    throw new RangeError(
      `${where}: images must be [B, ${c.imageSize}, ${c.imageSize}, ${c.channels}] (B, height, width, channels), ` +
        `got [${images.shape.join(", ")}]`,
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
    checkSize("VisionAttention", "dim", dim);
    checkSize("VisionAttention", "heads", heads);
    if (dim % heads !== 0) throw new RangeError(`VisionAttention: heads ${heads} does not divide dim ${dim}`);
    const lin = (key: string) =>
      new Linear(dim, dim, { seed: deriveSeed(opts.seed, key), device: opts.device });
    this.q_proj = lin("q_proj");
    this.k_proj = lin("k_proj");
    this.v_proj = lin("v_proj");
    this.out_proj = lin("out_proj");
    this.#heads = heads;
  }

  /** The settings a resumed run must share with the run that wrote its checkpoint (`ConfiguredModule`). */
  runSettings(): Record<string, number | boolean> {
    return { heads: this.#heads, causal: false };
  }

  /** Attention of every token over every token of `x` (`[B, T, dim]`). */
  forward(x: F32): Tensor<number[], "f32"> {
    const [b, t, d] = x.shape;
    const hd = d / this.#heads;
    const split = (y: F32) => y.reshape([b, t, this.#heads, hd]);
    const o = causalAttention(
      split(this.q_proj.forward(x)),
      split(this.k_proj.forward(x)),
      split(this.v_proj.forward(x)),
      { causal: false },
    );
    return this.out_proj.forward(o.reshape([b, t, d]));
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
    checkSize("VisionMlp", "dim", dim);
    checkSize("VisionMlp", "hidden", hidden);
    this.fc1 = new Linear(dim, hidden, { seed: deriveSeed(opts.seed, "fc1"), device: opts.device });
    this.fc2 = new Linear(hidden, dim, { seed: deriveSeed(opts.seed, "fc2"), device: opts.device });
  }

  /** `fc2(gelu(fc1 x))`. */
  forward(x: F32): Tensor<number[], "f32"> {
    return this.fc2.forward(this.fc1.forward(x).gelu());
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
    const h = x.add(this.attn.forward(this.norm1.forward(x)));
    return h.add(this.mlp.forward(this.norm2.forward(h)));
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
  #config: VlmConfig;

  /** An encoder for `config`. */
  constructor(config: VlmConfig, opts: { seed: number; device?: DeviceName }) {
    super();
    const { patchSize: p, channels: c, visionDim: d } = config;
    const device = opts.device;
    this.patch_embed = new Linear(p * p * c, d, { seed: deriveSeed(opts.seed, "patch_embed"), device });
    this.pos_embed = normalParam([visualTokens(config), d], 0.02, {
      seed: deriveSeed(opts.seed, "pos_embed"),
      device,
    });
    this.blocks = Array.from({ length: config.visionLayers }, (_, i) =>
      new VisionBlock(d, {
        heads: config.visionHeads,
        hidden: config.visionMlp,
        seed: deriveSeed(opts.seed, "blocks", i),
        device,
      }));
    this.norm = new LayerNorm(d, { device });
    this.head = new Linear(d, config.nClasses, { seed: deriveSeed(opts.seed, "head"), device });
    this.#config = structuredClone(config);
  }

  /** Patch tokens `[B, patches, visionDim]` of images `[B, imageSize, imageSize, channels]`. */
  forward(images: F32): Tensor<number[], "f32"> {
    checkImages(this.#config, images, "VisionEncoder");
    const [b, h, w, c] = images.shape;
    const p = this.#config.patchSize;
    // [B, H, W, C] → [B, H/p, p, W/p, p·C] → [B, H/p, W/p, p, p·C] → [B, patches, p·p·C]
    const patches = images.reshape([b, h / p, p, w / p, p * c]).permute([0, 1, 3, 2, 4])
      .reshape([b, (h / p) * (w / p), p * p * c]);
    let x = this.patch_embed.forward(patches).add(this.pos_embed);
    for (const block of this.blocks) x = block.forward(x);
    return this.norm.forward(x);
  }

  /** Class logits `[B, nClasses]` of the mean-pooled tokens. */
  classify(images: F32): Tensor<number[], "f32"> {
    return this.head.forward(this.forward(images).mean(1));
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
    checkSize("Projector", "inDim", inDim);
    checkSize("Projector", "outDim", outDim);
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
    return this.linear_2.forward(this.linear_1.forward(v).gelu());
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

const RANDOM_OPTIONS = z.object({
  seed: opt.seed(),
  lmStd: opt.positive().optional(),
  device: opt.device().optional(),
}).strict();

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
    checkOptions("ToyVlm.random", RANDOM_OPTIONS, options);
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

  /** The visual tokens `[B, P, lmDim]` of images `[B, imageSize, imageSize, channels]`. */
  embedImages(images: F32): Tensor<number[], "f32"> {
    return this.projector.forward(this.encoder.forward(images));
  }

  /** Final hidden states `[B, P + T, lmDim]` (before the LM's final norm). */
  hidden(images: F32, tokens: I32): Tensor<number[], "f32"> {
    checkImages(this.#config, images, "ToyVlm");
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
      rope = ropeTables(this.lm.headDim, total, {
        theta: lm.ropeTheta,
        scaling: lm.ropeScaling,
        device: tokens.device,
      });
      this.#rope.set(key, rope);
    }
    const text = this.lm.embed(tokens);
    let h = concat([this.embedImages(images), text], 1);
    for (const layer of this.lm.layers) h = layer.forward(h, { rope });
    return h;
  }

  /** Final norm and classifier of hidden states. */
  #logits(h: F32): Tensor<number[], "f32"> {
    const x = this.lm.norm.forward(h);
    return this.lm.output === undefined
      ? linear(x, this.lm.tok_embeddings.weight)
      : this.lm.output.forward(x);
  }

  /** Logits `[B, P + T, vocab]`: visual positions first, then the text positions (causal over both). */
  forward(images: F32, tokens: I32): Tensor<number[], "f32"> {
    return this.#logits(this.hidden(images, tokens));
  }

  /**
   * Mean cross-entropy of the text positions: `targets` `[B, T]` is the token following each text input
   * (`-100` = ignored, e.g. padding).
   */
  loss(images: F32, tokens: I32, targets: I32): Tensor<number[], "f32"> {
    const p = this.visualTokens;
    const h = this.hidden(images, tokens).slice(null, [p, p + tokens.shape[1]]);
    return crossEntropy(this.#logits(h), targets);
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
  /**
   * Characters (code points) of each caption before the loader cut it ({@link emojiVlmData}'s `maxCaption`); left
   * out where the captions are whole. {@link captionCuts} reads it to count every cut caption.
   */
  uncutLengths?: Int32Array;
}

/** Default text positions of a caption batch: `"\n"`, then up to 39 characters followed by the end marker `"\n"`. */
const CAPTION_TEXT_LEN = 40;

/**
 * The Noto emoji pack at `dir` (e.g. `../shared/data/vl/noto_emoji32`) as captioned images: composited on white,
 * average-pooled from 32 px to `size` (a divisor of 32, default 16), captions = lower-cased CLDR names cut to
 * `maxCaption` characters (default 39, so that a caption and its end marker fit the default `textLen` 40
 * of {@link captionLoss} and the lab's trainers), class = CLDR group (10). `start` (an integer row, default 0) and `count`
 * (a positive integer, default all; at most the rows left from `start`) pick a slice of the rows.
 */
export async function emojiVlmData(
  dir: string,
  opts: { size?: number; maxCaption?: number; start?: number; count?: number } = {},
): Promise<VlmData> {
  const pack = await loadEmojiPack(dir);
  const size = opts.size ?? 16;
  if (32 % size !== 0) throw new RangeError(`emojiVlmData: size ${size} must divide 32`);
  const start = opts.start ?? 0;
  if (!Number.isInteger(start) || start < 0 || start >= pack.n) {
    throw new RangeError(
      `emojiVlmData: start ${start} must be an integer row in 0..${pack.n - 1} of "${dir}"`,
    );
  }
  if (opts.count !== undefined && (!Number.isInteger(opts.count) || opts.count < 1)) {
    throw new RangeError(`emojiVlmData: count ${opts.count} must be a positive integer`);
  }
  const maxCaption = opts.maxCaption ?? CAPTION_TEXT_LEN - 1;
  if (!Number.isInteger(maxCaption) || maxCaption < 1) {
    throw new RangeError(`emojiVlmData: maxCaption ${maxCaption} must be a positive integer`);
  }
  const count = Math.min(opts.count ?? pack.n - start, pack.n - start);
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
  const names = rows.map((r) => Array.from(r.name.toLowerCase()));
  const cut = names.filter((c) => c.length > maxCaption).length;
  return {
    images,
    captions: names.map((c) => c.slice(0, maxCaption).join("")),
    labels: Int32Array.from(rows, (r) => groups.indexOf(r.group)),
    nClasses: groups.length,
    n: count,
    size,
    description:
      `Noto emoji pack "${dir}" rows ${start}..${start + count - 1} (${size} px, CLDR names; ${cut} of ` +
      `${count} names cut to their first ${maxCaption} characters)`,
    uncutLengths: Int32Array.from(names, (c) => c.length),
  };
}

/** How many captions of a data set a caption batch shows cut ({@link captionCuts}). */
export interface CaptionCuts {
  /** Captions cut, at load or by the batch's `textLen`. */
  cut: number;
  /** Captions in all. */
  n: number;
  /** The characters a cut caption keeps, each length once, ascending (empty when none is cut). */
  keptLengths: number[];
  /**
   * The count in words, e.g. `"527 of 3526 captions cut to their first 39 characters, the end marker trained after
   * the cut"` or `"no caption cut (each fits the 39 characters before the end marker)"`.
   */
  text: string;
}

/**
 * How many captions of `data` the batches of {@link captionBatch} with `textLen` text positions show cut: those the
 * loader cut ({@link VlmData.uncutLengths}) and those longer than `textLen − 1` characters. A cut caption is still
 * followed by the end marker as its last target, so the model is taught that the name ends at the cut.
 */
export function captionCuts(data: VlmData, textLen: number): CaptionCuts {
  if (!Number.isInteger(textLen) || textLen < 2) {
    throw new RangeError(
      `captionCuts: textLen must be an integer >= 2 (a character and the end), got ${textLen}`,
    );
  }
  const kept = new Set<number>();
  let cut = 0;
  data.captions.forEach((caption, i) => {
    const chars = Array.from(caption).length;
    const whole = data.uncutLengths?.[i] ?? chars;
    const shown = Math.min(chars, textLen - 1);
    if (whole > shown) {
      cut++;
      kept.add(shown);
    }
  });
  const keptLengths = [...kept].sort((a, b) => a - b);
  const to = keptLengths.length === 1
    ? `${keptLengths[0]}`
    : `${keptLengths[0]}..${keptLengths[keptLengths.length - 1]}`;
  const text = cut === 0
    ? `no caption cut (each fits the ${textLen - 1} characters before the end marker)`
    : `${cut} of ${data.n} captions cut to their first ${to} characters, the end marker trained after the cut`;
  return { cut, n: data.n, keptLengths, text };
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
 * The captioning batch of the images `indices` of `data`: input `"\n" + caption`, targets shifted by one and ending
 * in `"\n"`; padding positions have target -100. A caption longer than `textLen − 1` characters is cut to that.
 */
export function captionBatch(
  data: VlmData,
  vocab: CharVocab,
  indices: ArrayLike<number>,
  textLen: number,
): CaptionBatch {
  const b = indices.length;
  if (!Number.isInteger(textLen) || textLen < 2) {
    throw new RangeError(
      `captionBatch: textLen must be an integer >= 2 (a character and the end), got ${textLen}`,
    );
  }
  const n = data.captions.length;
  for (let i = 0; i < b; i++) {
    if (!Number.isInteger(indices[i]) || indices[i] < 0 || indices[i] >= n) {
      throw new RangeError(
        `captionBatch: index ${indices[i]} (position ${i}) is not one of the ${n} items (0..${n - 1})`,
      );
    }
  }
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

/**
 * Seeded random indices `[batchSize]` into `n` items for step `step` (a pure function of seed and step), drawn
 * uniformly with replacement. `n` and `batchSize` must be positive integers.
 */
export function batchIndices(n: number, batchSize: number, seed: number, step: number): Int32Array {
  for (const [name, v] of [["n", n], ["batchSize", batchSize]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new RangeError(`batchIndices: ${name} must be a positive integer, got ${v}`);
    }
  }
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
    images: tensor(batch.images, { shape: [b, size, size, 3], device }),
    tokens: tensor(batch.tokens, { shape: [b, textLen], dtype: "i32", device }),
    targets: tensor(batch.targets, { shape: [b, textLen], dtype: "i32", device }),
  };
}

/**
 * Mean captioning loss per labelled text token over `batches` fixed batches (seeded by `seed`), one readback: each
 * batch's mean is weighted by its labelled positions (captions differ in length, so batches do in tokens).
 */
export async function captionLoss(
  model: ToyVlm,
  data: VlmData,
  vocab: CharVocab,
  opts: { batches: number; batchSize: number; seed: number; textLen?: number; device?: DeviceName },
): Promise<number> {
  const textLen = opts.textLen ?? CAPTION_TEXT_LEN;
  if (!Number.isInteger(opts.batches) || opts.batches < 1) {
    throw new RangeError(`captionLoss: batches must be a positive integer, got ${opts.batches}`);
  }
  let total: F32 | null = null;
  let tokens = 0;
  for (let i = 1; i <= opts.batches; i++) {
    const host = captionBatch(data, vocab, batchIndices(data.n, opts.batchSize, opts.seed, i), textLen);
    const labelled = host.targets.reduce((n, t) => n + (t === -100 ? 0 : 1), 0);
    const b = captionTensors(
      host,
      { batchSize: opts.batchSize, size: data.size, textLen },
      opts.device ?? model.lm.device,
    );
    const l = model.loss(b.images, b.tokens, b.targets).mul(labelled) as F32;
    total = total === null ? l : total.add(l);
    tokens += labelled;
  }
  return (await total!.item()) / tokens;
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
