/**
 * `cli/generate.ts` and `cli/ppl.ts`: help and flag errors, a generation on a tiny random model saved as a
 * Hugging Face directory, the perplexity of a llama2.c file against windows scored by the float64 host
 * Llama in tests/models/_ref.ts, and Hugging Face directories that carry their own tokenizer (one of the
 * golden fixtures in tests/fixtures/tokenizers).
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { runGenerate } from "../../cli/generate.ts";
import { runPpl } from "../../cli/ppl.ts";
import { writeLlama2c } from "../../lib/io/llama2c.ts";
import { basePieces, Tokenizer, writeTokenizer } from "../../lib/io/tokenizer.ts";
import { loadTokenizer } from "../../lib/io/load_tokenizer.ts";
import { type LlamaConfig, LlamaLM } from "../../lib/models/llama.ts";
import { saveHf } from "../../lib/models/hf.ts";
import { generate } from "../../lib/models/sample.ts";
import { ConfigError } from "../../lab/config.ts";
import { assertClose, TestRng } from "../_helpers.ts";
import { hostLogits, nllOf, randomWeights } from "../models/_ref.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

async function cli(
  script: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/cli/${script}`, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A tokenizer with the byte pieces, single letters and a few merges, and a tiny model with its vocabulary. */
async function fixture(salt: number, seqLen: number) {
  const rng = new TestRng(salt);
  const dir = await Deno.makeTempDir();
  const letters = " abcdefghijklmnopqrstuvwxyz".split("");
  const merges = [" t", "th", "he", " the", "an", " a"];
  const pieces = [
    ...basePieces(),
    ...letters.map((piece, i) => ({ piece, score: -100 - i })),
    ...merges.map((piece, i) => ({ piece, score: -1 - i })),
  ];
  await writeTokenizer(`${dir}/tok.bin`, pieces);
  const tok = await Tokenizer.load(`${dir}/tok.bin`);
  const config: LlamaConfig = {
    dim: 16,
    hiddenDim: 24,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    vocabSize: tok.vocabSize,
    seqLen,
    sharedClassifier: false,
  };
  const weights = randomWeights(config, rng, 2);
  await writeLlama2c(`${dir}/model.bin`, { ...config, sharedClassifier: false }, weights);
  await saveHf(LlamaLM.fromWeights(config, weights), `${dir}/hf`);
  const words = ["the", "a", "cat", "sat", "on", "hat", "and", "then", "ran"];
  const text = Array.from({ length: 14 }, () => words[rng.int(0, words.length - 1)]).join(" ") + "\n";
  await Deno.writeTextFile(`${dir}/text.txt`, text);
  return { dir, tok, config, weights, text, rng };
}

