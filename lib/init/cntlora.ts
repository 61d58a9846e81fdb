/**
 * CNTLoRA — ConsNoTrainLoRA (Das, Park, Hayat, Choi, Yun & Porikli, arXiv 2507.08044): a closed-form target weight
 * from constraints between pre-training and fine-tuning activations, decomposed into B and A, with optional
 * variance-based rank allocation across layers (VAS).
 *
 * @module
 */
import { realize } from "../tensor/tensor.ts";
import { tensor } from "../tensor/creation.ts";
import { svd, svdRows } from "../linalg/svd.ts";
import { qr } from "../linalg/qr.ts";
import { F32_EPS, pinv } from "../linalg/pinv.ts";
import { randn } from "../tensor/creation.ts";
import { deriveSeed } from "../nn/init.ts";
import type { InitLayer } from "./registry.ts";
import { z } from "../../deps.ts";
import { checkOptions as checkOptionsOf } from "../options.ts";
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

/** The constraint set: Cross (Eq. 1–4), Self (Eq. 5–12) or Shift (Eq. 13–17). */
export type CntLoraMode = "x" | "s" | "sh";

/**
 * The Gram matrix of a batch `X` (`d × b`, b tokens): `"sum"` is the paper's literal `X Xᵀ`, which grows with b;
 * `"mean"` is `X Xᵀ / b` (the uncentred covariance), which does not (METHODS.md §11, ambiguity 9).
 */
export type CntLoraGram = "sum" | "mean";

/** Options of {@link cntloraTarget} and {@link cntloraEstimate}. */
export interface CntLoraTargetOptions {
  /** Constraint set (default `"x"`). */
  mode?: CntLoraMode;
  /**
   * `X Xᵀ` as written (`"sum"`, default) or divided by the batch's token count (`"mean"`). With `"sum"` and b ≫ d,
   * mode X gives `W_tar → 0`, so `ΔW_est ≈ −NB/(NB+1)·W` and the initial update's size depends on how much
   * calibration data was used; `"mean"` keeps `W_tar` at W's scale for whitened inputs.
   */
  gram?: CntLoraGram;
  /**
   * Shift mode: `C = c·I_k` (default 1; the paper's ablations use 10 and 0.1), or `"gaussian"`: C with i.i.d.
   * `N(0, 1/k)` entries (so `E[CᵀC] = I`), drawn from `seed` (the paper's Gaussian ablation).
   */
  c?: number | "gaussian";
  /** Seed of a Gaussian C (default 0); the same C serves every batch of a layer. */
  seed?: number;
}

/** Options of {@link cntloraInit} and {@link cntloraInitLayers}. */
export interface CntLoraOptions extends CommonInitOptions, CntLoraTargetOptions {
  /** Inputs of the layer: `[T, d_in]` (one batch) or `[NB, T, d_in]` (NB batches, averaged by Eq. 18). */
  activations?: F32;
  /** Split of ΔW into B and A: `"svd"` (default: `B = U_r S_r^{1−p}`, `A = S_r^p V_rᵀ`) or `"qr"` (`B = Q_r`, `A = R_r`). */
  split?: "svd" | "qr";
  /** Fraction p of the singular values put into A by the SVD split (default 0.5). */
  p?: number;
  /**
   * Hold the initial update's size fixed: B and A are both multiplied by the same factor so that
   * `‖s·B·A‖_F = relativeNorm·‖W‖_F` in every layer (its direction, `ΔW_r/‖ΔW_r‖`, is kept). Default: unset, the size
   * the constraints give. Compares calibration settings at equal ‖ΔW₀‖ (not in the paper).
   */
  relativeNorm?: number;
  /** Divide by the LoRA scaling so that `s·B·A = ΔW_r` (default false: `B·A = ΔW_r`, as in the paper). */
  compensateScale?: boolean;
  /**
   * Also rewrite the base weight `W_res = W − s·B·A`, so the layer's output is unchanged at step 0 (not in the
   * paper; default false: W untouched and the model starts near the estimated target).
   */
  offset?: boolean;
  /**
   * Variance-based rank allocation (Eq. 19; with {@link cntloraInitLayers}, SVD split only): pool the relative
   * variances of ΔW's singular values over all layers, keep the top K, and give each layer as many ranks as it
   * has among them (0 = no adapter).
   */
  vas?: boolean;
  /** VAS normalisation: `"energy"` (default) `s_m²/Σ s²`, or `"literal"` `s_m²/Σ s` (METHODS.md §11, Choice 6). */
  vasNorm?: "energy" | "literal";
  /** VAS rank budget K (default `r × #layers`). */
  vasBudget?: number;
}

