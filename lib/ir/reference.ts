/**
 * The float64 reference semantics of every primitive: a direct, unscheduled evaluation of the graph on the
 * host, one whole array per node. It shares no code with the scheduler or the renderers, so it is the oracle the
 * parity tests compare both backends against.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { GATHER_FILL, roundTo, toI32, toU32 } from "../dtype.ts";
import { stridesOf } from "../shape.ts";
import type { Node } from "./node.ts";
import { toposort } from "./node.ts";
import { Op } from "./ops.ts";
import { randUniform } from "./rng.ts";

/** Float64 values of a node, row-major. */
export type RefValue = Float64Array;

type RefRule = (node: Node, src: RefValue[]) => RefValue;

const map1 = (f: (x: number) => number): RefRule => (n, [a]) => {
  const o = new Float64Array(n.size);
  for (let i = 0; i < o.length; i++) o[i] = f(a[i]);
  return o;
};
const map2 = (f: (x: number, y: number) => number): RefRule => (n, [a, b]) => {
  const o = new Float64Array(n.size);
  for (let i = 0; i < o.length; i++) o[i] = f(a[i], b[i]);
  return o;
};

/** Integer-valued ops wrap like 32-bit hardware. */
function intWrap(d: DType, x: number): number {
  if (d === "i32") return x | 0;
  if (d === "u32") return x >>> 0;
  return x;
}

/**
 * `x ** y` as C's `pow` (and so PyTorch and NumPy) gives it: `Math.pow` except that 1 to any power and −1 to ±∞
 * are 1, where `Math.pow` gives NaN. A negative finite base needs an integer exponent (NaN otherwise).
 */
export function powRef(x: number, y: number): number {
  if (x === 1 || (x === -1 && Math.abs(y) === Infinity)) return 1;
  return Math.pow(x, y);
}

/** Maps an output multi-index (as flat index) to an input flat index for each view op. */
function viewMap(n: Node, f: (out: number[]) => number | null, srcVals: RefValue, fill = 0): RefValue {
  const o = new Float64Array(n.size);
  const shape = n.shape;
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < o.length; i++) {
    const j = f(idx);
    o[i] = j === null ? fill : srcVals[j];
    for (let a = shape.length - 1; a >= 0; a--) {
      if (++idx[a] < shape[a]) break;
      idx[a] = 0;
    }
  }
  return o;
}

function flat(idx: readonly number[], strides: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < idx.length; i++) s += idx[i] * strides[i];
  return s;
}

function reduceRule(init: number, f: (acc: number, x: number) => number): RefRule {
  return (n, [a]) => {
    const axes = (n.arg as { axes: number[] }).axes;
    const inShape = n.src[0].shape;
    const outStrides = stridesOf(n.shape);
    const o = new Float64Array(n.size).fill(init);
    const idx = new Array<number>(inShape.length).fill(0);
    for (let i = 0; i < a.length; i++) {
      let j = 0;
      for (let d = 0; d < idx.length; d++) if (!axes.includes(d)) j += idx[d] * outStrides[d];
      o[j] = f(o[j], a[i]);
      for (let d = inShape.length - 1; d >= 0; d--) {
        if (++idx[d] < inShape[d]) break;
        idx[d] = 0;
      }
    }
    return o;
  };
}

