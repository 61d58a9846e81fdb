/**
 * Shared pieces of the language-model experiments (exp:eva, exp:init-sweep, exp:cntlora): the corpus (generated
 * source/target domains by default, or a text file with a tokenizer), the pretrained base (cached), seeded batches,
 * validation loss, calibration activations, and one LoRA fine-tuning run with any registered initialisation.
 *
 * @module
 */
import { DEVICE_CHOICES } from "../lib/runtime/device.ts";
import { z } from "../deps.ts";
import { distinctList } from "./_start.ts";
import { tensor } from "../lib/tensor/creation.ts";
import type { Tensor } from "../lib/tensor/tensor.ts";
import type { Shape } from "../lib/shape.ts";
import { charVocab, generateTextDomains } from "../lib/data/generated.ts";
import { loadText, splitText } from "../lib/data/text.ts";
import { Tokenizer } from "../lib/io/tokenizer.ts";
import { LlamaLM } from "../lib/models/llama.ts";
import { loadLlama } from "../lib/models/load.ts";
import { cachedPretrained } from "../lib/models/cache.ts";
import { sampleWindows } from "../lib/train/batches.ts";
import { type StepRecord, Trainer } from "../lib/train/trainer.ts";
import { readJsonl } from "../lib/util/metrics.ts";
import { AdamW } from "../lib/nn/optim/adam.ts";
import { cosineSchedule } from "../lib/nn/optim/schedule.ts";
import { attachLora, LORA_TRAINABLE, loraLayers, loraNorms, loraPlusOptions } from "../lib/lora/mod.ts";
import { type UpdateSimilarity, updateSimilarity } from "../lib/lora/delta_stats.ts";
import { collectActivations, collectGradients } from "../lib/init/calibrate.ts";
import { getInitMethod, type LayerData } from "../lib/init/mod.ts";
import type { DeviceName } from "../lib/ir/node.ts";
import type { ResultsDir } from "../lib/util/results.ts";
import { previousCheckpointPath } from "../lib/train/checkpoint.ts";

/** An i32 tensor. */
export type I32 = Tensor<Shape, "i32">;

/** The settings every LM experiment shares (a subset of each experiment's config). */
export interface LmSettings {
  quick: boolean;
  rank: number;
  alpha: number;
  targets: string[];
  steps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  calibBatches: number;
  valBatches: number;
  model?: string;
  tokenizer?: string;
  data?: string;
  pretrainSteps: number;
  /** Whether finished runs shorter than `steps` may be continued (`--resume DIR --extend`). */
  extend?: boolean;
}

/** Token streams of the experiment. */
export interface Corpus {
  /** Target-domain training tokens. */
  train: Int32Array;
  /** Target-domain validation tokens. */
  val: Int32Array;
  /** Source-domain tokens (pretraining data; held out for forgetting), when known. */
  source?: Int32Array;
  /** Vocabulary size. */
  vocab: number;
  /** Where the data came from. */
  description: string;
}

/**
 * The corpus: `data` (a text file, tokenized with `tokenizer` or as characters) as the target domain, with
 * `sourceText` (e.g. TinyStories for stories260K) as the source domain when given; or the generated domain pair.
 */
