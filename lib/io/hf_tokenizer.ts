/**
 * Hugging Face `tokenizer.json` tokenizers (BPE: byte-level as in Llama 3, Qwen and SmolLM, and
 * sentencepiece-style with byte fallback as in Llama 2, TinyLlama and Mistral), on the pure-JS port
 * `@huggingface/tokenizers`.
 *
 * What this file adds to the port: every component of the pipeline is checked against the list that
 * tessera's golden fixtures (written by transformers, see `tools/tokenizer_fixtures.py`) cover, and anything
 * else is refused by its JSON path; a few spellings the port reads differently from the Rust library are
 * rewritten to equivalent ones, and two of its decoding differences are mended (see `mendDecoding`); the
 * `tokenizer_class` values for which transformers builds its own pipeline are rebuilt as it does, and any other
 * class than the plain ones is refused; the special-token ids come from `tokenizer_config.json` (and
 * `special_tokens_map.json` over it), and every special token they name is a special added token as in transformers (also when `added_tokens` lacks it);
 * decoding never cleans up spaces (transformers 5 does not for BPE models); and a streaming decoder holds back
 * text that later tokens can still change.
 *
 * @module
 */
import {
  HfBpeModel,
  HfByteFallbackDecoder,
  HfByteLevelDecoder,
  HfByteLevelPreTokenizer,
  HfSequenceDecoder,
  HfSequencePreTokenizer,
  HfTokenizerPort,
} from "../../deps.ts";
import type { TextDecodeOptions, TextEncodeOptions, TextTokenizer } from "./text_tokenizer.ts";
import { checkWellFormed, type TokenStreamDecoder } from "./tokenizer.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";

type Json = Record<string, unknown>;

/** Options for {@link HfTokenizer.fromJson}. */
export type HfTokenizerOptions = {
  /** The parsed `tokenizer_config.json`, when there is one (special tokens, tokenizer class). */
  config?: unknown;
  /** The parsed `special_tokens_map.json`, when there is one: the special tokens it names replace the config's. */
  specialTokensMap?: unknown;
  /** Where the JSON came from, used in error messages. */
  source?: string;
};

const FROM_JSON_OPTIONS = z.object({ config: z.unknown(), specialTokensMap: z.unknown(), source: z.string() })
  .partial().strict();
const ENCODE_OPTIONS = z.object({ bos: z.boolean() }).partial().strict();
const DECODE_OPTIONS = z.object({ skipSpecialTokens: z.boolean() }).partial().strict();

const NORMALIZERS = new Set(["Sequence", "NFC", "NFD", "NFKC", "NFKD", "Prepend", "Replace"]);
const PRE_TOKENIZERS = new Set(["Sequence", "ByteLevel", "Split", "Metaspace", "Digits"]);
const POST_PROCESSORS = new Set(["Sequence", "ByteLevel", "TemplateProcessing"]);
const DECODERS = new Set(["Sequence", "ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip"]);
/**
 * The `tokenizer_config.json` key with which transformers cleans up the spaces of a BPE tokenizer's decoded text
 * (" ." to ".", " n't" to "n't", ...) when `clean_up_tokenization_spaces` is true; without it, transformers 5 does
 * not clean up BPE output, nor does this port.
 */
const CLEAN_UP_BPE = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output";

/** The special tokens `tokenizer_config.json` may name, one each ... */
const SPECIAL_TOKEN_KEYS = [
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
];
/** ... and in lists (or, for `extra_special_tokens`, objects of named ones). */
const SPECIAL_TOKEN_LISTS = ["additional_special_tokens", "extra_special_tokens"];
/** The `tokenizer_class` values for which transformers 5 uses `tokenizer.json` as it is. */
const VERBATIM_CLASSES = new Set(["TokenizersBackend", "PreTrainedTokenizerFast"]);

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The text of a special-token entry in `tokenizer_config.json`: a string, `{ content }`, or null. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (isObject(value) && typeof value.content === "string") return value.content;
  return undefined;
}

/** Every special token `tokenizer_config.json` names, as [the key that names it, its text, its entry]. */
function namedSpecialTokens(config: Json): [string, string, unknown][] {
  const named: [string, string, unknown][] = [];
  const add = (key: string, value: unknown) => {
    const text = tokenText(value);
    if (text !== undefined) named.push([key, text, value]);
  };
  for (const key of SPECIAL_TOKEN_KEYS) add(key, config[key]);
  for (const key of SPECIAL_TOKEN_LISTS) {
    const list = config[key];
    if (Array.isArray(list)) list.forEach((value, i) => add(`${key}[${i}]`, value));
    else if (isObject(list)) {
      for (const [name, value] of Object.entries(list)) add(`${key}.${name}`, value);
    }
  }
  return named;
}

/**
 * The special tokens of `tokenizer_config.json` with those `special_tokens_map.json` names put over them, as
 * transformers reads the two. In `tokenizer_config.json` transformers takes a token written as an object only when
 * it says `"__type": "AddedToken"` (as older versions wrote it) and refuses any other object; in
 * `special_tokens_map.json` it takes `{ content, ... }` as it is.
 */
function withSpecialTokensMap(config: Json, map: Json, fail: (msg: string) => never): Json {
  for (const [key, , value] of namedSpecialTokens(config)) {
    if (isObject(value) && value.__type !== "AddedToken") {
      fail(
        `tokenizer_config.json ${key} is ${
          JSON.stringify(value)
        }, an object without "__type": "AddedToken", which transformers refuses (write the token's text)`,
      );
    }
  }
  const merged = { ...config };
  for (const key of [...SPECIAL_TOKEN_KEYS, ...SPECIAL_TOKEN_LISTS]) {
    if (key in map) merged[key] = map[key];
  }
  return merged;
}

/**
 * transformers adds every special token the config names as a special added token (matched in the text before
 * the pre-tokenizer, skipped by `skip_special_tokens`), also when `added_tokens` lacks it, with the `lstrip`,
 * `rstrip`, `single_word` and `normalized` flags its entry gives when that is an object (each false when absent);
 * this adds the ones that are in the vocabulary but not yet added. One that `added_tokens` has as not special stays
 * so when only a list (`additional_special_tokens`, `extra_special_tokens`) names it (transformers then neither
 * skips it), and becomes special when a key such as `bos_token` names it (its other flags unchanged, whatever the
 * entry says). One the vocabulary lacks is left for the caller to refuse.
 */
