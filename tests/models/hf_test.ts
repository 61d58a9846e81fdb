/**
 * Hugging Face checkpoints: the save → load round trip is exact (weights and logits), the q/k row permutation
 * turns llama2.c's interleaved RoPE into transformers' rotate-half RoPE (checked with a float64 rotate-half
 * implementation written here), and malformed checkpoints fail with errors naming the file.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import {
  openSafetensors,
  readSafetensors,
  serializeSafetensors,
  toFloat32,
  writeSafetensors,
} from "../../lib/io/safetensors.ts";
import { serializeLlama2c } from "../../lib/io/llama2c.ts";
import { type LlamaConfig, LlamaLM, resolveLlamaConfig } from "../../lib/models/llama.ts";
import { hfEosTokenIds, loadHf, readHf, saveHf } from "../../lib/models/hf.ts";
import { loadLlama } from "../../lib/models/load.ts";
import { refusedOptions, TestRng } from "../_helpers.ts";
import { namedParameters } from "../../lib/nn/module.ts";
import { randomWeights } from "./_ref.ts";

type I32 = Tensor<Shape, "i32">;

const config: LlamaConfig = {
  dim: 24,
  hiddenDim: 40,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  vocabSize: 31,
  seqLen: 16,
  sharedClassifier: false,
  normEps: 1e-5,
  ropeTheta: 1e4,
};

async function rejectsWith(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  let error: unknown;
  try {
    await fn();
  } catch (err) {
    error = err;
  }
  ok(error instanceof Error, `expected an error matching ${re}, nothing was thrown`);
  ok(re.test(error.message), `expected an error matching ${re}, got: ${error.message}`);
}

for (const shared of [false, true]) {
  Deno.test(`HF save → load is exact: weights and logits (${shared ? "tied" : "untied"})`, async () => {
    const rng = new TestRng(shared ? 31 : 32);
    const c = { ...config, sharedClassifier: shared, ropeTheta: 2000, normEps: 1e-6 };
    const weights = randomWeights(c, rng);
    const model = LlamaLM.fromWeights(c, weights);
    const dir = await Deno.makeTempDir();
    await saveHf(model, dir);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    equal(json.tie_word_embeddings, shared);
    equal(json.num_key_value_heads, 2);
    deepEqual(json.rope_parameters, { rope_type: "default", rope_theta: 2000 });
    equal(json.rms_norm_eps, 1e-6);
    const { tensors } = await readSafetensors(`${dir}/model.safetensors`);
    equal(tensors.has("lm_head.weight"), !shared);
    ok(tensors.has("model.layers.1.mlp.gate_proj.weight"));
    ok([...tensors.values()].every((e) => e.dtype === "F32"));
    deepEqual(
      toFloat32(tensors.get("model.layers.1.mlp.gate_proj.weight")!),
      weights.get("layers.1.feed_forward.w1.weight")!.data,
    );
    deepEqual(
      toFloat32(tensors.get("model.layers.0.mlp.up_proj.weight")!),
      weights.get("layers.0.feed_forward.w3.weight")!.data,
    );
    deepEqual(
      toFloat32(tensors.get("model.layers.0.mlp.down_proj.weight")!),
      weights.get("layers.0.feed_forward.w2.weight")!.data,
    );
    deepEqual(
      toFloat32(tensors.get("model.layers.0.post_attention_layernorm.weight")!),
      weights.get("layers.0.ffn_norm.weight")!.data,
    );

    const back = await readHf(dir);
    // A model without token ids is saved naming none (its generate stops nowhere, as before saving).
    deepEqual(resolveLlamaConfig(back.config), resolveLlamaConfig(c));
    deepEqual([...back.weights.keys()].sort(), [...weights.keys()].sort());
    for (const [name, w] of weights) deepEqual(back.weights.get(name)!.data, w.data, name);

    const loaded = await loadLlama(dir);
    const x = tensor(Array.from({ length: 20 }, () => rng.int(0, c.vocabSize - 1)), {
      shape: [2, 10],
      dtype: "i32",
    });
    const a = await model.forward(x as I32).data();
    const b = await loaded.forward(x as I32).data();
    deepEqual(b, a);
  });
}

Deno.test("HF q_proj/k_proj rows give transformers' rotate-half RoPE the llama2.c attention scores", async () => {
  const rng = new TestRng(33);
  const weights = randomWeights(config, rng);
  const dir = await Deno.makeTempDir();
  await saveHf(LlamaLM.fromWeights(config, weights), dir);
  const { tensors } = await readSafetensors(`${dir}/model.safetensors`);
  const hd = config.dim / config.nHeads;
  const half = hd / 2;
  const d = config.dim;
  const x = Float64Array.from({ length: d }, () => rng.normal());
  const y = Float64Array.from({ length: d }, () => rng.normal());
  const [pq, pk] = [rng.int(0, 15), rng.int(0, 15)];
  const rows = (w: ArrayLike<number>, v: Float64Array, n: number) =>
    Float64Array.from({ length: n }, (_, r) => v.reduce((s, vi, i) => s + w[r * d + i] * vi, 0));
  const angle = (pos: number, i: number) => pos / 1e4 ** ((2 * i) / hd);
  // llama2.c: rotate the pairs (2i, 2i+1).
  const interleaved = (v: Float64Array, pos: number) => {
    const o = v.slice();
    for (let h = 0; h < v.length / hd; h++) {
      for (let i = 0; i < half; i++) {
        const [a, b] = [v[h * hd + 2 * i], v[h * hd + 2 * i + 1]];
        const [c, s] = [Math.cos(angle(pos, i)), Math.sin(angle(pos, i))];
        o[h * hd + 2 * i] = a * c - b * s;
        o[h * hd + 2 * i + 1] = a * s + b * c;
      }
    }
    return o;
  };
  // transformers: q·cos + rotate_half(q)·sin with cos/sin repeated over both halves.
  const rotateHalf = (v: Float64Array, pos: number) => {
    const o = v.slice();
    for (let h = 0; h < v.length / hd; h++) {
      for (let j = 0; j < hd; j++) {
        const i = j % half;
        const rot = j < half ? -v[h * hd + j + half] : v[h * hd + j - half];
        o[h * hd + j] = v[h * hd + j] * Math.cos(angle(pos, i)) + rot * Math.sin(angle(pos, i));
      }
    }
    return o;
  };
  const kvd = hd * config.nKvHeads;
  const q1 = interleaved(rows(weights.get("layers.1.attention.wq.weight")!.data, x, d), pq);
  const k1 = interleaved(rows(weights.get("layers.1.attention.wk.weight")!.data, y, kvd), pk);
  const q2 = rotateHalf(rows(toFloat32(tensors.get("model.layers.1.self_attn.q_proj.weight")!), x, d), pq);
  const k2 = rotateHalf(rows(toFloat32(tensors.get("model.layers.1.self_attn.k_proj.weight")!), y, kvd), pk);
  for (let h = 0; h < config.nHeads; h++) {
    const kvh = Math.floor(h / (config.nHeads / config.nKvHeads));
    let s1 = 0;
    let s2 = 0;
    for (let j = 0; j < hd; j++) {
      s1 += q1[h * hd + j] * k1[kvh * hd + j];
      s2 += q2[h * hd + j] * k2[kvh * hd + j];
    }
    ok(Math.abs(s1 - s2) <= 1e-9 * (1 + Math.abs(s1)), `head ${h}: score ${s2} vs ${s1}`);
  }
  // v_proj and o_proj are not permuted.
  deepEqual(
    toFloat32(tensors.get("model.layers.1.self_attn.v_proj.weight")!),
    weights.get("layers.1.attention.wv.weight")!.data,
  );
});

Deno.test("loaders name the file and what was expected", async () => {
  const rng = new TestRng(34);
  const dir = await Deno.makeTempDir();
  const weights = randomWeights(config, rng);
  await saveHf(LlamaLM.fromWeights(config, weights), dir);
  const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const cfgPath = `${dir}/config.json`;

  // llama2.c: a truncated file, and a missing one.
  const bin = serializeLlama2c({ ...config, sharedClassifier: false }, weights);
  await Deno.writeFile(`${dir}/m.bin`, bin.subarray(0, bin.length - 40));
  await rejectsWith(
    () => LlamaLM.fromLlama2c(`${dir}/m.bin`),
    new RegExp(`"${dir}/m.bin" has ${bin.length - 40} bytes.*requires`),
  );
  await rejectsWith(
    () => loadLlama(`${dir}/none.bin`),
    /cannot read model ".*none\.bin".*llama2\.c \.bin file or a Hugging Face directory/,
  );

  // HF: malformed JSON, a wrong config, unsupported features, missing files and tensors.
  await Deno.writeTextFile(cfgPath, "{ hidden_size: 24 ");
  await rejectsWith(() => loadLlama(dir), /config\.json" is not valid JSON/);
  await Deno.writeTextFile(cfgPath, JSON.stringify({ ...json, hidden_size: 32, head_dim: undefined }));
  await rejectsWith(
    () => loadLlama(dir),
    /tensor "model\.embed_tokens\.weight" has shape \[31, 24\], but ".*config\.json" implies \[31, 32\]/,
  );
  await Deno.writeTextFile(cfgPath, JSON.stringify({ ...json, num_key_value_heads: 3 }));
  await rejectsWith(() => loadLlama(dir), /config\.json.*nHeads 4 is not divisible by nKvHeads 3/);
  await Deno.writeTextFile(cfgPath, JSON.stringify({ ...json, intermediate_size: undefined }));
  await rejectsWith(() => loadLlama(dir), /"intermediate_size" must be a positive integer, found undefined/);
  await Deno.writeTextFile(
    cfgPath,
    JSON.stringify({ ...json, rope_scaling: { type: "longrope", factor: 2 } }),
  );
  await rejectsWith(() => loadLlama(dir), /"rope_scaling\.rope_type" is "longrope"/);
  await Deno.writeTextFile(cfgPath, JSON.stringify({ ...json, model_type: "gpt2" }));
  await rejectsWith(
    () => loadLlama(dir),
    /"model_type" "gpt2" does not match "architectures" LlamaForCausalLM/,
  );
  await Deno.writeTextFile(cfgPath, JSON.stringify({ ...json, num_hidden_layers: 1 }));
  await rejectsWith(
    () => loadLlama(dir),
    /has tensors a llama model with this config does not: "model\.layers\.1\.[a-z_.]+" \(in ".*model\.safetensors"\)/,
  );
  await Deno.writeTextFile(cfgPath, JSON.stringify(json));

  const { tensors } = await readSafetensors(`${dir}/model.safetensors`);
  tensors.delete("model.layers.1.self_attn.o_proj.weight");
  await writeSafetensors(`${dir}/model.safetensors`, tensors);
  await rejectsWith(
    () => loadLlama(dir),
    /lacks tensor "model\.layers\.1\.self_attn\.o_proj\.weight" \[24, 24\]/,
  );
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  await Deno.writeFile(`${dir}/model.safetensors`, bytes.subarray(0, bytes.length - 100));
  await rejectsWith(() => loadLlama(dir), /model\.safetensors/);
  await Deno.remove(`${dir}/model.safetensors`);
  await rejectsWith(
    () => loadLlama(dir),
    /has neither model\.safetensors nor model\.safetensors\.index\.json/,
  );
  await Deno.remove(cfgPath);
  await rejectsWith(() => loadLlama(dir), /cannot read Hugging Face config ".*config\.json"/);
});

Deno.test("loaders refuse an option they do not know, naming it: a misspelt key loaded as if it were not given", async () => {
  const rng = new TestRng(36);
  const dir = await Deno.makeTempDir();
  const weights = randomWeights(config, rng);
  await saveHf(LlamaLM.fromWeights(config, weights), dir);
  await Deno.writeFile(`${dir}/m.bin`, serializeLlama2c(config, weights));
  const loaders: [string, (o: never) => Promise<unknown> | unknown][] = [
    ["loadLlama", (o) => loadLlama(dir, o)],
    ["loadLlama", (o) => loadLlama(`${dir}/m.bin`, o)],
    ["loadHf", (o) => loadHf(dir, o)],
    ["LlamaLM.fromLlama2c", (o) => LlamaLM.fromLlama2c(`${dir}/m.bin`, o)],
    ["LlamaLM.fromWeights", (o) => LlamaLM.fromWeights(config, weights, o)],
  ];
  for (const [where, load] of loaders) {
    // "bf16" was read as "auto" and "devcie" dropped: the model came in f32 on the default device.
    await refusedOptions(
      () => load({ weightDtype: "bf16", devcie: "cpu" } as never),
      new RegExp(
        `^${where}: option "weightDtype" must be one of "auto", "f16", "f32", got "bf16"; unknown option "devcie"$`,
      ),
    );
    // The options it knows still hold: every parameter on the CPU device, in f32.
    const model = await load({ device: "cpu", weightDtype: "f32" } as never) as LlamaLM;
    deepEqual(new Set(namedParameters(model).map(([, t]) => `${t.device} ${t.dtype}`)), new Set(["cpu f32"]));
  }
});

Deno.test("sharded HF checkpoints (model.safetensors.index.json) load like a single file", async () => {
  const rng = new TestRng(35);
  const weights = randomWeights(config, rng);
  const model = LlamaLM.fromWeights(config, weights);
  const dir = await Deno.makeTempDir();
  await saveHf(model, dir);
  const { tensors } = await readSafetensors(`${dir}/model.safetensors`);
  await Deno.remove(`${dir}/model.safetensors`);
  const names = [...tensors.keys()];
  const shards = [names.filter((_, i) => i % 2 === 0), names.filter((_, i) => i % 2 === 1)];
  const map: Record<string, string> = {};
  for (const [s, list] of shards.entries()) {
    const file = `model-0000${s + 1}-of-00002.safetensors`;
    await writeSafetensors(`${dir}/${file}`, Object.fromEntries(list.map((n) => [n, tensors.get(n)!])));
    for (const n of list) map[n] = file;
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: {}, weight_map: map }),
  );
  const back = await readHf(dir);
  for (const [name, w] of weights) deepEqual(back.weights.get(name)!.data, w.data, name);
  // A shard name that is not a file: refused by name, where ".." failed with a bare "Is a directory".
  for (const bad of ["..", "."]) {
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ weight_map: { ...map, [names[0]]: bad } }),
    );
    await rejectsWith(
      () => readHf(dir),
      new RegExp(
        `"${names[0].replaceAll(".", "\\.")}" maps to "${bad.replaceAll(".", "\\.")}", not a file name`,
      ),
    );
  }
  await rejectsWith(() => openSafetensors(dir), /safetensors file ".*": it is not a file/);
});

Deno.test("a sharded checkpoint whose index disagrees with its shards loads as transformers loads it or is refused by name", async () => {
  const rng = new TestRng(37);
  const weights = randomWeights(config, rng);
  const dir = await Deno.makeTempDir();
  await saveHf(LlamaLM.fromWeights(config, weights), dir);
  const { tensors } = await readSafetensors(`${dir}/model.safetensors`);
  await Deno.remove(`${dir}/model.safetensors`);
  const names = [...tensors.keys()];
  const files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
  const shardOf = new Map(names.map((n) => [n, files[rng.int(0, 1)]]));
  shardOf.set(names[0], files[0]).set(names[1], files[1]); // both shards hold a tensor
  for (const file of files) {
    const held = names.filter((n) => shardOf.get(n) === file);
    await Deno.writeFile(
      `${dir}/${file}`,
      serializeSafetensors(Object.fromEntries(held.map((n) => [n, tensors.get(n)!]))),
    );
  }
  const index = `${dir}/model.safetensors.index.json`;
  const writeIndex = (map: Map<string, string>) =>
    Deno.writeTextFile(index, JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(map) }));
  const loadsExactly = async (what: string) => {
    const back = await readHf(dir);
    for (const [name, w] of weights) deepEqual(back.weights.get(name)!.data, w.data, `${what}: ${name}`);
  };
  // transformers opens the shards weight_map names and takes each tensor from the shard that holds it; so does
  // tessera: an entry naming the other shard, a tensor the index leaves out, a name no shard holds that the model
  // does not use.
  const moved = names[rng.int(0, names.length - 1)];
  const other = shardOf.get(moved) === files[0] ? files[1] : files[0];
  await writeIndex(new Map(shardOf).set(moved, other));
  await loadsExactly(`"${moved}" listed in the other shard`);
  const left = names[rng.int(2, names.length - 1)];
  const without = new Map(shardOf);
  without.delete(left);
  await writeIndex(without);
  await loadsExactly(`"${left}" left out of the index`);
  await writeIndex(new Map(shardOf).set("model.layers.0.unused.weight", files[rng.int(0, 1)]));
  await loadsExactly("an index entry no shard holds");
  // A shard the index names but that is not there: transformers raises FileNotFoundError; refused, naming the
  // index and the shard.
  const gone = files[rng.int(0, 1)];
  const listed = names.filter((n) => shardOf.get(n) === gone);
  await writeIndex(shardOf);
  await Deno.rename(`${dir}/${gone}`, `${dir}/moved_away`);
  await rejectsWith(
    () => readHf(dir),
    new RegExp(
      `safetensors index ".*model\\.safetensors\\.index\\.json" names shard "${
        gone.replaceAll(".", "\\.")
      }" ` +
        `\\(for ${listed.length} tensors, e\\.g\\. "${
          listed[0].replaceAll(".", "\\.")
        }"\\), which cannot be opened`,
    ),
  );
  await Deno.rename(`${dir}/moved_away`, `${dir}/${gone}`);
  // A tensor the model needs that no shard holds: transformers initialises it at random with a warning; refused,
  // naming the shard the index names for it (stricter).
  const dropped = names[rng.int(2, names.length - 1)];
  const home = shardOf.get(dropped)!;
  const kept = names.filter((n) => n !== dropped && shardOf.get(n) === home);
  await Deno.writeFile(
    `${dir}/${home}`,
    serializeSafetensors(Object.fromEntries(kept.map((n) => [n, tensors.get(n)!]))),
  );
  await rejectsWith(
    () => readHf(dir),
    new RegExp(
      `lacks tensor "${dropped.replaceAll(".", "\\.")}" .*\\(its index ".*" names shard "${
        home.replaceAll(".", "\\.")
      }", which does not hold it\\)`,
    ),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("saveHf writes back the BOS id and the ids transformers' generate stops at", async () => {
  const rng = new TestRng(41);
  const src = await Deno.makeTempDir();
  const fixture = new URL("../fixtures/models/llama/", import.meta.url).pathname;
  for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(`${fixture}${f}`, `${src}/${f}`);
  // Random stop ids (one, or several as instruct checkpoints list them) in generation_config.json, which transformers
  // reads before config.json's eos_token_id, and a random BOS id in config.json.
  const stops = Array.from({ length: rng.int(1, 3) }, () => rng.int(0, 255));
  const bos = rng.int(0, 255);
  const json = JSON.parse(await Deno.readTextFile(`${src}/config.json`));
  await Deno.writeTextFile(`${src}/config.json`, JSON.stringify({ ...json, bos_token_id: bos }));
  await Deno.writeTextFile(`${src}/generation_config.json`, JSON.stringify({ eos_token_id: stops }));
  const out = await Deno.makeTempDir();
  await saveHf(await loadLlama(src, { device: "cpu" }), out);
  deepEqual(await hfEosTokenIds(out), await hfEosTokenIds(src), `stop ids ${JSON.stringify(stops)}`);
  equal(JSON.parse(await Deno.readTextFile(`${out}/config.json`)).bos_token_id, bos);
  // A checkpoint whose config names none (the Qwen2 fixture) is saved naming none either.
  const qwen = new URL("../fixtures/models/qwen2", import.meta.url).pathname;
  const qout = await Deno.makeTempDir();
  await saveHf(await loadLlama(qwen, { device: "cpu" }), qout);
  const saved = JSON.parse(await Deno.readTextFile(`${qout}/config.json`));
  equal(saved.eos_token_id ?? null, null);
  equal(saved.bos_token_id ?? null, null);
  for (const d of [src, out, qout]) await Deno.remove(d, { recursive: true });
});

Deno.test("hfEosTokenIds refuses an id beyond the safe integers, as llamaConfigFromHf does, naming the file", async () => {
  const rng = new TestRng(43);
  const dir = await Deno.makeTempDir();
  const fixture = new URL("../fixtures/models/llama/", import.meta.url).pathname;
  for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(`${fixture}${f}`, `${dir}/${f}`);
  // An integer-valued id past 2^53 (JSON numbers read as doubles): no token id, and config.json's reader refuses it.
  const unsafe = Number.MAX_SAFE_INTEGER + 1 + 2 ** rng.int(1, 20) * 2;
  const file = `${dir}/generation_config.json`;
  await Deno.writeTextFile(file, `{"eos_token_id": [${rng.int(0, 255)}, ${BigInt(unsafe)}]}`);
  const named = (e: Error) => e.message.includes(`"${file}": eos_token_id must be a token id`);
  await rejects(() => hfEosTokenIds(dir), named);
  await rejects(() => loadLlama(dir, { device: "cpu" }), named);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("saveHf names no token ids for a Llama checkpoint that names none, and llama2.c's 1 and 2 for its models", async () => {
  // transformers' generate on a config.json without eos_token_id stops nowhere (LlamaConfig's default 2 is not used
  // by generate); the saved checkpoint wrote bos 1 and eos 2 for every llama-family model naming none, so its
  // generate stopped at token 2.
  const rng = new TestRng(44);
  const src = await Deno.makeTempDir();
  const fixture = new URL("../fixtures/models/llama/", import.meta.url).pathname;
  await Deno.copyFile(`${fixture}model.safetensors`, `${src}/model.safetensors`);
  const { bos_token_id: _b, eos_token_id: _e, ...json } = JSON.parse(
    await Deno.readTextFile(`${fixture}config.json`),
  );
  await Deno.writeTextFile(`${src}/config.json`, JSON.stringify(json));
  const out = await Deno.makeTempDir();
  await saveHf(await loadLlama(src, { device: "cpu" }), out);
  deepEqual(await hfEosTokenIds(src), []);
  deepEqual(await hfEosTokenIds(out), []);
  const saved = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  equal(saved.bos_token_id ?? null, null);
  // A llama2.c file's model (its tokenizers have BOS 1 and EOS 2) is saved with them.
  const weights = randomWeights(config, rng);
  await Deno.writeFile(`${src}/m.bin`, serializeLlama2c({ ...config, sharedClassifier: false }, weights));
  const fromBin = await Deno.makeTempDir();
  await saveHf(await LlamaLM.fromLlama2c(`${src}/m.bin`, { device: "cpu" }), fromBin);
  const binJson = JSON.parse(await Deno.readTextFile(`${fromBin}/config.json`));
  deepEqual([binJson.bos_token_id, binJson.eos_token_id], [1, 2]);
  for (const d of [src, out, fromBin]) await Deno.remove(d, { recursive: true });
});
