/**
 * Normalisation layers: LayerNorm and RMSNorm over the last axis. RMSNorm follows Llama-2 / llama2.c exactly:
 * `x · rsqrt(mean(x²) + eps) · w` with eps 1e-5.
 *
 * @module
 */
import { z } from "../../deps.ts";
import type { DeviceName } from "../ir/node.ts";
import { checkOptions, checkSize, opt, OptionsError } from "../options.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { constantParam } from "./init.ts";
import type { F32 } from "./linear.ts";
import { Module } from "./module.ts";

function checkLast(what: string, x: F32, t: F32 | undefined, name: string): void {
  if (t === undefined) return;
  const d = x.shape[x.ndim - 1];
  if (t.ndim !== 1 || t.shape[0] !== d) {
    throw new RangeError(
      `${what}: ${name} must be [${d}] for input [${x.shape.join(", ")}], got [${t.shape.join(", ")}]`,
    );
  }
}

const NORM_OPTIONS = z.object({ eps: opt.nonNegative().optional() }).strict();
const LAYER_NORM_MODULE_OPTIONS = NORM_OPTIONS.extend({
  affine: z.boolean().optional(),
  bias: z.boolean().optional(),
  device: opt.device().optional(),
}).strict();
const RMS_NORM_MODULE_OPTIONS = NORM_OPTIONS.extend({ device: opt.device().optional() }).strict();

/** Options of {@link layerNorm}. */
export interface LayerNormOptions {
  /** Added to the variance (default 1e-5). */
  eps?: number;
}

/**
 * `(x − mean) / √(var + eps) · weight + bias` over the last axis (population variance, as `torch.nn.LayerNorm`).
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { layerNorm } from "./norm.ts";
 * const y = layerNorm(tensor([[1, 2, 3]]));
 * console.log(await y.toArray()); // ≈ [[-1.2247, 0, 1.2247]]
 * ```
 */
export function layerNorm(
  x: F32,
  weight?: F32,
  bias?: F32,
  opts: LayerNormOptions = {},
): Tensor<number[], "f32"> {
  checkOptions("layerNorm", NORM_OPTIONS, opts);
  checkLast("layerNorm", x, weight, "weight");
  checkLast("layerNorm", x, bias, "bias");
  const eps = opts.eps ?? 1e-5;
  const mu = x.mean(-1, { keepdims: true }) as F32;
  const xc = x.sub(mu) as F32;
  const v = xc.square().mean(-1, { keepdims: true }) as F32;
  let y = xc.mul(v.add(eps).rsqrt()) as F32;
  if (weight !== undefined) y = y.mul(weight) as F32;
  if (bias !== undefined) y = y.add(bias) as F32;
  return y as Tensor<number[], "f32">;
}

/** Options of {@link rmsNorm}. */
export interface RmsNormOptions {
  /** Added to the mean square (default 1e-5, as Llama-2). */
  eps?: number;
}

/**
 * `x · rsqrt(mean(x²) + eps) · weight` over the last axis (Llama-2's RMSNorm).
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { rmsNorm } from "./norm.ts";
 * const y = rmsNorm(tensor([[3, 4]]), tensor([1, 2]));
 * console.log(await y.toArray()); // ≈ [[0.8485, 2.2627]]
 * ```
 */
export function rmsNorm(x: F32, weight?: F32, opts: RmsNormOptions = {}): Tensor<number[], "f32"> {
  checkOptions("rmsNorm", NORM_OPTIONS, opts);
  checkLast("rmsNorm", x, weight, "weight");
  const eps = opts.eps ?? 1e-5;
  const ms = x.square().mean(-1, { keepdims: true }) as F32;
  let y = x.mul(ms.add(eps).rsqrt()) as F32;
  if (weight !== undefined) y = y.mul(weight) as F32;
  return y as Tensor<number[], "f32">;
}

