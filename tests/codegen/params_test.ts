/**
 * Constants and seeds are launch parameters: a loop that changes them compiles its kernels once, and the caches of
 * compiled code are bounded.
 */
import { equal, ok, throws } from "node:assert/strict";
import { getBackend, rand, realize, tensor } from "../../mod.ts";
import { randUniform } from "../../lib/ir/rng.ts";
import { LruCache } from "../../lib/codegen/lru.ts";
import { lower } from "../../lib/codegen/lower.ts";
import { renderWGSL } from "../../lib/codegen/render_wgsl.ts";
import { assertClose, TestRng } from "../_helpers.ts";

for (const device of ["webgpu", "wasm", "cpu"] as const) {
  Deno.test(`${device}: a loop varying constants, a step counter and a seed compiles nothing after its first pass`, async () => {
    const be = await getBackend(device);
    const rng = new TestRng(71);
    const xs = rng.normals(96);
    const x = tensor(xs, { shape: [8, 12], device });
    await realize(x);
    let after: number | null = null;
    for (let i = 0; i < 25; i++) {
      const lr = 1e-3 * (1 + rng.next());
      const shift = rng.normal();
      const seed = (rng.next() * 2 ** 32) >>> 0;
      const noise = rand([8, 12], { seed, device });
      // One fused kernel: x·lr + shift + (i+1)·noise, then a row sum with an integer step count added.
      const y = x.mul(lr).add(shift).add(noise.mul(i + 1));
      const rows = y.sum(1);
      const counted = tensor([i], { dtype: "i32", device }).add(i * 7);
      const [got, count] = [await rows.data(), await counted.data()];
      const want = Array.from({ length: 8 }, (_, r) => {
        let acc = 0;
        for (let c = 0; c < 12; c++) {
          const j = r * 12 + c;
          acc += Math.fround(xs[j] * Math.fround(lr)) + Math.fround(shift) + (i + 1) * randUniform(seed, j);
        }
        return acc;
      });
      // 12 f32 roundings per row on values of size ~30: 1e-5 relative plus a small absolute margin.
      assertClose(got, want, { rtol: 1e-5, atol: 1e-4, what: `iteration ${i}` });
      equal(count[0], i * 8);
      if (i === 0) after = be.stats().cachedKernels;
    }
    equal(be.stats().cachedKernels, after, "a new constant or seed compiled a new kernel");
  });
}

Deno.test("a kernel's source does not contain the values of its constants or seeds", () => {
  const a = tensor([1, 2, 3]).mul(0.123456).add(rand([3], { seed: 987654321 }));
  const b = tensor([4, 5, 6]).mul(7.5).add(rand([3], { seed: 42 }));
  const ka = lower(a.node, () => false);
  const kb = lower(b.node, () => false);
  equal(renderWGSL(ka.kernel).source, renderWGSL(kb.kernel).source);
  ok(!renderWGSL(ka.kernel).source.includes("0.123456"));
  ok(!renderWGSL(ka.kernel).source.includes("987654321"));
  equal(ka.params.length, 2);
});

Deno.test("special values survive the trip through parameters on every device", async () => {
  for (const device of ["webgpu", "wasm", "cpu"] as const) {
    const x = tensor([1, -2, 0, 3], { device });
    const got = await x.mul(NaN).add(x.mul(0)).data();
    ok(Array.from(got).every(Number.isNaN), `${device}: NaN constant lost`);
    const inf = await x.add(Infinity).maximum(-0).data();
    ok(Array.from(inf).every((v) => v === Infinity), `${device}: Infinity constant lost`);
    const neg = await tensor([0], { device }).mul(-0).data();
    ok(Object.is(neg[0], 0) || Object.is(neg[0], -0));
  }
});

Deno.test("LruCache evicts the least recently used entry and refuses a bad capacity", () => {
  const evicted: string[] = [];
  const c = new LruCache<string, number>(3, { onEvict: (k) => evicted.push(k) });
  for (const k of ["a", "b", "c"]) c.set(k, k.charCodeAt(0));
  equal(c.get("a"), 97); // a is now the most recent
  c.set("d", 100); // evicts b
  c.set("e", 101); // evicts c
  equal(c.size, 3);
  equal(c.has("b"), false);
  equal(c.has("a"), true);
  equal(evicted.join(), "b,c");
  equal(c.evictions, 2);
  throws(() => new LruCache(0), /capacity must be a positive integer, got 0/);
  // A weight budget evicts the least recent entries until the total fits (the newest always stays).
  const w = new LruCache<string, string>(10, { weigh: (_k, v) => v.length, maxWeight: 10 });
  w.set("a", "xxxx");
  w.set("b", "xxxx");
  equal(w.weight, 8);
  w.set("c", "xxxx"); // 12 > 10: "a" goes
  equal([w.has("a"), w.has("b"), w.has("c"), w.weight].join(), "false,true,true,8");
  w.set("d", "x".repeat(20)); // alone over the budget: kept, everything older evicted
  equal([w.size, w.weight].join(), "1,20");
});
