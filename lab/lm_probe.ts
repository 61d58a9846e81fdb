/**
 * What the LM experiments measure of an adapter besides the loss: the initial update's size per module type
 * (`‖s·B₀·A₀‖_F / ‖W‖_F`, with W the pretrained weight), per-matrix comparisons of the initial and the final adapter
 * (cosine of A₀ with A and of B₀ with B, so that methods with B₀ = 0 are defined; distances in units of ‖ΔW₀‖ and the
 * direction travelled), and the statistics the claims use: paired differences over seeds and Spearman's rank
 * correlation.
 *
 * @module
 */
import { asF32, Linear, loraLayers, namedModules } from "../mod.ts";
import {
  checkAgainstOptions,
  checkThreshold,
  formatAgainst,
  formatMeanStd,
  formatSpreadEnds,
  isStdNoise,
  meanStd,
  onSameSides,
  repeatsOneMeasurement,
  type ReportTable,
  variesOverSeeds,
  type Verdict,
} from "./report.ts";

/** The Frobenius norm of every `Linear` weight whose last path segment is in `targets`, by path. */
export async function weightNorms(
  model: object,
  targets: readonly string[],
): Promise<Record<string, number>> {
  const want = new Set(targets);
  const out: Record<string, number> = {};
  for (const [path, m] of namedModules(model)) {
    if (!(m instanceof Linear) || !want.has(path.split(".").at(-1)!)) continue;
    out[path] = await asF32(m.weight).square().sum().sqrt().item() as number;
  }
  return out;
}

/** One LoRA layer on the host: A `[r, d_in]`, B `[d_out, r]` and the update `s·B·A` `[d_out, d_in]`. */
export interface AdapterState {
  /** A, row-major. */
  a: Float32Array;
  /** B, row-major. */
  b: Float32Array;
  /** `s·B·A`, row-major. */
  delta: Float32Array;
}

/** Every LoRA layer's A, B and `s·B·A`, read to the host, by path. */
export async function adapterStates(model: object): Promise<Map<string, AdapterState>> {
  const out = new Map<string, AdapterState>();
  for (const [path, l] of loraLayers(model)) {
    const [a, b, delta] = await Promise.all([
      l.lora_A.weight.data(),
      l.lora_B.weight.data(),
      l.deltaWeight().data(),
    ]);
    out.set(path, { a: a as Float32Array, b: b as Float32Array, delta: delta as Float32Array });
  }
  return out;
}

function dot(x: Float32Array, y: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * y[i];
  return s;
}

/** Cosine of two equally long vectors; null when either is zero. */
export function cosine(x: Float32Array, y: Float32Array): number | null {
  if (x.length !== y.length) throw new RangeError(`cosine: lengths ${x.length} and ${y.length} differ`);
  const nx = dot(x, x), ny = dot(y, y);
  return nx > 0 && ny > 0 ? dot(x, y) / Math.sqrt(nx * ny) : null;
}

/** Initial against final adapter of one layer. */
export interface AdapterComparison {
  /** `cos(A₀, A)` (null when A₀ = 0). */
  cosA: number | null;
  /** `cos(B₀, B)` (null when B₀ = 0: Noise & Zeros, EVA). */
  cosB: number | null;
  /** `cos(ΔW₀, ΔW)` (null when ΔW₀ = 0). */
  cosDelta: number | null;
  /** `cos(ΔW₀, ΔW − ΔW₀)`: does training move along the initial update (scale-free; null when ΔW₀ = 0). */
  cosTravel: number | null;
  /** `‖ΔW₀‖_F`. */
  initNorm: number;
  /** `‖ΔW − ΔW₀‖_F`, the distance travelled. */
  travelled: number;
  /** `‖ΔW − ΔW₀‖_F / ‖ΔW₀‖_F` (null when ΔW₀ = 0). */
  travelledOverInit: number | null;
  /** `‖ΔW − ΔW₀‖_F / ‖ΔW‖_F`: the share of the final update training had to supply (null when ΔW = 0). */
  travelledOverFinal: number | null;
}

