/**
 * Incremental (minibatch) PCA with scikit-learn's algorithm, as PEFT's EVA uses it.
 *
 * @module
 */
import { concat, zeros } from "../tensor/creation.ts";
import { type F32, realize, type Tensor, withShape } from "../tensor/tensor.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt, OptionsError, showValue } from "../options.ts";
import { checkFinite } from "../nn/finite.ts";
import { checkMatrix, disposeUnless, JACOBI_OPTION_FIELDS } from "./common.ts";
import { refuseUnreadJacobiOptions, type SvdOptions, svdRows } from "./svd.ts";
import { svdLowRank } from "./svd_lowrank.ts";

const IPCA_OPTIONS = z.object({
  nComponents: opt.count().optional(),
  lowRank: z.object({
    q: opt.count().optional(),
    niter: opt.index().optional(),
    seed: opt.seed().optional(),
  }).strict().optional(),
  svd: z.object(JACOBI_OPTION_FIELDS).strict().optional(),
}).strict();
const PARTIAL_FIT_OPTIONS = z.object({ checkedFinite: z.boolean().optional() }).strict();

/** Options of {@link IncrementalPCA}. */
export interface IncrementalPCAOptions {
  /**
   * Components to keep (default: `min(samples, features)` of the first batch). Every batch must have at least
   * this many rows (scikit-learn's rule; PEFT's EVA skips smaller batches before calling).
   */
  nComponents?: number;
  /**
   * Use the randomized {@link svdLowRank} for the inner SVD, like PEFT's `IncrementalPCA(lowrank=True)`:
   * `q` defaults to `2·nComponents` (clamped to the matrix size), `niter` to 4, `seed` to 0. Default: the
   * exact Jacobi SVD (deterministic).
   */
  lowRank?: { q?: number; niter?: number; seed?: number };
  /** Options of the exact inner SVD (sweeps, convergence check); refused with `lowRank`, which does not read them. */
  svd?: Pick<SvdOptions, "sweeps" | "check" | "tol">;
}

interface State {
  nComponents: number;
  nFeatures: number;
  nSeen: number;
  mean: F32;
  var: F32;
  components: F32;
  singularValues: F32;
  explainedVariance: F32;
  explainedVarianceRatio: F32;
  noiseVariance: F32;
}

function stateTensors(st: State): F32[] {
  return [
    st.mean,
    st.var,
    st.components,
    st.singularValues,
    st.explainedVariance,
    st.explainedVarianceRatio,
    st.noiseVariance,
  ];
}

/**
 * Incremental principal component analysis over minibatches (scikit-learn's `IncrementalPCA.partial_fit`,
 * Ross et al. 2008), all on the device of the data. For each batch X (samples × features):
 * 1. the running per-feature mean and variance are updated (Chan et al.'s pairwise update);
 * 2. on the first batch the matrix `X − mean` is decomposed; afterwards the stack
 *    `[diag(S)·components; X − batch_mean; √(n_seen·n_batch/n_total)·(mean_old − batch_mean)]`;
 * 3. its thin SVD is sign-normalised with `svd_flip(u_based_decision=False)` (largest-|·| entry of each
 *    component positive) and the first `nComponents` rows of Vᵀ kept.
 * Explained variance is `S²/(n_total − 1)` and its ratio `S²/Σ_features(var·n_total)` (the fraction of the
 * total centred variance), as in scikit-learn and PEFT. The inner SVD is exact (Jacobi) unless `lowRank` is
 * set. State stays on the device between batches; nothing is read back.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { IncrementalPCA } from "./mod.ts";
 * const pca = new IncrementalPCA({ nComponents: 4 });
 * for (let b = 0; b < 3; b++) await pca.partialFit(randn([32, 10], { seed: b }));
 * console.log(pca.components.shape, await pca.explainedVarianceRatio.data()); // [4, 10]
 * ```
 */
export class IncrementalPCA {
  #opts: IncrementalPCAOptions;
  #state: State | null = null;

