/**
 * Reports of experiments: the statistics and tables a summary needs ({@link meanStd}, {@link mdTable}), the verdict
 * rule the claims use ({@link verdictFor}), mean curves over seeds for plots, and {@link writeReport}, which turns an
 * experiment's setting, tables, claims and plots into `summary.md`, `summary.json` and PNG + SVG files, so that an
 * experiment's `main` reads as configuration, set-up, runs, claims.
 *
 * @module
 */
import { z } from "../deps.ts";
import { checkOptions, type MetricRecord, toJson, writeFileAtomicSync } from "../mod.ts";
import type { LineSeries } from "./plot.ts";
import type { ResultsDir } from "./results.ts";

/** A threshold of `against`: a number, infinite ones included (NaN is refused). */
const THRESHOLD = z.custom<number>((v) => typeof v === "number" && !Number.isNaN(v), {
  message: "must be numbers",
});

/**
 * Checks the options of a formatting helper that takes `against` (thresholds the printed value keeps its side of)
 * and the true-or-false `flags`: a misspelt `against` printed a value on the wrong side of the rule's threshold.
 * Throws an `OptionsError` naming `where`, the key and the value.
 */
export function checkAgainstOptions(where: string, options: object, flags: readonly string[] = []): void {
  const keys = Object.fromEntries(flags.map((k) => [k, z.boolean()]));
  checkOptions(where, z.object({ against: z.array(THRESHOLD), ...keys }).partial().strict(), options);
}
/** Throws a RangeError naming `where` unless a verdict's `threshold` is finite (NaN left every verdict open). */
export function checkThreshold(where: string, threshold: number): void {
  if (!Number.isFinite(threshold)) {
    throw new RangeError(`${where}: threshold must be a finite number, got ${threshold}`);
  }
}
const TABLE_OPTIONS = z.object({
  align: z.array(z.enum(["left", "right", "center"])),
  digits: z.int().min(1).max(21),
}).partial().strict();
const SUMMARY_OPTIONS = z.object({ tail: z.int().min(1) }).partial().strict();

/** Mean, sample standard deviation and count of a list of numbers. */
export interface MeanStd {
  /** Arithmetic mean. */
  mean: number;
  /** Sample standard deviation (divides by n − 1); 0 for a single value. */
  std: number;
  /** Number of values. */
  n: number;
}

/**
 * Mean and sample standard deviation (n − 1 in the denominator), e.g. of a metric over seeds.
 * Non-finite inputs propagate (a NaN value gives a NaN mean).
 *
 * @param values At least one number.
 * @returns `{ mean, std, n }`.
 *
 * @example
 * ```ts
 * import { meanStd } from "./report.ts";
 * console.log(meanStd([1, 2, 3])); // { mean: 2, std: 1, n: 3 }
 * ```
 */
export function meanStd(values: readonly number[]): MeanStd {
  const n = values.length;
  if (n === 0) throw new Error("meanStd needs at least one value, got an empty list");
  let mean = 0;
  for (const v of values) mean += v;
  mean /= n;
  let squares = 0;
  for (const v of values) squares += (v - mean) ** 2;
  return { mean, std: n > 1 ? Math.sqrt(squares / (n - 1)) : 0, n };
}

/**
 * Format a number with `digits` significant digits, switching to exponent notation for very small or
 * large magnitudes; integers are printed exactly.
 *
 * @param value The number.
 * @param digits Significant digits, an integer from 1 to 21 (default 4).
 * @returns The text.
 */
export function formatNumber(value: number, digits = 4): string {
  // 1..21 is toPrecision's range in every engine (ES5's; a double holds no more than 17 digits anyway).
  if (!Number.isInteger(digits) || digits < 1 || digits > 21) {
    throw new RangeError(`formatNumber: digits must be an integer from 1 to 21, got ${digits}`);
  }
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value);
  // The range is judged after rounding: 999999.9 to 4 digits is 1.000e+6, not 1000000 (7 digits shown).
  const rounded = Number(value.toPrecision(digits));
  const abs = Math.abs(rounded);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(Math.max(0, digits - 1));
  return String(rounded);
}

