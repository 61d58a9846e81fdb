/**
 * The loop-budget pass rebuilds the graph below a long reduction. Custom-gradient markers (every `linear` is one)
 * are identities on values, so the rebuilt graph drops them; they used to be rebuilt through the hash-consing
 * constructor, whose key serialised the marker's argument (its primal inputs, and theirs...), which took time
 * exponential in the depth of the graph: a 2-layer Llama loss over a 49,152-token vocabulary never finished. The
 * lowering cache's region key spelt shared subexpressions out as a tree, also exponential in the depth of sharing
 * (this graph fuses 40 steps that each read their input twice).
 */
import { randn, type Shape, type Tensor } from "../../mod.ts";
import { customVjp } from "../../lib/autodiff/mod.ts";
import { splitLongLoops } from "../../lib/codegen/split_loops.ts";
import { Op } from "../../lib/ir/ops.ts";
import { toposort } from "../../lib/ir/node.ts";
import { ok } from "node:assert/strict";
import { assertClose, reference, TEST_SEED } from "../_helpers.ts";

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
