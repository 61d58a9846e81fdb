/**
 * The set-up of the language-model experiments (exp:eva, exp:init-sweep, exp:cntlora; exp:spectral-gain reads the
 * same base): the corpus (generated source/target domains by default, or a text file with a tokenizer), the
 * pretrained base (cached under `.cache/base`), fresh copies of it, seeded batches, validation loss, and the
 * calibration data an initialisation needs. The training loop is each experiment's own.
 *
 * @module
 */
import { z } from "../deps.ts";
import {
  charVocab,
  collectActivations,
  collectGradients,
  cosineSchedule,
  deriveSeed,
  type DeviceChoice,
  type DeviceName,
  getInitMethod,
  type I32,
  type LayerData,
  LlamaLM,
  loadLlama,
  loadText,
  sampleWindows,
  splitText,
  tensor,
  Tokenizer,
  Trainer,
} from "../mod.ts";
import type { ConfigField } from "./config.ts";
import { deviceField, distinctList, resumeField } from "./experiment.ts";
import { generateTextDomains } from "./generated.ts";
import { cachedPretrained } from "./cache.ts";
import { type ClassifyScore, type SentimentTask, sentimentTask } from "./classify.ts";
import { methodOptimizer, type MethodSpec } from "./methods.ts";
import type { ResultsDir } from "./results.ts";

/**
 * The revision of the LM set-up's data and calibration streams, recorded with each LM experiment's configuration
 * (`revision` of its `startExperiment`) so that `--resume` refuses runs made before a change. 2: the generated
 * target's validation sentences are none of its training sentences; 3: the calibration batches' seeds are hashed.
 */
export const LM_SETUP_REVISION = 3;

/** What picks the corpus and the base model. */
export interface CorpusSettings {
  /** The smaller generated corpus and base of `--quick`. */
  quick: boolean;
  /** The base model (llama2.c `.bin` or HF directory); default: pretrain one on the generated source domain. */
  model?: string;
  /** The model's tokenizer (default: characters). */
  tokenizer?: string;
  /** The target-domain text file (default: generated). */
  data?: string;
  /** Steps of the generated base's pretraining. */
  pretrainSteps: number;
}

/** The settings the LM set-up reads (a subset of each experiment's configuration). */
export interface LmSettings extends CorpusSettings {
  /** Next-token prediction on the corpus (default), or sentence classification on the sentiment data. */
  task?: "lm" | "sentiment";
  /** The sentiment data's directory (`task: "sentiment"`). */
  sentimentDir?: string;
  /** The sentiment domain to fine-tune on (the other two are tested). */
  trainDomain?: string;
  /** LoRA target modules (where calibration data is recorded). */
  targets: string[];
  /** Sequences per batch. */
  batchSize: number;
  /** Tokens per sequence. */
  seqLen: number;
  /** Fixed batches of a validation loss. */
  valBatches: number;
  /** Batches of calibration data for data-driven inits. */
  calibBatches: number;
}

/** Token streams of the experiment. */
export interface Corpus {
  /** Target-domain training tokens. */
  train: Int32Array;
  /** Target-domain validation tokens. */
  val: Int32Array;
  /**
   * Source-domain tokens (pretraining data; held out for forgetting), when known: with a tokenizer, those of the
   * source text's first {@link SOURCE_CHARS} characters (the description says so when the text is longer).
   */
  source?: Int32Array;
  /** Vocabulary size. */
  vocab: number;
  /** Where the data came from. */
  description: string;
}

/** Characters of a source-domain text that are tokenized with a tokenizer (the leading ones). */
export const SOURCE_CHARS = 200_000;

/** The leading part of a source text that is tokenized, and the words of the corpus description for it. */
function sourcePart(text: string, path: string): { text: string; note: string } {
  if (text.length <= SOURCE_CHARS) return { text, note: `, source ${path}` };
  const high = text.charCodeAt(SOURCE_CHARS - 1);
  const cut = high >= 0xd800 && high <= 0xdbff ? SOURCE_CHARS - 1 : SOURCE_CHARS; // a surrogate pair stays whole
  return {
    text: text.slice(0, cut),
    note: `, source ${path} (its first ${cut} of ${text.length} characters)`,
  };
}

