/**
 * Shapes in the type system and their runtime twins.
 *
 * A shape is a tuple of dimensions. Literal dimensions (`Tensor<[128, 64], "f32">`) are checked by `deno check`;
 * a plain `number` dimension means "known only at run time" and passes every static rule, and a branded
 * {@link Sym} dimension (`Sym<"T">`) only equals itself. Every static rule below has a runtime function of the
 * same name (lower camel case) that throws a readable error naming the op and the shapes, so code that escapes
 * the static checks (runtime sizes, `number[]` shapes) still fails early and clearly.
 *
 * Static reshape checks multiply dimensions in the type system, which is only practical for small numbers:
 * they apply when every dimension is a literal below 1000 and the element count is below 8192; larger shapes
 * are checked at run time only.
 *
 * @module
 */

/** A tensor shape: one non-negative integer per axis. */
export type Shape = readonly number[];

/** A shape literal without `readonly` (what `const` type parameters infer, normalised). */
export type Writable<S extends Shape> = { -readonly [K in keyof S]: S[K] };

/** A symbolic dimension known only at run time, e.g. `Sym<"T">` for a sequence length. Equal only to itself. */
export type Sym<Name extends string> = number & { readonly __sym: Name };

// ---------------------------------------------------------------------------------------------------------
// Type-level helpers (exported only because public types refer to them).

/** The last dimension of a shape (`number` when unknown). */
export type Last<T extends Shape> = T extends readonly [...infer _I, infer L extends number] ? L : number;
/** A shape without its last dimension. */
export type Init<T extends Shape> = T extends readonly [...infer I extends number[], number] ? I : number[];
/** True when S is a tuple of known length. */
/** True when S is a tuple of known length. */
export type IsTuple<S extends Shape> = number extends S["length"] ? false : true;
/** True when D is a plain (non-literal, non-branded) number. */
/** True when D is a plain (non-literal, non-branded) number. */
export type IsWide<D> = number extends D ? (D extends { readonly __sym: string } ? false : true) : false;

/** One broadcast dimension, `never` if they clash. */
/** One broadcast dimension, `never` if they clash. */
export type BroadcastDim<A extends number, B extends number> = IsWide<A> extends true ? B
  : IsWide<B> extends true ? A
  : A extends 1 ? B
  : B extends 1 ? A
  : [A] extends [B] ? ([B] extends [A] ? A : never)
  : never;

/** True when a tuple contains `never`. */
export type HasNever<T extends readonly unknown[]> = T extends readonly [infer H, ...infer R]
  ? ([H] extends [never] ? true : HasNever<R>)
  : false;

/** Right-aligned broadcast of two tuples, with `never` where dimensions clash. */
export type BroadcastRaw<A extends Shape, B extends Shape> = A extends readonly [] ? [...B]
  : B extends readonly [] ? [...A]
  : [...BroadcastRaw<Init<A>, Init<B>>, BroadcastDim<Last<A>, Last<B>>];

/** The broadcast of two shapes (numpy rules), or `never` when a pair of dimensions clashes. */
export type Broadcast<A extends Shape, B extends Shape> = IsTuple<A> extends false ? number[]
  : IsTuple<B> extends false ? number[]
  : BroadcastRaw<A, B> extends infer R extends readonly unknown[] ? (HasNever<R> extends true ? never : R)
  : never;

/** {@link Broadcast} narrowed to a shape (`never` on a clash). */
export type BroadcastShape<A extends Shape, B extends Shape> = Extract<Broadcast<A, B>, Shape>;

/** Error marker: an argument of this type can never be passed, so a mismatched call fails `deno check`. */
export interface ShapeError<Message extends string> {
  /** What is wrong. */
  readonly __shapeError: Message;
}

/** `unknown` when A and B broadcast, otherwise an error marker. */
export type BroadcastOk<A extends Shape, B extends Shape> = [Broadcast<A, B>] extends [never]
  ? ShapeError<"shapes do not broadcast">
  : unknown;

/** Result shape of `a.matmul(b)` following numpy: 1-D operands are promoted and the added axis removed. */
export type MatmulShape<A extends Shape, B extends Shape> = IsTuple<A> extends false ? number[]
  : IsTuple<B> extends false ? number[]
  : A extends readonly [number] ? (B extends readonly [number] ? [] : [...Init<Init<B>>, Last<B>])
  : B extends readonly [number] ? Init<A>
  : [...Broadcast<Init<Init<A>>, Init<Init<B>>>, Last<Init<A>>, Last<B>];

