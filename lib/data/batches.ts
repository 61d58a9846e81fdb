/**
 * Mini-batch iterators over plain typed arrays: fixed-length language-model windows over a token stream
 * and index batches over `n` examples. Order is reshuffled every epoch from one seeded stream.
 *
 * @module
 */

import { Rng } from "./rng.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

/** Options for {@linkcode lmBatches}. */
export interface LmBatchOptions {
  /** Windows per batch (B). */
  batchSize: number;
  /** Tokens per window (T). */
  seqLen: number;
  /** Seed of the shuffle; required when `shuffle` is true. */
  seed?: number;
  /** Reshuffle the window order every epoch. Default `true`. */
  shuffle?: boolean;
  /** Number of passes over the windows; `Infinity` for an endless stream. Default 1. */
  epochs?: number;
  /** Skip the last batch of an epoch when it has fewer than `batchSize` windows. Default `true`. */
  dropLast?: boolean;
}

/** One language-model batch: `y[b, t] = x[b, t + 1]` in the token stream. */
export interface LmBatch {
  /** Inputs, `B × T` row-major (B may be smaller on the last batch when `dropLast` is false). */
  x: Int32Array;
  /** Targets, `B × T`: each input window shifted left by one token. */
  y: Int32Array;
  /** Number of windows in this batch (B). */
  batchSize: number;
  /** Epoch index, from 0. */
  epoch: number;
}

/** A number of passes: an integer >= 0, or Infinity for an endless stream. */
const EPOCHS = z.union([opt.index(), z.literal(Infinity)]);
const LM_BATCH_OPTIONS = z.object({
  batchSize: opt.count(),
  seqLen: opt.count(),
  seed: opt.seed().optional(),
  shuffle: z.boolean().optional(),
  epochs: EPOCHS.optional(),
  dropLast: z.boolean().optional(),
}).strict();
const ARRAY_BATCH_OPTIONS = LM_BATCH_OPTIONS.omit({ seqLen: true });

function makeRng(fn: string, shuffle: boolean, seed: number | undefined): Rng | null {
  if (!shuffle) return null;
  if (seed === undefined) {
    throw new Error(`${fn}: shuffle is true, so a seed is required (pass { seed } or { shuffle: false })`);
  }
  return new Rng(seed);
}

/**
 * Cuts a token stream into non-overlapping windows of `seqLen + 1` tokens starting at `0, T, 2T, ...`
 * (`floor((tokens.length - 1) / T)` windows) and yields them in batches: `x` is the first `T` tokens of
 * each window and `y` the last `T`, so `y` is `x` shifted by one. With `shuffle` the window order is
 * permuted afresh every epoch from one generator seeded with `seed`; every window appears exactly once
 * per epoch (minus the remainder batch when `dropLast` is true).
 *
 * @param tokens token ids.
 * @param options `batchSize`, `seqLen`, `seed`, `shuffle` (default true), `epochs` (default 1), `dropLast`
 *   (default true).
 * @throws {RangeError} when the stream is shorter than one window.
 * @throws {OptionsError} on an unknown key, a size that is not a positive integer, or a bad seed or epochs.
 * @throws {Error} when `dropLast` would leave no batch at all, or `shuffle` is set without a seed.
 *   All arguments are checked when `lmBatches` is called, before the first batch is requested.
 *
 * @example
 * ```ts
 * import { lmBatches } from "./batches.ts";
 * const tokens = Int32Array.from({ length: 1000 }, (_, i) => i % 50);
 * for (const { x, y } of lmBatches(tokens, { batchSize: 4, seqLen: 16, seed: 0 })) {
 *   // x, y: Int32Array of 4 × 16
 * }
 * ```
 */
export function lmBatches(tokens: Int32Array, options: LmBatchOptions): Generator<LmBatch> {
  checkOptions("lmBatches", LM_BATCH_OPTIONS, options);
  const { batchSize, seqLen, seed, shuffle = true, epochs = 1, dropLast = true } = options;
  const nWindows = Math.floor((tokens.length - 1) / seqLen);
  if (nWindows < 1) {
    throw new RangeError(
      `lmBatches: a window needs seqLen + 1 = ${seqLen + 1} tokens but the stream has ${tokens.length}`,
    );
  }
  if (dropLast && nWindows < batchSize) {
    throw new Error(
      `lmBatches: only ${nWindows} windows of ${seqLen} tokens fit in ${tokens.length} tokens, fewer than ` +
        `batchSize ${batchSize}, so dropLast would yield nothing; lower batchSize/seqLen or set dropLast: false`,
    );
  }
  const rng = makeRng("lmBatches", shuffle, seed);
  // Arguments are checked above, eagerly; the generator below only runs on the first next().
  return lmBatchGenerator(tokens, { batchSize, seqLen, epochs, dropLast, nWindows, rng });
}

