/**
 * Results directories for experiments: `results/<name>/<timestamp>/` holding `config.yaml`,
 * `metrics.jsonl`, plots, `summary.json` (with git revision, command and wall-clock timings) and
 * `summary.md` (the tables and claims themselves are `report.ts`'s).
 *
 * A results directory belongs to one process at a time: creating or reopening one takes its lock file `.lock`
 * (a second process is refused with the holder's pid and host). `experiment.json` records which experiment made
 * it and with which configuration, so `--resume` only reopens a directory of the same experiment, compares the
 * configuration key by key ({@link configDifferences}), and validates every file it reuses against a schema
 * ({@link ResultsDir.reuse}).
 *
 * A run resumed after an interruption is made by several processes: `experiment.json` lists each one's part (its
 * {@link Segment}), and the wall-clock seconds in `summary.json` are their sum, from the first process's start.
 *
 * @module
 */
import { z } from "../deps.ts";
import { stringifyYaml } from "./deps.ts";
import { acquireLock, type Lock } from "./lock.ts";
import {
  checkOptions,
  MetricsWriter,
  type MetricsWriterOptions,
  removeTemporaries,
  showValue,
  toJson,
  writeFileAtomicSync,
  writeJsonAtomic,
} from "../mod.ts";
import { type SavedPlot, savePlot, type SavePlotOptions } from "./png.ts";

/** The git commit a run was made from. */
export interface GitInfo {
  /** `git rev-parse HEAD`, or `"unknown"` when git, a repository or a commit is not available. */
  revision: string;
  /** Whether tracked or untracked files differ from that commit; `null` when unknown. */
  dirty: boolean | null;
}

function runGit(args: string[], cwd: string | undefined): string | undefined {
  try {
    const output = new Deno.Command("git", { args, cwd, stdout: "piped", stderr: "null", stdin: "null" })
      .outputSync();
    if (!output.success) return undefined;
    return new TextDecoder().decode(output.stdout).trim();
  } catch {
    return undefined; // git missing, or no --allow-run permission
  }
}

/**
 * The current git revision and whether the working tree has changes.
 *
 * @param options `cwd`: directory inside the repository (default: the current directory).
 * @returns The revision (`"unknown"` if it cannot be determined) and the dirty flag.
 */
export function gitInfo(options: { cwd?: string } = {}): GitInfo {
  const revision = runGit(["rev-parse", "HEAD"], options.cwd);
  if (revision === undefined || !/^[0-9a-f]{7,64}$/.test(revision)) {
    return { revision: "unknown", dirty: null };
  }
  const status = runGit(["status", "--porcelain"], options.cwd);
  return { revision, dirty: status === undefined ? null : status !== "" };
}

/**
 * A filesystem-safe, sortable UTC timestamp: `YYYYMMDD-HHMMSS`.
 *
 * @param date The moment (default: now).
 * @returns E.g. `20250131-235959`.
 */