/**
 * Compares a layer's initial and final adapter.
 *
 * @example
 * ```ts
 * import { compareAdapters } from "./lm_probe.ts";
 * const f = (...v: number[]) => Float32Array.from(v);
 * const c = compareAdapters(
 *   { a: f(1, 0), b: f(0, 0), delta: f(0, 0, 0, 0) },
 *   { a: f(1, 1), b: f(1, 0), delta: f(1, 1, 0, 0) },
 * );
 * console.log(c.cosA?.toFixed(3), c.cosB, c.travelled.toFixed(3)); // "0.707" null "1.414"
 * ```
 */
export function compareAdapters(initial: AdapterState, final: AdapterState): AdapterComparison {
  const travel = Float32Array.from(final.delta, (v, i) => v - initial.delta[i]);
  const initNorm = Math.sqrt(dot(initial.delta, initial.delta));
  const finalNorm = Math.sqrt(dot(final.delta, final.delta));
  const travelled = Math.sqrt(dot(travel, travel));
  return {
    cosA: cosine(initial.a, final.a),
    cosB: cosine(initial.b, final.b),
    cosDelta: cosine(initial.delta, final.delta),
    cosTravel: cosine(initial.delta, travel),
    initNorm,
    travelled,
    travelledOverInit: initNorm > 0 ? travelled / initNorm : null,
    travelledOverFinal: finalNorm > 0 ? travelled / finalNorm : null,
  };
}

/** Module type of a path: its last segment (`layers.0.attention.wq` → `wq`). */
export const moduleType = (path: string): string => path.split(".").at(-1)!;

/**
 * The initial update's size per module type, `√Σ‖s·B₀·A₀‖²_F / √Σ‖W‖²_F` over the layers of the type, and over all
 * layers (`"all"`).
 *
 * @param initial Each layer's adapter right after attaching ({@link adapterStates}).
 * @param weights Each layer's pretrained weight norm ({@link weightNorms}, read before attaching).
 * @returns Ratio by module type.
 */
export function updateMagnitudes(
  initial: ReadonlyMap<string, AdapterState>,
  weights: Readonly<Record<string, number>>,
): Record<string, number> {
  const num: Record<string, number> = { all: 0 };
  const den: Record<string, number> = { all: 0 };
  for (const [path, s] of initial) {
    const w = weights[path];
    if (w === undefined) throw new RangeError(`updateMagnitudes: no weight norm for layer "${path}"`);
    const t = moduleType(path);
    const d2 = dot(s.delta, s.delta);
    num[t] = (num[t] ?? 0) + d2;
    den[t] = (den[t] ?? 0) + w * w;
    num.all += d2;
    den.all += w * w;
  }
  return Object.fromEntries(Object.keys(num).map((t) => [t, Math.sqrt(num[t] / den[t])]));
}

