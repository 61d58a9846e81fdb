/**
 * YaRN and dynamic-NTK RoPE (`rope_type: "yarn"`, `"dynamic"`) from Hugging Face configs against transformers
 * (tests/fixtures/models/*yarn*, llama_dynamic, written by tools/hf_fixtures.py): logits on every device, the
 * inverse frequencies and the attention factor that transformers' rotary embedding held, how each key of the dict
 * is read, the refusals, and the saveHf round trip.
 * Logit tolerance as the other HF fixtures: 1e-4 of the largest |logit| (float32 in a different order).
 */
import { equal, ok, throws } from "node:assert/strict";
import { type DeviceName, type Shape, type Tensor, tensor } from "../../mod.ts";
import { readSafetensors, toFloat32, toInt32 } from "../../lib/io/safetensors.ts";
import { hfConfigFromLlama, llamaConfigFromHf, readHf, saveHf } from "../../lib/models/hf.ts";
import { loadLlama } from "../../lib/models/load.ts";
import { LlamaLM } from "../../lib/models/llama.ts";
import { ropeAttentionFactor, ropeInverseFrequencies, ropeTables } from "../../lib/nn/attention.ts";
import { relError, TEST_SEED, TestRng } from "../_helpers.ts";

const FIXTURES = new URL("../fixtures/models/", import.meta.url).pathname;
const YARN = ["qwen3_yarn", "qwen2_yarn_legacy", "llama_yarn_attention"];
const SCALED = [...YARN, "llama_dynamic"];

async function expected(name: string) {
  const { tensors, metadata } = await readSafetensors(`${FIXTURES}${name}/expected.safetensors`);
  return {
    ids: toInt32(tensors.get("input_ids")!),
    logits: toFloat32(tensors.get("logits")!),
    invFreq: toFloat32(tensors.get("rope_inv_freq")!),
    attentionScaling: Number(metadata.rope_attention_scaling),
  };
}

