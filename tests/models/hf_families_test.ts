/**
 * Hugging Face model families against golden logits from transformers (tests/fixtures/models, written by
 * tools/hf_fixtures.py): Llama (default, llama3 and legacy linear RoPE, every bias, explicit head_dim, bf16 in two
 * shards), Qwen2, Qwen3 and Mistral, with sliding windows (Mistral's on every layer, Qwen2's on some). Tolerances: 1e-4 of the largest |logit| for float32 files (float32 arithmetic
 * in a different order on a 2-layer model differs by ~1e-6 relative), 1e-3 for the bf16 file read into f16
 * storage (bf16 values of magnitude 2^-14 or more are exact in f16, smaller ones within 2^-25 of it, and activations
 * are then rounded where transformers keeps float32).
 * Configs that transformers would read differently are refused with the key named.
 */
import { equal, ok, throws } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { readSafetensors, toFloat32, toInt32, writeSafetensors } from "../../lib/io/safetensors.ts";
import { hfConfigFromLlama, llamaConfigFromHf, loadHf, readHf, saveHf } from "../../lib/models/hf.ts";
import { hfName } from "../../lib/models/names.ts";
import { loadLlama } from "../../lib/models/load.ts";
import { LlamaLM, llamaParameterShapes } from "../../lib/models/llama.ts";
import { getWebGPU } from "../../lib/runtime/realize.ts";
import {
  AdamW,
  attachLora,
  functionalCall,
  LORA_TRAINABLE,
  namedParameters,
  type ParamDict,
  valueAndGrad,
} from "../../mod.ts";
import { relError } from "../_helpers.ts";

const FIXTURES = new URL("../fixtures/models/", import.meta.url).pathname;

async function expected(name: string): Promise<{ ids: Int32Array; logits: Float32Array; shape: number[] }> {
  const { tensors } = await readSafetensors(`${FIXTURES}${name}/expected.safetensors`);
  const logits = tensors.get("logits")!;
  return { ids: toInt32(tensors.get("input_ids")!), logits: toFloat32(logits), shape: logits.shape };
}

const CASES: [string, string, number][] = [
  ["llama", "llama", 1e-4],
  ["llama3", "llama", 1e-4],
  ["llama_linear_legacy", "llama", 1e-4],
  ["llama_bias_bf16", "llama", 1e-3],
  ["qwen2", "qwen2", 1e-4],
  ["qwen3", "qwen3", 1e-4],
  ["mistral", "mistral", 1e-4],
  ["mistral_sliding", "mistral", 1e-4],
  ["qwen2_sliding", "qwen2", 1e-4],
];

for (const [name, family, tol] of CASES) {
  Deno.test(`HF ${name}: logits match transformers within ${tol} of the largest logit`, async () => {
    const model = await loadLlama(`${FIXTURES}${name}`);
    equal(model.config.family, family);
    const ref = await expected(name);
    const ids = tensor(ref.ids, { shape: [2, 16], dtype: "i32" }) as Tensor<Shape, "i32">;
    const logits = await model.forward(ids).data() as Float32Array;
    const err = relError(logits, ref.logits);
    ok(err < tol, `${name}: relative error ${err.toExponential(2)} above ${tol}`);
  });
}

Deno.test("HF families on the CPU device: Qwen3 and the bf16 Llama match transformers there too", async () => {
  for (const [name, tol] of [["qwen3", 1e-4], ["llama_bias_bf16", 1e-3]] as const) {
    const model = await loadLlama(`${FIXTURES}${name}`, { device: "cpu" });
    const ref = await expected(name);
    const ids = tensor(ref.ids, { shape: [2, 16], dtype: "i32", device: "cpu" }) as Tensor<Shape, "i32">;
    const err = relError(await model.forward(ids).data() as Float32Array, ref.logits);
    ok(err < tol, `${name} on cpu: relative error ${err.toExponential(2)} above ${tol}`);
  }
});

Deno.test("HF sliding windows on the CPU and WebGPU devices match transformers there too", async () => {
  for (const device of ["cpu", "webgpu"] as const) {
    for (const name of ["mistral_sliding", "qwen2_sliding"]) {
      const model = await loadLlama(`${FIXTURES}${name}`, { device });
      const ref = await expected(name);
      const ids = tensor(ref.ids, { shape: [2, 16], dtype: "i32", device }) as Tensor<Shape, "i32">;
      const err = relError(await model.forward(ids).data() as Float32Array, ref.logits);
      ok(err < 1e-4, `${name} on ${device}: relative error ${err.toExponential(2)} above 1e-4`);
    }
  }
});

