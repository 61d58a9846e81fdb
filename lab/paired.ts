/**
 * Paired comparisons over seeds: two methods run on the same batches per seed give one difference per seed, and a
 * claim that the difference is positive is judged by a two-sided 95% t interval of its mean ({@link pairedDifference},
 * {@link pairedVerdict}). The rule is fixed before a run: {@link PAIRED_RULE} states it for reports.
 *
 * @module
 */
import {
  checkAgainstOptions,
  checkThreshold,
  formatAgainst,
  formatNumber,
  isStdNoise,
  NO_SPREAD,
  repeatsOneMeasurement,
  variesOverSeeds,
  type Verdict,
} from "./report.ts";

/**
 * P(|T| ≤ tan θ·√ν) for Student's t with ν degrees of freedom, in closed form (Abramowitz & Stegun 26.7.3–4):
 * odd ν: (2/π)·(θ + sin θ·cos θ·Σₖ aₖ·cos²ᵏθ), a₀ = 1, aₖ = aₖ₋₁·2k/(2k+1), k < (ν−1)/2;
 * even ν: sin θ·Σₖ bₖ·cos²ᵏθ, b₀ = 1, bₖ = bₖ₋₁·(2k−1)/(2k), k < ν/2.
 */
function tCentralMass(theta: number, df: number): number {
  const c2 = Math.cos(theta) ** 2;
  let term = 1;
  let sum = 1;
  if (df % 2 === 1) {
    for (let k = 1; k < (df - 1) / 2; k++) sum += term *= (2 * k) / (2 * k + 1) * c2;
    return (2 / Math.PI) * (theta + (df > 1 ? Math.sin(theta) * Math.cos(theta) * sum : 0));
  }
  for (let k = 1; k < df / 2; k++) sum += term *= (2 * k - 1) / (2 * k) * c2;
  return Math.sin(theta) * sum;
}

/** The degrees of freedom above which {@link tQuantile975} uses its expansion (error below 1e-10 there). */
const EXPANSION_FROM = 100;

/** The 97.5% quantile of the standard normal. */
const Z975 = 1.959963984540054;

/**
 * The 97.5% quantile of Student's t with `df` degrees of freedom: up to 100, the root of the closed-form
 * distribution function (bisection on θ = atan(t/√ν), to double precision); beyond, Fisher's expansion in 1/ν
 * (Abramowitz & Stegun 26.7.5, four terms), whose error there is below 1e-10.
 *
 * @example
 * ```ts
 * import { tQuantile975 } from "./paired.ts";
 * console.log(tQuantile975(4).toFixed(4)); // "2.7764"
 * ```
 */
export function tQuantile975(df: number): number {
  if (!Number.isInteger(df) || df < 1) {
    throw new RangeError(`tQuantile975: df must be an integer ≥ 1, got ${df}`);
  }
  if (df > EXPANSION_FROM) {
    const z = Z975, z2 = Z975 * Z975;
    const g1 = (z2 + 1) * z / 4;
    const g2 = ((5 * z2 + 16) * z2 + 3) * z / 96;
    const g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384;
    const g4 = ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160;
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4;
  }
  // The central mass rises with θ from 0 (θ = 0) to 1 (θ = π/2): halve the bracket until it stops shrinking.
  let lo = 0, hi = Math.PI / 2;
  for (;;) {
    const mid = (lo + hi) / 2;
    if (mid <= lo || mid >= hi) break;
    if (tCentralMass(mid, df) < 0.95) lo = mid;
    else hi = mid;
  }
  return Math.sqrt(df) * Math.tan((lo + hi) / 2);
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
  /** Whether either side varies over the seeds (see {@link repeatsOneMeasurement}). */
  sidesVary?: boolean;
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
  return { mean, std, n, half: halfWidth95(std, n), sidesVary: variesOverSeeds(a) || variesOverSeeds(b) };
}

