/**
 * exp:all — runs every experiment (passing its arguments on, e.g. `--quick`) one after another and writes
 * results/REPORT.md: first a table of every claim (experiment, claim, rule, the numbers behind it, verdict) with
 * the count of reproduced / not reproduced / inconclusive, then each experiment's summary and links to its plots.
 *
 *   deno task exp:all --quick
 *   deno task exp:all --quick --resume results/all/20261206-101500
 *   deno task exp:all --runs results/eva/20261206-101500,results/cntlora/20261206-104000
 *
 * An experiment that fails is reported as failed in REPORT.md; the others still run. exp:all keeps its own
 * directory results/all/<timestamp>/ (printed first), where `experiments.json` records each experiment's run
 * directory as soon as the experiment names it, and how it ended. `--resume <that directory>` continues an
 * interrupted exp:all with the same arguments (other arguments are refused): an experiment that finished is
 * reported from its run, one that was interrupted or failed is continued with `--resume <its run directory>` (which
 * reuses its finished runs, and refuses a changed configuration), and one that had not started starts. `--runs` runs nothing: it
 * writes REPORT.md from the finished run directories given (any number per experiment, e.g. a default run and one
 * on stories260K; the experiment is the run's parent folder), in the order given.
 *
 * SIGINT or SIGTERM stops exp:all after the running experiment, to which it is passed on (the experiment saves what
 * it finished); an exp:all killed otherwise (SIGKILL, its terminal closed) takes that experiment with it within a
 * second, so its run directory's lock is free for `--resume`.
 *
 * @module
 */

import {
  type Claim,
  configDifferences,
  PARENT_PID_ENV,
  processAlive,
  ResultsDir,
  verdictOf,
} from "../lab/mod.ts";
import { removeTemporaries, writeFileAtomicSync } from "../mod.ts";
import { z } from "../deps.ts";

/** Each experiment: its results folder (the key of `experiments.json`), its script and its task (`exp:<task>`). */
const EXPERIMENTS = [
  ["eva", "eva.ts", "eva"],
  ["magnitude", "magnitude.ts", "magnitude"],
  ["spectral_gain", "spectral_gain.ts", "spectral-gain"],
  ["init-sweep", "init_sweep.ts", "init-sweep"],
  ["vlm_dynamics", "vlm_dynamics.ts", "vlm-dynamics"],
  ["cntlora", "cntlora.ts", "cntlora"],
  ["gap_init", "gap_init.ts", "gap-init"],
] as const;

/** `exp:<task>` of the experiment whose results folder is `name`, as the user runs it (`exp:gap-init`). */
function taskOf(name: string): string {
  return `exp:${EXPERIMENTS.find(([folder]) => folder === name)?.[2] ?? name}`;
}

/** What exp:all records of one experiment in `experiments.json`. */
export interface ExperimentProgress {
  /** The run directory the experiment named (`exp:<task> → <dir>`), or null before it named one. */
  run: string | null;
  /** Its exit code, or null while it runs (or when exp:all was stopped during it). */
  code: number | null;
}

/** How to go on with one experiment of an exp:all run. */
export type NextStep =
  | { kind: "report"; run: string }
  | { kind: "run"; args: string[] };

/**
 * What to do with experiment `name` given what an earlier exp:all process recorded of it (undefined: nothing, or a
 * new exp:all): report a run that finished (exit code 0 and a `summary.json`), continue a run directory it left
 * unfinished with `--resume`, or start the experiment.
 *
 * @param progress What was recorded of the experiment.
 * @param args exp:all's arguments, passed on to the experiment.
 * @param finished Whether a run directory holds a finished run (default: it has `summary.json`).
 * @returns The step.
 */
