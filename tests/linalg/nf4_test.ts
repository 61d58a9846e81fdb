/**
 * NF4 against an independent float32 reference written as bitsandbytes' decision tree (dQuantizeNF4), exact
 * ties, reachability of every code, idempotence of the round trip, and both devices.
 */
import { deepEqual, equal } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { NF4_CODE_TABLE, nf4Dequantize, nf4Qdq, nf4Quantize } from "../../lib/linalg/mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

const f = Math.fround;
/** Midpoints between neighbouring codes, as float32 (bitsandbytes writes them as float literals). */
const MID = NF4_CODE_TABLE.slice(1).map((v, i) => f((NF4_CODE_TABLE[i] + v) / 2));

/** bitsandbytes' binary decision tree: `x > t` goes up, so an exact tie goes down. */
function treeCode(x: number): number {
  let lo = 0, hi = 15; // the code lies in [lo, hi]
  while (lo < hi) {
    const mid = (lo + hi) >> 1; // threshold between code mid and mid+1
    if (x > MID[mid]) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function reference(x: Float32Array, bs: number) {
  const codes = new Uint32Array(x.length);
  const absmax = new Float32Array(Math.ceil(x.length / bs));
  const deq = new Float32Array(x.length);
  for (let b = 0; b < absmax.length; b++) {
    const end = Math.min((b + 1) * bs, x.length);
    let m = 0;
    for (let i = b * bs; i < end; i++) m = Math.max(m, Math.abs(x[i]));
    absmax[b] = m;
    const inv = m > 0 ? f(1 / m) : 0;
    for (let i = b * bs; i < end; i++) {
      codes[i] = treeCode(f(x[i] * inv));
      deq[i] = f(f(NF4_CODE_TABLE[codes[i]]) * m);
    }
  }
  return { codes, absmax, deq };
}

for (const device of ["webgpu", "cpu"] as const) {
  Deno.test(`nf4 matches the bitsandbytes reference on random data and block sizes (${device})`, async () => {
    const rng = new TestRng(701);
    const x = rng.normals(10 * 97, 0.7); // 970 elements: the last block is partial
    for (let i = 128; i < 192; i++) x[i] = 0; // one all-zero block among non-zero ones
    for (const bs of [64, 128, 7]) {
      const want = reference(x, bs);
      const q = await nf4Quantize(tensor(x, { shape: [10, 97], device }), { blockSize: bs });
      equal(q.codes.shape.join(), "10,97");
      deepEqual(
        Array.from(await q.absmax.data()),
        Array.from(want.absmax),
        `absmax, block ${bs} (TEST_SEED=${TEST_SEED})`,
      );
      deepEqual(
        Array.from(await q.codes.data()),
        Array.from(want.codes),
        `codes, block ${bs} (TEST_SEED=${TEST_SEED})`,
      );
      const back = await nf4Dequantize(q);
      deepEqual(Array.from(await back.data()), Array.from(want.deq), `dequantised, block ${bs}`);
    }
  });
}

Deno.test("nf4: every code is reachable and exact ties go to the lower code", async () => {
  const scale = 3.7;
  // Block 0: the 16 code values times `scale` (absmax = scale): each maps back to its own code.
  const block0 = NF4_CODE_TABLE.map((v) => f(v * scale));
  // Block 1 (absmax 1): each threshold exactly, and the next float32 above and below it.
  const up = (v: number) => f(v + Math.abs(v) * 2 ** -23 + 1e-45);
  const down = (v: number) => f(v - Math.abs(v) * 2 ** -23 - 1e-45);
  const block1 = [1, ...MID, ...MID.map(up), ...MID.map(down)];
  const data = Float32Array.from([
    ...block0,
    ...new Array(64 - 16).fill(0.01),
    ...block1,
    ...new Array(64 - block1.length).fill(0.01),
  ]);
  const q = await nf4Quantize(tensor(data));
  const codes = await q.codes.data();
  deepEqual(
    Array.from(codes.slice(0, 16)),
    Array.from({ length: 16 }, (_, i) => i),
    "every code from its own value",
  );
  const at = (k: number) => codes[64 + k];
  for (let t = 0; t < 15; t++) {
    equal(at(1 + t), t, `exact tie at threshold ${t} (${MID[t]}) takes the lower code`);
    equal(at(16 + t), t + 1, `just above threshold ${t} takes the upper code`);
    equal(at(31 + t), t, `just below threshold ${t} takes the lower code`);
  }
  const back = await (await nf4Dequantize(q)).data();
  for (let c = 0; c < 16; c++) equal(back[c], f(f(NF4_CODE_TABLE[c]) * f(scale)), `dequantised code ${c}`);
});

Deno.test("nf4Qdq is idempotent and within half a code step of the input", async () => {
  const rng = new TestRng(703);
  const x = tensor(rng.normals(33 * 40), { shape: [33, 40] });
  const once = await nf4Qdq(x);
  const twice = await nf4Qdq(once);
  deepEqual(
    Array.from(await twice.data()),
    Array.from(await once.data()),
    `qdq∘qdq = qdq (TEST_SEED=${TEST_SEED})`,
  );
  const xs = await x.data(), qs = await once.data();
  const absmax = (await nf4Quantize(x)).absmax;
  const am = await absmax.data();
  const maxGap = Math.max(...NF4_CODE_TABLE.slice(1).map((v, i) => v - NF4_CODE_TABLE[i]));
  for (let i = 0; i < xs.length; i++) {
    const bound = (maxGap / 2) * am[Math.floor(i / 64)] * (1 + 1e-6);
    if (Math.abs(xs[i] - qs[i]) > bound) {
      throw new Error(`element ${i}: |x − qdq(x)| > half the largest gap (TEST_SEED=${TEST_SEED})`);
    }
  }
});
