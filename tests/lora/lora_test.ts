/** The LoRA layer, attaching by pattern, merging, DoRA and PEFT-format adapter files. */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { type DeviceName, getDefaultDevice, type Shape, type Tensor, tensor } from "../../mod.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { namedParameters } from "../../lib/nn/module.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { findTargets } from "../../lib/nn/targets.ts";
import {
  loadAdapter,
  LORA_TRAINABLE,
  loraLayers,
  LoraLinear,
  loraNorms,
  mergeLora,
  saveAdapter,
  unmergeLora,
} from "../../lib/lora/mod.ts";
import { gradcheck } from "../../lib/autodiff/gradcheck.ts";
import { dropout } from "../../lib/nn/activations.ts";
import { deriveSeed } from "../../lib/nn/init.ts";
import { assertClose, refusedOptions, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;
const mk = (rng: TestRng, shape: number[], device: DeviceName = getDefaultDevice()) =>
  tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape, device }) as unknown as F;

/** Host float64 matmul of row-major [m,k]·[k,n]. */
function mm(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const o = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      o[i * n + j] = s;
    }
  }
  return o;
}
const transpose = (a: ArrayLike<number>, r: number, c: number) => {
  const o = new Float64Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) o[j * r + i] = a[i * c + j];
  return o;
};

function toyModel(seed: number) {
  return {
    layers: [0, 1].map((i) => ({
      attention: {
        wq: new Linear(12, 12, { seed: seed + i * 10 + 1 }),
        wv: new Linear(12, 6, { seed: seed + i * 10 + 2, bias: false }),
      },
      mlp: new Linear(12, 20, { seed: seed + i * 10 + 3 }),
    })),
  };
}
type Toy = ReturnType<typeof toyModel>;
const run = (m: Toy, x: F) =>
  m.layers.reduce(
    (h, l) => l.attention.wq.forward(h).tanh().add(l.mlp.forward(h).slice(null, [0, 12])) as F,
    x,
  );

Deno.test("LoraLinear computes x·W_resᵀ + b + s·x·Aᵀ·Bᵀ (float64 reference)", async () => {
  const rng = new TestRng(40);
  const [n, dIn, dOut, r] = [5, 7, 6, 3];
  const base = Linear.fromWeights(mk(rng, [dOut, dIn]), mk(rng, [dOut]));
  const a = mk(rng, [r, dIn]);
  const b = mk(rng, [dOut, r]);
  const layer = LoraLinear.wrap(base, { a, b, rank: r, alpha: 6, scale: 2 });
  const x = mk(rng, [n, dIn]);
  const [xd, wd, bd, ad, bbd] = await Promise.all([x, base.weight, base.bias!, a, b].map((t) => t.data()));
  const want = mm(xd, transpose(wd, dOut, dIn), n, dIn, dOut);
  const lora = mm(mm(xd, transpose(ad, r, dIn), n, dIn, r), transpose(bbd, dOut, r), n, r, dOut);
  for (let i = 0; i < want.length; i++) want[i] += bd[i % dOut] + 2 * lora[i];
  assertClose(await layer.forward(x).data(), want, { rtol: 1e-5, atol: 1e-5 });
  assertClose(await layer.merge().forward(x).data(), want, { rtol: 1e-5, atol: 1e-5, what: "merged" });
});