/** The inner (contracted) dimension of a matmul's left operand. */
export type InnerA<A extends Shape> = Last<A>;
/** The inner (contracted) dimension of a matmul's right operand. */
export type InnerB<B extends Shape> = B extends readonly [number] ? B[0] : Last<Init<B>>;

/** `unknown` when the inner dimensions of a matmul agree, otherwise an error marker. */
export type MatmulOk<A extends Shape, B extends Shape> = IsTuple<A> extends false ? unknown
  : IsTuple<B> extends false ? unknown
  : A extends readonly [] ? ShapeError<"matmul needs at least 1-D operands">
  : B extends readonly [] ? ShapeError<"matmul needs at least 1-D operands">
  : [BroadcastDim<InnerA<A>, InnerB<B>>] extends [never] ? ShapeError<"matmul inner dimensions differ">
  : [MatmulShape<A, B>] extends [never] ? ShapeError<"matmul batch dimensions do not broadcast">
  : unknown;

/** A tuple of length N (N below 1000). */
export type Tup<N extends number, R extends unknown[] = []> = R["length"] extends N ? R
  : Tup<N, [...R, unknown]>;
/** A tuple of 1 elements (built by doubling, for tuple-length arithmetic). */
export type T1 = [unknown];
/** A tuple of 2 elements (built by doubling, for tuple-length arithmetic). */
export type T2 = [...T1, ...T1];
/** A tuple of 4 elements (built by doubling, for tuple-length arithmetic). */
export type T4 = [...T2, ...T2];
/** A tuple of 8 elements (built by doubling, for tuple-length arithmetic). */
export type T8 = [...T4, ...T4];
/** A tuple of 16 elements (built by doubling, for tuple-length arithmetic). */
export type T16 = [...T8, ...T8];
/** A tuple of 32 elements (built by doubling, for tuple-length arithmetic). */
export type T32 = [...T16, ...T16];
/** A tuple of 64 elements (built by doubling, for tuple-length arithmetic). */
export type T64 = [...T32, ...T32];
/** A tuple of 128 elements (built by doubling, for tuple-length arithmetic). */
export type T128 = [...T64, ...T64];
/** A tuple of 256 elements (built by doubling, for tuple-length arithmetic). */
export type T256 = [...T128, ...T128];
/** A tuple of 512 elements (built by doubling, for tuple-length arithmetic). */
export type T512 = [...T256, ...T256];
/** A tuple of 1024 elements (built by doubling, for tuple-length arithmetic). */
export type T1024 = [...T512, ...T512];
/** A tuple of 2048 elements (built by doubling, for tuple-length arithmetic). */
export type T2048 = [...T1024, ...T1024];
/** A tuple of 4096 elements (built by doubling, for tuple-length arithmetic). */
export type T4096 = [...T2048, ...T2048];
/** A tuple of 8192 elements (built by doubling, for tuple-length arithmetic). */
export type T8192 = [...T4096, ...T4096];
/** True for literal dimensions below 1024 (the ones static reshape checks multiply). */
export type SmallDim<N extends number> = IsWide<N> extends true ? false
  : N extends { readonly __sym: string } ? false
  : T1024 extends [...Tup<N>, ...unknown[]] ? true
  : false;
/** Tuple of length |A|·B, or `"big"` past 8192 elements. */
export type MulTup<
  A extends unknown[],
  B extends number,
  I extends unknown[] = [],
  Acc extends unknown[] = [],
> = Acc extends [...T8192, ...unknown[]] ? "big"
  : I["length"] extends B ? Acc
  : MulTup<A, B, [...I, unknown], [...Acc, ...A]>;
/** Tuple whose length is the product of the dims of S, or `"big"`. */
export type ProductTup<S extends Shape, Acc extends unknown[] = [unknown]> = S extends readonly [] ? Acc
  : S extends readonly [infer H extends number, ...infer R extends number[]]
    ? (SmallDim<H> extends true
      ? (MulTup<Acc, H> extends infer M extends unknown[] ? ProductTup<R, M> : "big")
      : "big")
  : "big";
/** The element count of a shape as a literal when every dimension is a small literal, else `number`. */
export type Size<S extends Shape> = IsTuple<S> extends false ? number
  : ProductTup<S> extends infer P extends unknown[] ? P["length"]
  : number;

