/**
 * The compiled step: replayed steps equal eager ones bit for bit, new scalar values compile nothing, and a change
 * of shapes or parameters makes the trainer trace again.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { getBackend, setDefaultDevice, type Tensor, tensor } from "../../mod.ts";
import { CpuBackend } from "../../lib/runtime/cpu.ts";
import type { Backend } from "../../lib/runtime/backend.ts";
import { BoundPlan, copyStorages, graphSignature, planFor, writeStorage } from "../../lib/runtime/plan.ts";
import { paramValue } from "../../lib/codegen/lower.ts";
import {
  AdamW,
  crossEntropy,
  loadParameters,
  Mlp,
  mse,
  namedParameters,
  setTraining,
} from "../../lib/nn/mod.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../../lib/lora/mod.ts";
import type { Shape } from "../../mod.ts";
import { Trainer, type TrainerOptions } from "../../lib/train/mod.ts";
import { mayReadStep } from "../../lib/train/compiled_step.ts";
import { cachedPlans } from "../../lib/runtime/plan.ts";
import { loraMlpSetup, mlpSetup } from "./_setup.ts";
import { TinyLm } from "./_models.ts";
import { TestRng } from "../_helpers.ts";

type Setup = ReturnType<typeof mlpSetup>;
type F = Tensor<Shape, "f32">;
type I = Tensor<Shape, "i32">;

async function stateOf(
  t: { model: object; optimizer: Trainer<object>["optimizer"] },
): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [p, v] of namedParameters(t.model)) out[p] = Array.from(await v.data() as Float32Array);
  for (const [k, v] of Object.entries(t.optimizer.stateDict())) {
    out[k] = Array.from(await v.data() as Float32Array);
  }
  return out;
}

function pair(make: () => Setup, extra: Partial<TrainerOptions<Setup["model"], never>> = {}) {
  const eager = new Trainer({ ...make(), readEvery: 5, compile: false, ...extra } as Setup);
  const compiled = new Trainer({ ...make(), readEvery: 5, ...extra } as Setup);
  return { eager, compiled };
}

Deno.test("replayed steps equal eager steps bit for bit over 20 steps (webgpu)", async () => {
  const rng = new TestRng(301);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 20 };
  const { eager, compiled } = pair(() => mlpSetup(seeds));
  const a = await eager.run();
  const b = await compiled.run();
  deepEqual(b, a);
  deepEqual(await stateOf(compiled), await stateOf(eager));
  equal(compiled.optimizer.stepCount, 20);
  const stats = compiled.compileStats;
  equal(stats.traced, 2, JSON.stringify(stats));
  equal(stats.replayed, 18);
  eager.close();
  compiled.close();
});

Deno.test("a new learning rate at every replayed step compiles no kernel and no plan", async () => {
  const be = await getBackend("webgpu");
  const seeds = { initSeed: 3, runSeed: 4, steps: 30 };
  const t = new Trainer({ ...mlpSetup(seeds), readEvery: 5 });
  await t.run({ until: 5 });
  const kernels = be.stats().cachedKernels;
  const plans = cachedPlans();
  const records = await t.run();
  equal(be.stats().cachedKernels, kernels);
  equal(cachedPlans(), plans);
  // The cosine schedule did change the rate at every step.
  equal(new Set(records.map((r) => r.lr)).size, records.length);
  equal(t.compileStats.replayed, 28);
  t.close();
});

Deno.test("reading the parameters between runs keeps the replay (webgpu, parameters inside packs)", async () => {
  const rng = new TestRng(303);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 20 };
  const { eager, compiled } = pair(() => mlpSetup(seeds));
  await compiled.run({ until: 5 });
  const traced = compiled.compileStats.traced;
  for (const until of [10, 15, 20]) {
    // Every parameter, read as a user logging weights would: their values, not copies of them.
    for (const [, p] of namedParameters(compiled.model)) await p.data();
    await compiled.run({ until });
  }
  equal(compiled.compileStats.traced, traced, JSON.stringify(compiled.compileStats));
  equal(compiled.compileStats.replayed, 20 - traced);
  await eager.run();
  deepEqual(await stateOf(compiled), await stateOf(eager));
  eager.close();
  compiled.close();
});

Deno.test("a replayed step checks each batch's token ids and targets as the traced step's ops did", async () => {
  const cfg = { vocab: 29, dim: 24, layers: 1, nHeads: 6, nKvHeads: 2, hiddenDim: 40 };
  for (const [entry, op, noun] of [["x", "gather", "index"], ["y", "crossEntropy", "target"]] as const) {
    const model = new TinyLm(cfg, 5);
    const t = new Trainer({
      model,
      optimizer: new AdamW(model, { lr: 1e-2 }),
      batch: (step) => {
        const r = new TestRng(500 + step);
        const ids = () => Int32Array.from({ length: 2 * 5 }, () => r.int(0, cfg.vocab - 1));
        const [x, y] = [ids(), ids()];
        if (step === 6) (entry === "x" ? x : y)[3] = cfg.vocab + 11; // replayed by then
        return {
          x: tensor(x, { shape: [2, 5], dtype: "i32" }),
          y: tensor(y, { shape: [2, 5], dtype: "i32" }),
        };
      },
      loss: (m, b) => crossEntropy(m.forward(b.x as I) as F, b.y as I),
      steps: 10,
      readEvery: 1,
      progress: false,
    });
    await t.run({ until: 5 });
    ok(t.compileStats.replayed > 0, JSON.stringify(t.compileStats));
    await rejects(
      () => t.run({ until: 7 }),
      new RegExp(`batch "${entry}" \\(${op}\\): ${noun} 40 \\(element 3 of \\[2, 5\\]\\)`),
    );
    t.close();
  }
});

Deno.test("a replayed step refuses a factor or a batch device as the traced step does, leaving the same model", async () => {
  const cases: { schedule: (s: number) => number; device: (s: number) => "cpu" | "wasm"; error: string }[] = [
    {
      schedule: (s) => (s >= 7 ? -1 : 1),
      device: () => "wasm",
      error: "AdamW: lrScale must be a finite number >= 0, got -1",
    },
    {
      schedule: (s) => (s >= 7 ? NaN : 1),
      device: () => "wasm",
      error: "AdamW: lrScale must be a finite number >= 0, got NaN",
    },
    {
      schedule: () => 1,
      device: (s) => (s >= 7 ? "cpu" : "wasm"),
      error: "Cannot combine tensors on devices cpu and wasm in Dot; move one with .to()",
    },
  ];
  for (const c of cases) {
    const trainers = [false, true].map((compile) => {
      const model = new Mlp([4, 8, 3], { seed: 1, device: "wasm" });
      return new Trainer({
        model,
        optimizer: new AdamW(model, { lr: 1e-2 }),
        schedule: c.schedule,
        batch: (s) => ({
          x: tensor(Float32Array.from({ length: 32 }, (_, i) => Math.sin(i + s)), {
            shape: [8, 4],
            device: c.device(s),
          }),
          y: tensor(Int32Array.from({ length: 8 }, (_, i) => (i + s) % 3), {
            dtype: "i32",
            device: c.device(s),
          }),
        }),
        loss: (m, b) => crossEntropy(m.forward(b.x as F) as F, b.y as I),
        steps: 12,
        readEvery: 4,
        compile,
        progress: false,
      });
    });
    const [eager, compiled] = trainers;
    for (const t of trainers) await rejects(() => t.run(), { message: c.error });
    // Steps 1-2 traced, 3-6 replayed, step 7 refused by both.
    deepEqual(compiled.compileStats.replayed, 4);
    deepEqual([compiled.step, compiled.optimizer.stepCount], [eager.step, eager.optimizer.stepCount]);
    deepEqual(await stateOf(compiled), await stateOf(eager));
    for (const t of trainers) t.close();
  }
});

Deno.test("one lazy tensor under two batch names (an autoencoder) replays as eager steps, also once they part", async () => {
  // Input and target are one tensor up to step 6, then the target is another tensor.
  const records = [];
  for (const compile of [false, true]) {
    const model = new Mlp([4, 3, 4], { seed: 2, device: "wasm" });
    const t = new Trainer({
      model,
      optimizer: new AdamW(model, { lr: 1e-2 }),
      batch: (s) => {
        const x = tensor(Float32Array.from({ length: 32 }, (_, i) => Math.sin(i * s)), {
          shape: [8, 4],
          device: "wasm",
        })
          .tanh();
        return { x, y: s <= 6 ? x : x.mul(3) };
      },
      loss: (m, b) => mse(m.forward(b.x as F) as F, b.y as F),
      steps: 12,
      readEvery: 4,
      compile,
      progress: false,
    });
    records.push(await t.run());
    if (compile) deepEqual(t.compileStats, { traced: 4, replayed: 8, blocker: null });
    t.close();
  }
  deepEqual(records[1], records[0]);
});

Deno.test("a batch of a new shape and parameters loaded between runs make the trainer trace again", async () => {
  const rng = new TestRng(302);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 24 };
  // From step 11 on the batch holds its first 16 examples only (a lazy slice, so not even a plain buffer).
  const make = () => {
    const base = mlpSetup(seeds);
    const batch = (s: number) => {
      const b = base.batch!(s, 0);
      return s <= 10 ? b : { x: b.x.slice([0, 16]) as Tensor, y: b.y.slice([0, 16]) as Tensor, key: b.key };
    };
    return { ...base, batch };
  };
  const { eager, compiled } = pair(make);
  deepEqual(await compiled.run({ until: 14 }), await eager.run({ until: 14 }));
  // Steps 1-2 traced (the parameters packed before step 1), 3-10 replayed; the new shape at 11: 11-12 traced,
  // 13-14 replayed.
  deepEqual([compiled.compileStats.traced, compiled.compileStats.replayed], [4, 10]);
  // A user change of the parameters between runs: both trainers continue from the same new weights.
  const fresh = mlpSetup({ ...seeds, initSeed: seeds.initSeed + 1 }).model;
  for (const t of [eager, compiled]) {
    loadParameters(t.model, Object.fromEntries(namedParameters(fresh).map(([p, v]) => [p, v.add(0)])));
  }
  deepEqual(await compiled.run(), await eager.run());
  deepEqual(await stateOf(compiled), await stateOf(eager));
  // The new parameters were noticed (and packed before the trace): steps 15-16 traced again, 17-24 replayed.
  deepEqual([compiled.compileStats.traced, compiled.compileStats.replayed], [6, 18]);
  eager.close();
  compiled.close();
});

Deno.test("a loss that reads the step number is traced at every step, still compiling nothing new", async () => {
  const be = await getBackend("webgpu");
  const seeds = { initSeed: 5, runSeed: 6, steps: 12 };
  const base = mlpSetup(seeds);
  // A step-dependent loss weight: only a constant changes, so the plan is reused.
  const loss: Setup["loss"] = (m, b, step) => {
    const r = base.loss(m, b, step) as { loss: Tensor; metrics: Record<string, Tensor> };
    return { loss: (r.loss as Tensor<number[], "f32">).mul(1 + step / 100), metrics: r.metrics };
  };
  const eager = new Trainer({ ...mlpSetup(seeds), loss, readEvery: 4, compile: false });
  const t = new Trainer({ ...base, loss, readEvery: 4 });
  // The eager run first: its first step (parameters not yet packed) compiles kernels of its own.
  const want = (await eager.run()).slice(4);
  await t.run({ until: 4 });
  const kernels = be.stats().cachedKernels;
  const plans = cachedPlans();
  deepEqual(await t.run(), want);
  equal(be.stats().cachedKernels, kernels);
  equal(cachedPlans(), plans);
  deepEqual(t.compileStats, { traced: 12, replayed: 0, blocker: "the loss function takes the step number" });
  eager.close();
  t.close();
});

Deno.test("a loss that reads the step through a default value, a rest parameter or arguments is traced at every step (cpu)", async () => {
  setDefaultDevice("cpu");
  try {
    const rng = new TestRng(310);
    const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 8 };
    // From a step drawn after the first two traces on, the loss is tripled: a graph the first steps never built.
    const from = rng.int(4, 7);
    const base = mlpSetup(seeds).loss;
    const plain = (m: Mlp, b: Parameters<Setup["loss"]>[1]) => (base(m, b, 0) as { loss: F }).loss;
    const losses: Record<string, Setup["loss"]> = {
      "a default value": (m, b, step = 0) => step >= from ? plain(m, b).mul(3) : plain(m, b),
      "a rest parameter": (...args) =>
        args[2] >= from ? plain(args[0], args[1]).mul(3) : plain(args[0], args[1]),
      "arguments": function (m, b) {
        return arguments[2] >= from ? plain(m, b).mul(3) : plain(m, b);
      },
    };
    for (const [what, loss] of Object.entries(losses)) {
      const { eager, compiled } = pair(() => ({ ...mlpSetup(seeds), loss }));
      deepEqual(await compiled.run(), await eager.run(), what);
      deepEqual(await stateOf(compiled), await stateOf(eager), what);
      deepEqual(compiled.compileStats, {
        traced: 8,
        replayed: 0,
        blocker: "the loss function takes the step number",
      });
      eager.close();
      compiled.close();
    }
  } finally {
    setDefaultDevice("webgpu");
  }
});

Deno.test("mayReadStep: a loss is taken to read the step unless its parameter list shows it cannot", () => {
  const cases: [(...args: never[]) => unknown, boolean][] = [
    [(m: number, b: number) => m + b, false],
    [(m: number) => m, false],
    [async (m: number) => await m, false],
    [function (m: number, { x }: { x: number }) {
      return m + x;
    }, false],
    [(m: number, b: number, step: number) => m + b + step, true],
    [(m: number, b: number, step = 0) => m + b + step, true],
    [(m: number, { x }: { x: number }, step = Math.PI) => m + x + step, true],
    [(...args: number[]) => args[2], true],
    [function (m: number) {
      return m + arguments.length;
    }, true],
    [((m: number, b: number, step = 0) => m + b + step).bind(null), true],
  ];
  deepEqual(cases.map(([f]) => mayReadStep(f)), cases.map(([, want]) => want));
});

Deno.test("cpu: replayed steps equal eager steps bit for bit", async () => {
  setDefaultDevice("cpu");
  try {
    const seeds = { initSeed: new TestRng(303).int(0, 2 ** 30), runSeed: 7, steps: 8 };
    const { eager, compiled } = pair(() => mlpSetup(seeds));
    equal(namedParameters(compiled.model)[0][1].device, "cpu");
    deepEqual(await compiled.run(), await eager.run());
    deepEqual(await stateOf(compiled), await stateOf(eager));
    equal(compiled.compileStats.replayed, 6);
    eager.close();
    compiled.close();
  } finally {
    setDefaultDevice("webgpu");
  }
});

Deno.test("wasm: replayed steps equal eager steps bit for bit (MLP; LoRA on a transformer with fused attention)", async () => {
  setDefaultDevice("wasm");
  try {
    const rng = new TestRng(306);
    const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 8 };
    const mlp = pair(() => mlpSetup(seeds));
    equal(namedParameters(mlp.compiled.model)[0][1].device, "wasm");
    deepEqual(await mlp.compiled.run(), await mlp.eager.run());
    deepEqual(await stateOf(mlp.compiled), await stateOf(mlp.eager));
    equal(mlp.compiled.compileStats.replayed, 6);
    mlp.eager.close();
    mlp.compiled.close();
    const eager = await loraLm(false);
    const compiled = await loraLm(true);
    deepEqual(await compiled.run(), await eager.run());
    deepEqual(await stateOf(compiled), await stateOf(eager));
    equal(compiled.compileStats.replayed, 5);
    eager.close();
    compiled.close();
  } finally {
    setDefaultDevice("webgpu");
  }
});

/**
 * Seven steps of LoRA on every projection of a two-layer transformer: causal attention with grouped heads (fused
 * kernels); odd sizes leave partial groups of four keys and queries.
 */
