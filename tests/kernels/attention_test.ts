/**
 * The fused attention kernels against the same attention composed from primitives (whose float64 reference is
 * independent of the kernels): values and gradients, with grouped heads, a cached prefix (S > T), without the
 * causal mask and with RoPE applied inside the kernels, on both backends.
 */
import { equal, ok } from "node:assert/strict";
import { runKernels, type Shape, type Tensor, tensor } from "../../mod.ts";
import { causalAttention, ropeTables } from "../../lib/nn/mod.ts";
import { valueAndGrad } from "../../lib/autodiff/grad.ts";
import { schedule } from "../../lib/codegen/schedule.ts";
import { Op } from "../../lib/ir/ops.ts";
import { toposort } from "../../lib/ir/node.ts";
import {
  attentionBackwardKeyValue,
  attentionBackwardQuery,
  type AttentionDims,
  attentionForward,
  type AttentionKernel,
  forwardLayout,
} from "../../kernels/attention.wgsl.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

const cases = [
  { b: 2, t: 5, s: 5, h: 4, hkv: 2, d: 8, causal: true, rope: false },
  { b: 1, t: 3, s: 7, h: 6, hkv: 3, d: 12, causal: true, rope: false },
  { b: 2, t: 4, s: 6, h: 2, hkv: 2, d: 4, causal: false, rope: false },
  // RoPE inside the kernels (tables longer than needed: the kernels read the stored table's first rows).
  { b: 2, t: 6, s: 6, h: 4, hkv: 2, d: 12, causal: true, rope: true },
  { b: 1, t: 3, s: 5, h: 2, hkv: 1, d: 8, causal: false, rope: true },
  // More key rows than query rows: with rotated rows the forward stores key rows past the last query row.
  { b: 1, t: 1, s: 6, h: 2, hkv: 2, d: 4, causal: false, rope: true },
];

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  for (const c of cases) {
    Deno.test(`fused attention = composed attention, values and gradients (${device}, ${JSON.stringify(c)})`, async () => {
      const rng = new TestRng(401 + c.d);
      const mk = (shape: number[]) =>
        tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape, device }) as F;
      const q = mk([c.b, c.t, c.h, c.d]);
      const k = mk([c.b, c.s, c.hkv, c.d]);
      const v = mk([c.b, c.s, c.hkv, c.d]);
      const w = mk([c.b, c.t, c.h, c.d]);
      const rope = c.rope ? ropeTables(c.d, c.s + 3, { device }) : undefined;
      const tables = rope === undefined
        ? undefined
        : { cos: rope.cos.slice([0, c.s]) as F, sin: rope.sin.slice([0, c.s]) as F };
      const opts = { causal: c.causal, rope: tables };
      const run = (fused: boolean) =>
        valueAndGrad((p: Record<string, Tensor>) =>
          (causalAttention(p.q as F, p.k as F, p.v as F, { ...opts, fused }) as F).mul(w).sum()
        )({ q, k, v });
      const out = causalAttention(q, k, v, opts);
      const plain = causalAttention(q, k, v, { ...opts, fused: false });
      // The fused output is the Custom kernel's view; the float64 reference of the composed graph is the oracle.
      ok(toposort([out.node]).some((n) => n.op === Op.Custom), "the fused kernel is used");
      assertClose(await out.data(), await reference(plain), {
        rtol: 1e-5,
        atol: 1e-5,
        what: "attention output",
      });
      const a = run(true);
      const b = run(false);
      // Both are f32 computations of the same sums in a different order: errors of a few ulp of the values.
      assertClose(await a.value.data(), await b.value.data(), { rtol: 1e-5, atol: 1e-4, what: "loss" });
      for (const name of ["q", "k", "v"]) {
        assertClose(await a.grads[name].data(), await b.grads[name].data(), {
          rtol: 1e-4,
          atol: 1e-5,
          what: `d${name}`,
        });
      }
    });
  }
}

Deno.test("fused attention runs as one kernel forward; a head size that is not a multiple of 4 falls back", () => {
  const rng = new TestRng(409);
  const mk = (shape: number[]) => tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape }) as F;
  const q = mk([1, 8, 2, 8]);
  const out = causalAttention(q, mk([1, 8, 1, 8]), mk([1, 8, 1, 8]));
  const order = schedule([out.node], { maxInputs: 8 });
  equal(order.filter((n) => n.op === Op.Custom).length, 1);
  equal(order.length, 2); // the kernel and the copy of its output view
  const odd = causalAttention(mk([1, 4, 2, 6]), mk([1, 4, 2, 6]), mk([1, 4, 2, 6]));
  equal(schedule([odd.node], { maxInputs: 8 }).filter((n) => n.op === Op.Custom).length, 0);
});

