/**
 * Causal multi-head self-attention with grouped key/value heads (GQA) and rotary position embeddings, with
 * Llama-2 / llama2.c semantics: RoPE with theta 1e4 rotates the interleaved pairs `(2i, 2i+1)` inside each head
 * by `pos · theta^(−2i/head_dim)`; query head `h` attends with key/value head `⌊h / (n_heads / n_kv_heads)⌋`;
 * scores are scaled by `1/√head_dim` and causally masked before the softmax. A layer with a sliding `window` `W`
 * (Mistral, Qwen2's sliding layers) lets each query see only the last `W` positions up to its own, itself included:
 * key `j` is visible to query `i` when `i − W < j ≤ i`, transformers' `kv_idx > q_idx − sliding_window`.
 *
 * @module
 */
import { z } from "../../deps.ts";
import type { DeviceName, Node } from "../ir/node.ts";
import { checkOptions, checkSize, opt, OptionsError, refuseWithLayers } from "../options.ts";
import type { Shape } from "../shape.ts";
import { arange, tensor } from "../tensor/creation.ts";
import { Tensor } from "../tensor/tensor.ts";
import { Op } from "../ir/ops.ts";
import { deriveSeed } from "./init.ts";
import { customVjp } from "../autodiff/grad.ts";
import { customKernel } from "../tensor/custom.ts";
import { LOOP_BUDGET } from "../codegen/split_loops.ts";
import { type AttentionPass, attentionWasm } from "../codegen/wasm_attention.ts";
import {
  attentionBackwardKeyValue,
  attentionBackwardQuery,
  type AttentionDims,
  attentionForward,
  type AttentionKernel,
  attentionUnfit,
} from "../../kernels/attention.wgsl.ts";
import { type F32, Linear, type LinearLayer } from "./linear.ts";
import { Module } from "./module.ts";
import { RMSNorm } from "./norm.ts";

/** Cosines and sines of the rotary angles, each `[length, headDim / 2]`. */
export interface RopeTables {
  /** `cos(pos · θ_i)`, `[length, headDim / 2]`. */
  readonly cos: F32;
  /** `sin(pos · θ_i)`, `[length, headDim / 2]`. */
  readonly sin: F32;
}

/**
 * How the rotary frequencies are rescaled for long contexts, as `transformers` computes them (`rope_type` in a
 * Hugging Face config): `linear` divides every frequency by `factor`; `llama3` (Llama 3.1+) divides the low
 * frequencies (wavelength above `originalMaxPositionEmbeddings / lowFreqFactor`) by `factor`, keeps the high ones
 * (wavelength below `originalMaxPositionEmbeddings / highFreqFactor`) and interpolates in between; `yarn` (YaRN,
 * Peng et al. 2023, arXiv:2309.00071) blends `θ_i / factor` and `θ_i` by a linear ramp over the pair index between
 * the dimensions where a frequency turns `betaFast` and `betaSlow` times over `originalMaxPositionEmbeddings`
 * positions, and scales the cosines and sines by an attention factor ({@link ropeAttentionFactor}); `dynamic`
 * (dynamic NTK) raises the base to `theta·(factor·L/L − (factor − 1))^(headDim/(headDim − 2))` with
 * `L = maxPositionEmbeddings`, which is what `transformers` uses for every sequence of at most `L` positions (the
 * only ones a model with `seqLen <= L` runs; beyond `L` it would recompute them per sequence length).
 */
export type RopeScaling =
  | { readonly type: "linear"; readonly factor: number }
  | {
    readonly type: "llama3";
    readonly factor: number;
    readonly lowFreqFactor: number;
    readonly highFreqFactor: number;
    readonly originalMaxPositionEmbeddings: number;
  }
  | {
    readonly type: "yarn";
    readonly factor: number;
    readonly originalMaxPositionEmbeddings: number;
    /** Rotations over the original context below which a frequency is interpolated in full (default 32). */
    readonly betaFast?: number;
    /** Rotations over the original context above which a frequency is kept (default 1). */
    readonly betaSlow?: number;
    /** Round the ramp's ends outwards to whole dimensions (default true). */
    readonly truncate?: boolean;
    /** Factor on cos and sin (default `0.1·ln(factor) + 1`, or 1 when `factor <= 1`). */
    readonly attentionFactor?: number;
  }
  | { readonly type: "dynamic"; readonly factor: number; readonly maxPositionEmbeddings: number };

