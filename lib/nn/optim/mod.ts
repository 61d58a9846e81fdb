/**
 * Optimisers (SGD with momentum, Adam, AdamW) with parameter groups, global-norm clipping and learning-rate
 * schedules (constant, linear, cosine, each with warm-up).
 *
 * @example
 * ```ts
 * import { Mlp } from "../mlp.ts";
 * import { AdamW, cosineSchedule } from "./mod.ts";
 * const model = new Mlp([4, 16, 2], { seed: 0 });
 * const opt = new AdamW(model, { lr: 3e-3 });
 * const schedule = cosineSchedule({ totalSteps: 200, warmupRatio: 0.05 });
 * // each step: await opt.step(grads, { lrScale: schedule(step) });
 * ```
 *
 * @module
 */
export * from "./optimizer.ts";
export * from "./sgd.ts";
export * from "./adam.ts";
export * from "./schedule.ts";
export * from "./clip.ts";
