/**
 * Autoregressive sampling from a {@link LlamaLM} with a key/value cache: the prompt is processed in one
 * forward pass, then each new token costs one single-position pass and one readback (its logits row).
 * Greedy decoding (temperature 0), temperature sampling and nucleus (top-p) sampling, all seeded.
 *
 * @module
 */
import { randUniform, seed32 } from "../ir/rng.ts";
import { tensor } from "../tensor/creation.ts";
import type { Shape } from "../shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { LlamaLM } from "./llama.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

const GENERATE_OPTIONS = z.object({
  steps: opt.index(),
  temperature: opt.nonNegative().optional(),
  seed: opt.seed().optional(),
  topP: z.number().gt(0).max(1).optional(),
  repetitionPenalty: opt.positive().optional(),
  stop: z.array(opt.index()).optional(),
  onToken: opt.fn().optional(),
}).strict();

const SAMPLE_TOKEN_OPTIONS = z.object({
  temperature: opt.nonNegative(),
  topP: z.number().gt(0).max(1).optional(),
  u: z.number().min(0).lt(1),
}).strict();

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** Number of tokens to generate (fewer when a stop token comes first or the context is full). */
  steps: number;
  /** Softmax temperature; 0 (default) picks the most likely token (ties: the lowest id). */
  temperature?: number;
  /** Seed of the sampling draws (default 0; unused when greedy). */
  seed?: number;
  /** Nucleus sampling: sample among the most likely tokens whose probabilities sum to at least `topP` (default 1). */
  topP?: number;
  /**
   * transformers' `repetition_penalty` (default 1: none): before each choice, the logit of every token already in
   * the prompt or the output is divided by it where positive and multiplied by it where negative.
   */
  repetitionPenalty?: number;
  /**
   * Token ids that end the generation, each in `0..vocabSize - 1`; the stop token itself is not returned
   * (default: none).
   */
  stop?: readonly number[];
  /** Called with each generated token as soon as it is known (for streaming). */
  onToken?: (id: number) => void;
}

/** Options of {@link sampleToken}. */
export interface SampleTokenOptions {
  /** Softmax temperature; 0 gives the argmax. */
  temperature: number;
  /** Nucleus threshold in (0, 1] (default 1). */
  topP?: number;
  /** A uniform draw in [0, 1) (unused when greedy). */
  u: number;
}

/**
 * The index of the largest value: the first one on ties, and the first NaN where there is one (as `Tensor.argmax`
 * and PyTorch).
 *
 * @example
 * ```ts
 * import { argmax } from "./sample.ts";
 * argmax(new Float32Array([0.1, 3, 3, -1])); // 1
 * ```
 */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 0; i < values.length; i++) {
    if (Number.isNaN(values[i])) return i;
    if (values[i] > values[best]) best = i;
  }
  return best;
}

/**
 * Draws a token from a row of logits: the argmax when `temperature` is 0; otherwise from
 * `softmax(logits / temperature)`, restricted with `topP < 1` to the smallest set of most likely tokens whose
 * probability reaches `topP` (renormalised), by inverting the cumulative distribution at `u`.
 *
 * @example
 * ```ts
 * import { sampleToken } from "./sample.ts";
 * const logits = new Float32Array([2, 1, 0]);
 * sampleToken(logits, { temperature: 0, u: 0.5 }); // 0
 * sampleToken(logits, { temperature: 1, u: 0.99 }); // 2
 * sampleToken(logits, { temperature: 1, topP: 0.5, u: 0.99 }); // 0
 * ```
 */
