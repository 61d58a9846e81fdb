/**
 * exp:eva — Does EVA (Paischer et al., arXiv 2410.07170: LoRA's A from an incremental PCA of each layer's input
 * activations, ranks redistributed across layers by explained variance) fine-tune a pretrained LM faster than
 * Noise & Zeros (PEFT's default), PiSSA and CNTLoRA? Where does EVA put its ranks (ρ = 2), what share of training
 * time does its initialisation cost (the paper's claim: under 1%), and how stable are its components across
 * calibration batch sizes and orders?
 *
 *   deno task exp:eva                      # built-in generated data: a small LM pretrained on a synthetic source
 *                                          # domain (cached in .cache/base), fine-tuned on a shifted target domain
 *   deno task exp:eva --quick              # a few minutes on a 2-core CPU
 *   deno task exp:eva --model ../shared/data/models/stories260K/stories260K.bin \
 *     --tokenizer ../shared/data/models/stories260K/tok512.bin --data ../shared/data/text/gutenberg/pg16.txt
 *
 * Writes results/eva/<timestamp>/: config.yaml, metrics.jsonl (every step of every run), runs/*.json (one per
 * method and seed; `--resume <dir>` reuses finished ones), summary.json, summary.md, and PNG + SVG plots.
 *
 * @module
 */
import { z } from "../deps.ts";
import { tensor } from "../lib/tensor/creation.ts";
import type { Tensor } from "../lib/tensor/tensor.ts";
import type { Shape } from "../lib/shape.ts";
import { getDefaultDevice, getWebGPU } from "../lib/runtime/realize.ts";
import { cliConfig } from "../lib/util/config.ts";
import { formatMeanStd, mdTable, meanStd, ResultsDir } from "../lib/util/results.ts";
import { barPlot, linePlot } from "../lib/util/plot.ts";
import { charVocab, generateTextDomains } from "../lib/data/generated.ts";
import { loadText, splitText } from "../lib/data/text.ts";
import { Tokenizer } from "../lib/io/tokenizer.ts";
import { LlamaLM } from "../lib/models/llama.ts";
import { loadLlama } from "../lib/models/load.ts";
import { cachedPretrained } from "../lib/models/cache.ts";
import { sampleWindows } from "../lib/train/batches.ts";
import { Trainer } from "../lib/train/trainer.ts";
import { AdamW } from "../lib/nn/optim/adam.ts";
import { cosineSchedule } from "../lib/nn/optim/schedule.ts";
import { attachLora, LORA_TRAINABLE, loraLayers } from "../lib/lora/mod.ts";
import { collectActivations } from "../lib/init/calibrate.ts";
import { getInitMethod, type LayerData } from "../lib/init/mod.ts";
import type { DeviceName } from "../lib/ir/node.ts";

// ----- configuration (typed defaults; every key can be set by flag or YAML) -----

const METHODS = {
  "lora": { init: "lora", options: {} },
  "eva-rho1": { init: "eva", options: { rho: 1 } },
  "eva-rho2": { init: "eva", options: { rho: 2 } },
  "pissa": { init: "pissa", options: {} },
  "cntlora": { init: "cntlora", options: { mode: "x" } },
} as const;
type MethodLabel = keyof typeof METHODS;

