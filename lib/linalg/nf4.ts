/**
 * Blockwise 4-bit NormalFloat (NF4) quantisation as in bitsandbytes / QLoRA, used by LoftQ.
 *
 * @module
 */
import {
  NF4_CODE_TABLE,
  NF4_DEQUANTIZE_WGSL,
  NF4_QUANTIZE_WGSL,
  NF4_THRESHOLDS,
  nf4DequantizeHost,
  nf4Grids,
  nf4Params,
  nf4QuantizeHost,
} from "../../kernels/nf4.wgsl.ts";
import type { Shape } from "../shape.ts";
import { tensor } from "../tensor/creation.ts";
import { type KernelLaunch, runKernels } from "../tensor/custom.ts";
import { type Tensor, withShape } from "../tensor/tensor.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";
import { checkFinite } from "../nn/finite.ts";
import { checkInt } from "./common.ts";

export { NF4_CODE_TABLE, NF4_THRESHOLDS };

/** Options of the NF4 functions. */
export interface Nf4Options {
  /** Elements per block sharing one absmax (default 64, bitsandbytes' `Params4bit` default; at most 4096). */
  blockSize?: number;
}

/** An NF4-quantised tensor. */
export interface Nf4Quantized<S extends Shape = Shape> {
  /** One code (0..15, an index into {@link NF4_CODE_TABLE}) per element, in the shape of the input. */
  codes: Tensor<S, "u32">;
  /** The absolute maximum of each block of the flattened input, float32 (`ceil(size / blockSize)` values). */
  absmax: Tensor<[number], "f32">;
  /** Elements per block. */
  blockSize: number;
}

const NF4_OPTIONS = z.object({ blockSize: z.int().min(1).max(4096).optional() }).strict();

function blockSizeOf(op: string, opts: Nf4Options): number {
  return checkOptions(op, NF4_OPTIONS, opts).blockSize ?? 64;
}

/**
 * A non-empty float32 tensor of finite values. The finiteness check reads back one value: on a GPU a NaN dropped
 * out of its block's absmax and took code 0 (−absmax, as in bitsandbytes), while the CPU made the block NaN.
 */
async function checkInput(op: string, x: Tensor): Promise<void> {
  if (x.dtype !== "f32") throw new TypeError(`${op}: expected a float32 tensor, got dtype ${x.dtype}`);
  if (x.size === 0) throw new RangeError(`${op}: the tensor is empty (shape [${x.shape}])`);
  await checkFinite([["x", x]], { what: op });
}

function quantizeLaunch(n: number, bs: number, bindings: number[]): KernelLaunch {
  return {
    name: "nf4_quantize",
    wgsl: NF4_QUANTIZE_WGSL,
    dispatch: nf4Grids(n, bs).quantize,
    bindings,
    host: nf4QuantizeHost(n, bs),
  };
}

function dequantizeLaunch(n: number, bs: number, bindings: number[]): KernelLaunch {
  return {
    name: "nf4_dequantize",
    wgsl: NF4_DEQUANTIZE_WGSL,
    dispatch: nf4Grids(n, bs).dequantize,
    bindings,
    host: nf4DequantizeHost(n, bs),
  };
}

/**
 * Quantises `x` to NF4 in blocks of `blockSize` consecutive elements of its row-major flattening (the last
 * block may be shorter): per block `absmax = max|x|` (float32), per element the code of the nearest NF4 value
 * to `x·(1/absmax)`, decided by the float32 midpoints between neighbouring codes with `x > t` → upper code
 * and an exact tie → lower code, exactly as bitsandbytes (METHODS.md §6). An all-zero block gets absmax 0 and
 * the code of 0.0. NaN or infinite values are refused (a `NonFiniteWeightsError` naming the first), checked
 * with one value read back; then one launch on the device of `x`.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { nf4Dequantize, nf4Quantize } from "./mod.ts";
 * const w = randn([16, 32], { seed: 1 });
 * const q = await nf4Quantize(w);
 * const back = await nf4Dequantize(q); // [16, 32], on the NF4 grid of each block
 * console.log(q.absmax.shape, back.shape); // [8] [16, 32]
 * ```
 */
