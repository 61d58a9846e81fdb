/**
 * Every op against the float64 reference (lib/ir/reference.ts, which shares no code with the scheduler or the
 * renderers), on every backend, with fresh random inputs and shapes that are not multiples of the workgroup size,
 * size-1 and size-0 dimensions, broadcasting and non-contiguous views.
 *
 * Tolerances: elementwise f32 chains are held to rtol 1e-5 / atol 1e-5 (a few ulp of f32, 2^-24 ≈ 6e-8 each, plus
 * the WGSL builtins' error); sin/cos to atol 5e-4 (the WGSL spec allows 2^-11 absolute on [-π, π]); sums and
 * matmuls of n terms of size ~1 to atol 2e-4 (the expected f32 rounding error √n·2^-24·Σ|x| is ~1e-5 for n ≤ 300,
 * while any indexing mistake moves results by O(1)).
 */
import { equal as assertEquals } from "node:assert/strict";
import { concat, type DeviceName, eye, full, stack, type Tensor, tensor, zeros } from "../../mod.ts";
import { arange } from "../../mod.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";
import { realizeNodes } from "../../lib/runtime/realize.ts";
import { getBackend } from "../../mod.ts";
import type { Shape } from "../../lib/shape.ts";
import { layerNorm, rmsNorm } from "../../lib/nn/norm.ts";
import { grad } from "../../lib/autodiff/grad.ts";

type F = Tensor<Shape, "f32">;
type Make = (shape: number[], opts?: { lo?: number; hi?: number; int?: boolean }) => F;

interface Case {
  name: string;
  build: (mk: Make, rng: TestRng, dev: DeviceName) => Tensor;
  rtol?: number;
  atol?: number;
}

const EW = { rtol: 1e-5, atol: 1e-5 };
const RED = { rtol: 1e-5, atol: 2e-4 };