/** Runs the three kernels of `a` on WebGPU over `q, k, v, dO` and the tables; returns `[fwd, bq, bkv]`. */
async function threeKernels(a: AttentionDims, inputs: Record<string, F>): Promise<Float32Array[]> {
  const { q, k, v, dout, cos, sin } = inputs;
  const qk = a.rotatedRows ? [] : [q, k];
  const run = (kn: AttentionKernel, ins: F[]) =>
    runKernels(ins, [{ shape: [kn.size], dtype: "f32" }], [{
      name: kn.name,
      wgsl: kn.wgsl,
      dispatch: kn.dispatch,
      bindings: [ins.length, ...ins.map((_, i) => i)],
      host: kn.host,
    }]).then(([t]) => t as F);
  const fwd = await run(attentionForward(a), [q, k, v, cos, sin]);
  const bq = await run(attentionBackwardQuery(a), [...qk, v, dout, fwd, cos, sin]);
  const bkv = await run(attentionBackwardKeyValue(a), [...qk, v, dout, fwd, bq, cos, sin]);
  return Promise.all([fwd, bq, bkv].map(async (t) => new Float32Array(await t.data())));
}

for (
  const c of [
    { b: 2, t: 5, s: 5, h: 4, hkv: 2, d: 8, causal: true },
    { b: 1, t: 2, s: 7, h: 2, hkv: 2, d: 12, causal: false },
  ]
) {
  Deno.test(`attention kernels with rotated rows kept = rotating per pair, bit for bit; host twins (${JSON.stringify(c)})`, async () => {
    const rng = new TestRng(431 + c.s);
    const mk = (shape: number[]) =>
      tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape, device: "webgpu" }) as F;
    const rope = ropeTables(c.d, c.s, { device: "webgpu" });
    const inputs = {
      q: mk([c.b, c.t, c.h, c.d]),
      k: mk([c.b, c.s, c.hkv, c.d]),
      v: mk([c.b, c.s, c.hkv, c.d]),
      dout: mk([c.b, c.t, c.h, c.d]),
      cos: rope.cos as F,
      sin: rope.sin as F,
    };
    const base: AttentionDims = { ...c, scale: 1 / Math.sqrt(c.d), rope: true };
    const kept = { ...base, rotatedRows: true };
    const [plain, rotated] = await Promise.all([threeKernels(base, inputs), threeKernels(kept, inputs)]);
    const layout = forwardLayout(kept);
    const rows = c.b * c.t * c.h;
    // O and L, dQ and Δ, dK and dV: the same floats, since the rows are rotated by the same expressions.
    const same = (x: Float32Array, y: Float32Array, what: string) =>
      equal(x.findIndex((v, i) => !Object.is(v, y[i])), -1, `${what} differs`);
    same(plain[0], rotated[0].subarray(0, layout.l + rows), "O | L");
    same(plain[1], rotated[1], "dQ | Δ");
    same(plain[2], rotated[2], "dK | dV");
    // The kept rows and the backward results against the float64 host twins of the rotated-rows layout.
    const host = (kn: AttentionKernel, ins: (ArrayLike<number>)[]) => {
      const out = new Float64Array(kn.size);
      kn.host([out, ...ins.map((x) => Float64Array.from(x))]);
      return out;
    };
    const [q, k, v, dout, cos, sin] = await Promise.all(
      [inputs.q, inputs.k, inputs.v, inputs.dout, inputs.cos, inputs.sin].map((t) => t.data()),
    );
    const fwd = host(attentionForward(kept), [q, k, v, cos, sin]);
    assertClose(rotated[0], fwd, { rtol: 1e-5, atol: 1e-5, what: "forward with rotated rows" });
    const bq = host(attentionBackwardQuery(kept), [v, dout, fwd, cos, sin]);
    assertClose(rotated[1], bq, { rtol: 1e-4, atol: 1e-5, what: "dQ | Δ" });
    const bkv = host(attentionBackwardKeyValue(kept), [v, dout, fwd, bq, cos, sin]);
    assertClose(rotated[2], bkv, { rtol: 1e-4, atol: 1e-5, what: "dK | dV" });
    // The kept rows are R(pos)·q and R(s)·k: against rotating q and k in float64 here.
    const half = c.d / 2;
    for (
      const [x, n, pos, start] of [
        [q, rows, (r: number) => Math.floor(r / c.h) % c.t + c.s - c.t, layout.q],
        [k, c.b * c.s * c.hkv, (r: number) => Math.floor(r / c.hkv) % c.s, layout.k],
      ] as const
    ) {
      const want = new Float64Array(n * c.d);
      for (let r = 0; r < n; r++) {
        for (let i = 0; i < half; i++) {
          const [cs, sn] = [cos[pos(r) * half + i], sin[pos(r) * half + i]];
          const [x0, x1] = [x[r * c.d + 2 * i], x[r * c.d + 2 * i + 1]];
          want[r * c.d + 2 * i] = x0 * cs - x1 * sn;
          want[r * c.d + 2 * i + 1] = x0 * sn + x1 * cs;
        }
      }
      assertClose(rotated[0].subarray(start, start + n * c.d), want, {
        rtol: 1e-5,
        atol: 1e-6,
        what: "rotated rows",
      });
    }
  });
}

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  Deno.test(`fused attention with RoPE tables that are views: each view's rows, not the stored rows (${device})`, async () => {
    const rng = new TestRng(450);
    const [b, s, h, d] = [2, 4, 2, 8];
    const half = d / 2;
    const mk = (shape: number[]) =>
      tensor(rng.normals(shape.reduce((x, y) => x * y, 1)), { shape, device }) as F;
    const [q, k, v, w] = [mk([b, s, h, d]), mk([b, s, h, d]), mk([b, s, h, d]), mk([b, s, h, d])];
    const store = ropeTables(d, 2 * s, { device }); // [2s, d/2]: twice the rows needed
    const stored = { cos: await store.cos.data(), sin: await store.sin.data() };
    // Views [s, d/2] of the stored tables and the stored row that each one's row p is. The first three are the
    // stored rows 0..s−1, and the kernels read the stored table itself; the last two are not, and the kernels
    // read them as they are (they were given the stored rows 0..s−1 too).
    const views: Record<string, { view: (t: F) => F; row: (p: number) => number; direct: boolean }> = {
      "rows": { view: (t) => t.slice([0, s]) as F, row: (p) => p, direct: true },
      "flat prefix": {
        view: (t) => t.reshape([2 * s * half]).slice([0, s * half]).reshape([s, half]) as F,
        row: (p) => p,
        direct: true,
      },
      "rows under a size-1 axis": {
        view: (t) => t.reshape([1, 2 * s, half]).slice(null, [0, s]).reshape([s, half]) as F,
        row: (p) => p,
        direct: true,
      },
      "columns of [s, d]": {
        view: (t) => t.reshape([s, d]).slice(null, [0, half]) as F,
        row: (p) => 2 * p,
        direct: false,
      },
      "pair firsts": {
        view: (t) => t.reshape([s, 2, half]).slice(null, [0, 1]).reshape([s, half]) as F,
        row: (p) => 2 * p,
        direct: false,
      },
    };
    const lossOf = (rope: { cos: F; sin: F }, fused: boolean) =>
      valueAndGrad((p: Record<string, Tensor>) =>
        (causalAttention(p.q as F, p.k as F, p.v as F, { rope, fused }) as F).mul(w).sum()
      )({ q, k, v });
    for (const [name, { view, row, direct }] of Object.entries(views)) {
      const rope = { cos: view(store.cos), sin: view(store.sin) };
      // The same table as a tensor of its own, and the float64 reference of the composed attention with it.
      const own = (t: Float32Array) => {
        const e = (i: number) => t[row(Math.floor(i / half)) * half + i % half];
        return tensor(Float32Array.from({ length: s * half }, (_, i) => e(i)), {
          shape: [s, half],
          device,
        }) as F;
      };
      const contiguous = { cos: own(stored.cos), sin: own(stored.sin) };
      const plain = lossOf(contiguous, false);
      const want = [
        await reference(plain.value),
        ...await Promise.all(["q", "k", "v"].map((x) => reference(plain.grads[x]))),
      ];
      const kernel = toposort([lossOf(rope, true).value.node]).find((n) => n.op === Op.Custom)!;
      equal(kernel.src.includes(store.cos.node), direct, `${name}: the kernel reads the stored table`);
      for (const [tables, which] of [[rope, "view"], [contiguous, "contiguous"]] as const) {
        const got = lossOf(tables, true);
        const what = `${device}, ${name}, ${which} table`;
        // f32 sums of the same products in another order: a few ulp, as in the tests above.
        assertClose([await got.value.item()], want[0], { rtol: 1e-5, atol: 1e-4, what: `${what}: loss` });
        for (const [i, x] of ["q", "k", "v"].entries()) {
          assertClose(await got.grads[x].data(), want[i + 1], {
            rtol: 1e-4,
            atol: 1e-5,
            what: `${what}: d${x}`,
          });
        }
      }
    }
  });
}