function withNamedSpecialTokens(addedTokens: unknown[], vocab: Json, config: Json): unknown[] {
  const named = new Map<string, unknown>();
  const byKey = new Set<string>();
  for (const [key, text, value] of namedSpecialTokens(config)) {
    if (!named.has(text)) named.set(text, value);
    if (SPECIAL_TOKEN_KEYS.includes(key)) byKey.add(text);
  }
  const added = new Set(addedTokens.map((t) => isObject(t) ? t.content : undefined));
  const out = addedTokens.map((t) =>
    isObject(t) && typeof t.content === "string" && byKey.has(t.content) && t.special !== true
      ? { ...t, special: true }
      : t
  );
  for (const [text, value] of named) {
    const id = Object.hasOwn(vocab, text) ? vocab[text] : undefined;
    if (added.has(text) || typeof id !== "number") continue;
    added.add(text);
    const flag = (key: string) => isObject(value) && value[key] === true;
    out.push({
      id,
      content: text,
      single_word: flag("single_word"),
      lstrip: flag("lstrip"),
      rstrip: flag("rstrip"),
      normalized: flag("normalized"),
      special: true,
    });
  }
  return out;
}

/**
 * Checks one pipeline component (and the members of a `Sequence`) against the supported set; `path` is its
 * JSON path for the error. Returns the component with the spellings the port misreads rewritten.
 */
function checkComponent(
  value: unknown,
  path: string,
  allowed: Set<string>,
  members: string,
  fail: (msg: string) => never,
): unknown {
  if (value === null || value === undefined) return null;
  if (!isObject(value)) fail(`${path} is ${JSON.stringify(value)}, not an object`);
  const type = value.type;
  if (typeof type !== "string" || !allowed.has(type)) {
    fail(`${path}.type ${JSON.stringify(type)} is not supported (supported: ${[...allowed].join(", ")})`);
  }
  if (type === "Sequence") {
    const list = value[members];
    if (!Array.isArray(list)) fail(`${path}.${members} is missing or not an array`);
    return {
      ...value,
      [members]: list.map((item, i) =>
        checkComponent(item, `${path}.${members}[${i}]`, allowed, members, fail)
      ),
    };
  }
  if (type === "Split") {
    // The port treats every behaviour other than "Removed" as "Isolated", and drops unmatched text when
    // `invert` is set; the Rust library keeps it.
    const behavior = String(value.behavior);
    if (behavior !== "Isolated" && behavior !== "Removed") {
      fail(
        `${path}.behavior ${JSON.stringify(value.behavior)} is not supported (only "Isolated", "Removed")`,
      );
    }
    if (value.invert === true) fail(`${path}.invert true is not supported`);
    const pattern = value.pattern;
    if (isObject(pattern) && typeof pattern.String === "string") {
      // The port splits "Removed" on a literal pattern as if it were "Isolated" (it wraps the text in a capturing
      // group, which String.split keeps); the same literal as an escaped regex is read as the Rust library does.
      return { ...value, pattern: { Regex: escapeRegex(pattern.String) } };
    }
    if (behavior === "Removed" && isObject(pattern) && typeof pattern.Regex === "string") {
      // String.split keeps what a capturing group matched, so those pieces would stay in the text.
      const group = capturingGroup(pattern.Regex);
      if (group !== undefined) {
        fail(
          `${path}.pattern.Regex ${
            JSON.stringify(pattern.Regex)
          } has a capturing group at offset ${group}, ` +
            `which behavior "Removed" does not support (write it as (?:...))`,
        );
      }
    }
  }
  if (type === "Replace" && typeof value.content === "string") {
    // The Rust library inserts the content as it is written; the port hands it to String.replaceAll, which reads
    // "$1", "$&" and "$$" in it as references. Doubling every "$" makes each stand for itself.
    return { ...value, content: value.content.replaceAll("$", "$$$$") };
  }
  if (type === "TemplateProcessing") return expandTemplate(value, path, fail);
  if (type === "Metaspace" && value.split !== false) {
    // The Rust library splits on the replacement character when `split` is true (its default); the port
    // never splits.
    fail(`${path}.split ${JSON.stringify(value.split ?? "absent (true)")} is not supported (only false)`);
  }
  if (type === "Metaspace") checkMetaspace(value, path, fail);
  if (type === "Digits") {
    // The Rust library splits on every Unicode number (char::is_numeric, i.e. \p{N}); the port's pattern only
    // knows ASCII digits. An isolating split on \p{N} (one at a time, or runs of them) is the same thing.
    const pattern = value.individual_digits === true ? "\\p{N}" : "\\p{N}+";
    return { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false };
  }
  return value;
}

/**
 * A `TemplateProcessing` whose special-token items are spelled out one per token: the Rust library adds the ids
 * its `special_tokens` entry lists (one or more), the port the id of the item's name alone. Each listed token
 * then stands for its id, which {@link checkTemplateIds} checks against the vocabulary.
 */
function expandTemplate(value: Json, path: string, fail: (msg: string) => never): Json {
  const specials = isObject(value.special_tokens) ? value.special_tokens : {};
  const expand = (key: string) => {
    const items = value[key];
    if (!Array.isArray(items)) return items;
    return items.flatMap((item) => {
      const special = isObject(item) ? item.SpecialToken : undefined;
      if (!isObject(special)) return [item];
      const name = String(special.id);
      const entry = Object.hasOwn(specials, name) ? specials[name] : undefined;
      if (!isObject(entry) || !Array.isArray(entry.tokens) || !Array.isArray(entry.ids)) {
        fail(`${path}.${key} names special token ${JSON.stringify(name)}, which special_tokens lacks`);
      }
      if (entry.tokens.length !== entry.ids.length) {
        fail(
          `${path}.special_tokens[${
            JSON.stringify(name)
          }] has ${entry.ids.length} ids but ${entry.tokens.length} tokens`,
        );
      }
      return entry.tokens.map((token) => ({ SpecialToken: { ...special, id: token } }));
    });
  };
  return { ...value, single: expand("single"), pair: expand("pair") };
}

/** Every token a template's `special_tokens` lists must be the id listed beside it, as the port reads it so. */
function checkTemplateIds(processor: unknown, port: HfTokenizerPort, fail: (msg: string) => never): void {
  if (!isObject(processor)) return;
  if (processor.type === "Sequence" && Array.isArray(processor.processors)) {
    for (const p of processor.processors) checkTemplateIds(p, port, fail);
  }
  if (processor.type !== "TemplateProcessing" || !isObject(processor.special_tokens)) return;
  for (const [name, entry] of Object.entries(processor.special_tokens)) {
    if (!isObject(entry) || !Array.isArray(entry.tokens) || !Array.isArray(entry.ids)) continue;
    entry.tokens.forEach((token, k) => {
      const id = port.token_to_id(String(token));
      if (id !== (entry.ids as unknown[])[k]) {
        fail(
          `post_processor special_tokens[${JSON.stringify(name)}] gives token ${
            JSON.stringify(token)
          } the id ${JSON.stringify((entry.ids as unknown[])[k])}, but the vocabulary has ${
            id ?? "no such token"
          }`,
        );
      }
    });
  }
}

