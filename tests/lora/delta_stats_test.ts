/** Spectral norm and initial-vs-final update comparison (lib/lora/delta_stats.ts). */
import { equal, ok, throws } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { svd } from "../../lib/linalg/svd.ts";
import { spectralNorm, updateSimilarity } from "../../lib/lora/delta_stats.ts";
import { refusedOptions, TestRng } from "../_helpers.ts";

/** `k` orthonormal columns of length `n` (Gram–Schmidt on Gaussian vectors), as a column list. */
function orthonormal(rng: TestRng, n: number, k: number): Float64Array[] {
  const cols: Float64Array[] = [];
  while (cols.length < k) {
    const v = Float64Array.from(rng.normals(n));
    for (const c of cols) {
      let d = 0;
      for (let i = 0; i < n; i++) d += v[i] * c[i];
      for (let i = 0; i < n; i++) v[i] -= d * c[i];
    }
    const norm = Math.hypot(...v);
    for (let i = 0; i < n; i++) v[i] /= norm;
    cols.push(v);
  }
  return cols;
}

Deno.test("spectralNorm recovers the largest singular value of U·diag(σ)·Vᵀ", () => {
  const rng = new TestRng(11);
  const rows = 23, cols = 17, k = 6;
  const sigma = Array.from({ length: k }, () => 0.1 + 3 * rng.next()).sort((a, b) => b - a);
  sigma[1] = sigma[0] * 0.8; // a clear gap so that the power iteration converges fast
  const u = orthonormal(rng, rows, k);
  const v = orthonormal(rng, cols, k);
  const m = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += u[t][i] * sigma[t] * v[t][j];
      m[i * cols + j] = s;
    }
  }
  const got = spectralNorm(m, [rows, cols]);
  ok(Math.abs(got - sigma[0]) < 1e-5 * sigma[0], `${got} vs ${sigma[0]}`);
  // The transpose has the same spectral norm.
  const t = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = m[i * cols + j];
  ok(Math.abs(spectralNorm(t, [cols, rows]) - sigma[0]) < 1e-5 * sigma[0]);
});

Deno.test("spectralNorm agrees with the library SVD on a random matrix", async () => {
  const rng = new TestRng(12);
  const rows = 12, cols = 20;
  const data = rng.normals(rows * cols);
  const { s } = await svd(tensor(data, { shape: [rows, cols], device: "cpu" }));
  const top = ((await s.data()) as Float32Array)[0];
  ok(Math.abs(spectralNorm(data, [rows, cols]) - top) < 1e-4 * top);
  equal(spectralNorm(new Float32Array(6), [2, 3]), 0);
  throws(() => spectralNorm(new Float32Array(5), [2, 3]), /needs 6 values but the matrix has 5/);
});

Deno.test("updateSimilarity: cosine as the Frobenius formula, distance of a rank-1 change", () => {
  const rng = new TestRng(13);
  const rows = 9, cols = 14;
  const a = rng.normals(rows * cols);
  const x = rng.normals(rows);
  const y = rng.normals(cols);
  const c = 0.5 + rng.next();
  const b = Float32Array.from(a, (v, i) => v + c * x[Math.floor(i / cols)] * y[i % cols]);
  const s = updateSimilarity(a, b, [rows, cols]);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  ok(Math.abs(s.cosine! - dot / Math.sqrt(na * nb)) < 1e-9);
  const want = c * Math.hypot(...x) * Math.hypot(...y);
  ok(Math.abs(s.spectralDistance - want) < 1e-4 * want, `${s.spectralDistance} vs ${want}`);
  ok(Math.abs(s.relativeSpectralDistance! - want / s.finalSpectralNorm) < 1e-4);
  // Same direction, different scale: cosine 1, distance = the difference of the norms.
  const twice = Float32Array.from(a, (v) => 2 * v);
  const same = updateSimilarity(a, twice, [rows, cols]);
  ok(Math.abs(same.cosine! - 1) < 1e-9);
  ok(Math.abs(same.spectralDistance - same.initialSpectralNorm) < 1e-4 * same.initialSpectralNorm);
  // A zero initial update (Noise & Zeros) has no cosine.
  equal(updateSimilarity(new Float32Array(a.length), a, [rows, cols]).cosine, null);
});

Deno.test("spectralNorm refuses an unknown option or a bad maxIter or tol by name", async () => {
  const rng = new TestRng(14);
  const b = 1 + rng.next(), a = b * (0.2 + 0.5 * rng.next());
  const m = new Float64Array([a, 0, 0, -b]); // diag(a, −b): ‖M‖₂ = b
  // Dropped before: { maxIters: 1 } ran the default 500; a maxIter of 0 returned 0 for any matrix.
  await refusedOptions(
    () => spectralNorm(m, [2, 2], { maxIters: 1 } as never),
    /^spectralNorm: unknown option "maxIters"$/,
  );
  for (const bad of [0, NaN, 2.5]) {
    await refusedOptions(
      () => spectralNorm(m, [2, 2], { maxIter: bad }),
      new RegExp(`^spectralNorm: option "maxIter" must be .*, got ${bad}$`),
    );
  }
  await refusedOptions(
    () => spectralNorm(m, [2, 2], { tol: -1 }),
    /^spectralNorm: option "tol" must be >= 0, got -1$/,
  );
  ok(Math.abs(spectralNorm(m, [2, 2], { maxIter: 1000, tol: 0 }) - b) < 1e-12 * b);
});
