/**
 * OLoRA — Orthonormal Low-Rank Adaptation (Büyükakyüz 2024, arXiv 2406.01775; PEFT `init_lora_weights="olora"`).
 * With the thin QR `W = Q R` (Householder, LAPACK's sign convention):
 *
 *   `B = Q[:, :r]`,  `A = R[:r, :]`,  `W_res = W − s·B·A`   (no division by s, unlike PiSSA)
 *
 * so `B·A = Q_r Q_rᵀ W`, B has orthonormal columns spanning the first r columns of W, and `A[:, :r]` is upper
 * triangular (METHODS.md §5).
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { oloraInit } from "./olora.ts";
 * const { a, b, base } = await oloraInit(randn([32, 24], { seed: 0 }), { rank: 4 });
 * console.log(a.shape, b.shape, base!.shape); // [4, 24] [32, 4] [32, 24]
 * ```
 *
 * @module
 */
import { qr } from "../linalg/qr.ts";
import { disposeUnless } from "../linalg/common.ts";
import { realize, type Tensor } from "../tensor/tensor.ts";
import { z } from "../../deps.ts";
import {
  checkInitOptions,
  checkInputsFinite,
  checkLayer,
  type CommonInitOptions,
  type F32,
  type LoraInit,
  loraScale,
} from "./types.ts";

/** Options of {@link oloraInit} (the common ones only). */
export type OloraOptions = CommonInitOptions;

/** Options of `olora` besides the common ones: none. */
export const OLORA_OPTIONS = z.object({});

/**
 * OLoRA: the first r columns of Q and rows of R from the thin QR of W (deterministic).
 * Throws when the rank is not in `1..min(d_out, d_in)`.
 */
export async function oloraInit(weight: F32, opts: OloraOptions = {}): Promise<LoraInit> {
  checkInitOptions("olora", OLORA_OPTIONS, opts);
  const rank = opts.rank ?? 8;
  checkLayer("olora", weight, rank);
  await checkInputsFinite("olora", { weight });
  const alpha = opts.alpha ?? rank;
  const scale = loraScale(alpha, rank, opts.useRslora);
  const f = await qr(weight as Tensor<[number, number], "f32">);
  const b = f.q.slice(null, [0, rank]);
  const a = f.r.slice([0, rank]);
  const base = weight.sub(b.matmul(a).mul(scale));
  await realize(a, b, base);
  disposeUnless(f.q, a, b, base);
  disposeUnless(f.r, a, b, base);
  return { a, b, base, rank, alpha, scale };
}
