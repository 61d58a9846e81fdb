/**
 * Layers and losses against float64 host computations; initialisers against the device generator; dropout's
 * statistics, determinism and kernel reuse.
 */
import { equal, notDeepEqual, ok, throws } from "node:assert/strict";
import { getBackend, getDefaultDevice, rand, randn, type Shape, type Tensor, tensor } from "../../mod.ts";
import {
  Attention,
  constantParam,
  crossEntropy,
  deriveSeed,
  Dropout,
  dropout,
  dropoutKey,
  Embedding,
  LayerNorm,
  leakyRelu,
  Linear,
  Mlp,
  mse,
  normalParam,
  RMSNorm,
  softplus,
  SwiGLU,
  swiglu,
  TransformerBlock,
  uniformParam,
} from "../../lib/nn/mod.ts";
import { grad, valueAndGrad } from "../../lib/autodiff/mod.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

Deno.test("Linear computes x·Wᵀ + b over the last axis of a 3-D input", async () => {
  const rng = new TestRng(21);
  const [b, t, inF, out] = [2, 3, 5, 4];
  const layer = new Linear(inF, out, { seed: rng.int(0, 1e6) });
  equal(layer.inFeatures, inF);
  equal(layer.outFeatures, out);
  const xs = rng.normals(b * t * inF);
  const y = await layer.forward(tensor(xs, { shape: [b, t, inF] })).data();
  const w = await layer.weight.data();
  const bias = await layer.bias!.data();
  const bound = 1 / Math.sqrt(inF);
  ok(w.every((v) => Math.abs(v) <= bound) && bias.every((v) => Math.abs(v) <= bound), "init within ±1/√in");
  const want = new Float64Array(b * t * out);
  for (let r = 0; r < b * t; r++) {
    for (let o = 0; o < out; o++) {
      let s = bias[o];
      for (let i = 0; i < inF; i++) s += xs[r * inF + i] * w[o * inF + i];
      want[r * out + o] = s;
    }
  }
  assertClose(y, want, { rtol: 1e-5, atol: 1e-6 });
  const noBias = new Linear(inF, out, { seed: 1, bias: false });
  ok(!("bias" in noBias), "no bias field without bias");
  throws(
    () => layer.forward(tensor(xs, { shape: [b * t, inF] }).reshape([b, t * inF]) as F),
    /does not end in 5/,
  );
});

Deno.test("layers refuse a size that is not a positive integer, naming the layer and the argument", () => {
  // Zero sizes used to build and fail later in a reshape ("Cannot reshape [3, 0] (0 elements) to [-1, 0]"),
  // fractional ones in the initialiser ("uniformParam: bad shape [2, 2.5]").
  const cases: [() => unknown, string][] = [
    [() => new Linear(2, 0, { seed: 0 }), "Linear: outFeatures must be a positive integer, got 0"],
    [() => new Linear(2.5, 2, { seed: 0 }), "Linear: inFeatures must be a positive integer, got 2.5"],
    [() => new Embedding(0, 3, { seed: 0 }), "Embedding: num must be a positive integer, got 0"],
    [() => new Embedding(4, NaN, { seed: 0 }), "Embedding: dim must be a positive integer, got NaN"],
    [() => new SwiGLU(8, 0, { seed: 0 }), "SwiGLU: hidden must be a positive integer, got 0"],
    [() => new Mlp([8, 0, 2], { seed: 0 }), "Mlp: sizes[1] must be a positive integer, got 0"],
    [() => new Attention(0, { nHeads: 2, seed: 0 }), "Attention: dim must be a positive integer, got 0"],
    [() => new RMSNorm(0), "RMSNorm: dim must be a positive integer, got 0"],
    [() => new LayerNorm(0, { affine: false }), "LayerNorm: dim must be a positive integer, got 0"],
    [() => new LayerNorm(-1), "LayerNorm: dim must be a positive integer, got -1"],
    [
      () => new TransformerBlock(0, { nHeads: 2, hiddenDim: 8, seed: 0 }),
      "TransformerBlock: dim must be a positive integer, got 0",
    ],
  ];
  for (const [make, message] of cases) throws(make, { name: "RangeError", message });
});

