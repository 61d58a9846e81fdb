/**
 * The llama2.c `tokenizer.bin` format and its SentencePiece-style BPE.
 *
 * File layout: int32 `max_token_length`, then for every token id in order: float32 `score`,
 * int32 `len`, `len` bytes of the piece (all little-endian). By llama2.c convention id 0 is `<unk>`,
 * id 1 is BOS, id 2 is EOS, and the pieces `<0x00>`..`<0xFF>` are byte-fallback tokens (ids 3..258 in
 * the usual layout).
 *
 * @module
 */

import { writeFileAtomic } from "./atomic.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";

/** One vocabulary entry for building or writing a tokenizer. */
export type TokenPiece = {
  /** The piece: a string is stored as UTF-8; a `Uint8Array` is stored as is. */
  piece: string | Uint8Array;
  /** Merge priority: among adjacent pairs, the one whose concatenation has the highest score merges first. */
  score: number;
};

/** Options for {@link Tokenizer.encode}. */
export type EncodeOptions = {
  /** Prepend BOS (id 1); default true. */
  bos?: boolean;
  /** Append EOS (id 2); default false. */
  eos?: boolean;
};

/** Incremental decoder returned by {@link Tokenizer.streamDecoder}. */
export type TokenStreamDecoder = {
  /** Feed the next token id; returns the text that is complete so far (UTF-8 split across tokens is held back). */
  push(id: number): string;
  /** Return any text still held back (incomplete UTF-8 becomes U+FFFD). */
  flush(): string;
};

/** Id of `<unk>` in llama2.c tokenizers. */
export const UNK_ID = 0;
/** Id of the beginning-of-sequence token in llama2.c tokenizers. */
export const BOS_ID = 1;
/** Id of the end-of-sequence token in llama2.c tokenizers. */
export const EOS_ID = 2;

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;
const ENCODE_OPTIONS = z.object({ bos: z.boolean(), eos: z.boolean() }).partial().strict();