/** The options schema of {@link cntloraInit} and {@link cntloraInitLayers} (the registry's). */
export const CNTLORA_OPTIONS = z.object({
  mode: z.enum(["x", "s", "sh"]).default("x").describe(
    "constraint set: x (cross, W(XXᵀ)^†), s (self, W(PD^½)^†) or sh (shift, C(Wᵀ − XXᵀWᵀ)^†)",
  ),
  c: z.union([z.number(), z.literal("gaussian")]).default(1).describe(
    'shift mode: C = c·I, or "gaussian": C with i.i.d. N(0, 1/k) entries (seeded; the paper\'s ablation)',
  ),
  gram: z.enum(["sum", "mean"]).default("sum").describe(
    "Gram matrix of a batch of b tokens: sum = XXᵀ as the paper writes it (grows with b), mean = XXᵀ/b",
  ),
  split: z.enum(["svd", "qr"]).default("svd").describe("decomposition of ΔW into B and A"),
  p: z.number().min(0).max(1).default(0.5).describe("SVD split: B = U S^(1−p), A = S^p Vᵀ"),
  compensateScale: z.boolean().default(false).describe(
    "make s·B·A = ΔW_r (default B·A = ΔW_r, as the paper)",
  ),
  offset: z.boolean().default(false).describe(
    "also rewrite the base W − s·B·A so the output is unchanged (not in the paper)",
  ),
  relativeNorm: z.number().positive().optional().describe(
    "rescale B and A so that ‖s·B·A‖_F = relativeNorm·‖W‖_F per layer (hold the initial update's size fixed)",
  ),
  vas: z.boolean().default(false).describe("variance-based rank allocation across layers (SVD split only)"),
  vasNorm: z.enum(["energy", "literal"]).default("energy").describe(
    "VAS relative variance: energy s²/Σs², or the paper's literal s²/Σs",
  ),
  vasBudget: z.number().int().min(0).optional().describe("VAS rank budget K (r × number of layers)"),
});

/** The options of {@link cntloraTarget} and {@link cntloraEstimate}: the target's own, nothing else. */
const TARGET_OPTIONS = CNTLORA_OPTIONS.pick({ mode: true, c: true, gram: true })
  .extend({ seed: z.int().optional() }).partial().strict();

/** The target options among a layer's CNTLoRA options. */
function targetOptions(o: CntLoraOptions): CntLoraTargetOptions {
  return { mode: o.mode, c: o.c, gram: o.gram, seed: o.seed };
}

function checkActs(name: string, x: F32 | undefined, dIn: number): F32[] {
  if (x === undefined) throw new RangeError(`cntlora: layer "${name}" needs activations`);
  const last = x.shape[x.ndim - 1];
  if ((x.ndim !== 2 && x.ndim !== 3) || last !== dIn || x.shape.some((d) => d === 0)) {
    throw new RangeError(
      `cntlora: activations of layer "${name}" are [${x.shape}], expected [T, ${dIn}] or [NB, T, ${dIn}]`,
    );
  }
  if (x.ndim === 2) return [x];
  return Array.from({ length: x.shape[0] }, (_, b) => x.slice(b));
}

