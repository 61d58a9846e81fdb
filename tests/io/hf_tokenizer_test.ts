/**
 * Hugging Face tokenizers against the golden fixtures written by tools/tokenizer_fixtures.py (transformers'
 * AutoTokenizer on each fixture directory): ids with and without special tokens, decoded text, streaming
 * decode, the special-token ids, and clear errors for bad inputs.
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import {
  checkTokenizerFits,
  HfTokenizer,
  loadTokenizer,
  modelTokenizerPath,
  type TextTokenizer,
  Tokenizer,
} from "../../lib/io/mod.ts";
import { TestRng } from "../_helpers.ts";

const FIXTURES = new URL("../fixtures/tokenizers/", import.meta.url).pathname;
const NAMES = [
  "bytelevel_bos",
  "bytelevel_nobos",
  "bytelevel_digits",
  "sentencepiece_legacy",
  "sentencepiece_metaspace",
  "sentencepiece_llama_class",
  "sentencepiece_added",
  "sentencepiece_no_unk",
  "bytelevel_gpt2_class",
  "bytelevel_qwen2_class",
  "bytelevel_gpt2_class_no_added",
  "bytelevel_named_not_special",
  "sentencepiece_special_dicts",
  "sentencepiece_single_word",
  "sentencepiece_strip",
  "bytelevel_listed_not_special",
  "bytelevel_added_bytes",
  "bytelevel_split_removed",
  "bytelevel_replace_dollar",
  "bytelevel_template_ids",
  "bytelevel_config_keys",
];

type Case = {
  text: string;
  ids: number[];
  ids_no_special: number[];
  decoded: string;
  decoded_skip_special: string;
  decoded_no_special: string;
};
type Expected = {
  /** Random id lists (half of them runs of byte tokens, valid UTF-8 or not) and their decoding. */
  id_lists: { ids: number[]; decoded: string; decoded_skip_special: string }[];
  vocab_size: number;
  bos_token_id: number | null;
  eos_token_id: number | null;
  cases: Case[];
};

async function expected(name: string): Promise<Expected> {
  return JSON.parse(await Deno.readTextFile(`${FIXTURES}${name}/expected.json`));
}

function streamed(tok: TextTokenizer, ids: number[], skipSpecialTokens: boolean): string {
  const stream = tok.streamDecoder({ skipSpecialTokens });
  let text = "";
  for (const id of ids) text += stream.push(id);
  return text + stream.flush();
}

for (const name of NAMES) {
  Deno.test(`HF tokenizer ${name}: ids, decode and streaming decode equal transformers'`, async () => {
    const want = await expected(name);
    const tok = await loadTokenizer(`${FIXTURES}${name}`);
    ok(tok instanceof HfTokenizer);
    equal(tok.vocabSize, want.vocab_size, "vocabSize");
    equal(tok.bosId, want.bos_token_id ?? undefined, "bosId");
    equal(tok.eosId, want.eos_token_id ?? undefined, "eosId");
    for (const c of want.cases) {
      const what = `${name} ${JSON.stringify(c.text)}`;
      deepEqual(tok.encode(c.text), c.ids, `${what}: ids`);
      deepEqual(tok.encode(c.text, { bos: false }), c.ids_no_special, `${what}: ids without special tokens`);
      equal(tok.decode(c.ids), c.decoded, `${what}: decode`);
      equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special, `${what}: decode, skip`);
      equal(tok.decode(c.ids_no_special), c.decoded_no_special, `${what}: decode without special tokens`);
      equal(streamed(tok, c.ids, false), c.decoded, `${what}: streaming decode`);
      equal(streamed(tok, c.ids, true), c.decoded_skip_special, `${what}: streaming decode, skip`);
    }
    for (const c of want.id_lists) {
      const what = `${name} ids ${JSON.stringify(c.ids)}`;
      equal(tok.decode(c.ids), c.decoded, `${what}: decode`);
      equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special, `${what}: decode, skip`);
      equal(streamed(tok, c.ids, false), c.decoded, `${what}: streaming decode`);
    }
  });
}

