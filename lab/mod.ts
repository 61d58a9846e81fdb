/**
 * The lab: what exists to run, record and show experiments on top of the library (`../mod.ts`). Strict CLI/YAML
 * configuration, results directories (locked, resumable, recorded), SVG/PNG plots, the pretrained base models the
 * experiments share (cached under `.cache/`), generated corpora, the toy VLM's staged pretraining, and the set-up of
 * the language-model experiments.
 *
 * @example
 * ```ts ignore
 * import { cliConfig, linePlot, ResultsDir } from "./mod.ts";
 * import { Progress } from "../mod.ts";
 * import { z } from "../deps.ts";
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
export * from "./results.ts";
export * from "./report.ts";
export * from "./paired.ts";
export * from "./plot.ts";
export * from "./png.ts";
export * from "./lock.ts";
export * from "./cache.ts";
export * from "./generated.ts";
export * from "./toy_vlm.ts";
export * from "./methods.ts";
export * from "./experiment.ts";
export * from "./lm.ts";
export * from "./lm_probe.ts";
export * from "./classify.ts";