Deno.test("LoraLinear refuses an initial adapter without an offset base or of other shapes than B and A", async () => {
  const rng = new TestRng(47);
  const [dIn, dOut, r] = [rng.int(4, 9), rng.int(3, 9), rng.int(1, 3)]; // dIn > r: Aᵀ has another shape
  const w = mk(rng, [dOut, dIn]);
  const [a, b, a0, b0] = [mk(rng, [r, dIn]), mk(rng, [dOut, r]), mk(rng, [r, dIn]), mk(rng, [dOut, r])];
  const init = { a, b, rank: r, alpha: 2 * r, scale: 2 };
  // Without a base the copies were dropped: the layer reported no initial adapter, and its export had no offset.
  await refusedOptions(
    () => LoraLinear.wrap(Linear.fromWeights(w), init, { initial: { a: a0, b: b0 } }),
    /^LoraLinear: option "initial" needs an init result with a base/,
  );
  const offset = { ...init, base: w.sub(b0.matmul(a0).mul(2)) as F };
  // Copies of other shapes (or no tensors) were kept as given, to fail or mislead only when exported.
  await refusedOptions(
    () => LoraLinear.wrap(Linear.fromWeights(w), offset, { initial: { a: a0.T as F, b: b0 } }),
    new RegExp(`^LoraLinear: option "initial.a" must have the shape \\[${r},${dIn}\\]`),
  );
  await refusedOptions(
    () => LoraLinear.wrap(Linear.fromWeights(w), offset, { initial: { a: a0, b: 1 } } as never),
    /option "initial.b" must be a tensor/,
  );
  const layer = LoraLinear.wrap(Linear.fromWeights(w), offset, { initial: { a: a0, b: b0 } });
  equal(layer.initialAdapter?.a, a0);
  // The offset layer computes W at init: base + s·B₀·A₀ with B = B₀, A = A₀ given as the trained pair.
  const same = LoraLinear.wrap(Linear.fromWeights(w), { ...offset, a: a0, b: b0 }, {
    initial: { a: a0, b: b0 },
  });
  assertClose(await same.mergedWeight().data(), await w.data(), {
    rtol: 1e-5,
    atol: 1e-5,
    what: "W at init",
  });
});

Deno.test("attachLora: PEFT-style targets, rank/alpha patterns, output unchanged at init, trainable names", async () => {
  const rng = new TestRng(41);
  const model = toyModel(7);
  const x = mk(rng, [4, 12]);
  const before = await run(model, x).data();
  deepEqual(findTargets(model, ["wq", "wv"]).map(([p]) => p), [
    "layers.0.attention.wq",
    "layers.0.attention.wv",
    "layers.1.attention.wq",
    "layers.1.attention.wv",
  ]);
  deepEqual(findTargets(model, /layers\.1\..*/).map(([p]) => p), [
    "layers.1.attention.wq",
    "layers.1.attention.wv",
    "layers.1.mlp",
  ]);
  const res = await attachLora(model, {
    targetModules: ["wq", "wv", "mlp"],
    rank: 4,
    alpha: 8,
    rankPattern: { "layers.1.mlp": 2 },
    alphaPattern: { wv: 16 },
    seed: 3,
  });
  equal(res.layers.length, 6);
  deepEqual(res.perLayer["layers.1.mlp"], { rank: 2, alpha: 8, scale: 4 });
  deepEqual(res.perLayer["layers.0.attention.wv"], { rank: 4, alpha: 16, scale: 4 });
  assertClose(await run(model, x).data(), before, { rtol: 1e-6, atol: 1e-6, what: "B = 0 keeps the output" });
  const trainable = namedParameters(model).map(([p]) => p).filter((p) => LORA_TRAINABLE.test(p));
  equal(trainable.length, 12);
  ok(trainable.includes("layers.0.attention.wq.lora_A.weight"));
  ok(namedParameters(model).some(([p]) => p === "layers.0.attention.wq.base_layer.weight"));
  // Every parameter is its own node (so gradients do not alias).
  const nodes = namedParameters(model).map(([, t]) => t.node);
  equal(new Set(nodes).size, nodes.length);
  equal(findTargets(model, ["nothing"]).length, 0);
  await rejects(attachLora(toyModel(1), { targetModules: ["nope"] }), /no Linear module matches/);
});

Deno.test("tracked norms and merging", async () => {
  const rng = new TestRng(42);
  const model = toyModel(9);
  await attachLora(model, { targetModules: ["wq"], rank: 3, alpha: 6, init: "init-b", seed: 1 });
  const norms = loraNorms(model);
  const [path, layer] = loraLayers(model)[0];
  const b = await layer.lora_B.weight.data();
  const fro = Math.sqrt(Array.from(b).reduce((s, v) => s + v * v, 0));
  assertClose([await norms[`${path}.B`].item()], [fro], { rtol: 1e-5 });
  equal(await norms[`${path}.A`].item(), 0); // Init[B]: A = 0
  equal(await norms[`${path}.deltaW`].item(), 0);
  const x = mk(rng, [3, 12]);
  const y = await run(model, x).data();
  const adapters = Object.fromEntries(
    loraLayers(model).map((
      [p, l],
    ) => [p, { a: l.lora_A.weight, b: l.lora_B.weight, rank: l.rank, alpha: l.alpha, scale: l.scale }]),
  );
  const bases = await Promise.all(loraLayers(model).map(([, l]) => l.base_layer.weight.data()));
  mergeLora(model);
  equal(loraLayers(model).length, 0);
  assertClose(await run(model, x).data(), y, { rtol: 1e-5, atol: 1e-6 });
  // Unmerging recovers the adapted layers: same outputs, same base weights.
  unmergeLora(model, adapters);
  equal(loraLayers(model).length, Object.keys(adapters).length);
  assertClose(await run(model, x).data(), y, { rtol: 1e-5, atol: 1e-6 });
  const after = await Promise.all(loraLayers(model).map(([, l]) => l.base_layer.weight.data()));
  after.forEach((w, i) => assertClose(w, bases[i], { rtol: 1e-5, atol: 1e-6, what: "unmerged base" }));
});

