/**
 * CorDA: the covariance with PEFT's per-sample |signed max| normalisation and sample count, the damped
 * decomposition `W = U S Vᵀ` with `V = (Vh·C⁻¹)ᵀ`, and IPM / KPM taking the top / bottom triplets — all against an
 * independent float64 computation.
 */
import { equal, ok, rejects } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import type { F32 } from "../../lib/init/types.ts";
import { cordaCovariance, cordaDecompose, cordaInit } from "../../lib/init/corda.ts";
import { TestRng } from "../_helpers.ts";
import {
  colsOf,
  fro,
  gaussian,
  identity,
  jacobiEigh,
  jacobiSVD,
  type M64,
  mat,
  matmul,
  scaleCols,
  sub,
  transpose,
  zerosM,
} from "../linalg/_ref64.ts";
import { assertBelow, readMat } from "../linalg/_util.ts";

const [D_OUT, D_IN, NB, T] = [24, 16, 3, 40];

/** NB samples [T, D_IN] with a decaying spectrum; sample 1 is shifted so that its values are mostly negative. */
function activations(rng: TestRng): M64[] {
  const basis = gaussian(rng, D_IN, D_IN);
  return Array.from({ length: NB }, (_, b) => {
    const coeff = mat(
      T,
      D_IN,
      Float64Array.from({ length: T * D_IN }, (_, i) => rng.normal() * 0.8 ** (i % D_IN)),
    );
    const x = matmul(coeff, basis);
    return b === 1 ? { ...x, data: x.data.map((v) => v - 4) } : x;
  });
}

/** PEFT's covariance: per sample X / |max(X)| (signed max), Σ XᵀX / n_samples. */
function covariance(samples: M64[]): M64 {
  const c = zerosM(D_IN, D_IN);
  for (const x of samples) {
    const peak = Math.abs(Math.max(...x.data));
    const xs = { ...x, data: x.data.map((v) => v / peak) };
    const g = matmul(transpose(xs), xs);
    for (let i = 0; i < c.data.length; i++) c.data[i] += g.data[i] / samples.length;
  }
  return c;
}

function toTensor(samples: M64[]): F32 {
  const data = new Float32Array(samples.length * T * D_IN);
  samples.forEach((x, b) => data.set(Float32Array.from(x.data), b * T * D_IN));
  return tensor(data, { shape: [samples.length, T, D_IN] }) as unknown as F32;
}

function damped(c: M64, damp: number): M64 {
  let mean = 0;
  for (let i = 0; i < D_IN; i++) mean += c.data[i * D_IN + i] / D_IN;
  const out = { ...c, data: Float64Array.from(c.data) };
  for (let i = 0; i < D_IN; i++) out.data[i * D_IN + i] += mean * damp;
  return out;
}

function inverse(c: M64): M64 {
  const { values, vectors } = jacobiEigh(c);
  return matmul(scaleCols(vectors, values.map((v) => 1 / v)), transpose(vectors));
}

Deno.test("corda: covariance — per-sample |signed max| and the number of samples", async () => {
  const rng = new TestRng(801);
  const xs = activations(rng);
  ok(
    Math.max(...xs[1].data) < Math.max(...xs[1].data.map(Math.abs)),
    "sample 1 exercises the signed-max quirk",
  );
  const three = await cordaCovariance(toTensor(xs), D_IN);
  equal(three.samples, NB);
  const want3 = covariance(xs);
  assertBelow(
    "‖C − C_ref‖/‖C_ref‖ ([NB, T, d])",
    fro(sub(await readMat(three.covariance), want3)) / fro(want3),
    1e-5,
  );
  // The same rows as one [NB·T, d] input are one sample: one maximum, divided by 1.
  const flat = mat(NB * T, D_IN, Float64Array.from(xs.flatMap((x) => Array.from(x.data))));
  const one = await cordaCovariance(
    tensor(Float32Array.from(flat.data), { shape: [NB * T, D_IN] }) as unknown as F32,
    D_IN,
  );
  equal(one.samples, 1);
  const want1 = covariance([flat]);
  assertBelow(
    "‖C − C_ref‖/‖C_ref‖ ([T, d])",
    fro(sub(await readMat(one.covariance), want1)) / fro(want1),
    1e-5,
  );
  await rejects(cordaCovariance(toTensor(xs), D_IN + 1), /\[3,40,16\]/);
});

