/**
 * LoRAM: Eq. 11's magnitude identity ν[B·A] = Q[r]·ν[W] for the logarithmic, exact and fixed gains, the DST-I
 * basis (closed form, orthonormal columns), the seeded random-orthogonal and Gaussian bases, tracking mode, and the
 * degenerate rank-1 case (A = B = 0, one warning).
 */
import { deepEqual, equal, notDeepEqual, ok, rejects } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import type { F32 } from "../../lib/init/types.ts";
import { loramInit, loramLogGain } from "../../lib/init/loram.ts";
import { pissaInit } from "../../lib/init/pissa.ts";
import { INIT_METHODS } from "../../lib/init/mod.ts";
import { dstBasis } from "../../lib/linalg/dst.ts";
import { TestRng } from "../_helpers.ts";
import {
  fro,
  geomspace,
  identity,
  type M64,
  matmul,
  randomOrthonormal,
  scaleCols,
  sub,
  transpose,
} from "../linalg/_ref64.ts";
import { assertBelow, readMat } from "../linalg/_util.ts";

/** ν[X] = ‖X‖_F² / #entries. */
function nu(x: M64): number {
  return fro(x) ** 2 / (x.rows * x.cols);
}

function spectral(rng: TestRng, m: number, n: number, s: Float64Array): { w: M64; t: F32 } {
  const w = matmul(
    scaleCols(randomOrthonormal(rng, m, s.length), s),
    transpose(randomOrthonormal(rng, n, s.length)),
  );
  return { w, t: tensor(Float32Array.from(w.data), { shape: [m, n] }) as unknown as F32 };
}

/** ‖XᵀX − c·I‖_F / c. */
function gramError(x: M64, c: number): number {
  const g = matmul(transpose(x), x);
  const id = identity(x.cols);
  return fro(sub(g, { ...id, data: id.data.map((v) => v * c) })) / c;
}

Deno.test("loram: DST-I basis has the closed form of Eq. 12 and orthonormal columns", async () => {
  const [n, r] = [45, 7];
  const phi = await readMat(await dstBasis(n, r));
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < r; j++) {
      const want = Math.sqrt(2 / (n + 1)) * Math.sin(((i + 1) * (j + 1) * Math.PI) / (n + 1));
      worst = Math.max(worst, Math.abs(phi.data[i * r + j] - want));
    }
  }
  assertBelow("max |Φ − closed form|", worst, 1e-6);
  assertBelow("‖ΦᵀΦ − I‖_F", gramError(phi, 1), 1e-5);
});

Deno.test("loram: ν[B·A] = Q[r]·ν[W] with the logarithmic gain, on DST bases (Eq. 11)", async () => {
  const rng = new TestRng(701);
  const [m, n, r] = [48, 32, 8];
  const { w } = spectral(rng, m, n, geomspace(5, 0.2, n));
  const t = tensor(Float32Array.from(w.data), { shape: [m, n] }) as unknown as F32;
  const init = await loramInit(t, { rank: r, alpha: r });
  const q = Math.log(r) / Math.log(Math.min(m, n));
  assertBelow("|info.gain − ln r / ln min(n, m)|", Math.abs((init.info!.gain as number) - q), 1e-12);
  equal(loramLogGain(r, m, n), q);
  const b = await readMat(init.b);
  const a = await readMat(init.a);
  const ba = matmul(b, a);
  assertBelow("|ν[BA] − Q·ν[W]| / (Q·ν[W])", Math.abs(nu(ba) - q * nu(w)) / (q * nu(w)), 1e-5);
  // B = β·Φ_n and Aᵀ = β·Φ_m with β⁴ = Q‖W‖²/r: the columns are orthogonal with squared norm β².
  const beta2 = Math.sqrt((q * fro(w) ** 2) / r);
  assertBelow("‖BᵀB − β²I‖/β²", gramError(b, beta2), 1e-5);
  assertBelow("‖AAᵀ − β²I‖/β²", gramError(transpose(a), beta2), 1e-5);
  const phiN = await readMat(await dstBasis(m, r));
  assertBelow(
    "‖B − β·Φ_n‖/β",
    fro(sub(b, { ...phiN, data: phiN.data.map((v) => v * Math.sqrt(beta2)) })) / Math.sqrt(beta2),
    1e-5,
  );
  deepEqual(init.info!.basis, "dst");
});

