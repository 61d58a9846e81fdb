/**
 * Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay, as `torch.optim.SGD`
 * with zero dampening.
 *
 * @module
 */
import { checkOptions } from "../../options.ts";
import { SGD_OPTIONS } from "./options.ts";
import {
  type GroupScalars,
  Optimizer,
  type OptimizerOptions,
  type ResolvedGroup,
  type RuleResult,
} from "./optimizer.ts";
import type { F32 } from "../linear.ts";

/** Options of {@link SGD}. */
export interface SgdOptions extends OptimizerOptions {
  /** Momentum factor μ (default 0: plain SGD, no state). */
  momentum?: number;
  /** Nesterov momentum (default false; needs momentum > 0). */
  nesterov?: boolean;
}

/**
 * SGD. With gradient `g`, weight decay `λ` and momentum `μ`, each step computes `d = g + λ·p`, then with
 * momentum `b ← μ·b + d` and `d = b` (or `d + μ·b` with Nesterov), and `p ← p − lr·d`. The buffer starts at
 * zero, which equals PyTorch's first-step copy.
 *
 * @example
 * ```ts
 * import { Linear } from "../linear.ts";
 * import { SGD } from "./sgd.ts";
 * const model = new Linear(8, 2, { seed: 0 });
 * const opt = new SGD(model, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-4 });
 * ```
 */
export class SGD extends Optimizer {
  #momentum: number;
  #nesterov: boolean;

  /** An optimiser for the trainable parameters of `target`. */
  constructor(target: object, options: SgdOptions) {
    checkOptions("SGD", SGD_OPTIONS, options);
    const momentum = options.momentum ?? 0;
    if (!(momentum >= 0 && momentum < 1)) {
      throw new RangeError(`SGD: momentum must be in [0, 1), got ${momentum}`);
    }
    if (options.nesterov && momentum === 0) throw new RangeError("SGD: nesterov needs a momentum > 0");
    super(target, options, momentum > 0 ? ["momentum_buffer"] : [], ["lr"]);
    this.#momentum = momentum;
    this.#nesterov = options.nesterov ?? false;
  }

  /** `"SGD"`. */
  get name(): string {
    return "SGD";
  }

  /** Momentum and Nesterov flag. */
  get hyperparameters(): Record<string, number | boolean> {
    return { momentum: this.#momentum, nesterov: this.#nesterov };
  }

  /** `[lr · lrScale]`. */
  protected scalars(group: ResolvedGroup, _step: number, lrScale: number): number[] {
    return [group.lr * lrScale];
  }

  /** `p − lr·d` with `d` as described on the class. */
  protected rule(p: F32, g: F32, state: F32[], s: GroupScalars, group: ResolvedGroup): RuleResult {
    let d = group.weightDecay > 0 ? g.add(p.mul(group.weightDecay)) as F32 : g;
    const next: F32[] = [];
    if (this.#momentum > 0) {
      const buf = state[0].mul(this.#momentum).add(d) as F32;
      next.push(buf);
      d = this.#nesterov ? d.add(buf.mul(this.#momentum)) as F32 : buf;
    }
    return { param: p.sub(d.mul(s.lr)) as F32, state: next };
  }
}