  /** An unfitted model. */
  constructor(opts: IncrementalPCAOptions = {}) {
    checkOptions("IncrementalPCA", IPCA_OPTIONS, opts);
    if (opts.lowRank !== undefined && opts.svd !== undefined) {
      throw new OptionsError("IncrementalPCA", [
        `option "svd" is ${
          showValue(opts.svd)
        } but "lowRank" is given: the randomized SVD does not read the ` +
        `exact SVD's options`,
      ]);
    }
    this.#opts = opts;
  }

  #fitted(what: string): State {
    if (this.#state === null) throw new Error(`IncrementalPCA.${what}: call partialFit with a batch first`);
    return this.#state;
  }

  /** Principal axes, `nComponents × features`, orthonormal rows sorted by explained variance. */
  get components(): Tensor<[number, number], "f32"> {
    return withShape<[number, number]>(this.#fitted("components").components, 2);
  }
  /** Singular values of the kept components (descending). */
  get singularValues(): Tensor<[number], "f32"> {
    return withShape<[number]>(this.#fitted("singularValues").singularValues, 1);
  }
  /** Variance along each kept component: `S²/(n − 1)`. */
  get explainedVariance(): Tensor<[number], "f32"> {
    return withShape<[number]>(this.#fitted("explainedVariance").explainedVariance, 1);
  }
  /** Fraction of the total variance along each kept component. */
  get explainedVarianceRatio(): Tensor<[number], "f32"> {
    return withShape<[number]>(this.#fitted("explainedVarianceRatio").explainedVarianceRatio, 1);
  }
  /** Mean of the discarded components' variances (0 when none is discarded), as a 0-d tensor. */
  get noiseVariance(): Tensor<[], "f32"> {
    return withShape<[]>(this.#fitted("noiseVariance").noiseVariance, 0);
  }
  /** Per-feature mean of all samples seen. */
  get mean(): Tensor<[number], "f32"> {
    return withShape<[number]>(this.#fitted("mean").mean, 1);
  }
  /** Per-feature (population) variance of all samples seen. */
  get var(): Tensor<[number], "f32"> {
    return withShape<[number]>(this.#fitted("var").var, 1);
  }
  /** Samples seen so far. */
  get nSamplesSeen(): number {
    return this.#state?.nSeen ?? 0;
  }
  /** Number of kept components (known after the first batch). */
  get nComponents(): number {
    return this.#fitted("nComponents").nComponents;
  }

  /**
   * Updates the model with one batch (samples × features). Returns this model.
   * Throws when the feature count changes, the batch has fewer rows than `nComponents`, or it holds NaN or
   * infinite values (a `NonFiniteWeightsError`; the check reads back one value, and the model is left as it
   * was: without it the inner SVD turned such a batch into finite components). With `{ checkedFinite: true }`
   * the caller vouches that it has already refused such values in `x` (EVA checks all its batches once, before
   * fitting them step after step), and the read-back is skipped.
   */
  async partialFit(
    x: Tensor<[number, number], "f32"> | F32,
    opts: { checkedFinite?: boolean } = {},
  ): Promise<this> {
    const [ns, nf] = checkMatrix("IncrementalPCA.partialFit", x);
    checkOptions("IncrementalPCA.partialFit", PARTIAL_FIT_OPTIONS, opts);
    const prev = this.#state;
    if (prev !== null && prev.nFeatures !== nf) {
      throw new RangeError(
        `IncrementalPCA.partialFit: batch has ${nf} features, earlier batches had ${prev.nFeatures}`,
      );
    }
    const k = prev?.nComponents ?? this.#opts.nComponents ?? Math.min(ns, nf);
    if (k > nf) {
      throw new RangeError(`IncrementalPCA.partialFit: nComponents=${k} must be at most the ${nf} features`);
    }
    if (k > ns) {
      throw new RangeError(
        `IncrementalPCA.partialFit: nComponents=${k} must be at most the batch's number of samples ${ns}`,
      );
    }
    if (opts.checkedFinite !== true) await checkFinite([["batch", x]], { what: "IncrementalPCA.partialFit" });
    const xs: F32 = x;
    const nSeen = prev?.nSeen ?? 0;
    const nTotal = nSeen + ns;
    // Running mean and variance (scikit-learn's _incremental_mean_and_var).
    const batchSum = xs.sum(0);
    const batchMean = batchSum.div(ns);
    const centred = xs.sub(batchMean);
    const correction = centred.sum(0);
    const newUnnorm = centred.square().sum(0).sub(correction.square().div(ns));
    let mean: F32;
    let variance: F32;
    let stacked: F32;
    if (prev === null) {
      mean = batchMean;
      variance = newUnnorm.div(nTotal);
      stacked = centred;
    } else {
      mean = prev.mean.mul(nSeen).add(batchSum).div(nTotal);
      const between = prev.mean.sub(batchMean).square().mul((nSeen * ns) / nTotal);
      variance = prev.var.mul(nSeen).add(newUnnorm).add(between).div(nTotal);
      const meanCorrection = prev.mean.sub(batchMean).mul(Math.sqrt((nSeen / nTotal) * ns)).reshape([
        1,
        nf,
      ]);
      const scaled = prev.components.mul(prev.singularValues.reshape([k, 1]));
      stacked = concat([scaled, centred, meanCorrection], 0);
    }
    const rows = stacked.shape[0];
    let s: F32;
    let vRows: F32;
    if (this.#opts.lowRank !== undefined) {
      const lr = this.#opts.lowRank;
      const q = Math.min(lr.q ?? 2 * k, rows, nf);
      if (q < k) throw new RangeError(`IncrementalPCA: lowRank.q=${q} must be at least nComponents=${k}`);
      const r = await svdLowRank(stacked, q, {
        niter: lr.niter ?? 4,
        seed: lr.seed ?? 0,
        flip: "v",
      });
      s = r.s;
      vRows = r.vh;
    } else {
      refuseUnreadJacobiOptions("IncrementalPCA.partialFit", rows, nf, this.#opts.svd ?? {}, "svd.");
      // The components are V's rows: U is not formed.
      const r = await svdRows(stacked, { ...this.#opts.svd, flip: "v" }, { noU: true });
      s = r.s;
      vRows = r.vRows;
    }
    const kk = s.shape[0];
    const sq = s.square();
    const explained = sq.div(Math.max(nTotal - 1, 1));
    const ratio = sq.div(variance.mul(nTotal).sum());
    const noise = k < kk && k !== ns && k !== nf
      ? explained.slice([k, kk]).mean()
      : zeros([], { device: x.device });
    const next: State = {
      nComponents: k,
      nFeatures: nf,
      nSeen: nTotal,
      mean,
      var: variance,
      components: vRows.slice([0, k]),
      singularValues: s.slice([0, k]),
      explainedVariance: explained.slice([0, k]),
      explainedVarianceRatio: ratio.slice([0, k]),
      noiseVariance: noise,
    };
    await realize(...stateTensors(next));
    const kept = [next.components, next.singularValues];
    for (const t of [s, vRows]) disposeUnless(t, ...kept);
    if (prev !== null) {
      for (const t of stateTensors(prev)) t.dispose();
    }
    this.#state = next;
    return this;
  }

  /** Fits every batch in turn (`partialFit` on each). */
  async fit(batches: Iterable<Tensor<[number, number], "f32"> | F32>): Promise<this> {
    for (const b of batches) await this.partialFit(b);
    return this;
  }

  /** Projects samples on the components: `(x − mean)·componentsᵀ` (lazy). */
  transform(x: Tensor<[number, number], "f32"> | F32): Tensor<[number, number], "f32"> {
    const st = this.#fitted("transform");
    const [, nf] = checkMatrix("IncrementalPCA.transform", x);
    if (nf !== st.nFeatures) {
      throw new RangeError(`IncrementalPCA.transform: got ${nf} features, the model has ${st.nFeatures}`);
    }
    const xs: F32 = x;
    return withShape<[number, number]>(xs.sub(st.mean).matmul(st.components.transpose()), 2);
  }
}
