/**
 * CNTLoRA: the sign-invariant constraint checks of each mode (METHODS.md §11), the S-mode eigenbasis convention,
 * rank-deficient batches, Eq. 18 and the SVD/QR splits against float64, the scale/offset options, and VAS.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { cntloraInit, cntloraInitLayers, cntloraTarget, vasRanks } from "../../lib/init/cntlora.ts";
import { INIT_METHODS, type InitLayer } from "../../lib/init/mod.ts";
import { assertClose, debugLines, TestRng } from "../_helpers.ts";
import {
  at,
  colsOf,
  fro,
  gaussian,
  householderQR,
  identity,
  jacobiEigh,
  jacobiSVD,
  type M64,
  mat,
  matmul,
  randomOrthonormal,
  scaleCols,
  sub,
  transpose,
} from "../linalg/_ref64.ts";
import { assertBelow, flipLike, readMat } from "../linalg/_util.ts";

type F = Tensor<Shape, "f32">;

function f32(m: M64): M64 {
  return mat(m.rows, m.cols, Float32Array.from(m.data));
}

function toTensor(m: M64): F {
  return tensor(Float32Array.from(m.data), { shape: [m.rows, m.cols] }) as unknown as F;
}

/** Relative Frobenius error. */
function rel(got: M64, want: M64): number {
  return fro(sub(got, want)) / fro(want);
}

/** The paper's X Xᵀ for a batch given as rows `[T, d]`. */
function gramOf(batch: M64): M64 {
  return matmul(transpose(batch), batch);
}

/** Inverse of a symmetric positive definite matrix in float64. */
function spdInverse(g: M64): M64 {
  const { values, vectors } = jacobiEigh(g);
  return matmul(scaleCols(vectors, Array.from(values, (v) => 1 / v)), transpose(vectors));
}

const [K, D, T] = [6, 8, 24];

Deno.test("cntlora X: W_tar·XXᵀ = W_src (b ≥ d); rank-deficient batches keep the range", async () => {
  const rng = new TestRng(901);
  const w = f32(gaussian(rng, K, D, 0.5));
  const x = f32(gaussian(rng, T, D));
  const wTar = await readMat(await cntloraTarget(toTensor(w), toTensor(x), { mode: "x" }));
  assertBelow("‖W_tar XXᵀ − W_src‖/‖W_src‖", rel(matmul(wTar, gramOf(x)), w), 1e-4);
  // b = 5 < d: XXᵀ has rank 5; W_tar·XXᵀ = W_src·Π with Π the projector on the batch's row space.
  const xs = f32(gaussian(rng, 5, D));
  const ws = await readMat(await cntloraTarget(toTensor(w), toTensor(xs), { mode: "x" }));
  const q = householderQR(transpose(xs)).q; // d × 5, spans the rows of the batch
  assertBelow(
    "rank-deficient: W_tar XXᵀ = W Π",
    rel(matmul(ws, gramOf(xs)), matmul(w, matmul(q, transpose(q)))),
    1e-3,
  );
  // ... and W_tar has no component outside that range (the pseudo-inverse drops the null space).
  assertBelow("W_tar (I − Π) = 0", fro(sub(ws, matmul(ws, matmul(q, transpose(q))))) / fro(ws), 1e-4);
});

Deno.test("cntlora S: W_tar XXᵀ W_tarᵀ = W_src W_srcᵀ, and P's sign convention", async () => {
  const rng = new TestRng(902);
  const w = f32(gaussian(rng, K, D, 0.5));
  const x = f32(gaussian(rng, T, D));
  const wTar = await readMat(await cntloraTarget(toTensor(w), toTensor(x), { mode: "s" }));
  const lhs = matmul(matmul(wTar, gramOf(x)), transpose(wTar));
  assertBelow("‖W_tar XXᵀ W_tarᵀ − W Wᵀ‖/‖W Wᵀ‖", rel(lhs, matmul(w, transpose(w))), 1e-4);
  // Literal form: W_src D^{-1/2} Pᵀ with P descending and the largest-|·| entry of each column positive.
  const { values, vectors } = jacobiEigh(gramOf(x)); // ascending
  const order = Array.from(values, (_, i) => D - 1 - i);
  const desc = mat(
    D,
    D,
    Float64Array.from({ length: D * D }, (_, i) => at(vectors, Math.floor(i / D), order[i % D])),
  );
  const p = flipLike(desc, desc);
  const want = matmul(scaleCols(w, order.map((j) => 1 / Math.sqrt(values[j]))), transpose(p));
  assertBelow("W_tar = W D^{-1/2} Pᵀ", rel(wTar, want), 1e-3);
});