async function loraLm(compile: boolean) {
  const cfg = { vocab: 29, dim: 24, layers: 2, nHeads: 6, nKvHeads: 2, hiddenDim: 40 };
  const ids = (step: number) => {
    const r = new TestRng(400 + step);
    return Int32Array.from({ length: 3 * 11 }, () => r.int(0, cfg.vocab - 1));
  };
  const model = new TinyLm(cfg, 17);
  await attachLora(model, {
    targetModules: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
    rank: 4,
    alpha: 8,
    seed: 2,
  });
  return new Trainer({
    model,
    optimizer: new AdamW(model, { lr: 1e-2, trainable: LORA_TRAINABLE }),
    batch: (step) => ({
      x: tensor(ids(step), { shape: [3, 11], dtype: "i32" }),
      y: tensor(ids(step + 1000), { shape: [3, 11], dtype: "i32" }),
    }),
    loss: (m, b) => crossEntropy(m.forward(b.x as I) as F, b.y as I),
    steps: 7,
    readEvery: 3,
    progress: false,
    compile,
  });
}

Deno.test("webgpu: LoRA on a transformer replays bit for bit, parameters bound as ranges of their packs or not", async () => {
  const be = await getBackend("webgpu");
  const range = be.range!;
  let ranges = 0;
  be.range = (s, offset, bytes) => (ranges++, range.call(be, s, offset, bytes));
  let runs: { records: unknown; state: Record<string, number[]> }[];
  try {
    runs = [];
    for (const compile of [false, true]) {
      const t = await loraLm(compile);
      runs.push({ records: await t.run(), state: await stateOf(t) });
      if (compile) equal(t.compileStats.replayed, 5);
      t.close();
    }
    ok(ranges > 0, "no kernel bound a range");
    // The same steps with every view read through its index arithmetic.
    be.range = undefined;
    const t = await loraLm(true);
    runs.push({ records: await t.run(), state: await stateOf(t) });
    t.close();
  } finally {
    be.range = range;
  }
  deepEqual(runs[1], runs[0]);
  deepEqual(runs[2], runs[0]);
});