/** `text` as a regular expression that matches exactly it (in Oniguruma and in JavaScript's `u` mode). */
function escapeRegex(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");
}

/** Whether what follows `(?` opens a named group (`(?<name>`, `(?P<name>`), not a lookbehind (`(?<=`, `(?<!`). */
function isNamedGroup(next: string): boolean {
  return next.startsWith("P<") || (next[0] === "<" && next[1] !== "=" && next[1] !== "!");
}

/** The offset of the first capturing group `(` of `source` (not escaped, not in a class, named or not), if any. */
function capturingGroup(source: string): number | undefined {
  let inClass = 0;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "\\") i++;
    else if (c === "[") inClass++;
    else if (c === "]" && inClass > 0) inClass--;
    else if (
      c === "(" && inClass === 0 && (source[i + 1] !== "?" || isNamedGroup(source.slice(i + 2, i + 4)))
    ) {
      return i;
    }
  }
  return undefined;
}

const PREPEND_SCHEMES = ["always", "first", "never"];

/**
 * A `Metaspace` pre-tokenizer's prepend settings, as the Rust library reads them: `prepend_scheme` (default
 * "always") decides, and the older key `add_prefix_space` may only agree with it (false with "never"; true with
 * any scheme, which then wins). The library refuses a file where they conflict; the port read `prepend_scheme`
 * alone and took such a file.
 */
function checkMetaspace(value: Json, path: string, fail: (msg: string) => never): void {
  const scheme = value.prepend_scheme ?? "absent (always)";
  if (value.prepend_scheme !== undefined && !PREPEND_SCHEMES.includes(value.prepend_scheme as string)) {
    fail(
      `${path}.prepend_scheme ${JSON.stringify(value.prepend_scheme)} is not one of ${
        PREPEND_SCHEMES.join(", ")
      }`,
    );
  }
  const addPrefixSpace = value.add_prefix_space;
  if (addPrefixSpace !== undefined && addPrefixSpace !== null && typeof addPrefixSpace !== "boolean") {
    fail(`${path}.add_prefix_space ${JSON.stringify(addPrefixSpace)} is not a boolean`);
  }
  if (addPrefixSpace === false && value.prepend_scheme !== "never") {
    fail(
      `${path}.add_prefix_space false conflicts with ${path}.prepend_scheme ${
        JSON.stringify(scheme)
      } (tokenizers refuses the file; false goes only with "never")`,
    );
  }
  if (typeof value.replacement !== "string" || [...value.replacement].length !== 1) {
    fail(`${path}.replacement ${JSON.stringify(value.replacement ?? null)} is not one character`);
  }
}

const ADDED_TOKEN_FLAGS = ["single_word", "lstrip", "rstrip", "normalized", "special"];

/**
 * One entry of `added_tokens`: the Rust library requires its id, content and every flag, and refuses a file where
 * one is missing (an omitted `normalized` has no default there; the port took `!special`).
 */
function checkAddedToken(t: unknown, i: number, fail: (msg: string) => never): void {
  if (!isObject(t)) fail(`added_tokens[${i}] is ${JSON.stringify(t)}, not an object`);
  if (typeof t.content !== "string") fail(`added_tokens[${i}].content is missing or not a string`);
  const name = `added_tokens[${i}] (${JSON.stringify(t.content)})`;
  if (!Number.isSafeInteger(t.id) || (t.id as number) < 0) {
    fail(`${name} has id ${JSON.stringify(t.id ?? "absent")}, not a token id`);
  }
  for (const key of ADDED_TOKEN_FLAGS) {
    if (typeof t[key] !== "boolean") {
      fail(
        `${name} has ${key} ${
          JSON.stringify(t[key] ?? "absent")
        }, not true or false (tokenizers requires it)`,
      );
    }
  }
}

/** The part of the model section that every BPE pipeline reads: its type, vocabulary and merges. */
function checkBpeCore(value: unknown, fail: (msg: string) => never): Json {
  if (!isObject(value)) fail(`"model" is missing or not an object`);
  if (value.type !== "BPE") {
    fail(`model.type ${JSON.stringify(value.type ?? null)} is not supported (only "BPE")`);
  }
  if (!isObject(value.vocab)) fail(`model.vocab is missing or not an object`);
  if (!Array.isArray(value.merges)) fail(`model.merges is missing or not an array`);
  return value;
}

/** The model section: only BPE without dropout or a continuing-subword prefix/suffix. */
function checkModel(json: unknown, fail: (msg: string) => never): Json {
  const value = checkBpeCore(json, fail);
  if (value.dropout !== null && value.dropout !== undefined && value.dropout !== 0) {
    fail(`model.dropout ${JSON.stringify(value.dropout)} is not supported (only null)`);
  }
  for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
    const v = value[key];
    if (v !== null && v !== undefined && v !== "") fail(`model.${key} ${JSON.stringify(v)} is not supported`);
  }
  return value;
}

/**
 * What transformers 5 does for `tokenizer_class: "LlamaTokenizer"`: it keeps the vocabulary, merges, added
 * tokens and post-processor of `tokenizer.json` and builds the rest itself (no normalizer, a `Metaspace`
 * pre-tokenizer whose prepend scheme follows `legacy` / `add_prefix_space`, byte fallback, the Llama decoder).
 */
function asLlamaClass(json: Json, config: Json): Json {
  const addPrefixSpace = config.add_prefix_space ?? true;
  const legacy = config.legacy ?? false;
  const prependScheme = addPrefixSpace ? (legacy ? "always" : "first") : "never";
  const decoders: Json[] = [
    { type: "Replace", pattern: { String: "▁" }, content: " " },
    { type: "ByteFallback" },
    { type: "Fuse" },
  ];
  if (addPrefixSpace) decoders.push({ type: "Strip", content: " ", start: 1, stop: 0 });
  return {
    ...json,
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: prependScheme, split: false },
    decoder: { type: "Sequence", decoders },
    model: { ...(json.model as Json), fuse_unk: true, byte_fallback: true, ignore_merges: false },
  };
}

