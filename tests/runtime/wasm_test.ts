/**
 * The wasm device beyond the shared parity suites: its transcendental routines against the host's float64 ones
 * (ulp bounds, special values, the four-lane and scalar forms agreeing bit for bit), the matmul template's packing
 * forms (transposed, batched, prologues, k longer than one block, uneven blocks) against the float64 reference, its
 * even blocking, sums of products summed in one pass giving the bits of term by term, the same bits on
 * one thread and on the pool, the attention kernels (RoPE inside them included) against their float64 host
 * twins and against rotating first, row kernels (norms, softmaxes, cross-entropy and their gradients, one row
 * per work item) against the float64 reference, and a memory that grows.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { getWasm, realize, type Shape, type Tensor, tensor } from "../../mod.ts";
import { assertClose, reference, TEST_SEED, TestRng } from "../_helpers.ts";
import {
  applyRope,
  causalAttention,
  crossEntropy,
  layerNorm,
  rmsNorm,
  type RopeTables,
  ropeTables,
} from "../../lib/nn/mod.ts";
import { grad, valueAndGrad } from "../../lib/autodiff/grad.ts";
import { graphSignature, planFor } from "../../lib/runtime/plan.ts";
import { Op } from "../../lib/ir/ops.ts";
import { toposort } from "../../lib/ir/node.ts";
import { matmulBlocking, matmulSwapped, MR, NR } from "../../lib/codegen/render_wasm_matmul.ts";
import { renderWasm, type WasmKernel } from "../../lib/codegen/render_wasm.ts";
import type { Kernel } from "../../lib/codegen/kexpr.ts";
import { WASM_MAX_PAGES } from "../../lib/codegen/wasm_emit.ts";
import { HAS_RELAXED_SIMD } from "../../lib/runtime/wasm.ts";
import { MATMUL_TEMPLATE_MIN_FLOPS } from "../../lib/codegen/lower.ts";

type F = Tensor<Shape, "f32">;

/** Distance in f32 ulps between two f32 values (0 for equal bits or two NaNs). */
function ulps(a: number, b: number): number {
  if (Number.isNaN(a) && Number.isNaN(b)) return 0;
  if (a === b) return 0;
  if (!Number.isFinite(a) || !Number.isFinite(b)) return Infinity;
  const bits = new Int32Array(new Float32Array([a, b]).buffer);
  const key = (i: number) => (i < 0 ? -(i & 0x7fffffff) : i);
  return Math.abs(key(bits[0]) - key(bits[1]));
}

const SPECIAL = [0, -0, Infinity, -Infinity, NaN, 1, -1, 1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38, 0.5, 2];

/** Inputs: the special values, then `n` random ones from `gen`; a length that leaves a scalar tail (n % 4 = 3). */
function inputs(gen: () => number, n = 4003): Float32Array {
  return Float32Array.from(
    { length: SPECIAL.length + n },
    (_, i) => (i < SPECIAL.length ? SPECIAL[i] : gen()),
  );
}

const CASES: {
  name: string;
  gen: (r: TestRng) => number;
  f: (x: F) => F;
  host: (x: number) => number;
  ulp: number;
}[] = [
  { name: "exp", gen: (r) => (r.next() - 0.5) * 220, f: (x) => x.exp() as F, host: Math.exp, ulp: 2 },
  {
    name: "log",
    gen: (r) => Math.exp((r.next() - 0.5) * 200),
    f: (x) => x.log() as F,
    host: Math.log,
    ulp: 2,
  },
  {
    name: "tanh",
    gen: (r) => (r.next() - 0.5) * 2 ** (r.next() * 12 - 8),
    f: (x) => x.tanh() as F,
    host: Math.tanh,
    ulp: 1,
  },
];

/**
 * Runs `body` on the wasm device and then restores the settings tests change on it (its thread count, row
 * kernels), whether the body passes or throws.
 */
async function keepingSettings(
  body: (be: Awaited<ReturnType<typeof getWasm>>) => Promise<void>,
): Promise<void> {
  const be = await getWasm();
  const { threads, rowKernels } = be;
  try {
    await body(be);
  } finally {
    be.rowKernels = rowKernels;
    be.setThreads(threads);
  }
}

