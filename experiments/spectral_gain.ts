/**
 * exp:spectral-gain — Does LoRAM's logarithmic gain `log_K r = ln r / ln K` (Algorithm 1 of "The Primacy of
 * Magnitude in Low-Rank Adaptation", Zhang et al., arXiv 2507.06558; K = min(n, m)) approximate the spectral gain
 * factor of Eq. 10, `Q[r] = (Σ_{i≤r} s_i)² / (r·Σ_i s_i²)`, of pretrained weight matrices, at every rank r = 1..K?
 *
 *   deno task exp:spectral-gain            # the small base pretrained on the generated source domain (cached in
 *                                          # .cache/base, shared with exp:eva)
 *   deno task exp:spectral-gain --quick    # the quick (smaller) base
 *   deno task exp:spectral-gain --model ../shared/data/models/stories260K/stories260K.bin
 *
 * The claim is judged per module type (wq, wk, wv, wo, w1, w2, w3) by the mean over layers and ranks of
 * |Q[r] − log_K r|: below 0.1 counts as "approximates well". A Gaussian matrix of each shape (what an untrained
 * layer looks like) is analysed beside it as a control. The model is deterministic, so the spread reported is
 * over layers, not seeds.
 *
 * Writes results/spectral_gain/<timestamp>/: config.yaml, metrics.jsonl (one line per matrix and rank),
 * summary.json, summary.md and PNG + SVG plots (one per module type, and the errors as bars).
 *
 * @module
 */
import { z } from "../deps.ts";
import {
  asF32,
  deriveSeed,
  type DeviceName,
  type GainComparison,
  Linear,
  type LlamaLM,
  loadLlama,
  namedModules,
  randn,
  weightGains,
  writeFileAtomicSync,
} from "../mod.ts";
import {
  barPlot,
  baseModel,
  deviceField,
  distinctList,
  formatAgainst,
  formatMeanStd,
  linePlot,
  loadCorpus,
  type MeanStd,
  meanStd,
  missingInputs,
  PRETRAIN_STEPS,
  type ReportTable,
  runMain,
  startExperiment,
  writeReport,
} from "../lab/mod.ts";

const Config = z.object({
  quick: z.boolean().default(false).describe("the quick (smaller) generated base model"),
  modules: distinctList(z.string(), {
    default: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
    description: "module types (path suffixes) to analyse",
  }),
  threshold: z.number().positive().default(0.1).describe(
    'mean |Q[r] − log_K r| below which the log gain "fits"',
  ),
  model: z.string().optional().describe("llama2.c .bin or HF directory (default: the generated base)"),
  pretrainSteps: z.number().int().positive().default(PRETRAIN_STEPS).describe(
    "steps of the generated base model",
  ),
  seed: z.number().int().default(0).describe("seed of the Gaussian control matrices"),
  resume: z.string().optional().describe(
    "a previous results directory to write into again (analysis is cheap)",
  ),
  device: deviceField(),
});
type Config = z.infer<typeof Config>;

const QUICK = { pretrainSteps: 250 };

/** The model: `--model`, or exp:eva's generated base (same settings, hence the same cache entry). */
async function loadModel(cfg: Config, device: DeviceName): Promise<{ model: LlamaLM; note: string }> {
  if (cfg.model !== undefined) return { model: await loadLlama(cfg.model, { device }), note: cfg.model };
  // The same settings as exp:eva's base, hence the same cache entry.
  const lm = { quick: cfg.quick, pretrainSteps: cfg.pretrainSteps };
  const corpus = await loadCorpus(lm);
  return await baseModel(lm, corpus, device);
}

interface MatrixResult {
  path: string;
  type: string;
  shape: [number, number];
  gains: GainComparison;
}

/** One module type's errors over its layers (see {@link gainReport}). */
export interface GainRow {
  /** The module type (`wq`, `w1`, ...). */
  type: string;
  /** Its weight's shape. */
  shape: readonly [number, number];
  /** K = min(n, m). */
  k: number;
  /** How many layers have it. */
  count: number;
  /** Mean |Q[r] − log_K r| over ranks, mean ± std over the layers: the number the claim judges. */
  mae: MeanStd;
  /** Max |Q[r] − log_K r| over ranks, over the layers. */
  max: MeanStd;
  /** Mean Q[r] − log_K r over ranks, over the layers. */
  signed: MeanStd;
  /** Q[1], over the layers. */
  q1: MeanStd;
  /** The Gaussian control's mean |ΔQ|. */
  controlMae: number;
}

