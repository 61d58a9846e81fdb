/**
 * The fused attention kernels against the same attention composed from primitives (whose float64 reference is
 * independent of the kernels): values and gradients, with grouped heads, a cached prefix (S > T), without the
 * causal mask and with RoPE applied inside the kernels, on both backends.
 */
import { equal, ok } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { causalAttention, ropeTables } from "../../lib/nn/mod.ts";
import { valueAndGrad } from "../../lib/autodiff/grad.ts";
import { schedule } from "../../lib/codegen/schedule.ts";
import { Op } from "../../lib/ir/ops.ts";
import { toposort } from "../../lib/ir/node.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

const cases = [
  { b: 2, t: 5, s: 5, h: 4, hkv: 2, d: 8, causal: true, rope: false },
  { b: 1, t: 3, s: 7, h: 6, hkv: 3, d: 12, causal: true, rope: false },
  { b: 2, t: 4, s: 6, h: 2, hkv: 2, d: 4, causal: false, rope: false },
  // RoPE inside the kernels (tables longer than needed: the kernels read the stored table's first rows).
  { b: 2, t: 6, s: 6, h: 4, hkv: 2, d: 12, causal: true, rope: true },
  { b: 1, t: 3, s: 5, h: 2, hkv: 1, d: 8, causal: false, rope: true },
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