export function nextStep(
  progress: ExperimentProgress | undefined,
  args: readonly string[],
  finished: (run: string) => boolean = (run) => exists(`${run}/summary.json`),
): NextStep {
  if (progress?.run === undefined || progress.run === null) return { kind: "run", args: [...args] };
  if (progress.code === 0 && finished(progress.run)) return { kind: "report", run: progress.run };
  return { kind: "run", args: ["--resume", progress.run, ...args] };
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The `--resume <dir>` of exp:all's arguments and the others, which go to every experiment. */
function resumeArg(args: readonly string[]): { resume: string | undefined; rest: string[] } {
  const rest: string[] = [];
  let resume: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = a === "--resume"
      ? args[++i]
      : a.startsWith("--resume=")
      ? a.slice("--resume=".length)
      : null;
    if (value === null) {
      rest.push(a);
      continue;
    }
    if (value === undefined || value === "") {
      throw new Error("exp:all: --resume needs a results/all/<timestamp> directory");
    }
    if (resume !== undefined) throw new Error(`exp:all: --resume is given twice (${resume} and ${value})`);
    resume = value;
  }
  return { resume, rest };
}

/** exp:all's directory: a new one, or the `--resume` one after checking that it ran with the same arguments. */
function openAll(resume: string | undefined, args: string[]): ResultsDir {
  if (resume === undefined) {
    const dir = ResultsDir.create("all");
    dir.writeConfig({ args });
    return dir;
  }
  const dir = ResultsDir.open(resume, "all");
  const stored = dir.storedConfig;
  if (stored === null) {
    dir.writeConfig({ args });
    return dir;
  }
  if (configDifferences(stored, { args }).length > 0) {
    dir.release();
    throw new Error(
      `exp:all: --resume "${dir.path}" was run with the arguments ${JSON.stringify(stored.args)}, now ` +
        `${JSON.stringify(args)}; resume with the run's arguments or start a new run without --resume`,
    );
  }
  return dir;
}

/**
 * Runs one experiment, echoing its output; `named` is called with the run directory as soon as it prints it. The
 * experiment gets this process's id ({@link PARENT_PID_ENV}) and stops when this process is gone; SIGINT and SIGTERM
 * sent to this process alone are passed on to it, and returned once it has ended (null when none came).
 */
async function runExperiment(
  file: string,
  args: string[],
  named: (run: string) => void,
): Promise<{ code: number; signal: "SIGINT" | "SIGTERM" | null }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`./${file}`, import.meta.url).pathname, ...args],
    env: { [PARENT_PID_ENV]: String(Deno.pid) },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let signal: "SIGINT" | "SIGTERM" | null = null;
  const listening: [Deno.Signal, () => void][] = [];
  for (const s of ["SIGINT", "SIGTERM"] as const) {
    const handler = () => {
      signal = s;
      try {
        child.kill(s);
      } catch { /* it has ended */ }
    };
    try {
      Deno.addSignalListener(s, handler);
      listening.push([s, handler]);
    } catch { /* a signal this platform does not have (SIGTERM on Windows) */ }
  }
  const decoder = new TextDecoder();
  let head: string | null = "";
  for await (const chunk of child.stdout) {
    for (let done = 0; done < chunk.length;) done += await Deno.stdout.write(chunk.subarray(done));
    if (head === null) continue;
    head += decoder.decode(chunk, { stream: true });
    const m = /^exp:\S+ → (.+)$/m.exec(head);
    if (m !== null) {
      named(m[1].trim());
      head = null;
    }
  }
  const { code } = await child.status;
  listening.forEach(([s, handler]) => Deno.removeSignalListener(s, handler));
  return { code, signal };
}

/** The wall-clock seconds a finished run's summary records (every process that worked on it), as text. */
function wallOf(run: string): string {
  try {
    const seconds = JSON.parse(Deno.readTextFileSync(`${run}/summary.json`)).run?.wallSeconds;
    return typeof seconds === "number" ? ` (${seconds.toFixed(0)} s)` : "";
  } catch {
    return "";
  }
}

