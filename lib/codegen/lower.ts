/**
 * Lowering: turns one scheduled node and the fused region below it into a {@link Kernel}. Each op has one
 * lowering rule (an exhaustive table keyed by {@link Op}) that maps the index at which its value is wanted to a
 * kernel-IR expression: views become index arithmetic, elementwise ops become ALU nodes, reductions become loops.
 *
 * @module
 */
import { GATHER_FILL } from "../dtype.ts";
import { argKey, type Node } from "../ir/node.ts";
import { Op } from "../ir/ops.ts";
import { stridesOf } from "../shape.ts";
import {
  type AluOp,
  dependsOn,
  KBuilder,
  type Kernel,
  type KernelRow,
  type KExpr,
  kNodes,
  type MatmulSpec,
  type MatmulTerm,
} from "./kexpr.ts";
import { rowLoopIterations } from "./verify.ts";
import { rowReduceLength } from "./schedule.ts";
import { LOOP_BUDGET } from "./split_loops.ts";
import { type MatmulTerms, matmulTerms, termFlops } from "./matmul_terms.ts";
import { LruCache } from "./lru.ts";

/** Matmuls with at least this many multiply-adds use the tiled template. */
export const MATMUL_TEMPLATE_MIN_FLOPS = 1 << 15;

interface Ctx {
  kb: KBuilder;
  root: Node;
  isInput: (n: Node) => boolean;
  input: (n: Node) => number;
  at: (n: Node, idx: readonly KExpr[]) => KExpr;
  /** The parameter slot carrying a Const node's value or a Rand node's seed. */
  param: (n: Node) => KExpr;
  /** The products computed by the matmul template (their sum is lowered as the accumulator), if any. */
  template: MatmulTerms | null;
  loops: number;
}

type Rule = (n: Node, idx: readonly KExpr[], c: Ctx) => KExpr;

const ALU_OF: Partial<Record<Op, AluOp>> = {
  [Op.Neg]: "neg",
  [Op.Recip]: "recip",
  [Op.Exp]: "exp",
  [Op.Log]: "log",
  [Op.Sqrt]: "sqrt",
  [Op.Sin]: "sin",
  [Op.Cos]: "cos",
  [Op.Tanh]: "tanh",
  [Op.Abs]: "abs",
  [Op.Cast]: "cast",
  [Op.Add]: "add",
  [Op.Mul]: "mul",
  [Op.Div]: "div",
  [Op.Max]: "max",
  [Op.Pow]: "pow",
  [Op.CmpLt]: "lt",
  [Op.CmpEq]: "eq",
  [Op.Where]: "where",
};

const elementwise: Rule = (n, idx, c) => c.kb.alu(ALU_OF[n.op]!, n.src.map((s) => c.at(s, idx)), n.dtype);

/** Flat row-major offset of `idx` in `shape`. */
function flatIndex(kb: KBuilder, idx: readonly KExpr[], shape: readonly number[]): KExpr {
  const st = stridesOf(shape);
  let out: KExpr = kb.const(0, "i32");
  idx.forEach((e, i) => {
    if (shape[i] !== 1) out = kb.add(out, kb.mul(e, st[i]));
  });
  return out;
}

/** Index along each axis of `shape` for flat offset `flat`. */
function unflatten(kb: KBuilder, flat: KExpr, shape: readonly number[]): KExpr[] {
  // An empty shape has no elements to index (its loop never runs): any index will do.
  if (shape.includes(0)) return shape.map(() => kb.const(0, "i32"));
  const st = stridesOf(shape);
  return shape.map((d, i) => (d === 1 ? kb.const(0, "i32") : kb.mod(kb.div(flat, st[i]), d)));
}

function reduceRule(op: "sum" | "max"): Rule {
  return (n, idx, c) => {
    const axes = (n.arg as { axes: number[] }).axes;
    const inShape = n.src[0].shape;
    const rshape = axes.map((a) => inShape[a]);
    const total = rshape.reduce((a, b) => a * b, 1);
    const loop = c.kb.var(`r${c.loops++}`, 0, Math.max(total - 1, 0));
    const ridx = unflatten(c.kb, loop, rshape);
    const inIdx = idx.map((e, i) => (axes.includes(i) ? ridx[axes.indexOf(i)] : e));
    return c.kb.reduce(op, loop, total, c.at(n.src[0], inIdx));
  };
}