Deno.test("corda: W = U S Vᵀ with V = (Vh·C_fix⁻¹)ᵀ; IPM and KPM take opposite ends of the spectrum", async () => {
  const rng = new TestRng(802);
  const xs = activations(rng);
  const x = toTensor(xs);
  const w = gaussian(rng, D_OUT, D_IN, 0.3);
  const wt = tensor(Float32Array.from(w.data), { shape: [D_OUT, D_IN] }) as unknown as F32;
  const d = await cordaDecompose(wt, x);
  ok(d.inverseError < 0.05, `accepted inverse error ${d.inverseError}`);
  const cFix = damped(covariance(xs), d.damping);
  assertBelow(
    "‖C_fix − C_ref − mean(diag)·damp·I‖/‖C_fix‖",
    fro(sub(await readMat(d.covariance), cFix)) / fro(cFix),
    1e-5,
  );
  assertBelow(
    "‖C_fix·C_fix⁻¹ − I‖_F",
    fro(sub(matmul(cFix, await readMat(d.inverse)), identity(D_IN))),
    1e-3,
  );
  // Reconstruction from the returned factors.
  const u = await readMat(d.u);
  const s = Float64Array.from((await d.s.data()) as Float32Array);
  const vt = await readMat(d.vt);
  // float32 limit: the error of U S Vh is amplified by ‖C_fix⁻¹‖, i.e. by the condition number of C_fix.
  const eig = jacobiEigh(cFix).values;
  const cond = eig[D_IN - 1] / eig[0];
  assertBelow(
    `‖U S Vᵀ − W‖/‖W‖ (cond C_fix ${cond.toFixed(0)})`,
    fro(sub(matmul(scaleCols(u, s), vt), w)) / fro(w),
    2e-6 * cond,
  );
  // Independent float64 decomposition: svd(W·C_fix), V = C_fix⁻¹·Vh ᵀ.
  const ref = jacobiSVD(matmul(w, cFix));
  const v = matmul(inverse(cFix), ref.v);
  const k = Math.min(D_OUT, D_IN);
  const part = (lo: number, hi: number) =>
    matmul(scaleCols(colsOf(ref.u, lo, hi), ref.s.slice(lo, hi)), transpose(colsOf(v, lo, hi)));
  const r = 4;
  const alpha = 3 * r; // s = 3
  for (const [mode, want] of [["ipm", part(0, r)], ["kpm", part(k - r, k)]] as const) {
    const init = await cordaInit(wt, { rank: r, alpha, activations: x, mode });
    equal(init.info!.mode, mode);
    equal(init.info!.samples, NB);
    const ba = matmul(await readMat(init.b), await readMat(init.a));
    const sba = { ...ba, data: ba.data.map((v) => 3 * v) };
    assertBelow(`${mode}: ‖s·B·A − Σ triplets‖/‖Σ triplets‖`, fro(sub(sba, want)) / fro(want), 2e-3);
    // S/s split: each row of A times its column of B has the singular value / s as its scale.
    const b = await readMat(init.b);
    const lo = mode === "ipm" ? 0 : k - r;
    for (let j = 0; j < r; j++) {
      const colB = Array.from({ length: D_OUT }, (_, i) => b.data[i * r + j]).reduce(
        (acc, t) => acc + t * t,
        0,
      );
      assertBelow(
        `${mode}: |‖B_j‖² − σ_j/s| / (σ_j/s)`,
        Math.abs(colB - ref.s[lo + j] / 3) / (ref.s[lo + j] / 3),
        1e-3,
      );
    }
  }
  await rejects(cordaInit(wt, { rank: r }), /activations/);
});
