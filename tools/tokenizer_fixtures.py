"""Golden tokenizer fixtures from Hugging Face `tokenizers` and `transformers`.

Trains small BPE tokenizers on a corpus written in this file, saves each one as `tokenizer.json` +
`tokenizer_config.json` exactly as transformers writes them, and records what
`transformers.AutoTokenizer.from_pretrained(dir)` gives on a set of texts (ids with and without special
tokens, decoded strings) into `tests/fixtures/tokenizers/<name>/expected.json`. tessera's tests compare
`loadTokenizer` with these files; they never need Python.

Install the tools once (from the repository root; `.venv-tools` is not committed):

    python3 -m venv .venv-tools
    .venv-tools/bin/pip install --index-url file:///opt/pypi/simple --extra-index-url file:///opt/pypi-more/simple \
        "torch==2.13.0+cpu" transformers peft tokenizers safetensors

then run

    .venv-tools/bin/python tools/tokenizer_fixtures.py [--out tests/fixtures/tokenizers]

The output is deterministic (same corpus, same trainer settings, sorted JSON). Other fixture scripts may
import this module and call `build(name)` / `save(name, dir)` to put one of these tokenizers into a model
directory.

Fixtures:

- `bytelevel_bos`: byte-level BPE in the Llama 3 style: the Llama 3 split regex, `ByteLevel` without its own
  regex, `ignore_merges`, a `TemplateProcessing` post-processor that prepends `<|begin_of_text|>`.
- `bytelevel_nobos`: byte-level BPE in the Qwen2 style: NFC normalizer, the Qwen2 split regex (one digit per
  piece), a `ByteLevel` post-processor and no BOS at all (`bos_token` is null).
- `bytelevel_digits`: byte-level BPE in the SmolLM / GPT-2 style: a `Digits` pre-tokenizer (one digit per piece)
  before `ByteLevel` with its own GPT-2 regex, a `ByteLevel` post-processor, `<|endoftext|>` as BOS and EOS
  (which the template does not add).
- `sentencepiece_legacy`: sentencepiece-style BPE as in the Llama 2 / TinyLlama `tokenizer.json`:
  `Prepend("▁")` + `Replace(" ", "▁")` normalizer, no pre-tokenizer, byte fallback (`<0x00>`..`<0xFF>` at ids
  3..258), `fuse_unk`, decoder `Replace` + `ByteFallback` + `Fuse` + `Strip`, `<s>` added by `TemplateProcessing`.
- `sentencepiece_metaspace`: the same vocabulary with a `Metaspace` pre-tokenizer (`prepend_scheme: "first"`),
  as newer conversions write it.
- `sentencepiece_llama_class`: the `sentencepiece_legacy` files with `tokenizer_config.json` naming
  `"tokenizer_class": "LlamaTokenizer"` and `"legacy": false`, as many hub checkpoints written by older
  transformers do. transformers 5 then keeps only the vocabulary, merges and post-processor of
  `tokenizer.json` and rebuilds the rest (a `Metaspace` pre-tokenizer with `prepend_scheme: "first"`), which
  changes the ids next to special tokens written in the text.
- `sentencepiece_added`: the `sentencepiece_legacy` files with three tokens added by `add_tokens` (`normalized`
  true, as that call writes them) and a special one that is normalized too: a decoded added token keeps the space
  before it, and the special one is not skipped by `skip_special_tokens`.
- `sentencepiece_no_unk`: the `sentencepiece_legacy` files with neither an `unk_token` nor byte fallback in the
  model: a character outside the vocabulary is dropped before merging, so its neighbours merge across it.
- `bytelevel_gpt2_class`, `bytelevel_qwen2_class`: the `bytelevel_digits` files with `tokenizer_config.json`
  naming `"tokenizer_class": "GPT2Tokenizer"` (as SmolLM's does) or `"Qwen2Tokenizer"`. transformers 5 then keeps
  the vocabulary, merges and post-processor and builds the rest as that class does (GPT-2's `ByteLevel` regex
  alone; Qwen2's NFC and split pattern), so the `Digits` step of the file is not used.
- `bytelevel_gpt2_class_no_added`: the `bytelevel_gpt2_class` files with no `added_tokens` at all, a config that
  names no BOS/EOS/UNK (the class's default `<|endoftext|>` stands) and `extra_special_tokens: ["<|im_end|>"]`:
  transformers adds every special token it names as a special added token though the file does not, so
  `<|endoftext|>` and `<|im_end|>` in the text are one token each (and skipped on decode), `<|im_start|>` is text.
- `sentencepiece_special_dicts`: the `sentencepiece_added` files with `<s>` and `</s>` left out of
  `added_tokens`, `tokenizer_config.json` naming `eos_token` `</s>` as an `{"__type": "AddedToken", ...}` object
  with `lstrip`, `rstrip` and `normalized` true, and a `special_tokens_map.json` naming `bos_token` `<|im_start|>`
  (over the config's `<s>`) and `pad_token` `<s>` as plain objects: transformers reads the map over the config,
  adds `</s>` and `<s>` with the flags their objects give, and keeps those of `<|im_start|>` as they were. Its
  cases add random texts built around these tokens (`RANDOM_TEXTS`).
- `sentencepiece_single_word`: the `sentencepiece_added` files with `single_word` true on `New York` and
  `<|im_end|>` (normalized) and on `<|sp|>` (made not normalized, with `lstrip`): each is a token only where no
  word character (`\\w`: letters, marks, decimal digits, `_`) touches it, else text. Its cases add random texts of
  these tokens next to word and other characters (`RANDOM_PIECES`).
- `sentencepiece_strip`: the `sentencepiece_legacy` files with added tokens that have `lstrip` and / or `rstrip`
  (`STRIP_TOKENS`, normalized or not): each takes the white space next to it as Rust's `char::is_whitespace` reads
  it (U+0085 is white space, U+FEFF is not). Its cases add random texts of these tokens next to white space of
  every kind (`RANDOM_PIECES`).
- `bytelevel_listed_not_special`: the `bytelevel_bos` files with `<|im_start|>` and `<|im_end|>` added as tokens that
  are not special, both named in `tokenizer_config.json`'s `additional_special_tokens` and `<|im_end|>` also as
  `pad_token`: transformers makes `<|im_end|>` special (a key names it) and leaves `<|im_start|>` as it is, so
  `skip_special_tokens` drops only `<|im_end|>`.
- `bytelevel_added_bytes`: the `bytelevel_bos` files with added tokens written in the byte-level alphabet
  (`BYTE_TOKENS`): tokenizers decodes an added token through the `ByteLevel` decoder like any other, so "Ġ<|x|>"
  decodes to " <|x|>", and "ÃÃ" (the bytes C3 C3) and "ðŁ" (F0 9F, the start of an emoji) to U+FFFD unless the
  bytes around them complete a character.
- `bytelevel_config_keys`: the `bytelevel_bos` files with `remove_space`, `do_lowercase_and_remove_accent` and
  `clean_up_tokenization_spaces` true in `tokenizer_config.json`: transformers 5 ignores all three for a BPE
  `tokenizer.json` (the last unless `clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`).
- `bytelevel_split_removed`: the `bytelevel_bos` files with the split regex replaced by a `Split` on the literal
  (`String`) pattern `" "` with behavior `Removed`: every space is dropped.
- `bytelevel_replace_dollar`: the `bytelevel_bos` files with a `Replace` normalizer whose content `"$1$&"` is
  literal text (tokenizers does not expand `$` references).
- `bytelevel_template_ids`: the `bytelevel_bos` files with the template's `<|begin_of_text|>` entry in
  `special_tokens` listing two tokens and ids (BOS then EOS): the template adds both.

Every expected.json also holds the decoding of random id lists (`id_lists`), half of them runs of byte tokens
where the vocabulary has them, valid UTF-8 or not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# The split patterns of the public Llama 3 and Qwen2 tokenizer.json files.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

# A small corpus: a few paragraphs plus sentences built from word lists, so that merges cover words,
# accented Latin, some CJK, digits and punctuation. Characters outside it exercise byte fallback.
PARAGRAPHS = [
    "The old lighthouse keeper climbed the stairs every evening. He lit the lamp, wound the clock and "
    "wrote three lines in his book: the wind, the sea and the ships he had seen.",
    "In the morning the fishermen came back with their nets. They laughed, they argued about the weather, "
    "and they shared bread and cheese on the quay while the gulls waited.",
    "It's a small town, but it's ours. We don't leave; we'll stay here, and they're welcome to visit.",
    "Le café du port ouvre à six heures. Le garçon apporte une crème brûlée et un thé très chaud; "
    "les élèves préfèrent le chocolat. À bientôt, déjà l'été!",
    "Die Straße am Fluss ist schön. Über den Bäumen fliegen Möwen, und die Kinder spielen im Garten.",
    "El niño pequeño corre por la playa. La señora mira el mar y sueña con España.",
    "日本語の文章です。東京は大きい都市です。中文的句子也在这里。",
    "Numbers: 1, 2, 3, 10, 42, 100, 365, 2024, 3.14159, 1000000 and 007.",
    "At the market: £5 for bread, £12 for fish, ½ kilo of cheese at 20 °C, ± 3 days; ½ of it is gone.",
    "def main():\n    for i in range(10):\n        print(i * 2)\n\n    return 0\n",
]
SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our neighbour", "the little bird", "Anna", "Tom"]
VERBS = ["sees", "likes", "follows", "draws", "finds", "remembers", "visits", "paints"]
OBJECTS = ["the river", "a red boat", "the garden", "an old map", "the mountain", "a quiet street", "the moon"]
ENDINGS = [".", "!", "?", " today.", " again.", " at night.", ", and smiles."]

SPECIAL_LLAMA3 = ["<|begin_of_text|>", "<|end_of_text|>"]
SPECIAL_QWEN = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SPECIAL_SP = ["<unk>", "<s>", "</s>"]

# Texts recorded in every expected.json.
TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "the lighthouse keeper wrote three lines",
    "Café naïve façade, élève, Ärger, Øresund, señor.",
    "日本語のテキスト、中文字符。東京",
    "I ❤️ 🦀 and 👩‍👩‍👧 emoji 🎉!",
    "a  b   c\t\td    e     ",
    "line one\nline two\n\n\nthree\r\nfour\n",
    "1234567 3.14159 2024-06-01 007 +42",
    "x² ½ ٣٤ Ⅻ 10⁹",
    "<s>Hello</s> <|endoftext|>x<|im_start|>user\n<|begin_of_text|>Hi<|end_of_text|>",
    "",
    " leading space",
    "trailing space ",
    "Hello , world . It 's done ! they 're here ?",
    "It's, I'm, we'll, they've, you'd, DON'T",
    "\u00a0non-breaking\u2009thin space",
    "say <|im_start|> x<|im_end|> I love New York",
    "a <|sp|> b",
    "\ufeffa byte order mark, and one in\ufeffside",
    # Normalized added tokens side by side: a sentencepiece-style normalizer prepends "▁" once, so only the first
    # is found, and the rest is text even where it is the token's raw content.
    "<|im_end|><|im_end|>",
    "I love New York<|sp|>",
    # White space as the Rust library's regex reads it: U+0085 is white space, U+FEFF is not (JavaScript's \s has
    # them the other way round), next to a contraction, marks and punctuation.
    "\ufeff's a\u0308\x85's x\x85!\ufeff y\u3000\ufeff\x85",
]


# Pieces of the random texts some fixtures add to their cases: words, spaces and the tokens they are about.
RANDOM_PIECES = {
    "sentencepiece_special_dicts": ["the", "sea", "café", "New York", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
    "sentencepiece_single_word": [
        "New York", "<|im_end|>", "<|sp|>", "York", "a", "é", "\u0301", "1", "٣", "²", "_", "‿", "𝔸", "🦀", "日", "-", "!",
    ],
}


WHITE_SPACE = [" ", "\t", "\n", "\x0b", "\x1c", "\x85", "\xa0", "\u1680", "\u2000", "\u200a", "\u2028", "\u202f",
               "\u205f", "\u3000", "\u180e", "\u200b", "\ufeff"]
RANDOM_PIECES["sentencepiece_strip"] = ["sea", "é", "<|ls|>", "<|rs|>", "<|both|>", "<|nls|>", *WHITE_SPACE]
RANDOM_PIECES["bytelevel_listed_not_special"] = ["the", "sea", " ", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>"]
RANDOM_PIECES["bytelevel_added_bytes"] = ["the", "é", "🦀", " ", "Ġ", "ÃÃ", "ðŁ", "Ġ<|x|>", "<|y|>Ġ"]
RANDOM_PIECES["bytelevel_config_keys"] = ["Héllo", "WORLD", " .", " ,", " ?", " !", " ' ", " n't", " 's", " 're", "  "]
RANDOM_PIECES["bytelevel_split_removed"] = ["the", "sea", "café", "日本", "🦀", "42", "!", " ", "  ", "\t", "\n", "<|begin_of_text|>"]
RANDOM_PIECES["bytelevel_replace_dollar"] = ["the", "sea", "café", "oo", "o", "$1", "$&", "$$", " ", "!", "7"]


def random_texts(name: str, n: int = 60) -> list[str]:
    """`n` texts joining random pieces of RANDOM_PIECES[name] with random runs of spaces (none for a fixture without)."""
    if name not in RANDOM_PIECES:
        return []
    rng = random.Random(name)
    pieces = RANDOM_PIECES[name]
    gaps = ["", "", " ", " ", "  ", "\n"]
    return ["".join(rng.choice(pieces) + rng.choice(gaps) for _ in range(rng.randint(1, 8))) for _ in range(n)]


def corpus() -> list[str]:
    lines = list(PARAGRAPHS)
    n = 0
    for s in SUBJECTS:
        for v in VERBS:
            o = OBJECTS[n % len(OBJECTS)]
            e = ENDINGS[n % len(ENDINGS)]
            lines.append(f"{s[0].upper()}{s[1:]} {v} {o}{e}")
            n += 1
    return lines


def _train_bytelevel(pattern: str | None, vocab_size: int, special: list[str], nfc: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=pattern == LLAMA3_PATTERN))
    if nfc:
        tok.normalizer = normalizers.NFC()
    if pattern is None:
        first = pre_tokenizers.Digits(individual_digits=True)
    else:
        first = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [first, pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=pattern is None)]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def build_bytelevel_bos() -> tuple[Tokenizer, dict]:
    tok = _train_bytelevel(LLAMA3_PATTERN, 600, SPECIAL_LLAMA3, nfc=False)
    bos = SPECIAL_LLAMA3[0]
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, tok.token_to_id(bos))],
            ),
        ]
    )
    return tok, {"bos_token": bos, "eos_token": SPECIAL_LLAMA3[1]}


def build_bytelevel_nobos() -> tuple[Tokenizer, dict]:
    tok = _train_bytelevel(QWEN2_PATTERN, 500, SPECIAL_QWEN, nfc=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok, {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}


def build_bytelevel_digits() -> tuple[Tokenizer, dict]:
    tok = _train_bytelevel(None, 500, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], nfc=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    return tok, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}


def _sentencepiece_model() -> models.BPE:
    """Train on words with a leading ▁, then lay the vocabulary out as Llama 2 does: <unk>, <s>, </s>,
    the 256 byte tokens, then the trained pieces in their trained order."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=420, min_frequency=2, special_tokens=SPECIAL_SP, show_progress=False
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    trained = json.loads(tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(SPECIAL_SP)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    return models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)


