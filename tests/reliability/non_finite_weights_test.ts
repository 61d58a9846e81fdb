/**
 * Non-finite weights never pass silently (issue 16, item 6): a NaN or an infinity in a loaded model (llama2.c or
 * Hugging Face), in a cached base model, in an adapter, in the input of `deno task init` or in an initialisation's
 * output is an error naming the tensor (and, for a cached model, the cache directory and how to rebuild it), where
 * before it gave a NaN perplexity, `<unk>` text or NaN adapters. The check itself is one device reduction per
 * tensor, read back once.
 */
import { deepEqual, equal, match, ok, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { checkFinite, NonFiniteWeightsError } from "../../lib/nn/finite.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { llama2cLayout, serializeLlama2c } from "../../lib/io/llama2c.ts";
import { readSafetensors, writeSafetensors } from "../../lib/io/safetensors.ts";
import { serializeTokenizer } from "../../lib/io/tokenizer.ts";
import { loadLlama } from "../../lib/models/load.ts";
import { LlamaLM } from "../../lib/models/llama.ts";
import { saveHf } from "../../lib/models/hf.ts";
import { cachedPretrained } from "../../lab/cache.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { loadAdapter, saveAdapter } from "../../lib/lora/mod.ts";
import { runInit } from "../../cli/init.ts";
import { runPpl } from "../../cli/ppl.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

const BAD = [NaN, Infinity, -Infinity];

/** The error `p` rejects with (fails when it resolves). */
async function caught(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

/** `data` with a non-finite value at a random place; returns the place and the value. */
function spoil(rng: TestRng, data: Float32Array): { at: number; value: number } {
  const at = rng.int(0, data.length - 1);
  const value = BAD[rng.int(0, 2)];
  data[at] = value;
  return { at, value };
}

const CONFIG = {
  dim: 16,
  hiddenDim: 24,
  nLayers: 2,
  nHeads: 2,
  nKvHeads: 1,
  vocabSize: 12,
  seqLen: 8,
  sharedClassifier: true,
};

function randomWeights(rng: TestRng) {
  return new Map(
    llama2cLayout(CONFIG).map(({ name, shape }) => [name, {
      shape,
      data: rng.normals(shape.reduce((a, b) => a * b, 1), 0.2),
    }]),
  );
}

for (const device of ["cpu", "webgpu"] as const) {
  Deno.test(`checkFinite names each bad tensor, its count and first element (${device})`, async () => {
    const rng = new TestRng(401);
    const named = Array.from({ length: 6 }, (_, i) => {
      const shape = [rng.int(1, 40), rng.int(1, 40)];
      return { name: `t${i}`, shape, data: rng.normals(shape[0] * shape[1]) };
    });
    const toTensors = () => named.map((n) => [n.name, tensor(n.data, { shape: n.shape, device })] as const);
    await checkFinite(toTensors(), { what: "clean tensors" });
    const victims = [...new Set([rng.int(0, 5), rng.int(0, 5)])].sort();
    const spoiled = victims.map((v) => {
      const places = new Set([rng.int(0, named[v].data.length - 1), rng.int(0, named[v].data.length - 1)]);
      for (const p of places) named[v].data[p] = BAD[rng.int(0, 2)];
      return { v, count: places.size, first: Math.min(...places) };
    });
    const err = await caught(checkFinite(toTensors(), { what: "my tensors", hint: "Do X" }));
    ok(err instanceof NonFiniteWeightsError, `TEST_SEED=${TEST_SEED}: ${err}`);
    deepEqual(err.tensors.map((t) => t.name), spoiled.map((s) => `t${s.v}`));
    deepEqual(err.tensors.map((t) => [t.count, t.first]), spoiled.map((s) => [s.count, s.first]));
    match(
      err.message,
      /^my tensors: NaN or infinite values in "t\d+" \[\d+, \d+\] \(\d+ of them; the first, /,
    );
    match(err.message, /\. Do X$/);
  });
}

Deno.test("a NaN or an infinity in a llama2.c or HF model file: loading fails naming the tensor; ppl never prints NaN", async () => {
  const rng = new TestRng(402);
  const dir = await Deno.makeTempDir();
  const weights = randomWeights(rng);
  const names = [...weights.keys()];
  const victim = names[rng.int(0, names.length - 1)];
  const { at } = spoil(rng, weights.get(victim)!.data);
  await Deno.writeFile(`${dir}/model.bin`, serializeLlama2c(CONFIG, weights));
  const bin = await caught(loadLlama(`${dir}/model.bin`, { device: "cpu" }));
  ok(bin instanceof NonFiniteWeightsError, String(bin));
  equal(bin.tensors.length, 1);
  equal(bin.tensors[0].name, victim);
  equal(bin.tensors[0].first, at);
  match(bin.message, new RegExp(`^model ".*model\\.bin": NaN or infinite values in "${victim}"`));

  // The perplexity command stops with that error instead of printing "perplexity: NaN".
  const pieces = Array.from({ length: CONFIG.vocabSize }, (_, i) => ({ piece: `p${i}`, score: -i }));
  await Deno.writeFile(`${dir}/tok.bin`, serializeTokenizer(pieces));
  await Deno.writeTextFile(`${dir}/text.txt`, "p3p4p5p6p7p8p9");
  await rejects(
    runPpl(["--model", `${dir}/model.bin`, "--tokenizer", `${dir}/tok.bin`, "--text", `${dir}/text.txt`]),
    new RegExp(`NaN or infinite values in "${victim}" \\[[\\d, ]+\\] \\(1 of them`),
  );

  // The same for a Hugging Face directory (the names there are the model's parameter paths).
  const clean = LlamaLM.fromWeights(CONFIG, randomWeights(rng), { device: "cpu" });
  await saveHf(clean, `${dir}/hf`);
  const st = await readSafetensors(`${dir}/hf/model.safetensors`);
  const keys = [...st.tensors.keys()];
  const key = keys[rng.int(0, keys.length - 1)];
  spoil(rng, st.tensors.get(key)!.data as Float32Array);
  await writeSafetensors(`${dir}/hf/model.safetensors`, Object.fromEntries(st.tensors), st.metadata);
  await rejects(loadLlama(`${dir}/hf`, { device: "cpu" }), /model ".*hf": NaN or infinite values in "/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a NaN in a cached base model names the cache directory and how to rebuild it", async () => {
  const rng = new TestRng(403);
  const cacheDir = await Deno.makeTempDir();
  const spec = {
    model: { ...CONFIG, seqLen: 16 },
    steps: 2,
    batchSize: 2,
    seqLen: 8,
    lr: 1e-3,
    seed: rng.int(0, 1000),
  };
  const tokens = Int32Array.from({ length: 400 }, () => rng.int(0, CONFIG.vocabSize - 1));
  const first = await cachedPretrained(spec, tokens, { cacheDir, device: "cpu" });
  equal(first.cached, false);
  const file = `${first.dir}/model.safetensors`;
  const st = await readSafetensors(file);
  const keys = [...st.tensors.keys()];
  spoil(rng, st.tensors.get(keys[rng.int(0, keys.length - 1)])!.data as Float32Array);
  await writeSafetensors(file, Object.fromEntries(st.tensors), st.metadata);
  const dir = first.dir.replaceAll(".", "\\.");
  await rejects(
    cachedPretrained(spec, tokens, { cacheDir, device: "cpu" }),
    new RegExp(
      `^Error: cached base model "${dir}" cannot be used: its weights: NaN or infinite values in "[^"]+" .*` +
        `Remove the directory "${dir}" \\(rm -r "${dir}"\\) and run again: it is rebuilt from scratch$`,
    ),
  );
  // Doing what the message says rebuilds it.
  await Deno.remove(first.dir, { recursive: true });
  equal((await cachedPretrained(spec, tokens, { cacheDir, device: "cpu" })).cached, false);
  await Deno.remove(cacheDir, { recursive: true });
});

Deno.test("a LoRA-GA gradient holding a NaN or an infinity is refused naming the tensor, before any init runs", async () => {
  const rng = new TestRng(404);
  const d = rng.int(6, 12);
  const model = {
    blk: { q: new Linear(d, d, { seed: rng.int(0, 1000) }), v: new Linear(d, d, { seed: 3 }) },
  };
  const grad = rng.normals(d * d);
  spoil(rng, grad);
  const data = {
    "blk.q": { grads: tensor(rng.normals(d * d), { shape: [d, d] }) as F },
    "blk.v": { grads: tensor(grad, { shape: [d, d] }) as F },
  };
  await rejects(
    attachLora(model, { targetModules: ["q", "v"], rank: 2, alpha: 2, init: "lora-ga", data }),
    /attachLora: the calibration data: NaN or infinite values in "blk\.v\.grads"/,
  );
  ok(model.blk.q instanceof Linear && model.blk.v instanceof Linear, "the model is left as it was");
});

Deno.test("deno task init refuses a weights file holding NaN, and writes nothing", async () => {
  const rng = new TestRng(405);
  const dir = await Deno.makeTempDir();
  const w = rng.normals(8 * 6, 0.3);
  const { at } = spoil(rng, w);
  await writeSafetensors(`${dir}/w.safetensors`, {
    "blk.q.weight": { dtype: "F32", shape: [8, 6], data: rng.normals(48) },
    "blk.k.weight": { dtype: "F32", shape: [8, 6], data: w },
  });
  await rejects(
    runInit([
      "--method",
      "pissa",
      "--weights",
      `${dir}/w.safetensors`,
      "--rank",
      "2",
      "--out",
      `${dir}/out.safetensors`,
      "--device",
      "cpu",
    ]),
    new RegExp(
      `weights file ".*w\\.safetensors": NaN or infinite values in "blk\\.k\\.weight" \\[8, 6\\] ` +
        `\\(1 of them; the first, element ${at}, is `,
    ),
  );
  await rejects(Deno.stat(`${dir}/out.safetensors`), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an adapter file holding an infinity is refused naming the tensor; the model is left as it was", async () => {
  const rng = new TestRng(406);
  const dir = await Deno.makeTempDir();
  const make = () => ({ layers: [0, 1].map((i) => ({ wq: new Linear(8, 8, { seed: 10 + i }) })) });
  const source = make();
  await attachLora(source, { targetModules: ["wq"], rank: 2, alpha: 4, init: "pissa", seed: rng.int(0, 99) });
  await saveAdapter(dir, source);
  const file = `${dir}/adapter_model.safetensors`;
  const st = await readSafetensors(file);
  const key = [...st.tensors.keys()].find((k) => k.includes("layers.1") && k.includes("lora_A"))!;
  spoil(rng, st.tensors.get(key)!.data as Float32Array);
  await writeSafetensors(file, Object.fromEntries(st.tensors), st.metadata);
  const target = make();
  await rejects(
    loadAdapter(dir, target),
    /adapter ".*": NaN or infinite values in "layers\.1\.wq\.lora_A\.weight"/,
  );
  ok(target.layers.every((l) => l.wq instanceof Linear), "no layer was replaced");
  await Deno.remove(dir, { recursive: true });
});