Deno.test("Embedding gathers rows; LayerNorm normalises with population variance", async () => {
  const rng = new TestRng(22);
  const emb = new Embedding(7, 3, { seed: rng.int(0, 1e6) });
  const table = await emb.weight.data();
  const ids = Int32Array.from({ length: 6 }, () => rng.int(0, 6));
  const rows = await emb.forward(tensor(ids, { shape: [2, 3], dtype: "i32" })).data();
  assertClose(rows, Array.from(ids).flatMap((i) => Array.from(table.slice(i * 3, i * 3 + 3))), {
    rtol: 0,
    atol: 0,
  });

  const norm = new LayerNorm(6, { eps: 1e-5 });
  const xs = rng.normals(4 * 6, 3);
  const y = await norm.forward(tensor(xs, { shape: [4, 6] })).data();
  const want: number[] = [];
  for (let r = 0; r < 4; r++) {
    const row = Array.from(xs.slice(r * 6, r * 6 + 6));
    const mu = row.reduce((a, v) => a + v, 0) / 6;
    const v = row.reduce((a, x) => a + (x - mu) ** 2, 0) / 6;
    want.push(...row.map((x) => (x - mu) / Math.sqrt(v + 1e-5)));
  }
  assertClose(y, want, { rtol: 1e-4, atol: 1e-5 });
  // An input whose last axis is not dim is refused alike with and without the gain and bias.
  for (const affine of [true, false]) {
    throws(
      () => new LayerNorm(4, { affine }).forward(randn([2, 8], { seed: 0 })),
      /LayerNorm: input must be \[\.\.\., 4\], got \[2, 8\]/,
    );
  }
});

Deno.test("initialisers reproduce rand/randn of the same seed and give each parameter its own buffer", async () => {
  const seed = new TestRng(23).int(0, 2 ** 30);
  assertClose(await uniformParam([5, 7], 0, 1, { seed }).data(), await rand([5, 7], { seed }).data(), {
    rtol: 0,
    atol: 1e-7,
  });
  assertClose(await normalParam([9], 1, { seed }).data(), await randn([9], { seed }).data(), {
    rtol: 1e-5,
    atol: 1e-5,
  });
  const a = constantParam([4], 1);
  const b = constantParam([4], 1);
  ok(a.node !== b.node, "two constant parameters are distinct nodes");
  notDeepEqual(deriveSeed(seed, "a"), deriveSeed(seed, "b"));
  equal(deriveSeed(seed, "layers", 3), deriveSeed(seed, "layers", 3));
  // Seeds outside [0, 2³²) do not fall on one inside (1 and 2³² + 1, -1 and 2³² - 1 used to be one stream).
  const s = 1 + Math.floor(new TestRng(88).next() * 1000);
  for (const [x, y] of [[s, s + 2 ** 32], [-s, 2 ** 32 - s], [s, s + 2 ** 40]]) {
    notDeepEqual(deriveSeed(x, "data"), deriveSeed(y, "data"), `${x} and ${y}`);
    notDeepEqual(
      await normalParam([4], 1, { seed: x }).data(),
      await normalParam([4], 1, { seed: y }).data(),
    );
    notDeepEqual(await rand([64], { seed: x }).data(), await rand([64], { seed: y }).data());
    const ones = tensor(new Float32Array(64).fill(1));
    notDeepEqual(await dropout(ones, 0.5, { seed: x }).data(), await dropout(ones, 0.5, { seed: y }).data());
  }
  throws(() => deriveSeed(2 ** 53), /seed must be a safe integer, got 9007199254740992/);
});

