/**
 * The DST-I basis used by LoRAM's deterministic initialisation.
 *
 * @module
 */
import { DST_WGSL, dstGrid, dstHost, dstTable } from "../../kernels/dst.wgsl.ts";
import type { DeviceName } from "../ir/node.ts";
import { getDefaultDevice } from "../runtime/realize.ts";
import { tensor } from "../tensor/creation.ts";
import { runKernels } from "../tensor/custom.ts";
import { type Tensor, withShape } from "../tensor/tensor.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";
import { checkInt } from "./common.ts";

const DST_OPTIONS = z.object({ device: opt.device().optional() }).strict();

/** Options of {@link dstBasis}. */
export interface DstOptions {
  /** Device of the result (default: the default device). */
  device?: DeviceName;
}

/**
 * The first `r` columns of the orthonormal DST-I matrix of size n (METHODS.md §10, LoRAM Eq. 12):
 * `Φ[i, j] = √(2/(n+1))·sin((i+1)(j+1)π/(n+1))`, `0 ≤ i < n`, `0 ≤ j < r`. The full n×n matrix is symmetric
 * and orthogonal, so the columns are orthonormal (`ΦᵀΦ = I_r`). Each entry is the float32 rounding of the
 * exact value (the angle is reduced in integers and the sines come from a float64 table), computed on the
 * device in one launch.
 *
 * @example
 * ```ts
 * import { dstBasis } from "./mod.ts";
 * const phi = await dstBasis(16, 4);
 * console.log(phi.shape); // [16, 4]
 * ```
 */
export async function dstBasis<N extends number, R extends number>(
  n: N,
  r: R,
  opts: DstOptions = {},
): Promise<Tensor<[N, R], "f32">> {
  checkInt("dstBasis", "n", n, 1);
  checkInt("dstBasis", "r", r, 1, n);
  if (n * r >= 2 ** 32 || (n + 1) * 2 >= 2 ** 31) {
    throw new RangeError(`dstBasis: n·r = ${n * r} is too large for 32-bit index arithmetic`);
  }
  const device = checkOptions("dstBasis", DST_OPTIONS, opts).device ?? getDefaultDevice();
  const table = tensor(Float32Array.from(dstTable(n)), { device });
  const params = tensor(Uint32Array.of(n, r), { dtype: "u32", device });
  const [out] = await runKernels([table, params], [{ shape: [n, r], dtype: "f32" }], [{
    name: "dst_basis",
    wgsl: DST_WGSL,
    dispatch: dstGrid(n, r),
    bindings: [0, 2, 1],
    host: dstHost(n, r),
  }]);
  table.dispose();
  params.dispose();
  return withShape<[N, R]>(out, [n, r]);
}