Deno.test("wasm exp, log and tanh are within their ulp bounds of the float64 host values, special values exact", async () => {
  const rng = new TestRng(300);
  for (const c of CASES) {
    const xs = inputs(() => c.gen(rng));
    const got = await c.f(tensor(xs, { device: "wasm" }) as F).data();
    let worst = 0;
    for (let i = 0; i < xs.length; i++) {
      const want = Math.fround(c.host(xs[i]));
      const d = ulps(got[i], want);
      // Results below 1.7e-38 (e^-87, the edge of f32's subnormal range) may be flushed to 0.
      const flushed = Math.abs(want) < 1.7e-38 && Math.abs(got[i] - want) < 1.7e-38;
      if (d > c.ulp && !flushed) {
        throw new Error(
          `${c.name}(${xs[i]}) = ${got[i]}, float64 gives ${want} (${d} ulp; TEST_SEED=${TEST_SEED})`,
        );
      }
      if (i >= SPECIAL.length && !flushed) worst = Math.max(worst, d);
    }
    ok(worst <= c.ulp, `${c.name}: worst ${worst} ulp`);
  }
});

Deno.test("wasm computes the same bits in its four-lane and scalar code", async () => {
  // 4003 outputs: groups of four run as SIMD, the last three as scalar code; the same inputs sit in both.
  const rng = new TestRng(301);
  const n = 4003;
  const xs = Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 20);
  for (let i = 0; i < 3; i++) xs[n - 3 + i] = xs[5 + i];
  const x = tensor(xs, { device: "wasm" }) as F;
  const y = x.exp().add(x.abs().add(0.1).log()).add(x.tanh()).mul(x.sigmoid()) as F;
  const want = await reference(y);
  const out = await y.data();
  for (let i = 0; i < 3; i++) equal(out[n - 3 + i], out[5 + i], `lane value ${i} (TEST_SEED=${TEST_SEED})`);
  assertClose(out, want, { rtol: 2e-6, atol: 1e-6, what: "fused chain" });
});

Deno.test("wasm matmul template: transposed, batched, padded and cast operands, k over one block", async (t) => {
  const rng = new TestRng(302);
  const mk = (shape: number[]) =>
    tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape, device: "wasm" }) as unknown as F;
  const cases: [string, () => F][] = [
    ["A row-major, B row-major (contiguous columns)", () => mk([61, 70]).matmul(mk([70, 45])) as F],
    ["A transposed (contiguous rows of packed A)", () => mk([70, 61]).T.matmul(mk([70, 45])) as F],
    ["B transposed (x·Wᵀ, as Linear)", () => mk([61, 70]).matmul(mk([45, 70]).T) as F],
    ["B transposed, whole panels and steps of four", () => mk([40, 64]).matmul(mk([48, 64]).T) as F],
    [
      "B transposed, batched, rows of a slice",
      () => mk([2, 30, 33]).matmul(mk([2, 17, 40]).slice(null, null, [2, 35]).T) as F,
    ],
    ["both transposed", () => mk([70, 61]).T.matmul(mk([45, 70]).T) as F],
    ["k = 600 (three k blocks, odd tail)", () => mk([13, 601]).matmul(mk([601, 29])) as F],
    ["several blocks of m and n, the last ones shorter", () => mk([200, 70]).matmul(mk([70, 172])) as F],
    ["batched with broadcast", () => mk([3, 1, 20, 30]).matmul(mk([2, 30, 17])) as F],
    ["padded prologue", () => mk([40, 30]).pad([[0, 0], [2, 1]], 0.5).matmul(mk([33, 50])) as F],
    ["cast prologue", () => mk([40, 30]).gt(0).cast("f32").matmul(mk([30, 50])) as F],
    ["epilogue: bias, gelu, residual", () => {
      const x = mk([50, 64]);
      return x.matmul(mk([64, 64])).add(mk([64])).gelu().add(x) as F;
    }],
    ["epilogue to bool", () => mk([33, 40]).matmul(mk([40, 40])).gt(0).cast("f32") as F],
  ];
  for (const [name, build] of cases) {
    await t.step(name, async () => {
      const y = build();
      // k ≤ 601 products of unit normals: f32 error ~ sqrt(k)·2^-24·|terms| ≈ 1e-5; an indexing slip is O(1).
      const want = await reference(y);
      assertClose(await y.data(), want, { rtol: 1e-4, atol: 2e-4, what: name });
    });
  }
});

