/**
 * NaN and infinities survive the forms a shader compiler may simplify when it assumes finite floats (issue 16,
 * item 14): a product with a literal zero and a value minus itself. WebGPU must give what the float64 CPU backend
 * gives (IEEE: NaN · 0 = NaN, ∞ · 0 = NaN, ∞ − ∞ = NaN, and a signed zero otherwise), in plain elementwise kernels,
 * in f16, inside a fused reduction and in a matmul epilogue.
 */
import { equal } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

/** Random finite values with NaN, +∞ and −∞ at random places (each at least once). */
function withNonFinite(rng: TestRng, n: number): Float32Array {
  const x = rng.normals(n, 3);
  const specials = [NaN, Infinity, -Infinity];
  const places = new Set<number>();
  while (places.size < 6) places.add(rng.int(0, n - 1));
  [...places].forEach((p, i) => (x[p] = specials[i % 3]));
  return x;
}

/** NaN, or the value with the sign of a zero made visible (`-0`). */
function show(v: number): string {
  return Number.isNaN(v) ? "NaN" : Object.is(v, -0) ? "-0" : String(v);
}

const FORMS: [string, (x: F, device: "cpu" | "webgpu") => F][] = [
  ["x * 0", (x) => x.mul(0) as F],
  ["0 * x (the zero held in a buffer)", (x, device) => tensor(0, { device }).expand(x.shape).mul(x) as F],
  ["x - x", (x) => x.sub(x) as F],
  ["-x + x", (x) => x.neg().add(x) as F],
  ["f16: x * 0", (x) => x.cast("f16").mul(0).cast("f32") as F],
  ["(x * 0 + 1) summed by rows", (x) => x.reshape([8, -1]).mul(0).add(1).sum(1) as F],
  ["(x column · [1]) * 0", (x, device) => x.reshape([-1, 1]).matmul(tensor([[1]], { device })).mul(0) as F],
  // max and min: WGSL leaves a NaN operand to the implementation (lavapipe returned the other operand).
  ["relu(x)", (x) => x.relu() as F],
  ["maximum(x, reversed x) and minimum", (x) => {
    const r = x.slice([null, null, -1]) as F; // reversed
    return x.maximum(r).add(x.minimum(r).mul(2)) as F;
  }],
  ["max and min over rows of 8", (x) => x.reshape([8, -1]).max(1).add(x.reshape([8, -1]).min(1)) as F],
  ["f16: relu(x)", (x) => x.cast("f16").relu().cast("f32") as F],
];

for (const [name, form] of FORMS) {
  Deno.test(`NaN and ±Inf survive ${name} on WebGPU as on the CPU`, async () => {
    const x = withNonFinite(new TestRng(301 + name.length), 64);
    const got = [...await form(tensor(x, { device: "webgpu" }) as F, "webgpu").data()].map(show);
    const want = [...await form(tensor(x, { device: "cpu" }) as F, "cpu").data()].map(show);
    equal(got.join(" "), want.join(" "), `${name} (TEST_SEED=${TEST_SEED})`);
    equal(want.filter((v) => v === "NaN").length > 0, true);
  });
}
