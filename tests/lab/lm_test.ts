/** The LM experiments' set-up: its checks of the configuration against the base model. */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { lmSetup, loadCorpus, SOURCE_CHARS } from "../../lab/lm.ts";
import { collectActivations, collectGradients, loadLlama, splitText, Tokenizer } from "../../mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

const DATA = new URL("../../../shared/data/", import.meta.url).pathname;
const MODEL = `${DATA}models/stories260K/stories260K.bin`;
const TOK = `${DATA}models/stories260K/tok512.bin`;
const have = (() => {
  try {
    Deno.statSync(MODEL);
    Deno.statSync(TOK);
    return true;
  } catch {
    return false;
  }
})();

/** Settings of a one-step set-up (tiny batches, one target), with `over` on top. */
function settings<T extends object>(over: T) {
  return {
    quick: true,
    pretrainSteps: 1,
    targets: ["wq"],
    batchSize: 2,
    seqLen: 16,
    valBatches: 1,
    calibBatches: 1,
    ...over,
  };
}

/** A temporary text file of 4,000 random words from a small vocabulary. */
async function wordsFile(rng: TestRng): Promise<string> {
  const text = await Deno.makeTempFile({ suffix: ".txt" });
  const words = ["the", "cat", "sat", "on", "a", "mat", "and", "slept"];
  Deno.writeTextFileSync(text, Array.from({ length: 4000 }, () => words[rng.int(0, 7)]).join(" "));
  return text;
}

Deno.test({
  name: "lmSetup refuses a seqLen longer than the base model's context, naming both",
  ignore: !have,
  fn: async () => {
    const rng = new TestRng(2301);
    const context = (await loadLlama(MODEL, { device: "cpu" })).config.seqLen;
    const seqLen = context + rng.int(1, 64);
    const text = await wordsFile(rng);
    const cfg = settings({ model: MODEL, tokenizer: TOK, data: text, seqLen });
    await rejects(
      lmSetup(cfg, "cpu"),
      new RegExp(`seqLen ${seqLen} is more than the base model's context of ${context} tokens`),
      `TEST_SEED ${TEST_SEED}`,
    );
    await Deno.remove(text);
  },
});

Deno.test({
  name: "loadCorpus: a source text tokenized in part is cut where its description says, and only then",
  ignore: !have,
  fn: async () => {
    const rng = new TestRng(2417);
    const data = await wordsFile(rng);
    const tok = await Tokenizer.load(TOK);
    const words = ["once", "upon", "a", "time", "lily", "played", "in", "the", "park", "."];
    for (const length of [SOURCE_CHARS + rng.int(1, 30_000), rng.int(1_000, 5_000)]) {
      let text = "";
      while (text.length < length) text += words[rng.int(0, words.length - 1)] + " ";
      text = text.slice(0, length);
      const source = await Deno.makeTempFile({ suffix: ".txt" });
      Deno.writeTextFileSync(source, text);
      const corpus = await loadCorpus({ quick: true, pretrainSteps: 1, data, tokenizer: TOK }, source);
      const cut = Math.min(length, SOURCE_CHARS);
      deepEqual([...corpus.source!], tok.encode(text.slice(0, cut)), `TEST_SEED ${TEST_SEED}`);
      const said = corpus.description.includes(
        `source ${source} (its first ${SOURCE_CHARS} of ${length} characters)`,
      );
      equal(said, length > SOURCE_CHARS, `${corpus.description}; TEST_SEED ${TEST_SEED}`);
      await Deno.remove(source);
    }
    await Deno.remove(data);
  },
});

Deno.test({
  name: "lmSetup refuses a text too short for one window in its training or validation part, naming the file",
  ignore: !have,
  fn: async () => {
    const rng = new TestRng(2419);
    const tok = await Tokenizer.load(TOK);
    const seqLen = rng.int(16, 64);
    const words = ["the", "cat", "sat", "on", "a", "mat", "and", "slept"];
    const long = Array.from({ length: 200 * seqLen }, () => words[rng.int(0, 7)]).join(" ");
    // 8..12 characters per position: the training part holds a window, the validation tenth does not (at most
    // 1.2·seqLen characters, about 0.5·seqLen tokens of these words; with up to 20 some draws' validation part held
    // a window).
    const short = long.slice(0, rng.int(8, 12) * seqLen);
    for (const [text, part] of [[short, "validation"], ["", "training"]]) {
      const file = await Deno.makeTempFile({ suffix: ".txt" });
      Deno.writeTextFileSync(file, text);
      const split = splitText(text);
      const trainTokens = tok.encode(split.train).length;
      const tokens = part === "training" ? trainTokens : tok.encode(split.val).length;
      ok(tokens < seqLen + 1 && (part === "training" || trainTokens >= seqLen + 1), `TEST_SEED ${TEST_SEED}`);
      await rejects(
        lmSetup(settings({ model: MODEL, tokenizer: TOK, data: file, seqLen }), "cpu"),
        (e: Error) =>
          e.message.includes(file) && e.message.includes(`${part} part`) &&
          e.message.includes(`${tokens} tokens, fewer than the ${seqLen + 1}`),
        `TEST_SEED ${TEST_SEED}`,
      );
      await Deno.remove(file);
    }
  },
});

