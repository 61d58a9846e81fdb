/**
 * A resume refuses a configuration that changes what the remaining steps compute and that the optimiser's
 * description, the seed, the clipping and the schedule's samples do not show: the batch's shapes, which parameters
 * each group trains, the LoRA layers' scaling and dropout. A checkpoint written before these were recorded still
 * resumes.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { AdamW, SGD } from "../../lib/nn/mod.ts";
import { Trainer, type TrainerOptions } from "../../lib/train/mod.ts";
import { parseSafetensors, serializeSafetensors } from "../../lib/io/safetensors.ts";
import type { Shape, Tensor } from "../../mod.ts";
import { TestRng } from "../_helpers.ts";
import { loraMlpRun, mlpSetup } from "./_setup.ts";

type F = Tensor<Shape, "f32">;

/** Runs `options` for `until` steps and saves a checkpoint in a new directory; returns its path. */
async function checkpointAt<M extends object, B extends Record<string, Tensor>>(
  options: TrainerOptions<M, B>,
  until: number,
): Promise<string> {
  const path = `${await Deno.makeTempDir()}/c.safetensors`;
  const t = new Trainer({ ...options, readEvery: 2 });
  await t.run({ until });
  await t.save(path);
  t.close();
  return path;
}

Deno.test("resume refuses a changed batch shape, naming the entry and both shapes", async () => {
  const rng = new TestRng(301);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 8 };
  const size = rng.int(4, 24);
  const other = size + rng.int(1, 8);
  const until = rng.int(1, 6);
  const ckpt = await checkpointAt(mlpSetup({ ...seeds, batchSize: size }), until);
  await rejects(
    () => new Trainer(mlpSetup({ ...seeds, batchSize: other })).resume(ckpt),
    (e: Error) =>
      e.message.includes(`batch.x "[${size}, 432] f32" then, "[${other}, 432] f32" now`) &&
      e.message.includes(`batch.y "[${size}] i32" then, "[${other}] i32" now`),
  );
  const allowed = await new Trainer(mlpSetup({ ...seeds, batchSize: other })).resume(ckpt, {
    allowChanged: true,
  });
  ok(
    allowed.changed.includes(`batch.x "[${size}, 432] f32" then, "[${other}, 432] f32" now`),
    `${allowed.changed}`,
  );
  const same = new Trainer(mlpSetup({ ...seeds, batchSize: size }));
  deepEqual((await same.resume(ckpt)).changed, []);
  equal((await same.run()).length, seeds.steps - until);
  same.close();
  await Deno.remove(ckpt.replace(/\/[^/]*$/, ""), { recursive: true });
});

Deno.test("resume refuses other parameters in a group or another trainable set of the same size", async () => {
  const rng = new TestRng(302);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 6 };
  const ckpt = await checkpointAt(mlpSetup(seeds), rng.int(1, 5));
  // The head group over the first layer instead of the second: two parameters either way.
  const swapped = mlpSetup(seeds);
  swapped.optimizer = new AdamW(swapped.model, {
    lr: 4e-3,
    weightDecay: 0.01,
    groups: [{ name: "head", params: /^layers\.0\./, lr: 8e-3, weightDecay: 0 }],
  });
  await rejects(
    () => new Trainer(swapped).resume(ckpt),
    /trainable\.head\.1 "layers\.1\.bias" then, "layers\.0\.bias" now/,
  );
  // Plain SGD keeps no state, so nothing else would tell the first layer's training from the second's.
  const sgd = (layer: number) => {
    const s = mlpSetup(seeds);
    return {
      ...s,
      optimizer: new SGD(s.model, { lr: 0.05, trainable: new RegExp(`^layers\\.${layer}\\.`) }),
    };
  };
  const sgdCkpt = await checkpointAt(sgd(1), rng.int(1, 5));
  await rejects(
    () => new Trainer(sgd(0)).resume(sgdCkpt),
    /trainable\.default\.1 "layers\.1\.bias" then, "layers\.0\.bias" now/,
  );
  equal((await new Trainer(sgd(1)).resume(sgdCkpt)).changed.length, 0);
  for (const c of [ckpt, sgdCkpt]) await Deno.remove(c.replace(/\/[^/]*$/, ""), { recursive: true });
});

/** The LoRA run of these tests, its adapters on both layers with `lora`'s settings. */
const loraRun = (inputSeed: number, lora: { alpha: number; useRslora: boolean; dropout: number }) =>
  loraMlpRun({ baseSeed: 4, inputSeed, targets: ["layers.0", "layers.1"], lora });

Deno.test("resume refuses a LoRA layer with another alpha, rsLoRA flag or dropout", async () => {
  const rng = new TestRng(303);
  const inputSeed = rng.int(0, 2 ** 30);
  const base = { alpha: rng.int(1, 16), useRslora: rng.next() < 0.5, dropout: rng.int(1, 5) / 10 };
  const ckpt = await checkpointAt(await loraRun(inputSeed, base), rng.int(1, 5));
  const alpha = base.alpha + rng.int(1, 4);
  const changes: [Partial<typeof base>, string][] = [
    [{ alpha }, `model.layers.0.alpha ${base.alpha} then, ${alpha} now`],
    [
      { useRslora: !base.useRslora },
      `model.layers.0.useRslora ${base.useRslora} then, ${!base.useRslora} now`,
    ],
    [
      { dropout: base.dropout + 0.1 },
      `model.layers.1.dropout ${base.dropout} then, ${base.dropout + 0.1} now`,
    ],
  ];
  for (const [edit, text] of changes) {
    await rejects(
      async () => new Trainer(await loraRun(inputSeed, { ...base, ...edit })).resume(ckpt),
      (e: Error) => e.message.includes(text),
      JSON.stringify(edit),
    );
  }
  equal((await new Trainer(await loraRun(inputSeed, base)).resume(ckpt)).changed.length, 0);
  await Deno.remove(ckpt.replace(/\/[^/]*$/, ""), { recursive: true });
});

Deno.test("a checkpoint written before the batch, groups' parameters and layer settings were recorded resumes", async () => {
  const rng = new TestRng(304);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 6 };
  const ckpt = await checkpointAt(mlpSetup(seeds), rng.int(1, 5));
  const { tensors, metadata } = parseSafetensors(await Deno.readFile(ckpt));
  const run = JSON.parse(metadata.run);
  for (const key of ["trainable", "model"]) delete run[key];
  const old: Record<string, string> = { ...metadata, run: JSON.stringify(run) };
  delete old.batch;
  await Deno.writeFile(ckpt, serializeSafetensors(tensors, old));
  const t = new Trainer(mlpSetup(seeds));
  deepEqual((await t.resume(ckpt)).changed, []);
  ok((await t.run()).length > 0);
  t.close();
  await Deno.remove(ckpt.replace(/\/[^/]*$/, ""), { recursive: true });
});
