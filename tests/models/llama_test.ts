/**
 * LlamaLM against a float64 host forward written in the test (one layer, GQA, RoPE; tied and untied), its
 * module names (what LoRA targets), the loss, random init, and the key/value cache against full forwards.
 */
import { deepEqual, equal, notDeepEqual, ok, throws } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { type LlamaConfig, LlamaLM, llamaParameterShapes } from "../../lib/models/llama.ts";
import { argmax, generate, sampleToken } from "../../lib/models/sample.ts";
import { namedModules, namedParameters } from "../../lib/nn/module.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { assertClose, refusedOptions, TestRng } from "../_helpers.ts";
import type { F32 } from "../../lib/nn/linear.ts";
import { hostLogits, nllOf, randomWeights, weightShapes } from "./_ref.ts";
import { getBackend, getDefaultDevice } from "../../lib/runtime/realize.ts";

type I32 = Tensor<Shape, "i32">;

const tiny = (sharedClassifier: boolean): LlamaConfig => ({
  dim: 16,
  hiddenDim: 24,
  nLayers: 1,
  nHeads: 4,
  nKvHeads: 2,
  vocabSize: 23,
  seqLen: 12,
  sharedClassifier,
  normEps: 1e-5,
  ropeTheta: 1e4,
});

function ids(rng: TestRng, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => rng.int(0, vocab - 1));
}

for (const shared of [false, true]) {
  Deno.test(`LlamaLM forward and loss match a float64 host Llama (GQA, RoPE, ${shared ? "tied" : "untied"})`, async () => {
    const rng = new TestRng(shared ? 11 : 12);
    // Non-default constants, so that they are seen to reach the kernels.
    const config = { ...tiny(shared), normEps: 1e-3, ropeTheta: 500 };
    const weights = randomWeights(config, rng, 1.5);
    const model = LlamaLM.fromWeights(config, weights);
    const [b, t] = [2, 7];
    const rows = Array.from({ length: b }, () => ids(rng, t, config.vocabSize));
    const x = tensor(rows.flat(), { shape: [b, t], dtype: "i32" }) as I32;
    const logits = model.forward(x);
    deepEqual(logits.shape, [b, t, config.vocabSize]);
    const got = await logits.data();
    const want = new Float64Array(b * t * config.vocabSize);
    rows.forEach((row, i) => want.set(hostLogits(config, weights, row), i * t * config.vocabSize));
    assertClose(got, want, { rtol: 1e-4, atol: 1e-4, what: "logits" });

    // Next-token loss with one ignored target per row.
    const targets = rows.map((row) => row.map((_, j) => (j === 2 ? -100 : rng.int(0, config.vocabSize - 1))));
    const y = tensor(targets.flat(), { shape: [b, t], dtype: "i32" }) as I32;
    const loss = await model.loss(x, y, { ignoreIndex: -100 }).item();
    let sum = 0;
    let n = 0;
    targets.flat().forEach((target, r) => {
      if (target === -100) return;
      sum += nllOf(want, r * config.vocabSize, config.vocabSize, target);
      n++;
    });
    assertClose([loss], [sum / n], { rtol: 1e-4, atol: 1e-5, what: "loss" });
  });
}

Deno.test("LlamaLM module names follow llama2.c, and LoRA attaches to wq/wv/w1 by name", async () => {
  const rng = new TestRng(13);
  for (const shared of [true, false]) {
    const config = { ...tiny(shared), nLayers: 2 };
    const model = LlamaLM.random(config, { seed: rng.int(0, 1000) });
    const params = namedParameters(model);
    deepEqual(params.map(([p]) => p), weightShapes(config).map(([p]) => p));
    deepEqual(params.map(([, t]) => [...t.shape]), weightShapes(config).map(([, s]) => s));
    deepEqual(llamaParameterShapes(config).map((e) => e.name), weightShapes(config).map(([p]) => p));
    equal("output" in model, !shared);
  }
  const config = tiny(false);
  const model = LlamaLM.fromWeights(config, randomWeights(config, rng));
  const modules = namedModules(model).map(([p]) => p);
  for (
    const p of ["tok_embeddings", "layers.0.attention_norm", "layers.0.attention.wq", "layers.0.ffn_norm"]
  ) {
    ok(modules.includes(p), `module ${p}`);
  }
  const x = tensor(ids(rng, 6, config.vocabSize), { shape: [1, 6], dtype: "i32" }) as I32;
  const before = await model.forward(x).data();
  const { layers } = await attachLora(model, {
    targetModules: ["wq", "wv", "w1"],
    rank: 2,
    alpha: 4,
    seed: 3,
  });
  deepEqual(layers, ["layers.0.attention.wq", "layers.0.attention.wv", "layers.0.feed_forward.w1"]);
  ok(namedParameters(model).some(([p]) => p === "layers.0.attention.wq.lora_A.weight"));
  // Plain LoRA starts with B = 0: the adapted model computes the same logits.
  assertClose(await model.forward(x).data(), before, { rtol: 1e-5, atol: 1e-5, what: "logits after attach" });
  await throwsAsync(() => model.hostWeights(), /merge LoRA layers/);
});