Deno.test("wasm matmul blocks of m and n are as even as the register block allows, k's as before", () => {
  for (let x = 1; x <= 1100; x++) {
    const { mc, nc, kc } = matmulBlocking(x, x, x);
    for (const [size, unit, most] of [[mc, MR, 96], [nc, NR, 128]]) {
      const blocks = Math.ceil(x / size);
      equal(size % unit, 0, `${x}: block ${size}`);
      ok(size <= Math.max(most, unit), `${x}: block ${size}`);
      // As few blocks as with full ones, the last one short of the others by less than a register block each.
      equal(blocks, Math.ceil(x / most), `${x}: ${blocks} blocks of ${size}`);
      ok(x - (blocks - 1) * size > size - unit * blocks, `${x}: blocks of ${size}`);
    }
    equal(kc, Math.max(2, Math.min(256, Math.ceil(x / 2) * 2)), `${x}: kc ${kc}`);
  }
  deepEqual([matmulBlocking(512, 172, 72).mc, matmulBlocking(512, 172, 72).nc], [90, 88]);
});

/** Runs a rendered kernel on all its items over a fresh memory holding `inputs`; returns its f32 output. */
function runRendered(kernel: Kernel, r: WasmKernel, inputs: readonly Float32Array[]): Float32Array {
  const outSize = kernel.outShape.reduce((a, b) => a * b, 1);
  let at = 1024;
  const addr = [outSize, ...inputs.map((x) => x.length)].map((n) => {
    const a = at;
    at += Math.ceil(n / 16) * 64;
    return a;
  });
  const memory = new WebAssembly.Memory({
    initial: Math.ceil((at + r.scratchBytes) / 65536),
    maximum: WASM_MAX_PAGES,
    shared: true,
  });
  inputs.forEach((x, i) => new Float32Array(memory.buffer, addr[i + 1], x.length).set(x));
  const env = { mem: memory };
  const inst = new WebAssembly.Instance(
    new WebAssembly.Module(r.bytes),
    r.usesMath ? { env, math: { sin: Math.sin, cos: Math.cos } } : { env },
  );
  (inst.exports.run as (...args: number[]) => void)(0, r.items, at, ...addr, 0);
  return new Float32Array(memory.buffer, addr[0], outSize).slice();
}

Deno.test("wasm matmul: a sum of products whose every k fits one block, summed in one pass, gives the bits of term by term", () => {
  const rng = new TestRng(304);
  const mk = (shape: number[]) =>
    tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape, device: "wasm" }) as unknown as F;
  const [x, w, h, b, s, g] = [mk([61, 70]), mk([45, 70]), mk([61, 5]), mk([45, 5]), mk([70]), mk([61, 45])];
  const sums: [string, F][] = [
    ["A in place (x·Wᵀ + h·Bᵀ, a LoRA projection)", x.matmul(w.T).add(h.matmul(b.T)) as F],
    ["A packed beside A in place", x.mul(s).matmul(w.T).add(h.matmul(b.T)) as F],
    ["three terms", g.matmul(w).add(g.matmul(b).matmul(h.T).T.matmul(x)).add(h.matmul(h.T).matmul(x)) as F],
    ["one term", x.matmul(w.T) as F],
  ];
  for (const [name, y] of sums) {
    const plan = planFor([y.node], graphSignature([y.node]), { maxInputs: 256, loopBudget: Infinity });
    const kernels = plan.kernels.map((k) => k.kernel).filter((k) => k?.matmul != null) as Kernel[];
    const last = kernels[kernels.length - 1];
    ok(name === "one term" || last.matmul!.terms.length > 1, `${name}: ${last.matmul!.terms.length} terms`);
    const data = last.inputs.map((i) =>
      Float32Array.from(rng.normals(i.size), (v, j) => (j % 7 === 0 ? 0 : v))
    );
    const render = (sumTerms: boolean) => renderWasm(last, { relaxedSimd: HAS_RELAXED_SIMD, sumTerms });
    const [summed, termwise] = [
      runRendered(last, render(true), data),
      runRendered(last, render(false), data),
    ];
    ok(summed.some((v) => v !== 0), name);
    ok(summed.every((v, i) => Object.is(v, termwise[i])), `${name}: the bits differ`);
  }
});

