/**
 * A full fine-tune's whole trajectory agrees with the same fine-tune in transformers + torch
 * (tests/fixtures/trajectories/*_full, from tools/trajectory_fixtures.py): from a base of tests/fixtures/models, the
 * Trainer trains every parameter (the embedding, every projection and bias, the norm gains, the head) for 8 steps of
 * AdamW in the two groups transformers' Trainer makes by default (no weight decay on biases and norm gains, which
 * the fixture lists as `no_decay`, decay on the rest), with global-norm clipping that binds on 3 of the 8 steps and a
 * warm-up + decay schedule, on the fixture's batches (labels shifted as transformers shifts them, -100 positions
 * left out of the mean). Each step's loss, gradient norm and learning rate, and every weight after the last step,
 * equal the reference's, on cpu and wasm with the compiled step (2 steps traced, 6 replayed). Two bases:
 * `llama_pad`, whose embedding is also the classifier (tied: its gradient sums the lookup's and the head's) and
 * whose padding token's row gets no gradient from the lookup (torch's `nn.Embedding(padding_idx)`; the batches' pad
 * positions hold that token), so that row trains through the head alone; and `llama_bias_bf16`, with an untied head
 * and biases on every projection (stored in bf16, read widened to f32 on both sides). The schedule follows
 * tessera's convention, one step ahead of transformers' (see peft_trajectory_test.ts).
 *
 * Tolerances. As in the LoRA trajectories, both sides compute in float32 in different summation orders and Adam carries
 * the differences on: its early steps move an element by about lr·m/√v, a ratio of the gradient's direction rather than
 * its size, so an element whose gradient is near zero can change its step by much more than its gradient's rounding.
 * Measured on cpu and wasm: losses within 1.5e-7 and gradient norms within 8.5e-7 relative, the final tensors within
 * 6.7e-6 of each one's largest element, except the key projections' biases (`K_BIAS`), within 6.2e-5. A key bias is
 * added before the rotation, and along the slowly rotating dimensions it shifts every score of a query by nearly the
 * same amount, which the softmax cancels: the step-1 gradient of those elements is 1e-5 or less against 2e-2 for the
 * fastest, what is left of nearly cancelling sums of larger terms, so rounding is a large part of it, and Adam scales
 * it up to full steps. torch itself ends there 1.2e-4 from its own float64 run (layer 1; 1.8e-5 in layer 0), against at
 * most 5.8e-6 in every other tensor. The bounds (3e-6 relative; 3e-5 of the largest element, 3e-4 for key biases) are
 * about four to five times the largest errors (the losses share the norms' bound), and below what a changed convention
 * gives (measured by changing one on tessera's side; each makes the test fail): weight decay on the norms and biases as
 * well moves the losses by 5.7e-5 or more and the final weights by 4e-4, weight decay left out the losses by 6.7e-5 and
 * the weights by 4e-4, clipping left out the losses by 5.2e-5 and the norms by 3.7e-4; on the tied base, the table
 * trained through its lookup alone moves the losses by 6.5e-3, through the head alone by 3.9e-3, and the pad row
 * trained through the lookup as well the losses by 5.1e-4 and the table by 1.2e-2.
 */
import { ok } from "node:assert/strict";
import type { DeviceName, Shape, Tensor } from "../../mod.ts";
import { readSafetensors, toFloat32, toInt32 } from "../../lib/io/safetensors.ts";
import { loadLlama } from "../../lib/models/load.ts";
import { saveHf } from "../../lib/models/hf.ts";
import { hfName } from "../../lib/models/names.ts";
import { AdamW, cosineSchedule, linearSchedule } from "../../lib/nn/optim/mod.ts";
import { Trainer } from "../../lib/train/mod.ts";
import { relError } from "../_helpers.ts";
import {
  checkLossesAndNorms,
  fixtureBatches,
  toFloat64,
  type TrajectorySettings,
  worstRelative,
} from "./_trajectory.ts";

const ROOT = new URL("../fixtures/", import.meta.url).pathname;

/** The settings of the reference run (expected.safetensors' metadata "options"). */
interface FullRunSettings extends TrajectorySettings {
  /** Whether the base's classifier is its embedding table. */
  tied: boolean;
  /** transformers' names of the parameters its Trainer gives no weight decay (biases, norm gains). */
  no_decay: string[];
}

/** The key projections' biases, whose final values the float32 rounding moves most (see the module comment). */
const K_BIAS = /\.k_proj\.bias$/;