export async function loadCorpus(cfg: LmSettings, sourceText?: string): Promise<Corpus> {
  if (cfg.data !== undefined) {
    const text = await loadText(cfg.data);
    const { train, val } = splitText(text);
    const src = sourceText !== undefined ? await loadText(sourceText) : undefined;
    if (cfg.tokenizer !== undefined) {
      const tok = await Tokenizer.load(cfg.tokenizer);
      return {
        train: Int32Array.from(tok.encode(train)),
        val: Int32Array.from(tok.encode(val)),
        source: src !== undefined ? Int32Array.from(tok.encode(src.slice(0, 200_000))) : undefined,
        vocab: tok.vocabSize,
        description: `${cfg.data} (tokenizer ${cfg.tokenizer})${
          src !== undefined ? `, source ${sourceText}` : ""
        }`,
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
  const { source, target } = generateTextDomains({ seed: 0, nSentences: cfg.quick ? 1500 : 4000 });
  const v = charVocab(source + target);
  const { train, val } = splitText(target);
  return {
    train: v.encode(train),
    val: v.encode(val),
    source: v.encode(source),
    vocab: v.size,
    description: "generated: synthetic source domain (pretraining) → shifted target domain (fine-tuning)",
  };
}

/** The base model: `model` from a file, or a small LM pretrained on the source domain (cached). */
export async function baseModel(
  cfg: LmSettings,
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
      seqLen: 128,
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
    note: `${r.cached ? "cached" : "pretrained"} base in ${r.dir} (${r.seconds.toFixed(1)} s)`,
  };
}

/**
 * The corpus and base model of an LM experiment, plus the base's weights on the host (every run starts from a
 * copy of them); prints the data and base lines.
 */
export async function lmSetup(cfg: LmSettings, device: DeviceName, sourceText?: string) {
  const corpus = await loadCorpus(cfg, sourceText);
  const { model: base, note } = await baseModel(cfg, corpus, device);
  if (corpus.vocab !== base.config.vocabSize) {
    throw new RangeError(
      `the data has a vocabulary of ${corpus.vocab} tokens (${
        cfg.tokenizer === undefined ? "its characters" : `tokenizer "${cfg.tokenizer}"`
      }) but model "${cfg.model}" has ${base.config.vocabSize}: pass --tokenizer with the tokenizer the model was ` +
        `trained with`,
    );
  }
  console.log(`data: ${corpus.description}\nbase: ${note}`);
  return { corpus, base, note, baseWeights: await base.hostWeights() };
}

/** Batch `step` of windows from `tokens`, a pure function of (seed, step). */
export function windows(tokens: Int32Array, cfg: LmSettings, seed: number, step: number, device: DeviceName) {
  const { x, y } = sampleWindows(tokens, { batchSize: cfg.batchSize, seqLen: cfg.seqLen, seed, step });
  const shape = [cfg.batchSize, cfg.seqLen];
  return {
    x: tensor(x, { shape, dtype: "i32", device }) as I32,
    y: tensor(y, { shape, dtype: "i32", device }) as I32,
  };
}

/** Mean loss over `cfg.valBatches` fixed batches of `tokens` (one readback). */
export async function meanLoss(
  model: LlamaLM,
  tokens: Int32Array,
  cfg: LmSettings,
  device: DeviceName,
): Promise<number> {
  let total: Tensor | null = null;
  for (let i = 1; i <= cfg.valBatches; i++) {
    const b = windows(tokens, cfg, 987654, i, device);
    const l = model.loss(b.x, b.y);
    total = total === null ? l : total.add(l as never) as Tensor;
  }
  return (await total!.item()) / cfg.valBatches;
}

/** Calibration activations of the targets on `calibBatches` target-domain batches (seeded per run). */
export async function calibrate(
  model: LlamaLM,
  corpus: Corpus,
  cfg: LmSettings,
  seed: number,
  device: DeviceName,
  batchSize = cfg.batchSize,
): Promise<Record<string, LayerData>> {
  return await collectActivations(model, cfg.targets, (m, i) => {
    const { x } = sampleWindows(corpus.train, {
      batchSize,
      seqLen: cfg.seqLen,
      seed: seed + 77,
      step: i + 1,
    });
    m.forward(tensor(x, { shape: [batchSize, cfg.seqLen], dtype: "i32", device }) as I32);
  }, { batches: cfg.calibBatches });
}

/**
 * Full weight gradients of the LM loss on `calibBatches` target-domain training batches (seeded per run), averaged
 * over the batches: the calibration data of gradient-based inits (LoRA-GA).
 */
export async function calibrateGradients(
  model: LlamaLM,
  corpus: Corpus,
  cfg: LmSettings,
  seed: number,
  device: DeviceName,
): Promise<Record<string, LayerData>> {
  const steps = Array.from({ length: cfg.calibBatches }, (_, i) => i + 1);
  return await collectGradients(
    model,
    cfg.targets,
    (m, step: number) => {
      const b = windows(corpus.train, cfg, seed + 55, step, device);
      return m.loss(b.x, b.y);
    },
    steps,
  );
}

/** One fine-tuning run's outcome. */
export interface RunResult {
  label: string;
  seed: number;
  losses: number[];
  gradNorms: number[];
  valLoss: number;
  /** Loss on the source domain after fine-tuning (forgetting), when a source corpus exists. */
  sourceLoss?: number;
  initSeconds: number;
  trainSeconds: number;
  ranks: Record<string, number>;
  /** Per-step sums over layers of ‖A‖, ‖B‖ and ‖s·B·A‖ (when tracked). */
  norms?: { a: number[]; b: number[]; delta: number[] };
  /** Per adapted layer: the initial update `s·B₀·A₀` against the final `s·B·A` (when `compareDelta`). */
  delta?: Record<string, UpdateSimilarity>;
}

/** How one run adapts the model. */
export interface RunSpec {
  /** Name in tables and plots. */
  label: string;
  /** Registered init method. */
  init: string;
  /** Its options. */
  initOptions?: Record<string, unknown>;
  /** rsLoRA scaling. */
  useRslora?: boolean;
  /** LoRA+ ratio lr_B / lr_A (undefined: plain AdamW on A and B). */
  loraPlusRatio?: number;
  /** Override the experiment's rank. */
  rank?: number;
  /** Override the experiment's alpha. */
  alpha?: number;
  /** Record ‖A‖, ‖B‖, ‖ΔW‖ summed over layers every step. */
  trackNorms?: boolean;
  /** Override the experiment's number of calibration batches (data-driven inits). */
  calibBatches?: number;
  /** Save every layer's `s·B·A` right after attaching and compare it with the final one. */
  compareDelta?: boolean;
}

/** Fine-tunes a fresh copy of the base weights with `spec` and records what the experiments report. */
export async function fineTune(
  spec: RunSpec,
  seed: number,
  base: Map<string, { shape: number[]; data: Float32Array }>,
  baseConfig: LlamaLM["config"],
  corpus: Corpus,
  cfg: LmSettings,
  results: ResultsDir,
  device: DeviceName,
  previous?: RunResult,
): Promise<RunResult> {
  const model = LlamaLM.fromWeights(baseConfig, base, { device });
  const method = getInitMethod(spec.init);
  const calibCfg = { ...cfg, calibBatches: spec.calibBatches ?? cfg.calibBatches };
  const t0 = performance.now();
  const acts = method.needs.includes("activations")
    ? await calibrate(model, corpus, calibCfg, seed, device)
    : undefined;
  const grads = method.needs.includes("grads")
    ? await calibrateGradients(model, corpus, calibCfg, seed, device)
    : undefined;
  const data = acts === undefined && grads === undefined ? undefined : mergeLayerData(acts, grads);
  const attached = await attachLora(model, {
    targetModules: cfg.targets,
    rank: spec.rank ?? cfg.rank,
    alpha: spec.alpha ?? cfg.alpha,
    useRslora: spec.useRslora,
    init: spec.init,
    initOptions: spec.initOptions,
    data,
    seed,
  });
  const initSeconds = (performance.now() - t0) / 1000;
  const initialDelta = spec.compareDelta ? await hostDeltas(model) : undefined;
  // Training checkpoints every 50 steps: an interrupted run continues from its last one (same batches, since they
  // are a pure function of seed and step), and the metrics file keeps exactly the steps done.
  const metricsPath = results.file(`metrics/${spec.label}-seed${seed}.jsonl`);
  const ckptPath = results.file(`checkpoints/${spec.label}-seed${seed}.safetensors`);
  Deno.mkdirSync(results.file("checkpoints"), { recursive: true });
  const opt = spec.loraPlusRatio !== undefined
    ? new AdamW(model, loraPlusOptions({ lr: cfg.lr, ratio: spec.loraPlusRatio }))
    : new AdamW(model, { lr: cfg.lr, weightDecay: 0, trainable: LORA_TRAINABLE });
  const sum = (m: LlamaLM, suffix: string) => {
    const parts = Object.entries(loraNorms(m)).filter(([k]) => k.endsWith(suffix)).map(([, v]) => v.square());
    return parts.reduce((a, b) => a.add(b as never) as Tensor<[], "f32">).sqrt();
  };
  const trainer = new Trainer({
    model,
    optimizer: opt,
    batch: (step) => windows(corpus.train, cfg, seed, step, device),
    loss: (m, b) => m.loss(b.x as I32, b.y as I32),
    steps: cfg.steps,
    schedule: cosineSchedule({ totalSteps: cfg.steps, warmupRatio: 0.1 }),
    clipNorm: 1,
    readEvery: 10,
    metrics: metricsPath,
    // Only the adapters and their optimiser state: the base is rebuilt identically (same weights, same seeded init).
    checkpoint: { path: ckptPath, every: 50, trainableOnly: true },
    track: spec.trackNorms
      ? { A: (m) => sum(m, ".A"), B: (m) => sum(m, ".B"), deltaW: (m) => sum(m, ".deltaW") }
      : undefined,
    progress: Deno.stderr.isTerminal() ? `${spec.label} seed ${seed}` : false,
    seed,
  });
  const exists = (path: string) => Deno.stat(path).then(() => true, () => false);
  if (await exists(ckptPath) || await exists(previousCheckpointPath(ckptPath))) {
    const info = await trainer.resume(ckptPath);
    for (const skipped of info.skipped) {
      console.error(`${spec.label} seed ${seed}: passed over "${skipped.path}": ${skipped.reason}`);
    }
    if (info.skipped.length > 0) console.error(`  continued from "${info.path}" (step ${info.step})`);
  } else if (previous !== undefined) {
    throw new Error(
      `cannot make run ${spec.label} seed ${seed} longer: its last checkpoint "${ckptPath}" is gone; remove ` +
        `"${results.file(`runs/${spec.label}-seed${seed}.json`)}" to run it again from the start`,
    );
  }
  const t1 = performance.now();
  await trainer.run();
  const trainSeconds = (performance.now() - t1) / 1000 + (previous?.trainSeconds ?? 0);
  trainer.close();
  const records = readJsonl(metricsPath) as unknown as StepRecord[];
  // The final checkpoint stays (so that --extend can continue the run later); the one before it is not needed.
  await Deno.remove(previousCheckpointPath(ckptPath)).catch(() => {});
  const valLoss = await meanLoss(model, corpus.val, cfg, device);
  const sourceLoss = corpus.source !== undefined
    ? await meanLoss(model, corpus.source, cfg, device)
    : undefined;
  const ranks = Object.fromEntries(Object.entries(attached.perLayer).map(([k, v]) => [k, v.rank]));
  const norms = spec.trackNorms
    ? {
      a: records.map((r) => r["norm/A"]),
      b: records.map((r) => r["norm/B"]),
      delta: records.map((r) => r["norm/deltaW"]),
    }
    : undefined;
  let delta: Record<string, UpdateSimilarity> | undefined;
  if (initialDelta !== undefined) {
    const finalDelta = await hostDeltas(model);
    delta = {};
    for (const [path, d0] of initialDelta) {
      const d1 = finalDelta.get(path)!;
      delta[path] = updateSimilarity(d0.data, d1.data, d0.shape);
    }
  }
  return {
    label: spec.label,
    seed,
    losses: records.map((r) => r.loss),
    gradNorms: records.map((r) => r.grad_norm),
    valLoss,
    sourceLoss,
    initSeconds,
    trainSeconds,
    ranks,
    norms,
    delta,
  };
}

/** Per-layer calibration data with the activations of `a` and the gradients of `b`. */
function mergeLayerData(
  a: Record<string, LayerData> | undefined,
  b: Record<string, LayerData> | undefined,
): Record<string, LayerData> {
  const out: Record<string, LayerData> = {};
  for (const k of new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])) {
    out[k] = { ...a?.[k], ...b?.[k] };
  }
  return out;
}