const ROPE_SCALING = z.discriminatedUnion("type", [
  z.object({ type: z.literal("linear"), factor: opt.positive() }).strict(),
  z.object({
    type: z.literal("llama3"),
    factor: opt.positive(),
    lowFreqFactor: opt.positive(),
    highFreqFactor: opt.positive(),
    originalMaxPositionEmbeddings: opt.positive(),
  }).strict(),
  z.object({
    type: z.literal("yarn"),
    factor: opt.positive(),
    originalMaxPositionEmbeddings: opt.positive(),
    betaFast: opt.positive().optional(),
    betaSlow: opt.positive().optional(),
    truncate: z.boolean().optional(),
    attentionFactor: opt.nonNegative().optional(),
  }).strict(),
  z.object({ type: z.literal("dynamic"), factor: opt.positive(), maxPositionEmbeddings: opt.positive() })
    .strict(),
]);
const ROPE_TABLES = z.object({ cos: opt.tensor(), sin: opt.tensor() });
const ROPE_TABLE_OPTIONS = z.object({
  theta: opt.positive().optional(),
  scaling: ROPE_SCALING.optional(),
  start: opt.index().optional(),
  device: opt.device().optional(),
}).strict();
const CAUSAL_ATTENTION_OPTIONS = z.object({
  scale: opt.number().optional(),
  causal: z.boolean().optional(),
  window: opt.count().optional(),
  fused: z.boolean().optional(),
  rope: ROPE_TABLES.optional(),
}).strict();
const ATTENTION_OPTIONS = z.object({
  nHeads: opt.count(),
  nKvHeads: opt.count().optional(),
  headDim: opt.count().optional(),
  rope: z.boolean().optional(),
  ropeTheta: opt.positive().optional(),
  bias: z.boolean().optional(),
  qkNorm: z.boolean().optional(),
  normEps: opt.nonNegative().optional(),
  window: opt.count().optional(),
  seed: opt.seed().optional(),
  device: opt.device().optional(),
  layers: z.object({
    wq: opt.object(),
    wk: opt.object(),
    wv: opt.object(),
    wo: opt.object(),
    q_norm: opt.object().optional(),
    k_norm: opt.object().optional(),
  }).strict().optional(),
}).strict();
const ATTENTION_FORWARD_OPTIONS = z.object({ start: opt.index().optional(), rope: ROPE_TABLES.optional() })
  .strict();

/**
 * The rotary inverse frequencies `θ_i = theta^(−2i/headDim)`, `i < headDim/2`, rescaled by `scaling`, rounded
 * step by step to float32 as `transformers` (and llama2.c's `run.c`) compute them.
 *
 * @example
 * ```ts
 * import { ropeInverseFrequencies } from "./attention.ts";
 * ropeInverseFrequencies(4, 1e4); // Float64Array [1, 0.01]
 * ropeInverseFrequencies(4, 1e4, { type: "linear", factor: 2 }); // [0.5, 0.005]
 * ```
 */
export function ropeInverseFrequencies(headDim: number, theta = 1e4, scaling?: RopeScaling): Float64Array {
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
    throw new RangeError(`ropeInverseFrequencies: headDim must be an even integer >= 2, got ${headDim}`);
  }
  if (!(theta > 0) || !Number.isFinite(theta)) {
    throw new RangeError(`ropeInverseFrequencies: theta must be a positive number, got ${theta}`);
  }
  if (scaling !== undefined) checkOptions("ropeInverseFrequencies: scaling", ROPE_SCALING, scaling);
  const f = Math.fround;
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(f(theta) ** f((2 * i) / headDim)));
  if (scaling === undefined) return inv;
  if (!(scaling.factor > 0) || !Number.isFinite(scaling.factor)) {
    throw new RangeError(
      `ropeInverseFrequencies: scaling factor must be a positive number, got ${scaling.factor}`,
    );
  }
  if (scaling.type === "linear") return inv.map((x) => f(x / scaling.factor));
  if (scaling.type === "yarn") return yarnFrequencies(inv, headDim, theta, scaling);
  if (scaling.type === "dynamic") {
    if (headDim === 2) {
      throw new RangeError(
        "ropeInverseFrequencies: dynamic scaling needs headDim > 2 (its exponent is d/(d − 2))",
      );
    }
    const { factor, maxPositionEmbeddings: l } = scaling;
    return ropeInverseFrequencies(
      headDim,
      theta * ((factor * l / l) - (factor - 1)) ** (headDim / (headDim - 2)),
    );
  }
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: old } = scaling;
  if (!(high > low) || !(low > 0) || !(old > 0)) {
    throw new RangeError(
      `ropeInverseFrequencies: llama3 scaling needs highFreqFactor > lowFreqFactor > 0 and ` +
        `originalMaxPositionEmbeddings > 0, got ${high}, ${low}, ${old}`,
    );
  }
  const lowWavelen = old / low;
  const highWavelen = old / high;
  return inv.map((x) => {
    const wavelen = f(f(2 * Math.PI) / x);
    if (wavelen < highWavelen) return x;
    if (wavelen > lowWavelen) return f(x / factor);
    const smooth = f(f(f(old / wavelen) - low) / (high - low));
    return f(f(f(1 - smooth) * f(x / factor)) + f(smooth * x));
  });
}

/**
 * YaRN's frequencies as `transformers` computes them: with `d(r) = headDim·ln(L / (2π·r)) / (2·ln theta)` (the
 * dimension whose frequency turns `r` times over the original context `L`), `low = max(d(betaFast), 0)` and
 * `high = min(d(betaSlow), headDim − 1)` (rounded outwards when `truncate`), pair `i` keeps the fraction
 * `e_i = 1 − clamp((i − low) / (high − low), 0, 1)` of `θ_i` and takes the rest from `θ_i / factor`. The ramp runs
 * over the pair index with ends in dimensions, as the reference does.
 */