export async function nf4Quantize<S extends Shape>(
  x: Tensor<S, "f32">,
  opts: Nf4Options = {},
): Promise<Nf4Quantized<S>> {
  const bs = blockSizeOf("nf4Quantize", opts);
  await checkInput("nf4Quantize", x);
  const n = x.size;
  const params = tensor(nf4Params(n, bs), { dtype: "u32", device: x.device });
  const [codes, absmax] = await runKernels([x, params], [
    { shape: [...x.shape], dtype: "u32" },
    { shape: [Math.ceil(n / bs)], dtype: "f32" },
  ], [quantizeLaunch(n, bs, [0, 2, 3, 1])]);
  params.dispose();
  return {
    codes: withShape<S, "u32">(codes, x.shape),
    absmax: withShape<[number]>(absmax, 1),
    blockSize: bs,
  };
}

/**
 * Dequantises NF4 codes: `table[code]·absmax` of the element's block, in the shape of `q.codes`. Codes above 15
 * (not from {@link nf4Quantize}) are refused: their largest is read back first, one value.
 *
 * @example
 * ```ts
 * import { tensor } from "../../mod.ts";
 * import { nf4Dequantize, nf4Quantize } from "./mod.ts";
 * const q = await nf4Quantize(tensor([0.5, -2, 1, 0]));
 * console.log(await (await nf4Dequantize(q)).data()); // ≈ [0.4922, -2, 0.8814, 0]
 * ```
 */
export async function nf4Dequantize<S extends Shape>(q: Nf4Quantized<S>): Promise<Tensor<S, "f32">> {
  const bs = checkInt("nf4Dequantize", "blockSize", q.blockSize, 1, 4096);
  const n = q.codes.size;
  if (q.codes.dtype !== "u32") throw new TypeError(`nf4Dequantize: codes must be u32, got ${q.codes.dtype}`);
  if (q.absmax.size !== Math.ceil(n / bs)) {
    throw new RangeError(
      `nf4Dequantize: ${n} codes in blocks of ${bs} need ${
        Math.ceil(n / bs)
      } absmax values, got ${q.absmax.size}`,
    );
  }
  // The kernels clamp a code to 15 to keep the table read in bounds; such a code is no NF4 value at all.
  const top = (await q.codes.max().data())[0];
  if (top > 15) {
    const codes = await q.codes.data();
    const first = codes.findIndex((c) => c > 15);
    throw new RangeError(
      `nf4Dequantize: codes must be 0..15, got ${codes[first]} at element ${first} (the largest is ${top})`,
    );
  }
  const params = tensor(nf4Params(n, bs), { dtype: "u32", device: q.codes.device });
  const [out] = await runKernels([q.codes, q.absmax, params], [{ shape: [...q.codes.shape], dtype: "f32" }], [
    dequantizeLaunch(n, bs, [0, 1, 3, 2]),
  ]);
  params.dispose();
  return withShape<S>(out, q.codes.shape);
}

/**
 * Quantise-dequantise (`qdq` in LoftQ): `nf4Dequantize(nf4Quantize(x))` in one submission after the same
 * finiteness check as {@link nf4Quantize}. The result lies on the NF4 grid of each block and is a fixed point:
 * `nf4Qdq(nf4Qdq(x))` equals `nf4Qdq(x)`.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { nf4Qdq } from "./mod.ts";
 * const w = randn([8, 64], { seed: 2 });
 * const q = await nf4Qdq(w);
 * console.log(await q.sub(w).abs().max().item()); // the quantisation error
 * ```
 */
export async function nf4Qdq<S extends Shape>(
  x: Tensor<S, "f32">,
  opts: Nf4Options = {},
): Promise<Tensor<S, "f32">> {
  const bs = blockSizeOf("nf4Qdq", opts);
  await checkInput("nf4Qdq", x);
  const n = x.size;
  const params = tensor(nf4Params(n, bs), { dtype: "u32", device: x.device });
  // Buffers: 0 x, 1 params, 2 codes, 3 absmax, 4 out.
  const [codes, absmax, out] = await runKernels([x, params], [
    { shape: [n], dtype: "u32" },
    { shape: [Math.ceil(n / bs)], dtype: "f32" },
    { shape: [...x.shape], dtype: "f32" },
  ], [quantizeLaunch(n, bs, [0, 2, 3, 1]), dequantizeLaunch(n, bs, [2, 3, 4, 1])]);
  params.dispose();
  codes.dispose();
  absmax.dispose();
  return withShape<S>(out, x.shape);
}