/** `unknown` when a reshape keeps the element count (or when it cannot be checked statically). */
export type ReshapeOk<From extends Shape, To extends Shape> = IsWide<Size<From>> extends true ? unknown
  : IsWide<Size<To>> extends true ? unknown
  : [Size<From>] extends [Size<To>] ? unknown
  : ShapeError<"reshape changes the number of elements">;

/** A − B for small non-negative literals. */
export type Sub<A extends number, B extends number> = Tup<A> extends [...Tup<B>, ...infer R] ? R["length"]
  : never;
/** An axis normalised to a non-negative index, `never` when out of range. */
export type NormAxis<S extends Shape, A extends number> = IsTuple<S> extends false ? number
  : IsWide<A> extends true ? number
  : `${A}` extends `-${infer P extends number}` ? Sub<S["length"], P>
  : `${A}` extends keyof S ? (A extends S["length"] ? never : A)
  : never;

/** `unknown` when `A` is a valid axis of `S` (negative axes count from the end), else an error marker. */
export type AxisOk<S extends Shape, A extends number> = [NormAxis<S, A>] extends [never]
  ? ShapeError<"axis out of range">
  : unknown;

/** S with axis I removed (or set to 1 when K is true). */
export type ReduceTuple<
  S extends readonly number[],
  I extends number,
  K extends boolean,
  C extends unknown[] = [],
> = S extends readonly [infer H extends number, ...infer R extends number[]]
  ? C["length"] extends I ? (K extends true ? [1, ...R] : R) : [H, ...ReduceTuple<R, I, K, [...C, unknown]>]
  : [];
/** Shape after reducing axis `A` (all axes when `A` is undefined), keeping it as size 1 when `K` is true. */
export type Reduced<S extends Shape, A extends number | undefined, K extends boolean> = A extends number
  ? (IsWide<NormAxis<S, A>> extends true ? number[] : ReduceTuple<S, NormAxis<S, A>, K>)
  : K extends true ? { [I in keyof S]: 1 }
  : [];

/** Shape with the last two axes swapped. */
export type Transposed<S extends Shape> = IsTuple<S> extends false ? number[]
  : S extends readonly [...infer B extends number[], infer M extends number, infer N extends number]
    ? [...B, N, M]
  : S;

// ---------------------------------------------------------------------------------------------------------
// Runtime twins.

/** Formats a shape as `[2, 3]`. */
export function fmt(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

/** Most elements a tensor may have: kernels index elements with 32-bit signed integers. */
export const MAX_ELEMENTS = 2 ** 31 - 1;

/** Throws unless `shape` is an array of non-negative integers with at most {@link MAX_ELEMENTS} elements. */
export function checkShape(op: string, shape: unknown): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new TypeError(
      `${op}: invalid shape ${
        Array.isArray(shape) ? `[${shape.map(String).join(", ")}]` : String(shape)
      }; expected an array of non-negative integers`,
    );
  }
  const n = size(shape);
  if (n > MAX_ELEMENTS) {
    throw new RangeError(`${op}: shape ${fmt(shape)} has ${n} elements, more than a tensor holds (2^31 - 1)`);
  }
  return [...shape];
}