Deno.test("cntlora Sh: W_tar (W_srcᵀ − XXᵀ W_srcᵀ) = C for k ≤ d", async () => {
  const rng = new TestRng(903);
  const w = f32(gaussian(rng, K, D, 0.5));
  const x = f32(gaussian(rng, T, D, 0.3));
  for (const c of [1, 10]) {
    const wTar = await readMat(await cntloraTarget(toTensor(w), toTensor(x), { mode: "sh", c }));
    const shifted = sub(transpose(w), matmul(gramOf(x), transpose(w)));
    const got = matmul(wTar, shifted);
    const want = mat(K, K, identity(K).data.map((v) => v * c));
    assertBelow(`c = ${c}: ‖W_tar(Wᵀ − XXᵀWᵀ) − cI‖/‖cI‖`, rel(got, want), 1e-4);
  }
});

Deno.test("cntlora Sh with a Gaussian C: W_tar (W_srcᵀ − XXᵀ W_srcᵀ) = C, C seeded with N(0, 1/k) entries", async () => {
  const rng = new TestRng(907);
  const [k, d] = [24, 32];
  const w = f32(gaussian(rng, k, d, 0.5));
  const x = f32(gaussian(rng, 2 * d, d, 0.2));
  const shifted = sub(transpose(w), matmul(gramOf(x), transpose(w)));
  const seed = rng.int(0, 1 << 20);
  const cOf = async (s: number) =>
    matmul(
      await readMat(await cntloraTarget(toTensor(w), toTensor(x), { mode: "sh", c: "gaussian", seed: s })),
      shifted,
    );
  const c = await cOf(seed);
  // Not c·I: a dense matrix whose k² entries have mean 0 and variance 1/k (4 standard errors of each estimate).
  const n = k * k;
  const mean = c.data.reduce((a, v) => a + v, 0) / n;
  const variance = c.data.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1);
  assertBelow("|mean of C|·√(k²)·√k", Math.abs(mean) * Math.sqrt(n * k), 4);
  assertBelow("|k·var(C) − 1| / √(2/(k²))", Math.abs(k * variance - 1) / Math.sqrt(2 / n), 4);
  const offDiagonal = c.data.filter((_, i) => i % (k + 1) !== 0).map(Math.abs);
  ok(Math.max(...offDiagonal) > 0.1, "C is dense, not diagonal");
  // The same seed gives the same C (to the float32 precision of the pseudo-inverse), another seed another C.
  assertBelow("‖C(seed) − C(seed)‖/‖C‖", rel(await cOf(seed), c), 1e-4);
  ok(rel(await cOf(seed + 1), c) > 0.5, "another seed, another C");
  // Through the registry: every layer draws its own C, and the option reaches the target.
  const layers = ["q", "v"].map((name) => ({
    name,
    weight: toTensor(w),
    data: { activations: toTensor(x) },
  }));
  const inits = await cntloraInitLayers(layers, { rank: 2, mode: "sh", c: "gaussian", seed });
  const [q, v] = [inits.get("q")!, inits.get("v")!];
  ok(rel(await readMat(q.b), await readMat(v.b)) > 1e-2, "two layers, two Gaussian C");
  await rejects(
    cntloraInit(toTensor(w), { rank: 2, mode: "sh", c: Infinity, activations: toTensor(x) }),
    /cntlora: option "c" must be one of the accepted forms, got Infinity/,
  );
});

