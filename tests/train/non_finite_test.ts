/**
 * The non-finite guard: a loss or gradient norm that turns NaN/infinite stops the run at the next readback with a
 * NonFiniteError naming the step and the offending parameter group, after saving the last state whose own loss
 * was finite (compared here with an independent, shorter run of the same setup) as a loadable checkpoint.
 */
import { deepEqual, equal, match, ok, rejects, throws } from "node:assert/strict";
import type { Shape, Tensor } from "../../mod.ts";
import { getAt } from "../../lib/nn/mod.ts";
import { loadCheckpoint, type LossOutput, NonFiniteError, Trainer } from "../../lib/train/mod.ts";
import { readJsonl } from "../../lib/io/json.ts";
import { assertClose, TestRng } from "../_helpers.ts";
import { descriptorsOn, mlpSetup } from "./_setup.ts";

type F = Tensor<Shape, "f32">;

/** Runs `fn`, expecting it to reject with a NonFiniteError, and returns that error. */
async function nonFinite(fn: () => Promise<unknown>): Promise<NonFiniteError> {
  try {
    await fn();
  } catch (err) {
    ok(err instanceof NonFiniteError, `expected a NonFiniteError, got ${err}`);
    return err;
  }
  throw new Error("expected the run to stop on a non-finite value");
}

/** Parameters of the state after `steps` steps of an uninterrupted run of the same setup. */
async function referenceParams(initSeed: number, runSeed: number, total: number, steps: number) {
  const t = new Trainer({ ...mlpSetup({ initSeed, runSeed, steps: total }), readEvery: 5 });
  await t.run({ until: steps });
  const out: Record<string, Float32Array> = {};
  for (const path of t.optimizer.paths) {
    out[path] = await (getAt(t.model, path) as Tensor).data() as Float32Array;
  }
  t.close();
  return out;
}

Deno.test("a loss that turns NaN in one group stops the run naming the step and group; last good state saved", async () => {
  const rng = new TestRng(91);
  const initSeed = rng.int(0, 2 ** 30);
  const runSeed = rng.int(0, 2 ** 30);
  const steps = 20;
  const k = rng.int(7, 10); // in the second readback (steps 6..10), after its first step
  const dir = await Deno.makeTempDir();
  const options = mlpSetup({ initSeed, runSeed, steps });
  const trainer = new Trainer({
    ...options,
    readEvery: 5,
    metrics: `${dir}/metrics.jsonl`,
    checkpoint: { path: `${dir}/ckpt.safetensors`, every: 100 },
    // From step k the loss gains sqrt(−1 − Σ W²) = NaN for the head's weight W (layers.1.weight), whose
    // gradient −W/NaN reaches only the "head" group; the "default" group's gradients stay finite.
    loss: (m, b, step) => {
      const base = options.loss(m, b, step) as LossOutput;
      if (step < k) return base;
      const head = getAt(m, "layers.1.weight") as F;
      return { loss: base.loss.add(head.square().sum().add(1).neg().sqrt()), metrics: base.metrics };
    },
  });
  const err = await nonFinite(() => trainer.run());
  // The trainer cannot go on: its metrics file is closed (an unclosed one per diverged run of a sweep stayed open).
  equal(descriptorsOn(`${dir}/metrics.jsonl`), 0, "the metrics file is still open after the run stopped");
  trainer.close();
  equal(err.step, k);
  deepEqual(err.groups, ["head"]);
  ok(Number.isNaN(err.record.loss) && Number.isNaN(err.record["grad_norm/head"]));
  ok(Number.isFinite(err.record["grad_norm/default"]));
  match(err.message, new RegExp(`non-finite metrics at step ${k} \\(loss = NaN`));
  match(err.message, /parameter group\(s\) "head" are not finite/);
  ok(!/group\(s\)[^.]*"default"/.test(err.message), err.message);
  // Steps 6..k-1 were finite, so the state after step 5 had a finite loss (at step 6): it is the one saved.
  const path = `${dir}/ckpt.safetensors.last-good`;
  equal(err.checkpoint, path);
  equal(err.checkpointStep, 5);
  ok(err.message.includes(`after step 5, whose loss was finite) is saved in "${path}"`), err.message);

  // Every step of the failing readback is in the metrics file, the NaN as a string.
  const lines = readJsonl(`${dir}/metrics.jsonl`);
  deepEqual(lines.map((r) => r.step), Array.from({ length: 10 }, (_, i) => i + 1));
  equal(lines[k - 1].loss, "NaN");

  // The checkpoint loads and equals an independent 5-step run; the trainer's model was reset to it too.
  const want = await referenceParams(initSeed, runSeed, steps, 5);
  const saved = await loadCheckpoint(path);
  equal(saved.step, 5);
  equal(saved.seed, runSeed);
  for (const [p, w] of Object.entries(want)) {
    assertClose(await saved.params[p].data(), w, { rtol: 1e-6, atol: 1e-7, what: `checkpoint ${p}` });
    assertClose(await (getAt(trainer.model, p) as Tensor).data(), w, { rtol: 1e-6, atol: 1e-7, what: p });
  }
  equal(trainer.step, 5);
  await rejects(() => trainer.run(), /stopped on non-finite metrics at step \d+; create a new trainer/);

  // A fresh trainer resumes from it and continues like the uninterrupted run.
  const whole = new Trainer({ ...mlpSetup({ initSeed, runSeed, steps }), readEvery: 5 });
  const reference = await whole.run({ until: 7 });
  const resumed = new Trainer({ ...mlpSetup({ initSeed: initSeed + 1, runSeed, steps }), readEvery: 5 });
  await resumed.resume(path);
  const records = await resumed.run({ until: 7 });
  assertClose(records.map((r) => r.loss), reference.slice(5).map((r) => r.loss), { rtol: 1e-5 });
  whole.close();
  resumed.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a learning rate that blows up: the ruined state is not the one saved", async () => {
  const rng = new TestRng(92);
  const initSeed = rng.int(0, 2 ** 30);
  const runSeed = rng.int(0, 2 ** 30);
  const steps = 20;
  const options = mlpSetup({ initSeed, runSeed, steps });
  // Step 10 (the last of the second readback) updates with a learning rate 1e30 times too large: its own
  // metrics are finite, but the parameters it writes give a non-finite loss at step 11.
  const trainer = new Trainer({
    ...options,
    readEvery: 5,
    schedule: (s) => (s < 10 ? options.schedule!(s) : 1e30),
  });
  const err = await nonFinite(() => trainer.run());
  trainer.close();
  equal(err.step, 11);
  ok(err.groups.length > 0 && err.groups.every((g) => g === "head" || g === "default"), `${err.groups}`);
  // The state after step 10 was read back with finite metrics but never had a finite loss itself; the one
  // after step 5 did (at step 6).
  equal(err.checkpointStep, 5);
  ok(err.checkpoint !== null && err.checkpoint.endsWith(".last-good.safetensors"), err.checkpoint ?? "null");
  const saved = await loadCheckpoint(err.checkpoint!);
  const want = await referenceParams(initSeed, runSeed, steps, 5);
  for (const [p, w] of Object.entries(want)) {
    assertClose(await saved.params[p].data(), w, { rtol: 1e-6, atol: 1e-7, what: `checkpoint ${p}` });
  }
  await Deno.remove(err.checkpoint!);
});