const cases: Case[] = [
  // unary elementwise (odd sizes, not multiples of 64)
  { name: "neg", build: (mk) => mk([7, 13]).neg(), ...EW },
  { name: "exp", build: (mk) => mk([67], { lo: -4, hi: 4 }).exp(), ...EW },
  { name: "log", build: (mk) => mk([5, 31], { lo: 0.01, hi: 50 }).log(), ...EW },
  { name: "sqrt", build: (mk) => mk([3, 3, 11], { lo: 0, hi: 9 }).sqrt(), ...EW },
  { name: "rsqrt", build: (mk) => mk([129], { lo: 0.1, hi: 9 }).rsqrt(), ...EW },
  { name: "sin", build: (mk) => mk([65], { lo: -3.1, hi: 3.1 }).sin(), rtol: 0, atol: 5e-4 },
  { name: "cos", build: (mk) => mk([65], { lo: -3.1, hi: 3.1 }).cos(), rtol: 0, atol: 5e-4 },
  { name: "tanh incl. large |x|", build: (mk) => mk([9, 9], { lo: -40, hi: 40 }).tanh(), ...EW },
  { name: "abs", build: (mk) => mk([1, 17]).abs(), ...EW },
  { name: "sigmoid", build: (mk) => mk([70], { lo: -20, hi: 20 }).sigmoid(), ...EW },
  { name: "relu", build: (mk) => mk([4, 33]).relu(), ...EW },
  { name: "gelu", build: (mk) => mk([4, 33], { lo: -6, hi: 6 }).gelu(), ...EW },
  { name: "silu", build: (mk) => mk([4, 33], { lo: -6, hi: 6 }).silu(), ...EW },
  { name: "square", build: (mk) => mk([100]).square(), ...EW },
  { name: "reciprocal", build: (mk) => mk([50], { lo: 0.5, hi: 4 }).reciprocal(), ...EW },
  {
    name: "cast f32->i32 truncates",
    build: (mk) => mk([40], { lo: -100, hi: 100 }).cast("i32"),
    rtol: 0,
    atol: 0,
  },
  {
    // WGSL's own conversion clamps to 2^31 − 128 and leaves NaN unspecified; every backend saturates instead.
    name: "cast f32->i32 and f32->u32 saturate, NaN gives 0",
    build: (_mk, _r, dev) => {
      const x = tensor([NaN, Infinity, -Infinity, 3e9, -3e9, 2147483648, 5e9, -0.7, 1.9, 4294967296], {
        device: dev,
      }).mul(1);
      return x.cast("i32").cast("f32").add(x.cast("u32").cast("f32"));
    },
    rtol: 0,
    atol: 0,
  },
  {
    // NaN casts to true, as in C, NumPy and PyTorch (a shader compiler may assume NaN != 0 is false).
    name: "cast f32->bool, NaN and infinities included",
    build: (_mk, _r, dev) =>
      tensor([NaN, 0, -0, 1e-30, -2, Infinity, -Infinity], { device: dev }).mul(1).cast("bool"),
    rtol: 0,
    atol: 0,
  },
  {
    name: "cast i32->f32",
    build: (mk) => mk([40], { lo: -100, hi: 100, int: true }).cast("i32").cast("f32"),
    ...EW,
  },
  // binary with broadcasting
  { name: "add broadcast", build: (mk) => mk([3, 1, 5]).add(mk([4, 1])), ...EW },
  { name: "sub scalar", build: (mk) => mk([6, 7]).sub(2.5), ...EW },
  { name: "mul broadcast", build: (mk) => mk([5]).mul(mk([3, 5])), ...EW },
  { name: "div", build: (mk) => mk([2, 9]).div(mk([2, 9], { lo: 0.5, hi: 3 })), ...EW },
  {
    name: "pow positive base",
    build: (mk) => mk([20], { lo: 0.1, hi: 3 }).pow(mk([20], { lo: -2, hi: 2 })),
    ...EW,
  },
  {
    name: "pow negative base, integer exponents",
    build: (mk) => mk([4, 5], { lo: -3, hi: -0.5 }).pow(mk([4, 1], { lo: 0, hi: 4, int: true })),
    ...EW,
  },
  { name: "maximum", build: (mk) => mk([8, 3]).maximum(mk([3])), ...EW },
  { name: "minimum", build: (mk) => mk([8, 3]).minimum(0), ...EW },
  { name: "lt", build: (mk) => mk([9, 4]).lt(mk([4])), rtol: 0, atol: 0 },
  {
    name: "gt le ge ne combined",
    build: (mk) => {
      const a = mk([30], { lo: -2, hi: 2, int: true });
      const b = mk([30], { lo: -2, hi: 2, int: true });
      return a.gt(b).cast("f32").add(a.le(b).cast("f32").mul(2)).add(a.ge(b).cast("f32").mul(4)).add(
        a.ne(b).cast("f32").mul(8),
      );
    },
    rtol: 0,
    atol: 0,
  },
  { name: "where", build: (mk) => mk([5, 6]).gt(0).where(mk([5, 6]), mk([6])), ...EW },
  {
    name: "i32 arithmetic",
    build: (mk) => {
      const a = mk([25], { lo: -50, hi: 50, int: true }).cast("i32");
      const b = mk([25], { lo: 1, hi: 7, int: true }).cast("i32");
      return a.mul(b).add(a).div(b).sub(3);
    },
    rtol: 0,
    atol: 0,
  },
  // reductions
  { name: "sum all", build: (mk) => mk([17, 19]).sum(), ...RED },
  { name: "sum axis 0", build: (mk) => mk([37, 5]).sum(0), ...RED },
  { name: "sum axis -1 keepdims", build: (mk) => mk([4, 3, 70]).sum(-1, { keepdims: true }), ...RED },
  { name: "sum of several axes", build: (mk) => mk([4, 3, 5]).sumAxes([0, 2]), ...RED },
  { name: "mean axis 1", build: (mk) => mk([6, 65, 2]).mean(1), ...RED },
  { name: "max axis 1", build: (mk) => mk([6, 65, 2]).max(1), ...EW },
  { name: "min all", build: (mk) => mk([33, 3]).min(), ...EW },
  {
    name: "argmax axis 1",
    build: (mk) => mk([7, 12], { lo: -3, hi: 3, int: true }).argmax(1),
    rtol: 0,
    atol: 0,
  },
  {
    name: "argmax axis 0 keepdims",
    build: (mk) => mk([9, 4]).argmax(0, { keepdims: true }),
    rtol: 0,
    atol: 0,
  },
  { name: "var axis 0", build: (mk) => mk([40, 3]).var(0), ...RED },
  { name: "var sample correction", build: (mk) => mk([3, 40]).var(1, { correction: 1 }), ...RED },
  { name: "logsumexp", build: (mk) => mk([5, 50], { lo: -30, hi: 30 }).logsumexp(1), ...RED },
  { name: "softmax", build: (mk) => mk([6, 70], { lo: -10, hi: 10 }).softmax(), ...EW },
  { name: "softmax axis 0", build: (mk) => mk([6, 7]).softmax(0), ...EW },
  { name: "logSoftmax", build: (mk) => mk([3, 100], { lo: -10, hi: 10 }).logSoftmax(), ...RED },
  { name: "reduce over size-1 axis", build: (mk) => mk([1, 9]).sum(0), ...EW },
  // movement and views
  { name: "reshape", build: (mk) => mk([6, 10]).reshape([3, 4, 5]).add(1), ...EW },
  { name: "reshape -1", build: (mk) => mk([6, 10]).reshape([-1, 12]).mul(2), ...EW },
  { name: "permute 3-D", build: (mk) => mk([2, 3, 5]).permute([2, 0, 1]).exp(), ...EW },
  { name: "transpose non-contiguous + add", build: (mk) => mk([7, 5]).transpose().add(mk([5, 7])), ...EW },
  { name: "expand", build: (mk) => mk([3, 1]).expand([3, 8]).mul(mk([8])), ...EW },
  { name: "slice with steps", build: (mk) => mk([10, 12]).slice([1, 9, 3], [null, null, -2]), ...EW },
  { name: "slice index drops axis", build: (mk) => mk([4, 5, 6]).slice(null, 2, [1, -1]), ...EW },
  { name: "pad", build: (mk) => mk([3, 4]).pad([[1, 2], [0, 3]], -1), ...EW },
  { name: "concat axis 1", build: (mk) => concat([mk([3, 2]), mk([3, 5]), mk([3, 1])], 1), ...EW },
  { name: "stack", build: (mk) => stack([mk([4]), mk([4]), mk([4])], 1), ...EW },
  { name: "squeeze/unsqueeze", build: (mk) => mk([1, 5, 1]).squeeze().unsqueeze(0).mul(3), ...EW },
  {
    name: "view of view of view",
    build: (mk) => mk([6, 8]).T.reshape([4, 12]).slice([null, null, 2]).permute([1, 0]).sum(1),
    ...RED,
  },
  {
    name: "gather rows",
    build: (mk, rng, dev) => {
      const idx = tensor(Int32Array.from({ length: 7 }, () => rng.int(0, 9)), {
        shape: [7],
        dtype: "i32",
        device: dev,
      });
      return mk([10, 6]).gather(idx, 0);
    },
    ...EW,
  },
  {
    name: "gather 2-D indices on axis 1",
    build: (mk, rng, dev) => {
      const idx = tensor(Int32Array.from({ length: 6 }, () => rng.int(0, 4)), {
        shape: [2, 3],
        dtype: "i32",
        device: dev,
      });
      return mk([3, 5]).gather(idx, 1);
    },
    ...EW,
  },
  {
    name: "oneHot",
    build: (_mk, rng, dev) => {
      const idx = tensor(Int32Array.from({ length: 9 }, () => rng.int(0, 4)), {
        shape: [9],
        dtype: "i32",
        device: dev,
      });
      return idx.oneHot(5);
    },
    rtol: 0,
    atol: 0,
  },
  // matmul
  { name: "matmul small", build: (mk) => mk([3, 4]).matmul(mk([4, 5])), ...RED },
  { name: "matmul tiled, odd sizes", build: (mk) => mk([67, 45]).matmul(mk([45, 33])), ...RED },
  {
    name: "matmul + bias + relu epilogue",
    build: (mk) => mk([70, 40]).matmul(mk([40, 90])).add(mk([90])).relu(),
    ...RED,
  },
  { name: "matmul of transposed views", build: (mk) => mk([50, 64]).T.matmul(mk([50, 41])), ...RED },
  {
    name: "matmul batched with broadcast batch",
    build: (mk) => mk([2, 1, 9, 6]).matmul(mk([3, 6, 5])),
    ...RED,
  },
  { name: "matmul 1-D x 2-D", build: (mk) => mk([6]).matmul(mk([6, 4])), ...RED },
  { name: "matmul 2-D x 1-D", build: (mk) => mk([4, 6]).matmul(mk([6])), ...RED },
  {
    // Every width whose template tile once had a fractional workgroup size (widths 3, 5–7, 10–15 did not
    // compile), so that the linear algebra can use plain matmuls for its skinny products.
    name: "matmul narrow outputs (template tiles for N = 3, 5, 6, 7, 10 ... 15)",
    build: (mk) =>
      concat([3, 5, 6, 7, 10, 11, 12, 13, 14, 15].map((n) => mk([96, 64]).matmul(mk([64, n]))), 1),
    ...RED,
  },
  {
    name: "batched matmul stored permuted (attention heads back to tokens)",
    build: (mk) =>
      mk([2, 3, 40, 16]).matmul(mk([2, 3, 16, 24])).permute([0, 2, 1, 3]).reshape([2, 40, 72]).mul(2),
    ...RED,
  },
  { name: "matmul with size-1 dims", build: (mk) => mk([1, 7]).matmul(mk([7, 1])), ...RED },
  {
    name: "matmul of matmul",
    build: (mk) => mk([20, 30]).matmul(mk([30, 40])).matmul(mk([40, 10])),
    rtol: 1e-4,
    atol: 1e-3,
  },
  {
    name: "LoRA-shaped: xW + s(xA)B",
    build: (mk) => {
      const x = mk([33, 48]);
      return x.matmul(mk([48, 40])).add(x.matmul(mk([48, 4])).matmul(mk([4, 40])).mul(0.5));
    },
    ...RED,
  },
  // sums of matmuls of one shape (one template kernel, one accumulator)
  {
    name: "sum of matmuls with different K (vec4 and scalar reads) and a residual",
    build: (mk) => mk([37, 48]).matmul(mk([48, 29])).add(mk([37, 21]).matmul(mk([21, 29]))).add(mk([37, 29])),
    ...RED,
  },
  {
    name: "sum of matmuls reading one input twice, one operand transposed",
    build: (mk) => {
      const x = mk([40, 32]);
      return x.matmul(mk([32, 24])).add(x.matmul(mk([24, 32]).T)).relu();
    },
    ...RED,
  },
  {
    name: "batched sum of three matmuls, scaled",
    build: (mk) =>
      mk([3, 17, 12]).matmul(mk([3, 12, 20])).add(mk([3, 17, 8]).matmul(mk([3, 8, 20])))
        .add(mk([3, 20, 17]).permute([0, 2, 1]).matmul(mk([3, 20, 20]))).mul(0.5),
    ...RED,
  },
  // row reductions broadcast back (row kernels on adapters that fuse them: at least 16 rows)
  { name: "softmax over rows", build: (mk) => mk([20, 70], { lo: -10, hi: 10 }).softmax(), ...EW },
  { name: "logSoftmax over rows", build: (mk) => mk([33, 100], { lo: -10, hi: 10 }).logSoftmax(), ...RED },
  {
    name: "RMS norm with gain, rows of two axes",
    build: (mk) => rmsNorm(mk([4, 9, 6, 8]).reshape([36, 48]) as F, mk([48])).mul(mk([36, 1])),
    ...RED,
  },
  {
    name: "RMS norm's input gradient (row statistics in the backward)",
    build: (mk) => {
      const w = mk([64]);
      const g = mk([24, 64]);
      const x = mk([24, 64]);
      return grad((p: { x: F }) => rmsNorm(p.x, w).mul(g).sum())({ x }).x;
    },
    ...RED,
  },
  { name: "layer norm", build: (mk) => layerNorm(mk([2, 17, 40])), ...RED },
  // creation
  { name: "arange", build: (_mk, _r, dev) => arange(3, 40, 3, { device: dev }).mul(2), ...EW },
  { name: "eye rectangular", build: (_mk, _r, dev) => eye(4, 6, { device: dev }), rtol: 0, atol: 0 },
  { name: "full", build: (_mk, _r, dev) => full([3, 2], 7.5, { device: dev }).add(1), rtol: 0, atol: 0 },
  // empty tensors
  {
    name: "size-0 elementwise",
    build: (_mk, _r, dev) => zeros([0, 3], { device: dev }).add(1),
    rtol: 0,
    atol: 0,
  },
  { name: "size-0 matmul", build: (mk) => mk([0, 4]).matmul(mk([4, 3])), rtol: 0, atol: 0 },
  { name: "sum over empty axis", build: (mk) => mk([3, 0]).sum(1), rtol: 0, atol: 0 },
  // 0/0: NaN, as in NumPy and PyTorch.
  {
    name: "mean and var over an empty axis",
    build: (mk) => mk([3, 0]).mean(1).add(mk([3, 0]).var(1)),
    rtol: 0,
    atol: 0,
  },
];

