/**
 * Every third-party dependency of the library, as a full `npm:` specifier, so that a script importing `mod.ts` by
 * URL resolves exactly the same packages with no import map. The lab's own (YAML configs, PNG plots) are in
 * `lab/deps.ts`, so the library loads neither.
 *
 * @module
 */
export { z } from "npm:zod@^4.1.0";
export {
  BPE as HfBpeModel,
  ByteFallbackDecoder as HfByteFallbackDecoder,
  ByteLevelDecoder as HfByteLevelDecoder,
  ByteLevelPreTokenizer as HfByteLevelPreTokenizer,
  SequenceDecoder as HfSequenceDecoder,
  SequencePreTokenizer as HfSequencePreTokenizer,
  Tokenizer as HfTokenizerPort,
} from "npm:@huggingface/tokenizers@0.2.0";