const Config = z.object({
  quick: z.boolean().default(false).describe("small sizes: a few minutes on a 2-core CPU"),
  seeds: z.array(z.number().int()).default([0, 1, 2]).describe("fine-tuning seeds (mean ± std over them)"),
  methods: z.array(z.enum(Object.keys(METHODS) as [MethodLabel, ...MethodLabel[]])).default(
    Object.keys(METHODS) as MethodLabel[],
  ).describe("initialisations to compare"),
  rank: z.number().int().positive().default(8).describe("LoRA rank r"),
  alpha: z.number().positive().default(8).describe("lora_alpha"),
  targets: z.array(z.string()).default(["wq", "wk", "wv", "wo", "w1", "w2", "w3"]).describe(
    "LoRA target modules",
  ),
  steps: z.number().int().positive().default(200).describe("fine-tuning steps"),
  batchSize: z.number().int().positive().default(16).describe("sequences per batch"),
  seqLen: z.number().int().positive().default(64).describe("tokens per sequence"),
  lr: z.number().positive().default(3e-3).describe("AdamW learning rate (cosine, 10% warm-up)"),
  calibBatches: z.number().int().positive().default(8).describe("calibration batches for data-driven inits"),
  valBatches: z.number().int().positive().default(8).describe("validation batches of the target domain"),
  model: z.string().optional().describe("base model: llama2.c .bin or HF directory (default: pretrain one)"),
  tokenizer: z.string().optional().describe("tokenizer.bin for --model (default: characters)"),
  data: z.string().optional().describe("target-domain text file (default: generated)"),
  pretrainSteps: z.number().int().positive().default(600).describe("steps of the generated base model"),
  resume: z.string().optional().describe("a previous results directory: finished runs are reused"),
  device: z.enum(["webgpu", "cpu"]).optional().describe("device (default webgpu, or TESSERA_DEVICE)"),
});
type Config = z.infer<typeof Config>;

const QUICK: Partial<Config> = {
  seeds: [0],
  steps: 40,
  batchSize: 8,
  seqLen: 32,
  calibBatches: 4,
  valBatches: 4,
  pretrainSteps: 250,
};

// ----- data and base model -----

type I32 = Tensor<Shape, "i32">;

interface Corpus {
  /** Target-domain training tokens. */
  train: Int32Array;
  /** Target-domain validation tokens. */
  val: Int32Array;
  /** Source-domain tokens (pretraining / forgetting), when generated. */
  source?: Int32Array;
  /** Vocabulary size. */
  vocab: number;
  /** Where the data came from. */
  description: string;
}

