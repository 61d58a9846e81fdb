/**
 * exp:cntlora — CNTLoRA (Das et al., arXiv 2507.08044: LoRA initialised from a closed-form target weight solved from
 * constraints on calibration activations, modes X = cross, S = self, Sh = shift, optionally with variance-based rank
 * allocation VAS) against EVA, CorDA, LoRA-GA, PiSSA, OLoRA and LoRA (Noise & Zeros) when fine-tuning a pretrained
 * LM on a target domain. Reported, after the paper's tables: the final target-domain validation loss (Table 1); the
 * cosine similarity and spectral-norm distance between the initial update ΔW₀ = s·B₀·A₀ and the final ΔW = s·B·A per
 * module type and, per matrix, the cosine of A₀ with the final A and of B₀ with the final B (so that LoRA and EVA,
 * whose ΔW₀ is 0, are compared too) with the distance travelled ‖ΔW − ΔW₀‖ in units of ‖ΔW₀‖ and of ‖ΔW‖ (Table 2);
 * CNTLoRA-X with 1, 2, 4 and all calibration batches (Table 3; one batch gives one W_tar of Eq. 18) three ways: the
 * literal Gram matrix XXᵀ (whose initial update grows with the data), XXᵀ/b, and XXᵀ with ‖s·B₀·A₀‖/‖W‖ held at
 * `fixedNorm`; initialisation time as % of training time (Table 4); the ranks VAS allocates; and, for every method,
 * the initial update's size ‖s·B₀·A₀‖_F/‖W‖_F per module type and the step-1 gradient norm, with LoRAM's thesis that
 * they order the early loss. Every claim is judged by a rule fixed here, on differences paired by seed.
 *
 *   deno task exp:cntlora                  # generated data: a small LM pretrained on a synthetic source domain
 *                                          # (cached in .cache/base), fine-tuned on a shifted target domain
 *   deno task exp:cntlora --quick          # a few minutes on a 2-core CPU
 *   deno task exp:cntlora --model ../shared/data/models/stories260K/stories260K.bin \
 *     --tokenizer ../shared/data/models/stories260K/tok512.bin --data ../shared/data/text/gutenberg/pg16.txt
 *
 * Writes results/cntlora/<timestamp>/: config.yaml, metrics.jsonl, runs/*.json (one per method and seed; `--resume
 * <dir>` reuses finished ones), summary.json, summary.md, and PNG + SVG plots.
 *
 * @module
 */
import { z } from "../deps.ts";
import {
  type LlamaLM,
  loraLayers,
  NonFiniteError,
  readJsonl,
  type StepRecord,
  type UpdateSimilarity,
  updateSimilarity,
} from "../mod.ts";
import {
  type AdapterComparison,
  adapterStates,
  attachMethod,
  barPlot,
  checkDerivedLabels,
  type Claim,
  compareAdapters,
  defaultLabels,
  distinctList,
  type FineTuneRun,
  fineTuneRunFields,
  formatAgainst,
  formatMeanStd,
  formatMethod,
  formatNumber,
  formatSpreadEnds,
  heatmap,
  lastTenthText,
  linePlot,
  LM_QUICK,
  LM_SETUP_REVISION,
  lmBatchText,
  lmCheck,
  lmFields,
  type LmSetup,
  lmSetup,
  lmTrainer,
  meanCurves,
  type MeanStd,
  meanStd,
  methodsField,
  type MethodSpec,
  moduleType,
  pairedClaim,
  pairedRule,
  pairedSpreadVerdict,
  type ResultsDir,
  resumeOrRun,
  runMain,
  savedNumber,
  startExperiment,
  thesisClaims,
  trainResumable,
  updateMagnitudes,
  weightNorms,
  writeCombinedMetrics,
  writeReport,
} from "../lab/mod.ts";

// ----- configuration (typed defaults; every key can be set by flag or YAML) -----

/**
 * The compared initialisations (`--method NAME=INIT[:key=value,...]` replaces them). CNTLoRA keeps the base untouched
 * (B·A = ΔW_r, as the paper). The calibration-batch runs (Table 3) repeat the method named `cntlora-x`.
 */
const METHODS = [
  "cntlora-x=cntlora:mode=x",
  "cntlora-s=cntlora:mode=s",
  "cntlora-sh=cntlora:mode=sh",
  "cntlora-x-vas=cntlora:mode=x,vas=true",
  "cntlora-s-vas=cntlora:mode=s,vas=true",
  "cntlora-sh-vas=cntlora:mode=sh,vas=true",
  "eva",
  "corda",
  "lora-ga",
  "pissa",
  "olora",
  "lora",
];

const Config = z.object({
  ...lmFields(80),
  methods: methodsField(METHODS, { provides: ["activations", "grads"] }),
  calibCounts: distinctList(z.int().positive(), {
    default: [1, 2, 4],
    allowEmpty: true,
    description: "calibration batch counts for CNTLoRA-X (Table 3), besides all (= calibBatches); [] to skip",
  }),
  rank: z.number().int().positive().default(8).describe("LoRA rank r (VAS budget r × #layers)"),
  alpha: z.number().positive().default(16).describe("lora_alpha (the paper's α = 2r: s = 2)"),
  calibBatches: z.number().int().positive().default(8).describe(
    "calibration batches of the data-driven inits (all)",
  ),
  fixedNorm: z.number().positive().default(0.2).describe(
    "Table 3's third family: CNTLoRA-X (literal Gram) rescaled to ‖s·B₀·A₀‖_F = fixedNorm·‖W‖_F in every layer",
  ),
});
type Config = z.infer<typeof Config>;