/** One section of REPORT.md (a finished run) and its claims. */
function reportRun(
  name: string,
  run: string,
  how: string,
  sections: string[],
  claims: { experiment: string; claim: Claim | string }[],
): void {
  const summary = Deno.readTextFileSync(`${run}/summary.md`).replace(/^# .*\n/, "");
  // The run's folder name (its timestamp) tells apart several runs of one experiment in the claim table.
  const label = `${taskOf(name).slice("exp:".length)} (${run.split("/").at(-1)})`;
  for (const claim of claimsOf(`${run}/summary.json`)) claims.push({ experiment: label, claim });
  const plots = [...Deno.readDirSync(run)].filter((e) => e.name.endsWith(".png")).map((e) => e.name).sort();
  // REPORT.md sits in results/: plots are linked from there.
  const at = run.lastIndexOf("results/");
  const rel = at >= 0 ? run.slice(at + "results/".length) : run;
  sections.push(
    `## ${taskOf(name)}`,
    "",
    `Run: \`${run}\`${how}.`,
    "",
    summary.trim(),
    "",
    ...plots.map((p) => `![${name} ${p}](${rel}/${p})`),
    "",
  );
}

/** The run directories of `--runs a,b --runs c`, each checked to be a finished run; null without `--runs`. */
function runsArg(args: readonly string[]): { name: string; run: string }[] | null {
  if (!args.some((a) => a === "--runs" || a.startsWith("--runs="))) return null;
  const dirs: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--runs" && i + 1 < args.length) dirs.push(...args[++i].split(","));
    else if (a.startsWith("--runs=")) dirs.push(...a.slice("--runs=".length).split(","));
    else if (a === "--runs") {
      throw new Error("exp:all: --runs needs a comma-separated list of run directories");
    } else throw new Error(`exp:all: --runs writes the report only; ${a} would be ignored`);
  }
  const given = dirs.filter((d) => d !== "");
  if (given.length === 0) {
    throw new Error(
      `exp:all: --runs ${
        JSON.stringify(dirs.join(","))
      } names no run directory (the report would be empty, and ` +
        `would replace results/REPORT.md)`,
    );
  }
  return given.map((d) => {
    const run = d.replace(/\/+$/, "");
    for (const f of ["summary.md", "summary.json"]) {
      try {
        Deno.statSync(`${run}/${f}`);
      } catch {
        throw new Error(`exp:all: ${run} is not a finished run (no ${f})`);
      }
    }
    const name = run.split("/").at(-2);
    if (name === undefined || !EXPERIMENTS.some(([n]) => n === name)) {
      throw new Error(
        `exp:all: ${run} is not under results/<experiment>/ (experiments: ${
          EXPERIMENTS.map(([n]) => n).join(", ")
        })`,
      );
    }
    return { name, run };
  });
}

/**
 * Writes results/REPORT.md atomically (a crash leaves the old one), after removing the temporary files that
 * killed exp:all processes left there.
 */
function writeReport(claims: { experiment: string; claim: Claim | string }[], sections: string[]): void {
  removeTemporaries("results", { alive: processAlive });
  writeFileAtomicSync("results/REPORT.md", [...claimTable(claims), ...sections].join("\n") + "\n");
  console.log("\nwrote results/REPORT.md");
}