Deno.test("generate/ppl commands: --help, unknown keys and missing files", async () => {
  const help = await cli("generate.ts", ["--help"]);
  equal(help.code, 0);
  for (const flag of ["--model", "--tokenizer", "--prompt", "--steps", "--temperature", "--top-p"]) {
    ok(help.stdout.includes(flag), `generate --help mentions ${flag}`);
  }
  const pplHelp = await cli("ppl.ts", ["--help"]);
  equal(pplHelp.code, 0);
  // The usage line names the task README gives, as `deno task init --help` does.
  match(help.stdout, /^Usage: deno task generate \[--config/);
  match(pplHelp.stdout, /^Usage: deno task ppl \[--config/);
  for (const flag of ["--model", "--tokenizer", "--text", "--max-tokens"]) {
    ok(pplHelp.stdout.includes(flag), flag);
  }

  const bad = await cli("ppl.ts", ["--model", "m", "--tokenizer", "t", "--text", "x", "--max-tokenz", "5"]);
  equal(bad.code, 2);
  match(bad.stderr, /max-tokenz|maxTokenz/);
  const missing = await cli("generate.ts", [
    "--model",
    "/nonexistent/m.bin",
    "--tokenizer",
    "/nonexistent/t.bin",
  ]);
  equal(missing.code, 1);
  match(missing.stderr, /"\/nonexistent\/t\.bin"/);

  let error: unknown;
  try {
    await runGenerate(["--model", "m.bin", "--tokenizr", "t.bin"]);
  } catch (err) {
    error = err;
  }
  ok(error instanceof ConfigError && /tokenizr/.test(error.message), String(error));
});

Deno.test("ppl command: an unreadable --text is named once, in one line", async () => {
  const model = new URL("../fixtures/models/qwen2", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  // It read `cannot read text file "X": text file "X": cannot read it: ...`.
  for (const [text, cause] of [[`${dir}/missing.txt`, /No such file/], [dir, /directory/i]] as const) {
    const out = await cli("ppl.ts", ["--model", model, "--text", text, "--device", "cpu"]);
    equal(out.code, 1, out.stderr);
    const line = `ppl: text file "${text}": cannot read it: `;
    ok(out.stderr.startsWith(line) && out.stderr.split(`"${text}"`).length === 2, out.stderr);
    match(out.stderr, cause);
    equal(out.stderr.trimEnd().split("\n").length, 1, out.stderr);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("generate command: greedy continuation of a prompt with a model saved as an HF directory", async () => {
  const { dir, tok, config, weights } = await fixture(41, 16);
  let streamed = "";
  const run = await runGenerate(
    [
      "--model",
      `${dir}/hf`,
      "--tokenizer",
      `${dir}/tok.bin`,
      "--prompt",
      "the cat",
      "--steps",
      "5",
      "--no-stop",
    ],
    (piece) => (streamed += piece),
  );
  deepEqual(run.promptTokens, tok.encode("the cat"));
  equal(run.tokens.length, 5);
  equal(run.text, tok.decode([...run.promptTokens, ...run.tokens]));
  equal(streamed, run.text);
  ok(run.text.startsWith("the cat"));
  const direct = await generate(LlamaLM.fromWeights(config, weights), run.promptTokens, { steps: 5 });
  deepEqual(run.tokens, direct);

  // A tokenizer with ids beyond the model's vocabulary is refused, naming both files and sizes.
  const extra = Array.from({ length: 8 }, (_, i) => ({ piece: `zz${i}`, score: -500 - i }));
  await writeTokenizer(`${dir}/big.bin`, [
    ...basePieces(),
    ...extra,
    ...Array(tok.vocabSize - 259).fill(extra[0]),
  ]);
  const refused = async (args: string[], pattern: RegExp) => {
    let error: unknown;
    try {
      await runGenerate(args);
    } catch (err) {
      error = err;
    }
    ok(error instanceof Error && pattern.test(error.message), String(error));
  };
  await refused(
    ["--model", `${dir}/model.bin`, "--tokenizer", `${dir}/big.bin`],
    new RegExp(
      `big\\.bin" has ${
        tok.vocabSize + 8
      } tokens but model ".*model\\.bin" has a vocabulary of ${tok.vocabSize}`,
    ),
  );
  // A llama2.c model has no tokenizer of its own; an HF directory without tokenizer.json neither.
  await refused(
    ["--model", `${dir}/model.bin`],
    /llama2\.c checkpoint, which carries no tokenizer.*--tokenizer/,
  );
  await refused(["--model", `${dir}/hf`], /model directory ".*hf" has no tokenizer\.json: give a tokenizer/);
});

Deno.test("ppl command: BOS-prefixed non-overlapping windows, scored like a float64 host forward", async () => {
  const { dir, tok, config, weights, text } = await fixture(42, 8);
  const ids = tok.encode(text, { bos: false });
  ok(ids.length > 2 * (config.seqLen - 1), `text has ${ids.length} tokens`);
  const host = (n: number) => {
    let sum = 0;
    for (let w = 0; w * 7 < n; w++) {
      const chunk = ids.slice(w * 7, Math.min((w + 1) * 7, n));
      const logits = hostLogits(config, weights, [tok.bosId, ...chunk]);
      chunk.forEach((target, i) => (sum += nllOf(logits, i * config.vocabSize, config.vocabSize, target)));
    }
    return sum / n;
  };
  const args = ["--model", `${dir}/model.bin`, "--tokenizer", `${dir}/tok.bin`, "--text", `${dir}/text.txt`];
  const full = await runPpl([...args, "--batch-size", "3"]);
  equal(full.tokens, ids.length);
  equal(full.totalTokens, ids.length);
  equal(full.windows, Math.ceil(ids.length / 7));
  assertClose([full.nll], [host(ids.length)], { rtol: 1e-4, atol: 1e-5, what: "mean NLL" });
  assertClose([full.perplexity], [Math.exp(full.nll)], { rtol: 1e-12, atol: 0, what: "perplexity" });
  const part = await runPpl([...args, "--max-tokens", "10", "--device", "cpu"]);
  equal(part.tokens, 10);
  equal(part.windows, 2);
  assertClose([part.nll], [host(10)], { rtol: 1e-4, atol: 1e-5, what: "mean NLL of 10 tokens" });

  const out = await cli("ppl.ts", [
    "--model",
    `${dir}/hf`,
    "--tokenizer",
    `${dir}/tok.bin`,
    "--text",
    `${dir}/text.txt`,
    "--max-tokens",
    "10",
  ]);
  equal(out.code, 0, out.stderr);
  const reported = Number(/perplexity: ([\d.]+)/.exec(out.stdout)?.[1]);
  assertClose([reported], [Math.exp(host(10))], { rtol: 1e-3, atol: 0, what: "printed perplexity" });
  match(out.stdout, /tokens: +10 of \d+/);
  match(out.stdout, /adapter: +\S/);
});

const TOKENIZERS = new URL("../fixtures/tokenizers/", import.meta.url).pathname;

/** A tiny random model saved as an HF directory together with tokenizer fixture `name`. */
async function hfWithTokenizer(name: string, salt: number, vocabSize: number, seqLen: number) {
  const rng = new TestRng(salt);
  const dir = await Deno.makeTempDir();
  const config: LlamaConfig = {
    dim: 16,
    hiddenDim: 24,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    vocabSize,
    seqLen,
    sharedClassifier: false,
  };
  const weights = randomWeights(config, rng, 2);
  await saveHf(LlamaLM.fromWeights(config, weights), dir);
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(`${TOKENIZERS}${name}/${file}`, `${dir}/${file}`);
  }
  const expected = JSON.parse(await Deno.readTextFile(`${TOKENIZERS}${name}/expected.json`));
  return { dir, config, weights, expected };
}

Deno.test("generate command: HF directories with their own tokenizer (sentencepiece-style; SmolLM-style from BOS)", async () => {
  const { dir, config, weights, expected } = await hfWithTokenizer("sentencepiece_legacy", 43, 570, 32);
  equal(expected.vocab_size, config.vocabSize);
  const prompt = expected.cases[1];
  let streamed = "";
  const run = await runGenerate(
    ["--model", dir, "--prompt", prompt.text, "--steps", "6", "--no-stop", "--device", "cpu"],
    (piece) => (streamed += piece),
  );
  // The prompt ids are transformers' (with <s>); the continuation is the model's greedy one.
  deepEqual(run.promptTokens, prompt.ids);
  const direct = await generate(LlamaLM.fromWeights(config, weights), prompt.ids, { steps: 6 });
  deepEqual(run.tokens, direct);
  const tok = await loadTokenizer(dir);
  equal(run.text, tok.decode([...run.promptTokens, ...run.tokens], { skipSpecialTokens: true }));
  equal(streamed, run.text);
  ok(run.text.startsWith(prompt.text), run.text);

  // SmolLM style: the template adds nothing, so an empty prompt starts from the BOS tokenizer_config.json names.
  const smol = await hfWithTokenizer("bytelevel_digits", 45, 459, 16);
  equal(smol.expected.vocab_size, 459);
  const fromBos = await runGenerate(["--model", smol.dir, "--steps", "3", "--no-stop", "--device", "cpu"]);
  deepEqual(fromBos.promptTokens, [smol.expected.bos_token_id]);
  deepEqual(
    fromBos.tokens,
    await generate(LlamaLM.fromWeights(smol.config, smol.weights), fromBos.promptTokens, { steps: 3 }),
  );
});

Deno.test("ppl command: an HF directory with a Qwen-style tokenizer (no BOS) and a padded vocabulary", async () => {
  // The model's vocabulary (512) is larger than the tokenizer's, as Qwen pads it to a multiple of 128.
  const { dir, config, weights, expected } = await hfWithTokenizer("bytelevel_nobos", 44, 512, 8);
  ok(expected.vocab_size < config.vocabSize && expected.bos_token_id === null);
  const text = expected.cases.slice(0, 3).map((c: { text: string }) => c.text).join("\n") + "\n";
  await Deno.writeTextFile(`${dir}/text.txt`, text);
  const ids = (await loadTokenizer(dir)).encode(text, { bos: false });
  deepEqual(ids.slice(0, expected.cases[0].ids.length), expected.cases[0].ids);
  // Without a BOS, window w is ids[7w .. 7w + 8): its first token is context, the other 7 are predicted.
  const host = (n: number) => {
    let sum = 0;
    for (let from = 1; from < n; from += 7) {
      const chunk = ids.slice(from, Math.min(from + 7, n));
      const logits = hostLogits(config, weights, [ids[from - 1], ...chunk]);
      chunk.forEach((target, i) => (sum += nllOf(logits, i * config.vocabSize, config.vocabSize, target)));
    }
    return sum / (n - 1);
  };
  const full = await runPpl(["--model", dir, "--text", `${dir}/text.txt`, "--device", "cpu"]);
  equal(full.tokens, ids.length - 1);
  equal(full.totalTokens, ids.length);
  equal(full.windows, Math.ceil((ids.length - 1) / 7));
  assertClose([full.nll], [host(ids.length)], { rtol: 1e-4, atol: 1e-5, what: "mean NLL without BOS" });
  const part = await runPpl([
    "--model",
    dir,
    "--text",
    `${dir}/text.txt`,
    "--max-tokens",
    "12",
    "--batch-size",
    "1",
  ]);
  equal(part.tokens, 11);
  equal(part.windows, 2);
  assertClose([part.nll], [host(12)], { rtol: 1e-4, atol: 1e-5, what: "mean NLL of 12 tokens without BOS" });
  // Without a BOS an empty prompt has nothing to continue.
  let error: unknown;
  try {
    await runGenerate(["--model", dir]);
  } catch (err) {
    error = err;
  }
  ok(
    error instanceof Error && /has no BOS, so an empty prompt gives nothing/.test(error.message),
    String(error),
  );
});

Deno.test("generate command: stops at the EOS ids transformers' generate reads (generation_config.json, else config.json)", async () => {
  // Golden continuations from transformers (tools/hf_fixtures.py, generate_stops.json): a generation_config.json's
  // eos_token_id list stops it, one without eos_token_id stops nothing (config.json's is not read then), and
  // without the file config.json's id or list stops it. transformers ends its output with the stop token; the
  // command leaves the stop token out.
  const src = new URL("../fixtures/models/", import.meta.url).pathname;
  const golden = JSON.parse(await Deno.readTextFile(`${src}generate_stops.json`));
  ok(golden.cases.some((c: { generated: number[] }) => c.generated.length < golden.steps), "some case stops");
  for (const c of golden.cases) {
    const dir = await Deno.makeTempDir();
    for (const file of ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"]) {
      await Deno.copyFile(`${src}${golden.model}/${file}`, `${dir}/${file}`);
    }
    if (c.generation_config !== null) {
      await Deno.writeTextFile(`${dir}/generation_config.json`, JSON.stringify(c.generation_config));
    }
    if ("config_eos_token_id" in c) {
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      await Deno.writeTextFile(
        `${dir}/config.json`,
        JSON.stringify({ ...config, eos_token_id: c.config_eos_token_id }),
      );
    }
    const run = await runGenerate([
      "--model",
      dir,
      "--prompt",
      golden.prompt,
      "--steps",
      String(golden.steps),
      "--device",
      "cpu",
    ]);
    deepEqual(run.promptTokens, golden.prompt_ids, c.name);
    const eos = [c.eos_token_id ?? []].flat();
    const stopped = c.generated.length < golden.steps || eos.includes(c.generated.at(-1));
    deepEqual(run.tokens, stopped ? c.generated.slice(0, -1) : c.generated, c.name);
    await Deno.remove(dir, { recursive: true });
  }
  // An eos_token_id that is no token id is refused with the file and the value.
  const dir = await Deno.makeTempDir();
  for (const file of ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"]) {
    await Deno.copyFile(`${src}${golden.model}/${file}`, `${dir}/${file}`);
  }
  await Deno.writeTextFile(`${dir}/generation_config.json`, JSON.stringify({ eos_token_id: [2, -1] }));
  const err = await runGenerate(["--model", dir, "--steps", "2", "--device", "cpu"]).then(
    () => null,
    (e) => e,
  );
  match(
    String(err),
    /generation_config\.json": eos_token_id must be a token id or a list of them, got \[2,-1\]/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("generate command: applies repetition_penalty, refuses settings it does not implement, says what its flags override", async () => {
  // Golden continuations from transformers (tools/hf_fixtures.py generate_settings, generate_settings.json):
  // repetition_penalty from generation_config.json, or from config.json without it; sampling keys under
  // do_sample false change nothing.
  const src = new URL("../fixtures/models/", import.meta.url).pathname;
  const golden = JSON.parse(await Deno.readTextFile(`${src}generate_settings.json`));
  const copy = async (generation: unknown, configKeys: Record<string, unknown> | null) => {
    const dir = await Deno.makeTempDir();
    for (const file of ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"]) {
      await Deno.copyFile(`${src}${golden.model}/${file}`, `${dir}/${file}`);
    }
    if (generation !== null) {
      await Deno.writeTextFile(`${dir}/generation_config.json`, JSON.stringify(generation));
    }
    if (configKeys !== null) {
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...config, ...configKeys }));
    }
    return dir;
  };
  const args = (
    dir: string,
  ) => ["--model", dir, "--prompt", golden.prompt, "--steps", String(golden.steps), "--device", "cpu"];
  for (const c of golden.cases) {
    const dir = await copy(c.generation_config, c.config);
    const run = await runGenerate(args(dir));
    deepEqual(run.tokens, c.generated, c.name);
    await Deno.remove(dir, { recursive: true });
  }
  // A setting that changes transformers' result and is not implemented is refused by file, key and value.
  for (
    const [key, value] of [["num_beams", 3], ["no_repeat_ngram_size", 2], ["suppress_tokens", [5]], [
      "guidance_scale",
      1.5,
    ], ["repetition_penalty", 0]] as const
  ) {
    const dir = await copy({ [key]: value }, null);
    const err = await runGenerate(args(dir)).then(() => null, (e) => e);
    ok(
      String(err).includes(`generation_config.json": ${key} ${JSON.stringify(value)}`) ||
        String(err).includes(`generation_config.json": ${key} must be a number > 0, got ${value}`),
      `${key}: ${err}`,
    );
    await Deno.remove(dir, { recursive: true });
  }
  // Sampling and length keys give way to the flags, and the command says so.
  const dir = await copy({ do_sample: true, temperature: 0.6, max_new_tokens: 5 }, null);
  const events: string[] = [];
  const run = await runGenerate(args(dir), (p) => events.push(`text ${p}`), (n) => events.push(`note ${n}`));
  deepEqual(run.tokens.length, golden.steps);
  // Both notes reach the user before the text does (the command prints them as they come).
  deepEqual(events.slice(0, 2), run.notes.map((n) => `note ${n}`));
  ok(events.slice(2).length > 0 && events.slice(2).every((e) => e.startsWith("text ")), events.join("\n"));
  ok(
    run.notes.some((n) =>
      /asks for sampling \(do_sample true, temperature 0\.6\); this command's --temperature 0/.test(n)
    ),
    run.notes.join("\n"),
  );
  ok(
    run.notes.some((n) => /sets max_new_tokens 5; this command's --steps 24 decides/.test(n)),
    run.notes.join("\n"),
  );
  await Deno.remove(dir, { recursive: true });
});