/**
 * The target weight `W_tar` `[k, d]` of one batch (the paper's `X = batchᵀ`, `d × b`; `X Xᵀ` below is divided by b
 * with `gram: "mean"`):
 * - `"x"` (Eq. 4): `W_tar = W_src (X Xᵀ)^†`;
 * - `"s"` (Eq. 12): `W_tar = W_src (P D^{1/2})^†` with `X Xᵀ = P D Pᵀ` (descending, the largest-|·| entry of each
 *   column of P positive), i.e. `W_src[:, :K] D^{-1/2} P_Kᵀ` over the K kept eigenvalues;
 * - `"sh"` (Eq. 17): `W_tar = C (W_srcᵀ − X Xᵀ W_srcᵀ)^†` with `C = c·I_k` or a seeded Gaussian `C`.
 *
 * The eigenpairs of `X Xᵀ` come from the SVD of the batch (`batch = U S Pᵀ`, `D = S²`), which avoids squaring
 * its condition number; eigenvalues `D_i ≤ d·eps·D_max` count as zero (numpy's pinv tolerance, METHODS.md §11
 * Choices 4 and 7). Rank-deficient batches (b < d) make modes X and S ill-posed: prefer b ≥ d.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { cntloraTarget } from "./cntlora.ts";
 * const wTar = await cntloraTarget(randn([8, 6], { seed: 0 }), randn([20, 6], { seed: 1 }), { mode: "s" });
 * console.log(wTar.shape); // [8, 6]
 * ```
 */
export async function cntloraTarget(weight: F32, batch: F32, opts: CntLoraTargetOptions = {}): Promise<F32> {
  checkOptionsOf("cntloraTarget", TARGET_OPTIONS, opts);
  return await target(weight, batch, opts, new Map());
}

/**
 * The SVDs (`s`, `vh`) of the batches of one {@link cntloraInitLayers} call by node: layers that read the same
 * input (`wq`, `wk` and `wv` read one normed hidden state, whose recorded batches are one node) decompose each
 * batch once. Equal nodes are equal values, so the result is the same as decomposing it again.
 */
type BatchSvds = Map<unknown, Promise<{ s: F32; vh: F32 }>>;

/** {@link cntloraTarget} with the batch SVDs of `svds`. */
async function target(weight: F32, batch: F32, opts: CntLoraTargetOptions, svds: BatchSvds): Promise<F32> {
  const [k, d] = checkLayer("cntlora", weight, 1, Infinity);
  if (batch.ndim !== 2 || batch.shape[1] !== d) {
    throw new RangeError(
      `cntlora: a batch must be [T, ${d}] for a [${k}, ${d}] weight, got [${batch.shape}]`,
    );
  }
  const w = weight;
  const gram = opts.gram ?? "sum";
  if (gram !== "sum" && gram !== "mean") {
    throw new RangeError(`cntlora: gram must be "sum" or "mean", got ${JSON.stringify(gram)}`);
  }
  // X Xᵀ/b is the Gram matrix of the batch scaled by 1/√b.
  const xb = gram === "mean" ? batch.mul(1 / Math.sqrt(batch.shape[0])) : batch;
  const mode = opts.mode ?? "x";
  let out: F32;
  if (mode === "x" || mode === "s") {
    let pending = svds.get(xb.node);
    if (pending === undefined) {
      // batch = U S Pᵀ, rows of vh = columns of P; U is not needed.
      pending = svdRows(xb, { flip: "v" }, { noU: true }).then((r) => ({ s: r.s, vh: r.vRows }));
      svds.set(xb.node, pending);
    }
    const { s, vh } = await pending;
    const kk = s.shape[0];
    const dd = s.square();
    const keep = dd.gt(dd.max().mul(d * F32_EPS));
    const p = vh; // [K, d]
    if (mode === "x") {
      const inv = keep.where(dd.reciprocal(), 0);
      out = w.matmul(p.transpose()).mul(inv).matmul(p); // W P D⁺ Pᵀ
    } else {
      const inv = keep.where(s.reciprocal(), 0); // 1/√D
      out = w.slice(null, [0, kk]).mul(inv).matmul(p); // W[:, :K] D^{-1/2} P_Kᵀ
    }
  } else if (mode === "sh") {
    const c = opts.c ?? 1;
    const wt = w.transpose(); // [d, k]
    const shifted = wt.sub(xb.transpose().matmul(xb.matmul(wt))); // Wᵀ − X Xᵀ Wᵀ
    const inv = await pinv(shifted); // [k, d]
    if (c === "gaussian") {
      const gauss = randn([k, k], { seed: deriveSeed(opts.seed ?? 0, "cntlora-c"), device: weight.device });
      out = (gauss.mul(1 / Math.sqrt(k))).matmul(inv); // C (·)^†
    } else {
      out = inv.mul(c); // c·I (·)^†
    }
  } else {
    throw new RangeError(`cntlora: unknown mode ${JSON.stringify(mode)} (expected "x", "s" or "sh")`);
  }
  await realize(out);
  return out;
}