Deno.test("wasm matmul of at most 8 rows computes its transpose where that takes fewer register blocks, with the same bits", async () => {
  // dA = dUᵀ·x of a rank-8 adapter (8 x 64, 8 x 172) swaps; its dB = dYᵀ·u (64 x 8) and 6-row products do not.
  const pins: [number, number, boolean][] = [[8, 64, true], [8, 172, true], [7, 9, true], [64, 8, false]];
  for (
    const [m, n, want] of [...pins, [6, 64, false], [8, 8, false], [1, 172, false], [
      512,
      172,
      false,
    ]] as const
  ) {
    equal(matmulSwapped(m, n), want, `${m} x ${n}`);
  }
  const rng = new TestRng(305);
  const mk = (shape: number[]) =>
    tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape, device: "wasm" }) as unknown as F;
  for (let trial = 0; trial < 8; trial++) {
    const m = rng.int(7, 8);
    const n = trial < 2 ? [64, 172][trial] : rng.int(40, 200);
    // Products of fewer multiply-adds are no matmul template.
    const k = trial < 2 ? 512 : rng.int(Math.ceil(MATMUL_TEMPLATE_MIN_FLOPS / (m * n)), 600);
    const forms: [string, F][] = [
      ["Aᵀ·B (a weight gradient)", mk([k, m]).T.matmul(mk([k, n])) as F],
      ["A·Bᵀ with a bias and relu", mk([m, k]).matmul(mk([n, k]).T).add(mk([n])).relu() as F],
      ["batched A·B", mk([2, m, k]).matmul(mk([2, k, n])) as F],
    ];
    for (const [name, y] of forms) {
      const what = `${name}, ${m} x ${n}, k = ${k}`;
      const plan = planFor([y.node], graphSignature([y.node]), { maxInputs: 256, loopBudget: Infinity });
      const kernel = plan.kernels.map((x) => x.kernel).filter((x) => x?.matmul != null).pop() as Kernel;
      ok(kernel !== undefined && matmulSwapped(kernel.matmul!.m, kernel.matmul!.n), what);
      const data = kernel.inputs.map((i) => Float32Array.from(rng.normals(i.size)));
      const render = (swap: boolean) => renderWasm(kernel, { relaxedSimd: HAS_RELAXED_SIMD, swap });
      const [swapped, plain] = [
        runRendered(kernel, render(true), data),
        runRendered(kernel, render(false), data),
      ];
      ok(swapped.every((v, i) => Object.is(v, plain[i])), `${what}: the bits differ`);
      // Unit normals, k <= 600: f32 error ~ sqrt(k)·2^-24·|terms| ≈ 1e-5; a misplaced element is O(1).
      const want = await reference(y);
      assertClose(await y.data(), want, { rtol: 1e-4, atol: 2e-4, what });
    }
  }
});

Deno.test("wasm gives the same bits on one thread and on the thread pool", async () => {
  await keepingSettings(async (be) => {
    const rng = new TestRng(303);
    const a = tensor(rng.normals(300 * 200), { shape: [300, 200], device: "wasm" }) as F;
    const b = tensor(rng.normals(200 * 150), { shape: [200, 150], device: "wasm" }) as F;
    const work = () => [a.matmul(b).relu().softmax() as F, a.exp().sum(1) as F, a.T.add(1).max(0) as F];
    be.setThreads(1);
    const one = await Promise.all(work().map((y) => y.data()));
    be.setThreads(3);
    equal(be.threads, 3, be.description);
    const pool = await Promise.all(work().map((y) => y.data()));
    one.forEach((o, i) => ok(o.every((v, j) => Object.is(v, pool[i][j])), `result ${i} differs`));
  });
});

interface AttentionCase {
  b: number;
  t: number;
  s: number;
  h: number;
  hkv: number;
  d: number;
  causal: boolean;
}

/** Fresh unit-normal q, k, v and a weight w for the loss `Σ w·attend(q, k, v)` of case `c`, on wasm. */
function attentionInputs(rng: TestRng, c: AttentionCase): { q: F; k: F; v: F; w: F } {
  const mk = (shape: number[]) =>
    tensor(rng.normals(shape.reduce((x, y) => x * y, 1)), { shape, device: "wasm" }) as F;
  return {
    q: mk([c.b, c.t, c.h, c.d]),
    k: mk([c.b, c.s, c.hkv, c.d]),
    v: mk([c.b, c.s, c.hkv, c.d]),
    w: mk([c.b, c.t, c.h, c.d]),
  };
}

