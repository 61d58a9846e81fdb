/**
 * The JavaScript renderer: prints a kernel's generic body as a host function that the CPU backend runs. Each
 * operation is computed in float64 and its result rounded to its dtype (reductions accumulate in float64 and round
 * once at the end), so a value recomputed inside a fused kernel equals the same value stored by another kernel.
 * Integer arithmetic wraps like 32-bit hardware.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { type Kernel, type KExpr, unhandledAluOp } from "./kexpr.ts";
import { linearize, type Stmt } from "./linearize.ts";
import { lowest } from "../dtype.ts";

function lit(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "Infinity";
  if (value === -Infinity) return "-Infinity";
  return Object.is(value, -0) ? "-0" : String(value);
}

function ref(e: KExpr): string {
  switch (e.k) {
    case "const":
      return lit(
        e.dtype === "f32" ? Math.fround(e.value) : e.dtype === "f16" ? Math.f16round(e.value) : e.value,
      );
    case "var":
      return e.name;
    case "param":
      return `prm[${e.slot}]`;
    case "acc":
      return "acc";
    case "reduce":
      return `acc${e.id}`;
    default:
      return `t${e.id}`;
  }
}

const isInt = (d: DType) => d === "i32" || d === "u32";
const wrap = (d: DType, v: string) => (d === "i32" ? `((${v}) | 0)` : d === "u32" ? `((${v}) >>> 0)` : v);

function castJs(e: KExpr, to: DType): string {
  const a = ref(e);
  if (to === "bool") return `(${a} !== 0 ? 1 : 0)`;
  if (to === "i32") {
    return e.dtype === "u32" ? `(${a} | 0)` : e.dtype === "f32" || e.dtype === "f16" ? `rt.toI32(${a})` : a;
  }
  if (to === "u32") {
    return e.dtype === "i32" ? `(${a} >>> 0)` : e.dtype === "f32" || e.dtype === "f16" ? `rt.toU32(${a})` : a;
  }
  if (to === "f16") return `Math.f16round(${a})`;
  if (to === "f32" && e.dtype === "f16") return a;
  return a;
}

function expr(e: KExpr): string {
  switch (e.k) {
    case "load":
      return `in${e.buf}[${ref(e.index)}]`;
    case "rand":
      return `rt.rand(${ref(e.seed)}, ${ref(e.index)})`;
    case "alu": {
      const [a, b, c] = e.args.map(ref);
      const d = e.dtype;
      const op = e.op;
      switch (op) {
        case "neg":
          return wrap(d, `-${a}`);
        case "recip":
          return `(1 / ${a})`;
        case "exp":
        case "log":
        case "sqrt":
        case "sin":
        case "cos":
        case "tanh":
          return `Math.${e.op}(${a})`;
        case "abs":
          return wrap(d, `Math.abs(${a})`);
        case "cast":
          return castJs(e.args[0], d);
        case "add":
          return wrap(d, `${a} + ${b}`);
        case "mul":
          return isInt(d) ? wrap(d, `Math.imul(${a}, ${b})`) : `(${a} * ${b})`;
        case "div":
          return isInt(d) ? `rt.idiv(${a}, ${b}, ${d === "i32"})` : `(${a} / ${b})`;
        case "mod":
          return isInt(d) ? `(${b} === 0 ? 0 : ${wrap(d, `${a} % ${b}`)})` : `(${a} % ${b})`;
        case "max":
          return `Math.max(${a}, ${b})`;
        case "min":
          return `Math.min(${a}, ${b})`;
        case "pow":
          return `rt.pow(${a}, ${b})`;
        case "lt":
          return `(${a} < ${b} ? 1 : 0)`;
        case "eq":
          return `(${a} === ${b} ? 1 : 0)`;
        case "and":
          return `(${a} & ${b})`;
        case "where":
          return `(${a} ? ${b} : ${c})`;
        default:
          return unhandledAluOp(op, "render_js");
      }
    }
  }
  throw new Error(`render_js: cannot print ${e.k} inline`);
}

/** Rounds a float64 expression to what dtype `d` holds (every float value of a kernel is rounded like this). */
function round(d: DType, v: string): string {
  return d === "f16" ? `Math.f16round(${v})` : `Math.fround(${v})`;
}