/** Lowering rule of every op. */
export const LOWER_RULES: { [O in Op]: Rule } = {
  [Op.Buffer]: (n) => {
    throw new Error(`lower: buffer ${n} must be an input`);
  },
  // Constants and seeds are launch parameters, not literals: a new value compiles nothing.
  [Op.Const]: (n, _idx, c) => c.param(n),
  [Op.Iota]: (n, idx, c) => (n.dtype === "i32" ? idx[0] : c.kb.alu("cast", [idx[0]], n.dtype)),
  [Op.Rand]: (n, idx, c) => c.kb.rand(c.param(n), flatIndex(c.kb, idx, n.shape)),
  [Op.Neg]: elementwise,
  [Op.Recip]: elementwise,
  [Op.Exp]: elementwise,
  [Op.Log]: elementwise,
  [Op.Sqrt]: elementwise,
  [Op.Sin]: elementwise,
  [Op.Cos]: elementwise,
  [Op.Tanh]: elementwise,
  [Op.Abs]: elementwise,
  [Op.Cast]: elementwise,
  [Op.Add]: elementwise,
  [Op.Mul]: elementwise,
  [Op.Div]: elementwise,
  [Op.Max]: elementwise,
  [Op.Pow]: elementwise,
  [Op.CmpLt]: elementwise,
  [Op.CmpEq]: elementwise,
  [Op.Where]: elementwise,
  [Op.Sum]: reduceRule("sum"),
  [Op.ReduceMax]: reduceRule("max"),
  [Op.ArgMax]: (n, idx, c) => {
    const { axis } = n.argOf(Op.ArgMax);
    const len = n.src[0].shape[axis];
    const loop = c.kb.var(`r${c.loops++}`, 0, Math.max(len - 1, 0));
    return c.kb.reduce("argmax", loop, len, c.at(n.src[0], idx.map((e, i) => (i === axis ? loop : e))));
  },
  [Op.Dot]: (n, idx, c) => {
    const r = n.shape.length;
    const kdim = n.src[0].shape[r - 1];
    const loop = c.kb.var(`r${c.loops++}`, 0, Math.max(kdim - 1, 0));
    const batch = idx.slice(0, r - 2);
    const a = c.at(n.src[0], [...batch, idx[r - 2], loop]);
    const b = c.at(n.src[1], [...batch, loop, idx[r - 1]]);
    return c.kb.reduce("sum", loop, kdim, c.kb.alu("mul", [a, b], n.dtype));
  },
  [Op.Reshape]: (n, idx, c) => c.at(n.src[0], unflatten(c.kb, flatIndex(c.kb, idx, n.shape), n.src[0].shape)),
  [Op.Permute]: (n, idx, c) => {
    const perm = n.argOf(Op.Permute).perm;
    const inIdx = new Array<KExpr>(perm.length);
    perm.forEach((p, i) => (inIdx[p] = idx[i]));
    return c.at(n.src[0], inIdx);
  },
  [Op.Expand]: (n, idx, c) => {
    const s = n.src[0].shape;
    return c.at(n.src[0], idx.map((e, i) => (s[i] === 1 ? c.kb.const(0, "i32") : e)));
  },
  [Op.Shrink]: (n, idx, c) => {
    const { start, step } = n.argOf(Op.Shrink);
    return c.at(n.src[0], idx.map((e, i) => c.kb.add(c.kb.mul(e, step[i]), start[i])));
  },
  [Op.Pad]: (n, idx, c) => {
    const { pads, value } = n.argOf(Op.Pad);
    const s = n.src[0].shape;
    const kb = c.kb;
    let valid: KExpr = kb.const(1, "bool");
    const inIdx = idx.map((e, i) => {
      const j = kb.add(e, -pads[i][0]);
      if (j.lo >= 0 && j.hi < s[i]) return j;
      valid = kb.and(valid, kb.and(kb.lt(kb.const(-1, "i32"), j), kb.lt(j, s[i])));
      // The load is evaluated where the pad value is taken too: clamped, it stays in range, and its bounds let
      // the index arithmetic below simplify (a concatenation's flat views then load without division).
      return kb.alu("min", [kb.alu("max", [j, kb.const(0, "i32")], "i32"), kb.const(s[i] - 1, "i32")], "i32");
    });
    return kb.where(valid, c.at(n.src[0], inIdx), kb.const(value, n.dtype));
  },
  [Op.Gather]: (n, idx, c) => {
    const { axis } = n.argOf(Op.Gather);
    const [x, index] = n.src;
    const ir = index.shape.length;
    const kb = c.kb;
    let iv = c.at(index, idx.slice(axis, axis + ir));
    if (iv.dtype !== "i32") iv = kb.alu("cast", [iv], "i32");
    const size = x.shape[axis];
    // An index outside the axis gives the dtype's fill (NaN for floats), not a neighbouring element; the load
    // is evaluated there too, clamped into the axis.
    const inside = kb.and(kb.lt(kb.const(-1, "i32"), iv), kb.lt(iv, size));
    const clamped = kb.alu("min", [
      kb.alu("max", [iv, kb.const(0, "i32")], "i32"),
      kb.const(size - 1, "i32"),
    ], "i32");
    const value = c.at(x, [...idx.slice(0, axis), clamped, ...idx.slice(axis + ir)]);
    return kb.where(inside, value, kb.const(GATHER_FILL[n.dtype], n.dtype));
  },
  [Op.Detach]: (n, idx, c) => c.at(n.src[0], idx),
  [Op.CustomVjp]: (n, idx, c) => c.at(n.src[0], idx),
  [Op.Custom]: (n) => {
    throw new Error(`lower: ${n} is a hand-written kernel; it is run as such, never lowered`);
  },
};

