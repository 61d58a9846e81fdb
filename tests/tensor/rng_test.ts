/** The counter-based generator gives bit-identical uniforms on every backend, and sensible distributions. */
import { equal, ok } from "node:assert/strict";
import { rand, randn } from "../../mod.ts";
import { randUniform } from "../../lib/ir/rng.ts";
import { assertClose, TEST_SEED, TestRng } from "../_helpers.ts";

Deno.test("rand: same bits on webgpu, wasm, cpu and the host formula", async () => {
  const seed = new TestRng(3).int(0, 2 ** 31);
  const shape = [37, 29];
  const g = await rand(shape, { seed, device: "webgpu" }).data();
  const w = await rand(shape, { seed, device: "wasm" }).data();
  const c = await rand(shape, { seed, device: "cpu" }).data();
  for (let i = 0; i < g.length; i++) {
    const want = randUniform(seed, i);
    if (g[i] !== want || w[i] !== want || c[i] !== want) {
      throw new Error(
        `element ${i}: webgpu ${g[i]}, wasm ${w[i]}, cpu ${
          c[i]
        }, host ${want} (seed ${seed}, TEST_SEED=${TEST_SEED})`,
      );
    }
  }
});

Deno.test("randn: Box-Muller of the same uniforms on every device, against float64, small radii included", async () => {
  const seed = new TestRng(5).int(0, 2 ** 31);
  // 2^18 pairs: the smallest 1 - u1 is near 2^-18, where r = sqrt(-2 log u1) is about 3e-3 and an absolute error
  // of one ulp of 1 in log (a GPU builtin's) moves z by about 2e-5.
  const n = 1 << 18;
  const u = await rand([n, 2], { seed, device: "cpu" }).data();
  const want = new Float64Array(n), slack = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    // The devices form 1 - u1 and 2π·u2 in f32 (the first exactly), then log, sqrt, cos and the product.
    const r = Math.sqrt(-2 * Math.log(Math.fround(1 - u[2 * i])));
    want[i] = r * Math.cos(Math.fround(u[2 * i + 1] * Math.fround(2 * Math.PI)));
    // WGSL allows cos an absolute error of 2^-11 on [-π, π]; the radius and the product a few ulp (rtol below).
    slack[i] = r * 2 ** -11;
  }
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const got = await randn([n], { seed, device }).data();
    const cosBound = device === "webgpu";
    for (let i = 0; i < n; i++) {
      const atol = 1e-6 + (cosBound ? slack[i] : 0);
      assertClose([got[i]], [want[i]], {
        rtol: 1e-6,
        atol,
        what: `${device} randn element ${i} (seed ${seed})`,
      });
    }
  }
});

Deno.test("rand/randn: moments and determinism", async () => {
  const seed = new TestRng(4).int(0, 2 ** 31);
  const n = 1 << 16;
  const u = await rand([n], { seed }).data();
  const z = await randn([n], { seed: seed + 1 }).data();
  const mean = (a: ArrayLike<number>) => Array.from(a).reduce((s, v) => s + v, 0) / a.length;
  const variance = (a: ArrayLike<number>) => {
    const m = mean(a);
    return Array.from(a).reduce((s, v) => s + (v - m) ** 2, 0) / a.length;
  };
  // Standard errors at n = 65536: uniform mean 0.0011, normal mean 0.0039, normal variance 0.0055; 5 sigma bounds.
  ok(Math.abs(mean(u) - 0.5) < 0.006, `uniform mean ${mean(u)}`);
  ok(Math.abs(variance(u) - 1 / 12) < 0.002, `uniform variance ${variance(u)}`);
  ok(u.every((v) => v >= 0 && v < 1), "uniform range");
  ok(Math.abs(mean(z)) < 0.02, `normal mean ${mean(z)}`);
  ok(Math.abs(variance(z) - 1) < 0.03, `normal variance ${variance(z)}`);
  const again = await randn([n], { seed: seed + 1 }).data();
  equal(again.every((v, i) => v === z[i]), true, "randn is a pure function of the seed");
  const other = await randn([n], { seed: seed + 2 }).data();
  ok(other.some((v, i) => v !== z[i]), "different seeds give different numbers");
});
