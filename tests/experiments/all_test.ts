/** exp:all passes its arguments to every experiment and reports each one, failures included. */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { claimTable, nextStep } from "../../experiments/all.ts";
import { acquireLock, processAlive, ResultsDir } from "../../lab/mod.ts";

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
  // Each under its task's name, as the user runs it (the results folders of three differ: spectral_gain, ...).
  for (
    const task of ["eva", "magnitude", "spectral-gain", "init-sweep", "vlm-dynamics", "cntlora", "gap-init"]
  ) {
    match(report, new RegExp(`## exp:${task}\\n\\n\\*\\*Failed\\*\\* \\(exit code 2`));
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

Deno.test("exp:all --resume: a finished experiment is reported, an interrupted one resumed in its own directory", () => {
  const args = ["--quick", "--seeds", "0"];
  const done = (run: string) => run === "results/eva/a";
  deepEqual(nextStep(undefined, args, done), { kind: "run", args });
  deepEqual(nextStep({ run: null, code: 2 }, args, done), { kind: "run", args });
  deepEqual(nextStep({ run: "results/eva/a", code: 0 }, args, done), {
    kind: "report",
    run: "results/eva/a",
  });
  // Stopped during it, failed, or exit code 0 without a summary: continued where it was.
  const resume = (run: string) => ({ kind: "run", args: ["--resume", run, ...args] });
  deepEqual(nextStep({ run: "results/eva/b", code: null }, args, done), resume("results/eva/b"));
  deepEqual(nextStep({ run: "results/eva/a", code: 1 }, args, done), resume("results/eva/a"));
  deepEqual(nextStep({ run: "results/eva/b", code: 0 }, args, done), resume("results/eva/b"));
});

Deno.test("exp:all --resume continues an interrupted exp:all directory and refuses other arguments", async () => {
  const dir = await Deno.makeTempDir();
  const script = new URL("../../experiments/all.ts", import.meta.url).pathname;
  const args = ["--no-such-option", "1"];
  // An exp:all stopped during exp:magnitude: five experiments finished, eva failed, gap_init not started.
  const all = ResultsDir.create("all", { root: `${dir}/results` });
  all.writeConfig({ args });
  const progress: Record<string, { run: string | null; code: number | null }> = {
    eva: { run: "results/eva/x", code: 1 },
    magnitude: { run: "results/magnitude/y", code: null },
  };
  for (const name of ["spectral_gain", "init-sweep", "vlm_dynamics", "cntlora"]) {
    const run = `results/${name}/z`;
    await Deno.mkdir(`${dir}/${run}`, { recursive: true });
    await Deno.writeTextFile(`${dir}/${run}/summary.md`, `# t\n\nsummary of ${name}\n`);
    await Deno.writeTextFile(`${dir}/${run}/summary.json`, JSON.stringify({ run: { wallSeconds: 12.4 } }));
    progress[name] = { run, code: 0 };
  }
  all.writeJson("experiments.json", progress);
  all.release();
  const path = all.path.slice(dir.length + 1);
  const run = (...extra: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...extra],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    })
      .outputSync();
  const changed = run("--resume", path, "--quick");
  equal(changed.code, 2);
  match(
    new TextDecoder().decode(changed.stderr),
    /was run with the arguments \["--no-such-option","1"\], now \["--quick"\]/,
  );
  const out = run("--resume", path, ...args);
  equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const stdout = new TextDecoder().decode(out.stdout);
  match(stdout, /=== exp:eva --resume results\/eva\/x --no-such-option 1\n/);
  match(stdout, /=== exp:magnitude --resume results\/magnitude\/y --no-such-option 1\n/);
  match(stdout, /=== exp:cntlora: finished in results\/cntlora\/z\n/);
  match(stdout, /=== exp:gap-init --no-such-option 1\n/);
  match(stdout, /=== exp:spectral-gain: finished in results\/spectral_gain\/z\n/);
  const report = await Deno.readTextFile(`${dir}/results/REPORT.md`);
  match(report, /## exp:cntlora\n\nRun: `results\/cntlora\/z` \(12 s\)\.\n\nsummary of cntlora/);
  match(
    report,
    /## exp:vlm-dynamics\n\nRun: `results\/vlm_dynamics\/z` \(12 s\)\.\n\nsummary of vlm_dynamics/,
  );
  match(report, /## exp:eva\n\n\*\*Failed\*\* \(exit code 2 after \d+ s\) in `results\/eva\/x`/);
  const recorded = JSON.parse(await Deno.readTextFile(`${dir}/${path}/experiments.json`));
  deepEqual(recorded.eva, { run: "results/eva/x", code: 2 });
  deepEqual(recorded.gap_init, { run: null, code: 2 });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("exp:all writes REPORT.md atomically: a failed write leaves no temporary, and a killed one's is removed", async () => {
  const dir = await Deno.makeTempDir();
  const script = new URL("../../experiments/all.ts", import.meta.url).pathname;
  await Deno.mkdir(`${dir}/results/eva/a`, { recursive: true });
  await Deno.writeTextFile(`${dir}/results/eva/a/summary.md`, "# t\n\nsummary of eva\n");
  await Deno.writeTextFile(`${dir}/results/eva/a/summary.json`, "{}");
  const run = () =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "--runs", "results/eva/a"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
  const leftovers = () =>
    [...Deno.readDirSync(`${dir}/results`)].map((e) => e.name).filter((n) => n.includes(".tmp"));
  // REPORT.md is a folder that holds a file: the rename fails, and the temporary goes with the error.
  await Deno.mkdir(`${dir}/results/REPORT.md/x`, { recursive: true });
  ok(run().code !== 0);
  deepEqual(leftovers(), []);
  await Deno.remove(`${dir}/results/REPORT.md`, { recursive: true });
  // What a process killed during the write leaves (its pid no longer runs) is removed by the next exp:all.
  const gone = new Deno.Command("true").spawn();
  await gone.status;
  await Deno.writeTextFile(`${dir}/results/REPORT.md.tmp-${gone.pid}-0a1b2c`, "# Experiment rep");
  const out = run();
  equal(out.code, 0, new TextDecoder().decode(out.stderr));
  deepEqual(leftovers(), []);
  match(await Deno.readTextFile(`${dir}/results/REPORT.md`), /summary of eva/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an experiment stops with its exp:all: killed, it takes the experiment with it; SIGTERM is passed on", async () => {
  const dir = await Deno.makeTempDir();
  const script = new URL("../../experiments/all.ts", import.meta.url).pathname;
  const start = () =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "--quick"],
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).spawn();
  // The lock of a new exp:eva run directory and the experiment's pid, once it holds it. Each run directory is read
  // on its own: the first run's directory (its lock gone) may be listed before the second's.
  const evaLock = async (except?: string): Promise<{ path: string; pid: number }> => {
    for (let i = 0; i < 600; i++) {
      let runs: Deno.DirEntry[] = [];
      try {
        runs = [...Deno.readDirSync(`${dir}/results/eva`)];
      } catch { /* not yet */ }
      for (const run of runs) {
        const path = `${dir}/results/eva/${run.name}/.lock`;
        if (path === except) continue;
        try {
          const pid = JSON.parse(Deno.readTextFileSync(path)).pid;
          if (typeof pid === "number") return { path, pid };
        } catch { /* not yet, or no longer */ }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("exp:eva took no lock within 60 s");
  };
  const gone = async (lock: { path: string; pid: number }) => {
    for (let i = 0; i < 50 && processAlive(lock.pid); i++) await new Promise((r) => setTimeout(r, 100));
    ok(!processAlive(lock.pid), `exp:eva (process ${lock.pid}) still runs 5 s after its exp:all ended`);
    // Free for the next process (`--resume`): removed on exit, or left by a killed holder and taken over.
    acquireLock(lock.path, "the test").release();
  };
  const killed = start();
  const killedErr = new Response(killed.stderr).text();
  const first = await evaLock();
  killed.kill("SIGKILL");
  await killed.status;
  await gone(first);
  match(await killedErr, /exp:eva: stopped: the exp:all that started it \(process \d+\) is gone/);
  const stopped = start();
  const stoppedErr = new Response(stopped.stderr).text();
  const second = await evaLock(first.path);
  stopped.kill("SIGTERM");
  equal((await stopped.status).code, 143);
  await gone(second);
  const all = (await stoppedErr).match(/continue with --resume (results\/all\/\S+)/);
  ok(all !== null, await stoppedErr);
  const recorded = JSON.parse(await Deno.readTextFile(`${dir}/${all[1]}/experiments.json`));
  equal(recorded.eva.code, 143);
  await Deno.remove(dir, { recursive: true });
});