/** Options of {@link LayerNorm}. */
export interface LayerNormModuleOptions extends LayerNormOptions {
  /** Learnable gain and bias (default true); without them the layer only normalises. */
  affine?: boolean;
  /** Learnable bias when `affine` (default true; `true` beside `affine: false` is refused). */
  bias?: boolean;
  /** Device of the parameters. */
  device?: DeviceName;
}

/**
 * Layer normalisation over the last axis with gain (init 1) and bias (init 0).
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { LayerNorm } from "./norm.ts";
 * const norm = new LayerNorm(32);
 * const y = norm.forward(randn([4, 32], { seed: 0 }));
 * ```
 */
export class LayerNorm extends Module {
  /** Gain `[dim]`; absent without `affine`. */
  declare weight?: F32;
  /** Bias `[dim]`; absent without `affine` or `bias`. */
  declare bias?: F32;
  #dim: number;
  #eps: number;

  /** A layer for inputs whose last axis is `dim`. */
  constructor(dim: number, opts: LayerNormModuleOptions = {}) {
    super();
    checkOptions("LayerNorm", LAYER_NORM_MODULE_OPTIONS, opts);
    if (opts.affine === false && opts.bias === true) {
      throw new OptionsError("LayerNorm", [
        'option "bias" is true but "affine" is false: there is no bias without affine',
      ]);
    }
    checkSize("LayerNorm", "dim", dim);
    this.#dim = dim;
    this.#eps = opts.eps ?? 1e-5;
    if (opts.affine ?? true) {
      this.weight = constantParam([dim], 1, { device: opts.device });
      if (opts.bias ?? true) this.bias = constantParam([dim], 0, { device: opts.device });
    }
  }

  /** Normalised size. */
  get dim(): number {
    return this.#dim;
  }

  /** The epsilon. */
  get eps(): number {
    return this.#eps;
  }

  /** The settings a resumed run must share with the run that wrote its checkpoint (`ConfiguredModule`). */
  runSettings(): Record<string, number> {
    return { eps: this.#eps };
  }

  /** Normalises the last axis. */
  forward(x: F32): Tensor<number[], "f32"> {
    // Without affine there is no gain for layerNorm to check against, and any last axis would be normalised.
    if (x.shape[x.ndim - 1] !== this.#dim) {
      throw new RangeError(`LayerNorm: input must be [..., ${this.#dim}], got [${x.shape.join(", ")}]`);
    }
    return layerNorm(x, this.weight, this.bias, { eps: this.#eps });
  }
}

/** Options of {@link RMSNorm}. */
export interface RMSNormModuleOptions extends RmsNormOptions {
  /** Device of the gain. */
  device?: DeviceName;
}

/**
 * Llama-2's RMS normalisation over the last axis, with a gain initialised to 1.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { RMSNorm } from "./norm.ts";
 * const norm = new RMSNorm(64);
 * const y = norm.forward(randn([2, 5, 64], { seed: 0 }));
 * ```
 */
export class RMSNorm extends Module {
  /** Gain `[dim]`. */
  weight: F32;
  #eps: number;

  /** A layer for inputs whose last axis is `dim`. */
  constructor(dim: number, opts: RMSNormModuleOptions = {}) {
    super();
    checkOptions("RMSNorm", RMS_NORM_MODULE_OPTIONS, opts);
    checkSize("RMSNorm", "dim", dim);
    this.#eps = opts.eps ?? 1e-5;
    this.weight = constantParam([dim], 1, { device: opts.device });
  }

  /** Normalised size. */
  get dim(): number {
    return this.weight.shape[0];
  }

  /** The epsilon. */
  get eps(): number {
    return this.#eps;
  }

  /** The settings a resumed run must share with the run that wrote its checkpoint (`ConfiguredModule`). */
  runSettings(): Record<string, number> {
    return { eps: this.#eps };
  }

  /** `x · rsqrt(mean(x²) + eps) · weight`. */
  forward(x: F32): Tensor<number[], "f32"> {
    return rmsNorm(x, this.weight, { eps: this.#eps });
  }
}
