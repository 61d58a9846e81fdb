/**
 * svd against float64 one-sided Jacobi and closed forms: reconstruction, orthogonality, ordering, signs, and
 * the hard cases (rank-deficient with exact zeros, condition number 1e6, repeated singular values).
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { getBackend, tensor } from "../../mod.ts";
import { qr, svd, svdLowRank } from "../../lib/linalg/mod.ts";
import { debugLines, TEST_SEED, TestRng } from "../_helpers.ts";
import {
  at,
  colsOf,
  fro,
  gaussian,
  geomspace,
  jacobiSVD,
  largestPrincipalAngle,
  type M64,
  mat,
  matmul,
  orthError,
  randomOrthonormal,
  scaleCols,
  sub,
  transpose,
  withSpectrum,
} from "./_ref64.ts";
import { argmaxAbsCol, assertBelow, flipLike, readMat, readVec, relMaxDiff } from "./_util.ts";
import { svdRows } from "../../lib/linalg/svd.ts";
import { IncrementalPCA } from "../../lib/linalg/incremental_pca.ts";

type Device = "webgpu" | "wasm" | "cpu";

/** {@link run} with options. */
function runWith(a: M64, what: string, opts: Parameters<typeof svd>[1]) {
  return run(a, what, opts);
}

/** Runs svd on the float32 rounding of `a` and returns the factors in float64 with basic checks done. */
async function run(a: M64, what: string, opts: Parameters<typeof svd>[1] = {}, device: Device = "webgpu") {
  const t = tensor(Float32Array.from(a.data), { shape: [a.rows, a.cols], device });
  const r = await svd(t, opts);
  const k = Math.min(a.rows, a.cols);
  equal(r.u.shape.join(), `${a.rows},${k}`, `${what}: U shape`);
  equal(r.vh.shape.join(), `${k},${a.cols}`, `${what}: Vh shape`);
  equal(r.v.shape.join(), `${a.cols},${k}`, `${what}: V shape`);
  const u = await readMat(r.u);
  const s = await readVec(r.s);
  const v = await readMat(r.v);
  const a32 = mat(a.rows, a.cols, Float32Array.from(a.data));
  const rec = fro(sub(a32, matmul(scaleCols(u, s), transpose(v)))) / fro(a32);
  assertBelow(`${what}: ‖A − USVᵀ‖/‖A‖`, rec, 1e-4);
  assertBelow(`${what}: ‖UᵀU − I‖_F`, orthError(u), 1e-4);
  assertBelow(`${what}: ‖VᵀV − I‖_F`, orthError(v), 1e-4);
  for (let i = 0; i < k; i++) {
    ok(s[i] >= 0, `${what}: σ${i} = ${s[i]} is negative (TEST_SEED=${TEST_SEED})`);
    if (i > 0) ok(s[i] <= s[i - 1], `${what}: σ not descending at ${i} (TEST_SEED=${TEST_SEED})`);
  }
  return { u, s, v, a32 };
}

/** The largest-magnitude entry of every column of `m` is positive. */
function assertLargestPositive(m: M64, what: string): void {
  for (let j = 0; j < m.cols; j++) {
    ok(
      at(m, argmaxAbsCol(m, j), j) > 0,
      `${what}: column ${j} has a negative largest entry (TEST_SEED=${TEST_SEED})`,
    );
  }
}

// Both cores: the one-kernel solver (the default at these sizes) and QR-preconditioned sweeps.
const CORES = [{ fused: true }, { fused: false }] as const;

Deno.test("svd: random square, tall and wide matrices with odd sizes", async () => {
  const rng = new TestRng(101);
  for (const [m, n] of [[37, 37], [83, 29], [23, 61]]) {
    for (const core of CORES) {
      const a = gaussian(rng, m, n);
      const what = `gaussian ${m}x${n} fused=${core.fused}`;
      const { u, s, a32 } = await run(a, what, core);
      assertLargestPositive(u, what);
      const ref = jacobiSVD(a32).s;
      for (let i = 0; i < s.length; i++) {
        assertBelow(`${what}: |σ${i} − ref|/σ_max`, Math.abs(s[i] - ref[i]) / ref[0], 1e-5);
      }
    }
  }
});

