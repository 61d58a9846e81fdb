/**
 * LoftQ — LoRA-Fine-Tuning-aware Quantization (Li et al., ICLR 2024, arXiv 2310.08659; PEFT
 * `utils/loftq_utils.py::loftq_init`). Alternates NF4 quantisation and a rank-r SVD of the quantisation error
 * (paper Alg. 1, METHODS.md §6):
 *
 *   `res = W;  for t = 1..T:  Q_t = qdq(res),  L_t R_t = SVD_r(W − Q_t) (L = U_r √S_r, R = √S_r Vᵀ_r),
 *    res = W − L_t R_t`;   base = `Q_T`, `A = R_T`, `B = L_T`,
 *
 * which minimises `‖W − Q − B·A‖_F`. `qdq` is bitsandbytes' NF4 with blocks of 64 consecutive elements of the
 * row-major weight. The base is the dequantised Q in float32, exactly on the NF4 grid (re-quantising it gives it
 * back). As in PEFT the scaling is ignored (`B·A ≈ W − Q`, so the layer starts at `Q + s·B·A`, which
 * approximates W only when alpha = r); `compensateScale` divides A and B by √s so that `Q + s·B·A ≈ W`.
 * `info.errors[t−1] = ‖W − Q_t − L_t R_t‖_F` for every iteration and `info.quantizationError = ‖W − qdq(W)‖_F`.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { loftqInit } from "./loftq.ts";
 * const { base, info } = await loftqInit(randn([32, 64], { seed: 0 }), { rank: 4, iterations: 3 });
 * console.log(base!.shape, info!.errors); // [32, 64] [e1, e2, e3]
 * ```
 *
 * @module
 */
import { svd } from "../linalg/svd.ts";
import { nf4Qdq } from "../linalg/nf4.ts";
import { concat } from "../tensor/creation.ts";
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
import { warnZeroTriplets } from "./pissa.ts";

/** Options of {@link loftqInit}. */
export interface LoftqOptions extends CommonInitOptions {
  /** Alternating steps T (default 1, PEFT's `loftq_iter`; the official scripts use 5). */
  iterations?: number;
  /** NF4 block size (default 64, bitsandbytes' `Params4bit` default). */
  blockSize?: number;
  /** Divide A and B by √s so that `Q + s·B·A ≈ W` when alpha ≠ r (default false: PEFT's `B·A ≈ W − Q`). */
  compensateScale?: boolean;
}

/** The options schema of {@link loftqInit} (the registry's). */
export const LOFTQ_OPTIONS = z.object({
  iterations: z.number().int().min(1).default(1).describe(
    "alternating quantise/SVD steps (PEFT's loftq_iter default 1; the official scripts use 5)",
  ),
  blockSize: z.number().int().min(1).max(4096).default(64).describe(
    "NF4 block size (bitsandbytes Params4bit default 64)",
  ),
  compensateScale: z.boolean().default(false).describe(
    "divide A and B by √s so that Q + s·B·A ≈ W when alpha ≠ r (PEFT ignores s)",
  ),
});

/**
 * LoftQ with 4-bit NormalFloat quantisation: returns the quantised base and the low-rank correction.
 * Deterministic. Throws when the rank is not in `1..min(d_out, d_in)` or `iterations` is not a positive integer.
 */
export async function loftqInit(weight: F32, opts: LoftqOptions = {}): Promise<LoraInit> {
  checkInitOptions("loftq", LOFTQ_OPTIONS, opts);
  const rank = opts.rank ?? 8;
  checkLayer("loftq", weight, rank);
  await checkInputsFinite("loftq", { weight });
  const alpha = opts.alpha ?? rank;
  const scale = loraScale(alpha, rank, opts.useRslora);
  const iterations = opts.iterations ?? 1;
  const blockSize = opts.blockSize ?? 64;
  let res: F32 = weight;
  let q: F32 | null = null;
  let l: F32 | null = null;
  let r: F32 | null = null;
  const errors: F32[] = [];
  let quantError: F32 | null = null;
  let lastS: F32 | null = null; // singular values of the last W − Q_t
  for (let t = 0; t < iterations; t++) {
    const qt = await nf4Qdq(res, { blockSize });
    const diff = weight.sub(qt);
    await realize(diff);
    const f = await svd(diff);
    const root = f.s.slice([0, rank]).sqrt();
    const lt = f.u.slice(null, [0, rank]).mul(root);
    const rt = f.vh.slice([0, rank]).mul(root.reshape([rank, 1]));
    const err = diff.sub(lt.matmul(rt)).square().sum().sqrt().reshape([1]);
    const next = t + 1 < iterations ? weight.sub(lt.matmul(rt)) : null;
    const extra: F32[] = [];
    if (t === 0) {
      quantError = diff.square().sum().sqrt().reshape([1]);
      extra.push(quantError);
    }
    await realize(qt, lt, rt, err, ...extra, ...(next === null ? [] : [next]));
    if (t + 1 < iterations) f.s.dispose();
    else lastS = f.s;
    f.vh.dispose();
    diff.dispose();
    if (res !== weight) res.dispose();
    q?.dispose();
    l?.dispose();
    r?.dispose();
    q = qt;
    l = lt;
    r = rt;
    errors.push(err);
    if (next !== null) res = next;
  }
  let a = r!;
  let b = l!;
  if (opts.compensateScale === true) {
    const root = Math.sqrt(scale);
    a = r!.div(root);
    b = l!.div(root);
    await realize(a, b);
    r!.dispose();
    l!.dispose();
  }
  const report = await concat([quantError!, ...errors, lastS!]).data() as Float32Array;
  for (const e of [quantError!, ...errors, lastS!]) e.dispose();
  // W on the NF4 grid (an all-zero W included) leaves no error to correct: A = B = 0.
  warnZeroTriplets(
    "loftq",
    weight.shape,
    report.subarray(1 + iterations),
    [...Array(rank).keys()],
    `the quantisation error W − Q of the [${weight.shape}] weight`,
  );
  return {
    a,
    b,
    base: q!,
    rank,
    alpha,
    scale,
    info: {
      errors: Array.from(report.subarray(1, 1 + iterations)),
      quantizationError: report[0],
      iterations,
      blockSize,
      compensateScale: opts.compensateScale === true,
    },
  };
}
