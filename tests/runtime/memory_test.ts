/**
 * Memory stays flat over long loops on both devices (issue 16, item 7). A loop whose awaits all resolve at once
 * never lets the event loop run, and the finalizers that release unreachable tensors' memory (and the IR's
 * hash-consing entries) run only there; `realize` now gives the event loop a turn every 100 ms of work. The loop runs
 * in a process of its own (tests/runtime/_memory_loop.ts, with `--expose-gc` so that each sample measures what is
 * still reachable) and takes samples without ever yielding itself.
 */
import { equal, ok } from "node:assert/strict";
import { getBackend, tensor } from "../../mod.ts";
import { crossEntropy } from "../../lib/nn/mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

const SCRIPT = new URL("./_memory_loop.ts", import.meta.url).pathname;

interface Sample {
  step: number;
  heapUsed: number;
  liveBytes: number;
}

async function loop(device: string, steps: number, every: number): Promise<Sample[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", SCRIPT, device, String(steps), String(every)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  equal(out.code, 0, stderr.slice(-2000));
  return new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => JSON.parse(l));
}

const MB = 2 ** 20;

for (const device of ["cpu", "webgpu"]) {
  Deno.test(`memory stays flat over 10,000 steps of a loop that never waits (${device})`, async () => {
    const samples = await loop(device, 10_000, 1000);
    equal(samples.length, 10);
    const first = samples[0];
    const where = `(${device}, TEST_SEED=${TEST_SEED}): ${JSON.stringify(samples)}`;
    for (const s of samples) ok(s.liveBytes > 0, `the device reports its live bytes ${where}`);
    // Each step allocates 4 KiB of device memory and a few IR nodes (about 2 KB of heap while they are kept): a
    // loop that held them would grow by 40 MB and 20 MB over these steps. What stays alive is what the steps of
    // the last one or two event-loop turns allocated.
    const heapGrowth = Math.max(...samples.map((s) => s.heapUsed)) - first.heapUsed;
    const deviceGrowth = Math.max(...samples.map((s) => s.liveBytes)) - first.liveBytes;
    ok(heapGrowth < 4 * MB, `JS heap grew by ${(heapGrowth / MB).toFixed(1)} MB ${where}`);
    ok(deviceGrowth < 8 * MB, `device memory grew by ${(deviceGrowth / MB).toFixed(1)} MB ${where}`);
  });
}

Deno.test("the CPU device's liveBytes counts the bytes of its live buffers", async () => {
  const be = await getBackend("cpu");
  const rng = new TestRng(72);
  const n = rng.int(1000, 5000);
  const before = be.stats().liveBytes;
  const t = tensor(rng.normals(n), { device: "cpu" });
  const u = await t.mul(2).realize();
  // The upload of t and the result u: n f32 values each.
  equal(be.stats().liveBytes - before, 2 * 4 * n, `TEST_SEED=${TEST_SEED}`);
  t.dispose();
  u.dispose();
  equal(be.stats().liveBytes, before);
});

Deno.test("disposing the targets of a cross-entropy frees their buffer at once (cpu, wasm)", async () => {
  const rng = new TestRng(73);
  for (const device of ["cpu", "wasm"] as const) {
    const be = await getBackend(device);
    const [rows, classes] = [rng.int(2, 40), rng.int(2, 30)];
    const logits = tensor(rng.normals(rows * classes), { shape: [rows, classes], device });
    await logits.realize();
    const before = be.stats().liveBuffers;
    const ids = Int32Array.from({ length: rows }, () => rng.int(0, classes - 1));
    const targets = tensor(ids, { dtype: "i32", device });
    const loss = await crossEntropy(logits, targets).realize();
    // oneHot wrapped the i32 targets in a second tensor (a cast to their own dtype), which held their buffer
    // until the engine collected it: the trainer's disposal of each step's targets freed nothing until then.
    targets.dispose();
    loss.dispose();
    equal(be.stats().liveBuffers, before, `${device}, ${rows}x${classes}, TEST_SEED=${TEST_SEED}`);
    logits.dispose();
  }
});