/**
 * Format a number that a rule compares with thresholds so that the text compares as the number does: starting at
 * `digits` significant digits ({@link formatNumber}), digits are added until the printed value lies on the same
 * side of every threshold as the value itself, and equals a threshold only where the value does. 1.996 against 2
 * prints `1.996`, not `2.00`; 2 against 2 prints `2`. Seventeen digits give back every double exactly, so the
 * search ends there at the latest.
 *
 * @param value The number the rule judges.
 * @param thresholds The values it is compared with (finite or infinite, not NaN).
 * @param digits The fewest significant digits, an integer from 1 to 21 (default 4).
 * @returns The text.
 *
 * @example
 * ```ts
 * import { formatAgainst } from "./report.ts";
 * console.log(formatAgainst(0.8996, [0.7, 0.9], 3)); // "0.8996"
 * console.log(formatAgainst(0.8123, [0.7, 0.9], 3)); // "0.812"
 * ```
 */
export function formatAgainst(value: number, thresholds: readonly number[], digits = 4): string {
  const bad = thresholds.find((t) => Number.isNaN(t));
  if (bad !== undefined) {
    throw new RangeError(`formatAgainst: thresholds must be numbers, got [${thresholds.join(", ")}]`);
  }
  let text = formatNumber(value, digits);
  if (!Number.isFinite(value)) return text;
  for (let d = digits + 1; d <= 17 && !onSameSides(Number(text), value, thresholds); d++) {
    text = formatNumber(value, d);
  }
  return text;
}

/**
 * Whether `printed` lies on the same side of (or on) each threshold as `value`: what {@link formatAgainst} keeps.
 *
 * @param printed The number as printed, read back.
 * @param value The exact value.
 * @param thresholds The thresholds.
 * @returns True when no threshold separates the two.
 */
export function onSameSides(printed: number, value: number, thresholds: readonly number[]): boolean {
  return thresholds.every((t) => Math.sign(printed - t) === Math.sign(value - t));
}

/**
 * The ends a spread rule compares with its thresholds (m − 2·sd and m + 2·sd, computed by the caller as the rule
 * computes them), as `label lo..hi`, each printed by {@link formatAgainst} against `against`: on the same side of
 * each threshold as its value, where the ends worked out from a rounded mean and sd could land on the other.
 *
 * @param lo The lower end.
 * @param hi The upper end.
 * @param against The thresholds the rule compares the ends with.
 * @param digits The fewest significant digits (default 4).
 * @param label What the ends are (default `m ± 2·sd`).
 * @returns E.g. `m ± 2·sd 0.00998..0.0302`.
 *
 * @example
 * ```ts
 * import { formatSpreadEnds } from "./report.ts";
 * console.log(formatSpreadEnds(0.0099996, 0.03, [0.01])); // "m ± 2·sd 0.0099996..0.03"
 * ```
 */
export function formatSpreadEnds(
  lo: number,
  hi: number,
  against: readonly number[],
  digits = 4,
  label = "m ± 2·sd",
): string {
  return `${label} ${formatAgainst(lo, against, digits)}..${formatAgainst(hi, against, digits)}`;
}

/**
 * Whether a standard deviation is rounding noise of the mean: at most 8 units of rounding (`Number.EPSILON`) of the
 * mean's magnitude. Equal values can give a std of that size, as their mean rounds (0.7 three times has mean
 * 0.6999999999999998 and std 1.4e-16); a spread of a few units in the last place is not one a report can tell from
 * that noise.
 */
export function isStdNoise(std: number, mean: number): boolean {
  return Math.abs(std) <= 8 * Number.EPSILON * Math.abs(mean);
}

