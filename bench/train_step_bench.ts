/**
 * Training-step benchmark: time per step and tokens (or examples) per second of the Trainer on an MLP and on
 * small Llama-style transformer LMs (RoPE + GQA attention, RMSNorm, SwiGLU), with AdamW, global-norm clipping
 * and one metrics readback per `readEvery` steps, as a real run does.
 *
 *   deno run -A bench/train_step_bench.ts [--steps 20] [--readEvery 10] [--rounds 3] [--devices webgpu,wasm]
 *     [--cases 0,3]                                                   prints each case on each device
 *   deno bench -A bench/train_step_bench.ts                           one step (+ one readback) per iteration
 *
 * Each case gets one trainer per device, warmed up, then `rounds` rounds that time `steps / rounds` steps on
 * every device in turn (a slow spell of the shared host hits all devices alike); the median round is reported,
 * with the kernels launched per step and the wasm device's speed relative to webgpu.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  checkDeviceChoice,
  deviceLine,
  type DeviceName,
  getBackend,
  getDefaultDevice,
  resolveDevice,
  setDefaultDevice,
  type Shape,
  type Tensor,
  tensor,
} from "../mod.ts";
import { adapterLine, median } from "./_timing.ts";
import {
  AdamW,
  crossEntropy,
  deriveSeed,
  Embedding,
  Linear,
  Mlp,
  Module,
  RMSNorm,
  TransformerBlock,
} from "../lib/nn/mod.ts";
import { Trainer } from "../lib/train/mod.ts";
import { Rng } from "../lib/data/rng.ts";
import { LlamaLM } from "../lib/models/llama.ts";
import { attachLora, LORA_TRAINABLE } from "../lib/lora/mod.ts";

type F32 = Tensor<Shape, "f32">;
type I32 = Tensor<Shape, "i32">;

/** A Llama-style LM: embedding, pre-norm transformer blocks, final RMSNorm and an output projection. */
class BenchLm extends Module {
  tokEmb: Embedding;
  layers: TransformerBlock[];
  norm: RMSNorm;
  output: Linear;

  constructor(c: LmConfig, seed: number) {
    super();
    this.tokEmb = new Embedding(c.vocab, c.dim, { seed: deriveSeed(seed, "emb"), std: 0.02 });
    this.layers = Array.from({ length: c.layers }, (_, i) =>
      new TransformerBlock(c.dim, {
        nHeads: c.nHeads,
        nKvHeads: c.nKvHeads,
        hiddenDim: c.hiddenDim,
        seed: deriveSeed(seed, "layers", i),
      }));
    this.norm = new RMSNorm(c.dim);
    this.output = new Linear(c.dim, c.vocab, { seed: deriveSeed(seed, "output"), bias: false });
  }

  forward(ids: I32): Tensor<number[], "f32"> {
    let h = this.tokEmb.forward(ids) as F32;
    for (const layer of this.layers) h = layer.forward(h) as F32;
    return this.output.forward(this.norm.forward(h) as F32);
  }
}

interface LmConfig {
  vocab: number;
  dim: number;
  layers: number;
  nHeads: number;
  nKvHeads: number;
  hiddenDim: number;
  batch: number;
  seqLen: number;
}

interface Case {
  name: string;
  /** Tokens (or examples) per step. */
  tokens: number;
  unit: string;
  make: (readEvery: number) => Trainer<object> | Promise<Trainer<object>>;
}

/** stories260K's checkpoint, when the shared data sits beside the repository. */
const STORIES = new URL("../../shared/data/models/stories260K/stories260K.bin", import.meta.url);

/**
 * A LoRA fine-tune of stories260K (rank 8, alpha 8 on wq, wk, wv, wo, w1, w2, w3; AdamW on the adapters only):
 * the real checkpoint when present, otherwise a random model of the same configuration (the timing depends only on
 * the shapes). Batches are random token windows.
 */
