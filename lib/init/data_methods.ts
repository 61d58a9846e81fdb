/**
 * Registry entries of the data-driven initialisations (EVA, LoRA-GA, CNTLoRA, Gap-Init).
 *
 * @module
 */
import { entry, type InitMethod } from "./registry.ts";
import { EVA_OPTIONS, evaInit, evaInitLayers, type EvaOptions } from "./eva.ts";
import { LORA_GA_OPTIONS, loraGaInit } from "./lora_ga.ts";
import { CNTLORA_OPTIONS, cntloraInit, cntloraInitLayers, type CntLoraOptions } from "./cntlora.ts";
import { GAP_INIT_OPTIONS, gapInit } from "./gap_init.ts";

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
    initLayers: (layers, opts) => evaInitLayers(layers, opts as EvaOptions),
  },
  "lora-ga": entry({
    name: "lora-ga",
    paper: "Wang, Yu & Li, LoRA-GA: Low-Rank Adaptation with Gradient Approximation (arXiv 2407.05000)",
    kind: "offset",
    needs: ["grads"],
    options: LORA_GA_OPTIONS,
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
    initLayers: (layers, opts) => cntloraInitLayers(layers, opts as CntLoraOptions),
  },
  "gap-init": entry({
    name: "gap-init",
    paper: "Zhao, Han & Hovy, When Is Rank-1 Enough? Gap-Init (arXiv 2602.01522)",
    kind: "zero",
    needs: ["gap"],
    options: GAP_INIT_OPTIONS,
    run: gapInit,
  }),
};
