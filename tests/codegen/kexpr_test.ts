/** Index simplification and the kernel verifier. */
import { equal, throws } from "node:assert/strict";
import { KBuilder, type Kernel, type KExpr, unhandledAluOp } from "../../lib/codegen/kexpr.ts";
import { verifyKernel } from "../../lib/codegen/verify.ts";
import { TestRng } from "../_helpers.ts";

/** Evaluates an i32 index expression on the host for given variable values. */
function evalIndex(e: KExpr, vars: Record<string, number>): number {
  switch (e.k) {
    case "const":
      return e.value;
    case "var":
      return vars[e.name];
    case "alu": {
      const [a, b] = e.args.map((x) => evalIndex(x, vars));
      if (e.op === "add") return a + b;
      if (e.op === "mul") return a * b;
      if (e.op === "div") return Math.trunc(a / b);
      if (e.op === "mod") return a % b;
      if (e.op === "lt") return a < b ? 1 : 0;
      if (e.op === "and") return a && b ? 1 : 0;
      throw new Error(`unexpected op ${e.op}`);
    }
  }
  throw new Error(`unexpected node ${e.k}`);
}

Deno.test("unflatten then flatten of an index simplifies back to the index", () => {
  const rng = new TestRng(30);
  for (let trial = 0; trial < 20; trial++) {
    const kb = new KBuilder();
    const shape = Array.from({ length: rng.int(1, 4) }, () => rng.int(1, 7));
    const total = shape.reduce((a, b) => a * b, 1);
    const g = kb.var("gid", 0, total - 1);
    const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    const idx = shape.map((d, i) => (d === 1 ? kb.const(0, "i32") : kb.mod(kb.div(g, strides[i]), d)));
    let flat: KExpr = kb.const(0, "i32");
    idx.forEach((e, i) => (flat = kb.add(flat, kb.mul(e, strides[i]))));
    // A one-element shape indexes nothing but element 0.
    equal(flat, total === 1 ? kb.const(0, "i32") : g, `shape [${shape}] should flatten back to gid`);
  }
});

Deno.test("simplified index expressions keep their values", () => {
  const rng = new TestRng(31);
  for (let trial = 0; trial < 200; trial++) {
    const kb = new KBuilder();
    const n = rng.int(1, 50);
    const x = kb.var("x", 0, n - 1);
    const y = kb.var("y", 0, 9);
    const [a, b, d] = [rng.int(0, 12), rng.int(0, 12), rng.int(1, 16)];
    const e = kb.add(kb.mul(x, a), kb.add(kb.mul(y, b), rng.int(0, 20)));
    const q = kb.div(e, d);
    const r = kb.mod(e, d);
    for (let xv = 0; xv < n; xv += Math.max(1, n >> 3)) {
      for (let yv = 0; yv < 10; yv += 3) {
        const v = evalIndex(e, { x: xv, y: yv });
        equal(evalIndex(q, { x: xv, y: yv }), Math.floor(v / d));
        equal(evalIndex(r, { x: xv, y: yv }), v % d);
      }
    }
  }
});

Deno.test("a row index times a row length plus a column, over a whole block of rows, divides by the block", () => {
  // (128·m + k) / 8192 = m / 64 and (128·m + k) % 8192 = 128·(m % 64) + k for 0 <= k < 128: the index a matmul
  // operand has after a reshape of [4, 64, 128] to [256, 128]; it must come back affine for vec4 reads.
  const kb = new KBuilder();
  const m = kb.var("m", 0, 255);
  const k = kb.var("k", 0, 127);
  const e = kb.add(kb.mul(m, 128), k);
  equal(kb.div(e, 8192), kb.div(m, 64));
  const r = kb.mod(e, 8192);
  for (const [mv, kv] of [[0, 0], [63, 127], [64, 5], [255, 127], [130, 64]]) {
    equal(evalIndex(r, { m: mv, k: kv }), (128 * mv + kv) % 8192);
  }
  // Reshaped back, the flat index is the affine 128·m + k again.
  const flat = kb.add(
    kb.add(kb.mul(kb.div(e, 8192), 8192), kb.mul(kb.mod(kb.div(e, 128), 64), 128)),
    kb.mod(e, 128),
  );
  equal(flat, e);
});

Deno.test("a quotient of a sum with a term the divisor divides takes that term out, and a head split comes back affine", () => {
  // The operand of a LoRA weight gradient read through a permute of heads: column m = 8·h + d of row k at
  // 64·k + 8·((m + 64·k) / 8 % 8) + m % 8, which is 64·k + m; read through the generic packing path otherwise.
  const kb = new KBuilder();
  const m = kb.var("m", 0, 63);
  const k = kb.var("k", 0, 511);
  const flat = kb.add(m, kb.mul(k, 64));
  equal(kb.div(flat, 8), kb.add(kb.mul(k, 8), kb.div(m, 8)));
  const heads = kb.add(kb.add(kb.mul(k, 64), kb.mul(kb.mod(kb.div(flat, 8), 8), 8)), kb.mod(m, 8));
  equal(heads, flat);
  // Values over random sums: one term's coefficient a multiple of d, the other's range wider than d.
  const rng = new TestRng(33);
  for (let trial = 0; trial < 300; trial++) {
    const b = new KBuilder();
    const d = rng.int(2, 17);
    const [xs, ys] = [rng.int(1, 30), rng.int(d, 4 * d)];
    const x = b.var("x", 0, xs - 1);
    const y = b.var("y", 0, ys - 1);
    const [a, c, cy] = [d * rng.int(1, 9), rng.int(0, 3 * d), rng.int(1, 5)];
    const e = b.add(b.add(b.mul(x, a), b.mul(y, cy)), c);
    const q = b.div(e, d);
    const r = b.mod(e, d);
    for (let xv = 0; xv < xs; xv++) {
      for (let yv = 0; yv < ys; yv += Math.max(1, ys >> 2)) {
        const v = a * xv + cy * yv + c;
        const at = `(${a}x + ${cy}y + ${c}) / ${d} at x=${xv}, y=${yv}`;
        equal(evalIndex(q, { x: xv, y: yv }), Math.floor(v / d), at);
        equal(evalIndex(r, { x: xv, y: yv }), v % d, at);
      }
    }
  }
});

