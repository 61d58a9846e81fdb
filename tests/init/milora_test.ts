/** MiLoRA: the adapter spans the bottom-r singular subspaces and the base keeps the principal part. */
import { equal } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import type { F32 } from "../../lib/init/types.ts";
import { miloraInit } from "../../lib/init/milora.ts";
import { TestRng } from "../_helpers.ts";
import {
  colsOf,
  fro,
  geomspace,
  largestPrincipalAngle,
  matmul,
  randomOrthonormal,
  scaleCols,
  sub,
  transpose,
} from "../linalg/_ref64.ts";
import { assertBelow, readMat } from "../linalg/_util.ts";

for (const [m, n] of [[40, 24], [20, 36]]) {
  Deno.test(`milora: B and Aᵀ span the bottom-r singular subspaces (W ${m}×${n})`, async () => {
    const rng = new TestRng(401 + m);
    const r = 4;
    const k = Math.min(m, n);
    const s = geomspace(6, 0.3, k);
    const u = randomOrthonormal(rng, m, k);
    const v = randomOrthonormal(rng, n, k);
    const w = matmul(scaleCols(u, s), transpose(v));
    const t = tensor(Float32Array.from(w.data), { shape: [m, n] }) as unknown as F32;
    const init = await miloraInit(t, { rank: r, alpha: 2 * r });
    equal(init.scale, 2);
    const b = await readMat(init.b);
    const a = await readMat(init.a);
    assertBelow("angle(B, U[:, -r:])", largestPrincipalAngle(b, colsOf(u, k - r, k)), 2e-3);
    assertBelow("angle(Aᵀ, V[:, -r:])", largestPrincipalAngle(transpose(a), colsOf(v, k - r, k)), 2e-3);
    const minor = matmul(scaleCols(colsOf(u, k - r, k), s.slice(k - r)), transpose(colsOf(v, k - r, k)));
    const sba = scaleCols(matmul(b, a), new Float64Array(n).fill(init.scale));
    assertBelow("‖s·B·A − minor part‖/‖minor part‖", fro(sub(sba, minor)) / fro(minor), 2e-3);
    // The base is the principal part W − minor part.
    const base = await readMat(init.base!);
    assertBelow("‖base − (W − minor)‖/‖W‖", fro(sub(base, sub(w, minor))) / fro(w), 1e-5);
  });
}