function yarnFrequencies(
  inv: Float64Array,
  headDim: number,
  theta: number,
  scaling: Extract<RopeScaling, { type: "yarn" }>,
): Float64Array {
  const f = Math.fround;
  const { factor, originalMaxPositionEmbeddings: old } = scaling;
  const betaFast = scaling.betaFast ?? 32;
  const betaSlow = scaling.betaSlow ?? 1;
  if (!(betaFast >= betaSlow)) {
    throw new RangeError(
      `ropeInverseFrequencies: yarn scaling needs betaFast >= betaSlow, got betaFast ${betaFast} and betaSlow ${betaSlow}`,
    );
  }
  const dimension = (rotations: number) =>
    (headDim * Math.log(old / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = dimension(betaFast);
  let high = dimension(betaSlow);
  if (scaling.truncate ?? true) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, headDim - 1);
  if (low === high) high += 0.001; // the reference's guard against a zero-width ramp
  const width = f(high - low);
  return inv.map((x, i) => {
    const position = f(f(theta) ** f((2 * i) / headDim));
    const interpolated = f(1 / f(f(factor) * position));
    const ramp = Math.min(Math.max(f(f(i - f(low)) / width), 0), 1);
    const kept = f(1 - ramp);
    return f(f(interpolated * f(1 - kept)) + f(x * kept));
  });
}

/**
 * The factor on the rotary cosines and sines: YaRN's attention factor (`attentionFactor`, else
 * `0.1·ln(factor) + 1` for `factor > 1`), 1 for the other scalings. It multiplies both q and k, so the attention
 * logits grow by its square.
 *
 * @example
 * ```ts
 * import { ropeAttentionFactor } from "./attention.ts";
 * ropeAttentionFactor({ type: "yarn", factor: 4, originalMaxPositionEmbeddings: 32 }); // 1.138629436111989
 * ropeAttentionFactor(undefined); // 1
 * ```
 */
export function ropeAttentionFactor(scaling: RopeScaling | undefined): number {
  if (scaling?.type !== "yarn") return 1;
  if (scaling.attentionFactor !== undefined) return scaling.attentionFactor;
  return scaling.factor <= 1 ? 1 : 0.1 * Math.log(scaling.factor) + 1;
}

/** Options of {@link ropeTables}. */
export interface RopeTableOptions {
  /** Base of the frequencies (default 1e4, as Llama-2). */
  theta?: number;
  /** Long-context rescaling of the frequencies (default: none). */
  scaling?: RopeScaling;
  /** First position (default 0). */
  start?: number;
  /** Device of the tables (default: the default device). */
  device?: DeviceName;
}

/**
 * The rotary tables for positions `start .. start + length − 1`: entry `[p, i]` is `cos` / `sin` of
 * `(start + p) · θ_i` with the frequencies of {@link ropeInverseFrequencies}; the angle is rounded to float32
 * (as `transformers` and llama2.c compute it) and its cosine and sine taken in float64, then (YaRN only) rounded to
 * float32 and multiplied by {@link ropeAttentionFactor}.
 *
 * @example
 * ```ts
 * import { ropeTables } from "./attention.ts";
 * const { cos, sin } = ropeTables(8, 16); // each [16, 4]
 * ```
 */
export function ropeTables(headDim: number, length: number, opts: RopeTableOptions = {}): RopeTables {
  checkOptions("ropeTables", ROPE_TABLE_OPTIONS, opts);
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
    throw new RangeError(`ropeTables: headDim must be an even integer >= 2, got ${headDim}`);
  }
  const inv = ropeInverseFrequencies(headDim, opts.theta ?? 1e4, opts.scaling);
  const gain = Math.fround(ropeAttentionFactor(opts.scaling));
  const start = opts.start ?? 0;
  const half = headDim / 2;
  const c = new Float32Array(length * half);
  const s = new Float32Array(length * half);
  for (let p = 0; p < length; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround((start + p) * inv[i]);
      // Rounded to float32 before the attention factor (1 but for YaRN), as the reference scales its tables.
      c[p * half + i] = gain === 1 ? Math.cos(angle) : Math.fround(Math.cos(angle)) * gain;
      s[p * half + i] = gain === 1 ? Math.sin(angle) : Math.fround(Math.sin(angle)) * gain;
    }
  }
  const device = opts.device;
  return {
    cos: tensor(c, { shape: [length, half], device }) as F32,
    sin: tensor(s, { shape: [length, half], device }) as F32,
  };
}

/**
 * Rotates the interleaved pairs `(x[2i], x[2i+1])` of each head of `x` (`[batch, time, heads, headDim]`) by the
 * angles in `tables` (`[time, headDim / 2]`):
 * `(x₀ cos − x₁ sin, x₀ sin + x₁ cos)`.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { applyRope, ropeTables } from "./attention.ts";
 * const q = randn([2, 5, 4, 8], { seed: 0 });
 * const rotated = applyRope(q, ropeTables(8, 5)); // same shape
 * ```
 */
export function applyRope(x: F32, tables: RopeTables): Tensor<number[], "f32"> {
  if (x.ndim !== 4) {
    throw new RangeError(`applyRope: x must be [batch, time, heads, headDim], got [${x.shape.join(", ")}]`);
  }
  const [b, t, h, d] = x.shape;
  const half = d / 2;
  if (tables.cos.shape.join() !== `${t},${half}` || tables.sin.shape.join() !== `${t},${half}`) {
    throw new RangeError(
      `applyRope: tables must be [${t}, ${half}] for x [${x.shape.join(", ")}], got [${
        tables.cos.shape.join(", ")
      }]`,
    );
  }
  // With pairs p = (x₀, x₁) and their swap q = (x₁, x₀): y = p·(cos, cos) + q·(−sin, sin), all views and
  // elementwise ops, so the rotation fuses into its neighbours.
  const pairs = x.reshape([b, t, h, half, 2]) as F32;
  const swapped = pairs.slice(null, null, null, null, [null, null, -1]) as F32;
  const c = tables.cos.reshape([t, 1, half, 1]) as F32;
  const sign = arange(-1, 2, 2, { device: x.device }) as F32; // [-1, 1], a lazy constant
  const s = tables.sin.reshape([t, 1, half, 1]).mul(sign) as F32;
  return pairs.mul(c).add(swapped.mul(s)).reshape([b, t, h, d]) as Tensor<number[], "f32">;
}

