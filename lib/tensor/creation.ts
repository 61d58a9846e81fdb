/**
 * Creating tensors: from host values, constants, ranges, identity matrices and the counter-based random
 * generator (the same numbers on every device for a given seed).
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkDType, type DType, DTYPE_INFO, holds } from "../dtype.ts";
import { checkOptions, opt } from "../options.ts";
import { checkShape, fmt, MAX_ELEMENTS, type Shape, type Writable } from "../shape.ts";
import { constNode, type DeviceName, iotaNode, mk, randNode } from "../ir/node.ts";
import { Op } from "../ir/ops.ts";
import { seed32 } from "../ir/rng.ts";
import { getDefaultDevice } from "../runtime/realize.ts";
import { fromData, Tensor, withShape } from "./tensor.ts";

/** Where and as what a new tensor is made. */
export interface CreateOptions<D extends DType = DType> {
  /** Element type (default f32, or bool for boolean data). */
  dtype?: D;
  /** `"webgpu"`, `"wasm"` or `"cpu"` (default: the default device, see `getDefaultDevice`). */
  device?: DeviceName;
}

const CREATE_FIELDS = { dtype: opt.dtype().optional(), device: opt.device().optional() };
const CREATE_OPTIONS = z.object(CREATE_FIELDS).strict();
const TENSOR_OPTIONS = z.object({ ...CREATE_FIELDS, shape: z.array(z.number()).optional() }).strict();
const RAND_OPTIONS = z.object({
  dtype: z.literal("f32").optional(),
  device: opt.device().optional(),
  seed: opt.seed().optional(),
}).strict();

/** Nested arrays of numbers or booleans. */
export type Nested = number | boolean | readonly Nested[];

/** The shape of a nested array literal. */
export type ShapeOf<T> = T extends readonly (infer E)[] ? [T["length"], ...ShapeOf<E>] : [];

function nestedShape(data: Nested, op: string): number[] {
  const shape: number[] = [];
  let x: Nested = data;
  while (Array.isArray(x)) {
    shape.push(x.length);
    x = x[0] as Nested;
    if (x === undefined) break;
  }
  const check = (v: Nested, depth: number) => {
    if (depth === shape.length) {
      if (typeof v !== "number" && typeof v !== "boolean") {
        throw new TypeError(`${op}: ragged nested array: expected a number at depth ${depth}`);
      }
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      throw new TypeError(`${op}: ragged nested array: expected length ${shape[depth]} at depth ${depth}`);
    }
    for (const e of v) check(e, depth + 1);
  };
  check(data, 0);
  return shape;
}

function flatten(data: Nested, out: number[]): void {
  if (Array.isArray(data)) { for (const e of data) flatten(e, out); }
  else out.push(typeof data === "boolean" ? (data ? 1 : 0) : (data as number));
}

/**
 * A tensor from nested arrays (shape inferred) or from a flat typed array / array plus `shape`.
 *
 * @example
 * ```ts
 * import { tensor } from "../../mod.ts";
 * const a = tensor([[1, 2], [3, 4]]);   // Tensor<[2, 2], "f32">
 * const b = tensor(new Float32Array(6), { shape: [2, 3] });
 * console.log(a.shape, b.shape);
 * ```
 */
export function tensor<const T extends Nested, D extends DType = "f32">(
  data: T,
  opts?: CreateOptions<D>,
): Tensor<ShapeOf<T>, D>;
/** A tensor of the given shape from flat values (row-major). */
export function tensor<const S extends Shape, D extends DType = "f32">(
  data: ArrayLike<number>,
  opts: CreateOptions<D> & { shape: S },
): Tensor<Writable<S>, D>;
/** A 1-D tensor from a typed array. */
export function tensor<D extends DType = "f32">(
  data: Float32Array | Int32Array | Uint32Array | Uint8Array | Float64Array,
  opts?: CreateOptions<D>,
): Tensor<[number], D>;
export function tensor(
  data: Nested | ArrayLike<number>,
  opts: CreateOptions & { shape?: Shape } = {},
): unknown {
  checkOptions("tensor", TENSOR_OPTIONS, opts);
  const device = opts.device ?? getDefaultDevice();
  if (opts.shape !== undefined || ArrayBuffer.isView(data)) {
    const shape = checkShape("tensor", opts.shape ?? [(data as ArrayLike<number>).length]);
    return fromData(data as ArrayLike<number>, shape, checkDType(opts.dtype ?? "f32", "tensor"), device);
  }
  const shape = nestedShape(data as Nested, "tensor");
  const flat: number[] = [];
  flatten(data as Nested, flat);
  const isBool = typeof (flat.length > 0 ? firstLeaf(data as Nested) : 0) === "boolean";
  const dtype = checkDType(opts.dtype ?? (isBool ? "bool" : "f32"), "tensor");
  return fromData(flat, shape, dtype, device);
}

function firstLeaf(x: Nested): Nested {
  while (Array.isArray(x)) x = x[0] as Nested;
  return x;
}

