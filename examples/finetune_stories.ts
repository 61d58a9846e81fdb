// Fine-tune stories260K with PiSSA-initialised LoRA on wq/wv; print the loss on a held-out batch before and after.
//   deno run -A examples/finetune_stories.ts [--steps 30] [--text book.txt]
// Without ../shared/data (or with --generated) it runs on generated text with a random model of the same shape.
import { z } from "../deps.ts";
import { AdamW, attachLora, charVocab, LlamaLM, loadLlama, loadText, LORA_TRAINABLE } from "../mod.ts";
import { sampleWindows, tensor, Tokenizer, Trainer } from "../mod.ts";
import { cliConfig, generateTextDomains } from "../lab/mod.ts";

const dir = "../shared/data/models/stories260K";
const cfg = cliConfig(
  z.object({
    text: z.string().default("../shared/data/text/gutenberg/pg11.txt"),
    steps: z.number().int().positive().default(30),
    generated: z.boolean().default(!(await Deno.stat(dir).then(() => true, () => false))),
  }),
  { name: "examples/finetune_stories.ts" },
);
let model: LlamaLM, tokens: Int32Array;
if (cfg.generated) {
  const text = generateTextDomains({ seed: 0 }).target, vocab = charVocab(text);
  const shape = { dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, seqLen: 512 };
  model = LlamaLM.random({ ...shape, vocabSize: vocab.size, sharedClassifier: true }, { seed: 0 });
  tokens = vocab.encode(text);
} else {
  model = await loadLlama(`${dir}/stories260K.bin`);
  tokens = Int32Array.from((await Tokenizer.load(`${dir}/tok512.bin`)).encode(await loadText(cfg.text)));
}
await attachLora(model, { targetModules: ["wq", "wv"], rank: 4, alpha: 8, init: "pissa" });
const batch = (step: number, seed = 0) => {
  const { x, y } = sampleWindows(tokens, { batchSize: 8, seqLen: 64, seed, step });
  return { x: tensor(x, { shape: [8, 64], dtype: "i32" }), y: tensor(y, { shape: [8, 64], dtype: "i32" }) };
};
const held = batch(1, 99);
const heldOut = () => model.loss(held.x, held.y).item();
const before = await heldOut();
const optimizer = new AdamW(model, { lr: 3e-3, trainable: LORA_TRAINABLE });
await new Trainer({ model, optimizer, batch, loss: (m, b) => m.loss(b.x, b.y), steps: cfg.steps }).run();
const data = cfg.generated ? "generated text, random model" : `stories260K on ${cfg.text}`;
console.log(
  `loss before ${before.toFixed(4)}, after ${(await heldOut()).toFixed(4)} (${cfg.steps} steps; ${data})`,
);
