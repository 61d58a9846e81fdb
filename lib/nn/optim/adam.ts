/**
 * Adam (Kingma & Ba, arXiv:1412.6980) with L2 weight decay, and AdamW (Loshchilov & Hutter, arXiv:1711.05101)
 * with decoupled weight decay, computed as `torch.optim.Adam` / `torch.optim.AdamW`.
 *
 * @module
 */
import { checkOptions } from "../../options.ts";
import { ADAM_OPTIONS } from "./options.ts";
import {
  type GroupScalars,
  Optimizer,
  type OptimizerOptions,
  type ResolvedGroup,
  type RuleResult,
} from "./optimizer.ts";
import type { F32 } from "../linear.ts";

/** Options of {@link Adam} and {@link AdamW}. */
export interface AdamOptions extends OptimizerOptions {
  /** Decay rates of the first and second moments (default [0.9, 0.999]). */
  betas?: readonly [number, number];
  /** Added to the denominator (default 1e-8). */
  eps?: number;
}

/**
 * The shared Adam update. Step `t` with learning rate `lr`:
 * `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)`.
 */
export abstract class AdamBase extends Optimizer {
  #beta1: number;
  #beta2: number;
  #eps: number;

  /** Validates the betas and eps and sets up the `exp_avg` and `exp_avg_sq` slots. */
  constructor(target: object, options: AdamOptions) {
    checkOptions(new.target.name, ADAM_OPTIONS, options);
    const [b1, b2] = options.betas ?? [0.9, 0.999];
    for (const b of [b1, b2]) {
      if (!(b >= 0 && b < 1)) throw new RangeError(`Adam: betas must be in [0, 1), got [${b1}, ${b2}]`);
    }
    const eps = options.eps ?? 1e-8;
    if (!(eps >= 0)) throw new RangeError(`Adam: eps must be >= 0, got ${eps}`);
    super(target, options, ["exp_avg", "exp_avg_sq"], ["lr", "stepSize", "invSqrtBc2"]);
    this.#beta1 = b1;
    this.#beta2 = b2;
    this.#eps = eps;
  }

  /** Whether weight decay is decoupled (AdamW) rather than added to the gradient (Adam). */
  protected abstract get decoupled(): boolean;

  /** Betas and eps. */
  get hyperparameters(): Record<string, number | boolean> {
    return { beta1: this.#beta1, beta2: this.#beta2, eps: this.#eps };
  }

  /** `[lr, lr / (1 − β₁ᵗ), 1 / √(1 − β₂ᵗ)]`. */
  protected scalars(group: ResolvedGroup, step: number, lrScale: number): number[] {
    const lr = group.lr * lrScale;
    const bc1 = 1 - this.#beta1 ** step;
    const bc2 = 1 - this.#beta2 ** step;
    return [lr, lr / bc1, 1 / Math.sqrt(bc2)];
  }

  /** The update of one parameter. */
  protected rule(p: F32, g: F32, state: F32[], s: GroupScalars, group: ResolvedGroup): RuleResult {
    const wd = group.weightDecay;
    const grad = !this.decoupled && wd > 0 ? g.add(p.mul(wd)) as F32 : g;
    const m = state[0].mul(this.#beta1).add(grad.mul(1 - this.#beta1)) as F32;
    const v = state[1].mul(this.#beta2).add(grad.square().mul(1 - this.#beta2)) as F32;
    const denom = v.sqrt().mul(s.invSqrtBc2).add(this.#eps) as F32;
    // AdamW: p ← p − lr·λ·p before the Adam step (decoupled decay).
    const base = this.decoupled && wd > 0 ? p.sub(p.mul(s.lr).mul(wd)) as F32 : p;
    return { param: base.sub(m.div(denom).mul(s.stepSize)) as F32, state: [m, v] };
  }
}

/**
 * Adam with L2 weight decay (`g ← g + λp`, as `torch.optim.Adam`). Defaults: betas [0.9, 0.999], eps 1e-8,
 * weight decay 0.
 *
 * @example
 * ```ts
 * import { Mlp } from "../mlp.ts";
 * import { Adam } from "./adam.ts";
 * const model = new Mlp([4, 16, 2], { seed: 0 });
 * const opt = new Adam(model, { lr: 1e-3 });
 * ```
 */
export class Adam extends AdamBase {
  /** An optimiser for the trainable parameters of `target`. */
  constructor(target: object, options: AdamOptions) {
    super(target, options);
  }

  /** `"Adam"`. */
  get name(): string {
    return "Adam";
  }

  /** False: decay is added to the gradient. */
  protected get decoupled(): boolean {
    return false;
  }
}

/**
 * AdamW: Adam with decoupled weight decay `p ← p − lr·λ·p` (as `torch.optim.AdamW`). Defaults: betas
 * [0.9, 0.999], eps 1e-8, weight decay 0.01. Groups give LoRA+ its separate rate for `B`.
 *
 * @example
 * ```ts
 * import { Mlp } from "../mlp.ts";
 * import { AdamW } from "./adam.ts";
 * const model = new Mlp([4, 16, 2], { seed: 0 });
 * const opt = new AdamW(model, {
 *   lr: 1e-3,
 *   weightDecay: 0.01,
 *   groups: [{ name: "head", params: /^layers\.1\./, lr: 1e-2, weightDecay: 0 }],
 * });
 * ```
 */
export class AdamW extends AdamBase {
  /** An optimiser for the trainable parameters of `target`. */
  constructor(target: object, options: AdamOptions) {
    super(target, { ...options, weightDecay: options.weightDecay ?? 0.01 });
  }

  /** `"AdamW"`. */
  get name(): string {
    return "AdamW";
  }

  /** True: decay is applied to the parameter directly. */
  protected get decoupled(): boolean {
    return true;
  }
}