/**
 * Eq. 18: `W_est = (W_src + Σ_j W_tar,j) / (NB + 1)` over the NB batches of `activations` (`[T, d]` is one batch),
 * each `W_tar,j` from {@link cntloraTarget}.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { cntloraEstimate } from "./cntlora.ts";
 * const wEst = await cntloraEstimate(randn([8, 6], { seed: 0 }), randn([3, 20, 6], { seed: 1 }));
 * console.log(wEst.shape); // [8, 6]
 * ```
 */
export async function cntloraEstimate(
  weight: F32,
  activations: F32,
  opts: CntLoraTargetOptions = {},
): Promise<F32> {
  checkOptionsOf("cntloraEstimate", TARGET_OPTIONS, opts);
  return await estimate(weight, activations, opts, new Map());
}

/** {@link cntloraEstimate} with the batch SVDs of `svds`. */
async function estimate(
  weight: F32,
  activations: F32,
  opts: CntLoraTargetOptions,
  svds: BatchSvds,
): Promise<F32> {
  const batches = checkActs("layer", activations, weight.shape[1]);
  let sum = weight;
  for (const b of batches) {
    sum = sum.add(await target(weight, b, opts, svds));
    await realize(sum);
  }
  const est = sum.div(batches.length + 1);
  await realize(est);
  return est;
}

/** ΔW's SVD (for the SVD split and VAS) or QR. */
interface Decomposed {
  name: string;
  weight: F32;
  delta: F32;
  svd?: { u: F32; s: F32; vh: F32 };
}

function checkOptions(o: CntLoraOptions): void {
  checkInitOptions("cntlora", CNTLORA_OPTIONS, o);
  if (o.vas && (o.split ?? "svd") !== "svd") {
    throw new RangeError('cntlora: VAS allocates ranks by singular values, so it needs split "svd"');
  }
}

async function decompose(l: InitLayer, opts: CntLoraOptions, svds: BatchSvds): Promise<Decomposed> {
  const est = await estimate(l.weight, checkPresent(l), targetOptions(opts), svds);
  const delta = est.sub(l.weight);
  await realize(delta);
  if ((opts.split ?? "svd") === "qr") return { name: l.name, weight: l.weight, delta };
  const r = await svd(delta);
  return {
    name: l.name,
    weight: l.weight,
    delta,
    svd: { u: r.u, s: r.s, vh: r.vh },
  };
}

function checkPresent(l: InitLayer): F32 {
  const x = l.data?.activations;
  checkActs(l.name, x, l.weight.shape[1]);
  return x!;
}

