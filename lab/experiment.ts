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
import {
  type Batch,
  checkOptions,
  DEVICE_CHOICES,
  type DeviceChoice,
  deviceLine,
  type DeviceName,
  hasCheckpoint,
  missingSteps,
  previousCheckpointPath,
  readJsonl,
  resolveDevice,
  showValue,
  type StepRecord,
  type Trainer,
} from "../mod.ts";
import { z } from "../deps.ts";
import {
  cliConfig,
  type ConfigDefaults,
  type ConfigField,
  type ConfigInputOf,
  type ConfigOf,
  type ConfigSchema,
  exitWithError,
} from "./config.ts";
import { type ConfigDifference, configDifferences, ResultsDir, type Validator } from "./results.ts";
import { lastTenthText } from "./report.ts";

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
  /**
   * The revision of what the results depend on beyond the configuration (e.g. the generated data and the seeds of
   * the calibration batches), recorded as `setupRevision` with it: `--resume` refuses a run of another revision.
   */
  revision?: number;
  /**
   * What keys with an environment-dependent value resolve to (e.g. `--data auto`: the emoji pack when it is there,
   * else the generated shapes), recorded as `resolved` beside the configuration: `--resume` refuses a run whose keys
   * resolved otherwise, as it refuses a changed key.
   */
  resolved?: (cfg: ConfigOf<S>) => Record<string, unknown>;
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

/** A recorded or current value, whole: two long values (a device line, say) may differ only at their ends. */
function valueText(v: unknown): string {
  return v === undefined ? "(not set)" : showValue(v, Infinity);
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
  if (stored.setupRevision !== record.setupRevision) {
    throw new RangeError(
      `--resume "${results.path}" was run with set-up revision ${valueText(stored.setupRevision)} of ` +
        `exp:${about.task} (its data or calibration batches), now ${
          valueText(record.setupRevision)
        }: its runs ` +
        `cannot be reused; start a new run without --resume`,
    );
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
    // --extend only makes a run longer: no hint where the length shrank.
    const longer = key !== undefined && !extend &&
      refused.some((d) => d.key === key && Number(d.current) > Number(d.stored));
    // The values go as flags (or the run's config.yaml as --config).
    // A resolved key is what a setting stood for on the machine that ran it: no flag gives it back.
    const machine = refused.filter((d) => d.key.startsWith("resolved.")).map((d) => d.key);
    const ways = [
      ...(machine.length < refused.length
        ? [`resume with the run's value of each key above (${results.file("config.yaml")} records them all)`]
        : []),
      ...(machine.length > 0
        ? [
          `resume where ${machine.join(", ")} resolve${
            machine.length > 1 ? "" : "s"
          } as in the run (what its settings stood for where it ran)`,
        ]
        : []),
      "start a new run without --resume",
      ...(longer ? [`make the run longer with --extend (only --${key} may change)`] : []),
    ];
    throw new RangeError(
      `--resume "${results.path}" was run with a different configuration:\n${lines.join("\n")}\n` +
        `${capitalize(ways.slice(0, -1).join(", "))}${ways.length > 2 ? "," : ""} or ${ways.at(-1)}.`,
    );
  }
  if (extension !== undefined) {
    results.recordExtension({ key: extension.key, from: extension.stored, to: extension.current }, record);
  }
  return results;
}

/** The environment variable in which exp:all gives an experiment its process id (see {@link stopWithParent}). */
export const PARENT_PID_ENV = "TESSERA_EXP_ALL_PID";

/**
 * Ends this process when the exp:all that started it (the process whose id {@link PARENT_PID_ENV} holds) is gone: an
 * exp:all killed with SIGKILL, or with its terminal, would leave the experiment running on its own, holding its
 * results directory's lock, and the next `exp:all --resume` would report it failed. Every `everyMs` a timer that
 * keeps nothing alive compares `Deno.ppid` (the system gives an orphan another parent) with that id; on a change the
 * process exits with status 129 after a line on stderr, which releases the lock, and `--resume` continues from the
 * saved runs. The variable is removed, so that a process this one starts is not bound to exp:all. Without it (an
 * experiment started by hand), nothing is watched.
 *
 * @param task The task name after `exp:`, for the message.
 * @param everyMs How often to look, in milliseconds.
 */
