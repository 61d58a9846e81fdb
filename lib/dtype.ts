/**
 * Element types. Every tensor has one of these; the type parameter `D` of `Tensor<S, D>` carries it statically
 * and {@link checkSameDType} is the runtime twin of the static rule "binary ops need equal dtypes".
 *
 * @module
 */

/** The element types a tensor can hold. `f16` needs an adapter with the `shader-f16` feature. */
export type DType = "f32" | "f16" | "i32" | "u32" | "bool";

/** All dtypes, in a fixed order. */
export const DTYPES: readonly DType[] = ["f32", "f16", "i32", "u32", "bool"];

/** The typed array returned by `await t.data()` for a tensor of dtype `D`. */
export type DataArray<D extends DType> = D extends "f32" | "f16" ? Float32Array
  : D extends "i32" ? Int32Array
  : D extends "u32" ? Uint32Array
  : D extends "bool" ? Uint8Array
  : never;

/** Any typed array a tensor can be created from or read back into. */
export type AnyDataArray = Float32Array | Int32Array | Uint32Array | Uint8Array;

/** Static facts about one dtype. */
export interface DTypeInfo {
  /** Bytes per element in device storage (bool is stored as a 32-bit word). */
  readonly bytes: number;
  /** True for f32 and f16. */
  readonly isFloat: boolean;
  /** True for i32. */
  readonly isSigned: boolean;
}

/** Facts about every dtype, keyed by dtype. */
export const DTYPE_INFO: { readonly [D in DType]: DTypeInfo } = {
  f32: { bytes: 4, isFloat: true, isSigned: true },
  f16: { bytes: 2, isFloat: true, isSigned: true },
  i32: { bytes: 4, isFloat: false, isSigned: true },
  u32: { bytes: 4, isFloat: false, isSigned: false },
  bool: { bytes: 4, isFloat: false, isSigned: false },
};

/** Throws unless `d` names a dtype. */
export function checkDType(d: unknown, op = "tensor"): DType {
  if (typeof d !== "string" || !(DTYPES as readonly string[]).includes(d)) {
    throw new TypeError(`${op}: unknown dtype ${JSON.stringify(d)}; expected one of ${DTYPES.join(", ")}`);
  }
  return d as DType;
}

/** Runtime twin of the static rule that both operands of a binary op share one dtype. */
export function checkSameDType(op: string, a: DType, b: DType): DType {
  if (a !== b) {
    throw new TypeError(`Cannot ${op} tensors of dtypes ${a} and ${b}; convert one with .cast()`);
  }
  return a;
}

/** Runtime twin of the rule that an op needs a floating-point input (exp, log, softmax, ...). */
export function checkFloat(op: string, d: DType): void {
  if (!DTYPE_INFO[d].isFloat) {
    throw new TypeError(`Cannot ${op} a tensor of dtype ${d}; it needs f32 or f16 (use .cast("f32"))`);
  }
}

/**
 * Runtime twin of the rule that arithmetic, ordering and reductions need numbers: a bool tensor holds truths, and
 * adding or summing them would give a device-dependent answer (a bool holding 2, or a shader error).
 */
export function checkNumeric(op: string, d: DType): void {
  if (d === "bool") {
    throw new TypeError(`Cannot ${op} a tensor of dtype bool; cast it to i32 first (.cast("i32"))`);
  }
}

/** Whether dtype `d` holds the number `v` exactly (floats round every number, so they hold all). */
export function holds(d: DType, v: number): boolean {
  switch (d) {
    case "f32":
    case "f16":
      return true;
    case "i32":
      return Number.isInteger(v) && v >= -2147483648 && v <= 2147483647;
    case "u32":
      return Number.isInteger(v) && v >= 0 && v <= 4294967295;
    case "bool":
      return v === 0 || v === 1;
  }
}

/**
 * Runtime twin of the rule that a number operand of an op on a tensor of dtype `d` is a value of `d`: converting
 * 1.5 to i32 (or −1 to u32) before comparing or multiplying would give a wrong answer.
 */
export function checkScalar(op: string, d: DType, v: number): number {
  if (!holds(d, v)) {
    throw new TypeError(
      `Cannot ${op} a tensor of dtype ${d} and the number ${v}, which ${d} does not hold; ` +
        `cast the tensor first (e.g. .cast("f32"))`,
    );
  }
  return v;
}

/** Rounds a float64 value to what dtype `d` stores (the CPU reference keeps float64 until the store). */
export function roundTo(d: DType, x: number): number {
  switch (d) {
    case "f32":
      return Math.fround(x);
    case "f16":
      return Math.f16round(x);
    case "i32":
      return toI32(x);
    case "u32":
      return toU32(x);
    case "bool":
      return x ? 1 : 0;
  }
}

/** Float-to-i32 conversion as WGSL does it: truncate toward zero, saturate at the range ends, NaN to 0. */
export function toI32(x: number): number {
  if (Number.isNaN(x)) return 0;
  if (x >= 2147483647) return 2147483647;
  if (x <= -2147483648) return -2147483648;
  return Math.trunc(x) | 0;
}

/** Float-to-u32 conversion as WGSL does it: truncate, saturate at 0 and 2^32-1, NaN to 0. */
export function toU32(x: number): number {
  if (Number.isNaN(x) || x <= 0) return 0;
  if (x >= 4294967295) return 4294967295;
  return Math.trunc(x) >>> 0;
}

/** A fresh host array of `n` elements able to hold dtype `d` as `await t.data()` returns it. */
export function allocData<D extends DType>(d: D, n: number): DataArray<D> {
  switch (d) {
    case "f32":
    case "f16":
      return new Float32Array(n) as DataArray<D>;
    case "i32":
      return new Int32Array(n) as DataArray<D>;
    case "u32":
      return new Uint32Array(n) as DataArray<D>;
    default:
      return new Uint8Array(n) as DataArray<D>;
  }
}

/**
 * What a gather gives at an index outside its axis, by dtype: NaN for floats, the lowest i32, the largest u32 and
 * true, as `jnp.take`'s fill mode. Only indices computed on the device can be outside (host ones are refused).
 */
export const GATHER_FILL: { readonly [D in DType]: number } = {
  f32: NaN,
  f16: NaN,
  i32: -2147483648,
  u32: 4294967295,
  bool: 1,
};

/** The identity of max-reduction for dtype `d` (the lowest value it holds). */
export function lowest(d: DType): number {
  return d === "i32" ? -2147483648 : d === "u32" || d === "bool" ? 0 : -Infinity;
}
