import assert from "node:assert/strict";
import {
  type Llama2cConfig,
  llama2cLayout,
  type Llama2cWeight,
  parseLlama2c,
  readLlama2c,
  serializeLlama2c,
  writeLlama2c,
} from "../../lib/io/mod.ts";
import { freshSeed, Rng } from "./_rng.ts";

const MODEL = "../shared/data/models/stories260K/stories260K.bin";
const hasData = await Deno.stat(MODEL).then(() => true, () => false);

Deno.test({
  name: "stories260K.bin: config, shapes and float count match the data README",
  ignore: !hasData,
  fn: async () => {
    const { config, weights, freqCis } = await readLlama2c(MODEL);
    assert.deepEqual(config, {
      dim: 64,
      hiddenDim: 172,
      nLayers: 5,
      nHeads: 8,
      nKvHeads: 4,
      vocabSize: 512,
      seqLen: 512,
      sharedClassifier: true,
    });
    const expectShape = (name: string, shape: number[]) => {
      const w = weights.get(name);
      assert.ok(w !== undefined, `missing ${name}`);
      assert.deepEqual(w.shape, shape, name);
      assert.equal(w.data.length, shape.reduce((a, b) => a * b, 1), name);
    };
    expectShape("tok_embeddings.weight", [512, 64]);
    for (let i = 0; i < 5; i++) {
      expectShape(`layers.${i}.attention_norm.weight`, [64]);
      expectShape(`layers.${i}.attention.wq.weight`, [64, 64]);
      expectShape(`layers.${i}.attention.wk.weight`, [32, 64]);
      expectShape(`layers.${i}.attention.wv.weight`, [32, 64]);
      expectShape(`layers.${i}.attention.wo.weight`, [64, 64]);
      expectShape(`layers.${i}.ffn_norm.weight`, [64]);
      expectShape(`layers.${i}.feed_forward.w1.weight`, [172, 64]);
      expectShape(`layers.${i}.feed_forward.w2.weight`, [64, 172]);
      expectShape(`layers.${i}.feed_forward.w3.weight`, [172, 64]);
    }
    expectShape("norm.weight", [64]);
    assert.equal(weights.has("output.weight"), false, "the classifier is shared");
    assert.equal(weights.size, 1 + 9 * 5 + 1);
    assert.ok(freqCis !== undefined, "this file carries freq_cis tables");
    assert.deepEqual(freqCis.shape, [512, 4]);
    let total = freqCis.real.length + freqCis.imag.length;
    for (const w of weights.values()) total += w.data.length;
    assert.equal(total, 264_128);

    // The RoPE tables follow the closed form cos/sin(t * 10000^(-2i/8)).
    for (let t = 0; t < 512; t += 37) {
      for (let i = 0; i < 4; i++) {
        const angle = t * Math.pow(10000, -(2 * i) / 8);
        assert.ok(Math.abs(freqCis.real[t * 4 + i] - Math.cos(angle)) < 1e-4, `cos t=${t} i=${i}`);
        assert.ok(Math.abs(freqCis.imag[t * 4 + i] - Math.sin(angle)) < 1e-4, `sin t=${t} i=${i}`);
      }
    }

    // Spot-check placement against offsets computed by hand from the README's array order.
    const bytes = await Deno.readFile(MODEL);
    const view = new DataView(bytes.buffer);
    const floatAt = (index: number) => view.getFloat32(28 + 4 * index, true);
    // layers.2.wk starts after tok_emb, rms_att, all of wq and two layers of wk.
    const wk2 = 512 * 64 + 5 * 64 + 5 * 64 * 64 + 2 * 32 * 64;
    assert.equal(weights.get("layers.2.attention.wk.weight")!.data[0], floatAt(wk2));
    assert.equal(weights.get("layers.2.attention.wk.weight")!.data[33], floatAt(wk2 + 33));
    // norm.weight is the 64 floats just before the two 512x4 freq_cis tables at the end.
    const norm = 264_128 - 2 * 512 * 4 - 64;
    assert.equal(weights.get("norm.weight")!.data[5], floatAt(norm + 5));
    // layers.4.w2 row 63, column 171 (the last element of w2).
    const w2End = 512 * 64 + 5 * 64 + 5 * 4096 + 2 * 5 * 2048 + 5 * 4096 + 5 * 64 + 5 * 172 * 64 +
      5 * 64 * 172 - 1;
    assert.equal(weights.get("layers.4.feed_forward.w2.weight")!.data[63 * 172 + 171], floatAt(w2End));
    // RMSNorm weights of a trained model are not all equal (the file is not zero-filled).
    const rms = weights.get("layers.0.attention_norm.weight")!.data;
    assert.ok(Math.max(...rms) - Math.min(...rms) > 1e-3);
  },
});

