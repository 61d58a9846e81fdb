/**
 * Scheduling decisions that keep the tiled matmul template: a matmul whose consumer permutes it gets its own
 * kernel (the template stores in the Dot's element order), while an elementwise epilogue stays fused, and a sum of
 * matmuls of one shape is one template kernel.
 */
import {
  deepEqual,
  deepEqual as assertDeepEquals,
  equal,
  equal as assertEquals,
  ok,
  ok as assert,
  throws,
} from "node:assert/strict";
import { rmsNorm } from "../../lib/nn/norm.ts";
import { crossEntropy } from "../../lib/nn/loss.ts";
import { causalAttention } from "../../lib/nn/attention.ts";
import { grad } from "../../lib/autodiff/grad.ts";
import { concat, type Shape, type Tensor, tensor } from "../../mod.ts";
import { schedule } from "../../lib/codegen/schedule.ts";
import { lower } from "../../lib/codegen/lower.ts";
import { Op } from "../../lib/ir/ops.ts";
import type { Node } from "../../lib/ir/node.ts";
import type { KExpr } from "../../lib/codegen/kexpr.ts";
import { TestRng } from "../_helpers.ts";

/** A tensor of `shape` with values drawn uniformly from [-0.5, 0.5). */
function uniform(rng: TestRng, shape: number[]): Tensor<Shape, "f32"> {
  const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.next() - 0.5);
  return tensor(data, { shape }) as Tensor<Shape, "f32">;
}

function operands(rng: TestRng) {
  const mk = (shape: number[]) => uniform(rng, shape);
  return { a: mk([2, 3, 40, 16]), b: mk([2, 3, 16, 24]) };
}

function lowered(order: Node[]) {
  const mat = new Set(order);
  return order.map((n) => lower(n, (m) => mat.has(m)).kernel);
}

Deno.test("schedule: a permuted matmul result is its own template kernel, then a copy", () => {
  const { a, b } = operands(new TestRng(11));
  const out = a.matmul(b).permute([0, 2, 1, 3]).reshape([2, 40, 72]).mul(2);
  const order = schedule([out.node], { maxInputs: 8 });
  assertEquals(order.length, 2);
  assertEquals(order[0].op, Op.Dot);
  const kernels = lowered(order);
  assert(kernels[0].matmul !== null, "the Dot's kernel uses the tiled template");
  assertEquals(kernels[1].matmul, null);
});

Deno.test("schedule: an elementwise epilogue stays fused into the matmul template", () => {
  const { a, b } = operands(new TestRng(12));
  const out = a.matmul(b).relu().mul(3);
  const order = schedule([out.node], { maxInputs: 8 });
  assertEquals(order.length, 1);
  assert(lowered(order)[0].matmul !== null);
});

Deno.test("schedule: a sum of matmuls of one shape is one template kernel with one term per product", () => {
  const rng = new TestRng(13);
  const mk = (shape: number[]) => uniform(rng, shape);
  // The input gradient of a LoRA layer: dy·W + dh·A, plus the residual's gradient.
  const dy = mk([64, 48]);
  const out = dy.matmul(mk([48, 40])).add(mk([64, 8]).matmul(mk([8, 40]))).add(mk([64, 40]));
  const order = schedule([out.node], { maxInputs: 8 });
  assertEquals(order.length, 1);
  const [k] = lowered(order);
  assertDeepEquals(k.matmul?.terms.map((t) => t.k), [48, 8]);
  // Products of different shapes are not summed by the template: each is its own kernel.
  const x = mk([16, 12]);
  const odd = x.matmul(mk([12, 16])).add(mk([16, 16]).T.matmul(x.matmul(mk([12, 16]))).reshape([16, 16]));
  const parts = schedule([odd.node], { maxInputs: 8 });
  assert(parts.length > 1, "a matmul whose operand is another matmul stays separate");
});

