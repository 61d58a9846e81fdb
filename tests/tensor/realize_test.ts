/**
 * realize() with one tensor given twice, in one call or in calls running at once (two `data()` calls not awaited
 * one after the other), on every device: each tensor gets its values.
 */
import { deepEqual, equal } from "node:assert/strict";
import { realize, tensor } from "../../mod.ts";

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
