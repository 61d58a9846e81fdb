/**
 * Generate text with a Llama model (llama2.c `.bin` or Hugging Face directory) and its tokenizer.
 *
 *   deno task generate --model M [--tokenizer T] [--prompt P] [--steps N] [--temperature 0]
 *     [--top-p 0.9] [--seed S] [--no-stop] [--device auto|webgpu|wasm|cpu]
 *
 * The tokenizer is a Hugging Face `tokenizer.json` (or a directory holding one) or a llama2.c `.bin`; without
 * `--tokenizer`, a Hugging Face model directory's own `tokenizer.json` is used (a llama2.c model needs
 * `--tokenizer`). The prompt is encoded as transformers' `tokenizer(prompt)` does (BOS where the tokenizer adds
 * one). Prints the prompt and its continuation on stdout (streamed token by token, special tokens left out), and
 * the token count, speed and adapter on stderr. Temperature 0 is greedy decoding. Unless `--no-stop` is given,
 * generation stops where transformers' `generate` stops for a Hugging Face directory: at the `eos_token_id` (one id
 * or a list) of its `generation_config.json`, or of its `config.json` when it has no such file (none when neither
 * names one; the tokenizer's BOS and EOS do not stop it); and for a llama2.c model at the tokenizer's BOS or EOS
 * (`run.c` stops at BOS, which its stories are separated by). The stop token is not printed. It also stops when the
 * context is full. The directory's generation settings (`generation_config.json`, else `config.json`) are read as
 * transformers' `generate` reads them: `repetition_penalty` applies; a setting tessera does not implement (beams,
 * n-gram bans, suppressed or forced tokens, ...) is refused by file, key and value; `do_sample` and its sampling
 * keys, and `max_new_tokens` / `max_length`, give way to `--temperature`, `--top-p` and `--steps`, and the command
 * says so on stderr when the file sets them.
 *
 * @module
 */
import { z } from "../deps.ts";
import { checkTokenizerFits, loadTokenizer, modelTokenizerPath } from "../lib/io/load_tokenizer.ts";
import { loadLlama, modelEosTokenIds, modelGenerationSettings } from "../lib/models/load.ts";
import { generate } from "../lib/models/sample.ts";
import { deviceLine, resolveDevice } from "../lib/runtime/realize.ts";
import { DEVICE_CHOICES } from "../lib/runtime/device.ts";
import { exitWithError, parseConfig } from "../lab/config.ts";

const Config = z.object({
  model: z.string().describe(
    "llama2.c checkpoint (.bin) or Hugging Face directory (config.json + safetensors)",
  ),
  tokenizer: z.string().optional().describe(
    "tokenizer.json, a directory holding one, or a llama2.c .bin (default: the model directory's own)",
  ),
  prompt: z.string().default("").describe("text to continue (BOS is prepended where the tokenizer adds one)"),
  steps: z.int().nonnegative().default(256).describe("number of tokens to generate"),
  temperature: z.number().nonnegative().default(0).describe("sampling temperature; 0 = greedy"),
  topP: z.number().positive().max(1).default(1).describe("nucleus sampling threshold (1 = off)"),
  seed: z.int().default(0).describe("seed of the sampling draws"),
  stop: z.boolean().default(true).describe(
    "stop at the model's EOS ids (generation_config.json, else config.json; llama2.c: the tokenizer's BOS or EOS)",
  ),
  device: z.enum(DEVICE_CHOICES).optional().describe(
    "where to run the model (default: TESSERA_DEVICE, else auto: a hardware GPU, else wasm)",
  ),
});

const NAME = "deno task generate";
const DESCRIPTION = "Continue a prompt with a Llama model and print the text.";

/** What {@link runGenerate} returns. */
export interface GenerateRun {
  /** The prompt as the tokenizer decodes it, followed by the generated text. */
  text: string;
  /** Generated token ids (without the prompt). */
  tokens: number[];
  /** Prompt token ids (with the tokenizer's special tokens, e.g. BOS). */
  promptTokens: number[];
  /** Seconds spent generating (after loading). */
  seconds: number;
  /** The adapter description of the device used. */
  adapter: string;
  /** Things the user should know about the run (e.g. that the context cut the generation short). */
  notes: string[];
}

/**
 * Runs the command on `args`. Throws {@link ConfigError} (or {@link ConfigHelp}) for bad flags and an error naming
 * the file for unreadable or malformed inputs. `write` receives the text as it is produced, and `note` each note
 * known before the text (about the settings and the context) as soon as it is known; the run's `notes` hold them
 * all.
 */