Deno.test("unmerging what mergeLora returned restores a DoRA layer: its base W, magnitudes, options and mode", async () => {
  const rng = new TestRng(46);
  const [dOut, dIn, r] = [7, 9, 3];
  const w = mk(rng, [dOut, dIn]);
  const init = { a: mk(rng, [r, dIn]), b: mk(rng, [dOut, r]), rank: r, alpha: 5, scale: 5 / Math.sqrt(r) };
  const layer = LoraLinear.wrap(Linear.fromWeights(w, mk(rng, [dOut])), init, {
    useDora: true,
    useRslora: true,
    dropout: 0.1,
    seed: 3,
  });
  // Trained magnitudes (not the row norms), so that the merged rows do not give the norms back.
  layer.lora_magnitude_vector = tensor(Float32Array.from({ length: dOut }, () => 0.5 + rng.next()));
  layer.training = false;
  const model = { q: layer };
  const x = mk(rng, [4, dIn]);
  const y = await layer.forward(x).data();
  const m = await layer.lora_magnitude_vector.data();
  const merged = mergeLora(model);
  deepEqual(mergeLora(model), {}, "merging again merges nothing");
  unmergeLora(model, merged);
  const back = model.q as unknown as LoraLinear;
  ok(back instanceof LoraLinear);
  // W' = g ⊙ (W + ΔW) then W'/g − ΔW: float32 rounding of values of size ~|W| + |ΔW| (< 10 here).
  assertClose(await back.base_layer.weight.data(), await w.data(), { atol: 1e-5, what: "unmerged base W" });
  deepEqual(await back.lora_magnitude_vector!.data(), m);
  deepEqual([back.useRslora, back.dropout, back.training, back.baseRewritten], [true, 0.1, false, false]);
  assertClose(await back.forward(x).data(), y, { rtol: 1e-5, atol: 1e-5, what: "unmerged output" });
});

for (const device of ["cpu", "wasm"] as const) {
  Deno.test(`${device}: an f16 base merges into an f16 weight and unmerges into an f16 base, as PEFT keeps the dtype`, async () => {
    const rng = new TestRng(47);
    const [dOut, dIn, r, s] = [6, 10, 2, 1.5];
    const w16 = mk(rng, [dOut, dIn], device).cast("f16");
    const W = await w16.cast("f32").data();
    const init = { a: mk(rng, [r, dIn], device), b: mk(rng, [dOut, r], device), rank: r, alpha: 3, scale: s };
    const model = { q: LoraLinear.wrap(Linear.fromWeights(w16), init) };
    const ba = mm(await init.b.data(), await init.a.data(), dOut, r, dIn);
    const want = Float64Array.from(ba, (v, i) => W[i] + s * v);
    const merged = mergeLora(model);
    const mw = (model.q as unknown as Linear).weight;
    equal(mw.dtype, "f16", "merged weight dtype");
    // Computed in f32 and rounded once to f16: within f16's half ulp (2^-11 relative) and f32's rounding.
    assertClose(await mw.cast("f32").data(), want, { rtol: 2 ** -10, atol: 1e-6, what: "merged f16 weight" });
    unmergeLora(model, merged);
    const base = (model.q as unknown as LoraLinear).base_layer.weight;
    equal(base.dtype, "f16", "unmerged base dtype");
    // f16(f16(W + ΔW) − ΔW): one f16 rounding of a value of size |W + ΔW| each way, as PEFT's in-place add and sub.
    const big = Math.max(...want.map(Math.abs));
    assertClose(await base.cast("f32").data(), W, { atol: big * 2 ** -10, what: "unmerged f16 base" });
  });
}