Deno.test("HF sliding windows: save → transformers config → read keeps the window and the sliding layers", async () => {
  for (
    const [name, window, layers] of [["mistral_sliding", 5, [true, true]], ["qwen2_sliding", 5, [
      false,
      true,
    ]]] as const
  ) {
    const { config, weights } = await readHf(`${FIXTURES}${name}`);
    equal(config.slidingWindow, window);
    equal(JSON.stringify(config.slidingLayers), JSON.stringify(layers));
    const dir = await Deno.makeTempDir();
    await saveHf(LlamaLM.fromWeights(config, weights), dir);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    equal(json.sliding_window, window);
    if (name === "qwen2_sliding") {
      equal(json.use_sliding_window, true);
      equal(JSON.stringify(json.layer_types), JSON.stringify(["full_attention", "sliding_attention"]));
    }
    const again = await readHf(dir);
    equal(again.config.slidingWindow, window);
    equal(JSON.stringify(again.config.slidingLayers), JSON.stringify(layers));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HF bf16 checkpoint: matrices stored as f16 on an adapter with shader-f16, f32 on request", async () => {
  const hasF16 = (await getWebGPU()).hasF16;
  const auto = await loadHf(`${FIXTURES}llama_bias_bf16`);
  const wq = (auto.layers[0].attention.wq as unknown as { weight: Tensor }).weight;
  equal(wq.dtype, hasF16 ? "f16" : "f32");
  equal(auto.layers[0].attention_norm.weight.dtype, "f32");
  const full = await loadHf(`${FIXTURES}llama_bias_bf16`, { weightDtype: "f32" });
  equal((full.layers[0].attention.wq as unknown as { weight: Tensor }).weight.dtype, "f32");
  // A float32 file stays float32 under "auto".
  const f32 = await loadHf(`${FIXTURES}qwen2`);
  equal((f32.layers[0].attention.wq as unknown as { weight: Tensor }).weight.dtype, "f32");
});

Deno.test("HF readHf and loadHf build the same model; save → read round-trips every family exactly", async () => {
  for (const name of ["qwen2", "qwen3", "llama_bias_bf16", "llama3"]) {
    const { config, weights } = await readHf(`${FIXTURES}${name}`);
    const dir = await Deno.makeTempDir();
    await saveHf(LlamaLM.fromWeights(config, weights), dir);
    const again = await readHf(dir);
    equal(JSON.stringify(again.config), JSON.stringify(llamaConfigFromHf(hfConfigFromLlama(config))));
    for (const [k, w] of weights) {
      const v = again.weights.get(k)!;
      ok(
        v !== undefined && v.data.every((x, i) => x === w.data[i]),
        `${name}: ${k} changed in the round trip`,
      );
    }
    // transformers reads the saved config.json as the same model: the family's own keys and rope settings.
    const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    equal(
      json.architectures[0],
      JSON.parse(await Deno.readTextFile(`${FIXTURES}${name}/config.json`)).architectures[0],
    );
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HF tied embeddings with an lm_head stored as well: the stored head when it differs, as transformers", async () => {
  // The untied Llama fixture, declared tied: transformers keeps the stored (different) head, so its logits are the
  // fixture's. With the head replaced by the embeddings, the model is tied.
  const dir = await Deno.makeTempDir();
  const json = await fixtureConfig("llama");
  equal(json.tie_word_embeddings, false);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...json, tie_word_embeddings: true }));
  await Deno.copyFile(`${FIXTURES}llama/model.safetensors`, `${dir}/model.safetensors`);
  const model = await loadLlama(dir, { device: "cpu" });
  equal(model.config.sharedClassifier, false);
  const ref = await expected("llama");
  const ids = tensor(ref.ids, { shape: [2, 16], dtype: "i32", device: "cpu" }) as Tensor<Shape, "i32">;
  const err = relError(await model.forward(ids).data() as Float32Array, ref.logits);
  ok(err < 1e-4, `relative error ${err.toExponential(2)}`);
  const { tensors } = await readSafetensors(`${dir}/model.safetensors`);
  tensors.set("lm_head.weight", tensors.get("model.embed_tokens.weight")!);
  await writeSafetensors(`${dir}/model.safetensors`, tensors);
  equal((await readHf(dir)).config.sharedClassifier, true);
  await Deno.remove(dir, { recursive: true });
});