Deno.test("dropout: rate, scaling, determinism, the same mask on cpu, one kernel for every seed", async () => {
  const rng = new TestRng(24);
  const n = 20000;
  const rate = 0.3;
  const x = tensor(Float32Array.from({ length: n }, () => 1 + rng.next()));
  const xs = await x.data();
  const seed = rng.int(0, 2 ** 30);
  const y = await dropout(x, rate, { seed }).data();
  const dropped = y.filter((v) => v === 0).length / n;
  // Binomial standard deviation √(0.3·0.7/20000) ≈ 0.0032: 5 sigma is 0.016.
  ok(Math.abs(dropped - rate) < 0.016, `dropped fraction ${dropped}`);
  for (let i = 0; i < n; i++) if (y[i] !== 0) assertClose([y[i]], [xs[i] / (1 - rate)], { rtol: 1e-6 });
  assertClose(await dropout(x, rate, { seed }).data(), y, { rtol: 0, atol: 0, what: "same seed" });
  const other = await dropout(x, rate, { seed: seed + 1 }).data();
  const agree = other.filter((v, i) => (v === 0) === (y[i] === 0)).length / n;
  // Independent masks agree with probability 0.3² + 0.7² = 0.58.
  ok(Math.abs(agree - 0.58) < 0.03, `masks of two seeds agree on ${agree}`);
  const onCpu = await dropout(tensor(xs, { device: "cpu" }), rate, { seed }).data();
  assertClose(onCpu, y, { rtol: 1e-6, atol: 0, what: "cpu mask" });
  const be = await getBackend(getDefaultDevice());
  await dropout(x, rate, { seed: seed + 2 }).data();
  const kernels = be.stats().cachedKernels;
  for (let k = 3; k < 6; k++) await dropout(x, rate, { seed: seed + k }).data();
  equal(be.stats().cachedKernels, kernels, "new seeds compiled new kernels");
  equal(dropout(x, rate, { seed, training: false }), x);
  equal(new Dropout(0.5).forward(x), x);
  // A key tensor with salts: the seed form is the key form with salt 0; other salts give independent masks.
  const key = dropoutKey(seed);
  assertClose(await dropout(x, rate, { key }).data(), y, { rtol: 0, atol: 0, what: "key form" });
  const salted = await new Dropout(rate).forward(x, key, 3).data();
  const agreeSalt = salted.filter((v, i) => (v === 0) === (y[i] === 0)).length / n;
  ok(Math.abs(agreeSalt - 0.58) < 0.03, `masks of two salts agree on ${agreeSalt}`);
  throws(() => dropout(x, rate, {}), /exactly one of seed and key/);
});

/** Fresh inputs with exact zeros, ±1e-8 and magnitudes where e^x or e^-x overflows f32; cotangents `w`. */
function activationInputs(rng: TestRng): { xs: number[]; w: number[] } {
  const xs = [0, 0, 1e-8, -1e-8, -100, -50, -2, 0.5, 3, 90, ...Array.from(rng.normals(30, 3))];
  return { xs, w: Array.from(rng.normals(xs.length)) };
}

