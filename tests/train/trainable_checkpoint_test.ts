/**
 * Checkpoints of the trainable parameters only (`checkpoint.trainableOnly`): a LoRA run's checkpoint holds the
 * adapters and their optimiser state, not the frozen base, and a run that rebuilds the base identically resumes
 * from it exactly as an uninterrupted run goes on.
 */
import { deepEqual } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { Mlp } from "../../lib/nn/mlp.ts";
import { AdamW } from "../../lib/nn/optim/adam.ts";
import { mse } from "../../lib/nn/loss.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../../lib/lora/mod.ts";
import { readSafetensors } from "../../lib/io/safetensors.ts";
import { Trainer } from "../../lib/train/mod.ts";
import { assertClose, TestRng } from "../_helpers.ts";

async function loraRun(seed: number, data: { x: Float32Array; y: Float32Array }, ckpt?: string) {
  const model = new Mlp([6, 8, 3], { seed });
  await attachLora(model, { targetModules: /layers\.\d/, rank: 2, alpha: 4, init: "pissa", seed });
  return new Trainer({
    model,
    optimizer: new AdamW(model, { lr: 1e-2, weightDecay: 0, trainable: LORA_TRAINABLE }),
    batch: (step) => {
      const rows = 4;
      const at = (step * rows) % 32;
      return {
        x: tensor(data.x.subarray(at * 6, (at + rows) * 6), { shape: [rows, 6] }),
        y: tensor(data.y.subarray(at * 3, (at + rows) * 3), { shape: [rows, 3] }),
      };
    },
    loss: (m, b) => mse(m.forward(b.x as never) as never, b.y as never),
    steps: 12,
    readEvery: 4,
    seed,
    progress: false,
    checkpoint: ckpt === undefined ? undefined : { path: ckpt, every: 4, trainableOnly: true },
  });
}

Deno.test("a trainable-only checkpoint holds the adapters and resumes like the uninterrupted run", async () => {
  const rng = new TestRng(901);
  const seed = rng.int(0, 9999);
  const data = { x: rng.normals(36 * 6), y: rng.normals(36 * 3) };
  const dir = await Deno.makeTempDir();
  const first = await loraRun(seed, data, `${dir}/ckpt.safetensors`);
  await first.run({ until: 8 });
  first.close();
  const { tensors } = await readSafetensors(`${dir}/ckpt.safetensors`);
  const names = [...tensors.keys()].sort();
  deepEqual(names.filter((n) => n.startsWith("params.")), [
    "params.layers.0.lora_A.weight",
    "params.layers.0.lora_B.weight",
    "params.layers.1.lora_A.weight",
    "params.layers.1.lora_B.weight",
  ]);
  const resumed = await loraRun(seed, data, `${dir}/ckpt.safetensors`);
  await resumed.resume(`${dir}/ckpt.safetensors`);
  const rest = await resumed.run();
  resumed.close();
  const whole = await loraRun(seed, data);
  const reference = await whole.run();
  whole.close();
  assertClose(rest.map((r) => r.loss), reference.slice(8).map((r) => r.loss), { rtol: 1e-5, what: "loss" });
  await Deno.remove(dir, { recursive: true });
});
