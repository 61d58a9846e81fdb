/**
 * Adapters tessera saves for Hugging Face models are what PEFT loads onto the *original* base: for lora, pissa,
 * olora, corda, lora-ga, loram, eva (each after two AdamW steps, so B ≠ 0 and offset inits have moved away from their
 * initial value), DoRA and rsLoRA, on the Llama and Qwen2 fixtures, the saved files use PEFT's module names and
 * rotary layout, offset inits become a rank-2r LoRA with the scale kept, and a fresh original base with the adapter
 * loaded gives the adapted model's logits within 1e-5 of the largest logit.
 *
 * With TESSERA_PEFT_EXPORT=DIR the adapters (with tessera_expected.safetensors: the input ids and tessera's logits)
 * are kept under DIR, for `tools/peft_fixtures.py --check DIR`, which loads each into PEFT and compares.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import {
  readSafetensors,
  type StEntry,
  toFloat32,
  toInt32,
  writeSafetensors,
} from "../../lib/io/safetensors.ts";
import { loadLlama } from "../../lib/models/load.ts";
import type { LlamaLM } from "../../lib/models/llama.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { loadAdapter, LORA_TRAINABLE, loraLayers, saveAdapter } from "../../lib/lora/mod.ts";
import { collectActivations, collectGradients } from "../../lib/init/mod.ts";
import { AdamW, functionalCall, Linear, type ParamDict, setTraining } from "../../lib/nn/mod.ts";
import { refusedOptions, relError, TEST_SEED, TestRng } from "../_helpers.ts";
import { valueAndGrad } from "../../lib/autodiff/mod.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const KEEP = (() => {
  try {
    return Deno.env.get("TESSERA_PEFT_EXPORT");
  } catch {
    return undefined;
  }
})();
const TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"];

type I32 = Tensor<Shape, "i32">;

interface Case {
  name: string;
  init: string;
  options?: Record<string, unknown>;
  useDora?: boolean;
  useRslora?: boolean;
  data?: "activations" | "grads";
  offset: boolean;
}

const CASES: Case[] = [
  { name: "lora", init: "lora", offset: false },
  { name: "pissa", init: "pissa", options: { exact: true }, offset: true },
  { name: "olora", init: "olora", offset: true },
  { name: "corda", init: "corda", data: "activations", offset: true },
  { name: "lora-ga", init: "lora-ga", data: "grads", offset: true },
  { name: "loram", init: "loram", offset: true },
  { name: "eva", init: "eva", data: "activations", offset: false },
  { name: "dora", init: "lora", useDora: true, offset: false },
  { name: "rslora", init: "pissa", options: { exact: true }, useRslora: true, offset: true },
];

for (const base of ["llama", "qwen2"]) {
  Deno.test(`saveAdapter on ${base}: PEFT-loadable adapters for every init reproduce the model on the original base`, async () => {
    const baseDir = `tests/fixtures/models/${base}`;
    const { tensors } = await readSafetensors(`${ROOT}${baseDir}/expected.safetensors`);
    const ids = toInt32(tensors.get("input_ids")!);
    const x = tensor(ids, { shape: [2, 16], dtype: "i32" }) as I32;
    const y = tensor(ids.map((_, i) => ids[(i + 1) % ids.length]), { shape: [2, 16], dtype: "i32" }) as I32;
    const out = KEEP ?? await Deno.makeTempDir();
    for (const c of CASES) {
      const model = await loadLlama(`${ROOT}${baseDir}`);
      const data = c.data === "activations"
        ? await collectActivations(model, TARGETS, (m) => void m.forward(x))
        : c.data === "grads"
        ? await collectGradients(model, TARGETS, (m, b: { x: I32; y: I32 }) => m.loss(b.x, b.y), [{ x, y }])
        : undefined;
      const res = await attachLora(model, {
        targetModules: TARGETS,
        rank: 4,
        alpha: 8,
        init: c.init,
        initOptions: c.options,
        useDora: c.useDora,
        useRslora: c.useRslora,
        data,
        seed: 3,
      });
      const opt = new AdamW(model, { lr: 1e-2, trainable: LORA_TRAINABLE });
      const lossOf = (p: ParamDict) => functionalCall(model, p, () => model.loss(x, y));
      for (let s = 0; s < 2; s++) {
        const { value, grads } = valueAndGrad(lossOf)(opt.params);
        await opt.step(grads, { realize: [value] });
      }
      setTraining(model, false);
      const want = await model.forward(x).data() as Float32Array;
      const dir = `${out}/${base}_${c.name}`;
      const config = await saveAdapter(dir, model, { baseModel: baseDir });
      await writeSafetensors(`${dir}/tessera_expected.safetensors`, {
        input_ids: { dtype: "I32", shape: [2, 16], data: ids },
        logits: { dtype: "F32", shape: [2, 16, (model as LlamaLM).config.vocabSize], data: want },
      });

      // PEFT's conventions: HF names, short target names, the adapter as data, the scale kept at rank 2r.
      const files = (await readSafetensors(`${dir}/adapter_model.safetensors`)).tensors;
      ok([...files.keys()].every((k) => k.startsWith("base_model.model.model.layers.")), c.name);
      deepEqual([...config.target_modules].sort(), [...TARGETS].sort());
      equal(config.init_lora_weights, true);
      equal(config.use_dora, c.useDora ?? false);
      equal(config.use_rslora, c.useRslora ?? false);
      const layers = loraLayers(model);
      const r0 = layers[0][1].rank;
      const a0 = files.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")!;
      const rank = (r0 in config.rank_pattern) ? config.rank_pattern.q_proj : config.r;
      equal(a0.shape[0], c.offset ? 2 * r0 : r0, `${c.name}: exported rank`);
      equal(rank, a0.shape[0], `${c.name}: config rank`);
      const alpha = config.alpha_pattern.q_proj ?? config.lora_alpha;
      const scale = c.useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
      ok(
        Math.abs(scale - layers[0][1].scale) < 1e-12 * scale,
        `${c.name}: scale ${scale} vs ${layers[0][1].scale}`,
      );
      ok(!(await Deno.stat(`${dir}/base_model_weights.safetensors`).then(() => true, () => false)), c.name);
      if (c.init === "eva") ok(Object.keys(res.perLayer).length === layers.length || layers.length > 0);

      // The original base with the saved adapter is the adapted model.
      const fresh = await loadLlama(`${ROOT}${baseDir}`);
      await loadAdapter(dir, fresh);
      setTraining(fresh, false);
      const got = await fresh.forward(x).data() as Float32Array;
      const err = relError(got, want);
      ok(
        err < 1e-5,
        `${base} ${c.name}: reloaded on the original base, logits differ by ${err.toExponential(2)}`,
      );
    }
    if (KEEP === undefined) await Deno.remove(out, { recursive: true });
  });
}

Deno.test("saveAdapter raw form keeps rank r and the rewritten base; LoftQ's quantised base goes in the adapter file", async () => {
  const dir = await Deno.makeTempDir();
  const base = `${ROOT}tests/fixtures/models/llama`;
  const { tensors } = await readSafetensors(`${base}/expected.safetensors`);
  const x = tensor(toInt32(tensors.get("input_ids")!), { shape: [2, 16], dtype: "i32" }) as I32;
  const q = "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight";
  for (const [init, form] of [["pissa", "raw"], ["loftq", "peft"]] as const) {
    const model = await loadLlama(base);
    await attachLora(model, { targetModules: ["q_proj", "v_proj"], rank: 4, alpha: 8, init });
    for (const [, l] of loraLayers(model)) {
      l.lora_B.weight = l.lora_B.weight.add(0.05) as typeof l.lora_B.weight;
    }
    const want = await model.forward(x).data() as Float32Array;
    const out = `${dir}/${init}`;
    const config = await saveAdapter(out, model, { form, init });
    equal(config.r, 4);
    equal(config.init_lora_weights, form === "raw" ? init : true);
    // The raw form keeps the base apart; the peft form puts it where PEFT loads it over the original base's.
    const adapterFile = (await readSafetensors(`${out}/adapter_model.safetensors`)).tensors;
    const hasBaseFile = await Deno.stat(`${out}/base_model_weights.safetensors`).then(
      () => true,
      () => false,
    );
    equal(hasBaseFile, form === "raw");
    const baseFile = form === "raw"
      ? (await readSafetensors(`${out}/base_model_weights.safetensors`)).tensors
      : adapterFile;
    ok(baseFile.has(q), [...baseFile.keys()].join());
    equal(adapterFile.has(q), form === "peft");
    const fresh = await loadLlama(base);
    await loadAdapter(out, fresh);
    const err = relError(await fresh.forward(x).data() as Float32Array, want);
    ok(err < 1e-5, `${init} ${form}: ${err}`);
    if (form === "peft") {
      // Directories saved before kept LoftQ's base in base_model_weights.safetensors under "<module>.weight".
      const bases: Record<string, StEntry> = {};
      const rest: Record<string, StEntry> = {};
      for (const [k, v] of adapterFile) {
        const m = /^base_model\.model\.(.*)\.base_layer\.weight$/.exec(k);
        if (m === null) rest[k] = v;
        else bases[`${m[1]}.weight`] = v;
      }
      equal(Object.keys(bases).length, 4);
      await writeSafetensors(`${out}/adapter_model.safetensors`, rest);
      await writeSafetensors(`${out}/base_model_weights.safetensors`, bases);
      const old = await loadLlama(base);
      await loadAdapter(out, old);
      const e = relError(await old.forward(x).data() as Float32Array, want);
      ok(e < 1e-5, `${init} in the earlier layout: ${e}`);
    }
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("saveAdapter writes a base weight read from a PEFT file (lm_head) back into the adapter file", async () => {
  // PEFT's llama_lm_head adapter carries lm_head's base weight, moved off the original base's: an export of it must
  // carry that weight as PEFT wrote it (it was saved apart, in a file PEFT does not read: 0.26 of the largest logit
  // off in PEFT), and the export on a fresh original base gives PEFT's logits.
  const fixture = `${ROOT}tests/fixtures/adapters/llama_lm_head`;
  const base = `${ROOT}tests/fixtures/models/llama`;
  const key = "base_model.model.lm_head.base_layer.weight";
  const theirs = (await readSafetensors(`${fixture}/adapter_model.safetensors`)).tensors;
  const { tensors: expected } = await readSafetensors(`${fixture}/expected.safetensors`);
  const x = tensor(toInt32(expected.get("input_ids")!), { shape: [2, 16], dtype: "i32" }) as I32;
  const model = await loadLlama(base);
  await loadAdapter(fixture, model);
  const dir = await Deno.makeTempDir();
  await saveAdapter(dir, model);
  const ours = (await readSafetensors(`${dir}/adapter_model.safetensors`)).tensors;
  ok(ours.has(key), `no ${key} among ${[...ours.keys()].join(", ")}`);
  deepEqual(ours.get(key)!.shape, theirs.get(key)!.shape);
  deepEqual(toFloat32(ours.get(key)!), toFloat32(theirs.get(key)!));
  ok(!(await Deno.stat(`${dir}/base_model_weights.safetensors`).then(() => true, () => false)));
  const fresh = await loadLlama(base);
  await loadAdapter(dir, fresh);
  const err = relError(await fresh.forward(x).data() as Float32Array, toFloat32(expected.get("logits")!));
  // The tolerance of PEFT's own fixtures (float32 in another summation order: ~1e-6 expected).
  ok(err < 1e-4, `reloaded export: logits differ from PEFT's by ${err.toExponential(2)}`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("attachLora patterns under Hugging Face names; saving mixed DoRA is refused; loadAdapter's mode", async () => {
  const model = await loadLlama(`${ROOT}tests/fixtures/models/llama`);
  // Pattern keys select as target entries do, under either name (they were compared with tessera's paths only).
  const { perLayer } = await attachLora(model, {
    targetModules: ["q_proj", "v_proj"],
    rank: 4,
    alpha: 8,
    rankPattern: { q_proj: 8 },
    alphaPattern: { "model.layers.0.self_attn.v_proj": 32, "layers.1.attention.wv": 2 },
  });
  deepEqual(perLayer["layers.1.attention.wq"], { rank: 8, alpha: 8, scale: 1 });
  deepEqual(perLayer["layers.0.attention.wv"], { rank: 4, alpha: 32, scale: 8 });
  deepEqual(perLayer["layers.1.attention.wv"], { rank: 4, alpha: 2, scale: 0.5 });
  const fresh = () => loadLlama(`${ROOT}tests/fixtures/models/llama`);
  const refused: [Record<string, unknown>, RegExp][] = [
    [{ rankPattern: { k_proj: 2 } }, /rankPattern key "k_proj" selects none of the 4 target modules/],
    [{ alphaPattern: { wq: 2 }, targetModules: ["wv"] }, /alphaPattern key "wq" selects none/],
    [{ rankPattern: { q_proj: 2 }, init: "eva" }, /init "eva" sets each layer's rank itself; rankPattern/],
  ];
  for (const [extra, re] of refused) {
    await rejects(
      async () => attachLora(await fresh(), { targetModules: ["q_proj", "v_proj"], rank: 4, ...extra }),
      re,
    );
  }
  // DoRA on q_proj only: PEFT's use_dora is one flag for every layer, so the file would load there without the
  // other layers' magnitudes.
  const mixed = await fresh();
  await attachLora(mixed, { targetModules: ["q_proj"], rank: 2, useDora: true });
  await attachLora(mixed, { targetModules: ["v_proj"], rank: 2 });
  const dir = await Deno.makeTempDir();
  await rejects(
    () => saveAdapter(dir, mixed),
    /2 of 4 LoRA layers use DoRA .* PEFT's use_dora covers every layer/,
  );
  // Loaded in eval mode as PEFT's from_pretrained, or for training (with the adapter's dropout).
  await attachLora(model, { targetModules: ["k_proj"], rank: 2, dropout: 0.1 });
  await saveAdapter(dir, model);
  for (const training of [undefined, false, true]) {
    const again = await fresh();
    await loadAdapter(dir, again, training === undefined ? {} : { training });
    ok(loraLayers(again).every(([, l]) => l.training === (training ?? false)), `training ${training}`);
  }
  // A misspelt or bad option was dropped: { from: "raw" } wrote the peft form, { dropout: NaN } a null, and
  // { trainig: true } loaded the layers in evaluation mode.
  const dropout = new TestRng(231).next() * 0.9;
  equal((await saveAdapter(dir, model, { dropout })).lora_dropout, dropout);
  await refusedOptions(
    () => saveAdapter(dir, model, { from: "raw" } as never),
    /^saveAdapter: unknown option "from"$/,
  );
  for (const bad of [NaN, 1, -0.5]) {
    await refusedOptions(
      () => saveAdapter(dir, model, { dropout: bad }),
      new RegExp(`^saveAdapter: option "dropout" must be .*, got ${bad}$`),
    );
  }
  await refusedOptions(
    async () => loadAdapter(dir, await fresh(), { trainig: true } as never),
    /^loadAdapter: unknown option "trainig"$/,
  );
  await Deno.remove(dir, { recursive: true });
});

/** PEFT 0.21's target rule (check_target_module_exists): a string is `re.fullmatch`ed, a list entry equals or ends. */
function peftSelects(targets: string[] | string, name: string): boolean {
  if (typeof targets === "string") return new RegExp(`^(?:${targets})$`).test(name);
  return targets.includes(name) || targets.some((t) => name.endsWith(`.${t}`));
}

