/**
 * Reverse-mode autodiff: {@link valueAndGrad}, {@link grad}, {@link stopGradient}, {@link customVjp}, the vjp table,
 * and the float64 finite-difference gradient checker.
 *
 * @module
 */
export * from "./grad.ts";
export { VJP_RULES, type VjpRule } from "./vjp.ts";
export * from "./gradcheck.ts";
