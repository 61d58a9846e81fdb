/**
 * IEEE edge values through comparisons, pow, constants and concat, on every device against closed forms; and the
 * argument checks of the creation and shape functions that used to let a bad value through.
 *
 * Before: `le`/`ge` were true where a side was NaN (built as ¬(b < a)); webgpu's pow gave 0 for a NaN base and the
 * devices disagreed on −0, −∞ and ±∞ exponents; a pad (and so the kernel cache) with fill ∞ reused one with NaN
 * (both JSON `null`), and a constant 0 one with −0; concat turned −0 into 0.
 */
import { deepEqual, equal, throws } from "node:assert/strict";
import { arange, concat, full, ones, stack, tensor, where, zeros } from "../../mod.ts";
import type { Shape, Tensor } from "../../mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

const DEVICES = ["cpu", "wasm", "webgpu"] as const;
type F = Tensor<Shape, "f32">;

/** Values as text, −0 told from 0. */
const show = (a: ArrayLike<number>) => Array.from(a, (v) => (Object.is(v, -0) ? "-0" : String(v)));

/** C's `pow` (PyTorch, NumPy): `Math.pow` but for 1^y and (−1)^±∞, which are 1. */
function cPow(x: number, y: number): number {
  if (x === 1 || (x === -1 && Math.abs(y) === Infinity)) return 1;
  return Math.pow(x, y);
}

const EDGES = [0, -0, 1, -1, 2, -2, 0.5, -0.5, 3, -3, Infinity, -Infinity, NaN, 1e-30, 1e30];

for (const device of DEVICES) {
  Deno.test(`${device}: le and ge are false where either side is NaN, as lt, gt and eq`, async () => {
    const rng = new TestRng(TEST_SEED);
    const pool = [NaN, -1, 0, 1, Infinity, -Infinity];
    const a = Array.from({ length: 64 }, () => pool[rng.int(0, pool.length - 1)]);
    const b = Array.from({ length: 64 }, () => pool[rng.int(0, pool.length - 1)]);
    const ta = tensor(a, { device }) as F;
    const tb = tensor(b, { device }) as F;
    const got = {
      le: await ta.le(tb).data(),
      ge: await ta.ge(tb).data(),
      leScalar: await ta.le(0).data(),
      geScalar: await ta.ge(0).data(),
    };
    equal(show(got.le).join(), a.map((x, i) => (x <= b[i] ? "1" : "0")).join());
    equal(show(got.ge).join(), a.map((x, i) => (x >= b[i] ? "1" : "0")).join());
    equal(show(got.leScalar).join(), a.map((x) => (x <= 0 ? "1" : "0")).join());
    equal(show(got.geScalar).join(), a.map((x) => (x >= 0 ? "1" : "0")).join());
  });

  Deno.test(`${device}: pow follows C's pow on every pair of edge values and on random ones`, async () => {
    const xs: number[] = [];
    const ys: number[] = [];
    for (const x of EDGES) for (const y of EDGES) xs.push(x), ys.push(y);
    const got = await (tensor(xs, { device }) as F).pow(tensor(ys, { device }) as F).data();
    const bad: string[] = [];
    xs.forEach((x, i) => {
      const want = Math.fround(cPow(Math.fround(x), Math.fround(ys[i])));
      const g = got[i];
      const same = Object.is(g, want) ||
        (Number.isFinite(want) && want !== 0 && Math.abs(g - want) <= 2e-6 * Math.abs(want));
      if (!same) bad.push(`${show([x])}^${show([ys[i]])}: ${show([g])}, want ${show([want])}`);
    });
    equal(bad.join("; "), "");
    // Random bases of both signs with integer and fractional exponents; |y·log2|x|| < 24 keeps the relative error
    // of exp2(y·log2|x|) in f32 within 24·2⁻²⁴·(a few ulp): 2e-5 covers it.
    const rng = new TestRng(TEST_SEED + 1);
    const bx = Array.from({ length: 200 }, () => (rng.next() - 0.5) * 8);
    const by = bx.map((_, i) => (i % 2 === 0 ? rng.int(-5, 5) : (rng.next() - 0.5) * 6));
    const r = await (tensor(bx, { device }) as F).pow(tensor(by, { device }) as F).data();
    bx.forEach((x, i) => {
      const want = cPow(Math.fround(x), Math.fround(by[i]));
      if (Number.isNaN(want)) equal(Number.isNaN(r[i]), true, `${x}^${by[i]}`);
      else if (Math.abs(r[i] - want) > 2e-5 * Math.abs(want) + 1e-30) {
        throw new Error(`${device}: ${x}^${by[i]} = ${r[i]}, want ${want}`);
      }
    });
  });

  Deno.test(`${device}: pads and constants that differ only as NaN, ±∞ or ±0 stay apart`, async () => {
    const x = tensor([1, 2], { device }) as F;
    equal(show(await x.pad([[1, 0]], NaN).data()).join(), "NaN,1,2");
    equal(show(await x.pad([[1, 0]], Infinity).data()).join(), "Infinity,1,2");
    equal(show(await x.pad([[0, 1]], -Infinity).data()).join(), "1,2,-Infinity");
    equal(show(await full([2], -0, { device }).data()).join(), "-0,-0");
    equal(show(await full([2], 0, { device }).data()).join(), "0,0");
    equal(show(await full([2], 0, { device }).reciprocal().data()).join(), "Infinity,Infinity");
  });

  Deno.test(`${device}: concat and stack keep −0`, async () => {
    const a = tensor([-0, 1.5], { device }) as F;
    const b = tensor([2, -0, -0], { device }) as F;
    equal(show(await concat([a, b]).data()).join(), "-0,1.5,2,-0,-0");
    equal(show(await stack([a, tensor([-0, -0], { device }) as F]).data()).join(), "-0,1.5,-0,-0");
  });
}

