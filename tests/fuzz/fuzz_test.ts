/**
 * The compiler fuzzer (tools/fuzz.ts) in CI: a fixed number of fresh random graphs per run on each backend, each
 * compared with the float64 reference (more on wasm, whose kernels compile in milliseconds and whose SIMD forms
 * depend on the shapes). `deno task fuzz --cases N` runs longer campaigns.
 */
import { runCase } from "../../tools/fuzz.ts";
import { TEST_SEED } from "../_helpers.ts";

const RUNS = { webgpu: 60, wasm: 200, cpu: 60 } as const;
/** Cases that start from runs of a stored buffer (`--views`: bound as ranges on WebGPU, some of them empty). */
const VIEW_RUNS = { webgpu: 40, wasm: 60, cpu: 20 } as const;

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
