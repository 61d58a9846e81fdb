/**
 * A resume refuses what the schedule's samples and the saved tensors do not show: a schedule that differs between
 * the sampled steps. A checkpoint written before this was recorded still resumes.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { Trainer, type TrainerOptions } from "../../lib/train/mod.ts";
import { parseSafetensors, serializeSafetensors } from "../../lib/io/safetensors.ts";
import type { Tensor } from "../../mod.ts";
import { TestRng } from "../_helpers.ts";
import { mlpSetup } from "./_setup.ts";

/** Runs `options` for `until` steps with a checkpoint at every step in a new directory; returns its path. */
async function checkpointAt<M extends object, B extends Record<string, Tensor>>(
  options: TrainerOptions<M, B>,
  until: number,
  trainableOnly = false,
): Promise<string> {
  const path = `${await Deno.makeTempDir()}/c.safetensors`;
  const t = new Trainer({ ...options, readEvery: 2, checkpoint: { path, every: 1, trainableOnly } });
  await t.run({ until });
  t.close();
  return path;
}

async function removeDir(ckpt: string): Promise<void> {
  await Deno.remove(ckpt.replace(/\/[^/]*$/, ""), { recursive: true });
}

/** Rewrites the checkpoint's metadata with `edit`, as a version that did not record something would have. */
async function editMetadata(ckpt: string, edit: (m: Record<string, string>) => void): Promise<void> {
  const { tensors, metadata } = parseSafetensors(await Deno.readFile(ckpt));
  const copy = { ...metadata };
  edit(copy);
  await Deno.writeFile(ckpt, serializeSafetensors(tensors, copy));
}

Deno.test("resume refuses a schedule that differs between its sampled steps, naming the steps around it", async () => {
  const rng = new TestRng(311);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: rng.int(400, 3000) };
  const { steps } = seeds;
  const sampled = new Set(Array.from({ length: 33 }, (_, i) => 1 + Math.round(((steps - 1) * i) / 32)));
  let drop = rng.int(2, steps);
  while (sampled.has(drop)) drop = rng.int(2, steps);
  const factor = rng.int(1, 9) / 10;
  // The two schedules differ at step `drop` only: one drops there, the other a step later.
  const run = (at: number) => ({ ...mlpSetup(seeds), schedule: (s: number) => (s < at ? 1 : factor) });
  const ckpt = await checkpointAt(run(drop), rng.int(1, 3));
  let named = "";
  await rejects(() => new Trainer(run(drop + 1)).resume(ckpt), (e: Error) => {
    const m = /scheduleValues\.steps (\d+)-(\d+) "[0-9a-f]+" then, "[0-9a-f]+" now/.exec(e.message);
    named = e.message;
    return m !== null && Number(m[1]) <= drop && drop <= Number(m[2]) && !e.message.includes("schedule.step");
  });
  ok(named.includes("configured differently"), named);
  const allowed = await new Trainer(run(drop + 1)).resume(ckpt, { allowChanged: true });
  equal(allowed.changed.length, 1, `${allowed.changed}`);
  deepEqual((await new Trainer(run(drop)).resume(ckpt)).changed, []);
  // Written before the values were recorded: the samples alone, which agree.
  await editMetadata(ckpt, (m) => {
    const config = JSON.parse(m.run);
    delete config.scheduleValues;
    m.run = JSON.stringify(config);
  });
  deepEqual((await new Trainer(run(drop + 1)).resume(ckpt)).changed, []);
  await removeDir(ckpt);
});