/**
 * Sliding-window attention in float64, written here from its definition: query `i` (at position `p = i + S − T`)
 * sees keys `p − W < j ≤ p`; RoPE rotates queries and keys by their positions. Returns the loss `Σ out · w` and its
 * gradients with respect to `q`, `k`, `v` (softmax backward `dS = P (dP − Σ P dP)`, rotations transposed).
 */
function windowedHost(
  c: { b: number; t: number; s: number; h: number; hkv: number; d: number; window: number },
  x: { q: Float64Array; k: Float64Array; v: Float64Array; w: Float64Array },
  tables?: { cos: Float64Array; sin: Float64Array },
) {
  const { b: nb, t: nt, s: ns, h: nh, hkv, d, window } = c;
  const half = d / 2;
  const scale = 1 / Math.sqrt(d);
  const rotate = (src: Float64Array, at: number, pos: number, back: boolean) => {
    const out = Float64Array.from(src.subarray(at, at + d));
    if (tables === undefined) return out;
    for (let i = 0; i < half; i++) {
      const cs = tables.cos[pos * half + i];
      const sn = back ? -tables.sin[pos * half + i] : tables.sin[pos * half + i];
      out[2 * i] = src[at + 2 * i] * cs - src[at + 2 * i + 1] * sn;
      out[2 * i + 1] = src[at + 2 * i] * sn + src[at + 2 * i + 1] * cs;
    }
    return out;
  };
  const qi = (b: number, i: number, h: number) => ((b * nt + i) * nh + h) * d;
  const kj = (b: number, j: number, kh: number) => ((b * ns + j) * hkv + kh) * d;
  const dq = new Float64Array(x.q.length);
  const dkr = new Float64Array(x.k.length); // in the rotated frame until the end
  const dv = new Float64Array(x.v.length);
  let loss = 0;
  for (let b = 0; b < nb; b++) {
    for (let h = 0; h < nh; h++) {
      const kh = Math.floor(h / (nh / hkv));
      for (let i = 0; i < nt; i++) {
        const p = i + ns - nt;
        const q = rotate(x.q, qi(b, i, h), p, false);
        const keys: number[] = [];
        for (let j = Math.max(0, p - window + 1); j <= p; j++) keys.push(j);
        const kr = keys.map((j) => rotate(x.k, kj(b, j, kh), j, false));
        const sc = kr.map((k) => scale * k.reduce((acc, kv, n) => acc + kv * q[n], 0));
        const m = Math.max(...sc);
        const e = sc.map((z) => Math.exp(z - m));
        const sum = e.reduce((a1, a2) => a1 + a2, 0);
        const P = e.map((z) => z / sum);
        const dO = x.w.subarray(qi(b, i, h), qi(b, i, h) + d);
        const dP = keys.map((j) => {
          let acc = 0;
          for (let n = 0; n < d; n++) {
            loss += P[keys.indexOf(j)] * x.v[kj(b, j, kh) + n] * dO[n];
            acc += dO[n] * x.v[kj(b, j, kh) + n];
          }
          return acc;
        });
        const mean = P.reduce((acc, pj, n) => acc + pj * dP[n], 0);
        const dqr = new Float64Array(d);
        keys.forEach((j, n) => {
          const ds = P[n] * (dP[n] - mean);
          for (let r = 0; r < d; r++) {
            dqr[r] += scale * ds * kr[n][r];
            dkr[kj(b, j, kh) + r] += scale * ds * q[r];
            dv[kj(b, j, kh) + r] += P[n] * dO[r];
          }
        });
        dq.set(rotate(dqr, 0, p, true), qi(b, i, h));
      }
    }
  }
  const dk = new Float64Array(x.k.length);
  for (let r = 0; r < nb * ns * hkv; r++) dk.set(rotate(dkr, r * d, Math.floor(r / hkv) % ns, true), r * d);
  return { loss, dq, dk, dv };
}

