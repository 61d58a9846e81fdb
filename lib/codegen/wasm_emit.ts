/**
 * Emitting kernel-IR expressions as WebAssembly: the statement emitter shared by the wasm renderers
 * (`render_wasm.ts`, `render_wasm_matmul.ts`), the helper functions it calls, and the module skeleton every kernel
 * shares (the imported shared memory and `run(start, end, scratch, out, in0, ...)`).
 *
 * Semantics follow the other devices: f32 values are f32 (each operation rounds), f16 values are computed in f32
 * and rounded to f16 after every operation, sums of floats accumulate in f64 and round once, integers wrap at 32
 * bits, integer division by zero gives the dividend (remainder 0), float-to-integer casts truncate and saturate
 * (NaN to 0). `exp`, `log` and `tanh` are computed in f64 here (range reduction plus a polynomial, far below f32
 * rounding), `sin` and `cos` call the host's `Math.sin`/`Math.cos`.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Kernel, KExpr, KReduce } from "./kexpr.ts";
import { kNodes } from "./kexpr.ts";
import { linearize, type Stmt } from "./linearize.ts";
import { FnBuilder, ModuleBuilder, type ValType } from "./wasm_encode.ts";

/** Pages of the shared memory every kernel module imports as `env.mem` (its declared maximum). */
export const WASM_MAX_PAGES = 65536;

/** A compiled-to-bytes kernel with what the runtime needs to split and run it. */
export interface WasmKernel {
  /** The module (imports `env.mem`, and `math.sin`/`math.cos` when `usesMath`). */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** Number of work items `run` accepts. */
  readonly items: number;
  /** Rough cost of one item in nanoseconds (for the decision to split over threads). */
  readonly itemCost: number;
  /** Scratch bytes each thread must pass to `run` (matmul packing buffers). */
  readonly scratchBytes: number;
  /** Whether the module imports `math.sin` and `math.cos`. */
  readonly usesMath: boolean;
}

/** Options of {@link renderWasm}. */
export interface WasmRenderOptions {
  /** Use relaxed-SIMD fused multiply-add in the matmul micro-kernel. */
  readonly relaxedSimd: boolean;
}

/** The wasm value type holding a value of dtype `d` (f16 is computed in f32; bool and u32 in i32). */
export function valType(d: DType): "i32" | "f32" {
  return d === "f32" || d === "f16" ? "f32" : "i32";
}

/** Bytes per stored element of dtype `d`. */
export function elemBytes(d: DType): number {
  return d === "f16" ? 2 : 4;
}

const isFloat = (d: DType) => d === "f32" || d === "f16";

/** Helper functions a module defines on demand, each added once. */
export class Helpers {
  readonly #mb: ModuleBuilder;
  readonly #made = new Map<string, number>();
  readonly #math: { sin: number; cos: number } | null;

  /** Helpers of module `mb`; `math` holds the indices of the imported `Math.sin` and `Math.cos`. */
  constructor(mb: ModuleBuilder, math: { sin: number; cos: number } | null) {
    this.#mb = mb;
    this.#math = math;
  }

  /** Index of the host `Math.sin`/`Math.cos` import. */
  math(name: "sin" | "cos"): number {
    if (this.#math === null) throw new Error("render_wasm: sin/cos used but not imported");
    return this.#math[name];
  }

  #get(name: string, build: (f: FnBuilder) => void, params: ValType[], results: ValType[]): number {
    let idx = this.#made.get(name);
    if (idx === undefined) {
      const f = new FnBuilder(params, results);
      build(f);
      idx = this.#mb.addFunction(f);
      this.#made.set(name, idx);
    }
    return idx;
  }

