/**
 * PiSSA: the adapter spans the principal singular subspaces, carries `S_r/s` split as square roots, and `s·B·A` is
 * the rank-r truncation; the randomized variant (torch.svd_lowrank semantics, q = r) matches the exact one on a
 * fast-decaying spectrum.
 */
import { deepEqual, equal } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import type { F32 } from "../../lib/init/types.ts";
import { pissaInit } from "../../lib/init/pissa.ts";
import { TestRng } from "../_helpers.ts";
import {
  colsOf,
  fro,
  geomspace,
  largestPrincipalAngle,
  type M64,
  matmul,
  randomOrthonormal,
  scaleCols,
  sub,
  transpose,
} from "../linalg/_ref64.ts";
import { assertBelow, readMat } from "../linalg/_util.ts";

/** W = U diag(s) Vᵀ with random orthonormal U, V: the exact singular triplets are known. */
function spectral(rng: TestRng, m: number, n: number, s: Float64Array) {
  const u = randomOrthonormal(rng, m, s.length);
  const v = randomOrthonormal(rng, n, s.length);
  const w = matmul(scaleCols(u, s), transpose(v));
  return { u, v, w, t: tensor(Float32Array.from(w.data), { shape: [m, n] }) as unknown as F32 };
}

function truncation(u: M64, s: Float64Array, v: M64, lo: number, hi: number): M64 {
  return matmul(scaleCols(colsOf(u, lo, hi), s.slice(lo, hi)), transpose(colsOf(v, lo, hi)));
}

Deno.test("pissa: B and Aᵀ span the top-r singular subspaces; s·B·A is the rank-r truncation", async () => {
  const rng = new TestRng(301);
  const [m, n, r, alpha] = [48, 32, 6, 12]; // s = 2
  const s = geomspace(10, 0.05, n);
  const { u, v, w, t } = spectral(rng, m, n, s);
  const init = await pissaInit(t, { rank: r, alpha });
  equal(init.scale, 2);
  const b = await readMat(init.b);
  const a = await readMat(init.a);
  assertBelow("angle(B, U_r)", largestPrincipalAngle(b, colsOf(u, 0, r)), 1e-3);
  assertBelow("angle(Aᵀ, V_r)", largestPrincipalAngle(transpose(a), colsOf(v, 0, r)), 1e-3);
  const sba = scaleCols(matmul(b, a), new Float64Array(n).fill(init.scale));
  assertBelow("‖s·B·A − U_r S_r V_rᵀ‖/‖W‖", fro(sub(sba, truncation(u, s, v, 0, r))) / fro(w), 2e-5);
  // The split: column j of B has squared norm σ_j/s, and so has row j of A.
  const bt = transpose(b);
  for (let j = 0; j < r; j++) {
    const colB = bt.data.slice(j * m, (j + 1) * m).reduce((acc, x) => acc + x * x, 0);
    const rowA = a.data.slice(j * n, (j + 1) * n).reduce((acc, x) => acc + x * x, 0);
    assertBelow(`|‖B_j‖² − σ_j/s| (j=${j})`, Math.abs(colB - s[j] / 2) / s[0], 1e-5);
    assertBelow(`|‖A_j‖² − σ_j/s| (j=${j})`, Math.abs(rowA - s[j] / 2) / s[0], 1e-5);
  }
  deepEqual(init.info, { svd: "exact" });
});

Deno.test("pissa: randomized niter=16 matches the exact SVD on a fast-decaying spectrum; exact overrides niter", async () => {
  const rng = new TestRng(302);
  const [m, n, r] = [32, 56, 4]; // wide: svd_lowrank works on the transpose
  const s = geomspace(8, 8 * 0.6 ** (m - 1), m);
  const { u, v, w, t } = spectral(rng, m, n, s);
  const fast = await pissaInit(t, { rank: r, niter: 16, seed: rng.int(0, 1000) });
  const exact = await pissaInit(t, { rank: r });
  deepEqual(fast.info, { svd: "randomized", niter: 16 });
  const bf = await readMat(fast.b);
  const af = await readMat(fast.a);
  assertBelow("angle(B_fast, U_r)", largestPrincipalAngle(bf, colsOf(u, 0, r)), 2e-3);
  assertBelow("angle(A_fastᵀ, V_r)", largestPrincipalAngle(transpose(af), colsOf(v, 0, r)), 2e-3);
  const be = await readMat(exact.b);
  assertBelow("angle(B_fast, B_exact)", largestPrincipalAngle(bf, be), 2e-3);
  assertBelow(
    "‖B_fast·A_fast − B_exact·A_exact‖/‖W‖",
    fro(sub(matmul(bf, af), matmul(be, await readMat(exact.a)))) / fro(w),
    1e-4,
  );
  // exact: true ignores niter (the deterministic path, bit for bit).
  const forced = await pissaInit(t, { rank: r, niter: 2, exact: true, seed: 5 });
  deepEqual(await forced.a.data(), await exact.a.data());
  deepEqual(await forced.b.data(), await exact.b.data());
  deepEqual(forced.info, { svd: "exact" });
});

Deno.test("pissa: a slowly decaying spectrum leaves niter=1 visibly inexact (q = r, no oversampling)", async () => {
  const rng = new TestRng(303);
  const [m, n, r] = [40, 40, 4];
  const s = geomspace(4, 4 * 0.97 ** (n - 1), n);
  const { u, t } = spectral(rng, m, n, s);
  const fast = await pissaInit(t, { rank: r, niter: 1, seed: 3 });
  const angle = largestPrincipalAngle(await readMat(fast.b), colsOf(u, 0, r));
  if (!(angle > 1e-2)) throw new Error(`expected a visible principal angle, got ${angle}`);
});