async function throwsAsync(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  let error: unknown;
  try {
    await fn();
  } catch (err) {
    error = err;
  }
  ok(error instanceof Error && re.test(error.message), `expected an error matching ${re}, got ${error}`);
}

Deno.test("LlamaLM.random is seeded; configs are checked", async () => {
  const config = tiny(false);
  const seed = new TestRng(14).int(0, 1 << 20);
  const a = await LlamaLM.random(config, { seed }).hostWeights();
  const b = await LlamaLM.random(config, { seed }).hostWeights();
  const c = await LlamaLM.random(config, { seed: seed + 1 }).hostWeights();
  const wq = "layers.0.attention.wq.weight";
  deepEqual(a.get(wq)!.data, b.get(wq)!.data);
  notDeepEqual(a.get(wq)!.data, c.get(wq)!.data);
  // std 0.02 as llama2.c, the residual projections scaled by 1/√(2·nLayers).
  const std = (d: Float32Array) => Math.sqrt(d.reduce((s, v) => s + v * v, 0) / d.length);
  assertClose([std(a.get("output.weight")!.data)], [0.02], { rtol: 0.15, atol: 0, what: "std" });
  assertClose([std(a.get("layers.0.attention.wo.weight")!.data)], [0.02 / Math.sqrt(2)], {
    rtol: 0.15,
    atol: 0,
    what: "std of wo",
  });
  deepEqual([...a.get("norm.weight")!.data], new Array(config.dim).fill(1));
  // Options are checked: a misspelt key and std -1 were ignored, a missing seed read "deriveSeed: seed must be ...".
  throws(
    () => LlamaLM.random(config, { seed, std: -1, devcie: "wasm" } as never),
    { message: 'LlamaLM.random: option "std" must be > 0, got -1; unknown option "devcie"' },
  );
  throws(
    () => LlamaLM.random(config, { std: Infinity } as never),
    /option "seed" is required; option "std" must be/,
  );
  throws(
    () => LlamaLM.random({ ...config, nKvHeads: 3 }, { seed }),
    /nHeads 4 is not divisible by nKvHeads 3/,
  );
  throws(
    () => LlamaLM.random({ ...config, dim: 12, nHeads: 4 }, { seed }),
    /head size 3 must be a positive even integer/,
  );
  const weights = randomWeights(config, new TestRng(15));
  weights.delete("layers.0.feed_forward.w3.weight");
  throws(
    () => LlamaLM.fromWeights(config, weights),
    /"layers\.0\.feed_forward\.w3\.weight" \[24, 16\] is missing/,
  );
  const tied = randomWeights({ ...config, sharedClassifier: true }, new TestRng(16));
  tied.set("output.weight", { shape: [23, 16], data: new Float32Array(23 * 16) });
  throws(() => LlamaLM.fromWeights({ ...config, sharedClassifier: true }, tied), /classifier is shared/);
  const x = tensor([[1, 2]], { dtype: "i32" }) as I32;
  const model = LlamaLM.fromWeights(config, randomWeights(config, new TestRng(17)));
  throws(
    () => model.forward(tensor(new Int32Array(13), { shape: [1, 13], dtype: "i32" }) as I32),
    /context length 12/,
  );
  throws(() => model.forward(x.cast("f32") as unknown as I32), /i32 tensor \[B, T\]/);
});

