/**
 * The LoRA layers of a model: listing them, selecting their trainable tensors (with LoRA+'s faster group), the norms
 * ‖A‖, ‖B‖, ‖s·B·A‖ a training loop tracks, and merging adapters into the weights and back.
 *
 * @module
 */
import { namedModules, replaceModule } from "../nn/module.ts";
import { findTargets } from "../nn/targets.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { F32 } from "../nn/linear.ts";
import { type LoraInit, LoraLinear, type MergedAdapter } from "./linear.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

const LORA_PLUS_OPTIONS = z.object({
  lr: opt.nonNegative(),
  ratio: opt.positive().optional(),
  weightDecay: opt.nonNegative().optional(),
}).strict();

/** The LoRA layers of a model as `[path, layer]`. */
export function loraLayers(model: object): [string, LoraLinear][] {
  return namedModules(model).filter((e): e is [string, LoraLinear] => e[1] instanceof LoraLinear);
}

/** Selects the trainable parameters of a LoRA model (A, B and DoRA magnitudes) by path. */
export const LORA_TRAINABLE: RegExp = /(^|\.)(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$/;

/** Selects the B matrices (and, as PEFT's LoRA+ does, every 1-D trainable tensor) for LoRA+'s faster rate. */
export const LORA_PLUS_FAST: RegExp = /(^|\.)(lora_B\.weight|lora_magnitude_vector)$/;

/** Lazy norms to track while training: `<path>.A`, `<path>.B`, `<path>.deltaW` (Frobenius of s·B·A). */
export function loraNorms(model: object): Record<string, Tensor<[], "f32">> {
  const out: Record<string, Tensor<[], "f32">> = {};
  for (const [path, l] of loraLayers(model)) {
    const fro = (t: F32) => t.square().sum().sqrt() as Tensor<[], "f32">;
    out[`${path}.A`] = fro(l.lora_A.weight);
    out[`${path}.B`] = fro(l.lora_B.weight);
    out[`${path}.deltaW`] = fro(l.deltaWeight());
  }
  return out;
}

/**
 * Replaces every LoRA layer with its merged `Linear` (the adapter folded into the weight) and returns, by path, what
 * {@link unmergeLora} needs to undo it (PEFT's `merge_adapter` / `unmerge_adapter`). A model with no LoRA layer left
 * (merged already) is returned unchanged, with an empty record.
 */
export function mergeLora(model: object): Record<string, MergedAdapter> {
  const out: Record<string, MergedAdapter> = {};
  for (const [path, l] of loraLayers(model)) {
    out[path] = l.mergedAdapter();
    replaceModule(model, path, l.merge());
  }
  return out;
}

/** Optimiser settings for LoRA+ (Hayou, Ghosh & Yu, ICML 2024, arXiv 2402.12354): B learns `ratio` times faster. */
export interface LoraPlusOptions {
  /** Learning rate of A (and of everything outside B). */
  lr: number;
  /** `lr_B / lr_A` (default 16, the LoRA+ authors' suggestion; the LoRAM paper's baseline used 4). */
  ratio?: number;
  /** Weight decay of both groups (default 0). */
  weightDecay?: number;
}

/**
 * Optimiser options that train only the adapters, with B (and DoRA magnitudes, like PEFT's LoRA+) in a group of its
 * own at `ratio × lr`. Pass the result to an optimiser constructor.
 *
 * @example
 * ```ts
 * import { Linear } from "../nn/linear.ts";
 * import { AdamW } from "../nn/optim/mod.ts";
 * import { attachLora } from "../init/attach.ts";
 * import { loraPlusOptions } from "./layers.ts";
 * const model = { q: new Linear(16, 16, { seed: 0 }) };
 * await attachLora(model, { targetModules: ["q"], rank: 4 });
 * const opt = new AdamW(model, loraPlusOptions({ lr: 1e-3, ratio: 16 }));
 * ```
 */
export function loraPlusOptions(opts: LoraPlusOptions): {
  lr: number;
  weightDecay: number;
  trainable: RegExp;
  groups: { name: string; params: RegExp; lr: number; weightDecay: number }[];
} {
  checkOptions("loraPlusOptions", LORA_PLUS_OPTIONS, opts);
  const ratio = opts.ratio ?? 16;
  const wd = opts.weightDecay ?? 0;
  return {
    lr: opts.lr,
    weightDecay: wd,
    trainable: LORA_TRAINABLE,
    groups: [{ name: "lora_B", params: LORA_PLUS_FAST, lr: opts.lr * ratio, weightDecay: wd }],
  };
}

/**
 * Undoes {@link mergeLora} for the given adapters: each merged `Linear` at a path becomes a LoRA layer again (see
 * {@link LoraLinear.unmerge}). Pass what `mergeLora` returned to get the layers back as they were (DoRA included); a
 * bare init result per path gives plain LoRA layers.
 */
export function unmergeLora(
  model: object,
  adapters: Readonly<Record<string, LoraInit | MergedAdapter>>,
): void {
  for (const [path, adapter] of Object.entries(adapters)) {
    const m = findTargets(model, new RegExp(path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))[0]?.[1];
    if (m === undefined) throw new RangeError(`unmergeLora: the model has no Linear module "${path}"`);
    replaceModule(model, path, LoraLinear.unmerge(m, adapter));
  }
}
