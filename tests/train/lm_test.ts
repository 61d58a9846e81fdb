/**
 * A small Llama-style transformer LM (2 layers, dim 32, RoPE + GQA attention, RMSNorm, SwiGLU) trained with the
 * Trainer on generated text: the held-out loss falls below half its starting value and below the bigram
 * conditional entropy of the text, so the model uses more context than the previous character.
 */
import { ok } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { charVocab } from "../../lib/data/mod.ts";
import { generateTextDomains } from "../../lab/generated.ts";
import { AdamW, cosineSchedule, crossEntropy, getAt } from "../../lib/nn/mod.ts";
import { sampleWindows, Trainer } from "../../lib/train/mod.ts";
import { TestRng } from "../_helpers.ts";
import { TinyLm } from "./_models.ts";

type I32 = Tensor<Shape, "i32">;

/** H(next character | previous character) of `ids`, in nats (plug-in estimate). */
function bigramEntropy(ids: Int32Array): number {
  const counts = new Map<number, Map<number, number>>();
  for (let i = 1; i < ids.length; i++) {
    const m = counts.get(ids[i - 1]) ?? new Map<number, number>();
    m.set(ids[i], (m.get(ids[i]) ?? 0) + 1);
    counts.set(ids[i - 1], m);
  }
  let h = 0;
  for (const m of counts.values()) {
    const total = [...m.values()].reduce((a, b) => a + b, 0);
    for (const c of m.values()) h -= (c / (ids.length - 1)) * Math.log(c / total);
  }
  return h;
}

Deno.test("a 2-layer transformer LM learns generated text", async () => {
  const rng = new TestRng(81);
  const { source } = generateTextDomains({ seed: rng.int(0, 1000), nSentences: 300 });
  const vocab = charVocab(source);
  const ids = vocab.encode(source);
  const split = Math.floor(ids.length * 0.9);
  const train = ids.subarray(0, split);
  const held = ids.subarray(split);
  const [batch, seqLen, steps] = [8, 32, 80];
  const model = new TinyLm(
    { vocab: vocab.size, dim: 32, layers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 64 },
    rng.int(0, 2 ** 30),
  );
  const toTensors = (x: Int32Array, y: Int32Array, b: number) => ({
    x: tensor(x, { shape: [b, seqLen], dtype: "i32" }),
    y: tensor(y, { shape: [b, seqLen], dtype: "i32" }),
  });
  const evalBatch = sampleWindows(held, { batchSize: 16, seqLen, seed: 0, step: 1 });
  const evaluate = async () => {
    const { x, y } = toTensors(evalBatch.x, evalBatch.y, 16);
    return await crossEntropy(model.forward(x as I32) as Tensor<Shape, "f32">, y as I32).item();
  };
  const before = await evaluate();
  const runSeed = rng.int(0, 2 ** 30);
  const trainer = new Trainer({
    model,
    optimizer: new AdamW(model, { lr: 2e-2, weightDecay: 0 }),
    batch: (step) => {
      const { x, y } = sampleWindows(train, { batchSize: batch, seqLen, seed: runSeed, step });
      return toTensors(x, y, batch);
    },
    loss: (m, b) => crossEntropy(m.forward(b.x as I32) as Tensor<Shape, "f32">, b.y as I32),
    steps,
    schedule: cosineSchedule({ totalSteps: steps, warmupSteps: 3, final: 0.1 }),
    clipNorm: 1,
    readEvery: 20,
    track: { "layers.0.attention.wq": (m) => getAt(m, "layers.0.attention.wq.weight") as Tensor },
    progress: false,
  });
  const records = await trainer.run();
  const after = await evaluate();
  const h2 = bigramEntropy(train);
  ok(before > 3, `initial held-out loss ${before} (ln ${vocab.size} = ${Math.log(vocab.size).toFixed(2)})`);
  ok(after < 0.5 * before, `held-out loss went from ${before} to ${after}`);
  ok(after < h2, `held-out loss ${after} is not below the bigram entropy ${h2}`);
  ok(records.length === steps && records.every((r) => Number.isFinite(r["norm/layers.0.attention.wq"])));
});
