/**
 * The closed set of primitives. Everything else (softmax, gelu, layerNorm, ...) is a composite of these.
 * Per-op concerns are exhaustive tables keyed by {@link Op}: shape/dtype rules ({@link SHAPE_RULES}), CPU
 * reference rules (`reference.ts`), vector-Jacobian products (autodiff) and lowering (codegen). A table that
 * misses an op does not compile.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { fmt } from "../shape.ts";

/** Primitive operations of the IR. */
export enum Op {
  // Leaves.
  /** Data that lives in a device buffer. */
  Buffer = "Buffer",
  /** A constant broadcast to a shape. */
  Const = "Const",
  /** `0, 1, 2, ...` along a 1-D shape. */
  Iota = "Iota",
  /** Counter-based uniform random numbers in [0, 1): the same on every device for a given seed. */
  Rand = "Rand",
  // Unary elementwise.
  Neg = "Neg",
  Recip = "Recip",
  Exp = "Exp",
  Log = "Log",
  Sqrt = "Sqrt",
  Sin = "Sin",
  Cos = "Cos",
  Tanh = "Tanh",
  Abs = "Abs",
  Cast = "Cast",
  // Binary elementwise (operands have equal shapes; broadcasting is an Expand view).
  Add = "Add",
  Mul = "Mul",
  Div = "Div",
  Max = "Max",
  Pow = "Pow",
  CmpLt = "CmpLt",
  CmpEq = "CmpEq",
  // Ternary.
  Where = "Where",
  // Reductions (axes kept as size 1).
  Sum = "Sum",
  ReduceMax = "ReduceMax",
  /** Index (i32) of the first maximum along one axis (kept as size 1). */
  ArgMax = "ArgMax",
  /** Batched matrix product `[..., M, K] x [..., K, N] -> [..., M, N]` with equal batch dims. */
  Dot = "Dot",
  // Movement (views: lowered to index arithmetic, never copies by themselves).
  Reshape = "Reshape",
  Permute = "Permute",
  Expand = "Expand",
  /** Strided slice: per axis `start`, `step` (may be negative) and the result length. */
  Shrink = "Shrink",
  /** Zero (or `value`) padding: per axis `[before, after]`. */
  Pad = "Pad",
  /** `out[..., j..., ...] = x[..., index[j...], ...]` along one axis. */
  Gather = "Gather",
  // Autodiff markers (identity in the forward pass).
  /** Identity whose gradient is zero (`stopGradient`). */
  Detach = "Detach",
  /** Identity whose gradient is given by a user function (`customVjp`). Never hash-consed. */
  CustomVjp = "CustomVjp",
  // Hand-written kernels.
  /** A hand-written kernel (from `kernels/`) computing one result from its inputs; see {@link CustomKernelArg}. */
  Custom = "Custom",
}