function maker(rng: TestRng, dev: DeviceName): Make {
  return (shape, opts = {}) => {
    const { lo = -2, hi = 2, int = false } = opts;
    const n = shape.reduce((a, b) => a * b, 1);
    const data = Float32Array.from({ length: n }, () => {
      const v = lo + (hi - lo) * rng.next();
      return int ? Math.round(v) : v;
    });
    return tensor(data, { shape, device: dev });
  };
}

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  Deno.test(`parity (${device}): every op against the float64 reference`, async (t) => {
    let salt = 0;
    for (const c of cases) {
      const rng = new TestRng(++salt);
      const out = c.build(maker(rng, device), rng, device);
      await t.step(c.name, async () => {
        const want = await reference(out);
        const got = await out.data();
        assertEquals(got.length, want.length);
        assertClose(got, want, { rtol: c.rtol, atol: c.atol, what: `${device} ${c.name}` });
      });
    }
  });
}

for (const device of ["webgpu", "wasm"] as const) {
  Deno.test(`fused and unfused execution agree on every case (${device})`, async () => {
    let salt = 1000;
    for (const c of cases) {
      const rng = new TestRng(++salt);
      const out = c.build(maker(rng, device), rng, device);
      if (out.isRealized) continue;
      const be = await getBackend(device);
      const [fused] = await realizeNodes([out.node]);
      const [unfused] = await realizeNodes([out.node], { noFusion: true, noMatmulTemplate: true });
      const a = await be.read(fused, out.dtype, out.size);
      const b = await be.read(unfused, out.dtype, out.size);
      fused.release();
      unfused.release();
      assertClose(a, b, { rtol: c.rtol ?? 1e-5, atol: c.atol ?? 1e-5, what: `fused vs unfused ${c.name}` });
    }
  });
}