/** The BPE model as transformers 5's GPT-2 and Qwen2 classes build it from the file's vocabulary and merges. */
function plainBpe(model: Json): Json {
  return {
    ...model,
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: "",
    end_of_word_suffix: "",
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
  };
}

const BYTE_LEVEL_DECODER = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };

/**
 * What transformers 5 does for `tokenizer_class: "GPT2Tokenizer"` (SmolLM's config names it): it keeps the
 * vocabulary, merges, added tokens and post-processor of `tokenizer.json` and builds the rest as GPT-2's (no
 * normalizer, a `ByteLevel` pre-tokenizer with its own regex, so a `Digits` step in the file is dropped).
 */
function asGpt2Class(json: Json, config: Json): Json {
  return {
    ...json,
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: config.add_prefix_space === true,
      trim_offsets: true,
      use_regex: true,
    },
    decoder: BYTE_LEVEL_DECODER,
    model: plainBpe(json.model as Json),
  };
}

/** Qwen2's split pattern (transformers' `PRETOKENIZE_REGEX` in `tokenization_qwen2.py`). */
const QWEN2_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" +
  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** What transformers 5 does for `tokenizer_class: "Qwen2Tokenizer"`: as GPT-2, with NFC and Qwen2's own split. */
function asQwen2Class(json: Json, config: Json): Json {
  return {
    ...json,
    normalizer: { type: "NFC" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: QWEN2_PATTERN }, behavior: "Isolated", invert: false },
        {
          type: "ByteLevel",
          add_prefix_space: config.add_prefix_space === true,
          trim_offsets: true,
          use_regex: false,
        },
      ],
    },
    decoder: BYTE_LEVEL_DECODER,
    model: plainBpe(json.model as Json),
  };
}

/**
 * The `tokenizer_class` values whose transformers 5 class builds its own pipeline, how, and the special tokens
 * the class names when the config does not (each must be a token, or transformers would add it as a new one).
 */
const REBUILT_CLASSES = new Map<
  string,
  { pipeline: (json: Json, config: Json) => Json; specialTokens: Json }
>([
  ...["LlamaTokenizer", "LlamaTokenizerFast"].map((name) =>
    [name, {
      pipeline: asLlamaClass,
      specialTokens: { unk_token: "<unk>", bos_token: "<s>", eos_token: "</s>" },
    }] as const
  ),
  ...["GPT2Tokenizer", "GPT2TokenizerFast"].map((name) =>
    [name, {
      pipeline: asGpt2Class,
      specialTokens: { unk_token: "<|endoftext|>", bos_token: "<|endoftext|>", eos_token: "<|endoftext|>" },
    }] as const
  ),
  ...["Qwen2Tokenizer", "Qwen2TokenizerFast"].map((name) =>
    [name, {
      pipeline: asQwen2Class,
      specialTokens: { unk_token: "<|endoftext|>", eos_token: "<|endoftext|>", pad_token: "<|endoftext|>" },
    }] as const
  ),
]);

/**
 * A Hugging Face BPE tokenizer read from `tokenizer.json` (+ `tokenizer_config.json`). Build it with
 * {@link loadTokenizer} (from a path) or {@link HfTokenizer.fromJson} (from parsed JSON).
 *
 * `encode(text)` gives what transformers' `tokenizer(text)["input_ids"]` gives: the post-processor's template
 * is applied (Llama-style files prepend BOS; Qwen-style files add nothing); `{ bos: false }` turns every
 * template token off, as `add_special_tokens=False`. Special-token strings written in the text (e.g.
 * `"<|im_start|>"`) become their ids. `decode(ids)` gives `tokenizer.decode(ids)`, special tokens included
 * unless `{ skipSpecialTokens: true }`.
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./load_tokenizer.ts";
 * const tok = await loadTokenizer("tests/fixtures/tokenizers/bytelevel_bos");
 * const ids = tok.encode("Hello world");
 * ids[0] === tok.bosId; // true: this tokenizer's template prepends <|begin_of_text|>
 * tok.decode(ids, { skipSpecialTokens: true }); // "Hello world"
 * ```
 */
export class HfTokenizer implements TextTokenizer {
  #port: HfTokenizerPort;
  #vocabSize: number;
  #bosId: number | undefined;
  #eosId: number | undefined;
  #source: string;
  /** Ids of the byte tokens a `ByteFallback` decoder reads (`<0x00>`..`<0xFF>`); empty without one. */
  #byteIds: ReadonlySet<number>;
  /** Ids known to be dropped (true) or kept (false) by `skipSpecialTokens` (see `#skipped`). */
  #skippedIds = new Map<number, boolean>();

  private constructor(
    port: HfTokenizerPort,
    vocabSize: number,
    bosId: number | undefined,
    eosId: number | undefined,
    source: string,
    byteIds: ReadonlySet<number>,
  ) {
    this.#port = port;
    this.#vocabSize = vocabSize;
    this.#bosId = bosId;
    this.#eosId = eosId;
    this.#source = source;
    this.#byteIds = byteIds;
  }

