/**
 * The kernel IR: what one compute kernel computes for one output element, as a hash-consed expression DAG.
 * Both backends consume it (the WGSL renderer for WebGPU, the JS renderer for the float64 CPU backend), and
 * {@link verifyKernel} checks it between lowering and rendering.
 *
 * Integer index arithmetic is built through {@link KBuilder.add}, {@link KBuilder.mul}, {@link KBuilder.div}
 * and {@link KBuilder.mod}, which keep value bounds and simplify affine forms (so `8*(g/8) + g%8` becomes `g`
 * and a contiguous load after a reshape costs no division).
 *
 * @module
 */
import type { DType } from "../dtype.ts";

/** Arithmetic and logic operations of the kernel IR. Integer `div`/`mod` truncate toward zero. */
export type AluOp =
  | "neg"
  | "recip"
  | "exp"
  | "log"
  | "sqrt"
  | "sin"
  | "cos"
  | "tanh"
  | "abs"
  | "cast"
  | "add"
  | "mul"
  | "div"
  | "mod"
  | "max"
  | "min"
  | "pow"
  | "lt"
  | "eq"
  | "and"
  | "where";

/**
 * The end of a renderer's exhaustive `switch` over {@link AluOp}: every op handled leaves `op` of type `never`, so a
 * renderer that misses an op (one added to `AluOp` and not to it) does not compile.
 *
 * @param op The op no case handled (`never` when the switch is exhaustive).
 * @param renderer The renderer's name, for the error.
 */
export function unhandledAluOp(op: never, renderer: string): never {
  throw new Error(`${renderer}: no rule for ALU op ${String(op)}`);
}

/** Fields every kernel-IR node has. */
export interface KBase {
  /** Unique within its builder; also a topological order. */
  readonly id: number;
  /** Value type. */
  readonly dtype: DType;
  /** Lower bound of the value (integers only; -Infinity when unknown). */
  readonly lo: number;
  /** Upper bound of the value (integers only; +Infinity when unknown). */
  readonly hi: number;
}
/** A literal. */
export interface KConst extends KBase {
  /** Node kind. */
  readonly k: "const";
  /** The literal value. */
  readonly value: number;
}
/** An i32 variable: `gid` (flat output index), an output axis `i<n>`, a loop counter, or a template index. */
export interface KVar extends KBase {
  /** Node kind. */
  readonly k: "var";
  /** Variable name in generated code. */
  readonly name: string;
}
/** A read of input binding `buf` at flat element `index`. */
export interface KLoad extends KBase {
  /** Node kind. */
  readonly k: "load";
  /** Input binding index. */
  readonly buf: number;
  /** Flat element index. */
  readonly index: KExpr;
}
/** An arithmetic/logic op. `cast` converts `args[0]` to this node's dtype. */
export interface KAlu extends KBase {
  /** Node kind. */
  readonly k: "alu";
  /** The operation. */
  readonly op: AluOp;
  /** Operands. */
  readonly args: readonly KExpr[];
}
/**
 * A scalar that arrives with each launch instead of being written into the kernel's source (a constant of the
 * graph, a generator seed): slot `slot` of the launch's parameter values. Kernels that differ only in such values
 * share one source and one compiled pipeline.
 */
export interface KParam extends KBase {
  /** Node kind. */
  readonly k: "param";
  /** Index into the launch's parameter values (and {@link Kernel.params}). */
  readonly slot: number;
}
/** The counter-based uniform generator at element `index`. */
export interface KRand extends KBase {
  /** Node kind. */
  readonly k: "rand";
  /** Generator seed (a u32 expression, usually a {@link KParam}). */
  readonly seed: KExpr;
  /** Flat element index. */
  readonly index: KExpr;
}
/** A loop `for var in 0..size` accumulating `body` with `op`. */
export interface KReduce extends KBase {
  /** Node kind. */
  readonly k: "reduce";
  /** Accumulation (`argmax` yields the i32 loop index of the first maximum of `body`). */
  readonly op: "sum" | "max" | "argmax";
  /** Loop counter. */
  readonly loop: KVar;
  /** Trip count. */
  readonly size: number;
  /** Value accumulated each iteration. */
  readonly body: KExpr;
}
/** The accumulator of the matmul template, inside its epilogue. */
export interface KAcc extends KBase {
  /** Node kind. */
  readonly k: "acc";
}
/** Any kernel-IR expression. */
export type KExpr = KConst | KVar | KParam | KLoad | KAlu | KRand | KReduce | KAcc;

