/**
 * Batches as pure functions of `(seed, step)`, so that a run resumed from a checkpoint at step k sees exactly
 * the batches an uninterrupted run sees from step k + 1 on, with no generator state to save.
 *
 * @module
 */
import { Rng } from "../data/rng.ts";
import { deriveSeed } from "../nn/init.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

/** Options of {@link sampleWindows}. */
export interface WindowOptions {
  /** Windows per batch. */
  batchSize: number;
  /** Tokens per window. */
  seqLen: number;
  /** Seed of the run. */
  seed: number;
  /** Step number (1-based); the batch depends on nothing else. */
  step: number;
}

/** A language-model batch: `y[b, t] = x[b, t + 1]` in the token stream; both `batchSize × seqLen`, row-major. */
export interface WindowBatch {
  /** Inputs. */
  x: Int32Array;
  /** Targets (inputs shifted by one token). */
  y: Int32Array;
}

// The seed is checked here so that a bad one is named as the caller's option, not as deriveSeed's argument.
const WINDOW_OPTIONS = z.object({
  batchSize: opt.count(),
  seqLen: opt.count(),
  seed: opt.seed(),
  step: opt.count(),
}).strict();
const EPOCH_OPTIONS = WINDOW_OPTIONS.omit({ seqLen: true });

function checkPositive(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${what} must be a positive integer, got ${v}`);
}

/**
 * `batchSize` windows of `seqLen + 1` tokens at random offsets (with replacement, as nanoGPT's `get_batch`),
 * drawn from a generator seeded by `(seed, step)` alone.
 *
 * @example
 * ```ts
 * import { sampleWindows } from "./batches.ts";
 * const tokens = Int32Array.from({ length: 500 }, (_, i) => i % 37);
 * const { x, y } = sampleWindows(tokens, { batchSize: 4, seqLen: 16, seed: 0, step: 1 });
 * ```
 */
export function sampleWindows(tokens: Int32Array, opts: WindowOptions): WindowBatch {
  checkOptions("sampleWindows", WINDOW_OPTIONS, opts);
  const { batchSize, seqLen, seed, step } = opts;
  const starts = tokens.length - seqLen;
  if (starts < 1) {
    throw new RangeError(
      `sampleWindows: a window needs ${seqLen + 1} tokens but the stream has ${tokens.length}`,
    );
  }
  const rng = new Rng(deriveSeed(seed, "windows", step));
  const x = new Int32Array(batchSize * seqLen);
  const y = new Int32Array(batchSize * seqLen);
  for (let b = 0; b < batchSize; b++) {
    const s = rng.int(starts);
    x.set(tokens.subarray(s, s + seqLen), b * seqLen);
    y.set(tokens.subarray(s + 1, s + seqLen + 1), b * seqLen);
  }
  return { x, y };
}

/** Options of {@link epochIndices}. */
export interface EpochIndexOptions {
  /** Examples per batch. */
  batchSize: number;
  /** Seed of the run. */
  seed: number;
  /** Step number (1-based). */
  step: number;
}

let cachedPermutation: { key: string; perm: Int32Array } | null = null;

function permutation(n: number, seed: number, epoch: number): Int32Array {
  const key = `${n}:${seed}:${epoch}`;
  if (cachedPermutation?.key !== key) {
    const perm = Int32Array.from({ length: n }, (_, i) => i);
    new Rng(deriveSeed(seed, "epoch", epoch)).shuffle(perm);
    cachedPermutation = { key, perm };
  }
  return cachedPermutation.perm;
}

/**
 * The example indices of batch `step` when `n` examples are visited epoch by epoch, each epoch in its own
 * random order: batch `s` holds positions `(s − 1)·batchSize .. s·batchSize − 1` of the concatenated epoch
 * permutations, and epoch `e`'s permutation depends only on `(seed, e)`.
 *
 * @example
 * ```ts
 * import { epochIndices } from "./batches.ts";
 * const idx = epochIndices(1000, { batchSize: 32, seed: 7, step: 40 }); // crosses into epoch 1
 * ```
 */
export function epochIndices(n: number, opts: EpochIndexOptions): Int32Array {
  checkOptions("epochIndices", EPOCH_OPTIONS, opts);
  const { batchSize, seed, step } = opts;
  checkPositive("epochIndices: n", n);
  if (!Number.isSafeInteger(step * batchSize)) {
    // Past 2^53 the positions (step − 1)·batchSize + b round, and one batch could hold an example twice.
    throw new RangeError(
      `epochIndices: step ${step} × batchSize ${batchSize} is past 2^53, where positions round`,
    );
  }
  const out = new Int32Array(batchSize);
  for (let b = 0; b < batchSize; b++) {
    const pos = (step - 1) * batchSize + b;
    out[b] = permutation(n, seed, Math.floor(pos / n))[pos % n];
  }
  return out;
}