/** A valid base config of each family, edited per case. */
Deno.test("HF pad_token_id: the pad row of the embedding gets transformers' gradient (none from the lookup)", async () => {
  // llama_pad: pad_token_id 3 at every fourth input position, tied classifier; the reference is the gradient of the
  // mean cross-entropy with respect to transformers' embedding table (nn.Embedding with padding_idx 3).
  const model = await loadLlama(`${FIXTURES}llama_pad`, { device: "cpu" });
  equal(model.config.padTokenId, 3);
  const { tensors } = await readSafetensors(`${FIXTURES}llama_pad/expected.safetensors`);
  const shape = tensors.get("input_ids")!.shape;
  const ids = tensor(toInt32(tensors.get("input_ids")!), { shape, dtype: "i32", device: "cpu" }) as Tensor<
    Shape,
    "i32"
  >;
  const targets = tensor(toInt32(tensors.get("targets")!), { shape, dtype: "i32", device: "cpu" });
  const params = Object.fromEntries(namedParameters(model)) as ParamDict;
  const { value, grads } = valueAndGrad((p: ParamDict) =>
    functionalCall(model, p, () => model.loss(ids, targets as never))
  )(params);
  const logits = await model.forward(ids).data() as Float32Array;
  ok(relError(logits, toFloat32(tensors.get("logits")!)) < 1e-4, "logits");
  ok(Number.isFinite(await value.item()));
  const got = await (grads as Record<string, Tensor>)["tok_embeddings.weight"].data() as Float32Array;
  const ref = toFloat32(tensors.get("embed_grad")!);
  // float32 sums in another order over 32 positions: ~1e-6 of the largest entry.
  const err = relError(got, ref);
  ok(err < 1e-4, `embedding gradient: relative error ${err.toExponential(2)} above 1e-4`);
  const dim = model.config.dim;
  const row = (g: Float32Array) => Math.hypot(...g.subarray(3 * dim, 4 * dim));
  ok(Math.abs(row(got) - row(ref)) <= 1e-4 * row(ref), `pad row |g| ${row(got)}, transformers ${row(ref)}`);
  // Saved back as it came; negative ids count from the end of the table (torch's rule); outside it, refused.
  equal(hfConfigFromLlama(model.config).pad_token_id, 3);
  const c = await fixtureConfig("llama_pad");
  c.pad_token_id = -1;
  equal(llamaConfigFromHf(c).padTokenId, (c.vocab_size as number) - 1);
  for (const bad of [c.vocab_size, -(c.vocab_size as number) - 1, 2.5, "3", [3]]) {
    c.pad_token_id = bad;
    throws(() => llamaConfigFromHf(c), /"pad_token_id" is .*; it must be a token id below vocab_size 256/);
  }
});