/**
 * Decomposes an i32 index expression into `Σ coef·term + c` (terms are the sub-expressions that are neither sums
 * nor products with a constant; the builder puts constants on the right of a product).
 */
export function linearForm(e: KExpr): { terms: Map<KExpr, number>; c: number } {
  if (e.k === "const") return { terms: new Map(), c: e.value };
  if (e.k === "alu" && e.op === "add") {
    const a = linearForm(e.args[0]);
    const b = linearForm(e.args[1]);
    for (const [t, k] of b.terms) a.terms.set(t, (a.terms.get(t) ?? 0) + k);
    return { terms: a.terms, c: a.c + b.c };
  }
  if (e.k === "alu" && e.op === "mul" && e.args[1].k === "const") {
    const a = linearForm(e.args[0]);
    const k = e.args[1].value;
    for (const [t, v] of a.terms) a.terms.set(t, v * k);
    return { terms: a.terms, c: a.c * k };
  }
  return { terms: new Map([[e, 1]]), c: 0 };
}

/** One input binding of a kernel. */
export interface KInput {
  /** Element type. */
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
}

/** One product of a matmul spec: `Σ_k A(b, m, k) · B(b, k, n)`. */
export interface MatmulTerm {
  /** Contracted dimension. */
  readonly k: number;
  /** Value of A at (b, m, k) in terms of the variables named `b`, `m`, `k`. */
  readonly a: KExpr;
  /** Value of B at (b, k, n) in terms of `b`, `k`, `n`. */
  readonly b: KExpr;
}

/**
 * The matmul template's pieces: one or more products of the same `[batch] m x n` shape, each with its loads as
 * functions of the `b`, `m`, `n`, `k` variables, accumulated into one sum, plus an epilogue.
 */
export interface MatmulSpec {
  /** Number of matrices in the batch. */
  readonly batch: number;
  /** Rows of the output. */
  readonly m: number;
  /** Columns of the output. */
  readonly n: number;
  /** The products, accumulated in this order into one accumulator (a sum of matmuls is one kernel). */
  readonly terms: readonly MatmulTerm[];
  /** The output element in terms of the output axis variables, with {@link KAcc} standing for the sum. */
  readonly epilogue: KExpr;
}

/**
 * The row form of a kernel: one invocation computes `length` consecutive outputs (a row), with `body` the output
 * element at flat index `row·length + j` in terms of the variables `row` and `j`. Everything that does not depend on
 * `j` (the row's reductions, their statistics) is computed once per row, before the loop over `j`.
 */
export interface KernelRow {
  /** Outputs per invocation. */
  readonly length: number;
  /** The output element in terms of `row` and `j`. */
  readonly body: KExpr;
  /** The row variable. */
  readonly row: KVar;
  /** The variable running over the row. */
  readonly j: KVar;
}

/** Whether `e` depends on variable `v` (memoised by the returned function). */
export function dependsOn(v: KVar): (e: KExpr) => boolean {
  const memo = new Map<number, boolean>();
  const dep = (e: KExpr): boolean => {
    let r = memo.get(e.id);
    if (r !== undefined) return r;
    switch (e.k) {
      case "var":
        r = e === v;
        break;
      case "load":
        r = dep(e.index);
        break;
      case "rand":
        r = dep(e.index) || dep(e.seed);
        break;
      case "alu":
        r = e.args.some(dep);
        break;
      case "reduce":
        r = dep(e.body);
        break;
      default:
        r = false;
    }
    memo.set(e.id, r);
    return r;
  };
  return dep;
}

/** Loop iterations of one invocation of the template: the contracted lengths of all terms. */
export function matmulDepth(mm: MatmulSpec): number {
  return mm.terms.reduce((a, t) => a + t.k, 0);
}

