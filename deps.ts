/**
 * Every third-party dependency, as a full `npm:` specifier, so that a script importing `mod.ts` by URL
 * resolves exactly the same packages with no import map.
 *
 * @module
 */
export { z } from "npm:zod@^4.1.0";
export { parse as parseYaml, stringify as stringifyYaml } from "npm:yaml@^2.8.0";
export { initWasm, Resvg } from "npm:@resvg/resvg-wasm@2.6.2";
export { Tokenizer as HfTokenizerPort } from "npm:@huggingface/tokenizers@0.2.0";