/** Options of {@link causalAttention}. */
export interface CausalAttentionOptions {
  /** Score scale (default `1/√headDim`). */
  scale?: number;
  /** Mask future keys (default true). */
  causal?: boolean;
  /**
   * Sliding window (needs `causal`): query `i` (at position `S − T + i`) sees only the last `window` keys up to its
   * position, itself included (default: all of them). A window of at least `S` keys is full attention, and runs the
   * kernels without a window.
   */
  window?: number;
  /**
   * Use the fused attention kernels where the shapes allow (default true): scores, mask, softmax and weighted sum
   * in one pass per query row (`kernels/attention.wgsl.ts`), and two passes backward. `false` composes the same
   * math from primitives (matmuls and a softmax).
   */
  fused?: boolean;
  /**
   * Rotate `q` and `k` by RoPE first (tables `[S, headDim/2]`, rows by position: query `t` at `t + S − T`, key `s`
   * at `s`), as {@link applyRope} does. The fused kernels rotate inside (no kernels of their own, forward or
   * backward); needs `S = T` when causal.
   */
  rope?: RopeTables;
}

function spec(k: AttentionKernel, pass: AttentionPass, a: AttentionDims) {
  return {
    key: k.key,
    name: k.name,
    shape: [k.size],
    dtype: "f32" as const,
    wgsl: k.wgsl,
    dispatch: k.dispatch,
    host: k.host,
    // The wasm kernels rotate what they loop over once per sequence already, and keep the plain layout.
    ...(a.rotatedRows ? {} : {
      wasm: (features: { readonly relaxedSimd: boolean }) => attentionWasm(pass, a, features),
    }),
  };
}

/**
 * Whether a Shrink's elements, in row-major order, are the first elements of its source: it starts at 0 with step
 * 1 and cuts one axis, with only size-1 axes before it (`[6, 4]` to `[3, 4]`, not `[3, 8]` to `[3, 4]`).
 */
function shrinksToPrefix(n: Node): boolean {
  const { start, step } = n.argOf(Op.Shrink);
  if (start.some((x) => x !== 0) || step.some((x) => x !== 1)) return false;
  const from = n.src[0].shape;
  const cut = n.shape.findIndex((size, j) => size !== from[j]);
  return cut < 0 || from.every((size, j) => j === cut || (j < cut ? size === 1 : size === n.shape[j]));
}

/**
 * A RoPE table as the kernels read it: the stored table itself when the given one is its first rows (a prefix
 * view: no copy), else the given tensor.
 */
function tableInput(t: F32): F32 {
  // Down through reshapes and prefix shrinks, every view's elements in row-major order are the first ones of the
  // stored tensor, so with the stored width row p is stored row p. A column slice of a reshaped table is not such
  // a view ([6, 4] as [3, 8], first 4 columns: row p is stored row 2p), nor is any other view.
  let n = t.node;
  while (n.storage === null && (n.op === Op.Reshape || n.op === Op.Shrink)) {
    if (n.op === Op.Shrink && !shrinksToPrefix(n)) return t;
    n = n.src[0];
  }
  const [rows] = t.shape;
  const cols = t.shape[1];
  return n.storage !== null && n.shape.length === 2 && n.shape[1] === cols && n.shape[0] >= rows
    ? new Tensor(n) as F32
    : t;
}

/** {@link causalAttention} through the fused kernels; `q`, `k`, `v` as there, `a` their dimensions. */
function fusedAttention(q: F32, k: F32, v: F32, dims: AttentionDims, rope?: RopeTables): F32 {
  // On WebGPU the forward keeps the rotated rows for the backward kernels, which would otherwise rotate each key
  // (query) again for every query (key) it meets: on lavapipe the three kernels of a layer run 1.2-1.6x
  // (stories260K) and 1.4x (SmolLM-135M) as fast this way (bench/attention_bench.ts, one submission included).
  // The wasm kernels rotate what they loop over once per sequence already.
  const a = { ...dims, rotatedRows: dims.rope === true && q.device === "webgpu" };
  const rows = a.b * a.t * a.h;
  const krows = a.b * a.s * a.hkv;
  const tables = rope === undefined ? [] : [tableInput(rope.cos), tableInput(rope.sin)];
  const fwd = customKernel(spec(attentionForward(a), "forward", a), [q, k, v, ...tables]) as F32;
  const out = fwd.slice([0, rows * a.d]).reshape([a.b, a.t, a.h, a.d]) as F32;
  // The rows each backward kernel reads: q and k themselves, or their rotations in the forward's result.
  const qk = a.rotatedRows ? [] : [q, k];
  // d(q, k, v) from dO with the forward's logsumexp; the query pass also gives Δ = dO·O for the key/value pass.
  return customVjp((_q: F32, _k: F32, _v: F32) => out, (g) => {
    const bq = customKernel(spec(attentionBackwardQuery(a), "backward_query", a), [
      ...qk,
      v,
      g,
      fwd,
      ...tables,
    ]) as F32;
    const kvSpec = spec(attentionBackwardKeyValue(a), "backward_key_value", a);
    const bkv = customKernel(kvSpec, [...qk, v, g, fwd, bq, ...tables]) as F32;
    return [
      bq.slice([0, rows * a.d]).reshape(q.shape),
      bkv.slice([0, krows * a.d]).reshape(k.shape),
      bkv.slice([krows * a.d, 2 * krows * a.d]).reshape(v.shape),
    ];
  })(q, k, v);
}