/** The loss `Σ w·attend(q, k, v)` and its gradients in q, k and v (lazy). */
function lossAndGrads(x: { q: F; k: F; v: F; w: F }, attend: (q: F, k: F, v: F) => F): F[] {
  const r = valueAndGrad((p: Record<string, Tensor>) => attend(p.q as F, p.k as F, p.v as F).mul(x.w).sum())({
    q: x.q,
    k: x.k,
    v: x.v,
  });
  return [r.value, r.grads.q, r.grads.k, r.grads.v] as F[];
}

Deno.test("wasm attention kernels: values and gradients of the float64 host twins, the same bits on the pool", async () => {
  const rng = new TestRng(304);
  const cases = [
    // Big enough that all three kernels are split over the threads.
    { b: 4, t: 64, s: 64, h: 8, hkv: 4, d: 16, causal: true },
    // A cached prefix (S > T), sizes that leave partial groups of four keys and queries.
    { b: 2, t: 37, s: 45, h: 6, hkv: 2, d: 12, causal: true },
    { b: 1, t: 9, s: 14, h: 2, hkv: 1, d: 4, causal: false },
  ];
  await keepingSettings(async (be) => {
    for (const c of cases) {
      const x = attentionInputs(rng, c);
      await realize(x.q, x.k, x.v, x.w);
      const run = () => lossAndGrads(x, (q, k, v) => causalAttention(q, k, v, { causal: c.causal }) as F);
      const fused = run();
      ok(toposort(fused.map((t) => t.node)).filter((n) => n.op === Op.Custom).length === 3, "fused kernels");
      // The reference runs the kernels' float64 host twins (before anything of this graph is realized).
      const want = await Promise.all(fused.map((t) => reference(t)));
      be.setThreads(1);
      const one = await Promise.all(fused.map((t) => t.data()));
      be.setThreads(3);
      const pool = await Promise.all(run().map((t) => t.data()));
      ["loss", "dq", "dk", "dv"].forEach((what, i) => {
        // f32 sums of up to G·T = 128 products of unit normals against float64: a few ulp of the terms (about
        // 1e-6 relative, measured); a slip of one key or lane is O(1).
        assertClose(one[i], want[i], { rtol: 1e-5, atol: 1e-5, what: `${what} ${JSON.stringify(c)}` });
        ok(one[i].every((x, j) => Object.is(x, pool[i][j])), `${what}: one thread and the pool differ`);
      });
    }
  });
});