/**
 * Whether per-seed values (or per-seed differences) do not vary: more than one of them, a mean that is a number, and
 * a std of 0 or of rounding noise: at most 8·ε of the larger of |mean| and `scale` (ε = `Number.EPSILON`). A
 * difference `a − b` carries the rounding of `a` and `b`, not of the difference: (0.1 + k) − k is 0.1 to within
 * ε·k, so differences of values near `scale` that are equal but for rounding spread by up to ε·scale. The seeds
 * then varied nothing about the value (both runs of a pair deterministic given the data, or the seed not reaching
 * what differs): the values repeat one measurement, and an interval or spread rule built on their std measures no
 * uncertainty. The verdicts judged on a spread over seeds read such values inconclusive, naming {@link NO_SPREAD}.
 *
 * @param std The sample std of the values.
 * @param mean Their mean.
 * @param n How many there are.
 * @param scale For differences, the largest magnitude among the values differenced (default 0: the mean's alone).
 * @returns True when the spread is none.
 *
 * @example
 * ```ts
 * import { isNoSpread } from "./report.ts";
 * const d = [1, 2, 3, 4].map((k) => 0.1 + k - k); // 0.1 up to rounding of 0.1 + k
 * const mean = d.reduce((s, x) => s + x, 0) / 4;
 * const std = Math.sqrt(d.reduce((s, x) => s + (x - mean) ** 2, 0) / 3);
 * console.log(std > 0, isNoSpread(std, mean, 4, 4.1)); // true true
 * ```
 */
export function isNoSpread(std: number, mean: number, n: number, scale = 0): boolean {
  return n > 1 && Number.isFinite(mean) &&
    Math.abs(std) <= 8 * Number.EPSILON * Math.max(Math.abs(mean), scale);
}

/**
 * Whether paired values over seeds repeat one measurement: where the pairing knows its sides (`sidesVary`, set by
 * `pairedDifference` and `pairedDiff`), when neither side varies over the seeds; where only the differences' mean and
 * spread are known, when they have no spread ({@link isNoSpread}, rounding judged at `scale`). A difference that is the same in every seed while the runs themselves vary (two methods
 * that agree exactly, run by run) is a result, not a repetition: its point interval stands.
 *
 * @param d The paired difference: mean, std, count, the scale of its rounding and whether its sides vary.
 * @returns True when the seeds repeat one measurement.
 */
export function repeatsOneMeasurement(
  d: { mean: number; std: number; n: number; scale?: number; sidesVary?: boolean },
): boolean {
  if (d.sidesVary !== undefined) return d.n > 1 && !d.sidesVary;
  return isNoSpread(d.std, d.mean, d.n, d.scale);
}

/** Whether values over seeds vary more than rounding (see {@link isNoSpread}). */
export function variesOverSeeds(values: readonly number[]): boolean {
  const { mean, std, n } = meanStd(values);
  return n > 1 && !isNoSpread(std, mean, n);
}

/** Why a verdict on values with no spread over seeds ({@link isNoSpread}) is inconclusive, for rules and notes. */
export const NO_SPREAD: string =
  "no spread over the seeds (the same value in every seed, up to rounding): the seeds varied nothing about it, " +
  "so they repeat one measurement, and a spread of 0 measures no uncertainty";

/**
 * Format a {@link MeanStd} as `mean ± std` (with `(n=…)` left out), or `mean (one value)` when there is one value.
 * A std that is rounding noise of the mean (at most 8·ε·|mean|, ε = `Number.EPSILON`) is printed as `0`.
 *
 * @param stats The statistics.
 * @param digits Significant digits of the mean (default 4).
 * @param options `against`: thresholds a rule compares the mean with; the mean is then printed by
 *   {@link formatAgainst}, on the same side of each as its value.
 * @returns E.g. `0.8123 ± 0.0131`.
 */
export function formatMeanStd(
  stats: MeanStd,
  digits = 4,
  options: { against?: readonly number[] } = {},
): string {
  checkAgainstOptions("formatMeanStd", options);
  const mean = formatAgainst(stats.mean, options.against ?? [], digits);
  // One value has no spread to show: "± 0" would read as none measured.
  if (stats.n === 1) return `${mean} (one value)`;
  const std = isStdNoise(stats.std, stats.mean) ? 0 : stats.std;
  return `${mean} ± ${formatNumber(std, Math.max(2, digits - 1))}`;
}

