/**
 * Parameter trees: paths, order, tied weights, submodule replacement, loading with shape checks, and
 * functionalCall as a differentiable function of a parameter record.
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { ones, type Shape, type Tensor, tensor } from "../../mod.ts";
import { valueAndGrad } from "../../lib/autodiff/mod.ts";
import {
  AdamW,
  checkDistinctParameters,
  constantParam,
  functionalCall,
  getAt,
  Linear,
  loadParameters,
  Module,
  namedModules,
  namedParameters,
  type ParamDict,
  parameterCount,
  parameters,
  replaceModule,
  TransformerBlock,
} from "../../lib/nn/mod.ts";
import { assertClose, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

class Tiny extends Module {
  layers: TransformerBlock[];
  head: Linear;
  #note = "config lives in private fields";
  constructor(seed: number) {
    super();
    this.layers = [0, 1].map((i) =>
      new TransformerBlock(8, { nHeads: 2, nKvHeads: 1, hiddenDim: 12, seed: seed + i, device: "cpu" })
    );
    this.head = new Linear(8, 3, { seed, device: "cpu" });
  }
  get note(): string {
    return this.#note;
  }
}

Deno.test("namedParameters: dotted paths in definition order; private fields and getters are not parameters", () => {
  const model = new Tiny(new TestRng(31).int(0, 1e6));
  const paths = namedParameters(model).map(([p]) => p);
  deepEqual(paths.slice(0, 9), [
    "layers.0.attention_norm.weight",
    "layers.0.attention.wq.weight",
    "layers.0.attention.wk.weight",
    "layers.0.attention.wv.weight",
    "layers.0.attention.wo.weight",
    "layers.0.ffn_norm.weight",
    "layers.0.feed_forward.w1.weight",
    "layers.0.feed_forward.w2.weight",
    "layers.0.feed_forward.w3.weight",
  ]);
  deepEqual(paths.slice(-2), ["head.weight", "head.bias"]);
  equal(paths.length, 20);
  equal(parameters(model)["layers.1.attention.wk.weight"].shape.join(), "4,8");
  equal(parameterCount(model), 2 * (8 + 64 + 32 + 32 + 64 + 8 + 3 * 96) + 24 + 3);
  deepEqual(
    namedParameters(model, { filter: /attention\.w[qv]/ }).map(([p]) => p),
    [
      "layers.0.attention.wq.weight",
      "layers.0.attention.wv.weight",
      "layers.1.attention.wq.weight",
      "layers.1.attention.wv.weight",
    ],
  );
  deepEqual(namedModules(model).map(([p]) => p).filter((p) => p.endsWith("wq")), [
    "layers.0.attention.wq",
    "layers.1.attention.wq",
  ]);
  equal(namedModules(model)[0][0], "");
  equal(model.note, "config lives in private fields");
});

Deno.test("replaceModule swaps a layer by path; tied weights are listed once and stay tied on load", () => {
  const model = new Tiny(3);
  const swapIn = new Linear(8, 8, { seed: 9, bias: true, device: "cpu" });
  const old = replaceModule(model, "layers.1.attention.wq", swapIn);
  ok(old instanceof Linear);
  equal(getAt(model, "layers.1.attention.wq"), swapIn);
  ok(namedParameters(model).some(([p]) => p === "layers.1.attention.wq.bias"));
  throws(() => replaceModule(model, "layers.1.attention.nope", swapIn), /no field "nope"/);
  throws(() => replaceModule(model, "head.weight", swapIn), /not a module/);

  const shared = constantParam([2, 2], 0.5);
  const tied = { enc: { w: shared }, dec: { w: shared } };
  deepEqual(namedParameters(tied).map(([p]) => p), ["enc.w"]);
  const next = tensor([[1, 2], [3, 4]]);
  loadParameters(tied, { "enc.w": next });
  ok(tied.enc.w === next && tied.dec.w === next, "both uses replaced");
});

Deno.test("loadParameters checks paths, shapes and dtypes with readable errors", () => {
  const layer = new Linear(2, 3, { seed: 1 });
  throws(
    () => loadParameters(layer, { weight: tensor([[1, 2]]) }),
    /"weight" is \[3, 2\] f32 in the model but the new tensor is \[1, 2\]/,
  );
  throws(() => loadParameters(layer, { wieght: tensor([[1, 2]]) }), /not in the model: wieght/);
  loadParameters(layer, { wieght: tensor([[1, 2]]) }, { strict: false });
  const w = constantParam([3, 2], 2);
  loadParameters(layer, { weight: w });
  equal(layer.weight, w);
  // Lazy constants are hash-consed: two ones([2]) are one node, which would share one gradient.
  throws(
    () => checkDistinctParameters([["a", ones([2])], ["b", ones([2])]], "test"),
    /"a" and "b" are the same expression/,
  );
});

Deno.test("functionalCall: gradients with respect to a parameter record; the model is restored", async () => {
  const rng = new TestRng(32);
  const layer = new Linear(3, 2, { seed: rng.int(0, 1e6) });
  const x = tensor(rng.normals(12), { shape: [4, 3] });
  const original = layer.weight;
  const lossOf = (p: ParamDict) => functionalCall(layer, p, () => layer.forward(x).square().sum());
  const p = { weight: tensor(rng.normals(6), { shape: [2, 3] }), bias: tensor(rng.normals(2)) };
  const { value, grads } = valueAndGrad(lossOf)(p);
  equal(layer.weight, original, "restored after the call");
  // d/dW Σ(xWᵀ + b)² = 2 (xWᵀ + b)ᵀ x
  const xs = await x.data();
  const ws = await p.weight.data();
  const bs = await p.bias.data();
  const y = Array.from({ length: 8 }, (_, k) => {
    const [r, o] = [Math.floor(k / 2), k % 2];
    return bs[o] + [0, 1, 2].reduce((s, i) => s + xs[r * 3 + i] * ws[o * 3 + i], 0);
  });
  const gw = Array.from({ length: 6 }, (_, k) => {
    const [o, i] = [Math.floor(k / 3), k % 3];
    return [0, 1, 2, 3].reduce((s, r) => s + 2 * y[r * 2 + o] * xs[r * 3 + i], 0);
  });
  assertClose(await grads.weight.data(), gw, { rtol: 1e-5, atol: 1e-5 });
  assertClose([await value.item()], [y.reduce((s, v) => s + v * v, 0)], { rtol: 1e-5 });
  throws(
    () => functionalCall(layer, { weight: tensor([1]) }, () => 0),
    /is \[2, 3\] f32 in the model, got \[1\] f32/,
  );
  throws(() =>
    functionalCall(layer, {}, () => {
      throw new Error("boom");
    }), /boom/);
  equal(layer.weight, original);
  throws(
    () =>
      functionalCall(layer, { weight: tensor([1, 2, 3, 4, 5, 6], { shape: [2, 3], dtype: "i32" }) }, () => 0),
    /"weight" is \[2, 3\] f32 in the model, got \[2, 3\] i32/,
  );
});

Deno.test("functionalCall puts every place back: a tensor passed in that is also another parameter, or passed twice", () => {
  const rng = new TestRng(33);
  const tree = {
    a: new Linear(2, 2, { seed: rng.int(0, 1e6) }),
    b: new Linear(2, 2, { seed: rng.int(0, 1e6) }),
  };
  const [a0, b0, ab0, bb0] = [tree.a.weight, tree.b.weight, tree.a.bias!, tree.b.bias!];
  // b's weight put at a's path: inside the call both paths hold it; afterwards each holds its own again (before,
  // swapping back by identity also turned b.weight into a's old weight).
  const seen = functionalCall(tree, { "a.weight": b0 }, () => [tree.a.weight, tree.b.weight]);
  deepEqual(seen, [b0, b0]);
  equal(tree.a.weight, a0);
  equal(tree.b.weight, b0);
  // One tensor for two paths (before, a.weight came back as b's old weight).
  const x = tensor(rng.normals(4), { shape: [2, 2] });
  functionalCall(tree, { "a.weight": x, "b.weight": x }, () => 0);
  equal(tree.a.weight, a0);
  equal(tree.b.weight, b0);
  // Two parameters exchanged.
  const swapped = functionalCall(tree, { "a.bias": bb0, "b.bias": ab0 }, () => [tree.a.bias, tree.b.bias]);
  deepEqual(swapped, [bb0, ab0]);
  equal(tree.a.bias, ab0);
  equal(tree.b.bias, bb0);
});

Deno.test("a Map or Set of modules or tensors is refused by name, not left out of the parameters", () => {
  class Heads extends Module {
    heads = new Map([["x", new Linear(2, 2, { seed: 0 })]]);
    out = new Linear(2, 1, { seed: 1 });
  }
  const cases: [object, RegExp][] = [
    [new Heads(), /"heads" is a Map holding tensors or modules/],
    [{ a: { s: new Set([[new Linear(2, 2, { seed: 2 })]]) } }, /"a\.s" is a Set holding tensors or modules/],
  ];
  for (const [model, re] of cases) {
    throws(() => namedParameters(model), re);
    throws(() => new AdamW(model, { lr: 1e-3 }), re);
  }
  // A Map of plain values (no parameters in it) is no error.
  deepEqual(
    namedParameters({ ids: new Map([["a", 1]]), fc: new Linear(2, 1, { seed: 3 }) }).map(([p]) => p),
    [
      "fc.weight",
      "fc.bias",
    ],
  );
});

Deno.test("an instance of a class that is not a Module, holding modules or tensors, is refused by name", () => {
  class Head {
    w = new Linear(2, 2, { seed: 0 });
  }
  class Holder {
    inner = { head: new Head() };
    scale = tensor([1]);
  }
  class Model extends Module {
    head = new Head();
    out = new Linear(2, 1, { seed: 1 });
  }
  const cases: [object, RegExp][] = [
    [
      new Model(),
      /"head" is an instance of Head, which is not a Module, holding tensors or modules.*extend Module/,
    ],
    [
      { a: [new Holder()] },
      /"a\.0" is an instance of Holder, which is not a Module, holding tensors or modules/,
    ],
  ];
  for (const [model, re] of cases) {
    throws(() => namedParameters(model), re);
    throws(() => new AdamW(model, { lr: 1e-3 }), re);
  }
  // Instances without parameters in them (options, typed arrays, dates) are no error.
  class Options {
    size = 2;
  }
  const fine = {
    opts: new Options(),
    table: new Float32Array(4),
    when: new Date(0),
    fc: new Linear(2, 1, { seed: 3 }),
  };
  deepEqual(namedParameters(fine).map(([p]) => p), ["fc.weight", "fc.bias"]);
});
