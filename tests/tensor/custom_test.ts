/** Hand-written kernels run through runKernels on both backends, with the same results. */
import { equal, rejects } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { runKernels } from "../../lib/tensor/custom.ts";
import { assertClose, TestRng } from "../_helpers.ts";

// y[i] = 2 * x[i] + 1, then z[i] = y[i] * y[i]: two launches in one submission, the second reading the first's output.
const AFFINE = `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < arrayLength(&x)) { y[g.x] = 2.0 * x[g.x] + 1.0; }
}`;
const SQUARE = `@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < arrayLength(&y)) { z[g.x] = y[g.x] * y[g.x]; }
}`;

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  Deno.test(`runKernels chains hand-written launches (${device})`, async () => {
    const rng = new TestRng(9);
    const n = 100;
    const xs = rng.normals(n);
    const x = tensor(xs, { device });
    const groups = Math.ceil(n / 64);
    const [y, z] = await runKernels([x], [{ shape: [n], dtype: "f32" }, { shape: [n], dtype: "f32" }], [
      {
        name: "affine",
        wgsl: AFFINE,
        dispatch: [groups, 1, 1],
        bindings: [0, 1],
        host: ([a, b]) => a.forEach((v, i) => (b[i] = 2 * v + 1)),
      },
      {
        name: "square",
        wgsl: SQUARE,
        dispatch: [groups, 1, 1],
        bindings: [1, 2],
        host: ([a, b]) => a.forEach((v, i) => (b[i] = v * v)),
      },
    ]);
    equal(y.device, device);
    const want = Float64Array.from(xs, (v) => (2 * v + 1) ** 2);
    assertClose(await z.data(), want, { rtol: 1e-6, what: device });
    // Outputs are ordinary tensors: they feed lazy ops.
    assertClose(await y.add(1).data(), Float64Array.from(xs, (v) => 2 * v + 2), { rtol: 1e-6 });
  });
}

Deno.test("runKernels: a launch without WGSL runs on the cpu and wasm devices and is refused on webgpu", async () => {
  const rng = new TestRng(10);
  const xs = rng.normals(10);
  const launch = {
    name: "host_double",
    wgsl: null,
    dispatch: [1, 1, 1] as const,
    bindings: [0, 1],
    host: ([a, b]: (Float32Array | Int32Array | Uint32Array)[]) => a.forEach((v, i) => (b[i] = 2 * v)),
  };
  for (const device of ["cpu", "wasm"] as const) {
    const [y] = await runKernels([tensor(xs, { device })], [{ shape: [10], dtype: "f32" }], [launch]);
    assertClose(await y.data() as Float32Array, xs.map((v) => 2 * v), { rtol: 0, atol: 0, what: device });
  }
  await rejects(
    runKernels([tensor(xs, { device: "webgpu" })], [{ shape: [10], dtype: "f32" }], [launch]),
    {
      message:
        "runKernels: launch host_double has no WGSL and runs on the cpu and wasm devices only, not webgpu",
    },
  );
});