/** A byte string as a JS string with one char code (0..255) per byte, used as a map key. */
function bytesKey(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

const SINGLE_BYTE_KEYS = Array.from({ length: 256 }, (_, b) => String.fromCharCode(b));

/**
 * Binary heap of merge candidates, best (highest score, then leftmost) on top. Candidates live in
 * append-only parallel arrays; the heap orders their indices.
 */
class MergeHeap {
  readonly score: number[] = [];
  readonly left: number[] = [];
  readonly right: number[] = [];
  readonly leftVersion: number[] = [];
  readonly rightVersion: number[] = [];
  readonly id: number[] = [];
  #heap: number[] = [];

  get size(): number {
    return this.#heap.length;
  }

  #better(a: number, b: number): boolean {
    const sa = this.score[a];
    const sb = this.score[b];
    return sa > sb || (sa === sb && this.left[a] < this.left[b]);
  }

  push(
    score: number,
    left: number,
    right: number,
    leftVersion: number,
    rightVersion: number,
    id: number,
  ): void {
    const entry = this.score.length;
    this.score.push(score);
    this.left.push(left);
    this.right.push(right);
    this.leftVersion.push(leftVersion);
    this.rightVersion.push(rightVersion);
    this.id.push(id);
    const heap = this.#heap;
    let i = heap.length;
    heap.push(entry);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#better(entry, heap[parent])) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = entry;
  }

  /** Remove the best candidate and return its index into the parallel arrays. */
  pop(): number {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop()!;
    const n = heap.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const child = r < n && this.#better(heap[r], heap[l]) ? r : l;
        if (!this.#better(heap[child], last)) break;
        heap[i] = heap[child];
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}

/**
 * A llama2.c / SentencePiece BPE tokenizer.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "./tokenizer.ts";
 * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
 * const ids = tok.encode("Once upon a time");
 * ids[0]; // 1 (BOS)
 * tok.decode(ids); // "Once upon a time"
 * ```
 */
export class Tokenizer {
  #pieces: Uint8Array[];
  #keys: string[];
  #scores: Float32Array;
  #lookup = new Map<string, number>();
  #byteIds = new Int32Array(256);
  #decoded: Uint8Array[];
  #maxPieceBytes = 0;
  #maxTokenLength: number;

  /**
   * Build a tokenizer from its pieces (index = id). When two pieces are equal, the lower id wins.
   *
   * @param pieces Vocabulary in id order.
   * @param maxTokenLength Value of the file's header field; defaults to the longest piece in bytes.
   */
  constructor(pieces: TokenPiece[], maxTokenLength?: number) {
    if (pieces.length === 0) throw new Error("a tokenizer needs at least one piece");
    const encoder = new TextEncoder();
    this.#pieces = pieces.map((
      p,
    ) => (typeof p.piece === "string" ? encoder.encode(p.piece) : p.piece.slice()));
    this.#scores = Float32Array.from(pieces, (p) => p.score);
    this.#keys = this.#pieces.map(bytesKey);
    this.#keys.forEach((key, id) => {
      if (!this.#lookup.has(key)) this.#lookup.set(key, id);
      this.#maxPieceBytes = Math.max(this.#maxPieceBytes, key.length);
    });
    this.#maxTokenLength = maxTokenLength ?? this.#maxPieceBytes;
    for (let b = 0; b < 256; b++) {
      const id = this.#lookup.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
      this.#byteIds[b] = id ?? UNK_ID;
    }
    this.#decoded = this.#pieces.map((bytes, id) => {
      if (id === BOS_ID || id === EOS_ID) return new Uint8Array(0);
      const match = BYTE_PIECE.exec(this.#keys[id]);
      return match ? new Uint8Array([parseInt(match[1], 16)]) : bytes;
    });
  }

  /**
   * Read a `tokenizer.bin` file.
   *
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
   * tok.vocabSize; // 512
   * ```
   */
  static async load(path: string): Promise<Tokenizer> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`cannot read tokenizer file "${path}": ${reason}`, { cause: err });
    }
    return Tokenizer.fromBytes(bytes, path);
  }

  /**
   * Parse the bytes of a `tokenizer.bin` file; truncated or inconsistent entries raise an error naming
   * `source`, the token id and the byte offset.
   *
   * @example
   * ```ts
   * import { serializeTokenizer, Tokenizer } from "./tokenizer.ts";
   * const tok = Tokenizer.fromBytes(serializeTokenizer([{ piece: "a", score: 0 }]));
   * ```
   */
  static fromBytes(bytes: Uint8Array, source = "<bytes>"): Tokenizer {
    const where = `tokenizer file "${source}"`;
    if (bytes.length < 4) {
      throw new Error(`${where} has ${bytes.length} bytes, fewer than the 4-byte max_token_length field`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const maxTokenLength = view.getInt32(0, true);
    if (maxTokenLength < 0) {
      throw new Error(`${where} declares a negative max_token_length ${maxTokenLength}`);
    }
    const pieces: TokenPiece[] = [];
    let at = 4;
    while (at < bytes.length) {
      const id = pieces.length;
      if (at + 8 > bytes.length) {
        throw new Error(
          `${where} is truncated: token ${id} at byte ${at} needs 8 bytes for score and length, but only ${
            bytes.length - at
          } remain`,
        );
      }
      const score = view.getFloat32(at, true);
      const len = view.getInt32(at + 4, true);
      at += 8;
      if (len < 0 || at + len > bytes.length) {
        throw new Error(
          `${where} is truncated or corrupt: token ${id} declares ${len} bytes at byte ${at}, but ${
            bytes.length - at
          } remain`,
        );
      }
      pieces.push({ piece: bytes.slice(at, at + len), score });
      at += len;
    }
    if (pieces.length === 0) throw new Error(`${where} contains no tokens`);
    return new Tokenizer(pieces, maxTokenLength);
  }

  /** Number of pieces. */
  get vocabSize(): number {
    return this.#pieces.length;
  }

  /** The `max_token_length` header value. */
  get maxTokenLength(): number {
    return this.#maxTokenLength;
  }

  /** Id of the beginning-of-sequence token (1). */
  get bosId(): number {
    return BOS_ID;
  }

  /** Id of the end-of-sequence token (2). */
  get eosId(): number {
    return EOS_ID;
  }

  /** The raw bytes of piece `id` (e.g. `"<0x41>"` for a byte token, `" the"` for a merge). */
  piece(id: number): Uint8Array {
    this.#checkId(id);
    return this.#pieces[id].slice();
  }

  /** The merge score of piece `id`. */
  score(id: number): number {
    this.#checkId(id);
    return this.#scores[id];
  }

  /** Id of a piece given as text or bytes, or undefined if it is not in the vocabulary. */
  pieceId(piece: string | Uint8Array): number | undefined {
    const bytes = typeof piece === "string" ? new TextEncoder().encode(piece) : piece;
    return this.#lookup.get(bytesKey(bytes));
  }

  #checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.#pieces.length) {
      throw new Error(`token id ${id} is out of range for a vocabulary of ${this.#pieces.length} pieces`);
    }
  }

  /**
   * Encode text to token ids, exactly as llama2.c's `encode`: prepend a space (the SentencePiece
   * "dummy prefix", only for non-empty text), map each UTF-8 character to its piece or else to its
   * byte-fallback tokens `<0xNN>` (to `<unk>` if the vocabulary lacks them), then repeatedly merge the
   * adjacent pair whose concatenation is a piece with the highest score (leftmost pair on ties).
   *
   * The merge loop uses a priority queue over a linked list, so it costs O(n log n) rather than the
   * reference's O(n²): a whole file (e.g. the 800 KB `tinystories_val.txt`) can be encoded in one call
   * and gives the same ids as the reference would. Callers that want text split into documents or
   * lines (each with its own BOS and dummy prefix) should split first and encode each piece; note that
   * splitting changes the ids at the boundaries, because each piece gets its own leading space.
   *
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
   * tok.encode("Hi", { bos: true, eos: true }); // [1, ..., 2]
   * ```
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    checkOptions("Tokenizer.encode", ENCODE_OPTIONS, options);
    checkWellFormed("Tokenizer.encode", text);
    const { bos = true, eos = false } = options;
    const out: number[] = [];
    if (bos) out.push(BOS_ID);
    if (text.length > 0) {
      const bytes = new TextEncoder().encode(` ${text}`);
      for (const id of this.#mergeAll(this.#initialTokens(bytes))) out.push(id);
    }
    if (eos) out.push(EOS_ID);
    return out;
  }

  /** One token per UTF-8 character (its piece), or one per byte (byte fallback). */
  #initialTokens(bytes: Uint8Array): Int32Array {
    const ids = new Int32Array(bytes.length);
    let n = 0;
    let i = 0;
    while (i < bytes.length) {
      // A character is a lead byte plus the continuation bytes (10xxxxxx) after it, at most 4 bytes.
      let end = i + 1;
      while (end < bytes.length && end - i < 4 && (bytes[end] & 0xc0) === 0x80) end++;
      const key = end === i + 1 ? SINGLE_BYTE_KEYS[bytes[i]] : bytesKey(bytes.subarray(i, end));
      const id = this.#lookup.get(key);
      if (id !== undefined) {
        ids[n++] = id;
      } else {
        for (let k = i; k < end; k++) ids[n++] = this.#byteIds[bytes[k]];
      }
      i = end;
    }
    return ids.subarray(0, n);
  }

  /** Apply BPE merges (highest score first, leftmost on ties) until no adjacent pair forms a piece. */
  #mergeAll(initial: Int32Array): Int32Array {
    const n = initial.length;
    const ids = initial.slice();
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const version = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const heap = new MergeHeap();
    const consider = (left: number, right: number) => {
      const a = this.#keys[ids[left]];
      const b = this.#keys[ids[right]];
      if (a.length + b.length > this.#maxPieceBytes) return;
      const id = this.#lookup.get(a + b);
      if (id !== undefined) heap.push(this.#scores[id], left, right, version[left], version[right], id);
    };
    for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
    let remaining = n;
    while (heap.size > 0) {
      const c = heap.pop();
      const left = heap.left[c];
      const right = heap.right[c];
      const id = heap.id[c];
      // Stale if either side changed since the candidate was queued (merged, or removed by a merge).
      if (
        !alive[left] || !alive[right] || version[left] !== heap.leftVersion[c] ||
        version[right] !== heap.rightVersion[c]
      ) {
        continue;
      }
      ids[left] = id;
      version[left]++;
      alive[right] = 0;
      version[right]++;
      next[left] = next[right];
      if (next[right] !== -1) prev[next[right]] = left;
      remaining--;
      if (prev[left] !== -1) consider(prev[left], left);
      if (next[left] !== -1) consider(left, next[left]);
    }
    const out = new Int32Array(remaining);
    let k = 0;
    for (let i = n > 0 ? 0 : -1; i !== -1; i = next[i]) out[k++] = ids[i];
    return out;
  }

  /**
   * The bytes that token `id` contributes to decoded text when it follows token `prev`: byte tokens
   * `<0xNN>` become the byte, BOS/EOS become nothing, and a leading space is dropped right after BOS
   * (the dummy prefix). Use {@link Tokenizer.streamDecoder} to turn a stream of ids into text.
   *
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
   * const ids = tok.encode("Once upon a time");
   * // the first piece after BOS, without the dummy-prefix space
   * new TextDecoder().decode(tok.decodeToken(ids[0], ids[1]));
   * ```
   */
  decodeToken(prev: number, id: number): Uint8Array {
    this.#checkId(id);
    const bytes = this.#decoded[id];
    if (prev === BOS_ID && bytes.length > 0 && bytes[0] === 0x20) return bytes.slice(1);
    return bytes.slice();
  }

  /**
   * Decode ids to text. BOS and EOS produce no text; the leading space of the first token and of any
   * token right after BOS is dropped (the dummy prefix added by {@link Tokenizer.encode}); byte tokens
   * are reassembled into UTF-8 across token boundaries (invalid sequences become U+FFFD; a U+FEFF is kept, also
   * at the start).
   *
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
   * tok.decode(tok.encode("café 日本")); // "café 日本"
   * ```
   */
  decode(ids: ArrayLike<number>): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    let prev = BOS_ID;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      this.#checkId(id);
      let bytes = this.#decoded[id];
      if (prev === BOS_ID && bytes.length > 0 && bytes[0] === 0x20) bytes = bytes.subarray(1);
      parts.push(bytes);
      total += bytes.length;
      prev = id;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      all.set(part, at);
      at += part.length;
    }
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(all);
  }

  /**
   * An incremental decoder for generation loops: push ids one at a time and get printable text back,
   * with characters whose UTF-8 bytes span several byte tokens emitted once complete. Follows the same
   * rules as {@link Tokenizer.decode}.
   *
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
   * const stream = tok.streamDecoder();
   * let text = "";
   * for (const id of tok.encode("日本")) text += stream.push(id);
   * text += stream.flush(); // "日本"
   * ```
   */
  streamDecoder(): TokenStreamDecoder {
    const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    let prev = BOS_ID;
    return {
      push: (id: number) => {
        const bytes = this.decodeToken(prev, id);
        prev = id;
        return decoder.decode(bytes, { stream: true });
      },
      flush: () => decoder.decode(),
    };
  }
}

