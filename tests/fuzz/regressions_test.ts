/**
 * Mismatches the fuzzer found, kept as regression tests (each states the bug it caught).
 */
import { equal } from "node:assert/strict";
import { argmaxNearTie, runCase } from "../../tools/fuzz.ts";
import { leafValues } from "../../lib/autodiff/gradcheck.ts";
import { tensor } from "../../mod.ts";

Deno.test("regression: an upload must not land in a buffer that an earlier step of the same submission uses", async () => {
  // The host tensor y was uploaded lazily while building the steps, into the pooled buffer just released by the
  // max-reduction of argmax; the upload is queued ahead of the submission, so the kernel overwrote y's data.
  const x = tensor([0.3, -1, 1.5, 0.2, 1.4]);
  const s = x.argmax(0).cast("f32").div(5);
  const y = tensor([0.1]).reshape([]);
  equal(await s.gt(y).where(s, y.mul(2)).item(), Math.fround(0.4));
  for (const seed of [16, 36, 55, 87]) equal(await runCase(seed, "webgpu"), null, `fuzz seed ${seed}`);
});

Deno.test("regression: a kernel whose folded body no longer reads one of its inputs still binds it", async () => {
  // "auto" pipeline layouts drop bindings the shader never reads, so the bind group no longer matched.
  for (const seed of [124, 128, 131, 200, 235]) {
    equal(await runCase(seed, "webgpu"), null, `fuzz seed ${seed}`);
  }
});

Deno.test("regression: a kernel that pads or concatenates an empty value never loads from it", async () => {
  // The load of an empty slice of a stored buffer had the constant index -1 (the clamp of an empty range), which
  // WGSL rejects: the shader failed validation. Such a value is never selected, and is now a constant.
  const x = tensor([0.5, -1, 2, 0.25]);
  const empty = x.slice([1, 1]).add(tensor(3).reshape([1]).expand([0])).tanh();
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const y = empty.to(device).then((e) => e.pad([[2, 1]], 1).data());
    equal((await y).join(), "1,1,1", device);
    equal(await runCase(65, device, { views: true }), null, `fuzz seed 65 --views (${device})`);
  }
});

Deno.test("regression: argmax of a recomputed value finds its maximum on the cpu backend", async () => {
  // argmax compared each recomputed float64 value with a max that had been stored as f32, so nothing matched.
  // It is now a primitive (one pass keeping the first maximum), and the cpu backend rounds every value.
  const x = tensor([[0.3, -1.7], [1.1, 0.2]], { device: "cpu" });
  const y = x.minimum(tensor([0.25, 0.9], { device: "cpu" })).tanh();
  equal((await y.argmax(1).data()).join(), "0,0"); // rows tanh([0.25, -1.7]) and tanh([0.25, 0.2])
  for (const seed of [948449977, 948600438, 3627305765, 3627369117, 3627377036, 3627479983]) {
    equal(await runCase(seed, "cpu"), null, `fuzz seed ${seed}`);
  }
});

Deno.test("fuzzer: an argmax between values tied within rounding is not a mismatch; a real one still is", async () => {
  // Seed 7117 takes the argmax of 65 softmax sums that are all 1 to 1e-11 in float64: float32 rounding picks
  // any of them. The fuzzer printed the realized buffer instead of the graph, and counted it as a mismatch.
  for (const device of ["cpu", "wasm", "webgpu"] as const) equal(await runCase(7117, device), null, device);
  // The tie test itself: rows 1 and 3 lead by 0.5 (no tie); then two leaders 1e-7 apart (a tie).
  const clear = tensor([[0.1, 0.2], [0.9, -0.4], [0.3, 0.3], [0.4, 0.8]]);
  const near = tensor([[0.5, 0.2], [0.5 + 1e-7, -0.4], [0.3, 0.3]]);
  for (const [x, tie] of [[clear, false], [near, true]] as const) {
    const root = x.mul(2).argmax(0).node;
    const leaves = await leafValues([root]);
    equal(argmaxNearTie(root, (n) => leaves.get(n)!), tie);
  }
});