/** Float64 semantics of every op. */
export const REFERENCE_RULES: { [O in Op]: RefRule } = {
  [Op.Buffer]: () => {
    throw new Error("reference: Buffer values come from the caller");
  },
  [Op.Const]: (n) => new Float64Array(n.size).fill(roundTo(n.dtype, n.argOf(Op.Const).value)),
  [Op.Iota]: (n) => Float64Array.from({ length: n.size }, (_, i) => i),
  [Op.Rand]: (n) => {
    const { seed } = n.argOf(Op.Rand);
    return Float64Array.from({ length: n.size }, (_, i) => randUniform(seed, i));
  },
  [Op.Neg]: (n, s) => map1((x) => intWrap(n.dtype, -x))(n, s),
  [Op.Recip]: map1((x) => 1 / x),
  [Op.Exp]: map1(Math.exp),
  [Op.Log]: map1(Math.log),
  [Op.Sqrt]: map1(Math.sqrt),
  [Op.Sin]: map1(Math.sin),
  [Op.Cos]: map1(Math.cos),
  [Op.Tanh]: map1(Math.tanh),
  [Op.Abs]: (n, s) => map1((x) => intWrap(n.dtype, Math.abs(x)))(n, s),
  [Op.Cast]: (n, s) => {
    const to = n.argOf(Op.Cast).dtype;
    const from = n.src[0].dtype;
    return map1((x) => {
      if (to === "bool") return x !== 0 ? 1 : 0;
      if (to === "i32") return from === "u32" ? x | 0 : toI32(x);
      if (to === "u32") return from === "i32" ? x >>> 0 : toU32(x);
      return roundTo(to, x);
    })(n, s);
  },
  [Op.Add]: (n, s) => map2((x, y) => intWrap(n.dtype, x + y))(n, s),
  [Op.Mul]: (n, s) =>
    map2((x, y) => n.dtype === "i32" || n.dtype === "u32" ? intWrap(n.dtype, Math.imul(x, y)) : x * y)(n, s),
  [Op.Div]: (n, s) =>
    map2((x, y) => {
      if (n.dtype === "i32" || n.dtype === "u32") return y === 0 ? x : intWrap(n.dtype, Math.trunc(x / y));
      return x / y;
    })(n, s),
  [Op.Max]: map2((x, y) => Math.max(x, y)),
  [Op.Pow]: map2(powRef),
  [Op.CmpLt]: map2((x, y) => (x < y ? 1 : 0)),
  [Op.CmpEq]: map2((x, y) => (x === y ? 1 : 0)),
  [Op.Where]: (n, [c, a, b]) => {
    const o = new Float64Array(n.size);
    for (let i = 0; i < o.length; i++) o[i] = c[i] ? a[i] : b[i];
    return o;
  },
  [Op.Sum]: reduceRule(0, (acc, x) => acc + x),
  [Op.ReduceMax]: reduceRule(-Infinity, (acc, x) => Math.max(acc, x)),
  [Op.ArgMax]: (n, [a]) => {
    const { axis } = n.argOf(Op.ArgMax);
    const s = n.src[0].shape;
    const len = s[axis];
    const inner = s.slice(axis + 1).reduce((x, y) => x * y, 1);
    const o = new Float64Array(n.size);
    for (let i = 0; i < o.length; i++) {
      const outer = Math.floor(i / inner);
      const base = outer * len * inner + (i % inner);
      // The first maximum; a NaN wins over any number and keeps its place (PyTorch's and NumPy's argmax).
      let bi = 0;
      for (let j = 1; j < len; j++) {
        const v = a[base + j * inner];
        const best = a[base + bi * inner];
        if (v > best || (Number.isNaN(v) && !Number.isNaN(best))) bi = j;
      }
      o[i] = bi;
    }
    return o;
  },
  [Op.Dot]: (n, [a, b]) => {
    const r = n.shape.length;
    const [m, k, nn] = [n.src[0].shape[r - 2], n.src[0].shape[r - 1], n.shape[r - 1]];
    const batch = n.size / (m * nn);
    const o = new Float64Array(n.size);
    for (let bi = 0; bi < batch; bi++) {
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < nn; j++) {
          let acc = 0;
          for (let p = 0; p < k; p++) acc += a[bi * m * k + i * k + p] * b[bi * k * nn + p * nn + j];
          o[bi * m * nn + i * nn + j] = acc;
        }
      }
    }
    return o;
  },
  [Op.Reshape]: (_n, [a]) => a,
  [Op.Permute]: (n, [a]) => {
    const { perm } = n.argOf(Op.Permute);
    const st = stridesOf(n.src[0].shape);
    return viewMap(n, (idx) => idx.reduce((s, v, i) => s + v * st[perm[i]], 0), a);
  },
  [Op.Expand]: (n, [a]) => {
    const inShape = n.src[0].shape;
    const st = stridesOf(inShape).map((s, i) => (inShape[i] === 1 ? 0 : s));
    return viewMap(n, (idx) => flat(idx, st), a);
  },
  [Op.Shrink]: (n, [a]) => {
    const { start, step } = n.argOf(Op.Shrink);
    const st = stridesOf(n.src[0].shape);
    return viewMap(n, (idx) => idx.reduce((s, v, i) => s + (start[i] + v * step[i]) * st[i], 0), a);
  },
  [Op.Pad]: (n, [a]) => {
    const { pads, value } = n.argOf(Op.Pad);
    const inShape = n.src[0].shape;
    const st = stridesOf(inShape);
    return viewMap(
      n,
      (idx) => {
        let s = 0;
        for (let i = 0; i < idx.length; i++) {
          const j = idx[i] - pads[i][0];
          if (j < 0 || j >= inShape[i]) return null;
          s += j * st[i];
        }
        return s;
      },
      a,
      roundTo(n.dtype, value),
    );
  },
  [Op.Gather]: (n, [x, index]) => {
    const { axis } = n.argOf(Op.Gather);
    const xs = n.src[0].shape;
    const xst = stridesOf(xs);
    const ist = stridesOf(n.src[1].shape);
    const ir = n.src[1].shape.length;
    return viewMap(
      n,
      (idx) => {
        const iflat = flat(idx.slice(axis, axis + ir), ist);
        const j = index[iflat];
        if (!(j >= 0 && j < xs[axis])) return null;
        let s = 0;
        for (let d = 0; d < axis; d++) s += idx[d] * xst[d];
        s += j * xst[axis];
        for (let d = axis + 1; d < xs.length; d++) s += idx[d - 1 + ir] * xst[d];
        return s;
      },
      x,
      GATHER_FILL[n.dtype],
    );
  },
  [Op.Detach]: (_n, [a]) => a,
  [Op.CustomVjp]: (_n, [a]) => a,
  [Op.Custom]: (n, src) => {
    const out = new Float64Array(n.size);
    n.argOf(Op.Custom).host([out, ...src]);
    return out;
  },
};

/**
 * Evaluates `root` in float64. `leaf` supplies the values of Buffer nodes. Results are rounded to each node's
 * dtype only where the dtype is integral or boolean (float intermediates stay float64).
 */
export function evaluateReference(root: Node, leaf: (n: Node) => RefValue): RefValue {
  const values = new Map<Node, RefValue>();
  for (const n of toposort([root])) {
    if (n.storage !== null || n.op === "Buffer") {
      values.set(n, leaf(n));
      continue;
    }
    const v = (REFERENCE_RULES[n.op] as RefRule)(n, n.src.map((s) => values.get(s)!));
    values.set(n, v);
  }
  return values.get(root)!;
}