  /**
   * Builds a tokenizer from a parsed `tokenizer.json` and, optionally, its parsed `tokenizer_config.json`.
   * A model other than BPE, or a pipeline component outside the supported set, is refused with an error
   * naming `source` and the component's JSON path.
   *
   * @example
   * ```ts
   * import { HfTokenizer } from "./hf_tokenizer.ts";
   * const dir = "tests/fixtures/tokenizers/bytelevel_nobos";
   * const tok = HfTokenizer.fromJson(JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`)), {
   *   config: JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`)),
   * });
   * tok.bosId; // undefined: Qwen-style tokenizers have no BOS
   * ```
   */
  static fromJson(json: unknown, options: HfTokenizerOptions = {}): HfTokenizer {
    checkOptions("HfTokenizer.fromJson", FROM_JSON_OPTIONS, options);
    const source = options.source ?? "<tokenizer.json>";
    const fail = (msg: string): never => {
      throw new Error(`tokenizer "${source}": ${msg}`);
    };
    if (!isObject(json)) fail("tokenizer.json must hold a JSON object");
    const rawConfig = options.config ?? {};
    if (!isObject(rawConfig)) fail("tokenizer_config.json must hold a JSON object");
    const map: unknown = options.specialTokensMap ?? {};
    if (!isObject(map)) fail("special_tokens_map.json must hold a JSON object");
    let config = withSpecialTokensMap(rawConfig as Json, map as Json, fail);
    let file = json as Json;
    const tokenizerClass = config.tokenizer_class ?? null;
    if (tokenizerClass !== null) {
      const rebuild = typeof tokenizerClass === "string" ? REBUILT_CLASSES.get(tokenizerClass) : undefined;
      if (rebuild !== undefined) {
        // Only what the rebuild reads: GPT-2's and Qwen2's classes take the vocabulary and merges alone (the
        // file's dropout, unk_token and subword prefix/suffix are not used); the Llama class keeps the file's
        // model, which the full check below sees.
        checkBpeCore(file.model, fail);
        file = rebuild.pipeline(file, config);
        config = { ...rebuild.specialTokens, ...config };
      } else if (typeof tokenizerClass !== "string" || !VERBATIM_CLASSES.has(tokenizerClass)) {
        fail(
          `tokenizer_config.json tokenizer_class ${
            JSON.stringify(tokenizerClass)
          } is not supported: transformers builds that class's pipeline its own way (supported: ${
            [...VERBATIM_CLASSES, ...REBUILT_CLASSES.keys()].join(", ")
          })`,
        );
      }
    }
    if (config.clean_up_tokenization_spaces === true && config[CLEAN_UP_BPE] === true) {
      fail(
        `tokenizer_config.json ${CLEAN_UP_BPE} true (with clean_up_tokenization_spaces true) is not supported: ` +
          `transformers then removes the spaces before punctuation in decoded text`,
      );
    }
    const model = checkModel(file.model, fail);
    const fileAddedTokens: unknown[] = file.added_tokens === undefined || file.added_tokens === null
      ? []
      : Array.isArray(file.added_tokens)
      ? file.added_tokens
      : fail("added_tokens is not an array");
    fileAddedTokens.forEach((t, i) => checkAddedToken(t, i, fail));
    const addedTokens = withNamedSpecialTokens(fileAddedTokens, model.vocab as Json, config);
    const checked: Json = {
      ...file,
      added_tokens: addedTokens,
      model,
      normalizer: checkComponent(file.normalizer, "normalizer", NORMALIZERS, "normalizers", fail),
      pre_tokenizer: checkComponent(
        file.pre_tokenizer,
        "pre_tokenizer",
        PRE_TOKENIZERS,
        "pretokenizers",
        fail,
      ),
      post_processor: checkComponent(
        file.post_processor,
        "post_processor",
        POST_PROCESSORS,
        "processors",
        fail,
      ),
      decoder: checkComponent(file.decoder, "decoder", DECODERS, "decoders", fail),
    };
    checkByteLevelVocab(checked.decoder, model, addedTokens, fail);
    let port: HfTokenizerPort;
    try {
      // The port makes every token of additional_special_tokens one that skip_special_tokens drops; which are
      // special is already in addedTokens. It also collapses spaces (remove_space) and lowercases
      // (do_lowercase_and_remove_accent) where the config says so, which transformers 5 does not do for a
      // tokenizer.json (its normalizer says what to do).
      port = new HfTokenizerPort(checked, {
        ...config,
        additional_special_tokens: [],
        remove_space: false,
        do_lowercase_and_remove_accent: false,
      });
    } catch (err) {
      fail(err instanceof Error ? err.message : String(err));
    }
    checkTemplateIds(checked.post_processor, port!, fail);
    const byteIds = mendDecoding(port!, addedTokens);
    mendByteLevelDecoding(port!.decoder);
    mendNormalizedMatches(port!, addedTokens);
    mendAddedTokenSearch(port!, addedTokens);
    mendUnknownCharacters(port!, model, fail);
    mendByteLevelSplit(port!.pre_tokenizer);
    let vocabSize = 0;
    for (const id of port!.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
    const idOf = (key: string, value: unknown = config[key]): number | undefined => {
      const text = tokenText(value);
      if (text === undefined) return undefined;
      const id = port!.token_to_id(text);
      if (id === undefined) {
        fail(
          `tokenizer_config.json names ${key} ${
            JSON.stringify(text)
          }, which is not a token (transformers would add it as a new one)`,
        );
      }
      return id;
    };
    // transformers adds every special token the config names that the vocabulary lacks, as a new id.
    for (const [key, text] of namedSpecialTokens(config)) idOf(key, text);
    const template = templateSpecials(checked.post_processor, port!);
    // tokenizer_config.json decides when it names the key (null: the tokenizer has no such token); without
    // it, the template's leading / trailing special token is the best the file says.
    const bosId = "bos_token" in config ? idOf("bos_token") : template.first;
    const eosId = "eos_token" in config ? idOf("eos_token") : template.last;
    return new HfTokenizer(port!, vocabSize, bosId, eosId, source, byteIds);
  }

  /** One more than the largest token id (added tokens included). */
  get vocabSize(): number {
    return this.#vocabSize;
  }

  /** Id of the beginning-of-sequence token, or undefined when the tokenizer has none (Qwen). */
  get bosId(): number | undefined {
    return this.#bosId;
  }

  /** Id of the end-of-sequence token, or undefined when neither file names one. */
  get eosId(): number | undefined {
    return this.#eosId;
  }

  /** The id of a token given by its text in the vocabulary (e.g. `"<|im_end|>"`), or undefined. */
  tokenId(token: string): number | undefined {
    return this.#port.token_to_id(token);
  }

  /**
   * Encodes text as transformers' `tokenizer(text)["input_ids"]`; `{ bos: false }` as
   * `add_special_tokens=False`.
   *
   * @example
   * ```ts
   * import { loadTokenizer } from "./load_tokenizer.ts";
   * const tok = await loadTokenizer("tests/fixtures/tokenizers/sentencepiece_legacy");
   * tok.encode("café", { bos: false }); // no <s>; é and the rest as pieces or byte tokens
   * ```
   */
  encode(text: string, options: TextEncodeOptions = {}): number[] {
    checkOptions("HfTokenizer.encode", ENCODE_OPTIONS, options);
    checkWellFormed("HfTokenizer.encode", text);
    const { bos = true } = options;
    return this.#port.encode(text, { add_special_tokens: bos }).ids;
  }

  #checkIds(ids: ArrayLike<number>): number[] {
    const out = new Array<number>(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.#vocabSize) {
        throw new Error(
          `token id ${id} (position ${i}) is out of range for tokenizer "${this.#source}" with ${this.#vocabSize} ids`,
        );
      }
      out[i] = id;
    }
    return out;
  }

  /**
   * Decodes ids as transformers' `tokenizer.decode(ids)` (no clean-up of spaces, as transformers 5 for BPE).
   *
   * @example
   * ```ts
   * import { loadTokenizer } from "./load_tokenizer.ts";
   * const tok = await loadTokenizer("tests/fixtures/tokenizers/bytelevel_bos");
   * tok.decode(tok.encode("日本")); // "<|begin_of_text|>日本"
   * ```
   */
  decode(ids: ArrayLike<number>, options: TextDecodeOptions = {}): string {
    checkOptions("HfTokenizer.decode", DECODE_OPTIONS, options);
    const list = this.#checkIds(ids);
    if (list.length === 0) return "";
    return this.#port.decode(list, {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  /** Whether `skipSpecialTokens` drops `id` (a special token): it then decodes to nothing, and otherwise to text. */
  #skipped(id: number): boolean {
    let skipped = this.#skippedIds.get(id);
    if (skipped === undefined) {
      skipped = this.decode([id], { skipSpecialTokens: true }) === "" && this.decode([id]) !== "";
      this.#skippedIds.set(id, skipped);
    }
    return skipped;
  }

  /**
   * An incremental decoder: push ids one at a time and get the text that no later token can change. Text
   * ending in U+FFFD (a UTF-8 character split across byte tokens) is held back until the character is
   * complete, and so is a run of byte tokens until a token that is not one ends it (a later byte can make the
   * run invalid UTF-8, which then decodes as one U+FFFD per byte); the pieces, joined with the final `flush()`, equal `decode(ids, options)`. Each push decodes
   * only the ids since the last piece given out plus the ones of that piece (as context for the decoder).
   *
   * @example
   * ```ts
   * import { loadTokenizer } from "./load_tokenizer.ts";
   * const tok = await loadTokenizer("tests/fixtures/tokenizers/bytelevel_nobos");
   * const stream = tok.streamDecoder();
   * let text = "";
   * for (const id of tok.encode("日本 🦀")) text += stream.push(id);
   * text += stream.flush(); // "日本 🦀"
   * ```
   */
  streamDecoder(options: TextDecodeOptions = {}): TokenStreamDecoder {
    checkOptions("HfTokenizer.streamDecoder", DECODE_OPTIONS, options);
    let window: number[] = [];
    let contextLength = 0;
    let contextText = "";
    return {
      push: (id: number) => {
        this.#checkIds([id]);
        window.push(id);
        // A byte token may continue a run a later byte ends; a special token that decoding skips is no text, so
        // it ends no run (decode drops it before the decoder joins the bytes around it).
        if (this.#byteIds.has(id) || (options.skipSpecialTokens === true && this.#skipped(id))) return "";
        const text = this.decode(window, options);
        if (text.length <= contextText.length || text.endsWith("\uFFFD") || !text.startsWith(contextText)) {
          return "";
        }
        const piece = text.slice(contextText.length);
        window = window.slice(contextLength);
        contextLength = window.length;
        contextText = this.decode(window, options);
        return piece;
      },
      flush: () => {
        const text = this.decode(window, options);
        const rest = text.startsWith(contextText) ? text.slice(contextText.length) : text;
        window = [];
        contextLength = 0;
        contextText = "";
        return rest;
      },
    };
  }
}

