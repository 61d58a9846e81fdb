/**
 * A pre-norm Llama-style transformer block: `h = x + attn(rmsNorm(x))`, `out = h + ffn(rmsNorm(h))`, with
 * RoPE + GQA causal attention and a SwiGLU feed-forward. Field names follow the paths LoRA targets:
 * `attn.wq`, `attn.wk`, `attn.wv`, `attn.wo`, `ffn.w1`, `ffn.w2`, `ffn.w3`.
 *
 * @module
 */
import type { DeviceName } from "../ir/node.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { Attention, type AttentionForwardOptions } from "./attention.ts";
import { deriveSeed } from "./init.ts";
import type { F32 } from "./linear.ts";
import { SwiGLU } from "./mlp.ts";
import { Module } from "./module.ts";
import { RMSNorm } from "./norm.ts";

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
  /** Seed of the initialisation. */
  seed: number;
  /** Device of the parameters. */
  device?: DeviceName;
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
  attnNorm: RMSNorm;
  /** Self-attention. */
  attn: Attention;
  /** RMSNorm before the feed-forward (llama2.c `rms_ffn_weight`). */
  ffnNorm: RMSNorm;
  /** SwiGLU feed-forward. */
  ffn: SwiGLU;

  /** A block of width `dim`. */
  constructor(dim: number, opts: TransformerBlockOptions) {
    super();
    const eps = opts.normEps ?? 1e-5;
    this.attnNorm = new RMSNorm(dim, { eps, device: opts.device });
    this.attn = new Attention(dim, {
      nHeads: opts.nHeads,
      nKvHeads: opts.nKvHeads,
      ropeTheta: opts.ropeTheta,
      seed: deriveSeed(opts.seed, "attn"),
      device: opts.device,
    });
    this.ffnNorm = new RMSNorm(dim, { eps, device: opts.device });
    this.ffn = new SwiGLU(dim, opts.hiddenDim, { seed: deriveSeed(opts.seed, "ffn"), device: opts.device });
  }

  /** `x + attn(norm(x))`, then `h + ffn(norm(h))`. */
  forward(x: F32, opts: AttentionForwardOptions = {}): Tensor<number[], "f32"> {
    const h = x.add(this.attn.forward(this.attnNorm.forward(x), opts)) as F32;
    return h.add(this.ffn.forward(this.ffnNorm.forward(h))) as Tensor<number[], "f32">;
  }
}
