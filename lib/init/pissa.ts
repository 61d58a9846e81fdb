/**
 * PiSSA — Principal Singular values and Singular vectors Adaptation (Meng, Wang & Zhang, NeurIPS 2024,
 * arXiv 2404.02948; PEFT `init_lora_weights="pissa"` / `"pissa_niter_K"`). With `W = U S Vᵀ` and
 * `S_r ← S_r / s`:
 *
 *   `A = diag(√S_r) Vᵀ[:r]`,  `B = U[:, :r] diag(√S_r)`,  `W_res = W − s·B·A = W − U_r S_r V_rᵀ`.
 *
 * The exact variant (default) uses the thin SVD; `{ niter: K }` uses the randomized SVD with the semantics of
 * `torch.svd_lowrank(W, q = r, niter = K)` (no oversampling), which for slowly decaying spectra is not exact
 * (METHODS.md §3).
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { pissaInit } from "./pissa.ts";
 * const w = randn([32, 24], { seed: 0 });
 * const exact = await pissaInit(w, { rank: 4 });
 * const fast = await pissaInit(w, { rank: 4, niter: 16, seed: 1 });
 * console.log(exact.a.shape, exact.b.shape, exact.base!.shape, fast.info); // ... { svd: "randomized", niter: 16 }
 * ```
 *
 * @module
 */
import { svd } from "../linalg/svd.ts";
import { svdLowRank } from "../linalg/svd_lowrank.ts";
import { disposeUnless } from "../linalg/common.ts";
import { realize } from "../tensor/tensor.ts";
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

/** Options of {@link pissaInit}. */
export interface PissaOptions extends CommonInitOptions {
  /**
   * Power iterations of the randomized SVD (`torch.svd_lowrank(W, q = r, niter)`, PEFT's `pissa_niter_K`).
   * Unset (default): the exact SVD.
   */
  niter?: number;
  /** Use the exact SVD even when `niter` is set (default false). */
  exact?: boolean;
}

/** The options schema of {@link pissaInit} (the registry's). */
export const PISSA_OPTIONS = z.object({
  niter: z.number().int().min(0).optional().describe(
    "power iterations of the randomized SVD (torch.svd_lowrank, q = r); default: unset = exact SVD",
  ),
  exact: z.boolean().default(false).describe("use the exact SVD even when niter is set"),
});

/** Selected singular triplets of a weight: `U_sel [d_out, r]`, `S_sel [r]`, `Vᵀ_sel [r, d_in]`. */
export interface Triplets {
  /** Left singular vectors as columns, `[d_out, r]`. */
  u: F32;
  /** Singular values, `[r]`. */
  s: F32;
  /** Right singular vectors as rows (for CorDA the rows of `Vᵀ = Vh·C⁻¹`, not orthonormal), `[r, d_in]`. */
  vh: F32;
}

/**
 * The split shared by PiSSA, MiLoRA and CorDA: `S ← S/s`, `A = diag(√S) Vᵀ`, `B = U diag(√S)`, and the base
 * `W − s·B·A` computed from the returned factors (so `base + s·B·A = W` up to float32 rounding). Returns
 * realized tensors; `t` is left for the caller to dispose.
 */
export async function splitTriplets(
  weight: F32,
  t: Triplets,
  scale: number,
): Promise<{ a: F32; b: F32; base: F32 }> {
  const r = t.s.shape[0];
  const root = t.s.div(scale).sqrt();
  const a = t.vh.mul(root.reshape([r, 1]));
  const b = t.u.mul(root);
  const base = weight.sub(b.matmul(a).mul(scale));
  await realize(a, b, base);
  return { a, b, base };
}

/**
 * Warns when some of the singular values an adapter starts from are numerically zero (at most
 * `max(d_out, d_in)·2⁻²³·σ_max`, numpy's matrix-rank tolerance in float32): a weight of lower rank than the adapter
 * (PiSSA) or than `min(d_out, d_in) − r + 1` (MiLoRA), an all-zero weight, a zero quantisation error (LoftQ), a
 * zero update (CNTLoRA). Those rows of A and columns of B start at ≈ 0, in directions the matrix does not have, and
 * receive almost no gradient; when every one is zero, A and B are both ≈ 0 and the adapter does not train at all
 * (the gradient of A is scaled by B and that of B by A).
 *
 * @param method The method's name, for the message.
 * @param shape The layer's weight shape `[d_out, d_in]`.
 * @param all Every singular value of the matrix the adapter is cut from, descending.
 * @param chosen The indices into `all` the adapter starts from.
 * @param of That matrix, for the message (default: `the [d_out,d_in] weight`).
 */
export function warnZeroTriplets(
  method: string,
  shape: readonly number[],
  all: Float32Array,
  chosen: number[],
  of = `the [${shape}] weight`,
): void {
  const tol = Math.max(shape[0], shape[1]) * 2 ** -23 * all[0];
  const zero = chosen.filter((i) => !(all[i] > tol)).length;
  if (zero === 0) return;
  const rank = all.filter((v) => v > tol).length;
  const consequence = zero === chosen.length
    ? "A and B both start at ≈ 0, and as the gradient of each is scaled by the other, the adapter does not train"
    : "those rows of A and columns of B start at ≈ 0 and get almost no gradient";
  console.warn(
    `${method}: ${zero} of the ${chosen.length} singular values the adapter starts from are numerically zero ` +
      `(${of} has rank ${rank}): ${consequence}`,
  );
}

/**
 * PiSSA: the r principal singular triplets of W become the adapter and the rest stays in the base weight.
 * Deterministic with the exact SVD (default); with `niter` the randomized SVD is seeded by `seed`.
 * Throws when the rank is not in `1..min(d_out, d_in)`.
 */
export async function pissaInit(weight: F32, opts: PissaOptions = {}): Promise<LoraInit> {
  checkInitOptions("pissa", PISSA_OPTIONS, opts);
  const rank = opts.rank ?? 8;
  checkLayer("pissa", weight, rank);
  await checkInputsFinite("pissa", { weight });
  const alpha = opts.alpha ?? rank;
  const scale = loraScale(alpha, rank, opts.useRslora);
  const randomized = opts.niter !== undefined && opts.exact !== true;
  const f = randomized
    ? await svdLowRank(weight, rank, { niter: opts.niter, seed: opts.seed ?? 0 })
    : await svd(weight);
  const sv = (await f.s.data()) as Float32Array;
  // The randomized SVD gives only r values: it can tell an all-zero start (σ_max = 0), not the weight's rank.
  if (!randomized || !(sv[0] > 0)) warnZeroTriplets("pissa", weight.shape, sv, [...Array(rank).keys()]);
  const t: Triplets = {
    u: f.u.slice(null, [0, rank]),
    s: f.s.slice([0, rank]),
    vh: f.vh.slice([0, rank]),
  };
  const { a, b, base } = await splitTriplets(weight, t, scale);
  for (const x of [f.u, f.s, f.vh]) disposeUnless(x, a, b, base);
  return {
    a,
    b,
    base,
    rank,
    alpha,
    scale,
    info: randomized ? { svd: "randomized", niter: opts.niter! } : { svd: "exact" },
  };
}
