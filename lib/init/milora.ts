/**
 * MiLoRA — Minor singular component LoRA (Wang et al., NAACL 2025, arXiv 2406.09044; official `svd_init.py`,
 * mode `min`). PiSSA's split applied to the r **smallest** singular triplets of `W = U S Vᵀ` (K = min(d_out, d_in)):
 *
 *   `S_m = S[K−r:] / s`,  `A = diag(√S_m) Vᵀ[K−r:]`,  `B = U[:, K−r:] diag(√S_m)`,  `W_res = W − s·B·A`
 *
 * so the base keeps the principal part of W and the adapter starts on the minor subspace (METHODS.md §4).
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { miloraInit } from "./milora.ts";
 * const { a, b, base } = await miloraInit(randn([32, 24], { seed: 0 }), { rank: 4 });
 * console.log(a.shape, b.shape, base!.shape); // [4, 24] [32, 4] [32, 24]
 * ```
 *
 * @module
 */
import { svd } from "../linalg/svd.ts";
import { disposeUnless } from "../linalg/common.ts";
import type { Tensor } from "../tensor/tensor.ts";
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
import { splitTriplets, warnZeroTriplets } from "./pissa.ts";

/** Options of {@link miloraInit} (the common ones only). */
export type MiloraOptions = CommonInitOptions;

/** Options of `milora` besides the common ones: none. */
export const MILORA_OPTIONS = z.object({});

/**
 * MiLoRA: the r minor singular triplets of W become the adapter (exact SVD, deterministic).
 * Throws when the rank is not in `1..min(d_out, d_in)`.
 */
export async function miloraInit(weight: F32, opts: MiloraOptions = {}): Promise<LoraInit> {
  checkInitOptions("milora", MILORA_OPTIONS, opts);
  const rank = opts.rank ?? 8;
  const [dOut, dIn] = checkLayer("milora", weight, rank);
  await checkInputsFinite("milora", { weight });
  const alpha = opts.alpha ?? rank;
  const scale = loraScale(alpha, rank, opts.useRslora);
  const k = Math.min(dOut, dIn);
  const f = await svd(weight as Tensor<[number, number], "f32">);
  const sv = (await f.s.data()) as Float32Array;
  warnZeroTriplets("milora", weight.shape, sv, Array.from({ length: rank }, (_, i) => k - rank + i));
  const { a, b, base } = await splitTriplets(weight, {
    u: f.u.slice(null, [k - rank, k]),
    s: f.s.slice([k - rank, k]),
    vh: f.vh.slice([k - rank, k]),
  }, scale);
  for (const x of [f.u, f.s, f.vh]) disposeUnless(x, a, b, base);
  return { a, b, base, rank, alpha, scale };
}
