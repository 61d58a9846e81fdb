/**
 * Registry entries of the weights-only spectral and structured initialisations (PiSSA, MiLoRA, OLoRA, LoftQ,
 * LoRAM, CorDA).
 *
 * @module
 */
import { entry, type InitMethod } from "./registry.ts";
import { PISSA_OPTIONS, pissaInit } from "./pissa.ts";
import { MILORA_OPTIONS, miloraInit } from "./milora.ts";
import { OLORA_OPTIONS, oloraInit } from "./olora.ts";
import { LOFTQ_OPTIONS, loftqInit } from "./loftq.ts";
import { LORAM_OPTIONS, loramInit } from "./loram.ts";
import { CORDA_OPTIONS, cordaInit } from "./corda.ts";

/** The weights-only spectral methods by name. */
export const SPECTRAL_METHODS: Readonly<Record<string, InitMethod>> = {
  pissa: entry({
    name: "pissa",
    paper:
      "Meng, Wang & Zhang, PiSSA: Principal Singular Values and Singular Vectors Adaptation (arXiv 2404.02948)",
    kind: "offset",
    needs: [],
    options: PISSA_OPTIONS,
    run: pissaInit,
  }),
  milora: entry({
    name: "milora",
    paper: "Wang et al., MiLoRA: Harnessing Minor Singular Components (arXiv 2406.09044)",
    kind: "offset",
    needs: [],
    options: MILORA_OPTIONS,
    run: miloraInit,
  }),
  olora: entry({
    name: "olora",
    paper: "Büyükakyüz, OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models (arXiv 2406.01775)",
    kind: "offset",
    needs: [],
    options: OLORA_OPTIONS,
    run: oloraInit,
  }),
  loftq: entry({
    name: "loftq",
    paper:
      "Li et al., LoftQ: LoRA-Fine-Tuning-aware Quantization for Large Language Models (arXiv 2310.08659)",
    kind: "quantized",
    needs: [],
    options: LOFTQ_OPTIONS,
    run: loftqInit,
  }),
  loram: entry({
    name: "loram",
    paper: "Zhang et al., The Primacy of Magnitude in Low-Rank Adaptation (LoRAM, arXiv 2507.06558)",
    kind: "offset",
    needs: [],
    options: LORAM_OPTIONS,
    takes: ["activations", "grads"],
    run: loramInit,
  }),
  corda: entry({
    name: "corda",
    paper:
      "Yang et al., CorDA: Context-Oriented Decomposition Adaptation of Large Language Models (arXiv 2406.05223)",
    kind: "offset",
    needs: ["activations"],
    options: CORDA_OPTIONS,
    run: cordaInit,
  }),
};
