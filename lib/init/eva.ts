/**
 * EVA — Explained Variance Adaptation (Paischer et al., NeurIPS 2025, arXiv 2410.07170), with the semantics of
 * PEFT's `tuners/lora/eva.py`: the rows of `A` are the top principal directions of each layer's inputs,
 * `A = components[:k]` from an incremental (minibatch) PCA, `B = 0`, and the ranks `k` are redistributed across
 * layers by explained variance.
 *
 * @module
 */
import { concat, tensor } from "../tensor/creation.ts";
import { IncrementalPCA } from "../linalg/incremental_pca.ts";
import type { InitLayer } from "./registry.ts";
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

/** Options of {@link evaInit} and {@link evaInitLayers}. */
export interface EvaOptions extends CommonInitOptions {
  /** Inputs of the layer, `[T, d_in]` (one batch) or `[NB, T, d_in]` (NB batches); single-layer {@link evaInit}. */
  activations?: F32;
  /**
   * Rank redistribution factor ρ ≥ 1 (default 2, PEFT's): each layer computes `round(r·ρ)` components (Python's
   * round-half-to-even) and may receive up to that many ranks. ρ = 1 gives uniform ranks; ρ > 1000 is capped at
   * `max_dim // r` as in PEFT. With a single layer the rank stays r whatever ρ.
   */
  rho?: number;
  /** Convergence threshold τ on the cosine similarity of each component with the previous step's (default 0.99). */
  tau?: number;
  /**
   * Divide each row of A by √(its singular value) (PEFT's `whiten`; default false). Once per layer, as METHODS.md
   * §7 and the paper: PEFT 0.21 divides the components of layers that read one input in place once per layer, so
   * all but the first get rows divided by the singular value itself.
   */
  whiten?: boolean;
  /**
   * Keep the scaling `alpha/r` of the configured rank when a layer gets rank k ≠ r: `alpha_layer = alpha·k/r`
   * (PEFT's `adjust_scaling_factors`; default true).
   */
  adjustScalingFactors?: boolean;
  /**
   * Exact (Jacobi) SVD inside each incremental-PCA step (default true, deterministic). `false` uses PEFT's
   * randomized inner SVD: `svdLowRank` with `q = 2·n_components`, 4 power iterations, seeded with `seed`.
   */
  exactSvd?: boolean;
  /**
   * Most incremental-PCA steps (one calibration batch each, the batches cycled) before giving up on convergence
   * (default 100). PEFT has no such guard; here a run that stops early reports `converged: false` in `info`.
   */
  maxSteps?: number;
}

/** The options schema of {@link evaInit} and {@link evaInitLayers} (the registry's). */
export const EVA_OPTIONS = z.object({
  rho: z.number().min(1).default(2).describe(
    "rank redistribution factor ρ ≥ 1: each layer computes round(r·ρ) components (1 = uniform ranks)",
  ),
  tau: z.number().gt(0).max(1).default(0.99).describe(
    "convergence threshold on each component's cosine similarity with the previous step",
  ),
  whiten: z.boolean().default(false).describe("divide each row of A by √(its singular value)"),
  adjustScalingFactors: z.boolean().default(true).describe(
    "alpha_layer = alpha·k/r for a layer given rank k, so the scaling alpha/r is kept",
  ),
  exactSvd: z.boolean().default(true).describe(
    "exact inner SVD in each incremental-PCA step (false: PEFT's randomized svd_lowrank, q = 2·components)",
  ),
  maxSteps: z.number().int().min(1).default(100).describe(
    "most incremental-PCA steps (batches, cycled) before stopping unconverged (reported in info)",
  ),
});

/** Python's `round` (half to even), which PEFT uses for `max_components = round(r·ρ)`. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** One incremental PCA shared by the layers whose first batches are equal (PEFT's "hook" layer). */
interface Hook {
  name: string;
  dIn: number;
  pca: IncrementalPCA;
  batches: F32[];
  tokens: number;
  nComp: number;
  converged: boolean[];
  /** Host copy of the latest components (`nComp × dIn`, row-major), null before the first step. */
  comps: Float32Array | null;
  ratios: number[];
  singular: number[];
  /** Whether the inputs so far vary less than float32 rounding of their mean can account for (see below). */
  flat: boolean;
  fits: number;
  skipped: number;
}