/**
 * Scaled dot-product attention with grouped key/value heads. `q` is `[batch, T, heads, headDim]`; `k` and `v`
 * are `[batch, S, kvHeads, headDim]` with `heads` a multiple of `kvHeads` (query head `h` uses key/value head
 * `⌊h·kvHeads/heads⌋`). With `causal`, query `i` (at position `S − T + i`) sees keys `0 .. S − T + i`, so
 * `S > T` works for decoding with cached keys. Returns `[batch, T, heads, headDim]`.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { causalAttention } from "./attention.ts";
 * const q = randn([1, 6, 4, 8], { seed: 0 });
 * const k = randn([1, 6, 2, 8], { seed: 1 });
 * const v = randn([1, 6, 2, 8], { seed: 2 });
 * const out = causalAttention(q, k, v); // [1, 6, 4, 8]
 * ```
 */
export function causalAttention(
  q: F32,
  k: F32,
  v: F32,
  opts: CausalAttentionOptions = {},
): Tensor<number[], "f32"> {
  checkOptions("causalAttention", CAUSAL_ATTENTION_OPTIONS, opts);
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) {
    throw new RangeError(
      `causalAttention: q, k, v must be [batch, time, heads, headDim], got [${q.shape.join(", ")}], ` +
        `[${k.shape.join(", ")}], [${v.shape.join(", ")}]`,
    );
  }
  const [b, t, h, d] = q.shape;
  const [bk, s, hkv, dk] = k.shape;
  if (bk !== b || dk !== d || v.shape.join() !== k.shape.join() || h % hkv !== 0) {
    throw new RangeError(
      `causalAttention: shapes q [${q.shape.join(", ")}], k [${k.shape.join(", ")}], v [${
        v.shape.join(", ")
      }] ` +
        `do not fit: k and v must match, share batch and headDim with q, and heads must be a multiple of kvHeads`,
    );
  }
  const causal = opts.causal ?? true;
  if (causal && s < t) {
    throw new RangeError(`causalAttention: ${t} queries need at least ${t} keys, got ${s}`);
  }
  if (opts.window !== undefined && !causal) {
    throw new RangeError(`causalAttention: a sliding window (${opts.window}) needs causal attention`);
  }
  // A window that holds every key hides none: the kernels without a window, unchanged.
  const window = opts.window !== undefined && opts.window < s ? opts.window : undefined;
  const g = h / hkv;
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  const rope = opts.rope;
  if (
    rope !== undefined &&
    (rope.cos.shape.join() !== `${s},${d / 2}` || rope.sin.shape.join() !== `${s},${d / 2}`)
  ) {
    throw new RangeError(
      `causalAttention: rope tables must be [${s}, ${d / 2}] for keys [${k.shape.join(", ")}], got [${
        rope.cos.shape.join(", ")
      }] and [${rope.sin.shape.join(", ")}]`,
    );
  }
  const dims: AttentionDims = {
    b,
    t,
    s,
    h,
    hkv,
    d,
    scale,
    causal,
    rope: rope !== undefined,
    ...(window === undefined ? {} : { window }),
  };
  const fused = (opts.fused ?? true) && q.dtype === "f32" && attentionUnfit(dims, LOOP_BUDGET) === null;
  if (fused) return fusedAttention(q, k, v, dims, rope) as Tensor<number[], "f32">;
  if (rope !== undefined) {
    // Queries sit at the last T of the S positions.
    const qTables = s === t ? rope : {
      cos: rope.cos.slice([s - t, s]) as F32,
      sin: rope.sin.slice([s - t, s]) as F32,
    };
    q = applyRope(q, qTables) as F32;
    k = applyRope(k, rope) as F32;
  }
  const qh = q.permute([0, 2, 1, 3]).reshape([b, hkv, g, t, d]) as F32;
  const kh = k.permute([0, 2, 1, 3]).reshape([b, hkv, 1, s, d]) as F32;
  const vh = v.permute([0, 2, 1, 3]).reshape([b, hkv, 1, s, d]) as F32;
  let scores = qh.matmul(kh.transpose() as F32).mul(scale) as F32; // [b, hkv, g, t, s]
  if (causal) {
    const rows = arange(t, undefined, 1, { dtype: "i32", device: q.device }).add(s - t).reshape([t, 1]);
    const cols = arange(s, undefined, 1, { dtype: "i32", device: q.device }).reshape([1, s]);
    const visible = window === undefined
      ? (rows as Tensor<Shape, "i32">).ge(cols as Tensor<Shape, "i32">)
      : inWindow(rows.sub(cols as Tensor<Shape, "i32">) as Tensor<Shape, "i32">, window);
    scores = visible.where(scores, -1e30) as F32;
  }
  const out = scores.softmax(-1).matmul(vh) as F32; // [b, hkv, g, t, d]
  return out.reshape([b, h, t, d]).permute([0, 2, 1, 3]) as Tensor<number[], "f32">;
}