/**
 * The 259 pieces every llama2.c tokenizer starts with, all with score 0: `<unk>` (id 0), BOS
 * `"\n<s>\n"` (id 1), EOS `"\n</s>\n"` (id 2) and the byte tokens `<0x00>`..`<0xFF>` (ids 3..258).
 * Append merge pieces to build a synthetic tokenizer.
 *
 * @example
 * ```ts
 * import { basePieces, Tokenizer } from "./tokenizer.ts";
 * const tok = new Tokenizer([...basePieces(), { piece: " ", score: -1 }, { piece: "a", score: -2 }]);
 * ```
 */
export function basePieces(): TokenPiece[] {
  const pieces: TokenPiece[] = [
    { piece: "<unk>", score: 0 },
    { piece: "\n<s>\n", score: 0 },
    { piece: "\n</s>\n", score: 0 },
  ];
  for (let b = 0; b < 256; b++) {
    pieces.push({ piece: `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`, score: 0 });
  }
  return pieces;
}

/**
 * Serialise pieces to the `tokenizer.bin` layout.
 *
 * @param pieces Vocabulary in id order.
 * @param maxTokenLength Header value; defaults to the longest piece in bytes.
 *
 * @example
 * ```ts
 * import { basePieces, serializeTokenizer } from "./tokenizer.ts";
 * const bytes = serializeTokenizer([...basePieces(), { piece: "ab", score: -1 }]);
 * ```
 */
