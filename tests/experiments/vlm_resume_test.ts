/**
 * A VLM fine-tuning run killed mid-run continues from its checkpoint: exp:vlm-dynamics (one method, one seed, tiny
 * sizes, on the default device) is killed (SIGKILL, as a crash or an out-of-memory kill ends it) once its run has
 * written a checkpoint (every 25 steps) and before the run ends; rerun with `--resume <dir>`, it takes over the
 * dead process's lock, and its run's losses, gradient norms, validation and fit losses and modality statistics are
 * bit-for-bit those of an uninterrupted run.
 */
import { deepEqual, equal, ok } from "node:assert/strict";

const SCRIPT = new URL("../../experiments/vlm_dynamics.ts", import.meta.url).pathname;
const STEPS = 200;
const ARGS = [
  "--quick",
  "--steps",
  String(STEPS),
  "--pretrain-steps",
  "8",
  "--images",
  "48",
  "--seeds",
  "0",
  "--methods",
  "lora",
  "--targets",
  "wq,wv",
  "--rank",
  "2",
  "--calib-batches",
  "1",
  "--val-batches",
  "1",
  "--batch-size",
  "2",
  "--text-len",
  "12",
];
const RUN = "lora-seed0";

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

function spawn(cwd: string, extra: string[] = []): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...ARGS, ...extra],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Runs the experiment to the end; returns its results directory and its stderr. */
async function runToEnd(cwd: string, extra: string[] = []): Promise<{ dir: string; stderr: string }> {
  const out = await spawn(cwd, extra).output();
  const stdout = decode(out.stdout);
  const stderr = decode(out.stderr);
  equal(out.code, 0, stderr.slice(-3000));
  const dir = /exp:vlm-dynamics → (\S+)/.exec(stdout)?.[1];
  ok(dir !== undefined, stdout.slice(0, 500));
  return { dir: `${cwd}/${dir}`, stderr };
}

/** The run's result without its timings (which differ between processes). */
function result(dir: string): Record<string, unknown> {
  const { initSeconds: _i, trainSeconds: _t, ...rest } = JSON.parse(
    Deno.readTextFileSync(`${dir}/runs/${RUN}.json`),
  );
  return rest;
}

Deno.test("exp:vlm-dynamics killed mid-run continues from its checkpoint, bit-for-bit", async () => {
  const cwd = await Deno.makeTempDir();
  try {
    // The uninterrupted reference (it also pretrains the base, which the other processes load from cache).
    const reference = (await runToEnd(cwd)).dir;
    const want = result(reference);

    const child = spawn(cwd);
    let exited = false;
    const output = child.output().finally(() => (exited = true));
    let dir: string | undefined;
    const deadline = Date.now() + 120_000;
    while (dir === undefined) {
      ok(!exited && Date.now() < deadline, `the run wrote no checkpoint while running`);
      await new Promise((r) => setTimeout(r, 20));
      for await (const e of Deno.readDir(`${cwd}/results/vlm_dynamics`)) {
        const d = `${cwd}/results/vlm_dynamics/${e.name}`;
        if (d !== reference && await exists(`${d}/checkpoints/${RUN}.safetensors`)) dir = d;
      }
    }
    child.kill("SIGKILL");
    const out = await output;
    equal(out.signal, "SIGKILL", decode(out.stderr).slice(-2000));
    ok(!await exists(`${dir}/runs/${RUN}.json`), "the run ended before the kill; lengthen it");

    const resumed = await runToEnd(cwd, ["--resume", dir.slice(cwd.length + 1)]);
    equal(resumed.dir, dir);
    // It continued from the checkpoint (a step of a multiple of 25 before the end), not from the start.
    const step = Number(/lora seed 0: continued from ".*" \(step (\d+)\)/.exec(resumed.stderr)?.[1]);
    ok(
      step > 0 && step % 25 === 0 && step < STEPS,
      `continued from step ${step}: ${resumed.stderr.slice(-1000)}`,
    );
    deepEqual(result(dir), want);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
