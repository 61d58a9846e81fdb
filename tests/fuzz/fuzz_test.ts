/**
 * The compiler fuzzer (tools/fuzz.ts) in CI: a fixed number of fresh random graphs per run on each backend, each
 * compared with the float64 reference (more on wasm, whose kernels compile in milliseconds and whose SIMD forms
 * depend on the shapes), also starting from runs of a stored buffer (`--views`) and checking the gradients autodiff
 * builds (`--grad`). `deno task fuzz --cases N` runs longer campaigns.
 */
import { runCase } from "../../tools/fuzz.ts";
import { equal } from "node:assert/strict";
import { getWebGPU, tensor } from "../../mod.ts";
import { GPU_LAUNCHES } from "../../lib/codegen/launch_policy.ts";
import { GPU_POLICY } from "../../lib/codegen/matmul_policy.ts";
import { TEST_SEED } from "../_helpers.ts";

const RUNS = { webgpu: 60, wasm: 200, cpu: 60 } as const;
/** Cases that start from runs of a stored buffer (`--views`: bound as ranges on WebGPU, some of them empty). */
const VIEW_RUNS = { webgpu: 40, wasm: 60, cpu: 20 } as const;
/** Cases that check the gradients autodiff builds for a random graph (`--grad`). */
const GRAD_RUNS = { webgpu: 30, wasm: 60, cpu: 20 } as const;

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  const CASES = RUNS[device];
  Deno.test(`fuzz: ${CASES} random expression graphs match the reference (${device})`, async () => {
    const failures: string[] = [];
    for (let i = 0; i < CASES; i++) {
      const msg = await runCase((TEST_SEED + i * 7919) >>> 0, device);
      if (msg !== null) failures.push(msg);
    }
    if (failures.length > 0) {
      throw new Error(`${failures.length} of ${CASES} cases failed:\n${failures.join("\n\n")}`);
    }
  });
}

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  const CASES = GRAD_RUNS[device];
  Deno.test(`fuzz: the gradients of ${CASES} random graphs match the reference (${device})`, async () => {
    const failures: string[] = [];
    for (let i = 0; i < CASES; i++) {
      const msg = await runCase((TEST_SEED + i * 1299709) >>> 0, device, { grad: true, views: i % 3 === 2 });
      if (msg !== null) failures.push(msg);
    }
    if (failures.length > 0) {
      throw new Error(`${failures.length} of ${CASES} cases failed:\n${failures.join("\n\n")}`);
    }
  });
}

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  const CASES = VIEW_RUNS[device];
  Deno.test(`fuzz: ${CASES} random graphs over runs of a stored buffer match the reference (${device})`, async () => {
    const failures: string[] = [];
    for (let i = 0; i < CASES; i++) {
      const msg = await runCase((TEST_SEED + i * 104729) >>> 0, device, { views: true });
      if (msg !== null) failures.push(msg);
    }
    if (failures.length > 0) {
      throw new Error(`${failures.length} of ${CASES} cases failed:\n${failures.join("\n\n")}`);
    }
  });
}

Deno.test("fuzz: 40 graphs under the policies of GPUs (no row kernels, shared matmul tiles) on webgpu", async () => {
  // What an NVIDIA or AMD adapter runs (launches, row fusion, matmul tiles), rendered and checked here on the
  // software adapter.
  const be = await getWebGPU() as unknown as {
    launchPolicy: unknown;
    rowKernels: boolean;
    matmulPolicy: unknown;
  };
  const [policy, rows, matmul] = [be.launchPolicy, be.rowKernels, be.matmulPolicy];
  be.launchPolicy = GPU_LAUNCHES;
  be.rowKernels = GPU_LAUNCHES.rowKernels;
  be.matmulPolicy = GPU_POLICY;
  const failures: string[] = [];
  try {
    // The policy is in force: a mean over rows broadcast back is a kernel of its own (one row kernel otherwise).
    const x = tensor(Float32Array.from({ length: 64 * 256 }, (_, i) => Math.sin(i)), {
      shape: [64, 256],
      device: "webgpu",
    });
    await x.sub(x.mean(1, { keepdims: true })).data();
    equal((be as unknown as { lastRunLaunches: number }).lastRunLaunches, 2);
    for (let i = 0; i < 40; i++) {
      const msg = await runCase((TEST_SEED + i * 15485863) >>> 0, "webgpu", { views: i % 2 === 1 });
      if (msg !== null) failures.push(msg);
    }
  } finally {
    be.launchPolicy = policy;
    be.rowKernels = rows;
    be.matmulPolicy = matmul;
  }
  if (failures.length > 0) {
    throw new Error(`${failures.length} of 40 cases failed:\n${failures.join("\n\n")}`);
  }
});