/**
 * Whether a key `d = i − j` positions before its query (i32, any shape) is in a sliding window of `w` positions:
 * `0 ≤ d < w`, that is `min(d, w − 1 − d) ≥ 0` (one comparison, no boolean and).
 */
function inWindow(d: Tensor<Shape, "i32">, w: number): Tensor<Shape, "bool"> {
  return d.minimum(d.neg().add(w - 1) as Tensor<Shape, "i32">).ge(0) as Tensor<Shape, "bool">;
}

/**
 * Attention with `mask` (`[T, S]` bool, true = visible) instead of a causal rule: query head `h` uses key/value
 * head `⌊h / (heads / kvHeads)⌋`, as in `causalAttention`. `q` `[B, T, H, hd]`, `k`, `v` `[B, S, Hkv, hd]`.
 */
function maskedAttention(q: F32, k: F32, v: F32, mask: Tensor<Shape, "bool">): F32 {
  const [b, t, h, d] = q.shape;
  const [, s, hkv] = k.shape;
  const g = h / hkv;
  const qh = q.permute([0, 2, 1, 3]).reshape([b, hkv, g, t, d]) as F32;
  const kh = k.permute([0, 2, 1, 3]).reshape([b, hkv, 1, s, d]) as F32;
  const vh = v.permute([0, 2, 1, 3]).reshape([b, hkv, 1, s, d]) as F32;
  let scores = qh.matmul(kh.transpose() as F32).mul(1 / Math.sqrt(d)) as F32; // [b, hkv, g, t, s]
  scores = mask.where(scores, -1e30) as F32;
  const out = scores.softmax(-1).matmul(vh) as F32; // [b, hkv, g, t, d]
  return out.reshape([b, h, t, d]).permute([0, 2, 1, 3]) as F32;
}

/** Per-step inputs of cached attention ({@link Attention.forwardCached}), shared by every layer of a model. */
export interface CachedStep {
  /** RoPE tables at the new positions, `[T, hd/2]`. */
  rope: RopeTables;
  /** Visibility `[T, L]`: slot `j` is visible to new position `p` when `j <= p`. */
  mask: Tensor<Shape, "bool">;
  /**
   * The new positions, `[T]` i32: needed by layers with a sliding window, which hide slot `j` from position `p`
   * when `j ≤ p − window`.
   */
  positions?: Tensor<Shape, "i32">;
  /** Slots written by this step, `[L]` bool. */
  write: Tensor<Shape, "bool">;
  /** For each slot, the new position it takes its value from (clamped to a valid index), `[L]` i32. */
  source: Tensor<Shape, "i32">;
}

/** The projections (and optional per-head norms) an {@link Attention} is built around. */
export interface AttentionLayers {
  /** Query projection `[nHeads·headDim, dim]`. */
  wq: LinearLayer;
  /** Key projection `[nKvHeads·headDim, dim]`. */
  wk: LinearLayer;
  /** Value projection `[nKvHeads·headDim, dim]`. */
  wv: LinearLayer;
  /** Output projection `[dim, nHeads·headDim]`. */
  wo: LinearLayer;
  /** RMSNorm of each query head (`[headDim]` gain), before RoPE (Qwen3). */
  q_norm?: RMSNorm;
  /** RMSNorm of each key head, like `q_norm`. */
  k_norm?: RMSNorm;
}

/**
 * Refuses `layers` whose widths do not fit the heads: the head size is `wq`'s width over `nHeads`, and a
 * mismatch would otherwise surface at the first forward as a reshape error or an odd RoPE head size.
 */
function checkLayerWidths(dim: number, nHeads: number, nKv: number, layers: AttentionLayers): void {
  const { wq, wk, wv, wo } = layers;
  if (wq.outFeatures % nHeads !== 0) {
    throw new RangeError(`Attention: wq.outFeatures ${wq.outFeatures} is not a multiple of nHeads ${nHeads}`);
  }
  const hd = wq.outFeatures / nHeads;
  const kv = `nKvHeads ${nKv} × head size ${hd}`;
  const widths: [string, number, number, string][] = [
    ["wq.inFeatures", wq.inFeatures, dim, "dim"],
    ["wk.inFeatures", wk.inFeatures, dim, "dim"],
    ["wk.outFeatures", wk.outFeatures, nKv * hd, kv],
    ["wv.inFeatures", wv.inFeatures, dim, "dim"],
    ["wv.outFeatures", wv.outFeatures, nKv * hd, kv],
    ["wo.inFeatures", wo.inFeatures, nHeads * hd, `nHeads ${nHeads} × head size ${hd}`],
    ["wo.outFeatures", wo.outFeatures, dim, "dim"],
  ];
  for (const [name, got, want, why] of widths) {
    if (got !== want) throw new RangeError(`Attention: ${name} is ${got}, expected ${want} (${why})`);
  }
}