Deno.test("HF tokenizer: a tokenizer.json path reads its sibling config; the Llama class changes ids", async () => {
  const byFile = await loadTokenizer(`${FIXTURES}sentencepiece_llama_class/tokenizer.json`);
  const want = await expected("sentencepiece_llama_class");
  for (const c of want.cases) deepEqual(byFile.encode(c.text), c.ids, JSON.stringify(c.text));
  // The same tokenizer.json with the generic class keeps its Prepend normalizer: after a special token
  // written in the text it puts a "▁" that the Llama class does not (this is what the fixture pair shows).
  const legacy = await expected("sentencepiece_legacy");
  const special = (e: Expected) => e.cases.find((c) => c.text.startsWith("<s>Hello"))!.ids;
  ok(special(legacy).length !== special(want).length, "the two fixtures differ next to special tokens");
});

Deno.test("HF tokenizer: streaming decode holds back UTF-8 split across byte tokens", async () => {
  for (const name of ["bytelevel_nobos", "sentencepiece_legacy"]) {
    const tok = await loadTokenizer(`${FIXTURES}${name}`);
    const ids = tok.encode("🦀", { bos: false });
    ok(ids.length >= 2, `${name}: the emoji takes ${ids.length} tokens`);
    const stream = tok.streamDecoder();
    const pieces = ids.map((id) => stream.push(id));
    deepEqual(pieces.slice(0, -1).filter((p) => p !== ""), [], `${name}: nothing before the last byte`);
    equal(pieces.join("") + stream.flush(), "🦀");
    // A character left incomplete comes out as U+FFFD on flush, as decode gives it.
    const cut = tok.streamDecoder();
    let text = "";
    for (const id of ids.slice(0, -1)) text += cut.push(id);
    text += cut.flush();
    equal(text, tok.decode(ids.slice(0, -1)));
    ok(text.includes("\uFFFD"), `${name}: ${JSON.stringify(text)}`);
  }
});

Deno.test("HF tokenizer: out-of-range ids and the vocabulary check name the sizes", async () => {
  const tok = await loadTokenizer(`${FIXTURES}bytelevel_nobos`);
  const n = tok.vocabSize;
  equal(n, (await expected("bytelevel_nobos")).vocab_size);
  throws(() => tok.decode([5, n]), new RegExp(`token id ${n} \\(position 1\\) is out of range .* ${n} ids`));
  throws(() => tok.streamDecoder().push(-1), /token id -1/);
  equal(tok.decode([]), "");
  checkTokenizerFits(tok, "t", 512, "m");
  checkTokenizerFits(tok, "t", n, "m");
  throws(
    () => checkTokenizerFits(tok, "tok/tokenizer.json", n - 1, "model/dir"),
    new RegExp(
      `tokenizer "tok/tokenizer\\.json" has ${n} tokens but model "model/dir" has a vocabulary of ${n - 1}`,
    ),
  );
});

Deno.test("loadTokenizer: a llama2.c .bin gives the llama2.c tokenizer behind the same interface", async () => {
  const path = "../shared/data/models/stories260K/tok512.bin";
  const hasData = await Deno.stat(path).then(() => true, () => false);
  if (!hasData) return;
  const tok = await loadTokenizer(path);
  ok(tok instanceof Tokenizer);
  const direct = await Tokenizer.load(path);
  deepEqual(tok.encode("Once upon a time"), direct.encode("Once upon a time"));
  equal(tok.bosId, 1);
  equal(streamed(tok, tok.encode("Once upon a time"), false), "Once upon a time");
});

