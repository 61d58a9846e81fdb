import assert from "node:assert/strict";
import { Rng } from "../../lib/data/mod.ts";

Deno.test("Rng.uint32 matches an independent Python implementation of the seeding and xoshiro128**", () => {
  // Reference values computed by a separate arbitrary-precision Python implementation of the same
  // SplitMix32 seeding and the xoshiro128** step (Blackman & Vigna), not by this module.
  const reference: [number, number[]][] = [
    [0, [2604577940, 422359021, 484367425, 3820469085, 1949166705]],
    [1, [1240739514, 880256480, 1015007208, 449859854, 2948722302]],
    [42, [3977237674, 7132461, 2896937945, 3556584016, 3729403650]],
    [12345678901, [1578742529, 1190882864, 542604696, 4008802605, 1449302260]],
    [-5, [2359385991, 3930754020, 858460131, 2484393611, 2900279898]],
  ];
  for (const [seed, expected] of reference) {
    const rng = new Rng(seed);
    assert.deepEqual(expected.map(() => rng.uint32()), expected, `seed ${seed}`);
  }
});

Deno.test("Rng is deterministic under the seed and different seeds differ", () => {
  const draw = (seed: number) => {
    const rng = new Rng(seed);
    return [rng.next(), rng.int(1000), rng.normal(), rng.normal(), rng.next()];
  };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
  assert.throws(() => new Rng(1.5), /safe integer/);
  assert.throws(() => new Rng(NaN), /safe integer/);
});

Deno.test("Rng.next is uniform on [0, 1): range, mean 1/2, variance 1/12", () => {
  const rng = new Rng(123);
  const n = 200_000;
  let sum = 0;
  let sumSq = 0;
  for (let i = 0; i < n; i++) {
    const u = rng.next();
    assert.ok(u >= 0 && u < 1);
    sum += u;
    sumSq += u * u;
  }
  const mean = sum / n;
  const variance = sumSq / n - mean * mean;
  // Standard error of the mean is sqrt(1/12 / n) ≈ 6.5e-4; allow 5 sigma.
  assert.ok(Math.abs(mean - 0.5) < 5 * Math.sqrt(1 / 12 / n), `mean ${mean}`);
  assert.ok(Math.abs(variance - 1 / 12) < 2e-3, `variance ${variance}`);
});

Deno.test("Rng.int(n) covers 0..n-1 evenly (chi-square) and rejects bad n", () => {
  const rng = new Rng(99);
  const k = 7;
  const n = 70_000;
  const counts = new Array(k).fill(0);
  for (let i = 0; i < n; i++) {
    const v = rng.int(k);
    assert.ok(Number.isInteger(v) && v >= 0 && v < k);
    counts[v]++;
  }
  const expected = n / k;
  const chi2 = counts.reduce((acc, c) => acc + (c - expected) ** 2 / expected, 0);
  // 6 degrees of freedom: P(chi2 > 22.46) = 0.001.
  assert.ok(chi2 < 22.46, `chi2 ${chi2} counts ${counts}`);
  assert.equal(rng.int(1), 0);
  assert.throws(() => rng.int(0), /1\.\.2\^32/);
  assert.throws(() => rng.int(2.5), /1\.\.2\^32/);
});

Deno.test("Rng.normal has mean 0, variance 1 and the right tail mass", () => {
  const rng = new Rng(2024);
  const n = 100_000;
  let sum = 0;
  let sumSq = 0;
  let beyond2 = 0;
  for (let i = 0; i < n; i++) {
    const z = rng.normal();
    sum += z;
    sumSq += z * z;
    if (Math.abs(z) > 2) beyond2++;
  }
  const mean = sum / n;
  const variance = sumSq / n - mean * mean;
  assert.ok(Math.abs(mean) < 5 / Math.sqrt(n), `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.03, `variance ${variance}`);
  // P(|Z| > 2) = 0.0455; binomial standard error ≈ 6.6e-4.
  assert.ok(Math.abs(beyond2 / n - 0.0455) < 0.004, `tail ${beyond2 / n}`);
});

Deno.test("Rng.shuffle returns a permutation in place, for arrays and typed arrays, uniformly", () => {
  const rng = new Rng(5);
  const arr = Array.from({ length: 50 }, (_, i) => i * 3 + 1);
  const out = rng.shuffle(arr);
  assert.equal(out, arr);
  assert.deepEqual([...arr].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i * 3 + 1));
  const typed = rng.shuffle(Int32Array.from({ length: 50 }, (_, i) => i));
  assert.deepEqual(Array.from(typed).sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i));
  assert.notDeepEqual(Array.from(typed), Array.from({ length: 50 }, (_, i) => i));

  // All 6 permutations of 3 elements should be equally likely.
  const counts = new Map<string, number>();
  const trials = 60_000;
  for (let t = 0; t < trials; t++) {
    const key = rng.shuffle(["a", "b", "c"]).join("");
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  assert.equal(counts.size, 6);
  const expected = trials / 6;
  const chi2 = [...counts.values()].reduce((acc, c) => acc + (c - expected) ** 2 / expected, 0);
  assert.ok(chi2 < 20.52, `chi2 ${chi2}`); // 5 dof, p = 0.001
});
