/**
 * Registry entries of the weights-only spectral and structured initialisations (PiSSA, MiLoRA, OLoRA, LoftQ,
 * LoRAM, CorDA).
 *
 * @module
 */
import { z } from "../../deps.ts";
import { entry, type InitMethod } from "./registry.ts";
import { pissaInit } from "./pissa.ts";
import { miloraInit } from "./milora.ts";
import { oloraInit } from "./olora.ts";
import { loftqInit } from "./loftq.ts";
import { loramInit } from "./loram.ts";
import { cordaInit } from "./corda.ts";

/** The weights-only spectral methods by name. */
export const SPECTRAL_METHODS: Readonly<Record<string, InitMethod>> = {
  pissa: entry({
    name: "pissa",
    paper:
      "Meng, Wang & Zhang, PiSSA: Principal Singular Values and Singular Vectors Adaptation (arXiv 2404.02948)",
    kind: "offset",
    needs: [],
    options: z.object({
      niter: z.number().int().min(0).optional().describe(
        "power iterations of the randomized SVD (torch.svd_lowrank, q = r); default: unset = exact SVD",
      ),
      exact: z.boolean().default(false).describe("use the exact SVD even when niter is set"),
    }),
    run: pissaInit,
  }),
  milora: entry({
    name: "milora",
    paper: "Wang et al., MiLoRA: Harnessing Minor Singular Components (arXiv 2406.09044)",
    kind: "offset",
    needs: [],
    options: z.object({}),
    run: miloraInit,
  }),
  olora: entry({
    name: "olora",
    paper: "Büyükakyüz, OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models (arXiv 2406.01775)",
    kind: "offset",
    needs: [],
    options: z.object({}),
    run: oloraInit,
  }),
  loftq: entry({
    name: "loftq",
    paper:
      "Li et al., LoftQ: LoRA-Fine-Tuning-aware Quantization for Large Language Models (arXiv 2310.08659)",
    kind: "quantized",
    needs: [],
    options: z.object({
      iterations: z.number().int().min(1).default(1).describe(
        "alternating quantise/SVD steps (PEFT's loftq_iter default 1; the official scripts use 5)",
      ),
      blockSize: z.number().int().min(1).max(4096).default(64).describe(
        "NF4 block size (bitsandbytes Params4bit default 64)",
      ),
      compensateScale: z.boolean().default(false).describe(
        "divide A and B by √s so that Q + s·B·A ≈ W when alpha ≠ r (PEFT ignores s)",
      ),
    }),
    run: loftqInit,
  }),
  loram: entry({
    name: "loram",
    paper: "Zhang et al., The Primacy of Magnitude in Low-Rank Adaptation (LoRAM, arXiv 2507.06558)",
    kind: "offset",
    needs: [],
    options: z.object({
      gain: z.union([z.enum(["log", "exact"]), z.number().min(0)]).default("log").describe(
        'Q[r]: "log" = ln r / ln min(n, m) (Algorithm 1), "exact" = spectral gain (Eq. 10), or a fixed number',
      ),
      basis: z.enum(["dst", "random-orthogonal", "gaussian"]).default("dst").describe(
        "basis: DST-I (Eq. 12, deterministic), random orthogonal or Gaussian N(0, 1/n) (seeded; Sec. 4.3 ablations)",
      ),
      trackingMode: z.enum(["pissa", "milora", "olora", "corda", "lora-ga"]).optional().describe(
        "choose β so that ν[B·A] matches this reference init's (corda needs activations, lora-ga grads); " +
          "default: unset = use the gain",
      ),
    }),
    run: loramInit,
  }),
  corda: entry({
    name: "corda",
    paper:
      "Yang et al., CorDA: Context-Oriented Decomposition Adaptation of Large Language Models (arXiv 2406.05223)",
    kind: "offset",
    needs: ["activations"],
    options: z.object({
      mode: z.enum(["ipm", "kpm"]).default("ipm").describe(
        "ipm: top-r covariance-oriented triplets (instruction-previewed); kpm: bottom-r (knowledge-preserved)",
      ),
      damping: z.number().positive().default(0.01).describe(
        "initial covariance damping, doubled until ‖C·C⁻¹ − I‖_F < 0.05 (PEFT: 0.01)",
      ),
    }),
    run: cordaInit,
  }),
};
