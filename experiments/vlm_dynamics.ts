/**
 * exp:vlm-dynamics — On a toy LLaVA-style vision-language model (ViT encoder → projector → Llama LM, pretrained
 * in stages and cached in .cache/vlm), how do LoRA, PiSSA, EVA and LoftQ (rank 8, cosine schedule with 10% warm-up,
 * LoRA on the LM) train on a task shifted away from pretraining: loss at step 0 and per step, gradient norm (its
 * level late in training, its peak and its spikes), and how do the visual-token and text-token inputs of each
 * adapted layer differ in variance? Claims judged: PiSSA and LoftQ settle at higher gradient norms than LoRA and EVA;
 * PiSSA starts from a higher loss than LoRA; visual-token inputs have 2–3× the variance of text-token inputs.
 *
 *   deno task exp:vlm-dynamics                 # held-out emoji groups (../shared/data/vl), else held-out colours
 *   deno task exp:vlm-dynamics --quick         # a few minutes on a 2-core CPU
 *   deno task exp:vlm-dynamics --data shapes   # the generated fallback: shapes in colours the base never saw
 *   deno task exp:vlm-dynamics --config experiments/presets/vlm_dynamics_blog.yaml   # the blog's tool settings
 *
 * The `blog` preset (experiments/presets/vlm_dynamics_blog.yaml) takes its training tool's defaults: alpha = 2r,
 * PiSSA with 16 power iterations, EVA on the labelled positions only (PEFT skips targets of -100: visual tokens and
 * padding), and a 30× smaller learning rate (1e-4).
 *
 * Every compared method is a line (`--method NAME=INIT[:key=value,...]`, e.g. `--method pissa4=pissa:niter=4`); the
 * claim compares the default methods by name.
 *
 * Writes results/vlm_dynamics/<timestamp>/: config.yaml, metrics.jsonl, runs/*.json, checkpoints/*.safetensors
 * (`--resume <dir>` reuses finished runs and continues an interrupted one from its last checkpoint, every 25 steps),
 * summary.json, summary.md, and PNG + SVG plots.
 *
 * @module
 */
import { z } from "../deps.ts";
import { type AttachResult, type F32, getInitMethod, namedParameters, type ToyVlm } from "../mod.ts";
import {
  accumulatedText,
  attachMethod,
  barPlot,
  type Claim,
  defaultLabels,
  deviceField,
  distinctList,
  type FineTuneRun,
  fineTuneRunFields,
  formatAgainst,
  formatMeanStd,
  formatMethod,
  formatNumber,
  formatPaired,
  halfWidth95,
  isNoSpread,
  linePlot,
  meanCurves,
  meanStd,
  methodsField,
  type MethodSpec,
  modalityAnalysis,
  type ModalityStats,
  NO_SPREAD,
  PAIRED_RULE,
  type PairedDifference,
  pairedDifference,
  pairedVerdict,
  resolveVlmSource,
  type ResultsDir,
  resumeField,
  resumeOrRun,
  runMain,
  savedNumber,
  seedsNote,
  startExperiment,
  trainResumable,
  type Verdict,
  VLM_DATA_FIELDS,
  vlmCheck,
  type VlmSetup,
  vlmSetup,
  vlmTrainer,
  writeCombinedMetrics,
  writeReport,
} from "../lab/mod.ts";

// ----- configuration (typed defaults; every key can be set by flag or YAML) -----

/** The compared methods (`--method NAME=INIT[:key=value,...]` replaces them). */
const METHODS = ["lora", "pissa", "eva", "loftq"];