async function config(name: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${FIXTURES}${name}/config.json`));
}

async function logits(model: LlamaLM, ids: Int32Array, device: DeviceName): Promise<Float32Array> {
  const t = tensor(ids, { shape: [2, 16], dtype: "i32", device }) as Tensor<Shape, "i32">;
  return await model.forward(t).data() as Float32Array;
}

for (const device of ["cpu", "wasm", "webgpu"] as DeviceName[]) {
  Deno.test(`HF YaRN and dynamic checkpoints on ${device}: logits match transformers within 1e-4`, async () => {
    for (const name of SCALED) {
      const model = await loadLlama(`${FIXTURES}${name}`, { device });
      equal(model.config.ropeScaling?.type, name === "llama_dynamic" ? "dynamic" : "yarn");
      const ref = await expected(name);
      const err = relError(await logits(model, ref.ids, device), ref.logits);
      ok(err < 1e-4, `${name} on ${device}: relative error ${err.toExponential(2)}`);
    }
  });
}

Deno.test("HF YaRN: inverse frequencies, attention factor and tables are transformers' own", async () => {
  const rng = new TestRng(31);
  for (const name of YARN) {
    const c = llamaConfigFromHf(await config(name));
    const ref = await expected(name);
    const inv = ropeInverseFrequencies(c.headDim!, c.ropeTheta, c.ropeScaling);
    // torch's float32 pow can differ from the correctly rounded one by one unit in the last place (2^-23 relative).
    ok(relError(inv, ref.invFreq) <= 2 ** -23, `${name}: ${inv} vs ${ref.invFreq}`);
    // The fixtures hold frequencies on both sides of the ramp and inside it.
    const plain = ropeInverseFrequencies(c.headDim!, c.ropeTheta);
    const kept = ref.invFreq.map((x, i) => x / plain[i]);
    ok(kept[0] === 1 && kept.some((k) => k > 0.3 && k < 0.9), `${name}: ${kept}`);
    ok(kept.some((k) => Math.abs(k - 1 / c.ropeScaling!.factor) < 1e-6), `${name}: ${kept}`);
    equal(ropeAttentionFactor(c.ropeScaling), ref.attentionScaling, name);
    ok(ref.attentionScaling !== 1, name);
    // Table entries: float32 cos / sin of the float32 angle, times the attention factor in float32 (one rounding
    // each; the tolerance allows one float32 unit of cos / sin beside the product's).
    const length = 64;
    const { cos, sin } = ropeTables(c.headDim!, length, {
      theta: c.ropeTheta,
      scaling: c.ropeScaling,
      device: "cpu",
    });
    const [cs, sn] = [await cos.data(), await sin.data()];
    const half = c.headDim! / 2;
    for (let k = 0; k < 32; k++) {
      const p = rng.int(0, length - 1), i = rng.int(0, half - 1);
      const angle = Math.fround(p * ref.invFreq[i]);
      const g = Math.fround(ref.attentionScaling);
      for (
        const [got, want] of [[cs[p * half + i], Math.cos(angle) * g], [
          sn[p * half + i],
          Math.sin(angle) * g,
        ]]
      ) {
        ok(
          Math.abs(got - want) <= 2 ** -22 * g,
          `${name} [${p}, ${i}] (seed ${TEST_SEED}): ${got} vs ${want}`,
        );
      }
    }
  }
});

Deno.test("HF YaRN config: absent, null and zero keys read as transformers reads them", async () => {
  const base = await config("qwen3_yarn");
  const scaling = (rope: Record<string, unknown>, top: Record<string, unknown> = {}) =>
    llamaConfigFromHf({ ...base, ...top, rope_parameters: rope }).ropeScaling;
  const rope = { rope_type: "yarn", rope_theta: 1e4, factor: 4, original_max_position_embeddings: 32 };
  const want = {
    type: "yarn",
    factor: 4,
    originalMaxPositionEmbeddings: 32,
    betaFast: 32,
    betaSlow: 1,
    truncate: true,
  };
  equal(JSON.stringify(scaling(rope)), JSON.stringify(want));
  // factor null: max_position_embeddings / original (128 / 32).
  equal(scaling({ ...rope, factor: null })?.factor, 128 / 32);
  // No original in the dict: max_position_embeddings; a top-level key wins over the dict's.
  equal(
    (scaling({ ...rope, original_max_position_embeddings: undefined }) as typeof want)
      .originalMaxPositionEmbeddings,
    128,
  );
  equal(
    (scaling(rope, { original_max_position_embeddings: 64 }) as typeof want).originalMaxPositionEmbeddings,
    64,
  );
  // Betas 0 or null are the defaults; truncate null is false (transformers tests its truth).
  equal(JSON.stringify(scaling({ ...rope, beta_fast: 0, beta_slow: null })), JSON.stringify(want));
  equal((scaling({ ...rope, truncate: null }) as typeof want).truncate, false);
  // attention_factor wins over mscale; mscale counts only with a non-zero mscale_all_dim; unknown keys are ignored.
  equal(ropeAttentionFactor(scaling({ ...rope, attention_factor: 0.5, mscale: 1, mscale_all_dim: 2 })), 0.5);
  equal(ropeAttentionFactor(scaling({ ...rope, mscale: 0.7, mscale_all_dim: 0 })), 0.1 * Math.log(4) + 1);
  equal(
    ropeAttentionFactor(scaling({ ...rope, mscale: 0.7, mscale_all_dim: 0.5 })),
    (0.1 * 0.7 * Math.log(4) + 1) / (0.1 * 0.5 * Math.log(4) + 1),
  );
  equal(JSON.stringify(scaling({ ...rope, something_else: 3 })), JSON.stringify(want));
});

Deno.test("HF YaRN config: values transformers rejects or warns are invalid are refused with the key and value", async () => {
  const base = await config("qwen3_yarn");
  const rope = { rope_type: "yarn", rope_theta: 1e4, factor: 4, original_max_position_embeddings: 32 };
  const cases: [Record<string, unknown>, Record<string, unknown>, RegExp][] = [
    [{ ...rope, factor: 0.5 }, {}, /"rope_parameters\.factor" is 0\.5; YaRN's factor must be at least 1/],
    [{ ...rope, factor: undefined }, {}, /"rope_parameters" has rope_type "yarn" but no "factor"/],
    [{ ...rope, factor: null, original_max_position_embeddings: 256 }, {}, /factor" is null; .* is 0\.5/],
    [{ ...rope, factor: "4" }, {}, /"rope_parameters\.factor" is "4"; it must be a number/],
    [
      { ...rope, beta_fast: 2, beta_slow: 4 },
      {},
      /"rope_parameters\.beta_fast" is 2; it must be at least beta_slow \(4\)/,
    ],
    [{ ...rope, beta_slow: -1 }, {}, /"rope_parameters\.beta_slow" is -1; it must be a positive number/],
    [
      { ...rope, truncate: "yes" },
      {},
      /"rope_parameters\.truncate" is "yes"; it must be true, false or null/,
    ],
    [
      { ...rope, attention_factor: -1 },
      {},
      /"rope_parameters\.attention_factor" is -1; .*must not be negative/,
    ],
    // ln e = 1, so get_mscale(e, -10) = 0.1 · −10 + 1 = 0: transformers divides by zero.
    [
      { ...rope, factor: Math.E, mscale: 1, mscale_all_dim: -10 },
      {},
      /"rope_parameters\.mscale_all_dim" is -10/,
    ],
    [{ ...rope, original_max_position_embeddings: null }, {}, /original_max_position_embeddings" is null/],
    [
      rope,
      { original_max_position_embeddings: null },
      /"original_max_position_embeddings" is null; it must be a/,
    ],
    [
      { ...rope, rope_type: "longrope" },
      {},
      /"rope_parameters\.rope_type" is "longrope"; implemented: .*"yarn", "dynamic"/,
    ],
  ];
  for (const [params, top, re] of cases) {
    throws(() => llamaConfigFromHf({ ...base, ...top, rope_parameters: params }), re, JSON.stringify(params));
  }
  // The same limits hold for a scaling given directly.
  throws(
    () =>
      ropeInverseFrequencies(16, 1e4, {
        type: "yarn",
        factor: 4,
        originalMaxPositionEmbeddings: 32,
        betaFast: 1,
        betaSlow: 2,
      }),
    /yarn scaling needs betaFast >= betaSlow, got betaFast 1 and betaSlow 2/,
  );
});

Deno.test("HF YaRN and dynamic: saveHf writes the parameters back and reading them gives the same model", async () => {
  for (const name of SCALED) {
    const { config: c, weights } = await readHf(`${FIXTURES}${name}`);
    const dir = await Deno.makeTempDir();
    await saveHf(LlamaLM.fromWeights(c, weights), dir);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    equal(json.rope_parameters.rope_type, c.ropeScaling!.type);
    equal(JSON.stringify(json.rope_parameters), JSON.stringify(hfConfigFromLlama(c).rope_parameters));
    equal(JSON.stringify(llamaConfigFromHf(json).ropeScaling), JSON.stringify(c.ropeScaling), name);
    const model = await loadLlama(dir, { device: "cpu" });
    const ref = await expected(name);
    const err = relError(await logits(model, ref.ids, "cpu"), ref.logits);
    ok(err < 1e-4, `${name} saved and loaded: relative error ${err.toExponential(2)}`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HF dynamic RoPE: up to max_position_embeddings, transformers' frequencies are the unscaled ones", async () => {
  const c = llamaConfigFromHf(await config("llama_dynamic"));
  const ref = await expected("llama_dynamic");
  equal(c.seqLen, 16); // the fixture's batch fills the context
  const inv = ropeInverseFrequencies(c.headDim!, c.ropeTheta, c.ropeScaling);
  ok(relError(inv, ref.invFreq) <= 2 ** -23, `${inv} vs ${ref.invFreq}`);
  equal(inv.join(), ropeInverseFrequencies(c.headDim!, c.ropeTheta).join());
  equal(ref.attentionScaling, 1);
  equal(ropeAttentionFactor(c.ropeScaling), 1);
  const base = await config("llama_dynamic");
  const refused: [unknown, RegExp][] = [
    [
      { rope_type: "dynamic", rope_theta: 1e4 },
      /"rope_parameters\.factor" is undefined; dynamic scaling needs a factor/,
    ],
    [
      { rope_type: "dynamic", rope_theta: 1e4, factor: 0.5 },
      /"rope_parameters\.factor" is 0\.5; .*at least 1/,
    ],
  ];
  for (const [rope, re] of refused) throws(() => llamaConfigFromHf({ ...base, rope_parameters: rope }), re);
  // A context longer than the scaling's own would need the frequencies transformers recomputes per length.
  const { weights } = await readHf(`${FIXTURES}llama_dynamic`);
  throws(
    () => LlamaLM.fromWeights({ ...c, seqLen: 32 }, weights),
    /seqLen 32 exceeds the dynamic RoPE scaling's maxPositionEmbeddings 16/,
  );
});
