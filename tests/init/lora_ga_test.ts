/**
 * LoRA-GA: the subspaces of A and B against a float64 SVD of the mean gradient, the theorem `BBᵀG + GAᵀA = G_2r`,
 * the official and PEFT scalings, the other directions, the randomized SVD option, and batch averaging.
 */
import { deepEqual, equal, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { loraGaIndices, loraGaInit } from "../../lib/init/lora_ga.ts";
import { assertClose, TestRng } from "../_helpers.ts";
import {
  at,
  colsOf,
  fro,
  geomspace,
  jacobiSVD,
  largestPrincipalAngle,
  type M64,
  mat,
  matmul,
  scaleCols,
  sub,
  transpose,
  withSpectrum,
} from "../linalg/_ref64.ts";
import { assertBelow, readMat } from "../linalg/_util.ts";

type F = Tensor<Shape, "f32">;
const [D_OUT, D_IN, R] = [24, 16, 3];

function toTensor(m: M64): F {
  return tensor(Float32Array.from(m.data), { shape: [m.rows, m.cols] }) as unknown as F;
}

/** A gradient with distinct, decaying singular values (so the singular subspaces are well defined). */
function setup(salt: number) {
  const rng = new TestRng(salt);
  const g = mat(
    D_OUT,
    D_IN,
    Float32Array.from(withSpectrum(rng, D_OUT, D_IN, geomspace(5, 0.05, D_IN)).data),
  );
  const w = mat(D_OUT, D_IN, Float32Array.from(withSpectrum(rng, D_OUT, D_IN, geomspace(2, 0.1, D_IN)).data));
  const ref = jacobiSVD(g);
  return { rng, g, w, ref };
}

function gram(a: M64): M64 {
  return matmul(a, transpose(a));
}

/** ‖X − c·I‖_max for a square X. */
function offIdentity(x: M64, c: ArrayLike<number> | number): number {
  let m = 0;
  for (let i = 0; i < x.rows; i++) {
    for (let j = 0; j < x.cols; j++) {
      const want = i === j ? (typeof c === "number" ? c : c[i]) : 0;
      m = Math.max(m, Math.abs(at(x, i, j) - want));
    }
  }
  return m;
}

Deno.test("lora-ga: span(Aᵀ) = span(V[:, :r]), span(B) = span(U[:, r:2r]); W_res + s·B·A = W", async () => {
  const { g, w, ref } = setup(801);
  const res = await loraGaInit(toTensor(w), { rank: R, alpha: 6, grads: toTensor(g) });
  const a = await readMat(res.a), b = await readMat(res.b);
  assertBelow("angle(Aᵀ, V[:, :r])", largestPrincipalAngle(transpose(a), colsOf(ref.v, 0, R)), 1e-3);
  assertBelow("angle(B, U[:, r:2r])", largestPrincipalAngle(b, colsOf(ref.u, R, 2 * R)), 1e-3);
  // Official stable scale: A and B are orthonormal times d_out^{1/4}/√16.
  const c2 = Math.sqrt(D_OUT) / 16;
  assertBelow("AAᵀ = c²·I", offIdentity(gram(a), c2), 1e-5);
  assertBelow("BᵀB = c²·I", offIdentity(matmul(transpose(b), b), c2), 1e-5);
  equal(res.scale, 2);
  const base = await readMat(res.base!);
  const back = matmul(b, a).data.map((v, i) => base.data[i] + res.scale * v);
  assertClose(back, w.data, { rtol: 1e-5, atol: 1e-5, what: "W_res + s·B·A = W" });
  deepEqual(res.info?.direction, "ArB2r");
  assertClose(res.info!.gradSingularValues as number[], ref.s.slice(0, 2 * R), { rtol: 1e-4, atol: 1e-5 });
});

Deno.test("lora-ga: unit scale reproduces the best rank-2r approximation: BBᵀG + GAᵀA = G_2r", async () => {
  const { g, w, ref } = setup(802);
  const res = await loraGaInit(toTensor(w), { rank: R, grads: toTensor(g), scale: "unit" });
  const a = await readMat(res.a), b = await readMat(res.b);
  const step = matmul(matmul(b, transpose(b)), g).data.map((v, i) =>
    v + matmul(matmul(g, transpose(a)), a).data[i]
  );
  const g2r = matmul(
    scaleCols(colsOf(ref.u, 0, 2 * R), ref.s.slice(0, 2 * R)),
    transpose(colsOf(ref.v, 0, 2 * R)),
  );
  const err = fro(sub(mat(D_OUT, D_IN, step), g2r)) / fro(g2r);
  assertBelow("‖BBᵀG + GAᵀA − G_2r‖/‖G_2r‖", err, 1e-4);
});

Deno.test("lora-ga: official vs PEFT scaling differ as documented; gd and weightS scales", async () => {
  const { g, w, ref } = setup(803);
  const common = { rank: R, alpha: 4, grads: toTensor(g) };
  const c = D_OUT ** 0.25 / 4; // d_out^{1/4}/√16
  const peft = await loraGaInit(toTensor(w), { ...common, variant: "peft" });
  const pa = await readMat(peft.a), pb = await readMat(peft.b);
  // PEFT: A orthonormal (unscaled), B = U[:, r:2r]·diag(S[r:2r])·c.
  assertBelow("PEFT AAᵀ = I", offIdentity(gram(pa), 1), 1e-5);
  const sB2 = Array.from(ref.s.slice(R, 2 * R), (s) => (s * c) ** 2);
  assertBelow("PEFT BᵀB = c²·diag(S_B²)", offIdentity(matmul(transpose(pb), pb), sB2), 1e-4 * sB2[0]);
  // The two B·A differ by the factor diag(S_B)/c on B's columns (sign-invariant: compare Frobenius norms).
  const official = await loraGaInit(toTensor(w), common);
  const oNorm = fro(matmul(await readMat(official.b), await readMat(official.a)));
  const pNorm = fro(matmul(pb, pa));
  const want = Math.sqrt(sB2.reduce((s, v) => s + v, 0)); // ‖c·U_B S_B V_Aᵀ‖
  assertBelow("‖B·A‖ official = c²√r", Math.abs(oNorm - c * c * Math.sqrt(R)) / oNorm, 1e-5);
  assertBelow("‖B·A‖ PEFT = c·‖S_B‖", Math.abs(pNorm - want) / want, 1e-5);
  // gd: A and B divided by s = alpha/r.
  const gd = await loraGaInit(toTensor(w), { ...common, scale: "gd" });
  const s = 4 / R;
  assertBelow("gd AAᵀ = I/s²", offIdentity(gram(await readMat(gd.a)), 1 / (s * s)), 1e-5);
  // weightS (official): A, B × mean(√(S_W[:r]/s)).
  const ws = await loraGaInit(toTensor(w), { ...common, scale: "weightS" });
  const sw = jacobiSVD(w).s;
  const avg = Array.from(sw.slice(0, R), (x) => Math.sqrt(x / s)).reduce((p, q) => p + q, 0) / R;
  assertBelow("weightS AAᵀ = avg²·I", offIdentity(gram(await readMat(ws.a)), avg * avg), 1e-4 * avg * avg);
  // weightS (PEFT weight_svd): B × S_W[0]/S_B[0] on top of U·diag(S).
  const wp = await loraGaInit(toTensor(w), { ...common, scale: "weightS", variant: "peft" });
  const f = sw[0] / ref.s[R];
  const wb2 = Array.from(ref.s.slice(R, 2 * R), (x) => (x * f) ** 2);
  const wpb = await readMat(wp.b);
  assertBelow("weight_svd BᵀB", offIdentity(matmul(transpose(wpb), wpb), wb2), 1e-4 * wb2[0]);
});

Deno.test("lora-ga: directions, randomized SVD, averaged batches, errors", async () => {
  const { rng, g, w, ref } = setup(804);
  deepEqual(loraGaIndices("ArBr", 3, "official", 0), { a: [1, 3, 5], b: [0, 2, 4] });
  deepEqual(loraGaIndices("A2rBr", 2, "official", 0), { a: [2, 3], b: [0, 1] });
  const ro = loraGaIndices("random", 4, "official", 9);
  deepEqual(
    [...ro.a, ...ro.b].sort((x, y) => x - y),
    [0, 1, 2, 3, 4, 5, 6, 7],
    "official: a permutation of 0..2r−1",
  );
  const rp = loraGaIndices("random", 4, "peft", 9);
  deepEqual(rp.a, rp.b, "PEFT: the same indices for A and B");
  deepEqual(loraGaIndices("random", 4, "official", 9), ro, "seeded");
  // ArBr: A spans V's odd directions, B U's even ones.
  const odd = await loraGaInit(toTensor(w), { rank: R, grads: toTensor(g), direction: "ArBr" });
  const pick = (m: M64, idx: number[]) =>
    mat(
      m.rows,
      idx.length,
      Float64Array.from(
        { length: m.rows * idx.length },
        (_, i) => at(m, Math.floor(i / idx.length), idx[i % idx.length]),
      ),
    );
  assertBelow("ArBr A", largestPrincipalAngle(transpose(await readMat(odd.a)), pick(ref.v, [1, 3, 5])), 1e-3);
  assertBelow("ArBr B", largestPrincipalAngle(await readMat(odd.b), pick(ref.u, [0, 2, 4])), 1e-3);
  // Randomized SVD (q = 4r = 12, 4 power iterations) on a decaying spectrum: close to the exact subspaces.
  const lr = await loraGaInit(toTensor(w), { rank: R, grads: toTensor(g), exact: false, seed: 4 });
  assertBelow(
    "randomized A",
    largestPrincipalAngle(transpose(await readMat(lr.a)), colsOf(ref.v, 0, R)),
    1e-2,
  );
  assertBelow("randomized B", largestPrincipalAngle(await readMat(lr.b), colsOf(ref.u, R, 2 * R)), 1e-2);
  // [NB, d_out, d_in] gradients are averaged: G = mean of the batches.
  const noise = rng.normals(D_OUT * D_IN, 0.5);
  const g1 = g.data.map((v, i) => v + noise[i]), g2 = g.data.map((v, i) => v - noise[i]);
  const stacked = tensor(Float32Array.from([...g1, ...g2]), { shape: [2, D_OUT, D_IN] }) as unknown as F;
  const avg = await loraGaInit(toTensor(w), { rank: R, grads: stacked, scale: "unit" });
  const one = await loraGaInit(toTensor(w), { rank: R, grads: toTensor(g), scale: "unit" });
  const ba = async (x: typeof one) => matmul(await readMat(x.b), await readMat(x.a));
  assertBelow("batched = averaged", fro(sub(await ba(avg), await ba(one))) / fro(await ba(one)), 1e-4);
  await rejects(loraGaInit(toTensor(w), { rank: R }), /needs grads/);
  await rejects(loraGaInit(toTensor(w), { rank: R, grads: toTensor(transpose(g)) }), /expected \[24, 16\]/);
  await rejects(loraGaInit(toTensor(w), { rank: 9, grads: toTensor(g) }), /rank 9/);
});