/** Short kernel name from the ops in the root's region, e.g. `dot_add_relu`. */
function kernelName(root: Node, isInput: (n: Node) => boolean): string {
  const ops: string[] = [];
  const visit = (n: Node, depth: number) => {
    if (depth > 3 || ops.length > 4) return;
    ops.push(n.op.toLowerCase());
    n.src.forEach((s) => !isInput(s) && visit(s, depth + 1));
  };
  visit(root, 0);
  return `${ops.join("_")}_${root.shape.join("x") || "scalar"}`;
}

/**
 * The row length of `root`'s region when it holds reductions over trailing axes, all of one length (the
 * candidates for row mode); null otherwise.
 */
function rowLengthOf(root: Node, isInput: (n: Node) => boolean): number | null {
  let len: number | null = null;
  const seen = new Set<Node>();
  const stack = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (seen.has(n) || (n !== root && isInput(n))) continue;
    seen.add(n);
    const l = rowReduceLength(n);
    if (l !== null) {
      if (len !== null && l !== len) return null;
      len = l;
    }
    stack.push(...n.src);
  }
  return len;
}

/** Whether a node's value reaches its kernel as a launch parameter (Const values, Rand seeds). */
export function isParamNode(n: Node): boolean {
  return n.op === Op.Const || n.op === Op.Rand;
}

/** The launch-parameter value a node contributes: a Const's value or a Rand node's seed. */
export function paramValue(n: Node): number {
  return n.op === Op.Rand ? n.argOf(Op.Rand).seed : n.argOf(Op.Const).value;
}

/** Dtype of the parameter slot of a node: its own dtype, or u32 for a Rand node's seed. */
function paramDtype(n: Node) {
  return n.op === Op.Rand ? "u32" as const : n.dtype;
}

/** Options of {@link lower}. */
export interface LowerOptions {
  /** Use the tiled matmul template where it applies (default true). */
  matmulTemplate?: boolean;
  /** The parameter nodes in slot order (default: in order of first use). */
  params?: readonly Node[];
  /**
   * Most loop iterations one invocation may run (default {@link LOOP_BUDGET}, llvmpipe's cap): a row form over it is
   * not made.
   */
  loopBudget?: number;
}

/** A lowered kernel with the nodes bound to its inputs and the nodes whose values fill its parameter slots. */
export interface Lowered {
  /** The kernel. */
  kernel: Kernel;
  /** Node of each input binding. */
  inputs: Node[];
  /** Node of each parameter slot (see {@link paramValue}). */
  params: Node[];
}