Deno.test("DoRA: magnitude = row norms at init (output unchanged) and gradients check", async () => {
  const rng = new TestRng(43);
  const base = Linear.fromWeights(mk(rng, [4, 5], "cpu"), mk(rng, [4], "cpu"));
  const x = mk(rng, [3, 5], "cpu");
  const before = await base.forward(x).data();
  const layer = LoraLinear.wrap(base, {
    a: mk(rng, [2, 5], "cpu"),
    b: mk(rng, [4, 2], "cpu").mul(0) as F,
    rank: 2,
    alpha: 2,
    scale: 1,
  }, {
    useDora: true,
  });
  assertClose(await layer.forward(x).data(), before, { rtol: 1e-5, atol: 1e-6 });
  // PEFT detaches the row norm, so only the magnitude's gradient is the true derivative: check that one.
  const a = mk(rng, [2, 5], "cpu");
  const b = mk(rng, [4, 2], "cpu");
  await gradcheck((m) => {
    const l = LoraLinear.wrap(Linear.fromWeights(base.weight), { a, b, rank: 2, alpha: 2, scale: 1 });
    l.lora_magnitude_vector = m as F;
    return l.forward(x);
  }, [tensor(rng.normals(4).map((v) => Math.abs(v) + 0.5), { device: "cpu" })]);
});

Deno.test("DoRA with dropout in training: PEFT's form with the dropped input, in float64; the merged form in eval", async () => {
  // y = x·Wᵀ + b + (g − 1)·x̃·Wᵀ + g·s·x̃·Aᵀ·Bᵀ, x̃ = dropout(x), g = m / ‖W + s·B·A‖_row (PEFT's DoRA layer).
  const rng = new TestRng(44);
  const [n, dIn, dOut, r, s, p, seed] = [6, 5, 4, 2, 0.75, 0.4, 17];
  const [w, bias, a, b, x] = [[dOut, dIn], [dOut], [r, dIn], [dOut, r], [n, dIn]].map((sh) =>
    mk(rng, sh, "cpu")
  );
  const layer = LoraLinear.wrap(Linear.fromWeights(w, bias), { a, b, rank: r, alpha: s * r, scale: s }, {
    useDora: true,
    dropout: p,
    seed,
  });
  const m = rng.normals(dOut).map((v) => Math.abs(v) + 0.5);
  layer.lora_magnitude_vector = tensor(m, { device: "cpu" }) as F;
  // The layer's first training call drops with the key deriveSeed(seed, 0).
  const xd = await dropout(x, p, { seed: deriveSeed(seed, 0) }).data();
  const [W, B, A, X, bs] = await Promise.all([w, b, a, x, bias].map((t) => t.data()));
  const merged = Float64Array.from(mm(B, A, dOut, r, dIn), (v, i) => W[i] + s * v);
  const g = Array.from({ length: dOut }, (_, o) => {
    let q = 0;
    for (let i = 0; i < dIn; i++) q += merged[o * dIn + i] ** 2;
    return m[o] / Math.sqrt(q);
  });
  const t = (v: ArrayLike<number>, rows: number, cols: number) =>
    Float64Array.from({ length: rows * cols }, (_, k) => v[(k % rows) * cols + Math.floor(k / rows)]);
  const [xw, xdw, h] = [
    mm(X, t(W, dOut, dIn), n, dIn, dOut),
    mm(xd, t(W, dOut, dIn), n, dIn, dOut),
    mm(xd, t(A, r, dIn), n, dIn, r),
  ];
  const hb = mm(h, t(B, dOut, r), n, r, dOut);
  const want = Float64Array.from(xw, (v, k) => {
    const o = k % dOut;
    return v + bs[o] + (g[o] - 1) * xdw[k] + g[o] * s * hb[k];
  });
  const got = await layer.forward(x).data();
  assertClose(got, want, { rtol: 1e-5, atol: 1e-5, what: "DoRA training output with dropout" });
  ok(xd.some((v) => v === 0) && xd.some((v) => v !== 0), "the mask drops some inputs and keeps others");
  // Eval: the merged weight, x·W'ᵀ + b with W' = g ⊙ (W + s·B·A), i.e. the same form with x̃ = x.
  layer.training = false;
  const xm = mm(X, t(merged, dOut, dIn), n, dIn, dOut);
  assertClose(
    await layer.forward(x).data(),
    Float64Array.from(xm, (v, k) => g[k % dOut] * v + bs[k % dOut]),
    {
      rtol: 1e-5,
      atol: 1e-5,
      what: "DoRA eval output",
    },
  );
});