Deno.test("KV-cache decoding gives the logits and greedy tokens of full forwards", async () => {
  const rng = new TestRng(18);
  const config = { ...tiny(false), nLayers: 2, seqLen: 16 };
  const weights = randomWeights(config, rng, 2);
  const model = LlamaLM.fromWeights(config, weights);
  const prompt = [1, ...ids(rng, 3, config.vocabSize)];
  const steps = 9;
  const cached = await generate(model, prompt, { steps });
  equal(cached.length, steps);

  // Independent: recompute the whole sequence each step and take the argmax of its last row. The input is
  // padded to a fixed length (causal attention keeps the padding from reaching earlier rows), so the kernels
  // compile once.
  const n = prompt.length + steps - 1;
  const seq = [...prompt];
  for (let i = 0; i < steps; i++) {
    const padded = [...seq, ...new Array(n - seq.length).fill(0)];
    const logits = await model.forward(tensor(padded, { shape: [1, n], dtype: "i32" }) as I32).data();
    seq.push(argmax(logits.subarray((seq.length - 1) * config.vocabSize, seq.length * config.vocabSize)));
  }
  deepEqual(cached, seq.slice(prompt.length));

  // Logits of a cached prefill and single-token steps equal those of one full forward (and the host's).
  const inputs = seq.slice(0, n);
  const full = await model.forward(tensor(inputs, { shape: [1, n], dtype: "i32" }) as I32).data();
  assertClose(full, hostLogits(config, weights, inputs), { rtol: 1e-4, atol: 1e-4, what: "full logits" });
  const cache = model.createCache({ capacity: n });
  const parts: Float32Array[] = [];
  const p0 = prompt.length;
  let logits = model.forwardCached(
    tensor(inputs.slice(0, p0), { shape: [1, p0], dtype: "i32" }) as I32,
    cache,
  );
  await cache.realize(logits);
  parts.push(await logits.data() as Float32Array);
  for (let p = p0; p < n; p++) {
    logits = model.forwardCached(tensor([inputs[p]], { shape: [1, 1], dtype: "i32" }) as I32, cache);
    await cache.realize(logits);
    parts.push(await logits.data() as Float32Array);
  }
  equal(cache.length, n);
  const stepped = Float32Array.from(parts.flatMap((p) => [...p]));
  assertClose(stepped, full, { rtol: 1e-4, atol: 1e-4, what: "cached logits" });
  throws(
    () => model.forwardCached(tensor([[1]], { dtype: "i32" }) as I32, cache),
    /exceed the cache capacity/,
  );
  throws(
    () =>
      model.forwardCached(
        tensor(new Int32Array(0), { shape: [1, 0], dtype: "i32" }) as I32,
        model.createCache(),
      ),
    /LlamaLM\.forwardCached: no new tokens \(tokens are \[1, 0\]\)/,
  );
  // batch 0 was accepted, and 1.5 failed in zeros as "full: invalid shape [1.5, 6, 1, 4]".
  throws(() => model.createCache({ batch: 0 }), {
    message: 'LlamaLM.createCache: option "batch" must be >= 1, got 0',
  });
  throws(() => model.createCache({ batch: 1.5 }), /option "batch" must be an integer, got 1\.5/);
  throws(() => model.createCache({ capacity: 0 }), /capacity must be an integer in 1\.\.16, got 0/);
  throws(() => model.createCache({ batches: 2 } as never), /unknown option "batches"/);

  // A stop token ends generation (and is not returned).
  const stopped = await generate(model, prompt, { steps, stop: [cached[4]] });
  deepEqual(stopped, cached.slice(0, cached.indexOf(cached[4])));
  // Sampling is reproducible for a seed.
  const s1 = await generate(model, prompt, { steps, temperature: 1, seed: 5, topP: 0.9 });
  const s2 = await generate(model, prompt, { steps, temperature: 1, seed: 5, topP: 0.9 });
  deepEqual(s1, s2);
});

Deno.test("generation stops when the context is full (host-side rule; cpu device)", async () => {
  const rng = new TestRng(20);
  const config = { ...tiny(true), seqLen: 10 };
  const model = LlamaLM.fromWeights(config, randomWeights(config, rng), { device: "cpu" });
  // An 8-token prompt leaves positions 8 and 9, and the prediction made at position 9: 3 tokens.
  const out = await generate(model, [1, ...ids(rng, 7, config.vocabSize)], { steps: 10 });
  equal(out.length, 3);
  ok(out.every((id) => id >= 0 && id < config.vocabSize));
  await throwsAsync(() => generate(model, new Array(11).fill(1), { steps: 1 }), /more than the context 10/);
  await throwsAsync(() => generate(model, [1, 99], { steps: 1 }), /prompt token 99/);
});

