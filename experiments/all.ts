/**
 * exp:all — runs every experiment (passing its arguments on, e.g. `--quick`) one after another and writes
 * results/REPORT.md: first a table of every claim (experiment, claim, rule, the numbers behind it, verdict) with
 * the count of reproduced / not reproduced / inconclusive, then each experiment's summary and links to its plots.
 *
 *   deno task exp:all --quick
 *
 * An experiment that fails is reported as failed in REPORT.md; the others still run.
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

async function main(): Promise<void> {
  if (Deno.args.includes("--help")) {
    console.log("deno task exp:all [args passed to every experiment, e.g. --quick]");
    return;
  }
  const sections: string[] = [];
  const claims: { experiment: string; claim: Claim | string }[] = [];
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
    const summary = Deno.readTextFileSync(`${run}/summary.md`).replace(/^# .*\n/, "");
    for (const claim of claimsOf(`${run}/summary.json`)) claims.push({ experiment: name, claim });
    const plots = [...Deno.readDirSync(run)].filter((e) => e.name.endsWith(".png")).map((e) => e.name).sort();
    const rel = run.slice("results/".length);
    sections.push(
      `## exp:${name}`,
      "",
      `Run: \`${run}\` (${seconds} s).`,
      "",
      summary.trim(),
      "",
      ...plots.map((p) => `![${name} ${p}](${rel}/${p})`),
      "",
    );
  }
  Deno.mkdirSync("results", { recursive: true });
  const tmp = `results/REPORT.md.tmp-${Deno.pid}`;
  Deno.writeTextFileSync(tmp, [...claimTable(claims), ...sections].join("\n") + "\n");
  Deno.renameSync(tmp, "results/REPORT.md");
  console.log("\nwrote results/REPORT.md");
}

/** The claims a run's summary.json holds (structured, or sentences with the verdict in bold). */
function claimsOf(path: string): (Claim | string)[] {
  try {
    const json = JSON.parse(Deno.readTextFileSync(path)) as { claims?: unknown };
    return Array.isArray(json.claims) ? json.claims as (Claim | string)[] : [];
  } catch {
    return [];
  }
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