/**
 * The corpus: `data` (a text file, tokenized with `tokenizer` or as characters) as the target domain, with
 * `sourceText` (e.g. TinyStories for stories260K) as the source domain when given (with a tokenizer, its first
 * {@link SOURCE_CHARS} characters); or the generated domain pair.
 */
export async function loadCorpus(cfg: CorpusSettings, sourceText?: string): Promise<Corpus> {
  if (cfg.data !== undefined) {
    const text = await loadText(cfg.data);
    const { train, val } = splitText(text);
    const src = sourceText !== undefined ? await loadText(sourceText) : undefined;
    if (cfg.tokenizer !== undefined) {
      const tok = await Tokenizer.load(cfg.tokenizer);
      const part = src !== undefined ? sourcePart(src, sourceText!) : undefined;
      return {
        train: Int32Array.from(tok.encode(train)),
        val: Int32Array.from(tok.encode(val)),
        source: part !== undefined ? Int32Array.from(tok.encode(part.text)) : undefined,
        vocab: tok.vocabSize,
        description: `${cfg.data} (tokenizer ${cfg.tokenizer})${part?.note ?? ""}`,
      };
    }
    const v = charVocab(text + (src ?? ""));
    return {
      train: v.encode(train),
      val: v.encode(val),
      source: src !== undefined ? v.encode(src) : undefined,
      vocab: v.size,
      description: `${cfg.data} (characters)`,
    };
  }
  // A tenth of the target's sentences held out, none of them in the training text.
  const nSentences = cfg.quick ? 1500 : 4000;
  const { source, target, targetVal } = generateTextDomains({
    seed: 0,
    nSentences,
    valSentences: nSentences / 10,
  });
  const v = charVocab(source + target + targetVal);
  return {
    train: v.encode(target),
    val: v.encode(targetVal),
    source: v.encode(source),
    vocab: v.size,
    description: "generated: synthetic source domain (pretraining) → shifted target domain (fine-tuning)",
  };
}

/** Where the sentiment data lives, from the repository root. */
export const SENTIMENT_DIR = "../shared/data/text/sentiment_labelled_sentences";

/** The token streams of the sentiment task (its training and held-out sequences), with `sourceText` as source. */
async function sentimentCorpus(task: SentimentTask, cfg: LmSettings, sourceText?: string): Promise<Corpus> {
  const tok = await Tokenizer.load(cfg.tokenizer!);
  const held = task.test[task.testDomains[0]];
  const part = sourceText !== undefined ? sourcePart(await loadText(sourceText), sourceText) : undefined;
  return {
    train: task.train.x,
    val: held.x,
    source: part !== undefined ? Int32Array.from(tok.encode(part.text)) : undefined,
    vocab: tok.vocabSize,
    description: task.description + (part?.note ?? ""),
  };
}

/** Context length of the built-in base. */
const BUILT_IN_CONTEXT = 128;

/** The refusal of a `seqLen` longer than the base model's context. */
function contextError(seqLen: number, context: number, note: string): RangeError {
  return new RangeError(
    `seqLen ${seqLen} is more than the base model's context of ${context} tokens (${note}): ` +
      `pass --seqLen ${context} or less`,
  );
}

/** The base model: `model` from a file, or a small LM pretrained on the source domain (cached). */
export async function baseModel(
  cfg: CorpusSettings,
  corpus: Corpus,
  device: DeviceName,
): Promise<{ model: LlamaLM; note: string }> {
  if (cfg.model !== undefined) return { model: await loadLlama(cfg.model, { device }), note: cfg.model };
  const spec = {
    model: {
      dim: cfg.quick ? 32 : 64,
      hiddenDim: cfg.quick ? 86 : 172,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 2,
      vocabSize: corpus.vocab,
      seqLen: BUILT_IN_CONTEXT,
      sharedClassifier: true,
    },
    steps: cfg.pretrainSteps,
    batchSize: 16,
    seqLen: 64,
    lr: 3e-3,
    seed: 1234,
  };
  if (corpus.source === undefined) {
    throw new RangeError(
      "the built-in base is pretrained on the generated source domain: with --data, pass --model",
    );
  }
  const r = await cachedPretrained(spec, corpus.source, { device, progress: Deno.stderr.isTerminal() });
  return {
    model: r.model,
    note: `${r.cached ? "cached" : "pretrained"} base in ${r.dir} (${r.seconds.toFixed(1)} s${
      r.continuedFrom > 0 ? `, continued from step ${r.continuedFrom}` : ""
    })`,
  };
}

