import assert from "node:assert/strict";
import { arrayBatches, lmBatches, Rng } from "../../lib/data/mod.ts";
import { epochIndices, sampleWindows } from "../../lib/train/mod.ts";
import { refusedOptions } from "../_helpers.ts";

/** A random permutation of 0..n-1 as tokens: every value is distinct, so a window's start is indexOf(x[0]). */
function distinctTokens(n: number, seed: number): Int32Array {
  return new Rng(seed).shuffle(Int32Array.from({ length: n }, (_, i) => i));
}

Deno.test("lmBatches: y is x shifted by one and every window appears once per epoch", () => {
  const seqLen = 7;
  const batchSize = 4;
  const tokens = distinctTokens(7 * 13 + 1 + 3, 21); // floor((95 - 1) / 7) = 13 windows
  const nWindows = 13;
  const position = new Map(Array.from(tokens, (t, i) => [t, i]));
  const epochs: number[][] = [[], [], []];
  let batches = 0;
  for (const batch of lmBatches(tokens, { batchSize, seqLen, seed: 5, epochs: 3, dropLast: false })) {
    batches++;
    assert.equal(batch.x.length, batch.batchSize * seqLen);
    assert.equal(batch.y.length, batch.batchSize * seqLen);
    for (let b = 0; b < batch.batchSize; b++) {
      const start = position.get(batch.x[b * seqLen])!;
      assert.equal(start % seqLen, 0, "windows start on multiples of seqLen");
      for (let t = 0; t < seqLen; t++) {
        assert.equal(batch.x[b * seqLen + t], tokens[start + t]);
        assert.equal(batch.y[b * seqLen + t], tokens[start + t + 1]);
      }
      epochs[batch.epoch].push(start / seqLen);
    }
  }
  assert.equal(batches, 3 * Math.ceil(nWindows / batchSize));
  for (const order of epochs) {
    assert.deepEqual([...order].sort((a, b) => a - b), Array.from({ length: nWindows }, (_, i) => i));
  }
  assert.notDeepEqual(epochs[0], epochs[1], "the order is reshuffled each epoch");
  assert.notDeepEqual(epochs[0], Array.from({ length: nWindows }, (_, i) => i));
});

Deno.test("lmBatches: seeded determinism, unshuffled order, dropLast and errors", () => {
  const tokens = distinctTokens(200, 3);
  const collect = (seed: number) =>
    [...lmBatches(tokens, { batchSize: 3, seqLen: 10, seed, epochs: 2 })].map((b) => Array.from(b.x));
  assert.deepEqual(collect(1), collect(1));
  assert.notDeepEqual(collect(1), collect(2));

  // 19 windows, batches of 3 with dropLast (default): 6 full batches per epoch, 18 distinct windows.
  const dropped = [...lmBatches(tokens, { batchSize: 3, seqLen: 10, seed: 1 })];
  assert.equal(dropped.length, 6);
  assert.ok(dropped.every((b) => b.batchSize === 3 && b.x.length === 30));
  const starts = new Set(dropped.flatMap((b) => [0, 1, 2].map((r) => tokens.indexOf(b.x[r * 10]))));
  assert.equal(starts.size, 18);

  const ordered = [...lmBatches(tokens, { batchSize: 5, seqLen: 10, shuffle: false, dropLast: false })];
  const orderedStarts = ordered.flatMap((b) =>
    Array.from({ length: b.batchSize }, (_, r) => tokens.indexOf(b.x[r * 10]))
  );
  assert.deepEqual(orderedStarts, Array.from({ length: 19 }, (_, i) => i * 10));

  assert.throws(() => lmBatches(tokens.subarray(0, 10), { batchSize: 1, seqLen: 10, seed: 0 }), /11 tokens/);
  assert.throws(() => lmBatches(tokens, { batchSize: 30, seqLen: 10, seed: 0 }), /only 19 windows/);
  assert.throws(() => lmBatches(tokens, { batchSize: 2, seqLen: 10 }), /seed is required/);
  assert.throws(
    () => lmBatches(tokens, { batchSize: 0, seqLen: 10, seed: 0 }),
    /option "batchSize" must be >= 1, got 0/,
  );
});

Deno.test("lmBatches: an endless stream keeps yielding full batches", () => {
  const tokens = distinctTokens(50, 4);
  const it = lmBatches(tokens, { batchSize: 2, seqLen: 8, seed: 0, epochs: Infinity });
  const epochsSeen = new Set<number>();
  for (let step = 0; step < 40; step++) {
    const { value, done } = it.next();
    assert.ok(!done);
    assert.equal(value.x.length, 16);
    epochsSeen.add(value.epoch);
  }
  assert.equal(epochsSeen.size, 14); // 6 windows → 3 batches per epoch → 40 steps span epochs 0..13
});