/** A table cell: text, or a number formatted with {@link formatNumber}. */
export type Cell = string | number | boolean | null | undefined;

/** Options of {@link mdTable}. */
export interface MdTableOptions {
  /** Per-column alignment; numeric columns are right-aligned by default, others left. */
  align?: readonly ("left" | "right" | "center")[];
  /** Significant digits for numbers (default 4). */
  digits?: number;
}

function cellText(cell: Cell, digits: number): string {
  if (cell === null || cell === undefined) return "";
  const raw = typeof cell === "number" ? formatNumber(cell, digits) : String(cell);
  return raw.replace(/\|/g, "\\|").replace(/\r?\n/g, "<br>");
}

/**
 * A GitHub-flavoured markdown table.
 *
 * @param headers Column headings.
 * @param rows Rows of cells, each as long as `headers`.
 * @param options Alignment and number formatting.
 * @returns The table, one line per row, ending with a newline.
 *
 * @example
 * ```ts
 * import { mdTable } from "./report.ts";
 * console.log(mdTable(["method", "loss"], [["LoRA", 1.23456], ["PiSSA", 1.1]]));
 * // | method | loss |
 * // | :--- | ---: |
 * // | LoRA | 1.235 |
 * // | PiSSA | 1.1 |
 * ```
 */
export function mdTable(
  headers: readonly string[],
  rows: readonly (readonly Cell[])[],
  options: MdTableOptions = {},
): string {
  checkOptions("mdTable", TABLE_OPTIONS, options);
  if ((options.align?.length ?? 0) > headers.length) {
    throw new RangeError(
      `mdTable: option "align" has ${options.align?.length} entries for ${headers.length} columns`,
    );
  }
  const digits = options.digits ?? 4;
  rows.forEach((row, i) => {
    if (row.length !== headers.length) {
      throw new Error(
        `mdTable row ${i} has ${row.length} cells, expected ${headers.length} (one per header)`,
      );
    }
  });
  const align = headers.map((_, c) => {
    const given = options.align?.[c];
    if (given !== undefined) return given;
    const numeric = rows.length > 0 && rows.every((row) => typeof row[c] === "number" || row[c] == null);
    return numeric ? "right" : "left";
  });
  const rule = { left: ":---", right: "---:", center: ":---:" };
  const line = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  return [
    line(headers.map((h) => cellText(h, digits))),
    line(align.map((a) => rule[a])),
    ...rows.map((row) => line(row.map((cell) => cellText(cell, digits)))),
  ].join("\n") + "\n";
}

/** A series of logged values reduced to a few numbers (see {@link summarizeMetric}). */
export interface MetricSummary {
  /** Number of records holding a finite number under the key. */
  count: number;
  /** Number of records holding a non-finite number (`NaN`, `Infinity`) under the key. */
  nonFinite: number;
  /** First finite value. */
  first: number;
  /** Last finite value. */
  last: number;
  /** Smallest finite value. */
  min: number;
  /** Largest finite value. */
  max: number;
  /** Mean of the finite values. */
  mean: number;
  /** Mean of the last `tail` finite values (a less noisy "final" value). */
  tailMean: number;
}

function asNumber(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  if (value === "NaN" || value === "Infinity" || value === "-Infinity") return Number(value);
  return undefined;
}

/**
 * Summarize the numeric values logged under `key`: first, last, min, max, mean and the mean of the last
 * few values. Records without the key are skipped; non-finite values are counted but not averaged.
 *
 * @param records Records as returned by {@link readJsonl}.
 * @param key The metric name, e.g. `"loss"`.
 * @param options `tail`: how many final values {@link MetricSummary.tailMean} averages (default 10).
 * @returns The summary, or `undefined` when no record holds a finite number under `key`.
 *
 * @example
 * ```ts
 * import { summarizeMetric } from "./report.ts";
 * const s = summarizeMetric([{ loss: 3 }, { loss: 2 }, { loss: 1 }], "loss", { tail: 2 });
 * console.log(s?.first, s?.last, s?.tailMean); // 3 1 1.5
 * ```
 */
