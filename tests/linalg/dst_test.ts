/** dstBasis against the closed form, orthonormality and the symmetry of the full DST-I matrix. */
import { equal } from "node:assert/strict";
import { dstBasis } from "../../lib/linalg/mod.ts";
import { TestRng } from "../_helpers.ts";
import { at, orthError, transpose } from "./_ref64.ts";
import { assertBelow, readMat, relMaxDiff } from "./_util.ts";

for (const device of ["webgpu", "cpu"] as const) {
  Deno.test(`dstBasis: closed form, orthonormal columns (${device})`, async () => {
    const rng = new TestRng(801);
    const n = rng.int(40, 300), r = rng.int(1, 24);
    const phi = await readMat(await dstBasis(n, r, { device }));
    equal(phi.rows, n);
    equal(phi.cols, r);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < r; j++) {
        const want = Math.sqrt(2 / (n + 1)) * Math.sin(((i + 1) * (j + 1) * Math.PI) / (n + 1));
        assertBelow(
          `Φ[${i},${j}] (n=${n})`,
          Math.abs(at(phi, i, j) - want),
          2 ** -24 * Math.abs(want) + 1e-12,
        );
      }
    }
    assertBelow(`‖ΦᵀΦ − I‖_F (n=${n}, r=${r})`, orthError(phi), 1e-5);
  });
}

Deno.test("dstBasis: the full matrix is symmetric and orthogonal", async () => {
  const n = 33;
  const phi = await readMat(await dstBasis(n, n));
  assertBelow("Φ − Φᵀ", relMaxDiff(phi, transpose(phi)), 0);
  assertBelow("ΦᵀΦ − I", orthError(phi), 1e-5);
});