/** The argument each op carries. */
export interface OpArgs {
  /** Argument of {@link Op.Buffer}. */
  [Op.Buffer]: null;
  /** Argument of {@link Op.Const}. */
  [Op.Const]: { value: number };
  /** Argument of {@link Op.Iota}. */
  [Op.Iota]: null;
  /** Argument of {@link Op.Rand}. */
  [Op.Rand]: { seed: number };
  /** Argument of {@link Op.Neg}. */
  [Op.Neg]: null;
  /** Argument of {@link Op.Recip}. */
  [Op.Recip]: null;
  /** Argument of {@link Op.Exp}. */
  [Op.Exp]: null;
  /** Argument of {@link Op.Log}. */
  [Op.Log]: null;
  /** Argument of {@link Op.Sqrt}. */
  [Op.Sqrt]: null;
  /** Argument of {@link Op.Sin}. */
  [Op.Sin]: null;
  /** Argument of {@link Op.Cos}. */
  [Op.Cos]: null;
  /** Argument of {@link Op.Tanh}. */
  [Op.Tanh]: null;
  /** Argument of {@link Op.Abs}. */
  [Op.Abs]: null;
  /** Argument of {@link Op.Cast}. */
  [Op.Cast]: { dtype: DType };
  /** Argument of {@link Op.Add}. */
  [Op.Add]: null;
  /** Argument of {@link Op.Mul}. */
  [Op.Mul]: null;
  /** Argument of {@link Op.Div}. */
  [Op.Div]: null;
  /** Argument of {@link Op.Max}. */
  [Op.Max]: null;
  /** Argument of {@link Op.Pow}. */
  [Op.Pow]: null;
  /** Argument of {@link Op.CmpLt}. */
  [Op.CmpLt]: null;
  /** Argument of {@link Op.CmpEq}. */
  [Op.CmpEq]: null;
  /** Argument of {@link Op.Where}. */
  [Op.Where]: null;
  /** Argument of {@link Op.Sum}. */
  [Op.Sum]: { axes: number[] };
  /** Argument of {@link Op.ReduceMax}. */
  [Op.ReduceMax]: { axes: number[] };
  /** Argument of {@link Op.ArgMax}. */
  [Op.ArgMax]: { axis: number };
  /** Argument of {@link Op.Dot}. */
  [Op.Dot]: null;
  /** Argument of {@link Op.Reshape}. */
  [Op.Reshape]: { shape: number[] };
  /** Argument of {@link Op.Permute}. */
  [Op.Permute]: { perm: number[] };
  /** Argument of {@link Op.Expand}. */
  [Op.Expand]: { shape: number[] };
  /** Argument of {@link Op.Shrink}. */
  [Op.Shrink]: { start: number[]; step: number[]; len: number[] };
  /** Argument of {@link Op.Pad}. */
  [Op.Pad]: { pads: [number, number][]; value: number };
  /** Argument of {@link Op.Gather}. */
  [Op.Gather]: { axis: number };
  /** Argument of {@link Op.Detach}. */
  [Op.Detach]: null;
  /** Argument of {@link Op.CustomVjp}: the primal inputs and the backward function. */
  [Op.CustomVjp]: CustomVjpArg;
  /** Argument of {@link Op.Custom}: the kernel. */
  [Op.Custom]: CustomKernelArg;
}

/** Host arrays a hand-written kernel's host twin reads and writes (row-major; float64 in the reference). */
export type HostBuffer = Float64Array | Float32Array | Int32Array | Uint32Array;

/**
 * A hand-written kernel as a graph node ({@link Op.Custom}): WGSL whose binding 0 is the result (`read_write`)
 * and bindings 1.. the inputs (`read`, each a contiguous row-major buffer of the input's shape), entry point
 * `main`, launched with `dispatch`; and a host function with the same effect on `[result, ...inputs]`, which the
 * CPU backend and the float64 reference run. The node has no derivative rule of its own: wrap it with
 * `customVjp`. `key` names the computation (shapes and options included): nodes with equal keys must have equal
 * kernels, so graph signatures and printing use it instead of the source.
 */
export interface CustomKernelArg {
  /** Identifies the computation (equal keys: equal WGSL, dispatch and host function). */
  readonly key: string;
  /** Name in errors and DEBUG output. */
  readonly name: string;
  /** Shape of the result. */
  readonly shape: readonly number[];
  /** Dtype of the result. */
  readonly dtype: DType;
  /** The compute shader. */
  readonly wgsl: string;
  /** Workgroup counts. */
  readonly dispatch: readonly [number, number, number];
  /** The same computation on host arrays `[result, ...inputs]`. */
  readonly host: (buffers: HostBuffer[]) => void;
  /**
   * Optional: the same computation as a WebAssembly module for the `wasm` device (which otherwise runs `host` over
   * views of its memory); called with the device's SIMD features, results may be cached by the caller.
   */
  readonly wasm?: (features: WasmFeatures) => CustomWasmKernel;
  /** Serializes as the key (hash-consing, signatures and printing). */
  toJSON(): string;
}

/** What the wasm device tells a hand-written kernel's wasm form about itself. */
export interface WasmFeatures {
  /** Whether relaxed-SIMD instructions (fused multiply-add) are available. */
  readonly relaxedSimd: boolean;
  /** Threads that run a split kernel (the pool's workers and the calling thread). */
  readonly threads: number;
}

/**
 * A hand-written kernel compiled to WebAssembly: a module importing the device memory as `env.mem` (shared, up to
 * 65,536 pages) and exporting `run(start, end, scratch, out, in0, in1, ...)`, which computes work items
 * `start..end-1` from byte addresses into that memory (`scratch`: `scratchBytes` of the calling thread's own).
 */