Deno.test("loram: exact spectral gain (Eq. 10) and a fixed gain", async () => {
  const rng = new TestRng(702);
  const [m, n, r] = [24, 40, 5];
  const s = geomspace(3, 0.1, m);
  const { w, t } = spectral(rng, m, n, s);
  const head = s.slice(0, r).reduce((acc, x) => acc + x, 0);
  const q = head ** 2 / (r * s.reduce((acc, x) => acc + x * x, 0));
  const exact = await loramInit(t, { rank: r, gain: "exact" });
  assertBelow("|gain − (Σ_{i≤r} σ_i)²/(r·Σσ²)| / Q", Math.abs((exact.info!.gain as number) - q) / q, 1e-5);
  const ba = matmul(await readMat(exact.b), await readMat(exact.a));
  assertBelow("|ν[BA] − Q·ν[W]| / (Q·ν[W])", Math.abs(nu(ba) - q * nu(w)) / (q * nu(w)), 1e-4);
  const g = 0.1 + 0.8 * rng.next();
  const fixed = await loramInit(t, { rank: r, gain: g, alpha: 2 * r });
  equal(fixed.scale, 2);
  const bf = matmul(await readMat(fixed.b), await readMat(fixed.a));
  assertBelow("fixed gain: |ν[BA] − g·ν[W]| / (g·ν[W])", Math.abs(nu(bf) - g * nu(w)) / (g * nu(w)), 1e-5);
  // s ≠ 1: β is unchanged and the base subtracts s·B·A.
  const base = await readMat(fixed.base!);
  assertBelow(
    "‖base − (W − 2·B·A)‖/‖W‖",
    fro(sub(base, sub(w, { ...bf, data: bf.data.map((v) => 2 * v) }))) / fro(w),
    1e-5,
  );
});

Deno.test("loram: random-orthogonal basis is seeded, orthonormal and keeps Eq. 11", async () => {
  const rng = new TestRng(703);
  const [m, n, r] = [36, 28, 6];
  const { w, t } = spectral(rng, m, n, geomspace(2, 0.5, n));
  const seed = rng.int(0, 1 << 20);
  const one = await loramInit(t, { rank: r, basis: "random-orthogonal", seed });
  const again = await loramInit(t, { rank: r, basis: "random-orthogonal", seed });
  const other = await loramInit(t, { rank: r, basis: "random-orthogonal", seed: seed + 1 });
  deepEqual(await again.b.data(), await one.b.data());
  notDeepEqual(await other.b.data(), await one.b.data());
  const b = await readMat(one.b);
  const a = await readMat(one.a);
  const q = Math.log(r) / Math.log(Math.min(m, n));
  const beta2 = Math.sqrt((q * fro(w) ** 2) / r);
  assertBelow("‖BᵀB − β²I‖/β²", gramError(b, beta2), 1e-5);
  assertBelow("‖AAᵀ − β²I‖/β²", gramError(transpose(a), beta2), 1e-5);
  const ba = matmul(b, a);
  assertBelow("|ν[BA] − Q·ν[W]| / (Q·ν[W])", Math.abs(nu(ba) - q * nu(w)) / (q * nu(w)), 1e-5);
});

Deno.test("loram: Gaussian basis is seeded, not orthonormalised, and keeps Eq. 11 exactly", async () => {
  const rng = new TestRng(707);
  const [m, n, r] = [128, 96, 16];
  const { w, t } = spectral(rng, m, n, geomspace(2, 0.3, n));
  const seed = rng.int(0, 1 << 20);
  const q = 0.1 + 0.5 * rng.next();
  const one = await loramInit(t, { rank: r, alpha: 2 * r, basis: "gaussian", gain: q, seed });
  const again = await loramInit(t, { rank: r, alpha: 2 * r, basis: "gaussian", gain: q, seed });
  const other = await loramInit(t, { rank: r, alpha: 2 * r, basis: "gaussian", gain: q, seed: seed + 1 });
  deepEqual(await again.b.data(), await one.b.data());
  notDeepEqual(await other.b.data(), await one.b.data());
  equal(one.info!.basis, "gaussian");
  const b = await readMat(one.b);
  const a = await readMat(one.a);
  const ba = matmul(b, a);
  // Eq. 11 with ν[Φ_n Φ_mᵀ] of the drawn bases: ν[B·A] = Q·ν[W] to float32 rounding.
  assertBelow("|ν[BA] − Q·ν[W]| / (Q·ν[W])", Math.abs(nu(ba) - q * nu(w)) / (q * nu(w)), 1e-5);
  // W_res = W − s·B·A (s = 2).
  const base = await readMat(one.base!);
  assertBelow(
    "‖base − (W − 2BA)‖/‖W‖",
    fro(sub(base, sub(w, { ...ba, data: ba.data.map((v) => 2 * v) }))) / fro(w),
    1e-5,
  );
  // B = β·G_n, Aᵀ = β·G_m with i.i.d. N(0, 1/n), N(0, 1/m) entries: ‖B‖² and ‖A‖² agree up to χ² noise
  // (relative std √(2/(nr)) each), and the columns are far from orthogonal (‖GᵀG − I‖_F ≈ r/√n).
  const ratio = fro(b) ** 2 / fro(a) ** 2;
  assertBelow(
    "|‖B‖²/‖A‖² − 1| / (combined std)",
    Math.abs(ratio - 1) / Math.sqrt(2 / (m * r) + 2 / (n * r)),
    5,
  );
  const beta2 = fro(b) ** 2 / r;
  ok(gramError(b, beta2) > 0.3, `‖BᵀB − β²I‖/β² = ${gramError(b, beta2)}: not orthonormalised`);
  // Gaussian entries: excess kurtosis near 0 (standard error √(24/N)).
  const xs = Array.from(b.data);
  const mean = xs.reduce((s, v) => s + v, 0) / xs.length;
  const m2 = xs.reduce((s, v) => s + (v - mean) ** 2, 0) / xs.length;
  const m4 = xs.reduce((s, v) => s + (v - mean) ** 4, 0) / xs.length;
  assertBelow("|excess kurtosis| / √(24/N)", Math.abs(m4 / (m2 * m2) - 3) / Math.sqrt(24 / xs.length), 5);
  // Tracking mode with the Gaussian basis still matches the reference's ν[B·A].
  const tracked = await loramInit(t, { rank: r, basis: "gaussian", trackingMode: "olora", seed });
  const ref = await INIT_METHODS.olora.init(t, { rank: r });
  const want = nu(matmul(await readMat(ref.b), await readMat(ref.a)));
  const got = nu(matmul(await readMat(tracked.b), await readMat(tracked.a)));
  assertBelow("tracking: |ν[BA] − ν[B_olora A_olora]| / ν", Math.abs(got - want) / want, 1e-4);
});