async function main(): Promise<void> {
  if (Deno.args.includes("--help")) {
    console.log(
      "deno task exp:all [args passed to every experiment, e.g. --quick]\n" +
        "deno task exp:all [the same args] --resume results/all/<timestamp>   (continue an interrupted exp:all)\n" +
        "deno task exp:all --runs results/<experiment>/<timestamp>[,...]   (report from finished runs, runs nothing)",
    );
    return;
  }
  const sections: string[] = [];
  const claims: { experiment: string; claim: Claim | string }[] = [];
  let given: { name: string; run: string }[] | null;
  try {
    given = runsArg(Deno.args);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  if (given !== null) {
    for (const { name, run } of given) reportRun(name, run, "", sections, claims);
    writeReport(claims, sections);
    return;
  }
  let all: ResultsDir;
  let args: string[];
  try {
    const { resume, rest } = resumeArg(Deno.args);
    args = rest;
    all = openAll(resume, args);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  console.log(`exp:all → ${all.path} (continue with --resume ${all.path} if it is stopped)`);
  const progress: Record<string, ExperimentProgress> = all.reuse("experiments.json", PROGRESS) ?? {};
  const note = (name: string, value: ExperimentProgress) => {
    progress[name] = value;
    all.writeJson("experiments.json", progress);
  };
  for (const [name, file] of EXPERIMENTS) {
    const step = nextStep(progress[name], args);
    let run: string | null;
    let code = 0;
    if (step.kind === "report") {
      run = step.run;
      console.log(`\n=== ${taskOf(name)}: finished in ${run}`);
    } else {
      const t0 = performance.now();
      console.log(`\n=== ${taskOf(name)} ${step.args.join(" ")}`);
      run = progress[name]?.run ?? null;
      note(name, { run, code: null });
      const ended = await runExperiment(file, step.args, (named) => {
        run = named;
        note(name, { run, code: null });
      });
      code = ended.code;
      note(name, { run, code });
      if (ended.signal !== null) {
        console.error(
          `\nexp:all: ${ended.signal}: stopped during ${taskOf(name)}; continue with --resume ${all.path}`,
        );
        Deno.exit(ended.signal === "SIGINT" ? 130 : 143);
      }
      const seconds = ((performance.now() - t0) / 1000).toFixed(0);
      if (code !== 0 || run === null) {
        sections.push(
          `## ${taskOf(name)}`,
          "",
          `**Failed** (exit code ${code} after ${seconds} s)${
            run === null ? "" : ` in \`${run}\``
          }; see the console output.`,
          "",
        );
        continue;
      }
    }
    try {
      reportRun(name, run, wallOf(run), sections, claims);
    } catch (err) {
      // One unreadable run must not take the report of the others with it.
      sections.push(
        `## ${taskOf(name)}`,
        "",
        `**Not reported**: ${(err as Error).message} (run \`${run}\`).`,
        "",
      );
    }
  }
  writeReport(claims, sections);
  all.release();
}

const PROGRESS = z.record(z.string(), z.object({ run: z.string().nullable(), code: z.int().nullable() }));

/** The claims a run's summary.json holds (structured, or sentences with the verdict in bold). */
function claimsOf(path: string): (Claim | string)[] {
  let json: { claims?: unknown };
  try {
    json = JSON.parse(Deno.readTextFileSync(path));
  } catch (err) {
    // A damaged file would drop its claims from the count without a word.
    throw new Error(`cannot read the claims of "${path}": ${(err as Error).message}`, { cause: err });
  }
  if (json.claims === undefined) return [];
  if (!Array.isArray(json.claims)) throw new Error(`"${path}": "claims" is not a list`);
  const verdicts = new Set(["reproduced", "not reproduced", "inconclusive"]);
  for (const [i, c] of json.claims.entries()) {
    if (typeof c === "string") continue;
    if (typeof c !== "object" || c === null || typeof c.claim !== "string" || !verdicts.has(c.verdict)) {
      throw new Error(
        `"${path}": claim ${i} has no claim text or a verdict other than ${[...verdicts].join(", ")}`,
      );
    }
  }
  return json.claims as (Claim | string)[];
}

/** The report's opening: every claim in one table, and the count of each verdict. */
export function claimTable(claims: readonly { experiment: string; claim: Claim | string }[]): string[] {
  const cell = (s: string) => s.replaceAll("|", "\\|").replaceAll("\n", " ");
  const counts = { "reproduced": 0, "not reproduced": 0, "inconclusive": 0, "unjudged": 0 };
  const rows = claims.map(({ experiment, claim }) => {
    const verdict = typeof claim === "string" ? verdictOf(claim) : claim.verdict;
    counts[verdict ?? "unjudged"]++;
    return typeof claim === "string"
      ? `| exp:${experiment} | ${cell(claim)} | | | ${verdict ?? "—"} |`
      : `| exp:${experiment} | ${cell(claim.claim)} | ${cell(claim.rule)} | ${cell(claim.evidence)}${
        claim.note ? ` (${cell(claim.note)})` : ""
      } | ${claim.verdict} |`;
  });
  return [
    "# Experiment report",
    "",
    `${claims.length} claims: ${counts.reproduced} reproduced, ${counts["not reproduced"]} not reproduced, ` +
    `${counts.inconclusive} inconclusive${
      counts.unjudged > 0 ? `, ${counts.unjudged} without a verdict` : ""
    }.`,
    "",
    "| experiment | claim | rule (stated before the run) | numbers behind it | verdict |",
    "| --- | --- | --- | --- | --- |",
    ...rows,
    "",
  ];
}

if (import.meta.main) await main();