/** Ranks (1-based) of `x`, ties given their mean rank. */
function ranks(x: readonly number[]): number[] {
  const order = x.map((v, i) => [v, i] as const).sort((p, q) => p[0] - q[0]);
  const r = new Array<number>(x.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    for (let k = i; k <= j; k++) r[order[k][1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return r;
}

/**
 * Spearman's rank correlation of `x` and `y` (Pearson's correlation of their ranks, ties at their mean rank); NaN
 * when either is constant.
 *
 * @example
 * ```ts
 * import { spearman } from "./lm_probe.ts";
 * console.log(spearman([1, 2, 3, 4], [10, 20, 15, 40])); // 0.8
 * ```
 */
export function spearman(x: readonly number[], y: readonly number[]): number {
  if (x.length !== y.length || x.length < 2) {
    throw new RangeError(
      `spearman: needs two equally long series of 2 or more, got ${x.length} and ${y.length}`,
    );
  }
  if (![...x, ...y].every(Number.isFinite)) throw new RangeError("spearman: non-finite value");
  const rx = ranks(x), ry = ranks(y);
  const m = (x.length + 1) / 2;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < x.length; i++) {
    sxy += (rx[i] - m) * (ry[i] - m);
    sxx += (rx[i] - m) ** 2;
    syy += (ry[i] - m) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
}

/** A paired difference over seeds. */
export interface PairedDiff {
  /** Mean of the per-seed differences. */
  mean: number;
  /** Their standard deviation (sample). */
  std: number;
  /** Seeds. */
  n: number;
  /**
   * For a difference given by its mean and spread alone (no `sidesVary`): the largest magnitude among the values
   * differenced, the scale of the differences' rounding (`isNoSpread`); absent, the mean's magnitude stands for it.
   */
  scale?: number;
  /** Whether either side varies over the seeds (see `repeatsOneMeasurement`). */
  sidesVary?: boolean;
}

/**
 * The per-seed differences `a[i] − b[i]` (runs of the same seed see the same batches), as mean ± std; no pairs
 * (every seed left out) give n 0 with a NaN mean and std, which the paired rule judges inconclusive.
 *
 * @example
 * ```ts
 * import { pairedDiff } from "./lm_probe.ts";
 * console.log(pairedDiff([3, 4, 5], [1, 2, 2])); // { mean: 2.33..., std: 0.577..., n: 3 }
 * ```
 */
export function pairedDiff(a: readonly number[], b: readonly number[]): PairedDiff {
  if (a.length !== b.length) {
    throw new RangeError(`pairedDiff: ${a.length} and ${b.length} values: pairs need one of each per seed`);
  }
  if (a.length === 0) return { mean: NaN, std: NaN, n: 0 };
  const s = meanStd(a.map((v, i) => v - b[i]));
  return { mean: s.mean, std: s.std, n: a.length, sidesVary: variesOverSeeds(a) || variesOverSeeds(b) };
}

/**
 * The verdict of the paired rule every LM claim states: with m the mean per-seed difference (signed so that the
 * claim predicts it positive) and sd its std over seeds, reproduced when m − 2·sd > `threshold`, not reproduced when
 * m + 2·sd < `threshold` (with threshold 0: the difference is negative beyond twice its spread; with a positive
 * threshold also when the difference is confidently too small to count), inconclusive otherwise, with fewer
 * than 3 seeds, and when every seed gives the same values ({@link isNoSpread}: sd 0 or rounding noise of the
 * values compared, so the seeds repeat one measurement and m ± 2·sd, a point, measures no uncertainty).
 *
 * @example
 * ```ts
 * import { pairedSpreadVerdict } from "./lm_probe.ts";
 * console.log(pairedSpreadVerdict({ mean: 0.3, std: 0.1, n: 5 }, 0.01)); // "reproduced"
 * ```
 */
export function pairedSpreadVerdict(d: PairedDiff, threshold = 0): Verdict {
  checkThreshold("pairedSpreadVerdict", threshold);
  if (d.n < 3 || !Number.isFinite(d.mean) || !Number.isFinite(d.std)) return "inconclusive";
  if (repeatsOneMeasurement(d)) return "inconclusive";
  if (d.mean - 2 * d.std > threshold) return "reproduced";
  if (d.mean + 2 * d.std < threshold) return "not reproduced";
  return "inconclusive";
}

/**
 * `mean ± std (n = …)` of a paired difference, `digits` decimals (exponent form under 1e-3). With `against`, the
 * thresholds a rule compares the mean with, a mean that those decimals would put on another side of one is printed
 * with the significant digits that keep it on its own ({@link formatAgainst}), and the ends the rule compares with
 * them follow (`, m ± 2·sd lo..hi`, {@link formatSpreadEnds}): m − 2·sd and m + 2·sd as {@link pairedSpreadVerdict}
 * computes them, or with `absolute` |m| − 2·sd and |m| + 2·sd against the thresholds' sizes, as
 * {@link equivalenceClaim} does. Ends that are not numbers (no seeds) are left out; one seed prints
 * `mean (one value)`, as {@link formatMeanStd} does, with no ends; a std that is rounding noise of the mean
 * ({@link isStdNoise}) is printed as 0, as there, and with more than one seed the ends give way to the reason the
 * rules read it inconclusive: `m ± 0 (n = 3, the same values in every seed: no spread to judge by)`.
 */
export function formatPairedDiff(
  d: PairedDiff,
  digits = 4,
  options: { against?: readonly number[]; absolute?: boolean } = {},
): string {
  checkAgainstOptions("formatPairedDiff", options, ["absolute"]);
  const f = (v: number) => (Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(digits) : v.toExponential(2));
  const against = options.against ?? [];
  const mean = onSameSides(Number(f(d.mean)), d.mean, against)
    ? f(d.mean)
    : formatAgainst(d.mean, against, digits);
  // One seed has no spread to show (formatMeanStd's rendering), and no spread ends for a rule to compare.
  if (d.n === 1) return `${mean} (one value)`;
  if (repeatsOneMeasurement(d)) {
    return `${mean} ± ${f(0)} (n = ${d.n}, the same values in every seed: no spread to judge by)`;
  }
  const text = `${mean} ± ${f(isStdNoise(d.std, d.mean) ? 0 : d.std)} (n = ${d.n})`;
  if (against.length === 0 || !Number.isFinite(d.mean) || !Number.isFinite(d.std)) return text;
  if (options.absolute) {
    const m = Math.abs(d.mean);
    const sizes = [...new Set(against.map(Math.abs))];
    return `${text}, ${formatSpreadEnds(m - 2 * d.std, m + 2 * d.std, sizes, digits, "|m| ± 2·sd")}`;
  }
  return `${text}, ${formatSpreadEnds(d.mean - 2 * d.std, d.mean + 2 * d.std, against, digits)}`;
}

/** One run as {@link orderClaim} reads it: its method, seed, the predictor and the early loss. */
export interface OrderPoint {
  /** Method. */
  label: string;
  /** Seed. */
  seed: number;
  /** The predictor (e.g. the initial update's size or the step-1 gradient norm). */
  x: number;
  /** The early loss (mean training loss over the first 25% of steps). */
  y: number;
}

/** The strength {@link orderClaim} asks of the mean rank correlation. */
export const ORDER_THRESHOLD = 0.5;

/**
 * LoRAM's thesis as a claim: a larger predictor (initial update or step-1 gradient) gives a lower early loss. Per
 * seed, Spearman's ρ over the methods between the predictor and the early loss (every method of a seed sees the
 * same batches); the claim predicts ρ < 0. Rule: with m = mean of −ρ over seeds and se its standard error,
 * reproduced when m ≥ {@link ORDER_THRESHOLD} and m − 2·se > 0; not reproduced when m + 2·se < ORDER_THRESHOLD;
 * inconclusive otherwise or with fewer than 3 seeds or 3 methods.
 *
 * @param what The predictor in words.
 * @param points One per method and seed.
 * @returns The claim with its evidence and verdict.
 */
export function orderClaim(what: string, points: readonly OrderPoint[]): {
  claim: string;
  rule: string;
  evidence: string;
  verdict: Verdict;
  rhos: number[];
} {
  const seeds = [...new Set(points.map((p) => p.seed))].sort((a, b) => a - b);
  const methods = [...new Set(points.map((p) => p.label))];
  const perSeed = seeds.map((s) => {
    const ps = points.filter((p) => p.seed === s);
    // A seed with a non-finite value (a diverged run) has no ρ: the rule leaves it out.
    const finite = ps.every((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    return ps.length >= 3 && finite ? spearman(ps.map((p) => p.x), ps.map((p) => p.y)) : NaN;
  });
  const rhos = perSeed.filter(Number.isFinite);
  const unusable = seeds.filter((_, i) => !Number.isFinite(perSeed[i]));
  const neg = rhos.length > 0 ? meanStd(rhos.map((r) => -r)) : { mean: NaN, std: NaN, n: 0 };
  const se = rhos.length > 0 ? neg.std / Math.sqrt(rhos.length) : NaN;
  const verdict: Verdict = rhos.length < 3 || methods.length < 3
    ? "inconclusive"
    : neg.mean >= ORDER_THRESHOLD && neg.mean - 2 * se > 0
    ? "reproduced"
    : neg.mean + 2 * se < ORDER_THRESHOLD
    ? "not reproduced"
    : "inconclusive";
  return {
    claim: `LoRAM's thesis: a larger ${what} gives a lower early loss (the methods are ordered by it).`,
    rule:
      `per seed, Spearman ρ over the ${methods.length} methods between the ${what} and the mean training ` +
      `loss of the first 25% of steps (same batches for every method of a seed); reproduced when mean(−ρ) ≥ ` +
      `${ORDER_THRESHOLD} and mean(−ρ) − 2·se > 0, not reproduced when mean(−ρ) + 2·se < ${ORDER_THRESHOLD}, ` +
      `else inconclusive; a seed counts only where ρ is defined (3 methods or more, finite values not all tied); ` +
      `${rhos.length} of ${seeds.length} seed${
        seeds.length === 1 ? "" : "s"
      } usable (at least 3 seeds and 3 ` +
      `methods to judge).`,
    evidence: `ρ per seed ${rhos.map((r) => r.toFixed(3)).join(", ")}; mean ρ ${
      formatAgainst(-neg.mean, [-ORDER_THRESHOLD], 3)
    }${rhos.length === 1 ? " (one value)" : ` ± ${neg.std.toFixed(3)} (se ${se.toFixed(3)})`}${
      unusable.length === 0
        ? ""
        : `; left out: seed${unusable.length === 1 ? "" : "s"} ${unusable.join(", ")} (ρ undefined: fewer ` +
          `than 3 methods, or values all tied or not finite)`
    }.`,
    verdict,
    rhos,
  };
}

/** A run as {@link thesisClaims} reads it. */
export interface ThesisRun {
  /** The run's method. */
  readonly label: string;
  /** Its seed. */
  readonly seed: number;
  /** Its initial update ‖s·B₀·A₀‖/‖W‖ per module type, `all` over every adapted matrix. */
  readonly magnitude: Readonly<Record<string, number>>;
  /** Global gradient norm per step (step 1 first). */
  readonly gradNorms: readonly number[];
}

/**
 * LoRAM's thesis over one experiment's runs, judged twice by {@link orderClaim}: with the initial update
 * ‖s·B₀·A₀‖/‖W‖ and with the step-1 gradient norm as the predictor of the early loss. None when the runs hold fewer
 * than 3 methods (a rank order needs 3).
 *
 * @param runs The runs (every method and seed).
 * @param early The early loss of a run (mean training loss of the first 25% of steps).
 * @returns The two claims.
 */
export function thesisClaims<R extends ThesisRun>(
  runs: readonly R[],
  early: (r: R) => number,
): ReturnType<typeof orderClaim>[] {
  if (new Set(runs.map((r) => r.label)).size < 3) return [];
  const predictors = [
    ["initial update ‖s·B₀·A₀‖/‖W‖", (r: R) => r.magnitude.all],
    ["step-1 gradient norm", (r: R) => r.gradNorms[0]],
  ] as const;
  return predictors.map(([what, x]) =>
    orderClaim(what, runs.map((r) => ({ label: r.label, seed: r.seed, x: x(r), y: early(r) })))
  );
}

/**
 * The rule of a paired claim, stated before the run: the statistic, the pairing, the threshold and the seeds (see
 * {@link pairedSpreadVerdict}).
 *
 * @param stat The per-seed difference the claim predicts positive, in words.
 * @param seeds How many seeds.
 * @param threshold The smallest mean difference that counts (default 0: only the spread decides).
 * @returns The rule.
 */
export function pairedRule(stat: string, seeds: number, threshold = 0): string {
  return `${stat}, paired by seed (every run of a seed sees the same batches); with m the mean per-seed ` +
    `difference and sd its std: reproduced when m − 2·sd > ${threshold}, not reproduced when m + 2·sd < ` +
    `${threshold}, else inconclusive; inconclusive too when every seed gives the same values (neither run of a pair ` +
    `varies over the seeds, up to rounding: the seeds then repeat one measurement, and m ± 2·sd measures no ` +
    `uncertainty); ${seeds} seeds (at least 3 to judge).`;
}

/**
 * A claim that the per-seed difference `a[i] − b[i]` is positive, judged by {@link pairedSpreadVerdict} under
 * {@link pairedRule}, with both means and the difference as evidence.
 *
 * @param claim What is claimed.
 * @param stat The difference in words (e.g. "target val loss of LoRA minus that of PiSSA").
 * @param a Per seed, the value predicted larger.
 * @param b Per seed (same order), the value predicted smaller.
 * @param note A caveat, if any.
 * @param threshold The smallest mean difference that counts (default 0).
 * @returns The claim.
 */
export function pairedClaim(
  claim: string,
  stat: string,
  a: readonly number[],
  b: readonly number[],
  note?: string,
  threshold = 0,
): {
  claim: string;
  rule: string;
  evidence: string;
  verdict: Verdict;
  note?: string;
} {
  checkThreshold("pairedClaim", threshold);
  const d = pairedDiff(a, b);
  const f = (xs: readonly number[]) => {
    if (xs.length === 0) return "— (no seeds)";
    const s = meanStd(xs);
    return s.n === 1 ? `${s.mean.toFixed(4)} (one value)` : `${s.mean.toFixed(4)} ± ${s.std.toFixed(4)}`;
  };
  return {
    claim,
    rule: pairedRule(stat, a.length, threshold),
    evidence: `${f(a)} vs ${f(b)}; paired difference ${formatPairedDiff(d, 4, { against: [threshold] })}.`,
    verdict: pairedSpreadVerdict(d, threshold),
    ...(note === undefined ? {} : { note }),
  };
}

/**
 * A claim that two methods match: the per-seed difference `a[i] − b[i]` stays within ±`margin`. Rule: with m the mean
 * difference and sd its std over seeds, reproduced when |m| + 2·sd < margin, not reproduced when |m| − 2·sd >
 * margin, inconclusive otherwise, with fewer than 3 seeds, and when every seed gives the same values
 * ({@link isNoSpread}: the seeds then repeat one measurement, and |m| ± 2·sd measures no uncertainty).
 *
 * @example
 * ```ts
 * import { equivalenceClaim } from "./lm_probe.ts";
 * console.log(equivalenceClaim("A matches B.", "A minus B", [1, 1.001, 0.999], [1, 1, 1], 0.01).verdict); // "reproduced"
 * ```
 */
export function equivalenceClaim(
  claim: string,
  stat: string,
  a: readonly number[],
  b: readonly number[],
  margin: number,
): { claim: string; rule: string; evidence: string; verdict: Verdict } {
  // A margin of 0 or less is one no difference stays within: every judged claim would read "not reproduced".
  if (!(margin > 0 && margin < Infinity)) {
    throw new RangeError(`equivalenceClaim: margin must be a finite number > 0, got ${margin}`);
  }
  const d = pairedDiff(a, b);
  const m = Math.abs(d.mean);
  const verdict: Verdict = d.n < 3 || !Number.isFinite(m) || repeatsOneMeasurement(d)
    ? "inconclusive"
    : m + 2 * d.std < margin
    ? "reproduced"
    : m - 2 * d.std > margin
    ? "not reproduced"
    : "inconclusive";
  return {
    claim,
    rule:
      `${stat}, paired by seed (same batches); with m the mean per-seed difference and sd its std: reproduced ` +
      `when |m| + 2·sd < ${margin}, not reproduced when |m| − 2·sd > ${margin}, else inconclusive; inconclusive ` +
      `too when every seed gives the same values (neither run of a pair varies over the seeds, up to rounding: the seeds then ` +
      `repeat one measurement); ${d.n} seeds (at least 3 to judge).`,
    evidence: `paired difference ${formatPairedDiff(d, 4, { against: [-margin, margin], absolute: true })}.`,
    verdict,
  };
}

/**
 * The table of the initial update's size per module type: one row per method, `‖s·B₀·A₀‖_F/‖W‖_F` over the layers
 * of each type (mean ± std over the method's runs).
 *
 * @param rows Per method, its name and its runs' magnitudes ({@link updateMagnitudes}).
 * @param types The module types (columns).
 * @param heading The table's heading.
 * @returns The table.
 */
export function magnitudeTable(
  rows: readonly { name: string; runs: readonly Readonly<Record<string, number>>[] }[],
  types: readonly string[],
  heading = "Initial update size per module type",
): ReportTable {
  // formatMeanStd, as the experiments' other tables: one seed reads "(one value)", not "± 0".
  const cell = (xs: number[]) => (xs.length === 0 ? "—" : formatMeanStd(meanStd(xs), 3));
  return {
    heading,
    note:
      "‖s·B₀·A₀‖_F/‖W‖_F over the layers of each type (√Σ over layers; W pretrained), mean ± std over seeds:",
    columns: ["method", ...types, "all"],
    rows: rows.map((r) => [
      r.name,
      ...[...types, "all"].map((t) => cell(r.runs.map((m) => m[t]).filter((v) => v !== undefined))),
    ]),
  };
}