Deno.test({
  name: "stories260K.bin: truncated or padded files give an error naming path and sizes",
  ignore: !hasData,
  fn: async () => {
    const bytes = await Deno.readFile(MODEL);
    assert.throws(
      () => parseLlama2c(bytes.subarray(0, bytes.length - 4), "cut.bin"),
      /"cut\.bin" has 1056536 bytes, but its header .* requires 1056540 bytes \(with freq_cis tables\) or 1040156 bytes \(without\)/,
    );
    const longer = new Uint8Array(bytes.length + 8);
    longer.set(bytes);
    assert.throws(() => parseLlama2c(longer, "long.bin"), /"long\.bin" has 1056548 bytes/);
    assert.throws(
      () => parseLlama2c(bytes.subarray(0, 20), "tiny.bin"),
      /"tiny\.bin" has 20 bytes, fewer than/,
    );
  },
});

function randomModel(rng: Rng, sharedClassifier: boolean): {
  config: Llama2cConfig;
  weights: Map<string, Llama2cWeight>;
} {
  const nKvHeads = rng.int(1, 2);
  const nHeads = nKvHeads * rng.int(1, 2);
  const headSize = 2 * rng.int(1, 3);
  const config: Llama2cConfig = {
    dim: nHeads * headSize,
    hiddenDim: rng.int(3, 20),
    nLayers: rng.int(1, 3),
    nHeads,
    nKvHeads,
    vocabSize: rng.int(5, 40),
    seqLen: rng.int(2, 16),
    sharedClassifier,
  };
  const weights = new Map<string, Llama2cWeight>();
  for (const { name, shape } of llama2cLayout(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    weights.set(name, { shape, data: Float32Array.from({ length: n }, () => rng.normal()) });
  }
  return { config, weights };
}

Deno.test("llama2.c write -> read round trip of random small checkpoints", async () => {
  const rng = new Rng(freshSeed());
  const dir = await Deno.makeTempDir();
  try {
    for (let trial = 0; trial < 12; trial++) {
      const shared = trial % 2 === 0;
      const { config, weights } = randomModel(rng, shared);
      const path = `${dir}/sub/model${trial}.bin`;
      await writeLlama2c(path, config, weights);
      const kvDim = (config.dim / config.nHeads) * config.nKvHeads;
      // Expected size from the header definition: 7 int32 + every float of the v0 layout.
      const L = config.nLayers;
      const floats = config.vocabSize * config.dim + 2 * L * config.dim + 2 * L * config.dim * config.dim +
        2 * L * kvDim * config.dim + 3 * L * config.hiddenDim * config.dim + config.dim +
        config.seqLen * (config.dim / config.nHeads) + (shared ? 0 : config.vocabSize * config.dim);
      const stat = await Deno.stat(path);
      assert.equal(stat.size, 28 + 4 * floats);
      // The header stores a negative vocab size for an untied classifier.
      const head = new DataView((await Deno.readFile(path)).buffer);
      assert.equal(head.getInt32(20, true), shared ? config.vocabSize : -config.vocabSize);

      const back = await readLlama2c(path);
      assert.deepEqual(back.config, config);
      assert.deepEqual([...back.weights.keys()], [...weights.keys()]);
      for (const [name, w] of weights) {
        assert.deepEqual(back.weights.get(name)!.shape, w.shape, name);
        assert.deepEqual(back.weights.get(name)!.data, w.data, name);
      }
      assert.equal(back.weights.has("output.weight"), !shared);

      // Without the freq_cis tables the reader still works, and reports no tables.
      const bare = parseLlama2c(serializeLlama2c(config, weights, { freqCis: false }), "bare.bin");
      assert.equal(bare.freqCis, undefined);
      for (const [name, w] of weights) assert.deepEqual(bare.weights.get(name)!.data, w.data, name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("llama2.c writer and reader reject inconsistent inputs", () => {
  const rng = new Rng(freshSeed());
  const { config, weights } = randomModel(rng, true);
  const missing = new Map(weights);
  missing.delete("layers.0.attention.wv.weight");
  assert.throws(
    () => serializeLlama2c(config, missing),
    /weight "layers\.0\.attention\.wv\.weight" \[.*\] is missing/,
  );
  const wrong = new Map(weights);
  wrong.set("norm.weight", { shape: [config.dim + 1], data: new Float32Array(config.dim + 1).fill(1) });
  assert.throws(() => serializeLlama2c(config, wrong), /"norm\.weight" has shape \[\d+\], expected \[\d+\]/);
  const extra = new Map(weights);
  extra.set("output.weight", weights.get("tok_embeddings.weight")!);
  assert.throws(
    () => serializeLlama2c(config, extra),
    /unexpected weight "output\.weight".*sharedClassifier/,
  );
  assert.throws(
    () => serializeLlama2c({ ...config, nHeads: 3, dim: 8 }, weights),
    /dim 8 is not divisible by nHeads 3/,
  );
  // A newer (version 1/2) export is recognised by its magic.
  const v1 = new Uint8Array(256);
  new DataView(v1.buffer).setUint32(0, 0x616b3432, true);
  new DataView(v1.buffer).setInt32(4, 1, true);
  assert.throws(() => parseLlama2c(v1, "v1.bin"), /"v1\.bin" is a newer llama2\.c export .*version 1/);
  // A header with zero heads is invalid.
  const bad = serializeLlama2c(config, weights);
  new DataView(bad.buffer).setInt32(12, 0, true);
  assert.throws(
    () => parseLlama2c(bad, "bad.bin"),
    /"bad\.bin" has an invalid header .*nHeads must be a positive integer/,
  );
});

Deno.test("llama2.c reader refuses a header declaring billions of layers from its size, building nothing", () => {
  // 92 bytes whose header declares 2·10⁹ layers: listing their weights first took minutes and gigabytes.
  const bytes = new Uint8Array(28 + 64);
  const header = [8, 16, 2_000_000_000, 2, 1, 10, 4];
  header.forEach((v, i) => new DataView(bytes.buffer).setInt32(4 * i, v, true));
  // The sizes in closed form: embedding, per layer two norms, wq, wk, wv, wo and three FFN matrices, final norm;
  // the freq_cis tables are seqLen × headSize/2, twice.
  const [dim, hidden, layers, heads, kvHeads, vocab, seqLen] = header;
  const kvDim = (dim / heads) * kvHeads;
  const perLayer = 2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * hidden * dim;
  const without = 28 + 4 * (vocab * dim + layers * perLayer + dim);
  const withFreq = without + 4 * 2 * seqLen * (dim / heads / 2);
  const started = performance.now();
  assert.throws(
    () => parseLlama2c(bytes, "huge.bin"),
    (err: Error) => {
      assert.match(err.message, /"huge\.bin" has 92 bytes, but its header \(.*n_layers=2000000000/);
      assert.ok(
        err.message.includes(`requires ${withFreq} bytes (with freq_cis tables) or ${without} bytes`),
      );
      return true;
    },
  );
  assert.ok(performance.now() - started < 1000, "the refusal comes from the header alone");
});

Deno.test("serializeLlama2c refuses a misspelt freqCis instead of writing the tables", () => {
  const { config, weights } = randomModel(new Rng(freshSeed()), true);
  // Dropped, { freqcis: false } wrote the tables; the file without them is 2·seqLen·⌊headSize/2⌋ floats shorter.
  assert.throws(
    () => serializeLlama2c(config, weights, { freqcis: false } as never),
    /unknown option "freqcis"/,
  );
  const withTables = serializeLlama2c(config, weights).length;
  const without = serializeLlama2c(config, weights, { freqCis: false }).length;
  assert.equal(withTables - without, 8 * config.seqLen * Math.floor(config.dim / config.nHeads / 2));
});
