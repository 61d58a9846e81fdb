/**
 * Smaller messages of the commands (issue 16, item 13): `generate --steps` beyond what the context holds says so
 * instead of stopping short without notice, and a library error reaches the user with the command's name once
 * (not "generate: generate: ...").
 */
import { equal, match, ok } from "node:assert/strict";
import { runGenerate } from "../../cli/generate.ts";
import { writeLlama2c } from "../../lib/io/llama2c.ts";
import { basePieces, Tokenizer, writeTokenizer } from "../../lib/io/tokenizer.ts";
import type { LlamaConfig } from "../../lib/models/llama.ts";
import { TestRng } from "../_helpers.ts";
import { randomWeights } from "../models/_ref.ts";

const GENERATE = new URL("../../cli/generate.ts", import.meta.url).pathname;

/** A tokenizer of byte pieces and single letters, and a tiny random model with its vocabulary and `seqLen`. */
async function fixture(rng: TestRng, seqLen: number) {
  const dir = await Deno.makeTempDir();
  const letters = " abcdefghijklmnopqrstuvwxyz".split("");
  await writeTokenizer(`${dir}/tok.bin`, [
    ...basePieces(),
    ...letters.map((piece, i) => ({ piece, score: -100 - i })),
  ]);
  const tok = await Tokenizer.load(`${dir}/tok.bin`);
  const config: LlamaConfig = {
    dim: 16,
    hiddenDim: 24,
    nLayers: 1,
    nHeads: 2,
    nKvHeads: 1,
    vocabSize: tok.vocabSize,
    seqLen,
    sharedClassifier: false,
  };
  await writeLlama2c(`${dir}/model.bin`, config, randomWeights(config, rng, 2));
  return { dir, tok };
}

Deno.test("generate --steps beyond the context says how many tokens it can give", async () => {
  const rng = new TestRng(801);
  const seqLen = rng.int(6, 12);
  const { dir, tok } = await fixture(rng, seqLen);
  const prompt = "abc".slice(0, rng.int(1, 3));
  const steps = seqLen + rng.int(5, 50);
  const run = await runGenerate([
    "--model",
    `${dir}/model.bin`,
    "--tokenizer",
    `${dir}/tok.bin`,
    "--prompt",
    prompt,
    "--steps",
    String(steps),
    "--no-stop",
    "--device",
    "cpu",
  ]);
  const used = tok.encode(prompt).length;
  const room = seqLen - used + 1;
  equal(run.tokens.length, room);
  equal(run.notes.length, 1);
  equal(
    run.notes[0],
    `--steps ${steps} is more than the context has room for: the model sees ${seqLen} positions and the prompt ` +
      `takes ${used}, so at most ${room} tokens are generated`,
  );
  const fits = await runGenerate([
    "--model",
    `${dir}/model.bin`,
    "--tokenizer",
    `${dir}/tok.bin`,
    "--steps",
    "2",
    "--device",
    "cpu",
  ]);
  equal(fits.notes.length, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test('a library error reaches the user once prefixed: no "generate: generate:"', async () => {
  const rng = new TestRng(802);
  const { dir } = await fixture(rng, 6);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", GENERATE, "--model", `${dir}/model.bin`, "--tokenizer", `${dir}/tok.bin`, "--prompt"]
      .concat(["a long prompt of many letters", "--device", "cpu"]),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  equal(out.code, 1, stderr);
  match(stderr, /^generate: the prompt has \d+ tokens, more than the context 6\n$/);
  ok(!stderr.includes("generate: generate:"), stderr);
  await Deno.remove(dir, { recursive: true });
});
