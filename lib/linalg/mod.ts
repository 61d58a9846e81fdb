/**
 * GPU linear algebra for spectral and data-driven LoRA initialisations: thin QR (Householder), thin SVD
 * (QR-preconditioned one-sided Jacobi), randomized SVD with `torch.svd_lowrank` semantics, symmetric
 * eigendecomposition, pseudo-inverse, incremental PCA (scikit-learn's algorithm), blockwise NF4 quantisation
 * (bitsandbytes) and the DST-I basis. Everything runs on the tensor's device (WebGPU, or the float64 CPU
 * reference) without read-backs unless an option asks for a convergence check or an input is checked: one
 * value each for the finiteness of nf4Quantize's, nf4Qdq's and IncrementalPCA's input and for nf4Dequantize's
 * largest code. The factorisations check nothing on the host: NaN or infinite input makes their results NaN.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { qr, svd } from "./mod.ts";
 * const w = randn([48, 32], { seed: 1 });
 * const { u, s, vh } = await svd(w);
 * const { q, r } = await qr(w);
 * console.log(u.shape, s.shape, vh.shape, q.shape, r.shape);
 * ```
 *
 * @module
 */
export { qr, type QrOptions, type QrResult } from "./qr.ts";
export { svd, type SvdOptions, type SvdResult } from "./svd.ts";
export { svdLowRank, type SvdLowRankOptions } from "./svd_lowrank.ts";
export { eigh, type EighOptions, type EighResult } from "./eigh.ts";
export { F32_EPS, pinv, type PinvOptions } from "./pinv.ts";
export { IncrementalPCA, type IncrementalPCAOptions } from "./incremental_pca.ts";
export {
  NF4_CODE_TABLE,
  NF4_THRESHOLDS,
  nf4Dequantize,
  type Nf4Options,
  nf4Qdq,
  nf4Quantize,
  type Nf4Quantized,
} from "./nf4.ts";
export { dstBasis, type DstOptions } from "./dst.ts";
// Core types that the signatures above refer to (the root mod.ts exports the same ones), so that this
// module's documentation is complete on its own.
export type { AxisArg, NestedArray, Operand, Tensor } from "../tensor/tensor.ts";
export type * from "../shape.ts";
export type { AnyDataArray, DataArray, DType } from "../dtype.ts";
export type { DeviceName, Node, Storage } from "../ir/node.ts";
export type { Op, OpArgs } from "../ir/ops.ts";
