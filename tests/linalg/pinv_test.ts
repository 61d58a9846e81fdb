/** pinv: the four Moore–Penrose conditions, the rank cutoff, and numpy's default tolerance. */
import { equal } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { F32_EPS, pinv } from "../../lib/linalg/mod.ts";
import { TestRng } from "../_helpers.ts";
import { fro, gaussian, type M64, mat, matmul, sub, transpose, withSpectrum } from "./_ref64.ts";
import { assertBelow, readMat } from "./_util.ts";

function moorePenrose(a: M64, p: M64, what: string, tol: number): void {
  const ap = matmul(a, p), pa = matmul(p, a);
  assertBelow(`${what}: ‖APA − A‖/‖A‖`, fro(sub(matmul(ap, a), a)) / fro(a), tol);
  assertBelow(`${what}: ‖PAP − P‖/‖P‖`, fro(sub(matmul(pa, p), p)) / fro(p), tol);
  assertBelow(`${what}: ‖(AP)ᵀ − AP‖/‖AP‖`, fro(sub(transpose(ap), ap)) / fro(ap), tol);
  assertBelow(`${what}: ‖(PA)ᵀ − PA‖/‖PA‖`, fro(sub(transpose(pa), pa)) / fro(pa), tol);
}

async function pinvOf(a: M64, opts = {}): Promise<M64> {
  const p = await pinv(tensor(Float32Array.from(a.data), { shape: [a.rows, a.cols] }), opts);
  equal(p.shape.join(), `${a.cols},${a.rows}`);
  return readMat(p);
}

Deno.test("pinv: Moore–Penrose conditions, full-rank tall/wide and rank-deficient", async () => {
  const rng = new TestRng(401);
  for (const [m, n] of [[27, 14], [14, 27]]) {
    const a = mat(m, n, Float32Array.from(gaussian(rng, m, n).data));
    moorePenrose(a, await pinvOf(a), `full rank ${m}x${n}`, 1e-4);
  }
  const low = mat(30, 18, Float32Array.from(matmul(gaussian(rng, 30, 6), gaussian(rng, 6, 18)).data));
  moorePenrose(low, await pinvOf(low), "rank 6, 30x18", 1e-4);
});

Deno.test("pinv: σ ≤ rcond·σ_max is dropped (numpy's default rcond max(m,n)·eps)", async () => {
  const rng = new TestRng(402);
  // Spectrum with one value far below the default cutoff 20·eps·σ_max ≈ 2.4e-6 and one well above it.
  const sigma = [1, 0.5, 1e-3, 1e-9];
  const a = mat(20, 4, Float32Array.from(withSpectrum(rng, 20, 4, sigma).data));
  const p = await pinvOf(a);
  // ‖A⁺‖₂ = 1/σ_kept_min = 1e3 when 1e-9 is cut; 1e9 otherwise.
  const norm = fro(p);
  assertBelow("‖A⁺‖_F without the cut-off direction", Math.abs(norm - Math.hypot(1, 2, 1e3)) / 1e3, 1e-2);
  equal(F32_EPS, 2 ** -23);
  // A larger rcond also drops 1e-3.
  const p2 = await pinvOf(a, { rcond: 1e-2 });
  assertBelow("‖A⁺‖_F with rcond 1e-2", Math.abs(fro(p2) - Math.hypot(1, 2)) / Math.hypot(1, 2), 1e-3);
});