async function loadCorpus(cfg: Config): Promise<Corpus> {
  if (cfg.data !== undefined) {
    const text = await loadText(cfg.data);
    const { train, val } = splitText(text);
    if (cfg.tokenizer !== undefined) {
      const tok = await Tokenizer.load(cfg.tokenizer);
      return {
        train: Int32Array.from(tok.encode(train)),
        val: Int32Array.from(tok.encode(val)),
        vocab: tok.vocabSize,
        description: `${cfg.data} (tokenizer ${cfg.tokenizer})`,
      };
    }
    const v = charVocab(text);
    return {
      train: v.encode(train),
      val: v.encode(val),
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

async function baseModel(
  cfg: Config,
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
  const r = await cachedPretrained(spec, corpus.source!, { device, progress: Deno.stderr.isTerminal() });
  return {
    model: r.model,
    note: `${r.cached ? "cached" : "pretrained"} base in ${r.dir} (${r.seconds.toFixed(1)} s)`,
  };
}

// ----- one fine-tuning run -----

interface RunResult {
  label: MethodLabel;
  seed: number;
  losses: number[];
  gradNorms: number[];
  valLoss: number;
  initSeconds: number;
  trainSeconds: number;
  ranks: Record<string, number>;
}

function windows(tokens: Int32Array, cfg: Config, seed: number, step: number, device: DeviceName) {
  const { x, y } = sampleWindows(tokens, { batchSize: cfg.batchSize, seqLen: cfg.seqLen, seed, step });
  const shape = [cfg.batchSize, cfg.seqLen];
  return {
    x: tensor(x, { shape, dtype: "i32", device }) as I32,
    y: tensor(y, { shape, dtype: "i32", device }) as I32,
  };
}

async function validationLoss(
  model: LlamaLM,
  corpus: Corpus,
  cfg: Config,
  device: DeviceName,
): Promise<number> {
  let total: Tensor | null = null;
  for (let i = 1; i <= cfg.valBatches; i++) {
    const b = windows(corpus.val, cfg, 987654, i, device);
    const l = model.loss(b.x, b.y);
    total = total === null ? l : total.add(l as never) as Tensor;
  }
  return (await total!.item()) / cfg.valBatches;
}

/** Calibration activations of the targets on target-domain batches (seeded per run). */
async function calibrate(
  model: LlamaLM,
  corpus: Corpus,
  cfg: Config,
  seed: number,
  device: DeviceName,
  batchSize = cfg.batchSize,
) {
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

async function fineTune(
  label: MethodLabel,
  seed: number,
  base: Map<string, { shape: number[]; data: Float32Array }>,
  baseConfig: LlamaLM["config"],
  corpus: Corpus,
  cfg: Config,
  results: ResultsDir,
  device: DeviceName,
): Promise<RunResult> {
  const model = LlamaLM.fromWeights(baseConfig, base, { device });
  const spec = METHODS[label];
  const method = getInitMethod(spec.init);
  const t0 = performance.now();
  let data: Record<string, LayerData> | undefined;
  if (method.needs.includes("activations")) data = await calibrate(model, corpus, cfg, seed, device);
  const attached = await attachLora(model, {
    targetModules: cfg.targets,
    rank: cfg.rank,
    alpha: cfg.alpha,
    init: spec.init,
    initOptions: spec.options,
    data,
    seed,
  });
  const initSeconds = (performance.now() - t0) / 1000;
  const metrics = results.metrics({ file: `metrics/${label}-seed${seed}.jsonl` });
  const trainer = new Trainer({
    model,
    optimizer: new AdamW(model, { lr: cfg.lr, weightDecay: 0, trainable: LORA_TRAINABLE }),
    batch: (step) => windows(corpus.train, cfg, seed, step, device),
    loss: (m, b) => m.loss(b.x as I32, b.y as I32),
    steps: cfg.steps,
    schedule: cosineSchedule({ totalSteps: cfg.steps, warmupRatio: 0.1 }),
    clipNorm: 1,
    readEvery: 10,
    metrics,
    progress: Deno.stderr.isTerminal() ? `${label} seed ${seed}` : false,
    seed,
  });
  const t1 = performance.now();
  const records = await trainer.run();
  const trainSeconds = (performance.now() - t1) / 1000;
  metrics.close();
  const valLoss = await validationLoss(model, corpus, cfg, device);
  const ranks = Object.fromEntries(Object.entries(attached.perLayer).map(([k, v]) => [k, v.rank]));
  return {
    label,
    seed,
    losses: records.map((r) => r.loss),
    gradNorms: records.map((r) => r.grad_norm),
    valLoss,
    initSeconds,
    trainSeconds,
    ranks,
  };
}

// ----- EVA component stability -----

/** Mean over layers and components of max_j |⟨a_i, b_j⟩| / (‖a_i‖‖b_j‖): 1 when the component sets agree. */
function componentAgreement(
  a: Record<string, Float32Array>,
  b: Record<string, Float32Array>,
  dIn: Record<string, number>,
) {
  const out: number[] = [];
  for (const k of Object.keys(a)) {
    if (!(k in b)) continue;
    const d = dIn[k];
    const ra = a[k].length / d;
    const rb = b[k].length / d;
    for (let i = 0; i < Math.min(ra, rb); i++) {
      let best = 0;
      const ai = a[k].subarray(i * d, (i + 1) * d);
      const na = Math.hypot(...ai);
      for (let j = 0; j < rb; j++) {
        const bj = b[k].subarray(j * d, (j + 1) * d);
        let dot = 0;
        for (let t = 0; t < d; t++) dot += ai[t] * bj[t];
        best = Math.max(best, Math.abs(dot) / (na * Math.hypot(...bj) || 1));
      }
      out.push(best);
    }
  }
  return out.reduce((s, v) => s + v, 0) / Math.max(out.length, 1);
}

async function evaComponents(
  base: Map<string, { shape: number[]; data: Float32Array }>,
  baseConfig: LlamaLM["config"],
  corpus: Corpus,
  cfg: Config,
  device: DeviceName,
  variant: { batchSize: number; seedShift: number },
) {
  const model = LlamaLM.fromWeights(baseConfig, base, { device });
  const data = await calibrate(model, corpus, cfg, 1000 + variant.seedShift, device, variant.batchSize);
  await attachLora(model, {
    targetModules: cfg.targets,
    rank: cfg.rank,
    alpha: cfg.alpha,
    init: "eva",
    initOptions: { rho: 2 },
    data,
    seed: 0,
  });
  const comps: Record<string, Float32Array> = {};
  const dIn: Record<string, number> = {};
  for (const [path, l] of loraLayers(model)) {
    comps[path] = (await l.lora_A.weight.data()) as Float32Array;
    dIn[path] = l.inFeatures;
  }
  return { comps, dIn };
}

// ----- main -----

function verdict(better: boolean, worse: boolean): string {
  return better ? "reproduced" : worse ? "not reproduced" : "inconclusive";
}

async function main(): Promise<void> {
  const parsed = cliConfig(Config, {
    name: "deno task exp:eva",
    description: "EVA vs Noise & Zeros, PiSSA and CNTLoRA",
  });
  const cfg: Config = parsed.quick ? { ...parsed, ...QUICK, ...pickExplicit(parsed) } : parsed;
  const device: DeviceName = (cfg.device as DeviceName | undefined) ?? getDefaultDevice();
  const adapter = device === "webgpu" ? (await getWebGPU()).description : "cpu";
  const results = cfg.resume !== undefined ? ResultsDir.open(cfg.resume) : ResultsDir.create("eva");
  results.writeConfig({ ...cfg, adapter });
  for (const sub of ["runs", "metrics"]) Deno.mkdirSync(results.file(sub), { recursive: true });
  console.log(`exp:eva → ${results.path}\nadapter: ${adapter}`);

  const corpus = await loadCorpus(cfg);
  const { model: base, note } = await baseModel(cfg, corpus, device);
  console.log(`data: ${corpus.description}\nbase: ${note}`);
  const baseWeights = await base.hostWeights();
  const baseConfig = base.config;
  const baseVal = await validationLoss(base, corpus, cfg, device);

  const runs: RunResult[] = [];
  for (const label of cfg.methods) {
    for (const seed of cfg.seeds) {
      const file = results.file(`runs/${label}-seed${seed}.json`);
      try {
        runs.push(JSON.parse(await Deno.readTextFile(file)));
        console.log(`${label} seed ${seed}: reused ${file}`);
        continue;
      } catch { /* not finished yet */ }
      const r = await fineTune(label, seed, baseWeights, baseConfig, corpus, cfg, results, device);
      results.writeJson(`runs/${label}-seed${seed}.json`, r);
      runs.push(r);
      console.log(
        `${label} seed ${seed}: final train loss ${r.losses.at(-1)!.toFixed(4)}, val ${
          r.valLoss.toFixed(4)
        }, ` +
          `init ${r.initSeconds.toFixed(2)} s, train ${r.trainSeconds.toFixed(1)} s`,
      );
    }
  }

  // Component stability of EVA (ρ = 2): calibration batch size halved/doubled and a different batch order.
  let stability: Record<string, number> | null = null;
  if (cfg.methods.some((m) => m.startsWith("eva"))) {
    const ref = await evaComponents(baseWeights, baseConfig, corpus, cfg, device, {
      batchSize: cfg.batchSize,
      seedShift: 0,
    });
    const half = await evaComponents(baseWeights, baseConfig, corpus, cfg, device, {
      batchSize: Math.max(2, cfg.batchSize / 2),
      seedShift: 0,
    });
    const dbl = await evaComponents(baseWeights, baseConfig, corpus, cfg, device, {
      batchSize: cfg.batchSize * 2,
      seedShift: 0,
    });
    const order = await evaComponents(baseWeights, baseConfig, corpus, cfg, device, {
      batchSize: cfg.batchSize,
      seedShift: 1,
    });
    stability = {
      "batch size ÷2": componentAgreement(ref.comps, half.comps, ref.dIn),
      "batch size ×2": componentAgreement(ref.comps, dbl.comps, ref.dIn),
      "other batches/order": componentAgreement(ref.comps, order.comps, ref.dIn),
    };
  }

  // ----- summary -----
  const by = (label: string) => runs.filter((r) => r.label === label);
  const rows = cfg.methods.map((m) => {
    const rs = by(m);
    const early = rs.map((r) =>
      r.losses.slice(0, Math.ceil(r.losses.length / 4)).reduce((a, b) => a + b, 0) /
      Math.ceil(r.losses.length / 4)
    );
    const initShare = rs.map((r) => (100 * r.initSeconds) / (r.initSeconds + r.trainSeconds));
    return {
      m,
      final: meanStd(rs.map((r) => r.losses.at(-1)!)),
      val: meanStd(rs.map((r) => r.valLoss)),
      early: meanStd(early),
      gn: meanStd(rs.map((r) => r.gradNorms.at(-1)!)),
      initS: meanStd(rs.map((r) => r.initSeconds)),
      share: meanStd(initShare),
    };
  });
  const table = mdTable(
    [
      "method",
      "val loss",
      "final train loss",
      "mean loss, first 25%",
      "final grad norm",
      "init s",
      "init % of train",
    ],
    rows.map((
      r,
    ) => [
      r.m,
      formatMeanStd(r.val),
      formatMeanStd(r.final),
      formatMeanStd(r.early),
      formatMeanStd(r.gn),
      formatMeanStd(r.initS, 3),
      formatMeanStd(r.share, 3),
    ]),
  );
  const get = (m: string) => rows.find((r) => r.m === m);
  const claims: string[] = [];
  const lora = get("lora");
  for (const eva of ["eva-rho2", "eva-rho1"]) {
    const e = get(eva);
    if (lora && e) {
      const gap = lora.early.mean - e.early.mean;
      const noise = Math.hypot(lora.early.std, e.early.std);
      claims.push(
        `EVA (${eva}) converges faster than Noise & Zeros (mean train loss over the first 25% of steps ` +
          `${e.early.mean.toFixed(4)} vs ${lora.early.mean.toFixed(4)}, difference ${gap.toFixed(4)}, ` +
          `combined std over seeds ${noise.toFixed(4)}): **${
            cfg.seeds.length < 2
              ? "inconclusive (one seed: no spread to judge the difference against)"
              : verdict(gap > 2 * noise, gap < -2 * noise)
          }**.`,
      );
    }
  }
  const evaRow = get("eva-rho2") ?? get("eva-rho1");
  if (evaRow) {
    claims.push(
      `EVA's initialisation costs under 1% of training time: it took ${evaRow.share.mean.toFixed(3)}% ` +
        `(${
          evaRow.initS.mean.toFixed(2)
        } s of calibration and PCA against ${cfg.steps} training steps) here: ` +
        `**${
          verdict(evaRow.share.mean < 1, evaRow.share.mean >= 1)
        }** (the share shrinks in proportion to the ` +
        `length of training; the paper's runs are thousands of steps).`,
    );
  }
  const evaRanks = by("eva-rho2")[0]?.ranks;
  if (evaRanks) {
    const values = Object.values(evaRanks);
    const uniform = values.every((v) => v === cfg.rank);
    claims.push(
      `With ρ = 2 EVA redistributes ranks across layers (budget ${cfg.rank} × ${values.length}): ranks range ` +
        `${Math.min(...values)}–${Math.max(...values)}, sum ${values.reduce((a, b) => a + b, 0)}: ` +
        `**${uniform ? "not reproduced (uniform)" : "reproduced"}**.`,
    );
  }
  if (stability) {
    const worst = Math.min(...Object.values(stability));
    claims.push(
      `EVA's components are stable across calibration batch sizes and orders (mean best |cos| per component: ${
        Object.entries(stability).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ")
      }): **${verdict(worst >= 0.9, worst < 0.7)}** (threshold 0.9).`,
    );
  }
  const md = [
    `# exp:eva`,
    ``,
    `Adapter: ${adapter}. Data: ${corpus.description}. Base: ${note}; target-domain validation loss before ` +
    `fine-tuning ${baseVal.toFixed(4)}. Rank ${cfg.rank}, alpha ${cfg.alpha}, targets ${
      cfg.targets.join(", ")
    }, ` +
    `${cfg.steps} steps, seeds ${cfg.seeds.join(", ")}.`,
    ``,
    table,
    ``,
    `## Claims`,
    ``,
    ...claims.map((c) => `- ${c}`),
    ``,
    `Plots: loss.png, grad_norm.png${evaRanks ? ", eva_ranks.png" : ""}${
      stability ? ", eva_stability.png" : ""
    } (SVG beside each).`,
  ].join("\n");
  results.writeMarkdown(md);
  // One metrics.jsonl with every step of every run (the per-run files under metrics/ are written as training goes).
  const lines = runs.flatMap((r) =>
    r.losses.map((loss, i) =>
      JSON.stringify({ method: r.label, seed: r.seed, step: i + 1, loss, grad_norm: r.gradNorms[i] })
    )
  );
  await Deno.writeTextFile(results.file("metrics.jsonl"), lines.join("\n") + "\n");
  results.writeSummary({ config: cfg, adapter, baseValLoss: baseVal, rows, claims, stability });

  // ----- plots -----
  const curve = (key: "losses" | "gradNorms") =>
    cfg.methods.map((m) => {
      const rs = by(m);
      const n = Math.min(...rs.map((r) => r[key].length));
      const x = Array.from({ length: n }, (_, i) => i + 1);
      const mean = x.map((_, i) => rs.reduce((s, r) => s + r[key][i], 0) / rs.length);
      const low = x.map((_, i) => Math.min(...rs.map((r) => r[key][i])));
      const high = x.map((_, i) => Math.max(...rs.map((r) => r[key][i])));
      return { name: m, x, y: mean, band: rs.length > 1 ? { low, high } : undefined };
    });
  await results.savePlot(
    "loss",
    linePlot({
      title: "Fine-tuning loss (mean over seeds, band = min..max)",
      xLabel: "step",
      yLabel: "loss",
      series: curve("losses"),
    }),
  );
  await results.savePlot(
    "grad_norm",
    linePlot({
      title: "Gradient norm",
      xLabel: "step",
      yLabel: "global grad norm",
      series: curve("gradNorms"),
      logY: true,
    }),
  );
  if (evaRanks) {
    const labels = Object.keys(evaRanks).map((k) =>
      k.replace("layers.", "L").replace("attention.", "").replace("feed_forward.", "")
    );
    await results.savePlot(
      "eva_ranks",
      barPlot({
        title: `EVA (ρ = 2) rank allocation (uniform = ${cfg.rank})`,
        labels,
        values: Object.values(evaRanks),
        yLabel: "rank",
      }),
    );
  }
  if (stability) {
    await results.savePlot(
      "eva_stability",
      barPlot({
        title: "EVA component agreement with the reference calibration",
        labels: Object.keys(stability),
        values: Object.values(stability),
        yLabel: "mean best |cos|",
      }),
    );
  }
  console.log(`\n${md}`);
}

/** Keys the user set explicitly on the command line (so --quick does not override them). */
function pickExplicit(cfg: Config): Partial<Config> {
  const out: Record<string, unknown> = {};
  for (const a of Deno.args) {
    const m = /^--([a-zA-Z-]+)/.exec(a);
    if (!m) continue;
    const key = m[1].replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()) as keyof Config;
    if (key in cfg && key !== "quick") out[key] = cfg[key];
  }
  return out as Partial<Config>;
}

if (import.meta.main) await main();
