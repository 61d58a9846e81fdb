/**
 * argmax over values holding NaN gives PyTorch's and NumPy's answer on every device and in the float64 reference:
 * the index of the first NaN when there is one, else of the first maximum. Before, the devices skipped a NaN unless
 * it came first (and then returned 0), and the reference always skipped it.
 */
import { equal } from "node:assert/strict";
import { type DeviceName, type Shape, type Tensor, tensor } from "../../mod.ts";
import { reference, TEST_SEED, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

/** The closed form: per line of `len` values `stride` apart, the first NaN, else the first maximum. */
function expected(x: Float32Array, outer: number, len: number, inner: number): number[] {
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (j: number) => x[(o * len + j) * inner + i];
      let best = -1;
      for (let j = 0; j < len && best < 0; j++) if (Number.isNaN(at(j))) best = j;
      if (best < 0) {
        best = 0;
        for (let j = 1; j < len; j++) if (at(j) > at(best)) best = j;
      }
      out.push(best);
    }
  }
  return out;
}

/**
 * Random values with ties and infinities; in each line, NaN at the start, at a random place, at two places, or
 * nowhere (a quarter of the lines each), and one line entirely NaN.
 */
function withNaNs(rng: TestRng, outer: number, len: number, inner: number): Float32Array {
  const x = Float32Array.from(
    { length: outer * len * inner },
    () => rng.int(-4, 4) + (rng.next() < 0.1 ? 0.5 : 0),
  );
  for (let k = 0; k < 3; k++) x[rng.int(0, x.length - 1)] = [Infinity, -Infinity, -Infinity][k];
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const put = (j: number) => (x[(o * len + j) * inner + i] = NaN);
      const kind = (o * inner + i) % 4;
      if (kind === 1) put(0);
      if (kind === 2) put(rng.int(1, len - 1));
      if (kind === 3) [rng.int(1, len - 1), rng.int(1, len - 1)].forEach(put);
    }
  }
  for (let j = 0; j < len; j++) x[j * inner] = NaN; // line 0 is all NaN
  return x;
}

const CASES: { name: string; shape: number[]; axis: number }[] = [
  { name: "rows of 37", shape: [24, 37], axis: 1 },
  { name: "columns (axis 0 of [29, 16])", shape: [29, 16], axis: 0 },
  { name: "middle axis of [3, 21, 5]", shape: [3, 21, 5], axis: 1 },
  // Longer than one loop may run on WebGPU: argmax in two passes (split_loops.ts).
  { name: "a row of 70,001", shape: [2, 70_001], axis: 1 },
];

for (const c of CASES) {
  for (const dtype of ["f32", "f16"] as const) {
    Deno.test(`argmax with NaN, ${c.name}, ${dtype}: the first NaN, as PyTorch (cpu, wasm, webgpu, reference)`, async () => {
      const rng = new TestRng(911 + c.shape.reduce((a, b) => a * b, 1) + (dtype === "f16" ? 7 : 0));
      const outer = c.shape.slice(0, c.axis).reduce((a, b) => a * b, 1);
      const inner = c.shape.slice(c.axis + 1).reduce((a, b) => a * b, 1);
      const len = c.shape[c.axis];
      const x = withNaNs(rng, outer, len, inner);
      const want = expected(x, outer, len, inner).join(" ");
      const msg = `${c.name} ${dtype} (TEST_SEED=${TEST_SEED})`;
      for (const device of ["cpu", "wasm", "webgpu"] as DeviceName[]) {
        const t = (tensor(x, { shape: c.shape, device }) as F).cast(dtype).argmax(c.axis);
        if (device === "cpu") equal([...await reference(t)].join(" "), want, `reference: ${msg}`);
        equal([...await t.data()].join(" "), want, `${device}: ${msg}`);
      }
    });
  }
}