/** The batches of a layer's activations as `[T, d_in]` matrices. */
function batchesOf(method: string, name: string, x: F32 | undefined, dIn: number): F32[] {
  if (x === undefined) throw new RangeError(`${method}: layer "${name}" has no activations`);
  const last = x.shape[x.ndim - 1];
  if ((x.ndim !== 2 && x.ndim !== 3) || last !== dIn || x.shape.some((d) => d === 0)) {
    throw new RangeError(
      `${method}: activations of layer "${name}" are [${x.shape}], expected [T, ${dIn}] or [NB, T, ${dIn}]`,
    );
  }
  if (x.ndim === 2) return [x];
  return Array.from({ length: x.shape[0] }, (_, b) => x.slice(b));
}

/** FNV-1a over the bytes of a float array (equal data, equal hash). */
function hashData(d: Float32Array): number {
  const bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}

function sameData(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

/** Groups layers whose first batches are equal; returns for each layer the name of its group's first layer. */
async function equalInputGroups(names: string[], first: F32[]): Promise<Map<string, string>> {
  const hookOf = new Map<string, string>();
  const reps: { name: string; shape: string; hash: number; data: Float32Array; node: unknown }[] = [];
  for (let i = 0; i < names.length; i++) {
    const t = first[i];
    const shape = t.shape.join();
    // Cheap exits: the very same tensor, or no other layer with this shape (no read-back needed).
    const byNode = reps.find((r) => r.node === t.node);
    if (byNode !== undefined) {
      hookOf.set(names[i], byNode.name);
      continue;
    }
    const shapeTwin = first.some((o, j) => j !== i && o.shape.join() === shape && o.node !== t.node);
    if (!shapeTwin) {
      hookOf.set(names[i], names[i]);
      reps.push({ name: names[i], shape, hash: -1, data: new Float32Array(0), node: t.node });
      continue;
    }
    const data = (await t.data()) as Float32Array;
    const hash = hashData(data);
    const match = reps.find((r) => r.shape === shape && r.hash === hash && sameData(r.data, data));
    if (match !== undefined) hookOf.set(names[i], match.name);
    else {
      hookOf.set(names[i], names[i]);
      reps.push({ name: names[i], shape, hash, data, node: t.node });
    }
  }
  return hookOf;
}

/** Per-component cosine similarity of two `k × d` row-major matrices (torch's `cosine_similarity`, eps 1e-8). */
function rowCosines(a: Float32Array, b: Float32Array, k: number, d: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < k; i++) {
    let ab = 0, aa = 0, bb = 0;
    for (let j = 0; j < d; j++) {
      const x = a[i * d + j], y = b[i * d + j];
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    out.push(ab / Math.max(Math.sqrt(aa), 1e-8) / Math.max(Math.sqrt(bb), 1e-8));
  }
  return out;
}

/**
 * PEFT's `_get_rank_distribution`: pool the first `maxComp` explained-variance ratios of every layer (layers with
 * equal inputs repeat their hook's ratios), keep the `budget` largest (ties: earlier in the pool), count per layer,
 * then make each hook layer hold the larger count of itself and each of its followers.
 */
function redistribute(
  order: readonly string[],
  hookOf: ReadonlyMap<string, Hook>,
  followers: readonly [string, string][],
  budget: number,
): Map<string, number> {
  const pool: { layer: string; v: number; pos: number }[] = [];
  for (const name of order) {
    const h = hookOf.get(name)!;
    for (const v of h.ratios.slice(0, h.nComp)) pool.push({ layer: name, v, pos: pool.length });
  }
  pool.sort((x, y) => y.v - x.v || x.pos - y.pos);
  const counts = new Map(order.map((n) => [n, 0]));
  for (const e of pool.slice(0, budget)) counts.set(e.layer, counts.get(e.layer)! + 1);
  for (const [k, kHook] of followers) {
    const rank = counts.get(k)!, rankHook = counts.get(kHook)!;
    if (rankHook >= rank) continue;
    counts.set(kHook, rank);
    counts.set(k, rankHook);
  }
  return counts;
}

/** The EVA procedure over layers with `maxComp` components each and a rank budget. */
async function evaCore(
  layers: readonly InitLayer[],
  opts: EvaOptions,
  maxCompOf: (l: InitLayer) => number,
): Promise<Map<string, LoraInit>> {
  const rank = opts.rank ?? 8;
  const alpha = opts.alpha ?? rank;
  const tau = opts.tau ?? 0.99;
  const maxSteps = opts.maxSteps ?? 100;
  const names = layers.map((l) => l.name);
  if (new Set(names).size !== names.length) {
    throw new RangeError(`eva: layer names repeat: ${names.join(", ")}`);
  }
  const batches = layers.map((l) => batchesOf("eva", l.name, l.data?.activations, l.weight.shape[1]));
  const hookName = await equalInputGroups(names, batches.map((b) => b[0]));
  // Layers with equal inputs share the largest component count of the group (PEFT does the same).
  const maxComp = new Map(layers.map((l) => [l.name, maxCompOf(l)]));
  for (const l of layers) {
    const h = hookName.get(l.name)!;
    maxComp.set(h, Math.max(maxComp.get(h)!, maxComp.get(l.name)!));
  }
  for (const l of layers) maxComp.set(l.name, maxComp.get(hookName.get(l.name)!)!);
  const budget = layers.length * rank;

  const hooks = new Map<string, Hook>();
  layers.forEach((l, i) => {
    if (hookName.get(l.name) !== l.name) return;
    const nComp = maxComp.get(l.name)!;
    const tokens = batches[i][0].shape[0];
    if (batches[i].every((b) => b.shape[0] < nComp)) {
      throw new RangeError(
        `eva: layer "${l.name}" has batches of ${tokens} tokens, fewer than the ${nComp} components it needs ` +
          `(round(r·rho)); give it batches with more tokens or lower rho`,
      );
    }
    hooks.set(l.name, {
      name: l.name,
      dIn: l.weight.shape[1],
      pca: new IncrementalPCA({
        nComponents: nComp,
        lowRank: (opts.exactSvd ?? true) ? undefined : { q: 2 * nComp, niter: 4, seed: opts.seed ?? 0 },
      }),
      batches: batches[i],
      tokens,
      nComp,
      converged: new Array(nComp).fill(false),
      comps: null,
      ratios: [],
      singular: [],
      flat: false,
      fits: 0,
      skipped: 0,
    });
  });
  // PEFT's layer_hook_map order: hook layers in model order, then the followers.
  const followers: [string, string][] = names.filter((n) => hookName.get(n) !== n).map((n) => [
    n,
    hookName.get(n)!,
  ]);
  const order = [...hooks.keys(), ...followers.map(([n]) => n)];
  const hookOfLayer = new Map(order.map((n) => [n, hooks.get(hookName.get(n)!)!]));

  let rankDist = new Map(order.map((n) => [n, maxComp.get(n)!]));
  let allConverged = false;
  let steps = 0;
  for (let step = 0;; step++) {
    const active = [...hooks.values()].filter((h) =>
      !h.converged.slice(0, rankDist.get(h.name)!).every((c) => c)
    );
    if (active.length === 0) {
      allConverged = true;
      break;
    }
    if (step >= maxSteps) break;
    steps++;
    const fitted: Hook[] = [];
    for (const h of active) {
      const batch = h.batches[step % h.batches.length];
      if (batch.shape[0] < h.nComp) {
        h.skipped++;
        continue;
      }
      // Every batch was checked for NaN and ∞ once, before the loop (checkInputsFinite in evaInitLayers).
      await h.pca.partialFit(batch, { checkedFinite: true });
      h.fits++;
      fitted.push(h);
    }
    if (fitted.length > 0) {
      // One read-back for every layer stepped: components, explained-variance ratios, singular values.
      const parts: F32[] = fitted.flatMap((h) => [
        h.pca.components.reshape([-1]),
        h.pca.explainedVarianceRatio,
        h.pca.singularValues,
        h.pca.mean,
      ]);
      const host = (await concat(parts, 0).data()) as Float32Array;
      let off = 0;
      for (const h of fitted) {
        const n = h.nComp * h.dIn;
        const comps = host.slice(off, off + n);
        off += n;
        h.ratios = Array.from(host.subarray(off, off + h.nComp));
        off += h.nComp;
        h.singular = Array.from(host.subarray(off, off + h.nComp));
        off += h.nComp;
        // Inputs that are one vector repeated centre to 0, or to float32 rounding of their mean (a relative 2⁻²⁴
        // per element), which has no principal directions either: the largest singular value must stand above
        // 2⁻¹⁸ of the inputs' norm (√(n·‖mean‖² + Σσ²)). NaN ratios (0/0) count as flat too.
        const mean = host.subarray(off, off + h.dIn);
        off += h.dIn;
        const energy = h.pca.nSamplesSeen * mean.reduce((a, v) => a + v * v, 0) +
          h.singular.reduce((a, v) => a + v * v, 0);
        h.flat = !(h.singular[0] ** 2 > 2 ** -36 * energy) || h.ratios.some((v) => Number.isNaN(v));
        if (h.comps !== null) h.converged = rowCosines(comps, h.comps, h.nComp, h.dIn).map((s) => s >= tau);
        h.comps = comps;
      }
    }
    if ([...hooks.values()].some((h) => h.comps === null)) continue;
    rankDist = redistribute(order, hookOfLayer, followers, budget);
  }

  // Inputs that are one vector repeated have no principal directions (see `flat` above).
  for (const h of hooks.values()) {
    if (h.flat) {
      throw new RangeError(
        `eva: layer "${h.name}" has activations without variance: every token of its ${h.fits} fitted ` +
          `batch(es) of [${
            h.batches[0].shape
          }] is the same input (e.g. constant or zero activations), so it has ` +
          `no principal directions; check the batches the activations were collected on`,
      );
    }
  }
  const out = new Map<string, LoraInit>();
  for (const l of layers) {
    const [dOut, dIn] = l.weight.shape;
    const h = hookOfLayer.get(l.name)!;
    const k = h.comps === null ? 0 : rankDist.get(l.name)!;
    const device = l.weight.device;
    const aData = new Float32Array(k * dIn);
    for (let i = 0; i < k; i++) {
      const w = opts.whiten ? 1 / Math.sqrt(h.singular[i]) : 1;
      for (let j = 0; j < dIn; j++) aData[i * dIn + j] = h.comps![i * dIn + j] * w;
    }
    const layerAlpha = (opts.adjustScalingFactors ?? true) && k !== rank ? (alpha * k) / rank : alpha;
    const kept = h.ratios.slice(0, k).reduce((s, v) => s + v, 0);
    out.set(l.name, {
      a: tensor(aData, { shape: [k, dIn], device }),
      b: tensor(new Float32Array(dOut * k), { shape: [dOut, k], device }),
      rank: k,
      alpha: layerAlpha,
      scale: loraScale(layerAlpha, k, opts.useRslora),
      info: {
        maxComponents: h.nComp,
        rankBudget: budget,
        explainedVarianceRatio: h.ratios,
        keptVarianceRatio: kept,
        singularValues: h.singular,
        sharedWith: h.name,
        steps,
        fits: h.fits,
        skippedBatches: h.skipped,
        converged: h.converged.slice(0, k).every((c) => c),
        allConverged,
      },
    });
  }
  return out;
}

/**
 * EVA for several layers at once, as PEFT's `get_eva_state_dict` does it (METHODS.md §7).
 *
 * 1. Each layer gets `max_components = round(r·ρ)` (capped at d_in); the rank budget is `r × #layers`. Layers
 *    whose first batches are identical (e.g. `wq`, `wk`, `wv` reading the same normed hidden state) share one
 *    incremental PCA, run on the first of them (the hook layer).
 * 2. The calibration batches are cycled; at each step every layer that has not converged takes one
 *    {@link IncrementalPCA} step (mean-centred, scikit-learn's algorithm, `svd_flip` signs) on that batch; batches
 *    with fewer tokens than components are skipped.
 * 3. A component has converged when its cosine similarity with the previous step's is ≥ τ; a layer stops once its
 *    top `rank_dist[layer]` components have converged and restarts if a later redistribution asks for more.
 * 4. After every step the ranks are redistributed: the first `max_components` explained-variance ratios
 *    (`S_i² / Σ_features var·n`) of all layers are pooled and the `budget` largest kept; `rank_dist[layer]` is
 *    how many of them are the layer's (the hook layer takes the larger count of each equal-input pair).
 * 5. `A = components[:k]` (optionally whitened by `1/√S`), `B = 0`; k = 0 gives `rank: 0` (no adapter); with
 *    `adjustScalingFactors`, `alpha_layer = alpha·k/r`.
 *
 * `info` of each layer: `maxComponents`, `rankBudget`, `explainedVarianceRatio` (all components),
 * `keptVarianceRatio` (sum over the k kept), `singularValues`, `sharedWith` (the hook layer), `steps`, `fits`,
 * `skippedBatches`, `converged` (its top-k components) and `allConverged` (false when `maxSteps` stopped the run).
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { evaInitLayers } from "./eva.ts";
 * const x = randn([3, 32, 8], { seed: 0 }).mul(randn([8], { seed: 1 }).square());
 * const layers = [
 *   { name: "q", weight: randn([8, 8], { seed: 2 }), data: { activations: x } },
 *   { name: "up", weight: randn([16, 8], { seed: 3 }), data: { activations: randn([3, 32, 8], { seed: 4 }) } },
 * ];
 * const inits = await evaInitLayers(layers, { rank: 2, alpha: 4 });
 * console.log([...inits].map(([n, i]) => `${n}: rank ${i.rank}`)); // the two ranks add up to 4
 * ```
 */
export async function evaInitLayers(
  layers: readonly InitLayer[],
  opts: EvaOptions = {},
): Promise<Map<string, LoraInit>> {
  checkInitOptions("eva", EVA_OPTIONS, opts);
  const rank = opts.rank ?? 8;
  if (layers.length === 0) throw new RangeError("eva: no layers given");
  for (const l of layers) checkLayer(`eva (layer "${l.name}")`, l.weight, rank, l.weight.shape[1]);
  await checkInputsFinite(
    "eva",
    Object.fromEntries(layers.map((l) => [`${l.name}.activations`, l.data?.activations])),
  );
  let rho = opts.rho ?? 2;
  if (rho > 1000) {
    const maxDim = Math.max(...layers.flatMap((l) => l.weight.shape));
    rho = Math.min(rho, Math.floor(maxDim / rank));
  }
  const comps = roundHalfEven(rank * rho);
  return await evaCore(layers, opts, (l) => Math.min(comps, l.weight.shape[1]));
}

/**
 * EVA — Explained Variance Adaptation (Paischer et al., NeurIPS 2025, arXiv 2410.07170) for one layer:
 * `A = components[:r]` of the incremental PCA of the layer's inputs (PEFT's centred minibatch PCA, run over the
 * cycled batches until the top-r components converge to cosine similarity τ), `B = 0`, so `B·A = 0` and the base
 * weight is untouched. With a single layer there is nothing to redistribute, so the rank stays r; ρ only sets how
 * many components (`round(r·ρ)`) the incremental PCA tracks, as PEFT does with one target module. Use
 * {@link evaInitLayers} (what `attachLora` calls) for the rank redistribution across layers.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { evaInit } from "./eva.ts";
 * const activations = randn([2, 64, 16], { seed: 1 }).mul(randn([16], { seed: 2 }));
 * const { a, b, info } = await evaInit(randn([8, 16], { seed: 0 }), { rank: 4, activations });
 * console.log(a.shape, b.shape, info?.keptVarianceRatio); // [4, 16] [8, 4]
 * ```
 */
export async function evaInit(weight: F32, opts: EvaOptions = {}): Promise<LoraInit> {
  checkInitOptions("eva", EVA_OPTIONS, opts, ["activations"]);
  checkLayer("eva", weight, opts.rank ?? 8, weight.shape[1]);
  const { activations, ...rest } = opts;
  const res = await evaInitLayers([{ name: "layer", weight, data: { activations } }], rest);
  return res.get("layer")!;
}