Deno.test("generate refuses a stop token outside the vocabulary, which no draw can match", async () => {
  const rng = new TestRng(21);
  const config = tiny(false);
  const model = LlamaLM.fromWeights(config, randomWeights(config, rng), { device: "cpu" });
  const inside = rng.int(0, config.vocabSize - 1);
  const outside = config.vocabSize + rng.int(0, 1000);
  for (const id of [config.vocabSize, outside]) {
    await throwsAsync(
      () => generate(model, [1], { steps: 2, stop: [inside, id] }),
      new RegExp(`^generate: stop token ${id} is not an id of the vocabulary \\(size 23, ids 0\\.\\.22\\)$`),
    );
  }
  // The last id of the vocabulary is a stop token like any other: the output is the free run's, up to it.
  const last = config.vocabSize - 1;
  const free = await generate(model, [1], { steps: 8 });
  const cut = free.indexOf(last);
  deepEqual(await generate(model, [1], { steps: 8, stop: [last] }), cut < 0 ? free : free.slice(0, cut));
});

Deno.test("generate reuses the kernels of a few sizes for prompts and lengths of other sizes", async () => {
  // Kernels are specialised to shapes and kept for the life of the process (on WebGPU, pipelines Deno never
  // frees), so a script generating for prompts of many lengths compiled a new set for every prompt length and
  // cache size. Prompts of 5 to 8 tokens and caches of 9 to 16 positions now share one set.
  const rng = new TestRng(23);
  const config = { ...tiny(false), nLayers: 2, seqLen: 32 };
  const model = LlamaLM.fromWeights(config, randomWeights(config, rng));
  const be = await getBackend(getDefaultDevice());
  const greedy = async (prompt: number[], steps: number) => {
    // Full forwards of a fixed length (one set of kernels of their own), the argmax of the last real row.
    const seq = [...prompt];
    for (let i = 0; i < steps; i++) {
      const padded = [...seq, ...new Array(config.seqLen - seq.length).fill(0)];
      const x = tensor(padded, { shape: [1, config.seqLen], dtype: "i32" }) as I32;
      const logits = await model.forward(x).data();
      seq.push(argmax(logits.subarray((seq.length - 1) * config.vocabSize, seq.length * config.vocabSize)));
    }
    return seq.slice(prompt.length);
  };
  const first = [1, ...ids(rng, 4, config.vocabSize)];
  deepEqual(await generate(model, first, { steps: 8 }), await greedy(first, 8));
  const kernels = be.stats().cachedKernels;
  for (const [length, steps] of [[6, 9], [7, 7], [8, 5], [5, 12]]) {
    const prompt = [1, ...ids(rng, length - 1, config.vocabSize)];
    deepEqual(await generate(model, prompt, { steps }), await greedy(prompt, steps), `prompt ${length}`);
  }
  equal(be.stats().cachedKernels, kernels, "other prompt lengths or steps compiled new kernels");
});

Deno.test("forwardCached with padded tokens gives the logits and cache of the real ones", async () => {
  const rng = new TestRng(24);
  const config = { ...tiny(true), nLayers: 2 };
  const model = LlamaLM.fromWeights(config, randomWeights(config, rng), { device: "cpu" });
  const prompt = [1, ...ids(rng, 4, config.vocabSize)];
  const next = ids(rng, 3, config.vocabSize);
  const run = async (pad: number) => {
    const cache = model.createCache({ capacity: 12 });
    const shape = [1, prompt.length + pad];
    const x = tensor([...prompt, ...new Array(pad).fill(7)], { shape, dtype: "i32", device: "cpu" });
    const out = [model.forwardCached(x as I32, cache, { lastOnly: true, valid: prompt.length })];
    equal(cache.length, prompt.length);
    for (const id of next) {
      out.push(model.forwardCached(tensor([[id]], { dtype: "i32", device: "cpu" }) as I32, cache));
    }
    await cache.realize(...out);
    return Promise.all(out.map((t) => t.data()));
  };
  const exact = await run(0);
  deepEqual(await run(3), exact);
  const cache = model.createCache({ capacity: 12 });
  for (const valid of [0, 3, 1.5]) {
    throws(
      () => model.forwardCached(tensor([[1, 2]], { dtype: "i32", device: "cpu" }) as I32, cache, { valid }),
      new RegExp(`valid must be an integer in 1\\.\\.2, got ${valid}`),
    );
  }
});