Deno.test("a backend without prepare, write and copy still replays a bound plan (fallbacks)", async () => {
  const cpu = new CpuBackend();
  const bare: Backend = {
    name: "cpu",
    description: "bare",
    maxInputs: 8,
    maxBufferBytes: cpu.maxBufferBytes,
    alloc: (d, n) => cpu.alloc(d, n),
    upload: (d, data) => cpu.upload(d, data),
    run: (steps) => cpu.run(steps),
    read: (st, d, n) => cpu.read(st, d, n),
    stats: () => cpu.stats(),
  };
  const rng = new TestRng(304);
  const xs = rng.normals(12);
  const x = tensor(xs, { shape: [3, 4], device: "cpu" });
  await x.realize();
  const y = x.mul(2.5).exp().sum(1);
  const sig = graphSignature([y.node]);
  const plan = planFor([y.node], sig, { maxInputs: 8 });
  const input = bare.alloc("f32", 12);
  const bound = new BoundPlan(bare, plan, { leaves: [input], params: sig.params.map(paramValue) });
  for (let round = 0; round < 2; round++) {
    const data = rng.normals(12);
    await writeStorage(bare, input, "f32", data);
    await bound.run();
    const got = await bare.read(bound.root(0), "f32", 3);
    const want = [0, 1, 2].map((r) =>
      [0, 1, 2, 3].reduce((a, c) => a + Math.fround(Math.exp(Math.fround(data[r * 4 + c] * 2.5))), 0)
    );
    for (let r = 0; r < 3; r++) {
      ok(Math.abs(got[r] - want[r]) <= 1e-5 * Math.abs(want[r]), `${got} vs ${want}`);
    }
  }
  const copy = bare.alloc("f32", 3);
  await copyStorages(bare, [{ src: bound.root(0), dst: copy, dtype: "f32", n: 3 }]);
  deepEqual(await bare.read(copy, "f32", 3), await bare.read(bound.root(0), "f32", 3));
  bound.dispose();
});

