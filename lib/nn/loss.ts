/**
 * Losses: softmax cross-entropy (stable, with an ignore index and per-target weights or masks, with a fused
 * backward pass) and mean squared error.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { customVjp } from "../autodiff/grad.ts";
import { checkOptions, opt } from "../options.ts";
import type { Shape } from "../shape.ts";
import { checkHostValues, type Tensor } from "../tensor/tensor.ts";
import type { F32 } from "./linear.ts";

/** How per-element losses are combined: their weighted mean, their weighted sum, or none (per element). */
export type Reduction = "mean" | "sum" | "none";

const REDUCTION = z.enum(["mean", "sum", "none"]);
const CROSS_ENTROPY_OPTIONS = z.object({
  ignoreIndex: z.int().optional(),
  weights: opt.tensor().optional(),
  reduction: REDUCTION.optional(),
}).strict();
const MSE_OPTIONS = z.object({ reduction: REDUCTION.optional() }).strict();

/** Options of {@link crossEntropy}. */
export interface CrossEntropyOptions {
  /** Targets equal to this are ignored (default -100, as PyTorch). */
  ignoreIndex?: number;
  /**
   * Per-target weights or a 0/1 label mask, shaped like `targets` (e.g. 1 on answer tokens, 0 on the prompt).
   * Multiplied with the ignore-index mask. Gradients flow to them: d/dw of the weighted sum is the per-target loss.
   */
  weights?: F32;
  /**
   * `"mean"` (default: weighted mean over the kept targets; 0, with gradients 0, when none is kept or their weights
   * sum to 0, where PyTorch gives NaN), `"sum"` or `"none"`.
   */
  reduction?: Reduction;
}

/**
 * Softmax cross-entropy of `logits` (`[..., classes]`) against integer `targets` (`[...]`):
 * `logsumexp(logits) − logits[target]` per position, computed stably. Its gradient is the fused
 * `(softmax(logits) − onehot(target)) · weight`. A target outside `0 .. classes − 1` other than `ignoreIndex` is
 * refused when it is still on the host; one computed on the device makes its line's loss and gradient NaN (kernels
 * cannot throw), so the loss is NaN rather than silently wrong.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { crossEntropy } from "./loss.ts";
 * const logits = tensor([[2, 0, 0], [0, 1, 0], [0, 0, 0]]);
 * const targets = tensor([0, 1, -100], { dtype: "i32" });
 * const loss = crossEntropy(logits, targets); // mean over the first two rows
 * console.log(await loss.item());
 * ```
 */
export function crossEntropy(
  logits: F32,
  targets: Tensor<Shape, "i32">,
  opts: CrossEntropyOptions = {},
): Tensor<number[], "f32"> {
  checkOptions("crossEntropy", CROSS_ENTROPY_OPTIONS, opts);
  if (logits.ndim < 1) throw new RangeError("crossEntropy: logits need a class axis");
  const lead = logits.shape.slice(0, -1);
  const classes = logits.shape[logits.ndim - 1];
  if (targets.dtype !== "i32") throw new TypeError(`crossEntropy: targets must be i32, got ${targets.dtype}`);
  if (targets.shape.join() !== lead.join()) {
    throw new RangeError(
      `crossEntropy: targets [${targets.shape.join(", ")}] must have the shape of logits [${
        logits.shape.join(", ")
      }] ` +
        `without its last axis`,
    );
  }
  if (opts.weights !== undefined && opts.weights.shape.join() !== lead.join()) {
    throw new RangeError(
      `crossEntropy: weights [${opts.weights.shape.join(", ")}] must be shaped like targets [${
        lead.join(", ")
      }]`,
    );
  }
  if (opts.weights !== undefined && opts.weights.dtype !== "f32") {
    throw new TypeError(
      `crossEntropy: weights must be f32, got ${opts.weights.dtype} (a mask of 0/1 as weights: mask.cast("f32"))`,
    );
  }
  for (const [name, t] of [["targets", targets], ["weights", opts.weights]] as const) {
    if (t !== undefined && t.device !== logits.device) {
      throw new Error(
        `crossEntropy: ${name} are on ${t.device} and logits on ${logits.device}: move one with await t.to(device)`,
      );
    }
  }
  const ignore = opts.ignoreIndex ?? -100;
  // Targets still on the host are checked: past the classes, a one-hot is all zeros and the loss silently wrong.
  checkHostValues(targets, {
    op: "crossEntropy",
    noun: "target",
    limit: classes,
    allow: ignore,
    rule: `is neither one of the ${classes} classes (0..${classes - 1}) nor the ignore index ${ignore}`,
  });
  const reduction = opts.reduction ?? "mean";
  const keep = targets.ne(ignore);
  // Ignored lines take class 0 (oneHot refuses the ignore index on the host); they are selected away below.
  const hit = keep.where(targets, 0).oneHot(classes, "bool");
  // A kept target past the classes (computed on the device, so not checked above) has a one-hot of zeros: its line
  // is NaN, loss and gradient, instead of logsumexp(logits).
  // bad = keep && (target < 0 || target >= classes)
  const bad = keep.where(targets.ge(0).where(targets.ge(classes), keep), keep);
  // The target logit is selected, not multiplied by a one-hot (a -inf logit times 0 is NaN); an ignored line is 0
  // whatever its logits.
  const perLine = customVjp(
    (lg: F32) => bad.where(NaN, keep.where(lg.logsumexp(-1).sub(hit.where(lg, 0).sum(-1)), 0)) as F32,
    // d/dlogits = (softmax − onehot) · g, 0 on ignored lines, NaN on bad ones
    (g, _out, lg) => {
      const d = lg.softmax(-1).sub(hit.cast("f32")).mul(g.unsqueeze(-1) as F32);
      return [bad.unsqueeze(-1).where(NaN, keep.unsqueeze(-1).where(d, 0)) as F32];
    },
  );
  // Weights enter outside the fused rule, so that gradients flow to them too (d/dw of Σ w·CE is the CE).
  const w = (opts.weights === undefined ? keep.cast("f32") : keep.where(opts.weights, 0)) as F32;
  const rows = perLine(logits).mul(w) as F32;
  if (reduction === "none") return rows as Tensor<number[], "f32">;
  const total = rows.sum() as F32;
  if (reduction === "sum") return total as Tensor<number[], "f32">;
  // The mean divides by the total weight, however small. A total of 0 (every target ignored, or weights of 0) gives
  // 0, not 0/0: the division then sees 1, so that the branch not taken has a gradient of 0 too.
  const den = w.sum() as F32;
  const empty = den.eq(0);
  return empty.where(0, total.div(empty.where(1, den))) as Tensor<number[], "f32">;
}

/** Options of {@link mse}. */
export interface MseOptions {
  /** `"mean"` (default), `"sum"` or `"none"`. */
  reduction?: Reduction;
}

/**
 * Mean squared error `mean((pred − target)²)` (with broadcasting between the two).
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { mse } from "./loss.ts";
 * console.log(await mse(tensor([1, 2]), tensor([0, 4])).item()); // 2.5
 * ```
 */
export function mse(pred: F32, target: F32, opts: MseOptions = {}): Tensor<number[], "f32"> {
  checkOptions("mse", MSE_OPTIONS, opts);
  const sq = pred.sub(target).square() as F32;
  const reduction = opts.reduction ?? "mean";
  if (reduction === "none") return sq as Tensor<number[], "f32">;
  return (reduction === "sum" ? sq.sum() : sq.mean()) as Tensor<number[], "f32">;
}