Deno.test("sampleToken inverts the (nucleus-truncated) softmax CDF", () => {
  const rng = new TestRng(19);
  const logits = Array.from({ length: 7 }, () => 2 * rng.normal());
  const temperature = 0.5 + rng.next();
  const p = logits.map((l) => Math.exp(l / temperature));
  const z = p.reduce((a, b) => a + b, 0);
  const probs = p.map((v) => v / z);
  const order = probs.map((_, i) => i).sort((a, b) => probs[b] - probs[a]);
  for (const topP of [1, 0.6]) {
    // Nucleus: the most likely tokens until their mass reaches topP.
    const kept: number[] = [];
    let mass = 0;
    for (const i of order) {
      kept.push(i);
      mass += probs[i];
      if (mass >= topP) break;
    }
    const keptSet = new Set(kept);
    const counts = new Array(7).fill(0);
    const n = 4000;
    for (let k = 0; k < n; k++) {
      const id = sampleToken(logits, { temperature, topP, u: (k + 0.5) / n });
      counts[id]++;
    }
    for (let i = 0; i < 7; i++) {
      const want = keptSet.has(i) ? probs[i] / mass : 0;
      assertClose([counts[i] / n], [want], {
        rtol: 0,
        atol: 2 / n,
        what: `frequency of ${i} (topP ${topP})`,
      });
    }
  }
  equal(sampleToken(logits, { temperature: 0, u: 0.3 }), order[0]);
  // A misspelt key is refused, not dropped: { topp: 0.6 } drew from the whole distribution (for a u near 1, a token
  // the nucleus of topP 0.6 leaves out).
  const spelt = { temperature, u: 1 - rng.next() * 1e-3, topp: 0.6 } as never;
  throws(() => sampleToken(logits, spelt), /^OptionsError: sampleToken: unknown option "topp"$/);
  throws(
    () => sampleToken(logits, { temperature: -1, u: 0 }),
    /^OptionsError: sampleToken: option "temperature"/,
  );
  throws(() => sampleToken(logits, { temperature: 1, topP: 0, u: 0 }), /option "topP" must be > 0, got 0/);
  // u outside [0, 1): NaN and 1.5 used to pick the last token, -1 the first.
  for (
    const [u, rule] of [[NaN, "be a finite number"], [1.5, "be < 1"], [-1, "be >= 0"], [1, "be < 1"]] as const
  ) {
    for (const temperature of [0, 1]) {
      throws(() => sampleToken(logits, { temperature, u }), new RegExp(`option "u" must ${rule}, got ${u}`));
    }
  }
  // No distribution to draw from: a clear error, where the draw used to return the last token.
  const at = rng.int(0, 6);
  for (const [v, shown] of [[NaN, "NaN"], [Infinity, "Infinity"]] as const) {
    const bad = logits.map((l, i) => (i === at ? v : l));
    for (const temperature of [0, 1]) {
      throws(() => sampleToken(bad, { temperature, u: 0.5 }), new RegExp(`logit ${at} of 7 is ${shown}`));
    }
  }
  throws(
    () => sampleToken(logits.map(() => -Infinity), { temperature: 1, u: 0.5 }),
    /all 7 logits are -Infinity/,
  );
  // Masked tokens (−∞) are never drawn.
  const masked = logits.map((l, i) => (i === order[0] ? -Infinity : l));
  for (let k = 0; k < 50; k++) ok(sampleToken(masked, { temperature, u: (k + 0.5) / 50 }) !== order[0]);
  // The host argmax agrees with Tensor.argmax: the first NaN wins.
  equal(argmax([1, NaN, 7, NaN]), 1);
  equal(argmax([NaN, 9]), 0);
});