/** Number of elements of a shape. */
export function size(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major (C-order) strides of a shape, in elements. */
export function stridesOf(shape: Shape): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

/** Runtime twin of {@link Broadcast}: the broadcast shape, or an error naming the op and both shapes. */
export function broadcast(op: string, a: Shape, b: Shape): number[] {
  return checkResultSize(op, a, b, broadcastDims(op, a, b));
}

/** Throws unless `out`, the shape of `op` over shapes `a` and `b`, has at most {@link MAX_ELEMENTS} elements. */
function checkResultSize(op: string, a: Shape, b: Shape, out: number[]): number[] {
  const n = size(out);
  if (n > MAX_ELEMENTS) {
    const what = `Cannot ${op} shapes ${fmt(a)} and ${fmt(b)}: the result ${fmt(out)} has ${n} elements`;
    throw new RangeError(`${what}, more than a tensor holds (2^31 - 1)`);
  }
  return out;
}

/** {@link broadcast} without the limit on the result's size. */
function broadcastDims(op: string, a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new RangeError(
        `Cannot ${op} shapes ${fmt(a)} and ${fmt(b)}: dimensions ${da} and ${db} do not broadcast`,
      );
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Runtime twin of {@link MatmulShape} / {@link MatmulOk}. */
export function matmulShape(a: Shape, b: Shape): number[] {
  if (a.length === 0 || b.length === 0) {
    throw new RangeError(`Cannot matmul shapes ${fmt(a)} and ${fmt(b)}: operands must be at least 1-D`);
  }
  const ka = a[a.length - 1];
  const kb = b.length === 1 ? b[0] : b[b.length - 2];
  if (ka !== kb) {
    throw new RangeError(
      `Cannot matmul shapes ${fmt(a)} and ${fmt(b)}: inner dimensions ${ka} and ${kb} differ`,
    );
  }
  const a2 = a.length === 1 ? [1, a[0]] : a;
  const b2 = b.length === 1 ? [b[0], 1] : b;
  let batch: number[];
  try {
    batch = broadcastDims("matmul", a2.slice(0, -2), b2.slice(0, -2));
  } catch {
    throw new RangeError(`Cannot matmul shapes ${fmt(a)} and ${fmt(b)}: batch dimensions do not broadcast`);
  }
  const out = [...batch];
  if (a.length > 1) out.push(a[a.length - 2]);
  if (b.length > 1) out.push(b[b.length - 1]);
  return checkResultSize("matmul", a, b, out);
}

/** Runtime twin of {@link ReshapeOk}; also resolves one `-1` dimension. */
export function reshapeShape(from: Shape, to: Shape): number[] {
  if (!Array.isArray(to)) {
    throw new TypeError(`Cannot reshape ${fmt(from)} to ${to}: the target shape must be an array`);
  }
  const known = to.filter((d) => d !== -1);
  const free = to.length - known.length;
  if (free > 1 || !known.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new RangeError(`Cannot reshape ${fmt(from)} to ${fmt(to)}: invalid target shape`);
  }
  const n = size(from);
  const k = size(known);
  if (free === 1) {
    if (k === 0 || n % k !== 0) {
      throw new RangeError(`Cannot reshape ${fmt(from)} (${n} elements) to ${fmt(to)}`);
    }
    return to.map((d) => (d === -1 ? n / k : d));
  }
  if (k !== n) {
    throw new RangeError(`Cannot reshape ${fmt(from)} (${n} elements) to ${fmt(to)} (${k} elements)`);
  }
  return [...to];
}

/** Runtime twin of {@link NormAxis}: a non-negative axis, or an error naming the op, axis and shape. */
export function normAxis(op: string, shape: Shape, axis: number): number {
  const r = shape.length;
  if (!Number.isInteger(axis) || axis < -r || axis >= r) {
    throw new RangeError(`${op}: axis ${axis} is out of range for shape ${fmt(shape)}`);
  }
  return axis < 0 ? axis + r : axis;
}

/** Normalises a list of axes (or all axes when undefined), rejecting duplicates. */
export function normAxes(op: string, shape: Shape, axes: number | readonly number[] | undefined): number[] {
  if (axes === undefined) return shape.map((_, i) => i);
  if (typeof axes !== "number" && !Array.isArray(axes)) {
    throw new TypeError(`${op}: axis must be a number, a list of numbers or omitted, got ${axes}`);
  }
  const list = typeof axes === "number" ? [axes] : [...axes];
  const out = list.map((a) => normAxis(op, shape, a));
  if (new Set(out).size !== out.length) {
    throw new RangeError(`${op}: repeated axis in ${JSON.stringify(axes)}`);
  }
  return out.sort((x, y) => x - y);
}

/** Runtime twin of {@link Reduced}. */
export function reduced(shape: Shape, axes: readonly number[], keepdims: boolean): number[] {
  if (keepdims) return shape.map((d, i) => (axes.includes(i) ? 1 : d));
  return shape.filter((_, i) => !axes.includes(i));
}

/** Checks a permutation of `0..rank-1`. */
export function checkPermutation(op: string, shape: Shape, perm: readonly number[]): number[] {
  const r = shape.length;
  const p = perm.map((a) => normAxis(op, shape, a));
  if (p.length !== r || new Set(p).size !== r) {
    throw new RangeError(
      `${op}: ${JSON.stringify(perm)} is not a permutation of the axes of shape ${fmt(shape)}`,
    );
  }
  return p;
}
