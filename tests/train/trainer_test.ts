/**
 * The training loop on an MLP over generated shape images: the loss falls, every step is recorded while the
 * device is read once every `readEvery` steps, metrics go to JSONL as they are read, norms and learning rates
 * are consistent, and device memory stays flat.
 */
import { deepEqual, equal, notDeepEqual, ok, rejects } from "node:assert/strict";
import { getBackend, getDefaultDevice, type Shape, type Tensor, tensor } from "../../mod.ts";
import type { DeviceName } from "../../lib/ir/node.ts";
import { AdamW, getAt, Mlp } from "../../lib/nn/mod.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../../lib/lora/mod.ts";
import { Trainer } from "../../lib/train/mod.ts";
import { readJsonl } from "../../lib/io/json.ts";
import { assertClose, TestRng } from "../_helpers.ts";
import { countReads, descriptorsOn, mlpSetup } from "./_setup.ts";

Deno.test("Trainer: an MLP learns; every step recorded, one readback per readEvery steps, flat memory", async () => {
  const rng = new TestRng(61);
  const dir = await Deno.makeTempDir();
  const steps = 100;
  const readEvery = 25;
  const options = mlpSetup({ initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps });
  const be = await getBackend(getDefaultDevice());
  const live: number[] = [];
  const flushed: number[] = [];
  const trainer = new Trainer({
    ...options,
    readEvery,
    metrics: `${dir}/metrics.jsonl`,
    onRecords: (records) => {
      flushed.push(records.length);
      live.push(be.stats().liveBuffers);
    },
  });
  const { result: records, reads } = await countReads(() => trainer.run());
  trainer.close();
  equal(reads, steps / readEvery, "one readback per readEvery steps");
  deepEqual(flushed, [25, 25, 25, 25]);
  deepEqual(records.map((r) => r.step), Array.from({ length: steps }, (_, i) => i + 1));
  equal(trainer.step, steps);

  // The loss falls well below its starting value (ln 4 ≈ 1.39 for four balanced classes).
  const first = records[0].loss;
  const last = records.slice(-10).reduce((a, r) => a + r.loss, 0) / 10;
  ok(first > 1 && last < 0.5 * first, `loss went from ${first} to ${last}`);
  ok(records.slice(-10).reduce((a, r) => a + r.accuracy, 0) / 10 > 0.8, "accuracy metric recorded and high");

  // Metrics file: one line per step, equal to the records.
  const lines = readJsonl(`${dir}/metrics.jsonl`);
  equal(lines.length, steps);
  deepEqual(lines[57], records[57] as unknown as Record<string, unknown>);

  // Norms: the global norm is the root of the summed squares of the group norms.
  for (const r of records) {
    assertClose([r.grad_norm ** 2], [r["grad_norm/head"] ** 2 + r["grad_norm/default"] ** 2], { rtol: 1e-4 });
  }
  // Learning rates follow the schedule times each group's rate.
  for (const r of records) {
    const f = options.schedule!(r.step);
    // `lr` is the rate the optimiser was given (its default group's), not the first named group's.
    assertClose([r["lr/head"], r["lr/default"], r.lr], [8e-3 * f, 4e-3 * f, 4e-3 * f], { rtol: 1e-12 });
  }
  // The tracked norm of the last step is the Frobenius norm of the final weight.
  const w = await (getAt(trainer.model, "layers.0.weight") as Tensor).data() as Float32Array;
  const norm = Math.sqrt(w.reduce((a, v) => a + v * v, 0));
  assertClose([records[steps - 1]["norm/layers.0.weight"]], [norm], { rtol: 1e-5 });

  // Old parameters, optimiser state, batches and metric vectors are released each step.
  // (Garbage collection may only lower the count.)
  ok(Math.max(...live) <= live[0], `live buffers at each readback: ${live}`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Trainer: options are checked", () => {
  const options = mlpSetup({ initSeed: 1, runSeed: 2, steps: 10 });
  const other = mlpSetup({ initSeed: 1, runSeed: 2, steps: 10 });
  let message = "";
  try {
    new Trainer({ ...options, optimizer: other.optimizer });
  } catch (e) {
    message = (e as Error).message;
  }
  ok(message.includes("same model"), message);
  for (const bad of [{ steps: 0 }, { readEvery: 0 }, { clipNorm: -1 }]) {
    let threw = false;
    try {
      new Trainer({ ...options, ...bad });
    } catch {
      threw = true;
    }
    ok(threw, `accepted ${JSON.stringify(bad)}`);
  }
});

Deno.test("Trainer: parameters the optimiser's filter selects but that were added after it are refused, by path", async () => {
  // LoRA on layers.1 attached after `new AdamW(model, { trainable: LORA_TRAINABLE })` was never trained: its
  // matrices stayed as initialised through every step, compiled or not.
  const added = ["layers.1.lora_A.weight", "layers.1.lora_B.weight"];
  const setup = async (device: DeviceName, compile: boolean, late: boolean) => {
    const rng = new TestRng(device === "cpu" ? 62 : 63);
    const model = new Mlp([6, 10, 3], { seed: rng.int(0, 2 ** 30), device });
    await attachLora(model, { targetModules: ["layers.0"], rank: 2, seed: rng.int(0, 2 ** 30) });
    const lora1 = () =>
      attachLora(model, { targetModules: ["layers.1"], rank: 2, seed: rng.int(0, 2 ** 30) });
    if (!late) await lora1();
    const optimizer = new AdamW(model, { lr: 1e-2, trainable: LORA_TRAINABLE });
    const x = (s: number) => tensor(new TestRng(s).normals(4 * 6), { shape: [4, 6], device });
    const trainer = new Trainer({
      model,
      optimizer,
      batch: (s) => ({ x: x(s) }),
      loss: (m, b) => (m.forward(b.x as Tensor<Shape, "f32">) as Tensor<Shape, "f32">).square().mean(),
      steps: 6,
      readEvery: 2,
      progress: false,
      compile,
    });
    return { model, trainer, lora1 };
  };
  const refused = (e: unknown) => {
    const m = (e as Error).message;
    ok(
      added.every((p) => m.includes(`"${p}"`)) && m.includes("create the optimiser after changing the model"),
      m,
    );
    ok(!m.includes("layers.0.lora") && !m.includes("base"), `only the parameters it does not hold: ${m}`);
    return true;
  };
  for (const device of ["cpu", "wasm"] as const) {
    for (const compile of [true, false]) {
      // Attached between creating the optimiser and the first step.
      const a = await setup(device, compile, true);
      await a.lora1();
      await rejects(() => a.trainer.run(), refused);
      a.trainer.close();
      // Attached between steps: after three (replayed once compiled), the next step refuses.
      const b = await setup(device, compile, true);
      await b.trainer.run({ until: 3 });
      equal(b.trainer.compileStats.replayed, compile ? 1 : 0);
      await b.lora1();
      await rejects(() => b.trainer.run(), refused);
      b.trainer.close();
      // Attached before the optimiser: every adapter matrix is trained.
      const c = await setup(device, compile, false);
      const before = await Promise.all(added.map((p) => (getAt(c.model, p) as Tensor).data()));
      equal((await c.trainer.run()).length, 6);
      const after = await Promise.all(added.map((p) => (getAt(c.model, p) as Tensor).data()));
      added.forEach((p, i) =>
        notDeepEqual(after[i], before[i], `${device} compile ${compile}: ${p} changed`)
      );
      c.trainer.close();
    }
  }
});

Deno.test("Trainer: a run that reached its last step has closed the metrics file it opened, closed or not", async () => {
  const rng = new TestRng(62);
  const dir = await Deno.makeTempDir();
  const steps = rng.int(4, 12);
  const path = `${dir}/metrics.jsonl`;
  const trainer = new Trainer({
    ...mlpSetup({ initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps }),
    readEvery: 3,
    metrics: path,
  });
  await trainer.run({ until: steps - 1 });
  equal(descriptorsOn(path), 1, "the trainer writes its metrics file while the run goes on");
  await trainer.run();
  // A sweep that drops its trainers unclosed kept one descriptor per run open until "Too many open files".
  equal(descriptorsOn(path), 0, `the metrics file is still open after the run's ${steps} steps`);
  equal(readJsonl(path).length, steps);
  trainer.close();
  await Deno.remove(dir, { recursive: true });
});