const QUICK: Partial<Config> = { ...LM_QUICK, calibBatches: 4 };

/**
 * A run: the shared fields; per adapted layer, the initial update `s·B₀·A₀` against the final `s·B·A` and the
 * per-matrix comparison; the initial update's size per module type.
 */
interface Run extends FineTuneRun {
  delta: Record<string, UpdateSimilarity>;
  compare: Record<string, AdapterComparison>;
  magnitude: Record<string, number>;
  /** Mean accuracy on the test domains (sentiment task). */
  accuracy: number | undefined;
  /** The step whose loss or gradient was not finite, where training stopped (its val loss is then NaN). */
  divergedAt?: number;
}

/** What runs/*.json holds, for validated reuse. */
const RUN = z.object({
  ...fineTuneRunFields(),
  delta: z.record(
    z.string(),
    z.object({
      cosine: savedNumber({ nullable: true }),
      spectralDistance: savedNumber(),
      relativeSpectralDistance: savedNumber({ nullable: true }),
      initialSpectralNorm: savedNumber(),
      finalSpectralNorm: savedNumber(),
    }),
  ),
  compare: z.record(
    z.string(),
    z.object({
      cosA: savedNumber({ nullable: true }),
      cosB: savedNumber({ nullable: true }),
      cosDelta: savedNumber({ nullable: true }),
      cosTravel: savedNumber({ nullable: true }),
      initNorm: savedNumber(),
      travelled: savedNumber(),
      travelledOverInit: savedNumber({ nullable: true }),
      travelledOverFinal: savedNumber({ nullable: true }),
    }),
  ),
  magnitude: z.record(z.string(), z.number()),
  divergedAt: z.int().optional(),
  accuracy: savedNumber({ optional: true }),
});

// ----- one fine-tuning run -----

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

/** `values` filled up to `n` entries with NaN. */
const padded = (
  values: number[],
  n: number,
) => [...values, ...new Array(Math.max(0, n - values.length)).fill(NaN)];

/** The validation loss and, with the sentiment task, the accuracy of a fine-tuned model, as run fields. */
async function evaluation(
  lm: LmSetup,
  model: LlamaLM,
): Promise<{ valLoss: number; accuracy: number | undefined }> {
  const e = await lm.evaluate(model);
  return { valLoss: e.loss, accuracy: e.accuracy };
}

/**
 * A fresh copy of the base, the method's adapters (calibrated on `calibBatches` target batches), the initial update
 * ΔW₀ kept on the host, AdamW on the adapters (cosine schedule, 10% warm-up, clip 1) over target-domain batches
 * checkpointed every 50 steps; then the validation loss and ΔW₀ against the final ΔW per layer.
 */
async function fineTune(
  label: string,
  method: MethodSpec,
  calibBatches: number,
  seed: number,
  lm: LmSetup,
  cfg: Config,
  results: ResultsDir,
  previous?: Run,
): Promise<Run> {
  const model = lm.fresh();
  const weights = await weightNorms(model, cfg.targets);
  const t0 = performance.now();
  const data = await lm.calibration(model, method.init, seed, { batches: calibBatches });
  const attached = await attachMethod(model, method, {
    targets: cfg.targets,
    rank: cfg.rank,
    alpha: cfg.alpha,
    data,
    seed,
  });
  const initSeconds = (performance.now() - t0) / 1000;
  const initial = await hostDeltas(model);
  const start = await adapterStates(model);
  const { trainer, ...paths } = lmTrainer(lm, model, {
    method,
    lr: cfg.lr,
    steps: cfg.steps,
    seed,
    accumulate: cfg.accumulate,
    name: `${label}-seed${seed}`,
    label: `${label} seed ${seed}`,
    results,
  });
  // A run whose loss or gradient stops being finite (an initial update far larger than W can do that) is kept
  // as diverged: its losses up to there, a NaN validation loss, and the step.
  let divergedAt: number | undefined;
  const { records, seconds } = await trainResumable(trainer, {
    label: `${label} seed ${seed}`,
    previous,
    ...paths,
  }).catch((err) => {
    if (!(err instanceof NonFiniteError)) throw err;
    divergedAt = err.step;
    // The trainer's own clock: training only, as for a run that finishes (t0 was taken before calibration).
    const seconds = trainer.trainSeconds;
    trainer.close();
    return {
      // Up to the step that failed, its non-finite values as NaN (a run that fails at step 1 keeps that step).
      records: (readJsonl(paths.metrics) as unknown as StepRecord[])
        .filter((r) => r.step <= err.step).map((
          r,
        ) => ({
          ...r,
          loss: Number(r.loss),
          grad_norm: Number(r.grad_norm),
        })),
      seconds,
    };
  });
  const final = await hostDeltas(model);
  const delta: Record<string, UpdateSimilarity> = {};
  for (const [path, d0] of initial) delta[path] = updateSimilarity(d0.data, final.get(path)!.data, d0.shape);
  const end = await adapterStates(model);
  const compare: Record<string, AdapterComparison> = {};
  for (const [path, s0] of start) compare[path] = compareAdapters(s0, end.get(path)!);
  return {
    label,
    seed,
    // A diverged run's steps after the failure are NaN, so every run file holds `steps` values.
    losses: padded(records.map((r) => r.loss), cfg.steps),
    gradNorms: padded(records.map((r) => r.grad_norm), cfg.steps),
    ...(divergedAt === undefined ? await evaluation(lm, model) : { valLoss: NaN, accuracy: undefined }),
    initSeconds,
    trainSeconds: seconds,
    ranks: Object.fromEntries(Object.entries(attached.perLayer).map(([k, v]) => [k, v.rank])),
    delta,
    compare,
    magnitude: updateMagnitudes(start, weights),
    ...(divergedAt === undefined ? {} : { divergedAt }),
  };
}

