/**
 * Generate text with a Llama model (llama2.c `.bin` or Hugging Face directory) and a llama2.c tokenizer.
 *
 *   deno run -A cli/generate.ts --model M --tokenizer T [--prompt P] [--steps N] [--temperature 0]
 *     [--top-p 0.9] [--seed S] [--no-stop] [--device auto|webgpu|wasm|cpu]
 *
 * Prints the prompt and its continuation on stdout (streamed token by token), and the token count, speed and
 * adapter on stderr. Temperature 0 is greedy decoding. Generation stops at BOS or EOS (as llama2.c's `run.c`)
 * unless `--no-stop` is given, and when the context is full.
 *
 * @module
 */
import { z } from "../deps.ts";
import { Tokenizer } from "../lib/io/tokenizer.ts";
import { loadLlama } from "../lib/models/load.ts";
import { generate } from "../lib/models/sample.ts";
import { deviceLine, resolveDevice } from "../lib/runtime/realize.ts";
import { DEVICE_CHOICES } from "../lib/runtime/device.ts";
import { ConfigError, ConfigHelp, parseConfig } from "../lib/util/config.ts";

const Config = z.object({
  model: z.string().describe(
    "llama2.c checkpoint (.bin) or Hugging Face directory (config.json + safetensors)",
  ),
  tokenizer: z.string().describe("llama2.c tokenizer file (e.g. tok512.bin)"),
  prompt: z.string().default("").describe("text to continue (BOS is prepended)"),
  steps: z.int().nonnegative().default(256).describe("number of tokens to generate"),
  temperature: z.number().nonnegative().default(0).describe("sampling temperature; 0 = greedy"),
  topP: z.number().positive().max(1).default(1).describe("nucleus sampling threshold (1 = off)"),
  seed: z.int().default(0).describe("seed of the sampling draws"),
  stop: z.boolean().default(true).describe("stop at a BOS or EOS token"),
  device: z.enum(DEVICE_CHOICES).default("auto").describe(
    "where to run the model (auto: a hardware GPU, else wasm)",
  ),
});

const NAME = "cli/generate.ts";
const DESCRIPTION = "Continue a prompt with a Llama model and print the text.";

/** What {@link runGenerate} returns. */
export interface GenerateRun {
  /** The prompt as the tokenizer decodes it, followed by the generated text. */
  text: string;
  /** Generated token ids (without the prompt). */
  tokens: number[];
  /** Prompt token ids (with BOS). */
  promptTokens: number[];
  /** Seconds spent generating (after loading). */
  seconds: number;
  /** The adapter description of the device used. */
  adapter: string;
}

/**
 * Runs the command on `args`. Throws {@link ConfigError} (or {@link ConfigHelp}) for bad flags and an error naming
 * the file for unreadable or malformed inputs. `write` receives the text as it is produced.
 */
export async function runGenerate(
  args: readonly string[],
  write: (text: string) => void = () => {},
): Promise<GenerateRun> {
  const cfg = parseConfig(Config, args, { name: NAME, description: DESCRIPTION });
  const tokenizer = await Tokenizer.load(cfg.tokenizer);
  const device = resolveDevice(cfg.device);
  const model = await loadLlama(cfg.model, { device });
  if (tokenizer.vocabSize !== model.config.vocabSize) {
    throw new Error(
      `tokenizer "${cfg.tokenizer}" has ${tokenizer.vocabSize} tokens but model "${cfg.model}" has a vocabulary of ${model.config.vocabSize}`,
    );
  }
  const adapter = await deviceLine(cfg.device);
  const promptTokens = tokenizer.encode(cfg.prompt);
  const stream = tokenizer.streamDecoder();
  let text = "";
  const emit = (id: number) => {
    const piece = stream.push(id);
    text += piece;
    if (piece.length > 0) write(piece);
  };
  for (const id of promptTokens) emit(id);
  const start = performance.now();
  const tokens = await generate(model, promptTokens, {
    steps: cfg.steps,
    temperature: cfg.temperature,
    topP: cfg.topP,
    seed: cfg.seed,
    stop: cfg.stop ? [tokenizer.bosId, tokenizer.eosId] : [],
    onToken: emit,
  });
  const seconds = (performance.now() - start) / 1000;
  const rest = stream.flush();
  text += rest;
  if (rest.length > 0) write(rest);
  return { text, tokens, promptTokens, seconds, adapter };
}

if (import.meta.main) {
  const encoder = new TextEncoder();
  try {
    const run = await runGenerate(Deno.args, (piece) => Deno.stdout.writeSync(encoder.encode(piece)));
    Deno.stdout.writeSync(encoder.encode("\n"));
    const rate = run.tokens.length / Math.max(run.seconds, 1e-9);
    console.error(
      `${run.tokens.length} tokens in ${run.seconds.toFixed(2)} s (${
        rate.toFixed(1)
      } tok/s) on ${run.adapter}`,
    );
  } catch (err) {
    if (err instanceof ConfigHelp) {
      console.log(err.usage);
      Deno.exit(0);
    }
    console.error(err instanceof ConfigError ? err.message : `generate: ${(err as Error).message}`);
    Deno.exit(err instanceof ConfigError ? err.exitCode : 1);
  }
}
