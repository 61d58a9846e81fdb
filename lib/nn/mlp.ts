/**
 * Feed-forward blocks: a plain multi-layer perceptron and Llama's SwiGLU, `w2(silu(w1 x) · w3 x)`.
 *
 * @module
 */
import { z } from "../../deps.ts";
import type { DeviceName } from "../ir/node.ts";
import { checkOptions, checkSize, opt, refuseWithLayers } from "../options.ts";
import type { Tensor } from "../tensor/tensor.ts";
import {
  type Activation,
  gelu,
  identity,
  leakyRelu,
  relu,
  sigmoid,
  silu,
  softplus,
  tanh,
} from "./activations.ts";
import { deriveSeed } from "./init.ts";
import { type F32, Linear, linear, type LinearLayer } from "./linear.ts";
import { Module } from "./module.ts";

/**
 * `w2(silu(w1 x) · w3 x)` with bias-free projections: `w1`, `w3` are `[hidden, dim]` and `w2` is `[dim, hidden]`
 * (`[out, in]`, as in llama2.c).
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { swiglu } from "./mlp.ts";
 * const y = swiglu(randn([3, 8], { seed: 0 }), randn([16, 8], { seed: 1 }), randn([8, 16], { seed: 2 }),
 *   randn([16, 8], { seed: 3 })); // [3, 8]
 * ```
 */
export function swiglu(x: F32, w1: F32, w2: F32, w3: F32): Tensor<number[], "f32"> {
  const gate = linear(x, w1).silu() as F32;
  return linear(gate.mul(linear(x, w3)) as F32, w2);
}

const SWIGLU_OPTIONS = z.object({
  seed: opt.seed().optional(),
  bias: z.boolean().optional(),
  device: opt.device().optional(),
  layers: z.object({ w1: opt.object(), w2: opt.object(), w3: opt.object() }).strict().optional(),
}).strict();
const MLP_OPTIONS = z.object({
  seed: opt.seed(),
  activation: opt.fn().optional(),
  device: opt.device().optional(),
}).strict();

/** Options of {@link SwiGLU}. */
export interface SwiGLUOptions {
  /** Seed of new projections (needed unless `layers` are given). */
  seed?: number;
  /** Biases in new projections (default false, as Llama). */
  bias?: boolean;
  /** Device of new parameters. */
  device?: DeviceName;
  /** Build the block around these projections (a checkpoint's) instead of new seeded ones. */
  layers?: { w1: LinearLayer; w2: LinearLayer; w3: LinearLayer };
}

/**
 * Llama's feed-forward block: `w2(silu(w1 x) · w3 x)`.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { SwiGLU } from "./mlp.ts";
 * const ffn = new SwiGLU(32, 86, { seed: 0 });
 * const y = ffn.forward(randn([2, 4, 32], { seed: 1 })); // [2, 4, 32]
 * ```
 */
export class SwiGLU extends Module {
  /** Gate projection, `dim → hidden`. */
  w1: LinearLayer;
  /** Down projection, `hidden → dim`. */
  w2: LinearLayer;
  /** Up projection, `dim → hidden`. */
  w3: LinearLayer;

  /** A block for inputs `[..., dim]` with `hidden` inner units: new seeded projections, or `opts.layers`. */
  constructor(dim: number, hidden: number, opts: SwiGLUOptions) {
    super();
    checkOptions("SwiGLU", SWIGLU_OPTIONS, opts);
    refuseWithLayers("SwiGLU", opts, ["seed", "bias", "device"]);
    checkSize("SwiGLU", "dim", dim);
    checkSize("SwiGLU", "hidden", hidden);
    if (opts.layers !== undefined) {
      ({ w1: this.w1, w2: this.w2, w3: this.w3 } = opts.layers);
      return;
    }
    const seed = opts.seed;
    if (seed === undefined) throw new TypeError("SwiGLU: give a seed for new projections, or layers");
    const bias = opts.bias ?? false;
    this.w1 = new Linear(dim, hidden, { seed: deriveSeed(seed, "w1"), bias, device: opts.device });
    this.w2 = new Linear(hidden, dim, { seed: deriveSeed(seed, "w2"), bias, device: opts.device });
    this.w3 = new Linear(dim, hidden, { seed: deriveSeed(seed, "w3"), bias, device: opts.device });
  }

  /** `w2(silu(w1 x) · w3 x)`. */
  forward(x: F32): Tensor<number[], "f32"> {
    const gate = this.w1.forward(x).silu() as F32;
    return this.w2.forward(gate.mul(this.w3.forward(x)) as F32);
  }
}

/** Options of {@link Mlp}. */
export interface MlpOptions {
  /** Seed of the initialisation. */
  seed: number;
  /** Activation between layers (default {@link relu}); none after the last layer. */
  activation?: Activation;
  /** Device of the parameters. */
  device?: DeviceName;
}

/**
 * A stack of {@link Linear} layers with an activation between them: `sizes = [in, h1, ..., out]`.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { gelu } from "./activations.ts";
 * import { Mlp } from "./mlp.ts";
 * const mlp = new Mlp([4, 32, 32, 3], { seed: 0, activation: gelu });
 * const logits = mlp.forward(randn([10, 4], { seed: 1 })); // [10, 3]
 * ```
 */
export class Mlp extends Module {
  /** The layers, `layers.i` maps `sizes[i] → sizes[i + 1]`. */
  layers: LinearLayer[];
  #activation: Activation;

  /** An MLP with the given layer sizes (at least two). */
  constructor(sizes: readonly number[], opts: MlpOptions) {
    super();
    checkOptions("Mlp", MLP_OPTIONS, opts);
    if (sizes.length < 2) {
      throw new RangeError(`Mlp: need at least [in, out] sizes, got [${sizes.join(", ")}]`);
    }
    sizes.forEach((size, i) => checkSize("Mlp", `sizes[${i}]`, size));
    this.layers = sizes.slice(1).map((out, i) =>
      new Linear(sizes[i], out, { seed: deriveSeed(opts.seed, "layers", i), device: opts.device })
    );
    this.#activation = opts.activation ?? relu;
  }

  /** The layers with the activation between them. */
  forward(x: F32): Tensor<number[], "f32"> {
    let h = x;
    this.layers.forEach((layer, i) => {
      h = layer.forward(h) as F32;
      if (i < this.layers.length - 1) h = this.#activation(h);
    });
    return h as Tensor<number[], "f32">;
  }

  /**
   * The settings a resumed run must share with the run that wrote its checkpoint (`ConfiguredModule`): the
   * activation, by name for the library's own (`"gelu"`), by source text for any other function. A closure is told
   * by its code, not by the values it captures: `(x) => leakyRelu(x, slope)` over another `slope` reads the same.
   */
  runSettings(): Record<string, string> {
    const f = this.#activation;
    const known = LIBRARY_ACTIVATIONS.find(([, g]) => g === f);
    return { activation: known !== undefined ? known[0] : String(f).replace(/\s+/g, " ") };
  }
}

/** The library's activations by name; a name alone would not tell closures apart (`{ activation: (x) => ... }`). */
const LIBRARY_ACTIVATIONS: [string, Activation][] = Object.entries({
  relu,
  gelu,
  silu,
  sigmoid,
  tanh,
  identity,
  leakyRelu,
  softplus,
});
