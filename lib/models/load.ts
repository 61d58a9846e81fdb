/**
 * One entry point for every checkpoint format: a llama2.c `.bin` file or a Hugging Face directory.
 *
 * @module
 */
import { checkFinite } from "../nn/finite.ts";
import { namedParameters } from "../nn/module.ts";
import { hfEosTokenIds, type HfGenerationSettings, hfGenerationSettings, loadHf } from "./hf.ts";
import { checkLoadOptions, LlamaLM, type LlamaLoadOptions } from "./llama.ts";

/**
 * Loads a {@link LlamaLM} from `path`: a directory (or a `config.json` / `*.safetensors` file inside one) is read
 * as a Hugging Face checkpoint, any other file as a llama2.c checkpoint. Every weight is checked to be finite (one
 * reduction on the device): a NaN or an infinity throws a `NonFiniteWeightsError` naming the tensor.
 *
 * @example
 * ```ts
 * import { loadLlama } from "./load.ts";
 * const model = await loadLlama("../shared/data/models/stories260K/stories260K.bin");
 * model.config.dim; // 64
 * ```
 */
export async function loadLlama(path: string, options: LlamaLoadOptions = {}): Promise<LlamaLM> {
  checkLoadOptions("loadLlama", options);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(
      `cannot read model "${path}": ${reason} (expected a llama2.c .bin file or a Hugging Face directory)`,
      { cause: err },
    );
  }
  const dir = hfDirOf(path, info);
  const model = dir === undefined ? await LlamaLM.fromLlama2c(path, options) : await loadHf(dir, options);
  await checkFinite(namedParameters(model), {
    what: `model "${path}"`,
    hint: "The file is damaged or holds the weights of a diverged run; use an intact copy",
  });
  return model;
}

/** The Hugging Face directory `path` names (itself, or the directory of a file in it), or undefined for a llama2.c file. */
function hfDirOf(path: string, info: Deno.FileInfo): string | undefined {
  if (info.isDirectory) return path;
  if (/(^|[\\/])config\.json$/.test(path) || path.endsWith(".safetensors")) {
    const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
    return cut < 0 ? "." : path.slice(0, cut);
  }
  return undefined;
}

/**
 * The token ids at which transformers' `generate` stops for the model at `path` (as {@link loadLlama} reads it):
 * for a Hugging Face directory, the `eos_token_id` of its `generation_config.json`, else of its `config.json`
 * (see {@link hfEosTokenIds}); `undefined` for a llama2.c file, which names none.
 *
 * @example
 * ```ts
 * import { modelEosTokenIds } from "./load.ts";
 * await modelEosTokenIds("tests/fixtures/models/llama"); // [2]
 * await modelEosTokenIds("../shared/data/models/stories260K/stories260K.bin"); // undefined
 * ```
 */
export async function modelEosTokenIds(path: string): Promise<number[] | undefined> {
  const dir = hfDirOf(path, await Deno.stat(path));
  return dir === undefined ? undefined : await hfEosTokenIds(dir);
}

/**
 * The generation settings transformers' `generate` reads for the model at `path` (see {@link hfGenerationSettings}):
 * `undefined` for a llama2.c file, which has none.
 *
 * @example
 * ```ts
 * import { modelGenerationSettings } from "./load.ts";
 * (await modelGenerationSettings("tests/fixtures/models/llama"))?.repetitionPenalty; // 1
 * ```
 */
export async function modelGenerationSettings(path: string): Promise<HfGenerationSettings | undefined> {
  const dir = hfDirOf(path, await Deno.stat(path));
  return dir === undefined ? undefined : await hfGenerationSettings(dir);
}