/**
 * Where the port decodes differently from the Rust library, makes it decode as that library does:
 * - an added token with `normalized` true decodes as its normalized
 *   text, as the Rust library's `id_to_token` gives it (a sentencepiece-style normalizer prepends `▁`, which the
 *   decoder turns into the space before the token); the port decoded the raw content. A special token with
 *   `normalized` true is then not skipped by `skip_special_tokens`, which compares raw contents: the Rust library
 *   (and so transformers) skips it neither.
 * - a run of byte tokens that is not valid UTF-8 decodes as one U+FFFD per byte (`ByteFallback`); the port decoded
 *   it leniently, so `<0xE6><0x21>` gave "�!" where the Rust library gives "��"; and a U+FEFF in byte tokens
 *   is kept (a run starting with one lost it).
 */
function mendDecoding(port: HfTokenizerPort, addedTokens: unknown[]): Set<number> {
  const { normalizer, model } = port;
  if (normalizer !== null && model !== null) {
    for (const t of addedTokens) {
      if (!isObject(t) || typeof t.content !== "string" || typeof t.id !== "number") continue;
      if (t.normalized === true) model.vocab[t.id] = normalizer.normalize(t.content);
    }
  }
  // ignoreBOM: a U+FEFF written as byte tokens is text like any other (TextDecoder drops a leading one by default).
  const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const bytesOf = (token: string): number | null =>
    token.length === 6 && /^<0x[0-9A-Fa-f]{2}>$/.test(token) ? parseInt(token.slice(3, 5), 16) : null;
  let hasByteFallback = false;
  const mend = (d: unknown): void => {
    if (d instanceof HfSequenceDecoder) d.decoders.forEach(mend);
    if (!(d instanceof HfByteFallbackDecoder)) return;
    hasByteFallback = true;
    d.decode_chain = (tokens: string[]): string[] => {
      const out: string[] = [];
      let run: number[] = [];
      const flush = () => {
        if (run.length === 0) return;
        try {
          out.push(strict.decode(Uint8Array.from(run)));
        } catch {
          for (let i = 0; i < run.length; i++) out.push("\uFFFD");
        }
        run = [];
      };
      for (const token of tokens) {
        const b = bytesOf(token);
        if (b !== null) run.push(b);
        else {
          flush();
          out.push(token);
        }
      }
      flush();
      return out;
    };
  };
  mend(port.decoder);
  const byteIds = new Set<number>();
  if (hasByteFallback) model?.vocab.forEach((token, id) => bytesOf(token) !== null && byteIds.add(id));
  return byteIds;
}

/**
 * The byte each character of the byte-level alphabet stands for (GPT-2's `bytes_to_unicode`, reversed): the printable
 * bytes as themselves, the other 68 at 256 and up.
 */
const BYTE_OF_CHARACTER: ReadonlyMap<number, number> = (() => {
  const map = new Map<number, number>();
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 255 && b !== 173);
    map.set(printable ? b : next++, b);
  }
  return map;
})();

/**
 * The Rust library's `ByteLevel` decoder maps every token, added ones included, to bytes (each character of the
 * byte-level alphabet to its byte, or, when a token has any other character, the token's own UTF-8), and decodes
 * all the bytes at once, a byte sequence that is not valid UTF-8 becoming U+FFFD. The port kept an added token as
 * written and decoded the text between added tokens piece by piece: an added token "Ġ<|x|>" gave "Ġ<|x|>" where the
 * Rust library gives " <|x|>", and "ÃÃ" (the bytes C3 C3) gave "ÃÃ" for "��".
 */