Deno.test("LoRA dropout draws a new mask every step: the trainer keeps tracing, with the eager results", async () => {
  const rng = new TestRng(305);
  const make = async () => {
    const model = new Mlp([12, 16, 3], { seed: 9 });
    await attachLora(model, {
      targetModules: ["layers.0", "layers.1"],
      rank: 2,
      alpha: 4,
      dropout: 0.25,
      seed: 3,
    });
    return model;
  };
  const xs = rng.normals(8 * 12);
  const ys = Int32Array.from({ length: 8 }, (_, i) => i % 3);
  const setup = (model: Mlp, compile: boolean) =>
    new Trainer({
      model,
      optimizer: new AdamW(model, { lr: 1e-2, trainable: LORA_TRAINABLE }),
      batch: () => ({ x: tensor(xs, { shape: [8, 12] }), y: tensor(ys, { dtype: "i32" }) }),
      loss: (m, b) => crossEntropy(m.forward(b.x as F) as F, b.y as Tensor<Shape, "i32">),
      steps: 6,
      readEvery: 3,
      progress: false,
      compile,
    });
  const eager = setup(await make(), false);
  const compiled = setup(await make(), true);
  deepEqual(await compiled.run(), await eager.run());
  equal(compiled.compileStats.replayed, 0);
  ok(/new at every step/.test(compiled.compileStats.blocker ?? ""), compiled.compileStats.blocker ?? "null");
  eager.close();
  compiled.close();
});

