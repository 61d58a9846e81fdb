/** Backend-level behaviour: f16, error surfacing, adapter reporting, device choice, DEBUG output, buffer reuse. */
import { equal, match, ok, rejects, throws } from "node:assert/strict";
import {
  AUTO_DEVICE,
  getBackend,
  getDefaultDevice,
  getWebGPU,
  randn,
  realize,
  resolveDevice,
  setDefaultDevice,
  tensor,
  zeros,
} from "../../mod.ts";
import { runKernels } from "../../lib/tensor/custom.ts";
import { CpuBackend } from "../../lib/runtime/cpu.ts";
import { leafValues } from "../../lib/autodiff/gradcheck.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";

Deno.test("f16 tensors compute within f16 precision on every backend", async () => {
  const be = await getWebGPU();
  const rng = new TestRng(20);
  for (const device of be.hasF16 ? ["webgpu", "wasm", "cpu"] as const : ["wasm", "cpu"] as const) {
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

Deno.test("an f16 tensor made from host numbers holds their f16 roundings, on the host as on the device", async () => {
  // The host copy was kept widened but unrounded until upload, so the float64 reference (which reads it) saw
  // other values than the device: a product of 32 such values differed by 1e-3.
  const rng = new TestRng(21);
  const values = rng.normals(64);
  for (const device of ["webgpu", "wasm", "cpu"] as const) {
    const x = tensor(values, { shape: [64], dtype: "f16", device });
    const [host] = (await leafValues([x.node])).values();
    equal(Array.from(host).join(), Array.from(values, Math.f16round).join(), device);
    const y = x.cast("f32").mul(3);
    equal(Array.from(await reference(y)).join(), Array.from(await y.data()).join(), device);
  }
});

Deno.test("an invalid hand-written shader becomes a thrown error naming the kernel", async () => {
  const x = tensor([1, 2, 3], { device: "webgpu" });
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
  equal(await tensor([2, 3], { device: "webgpu" }).mul(2).sum().item(), 10);
});

Deno.test("the adapter is described, and a missing adapter names the package to install", async () => {
  const be = await getWebGPU();
  ok(be.description.length > 0);
  const probe = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { AUTO_DEVICE, getDefaultDevice, tensor } from "${new URL("../../mod.ts", import.meta.url)}";
      console.log(getDefaultDevice(), AUTO_DEVICE.reason, await tensor([1, 2]).mul(3).sum().item());
      try { await tensor([1], { device: "webgpu" }).data(); } catch (e) { console.log(String(e)); }`,
    ],
    env: { DENO_WEBGPU_BACKEND: "dx12" }, // no DirectX 12 on Linux: no adapter
    stdout: "piped",
    stderr: "piped",
  });
  const out = new TextDecoder().decode((await probe.output()).stdout);
  // With no adapter, "auto" runs on wasm and says why; an explicit "webgpu" fails naming what to install.
  match(out, /^wasm auto: no WebGPU adapter 9$/m);
  match(out, /No WebGPU adapter found.*mesa-vulkan-drivers/s);
});

Deno.test("auto picks wasm over a software adapter, TESSERA_DEVICE and setDefaultDevice choose explicitly", async () => {
  const webgpu = await getWebGPU();
  // This suite runs where WebGPU is Mesa's CPU driver (CI) or a real GPU: auto takes wasm only for the former.
  equal(
    AUTO_DEVICE.device,
    webgpu.isFallback || /llvmpipe|lavapipe/i.test(webgpu.description) ? "wasm" : "webgpu",
  );
  match(AUTO_DEVICE.reason, /^auto: /);
  const run = async (env: Record<string, string>, code: string) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", `import * as t from "${new URL("../../mod.ts", import.meta.url)}";\n${code}`],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return new TextDecoder().decode(out.code === 0 ? out.stdout : out.stderr);
  };
  for (const d of ["webgpu", "wasm", "cpu"]) {
    match(
      await run({ TESSERA_DEVICE: d }, "console.log(t.tensor([1]).device, await t.deviceLine());"),
      new RegExp(`^${d} ${d}: `),
    );
  }
  match(await run({ TESSERA_DEVICE: "auto" }, "console.log(await t.deviceLine());"), /\(auto: /);
  match(
    await run({ TESSERA_DEVICE: "gpu" }, "t.tensor([1]);"),
    /TESSERA_DEVICE must be one of auto, webgpu, wasm, cpu, got "gpu"/,
  );
  const before = getDefaultDevice();
  try {
    setDefaultDevice("cpu");
    equal(tensor([1]).device, "cpu");
    setDefaultDevice("auto");
    equal(tensor([1]).device, AUTO_DEVICE.device);
    throws(
      () => setDefaultDevice("metal" as "cpu"),
      /device must be one of auto, webgpu, wasm, cpu, got "metal"/,
    );
  } finally {
    setDefaultDevice(before);
  }
});

Deno.test("getBackend, setDefaultDevice and resolveDevice name themselves, the device given and the valid names", async () => {
  const rng = new TestRng(21);
  const before = getDefaultDevice();
  // A random misspelling of a valid name, and names of other frameworks.
  const valid = ["cpu", "wasm", "webgpu"];
  const typo = valid[rng.int(0, 2)].toUpperCase();
  try {
    for (const bad of [typo, "gpu", "metal", ""]) {
      await rejects(getBackend(bad as "cpu"), {
        name: "TypeError",
        message: `getBackend: unknown device ${JSON.stringify(bad)}; expected "cpu", "wasm" or "webgpu"`,
      });
      throws(() => setDefaultDevice(bad as "cpu"), {
        name: "TypeError",
        message: `setDefaultDevice: device must be one of auto, webgpu, wasm, cpu, got ${
          JSON.stringify(bad)
        }`,
      });
      throws(() => resolveDevice(bad as "cpu"), {
        name: "TypeError",
        message: `resolveDevice: device must be one of auto, webgpu, wasm, cpu, got ${JSON.stringify(bad)}`,
      });
    }
    // "auto" is a choice, not a device: getBackend says where it is resolved.
    await rejects(getBackend("auto" as "cpu"), {
      message: 'getBackend: unknown device "auto"; expected "cpu", "wasm" or "webgpu" ' +
        '("auto" is a choice: resolveDevice("auto") names its device)',
    });
    equal(getDefaultDevice(), before, "a refused choice leaves the default alone");
    for (const d of valid) ok(await getBackend(d as "cpu"));
  } finally {
    setDefaultDevice(before);
  }
});

Deno.test("DEBUG=4 prints the generated WGSL and DEBUG=1 the kernel times", async () => {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { tensor } from "${new URL("../../mod.ts", import.meta.url)}";
      await tensor([1, 2, 3]).exp().sum().data();`,
    ],
    env: { DEBUG: "4", TESSERA_DEVICE: "webgpu" },
    stdout: "piped",
    stderr: "piped",
  });
  const err = new TextDecoder().decode((await cmd.output()).stderr);
  match(err, /@compute @workgroup_size/);
  match(err, /webgpu \S+ \S+ [\d.]+ ms/);
  const wasm = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { tensor } from "${new URL("../../mod.ts", import.meta.url)}";
      await tensor([1, 2, 3]).exp().sum().data();`,
    ],
    env: { DEBUG: "4", TESSERA_DEVICE: "wasm" },
    stdout: "piped",
    stderr: "piped",
  });
  const werr = new TextDecoder().decode((await wasm.output()).stderr);
  match(werr, /wasm kernel reshape_sum_exp_scalar: \d+ bytes/);
  match(werr, /wasm reshape_sum_exp_scalar 1 items x1 [\d.]+ ms/);
});

Deno.test("the cpu device refuses a buffer larger than its largest, as wasm and webgpu do", async () => {
  // It computed one: zeros([2^29 + 1024]).add(1) took 41 s and 4.1 GiB where its limit says 2 GiB.
  class SmallCpu extends CpuBackend {
    override readonly maxBufferBytes = 64;
  }
  const small = new SmallCpu();
  for (const [d, fits] of [["f32", 16], ["i32", 16], ["f16", 32]] as const) {
    small.alloc(d, fits).release();
    throws(
      () => small.alloc(d, fits + 1),
      new RegExp(
        `Cannot allocate ${fits + 1} ${d} elements \\(${
          64 + 64 / fits
        } bytes\\): the cpu device's largest buffer is 64`,
      ),
    );
    throws(
      () => small.upload(d, new Float32Array(fits + 1)),
      /the cpu device's largest buffer is 64 bytes; split/,
    );
  }
  const be = await getBackend("cpu");
  const n = Math.floor(be.maxBufferBytes / 4) + 1024;
  await rejects(
    zeros([n], { device: "cpu" }).add(1).data(),
    /result of Add with shape \[\d+\] f32: Cannot allocate \d+ f32 elements .* split the tensor/,
  );
});

