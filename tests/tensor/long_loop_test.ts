/**
 * llvmpipe stops every shader loop after 65,535 iterations without an error. These reductions are longer than
 * that, and their inputs are small integers so the f32 results are exact (every partial sum stays below 2^24):
 * a capped loop would be off by thousands, not by rounding. The wasm device has no cap (it splits long reductions
 * only to spread them over threads); the same cases check it.
 */
import { equal } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";
import { realizeNodes } from "../../lib/runtime/realize.ts";
import { getBackend } from "../../mod.ts";

const K = 70_001;

for (const device of ["webgpu", "wasm"] as const) {
  Deno.test(`sum over 70,001 elements (loop longer than 65,535) on ${device}`, async () => {
    const rng = new TestRng(1);
    const x = Float32Array.from({ length: 2 * K }, () => rng.int(0, 3));
    let want0 = 0, want1 = 0;
    for (let i = 0; i < K; i++) {
      want0 += x[i];
      want1 += x[K + i];
    }
    const got = await tensor(x, { shape: [2, K], device }).sum(1).data();
    equal(got[0], want0, `row 0 (TEST_SEED=${TEST_SEED})`);
    equal(got[1], want1, `row 1 (TEST_SEED=${TEST_SEED})`);
  });

  Deno.test(`matmul with K = 70,001, tiled template and naive kernel on ${device}`, async () => {
    const rng = new TestRng(2);
    const [m, n] = [3, 5];
    const a = Float32Array.from({ length: m * K }, () => rng.int(0, 2));
    const b = Float32Array.from({ length: K * n }, () => rng.int(0, 1));
    const want = new Float64Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[i * K + k] * b[k * n + j];
        want[i * n + j] = s;
      }
    }
    const c = tensor(a, { shape: [m, K], device }).matmul(tensor(b, { shape: [K, n], device }));
    const be = await getBackend(device);
    for (const noMatmulTemplate of [false, true]) {
      const [s] = await realizeNodes([c.node], { noMatmulTemplate });
      const got = await be.read(s, "f32", m * n);
      s.release();
      for (let i = 0; i < m * n; i++) {
        equal(got[i], want[i], `element ${i}, template ${!noMatmulTemplate} (TEST_SEED=${TEST_SEED})`);
      }
    }
  });

  Deno.test(`two fused 40,000-long reductions stay within llvmpipe's per-invocation budget on ${device}`, async () => {
    // llvmpipe's cap counts every loop of an invocation together, so the scheduler must not fuse these two.
    const rng = new TestRng(3);
    const n = 40_000;
    const x = Float32Array.from({ length: n }, () => rng.int(0, 3));
    const y = Float32Array.from({ length: n }, () => rng.int(0, 3));
    const want = x.reduce((a, v) => a + v, 0) + 2 * y.reduce((a, v) => a + v, 0);
    const got = await tensor(x, { device }).sum().add(tensor(y, { device }).mul(2).sum()).item();
    equal(got, want, `TEST_SEED=${TEST_SEED}`);
  });
}
