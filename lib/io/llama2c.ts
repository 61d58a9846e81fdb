/**
 * Reader and writer for llama2.c checkpoints in the legacy "version 0" layout (the format of
 * `stories260K.bin`, `stories15M.bin`, ...):
 *
 * - a 28-byte header of 7 little-endian int32: `dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 *   vocab_size, seq_len`; a negative `vocab_size` means the output classifier is stored separately
 *   (untied), a positive one that it is shared with the token embedding;
 * - then float32 arrays, each grouped over all layers: `tok_embeddings [vocab, dim]`,
 *   `rms_att [L, dim]`, `wq [L, dim, dim]`, `wk [L, kvDim, dim]`, `wv [L, kvDim, dim]`,
 *   `wo [L, dim, dim]`, `rms_ffn [L, dim]`, `w1 [L, hidden, dim]`, `w2 [L, dim, hidden]`,
 *   `w3 [L, hidden, dim]`, `rms_final [dim]`, optionally `freq_cis_real [seq_len, head_size/2]` and
 *   `freq_cis_imag [seq_len, head_size/2]`, and `wcls [vocab, dim]` when the classifier is untied.
 *
 * Matrices are `[out, in]`, row-major (a layer computes `y = W·x`). Weights are returned under the
 * tessera names (`tok_embeddings.weight`, `layers.{i}.attention.wq.weight`, ...; see
 * {@link llama2cLayout}).
 *
 * @module
 */

import { writeFileAtomic } from "./atomic.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";

/** Hyper-parameters stored in a llama2.c checkpoint header. */
export type Llama2cConfig = {
  /** Model width. */
  dim: number;
  /** FFN hidden width. */
  hiddenDim: number;
  /** Number of transformer blocks. */
  nLayers: number;
  /** Number of query heads. */
  nHeads: number;
  /** Number of key/value heads (grouped-query attention when fewer than `nHeads`). */
  nKvHeads: number;
  /** Vocabulary size (always positive here; the sign on disk is `sharedClassifier`). */
  vocabSize: number;
  /** Maximum sequence length the model was trained with. */
  seqLen: number;
  /** True when the output classifier is the token embedding matrix (no `output.weight`). */
  sharedClassifier: boolean;
};

/** One float32 weight and its shape. */
export type Llama2cWeight = { shape: number[]; data: Float32Array };

/** What {@link parseLlama2c} returns. */
export type Llama2cCheckpoint = {
  /** Header values. */
  config: Llama2cConfig;
  /** Weights by tessera name, in file order. All `data` arrays are views into one shared buffer. */
  weights: Map<string, Llama2cWeight>;
  /**
   * The precomputed RoPE tables, shape `[seqLen, headSize / 2]`, when the file contains them
   * (`real[t, i] = cos(t·θ_i)`, `imag[t, i] = sin(t·θ_i)`, `θ_i = 10000^(-2i/headSize)`).
   */
  freqCis?: { real: Float32Array; imag: Float32Array; shape: [number, number] };
};

/** Options for {@link serializeLlama2c}. */
export type SerializeLlama2cOptions = {
  /** Write the `freq_cis_real`/`freq_cis_imag` tables (RoPE, θ = 10000) like llama2.c's legacy export (default true). */
  freqCis?: boolean;
};

const SERIALIZE_OPTIONS = z.object({ freqCis: z.boolean() }).partial().strict();
const HEADER_BYTES = 28;
/** First four bytes of llama2.c's newer (version 1/2) exports: "ak42" as a little-endian uint32. */
const NEW_FORMAT_MAGIC = 0x616b3432;

/** One tensor of the file layout: its tessera name and shape. */
export type Llama2cLayoutEntry = { name: string; shape: number[] };

/** Head size and key/value width derived from a config. */
function derived(config: Llama2cConfig): { headSize: number; kvDim: number } {
  const headSize = config.dim / config.nHeads;
  return { headSize, kvDim: headSize * config.nKvHeads };
}

