/**
 * Four outputs at a time: the SIMD form of a generic kernel. Every kernel-IR value is classified by how it varies
 * across four consecutive output indices `gid = 4g + l` (l = 0..3):
 *
 * - uniform: the same in every lane (constants, loop counters, `gid / 64`, loads at such an index); computed once,
 *   in scalar code;
 * - affine (i32 only): lane l holds `u + l·stride`, with `u` known to be a multiple of `align` (`gid` itself, `gid %
 *   64`, `4·gid + c`); only `u` is computed, in scalar code, and a load at stride 1 is one `v128.load`;
 * - vector: anything else, computed in f32x4/i32x4 registers (comparisons give lane masks of all ones).
 *
 * Division and remainder by a constant d keep an affine index affine (or make it uniform) when no multiple of d
 * can fall between two lanes: with `u ≡ 0 (mod align)` and g = gcd(align, d), that holds when 3·stride < g.
 *
 * `exp`, `log` and `tanh` run the f64 routines of `wasm_emit.ts` two lanes at a time (bit for bit the scalar
 * results); `pow`, `sin`, `cos` and integer division by a non-constant go lane by lane through the scalar code.
 * Kernels with f16 values or bool arithmetic stay scalar ({@link classifyLanes} returns null).
 *
 * A reduction whose body reads contiguous memory along its own loop (a row sum of a row-major tensor) runs its
 * lanes along that loop instead ({@link reduceAlongLoop}): four iterations at a time, then the lanes combined.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Kernel, KExpr, KReduce } from "./kexpr.ts";
import { kNodes, unhandledAluOp } from "./kexpr.ts";
import type { Stmt } from "./linearize.ts";
import type { FnBuilder } from "./wasm_encode.ts";
import type { Helpers, KEmitter } from "./wasm_emit.ts";

/** How a value varies across the four lanes. */
export interface Lane {
  readonly kind: "uniform" | "affine" | "vector";
  /** Lane 0's value is a multiple of this (i32 uniform/affine values; 1 when unknown). */
  readonly align: number;
  /** Lane l adds l·stride (affine values). */
  readonly stride: number;
}

const NONE = 2 ** 30;
const uniform = (align = 1): Lane => ({
  kind: "uniform",
  align: Math.min(Math.abs(align) || NONE, NONE),
  stride: 0,
});
const affine = (align: number, stride: number): Lane =>
  stride === 0 ? uniform(align) : { kind: "affine", align: Math.min(Math.abs(align) || NONE, NONE), stride };
const VECTOR: Lane = { kind: "vector", align: 1, stride: 0 };

function gcd(a: number, b: number): number {
  let [x, y] = [Math.abs(a), Math.abs(b)];
  while (y !== 0) [x, y] = [y, x % y];
  return x;
}

const FLOAT_OPS = new Set([
  "neg",
  "recip",
  "exp",
  "log",
  "sqrt",
  "sin",
  "cos",
  "tanh",
  "abs",
  "cast",
  "add",
  "mul",
  "div",
  "max",
  "min",
  "pow",
  "lt",
  "eq",
  "where",
]);
const INT_OPS = new Set([
  "neg",
  "abs",
  "cast",
  "add",
  "mul",
  "div",
  "mod",
  "max",
  "min",
  "lt",
  "eq",
  "where",
]);
const BOOL_OPS = new Set(["lt", "eq", "and", "where", "cast"]);

/**
 * The lane class of every node of `body` when the four lanes are four consecutive values of the variable
 * `laneVar` (the output index `gid`, or a reduction's loop counter), or null when it cannot run that way.
 */