Deno.test("changes between runs that a replay cannot see make it trace again: modes, frozen weights, optimiser state", async () => {
  // A LoRA MLP (frozen bases) with dropout, trained in eval mode so that its step replays.
  const make = async (compile: boolean) => {
    const t = new Trainer(await loraMlpSetup(60, { steps: 20, compile }));
    setTraining(t.model, false);
    return t;
  };
  type T = Awaited<ReturnType<typeof make>>;
  const changes: [string, (t: T) => void][] = [
    ["setTraining(model, true)", (t) => setTraining(t.model, true)],
    ["a frozen weight replaced", (t) => {
      const w = namedParameters(t.model).find(([p]) => p === "layers.0.base_layer.weight")![1];
      loadParameters(t.model, { "layers.0.base_layer.weight": w.mul(0.5) as F });
    }],
    ["optimizer.loadState", (t) => {
      const zero = Object.fromEntries(Object.entries(t.optimizer.stateDict()).map(([k, v]) => [k, v.mul(0)]));
      t.optimizer.loadState(zero, 0);
    }],
  ];
  for (const [what, change] of changes) {
    const eager = await make(false);
    const compiled = await make(true);
    deepEqual(await compiled.run({ until: 6 }), await eager.run({ until: 6 }));
    ok(compiled.compileStats.replayed > 0, what);
    change(eager);
    change(compiled);
    deepEqual(await compiled.run({ until: 12 }), await eager.run({ until: 12 }), what);
    deepEqual(await stateOf(compiled), await stateOf(eager), what);
    eager.close();
    compiled.close();
  }
});