Deno.test("arrayBatches: covers 0..n-1 once per epoch, reshuffles, honours dropLast and shuffle=false", () => {
  const n = 10;
  const all = [...arrayBatches(n, { batchSize: 3, seed: 8, epochs: 2 })];
  assert.deepEqual(all.map((b) => b.length), [3, 3, 3, 1, 3, 3, 3, 1]);
  const first = all.slice(0, 4).flatMap((b) => Array.from(b));
  const second = all.slice(4).flatMap((b) => Array.from(b));
  for (const epoch of [first, second]) {
    assert.deepEqual([...epoch].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  }
  assert.notDeepEqual(first, second);

  const again = [...arrayBatches(n, { batchSize: 3, seed: 8, epochs: 2 })];
  assert.deepEqual(again, all);
  assert.notDeepEqual([...arrayBatches(n, { batchSize: 3, seed: 9 })], all.slice(0, 4));

  const dropped = [...arrayBatches(n, { batchSize: 3, seed: 8, dropLast: true })];
  assert.deepEqual(dropped.map((b) => b.length), [3, 3, 3]);
  assert.equal(new Set(dropped.flatMap((b) => Array.from(b))).size, 9);

  const ordered = [...arrayBatches(n, { batchSize: 4, shuffle: false })].map((b) => Array.from(b));
  assert.deepEqual(ordered, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);

  assert.deepEqual([...arrayBatches(0, { batchSize: 4, shuffle: false, epochs: Infinity })], []);
  assert.throws(() => arrayBatches(5, { batchSize: 2 }), /seed is required/);
  assert.throws(() => arrayBatches(-1, { batchSize: 2, seed: 0 }), /n must be/);
  // Fewer examples than one batch with dropLast: no batch at all, refused rather than an empty loop.
  assert.throws(
    () => arrayBatches(3, { batchSize: 5, seed: 0, dropLast: true }),
    /arrayBatches: 3 examples are fewer than batchSize 5, so dropLast would yield nothing/,
  );
});

Deno.test("epochIndices: a batch holds distinct examples, and steps whose positions would round are refused", () => {
  const n = 10;
  for (const step of [1, 7, 2 ** 40 + 3]) {
    const idx = Array.from(epochIndices(n, { batchSize: 4, seed: 4, step }));
    assert.equal(new Set(idx).size, 4, `step ${step}: ${idx}`);
  }
  // (2^52 − 1)·4 is past 2^53: positions rounded, and the batch at step 2^52 held example 3 twice.
  assert.throws(
    () => epochIndices(n, { batchSize: 4, seed: 4, step: 2 ** 52 }),
    /past 2\^53, where positions round/,
  );
});

Deno.test("sampleWindows and epochIndices refuse an unknown option or a bad seed, naming themselves", async () => {
  const rng = new Rng(12);
  const tokens = Int32Array.from({ length: 60 }, (_, i) => i);
  const seed = rng.int(1 << 30);
  // Dropped before: { shuffel: false } still drew random windows, and { epochs: 3 } set no end (there is none).
  await refusedOptions(
    () => sampleWindows(tokens, { batchSize: 2, seqLen: 4, seed, step: 1, shuffel: false } as never),
    /^sampleWindows: unknown option "shuffel"$/,
  );
  await refusedOptions(
    () => epochIndices(10, { batchSize: 2, seed, step: 1, epochs: 3 } as never),
    /^epochIndices: unknown option "epochs"$/,
  );
  // A bad seed was named as deriveSeed's, which the caller never called.
  for (const bad of [0.5, NaN]) {
    await refusedOptions(
      () => sampleWindows(tokens, { batchSize: 2, seqLen: 4, seed: bad, step: 1 }),
      new RegExp(`^sampleWindows: option "seed" must be .*, got ${bad}$`),
    );
    await refusedOptions(
      () => epochIndices(10, { batchSize: 2, seed: bad, step: 1 }),
      new RegExp(`^epochIndices: option "seed" must be .*, got ${bad}$`),
    );
  }
  await refusedOptions(
    () => sampleWindows(tokens, { batchSize: 2, seqLen: 0, seed, step: 1 }),
    /^sampleWindows: option "seqLen" must be >= 1, got 0$/,
  );
  // Valid calls: each window is a run of consecutive tokens and its target the run shifted by one; steps 1..5 of
  // batches of 2 over 10 examples visit each example once.
  const { x, y } = sampleWindows(tokens, { batchSize: 3, seqLen: 5, seed, step: 2 });
  for (let i = 0; i < x.length; i++) {
    if (i % 5 > 0) assert.equal(x[i], x[i - 1] + 1);
    assert.equal(y[i], x[i] + 1);
  }
  const epoch = [1, 2, 3, 4, 5].flatMap((step) => Array.from(epochIndices(10, { batchSize: 2, seed, step })));
  assert.deepEqual(epoch.sort((a, b) => a - b), Array.from({ length: 10 }, (_, i) => i));
});

Deno.test("lmBatches and arrayBatches refuse an unknown option key instead of dropping it", () => {
  const tokens = Int32Array.from({ length: 21 }, (_, i) => i);
  // Dropped, { shuffel: false } with a seed drew shuffled windows, and { droplast: true } kept the short batch.
  assert.throws(
    () => lmBatches(tokens, { batchSize: 2, seqLen: 5, seed: 1, shuffel: false } as never),
    /lmBatches: unknown option "shuffel"/,
  );
  const ordered = [...lmBatches(tokens, { batchSize: 2, seqLen: 5, seed: 1, shuffle: false })];
  assert.deepEqual(Array.from(ordered[0].x), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.throws(
    () => arrayBatches(5, { batchSize: 2, shuffle: false, droplast: true } as never),
    /arrayBatches: unknown option "droplast"/,
  );
  assert.equal([...arrayBatches(5, { batchSize: 2, shuffle: false, dropLast: true })].length, 2);
  assert.throws(() => lmBatches(tokens, { batchSize: 2, seqLen: 5, seed: 1, epochs: -1 }), /"epochs"/);
  const endless = arrayBatches(3, { batchSize: 3, shuffle: false, epochs: Infinity });
  assert.deepEqual([endless.next().value, endless.next().value], [
    Int32Array.of(0, 1, 2),
    Int32Array.of(0, 1, 2),
  ]);
});
