/**
 * Adapters written by PEFT 0.21 itself (tests/fixtures/adapters, from tools/peft_fixtures.py) load into tessera on
 * the same Hugging Face bases: plain LoRA with non-zero B on all seven projections, rsLoRA with rank and alpha
 * patterns, DoRA, PiSSA converted to rank 2r, MiCA, and rank and alpha patterns whose keys overlap (a regex, a
 * partial path, a last name: the first key in the file that matches decides, as in PEFT's get_pattern_key), and lm_head
 * with the base weight PEFT writes beside it (moved off the original's, so that PEFT's logits show it loaded over the
 * base). The adapted logits equal PEFT's within 1e-4 of the largest logit
 * (float32 on a 2-layer model in another summation order: ~1e-6 expected), and `mergeLora` gives the weights of
 * PEFT's `merge_and_unload` within 1e-5 (in Hugging Face's row layout). Features tessera cannot honour are refused
 * by name.
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import {
  readSafetensors,
  type StEntry,
  toFloat32,
  toInt32,
  writeSafetensors,
} from "../../lib/io/safetensors.ts";
import { loadLlama } from "../../lib/models/load.ts";
import { hfModulePath, modulePathFromHf } from "../../lib/models/names.ts";
import { loadAdapter, LORA_TRAINABLE, loraLayers, mergeLora, saveAdapter } from "../../lib/lora/mod.ts";
import { AdamW, functionalCall, getAt, type Linear, type ParamDict } from "../../lib/nn/mod.ts";
import { valueAndGrad } from "../../lib/autodiff/mod.ts";
import type { LlamaLM } from "../../lib/models/llama.ts";
import { relError } from "../_helpers.ts";

const ROOT = new URL("../fixtures/", import.meta.url).pathname;

/** `model`'s logits on a fixture's input_ids against the fixture's (PEFT's): the error relative to their largest. */
async function againstPeft(model: LlamaLM, fixture: Map<string, StEntry>) {
  const entry = fixture.get("input_ids")!;
  const ids = tensor(toInt32(entry), { shape: entry.shape, dtype: "i32" }) as Tensor<Shape, "i32">;
  const logits = await model.forward(ids).data() as Float32Array;
  return { ids, logits, err: relError(logits, toFloat32(fixture.get("logits")!)) };
}

for (const base of ["llama", "qwen2"]) {
  for (
    const kind of [
      "lora",
      "rslora",
      "dora",
      "pissa_2r",
      ...(base === "llama" ? ["mica", "patterns", "lm_head"] : []),
    ]
  ) {
    Deno.test(`PEFT ${base}_${kind}: tessera gives PEFT's logits and merge_and_unload's weights`, async () => {
      const dir = `${ROOT}adapters/${base}_${kind}`;
      const { tensors } = await readSafetensors(`${dir}/expected.safetensors`);
      const model = await loadLlama(`${ROOT}models/${base}`);
      const paths = await loadAdapter(dir, model);
      // Loaded in eval mode, as PEFT's from_pretrained (its reference ran so: no lora_dropout).
      ok(loraLayers(model).every(([, l]) => !l.training), "loaded in eval mode");
      const merged = [...tensors.keys()].filter((k) => k.startsWith("merged."));
      equal(paths.length, merged.length);
      const layers = new Map(loraLayers(model));
      if (kind === "dora") ok([...layers.values()].every((l) => l.lora_magnitude_vector !== undefined));
      if (kind === "pissa_2r") ok([...layers.values()].every((l) => l.rank === 8));
      if (kind === "lora") ok([...layers.values()].every((l) => l.dropout === 0.05));
      if (kind === "lm_head") ok(layers.has("output"), "lm_head (tessera's output) adapted");
      if (kind === "patterns") {
        // PEFT's ranks: the regex key for q and k comes first (layers.1's own q key and q_proj are never reached).
        const ranks = [...layers].map(([p, l]) => `${p.split(".").slice(1).join(".")} ${l.rank}`).join(", ");
        equal(
          ranks,
          "0.attention.wq 6, 0.attention.wk 6, 0.attention.wv 5, 0.attention.wo 4, " +
            "1.attention.wq 6, 1.attention.wk 6, 1.attention.wv 4, 1.attention.wo 4",
        );
      }
      const ids = tensor(toInt32(tensors.get("input_ids")!), { shape: [2, 16], dtype: "i32" });
      const logits = await model.forward(ids as Tensor<Shape, "i32">).data() as Float32Array;
      const err = relError(logits, toFloat32(tensors.get("logits")!));
      ok(err < 1e-4, `${base}_${kind}: logits differ from PEFT's by ${err.toExponential(2)}`);

      mergeLora(model);
      for (const path of paths) {
        const w = (getAt(model, path) as Linear).weight;
        const ours = (model as LlamaLM).convertRows(path, await w.data() as Float32Array, w.shape[1], true);
        const theirs = toFloat32(tensors.get(`merged.${hfModulePath(path)}.weight`)!);
        const e = relError(ours, theirs);
        ok(
          e < 1e-5,
          `${base}_${kind}: merged ${path} differs from merge_and_unload by ${e.toExponential(2)}`,
        );
      }
    });
  }
}