Deno.test("leakyRelu: x where x > 0 and slope·x elsewhere for any slope, gradient 1 or slope", async () => {
  const rng = new TestRng(28);
  const { xs, w } = activationInputs(rng);
  // Slopes below and above 1, 0 and negative. The gradient is slope at x = 0 too, as PyTorch's leaky_relu
  // backward (x > 0 ? g : slope·g).
  const slopes = [0.1, 2, 0, -0.5, 3 * rng.next()];
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const x = tensor(Float32Array.from(xs), { device }) as F;
    const wt = tensor(Float32Array.from(w), { device }) as F;
    for (const slope of slopes) {
      const what = `${device}: leakyRelu slope ${slope}`;
      // x, the slope and the product are each rounded to f32 once: 3 · 2^-24 ≈ 1.8e-7 relative at most.
      assertClose(await leakyRelu(x, slope).data(), xs.map((v) => (v > 0 ? v : slope * v)), {
        rtol: 2e-7,
        atol: 0,
        what,
      });
      const g = grad((p: F) => leakyRelu(p, slope).mul(wt).sum())(x);
      assertClose(await g.data(), w.map((c, i) => (xs[i] > 0 ? c : slope * c)), {
        rtol: 2e-7,
        atol: 0,
        what: `${what}, gradient`,
      });
    }
    const nan = await leakyRelu(tensor([NaN, -1, 1], { device }) as F, 2).data();
    ok(
      Number.isNaN(nan[0]) && nan[1] === -2 && nan[2] === 1,
      `${device}: leakyRelu([NaN, -1, 1], 2) = ${nan}`,
    );
  }
  const mlp = new Mlp([3, 4, 2], { seed: 1, activation: (x) => leakyRelu(x) });
  equal(mlp.forward(tensor([[1, 2, 3]])).shape.join(), "1,2");
});

Deno.test("softplus: no overflow, gradient σ(x), ½ at 0", async () => {
  const { xs, w } = activationInputs(new TestRng(29));
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const x = tensor(Float32Array.from(xs), { device }) as F;
    const wt = tensor(Float32Array.from(w), { device }) as F;
    // WGSL's log has an absolute error up to 2^-21 ≈ 4.8e-7 on [0.5, 2], where 1 + e^-|x| lies; at -50 and
    // -100, 1 + e^-|x| is 1 in f32 and the value 0 (1.9e-22 and 3.7e-44 in float64).
    assertClose(
      await softplus(x).data(),
      xs.map((v) => Math.max(v, 0) + Math.log1p(Math.exp(-Math.abs(v)))),
      {
        rtol: 1e-5,
        atol: 1e-6,
        what: `${device}: softplus`,
      },
    );
    ok(Number.isNaN((await softplus(tensor([NaN], { device }) as F).data())[0]), `${device}: softplus(NaN)`);
    // PyTorch's softplus gradient is σ(x) as well, ½ at 0. σ in f32 carries exp's error (a few ulp, more on GPUs
    // for |x| near 100); σ(-100) is 0 in f32 (3.7e-44 in float64).
    const g = grad((p: F) => softplus(p).mul(wt).sum())(x);
    assertClose(await g.data(), w.map((c, i) => c * sig(xs[i])), {
      rtol: 1e-4,
      atol: 1e-37,
      what: `${device}: d softplus/dx`,
    });
  }
});

Deno.test("swiglu: gradients stay finite with gate pre-activations far below 0", async () => {
  const rng = new TestRng(26);
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const mk = (shape: number[], scale: number) =>
      tensor(rng.normals(shape[0] * shape[1], scale), { shape, device }) as F;
    // Gate weights of scale 40 put about half the pre-activations x·w1ᵀ beyond ±88.7, where e^-x overflows f32.
    const p = { x: mk([4, 8], 1), w1: mk([16, 8], 40), w2: mk([8, 16], 1), w3: mk([16, 8], 1) };
    ok((await p.x.matmul(p.w1.T).data()).some((v) => v < -100));
    const { grads } = valueAndGrad((q: typeof p) => swiglu(q.x, q.w1, q.w2, q.w3).sum())(p);
    for (const k of ["x", "w1", "w2", "w3"] as const) {
      const want = await reference(grads[k]); // float64, where e^100 is finite
      // Sums of 16 products reaching ~100·|w|: f32 rounding ~1e-5 relative to the largest term.
      assertClose(await grads[k].data(), want, { rtol: 1e-4, atol: 1e-3, what: `${device}: d/d${k}` });
    }
  }
});

