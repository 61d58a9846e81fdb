/**
 * The loop-budget pass rebuilds the graph below a long reduction. Custom-gradient markers (every `linear` is one)
 * are identities on values, so the rebuilt graph drops them; they used to be rebuilt through the hash-consing
 * constructor, whose key serialised the marker's argument (its primal inputs, and theirs...), which took time
 * exponential in the depth of the graph: a 2-layer Llama loss over a 49,152-token vocabulary never finished. The
 * lowering cache's region key spelt shared subexpressions out as a tree, also exponential in the depth of sharing
 * (this graph fuses 40 steps that each read their input twice).
 */
import { randn, type Shape, type Tensor, tensor } from "../../mod.ts";
import { customVjp } from "../../lib/autodiff/mod.ts";
import { splitLongLoops } from "../../lib/codegen/split_loops.ts";
import { Op } from "../../lib/ir/ops.ts";
import { toposort } from "../../lib/ir/node.ts";
import { deepEqual, equal, ok } from "node:assert/strict";
import { evaluateReference } from "../../lib/ir/reference.ts";
import { assertClose, reference, TEST_SEED, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

Deno.test("splitLongLoops and the region key stay linear in the depth of a shared graph", async () => {
  const step = customVjp((a: F) => a.mul(0.5).add(a.square().mul(0.01)) as F, (g) => [g as F]);
  const x = randn([4, 20000], { seed: TEST_SEED }) as F;
  let s = x.sum(1).mul(0.01) as F; // 20,000-long sums with 4 outputs: split into two passes
  for (let i = 0; i < 40; i++) s = step(s.add(s.mul(0.001)) as F); // each marker's input reaches the last twice
  const [root] = splitLongLoops([s.node]);
  const ops = toposort([root]).map((n) => n.op);
  ok(!ops.includes(Op.CustomVjp), "the rebuilt graph still has CustomVjp nodes");
  ok(ops.filter((o) => o === Op.Sum).length >= 2, "the 20,000-long sum was not split");
  const want = await reference(s); // before s.data() stores it
  assertClose(await s.data(), want, { rtol: 1e-4, atol: 1e-3 });
});

/** The first index of the maximum of each run of `len` values `stride` apart (a host argmax). */
function hostArgmax(v: ArrayLike<number>, outer: number, len: number, inner: number): number[] {
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = 0;
      for (let k = 1; k < len; k++) {
        if (v[(o * len + k) * inner + i] > v[(o * len + best) * inner + i]) best = k;
      }
      out.push(best);
    }
  }
  return out;
}

Deno.test("an argmax over more elements than the loop budget takes two passes and finds the first maximum", async () => {
  const rng = new TestRng(91);
  // Shapes with the long axis first, inside and last; lengths that leave a short last chunk (padded with the
  // lowest value, which must never win, so every value is negative) and ties between chunks.
  const cases: [number[], number][] = [[[2, 1000, 3], 1], [[777], 0], [[530, 2], 0], [[3, 1001], 1]];
  for (const [shape, axis] of cases) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = Float32Array.from({ length: n }, () => -1 - rng.next() * 100);
    const len = shape[axis];
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const outer = n / (len * inner);
    // Ties: the maximum of each output appears twice, far apart (the first one is the answer).
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const first = rng.int(0, Math.floor(len / 2));
        const second = rng.int(first + 1, len - 1);
        data[(o * len + first) * inner + i] = -0.5;
        data[(o * len + second) * inner + i] = -0.5;
      }
    }
    const want = hostArgmax(data, outer, len, inner);
    const x = tensor(data, { shape, device: "cpu" });
    const am = x.argmax(axis);
    // The rewrite itself, with a budget of 64, in the float64 reference; then on the devices at their own budget.
    const [split] = splitLongLoops([am.node], 64);
    ok(
      toposort([split]).filter((m) => m.op === Op.ArgMax).length === 2,
      `[${shape}] axis ${axis} was not split`,
    );
    const leaves = new Map([[x.node, Float64Array.from(data)]]);
    deepEqual(Array.from(evaluateReference(split, (m) => leaves.get(m)!)), want, `[${shape}] axis ${axis}`);
  }
  // End to end past the real budget (60,000), on the devices that have it.
  const long = Float32Array.from({ length: 70001 }, () => -1 - rng.next());
  long[65000] = 0;
  long[69999] = 0;
  for (const device of ["cpu", "webgpu"] as const) {
    equal(await tensor(long, { device }).argmax(0).item(), 65000, device);
  }
});