/** Copies a fixture adapter to a temporary directory with its config edited. */
async function edited(name: string, edit: (c: Record<string, unknown>) => void): Promise<string> {
  const dir = await Deno.makeTempDir();
  for (const f of ["adapter_model.safetensors", "adapter_config.json"]) {
    await Deno.copyFile(`${ROOT}adapters/${name}/${f}`, `${dir}/${f}`);
  }
  const c = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
  edit(c);
  await Deno.writeTextFile(`${dir}/adapter_config.json`, JSON.stringify(c));
  return dir;
}

Deno.test("PEFT adapters with features tessera cannot honour are refused by name", async () => {
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    ["llama_lora", (c) => (c.modules_to_save = ["lm_head"]), /"modules_to_save" is \["lm_head"\]/],
    [
      "llama_lora",
      (c) => (c.layers_to_transform = [0]),
      /module "model\.layers\.1\.\w+\.\w+" has weights but target_modules .* with layers_to_transform \[0\] does/,
    ],
    ["llama_lora", (c) => (c.bias = "all"), /"bias" is "all"/],
    ["llama_lora", (c) => (c.lora_bias = true), /"lora_bias" is true/],
    ["llama_lora", (c) => (c.use_qalora = true), /"use_qalora" is true/],
    ["llama_lora", (c) => (c.some_future_key = 3), /key "some_future_key" \(3\) is not implemented/],
    ["llama_lora", (c) => (c.target_modules = ["q_proj", "w_in"]), /target_modules entry "w_in" matches no/],
    [
      "llama_lora",
      (c) => (c.target_modules = ["q_proj"]),
      /module "model\.layers\.\d\.\w+\.(?!q_proj)\w+" has weights but target_modules \["q_proj"\]/,
    ],
    // PEFT expands "all-linear" (any case) to every Linear but the output head, and saves the list it expanded.
    ...["all-linear", "ALL-Linear"].map((t): [string, (c: Record<string, unknown>) => void, RegExp] => [
      "llama_lora",
      (c) => (c.target_modules = t),
      new RegExp(
        `"target_modules" is "${t}", PEFT's shorthand for every Linear layer but the output head, which`,
      ),
    ]),
    ["llama_lora", (c) => (c.r = 8), /has rank 4 but the config \(r, rank_pattern\) says 8/],
    ["llama_dora", (c) => (c.use_dora = false), /has a lora_magnitude_vector but use_dora is false/],
    [
      "llama_lora",
      (c) => (c.init_lora_weights = "pissa_niter_4"),
      /init_lora_weights "pissa_niter_4", which rewrites the base/,
    ],
    ["llama_lora", (c) => (c.peft_type = "IA3"), /peft_type is "IA3"/],
    // Values of the wrong type, and patterns JavaScript cannot run, are named (not a TypeError from inside).
    [
      "llama_lora",
      (c) => (c.exclude_modules = 5),
      /"exclude_modules" must be a list of names or a regex, found 5/,
    ],
    ["llama_lora", (c) => (c.use_rslora = "false"), /"use_rslora" must be true or false, found "false"/],
    ["llama_dora", (c) => (c.use_dora = "false"), /"use_dora" must be true or false, found "false"/],
    ["llama_lora", (c) => (c.target_modules = "(q_proj"), /"target_modules" holds "\(q_proj", not a regular/],
    ["llama_lora", (c) => (c.exclude_modules = "a)"), /"exclude_modules" holds "a\)", not a regular/],
    ["llama_rslora", (c) => (c.alpha_pattern = { "o_proj[": 3 }), /"alpha_pattern" holds "o_proj\[", not a/],
  ];
  for (const [name, edit, re] of cases) {
    const dir = await edited(name, edit);
    const model = await loadLlama(`${ROOT}models/llama`);
    let message = "";
    try {
      await loadAdapter(dir, model);
    } catch (err) {
      message = (err as Error).message;
    }
    ok(re.test(message), `${name}: expected ${re}, got "${message}"`);
    await Deno.remove(dir, { recursive: true });
  }
  // Python's regex spellings read as Python reads them: \A, \Z, (?P<name>…), a leading (?i).
  const ref = await readSafetensors(`${ROOT}adapters/llama_rslora/expected.safetensors`);
  const python = await edited("llama_rslora", (c) => {
    c.rank_pattern = { "\\Amodel\\.layers\\.1\\.self_attn\\.q_proj\\Z": 8, "(?P<v>v)_proj\\Z": 2 };
    c.alpha_pattern = { "o_proj\\Z": 3 };
    c.target_modules = "(?i).*\\.(O|V|K|Q)_PROJ";
  });
  const pyModel = await loadLlama(`${ROOT}models/llama`);
  equal((await loadAdapter(python, pyModel)).length, 8);
  const { err } = await againstPeft(pyModel, ref.tensors);
  ok(err < 1e-4, `Python-spelt patterns: logits differ from PEFT's by ${err.toExponential(2)}`);
  await Deno.remove(python, { recursive: true });
  // One module under both names is refused (the second copy won silently); a second load onto an adapted model says
  // why nothing matches.
  const dup = await edited("llama_lora", () => {});
  const st = (await readSafetensors(`${dup}/adapter_model.safetensors`)).tensors;
  for (const part of ["lora_A.weight", "lora_B.weight"]) {
    st.set(
      `base_model.model.layers.0.attention.wq.${part}`,
      st.get(`base_model.model.model.layers.0.self_attn.q_proj.${part}`)!,
    );
  }
  await writeSafetensors(`${dup}/adapter_model.safetensors`, st);
  await rejects(
    loadAdapter(dup, await loadLlama(`${ROOT}models/llama`)),
    /"layers\.0\.attention\.wq" has weights under two names/,
  );
  const twice = await loadLlama(`${ROOT}models/llama`);
  await loadAdapter(`${ROOT}adapters/llama_lora`, twice);
  await rejects(
    loadAdapter(`${ROOT}adapters/llama_lora`, twice),
    /matches no Linear module .* already attached/,
  );
  await Deno.remove(dup, { recursive: true });
  // An lm_head target on a model whose head is tied to the embedding (llama_pad) says so.
  await rejects(
    loadAdapter(`${ROOT}adapters/llama_lm_head`, await loadLlama(`${ROOT}models/llama_pad`)),
    /entry "lm_head" names the output head, which this model ties to its embedding/,
  );
  // exclude_modules is honoured: the excluded modules are left plain, as PEFT leaves them.
  const dir = await edited("llama_rslora", (c) => (c.exclude_modules = ["o_proj"]));
  const model = await loadLlama(`${ROOT}models/llama`);
  let message = "";
  try {
    await loadAdapter(dir, model);
  } catch (err) {
    message = (err as Error).message;
  }
  ok(/o_proj" has weights but target_modules/.test(message), message);
});

