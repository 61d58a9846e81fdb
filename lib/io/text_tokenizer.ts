/**
 * One interface over every tokenizer tessera reads (`loadTokenizer` in `load_tokenizer.ts` opens any of them).
 *
 * @module
 */
import type { TokenStreamDecoder } from "./tokenizer.ts";

/** Options for {@link TextTokenizer.encode}. */
export type TextEncodeOptions = {
  /**
   * Add the tokenizer's default special tokens; default true. For a Hugging Face tokenizer these are the
   * post-processor template's (transformers' `add_special_tokens`: BOS for Llama, none for Qwen); for the
   * llama2.c tokenizer, its BOS.
   */
  bos?: boolean;
};

/** Options for {@link TextTokenizer.decode} and {@link TextTokenizer.streamDecoder}. */
export type TextDecodeOptions = {
  /** Leave out special tokens (BOS, EOS, `<|im_start|>` ...); default false, as transformers' `decode`. */
  skipSpecialTokens?: boolean;
};

/**
 * What every tokenizer offers: {@link HfTokenizer} (Hugging Face `tokenizer.json`) and the llama2.c
 * {@link Tokenizer}.
 *
 * Special tokens: `encode(text)` adds what the tokenizer adds by default — transformers'
 * `tokenizer(text)` (`add_special_tokens=True`, i.e. the post-processor's template: BOS for Llama-style
 * tokenizers, nothing for Qwen-style ones) or llama2.c's BOS — and `encode(text, { bos: false })` adds none.
 * `decode` keeps special tokens unless `skipSpecialTokens` is set; the llama2.c tokenizer always drops BOS and
 * EOS, as llama2.c does.
 */
export interface TextTokenizer {
  /** One more than the largest token id. */
  readonly vocabSize: number;
  /** Id of the beginning-of-sequence token, or undefined when the tokenizer has none. */
  readonly bosId: number | undefined;
  /** Id of the end-of-sequence token, or undefined when the tokenizer has none. */
  readonly eosId: number | undefined;
  /** Token ids of `text`, with the tokenizer's default special tokens unless `{ bos: false }`. */
  encode(text: string, options?: TextEncodeOptions): number[];
  /** The text of `ids`. */
  decode(ids: ArrayLike<number>, options?: TextDecodeOptions): string;
  /** An incremental decoder whose pieces, joined, equal `decode` of the ids pushed. */
  streamDecoder(options?: TextDecodeOptions): TokenStreamDecoder;
}