export interface CustomWasmKernel {
  /** The module's bytes. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** Work items of one launch. */
  readonly items: number;
  /** Rough cost of one item in nanoseconds (whether to split the items over threads). */
  readonly itemCost: number;
  /** Scratch bytes per thread. */
  readonly scratchBytes: number;
  /** Whether the module also imports `math.sin` and `math.cos` (the host's `Math.sin`, `Math.cos`). */
  readonly usesMath: boolean;
  /**
   * Optional: i32 values passed to `run` after the buffers' addresses (a launch's own constants, such as the step of
   * a factorisation, so that one module serves every launch).
   */
  readonly args?: readonly number[];
}

/**
 * The argument of a {@link Op.CustomVjp} node, over the IR's node type `N` (`Node` of `node.ts`, which builds on
 * this file, hence the parameter).
 */
export interface CustomVjpArg<N = unknown> {
  /** The inputs the custom backward differentiates with respect to. */
  readonly inputs: readonly N[];
  /** Cotangent of the output → one cotangent (or null) per input. Shapes must equal the inputs' shapes. */
  backward(cotangent: N, output: N, inputs: readonly N[]): (N | null)[];
}

/** Unary elementwise ops. */
export const UNARY_OPS: ReadonlySet<Op> = new Set([
  Op.Neg,
  Op.Recip,
  Op.Exp,
  Op.Log,
  Op.Sqrt,
  Op.Sin,
  Op.Cos,
  Op.Tanh,
  Op.Abs,
  Op.Cast,
]);
/** Binary elementwise ops. */
export const BINARY_OPS: ReadonlySet<Op> = new Set([
  Op.Add,
  Op.Mul,
  Op.Div,
  Op.Max,
  Op.Pow,
  Op.CmpLt,
  Op.CmpEq,
]);
/** Ops that map each output element to the same-index elements of their inputs. */
export const ELEMENTWISE_OPS: ReadonlySet<Op> = new Set([
  ...UNARY_OPS,
  ...BINARY_OPS,
  Op.Where,
  Op.Detach,
  Op.CustomVjp,
]);
/** Ops whose result is only an index remapping of their first input. */
export const VIEW_OPS: ReadonlySet<Op> = new Set([Op.Reshape, Op.Permute, Op.Expand, Op.Shrink, Op.Pad]);
/** Ops that loop over a reduced dimension. */
export const REDUCE_OPS: ReadonlySet<Op> = new Set([Op.Sum, Op.ReduceMax, Op.ArgMax, Op.Dot]);

/** Shape and dtype of an op's result given its inputs. */
export interface ShapeRule<O extends Op> {
  (src: readonly { shape: readonly number[]; dtype: DType }[], arg: OpArgs[O]): {
    shape: number[];
    dtype: DType;
  };
}

const same: ShapeRule<Op> = (src) => ({ shape: [...src[0].shape], dtype: src[0].dtype });
const sameBinary = (name: string): ShapeRule<Op> => (src) => {
  const [a, b] = src;
  if (fmt(a.shape) !== fmt(b.shape) || a.dtype !== b.dtype) {
    throw new Error(`IR ${name}: operands ${fmt(a.shape)} ${a.dtype} and ${fmt(b.shape)} ${b.dtype} differ`);
  }
  return { shape: [...a.shape], dtype: a.dtype };
};
const compare = (name: string): ShapeRule<Op> => (src) => ({ ...sameBinary(name)(src, null), dtype: "bool" });
const reduce: ShapeRule<Op.Sum | Op.ReduceMax> = (src, arg) => ({
  shape: src[0].shape.map((d, i) => (arg.axes.includes(i) ? 1 : d)),
  dtype: src[0].dtype,
});