/**
 * Hugging Face rows `[heads·hd, cols]` (each head: the first halves of its RoPE pairs, then the second halves) in
 * tessera's interleaved layout, written out here from the definition: Hugging Face row `j·hd/2 + i` of a head is
 * tessera row `2i + j`.
 */
function interleaveHeads(rows: Float32Array, heads: number, cols: number): Float32Array {
  const hd = rows.length / cols / heads;
  const out = new Float32Array(rows.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < hd / 2; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (h * hd + j * (hd / 2) + i) * cols;
        out.set(rows.subarray(from, from + cols), (h * hd + 2 * i + j) * cols);
      }
    }
  }
  return out;
}

// PEFT's plain save_pretrained after PiSSA or OLoRA keeps init_lora_weights and leaves the residual base out; its
// from_pretrained re-runs the init on the original base, so the fixture's logits (PEFT's) are the trained model's.
// Tessera derives the same residual with its own SVD and QR: float32 factorisations of 32-wide weights in another
// order differ by ~1e-6 of the weight, ~5e-6 of the largest logit here, so 1e-4 as the other imports.
for (const kind of ["pissa_raw", "olora_raw"]) {
  Deno.test(`PEFT ${kind} saved without its base loads on the original base with the residual PEFT derives`, async () => {
    const dir = `${ROOT}adapters/llama_${kind}`;
    const { tensors } = await readSafetensors(`${dir}/expected.safetensors`);
    const model = await loadLlama(`${ROOT}models/llama`);
    await loadAdapter(dir, model);
    const { ids, logits: got, err } = await againstPeft(model, tensors);
    ok(err < 1e-4, `${kind}: logits differ from PEFT's by ${err.toExponential(2)}`);
    // Saved again, it is PEFT's conversion (rank 2r on the original weight), which gives the same model.
    const out = await Deno.makeTempDir();
    const config = await saveAdapter(out, model);
    equal(config.init_lora_weights, true);
    const fresh = await loadLlama(`${ROOT}models/llama`);
    await loadAdapter(out, fresh);
    ok(loraLayers(fresh).every(([p, l]) => l.rank === 2 * new Map(loraLayers(model)).get(p)!.rank));
    const again = relError(await fresh.forward(ids).data() as Float32Array, got);
    ok(again < 1e-5, `${kind}: the converted adapter differs by ${again.toExponential(2)}`);
    await Deno.remove(out, { recursive: true });
  });
}