def _sentencepiece(legacy: bool) -> tuple[Tokenizer, dict]:
    tok = Tokenizer(_sentencepiece_model())
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(SPECIAL_SP)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", bos)]
    )
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def build_sentencepiece_legacy() -> tuple[Tokenizer, dict]:
    return _sentencepiece(legacy=True)


def build_sentencepiece_metaspace() -> tuple[Tokenizer, dict]:
    return _sentencepiece(legacy=False)


def build_sentencepiece_no_unk() -> tuple[Tokenizer, dict]:
    tok, special = _sentencepiece(legacy=True)
    data = json.loads(tok.to_str())
    data["model"]["unk_token"] = None
    data["model"]["byte_fallback"] = False
    return Tokenizer.from_str(json.dumps(data)), special


BUILDERS = {
    "bytelevel_bos": build_bytelevel_bos,
    "bytelevel_nobos": build_bytelevel_nobos,
    "bytelevel_digits": build_bytelevel_digits,
    "sentencepiece_legacy": build_sentencepiece_legacy,
    "sentencepiece_metaspace": build_sentencepiece_metaspace,
    "sentencepiece_llama_class": build_sentencepiece_legacy,
    "sentencepiece_added": build_sentencepiece_legacy,
    "sentencepiece_no_unk": build_sentencepiece_no_unk,
    "bytelevel_gpt2_class": build_bytelevel_digits,
    "bytelevel_qwen2_class": build_bytelevel_digits,
    "bytelevel_gpt2_class_no_added": build_bytelevel_digits,
    "bytelevel_named_not_special": build_bytelevel_bos,
    "sentencepiece_special_dicts": build_sentencepiece_legacy,
    "sentencepiece_single_word": build_sentencepiece_legacy,
    "sentencepiece_strip": build_sentencepiece_legacy,
    "bytelevel_listed_not_special": build_bytelevel_bos,
    "bytelevel_added_bytes": build_bytelevel_bos,
    "bytelevel_config_keys": build_bytelevel_bos,
    "bytelevel_split_removed": build_bytelevel_bos,
    "bytelevel_replace_dollar": build_bytelevel_bos,
    "bytelevel_template_ids": build_bytelevel_bos,
}