/** Options of {@link LmSetup.calibration}. */
export interface CalibrationOptions {
  /** Batches (default `calibBatches` of the settings). */
  batches?: number;
  /** Sequences per batch (default `batchSize`). */
  batchSize?: number;
}

/** What {@link LmSetup.evaluate} measures. */
export interface Evaluation {
  /** Validation loss. */
  loss: number;
  /** Mean accuracy over the test domains other than the training one (sentiment task). */
  accuracy?: number;
  /** Loss and accuracy per test domain (sentiment task). */
  domains?: Record<string, ClassifyScore>;
}

/** What an LM experiment starts from. */
export interface LmSetup {
  /** The settings. */
  readonly cfg: LmSettings;
  /** The device. */
  readonly device: DeviceName;
  /** The token streams. */
  readonly corpus: Corpus;
  /** The base model (not to be trained: runs start from {@link LmSetup.fresh} copies). */
  readonly base: LlamaLM;
  /** Where the base came from. */
  readonly note: string;
  /** A fresh copy of the base (its own buffers). */
  fresh(): LlamaLM;
  /** Batch `step` of windows of `tokens`, a pure function of (seed, step). */
  batch(tokens: Int32Array, seed: number, step: number): { x: I32; y: I32 };
  /** The sentiment task, with `task: "sentiment"`. */
  readonly classify?: SentimentTask;
  /** Fine-tuning batch `step`: windows of the target domain, or labelled sentences of the training domain. */
  trainBatch(seed: number, step: number): { x: I32; y: I32 };
  /**
   * The fine-tuned model's validation loss (the target domain's, or with the sentiment task the mean label loss
   * over the two other domains) and, with the sentiment task, the mean accuracy over them and every domain's score.
   */
  evaluate(model: LlamaLM): Promise<Evaluation>;
  /** The mean loss of `model` over `valBatches` fixed batches of `tokens` (one readback). */
  meanLoss(model: LlamaLM, tokens: Int32Array): Promise<number>;
  /**
   * The calibration data initialisation `init` needs from `model` on target-domain training batches of streams
   * hashed from `seed` (one for activations, one for gradients; no run's training batches): input activations of
   * the targets, and/or full weight gradients of the loss averaged over the batches; undefined when it needs none.
   */
  calibration(
    model: LlamaLM,
    init: string,
    seed: number,
    options?: CalibrationOptions,
  ): Promise<Record<string, LayerData> | undefined>;
}

/**
 * The corpus and base model of an LM experiment (printing the data and base lines), with fresh copies of the base,
 * seeded batches, validation loss and calibration data on top.
 *
 * @param cfg The settings.
 * @param device The device.
 * @param sourceText A source-domain text file (forgetting), with `--data`.
 * @returns The set-up.
 */