const Config = z.object({
  quick: z.boolean().default(false).describe("small sizes: a few minutes on a 2-core CPU"),
  seeds: distinctList(z.int(), {
    default: [0, 1, 2, 3, 4],
    description: "fine-tuning seeds (each pairs the methods on the same batches)",
  }),
  methods: methodsField(METHODS, { provides: ["activations"] }),
  rank: z.number().int().positive().default(8).describe("LoRA rank r"),
  alpha: z.number().positive().default(8).describe("lora_alpha"),
  targets: distinctList(z.string(), {
    default: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
    description: "LoRA target modules (LM only)",
  }),
  steps: z.number().int().positive().default(120).describe("fine-tuning steps"),
  batchSize: z.number().int().positive().default(16).describe("images per batch"),
  // Optional rather than a default of 1, so that the configurations of runs from before it still resume.
  accumulate: z.number().int().positive().optional().describe(
    "batches per optimiser step (gradient accumulation; default 1): the step's gradient is their mean",
  ),
  textLen: z.number().int().positive().default(40).describe("text positions per caption"),
  lr: z.number().positive().default(3e-3).describe("AdamW learning rate (cosine, 10% warm-up)"),
  calibBatches: z.number().int().positive().default(4).describe("calibration batches (EVA, modality stats)"),
  evaPositions: z.enum(["all", "labelled"]).default("all").describe(
    "EVA's calibration positions: all (visual, text, padding) or labelled (targets other than -100, as PEFT)",
  ),
  valBatches: z.number().int().positive().default(4).describe("validation batches"),
  ...VLM_DATA_FIELDS,
  spikeFactor: z.number().gt(1).default(2).describe(
    "a gradient-norm spike: a step above this multiple of the median of the previous 10 steps",
  ),
  resume: resumeField(),
  device: deviceField(),
});
type Config = z.infer<typeof Config>;

const QUICK: Partial<Config> = {
  seeds: [0, 1],
  steps: 40,
  batchSize: 8,
  textLen: 36,
  calibBatches: 2,
  valBatches: 2,
  images: 300,
  pretrainSteps: 100,
};

/** One run's outcome: the shared fields, the losses at step 0, and the modality statistics afterwards. */
interface Run extends FineTuneRun {
  /** The base model's loss on the first training batch (same batch as `losses[0]`, before any update). */
  baseLoss0: number;
  /** The loss on the fine-tuning images after training (fixed batches). */
  fitLoss: number;
  /** Per module type (wq, wk, ...), the mean over layers of ‖s·B₀A₀‖ / ‖W‖ (W: the base weight before the init). */
  initShare: Record<string, number>;
  stats: Record<string, ModalityStats>;
}

/** What runs/*.json holds, for validated reuse. */
const RUN = z.object({
  ...fineTuneRunFields(),
  baseLoss0: savedNumber(),
  fitLoss: savedNumber(),
  initShare: z.record(z.string(), z.number().min(0)),
  stats: z.record(
    z.string(),
    z.object({
      visualVar: savedNumber(),
      textVar: savedNumber(),
      visualMeanSq: savedNumber(),
      textMeanSq: savedNumber(),
      inputGapNorm: savedNumber(),
    }),
  ),
});

// ----- one fine-tuning run -----

/**
 * A fresh copy of the base, its loss on the first training batch, the method's adapters (EVA calibrated on
 * fine-tuning batches, on all or on the labelled positions), AdamW on the adapters (cosine schedule, 10% warm-up,
 * clip 1) over captioning batches; then the validation and fit losses and the per-modality statistics of the
 * adapted layers' inputs.
 */
async function fineTune(method: MethodSpec, seed: number, vlm: VlmSetup, cfg: Config, results: ResultsDir) {
  const model = await vlm.fresh();
  const first = vlm.batch(seed, 1);
  const baseLoss0 = await model.loss(first.images, first.tokens, first.targets).item();
  const t0 = performance.now();
  let data = undefined;
  if (getInitMethod(method.init).needs.includes("activations")) {
    const a = await modalityAnalysis(model, cfg.targets, vlm.captions(seed + 77), vlm.shape);
    data = cfg.evaPositions === "labelled" ? a.labelled : a.activations;
  }
  const attached = await attachMethod(model, method, {
    targets: cfg.targets,
    rank: cfg.rank,
    alpha: cfg.alpha,
    data,
    seed,
  });
  const initSeconds = (performance.now() - t0) / 1000;
  const initShare = await initialUpdateShare(model, vlm.base, attached);
  // Checkpointed every 25 steps: an interrupted run continues from its last checkpoint on --resume.
  const metrics = results.file(`metrics/${method.name}-seed${seed}.jsonl`);
  const checkpoint = results.file(`checkpoints/${method.name}-seed${seed}.safetensors`);
  const trainer = vlmTrainer(vlm, model, {
    method,
    lr: cfg.lr,
    steps: cfg.steps,
    seed,
    accumulate: cfg.accumulate,
    metrics,
    checkpoint,
  });
  const { records, seconds: trainSeconds } = await trainResumable(trainer, {
    label: `${method.name} seed ${seed}`,
    checkpoint,
    metrics,
  });
  // Inputs of the adapted layers after fine-tuning: the LoRA layers' base_layer sees the same inputs.
  const after = await modalityAnalysis(
    model,
    attached.layers.map((p) => `${p}.base_layer`),
    vlm.captions(5000),
    vlm.shape,
  );
  return {
    label: method.name,
    seed,
    losses: records.map((r) => r.loss),
    gradNorms: records.map((r) => r.grad_norm),
    valLoss: await vlm.valLoss(model),
    fitLoss: await vlm.fitLoss(model),
    baseLoss0,
    initShare,
    initSeconds,
    trainSeconds,
    ranks: Object.fromEntries(Object.entries(attached.perLayer).map(([k, v]) => [k, v.rank])),
    stats: Object.fromEntries(
      Object.entries(after.stats).map(([k, v]) => [k.replace(/\.base_layer$/, ""), v]),
    ),
  };
}