/** Lowers `root` (whose region stops at nodes for which `isInput` is true) to a kernel and its input nodes. */
export function lower(root: Node, isInput: (n: Node) => boolean, opts: LowerOptions = {}): Lowered {
  const kb = new KBuilder();
  const inputs: Node[] = [];
  const inputIdx = new Map<Node, number>();
  const params: Node[] = [...(opts.params ?? [])];
  const paramIdx = new Map<Node, number>(params.map((n, i) => [n, i]));
  const memo = new Map<string, KExpr>();
  const ctx: Ctx = {
    kb,
    root,
    isInput: (n) => n !== root && (n.storage !== null || isInput(n)),
    input: (n) => {
      let i = inputIdx.get(n);
      if (i === undefined) {
        i = inputs.length;
        inputs.push(n);
        inputIdx.set(n, i);
      }
      return i;
    },
    at: (n, idx) => {
      const key = `${n.id}|${idx.map((e) => e.id).join(",")}`;
      let e = memo.get(key);
      if (e === undefined) {
        // An empty value has no element: an expression that reads it is never selected (a pad around it, a
        // concatenation with it), and the index of its load would be a negative constant, which WGSL rejects.
        e = n.size === 0
          ? kb.const(0, n.dtype)
          : ctx.isInput(n)
          ? loadOf(n, idx)
          : n === ctx.template?.top
          ? templateSum(ctx.template, idx)
          : (LOWER_RULES[n.op] as Rule)(n, idx, ctx);
        memo.set(key, e);
      }
      return e;
    },
    param: (n) => {
      let i = paramIdx.get(n);
      if (i === undefined) {
        i = params.length;
        params.push(n);
        paramIdx.set(n, i);
      }
      return kb.param(i, paramDtype(n));
    },
    template: null,
    loops: 0,
  };
  // The products' sum is the accumulator; other addends of the sum are added to it in the epilogue.
  const templateSum = (t: MatmulTerms, idx: readonly KExpr[]) =>
    t.extras.reduce((s: KExpr, e) => kb.add(s, ctx.at(e, idx)), kb.acc(t.top.dtype));
  const loadOf = (n: Node, idx: readonly KExpr[]) =>
    kb.load(ctx.input(n), flatIndex(kb, idx, n.shape), n.dtype);

  const total = root.size;
  const gid = kb.var("gid", 0, Math.max(total - 1, 0));
  const body = ctx.at(root, unflatten(kb, gid, root.shape));

  let matmul: MatmulSpec | null = null;
  const prods = opts.matmulTemplate === false ? null : matmulTerms(root, ctx.isInput);
  if (prods !== null && termFlops(prods) >= MATMUL_TEMPLATE_MIN_FLOPS) {
    const dot = prods.dots[0];
    const r = dot.shape.length;
    const batchShape = dot.shape.slice(0, r - 2);
    const batch = batchShape.reduce((a, b) => a * b, 1);
    const [m, n] = [dot.shape[r - 2], dot.shape[r - 1]];
    const vb = kb.var("b", 0, batch - 1);
    const vm = kb.var("m", 0, m - 1);
    const vn = kb.var("n", 0, n - 1);
    const bidx = unflatten(kb, vb, batchShape);
    const terms = prods.dots.map((d): MatmulTerm => {
      const k = d.src[0].shape[r - 1];
      const vk = kb.var("k", 0, k - 1);
      memo.clear();
      return { k, a: ctx.at(d.src[0], [...bidx, vm, vk]), b: ctx.at(d.src[1], [...bidx, vk, vn]) };
    });
    ctx.template = prods;
    memo.clear();
    // The root's element with the same flat index as the products' (b, m, n).
    const flat = kb.add(kb.mul(kb.add(kb.mul(vb, m), vm), n), vn);
    const epilogue = ctx.at(root, unflatten(kb, flat, root.shape));
    matmul = { batch, m, n, terms, epilogue };
  }
  // Row mode: a body that broadcasts reductions over whole rows computes them once per row (see KernelRow).
  let row: KernelRow | undefined;
  const len = matmul === null ? rowLengthOf(root, ctx.isInput) : null;
  if (len !== null && total % len === 0 && total > len) {
    const vrow = kb.var("row", 0, total / len - 1);
    const vj = kb.var("j", 0, len - 1);
    memo.clear();
    const rbody = ctx.at(root, unflatten(kb, kb.add(kb.mul(vrow, len), vj), root.shape));
    const dep = dependsOn(vj);
    const candidate: KernelRow = { length: len, body: rbody, row: vrow, j: vj };
    if (
      kNodes([rbody]).some((e) => e.k === "reduce" && !dep(e)) &&
      rowLoopIterations(candidate) <= (opts.loopBudget ?? LOOP_BUDGET)
    ) {
      row = candidate;
    }
  }
  const kernel: Kernel = {
    name: kernelName(root, ctx.isInput),
    inputs: inputs.map((n) => ({ dtype: n.dtype, size: n.size })),
    outShape: [...root.shape],
    outDtype: root.dtype,
    body,
    matmul,
    ...(row === undefined ? {} : { row }),
    params: params.map(paramDtype),
  };
  return { kernel, inputs, params };
}

