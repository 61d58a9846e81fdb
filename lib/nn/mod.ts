/**
 * Neural-network layers: modules whose parameters form a tree of named tensors (`layers.3.attention.wq.weight`),
 * functional forms of every layer, Llama-2 attention (RoPE, GQA), RMSNorm and SwiGLU, losses, and (in `optim/`)
 * optimisers and learning-rate schedules.
 *
 * @example
 * ```ts
 * import { valueAndGrad } from "../autodiff/mod.ts";
 * import { randn, tensor } from "../tensor/creation.ts";
 * import { AdamW, crossEntropy, functionalCall, Mlp, type ParamDict } from "./mod.ts";
 *
 * const model = new Mlp([8, 32, 3], { seed: 0 });
 * const opt = new AdamW(model, { lr: 1e-2, weightDecay: 0.01 });
 * const x = randn([16, 8], { seed: 1 });
 * const y = tensor(Int32Array.from({ length: 16 }, (_, i) => i % 3), { dtype: "i32" });
 * const lossOf = (p: ParamDict) => functionalCall(model, p, () => crossEntropy(model.forward(x), y));
 * for (let step = 0; step < 10; step++) {
 *   const { value, grads } = valueAndGrad(lossOf)(opt.params);
 *   await opt.step(grads, { realize: [value] });
 * }
 * ```
 *
 * @module
 */
export * from "./module.ts";
export * from "./init.ts";
export * from "./linear.ts";
export * from "./norm.ts";
export * from "./activations.ts";
export * from "./attention.ts";
export * from "./mlp.ts";
export * from "./transformer.ts";
export * from "./loss.ts";
export * from "./finite.ts";
export * from "./targets.ts";
export * from "./optim/mod.ts";
