/**
 * Smoke test of every experiment: each runs end to end with `--quick` (shrunk further here) in a temporary
 * directory and writes its results: config, metrics, summary with one verdict per claim, and PNG + SVG plots.
 */
import { equal, match, ok } from "node:assert/strict";

const EXPERIMENTS: { name: string; script: string; args: string[]; plots: string[] }[] = [
  {
    name: "eva",
    script: "experiments/eva.ts",
    args: ["--quick", "--steps", "6", "--pretrain-steps", "30", "--calib-batches", "2", "--val-batches", "2"],
    plots: ["loss", "grad_norm", "eva_ranks", "eva_stability"],
  },
];

for (const e of EXPERIMENTS) {
  Deno.test(`experiment ${e.name} runs with --quick and writes its results`, async () => {
    const dir = await Deno.makeTempDir();
    const script = new URL(`../../${e.script}`, import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...e.args],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    equal(out.code, 0, stderr.slice(-3000));
    const runs = [...Deno.readDirSync(`${dir}/results/${e.name}`)];
    equal(runs.length, 1);
    const run = `${dir}/results/${e.name}/${runs[0].name}`;
    for (const f of ["config.yaml", "metrics.jsonl", "summary.json", "summary.md"]) {
      ok(Deno.statSync(`${run}/${f}`).size > 0, f);
    }
    for (const p of e.plots) {
      ok(Deno.statSync(`${run}/${p}.svg`).size > 0, `${p}.svg`);
      const png = Deno.readFileSync(`${run}/${p}.png`);
      equal([...png.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(""), "PNG", `${p}.png`);
    }
    const md = Deno.readTextFileSync(`${run}/summary.md`);
    match(md, /\*\*(reproduced|not reproduced|inconclusive)/);
    await Deno.remove(dir, { recursive: true });
  });
}
