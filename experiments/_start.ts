/**
 * The opening every experiment shares: parse the configuration (flags over `--config` YAML over the `--quick`
 * preset over the schema's defaults), pick the device, open the results directory (a new one, or the one named
 * by `--resume`), record the configuration with the adapter, and say where the results go; and the closing
 * {@link runMain}, which turns any error into one readable line.
 *
 * `--resume` reopens only a directory the same experiment created, takes its lock (one process at a time), and
 * compares the configuration with the recorded one key by key: a difference in anything that affects results is
 * refused, naming each key with both values. The run's length may grow only with `--extend` (where the experiment
 * supports it), and the extension is recorded in `config.yaml`.
 *
 * @module
 */
import { deviceLine, resolveDevice } from "../lib/runtime/realize.ts";
import type { DeviceName } from "../lib/ir/node.ts";
import type { DeviceChoice } from "../lib/runtime/device.ts";
import {
  cliConfig,
  type ConfigDefaults,
  type ConfigInputOf,
  type ConfigOf,
  type ConfigSchema,
  exitWithError,
} from "../lib/util/config.ts";
import { type ConfigDifference, configDifferences, ResultsDir } from "../lib/util/results.ts";
import { showValue } from "../lib/options.ts";
import { z } from "../deps.ts";

/** What {@link startExperiment} needs to know about the experiment. */
export interface ExperimentAbout<S extends ConfigSchema> {
  /** The task name after `exp:`, e.g. `eva`. */
  task: string;
  /** The folder under `results/`. */
  dir: string;
  /** The question it answers (top of `--help`). */
  description: string;
  /** The `--quick` preset: smaller sizes, still overridden by explicit flags and YAML keys. */
  quick: ConfigDefaults<ConfigInputOf<S>>;
  /** Checks across keys, run before anything is written (throw a RangeError naming the keys). */
  check?: (cfg: ConfigOf<S>) => void;
  /**
   * The key holding the run's length (e.g. `steps`) when the experiment can continue finished runs to a larger
   * value: `--resume DIR --extend --steps N` is then accepted (and recorded). The schema needs an `extend` key.
   */
  extendable?: string;
}

/** A started experiment. */
export interface Started<C> {
  /** The validated configuration. */
  cfg: C;
  /** The device it runs on. */
  device: DeviceName;
  /** The device as resolved, its adapter and (for `auto`) why it was picked. */
  adapter: string;
  /** Its results directory, with `config.yaml` written. */
  results: ResultsDir;
}

/** Keys that do not affect results: where to resume from, and the permission to extend. */
const NOT_RESULTS = new Set(["resume", "extend"]);

function valueText(v: unknown): string {
  return v === undefined ? "(not set)" : showValue(v);
}

/**
 * The results directory to write into: a new one, or the `--resume` one after checking that it belongs to this
 * experiment and that its recorded configuration matches `record` (or differs only by an allowed extension).
 */
function openResults(
  about: ExperimentAbout<ConfigSchema>,
  record: Record<string, unknown>,
  resume: string | undefined,
  extend: boolean,
  recorded: (extensions: number) => void,
): ResultsDir {
  if (resume === undefined) {
    if (extend) throw new RangeError("--extend makes a previous run longer: use it with --resume <dir>");
    const results = ResultsDir.create(about.dir);
    results.writeConfig(record);
    return results;
  }
  const results = ResultsDir.open(resume, about.dir);
  recorded(results.extensions.length);
  const stored = results.storedConfig;
  if (stored === null) {
    // Interrupted between creating the directory and recording the configuration: nothing ran yet.
    results.writeConfig(record);
    return results;
  }
  const diffs = configDifferences(stored, record, NOT_RESULTS);
  const key = about.extendable;
  let extension: ConfigDifference | undefined;
  if (extend) {
    if (key === undefined) throw new RangeError(`exp:${about.task} cannot extend a run`);
    extension = diffs.find((d) => d.key === key);
    if (extension !== undefined && !(Number(extension.current) > Number(extension.stored))) {
      throw new RangeError(
        `--extend makes the run longer: --${key} must be more than the run's ${
          valueText(extension.stored)
        }, got ${valueText(extension.current)}`,
      );
    }
  }
  const refused = diffs.filter((d) => d !== extension);
  if (refused.length > 0) {
    const lines = refused.map((d) =>
      `  ${d.key}: ${valueText(d.stored)} in the run, ${valueText(d.current)} now`
    );
    const longer = key !== undefined && refused.some((d) => d.key === key) && !extend
      ? `, or make the run longer with --extend (only --${key} may change)`
      : "";
    throw new RangeError(
      `--resume "${results.path}" was run with a different configuration:\n${lines.join("\n")}\n` +
        `Resume with the run's settings (${
          results.file("config.yaml")
        }), start a new run without --resume${longer}.`,
    );
  }
  if (extension !== undefined) {
    results.recordExtension({ key: extension.key, from: extension.stored, to: extension.current }, record);
  }
  return results;
}

