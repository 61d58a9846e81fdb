/**
 * Training-step benchmark: time per step and tokens (or examples) per second of the Trainer on an MLP and on
 * small Llama-style transformer LMs (RoPE + GQA attention, RMSNorm, SwiGLU), with AdamW, global-norm clipping
 * and one metrics readback per `readEvery` steps, as a real run does.
 *
 *   deno run -A bench/train_step_bench.ts [--steps 20] [--readEvery 10]   prints a table
 *   deno bench -A bench/train_step_bench.ts                                 one step (+ one readback) per iteration
 *
 * The table also gives the kernels launched per step (each step is one submission).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { getWebGPU, type Shape, type Tensor, tensor } from "../mod.ts";
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
import { loadLlama } from "../lib/models/load.ts";
import { attachLora } from "../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../lib/lora/mod.ts";

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
      const model = real ? await loadLlama(STORIES.pathname) : LlamaLM.random({
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

/** Runs `steps` steps after a warm-up (the first steps compile the kernels) and returns the timings. */
async function measure(c: Case, steps: number, readEvery: number) {
  const be = await getWebGPU();
  const trainer = await c.make(readEvery);
  await trainer.run({ until: 3 });
  const run = be.run;
  let kernels = 0;
  be.run = (s) => {
    kernels += s.length;
    return run.call(be, s);
  };
  const t0 = performance.now();
  try {
    await trainer.run({ until: 3 + steps });
  } finally {
    be.run = run;
  }
  const ms = (performance.now() - t0) / steps;
  return { ms, perSecond: (c.tokens * 1000) / ms, kernels: Math.round(kernels / steps) };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { steps: { type: "string", default: "20" }, readEvery: { type: "string", default: "10" } },
  });
  const steps = Number(values.steps);
  const readEvery = Number(values.readEvery);
  const be = await getWebGPU();
  console.log(`adapter: ${be.description}`);
  console.log(`${steps} timed steps after 3 warm-up steps, one metrics readback every ${readEvery} steps`);
  for (const c of cases) {
    const r = await measure(c, steps, readEvery);
    console.log(
      `${c.name}: ${r.ms.toFixed(1)} ms/step, ${
        r.perSecond.toFixed(0)
      } ${c.unit}/s, ${r.kernels} kernels/step`,
    );
  }
} else {
  for (const c of cases) {
    let trainer: Trainer<object> | null = null;
    Deno.bench({
      name: `train step: ${c.name}`,
      n: 10,
      warmup: 3,
      async fn() {
        trainer ??= await c.make(1);
        await trainer.run({ until: trainer.step + 1 });
      },
    });
  }
}