export function summarizeMetric(
  records: readonly MetricRecord[],
  key: string,
  options: { tail?: number } = {},
): MetricSummary | undefined {
  checkOptions("summarizeMetric", SUMMARY_OPTIONS, options);
  const values: number[] = [];
  let nonFinite = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const record of records) {
    const value = asNumber(record[key]);
    if (value === undefined) continue;
    if (!Number.isFinite(value)) {
      nonFinite++;
      continue;
    }
    values.push(value);
    min = Math.min(min, value);
    max = Math.max(max, value);
  }
  if (values.length === 0) return undefined;
  const tail = values.slice(-(options.tail ?? 10));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return {
    count: values.length,
    nonFinite,
    first: values[0],
    last: values[values.length - 1],
    min,
    max,
    mean: sum(values) / values.length,
    tailMean: sum(tail) / tail.length,
  };
}

/** The label of {@link lastTenthMean} in tables and lines (the runs' losses hold every step). */
export const LAST_TENTH_LABEL = "mean loss, last 10%";

/**
 * How many of `n` recorded values {@link lastTenthMean} averages: a tenth, rounded up, so at least one (1 of 1..10,
 * 10 of 100, 11 of 101). `n / 10` is exact where it is an integer, so a multiple of 10 takes exactly a tenth.
 *
 * @param n The number of recorded values, an integer ≥ 1.
 * @returns ⌈n / 10⌉.
 */
export function lastTenthCount(n: number): number {
  if (!Number.isInteger(n) || n < 1) {
    throw new RangeError(`lastTenthCount: needs at least one recorded value, got n = ${n}`);
  }
  return Math.ceil(n / 10);
}

/**
 * The mean of the last 10% of a run's recorded values ({@link lastTenthCount} of them, at least one): the late
 * training loss reports print, where the last value alone is the loss of one batch. The runs of the experiments
 * record every step, so the window is the last ⌈steps / 10⌉ steps. A value that is not finite (a diverged run)
 * makes the mean not finite.
 *
 * @param values The values, in step order (at least one).
 * @returns Their mean over the last tenth.
 *
 * @example
 * ```ts
 * import { lastTenthMean } from "./report.ts";
 * console.log(lastTenthMean([9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0.3, 0.1])); // 0.2: the last 2 of 12
 * ```
 */
export function lastTenthMean(values: readonly number[]): number {
  const k = lastTenthCount(values.length);
  let sum = 0;
  for (let i = values.length - k; i < values.length; i++) sum += values[i];
  return sum / k;
}

/**
 * {@link lastTenthMean} as a run's line says it: `mean loss, last 10% (steps 91–100) 1.2345`, or `(step 7)` when
 * the window is one step; `digits` decimals.
 *
 * @param losses The run's loss per step (at least one).
 * @param digits Decimals (default 4).
 * @returns The text.
 */
export function lastTenthText(losses: readonly number[], digits = 4): string {
  const n = losses.length, k = lastTenthCount(n);
  const steps = k === 1 ? `step ${n}` : `steps ${n - k + 1}–${n}`;
  return `${LAST_TENTH_LABEL} (${steps}) ${lastTenthMean(losses).toFixed(digits)}`;
}

/**
 * The verdict on a claim that one value exceeds another by `diff`, against the spread of the difference over seeds:
 * "reproduced" beyond twice the spread, "not reproduced" below minus twice the spread, "inconclusive" between (and
 * always with one seed, or a spread of 0 or of rounding noise of the difference: there is no spread to judge by,
 * {@link isNoSpread}).
 *
 * @param diff The difference the claim predicts to be positive.
 * @param spread Its standard deviation over seeds (e.g. the combined std of the two means), ≥ 0.
 * @param seeds How many seeds the means are over, a positive integer.
 * @returns The verdict.
 *
 * @example
 * ```ts
 * import { verdictFor } from "./report.ts";
 * console.log(verdictFor(0.3, 0.1, 3)); // "reproduced"
 * ```
 */