Deno.test("non-finite guard: NaN at the first step saves nothing; stopOnNonFinite: false records and goes on", async () => {
  const options = mlpSetup({ initSeed: new TestRng(93).int(0, 2 ** 30), runSeed: 4, steps: 6 });
  const nanLoss = (
    m: Parameters<typeof options.loss>[0],
    b: Parameters<typeof options.loss>[1],
    s: number,
  ) => {
    const base = options.loss(m, b, s) as LossOutput;
    return { loss: base.loss.sub(1e9).sqrt(), metrics: base.metrics };
  };
  const first = new Trainer({ ...options, readEvery: 3, loss: nanLoss });
  const err = await nonFinite(() => first.run());
  first.close();
  equal(err.step, 1);
  equal(err.checkpoint, null);
  match(err.message, /No state had a finite loss, so no checkpoint was written/);

  const again = mlpSetup({ initSeed: 1, runSeed: 4, steps: 6 });
  const lenient = new Trainer({ ...again, readEvery: 3, loss: nanLoss, stopOnNonFinite: false });
  const records = await lenient.run();
  lenient.close();
  equal(records.length, 6);
  ok(records.every((r) => Number.isNaN(r.loss)));
  // A lastGoodPath beside stopOnNonFinite: false would never be written: refused, naming both.
  throws(
    () => new Trainer({ ...again, stopOnNonFinite: false, lastGoodPath: "/tmp/never.safetensors" }),
    /lastGoodPath "\/tmp\/never\.safetensors" is written when the run stops on a non-finite value; with stopOnNonFinite false/,
  );
});

Deno.test("the guard sees a NaN that reaches the loss only through a product with a literal zero (WebGPU too)", async () => {
  // WGSL lets a shader compiler treat x * 0.0 as 0.0; the renderer keeps IEEE's NaN * 0 = NaN (issue 16, item 14),
  // so the loss below is NaN from step k on every device, as on the CPU.
  const rng = new TestRng(94);
  const options = mlpSetup({ initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 8 });
  const k = rng.int(2, 6);
  const trainer = new Trainer({
    ...options,
    readEvery: 4,
    loss: (m, b, step) => {
      const base = options.loss(m, b, step) as LossOutput;
      if (step < k) return base;
      const head = getAt(m, "layers.1.weight") as F;
      return { loss: base.loss.add(head.square().sum().add(1).neg().sqrt().mul(0)), metrics: base.metrics };
    },
  });
  const err = await nonFinite(() => trainer.run());
  trainer.close();
  equal(err.step, k);
  ok(Number.isNaN(err.record.loss), `loss at step ${k}: ${err.record.loss}`);
});