  /** `exp(x)` in f64 for arguments that end up rounded to f32 (clamped to [-150, 100], NaN kept). */
  exp(): number {
    return this.#get(
      "exp",
      (f) => {
        const n = f.local("f64");
        const r = f.local("f64");
        // x = clamp(x): e^-150 and e^100 are already 0 and +inf in f32.
        f.get(0).op("f64.const", 100).op("f64.min").op("f64.const", -150).op("f64.max").set(0);
        // n = round(x / ln 2); r = x - n·ln 2 in two parts (Cody–Waite), |r| <= ln(2)/2.
        f.get(0).op("f64.const", Math.LOG2E).op("f64.mul").op("f64.nearest").set(n);
        f.get(0).get(n).op("f64.const", 0.6931471803691238).op("f64.mul").op("f64.sub");
        f.get(n).op("f64.const", 1.9082149292705877e-10).op("f64.mul").op("f64.sub").set(r);
        // e^r by its Taylor series to r^11 (truncation error < 1e-14 relative on |r| <= 0.347), Horner form.
        f.op("f64.const", 1 / 39916800);
        for (let k = 10; k >= 0; k--) {
          let fact = 1;
          for (let i = 2; i <= k; i++) fact *= i;
          f.get(r).op("f64.mul").op("f64.const", 1 / fact).op("f64.add");
        }
        // · 2^n, built from the exponent bits (n is within [-217, 145]).
        f.get(n).op("i32.trunc_sat_f64_s").i32(1023).op("i32.add").op("i64.extend_i32_s").op("i64.const", 52)
          .op("i64.shl").op("f64.reinterpret_i64").op("f64.mul");
      },
      ["f64"],
      ["f64"],
    );
  }

  /** Natural logarithm in f64 (NaN below 0, -inf at 0, +inf at +inf). */
  log(): number {
    return this.#get(
      "log",
      (f) => {
        const bits = f.local("i64");
        const e = f.local("i32");
        const m = f.local("f64");
        const s = f.local("f64");
        const s2 = f.local("f64");
        // Special cases: x < 0 or NaN -> NaN; 0 -> -inf; +inf -> +inf.
        f.get(0).op("f64.const", 0).op("f64.lt").get(0).get(0).op("f64.ne").op("i32.or").op("if", "void");
        f.op("f64.const", NaN).op("return").op("end");
        f.get(0).op("f64.const", 0).op("f64.eq").op("if", "void").op("f64.const", -Infinity).op("return").op(
          "end",
        );
        f.get(0).op("f64.const", Infinity).op("f64.eq").op("if", "void").get(0).op("return").op("end");
        // x = m · 2^e with m in [1, 2) (inputs come from f32, so x is a normal f64).
        f.get(0).op("i64.reinterpret_f64").set(bits);
        f.get(bits).op("i64.const", 52).op("i64.shr_u").op("i32.wrap_i64").i32(0x7ff).op("i32.and").i32(1023)
          .op("i32.sub").set(e);
        f.get(bits).op("i64.const", 0x000fffffffffffffn).op("i64.and");
        f.op("i64.const", 0x3ff0000000000000n).op("i64.or").op("f64.reinterpret_i64").set(m);
        // Keep m in [sqrt(1/2), sqrt(2)).
        f.get(m).op("f64.const", Math.SQRT2).op("f64.ge").op("if", "void");
        f.get(m).op("f64.const", 0.5).op("f64.mul").set(m);
        f.get(e).i32(1).op("i32.add").set(e);
        f.op("end");
        // log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172: series to s^17 (error < 1e-15).
        f.get(m).op("f64.const", 1).op("f64.sub").get(m).op("f64.const", 1).op("f64.add").op("f64.div").set(
          s,
        );
        f.get(s).get(s).op("f64.mul").set(s2);
        f.op("f64.const", 1 / 17);
        for (let k = 15; k >= 1; k -= 2) f.get(s2).op("f64.mul").op("f64.const", 1 / k).op("f64.add");
        f.get(s).op("f64.mul").op("f64.const", 2).op("f64.mul");
        f.get(e).op("f64.convert_i32_s").op("f64.const", Math.LN2).op("f64.mul").op("f64.add");
      },
      ["f64"],
      ["f64"],
    );
  }

  /** tanh in f64 (odd; 1 - 2/(e^{2|x|}+1) away from 0, x itself near 0, ±1 beyond 20). */
  tanh(): number {
    const exp = this.exp();
    return this.#get(
      "tanh",
      (f) => {
        const ax = f.local("f64");
        const e = f.local("f64");
        f.get(0).op("f64.abs").set(ax);
        f.get(ax).op("f64.const", 2 ** -12).op("f64.lt").op("if", "void").get(0).op("return").op("end");
        f.get(ax).op("f64.const", 20).op("f64.gt").op("if", "void");
        f.op("f64.const", 1).get(0).op("f64.copysign").op("return").op("end");
        f.op("f64.const", -2).get(ax).op("f64.mul").op("call", exp).set(e);
        f.op("f64.const", 1).get(e).op("f64.sub").op("f64.const", 1).get(e).op("f64.add").op("f64.div");
        f.get(0).op("f64.copysign");
      },
      ["f64"],
      ["f64"],
    );
  }

  /** `x^y` with the sign rules of the WGSL helper and `Math.pow` for negative bases and zeros. */
  pow(): number {
    const exp = this.exp();
    const log = this.log();
    return this.#get(
      "pow",
      (f) => {
        const ax = f.local("f64");
        const r = f.local("f64");
        f.get(1).op("f64.const", 0).op("f64.eq").op("if", "void").op("f64.const", 1).op("return").op("end");
        f.get(0).op("f64.abs").set(ax);
        f.get(ax).op("f64.const", 0).op("f64.eq").op("if", "void");
        f.op("f64.const", Infinity).op("f64.const", 0).get(1).op("f64.const", 0).op("f64.lt").op("select")
          .op("return");
        f.op("end");
        f.get(1).get(ax).op("call", log).op("f64.mul").op("call", exp).set(r);
        f.get(0).op("f64.const", 0).op("f64.lt").op("if", "void");
        // Negative base: NaN for a non-integer exponent, the sign of (-1)^y for an integer one.
        f.get(1).get(1).op("f64.floor").op("f64.ne").op("if", "void").op("f64.const", NaN).op("return").op(
          "end",
        );
        f.get(1).op("f64.const", 0.5).op("f64.mul").get(1).op("f64.const", 0.5).op("f64.mul").op("f64.floor")
          .op("f64.ne").op("if", "void").get(r).op("f64.neg").set(r).op("end");
        f.op("end");
        f.get(r);
      },
      ["f64", "f64"],
      ["f64"],
    );
  }

  /** The 32-bit mixer of `lib/ir/rng.ts`. */
  mix32(): number {
    return this.#get(
      "mix32",
      (f) => {
        f.get(0).get(0).i32(16).op("i32.shr_u").op("i32.xor").set(0);
        f.get(0).i32(0x7feb352d).op("i32.mul").set(0);
        f.get(0).get(0).i32(15).op("i32.shr_u").op("i32.xor").set(0);
        f.get(0).i32(0x846ca68b).op("i32.mul").set(0);
        f.get(0).get(0).i32(16).op("i32.shr_u").op("i32.xor");
      },
      ["i32"],
      ["i32"],
    );
  }

  /** `randUniform(seed, i)` of `lib/ir/rng.ts`: 24 random bits scaled to [0, 1). */
  rand(): number {
    const mix = this.mix32();
    return this.#get(
      "rand",
      (f) => {
        // k = mix32(seed ^ 0x9e3779b9); h = mix32(mix32(i + k) ^ seed)
        f.get(1).get(0).i32(0x9e3779b9).op("i32.xor").op("call", mix).op("i32.add").op("call", mix);
        f.get(0).op("i32.xor").op("call", mix);
        f.i32(8).op("i32.shr_u").op("f32.convert_i32_u").op("f32.const", 1 / 16777216).op("f32.mul");
      },
      ["i32", "i32"],
      ["f32"],
    );
  }

  /** f32 to the bits of the nearest f16 (ties to even; overflow to ±inf; NaN stays NaN). */
  toF16(): number {
    return this.#get(
      "to_f16",
      (f) => {
        const x = f.local("i32");
        const ax = f.local("i32");
        const sign = f.local("i32");
        f.get(0).op("i32.reinterpret_f32").set(x);
        f.get(x).i32(16).op("i32.shr_u").i32(0x8000).op("i32.and").set(sign);
        f.get(x).i32(0x7fffffff).op("i32.and").set(ax);
        f.get(ax).i32(0x7f800000).op("i32.ge_u").op("if", "void");
        f.get(sign).i32(0x7e00).i32(0x7c00).get(ax).i32(0x7f800000).op("i32.gt_u").op("select").op("i32.or")
          .op("return");
        f.op("end");
        // 65520 and above round to infinity.
        f.get(ax).i32(0x477ff000).op("i32.ge_u").op("if", "void").get(sign).i32(0x7c00).op("i32.or").op(
          "return",
        )
          .op("end");
        // Below 2^-14: a subnormal f16, round(|x|·2^24) ties to even (exact in f32).
        f.get(ax).i32(0x38800000).op("i32.lt_u").op("if", "void");
        f.get(sign).get(0).op("f32.abs").op("f32.const", 16777216).op("f32.mul").op("f32.nearest")
          .op("i32.trunc_sat_f32_u").op("i32.or").op("return");
        f.op("end");
        // Normal: rebias the exponent and round the mantissa to 10 bits, ties to even.
        f.get(sign).get(ax).i32(0x38000000).op("i32.sub").i32(0xfff).op("i32.add");
        f.get(ax).i32(13).op("i32.shr_u").i32(1).op("i32.and").op("i32.add").i32(13).op("i32.shr_u").op(
          "i32.or",
        );
      },
      ["f32"],
      ["i32"],
    );
  }

  /** The f32 value of f16 bits. */
  fromF16(): number {
    return this.#get(
      "from_f16",
      (f) => {
        const e = f.local("i32");
        const m = f.local("i32");
        const s = f.local("i32");
        f.get(0).i32(0x8000).op("i32.and").i32(16).op("i32.shl").set(s);
        f.get(0).i32(10).op("i32.shr_u").i32(0x1f).op("i32.and").set(e);
        f.get(0).i32(0x3ff).op("i32.and").set(m);
        f.get(e).op("i32.eqz").op("if", "void");
        f.get(m).op("f32.convert_i32_u").op("f32.const", 2 ** -24).op("f32.mul").get(s).op(
          "f32.reinterpret_i32",
        )
          .op("f32.copysign").op("return");
        f.op("end");
        f.get(e).i32(31).op("i32.eq").op("if", "void");
        f.get(s).i32(0x7f800000).op("i32.or").get(m).i32(13).op("i32.shl").op("i32.or").op(
          "f32.reinterpret_i32",
        )
          .op("return");
        f.op("end");
        f.get(s).get(e).i32(112).op("i32.add").i32(23).op("i32.shl").op("i32.or").get(m).i32(13).op("i32.shl")
          .op("i32.or").op("f32.reinterpret_i32");
      },
      ["i32"],
      ["f32"],
    );
  }

  /** Rounds an f32 to the nearest f16 value. */
  f16round(): number {
    const to = this.toF16();
    const from = this.fromF16();
    return this.#get(
      "f16round",
      (f) => {
        f.get(0).op("call", to).op("call", from);
      },
      ["f32"],
      ["f32"],
    );
  }
}

