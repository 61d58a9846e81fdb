/**
 * exp:all — runs every experiment (passing its arguments on, e.g. `--quick`) one after another and writes
 * results/REPORT.md: each experiment's summary and links to its plots.
 *
 *   deno task exp:all --quick
 *
 * An experiment that fails is reported as failed in REPORT.md; the others still run.
 *
 * @module
 */

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
  const sections: string[] = ["# Experiment report", ""];
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
  Deno.writeTextFileSync(tmp, sections.join("\n") + "\n");
  Deno.renameSync(tmp, "results/REPORT.md");
  console.log("\nwrote results/REPORT.md");
}

if (import.meta.main) await main();