/**
 * The weights of a v0 checkpoint in file order (without the freq_cis tables), with tessera names and
 * shapes. `output.weight` is listed last, and only when the classifier is not shared.
 *
 * @example
 * ```ts
 * import { llama2cLayout } from "./llama2c.ts";
 * const layout = llama2cLayout({
 *   dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512,
 *   sharedClassifier: true,
 * });
 * layout[0]; // { name: "tok_embeddings.weight", shape: [512, 64] }
 * ```
 */
export function llama2cLayout(config: Llama2cConfig): Llama2cLayoutEntry[] {
  const { dim, hiddenDim, nLayers, vocabSize } = config;
  const { kvDim } = derived(config);
  const out: Llama2cLayoutEntry[] = [{ name: "tok_embeddings.weight", shape: [vocabSize, dim] }];
  const perLayer = (suffix: string, shape: number[]) => {
    for (let i = 0; i < nLayers; i++) out.push({ name: `layers.${i}.${suffix}`, shape });
  };
  perLayer("attention_norm.weight", [dim]);
  perLayer("attention.wq.weight", [dim, dim]);
  perLayer("attention.wk.weight", [kvDim, dim]);
  perLayer("attention.wv.weight", [kvDim, dim]);
  perLayer("attention.wo.weight", [dim, dim]);
  perLayer("ffn_norm.weight", [dim]);
  perLayer("feed_forward.w1.weight", [hiddenDim, dim]);
  perLayer("feed_forward.w2.weight", [dim, hiddenDim]);
  perLayer("feed_forward.w3.weight", [hiddenDim, dim]);
  out.push({ name: "norm.weight", shape: [dim] });
  if (!config.sharedClassifier) out.push({ name: "output.weight", shape: [vocabSize, dim] });
  return out;
}

/** Throw if the config is not a consistent Llama shape. */
function checkConfig(config: Llama2cConfig, where: string): void {
  const fields = ["dim", "hiddenDim", "nLayers", "nHeads", "nKvHeads", "vocabSize", "seqLen"] as const;
  for (const field of fields) {
    const v = config[field];
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new Error(`${where}: ${field} must be a positive integer, found ${v}`);
    }
  }
  if (config.dim % config.nHeads !== 0) {
    throw new Error(`${where}: dim ${config.dim} is not divisible by nHeads ${config.nHeads}`);
  }
  if (config.nHeads % config.nKvHeads !== 0) {
    throw new Error(`${where}: nHeads ${config.nHeads} is not divisible by nKvHeads ${config.nKvHeads}`);
  }
}

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Parse the bytes of a v0 llama2.c checkpoint. The file size must match the header exactly, either
 * with or without the freq_cis tables; otherwise the error names `source` and both expected sizes.
 *
 * @param bytes The whole file.
 * @param source Name used in error messages (the path, usually).
 *
 * @example
 * ```ts
 * import { parseLlama2c } from "./llama2c.ts";
 * const bytes = await Deno.readFile("../shared/data/models/stories260K/stories260K.bin");
 * const { config, weights } = parseLlama2c(bytes, "stories260K.bin");
 * weights.get("layers.0.attention.wk.weight")!.shape; // [32, 64]
 * ```
 */