function storiesLoraCase(batch: number, seqLen: number): Case {
  let real = false;
  try {
    real = Deno.statSync(STORIES).isFile;
  } catch {
    real = false;
  }
  return {
    name:
      `LoRA fine-tune of stories260K${real ? "" : " (random weights)"}, r=8 on 7 projections x 5 layers, ` +
      `batch ${batch}x${seqLen}`,
    tokens: batch * seqLen,
    unit: "tokens",
    make: async (readEvery) => {
      const model = real ? await LlamaLM.fromLlama2c(STORIES.pathname) : LlamaLM.random({
        dim: 64,
        hiddenDim: 172,
        nLayers: 5,
        nHeads: 8,
        nKvHeads: 4,
        vocabSize: 512,
        seqLen: 512,
        sharedClassifier: true,
      }, { seed: 1 });
      await attachLora(model, {
        targetModules: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
        rank: 8,
        alpha: 8,
        init: "lora",
        seed: 0,
      });
      return new Trainer({
        model,
        optimizer: new AdamW(model, { lr: 1e-3, weightDecay: 0, trainable: LORA_TRAINABLE }),
        batch: (step) => {
          const rng = new Rng(deriveSeed(4, step));
          const ids = () => Int32Array.from({ length: batch * seqLen }, () => rng.int(512));
          return {
            x: tensor(ids(), { shape: [batch, seqLen], dtype: "i32" }),
            y: tensor(ids(), { shape: [batch, seqLen], dtype: "i32" }),
          };
        },
        loss: (m, b) => m.loss(b.x as I32, b.y as I32),
        steps: 1e9,
        clipNorm: 1,
        readEvery,
        progress: false,
      }) as unknown as Trainer<object>;
    },
  };
}

function lmCase(name: string, c: LmConfig): Case {
  return {
    name,
    tokens: c.batch * c.seqLen,
    unit: "tokens",
    make: (readEvery) => {
      const model = new BenchLm(c, 1);
      return new Trainer({
        model,
        optimizer: new AdamW(model, { lr: 1e-3 }),
        batch: (step) => {
          const rng = new Rng(deriveSeed(2, step));
          const ids = Int32Array.from({ length: c.batch * (c.seqLen + 1) }, () => rng.int(c.vocab));
          const x = new Int32Array(c.batch * c.seqLen);
          const y = new Int32Array(c.batch * c.seqLen);
          for (let b = 0; b < c.batch; b++) {
            x.set(ids.subarray(b * (c.seqLen + 1), b * (c.seqLen + 1) + c.seqLen), b * c.seqLen);
            y.set(ids.subarray(b * (c.seqLen + 1) + 1, (b + 1) * (c.seqLen + 1)), b * c.seqLen);
          }
          return {
            x: tensor(x, { shape: [c.batch, c.seqLen], dtype: "i32" }),
            y: tensor(y, { shape: [c.batch, c.seqLen], dtype: "i32" }),
          };
        },
        loss: (m, b) => crossEntropy(m.forward(b.x as I32) as F32, b.y as I32),
        steps: 1e9,
        clipNorm: 1,
        readEvery,
        progress: false,
      }) as unknown as Trainer<object>;
    },
  };
}

const cases: Case[] = [
  {
    name: "MLP 784-256-10, batch 128",
    tokens: 128,
    unit: "examples",
    make: (readEvery) => {
      const model = new Mlp([784, 256, 10], { seed: 1 });
      return new Trainer({
        model,
        optimizer: new AdamW(model, { lr: 1e-3 }),
        batch: (step) => {
          const rng = new Rng(deriveSeed(3, step));
          return {
            x: tensor(Float32Array.from({ length: 128 * 784 }, () => rng.next()), { shape: [128, 784] }),
            y: tensor(Int32Array.from({ length: 128 }, () => rng.int(10)), { dtype: "i32" }),
          };
        },
        loss: (m, b) => crossEntropy(m.forward(b.x as F32) as F32, b.y as I32),
        steps: 1e9,
        clipNorm: 1,
        readEvery,
        progress: false,
      }) as unknown as Trainer<object>;
    },
  },
  lmCase("transformer LM 2 layers, dim 32, 4/2 heads, batch 8x32", {
    vocab: 64,
    dim: 32,
    layers: 2,
    nHeads: 4,
    nKvHeads: 2,
    hiddenDim: 64,
    batch: 8,
    seqLen: 32,
  }),
  lmCase("transformer LM stories260K-sized: 5 layers, dim 64, 8/4 heads, batch 4x64", {
    vocab: 512,
    dim: 64,
    layers: 5,
    nHeads: 8,
    nKvHeads: 4,
    hiddenDim: 172,
    batch: 4,
    seqLen: 64,
  }),
  storiesLoraCase(8, 64),
];