/** Every adapted layer's current update `s·B·A` on the host, with its `[d_out, d_in]` shape. */
async function hostDeltas(
  model: LlamaLM,
): Promise<Map<string, { data: Float32Array; shape: [number, number] }>> {
  const out = new Map<string, { data: Float32Array; shape: [number, number] }>();
  for (const [path, l] of loraLayers(model)) {
    const d = l.deltaWeight();
    out.set(path, { data: (await d.data()) as Float32Array, shape: [d.shape[0], d.shape[1]] });
  }
  return out;
}

/**
 * A number as a results file stores it: a JSON number, or `"NaN"`, `"Infinity"` or `"-Infinity"` (what
 * `toJson` writes for them); `null` and anything else are refused.
 *
 * @returns The schema (its output is a number).
 */
export function savedNumber(): z.ZodType<number> {
  return z.union([z.number(), z.enum(["NaN", "Infinity", "-Infinity"]).transform(Number)], {
    error: 'expected a number (or "NaN", "Infinity", "-Infinity")',
  }) as unknown as z.ZodType<number>;
}

const num = savedNumber();

/** What `runs/<label>-seed<seed>.json` of an LM experiment holds ({@link RunResult}), for validated reuse. */
export const RUN_RESULT = z.object({
  label: z.string(),
  seed: z.int(),
  losses: z.array(num).min(1),
  gradNorms: z.array(num),
  valLoss: num,
  sourceLoss: num.optional(),
  initSeconds: num,
  trainSeconds: num,
  ranks: z.record(z.string(), z.int().min(0)),
  norms: z.object({ a: z.array(num), b: z.array(num), delta: z.array(num) }).optional(),
  delta: z.record(
    z.string(),
    z.object({
      cosine: num.nullable(),
      spectralDistance: num,
      relativeSpectralDistance: num.nullable(),
      initialSpectralNorm: num,
      finalSpectralNorm: num,
    }),
  ).optional(),
});

