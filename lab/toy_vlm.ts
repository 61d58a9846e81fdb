/**
 * The toy VLM of the experiments (exp:vlm-dynamics, exp:gap-init): its data (generated captioned shapes, or the emoji
 * pack), LLaVA's pretraining stages — (0) the LM on the captions as plain text, (a) the encoder on a classification
 * task (shape × colour of `generateShapes`, or the emoji group), (b) the projector on captioning with encoder and LM
 * frozen — run once and cached under `.cache/vlm`, stage (c) (LoRA on the LM: {@link captionTrainer}), and the
 * per-modality statistics of adapted layers' inputs ({@link modalityAnalysis}, which also gives Gap-Init's data).
 *
 * @module
 */
import {
  AdamW,
  batchIndices,
  type CaptionBatch,
  captionBatch,
  captionCuts,
  captionLoss,
  captionTensors,
  captionVocab,
  type CharVocab,
  checkFinite,
  checkOptions,
  collectActivations,
  copyVlm,
  cosineSchedule,
  crossEntropy,
  type DeviceName,
  emojiVlmData,
  type F32,
  type I32,
  type LayerData,
  loadEmojiPack,
  loadParameters,
  namedParameters,
  type ParamFilter,
  readSafetensors,
  Rng,
  sampleWindows,
  type StEntry,
  type Tensor,
  tensor,
  ToyVlm,
  Trainer,
  type TrainerOptions,
  type VlmConfig,
  type VlmData,
  writeSafetensors,
} from "../mod.ts";
import { COLOUR_NAMES, generateShapes } from "./generated.ts";
import { cachedEntry, cacheKey } from "./cache.ts";
import { z } from "../deps.ts";
import { distinctList } from "./experiment.ts";
import type { ConfigField } from "./config.ts";
import { methodOptimizer, type MethodSpec } from "./methods.ts";

/**
 * Captioned shapes from `generateShapes`; the class is `shape·8 + colour` (32 classes).
 *
 * @example
 * ```ts
 * import { shapesVlmData } from "./toy_vlm.ts";
 * const data = shapesVlmData({ n: 10, seed: 0 });
 * data.captions[0]; // e.g. "two red circles at the top left"
 * ```
 */
