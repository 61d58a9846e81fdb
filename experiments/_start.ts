/**
 * The opening every experiment shares: parse the configuration (flags over `--config` YAML over the `--quick`
 * preset over the schema's defaults), pick the device, open the results directory (a new one, or the one named
 * by `--resume`), record the configuration with the adapter, and say where the results go.
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
} from "../lib/util/config.ts";
import { ResultsDir } from "../lib/util/results.ts";

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
  const common = cfg as { device?: DeviceChoice; resume?: string };
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
  const results = common.resume !== undefined ? ResultsDir.open(common.resume) : ResultsDir.create(about.dir);
  results.writeConfig({ ...(cfg as Record<string, unknown>), adapter });
  console.log(`exp:${about.task} → ${results.path}\ndevice: ${adapter}`);
  return { cfg, device, adapter, results };
}