export function parseLlama2c(bytes: Uint8Array, source = "<bytes>"): Llama2cCheckpoint {
  const where = `llama2.c checkpoint "${source}"`;
  if (bytes.length < HEADER_BYTES) {
    throw new Error(`${where} has ${bytes.length} bytes, fewer than the ${HEADER_BYTES}-byte header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) === NEW_FORMAT_MAGIC) {
    throw new Error(
      `${where} is a newer llama2.c export (magic "ak42", version ${
        view.getInt32(4, true)
      }); only the legacy version-0 layout is supported (export with --version 0)`,
    );
  }
  const h = Array.from({ length: 7 }, (_, i) => view.getInt32(4 * i, true));
  const config: Llama2cConfig = {
    dim: h[0],
    hiddenDim: h[1],
    nLayers: h[2],
    nHeads: h[3],
    nKvHeads: h[4],
    vocabSize: Math.abs(h[5]),
    seqLen: h[6],
    sharedClassifier: h[5] > 0,
  };
  checkConfig(config, `${where} has an invalid header [${h.join(", ")}]`);
  const { headSize } = derived(config);
  // The sizes come from the layout of no layer and of one, before the whole list of weights is built: a header of a
  // few bytes may declare billions of layers, and the file's size then refuses it at once.
  const floatsWith = (nLayers: number) =>
    llama2cLayout({ ...config, nLayers, sharedClassifier: true }).reduce((a, e) => a + count(e.shape), 0);
  const fixedFloats = floatsWith(0);
  const bodyFloats = fixedFloats + config.nLayers * (floatsWith(1) - fixedFloats);
  const freqFloats = 2 * config.seqLen * Math.floor(headSize / 2);
  const clsFloats = config.sharedClassifier ? 0 : config.vocabSize * config.dim;
  const withoutFreq = HEADER_BYTES + 4 * (bodyFloats + clsFloats);
  const withFreq = withoutFreq + 4 * freqFloats;
  let hasFreq: boolean;
  if (bytes.length === withFreq) hasFreq = true;
  else if (bytes.length === withoutFreq) hasFreq = false;
  else {
    throw new Error(
      `${where} has ${bytes.length} bytes, but its header (dim=${config.dim}, hidden_dim=${config.hiddenDim}, n_layers=${config.nLayers}, n_heads=${config.nHeads}, n_kv_heads=${config.nKvHeads}, vocab_size=${
        h[5]
      }, seq_len=${config.seqLen}) requires ${withFreq} bytes (with freq_cis tables) or ${withoutFreq} bytes (without)`,
    );
  }
  const body = llama2cLayout(config).filter((e) => e.name !== "output.weight");

  const totalFloats = (bytes.length - HEADER_BYTES) / 4;
  const all = new Float32Array(totalFloats);
  for (let i = 0; i < totalFloats; i++) all[i] = view.getFloat32(HEADER_BYTES + 4 * i, true);

  const weights = new Map<string, Llama2cWeight>();
  let at = 0;
  const take = (n: number) => {
    const slice = all.subarray(at, at + n);
    at += n;
    return slice;
  };
  for (const entry of body) weights.set(entry.name, { shape: entry.shape, data: take(count(entry.shape)) });
  let freqCis: Llama2cCheckpoint["freqCis"];
  if (hasFreq) {
    const half = Math.floor(headSize / 2);
    const real = take(config.seqLen * half);
    const imag = take(config.seqLen * half);
    freqCis = { real, imag, shape: [config.seqLen, half] };
  }
  if (!config.sharedClassifier) {
    weights.set("output.weight", { shape: [config.vocabSize, config.dim], data: take(clsFloats) });
  }
  return freqCis === undefined ? { config, weights } : { config, weights, freqCis };
}

/**
 * Read and parse a v0 llama2.c checkpoint file (see {@link parseLlama2c}).
 *
 * @example
 * ```ts
 * import { readLlama2c } from "./llama2c.ts";
 * const { config } = await readLlama2c("../shared/data/models/stories260K/stories260K.bin");
 * config.nKvHeads; // 4
 * ```
 */
export async function readLlama2c(path: string): Promise<Llama2cCheckpoint> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot read llama2.c checkpoint "${path}": ${reason}`, { cause: err });
  }
  return parseLlama2c(bytes, path);
}

/**
 * RoPE tables as llama2.c's legacy export writes them: `real[t, i] = cos(t·θ_i)`,
 * `imag[t, i] = sin(t·θ_i)` with `θ_i = 10000^(-2i/headSize)`, shape `[seqLen, headSize/2]`.
 */
function ropeTables(seqLen: number, headSize: number): { real: Float32Array; imag: Float32Array } {
  const half = Math.floor(headSize / 2);
  const real = new Float32Array(seqLen * half);
  const imag = new Float32Array(seqLen * half);
  for (let i = 0; i < half; i++) {
    const theta = 1 / Math.pow(10000, (2 * i) / headSize);
    for (let t = 0; t < seqLen; t++) {
      real[t * half + i] = Math.cos(t * theta);
      imag[t * half + i] = Math.sin(t * theta);
    }
  }
  return { real, imag };
}