function mendByteLevelDecoding(decoder: unknown): void {
  if (decoder instanceof HfSequenceDecoder) decoder.decoders.forEach(mendByteLevelDecoding);
  if (!(decoder instanceof HfByteLevelDecoder)) return;
  const encoder = new TextEncoder();
  // Not fatal: invalid UTF-8 becomes U+FFFD as in Rust's from_utf8_lossy; ignoreBOM keeps a leading U+FEFF.
  const lossy = new TextDecoder("utf-8", { ignoreBOM: true });
  decoder.decode_chain = (tokens: string[]): string[] => {
    const bytes: number[] = [];
    for (const token of tokens) {
      const mapped: number[] = [];
      for (const ch of token) {
        const b = BYTE_OF_CHARACTER.get(ch.codePointAt(0)!);
        if (b === undefined) break;
        mapped.push(b);
      }
      bytes.push(...(mapped.length === [...token].length ? mapped : encoder.encode(token)));
    }
    return [lossy.decode(Uint8Array.from(bytes))];
  };
}

/**
 * Refuses a vocabulary token with a character outside the byte-level alphabet when a `ByteLevel` decoder reads it:
 * the Rust library then keeps the whole token as written ("Ġ中" decodes to "Ġ中"), where the port wrote U+0000 for
 * each such character and mapped the rest to bytes. Decoding now does as the Rust library does (see
 * `mendByteLevelDecoding`, which added tokens need), but no golden fixture covers such a vocabulary, so it stays
 * refused.
 */
function checkByteLevelVocab(
  decoder: unknown,
  model: Json,
  addedTokens: unknown[],
  fail: (msg: string) => never,
) {
  const hasByteLevel = (d: unknown): boolean =>
    isObject(d) && (d.type === "ByteLevel" || (Array.isArray(d.decoders) && d.decoders.some(hasByteLevel)));
  if (!hasByteLevel(decoder) || !isObject(model.vocab)) return;
  const added = new Set(addedTokens.map((t) => isObject(t) ? t.id : undefined));
  for (const [token, id] of Object.entries(model.vocab)) {
    if (added.has(id)) continue;
    for (const ch of token) {
      if (BYTE_OF_CHARACTER.has(ch.codePointAt(0)!)) continue;
      fail(
        `model.vocab token ${JSON.stringify(token)} (id ${id}) has ${JSON.stringify(ch)} (U+${
          ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")
        }), outside the ByteLevel decoder's byte alphabet: tokenizers decodes such a token as written, which the ` +
          `port does not`,
      );
    }
  }
}

/**
 * Makes the port's BPE treat a character it has no token for as the Rust library does. There, a character that is
 * not in the vocabulary and has no complete set of byte-fallback tokens becomes `unk_token` (an error when that is
 * not in the vocabulary either), and without an `unk_token` it is dropped before merging, so its neighbours can
 * merge across it. The port kept such a character in the word until after the merges, where it split them
 * ("t𝔸he" gave "▁t" "he" where the Rust library gives "▁the"), and gave the id `undefined` for an `unk_token`
 * missing from the vocabulary.
 */
