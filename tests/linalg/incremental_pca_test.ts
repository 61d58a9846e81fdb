/** IncrementalPCA over minibatches against a one-shot float64 PCA of all rows. */
import { equal, rejects } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { IncrementalPCA } from "../../lib/linalg/mod.ts";
import { TestRng } from "../_helpers.ts";
import {
  at,
  gaussian,
  geomspace,
  jacobiSVD,
  largestPrincipalAngle,
  type M64,
  mat,
  matmul,
  randomOrthonormal,
  scaleCols,
  transpose,
} from "./_ref64.ts";
import { assertBelow, flipLike, readMat, readVec } from "./_util.ts";

/** One-shot PCA in float64: mean, population variance, components (rows, sklearn's sign rule), S, ratios. */
function pca64(x: M64, k: number) {
  const n = x.rows, d = x.cols;
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += at(x, i, j) / n;
  const c = mat(n, d, x.data.map((v, i) => v - mean[i % d]));
  const variance = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) variance[j] += at(c, i, j) ** 2 / n;
  const { s, v, u } = jacobiSVD(c);
  const total = c.data.reduce((acc, val) => acc + val * val, 0);
  // svd_flip(u_based_decision=False): largest |.| entry of each component (column of V) positive.
  const vf = flipLike(v, v);
  void u;
  return {
    mean,
    variance,
    components: transpose(vf), // rows
    s: s.slice(0, k),
    explained: s.slice(0, k).map((x) => (x * x) / (n - 1)),
    ratio: s.slice(0, k).map((x) => (x * x) / total),
  };
}

/** Rows with covariance spectrum `sigma` (in a random basis) plus an offset mean. */
function data(rng: TestRng, n: number, sigma: ArrayLike<number>, noise = 0): M64 {
  const d = sigma.length;
  const basis = randomOrthonormal(rng, d, d);
  const z = matmul(scaleCols(gaussian(rng, n, d), sigma), transpose(basis));
  const offset = Float64Array.from({ length: d }, () => rng.normal() * 3);
  return mat(n, d, Float32Array.from(z.data.map((v, i) => v + offset[i % d] + noise * rng.normal())));
}

function rowsOf(x: M64, r0: number, r1: number): M64 {
  return mat(r1 - r0, x.cols, x.data.slice(r0 * x.cols, r1 * x.cols));
}

function assertVecClose(got: Float64Array, want: Float64Array, rtol: number, what: string): void {
  const scale = Math.max(...Array.from(want, Math.abs));
  for (let i = 0; i < want.length; i++) {
    assertBelow(`${what}[${i}]`, Math.abs(got[i] - want[i]) / scale, rtol);
  }
}

Deno.test("IncrementalPCA with all components equals one-shot PCA of all rows", async () => {
  const rng = new TestRng(601);
  const d = 10;
  const x = data(rng, 95, geomspace(3, 0.3, d));
  const ipca = new IncrementalPCA();
  for (const [r0, r1] of [[0, 30], [30, 55], [55, 95]]) {
    await ipca.partialFit(tensor(Float32Array.from(rowsOf(x, r0, r1).data), { shape: [r1 - r0, d] }));
  }
  equal(ipca.nSamplesSeen, 95);
  equal(ipca.nComponents, d);
  const ref = pca64(x, d);
  assertVecClose(await readVec(ipca.mean), ref.mean, 1e-5, "mean");
  assertVecClose(await readVec(ipca.var), ref.variance, 1e-4, "var");
  assertVecClose(await readVec(ipca.singularValues), ref.s, 1e-4, "singular values");
  assertVecClose(await readVec(ipca.explainedVariance), ref.explained, 1e-4, "explained variance");
  assertVecClose(await readVec(ipca.explainedVarianceRatio), ref.ratio, 1e-4, "explained variance ratio");
  const comps = await readMat(ipca.components);
  for (let k = 0; k < d; k++) {
    for (let j = 0; j < d; j++) {
      assertBelow(`component ${k}[${j}]`, Math.abs(at(comps, k, j) - at(ref.components, k, j)), 1e-3);
    }
  }
});

Deno.test("IncrementalPCA with few components matches one-shot PCA by principal angles", async () => {
  const rng = new TestRng(602);
  const d = 24, k = 3;
  const sigma = Float64Array.from({ length: d }, (_, i) => (i < k ? 4 - i : 0));
  const x = data(rng, 160, sigma, 1e-3);
  const ipca = new IncrementalPCA({ nComponents: k });
  for (let b = 0; b < 4; b++) {
    await ipca.partialFit(tensor(Float32Array.from(rowsOf(x, 40 * b, 40 * b + 40).data), { shape: [40, d] }));
  }
  const ref = pca64(x, k);
  const comps = await readMat(ipca.components);
  equal(comps.rows, k);
  const refTop = mat(
    d,
    k,
    Float64Array.from({ length: d * k }, (_, i) => at(ref.components, i % k, Math.floor(i / k))),
  );
  assertBelow("top-3 subspace angle (rad)", largestPrincipalAngle(transpose(comps), refTop), 1e-3);
  assertVecClose(await readVec(ipca.explainedVarianceRatio), ref.ratio, 1e-3, "ratio");
  // transform = (x − mean)·componentsᵀ
  const xb = rowsOf(x, 0, 5);
  const proj = await readMat(ipca.transform(tensor(Float32Array.from(xb.data), { shape: [5, d] })));
  const mean = await readVec(ipca.mean);
  const want = matmul(mat(5, d, xb.data.map((v, i) => v - mean[i % d])), transpose(comps));
  for (let i = 0; i < want.data.length; i++) {
    assertBelow(`transform[${i}]`, Math.abs(proj.data[i] - want.data[i]), 1e-4);
  }
});

Deno.test("IncrementalPCA: low-rank inner SVD option and input errors", async () => {
  const rng = new TestRng(603);
  const d = 16, k = 2;
  const sigma = Float64Array.from({ length: d }, (_, i) => (i < k ? 3 - i : 0.01));
  const x = data(rng, 60, sigma);
  const ipca = new IncrementalPCA({ nComponents: k, lowRank: { niter: 6, seed: 1 } });
  await ipca.partialFit(tensor(Float32Array.from(rowsOf(x, 0, 30).data), { shape: [30, d] }));
  await ipca.partialFit(tensor(Float32Array.from(rowsOf(x, 30, 60).data), { shape: [30, d] }));
  const ref = pca64(x, k);
  const refTop = mat(
    d,
    k,
    Float64Array.from({ length: d * k }, (_, i) => at(ref.components, i % k, Math.floor(i / k))),
  );
  assertBelow(
    "low-rank inner SVD: top-2 angle",
    largestPrincipalAngle(transpose(await readMat(ipca.components)), refTop),
    1e-2,
  );
  await rejects(
    () => ipca.partialFit(tensor(new Float32Array(3 * d).fill(1), { shape: [1, 3 * d] })),
    /features/,
  );
  await rejects(
    () =>
      new IncrementalPCA({ nComponents: 5 }).partialFit(
        tensor(new Float32Array(4 * d).fill(1), { shape: [4, d] }),
      ),
    /samples/,
  );
});