/** A tensor filled with `value`. */
export function full<const S extends Shape, D extends DType = "f32">(
  shape: S,
  value: number,
  opts: CreateOptions<D> = {},
): Tensor<Writable<S>, D> {
  checkOptions("full", CREATE_OPTIONS, opts);
  const s = checkShape("full", shape);
  const dtype = checkDType(opts.dtype ?? "f32", "full");
  if (typeof value !== "number" || !holds(dtype, value)) {
    // A value the dtype does not hold would be converted differently by the devices and the reference.
    throw new TypeError(`full: dtype ${dtype} does not hold the value ${value}`);
  }
  return new Tensor(constNode(value, s, dtype, opts.device ?? getDefaultDevice()));
}

/** A tensor of zeros. */
export function zeros<const S extends Shape, D extends DType = "f32">(
  shape: S,
  opts: CreateOptions<D> = {},
): Tensor<Writable<S>, D> {
  checkOptions("zeros", CREATE_OPTIONS, opts);
  checkShape("zeros", shape);
  return full(shape, 0, opts);
}

/** A tensor of ones. */
export function ones<const S extends Shape, D extends DType = "f32">(
  shape: S,
  opts: CreateOptions<D> = {},
): Tensor<Writable<S>, D> {
  checkOptions("ones", CREATE_OPTIONS, opts);
  checkShape("ones", shape);
  return full(shape, 1, opts);
}

/** `start, start+step, ...` below `stop` (like numpy's arange; `arange(n)` is `0..n-1`). */
export function arange<D extends DType = "f32">(
  start: number,
  stop?: number,
  step = 1,
  opts: CreateOptions<D> = {},
): Tensor<[number], D> {
  for (const [name, v] of [["start", start], ["stop", stop], ["step", step]] as const) {
    if (v !== undefined && typeof v !== "number") {
      throw new TypeError(
        `arange: ${name} must be a number, got ${
          typeof v === "object" ? "an object" : typeof v
        }; options go ` +
          `after step: arange(0, n, 1, { device })`,
      );
    }
  }
  checkOptions("arange", CREATE_OPTIONS, opts);
  const [lo, hi] = stop === undefined ? [0, start] : [start, stop];
  if (step === 0 || !Number.isFinite(step)) {
    throw new RangeError(`arange: step must be finite and non-zero, got ${step}`);
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    throw new RangeError(`arange: start and stop must be finite, got ${lo} and ${hi}`);
  }
  const n = Math.max(0, Math.ceil((hi - lo) / step));
  if (n > MAX_ELEMENTS) throw new RangeError(`arange: ${n} values is more than a tensor holds (2^31 - 1)`);
  const dtype = checkDType(opts.dtype ?? "f32", "arange");
  const device = opts.device ?? getDefaultDevice();
  // Integer values are computed in the integer dtype where it holds every one of them, else in f32 and cast.
  const exact = (dtype === "i32" || dtype === "u32") &&
    [lo, step, lo + (n - 1) * step].every((v) => holds(dtype, v));
  const iota = new Tensor<[number], DType>(iotaNode(n, exact ? dtype : "f32", device));
  let t = iota as Tensor<[number], DType>;
  if (step !== 1) t = t.mul(step) as Tensor<[number], DType>;
  if (lo !== 0) t = t.add(lo) as Tensor<[number], DType>;
  return t.cast(dtype) as Tensor<[number], D>;
}

/** An `n x m` matrix with ones on the diagonal. */
export function eye<N extends number, M extends number = N, D extends DType = "f32">(
  n: N,
  m?: M,
  opts: CreateOptions<D> = {},
): Tensor<[N, M], D> {
  checkOptions("eye", CREATE_OPTIONS, opts);
  const cols = m ?? n;
  checkShape("eye", [n, cols]);
  const device = opts.device ?? getDefaultDevice();
  const r = new Tensor<Shape, "i32">(mk(Op.Reshape, [iotaNode(n, "i32", device)], { shape: [n, 1] }));
  const c = new Tensor<Shape, "i32">(mk(Op.Reshape, [iotaNode(cols, "i32", device)], { shape: [1, cols] }));
  return withShape<[N, M], D>(r.eq(c).cast(opts.dtype ?? ("f32" as D)), [n, cols]);
}

let globalSeed = 0x5eed;
/** Sets the seed that `rand`/`randn` use when called without `{ seed }`. */
export function setSeed(seed: number): void {
  globalSeed = seed32(seed, "setSeed");
}
function nextSeed(): number {
  globalSeed = (Math.imul(globalSeed, 1664525) + 1013904223) >>> 0;
  return globalSeed;
}

/** Options of the random constructors. */
export interface RandOptions extends CreateOptions<"f32"> {
  /** Seed of the counter-based generator (default: the next seed of the global stream, see {@link setSeed}). */
  seed?: number;
}

/**
 * Uniform values in [0, 1) from the counter-based generator: element i depends only on (seed, i).
 *
 * @example
 * ```ts
 * import { rand } from "../../mod.ts";
 * const u = rand([2, 3], { seed: 7 });
 * console.log(await u.data());
 * ```
 */
