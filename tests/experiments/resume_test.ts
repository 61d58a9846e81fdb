/**
 * Interrupt and resume of an experiment: exp:eva (shrunk further than --quick) is stopped with SIGINT, and in a
 * second case SIGTERM, as soon as its first run's result appears under results/eva/<dir>/runs/; rerun with
 * `--resume <dir>`, it reuses the finished runs (their files untouched: same bytes, same mtime) and ends with
 * the per-run results of an uninterrupted run of the same configuration on the same device.
 *
 * The runs use the cpu device: every process compiles its kernels afresh, which on lavapipe costs more than these
 * tiny runs themselves; what is tested (signal handling, reuse of finished runs, determinism across processes)
 * does not depend on the device.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { assertClose } from "../_helpers.ts";

const SCRIPT = new URL("../../experiments/eva.ts", import.meta.url).pathname;
const ARGS = [
  "--quick",
  "--device",
  "cpu",
  "--steps",
  "4",
  "--pretrain-steps",
  "10",
  "--calib-batches",
  "2",
  "--val-batches",
  "1",
  "--methods",
  "lora,pissa,cntlora",
  "--seeds",
  "0,1",
  "--targets",
  "wq,wv",
  "--rank",
  "2",
  "--batch-size",
  "4",
  "--seq-len",
  "16",
];
const RUNS = 6; // 3 methods × 2 seeds

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

function spawn(cwd: string, extra: string[] = []): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...ARGS, ...extra],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Runs the experiment to the end; returns its results directory (relative to `cwd`) and stdout. */
async function runToEnd(cwd: string, extra: string[] = []): Promise<{ dir: string; stdout: string }> {
  const out = await spawn(cwd, extra).output();
  const stdout = decode(out.stdout);
  equal(out.code, 0, decode(out.stderr).slice(-3000));
  const dir = /exp:eva → (\S+)/.exec(stdout)?.[1];
  ok(dir !== undefined, stdout.slice(0, 500));
  return { dir, stdout };
}

/** Names of the finished runs (`runs/*.json`) of a results directory. */
function runFiles(dir: string): string[] {
  try {
    return [...Deno.readDirSync(`${dir}/runs`)].map((e) => e.name).filter((n) => /^[^.].*\.json$/.test(n))
      .sort();
  } catch {
    return [];
  }
}

/** The results directories under `<cwd>/results/eva` (relative to `cwd`). */
function resultDirs(cwd: string): string[] {
  try {
    return [...Deno.readDirSync(`${cwd}/results/eva`)].map((e) => `results/eva/${e.name}`);
  } catch {
    return [];
  }
}

/**
 * Polls until a run's result file appears in a results directory not in `old`; returns that directory
 * (relative to `cwd`).
 */
async function firstRunDir(cwd: string, old: readonly string[], exited: () => boolean): Promise<string> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const dirs = resultDirs(cwd).filter((d) => !old.includes(d));
    for (const d of dirs) if (runFiles(`${cwd}/${d}`).length > 0) return d;
    if (exited()) throw new Error("the experiment ended before any run finished");
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error("no run finished within 120 s");
}

interface Run {
  label: string;
  seed: number;
  losses: number[];
  valLoss: number;
}

function readRuns(dir: string): Run[] {
  return runFiles(dir).map((n) => JSON.parse(Deno.readTextFileSync(`${dir}/runs/${n}`)));
}

Deno.test("exp:eva stopped by SIGINT or SIGTERM resumes with --resume, reusing finished runs", async (t) => {
  const cwd = await Deno.makeTempDir();
  // The uninterrupted reference (it also pretrains the base model, which the other processes load from cache).
  const reference = await runToEnd(cwd);
  const want = readRuns(`${cwd}/${reference.dir}`);
  equal(want.length, RUNS);

  for (const [signal, status] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    await t.step(signal, async () => {
      const old = resultDirs(cwd);
      const child = spawn(cwd);
      let exited = false;
      const output = child.output().finally(() => (exited = true));
      const dir = await firstRunDir(cwd, old, () => exited);
      child.kill(signal);
      const out = await output;
      const stderr = decode(out.stderr);
      equal(out.code, status, stderr.slice(-2000));
      match(stderr, new RegExp(`${signal}: stopped with \\d of ${RUNS} runs finished`));
      match(stderr, new RegExp(`continue with --resume ${dir.replaceAll(".", "\\.")}\\n`));
      const path = `${cwd}/${dir}`;
      const done = runFiles(path);
      ok(done.length >= 1 && done.length < RUNS, `finished before the signal: ${done}`);
      let summaryExists = true;
      try {
        Deno.statSync(`${path}/summary.json`);
      } catch {
        summaryExists = false;
      }
      ok(!summaryExists, "an interrupted experiment writes no summary");
      const before = new Map(done.map((n) => {
        const file = `${path}/runs/${n}`;
        return [n, { bytes: Deno.readFileSync(file), mtime: Deno.statSync(file).mtime!.getTime() }];
      }));

      const resumed = await runToEnd(cwd, ["--resume", dir]);
      equal(resumed.dir, dir);
      for (const [n, { bytes, mtime }] of before) {
        match(resumed.stdout, new RegExp(`reused runs/${n.replaceAll(".", "\\.")}`));
        deepEqual(Deno.readFileSync(`${path}/runs/${n}`), bytes, `${n} unchanged`);
        equal(Deno.statSync(`${path}/runs/${n}`).mtime!.getTime(), mtime, `${n} not rewritten`);
      }
      const got = readRuns(path);
      deepEqual(got.map((r) => [r.label, r.seed]), want.map((r) => [r.label, r.seed]));
      // The run files keep every step's loss; the last step's must agree as every other does.
      assertClose(got.map((r) => r.losses.at(-1)!), want.map((r) => r.losses.at(-1)!), {
        rtol: 1e-6,
        atol: 0,
        what: "last-step train losses",
      });
      assertClose(got.map((r) => r.valLoss), want.map((r) => r.valLoss), {
        rtol: 1e-6,
        atol: 0,
        what: "val",
      });
      const summary = JSON.parse(Deno.readTextFileSync(`${path}/summary.json`));
      const ref = JSON.parse(Deno.readTextFileSync(`${cwd}/${reference.dir}/summary.json`));
      type Row = { m: string; lastTenth: { mean: number }; val: { mean: number } };
      const finals = (s: { rows: Row[] }) => s.rows.flatMap((r) => [r.lastTenth.mean, r.val.mean]);
      assertClose(finals(summary), finals(ref), { rtol: 1e-6, atol: 0, what: "summary rows" });
    });
  }
  await Deno.remove(cwd, { recursive: true });
});