// ----- statistics of a run -----

/** Per module type, the mean over layers of ‖s·B₀A₀‖_F / ‖W‖_F, W the layer's weight in the untouched base. */
async function initialUpdateShare(model: ToyVlm, base: ToyVlm, attached: AttachResult) {
  const now = new Map(namedParameters(model));
  const before = new Map(namedParameters(base));
  const sums: Record<string, { total: number; n: number }> = {};
  for (const path of attached.layers) {
    const a = now.get(`${path}.lora_A.weight`) as F32;
    const b = now.get(`${path}.lora_B.weight`) as F32;
    const w = before.get(`${path}.weight`) as F32;
    const delta = await b.matmul(a).square().sum().sqrt().item() * attached.perLayer[path].scale;
    const type = path.split(".").at(-1)!;
    sums[type] ??= { total: 0, n: 0 };
    sums[type].total += delta / await w.square().sum().sqrt().item();
    sums[type].n++;
  }
  return Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v.total / v.n]));
}

function lastQuarterMean(xs: readonly number[]): number {
  const tail = xs.slice(Math.floor(xs.length * 0.75));
  return tail.reduce((a, b) => a + b, 0) / tail.length;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Steps (from the 11th on) whose gradient norm exceeds `factor` × the median of the 10 steps before. */
function gradSpikes(gradNorms: readonly number[], factor: number): number {
  let n = 0;
  for (let i = 10; i < gradNorms.length; i++) {
    if (gradNorms[i] > factor * median(gradNorms.slice(i - 10, i))) n++;
  }
  return n;
}

/** Geometric mean over layers of `f` of a layer's input statistics. */
function layerGeoMean(stats: Record<string, ModalityStats>, f: (s: ModalityStats) => number): number {
  const logs = Object.values(stats).map((s) => Math.log(f(s)));
  return Math.exp(logs.reduce((a, b) => a + b, 0) / logs.length);
}

/** Geometric mean over layers of visual/text input variance. */
function varianceRatio(stats: Record<string, ModalityStats>): number {
  return layerGeoMean(stats, (s) => s.visualVar / s.textVar);
}

/**
 * Geometric mean over layers of the visual tokens' variance over their mean square: near 0 when every visual
 * token is nearly the same vector (a collapsed projector). The variance over all visual tokens bounds the variance
 * across images at each visual position (their mean over positions) from above.
 *
 * @param stats Per adapted layer, its input statistics.
 * @returns The spread.
 */
export function visualSpread(stats: Record<string, ModalityStats>): number {
  return layerGeoMean(stats, (s) => s.visualVar / s.visualMeanSq);
}

const short = (k: string) =>
  k.replace("lm.layers.", "L").replace("attention.", "").replace("feed_forward.", "");

/** Specs under a default label that the claims hold for besides the defaults: the blog's PiSSA. */
const BLOG_VARIANTS = ["pissa=pissa:niter=16"];

/** The margin within which "PiSSA starts from a higher loss than LoRA" reads two starting losses as the same. */
export const HIGHER_START_MARGIN = 1e-3;

/**
 * "PiSSA and LoftQ settle at higher gradient norms than LoRA and EVA", from each method's per-seed mean global
 * gradient norm over the last 25% of steps. Per seed, the difference min over {PiSSA, LoftQ} − max over {LoRA, EVA},
 * judged by the paired rule; inconclusive when any of the four did not run as its default method (the claim names
 * all four, and a comparison over fewer of them is another claim).
 *
 * @param gn Per method that ran as the claim means it, its per-seed gradient norms (same seed order).
 * @param seeds The number of seeds.
 * @returns The claim, and the paired difference when all four ran.
 */
export function settleClaim(
  gn: ReadonlyMap<string, readonly number[]>,
  seeds: number,
): { claim: Claim; d: PairedDifference | null } {
  const high = ["pissa", "loftq"];
  const low = ["lora", "eva"];
  const missing = [...high, ...low].filter((m) => !gn.has(m));
  const rule =
    `per seed (all methods on the same batches), the mean global gradient norm over the last 25% of ` +
    `steps; difference = min over {${high.join(", ")}} − max over {${low.join(", ")}}; ${PAIRED_RULE}; ` +
    `inconclusive unless all four ran; ${seeds} seeds.`;
  const evidence = [...gn].map(([m, v]) => `${m} ${formatMeanStd(meanStd([...v]))}`).join(", ");
  const claim = "PiSSA and LoftQ settle at higher gradient norms than LoRA and EVA.";
  if (missing.length > 0) {
    return {
      claim: {
        claim,
        rule,
        evidence: `${evidence || "—"}; not run as the claim means it: ${missing.join(", ")}.`,
        verdict: "inconclusive",
        note: `the claim names ${[...high, ...low].join(", ")}; ${missing.join(", ")} did not run here`,
      },
      d: null,
    };
  }
  const pick = (ms: string[], f: (...xs: number[]) => number) =>
    Array.from({ length: seeds }, (_, i) => f(...ms.map((m) => gn.get(m)![i])));
  const d = pairedDifference(pick(high, Math.min), pick(low, Math.max));
  return {
    claim: {
      claim,
      rule,
      evidence: `${evidence}; paired difference ${formatPaired(d)}.`,
      verdict: pairedVerdict(d),
    },
    d,
  };
}

/**
 * A row of the per-modality table: the layer, its base statistics to 4 significant digits (the variances of the
 * visual tokens can be 1e-6 where the text tokens' are near 1: fixed decimals printed them as 0), and per method the
 * visual/text ratio after fine-tuning, mean ± std over its runs.
 *
 * @param layer The layer's short name.
 * @param base Its input statistics on the base model.
 * @param after Per method, its runs' statistics of the layer after fine-tuning.
 * @returns The cells.
 */
export function modalityRow(
  layer: string,
  base: ModalityStats,
  after: readonly (readonly ModalityStats[])[],
): string[] {
  return [
    layer,
    formatNumber(base.visualVar),
    formatNumber(base.textVar),
    formatNumber(base.visualVar / base.textVar, 3),
    formatNumber(base.inputGapNorm),
    ...after.map((rs) => formatMeanStd(meanStd(rs.map((s) => s.visualVar / s.textVar)), 3)),
  ];
}

// ----- main -----

/** The range of variance ratios (visual over text) {@link varianceClaim} checks the interval against. */
const VARIANCE_RANGE: readonly [number, number] = [2, 3];

/**
 * Below this visual spread (variance over mean square of the visual tokens, geometric mean over adapted layers) in
 * any draw, {@link varianceClaim} reads the visual tokens as collapsed: nearly one vector for every image.
 */
export const COLLAPSE_SPREAD = 0.01;

/**
 * "Visual-token inputs of the adapted LM layers have 2–3× the variance of text-token inputs", judged by the 95% t
 * interval of the mean ratio over draws: reproduced when it lies inside [2, 3], not reproduced when it lies outside,
 * inconclusive otherwise, and inconclusive when the visual tokens collapsed in any draw (their variance under
 * {@link COLLAPSE_SPREAD} of their mean square: the ratio then measures the projector's collapse, not how the two
 * modalities differ) or when every draw gives the same ratio (`isNoSpread`: the draws then repeat one measurement,
 * and the interval, a point, measures no uncertainty). The interval's ends are printed on the side of 2 and 3 their
 * values are on.
 *
 * @param ratios Per draw (one per seed), the geometric mean over adapted layers of the variance ratio.
 * @param context The calibration batches of a draw, the mean ratio over draws of each layer (for the evidence), and
 * per draw the geometric mean over adapted layers of the visual tokens' variance / mean square.
 * @returns The claim.
 */
export function varianceClaim(
  ratios: readonly number[],
  { calibBatches, perLayer, spreads }: {
    calibBatches: number;
    perLayer: Readonly<Record<string, number>>;
    spreads: readonly number[];
  },
): Claim {
  const [low, high] = VARIANCE_RANGE;
  const n = ratios.length;
  const s = meanStd(ratios);
  const half = halfWidth95(s.std, n);
  const lo = s.mean - half;
  const hi = s.mean + half;
  const collapsed = spreads.some((v) => !(v >= COLLAPSE_SPREAD));
  const same = isNoSpread(s.std, s.mean, n);
  const verdict: Verdict = collapsed || same
    ? "inconclusive"
    : lo >= low && hi <= high
    ? "reproduced"
    : hi < low || lo > high
    ? "not reproduced"
    : "inconclusive";
  const per = Object.entries(perLayer).map(([l, v]) => `${l} ${formatNumber(v, 3)}`);
  const spread = spreads.map((v) => formatNumber(v, 3)).join(", ");
  return {
    claim:
      `Visual-token inputs of the adapted LM layers have ${low}–${high}× the variance of text-token inputs.`,
    rule: `on the base model, per draw of ${calibBatches} fine-tuning batches (one draw per seed), the ` +
      `geometric mean over adapted layers of (mean per-feature variance over visual tokens) / (the same over ` +
      `labelled text tokens); reproduced when the 95% t interval of the mean ratio lies inside [${low}, ${high}], ` +
      `not reproduced when it lies outside, inconclusive otherwise; inconclusive too when the visual tokens ` +
      `collapsed in any draw: the geometric mean over adapted layers of their variance / their mean square under ` +
      `${COLLAPSE_SPREAD} (nearly one vector for every image), and when every draw gives the same ratio (std 0, ` +
      `or rounding noise of the mean); ${n} draws.`,
    evidence: `ratio ${formatMeanStd(s, 3)} (95% interval ${formatAgainst(lo, VARIANCE_RANGE, 3)}..${
      formatAgainst(hi, VARIANCE_RANGE, 3)
    }); per layer (mean over draws): ${per.join(", ")}; visual variance / mean square per draw: ${spread}.`,
    verdict,
    note: collapsed
      ? `the visual tokens collapsed (variance / mean square under ${COLLAPSE_SPREAD} in a draw): the ratio ` +
        `measures the projector's collapse, not the modalities`
      : same
      ? `the ratio of the ${n} draws: ${NO_SPREAD}`
      : undefined,
  };
}

async function main(): Promise<void> {
  const { cfg, device, adapter, results } = await startExperiment(Config, {
    task: "vlm-dynamics",
    dir: "vlm_dynamics",
    description: "LoRA / PiSSA / EVA / LoftQ training dynamics on a toy VLM",
    quick: QUICK,
    check: (c) => {
      vlmCheck(c);
      const calibrated = c.methods.filter((m) => getInitMethod(m.init).needs.includes("activations"));
      if (c.evaPositions !== "all" && calibrated.length === 0) {
        throw new RangeError(
          `--eva-positions ${c.evaPositions}: used only by methods calibrated on activations (e.g. eva), and ` +
            `--methods ${c.methods.map((m) => m.name).join(",")} has none`,
        );
      }
    },
    resolved: (c) => ({ data: resolveVlmSource(c.data) }),
  });
  const vlm = await vlmSetup(cfg, device);
  const baseVal = await vlm.valLoss(vlm.base);
  const baseFit = await vlm.fitLoss(vlm.base);
  // One calibration draw per seed: the variance claim's spread is over draws of fine-tuning images.
  const baseDraws: Record<string, ModalityStats>[] = [];
  for (const seed of cfg.seeds) {
    baseDraws.push(
      (await modalityAnalysis(vlm.base, cfg.targets, vlm.captions(5000 + seed), vlm.shape)).stats,
    );
  }
  const baseStats = baseDraws[0];

  const keys = cfg.methods.flatMap((method) =>
    cfg.seeds.map((seed) => ({ label: method.name, seed, method }))
  );
  const runs: Run[] = await resumeOrRun(results, keys, {
    schema: RUN,
    steps: cfg.steps,
    describe: (r) =>
      `loss at step 0 ${r.losses[0].toFixed(4)} (base ${r.baseLoss0.toFixed(4)}), val ${
        r.valLoss.toFixed(4)
      }, last-25% grad norm ${lastQuarterMean(r.gradNorms).toFixed(4)}, train ${r.trainSeconds.toFixed(1)} s`,
  }, (k) => fineTune(k.method, k.seed, vlm, cfg, results));

  // ----- per-method rows -----
  const names = cfg.methods.map((m) => m.name);
  const bySeed = (m: string, f: (r: Run) => number) =>
    cfg.seeds.map((seed) => f(runs.find((r) => r.label === m && r.seed === seed)!));
  const rows = names.map((m) => ({
    m,
    val: meanStd(bySeed(m, (r) => r.valLoss)),
    fit: meanStd(bySeed(m, (r) => r.fitLoss)),
    loss0: meanStd(bySeed(m, (r) => r.losses[0])),
    loss0MinusBase: meanStd(bySeed(m, (r) => r.losses[0] - r.baseLoss0)),
    gnLast: meanStd(bySeed(m, (r) => lastQuarterMean(r.gradNorms))),
    gnFirst: meanStd(bySeed(m, (r) => r.gradNorms[0])),
    gnPeak: meanStd(bySeed(m, (r) => Math.max(...r.gradNorms))),
    spikes: meanStd(bySeed(m, (r) => gradSpikes(r.gradNorms, cfg.spikeFactor))),
    initShare: Object.keys(runs.find((r) => r.label === m)!.initShare).map((k) =>
      `${k} ${formatNumber(meanStd(bySeed(m, (r) => r.initShare[k])).mean, 3)}`
    ).join(", "),
  }));
  // A claim names methods by their default labels; it is judged only where the label still runs that method, or
  // the variant the blog ran (PiSSA with 16 power iterations, as in experiments/presets/vlm_dynamics_blog.yaml).
  const standard = defaultLabels(METHODS, cfg.methods, BLOG_VARIANTS);
  const has = (m: string) => names.includes(m) && standard.ok(m);
  const n = cfg.seeds.length;
  const secondsPerRun = meanStd(runs.map((r) => r.trainSeconds)).mean;
  const cost = (d: PairedDifference) => seedsNote(d, names.length, secondsPerRun);

  // ----- claims (rules fixed here, before the runs are read) -----
  const claims: (Claim | string)[] = [];
  {
    const gn = new Map(
      ["pissa", "loftq", "lora", "eva"].filter(has).map((
        m,
      ) => [m, bySeed(m, (r) => lastQuarterMean(r.gradNorms))]),
    );
    const c = settleClaim(gn, n);
    claims.push(
      c.claim.verdict === "inconclusive" && c.d !== null ? { ...c.claim, note: cost(c.d) } : c.claim,
    );
  }
  if (has("pissa") && has("lora")) {
    // PiSSA moves W's top-r part into s·BA, so its output at step 0 is the base's up to rounding: a higher
    // starting loss would need a different alpha or a loss of precision.
    const d = pairedDifference(bySeed("pissa", (r) => r.losses[0]), bySeed("lora", (r) => r.losses[0]));
    // Above the margin reproduces it; below it (the same start, or a lower one) refutes it.
    const verdict = pairedVerdict(d, HIGHER_START_MARGIN);
    claims.push({
      claim: `PiSSA starts from a higher loss than LoRA.`,
      rule:
        `per seed, the loss of the first training batch before any update (the same batch for both), PiSSA − ` +
        `LoRA; reproduced when the 95% t interval of the mean lies above ${HIGHER_START_MARGIN}, not reproduced when it lies ` +
        `below ${HIGHER_START_MARGIN} (the same start, or a lower one), inconclusive otherwise, and inconclusive ` +
        `when every seed gives the same values (neither run of a pair varies over the seeds, up to rounding: the seeds ` +
        `then repeat one measurement); ${n} seeds.`,
      evidence: `loss at step 0: ${
        rows.map((r) => `${r.m} ${formatMeanStd(r.loss0)}`).join(", ")
      }; minus the ` +
        `base model's on the same batch: ${
          rows.map((r) => `${r.m} ${formatNumber(r.loss0MinusBase.mean, 3)}`).join(", ")
        }; paired difference PiSSA − LoRA ${formatPaired(d, 4, { against: [HIGHER_START_MARGIN] })}.`,
      verdict,
      note: verdict === "inconclusive" ? cost(d) : undefined,
    });
  }
  const varianceRatios = baseDraws.map(varianceRatio);
  const visualSpreads = baseDraws.map(visualSpread);
  claims.push(varianceClaim(varianceRatios, {
    calibBatches: cfg.calibBatches,
    spreads: visualSpreads,
    perLayer: Object.fromEntries(
      Object.keys(baseStats).map((
        l,
      ) => [short(l), meanStd(baseDraws.map((b) => b[l].visualVar / b[l].textVar)).mean]),
    ),
  }));

  // ----- report -----
  const layers = Object.keys(baseStats);
  writeCombinedMetrics(results, runs);
  if (standard.note !== null) claims.push(standard.note);
  const curve = (key: "losses" | "gradNorms") => meanCurves(runs, names, (r) => r[key]);
  await writeReport(results, {
    title: "exp:vlm-dynamics",
    setting:
      `Adapter: ${adapter}. Data: pretraining ${vlm.pre.description}; fine-tuning ${vlm.ft.description}; ` +
      `validation ${vlm.val.description}. Shift: ${vlm.shift}. Base: ${vlm.note}. Before fine-tuning: validation ` +
      `caption loss ${baseVal.toFixed(4)}, fit loss (fine-tuning images) ${baseFit.toFixed(4)}. Methods: ${
        cfg.methods.map(formatMethod).join("; ")
      }. Rank ${cfg.rank}, alpha ${cfg.alpha}, targets ${cfg.targets.join(", ")} (LM), ${cfg.steps} steps, ` +
      `batch ${cfg.batchSize} images${
        accumulatedText(cfg.accumulate)
      }, cosine schedule with 10% warm-up, lr ${cfg.lr}, clip 1, ` +
      `validation batches ${cfg.valBatches}, calibration batches ${cfg.calibBatches}, EVA on ${
        cfg.evaPositions === "labelled" ? "the labelled positions (targets ≠ -100)" : "all positions"
      }, seeds ${cfg.seeds.join(", ")} (each seed: the same batches for every method).`,
    tables: [
      {
        columns: [
          "method",
          "loss at step 0",
          "step 0 − base",
          "val loss",
          "fit loss",
          "grad norm, step 1",
          "peak grad norm",
          `spikes (> ${cfg.spikeFactor}× median of previous 10)`,
          "mean grad norm, last 25%",
          "‖s·B₀A₀‖/‖W‖ per module type (mean over its layers, then seeds)",
        ],
        rows: rows.map((r) => [
          r.m,
          formatMeanStd(r.loss0),
          formatMeanStd(r.loss0MinusBase, 3),
          formatMeanStd(r.val),
          formatMeanStd(r.fit),
          formatMeanStd(r.gnFirst),
          formatMeanStd(r.gnPeak),
          formatMeanStd(r.spikes, 2),
          formatMeanStd(r.gnLast),
          r.initShare,
        ]),
      },
      {
        heading: "Per-modality input statistics of the adapted layers",
        note:
          `Variance = mean over input features of the variance over tokens of one modality (visual: the ` +
          `${vlm.base.visualTokens} projected image tokens; text: the caption tokens, padding excluded). Base ` +
          `columns: the first calibration draw.`,
        columns: [
          "layer",
          "visual var (base)",
          "text var (base)",
          "visual/text",
          "‖mean_t − mean_v‖ (base)",
          ...names.map((m) => `visual/text after ${m}`),
        ],
        rows: layers.map((l) =>
          modalityRow(
            short(l),
            baseStats[l],
            names.map((m) => runs.filter((r) => r.label === m && r.stats[l]).map((r) => r.stats[l])),
          )
        ),
      },
    ],
    claims,
    plots: {
      loss: linePlot({
        title: "Caption loss (mean over seeds, band = min..max)",
        xLabel: "step",
        yLabel: "loss",
        series: curve("losses"),
      }),
      grad_norm: linePlot({
        title: "Gradient norm",
        xLabel: "step",
        yLabel: "global grad norm",
        series: curve("gradNorms"),
        logY: true,
      }),
      modality_variance: barPlot({
        title: "Input variance per adapted layer (base model)",
        labels: layers.map(short),
        groups: [
          { name: "visual tokens", values: layers.map((l) => baseStats[l].visualVar) },
          { name: "text tokens", values: layers.map((l) => baseStats[l].textVar) },
        ],
        yLabel: "mean per-feature variance",
      }),
    },
    data: {
      config: cfg,
      adapter,
      shift: vlm.shift,
      baseValLoss: baseVal,
      baseFitLoss: baseFit,
      rows,
      baseStats,
      // Per calibration draw (seed order), the variance claim's ratio and the visual tokens' variance / mean square.
      varianceRatios,
      visualSpreads,
    },
  });
}

if (import.meta.main) await runMain("vlm-dynamics", main);
