import assert from "node:assert/strict";
import {
  basePieces,
  serializeTokenizer,
  Tokenizer,
  type TokenPiece,
  writeTokenizer,
} from "../../lib/io/mod.ts";
import { freshSeed, Rng } from "./_rng.ts";

const TOK = "../shared/data/models/stories260K/tok512.bin";
const TEXT = "../shared/data/text/tinystories/tinystories_val.txt";
const hasData = await Deno.stat(TOK).then(() => true, () => false);

/** Independent parse of tokenizer.bin: pieces as binary strings (one char per byte) and scores. */
function parseIndependently(bytes: Uint8Array): { pieces: string[]; scores: number[] } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pieces: string[] = [];
  const scores: number[] = [];
  let at = 4;
  while (at < bytes.length) {
    scores.push(view.getFloat32(at, true));
    const len = view.getInt32(at + 4, true);
    pieces.push(String.fromCharCode(...bytes.subarray(at + 8, at + 8 + len)));
    at += 8 + len;
  }
  return { pieces, scores };
}

/**
 * The reference algorithm written out directly (llama2.c's O(n²) loop): dummy-prefix space, one
 * token per UTF-8 character or its bytes (id = byte + 3), then merge the best-scoring adjacent pair
 * (first one on ties) until none is in the vocabulary.
 */
function naiveEncode(pieces: string[], scores: number[], text: string): number[] {
  const index = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (!index.has(p)) index.set(p, i);
  });
  const bytes = new TextEncoder().encode(" " + text);
  const tokens: number[] = [];
  for (let i = 0; i < bytes.length;) {
    let j = i + 1;
    while (j < bytes.length && j - i < 4 && (bytes[j] & 0xc0) === 0x80) j++;
    const id = index.get(String.fromCharCode(...bytes.subarray(i, j)));
    if (id !== undefined) tokens.push(id);
    else for (let k = i; k < j; k++) tokens.push(bytes[k] + 3);
    i = j;
  }
  for (;;) {
    let best = -Infinity;
    let at = -1;
    let merged = -1;
    for (let i = 0; i + 1 < tokens.length; i++) {
      const id = index.get(pieces[tokens[i]] + pieces[tokens[i + 1]]);
      if (id !== undefined && scores[id] > best) {
        best = scores[id];
        at = i;
        merged = id;
      }
    }
    if (at < 0) break;
    tokens.splice(at, 2, merged);
  }
  return [1, ...tokens];
}

const SENTENCES = [
  "Once upon a time, there was a little girl named Lily.",
  'She said, "I can\'t find my ball!" and ran to the park.',
  "Le café était très bon, dit Zoé.",
  "日本語のテキスト: 日本",
  "Emoji time 😀🎉 and a flag 🇫🇷!",
  "  two leading spaces, a\ttab, and\nnew lines\n\nend.",
  "Zoo",
  "x",
  "\ufeffA byte order mark first, and one in\ufeffside.",
];

