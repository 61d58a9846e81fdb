/**
 * A resume refuses a configuration that changes what the remaining steps compute and that the optimiser's
 * description, the seed, the clipping and the schedule's samples do not show: the batch's shapes. A checkpoint
 * written before these were recorded still resumes.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { Trainer, type TrainerOptions } from "../../lib/train/mod.ts";
import { parseSafetensors, serializeSafetensors } from "../../lib/io/safetensors.ts";
import type { Tensor } from "../../mod.ts";
import { TestRng } from "../_helpers.ts";
import { mlpSetup } from "./_setup.ts";

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

Deno.test("a checkpoint written before the batch's shapes were recorded resumes", async () => {
  const rng = new TestRng(304);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 6 };
  const ckpt = await checkpointAt(mlpSetup(seeds), rng.int(1, 5));
  const { tensors, metadata } = parseSafetensors(await Deno.readFile(ckpt));
  const run = JSON.parse(metadata.run);
  const old: Record<string, string> = { ...metadata, run: JSON.stringify(run) };
  delete old.batch;
  await Deno.writeFile(ckpt, serializeSafetensors(tensors, old));
  const t = new Trainer(mlpSetup(seeds));
  deepEqual((await t.resume(ckpt)).changed, []);
  ok((await t.run()).length > 0);
  t.close();
  await Deno.remove(ckpt.replace(/\/[^/]*$/, ""), { recursive: true });
});