Deno.test("schedule: with row kernels a norm's statistics and a softmax's sums fuse into the kernel that broadcasts them", () => {
  const rng = new TestRng(14);
  const mk = (shape: number[]) => uniform(rng, shape);
  const x = mk([32, 48]);
  for (const [what, out] of [["rms norm", rmsNorm(x, mk([48]))], ["softmax", x.softmax()]] as const) {
    const separate = schedule([out.node], { maxInputs: 8 });
    ok(separate.length > 1, `${what}: without row kernels the statistics are kernels of their own`);
    const fused = schedule([out.node], { maxInputs: 8, rowKernels: true });
    assertEquals(fused.length, 1, `${what}: one kernel`);
    const [k] = lowered(fused);
    equal(k.row?.length, 48, `${what}: one invocation per row of 48`);
  }
  // A full reduction (one row) is never a row value; a column sum of a row value takes the statistics from a kernel.
  const col = x.mul(x.square().mean(-1, { keepdims: true }).rsqrt()).sum(0);
  const order = schedule([col.node], { maxInputs: 8, rowKernels: true });
  assertEquals(order.length, 2);
  equal(lowered(order)[1].row, undefined);
});

Deno.test("schedule: row values a kernel reads outside its rows are scheduled as without row kernels", () => {
  // Cross-entropy reads its log-sum-exp per row (the loss) and broadcasts it (the gradient): the loss kernel cannot
  // run in rows, so the row values it reads must not each become a kernel of their own.
  const rng = new TestRng(16);
  const logits = tensor(Float32Array.from({ length: 32 * 10 }, () => rng.next() * 8 - 4), {
    shape: [32, 10],
  });
  const targets = tensor(Int32Array.from({ length: 32 }, () => rng.int(0, 9)), { shape: [32], dtype: "i32" });
  const f = (p: { x: typeof logits }) => crossEntropy(p.x, targets);
  const roots = [f({ x: logits }).node, grad(f)({ x: logits }).x.node];
  const separate = schedule(roots, { maxInputs: 8 });
  const rows = schedule(roots, { maxInputs: 8, rowKernels: true });
  ok(rows.length <= separate.length, `${rows.length} kernels with row kernels, ${separate.length} without`);
});

Deno.test("a concatenation of flattened matrices loads each input at a clamped index, without division", async () => {
  const rng = new TestRng(15);
  const shapes = [[8, 64], [64, 8], [8, 172], [172, 8], [3, 5]];
  const data = shapes.map((s) => Float32Array.from({ length: s[0] * s[1] }, () => rng.next() - 0.5));
  const parts = shapes.map((s, i) => tensor(data[i], { shape: s }));
  const out = concat(parts.map((t) => t.reshape([t.size]))).mul(2);
  const order = schedule([out.node], { maxInputs: 8 });
  assertEquals(order.length, 1);
  const [k] = lowered(order);
  // Walk the kernel body: the reshapes' unflatten/flatten pairs must have simplified away.
  const ops = new Set<string>();
  const seen = new Set<number>();
  const walk = (e: KExpr) => {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    if (e.k === "alu") {
      ops.add(e.op);
      e.args.forEach(walk);
    } else if (e.k === "load") {
      ok(
        e.index.lo >= 0 && e.index.hi < k.inputs[e.buf].size,
        `load ${e.buf} index in [${e.index.lo}, ${e.index.hi}]`,
      );
      walk(e.index);
    }
  };
  walk(k.body!);
  ok(!ops.has("div") && !ops.has("mod"), `no division in the body (ops: ${[...ops].join(", ")})`);
  // And the values: each part doubled, side by side.
  const want = data.flatMap((d) => Array.from(d, (v) => 2 * v));
  deepEqual(Array.from(await out.data() as Float32Array), want);
});

Deno.test("schedule: a hand-written kernel that reads more buffers than the device binds is refused by name", () => {
  const rng = new TestRng(12);
  const [q, k, v] = [[1, 4, 2, 8], [1, 4, 1, 8], [1, 4, 1, 8]].map((shape) => uniform(rng, shape));
  const out = causalAttention(q, k, v);
  ok(schedule([out.node], { maxInputs: 3 }).length > 0, "three inputs fit three bindings");
  throws(
    () => schedule([out.node], { maxInputs: 2 }),
    /kernel "attention_forward[^"]*" reads 3 buffers; this device binds at most 2 per kernel .*fused: false/,
  );
});