/** B and A of rank k from a decomposed ΔW. */
async function split(dec: Decomposed, k: number, opts: CntLoraOptions, alpha: number): Promise<LoraInit> {
  const [dOut, dIn] = dec.weight.shape;
  const s = loraScale(alpha, k, opts.useRslora);
  const device = dec.weight.device;
  if (k === 0) {
    return {
      a: tensor(new Float32Array(0), { shape: [0, dIn], device }),
      b: tensor(new Float32Array(0), { shape: [dOut, 0], device }),
      rank: 0,
      alpha,
      scale: 0,
    };
  }
  const comp = opts.compensateScale ? 1 / s : 1;
  let a: F32, b: F32;
  if (dec.svd !== undefined) {
    const p = opts.p ?? 0.5;
    const sv = dec.svd.s.slice([0, k]).mul(comp);
    b = dec.svd.u.slice(null, [0, k]).mul(sv.pow(1 - p));
    a = dec.svd.vh.slice([0, k]).mul(sv.pow(p).reshape([k, 1]));
  } else {
    const f = await qr(dec.delta);
    b = f.q!.slice(null, [0, k]);
    a = (f.r.slice([0, k])).mul(comp);
  }
  if (opts.relativeNorm !== undefined) {
    // One factor for both: ‖s·(fB)(fA)‖ = f²·‖s·B·A‖ = relativeNorm·‖W‖.
    const [now, wNorm] = await Promise.all([
      b.matmul(a).mul(s).square().sum().sqrt().item(),
      dec.weight.square().sum().sqrt().item(),
    ]);
    if (!(now > 0)) {
      throw new RangeError(
        `cntlora: layer "${dec.name}" has a zero initial update, which relativeNorm cannot rescale`,
      );
    }
    const f = Math.sqrt((opts.relativeNorm * wNorm) / now);
    a = a.mul(f);
    b = b.mul(f);
  }
  const base = opts.offset ? dec.weight.sub(b.matmul(a).mul(s)) : undefined;
  await realize(a, b, ...(base ? [base] : []));
  return {
    a: a,
    b: b,
    ...(base ? { base: base } : {}),
    rank: k,
    alpha,
    scale: s,
  };
}

/**
 * VAS (Eq. 19): relative variances `v_m^i = s_m²/Σ_m s_m²` (or `s_m²/Σ_m s_m`) pooled over all layers, sorted
 * descending (ties: earlier layer, then lower index), the top `budget` kept; returns the count per layer.
 */
export function vasRanks(
  singularValues: readonly (readonly number[])[],
  budget: number,
  norm: "energy" | "literal" = "energy",
): number[] {
  const pool: { layer: number; m: number; v: number }[] = [];
  singularValues.forEach((s, layer) => {
    const denom = norm === "energy" ? s.reduce((a, x) => a + x * x, 0) : s.reduce((a, x) => a + x, 0);
    s.forEach((x, m) => pool.push({ layer, m, v: denom > 0 ? (x * x) / denom : 0 }));
  });
  pool.sort((p, q) => q.v - p.v || p.layer - q.layer || p.m - q.m);
  const counts = singularValues.map(() => 0);
  for (const e of pool.slice(0, budget)) counts[e.layer]++;
  return counts;
}

/**
 * CNTLoRA (Das et al., arXiv 2507.08044) for one layer: `W_est` by Eq. 18 from the per-batch target weights of the
 * chosen constraint set ({@link cntloraTarget}: X `W_src (XXᵀ)^†`, S `W_src (P D^{1/2})^†`, Sh
 * `C (W_srcᵀ − XXᵀW_srcᵀ)^†`), `ΔW = W_est − W_src`, then `B A = ΔW_r` by the SVD split (`B = U_r S_r^{1−p}`,
 * `A = S_r^p V_rᵀ`) or the QR split. The base weight is untouched (METHODS.md §11 Choice 1), so the model starts
 * at ≈ `W + s·ΔW_r`; `compensateScale` makes that `W + ΔW_r`, and `offset` rewrites the base to keep the output.
 * `gram: "mean"` divides each batch's `X Xᵀ` by its token count (ambiguity 9), and `relativeNorm` rescales the
 * initial update to a given `‖s·B·A‖_F/‖W‖_F`.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { cntloraInit } from "./cntlora.ts";
 * const activations = randn([2, 24, 8], { seed: 1 });
 * const { a, b } = await cntloraInit(randn([12, 8], { seed: 0 }), { rank: 2, mode: "x", activations });
 * console.log(a.shape, b.shape); // [2, 8] [12, 2]
 * ```
 */
