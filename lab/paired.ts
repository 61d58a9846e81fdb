/**
 * Paired comparisons over seeds: two methods run on the same batches per seed give one difference per seed, and a
 * claim that the difference is positive is judged by a two-sided 95% t interval of its mean ({@link pairedDifference},
 * {@link pairedVerdict}). The rule is fixed before a run: {@link PAIRED_RULE} states it for reports.
 *
 * @module
 */
import { formatNumber, type Verdict } from "./report.ts";

/** Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (beyond 30: 1.96 + 2.4/df). */
const T975 = [
  12.706,
  4.303,
  3.182,
  2.776,
  2.571,
  2.447,
  2.365,
  2.306,
  2.262,
  2.228,
  2.201,
  2.179,
  2.16,
  2.145,
  2.131,
  2.12,
  2.11,
  2.101,
  2.093,
  2.086,
  2.08,
  2.074,
  2.069,
  2.064,
  2.06,
  2.056,
  2.052,
  2.048,
  2.045,
  2.042,
];

/**
 * The 97.5% quantile of Student's t with `df` degrees of freedom (table to 30, then a close approximation).
 *
 * @example
 * ```ts
 * import { tQuantile975 } from "./paired.ts";
 * console.log(tQuantile975(4)); // 2.776
 * ```
 */
export function tQuantile975(df: number): number {
  if (!Number.isInteger(df) || df < 1) {
    throw new RangeError(`tQuantile975: df must be an integer ≥ 1, got ${df}`);
  }
  return df <= T975.length ? T975[df - 1] : 1.96 + 2.4 / df;
}

/** The mean of per-seed differences with its spread and the half-width of its 95% t interval. */
export interface PairedDifference {
  /** Mean of the differences. */
  mean: number;
  /** Sample standard deviation of the differences (0 for one pair). */
  std: number;
  /** Number of pairs. */
  n: number;
  /** Half-width of the two-sided 95% t interval of the mean (Infinity for one pair). */
  half: number;
}

/**
 * The differences `a[i] − b[i]` (pairs = the same seed and batches) reduced to mean, std and the 95% half-width.
 *
 * @param a Per-seed values of the first method.
 * @param b Per-seed values of the second, in the same seed order.
 * @returns The paired difference.
 *
 * @example
 * ```ts
 * import { pairedDifference } from "./paired.ts";
 * const d = pairedDifference([1.0, 1.2, 0.9], [0.8, 1.1, 0.6]);
 * console.log(d.mean.toFixed(3), d.n); // "0.200" 3
 * ```
 */
export function pairedDifference(a: readonly number[], b: readonly number[]): PairedDifference {
  if (a.length !== b.length || a.length === 0) {
    throw new RangeError(
      `pairedDifference: needs two equally long non-empty lists, got ${a.length} and ${b.length}`,
    );
  }
  const d = a.map((x, i) => x - b[i]);
  const n = d.length;
  const mean = d.reduce((s, x) => s + x, 0) / n;
  const std = n > 1 ? Math.sqrt(d.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std, n, half: n > 1 ? tQuantile975(n - 1) * std / Math.sqrt(n) : Infinity };
}

/**
 * The verdict on "the difference is above `threshold`" (default 0): reproduced when the 95% interval lies above
 * it, not reproduced when it lies below it, inconclusive when it covers it (always with one pair).
 *
 * @example
 * ```ts
 * import { pairedDifference, pairedVerdict } from "./paired.ts";
 * console.log(pairedVerdict(pairedDifference([2, 3, 4], [1, 1.9, 3.1]))); // "reproduced"
 * ```
 */
export function pairedVerdict(d: PairedDifference, threshold = 0): Verdict {
  if (!(d.n > 1) || !Number.isFinite(d.mean)) return "inconclusive";
  if (d.mean - d.half > threshold) return "reproduced";
  if (d.mean + d.half < threshold) return "not reproduced";
  return "inconclusive";
}

/** The rule of {@link pairedVerdict}, for a claim's `rule` text. */
export const PAIRED_RULE: string =
  "reproduced when the two-sided 95% t interval of the mean per-seed difference lies above " +
  "0, not reproduced when it lies below 0, inconclusive otherwise";

/**
 * A paired difference as text: `mean ± std (95% ± half, n pairs)`.
 *
 * @example
 * ```ts
 * import { formatPaired, pairedDifference } from "./paired.ts";
 * console.log(formatPaired(pairedDifference([2, 3], [1, 1]))); // "1.5 ± 0.707 (95% ± 6.353, 2 pairs)"
 * ```
 */
export function formatPaired(d: PairedDifference, digits = 4): string {
  return `${formatNumber(d.mean, digits)} ± ${formatNumber(d.std, Math.max(2, digits - 1))} (95% ± ${
    formatNumber(d.half, digits)
  }, ${d.n} pairs)`;
}

/** The most pairs {@link pairsNeeded} counts up to. */
export const MAX_PAIRS_NEEDED = 10_000;

/**
 * How many pairs would put the 95% interval of a difference with this mean and spread clear of 0 (the smallest n
 * with t(n−1)·std/√n < |mean|), Infinity when that takes more than {@link MAX_PAIRS_NEEDED}, or null when no
 * number would: the mean is 0. Throws when the difference cannot say (one pair, whose spread is unknown, or a
 * mean or spread that is not a number): callers judge those inconclusive without an estimate.
 */
export function pairsNeeded(d: PairedDifference): number | null {
  if (d.n < 2 || !Number.isFinite(d.mean) || !Number.isFinite(d.std)) {
    throw new RangeError(
      `pairsNeeded: a difference of ${d.n} pair(s) with mean ${d.mean} and std ${d.std} gives no estimate`,
    );
  }
  if (!(Math.abs(d.mean) > 0)) return null;
  for (let n = 2; n <= MAX_PAIRS_NEEDED; n++) {
    if (tQuantile975(n - 1) * d.std / Math.sqrt(n) < Math.abs(d.mean)) return n;
  }
  return Infinity;
}

/**
 * The note of an inconclusive paired claim: how many seeds would separate the difference and what they would cost
 * (`runsPerSeed` runs of `secondsPerRun` each), that more than {@link MAX_PAIRS_NEEDED} would be needed, or why
 * there is no estimate (one pair, a non-finite difference, or a mean of 0).
 */
export function seedsNote(d: PairedDifference, runsPerSeed: number, secondsPerRun: number): string {
  if (d.n < 2 || !Number.isFinite(d.mean) || !Number.isFinite(d.std)) {
    return `${d.n} pair(s) with mean ${d.mean}: no estimate of the seeds that would separate it`;
  }
  const pairs = pairsNeeded(d);
  if (pairs === null) return "the mean difference is 0: no number of seeds would separate it";
  if (pairs === Infinity) {
    return `a difference of this size and spread would need more than ${
      MAX_PAIRS_NEEDED.toLocaleString("en-US")
    } seeds to separate`;
  }
  return `about ${pairs} seeds would separate a difference of this size and spread: ${pairs} × ${runsPerSeed} runs × ` +
    `${secondsPerRun.toFixed(0)} s ≈ ${
      (pairs * runsPerSeed * secondsPerRun / 60).toFixed(0)
    } min on this device`;
}
