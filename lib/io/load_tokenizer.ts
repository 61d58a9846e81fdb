/**
 * {@link loadTokenizer}, which opens a Hugging Face `tokenizer.json` (or a model directory holding one) or a llama2.c
 * `tokenizer.bin` behind the one `TextTokenizer` interface, and the checks commands make before using one with a
 * model.
 *
 * @module
 */
import { HfTokenizer } from "./hf_tokenizer.ts";
import { Tokenizer } from "./tokenizer.ts";
import type { TextTokenizer } from "./text_tokenizer.ts";

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot read "${path}": ${reason}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`"${path}" is not valid JSON: ${reason}`, { cause: err });
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

function dirname(path: string): string {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return cut < 0 ? "." : cut === 0 ? path.slice(0, 1) : path.slice(0, cut);
}

/**
 * Opens a tokenizer: a Hugging Face `tokenizer.json` file (its siblings `tokenizer_config.json` and
 * `special_tokens_map.json` are read too when present), a directory holding them (a model directory), or any other file as a llama2.c
 * `tokenizer.bin`. Errors name the path and what is wrong with it.
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./load_tokenizer.ts";
 * const hf = await loadTokenizer("tests/fixtures/tokenizers/bytelevel_nobos");
 * hf.encode("Hello"); // no BOS: Qwen-style
 * const l2c = await loadTokenizer("../shared/data/models/stories260K/tok512.bin");
 * l2c.encode("Hello")[0]; // 1 (BOS)
 * ```
 */
export async function loadTokenizer(path: string): Promise<TextTokenizer> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(
      `cannot read tokenizer "${path}": ${reason} (expected a tokenizer.json, a directory holding one, or a llama2.c tokenizer .bin)`,
      { cause: err },
    );
  }
  let jsonPath: string;
  if (info.isDirectory) {
    jsonPath = `${path.replace(/[\\/]+$/, "")}/tokenizer.json`;
    if (!(await isFile(jsonPath))) {
      throw new Error(`tokenizer directory "${path}" has no tokenizer.json`);
    }
  } else if (path.endsWith(".json")) {
    jsonPath = path;
  } else {
    return await Tokenizer.load(path);
  }
  const configPath = `${dirname(jsonPath)}/tokenizer_config.json`;
  const json = await readJson(jsonPath);
  const config = (await isFile(configPath)) ? await readJson(configPath) : undefined;
  const mapPath = `${dirname(jsonPath)}/special_tokens_map.json`;
  const specialTokensMap = (await isFile(mapPath)) ? await readJson(mapPath) : undefined;
  return HfTokenizer.fromJson(json, { config, specialTokensMap, source: jsonPath });
}

/**
 * The tokenizer path to use for a model: `tokenizer` when given, else the model's own Hugging Face directory
 * (a directory `model`, or the directory of a `config.json` / `*.safetensors` file `model`) when it holds a
 * `tokenizer.json`. A llama2.c checkpoint has no tokenizer of its own; asking for one is an error that says so.
 *
 * @example
 * ```ts
 * import { modelTokenizerPath } from "./load_tokenizer.ts";
 * await modelTokenizerPath("../shared/data/models/stories260K/stories260K.bin", "tok512.bin"); // "tok512.bin"
 * ```
 */
export async function modelTokenizerPath(model: string, tokenizer?: string): Promise<string> {
  if (tokenizer !== undefined) return tokenizer;
  let dir: string | undefined;
  try {
    const info = await Deno.stat(model);
    if (info.isDirectory) dir = model;
    else if (/(^|[\\/])config\.json$/.test(model) || model.endsWith(".safetensors")) dir = dirname(model);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot read model "${model}": ${reason}`, { cause: err });
  }
  if (dir === undefined) {
    throw new Error(
      `model "${model}" is a llama2.c checkpoint, which carries no tokenizer: give one (--tokenizer, e.g. a llama2.c tokenizer .bin)`,
    );
  }
  const jsonPath = `${dir.replace(/[\\/]+$/, "")}/tokenizer.json`;
  if (!(await isFile(jsonPath))) {
    throw new Error(`model directory "${dir}" has no tokenizer.json: give a tokenizer (--tokenizer)`);
  }
  return dir;
}

/**
 * Refuses a tokenizer whose ids do not all fit the model's embedding table: every id must be below
 * `modelVocabSize` (a model's vocabulary may be larger than its tokenizer's, e.g. Qwen pads it to a multiple
 * of 128). The error names both files and both sizes.
 *
 * @example
 * ```ts
 * import { checkTokenizerFits } from "./load_tokenizer.ts";
 * checkTokenizerFits({ vocabSize: 300 }, "tok.json", 384, "model"); // fine: 300 ids < 384 rows
 * ```
 */
export function checkTokenizerFits(
  tokenizer: Pick<TextTokenizer, "vocabSize">,
  tokenizerPath: string,
  modelVocabSize: number,
  modelPath: string,
): void {
  if (tokenizer.vocabSize > modelVocabSize) {
    throw new Error(
      `tokenizer "${tokenizerPath}" has ${tokenizer.vocabSize} tokens but model "${modelPath}" has a vocabulary of ${modelVocabSize} (every token id must be below the model's vocabulary size)`,
    );
  }
}
