/**
 * Gradcheck over every primitive and the composite ops: autodiff against float64 central differences (see
 * lib/autodiff/gradcheck.ts for why rtol 1e-5 is safe), with fresh random inputs away from kinks. The same
 * gradient graphs, computed by the wasm device in f32, are compared with their float64 reference values.
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { concat, type DeviceName, rand, type Shape, type Tensor, tensor } from "../../mod.ts";
import {
  customVjp,
  grad,
  gradcheck,
  type GradcheckOptions,
  type GradOptions,
  stopGradient,
  valueAndGrad,
} from "../../lib/autodiff/mod.ts";
import { OptionsError } from "../../lib/options.ts";
import { backprop } from "../../lib/autodiff/grad.ts";
import { constNode } from "../../lib/ir/node.ts";
import { Tensor as TensorClass } from "../../lib/tensor/tensor.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

/**
 * Uniform values in [lo, hi], kept at least 1e-3 from 0: relu and abs have a kink there, and central differences
 * with step 1e-6 across it are wrong (a draw within 1e-6 of 0 came up about once in 20,000 seeds).
 */
function maker(rng: TestRng, device: DeviceName = "cpu") {
  const draw = (lo: number, hi: number) => {
    const v = lo + (hi - lo) * rng.next();
    return Math.abs(v) >= 1e-3 ? v : v < 0 ? v - 1e-3 : v + 1e-3;
  };
  return (shape: number[], lo = -2, hi = 2): F => {
    const n = shape.reduce((a, b) => a * b, 1);
    return tensor(Float32Array.from({ length: n }, () => draw(lo, hi)), { shape, device });
  };
}

interface Case {
  name: string;
  inputs: (mk: ReturnType<typeof maker>, rng: TestRng) => F[];
  f: (...x: F[]) => Tensor;
}