Deno.test("crossEntropy over logits with -inf entries: selected, not multiplied by a one-hot", async () => {
  const rng = new TestRng(27);
  const [n, c] = [10, 7];
  // Lines with about a third of the logits -inf (never the target's); lines 3 and 7 ignored, line 7 all -inf.
  const targets = Int32Array.from({ length: n }, (_, i) => (i === 3 || i === 7 ? -100 : rng.int(0, c - 1)));
  const logits = Array.from(
    { length: n },
    (_, i) =>
      Array.from(
        { length: c },
        (_, j) => i === 7 || (j !== targets[i] && rng.next() < 0.35) ? -Infinity : 3 * rng.normal(),
      ),
  );
  // Float64 closed forms: the loss of a kept line, and its gradient softmax − onehot (0 on ignored lines).
  const lse = (row: number[]) => {
    const m = Math.max(...row);
    return m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
  };
  const kept = [...targets.keys()].filter((i) => targets[i] !== -100);
  const nll = logits.map((row, i) => (targets[i] === -100 ? 0 : lse(row) - row[targets[i]]));
  const mean = kept.reduce((s, i) => s + nll[i], 0) / kept.length;
  const dMean = logits.flatMap((row, i) =>
    row.map((
      v,
      j,
    ) => (targets[i] === -100 ? 0 : (Math.exp(v - lse(row)) - (j === targets[i] ? 1 : 0)) / kept.length))
  );
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const lg = tensor(Float32Array.from(logits.flat()), { shape: [n, c], device }) as F;
    const tg = tensor(targets, { dtype: "i32", device });
    // Sums of 7 exponentials and a log of values ~10: a few ulp.
    const tol = { rtol: 1e-5, atol: 1e-6 };
    assertClose(await crossEntropy(lg, tg, { reduction: "none" }).data(), nll, {
      ...tol,
      what: `${device} none`,
    });
    const { value, grads } = valueAndGrad((p: { lg: F }) => crossEntropy(p.lg, tg))({ lg });
    assertClose([await value.item()], [mean], { ...tol, what: `${device} mean` });
    assertClose(await grads.lg.data(), dMean, { ...tol, what: `${device} d mean` });
  }
  // PyTorch 2 (float32): F.cross_entropy(tensor([[0., 1., -inf]]), tensor([1])) = 0.31326166 and, with a second
  // line of -inf ignored, F.cross_entropy(tensor([[0., 1., 2.], [-inf] * 3]), tensor([1, -100])) = 1.40760589.
  const lg = tensor([[0, 1, -Infinity]]) as F;
  assertClose([await crossEntropy(lg, tensor([1], { dtype: "i32" })).item()], [0.31326166], { rtol: 1e-6 });
  const ignored = tensor([[0, 1, 2], [-Infinity, -Infinity, -Infinity]]) as F;
  const t2 = tensor([1, -100], { dtype: "i32" });
  assertClose([await crossEntropy(ignored, t2).item()], [1.40760589], { rtol: 1e-6 });
});