# Fixtures whose tokenizer_config.json names a class for which transformers builds its own pipeline.
CLASS_OF = {
    "bytelevel_gpt2_class": "GPT2Tokenizer",
    "bytelevel_qwen2_class": "Qwen2Tokenizer",
    "bytelevel_gpt2_class_no_added": "GPT2Tokenizer",
}

# Tokens `sentencepiece_added` adds with `add_tokens` (so `normalized` is true, as that call writes it).
ADDED = ["<|im_start|>", "<|im_end|>", "New York"]

# Tokens `bytelevel_added_bytes` adds, in the byte-level alphabet: bytes C3 C3 (not UTF-8), F0 9F (an emoji's first
# two), and a space (Ġ) before or after text.
BYTE_TOKENS = [
    AddedToken("ÃÃ", normalized=False, special=False),
    AddedToken("ðŁ", normalized=False, special=True),
    AddedToken("Ġ<|x|>", normalized=False, special=False),
    AddedToken("<|y|>Ġ", normalized=False, special=True),
]

# Id lists, written as tokens, that some fixtures decode besides the random ones: an added token's bytes completed
# (or not) by the byte tokens after it.
TOKEN_LISTS = {"bytelevel_added_bytes": [["ðŁ", "¦", "Ģ", "ÃÃ", "ĳ"], ["ĺ", "ðŁ", "ĺ", "Ģ", "Ġ<|x|>", "<|y|>Ġ", "é"]]}

