/** eigh against float64 cyclic Jacobi and the defining identity S·V = V·diag(λ). */
import { equal, ok } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { eigh } from "../../lib/linalg/mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";
import {
  at,
  colsOf,
  fro,
  gaussian,
  jacobiEigh,
  largestPrincipalAngle,
  type M64,
  mat,
  matmul,
  orthError,
  randomOrthonormal,
  scaleCols,
  sub,
  transpose,
} from "./_ref64.ts";
import { argmaxAbsCol, assertBelow, readMat, readVec } from "./_util.ts";

function symmetric(rng: TestRng, n: number): M64 {
  const g = gaussian(rng, n, n);
  return mat(
    n,
    n,
    Float32Array.from(g.data.map((_, i) => (g.data[i] + g.data[(i % n) * n + Math.floor(i / n)]) / 2)),
  );
}

async function check(s: M64, what: string, device: "webgpu" | "cpu" = "webgpu") {
  const n = s.rows;
  const r = await eigh(tensor(Float32Array.from(s.data), { shape: [n, n], device }));
  equal(r.vectors.shape.join(), `${n},${n}`);
  const lam = await readVec(r.values);
  const v = await readMat(r.vectors);
  assertBelow(`${what}: ‖SV − VΛ‖/‖S‖`, fro(sub(matmul(s, v), scaleCols(v, lam))) / fro(s), 1e-4);
  assertBelow(`${what}: ‖VᵀV − I‖_F`, orthError(v), 1e-4);
  const ref = jacobiEigh(s);
  const scale = Math.max(Math.abs(ref.values[0]), Math.abs(ref.values[n - 1]));
  for (let i = 0; i < n; i++) {
    assertBelow(`${what}: |λ${i} − ref|/‖S‖₂`, Math.abs(lam[i] - ref.values[i]) / scale, 1e-5);
    if (i > 0) {
      ok(lam[i] >= lam[i - 1], `${what}: eigenvalues not ascending at ${i} (TEST_SEED=${TEST_SEED})`);
    }
    ok(at(v, argmaxAbsCol(v, i), i) > 0, `${what}: eigenvector ${i} has a negative largest entry`);
  }
  return { lam, v };
}

Deno.test("eigh: random symmetric matrices (indefinite), odd sizes", async () => {
  const rng = new TestRng(301);
  for (const n of [9, 53]) await check(symmetric(rng, n), `symmetric ${n}`);
});

Deno.test("eigh: eigenvalues ±λ of equal magnitude and a repeated eigenvalue", async () => {
  const rng = new TestRng(302);
  const lam = [-3, -3, -1, 1, 3, 3, 3, 5];
  const q = randomOrthonormal(rng, 8, 8);
  const s = matmul(scaleCols(q, lam), transpose(q));
  const sym = mat(
    8,
    8,
    Float32Array.from(s.data.map((_, i) => (s.data[i] + s.data[(i % 8) * 8 + Math.floor(i / 8)]) / 2)),
  );
  const { lam: got, v } = await check(sym, "±λ, repeated");
  for (let i = 0; i < 8; i++) assertBelow(`λ${i} = ${lam[i]}`, Math.abs(got[i] - lam[i]), 1e-5);
  for (const [c0, c1] of [[0, 2], [2, 3], [3, 4], [4, 7], [7, 8]]) {
    assertBelow(`eigenspace ${c0}..${c1}`, largestPrincipalAngle(colsOf(v, c0, c1), colsOf(q, c0, c1)), 1e-4);
  }
});

Deno.test("eigh reads the lower triangle only, orders on request, and runs on the cpu device", async () => {
  const rng = new TestRng(303);
  const s = symmetric(rng, 12);
  // The strict upper triangle is garbage: only the lower one may be read.
  const messy = mat(12, 12, s.data.map((v, i) => (i % 12 > Math.floor(i / 12) ? v + 7 : v)));
  const lower = await eigh(tensor(Float32Array.from(messy.data), { shape: [12, 12] }), {
    order: "descending",
  });
  const ref = jacobiEigh(s);
  const got = await readVec(lower.values);
  for (let i = 0; i < 12; i++) {
    assertBelow(`descending λ${i}`, Math.abs(got[i] - ref.values[11 - i]), 1e-5 * 10);
  }
  await check(s, "cpu 12", "cpu");
});
