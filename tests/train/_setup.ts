/** A small, fully seeded training setup on generated shape images, shared by the trainer tests. */
import { getBackend, getDefaultDevice, type Shape, type Tensor, tensor } from "../../mod.ts";
import { generateShapes } from "../../lab/generated.ts";
import {
  AdamW,
  cosineSchedule,
  crossEntropy,
  deriveSeed,
  dropout,
  type DropoutKey,
  dropoutKey,
  getAt,
  Mlp,
} from "../../lib/nn/mod.ts";
import { epochIndices, type TrainerOptions } from "../../lib/train/mod.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../../lib/lora/mod.ts";
import { TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

const N = 384;
const SIZE = 12;
const DIM = SIZE * SIZE * 3;
const BATCH = 32;
const data = generateShapes({ n: N, size: SIZE, seed: 5 });

/** Options of {@link mlpSetup}. */
export interface MlpSetup {
  /** Seed of the initialisation. */
  initSeed: number;
  /** Seed of the run (batch order, dropout keys). */
  runSeed: number;
  /** Steps of the run. */
  steps: number;
  /** Examples per batch (default 32). */
  batchSize?: number;
}

/** An MLP classifying the shape of generated images, trained with AdamW, two groups, cosine warm-up, clipping. */
export function mlpSetup(s: MlpSetup): TrainerOptions<Mlp, { x: Tensor; y: Tensor; key: Tensor }> {
  const model = new Mlp([DIM, 48, 4], { seed: s.initSeed });
  const size = s.batchSize ?? BATCH;
  return {
    model,
    optimizer: new AdamW(model, {
      lr: 4e-3,
      weightDecay: 0.01,
      groups: [{ name: "head", params: /^layers\.1\./, lr: 8e-3, weightDecay: 0 }],
    }),
    batch: (step) => {
      const idx = epochIndices(N, { batchSize: size, seed: s.runSeed, step });
      const x = new Float32Array(size * DIM);
      const y = new Int32Array(size);
      idx.forEach((i, b) => {
        x.set(data.images.subarray(i * DIM, (i + 1) * DIM), b * DIM);
        y[b] = data.labels.shape[i];
      });
      return {
        x: tensor(x, { shape: [size, DIM] }),
        y: tensor(y, { dtype: "i32" }),
        key: dropoutKey(deriveSeed(s.runSeed, "dropout", step)),
      };
    },
    loss: (m, b) => {
      const x = dropout(b.x as F, 0.1, { key: b.key as DropoutKey });
      const logits = m.forward(x) as F;
      const accuracy = logits.argmax(1).eq(b.y as Tensor<Shape, "i32">).cast("f32").mean();
      return { loss: crossEntropy(logits, b.y as Tensor<Shape, "i32">), metrics: { accuracy } };
    },
    steps: s.steps,
    schedule: cosineSchedule({ totalSteps: s.steps, warmupRatio: 0.1, final: 0.1 }),
    clipNorm: 2,
    track: { "layers.0.weight": (m) => getAt(m, "layers.0.weight") as Tensor },
    seed: s.runSeed,
    progress: false,
  };
}

/** Counts readbacks from the default device while `fn` runs. */
export async function countReads<T>(fn: () => Promise<T>): Promise<{ result: T; reads: number }> {
  const be = await getBackend(getDefaultDevice());
  const original = be.read;
  const many = be.readMany;
  let reads = 0;
  be.read = (...args) => {
    reads++;
    return original.apply(be, args);
  };
  // Several storages read together are one readback.
  if (many !== undefined) {
    be.readMany = (...args) => {
      reads++;
      return many.apply(be, args);
    };
  }
  try {
    return { result: await fn(), reads };
  } finally {
    be.read = original;
    if (many !== undefined) be.readMany = many;
  }
}

/**
 * A LoRA MLP (frozen bases, adapters with dropout 0.5) trained with AdamW on random inputs drawn per step from
 * `inputSeed + step`: the trainer options, with `steps` and `compile` given and the rest of the options merged in.
 */
export async function loraMlpSetup(
  inputSeed: number,
  opts: { steps: number; compile: boolean } & Partial<TrainerOptions<Mlp, { x: Tensor }>>,
): Promise<TrainerOptions<Mlp, { x: Tensor }>> {
  const model = new Mlp([6, 10, 3], { seed: 4 });
  await attachLora(model, { targetModules: ["layers.0", "layers.1"], rank: 2, dropout: 0.5, seed: 9 });
  const x = (step: number) => tensor(new TestRng(inputSeed + step).normals(4 * 6), { shape: [4, 6] });
  return {
    model,
    optimizer: new AdamW(model, { lr: 1e-2, trainable: LORA_TRAINABLE }),
    batch: (step) => ({ x: x(step) }),
    loss: (m, b) => (m.forward(b.x as F) as F).square().mean() as F,
    readEvery: 2,
    progress: false,
    ...opts,
  };
}

/**
 * A LoRA MLP (6 → 10 → 3) on a base of seed `baseSeed` whose rank-2 adapters on `targets` (alpha, rsLoRA and dropout
 * from `lora`) AdamW trains for 6 steps on inputs drawn per step from `inputSeed`: the resume tests' small LoRA run.
 */
export async function loraMlpRun(
  o: {
    baseSeed: number;
    inputSeed: number;
    targets: string[];
    lora?: { alpha?: number; useRslora?: boolean; dropout?: number };
  },
): Promise<TrainerOptions<Mlp, { x: Tensor }>> {
  const model = new Mlp([6, 10, 3], { seed: o.baseSeed });
  await attachLora(model, { targetModules: o.targets, rank: 2, seed: 9, ...o.lora });
  return {
    model,
    optimizer: new AdamW(model, { lr: 1e-2, trainable: LORA_TRAINABLE }),
    batch: (step) => ({ x: tensor(new TestRng(o.inputSeed + step).normals(4 * 6), { shape: [4, 6] }) }),
    loss: (m, b) => (m.forward(b.x as F) as F).square().mean() as F,
    steps: 6,
    progress: false,
  };
}

/** Descriptors of this process open on the file at `path` (Linux lists them under /proc/self/fd). */
export function descriptorsOn(path: string): number {
  const real = Deno.realPathSync(path);
  return [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
    try {
      return Deno.readLinkSync(`/proc/self/fd/${e.name}`) === real;
    } catch {
      return false; // the descriptor of the listing itself, closed by now
    }
  }).length;
}