Deno.test("wasm attention with RoPE inside: float64 host twins, rotating first, same bits on the pool", async () => {
  const rng = new TestRng(305);
  const cases = [
    // Split over the threads: chunks that start inside a sequence and run into the next one.
    { b: 4, t: 64, s: 64, h: 8, hkv: 4, d: 16, causal: true },
    // Partial groups of four, an odd number of vec4s per row, four query heads per key/value head.
    { b: 2, t: 37, s: 37, h: 8, hkv: 2, d: 12, causal: true },
    // Cached keys (S > T: query t at position t + S - T), without the mask; tables longer than S.
    { b: 3, t: 9, s: 14, h: 4, hkv: 1, d: 8, causal: false },
  ];
  await keepingSettings(async (be) => {
    for (const c of cases) {
      const x = attentionInputs(rng, c);
      const { q, k } = x;
      const long = ropeTables(c.d, c.s + 5, { device: "wasm" });
      const rope: RopeTables = { cos: long.cos.slice([0, c.s]) as F, sin: long.sin.slice([0, c.s]) as F };
      await realize(x.q, x.k, x.v, x.w, long.cos, long.sin);
      const run = (attend: (q: F, k: F, v: F) => F) => lossAndGrads(x, attend);
      const inside = () => run((q, k, v) => causalAttention(q, k, v, { causal: c.causal, rope }) as F);
      const fused = inside();
      const customs = toposort(fused.map((t) => t.node)).filter((n) => n.op === Op.Custom);
      equal(customs.length, 3, "three fused kernels");
      // The kernels read q and k themselves: no rotation before them.
      for (const n of customs) ok(n.src[0] === q.node && n.src[1] === k.node, "q and k go in unrotated");
      // What the wasm device did before the kernels rotated: RoPE as its own kernels, then the plain kernels.
      const first = run((q, k, v) => {
        const qTables = {
          cos: rope.cos.slice([c.s - c.t, c.s]) as F,
          sin: rope.sin.slice([c.s - c.t, c.s]) as F,
        };
        return causalAttention(applyRope(q, qTables) as F, applyRope(k, rope) as F, v, {
          causal: c.causal,
        }) as F;
      });
      // The reference runs the kernels' float64 host twins (before anything of this graph is realized).
      const want = await Promise.all(fused.map((t) => reference(t)));
      be.setThreads(1);
      const one = await Promise.all(fused.map((t) => t.data()));
      const before = await Promise.all(first.map((t) => t.data()));
      be.setThreads(3);
      const pool = await Promise.all(inside().map((t) => t.data()));
      ["loss", "dq", "dk", "dv"].forEach((what, i) => {
        const where = `${what} ${JSON.stringify(c)}`;
        // f32 sums of up to G·T = 148 products of unit normals against float64: a few ulp of the terms
        // (measured: up to 3.2e-6 at |dK| ≈ 6); a slip of one key, lane, pair or angle is O(1).
        assertClose(one[i], want[i], { rtol: 1e-5, atol: 1e-5, what: where });
        // The same sums in the same order from the same rotated values (loss and dV bit for bit, measured);
        // dQ and dK are rotated back before their scale instead of after, and by the kernel instead of
        // RoPE's own backward: 1 or 2 ulp of the larger component of a pair (measured: 4.8e-7 at |dK| ≈ 3).
        assertClose(one[i], before[i], { rtol: 1e-5, atol: 4e-6, what: `${where}, against rotating first` });
        ok(one[i].every((x, j) => Object.is(x, pool[i][j])), `${what}: one thread and the pool differ`);
      });
    }
  });
});

