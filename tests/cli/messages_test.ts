/**
 * Smaller messages of the commands (issue 16, item 13): `generate --steps` beyond what the context holds says so
 * instead of stopping short without notice, and a library error reaches the user with the command's name once
 * (not "generate: generate: ...").
 */
import { equal, match, ok, rejects } from "node:assert/strict";
import { runGenerate } from "../../cli/generate.ts";
import { runPpl } from "../../cli/ppl.ts";
import { runInit } from "../../cli/init.ts";
import { ConfigHelp } from "../../lab/config.ts";
import { writeLlama2c } from "../../lib/io/llama2c.ts";
import { basePieces, Tokenizer, writeTokenizer } from "../../lib/io/tokenizer.ts";
import type { LlamaConfig } from "../../lib/models/llama.ts";
import { TestRng } from "../_helpers.ts";
import { randomWeights } from "../models/_ref.ts";
import { writeSafetensors } from "../../lib/io/safetensors.ts";

const GENERATE = new URL("../../cli/generate.ts", import.meta.url).pathname;
const CLI = new URL("../../cli/", import.meta.url).pathname;

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

Deno.test("generate: ids past the tokenizer are shown as nothing (as transformers decodes them), a long prompt prints nothing", async () => {
  // The Qwen2 fixture's model has 512 ids, its tokenizer 459 (Qwen pads its vocabulary the same way); transformers'
  // greedy decoding of this prompt picks id 459 at the third step, and its decode skips it.
  const qwen = new URL("../fixtures/models/qwen2", import.meta.url).pathname;
  const printed: string[] = [];
  const args = ["--model", qwen, "--prompt", "Alice was beginning", "--steps", "30", "--device", "cpu"];
  const run = await runGenerate(args, (piece) => printed.push(piece));
  ok(run.tokens.includes(459), `ids ${run.tokens}`);
  equal(run.text, "Alice was beginninged redlllll,,,,,,,,,,"); // transformers' tokenizer.decode of the same ids
  equal(printed.join(""), run.text);
  match(
    run.notes.join("\n"),
    /generated id 459, which tokenizer .* \(459 ids\) has no text for: shown as nothing/,
  );
  // A prompt longer than the context is refused before anything is printed.
  const rng = new TestRng(802);
  const { dir } = await fixture(rng, 6);
  const none: string[] = [];
  const long = [
    "--model",
    `${dir}/model.bin`,
    "--tokenizer",
    `${dir}/tok.bin`,
    "--prompt",
    "a b c d e f g h",
  ];
  await rejects(
    runGenerate([...long, "--device", "cpu"], (p) => none.push(p)),
    /the prompt has \d+ tokens, more than the context 6/,
  );
  equal(none.length, 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("generate, ppl and init: a flag followed by another flag says it needs a value", async () => {
  const rng = new TestRng(803);
  const { dir } = await fixture(rng, 8);
  const model = ["--model", `${dir}/model.bin`, "--tokenizer", `${dir}/tok.bin`, "--device", "cpu"];
  const steps = String(rng.int(1, 4));
  // The command line of a user who forgot the prompt: nothing is generated from a prompt "--no-stop".
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", GENERATE, ...model, "--steps", steps, "--prompt", "--no-stop"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  equal(out.code, 2, stderr);
  equal(stderr, "flag --prompt needs a value (string)\n");
  equal(out.stdout.length, 0);
  // The flag after it is read as a flag: --steps with its value, --help as help.
  await rejects(runGenerate([...model, "--prompt", "--steps", steps]), (e: Error) => {
    equal(e.message, "flag --prompt needs a value (string)");
    return true;
  });
  await rejects(runGenerate([...model, "--prompt", "--help"]), ConfigHelp);
  await rejects(
    runPpl([...model, "--text", "--max-tokens", steps]),
    /^ConfigError: flag --text needs a value/,
  );
  const init = ["--weights", `${dir}/w.safetensors`, "--out", `${dir}/o.safetensors`];
  await rejects(runInit(["--method", "--rank", steps, ...init]), /^ConfigError: flag --method needs a value/);
  await rejects(
    runInit(["--method", "lora", ...init, "--activations", "--rank", steps]),
    /^ConfigError: flag --activations needs a value \(string\)$/,
  );
  await rejects(runInit(["--method", "--help"]), ConfigHelp);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("ppl: a --max-tokens too small for a tokenizer without BOS says it is the cut, not the file", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/t.txt`, "Alice was beginning to get very tired of sitting by her sister.");
  const qwen = new URL("../fixtures/models/qwen2", import.meta.url).pathname;
  const args = ["--model", qwen, "--text", `${dir}/t.txt`, "--max-tokens", "1", "--device", "cpu"];
  await rejects(
    runPpl(args),
    /--max-tokens 1 keeps 1 of its \d+ tokens; without a BOS at least 2 are needed/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("generate, ppl and init run on TESSERA_DEVICE without --device, and --device overrides it", async () => {
  const rng = new TestRng(804);
  const { dir } = await fixture(rng, 8);
  const [dOut, dIn] = [rng.int(3, 8), rng.int(3, 8)];
  await writeSafetensors(`${dir}/w.safetensors`, {
    "blk.q.weight": { dtype: "F32", shape: [dOut, dIn], data: rng.normals(dOut * dIn, 0.3) },
  });
  await Deno.writeTextFile(`${dir}/text.txt`, "a cat sat on the hat and then ran\n");
  const model = ["--model", `${dir}/model.bin`, "--tokenizer", `${dir}/tok.bin`];
  const commands: [string, string[]][] = [
    ["generate.ts", [...model, "--prompt", "a", "--steps", "2"]],
    ["ppl.ts", [...model, "--text", `${dir}/text.txt`]],
    ["init.ts", [
      "--method",
      "lora",
      "--rank",
      "2",
      "--weights",
      `${dir}/w.safetensors`,
      "--out",
      `${dir}/o.st`,
    ]],
  ];
  // The automatic device is wasm or webgpu, never cpu: a device line naming cpu comes from the variable.
  const lines = {
    "generate.ts": / on (\w+): /,
    "ppl.ts": /^adapter: +(\w+): /m,
    "init.ts": /\(device: (\w+): /,
  };
  for (const [script, args] of commands) {
    for (const flag of [[], ["--device", "wasm"]]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${CLI}${script}`, ...args, ...flag],
        env: { TESSERA_DEVICE: "cpu" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      equal(out.code, 0, text);
      const found = text.match(lines[script as keyof typeof lines]);
      equal(found?.[1], flag.length === 0 ? "cpu" : "wasm", `${script} ${flag.join(" ")}: ${text}`);
    }
  }
  await Deno.remove(dir, { recursive: true });
});