/** A complete kernel: every output element is `body` evaluated at its index (or the matmul template). */
export interface Kernel {
  /** Short descriptive name, used in errors and DEBUG output. */
  readonly name: string;
  /** Input bindings (binding i+1 in WGSL). */
  readonly inputs: readonly KInput[];
  /** Output shape. */
  readonly outShape: readonly number[];
  /** Output dtype. */
  readonly outDtype: DType;
  /** The generic form: the output element in terms of the axis variables `i0..i{r-1}` (and `gid`). */
  readonly body: KExpr | null;
  /** The matmul-template form. */
  readonly matmul: MatmulSpec | null;
  /** The row form, when the body broadcasts reductions of whole rows (see {@link KernelRow}); GPUs use it. */
  readonly row?: KernelRow;
  /**
   * Dtypes of the kernel's parameter slots ({@link KParam}); each launch supplies one value per slot. Absent or
   * empty: the kernel takes none.
   */
  readonly params?: readonly DType[];
}

const I32_MIN = -2147483648;
const I32_MAX = 2147483647;

type Sig = { base: KExpr; d: number; m: number };

/** Builds hash-consed kernel-IR nodes for one kernel. */
export class KBuilder {
  #table = new Map<string, KExpr>();
  #next = 0;

  #make<T extends KExpr>(key: string, build: (id: number) => T): T {
    const hit = this.#table.get(key);
    if (hit !== undefined) return hit as T;
    const node = build(this.#next++);
    this.#table.set(key, node);
    return node;
  }