Deno.test("tanh is within 4 ulp of float64 on every device, for |x| from 1e-30 to 30", async () => {
  const rng = new TestRng(2001);
  // Log-uniform magnitudes, so that most draws are near 0, where e^(-2|x|) alone would leave only the digits of
  // 1 − e (tanh(1e-7) came out as 1.192e-7).
  const xs = Float32Array.from(
    { length: 4000 },
    () => (rng.next() < 0.5 ? -1 : 1) * 10 ** (-30 + 31.5 * rng.next()),
  );
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const got = await tensor(xs, { device }).tanh().data();
    for (let i = 0; i < xs.length; i++) {
      const want = Math.fround(Math.tanh(xs[i]));
      // One ulp of f32 at `want`; 4 of them leave room for the exp of a GPU (3 ulp and more in WGSL's bounds).
      const ulp = 2 ** (Math.floor(Math.log2(Math.abs(want))) - 23);
      assertClose([got[i]], [want], { rtol: 0, atol: 4 * ulp, what: `${device} tanh(${xs[i]})` });
    }
  }
});

Deno.test("log is within 4 ulp of float64 on every device, near 1 too", async () => {
  const rng = new TestRng(2002);
  // Log-uniform magnitudes from 1e-30 to 1e30, and 1 ± 2^-k·(1 + u) for k up to 24, where log x is small and an
  // absolute error of about one ulp of 1 (a GPU builtin's) leaves none of its digits.
  const xs = Float32Array.from({ length: 4000 }, (_, i) => {
    if (i % 2 === 0) return 10 ** (-30 + 60 * rng.next());
    const d = 2 ** -rng.int(1, 24) * (1 + rng.next());
    return rng.next() < 0.5 ? 1 - d / 2 : 1 + d;
  });
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const got = await tensor(xs, { device }).log().data();
    for (let i = 0; i < xs.length; i++) {
      const want = Math.log(xs[i]);
      if (want === 0) continue;
      // One ulp of f32 at `want`; 4 of them leave room for a GPU's division (2.5 ulp in WGSL's bounds).
      const ulp = 2 ** (Math.floor(Math.log2(Math.abs(want))) - 23);
      assertClose([got[i]], [want], { rtol: 0, atol: 4 * ulp, what: `${device} log(${xs[i]})` });
    }
  }
});