function mendUnknownCharacters(port: HfTokenizerPort, model: Json, fail: (msg: string) => never): void {
  const bpeModel = port.model;
  if (!(bpeModel instanceof HfBpeModel)) return;
  const bpe = bpeModel.bpe.bind(bpeModel);
  const vocab = model.vocab as Json;
  const known = (piece: string) => Object.hasOwn(vocab, piece);
  const unk = typeof model.unk_token === "string" ? model.unk_token : null;
  const encoder = new TextEncoder();
  const byteFallback = model.byte_fallback === true;
  const hasBytes = (char: string) =>
    [...encoder.encode(char)].every((b) => known(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`));
  bpeModel.bpe = (token: string): string[] => {
    let kept = "";
    for (const char of token) {
      if (known(char) || (byteFallback && hasBytes(char))) kept += char;
      else if (unk === null) continue;
      else if (!known(unk)) {
        fail(
          `model.unk_token ${JSON.stringify(unk)} is not in the vocabulary, and ${
            JSON.stringify(char)
          } needs it`,
        );
      } else kept += char;
    }
    return bpe(kept);
  };
}

/**
 * The Rust library matches an added token with `normalized` true in the normalized text only, by its normalized
 * content; the port also took a piece of text equal to its raw content for it. With a normalizer that changes the
 * content (a sentencepiece-style one prepends `▁`), `"<|im_end|><|im_end|>"` normalizes to
 * `"▁<|im_end|><|im_end|>"`, where the Rust library finds the token once and encodes the rest as text; the port
 * found it twice. The raw content no longer names the token when the port looks pieces of text up; `token_to_id`
 * still finds it.
 */
function mendNormalizedMatches(port: HfTokenizerPort, addedTokens: unknown[]): void {
  const { normalizer } = port;
  if (normalizer === null) return;
  // The port keeps its lookup private; a version without it would break this mend, so it says so.
  const map: unknown = Reflect.get(port, "added_tokens_map");
  if (!(map instanceof Map)) {
    throw new Error("the tokenizer port has no added_tokens_map (its version changed)");
  }
  for (const t of addedTokens) {
    if (!isObject(t) || typeof t.content !== "string" || t.normalized !== true) continue;
    if (normalizer.normalize(t.content) !== t.content && map.get(t.content)?.id === t.id) {
      map.delete(t.content);
    }
  }
}

/** White space at the end / start of a text as Rust's `char::is_whitespace` reads it (Unicode's White_Space). */
const TRAILING_WHITE_SPACE = /\p{White_Space}+$/u;
const LEADING_WHITE_SPACE = /^\p{White_Space}+/u;

/** A word character as the Rust library's `\\w` (Unicode): alphabetic, a mark, a decimal digit, a connector, a joiner. */
const WORD_CHARACTER = /^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$/u;

/** The character (code point) that ends at `end` in `text`, or "" at the start. */
function charBefore(text: string, end: number): string {
  if (end <= 0) return "";
  const low = text.charCodeAt(end - 1);
  const pair = end >= 2 && low >= 0xdc00 && low <= 0xdfff && text.charCodeAt(end - 2) >= 0xd800 &&
    text.charCodeAt(end - 2) <= 0xdbff;
  return text.slice(pair ? end - 2 : end - 1, end);
}

/**
 * The added tokens one search finds in `text` (the port's leftmost-longest search over `tokens`' keys), as
 * [piece, its token or undefined for text]; a match of a `single_word` token with a word character (`\\w`) just
 * before or after it in `text` is text, joined to the text around it, and the search goes on after it.
 */
function findAddedTokens(
  text: string,
  split: (text: string) => string[],
  tokens: Map<string, Json>,
): [string, Json | undefined][] {
  const out: [string, Json | undefined][] = [];
  let at = 0;
  for (const piece of split(text)) {
    const end = at + piece.length;
    // A piece of text never equals a key: the search would have matched it.
    let token = tokens.get(piece);
    if (token?.single_word === true) {
      const after = String.fromCodePoint(text.codePointAt(end) ?? 0);
      const alone = !WORD_CHARACTER.test(charBefore(text, at)) &&
        (end === text.length || !WORD_CHARACTER.test(after));
      if (!alone) token = undefined;
    }
    const last = out[out.length - 1];
    if (token === undefined && last !== undefined && last[1] === undefined) last[0] += piece;
    else out.push([piece, token]);
    at = end;
  }
  return out;
}

/**
 * The search for added tokens in the text, as the Rust library does it where the port does not:
 * - it takes a token with `single_word` true only where it is a word of its own: a match with a word character
 *   just before or after it, in the piece of text being searched, stays text (see `findAddedTokens`); the port
 *   matched it inside words too;
 * - the `lstrip` / `rstrip` of a token take the white space next to it as `char::is_whitespace` reads it (Unicode's
 *   White_Space: U+0085 is white space, U+FEFF is not); the port trimmed with JavaScript's `trimEnd` /
 *   `trimStart`, which take U+FEFF and leave U+0085.
 *
 * With such a token, the search is replaced by one that does as the Rust library does and is otherwise the port's:
 * the raw text is searched for the tokens that are not normalized, then each piece of text between them,
 * normalized, for the normalized ones (and only those: the port also took a piece of normalized text equal to a raw
 * token's content for that token, which a dropped match of one would then be), the `lstrip` / `rstrip` of a token
 * trimming the text next to it, and the rest goes through the pre-tokenizer and the model.
 */
function mendAddedTokenSearch(port: HfTokenizerPort, addedTokens: unknown[]): void {
  const flagged = addedTokens.some((t) =>
    isObject(t) && (t.single_word === true || t.lstrip === true || t.rstrip === true)
  );
  if (!flagged) return;
  const { normalizer, pre_tokenizer: preTokenizer, model } = port;
  const splitterOf = (field: string): (text: string) => string[] => {
    const splitter: unknown = Reflect.get(port, field);
    const split: unknown = isObject(splitter) ? splitter.split : undefined;
    if (typeof split !== "function") {
      throw new Error(`the tokenizer port has no ${field} (its version changed)`);
    }
    return (text) => split.call(splitter, text);
  };
  const splitRaw = splitterOf("splitter_unnormalized");
  const splitNormalized = splitterOf("splitter_normalized");
  const raw = new Map<string, Json>();
  const normalized = new Map<string, Json>();
  for (const t of addedTokens) {
    if (!isObject(t) || typeof t.content !== "string") continue;
    if (t.normalized === true && normalizer !== null) normalized.set(normalizer.normalize(t.content), t);
    else raw.set(t.content, t);
  }
  // The pieces on either side of a token with lstrip / rstrip lose their white space there.
  const strip = (pieces: [string, Json | undefined][]) => {
    pieces.forEach(([, token], i) => {
      if (token?.lstrip === true && i > 0) {
        pieces[i - 1][0] = pieces[i - 1][0].replace(TRAILING_WHITE_SPACE, "");
      }
      if (token?.rstrip === true && i < pieces.length - 1) {
        pieces[i + 1][0] = pieces[i + 1][0].replace(LEADING_WHITE_SPACE, "");
      }
    });
    return pieces;
  };
  const encodeText = (text: string | null): string[] | null => {
    if (text === null) return null;
    return strip(findAddedTokens(text, splitRaw, raw)).flatMap(([piece, token], sectionIndex) => {
      if (piece.length === 0) return [];
      if (token !== undefined) return [piece];
      const normal = normalizer === null ? piece : normalizer.normalize(piece);
      return strip(findAddedTokens(normal, splitNormalized, normalized)).flatMap(([sub, subToken]) => {
        if (sub.length === 0) return [];
        if (subToken !== undefined) return [sub];
        const words = preTokenizer === null
          ? [sub]
          : preTokenizer.pre_tokenize(sub, { section_index: sectionIndex });
        return model === null ? words : model._call(words);
      });
    });
  };
  Reflect.set(port, "encode_text", encodeText);
}

/**
 * GPT-2's split (the `ByteLevel` pre-tokenizer with `use_regex`), with white space as the Rust library's regex
 * engine reads `\\s`: Unicode's White_Space, which has U+0085 and not U+FEFF.
 */
const BYTE_LEVEL_SPLIT =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

/**
 * The port's `ByteLevel` pre-tokenizer splits with GPT-2's pattern in JavaScript's `\\s`, which has U+FEFF and lacks
 * U+0085, where the Rust library's has U+0085 and lacks U+FEFF: "\uFEFF's" split as "\uFEFF" "'s" (the Rust
 * library: "\uFEFF'" "s"), and a U+0085 between two marks joined them. Each such pre-tokenizer gets the pattern
 * with Unicode's White_Space.
 */
function mendByteLevelSplit(preTokenizer: unknown): void {
  if (preTokenizer instanceof HfSequencePreTokenizer) preTokenizer.tokenizers.forEach(mendByteLevelSplit);
  if (preTokenizer instanceof HfByteLevelPreTokenizer) preTokenizer.pattern = BYTE_LEVEL_SPLIT;
}

/** The special tokens a post-processor's single-sequence template puts before and after `$A`. */
function templateSpecials(
  processor: unknown,
  port: HfTokenizerPort,
): { first: number | undefined; last: number | undefined } {
  if (!isObject(processor)) return { first: undefined, last: undefined };
  if (processor.type === "Sequence" && Array.isArray(processor.processors)) {
    for (const p of processor.processors) {
      const found = templateSpecials(p, port);
      if (found.first !== undefined || found.last !== undefined) return found;
    }
    return { first: undefined, last: undefined };
  }
  if (processor.type !== "TemplateProcessing" || !Array.isArray(processor.single)) {
    return { first: undefined, last: undefined };
  }
  const items = processor.single as Json[];
  const special = (item: Json | undefined) => {
    const entry = item?.SpecialToken;
    return isObject(entry) && typeof entry.id === "string" ? port.token_to_id(entry.id) : undefined;
  };
  return { first: special(items[0]), last: items.length > 1 ? special(items[items.length - 1]) : undefined };
}
