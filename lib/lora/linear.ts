/**
 * The LoRA layer: `y = x·W_resᵀ + b + s·(x·Aᵀ)·Bᵀ` with the base weight `W_res` frozen and `A`, `B` trained, and
 * DoRA as an option (`W' = m ⊙ (W_res + s·B·A) / ‖W_res + s·B·A‖_row`, the norm detached as in PEFT).
 *
 * Its public fields follow PEFT's module layout, so parameter paths are PEFT's tensor names:
 * `<module>.base_layer.weight`, `<module>.lora_A.weight` `[r, d_in]`, `<module>.lora_B.weight` `[d_out, r]` and
 * `<module>.lora_magnitude_vector` `[d_out]`.
 *
 * @module
 */
import { stopGradient } from "../autodiff/grad.ts";
import { asF32, type F16, type F32, Linear, linear, type LinearLayer } from "../nn/linear.ts";
import { type FreezingModule, Module } from "../nn/module.ts";
import { dropout } from "../nn/activations.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { deriveSeed } from "../nn/init.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt, OptionsError } from "../options.ts";

/** What one initialisation produces for one layer. */
export interface LoraInit {
  /** `lora_A.weight`, `[rank, d_in]`. */
  a: F32;
  /** `lora_B.weight`, `[d_out, rank]`. */
  b: F32;
  /** The weight the adapted layer must use instead of W (offset inits: `W − s·B·A`; LoftQ: the quantised W). */
  base?: F32;
  /** The rank actually used (EVA and VAS may change it; 0 means "no adapter on this layer"). */
  rank: number;
  /** `lora_alpha` of the layer. */
  alpha: number;
  /** The scaling `s` the layer applies to `B·A`. */
  scale: number;
  /** Method-specific diagnostics (errors per iteration, explained variance, ...). */
  info?: Record<string, number | number[] | string | boolean>;
}