Deno.test("svd: singular values and vectors match float64 on a well-separated spectrum", async () => {
  const rng = new TestRng(102);
  const sigma = geomspace(10, 1, 24); // neighbours 10% apart
  const a = withSpectrum(rng, 48, 24, sigma);
  const { u, s, v, a32 } = await run(a, "separated 48x24");
  const ref = jacobiSVD(a32);
  for (let i = 0; i < sigma.length; i++) {
    assertBelow(`σ${i} vs float64 reference`, Math.abs(s[i] - ref.s[i]) / ref.s[i], 1e-4);
    assertBelow(`σ${i} vs the constructed spectrum`, Math.abs(s[i] - sigma[i]) / sigma[i], 1e-4);
  }
  // Same sign convention applied to the reference: the vectors then agree entrywise.
  const uRef = flipLike(ref.u, ref.u);
  const vRef = flipLike(ref.v, ref.u);
  assertBelow("U vs float64 reference", relMaxDiff(u, uRef), 1e-4);
  assertBelow("V vs float64 reference", relMaxDiff(v, vRef), 1e-4);
});

for (const core of CORES) {
  Deno.test(`svd: rank-deficient, exactly zero columns and condition number 1e6 (fused: ${core.fused})`, async () => {
    const rng = new TestRng(103);
    const run = (a: M64, what: string) => runWith(a, what, core);
    // Rank 5 as a product of Gaussians.
    await run(matmul(gaussian(rng, 40, 5), gaussian(rng, 5, 22)), "rank 5, 40x22");
    // Exactly zero trailing columns: R gets zero rows, so V needs its orthonormal completion.
    const g = gaussian(rng, 30, 7);
    const z = mat(
      30,
      11,
      Float64Array.from({ length: 330 }, (_, i) => (i % 11 < 7 ? at(g, Math.floor(i / 11), i % 11) : 0)),
    );
    const { s } = await run(z, "zero columns 30x11");
    for (let i = 7; i < 11; i++) {
      equal(s[i], 0, `σ${i} of a rank-7 matrix with zero columns (TEST_SEED=${TEST_SEED})`);
    }
    // The same as a wide matrix (zero rows).
    await run(transpose(z), "zero rows 11x30");
    // Condition number 1e6, tall.
    const sigma = geomspace(1, 1e-6, 32);
    const { s: s2 } = await run(withSpectrum(rng, 56, 32, sigma), "cond 1e6 56x32");
    assertBelow("σ_max at cond 1e6", Math.abs(s2[0] - 1), 1e-5);
    assertBelow("σ_min at cond 1e6 (absolute, relative to σ_max)", Math.abs(s2[31] - 1e-6), 1e-6);
  });
}

Deno.test("svd: the one-kernel solver at its largest size (128 x 64, condition 1e6) stays within the loop budget", async () => {
  const rng = new TestRng(106);
  const sigma = geomspace(1, 1e-6, 64);
  const { s } = await run(withSpectrum(rng, 128, 64, sigma), "cond 1e6 128x64", { fused: true });
  for (let i = 0; i < 64; i++) assertBelow(`σ${i}`, Math.abs(s[i] - sigma[i]), 2e-6);
});