async function fullTrajectory(name: string, device: DeviceName) {
  const { tensors, metadata } = await readSafetensors(`${ROOT}trajectories/${name}/expected.safetensors`);
  const o = JSON.parse(metadata.options) as FullRunSettings;
  const [steps, rows, t] = tensors.get("input_ids")!.shape;
  ok(steps === o.steps, `${name}: ${steps} batches for ${o.steps} steps`);
  const ids = toInt32(tensors.get("input_ids")!), labels = toInt32(tensors.get("labels")!);
  const model = await loadLlama(`${ROOT}models/${o.base}`, { device, weightDtype: "f32" });
  ok(
    model.config.sharedClassifier === o.tied,
    `${name}: tessera reads tied = ${model.config.sharedClassifier}`,
  );
  const noDecay = new Set(o.no_decay);
  ok(noDecay.size > 0, `${name}: the reference decays every parameter`);
  const optimizer = new AdamW(model, {
    lr: o.lr,
    weightDecay: o.weight_decay,
    betas: o.betas,
    eps: o.eps,
    groups: [{ name: "no_decay", params: (path) => noDecay.has(hfName(path) ?? path), weightDecay: 0 }],
  });
  // The split is transformers' exactly: every name it leaves undecayed is one of tessera's parameters, in the group.
  const undecayed = optimizer.groups.find((g) => g.name === "no_decay")!.paths.map((p) => hfName(p));
  ok(
    undecayed.length === noDecay.size && undecayed.every((n) => n !== undefined && noDecay.has(n)),
    `${name}: tessera's undecayed parameters ${undecayed.join(", ")} are not transformers' ${
      o.no_decay.join(", ")
    }`,
  );
  const make = { cosine: cosineSchedule, linear: linearSchedule }[o.schedule];
  const trainer = new Trainer({
    model,
    optimizer,
    steps,
    schedule: make({ totalSteps: steps, warmupSteps: o.warmup }),
    clipNorm: o.clip,
    readEvery: steps,
    batch: fixtureBatches(ids, labels, [rows, t], device),
    loss: (m, b) => m.loss(b.x as Tensor<Shape, "i32">, b.y as Tensor<Shape, "i32">),
  });
  const records = await trainer.run();
  const out = await Deno.makeTempDir();
  try {
    await saveHf(model, out);
    const saved = (await readSafetensors(`${out}/model.safetensors`)).tensors;
    const finals = [...tensors.keys()].filter((k) => k.startsWith("final.")).map((k) =>
      k.slice("final.".length)
    );
    ok(
      finals.length === saved.size && finals.every((k) => saved.has(k)),
      `${name}: tessera saves ${[...saved.keys()].join(", ")}; the reference trained ${finals.join(", ")}`,
    );
    const weights = finals.map((key) => ({
      key,
      err: relError(toFloat32(saved.get(key)!), toFloat32(tensors.get(`final.${key}`)!)),
    }));
    return { records, weights, o, tensors, compiled: trainer.compileStats };
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}

for (const name of ["llama_pad_full", "llama_bias_full"]) {
  for (const device of ["cpu", "wasm"] as const) {
    Deno.test(`${name} full fine-tune on ${device}: 8 Trainer steps follow transformers + torch's`, async () => {
      const { records, weights, o, tensors, compiled } = await fullTrajectory(name, device);
      ok(
        compiled.traced === 2 && compiled.replayed === o.steps - 2,
        `${name}: ${compiled.traced} steps traced, ${compiled.replayed} replayed (${compiled.blocker})`,
      );
      ok(records.length === o.steps, `${name}: ${records.length} records`);

      const lrs = toFloat64(tensors.get("lr")!), hf = toFloat64(tensors.get("hf_lr")!);
      // The default group is the decayed one, torch's first group; no_decay runs at the same rate.
      for (const key of ["lr/default", "lr/no_decay"]) {
        const got = records.map((r) => r[key]);
        const w = worstRelative(got, lrs);
        ok(w.err < 1e-15, `${name}: ${key} at step ${w.at + 1}: ${got[w.at]} vs ${lrs[w.at]}`);
      }
      ok(hf[0] === 0 && lrs.slice(0, -1).every((v, i) => v === hf[i + 1]), `${name}: rates one step on`);

      checkLossesAndNorms(`${name} on ${device}`, records, tensors, o.clip);
      for (const { key, err } of weights) {
        const bound = K_BIAS.test(key) ? 3e-4 : 3e-5;
        ok(
          err < bound,
          `${name} on ${device}: final ${key} differs by ${err.toExponential(2)} of its largest`,
        );
      }
    });
  }
}
