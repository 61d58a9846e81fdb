/** qr against a float64 Householder QR with LAPACK's conventions, on both devices. */
import { equal } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { qr } from "../../lib/linalg/mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";
import { at, fro, gaussian, householderQR, type M64, mat, matmul, orthError, sub } from "./_ref64.ts";
import { assertBelow, readMat, relMaxDiff } from "./_util.ts";

async function check(a: M64, what: string, device: "webgpu" | "cpu" = "webgpu"): Promise<void> {
  const a32 = mat(a.rows, a.cols, Float32Array.from(a.data));
  const { q, r } = await qr(tensor(Float32Array.from(a.data), { shape: [a.rows, a.cols], device }));
  const k = Math.min(a.rows, a.cols);
  equal(q.shape.join(), `${a.rows},${k}`, `${what}: Q shape`);
  equal(r.shape.join(), `${k},${a.cols}`, `${what}: R shape`);
  const qm = await readMat(q);
  const rm = await readMat(r);
  assertBelow(`${what}: ‖QᵀQ − I‖_F`, orthError(qm), 1e-5);
  assertBelow(`${what}: ‖A − QR‖/‖A‖`, fro(sub(a32, matmul(qm, rm))) / fro(a32), 1e-5);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < i; j++) {
      equal(at(rm, i, j), 0, `${what}: R[${i},${j}] below the diagonal (TEST_SEED=${TEST_SEED})`);
    }
  }
  // LAPACK's convention makes the factorisation of a full-rank matrix unique: compare with float64
  // geqrf/orgqr.
  const ref = householderQR(a32);
  assertBelow(`${what}: R vs float64 reference`, relMaxDiff(rm, ref.r), 1e-4);
  assertBelow(`${what}: Q vs float64 reference`, relMaxDiff(qm, ref.q), 1e-3);
}

Deno.test("qr: tall, square and wide matrices follow LAPACK's sign convention", async () => {
  const rng = new TestRng(201);
  for (const [m, n] of [[57, 23], [31, 31], [13, 40], [1, 5], [6, 1]]) {
    await check(gaussian(rng, m, n), `${m}x${n}`);
  }
});

Deno.test("qr: R's diagonal is negative where the pivot entry is non-negative (geqrf)", async () => {
  const rng = new TestRng(202);
  const a = gaussian(rng, 12, 6);
  for (let i = 0; i < 6; i++) a.data[i] = Math.abs(a.data[i]) + 0.5; // first row positive
  const { r } = await qr(tensor(Float32Array.from(a.data), { shape: [12, 6] }));
  const rm = await readMat(r);
  equal(
    at(rm, 0, 0) < 0,
    true,
    `R[0,0] = ${at(rm, 0, 0)} should be negative for a positive pivot (TEST_SEED=${TEST_SEED})`,
  );
  assertBelow(
    "|R[0,0]| = ‖a_0‖",
    Math.abs(Math.abs(at(rm, 0, 0)) - fro(mat(12, 1, a.data.filter((_, i) => i % 6 === 0)))),
    1e-5,
  );
});

Deno.test("qr: rank-deficient input still gives an orthonormal Q", async () => {
  const rng = new TestRng(203);
  const low = matmul(gaussian(rng, 40, 4), gaussian(rng, 4, 16));
  for (let i = 0; i < 40; i++) low.data[i * 16 + 9] = 0; // and an exactly zero column
  const { q, r } = await qr(tensor(Float32Array.from(low.data), { shape: [40, 16] }));
  const qm = await readMat(q);
  assertBelow("‖QᵀQ − I‖_F (rank 4)", orthError(qm), 1e-5);
  assertBelow("‖A − QR‖/‖A‖ (rank 4)", fro(sub(low, matmul(qm, await readMat(r)))) / fro(low), 1e-5);
});

Deno.test("qr: wantQ false returns R only, and the cpu device agrees", async () => {
  const rng = new TestRng(204);
  const a = gaussian(rng, 19, 9);
  const t = tensor(Float32Array.from(a.data), { shape: [19, 9] });
  const rOnly = await qr(t, { wantQ: false });
  equal(rOnly.q, null);
  const full = await qr(t);
  assertBelow("R without Q equals R with Q", relMaxDiff(await readMat(rOnly.r), await readMat(full.r)), 1e-6);
  await check(a, "cpu 19x9", "cpu");
});

Deno.test("qr: repeated identical columns keep Q orthonormal on every device", async () => {
  // [B B ... B]: after the reflectors of one copy the next copy is a rounding residual about 1e-7 times
  // smaller, so the fourth copy's columns are near 1e-22 (their squares below float32's range) and the
  // eighth's below the smallest normal float32, which a GPU may flush to zero.
  const rng = new TestRng(205);
  const m = 30, k = 5;
  for (const reps of [4, 8]) {
    const n = k * reps;
    const b = gaussian(rng, m, k);
    const a = mat(m, n, Array.from({ length: m * n }, (_, i) => at(b, Math.floor(i / n), i % n % k)));
    // Householder QR is backward stable: QᵀQ − I and A − QR are rounding errors bounded by about m·K·ε
    // (K = min(m, n); 3.6e-5 for 30×20, ε = 2^-24); a reflector whose τ does not match v gave 6e-2.
    const bound = m * Math.min(m, n) * 2 ** -24;
    // Float64 Householder QR: the first k rows of R and columns of Q depend on B alone.
    const ref = householderQR(a);
    const head = (x: M64, rows: number, cols: number) =>
      mat(rows, cols, Array.from({ length: rows * cols }, (_, i) => at(x, Math.floor(i / cols), i % cols)));
    for (const device of ["cpu", "wasm", "webgpu"] as const) {
      const what = `${device}, ${reps} copies`;
      const { q, r } = await qr(tensor(Float32Array.from(a.data), { shape: [m, n], device }));
      const qm = await readMat(q), rm = await readMat(r);
      assertBelow(`${what}: ‖QᵀQ − I‖_F`, orthError(qm), bound);
      assertBelow(`${what}: ‖A − QR‖/‖A‖`, fro(sub(a, matmul(qm, rm))) / fro(a), bound);
      assertBelow(`${what}: R[:${k}] vs float64`, relMaxDiff(head(rm, k, n), head(ref.r, k, n)), 1e-4);
      assertBelow(`${what}: Q[:, :${k}] vs float64`, relMaxDiff(head(qm, m, k), head(ref.q, m, k)), 1e-3);
    }
  }
});