/** A tree of plain objects with a `Linear(size, size)` at each of `paths` (none a prefix of another). */
function linearTree(paths: string[], size: number): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  paths.forEach((p, i) => {
    const keys = p.split(".");
    let node = root;
    for (const k of keys.slice(0, -1)) node = (node[k] ??= {}) as Record<string, unknown>;
    node[keys[keys.length - 1]] = new Linear(size, size, { seed: i });
  });
  return root;
}

Deno.test("saveAdapter's target_modules select, by PEFT's rule, exactly the adapted modules of nested models", async () => {
  const rng = new TestRng(811);
  // Trees of plain objects and Linear layers whose paths end one another (a.q and b.a.q), and random ones.
  const fixed = [["a.q", "b.a.q"], ["a.q", "b.a.q", "q"], ["x.a.q", "a.q", "b.k"]];
  const random = Array.from({ length: 4 }, () =>
    Array.from(
      { length: rng.int(2, 5) },
      () => Array.from({ length: rng.int(1, 3) }, () => ["a", "b", "q"][rng.int(0, 2)]).join(".") + ".k",
    ));
  for (const paths of [...fixed, ...random]) {
    const unique = [...new Set(paths)].filter((p) => !paths.some((o) => o.startsWith(`${p}.`)));
    const build = () => linearTree(unique, 3);
    const adapted = unique.filter((_, i) => i === 0 || rng.next() < 0.4);
    const escaped = adapted.map((p) => p.replaceAll(".", "\\."));
    const model = build();
    await attachLora(model, { targetModules: new RegExp(`^(${escaped.join("|")})$`), rank: 2, init: "lora" });
    const dir = await Deno.makeTempDir();
    const { target_modules } = await saveAdapter(dir, model);
    const selected = unique.filter((p) => peftSelects(target_modules, p));
    deepEqual(
      selected.sort(),
      [...adapted].sort(),
      `${unique}: ${JSON.stringify(target_modules)} (seed ${TEST_SEED})`,
    );
    deepEqual((await loadAdapter(dir, build())).sort(), [...adapted].sort());
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The value PEFT 0.21 gives module `name` from a `rank_pattern` / `alpha_pattern`: peft.utils.other.get_pattern_key
 * takes the first key (in order) with `re.match(rf"(.*\.)?({key})$", name)`, and LoraModel._create_and_replace
 * falls back to `r` / `lora_alpha` when none matches. The keys tessera writes are escaped paths, optionally anchored
 * by `^`, and last names, which JavaScript's RegExp reads as Python's `re` does.
 */
function peftPatternValue(pattern: Record<string, number>, name: string, fallback: number): number {
  const key = Object.keys(pattern).find((k) => new RegExp(`^(.*\\.)?(${k})$`).test(name));
  return key === undefined ? fallback : pattern[key];
}

Deno.test("saveAdapter's rank_pattern and alpha_pattern give, by PEFT's rule, each adapted module its own values", async () => {
  const rng = new TestRng(812);
  // Paths that end one another (a.q and b.a.q) with different ranks and alphas, and random trees.
  const fixed = [["a.q", "b.a.q"], ["b.a.q", "a.q", "q"], ["x.a.q", "a.q", "b.k"]];
  const random = Array.from({ length: 4 }, () =>
    Array.from(
      { length: rng.int(2, 5) },
      () => Array.from({ length: rng.int(1, 3) }, () => ["a", "b", "q"][rng.int(0, 2)]).join(".") + ".k",
    ));
  for (const [c, paths] of [...fixed, ...random].entries()) {
    const unique = [...new Set(paths)].filter((p) => !paths.some((o) => o.startsWith(`${p}.`)));
    // attachLora's keys match a path's end too: the longest first gives every path its own key.
    const byLength = [...unique].sort((x, y) => y.length - x.length);
    // In the fixed cases the shorter path has the smaller rank and alpha, so it is the one given a key.
    const n = unique.length;
    const ranks = Object.fromEntries(byLength.map((p, i) => [p, c < fixed.length ? n - i : rng.int(1, 3)]));
    const alphas = Object.fromEntries(
      byLength.map((p, i) => [p, c < fixed.length ? 2 ** (n - i) : 2 ** rng.int(1, 3)]),
    );
    const model = linearTree(unique, 4);
    await attachLora(model, {
      targetModules: unique,
      rankPattern: ranks,
      alphaPattern: alphas,
      init: "lora",
    });
    const dir = await Deno.makeTempDir();
    const config = await saveAdapter(dir, model);
    for (const p of unique) {
      const where = `${p} of ${unique}: ${JSON.stringify(config)} (seed ${TEST_SEED})`;
      equal(peftPatternValue(config.rank_pattern, p, config.r), ranks[p], `rank of ${where}`);
      equal(peftPatternValue(config.alpha_pattern, p, config.lora_alpha), alphas[p], `alpha of ${where}`);
    }
    deepEqual((await loadAdapter(dir, linearTree(unique, 4))).sort(), [...unique].sort());
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("saveAdapter stopped before its config leaves no older adapter's config beside the new weights", async () => {
  const rng = new TestRng(71);
  const dir = await Deno.makeTempDir();
  const adapted = async (alpha: number) => {
    const model = { q: new Linear(8, 8, { seed: 3 }) };
    await attachLora(model, { targetModules: ["q"], rank: 2, alpha, init: "gaussian" });
    return model;
  };
  const first = 8 + Math.floor(rng.next() * 8);
  await saveAdapter(dir, await adapted(first));
  equal(JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`)).lora_alpha, first);
  // The second save is stopped when it comes to the config (as a kill there would stop it).
  const rename = Deno.renameSync;
  Deno.renameSync = (from, to) => {
    if (String(to).endsWith("adapter_config.json")) throw new Error("stopped before the config");
    rename(from, to);
  };
  try {
    await rejects(saveAdapter(dir, await adapted(first / 4)), /stopped before the config/);
  } finally {
    Deno.renameSync = rename;
  }
  // New weights with the first adapter's alpha would load as an adapter nobody saved: refused instead.
  await rejects(
    loadAdapter(dir, { q: new Linear(8, 8, { seed: 3 }) }),
    /holds adapter_model\.safetensors without it, as a save stopped before its end leaves it/,
  );
  await saveAdapter(dir, await adapted(first / 4));
  equal(JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`)).lora_alpha, first / 4);
  await loadAdapter(dir, { q: new Linear(8, 8, { seed: 3 }) });
  await Deno.remove(dir, { recursive: true });
});