Deno.test("loadTokenizer: bad inputs give errors naming the path and the problem", async () => {
  const dir = await Deno.makeTempDir();
  await rejects(
    loadTokenizer(`${dir}/missing.json`),
    new RegExp(`cannot read tokenizer "${dir}/missing\\.json"`),
  );
  await rejects(loadTokenizer(dir), new RegExp(`tokenizer directory "${dir}" has no tokenizer\\.json`));
  await Deno.writeTextFile(`${dir}/tokenizer.json`, '{"model": {"type": "BPE", ');
  await rejects(loadTokenizer(dir), new RegExp(`"${dir}/tokenizer\\.json" is not valid JSON`));

  const good = JSON.parse(await Deno.readTextFile(`${FIXTURES}bytelevel_bos/tokenizer.json`));
  const write = (json: unknown) => Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
  const refused = async (json: unknown, pattern: RegExp) => {
    await write(json);
    await rejects(loadTokenizer(dir), (err: Error) => {
      ok(err.message.includes(`tokenizer "${dir}/tokenizer.json"`), err.message);
      ok(pattern.test(err.message), err.message);
      return true;
    });
  };
  await refused(
    { ...good, model: { type: "Unigram", vocab: [["a", 0]] } },
    /model\.type "Unigram" .*only "BPE"/,
  );
  await refused({ ...good, model: undefined }, /"model" is missing/);
  await refused({ ...good, model: { ...good.model, dropout: 0.1 } }, /model\.dropout 0\.1/);
  await refused(
    { ...good, pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Whitespace" }] } },
    /pre_tokenizer\.pretokenizers\[0\]\.type "Whitespace" is not supported/,
  );
  const split = good.pre_tokenizer.pretokenizers[0];
  await refused(
    { ...good, pre_tokenizer: { ...split, behavior: "MergedWithPrevious" } },
    /pre_tokenizer\.behavior "MergedWithPrevious"/,
  );
  await refused(
    { ...good, pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first" } },
    /pre_tokenizer\.split "absent \(true\)"/,
  );
  await refused({ ...good, decoder: { type: "WordPiece" } }, /decoder\.type "WordPiece"/);

  // A config naming a special token that the vocabulary lacks.
  await write(good);
  await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify({ bos_token: "<nope>" }));
  await rejects(loadTokenizer(dir), /names bos_token "<nope>", which is not a token/);
  // transformers adds any other special token the config names that the vocabulary lacks as a new id (so
  // "a<pad>b" encodes "<pad>" as one token); refused by name.
  for (
    const [config, named] of [
      [{ pad_token: "<pad>" }, 'pad_token "<pad>"'],
      [{ mask_token: { __type: "AddedToken", content: "<mask>" } }, 'mask_token "<mask>"'],
      [{ additional_special_tokens: ["<|begin_of_text|>", "<x>"] }, 'additional_special_tokens\\[1\\] "<x>"'],
      [{ extra_special_tokens: { image_token: "<img>" } }, 'extra_special_tokens\\.image_token "<img>"'],
    ] as const
  ) {
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(config));
    await rejects(loadTokenizer(dir), new RegExp(`names ${named}, which is not a token`));
  }
  // transformers cleans up the spaces of BPE output ("a ." to "a.") only with this key: refused by name, not ignored.
  const cleanUp = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output";
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({ clean_up_tokenization_spaces: true, [cleanUp]: true }),
  );
  await rejects(
    loadTokenizer(dir),
    new RegExp(`tokenizer_config\\.json ${cleanUp} true .* is not supported`),
  );
  await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "[1, 2");
  await rejects(loadTokenizer(dir), new RegExp(`"${dir}/tokenizer_config\\.json" is not valid JSON`));
  // Without a config the template's leading special token is the BOS.
  await Deno.remove(`${dir}/tokenizer_config.json`);
  const bare = await loadTokenizer(dir);
  equal(bare.bosId, (await expected("bytelevel_bos")).bos_token_id);
  equal(bare.eosId, undefined);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("modelTokenizerPath: an HF directory's own tokenizer, else a clear request for one", async () => {
  const dir = await Deno.makeTempDir();
  await rejects(modelTokenizerPath(dir), /model directory ".*" has no tokenizer\.json: give a tokenizer/);
  await Deno.copyFile(`${FIXTURES}bytelevel_nobos/tokenizer.json`, `${dir}/tokenizer.json`);
  equal(await modelTokenizerPath(dir), dir);
  await Deno.writeTextFile(`${dir}/config.json`, "{}");
  equal(await modelTokenizerPath(`${dir}/config.json`), dir);
  equal(await modelTokenizerPath(dir, "other.bin"), "other.bin");
  await Deno.writeTextFile(`${dir}/model.bin`, "x");
  await rejects(modelTokenizerPath(`${dir}/model.bin`), /llama2\.c checkpoint, which carries no tokenizer/);
  await rejects(modelTokenizerPath(`${dir}/none`), /cannot read model/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("HfTokenizer.fromJson: non-object inputs are refused with the source named", () => {
  throws(
    () => HfTokenizer.fromJson([1, 2], { source: "x.json" }),
    /tokenizer "x\.json": tokenizer\.json must hold/,
  );
  throws(() => HfTokenizer.fromJson({}, { source: "y.json" }), /tokenizer "y\.json": "model" is missing/);
});

Deno.test("HfTokenizer: an unk_token missing from the vocabulary is an error when a character needs it", async () => {
  // The Rust library fails the same way ("Unk token `<nope>` not found in the vocabulary"); the port gave undefined.
  const json = JSON.parse(await Deno.readTextFile(`${FIXTURES}sentencepiece_no_unk/tokenizer.json`));
  json.model.unk_token = "<nope>";
  const tok = HfTokenizer.fromJson(json, { source: "u.json" });
  const want = await expected("sentencepiece_no_unk");
  const known = want.cases.find((c) => c.text === "the lighthouse keeper wrote three lines")!;
  deepEqual(tok.encode(known.text), known.ids, "no character needs <unk>");
  throws(
    () => tok.encode("the 🦀"),
    /tokenizer "u\.json": model\.unk_token "<nope>" is not in the vocabulary, and "🦀" needs it/,
  );
});

Deno.test("HfTokenizer.fromJson: a tokenizer_class that transformers builds its own way is refused by name", async () => {
  const json = JSON.parse(await Deno.readTextFile(`${FIXTURES}bytelevel_digits/tokenizer.json`));
  for (const tokenizerClass of ["GemmaTokenizer", 3]) {
    throws(
      () => HfTokenizer.fromJson(json, { source: "c.json", config: { tokenizer_class: tokenizerClass } }),
      new RegExp(
        `tokenizer "c\\.json": tokenizer_config\\.json tokenizer_class ${
          JSON.stringify(tokenizerClass)
        } is not supported: .*\\(supported: TokenizersBackend, PreTrainedTokenizerFast, LlamaTokenizer, `,
      ),
    );
  }
  // A class that names a special token of its own (GPT-2's <|endoftext|>) the vocabulary lacks: transformers adds it.
  const llama3 = JSON.parse(await Deno.readTextFile(`${FIXTURES}bytelevel_bos/tokenizer.json`));
  throws(
    () => HfTokenizer.fromJson(llama3, { source: "d.json", config: { tokenizer_class: "GPT2Tokenizer" } }),
    /names bos_token "<\|endoftext\|>", which is not a token/,
  );
});

Deno.test("HfTokenizer: a rebuilt class's own special tokens stand where the config names none", async () => {
  // transformers' LlamaTokenizer defaults to <unk>, <s> and </s>; the golden ids were recorded with them named.
  const dir = `${FIXTURES}sentencepiece_llama_class`;
  const want = await expected("sentencepiece_llama_class");
  const config = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
  for (const key of ["bos_token", "eos_token", "unk_token"]) delete config[key];
  const tok = HfTokenizer.fromJson(JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`)), { config });
  equal(tok.bosId, want.bos_token_id);
  equal(tok.eosId, want.eos_token_id);
});

Deno.test("HfTokenizer: GPT-2's and Qwen2's classes read only the vocabulary and merges of the file's model", async () => {
  // transformers rebuilds these classes' BPE from the vocabulary and merges alone, so a file's dropout and
  // subword prefix/suffix do not change its ids (checked with transformers on both fixtures, three times each).
  for (const name of ["bytelevel_gpt2_class", "bytelevel_qwen2_class"]) {
    const dir = `${FIXTURES}${name}`;
    const json = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`));
    json.model = { ...json.model, dropout: 0.5, continuing_subword_prefix: "##", end_of_word_suffix: "</w>" };
    const config = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
    const tok = HfTokenizer.fromJson(json, { config, source: name });
    for (const c of (await expected(name)).cases) {
      deepEqual(tok.encode(c.text), c.ids, `${name} ${JSON.stringify(c.text)}: ids`);
      equal(tok.decode(c.ids), c.decoded, `${name} ${JSON.stringify(c.text)}: decode`);
    }
    // What the rebuild does read is still checked.
    throws(
      () =>
        HfTokenizer.fromJson({ ...json, model: { ...json.model, merges: null } }, { config, source: name }),
      new RegExp(`tokenizer "${name}": model\\.merges is missing or not an array`),
    );
  }
});

Deno.test("HF tokenizer: streaming decode equals decode on random ids that put special tokens inside byte runs", async () => {
  const rng = new TestRng(61);
  for (const name of NAMES) {
    const tok = await loadTokenizer(`${FIXTURES}${name}`) as HfTokenizer;
    const want = await expected(name);
    // Byte tokens (sentencepiece-style byte fallback) where the vocabulary has them, the named special tokens, and
    // any ids: skipSpecialTokens drops a special token before the decoder joins the bytes around it.
    const bytes = Array.from(
      { length: 256 },
      (_, b) => tok.tokenId(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
    )
      .filter((id): id is number => id !== undefined);
    const specials = [want.bos_token_id, want.eos_token_id, tok.tokenId("<unk>")].filter((id): id is number =>
      typeof id === "number"
    );
    for (let trial = 0; trial < 300; trial++) {
      const ids = Array.from({ length: rng.int(1, 8) }, () => {
        const r = rng.next();
        if (r < 0.5 && bytes.length > 0) return bytes[rng.int(0, bytes.length - 1)];
        if (r < 0.7 && specials.length > 0) return specials[rng.int(0, specials.length - 1)];
        return rng.int(0, tok.vocabSize - 1);
      });
      for (const skip of [true, false]) {
        equal(
          streamed(tok, ids, skip),
          tok.decode(ids, { skipSpecialTokens: skip }),
          `${name} ${JSON.stringify(ids)}`,
        );
      }
    }
  }
});

Deno.test("HfTokenizer.fromJson: a Metaspace whose add_prefix_space conflicts with its prepend_scheme is refused", async () => {
  // tokenizers refuses add_prefix_space false with any prepend_scheme but "never" (its default is "always"), an
  // unknown scheme and a replacement that is not one character; add_prefix_space true agrees with every scheme,
  // which then decides (transformers gives the same ids as without the key).
  const file = JSON.parse(await Deno.readTextFile(`${FIXTURES}sentencepiece_metaspace/tokenizer.json`));
  const config = JSON.parse(
    await Deno.readTextFile(`${FIXTURES}sentencepiece_metaspace/tokenizer_config.json`),
  );
  const { prepend_scheme: _, ...base } = file.pre_tokenizer;
  const withPre = (pre: Record<string, unknown>) =>
    HfTokenizer.fromJson({ ...file, pre_tokenizer: { ...base, ...pre } }, { config, source: "m.json" });
  const refused: [Record<string, unknown>, RegExp][] = [
    [
      { add_prefix_space: false },
      /pre_tokenizer\.add_prefix_space false conflicts with .*"absent \(always\)"/,
    ],
    [
      { add_prefix_space: false, prepend_scheme: "first" },
      /pre_tokenizer\.add_prefix_space false conflicts with .*"first"/,
    ],
    [
      { add_prefix_space: false, prepend_scheme: "always" },
      /pre_tokenizer\.add_prefix_space false conflicts with .*"always"/,
    ],
    [
      { add_prefix_space: "false", prepend_scheme: "never" },
      /pre_tokenizer\.add_prefix_space "false" is not a boolean/,
    ],
    [{ prepend_scheme: "First" }, /pre_tokenizer\.prepend_scheme "First" is not one of always, first, never/],
    [{ replacement: "ab", prepend_scheme: "first" }, /pre_tokenizer\.replacement "ab" is not one character/],
  ];
  for (const [pre, message] of refused) {
    throws(() => withPre(pre), new RegExp(`tokenizer "m\\.json": ${message.source}`), JSON.stringify(pre));
  }
  const rng = new TestRng(61);
  const words = ["the", "sea", " ", "  ", "<s>", "\n", "café", "ships"];
  const word = () => words[rng.int(0, words.length - 1)];
  const texts = Array.from({ length: 50 }, () => Array.from({ length: rng.int(1, 8) }, word).join(""));
  const agreeing: [Record<string, unknown>, string][] = [
    [{ add_prefix_space: true, prepend_scheme: "always" }, "always"],
    [{ add_prefix_space: true, prepend_scheme: "first" }, "first"],
    [{ add_prefix_space: true, prepend_scheme: "never" }, "never"],
    [{ add_prefix_space: false, prepend_scheme: "never" }, "never"],
    [{ add_prefix_space: true }, "always"],
  ];
  for (const [pre, scheme] of agreeing) {
    const tok = withPre(pre);
    const plain = withPre({ prepend_scheme: scheme });
    for (const text of texts) {
      deepEqual(tok.encode(text), plain.encode(text), `${JSON.stringify(pre)} ${JSON.stringify(text)}`);
    }
  }
});

Deno.test("HfTokenizer.fromJson: an added token without one of its fields is refused by its place and the field", async () => {
  // tokenizers requires id, content and every flag of each entry ("missing field `normalized`"); an omitted
  // `normalized` has no default there, so the file cannot be read, special token or not.
  const file = JSON.parse(await Deno.readTextFile(`${FIXTURES}sentencepiece_added/tokenizer.json`));
  const rng = new TestRng(62);
  const fields = ["id", "single_word", "lstrip", "rstrip", "normalized", "special"];
  for (let k = 0; k < 12; k++) {
    const at = rng.int(0, file.added_tokens.length - 1);
    const field = k < 2 ? "normalized" : fields[rng.int(0, fields.length - 1)];
    const json = structuredClone(file);
    delete json.added_tokens[at][field];
    const content = JSON.stringify(json.added_tokens[at].content).replace(/[|()[\]\\]/g, "\\$&");
    throws(
      () => HfTokenizer.fromJson(json, { source: "a.json" }),
      new RegExp(`tokenizer "a\\.json": added_tokens\\[${at}\\] \\(${content}\\) has ${field} "?absent"?`),
      `${field} of added_tokens[${at}]`,
    );
  }
  const notBool = structuredClone(file);
  notBool.added_tokens[0].normalized = null;
  throws(
    () => HfTokenizer.fromJson(notBool),
    /added_tokens\[0\] \("<unk>"\) has normalized "absent", not true or false/,
  );
});

Deno.test("HfTokenizer.fromJson: a special token written as an object without __type in tokenizer_config.json is refused", async () => {
  // transformers refuses it ("Special token eos_token has to be either str or AddedToken"); it takes the object
  // with "__type": "AddedToken" that older versions wrote, and plain objects in special_tokens_map.json.
  const dir = `${FIXTURES}sentencepiece_special_dicts`;
  const file = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`));
  const config = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
  const { __type: _, ...plain } = config.eos_token;
  throws(
    () => HfTokenizer.fromJson(file, { config: { ...config, eos_token: plain }, source: "c.json" }),
    /tokenizer "c\.json": tokenizer_config\.json eos_token is \{"content":"<\/s>".*\}, an object without "__type": "AddedToken"/,
  );
  throws(
    () =>
      HfTokenizer.fromJson(file, {
        config: { ...config, additional_special_tokens: [{ content: "New York" }] },
      }),
    /tokenizer_config\.json additional_special_tokens\[0\] is \{"content":"New York"\}, an object without "__type"/,
  );
  // Without the map, the config's <s> is BOS again.
  const noMap = HfTokenizer.fromJson(file, { config });
  equal(noMap.bosId, 1);
});

Deno.test("HfTokenizer.fromJson: a Removed Split whose regex has a capturing group is refused by its offset", async () => {
  const file = JSON.parse(await Deno.readTextFile(`${FIXTURES}bytelevel_split_removed/tokenizer.json`));
  for (const [regex, offset] of [["a|(\\d)", 2], ["[(](?<n>x)", 3]] as const) {
    file.pre_tokenizer.pretokenizers[0].pattern = { Regex: regex };
    throws(() => HfTokenizer.fromJson(file), (err: Error) =>
      err.message.includes(
        `pre_tokenizer.pretokenizers[0].pattern.Regex ${
          JSON.stringify(regex)
        } has a capturing group at offset ${offset}`,
      ));
  }
  file.pre_tokenizer.pretokenizers[0].pattern = { Regex: "(?:\\d)|(?<=a)b|[(]" };
  HfTokenizer.fromJson(file);
});

Deno.test("HfTokenizer.fromJson: a template special token whose listed id is not the vocabulary's is refused", async () => {
  const file = JSON.parse(await Deno.readTextFile(`${FIXTURES}bytelevel_template_ids/tokenizer.json`));
  const template = file.post_processor.processors.find((p: { type: string }) =>
    p.type === "TemplateProcessing"
  );
  template.special_tokens["<|begin_of_text|>"].ids = [0, 7];
  throws(() => HfTokenizer.fromJson(file), /"<\|end_of_text\|>" the id 7, but the vocabulary has 1/);
  template.special_tokens["<|begin_of_text|>"].ids = [0];
  throws(() => HfTokenizer.fromJson(file), /has 1 ids but 2 tokens/);
});

Deno.test("HfTokenizer: a ByteLevel vocabulary token with a character outside the byte alphabet is refused", async () => {
  // tokenizers' ByteLevel decoder keeps such a token as written ("Ġ中x" gives "Ġ中x"), the port wrote U+0000 for the
  // character and decoded the rest as bytes. As an added token it decodes as written in both, so it loads.
  const dir = `${FIXTURES}bytelevel_nobos`;
  const config = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
  const rng = new TestRng(0xb17e);
  for (let trial = 0; trial < 8; trial++) {
    const json = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`));
    // Outside the alphabet: the bytes GPT-2 remaps (0-32, 127-160, 173), or anything from U+0144 on.
    const pools = [[0, 32], [127, 160], [173, 173], [324, 0xd7ff]];
    const [lo, hi] = pools[rng.int(0, pools.length - 1)];
    const ch = String.fromCodePoint(rng.int(lo, hi));
    const token = `Ġ${ch}x`;
    const id = Math.max(...Object.values(json.model.vocab as Record<string, number>)) + 1;
    json.model.vocab[token] = id;
    throws(
      () => HfTokenizer.fromJson(json, { config, source: "b.json" }),
      (e: Error) =>
        e.message.includes(
          `model.vocab token ${JSON.stringify(token)} (id ${id}) has ${JSON.stringify(ch)}`,
        ) &&
        e.message.includes("outside the ByteLevel decoder's byte alphabet"),
    );
    json.added_tokens.push({
      id,
      content: token,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: false,
    });
    equal(HfTokenizer.fromJson(json, { config, source: "b.json" }).decode([id]), token);
  }
});