# Tokens `sentencepiece_strip` adds: lstrip, rstrip or both, special or not, normalized or not.
STRIP_TOKENS = [
    AddedToken("<|ls|>", lstrip=True, normalized=False, special=True),
    AddedToken("<|rs|>", rstrip=True, normalized=False, special=True),
    AddedToken("<|both|>", lstrip=True, rstrip=True, normalized=False, special=False),
    AddedToken("<|nls|>", lstrip=True, rstrip=True, normalized=True, special=False),
]


def _split_removed(data: dict) -> None:
    # A literal (String) pattern whose matches are dropped, before a byte-level step without its own regex.
    split = {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False}
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [split, data["pre_tokenizer"]["pretokenizers"][1]]}


def _replace_dollar(data: dict) -> None:
    # Replace contents are literal text in tokenizers: "$1" and "$&" are not references to the match.
    data["normalizer"] = {"type": "Replace", "pattern": {"Regex": "(o)"}, "content": "$1$&"}


def _template_ids(data: dict) -> None:
    # A template special token that stands for two ids, as its special_tokens entry lists them.
    template = [p for p in data["post_processor"]["processors"] if p["type"] == "TemplateProcessing"][0]
    entry = template["special_tokens"]["<|begin_of_text|>"]
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    entry["tokens"] = ["<|begin_of_text|>", "<|end_of_text|>"]
    entry["ids"] = [ids["<|begin_of_text|>"], ids["<|end_of_text|>"]]


