/**
 * Checkpoints: a run stopped halfway and resumed from its checkpoint (into a freshly built, differently
 * initialised model) records the same loss trajectory as an uninterrupted run; the metrics file keeps exactly
 * one line per step; the file holds every parameter and the optimiser state; mismatches are refused.
 */
import { deepEqual, equal, rejects } from "node:assert/strict";
import { SGD } from "../../lib/nn/mod.ts";
import { loadCheckpoint, Trainer } from "../../lib/train/mod.ts";
import { readJsonl } from "../../lib/io/json.ts";
import { assertClose, TestRng } from "../_helpers.ts";
import { mlpSetup } from "./_setup.ts";

Deno.test("resuming from a checkpoint reproduces the uninterrupted loss trajectory", async () => {
  const rng = new TestRng(71);
  const initSeed = rng.int(0, 2 ** 30);
  const runSeed = rng.int(0, 2 ** 30);
  const steps = 40;
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/checkpoint.safetensors`;
  const metrics = `${dir}/metrics.jsonl`;

  const whole = new Trainer({ ...mlpSetup({ initSeed, runSeed, steps }), readEvery: 8 });
  const reference = await whole.run();

  // A run that dies after step 24 (simulated by a callback that throws once the metrics of step 24 are written);
  // its last checkpoint is from step 20, so steps 21..24 are redone after resuming.
  const first = new Trainer({
    ...mlpSetup({ initSeed, runSeed, steps }),
    readEvery: 8,
    metrics,
    checkpoint: { path: ckpt, every: 20 },
    onRecords: (records) => {
      if (records.at(-1)!.step === 24) throw new Error("simulated crash");
    },
  });
  await rejects(() => first.run(), /simulated crash/);
  first.close();
  equal(readJsonl(metrics).length, 24);

  const saved = await loadCheckpoint(ckpt);
  equal(saved.step, 20);
  equal(saved.seed, runSeed);
  equal((saved.optimizer as { name: string }).name, "AdamW");
  // The file stores tensors in sorted-name order.
  deepEqual(Object.keys(saved.params), [
    "layers.0.bias",
    "layers.0.weight",
    "layers.1.bias",
    "layers.1.weight",
  ]);
  equal(Object.keys(saved.state).length, 8);

  // A fresh trainer with a different initialisation: everything must come from the checkpoint.
  const resumed = new Trainer({
    ...mlpSetup({ initSeed: initSeed + 1, runSeed, steps }),
    readEvery: 8,
    metrics,
    checkpoint: { path: ckpt, every: 20 },
  });
  await resumed.resume(ckpt);
  equal(resumed.step, 20);
  const rest = await resumed.run();
  resumed.close();
  deepEqual(rest.map((r) => r.step), Array.from({ length: 20 }, (_, i) => i + 21));
  for (const key of ["loss", "grad_norm", "norm/layers.0.weight", "accuracy", "lr"]) {
    assertClose(
      rest.map((r) => r[key]),
      reference.slice(20).map((r) => r[key]),
      { rtol: 1e-6, atol: 1e-7, what: `resumed ${key}` },
    );
  }
  assertClose(first.history.map((r) => r.loss), reference.slice(0, 24).map((r) => r.loss), {
    rtol: 0,
    atol: 0,
  });

  const lines = readJsonl(metrics);
  deepEqual(lines.map((r) => r.step), Array.from({ length: steps }, (_, i) => i + 1));
  assertClose(lines.map((r) => r.loss as number), reference.map((r) => r.loss), { rtol: 1e-6, atol: 1e-7 });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resume refuses a checkpoint of another optimiser or seed", async () => {
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/c.safetensors`;
  const t = new Trainer({ ...mlpSetup({ initSeed: 1, runSeed: 2, steps: 4 }), readEvery: 2 });
  await t.run({ until: 2 });
  await t.save(ckpt);
  const sgd = mlpSetup({ initSeed: 1, runSeed: 2, steps: 4 });
  await rejects(
    () => new Trainer({ ...sgd, optimizer: new SGD(sgd.model, { lr: 0.1, momentum: 0.9 }) }).resume(ckpt),
    /holds AdamW state, but the optimiser to restore is SGD/,
  );
  await rejects(
    () => new Trainer(mlpSetup({ initSeed: 1, runSeed: 3, steps: 4 })).resume(ckpt),
    /seed 2, this one has seed 3/,
  );
  await Deno.writeTextFile(`${dir}/x.safetensors`, "not a checkpoint");
  await rejects(() => loadCheckpoint(`${dir}/x.safetensors`), /x\.safetensors/);
  await Deno.remove(dir, { recursive: true });
});
