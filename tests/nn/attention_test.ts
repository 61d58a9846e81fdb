/**
 * RoPE, GQA causal attention, RMSNorm, SwiGLU and the transformer block against a direct float64 host-side
 * implementation written the way llama2.c's `forward()` is: one position at a time, interleaved RoPE pairs,
 * query head h reading key/value head ⌊h / (nHeads / nKvHeads)⌋, softmax over positions 0..pos.
 */
import { equal, throws } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import {
  applyRope,
  Attention,
  causalAttention,
  Linear,
  parameters,
  rmsNorm,
  ropeTables,
  swiglu,
  TransformerBlock,
} from "../../lib/nn/mod.ts";
import { assertClose, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

/** Row-major [out, in] matrix times vector, in float64. */
function matvec(w: Float64Array, x: Float64Array, out: number, inF: number): Float64Array {
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    for (let i = 0; i < inF; i++) s += w[o * inF + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** llama2.c's RoPE on one position's q (dim) and k (kvDim) vectors, in place. */
function ropeHost(vec: Float64Array, pos: number, headSize: number, theta = 1e4): void {
  for (let i = 0; i < vec.length; i += 2) {
    const headDim = i % headSize;
    const freq = 1 / theta ** (headDim / headSize);
    const val = pos * freq;
    const fcr = Math.cos(val);
    const fci = Math.sin(val);
    const v0 = vec[i];
    const v1 = vec[i + 1];
    vec[i] = v0 * fcr - v1 * fci;
    vec[i + 1] = v0 * fci + v1 * fcr;
  }
}

interface AttnWeights {
  wq: Float64Array;
  wk: Float64Array;
  wv: Float64Array;
  wo: Float64Array;
}

/** One attention layer over a sequence x [T, dim], llama2.c style. */
function attentionHost(
  x: Float64Array,
  t: number,
  dim: number,
  nHeads: number,
  nKv: number,
  w: AttnWeights,
): Float64Array {
  const hs = dim / nHeads;
  const kvDim = nKv * hs;
  const kvMul = nHeads / nKv;
  const keys: Float64Array[] = [];
  const values: Float64Array[] = [];
  const out = new Float64Array(t * dim);
  for (let pos = 0; pos < t; pos++) {
    const xb = x.subarray(pos * dim, (pos + 1) * dim);
    const q = matvec(w.wq, xb, dim, dim);
    const k = matvec(w.wk, xb, kvDim, dim);
    const v = matvec(w.wv, xb, kvDim, dim);
    ropeHost(q, pos, hs);
    ropeHost(k, pos, hs);
    keys.push(k);
    values.push(v);
    const att = new Float64Array(dim);
    for (let h = 0; h < nHeads; h++) {
      const kvh = Math.floor(h / kvMul);
      const scores = new Float64Array(pos + 1);
      for (let s = 0; s <= pos; s++) {
        let dot = 0;
        for (let i = 0; i < hs; i++) dot += q[h * hs + i] * keys[s][kvh * hs + i];
        scores[s] = dot / Math.sqrt(hs);
      }
      const m = Math.max(...scores);
      let z = 0;
      for (let s = 0; s <= pos; s++) z += scores[s] = Math.exp(scores[s] - m);
      for (let s = 0; s <= pos; s++) {
        for (let i = 0; i < hs; i++) att[h * hs + i] += (scores[s] / z) * values[s][kvh * hs + i];
      }
    }
    out.set(matvec(w.wo, att, dim, dim), pos * dim);
  }
  return out;
}

function rmsNormHost(x: Float64Array, w: Float64Array, eps = 1e-5): Float64Array {
  const d = w.length;
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let ss = 0;
    for (let i = 0; i < d; i++) ss += x[r * d + i] ** 2;
    const inv = 1 / Math.sqrt(ss / d + eps);
    for (let i = 0; i < d; i++) out[r * d + i] = x[r * d + i] * inv * w[i];
  }
  return out;
}

function swigluHost(
  x: Float64Array,
  w1: Float64Array,
  w2: Float64Array,
  w3: Float64Array,
  dim: number,
  hidden: number,
) {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    const xr = x.subarray(r * dim, (r + 1) * dim);
    const a = matvec(w1, xr, hidden, dim);
    const b = matvec(w3, xr, hidden, dim);
    for (let i = 0; i < hidden; i++) a[i] = (a[i] / (1 + Math.exp(-a[i]))) * b[i];
    out.set(matvec(w2, a, dim, hidden), r * dim);
  }
  return out;
}

const f64 = async (t: Tensor) => Float64Array.from(await t.data() as Float32Array);

Deno.test("RoPE rotates interleaved pairs by pos·theta^(-2i/d), as llama2.c", async () => {
  const rng = new TestRng(1);
  const [b, t, h, d] = [2, 7, 3, 8];
  const xs = rng.normals(b * t * h * d);
  const y = await applyRope(tensor(xs, { shape: [b, t, h, d] }), ropeTables(d, t)).data();
  const want = new Float64Array(xs.length);
  for (let bi = 0; bi < b; bi++) {
    for (let pos = 0; pos < t; pos++) {
      const off = (bi * t + pos) * h * d;
      const vec = Float64Array.from(xs.subarray(off, off + h * d));
      ropeHost(vec, pos, d);
      want.set(vec, off);
    }
  }
  assertClose(y, want, { rtol: 1e-5, atol: 1e-5, what: "rope" });
  // Rotations keep the norm of every pair.
  const n0 = xs.reduce((a, v) => a + v * v, 0);
  const n1 = y.reduce((a, v) => a + v * v, 0);
  assertClose([n1], [n0], { rtol: 1e-5 });
});

Deno.test("RoPE tables from a start position match the tail of a longer table", async () => {
  const full = ropeTables(6, 12);
  const tail = ropeTables(6, 4, { start: 8 });
  assertClose(await tail.cos.data(), (await full.cos.data()).slice(8 * 3), { rtol: 1e-6, atol: 1e-7 });
  assertClose(await tail.sin.data(), (await full.sin.data()).slice(8 * 3), { rtol: 1e-6, atol: 1e-7 });
});

for (const device of ["webgpu", "cpu"] as const) {
  Deno.test(`Attention with RoPE and GQA matches the llama2.c loop (${device})`, async () => {
    const rng = new TestRng(2);
    const [b, t, dim, nHeads, nKv] = [2, 6, 16, 4, 2];
    const attn = new Attention(dim, { nHeads, nKvHeads: nKv, seed: rng.int(0, 1e6), device });
    const xs = rng.normals(b * t * dim);
    const y = await attn.forward(tensor(xs, { shape: [b, t, dim], device })).data();
    const pa = parameters(attn);
    const w: AttnWeights = {
      wq: await f64(pa["wq.weight"]),
      wk: await f64(pa["wk.weight"]),
      wv: await f64(pa["wv.weight"]),
      wo: await f64(pa["wo.weight"]),
    };
    for (let bi = 0; bi < b; bi++) {
      const x = Float64Array.from(xs.subarray(bi * t * dim, (bi + 1) * t * dim));
      const want = attentionHost(x, t, dim, nHeads, nKv, w);
      assertClose(y.subarray(bi * t * dim, (bi + 1) * t * dim), want, {
        rtol: 1e-4,
        atol: 1e-5,
        what: `batch ${bi}`,
      });
    }
  });
}

Deno.test("causalAttention: a query never sees later keys; S > T attends to the cached prefix", async () => {
  const rng = new TestRng(3);
  const [t, h, d] = [5, 2, 4];
  const q = tensor(rng.normals(t * h * d), { shape: [1, t, h, d] }) as F;
  const k = tensor(rng.normals(t * h * d), { shape: [1, t, h, d] }) as F;
  const v = tensor(rng.normals(t * h * d), { shape: [1, t, h, d] }) as F;
  const base = await causalAttention(q, k, v).data();
  // Changing the last key/value only changes the last query's output.
  const v2 = tensor(Float32Array.from(await v.data(), (x, i) => (i >= (t - 1) * h * d ? x + 5 : x)), {
    shape: [1, t, h, d],
  }) as F;
  const changed = await causalAttention(q, k, v2).data();
  for (let i = 0; i < (t - 1) * h * d; i++) {
    equal(changed[i], base[i], `element ${i} of an earlier query changed`);
  }
  ok(changed.slice((t - 1) * h * d).some((x, i) => Math.abs(x - base[(t - 1) * h * d + i]) > 1e-3));
  // The last two queries against all five keys equal the last two rows of the full computation.
  const qTail = q.slice(null, [t - 2, t]) as F;
  const tail = await causalAttention(qTail, k, v).data();
  assertClose(tail, base.slice((t - 2) * h * d), { rtol: 1e-5, atol: 1e-6 });
});

function ok(v: boolean, msg = "expected true"): void {
  if (!v) throw new Error(msg);
}

Deno.test("RMSNorm (eps 1e-5) and SwiGLU match host float64", async () => {
  const rng = new TestRng(4);
  const [rows, dim, hidden] = [5, 12, 20];
  const xs = rng.normals(rows * dim);
  const ws = rng.normals(dim);
  const y = await rmsNorm(tensor(xs, { shape: [rows, dim] }), tensor(ws)).data();
  assertClose(y, rmsNormHost(Float64Array.from(xs), Float64Array.from(ws)), { rtol: 1e-5, atol: 1e-6 });
  // Small inputs show that eps is inside the square root: x·rsqrt(mean(x²) + 1e-5).
  const tiny = Float32Array.from(xs, (v) => v * 1e-3);
  const yt = await rmsNorm(tensor(tiny, { shape: [rows, dim] }), tensor(ws)).data();
  assertClose(yt, rmsNormHost(Float64Array.from(tiny), Float64Array.from(ws)), { rtol: 1e-5, atol: 1e-6 });
  const [w1, w2, w3] = [
    rng.normals(hidden * dim, 0.3),
    rng.normals(dim * hidden, 0.3),
    rng.normals(hidden * dim, 0.3),
  ];
  const s = await swiglu(
    tensor(xs, { shape: [rows, dim] }),
    tensor(w1, { shape: [hidden, dim] }),
    tensor(w2, { shape: [dim, hidden] }),
    tensor(w3, { shape: [hidden, dim] }),
  ).data();
  const want = swigluHost(
    Float64Array.from(xs),
    Float64Array.from(w1),
    Float64Array.from(w2),
    Float64Array.from(w3),
    dim,
    hidden,
  );
  assertClose(s, want, { rtol: 1e-4, atol: 1e-5 });
});

Deno.test("TransformerBlock = x + attn(rms(x)), then h + ffn(rms(h)), as llama2.c", async () => {
  const rng = new TestRng(5);
  const [t, dim, nHeads, nKv, hidden] = [4, 16, 4, 1, 24];
  const block = new TransformerBlock(dim, {
    nHeads,
    nKvHeads: nKv,
    hiddenDim: hidden,
    seed: rng.int(0, 1e6),
  });
  const xs = rng.normals(t * dim);
  const y = await block.forward(tensor(xs, { shape: [1, t, dim] })).data();
  const pb = parameters(block);
  const w: AttnWeights = {
    wq: await f64(pb["attention.wq.weight"]),
    wk: await f64(pb["attention.wk.weight"]),
    wv: await f64(pb["attention.wv.weight"]),
    wo: await f64(pb["attention.wo.weight"]),
  };
  const ones = new Float64Array(dim).fill(1);
  const x = Float64Array.from(xs);
  const a = attentionHost(rmsNormHost(x, ones), t, dim, nHeads, nKv, w);
  const h = x.map((v, i) => v + a[i]);
  const f = swigluHost(
    rmsNormHost(h, ones),
    await f64(pb["feed_forward.w1.weight"]),
    await f64(pb["feed_forward.w2.weight"]),
    await f64(pb["feed_forward.w3.weight"]),
    dim,
    hidden,
  );
  assertClose(y, h.map((v, i) => v + f[i]), { rtol: 1e-4, atol: 1e-5 });
});

Deno.test("Attention refuses layers whose widths do not fit nHeads and nKvHeads", () => {
  // These used to build: the first failed at forward in a reshape, the second in RoPE ("headDim ... got 2.666...").
  const lin = (i: number, o: number) => new Linear(i, o, { seed: 0 });
  const layers = { wq: lin(8, 8), wk: lin(8, 4), wv: lin(8, 4), wo: lin(8, 8) };
  equal(new Attention(8, { nHeads: 2, nKvHeads: 1, layers }).headDim, 4);
  throws(() => new Attention(8, { nHeads: 2, nKvHeads: 1, layers: { ...layers, wk: lin(8, 8) } }), {
    message: "Attention: wk.outFeatures is 8, expected 4 (nKvHeads 1 × head size 4)",
  });
  throws(() => new Attention(8, { nHeads: 3, nKvHeads: 1, layers }), {
    message: "Attention: wq.outFeatures 8 is not a multiple of nHeads 3",
  });
  throws(() => new Attention(8, { nHeads: 2, nKvHeads: 1, layers: { ...layers, wo: lin(4, 8) } }), {
    message: "Attention: wo.inFeatures is 4, expected 8 (nHeads 2 × head size 4)",
  });
  throws(() => new Attention(6, { nHeads: 2, nKvHeads: 1, layers }), {
    message: "Attention: wq.inFeatures is 8, expected 6 (dim)",
  });
});
