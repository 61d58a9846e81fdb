/**
 * A resume refuses what the schedule's samples and the saved tensors do not show: a schedule that differs between
 * the sampled steps, another frozen base under a checkpoint of the trainable parameters only, and the settings of
 * norms, attention and dropout layers. A checkpoint written before these were recorded still resumes.
 */
import { deepEqual, equal, match, ok, rejects } from "node:assert/strict";
import {
  type Activation,
  AdamW,
  crossEntropy,
  Dropout,
  gelu,
  leakyRelu,
  Linear,
  Mlp,
  Module,
  namedParameters,
  silu,
} from "../../lib/nn/mod.ts";
import { Trainer, type TrainerOptions } from "../../lib/train/mod.ts";
import { LlamaLM } from "../../lib/models/mod.ts";
import { VisionAttention } from "../../lib/models/vlm.ts";
import type { RopeScaling } from "../../lib/nn/attention.ts";
import { parseSafetensors, serializeSafetensors } from "../../lib/io/safetensors.ts";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { TestRng } from "../_helpers.ts";
import { loraMlpRun, mlpSetup } from "./_setup.ts";

type F = Tensor<Shape, "f32">;
type I = Tensor<Shape, "i32">;

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

/** The LoRA run of these tests, adapters on the first layer, on a base of seed `baseSeed`. */
const loraRun = (baseSeed: number, inputSeed: number) =>
  loraMlpRun({ baseSeed, inputSeed, targets: ["layers.0"] });

Deno.test("resume of a trainable-only checkpoint refuses another frozen base, naming the first parameter", async () => {
  const rng = new TestRng(312);
  const baseSeed = rng.int(0, 2 ** 30);
  const otherSeed = baseSeed + rng.int(1, 1000);
  const inputSeed = rng.int(0, 2 ** 30);
  const options = await loraRun(baseSeed, inputSeed);
  const trained = new Set(options.optimizer.paths);
  const frozen = namedParameters(options.model).map(([p]) => p).filter((p) => !trained.has(p));
  const ckpt = await checkpointAt(options, rng.int(1, 5), true);
  await rejects(
    async () => new Trainer(await loraRun(otherSeed, inputSeed)).resume(ckpt),
    (e: Error) => e.message.includes(`frozen.${frozen[0]} "`) && e.message.includes(" then, "),
  );
  deepEqual((await new Trainer(await loraRun(baseSeed, inputSeed)).resume(ckpt)).changed, []);
  await editMetadata(ckpt, (m) => delete m.frozen);
  deepEqual((await new Trainer(await loraRun(otherSeed, inputSeed)).resume(ckpt)).changed, []);
  await removeDir(ckpt);
});

/** A one-layer Llama with the given norm epsilon and RoPE base, on token windows drawn per step. */
function llamaRun(
  o: { normEps: number; ropeTheta: number; dataSeed: number; ropeScaling?: RopeScaling },
): TrainerOptions<LlamaLM, {
  ids: Tensor;
}> {
  const model = LlamaLM.random({
    dim: 8,
    hiddenDim: 16,
    nLayers: 1,
    nHeads: 2,
    nKvHeads: 1,
    vocabSize: 11,
    seqLen: 8,
    sharedClassifier: true,
    normEps: o.normEps,
    ropeTheta: o.ropeTheta,
    ...(o.ropeScaling === undefined ? {} : { ropeScaling: o.ropeScaling }),
  }, { seed: 3 });
  return {
    model,
    optimizer: new AdamW(model, { lr: 1e-2 }),
    batch: (step) => {
      const r = new TestRng(o.dataSeed + step);
      return {
        ids: tensor(Int32Array.from({ length: 2 * 6 }, () => r.int(0, 10)), { shape: [2, 6], dtype: "i32" }),
      };
    },
    loss: (m, b) => {
      const ids = b.ids as I;
      const logits = m.forward(ids.slice(null, [0, 5]) as I) as F;
      return crossEntropy(logits.reshape([10, 11]) as F, ids.slice(null, [1, 6]).reshape([10]) as I);
    },
    steps: 4,
    progress: false,
  };
}