for (const core of CORES) {
  Deno.test(`svd: repeated singular values give the right subspaces (principal angles) (fused: ${core.fused})`, async () => {
    const rng = new TestRng(104);
    const run = (a: M64, what: string) => runWith(a, what, core);
    const sigma = [4, 4, 4, 2, 2, 1, 0.5, 0.25, 0.25, 0.25];
    const u0 = randomOrthonormal(rng, 45, 10);
    const v0 = randomOrthonormal(rng, 30, 10);
    const a = matmul(scaleCols(u0, sigma), transpose(v0));
    const { u, s, v } = await run(a, "clustered 45x30");
    for (let i = 0; i < 10; i++) assertBelow(`σ${i}`, Math.abs(s[i] - sigma[i]) / sigma[i], 1e-4);
    for (let i = 10; i < 30; i++) assertBelow(`σ${i} (zero)`, s[i], 1e-5);
    for (const [c0, c1] of [[0, 3], [3, 5], [5, 6], [6, 7], [7, 10]]) {
      assertBelow(
        `U cluster ${c0}..${c1} angle`,
        largestPrincipalAngle(colsOf(u, c0, c1), colsOf(u0, c0, c1)),
        1e-4,
      );
      assertBelow(
        `V cluster ${c0}..${c1} angle`,
        largestPrincipalAngle(colsOf(v, c0, c1), colsOf(v0, c0, c1)),
        1e-4,
      );
    }
  });
}

Deno.test("svd: four copies of each column (QR-preconditioned sweeps) on every device", async () => {
  // X = [B B B B] has X Xᵀ = 4 B Bᵀ: its singular values are 2σ(B) (float64 Jacobi on B), then 60 zeros. The
  // Householder QR of X meets columns near 1e-22 (see qr_test.ts), where U lost orthogonality (5.6e-3).
  const rng = new TestRng(108);
  const b = gaussian(rng, 150, 20);
  const x = mat(150, 80, Array.from({ length: 150 * 80 }, (_, i) => at(b, Math.floor(i / 80), i % 20)));
  const ref = jacobiSVD(mat(150, 20, Float32Array.from(b.data))).s;
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const { s } = await run(x, `${device} [B B B B] 150x80`, {}, device);
    for (let i = 0; i < 20; i++) {
      assertBelow(`${device}: |σ${i} − 2σ${i}(B)|/σ_max`, Math.abs(s[i] - 2 * ref[i]) / (2 * ref[0]), 1e-5);
    }
  }
});

Deno.test("svd: columns in equal pairs (QR-preconditioned sweeps) give orthonormal V, and U for the transpose", async () => {
  // X = [b₀ b₀ b₁ b₁ …] = B·P with PPᵀ = 2I: its singular values are √2·σ(B) (float64 Jacobi on B), then 40
  // zeros. Its QR spreads the null space over all of R, and with the default sweeps the rotations among the
  // columns at rounding level had not converged: ‖VᵀV − I‖_F was 1.7.
  const rng = new TestRng(109);
  const b = gaussian(rng, 100, 40);
  const x = mat(
    100,
    80,
    Array.from({ length: 100 * 80 }, (_, i) => at(b, Math.floor(i / 80), (i % 80) >> 1)),
  );
  const ref = jacobiSVD(mat(100, 40, Float32Array.from(b.data))).s;
  for (const device of ["cpu", "webgpu"] as const) {
    for (const [a, what] of [[x, "100x80"], [transpose(x), "80x100 (transposed)"]] as const) {
      const { s } = await run(a, `${device} pairs ${what}`, {}, device);
      for (let i = 0; i < 40; i++) {
        const err = Math.abs(s[i] - Math.SQRT2 * ref[i]) / (Math.SQRT2 * ref[0]);
        assertBelow(`${device} ${what}: |σ${i} − √2σ${i}(B)|/σ_max`, err, 1e-5);
      }
    }
  }
});

