/**
 * The matmul variants for real GPUs, run on this machine's adapter for correctness: the workgroup-shared tiles
 * (with edges in every dimension, a batch, a transposed operand and a fused epilogue) and f16 storage read as
 * `vec4<f16>` with f32 accumulation, the subgroup tiles with their shuffles emulated through workgroup memory (this
 * adapter has no subgroups: the native shader is checked to differ only in the exchange itself); and the policy
 * table that picks them per adapter.
 */
import { equal, ok } from "node:assert/strict";
import { getWebGPU, realize, type Shape, type Tensor, tensor } from "../../mod.ts";
import { lower } from "../../lib/codegen/lower.ts";
import { resolveStorage } from "../../lib/runtime/realize.ts";
import { type RenderedKernel, renderWGSL } from "../../lib/codegen/render_wgsl.ts";
import {
  GPU_POLICY,
  GPU_SUBGROUP_POLICY,
  matmulPolicyFor,
  SOFTWARE_POLICY,
} from "../../lib/codegen/matmul_policy.ts";
import { GPU_SHARED_TILE, GPU_SUBGROUP_TILE, type MatmulTile } from "../../kernels/matmul.wgsl.ts";
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

Deno.test("a batch of more than 65535 products runs the generic kernel, within the dispatch limit, and equals float64", async () => {
  // The template runs one product per workgroup along z: 70,000 of them were refused ("dispatch 1x1x70000 exceeds
  // 65535 per dimension") where cpu and wasm computed them.
  const rng = new TestRng(65536);
  const batch = 65535 + rng.int(1, 5000);
  for (const device of ["webgpu", "wasm", "cpu"] as const) {
    const a = tensor(rng.normals(batch * 6), { shape: [batch, 2, 3], device }) as F;
    const b = tensor(rng.normals(batch * 6), { shape: [batch, 3, 2], device }) as F;
    await realize(a, b);
    const out = a.matmul(b) as F;
    if (device === "webgpu") {
      const rendered = renderWGSL(lower(out.node, () => false).kernel);
      ok(rendered.dispatch.every((d) => d <= 65535), `dispatch ${rendered.dispatch.join("x")}`);
    }
    const want = await reference(out);
    // Three f32 products of normal values per element: rounding stays below 1e-5 of their magnitude.
    assertClose(await out.data(), want, { rtol: 1e-5, atol: 1e-5, what: `${batch} products on ${device}` });
  }
});

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

for (const [m, k, n, batch] of [[37, 29, 41, 1], [16, 64, 24, 2]]) {
  Deno.test(`subgroup matmul ${batch}x ${m}x${k}·${k}x${n} (shuffles emulated on this adapter) equals float64`, async () => {
    const rng = new TestRng(m * 11 + n + batch);
    const mk = (shape: number[]) =>
      tensor(rng.normals(shape.reduce((p, q) => p * q, 1)), { shape, device: "webgpu" }) as F;
    const a = mk([batch, m, k]);
    const bt = mk([batch, n, k]);
    const x = mk([batch, m, 7]);
    const y = mk([batch, 7, n]);
    const r = mk([batch, m, n]);
    await realize(a, bt, x, y, r);
    // Two products in one accumulator and an epilogue: every part of the variant.
    const out = a.matmul(bt.transpose() as F).add(x.matmul(y)).add(r) as F;
    const want = await reference(out);
    for (const tile of [GPU_SUBGROUP_TILE, { tm: 2, tn: 3, wm: 4, wn: 4, subgroup: true }]) {
      const { data, source } = await runRendered(
        out,
        (kernel) => renderWGSL(kernel, { tile, shuffle: "emulated" }),
      );
      ok(!source.includes("subgroupShuffle") && source.includes("lanes_"), "emulated shuffles");
      assertClose(data, want, { rtol: 1e-4, atol: 1e-4, what: `subgroup ${JSON.stringify(tile)}` });
    }
  });
}

Deno.test("subgroup matmul: the native shader differs from the verified emulation only in how lanes exchange values", () => {
  const rng = new TestRng(78);
  const a = tensor(rng.normals(48 * 32), { shape: [48, 32] }) as F;
  const b = tensor(rng.normals(32 * 24), { shape: [32, 24] }) as F;
  const l = lower(a.matmul(b).node, () => false);
  const native = renderWGSL(l.kernel, { tile: GPU_SUBGROUP_TILE }).source.split("\n");
  const emulated = renderWGSL(l.kernel, { tile: GPU_SUBGROUP_TILE, shuffle: "emulated" }).source.split("\n");
  ok(native[0] === "enable subgroups;" && native.some((line) => line.includes("subgroupShuffle(v, lane)")));
  ok(native.some((line) => line.includes("@builtin(subgroup_invocation_id) sid: u32")));
  // Outside the exchange function, the entry point's builtins and the lane of a row's first lane: the same lines.
  const strip = (lines: string[]) =>
    lines.filter((line) =>
      !/enable subgroups|subgroupShuffle|lanes_|workgroupBarrier|fn shuffle_|^}$|return |builtin|row0/.test(
        line,
      )
    );
  equal(strip(native).join("\n"), strip(emulated).join("\n"));
});

Deno.test("matmul policy: subgroup tiles only on a GPU whose device has the subgroups feature (asked for)", () => {
  const h100 = { description: "NVIDIA H100 80GB HBM3", isFallback: false };
  equal(matmulPolicyFor(h100), GPU_POLICY);
  equal(matmulPolicyFor({ ...h100, subgroups: false }), GPU_POLICY);
  equal(matmulPolicyFor({ ...h100, subgroups: true }), GPU_SUBGROUP_POLICY);
  equal(
    matmulPolicyFor({ description: "llvmpipe (LLVM 15.0.6, 256 bits)", isFallback: true, subgroups: true }),
    SOFTWARE_POLICY,
  );
  equal(GPU_SUBGROUP_POLICY.choose(512, 32, 64), GPU_SUBGROUP_TILE);
  equal(GPU_SUBGROUP_POLICY.choose(512, 512, 512), GPU_SHARED_TILE);
});