/**
 * Serialise a model to the v0 llama2.c layout. Every weight of {@link llama2cLayout} must be present
 * with exactly its shape; unknown names are rejected (so a typo cannot silently drop a weight).
 *
 * @param config Model hyper-parameters; `sharedClassifier` decides the sign of `vocab_size` on disk and
 *   whether `output.weight` is required.
 * @param weights Weights by tessera name.
 * @param options See {@link SerializeLlama2cOptions}.
 *
 * @example
 * ```ts
 * import { llama2cLayout, serializeLlama2c } from "./llama2c.ts";
 * const config = {
 *   dim: 8, hiddenDim: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, vocabSize: 10, seqLen: 4,
 *   sharedClassifier: true,
 * };
 * const weights = new Map(llama2cLayout(config).map(({ name, shape }) => [
 *   name,
 *   { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5) },
 * ]));
 * const bytes = serializeLlama2c(config, weights);
 * ```
 */
export function serializeLlama2c(
  config: Llama2cConfig,
  weights: Map<string, Llama2cWeight> | Record<string, Llama2cWeight>,
  options: SerializeLlama2cOptions = {},
): Uint8Array {
  checkOptions("serializeLlama2c", SERIALIZE_OPTIONS, options);
  const where = "cannot serialize llama2.c checkpoint";
  checkConfig(config, `${where}: config`);
  const map = weights instanceof Map ? weights : new Map(Object.entries(weights));
  const layout = llama2cLayout(config);
  const known = new Set(layout.map((e) => e.name));
  for (const name of map.keys()) {
    if (!known.has(name)) {
      const hint = name === "output.weight"
        ? " (config.sharedClassifier is true, so the classifier is the embedding)"
        : "";
      throw new Error(`${where}: unexpected weight "${name}"${hint}`);
    }
  }
  for (const { name, shape } of layout) {
    const w = map.get(name);
    if (w === undefined) throw new Error(`${where}: weight "${name}" [${shape.join(", ")}] is missing`);
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
      throw new Error(
        `${where}: weight "${name}" has shape [${w.shape.join(", ")}], expected [${shape.join(", ")}]`,
      );
    }
    if (w.data.length !== count(shape)) {
      throw new Error(`${where}: weight "${name}" has ${w.data.length} values, expected ${count(shape)}`);
    }
  }
  const { headSize } = derived(config);
  const freq = (options.freqCis ?? true) ? ropeTables(config.seqLen, headSize) : undefined;
  const body = layout.filter((e) => e.name !== "output.weight");
  let floats = body.reduce((a, e) => a + count(e.shape), 0);
  if (freq !== undefined) floats += freq.real.length + freq.imag.length;
  if (!config.sharedClassifier) floats += config.vocabSize * config.dim;

  const out = new Uint8Array(HEADER_BYTES + 4 * floats);
  const view = new DataView(out.buffer);
  const header = [
    config.dim,
    config.hiddenDim,
    config.nLayers,
    config.nHeads,
    config.nKvHeads,
    config.sharedClassifier ? config.vocabSize : -config.vocabSize,
    config.seqLen,
  ];
  header.forEach((v, i) => view.setInt32(4 * i, v, true));
  let at = HEADER_BYTES;
  const put = (data: ArrayLike<number>) => {
    for (let i = 0; i < data.length; i++, at += 4) view.setFloat32(at, data[i], true);
  };
  for (const { name } of body) put(map.get(name)!.data);
  if (freq !== undefined) {
    put(freq.real);
    put(freq.imag);
  }
  if (!config.sharedClassifier) put(map.get("output.weight")!.data);
  return out;
}

/**
 * Write a model as a v0 llama2.c checkpoint (with freq_cis tables, like llama2.c's legacy export),
 * atomically. See {@link serializeLlama2c} for the checks.
 *
 * @example
 * ```ts
 * import { readLlama2c, writeLlama2c } from "./llama2c.ts";
 * const { config, weights } = await readLlama2c("../shared/data/models/stories260K/stories260K.bin");
 * await writeLlama2c(`${await Deno.makeTempDir()}/copy.bin`, config, weights);
 * ```
 */
export async function writeLlama2c(
  path: string,
  config: Llama2cConfig,
  weights: Map<string, Llama2cWeight> | Record<string, Llama2cWeight>,
): Promise<void> {
  await writeFileAtomic(path, serializeLlama2c(config, weights));
}