Deno.test("cntlora: Eq. 18 averaging and the SVD split against float64; scale, offset and QR options", async () => {
  const rng = new TestRng(904);
  const r = 2;
  const w = f32(gaussian(rng, K, D, 0.5));
  const batches = [f32(gaussian(rng, T, D)), f32(gaussian(rng, T, D))];
  const acts = tensor(Float32Array.from([...batches[0].data, ...batches[1].data]), {
    shape: [2, T, D],
  }) as unknown as F;
  // Float64 reference: W_est = (W + Σ_j W G_j⁻¹)/3, ΔW = W_est − W.
  let sum = w;
  for (const b of batches) {
    sum = mat(
      K,
      D,
      sum.data.map((v, i) => v + matmul(w, spdInverse(gramOf(b))).data[i]),
    );
  }
  const delta = sub(mat(K, D, sum.data.map((v) => v / 3)), w);
  const ref = jacobiSVD(delta);
  const deltaR = matmul(scaleCols(colsOf(ref.u, 0, r), ref.s.slice(0, r)), transpose(colsOf(ref.v, 0, r)));
  const res = await cntloraInit(toTensor(w), { rank: r, alpha: 4, activations: acts, mode: "x", p: 0.25 });
  equal(res.base, undefined, "the base weight is untouched");
  equal(res.scale, 2);
  const a = await readMat(res.a), b = await readMat(res.b);
  assertBelow("B·A = ΔW_r", rel(matmul(b, a), deltaR), 1e-3);
  // p = 0.25: BᵀB = S^{2(1−p)}, AAᵀ = S^{2p}.
  const btb = matmul(transpose(b), b), aat = matmul(a, transpose(a));
  for (let i = 0; i < r; i++) {
    assertBelow(`BᵀB[${i}]`, Math.abs(at(btb, i, i) / ref.s[i] ** 1.5 - 1), 1e-3);
    assertBelow(`AAᵀ[${i}]`, Math.abs(at(aat, i, i) / ref.s[i] ** 0.5 - 1), 1e-3);
  }
  assertClose((res.info!.singularValues as number[]).slice(0, r), ref.s.slice(0, r), { rtol: 1e-3, atol: 0 });
  // compensateScale: s·B·A = ΔW_r; offset: base + s·B·A = W.
  const comp = await cntloraInit(toTensor(w), {
    rank: r,
    alpha: 4,
    activations: acts,
    compensateScale: true,
    offset: true,
  });
  const sba = matmul(await readMat(comp.b), await readMat(comp.a));
  assertBelow("s·B·A = ΔW_r", rel(mat(K, D, sba.data.map((v) => v * comp.scale)), deltaR), 1e-3);
  const base = await readMat(comp.base!);
  assertClose(base.data.map((v, i) => v + comp.scale * sba.data[i]), w.data, { rtol: 1e-5, atol: 1e-5 });
  // QR split: B = Q_r (orthonormal), B·A = Q_r Q_rᵀ ΔW with span(Q_r) = span(ΔW[:, :r]).
  const qrRes = await cntloraInit(toTensor(w), { rank: r, activations: acts, split: "qr" });
  const qb = await readMat(qrRes.b);
  assertBelow("QᵀQ = I", fro(sub(matmul(transpose(qb), qb), identity(r))), 1e-4);
  const q0 = householderQR(colsOf(delta, 0, r)).q;
  const proj = matmul(matmul(q0, transpose(q0)), delta);
  assertBelow("QR split: B·A = Π ΔW", rel(matmul(qb, await readMat(qrRes.a)), proj), 1e-3);
});

Deno.test("cntlora VAS: ranks follow the pooled relative variances and spend the budget", async () => {
  const rng = new TestRng(905);
  const d = 8;
  // Activations √2·I give XXᵀ = 2I in mode X, so ΔW = (W + W/2)/2 − W = −W/4: the spectrum of ΔW is W's.
  const acts = toTensor(mat(d, d, identity(d).data.map((v) => v * Math.SQRT2)));
  const u = randomOrthonormal(rng, 6, 2), v = randomOrthonormal(rng, d, 2);
  const rank1 = matmul(colsOf(u, 0, 1), transpose(colsOf(v, 0, 1))); // relative variances [1]
  const rank2 = matmul(scaleCols(u, [Math.sqrt(0.6), Math.sqrt(0.4)]), transpose(v)); // [0.6, 0.4]
  const flat = transpose(randomOrthonormal(rng, d, 6)); // six equal singular values: 1/6 each
  const layers: InitLayer[] = [
    { name: "flat", weight: toTensor(flat), data: { activations: acts } },
    { name: "rank2", weight: toTensor(rank2), data: { activations: acts } },
    { name: "rank1", weight: toTensor(rank1), data: { activations: acts } },
  ];
  const res = await cntloraInitLayers(layers, { rank: 1, alpha: 2, vas: true });
  deepEqual([...res].map(([n, i]) => [n, i.rank]), [["flat", 0], ["rank2", 2], ["rank1", 1]]);
  const f = res.get("flat")!;
  deepEqual([f.a.shape, f.b.shape, f.scale], [[0, d], [6, 0], 0], "rank 0: no adapter");
  equal(res.get("rank2")!.scale, 1, "alpha kept: s = alpha/rank_i");
  // A larger budget reaches the second flat layer.
  const twin = await cntloraInitLayers(
    [{ name: "a", weight: toTensor(flat), data: { activations: acts } }, {
      name: "b",
      weight: toTensor(flat),
      data: { activations: acts },
    }],
    { rank: 1, vas: true, vasBudget: 3 },
  );
  // The two layers' singular values are equal only up to float32 noise, so which one gets the third rank is
  // not fixed; the budget is. Exact ties are checked on vasRanks directly.
  equal([...twin.values()].reduce((a, i) => a + i.rank, 0), 3);
  deepEqual(vasRanks([[1, 1], [1, 1]], 3), [2, 1]);
  deepEqual(vasRanks([[3, 1], [2, 2]], 2, "literal"), [1, 1]); // 9/4 and 4/4 beat 1/4
  await rejects(cntloraInitLayers(layers, { rank: 1, vas: true, split: "qr" }), /split "svd"/);
});