/**
 * A finished run's result file, validated against `schema` and checked to be the run `want` describes (its label,
 * seed and number of steps); undefined when the run has not finished. A file that does not match is an error
 * naming it and how to have the run computed again. With `want.extend`, a run shorter than `want.steps` is
 * returned (to be continued); without, it is refused.
 */
export function reuseRun<T extends { label: string; seed: number; losses: number[] }>(
  results: ResultsDir,
  name: string,
  schema: z.ZodType<T>,
  want: { label: string; seed: number; steps: number; extend?: boolean },
): T | undefined {
  const run = results.reuse(name, schema);
  if (run === undefined) return undefined;
  const again = `remove it (rm "${results.file(name)}") and resume again to run it anew`;
  if (run.label !== want.label || run.seed !== want.seed) {
    throw new Error(
      `"${
        results.file(name)
      }" holds run ${run.label} seed ${run.seed}, not ${want.label} seed ${want.seed}; ${again}`,
    );
  }
  const n = run.losses.length;
  if (n > want.steps || (n < want.steps && !want.extend)) {
    throw new Error(
      `"${results.file(name)}" holds a run of ${n} steps but this configuration has ${want.steps}; ${again}`,
    );
  }
  return run;
}

/**
 * The companions the LM experiments' data keys need, checked before anything is loaded or written: `--data` is
 * fine-tuned on by a `--model` read with its `--tokenizer` (the built-in base only knows the generated domains),
 * and `--source` (forgetting) belongs to `--data`.
 */