Deno.test("a run stopped by an error from batch() leaves the model at the last completed step, as an eager run does", async () => {
  const rng = new TestRng(306);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 16 };
  // The data runs out at step k, after some replayed steps and between two readbacks (readEvery 5).
  const k = rng.int(8, 15);
  const make = () => {
    const base = mlpSetup(seeds);
    const batch = (s: number) => {
      if (s === k) throw new Error(`no batch for step ${s}`);
      return base.batch!(s, 0);
    };
    return { ...base, batch };
  };
  const { eager, compiled } = pair(make);
  await rejects(() => eager.run(), /no batch for step/);
  await rejects(() => compiled.run(), /no batch for step/);
  ok(compiled.compileStats.replayed > 0, JSON.stringify(compiled.compileStats));
  for (const t of [eager, compiled]) {
    equal(t.step, k - 1);
    equal(t.optimizer.stepCount, k - 1);
  }
  // Closing the trainer keeps what the model holds.
  eager.close();
  compiled.close();
  deepEqual(await stateOf(compiled), await stateOf(eager));
});

Deno.test("a step that cannot be replayed says why, naming the constant's values or the new tensor's shape (cpu)", async () => {
  setDefaultDevice("cpu");
  try {
    const rng = new TestRng(307);
    const xs = rng.normals(8 * 5);
    const ys = Int32Array.from({ length: 8 }, () => rng.int(0, 2));
    // Two distinct loss weights that are exact in f32 (multiples of 1/8).
    const w1 = 1 + rng.int(1, 8) / 8;
    const w2 = w1 + rng.int(1, 8) / 8;
    const shift = rng.normals(3);
    const cases: [string, (calls: number) => (logits: F) => F, string][] = [
      // A weight the loss takes from a counter of its own, w1 and w2 in turn: a constant that changes at every step.
      ["constant", (calls) => (logits) => logits.mul(calls % 2 === 0 ? w1 : w2) as F, `(${w1} then ${w2})`],
      // A tensor made from host data at every call: the step's graph reads a new [3] f32 buffer.
      ["tensor", () => (logits) => logits.add(tensor(shift, { shape: [3] })) as F, "a [3] f32 tensor"],
    ];
    for (const [what, transform, words] of cases) {
      const model = new Mlp([5, 6, 3], { seed: rng.int(0, 2 ** 30) });
      let calls = 0;
      const t = new Trainer({
        model,
        optimizer: new AdamW(model, { lr: 1e-2 }),
        batch: () => ({ x: tensor(xs, { shape: [8, 5] }), y: tensor(ys, { dtype: "i32" }) }),
        loss: (m, b) => crossEntropy(transform(calls++)(m.forward(b.x as F) as F), b.y as I),
        steps: 4,
        readEvery: 4,
        progress: false,
      });
      await t.run();
      const { replayed, blocker } = t.compileStats;
      equal(replayed, 0, what);
      ok(blocker !== null && blocker.includes(words), `${what}: ${blocker}`);
      t.close();
    }
  } finally {
    setDefaultDevice("webgpu");
  }
});