/**
 * A structural key of `root`'s region: ops, arguments, shapes and dtypes of the fused nodes, with each input
 * replaced by its position of first appearance (plus shape and dtype) and each parameter node (Const, Rand) by its
 * parameter slot. Two regions with equal keys lower to the same kernel, whatever buffers their inputs hold and
 * whatever values their constants and seeds have. Returns the key, the inputs and the parameter nodes in key order.
 *
 * The key lists each fused node once, in the order of a depth-first walk, and refers to a node already listed by
 * its number (`#3`), so a shared subexpression costs its size once (spelling the region out as a tree would grow
 * exponentially with the depth of the sharing).
 */
export function regionKey(
  root: Node,
  isInput: (n: Node) => boolean,
): { key: string; inputs: Node[]; params: Node[] } {
  const inputs: Node[] = [];
  const slot = new Map<Node, number>();
  const params: Node[] = [];
  const defs: string[] = [];
  const local = new Map<Node, number>();
  const keyOf = (n: Node): string => {
    if (n !== root && (n.storage !== null || isInput(n))) {
      let i = slot.get(n);
      if (i === undefined) {
        i = inputs.length;
        inputs.push(n);
        slot.set(n, i);
      }
      return `$${i}:${n.shape.join(",")}:${n.dtype}`;
    }
    let j = local.get(n);
    if (j === undefined) {
      let def: string;
      if (isParamNode(n)) {
        def = `${n.op}%${params.length}[${n.shape.join(",")}]${n.dtype}`;
        params.push(n);
      } else {
        const srcs = n.src.map(keyOf).join(";");
        const arg = n.arg === null || n.op === Op.CustomVjp ? "" : argKey(n.arg);
        def = `${n.op}${arg}[${n.shape.join(",")}]${n.dtype}(${srcs})`;
      }
      j = defs.length;
      defs.push(def);
      local.set(n, j);
    }
    return `#${j}`;
  };
  keyOf(root);
  return { key: defs.join("|"), inputs, params };
}

/** Most kernels kept by {@link lowerCached} (least recently used ones are evicted). */
export const KERNEL_CACHE_SIZE = 2048;

const kernelCache = new LruCache<string, { kernel: Kernel; perm: number[] }>(KERNEL_CACHE_SIZE);

/**
 * {@link lower} with a cache keyed by {@link regionKey}: a training loop that builds the same graph every step
 * lowers each kernel once. The kernel's inputs are mapped from the cached order to this region's nodes.
 */
export function lowerCached(
  root: Node,
  isInput: (n: Node) => boolean,
  opts: { matmulTemplate?: boolean; loopBudget?: number } = {},
): Lowered {
  const { key, inputs, params } = regionKey(root, isInput);
  const full = `${opts.matmulTemplate === false ? "naive" : "auto"}|${opts.loopBudget ?? LOOP_BUDGET}|${key}`;
  const hit = kernelCache.get(full);
  if (hit !== undefined) return { kernel: hit.kernel, inputs: hit.perm.map((i) => inputs[i]), params };
  const res = lower(root, isInput, { ...opts, params });
  const pos = new Map(inputs.map((n, i) => [n, i]));
  const perm = res.inputs.map((n) => pos.get(n)!);
  if (perm.every((p) => p !== undefined) && res.params.length === params.length) {
    kernelCache.set(full, { kernel: res.kernel, perm });
  }
  return res;
}
