/**
 * LoRA layers: the adapted linear layer (with DoRA), a model's LoRA layers (trainable selection, tracked norms,
 * merging, LoRA+ parameter groups), PEFT-format adapter files and update statistics. Attaching adapters with an
 * initialisation is `attachLora` in `../init/`.
 *
 * @module
 */
export * from "./linear.ts";
export * from "./layers.ts";
export * from "./adapter.ts";
export * from "./delta_stats.ts";