export async function cntloraInit(weight: F32, opts: CntLoraOptions = {}): Promise<LoraInit> {
  checkInitOptions("cntlora", CNTLORA_OPTIONS, opts, ["activations"]);
  const rank = opts.rank ?? 8;
  checkLayer("cntlora", weight, rank);
  const { activations, ...rest } = opts;
  const res = await cntloraInitLayers([{ name: "layer", weight, data: { activations } }], rest);
  return res.get("layer")!;
}

/**
 * CNTLoRA over several layers; with `vas: true` the ranks are allocated by VAS (Eq. 19) over the singular values
 * of every layer's ΔW, with budget `K = r × #layers` (or `vasBudget`): a layer gets as many ranks as it has among
 * the K largest relative variances (never more than its singular values; 0 = no adapter). Without VAS every layer
 * gets rank r, exactly as {@link cntloraInit}. `alpha` is kept per layer, so `s = alpha/rank_i`. A Gaussian C
 * (`c: "gaussian"`) is drawn per layer from `deriveSeed(seed, name)`.
 * `info` of each layer: `singularValues` of ΔW (SVD split) and, with VAS, `vasBudget`.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { cntloraInitLayers } from "./cntlora.ts";
 * const layers = ["q", "v"].map((name, i) => ({
 *   name,
 *   weight: randn([8, 8], { seed: i }),
 *   data: { activations: randn([16, 8], { seed: 10 + i }) },
 * }));
 * const inits = await cntloraInitLayers(layers, { rank: 2, vas: true });
 * console.log([...inits.values()].map((i) => i.rank)); // sums to 4
 * ```
 */
export async function cntloraInitLayers(
  layers: readonly InitLayer[],
  opts: CntLoraOptions = {},
): Promise<Map<string, LoraInit>> {
  checkOptions(opts);
  const rank = opts.rank ?? 8;
  const alpha = opts.alpha ?? rank;
  if (layers.length === 0) throw new RangeError("cntlora: no layers given");
  for (const l of layers) checkLayer(`cntlora (layer "${l.name}")`, l.weight, rank);
  await checkInputsFinite(
    "cntlora",
    Object.fromEntries(
      layers.flatMap((l) => [[`${l.name}.weight`, l.weight], [`${l.name}.activations`, l.data?.activations]]),
    ),
  );
  const decs: Decomposed[] = [];
  const svds: BatchSvds = new Map();
  // A Gaussian C of its own per layer, drawn from the seed and the layer's name.
  for (const l of layers) {
    decs.push(await decompose(l, { ...opts, seed: deriveSeed(opts.seed ?? 0, l.name) }, svds));
  }
  const sv: number[][] = [];
  for (const d of decs) sv.push(d.svd ? Array.from((await d.svd.s.data()) as Float32Array) : []);
  const budget = opts.vasBudget ?? rank * layers.length;
  const ranks = opts.vas ? vasRanks(sv, budget, opts.vasNorm ?? "energy") : decs.map(() => rank);
  const out = new Map<string, LoraInit>();
  for (let i = 0; i < decs.length; i++) {
    const init = await split(decs[i], ranks[i], opts, alpha);
    // The SVD split puts S^p into A and S^(1−p) into B: for 0 < p < 1 a zero singular value of ΔW zeroes both (p = 0
    // or 1 keeps a unit factor, and the QR split an orthonormal B, which train like plain LoRA).
    const p = opts.p ?? 0.5;
    if (decs[i].svd !== undefined && p > 0 && p < 1) {
      warnZeroTriplets(
        "cntlora",
        decs[i].weight.shape,
        Float32Array.from(sv[i]),
        [...Array(ranks[i]).keys()],
        `the update ΔW = W_est − W of the [${decs[i].weight.shape}] weight`,
      );
    }
    init.info = {
      mode: opts.mode ?? "x",
      gram: opts.gram ?? "sum",
      split: opts.split ?? "svd",
      ...(decs[i].svd ? { singularValues: sv[i] } : {}),
      ...(opts.vas ? { vasBudget: budget } : {}),
    };
    out.set(decs[i].name, init);
  }
  return out;
}
