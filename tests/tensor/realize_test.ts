/**
 * realize() with one tensor given twice, in one call or in calls running at once (two `data()` calls not awaited
 * one after the other), on every device: each tensor gets its values. dispose() of one of several tensors that
 * hold one memory (built from one hash-consed expression and realized together, or returned unchanged by an op)
 * leaves the others' values, and the last one releases it.
 */
import { deepEqual, equal, notEqual, rejects } from "node:assert/strict";
import { realize, type Shape, type Tensor, tensor } from "../../mod.ts";

const DEVICES = ["cpu", "wasm", "webgpu"] as const;

/** 2·(1..8) and (1..8) + 1, lazily, with their values. */
function lazyPair(device: (typeof DEVICES)[number]) {
  const x = tensor([1, 2, 3, 4, 5, 6, 7, 8], { device });
  return {
    doubled: x.mul(2),
    plusOne: x.add(1),
    twice: [2, 4, 6, 8, 10, 12, 14, 16],
    next: [2, 3, 4, 5, 6, 7, 8, 9],
  };
}

Deno.test("realize() of one tensor given twice in one call", async () => {
  for (const device of DEVICES) {
    const { doubled, twice } = lazyPair(device);
    await realize(doubled, doubled);
    equal(doubled.isRealized, true);
    deepEqual(Array.from(await doubled.data()), twice, device);
  }
});

Deno.test("realize() of one tensor in calls running at once: each gets the values", async () => {
  for (const device of DEVICES) {
    const { doubled, plusOne, twice, next } = lazyPair(device);
    const [a, b, , c] = await Promise.all([
      doubled.data(),
      doubled.data(),
      realize(doubled, plusOne),
      plusOne.data(),
    ]);
    deepEqual([Array.from(a), Array.from(b), Array.from(c!)], [twice, twice, next], device);
    equal(doubled.isRealized && plusOne.isRealized, true);
    deepEqual(Array.from(await doubled.data()), twice, device);
  }
});

Deno.test("dispose() of one of two tensors realized from one expression leaves the other's values", async () => {
  for (const device of DEVICES) {
    const x = tensor([1, 2, 3, 4], { device });
    const [a, b] = [x.mul(2), x.mul(2)];
    equal(a.node, b.node); // one hash-consed expression
    await realize(a, b);
    const memory = b.node.storage!;
    a.dispose();
    await rejects(a.data(), /tensor used after dispose\(\)/);
    deepEqual(Array.from(await b.data()), [2, 4, 6, 8], device);
    equal(memory.released, false);
    b.dispose();
    equal(memory.released, true);
    // Realized by two data() calls at once: the same.
    const [c, d] = [x.mul(3), x.mul(3)];
    await Promise.all([c.data(), d.data()]);
    c.dispose();
    deepEqual(Array.from(await d.data()), [3, 6, 9, 12], device);
  }
});

Deno.test("what an op returns unchanged is a tensor of its own: disposing either leaves the other", async () => {
  const ops: [string, (t: Tensor<Shape, "f32">) => Promise<Tensor> | Tensor][] = [
    ["to its own device", (t) => t.to(t.device)],
    ["reshape to its shape", (t) => t.reshape([2, 2])],
    ["cast to its dtype", (t) => t.cast("f32")],
    ["permute in order", (t) => t.permute([0, 1])],
    ["pad by nothing", (t) => t.pad([[0, 0], [0, 0]])],
    ["expand to its shape", (t) => t.expand([2, 2])],
    ["slice of everything", (t) => t.slice(null, null)],
  ];
  for (const device of DEVICES) {
    for (const [what, op] of ops) {
      for (const first of ["copy", "original"] as const) {
        const x = tensor([1, 2, 3, 4], { shape: [2, 2], device });
        await realize(x);
        const y = await op(x);
        notEqual(y, x, what);
        const memory = x.node.storage!;
        const [gone, kept] = first === "copy" ? [y, x] : [x, y];
        gone.dispose();
        deepEqual(Array.from(await kept.data()), [1, 2, 3, 4], `${what} on ${device}, ${first} disposed`);
        kept.dispose();
        equal(memory.released, true, `${what} on ${device}: the last one releases the memory`);
      }
    }
    // Lazy: computing one gives both the result.
    const z = tensor([1, 2, 3, 4], { device }).add(1);
    const same = z.reshape([4]);
    await z.data();
    equal(same.isRealized, true, device);
    same.dispose();
    deepEqual(Array.from(await z.data()), [2, 3, 4, 5], device);
  }
});