Deno.test("HfTokenizer: a misspelt encode, decode, streamDecoder or fromJson option is refused, not dropped", async () => {
  const name = "bytelevel_bos";
  const want = await expected(name);
  const c = want.cases.find((k) => k.ids.length !== k.ids_no_special.length)!;
  const tok = await loadTokenizer(`${FIXTURES}${name}`);
  // Dropped, { add_special_tokens: false } kept <|begin_of_text|> and { skipSpecial: true } decoded it.
  throws(
    () => tok.encode(c.text, { add_special_tokens: false } as never),
    /encode: unknown option "add_special_tokens"/,
  );
  deepEqual(tok.encode(c.text, { bos: false }), c.ids_no_special);
  throws(() => tok.decode(c.ids, { skipSpecial: true } as never), /decode: unknown option "skipSpecial"/);
  equal(tok.decode(c.ids, { skipSpecialTokens: true }), c.decoded_skip_special);
  throws(
    () => tok.streamDecoder({ skip_special_tokens: true } as never),
    /unknown option "skip_special_tokens"/,
  );
  const json = JSON.parse(await Deno.readTextFile(`${FIXTURES}${name}/tokenizer.json`));
  const config = JSON.parse(await Deno.readTextFile(`${FIXTURES}${name}/tokenizer_config.json`));
  throws(
    () => HfTokenizer.fromJson(json, { tokenizerConfig: config } as never),
    /unknown option "tokenizerConfig"/,
  );
  equal(HfTokenizer.fromJson(json, { config }).bosId, want.bos_token_id ?? undefined);
});

Deno.test("HF tokenizer: a lone surrogate is refused naming it and its index, as transformers refuses it", async () => {
  // transformers 5 raises a TypeError for such a text; TextEncoder would have tokenized U+FFFD in its place.
  for (const name of ["bytelevel_bos", "sentencepiece_legacy"]) {
    const tok = await loadTokenizer(`${FIXTURES}${name}`);
    throws(() => tok.encode("ab\uDC00cd"), /HfTokenizer\.encode: .*lone surrogate U\+DC00 at index 2/);
    throws(() => tok.encode("x\uD83E", { bos: false }), /lone surrogate U\+D83E at index 1/);
    const whole = tok.encode("x\u{1F980}", { bos: false });
    equal(tok.decode(whole), "x🦀");
  }
});
