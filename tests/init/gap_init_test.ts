/** Gap-Init: B's first column is the unit gap (given, or from paired representations), A = 0, the r > 1 columns. */
import { deepEqual, equal, notDeepEqual, ok, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { gapInit } from "../../lib/init/gap_init.ts";
import { INIT_METHODS } from "../../lib/init/mod.ts";
import { assertClose, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;
const [D_OUT, D_IN] = [12, 7];

function t(data: ArrayLike<number>, shape: number[]): F {
  return tensor(Float32Array.from(data), { shape }) as unknown as F;
}

function unit(v: ArrayLike<number>): number[] {
  const n = Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));
  return Array.from(v, (x) => x / n);
}

/** Column j of a row-major `rows × cols` array. */
function col(data: ArrayLike<number>, rows: number, cols: number, j: number): number[] {
  return Array.from({ length: rows }, (_, i) => data[i * cols + j]);
}

Deno.test("gap-init: B[:, 0] = g/‖g‖, other columns zero, A = 0", async () => {
  const rng = new TestRng(1001);
  const w = t(rng.normals(D_OUT * D_IN), [D_OUT, D_IN]);
  const g = rng.normals(D_OUT, 3);
  const res = await gapInit(w, { rank: 3, alpha: 3, gap: t(g, [D_OUT]) });
  const b = (await res.b.data()) as Float32Array;
  assertClose(col(b, D_OUT, 3, 0), unit(g), { rtol: 1e-5, atol: 1e-6, what: "B[:, 0]" });
  ok(col(b, D_OUT, 3, 1).concat(col(b, D_OUT, 3, 2)).every((v) => v === 0), "other columns are zeros");
  ok(((await res.a.data()) as Float32Array).every((v) => v === 0), "A = 0");
  assertClose([res.info!.gapNorm as number], [Math.sqrt(g.reduce((s, x) => s + x * x, 0))], { rtol: 1e-5 });
  equal(res.base, undefined);
  equal(INIT_METHODS["gap-init"].kind, "zero");
});

Deno.test("gap-init: the gap from paired representations, with and without per-pair normalisation", async () => {
  const rng = new TestRng(1002);
  const n = 9;
  const w = t(rng.normals(D_OUT * D_IN), [D_OUT, D_IN]);
  const zt = rng.normals(n * D_OUT), zv = rng.normals(n * D_OUT);
  const diffs = Array.from(
    { length: n },
    (_, i) => Array.from({ length: D_OUT }, (_, j) => zt[i * D_OUT + j] - zv[i * D_OUT + j]),
  );
  const mean = (rows: number[][]) =>
    Array.from({ length: D_OUT }, (_, j) => rows.reduce((s, r) => s + r[j], 0) / n);
  const opts = { rank: 1, zText: t(zt, [n, D_OUT]), zVision: t(zv, [n, D_OUT]) };
  const plain = await gapInit(w, opts);
  assertClose(await plain.b.data(), unit(mean(diffs)), { rtol: 1e-5, atol: 1e-6, what: "mean(z_t − z_v)" });
  const norm = await gapInit(w, { ...opts, normalize: true });
  assertClose(await norm.b.data(), unit(mean(diffs.map(unit))), {
    rtol: 1e-5,
    atol: 1e-6,
    what: "mean of unit gaps",
  });
});

Deno.test("gap-init: orthonormal complement is orthonormal, orthogonal to g and seeded", async () => {
  const rng = new TestRng(1003);
  const r = 4;
  const w = t(rng.normals(D_OUT * D_IN), [D_OUT, D_IN]);
  const g = rng.normals(D_OUT);
  const opts = { rank: r, gap: t(g, [D_OUT]), complement: "orthonormal" as const, seed: 5 };
  const b = (await (await gapInit(w, opts)).b.data()) as Float32Array;
  assertClose(col(b, D_OUT, r, 0), unit(g), { rtol: 1e-5, atol: 1e-6, what: "B[:, 0]" });
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < r; j++) {
      const dot = col(b, D_OUT, r, i).reduce((s, v, k) => s + v * col(b, D_OUT, r, j)[k], 0);
      assertClose([dot], [i === j ? 1 : 0], { atol: 1e-5, what: `BᵀB[${i},${j}]` });
    }
  }
  deepEqual(await (await gapInit(w, opts)).b.data(), b, "same seed, same B");
  notDeepEqual(
    await (await gapInit(w, { ...opts, seed: 6 })).b.data(),
    b,
    "another seed, another complement",
  );
});