export function classifyLanes(body: KExpr, laneVar = "gid"): Map<number, Lane> | null {
  const lanes = new Map<number, Lane>();
  const of = (e: KExpr) => lanes.get(e.id)!;
  for (const e of kNodes([body])) {
    if (e.dtype === "f16") return null;
    let lane: Lane;
    switch (e.k) {
      case "const":
        lane = uniform(e.dtype === "i32" || e.dtype === "u32" ? e.value : 1);
        break;
      case "var":
        lane = e.name === laneVar ? affine(4, 1) : uniform(1);
        break;
      case "param":
        lane = uniform(1);
        break;
      case "load":
        lane = of(e.index).kind === "uniform" ? uniform(1) : VECTOR;
        break;
      case "rand":
        if (of(e.seed).kind !== "uniform") return null;
        lane = of(e.index).kind === "uniform" ? uniform(1) : VECTOR;
        break;
      case "acc":
        // The matmul accumulator, in an epilogue whose lanes run along n.
        if (laneVar !== "n") return null;
        lane = VECTOR;
        break;
      case "reduce":
        if (e.dtype === "bool" || e.body.dtype === "bool") return null;
        lane = of(e.body).kind === "uniform" ? uniform(1) : VECTOR;
        break;
      case "alu": {
        const allowed = e.dtype === "bool" ? BOOL_OPS : e.dtype === "f32" ? FLOAT_OPS : INT_OPS;
        if (!allowed.has(e.op)) return null;
        if (e.op === "and" && e.dtype !== "bool") return null;
        const args = e.args.map(of);
        const [a, b] = args;
        const k = e.args[1]?.k === "const" ? e.args[1].value : null;
        if (e.dtype === "i32" && e.op === "add" && a.kind !== "vector" && b.kind !== "vector") {
          lane = affine(gcd(a.align, b.align), a.stride + b.stride);
        } else if (e.dtype === "i32" && e.op === "mul" && k !== null && a.kind !== "vector") {
          lane = affine(a.align * k, a.stride * k);
        } else if (
          e.dtype === "i32" && (e.op === "div" || e.op === "mod") && k !== null && k > 0 &&
          e.args[0].lo >= 0 &&
          a.kind !== "vector"
        ) {
          const g = gcd(a.align, k);
          if (a.kind === "uniform") lane = uniform(1);
          else if (a.stride > 0 && 3 * a.stride < g) lane = e.op === "div" ? uniform(1) : affine(g, a.stride);
          else lane = VECTOR;
        } else lane = args.every((x) => x.kind === "uniform") ? uniform(1) : VECTOR;
        break;
      }
    }
    lanes.set(e.id, lane);
  }
  return lanes;
}

const isFloat = (d: DType) => d === "f32";

/** Bytes of four i32 lanes. */
function i32x4(values: readonly number[]): Uint8Array {
  return new Uint8Array(new Int32Array(values).buffer);
}

/** Emits the vector statements of a kernel; scalar (uniform and affine) values go through a {@link KEmitter}. */
export class VEmitter {
  readonly #f: FnBuilder;
  readonly #help: Helpers;
  readonly #kernel: Kernel;
  readonly #bases: readonly number[];
  readonly #scalar: KEmitter;
  readonly #lanes: Map<number, Lane>;
  #vlocals = new Map<number, number>();
  /** Local holding the matmul accumulator's four lanes inside an epilogue. */
  acc = -1;

  /** Emits into `f`; `scalar` emits the uniform and affine values (lane 0's value for affine ones). */
  constructor(
    f: FnBuilder,
    help: Helpers,
    kernel: Kernel,
    bases: readonly number[],
    scalar: KEmitter,
    lanes: Map<number, Lane>,
  ) {
    this.#f = f;
    this.#help = help;
    this.#kernel = kernel;
    this.#bases = bases;
    this.#scalar = scalar;
    this.#lanes = lanes;
  }

