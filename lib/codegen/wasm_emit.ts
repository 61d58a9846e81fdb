/**
 * Emitting kernel-IR expressions as WebAssembly: the statement emitter shared by the wasm renderers
 * (`render_wasm.ts`, `render_wasm_matmul.ts`), the helper functions it calls, and the module skeleton every kernel
 * shares (the imported shared memory and `run(start, end, scratch, out, in0, ..., params)`, where `params` is the
 * address of the launch's parameter values: one 4-byte word per slot, an f32 for float slots, an i32 otherwise).
 *
 * Semantics follow the other devices: f32 values are f32 (each operation rounds), f16 values are computed in f32
 * and rounded to f16 after every operation, sums of floats accumulate in f64 and round once, integers wrap at 32
 * bits, integer division by zero gives the dividend (remainder 0), float-to-integer casts truncate and saturate
 * (NaN to 0). `exp` and `log` are computed in f32 arithmetic (range reduction and a minimax polynomial, within 2
 * ulp), `tanh` and `pow` in f64 (far below f32 rounding), `sin` and `cos` call the host's `Math.sin`/`Math.cos`.
 * The SIMD forms of these routines run the same operations per lane, so scalar and vector code agree bit for bit.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import type { Kernel, KExpr, KReduce } from "./kexpr.ts";
import { kNodes, unhandledAluOp } from "./kexpr.ts";
import { linearize, type Stmt } from "./linearize.ts";
import { FnBuilder, ModuleBuilder, type OpName, type ValType } from "./wasm_encode.ts";

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

/** Options of the wasm renderers. */
export interface WasmRenderOptions {
  /** Use relaxed-SIMD fused multiply-add in the matmul micro-kernel. */
  readonly relaxedSimd: boolean;
  /** Compute four outputs at a time where the kernel allows it (default true; tests compare both forms). */
  readonly simd?: boolean;
  /**
   * Sum a matmul's terms in one micro-kernel call per register block where every k fits one block (default true;
   * tests compare both forms, which give the same bits).
   */
  readonly sumTerms?: boolean;
  /**
   * Compute a product of at most 8 rows as its transpose where that takes fewer register blocks (default true;
   * tests compare both forms, which give the same bits).
   */
  readonly swap?: boolean;
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

  /** `exp(x)` in f64 for arguments that end up rounded to f32 (see {@link expBody}). */
  exp(): number {
    return this.#get("exp", (f) => expBody(f, S64, 0), ["f64"], ["f64"]);
  }

  /** Natural logarithm in f64 (see {@link logBody}). */
  log(): number {
    return this.#get("log", (f) => logBody(f, S64, 0), ["f64"], ["f64"]);
  }

  /** tanh in f64 (see {@link tanhBody}). */
  tanh(): number {
    const exp = this.exp();
    return this.#get("tanh", (f) => tanhBody(f, S64, 0, exp), ["f64"], ["f64"]);
  }

  /** `exp` of an f32 in f32 arithmetic (see {@link expf32Body}). */
  expf(): number {
    return this.#get("expf", (f) => expf32Body(f, S32, 0), ["f32"], ["f32"]);
  }

  /** `log` of an f32 in f32 arithmetic (see {@link logf32Body}). */
  logf(): number {
    return this.#get("logf", (f) => logf32Body(f, S32, 0), ["f32"], ["f32"]);
  }

  /** {@link expf} on four lanes (the same operations, so the same bits per lane). */
  vexp(): number {
    return this.#get("vexp", (f) => expf32Body(f, V32, 0), ["v128"], ["v128"]);
  }

  /**
   * Emits {@link vexp}'s operations inline into `f` (with locals of its own), replacing the v128 on the stack by
   * its exponential: no call, so that the CPU overlaps the long dependency chain of one group of four with the
   * work around it.
   */
  inlineVexp(f: FnBuilder): void {
    const x = f.local("v128");
    f.set(x);
    expf32Body(f, V32, x);
  }

  /** Emits {@link vlog}'s operations inline into `f` (see {@link inlineVexp}). */
  inlineVlog(f: FnBuilder): void {
    const x = f.local("v128");
    f.set(x);
    logf32Body(f, V32, x);
  }

  /** {@link logf} on four lanes (the same operations, so the same bits per lane). */
  vlog(): number {
    return this.#get("vlog", (f) => logf32Body(f, V32, 0), ["v128"], ["v128"]);
  }

  /** `tanh` on four f32 lanes, computed per lane exactly as {@link tanh} does. */
  vtanh(): number {
    const exp = this.#get("vexp64", (f) => expBody(f, V64, 0), ["v128"], ["v128"]);
    const core = this.#get("vtanh64", (f) => tanhBody(f, V64, 0, exp), ["v128"], ["v128"]);
    return this.#get("vtanh", (f) => lanesF64(f, core), ["v128"], ["v128"]);
  }

