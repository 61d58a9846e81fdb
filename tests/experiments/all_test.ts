/** exp:all passes its arguments to every experiment and reports each one, failures included. */
import { equal, match, ok } from "node:assert/strict";
import { claimTable } from "../../experiments/all.ts";

Deno.test("exp:all runs every experiment and writes results/REPORT.md (an unknown flag makes each fail fast)", async () => {
  const dir = await Deno.makeTempDir();
  const script = new URL("../../experiments/all.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, "--no-such-option", "1"],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(out.code, 0);
  const report = await Deno.readTextFile(`${dir}/results/REPORT.md`);
  for (
    const name of ["eva", "magnitude", "spectral_gain", "init-sweep", "vlm_dynamics", "cntlora", "gap_init"]
  ) {
    match(report, new RegExp(`## exp:${name}\\n\\n\\*\\*Failed\\*\\* \\(exit code 2`));
  }
  // Each experiment rejected the unknown key by name.
  match(new TextDecoder().decode(out.stderr), /no-such-option|noSuchOption/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("REPORT.md opens with every claim, its rule and numbers, and the count of each verdict", () => {
  const lines = claimTable([
    {
      experiment: "eva",
      claim: {
        claim: "EVA converges faster than LoRA.",
        rule: "paired mean difference of the first-quarter loss over 5 seeds, > 2 std of the differences",
        evidence: "0.91 vs 0.95 (diff 0.04 ± 0.01)",
        verdict: "reproduced",
      },
    },
    { experiment: "cntlora", claim: "CNTLoRA beats LoRA (1.20 vs 1.22): **inconclusive**." },
    {
      experiment: "gap_init",
      claim: { claim: "a | b", rule: "r", evidence: "e", verdict: "not reproduced", note: "needs 20 seeds" },
    },
  ]);
  const text = lines.join("\n");
  match(text, /^# Experiment report\n\n3 claims: 1 reproduced, 1 not reproduced, 1 inconclusive\./);
  match(text, /\| exp:eva \| EVA converges faster than LoRA\. \| paired mean difference .* \| reproduced \|/);
  match(text, /\| exp:cntlora \| CNTLoRA beats LoRA .* \| inconclusive \|/);
  match(text, /\| exp:gap_init \| a \\\| b \| r \| e \(needs 20 seeds\) \| not reproduced \|/);
});

Deno.test("exp:all --runs writes REPORT.md from the finished runs given, and refuses a directory that is not one", async () => {
  const dir = await Deno.makeTempDir();
  const script = new URL("../../experiments/all.ts", import.meta.url).pathname;
  const claim = (verdict: string, n: number) => ({
    claim: `claim ${n}`,
    rule: `rule ${n}`,
    evidence: `evidence ${n}`,
    verdict,
  });
  const runs = [["cntlora", "a", "reproduced"], ["cntlora", "b", "inconclusive"], [
    "eva",
    "c",
    "not reproduced",
  ]];
  for (const [i, [name, ts, verdict]] of runs.entries()) {
    await Deno.mkdir(`${dir}/results/${name}/${ts}`, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/results/${name}/${ts}/summary.md`,
      `# title\n\nsummary of ${name} ${ts}\n`,
    );
    await Deno.writeTextFile(
      `${dir}/results/${name}/${ts}/summary.json`,
      JSON.stringify({ claims: [claim(verdict, i)] }),
    );
  }
  const run = (...args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  const good = await run("--runs", "results/cntlora/a,results/eva/c", "--runs=results/cntlora/b/");
  equal(good.code, 0, new TextDecoder().decode(good.stderr));
  const report = await Deno.readTextFile(`${dir}/results/REPORT.md`);
  match(report, /3 claims: 1 reproduced, 1 not reproduced, 1 inconclusive\./);
  // In the order given: a, c, b.
  ok(
    report.indexOf("claim 0") < report.indexOf("claim 2") &&
      report.indexOf("claim 2") < report.indexOf("claim 1"),
  );
  match(report, /Run: `results\/eva\/c`\.\n\nsummary of eva c/);
  await Deno.mkdir(`${dir}/results/eva/unfinished`, { recursive: true });
  const bad = await run("--runs", "results/eva/unfinished");
  equal(bad.code, 2);
  match(
    new TextDecoder().decode(bad.stderr),
    /results\/eva\/unfinished is not a finished run \(no summary\.md\)/,
  );
  // A damaged summary.json, or a claim without a known verdict, is named: its claims would drop out of the count.
  await Deno.writeTextFile(`${dir}/results/cntlora/a/summary.json`, '{"claims": [');
  const damaged = await run("--runs", "results/cntlora/a");
  ok(damaged.code !== 0);
  match(
    new TextDecoder().decode(damaged.stderr),
    /cannot read the claims of "results\/cntlora\/a\/summary\.json"/,
  );
  await Deno.writeTextFile(
    `${dir}/results/cntlora/a/summary.json`,
    JSON.stringify({ claims: [claim("weakly", 0)] }),
  );
  const odd = await run("--runs", "results/cntlora/a");
  ok(odd.code !== 0);
  match(new TextDecoder().decode(odd.stderr), /claim 0 has no claim text or a verdict other than reproduced/);
  // An empty --runs names nothing: refused, and the last report stays.
  const last = await Deno.readTextFile(`${dir}/results/REPORT.md`);
  for (const args of [["--runs", ""], ["--runs=,"]]) {
    const empty = await run(...args);
    equal(empty.code, 2, args.join(" "));
    match(new TextDecoder().decode(empty.stderr), /--runs "[,]*" names no run directory/);
  }
  equal(await Deno.readTextFile(`${dir}/results/REPORT.md`), last);
  const mixed = await run("--runs", "results/eva/c", "--quick");
  equal(mixed.code, 2);
  match(new TextDecoder().decode(mixed.stderr), /--quick would be ignored/);
  await Deno.remove(dir, { recursive: true });
});
