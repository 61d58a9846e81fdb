/**
 * Training: a loop helper that reads metrics back once every k steps while recording every step (with a progress
 * bar on a terminal), checkpoints that resume a run exactly, and batches that are pure functions of `(seed, step)`.
 *
 * @example
 * ```ts ignore
 * import { crossEntropy } from "../nn/mod.ts";
 * import { AdamW, cosineSchedule } from "../nn/optim/mod.ts";
 * import { tensor } from "../tensor/creation.ts";
 * import { sampleWindows, Trainer } from "./mod.ts";
 *
 * const trainer = new Trainer({
 *   model, // e.g. a small transformer LM
 *   optimizer: new AdamW(model, { lr: 3e-3 }),
 *   batch: (step) => {
 *     const { x, y } = sampleWindows(tokens, { batchSize: 8, seqLen: 32, seed: 0, step });
 *     return { x: tensor(x, { shape: [8, 32], dtype: "i32" }), y: tensor(y, { shape: [8, 32], dtype: "i32" }) };
 *   },
 *   loss: (m, b) => crossEntropy(m.forward(b.x), b.y),
 *   steps: 1000,
 *   schedule: cosineSchedule({ totalSteps: 1000, warmupRatio: 0.05 }),
 *   metrics: "results/run/metrics.jsonl",
 *   checkpoint: { path: "results/run/checkpoint.safetensors", every: 100 },
 *   seed: 0,
 * });
 * await trainer.run();
 * ```
 *
 * @module
 */
export * from "./trainer.ts";
export * from "./checkpoint.ts";
export * from "./batches.ts";
export * from "./progress.ts";