const cases: Case[] = [
  { name: "neg", inputs: (mk) => [mk([3, 4])], f: (x) => x.neg() },
  { name: "reciprocal", inputs: (mk) => [mk([5], 0.5, 2)], f: (x) => x.reciprocal() },
  { name: "exp", inputs: (mk) => [mk([2, 3])], f: (x) => x.exp() },
  { name: "log", inputs: (mk) => [mk([6], 0.2, 3)], f: (x) => x.log() },
  { name: "sqrt", inputs: (mk) => [mk([6], 0.2, 3)], f: (x) => x.sqrt() },
  { name: "sin", inputs: (mk) => [mk([6])], f: (x) => x.sin() },
  { name: "cos", inputs: (mk) => [mk([6])], f: (x) => x.cos() },
  { name: "tanh", inputs: (mk) => [mk([6])], f: (x) => x.tanh() },
  { name: "abs", inputs: (mk) => [mk([8])], f: (x) => x.abs() },
  { name: "add with broadcasting", inputs: (mk) => [mk([3, 1, 4]), mk([2, 1])], f: (x, y) => x.add(y) },
  { name: "sub", inputs: (mk) => [mk([3, 4]), mk([4])], f: (x, y) => x.sub(y) },
  { name: "mul with broadcasting", inputs: (mk) => [mk([2, 3]), mk([3])], f: (x, y) => x.mul(y) },
  { name: "div", inputs: (mk) => [mk([2, 3]), mk([2, 3], 0.5, 2)], f: (x, y) => x.div(y) },
  { name: "maximum", inputs: (mk) => [mk([10]), mk([10])], f: (x, y) => x.maximum(y) },
  { name: "minimum", inputs: (mk) => [mk([10]), mk([10])], f: (x, y) => x.minimum(y) },
  { name: "pow", inputs: (mk) => [mk([5], 0.3, 2), mk([5], -1, 2)], f: (x, y) => x.pow(y) },
  { name: "where", inputs: (mk) => [mk([7]), mk([7]), mk([7])], f: (c, a, b) => c.gt(0).where(a, b) },
  { name: "sum over an axis", inputs: (mk) => [mk([3, 4, 2])], f: (x) => x.sum(1) },
  { name: "sum over all", inputs: (mk) => [mk([3, 4])], f: (x) => x.sum() },
  { name: "mean keepdims", inputs: (mk) => [mk([3, 4])], f: (x) => x.mean(0, { keepdims: true }) },
  { name: "max over an axis", inputs: (mk) => [mk([4, 5])], f: (x) => x.max(1) },
  { name: "min over all", inputs: (mk) => [mk([4, 5])], f: (x) => x.min() },
  { name: "var", inputs: (mk) => [mk([3, 6])], f: (x) => x.var(1) },
  { name: "logsumexp", inputs: (mk) => [mk([3, 6])], f: (x) => x.logsumexp(1) },
  { name: "softmax", inputs: (mk) => [mk([2, 5])], f: (x) => x.softmax() },
  { name: "logSoftmax axis 0", inputs: (mk) => [mk([4, 3])], f: (x) => x.logSoftmax(0) },
  { name: "sigmoid", inputs: (mk) => [mk([6])], f: (x) => x.sigmoid() },
  { name: "relu", inputs: (mk) => [mk([9])], f: (x) => x.relu() },
  { name: "gelu", inputs: (mk) => [mk([9])], f: (x) => x.gelu() },
  { name: "silu", inputs: (mk) => [mk([9])], f: (x) => x.silu() },
  { name: "matmul", inputs: (mk) => [mk([3, 4]), mk([4, 2])], f: (a, b) => a.matmul(b) },
  {
    name: "batched matmul with broadcast",
    inputs: (mk) => [mk([2, 3, 4]), mk([4, 5])],
    f: (a, b) => a.matmul(b),
  },
  { name: "matmul vector", inputs: (mk) => [mk([4]), mk([4, 3])], f: (a, b) => a.matmul(b) },
  {
    name: "reshape + permute",
    inputs: (mk) => [mk([2, 3, 4])],
    f: (x) => x.reshape([6, 4]).permute([1, 0]).exp(),
  },
  { name: "transpose", inputs: (mk) => [mk([3, 5])], f: (x) => x.T.mul(x.T) },
  { name: "expand", inputs: (mk) => [mk([3, 1])], f: (x) => x.expand([3, 4]).mul(x.expand([3, 4])) },
  { name: "slice with steps", inputs: (mk) => [mk([7, 6])], f: (x) => x.slice([1, 7, 2], [null, null, -2]) },
  { name: "slice index", inputs: (mk) => [mk([4, 5])], f: (x) => x.slice(2, [1, 4]) },
  { name: "pad", inputs: (mk) => [mk([3, 2])], f: (x) => x.pad([[1, 0], [2, 1]], 0.5).exp() },
  { name: "concat", inputs: (mk) => [mk([2, 3]), mk([2, 1])], f: (a, b) => concat([a, b], 1).square() },
  {
    name: "gather rows (embedding)",
    inputs: (mk) => [mk([5, 3])],
    f: (x) => x.gather(tensor(new Int32Array([4, 0, 4, 2]), { dtype: "i32", device: x.device }), 0),
  },
  {
    name: "gather on axis 1",
    inputs: (mk) => [mk([2, 5, 3])],
    f: (x) => x.gather(tensor(new Int32Array([1, 3, 3]), { dtype: "i32", device: x.device }), 1),
  },
  { name: "cast float round trip", inputs: (mk) => [mk([4])], f: (x) => x.cast("f32").mul(3) },
  {
    name: "a small MLP",
    inputs: (mk) => [mk([5, 4]), mk([4, 6]), mk([6]), mk([6, 2])],
    f: (x, w1, b1, w2) => x.matmul(w1).add(b1).gelu().matmul(w2).logSoftmax(),
  },
];

Deno.test("gradcheck: every primitive and composite against float64 finite differences", async (t) => {
  let salt = 0;
  for (const c of cases) {
    const rng = new TestRng(++salt);
    const xs = c.inputs(maker(rng), rng);
    await t.step(c.name, async () => {
      const r = await gradcheck(c.f as (...x: Tensor[]) => Tensor, xs);
      ok(r.analytic.some((g) => g.some((v) => v !== 0)), "some gradient is non-zero");
    });
  }
});

Deno.test("gradients of every gradcheck case computed on wasm match the float64 reference of the same graph", async (t) => {
  let salt = 0;
  for (const c of cases) {
    const rng = new TestRng(++salt);
    const xs = c.inputs(maker(rng, "wasm"), rng);
    await t.step(c.name, async () => {
      const out = c.f(...xs);
      // The vector-Jacobian product with a fixed projection, as gradcheck forms it.
      const loss = out.size === 1
        ? out.reshape([])
        : out.mul(rand(out.shape, { seed: 0, device: "wasm" }).add(0.5)).sum();
      const grads = backprop(loss.node, xs.map((x) => x.node), constNode(1, [], "f32", "wasm"));
      for (const [i, g] of grads.entries()) {
        const gt = new TensorClass(g);
        // f32 evaluation of graphs of a few dozen unit-scale operations: errors of a few ulp, far below 1e-4.
        const want = await reference(gt); // before gt.data() stores it
        assertClose(await gt.data(), want, {
          rtol: 1e-4,
          atol: 1e-5,
          what: `${c.name} input ${i}`,
        });
      }
    });
  }
});

