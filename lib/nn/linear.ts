/**
 * Fully connected and embedding layers. `Linear` stores its weight as `[out, in]` like `torch.nn.Linear` and
 * PEFT, and computes `y = x·Wᵀ + b`.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { customVjp } from "../autodiff/grad.ts";
import { checkOptions, checkSize, opt } from "../options.ts";
import type { DeviceName } from "../ir/node.ts";
import type { Shape } from "../shape.ts";
import type { F16, F32, Tensor } from "../tensor/tensor.ts";
import { deriveSeed, normalParam, uniformParam } from "./init.ts";
import { Module } from "./module.ts";

export type { F16, F32 };

/** The f32 value of a weight stored as f32 or f16 (a cast that fuses into the kernel that reads it). */
export function asF32(w: F32 | F16): F32 {
  return w.dtype === "f16" ? w.cast("f32") as F32 : w as F32;
}

/**
 * `y = x·Wᵀ + b` over the last axis of `x`: `x` is `[..., in]`, `weight` `[out, in]`, `bias` `[out]`; the result
 * is `[..., out]`.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { linear } from "./linear.ts";
 * const y = linear(tensor([[1, 2]]), tensor([[1, 0], [0, 1], [1, 1]]), tensor([0, 0, 0.5]));
 * console.log(await y.toArray()); // [[1, 2, 3.5]]
 * ```
 */
export function linear(x: F32, weight: F32, bias?: F32): Tensor<number[], "f32">;
/** `y = x·Wᵀ + b` with a weight stored as f16 (computed in f32). */
export function linear(x: F32, weight: F16, bias?: F32): Tensor<number[], "f32">;
/** `y = x·Wᵀ + b` with a weight stored as f32 or f16. */
export function linear(x: F32, weight: F32 | F16, bias?: F32): Tensor<number[], "f32">;
export function linear(x: F32, weight: F32 | F16, bias?: F32): Tensor<number[], "f32"> {
  if (weight.ndim !== 2) {
    throw new RangeError(`linear: weight must be [out, in], got [${weight.shape.join(", ")}]`);
  }
  const [out, inF] = weight.shape;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) {
    throw new RangeError(
      `linear: input [${
        x.shape.join(", ")
      }] does not end in ${inF}, the input size of weight [${out}, ${inF}]`,
    );
  }
  if (bias !== undefined && (bias.ndim !== 1 || bias.shape[0] !== out)) {
    throw new RangeError(`linear: bias must be [${out}], got [${bias.shape.join(", ")}]`);
  }
  const lead = x.shape.slice(0, -1);
  const x2 = x.reshape([-1, inF]) as F32;
  const w = asF32(weight);
  const y = bias === undefined ? linearNoBias(x2, w) : linearBias(x2, w, bias);
  return y.reshape([...lead, out]) as Tensor<number[], "f32">;
}

// The backward passes are written out so that the weight gradient is the product gᵀ·x in the weight's own
// [out, in] layout: autodiff of x·Wᵀ would compute (xᵀ·g)ᵀ, a product with a transposed output, which the
// tiled matmul template does not take (about 7× slower on lavapipe for [256, 64] × [256, 512]).
const linearNoBias = customVjp(
  (x: F32, w: F32) => x.matmul(w.T as F32) as F32,
  // dx = g·W, dW = gᵀ·x
  (g, _y, x, w) => [(g as F32).matmul(w) as F32, (g as F32).T.matmul(x) as F32],
);
const linearBias = customVjp(
  (x: F32, w: F32, b: F32) => x.matmul(w.T as F32).add(b) as F32,
  // dx = g·W, dW = gᵀ·x, db = Σ_rows g
  (g, _y, x, w) => [(g as F32).matmul(w) as F32, (g as F32).T.matmul(x) as F32, (g as F32).sum(0) as F32],
);

/** What every linear projection offers, so that LoRA layers can stand in for {@link Linear}. */
export interface LinearLayer extends Module {
  /** Size of the last input axis. */
  readonly inFeatures: number;
  /** Size of the last output axis. */
  readonly outFeatures: number;
  /** Maps `[..., inFeatures]` to `[..., outFeatures]`. */
  forward(x: F32): Tensor<number[], "f32">;
}

const LINEAR_OPTIONS = z.object({
  seed: opt.seed(),
  bias: z.boolean().optional(),
  device: opt.device().optional(),
}).strict();
const EMBEDDING_OPTIONS = z.object({
  seed: opt.seed(),
  std: opt.nonNegative().optional(),
  device: opt.device().optional(),
}).strict();

/** Options of {@link Linear}. */
export interface LinearOptions {
  /** Seed of the initialisation. */
  seed: number;
  /** Whether the layer has a bias (default true). */
  bias?: boolean;
  /** Device of the parameters (default: the default device). */
  device?: DeviceName;
}

/**
 * A fully connected layer with weight `[out, in]` and optional bias `[out]`, initialised like `torch.nn.Linear`:
 * both uniform in `±1/√in`.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { Linear } from "./linear.ts";
 * const fc = new Linear(16, 4, { seed: 0 });
 * const y = fc.forward(randn([8, 16], { seed: 1 })); // [8, 4]
 * ```
 */
export class Linear extends Module implements LinearLayer {
  /** `[out, in]` (f16 for a frozen base stored at half size). */
  weight: F32 | F16;
  /** `[out]`; absent when created with `bias: false`. */
  declare bias?: F32;

