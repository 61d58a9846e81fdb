/** The experiments' training loops with gradient accumulation: which batches a step reads, and the config key. */
import { deepEqual, equal, ok } from "node:assert/strict";
import { z } from "../../deps.ts";
import { LlamaLM, tensor, ToyVlm } from "../../mod.ts";
import { type VlmSetup, vlmTrainer } from "../../lab/toy_vlm.ts";
import { accumulatedText, lmBatchText, lmFields, type LmSetup, lmTrainer } from "../../lab/lm.ts";
import { attachMethod, parseMethod } from "../../lab/methods.ts";
import { ResultsDir } from "../../lab/results.ts";
import { TestRng } from "../_helpers.ts";

const tempRoot = Deno.makeTempDirSync({ prefix: "lm_trainer_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tempRoot, { recursive: true }));

/** The batch indices a run of `steps` steps with `accumulate` asks the setup for, and its records' losses. */
async function batchesRead(accumulate: number | undefined, steps: number, seed: number): Promise<number[]> {
  const rng = new TestRng(seed);
  const [vocab, b, t] = [11, 2, 6];
  const model = LlamaLM.random(
    {
      dim: 8,
      hiddenDim: 16,
      nLayers: 1,
      nHeads: 2,
      nKvHeads: 1,
      seqLen: 16,
      vocabSize: vocab,
      sharedClassifier: true,
    },
    { seed },
  );
  await attachMethod(model, parseMethod("lora"), { targets: ["wq"], rank: 2, alpha: 4, seed });
  const read: number[] = [];
  const lm = {
    trainBatch: (_seed: number, step: number) => {
      read.push(step);
      const ids = () => Int32Array.from({ length: b * t }, () => rng.int(0, vocab - 1));
      return {
        x: tensor(ids(), { shape: [b, t], dtype: "i32" }),
        y: tensor(ids(), { shape: [b, t], dtype: "i32" }),
      };
    },
  } as unknown as LmSetup;
  const results = ResultsDir.create("acc", { root: tempRoot });
  const { trainer } = lmTrainer(lm, model, {
    method: parseMethod("lora"),
    lr: 1e-3,
    steps,
    seed,
    accumulate,
    name: "lora-seed0",
    label: "lora",
    results,
  });
  await trainer.run();
  results.release();
  return read;
}

Deno.test("lmTrainer with accumulate k reads batches (s − 1)·k + 1 .. s·k at step s; k = 1 reads batch s", async () => {
  const seed = new TestRng(5).int(0, 1000);
  deepEqual(await batchesRead(undefined, 3, seed), [1, 2, 3]);
  deepEqual(await batchesRead(1, 3, seed), [1, 2, 3]);
  deepEqual(await batchesRead(3, 2, seed), [1, 2, 3, 4, 5, 6]);
});

Deno.test("lmFields' accumulate: absent unless given (older configurations still resume), a positive integer", () => {
  const schema = z.object(lmFields(10));
  const plain = schema.parse({});
  equal("accumulate" in plain && plain.accumulate !== undefined, false);
  equal(schema.parse({ accumulate: 4 }).accumulate, 4);
  for (const bad of [0, -1, 2.5]) {
    ok(!schema.safeParse({ accumulate: bad }).success, `accumulate ${bad} accepted`);
  }
  equal(lmBatchText({ batchSize: 8, seqLen: 64 }), "8×64");
  equal(lmBatchText({ batchSize: 8, seqLen: 64, accumulate: 4 }), "8×64, 4 batches per step");
  equal(accumulatedText(1), "");
});

Deno.test("vlmTrainer with accumulate k reads batches (s − 1)·k + 1 .. s·k at step s", async () => {
  const seed = new TestRng(6).int(0, 1000);
  const rng = new TestRng(seed);
  const [b, t, vocab] = [2, 5, 9];
  const model = ToyVlm.random({
    imageSize: 8,
    channels: 3,
    patchSize: 4,
    visionDim: 8,
    visionLayers: 1,
    visionHeads: 2,
    visionMlp: 16,
    nClasses: 4,
    lm: {
      dim: 8,
      hiddenDim: 16,
      nLayers: 1,
      nHeads: 2,
      nKvHeads: 1,
      vocabSize: vocab,
      seqLen: 16,
      sharedClassifier: true,
    },
  }, { seed });
  await attachMethod(model, parseMethod("lora"), { targets: ["wq"], rank: 2, alpha: 4, seed });
  for (const [k, steps, want] of [[undefined, 2, [1, 2]], [2, 2, [1, 2, 3, 4]]] as const) {
    const read: number[] = [];
    const vlm = {
      batch: (_seed: number, step: number) => {
        read.push(step);
        const ids = () => Int32Array.from({ length: b * t }, () => rng.int(0, vocab - 1));
        return {
          images: tensor(Float32Array.from({ length: b * 3 * 8 * 8 }, () => rng.normal()), {
            shape: [b, 8, 8, 3],
          }),
          tokens: tensor(ids(), { shape: [b, t], dtype: "i32" }),
          targets: tensor(ids(), { shape: [b, t], dtype: "i32" }),
        };
      },
    } as unknown as VlmSetup;
    const trainer = vlmTrainer(vlm, model, {
      method: parseMethod("lora"),
      lr: 1e-3,
      steps,
      seed,
      accumulate: k,
      metrics: undefined,
    });
    await trainer.run();
    deepEqual(read, [...want]);
  }
});
