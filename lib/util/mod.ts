/**
 * Utilities for experiment scripts and commands: strict CLI/YAML configuration, metrics logging,
 * progress bars, SVG/PNG plots and results directories. Nothing here depends on the tensor library.
 *
 * @example
 * ```ts ignore
 * import { cliConfig, linePlot, Progress, ResultsDir } from "./mod.ts";
 * import { z } from "../../deps.ts";
 *
 * const config = cliConfig(
 *   z.object({ steps: z.int().positive().default(100).describe("training steps") }),
 *   { name: "experiments/demo.ts", description: "Does the loss go down?" },
 * );
 * const run = ResultsDir.create("demo");
 * run.writeConfig(config);
 * using metrics = run.metrics();
 * const progress = new Progress(config.steps, { label: "train" });
 * const losses: number[] = [];
 * for (let step = 1; step <= config.steps; step++) {
 *   const loss = 1 / step;
 *   losses.push(loss);
 *   metrics.write({ step, loss });
 *   progress.update(step, { loss });
 * }
 * progress.done();
 * const steps = losses.map((_, i) => i + 1);
 * await run.savePlot("loss", linePlot({ title: "loss", series: [{ name: "train", x: steps, y: losses }] }));
 * run.writeSummary({ finalLoss: losses.at(-1) });
 * ```
 *
 * @module
 */
export * from "./config.ts";
export * from "./metrics.ts";
export * from "./plot.ts";
export * from "./png.ts";
export * from "./progress.ts";
export * from "./results.ts";