/** Options of {@link Attention}. */
export interface AttentionOptions {
  /** Number of query heads. */
  nHeads: number;
  /** Number of key/value heads (default `nHeads`); must divide `nHeads`. */
  nKvHeads?: number;
  /** Size of one head (default `dim / nHeads`; with `layers`, read from `wq`). */
  headDim?: number;
  /** Rotary embeddings (default true). */
  rope?: boolean;
  /** RoPE base (default 1e4); refused with `rope: false`, where it changes nothing. */
  ropeTheta?: number;
  /** Biases in new projections (default false, as Llama). */
  bias?: boolean;
  /** Per-head RMSNorms of queries and keys before RoPE (`q_norm`, `k_norm`; Qwen3) in a new layer (default false). */
  qkNorm?: boolean;
  /** Epsilon of those norms (default 1e-5). */
  normEps?: number;
  /**
   * Sliding window: each position attends to the last `window` positions up to its own, itself included (default:
   * all earlier positions).
   */
  window?: number;
  /** Seed of new projections (needed unless `layers` are given). */
  seed?: number;
  /** Device of new parameters. */
  device?: DeviceName;
  /** Build the layer around these projections (a checkpoint's) instead of new seeded ones. */
  layers?: AttentionLayers;
}

/** Options of {@link Attention.forward}. */
export interface AttentionForwardOptions {
  /** Position of the first token (default 0), for the rotary angles; refused by a layer built with `rope: false`. */
  start?: number;
  /**
   * The rotary tables of the positions (a model computes them once for all its layers); default: the layer's.
   * Refused by a layer built with `rope: false`.
   */
  rope?: RopeTables;
}

/**
 * Causal self-attention: projections `wq` (`dim → nHeads·headDim`), `wk`, `wv` (`dim → nKvHeads·headDim`) and `wo`
 * (`nHeads·headDim → dim`), optional per-head RMSNorms of queries and keys, RoPE on queries and keys, GQA and the
 * causal softmax of {@link causalAttention}; {@link Attention.forwardCached} attends over a key/value cache.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { Attention } from "./attention.ts";
 * const attn = new Attention(32, { nHeads: 4, nKvHeads: 2, seed: 0 });
 * const y = attn.forward(randn([2, 10, 32], { seed: 1 })); // [2, 10, 32]
 * ```
 */
export class Attention extends Module {
  /** Query projection. */
  wq: LinearLayer;
  /** Key projection. */
  wk: LinearLayer;
  /** Value projection. */
  wv: LinearLayer;
  /** Output projection. */
  wo: LinearLayer;
  /** RMSNorm of each query head, before RoPE; present in `qkNorm` layers. */
  declare q_norm?: RMSNorm;
  /** RMSNorm of each key head, like `q_norm`. */
  declare k_norm?: RMSNorm;
  #nHeads: number;
  #nKvHeads: number;
  #rope: boolean;
  #theta: number;
  #window: number | undefined;
  #tables = new Map<string, RopeTables>();

  /** A layer for inputs `[batch, time, dim]`: new seeded projections, or `opts.layers`. */
  constructor(dim: number, opts: AttentionOptions) {
    super();
    checkOptions("Attention", ATTENTION_OPTIONS, opts);
    refuseWithLayers("Attention", opts, ["headDim", "bias", "qkNorm", "normEps", "seed", "device"]);
    if (opts.rope === false && opts.ropeTheta !== undefined) {
      throw new OptionsError("Attention", [
        `option "ropeTheta" is ${opts.ropeTheta} but "rope" is false: without rotary embeddings it changes nothing`,
      ]);
    }
    checkSize("Attention", "dim", dim);
    const nKv = opts.nKvHeads ?? opts.nHeads;
    if (
      opts.nHeads % nKv !== 0 ||
      (opts.layers === undefined && opts.headDim === undefined && dim % opts.nHeads)
    ) {
      throw new RangeError(
        `Attention: dim ${dim} must be a multiple of nHeads ${opts.nHeads}, and nHeads of nKvHeads ${nKv}`,
      );
    }
    let layers = opts.layers;
    if (layers !== undefined) checkLayerWidths(dim, opts.nHeads, nKv, layers);
    if (layers === undefined) {
      if (opts.seed === undefined) {
        throw new TypeError("Attention: give a seed for new projections, or layers");
      }
      const seed = opts.seed;
      const hd = opts.headDim ?? dim / opts.nHeads;
      const lin = (o: number, i: number, key: string) =>
        new Linear(i, o, { seed: deriveSeed(seed, key), bias: opts.bias ?? false, device: opts.device });
      const norm = () => new RMSNorm(hd, { eps: opts.normEps ?? 1e-5, device: opts.device });
      layers = {
        wq: lin(opts.nHeads * hd, dim, "wq"),
        wk: lin(nKv * hd, dim, "wk"),
        wv: lin(nKv * hd, dim, "wv"),
        wo: lin(dim, opts.nHeads * hd, "wo"),
        ...(opts.qkNorm ? { q_norm: norm(), k_norm: norm() } : {}),
      };
    }
    this.wq = layers.wq;
    this.wk = layers.wk;
    this.wv = layers.wv;
    this.wo = layers.wo;
    if (layers.q_norm !== undefined) this.q_norm = layers.q_norm;
    if (layers.k_norm !== undefined) this.k_norm = layers.k_norm;
    this.#nHeads = opts.nHeads;
    this.#nKvHeads = nKv;
    this.#rope = opts.rope ?? true;
    this.#theta = opts.ropeTheta ?? 1e4;
    this.#window = opts.window;
  }

  /** The sliding window (positions each query sees, itself included), or undefined for full causal attention. */
  get window(): number | undefined {
    return this.#window;
  }

  /** Number of query heads. */
  get nHeads(): number {
    return this.#nHeads;
  }