Deno.test("a quotient compared with a constant compares its dividend, and a concatenation's row test has no division", () => {
  // The pack of an optimizer's three [n] results as [3, n]: row r of element gid is taken where gid / n == r, tested
  // as 0 <= gid / n - r < 1; that is n·r <= gid < n·(r + 1).
  const kb = new KBuilder();
  const n = 1376;
  const gid = kb.var("gid", 0, 3 * n - 1);
  const row = kb.div(gid, n);
  equal(kb.lt(row, 1), kb.lt(gid, n));
  const r = kb.add(row, -1);
  const middle = kb.and(kb.lt(kb.const(-1, "i32"), r), kb.lt(r, 1));
  equal(middle, kb.and(kb.lt(kb.const(n - 1, "i32"), gid), kb.lt(gid, 2 * n)));
  // Values over random quotients, constants and comparands, both sides.
  const rng = new TestRng(34);
  for (let trial = 0; trial < 300; trial++) {
    const b = new KBuilder();
    const [xs, d, c] = [rng.int(2, 200), rng.int(2, 40), rng.int(-6, 6)];
    const x = b.var("x", 0, xs - 1);
    const q = b.add(b.div(x, d), c);
    const k = rng.int(c - 2, Math.floor((xs - 1) / d) + c + 2);
    const below = b.lt(q, k);
    const above = b.lt(b.const(k, "i32"), q);
    for (let xv = 0; xv < xs; xv++) {
      const v = Math.floor(xv / d) + c;
      const at = `x / ${d} + ${c} against ${k} at x=${xv}`;
      equal(evalIndex(below, { x: xv }), v < k ? 1 : 0, at);
      equal(evalIndex(above, { x: xv }), k < v ? 1 : 0, at);
    }
  }
});

Deno.test("factor splitting keeps values over random affine indices", () => {
  const rng = new TestRng(32);
  for (let trial = 0; trial < 300; trial++) {
    const kb = new KBuilder();
    const g = 2 ** rng.int(1, 6);
    const [xs, ys] = [rng.int(1, 40), rng.int(1, g)];
    const x = kb.var("x", 0, xs - 1);
    const y = kb.var("y", 0, ys - 1);
    const [a, c] = [g * rng.int(1, 9), rng.int(0, 3) * g];
    const d = g * rng.int(1, 8);
    const e = kb.add(kb.add(kb.mul(x, a), y), c);
    const q = kb.div(e, d);
    const r = kb.mod(e, d);
    for (let xv = 0; xv < xs; xv++) {
      for (const yv of [0, ys - 1]) {
        const v = a * xv + yv + c;
        equal(
          evalIndex(q, { x: xv, y: yv }),
          Math.floor(v / d),
          `(${a}x + y + ${c}) / ${d} at x=${xv}, y=${yv}`,
        );
        equal(evalIndex(r, { x: xv, y: yv }), v % d, `(${a}x + y + ${c}) % ${d} at x=${xv}, y=${yv}`);
      }
    }
  }
});

Deno.test("the verifier rejects malformed kernels", () => {
  const kb = new KBuilder();
  const g = kb.var("gid", 0, 9);
  const base = {
    name: "k",
    inputs: [{ dtype: "f32" as const, size: 10 }],
    outShape: [10],
    outDtype: "f32" as const,
    matmul: null,
  };
  const ok: Kernel = { ...base, body: kb.load(0, g, "f32") };
  verifyKernel(ok);
  throws(() => verifyKernel({ ...base, body: kb.load(1, g, "f32") }), /kernel k: load from missing input 1/);
  throws(() => verifyKernel({ ...base, body: kb.load(0, g, "i32") }), /load of input 0 with dtype i32/);
  throws(() => verifyKernel({ ...ok, outDtype: "i32" }), /body dtype f32 but output dtype i32/);
  const loop = kb.var("r0", 0, 69_999);
  const long = kb.reduce("sum", loop, 70_000, kb.load(0, kb.mod(loop, 10), "f32"));
  throws(
    () => verifyKernel({ ...base, body: long }),
    /runs 70000 loop iterations per invocation \(budget 60000\)/,
  );
});

Deno.test("the ALU renderers are exhaustive: an op one of them does not handle is a type error", () => {
  // Every renderer ends its switch over AluOp with unhandledAluOp(op), which takes `never`: a switch that misses an
  // op hands it a real op and does not compile (deno check runs over this file too).
  // @ts-expect-error: "neg" is an ALU op, so passing it is what a non-exhaustive switch would do
  throws(() => unhandledAluOp("neg", "render_test"), /render_test: no rule for ALU op neg/);
});