const windowCases = [
  { b: 2, t: 7, s: 7, h: 4, hkv: 2, d: 8, window: 3, rope: false },
  // A cached prefix (S > T): the window cuts the prefix for every query, and some keys are seen by none.
  { b: 1, t: 3, s: 9, h: 2, hkv: 1, d: 8, window: 4, rope: false },
  // RoPE inside the kernels; a window of one key (each query sees itself only).
  { b: 2, t: 6, s: 6, h: 4, hkv: 2, d: 12, window: 2, rope: true },
  { b: 1, t: 5, s: 5, h: 2, hkv: 2, d: 4, window: 1, rope: false },
];

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  for (const c of windowCases) {
    Deno.test(`sliding-window attention = float64 reference, values and gradients, fused and composed (${device}, ${JSON.stringify(c)})`, async () => {
      const rng = new TestRng(470 + c.window + c.s);
      const draw = (shape: number[]) => Float64Array.from(rng.normals(shape.reduce((a, b) => a * b, 1)));
      const host = {
        q: draw([c.b, c.t, c.h, c.d]),
        k: draw([c.b, c.s, c.hkv, c.d]),
        v: draw([c.b, c.s, c.hkv, c.d]),
        w: draw([c.b, c.t, c.h, c.d]),
      };
      const shapes = { q: [c.b, c.t, c.h, c.d], k: [c.b, c.s, c.hkv, c.d], v: [c.b, c.s, c.hkv, c.d] };
      const dev = (name: "q" | "k" | "v" | "w") =>
        tensor(Float32Array.from(host[name]), { shape: name === "w" ? shapes.q : shapes[name], device }) as F;
      const rope = c.rope ? ropeTables(c.d, c.s, { device }) : undefined;
      const tables = rope === undefined ? undefined : {
        cos: Float64Array.from(await rope.cos.data()),
        sin: Float64Array.from(await rope.sin.data()),
      };
      // The reference reads the float32 inputs the devices get, widened exactly.
      const f32 = (a: Float64Array) => Float64Array.from(Float32Array.from(a));
      const want = windowedHost(
        c,
        { q: f32(host.q), k: f32(host.k), v: f32(host.v), w: f32(host.w) },
        tables,
      );
      const w = dev("w");
      for (const fused of [true, false]) {
        const run = valueAndGrad((p: Record<string, Tensor>) =>
          (causalAttention(p.q as F, p.k as F, p.v as F, { window: c.window, rope, fused }) as F).mul(w).sum()
        );
        const got = run({ q: dev("q"), k: dev("k"), v: dev("v") });
        const what = fused ? "fused" : "composed";
        // float32 sums of a few dozen terms of size ~1 against float64: errors of ~1e-6 relative.
        assertClose(await got.value.data(), [want.loss], { rtol: 1e-5, atol: 1e-4, what: `${what} loss` });
        for (const name of ["q", "k", "v"] as const) {
          assertClose(await got.grads[name].data(), want[`d${name}`], {
            rtol: 1e-4,
            atol: 1e-5,
            what: `${what} d${name}`,
          });
        }
      }
    });
  }
}

Deno.test("a sliding window that holds every key runs the kernels without a window (same key and shader)", () => {
  const rng = new TestRng(480);
  const mk = (shape: number[]) => tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape }) as F;
  const [q, k, v] = [mk([1, 6, 2, 8]), mk([1, 6, 1, 8]), mk([1, 6, 1, 8])];
  const custom = (window?: number) =>
    toposort([causalAttention(q, k, v, window === undefined ? {} : { window }).node])
      .filter((n) => n.op === Op.Custom).map((n) =>
        JSON.stringify(n.arg, (key, x) => key === "host" ? undefined : x)
      );
  const none = custom();
  equal(none.length, 1);
  equal(custom(6)[0], none[0]);
  equal(custom(100)[0], none[0]);
  ok(custom(5)[0] !== none[0], "a window shorter than the keys changes the kernel");
  const dims: AttentionDims = { b: 1, t: 6, s: 6, h: 2, hkv: 1, d: 8, scale: 0.5, causal: true };
  ok(!attentionForward(dims).key.includes("window"), "no window in the key of a kernel without one");
  ok(attentionForward({ ...dims, window: 3 }).key.includes("window=3"));
});