  /** A layer with fresh parameters. */
  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions) {
    super();
    checkOptions("Linear", LINEAR_OPTIONS, opts);
    checkSize("Linear", "inFeatures", inFeatures);
    checkSize("Linear", "outFeatures", outFeatures);
    const bound = 1 / Math.sqrt(inFeatures);
    const device = opts.device;
    this.weight = uniformParam([outFeatures, inFeatures], -bound, bound, { seed: opts.seed, device });
    if (opts.bias ?? true) {
      this.bias = uniformParam([outFeatures], -bound, bound, { seed: deriveSeed(opts.seed, "bias"), device });
    }
  }

  /**
   * A layer around existing tensors (e.g. loaded from a checkpoint): `weight` `[out, in]`, `bias` `[out]`.
   *
   * @example
   * ```ts
   * import { tensor } from "../tensor/creation.ts";
   * import { Linear } from "./linear.ts";
   * const fc = Linear.fromWeights(tensor([[1, 2, 3]]));
   * ```
   */
  static fromWeights(weight: F32, bias?: F32): Linear;
  /** A layer around a weight stored as f16 (a frozen base at half size). */
  static fromWeights(weight: F16, bias?: F32): Linear;
  /** A layer around a weight stored as f32 or f16. */
  static fromWeights(weight: F32 | F16, bias?: F32): Linear;
  static fromWeights(weight: F32 | F16, bias?: F32): Linear {
    if (weight.ndim !== 2) {
      throw new RangeError(`Linear.fromWeights: weight must be [out, in], got [${weight.shape.join(", ")}]`);
    }
    const layer = Object.create(Linear.prototype) as Linear;
    layer.weight = weight;
    if (bias !== undefined) {
      if (bias.ndim !== 1 || bias.shape[0] !== weight.shape[0]) {
        throw new RangeError(
          `Linear.fromWeights: bias must be [${weight.shape[0]}], got [${bias.shape.join(", ")}]`,
        );
      }
      layer.bias = bias;
    }
    return layer;
  }

  /** Input size. */
  get inFeatures(): number {
    return this.weight.shape[1];
  }

  /** Output size. */
  get outFeatures(): number {
    return this.weight.shape[0];
  }

  /** `x·Wᵀ + b`. */
  forward(x: F32): Tensor<number[], "f32"> {
    return linear(x, this.weight, this.bias);
  }
}

/** Options of {@link Embedding}. */
export interface EmbeddingOptions {
  /** Seed of the initialisation. */
  seed: number;
  /** Standard deviation of the normal initialisation (default 1, as `torch.nn.Embedding`). */
  std?: number;
  /** Device of the table (default: the default device). */
  device?: DeviceName;
}

/**
 * Rows of `weight` (`[num, dim]`) at integer `ids` of any shape: the result is `[...ids.shape, dim]`.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { embedding } from "./linear.ts";
 * const rows = embedding(tensor([2, 0], { dtype: "i32" }), tensor([[1, 1], [2, 2], [3, 3]]));
 * console.log(await rows.toArray()); // [[3, 3], [1, 1]]
 * ```
 */
export function embedding(ids: Tensor<Shape, "i32">, weight: F32): Tensor<number[], "f32">;
/** Rows of an f16 table, as f32. */
export function embedding(ids: Tensor<Shape, "i32">, weight: F16): Tensor<number[], "f32">;
/** Rows of an f32 or f16 table, as f32. */
export function embedding(ids: Tensor<Shape, "i32">, weight: F32 | F16): Tensor<number[], "f32">;
export function embedding(ids: Tensor<Shape, "i32">, weight: F32 | F16): Tensor<number[], "f32"> {
  if (weight.ndim !== 2) {
    throw new RangeError(`embedding: weight must be [num, dim], got [${weight.shape.join(", ")}]`);
  }
  if (ids.dtype !== "i32") throw new TypeError(`embedding: ids must be i32, got ${ids.dtype}`);
  const rows = weight.gather(ids, 0);
  return (rows.dtype === "f16" ? rows.cast("f32") : rows) as Tensor<number[], "f32">;
}

/**
 * A lookup table of `num` vectors of size `dim`.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { Embedding } from "./linear.ts";
 * const emb = new Embedding(50, 8, { seed: 0, std: 0.02 });
 * const h = emb.forward(tensor([[1, 2, 3]], { dtype: "i32" })); // [1, 3, 8]
 * ```
 */
export class Embedding extends Module {
  /** `[num, dim]` (f16 for a frozen table stored at half size). */
  weight: F32 | F16;

  /** A table with normal initial values. */
  constructor(num: number, dim: number, opts: EmbeddingOptions) {
    super();
    checkOptions("Embedding", EMBEDDING_OPTIONS, opts);
    checkSize("Embedding", "num", num);
    checkSize("Embedding", "dim", dim);
    this.weight = normalParam([num, dim], opts.std ?? 1, { seed: opts.seed, device: opts.device });
  }

  /** Number of rows. */
  get num(): number {
    return this.weight.shape[0];
  }

  /** Row size. */
  get dim(): number {
    return this.weight.shape[1];
  }

  /** Rows at `ids`. */
  forward(ids: Tensor<Shape, "i32">): Tensor<number[], "f32"> {
    return embedding(ids, this.weight);
  }
}