# Fixtures whose tokenizer.json is another's with its pipeline edited.
PIPELINE_EDITS = {"bytelevel_split_removed": _split_removed, "bytelevel_replace_dollar": _replace_dollar,
                  "bytelevel_template_ids": _template_ids}


def build(name: str) -> tuple[Tokenizer, dict]:
    """The trained `tokenizers.Tokenizer` of fixture `name` and its special-token arguments."""
    return BUILDERS[name]()


def save(name: str, directory: str) -> None:
    """Write fixture `name`'s `tokenizer.json` + `tokenizer_config.json` into `directory` (as transformers does)."""
    from transformers import PreTrainedTokenizerFast

    tok, special = build(name)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    if name in ("sentencepiece_added", "sentencepiece_special_dicts", "sentencepiece_single_word"):
        fast.add_tokens(ADDED)
        # A special token that is normalized too: decoded as its normalized text, and so never skipped.
        fast.add_tokens([AddedToken("<|sp|>", normalized=True, special=True)], special_tokens=True)
    if name == "sentencepiece_strip":
        fast.add_tokens(STRIP_TOKENS)
    if name == "bytelevel_listed_not_special":
        fast.add_tokens(["<|im_start|>", "<|im_end|>"])
    if name == "bytelevel_added_bytes":
        fast.add_tokens(BYTE_TOKENS)
    fast.save_pretrained(directory)
    if name == "sentencepiece_llama_class":
        path = os.path.join(directory, "tokenizer_config.json")
        config = _read_json(path)
        config["tokenizer_class"] = "LlamaTokenizer"
        config["legacy"] = False
        config["add_bos_token"] = True
        config["add_eos_token"] = False
        _write_json(path, config)
    if name in CLASS_OF:
        path = os.path.join(directory, "tokenizer_config.json")
        config = _read_json(path)
        config["tokenizer_class"] = CLASS_OF[name]
        if name == "bytelevel_gpt2_class_no_added":
            # The class's own default (<|endoftext|>) names BOS, EOS and UNK; the config names one more.
            for key in ("bos_token", "eos_token", "unk_token"):
                config.pop(key, None)
            config["extra_special_tokens"] = ["<|im_end|>"]
        _write_json(path, config)
    if name == "bytelevel_named_not_special":
        # BOS and EOS, named in tokenizer_config.json, written as added tokens that are not special (transformers
        # still skips them with skip_special_tokens).
        path = os.path.join(directory, "tokenizer.json")
        data = _read_json(path)
        for t in data["added_tokens"]:
            t["special"] = False
        _write_json(path, data)
    if name == "bytelevel_listed_not_special":
        path = os.path.join(directory, "tokenizer_config.json")
        config = _read_json(path)
        config["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"]
        config["pad_token"] = "<|im_end|>"
        _write_json(path, config)
    if name == "bytelevel_config_keys":
        path = os.path.join(directory, "tokenizer_config.json")
        config = _read_json(path)
        for key in ("remove_space", "do_lowercase_and_remove_accent", "clean_up_tokenization_spaces"):
            config[key] = True
        _write_json(path, config)
    if name == "bytelevel_gpt2_class_no_added":
        path = os.path.join(directory, "tokenizer.json")
        data = _read_json(path)
        data["added_tokens"] = []
        _write_json(path, data)
    if name in PIPELINE_EDITS:
        path = os.path.join(directory, "tokenizer.json")
        data = _read_json(path)
        PIPELINE_EDITS[name](data)
        _write_json(path, data)
    if name == "sentencepiece_single_word":
        path = os.path.join(directory, "tokenizer.json")
        data = _read_json(path)
        for t in data["added_tokens"]:
            if t["content"] in ("New York", "<|im_end|>", "<|sp|>"):
                t["single_word"] = True
            if t["content"] == "<|sp|>":
                t["normalized"] = False
                t["lstrip"] = True
        _write_json(path, data)
    if name == "sentencepiece_special_dicts":
        path = os.path.join(directory, "tokenizer.json")
        data = _read_json(path)
        data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in ("<s>", "</s>")]
        _write_json(path, data)
        path = os.path.join(directory, "tokenizer_config.json")
        config = _read_json(path)
        flags = {"lstrip": True, "rstrip": True, "normalized": True, "single_word": False, "special": True}
        config["eos_token"] = {"__type": "AddedToken", "content": "</s>", **flags}
        _write_json(path, config)
        special_map = {
            "bos_token": {"content": "<|im_start|>", "lstrip": True},
            "pad_token": {"content": "<s>", "rstrip": True},
            "unk_token": "<unk>",
        }
        _write_json(os.path.join(directory, "special_tokens_map.json"), special_map)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, value: object) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")