export function verdictFor(diff: number, spread: number, seeds: number): string {
  if (!(spread >= 0)) throw new RangeError(`verdictFor: spread must be a number ≥ 0, got ${spread}`);
  if (!Number.isInteger(seeds) || seeds < 1) {
    throw new RangeError(`verdictFor: seeds must be a positive integer, got ${seeds}`);
  }
  if (seeds < 2) return "inconclusive (one seed: no spread to judge the difference against)";
  if (isNoSpread(spread, diff, seeds)) return `inconclusive (${NO_SPREAD})`;
  if (diff > 2 * spread) return "reproduced";
  if (diff < -2 * spread) return "not reproduced";
  return "inconclusive";
}

/** What {@link meanCurves} and {@link writeCombinedMetrics} read of a run. */
export interface CurveRun {
  /** The run's method. */
  label: string;
  /** Its seed. */
  seed: number;
  /** Loss per step. */
  losses: readonly number[];
  /** Global gradient norm per step. */
  gradNorms?: readonly number[];
}

/**
 * One line per label: the mean over the runs of that label of `key(run)` step by step (over the steps every run
 * has), with the min..max band when there are several runs.
 *
 * @param runs The runs.
 * @param labels The labels to plot, in order; each must label at least one run.
 * @param key The per-step values of a run.
 * @returns Series for `linePlot`.
 */
export function meanCurves<R extends CurveRun>(
  runs: readonly R[],
  labels: readonly string[],
  key: (r: R) => readonly number[],
): LineSeries[] {
  return labels.map((m) => {
    const rs = runs.filter((r) => r.label === m);
    if (rs.length === 0) {
      throw new RangeError(
        `meanCurves: no run is labelled ${JSON.stringify(m)} (the runs' labels: ${
          [...new Set(runs.map((r) => JSON.stringify(r.label)))].join(", ") || "none, no runs"
        })`,
      );
    }
    const n = Math.min(...rs.map((r) => key(r).length));
    const x = Array.from({ length: n }, (_, i) => i + 1);
    const mean = x.map((_, i) => rs.reduce((s, r) => s + key(r)[i], 0) / rs.length);
    const low = x.map((_, i) => Math.min(...rs.map((r) => key(r)[i])));
    const high = x.map((_, i) => Math.max(...rs.map((r) => key(r)[i])));
    return { name: m, x, y: mean, band: rs.length > 1 ? { low, high } : undefined };
  });
}

/**
 * Writes `metrics.jsonl` with every step of every run (`method`, `seed`, `step`, `loss`, `grad_norm`).
 *
 * @param results The run's results directory.
 * @param runs The runs.
 */
export function writeCombinedMetrics(results: ResultsDir, runs: readonly CurveRun[]): void {
  // toJson keeps NaN and infinities (a diverged run) as strings, where JSON.stringify writes null.
  const lines = runs.flatMap((r) =>
    r.losses.map((loss, i) =>
      toJson({ method: r.label, seed: r.seed, step: i + 1, loss, grad_norm: r.gradNorms?.[i] })
    )
  );
  writeFileAtomicSync(results.file("metrics.jsonl"), lines.join("\n") + "\n");
}

/** The verdicts a claim can get. */
export type Verdict = "reproduced" | "not reproduced" | "inconclusive";

/**
 * A claim judged by a rule fixed before the run. `rule` names the statistic, the pairing (e.g. the same batches
 * per seed), the threshold and the number of seeds; `evidence` gives the numbers the verdict rests on; `note` says,
 * for an inconclusive verdict, what run would decide it.
 */
export interface Claim {
  /** What the paper (or its seed) claims, in one sentence. */
  readonly claim: string;
  /** The rule, as stated before the run. */
  readonly rule: string;
  /** The numbers behind the verdict. */
  readonly evidence: string;
  /** The verdict. */
  readonly verdict: Verdict;
  /** Why it is inconclusive, or any caveat the reader needs. */
  readonly note?: string;
}

