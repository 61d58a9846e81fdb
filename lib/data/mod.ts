/**
 * Data loading on plain typed arrays (no tensor code): a seeded PRNG, text and image loaders for the shared
 * datasets, a character vocabulary and mini-batch iterators.
 *
 * @example
 * ```ts
 * import { charVocab, lmBatches } from "./mod.ts";
 * const text = "the quick brown fox jumps over the lazy dog. ".repeat(40);
 * const vocab = charVocab(text);
 * const tokens = vocab.encode(text);
 * for (const { x, y } of lmBatches(tokens, { batchSize: 8, seqLen: 32, seed: 0 })) {
 *   // train on x → y
 * }
 * ```
 *
 * @module
 */

export { type MutableArrayLike, Rng } from "./rng.ts";
export {
  type CharVocab,
  charVocab,
  loadSentiment,
  loadText,
  type LoadTextOptions,
  type SentimentExample,
  splitText,
  type SplitTextOptions,
  type TextSplit,
} from "./text.ts";
export {
  EMOJI_SIZE,
  type EmojiPack,
  type EmojiRow,
  type GunzipOptions,
  loadEmojiPack,
  loadMnist,
  loadOptdigits,
  MAX_GUNZIP_BYTES,
  type MnistData,
  type OptdigitsData,
  rgbaOnWhite,
} from "./images.ts";
export {
  arrayBatches,
  type ArrayBatchOptions,
  type LmBatch,
  lmBatches,
  type LmBatchOptions,
} from "./batches.ts";