Deno.test("a lazy batch entry given at every step stays lazy: replayed steps read it as eager ones do (wasm)", async () => {
  const rng = new TestRng(308);
  const xs = Array.from({ length: 9 }, () => rng.normals(8 * 5));
  const ys = Int32Array.from({ length: 8 }, () => rng.int(0, 2));
  const initSeed = rng.int(0, 2 ** 30);
  const scaleLog = rng.normals(5);
  const runs = [];
  for (const compile of [false, true]) {
    // A per-feature scale built once as an expression (never realized by the caller) and passed with each batch.
    const scale = tensor(scaleLog, { shape: [5], device: "wasm" }).exp();
    const model = new Mlp([5, 6, 3], { seed: initSeed, device: "wasm" });
    const t = new Trainer({
      model,
      optimizer: new AdamW(model, { lr: 1e-2 }),
      batch: (s) => ({
        x: tensor(xs[s - 1], { shape: [8, 5], device: "wasm" }),
        y: tensor(ys, { dtype: "i32", device: "wasm" }),
        scale,
      }),
      loss: (m, b) => crossEntropy(m.forward((b.x as F).mul(b.scale as F) as F) as F, b.y as I),
      steps: 9,
      readEvery: 3,
      compile,
      progress: false,
    });
    runs.push({ records: await t.run(), state: await stateOf(t) });
    equal(scale.isRealized, false);
    if (compile) deepEqual(t.compileStats, { traced: 2, replayed: 7, blocker: null });
    t.close();
  }
  deepEqual(runs[1], runs[0]);
});

