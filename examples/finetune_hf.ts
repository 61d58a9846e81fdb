// Fine-tune a Hugging Face checkpoint directory (Llama, Qwen2/3, Mistral, SmolLM: config.json, safetensors and
// tokenizer.json) with PiSSA-initialised LoRA on q_proj/v_proj, print the held-out loss before and after, and save
// the adapter in PEFT's format.
//   deno run -A examples/finetune_hf.ts --model path/to/SmolLM2-135M --text book.txt [--steps 30] [--out adapter]
import { z } from "../deps.ts";
import { AdamW, attachLora, checkTokenizerFits, loadLlama, loadText, loadTokenizer } from "../mod.ts";
import { LORA_TRAINABLE, sampleWindows, saveAdapter, tensor, Trainer } from "../mod.ts";
import { cliConfig } from "../lab/mod.ts";

const cfg = cliConfig(
  z.object({
    model: z.string().describe("Hugging Face checkpoint directory"),
    text: z.string().describe("a UTF-8 text file to fine-tune on"),
    steps: z.number().int().positive().default(30),
    batch: z.number().int().positive().default(4),
    seqLen: z.number().int().positive().default(64),
    rank: z.number().int().positive().default(8),
    lr: z.number().positive().default(2e-3),
    out: z.string().default("results/adapter"),
  }),
  { name: "examples/finetune_hf.ts" },
);
const model = await loadLlama(cfg.model);
const tokenizer = await loadTokenizer(cfg.model);
checkTokenizerFits(tokenizer, cfg.model, model.config.vocabSize, cfg.model);
const tokens = Int32Array.from(tokenizer.encode(await loadText(cfg.text)));
await attachLora(model, {
  targetModules: ["q_proj", "v_proj"],
  rank: cfg.rank,
  alpha: 2 * cfg.rank,
  init: "pissa",
});

const shape = [cfg.batch, cfg.seqLen];
const batch = (step: number, seed = 0) => {
  const { x, y } = sampleWindows(tokens, { batchSize: cfg.batch, seqLen: cfg.seqLen, seed, step });
  return { x: tensor(x, { shape, dtype: "i32" }), y: tensor(y, { shape, dtype: "i32" }) };
};
const held = batch(1, 99);
const heldOut = () => model.loss(held.x, held.y).item();
const before = await heldOut();
const optimizer = new AdamW(model, { lr: cfg.lr, trainable: LORA_TRAINABLE });
await new Trainer({ model, optimizer, batch, loss: (m, b) => m.loss(b.x, b.y), steps: cfg.steps }).run();
const after = await heldOut();
await saveAdapter(cfg.out, model, { baseModel: cfg.model });
console.log(
  `loss before ${before.toFixed(4)}, after ${after.toFixed(4)} (${cfg.steps} steps); adapter in ${cfg.out}`,
);
