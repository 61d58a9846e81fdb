/** Small models shared by the training tests. */
import type { Shape, Tensor } from "../../mod.ts";
import { deriveSeed, Embedding, Linear, Module, RMSNorm, TransformerBlock } from "../../lib/nn/mod.ts";
import type { DeviceName } from "../../lib/ir/node.ts";

/** Sizes of {@link TinyLm}. */
export interface TinyLmConfig {
  vocab: number;
  dim: number;
  layers: number;
  nHeads: number;
  nKvHeads: number;
  hiddenDim: number;
}

/** A Llama-style character LM built from the nn blocks: embedding, pre-norm blocks, final RMSNorm, head. */
export class TinyLm extends Module {
  tokEmb: Embedding;
  layers: TransformerBlock[];
  norm: RMSNorm;
  output: Linear;

  constructor(c: TinyLmConfig, seed: number, device?: DeviceName) {
    super();
    this.tokEmb = new Embedding(c.vocab, c.dim, { seed: deriveSeed(seed, "emb"), std: 0.5, device });
    this.layers = Array.from({ length: c.layers }, (_, i) =>
      new TransformerBlock(c.dim, {
        nHeads: c.nHeads,
        nKvHeads: c.nKvHeads,
        hiddenDim: c.hiddenDim,
        seed: deriveSeed(seed, "layers", i),
        device,
      }));
    this.norm = new RMSNorm(c.dim, { device });
    this.output = new Linear(c.dim, c.vocab, { seed: deriveSeed(seed, "output"), bias: false, device });
  }

  /** Logits `[batch, time, vocab]` for token ids `[batch, time]`. */
  forward(ids: Tensor<Shape, "i32">): Tensor<number[], "f32"> {
    let h = this.tokEmb.forward(ids) as Tensor<Shape, "f32">;
    for (const layer of this.layers) h = layer.forward(h) as Tensor<Shape, "f32">;
    return this.output.forward(this.norm.forward(h) as Tensor<Shape, "f32">);
  }
}