Deno.test("a realized batch entry kept from an earlier call is refused by name, compiled or not", async () => {
  const rng = new TestRng(309);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 6 };
  for (const compile of [false, true]) {
    const base = mlpSetup(seeds);
    // The targets of step 1, given again at every step: the trainer disposed them after step 1.
    const kept = base.batch!(1, 0).y;
    const t = new Trainer({ ...base, batch: (s) => ({ ...base.batch!(s, 0), y: kept }), compile });
    await rejects(
      () => t.run(),
      /batch\(2\) entry "y" \(Tensor\(\[32\] i32 on \w+\)\) was disposed: the trainer/,
    );
    equal(t.step, 1);
    t.close();
  }
});

Deno.test("a trainer that ran to its end holds no buffers of its replay, closed or not (wasm, webgpu)", async () => {
  const rng = new TestRng(312);
  try {
    for (const device of ["wasm", "webgpu"] as const) {
      setDefaultDevice(device);
      const be = await getBackend(device);
      const steps = rng.int(8, 16);
      const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps };
      // Without the guard's copies, what closing a trainer frees at once is its replay's buffers and bindings.
      const freedByClose = async (until: number) => {
        const t = new Trainer({ ...mlpSetup(seeds), readEvery: 4, stopOnNonFinite: false });
        await t.run({ until });
        ok(t.compileStats.replayed > 0, `${device}: ${JSON.stringify(t.compileStats)}`);
        const live = be.stats().liveBuffers;
        t.close();
        return live - be.stats().liveBuffers;
      };
      // Stopped before its end, a trainer keeps its replay for the next run() ...
      const midway = await freedByClose(steps - 2);
      ok(midway > 0, `${device}: closing a trainer stopped at step ${steps - 2} of ${steps} freed nothing`);
      // ... ended, it has freed it: a sweep that drops its trainers without closing them kept every run's.
      const ended = await freedByClose(steps);
      equal(
        ended,
        0,
        `${device}: closing a trainer that ran its ${steps} steps freed ${ended} buffers (${midway} midway)`,
      );
    }
  } finally {
    setDefaultDevice("webgpu");
  }
});

for (const device of ["wasm", "webgpu"]) {
  Deno.test(`a trainer dropped before its end, unclosed, frees its replay once collected (${device})`, async () => {
    const rng = new TestRng(313);
    const runs = 6;
    const args = [device, runs, rng.int(8, 16), rng.int(0, 2 ** 30), rng.int(0, 2 ** 30)].map(String);
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        new URL("./_abandoned_trainers.ts", import.meta.url).pathname,
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    equal(out.code, 0, new TextDecoder().decode(out.stderr).slice(-2000));
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => JSON.parse(l));
    const [{ replayBuffers }, ...after] = lines as [{ replayBuffers: number }, ...{ liveBuffers: number }[]];
    equal(after.length, runs);
    ok(replayBuffers > 0, `closing a trainer stopped before its end freed nothing (${args})`);
    // Each dropped trainer's model, optimiser and replay are garbage: what stays live is at most what the latest one
    // (whose buffers may not all be collected yet) holds. A replay kept alive would add its buffers at every run.
    const growth = after[runs - 1].liveBuffers - after[0].liveBuffers;
    ok(
      growth < replayBuffers,
      `live buffers grew by ${growth} over ${runs - 1} dropped trainers, each replay ` +
        `holding ${replayBuffers} (${args}): ${JSON.stringify(after)}`,
    );
  });
}