/** `s = alpha/r`, or `alpha/√r` with rsLoRA; 0 for rank 0. */
export function loraScale(alpha: number, rank: number, useRslora = false): number {
  if (rank === 0) return 0;
  return useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

const LAYER_OPTIONS = z.object({
  dropout: z.number().min(0).lt(1).optional(),
  useDora: z.boolean().optional(),
  seed: opt.seed().optional(),
  useRslora: z.boolean().optional(),
  initial: z.object({ a: opt.tensor(), b: opt.tensor() }).strict().optional(),
  freezeB: z.boolean().optional(),
}).strict();

/** The scalar fields of an init result (its tensors are checked by shape below). */
const INIT_SCALARS = z.object({ rank: opt.count(), alpha: opt.number(), scale: opt.number() });

/** Options of a {@link LoraLinear}. */
export interface LoraLayerOptions {
  /** Dropout probability on the LoRA path's input during training (default 0). */
  dropout?: number;
  /** Use DoRA (a trainable magnitude per output row). */
  useDora?: boolean;
  /** Seed of the dropout masks. */
  seed?: number;
  /** Whether `init.scale` is rsLoRA's `alpha/√r` (recorded for adapter files; default false). */
  useRslora?: boolean;
  /**
   * For an offset initialisation (`init.base` = W − s·B₀·A₀, as PiSSA, OLoRA, CorDA, LoRA-GA, LoRAM write it): copies
   * of B₀ and A₀ (tensors of their own, not the trained parameters), kept so the adapter can be exported as a
   * rank-2r LoRA of the original W, with the shapes of B and A. Absent for any other base (e.g. LoftQ's quantised
   * W); refused without `init.base`.
   */
  initial?: { a: F32; b: F32 };
  /**
   * Keep `B` fixed in training (no optimiser updates it; default false), as PEFT 0.21 does for MiCA
   * (`init_lora_weights: "mica"`, arXiv 2604.01694: B holds the base's minor singular vectors and only A learns).
   */
  freezeB?: boolean;
}

/**
 * `initial` describes the offset `base = W − s·B₀·A₀` of `init`: without `init.base` it describes nothing (it was
 * dropped), and B₀, A₀ must have the shapes of B and A (the exported adapter stacks them).
 */
function checkInitial(init: LoraInit, initial: { a: F32; b: F32 } | undefined): void {
  if (initial === undefined) return;
  if (init.base === undefined) {
    throw new OptionsError("LoraLinear", [
      'option "initial" needs an init result with a base (an offset initialisation); this one has none',
    ]);
  }
  const issues = (["a", "b"] as const).filter((k) => initial[k].shape.join() !== init[k].shape.join()).map((
    k,
  ) =>
    `option "initial.${k}" must have the shape [${init[k].shape}] of the init's ${k}, got [${
      initial[k].shape
    }]`
  );
  if (issues.length > 0) throw new OptionsError("LoraLinear", issues);
}

/** `w` stored in the dtype of `like` (f16 or f32). */
function inDtypeOf(w: F32, like: F32 | F16): F32 | F16 {
  return like.dtype === "f16" ? w.cast("f16") as F16 : w;
}

/** What {@link LoraLinear.mergedAdapter} records of a layer it merges, to unmerge it later. */
export interface MergedAdapter {
  /** The adapter (A, B, rank, alpha, scale; no base). */
  init: LoraInit;
  /** The layer's options (dropout, DoRA, rsLoRA, seed, frozen B, the initial adapter of an offset init). */
  options: LoraLayerOptions;
  /** DoRA: the magnitudes `m` and the row norms `‖W_res + s·B·A‖` the merge divided by. */
  dora?: { magnitude: F32; norm: F32 };
  /** Whether the layer's base was rewritten by its init (see {@link LoraLinear.baseRewritten}). */
  baseRewritten: boolean;
  /** Whether the layer was in training mode. */
  training: boolean;
}

/** A weight holder with PEFT's field name (`lora_A.weight`). */
export interface WeightHolder {
  /** The tensor. */
  weight: F32;
}

/** A linear layer with a low-rank adapter. Build it with {@link LoraLinear.wrap}. */
export class LoraLinear extends Module implements LinearLayer, FreezingModule {
  /** The frozen base layer (weight `W_res`, and the original bias). */
  base_layer: Linear;
  /** `lora_A.weight`: `[r, d_in]`. */
  lora_A: WeightHolder;
  /** `lora_B.weight`: `[d_out, r]`. */
  lora_B: WeightHolder;
  /** DoRA magnitudes `[d_out]` (present with `useDora`). */
  declare lora_magnitude_vector?: F32;
  #scale: number;
  #alpha: number;
  #dropout: number;
  #seed: number;
  #calls = 0;
  #baseRewritten: boolean;
  #useRslora: boolean;
  #initial: { a: F32; b: F32 } | undefined;
  #freezeB: boolean;
  /** Dropout is applied only while this is true. */
  training = true;

  /** Use {@link LoraLinear.wrap}. */
  constructor(base: Linear, init: LoraInit, opts: LoraLayerOptions = {}) {
    super();
    checkOptions("LoraLinear", LAYER_OPTIONS, opts);
    checkOptions("LoraLinear: the init result", INIT_SCALARS, init);
    const [dOut, dIn] = base.weight.shape;
    if (init.a.shape.join() !== `${init.rank},${dIn}` || init.b.shape.join() !== `${dOut},${init.rank}`) {
      throw new RangeError(
        `LoRA init for a [${dOut}, ${dIn}] layer returned A [${init.a.shape}] and B [${init.b.shape}]; ` +
          `expected [${init.rank}, ${dIn}] and [${dOut}, ${init.rank}]`,
      );
    }
    checkInitial(init, opts.initial);
    const p = opts.dropout ?? 0;
    // A rewritten base keeps the storage dtype of the weight it replaces (an f16 base stays f16, as in PEFT).
    const rewritten = init.base !== undefined && base.weight.dtype === "f16"
      ? init.base.cast("f16")
      : init.base;
    this.base_layer = rewritten === undefined ? base : Linear.fromWeights(rewritten, base.bias);
    this.lora_A = { weight: init.a };
    this.lora_B = { weight: init.b };
    this.#scale = init.scale;
    this.#alpha = init.alpha;
    this.#dropout = p;
    this.#seed = opts.seed ?? 0;
    this.#baseRewritten = init.base !== undefined;
    this.#useRslora = opts.useRslora ?? false;
    this.#initial = init.base !== undefined ? opts.initial : undefined;
    this.#freezeB = opts.freezeB ?? false;
    if (opts.useDora) {
      // m = ‖W_res + s·B·A‖ per output row, computed after the init (so it includes B0·A0).
      this.lora_magnitude_vector = this.#combined().square().sum(1).sqrt() as F32;
    }
  }

  /** Wraps `base` with the adapter `init` (the result of any initialisation method). */
  static wrap(base: Linear, init: LoraInit, opts: LoraLayerOptions = {}): LoraLinear {
    return new LoraLinear(base, init, opts);
  }

  /** Input size. */
  get inFeatures(): number {
    return this.base_layer.inFeatures;
  }
  /** Output size. */
  get outFeatures(): number {
    return this.base_layer.outFeatures;
  }
  /** Rank of the adapter. */
  get rank(): number {
    return this.lora_A.weight.shape[0];
  }
  /** The scaling s applied to B·A. */
  get scale(): number {
    return this.#scale;
  }
  /** lora_alpha of this layer. */
  get alpha(): number {
    return this.#alpha;
  }
  /** True when the initialisation rewrote the base weight (offset and quantising inits). */
  get baseRewritten(): boolean {
    return this.#baseRewritten;
  }
  /** Dropout probability on the LoRA path's input. */
  get dropout(): number {
    return this.#dropout;
  }
  /** Whether the scale is rsLoRA's `alpha/√r`. */
  get useRslora(): boolean {
    return this.#useRslora;
  }
  /** Parameters of this layer that no optimiser trains: `lora_B.weight` with `freezeB` (see {@link FreezingModule}). */
  get frozenParameters(): readonly string[] {
    return this.#freezeB ? ["lora_B.weight"] : [];
  }
  /**
   * For an offset initialisation, the initial adapter `B₀`, `A₀` with `base = W − s·B₀·A₀`, so that
   * `W + s·[B, −B₀]·[A; A₀]` is the adapted weight on the original W; undefined otherwise.
   */
  get initialAdapter(): { a: F32; b: F32 } | undefined {
    return this.#initial;
  }

  /**
   * The layer's state besides its tensors: how many training forwards have drawn a dropout mask (the next mask's
   * key), saved by checkpoints so that a resumed run draws the masks an uninterrupted one would.
   */
  extraState(): Record<string, number> {
    return { dropoutCalls: this.#calls };
  }

  /**
   * The settings a resumed run must share with the run that wrote its checkpoint (see `ConfiguredModule`): rank,
   * alpha, scale, rsLoRA, dropout (with the seed of its masks), DoRA and frozen B.
   */
  runSettings(): Record<string, number | boolean> {
    return {
      rank: this.rank,
      alpha: this.#alpha,
      scale: this.#scale,
      useRslora: this.#useRslora,
      dropout: this.#dropout,
      ...(this.#dropout > 0 ? { dropoutSeed: this.#seed } : {}),
      useDora: this.lora_magnitude_vector !== undefined,
      freezeB: this.#freezeB,
    };
  }

  /** Takes back what {@link extraState} gave. */
  loadExtraState(state: Record<string, number>): void {
    const calls = state.dropoutCalls;
    if (!Number.isSafeInteger(calls) || calls < 0) {
      throw new RangeError(
        `LoraLinear: dropoutCalls must be a non-negative integer, got ${JSON.stringify(calls)}`,
      );
    }
    this.#calls = calls;
  }

  /** `W_res + s·B·A` (the dense weight the adapter currently represents, before DoRA's rescaling). */
  #combined(): F32 {
    const delta = this.lora_B.weight.matmul(this.lora_A.weight).mul(this.#scale);
    return asF32(this.base_layer.weight).add(delta) as F32;
  }

  /** The update the adapter adds to the base weight: `s·B·A` (or DoRA's `W' − W_res`). */
  deltaWeight(): F32 {
    return this.mergedWeight().sub(asF32(this.base_layer.weight)) as F32;
  }

  /** The dense weight of the adapted layer (`W_res + s·B·A`, or DoRA's `W'`). */
  mergedWeight(): F32 {
    const w = this.#combined();
    const m = this.lora_magnitude_vector;
    if (m === undefined) return w;
    const norm = stopGradient(w.square().sum(1, { keepdims: true }).sqrt() as F32);
    return w.div(norm).mul(m.reshape([-1, 1])) as F32;
  }

  /**
   * `x·W_resᵀ + b + s·dropout(x)·Aᵀ·Bᵀ`. DoRA: `x·W'ᵀ + b`; in training with dropout, PEFT's form
   * `x·W_resᵀ + b + (g − 1)·x̃·W_resᵀ + g·s·x̃·Aᵀ·Bᵀ` with `x̃ = dropout(x)` and `g = m / ‖W_res + s·B·A‖_row`
   * (detached norm), which is `x·W'ᵀ + b` without dropout.
   */
  forward(x: F32): Tensor<number[], "f32"> {
    const m = this.lora_magnitude_vector;
    const dropping = this.training && this.#dropout > 0;
    if (m !== undefined && !dropping) return linear(x, this.mergedWeight(), this.base_layer.bias);
    const base = this.base_layer.forward(x) as F32;
    let xin = x;
    if (dropping) {
      // nn's dropout takes its randomness from a key tensor, so every step reuses the same compiled kernel.
      xin = dropout(x, this.#dropout, { seed: deriveSeed(this.#seed, this.#calls++) }) as F32;
    }
    if (m !== undefined) {
      const g = m.div(stopGradient(this.#combined().square().sum(1).sqrt() as F32)) as F32;
      const lora = linear(linear(xin, this.lora_A.weight).mul(this.#scale) as F32, this.lora_B.weight);
      const residual = linear(xin, asF32(this.base_layer.weight)) as F32;
      return base.add(residual.mul(g.sub(1))).add(lora.mul(g)) as Tensor<number[], "f32">;
    }
    // s scales the rank-r activations rather than the output: the product is the same, the scaling fuses into
    // the down-projection's kernel, and the output's gradient reaches both matmuls unscaled (no extra pass).
    const down = (linear(xin, this.lora_A.weight) as F32).mul(this.#scale) as F32;
    return base.add(linear(down, this.lora_B.weight) as F32) as Tensor<number[], "f32">;
  }

  /**
   * A plain {@link Linear} computing the same function (the adapter folded into the weight). The merged weight is
   * computed in f32 and stored in the base's dtype, as PEFT merges (an f16 base gives an f16 merged weight).
   */
  merge(): Linear {
    return Linear.fromWeights(inDtypeOf(this.mergedWeight(), this.base_layer.weight), this.base_layer.bias);
  }

  /**
   * What {@link merge} folds into the weight, for {@link LoraLinear.unmerge} to take out again: the adapter, the
   * layer's options and, with DoRA, the row norms `‖W_res + s·B·A‖` it divides by (as PEFT caches them when merging:
   * the merged weight's rows have norm `m`, so it does not give them back).
   */
  mergedAdapter(): MergedAdapter {
    const m = this.lora_magnitude_vector;
    return {
      init: {
        a: this.lora_A.weight,
        b: this.lora_B.weight,
        rank: this.rank,
        alpha: this.#alpha,
        scale: this.#scale,
      },
      options: {
        dropout: this.#dropout,
        useDora: m !== undefined,
        seed: this.#seed,
        useRslora: this.#useRslora,
        freezeB: this.#freezeB,
        ...(this.#initial !== undefined ? { initial: this.#initial } : {}),
      },
      dora: m === undefined
        ? undefined
        : { magnitude: m, norm: stopGradient(this.#combined().square().sum(1).sqrt() as F32) },
      baseRewritten: this.#baseRewritten,
      training: this.training,
    };
  }

  /**
   * The inverse of {@link merge}: given a layer whose weight already contains the adapter, recovers the adapted
   * layer. From a {@link MergedAdapter} (what {@link mergedAdapter} gave), as PEFT unmerges: `W_res = W − s·B·A`, with
   * DoRA `W_res = W·‖W_res + s·B·A‖/m − s·B·A` (the norms kept at merge), and the layer's options, DoRA magnitude and
   * mode as they were. From a bare init result (e.g. a layer saved after merging and its plain LoRA adapter file):
   * `W_res = W − s·B·A`, a plain LoRA layer whose base counts as rewritten (an adapter file written from it carries
   * the base, which gives the right model whichever init made it).
   */
  static unmerge(merged: Linear, adapter: LoraInit | MergedAdapter): LoraLinear {
    if (!("init" in adapter)) {
      const delta = adapter.b.matmul(adapter.a).mul(adapter.scale);
      const base = asF32(merged.weight).sub(delta as F32) as F32;
      return new LoraLinear(merged, { ...adapter, base });
    }
    const { init, options, dora } = adapter;
    let w = asF32(merged.weight);
    if (dora !== undefined) w = w.mul(dora.norm.div(dora.magnitude).reshape([-1, 1])) as F32;
    const base = w.sub(init.b.matmul(init.a).mul(init.scale) as F32) as F32;
    const layer = adapter.baseRewritten
      ? new LoraLinear(merged, { ...init, base }, options)
      : new LoraLinear(Linear.fromWeights(inDtypeOf(base, merged.weight), merged.bias), init, options);
    if (dora !== undefined) layer.lora_magnitude_vector = dora.magnitude;
    layer.training = adapter.training;
    return layer;
  }
}