/** The verdict of a claim written as text by {@link judged} (`... : **reproduced**.`), or null. */
export function verdictOf(text: string): Verdict | null {
  const m = /\*\*(reproduced|not reproduced|inconclusive)\b[^*]*\*\*/.exec(text);
  return m === null ? null : m[1] as Verdict;
}

/** A claim as one Markdown list item: verdict, claim, rule, evidence (and the note). */
export function claimLine(c: Claim): string {
  return `**${c.verdict}** — ${c.claim} Rule: ${c.rule} Evidence: ${c.evidence}${
    c.note ? ` Note: ${c.note}` : ""
  }`;
}

/** A table of a report. */
export interface ReportTable {
  /** A `##` heading above it (none: it follows the setting directly). */
  heading?: string;
  /** A paragraph between the heading and the table. */
  note?: string;
  /** The column headers. */
  columns: readonly string[];
  /** The rows. */
  rows: readonly (readonly Cell[])[];
}

/** What an experiment reports. */
export interface Report {
  /** The title, `exp:<task>`. */
  title: string;
  /** The setting in one paragraph: adapter, data, base model, methods, hyper-parameters, seeds. */
  setting: string;
  /** The tables, in order. */
  tables: readonly ReportTable[];
  /**
   * Each claim with its rule, evidence and verdict ({@link Claim}); a plain sentence (`... : **reproduced**.`, see
   * {@link judged}) is accepted too.
   */
  claims: readonly (Claim | string)[];
  /** Plots by name: SVG text, saved as `<name>.svg` and `<name>.png`. */
  plots: Readonly<Record<string, string>>;
  /** What `summary.json` holds besides the claims (the configuration, the rows of the tables, ...). */
  data: Readonly<Record<string, unknown>>;
  /** Paragraphs after the tables and before the claims. */
  notes?: readonly string[];
}

/**
 * A claim as reports state it: the claim, its evidence in parentheses, and the verdict in bold.
 *
 * @param claim What the paper claims.
 * @param evidence The numbers it was judged on.
 * @param verdict The verdict (e.g. from {@link verdictFor}).
 * @returns The sentence.
 *
 * @example
 * ```ts
 * import { judged } from "./report.ts";
 * console.log(judged("EVA converges faster", "0.91 vs 0.95", "reproduced"));
 * // "EVA converges faster (0.91 vs 0.95): **reproduced**."
 * ```
 */
export function judged(claim: string, evidence: string, verdict: string): string {
  return `${claim} (${evidence}): **${verdict}**.`;
}

/**
 * Writes an experiment's report: `summary.md` (title, setting, tables, claims, the list of plots), `summary.json`
 * (`data` and the claims, with the run's record), and every plot as SVG and PNG; prints the Markdown.
 *
 * @param results The run's results directory.
 * @param report What to write.
 * @returns The Markdown text.
 */
export async function writeReport(results: ResultsDir, report: Report): Promise<string> {
  const plots = Object.keys(report.plots);
  const md = [`# ${report.title}`, ``, report.setting, ``];
  for (const t of report.tables) {
    if (t.heading !== undefined) md.push(`## ${t.heading}`, ``);
    if (t.note !== undefined) md.push(t.note, ``);
    md.push(mdTable(t.columns, t.rows), ``);
  }
  for (const n of report.notes ?? []) md.push(n, ``);
  md.push(`## Claims`, ``);
  md.push(
    ...(report.claims.length > 0
      ? report.claims.map((c) => `- ${typeof c === "string" ? c : claimLine(c)}`)
      : [
        "- None of this experiment's claims applies to the methods run (each names the methods it compares).",
      ]),
  );
  if (plots.length > 0) md.push(``, `Plots: ${plots.map((p) => `${p}.png`).join(", ")} (SVG beside each).`);
  const text = md.join("\n");
  results.writeMarkdown(text);
  results.writeSummary({ ...report.data, claims: report.claims });
  for (const [name, svg] of Object.entries(report.plots)) await results.savePlot(name, svg);
  console.log(`\n${text}`);
  return text;
}
