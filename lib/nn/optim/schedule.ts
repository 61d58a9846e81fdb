/**
 * Learning-rate schedules: functions from the 1-based step number to a factor that multiplies every group's
 * learning rate. All support a linear warm-up (`warmupRatio` of the steps, or `warmupSteps`): step `s ≤ W`
 * gets `s / W`, so the first step is not wasted at zero and step `W` reaches 1. After the warm-up, with
 * `progress = (s − W) / (totalSteps − W)` (clamped to 1):
 *
 * | schedule | factor |
 * |---|---|
 * | constant | 1 |
 * | linear | `1 − (1 − final) · progress` |
 * | cosine | `final + (1 − final) · (1 + cos(π · progress)) / 2` |
 *
 * @module
 */

import { z } from "../../../deps.ts";
import { checkOptions, opt } from "../../options.ts";

const SCHEDULE_OPTIONS = z.object({
  totalSteps: opt.count(),
  warmupRatio: opt.fraction().optional(),
  warmupSteps: opt.index().optional(),
  final: opt.fraction().optional(),
}).strict();

/** A learning-rate factor for each step (1-based). */
export type Schedule = (step: number) => number;

/** Options of the schedules. */
export interface ScheduleOptions {
  /** Number of steps of the run (the decay ends there). */
  totalSteps: number;
  /** Fraction of `totalSteps` spent warming up (rounded up; default 0). */
  warmupRatio?: number;
  /** Warm-up length in steps (overrides `warmupRatio`). */
  warmupSteps?: number;
  /** Factor at the end of the decay (default 0; ignored by the constant schedule). */
  final?: number;
}

/**
 * ceil(ratio · n), where a product that misses an integer only by floating-point rounding counts as that integer:
 * 0.07 · 100 is 7.000000000000001, and 7 % of 100 steps is 7 steps, not 8. The rounding of `ratio` to a double and
 * of the product each move it by at most 2^-53 of itself, while the product of a ratio of d decimals and a step
 * count misses an integer by at least 10^-d when it is not one: a relative 1e-12 tells the two apart for any
 * realistic run length.
 */
function ceilOfProduct(ratio: number, n: number): number {
  const exact = ratio * n;
  const nearest = Math.round(exact);
  return Math.abs(exact - nearest) <= 1e-12 * Math.max(1, exact) ? nearest : Math.ceil(exact);
}

/** The number of warm-up steps these options give. */
export function warmupLength(opts: ScheduleOptions): number {
  checkOptions("schedule", SCHEDULE_OPTIONS, opts);
  const { totalSteps, warmupRatio = 0, warmupSteps } = opts;
  const w = warmupSteps ?? ceilOfProduct(warmupRatio, totalSteps);
  if (!Number.isInteger(w) || w < 0 || w > totalSteps) {
    throw new RangeError(`schedule: warmupSteps must be an integer in [0, ${totalSteps}], got ${w}`);
  }
  return w;
}

function make(opts: ScheduleOptions, decay: (progress: number) => number): Schedule {
  const w = warmupLength(opts);
  const total = opts.totalSteps;
  return (step: number) => {
    if (!Number.isFinite(step) || step < 1) throw new RangeError(`schedule: steps start at 1, got ${step}`);
    if (step <= w) return step / w;
    return decay(total === w ? 1 : Math.min(1, (step - w) / (total - w)));
  };
}

function checkFinal(final: number): number {
  if (!(final >= 0 && final <= 1)) throw new RangeError(`schedule: final must be in [0, 1], got ${final}`);
  return final;
}

/**
 * Factor 1 after an optional linear warm-up.
 *
 * @example
 * ```ts
 * import { constantSchedule } from "./schedule.ts";
 * const f = constantSchedule({ totalSteps: 100, warmupSteps: 10 });
 * [f(1), f(5), f(10), f(100)]; // [0.1, 0.5, 1, 1]
 * ```
 */
export function constantSchedule(opts: ScheduleOptions = { totalSteps: 1 }): Schedule {
  // A constant factor ends at 1: a final factor would be ignored.
  if (opts.final !== undefined) {
    throw new RangeError(
      `constantSchedule: final ${opts.final} is for a decaying schedule; a constant one ends at 1`,
    );
  }
  return make(opts, () => 1);
}

/**
 * Linear warm-up, then a linear decay to `final` at `totalSteps`.
 *
 * @example
 * ```ts
 * import { linearSchedule } from "./schedule.ts";
 * const f = linearSchedule({ totalSteps: 100, warmupRatio: 0.1 });
 * [f(5), f(10), f(55), f(100)]; // [0.5, 1, 0.5, 0]
 * ```
 */
export function linearSchedule(opts: ScheduleOptions): Schedule {
  const final = checkFinal(opts.final ?? 0);
  return make(opts, (p) => 1 - (1 - final) * p);
}

/**
 * Linear warm-up, then a half-cosine decay to `final` at `totalSteps`.
 *
 * @example
 * ```ts
 * import { cosineSchedule } from "./schedule.ts";
 * const f = cosineSchedule({ totalSteps: 110, warmupSteps: 10, final: 0.1 });
 * [f(10), f(60), f(110)]; // [1, 0.55, 0.1]
 * ```
 */
export function cosineSchedule(opts: ScheduleOptions): Schedule {
  const final = checkFinal(opts.final ?? 0);
  return make(opts, (p) => final + (1 - final) * 0.5 * (1 + Math.cos(Math.PI * p)));
}
