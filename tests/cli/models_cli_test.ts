/**
 * `cli/generate.ts` and `cli/ppl.ts`: help and flag errors, a generation on a tiny random model saved as a
 * Hugging Face directory, and the perplexity of a llama2.c file against windows scored by the float64 host
 * Llama in tests/models/_ref.ts.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { runGenerate } from "../../cli/generate.ts";
import { runPpl } from "../../cli/ppl.ts";
import { writeLlama2c } from "../../lib/io/llama2c.ts";
import { basePieces, Tokenizer, writeTokenizer } from "../../lib/io/tokenizer.ts";
import { type LlamaConfig, LlamaLM } from "../../lib/models/llama.ts";
import { saveHf } from "../../lib/models/hf.ts";
import { generate } from "../../lib/models/sample.ts";
import { ConfigError } from "../../lib/util/config.ts";
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
    await runGenerate(["--model", "m.bin"]);
  } catch (err) {
    error = err;
  }
  ok(error instanceof ConfigError && /tokenizer/.test(error.message), String(error));
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

  // A tokenizer whose vocabulary does not fit the model is refused, naming both files.
  await writeTokenizer(`${dir}/small.bin`, basePieces());
  let error: unknown;
  try {
    await runGenerate(["--model", `${dir}/model.bin`, "--tokenizer", `${dir}/small.bin`]);
  } catch (err) {
    error = err;
  }
  ok(
    error instanceof Error &&
      /small\.bin" has 259 tokens but model ".*model\.bin" has a vocabulary of/.test(error.message),
    String(error),
  );
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