/**
 * The half-width of the 95% t interval of a mean of `n` values with sample std `std` (∞ for fewer than two).
 *
 * @param std The sample standard deviation.
 * @param n The number of values.
 * @returns `t₀.₉₇₅(n − 1) · std / √n`.
 */
export function halfWidth95(std: number, n: number): number {
  return n > 1 ? tQuantile975(n - 1) * std / Math.sqrt(n) : Infinity;
}

/**
 * The verdict on "the difference is above `threshold`" (default 0): reproduced when the 95% interval lies above
 * it, not reproduced when it lies below it, inconclusive when it covers it (always with one pair), and inconclusive
 * when the pairs repeat one measurement ({@link repeatsOneMeasurement}: neither run of a pair varies over the seeds,
 * up to rounding, so the seed reached nothing either run depends on), where the interval, a point, measures no
 * uncertainty. Runs that vary over the seeds while their difference stays the same (two methods that agree run by
 * run) are judged by the rule: their point interval is the result.
 *
 * @example
 * ```ts
 * import { pairedDifference, pairedVerdict } from "./paired.ts";
 * console.log(pairedVerdict(pairedDifference([2, 3, 4], [1, 1.9, 3.1]))); // "reproduced"
 * ```
 */
export function pairedVerdict(d: PairedDifference, threshold = 0): Verdict {
  checkThreshold("pairedVerdict", threshold);
  if (!(d.n > 1) || !Number.isFinite(d.mean) || repeatsOneMeasurement(d)) {
    return "inconclusive";
  }
  if (d.mean - d.half > threshold) return "reproduced";
  if (d.mean + d.half < threshold) return "not reproduced";
  return "inconclusive";
}

/** The rule of {@link pairedVerdict}, for a claim's `rule` text. */
export const PAIRED_RULE: string =
  "reproduced when the two-sided 95% t interval of the mean per-seed difference lies above " +
  "0, not reproduced when it lies below 0, inconclusive otherwise, and inconclusive when every seed gives the " +
  "same values (neither run of a pair varies over the seeds, up to rounding: the seeds then repeat one " +
  "measurement, and the interval, a point, measures no uncertainty)";

/** The words {@link formatPaired} and {@link seedsNote} print for pairs that repeat one measurement. */
const SAME_VALUES = "the same values in every pair: no spread, no interval";

/**
 * A paired difference as text: `mean ± std (95% ± half, interval lo..hi, n pairs)`. The interval's ends are what
 * {@link pairedVerdict} compares with its threshold, so they are printed by {@link formatAgainst} against
 * `against` (default [0], the threshold of {@link PAIRED_RULE}): each on the same side of each threshold as its
 * value, where `mean − half` worked out from the rounded numbers could land on the other. A std that is rounding
 * noise of the mean ({@link isStdNoise}, as in `formatMeanStd`) is printed as 0; with more than one pair there is
 * then no interval to print, and the text says why {@link pairedVerdict} reads it inconclusive:
 * `mean ± 0 (n pairs, the same values in every pair: no spread, no interval)`.
 *
 * @example
 * ```ts
 * import { formatPaired, pairedDifference } from "./paired.ts";
 * console.log(formatPaired(pairedDifference([2, 3], [1, 1])));
 * // "1.5 ± 0.707 (95% ± 6.353, interval -4.853..7.853, 2 pairs)"
 * ```
 */
export function formatPaired(
  d: PairedDifference,
  digits = 4,
  options: { against?: readonly number[] } = {},
): string {
  checkAgainstOptions("formatPaired", options);
  const against = options.against ?? [0];
  const end = (v: number) => formatAgainst(v, against, digits);
  const noise = isStdNoise(d.std, d.mean);
  if (repeatsOneMeasurement(d)) {
    return `${formatNumber(d.mean, digits)} ± 0 (${d.n} pairs, ${SAME_VALUES})`;
  }
  return `${formatNumber(d.mean, digits)} ± ${
    formatNumber(noise ? 0 : d.std, Math.max(2, digits - 1))
  } (95% ± ${formatNumber(noise ? 0 : d.half, digits)}, interval ${end(d.mean - d.half)}..${
    end(d.mean + d.half)
  }, ${d.n} pairs)`;
}