export async function lmSetup(cfg: LmSettings, device: DeviceName, sourceText?: string): Promise<LmSetup> {
  const classify = cfg.task === "sentiment"
    ? await sentimentTask({
      dir: cfg.sentimentDir ?? SENTIMENT_DIR,
      tokenizer: cfg.tokenizer!,
      trainDomain: cfg.trainDomain ?? "yelp",
      seqLen: cfg.seqLen,
      batchSize: cfg.batchSize,
      device,
    })
    : undefined;
  const corpus = classify === undefined ? await loadCorpus(cfg, sourceText) : await sentimentCorpus(
    classify,
    cfg,
    sourceText,
  );
  // Each stream cut into windows must hold one: else the first batch or validation loss fails, naming no file.
  const streams: [string, Int32Array | undefined][] = classify === undefined
    ? [["training part (the first 90%)", corpus.train], ["validation part (the last 10%)", corpus.val]]
    : [];
  streams.push(["source text", corpus.source]);
  for (const [part, tokens] of streams) {
    if (tokens !== undefined && tokens.length < cfg.seqLen + 1) {
      throw new RangeError(
        `the ${part} of ${corpus.description} is ${tokens.length} tokens, fewer than the ${cfg.seqLen + 1} ` +
          `a window of seqLen ${cfg.seqLen} needs: give a longer text or a smaller --seqLen`,
      );
    }
  }
  // Before the built-in base is pretrained, which takes minutes.
  if (cfg.model === undefined && cfg.seqLen > BUILT_IN_CONTEXT) {
    throw contextError(cfg.seqLen, BUILT_IN_CONTEXT, "the built-in base");
  }
  const { model: base, note } = await baseModel(cfg, corpus, device);
  if (corpus.vocab !== base.config.vocabSize) {
    throw new RangeError(
      `the data has a vocabulary of ${corpus.vocab} tokens (${
        cfg.tokenizer === undefined ? "its characters" : `tokenizer "${cfg.tokenizer}"`
      }) but model "${cfg.model}" has ${base.config.vocabSize}: pass --tokenizer with the tokenizer the model was ` +
        `trained with`,
    );
  }
  if (cfg.seqLen > base.config.seqLen) throw contextError(cfg.seqLen, base.config.seqLen, note);
  console.log(`data: ${corpus.description}\nbase: ${note}`);
  const weights = await base.hostWeights();
  const batch = (tokens: Int32Array, seed: number, step: number, batchSize = cfg.batchSize) => {
    const { x, y } = sampleWindows(tokens, { batchSize, seqLen: cfg.seqLen, seed, step });
    const shape = [batchSize, cfg.seqLen];
    return {
      x: tensor(x, { shape, dtype: "i32", device }) as I32,
      y: tensor(y, { shape, dtype: "i32", device }) as I32,
    };
  };
  const meanLoss = async (model: LlamaLM, tokens: Int32Array) => {
    const losses = Array.from({ length: cfg.valBatches }, (_, i) => {
      const b = batch(tokens, 987654, i + 1);
      return model.loss(b.x, b.y);
    });
    return (await losses.reduce((a, b) => a.add(b)).item()) / cfg.valBatches;
  };
  return {
    cfg,
    device,
    corpus,
    base,
    note,
    fresh: () => LlamaLM.fromWeights(base.config, weights, { device }),
    batch: (tokens, seed, step) => batch(tokens, seed, step),
    classify,
    trainBatch: (seed, step) => classify?.batch(seed, step) ?? batch(corpus.train, seed, step),
    async evaluate(model) {
      if (classify === undefined) return { loss: await meanLoss(model, corpus.val) };
      const domains = await classify.score(model);
      const others = classify.testDomains.slice(1);
      const mean = (f: (d: string) => number) => others.reduce((a, d) => a + f(d), 0) / others.length;
      return { loss: mean((d) => domains[d].loss), accuracy: mean((d) => domains[d].accuracy), domains };
    },
    meanLoss,
    async calibration(model, init, seed, options = {}) {
      const needs = getInitMethod(init).needs;
      const batches = options.batches ?? cfg.calibBatches;
      // Streams of their own, hashed from the seed with a label each: an offset (seed + 77) would be the training
      // batches of the run whose seed is 77 more.
      const calib = (purpose: string, step: number) => {
        const s = deriveSeed(seed, "calibration", purpose);
        return classify?.batch(s, step, options.batchSize) ?? batch(corpus.train, s, step, options.batchSize);
      };
      const acts = needs.includes("activations")
        ? await collectActivations(model, cfg.targets, (m, i) => {
          m.forward(calib("activations", i + 1).x);
        }, { batches })
        : undefined;
      const steps = Array.from({ length: batches }, (_, i) => i + 1);
      const grads = needs.includes("grads")
        ? await collectGradients(model, cfg.targets, (m, step: number) => {
          const b = calib("gradients", step);
          return m.loss(b.x, b.y);
        }, steps)
        : undefined;
      if (acts === undefined && grads === undefined) return undefined;
      const out: Record<string, LayerData> = {};
      for (const k of new Set([...Object.keys(acts ?? {}), ...Object.keys(grads ?? {})])) {
        out[k] = { ...acts?.[k], ...grads?.[k] };
      }
      return out;
    },
  };
}

