/**
 * Gather at indices computed on the device, where no host check can see them: an index outside the axis gives the
 * dtype's fill (NaN for floats), on every device and in the float64 reference, and no gradient.
 *
 * Before: kernels and the reference clamped it into the axis, so index 7 of a 5-row table (or −1) read the last
 * (or first) row without a word, while the gradient (a one-hot product) gave that row nothing.
 */
import { equal } from "node:assert/strict";
import { grad, tensor } from "../../mod.ts";
import type { DType, Shape, Tensor } from "../../mod.ts";
import { assertClose, reference, TEST_SEED, TestRng } from "../_helpers.ts";

const DEVICES = ["cpu", "wasm", "webgpu"] as const;
const FILL: Record<DType, number> = { f32: NaN, f16: NaN, i32: -(2 ** 31), u32: 2 ** 32 - 1, bool: 1 };

for (const device of DEVICES) {
  for (const dtype of ["f32", "i32", "u32", "bool"] as const) {
    Deno.test(`${device}: gather of ${dtype} at device indices outside the axis gives the fill`, async () => {
      const rng = new TestRng(TEST_SEED ^ dtype.length ^ device.length * 7);
      const [rows, cols, p] = [rng.int(2, 6), rng.int(1, 4), rng.int(6, 12)];
      const values = Array.from({ length: rows * cols }, () => {
        const v = rng.int(0, 1000);
        return dtype === "bool" ? v % 2 : dtype === "f32" ? Math.fround(v / 7) : v;
      });
      const table = tensor(values, { shape: [rows, cols], dtype, device });
      // Indices from −3 to rows + 2, made on the device as host indices in range plus a shift.
      const want = Array.from({ length: p }, () => rng.int(-3, rows + 2));
      const base = want.map((i) => Math.min(Math.max(i, 0), rows - 1));
      const shift = want.map((i, k) => i - base[k]);
      const opts = { dtype: "i32" as const, device };
      const idx = tensor(base, opts).add(tensor(shift, opts));
      const out = table.gather(idx, 0);
      const expect = want.flatMap((i) =>
        Array.from({ length: cols }, (_, c) => i >= 0 && i < rows ? values[i * cols + c] : FILL[dtype])
      );
      const ref = await reference(out);
      assertClose(ref, expect, { atol: 0, rtol: 0, what: `reference, indices ${want}` });
      assertClose(await out.data(), expect, {
        atol: 0,
        rtol: 0,
        what: `${device}, indices ${want}`,
      });
    });
  }

  Deno.test(`${device}: outside indices take no gradient, inside ones the scatter-sum of the cotangent`, async () => {
    const rng = new TestRng(TEST_SEED ^ 0x6a7e ^ device.length);
    const rows = rng.int(2, 6);
    const p = rng.int(4, 10);
    const want = Array.from({ length: p }, () => rng.int(-2, rows + 1));
    const w = rng.normals(p);
    const x = tensor(rng.normals(rows), { device });
    const opts = { dtype: "i32" as const, device };
    const idx = tensor(want.map(() => 0), opts).add(tensor(want, opts));
    const keep = tensor(want.map((i) => i >= 0 && i < rows), { device });
    const weights = tensor(w, { device });
    const loss = (t: Tensor<Shape, "f32">) => keep.where(t.gather(idx, 0).mul(weights), 0).sum();
    const g = await (grad(loss)(x) as Tensor).data();
    const expect = new Float64Array(rows);
    want.forEach((i, k) => i >= 0 && i < rows && (expect[i] += w[k]));
    assertClose(g, expect, { atol: 1e-6, rtol: 1e-6, what: `gradient, indices ${want}` });
    equal(g.length, rows);
  });
}
