/**
 * File formats on plain typed arrays (no tensor code): atomic writes, JSON and JSON-lines files, safetensors,
 * llama2.c checkpoints, the llama2.c tokenizer and Hugging Face `tokenizer.json` tokenizers behind one interface
 * ({@link loadTokenizer}).
 *
 * @example
 * ```ts
 * import { readLlama2c, Tokenizer } from "./mod.ts";
 * const { config, weights } = await readLlama2c("../shared/data/models/stories260K/stories260K.bin");
 * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
 * tok.encode("Once upon a time"); // [1, ...]
 * ```
 *
 * @module
 */

export {
  removeTemporaries,
  type RemoveTemporariesOptions,
  temporaryOwner,
  temporaryPath,
  writeFileAtomic,
  writeFileAtomicSync,
  writeTextFileAtomic,
} from "./atomic.ts";
export {
  type MetricRecord,
  MetricsWriter,
  type MetricsWriterOptions,
  readJsonl,
  toJson,
  writeJsonAtomic,
} from "./json.ts";
export { type NamedPath, refuseOutputOnInput } from "./paths.ts";
export {
  decodeBf16,
  decodeF16,
  encodeBf16,
  encodeF16,
  isStDType,
  openSafetensors,
  parseSafetensors,
  type ParseSafetensorsOptions,
  readSafetensors,
  type Safetensors,
  type SafetensorsFile,
  serializeSafetensors,
  ST_DTYPE_BYTES,
  type StData,
  type StDType,
  type StEntry,
  type StSpec,
  toFloat32,
  toInt32,
  writeSafetensors,
} from "./safetensors.ts";
export {
  type Llama2cCheckpoint,
  type Llama2cConfig,
  llama2cLayout,
  type Llama2cLayoutEntry,
  type Llama2cWeight,
  parseLlama2c,
  readLlama2c,
  serializeLlama2c,
  type SerializeLlama2cOptions,
  writeLlama2c,
} from "./llama2c.ts";
export {
  basePieces,
  BOS_ID,
  type EncodeOptions,
  EOS_ID,
  serializeTokenizer,
  Tokenizer,
  type TokenPiece,
  type TokenStreamDecoder,
  UNK_ID,
  writeTokenizer,
} from "./tokenizer.ts";
export { HfTokenizer, type HfTokenizerOptions } from "./hf_tokenizer.ts";
export type { TextDecodeOptions, TextEncodeOptions, TextTokenizer } from "./text_tokenizer.ts";
export { checkTokenizerFits, loadTokenizer, modelTokenizerPath } from "./load_tokenizer.ts";