Deno.test("svd: flip 'v' convention and the convergence check give the same factorisation", async () => {
  const rng = new TestRng(105);
  const a = gaussian(rng, 20, 14);
  const plain = await run(a, "20x14 default");
  const byV = await run(a, "20x14 flip v", { flip: "v" });
  assertLargestPositive(byV.v, "flip v");
  // Each pair (u_k, v_k) is the default pair times ±1.
  for (let k = 0; k < 14; k++) {
    let dot = 0;
    for (let i = 0; i < 14; i++) dot += at(plain.v, i, k) * at(byV.v, i, k);
    assertBelow(`|v_${k}·v'_${k}| = 1`, Math.abs(Math.abs(dot) - 1), 1e-5);
  }
  // The preconditioned solver: the one-kernel one (20x14 by default) has no read-back, and refuses check.
  const checked = await run(a, "20x14 check", { check: 1, sweeps: 40, fused: false });
  for (let k = 0; k < 14; k++) {
    assertBelow(`σ${k} with check`, Math.abs(checked.s[k] - plain.s[k]), 1e-5 * plain.s[0]);
  }
});

Deno.test("svd on the cpu device", async () => {
  const rng = new TestRng(106);
  const a = gaussian(rng, 17, 11);
  const { s, a32 } = await run(a, "cpu 17x11", {}, "cpu");
  const ref = jacobiSVD(a32).s;
  for (let i = 0; i < 11; i++) assertBelow(`cpu σ${i}`, Math.abs(s[i] - ref[i]) / ref[0], 1e-5);
});

Deno.test("svd, qr and svdLowRank release their intermediates (live buffers stay flat)", async () => {
  const rng = new TestRng(107);
  const be = await getBackend("webgpu");
  const a = tensor(rng.normals(24 * 13), { shape: [24, 13] });
  await a.realize();
  const live: number[] = [];
  for (let i = 0; i < 16; i++) {
    const r = await svd(a);
    await r.s.data();
    for (const t of [r.u, r.s, r.vh]) t.dispose();
    const f = await qr(a);
    f.q.dispose();
    f.r.dispose();
    const l = await svdLowRank(a, 3, { niter: 1 });
    for (const t of [l.u, l.s, l.vh]) t.dispose();
    live.push(be.stats().liveBuffers);
  }
  // A few internal buffers go back when V8 collects their tensors, at times it chooses (seen: 4 to 10 live after a
  // round), so single counts jitter. A leak adds at least one buffer per round: the fewest live buffers over the
  // last 8 rounds would then exceed the fewest over the first 8 by 8 or more; collection timing cannot raise it.
  const early = Math.min(...live.slice(0, 8));
  const late = Math.min(...live.slice(8));
  ok(late - early <= 3, `live buffers after each round: ${live}`);
});

/** The names of the wasm launches among DEBUG lines (DEBUG 1 logs each one). */
function launchNames(lines: readonly string[]): string[] {
  return lines.flatMap((l) => /^wasm (\S+) /.exec(l)?.[1] ?? []);
}

/** The names of the wasm launches `run` makes. */
async function wasmLaunches(run: () => Promise<unknown>): Promise<string[]> {
  return launchNames(await debugLines(run));
}

/** The length of the records of each Jacobi run among DEBUG lines. */
function jacobiStrides(lines: readonly string[]): number[] {
  return lines.flatMap((l) => /^jacobi: \d+ records of (\d+),/.exec(l)?.[1] ?? []).map(Number);
}