  /** A literal of the given dtype. */
  const(value: number, dtype: DType): KConst {
    const v = dtype === "bool" ? (value ? 1 : 0) : value;
    return this.#make(`c|${dtype}|${Object.is(v, -0) ? "-0" : v}`, (id) => ({
      k: "const",
      id,
      dtype,
      value: v,
      lo: v,
      hi: v,
    }));
  }

  /** An i32 variable with value bounds `[lo, hi]`. */
  var(name: string, lo: number, hi: number): KVar {
    // Keyed by range too: a sum of matmuls has one `k` per product, each with its own length.
    return this.#make(`v|${name}|${lo}|${hi}`, (id) => ({ k: "var", id, dtype: "i32", name, lo, hi }));
  }

  /** Parameter slot `slot` of dtype `dtype` (a value supplied with each launch). */
  param(slot: number, dtype: DType): KParam {
    const [lo, hi] = dtype === "bool" ? [0, 1] : dtype === "u32" ? [0, 4294967295] : [-Infinity, Infinity];
    return this.#make(`p|${slot}|${dtype}`, (id) => ({ k: "param", id, dtype, slot, lo, hi }));
  }

  /** A load of input `buf` at `index`. */
  load(buf: number, index: KExpr, dtype: DType): KLoad {
    const lo = dtype === "bool" ? 0 : dtype === "u32" ? 0 : -Infinity;
    const hi = dtype === "bool" ? 1 : Infinity;
    return this.#make(
      `l|${buf}|${index.id}|${dtype}`,
      (id) => ({ k: "load", id, dtype, buf, index, lo, hi }),
    );
  }

  /** The uniform generator with seed `seed` (a u32 expression) at `index`. */
  rand(seed: KExpr, index: KExpr): KRand {
    return this.#make(`r|${seed.id}|${index.id}`, (id) => ({
      k: "rand",
      id,
      dtype: "f32",
      seed,
      index,
      lo: -Infinity,
      hi: Infinity,
    }));
  }

  /** A reduction loop over `loop` (a variable made with {@link var}). */
  reduce(op: "sum" | "max" | "argmax", loop: KVar, size: number, body: KExpr): KReduce {
    return this.#make(`R|${op}|${loop.id}|${size}|${body.id}`, (id) => ({
      k: "reduce",
      id,
      dtype: op === "argmax" ? "i32" : body.dtype,
      op,
      loop,
      size,
      body,
      lo: -Infinity,
      hi: Infinity,
    }));
  }

  /** The matmul accumulator placeholder. */
  acc(dtype: DType): KAcc {
    return this.#make(`acc|${dtype}`, (id) => ({ k: "acc", id, dtype, lo: -Infinity, hi: Infinity }));
  }

  /** A raw ALU node (no simplification beyond constant folding of integer bounds). */
  alu(op: AluOp, args: readonly KExpr[], dtype: DType): KExpr {
    let lo = -Infinity;
    let hi = Infinity;
    if (dtype === "bool") [lo, hi] = [0, 1];
    if (dtype === "i32") {
      const [a, b] = args;
      if (op === "add") [lo, hi] = [a.lo + b.lo, a.hi + b.hi];
      if (op === "mul" && b.k === "const") {
        [lo, hi] = b.value >= 0 ? [a.lo * b.value, a.hi * b.value] : [a.hi * b.value, a.lo * b.value];
      }
      if (op === "div" && b.k === "const" && b.value > 0 && a.lo >= 0) {
        [lo, hi] = [Math.floor(a.lo / b.value), Math.floor(a.hi / b.value)];
      }
      if (op === "mod" && b.k === "const" && b.value > 0 && a.lo >= 0) {
        [lo, hi] = [0, Math.min(a.hi, b.value - 1)];
      }
      if (op === "min") [lo, hi] = [Math.min(a.lo, b.lo), Math.min(a.hi, b.hi)];
      if (op === "max") [lo, hi] = [Math.max(a.lo, b.lo), Math.max(a.hi, b.hi)];
      if (op === "cast") [lo, hi] = [Math.max(a.lo, I32_MIN), Math.min(a.hi, I32_MAX)];
      if (op === "where") [lo, hi] = [Math.min(args[1].lo, args[2].lo), Math.max(args[1].hi, args[2].hi)];
      if (!(lo >= I32_MIN && hi <= I32_MAX)) [lo, hi] = [I32_MIN, I32_MAX];
    }
    if (lo === hi && Number.isFinite(lo) && (dtype === "i32" || dtype === "bool")) {
      return this.const(lo, dtype);
    }
    return this.#make(`a|${op}|${dtype}|${args.map((x) => x.id).join(",")}`, (id) => ({
      k: "alu",
      id,
      dtype,
      op,
      args,
      lo,
      hi,
    }));
  }

  // ----- integer index arithmetic with affine simplification -----

  /** `term` as (base / d) % m, with m = Infinity when there is no modulus. */
  #sig(t: KExpr): Sig {
    if (t.k === "alu" && t.op === "mod" && t.args[1].k === "const") {
      const inner = t.args[0];
      if (inner.k === "alu" && inner.op === "div" && inner.args[1].k === "const") {
        return { base: inner.args[0], d: inner.args[1].value, m: t.args[1].value };
      }
      return { base: inner, d: 1, m: t.args[1].value };
    }
    if (t.k === "alu" && t.op === "div" && t.args[1].k === "const") {
      return { base: t.args[0], d: t.args[1].value, m: Infinity };
    }
    return { base: t, d: 1, m: Infinity };
  }

  /** Rebuilds `Σ coef·term + c`, first merging `k·M·(x/(D·M)) + k·((x/D)%M)` into `k·(x/D)`. */
  #fromLinear(terms: Map<KExpr, number>, c: number): KExpr {
    let changed = true;
    while (changed) {
      changed = false;
      const list = [...terms].filter(([, k]) => k !== 0);
      outer: for (const [t2, c2] of list) {
        const s2 = this.#sig(t2);
        if (s2.m === Infinity || s2.base.lo < 0) continue;
        for (const [t1, c1] of list) {
          const s1 = this.#sig(t1);
          if (s1.m === Infinity && s1.base === s2.base && s1.d === s2.d * s2.m && c1 === c2 * s2.m) {
            terms.delete(t1);
            terms.delete(t2);
            const merged = s2.d === 1 ? s2.base : this.div(s2.base, s2.d);
            terms.set(merged, (terms.get(merged) ?? 0) + c2);
            changed = true;
            break outer;
          }
        }
      }
    }
    let out: KExpr | null = null;
    const sorted = [...terms].filter(([, k]) => k !== 0).sort((x, y) => x[0].id - y[0].id);
    for (const [t, k] of sorted) {
      const term = k === 1 ? t : this.alu("mul", [t, this.const(k, "i32")], "i32");
      out = out === null ? term : this.alu("add", [out, term], "i32");
    }
    if (out === null) return this.const(c, "i32");
    return c === 0 ? out : this.alu("add", [out, this.const(c, "i32")], "i32");
  }

  /** `a + b` on i32 indices (or `a + k` for a number). */
  add(a: KExpr, b: KExpr | number): KExpr {
    const bb = typeof b === "number" ? this.const(b, "i32") : b;
    const la = linearForm(a);
    const lb = linearForm(bb);
    for (const [t, k] of lb.terms) la.terms.set(t, (la.terms.get(t) ?? 0) + k);
    return this.#fromLinear(la.terms, la.c + lb.c);
  }

  /** `a * k` on i32 indices. */
  mul(a: KExpr, k: number): KExpr {
    if (k === 0) return this.const(0, "i32");
    const la = linearForm(a);
    for (const [t, v] of la.terms) la.terms.set(t, v * k);
    return this.#fromLinear(la.terms, la.c * k);
  }

  /** `a / d` (floor) for a non-negative index and positive constant `d`. */
  div(a: KExpr, d: number): KExpr {
    if (d === 1) return a;
    if (a.lo >= 0 && a.hi < d) return this.const(0, "i32");
    if (a.lo >= 0) {
      if (a.k === "alu" && a.op === "div" && a.args[1].k === "const") {
        return this.div(a.args[0], a.args[1].value * d);
      }
      const { terms, c } = linearForm(a);
      const q = new Map<KExpr, number>();
      const r = new Map<KExpr, number>();
      let rlo = ((c % d) + d) % d;
      let rhi = rlo;
      let ok = true;
      for (const [t, k] of terms) {
        if (t.lo < 0 || k < 0) ok = false;
        if (k % d === 0) q.set(t, k / d);
        else {
          r.set(t, k);
          rlo += t.lo * k;
          rhi += t.hi * k;
        }
      }
      if (ok && rlo >= 0 && rhi < d) return this.#fromLinear(q, Math.floor(c / d));
      // (d·Q + R) / d = Q + R / d when 0 <= R: `(m + 64·k) / 8` is `8·k + m / 8`, whatever m's range.
      if (ok && (q.size > 0 || c >= d)) {
        const rest = this.div(this.#fromLinear(r, ((c % d) + d) % d), d);
        return this.add(this.#fromLinear(q, Math.floor(c / d)), rest);
      }
      const split = ok ? this.#splitByFactor(terms, c, d) : null;
      // (g·Q + R) / d = Q / (d/g) when g divides d and 0 <= R < g.
      if (split !== null) return this.div(this.#fromLinear(split.q, split.cq), d / split.g);
    }
    return this.alu("div", [a, this.const(d, "i32")], "i32");
  }

  /**
   * Writes `Σ k·t + c` (every term non-negative with a positive coefficient) as `g·Q + R` with `g` a divisor of `d`
   * greater than 1, `Q` the terms whose coefficients `g` divides (divided by `g`) and `0 <= R < g` the rest; null
   * when no such `g` exists. Index arithmetic after reshapes has this form: `(128·m + k) / 8192` with `k < 128`
   * is `m / 64`.
   */
  #splitByFactor(
    terms: Map<KExpr, number>,
    c: number,
    d: number,
  ): { g: number; q: Map<KExpr, number>; cq: number; r: Map<KExpr, number>; cr: number } | null {
    const gcd = (x: number, y: number): number => (y === 0 ? x : gcd(y, x % y));
    const candidates = new Set([...terms.values()].map((k) => gcd(d, k)).filter((g) => g > 1 && g < d));
    for (const g of [...candidates].sort((x, y) => y - x)) {
      const q = new Map<KExpr, number>();
      const r = new Map<KExpr, number>();
      const cr = ((c % g) + g) % g;
      let lo = cr;
      let hi = cr;
      for (const [t, k] of terms) {
        if (k % g === 0) q.set(t, k / g);
        else {
          r.set(t, k);
          lo += t.lo * k;
          hi += t.hi * k;
        }
      }
      if (lo >= 0 && hi < g) return { g, q, cq: (c - cr) / g, r, cr };
    }
    return null;
  }

  /** `a % d` for a non-negative index and positive constant `d`. */
  mod(a: KExpr, d: number): KExpr {
    if (d === 1) return this.const(0, "i32");
    if (a.lo >= 0 && a.hi < d) return a;
    if (a.lo >= 0) {
      const { terms, c } = linearForm(a);
      const split = [...terms].every(([t, k]) => t.lo >= 0 && k > 0)
        ? this.#splitByFactor(terms, c, d)
        : null;
      if (split !== null && [...split.q.keys()].every((t) => (terms.get(t)! % d) !== 0)) {
        // (g·Q + R) % d = g·(Q % (d/g)) + R when g divides d and 0 <= R < g.
        const inner = this.mod(this.#fromLinear(split.q, split.cq), d / split.g);
        return this.add(this.mul(inner, split.g), this.#fromLinear(split.r, split.cr));
      }
      if ([...terms].every(([t, k]) => t.lo >= 0 && k > 0)) {
        const r = new Map([...terms].filter(([, k]) => k % d !== 0));
        const rest = this.#fromLinear(r, ((c % d) + d) % d);
        if (rest.lo >= 0 && rest.hi < d) return rest;
        if (rest.lo >= 0) return this.alu("mod", [rest, this.const(d, "i32")], "i32");
      }
    }
    return this.alu("mod", [a, this.const(d, "i32")], "i32");
  }

  /**
   * `a < b` on integers, folded when the bounds decide it. A quotient compared with a constant becomes a comparison
   * of its dividend, `x / d + c < k` as `x < (k - c)·d` and `k < x / d + c` as `(k - c + 1)·d - 1 < x` (x >= 0,
   * d > 0): the row test of a concatenation along the first axis, `gid / n < 1`, costs no division.
   */
  lt(a: KExpr, b: KExpr | number): KExpr {
    const bb = typeof b === "number" ? this.const(b, "i32") : b;
    if (a.hi < bb.lo) return this.const(1, "bool");
    if (a.lo >= bb.hi) return this.const(0, "bool");
    const qa = bb.k === "const" ? this.#quotientPlus(a) : null;
    if (qa !== null && bb.k === "const") return this.lt(qa.x, (bb.value - qa.c) * qa.d);
    const qb = a.k === "const" ? this.#quotientPlus(bb) : null;
    if (qb !== null && a.k === "const") {
      return this.lt(this.const((a.value - qb.c + 1) * qb.d - 1, "i32"), qb.x);
    }
    return this.alu("lt", [a, bb], "bool");
  }

  /** `e` as `x / d + c` with `x >= 0` and a constant `d > 0`; null when it has another form. */
  #quotientPlus(e: KExpr): { x: KExpr; d: number; c: number } | null {
    if (e.dtype !== "i32") return null;
    const { terms, c } = linearForm(e);
    if (terms.size !== 1) return null;
    const [[t, k]] = terms;
    if (k !== 1 || t.k !== "alu" || t.op !== "div" || t.args[1].k !== "const") return null;
    const [x, d] = [t.args[0], t.args[1].value];
    return d > 0 && x.lo >= 0 ? { x, d, c } : null;
  }

  /** Logical and, folded when either side is a constant. */
  and(a: KExpr, b: KExpr): KExpr {
    if (a.k === "const") return a.value ? b : a;
    if (b.k === "const") return b.value ? a : b;
    return this.alu("and", [a, b], "bool");
  }

  /** `cond ? a : b`, folded when `cond` is a constant. */
  where(cond: KExpr, a: KExpr, b: KExpr): KExpr {
    if (cond.k === "const") return cond.value ? a : b;
    if (a === b) return a;
    return this.alu("where", [cond, a, b], a.dtype);
  }
}

/** Collects every node reachable from `roots` in id (topological) order. */
export function kNodes(roots: readonly KExpr[]): KExpr[] {
  const seen = new Map<number, KExpr>();
  const visit = (e: KExpr) => {
    if (seen.has(e.id)) return;
    seen.set(e.id, e);
    if (e.k === "load" || e.k === "rand") visit(e.index);
    if (e.k === "rand") visit(e.seed);
    if (e.k === "alu") e.args.forEach(visit);
    if (e.k === "reduce") {
      visit(e.loop);
      visit(e.body);
    }
  };
  roots.forEach(visit);
  return [...seen.values()].sort((a, b) => a.id - b.id);
}