  /** The mixer of `lib/ir/rng.ts` on four i32 lanes. */
  vmix32(): number {
    return this.#get(
      "vmix32",
      (f) => {
        f.get(0).get(0).i32(16).op("i32x4.shr_u").op("v128.xor").set(0);
        f.get(0).i32(0x7feb352d).op("i32x4.splat").op("i32x4.mul").set(0);
        f.get(0).get(0).i32(15).op("i32x4.shr_u").op("v128.xor").set(0);
        f.get(0).i32(0x846ca68b).op("i32x4.splat").op("i32x4.mul").set(0);
        f.get(0).get(0).i32(16).op("i32x4.shr_u").op("v128.xor");
      },
      ["v128"],
      ["v128"],
    );
  }

  /** `randUniform(seed, i)` for four indices (i32x4), as {@link rand} computes each. */
  vrand(): number {
    const mix = this.mix32();
    const vmix = this.vmix32();
    return this.#get(
      "vrand",
      (f) => {
        // k = mix32(seed ^ 0x9e3779b9) is the same for every lane.
        f.get(1).get(0).i32(0x9e3779b9).op("i32.xor").op("call", mix).op("i32x4.splat").op("i32x4.add");
        f.op("call", vmix).get(0).op("i32x4.splat").op("v128.xor").op("call", vmix);
        f.i32(8).op("i32x4.shr_u").op("f32x4.convert_i32x4_s").op("f32.const", 1 / 16777216).op(
          "f32x4.splat",
        );
        f.op("f32x4.mul");
      },
      ["i32", "v128"],
      ["v128"],
    );
  }

  /** `x^y` as C's `pow` gives it, with the special cases of the WGSL helper (`kernels/helpers.wgsl.ts`). */
  pow(): number {
    const exp = this.exp();
    const log = this.log();
    return this.#get(
      "pow",
      (f) => {
        const ax = f.local("f64");
        const r = f.local("f64");
        const whole = f.local("i32");
        const ret = (v: number) => f.op("f64.const", v).op("return");
        // y = ±0 or x = 1: 1, NaN or not.
        f.get(1).op("f64.const", 0).op("f64.eq").get(0).op("f64.const", 1).op("f64.eq").op("i32.or");
        f.op("if", "void");
        ret(1).op("end");
        f.get(0).get(0).op("f64.ne").get(1).get(1).op("f64.ne").op("i32.or").op("if", "void");
        ret(NaN).op("end");
        f.get(0).op("f64.abs").set(ax);
        // y = ±∞: 1 for |x| = 1, else ∞ where |x| > 1 and y > 0 agree, 0 where they differ.
        f.get(1).op("f64.abs").op("f64.const", Infinity).op("f64.eq").op("if", "void");
        f.get(ax).op("f64.const", 1).op("f64.eq").op("if", "void");
        ret(1).op("end");
        f.op("f64.const", Infinity).op("f64.const", 0);
        f.get(ax).op("f64.const", 1).op("f64.gt").get(1).op("f64.const", 0).op("f64.gt").op("i32.eq");
        f.op("select").op("return").op("end");
        f.get(1).op("f64.floor").get(1).op("f64.eq").set(whole);
        // A negative finite base needs an integer exponent.
        f.get(0).op("f64.const", 0).op("f64.lt").get(ax).op("f64.const", Infinity).op("f64.ne").op("i32.and");
        f.get(whole).op("i32.eqz").op("i32.and").op("if", "void");
        ret(NaN).op("end");
        // |x|^y, with |x| = 0 and |x| = ∞ exact.
        f.get(ax).op("f64.const", 0).op("f64.eq").op("if", "void");
        f.op("f64.const", Infinity).op("f64.const", 0).get(1).op("f64.const", 0).op("f64.lt").op("select")
          .set(r);
        f.op("else");
        f.get(ax).op("f64.const", Infinity).op("f64.eq").op("if", "void");
        f.op("f64.const", Infinity).op("f64.const", 0).get(1).op("f64.const", 0).op("f64.gt").op("select")
          .set(r);
        f.op("else");
        f.get(1).get(ax).op("call", log).op("f64.mul").op("call", exp).set(r);
        f.op("end").op("end");
        // An odd integer exponent keeps the sign of the base (of −0 and −∞ too).
        f.get(whole).get(1).op("f64.const", 0.5).op("f64.mul").get(1).op("f64.const", 0.5).op("f64.mul")
          .op("f64.floor").op("f64.ne").op("i32.and");
        f.op("f64.const", 1).get(0).op("f64.copysign").op("f64.const", 0).op("f64.lt").op("i32.and");
        f.op("if", "void").get(r).op("f64.neg").set(r).op("end");
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
  /** Local holding the address of the launch's parameter values. */
  readonly #params: number;
  /** Locals of named variables (`gid`, `b`, `m`, `n`, `k`, loop counters). */
  readonly vars = new Map<string, number>();
  #locals = new Map<number, number>();
  /** Local holding the matmul accumulator inside an epilogue. */
  acc = -1;

  /**
   * Emits into `f` for `kernel`, whose input `i` starts at the byte address held in local `bases[i]` and whose
   * parameter values start at the address held in local `params`.
   */
  constructor(f: FnBuilder, help: Helpers, kernel: Kernel, bases: readonly number[], params: number) {
    this.f = f;
    this.#help = help;
    this.#kernel = kernel;
    this.#bases = bases;
    this.#params = params;
  }

  /** The local of a non-inline value (created on first use). */
  local(e: KExpr): number {
    return this.#local(e);
  }

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
      case "param":
        // One 4-byte word per slot: f32 for float slots (f16 values already rounded), i32 otherwise.
        f.get(this.#params).i32(4 * e.slot).op("i32.add");
        f.op(valType(e.dtype) === "f32" ? "f32.load" : "i32.load");
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
        this.push(e.seed);
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
      case "log":
        push(a);
        f.op("call", e.op === "exp" ? this.#help.expf() : this.#help.logf());
        return this.#round(d);
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
      default:
        return unhandledAluOp(e.op, "render_wasm");
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
  idiv(pa: () => void, pb: () => void, signed: boolean, rem: boolean): void {
    this.#idiv(pa, pb, signed, rem);
  }

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
    if (this.loopHook?.(r, body)) return;
    const f = this.f;
    const acc = this.reduceInit(r);
    if (r.size > 0) {
      const v = f.local("i32");
      this.vars.set(r.loop.name, v);
      f.i32(0).set(v);
      f.op("block").op("loop");
      this.stmts(body);
      this.reduceStep(r, acc, v);
      f.get(v).i32(1).op("i32.add").op("local.tee", v).i32(r.size).op("i32.lt_s").op("br_if", 0);
      f.op("end").op("end");
    }
    this.reduceFinish(r, acc);
  }

  /**
   * Replaces the scalar loop of a reduction (the wasm renderer vectorizes some along their own axis): returns
   * true when it emitted the loop and set the reduction's local.
   */
  loopHook: ((r: KReduce, body: readonly Stmt[]) => boolean) | null = null;

  /**
   * Declares and initialises a reduction's accumulator: f64 for float sums, else the value type (argmax also keeps
   * the best value so far, in `best`).
   */
  reduceInit(r: KReduce): { acc: number; best: number } {
    const f = this.f;
    const floatSum = r.op === "sum" && isFloat(r.dtype);
    const acc = f.local(floatSum ? "f64" : valType(r.dtype));
    let best = -1;
    if (r.op === "sum") f.op(floatSum ? "f64.const" : "i32.const", 0);
    else if (r.op === "max") this.#lowest(r.dtype);
    else {
      f.i32(0);
      best = f.local(valType(r.body.dtype));
      this.#lowest(r.body.dtype);
      f.set(best);
    }
    f.set(acc);
    return { acc, best };
  }

  /** Accumulates the (computed) body value of iteration `v` (a local). */
  reduceStep(r: KReduce, { acc, best }: { acc: number; best: number }, v: number): void {
    const f = this.f;
    const bodyType = r.body.dtype;
    if (r.op === "sum") {
      f.get(acc);
      this.push(r.body);
      if (isFloat(r.dtype)) f.op("f64.promote_f32").op("f64.add");
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
      // First maximum: take the value when it is greater than the best so far, or at index 0. A NaN wins over
      // any number and keeps its place (PyTorch's and NumPy's argmax).
      this.push(r.body);
      f.get(best);
      f.op(isFloat(bodyType) ? "f32.gt" : bodyType === "i32" ? "i32.gt_s" : "i32.gt_u");
      if (isFloat(bodyType)) {
        this.push(r.body);
        this.push(r.body);
        f.op("f32.ne").get(best).get(best).op("f32.eq").op("i32.and").op("i32.or");
      }
      f.get(v).op("i32.eqz").op("i32.or").op("if", "void");
      this.push(r.body);
      f.set(best).get(v).set(acc);
      f.op("end");
    }
  }

  /** Rounds the accumulator to the reduction's dtype and stores it as the reduction's value. */
  reduceFinish(r: KReduce, { acc }: { acc: number }): void {
    const f = this.f;
    f.get(acc);
    if (r.op === "sum" && isFloat(r.dtype)) {
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
  params: number;
} {
  const mb = new ModuleBuilder();
  mb.importMemory("env", "mem", { min: 1, max: WASM_MAX_PAGES, shared: true });
  const roots = kernel.matmul !== null
    ? [...kernel.matmul.terms.flatMap((t) => [t.a, t.b]), kernel.matmul.epilogue]
    : [kernel.body!, ...(kernel.row === undefined ? [] : [kernel.row.body])];
  const usesMath = kNodes(roots).some((n) => n.k === "alu" && (n.op === "sin" || n.op === "cos"));
  const math = usesMath
    ? {
      sin: mb.importFunction("math", "sin", ["f64"], ["f64"]),
      cos: mb.importFunction("math", "cos", ["f64"], ["f64"]),
    }
    : null;
  const help = new Helpers(mb, math);
  // run(start, end, scratch, out, in0, in1, ..., params)
  const f = new FnBuilder(
    ["i32", "i32", "i32", "i32", ...kernel.inputs.map(() => "i32" as const), "i32"],
    [],
  );
  const n = kernel.inputs.length;
  return { mb, f, help, usesMath, out: 3, bases: kernel.inputs.map((_, i) => 4 + i), params: 4 + n };
}

/** The f64 operations a math routine needs, scalar (`f64`) or on two lanes (`f64x2` in a v128). */
interface F64Ops {
  /** Pushes a constant (in every lane). */
  c(f: FnBuilder, x: number): void;
  add: OpName;
  sub: OpName;
  mul: OpName;
  div: OpName;
  /** Replaces x on the stack by x clamped to [lo, hi] (NaN stays NaN). */
  clamp(f: FnBuilder, lo: number, hi: number): void;
  abs: OpName;
  nearest: OpName;
  eq: OpName;
  lt: OpName;
  ge: OpName;
  /** `select`/`bitselect`: (a, b, cond) -> cond ? a : b. */
  select: OpName;
  /** Value type of a local holding one operand. */
  type: ValType;
  /** Local type of a condition. */
  cond: ValType;
  /** Replaces the f64 `n` (an integer in [-1022, 1023]) on the stack by 2^n. */
  pow2(f: FnBuilder): void;
  /** Replaces x on the stack by its exponent field minus 1023, as f64. */
  exponent(f: FnBuilder): void;
  /** Replaces x on the stack by x with its exponent field set to 1023 (the mantissa in [1, 2)). */
  mantissa(f: FnBuilder): void;
  /** Replaces (t, x) on the stack by t with the sign of x (t >= 0). */
  withSign(f: FnBuilder): void;
}

const f64x2Bytes = (x: number) => new Uint8Array(new Float64Array([x, x]).buffer);
const i64x2Bytes = (x: bigint) => new Uint8Array(new BigInt64Array([x, x]).buffer);

/** Scalar f64. */
const S64: F64Ops = {
  c: (f, x) => void f.op("f64.const", x),
  add: "f64.add",
  sub: "f64.sub",
  mul: "f64.mul",
  div: "f64.div",
  clamp: (f, lo, hi) => {
    // x > hi ? hi : x, then x < lo ? lo : x (a NaN x fails both tests and stays).
    const t = f.local("f64");
    f.set(t).op("f64.const", hi).get(t).get(t).op("f64.const", hi).op("f64.gt").op("select").set(t);
    f.op("f64.const", lo).get(t).get(t).op("f64.const", lo).op("f64.lt").op("select");
  },
  abs: "f64.abs",
  nearest: "f64.nearest",
  eq: "f64.eq",
  lt: "f64.lt",
  ge: "f64.ge",
  select: "select",
  type: "f64",
  cond: "i32",
  pow2: (f) => {
    f.op("i32.trunc_sat_f64_s").i32(1023).op("i32.add").op("i64.extend_i32_s").op("i64.const", 52).op(
      "i64.shl",
    )
      .op("f64.reinterpret_i64");
  },
  exponent: (f) => {
    f.op("i64.reinterpret_f64").op("i64.const", 52).op("i64.shr_u").op("i32.wrap_i64").i32(0x7ff).op(
      "i32.and",
    )
      .i32(1023).op("i32.sub").op("f64.convert_i32_s");
  },
  mantissa: (f) => {
    f.op("i64.reinterpret_f64").op("i64.const", 0x000fffffffffffffn).op("i64.and");
    f.op("i64.const", 0x3ff0000000000000n).op("i64.or").op("f64.reinterpret_i64");
  },
  withSign: (f) => void f.op("f64.copysign"),
};

/** Two f64 lanes of a v128 (the same arithmetic, so every lane equals the scalar result bit for bit). */
const V64: F64Ops = {
  c: (f, x) => void f.op("v128.const", f64x2Bytes(x)),
  add: "f64x2.add",
  sub: "f64x2.sub",
  mul: "f64x2.mul",
  div: "f64x2.div",
  clamp: (f, lo, hi) => {
    // pmin(x, hi) = hi < x ? hi : x keeps a NaN x, as does pmax.
    f.op("v128.const", f64x2Bytes(hi)).op("f64x2.pmin").op("v128.const", f64x2Bytes(lo)).op("f64x2.pmax");
  },
  abs: "f64x2.abs",
  nearest: "f64x2.nearest",
  eq: "f64x2.eq",
  lt: "f64x2.lt",
  ge: "f64x2.ge",
  select: "v128.bitselect",
  type: "v128",
  cond: "v128",
  pow2: (f) => {
    f.op("i32x4.trunc_sat_f64x2_s_zero").i32(1023).op("i32x4.splat").op("i32x4.add").op(
      "i64x2.extend_low_i32x4_s",
    );
    f.i32(52).op("i64x2.shl");
  },
  exponent: (f) => {
    // (bits >> 52) & 0x7ff - 1023 per lane: the two i64 lanes' low words gathered into i32 lanes 0 and 1.
    f.i32(52).op("i64x2.shr_u").op("v128.const", i64x2Bytes(0x7ffn)).op("v128.and");
    const t = f.local("v128");
    f.set(t).get(t, t).op(
      "i8x16.shuffle",
      new Uint8Array([0, 1, 2, 3, 8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11]),
    );
    f.i32(1023).op("i32x4.splat").op("i32x4.sub").op("f64x2.convert_low_i32x4_s");
  },
  mantissa: (f) => {
    f.op("v128.const", i64x2Bytes(0x000fffffffffffffn)).op("v128.and");
    f.op("v128.const", i64x2Bytes(0x3ff0000000000000n)).op("v128.or");
  },
  withSign: (f) => {
    f.op("v128.const", i64x2Bytes(-0x8000000000000000n)).op("v128.and").op("v128.or");
  },
};

/**
 * exp(x) for x that ends up rounded to f32: x clamped to [-150, 100] (e^-150 and e^100 are already 0 and +inf in
 * f32; NaN stays NaN), n = round(x / ln 2), r = x - n·ln 2 (|r| <= ln(2)/2; |n| <= 217, so the f64 product errs
 * by < 1e-14), e^r by its Taylor series to r^8 (truncation error < 3e-10 relative, far below f32's 6e-8) in
 * Estrin's form, times 2^n built from the exponent bits. `x` is local `x` of `f`; the result is left on the stack.
 */
function expBody(f: FnBuilder, o: F64Ops, x: number): void {
  const n = f.local(o.type);
  const r = f.local(o.type);
  const r2 = f.local(o.type);
  f.get(x);
  o.clamp(f, -150, 100);
  f.set(x);
  f.get(x);
  o.c(f, Math.LOG2E);
  f.op(o.mul).op(o.nearest).set(n);
  f.get(x).get(n);
  o.c(f, Math.LN2);
  f.op(o.mul).op(o.sub).set(r);
  f.get(r).get(r).op(o.mul).set(r2);
  const c = [1, 1, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040, 1 / 40320];
  const pair = (k: number) => {
    f.get(r);
    o.c(f, c[k + 1]);
    f.op(o.mul);
    o.c(f, c[k]);
    f.op(o.add);
  };
  // (c0 + c1 r) + r²(c2 + c3 r) + r⁴((c4 + c5 r) + r²(c6 + c7 r) + r⁴ c8)
  pair(0);
  pair(2);
  f.get(r2).op(o.mul).op(o.add);
  pair(4);
  pair(6);
  f.get(r2).op(o.mul).op(o.add);
  f.get(r2).get(r2).op(o.mul);
  o.c(f, c[8]);
  f.op(o.mul).op(o.add);
  f.get(r2).get(r2).op(o.mul).op(o.mul).op(o.add);
  f.get(n);
  o.pow2(f);
  f.op(o.mul);
}

/**
 * log(x): x = m·2^e with m in [sqrt(1/2), sqrt(2)) (inputs come from f32, so a positive finite x is a normal f64),
 * log m = 2 atanh(s) with s = (m-1)/(m+1), |s| < 0.172, by its series to s^13 (error < 2e-12); +inf stays +inf,
 * 0 gives -inf, a negative x or NaN gives NaN (selected without branches).
 */
function logBody(f: FnBuilder, o: F64Ops, x: number): void {
  const e = f.local(o.type);
  const m = f.local(o.type);
  const s = f.local(o.type);
  const s2 = f.local(o.type);
  const big = f.local(o.cond);
  f.get(x);
  o.exponent(f);
  f.set(e);
  f.get(x);
  o.mantissa(f);
  f.set(m);
  // At or above sqrt(2): halve m and count one more power of two.
  f.get(m);
  o.c(f, Math.SQRT2);
  f.op(o.ge).set(big);
  f.get(m);
  o.c(f, 0.5);
  f.op(o.mul).get(m).get(big).op(o.select).set(m);
  f.get(e);
  o.c(f, 1);
  f.op(o.add).get(e).get(big).op(o.select).set(e);
  f.get(m);
  o.c(f, 1);
  f.op(o.sub).get(m);
  o.c(f, 1);
  f.op(o.add).op(o.div).set(s);
  f.get(s).get(s).op(o.mul).set(s2);
  o.c(f, 1 / 13);
  for (let k = 11; k >= 1; k -= 2) {
    f.get(s2).op(o.mul);
    o.c(f, 1 / k);
    f.op(o.add);
  }
  f.get(s).op(o.mul);
  o.c(f, 2);
  f.op(o.mul).get(e);
  o.c(f, Math.LN2);
  f.op(o.mul).op(o.add).set(s);
  // x = +inf -> +inf; x = 0 -> -inf; x < 0 or NaN -> NaN.
  f.get(x).get(s).get(x);
  o.c(f, Infinity);
  f.op(o.eq).op(o.select).set(s);
  o.c(f, -Infinity);
  f.get(s).get(x);
  o.c(f, 0);
  f.op(o.eq).op(o.select).set(s);
  f.get(s);
  o.c(f, NaN);
  f.get(x);
  o.c(f, 0);
  f.op(o.ge).op(o.select);
}

/** tanh(x) = sign(x)·(1 - e)/(1 + e) with e = exp(-2|x|) (NaN stays NaN, ±inf gives ±1), and x itself below 2^-12. */
function tanhBody(f: FnBuilder, o: F64Ops, x: number, exp: number): void {
  const ax = f.local(o.type);
  const e = f.local(o.type);
  f.get(x).op(o.abs).set(ax);
  o.c(f, -2);
  f.get(ax).op(o.mul).op("call", exp).set(e);
  o.c(f, 1);
  f.get(e).op(o.sub);
  o.c(f, 1);
  f.get(e).op(o.add).op(o.div).get(x);
  o.withSign(f);
  // Near 0 the formula loses digits; tanh(x) = x to within 2^-25 relative there.
  const t = f.local(o.type);
  const small = f.local(o.cond);
  f.set(t).get(ax);
  o.c(f, 2 ** -12);
  f.op(o.lt).set(small);
  f.get(x).get(t).get(small).op(o.select);
}

/** Applies the f64x2 routine `core` to the four f32 lanes of local 0 (two halves, rounded back to f32). */
function lanesF64(f: FnBuilder, core: number): void {
  const lo = f.local("v128");
  f.get(0).op("f64x2.promote_low_f32x4").op("call", core).op("f32x4.demote_f64x2_zero").set(lo);
  f.get(0, 0).op(
    "i8x16.shuffle",
    new Uint8Array([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]),
  );
  f.op("f64x2.promote_low_f32x4").op("call", core).op("f32x4.demote_f64x2_zero");
  const hi = f.local("v128");
  f.set(hi).get(lo, hi).op(
    "i8x16.shuffle",
    new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]),
  );
}

/** The f32 operations of {@link expf32Body} and {@link logf32Body}: scalar `f32`/`i32`, or four lanes in a v128. */
interface F32Ops {
  /** Pushes an f32 constant (in every lane). */
  c(f: FnBuilder, x: number): void;
  /** Pushes an i32 constant (in every lane). */
  ci(f: FnBuilder, x: number): void;
  add: OpName;
  sub: OpName;
  mul: OpName;
  nearest: OpName;
  lt: OpName;
  eq: OpName;
  ge: OpName;
  iadd: OpName;
  isub: OpName;
  ishl: OpName;
  ishrs: OpName;
  ishru: OpName;
  iand: OpName;
  ior: OpName;
  select: OpName;
  /** f32 to i32 (truncating, saturating). */
  trunc: OpName;
  /** i32 to f32. */
  convert: OpName;
  /** Reinterpret f32 bits as i32 and back (nothing to do on a v128). */
  bits(f: FnBuilder): void;
  float(f: FnBuilder): void;
  /** Replaces x by x clamped to [lo, hi], keeping NaN. */
  clamp(f: FnBuilder, lo: number, hi: number): void;
  type: ValType;
  /** Local type of a condition. */
  cond: ValType;
  /** Converts a condition into an i32 value of 1 (true) or 0 (false) per lane. */
  condToInt(f: FnBuilder): void;
  /** Replaces the value on the stack by +0 where the condition in local `cond` holds. */
  zeroWhere(f: FnBuilder, cond: number): void;
}

const f32x4Bytes = (x: number) => new Uint8Array(new Float32Array([x, x, x, x]).buffer);

const S32: F32Ops = {
  c: (f, x) => void f.op("f32.const", x),
  ci: (f, x) => void f.i32(x),
  add: "f32.add",
  sub: "f32.sub",
  mul: "f32.mul",
  nearest: "f32.nearest",
  lt: "f32.lt",
  eq: "f32.eq",
  ge: "f32.ge",
  iadd: "i32.add",
  isub: "i32.sub",
  ishl: "i32.shl",
  ishrs: "i32.shr_s",
  ishru: "i32.shr_u",
  iand: "i32.and",
  ior: "i32.or",
  select: "select",
  trunc: "i32.trunc_sat_f32_s",
  convert: "f32.convert_i32_s",
  bits: (f) => void f.op("i32.reinterpret_f32"),
  float: (f) => void f.op("f32.reinterpret_i32"),
  clamp: (f, lo, hi) => {
    const t = f.local("f32");
    f.set(t).op("f32.const", hi).get(t).get(t).op("f32.const", hi).op("f32.gt").op("select").set(t);
    f.op("f32.const", lo).get(t).get(t).op("f32.const", lo).op("f32.lt").op("select");
  },
  type: "f32",
  cond: "i32",
  condToInt: () => {},
  zeroWhere: (f, cond) => {
    const t = f.local("f32");
    f.set(t).op("f32.const", 0).get(t).get(cond).op("select");
  },
};

const V32: F32Ops = {
  c: (f, x) => void f.op("v128.const", f32x4Bytes(x)),
  ci: (f, x) => void f.op("v128.const", new Uint8Array(new Int32Array([x, x, x, x]).buffer)),
  add: "f32x4.add",
  sub: "f32x4.sub",
  mul: "f32x4.mul",
  nearest: "f32x4.nearest",
  lt: "f32x4.lt",
  eq: "f32x4.eq",
  ge: "f32x4.ge",
  iadd: "i32x4.add",
  isub: "i32x4.sub",
  ishl: "i32x4.shl",
  ishrs: "i32x4.shr_s",
  ishru: "i32x4.shr_u",
  iand: "v128.and",
  ior: "v128.or",
  select: "v128.bitselect",
  trunc: "i32x4.trunc_sat_f32x4_s",
  convert: "f32x4.convert_i32x4_s",
  bits: () => {},
  float: () => {},
  clamp: (f, lo, hi) => {
    f.op("v128.const", f32x4Bytes(hi)).op("f32x4.pmin").op("v128.const", f32x4Bytes(lo)).op("f32x4.pmax");
  },
  type: "v128",
  cond: "v128",
  condToInt: (f) => void f.op("i32x4.neg"),
  zeroWhere: (f, cond) => void f.get(cond).op("v128.andnot"),
};

/** Shift counts of v128 shifts are scalar i32; of scalar shifts, i32 too. */
function shiftBy(f: FnBuilder, n: number): void {
  f.i32(n);
}

/**
 * exp(x) in f32 arithmetic (the Cephes `expf` scheme): x clamped to [-87, 89] (e^89 is +inf in f32; NaN stays
 * NaN), n = round(x·log2 e) (to nearest even, by adding and subtracting 1.5·2^23, whose bits then also give n as an
 * integer), r = x - n·C1 - n·C2 with C1 = 0.693359375 (few bits: n·C1 is exact) and C2 = ln 2 - C1, e^r by a
 * degree-6 minimax polynomial, times 2^n applied as two factors 2^⌊n/2⌋·2^(n-⌊n/2⌋) (each a normal f32). Within 2
 * ulp of the exact value. Below x = -87, where e^x < 1.7e-38 nears f32's subnormal range, the result is 0:
 * subnormal arithmetic costs a hundred cycles per operation on x86 and would dominate softmax rows with masked
 * (-1e9) scores. Leaves the result on the stack.
 */
function expf32Body(f: FnBuilder, o: F32Ops, x: number): void {
  const n = f.local(o.type);
  const r = f.local(o.type);
  const xc = f.local(o.type);
  const tiny = f.local(o.cond);
  const ni = f.local(o.type === "f32" ? "i32" : "v128");
  const h = f.local(o.type === "f32" ? "i32" : "v128");
  const magic = 12582912; // 1.5·2^23: adding it rounds |y| < 2^22 to an integer, held in the low mantissa bits
  f.get(x);
  o.c(f, -87);
  f.op(o.lt).set(tiny);
  f.get(x);
  o.clamp(f, -87, 89);
  f.set(xc);
  x = xc;
  f.get(x);
  o.c(f, Math.LOG2E);
  f.op(o.mul);
  o.c(f, magic);
  f.op(o.add).set(n);
  // ni = bits(n) - bits(magic), then n = n - magic (exact)
  f.get(n);
  o.bits(f);
  o.ci(f, 0x4b400000);
  f.op(o.isub).set(ni);
  f.get(n);
  o.c(f, magic);
  f.op(o.sub).set(n);
  f.get(x).get(n);
  o.c(f, 0.693359375);
  f.op(o.mul).op(o.sub).get(n);
  o.c(f, -2.12194440e-4);
  f.op(o.mul).op(o.sub).set(r);
  // p(r) = ((((c0 r + c1) r + c2) r + c3) r + c4) r + c5, then e^r ≈ p·r² + r + 1.
  const c = [
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
  ];
  o.c(f, c[0]);
  for (let k = 1; k < c.length; k++) {
    f.get(r).op(o.mul);
    o.c(f, c[k]);
    f.op(o.add);
  }
  f.get(r).op(o.mul).get(r).op(o.mul).get(r).op(o.add);
  o.c(f, 1);
  f.op(o.add);
  f.get(ni);
  shiftBy(f, 1);
  f.op(o.ishrs).set(h);
  // · 2^h · 2^(n-h)
  f.get(h);
  o.ci(f, 127);
  f.op(o.iadd);
  shiftBy(f, 23);
  f.op(o.ishl);
  o.float(f);
  f.op(o.mul).get(ni).get(h).op(o.isub);
  o.ci(f, 127);
  f.op(o.iadd);
  shiftBy(f, 23);
  f.op(o.ishl);
  o.float(f);
  f.op(o.mul);
  // 0 below -87 (an and-not of the lane mask on four lanes).
  o.zeroWhere(f, tiny);
}

/**
 * log(x) in f32 arithmetic (the Cephes `logf` scheme): x = m·2^e with m in [sqrt(1/2), sqrt(2)) (subnormal x
 * scaled by 2^23 first), log(1 + t) for t = m - 1 by a degree-8 minimax polynomial with ln 2 split in two parts;
 * +inf stays +inf, 0 gives -inf, a negative x or NaN gives NaN. Within 2 ulp. Leaves the result on the stack.
 */
function logf32Body(f: FnBuilder, o: F32Ops, x: number): void {
  const it = o.type === "f32" ? "i32" : "v128";
  const sub = f.local(o.cond);
  const xs = f.local(o.type);
  const b = f.local(it);
  const e = f.local(o.type);
  const m = f.local(o.type);
  const z = f.local(o.type);
  const y = f.local(o.type);
  const small = f.local(o.cond);
  // Subnormal x: scale into the normal range and take 23 off the exponent.
  f.get(x);
  o.c(f, 1.1754943508222875e-38);
  f.op(o.lt).set(sub);
  f.get(x);
  o.c(f, 8388608);
  f.op(o.mul).get(x).get(sub).op(o.select).set(xs);
  f.get(xs);
  o.bits(f);
  f.set(b);
  // e = exponent field - 126 (so that m is in [0.5, 1)), minus 23 for a scaled subnormal.
  f.get(b);
  shiftBy(f, 23);
  f.op(o.ishru);
  o.ci(f, 0xff);
  f.op(o.iand);
  o.ci(f, 126);
  f.op(o.isub);
  f.get(sub);
  o.condToInt(f);
  o.ci(f, 23);
  f.op(o.type === "f32" ? "i32.mul" : "i32x4.mul").op(o.isub).op(o.convert).set(e);
  f.get(b);
  o.ci(f, 0x007fffff);
  f.op(o.iand);
  o.ci(f, 0x3f000000);
  f.op(o.ior);
  o.float(f);
  f.set(m);
  // m < sqrt(1/2): t = 2m - 1 and one power of two less; else t = m - 1.
  f.get(m);
  o.c(f, Math.SQRT1_2);
  f.op(o.lt).set(small);
  f.get(m).get(m).op(o.add).get(m).get(small).op(o.select);
  o.c(f, 1);
  f.op(o.sub).set(m);
  f.get(e);
  o.c(f, 1);
  f.op(o.sub).get(e).get(small).op(o.select).set(e);
  f.get(m).get(m).op(o.mul).set(z);
  const c = [
    7.0376836292e-2,
    -1.1514610310e-1,
    1.1676998740e-1,
    -1.2420140846e-1,
    1.4249322787e-1,
    -1.6668057665e-1,
    2.0000714765e-1,
    -2.4999993993e-1,
    3.3333331174e-1,
  ];
  o.c(f, c[0]);
  for (let k = 1; k < c.length; k++) {
    f.get(m).op(o.mul);
    o.c(f, c[k]);
    f.op(o.add);
  }
  f.get(m).op(o.mul).get(z).op(o.mul).set(y);
  // y + e·C2 - z/2, then t + y + e·C1 (C1 + C2 = ln 2).
  f.get(y).get(e);
  o.c(f, -2.12194440e-4);
  f.op(o.mul).op(o.add).get(z);
  o.c(f, 0.5);
  f.op(o.mul).op(o.sub).get(m).op(o.add).get(e);
  o.c(f, 0.693359375);
  f.op(o.mul).op(o.add).set(y);
  // x = +inf -> +inf; x = 0 -> -inf; x < 0 or NaN -> NaN.
  f.get(x).get(y).get(x);
  o.c(f, Infinity);
  f.op(o.eq).op(o.select).set(y);
  o.c(f, -Infinity);
  f.get(y).get(x);
  o.c(f, 0);
  f.op(o.eq).op(o.select).set(y);
  f.get(y);
  o.c(f, NaN);
  f.get(x);
  o.c(f, 0);
  f.op(o.ge).op(o.select);
}