/** The most pairs {@link pairsNeeded} counts up to. */
export const MAX_PAIRS_NEEDED = 10_000;

/**
 * How many pairs would put the 95% interval of a difference with this mean and spread clear of 0 (the smallest n
 * with t(n−1)·std/√n < |mean|), Infinity when that takes more than {@link MAX_PAIRS_NEEDED}, or null when no
 * number would: the mean is 0. Throws when the difference cannot say (one pair, whose spread is unknown, a mean or
 * spread that is not a number, or pairs that repeat one measurement, {@link repeatsOneMeasurement}: a spread of 0
 * is not the spread more seeds would have, and it would make 2 pairs look enough): callers judge those inconclusive
 * without an estimate.
 */
export function pairsNeeded(d: PairedDifference): number | null {
  if (d.n < 2 || !Number.isFinite(d.mean) || !Number.isFinite(d.std)) {
    throw new RangeError(
      `pairsNeeded: a difference of ${d.n} pair(s) with mean ${d.mean} and std ${d.std} gives no estimate`,
    );
  }
  if (repeatsOneMeasurement(d)) {
    throw new RangeError(
      `pairsNeeded: ${d.n} pairs of the same values (mean ${d.mean}, std ${d.std}) give no estimate: ` +
        NO_SPREAD,
    );
  }
  if (!(Math.abs(d.mean) > 0)) return null;
  for (let n = 2; n <= MAX_PAIRS_NEEDED; n++) {
    if (halfWidth95(d.std, n) < Math.abs(d.mean)) return n;
  }
  return Infinity;
}

/**
 * The note of an inconclusive paired claim: how many seeds would separate the difference and what they would cost
 * (`runsPerSeed` runs of `secondsPerRun` each, times to 2 significant digits, the total in seconds under a minute
 * and in minutes from one), that more than {@link MAX_PAIRS_NEEDED} would be needed, or why
 * there is no estimate (one pair, a non-finite difference, a mean of 0, or the same values in every pair:
 * more seeds of this set-up would repeat it, and only one where the seed reaches what differs could decide).
 */
export function seedsNote(d: PairedDifference, runsPerSeed: number, secondsPerRun: number): string {
  if (d.n < 2 || !Number.isFinite(d.mean) || !Number.isFinite(d.std)) {
    return `${d.n} pair(s) with mean ${d.mean}: no estimate of the seeds that would separate it`;
  }
  if (repeatsOneMeasurement(d)) {
    return `${d.n} pairs, ${SAME_VALUES}: the seeds varied neither run, so the pairs repeat ` +
      "one measurement and more seeds of this set-up would repeat it again; no number of seeds is estimated (a " +
      "set-up where the seed reaches what differs between the two runs would decide it)";
  }
  const pairs = pairsNeeded(d);
  if (pairs === null) return "the mean difference is 0: no number of seeds would separate it";
  if (pairs === Infinity) {
    return `a difference of this size and spread would need more than ${
      MAX_PAIRS_NEEDED.toLocaleString("en-US")
    } seeds to separate`;
  }
  // Two significant digits: whole seconds and minutes printed a run of 0.4 s as "0 s" and a total of 24 s as "0 min".
  const total = pairs * runsPerSeed * secondsPerRun;
  const cost = total < 60 ? `${formatNumber(total, 2)} s` : `${formatNumber(total / 60, 2)} min`;
  return `about ${pairs} seeds would separate a difference of this size and spread: ${pairs} × ${runsPerSeed} runs × ` +
    `${formatNumber(secondsPerRun, 2)} s ≈ ${cost} on this device`;
}