Deno.test("tensor: bool keeps NaN as true, as cast does; integers the dtype cannot hold are refused", async () => {
  equal(show(await tensor([NaN, 0, -0, 2], { dtype: "bool" }).data()).join(), "1,0,0,1");
  equal(show(await tensor([NaN, 0, -0, 2]).cast("bool").data()).join(), "1,0,0,1");
  equal(show(await tensor([1.7, -1.7], { dtype: "i32" }).data()).join(), "1,-1");
  throws(() => tensor([1, 3e9], { dtype: "i32" }), /value 3000000000 at index 1 does not fit dtype i32/);
  throws(() => tensor([-1], { dtype: "u32" }), /value -1 at index 0 does not fit dtype u32/);
  throws(() => tensor([NaN], { dtype: "i32" }), /value NaN at index 0 does not fit dtype i32/);
});

Deno.test("bad sizes, bounds and arguments are refused by name", () => {
  const m = arange(12).reshape([3, 4]) as F;
  const i = tensor([0, 1], { dtype: "i32" });
  throws(() => m.slice([1.5, 3]), /slice: start must be an integer or null, got 1\.5 for axis 0/);
  throws(() => m.slice([0, NaN]), /slice: end must be an integer or null, got NaN/);
  throws(
    () => m.slice("a" as never),
    /slice: entry 0 must be an index, a \[start, end, step\] range or null/,
  );
  throws(() => full([2], 3e9, { dtype: "i32" }), /full: dtype i32 does not hold the value 3000000000/);
  throws(() => full([2], -1, { dtype: "u32" }), /full: dtype u32 does not hold the value -1/);
  throws(() => full([2], 0.5, { dtype: "bool" }), /full: dtype bool does not hold the value 0\.5/);
  throws(() => arange(NaN), /arange: start and stop must be finite, got 0 and NaN/);
  throws(() => arange(0, Infinity), /arange: start and stop must be finite/);
  throws(() => arange(1e12), /arange: 1000000000000 values is more than a tensor holds/);
  throws(
    () => zeros([100000, 100000]),
    /zeros: shape \[100000, 100000\] has 10000000000 elements, more than/,
  );
  throws(() => ones([1]).expand([65536, 65536]), /expand: shape \[65536, 65536\] has 4294967296 elements/);
  throws(() => ones([1]).expand([2.5]), /expand: invalid shape \[2\.5\]/);
  throws(() => ones([1]).expand([-3]), /expand: invalid shape \[-3\]/);
  throws(() => i.oneHot(2.5), /oneHot: n must be a non-negative integer, got 2\.5/);
  throws(() => i.oneHot(NaN), /oneHot: n must be a non-negative integer, got NaN/);
  throws(() => m.reshape(12 as never), /Cannot reshape \[3, 4\] to 12: the target shape must be an array/);
  throws(() => m.sum(null as never), /sum: axis must be a number, a list of numbers or omitted, got null/);
  throws(() => concat([m, 3 as never]), /concat: entry 1 is not a tensor \(3\)/);
  throws(() => stack([m, "x" as never]), /stack: entry 1 is not a tensor/);
  throws(() => where(true as never, m, m), /where: the condition must be a bool tensor, got true/);
});

