/**
 * A VLM fine-tuning run killed mid-run continues from its checkpoint: exp:vlm-dynamics and exp:gap-init (one
 * method, one seed, tiny sizes, on the default device) are killed (SIGKILL, as a crash or an out-of-memory kill ends
 * a process) once the run has written a checkpoint (every 25 steps) and before it ends; rerun with
 * `--resume <dir>`, each takes over the dead process's lock, continues from the checkpoint, and its run's results
 * (losses, gradient norms, validation losses, and each experiment's statistics, timings aside) are bit-for-bit those
 * of an uninterrupted run.
 */
import { deepEqual, equal, ok } from "node:assert/strict";

const STEPS = 200;
const TINY = ["--quick", "--steps", String(STEPS), "--pretrain-steps", "8", "--images", "48", "--seeds", "0"];
const SHRINK = ["--targets", "wq,wv", "--calib-batches", "1", "--val-batches", "1", "--batch-size", "2"];
const EXPERIMENTS = [
  {
    task: "vlm-dynamics",
    dir: "vlm_dynamics",
    args: [...TINY, ...SHRINK, "--methods", "lora", "--rank", "2", "--text-len", "12"],
    run: "lora-seed0",
  },
  {
    task: "gap-init",
    dir: "gap_init",
    args: [...TINY, ...SHRINK, "--methods", "gap-r1=gap-init:rank=1", "--noise", "1", "--grad-steps", "2"],
    run: "gap-r1-seed0",
  },
];
type Experiment = typeof EXPERIMENTS[number];

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

function spawn(e: Experiment, cwd: string, extra: string[] = []): Deno.ChildProcess {
  const script = new URL(`../../experiments/${e.dir}.ts`, import.meta.url).pathname;
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...e.args, ...extra],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Runs the experiment to the end; returns its results directory and its stderr. */
async function runToEnd(
  e: Experiment,
  cwd: string,
  extra: string[] = [],
): Promise<{ dir: string; stderr: string }> {
  const out = await spawn(e, cwd, extra).output();
  const stdout = decode(out.stdout);
  const stderr = decode(out.stderr);
  equal(out.code, 0, stderr.slice(-3000));
  const dir = new RegExp(`exp:${e.task} → (\\S+)`).exec(stdout)?.[1];
  ok(dir !== undefined, stdout.slice(0, 500));
  return { dir: `${cwd}/${dir}`, stderr };
}

/** The run's result without its timings (which differ between processes). */
function result(dir: string, run: string): Record<string, unknown> {
  const { initSeconds: _i, trainSeconds: _t, ...rest } = JSON.parse(
    Deno.readTextFileSync(`${dir}/runs/${run}.json`),
  );
  return rest;
}

for (const e of EXPERIMENTS) {
  Deno.test(`exp:${e.task} killed mid-run continues from its checkpoint, bit-for-bit`, async () => {
    const cwd = await Deno.makeTempDir();
    try {
      // The uninterrupted reference (it also pretrains the base, which the other processes load from cache).
      const reference = (await runToEnd(e, cwd)).dir;
      const want = result(reference, e.run);

      const child = spawn(e, cwd);
      let exited = false;
      const output = child.output().finally(() => (exited = true));
      // Killed once 50 steps are recorded (so the checkpoint of step 25 is written) and a checkpoint exists.
      let dir: string | undefined;
      const deadline = Date.now() + 120_000;
      while (dir === undefined) {
        ok(!exited && Date.now() < deadline, `the run wrote no checkpoint while running`);
        await new Promise((r) => setTimeout(r, 20));
        for await (const entry of Deno.readDir(`${cwd}/results/${e.dir}`)) {
          const d = `${cwd}/results/${e.dir}/${entry.name}`;
          if (d === reference || !await exists(`${d}/checkpoints/${e.run}.safetensors`)) continue;
          const records = await Deno.readTextFile(`${d}/metrics/${e.run}.jsonl`).catch(() => "");
          if (records.split("\n").length > 50) dir = d;
        }
      }
      child.kill("SIGKILL");
      const out = await output;
      equal(out.signal, "SIGKILL", decode(out.stderr).slice(-2000));
      ok(!await exists(`${dir}/runs/${e.run}.json`), "the run ended before the kill; lengthen it");

      const resumed = await runToEnd(e, cwd, ["--resume", dir.slice(cwd.length + 1)]);
      equal(resumed.dir, dir);
      // It continued from the checkpoint (a step of a multiple of 25 before the end), not from the start.
      const step = Number(/ seed 0: continued from ".*" \(step (\d+)\)/.exec(resumed.stderr)?.[1]);
      ok(
        step > 0 && step % 25 === 0 && step < STEPS,
        `continued from step ${step}: ${resumed.stderr.slice(-1000)}`,
      );
      deepEqual(result(dir, e.run), want);
    } finally {
      await Deno.remove(cwd, { recursive: true });
    }
  });
}