/**
 * The table and claims of the experiment: per module type, the log gain "fits" when its mean error is below
 * `threshold`; the claim holds when every type fits. Every error judged against the threshold is printed on the side
 * of it its value is on ({@link formatAgainst}).
 *
 * @param rows Per module type, its errors.
 * @param context The threshold, the errors of every matrix together, and how many matrices there are.
 * @returns The table and the claims.
 */
export function gainReport(
  rows: readonly GainRow[],
  { threshold, overall, matrices }: { threshold: number; overall: MeanStd; matrices: number },
): { table: ReportTable; claims: string[] } {
  const against = { against: [threshold] };
  const table = {
    columns: [
      "module",
      "shape [n, m]",
      "K",
      "layers",
      "mean |Q − log_K r|",
      "max |Q − log_K r|",
      "mean (Q − log_K r)",
      "Q[1]",
      "Gaussian control: mean |ΔQ|",
    ],
    rows: rows.map((r) => [
      r.type,
      `[${r.shape.join(", ")}]`,
      r.k,
      r.count,
      formatMeanStd(r.mae, 3, against),
      formatMeanStd(r.max, 3),
      formatMeanStd(r.signed, 3),
      formatMeanStd(r.q1, 3),
      r.controlMae.toFixed(3),
    ]),
  };
  const good = rows.filter((r) => r.mae.mean < threshold);
  const verdict = good.length === rows.length
    ? "reproduced"
    : good.length === 0
    ? "not reproduced"
    : "inconclusive (holds for some module types only)";
  const claims = [
    `"The logarithmic gain approximates the spectral gain of pretrained weights well" (criterion: mean over ranks ` +
    `r = 1..K of |Q[r] − log_K r|, then over the layers of a module type, below ${threshold} for every ` +
    `module type): over all ${matrices} matrices the error is ${
      formatMeanStd(overall, 3, against)
    }; below the ` +
    `threshold: ${good.map((r) => r.type).join(", ") || "none"}; above: ${
      rows.filter((r) => r.mae.mean >= threshold)
        .map((r) => `${r.type} (${formatAgainst(r.mae.mean, [threshold], 3)})`).join(", ") || "none"
    }: **${verdict}**.`,
    ...rows.map((r) =>
      `${r.type}: mean |ΔQ| ${formatMeanStd(r.mae, 3, against)} (Gaussian control ${
        r.controlMae.toFixed(3)
      }; the log gain ${r.signed.mean > 0 ? "under" : "over"}estimates Q on average by ${
        Math.abs(r.signed.mean).toFixed(3)
      }): **${r.mae.mean < threshold ? "reproduced" : "not reproduced"}**.`
    ),
  ];
  return { table, claims };
}

