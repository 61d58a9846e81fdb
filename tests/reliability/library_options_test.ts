/**
 * The library is as strict as the CLI (issue 16, item 12): every public options object is checked against a zod
 * schema, and a bad value (rank 0, a NaN or negative alpha, a learning rate of NaN, a misspelt key) is an
 * `OptionsError` naming the function, the key and the value, where before `attachLora` attached nothing for rank 0
 * and every init accepted a NaN or negative alpha.
 */
import { ok, rejects, throws } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { Mlp } from "../../lib/nn/mlp.ts";
import { Adam, AdamW, cosineSchedule, linearSchedule, SGD } from "../../lib/nn/optim/mod.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { LoraLinear, loraPlusOptions } from "../../lib/lora/mod.ts";
import { INIT_METHODS } from "../../lib/init/mod.ts";
import { Trainer } from "../../lib/train/mod.ts";
import { LlamaLM } from "../../lib/models/llama.ts";
import { generate } from "../../lib/models/sample.ts";
import { refusedOptions, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

const refused = refusedOptions;

const rng = new TestRng(501);

Deno.test("attachLora refuses rank 0, a NaN or negative alpha, a bad dropout and unknown keys, naming each", async () => {
  const make = () => ({ q: new Linear(8, 8, { seed: rng.int(0, 999) }) });
  await refused(
    () => attachLora(make(), { targetModules: ["q"], rank: 0 }),
    /^attachLora: option "rank" must be >= 1, got 0$/,
  );
  await refused(
    () => attachLora(make(), { targetModules: ["q"], alpha: NaN }),
    /^attachLora: option "alpha" must be a finite number, got NaN$/,
  );
  const negative = -rng.int(1, 50) / 4;
  await refused(
    () => attachLora(make(), { targetModules: ["q"], alpha: negative }),
    new RegExp(`^attachLora: option "alpha" must be > 0, got ${negative}$`),
  );
  await refused(
    () => attachLora(make(), { targetModules: ["q"], dropout: 1 }),
    /option "dropout" must be < 1, got 1/,
  );
  await refused(
    () => attachLora(make(), { targetModules: [] }),
    /option "targetModules" must have at least 1 item, got \[\]/,
  );
  await refused(
    () => attachLora(make(), { targetModules: ["q"], ranks: 4 } as never),
    /^attachLora: unknown option "ranks"$/,
  );
  await refused(
    () => attachLora(make(), { targetModules: ["q"], rank: 2.5, alpha: Infinity }),
    /^attachLora: option "rank" must be an integer, got 2\.5; option "alpha" must be a finite number, got Infinity$/,
  );
  const m = make();
  await attachLora(m, { targetModules: ["q"], rank: 2, alpha: 4 });
  ok(m.q instanceof LoraLinear, "valid options still attach");
});

Deno.test("every registered init refuses a NaN or negative alpha and a rank below 1, naming the method", async () => {
  const w = tensor(rng.normals(12 * 10), { shape: [12, 10] }) as F;
  for (const method of Object.values(INIT_METHODS)) {
    const alpha = rng.next() < 0.5 ? NaN : -rng.int(1, 9);
    await refused(
      () => method.init(w, { rank: 2, alpha, seed: 0 }),
      new RegExp(`^${method.name}: option "alpha" must be (a finite number|> 0), got ${alpha}$`),
    );
    await refused(() => method.init(w, { rank: 0, alpha: 1, seed: 0 }), /option "rank" must be >= 1, got 0/);
  }
});

Deno.test("optimisers, schedules and LoRA+ refuse bad hyperparameters by key and value", async () => {
  const model = new Mlp([4, 6, 2], { seed: rng.int(0, 999) });
  await refused(() => new AdamW(model, { lr: NaN }), /^AdamW: option "lr" must be a finite number, got NaN$/);
  await refused(
    () => new Adam(model, { lr: 1e-3, betas: [0.9, 1] }),
    /^Adam: option "betas\[1\]" must be < 1, got 1$/,
  );
  // Past 1, one message (not "must be <= 1" and "must be < 1" both).
  await refused(
    () => new Adam(model, { lr: 1e-3, betas: [1.5, 0.9] }),
    /^Adam: option "betas\[0\]" must be < 1, got 1\.5$/,
  );
  await refused(() => new AdamW(model, { lr: 1e-3, eps: -1 }), /option "eps" must be >= 0, got -1/);
  await refused(
    () => new AdamW(model, { lr: 1e-3, learningRate: 1e-2 } as never),
    /^AdamW: unknown option "learningRate"$/,
  );
  await refused(
    () => new AdamW(model, { lr: 1e-3, groups: [{ name: "head", params: /x/, lr: -1 }] }),
    /option "groups\[0\]\.lr" must be >= 0, got -1/,
  );
  await refused(
    () => new SGD(model, { lr: 0.1, momentum: 1 }),
    /^SGD: option "momentum" must be < 1, got 1$/,
  );
  await refused(
    () => cosineSchedule({ totalSteps: 0 }),
    /^schedule: option "totalSteps" must be >= 1, got 0$/,
  );
  await refused(
    () => linearSchedule({ totalSteps: 10, warmupRatio: 2 }),
    /option "warmupRatio" must be <= 1, got 2/,
  );
  await refused(
    () => loraPlusOptions({ lr: 1e-3, ratio: 0 }),
    /^loraPlusOptions: option "ratio" must be > 0, got 0$/,
  );
});

Deno.test("Trainer, LoraLinear and generate refuse bad options by key and value", async () => {
  const model = new Mlp([4, 6, 2], { seed: rng.int(0, 999) });
  const base = {
    model,
    optimizer: new AdamW(model, { lr: 1e-3 }),
    loss: () => tensor(1),
    steps: 10,
  };
  await refused(() => new Trainer({ ...base, steps: 0 }), /^Trainer: option "steps" must be >= 1, got 0$/);
  await refused(
    () => new Trainer({ ...base, readEvery: 1.5 }),
    /option "readEvery" must be an integer, got 1\.5/,
  );
  await refused(() => new Trainer({ ...base, clipNorm: -1 }), /option "clipNorm" must be > 0, got -1/);
  await refused(
    () => new Trainer({ ...base, checkpoint: { path: "x", every: 0 } }),
    /option "checkpoint\.every" must be >= 1, got 0/,
  );
  await refused(() => new Trainer({ ...base, step: 3 } as never), /^Trainer: unknown option "step"$/);

  const w = tensor(rng.normals(6 * 4), { shape: [6, 4] }) as F;
  const init = {
    a: tensor(rng.normals(8), { shape: [2, 4] }) as F,
    b: tensor(new Float32Array(12), { shape: [6, 2] }) as F,
  };
  throws(
    () => LoraLinear.wrap(Linear.fromWeights(w), { ...init, rank: 2, alpha: 2, scale: 1 }, { dropout: -0.1 }),
    /^OptionsError: LoraLinear: option "dropout" must be >= 0, got -0\.1$/,
  );
  throws(
    () => LoraLinear.wrap(Linear.fromWeights(w), { ...init, rank: 2, alpha: 2, scale: NaN }),
    /LoraLinear: the init result: option "scale" must be a finite number, got NaN/,
  );

  const lm = LlamaLM.random({
    dim: 8,
    hiddenDim: 12,
    nLayers: 1,
    nHeads: 2,
    nKvHeads: 1,
    vocabSize: 10,
    seqLen: 8,
    sharedClassifier: true,
  }, { seed: 1, device: "cpu" });
  await rejects(
    generate(lm, [1], { steps: -1 }),
    /^OptionsError: generate: option "steps" must be >= 0, got -1$/,
  );
  await rejects(generate(lm, [1], { steps: 2, topP: 0 }), /option "topP" must be > 0, got 0/);
});