export function lmCheck(cfg: { model?: string; tokenizer?: string; data?: string; source?: string }): void {
  const problems: string[] = [];
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

/** Runs `specs × seeds`, reusing finished runs saved under `runs/` (so an interrupted experiment resumes). */
export async function runAll(
  specs: readonly RunSpec[],
  seeds: readonly number[],
  ctx: {
    base: Map<string, { shape: number[]; data: Float32Array }>;
    baseConfig: LlamaLM["config"];
    corpus: Corpus;
    cfg: LmSettings;
    results: ResultsDir;
    device: DeviceName;
  },
): Promise<RunResult[]> {
  for (const sub of ["runs", "metrics"]) Deno.mkdirSync(ctx.results.file(sub), { recursive: true });
  const runs: RunResult[] = [];
  const stopListening = exitOnInterrupt(ctx.results, () => runs.length, specs.length * seeds.length);
  for (const spec of specs) {
    for (const seed of seeds) {
      const name = `runs/${spec.label}-seed${seed}.json`;
      const done = reuseRun(ctx.results, name, RUN_RESULT, {
        label: spec.label,
        seed,
        steps: ctx.cfg.steps,
        extend: ctx.cfg.extend,
      });
      if (done !== undefined && done.losses.length === ctx.cfg.steps) {
        runs.push(done);
        console.log(`${spec.label} seed ${seed}: reused ${name}`);
        continue;
      }
      if (done !== undefined) {
        console.log(
          `${spec.label} seed ${seed}: extending ${name} from ${done.losses.length} to ${ctx.cfg.steps} steps`,
        );
      }
      const r = await fineTune(
        spec,
        seed,
        ctx.base,
        ctx.baseConfig,
        ctx.corpus,
        ctx.cfg,
        ctx.results,
        ctx.device,
        done,
      );
      ctx.results.writeJson(name, r);
      runs.push(r);
      console.log(
        `${spec.label} seed ${seed}: final train loss ${r.losses.at(-1)!.toFixed(4)}, val ${
          r.valLoss.toFixed(4)
        }, ` +
          `init ${r.initSeconds.toFixed(2)} s, train ${r.trainSeconds.toFixed(1)} s`,
      );
    }
  }
  stopListening();
  return runs;
}

/**
 * Until the returned function is called, SIGINT (Ctrl-C) and SIGTERM end the process with status 128 + the
 * signal's number after saying how to continue; the handler runs between awaits, so never while a result file
 * is being written. Finished runs are in `runs/`, and `--resume <dir>` reuses them. (A run that throws ends
 * the experiment, so the listeners need no removal on that path.)
 */
function exitOnInterrupt(results: ResultsDir, finished: () => number, total: number): () => void {
  const listening: [Deno.Signal, () => void][] = [];
  for (const [signal, status] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    const handler = () => {
      const saved = results.file("runs");
      console.error(`\n${signal}: stopped with ${finished()} of ${total} runs finished (saved in ${saved});`);
      console.error(`continue with --resume ${results.path}`);
      Deno.exit(status);
    };
    try {
      Deno.addSignalListener(signal, handler);
      listening.push([signal, handler]);
    } catch { /* a signal this platform does not have (SIGTERM on Windows) */ }
  }
  return () => listening.forEach(([signal, handler]) => Deno.removeSignalListener(signal, handler));
}

/** Writes one metrics.jsonl with every step of every run. */
export async function writeCombinedMetrics(results: ResultsDir, runs: readonly RunResult[]): Promise<void> {
  const lines = runs.flatMap((r) =>
    r.losses.map((loss, i) =>
      JSON.stringify({ method: r.label, seed: r.seed, step: i + 1, loss, grad_norm: r.gradNorms[i] })
    )
  );
  await Deno.writeTextFile(results.file("metrics.jsonl"), lines.join("\n") + "\n");
}

/** Mean curve (and min..max band) over the runs of each label, for linePlot. */
export function meanCurves(
  runs: readonly RunResult[],
  labels: readonly string[],
  key: (r: RunResult) => number[],
) {
  return labels.map((m) => {
    const rs = runs.filter((r) => r.label === m);
    const n = Math.min(...rs.map((r) => key(r).length));
    const x = Array.from({ length: n }, (_, i) => i + 1);
    const mean = x.map((_, i) => rs.reduce((s, r) => s + key(r)[i], 0) / rs.length);
    const low = x.map((_, i) => Math.min(...rs.map((r) => key(r)[i])));
    const high = x.map((_, i) => Math.max(...rs.map((r) => key(r)[i])));
    return { name: m, x, y: mean, band: rs.length > 1 ? { low, high } : undefined };
  });
}

/** "reproduced" / "not reproduced" / "inconclusive" for a difference against its spread over seeds. */
export function verdictFor(diff: number, spread: number, seeds: number): string {
  if (seeds < 2) return "inconclusive (one seed: no spread to judge the difference against)";
  if (diff > 2 * spread) return "reproduced";
  if (diff < -2 * spread) return "not reproduced";
  return "inconclusive";
}

/**
 * The configuration keys every LM fine-tuning experiment shares, to spread into its schema (keys listed after
 * the spread override these): seeds, target modules, training length and batches, the base model and data, resume
 * and device. `steps` is the experiment's default training length.
 */
export function lmFields(steps: number) {
  return {
    quick: z.boolean().default(false).describe("small sizes: a few minutes on a 2-core CPU"),
    seeds: distinctList(z.number().int()).default([0, 1, 2]).describe(
      "fine-tuning seeds (mean ± std over them)",
    ),
    targets: distinctList(z.string()).default(["wq", "wk", "wv", "wo", "w1", "w2", "w3"]).describe(
      "LoRA target modules",
    ),
    steps: z.number().int().positive().default(steps).describe("fine-tuning steps"),
    batchSize: z.number().int().positive().default(8).describe("sequences per batch"),
    seqLen: z.number().int().positive().default(64).describe("tokens per sequence"),
    lr: z.number().positive().default(3e-3).describe("AdamW learning rate (cosine, 10% warm-up)"),
    valBatches: z.number().int().positive().default(8).describe("validation batches of the target domain"),
    model: z.string().optional().describe(
      "base model: llama2.c .bin or HF directory (default: pretrain one)",
    ),
    tokenizer: z.string().optional().describe("tokenizer.bin for --model (default: characters)"),
    data: z.string().optional().describe("target-domain text file (default: generated)"),
    pretrainSteps: z.number().int().positive().default(600).describe("steps of the generated base model"),
    resume: z.string().optional().describe("a previous results directory: finished runs are reused"),
    extend: z.boolean().default(false).describe(
      "with --resume: accept a larger --steps; finished runs continue from their last checkpoint (the schedule of " +
        "the new length applies from there) and config.yaml records the extension",
    ),
    device: z.enum(DEVICE_CHOICES).optional().describe(
      "device (default auto: a hardware WebGPU adapter, else wasm; or TESSERA_DEVICE)",
    ),
  };
}

/** The `--quick` preset of the keys in {@link lmFields}: one seed, 40 short steps, the smaller base. */
export const LM_QUICK = {
  seeds: [0],
  steps: 40,
  batchSize: 8,
  seqLen: 32,
  valBatches: 4,
  pretrainSteps: 250,
};
