/**
 * Leftovers and dead ends (issue 16, item 11): the trainer keeps its last two checkpoints and continues from the
 * older one when the newer is damaged (and says so); when neither can be used, or the metrics file is damaged, the
 * error names the files to remove; temporary files that interrupted writes left are recognised and removed; errors
 * reach a command's user as one line, with the stack trace only under DEBUG.
 */
import { deepEqual, equal, match, ok, rejects } from "node:assert/strict";
import { previousCheckpointPath, type StepRecord, Trainer } from "../../lib/train/mod.ts";
import { readJsonl } from "../../lib/io/json.ts";
import { removeTemporaries, temporaryOwner, writeFileAtomic } from "../../lib/io/atomic.ts";
import { assertClose, TestRng } from "../_helpers.ts";
import { mlpSetup } from "../train/_setup.ts";

/** Cuts a file to a random part of its length (a write that never finished, a disk that filled up). */
async function damage(rng: TestRng, path: string): Promise<void> {
  const size = (await Deno.stat(path)).size;
  await Deno.truncate(path, rng.int(8, Math.floor(size / 2)));
}

Deno.test("a damaged newest checkpoint: the trainer continues from the previous one and matches an uninterrupted run", async () => {
  const rng = new TestRng(601);
  const initSeed = rng.int(0, 2 ** 30);
  const runSeed = rng.int(0, 2 ** 30);
  const steps = 14;
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/ckpt.safetensors`;
  const metrics = `${dir}/metrics.jsonl`;
  const first = new Trainer({
    ...mlpSetup({ initSeed, runSeed, steps }),
    readEvery: 5,
    metrics,
    checkpoint: { path: ckpt, every: 5 },
  });
  await first.run({ until: 10 });
  first.close();
  // The last two checkpoints are kept: step 10 at the path, step 5 beside it.
  ok((await Deno.stat(previousCheckpointPath(ckpt))).isFile);
  await damage(rng, ckpt);

  const resumed = new Trainer({
    ...mlpSetup({ initSeed: initSeed + 1, runSeed, steps }),
    readEvery: 5,
    metrics,
    checkpoint: { path: ckpt, every: 5 },
  });
  const info = await resumed.resume(ckpt);
  equal(info.path, previousCheckpointPath(ckpt));
  equal(info.step, 5);
  equal(info.skipped.length, 1);
  equal(info.skipped[0].path, ckpt);
  match(info.skipped[0].reason, /safetensors|truncated|header|bytes/i);
  const records = await resumed.run();
  resumed.close();

  const whole = new Trainer({ ...mlpSetup({ initSeed, runSeed, steps }), readEvery: 5 });
  const reference: StepRecord[] = await whole.run();
  whole.close();
  assertClose(records.map((r) => r.loss), reference.slice(5).map((r) => r.loss), {
    rtol: 1e-5,
    what: "loss",
  });
  // The metrics file holds every step once: steps 1..5 kept, 6..14 written again.
  deepEqual(readJsonl(metrics).map((r) => r.step), Array.from({ length: steps }, (_, i) => i + 1));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("no usable checkpoint, or a damaged metrics file: the error names the files to remove", async () => {
  const rng = new TestRng(602);
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/ckpt.safetensors`;
  const metrics = `${dir}/metrics.jsonl`;
  const setup = () => ({
    ...mlpSetup({ initSeed: rng.int(0, 999), runSeed: 3, steps: 12 }),
    readEvery: 4,
    metrics,
    checkpoint: { path: ckpt, every: 4 },
  });
  const t = new Trainer(setup());
  await t.run({ until: 8 });
  t.close();

  // A metrics line in the middle damaged: the records cannot be continued.
  const lines = (await Deno.readTextFile(metrics)).split("\n");
  lines[rng.int(1, 5)] = '{"step": 3, "loss": 1.2';
  await Deno.writeTextFile(metrics, lines.join("\n"));
  const m = new Trainer(setup());
  await m.resume(ckpt);
  await rejects(
    m.run(),
    new RegExp(
      `cannot continue the records of metrics file ".*metrics\\.jsonl": .*line \\d+ is not valid JSON.*Remove it ` +
        `and the checkpoints ".*ckpt\\.safetensors" and ".*ckpt\\.safetensors\\.previous" to run from the start`,
    ),
  );
  m.close();

  // Both checkpoints damaged.
  await damage(rng, ckpt);
  await damage(rng, previousCheckpointPath(ckpt));
  await rejects(
    new Trainer(setup()).resume(ckpt),
    /no usable checkpoint: ".*ckpt\.safetensors" \(.*\); ".*ckpt\.safetensors\.previous" \(.*\)\. Remove ".*ckpt\.safetensors" and ".*ckpt\.safetensors\.previous" to run from the start/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("temporary files of interrupted writes are recognised and removed; other files are not touched", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/sub`);
  // A live writer (this process) and one that no longer runs (a pid above the kernel's maximum).
  const dead = 4_194_305 + new TestRng(603).int(0, 1000);
  const files = {
    liveAtomic: `${dir}/w.safetensors.tmp-${Deno.pid}-a1b2c3d4e5f6`,
    deadAtomic: `${dir}/sub/ckpt.safetensors.tmp-${dead}-0f0f0f0f0f0f`,
    deadHidden: `${dir}/sub/.run.json.${dead}.deadbeef.tmp`,
    deadDir: `${dir}/abc123.tmp-${dead}-123456789`,
    user: `${dir}/notes.tmp`,
    data: `${dir}/sub/run.json`,
  };
  for (const [k, f] of Object.entries(files)) {
    if (k === "deadDir") await Deno.mkdir(f);
    else await Deno.writeTextFile(f, k);
  }
  equal(temporaryOwner(files.deadHidden.split("/").at(-1)!), dead);
  equal(temporaryOwner("notes.tmp"), undefined);
  const alive = (pid: number) => pid !== dead;
  deepEqual(
    removeTemporaries(dir, { recursive: true, alive }).sort(),
    [files.deadAtomic, files.deadHidden, files.deadDir].sort(),
  );
  deepEqual(removeTemporaries(dir, { recursive: true, owners: "all" }), [files.liveAtomic]);
  equal(await Deno.readTextFile(files.user), "user");
  equal(await Deno.readTextFile(files.data), "data");
  // The names the atomic writers really use are recognised.
  await writeFileAtomic(`${dir}/x.bin`, new Uint8Array([1]));
  ok(temporaryOwner(`x.bin.tmp-${Deno.pid}-0123456789ab`) === Deno.pid);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a command's error is one line naming the problem; the stack trace only with DEBUG", async () => {
  const ppl = new URL("../../cli/ppl.ts", import.meta.url).pathname;
  const missing = `${await Deno.makeTempDir()}/no-such-model.bin`;
  const run = async (env: Record<string, string>) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ppl, "--model", missing, "--tokenizer", missing, "--text", missing],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  const plain = await run({ DEBUG: "0" });
  equal(plain.code, 1);
  const lines = plain.stderr.trim().split("\n");
  equal(lines.length, 1, plain.stderr);
  match(lines[0], /^ppl: .*no-such-model\.bin/);
  ok(!/^\s+at /m.test(plain.stderr), plain.stderr);
  const debug = await run({ DEBUG: "1" });
  match(debug.stderr, /^\s+at .*\.ts:\d+:\d+/m);
});