Deno.test("resume refuses another RMSNorm epsilon or RoPE base, naming the module and both values", async () => {
  const rng = new TestRng(313);
  const base = {
    normEps: rng.int(1, 9) * 1e-6,
    ropeTheta: rng.int(1, 9) * 1e4,
    dataSeed: rng.int(0, 2 ** 30),
  };
  const ckpt = await checkpointAt(llamaRun(base), rng.int(1, 3));
  const eps = base.normEps * 2;
  const theta = base.ropeTheta + 1e4;
  const fmt = JSON.stringify;
  const changes: [Partial<typeof base>, string][] = [
    [{ normEps: eps }, `model.layers.0.attention_norm.eps ${fmt(base.normEps)} then, ${fmt(eps)} now`],
    [{ ropeTheta: theta }, `model.ropeTheta ${fmt(base.ropeTheta)} then, ${fmt(theta)} now`],
    [
      { ropeTheta: theta },
      `model.layers.0.attention.ropeTheta ${fmt(base.ropeTheta)} then, ${fmt(theta)} now`,
    ],
  ];
  for (const [edit, text] of changes) {
    await rejects(
      () => new Trainer(llamaRun({ ...base, ...edit })).resume(ckpt),
      (e: Error) => e.message.includes(text),
      `${fmt(edit)}: ${text}`,
    );
  }
  deepEqual((await new Trainer(llamaRun(base)).resume(ckpt)).changed, []);
  // Written when LoRA layers alone recorded their settings (this model has none): resumes as before.
  await editMetadata(ckpt, (m) => {
    const config = JSON.parse(m.run);
    config.model = {};
    delete config.everyModule;
    m.run = JSON.stringify(config);
  });
  deepEqual((await new Trainer(llamaRun(base)).resume(ckpt)).changed, []);
  await removeDir(ckpt);
});

Deno.test("resume refuses another RoPE scaling of LlamaLM's rotary tables, naming the field", async () => {
  const rng = new TestRng(316);
  const base = { normEps: 1e-5, ropeTheta: 1e4, dataSeed: rng.int(0, 2 ** 30) };
  const factor = rng.int(2, 8);
  const ckpt = await checkpointAt(
    llamaRun({ ...base, ropeScaling: { type: "linear", factor } }),
    rng.int(1, 3),
  );
  const changes: [RopeScaling | undefined, string][] = [
    [{ type: "linear", factor: factor + 1 }, `model.ropeScaling.factor ${factor} then, ${factor + 1} now`],
    [undefined, `model.ropeScaling.type "linear" then, null now`],
  ];
  for (const [ropeScaling, text] of changes) {
    await rejects(
      () => new Trainer(llamaRun({ ...base, ropeScaling })).resume(ckpt),
      (e: Error) => e.message.includes(text),
      text,
    );
  }
  deepEqual(
    (await new Trainer(llamaRun({ ...base, ropeScaling: { type: "linear", factor } })).resume(ckpt)).changed,
    [],
  );
  await removeDir(ckpt);
});

/** A vision attention layer of `heads` heads (its projections' shapes do not depend on them). */
class Encoder extends Module {
  attn: VisionAttention;
  constructor(heads: number) {
    super();
    this.attn = new VisionAttention(8, heads, { seed: 6 });
  }
}

function encoderRun(heads: number, dataSeed: number): TrainerOptions<Encoder, { x: Tensor }> {
  const model = new Encoder(heads);
  return {
    model,
    optimizer: new AdamW(model, { lr: 1e-2 }),
    batch: (step) => ({ x: tensor(new TestRng(dataSeed + step).normals(2 * 3 * 8), { shape: [2, 3, 8] }) }),
    loss: (m, b) => m.attn.forward(b.x as F).square().mean() as F,
    steps: 4,
    compile: false,
    progress: false,
  };
}

Deno.test("resume refuses a VisionAttention layer with another number of heads", async () => {
  const rng = new TestRng(317);
  const dataSeed = rng.int(0, 2 ** 30);
  const [heads, other] = rng.next() < 0.5 ? [2, 4] : [4, 2];
  const ckpt = await checkpointAt(encoderRun(heads, dataSeed), rng.int(1, 3));
  await rejects(() => new Trainer(encoderRun(other, dataSeed)).resume(ckpt), (e: Error) => {
    match(e.message, new RegExp(`model\\.attn\\.heads ${heads} then, ${other} now`));
    return true;
  });
  deepEqual((await new Trainer(encoderRun(heads, dataSeed)).resume(ckpt)).changed, []);
  await removeDir(ckpt);
});

/** A linear layer under dropout of `rate`, its masks drawn from the step. */
class DroppedLinear extends Module {
  lin: Linear;
  drop: Dropout;
  constructor(rate: number) {
    super();
    this.lin = new Linear(5, 3, { seed: 2 });
    this.drop = new Dropout(rate);
  }
}

function dropoutRun(rate: number, dataSeed: number): TrainerOptions<DroppedLinear, { x: Tensor }> {
  const model = new DroppedLinear(rate);
  return {
    model,
    optimizer: new AdamW(model, { lr: 1e-2 }),
    batch: (step) => ({ x: tensor(new TestRng(dataSeed + step).normals(4 * 5), { shape: [4, 5] }) }),
    loss: (m, b, step) => (m.drop.forward(m.lin.forward(b.x as F) as F, step) as F).square().mean() as F,
    steps: 4,
    compile: false,
    progress: false,
  };
}