for (const device of ["cpu", "wasm", "webgpu"] as const) {
  Deno.test(`sliding-window layers: forward = float64 host, KV-cache decoding past the window = forward (${device})`, async () => {
    const rng = new TestRng(19);
    // Layer 0 slides over 3 positions, layer 1 is full (Qwen2 allows both; its q/k/v biases are zero here); 11
    // positions run well past the window.
    const config: LlamaConfig = {
      ...tiny(false),
      nLayers: 2,
      seqLen: 16,
      family: "qwen2",
      qkvBias: true,
      slidingWindow: 3,
      slidingLayers: [true, false],
    };
    const weights = randomWeights({ ...config, qkvBias: false }, rng, 2);
    for (const { name, shape } of llamaParameterShapes(config)) {
      if (name.endsWith(".bias")) weights.set(name, { shape, data: new Float32Array(shape[0]) });
    }
    const model = LlamaLM.fromWeights(config, weights, { device });
    const n = 11;
    const inputs = ids(rng, n, config.vocabSize);
    const full = await model.forward(tensor(inputs, { shape: [1, n], dtype: "i32", device }) as I32).data();
    assertClose(full, hostLogits(config, weights, inputs), {
      rtol: 1e-4,
      atol: 1e-4,
      what: "windowed logits",
    });
    const cache = model.createCache({ capacity: n });
    const parts: Float32Array[] = [];
    let logits = model.forwardCached(
      tensor(inputs.slice(0, 2), { shape: [1, 2], dtype: "i32", device }) as I32,
      cache,
    );
    await cache.realize(logits);
    parts.push(await logits.data() as Float32Array);
    for (let p = 2; p < n; p++) {
      logits = model.forwardCached(
        tensor([inputs[p]], { shape: [1, 1], dtype: "i32", device }) as I32,
        cache,
      );
      await cache.realize(logits);
      parts.push(await logits.data() as Float32Array);
    }
    const stepped = Float32Array.from(parts.flatMap((p) => [...p]));
    assertClose(stepped, full, { rtol: 1e-4, atol: 1e-4, what: "cached windowed logits" });
  });
}

Deno.test("sliding-window configs are checked: a positive window, one flag per layer, families that have one", () => {
  const base = { ...tiny(false), nLayers: 2 };
  throws(
    () => LlamaLM.random({ ...base, family: "mistral", slidingWindow: 0 }, { seed: 0 }),
    /slidingWindow must be a positive integer, found 0/,
  );
  throws(
    () =>
      LlamaLM.random({ ...base, family: "mistral", slidingWindow: 4, slidingLayers: [true] }, { seed: 0 }),
    /slidingLayers must be 2 flags/,
  );
  throws(
    () => LlamaLM.random({ ...base, slidingWindow: 4 }, { seed: 0 }),
    /a llama model cannot have a slidingWindow \(4\)/,
  );
  throws(
    () =>
      LlamaLM.random({ ...base, family: "mistral", slidingWindow: 4, slidingLayers: [true, false] }, {
        seed: 0,
      }),
    /a mistral model cannot have full layers beside sliding ones/,
  );
  throws(
    () => LlamaLM.random({ ...base, slidingLayers: [true, true] }, { seed: 0 }),
    /without a slidingWindow/,
  );
  const m = LlamaLM.random({ ...base, family: "mistral", slidingWindow: 4 }, { seed: 0 });
  deepEqual(m.config.slidingLayers, [true, true]);
  deepEqual(m.layers.map((l) => l.attention.window), [4, 4]);
});

Deno.test("LlamaLM.fromTensors refuses an unknown option by name; a valid call keeps the tensors given", async () => {
  const a = LlamaLM.random(tiny(true), { seed: new TestRng(81).int(0, 2 ** 30), device: "cpu" });
  const tensors = new Map(namedParameters(a) as [string, F32][]);
  // Dropped before: the tensors stay where they are, so { device: "wasm" } (or a misspelt source) did nothing.
  for (const key of ["device", "sorce"]) {
    await refusedOptions(
      () => LlamaLM.fromTensors(a.config, tensors, { [key]: "wasm" } as never),
      new RegExp(`^LlamaLM\\.fromTensors: unknown option "${key}"$`),
    );
  }
  const b = LlamaLM.fromTensors(a.config, tensors, { source: "test" });
  for (const [name, t] of namedParameters(b)) equal(t, tensors.get(name), name);
  equal(namedParameters(b).length, tensors.size);
});
