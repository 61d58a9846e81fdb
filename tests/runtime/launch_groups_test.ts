/**
 * Launch grouping of prepared steps and one-off submissions: which independent kernels share one dispatch (hazards
 * by buffer, binding and size limits), and that a merged shader computes bit for bit what the kernels compute
 * launched one by one.
 */
import { deepEqual, equal, match, ok, throws } from "node:assert/strict";
import { getWebGPU, tensor } from "../../mod.ts";
import { launchGroups } from "../../lib/runtime/launch_groups.ts";
import {
  GPU_LAUNCHES,
  launchPolicyFor,
  namedLaunchPolicy,
  SOFTWARE_LAUNCHES,
} from "../../lib/codegen/launch_policy.ts";
import { BoundPlan, graphSignature, planFor } from "../../lib/runtime/plan.ts";
import { realizeNodes, resolveStorage } from "../../lib/runtime/realize.ts";
import type { Storage } from "../../lib/ir/node.ts";
import { paramValue } from "../../lib/codegen/lower.ts";
import { assertClose, TEST_SEED, TestRng } from "../_helpers.ts";

const use = (buffer: object, write = false, type = "f32") => ({ buffer, type, write });

Deno.test("launch groups: independent steps share a launch; a read after a write, a write after a read, two writes do not", () => {
  const [a, b, c, d, e, f] = ["a", "b", "c", "d", "e", "f"].map((name) => ({ name }));
  const groups = launchGroups([
    { uses: [use(c, true), use(a)], mergeable: true }, // 0: c = f(a)
    { uses: [use(d, true), use(a), use(b)], mergeable: true }, // 1: d = f(a, b): independent of 0
    { uses: [use(e, true), use(c)], mergeable: true }, // 2: reads c (after 0)
    { uses: [use(a, true), use(b)], mergeable: true }, // 3: overwrites a, read by 0 and 1
    { uses: [use(f, true), use(b)], mergeable: false }, // 4: must run alone
    { uses: [use(e, true), use(b)], mergeable: true }, // 5: writes e after 2 wrote it
    { uses: [use(f, true, "vec4<f32>"), use(d)], mergeable: true }, // 6: writes f after 4
  ], { maxBindings: 8, maxSteps: 8 });
  deepEqual(groups, [[0, 1], [2, 3], [4], [5, 6]]);
});

Deno.test("launch groups: a launch binds each buffer once and stays within the binding and step limits", () => {
  const shared = { name: "x" };
  const steps = Array.from({ length: 9 }, () => ({ uses: [use({}, true), use(shared)], mergeable: true }));
  // Each step adds its output; the shared input is bound once: 1 + 3 outputs fit in 4 bindings.
  deepEqual(launchGroups(steps, { maxBindings: 4, maxSteps: 8 }).map((g) => g.length), [3, 3, 3]);
  deepEqual(launchGroups(steps, { maxBindings: 64, maxSteps: 4 }).map((g) => g.length), [4, 4, 1]);
  // The same buffer read with another element type is another binding.
  const typed = [
    { uses: [use({}, true), use(shared)], mergeable: true },
    { uses: [use({}, true), use(shared, false, "vec4<f32>")], mergeable: true },
  ];
  deepEqual(launchGroups(typed, { maxBindings: 3, maxSteps: 8 }), [[0], [1]]);
});

Deno.test("merged launches (webgpu), prepared and one-off, equal kernels launched one by one, bit for bit", async () => {
  const be = await getWebGPU();
  const rng = new TestRng(31);
  const mk = (shape: number[]) =>
    tensor(Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rng.next() * 2 - 1), {
      shape,
      device: "webgpu",
    });
  const x = mk([48, 32]);
  const w1 = mk([32, 40]);
  const w2 = mk([40, 8]);
  const w3 = mk([32, 32]);
  const h = x.matmul(w1).mul(0.7).relu(); // a template kernel with a parameter, read again below
  const roots = [
    h,
    x.matmul(w3.T).add(x).exp(), // shares x with h's kernel, reads x as vec4 and element by element
    x.matmul(mk([32, 8])), // narrow: a workgroup smaller than the merged one
    x.sum(1).mul(3), // a reduction loop
    mk([5, 7]).mul(-2).add(1.5), // a small elementwise kernel
    h.matmul(w2), // after h: a later launch
  ].map((t) => t.node);
  // One by one: each root on its own (h again as the first kernel of the last root's run, which depends on it).
  const eager: Storage[] = [];
  for (const r of roots) eager.push(...await realizeNodes([r]));
  // All roots in one submission: independent kernels share launches where the policy merges runs.
  const together = await realizeNodes(roots);
  if (be.launchPolicy.mergeRuns) ok(be.lastRunLaunches < roots.length, `${be.lastRunLaunches} launches`);
  const sig = graphSignature(roots);
  const plan = planFor(roots, sig, { maxInputs: be.maxInputs });
  const bound = new BoundPlan(be, plan, {
    leaves: sig.leaves.map((n) => resolveStorage(n.storage!, be)),
    params: sig.params.map(paramValue),
  });
  await bound.run();
  equal(plan.launches, roots.length);
  ok(bound.launches < plan.launches, `${bound.launches} launches for ${plan.launches} kernels`);
  for (const [i, r] of roots.entries()) {
    const want = await be.read(eager[i], r.dtype, r.size);
    deepEqual(await be.read(bound.root(i), r.dtype, r.size), want, `root ${i}, prepared`);
    deepEqual(await be.read(together[i], r.dtype, r.size), want, `root ${i}, one submission`);
    eager[i].release();
    together[i].release();
  }
  bound.dispose();
});