Deno.test("svdRows without U: S and V bit for bit those of the full SVD, with fewer Q launches (tall and wide)", async () => {
  const rng = new TestRng(TEST_SEED + 71);
  const qLaunches = (names: string[]) => names.filter((l) => l.startsWith("qr_q_")).length;
  // Past the one-kernel solver's 128 rows, so the QR-preconditioned path runs. Tall: the QR's Q is U's only use;
  // wide: the orthonormal completion of (A's) U is not needed, which a zero row makes the full SVD run (the CPU
  // devices launch it only where a singular value is zero).
  for (const [m, n] of [[200, 12], [12, 200]]) {
    const a = gaussian(rng, m, n);
    if (m < n) a.data.fill(0, 0, n);
    for (const device of ["cpu", "wasm"] as const) {
      const t = tensor(Float32Array.from(a.data), { shape: [m, n], device });
      let full = await svdRows(t, { flip: "v" });
      const fullLines = await debugLines(async () => (full = await svdRows(t, { flip: "v" })));
      const all = launchNames(fullLines);
      let part = full;
      const partLines = await debugLines(async () => (part = await svdRows(t, { flip: "v" }, { noU: true })));
      const some = launchNames(partLines);
      if (m > n) {
        // The Jacobi records carry V' (to form U = Q V') only where U is wanted: 12 columns, records of 2·12 and 12.
        deepEqual(
          [jacobiStrides(fullLines), jacobiStrides(partLines)],
          [[24], [12]],
          `${m}x${n} on ${device}`,
        );
      }
      deepEqual(await part.s.data(), await full.s.data(), `${m}x${n} on ${device}: S`);
      deepEqual(await part.vRows.data(), await full.vRows.data(), `${m}x${n} on ${device}: V`);
      equal(part.uRows, part.s, "uRows is S");
      if (device === "wasm") {
        ok(qLaunches(some) < qLaunches(all), `${m}x${n}: Q launches ${qLaunches(some)} vs ${qLaunches(all)}`);
      }
    }
  }
  const t = tensor(Float32Array.from(gaussian(rng, 200, 12).data), { shape: [200, 12], device: "wasm" });
  const all = await wasmLaunches(() => svdRows(t, { flip: "v" }));
  const fit = await wasmLaunches(() => new IncrementalPCA({ nComponents: 4 }).partialFit(t));
  ok(
    qLaunches(fit) < qLaunches(all),
    `IncrementalPCA.partialFit: Q launches ${qLaunches(fit)} vs ${qLaunches(all)}`,
  );
  await rejects(svdRows(t, {}, { noU: true }), /flip "v"/);
});

Deno.test("svd: S and the Jacobi side's vectors on the wasm device are bit for bit those of the cpu device", async () => {
  // The wasm forms of the Jacobi round and the Householder steps compute what their host twins compute, in the same
  // float64 operations. The vectors from the Jacobi rotations (V of a tall matrix, U of a wide one, which is
  // factored transposed) match bit for bit where σ > 0; the others go through the devices' own matmul kernels, and
  // those of σ = 0 are completed from random vectors (randn's transcendentals differ in the last bits).
  const rng = new TestRng(TEST_SEED + 72);
  const bits = (a: ArrayLike<number>) => new Uint32Array(Float32Array.from(a).buffer);
  // Past the one-kernel solver's sizes: tall, wide, and rank-deficient (repeated columns, a zero column).
  const deficient = gaussian(rng, 150, 41);
  for (let i = 0; i < 150; i++) {
    for (let j = 20; j < 41; j++) deficient.data[i * 41 + j] = j === 30 ? 0 : at(deficient, i, j - 20);
  }
  for (const a of [gaussian(rng, 201, 37), gaussian(rng, 37, 201), deficient]) {
    const out: Uint32Array[][] = [];
    for (const device of ["cpu", "wasm"] as const) {
      const { u, s, vh } = await svd(tensor(Float32Array.from(a.data), { shape: [a.rows, a.cols], device }));
      // Rows of Vᵀ (tall) or of Uᵀ (wide), those of σ > 0 only.
      const sv = await s.data();
      const rank = sv.filter((x) => x > 1e-4 * sv[0]).length;
      const rows = a.rows >= a.cols ? vh : u.transpose();
      out.push([bits(sv), bits((await rows.data()).subarray(0, rank * Math.min(a.rows, a.cols)))]);
    }
    const what = `${a.rows}x${a.cols} (TEST_SEED=${TEST_SEED})`;
    deepEqual(out[1][0], out[0][0], `${what}: S`);
    deepEqual(out[1][1], out[0][1], `${what}: ${a.rows >= a.cols ? "V" : "U"} where σ > 0`);
  }
});
