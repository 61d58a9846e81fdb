/**
 * Perplexity of a Llama model (llama2.c `.bin` or Hugging Face directory) on a text file.
 *
 *   deno task ppl --model M [--tokenizer T] --text FILE [--max-tokens N] [--batch-size B]
 *     [--device auto|webgpu|wasm|cpu]
 *
 * The tokenizer is a Hugging Face `tokenizer.json` (or a directory holding one) or a llama2.c `.bin`; without
 * `--tokenizer`, a Hugging Face model directory's own `tokenizer.json` is used (a llama2.c model needs
 * `--tokenizer`). The text (CRLF normalised to LF) is encoded as one sequence without special tokens and cut
 * into consecutive, non-overlapping chunks of `seqLen − 1` tokens; each window is one context token followed by
 * one chunk, so every predicted token is predicted exactly once, from the context token and the tokens before it
 * in its window. The context token is BOS when the tokenizer has one (then every text token is predicted);
 * without a BOS (Qwen) it is the text token just before the chunk, and the first text token is only context.
 * Prints the mean negative log-likelihood per predicted token (nats), its exp (the perplexity), the token and
 * window counts, the time and the adapter.
 *
 * @module
 */
import { z } from "../deps.ts";
import { loadText } from "../lib/data/text.ts";
import { checkTokenizerFits, loadTokenizer, modelTokenizerPath } from "../lib/io/load_tokenizer.ts";
import { loadLlama } from "../lib/models/load.ts";
import { deviceLine, resolveDevice } from "../lib/runtime/realize.ts";
import { DEVICE_CHOICES } from "../lib/runtime/device.ts";
import { tensor } from "../lib/tensor/creation.ts";
import { exitWithError, parseConfig } from "../lab/config.ts";

const Config = z.object({
  model: z.string().describe(
    "llama2.c checkpoint (.bin) or Hugging Face directory (config.json + safetensors)",
  ),
  tokenizer: z.string().optional().describe(
    "tokenizer.json, a directory holding one, or a llama2.c .bin (default: the model directory's own)",
  ),
  text: z.string().describe("UTF-8 text file to evaluate"),
  maxTokens: z.int().positive().optional().describe("evaluate only the first N tokens of the text"),
  batchSize: z.int().positive().default(8).describe("windows per forward pass"),
  device: z.enum(DEVICE_CHOICES).optional().describe(
    "where to run the model (default: TESSERA_DEVICE, else auto: a hardware GPU, else wasm)",
  ),
});

const NAME = "deno task ppl";
const DESCRIPTION =
  "Token-level perplexity of a Llama model on a text file (non-overlapping windows, each after BOS or the token before it).";
const IGNORE = -100;

/** What {@link runPpl} returns. */
export interface PplRun {
  /** Mean negative log-likelihood per predicted token, in nats. */
  nll: number;
  /** `exp(nll)`. */
  perplexity: number;
  /** Text tokens predicted (every evaluated token is predicted once; without a BOS, all but the first). */
  tokens: number;
  /** Tokens in the whole text. */
  totalTokens: number;
  /** Windows evaluated. */
  windows: number;
  /** Context length used for the windows (the model's `seqLen`). */
  window: number;
  /** Seconds spent in forward passes (after loading and tokenizing). */
  seconds: number;
  /** The adapter description of the device used. */
  adapter: string;
}

/**
 * Runs the command on `args`. Throws {@link ConfigError} (or {@link ConfigHelp}) for bad flags and an error naming
 * the file for unreadable or malformed inputs.
 */
export async function runPpl(args: readonly string[]): Promise<PplRun> {
  const cfg = parseConfig(Config, args, { name: NAME, description: DESCRIPTION });
  const tokenizerPath = await modelTokenizerPath(cfg.model, cfg.tokenizer);
  const tokenizer = await loadTokenizer(tokenizerPath);
  const device = resolveDevice(cfg.device);
  const model = await loadLlama(cfg.model, { device });
  const { seqLen, vocabSize } = model.config;
  checkTokenizerFits(tokenizer, tokenizerPath, vocabSize, cfg.model);
  if (seqLen < 2) throw new Error(`model "${cfg.model}" has a context of ${seqLen}; windows need at least 2`);
  const text = await loadText(cfg.text); // its error names the file
  const all = tokenizer.encode(text, { bos: false });
  if (all.length === 0) throw new Error(`text file "${cfg.text}" is empty`);
  const ids = cfg.maxTokens === undefined ? all : all.slice(0, cfg.maxTokens);
  const bos = tokenizer.bosId;
  // Without a BOS the first text token is only context: predictions start at ids[offset], and a window's
  // context token is the text token just before its chunk.
  const offset = bos === undefined ? 1 : 0;
  const predicted = ids.length - offset;
  if (predicted < 1) {
    const kept = cfg.maxTokens !== undefined && all.length > ids.length
      ? `--max-tokens ${cfg.maxTokens} keeps ${ids.length} of its ${all.length} tokens`
      : `text file "${cfg.text}" has ${ids.length} token(s)`;
    throw new Error(`${kept}; without a BOS at least 2 are needed (the first is only context)`);
  }
  const chunk = seqLen - 1;
  const windows = Math.ceil(predicted / chunk);
  const batch = Math.min(cfg.batchSize, windows);
  const adapter = await deviceLine(cfg.device);

  const start = performance.now();
  let total = 0;
  for (let w0 = 0; w0 < windows; w0 += batch) {
    // Every batch is [batch, seqLen] (kernels compile once): short or missing windows are padded with
    // ignored targets, which causal attention keeps from influencing the real positions.
    const inputs = new Int32Array(batch * seqLen);
    const targets = new Int32Array(batch * seqLen).fill(IGNORE);
    for (let b = 0; b < batch && w0 + b < windows; b++) {
      const from = offset + (w0 + b) * chunk;
      const piece = ids.slice(from, from + chunk);
      inputs[b * seqLen] = bos ?? ids[from - 1];
      for (let i = 0; i < piece.length; i++) {
        if (i + 1 < seqLen) inputs[b * seqLen + i + 1] = piece[i];
        targets[b * seqLen + i] = piece[i];
      }
    }
    const x = tensor(inputs, { shape: [batch, seqLen], dtype: "i32", device });
    const y = tensor(targets, { shape: [batch, seqLen], dtype: "i32", device });
    const loss = model.loss(x, y, { ignoreIndex: IGNORE, reduction: "sum" });
    total += await loss.item();
    loss.dispose();
  }
  const seconds = (performance.now() - start) / 1000;
  const nll = total / predicted;
  return {
    nll,
    perplexity: Math.exp(nll),
    tokens: predicted,
    totalTokens: all.length,
    windows,
    window: seqLen,
    seconds,
    adapter,
  };
}

if (import.meta.main) {
  try {
    const r = await runPpl(Deno.args);
    const pct = (100 * r.tokens / r.totalTokens).toFixed(1);
    console.log(`tokens:     ${r.tokens} of ${r.totalTokens} (${pct}% of the text)`);
    console.log(
      `windows:    ${r.windows} of up to ${r.window} positions (context token + ${r.window - 1} tokens)`,
    );
    console.log(`mean NLL:   ${r.nll.toFixed(4)} nats/token`);
    console.log(`perplexity: ${r.perplexity.toFixed(4)}`);
    console.log(`time:       ${r.seconds.toFixed(1)} s (${(r.tokens / r.seconds).toFixed(0)} tok/s)`);
    console.log(`adapter:    ${r.adapter}`);
  } catch (err) {
    exitWithError("ppl", err);
  }
}