/**
 * One problem for each given path (`[flag, path]`, undefined: not given) that does not exist, so that an experiment
 * refuses it before it makes its results directory.
 */
export function missingInputs(inputs: readonly (readonly [string, string | undefined])[]): string[] {
  return inputs.flatMap(([flag, path]) => {
    if (path === undefined) return [];
    try {
      Deno.statSync(path);
      return [];
    } catch (e) {
      return [
        `${flag} "${path}": ${
          e instanceof Deno.errors.NotFound ? "no such file or directory" : (e as Error).message
        }`,
      ];
    }
  });
}

/**
 * The paths the LM experiments read exist, and the companions their data keys need, checked before anything is
 * loaded or written: `--data` is
 * fine-tuned on by a `--model` read with its `--tokenizer` (the built-in base only knows the generated domains),
 * `--source` (forgetting) belongs to `--data`, `--train-domain` and `--sentiment-dir` to `--task sentiment`, and
 * `--pretrain-steps` to the generated base (not to `--model`).
 */
export function lmCheck(
  cfg: {
    model?: string;
    tokenizer?: string;
    data?: string;
    source?: string;
    task?: "lm" | "sentiment";
    trainDomain?: string;
    sentimentDir?: string;
    quick?: boolean;
    pretrainSteps?: number;
  },
): void {
  const problems: string[] = missingInputs([
    ["--model", cfg.model],
    ["--tokenizer", cfg.tokenizer],
    ["--data", cfg.data],
    ["--source", cfg.source],
    ["--sentiment-dir", cfg.task === "sentiment" ? cfg.sentimentDir : undefined],
  ]);
  const pretrainDefault = cfg.quick ? LM_QUICK.pretrainSteps : PRETRAIN_STEPS;
  if (cfg.model !== undefined && cfg.pretrainSteps !== undefined && cfg.pretrainSteps !== pretrainDefault) {
    problems.push(
      `--pretrain-steps ${cfg.pretrainSteps}: used only for the generated base model, and --model "${cfg.model}" ` +
        "is given",
    );
  }
  if (cfg.task !== "sentiment") {
    // Only the sentiment task reads these; with --task lm a value other than the default would be ignored.
    const unused = [
      ...(cfg.trainDomain !== undefined && cfg.trainDomain !== "yelp"
        ? [`--train-domain ${cfg.trainDomain}`]
        : []),
      ...(cfg.sentimentDir !== undefined && cfg.sentimentDir !== SENTIMENT_DIR
        ? [`--sentiment-dir "${cfg.sentimentDir}"`]
        : []),
    ];
    if (unused.length > 0) {
      problems.push(
        `${unused.join(" and ")}: used only with --task sentiment, and --task is ${cfg.task ?? "lm"}`,
      );
    }
  }
  if (cfg.task === "sentiment") {
    if (cfg.model === undefined || cfg.tokenizer === undefined) {
      problems.push("--task sentiment needs --model and --tokenizer (a pretrained LM, e.g. stories260K)");
    }
    if (cfg.data !== undefined) problems.push("--task sentiment reads the sentiment data: leave out --data");
    if (problems.length > 0) throw new RangeError(problems.join("; "));
    return;
  }
  if (cfg.data !== undefined && cfg.model === undefined) {
    problems.push(
      "--data needs --model and --tokenizer: the built-in base is pretrained on the generated source domain; " +
        "pass a base model and the tokenizer it was trained with, or leave out --data",
    );
  }
  if (cfg.model !== undefined && (cfg.data === undefined || cfg.tokenizer === undefined)) {
    problems.push(
      `--model needs ${
        cfg.data === undefined ? "--data (the text to fine-tune on) and " : ""
      }--tokenizer (the ` +
        "model's own): the generated corpus is character-level, which a pretrained model's vocabulary does not match",
    );
  }
  if (cfg.tokenizer !== undefined && cfg.model === undefined && cfg.data === undefined) {
    problems.push("--tokenizer is used only with --model and --data");
  }
  if (cfg.source !== undefined && cfg.data === undefined) {
    problems.push("--source (the source-domain text for forgetting) needs --data");
  }
  if (problems.length > 0) throw new RangeError(problems.join("; "));
}

