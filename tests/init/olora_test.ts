/**
 * OLoRA: B has orthonormal columns spanning the first r columns of W, A = R[:r] is upper triangular on its first r
 * columns and equals Bᵀ·W (no division by s), so `B·A = Q_r Q_rᵀ W`.
 */
import { equal } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import type { F32 } from "../../lib/init/types.ts";
import { oloraInit } from "../../lib/init/olora.ts";
import { TestRng } from "../_helpers.ts";
import {
  at,
  colsOf,
  fro,
  gaussian,
  householderQR,
  largestPrincipalAngle,
  matmul,
  maxAbs,
  orthError,
  sub,
  transpose,
} from "../linalg/_ref64.ts";
import { assertBelow, readMat } from "../linalg/_util.ts";

for (const [m, n, r] of [[40, 24, 5], [16, 40, 6]]) {
  Deno.test(`olora: orthonormal B spanning W[:, :r], triangular A = BᵀW (W ${m}×${n}, r ${r})`, async () => {
    const rng = new TestRng(501 + m);
    const w = gaussian(rng, m, n, 0.5);
    const t = tensor(Float32Array.from(w.data), { shape: [m, n] }) as unknown as F32;
    const alpha = 3 * r; // s = 3: A and B must not depend on it
    const init = await oloraInit(t, { rank: r, alpha });
    equal(init.scale, 3);
    const b = await readMat(init.b);
    const a = await readMat(init.a);
    assertBelow("‖BᵀB − I‖_F", orthError(b), 1e-5);
    assertBelow("angle(B, W[:, :r])", largestPrincipalAngle(b, colsOf(w, 0, r)), 1e-4);
    let below = 0;
    for (let i = 1; i < r; i++) for (let j = 0; j < i; j++) below = Math.max(below, Math.abs(at(a, i, j)));
    assertBelow("max |A[i, j]| below the diagonal of A[:, :r]", below / maxAbs(a), 1e-6);
    assertBelow("‖A − BᵀW‖/‖W‖", fro(sub(a, matmul(transpose(b), w))) / fro(w), 1e-5);
    // B·A is the projection of W on span(W[:, :r]), computed independently in float64.
    const q = householderQR(colsOf(w, 0, r)).q;
    const proj = matmul(q, matmul(transpose(q), w));
    assertBelow("‖B·A − P·W‖/‖W‖", fro(sub(matmul(b, a), proj)) / fro(w), 1e-5);
    const base = await readMat(init.base!);
    const sProj = { ...proj, data: proj.data.map((x) => 3 * x) };
    assertBelow("‖base − (W − 3·P·W)‖/‖W‖", fro(sub(base, sub(w, sProj))) / fro(w), 1e-5);
  });
}