Deno.test({
  name: "tok512.bin: header, special ids and byte tokens as described in the data README",
  ignore: !hasData,
  fn: async () => {
    const tok = await Tokenizer.load(TOK);
    assert.equal(tok.vocabSize, 512);
    assert.equal(tok.maxTokenLength, 7);
    const text = (id: number) => new TextDecoder().decode(tok.piece(id));
    assert.equal(text(0), "<unk>");
    assert.equal(text(1), "\n<s>\n");
    assert.equal(text(2), "\n</s>\n");
    for (let b = 0; b < 256; b++) {
      assert.equal(text(b + 3), `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    }
    // Independent parse agrees on every piece and score.
    const ref = parseIndependently(await Deno.readFile(TOK));
    assert.equal(ref.pieces.length, 512);
    for (let id = 0; id < 512; id++) {
      assert.equal(String.fromCharCode(...tok.piece(id)), ref.pieces[id]);
      assert.equal(tok.score(id), ref.scores[id]);
    }
  },
});

Deno.test({
  name: "tok512.bin: encode -> decode returns the text, including byte-fallback characters",
  ignore: !hasData,
  fn: async () => {
    const tok = await Tokenizer.load(TOK);
    for (const s of SENTENCES) {
      const ids = tok.encode(s);
      assert.equal(ids[0], 1, "starts with BOS");
      assert.equal(tok.decode(ids), s);
      // Streaming decode gives the same text, even when a character spans several byte tokens.
      const stream = tok.streamDecoder();
      let streamed = "";
      for (const id of ids) streamed += stream.push(id);
      streamed += stream.flush();
      assert.equal(streamed, s);
      const withEos = tok.encode(s, { bos: false, eos: true });
      assert.equal(withEos.at(-1), 2);
      assert.deepEqual(withEos.slice(0, -1), ids.slice(1));
      assert.equal(tok.decode(withEos), s);
    }
    const once = tok.encode("Once upon a time");
    assert.equal(once[0], 1);
    assert.ok(once.length > 2 && once.length < 17, "merges happened");
    assert.equal(tok.decode(once), "Once upon a time");
    assert.deepEqual(tok.encode(""), [1]);

    // 日本 is not in the vocabulary: after the dummy-prefix space come its six UTF-8 bytes as byte tokens.
    let space = -1;
    for (let id = 0; id < tok.vocabSize; id++) {
      const p = tok.piece(id);
      if (p.length === 1 && p[0] === 0x20) space = id;
    }
    const utf8 = [...new TextEncoder().encode("日本")];
    assert.deepEqual(tok.encode("日本", { bos: false }), [space, ...utf8.map((b) => b + 3)]);
    // decodeToken right after BOS drops the dummy-prefix space.
    assert.deepEqual(Array.from(tok.decodeToken(1, space)), []);
    assert.deepEqual(Array.from(tok.decodeToken(50, space)), [0x20]);
    assert.deepEqual(Array.from(tok.decodeToken(1, 0xe6 + 3)), [0xe6]);
  },
});

Deno.test({
  name: "tok512.bin: encode equals the reference O(n²) merge loop on sentences and random story slices",
  ignore: !hasData,
  fn: async () => {
    const tok = await Tokenizer.load(TOK);
    const { pieces, scores } = parseIndependently(await Deno.readFile(TOK));
    for (const s of SENTENCES) assert.deepEqual(tok.encode(s), naiveEncode(pieces, scores, s), s);
    const text = await Deno.readTextFile(TEXT);
    const rng = new Rng(freshSeed());
    for (let trial = 0; trial < 8; trial++) {
      const start = rng.int(0, text.length - 600);
      const slice = text.slice(start, start + rng.int(1, 600));
      assert.deepEqual(tok.encode(slice), naiveEncode(pieces, scores, slice), JSON.stringify(slice));
    }
  },
});

Deno.test({
  name: "tok512.bin: the whole tinystories_val.txt encodes and decodes back exactly",
  ignore: !hasData,
  fn: async () => {
    const tok = await Tokenizer.load(TOK);
    const text = await Deno.readTextFile(TEXT);
    const ids = tok.encode(text);
    assert.ok(ids.length > 100_000 && ids.length < text.length / 1.5, `${ids.length} tokens`);
    assert.equal(tok.decode(ids), text);
  },
});

/** Synthetic vocabulary: the 259 llama2.c base pieces, then ids 259.. as listed. */
function syntheticPieces(): TokenPiece[] {
  return [
    ...basePieces(),
    { piece: " ", score: -100 }, // 259
    { piece: "a", score: -100 }, // 260
    { piece: "b", score: -100 }, // 261
    { piece: "c", score: -100 }, // 262
    { piece: "ab", score: 5 }, // 263
    { piece: "bc", score: 3 }, // 264
    { piece: "abc", score: 2 }, // 265
    { piece: " a", score: 1 }, // 266
    { piece: "aa", score: 1 }, // 267
  ];
}

Deno.test("synthetic tokenizer: hand-checked merges, ties and byte fallback", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/tok.bin`;
    await writeTokenizer(path, syntheticPieces());
    const tok = await Tokenizer.load(path);
    assert.equal(tok.vocabSize, 268);
    assert.equal(tok.maxTokenLength, 6); // "\n</s>\n" is the longest piece
    assert.equal(tok.score(263), 5);

    // "abc": [" ", a, b, c]; best pair "ab" (5) -> [" ", ab, c]; then "abc" (2) -> [" ", abc].
    assert.deepEqual(tok.encode("abc"), [1, 259, 265]);
    // "bcab": "ab" (5) beats "bc" (3) -> [" ", b, c, ab]; then "bc" -> [" ", bc, ab]; "bcab" is no piece.
    assert.deepEqual(tok.encode("bcab", { bos: false }), [259, 264, 263]);
    // "aaaa": " a", "aa", "aa", "aa" all score 1; the leftmost (" a") wins -> [" a", a, a, a];
    // then the leftmost "aa" -> [" a", aa, a]; "aaa" is no piece. (Rightmost-first would give [" ", aa, aa].)
    assert.deepEqual(tok.encode("aaaa", { bos: false }), [266, 267, 260]);
    // "z" is no piece: byte fallback <0x7A> = id 0x7A + 3; " a" still merges.
    assert.deepEqual(tok.encode("az", { bos: false }), [266, 0x7a + 3]);
    // "é" (C3 A9) falls back to two byte tokens; decode reassembles the character.
    assert.deepEqual(tok.encode("é", { bos: false, eos: true }), [259, 0xc3 + 3, 0xa9 + 3, 2]);
    for (const s of ["abc", "bcab", "aaa", "az", "é", "cab aab", "日本 😀"]) {
      assert.equal(tok.decode(tok.encode(s)), s);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("synthetic tokenizer: random strings agree with the reference loop", () => {
  const rng = new Rng(freshSeed());
  const pieces = syntheticPieces();
  const bytes = serializeTokenizer(pieces);
  const tok = Tokenizer.fromBytes(bytes, "synthetic");
  const ref = parseIndependently(bytes);
  const alphabet = ["a", "b", "c", " ", "z", "é"];
  for (let trial = 0; trial < 200; trial++) {
    const s = Array.from({ length: rng.int(1, 30) }, () => alphabet[rng.int(0, alphabet.length - 1)]).join(
      "",
    );
    assert.deepEqual(tok.encode(s), naiveEncode(ref.pieces, ref.scores, s), JSON.stringify(s));
    assert.equal(tok.decode(tok.encode(s)), s);
  }
});

Deno.test("tokenizer file errors name the file, token and offset", () => {
  const bytes = serializeTokenizer(syntheticPieces());
  assert.throws(
    () => Tokenizer.fromBytes(bytes.subarray(0, bytes.length - 1), "cut.bin"),
    /"cut\.bin" is truncated or corrupt: token 267 declares 2 bytes at byte \d+, but 1 remain/,
  );
  assert.throws(
    () => Tokenizer.fromBytes(bytes.subarray(0, bytes.length - 6), "cut2.bin"),
    /"cut2\.bin" is truncated: token 267 at byte \d+ needs 8 bytes/,
  );
  assert.throws(() => Tokenizer.fromBytes(new Uint8Array(2), "tiny.bin"), /"tiny\.bin" has 2 bytes/);
  const tok = Tokenizer.fromBytes(bytes);
  assert.throws(() => tok.decode([268]), /token id 268 is out of range for a vocabulary of 268 pieces/);
});

Deno.test("Tokenizer.encode refuses a misspelt option instead of dropping it", () => {
  const tok = new Tokenizer(syntheticPieces());
  // Dropped, { BOS: false } still put BOS (1) first and { eso: true } put no EOS (2) last; closed form below.
  assert.throws(() => tok.encode("abc", { BOS: false } as never), /Tokenizer\.encode: unknown option "BOS"/);
  assert.throws(() => tok.encode("abc", { eso: true } as never), /Tokenizer\.encode: unknown option "eso"/);
  assert.deepEqual(tok.encode("abc", { bos: false, eos: true }), [259, 265, 2]);
});

Deno.test("Tokenizer.encode refuses a lone surrogate, naming it and its index", () => {
  const tok = new Tokenizer(syntheticPieces());
  // TextEncoder wrote U+FFFD (three byte tokens) in its place: ids of a character the text does not have.
  assert.throws(() => tok.encode("ab\uD800c"), /Tokenizer\.encode: .*lone surrogate U\+D800 at index 2/);
  assert.throws(() => tok.encode("abc\uD83E"), /lone surrogate U\+D83E at index 3/); // an emoji cut after its half
  assert.throws(() => tok.encode("\uDD80abc"), /lone surrogate U\+DD80 at index 0/);
  // A whole pair is one character: encoded as before (its four UTF-8 bytes, byte fallback here).
  const ids = tok.encode("a\u{1F980}", { bos: false });
  // llama2.c's byte tokens: byte b is id b + 3.
  assert.deepEqual(ids.slice(-4), [0xf0, 0x9f, 0xa6, 0x80].map((b) => b + 3));
});