/** Options of {@link lmTrainer}. */
export interface LmTrainerOptions {
  /** The method: its learning rate and LoRA+ ratio, when it sets them, override `lr`. */
  method: MethodSpec;
  /** The experiment's learning rate. */
  lr: number;
  /** Training steps. */
  steps: number;
  /** The run's seed (its batches and the trainer's). */
  seed: number;
  /** Batches per optimiser step (gradient accumulation; default 1). */
  accumulate?: number;
  /** File stem of the run's checkpoint and metrics under `results` (e.g. `lora-seed0`). */
  name: string;
  /** The progress line's label. */
  label: string;
  /** Where checkpoints/ and metrics/ go. */
  results: ResultsDir;
}

/**
 * The fine-tuning loop every LM experiment runs: AdamW on the adapters (the method's own rate and ratio where it
 * sets them), cosine schedule with 10% warm-up, global-norm clipping at 1, target-domain batches of the seed (with
 * `accumulate: k`, step s takes batches (s − 1)·k + 1 .. s·k of the seed's stream, so k = 1 takes batch s),
 * metrics read every 10 steps, and a checkpoint of the adapters and their optimiser state every 50 steps (the base
 * is rebuilt identically: same weights, same seeded init). Returns the trainer and its checkpoint and metrics paths
 * (for `trainResumable`).
 */
export function lmTrainer(
  lm: LmSetup,
  model: LlamaLM,
  o: LmTrainerOptions,
): { trainer: Trainer<LlamaLM, { x: I32; y: I32 }>; checkpoint: string; metrics: string } {
  const checkpoint = o.results.file(`checkpoints/${o.name}.safetensors`);
  const metrics = o.results.file(`metrics/${o.name}.jsonl`);
  const k = o.accumulate ?? 1;
  const trainer = new Trainer({
    model,
    optimizer: methodOptimizer(model, o.method, o.lr),
    batch: (step, micro) => lm.trainBatch(o.seed, (step - 1) * k + micro + 1),
    loss: (m, b) => m.loss(b.x, b.y),
    steps: o.steps,
    accumulate: k,
    schedule: cosineSchedule({ totalSteps: o.steps, warmupRatio: 0.1 }),
    clipNorm: 1,
    readEvery: 10,
    metrics,
    checkpoint: { path: checkpoint, every: 50, trainableOnly: true },
    progress: Deno.stderr.isTerminal() ? o.label : false,
    seed: o.seed,
  });
  return { trainer, checkpoint, metrics };
}

/** The schemas of the configuration keys of {@link lmFields}. */
export interface LmFields {
  /** `quick`. */
  quick: ConfigField<boolean>;
  /** `seeds`. */
  seeds: ConfigField<number[]>;
  /** `targets`. */
  targets: ConfigField<string[]>;
  /** `steps`. */
  steps: ConfigField<number>;
  /** `batchSize`. */
  batchSize: ConfigField<number>;
  /** `accumulate`. */
  accumulate: ConfigField<number | undefined>;
  /** `seqLen`. */
  seqLen: ConfigField<number>;
  /** `lr`. */
  lr: ConfigField<number>;
  /** `valBatches`. */
  valBatches: ConfigField<number>;
  /** `model`. */
  model: ConfigField<string | undefined>;
  /** `tokenizer`. */
  tokenizer: ConfigField<string | undefined>;
  /** `data`. */
  data: ConfigField<string | undefined>;
  /** `pretrainSteps`. */
  pretrainSteps: ConfigField<number>;
  /** `resume`. */
  resume: ConfigField<string | undefined>;
  /** `extend`. */
  extend: ConfigField<boolean>;
  /** `device`. */
  device: ConfigField<DeviceChoice | undefined>;
  /** `task`. */
  task: ConfigField<"lm" | "sentiment">;
  /** `sentimentDir`. */
  sentimentDir: ConfigField<string>;
  /** `trainDomain`. */
  trainDomain: ConfigField<"amazon" | "imdb" | "yelp">;
}