  /**
   * The settings a resumed run must share with the run that wrote its checkpoint (`ConfiguredModule`): the heads,
   * the causal mask, RoPE and its base, the sliding window.
   */
  runSettings(): Record<string, number | boolean> {
    return {
      nHeads: this.#nHeads,
      nKvHeads: this.#nKvHeads,
      causal: true,
      rope: this.#rope,
      ...(this.#rope ? { ropeTheta: this.#theta } : {}),
      ...(this.#window === undefined ? {} : { window: this.#window }),
    };
  }

  /** Number of key/value heads. */
  get nKvHeads(): number {
    return this.#nKvHeads;
  }

  /** Size of one head. */
  get headDim(): number {
    return this.wq.outFeatures / this.#nHeads;
  }

  /** Model width. */
  get dim(): number {
    return this.wq.inFeatures;
  }

  /** The rotary tables for `length` positions from `start` on `device` (cached; a few are kept). */
  rope(length: number, start: number, device: DeviceName): RopeTables {
    const key = `${length}:${start}:${device}`;
    let t = this.#tables.get(key);
    if (t === undefined) {
      t = ropeTables(this.headDim, length, { theta: this.#theta, start, device });
      if (this.#tables.size >= 8) this.#tables.delete(this.#tables.keys().next().value!);
      this.#tables.set(key, t);
    }
    return t;
  }

  /** The projections of `x` (`[B, T, dim]`), query/key norms applied, then RoPE on queries and keys. */
  #qkv(x: F32, rope: RopeTables | undefined): { q: F32; k: F32; v: F32 } {
    const [b, t] = x.shape;
    const hd = this.headDim;
    let q = this.wq.forward(x).reshape([b, t, this.#nHeads, hd]) as F32;
    let k = this.wk.forward(x).reshape([b, t, this.#nKvHeads, hd]) as F32;
    const v = this.wv.forward(x).reshape([b, t, this.#nKvHeads, hd]) as F32;
    if (this.q_norm !== undefined) q = this.q_norm.forward(q) as F32;
    if (this.k_norm !== undefined) k = this.k_norm.forward(k) as F32;
    if (rope === undefined) return { q, k, v };
    return { q: applyRope(q, rope) as F32, k: applyRope(k, rope) as F32, v };
  }

  /** Causal attention over `x` (`[batch, time, dim]`). */
  forward(x: F32, opts: AttentionForwardOptions = {}): Tensor<number[], "f32"> {
    checkOptions("Attention.forward", ATTENTION_FORWARD_OPTIONS, opts);
    // Without RoPE the positions are never read: the tables or start given would change nothing.
    const unread = [
      ...(opts.start === undefined ? [] : [`option "start" is ${opts.start}`]),
      ...(opts.rope === undefined ? [] : [`option "rope" is given (rotary tables)`]),
    ];
    if (!this.#rope && unread.length > 0) {
      throw new OptionsError(
        "Attention.forward",
        unread.map((u) =>
          `${u} but the layer was built with "rope": false: without rotary embeddings it changes nothing`
        ),
      );
    }
    if (x.ndim !== 3) {
      throw new RangeError(`Attention: x must be [batch, time, dim], got [${x.shape.join(", ")}]`);
    }
    const [b, t] = x.shape;
    const rope = this.#rope ? opts.rope ?? this.rope(t, opts.start ?? 0, x.device) : undefined;
    // RoPE is applied by causalAttention: inside the fused kernels where they apply (no kernels of its own).
    const { q, k, v } = this.#qkv(x, undefined);
    const window = this.#window;
    const o = causalAttention(q, k, v, { rope, ...(window === undefined ? {} : { window }) })
      .reshape([b, t, this.#nHeads * this.headDim]) as F32;
    return this.wo.forward(o);
  }

  /**
   * Attention of new positions over the cached ones: writes the new keys and values into their slots of
   * `cache` (`[B, L, Hkv, hd]` each) and returns the output and the updated caches.
   */
  forwardCached(x: F32, step: CachedStep, cache: { k: F32; v: F32 }): { y: F32; k: F32; v: F32 } {
    const [b, t] = x.shape;
    const { q, k, v } = this.#qkv(x, this.#rope ? step.rope : undefined);
    const slots = step.write.reshape([1, -1, 1, 1]) as Tensor<Shape, "bool">;
    const kc = slots.where(k.gather(step.source, 1), cache.k) as F32;
    const vc = slots.where(v.gather(step.source, 1), cache.v) as F32;
    const o = maskedAttention(q, kc, vc, this.#cachedMask(step, kc.shape[1]))
      .reshape([b, t, this.#nHeads * this.headDim]) as F32;
    return { y: this.wo.forward(o) as F32, k: kc, v: vc };
  }

  /** The step's visibility `[T, L]`, or with a window: slot `j` visible to position `p` when `p − W < j ≤ p`. */
  #cachedMask(step: CachedStep, slots: number): Tensor<Shape, "bool"> {
    const window = this.#window;
    if (window === undefined) return step.mask;
    if (step.positions === undefined) {
      throw new TypeError(
        `Attention.forwardCached: a layer with a sliding window (${window}) needs step.positions`,
      );
    }
    const device = step.mask.device;
    const j = arange(slots, undefined, 1, { dtype: "i32", device }).reshape([1, slots]) as Tensor<
      Shape,
      "i32"
    >;
    const p = step.positions.reshape([-1, 1]) as Tensor<Shape, "i32">;
    return inWindow(p.sub(j) as Tensor<Shape, "i32">, window);
  }
}