/** An independent reader of the safetensors layout (8-byte little-endian header size, JSON header, raw data). */
function readSafetensorsIndependently(
  bytes: Uint8Array,
): Map<string, { dtype: string; shape: number[]; data: Float32Array }> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const out = new Map<string, { dtype: string; shape: number[]; data: Float32Array }>();
  for (
    const [k, v] of Object.entries(header) as [
      string,
      { dtype: string; shape: number[]; data_offsets: [number, number] },
    ][]
  ) {
    if (k === "__metadata__") continue;
    const [s, e] = v.data_offsets;
    const raw = bytes.slice(8 + n + s, 8 + n + e);
    out.set(k, { dtype: v.dtype, shape: v.shape, data: new Float32Array(raw.buffer) });
  }
  return out;
}

Deno.test("adapters round-trip through PEFT-format files and match PEFT's documented schema", async () => {
  const rng = new TestRng(44);
  const model = toyModel(11);
  await attachLora(model, {
    targetModules: ["wq", "mlp"],
    rank: 4,
    alpha: 8,
    rankPattern: { mlp: 2 },
    init: "init-b",
    seed: 5,
  });
  // Train-like change so B·A ≠ 0 on every layer.
  for (const [, l] of loraLayers(model)) l.lora_A.weight = mk(rng, [...l.lora_A.weight.shape]);
  const x = mk(rng, [5, 12]);
  const want = await run(model, x).data();
  const dir = await Deno.makeTempDir();
  const cfg = await saveAdapter(dir, model, { init: "init-b", baseModel: "toy" });
  // Independent reader: names, shapes, dtypes.
  const st = readSafetensorsIndependently(await Deno.readFile(`${dir}/adapter_model.safetensors`));
  equal(st.size, 8);
  deepEqual(st.get("base_model.model.layers.0.attention.wq.lora_A.weight")?.shape, [4, 12]);
  deepEqual(st.get("base_model.model.layers.0.attention.wq.lora_B.weight")?.shape, [12, 4]);
  deepEqual(st.get("base_model.model.layers.1.mlp.lora_A.weight")?.shape, [2, 12]);
  deepEqual(st.get("base_model.model.layers.1.mlp.lora_B.weight")?.shape, [20, 2]);
  ok([...st.values()].every((e) => e.dtype === "F32"));
  const lA = loraLayers(model)[0][1].lora_A.weight;
  assertClose(st.get("base_model.model.layers.0.attention.wq.lora_A.weight")!.data, await lA.data(), {
    rtol: 0,
    atol: 0,
  });
  const json = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
  equal(json.peft_type, "LORA");
  equal(json.r, 4);
  equal(json.lora_alpha, 8);
  deepEqual(json.rank_pattern, { mlp: 2 });
  deepEqual(json.alpha_pattern, {});
  equal(json.use_rslora, false);
  equal(json.use_dora, false);
  equal(json.init_lora_weights, true); // the adapter is data; the raw form records the init's name
  ok(Array.isArray(json.target_modules));
  equal(cfg.base_model_name_or_path, "toy");
  // A fresh model with the same base weights loads the adapter and reproduces the outputs.
  const fresh = toyModel(11);
  const loaded = await loadAdapter(dir, fresh);
  deepEqual(loaded.sort(), [
    "layers.0.attention.wq",
    "layers.0.mlp",
    "layers.1.attention.wq",
    "layers.1.mlp",
  ]);
  assertClose(await run(fresh, x).data(), want, { rtol: 1e-5, atol: 1e-6 });
  // Mismatches name the tensor.
  const wrong = toyModel(11) as unknown as { layers: { attention: { wq: Linear } }[] };
  wrong.layers[0].attention.wq = new Linear(12, 9, { seed: 0 });
  await rejects(
    loadAdapter(dir, wrong),
    /module "layers\.0\.attention\.wq" has lora_A \[4,12\] and lora_B \[12,4\]/,
  );
  // A model lacking a target named in target_modules is refused by name.
  await rejects(
    loadAdapter(dir, { layers: [{ attention: { wq: new Linear(12, 12, { seed: 0 }) } }] }),
    /target_modules entry "mlp" matches no Linear module/,
  );
  await Deno.remove(dir, { recursive: true });
});
