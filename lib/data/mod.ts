/**
 * Data loading and generation on plain typed arrays (no tensor code): a seeded PRNG, text and image
 * loaders for the shared datasets, built-in generated datasets and mini-batch iterators.
 *
 * @example
 * ```ts
 * import { charVocab, generateTextDomains, lmBatches } from "./mod.ts";
 * const { source } = generateTextDomains({ seed: 0, nSentences: 200 });
 * const vocab = charVocab(source);
 * const tokens = vocab.encode(source);
 * for (const { x, y } of lmBatches(tokens, { batchSize: 8, seqLen: 32, seed: 0 })) {
 *   // train on x → y
 * }
 * ```
 *
 * @module
 */

export { type MutableArrayLike, Rng } from "./rng.ts";
export {
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
  loadEmojiPack,
  loadMnist,
  loadOptdigits,
  type MnistData,
  type OptdigitsData,
  rgbaOnWhite,
} from "./images.ts";
export {
  type CharVocab,
  charVocab,
  COLOUR_NAMES,
  generateShapes,
  generateTextDomains,
  POSITION_NAMES,
  SHAPE_NAMES,
  type ShapesData,
  type ShapesLabels,
  type ShapesOptions,
  type TextDomains,
  type TextDomainsOptions,
} from "./generated.ts";
export {
  arrayBatches,
  type ArrayBatchOptions,
  type LmBatch,
  lmBatches,
  type LmBatchOptions,
} from "./batches.ts";