Deno.test("cntlora: registry wiring and errors", async () => {
  const rng = new TestRng(906);
  const w = toTensor(f32(gaussian(rng, K, D, 0.5)));
  const acts = toTensor(f32(gaussian(rng, T, D)));
  const m = INIT_METHODS.cntlora;
  equal(m.kind, "target");
  const viaRegistry = await m.initLayers!([{ name: "l", weight: w, data: { activations: acts } }], {
    rank: 2,
    alpha: 2,
    seed: 0,
    mode: "sh",
    vas: true,
  });
  equal(viaRegistry.get("l")!.rank, 2);
  await rejects(m.init(w, { rank: 2, activations: acts, mode: "y" }), /mode/);
  await rejects(cntloraInit(w, { rank: 2 }), /needs activations/);
  await rejects(cntloraInit(w, { rank: 2, activations: toTensor(f32(gaussian(rng, T, D + 1))) }), /expected/);
  ok(m.needs.includes("activations"));
});

Deno.test("cntlora gram: mean divides XXᵀ by the token count in every mode (float64), sum shrinks W_tar with many tokens", async () => {
  const rng = new TestRng(908);
  const w = f32(gaussian(rng, K, D, 0.5));
  const x = f32(gaussian(rng, T, D, 0.7));
  const cov = mat(D, D, gramOf(x).data.map((v) => v / T)); // XXᵀ/b
  const target = async (mode: "x" | "s" | "sh", gram: "sum" | "mean") =>
    await readMat(await cntloraTarget(toTensor(w), toTensor(x), { mode, gram }));
  const xMean = await target("x", "mean");
  assertBelow("X, mean: ‖W_tar·XXᵀ/b − W‖/‖W‖", rel(matmul(xMean, cov), w), 1e-4);
  // Closed form: (XXᵀ/b)^{-1} = b·(XXᵀ)^{-1}, so the mean target is b times the literal one.
  const xSum = await target("x", "sum");
  assertBelow("X: W_tar(mean) = b·W_tar(sum)", rel(xMean, mat(K, D, xSum.data.map((v) => v * T))), 1e-4);
  const sMean = await target("s", "mean");
  assertBelow(
    "S, mean: ‖W_tar (XXᵀ/b) W_tarᵀ − W Wᵀ‖/‖W Wᵀ‖",
    rel(matmul(matmul(sMean, cov), transpose(sMean)), matmul(w, transpose(w))),
    1e-4,
  );
  const shMean = await target("sh", "mean");
  const shifted = sub(transpose(w), matmul(cov, transpose(w)));
  assertBelow("Sh, mean: ‖W_tar (Wᵀ − (XXᵀ/b) Wᵀ) − I‖/‖I‖", rel(matmul(shMean, shifted), identity(K)), 1e-4);
  ok(rel(shMean, await target("sh", "sum")) > 1e-2, "the shift mode's target depends on the Gram's scale");
  // Many whitened tokens: the literal Gram makes W(XXᵀ)^{-1} ≈ W/b → 0, so ΔW ≈ −NB/(NB+1)·W (here 3 batches of
  // b = 50·d tokens: the remainder is about ‖W‖/b); the mean Gram keeps W_tar ≈ W, so ΔW stays small.
  const b = 50 * D;
  const acts = tensor(Float32Array.from(gaussian(rng, 3 * b, D).data), { shape: [3, b, D] }) as unknown as F;
  for (const gram of ["sum", "mean"] as const) {
    const init = await cntloraInit(toTensor(w), { rank: K, mode: "x", gram, activations: acts });
    const delta = matmul(await readMat(init.b), await readMat(init.a)); // rank K = d_out: all of ΔW
    const size = fro(delta) / fro(w);
    if (gram === "sum") {
      assertBelow("sum: ‖ΔW + 3/4·W‖/‖W‖", rel(delta, mat(K, D, w.data.map((v) => -0.75 * v))), 0.02);
    } else {
      assertBelow("mean: ‖ΔW‖/‖W‖", size, 0.3);
      ok(size > 1e-3, `mean: ΔW is not zero (${size})`);
    }
    equal(init.info!.gram, gram);
  }
  await rejects(
    INIT_METHODS.cntlora.init(toTensor(w), { rank: 2, activations: toTensor(x), gram: "max" }),
    /gram/,
  );
});