Deno.test("crossEntropy: a target out of range computed on the device makes its line NaN, loss and gradient", async () => {
  const rng = new TestRng(41);
  const [n, c] = [9, 6];
  const logits = rng.normals(n * c, 2);
  // Targets on the host in range (and the ignore index on line 4); shifted on the device so that line 1 lands
  // past the classes and line 6 below 0, where no host check sees them.
  const host = Int32Array.from(
    { length: n },
    (_, i) => (i === 4 ? -100 : i === 1 ? c - 1 : i === 6 ? 0 : rng.int(0, c - 1)),
  );
  const shift = Int32Array.from({ length: n }, (_, i) => (i === 1 ? 1 : i === 6 ? -1 : 0));
  const lse = (i: number) => {
    const row = logits.slice(i * c, (i + 1) * c);
    const m = Math.max(...row);
    return m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
  };
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const lg = tensor(Float32Array.from(logits), { shape: [n, c], device }) as F;
    const tg = tensor(host, { dtype: "i32", device }).add(tensor(shift, { dtype: "i32", device }));
    const lines = await crossEntropy(lg, tg, { reduction: "none" }).data();
    for (let i = 0; i < n; i++) {
      if (i === 1 || i === 6) ok(Number.isNaN(lines[i]), `${device}: line ${i} is ${lines[i]}, not NaN`);
      else {
        const want = i === 4 ? 0 : lse(i) - logits[i * c + host[i]];
        ok(
          Math.abs(lines[i] - want) <= 1e-5 * (1 + Math.abs(want)),
          `${device}: line ${i} ${lines[i]} vs ${want}`,
        );
      }
    }
    const { value, grads } = valueAndGrad((p: { lg: F }) => crossEntropy(p.lg, tg))({ lg });
    ok(Number.isNaN(await value.item()), `${device}: mean loss not NaN`);
    const g = await grads.lg.data();
    for (let i = 0; i < n; i++) {
      const row = Array.from(g.slice(i * c, (i + 1) * c));
      // The mean's gradient is NaN everywhere (the loss is); what matters is that nothing passes for a real value.
      ok(row.every((v) => Number.isNaN(v)) || (i !== 1 && i !== 6), `${device}: line ${i} gradient ${row}`);
    }
    // Summed, the other lines keep their gradients: softmax − onehot, 0 on the ignored one.
    const sum = grad((p: { lg: F }) => crossEntropy(p.lg, tg, { reduction: "sum" }))({ lg });
    const gs = await sum.lg.data();
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < c; j++) {
        const v = gs[i * c + j];
        if (i === 1 || i === 6) ok(Number.isNaN(v), `${device}: sum gradient [${i}, ${j}] = ${v}`);
        else {
          const want = i === 4 ? 0 : Math.exp(logits[i * c + j] - lse(i)) - (j === host[i] ? 1 : 0);
          ok(Math.abs(v - want) <= 1e-5, `${device}: sum gradient [${i}, ${j}] ${v} vs ${want}`);
        }
      }
    }
  }
});

Deno.test("crossEntropy matches host float64 with ignore-index and weights; mse", async () => {
  const rng = new TestRng(25);
  const [n, c] = [12, 7];
  const logits = rng.normals(n * c, 4);
  const targets = Int32Array.from({ length: n }, (_, i) => (i % 5 === 2 ? -100 : rng.int(0, c - 1)));
  const weights = Float32Array.from({ length: n }, () => rng.next());
  const nll = (i: number) => {
    const row = Array.from(logits.slice(i * c, i * c + c));
    const m = Math.max(...row);
    return Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0)) + m - row[targets[i]];
  };
  let num = 0;
  let den = 0;
  let wnum = 0;
  let wden = 0;
  for (let i = 0; i < n; i++) {
    if (targets[i] === -100) continue;
    num += nll(i);
    den += 1;
    wnum += weights[i] * nll(i);
    wden += weights[i];
  }
  const lg = tensor(logits, { shape: [n, c] });
  const tg = tensor(targets, { dtype: "i32" });
  assertClose([await crossEntropy(lg, tg).item()], [num / den], { rtol: 1e-5 });
  assertClose([await crossEntropy(lg, tg, { reduction: "sum" }).item()], [num], { rtol: 1e-5 });
  assertClose([await crossEntropy(lg, tg, { weights: tensor(weights) }).item()], [wnum / wden], {
    rtol: 1e-5,
  });
  const none = await crossEntropy(lg, tg, { reduction: "none" }).data();
  assertClose(none, Array.from(targets, (t, i) => (t === -100 ? 0 : nll(i))), { rtol: 1e-5, atol: 1e-6 });
  // d/dw of Σ w·CE is the CE of each kept target.
  const dw = await grad((w: F) => crossEntropy(lg, tg, { weights: w, reduction: "sum" }))(tensor(weights))
    .data();
  assertClose(dw, Array.from(targets, (t, i) => (t === -100 ? 0 : nll(i))), {
    rtol: 1e-5,
    atol: 1e-6,
    what: "d/dw",
  });
  const allIgnored = tensor(new Int32Array(n).fill(-100), { dtype: "i32" });
  equal(await crossEntropy(lg, allIgnored).item(), 0);
  // Large logits stay finite.
  const big = tensor(Float32Array.from(logits, (v) => v * 1000), { shape: [n, c] });
  ok(Number.isFinite(await crossEntropy(big, tg).item()));
  throws(() => crossEntropy(lg, tensor(targets.slice(1), { dtype: "i32" })), /must have the shape/);
  // A bool or i32 label mask is refused by name, not by the multiplication inside.
  for (const dtype of ["bool", "i32"] as const) {
    const mask = tensor(Int32Array.from(targets, (t) => (t === -100 ? 0 : 1)), { dtype });
    throws(
      () => crossEntropy(lg, tg, { weights: mask as unknown as F }),
      new RegExp(`crossEntropy: weights must be f32, got ${dtype}`),
    );
  }
  const a = rng.normals(10);
  const b = rng.normals(10);
  assertClose(
    [await mse(tensor(a), tensor(b)).item()],
    [a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / 10],
    {
      rtol: 1e-5,
    },
  );
});