/** Parses the configuration, opens the results directory and prints the header lines. */
export async function startExperiment<S extends ConfigSchema>(
  schema: S,
  about: ExperimentAbout<S>,
): Promise<Started<ConfigOf<S>>> {
  const name = `deno task exp:${about.task}`;
  const first = cliConfig(schema, { name, description: about.description });
  // With quick set (by flag or YAML), parse again with the preset under the flags and YAML keys.
  const quick = (first as { quick?: boolean }).quick === true;
  const cfg = quick
    ? cliConfig(schema, { name, description: about.description, defaults: about.quick })
    : first;
  const common = cfg as { device?: DeviceChoice; resume?: string; extend?: boolean };
  if (about.check !== undefined) {
    try {
      about.check(cfg);
    } catch (e) {
      console.error(`${name}: ${(e as Error).message}`);
      Deno.exit(2);
    }
  }
  const device = resolveDevice(common.device);
  const adapter = await deviceLine(common.device);
  const record = { ...(cfg as Record<string, unknown>), device, adapter };
  let results: ResultsDir;
  let extensionsBefore = 0;
  try {
    results = openResults(
      about as unknown as ExperimentAbout<ConfigSchema>,
      record,
      common.resume,
      common.extend === true,
      (n) => (extensionsBefore = n),
    );
  } catch (err) {
    exitWithError(name, err, 2);
  }
  console.log(`exp:${about.task} → ${results.path}\ndevice: ${adapter}`);
  if (results.removedTemporaries.length > 0) {
    console.log(`removed ${results.removedTemporaries.length} temporary file(s) left by interrupted writes`);
  }
  const extension = results.extensions.at(-1);
  if (extension !== undefined && results.extensions.length > extensionsBefore) {
    console.log(
      `extended: ${extension.key} ${valueText(extension.from)} → ${valueText(extension.to)} (recorded in ` +
        `${results.file("config.yaml")})`,
    );
  }
  return { cfg, device, adapter, results };
}

/**
 * Runs an experiment's `main`; any error ends the process with status 1 after one readable message on stderr
 * (the stack trace only with `DEBUG` set).
 *
 * @param task The task name after `exp:`.
 * @param main The experiment.
 */
export async function runMain(task: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    exitWithError(`deno task exp:${task}`, err, 1);
  }
}

/**
 * A list-valued key whose values must be distinct, with at least one value: `--seeds 0,0` or `--methods lora,lora`
 * (a replicate counted twice) and `--seeds ""` are configuration errors naming the key and the value.
 *
 * @param element The schema of one value.
 * @param options `allowEmpty`: accept an empty list (for keys where none means "skip").
 * @returns The list schema (add `.default(...)` and `.describe(...)` as usual).
 *
 * @example
 * ```ts
 * import { distinctList } from "./_start.ts";
 * import { parseConfig } from "../lib/util/config.ts";
 * import { z } from "../deps.ts";
 * const Config = z.object({ seeds: distinctList(z.int()).default([0, 1, 2]) });
 * parseConfig(Config, ["--seeds", "3,4"], { name: "demo.ts" }); // { seeds: [3, 4] }
 * // parseConfig(Config, ["--seeds", "3,3"], ...) throws: config key "seeds": 3 is given twice ...
 * ```
 */
export function distinctList<T extends z.ZodType>(
  element: T,
  options: { allowEmpty?: boolean } = {},
): z.ZodArray<T> {
  const list = options.allowEmpty ? z.array(element) : z.array(element).min(1, "needs at least one value");
  return list.superRefine((values, ctx) => {
    const seen = new Set<string>();
    for (const v of values) {
      const key = JSON.stringify(v);
      if (seen.has(key)) {
        ctx.addIssue({
          code: "custom",
          message:
            `${
              showValue(v)
            } is given twice (each value may appear once: a repeated seed or method would be ` +
            `counted as another replicate of the same data)`,
          input: values,
        });
        return;
      }
      seen.add(key);
    }
  });
}