function* lmBatchGenerator(
  tokens: Int32Array,
  plan: {
    batchSize: number;
    seqLen: number;
    epochs: number;
    dropLast: boolean;
    nWindows: number;
    rng: Rng | null;
  },
): Generator<LmBatch> {
  const { batchSize, seqLen, epochs, dropLast, nWindows, rng } = plan;
  const order = Int32Array.from({ length: nWindows }, (_, i) => i);
  for (let epoch = 0; epoch < epochs; epoch++) {
    if (rng !== null) rng.shuffle(order);
    for (let first = 0; first < nWindows; first += batchSize) {
      const rows = Math.min(batchSize, nWindows - first);
      if (rows < batchSize && dropLast) break;
      const x = new Int32Array(rows * seqLen);
      const y = new Int32Array(rows * seqLen);
      for (let b = 0; b < rows; b++) {
        const start = order[first + b] * seqLen;
        x.set(tokens.subarray(start, start + seqLen), b * seqLen);
        y.set(tokens.subarray(start + 1, start + seqLen + 1), b * seqLen);
      }
      yield { x, y, batchSize: rows, epoch };
    }
  }
}

/** Options for {@linkcode arrayBatches}. */
export interface ArrayBatchOptions {
  /** Indices per batch. */
  batchSize: number;
  /** Seed of the shuffle; required when `shuffle` is true. */
  seed?: number;
  /** Reshuffle the indices every epoch. Default `true`. */
  shuffle?: boolean;
  /** Skip the last batch of an epoch when it has fewer than `batchSize` indices. Default `false`. */
  dropLast?: boolean;
  /** Number of passes over the indices; `Infinity` for an endless stream. Default 1. */
  epochs?: number;
}

/**
 * Yields batches of example indices `0..n-1` as `Int32Array`s (use them to gather rows of your arrays).
 * With `shuffle` the order is permuted afresh every epoch from one generator seeded with `seed`; every
 * index appears exactly once per epoch (minus the remainder when `dropLast` is true).
 *
 * @param n number of examples.
 * @param options `batchSize`, `seed`, `shuffle` (default true), `dropLast` (default false), `epochs`
 *   (default 1).
 * @throws {RangeError} on a negative `n`, or fewer than `batchSize` examples with `dropLast` (no batch at all).
 * @throws {OptionsError} on an unknown key, a `batchSize` that is not a positive integer, or a bad seed or epochs.
 * @throws {Error} when `shuffle` is set without a seed.
 *
 * @example
 * ```ts
 * import { arrayBatches } from "./batches.ts";
 * for (const idx of arrayBatches(10, { batchSize: 4, seed: 1 })) {
 *   // idx: Int32Array of length 4, 4, then 2
 * }
 * ```
 */
export function arrayBatches(n: number, options: ArrayBatchOptions): Generator<Int32Array> {
  checkOptions("arrayBatches", ARRAY_BATCH_OPTIONS, options);
  const { batchSize, seed, shuffle = true, dropLast = false, epochs = 1 } = options;
  if (!Number.isInteger(n) || n < 0) {
    throw new RangeError(`arrayBatches: n must be an integer >= 0, got ${n}`);
  }
  if (dropLast && n < batchSize) {
    // Every batch would be the dropped remainder: a loop over it would run no step and say nothing.
    throw new RangeError(
      `arrayBatches: ${n} examples are fewer than batchSize ${batchSize}, so dropLast would yield nothing; ` +
        `lower batchSize or set dropLast: false`,
    );
  }
  const rng = makeRng("arrayBatches", shuffle, seed);
  return arrayBatchGenerator(n, { batchSize, dropLast, epochs, rng });
}

function* arrayBatchGenerator(
  n: number,
  plan: { batchSize: number; dropLast: boolean; epochs: number; rng: Rng | null },
): Generator<Int32Array> {
  const { batchSize, dropLast, epochs, rng } = plan;
  if (n === 0 || (dropLast && n < batchSize)) return;
  const order = Int32Array.from({ length: n }, (_, i) => i);
  for (let epoch = 0; epoch < epochs; epoch++) {
    if (rng !== null) rng.shuffle(order);
    for (let first = 0; first < n; first += batchSize) {
      const size = Math.min(batchSize, n - first);
      if (size < batchSize && dropLast) break;
      yield order.slice(first, first + size);
    }
  }
}
