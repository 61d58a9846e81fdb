/**
 * Contiguous views bound as buffers of their own: which views qualify (`contiguousView`), that a parameter inside
 * an optimiser's pack is read by the same kernel as a parameter with a buffer of its own (same pipeline, same
 * floats), and that launches that bind several ranges of one buffer keep them apart.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { concat, getBackend, type Shape, type Tensor, tensor } from "../../mod.ts";
import { contiguousView } from "../../lib/runtime/plan.ts";
import { launchGroups } from "../../lib/runtime/launch_groups.ts";
import { AdamW } from "../../lib/nn/mod.ts";
import { PACK_ALIGN } from "../../lib/nn/optim/optimizer.ts";
import { realize } from "../../lib/tensor/tensor.ts";
import { TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

Deno.test("contiguousView: a run of a stored buffer in row-major order gives its offset; anything else null", async () => {
  const rng = new TestRng(71);
  const data = rng.normals(3 * 40);
  const base = tensor(data, { shape: [3, 40], device: "cpu" }) as F;
  const none = new Set<never>();
  const cases: { view: F; offset: number | null }[] = [
    { view: base.slice(1).slice([8, 32]).reshape([4, 6]) as F, offset: 48 },
    { view: base.slice([1, 3]) as F, offset: 40 },
    { view: base.reshape([6, 20]).slice([3, 4], [5, 15]) as F, offset: 65 },
    { view: base.reshape([12, 10]).slice([2, 5]).reshape([30]).slice([4, 9]) as F, offset: 24 },
    // Columns of several rows, every other element, and a reshape alone (nothing to gain) are not runs.
    { view: base.slice(null, [0, 8]) as F, offset: null },
    { view: base.slice(2).slice([0, 40, 2]) as F, offset: null },
    { view: base.reshape([120]) as F, offset: null },
    { view: base.T as F, offset: null },
  ];
  for (const { view, offset } of cases) {
    const r = contiguousView(view.node, none);
    equal(r?.offset ?? null, offset, `offset of a [${view.shape}] view`);
    if (r === null) continue;
    equal(r.base, base.node);
    // The view reads exactly the elements of the run, in order.
    deepEqual(Array.from(await view.data()), Array.from(data.slice(offset!, offset! + view.size)));
  }
});

Deno.test("webgpu: parameters inside a pack are read by the kernel of a standalone parameter, bit for bit", async () => {
  const be = await getBackend("webgpu");
  const rng = new TestRng(72);
  // A [5, 16] weight (80 elements, padded to 2 * PACK_ALIGN), then three [24, 16] ones (384 elements each), so
  // that none of the three starts where its pack does.
  const shapes = [[5, 16], [24, 16], [24, 16], [24, 16]];
  const randomOf = (shape: number[]) =>
    tensor(rng.normals(shape[0] * shape[1]), { shape, device: "webgpu" }) as F;
  const target = Object.fromEntries(shapes.map((s, i) => [`w${i}`, randomOf(s)]));
  const opt = new AdamW(target, { lr: 0.01, paramsPerPack: 4 });
  deepEqual(opt.packs[0].offsets, [0, 2 * PACK_ALIGN, 2 * PACK_ALIGN + 384, 2 * PACK_ALIGN + 768]);
  const grads = Object.fromEntries(shapes.map((s, i) => [`w${i}`, randomOf(s)]));
  await opt.step(grads);
  const packed = ["w1", "w2", "w3"].map((k) => opt.params[k] as F);
  // Standalone copies of the updated weights, each with a buffer of its own, from the pack's first row.
  const pack = [...opt.currentPacks.values()][0];
  const row = await pack.data();
  const own = [1, 2, 3].map((i) => {
    const at = opt.packs[0].offsets[i];
    return tensor(row.slice(at, at + 384), { shape: [24, 16], device: "webgpu" }) as F;
  });
  // Reading a weight reads its run of the pack and leaves it a view: the pack stays current.
  for (let i = 0; i < 3; i++) deepEqual(Array.from(await packed[i].data()), Array.from(await own[i].data()));
  equal(packed[0].node.storage, null);
  equal([...opt.currentPacks.values()][0], pack);
  const x = tensor(rng.normals(32 * 16), { shape: [32, 16], device: "webgpu" }) as F;
  const product = (w: F) => x.matmul(w.T as F).mul(0.5) as F;
  const want = await Promise.all(own.map((w) => product(w).data()));
  const kernels = be.stats().cachedKernels;
  // All three in one realization: on a software adapter they share a launch, binding three ranges of the pack.
  const got = packed.map(product);
  await realize(...got);
  equal(be.stats().cachedKernels, kernels, "the packed weights compiled a kernel of their own");
  for (let i = 0; i < 3; i++) {
    deepEqual(Array.from(await got[i].data()), Array.from(want[i]), `weight ${i + 1}`);
  }
  // Small elementwise kernels of the three share launches where the adapter merges them: each keeps its range.
  const square = (w: F) => w.mul(w).add(1) as F;
  const wantSq = await Promise.all(own.map((w) => square(w).data()));
  const sq = packed.map(square);
  await realize(...sq);
  const launches = (be as unknown as { lastRunLaunches?: number }).lastRunLaunches;
  if ((be as unknown as { launchPolicy: { mergeRuns: boolean } }).launchPolicy.mergeRuns) ok(launches! < 3);
  for (let i = 0; i < 3; i++) {
    deepEqual(Array.from(await sq[i].data()), Array.from(wantSq[i]), `square ${i + 1}`);
  }
});

Deno.test("webgpu: an empty run of a stored buffer is no binding (WebGPU refuses a binding of size zero)", async () => {
  const rng = new TestRng(73);
  const data = rng.normals(3 * 64);
  const base = tensor(data, { shape: [3, 64], device: "webgpu" }) as F;
  await base.realize();
  const empty = base.slice(1).slice([0, 0]) as F;
  const y = concat([empty, base.slice(2) as F]).mul(2) as F;
  deepEqual(Array.from(await y.data()), Array.from(data.slice(128, 192), (v) => Math.fround(v) * 2));
  equal(await (empty.sum() as F).item(), 0);
});

Deno.test("launch groups: ranges of one buffer are bindings of their own, and conflict as the buffer does", () => {
  const pack = { name: "pack" };
  const [out1, out2, out3] = [{}, {}, {}];
  const read = (range: string) => ({ buffer: pack, range, type: "f32", write: false });
  const write = (buffer: object) => ({ buffer, type: "f32", write: true });
  const steps = [
    { uses: [write(out1), read("0+1536")], mergeable: true },
    { uses: [write(out2), read("1536+1536")], mergeable: true },
    // Writes the buffer the first two read parts of: after them.
    { uses: [{ buffer: pack, type: "f32", write: true }, read("0+1536")], mergeable: true },
    { uses: [write(out3), read("0+1536")], mergeable: true },
  ];
  deepEqual(launchGroups(steps, { maxBindings: 8, maxSteps: 8 }), [[0, 1], [2], [3]]);
  // Two steps reading two ranges take four bindings, not three.
  deepEqual(launchGroups(steps.slice(0, 2), { maxBindings: 3, maxSteps: 8 }), [[0], [1]]);
});