// PEFT adapts a module that a target_modules entry names by its end only in the layers of layers_to_transform (an
// int or a list), the index read after layers_pattern (or, with none, after the path's second segment); a full name
// in the list is adapted in any layer. The fixtures: an int and no pattern; a list, a list of patterns of which the
// first matches nothing, and layer 1's full up_proj name; a list and one pattern. 1e-4 as the other imports (2-layer
// float32 model, another summation order: ~1e-6 expected).
for (const kind of ["layers_int", "layers_list", "layers_pattern"]) {
  Deno.test(`PEFT ${kind}: the modules PEFT adapts on some layers, PEFT's logits; saved again as full names`, async () => {
    const dir = `${ROOT}adapters/llama_${kind}`;
    const { tensors } = await readSafetensors(`${dir}/expected.safetensors`);
    const model = await loadLlama(`${ROOT}models/llama`);
    const paths = await loadAdapter(dir, model);
    const stored = [...(await readSafetensors(`${dir}/adapter_model.safetensors`)).tensors.keys()]
      .filter((k) => k.endsWith(".lora_A.weight"))
      .map((k) => k.slice("base_model.model.".length, -".lora_A.weight".length));
    deepEqual(paths.map(hfModulePath).sort(), stored.sort());
    const { ids, logits: got, err } = await againstPeft(model, tensors);
    ok(err < 1e-4, `${kind}: logits differ from PEFT's by ${err.toExponential(2)}`);
    // saveAdapter lists the adapted modules by full name (PEFT adapts a full name in any layer).
    const out = await Deno.makeTempDir();
    const config = await saveAdapter(out, model);
    equal(config.layers_to_transform, null);
    deepEqual([...config.target_modules].sort(), stored.sort());
    const fresh = await loadLlama(`${ROOT}models/llama`);
    deepEqual((await loadAdapter(out, fresh)).sort(), [...paths].sort());
    deepEqual(await fresh.forward(ids).data(), got);
    await Deno.remove(out, { recursive: true });
  });
}

