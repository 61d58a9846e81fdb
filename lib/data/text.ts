/**
 * Plain-text loaders: whole-file corpora (with CRLF normalisation), the nanoGPT train/val split, the
 * UCI "Sentiment Labelled Sentences" files (`sentence<TAB>label` per line), and a character vocabulary for
 * character-level language models.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";

const LOAD_TEXT_OPTIONS = z.object({ normalizeNewlines: z.boolean() }).partial().strict();
// A number here; its range, [0, 1), is checked where it is read.
const SPLIT_TEXT_OPTIONS = z.object({ valFraction: z.number() }).partial().strict();

/** Options for {@linkcode loadText}. */
export interface LoadTextOptions {
  /** Replace every `\r\n` with `\n` (Project Gutenberg files use CRLF). Default `true`. */
  normalizeNewlines?: boolean;
}

/** Reads a file and decodes it as UTF-8, naming the file when it cannot be read or is not valid UTF-8. */
export async function readUtf8(path: string, what: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw new Error(`${what} "${path}": cannot read it: ${(err as Error).message}`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${what} "${path}" is not valid UTF-8 (${bytes.length} bytes)`);
  }
}

/**
 * Loads a UTF-8 text file as one string (a leading byte-order mark is dropped).
 *
 * @param path file to read.
 * @param options `normalizeNewlines` (default `true`) turns CRLF into LF.
 * @throws {Error} when the file cannot be read or is not valid UTF-8.
 * @throws {OptionsError} on an unknown key or a `normalizeNewlines` that is not a boolean.
 *
 * @example
 * ```ts
 * import { loadText } from "./text.ts";
 * const alice = await loadText("../shared/data/text/gutenberg/pg11.txt");
 * ```
 */
export async function loadText(path: string, options: LoadTextOptions = {}): Promise<string> {
  checkOptions("loadText", LOAD_TEXT_OPTIONS, options);
  const { normalizeNewlines = true } = options;
  const text = await readUtf8(path, "text file");
  return normalizeNewlines ? text.replaceAll("\r\n", "\n") : text;
}

/** Options for {@linkcode splitText}. */
export interface SplitTextOptions {
  /** Fraction of the text (by UTF-16 code units) that goes to validation, in [0, 1). Default `0.1`. */
  valFraction?: number;
}

/** A contiguous train/validation split of one text. */
export interface TextSplit {
  /** The first part of the text. */
  train: string;
  /** The last part of the text. */
  val: string;
}

/**
 * Splits a text into a leading train part and a trailing validation part (nanoGPT convention:
 * `train = text[:int(n * 0.9)]`, `val = text[int(n * 0.9):]`). The cut is moved back by one code unit if
 * it would separate a surrogate pair.
 *
 * @param text text to split.
 * @param options `valFraction` (default `0.1`).
 * @throws {RangeError} when `valFraction` is outside [0, 1); an `OptionsError` on an unknown key.
 *
 * @example
 * ```ts
 * import { splitText } from "./text.ts";
 * const { train, val } = splitText("abcdefghij"); // train "abcdefghi", val "j"
 * ```
 */
export function splitText(text: string, options: SplitTextOptions = {}): TextSplit {
  checkOptions("splitText", SPLIT_TEXT_OPTIONS, options);
  const { valFraction = 0.1 } = options;
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new RangeError(`splitText: valFraction must be in [0, 1), got ${valFraction}`);
  }
  // floor(n·(1 − f)), where a product that misses an integer only by rounding counts as that integer:
  // 1000 · (1 − 0.9) is 99.99999999999997 in floating point, and the cut is 100.
  const exact = text.length * (1 - valFraction);
  const nearest = Math.round(exact);
  let cut = Math.abs(exact - nearest) <= 1e-9 * Math.max(1, exact) ? nearest : Math.floor(exact);
  if (cut > 0 && cut < text.length) {
    const before = text.charCodeAt(cut - 1);
    if (before >= 0xd800 && before <= 0xdbff) cut -= 1; // keep a surrogate pair together
  }
  return { train: text.slice(0, cut), val: text.slice(cut) };
}

/** One labelled sentence. */
export interface SentimentExample {
  /** The sentence, with surrounding whitespace trimmed. */
  sentence: string;
  /** 1 = positive, 0 = negative. */
  label: 0 | 1;
}

/**
 * Loads a UCI "Sentiment Labelled Sentences" file: one `sentence<TAB>label` per line, label `0` or `1`.
 * The line is split at its last tab; the sentence is trimmed. A final empty line is allowed; any other
 * empty line, a line without a tab, an empty sentence or a label other than 0/1 is an error that names
 * the file and the 1-based line number.
 *
 * @param path file to read (UTF-8; lines end in LF, CRLF or a lone CR).
 * @throws {Error} on the first malformed line.
 *
 * @example
 * ```ts
 * import { loadSentiment } from "./text.ts";
 * const yelp = await loadSentiment("../shared/data/text/sentiment_labelled_sentences/yelp_labelled.txt");
 * const positives = yelp.filter((e) => e.label === 1).length;
 * ```
 */
export async function loadSentiment(path: string): Promise<SentimentExample[]> {
  const text = await readUtf8(path, "sentiment file");
  const lines = text.split(/\r\n|\r|\n/);
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const examples: SentimentExample[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const where = `sentiment file "${path}" line ${i + 1}`;
    if (line.trim() === "") {
      throw new Error(`${where}: expected "sentence<TAB>label" but the line is empty`);
    }
    const tab = line.lastIndexOf("\t");
    if (tab < 0) {
      throw new Error(`${where}: expected "sentence<TAB>label" but found no tab in ${preview(line)}`);
    }
    const sentence = line.slice(0, tab).trim();
    const labelText = line.slice(tab + 1).trim();
    if (sentence === "") {
      throw new Error(`${where}: the sentence before the tab is empty`);
    }
    if (labelText !== "0" && labelText !== "1") {
      throw new Error(`${where}: expected label 0 or 1 after the tab but found ${JSON.stringify(labelText)}`);
    }
    examples.push({ sentence, label: labelText === "1" ? 1 : 0 });
  }
  if (examples.length === 0) throw new Error(`sentiment file "${path}" holds no examples`);
  return examples;
}

function preview(line: string): string {
  return JSON.stringify(line.length > 60 ? `${line.slice(0, 60)}...` : line);
}

// ---------------------------------------------------------------------------------------------------------
// Character vocabulary
// ---------------------------------------------------------------------------------------------------------

/** A character-level vocabulary: ids are assigned to the distinct characters in code-point order. */
export interface CharVocab {
  /** Character → id. */
  readonly stoi: ReadonlyMap<string, number>;
  /** id → character. */
  readonly itos: readonly string[];
  /** Number of distinct characters. */
  readonly size: number;
  /** Encodes a string (by code point); throws on a character that is not in the vocabulary. */
  encode(text: string): Int32Array;
  /** Decodes ids back to a string; throws on an id outside `0..size-1`. */
  decode(ids: ArrayLike<number>): string;
}

class CharVocabImpl implements CharVocab {
  readonly stoi: ReadonlyMap<string, number>;
  readonly itos: readonly string[];
  readonly size: number;

  constructor(chars: string[]) {
    this.itos = chars;
    this.stoi = new Map(chars.map((c, i) => [c, i]));
    this.size = chars.length;
  }

  encode(text: string): Int32Array {
    const chars = Array.from(text);
    const ids = new Int32Array(chars.length);
    for (let i = 0; i < chars.length; i++) {
      const id = this.stoi.get(chars[i]);
      if (id === undefined) {
        const code = chars[i].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
        throw new Error(
          `charVocab.encode: character ${JSON.stringify(chars[i])} (U+${code}) at position ${i} is not in ` +
            `the ${this.size}-character vocabulary; build the vocabulary from all the text you will encode`,
        );
      }
      ids[i] = id;
    }
    return ids;
  }

  decode(ids: ArrayLike<number>): string {
    let out = "";
    for (let i = 0; i < ids.length; i++) {
      const ch = this.itos[ids[i]];
      if (ch === undefined) {
        throw new RangeError(
          `charVocab.decode: id ${ids[i]} at position ${i} is outside 0..${this.size - 1}`,
        );
      }
      out += ch;
    }
    return out;
  }
}

/**
 * Builds a character vocabulary from a text: the distinct characters (Unicode code points), sorted by
 * code point, get ids 0..size-1 (the nanoGPT `sorted(set(text))` convention).
 *
 * @param text the text whose characters form the vocabulary.
 *
 * @example
 * ```ts
 * import { charVocab } from "./text.ts";
 * const vocab = charVocab("hello world");
 * vocab.itos; // [" ", "d", "e", "h", "l", "o", "r", "w"]
 * vocab.decode(vocab.encode("hold")); // "hold"
 * ```
 */
export function charVocab(text: string): CharVocab {
  const distinct = [...new Set(Array.from(text))];
  distinct.sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  return new CharVocabImpl(distinct);
}