/**
 * Emits the statements of kernel-IR expressions into one function: every non-inline value gets a local, loads
 * read `base[buf] + index·size`, and reductions become counted loops.
 */
export class KEmitter {
  /** The function being written. */
  readonly f: FnBuilder;
  readonly #help: Helpers;
  readonly #kernel: Kernel;
  /** Locals holding each input's base pointer. */
  readonly #bases: readonly number[];
  /** Locals of named variables (`gid`, `b`, `m`, `n`, `k`, loop counters). */
  readonly vars = new Map<string, number>();
  #locals = new Map<number, number>();
  /** Local holding the matmul accumulator inside an epilogue. */
  acc = -1;

  /** Emits into `f` for `kernel`, whose input `i` starts at the byte address held in local `bases[i]`. */
  constructor(f: FnBuilder, help: Helpers, kernel: Kernel, bases: readonly number[]) {
    this.f = f;
    this.#help = help;
    this.#kernel = kernel;
    this.#bases = bases;
  }

  /** The local of a non-inline value (created on first use). */
  #local(e: KExpr): number {
    let l = this.#locals.get(e.id);
    if (l === undefined) {
      l = this.f.local(valType(e.dtype));
      this.#locals.set(e.id, l);
    }
    return l;
  }

  /** Pushes the value of `e` (already computed by {@link stmts} unless inline). */
  push(e: KExpr): void {
    const f = this.f;
    switch (e.k) {
      case "const":
        if (valType(e.dtype) === "f32") {
          f.op("f32.const", e.dtype === "f16" ? Math.f16round(e.value) : e.value);
        } else f.i32(e.dtype === "u32" ? e.value >>> 0 : e.value | 0);
        return;
      case "var": {
        const l = this.vars.get(e.name);
        if (l === undefined) {
          throw new Error(`render_wasm: kernel ${this.#kernel.name} uses unbound ${e.name}`);
        }
        f.get(l);
        return;
      }
      case "acc":
        f.get(this.acc);
        return;
      default:
        f.get(this.#local(e));
    }
  }

  /** Emits a statement list. */
  stmts(list: readonly Stmt[]): void {
    for (const s of list) {
      if (s.kind === "loop") this.#loop(s.node, s.body);
      else {
        this.#value(s.node);
        this.f.set(this.#local(s.node));
      }
    }
  }

  /** Computes `value` into locals; afterwards {@link push} pushes it. */
  compute(value: KExpr): void {
    this.stmts(linearize([value]));
  }

  /** Rounds the f32 on the stack to f16 when `d` is f16. */
  #round(d: DType): void {
    if (d === "f16") this.f.op("call", this.#help.f16round());
  }

  /**
   * Pushes `base[buf] + index · size` (a byte address). An index whose bounds are not known to lie inside the
   * input (a padded view, whose value `where` discards outside the pad) reads element 0 instead: every load stays
   * inside its buffer, as WebGPU's robust buffer access guarantees there.
   */
  address(buf: number, index: KExpr): void {
    const f = this.f;
    const size = this.#kernel.inputs[buf].size;
    f.get(this.#bases[buf]);
    this.push(index);
    if (!(index.lo >= 0 && index.hi < size)) {
      const t = f.local("i32");
      f.op("local.tee", t).i32(0).get(t).i32(size).op("i32.lt_u").op("select");
    }
    f.i32(Math.log2(elemBytes(this.#kernel.inputs[buf].dtype))).op("i32.shl").op("i32.add");
  }

  #value(e: KExpr): void {
    const f = this.f;
    switch (e.k) {
      case "load": {
        this.address(e.buf, e.index);
        if (e.dtype === "f16") f.op("i32.load16_u").op("call", this.#help.fromF16());
        else if (e.dtype === "f32") f.op("f32.load");
        else f.op("i32.load");
        if (e.dtype === "bool") f.i32(0).op("i32.ne");
        return;
      }
      case "rand":
        f.i32(e.seed | 0);
        this.push(e.index);
        f.op("call", this.#help.rand());
        return;
      case "alu":
        this.#alu(e);
        return;
      default:
        throw new Error(`render_wasm: cannot compute ${e.k} as a value`);
    }
  }

  /** Calls an f64 helper on the f32 operand `a`, rounding the result to dtype `d`. */
  #f64Call(fn: number, args: readonly KExpr[], d: DType): void {
    for (const a of args) {
      this.push(a);
      this.f.op("f64.promote_f32");
    }
    this.f.op("call", fn).op("f32.demote_f64");
    this.#round(d);
  }

  #alu(e: KExpr & { k: "alu" }): void {
    const f = this.f;
    const d = e.dtype;
    const [a, b, c] = e.args;
    const push = (...xs: KExpr[]) => xs.forEach((x) => this.push(x));
    const float = isFloat(d);
    const signed = d === "i32";
    switch (e.op) {
      case "neg":
        if (float) {
          push(a);
          f.op("f32.neg");
        } else {
          f.i32(0);
          push(a);
          f.op("i32.sub");
        }
        return;
      case "recip":
        if (!float) return this.#idiv(() => f.i32(1), () => push(a), signed, false);
        f.op("f32.const", 1);
        push(a);
        f.op("f32.div");
        return this.#round(d);
      case "exp":
        return this.#f64Call(this.#help.exp(), [a], d);
      case "log":
        return this.#f64Call(this.#help.log(), [a], d);
      case "tanh":
        return this.#f64Call(this.#help.tanh(), [a], d);
      case "sin":
      case "cos":
        return this.#f64Call(this.#help.math(e.op), [a], d);
      case "sqrt":
        push(a);
        f.op("f32.sqrt");
        return this.#round(d);
      case "abs":
        push(a);
        if (float) f.op("f32.abs");
        else if (signed) {
          // (a ^ (a >> 31)) - (a >> 31): wraps at -2^31 like 32-bit hardware.
          push(a);
          f.i32(31).op("i32.shr_s").op("i32.xor");
          push(a);
          f.i32(31).op("i32.shr_s").op("i32.sub");
        }
        return;
      case "cast":
        return this.#cast(a, d);
      case "add":
      case "mul":
        push(a, b);
        f.op(float ? (e.op === "add" ? "f32.add" : "f32.mul") : (e.op === "add" ? "i32.add" : "i32.mul"));
        return this.#round(d);
      case "div":
        if (!float) return this.#idivOf(a, b, signed, false);
        push(a, b);
        f.op("f32.div");
        return this.#round(d);
      case "mod":
        if (float) throw new Error(`render_wasm: float remainder in kernel ${this.#kernel.name}`);
        return this.#idivOf(a, b, signed, true);
      case "max":
      case "min":
        if (float) {
          push(a, b);
          f.op(e.op === "max" ? "f32.max" : "f32.min");
          return;
        }
        // select(x, y, a < b): min takes (a, b), max (b, a).
        if (e.op === "max") push(b, a, a, b);
        else push(a, b, a, b);
        f.op(signed ? "i32.lt_s" : "i32.lt_u").op("select");
        return;
      case "pow":
        return this.#f64Call(this.#help.pow(), [a, b], d);
      case "lt":
        push(a, b);
        f.op(isFloat(a.dtype) ? "f32.lt" : a.dtype === "i32" ? "i32.lt_s" : "i32.lt_u");
        return;
      case "eq":
        push(a, b);
        f.op(isFloat(a.dtype) ? "f32.eq" : "i32.eq");
        return;
      case "and":
        push(a, b);
        f.op("i32.and");
        return;
      case "where":
        push(b, c, a);
        f.op("select");
        return;
    }
  }

  #idivOf(a: KExpr, b: KExpr, signed: boolean, rem: boolean): void {
    // Index arithmetic divides a non-negative value by a positive constant: no guard needed.
    if (b.k === "const" && b.value > 0 && (a.lo >= 0 || !signed)) {
      this.push(a), this.push(b);
      this.f.op(rem ? "i32.rem_u" : "i32.div_u");
      return;
    }
    this.#idiv(() => this.push(a), () => this.push(b), signed, rem);
  }

  /** Integer a / b (or a % b) as the other devices: b = 0 gives a (remainder 0); -2^31 / -1 wraps. */
  #idiv(pa: () => void, pb: () => void, signed: boolean, rem: boolean): void {
    const f = this.f;
    const x = f.local("i32");
    const y = f.local("i32");
    pa();
    f.set(x);
    pb();
    f.set(y);
    f.get(y).op("i32.eqz").op("if", "i32");
    if (rem) f.i32(0);
    else f.get(x);
    f.op("else");
    if (signed) {
      f.get(y).i32(-1).op("i32.eq").op("if", "i32");
      if (rem) f.i32(0);
      else f.i32(0).get(x).op("i32.sub");
      f.op("else").get(x, y).op(rem ? "i32.rem_s" : "i32.div_s").op("end");
    } else f.get(x, y).op(rem ? "i32.rem_u" : "i32.div_u");
    f.op("end");
  }

  #cast(a: KExpr, to: DType): void {
    const f = this.f;
    const from = a.dtype;
    this.push(a);
    if (from === to) return;
    if (to === "bool") {
      if (isFloat(from)) f.op("f32.const", 0).op("f32.ne");
      else f.i32(0).op("i32.ne");
      return;
    }
    if (to === "i32" || to === "u32") {
      if (isFloat(from)) f.op(to === "i32" ? "i32.trunc_sat_f32_s" : "i32.trunc_sat_f32_u");
      return; // i32 <-> u32 <-> bool keep their bits
    }
    // to a float
    if (from === "i32") f.op("f32.convert_i32_s");
    else if (from === "u32" || from === "bool") f.op("f32.convert_i32_u");
    this.#round(to);
  }

  #loop(r: KReduce, body: readonly Stmt[]): void {
    const f = this.f;
    const floatSum = r.op === "sum" && isFloat(r.dtype);
    const accType: ValType = floatSum ? "f64" : valType(r.dtype);
    const acc = f.local(accType);
    const bodyType = r.body.dtype;
    let best = -1;
    if (r.op === "sum") f.op(floatSum ? "f64.const" : "i32.const", 0);
    else if (r.op === "max") this.#lowest(r.dtype);
    else {
      f.i32(0);
      best = f.local(valType(bodyType));
      this.#lowest(bodyType);
      f.set(best);
    }
    f.set(acc);
    if (r.size > 0) {
      const v = f.local("i32");
      this.vars.set(r.loop.name, v);
      f.i32(0).set(v);
      f.op("block").op("loop");
      this.stmts(body);
      if (r.op === "sum") {
        f.get(acc);
        this.push(r.body);
        if (floatSum) f.op("f64.promote_f32").op("f64.add");
        else f.op("i32.add");
        f.set(acc);
      } else if (r.op === "max") {
        if (isFloat(r.dtype)) {
          f.get(acc);
          this.push(r.body);
          f.op("f32.max").set(acc);
        } else {
          this.push(r.body);
          f.get(acc);
          this.push(r.body);
          f.get(acc).op(r.dtype === "i32" ? "i32.gt_s" : "i32.gt_u").op("select").set(acc);
        }
      } else {
        // First maximum: take the value when it is greater than the best so far, or at index 0.
        this.push(r.body);
        f.get(best);
        f.op(isFloat(bodyType) ? "f32.gt" : bodyType === "i32" ? "i32.gt_s" : "i32.gt_u");
        f.get(v).op("i32.eqz").op("i32.or").op("if", "void");
        this.push(r.body);
        f.set(best).get(v).set(acc);
        f.op("end");
      }
      f.get(v).i32(1).op("i32.add").op("local.tee", v).i32(r.size).op("i32.lt_s").op("br_if", 0);
      f.op("end").op("end");
    }
    f.get(acc);
    if (floatSum) {
      f.op("f32.demote_f64");
      this.#round(r.dtype);
    }
    f.set(this.#local(r));
  }

  #lowest(d: DType): void {
    if (isFloat(d)) this.f.op("f32.const", -Infinity);
    else this.f.i32(d === "i32" ? -2147483648 : 0);
  }

  /** Stores the value `e` (of the kernel's output dtype) at `out + index·size`; `index` is on the stack. */
  storeOut(outBase: number, pushIndex: () => void, e: KExpr): void {
    const f = this.f;
    const d = this.#kernel.outDtype;
    f.get(outBase);
    pushIndex();
    f.i32(Math.log2(elemBytes(d))).op("i32.shl").op("i32.add");
    this.push(e);
    if (d === "f16") f.op("call", this.#help.toF16()).op("i32.store16");
    else if (d === "f32") f.op("f32.store");
    else f.op("i32.store");
  }
}

/** A module with the shared memory and (when needed) the math imports, plus the `run` function's signature. */
export function kernelModule(kernel: Kernel): {
  mb: ModuleBuilder;
  f: FnBuilder;
  help: Helpers;
  usesMath: boolean;
  out: number;
  bases: number[];
} {
  const mb = new ModuleBuilder();
  mb.importMemory("env", "mem", { min: 1, max: WASM_MAX_PAGES, shared: true });
  const roots = kernel.matmul !== null
    ? [kernel.matmul.a, kernel.matmul.b, kernel.matmul.epilogue]
    : [kernel.body!];
  const usesMath = kNodes(roots).some((n) => n.k === "alu" && (n.op === "sin" || n.op === "cos"));
  const math = usesMath
    ? {
      sin: mb.importFunction("math", "sin", ["f64"], ["f64"]),
      cos: mb.importFunction("math", "cos", ["f64"], ["f64"]),
    }
    : null;
  const help = new Helpers(mb, math);
  // run(start, end, scratch, out, in0, in1, ...)
  const f = new FnBuilder(["i32", "i32", "i32", "i32", ...kernel.inputs.map(() => "i32" as const)], []);
  return { mb, f, help, usesMath, out: 3, bases: kernel.inputs.map((_, i) => 4 + i) };
}