for (const device of ["webgpu", "wasm"] as const) {
  Deno.test(`buffers are reused: a loop of realizations keeps the live buffer count flat (${device})`, async () => {
    const be = await getBackend(device);
    let w = randn([64, 64], { seed: 1, device });
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
    // No growth once warm (a count may still fall when collected tensors give buffers back later).
    ok(counts[29] <= counts[5], `live buffers ${counts.join(",")}`);
    equal(be.stats().cachedKernels, cachedAfterWarmup, "no new pipelines once the loop is warm");
    const d = await w.data();
    ok(d.every(Number.isFinite));
  });

  Deno.test(`a result larger than the device's largest buffer is an error naming the op and shape (${device})`, async () => {
    const be = await getBackend(device);
    const n = Math.floor(be.maxBufferBytes / 4) + 1024;
    const big = zeros([n], { device }).add(1);
    await rejects(
      big.data(),
      /result of Add with shape \[\d+\] f32: Cannot allocate \d+ f32 elements .* split the tensor/,
    );
  });

  Deno.test(`device memory is released by dispose() and at the end of a \`using\` block (${device})`, async () => {
    // Counted around synchronous code only: across an await, other tests' unreachable tensors may be collected
    // and their buffers released, which moved a count taken before the await.
    const be = await getBackend(device);
    let live: number;
    {
      using a = randn([128, 128], { seed: 3, device });
      await a.realize();
      live = be.stats().liveBuffers;
    }
    equal(be.stats().liveBuffers, live - 1, "released when the block ends");
    const b = randn([64], { seed: 4, device });
    await b.realize();
    live = be.stats().liveBuffers;
    b.dispose();
    equal(be.stats().liveBuffers, live - 1, "released by dispose()");
  });
}