export function stopWithParent(task: string, everyMs = 1000): void {
  let text: string | undefined;
  try {
    text = Deno.env.get(PARENT_PID_ENV);
    Deno.env.delete(PARENT_PID_ENV);
  } catch {
    return; // no --allow-env: nothing was passed
  }
  const parent = Number(text);
  if (text === undefined || !Number.isInteger(parent) || parent <= 0) return;
  const check = () => {
    if (Deno.ppid === parent) return;
    console.error(
      `deno task exp:${task}: stopped: the exp:all that started it (process ${parent}) is gone; ` +
        "exp:all --resume continues from its saved runs",
    );
    Deno.exit(129);
  };
  check();
  Deno.unrefTimer(setInterval(check, everyMs));
}

/**
 * Keys a run's `config.yaml` records beside its settings, which a `--config` file may therefore hold: the set-up
 * revision and what environment-dependent keys resolved to (checked: a file recorded by another set-up, or whose keys
 * resolve otherwise here, is refused), the machine's adapter and the extensions (descriptions, not settings).
 */
const RECORD_KEYS = ["setupRevision", "resolved", "adapter", "extended"];

/**
 * Why the records a `--config` file carried do not describe this run (null when they do): the run it came from had
 * another set-up revision, or its keys resolved otherwise.
 */
function recordMismatch(
  given: ReadonlyMap<string, { value: unknown; file: string }>,
  record: Record<string, unknown>,
  task: string,
): string | null {
  for (const key of ["setupRevision", "resolved"]) {
    const g = given.get(key);
    // Compared as --resume compares a run's record (canonical JSON, key by key).
    const d = g === undefined ? undefined : configDifferences({ [key]: g.value }, { [key]: record[key] })[0];
    if (g === undefined || d === undefined) continue;
    const what = key === "setupRevision"
      ? `was recorded by set-up revision ${
        valueText(g.value)
      } of exp:${task} (its data or calibration batches), ` +
        `which is now ${valueText(record[key])}: this run would not repeat it`
      : `records that ${d.key} resolved to ${valueText(d.stored)}, and here it resolves to ${
        valueText(d.current)
      }: this run would not repeat it`;
    return `config file "${g.file}" ${what}; remove ${key} from the file to run these settings anyway`;
  }
  return null;
}

