/** Backend-level behaviour: f16, error surfacing, adapter reporting, DEBUG output, buffer reuse. */
import { equal, match, ok, rejects } from "node:assert/strict";
import { getBackend, getWebGPU, randn, realize, tensor, zeros } from "../../mod.ts";
import { runKernels } from "../../lib/tensor/custom.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";

Deno.test("f16 tensors compute within f16 precision on both backends", async () => {
  const be = await getWebGPU();
  const rng = new TestRng(20);
  for (const device of be.hasF16 ? ["webgpu", "cpu"] as const : ["cpu"] as const) {
    const x = tensor(rng.normals(40), { shape: [5, 8], device }).cast("f16");
    const y = x.mul(0.5).add(1).exp().sum(1);
    equal(y.dtype, "f16");
    const want = await reference(y);
    // Each f16 rounding is ≤ 2^-11 relative; the chain has ~4 roundings plus 8 accumulations.
    assertClose(await y.data(), want, { rtol: 8 * 2 ** -11, atol: 0, what: `f16 on ${device}` });
  }
  const big = tensor([65504, 1, 0.1], { dtype: "f16", device: "cpu" });
  const d = await big.add(1).data();
  equal(d[0], 65504); // 65505 rounds back to the largest f16
  equal(d[2], Math.f16round(Math.f16round(0.1) + 1));
});

Deno.test("an invalid hand-written shader becomes a thrown error naming the kernel", async () => {
  const x = tensor([1, 2, 3]);
  await rejects(
    runKernels([x], [{ shape: [3], dtype: "f32" }], [{
      name: "broken_kernel",
      wgsl: "@compute @workgroup_size(1) fn main() { let a: f32 = undefined_name; }",
      dispatch: [1, 1, 1],
      bindings: [0, 1],
      host: () => {},
    }]),
    /WebGPU error in kernel broken_kernel/,
  );
  // The device is still usable afterwards.
  equal(await tensor([2, 3]).mul(2).sum().item(), 10);
});

Deno.test("the adapter is described, and a missing adapter names the package to install", async () => {
  const be = await getWebGPU();
  ok(be.description.length > 0);
  const probe = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { tensor } from "${new URL("../../mod.ts", import.meta.url)}";
      try { await tensor([1]).data(); } catch (e) { console.log(String(e)); }`,
    ],
    env: { DENO_WEBGPU_BACKEND: "dx12" }, // no DirectX 12 on Linux: no adapter
    stdout: "piped",
    stderr: "piped",
  });
  const out = new TextDecoder().decode((await probe.output()).stdout);
  match(out, /No WebGPU adapter found.*mesa-vulkan-drivers/s);
});

Deno.test("DEBUG=4 prints the generated WGSL and DEBUG=1 the kernel times", async () => {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { tensor } from "${new URL("../../mod.ts", import.meta.url)}";
      await tensor([1, 2, 3]).exp().sum().data();`,
    ],
    env: { DEBUG: "4" },
    stdout: "piped",
    stderr: "piped",
  });
  const err = new TextDecoder().decode((await cmd.output()).stderr);
  match(err, /@compute @workgroup_size/);
  match(err, /webgpu \S+ \S+ [\d.]+ ms/);
});

Deno.test("buffers are reused: a loop of realizations keeps the live buffer count flat", async () => {
  const be = await getBackend("webgpu");
  let w = randn([64, 64], { seed: 1 });
  await realize(w);
  const counts: number[] = [];
  let cachedAfterWarmup = -1;
  for (let i = 0; i < 30; i++) {
    const next = w.mul(0.5).add(w.matmul(w).mul(0.01)).tanh();
    await realize(next);
    w.dispose();
    w = next;
    counts.push(be.stats().liveBuffers);
    if (i === 5) cachedAfterWarmup = be.stats().cachedKernels;
  }
  equal(counts[29], counts[5], `live buffers ${counts.join(",")}`);
  equal(be.stats().cachedKernels, cachedAfterWarmup, "no new pipelines once the loop is warm");
  const d = await w.data();
  ok(d.every(Number.isFinite));
});

Deno.test("a result larger than the device's largest buffer is an error naming the op and shape", async () => {
  const be = await getWebGPU();
  const n = Math.floor(be.maxBufferBytes / 4) + 1024;
  const big = zeros([n]).add(1);
  await rejects(
    big.data(),
    /result of Add with shape \[\d+\] f32: Cannot allocate \d+ f32 elements .* split the tensor/,
  );
});

Deno.test("device memory is released by dispose() and at the end of a `using` block", async () => {
  const be = await getBackend("webgpu");
  const before = be.stats().liveBuffers;
  {
    using a = randn([128, 128], { seed: 3 });
    await a.realize();
    equal(be.stats().liveBuffers, before + 1);
  }
  equal(be.stats().liveBuffers, before, "released when the block ends");
  const b = randn([64], { seed: 4 });
  await b.realize();
  equal(be.stats().liveBuffers, before + 1);
  b.dispose();
  equal(be.stats().liveBuffers, before, "released by dispose()");
});