Deno.test("resume refuses a dropout layer with another rate", async () => {
  const rng = new TestRng(314);
  const rate = rng.int(1, 4) / 10;
  const other = rate + 0.1;
  const dataSeed = rng.int(0, 2 ** 30);
  const ckpt = await checkpointAt(dropoutRun(rate, dataSeed), rng.int(1, 3));
  await rejects(() => new Trainer(dropoutRun(other, dataSeed)).resume(ckpt), (e: Error) => {
    match(e.message, new RegExp(`model\\.drop\\.rate ${rate} then, ${other} now`));
    return true;
  });
  deepEqual((await new Trainer(dropoutRun(rate, dataSeed)).resume(ckpt)).changed, []);
  await removeDir(ckpt);
});

function mlpRun(
  activation: Activation,
  dataSeed: number,
  trainable?: RegExp,
): TrainerOptions<Mlp, { x: Tensor }> {
  const model = new Mlp([5, 6, 3], { seed: 4, activation });
  return {
    model,
    optimizer: new AdamW(model, { lr: 1e-2, ...(trainable === undefined ? {} : { trainable }) }),
    batch: (step) => ({ x: tensor(new TestRng(dataSeed + step).normals(4 * 5), { shape: [4, 5] }) }),
    loss: (m, b) => m.forward(b.x as F).square().mean() as F,
    steps: 4,
    compile: false,
    progress: false,
  };
}

Deno.test("resume refuses an Mlp with another activation; a checkpoint without its record resumes", async () => {
  const rng = new TestRng(315);
  const dataSeed = rng.int(0, 2 ** 30);
  const slope = rng.int(1, 9) / 10;
  const ckpt = await checkpointAt(mlpRun(gelu, dataSeed), rng.int(1, 3));
  await rejects(() => new Trainer(mlpRun(silu, dataSeed)).resume(ckpt), (e: Error) => {
    match(e.message, /model\.activation "gelu" then, "silu" now/);
    return true;
  });
  // Another function, not the library's: told by its code.
  await rejects(
    () => new Trainer(mlpRun((x) => leakyRelu(x, slope), dataSeed)).resume(ckpt),
    (e: Error) => /model\.activation "gelu" then, "[^"]*leakyRelu\(x, slope\)[^"]*" now/.test(e.message),
  );
  deepEqual((await new Trainer(mlpRun(gelu, dataSeed)).resume(ckpt)).changed, []);
  // Written when every configured module but Mlp recorded its settings: resumes as before.
  await editMetadata(ckpt, (m) => {
    const config = JSON.parse(m.run);
    delete config.model[""];
    delete config.mlpActivation;
    m.run = JSON.stringify(config);
  });
  deepEqual((await new Trainer(mlpRun(silu, dataSeed)).resume(ckpt)).changed, []);
  await removeDir(ckpt);
});

/** Every parameter's values, by path. */
async function values(model: object): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [p, t] of namedParameters(model)) out[p] = Array.from(await t.data());
  return out;
}

Deno.test("a refused resume leaves the trainer as it was: it resumes a matching checkpoint or runs from the start", async () => {
  const rng = new TestRng(318);
  const dataSeed = rng.int(0, 2 ** 30);
  const ckpt = await checkpointAt(mlpRun(gelu, dataSeed), rng.int(1, 3));
  // Another activation: refused before anything is loaded; the same trainer then resumes a matching checkpoint.
  const other = mlpRun(silu, dataSeed);
  const fresh = await values(other.model);
  const refused = new Trainer(other);
  await rejects(() => refused.resume(ckpt), /model\.activation/);
  deepEqual(await values(other.model), fresh);
  await editMetadata(ckpt, (m) => {
    const config = JSON.parse(m.run);
    config.model[""].activation = "silu";
    m.run = JSON.stringify(config);
  });
  const reference = mlpRun(silu, dataSeed);
  const step = (await new Trainer(reference).resume(ckpt)).step;
  equal((await refused.resume(ckpt)).step, step);
  deepEqual(await values(other.model), await values(reference.model));
  // Another trainable set, let through: the optimiser refuses its state after the parameters were loaded, and they
  // are put back.
  const head = mlpRun(silu, dataSeed, /^layers\.1\./);
  const initial = await values(head.model);
  const trainer = new Trainer(head);
  await rejects(() => trainer.resume(ckpt, { allowChanged: true }), /does not train/);
  deepEqual(await values(head.model), initial);
  await trainer.run({ until: 1 });
  trainer.close();
  const scratch = mlpRun(silu, dataSeed, /^layers\.1\./);
  const unrefused = new Trainer(scratch);
  await unrefused.run({ until: 1 });
  unrefused.close();
  deepEqual(await values(head.model), await values(scratch.model));
  await removeDir(ckpt);
});