/** Mean of the finite, non-null values, or null. */
function meanOf(values: readonly (number | null)[]): number | null {
  const ok = values.filter((v): v is number => v !== null && Number.isFinite(v));
  return ok.length === 0 ? null : ok.reduce((a, b) => a + b, 0) / ok.length;
}

// ----- main -----

/** The smallest per-seed difference of a cosine or a relative distance that a Table 2 claim counts. */
const COS_THRESHOLD = 0.01;

/** A run as {@link steadyPairedClaim} reads it: its method, its seed and the step it diverged at, if it did. */
export interface SteadyRun {
  /** The run's method. */
  readonly label: string;
  /** Its seed. */
  readonly seed: number;
  /** The step whose loss was not finite (the run kept the last good weights), if any. */
  readonly divergedAt?: number;
}

/**
 * A paired claim (`pairedClaim`) that `value` of method `a` exceeds that of method `b`, over the seeds where neither
 * run diverged. A diverged run keeps the weights of its last good step, so a statistic of how far the adapter moved
 * describes a run that stopped, not one that trained. The rule says that diverged runs are left out and counts the
 * seeds left (fewer than 3: inconclusive); the note names the runs left out.
 *
 * @param runs Every run of the experiment.
 * @param opts The claim, the statistic in words, the two methods, the per-run value, the seeds, a note and the
 *   threshold of the paired rule.
 * @returns The claim.
 */
export function steadyPairedClaim<R extends SteadyRun>(
  runs: readonly R[],
  opts: {
    claim: string;
    stat: string;
    a: string;
    b: string;
    value: (r: R) => number;
    seeds: readonly number[];
    note?: string;
    threshold?: number;
  },
): Claim {
  const run = (label: string, seed: number) => runs.find((r) => r.label === label && r.seed === seed)!;
  const diverged = opts.seeds.flatMap((s) =>
    [opts.a, opts.b].map((l) => run(l, s)).filter((r) => r.divergedAt !== undefined)
  );
  const kept = opts.seeds.filter((s) => !diverged.some((r) => r.seed === s));
  const left = diverged.length === 0
    ? ""
    : `Left out (diverged): ${
      diverged.map((r) => `${r.label} seed ${r.seed} at step ${r.divergedAt}`).join(", ")
    }; ${kept.length} of ${opts.seeds.length} seeds remain.`;
  return pairedClaim(
    opts.claim,
    `${opts.stat}, over the seeds where neither run diverged`,
    kept.map((s) => opts.value(run(opts.a, s))),
    kept.map((s) => opts.value(run(opts.b, s))),
    [opts.note ?? "", left].filter(Boolean).join(" ") || undefined,
    opts.threshold,
  );
}

/**
 * "The best CNTLoRA variant beats the best other initialisation on target val loss" (Table 1): the best of each group
 * is the method with the lowest mean val loss over seeds, then the two are compared by the paired rule. A method
 * whose mean is not finite (a seed diverged) cannot be ranked: the claim is inconclusive while any such method is in
 * either group, and the note names them (leaving one out could drop the best of its group).
 *
 * @param cnt The CNTLoRA rows: each method and its mean val loss.
 * @param other The other methods' rows.
 * @param perSeed A method's per-seed value of a statistic of its runs (val loss here).
 * @returns The claim.
 */
export function bestOfClaim<R extends { valLoss: number }>(
  cnt: readonly { m: string; val: MeanStd }[],
  other: readonly { m: string; val: MeanStd }[],
  perSeed: (label: string, f: (r: R) => number) => number[],
): Claim {
  const unranked = [...cnt, ...other].filter((r) => !Number.isFinite(r.val.mean)).map((r) => r.m);
  const best = (rs: readonly { m: string; val: MeanStd }[]) =>
    rs.filter((r) => Number.isFinite(r.val.mean)).reduce<{ m: string; val: MeanStd } | null>(
      (a, b) => (a === null || b.val.mean < a.val.mean ? b : a),
      null,
    );
  const stat =
    "target val loss of the best other minus the best CNTLoRA variant (each the lowest mean of its " +
    "group; a group with a method whose mean is not finite cannot be ranked: inconclusive)";
  const bestCnt = best(cnt);
  const bestOther = best(other);
  const claim = (a: string, b: string) =>
    `The best CNTLoRA variant beats the best other initialisation on target val loss (Table 1: ${a} vs ${b}).`;
  if (unranked.length > 0 || bestCnt === null || bestOther === null) {
    return {
      claim: claim(bestCnt?.m ?? "—", bestOther?.m ?? "—"),
      rule: pairedRule(stat, cnt.length === 0 ? 0 : perSeed(cnt[0].m, (r) => r.valLoss).length),
      evidence: `mean val loss not finite (a seed diverged): ${unranked.join(", ")}.`,
      verdict: "inconclusive",
      note: `${unranked.join(", ")} cannot be ranked, so the best of its group is not known.`,
    };
  }
  return pairedClaim(
    claim(bestCnt.m, bestOther.m),
    stat,
    perSeed(bestOther.m, (r) => r.valLoss),
    perSeed(bestCnt.m, (r) => r.valLoss),
  );
}

