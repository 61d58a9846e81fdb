/**
 * The compiler fuzzer (tools/fuzz.ts) in CI: a fixed number of fresh random graphs per run on each backend, each
 * compared with the float64 reference (more on wasm, whose kernels compile in milliseconds and whose SIMD forms
 * depend on the shapes), also starting from runs of a stored buffer (`--views`) and checking the gradients autodiff
 * builds (`--grad`), some replayed as bound plans (`--replay`). `deno task fuzz --cases N` runs longer campaigns.
 */
import { campaignSeed, generateCase, runCase } from "../../tools/fuzz.ts";
import { equal } from "node:assert/strict";
import { getWebGPU, tensor } from "../../mod.ts";
import { GPU_LAUNCHES } from "../../lib/codegen/launch_policy.ts";
import { GPU_POLICY } from "../../lib/codegen/matmul_policy.ts";
import { TEST_SEED } from "../_helpers.ts";

import type { DeviceName } from "../../lib/ir/node.ts";
import type { GenerateOptions } from "../../tools/fuzz.ts";

/** Runs `n` cases from seeds spaced by `stride`; throws with every mismatch. */
async function runCases(n: number, stride: number, device: DeviceName, opts: (i: number) => GenerateOptions) {
  const failures: string[] = [];
  for (let i = 0; i < n; i++) {
    const msg = await runCase((TEST_SEED + i * stride) >>> 0, device, opts(i));
    if (msg !== null) failures.push(msg);
  }
  if (failures.length > 0) {
    throw new Error(`${failures.length} of ${n} cases failed:\n${failures.join("\n\n")}`);
  }
}

// Per device: plain graphs; graphs that start from runs of a stored buffer (`--views`: bound as ranges on WebGPU,
// some of them empty); the gradients autodiff builds for a random graph (`--grad`, a third of them `--views`).
// Half of the last two also replay their plan bound to storages of its own with new inputs (`--replay`); a third
// of the `--views` cases store the buffer as f16 (`--f16`).
const RUNS = {
  webgpu: { plain: 60, views: 40, grad: 30 },
  wasm: { plain: 200, views: 60, grad: 60 },
  cpu: { plain: 60, views: 20, grad: 20 },
} as const;

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  const { plain, views, grad } = RUNS[device];
  Deno.test(`fuzz: ${plain} random expression graphs match the reference (${device})`, async () => {
    await runCases(plain, 7919, device, () => ({}));
  });
  Deno.test(`fuzz: ${views} random graphs over runs of a stored buffer match the reference (${device})`, async () => {
    await runCases(views, 104729, device, (i) => ({ views: true, f16: i % 3 === 1, replay: i % 2 === 0 }));
  });
  Deno.test(`fuzz: the gradients of ${grad} random graphs match the reference (${device})`, async () => {
    await runCases(grad, 1299709, device, (i) => ({ grad: true, views: i % 3 === 2, replay: i % 2 === 1 }));
  });
}

Deno.test("fuzz: 40 graphs and replays under the policies of GPUs (no row kernels, shared matmul tiles) on webgpu", async () => {
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
  try {
    // The policy is in force: a mean over rows broadcast back is a kernel of its own (one row kernel otherwise).
    const x = tensor(Float32Array.from({ length: 64 * 256 }, (_, i) => Math.sin(i)), {
      shape: [64, 256],
      device: "webgpu",
    });
    await x.sub(x.mean(1, { keepdims: true })).data();
    equal((be as unknown as { lastRunLaunches: number }).lastRunLaunches, 2);
    await runCases(40, 15485863, "webgpu", (i) => ({ views: i % 2 === 1, grad: i % 4 >= 2, replay: true }));
  } finally {
    be.launchPolicy = policy;
    be.rowKernels = rows;
    be.matmulPolicy = matmul;
  }
});

Deno.test("a campaign's cases start from inputs of every rank: consecutive seeds would all start alike", () => {
  // The generator takes its seed as its state: every seed from 1000 to 2999 begins with a rank-1 input, so
  // `--seed S --cases N` stepping by one tested one kind of first input. A campaign's seeds are spread instead.
  const s0 = 1000 + (TEST_SEED % 1000);
  const ranks = new Set<number>();
  for (let i = 0; i < 40; i++) {
    const first = generateCase(campaignSeed(s0, i), "cpu").steps[0];
    ranks.add(first.slice(first.indexOf("[") + 1, first.indexOf("]")).split(",").length);
  }
  equal(campaignSeed(s0, 0), s0, "the first case runs the given seed (so --cases 1 reproduces a case)");
  equal(ranks.size >= 3, true, `first inputs of ranks ${[...ranks]} only`);
});