Deno.test("wasm row kernels: norms, softmaxes, cross-entropy and their gradients against the float64 reference", async (t) => {
  const be = await getWasm();
  const rng = new TestRng(305);
  const mk = (shape: number[], scale = 1) =>
    tensor(rng.normals(shape.reduce((a, b) => a * b, 1), scale), { shape, device: "wasm" }) as F;
  // Rows shorter than the four lanes' minimum (8), with a partial group of four, long ones; 600 rows of 257 are
  // estimated above the pool's threshold, so they are split over the threads.
  const shapes: [number, number][] = [[40, 3], [17, 6], [33, 37], [24, 64], [16, 300], [600, 257]];
  // The graphs of each output, built afresh from the same inputs on each call.
  const build = (rows: number, len: number): (() => [string, F][]) & { inputs: { x: F; w: F; g: F } } => {
    const x = mk([rows, len], 3);
    const w = mk([len]);
    const g = mk([rows, len]);
    const targets = tensor(Int32Array.from({ length: rows }, () => rng.int(0, len - 1)), {
      shape: [rows],
      dtype: "i32",
      device: "wasm",
    });
    return Object.assign(() => outputs(x, w, g, targets), { inputs: { x, w, g } });
  };
  const outputs = (x: F, w: F, g: F, targets: Tensor<Shape, "i32">): [string, F][] => {
    const wrt = (f: (x: F, w: F) => F) => grad((p: { x: F; w: F }) => f(p.x, p.w).mul(g).sum())({ x, w });
    const rms = wrt((x, w) => rmsNorm(x, w) as F);
    const ln = wrt((x, w) => layerNorm(x, w) as F);
    return [
      ["softmax", x.softmax() as F],
      ["softmax dx", wrt((x) => x.softmax() as F).x],
      ["logSoftmax", x.logSoftmax() as F],
      ["logSoftmax dx", wrt((x) => x.logSoftmax() as F).x],
      ["rmsNorm", rmsNorm(x, w) as F],
      ["rmsNorm dx", rms.x],
      ["rmsNorm dw", rms.w],
      ["layerNorm", layerNorm(x, w) as F],
      ["layerNorm dx", ln.x],
      ["crossEntropy dlogits", grad((p: { x: F }) => crossEntropy(p.x, targets))({ x }).x],
    ];
  };
  await keepingSettings(async () => {
    be.rowKernels = true;
    for (const [rows, len] of shapes) {
      await t.step(`${rows} rows of ${len}`, async () => {
        const graphs = build(rows, len);
        const outs = graphs();
        // A norm's dx is a difference of terms as large as |g·w|/σ of its row, rounded in f32, times x̂, whose own
        // error grows as max|x|/σ: its error scales with the product (a row of 3 values of scale 3 can have a small
        // σ; 2.3e-4 was seen on 0.60 in a row where |g·w|/σ alone was 68).
        const [X, W, G] = await Promise.all(
          [graphs.inputs.x, graphs.inputs.w, graphs.inputs.g].map((t) => t.data()),
        );
        const amplification = Array.from({ length: rows }, (_, r) => {
          const row = X.subarray(r * len, (r + 1) * len);
          const mu = row.reduce((a, v) => a + v, 0) / len;
          const sd = Math.sqrt(row.reduce((a, v) => a + (v - mu) ** 2, 0) / len + 1e-5);
          const rms = Math.sqrt(row.reduce((a, v) => a + v * v, 0) / len + 1e-5);
          let gw = 0;
          let xmax = 0;
          for (let j = 0; j < len; j++) {
            gw = Math.max(gw, Math.abs(G[r * len + j] * W[j]));
            xmax = Math.max(xmax, Math.abs(row[j]));
          }
          // The normalised row x̂ itself carries f32 error of ulp(max|x|)/σ: it is amplified again by |g·w|/σ.
          const spread = Math.min(sd, rms);
          return Math.max(1, (gw / spread) * Math.max(1, xmax / spread));
        });
        for (const [name, y] of outs) {
          const plan = planFor([y.node], graphSignature([y.node]), {
            maxInputs: be.maxInputs,
            loopBudget: be.loopBudget,
            rowKernels: true,
          });
          const rowForms = plan.kernels.filter((k) => k.kernel?.row?.length === len).length;
          // dw sums over the rows, so its kernel is not a row kernel; its input is.
          ok(rowForms > 0, `${name} [${rows}, ${len}]: no row kernel in its plan`);
        }
        // The reference first: once realized, a tensor's graph is its stored value.
        const want = await Promise.all(outs.map(([, y]) => reference(y)));
        be.setThreads(1);
        const one = await Promise.all(outs.map(([, y]) => y.data()));
        be.setThreads(3);
        equal(be.threads, 3, be.description);
        const pool = await Promise.all(graphs().map(([, y]) => y.data()));
        for (let i = 0; i < outs.length; i++) {
          const what = `${outs[i][0]} [${rows}, ${len}]`;
          ok(one[i].every((v, j) => Object.is(v, pool[i][j])), `${what}: the pool's bits differ`);
          // f32 arithmetic with f64 sums rounded once: a few ulp of values of size ~1 (for a norm's dx, of its
          // row's amplification; 1.8e-5 was seen on an element of 0.42 of a row amplified 10-fold). The weight
          // gradient sums `rows` terms of size ~1 in f32, so its error grows with the rows: about 1e-5 for 600 (2.8e-6
          // seen on an element of 0.02). A slip of row or index moves results by O(0.1).
          const atol = outs[i][0].endsWith("dw") ? Math.max(2e-6, 1e-5 * Math.sqrt(rows / 600)) : 2e-6;
          if (outs[i][0].endsWith("Norm dx")) {
            for (let r = 0; r < rows; r++) {
              const at = [r * len, (r + 1) * len] as const;
              assertClose(one[i].subarray(...at), want[i].subarray(...at), {
                rtol: 2e-5,
                atol: atol * amplification[r],
                what: `${what} row ${r}`,
              });
            }
          } else assertClose(one[i], want[i], { rtol: 2e-5, atol, what });
        }
      });
    }
  });
});

Deno.test("wasm memory grows for large tensors and keeps earlier ones intact", async () => {
  const small = tensor([1, 2, 3], { device: "wasm" });
  await realize(small);
  // 16 MiB: beyond the initial 4 MiB, so the memory grows while `small` lives.
  const n = 4 * 1024 * 1024;
  const big = tensor(new Float32Array(n).fill(0.5), { device: "wasm" }).mul(4);
  equal(await big.sum().item(), 2 * n);
  equal((await small.data()).join(), "1,2,3");
  big.dispose();
});