/** The pretraining steps of the generated base model without `--quick` (the preset's are in {@link LM_QUICK}). */
export const PRETRAIN_STEPS = 600;

/**
 * The configuration keys every LM fine-tuning experiment shares, to spread into its schema (keys listed after
 * the spread override these): seeds, target modules, training length and batches, the base model and data, resume
 * and device. `steps` is the experiment's default training length.
 */
export function lmFields(steps: number): LmFields {
  return {
    quick: z.boolean().default(false).describe("small sizes: a few minutes on a 2-core CPU"),
    seeds: distinctList(z.int(), {
      default: [0, 1, 2, 3, 4],
      description: "fine-tuning seeds (mean ± std over them; claims pair runs by seed)",
    }),
    targets: distinctList(z.string(), {
      default: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
      description: "LoRA target modules",
    }),
    steps: z.number().int().positive().default(steps).describe("fine-tuning steps"),
    batchSize: z.number().int().positive().default(8).describe("sequences per batch"),
    // Optional rather than a default of 1, so that the configurations of runs from before it still resume.
    accumulate: z.number().int().positive().optional().describe(
      "batches per optimiser step (gradient accumulation; default 1): the step's gradient is their mean",
    ),
    seqLen: z.number().int().positive().default(64).describe("tokens per sequence"),
    lr: z.number().positive().default(3e-3).describe("AdamW learning rate (cosine, 10% warm-up)"),
    valBatches: z.number().int().positive().default(8).describe("validation batches of the target domain"),
    model: z.string().optional().describe(
      "base model: llama2.c .bin or HF directory (default: pretrain one)",
    ),
    tokenizer: z.string().optional().describe("tokenizer.bin for --model (default: characters)"),
    data: z.string().optional().describe("target-domain text file (default: generated)"),
    pretrainSteps: z.number().int().positive().default(PRETRAIN_STEPS).describe(
      "steps of the generated base model",
    ),
    resume: resumeField(),
    extend: z.boolean().default(false).describe(
      "with --resume: accept a larger --steps; finished runs continue from their last checkpoint (the schedule of " +
        "the new length applies from there) and config.yaml records the extension",
    ),
    device: deviceField(),
    task: z.enum(["lm", "sentiment"]).default("lm").describe(
      "lm: next-token fine-tuning on the target domain; sentiment: sentence → label token on one domain of the " +
        "sentiment data, tested (loss and accuracy) on its held-out sentences and on the other two (needs --model " +
        "and --tokenizer)",
    ),
    sentimentDir: z.string().default(SENTIMENT_DIR).describe(
      "directory of the sentiment data (--task sentiment)",
    ),
    trainDomain: z.enum(["amazon", "imdb", "yelp"]).default("yelp").describe(
      "sentiment domain to fine-tune on (--task sentiment)",
    ),
  };
}

/** What reports add to a batch's description for gradient accumulation over `k` batches: `, k batches per step`. */
export function accumulatedText(k: number | undefined): string {
  return k === undefined || k === 1 ? "" : `, ${k} batches per step`;
}

/** A run's batch for reports: `8×64`, and `8×64, 4 batches per step` with gradient accumulation. */
export function lmBatchText(cfg: { batchSize: number; seqLen: number; accumulate?: number }): string {
  return `${cfg.batchSize}×${cfg.seqLen}${accumulatedText(cfg.accumulate)}`;
}

/** The `--quick` preset of the keys in {@link lmFields}: one seed, 40 short steps, the smaller base. */
export const LM_QUICK: {
  seeds: number[];
  steps: number;
  batchSize: number;
  seqLen: number;
  valBatches: number;
  pretrainSteps: number;
} = {
  seeds: [0],
  steps: 40,
  batchSize: 8,
  seqLen: 32,
  valBatches: 4,
  pretrainSteps: 250,
};