Deno.test("stopGradient blocks the gradient; customVjp replaces it", async () => {
  const rng = new TestRng(100);
  const x = tensor(rng.normals(6), { device: "cpu" });
  const { grads } = valueAndGrad((p: { x: F }) => p.x.mul(stopGradient(p.x)).sum())({ x: x as F });
  // d/dx (x · sg(x)) = sg(x) = x
  assertClose(await grads.x.data(), await x.data(), { rtol: 1e-6 });
  // A custom rule that doubles the true gradient of square: 2·(2x·g).
  const sq = customVjp((a: F) => a.square(), (g, _out, a) => [g.mul(a).mul(4)]);
  const { grads: g2 } = valueAndGrad((p: { x: F }) => sq(p.x).sum())({ x: x as F });
  assertClose(await g2.x.data(), Array.from(await x.data(), (v) => 4 * v), { rtol: 1e-6 });
});

Deno.test("valueAndGrad differentiates f32 and f16 leaves of any tree; other leaves are refused by path", async () => {
  const rng = new TestRng(102);
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const [a, b, h, y] = [rng.normals(3), rng.normals(2), rng.normals(2), rng.normals(3)];
    const tree: { a: F; nested: [{ b: F }, Record<string, never>]; h: Tensor<Shape, "f16"> } = {
      a: tensor(a, { device }),
      nested: [{ b: tensor(b, { device }) }, {}],
      h: tensor(h, { dtype: "f16", device }),
    };
    const yt = tensor(y, { device }) as F;
    const ids = tensor([2, 0, 1], { dtype: "i32", device });
    // Integer inputs go in as further arguments. L = Σ a·y[ids] + Σ b³ + Σ h²: dL/da = y[ids], dL/db = 3b²,
    // dL/dh = 2h (h rounded to f16, its gradient too).
    const loss = (p: typeof tree, i: typeof ids) =>
      p.a.mul(yt.gather(i)).sum().add(p.nested[0].b.pow(3).sum()).add(p.h.cast("f32").square().sum());
    const g = grad(loss)(tree, ids);
    const what = `${device}: gradient`;
    assertClose(await g.a.data(), [y[2], y[0], y[1]], { rtol: 0, atol: 0, what });
    assertClose(await g.nested[0].b.data(), Array.from(b, (v) => 3 * v * v), { rtol: 1e-6, what });
    deepEqual(g.nested[1], {});
    equal(g.h.dtype, "f16");
    const h16 = await tree.h.data();
    assertClose(await g.h.data(), Array.from(h16, (v) => 2 * v), { rtol: 2 ** -11, atol: 0, what });
    // A gradient with respect to an integer or bool leaf came back as zeros of its dtype, a number leaf as {},
    // and a null leaf failed in Object.entries without a path.
    const bad = (t: unknown) => grad((p: typeof tree) => p.a.sum())(t as typeof tree);
    throws(
      () => bad(ids),
      /valueAndGrad: the parameter tree is a tensor of dtype i32; gradients .* f32 and f16/,
    );
    const mask = tensor([1, 0], { dtype: "bool", device });
    throws(
      () => bad({ ...tree, nested: [{ b: tree.a, m: mask }] }),
      /"nested\.0\.m" is a tensor of dtype bool/,
    );
    throws(() => bad({ ...tree, lr: 0.1 }), /"lr" is a number \(0\.1\), not a tensor, an array or a plain/);
    throws(() => bad({ ...tree, nested: [null] }), /"nested\.0" is null, not a tensor/);
    throws(
      () => bad({ ...tree, m: new Linear(2, 2, { seed: 0 }) }),
      /"m" is a Linear, .* pass parameters\(module\)/,
    );
  }
});

