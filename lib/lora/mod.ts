/**
 * LoRA layers: the adapted linear layer (with DoRA), attaching by name pattern with any registered
 * initialisation, tracked norms, merging, LoRA+ parameter selection, and PEFT-format adapter files.
 *
 * @module
 */
export * from "./linear.ts";
export * from "./attach.ts";
export * from "./adapter.ts";
export * from "./delta_stats.ts";