def record(directory: str, extra: list[str] = (), token_lists: list[list[str]] = ()) -> dict:
    """What transformers gives for every text in TEXTS and `extra` with the tokenizer saved in `directory`."""
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    cases = []
    for text in [*TEXTS, *extra]:
        with_special = tok(text)["input_ids"]
        without = tok(text, add_special_tokens=False)["input_ids"]
        cases.append(
            {
                "text": text,
                "ids": with_special,
                "ids_no_special": without,
                "decoded": tok.decode(with_special),
                "decoded_skip_special": tok.decode(with_special, skip_special_tokens=True),
                "decoded_no_special": tok.decode(without),
            }
        )
    # Random id lists, half of them runs of byte tokens where the vocabulary has them (valid UTF-8 or not).
    rng = random.Random(7)
    vocab = tok.get_vocab()
    byte_ids = sorted(i for t, i in vocab.items() if len(t) == 6 and t.startswith("<0x") and t.endswith(">"))
    id_lists = []
    for k in range(40 + len(token_lists)):
        pool = byte_ids if byte_ids and k % 2 == 0 else range(len(tok))
        ids = [rng.choice(pool) if rng.random() < 0.8 else rng.randrange(len(tok)) for _ in range(rng.randint(1, 10))]
        if k >= 40:
            ids = tok.convert_tokens_to_ids(token_lists[k - 40])
        id_lists.append(
            {"ids": ids, "decoded": tok.decode(ids), "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)}
        )
    return {
        "transformers": transformers.__version__,
        "id_lists": id_lists,
        "tokenizer_class": type(tok).__name__,
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "cases": cases,
    }


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description="Write golden tokenizer fixtures from transformers.")
    parser.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "tokenizers"))
    parser.add_argument("names", nargs="*", default=list(BUILDERS))
    args = parser.parse_args()
    for name in args.names:
        directory = os.path.join(args.out, name)
        shutil.rmtree(directory, ignore_errors=True)
        save(name, directory)
        expected = record(directory, random_texts(name), TOKEN_LISTS.get(name, []))
        _write_json(os.path.join(directory, "expected.json"), expected)
        size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
        print(f"{name}: vocab {expected['vocab_size']}, {size / 1024:.1f} KiB -> {directory}", file=sys.stderr)


if __name__ == "__main__":
    main()