/** Mean ± std of a per-seed statistic that may be undefined (null) for a method: "—" then. */
function formatMaybe(values: readonly (number | null)[], digits = 3): string {
  const ok = values.filter((v): v is number => v !== null && Number.isFinite(v));
  return ok.length === 0 ? "—" : formatMeanStd(meanStd(ok), digits);
}

/**
 * Table 3's runs: CNTLoRA-X (the method named `cntlora-x`) three ways — the literal Gram as configured, XXᵀ/b, and
 * the literal Gram at a fixed ‖ΔW₀‖ — each with the calibration batch counts below all; `derived` are the runs this
 * adds to the methods given, under labels of their own.
 */
function calibrationRuns(cfg: Config) {
  const cntX = cfg.methods.find((m) => m.name === "cntlora-x");
  const counts = cntX !== undefined
    ? [...new Set(cfg.calibCounts)].filter((n) => n < cfg.calibBatches).sort((a, b) => a - b)
    : [];
  const families = cntX === undefined ? [] : [
    { title: "XXᵀ (literal)", method: cntX },
    {
      title: "XXᵀ/b",
      method: { ...cntX, name: "cntlora-x-mean", options: { ...cntX.options, gram: "mean" } },
    },
    {
      title: `XXᵀ, ‖s·B₀·A₀‖/‖W‖ = ${cfg.fixedNorm}`,
      method: { ...cntX, name: "cntlora-x-fixed", options: { ...cntX.options, relativeNorm: cfg.fixedNorm } },
    },
  ];
  const derived = families.flatMap((f) => [
    ...counts.map((n) => ({
      label: `${f.method.name}-n${n}`,
      method: f.method,
      calibBatches: n,
      what: `Table 3's cntlora-x, Gram ${f.title}, with ${n} calibration batch(es)`,
    })),
    ...(f.method === cntX ? [] : [{
      label: f.method.name,
      method: f.method,
      calibBatches: cfg.calibBatches,
      what: `Table 3's cntlora-x, Gram ${f.title}, with all ${cfg.calibBatches} calibration batches`,
    }]),
  ]);
  return { cntX, counts, families, derived };
}