function print(stmts: readonly Stmt[], indent: string): string[] {
  const out: string[] = [];
  for (const s of stmts) {
    if (s.kind === "let") {
      const e = s.node;
      const float = (e.dtype === "f32" || e.dtype === "f16") && e.k !== "load";
      out.push(`${indent}const ${ref(e)} = ${float ? round(e.dtype, expr(e)) : expr(e)};`);
      continue;
    }
    const r = s.node;
    const acc = ref(r);
    const v = r.loop.name;
    if (r.op === "argmax") {
      const best = `best${r.id}`;
      out.push(`${indent}let ${acc} = 0;`, `${indent}let ${best} = -Infinity;`);
      out.push(`${indent}for (let ${v} = 0; ${v} < ${r.size}; ${v}++) {`);
      out.push(...print(s.body, indent + "  "));
      const x = ref(r.body);
      // A NaN wins over any number and keeps its place (PyTorch's and NumPy's argmax).
      out.push(
        `${indent}  if (${x} > ${best} || (${x} !== ${x} && ${best} === ${best}) || ${v} === 0) ` +
          `{ ${best} = ${x}; ${acc} = ${v}; }`,
      );
      out.push(`${indent}}`);
      continue;
    }
    // Accumulate in float64; the reduction's value is rounded to its dtype where it is used (see roundTo).
    out.push(`${indent}let ${acc} = ${r.op === "sum" ? "0" : lit(lowest(r.dtype))};`);
    out.push(`${indent}for (let ${v} = 0; ${v} < ${r.size}; ${v}++) {`);
    out.push(...print(s.body, indent + "  "));
    out.push(
      `${indent}  ${acc} = ${
        r.op === "sum" ? wrap(r.dtype, `${acc} + ${ref(r.body)}`) : `Math.max(${acc}, ${ref(r.body)})`
      };`,
    );
    out.push(`${indent}}`);
    if (r.dtype === "f32" || r.dtype === "f16") out.push(`${indent}${acc} = ${round(r.dtype, acc)};`);
  }
  return out;
}

/** Host helpers a rendered kernel calls through its `rt` argument. */
export interface JsRuntime {
  rand(seed: number, i: number): number;
  toI32(x: number): number;
  toU32(x: number): number;
  idiv(a: number, b: number, signed: boolean): number;
  /** C's `pow` (see `powRef` in `ir/reference.ts`). */
  pow(x: number, y: number): number;
}

/**
 * A kernel's parameter values as the CPU backend reads them: each rounded to its slot's dtype (f32 and f16 values
 * as the device would hold them, integers wrapped to 32 bits, booleans as 0/1).
 */
export function hostParams(kernel: Kernel, values: readonly number[] = []): number[] {
  return (kernel.params ?? []).map((d, i) => {
    const v = values[i];
    if (v === undefined) throw new Error(`kernel ${kernel.name}: no value for parameter slot ${i}`);
    switch (d) {
      case "f32":
        return Math.fround(v);
      case "f16":
        return Math.f16round(v);
      case "i32":
        return v | 0;
      case "u32":
        return v >>> 0;
      case "bool":
        return v ? 1 : 0;
    }
  });
}

/**
 * Renders the kernel's generic body as the source of `function(ins, out, rt, prm)` (`prm`: the parameter values,
 * see {@link hostParams}).
 */
export function renderJS(kernel: Kernel): string {
  const body = kernel.body!;
  const total = kernel.outShape.reduce((a, b) => a * b, 1);
  const lines = print(linearize([body]), "    ");
  const store = kernel.outDtype === "bool" ? `(${ref(body)} ? 1 : 0)` : ref(body);
  return [
    ...kernel.inputs.map((_, i) => `const in${i} = ins[${i}];`),
    `for (let gid = 0; gid < ${total}; gid++) {`,
    ...lines,
    `    out[gid] = ${store};`,
    `}`,
  ].join("\n");
}
