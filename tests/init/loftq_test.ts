/**
 * LoftQ: the base is NF4-quantised (re-quantising it is the identity), every iteration's error
 * ‖W − Q_t − L_t R_t‖_F is reported and matches the returned factors, the error is below plain NF4 quantisation's,
 * one step equals qdq + the SVD tail of the quantisation error, and `compensateScale` makes `Q + s·B·A ≈ W`.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import type { F32 } from "../../lib/init/types.ts";
import { loftqInit } from "../../lib/init/loftq.ts";
import { nf4Qdq } from "../../lib/linalg/nf4.ts";
import { TestRng } from "../_helpers.ts";
import { fro, gaussian, jacobiSVD, type M64, matmul, sub } from "../linalg/_ref64.ts";
import { assertBelow, readMat } from "../linalg/_util.ts";

function weight(rng: TestRng, m: number, n: number): { w: M64; t: F32 } {
  const w = gaussian(rng, m, n, 0.05 + rng.next() * 0.1);
  return { w, t: tensor(Float32Array.from(w.data), { shape: [m, n] }) as unknown as F32 };
}

Deno.test("loftq: 5 iterations on a Gaussian weight — errors per iteration, below NF4's error, NF4 base", async () => {
  const rng = new TestRng(601);
  const [m, n, r, T] = [32, 64, 4, 5];
  const { w, t } = weight(rng, m, n);
  const init = await loftqInit(t, { rank: r, iterations: T });
  equal(init.scale, 1);
  const errors = init.info!.errors as number[];
  equal(errors.length, T, "one error per iteration");
  // Plain NF4 quantisation error, computed here.
  const qdq = await readMat(await nf4Qdq(t));
  const plain = fro(sub(w, qdq));
  assertBelow(
    "|quantizationError − ‖W − qdq(W)‖| / ‖W − qdq(W)‖",
    Math.abs(init.info!.quantizationError as number - plain) / plain,
    1e-5,
  );
  ok(errors[T - 1] <= errors[0], `err_T ${errors[T - 1]} <= err_1 ${errors[0]}`);
  ok(errors[0] < plain, `err_1 ${errors[0]} < ‖W − qdq(W)‖ ${plain}`);
  // The last reported error is that of the returned base and factors.
  const base = await readMat(init.base!);
  const ba = matmul(await readMat(init.b), await readMat(init.a));
  const got = fro(sub(sub(w, base), ba));
  assertBelow(
    "|errors[T−1] − ‖W − base − B·A‖| / errors[T−1]",
    Math.abs(got - errors[T - 1]) / errors[T - 1],
    1e-4,
  );
  // The base lies on the NF4 grid: re-quantising gives it back bit for bit.
  deepEqual(await (await nf4Qdq(init.base!)).data(), await init.base!.data());
});

Deno.test("loftq: one iteration is qdq(W) plus the rank-r SVD of W − qdq(W)", async () => {
  const rng = new TestRng(602);
  const [m, n, r] = [24, 40, 3];
  const { w, t } = weight(rng, m, n);
  const init = await loftqInit(t, { rank: r });
  equal(init.info!.iterations, 1);
  const qdq = await nf4Qdq(t);
  deepEqual(await init.base!.data(), await qdq.data(), "base = qdq(W)");
  const d = sub(w, await readMat(qdq));
  const sv = jacobiSVD(d).s;
  const tail = Math.sqrt(sv.slice(r).reduce((acc, x) => acc + x * x, 0));
  const errors = init.info!.errors as number[];
  assertBelow("|errors[0] − √Σ_{i>r} σ_i(W − qdq W)²| / errors[0]", Math.abs(errors[0] - tail) / tail, 1e-4);
});

Deno.test("loftq: compensateScale divides A and B by √s so that Q + s·B·A ≈ W", async () => {
  const rng = new TestRng(603);
  const [m, n, r] = [32, 32, 4];
  const { t } = weight(rng, m, n);
  const alpha = 16; // s = 4
  const plain = await loftqInit(t, { rank: r, alpha, iterations: 2 });
  const comp = await loftqInit(t, { rank: r, alpha, iterations: 2, compensateScale: true });
  equal(comp.scale, 4);
  equal(comp.info!.compensateScale, true);
  deepEqual(await comp.base!.data(), await plain.base!.data(), "same quantised base");
  const lr = matmul(await readMat(plain.b), await readMat(plain.a)); // PEFT: B·A ≈ W − Q, s ignored
  const sba = matmul(await readMat(comp.b), await readMat(comp.a));
  const scaled = { ...sba, data: sba.data.map((x) => 4 * x) };
  assertBelow("‖s·B_c·A_c − B·A‖/‖B·A‖", fro(sub(scaled, lr)) / fro(lr), 1e-5);
  const colsA = await readMat(comp.a);
  const plainA = await readMat(plain.a);
  assertBelow(
    "‖2·A_c − A‖/‖A‖",
    fro(sub({ ...colsA, data: colsA.data.map((x) => 2 * x) }, plainA)) / fro(plainA),
    1e-6,
  );
});
