/**
 * WebGPU memory the stats did not show or that was never freed: readback staging buffers count in `deviceBytes`,
 * and reads running at once keep at most 16 MiB of them; a compiled pipeline is kept, not made again after more
 * than a thousand other shaders (Deno never frees a dropped pipeline, so making it again only added memory).
 */
import { equal, ok } from "node:assert/strict";
import { customKernel, getWebGPU, realize, tensor } from "../../mod.ts";

const be = await getWebGPU();
const MiB = 2 ** 20;

Deno.test("readback staging buffers count in deviceBytes, and at most 16 MiB of them are kept", async () => {
  const tensors = Array.from(
    { length: 40 },
    (_, i) => tensor(new Float32Array(MiB / 4).fill(i), { device: "webgpu" }),
  );
  await realize(...tensors);
  const before = be.stats().deviceBytes!;
  for (let round = 0; round < 2; round++) {
    const values = await Promise.all(tensors.map((t) => t.data()));
    values.forEach((v, i) => equal(v[v.length - 1], i));
    const staging = be.stats().deviceBytes! - before;
    ok(staging > 0 && staging <= 16 * MiB, `round ${round}: ${staging / MiB} MiB of staging buffers held`);
  }
  for (const t of tensors) t.dispose();
});

Deno.test("a pipeline is compiled once, also after more than a thousand other shaders", async () => {
  const x = tensor(new Float32Array(4), { device: "webgpu" });
  const wgsl = (i: number) =>
    "@group(0) @binding(0) var<storage, read_write> out0: array<f32>;\n" +
    "@group(0) @binding(1) var<storage, read> x: array<f32>;\n" +
    `@compute @workgroup_size(4) fn main(@builtin(global_invocation_id) g: vec3<u32>) { out0[g.x] = x[g.x] + ${i}.0; }`;
  const kernel = (i: number) =>
    customKernel(
      {
        key: `pipeline_test_${i}`,
        name: `add_${i}`,
        shape: [4],
        dtype: "f32",
        wgsl: wgsl(i),
        dispatch: [1, 1, 1],
        host: () => {},
      },
      [x],
    );
  // Compiling 1,100 shaders takes about 10 s on lavapipe: every pipeline asked for is this one compiled shader
  // (same bindings), and what is counted is how often one is asked for.
  const device = be.device;
  const stand = device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code: wgsl(-1) }), entryPoint: "main" },
  });
  let made = 0;
  Object.assign(device, {
    createComputePipeline: () => {
      made++;
      return stand;
    },
  });
  try {
    for (let i = 0; i < 1100; i++) (await kernel(i).realize()).dispose();
    equal(made, 1100);
    for (let i = 0; i < 10; i++) (await kernel(i).realize()).dispose();
    equal(made, 1100, "the first shaders were compiled again");
  } finally {
    delete (device as { createComputePipeline?: unknown }).createComputePipeline;
  }
  // Compiled for real again once the count is taken.
  equal(Array.from(await kernel(2000).data()).join(), "2000,2000,2000,2000");
});