Deno.test("gradcheck's step and tolerances take effect; unknown or bad options of gradcheck and valueAndGrad are refused", async () => {
  const rng = new TestRng(103);
  const x = Float64Array.from(rng.normals(4));
  const cube = (t: Tensor) => t.pow(3).sum();
  // Central differences of x³ with step e give 3x² + e² exactly: e = 0.01 is 1e-4 from the gradient 3x².
  const r = await gradcheck(cube, [tensor(Float32Array.from(x), { device: "cpu" })], {
    eps: 1e-2,
    rtol: 0,
    atol: 2e-4,
  });
  const x32 = Float32Array.from(x);
  assertClose(r.numeric[0], Array.from(x32, (v) => 3 * v * v + 1e-4), {
    rtol: 1e-9,
    atol: 1e-9,
    what: "numeric",
  });
  await rejects(
    gradcheck(cube, [tensor(x32, { device: "cpu" })], { eps: 1e-2, rtol: 0, atol: 5e-5 }),
    /gradcheck: input 0 \(shape \[4\]\) element 0/,
  );
  const bad = async (opts: object, message: string) => {
    let called = false;
    const f = (t: Tensor) => (called = true, cube(t));
    await rejects(
      gradcheck(f, [tensor(x32, { device: "cpu" })], opts as GradcheckOptions),
      (e: Error) => e instanceof OptionsError && e.message === `gradcheck: ${message}`,
    );
    ok(!called, "refused before f runs");
  };
  // { tol } was dropped (the default tolerances applied); a step of 0 divided by 0; a NaN tolerance failed any input.
  await bad({ tol: 1e-3 }, 'unknown option "tol"');
  await bad({ eps: 0 }, 'option "eps" must be > 0, got 0');
  await bad({ rtol: NaN }, 'option "rtol" must be a finite number, got NaN');
  await bad({ atol: -1e-7 }, 'option "atol" must be >= 0, got -1e-7');
  await bad({ seed: 0.5 }, 'option "seed" must be an integer, got 0.5');
  const loss = (p: { w: F }) => [p.w.sum(), 1] as [F, number];
  throws(
    () => valueAndGrad(loss, { hasaux: true } as GradOptions),
    (e: Error) => e instanceof OptionsError && e.message === 'valueAndGrad: unknown option "hasaux"',
  );
  throws(
    () => valueAndGrad(loss, { hasAux: "yes" } as unknown as GradOptions),
    /^OptionsError: valueAndGrad: option "hasAux" must be true or false, got "yes"$/,
  );
});

Deno.test("gradients computed on webgpu match the float64 reference of the same graph", async () => {
  const rng = new TestRng(101);
  const mk = (shape: number[]) =>
    tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape, device: "webgpu" }) as unknown as F;
  const params = { w1: mk([16, 32]), b1: mk([32]), w2: mk([32, 10]) };
  const x = mk([24, 16]);
  const y = tensor(Int32Array.from({ length: 24 }, () => rng.int(0, 9)), { dtype: "i32", device: "webgpu" });
  const loss = (p: typeof params) => {
    const logits = x.matmul(p.w1).add(p.b1).relu().matmul(p.w2);
    return logits.logSoftmax().mul(y.oneHot(10)).sum().neg().div(24);
  };
  const { value, grads } = valueAndGrad(loss)(params);
  // The float64 references first: reading a tensor stores it.
  const want = {
    w1: await reference(grads.w1),
    b1: await reference(grads.b1),
    w2: await reference(grads.w2),
  };
  const wantValue = await reference(value);
  for (const k of ["w1", "b1", "w2"] as const) {
    // Sums of ≤ 32 products of unit-scale numbers: f32 error ~1e-6, so atol 1e-4 has a wide margin.
    assertClose(await grads[k].data(), want[k], { rtol: 1e-4, atol: 1e-4, what: k });
  }
  assertClose([await value.item()], wantValue, { rtol: 1e-5 });
});

Deno.test("relu: value max(x, 0), gradient 1 above 0 and 0 at and below 0", async () => {
  const rng = new TestRng(1301);
  // Fresh values, a third of them exactly 0 (where maximum(x, 0) would split the gradient ½ / ½).
  const xs = Array.from({ length: 48 }, (_, i) => (i % 3 === 0 ? 0 : rng.normal()));
  for (const device of ["cpu", "webgpu"] as const) {
    const x = tensor(Float32Array.from(xs), { device }) as Tensor<Shape, "f32">;
    const { value, grads } = valueAndGrad((p: { x: Tensor<Shape, "f32"> }) => p.x.relu().sum())({ x });
    const g = Array.from((await grads.x.data()) as Float32Array);
    assertClose(g, xs.map((v) => (v > 0 ? 1 : 0)), { atol: 0, what: `${device}: d relu/dx` });
    assertClose([await value.item()], [xs.reduce((s, v) => s + Math.max(v, 0), 0)], { rtol: 1e-6 });
    const y = Array.from((await tensor([-2, 0, 3], { device }).relu().data()) as Float32Array);
    ok(Object.is(y[0], 0) && Object.is(y[1], 0) && y[2] === 3, `${device}: ${y}`);
  }
});