/** Shape/dtype rule of every op (the verifier re-derives each node's shape with these). */
export const SHAPE_RULES: { [O in Op]: ShapeRule<O> } = {
  [Op.Buffer]: () => {
    throw new Error("IR Buffer nodes carry their own shape");
  },
  [Op.Const]: () => {
    throw new Error("IR Const nodes carry their own shape");
  },
  [Op.Iota]: () => {
    throw new Error("IR Iota nodes carry their own shape");
  },
  [Op.Rand]: () => {
    throw new Error("IR Rand nodes carry their own shape");
  },
  [Op.Neg]: same,
  [Op.Recip]: same,
  [Op.Exp]: same,
  [Op.Log]: same,
  [Op.Sqrt]: same,
  [Op.Sin]: same,
  [Op.Cos]: same,
  [Op.Tanh]: same,
  [Op.Abs]: same,
  [Op.Cast]: (src, arg) => ({ shape: [...src[0].shape], dtype: arg.dtype }),
  [Op.Add]: sameBinary("Add"),
  [Op.Mul]: sameBinary("Mul"),
  [Op.Div]: sameBinary("Div"),
  [Op.Max]: sameBinary("Max"),
  [Op.Pow]: sameBinary("Pow"),
  [Op.CmpLt]: compare("CmpLt"),
  [Op.CmpEq]: compare("CmpEq"),
  [Op.Where]: (src) => {
    const [c, a, b] = src;
    if (c.dtype !== "bool" || fmt(c.shape) !== fmt(a.shape)) throw new Error("IR Where: bad condition");
    return sameBinary("Where")([a, b], null);
  },
  [Op.Sum]: reduce,
  [Op.ReduceMax]: reduce,
  [Op.ArgMax]: (src, arg) => ({ shape: src[0].shape.map((d, i) => (i === arg.axis ? 1 : d)), dtype: "i32" }),
  [Op.Dot]: (src) => {
    const [a, b] = src;
    const r = a.shape.length;
    if (
      r < 2 || b.shape.length !== r || a.shape[r - 1] !== b.shape[r - 2] ||
      fmt(a.shape.slice(0, -2)) !== fmt(b.shape.slice(0, -2)) || a.dtype !== b.dtype
    ) {
      throw new Error(`IR Dot: operands ${fmt(a.shape)} and ${fmt(b.shape)} do not match`);
    }
    return { shape: [...a.shape.slice(0, -1), b.shape[r - 1]], dtype: a.dtype };
  },
  [Op.Reshape]: (src, arg) => {
    const n = src[0].shape.reduce((x, y) => x * y, 1);
    if (arg.shape.reduce((x, y) => x * y, 1) !== n) throw new Error("IR Reshape: element count changes");
    return { shape: [...arg.shape], dtype: src[0].dtype };
  },
  [Op.Permute]: (src, arg) => ({ shape: arg.perm.map((p) => src[0].shape[p]), dtype: src[0].dtype }),
  [Op.Expand]: (src, arg) => {
    const s = src[0].shape;
    if (s.length !== arg.shape.length || s.some((d, i) => d !== 1 && d !== arg.shape[i])) {
      throw new Error(`IR Expand: cannot expand ${fmt(s)} to ${fmt(arg.shape)}`);
    }
    return { shape: [...arg.shape], dtype: src[0].dtype };
  },
  [Op.Shrink]: (src, arg) => {
    const s = src[0].shape;
    arg.len.forEach((n, i) => {
      const last = arg.start[i] + (n - 1) * arg.step[i];
      if (n > 0 && (arg.start[i] < 0 || arg.start[i] >= s[i] || last < 0 || last >= s[i])) {
        throw new Error(`IR Shrink: axis ${i} out of range for ${fmt(s)}`);
      }
    });
    return { shape: [...arg.len], dtype: src[0].dtype };
  },
  [Op.Pad]: (src, arg) => ({
    shape: src[0].shape.map((d, i) => d + arg.pads[i][0] + arg.pads[i][1]),
    dtype: src[0].dtype,
  }),
  [Op.Gather]: (src, arg) => {
    const [x, idx] = src;
    if (idx.dtype !== "i32" && idx.dtype !== "u32") throw new Error("IR Gather: index must be integer");
    return {
      shape: [...x.shape.slice(0, arg.axis), ...idx.shape, ...x.shape.slice(arg.axis + 1)],
      dtype: x.dtype,
    };
  },
  [Op.Detach]: same,
  [Op.CustomVjp]: same,
  [Op.Custom]: (_src, arg) => ({ shape: [...arg.shape], dtype: arg.dtype }),
};