export async function runGenerate(
  args: readonly string[],
  write: (text: string) => void = () => {},
  note: (line: string) => void = () => {},
): Promise<GenerateRun> {
  const cfg = parseConfig(Config, args, { name: NAME, description: DESCRIPTION });
  const tokenizerPath = await modelTokenizerPath(cfg.model, cfg.tokenizer);
  const tokenizer = await loadTokenizer(tokenizerPath);
  const device = resolveDevice(cfg.device);
  const model = await loadLlama(cfg.model, { device });
  checkTokenizerFits(tokenizer, tokenizerPath, model.config.vocabSize, cfg.model);
  const adapter = await deviceLine(cfg.device);
  const eos = await modelEosTokenIds(cfg.model);
  const stop = !cfg.stop
    ? []
    : eos ?? [tokenizer.bosId, tokenizer.eosId].filter((id): id is number => id !== undefined);
  let promptTokens = tokenizer.encode(cfg.prompt);
  // An empty prompt under a tokenizer whose template adds nothing (SmolLM, Qwen) starts from its BOS, if any.
  if (promptTokens.length === 0 && tokenizer.bosId !== undefined) promptTokens = [tokenizer.bosId];
  if (promptTokens.length === 0) {
    throw new Error(`tokenizer "${tokenizerPath}" has no BOS, so an empty prompt gives nothing to continue`);
  }
  // Checked before anything is printed: a failed run prints nothing.
  if (promptTokens.length > model.config.seqLen) {
    throw new Error(
      `the prompt has ${promptTokens.length} tokens, more than the context ${model.config.seqLen}`,
    );
  }
  const notes: string[] = [];
  const tell = (line: string) => {
    notes.push(line);
    note(line);
  };
  const settings = await modelGenerationSettings(cfg.model);
  if (settings?.sampling) {
    tell(
      `"${settings.path}" asks for sampling (${describe(settings.sampling)}); this command's --temperature ` +
        `${cfg.temperature} and --top-p ${cfg.topP} decide instead${
          cfg.temperature === 0 ? " (greedy)" : ""
        }`,
    );
  }
  if (settings?.length) {
    tell(
      `"${settings.path}" sets ${
        describe(settings.length)
      }; this command's --steps ${cfg.steps} decides instead`,
    );
  }
  const room = model.config.seqLen - promptTokens.length + 1;
  if (cfg.steps > room && room > 0) {
    tell(
      `--steps ${cfg.steps} is more than the context has room for: the model sees ${model.config.seqLen} ` +
        `positions and the prompt takes ${promptTokens.length}, so at most ${room} tokens are generated`,
    );
  }
  const stream = tokenizer.streamDecoder({ skipSpecialTokens: true });
  let text = "";
  // A model may have more ids than its tokenizer (Qwen pads its vocabulary): such an id has no text, and is
  // shown as nothing, as transformers' decode does.
  let textless = 0;
  const emit = (id: number) => {
    if (id >= tokenizer.vocabSize) {
      if (textless++ === 0) {
        // Kept for the end: a note in the middle of the text would cut it on a terminal.
        notes.push(
          `the model generated id ${id}, which tokenizer "${tokenizerPath}" (${tokenizer.vocabSize} ids) has no text for: shown as nothing`,
        );
      }
      return;
    }
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
    repetitionPenalty: settings?.repetitionPenalty ?? 1,
    seed: cfg.seed,
    stop,
    onToken: emit,
  });
  const seconds = (performance.now() - start) / 1000;
  const rest = stream.flush();
  text += rest;
  if (rest.length > 0) write(rest);
  return { text, tokens, promptTokens, seconds, adapter, notes };
}

/** `key value, key value` of a settings object. */
function describe(keys: Record<string, unknown>): string {
  return Object.entries(keys).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(", ");
}

if (import.meta.main) {
  const encoder = new TextEncoder();
  let told = 0;
  try {
    const run = await runGenerate(
      Deno.args,
      (piece) => Deno.stdout.writeSync(encoder.encode(piece)),
      (note) => {
        told++;
        console.error(`generate: ${note}`);
      },
    );
    Deno.stdout.writeSync(encoder.encode("\n"));
    for (const note of run.notes.slice(told)) console.error(`generate: ${note}`);
    const rate = run.tokens.length / Math.max(run.seconds, 1e-9);
    console.error(
      `${run.tokens.length} tokens in ${run.seconds.toFixed(2)} s (${
        rate.toFixed(1)
      } tok/s) on ${run.adapter}`,
    );
  } catch (err) {
    exitWithError("generate", err);
  }
}