async function fixtureConfig(name: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${FIXTURES}${name}/config.json`));
}

Deno.test("HF configs transformers would read differently are refused with the key named", async () => {
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    ["llama", (c) => (c.rope_scaling = { type: "longrope", factor: 2 }), /rope_scaling\.rope_type.*longrope/],
    ["llama", (c) => (c.partial_rotary_factor = 0.5), /partial_rotary_factor.*0\.5/],
    ["llama", (c) => (c.hidden_act = "gelu"), /hidden_act.*gelu/],
    ["llama", (c) => (c.attention_dropout = 0.1), /attention_dropout/],
    ["llama", (c) => (c.quantization_config = { bits: 4 }), /quantization_config/],
    ["llama", (c) => (c.rope_parameters = { rope_type: "linear", rope_theta: 1e4 }), /factor.*undefined/],
    ["llama", (c) => (c.architectures = ["GPT2LMHeadModel"]), /architectures.*GPT2LMHeadModel/],
    ["llama", (c) => (c.model_type = "qwen2"), /model_type.*does not match/],
    [
      "mistral",
      (c) => (c.sliding_window = 0),
      /"sliding_window" is 0; a sliding window must be a positive integer/,
    ],
    [
      "mistral",
      (c) => (c.sliding_window = 2.5),
      /"sliding_window" is 2\.5; a sliding window must be a positive/,
    ],
    [
      "qwen2",
      (c) => Object.assign(c, { use_sliding_window: true, sliding_window: "32" }),
      /"sliding_window" is "32"; a sliding window must be a positive integer/,
    ],
    // Sliding layers without a window: transformers fails on its first forward.
    [
      "qwen3",
      (c) => (c.layer_types = ["full_attention", "sliding_attention"]),
      /"layer_types" is .*sliding layers need a window, and there is none \(use_sliding_window false/,
    ],
    [
      "qwen2_sliding",
      (c) => (c.layer_types = ["sliding_attention"]),
      /"layer_types" is \["sliding_attention"\]; expected 2 entries/,
    ],
    [
      "qwen2_sliding",
      (c) => (c.layer_types = ["full_attention", "chunked_attention"]),
      /"layer_types" is .*"chunked_attention".*each "full_attention" or "sliding_attention"/,
    ],
    [
      "qwen2_sliding",
      (c) => {
        delete c.layer_types;
        c.max_window_layers = 1.5;
      },
      /"max_window_layers" is 1\.5; it must be an integer/,
    ],
    ["qwen2", (c) => (c.attention_bias = false), /attention_bias/],
    // A Mistral config with layer_types is Ministral's to transformers' Auto classes (a window on the sliding
    // layers only), and MistralForCausalLM ignores the list: refused where the two differ.
    [
      "mistral_sliding",
      (c) => (c.layer_types = ["sliding_attention", "full_attention"]),
      /"layer_types" is \["sliding_attention","full_attention"\]; transformers' AutoModelForCausalLM reads it as Ministral's/,
    ],
    [
      "mistral_sliding",
      (c) => (c.layer_types = ["full_attention", "full_attention"]),
      /"layer_types" is \["full_attention","full_attention"\]; .*sliding_window 5 on every layer/,
    ],
    [
      "mistral",
      (c) => (c.layer_types = ["sliding_attention", "sliding_attention"]),
      /"layer_types" is .*sliding_window null on every layer/,
    ],
    [
      "qwen3",
      (c) => (c.rope_parameters = { full_attention: { rope_type: "default" } }),
      /nested by layer type/,
    ],
  ];
  for (const [base, edit, re] of cases) {
    const c = await fixtureConfig(base);
    edit(c);
    let message = "";
    try {
      llamaConfigFromHf(c, "x/config.json");
    } catch (err) {
      message = (err as Error).message;
    }
    ok(re.test(message), `${base} edited: expected ${re}, got "${message}"`);
  }
});

Deno.test("HF config: legacy spellings and family defaults read as transformers reads them", async () => {
  // rope_scaling wins over rope_parameters; the type may be spelt "type"; theta falls back to the top level.
  const c = await fixtureConfig("llama");
  Object.assign(c, {
    rope_theta: 5e5,
    rope_parameters: { rope_type: "default", rope_theta: 1e4 },
    rope_scaling: { type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4 },
  });
  const cfg = llamaConfigFromHf(c);
  equal(cfg.ropeTheta, 5e5);
  equal(cfg.ropeScaling?.type, "llama3");
  equal(cfg.ropeScaling?.type === "llama3" && cfg.ropeScaling.originalMaxPositionEmbeddings, 128);
  // Qwen3's head_dim defaults to 128 and its kv heads to 32 when the keys are absent.
  const q = await fixtureConfig("qwen3");
  delete q.head_dim;
  delete q.num_key_value_heads;
  q.num_attention_heads = 32;
  q.hidden_size = 64;
  const qc = llamaConfigFromHf(q);
  equal(qc.headDim, 128);
  equal(qc.nKvHeads, 32);
  // An explicit null: one kv head per query head (Llama, Qwen2, Qwen3; Mistral's config refuses it); head_dim
  // hidden / heads (not Qwen3, whose config refuses it, nor Qwen2, whose attention fails on it); rope_theta refused
  // (transformers fails on it).
  for (const family of ["llama", "qwen2", "qwen3"]) {
    const n = await fixtureConfig(family);
    n.num_key_value_heads = null;
    equal(llamaConfigFromHf(n).nKvHeads, n.num_attention_heads, `${family}: null num_key_value_heads`);
  }
  const refusedNull: [string, string, RegExp][] = [
    ["mistral", "num_key_value_heads", /"num_key_value_heads" must be a positive integer, found null/],
    ["qwen3", "head_dim", /"head_dim" must be a positive integer, found null/],
    ["qwen2", "head_dim", /"head_dim" must be a positive integer, found null/],
    ["llama", "rope_theta", /"rope_theta" must be a positive number, found null/],
    ["llama", "max_position_embeddings", /"max_position_embeddings" must be a positive integer, found null/],
    // transformers' config classes refuse these nulls too; read as the defaults they changed the model silently.
    ["llama", "rms_norm_eps", /"rms_norm_eps" is null; it must be a positive number/],
    ["qwen3", "rms_norm_eps", /"rms_norm_eps" is null; it must be a positive number/],
    ["llama", "hidden_act", /"hidden_act" is null; only "silu" is implemented/],
    ["llama", "tie_word_embeddings", /"tie_word_embeddings" must be true or false, found null/],
    ["llama", "attention_bias", /"attention_bias" must be true or false, found null/],
    ["llama", "mlp_bias", /"mlp_bias" must be true or false, found null/],
    ["qwen3", "attention_bias", /"attention_bias" must be true or false, found null/],
    ["qwen2", "use_sliding_window", /"use_sliding_window" must be true or false, found null/],
  ];
  for (const [family, key, re] of refusedNull) {
    const n = await fixtureConfig(family);
    delete n.rope_parameters;
    n[key] = null;
    throws(() => llamaConfigFromHf(n), re, `${family}: null ${key}`);
  }
  const l = await fixtureConfig("llama");
  Object.assign(l, { head_dim: null, hidden_size: 48, num_attention_heads: 4, num_key_value_heads: 2 });
  equal(llamaConfigFromHf(l).headDim, 12);
  // Mistral without a window key slides over transformers' default 4096 positions on every layer.
  const m = await fixtureConfig("mistral");
  delete m.sliding_window;
  m.max_position_embeddings = 8192;
  const mc = llamaConfigFromHf(m);
  equal(mc.slidingWindow, 4096);
  equal(JSON.stringify(mc.slidingLayers), "[true,true]");
  // transformers' Llama classes read no window key and Mistral's not use_sliding_window: their logits are the same
  // with and without them (checked against transformers 5.18), so they are ignored.
  for (
    const edit of [{ sliding_window: 3 }, {
      use_sliding_window: true,
      sliding_window: 3,
      layer_types: ["sliding_attention", "full_attention"],
    }]
  ) {
    const ll = await fixtureConfig("llama");
    Object.assign(ll, edit);
    equal(llamaConfigFromHf(ll).slidingWindow, undefined, JSON.stringify(edit));
  }
  for (const flag of [true, false]) {
    const mm = await fixtureConfig("mistral");
    Object.assign(mm, { sliding_window: 5, use_sliding_window: flag });
    equal(llamaConfigFromHf(mm).slidingWindow, 5, `mistral, use_sliding_window ${flag}`);
  }
  // A Mistral layer_types that Ministral reads as Mistral does (null, or every layer sliding under a window).
  for (const types of [null, ["sliding_attention", "sliding_attention"]]) {
    const mm = await fixtureConfig("mistral_sliding");
    mm.layer_types = types;
    const mc = llamaConfigFromHf(mm);
    equal(JSON.stringify([mc.slidingWindow, mc.slidingLayers]), "[5,[true,true]]", JSON.stringify(types));
  }
  // Qwen: the window counts only with use_sliding_window (a window covering the whole context is kept, and is
  // full attention); without layer_types the layers from max_window_layers (default 28) on slide.
  const windows: [Record<string, unknown>, number | undefined, boolean[] | undefined][] = [
    [{ use_sliding_window: false, sliding_window: 5, max_window_layers: 0 }, undefined, undefined],
    [{ use_sliding_window: true, sliding_window: 5, max_window_layers: 1 }, 5, [false, true]],
    [{ use_sliding_window: true, sliding_window: 512, max_window_layers: 0 }, 512, [true, true]],
    [{ use_sliding_window: true, max_window_layers: 0 }, 4096, [true, true]],
    [{ use_sliding_window: true, sliding_window: 5 }, undefined, undefined], // max_window_layers 28 > 2 layers
    [{ use_sliding_window: true, sliding_window: null, max_window_layers: 0 }, undefined, undefined],
    [
      { use_sliding_window: true, sliding_window: 5, layer_types: ["sliding_attention", "full_attention"] },
      5,
      [
        true,
        false,
      ],
    ],
  ];
  for (const [edit, window, layers] of windows) {
    const q = await fixtureConfig("qwen2");
    delete q.layer_types;
    delete q.sliding_window;
    Object.assign(q, edit);
    const qc = llamaConfigFromHf(q);
    equal(qc.slidingWindow, window, JSON.stringify(edit));
    equal(JSON.stringify(qc.slidingLayers), JSON.stringify(layers), JSON.stringify(edit));
  }
});

Deno.test("HF loading refuses a tensor larger than the device's largest binding before reading any data", async () => {
  const be = await getWebGPU();
  const dir = await Deno.makeTempDir();
  const json = await fixtureConfig("llama");
  json.vocab_size = Math.floor(be.maxBufferBytes / (4 * 32)) + 1; // the embedding alone exceeds the binding
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(json));
  // A valid safetensors header for every tensor of that config; the data section is a sparse hole (never read).
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const { name, shape } of llamaParameterShapes(llamaConfigFromHf(json))) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[hfName(name)!] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const text = new TextEncoder().encode(JSON.stringify(header));
  const head = new Uint8Array(8 + text.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(text.length), true);
  head.set(text, 8);
  const path = `${dir}/model.safetensors`;
  await Deno.writeFile(path, head);
  await Deno.truncate(path, head.length + offset);
  const before = be.stats().liveBytes;
  let message = "";
  try {
    await loadHf(dir, { device: "webgpu" });
  } catch (err) {
    message = (err as Error).message;
  }
  ok(
    message.includes(`"model.embed_tokens.weight" [${json.vocab_size}, 32]`) &&
      message.includes(`${be.maxBufferBytes} bytes`),
    message,
  );
  equal(be.stats().liveBytes, before);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("HF models: LoRA targets by Hugging Face or tessera names; PiSSA on an f16-stored base trains", async () => {
  const model = await loadHf(`${FIXTURES}llama_bias_bf16`);
  const ref = await expected("llama_bias_bf16");
  const ids = tensor(ref.ids, { shape: [2, 16], dtype: "i32" }) as Tensor<Shape, "i32">;
  const before = await model.forward(ids).data() as Float32Array;
  const { layers } = await attachLora(model, {
    targetModules: ["q_proj", "v_proj", "w1"],
    rank: 4,
    alpha: 8,
    init: "pissa",
    initOptions: { exact: true },
  });
  equal(
    layers.join(),
    "layers.0.attention.wq,layers.0.attention.wv,layers.0.feed_forward.w1," +
      "layers.1.attention.wq,layers.1.attention.wv,layers.1.feed_forward.w1",
  );
  // PiSSA moves the top-r part into B·A: the output is unchanged up to the f16 rounding of the residual.
  const after = await model.forward(ids).data() as Float32Array;
  const err = relError(after, before);
  ok(err < 2e-3, `PiSSA on an f16 base changed the logits by ${err.toExponential(2)}`);
  const opt = new AdamW(model, { lr: 1e-2, trainable: LORA_TRAINABLE });
  const targets = tensor(ref.ids.map((_, i) => ref.ids[(i + 1) % ref.ids.length]), {
    shape: [2, 16],
    dtype: "i32",
  });
  const losses: number[] = [];
  for (let step = 0; step < 4; step++) {
    const lossOf = (p: ParamDict) => functionalCall(model, p, () => model.loss(ids, targets as never));
    const { value, grads } = valueAndGrad(lossOf)(opt.params);
    await opt.step(grads, { realize: [value] });
    losses.push(await value.item());
  }
  ok(losses.every(Number.isFinite) && losses[3] < losses[0], `losses ${losses}`);
  await rejectsWithMessage(
    () => attachLora(model, { targetModules: ["nope_proj"], rank: 2 }),
    /no Linear module matches targetModules nope_proj/,
  );
});

async function rejectsWithMessage(fn: () => Promise<unknown>, re: RegExp): Promise<void> {
  let message = "";
  try {
    await fn();
  } catch (err) {
    message = (err as Error).message;
  }
  ok(re.test(message), `expected ${re}, got "${message}"`);
}

Deno.test("HF loading uploads every tensor as it is read (the host copies can go)", async () => {
  const be = await getWebGPU();
  const before = be.stats().liveBytes;
  const model = await loadHf(`${FIXTURES}llama_bias_bf16`, { device: "webgpu" });
  const bytes = namedParameters(model).reduce((a, [, t]) => a + t.size * (t.dtype === "f16" ? 2 : 4), 0);
  ok(
    be.stats().liveBytes - before >= bytes,
    `live bytes grew by ${be.stats().liveBytes - before} < ${bytes}`,
  );
});
