/**
 * Gradient norms and global-norm clipping, computed on the device (no readback).
 *
 * @module
 */
import { full } from "../../tensor/creation.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { ParamDict } from "../module.ts";
import type { F32 } from "../linear.ts";

/** `Σ x²` over every element of every tensor, as a scalar tensor. */
export function sumOfSquares(tensors: readonly Tensor[]): Tensor<[], "f32"> {
  if (tensors.length === 0) throw new RangeError("sumOfSquares: no tensors");
  let acc: F32 | null = null;
  for (const t of tensors) {
    const s = (t as F32).square().sum() as F32;
    acc = acc === null ? s : acc.add(s) as F32;
  }
  return acc as Tensor<[], "f32">;
}

/**
 * The L2 norm of all elements of all tensors together (`√Σ‖t‖²`), as a scalar tensor.
 *
 * @example
 * ```ts
 * import { tensor } from "../../tensor/creation.ts";
 * import { globalNorm } from "./clip.ts";
 * console.log(await globalNorm([tensor([3]), tensor([[4]])]).item()); // 5
 * ```
 */
export function globalNorm(tensors: readonly Tensor[] | ParamDict): Tensor<[], "f32"> {
  const list = Array.isArray(tensors) ? tensors : Object.values(tensors as ParamDict);
  return (sumOfSquares(list) as F32).sqrt() as Tensor<[], "f32">;
}

/** What {@link clipByGlobalNorm} returns. */
export interface ClipResult {
  /** The clipped gradients (lazy). */
  grads: ParamDict;
  /** The global norm before clipping. */
  norm: Tensor<[], "f32">;
  /** The factor applied, `min(1, maxNorm / (norm + 1e-6))`. */
  scale: Tensor<[], "f32">;
}

/**
 * Scales all gradients by `min(1, maxNorm / (norm + 1e-6))`, where `norm` is their global L2 norm (as
 * `torch.nn.utils.clip_grad_norm_`). Pass `norm` when it is already computed.
 *
 * @example
 * ```ts
 * import { tensor } from "../../tensor/creation.ts";
 * import { clipByGlobalNorm } from "./clip.ts";
 * const { grads, norm } = clipByGlobalNorm({ w: tensor([3, 4]) }, 1);
 * console.log(await norm.item(), await grads.w.toArray()); // 5 [≈0.6, ≈0.8]
 * ```
 */
export function clipByGlobalNorm(
  grads: ParamDict,
  maxNorm: number,
  opts: { norm?: Tensor<[], "f32"> } = {},
): ClipResult {
  if (!(maxNorm > 0)) throw new RangeError(`clipByGlobalNorm: maxNorm must be > 0, got ${maxNorm}`);
  const norm = opts.norm ?? globalNorm(grads);
  const first = Object.values(grads)[0];
  const limit = full([], maxNorm, { device: first?.device });
  const scale = limit.div((norm as F32).add(1e-6)).minimum(1) as Tensor<[], "f32">;
  const out: ParamDict = {};
  for (const [k, g] of Object.entries(grads)) out[k] = (g as F32).mul(scale as F32);
  return { grads: out, norm, scale };
}