/** A case's trainer on one device, warmed up (the first steps compile the kernels). */
async function prepare(c: Case, device: DeviceName, readEvery: number) {
  setDefaultDevice(device);
  const trainer = await c.make(readEvery);
  await trainer.run({ until: 3 });
  return { device, trainer, be: await getBackend(device), times: [] as number[], kernels: 0 };
}

/** Runs `steps` more steps of a prepared trainer; returns ms per step and adds the kernels launched. */
async function timeSteps(p: Awaited<ReturnType<typeof prepare>>, steps: number): Promise<number> {
  // The cases build their batches on the default device.
  setDefaultDevice(p.device);
  const run = p.be.run;
  p.be.run = (s) => {
    p.kernels += s.length;
    return run.call(p.be, s);
  };
  const t0 = performance.now();
  try {
    await p.trainer.run({ until: p.trainer.step + steps });
  } finally {
    p.be.run = run;
  }
  return (performance.now() - t0) / steps;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      steps: { type: "string", default: "20" },
      readEvery: { type: "string", default: "10" },
      rounds: { type: "string", default: "3" },
      devices: { type: "string", default: "webgpu,wasm" },
      cases: { type: "string" },
    },
  });
  const steps = Number(values.steps);
  const readEvery = Number(values.readEvery);
  const rounds = Number(values.rounds);
  const devices = values.devices!.split(",").map((d) => checkDeviceChoice(d.trim(), "--devices"))
    .map((d) => resolveDevice(d));
  const only = values.cases?.split(",").map(Number);
  for (const d of new Set(devices)) console.log(`device ${await deviceLine(d)}`);
  console.log(await adapterLine());
  console.log(
    `${steps} timed steps per round after 3 warm-up steps, ${rounds} rounds alternating the devices, median ` +
      `round; one metrics readback every ${readEvery} steps`,
  );
  for (const [i, c] of cases.entries()) {
    if (only !== undefined && !only.includes(i)) continue;
    const preps = [];
    for (const d of new Set(devices)) preps.push(await prepare(c, d, readEvery));
    for (let r = 0; r < rounds; r++) {
      for (const p of preps) p.times.push(await timeSteps(p, Math.ceil(steps / rounds)));
    }
    const ms = preps.map((p) => median(p.times));
    const line = preps.map((p, k) =>
      `${p.device} ${ms[k].toFixed(1)} ms/step (${(c.tokens * 1000 / ms[k]).toFixed(0)} ${c.unit}/s, ` +
      `${Math.round(p.kernels / (rounds * Math.ceil(steps / rounds)))} kernels/step)`
    );
    const gpu = preps.findIndex((p) => p.device === "webgpu");
    const cpu = preps.findIndex((p) => p.device === "wasm");
    const ratio = gpu >= 0 && cpu >= 0 ? `; wasm ${(ms[gpu] / ms[cpu]).toFixed(2)}× the speed of webgpu` : "";
    console.log(`${c.name}: ${line.join(", ")}${ratio}`);
  }
} else {
  for (const c of cases) {
    let trainer: Trainer<object> | null = null;
    Deno.bench({
      name: `train step: ${c.name} (${getDefaultDevice()})`,
      n: 10,
      warmup: 3,
      async fn() {
        trainer ??= await c.make(1);
        await trainer.run({ until: trainer.step + 1 });
      },
    });
  }
}
