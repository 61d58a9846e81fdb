/**
 * A pre-norm Llama-style transformer block: `h = x + attention(attention_norm(x))`, `out = h +
 * feed_forward(ffn_norm(h))`, with RoPE + GQA causal attention and a SwiGLU feed-forward. Field names are llama2.c's,
 * the paths LoRA targets: `attention.wq`, `attention.wk`, `attention.wv`, `attention.wo`, `feed_forward.w1`,
 * `feed_forward.w2`, `feed_forward.w3`.
 *
 * @module
 */
import { z } from "../../deps.ts";
import type { DeviceName } from "../ir/node.ts";
import { checkOptions, checkSize, opt, OptionsError, refuseWithLayers } from "../options.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { Attention, type AttentionForwardOptions, type CachedStep } from "./attention.ts";
import { deriveSeed } from "./init.ts";
import type { F32 } from "./linear.ts";
import { SwiGLU } from "./mlp.ts";
import { Module } from "./module.ts";
import { RMSNorm } from "./norm.ts";

/** The parts a {@link TransformerBlock} is built around. */
export interface TransformerBlockLayers {
  /** RMSNorm before attention. */
  attention_norm: RMSNorm;
  /** Self-attention. */
  attention: Attention;
  /** RMSNorm before the feed-forward. */
  ffn_norm: RMSNorm;
  /** SwiGLU feed-forward. */
  feed_forward: SwiGLU;
}

const BLOCK_OPTIONS = z.object({
  nHeads: opt.count(),
  nKvHeads: opt.count().optional(),
  hiddenDim: opt.count(),
  normEps: opt.nonNegative().optional(),
  ropeTheta: opt.positive().optional(),
  seed: opt.seed().optional(),
  device: opt.device().optional(),
  layers: z.object({
    attention_norm: opt.object(),
    attention: opt.object(),
    ffn_norm: opt.object(),
    feed_forward: opt.object(),
  }).strict().optional(),
}).strict();

/** Options of {@link TransformerBlock}. */
export interface TransformerBlockOptions {
  /** Number of query heads. */
  nHeads: number;
  /** Number of key/value heads (default `nHeads`). */
  nKvHeads?: number;
  /** Inner size of the SwiGLU block. */
  hiddenDim: number;
  /** RMSNorm epsilon (default 1e-5). */
  normEps?: number;
  /** RoPE base (default 1e4). */
  ropeTheta?: number;
  /** Seed of new parts (needed unless `layers` are given). */
  seed?: number;
  /** Device of new parameters. */
  device?: DeviceName;
  /** Build the block around these parts (a checkpoint's) instead of new seeded ones. */
  layers?: TransformerBlockLayers;
}

/**
 * One Llama-2 decoder layer.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { TransformerBlock } from "./transformer.ts";
 * const block = new TransformerBlock(32, { nHeads: 4, nKvHeads: 2, hiddenDim: 86, seed: 0 });
 * const y = block.forward(randn([2, 8, 32], { seed: 1 })); // [2, 8, 32]
 * ```
 */
export class TransformerBlock extends Module {
  /** RMSNorm before attention (llama2.c `rms_att_weight`). */
  attention_norm: RMSNorm;
  /** Self-attention. */
  attention: Attention;
  /** RMSNorm before the feed-forward (llama2.c `rms_ffn_weight`). */
  ffn_norm: RMSNorm;
  /** SwiGLU feed-forward. */
  feed_forward: SwiGLU;

  /** A block of width `dim`: new seeded parts, or `opts.layers`. */
  constructor(dim: number, opts: TransformerBlockOptions) {
    super();
    checkOptions("TransformerBlock", BLOCK_OPTIONS, opts);
    refuseWithLayers("TransformerBlock", opts, ["normEps", "ropeTheta", "seed", "device"]);
    checkSize("TransformerBlock", "dim", dim);
    let layers = opts.layers;
    if (layers !== undefined) {
      // The sizes the options give must be those of the parts (they describe the block, not new parts).
      const { attention, feed_forward } = layers;
      const sizes: [string, number | undefined, number][] = [
        ["nHeads", opts.nHeads, attention.nHeads],
        ["nKvHeads", opts.nKvHeads, attention.nKvHeads],
        ["hiddenDim", opts.hiddenDim, feed_forward.w1.outFeatures],
      ];
      const wrong = sizes.filter(([, given, actual]) => given !== undefined && given !== actual);
      if (wrong.length > 0) {
        throw new OptionsError(
          "TransformerBlock",
          wrong.map(([k, given, actual]) => `option "${k}" is ${given}, but the given layers have ${actual}`),
        );
      }
    }
    if (layers === undefined) {
      const seed = opts.seed;
      if (seed === undefined) throw new TypeError("TransformerBlock: give a seed for new parts, or layers");
      const eps = opts.normEps ?? 1e-5;
      layers = {
        attention_norm: new RMSNorm(dim, { eps, device: opts.device }),
        attention: new Attention(dim, {
          nHeads: opts.nHeads,
          nKvHeads: opts.nKvHeads,
          ropeTheta: opts.ropeTheta,
          seed: deriveSeed(seed, "attn"),
          device: opts.device,
        }),
        ffn_norm: new RMSNorm(dim, { eps, device: opts.device }),
        feed_forward: new SwiGLU(dim, opts.hiddenDim, { seed: deriveSeed(seed, "ffn"), device: opts.device }),
      };
    }
    this.attention_norm = layers.attention_norm;
    this.attention = layers.attention;
    this.ffn_norm = layers.ffn_norm;
    this.feed_forward = layers.feed_forward;
  }

  /** `x + attention(attention_norm(x))`, then `h + feed_forward(ffn_norm(h))`. */
  forward(x: F32, opts: AttentionForwardOptions = {}): Tensor<number[], "f32"> {
    const h = x.add(this.attention.forward(this.attention_norm.forward(x), opts)) as F32;
    return h.add(this.feed_forward.forward(this.ffn_norm.forward(h))) as Tensor<number[], "f32">;
  }

  /** The block over new positions, reading and extending the layer's key/value cache. */
  forwardCached(x: F32, step: CachedStep, cache: { k: F32; v: F32 }): { y: F32; k: F32; v: F32 } {
    const a = this.attention.forwardCached(this.attention_norm.forward(x), step, cache);
    const h = x.add(a.y) as F32;
    const y = h.add(this.feed_forward.forward(this.ffn_norm.forward(h))) as F32;
    return { y, k: a.k, v: a.v };
  }
}