Deno.test("to: an unknown device is refused before anything is read", async () => {
  let message = "";
  try {
    await ones([2]).to("gpu" as never);
  } catch (e) {
    message = (e as Error).message;
  }
  equal(message, 'to: unknown device "gpu"; expected "cpu", "wasm" or "webgpu"');
});

Deno.test("oneHot: host indices outside the classes are refused naming the index and its place", async () => {
  const rng = new TestRng(TEST_SEED + 72);
  const n = rng.int(3, 9);
  const ids = Int32Array.from({ length: 6 }, () => rng.int(0, n - 1));
  const at = rng.int(0, 5);
  for (const bad of [n, -1, n + rng.int(1, 50)]) {
    ids[at] = bad;
    throws(
      () => tensor(ids, { shape: [2, 3], dtype: "i32" }).oneHot(n),
      new RegExp(
        `oneHot: index ${bad} \\(element ${at} of \\[2, 3\\]\\) is outside the ${n} classes \\(0\\.\\.${
          n - 1
        }\\)`,
      ),
    );
  }
  throws(
    () => tensor(Uint32Array.from([0, n]), { shape: [2], dtype: "u32" }).oneHot(n),
    new RegExp(`oneHot: index ${n} \\(element 1 of \\[2\\]\\)`),
  );
  // In range: the rows are the closed form.
  ids[at] = n - 1;
  const got = Array.from(await tensor(ids, { shape: [6], dtype: "i32" }).oneHot(n).data() as Float32Array);
  deepEqual(got, Array.from(ids, (k) => Array.from({ length: n }, (_, j) => (j === k ? 1 : 0))).flat());
});

Deno.test("oneHot: a device index past either end gives a row of the dtype's fill, rows inside keep their bits", async () => {
  const rng = new TestRng(TEST_SEED + 71);
  const n = 5;
  // Random indices in range on the host, shifted on the device (no host check sees the result) by a random shift
  // past either end: some rows fall outside 0..n-1, the others stay inside.
  const host = Int32Array.from({ length: 12 }, () => rng.int(0, n - 1));
  const shifts = Int32Array.from(
    { length: 12 },
    (_, i) => (i % 3 === 0 ? -rng.int(n, 3 * n) : i % 3 === 1 ? rng.int(n, 3 * n) : 0),
  );
  const want = (fill: number) =>
    Array.from(host, (h, i) => {
      const k = h + shifts[i];
      return Array.from({ length: n }, (_, j) => (k < 0 || k >= n ? fill : j === k ? 1 : 0));
    }).flat();
  for (const device of DEVICES) {
    const idx = tensor(host, { shape: [3, 4], dtype: "i32", device }).add(
      tensor(shifts, { shape: [3, 4], dtype: "i32", device }),
    );
    for (
      const [dtype, fill] of [["f32", NaN], ["f16", NaN], ["i32", -2147483648], ["u32", 4294967295], [
        "bool",
        1,
      ]] as const
    ) {
      if (dtype === "f16" && device === "cpu") continue;
      const got = Array.from(await idx.oneHot(n, dtype).data() as ArrayLike<number>);
      equal(JSON.stringify(show(got)), JSON.stringify(show(want(fill))), `${device} ${dtype}`);
    }
    // u32 indices of 2³¹ or more (negative as i32) are outside too.
    const big = tensor(Uint32Array.from([1, 2147483648 - 1]), { shape: [2], dtype: "u32", device }).add(
      tensor(Uint32Array.from([0, 1]), { shape: [2], dtype: "u32", device }),
    );
    equal(
      JSON.stringify(show(await big.oneHot(3).data())),
      JSON.stringify(show([0, 1, 0, NaN, NaN, NaN])),
      `${device} u32`,
    );
  }
});