Deno.test("launch policy: software adapters share launches only between small kernels; GPUs between unfilled ones", () => {
  const soft = launchPolicyFor({ description: "llvmpipe (LLVM 15.0.6, 256 bits)", isFallback: true });
  const gpu = launchPolicyFor({ description: "NVIDIA H100 80GB HBM3", isFallback: false });
  ok(soft.mayShare(1, true) && soft.mayShare(2, true) && !soft.mayShare(3, true));
  ok(soft.mayShare(24, false) && !soft.mayShare(1376, false));
  ok(gpu.mayShare(64, true) && !gpu.mayShare(65, false));
  // One-off submissions merge where launches cost the device milliseconds, not where they cost microseconds.
  ok(soft.mergeRuns && !gpu.mergeRuns);
});

Deno.test("launch policy by name: software and gpu, any other name refused with the names there are", () => {
  equal(namedLaunchPolicy("software"), SOFTWARE_LAUNCHES);
  equal(namedLaunchPolicy("gpu"), GPU_LAUNCHES);
  for (const bad of ["GPU", "fast", "toString", "__proto__", " gpu"]) {
    throws(
      () => namedLaunchPolicy(bad),
      (e: Error) =>
        e.message.includes(`TESSERA_LAUNCH_POLICY is ${JSON.stringify(bad)}`) &&
        /"software" or "gpu"/.test(e.message),
    );
  }
});

/** Runs the launch-policy child with `TESSERA_LAUNCH_POLICY=policy` and this process's TEST_SEED. */
async function policyChild(policy: string, seed: number) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_launch_policy_child.ts", import.meta.url).pathname, String(seed)],
    env: { TESSERA_LAUNCH_POLICY: policy, TEST_SEED: String(TEST_SEED) },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

interface ChildRun {
  records: Record<string, number>[];
  state: Record<string, number[]>;
  replayed: number;
}

Deno.test("TESSERA_LAUNCH_POLICY runs either policy on this adapter: a LoRA transformer trains alike under both, replayed bit for bit", async () => {
  const seed = new TestRng(47).int(0, 2 ** 20);
  const runs: Record<
    string,
    { policy: string; rowKernels: boolean; description: string; deviceLine: string; runs: ChildRun[] }
  > = {};
  for (const policy of ["gpu", "software"]) {
    const child = await policyChild(policy, seed);
    equal(child.code, 0, child.stderr);
    runs[policy] = JSON.parse(child.stdout);
    const [eager, compiled] = runs[policy].runs;
    equal(compiled.replayed, 5);
    deepEqual(compiled.records, eager.records, `${policy}: replayed records`);
    deepEqual(compiled.state, eager.state, `${policy}: replayed parameters`);
  }
  // The device's description (what reports and resumed experiments compare) names the variable and its value.
  // This process's device: with neither variable set (as in CI), the adapter's own words and nothing added.
  const own = (await getWebGPU()).description.replace(/, with TESSERA_.*$/, "");
  if (!Deno.env.get("TESSERA_LAUNCH_POLICY") && !Deno.env.get("TESSERA_SUBGROUP_MATMUL")) {
    equal((await getWebGPU()).description, own);
  }
  for (const policy of ["gpu", "software"]) {
    equal(runs[policy].description, `${own}, with TESSERA_LAUNCH_POLICY=${policy}`);
    match(runs[policy].deviceLine, new RegExp(`^webgpu: .*, with TESSERA_LAUNCH_POLICY=${policy}$`));
  }
  match(runs.gpu.policy, /^gpu /);
  equal(runs.gpu.rowKernels, false);
  match(runs.software.policy, /^software /);
  equal(runs.software.rowKernels, true);
  // The policies choose launches and whether a norm's statistics get a kernel of their own, not the arithmetic:
  // the same f32 operations, so agreement to a few ulps after seven AdamW steps.
  const [gpu, soft] = [runs.gpu.runs[1], runs.software.runs[1]];
  assertClose(gpu.records.map((r) => r.loss), soft.records.map((r) => r.loss), { rtol: 1e-5, atol: 0 });
  for (const [path, values] of Object.entries(soft.state)) {
    assertClose(gpu.state[path], values, { rtol: 1e-5, atol: 1e-6, what: path });
  }
});

Deno.test("TESSERA_LAUNCH_POLICY with a name that is no policy stops at the device's creation, naming it", async () => {
  const child = await policyChild("fast", 1);
  ok(child.code !== 0, child.stdout);
  match(child.stderr, /TESSERA_LAUNCH_POLICY is "fast"; the launch policies are "software" or "gpu"/);
});
