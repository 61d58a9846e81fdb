/**
 * Perplexity of a Llama model (llama2.c `.bin` or Hugging Face directory) on a text file.
 *
 *   deno run -A cli/ppl.ts --model M --tokenizer T --text FILE [--max-tokens N] [--batch-size B]
 *     [--device auto|webgpu|wasm|cpu]
 *
 * The text (CRLF normalised to LF) is encoded as one sequence without BOS and cut into consecutive,
 * non-overlapping chunks of `seqLen − 1` tokens; each window is BOS followed by one chunk, so every text token
 * is predicted exactly once, from the BOS and the tokens before it in its window. Prints the mean negative
 * log-likelihood per predicted token (nats), its exp (the perplexity), the token and window counts, the time
 * and the adapter.
 *
 * @module
 */
import { z } from "../deps.ts";
import { loadText } from "../lib/data/text.ts";
import { Tokenizer } from "../lib/io/tokenizer.ts";
import { loadLlama } from "../lib/models/load.ts";
import { deviceLine, resolveDevice } from "../lib/runtime/realize.ts";
import { DEVICE_CHOICES } from "../lib/runtime/device.ts";
import { tensor } from "../lib/tensor/creation.ts";
import { ConfigError, ConfigHelp, parseConfig } from "../lib/util/config.ts";

const Config = z.object({
  model: z.string().describe(
    "llama2.c checkpoint (.bin) or Hugging Face directory (config.json + safetensors)",
  ),
  tokenizer: z.string().describe("llama2.c tokenizer file (e.g. tok512.bin)"),
  text: z.string().describe("UTF-8 text file to evaluate"),
  maxTokens: z.int().positive().optional().describe("evaluate only the first N tokens of the text"),
  batchSize: z.int().positive().default(8).describe("windows per forward pass"),
  device: z.enum(DEVICE_CHOICES).default("auto").describe(
    "where to run the model (auto: a hardware GPU, else wasm)",
  ),
});

const NAME = "cli/ppl.ts";
const DESCRIPTION =
  "Token-level perplexity of a Llama model on a text file (BOS-prefixed, non-overlapping windows).";
const IGNORE = -100;

/** What {@link runPpl} returns. */
export interface PplRun {
  /** Mean negative log-likelihood per predicted token, in nats. */
  nll: number;
  /** `exp(nll)`. */
  perplexity: number;
  /** Text tokens predicted (every evaluated token is predicted once). */
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
  const tokenizer = await Tokenizer.load(cfg.tokenizer);
  const device = resolveDevice(cfg.device);
  const model = await loadLlama(cfg.model, { device });
  const { seqLen, vocabSize } = model.config;
  if (tokenizer.vocabSize !== vocabSize) {
    throw new Error(
      `tokenizer "${cfg.tokenizer}" has ${tokenizer.vocabSize} tokens but model "${cfg.model}" has a vocabulary of ${vocabSize}`,
    );
  }
  if (seqLen < 2) throw new Error(`model "${cfg.model}" has a context of ${seqLen}; windows need at least 2`);
  let text: string;
  try {
    text = await loadText(cfg.text);
  } catch (err) {
    throw new Error(`cannot read text file "${cfg.text}": ${(err as Error).message}`, { cause: err });
  }
  const all = tokenizer.encode(text, { bos: false });
  if (all.length === 0) throw new Error(`text file "${cfg.text}" is empty`);
  const ids = cfg.maxTokens === undefined ? all : all.slice(0, cfg.maxTokens);
  const chunk = seqLen - 1;
  const windows = Math.ceil(ids.length / chunk);
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
      const piece = ids.slice((w0 + b) * chunk, (w0 + b + 1) * chunk);
      inputs[b * seqLen] = tokenizer.bosId;
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
  const nll = total / ids.length;
  return {
    nll,
    perplexity: Math.exp(nll),
    tokens: ids.length,
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
    console.log(`windows:    ${r.windows} of up to ${r.window} positions (BOS + ${r.window - 1} tokens)`);
    console.log(`mean NLL:   ${r.nll.toFixed(4)} nats/token`);
    console.log(`perplexity: ${r.perplexity.toFixed(4)}`);
    console.log(`time:       ${r.seconds.toFixed(1)} s (${(r.tokens / r.seconds).toFixed(0)} tok/s)`);
    console.log(`adapter:    ${r.adapter}`);
  } catch (err) {
    if (err instanceof ConfigHelp) {
      console.log(err.usage);
      Deno.exit(0);
    }
    console.error(err instanceof ConfigError ? err.message : `ppl: ${(err as Error).message}`);
    Deno.exit(err instanceof ConfigError ? err.exitCode : 1);
  }
}