/** Parses the configuration, opens the results directory and prints the header lines. */
export async function startExperiment<S extends ConfigSchema>(
  schema: S,
  about: ExperimentAbout<S>,
): Promise<Started<ConfigOf<S>>> {
  const name = `deno task exp:${about.task}`;
  stopWithParent(about.task);
  // An experiment that compares methods takes them one per --method flag as well.
  const repeatable = "methods" in (schema.shape as object) ? { method: "methods" } : undefined;
  // A run's own config.yaml given as --config: its records are checked against this run's below.
  const fromRecords = new Map<string, { value: unknown; file: string }>();
  const records = {
    keys: RECORD_KEYS,
    take: (key: string, value: unknown, file: string) => fromRecords.set(key, { value, file }),
  };
  const first = cliConfig(schema, { name, description: about.description, repeatable, records });
  // With quick set (by flag or YAML), parse again with the preset under the flags and YAML keys.
  const quick = (first as { quick?: boolean }).quick === true;
  const cfg = quick
    ? cliConfig(schema, { name, description: about.description, defaults: about.quick, repeatable, records })
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
  const record = {
    ...(cfg as Record<string, unknown>),
    device,
    adapter,
    ...(about.revision !== undefined ? { setupRevision: about.revision } : {}),
    ...(about.resolved !== undefined ? { resolved: about.resolved(cfg) } : {}),
  };
  const mismatch = recordMismatch(fromRecords, record, about.task);
  if (mismatch !== null) {
    console.error(`${name}: ${mismatch}`);
    Deno.exit(2);
  }
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

/** Options of {@link distinctList}. */
export interface DistinctListOptions<T> {
  /** The default list. */
  default?: readonly T[];
  /** The key's `--help` text. */
  description?: string;
  /** Accept an empty list (for keys where none means "skip"). */
  allowEmpty?: boolean;
}

/**
 * A list-valued key whose values must be distinct, with at least one value: `--seeds 0,0` (a replicate counted
 * twice) and `--seeds ""` are configuration errors naming the key and the value.
 *
 * @param element The schema of one value (e.g. `z.int()`).
 * @param options The default list, the description, and whether an empty list is accepted.
 * @returns The key's schema.
 *
 * @example
 * ```ts
 * import { distinctList } from "./experiment.ts";
 * import { parseConfig } from "./config.ts";
 * import { z } from "../deps.ts";
 * const Config = z.object({ seeds: distinctList(z.int(), { default: [0, 1, 2] }) });
 * parseConfig(Config, ["--seeds", "3,4"], { name: "demo.ts" }); // { seeds: [3, 4] }
 * // parseConfig(Config, ["--seeds", "3,3"], ...) throws: config key "seeds": 3 is given twice ...
 * ```
 */
export function distinctList<T>(
  element: ConfigField<T>,
  options: DistinctListOptions<T> = {},
): ConfigField<T[]> {
  const one = element as unknown as z.ZodType<T>;
  const list = options.allowEmpty ? z.array(one) : z.array(one).min(1, "needs at least one value");
  const checked = list.superRefine((values, ctx) => {
    const seen = new Set<string>();
    for (const v of values) {
      const key = JSON.stringify(v);
      if (seen.has(key)) {
        ctx.addIssue({
          code: "custom",
          message:
            `${showValue(v)} is given twice (each value may appear once: a repeated seed or method would ` +
            `be counted as another replicate of the same data)`,
          input: values,
        });
        return;
      }
      seen.add(key);
    }
  });
  const withDefault = options.default === undefined ? checked : checked.default([...options.default]);
  return options.description === undefined ? withDefault : withDefault.describe(options.description);
}

/** The `device` key every experiment has: where it runs (default `auto`, or `TESSERA_DEVICE`). */
export function deviceField(): ConfigField<DeviceChoice | undefined> {
  return z.enum(DEVICE_CHOICES).optional().describe(
    "device (default auto: a hardware WebGPU adapter, else wasm; or TESSERA_DEVICE)",
  );
}

/** The `resume` key: a previous results directory of the same experiment, whose finished runs are reused. */
export function resumeField(): ConfigField<string | undefined> {
  return z.string().optional().describe("a previous results directory: finished runs are reused");
}

/** A number as a results file stores it: a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"`; null refused. */
function savedNumberSchema(): z.ZodType<number> {
  return z.union([z.number(), z.enum(["NaN", "Infinity", "-Infinity"]).transform(Number)], {
    error: 'expected a number (or "NaN", "Infinity", "-Infinity")',
  }) as unknown as z.ZodType<number>;
}

/**
 * A number field of a run file: a JSON number, or `"NaN"`, `"Infinity"` or `"-Infinity"` (what the JSON writer
 * stores for them); `null` and anything else are refused, unless the field is `nullable`; an `optional` field may be
 * absent.
 *
 * @param options `optional` or `nullable`.
 * @returns The field's schema, for `z.object({ ... })`.
 */
export function savedNumber(): ConfigField<number>;
/** An optional number field of a run file (see the first signature). */
export function savedNumber(options: { optional: true }): ConfigField<number | undefined>;
/** A number-or-null field of a run file (see the first signature). */
export function savedNumber(options: { nullable: true }): ConfigField<number | null>;
export function savedNumber(
  options: { optional?: boolean; nullable?: boolean } = {},
): ConfigField<number | undefined | null> {
  const one = savedNumberSchema();
  return options.optional ? one.optional() : options.nullable ? one.nullable() : one;
}

/**
 * A list-of-numbers field of a run file (each as {@link savedNumber}).
 *
 * @param options `min`: the fewest entries (default 0).
 * @returns The field's schema, for `z.object({ ... })`.
 */
export function savedNumbers(options: { min?: number } = {}): ConfigField<number[]> {
  return z.array(savedNumberSchema()).min(options.min ?? 0);
}

/**
 * A list of numbers and nulls (a measurement that can be missing at some steps), each number as
 * {@link savedNumber}.
 *
 * @returns The field's schema, for `z.object({ ... })`.
 */
export function savedNullableNumbers(): ConfigField<(number | null)[]> {
  return z.array(savedNumberSchema().nullable());
}

/** What every fine-tuning run of the experiments records (`runs/<label>-seed<seed>.json`). */
export interface FineTuneRun {
  /** The method's name. */
  label: string;
  /** The seed (initialisation, batches). */
  seed: number;
  /** Training loss per step. */
  losses: number[];
  /** Global gradient norm per step. */
  gradNorms: number[];
  /** Validation loss after fine-tuning. */
  valLoss: number;
  /** Seconds of initialisation (calibration included). */
  initSeconds: number;
  /** Seconds of training. */
  trainSeconds: number;
  /** The rank of every adapted layer (EVA and VAS redistribute them). */
  ranks: Record<string, number>;
}

/** The schemas of {@link FineTuneRun}'s fields, to spread into a run file's `z.object({ ... })`. */
export interface FineTuneRunFields {
  /** `label`. */
  label: ConfigField<string>;
  /** `seed`. */
  seed: ConfigField<number>;
  /** `losses` (at least one step). */
  losses: ConfigField<number[]>;
  /** `gradNorms`. */
  gradNorms: ConfigField<number[]>;
  /** `valLoss`. */
  valLoss: ConfigField<number>;
  /** `initSeconds`. */
  initSeconds: ConfigField<number>;
  /** `trainSeconds`. */
  trainSeconds: ConfigField<number>;
  /** `ranks`. */
  ranks: ConfigField<Record<string, number>>;
}

/**
 * The schemas of the fields every fine-tuning run records: `z.object({ ...fineTuneRunFields(), extra: ... })` is the
 * schema of an experiment's run files.
 *
 * @returns The field schemas.
 */
export function fineTuneRunFields(): FineTuneRunFields {
  return {
    label: z.string(),
    seed: z.int(),
    losses: savedNumbers({ min: 1 }),
    gradNorms: savedNumbers(),
    valLoss: savedNumber(),
    initSeconds: savedNumber(),
    trainSeconds: savedNumber(),
    ranks: z.record(z.string(), z.int().min(0)),
  };
}

/** One run of an experiment: a method (by name) and a seed. */
export interface RunKey {
  /** The method's name (run files are `runs/<label>-seed<seed>.json`). */
  label: string;
  /** The seed. */
  seed: number;
  /** Where the run comes from, for messages (e.g. `--method lora`, or the table that derives it). */
  origin?: string;
}

/**
 * Refuses two keys that name one run file: the second would reuse the first's result (another method's, or the same
 * one counted twice), however their settings differ.
 */
function checkDistinctRuns(keys: readonly RunKey[]): void {
  const first = new Map<string, number>();
  const from = (i: number) => keys[i].origin ?? `entry ${i + 1} of the run list`;
  for (const [i, key] of keys.entries()) {
    const name = `runs/${key.label}-seed${key.seed}.json`;
    const j = first.get(name);
    if (j === undefined) {
      first.set(name, i);
      continue;
    }
    throw new RangeError(
      `run ${key.label} seed ${key.seed} is asked for twice, by ${from(j)} and by ${
        from(i)
      }: both would be ` +
        `saved as ${name}, and the second would reuse the first's result; give them different labels`,
    );
  }
}

/** Options of {@link resumeOrRun}. */
export interface ResumeOrRunOptions<R> {
  /** Validates a finished run's file before it is reused. */
  schema: Validator<R>;
  /** The length of a run in steps: a finished run of another length is refused (or extended, with `extend`). */
  steps: number;
  /**
   * Continue finished runs shorter than `steps` (`--resume DIR --extend`); pass it (false without the flag) in every
   * experiment that supports `--extend`, so that a shorter run left by an interrupted extension is pointed to it.
   */
  extend?: boolean;
  /** The line printed after a run (default: its mean loss over the last 10% of steps, `lastTenthText`). */
  describe?: (run: R) => string;
}

/**
 * A finished run's file, validated and checked to be the run `key` names with `steps` steps; undefined when the run
 * has not finished. A file that does not match is an error naming it and how to have the run computed again. With
 * `extend`, a run shorter than `steps` is returned (to be continued); without, it is refused (pointing to `--extend`
 * where the experiment supports it).
 */
function reuseRun<R extends { label: string; seed: number; losses: number[] }>(
  results: ResultsDir,
  name: string,
  key: RunKey,
  options: ResumeOrRunOptions<R>,
): R | undefined {
  const run = results.reuse(name, options.schema);
  if (run === undefined) return undefined;
  const again = `remove it (rm "${results.file(name)}") and resume again to run it anew`;
  if (run.label !== key.label || run.seed !== key.seed) {
    throw new Error(
      `"${
        results.file(name)
      }" holds run ${run.label} seed ${run.seed}, not ${key.label} seed ${key.seed}; ${again}`,
    );
  }
  const n = run.losses.length;
  if (n < options.steps && options.extend === false) {
    // A finished run, shorter than a configuration whose extension was recorded but stopped before this run.
    throw new Error(
      `"${results.file(name)}" holds a finished run of ${n} steps and this configuration has ` +
        `${options.steps}: continue it with --resume "${results.path}" --extend`,
    );
  }
  if (n > options.steps || (n < options.steps && !options.extend)) {
    throw new Error(
      `"${
        results.file(name)
      }" holds a run of ${n} steps but this configuration has ${options.steps}; ${again}`,
    );
  }
  return run;
}

/**
 * Until the returned function is called, SIGINT (Ctrl-C) and SIGTERM end the process with status 128 + the
 * signal's number after saying how to continue; the handler runs between awaits, so never while a result file
 * is being written. Finished runs are in `runs/`, and `--resume <dir>` reuses them. (A run that throws ends
 * the experiment, so the listeners need no removal on that path.)
 */
function exitOnInterrupt(results: ResultsDir, finished: () => number, total: number): () => void {
  const listening: [Deno.Signal, () => void][] = [];
  for (const [signal, status] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    const handler = () => {
      const saved = results.file("runs");
      console.error(`\n${signal}: stopped with ${finished()} of ${total} runs finished (saved in ${saved});`);
      console.error(`continue with --resume ${results.path}`);
      Deno.exit(status);
    };
    try {
      Deno.addSignalListener(signal, handler);
      listening.push([signal, handler]);
    } catch { /* a signal this platform does not have (SIGTERM on Windows) */ }
  }
  return () => listening.forEach(([signal, handler]) => Deno.removeSignalListener(signal, handler));
}

/**
 * The resume-or-run wrapper: for each run `key` (a method and a seed), the finished run saved in
 * `runs/<label>-seed<seed>.json` is reused (validated against `schema`); otherwise `run(key, previous)` runs it and
 * its result is saved there — `previous` being the shorter finished run that `--extend` continues. Two keys with
 * one label and seed are refused before anything runs, naming where each came from (`origin`). SIGINT and
 * SIGTERM stop between runs with a note on how to continue (`--resume <dir>`).
 *
 * @param results The run's results directory.
 * @param keys The runs, in order.
 * @param options The run files' schema, the run length, `--extend`, and the line printed after a run.
 * @param run Runs one (the experiment's own training loop).
 * @returns Every run's result, in the order of `keys`.
 */
export async function resumeOrRun<
  K extends RunKey,
  R extends { label: string; seed: number; losses: number[] },
>(
  results: ResultsDir,
  keys: readonly K[],
  options: ResumeOrRunOptions<R>,
  run: (key: K, previous: R | undefined) => Promise<R>,
): Promise<R[]> {
  checkDistinctRuns(keys);
  for (const sub of ["runs", "metrics"]) Deno.mkdirSync(results.file(sub), { recursive: true });
  const out: R[] = [];
  const stopListening = exitOnInterrupt(results, () => out.length, keys.length);
  for (const key of keys) {
    const name = `runs/${key.label}-seed${key.seed}.json`;
    const done = reuseRun(results, name, key, options);
    if (done !== undefined && done.losses.length === options.steps) {
      out.push(done);
      console.log(`${key.label} seed ${key.seed}: reused ${name}`);
      continue;
    }
    if (done !== undefined) {
      console.log(
        `${key.label} seed ${key.seed}: extending ${name} from ${done.losses.length} to ${options.steps} steps`,
      );
    }
    const r = await run(key, done);
    results.writeJson(name, r);
    out.push(r);
    const line = options.describe?.(r) ?? lastTenthText(r.losses);
    console.log(`${key.label} seed ${key.seed}: ${line}`);
  }
  stopListening();
  return out;
}

const RESUMABLE_OPTIONS = z.object({
  label: z.string(),
  checkpoint: z.string().min(1),
  metrics: z.string().min(1),
  previous: z.unknown().optional(),
}).strict();

/** What {@link trainResumable} returns. */
export interface ResumableRun {
  /** Every step's record, from the metrics file (the steps of an extended run's earlier part included). */
  records: StepRecord[];
  /** Seconds the run has trained in all (the part before an interruption or an extension included). */
  seconds: number;
}

/**
 * Throws unless the metrics file holds a record of every step up to `step`, the checkpoint's: the trainer refuses
 * gaps between its records, but a file that is gone or begins after step 1 would make the run's records, and the
 * results drawn from them, start at the checkpoint's step.
 */
function checkEarlierRecords(metrics: string, step: number, label: string, checkpoint: string): void {
  let have = new Set<unknown>();
  try {
    have = new Set(readJsonl(metrics).map((r) => r.step));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const shown = missingSteps(have, 1, step);
  if (shown === null) return;
  throw new Error(
    `cannot continue run ${label} at step ${step}: its metrics file "${metrics}" has no record of step(s) ${shown}, ` +
      `and its results list every step; remove "${checkpoint}" and "${
        previousCheckpointPath(checkpoint)
      }" to run ` +
      `it again from the start`,
  );
}

/**
 * Runs `trainer` to its end as a resumable run: when it has run no step yet and its checkpoint (or the one before
 * it) exists — an interrupted run, or a finished one that `--extend` makes longer — it continues from there (the
 * batches are a pure function of seed and step, so it continues exactly); a trainer the caller has started goes on
 * from its step. Then it closes the trainer, reads the records back from its metrics file and drops the checkpoint
 * before the last (the last stays, for `--extend`).
 *
 * @param trainer A trainer with `metrics` (a path) and `checkpoint` set.
 * @param options `label` for messages, the `checkpoint` and `metrics` paths, and `previous`: the finished run being
 *   extended (its checkpoint must exist).
 * @returns The records and the seconds spent.
 */
export async function trainResumable<M extends object, B extends Batch>(
  trainer: Trainer<M, B>,
  options: { label: string; checkpoint: string; metrics: string; previous?: unknown },
): Promise<ResumableRun> {
  checkOptions("trainResumable", RESUMABLE_OPTIONS, options);
  const { label, checkpoint } = options;
  if (trainer.step > 0) {
    // Started by the caller (steps it measures on the way): it goes on from where it is.
  } else if (await hasCheckpoint(checkpoint)) {
    // Making a finished run longer changes its length and schedule on purpose (the experiment checked the rest).
    const info = await trainer.resume(checkpoint, { allowChanged: options.previous !== undefined });
    const other = info.changed.filter((c) =>
      !/^(steps|schedule\.step \d+|scheduleValues(\.steps \d+-\d+)?) /.test(c)
    );
    if (other.length > 0) {
      throw new Error(`cannot make run ${label} longer: more than its length changed: ${other.join("; ")}`);
    }
    for (const skipped of info.skipped) {
      console.error(`${label}: passed over "${skipped.path}": ${skipped.reason}`);
    }
    checkEarlierRecords(options.metrics, info.step, label, checkpoint);
    console.error(`${label}: continued from "${info.path}" (step ${info.step})`);
  } else if (options.previous !== undefined) {
    throw new Error(
      `cannot make run ${label} longer: its last checkpoint "${checkpoint}" is gone; remove its file under runs/ ` +
        `to run it again from the start`,
    );
  }
  await trainer.run();
  const seconds = trainer.trainSeconds;
  trainer.close();
  await Deno.remove(previousCheckpointPath(checkpoint)).catch(() => {});
  return { records: readJsonl(options.metrics) as unknown as StepRecord[], seconds };
}

/** `text` with its first letter upper-case. */
function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
