/** The LM experiments' set-up: its checks of the configuration against the base model. */
import { rejects } from "node:assert/strict";
import { lmSetup } from "../../lab/lm.ts";
import { loadLlama } from "../../mod.ts";
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

Deno.test({
  name: "lmSetup refuses a seqLen longer than the base model's context, naming both",
  ignore: !have,
  fn: async () => {
    const rng = new TestRng(2301);
    const context = (await loadLlama(MODEL, { device: "cpu" })).config.seqLen;
    const seqLen = context + rng.int(1, 64);
    const text = await Deno.makeTempFile({ suffix: ".txt" });
    const words = ["the", "cat", "sat", "on", "a", "mat", "and", "slept"];
    Deno.writeTextFileSync(text, Array.from({ length: 4000 }, () => words[rng.int(0, 7)]).join(" "));
    const cfg = {
      quick: true,
      model: MODEL,
      tokenizer: TOK,
      data: text,
      pretrainSteps: 1,
      targets: ["wq"],
      batchSize: 2,
      seqLen,
      valBatches: 1,
      calibBatches: 1,
    };
    await rejects(
      lmSetup(cfg, "cpu"),
      new RegExp(`seqLen ${seqLen} is more than the base model's context of ${context} tokens`),
      `TEST_SEED ${TEST_SEED}`,
    );
    await Deno.remove(text);
  },
});
