/** The hand-optimised vec4 matmul kernel (the benchmarks' reference point) against float64 host products. */
import { throws } from "node:assert/strict";
import { runKernels, tensor } from "../../mod.ts";
import {
  matmulVec4Grid,
  matmulVec4Host,
  matmulVec4Unfit,
  matmulVec4Wgsl,
} from "../../kernels/matmul_vec4.wgsl.ts";
import { assertClose, TestRng } from "../_helpers.ts";

for (const [m, k, n] of [[16, 12, 24], [72, 36, 136]]) {
  Deno.test(`matmulVec4 ${m}x${k} · ${k}x${n} equals the float64 product`, async () => {
    const rng = new TestRng(m * 31 + n);
    const a = Float32Array.from({ length: m * k }, () => 2 * rng.next() - 1);
    const b = Float32Array.from({ length: k * n }, () => 2 * rng.next() - 1);
    const [c] = await runKernels(
      [tensor(a, { shape: [m, k] }), tensor(b, { shape: [k, n] })],
      [{ shape: [m, n], dtype: "f32" }],
      [{
        name: "matmul_vec4",
        wgsl: matmulVec4Wgsl(m, k, n),
        dispatch: matmulVec4Grid(m, n),
        bindings: [2, 0, 1],
        host: matmulVec4Host(m, k, n),
      }],
    );
    const want = new Float64Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        for (let p = 0; p < k; p++) want[i * n + j] += a[i * k + p] * b[p * n + j];
      }
    }
    // k terms of size <= 1: f32 rounding stays under k·2^-24·k ≈ 1e-4 for k <= 36.
    assertClose(await c.data(), want, { rtol: 1e-5, atol: 1e-4, what: "matmulVec4" });
  });
}

Deno.test("matmulVec4 names the shape it cannot take", () => {
  throws(() => matmulVec4Wgsl(12, 8, 8), /M and N multiples of 8 and K a multiple of 4, got M=12, K=8, N=8/);
  throws(() => matmulVec4Wgsl(8, 6, 8), /got M=8, K=6, N=8/);
  if (matmulVec4Unfit(8, 4, 16) !== null) throw new Error("8x4·4x16 fits");
});
