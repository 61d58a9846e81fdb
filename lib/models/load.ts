/**
 * One entry point for every checkpoint format: a llama2.c `.bin` file or a Hugging Face directory.
 *
 * @module
 */
import { checkFinite } from "../nn/finite.ts";
import { namedParameters } from "../nn/module.ts";
import { loadHf } from "./hf.ts";
import { LlamaLM, type LlamaLoadOptions } from "./llama.ts";

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
  let dir: string | undefined;
  if (info.isDirectory) dir = path;
  else if (/(^|[\\/])config\.json$/.test(path) || path.endsWith(".safetensors")) {
    const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
    dir = cut < 0 ? "." : path.slice(0, cut);
  }
  const model = dir === undefined ? await LlamaLM.fromLlama2c(path, options) : await loadHf(dir, options);
  await checkFinite(namedParameters(model), {
    what: `model "${path}"`,
    hint: "The file is damaged or holds the weights of a diverged run; use an intact copy",
  });
  return model;
}
