/**
 * exp:all — runs every experiment (passing its arguments on, e.g. `--quick`) one after another and writes
 * results/REPORT.md: first a table of every claim (experiment, claim, rule, the numbers behind it, verdict) with
 * the count of reproduced / not reproduced / inconclusive, then each experiment's summary and links to its plots.
 *
 *   deno task exp:all --quick
 *   deno task exp:all --runs results/eva/20261206-101500,results/cntlora/20261206-104000
 *
 * An experiment that fails is reported as failed in REPORT.md; the others still run. `--runs` runs nothing: it
 * writes REPORT.md from the finished run directories given (any number per experiment, e.g. a default run and one
 * on stories260K; the experiment is the run's parent folder), in the order given.
 *
 * @module
 */

import { type Claim, verdictOf } from "../lab/mod.ts";

const EXPERIMENTS = [
  ["eva", "eva.ts"],
  ["magnitude", "magnitude.ts"],
  ["spectral_gain", "spectral_gain.ts"],
  ["init-sweep", "init_sweep.ts"],
  ["vlm_dynamics", "vlm_dynamics.ts"],
  ["cntlora", "cntlora.ts"],
  ["gap_init", "gap_init.ts"],
] as const;

/** The newest run directory of an experiment under `results/<name>/`, or null. */
function latestRun(name: string): string | null {
  try {
    const dirs = [...Deno.readDirSync(`results/${name}`)].filter((e) => e.isDirectory).map((e) => e.name)
      .sort();
    return dirs.length > 0 ? `results/${name}/${dirs[dirs.length - 1]}` : null;
  } catch {
    return null;
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
  const label = `${name} (${run.split("/").at(-1)})`;
  for (const claim of claimsOf(`${run}/summary.json`)) claims.push({ experiment: label, claim });
  const plots = [...Deno.readDirSync(run)].filter((e) => e.name.endsWith(".png")).map((e) => e.name).sort();
  // REPORT.md sits in results/: plots are linked from there.
  const at = run.lastIndexOf("results/");
  const rel = at >= 0 ? run.slice(at + "results/".length) : run;
  sections.push(
    `## exp:${name}`,
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

/** Writes results/REPORT.md (through a temporary file, so a crash leaves the old one). */
function writeReport(claims: { experiment: string; claim: Claim | string }[], sections: string[]): void {
  Deno.mkdirSync("results", { recursive: true });
  const tmp = `results/REPORT.md.tmp-${Deno.pid}`;
  Deno.writeTextFileSync(tmp, [...claimTable(claims), ...sections].join("\n") + "\n");
  Deno.renameSync(tmp, "results/REPORT.md");
  console.log("\nwrote results/REPORT.md");
}

async function main(): Promise<void> {
  if (Deno.args.includes("--help")) {
    console.log(
      "deno task exp:all [args passed to every experiment, e.g. --quick]\n" +
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
  for (const [name, file] of EXPERIMENTS) {
    const before = latestRun(name);
    const t0 = performance.now();
    console.log(`\n=== exp:${name} ${Deno.args.join(" ")}`);
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(`./${file}`, import.meta.url).pathname, ...Deno.args],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    const seconds = ((performance.now() - t0) / 1000).toFixed(0);
    const run = latestRun(name);
    if (code !== 0 || run === null || run === before) {
      sections.push(
        `## exp:${name}`,
        "",
        `**Failed** (exit code ${code}, ${seconds} s); see the console output.`,
        "",
      );
      continue;
    }
    try {
      reportRun(name, run, ` (${seconds} s)`, sections, claims);
    } catch (err) {
      // One unreadable run must not take the report of the others with it.
      sections.push(
        `## exp:${name}`,
        "",
        `**Not reported**: ${(err as Error).message} (run \`${run}\`).`,
        "",
      );
    }
  }
  writeReport(claims, sections);
}

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