  #lane(e: KExpr): Lane {
    const l = this.#lanes.get(e.id);
    if (l === undefined) throw new Error(`wasm vector: no lane class for node ${e.id} (${e.k})`);
    return l;
  }

  #vlocal(e: KExpr): number {
    if (e.k === "acc") return this.acc;
    let l = this.#vlocals.get(e.id);
    if (l === undefined) {
      l = this.#f.local("v128");
      this.#vlocals.set(e.id, l);
    }
    return l;
  }

  /** Pushes the four lanes of `e` (bools as lane masks). */
  push(e: KExpr): void {
    const f = this.#f;
    const lane = this.#lane(e);
    if (lane.kind === "vector") {
      f.get(this.#vlocal(e));
      return;
    }
    this.#scalar.push(e);
    if (e.dtype === "f32") f.op("f32x4.splat");
    else if (e.dtype === "bool") {
      const t = f.local("i32");
      f.set(t).i32(0).get(t).op("i32.sub").op("i32x4.splat");
    } else f.op("i32x4.splat");
    if (lane.kind === "affine") {
      const s = lane.stride;
      f.op("v128.const", i32x4([0, s, 2 * s, 3 * s])).op("i32x4.add");
    }
  }

  /** Emits a statement list (each value scalar or vector by its class). */
  stmts(list: readonly Stmt[]): void {
    for (const s of list) {
      if (this.#lane(s.node).kind !== "vector") this.#scalar.stmts([s]);
      else if (s.kind === "loop") this.#loop(s.node, s.body);
      else {
        this.#value(s.node);
        this.#f.set(this.#vlocal(s.node));
      }
    }
  }

  /** Stores the four lanes of `e` at `out + gid0·4`. */
  store(outBase: number, gid0: number, e: KExpr): void {
    this.storeAt(outBase, () => this.#f.get(gid0), e);
  }

  /** Stores the four lanes of `e` at element `index` (pushed by the callback) of the output and the next three. */
  storeAt(outBase: number, pushIndex: () => void, e: KExpr): void {
    const f = this.#f;
    f.get(outBase);
    pushIndex();
    f.i32(2).op("i32.shl").op("i32.add");
    this.push(e);
    if (e.dtype === "bool") f.i32(1).op("i32x4.splat").op("v128.and");
    f.op("v128.store");
  }

  /** Runs `lane(l)` (pushing one scalar) for l = 0..3 and assembles the results into a vector of `type`. */
  #perLane(type: "f32" | "i32", lane: (l: number) => void): void {
    const f = this.#f;
    const v = f.local("v128");
    f.op("v128.const", new Uint8Array(16)).set(v);
    for (let l = 0; l < 4; l++) {
      f.get(v);
      lane(l);
      f.op(type === "f32" ? "f32x4.replace_lane" : "i32x4.replace_lane", l).set(v);
    }
    f.get(v);
  }

  /** Pushes lane `l` of `e` as a scalar (bools as 0/1). */
  #pushLane(e: KExpr, l: number): void {
    const f = this.#f;
    const lane = this.#lane(e);
    if (lane.kind === "uniform") {
      this.#scalar.push(e);
      return;
    }
    if (lane.kind === "affine") {
      this.#scalar.push(e);
      if (l > 0) f.i32(l * lane.stride).op("i32.add");
      return;
    }
    f.get(this.#vlocal(e));
    if (e.dtype === "f32") f.op("f32x4.extract_lane", l);
    else {
      f.op("i32x4.extract_lane", l);
      if (e.dtype === "bool") f.i32(1).op("i32.and");
    }
  }

  #value(e: KExpr): void {
    const f = this.#f;
    switch (e.k) {
      case "load":
        return this.#load(e.buf, e.index, e.dtype);
      case "rand":
        this.#scalar.push(e.seed); // the seed is uniform (the lane classes require it)
        this.push(e.index);
        f.op("call", this.#help.vrand());
        return;
      case "alu":
        return this.#alu(e);
      default:
        throw new Error(`wasm vector: cannot compute ${e.k} as a vector value`);
    }
  }

  #load(buf: number, index: KExpr, dtype: DType): void {
    const f = this.#f;
    const lane = this.#lane(index);
    const size = this.#kernel.inputs[buf].size;
    const inBounds = index.lo >= 0 && index.hi < size;
    if (lane.kind === "affine" && lane.stride === 1 && inBounds) {
      f.get(this.#bases[buf]);
      this.#scalar.push(index);
      f.i32(2).op("i32.shl").op("i32.add").op("v128.load");
    } else {
      this.#perLane(dtype === "f32" ? "f32" : "i32", (l) => {
        f.get(this.#bases[buf]);
        this.#pushLane(index, l);
        if (!inBounds) {
          const t = f.local("i32");
          f.op("local.tee", t).i32(0).get(t).i32(size).op("i32.lt_u").op("select");
        }
        f.i32(2).op("i32.shl").op("i32.add").op(dtype === "f32" ? "f32.load" : "i32.load");
      });
    }
    if (dtype === "bool") f.op("v128.const", new Uint8Array(16)).op("i32x4.ne");
  }

  #alu(e: KExpr & { k: "alu" }): void {
    const f = this.#f;
    const d = e.dtype;
    const [a, b, c] = e.args;
    const push = (...xs: KExpr[]) => xs.forEach((x) => this.push(x));
    const float = isFloat(d);
    const signed = d === "i32";
    switch (e.op) {
      case "neg":
        push(a);
        f.op(float ? "f32x4.neg" : "i32x4.neg");
        return;
      case "recip":
        f.op("v128.const", new Uint8Array(new Float32Array([1, 1, 1, 1]).buffer));
        push(a);
        f.op("f32x4.div");
        return;
      case "exp":
      case "log":
        // Inline: the routines' constants are then set once per kernel call, not once per group of four.
        push(a);
        if (e.op === "exp") this.#help.inlineVexp(f);
        else this.#help.inlineVlog(f);
        return;
      case "tanh":
        push(a);
        f.op("call", this.#help.vtanh());
        return;
      case "sin":
      case "cos":
      case "pow": {
        const fn = e.op === "pow" ? this.#help.pow() : this.#help.math(e.op);
        this.#perLane("f32", (l) => {
          for (const x of e.args) {
            this.#pushLane(x, l);
            f.op("f64.promote_f32");
          }
          f.op("call", fn).op("f32.demote_f64");
        });
        return;
      }
      case "sqrt":
        push(a);
        f.op("f32x4.sqrt");
        return;
      case "abs":
        push(a);
        if (float) f.op("f32x4.abs");
        else if (signed) f.op("i32x4.abs");
        return;
      case "cast":
        return this.#cast(a, d);
      case "add":
      case "mul":
        push(a, b);
        f.op(
          float ? (e.op === "add" ? "f32x4.add" : "f32x4.mul") : (e.op === "add" ? "i32x4.add" : "i32x4.mul"),
        );
        return;
      case "div":
      case "mod":
        if (float && e.op === "div") {
          push(a, b);
          f.op("f32x4.div");
          return;
        }
        this.#perLane("i32", (l) => {
          this.#scalar.idiv(() => this.#pushLane(a, l), () => this.#pushLane(b, l), signed, e.op === "mod");
        });
        return;
      case "max":
      case "min":
        push(a, b);
        if (float) f.op(e.op === "max" ? "f32x4.max" : "f32x4.min");
        else if (e.op === "max") f.op(signed ? "i32x4.max_s" : "i32x4.max_u");
        else f.op(signed ? "i32x4.min_s" : "i32x4.min_u");
        return;
      case "lt":
        push(a, b);
        f.op(isFloat(a.dtype) ? "f32x4.lt" : a.dtype === "i32" ? "i32x4.lt_s" : "i32x4.lt_u");
        return;
      case "eq":
        push(a, b);
        f.op(isFloat(a.dtype) ? "f32x4.eq" : "i32x4.eq");
        return;
      case "and":
        push(a, b);
        f.op("v128.and");
        return;
      case "where":
        push(b, c, a);
        f.op("v128.bitselect");
        return;
      default:
        return unhandledAluOp(e.op, "render_wasm (vector)");
    }
  }

  #cast(a: KExpr, to: DType): void {
    const f = this.#f;
    const from = a.dtype;
    this.push(a);
    if (from === to) return;
    if (to === "bool") {
      f.op("v128.const", new Uint8Array(16)).op(isFloat(from) ? "f32x4.ne" : "i32x4.ne");
      return;
    }
    // A bool mask (0 or -1 per lane) as 0 or 1.
    if (from === "bool") f.op("i32x4.neg");
    if (to === "i32" || to === "u32") {
      if (isFloat(from)) f.op(to === "i32" ? "i32x4.trunc_sat_f32x4_s" : "i32x4.trunc_sat_f32x4_u");
      return;
    }
    f.op(from === "u32" ? "f32x4.convert_i32x4_u" : "f32x4.convert_i32x4_s");
  }

  #loop(r: KReduce, body: readonly Stmt[]): void {
    const f = this.#f;
    const floatSum = r.op === "sum" && isFloat(r.dtype);
    const bodyType = r.body.dtype;
    const acc = f.local("v128");
    const hi = floatSum ? f.local("v128") : -1;
    const best = r.op === "argmax" ? f.local("v128") : -1;
    const lowest = (d: DType) => {
      if (isFloat(d)) f.op("f32.const", -Infinity).op("f32x4.splat");
      else f.i32(d === "i32" ? -2147483648 : 0).op("i32x4.splat");
    };
    if (r.op === "max") lowest(r.dtype);
    else f.op("v128.const", new Uint8Array(16));
    f.set(acc);
    if (floatSum) f.op("v128.const", new Uint8Array(16)).set(hi);
    if (best >= 0) {
      lowest(bodyType);
      f.set(best);
    }
    if (r.size > 0) {
      const v = f.local("i32");
      this.#scalar.vars.set(r.loop.name, v);
      f.i32(0).set(v);
      f.op("block").op("loop");
      this.stmts(body);
      if (floatSum) {
        // Two f64 accumulators per group: lanes 0-1 in `acc`, lanes 2-3 in `hi`.
        const x = f.local("v128");
        this.push(r.body);
        f.set(x);
        f.get(acc).get(x).op("f64x2.promote_low_f32x4").op("f64x2.add").set(acc);
        f.get(hi).get(x).get(x).op("i8x16.shuffle", HIGH_HALF).op("f64x2.promote_low_f32x4").op("f64x2.add")
          .set(hi);
      } else if (r.op === "sum") {
        f.get(acc);
        this.push(r.body);
        f.op("i32x4.add").set(acc);
      } else if (r.op === "max") {
        f.get(acc);
        this.push(r.body);
        if (isFloat(r.dtype)) f.op("f32x4.max");
        else f.op(r.dtype === "i32" ? "i32x4.max_s" : "i32x4.max_u");
        f.set(acc);
      } else {
        // First maximum per lane: take the value where it beats the best so far, or at index 0. A NaN wins
        // over any number and keeps its place (PyTorch's and NumPy's argmax).
        const x = f.local("v128");
        const take = f.local("v128");
        this.push(r.body);
        f.op("local.tee", x).get(best);
        f.op(isFloat(bodyType) ? "f32x4.gt" : bodyType === "i32" ? "i32x4.gt_s" : "i32x4.gt_u");
        if (isFloat(bodyType)) {
          f.get(x).get(x).op("f32x4.ne").get(best).get(best).op("f32x4.eq").op("v128.and").op("v128.or");
        }
        f.i32(0).get(v).op("i32.eqz").op("i32.sub").op("i32x4.splat").op("v128.or").set(take);
        f.get(x).get(best).get(take).op("v128.bitselect").set(best);
        f.get(v).op("i32x4.splat").get(acc).get(take).op("v128.bitselect").set(acc);
      }
      f.get(v).i32(1).op("i32.add").op("local.tee", v).i32(r.size).op("i32.lt_s").op("br_if", 0);
      f.op("end").op("end");
    }
    if (floatSum) {
      f.get(acc).op("f32x4.demote_f64x2_zero").get(hi).op("f32x4.demote_f64x2_zero");
      f.op("i8x16.shuffle", JOIN_LOW_HALVES).set(acc);
    }
    f.get(acc).set(this.#vlocal(r));
  }
}

