/**
 * The matmul variants for real GPUs, run on this machine's adapter for correctness: the workgroup-shared tiles
 * (with edges in every dimension, a batch, a transposed operand and a fused epilogue) and f16 storage read as
 * `vec4<f16>` with f32 accumulation; and the policy table that picks them per adapter.
 */
import { equal, ok } from "node:assert/strict";
import { getWebGPU, realize, type Shape, type Tensor, tensor } from "../../mod.ts";
import { lower } from "../../lib/codegen/lower.ts";
import { resolveStorage } from "../../lib/runtime/realize.ts";
import { type RenderedKernel, renderWGSL } from "../../lib/codegen/render_wgsl.ts";
import { GPU_POLICY, matmulPolicyFor, SOFTWARE_POLICY } from "../../lib/codegen/matmul_policy.ts";
import { GPU_SHARED_TILE, type MatmulTile } from "../../kernels/matmul.wgsl.ts";
import { assertClose, reference, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

/** Runs `t`'s single matmul kernel (inputs realized, no parameter slots) as rendered by `render`. */
async function runRendered(t: Tensor, render: (k: ReturnType<typeof lower>["kernel"]) => RenderedKernel) {
  const be = await getWebGPU();
  const l = lower(t.node, () => false);
  ok(l.kernel.matmul !== null, "the product uses the matmul template");
  equal(l.kernel.params?.length ?? 0, 0);
  const r = render(l.kernel);
  const out = be.alloc("f32", t.size);
  const buffers = [out, ...l.inputs.map((n) => resolveStorage(n.storage!, be))];
  await be.run([{ name: "variant", wgsl: r.source, dispatch: r.dispatch, host: () => {}, buffers }]);
  const data = await be.read(out, "f32", t.size);
  out.release();
  return { data, source: r.source };
}

const SHARED_SMALL: MatmulTile = { tm: 2, tn: 2, wm: 4, wn: 8, bk: 8 };

for (const [m, k, n, batch] of [[70, 37, 65, 1], [33, 64, 40, 2], [64, 48, 64, 1]]) {
  Deno.test(`workgroup-shared matmul ${batch}x ${m}x${k}·${k}x${n} (transposed B, bias) equals float64`, async () => {
    const rng = new TestRng(m * 7 + n + batch);
    const a = tensor(rng.normals(batch * m * k), { shape: [batch, m, k], device: "webgpu" }) as F;
    const bt = tensor(rng.normals(batch * n * k), { shape: [batch, n, k], device: "webgpu" }) as F;
    const bias = tensor(rng.normals(n), { shape: [n], device: "webgpu" }) as F;
    await realize(a, bt, bias);
    const out = a.matmul(bt.transpose() as F).add(bias) as F;
    const want = await reference(out);
    for (const tile of [GPU_SHARED_TILE, SHARED_SMALL]) {
      const { data, source } = await runRendered(out, (kernel) => renderWGSL(kernel, { tile }));
      ok(source.includes("var<workgroup> tileA") && source.includes("workgroupBarrier()"));
      // k terms of size ~1: f32 rounding of the sums stays below 1e-4 relative to their magnitude.
      assertClose(data, want, { rtol: 1e-4, atol: 1e-4, what: `shared ${JSON.stringify(tile)}` });
    }
  });
}

Deno.test("f16 storage with f32 accumulation: read as vec4<f16>, equal to the float64 product of the f16 values", async () => {
  const be = await getWebGPU();
  if (!be.hasF16) {
    // Without shader-f16 the f16 tensors cannot be on the device at all; the CPU backend covers f16 elsewhere.
    equal(be.hasF16, false);
    return;
  }
  const rng = new TestRng(77);
  const [m, k, n] = [48, 64, 40];
  const a16 = tensor(rng.normals(m * k), { shape: [m, k], device: "webgpu" }).cast("f16");
  const b16 = tensor(rng.normals(k * n), { shape: [k, n], device: "webgpu" }).cast("f16");
  await realize(a16, b16);
  const out = a16.cast("f32").matmul(b16.cast("f32")) as F;
  const want = await reference(out);
  const { data, source } = await runRendered(out, (kernel) => renderWGSL(kernel));
  ok(
    source.includes("enable f16;") && source.includes("array<vec4<f16>>"),
    "the register template reads vec4<f16>",
  );
  assertClose(data, want, { rtol: 1e-4, atol: 1e-4, what: "f16 storage, register template" });
  const shared = await runRendered(out, (kernel) => renderWGSL(kernel, { tile: SHARED_SMALL }));
  assertClose(shared.data, want, { rtol: 1e-4, atol: 1e-4, what: "f16 storage, shared tiles" });
});

Deno.test("matmul policy: software adapters keep register tiles; GPUs get shared tiles for wide products", async () => {
  const soft = matmulPolicyFor({ description: "llvmpipe (LLVM 15.0.6, 256 bits)", isFallback: false });
  equal(soft, SOFTWARE_POLICY);
  equal(matmulPolicyFor({ description: "SwiftShader Device", isFallback: false }), SOFTWARE_POLICY);
  const gpu = matmulPolicyFor({ description: "NVIDIA H100 80GB HBM3", isFallback: false });
  equal(gpu, GPU_POLICY);
  equal(gpu.choose(4096, 4096, 4096).bk, GPU_SHARED_TILE.bk);
  equal(gpu.choose(512, 8, 64).bk, undefined, "a rank-8 product keeps the register template");
  equal(soft.choose(4096, 4096, 4096).bk, undefined);
  const be = await getWebGPU();
  ok(be.matmulPolicy === SOFTWARE_POLICY || !be.isFallback, `${be.description}: ${be.matmulPolicy.name}`);
});