Deno.test("PEFT layers_to_transform: an empty list is every layer; what PEFT refuses or matches no layer is refused", async () => {
  const ref = await readSafetensors(`${ROOT}adapters/llama_lora/expected.safetensors`);
  const all = await edited("llama_lora", (c) => {
    c.layers_to_transform = [];
    c.layers_pattern = "layers";
  });
  const model = await loadLlama(`${ROOT}models/llama`);
  equal((await loadAdapter(all, model)).length, 14);
  const { err } = await againstPeft(model, ref.tensors);
  ok(err < 1e-4, `layers_to_transform []: logits differ from PEFT's by ${err.toExponential(2)}`);
  await Deno.remove(all, { recursive: true });
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    [
      "llama_layers_int",
      (c) => (c.layers_to_transform = 5),
      /"layers_to_transform" is 5, but layer 5 holds no module that target_modules names by its end \(their layers: 0, 1\)/,
    ],
    [
      "llama_layers_list",
      (c) => (c.layers_to_transform = [0, 7]),
      /"layers_to_transform" is \[0,7\], but layer 7 holds no module .*\(their layers after its layers_pattern: 0, 1\)/,
    ],
    [
      "llama_layers_pattern",
      (c) => (c.layers_pattern = "blocks"),
      /"layers_to_transform" is \[1\], but layer 1 .*\(no such module's name has a layer index after its layers_pattern\)/,
    ],
    [
      "llama_layers_int",
      (c) => (c.layers_to_transform = 0),
      /module "model\.layers\.1\.\w+\.\w+" has weights but target_modules .* with layers_to_transform 0 does not/,
    ],
    [
      "llama_layers_int",
      (c) => (c.layers_to_transform = true),
      /"layers_to_transform" must be a layer index or a list of them, found true/,
    ],
    [
      "llama_layers_int",
      (c) => (c.layers_to_transform = ["1"]),
      /"layers_to_transform" must be a layer index or a list of them, found \["1"\]/,
    ],
    ["llama_layers_int", (c) => (c.layers_to_transform = 1.5), /"layers_to_transform" must be .* found 1\.5/],
    [
      "llama_layers_pattern",
      (c) => (c.layers_pattern = 3),
      /"layers_pattern" must be a name, a regex or a list of them, found 3/,
    ],
    [
      "llama_layers_int",
      (c) => (c.target_modules = ".*\\.layers\\.1\\..*_proj"),
      /"layers_to_transform" is 1 while "target_modules" is the regex ".*\\\\.layers.*"; PEFT refuses layers_to_transform with/,
    ],
    [
      "llama_lora",
      (c) => (c.target_modules = ".*_proj", c.layers_pattern = ""),
      /"layers_pattern" is "" while "target_modules" is the regex ".*_proj"; PEFT refuses layers_pattern with/,
    ],
    [
      "llama_lora",
      (c) => (c.layers_pattern = ["layers"]),
      /"layers_pattern" is \["layers"\] but "layers_to_transform" is null; PEFT refuses a layers_pattern without/,
    ],
    [
      "llama_layers_pattern",
      (c) => (c.layers_pattern = "(?i)LAYERS"),
      /"layers_pattern" holds "\(\?i\)LAYERS", whose leading inline flag Python refuses/,
    ],
    [
      "llama_layers_pattern",
      (c) => (c.layers_pattern = "lay(ers"),
      /"layers_pattern" holds "lay\(ers", not a regular expression/,
    ],
  ];
  for (const [name, edit, re] of cases) {
    const dir = await edited(name, edit);
    await rejects(loadAdapter(dir, await loadLlama(`${ROOT}models/llama`)), re, `${name}: expected ${re}`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PEFT adapters with an empty modules_to_save load as with none", async () => {
  const dir = await edited("llama_lora", (c) => (c.modules_to_save = []));
  const { tensors } = await readSafetensors(`${ROOT}adapters/llama_lora/expected.safetensors`);
  const model = await loadLlama(`${ROOT}models/llama`);
  await loadAdapter(dir, model);
  const { err } = await againstPeft(model, tensors);
  ok(err < 1e-4, `logits differ from PEFT's by ${err.toExponential(2)}`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("PEFT-format adapters in the model's own module names are read in its own row layout", async () => {
  // PEFT's adapters rewritten as tessera wrote them before it used Hugging Face names: modules named by tessera's
  // paths, query and key rows (lora_B, DoRA magnitudes) in tessera's interleaved layout. They must give PEFT's
  // logits too; read as Hugging Face rows, the queries and keys were permuted (0.56 of the largest logit off).
  for (const kind of ["lora", "dora"]) {
    const ref = await readSafetensors(`${ROOT}adapters/llama_${kind}/expected.safetensors`);
    const model = await loadLlama(`${ROOT}models/llama`);
    const short: Record<string, string> = {
      q_proj: "wq",
      k_proj: "wk",
      v_proj: "wv",
      o_proj: "wo",
      gate_proj: "w1",
      down_proj: "w2",
      up_proj: "w3",
    };
    const dir = await edited(`llama_${kind}`, (c) => {
      c.target_modules = (c.target_modules as string[]).map((t) => short[t]);
    });
    const { tensors } = await readSafetensors(`${dir}/adapter_model.safetensors`);
    const renamed = new Map<string, StEntry>();
    for (const [key, entry] of tensors) {
      const m = /^base_model\.model\.(.+)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$/.exec(key)!;
      const path = modulePathFromHf(m[1])!;
      const heads = /attention\.wq$/.test(path)
        ? model.config.nHeads
        : /attention\.wk$/.test(path)
        ? model.config.nKvHeads
        : 0;
      const data = heads > 0 && m[2] !== "lora_A.weight"
        ? interleaveHeads(toFloat32(entry), heads, entry.shape[1] ?? 1)
        : toFloat32(entry);
      renamed.set(`base_model.model.${path}.${m[2]}`, { dtype: "F32", shape: entry.shape, data });
    }
    await writeSafetensors(`${dir}/adapter_model.safetensors`, renamed);
    const paths = await loadAdapter(dir, model);
    equal(paths.length, [...tensors.keys()].filter((k) => k.endsWith("lora_A.weight")).length);
    const { err } = await againstPeft(model, ref.tensors);
    ok(err < 1e-4, `llama_${kind} in own names: logits differ from PEFT's by ${err.toExponential(2)}`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PEFT's MiCA adapter trains A only, as PEFT does: B stays bit for bit, the trained set is PEFT's", async () => {
  const dir = `${ROOT}adapters/llama_mica`;
  const { tensors, metadata } = await readSafetensors(`${dir}/expected.safetensors`);
  const model = await loadLlama(`${ROOT}models/llama`);
  await loadAdapter(dir, model, { training: true });
  const opt = new AdamW(model, { lr: 1e-2, weightDecay: 0.1, trainable: LORA_TRAINABLE });
  // The parameters PEFT trains after from_pretrained(..., is_trainable=True), in Hugging Face names.
  const hfName = (p: string) =>
    p.replace(/^(.*)\.(lora_\w)\.weight$/, (_, m, w) => `${hfModulePath(m)}.${w}.weight`);
  deepEqual(opt.paths.map(hfName).sort(), JSON.parse(metadata.trainable));
  const before = new Map<string, Float32Array>();
  for (const [path, l] of loraLayers(model)) {
    before.set(`${path}.A`, Float32Array.from(await l.lora_A.weight.data() as Float32Array));
    before.set(`${path}.B`, Float32Array.from(await l.lora_B.weight.data() as Float32Array));
  }
  const ids = tensor(toInt32(tensors.get("input_ids")!), { shape: [2, 16], dtype: "i32" });
  const lossOf = (p: ParamDict) =>
    functionalCall(model, p, () => model.forward(ids as Tensor<Shape, "i32">).square().mean());
  for (let step = 0; step < 3; step++) {
    const { value, grads } = valueAndGrad(lossOf)(opt.params);
    await opt.step(grads, { realize: [value] });
  }
  for (const [path, l] of loraLayers(model)) {
    deepEqual(await l.lora_B.weight.data(), before.get(`${path}.B`), `${path}: B changed`);
    const a = await l.lora_A.weight.data() as Float32Array;
    ok(a.some((v, i) => v !== before.get(`${path}.A`)![i]), `${path}: A did not move`);
  }
  // Saved again, it is still MiCA for PEFT; B listed explicitly is refused by name.
  const out = await Deno.makeTempDir();
  equal((await saveAdapter(out, model)).init_lora_weights, "mica");
  const path = loraLayers(model)[0][0];
  throws(
    () => new AdamW(model, { lr: 1e-2, trainable: [`${path}.lora_A.weight`, `${path}.lora_B.weight`] }),
    new RegExp(
      `trainable lists "${path.replaceAll(".", "\\.")}\\.lora_B\\.weight", which its module declares frozen`,
    ),
  );
  await Deno.remove(out, { recursive: true });
});