Deno.test("lmSetup refuses a seqLen longer than the built-in base's context before pretraining it", async () => {
  const rng = new TestRng(2304);
  const seqLen = 128 + rng.int(1, 64);
  const here = Deno.cwd();
  const dir = await Deno.makeTempDir();
  // The built-in base is cached under .cache/ of the working directory: nothing may be built there.
  Deno.chdir(dir);
  try {
    const cfg = settings({ seqLen });
    await rejects(
      lmSetup(cfg, "cpu"),
      new RegExp(
        `seqLen ${seqLen} is more than the base model's context of 128 tokens \\(the built-in base\\)`,
      ),
    );
    equal([...Deno.readDirSync(dir)].length, 0, "the set-up wrote nothing (no base was pretrained)");
  } finally {
    Deno.chdir(here);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "calibration's batchSize sets the sequences of the gradient batches too, as that of the activations",
  ignore: !have,
  fn: async () => {
    const rng = new TestRng(2302);
    const text = await wordsFile(rng);
    const small = rng.int(1, 3), large = small + rng.int(1, 3);
    const cfg = (batchSize: number) =>
      settings({ model: MODEL, tokenizer: TOK, data: text, batchSize, calibBatches: 2 });
    const seed = rng.int(0, 1000);
    // Asked for batches of `small` sequences, a set-up of batch size `large` gives those of batch size `small`.
    const asked = await lmSetup(cfg(large), "cpu");
    const own = await lmSetup(cfg(small), "cpu");
    const got = (await asked.calibration(asked.fresh(), "lora-ga", seed, { batchSize: small }))!;
    const want = (await own.calibration(own.fresh(), "lora-ga", seed))!;
    for (const [path, d] of Object.entries(want)) {
      const a = (await got[path].grads!.data()) as Float32Array, b = (await d.grads!.data()) as Float32Array;
      equal(a.length, b.length);
      const scale = Math.max(...b.map(Math.abs));
      ok(a.every((v, i) => Math.abs(v - b[i]) <= 1e-6 * scale), `${path} (TEST_SEED ${TEST_SEED})`); // same batches
    }
    await Deno.remove(text);
  },
});

Deno.test({
  name:
    "calibration's batches are no run's training batches: not those of its seed, nor of seeds 55 or 77 above",
  ignore: !have,
  fn: async () => {
    const rng = new TestRng(2303);
    const text = await Deno.makeTempFile({ suffix: ".txt" });
    const words = ["the", "cat", "sat", "on", "a", "mat", "and", "slept", "dog", "ran"];
    Deno.writeTextFileSync(text, Array.from({ length: 4000 }, () => words[rng.int(0, 9)]).join(" "));
    const cfg = settings({ model: MODEL, tokenizer: TOK, data: text, calibBatches: 2 });
    const lm = await lmSetup(cfg, "cpu");
    const seed = rng.int(0, 1000);
    const steps = [1, 2];
    // What the calibration records, and what the same collection records on the training batches of run `s`.
    const got = (await lm.calibration(lm.fresh(), "lora-ga", seed))!;
    const gotActs = (await lm.calibration(lm.fresh(), "eva", seed))!;
    const onTraining = async (s: number) => ({
      acts: await collectActivations(lm.fresh(), cfg.targets, (m, i) => {
        m.forward(lm.trainBatch(s, i + 1).x);
      }, { batches: steps.length }),
      grads: await collectGradients(lm.fresh(), cfg.targets, (m, step: number) => {
        const b = lm.trainBatch(s, step);
        return m.loss(b.x, b.y);
      }, steps),
    });
    const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => v === b[i]);
    for (const s of [seed, seed + 55, seed + 77]) {
      const train = await onTraining(s);
      for (const path of Object.keys(got)) {
        const a = (await gotActs[path].activations!.data()) as Float32Array;
        const g = (await got[path].grads!.data()) as Float32Array;
        ok(
          !same(a, (await train.acts[path].activations!.data()) as Float32Array),
          `${path}: activations = run ${s}'s`,
        );
        ok(
          !same(g, (await train.grads[path].grads!.data()) as Float32Array),
          `${path}: gradients = run ${s}'s`,
        );
      }
    }
    // Deterministic: the same seed calibrates on the same batches.
    const again = (await lm.calibration(lm.fresh(), "lora-ga", seed))!;
    for (const path of Object.keys(got)) {
      ok(
        same(
          (await got[path].grads!.data()) as Float32Array,
          (await again[path].grads!.data()) as Float32Array,
        ),
      );
    }
    await Deno.remove(text);
  },
});
