/**
 * Every nn composite against float64 central differences (lib/autodiff/gradcheck.ts), on device "cpu" with tiny
 * sizes and fresh random inputs. Modules are checked through `functionalCall`, so the test also covers
 * differentiating a module with respect to a record of its parameters.
 */
import { ok } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { gradcheck } from "../../lib/autodiff/mod.ts";
import {
  applyRope,
  Attention,
  causalAttention,
  crossEntropy,
  dropout,
  embedding,
  functionalCall,
  LayerNorm,
  layerNorm,
  Linear,
  linear,
  mse,
  namedParameters,
  RMSNorm,
  rmsNorm,
  ropeTables,
  SwiGLU,
  swiglu,
  TransformerBlock,
} from "../../lib/nn/mod.ts";
import { TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

const rng = new TestRng(11);
const seed = () => rng.int(0, 2 ** 30);

/** A concrete float tensor on the cpu device with values uniform in [lo, hi). */
function mk(shape: number[], lo = -1, hi = 1): F {
  const n = shape.reduce((a, b) => a * b, 1);
  return tensor(Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.next()), {
    shape,
    device: "cpu",
  }) as F;
}

function ids(shape: number[], n: number, ignore: number[] = []): Tensor<Shape, "i32"> {
  const count = shape.reduce((a, b) => a * b, 1);
  const data = Int32Array.from({ length: count }, (_, i) => (ignore.includes(i) ? -100 : rng.int(0, n - 1)));
  return tensor(data, { shape, dtype: "i32", device: "cpu" }) as Tensor<Shape, "i32">;
}

/** Gradcheck of a module's forward with respect to the input and every parameter. */
async function checkModule(module: object, x: F, forward: (x: F) => Tensor): Promise<void> {
  const named = namedParameters(module);
  const paths = named.map(([p]) => p);
  const f = (input: Tensor, ...ps: Tensor[]) =>
    functionalCall(module, Object.fromEntries(paths.map((p, i) => [p, ps[i]])), () => forward(input as F));
  const r = await gradcheck(f, [x, ...named.map(([, t]) => t)]);
  r.analytic.forEach((g, i) =>
    ok(g.some((v) => v !== 0), `gradient of ${i === 0 ? "x" : paths[i - 1]} is zero`)
  );
}

Deno.test("gradcheck: linear (functional and Linear module)", async () => {
  await gradcheck((x, w, b) => linear(x as F, w as F, b as F), [mk([2, 3, 4]), mk([5, 4]), mk([5])]);
  const layer = new Linear(3, 2, { seed: seed(), device: "cpu" });
  await checkModule(layer, mk([4, 3]), (x) => layer.forward(x));
});

Deno.test("gradcheck: layerNorm and LayerNorm", async () => {
  await gradcheck((x, w, b) => layerNorm(x as F, w as F, b as F), [mk([3, 6]), mk([6]), mk([6])]);
  const norm = new LayerNorm(5, { device: "cpu" });
  await checkModule(norm, mk([2, 5]), (x) => norm.forward(x).mul(mk([2, 5])));
});

Deno.test("gradcheck: rmsNorm and RMSNorm", async () => {
  await gradcheck((x, w) => rmsNorm(x as F, w as F), [mk([3, 6]), mk([6])]);
  const norm = new RMSNorm(4, { device: "cpu" });
  await checkModule(norm, mk([3, 4]), (x) => norm.forward(x).mul(mk([3, 4])));
});

Deno.test("gradcheck: RoPE and causal attention with GQA", async () => {
  const tables = ropeTables(4, 3, { device: "cpu" });
  await gradcheck((x) => applyRope(x as F, tables), [mk([1, 3, 2, 4])]);
  await gradcheck(
    (q, k, v) => causalAttention(q as F, k as F, v as F),
    [mk([2, 3, 4, 2]), mk([2, 3, 2, 2]), mk([2, 3, 2, 2])],
  );
  const attn = new Attention(8, { nHeads: 4, nKvHeads: 2, seed: seed(), device: "cpu" });
  await checkModule(attn, mk([1, 3, 8]), (x) => attn.forward(x));
});

Deno.test("gradcheck: swiglu, SwiGLU and a transformer block", async () => {
  await gradcheck((x, a, b, c) => swiglu(x as F, a as F, b as F, c as F), [
    mk([2, 4]),
    mk([6, 4]),
    mk([4, 6]),
    mk([6, 4]),
  ]);
  const ffn = new SwiGLU(4, 6, { seed: seed(), device: "cpu" });
  await checkModule(ffn, mk([3, 4]), (x) => ffn.forward(x));
  const block = new TransformerBlock(8, {
    nHeads: 2,
    nKvHeads: 1,
    hiddenDim: 6,
    seed: seed(),
    device: "cpu",
  });
  await checkModule(block, mk([1, 3, 8]), (x) => block.forward(x));
});

Deno.test("gradcheck: cross-entropy with ignore-index, weights and every reduction", async () => {
  const targets = ids([3, 4], 5, [1, 6]);
  const weights = mk([3, 4], 0, 1);
  for (const reduction of ["mean", "sum", "none"] as const) {
    const r = await gradcheck((lg) => crossEntropy(lg as F, targets, { reduction }), [mk([3, 4, 5], -3, 3)]);
    // Rows with an ignored target get no gradient.
    for (const row of [1, 6]) ok(r.analytic[0].slice(row * 5, row * 5 + 5).every((v) => v === 0));
    // With respect to the weights as well: d/dw of Σ w·CE is the CE (0 at an ignored target).
    const f = (lg: Tensor, w: Tensor) => crossEntropy(lg as F, targets, { reduction, weights: w as F });
    const rw = await gradcheck(f, [mk([3, 4, 5], -3, 3), weights]);
    ok(rw.analytic[1].some((v) => v !== 0), `${reduction}: the gradient of the weights is zero`);
    for (const i of [1, 6]) ok(rw.analytic[1][i] === 0, `${reduction}: ignored target ${i}`);
  }
  await gradcheck((lg) => crossEntropy(lg as F, ids([4], 3)), [mk([4, 3], -30, 30)]);
});

Deno.test("gradcheck: mse, embedding and dropout", async () => {
  await gradcheck((a, b) => mse(a as F, b as F), [mk([3, 4]), mk([3, 4])]);
  await gradcheck((a, b) => mse(a as F, b as F, { reduction: "sum" }), [mk([5]), mk([2, 5])]);
  await gradcheck((w) => embedding(ids([2, 3], 4), w as F), [mk([4, 3])]);
  await gradcheck((x) => dropout(x as F, 0.3, { seed: seed() }), [mk([4, 5])]);
});