export function rand<const S extends Shape>(shape: S, opts: RandOptions = {}): Tensor<Writable<S>, "f32"> {
  checkOptions("rand", RAND_OPTIONS, opts);
  const s = checkShape("rand", shape);
  const seed = opts.seed ?? nextSeed();
  if (!Number.isInteger(seed)) throw new TypeError(`rand: seed must be an integer, got ${seed}`);
  return new Tensor(randNode(seed, s, opts.device ?? getDefaultDevice()));
}

/**
 * Standard normal values (Box–Muller over pairs of uniforms from {@link rand}): the uniforms are the same bits on
 * every device, the normals agree to the devices' log, sqrt and cos (a few ulp).
 */
export function randn<const S extends Shape>(shape: S, opts: RandOptions = {}): Tensor<Writable<S>, "f32"> {
  checkOptions("randn", RAND_OPTIONS, opts);
  const s = checkShape("randn", shape);
  const u = rand([...s, 2], opts);
  const u1 = u.slice(...s.map(() => null), 0).neg().add(1); // in (0, 1]
  const u2 = u.slice(...s.map(() => null), 1);
  const r = u1.log().mul(-2).sqrt();
  return withShape<Writable<S>>(r.mul(u2.mul(2 * Math.PI).cos()), s);
}

/** Refuses an empty list, or an entry that is not a tensor, as `op`'s input. */
function checkTensorList(op: string, tensors: readonly unknown[]): void {
  if (tensors.length === 0) throw new RangeError(`${op}: need at least one tensor`);
  const notTensor = tensors.findIndex((t) => !(t instanceof Tensor));
  if (notTensor >= 0) {
    throw new TypeError(`${op}: entry ${notTensor} is not a tensor (${tensors[notTensor]})`);
  }
}

/** Concatenates tensors along `axis` (shapes must agree elsewhere). */
export function concat<D extends DType>(tensors: readonly Tensor<Shape, D>[], axis = 0): Tensor<number[], D> {
  checkTensorList("concat", tensors);
  const first = tensors[0];
  const r = first.ndim;
  const ax = axis < 0 ? axis + r : axis;
  if (!Number.isInteger(ax) || ax < 0 || ax >= r) {
    throw new RangeError(`concat: axis ${axis} out of range for rank ${r}`);
  }
  for (const t of tensors) {
    if (t.ndim !== r || t.shape.some((d, i) => i !== ax && d !== first.shape[i]) || t.dtype !== first.dtype) {
      throw new RangeError(
        `Cannot concat ${tensors.map((x) => `${fmt(x.shape)} ${x.dtype}`).join(", ")} along axis ${axis}`,
      );
    }
  }
  // Padded pieces are added up: bool ones as i32, since bool has no addition.
  if (first.dtype === "bool") {
    return concat(tensors.map((t) => t.cast("i32")), axis).cast("bool") as Tensor<number[], D>;
  }
  const total = tensors.reduce((a, t) => a + t.shape[ax], 0);
  let off = 0;
  let out: Tensor<number[], D> | null = null;
  for (const t of tensors) {
    const pads = t.shape.map((_, i) =>
      (i === ax ? [off, total - off - t.shape[ax]] : [0, 0]) as [number, number]
    );
    off += t.shape[ax];
    // −0, not 0: x + (−0) is x for every float x, −0 included (x + 0 turns −0 into 0).
    const p = t.pad(pads, DTYPE_INFO[first.dtype].isFloat ? -0 : 0);
    out = out === null ? p : out.add(p);
  }
  return out!;
}

/** Stacks equally shaped tensors along a new axis. */
export function stack<D extends DType>(tensors: readonly Tensor<Shape, D>[], axis = 0): Tensor<number[], D> {
  checkTensorList("stack", tensors);
  const s = tensors[0].shape;
  for (const t of tensors) {
    if (t.shape.join() !== s.join() || t.dtype !== tensors[0].dtype) {
      throw new RangeError(`Cannot stack ${tensors.map((x) => `${fmt(x.shape)} ${x.dtype}`).join(", ")}`);
    }
  }
  // The new axis goes anywhere from before the first axis to after the last: −(rank + 1) .. rank.
  if (!Number.isInteger(axis) || axis < -(s.length + 1) || axis > s.length) {
    throw new RangeError(`stack: axis ${axis} is out of range for tensors of shape ${fmt(s)}`);
  }
  return concat(tensors.map((t) => t.unsqueeze(axis)), axis);
}

/** `cond ? a : b` elementwise, with broadcasting. */
export function where<D extends DType>(
  cond: Tensor<Shape, "bool">,
  a: Tensor<Shape, D> | number,
  b: Tensor<Shape, D> | number,
): Tensor<Shape, D> {
  if (!(cond instanceof Tensor)) {
    throw new TypeError(`where: the condition must be a bool tensor, got ${cond}`);
  }
  return cond.where(a, b);
}
