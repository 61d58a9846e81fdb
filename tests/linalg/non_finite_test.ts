/**
 * NaN and infinite input: nf4Quantize, nf4Qdq and IncrementalPCA refuse it by name; the factorisations, which
 * read nothing back, return all-NaN results on every device instead of finite numbers computed from part of it.
 */
import { equal, rejects } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import {
  eigh,
  IncrementalPCA,
  nf4Qdq,
  nf4Quantize,
  pinv,
  qr,
  svd,
  svdLowRank,
} from "../../lib/linalg/mod.ts";
import { NonFiniteWeightsError } from "../../lib/nn/finite.ts";
import type { Tensor } from "../../lib/tensor/tensor.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

const DEVICES = ["cpu", "wasm", "webgpu"] as const;

/** Random normal values with `bad` at a random index; returns the data and that index. */
function withBad(rng: TestRng, n: number, bad: number): [Float32Array, number] {
  const data = rng.normals(n);
  const at = rng.int(0, n - 1);
  data[at] = bad;
  return [data, at];
}

Deno.test("nf4Quantize, nf4Qdq and IncrementalPCA refuse NaN and infinite values by name on every device", async () => {
  const rng = new TestRng(1201);
  for (const device of DEVICES) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const [data, at] = withBad(rng, 4 * 32, bad);
      const x = tensor(data, { shape: [4, 32], device });
      // On a GPU a NaN left its block's absmax and took code 0 (−absmax); the CPU made the block NaN.
      const named = (what: string, name: string) =>
        new RegExp(
          `^NonFiniteWeightsError: ${what}: NaN or infinite values in "${name}" \\[4, 32\\] ` +
            `\\(1 of them; the first, element ${at}, is ${bad}\\)$`,
        );
      await rejects(() => nf4Quantize(x), NonFiniteWeightsError);
      await rejects(() => nf4Quantize(x), named("nf4Quantize", "x"), `${device} ${bad}`);
      await rejects(() => nf4Qdq(x), named("nf4Qdq", "x"), `${device} ${bad}`);
      // The inner SVD made finite components of such a batch; the model keeps the batches before it.
      const pca = new IncrementalPCA({ nComponents: 2 });
      await pca.partialFit(tensor(rng.normals(4 * 32), { shape: [4, 32], device }));
      await rejects(() => pca.partialFit(x), named("IncrementalPCA.partialFit", "batch"), `${device} ${bad}`);
      equal(pca.nSamplesSeen, 4, `${device} ${bad}: samples seen (TEST_SEED=${TEST_SEED})`);
    }
  }
});

/** Throws unless every value of every tensor is NaN. */
async function assertAllNaN(what: string, tensors: (Tensor | null)[]): Promise<void> {
  for (const t of tensors) {
    if (t === null) continue;
    const data = await t.data();
    const finite = Array.from(data).findIndex((v) => !Number.isNaN(v));
    if (finite >= 0) {
      throw new Error(
        `${what}: element ${finite} of [${t.shape}] is ${data[finite]}, not NaN (TEST_SEED=${TEST_SEED})`,
      );
    }
  }
}

Deno.test("qr, svd, eigh, pinv and svdLowRank give all-NaN results for NaN or infinite input on every device", async () => {
  const rng = new TestRng(1202);
  for (const device of DEVICES) {
    for (const bad of [NaN, Infinity]) {
      // 9x6 takes svd's one-kernel solver, 70x66 the QR-preconditioned sweeps (more than 64 columns).
      for (const [m, n] of [[9, 6], [70, 66]]) {
        const what = `${device} ${m}x${n} with ${bad}`;
        const a = tensor(withBad(rng, m * n, bad)[0], { shape: [m, n], device });
        const f = await qr(a);
        await assertAllNaN(`${what}: qr`, [f.q, f.r]);
        const d = await svd(a);
        await assertAllNaN(`${what}: svd`, [d.u, d.s, d.vh]);
        await assertAllNaN(`${what}: pinv`, [await pinv(a)]);
        const l = await svdLowRank(a, 3);
        await assertAllNaN(`${what}: svdLowRank`, [l.u, l.s, l.vh]);
      }
      // eigh reads the lower triangle: a bad value there poisons everything, one above it nothing.
      const g = rng.normals(36);
      const s = Float32Array.from({ length: 36 }, (_, i) => g[i] + g[(i % 6) * 6 + Math.floor(i / 6)]);
      s[4 * 6 + 1] = bad;
      const e = await eigh(tensor(s, { shape: [6, 6], device }));
      await assertAllNaN(`${device} eigh with ${bad}`, [e.values, e.vectors]);
      s[4 * 6 + 1] = s[1 * 6 + 4];
      s[1 * 6 + 4] = bad;
      const upper = await eigh(tensor(s, { shape: [6, 6], device }));
      const values = await upper.values.data();
      equal(
        values.every(Number.isFinite),
        true,
        `${device}: eigh ignores the upper triangle (TEST_SEED=${TEST_SEED})`,
      );
    }
  }
});