export function sampleToken(logits: ArrayLike<number>, options: SampleTokenOptions): number {
  // u is checked even when greedy: outside [0, 1) it is a caller's bug, and NaN or 1.5 would pick the last token.
  // An unknown key (`topp`) is refused: it would sample from the whole distribution.
  checkOptions("sampleToken", SAMPLE_TOKEN_OPTIONS, options);
  const { temperature, u } = options;
  const topP = options.topP ?? 1;
  // A NaN or +∞ logit, or none above −∞, leaves no distribution to draw from (and no meaningful argmax).
  const bad = Array.prototype.findIndex.call(logits, (v: number) => Number.isNaN(v) || v === Infinity);
  if (bad >= 0 || !Array.prototype.some.call(logits, (v: number) => v > -Infinity)) {
    const what = bad >= 0
      ? `logit ${bad} of ${logits.length} is ${logits[bad]}`
      : `all ${logits.length} logits are -Infinity`;
    throw new RangeError(`sampleToken: ${what}; the model's output is not a distribution`);
  }
  if (temperature === 0) return argmax(logits);
  const n = logits.length;
  const m = logits[argmax(logits)];
  const p = new Float64Array(n);
  let z = 0;
  for (let i = 0; i < n; i++) {
    p[i] = Math.exp((logits[i] - m) / temperature);
    z += p[i];
  }
  let order: number[];
  let mass: number;
  if (topP < 1) {
    order = Array.from({ length: n }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
    let cum = 0;
    let keep = 0;
    while (keep < n) {
      cum += p[order[keep]];
      keep++;
      if (cum >= topP * z) break;
    }
    order = order.slice(0, keep);
    mass = cum;
  } else {
    order = Array.from({ length: n }, (_, i) => i);
    mass = z;
  }
  const target = u * mass;
  let cum = 0;
  for (const i of order) {
    cum += p[i];
    if (target < cum) return i;
  }
  return order[order.length - 1];
}

/**
 * Continues `promptTokens` (ids, usually starting with BOS) by up to `steps` tokens and returns the new ids
 * (not the prompt). Uses a key/value cache of `prompt + steps − 1` positions rounded up to a power of two (at most
 * the context length; generation stops when the context is full), and feeds the prompt padded to a power of two:
 * kernels are compiled per shape and, on WebGPU, kept for the life of the process, so calls with prompts and
 * lengths of every size share the kernels of a few sizes. One readback per generated token.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "../io/tokenizer.ts";
 * import { LlamaLM } from "./llama.ts";
 * import { generate } from "./sample.ts";
 * const model = await LlamaLM.fromLlama2c("../shared/data/models/stories260K/stories260K.bin");
 * const tok = await Tokenizer.load("../shared/data/models/stories260K/tok512.bin");
 * const ids = await generate(model, tok.encode(""), { steps: 20 }); // greedy
 * console.log(tok.decode(ids)); // "Once upon a time, there was a little girl named Lily. ..."
 * ```
 */
export async function generate(
  model: LlamaLM,
  promptTokens: readonly number[],
  options: GenerateOptions,
): Promise<number[]> {
  checkOptions("generate", GENERATE_OPTIONS, options);
  const { steps } = options;
  const temperature = options.temperature ?? 0;
  const seed = options.seed ?? 0;
  const topP = options.topP ?? 1;
  const { seqLen, vocabSize } = model.config;
  if (promptTokens.length === 0) {
    throw new RangeError("generate: the prompt needs at least one token (e.g. BOS)");
  }
  if (promptTokens.length > seqLen) {
    throw new RangeError(
      `generate: the prompt has ${promptTokens.length} tokens, more than the context ${seqLen}`,
    );
  }
  for (const id of promptTokens) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new RangeError(`generate: prompt token ${id} is not an id in 0..${vocabSize - 1}`);
    }
  }
  // A stop id outside the vocabulary is never drawn, so it would silently stop nothing.
  const outside = (options.stop ?? []).find((id) => id >= vocabSize);
  if (outside !== undefined) {
    const ids = `ids 0..${vocabSize - 1}`;
    throw new RangeError(
      `generate: stop token ${outside} is not an id of the vocabulary (size ${vocabSize}, ${ids})`,
    );
  }
  // Validates temperature and topP before any GPU work.
  sampleToken([0], { temperature, topP, u: 0 });
  const stop = new Set(options.stop ?? []);
  // torch computes in float32, the penalty rounded to it.
  const penalty = Math.fround(options.repetitionPenalty ?? 1);
  const seen = new Set(promptTokens);
  const out: number[] = [];
  const budget = Math.min(steps, seqLen - promptTokens.length + 1);
  if (budget <= 0) return out;
  // The last generated token is never fed back, so the cache needs prompt + budget − 1 positions. Kernels are
  // specialised to the cache's capacity and the prompt's length, and compiled ones are kept for the life of the
  // process (on WebGPU), so both are rounded up to a power of two: calls with other prompts and lengths reuse a
  // few sets of kernels. The slots beyond the current position are masked and the prompt's padding comes after
  // it, so the logits are those of the exact sizes: bit for bit on cpu and WebGPU; on wasm a padded prompt's last
  // row goes through the matmul in another block, which moved logits of stories260K by up to 1.3e-5.
  const prompt = promptTokens.length;
  const cache = model.createCache({ capacity: lengthBucket(prompt + budget - 1, seqLen) });
  const padded = lengthBucket(prompt, cache.capacity);
  const first = Int32Array.from({ length: padded }, (_, j) => promptTokens[Math.min(j, prompt - 1)]);
  const device = model.device;
  let input = tensor(first, { shape: [1, padded], dtype: "i32", device });
  for (let i = 0; i < budget; i++) {
    const valid = i === 0 ? prompt : 1;
    const logits = model.forwardCached(input as Tensor<Shape, "i32">, cache, { lastOnly: true, valid });
    await cache.realize(logits);
    const row = await logits.data() as Float32Array;
    logits.dispose();
    if (penalty !== 1) {
      // As transformers' RepetitionPenaltyLogitsProcessor, in float32: each id seen counts once.
      for (const id of seen) row[id] = row[id] < 0 ? row[id] * penalty : row[id] / penalty;
    }
    const next = sampleToken(row, { temperature, topP, u: randUniform(seed32(seed, "generate"), i) });
    if (stop.has(next)) break;
    out.push(next);
    seen.add(next);
    options.onToken?.(next);
    if (i + 1 < budget) input = tensor(Int32Array.of(next), { shape: [1, 1], dtype: "i32", device });
  }
  return out;
}

/** `n` rounded up to a power of two, at most `max` (the sizes {@link generate} compiles its kernels for). */
function lengthBucket(n: number, max: number): number {
  return Math.min(max, 2 ** Math.ceil(Math.log2(Math.max(1, n))));
}