export function serializeTokenizer(pieces: TokenPiece[], maxTokenLength?: number): Uint8Array {
  const encoder = new TextEncoder();
  const raw = pieces.map((p) => (typeof p.piece === "string" ? encoder.encode(p.piece) : p.piece));
  const longest = raw.reduce((m, b) => Math.max(m, b.length), 0);
  const total = 4 + raw.reduce((a, b) => a + 8 + b.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setInt32(0, maxTokenLength ?? longest, true);
  let at = 4;
  raw.forEach((bytes, i) => {
    view.setFloat32(at, pieces[i].score, true);
    view.setInt32(at + 4, bytes.length, true);
    out.set(bytes, at + 8);
    at += 8 + bytes.length;
  });
  return out;
}

/**
 * Write pieces as a `tokenizer.bin` file, atomically (see {@link serializeTokenizer}).
 *
 * @example
 * ```ts
 * import { basePieces, writeTokenizer } from "./tokenizer.ts";
 * const dir = await Deno.makeTempDir();
 * await writeTokenizer(`${dir}/tok.bin`, [...basePieces(), { piece: " the", score: -1 }]);
 * ```
 */
export async function writeTokenizer(
  path: string,
  pieces: TokenPiece[],
  maxTokenLength?: number,
): Promise<void> {
  await writeFileAtomic(path, serializeTokenizer(pieces, maxTokenLength));
}

/**
 * Refuses a text that is not well-formed UTF-16: one with a lone surrogate (half of a character outside the Basic
 * Multilingual Plane, e.g. an emoji cut in two by slicing a string). UTF-8 cannot encode it; `TextEncoder` writes
 * U+FFFD in its place, so the ids would be those of a character the text does not have. transformers' tokenizers
 * refuse such a text too. Throws a RangeError naming `who`, the surrogate and its index.
 */
export function checkWellFormed(who: string, text: string): void {
  if (text.isWellFormed()) return;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    const next = text.charCodeAt(i + 1);
    if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      i++;
      continue;
    }
    throw new RangeError(
      `${who}: the text has a lone surrogate U+${c.toString(16).toUpperCase()} at index ${i} (half of a ` +
        `character, e.g. from slicing a string inside a surrogate pair): it is not valid Unicode and UTF-8 cannot ` +
        `encode it`,
    );
  }
}