/** Shuffle lanes: bytes 8-15 of the first operand, twice. */
const HIGH_HALF = new Uint8Array([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]);
/** Shuffle lanes: the low 8 bytes of each operand. */
const JOIN_LOW_HALVES = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]);

/**
 * Emits reduction `r` (sum or max) with its four lanes along its own loop: iterations 4q..4q+3 together, the
 * lane accumulators combined in lane order, then the remaining iterations in scalar code. `lanes` classifies
 * `r.body` along the loop counter. Float sums accumulate in f64 as everywhere else.
 */
export function reduceAlongLoop(
  scalar: KEmitter,
  vector: VEmitter,
  r: KReduce,
  body: readonly Stmt[],
): void {
  const f = scalar.f;
  const acc = scalar.reduceInit(r);
  const floatSum = r.op === "sum" && isFloat(r.dtype);
  const quads = Math.floor(r.size / 4);
  const v = f.local("i32");
  scalar.vars.set(r.loop.name, v);
  if (quads > 0) {
    const lo = f.local("v128");
    const hi = f.local("v128");
    if (r.op === "max") {
      if (isFloat(r.dtype)) f.op("f32.const", -Infinity).op("f32x4.splat");
      else f.i32(r.dtype === "i32" ? -2147483648 : 0).op("i32x4.splat");
    } else f.op("v128.const", new Uint8Array(16));
    f.set(lo);
    f.op("v128.const", new Uint8Array(16)).set(hi);
    const q = f.local("i32");
    f.i32(0).set(q);
    f.op("loop");
    f.get(q).i32(2).op("i32.shl").set(v);
    vector.stmts(body);
    const x = f.local("v128");
    vector.push(r.body);
    f.set(x);
    if (floatSum) {
      f.get(lo).get(x).op("f64x2.promote_low_f32x4").op("f64x2.add").set(lo);
      f.get(hi).get(x).get(x).op("i8x16.shuffle", HIGH_HALF).op("f64x2.promote_low_f32x4").op("f64x2.add")
        .set(hi);
    } else {
      f.get(lo).get(x);
      if (r.op === "sum") f.op("i32x4.add");
      else if (isFloat(r.dtype)) f.op("f32x4.max");
      else f.op(r.dtype === "i32" ? "i32x4.max_s" : "i32x4.max_u");
      f.set(lo);
    }
    f.get(q).i32(1).op("i32.add").op("local.tee", q).i32(quads).op("i32.lt_s").op("br_if", 0);
    f.op("end");
    // Combine the lanes into the scalar accumulator, in lane order.
    for (let l = 0; l < 4; l++) {
      if (floatSum) {
        f.get(acc.acc).get(l < 2 ? lo : hi).op("f64x2.extract_lane", l % 2).op("f64.add").set(acc.acc);
      } else if (r.op === "sum") {
        f.get(acc.acc).get(lo).op("i32x4.extract_lane", l).op("i32.add").set(acc.acc);
      } else if (isFloat(r.dtype)) {
        f.get(acc.acc).get(lo).op("f32x4.extract_lane", l).op("f32.max").set(acc.acc);
      } else {
        const t = f.local("i32");
        f.get(lo).op("i32x4.extract_lane", l).set(t);
        f.get(t).get(acc.acc).get(t).get(acc.acc).op(r.dtype === "i32" ? "i32.gt_s" : "i32.gt_u").op(
          "select",
        );
        f.set(acc.acc);
      }
    }
  }
  if (r.size % 4 !== 0) {
    f.i32(4 * quads).set(v);
    f.op("loop");
    scalar.stmts(body);
    scalar.reduceStep(r, acc, v);
    f.get(v).i32(1).op("i32.add").op("local.tee", v).i32(r.size).op("i32.lt_s").op("br_if", 0);
    f.op("end");
  }
  scalar.reduceFinish(r, acc);
}

/**
 * Whether a reduction reads more memory contiguously along its own loop (under `along`) than along the output
 * index (under `across`): then its lanes should run along the loop.
 */
export function prefersLoopLanes(
  r: KReduce,
  across: Map<number, Lane> | null,
  along: Map<number, Lane>,
): boolean {
  let alongLoop = 0;
  let alongOutputs = 0;
  for (const e of kNodes([r.body])) {
    if (e.k !== "load") continue;
    const b = along.get(e.index.id);
    if (b?.kind === "affine" && b.stride === 1) alongLoop++;
    const a = across?.get(e.index.id);
    if (a?.kind === "affine" && a.stride === 1) alongOutputs++;
  }
  return alongLoop > alongOutputs;
}