Deno.test("gap-init noise: the direction is ĝ + σ·n̂ renormalised, at angle ≈ atan σ from ĝ", async () => {
  const rng = new TestRng(1004);
  // A wide layer: n̂ is then nearly orthogonal to ĝ (|cos| ~ 1/√d), so cos(b, ĝ) ≈ 1/√(1 + σ²).
  const [dOut, dIn] = [4096, 3];
  const w = t(rng.normals(dOut * dIn), [dOut, dIn]);
  const g = rng.normals(dOut, 2);
  const gHat = unit(g);
  const seed = rng.int(0, 1 << 20);
  for (const sigma of [0.25, 1, 4]) {
    const res = await gapInit(w, { rank: 1, gap: t(g, [dOut]), noise: sigma, seed });
    const b = Array.from((await res.b.data()) as Float32Array);
    const norm = Math.sqrt(b.reduce((s, x) => s + x * x, 0));
    assertClose([norm], [1], { rtol: 1e-5, what: "‖B[:, 0]‖" });
    const cos = b.reduce((s, x, i) => s + x * gHat[i], 0);
    assertClose([res.info!.gapCosine as number], [cos], { rtol: 1e-4, what: "info.gapCosine" });
    // b = (ĝ + σ n̂)/‖ĝ + σ n̂‖ ⇒ t·b − ĝ = σ n̂ for t = ‖ĝ + σ n̂‖, the root of t² − 2t·cos + 1 − σ² = 0:
    // the perturbation that remains has norm exactly σ.
    const t0 = cos + Math.sqrt(cos * cos - 1 + sigma * sigma);
    const residual = Math.sqrt(b.reduce((s, x, i) => s + (t0 * x - gHat[i]) ** 2, 0));
    assertClose([residual], [sigma], { rtol: 1e-3, what: `‖t·b − ĝ‖ at σ = ${sigma}` });
    // And n̂ is isotropic: nearly orthogonal to ĝ, so the angle is close to atan σ (|cos n̂·ĝ| < 5/√d).
    const want = 1 / Math.sqrt(1 + sigma * sigma);
    ok(Math.abs(cos - want) < (5 / Math.sqrt(dOut)) * sigma, `cos ${cos} vs 1/√(1 + σ²) = ${want}`);
  }
  // σ = 0 is Gap-Init itself; the noise is seeded.
  const plain = await gapInit(w, { rank: 1, gap: t(g, [dOut]), noise: 0, seed });
  assertClose((await plain.b.data()) as Float32Array, gHat, { rtol: 1e-5, atol: 1e-7, what: "σ = 0" });
  const a = await gapInit(w, { rank: 1, gap: t(g, [dOut]), noise: 1, seed });
  const again = await gapInit(w, { rank: 1, gap: t(g, [dOut]), noise: 1, seed });
  const other = await gapInit(w, { rank: 1, gap: t(g, [dOut]), noise: 1, seed: seed + 1 });
  deepEqual(await again.b.data(), await a.b.data());
  notDeepEqual(await other.b.data(), await a.b.data());
  await rejects(
    gapInit(w, { rank: 1, gap: t(g, [dOut]), noise: -1 }),
    /gap-init: option "noise" must be >= 0, got -1/,
  );
});

Deno.test("gap-init: errors name the problem", async () => {
  const rng = new TestRng(1004);
  const w = t(rng.normals(D_OUT * D_IN), [D_OUT, D_IN]);
  await rejects(gapInit(w, { rank: 1 }), /needs gap/);
  await rejects(gapInit(w, { rank: 1, gap: t(rng.normals(D_IN), [D_IN]) }), /expected \[12\]/);
  await rejects(gapInit(w, { rank: 1, gap: t(new Float32Array(D_OUT), [D_OUT]) }), /norm 0/);
  await rejects(
    gapInit(w, {
      rank: 1,
      zText: t(rng.normals(3 * D_OUT), [3, D_OUT]),
      zVision: t(rng.normals(2 * D_OUT), [2, D_OUT]),
    }),
    /paired/,
  );
  await rejects(gapInit(w, { rank: D_OUT + 1, gap: t(rng.normals(D_OUT), [D_OUT]) }), /rank 13/);
});
