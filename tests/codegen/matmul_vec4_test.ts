/**
 * The matmul template's vec4 operand reads: for every layout it vectorises (A along k or m, B along k or n,
 * batched, offset views) and every case it must not (unaligned offsets, a buffer also read by the epilogue or
 * read both ways, row counts not a multiple of 4), the rendered shader declares exactly the expected bindings as
 * `array<vec4<f32>>`, and the product on the device equals the float64 reference on fresh random inputs
 * (tolerance as the parity suite: matmuls of up to a few hundred terms of size ~1 round to well under 2e-4).
 */
import { deepEqual } from "node:assert/strict";
import { type Tensor, tensor } from "../../mod.ts";
import { schedule } from "../../lib/codegen/schedule.ts";
import { lower } from "../../lib/codegen/lower.ts";
import { renderWGSL } from "../../lib/codegen/render_wgsl.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";

type Mk = (shape: number[]) => Tensor;

function maker(rng: TestRng): Mk {
  return (shape) =>
    tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => 4 * rng.next() - 2), {
      shape,
    });
}

/** Bindings declared vec4 in the matmul kernel of `out` (its last kernel), as `in<i>` names. */
function vec4Bindings(out: Tensor): string[] {
  const order = schedule([out.node], { maxInputs: 8 });
  const mat = new Set(order);
  const root = order[order.length - 1];
  const { kernel } = lower(root, (m) => mat.has(m));
  if (kernel.matmul === null) throw new Error(`${kernel.name} does not use the matmul template`);
  const src = renderWGSL(kernel).source;
  return [...src.matchAll(/var<storage, read> (in\d+): array<vec4<f32>>/g)].map((m) => m[1]);
}

const cases: { name: string; build: (mk: Mk) => Tensor; vec4: string[] }[] = [
  { name: "A along k, B along n", build: (mk) => mk([40, 64]).matmul(mk([64, 48])), vec4: ["in0", "in1"] },
  { name: "x·Wᵀ: B along k", build: (mk) => mk([70, 36]).matmul(mk([24, 36]).T), vec4: ["in0", "in1"] },
  { name: "xᵀ·y: A along m", build: (mk) => mk([96, 32]).T.matmul(mk([96, 16])), vec4: ["in0", "in1"] },
  {
    name: "batched, bias and relu epilogue",
    build: (mk) => mk([3, 16, 32]).matmul(mk([3, 32, 24])).add(mk([24])).relu(),
    vec4: ["in0", "in1"],
  },
  {
    name: "offset views aligned to 4",
    build: (mk) => mk([40, 48]).slice([8, 40]).matmul(mk([48, 40]).slice(null, [8, 40])),
    vec4: ["in0", "in1"],
  },
  {
    name: "A offset by one element: scalar A",
    build: (mk) =>
      mk([65, 64]).reshape([65 * 64]).slice([1, 64 * 64 + 1]).reshape([64, 64]).matmul(mk([64, 16])),
    vec4: ["in1"],
  },
  {
    name: "K not a multiple of 4: B along n only",
    build: (mk) => mk([64, 30]).matmul(mk([30, 32])),
    vec4: ["in1"],
  },
  {
    name: "A also read by the epilogue: scalar A",
    build: (mk) => {
      const x = mk([32, 32]);
      return x.matmul(mk([32, 32])).add(x);
    },
    vec4: ["in1"],
  },
  {
    name: "x·xᵀ (one buffer, both along k)",
    build: (mk) => {
      const x = mk([40, 40]);
      return x.matmul(x.T);
    },
    vec4: ["in0"],
  },
  { name: "xᵀ·y with 30 rows: scalar A", build: (mk) => mk([64, 30]).T.matmul(mk([64, 32])), vec4: ["in1"] },
];

for (const c of cases) {
  Deno.test(`matmul vec4 reads: ${c.name}`, async () => {
    const rng = new TestRng(c.name.length * 7919);
    const out = c.build(maker(rng));
    deepEqual(vec4Bindings(out).sort(), c.vec4);
    const want = await reference(out); // before out.data() stores it
    assertClose(await out.data(), want, { rtol: 1e-5, atol: 2e-4, what: c.name });
  });
}