export function runTimestamp(date: Date = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${date.getUTCFullYear()}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}-` +
    `${p(date.getUTCHours())}${p(date.getUTCMinutes())}${p(date.getUTCSeconds())}`;
}

/** Options of {@link ResultsDir.create}. */
export interface ResultsDirOptions {
  /** Parent of all results (default `"results"`, relative to the current directory). */
  root?: string;
  /** Start time used for the directory name (default: now). */
  startedAt?: Date;
  /** Directory whose git revision is recorded (default: the current directory). */
  gitCwd?: string;
}

const CREATE_OPTIONS = z.object({
  root: z.string().min(1),
  startedAt: z.date(),
  gitCwd: z.string(),
}).partial().strict();
const OPEN_OPTIONS = z.object({ gitCwd: z.string() }).partial().strict();
const METRICS_OPTIONS = z.object({ file: z.string().min(1), resume: z.boolean() }).partial().strict();
const MARKDOWN_OPTIONS = z.object({ file: z.string().min(1) }).partial().strict();

/** What {@link ResultsDir.writeSummary} adds under the `run` key of `summary.json`. */
export interface RunInfo {
  /** Experiment name. */
  name: string;
  /** Run directory. */
  dir: string;
  /** Git revision and dirty flag. */
  git: GitInfo;
  /** Script and arguments: `Deno.mainModule` and `Deno.args`. */
  command: { mainModule: string; args: string[] };
  /** Deno version. */
  deno: string;
  /** When the first process started the run (created the directory), ISO 8601. */
  startedAt: string;
  /** Time the summary was written, ISO 8601. */
  finishedAt: string;
  /**
   * Wall-clock seconds of every process that worked on the run, summed (the `seconds` of each of `segments`): from
   * creating the directory to writing the summary when no process was interrupted.
   */
  wallSeconds: number;
  /** Each process's part of the run, the first (that created the directory) first and this one last. */
  segments: Segment[];
  /**
   * Seconds per label recorded with {@link ResultsDir.time} / {@link ResultsDir.startTimer} by this process only
   * (the last of `segments`): the parts of the work that earlier processes did are not in them.
   */
  timings: Record<string, number>;
}

/**
 * One process's part of a run: from creating or reopening the results directory to writing the summary or, for a
 * process that ended before it wrote one (killed, or stopped by an error), to the last file it wrote in the
 * directory (the work after that was lost, and is done again by the next process).
 */
export interface Segment {
  /** When the process created or reopened the directory, ISO 8601. */
  startedAt: string;
  /** When its part ended, ISO 8601; null while it runs (or until a later process reopens the directory). */
  endedAt: string | null;
  /** Wall-clock seconds of the part; null while it runs. */
  seconds: number | null;
}

/** The lock file of a results directory. */
const LOCK_FILE = ".lock";
/** The file recording which experiment made a results directory, with its configuration. */
const RECORD_FILE = "experiment.json";
const RECORD_FORMAT = "tessera-results-1";

/** A recorded extension of a run: `key` went from `from` to `to` at `at`. */
export interface Extension {
  /** The configuration key, e.g. `steps`. */
  key: string;
  /** Its value before. */
  from: unknown;
  /** Its value after. */
  to: unknown;
  /** When, ISO 8601. */
  at: string;
}

/** The content of `experiment.json`. */
interface ExperimentRecord {
  format: string;
  experiment: string;
  createdAt: string;
  config: Record<string, unknown> | null;
  extended: Extension[];
  /** The processes that worked on the run (absent in records written before they were kept). */
  segments?: Segment[];
}

function commandLine(): string {
  try {
    return [Deno.mainModule.replace(/^file:\/\//, ""), ...Deno.args].join(" ");
  } catch {
    return "unknown command";
  }
}

function acquireLockOf(dir: string): Lock {
  try {
    return acquireLock(`${dir}/${LOCK_FILE}`, commandLine());
  } catch (err) {
    throw new Error(`cannot use results directory "${dir}": ${(err as Error).message}`, { cause: err });
  }
}

const RECORD = z.object({
  format: z.literal(RECORD_FORMAT),
  experiment: z.string(),
  createdAt: z.string(),
  config: z.record(z.string(), z.unknown()).nullable(),
  extended: z.array(z.object({ key: z.string(), from: z.unknown(), to: z.unknown(), at: z.string() })),
  segments: z.array(
    z.object({ startedAt: z.string(), endedAt: z.string().nullable(), seconds: z.number().nullable() }),
  )
    .optional(),
});

/** The newest modification time (ms) of the files under `dir`, its subdirectories included; 0 when none. */
function newestWrite(dir: string): number {
  let newest = 0;
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    try {
      if (entry.isDirectory) newest = Math.max(newest, newestWrite(path));
      else newest = Math.max(newest, Deno.statSync(path).mtime?.getTime() ?? 0);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return newest;
}

/**
 * The record's segments with the last one ended: a process that wrote its summary ended its segment then, and
 * one that did not (killed) is taken to have worked until the last file written in `dir`. A record written before
 * segments were kept gets one segment from its creation.
 */
function closeSegments(record: ExperimentRecord, dir: string): Segment[] {
  const segments = record.segments ?? [{ startedAt: record.createdAt, endedAt: null, seconds: null }];
  const last = segments.at(-1);
  if (last === undefined) return [];
  const lastWrite = newestWrite(dir);
  const start = new Date(last.startedAt).getTime();
  let closed: Segment;
  if (last.endedAt === null || last.seconds === null) {
    const end = Math.max(start, lastWrite);
    closed = {
      startedAt: last.startedAt,
      endedAt: new Date(end).toISOString(),
      seconds: (end - start) / 1000,
    };
  } else {
    // Files written after the summary (a report, plots) are part of that process's work too.
    const after = Math.max(0, lastWrite - new Date(last.endedAt).getTime());
    closed = {
      ...last,
      endedAt: new Date(new Date(last.endedAt).getTime() + after).toISOString(),
      seconds: last.seconds + after / 1000,
    };
  }
  return [...segments.slice(0, -1), closed];
}

/** The record of a results directory, checked to belong to experiment `name`. */
function readRecord(dir: string, name: string): ExperimentRecord {
  const file = `${dir}/${RECORD_FILE}`;
  const expected =
    `--resume takes a directory that the same experiment wrote, such as results/${name}/<timestamp>`;
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch {
    throw new Error(
      `cannot resume: "${dir}" is not a results directory of "${name}" (it has no ${RECORD_FILE}); ${expected}`,
    );
  }
  let parsed: ReturnType<typeof RECORD.safeParse>;
  try {
    parsed = RECORD.safeParse(JSON.parse(text));
  } catch {
    parsed = RECORD.safeParse(null);
  }
  if (!parsed.success) {
    throw new Error(
      `cannot resume: "${file}" is damaged (not the record a results directory starts with); ${expected}`,
    );
  }
  if (parsed.data.experiment !== name) {
    throw new Error(
      `cannot resume: "${dir}" holds results of "${parsed.data.experiment}", not "${name}"; ${expected}`,
    );
  }
  return parsed.data as ExperimentRecord;
}

/**
 * Anything that validates a value the way a zod schema's `safeParse` does (every zod schema is one): the parsed
 * value, or the problems with their key paths.
 */
export interface Validator<T> {
  /** Validates `value`. */
  safeParse(value: unknown):
    | { success: true; data: T }
    | { success: false; error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] } };
}

/** One difference between a stored configuration and the current one. */
export interface ConfigDifference {
  /** Dotted key, e.g. `lr` or `train.lr`. */
  key: string;
  /** The stored value (undefined: the key was not set). */
  stored: unknown;
  /** The current value (undefined: the key is not set). */
  current: unknown;
}

function flatten(value: unknown, prefix: string, out: Map<string, unknown>): void {
  if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix === "" ? k : `${prefix}.${k}`, out);
  } else if (prefix !== "") {
    out.set(prefix, value);
  }
}

/**
 * JSON text with the keys of every object sorted: values that differ only in key order (a method spec given as
 * `rank=8,alpha=2` or as `alpha=2,rank=8`) give the same text.
 */
function canonicalJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v) =>
      typeof v === "object" && v !== null && !Array.isArray(v)
        ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
        : v,
  );
}

/**
 * The keys whose values differ between a stored configuration and the current one (nested objects compared key
 * by key, arrays and numbers by their JSON form with object keys sorted, so `NaN` equals the stored `"NaN"` and
 * the order of a method's options does not count), leaving out the keys in `ignore` and those below them.
 *
 * @param stored The configuration recorded with the run.
 * @param current The configuration now.
 * @param ignore Keys that do not affect results (e.g. `resume`).
 * @returns The differences, in key order.
 *
 * @example
 * ```ts
 * import { configDifferences } from "./results.ts";
 * configDifferences({ lr: 0.01, steps: 100 }, { lr: 0.02, steps: 100, resume: "x" }, new Set(["resume"]));
 * // [{ key: "lr", stored: 0.01, current: 0.02 }]
 * ```
 */
export function configDifferences(
  stored: Record<string, unknown>,
  current: Record<string, unknown>,
  ignore: ReadonlySet<string> = new Set(),
): ConfigDifference[] {
  const a = new Map<string, unknown>();
  const b = new Map<string, unknown>();
  flatten(JSON.parse(toJson(stored)), "", a);
  flatten(JSON.parse(toJson(current)), "", b);
  const skip = (key: string) => [...ignore].some((i) => key === i || key.startsWith(`${i}.`));
  const out: ConfigDifference[] = [];
  for (const key of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    if (skip(key)) continue;
    const x = a.get(key);
    const y = b.get(key);
    if (canonicalJson(x) !== canonicalJson(y)) out.push({ key, stored: x, current: y });
  }
  return out;
}

/**
 * One run's output directory `<root>/<name>/<YYYYMMDD-HHMMSS>/` (a `-2`, `-3`, ... suffix is added when two
 * runs start in the same second).
 *
 * @example
 * ```ts
 * import { ResultsDir } from "./results.ts";
 * import { mdTable } from "./report.ts";
 * const run = ResultsDir.create("rank_sweep", { root: Deno.makeTempDirSync() });
 * run.writeConfig({ rank: 8, lr: 1e-3 });
 * using metrics = run.metrics();
 * metrics.write({ step: 1, loss: 2.3 });
 * const loss = run.time("train", () => 1.23);
 * run.writeSummary({ finalLoss: loss });
 * run.writeMarkdown(mdTable(["rank", "loss"], [[8, loss]]));
 * ```
 */
export class ResultsDir {
  #name: string;
  #path: string;
  #startedAt: Date;
  #segmentStart: Date;
  #startMs: number;
  #git: GitInfo;
  #timings: Record<string, number> = {};
  #lock: Lock;
  #record: ExperimentRecord;
  #removed: string[];

  private constructor(
    name: string,
    path: string,
    startedAt: Date,
    git: GitInfo,
    lock: Lock,
    record: ExperimentRecord,
    removed: string[],
  ) {
    this.#name = name;
    this.#path = path;
    this.#segmentStart = new Date(record.segments?.at(-1)?.startedAt ?? startedAt);
    this.#startedAt = new Date(record.segments?.[0]?.startedAt ?? startedAt);
    this.#startMs = performance.now();
    this.#git = git;
    this.#lock = lock;
    this.#record = record;
    this.#removed = removed;
  }

  /**
   * Create a new, empty run directory (and its parents), take its lock and record the experiment's name in
   * `experiment.json`.
   *
   * @param name Experiment name: letters, digits, `_`, `-` and `.` only.
   * @param options Root directory, start time, git directory.
   * @returns The results directory.
   */
  static create(name: string, options: ResultsDirOptions = {}): ResultsDir {
    checkOptions("ResultsDir.create", CREATE_OPTIONS, options);
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || name === "." || name === "..") {
      throw new Error(`results name must use only letters, digits, "_", "-" and ".", got "${name}"`);
    }
    const root = options.root ?? "results";
    const startedAt = options.startedAt ?? new Date();
    const parent = `${root.replace(/\/+$/, "")}/${name}`;
    Deno.mkdirSync(parent, { recursive: true });
    const stamp = runTimestamp(startedAt);
    for (let attempt = 1;; attempt++) {
      const path = attempt === 1 ? `${parent}/${stamp}` : `${parent}/${stamp}-${attempt}`;
      try {
        Deno.mkdirSync(path);
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists && attempt < 1000) continue;
        throw err;
      }
      const lock = acquireLock(`${path}/${LOCK_FILE}`, commandLine());
      const record: ExperimentRecord = {
        format: RECORD_FORMAT,
        experiment: name,
        createdAt: startedAt.toISOString(),
        config: null,
        extended: [],
        segments: [{ startedAt: startedAt.toISOString(), endedAt: null, seconds: null }],
      };
      writeJsonAtomic(`${path}/${RECORD_FILE}`, record);
      return new ResultsDir(name, path, startedAt, gitInfo({ cwd: options.gitCwd }), lock, record, []);
    }
  }

  /**
   * Reopen a run directory of experiment `name` to continue an interrupted run: files already there (finished
   * runs, metrics) are kept, and new ones are added beside them. Refused, naming the reason, when the directory
   * does not exist, was not created by `name` (no `experiment.json`, or another experiment's), or is in use by
   * another process. Temporary files that interrupted writes left behind are removed.
   *
   * @param path The run directory, e.g. `results/eva/20261123-171500`.
   * @param name The experiment that must have created it (as given to {@link ResultsDir.create}).
   * @param options Git directory.
   * @returns The results directory.
   */
  static open(path: string, name: string, options: { gitCwd?: string } = {}): ResultsDir {
    checkOptions("ResultsDir.open", OPEN_OPTIONS, options);
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(path);
    } catch {
      throw new Error(`cannot resume: results directory "${path}" does not exist`);
    }
    if (!info.isDirectory) throw new Error(`cannot resume: "${path}" is not a directory`);
    const clean = path.replace(/\/+$/, "");
    const stored = readRecord(clean, name);
    // Before this process writes anything (its lock file included): the previous one's last write ends its part.
    const segments = closeSegments(stored, clean);
    const lock = acquireLockOf(clean);
    const now = new Date();
    const record = {
      ...stored,
      segments: [...segments, { startedAt: now.toISOString(), endedAt: null, seconds: null }],
    };
    writeJsonAtomic(`${clean}/${RECORD_FILE}`, record);
    const removed = removeTemporaries(clean, { recursive: true, owners: "all" });
    return new ResultsDir(name, clean, now, gitInfo({ cwd: options.gitCwd }), lock, record, removed);
  }

  /** The experiment name. */
  get name(): string {
    return this.#name;
  }

  /** The run directory. */
  get path(): string {
    return this.#path;
  }

  /** When the run started: when its first process created the directory. */
  get startedAt(): Date {
    return this.#startedAt;
  }

  /** Git revision and dirty flag recorded when the directory was created. */
  get git(): GitInfo {
    return this.#git;
  }

  /** Seconds per label recorded so far. */
  get timings(): Readonly<Record<string, number>> {
    return { ...this.#timings };
  }

  /**
   * Path of a file inside the run directory.
   *
   * @param name Relative file name, e.g. `"adapter.safetensors"`.
   * @returns `<run dir>/<name>`.
   */
  file(name: string): string {
    if (name.startsWith("/") || name.split("/").includes("..")) {
      throw new Error(`results file name must stay inside "${this.#path}", got "${name}"`);
    }
    return `${this.#path}/${name}`;
  }

  /**
   * Write the run's configuration as `config.yaml` (atomically).
   *
   * @param config The validated configuration.
   * @returns The file's path.
   */
  writeConfig(config: Record<string, unknown>): string {
    const path = this.file("config.yaml");
    this.#record = { ...this.#record, config: JSON.parse(toJson(config)) };
    writeJsonAtomic(this.file(RECORD_FILE), this.#record);
    const extended = this.#record.extended.length > 0 ? { extended: this.#record.extended } : {};
    writeFileAtomicSync(path, stringifyYaml({ ...config, ...extended }));
    return path;
  }

  /**
   * The configuration recorded when the run was created (as {@link ResultsDir.writeConfig} stored it, non-finite
   * numbers as strings), or null when none was written yet.
   */
  get storedConfig(): Record<string, unknown> | null {
    return this.#record.config === null ? null : structuredClone(this.#record.config);
  }

  /** The extensions recorded with {@link ResultsDir.recordExtension}, oldest first. */
  get extensions(): readonly Extension[] {
    return this.#record.extended;
  }

  /**
   * Record that the run was made longer (`key` from `from` to `to`) and write the new configuration: both go to
   * `experiment.json`, and `config.yaml` lists every extension under `extended`.
   *
   * @param extension The key, its old and new value.
   * @param config The new configuration.
   */
  recordExtension(extension: Omit<Extension, "at">, config: Record<string, unknown>): void {
    this.#record = {
      ...this.#record,
      extended: [...this.#record.extended, { ...extension, at: new Date().toISOString() }],
    };
    this.writeConfig(config);
  }

  /** Temporary files of interrupted writes that {@link ResultsDir.open} removed. */
  get removedTemporaries(): readonly string[] {
    return this.#removed;
  }

  /**
   * Read a file a previous process wrote in this directory (a finished run's result, say), validated against
   * `schema`. Returns undefined when the file does not exist; a file that is not valid JSON or does not match is
   * an error naming it, the first problems, and how to have that part computed again.
   *
   * @param name File name inside the directory, e.g. `runs/lora-seed0.json`.
   * @param schema What the file must hold (e.g. a zod schema; numbers may be saved as `"NaN"` or `"Infinity"`).
   * @returns The parsed content, or undefined.
   */
  reuse<T>(name: string, schema: Validator<T>): T | undefined {
    const path = this.file(name);
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw err;
    }
    const again = `remove it (rm "${path}") and resume again to compute it anew`;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new Error(`"${path}" is not valid JSON (${(err as Error).message}); ${again}`, { cause: err });
    }
    const result = schema.safeParse(value);
    if (!result.success) {
      const problems = result.error.issues.slice(0, 3).map((issue) => {
        const key = issue.path.map((k) => (typeof k === "number" ? `[${k}]` : `.${String(k)}`)).join("")
          .replace(/^\./, "");
        let got: unknown = value;
        for (const k of issue.path) got = (got as Record<PropertyKey, unknown> | null)?.[k];
        const what = issue.message.replace(/^Invalid input(: )?/, "") || "not what was saved";
        return `${key === "" ? "the file" : `"${key}"`}: ${what}, got ${showValue(got)}`;
      });
      const more = result.error.issues.length > 3 ? `, and ${result.error.issues.length - 3} more` : "";
      throw new Error(
        `"${path}" does not hold what this experiment saves (${problems.join("; ")}${more}); ${again}`,
      );
    }
    return result.data;
  }

  /** Releases the directory's lock (also done when the process ends). */
  release(): void {
    this.#lock.release();
  }

  /**
   * Open the run's metrics file (see {@link MetricsWriter}).
   *
   * @param options `file` (default `"metrics.jsonl"`) and `resume`.
   * @returns The writer.
   */
  metrics(options: MetricsWriterOptions & { file?: string } = {}): MetricsWriter {
    // A misspelt `resume` would empty the file it was meant to continue.
    checkOptions("ResultsDir.metrics", METRICS_OPTIONS, options);
    return MetricsWriter.open(this.file(options.file ?? "metrics.jsonl"), { resume: options.resume });
  }

  /**
   * Start a wall-clock timer; calling the returned function stops it, adds the seconds to `label`'s total
   * and returns them.
   *
   * @param label Timing name, e.g. `"train"`.
   * @returns The stop function.
   */
  startTimer(label: string): () => number {
    const start = performance.now();
    let stopped = false;
    return () => {
      const seconds = (performance.now() - start) / 1000;
      if (!stopped) this.#timings[label] = (this.#timings[label] ?? 0) + seconds;
      stopped = true;
      return seconds;
    };
  }

  /**
   * Run `fn`, adding its wall-clock time to `label` (for an async `fn`, the time until its promise settles).
   *
   * @param label Timing name.
   * @param fn The work.
   * @returns What `fn` returns.
   */
  time<T>(label: string, fn: () => T): T {
    const stop = this.startTimer(label);
    let result: T;
    try {
      result = fn();
    } catch (err) {
      stop();
      throw err;
    }
    if (result instanceof Promise) return result.finally(stop) as T;
    stop();
    return result;
  }

  /**
   * Write `summary.json` (atomically): the given fields plus a `run` entry ({@link RunInfo}) with the git
   * revision, command, start/finish times, the wall-clock seconds of every process that worked on the run (also
   * recorded in `experiment.json`, where a resume finds them) and the timings recorded by this one.
   *
   * @param summary The run's results.
   * @returns The file's path.
   */
  writeSummary(summary: Record<string, unknown>): string {
    const path = this.file("summary.json");
    const run = this.runInfo();
    this.#record = { ...this.#record, segments: run.segments };
    writeJsonAtomic(this.file(RECORD_FILE), this.#record);
    writeJsonAtomic(path, { ...summary, run });
    return path;
  }

  /** The `run` entry written by {@link ResultsDir.writeSummary}, as of now. */
  runInfo(): RunInfo {
    const now = new Date();
    const seconds = (performance.now() - this.#startMs) / 1000;
    const earlier = (this.#record.segments ?? []).slice(0, -1);
    const segments = [
      ...earlier,
      { startedAt: this.#segmentStart.toISOString(), endedAt: now.toISOString(), seconds },
    ];
    return {
      name: this.#name,
      dir: this.#path,
      git: this.#git,
      command: { mainModule: Deno.mainModule, args: [...Deno.args] },
      deno: Deno.version.deno,
      startedAt: this.#startedAt.toISOString(),
      finishedAt: now.toISOString(),
      wallSeconds: segments.reduce((sum, s) => sum + (s.seconds ?? 0), 0),
      segments,
      timings: { ...this.#timings },
    };
  }

  /**
   * Write a markdown file (atomically), by default `summary.md`.
   *
   * @param text Markdown text, e.g. built with `mdTable` or `writeReport` (`report.ts`).
   * @param options `file`: file name (default `"summary.md"`).
   * @returns The file's path.
   */
  writeMarkdown(text: string, options: { file?: string } = {}): string {
    checkOptions("ResultsDir.writeMarkdown", MARKDOWN_OPTIONS, options);
    const path = this.file(options.file ?? "summary.md");
    writeFileAtomicSync(path, text.endsWith("\n") ? text : `${text}\n`);
    return path;
  }

  /**
   * Write a JSON file (atomically) in the run directory.
   *
   * @param name File name, e.g. `"eval.json"`.
   * @param value Value to serialize.
   * @returns The file's path.
   */
  writeJson(name: string, value: unknown): string {
    const path = this.file(name);
    writeJsonAtomic(path, value);
    return path;
  }

  /**
   * Save a plot as `<name>.svg` and `<name>.png` in the run directory (see `savePlot` in `png.ts`).
   *
   * @param name File name without extension.
   * @param svg The SVG text.
   * @param options PNG width and font.
   * @returns Paths written and rendering warnings.
   */
  savePlot(name: string, svg: string, options: SavePlotOptions = {}): Promise<SavedPlot> {
    return savePlot(this.#path, name, svg, options);
  }
}
