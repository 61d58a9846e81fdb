/**
 * The registry: every initialisation method by name, with its paper, its promise, the data it needs and its option
 * schema.
 *
 * @module
 */
import { entry, type InitMethod } from "./registry.ts";
import { LORA_OPTIONS, loraInit } from "./lora.ts";
import { GAUSSIAN_OPTIONS, gaussianInit } from "./gaussian.ts";
import { INIT_B_OPTIONS, initBInit } from "./init_b.ts";
import { SPECTRAL_METHODS } from "./spectral_methods.ts";
import { DATA_METHODS } from "./data_methods.ts";

/** Weights-only random methods. */
const BASIC: Readonly<Record<string, InitMethod>> = {
  lora: entry({
    name: "lora",
    paper: "Hu et al., LoRA (arXiv 2106.09685); Init[A] of Hayou et al. (arXiv 2406.08447); PEFT default",
    kind: "zero",
    needs: [],
    options: LORA_OPTIONS,
    run: loraInit,
  }),
  gaussian: entry({
    name: "gaussian",
    paper: 'PEFT init_lora_weights="gaussian" (A ~ N(0, 1/r²))',
    kind: "zero",
    needs: [],
    options: GAUSSIAN_OPTIONS,
    run: gaussianInit,
  }),
  "init-b": entry({
    name: "init-b",
    paper:
      "Hayou, Ghosh & Yu, The Impact of Initialization on LoRA Finetuning Dynamics (arXiv 2406.08447), Init[B]",
    kind: "zero",
    needs: [],
    options: INIT_B_OPTIONS,
    run: initBInit,
  }),
};

/** Every registered method by name. */
export const INIT_METHODS: Readonly<Record<string, InitMethod>> = {
  ...BASIC,
  ...SPECTRAL_METHODS,
  ...DATA_METHODS,
};

/** The method registered as `name`, or an error listing the known names. */
export function getInitMethod(name: string): InitMethod {
  const m = INIT_METHODS[name];
  if (m === undefined) {
    throw new RangeError(
      `unknown LoRA init method "${name}"; known: ${Object.keys(INIT_METHODS).join(", ")}`,
    );
  }
  return m;
}