Deno.test("crossEntropy's weighted mean divides by the weights' sum however small it is; 0 when the sum is 0", async () => {
  const rng = new TestRng(28);
  const [n, c] = [12, 5];
  const logits = rng.normals(n * c, 2);
  const targets = Int32Array.from({ length: n }, (_, i) => (i % 4 === 1 ? -100 : rng.int(0, c - 1)));
  // Weights of about 1e-15 (their sum about 1e-14): normal float32 numbers, so the ratio keeps full precision.
  const weights = Float32Array.from({ length: n }, () => (0.5 + rng.next()) * 1e-15);
  // Float64 closed forms: Σ w·CE / Σ w over the kept lines, and d/dlogits = w·(softmax − onehot) / Σ w.
  const row = (i: number) => Array.from(logits.slice(i * c, i * c + c), Number);
  const lse = (r: number[]) =>
    Math.max(...r) + Math.log(r.reduce((s, v) => s + Math.exp(v - Math.max(...r)), 0));
  const kept = [...targets.keys()].filter((i) => targets[i] !== -100);
  const wsum = kept.reduce((s, i) => s + weights[i], 0);
  const mean = kept.reduce((s, i) => s + weights[i] * (lse(row(i)) - row(i)[targets[i]]), 0) / wsum;
  const dMean = [...targets.keys()].flatMap((i) =>
    row(i).map((v, j) =>
      targets[i] === -100 ? 0 : weights[i] * (Math.exp(v - lse(row(i))) - (j === targets[i] ? 1 : 0)) / wsum
    )
  );
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const tg = tensor(targets, { dtype: "i32", device });
    const lg = tensor(logits, { shape: [n, c], device }) as F;
    // Sums of 12 (5) terms and logs of values ~10 in float32: a few ulp each.
    const tol = { rtol: 1e-5, atol: 1e-7 };
    const f = (w: F) => (p: { lg: F }) => crossEntropy(p.lg, tg, { weights: w });
    const { value, grads } = valueAndGrad(f(tensor(weights, { device }) as F))({ lg });
    assertClose([await value.item()], [mean], { ...tol, what: `${device} mean` });
    assertClose(await grads.lg.data(), dMean, { ...tol, what: `${device} d mean` });
    // Kept weights summing to 0 leave nothing to average: 0, with gradient 0 (not 0/0).
    const zero = Float32Array.from(weights, (v, i) => (kept.includes(i) ? 0 : v));
    const none = valueAndGrad(f(tensor(zero, { device }) as F))({ lg });
    equal(await none.value.item(), 0, `${device} zero weights`);
    ok((await none.grads.lg.data()).every((v) => v === 0), `${device} d zero weights`);
  }
});