Deno.test("maximum and minimum: gradient to the larger (smaller) input, halved on ties, whole to both where a side is NaN", async () => {
  const rng = new TestRng(1303);
  // Fresh small integers (many ties), with NaN, ∞ and −∞ on either side or both; c weighs each output.
  const pool = [NaN, Infinity, -Infinity];
  const draw = () => (rng.next() < 0.3 ? pool[rng.int(0, 2)] : rng.int(-2, 2));
  const n = 64;
  const [xs, ys] = [Array.from({ length: n }, draw), Array.from({ length: n }, draw)];
  const cs = Array.from({ length: n }, () => rng.normal());
  // torch.maximum's derivative (derivatives.yaml): where(x == y, g/2, g) with 0 where x < y (x's share) or y < x
  // (y's share); a NaN is neither smaller nor equal, so both sides get g. minimum swaps < for >.
  const share = (a: number, b: number, smaller: (a: number, b: number) => boolean) =>
    smaller(a, b) ? 0 : a === b ? 0.5 : 1;
  const lt = (a: number, b: number) => a < b;
  const gt = (a: number, b: number) => a > b;
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const make = (v: number[]) => tensor(Float32Array.from(v), { device }) as F;
    const c = make(cs);
    for (const [op, smaller] of [["maximum", lt], ["minimum", gt]] as const) {
      const f = (p: { x: F; y: F }) => p.x[op](p.y).mul(c).sum();
      const { grads } = valueAndGrad(f)({ x: make(xs), y: make(ys) });
      const cf32 = Array.from(await c.data());
      const want = (mine: number[], other: number[]) =>
        mine.map((a, i) => cf32[i] * share(a, other[i], smaller));
      const where = `${device}: d ${op}`;
      assertClose(await grads.x.data(), want(xs, ys), {
        rtol: 0,
        atol: 0,
        what: `${where}/dx, x ${xs}, y ${ys}`,
      });
      assertClose(await grads.y.data(), want(ys, xs), {
        rtol: 0,
        atol: 0,
        what: `${where}/dy, x ${xs}, y ${ys}`,
      });
    }
  }
});

Deno.test("sigmoid and silu: gradients σ(1 − σ) and σ + x·σ(1 − σ), finite and accurate far below 0", async () => {
  const rng = new TestRng(1302);
  // Fresh values in [-120, 30], where e^-x overflows f32 below -88.7, with the points -100, -90, -50 and 0.
  const xs = [-100, -90, -50, 0, ...Array.from({ length: 60 }, () => -120 + 150 * rng.next())];
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  const dSig = xs.map((v) => sig(v) * (1 - sig(v)));
  const dSilu = xs.map((v, i) => sig(v) + v * dSig[i]);
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const x = tensor(Float32Array.from(xs), { device }) as F;
    const gs = grad((p: F) => p.sigmoid().sum())(x);
    const gl = grad((p: F) => p.silu().sum())(x);
    // σ in f32 carries exp's error (a few ulp, more on GPUs for |x| near 100); below x ≈ -87 σ is subnormal or 0
    // in f32, hence the absolute 1e-37. Above 0, 1 − σ is rounded to 2⁻²⁴ ≈ 6e-8 absolute (σ(20) is 1 in f32, as
    // in PyTorch), so positive x get 1e-7 more.
    const above = xs.map((v) => (v > 0 ? 1e-7 : 0));
    assertClose(await gs.data(), dSig, {
      rtol: 1e-4,
      atol: 1e-37,
      atolEach: above,
      what: `${device}: d sigmoid/dx`,
    });
    assertClose(await gl.data(), dSilu, { rtol: 1e-4, atol: 1e-35, what: `${device}: d silu/dx` });
  }
});

Deno.test("pow: d(x^y)/dx = y·x^(y-1), 0 where y = 0 at x = 0 too (PyTorch's rule), on every device", async () => {
  const rng = new TestRng(1303);
  // Fresh bases, a third of them exactly 0; integer exponents from 0 to 3, a third of them 0.
  const xs = Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? 0 : 4 * rng.next() - 2));
  const ys = Array.from({ length: 30 }, (_, i) => (i % 3 === 1 ? 0 : rng.int(0, 3)));
  const want = xs.map((x, i) => (ys[i] === 0 ? 0 : ys[i] * x ** (ys[i] - 1)));
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const x = tensor(Float32Array.from(xs), { device }) as F;
    const y = tensor(Float32Array.from(ys), { device }) as F;
    assertClose(await grad((p: F) => p.pow(y).sum())(x).data(), want, {
      rtol: 1e-5,
      what: `${device} d x^y`,
    });
    const zero = Array.from(await grad((p: F) => p.pow(0).sum())(x).data());
    ok(zero.every((v) => v === 0), `${device}: d x^0 = ${zero}`);
  }
});