Deno.test("cntlora relativeNorm: ‖s·B·A‖_F = relativeNorm·‖W‖_F per layer, direction and VAS ranks kept", async () => {
  const rng = new TestRng(909);
  const layers: InitLayer[] = [0, 1].map((i) => ({
    name: `l${i}`,
    weight: toTensor(f32(gaussian(rng, K, D, 0.3 + i))),
    data: { activations: toTensor(f32(gaussian(rng, T, D))) },
  }));
  const wanted = 0.05 + 0.3 * rng.next();
  for (const vas of [false, true]) {
    const free = await cntloraInitLayers(layers, { rank: 3, alpha: 6, vas });
    const held = await cntloraInitLayers(layers, { rank: 3, alpha: 6, vas, relativeNorm: wanted });
    for (const [i, l] of layers.entries()) {
      const f = free.get(`l${i}`)!, h = held.get(`l${i}`)!;
      equal(h.rank, f.rank, "VAS allocates on ΔW's spectrum, before the rescaling");
      if (h.rank === 0) continue;
      const ba = matmul(await readMat(h.b), await readMat(h.a));
      const w = await readMat(l.weight);
      assertBelow(
        `${l.name}: |‖s·B·A‖/‖W‖ − target|/target`,
        Math.abs((h.scale * fro(ba)) / fro(w) / wanted - 1),
        1e-5,
      );
      const ref = matmul(await readMat(f.b), await readMat(f.a));
      const cos = ba.data.reduce((s, v, k) => s + v * ref.data[k], 0) / (fro(ba) * fro(ref));
      assertBelow(`${l.name}: 1 − cos(B·A, ΔW_r)`, 1 - cos, 1e-5);
    }
  }
  await rejects(cntloraInitLayers(layers, { rank: 2, relativeNorm: 0 }), /relativeNorm/);
  await rejects(cntloraInitLayers(layers, { rank: 2, relativeNorm: -1 }), /relativeNorm/);
});

Deno.test("cntlora: layers that read one input decompose each of its batches once, with the results of each layer alone", async () => {
  const rng = new TestRng(911);
  // 200 tokens of 8 features: the batch SVD goes through the Jacobi sweeps, which log one line each at DEBUG 1.
  const acts = tensor(Float32Array.from(gaussian(rng, 2 * 200, D).data), {
    shape: [2, 200, D],
  }) as unknown as F;
  const layers: InitLayer[] = ["q", "k", "v"].map((name) => ({
    name,
    weight: toTensor(f32(gaussian(rng, K, D, 0.5))),
    data: { activations: acts },
  }));
  const sweeps = async (run: () => Promise<unknown>) =>
    (await debugLines(run)).filter((l) => l.startsWith("jacobi:")).length;
  let shared = new Map<string, Awaited<ReturnType<typeof cntloraInit>>>();
  equal(
    await sweeps(async () => (shared = await cntloraInitLayers(layers, { rank: 2 }))),
    2,
    "one SVD per batch",
  );
  for (const l of layers) {
    const alone = (await cntloraInitLayers([l], { rank: 2 })).get(l.name)!;
    const got = shared.get(l.name)!;
    deepEqual(await got.a.data(), await alone.a.data(), `${l.name}: A`);
    deepEqual(await got.b.data(), await alone.b.data(), `${l.name}: B`);
  }
});