export function shapesVlmData(opts: { n: number; seed: number; size?: number }): VlmData {
  checkOptions("shapesVlmData", SHAPES_DATA_OPTIONS, opts);
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

const STAGE_FIELDS = {
  steps: z.int().min(1),
  batchSize: z.int().min(1),
  lr: z.number().gt(0),
  seed: z.int(),
  warmupRatio: z.number().min(0).max(1).optional(),
  textLen: z.int().min(1).optional(),
  device: z.enum(["webgpu", "wasm", "cpu"]).optional(),
  progress: z.union([z.string(), z.literal(false)]).optional(),
};
const STAGE_OPTIONS = z.object(STAGE_FIELDS).strict();
const CAPTION_TRAINER_OPTIONS = z.object({
  ...STAGE_FIELDS,
  trainable: z.union([z.instanceof(RegExp), z.array(z.string()), z.custom((v) => typeof v === "function")]),
  metrics: z.unknown().optional(),
}).strict();
const SHAPES_DATA_OPTIONS = z.object({ n: z.int().min(0), seed: z.int(), size: z.int().min(12).optional() })
  .strict();

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
  checkOptions("pretrainLmOnCaptions", STAGE_OPTIONS, opts);
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
  checkOptions("pretrainEncoder", STAGE_OPTIONS, opts);
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
  checkOptions("captionTrainer", CAPTION_TRAINER_OPTIONS, opts);
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
  checkOptions("trainProjector", STAGE_OPTIONS, opts);
  return (await captionTrainer(model, data, vocab, { ...opts, trainable: /^projector\./ }).run()).map((r) =>
    r.loss
  );
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

/**
 * The toy VLM after stages 0, a and b on `data`: loaded from `<cacheDir>/<key>/` when present (key = hash of the
 * spec and the data), else trained and saved there (`vlm.safetensors` + `info.json`, written to a temporary
 * directory renamed into place). The stages write no checkpoint: a process killed while running them leaves
 * nothing, and the next call runs them again from the start (another process asking meanwhile waits for the entry).
 */
export async function cachedVlm(
  spec: VlmPretrainSpec,
  data: VlmData,
  opts: {
    cacheDir?: string;
    device?: DeviceName;
    progress?: boolean;
    /** Captions of later stages whose characters the vocabulary must also hold (their embeddings stay untrained). */
    vocabCaptions?: readonly string[];
  } = {},
): Promise<CachedVlm> {
  const extra = opts.vocabCaptions ?? [];
  const vocab = captionVocab([...data.captions, ...extra]);
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
  // The vocabulary's characters enter the key only when later captions add to it (earlier keys stay valid).
  const chars = extra.length > 0
    ? "\u0000" + vocab.decode(Int32Array.from({ length: vocab.size }, (_, i) => i))
    : "";
  const key = cacheKey(JSON.stringify(spec) + data.captions.join("\n") + chars, fingerprint);
  const model = ToyVlm.random(spec.model, { seed: spec.seed, device: opts.device });
  const entry = await cachedEntry({
    root: opts.cacheDir ?? ".cache/vlm",
    key,
    marker: "vlm.safetensors",
    what: "cached VLM",
    load: async (dir) => {
      const { tensors } = await readSafetensors(`${dir}/vlm.safetensors`);
      const params: Record<string, Tensor> = {};
      for (const [name, e] of tensors) {
        params[name] = tensor(e.data as Float32Array, { shape: e.shape, device: opts.device });
      }
      loadParameters(model, params);
      await checkFinite(namedParameters(model), { what: "its weights" });
      const info = JSON.parse(await Deno.readTextFile(`${dir}/info.json`));
      return readStages(info?.stages, `${dir}/info.json`);
    },
    build: async () => {
      const common = { batchSize: spec.batchSize, lr: spec.lr, seed: spec.seed, textLen: spec.textLen };
      const stage = (steps: number, label: string): StageOptions => ({
        ...common,
        device: opts.device,
        steps,
        progress: opts.progress === true ? label : false,
      });
      const lm = await pretrainLmOnCaptions(
        model,
        data,
        vocab,
        stage(spec.lmSteps, "stage 0: LM on captions"),
      );
      const enc = await pretrainEncoder(model, data, stage(spec.encoderSteps, "stage a: encoder"));
      const proj = await trainProjector(model, data, vocab, stage(spec.projectorSteps, "stage b: projector"));
      const ends = (l: number[]) => ({ first: l[0], last: l.at(-1)! });
      return { lm: ends(lm), encoder: ends(enc), projector: ends(proj) };
    },
    save: async (stages, dir) => {
      const entries: Record<string, StEntry> = {};
      for (const [name, t] of namedParameters(model)) {
        entries[name] = {
          dtype: "F32",
          shape: [...t.shape],
          data: Float32Array.from(await t.data() as Float32Array),
        };
      }
      await writeSafetensors(`${dir}/vlm.safetensors`, entries);
      await Deno.writeTextFile(`${dir}/info.json`, JSON.stringify({ spec, stages }, null, 1));
    },
  });
  return { model, vocab, cached: entry.cached, dir: entry.dir, seconds: entry.seconds, stages: entry.value };
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
  /**
   * Per layer, the inputs at the positions that carry a label (text positions whose target is not -100: neither
   * visual tokens nor padding), `[NB, m, d_in]` with m the fewest such positions of any batch (each batch keeps its
   * first m), as PEFT's EVA sees LLaVA-style data.
   */
  labelled: Record<string, LayerData>;
  /** The labelled positions per batch before the cut to the fewest. */
  labelledCounts: number[];
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
  const labelled: Record<string, LayerData> = {};
  const weights = new Map(namedParameters(model));
  // Rows (counted over all batches) of the labelled text positions, per batch.
  const keep: number[][] = [];
  let first = 0;
  for (const b of batches) {
    const rows: number[] = [];
    const bs = b.tokens.length / t;
    for (let s = 0; s < bs; s++) {
      for (let j = 0; j < t; j++) if (b.targets[s * t + j] !== -100) rows.push(first + s * (p + t) + p + j);
    }
    keep.push(rows);
    first += bs * (p + t);
  }
  const m = Math.min(...keep.map((k) => k.length));
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
    const kept = new Float32Array(batches.length * m * dIn);
    keep.forEach((rows, bi) =>
      rows.slice(0, m).forEach((r, i) => kept.set(host.subarray(r * dIn, (r + 1) * dIn), (bi * m + i) * dIn))
    );
    labelled[path] = { activations: tensor(kept, { shape: [batches.length, m, dIn], device }) as F32 };
    gapData[path] = {
      zText: tensor(Float32Array.from(zText), { shape: [n, dOut], device }) as F32,
      zVision: tensor(Float32Array.from(zVision), { shape: [n, dOut], device }) as F32,
    };
  }
  return { stats, gapData, activations: acts, labelled, labelledCounts: keep.map((k) => k.length) };
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

// ----- distribution shift -----

/**
 * The images `indices` of `data` (in that order) as a data set of their own, with the same classes.
 *
 * @example
 * ```ts
 * import { shapesVlmData, subsetVlmData } from "./toy_vlm.ts";
 * const all = shapesVlmData({ n: 10, seed: 0 });
 * subsetVlmData(all, [3, 1], "two images").captions; // [all.captions[3], all.captions[1]]
 * ```
 */
export function subsetVlmData(data: VlmData, indices: readonly number[], description: string): VlmData {
  const px = data.size * data.size * 3;
  const images = new Float32Array(indices.length * px);
  indices.forEach((k, i) => {
    if (!Number.isInteger(k) || k < 0 || k >= data.n) {
      throw new RangeError(`subsetVlmData: index ${k} is outside 0..${data.n - 1} (${data.description})`);
    }
    images.set(data.images.subarray(k * px, (k + 1) * px), i * px);
  });
  return {
    images,
    captions: indices.map((k) => data.captions[k]),
    labels: Int32Array.from(indices, (k) => data.labels[k]),
    nClasses: data.nClasses,
    n: indices.length,
    size: data.size,
    description,
    uncutLengths: data.uncutLengths === undefined
      ? undefined
      : Int32Array.from(indices, (k) => data.uncutLengths![k]),
  };
}

/** Pretraining, fine-tuning and validation images of a fine-tuning task shifted away from pretraining. */
export interface ShiftedVlmData {
  /** Pretraining images (stages 0, a, b). */
  pre: VlmData;
  /** Fine-tuning images (the shifted domain). */
  ft: VlmData;
  /** Validation images (the shifted domain, disjoint from `ft`). */
  val: VlmData;
  /** The shift in one sentence. */
  shift: string;
}

/**
 * The configuration keys of the toy VLM's data and base that the VLM experiments share: the data source, the shift
 * between pretraining and fine-tuning, the held-out groups, the pretraining set's size and the steps of each
 * pretraining stage (spread into an experiment's schema).
 */
export const VLM_DATA_FIELDS: {
  /** `data`. */
  data: ConfigField<string>;
  /** `shift`. */
  shift: ConfigField<"held-out" | "none">;
  /** `heldOut`. */
  heldOut: ConfigField<string[]>;
  /** `images`. */
  images: ConfigField<number>;
  /** `pretrainSteps`. */
  pretrainSteps: ConfigField<number>;
} = {
  data: z.string().default("auto").describe(
    '"auto" (emoji pack when present, else shapes), "shapes", "emoji" or an emoji-pack directory',
  ),
  shift: z.enum(["held-out", "none"]).default("held-out").describe(
    "fine-tune on held-out classes (held-out) or on the pretraining distribution (none)",
  ),
  heldOut: distinctList(z.string(), {
    default: [],
    allowEmpty: true,
    description: "held-out emoji groups or shape colours (empty: the source's default)",
  }),
  images: z.number().int().positive().default(1000).describe(
    "images of the pretraining set (and of the generated fine-tuning set)",
  ),
  pretrainSteps: z.number().int().positive().default(300).describe(
    "steps of each pretraining stage (0, a, b)",
  ),
};

/** The held-out classes of each source when none are given. */
export const DEFAULT_HELD_OUT: Readonly<Record<"shapes" | "emoji", readonly string[]>> = {
  shapes: ["cyan", "magenta", "white", "orange"],
  emoji: ["Animals & Nature", "Food & Drink"],
};

/**
 * The companions the VLM data keys need, checked before anything is written: `--held-out` names the classes that
 * `--shift held-out` keeps out of pretraining, and `--shift none` fine-tunes on the pretraining distribution, where
 * held-out classes would be ignored; a `--data` other than `auto` and `shapes` names an emoji pack that must be
 * there.
 *
 * @param cfg The `shift`, `heldOut` and `data` keys.
 */
export function vlmCheck(
  cfg: { shift: "held-out" | "none"; heldOut: readonly string[]; data?: string },
): void {
  // The pack itself is read only after the results directory exists.
  if (cfg.data !== undefined && cfg.data !== "auto" && cfg.data !== "shapes") {
    const dir = cfg.data === "emoji" ? EMOJI_DIR : cfg.data;
    if (!hasEmojiPack(dir)) {
      throw new RangeError(
        `--data "${cfg.data}": no emoji pack at "${dir}" (it holds index.tsv and noto_emoji32_rgba.u8.gz); ` +
          `--data shapes uses the generated images`,
      );
    }
  }
  if (cfg.shift === "none" && cfg.heldOut.length > 0) {
    throw new RangeError(
      `--held-out ${
        JSON.stringify(cfg.heldOut)
      } is used only with --shift held-out, and --shift is none (fine-tuning ` +
        "on the pretraining distribution holds nothing out): leave out --held-out or use --shift held-out",
    );
  }
}

/** The shared emoji pack's directory as seen from the repository root. */
export const EMOJI_DIR = "../shared/data/vl/noto_emoji32";

/**
 * The image source `data` names: `"auto"` is the emoji pack when it is at {@link EMOJI_DIR}, else the generated
 * shapes; any other value is itself.
 *
 * @param data `"auto"`, `"shapes"`, `"emoji"` or an emoji-pack directory.
 * @returns The source the data is read from.
 */
export function resolveVlmSource(data: string): string {
  return data === "auto" ? (hasEmojiPack() ? "emoji" : "shapes") : data;
}

/** Whether an emoji pack is at `dir` (its pixel file and index). */
export function hasEmojiPack(dir: string = EMOJI_DIR): boolean {
  try {
    return Deno.statSync(`${dir}/index.tsv`).isFile && Deno.statSync(`${dir}/noto_emoji32_rgba.u8.gz`).isFile;
  } catch {
    return false;
  }
}

function seededOrder(n: number, seed: number): number[] {
  return new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
}

/** An image and its caption as one string: equal strings are the same example. */
function exampleKey(data: VlmData, i: number): string {
  const px = data.size * data.size * 3;
  const bytes = Uint8Array.from(data.images.subarray(i * px, (i + 1) * px), (v) => Math.round(v * 255));
  let pixels = "";
  for (const b of bytes) pixels += String.fromCharCode(b);
  return `${data.captions[i]}\u0000${pixels}`;
}

/**
 * `n` generated shapes of seed `seed` whose class passes `wanted`, in the generator's order, leaving out every image
 * that `unlike` holds (same pixels and caption): the generator has few distinct images (3024 with four colours), so
 * two seeds' draws share many, and a validation set must not hold a fine-tuning example. The draw grows until `n`
 * are found; a shortfall (every wanted image is in `unlike`) is an error.
 */
function drawShapes(
  seed: number,
  n: number,
  wanted: (label: number) => boolean,
  what: string,
  unlike?: VlmData,
): VlmData {
  const taken = new Set(Array.from({ length: unlike?.n ?? 0 }, (_, i) => exampleKey(unlike!, i)));
  // Three times the expected draw (the 32 classes are equally likely), doubled while examples in `unlike` are
  // passed over.
  const share = Array.from({ length: 32 }, (_, c) => c).filter(wanted).length / 32;
  let draw = Math.ceil((3 * n) / share) + 64;
  for (let attempt = 0; attempt < 4; attempt++, draw *= 2) {
    const all = shapesVlmData({ n: draw, seed });
    const keep = [...all.labels.keys()]
      .filter((i) => wanted(all.labels[i]) && !taken.has(exampleKey(all, i)))
      .slice(0, n);
    if (keep.length === n) {
      const apart = unlike === undefined ? "" : `, none of them a fine-tuning image`;
      return subsetVlmData(all, keep, `generateShapes seed ${seed}, ${n} images ${what}${apart}`);
    }
  }
  throw new RangeError(
    `generated shift: fewer than ${n} images ${what} of seed ${seed} differ from the ${unlike?.n ?? 0} ` +
      `fine-tuning images (among ${draw / 2} drawn): use fewer images or hold out more colours`,
  );
}

function generatedShift(images: number, heldOut: readonly string[]): ShiftedVlmData {
  const unknown = heldOut.filter((c) => !(COLOUR_NAMES as readonly string[]).includes(c));
  if (unknown.length > 0 || heldOut.length === 0 || heldOut.length === COLOUR_NAMES.length) {
    throw new RangeError(
      `held-out colours ${JSON.stringify(heldOut)}: give 1..${COLOUR_NAMES.length - 1} of ${
        COLOUR_NAMES.join(", ")
      }${unknown.length > 0 ? ` (unknown: ${unknown.join(", ")})` : ""}`,
    );
  }
  const out = new Set(heldOut.map((c) => COLOUR_NAMES.indexOf(c as typeof COLOUR_NAMES[number])));
  const colours = heldOut.join(", ");
  const ft = drawShapes(1, images, (label) => out.has(label % 8), `in ${colours}`);
  return {
    pre: drawShapes(0, images, (label) => !out.has(label % 8), `without ${colours}`),
    ft,
    val: drawShapes(2, 200, (label) => out.has(label % 8), `in ${colours}`, ft),
    shift: `pretraining on shapes of the other colours, fine-tuning and validation on shapes in ${colours} ` +
      `(colours and colour words the base never saw)`,
  };
}

async function emojiShift(
  dir: string,
  images: number,
  heldOut: readonly string[],
  seed: number,
): Promise<ShiftedVlmData> {
  const all = await emojiVlmData(dir);
  const groupOf = (await loadEmojiPack(dir)).rows.map((r) => r.group);
  const groups = [...new Set(groupOf)];
  const unknown = heldOut.filter((g) => !groups.includes(g));
  if (unknown.length > 0 || heldOut.length === 0 || heldOut.length === groups.length) {
    throw new RangeError(
      `held-out emoji groups ${JSON.stringify(heldOut)}: give 1..${groups.length - 1} of ${
        JSON.stringify(groups)
      }${unknown.length > 0 ? ` (unknown: ${unknown.join(", ")})` : ""}`,
    );
  }
  const order = seededOrder(all.n, seed);
  const inside = order.filter((i) => heldOut.includes(groupOf[i]));
  const outside = order.filter((i) => !heldOut.includes(groupOf[i])).slice(0, images);
  const nVal = Math.max(1, Math.round(inside.length / 4));
  const names = heldOut.join(", ");
  return {
    pre: subsetVlmData(all, outside, `${all.description}: ${outside.length} images outside ${names}`),
    ft: subsetVlmData(all, inside.slice(nVal), `${inside.length - nVal} images of ${names}`),
    val: subsetVlmData(all, inside.slice(0, nVal), `${nVal} other images of ${names}`),
    shift: `pretraining on emoji outside the groups ${names}, fine-tuning on ${
      inside.length - nVal
    } emoji of those groups and validating on the other ${nVal} (images and names the base never saw)`,
  };
}

/**
 * A fine-tuning task shifted away from pretraining. `"shapes"`: the generated shapes, pretraining on the colours not
 * in `heldOut` (default cyan, magenta, white, orange) and fine-tuning on those colours (fresh draws for fine-tuning
 * and validation, no validation image a fine-tuning one). `"emoji"` or a pack directory: pretraining on up to
 * `images` emoji outside the `heldOut` groups (default Animals & Nature, Food & Drink), fine-tuning on three quarters
 * of those groups' emoji, validating on the rest (a seeded split). `"auto"`: the emoji pack at {@link EMOJI_DIR} when present, else the generated shift.
 *
 * @param source `"auto"`, `"shapes"`, `"emoji"` or an emoji-pack directory.
 * @param opts `images` (pretraining; for shapes also fine-tuning), `heldOut` (empty: the source's default), `seed`
 *   of the emoji split.
 * @returns The three sets and the shift in words.
 */
export async function shiftedVlmData(
  source: string,
  opts: { images: number; heldOut?: readonly string[]; seed?: number },
): Promise<ShiftedVlmData> {
  const resolved = resolveVlmSource(source);
  const given = opts.heldOut !== undefined && opts.heldOut.length > 0 ? opts.heldOut : undefined;
  if (resolved === "shapes") return generatedShift(opts.images, given ?? DEFAULT_HELD_OUT.shapes);
  const dir = resolved === "emoji" ? EMOJI_DIR : resolved;
  return await emojiShift(dir, opts.images, given ?? DEFAULT_HELD_OUT.emoji, opts.seed ?? 0);
}

/**
 * The pretraining spec of the experiments' toy VLM: 16 px images in 4 × 4 patches (16 visual tokens), a 2-block
 * encoder of width 32 (`quick`) or 48, and a 2-layer LM of width 32 or 64 with `textLen` text positions.
 */
export function defaultVlmSpec(
  data: VlmData,
  opts: {
    quick: boolean;
    pretrainSteps: number;
    textLen: number;
    seed?: number;
    /** Captions of later stages whose characters the vocabulary must also hold. */
    vocabCaptions?: readonly string[];
  },
): VlmPretrainSpec {
  const vocab = captionVocab([...data.captions, ...(opts.vocabCaptions ?? [])]);
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

// ----- set-up of the VLM experiments -----

/** The configuration keys the VLM set-up reads. */
export interface VlmSettings {
  /** The smaller model of `--quick`. */
  quick: boolean;
  /** `"auto"`, `"shapes"`, `"emoji"` or an emoji-pack directory (see {@link shiftedVlmData}). */
  data: string;
  /**
   * `"held-out"`: fine-tune on classes the base never saw ({@link shiftedVlmData}); `"none"`: fine-tune on a fresh
   * draw from the pretraining distribution (the generated shapes; the emoji pack again, as a continued stage).
   */
  shift: "held-out" | "none";
  /** Held-out colours (shapes) or emoji groups; empty: the source's default ({@link DEFAULT_HELD_OUT}). */
  heldOut: readonly string[];
  /** Images of the pretraining and fine-tuning sets. */
  images: number;
  /** Steps of each pretraining stage. */
  pretrainSteps: number;
  /** Text positions per caption. */
  textLen: number;
  /** Images per batch. */
  batchSize: number;
  /** Fixed batches of the validation loss. */
  valBatches: number;
  /** Batches of calibration data. */
  calibBatches: number;
}

/** What a VLM experiment starts from. */
export interface VlmSetup {
  /** Pretraining images. */
  readonly pre: VlmData;
  /** Fine-tuning images. */
  readonly ft: VlmData;
  /** The fine-tuning task's relation to pretraining, in words. */
  readonly shift: string;
  /** Validation images. */
  readonly val: VlmData;
  /** The pretrained base (not to be trained: runs start from {@link VlmSetup.fresh} copies). */
  readonly base: ToyVlm;
  /** The caption vocabulary. */
  readonly vocab: CharVocab;
  /** Where the base came from and its stage losses (first → last). */
  readonly note: string;
  /** The batch shape, for {@link modalityAnalysis}. */
  readonly shape: { size: number; textLen: number };
  /** A fresh copy of the base (its own buffers). */
  fresh(): Promise<ToyVlm>;
  /** Fine-tuning batch `step`, a pure function of (seed, step). */
  batch(seed: number, step: number): { images: F32; tokens: I32; targets: I32 };
  /** `calibBatches` fine-tuning batches as host arrays, seeded by `seed` (calibration, statistics). */
  captions(seed: number): CaptionBatch[];
  /** The mean captioning loss of `model` over `valBatches` fixed validation batches. */
  valLoss(model: ToyVlm): Promise<number>;
  /** The mean captioning loss of `model` over `valBatches` fixed batches of the fine-tuning images. */
  fitLoss(model: ToyVlm): Promise<number>;
}

/** Options of {@link vlmTrainer}. */
export interface VlmTrainerOptions {
  /** The method: its learning rate and LoRA+ ratio, when it sets them, override `lr`. */
  method: MethodSpec;
  /** The experiment's learning rate. */
  lr: number;
  /** Training steps. */
  steps: number;
  /** The run's seed (its batches and the trainer's). */
  seed: number;
  /** Batches per optimiser step (gradient accumulation; default 1): step s takes batches (s − 1)·k + 1 .. s·k. */
  accumulate?: number;
  /** Where the per-step records go. */
  metrics: TrainerOptions<ToyVlm, Record<string, Tensor>>["metrics"];
  /**
   * A checkpoint of the adapters, their optimiser state and the step, written every 25 steps and at the end, from
   * which an interrupted run continues exactly (`trainResumable`); none when left out.
   */
  checkpoint?: string;
}

/**
 * The fine-tuning loop of the VLM experiments: AdamW on the adapters (the method's own rate and ratio where it sets
 * them), cosine schedule with 10% warm-up, global-norm clipping at 1, the seed's fine-tuning batches, metrics read
 * every 25 steps, and with `checkpoint` a checkpoint of the adapters and their optimiser state every 25 steps (the
 * base and the seeded init are rebuilt identically, and the batches are a pure function of seed and step).
 */
export function vlmTrainer(
  vlm: VlmSetup,
  model: ToyVlm,
  o: VlmTrainerOptions,
): Trainer<ToyVlm, { images: F32; tokens: I32; targets: I32 }> {
  const k = o.accumulate ?? 1;
  return new Trainer({
    model,
    optimizer: methodOptimizer(model, o.method, o.lr),
    batch: (step, micro) => vlm.batch(o.seed, (step - 1) * k + micro + 1),
    loss: (m, b) => m.loss(b.images, b.tokens, b.targets),
    steps: o.steps,
    accumulate: k,
    schedule: cosineSchedule({ totalSteps: o.steps, warmupRatio: 0.1 }),
    clipNorm: 1,
    readEvery: 25,
    metrics: o.metrics,
    checkpoint: o.checkpoint === undefined
      ? undefined
      : { path: o.checkpoint, every: 25, trainableOnly: true },
    progress: Deno.stderr.isTerminal() ? `${o.method.name} seed ${o.seed}` : false,
    seed: o.seed,
  });
}

/**
 * Loads the images and the pretrained base (pretraining it once: stages 0, a and b, cached under `.cache/vlm`),
 * prints the data and base lines, and gives fresh copies of the base, seeded batches and the validation loss.
 *
 * @param cfg The settings.
 * @param device The device.
 * @returns The set-up.
 */
export async function vlmSetup(cfg: VlmSettings, device: DeviceName): Promise<VlmSetup> {
  let pre: VlmData, ft: VlmData, val: VlmData, shift: string;
  if (cfg.shift === "held-out") {
    ({ pre, ft, val, shift } = await shiftedVlmData(cfg.data, { images: cfg.images, heldOut: cfg.heldOut }));
  } else {
    const source = resolveVlmSource(cfg.data);
    pre = await loadVlmData(source, { n: cfg.images, seed: 0 });
    ft = source === "shapes" ? await loadVlmData(source, { n: cfg.images, seed: 1 }) : pre;
    val = source === "shapes" ? drawShapes(2, 200, () => true, "of every colour", ft) : pre;
    shift = source === "shapes"
      ? "no shift: fine-tuning on a fresh draw of the pretraining generator (seed 1), validating on images of seed 2 " +
        "that are not fine-tuning images"
      : "no shift: fine-tuning and validating on the pretraining images";
  }
  // Every set's description says how many of its captions the batches show cut (at load or by textLen).
  const withCuts = (d: VlmData): VlmData => ({
    ...d,
    description: `${d.description} [textLen ${cfg.textLen}: ${captionCuts(d, cfg.textLen).text}]`,
  });
  [pre, ft, val] = [pre, ft, val].map(withCuts);
  const vocabCaptions = [...ft.captions, ...val.captions];
  const spec = defaultVlmSpec(pre, {
    quick: cfg.quick,
    pretrainSteps: cfg.pretrainSteps,
    textLen: cfg.textLen,
    vocabCaptions,
  });
  const base = await cachedVlm(spec, pre, { device, progress: Deno.stderr.isTerminal(), vocabCaptions });
  const stages = Object.entries(base.stages)
    .map(([k, v]) => `${k} ${v.first.toFixed(3)} → ${v.last.toFixed(3)}`)
    .join(", ");
  const note =
    `${base.cached ? "cached" : "pretrained"} base in ${base.dir} (${base.seconds.toFixed(1)} s); ` +
    `stage losses first → last: ${stages}`;
  console.log(
    `data: pretraining ${pre.description}; fine-tuning ${ft.description}; validation ${val.description}\n` +
      `shift: ${shift}\nbase: ${note}`,
  );
  const { vocab } = base;
  const shape = { batchSize: cfg.batchSize, size: ft.size, textLen: cfg.textLen };
  const batchOf = (data: VlmData, seed: number, step: number) =>
    captionBatch(data, vocab, batchIndices(data.n, cfg.batchSize, seed, step), cfg.textLen);
  return {
    pre,
    ft,
    val,
    shift,
    base: base.model,
    vocab,
    note,
    shape: { size: ft.size, textLen: cfg.textLen },
    fresh: () => copyVlm(base.model),
    batch: (seed, step) => captionTensors(batchOf(ft, seed, step), shape, device),
    captions: (seed) => Array.from({ length: cfg.calibBatches }, (_, i) => batchOf(ft, seed, i + 1)),
    valLoss: (model) =>
      captionLoss(model, val, vocab, {
        batches: cfg.valBatches,
        batchSize: cfg.batchSize,
        seed: 987654,
        textLen: cfg.textLen,
      }),
    fitLoss: (model) =>
      captionLoss(model, ft, vocab, {
        batches: cfg.valBatches,
        batchSize: cfg.batchSize,
        seed: 456789,
        textLen: cfg.textLen,
      }),
  };
}
