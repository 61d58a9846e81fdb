/**
 * Registry entries of the data-driven initialisations (EVA, LoRA-GA, CNTLoRA, Gap-Init).
 *
 * @module
 */
import { z } from "../../deps.ts";
import { entry, type InitMethod, parseOptions } from "./registry.ts";
import { evaInit, evaInitLayers } from "./eva.ts";
import { loraGaInit } from "./lora_ga.ts";
import { cntloraInit, cntloraInitLayers } from "./cntlora.ts";
import { gapInit } from "./gap_init.ts";

const EVA_OPTIONS = z.object({
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

const CNTLORA_OPTIONS = z.object({
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

/** The data-driven methods by name. */
export const DATA_METHODS: Readonly<Record<string, InitMethod>> = {
  eva: {
    ...entry({
      name: "eva",
      paper: "Paischer et al., EVA: Explained Variance Adaptation (arXiv 2410.07170); PEFT eva.py semantics",
      kind: "zero",
      needs: ["activations"],
      options: EVA_OPTIONS,
      run: evaInit,
    }),
    initLayers: async (layers, opts) => {
      const own = parseOptions("eva", EVA_OPTIONS, opts);
      const { rank, alpha, useRslora, seed } = opts;
      return await evaInitLayers(layers, { rank, alpha, useRslora, seed, ...own });
    },
  },
  "lora-ga": entry({
    name: "lora-ga",
    paper: "Wang, Yu & Li, LoRA-GA: Low-Rank Adaptation with Gradient Approximation (arXiv 2407.05000)",
    kind: "offset",
    needs: ["grads"],
    options: z.object({
      direction: z.enum(["ArB2r", "A2rBr", "ArBr", "random"]).default("ArB2r").describe(
        "singular directions of A and B (ArB2r: A = Vᵀ[0:r], B = U[:, r:2r])",
      ),
      scale: z.enum(["stable", "gd", "unit", "weightS"]).default("stable").describe(
        "scaling of A and B (stable: × d_out^¼/√γ)",
      ),
      gamma: z.number().positive().default(16).describe("γ of the stable scale (stable_gamma)"),
      variant: z.enum(["official", "peft"]).default("official").describe(
        "official code / paper, or PEFT's lora_ga_init (B × S, only B gets the stable factor)",
      ),
      exact: z.boolean().default(true).describe(
        "exact SVD of the gradient (false: svd_lowrank with q = min(4r, min(G.shape)), niter 4)",
      ),
    }),
    run: loraGaInit,
  }),
  cntlora: {
    ...entry({
      name: "cntlora",
      paper:
        "Das et al., ConsNoTrainLoRA: data-driven weight initialization using constraints (arXiv 2507.08044)",
      kind: "target",
      needs: ["activations"],
      options: CNTLORA_OPTIONS,
      run: cntloraInit,
    }),
    initLayers: async (layers, opts) => {
      const own = parseOptions("cntlora", CNTLORA_OPTIONS, opts);
      const { rank, alpha, useRslora, seed } = opts;
      return await cntloraInitLayers(layers, { rank, alpha, useRslora, seed, ...own });
    },
  },
  "gap-init": entry({
    name: "gap-init",
    paper: "Zhao, Han & Hovy, When Is Rank-1 Enough? Gap-Init (arXiv 2602.01522)",
    kind: "zero",
    needs: ["gap"],
    options: z.object({
      normalize: z.boolean().default(false).describe("L2-normalise each z_text − z_vision before averaging"),
      complement: z.enum(["zeros", "orthonormal"]).default("zeros").describe(
        "other columns of B for r > 1: zeros, or a random orthonormal complement of the gap",
      ),
      noise: z.number().min(0).default(0).describe(
        "noise-level ablation: the unit gap plus isotropic Gaussian noise of norm σ, renormalised (0 = Gap-Init)",
      ),
    }),
    run: gapInit,
  }),
};