async function main(): Promise<void> {
  const { cfg, device, adapter, results } = await startExperiment(Config, {
    task: "spectral-gain",
    dir: "spectral_gain",
    description: "LoRAM's logarithmic gain vs the spectral gain Q[r] of pretrained weights",
    quick: QUICK,
    check: (c) => {
      // Both describe the generated base: with --model they would be ignored.
      const unused = [
        ...(c.quick ? ["--quick"] : []),
        ...(!c.quick && c.pretrainSteps !== PRETRAIN_STEPS ? [`--pretrain-steps ${c.pretrainSteps}`] : []),
      ];
      const missing = missingInputs([["--model", c.model]]);
      if (missing.length > 0) throw new RangeError(missing.join("; "));
      if (c.model !== undefined && unused.length > 0) {
        throw new RangeError(
          `${
            unused.join(" and ")
          }: used only for the generated base model, and --model "${c.model}" is given`,
        );
      }
    },
  });

  const { model, note } = await loadModel(cfg, device);
  console.log(`model: ${note}`);
  const typeOf = (path: string) => cfg.modules.find((m) => path === m || path.endsWith(`.${m}`));
  // Every module type asked for must be there: one that matches nothing would drop out of "every module type".
  const linears = namedModules(model).filter(([, m]) => m instanceof Linear).map(([p]) => p);
  const missing = cfg.modules.filter((t) => !linears.some((p) => p === t || p.endsWith(`.${t}`)));
  if (missing.length > 0) {
    throw new RangeError(
      `--modules: ${missing.map((m) => `"${m}"`).join(", ")} match(es) no Linear module of the model (its ` +
        `Linear modules are named ${
          [...new Set(linears.map((p) => p.slice(p.lastIndexOf(".") + 1)))].join(", ")
        })`,
    );
  }
  const matrices: MatrixResult[] = [];
  const controls = new Map<string, GainComparison>();
  for (const [path, m] of namedModules(model)) {
    const type = typeOf(path);
    if (type === undefined || !(m instanceof Linear)) continue;
    const w = asF32(m.weight);
    const shape = [w.shape[0], w.shape[1]] as [number, number];
    matrices.push({ path, type, shape, gains: await weightGains(w) });
    if (!controls.has(type)) {
      const g = randn(shape, { seed: deriveSeed(cfg.seed, "control", type), device });
      controls.set(type, await weightGains(g));
      g.dispose();
    }
  }
  const metrics = matrices.flatMap((mr) =>
    Array.from(mr.gains.spectral, (q, i) =>
      JSON.stringify({
        path: mr.path,
        type: mr.type,
        rank: i + 1,
        spectralGain: q,
        logGain: mr.gains.logarithmic[i],
        singularValue: mr.gains.singularValues[i],
      }))
  );
  // Atomically: a process killed while writing it (on --resume too) leaves the file it replaces whole.
  writeFileAtomicSync(results.file("metrics.jsonl"), metrics.join("\n") + "\n");

  // ----- per module type -----
  const types = cfg.modules.filter((t) => matrices.some((m) => m.type === t));
  const rows = types.map((type) => {
    const ms = matrices.filter((m) => m.type === type);
    const c = controls.get(type)!;
    return {
      type,
      shape: ms[0].shape,
      k: ms[0].gains.k,
      count: ms.length,
      mae: meanStd(ms.map((m) => m.gains.meanAbsError)),
      max: meanStd(ms.map((m) => m.gains.maxAbsError)),
      signed: meanStd(
        ms.map((m) => m.gains.spectral.reduce((s, q, i) => s + q - m.gains.logarithmic[i], 0) / m.gains.k),
      ),
      q1: meanStd(ms.map((m) => m.gains.spectral[0])),
      controlMae: c.meanAbsError,
    };
  });
  const overall = meanStd(matrices.map((m) => m.gains.meanAbsError));
  const { table, claims } = gainReport(rows, {
    threshold: cfg.threshold,
    overall,
    matrices: matrices.length,
  });
  // ----- report -----
  const plots: Record<string, string> = {};
  for (const type of types) {
    const ms = matrices.filter((m) => m.type === type);
    const k = ms[0].gains.k;
    const x = Array.from({ length: k }, (_, i) => i + 1);
    const c = controls.get(type)!;
    plots[`gain_${type}`] = linePlot({
      title: `${type}: spectral gain Q[r] per layer vs LoRAM's log_K r (K = ${k})`,
      xLabel: "rank r",
      yLabel: "gain",
      yRange: [0, 1],
      series: [
        ...ms.map((m) => ({
          name: m.path.replace(/\.(attention|feed_forward)\./, "."),
          x,
          y: [...m.gains.spectral],
        })),
        { name: "Gaussian control", x, y: [...c.spectral], color: "#999999" },
        { name: "log_K r", x, y: [...ms[0].gains.logarithmic], color: "#000000", dashed: true },
      ],
    });
  }
  plots.gain_error = barPlot({
    title: `Mean |Q[r] − log_K r| per module type (threshold ${cfg.threshold})`,
    labels: rows.map((r) => r.type),
    values: rows.map((r) => r.mae.mean),
    yLabel: "mean |ΔQ|",
  });
  await writeReport(results, {
    title: "exp:spectral-gain",
    setting:
      `Adapter: ${adapter}. Model: ${note}. Spectral gain Q[r] = (Σ_{i≤r} s_i)² / (r·Σ_i s_i²) (LoRAM Eq. ` +
      `10) of every ${cfg.modules.join("/")} matrix at every rank r = 1..K, K = min(n, m), against LoRAM's ` +
      `logarithmic gain log_K r. Mean ± std over the layers of each type (the model is deterministic: no seeds).`,
    tables: [table],
    claims,
    plots,
    data: {
      config: cfg,
      adapter,
      model: note,
      rows,
      matrices: matrices.map((m) => ({
        path: m.path,
        shape: m.shape,
        meanAbsError: m.gains.meanAbsError,
        maxAbsError: m.gains.maxAbsError,
      })),
    },
  });
}

if (import.meta.main) await runMain("spectral-gain", main);