async function main(): Promise<void> {
  const { cfg, device, adapter, results } = await startExperiment(Config, {
    task: "cntlora",
    dir: "cntlora",
    description: "CNTLoRA X/S/Sh (± VAS) vs EVA, CorDA, LoRA-GA, PiSSA, OLoRA and LoRA",
    quick: QUICK,
    check: (c) => {
      lmCheck(c);
      checkDerivedLabels(c.methods, calibrationRuns(c).derived);
    },
    extendable: "steps",
    revision: LM_SETUP_REVISION,
  });

  const lm = await lmSetup(cfg, device);
  const baseEval = await lm.evaluate(lm.base);
  const baseVal = baseEval.loss;
  const withAcc = lm.classify !== undefined;

  const names = cfg.methods.map((m) => m.name);
  const isCnt = new Set(cfg.methods.filter((m) => m.init === "cntlora").map((m) => m.name));
  const { counts, families, derived } = calibrationRuns(cfg);
  const variants = [
    ...cfg.methods.map((method) => ({
      label: method.name,
      method,
      calibBatches: cfg.calibBatches,
      origin: `--method ${formatMethod(method)}`,
    })),
    ...derived.map(({ what, ...d }) => ({ ...d, origin: what })),
  ];
  const keys = variants.flatMap((v) => cfg.seeds.map((seed) => ({ ...v, seed })));
  const runs = await resumeOrRun(results, keys, {
    schema: RUN,
    steps: cfg.steps,
    extend: cfg.extend,
    describe: (r) =>
      `${r.divergedAt === undefined ? "" : `diverged at step ${r.divergedAt}, `}${
        lastTenthText(r.losses)
      }, val ${r.valLoss.toFixed(4)}, ‖s·B₀A₀‖/‖W‖ ${r.magnitude.all.toFixed(3)}, init ${
        r.initSeconds.toFixed(2)
      } s, train ${r.trainSeconds.toFixed(1)} s`,
  }, (k, previous) => fineTune(k.label, k.method, k.calibBatches, k.seed, lm, cfg, results, previous));

  // ----- per-seed statistics -----
  const n = cfg.seeds.length;
  const by = (label: string) => runs.filter((r) => r.label === label);
  const perSeed = (label: string, f: (r: Run) => number) =>
    cfg.seeds.map((s) => f(runs.find((r) => r.label === label && r.seed === s)!));
  const quarter = (r: Run) => {
    const k = Math.max(1, Math.ceil(r.losses.length / 4));
    return r.losses.slice(0, k).reduce((a, b) => a + b, 0) / k;
  };
  /** Mean over a run's layers (of module type `type`) of a comparison statistic; NaN when undefined. */
  const layerMean = (r: Run, key: keyof AdapterComparison, type?: string) =>
    meanOf(
      Object.entries(r.compare).filter(([p]) => type === undefined || moduleType(p) === type).map(([, c]) =>
        c[key]
      ),
    ) ?? NaN;
  const val = (r: Run) => r.valLoss;
  const rows = names.map((m) => {
    const rs = by(m);
    return {
      m,
      val: meanStd(rs.map(val)),
      acc: withAcc ? meanStd(rs.map((r) => r.accuracy ?? NaN)) : null,
      early: meanStd(rs.map(quarter)),
      grad1: meanStd(rs.map((r) => r.gradNorms[0])),
      magnitude: meanStd(rs.map((r) => r.magnitude.all)),
      initS: meanStd(rs.map((r) => r.initSeconds)),
      share: meanStd(rs.map((r) => (100 * r.initSeconds) / r.trainSeconds)),
      totalRank: Object.values(rs[0].ranks).reduce((a, b) => a + b, 0),
      diverged: rs.filter((r) => r.divergedAt !== undefined).length,
    };
  });
  const mainTable = {
    heading: "Final metric and cost (Tables 1 and 4)",
    note:
      "Mean ± std over seeds. ‖s·B₀·A₀‖/‖W‖ over all adapted layers (√Σ‖s·B₀·A₀‖² / √Σ‖W‖², W pretrained); " +
      "the gradient norm is the global norm over A and B at step 1, before clipping.",
    columns: [
      "method",
      "target val loss",
      ...(withAcc ? ["accuracy (other domains)"] : []),
      "mean train loss, first 25%",
      "step-1 grad norm",
      "‖s·B₀·A₀‖/‖W‖",
      "init s",
      "init % of train time",
      "Σ ranks",
      "diverged",
    ],
    rows: rows.map((r) => [
      r.m,
      formatMeanStd(r.val),
      ...(r.acc === null ? [] : [formatMeanStd(r.acc, 3)]),
      formatMeanStd(r.early),
      formatMeanStd(r.grad1, 3),
      formatMeanStd(r.magnitude, 3),
      formatMeanStd(r.initS, 3),
      formatMeanStd(r.share, 3),
      r.totalRank,
      `${r.diverged}/${n}`,
    ]),
  };
  const types = [...new Set(cfg.targets)];
  const magTable = {
    heading: "Initial update size per module type",
    note: "‖s·B₀·A₀‖_F/‖W‖_F over the layers of each type (√Σ over layers), mean ± std over seeds:",
    columns: ["method", ...types],
    rows: names.map((m) => [m, ...types.map((t) => formatMaybe(by(m).map((r) => r.magnitude[t] ?? null)))]),
  };

  // Table 2: initial vs final update per module type (mean over layers of the type and seeds).
  const deltaStat = (m: string, t: string, key: "cosine" | "spectralDistance" | "relativeSpectralDistance") =>
    meanOf(
      by(m).flatMap((r) =>
        Object.entries(r.delta).filter(([p]) => moduleType(p) === t).map(([, d]) => d[key])
      ),
    );
  const cell = (v: number | null) => (v === null ? "—" : formatNumber(v, 3));
  const matrixTable = {
    heading: "Initial vs final adapter, per matrix (Table 2)",
    note:
      "Per layer, then mean over layers; mean ± std over seeds (— : undefined, e.g. B₀ = 0 or ΔW₀ = 0). " +
      "cos(ΔW₀, ΔW − ΔW₀) asks whether training continued along the initial update whatever its size; " +
      "‖ΔW − ΔW₀‖ is the distance travelled, in units of ‖ΔW₀‖ and of ‖ΔW‖ (all Frobenius).",
    columns: [
      "method",
      "cos(A₀, A)",
      "cos(B₀, B)",
      "cos(ΔW₀, ΔW)",
      "cos(ΔW₀, ΔW − ΔW₀)",
      "‖ΔW − ΔW₀‖/‖ΔW₀‖",
      "‖ΔW − ΔW₀‖/‖ΔW‖",
    ],
    rows: names.map((m) => [
      m,
      ...(["cosA", "cosB", "cosDelta", "cosTravel", "travelledOverInit", "travelledOverFinal"] as const).map((
        k,
      ) => formatMaybe(by(m).map((r) => layerMean(r, k)))),
    ]),
  };
  const cosATable = {
    note:
      "cos(A₀, A) per module type (per seed the mean over the layers of the type; mean ± std over seeds):",
    columns: ["method", ...types],
    rows: names.map((m) => [m, ...types.map((t) => formatMaybe(by(m).map((r) => layerMean(r, "cosA", t))))]),
  };
  const cosTable = {
    note:
      "Cosine similarity between ΔW₀ (right after attaching) and the final ΔW per module type, mean over " +
      "layers and seeds (— : ΔW₀ = 0). It is close to 1 whenever ΔW₀ is large next to what training adds, so it " +
      "is shown, not judged:",
    columns: ["method", ...types],
    rows: names.map((m) => [m, ...types.map((t) => cell(deltaStat(m, t, "cosine")))]),
  };
  const distTable = {
    note: "Spectral-norm distance ‖ΔW − ΔW₀‖₂ (relative to ‖ΔW‖₂ in parentheses):",
    columns: ["method", ...types],
    rows: names.map((m) => [
      m,
      ...types.map((t) => {
        const abs = deltaStat(m, t, "spectralDistance");
        const rel = deltaStat(m, t, "relativeSpectralDistance");
        return abs === null ? "—" : `${formatNumber(abs, 3)} (${cell(rel)})`;
      }),
    ]),
  };

  // Table 3: calibration batches, three ways.
  const calibStats = families.flatMap((f) =>
    [...counts.map((c) => ({ n: String(c), label: `${f.method.name}-n${c}` })), {
      n: `all (${cfg.calibBatches})`,
      label: f.method.name,
    }].map((c) => ({
      ...c,
      family: f.title,
      val: meanStd(by(c.label).map(val)),
      acc: withAcc ? meanStd(by(c.label).map((r) => r.accuracy ?? NaN)) : null,
      magnitude: meanStd(by(c.label).map((r) => r.magnitude.all)),
      initS: meanStd(by(c.label).map((r) => r.initSeconds)),
      diverged: by(c.label).filter((r) => r.divergedAt !== undefined).length,
    }))
  );
  const calibTable = {
    heading: "CNTLoRA-X vs number of calibration batches (Table 3)",
    note:
      "The literal Gram XXᵀ sums over every calibration token, so its initial update grows with the data " +
      "(‖s·B₀·A₀‖/‖W‖ column); XXᵀ/b and the fixed-norm family separate the data's content from that size.",
    columns: [
      "Gram",
      "calibration batches",
      "target val loss",
      ...(withAcc ? ["accuracy"] : []),
      "‖s·B₀·A₀‖/‖W‖",
      "init s",
      "diverged",
    ],
    rows: calibStats.map((c) => [
      c.family,
      c.n,
      formatMeanStd(c.val),
      ...(c.acc === null ? [] : [formatMeanStd(c.acc, 3)]),
      formatMeanStd(c.magnitude, 3),
      formatMeanStd(c.initS, 3),
      `${c.diverged}/${n}`,
    ]),
  };

  // ----- claims (rules fixed here, before any run is read) -----
  const claims: (Claim | string)[] = [];
  // A claim names methods by their default labels; it is judged only where the label still runs that method.
  const standard = defaultLabels(METHODS, cfg.methods);
  const has = (m: string) => names.includes(m) && standard.ok(m);
  const paired = pairedClaim;
  const cntRows = rows.filter((r) => isCnt.has(r.m));
  const otherRows = rows.filter((r) => !isCnt.has(r.m));
  if (cntRows.length > 0 && otherRows.length > 0) claims.push(bestOfClaim(cntRows, otherRows, perSeed));
  for (const m of ["cntlora-x", "cntlora-s", "cntlora-sh"]) {
    if (!has(m) || !has("lora")) continue;
    claims.push(paired(
      `${m} beats LoRA (Noise & Zeros) on target val loss.`,
      "target val loss of LoRA minus that of the CNTLoRA variant",
      perSeed("lora", val),
      perSeed(m, val),
    ));
  }
  for (const m of ["cntlora-x", "cntlora-s", "cntlora-sh"]) {
    if (!withAcc || !has(m) || !has("lora")) continue;
    claims.push(paired(
      `${m} beats LoRA (Noise & Zeros) on accuracy in the other domains.`,
      "accuracy of the CNTLoRA variant minus LoRA's",
      perSeed(m, (r) => r.accuracy ?? NaN),
      perSeed("lora", (r) => r.accuracy ?? NaN),
    ));
  }
  for (const m of ["cntlora-x", "cntlora-s", "cntlora-sh"]) {
    if (!has(m) || !has(`${m}-vas`)) continue;
    claims.push(paired(
      `VAS improves ${m} on target val loss.`,
      "target val loss without VAS minus with VAS",
      perSeed(m, val),
      perSeed(`${m}-vas`, val),
    ));
  }
  // Table 2, per matrix: A₀ against the final A is defined for every method (B₀ = 0 for LoRA and EVA).
  const A0_NOTE =
    "‖A₀‖ differs between methods, and under Adam the distance A moves does not grow with ‖A₀‖, so a " +
    "larger A₀ keeps a higher cosine by itself; the fixed-norm variant (‖s·B₀·A₀‖ = " + cfg.fixedNorm +
    "·‖W‖, same direction) is judged beside it.";
  const fixed = families[2]?.method.name;
  if (has("cntlora-x")) {
    for (const ref of ["lora", "eva"].filter(has)) {
      for (const m of ["cntlora-x", ...(fixed === undefined ? [] : [fixed])]) {
        claims.push(steadyPairedClaim(runs, {
          claim: `${
            m === "cntlora-x" ? "CNTLoRA-X" : `CNTLoRA-X at a fixed ‖ΔW₀‖ (${m})`
          }'s A₀ is closer in direction to its final A than ${ref}'s (Table 2, per matrix).`,
          stat: `cos(A₀, A) averaged over layers, ${m} minus ${ref}`,
          a: m,
          b: ref,
          value: (r) => layerMean(r, "cosA"),
          seeds: cfg.seeds,
          note: A0_NOTE,
          threshold: COS_THRESHOLD,
        }));
      }
    }
    const sizes = (m: string) => formatMeanStd(meanStd(by(m).map((r) => r.magnitude.all)), 3);
    for (const ref of ["pissa", "olora", "corda", "lora-ga"].filter(has)) {
      for (const m of ["cntlora-x", ...(fixed === undefined ? [] : [fixed])]) {
        claims.push(steadyPairedClaim(runs, {
          claim:
            `${
              m === "cntlora-x" ? "CNTLoRA-X" : `CNTLoRA-X at a fixed ‖ΔW₀‖ (${m})`
            }'s initial update is closer to its final update than ${ref}'s, in units of its own size (Table 2, ` +
            `normalised by ‖ΔW₀‖).`,
          stat: `‖ΔW − ΔW₀‖/‖ΔW₀‖ averaged over layers, ${ref} minus ${m}`,
          a: ref,
          b: m,
          value: (r) => layerMean(r, "travelledOverInit"),
          seeds: cfg.seeds,
          note: `The ratio falls as ‖ΔW₀‖ grows (‖s·B₀·A₀‖/‖W‖: ${m} ${sizes(m)}, ${ref} ${sizes(ref)}).`,
          threshold: COS_THRESHOLD,
        }));
      }
    }
  }
  // Table 3: judged where the initial update's size does not grow with the data (XXᵀ/b, fixed norm).
  for (const f of families.slice(1)) {
    if (counts.length === 0) continue;
    const first = `${f.method.name}-n${counts[0]}`;
    claims.push(paired(
      `More calibration data helps CNTLoRA-X (Table 3, Gram ${f.title}: ${
        counts[0]
      } vs all ${cfg.calibBatches} ` +
        `batches).`,
      `target val loss with ${counts[0]} calibration batch(es) minus with all`,
      perSeed(first, val),
      perSeed(f.method.name, val),
      [
        ...[first, f.method.name].map((l) => {
          const rs = by(l);
          const k = rs.filter((r) => r.divergedAt !== undefined).length;
          return k === 0
            ? ""
            : `${k}/${rs.length} runs of ${l} diverged (‖s·B₀·A₀‖/‖W‖ ${
              formatMeanStd(meanStd(rs.map((r) => r.magnitude.all)), 3)
            }: with activations of variance ≪ 1, XXᵀ/b ≪ I and its pseudo-inverse inflates W_tar).`;
        }),
        "The literal-Gram family (table) is not judged: its ‖ΔW₀‖ changes with the number of batches.",
      ].filter(Boolean).join(" "),
    ));
  }
  for (const m of cntRows.map((r) => r.m)) {
    const r = rows.find((x) => x.m === m)!;
    const shares = by(m).map((x) => (100 * x.initSeconds) / x.trainSeconds);
    const s = meanStd(shares);
    claims.push({
      claim: `${m}'s initialisation is cheap next to training (paper: 13–15 s vs 922 s, ≈ 1.5%).`,
      rule:
        `init time (calibration forward passes included) as % of the time of ${cfg.steps} training steps, ` +
        `per seed; with m its mean and sd its std: reproduced when m + 2·sd < 2%, not reproduced when ` +
        `m − 2·sd > 2%, else inconclusive, and inconclusive when every seed gives the same share (sd 0, or ` +
        `rounding noise of m); ${n} seeds (at least 3 to judge).`,
      // The unit goes with the number: "818% (one value)", not "818 (one value)%".
      evidence: `${
        s.n === 1
          ? `${formatAgainst(s.mean, [2], 3)}% (one value)`
          : `${formatMeanStd(s, 3, { against: [2] })}%, ${
            formatSpreadEnds(s.mean - 2 * s.std, s.mean + 2 * s.std, [2], 3)
          }%`
      } ` +
        `(${r.initS.mean.toFixed(2)} s).`,
      // The paired claims' rule on minus the share (m + 2·sd < 2 as −m − 2·sd > −2, the printed ends' doubles
      // negated): fewer than 3 seeds give no spread to judge against.
      verdict: pairedSpreadVerdict({ mean: -s.mean, std: s.std, n: shares.length }, -2),
      note: "The share shrinks in proportion to the length of training.",
    });
    break; // one representative (the others are in the table)
  }
  // LoRAM's thesis over this experiment's methods.
  const mainRuns = runs.filter((r) => names.includes(r.label) && r.divergedAt === undefined);
  const dropped = runs.filter((r) => names.includes(r.label) && r.divergedAt !== undefined).length;
  for (const o of thesisClaims(mainRuns, quarter)) {
    claims.push({
      claim: o.claim,
      rule: o.rule + " Diverged runs are left out.",
      evidence: o.evidence + (dropped > 0 ? ` (${dropped} diverged run(s) left out)` : ""),
      verdict: o.verdict,
    });
  }

  const vasRuns = cfg.methods.filter((m) => m.init === "cntlora" && m.options.vas === true)
    .map((m) => ({ m: m.name, ranks: by(m.name)[0].ranks }));
  // ----- report -----
  writeCombinedMetrics(results, runs);
  const err = (s: MeanStd) => s.std;
  const plots: Record<string, string> = {
    val_loss: barPlot({
      title: "Target-domain validation loss after fine-tuning (mean ± std)",
      labels: rows.map((r) => r.m),
      values: rows.map((r) => r.val.mean),
      errors: rows.map((r) => err(r.val)),
      yLabel: "val loss",
    }),
    loss: linePlot({
      title: "Fine-tuning loss (mean over seeds, band = min..max)",
      xLabel: "step",
      yLabel: "loss",
      series: meanCurves(runs, names, (r) => r.losses),
    }),
    init_share: barPlot({
      title: "Initialisation time as % of training time",
      labels: rows.map((r) => r.m),
      values: rows.map((r) => r.share.mean),
      errors: rows.map((r) => err(r.share)),
      yLabel: "% of training",
    }),
    magnitude: barPlot({
      title: "Initial update ‖s·B₀·A₀‖/‖W‖ over all adapted layers (mean ± std)",
      labels: rows.map((r) => r.m),
      values: rows.map((r) => r.magnitude.mean),
      errors: rows.map((r) => err(r.magnitude)),
      yLabel: "‖s·B₀·A₀‖/‖W‖",
    }),
    cosine: heatmap({
      title: "cos(ΔW₀, ΔW_final) per module type (grey: ΔW₀ = 0)",
      xLabels: types,
      yLabels: names,
      values: names.map((m) => types.map((t) => deltaStat(m, t, "cosine") ?? NaN)),
      colorRange: [-1, 1],
    }),
  };
  if (calibStats.length > 1) {
    plots.calib_batches = barPlot({
      title: "CNTLoRA-X: target val loss vs calibration batches (mean ± std)",
      labels: [...new Set(calibStats.map((c) => c.n))],
      groups: families.map((f) => ({
        name: f.title,
        values: calibStats.filter((c) => c.family === f.title).map((c) => c.val.mean),
      })),
      yLabel: "val loss",
    });
  }
  if (vasRuns.length > 0) {
    const paths = Object.keys(vasRuns[0].ranks);
    plots.vas_ranks = barPlot({
      title: `VAS rank allocation (uniform = ${cfg.rank}; seed ${cfg.seeds[0]})`,
      labels: paths.map((k) =>
        k.replace("layers.", "L").replace("attention.", "").replace("feed_forward.", "")
      ),
      groups: vasRuns.map((v) => ({ name: v.m, values: paths.map((p) => v.ranks[p] ?? 0) })),
      yLabel: "rank",
    });
  }
  if (standard.note !== null) claims.push(standard.note);
  await writeReport(results, {
    title: "exp:cntlora",
    setting:
      `Adapter: ${adapter}. Data: ${lm.corpus.description}. Base: ${lm.note}; target-domain validation loss ` +
      `before fine-tuning ${baseVal.toFixed(4)}${
        baseEval.accuracy === undefined ? "" : ` (accuracy ${baseEval.accuracy.toFixed(3)})`
      }. Methods: ${cfg.methods.map(formatMethod).join("; ")}. Rank ` +
      `${cfg.rank}, alpha ${cfg.alpha}, targets ${cfg.targets.join(", ")}, ${cfg.steps} steps, batch ` +
      `${lmBatchText(cfg)}, lr ${cfg.lr}, ${cfg.calibBatches} calibration batches, seeds ` +
      `${
        cfg.seeds.join(", ")
      }. CNTLoRA keeps the base weight (B·A = ΔW_r, the model starts at ≈ W + s·ΔW_r, as ` +
      `the paper); LoRA-GA's gradients are full weight gradients of the LM loss averaged over the calibration ` +
      `batches.`,
    tables: [
      mainTable,
      magTable,
      matrixTable,
      cosATable,
      cosTable,
      distTable,
      ...(calibStats.length > 0 ? [calibTable] : []),
    ],
    claims,
    plots,
    data: {
      config: cfg,
      adapter,
      baseValLoss: baseVal,
      rows,
      calibration: calibStats,
      magnitude: Object.fromEntries(
        names.map((
          m,
        ) => [m, Object.fromEntries(types.map((t) => [t, meanOf(by(m).map((r) => r.magnitude[t]))]))]),
      ),
      perMatrix: Object.fromEntries(
        names.map((m) => [
          m,
          Object.fromEntries(
            (["cosA", "cosB", "cosDelta", "cosTravel", "travelledOverInit", "travelledOverFinal"] as const)
              .map((
                k,
              ) => [k, by(m).map((r) => layerMean(r, k))]),
          ),
        ]),
      ),
      delta: Object.fromEntries(
        names.map((m) => [
          m,
          Object.fromEntries(types.map((t) => [t, {
            cosine: deltaStat(m, t, "cosine"),
            spectralDistance: deltaStat(m, t, "spectralDistance"),
            relativeSpectralDistance: deltaStat(m, t, "relativeSpectralDistance"),
          }])),
        ]),
      ),
      vasRanks: Object.fromEntries(vasRuns.map((v) => [v.m, v.ranks])),
    },
  });
}

if (import.meta.main) await runMain("cntlora", main);