Deno.test("loram: tracking mode matches ν[B·A] of the reference init (PiSSA: Σ_{i≤r} σ_i²/(s²·nm))", async () => {
  const rng = new TestRng(704);
  const [m, n, r] = [40, 30, 4];
  const s = geomspace(4, 0.3, n);
  const { t } = spectral(rng, m, n, s);
  const alpha = 2 * r; // s = 2
  const init = await loramInit(t, { rank: r, alpha, trackingMode: "pissa" });
  equal(init.info!.trackingMode, "pissa");
  const want = s.slice(0, r).reduce((acc, x) => acc + x * x, 0) / (4 * m * n);
  const got = nu(matmul(await readMat(init.b), await readMat(init.a)));
  assertBelow("|ν[BA] − Σσ²/(s²nm)| / ν", Math.abs(got - want) / want, 1e-4);
  const ref = await pissaInit(t, { rank: r, alpha });
  const nuRef = nu(matmul(await readMat(ref.b), await readMat(ref.a)));
  assertBelow("|ν[BA] − ν[B_pissa A_pissa]| / ν", Math.abs(got - nuRef) / nuRef, 1e-4);
});

Deno.test("loram: rank 1 with the logarithmic gain is degenerate (A = B = 0) and warns once", async () => {
  const rng = new TestRng(705);
  const { t } = spectral(rng, 16, 12, geomspace(1, 0.1, 12));
  const warnings: unknown[][] = [];
  const original = console.warn;
  console.warn = (...args: unknown[]) => warnings.push(args);
  try {
    const one = await loramInit(t, { rank: 1 });
    const two = await loramInit(t, { rank: 1 });
    equal(one.info!.gain, 0);
    for (const x of [one.a, one.b, two.a, two.b]) {
      equal(((await x.data()) as Float32Array).every((v) => v === 0), true, "A = B = 0");
    }
    deepEqual(await one.base!.data(), await t.data(), "base = W");
    equal(warnings.length, 1, "one warning");
    equal(String(warnings[0][0]).includes("rank 1"), true);
    // The exact gain is not degenerate at rank 1.
    const exact = await loramInit(t, { rank: 1, gain: "exact" });
    equal(((await exact.b.data()) as Float32Array).some((v) => v !== 0), true);
  } finally {
    console.warn = original;
  }
});

Deno.test("loram: tracking MiLoRA, OLoRA, CorDA and LoRA-GA matches each reference's ν[B·A]", async () => {
  const rng = new TestRng(706);
  const [m, n, r] = [20, 16, 3];
  const { t } = spectral(rng, m, n, geomspace(3, 0.2, n));
  const mk = (shape: number[], scale = 1) =>
    tensor(rng.normals(shape.reduce((a, b) => a * b, 1), scale), { shape }) as unknown as F32;
  const data = { activations: mk([2, 30, n]), grads: mk([m, 4]).matmul(mk([4, n])) as F32 };
  const common = { rank: r, alpha: 6, seed: 2 };
  for (const mode of ["milora", "olora", "corda", "lora-ga"] as const) {
    const init = await loramInit(t, { ...common, ...data, trackingMode: mode });
    const ref = await INIT_METHODS[mode].init(t, { ...common, ...data });
    const want = nu(matmul(await readMat(ref.b), await readMat(ref.a)));
    const got = nu(matmul(await readMat(init.b), await readMat(init.a)));
    assertBelow(`${mode}: |ν[BA] − ν[B_ref A_ref]| / ν`, Math.abs(got - want) / want, 1e-4);
  }
  await rejects(loramInit(t, { ...common, trackingMode: "corda" }), /activations/);
});
