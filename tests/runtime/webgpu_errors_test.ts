/**
 * WebGPU errors after a refused step: a kernel refused before submission (a dispatch over 65535 workgroups) or a
 * prepared run refused (copies of unequal sizes) leaves no error scope on the device's stack, so the next invalid
 * command is still reported by the next run. A shader that does not compile is reported with the compiler's
 * message under the name of the kernel that runs it, at every use, alone or beside other kernels. A lost device is
 * named as such by the first read after the loss, and by every later run or read.
 */
import { deepEqual, equal, match, rejects } from "node:assert/strict";
import { customKernel, getWebGPU, tensor } from "../../mod.ts";
import { createWebGPUBackend } from "../../lib/runtime/webgpu.ts";
import { debugLevel, setDebugLevel } from "../../lib/runtime/debug.ts";
import { TestRng } from "../_helpers.ts";

const be = await getWebGPU();

/** No error scope is left on the device's stack: popping one fails. */
async function noScopeLeft(): Promise<void> {
  await rejects(be.device.popErrorScope(), { name: "OperationError", message: /no error scopes/ });
}

/** An invalid command (a write into a buffer made without COPY_DST) is reported by the next run. */
async function nextRunReportsInvalidCommand(): Promise<void> {
  const buffer = be.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
  be.device.queue.writeBuffer(buffer, 0, new Uint8Array(16));
  await rejects(tensor([1, 2, 3, 4], { device: "webgpu" }).add(1).data(), /do not contain required usage/);
  buffer.destroy();
  // Reported once: the device works on.
  equal(await tensor([1, 2], { device: "webgpu" }).mul(2).sum().item(), 6);
}

Deno.test("a step refused before submission leaves no error scope (one launch per step, DEBUG=1)", async () => {
  const level = debugLevel();
  setDebugLevel(1);
  try {
    const x = tensor([1, 2, 3, 4], { device: "webgpu" });
    const huge = customKernel({
      key: "scope_test_huge_dispatch",
      name: "huge_dispatch",
      shape: [4],
      dtype: "f32",
      wgsl: "@group(0) @binding(0) var<storage, read_write> out0: array<f32>;\n" +
        "@group(0) @binding(1) var<storage, read> x: array<f32>;\n" +
        "@compute @workgroup_size(1) fn main() { out0[0] = x[0]; }",
      dispatch: [70000, 1, 1],
      host: () => {},
    }, [x]);
    await rejects(huge.data(), /kernel huge_dispatch: dispatch 70000x1x1 exceeds 65535 per dimension/);
    await noScopeLeft();
    await nextRunReportsInvalidCommand();
  } finally {
    setDebugLevel(level);
  }
});

Deno.test("a prepared run refused for its copies leaves no error scope", async () => {
  const level = debugLevel();
  setDebugLevel(0);
  try {
    const prepared = be.prepare([]);
    const [four, eight] = [be.alloc("f32", 4), be.alloc("f32", 8)];
    await rejects(prepared.run([[four, eight]]), /copy: 16 bytes into 32 bytes/);
    await noScopeLeft();
    await nextRunReportsInvalidCommand();
    prepared.dispose();
    four.release();
    eight.release();
  } finally {
    setDebugLevel(level);
  }
});

Deno.test("a shader that does not compile reports the compiler's message under the running kernel's name, every time", async () => {
  const x = tensor([1, 2, 3, 4], { device: "webgpu" });
  const broken = (name: string) =>
    customKernel({
      key: `compile_test_${name}`,
      name,
      shape: [4],
      dtype: "f32",
      wgsl: "@group(0) @binding(0) var<storage, read_write> out0: array<f32>;\n" +
        "@compute @workgroup_size(4) fn main() { out0[0] = undefined_thing; }",
      dispatch: [1, 1, 1],
      host: () => {},
    }, [x]);
  const parseError = (name: string) =>
    new RegExp(`Shader '${name}' parsing error: no definition in scope for identifier: \`undefined_thing\``);
  const level = debugLevel();
  try {
    // Runs as one submission, and with one launch per step.
    for (const debug of [0, 1]) {
      setDebugLevel(debug);
      for (const name of ["broken_a", "broken_b", "broken_a"]) {
        await rejects(broken(name).data(), (e: Error) => {
          match(e.message, new RegExp(`^WebGPU error in kernel ${name}: `));
          match(e.message, parseError(name));
          return true;
        });
        // Beside a kernel that compiles, in one submission.
        await rejects(broken(`${name}_with_exp`).add(x.exp()).data(), parseError(`${name}_with_exp`));
        equal(await x.mul(2).sum().item(), 20);
      }
    }
  } finally {
    setDebugLevel(level);
  }
});

Deno.test("a lost device is named by the first read after the loss and by later runs, with its reason", async () => {
  // A backend of its own: the shared one stays usable for the other tests.
  const own = await createWebGPUBackend();
  const rng = new TestRng(83);
  const values = rng.normals(64);
  const stored = own.upload("f32", values);
  deepEqual(await own.read(stored, "f32", 64), values);
  own.device.destroy();
  // The map of the first read fails before the device's lost promise settles: it said "validation error occurred".
  const lost =
    /device lost \(destroyed: [^)]*\); its buffers are gone, so tensors on webgpu can no longer be/;
  await rejects(own.read(stored, "f32", 64), (e: Error) => {
    match(e.message, /^WebGPU error in kernel readback: /);
    match(e.message, lost);
    return true;
  });
  await rejects(own.read(stored, "f32", 64), lost);
  const out = own.alloc("f32", 64);
  await rejects(async () => await own.copy([[stored, out]]), lost);
  equal(await tensor([1, 2], { device: "webgpu" }).mul(2).sum().item(), 6, "the shared device is untouched");
});
