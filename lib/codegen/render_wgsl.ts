/**
 * The WGSL renderer: prints a linearized kernel as a compute shader. Loop lengths are already within the loop
 * budget (see `split_loops.ts`); the verifier checks it before rendering.
 *
 * NaN and infinities: WGSL lets a shader compiler assume that float values are finite, and lavapipe (Mesa's NIR)
 * uses that to simplify `x * 0.0` and `x - x` to `0.0`, so a NaN would vanish on WebGPU while the CPU backend keeps
 * it. The renderer writes these two forms (a product with a literal zero, a value minus itself) with integer
 * operations on the operand's bits, which no compiler may simplify, so they give NaN for a NaN or infinite operand
 * on every device; `max` and `min`, which WGSL leaves to the implementation for a NaN operand, test their operands'
 * bits too. Other algebraic identities a driver might apply to finite-looking code cannot be ruled out from
 * WGSL; what must see every NaN therefore does not rely on float arithmetic cancelling: the non-finite checks of
 * weights test exponent bits (`kernels/non_finite.wgsl.ts`), and the trainer's guard reads back the loss and the
 * gradient norm, a square root of a sum of squares, which no identity removes.
 *
 * @module
 */
import { type DType, DTYPE_INFO, lowest } from "../dtype.ts";
import {
  dependsOn,
  type Kernel,
  type KernelRow,
  type KExpr,
  kNodes,
  linearForm,
  matmulDepth,
  type MatmulSpec,
  type MatmulTerm,
  unhandledAluOp,
} from "./kexpr.ts";
import { linearize, type Stmt } from "./linearize.ts";
import {
  type MatmulTile,
  renderMatmul,
  renderMatmulShared,
  renderMatmulSubgroup,
  type ShuffleMode,
  type VecOperand,
} from "../../kernels/matmul.wgsl.ts";
import { type MatmulPolicy, SOFTWARE_POLICY } from "./matmul_policy.ts";
import { WGSL_HELPERS } from "../../kernels/helpers.wgsl.ts";

/** Threads per workgroup of generic kernels. */
export const WORKGROUP = 64;

/** The WGSL type of a value of dtype `d`. */
export function wgslType(d: DType): string {
  return d === "bool" ? "bool" : d;
}

/** The WGSL element type of a storage buffer of dtype `d` (bool is stored as u32). */
export function storageType(d: DType): string {
  return d === "bool" ? "u32" : d;
}

/** A WGSL literal of dtype `d`. */
export function literal(value: number, d: DType): string {
  switch (d) {
    case "bool":
      return value ? "true" : "false";
    case "i32":
      return `i32(${value | 0})`;
    case "u32":
      return `${value >>> 0}u`;
    default: {
      const v = d === "f16" ? Math.f16round(value) : Math.fround(value);
      if (Number.isNaN(v)) {
        return d === "f16" ? "f16(bitcast<f32>(0x7fc00000u))" : "bitcast<f32>(0x7fc00000u)";
      }
      if (v === Infinity) return d === "f16" ? "f16(bitcast<f32>(0x7f800000u))" : "bitcast<f32>(0x7f800000u)";
      if (v === -Infinity) {
        return d === "f16" ? "f16(bitcast<f32>(0xff800000u))" : "bitcast<f32>(0xff800000u)";
      }
      return `${d}(${Object.is(v, -0) ? "-0.0" : String(v)})`;
    }
  }
}

/** Name of the uniform holding a kernel's parameter slots (as `array<vec4<u32>>`). */
export const PARAMS_VAR = "P";

/** The read of parameter slot `slot` of dtype `d` from the parameter uniform. */
function paramRef(slot: number, d: DType): string {
  const word = `${PARAMS_VAR}.v[${slot >> 2}].${"xyzw"[slot & 3]}`;
  switch (d) {
    case "u32":
      return word;
    case "bool":
      return `(${word} != 0u)`;
    case "f16":
      return `f16(bitcast<f32>(${word}))`;
    default:
      return `bitcast<${d}>(${word})`;
  }
}

/** Name under which a value is referenced. */
export function ref(e: KExpr): string {
  switch (e.k) {
    case "const":
      return literal(e.value, e.dtype);
    case "param":
      return paramRef(e.slot, e.dtype);
    case "var":
      return e.name;
    case "acc":
      return "acc";
    case "reduce":
      return `acc${e.id}`;
    default:
      return `t${e.id}`;
  }
}

function castExpr(e: KExpr, to: DType): string {
  const a = ref(e);
  if (e.dtype === to) return a;
  if (e.dtype === "bool") return `select(${literal(0, to)}, ${literal(1, to)}, ${a})`;
  if (to === "bool") {
    if (e.dtype !== "f32" && e.dtype !== "f16") return `(${a} != ${literal(0, e.dtype)})`;
    // By the bits, as the other backends see it: NaN is true (a compiler assuming finite floats may fold `NaN != 0`).
    return `((bitcast<u32>(${e.dtype === "f16" ? `f32(${a})` : a}) & 0x7fffffffu) != 0u)`;
  }
  if ((e.dtype === "f32" || e.dtype === "f16") && (to === "i32" || to === "u32")) {
    // WGSL clamps out-of-range values to the largest f32 below 2^31 (2^32) and leaves NaN unspecified; the other
    // backends and the reference truncate, saturate at the type's maximum and give 0 for NaN.
    const v = e.dtype === "f16" ? `f32(${a})` : a;
    const [limit, max] = to === "i32" ? ["2147483648.0", "2147483647"] : ["4294967296.0", "4294967295u"];
    return `select(select(${wgslType(to)}(${v}), ${max}, ${v} >= ${limit}), ${literal(0, to)}, ${
      nanBits(a, e.dtype)
    })`;
  }
  return `${wgslType(to)}(${a})`;
}

/**
 * `max`/`min` of `a` and `b`, NaN when either is (as on the other backends): WGSL leaves a NaN operand to the
 * implementation, and lavapipe returned the other one. The test reads bits, which no compiler may simplify.
 */
function extremum(fn: "max" | "min", a: string, b: string, d: DType): string {
  if (d !== "f32" && d !== "f16") return `${fn}(${a}, ${b})`;
  return `select(${fn}(${a}, ${b}), ${literal(NaN, d)}, ${nanBits(a, d)} || ${nanBits(b, d)})`;
}

/** WGSL (a bool) testing whether the float `v` of dtype `d` is NaN by its bits (integer operations only). */
function nanBits(v: string, d: DType): string {
  return `((bitcast<u32>(${d === "f16" ? `f32(${v})` : v}) & 0x7fffffffu) > 0x7f800000u)`;
}

/** Whether `e` is a float literal zero (either sign). */
function isFloatZero(e: KExpr): e is KExpr & { k: "const"; value: number } {
  return e.k === "const" && (e.dtype === "f32" || e.dtype === "f16") && e.value === 0;
}

/** WGSL (a bool) testing whether the f32 value `v` is NaN or ±Inf by its exponent bits (integer operations only). */
function nonFiniteBits(v: string): string {
  return `((bitcast<u32>(${v}) & 0x7f800000u) == 0x7f800000u)`;
}

/** An f32 result `bits` (a u32 expression) converted to dtype `d`. */
function fromBits(bits: string, d: DType): string {
  return d === "f16" ? `f16(bitcast<f32>(${bits}))` : `bitcast<f32>(${bits})`;
}

/**
 * `x * ±0` as IEEE defines it (NaN for a NaN or infinite x, else a zero with the product's sign), written with
 * integer operations on x's bits: WGSL lets a shader compiler assume floats are finite, and lavapipe folds a float
 * `x * 0.0` to `0.0`, which would hide a NaN from every check downstream.
 */
function timesLiteralZero(e: KExpr & { k: "alu" }): string | undefined {
  const [a, b] = e.args;
  const zero = isFloatZero(b) ? b : isFloatZero(a) ? a : undefined;
  if (zero === undefined) return undefined;
  const x = zero === b ? a : b;
  const v = e.dtype === "f16" ? `f32(${ref(x)})` : ref(x);
  const sign = Object.is(zero.value, -0) ? " ^ 0x80000000u" : "";
  return fromBits(
    `select((bitcast<u32>(${v}) & 0x80000000u)${sign}, 0x7fc00000u, ${nonFiniteBits(v)})`,
    e.dtype,
  );
}

/** `x + (−x)` (a subtraction of a value from itself): NaN for a NaN or infinite x, else +0 (see timesLiteralZero). */
function subtractsItself(e: KExpr & { k: "alu" }): string | undefined {
  if (e.dtype !== "f32" && e.dtype !== "f16") return undefined;
  const [a, b] = e.args;
  const negOf = (n: KExpr, of: KExpr) => n.k === "alu" && n.op === "neg" && n.args[0] === of;
  const x = negOf(b, a) ? a : negOf(a, b) ? b : undefined;
  if (x === undefined) return undefined;
  const v = e.dtype === "f16" ? `f32(${ref(x)})` : ref(x);
  return fromBits(`select(0u, 0x7fc00000u, ${nonFiniteBits(v)})`, e.dtype);
}

/** The right-hand side of one value. */
function expr(e: KExpr): string {
  switch (e.k) {
    case "load": {
      const v = `in${e.buf}[${ref(e.index)}]`;
      return e.dtype === "bool" ? `(${v} != 0u)` : v;
    }
    case "rand":
      return `rand_(${ref(e.seed)}, u32(${ref(e.index)}))`;
    case "alu": {
      const [a, b, c] = e.args.map(ref);
      const op = e.op;
      switch (op) {
        case "neg":
          // WGSL has no negation of u32: 0 − x wraps as the other devices' negation does.
          return e.dtype === "u32" ? `(0u - ${a})` : `(-${a})`;
        case "recip":
          return `(${literal(1, e.dtype)} / ${a})`;
        case "exp":
        case "sqrt":
        case "sin":
        case "cos":
        case "abs":
          return `${e.op}(${a})`;
        case "tanh":
          return `${wgslType(e.dtype)}(tanh_(f32(${a})))`;
        case "log":
          return `${wgslType(e.dtype)}(log_(f32(${a})))`;
        case "cast":
          return castExpr(e.args[0], e.dtype);
        case "add":
          return subtractsItself(e) ?? `(${a} + ${b})`;
        case "mul":
          return timesLiteralZero(e) ?? `(${a} * ${b})`;
        case "div":
          return `(${a} / ${b})`;
        case "mod":
          return `(${a} % ${b})`;
        case "max":
        case "min":
          return extremum(op, a, b, e.dtype);
        case "pow":
          return `${wgslType(e.dtype)}(pow_(f32(${a}), f32(${b})))`;
        case "lt":
          return `(${a} < ${b})`;
        case "eq":
          return `(${a} == ${b})`;
        case "and":
          return `(${a} && ${b})`;
        case "where":
          return `select(${c}, ${b}, ${a})`;
        default:
          return unhandledAluOp(op, "render_wgsl");
      }
    }
  }
  throw new Error(`render: cannot print ${e.k} inline`);
}

/** Prints statements (indented). */
export function printStmts(stmts: readonly Stmt[], indent: string): string[] {
  const out: string[] = [];
  for (const s of stmts) {
    if (s.kind === "let") {
      out.push(`${indent}let ${ref(s.node)} = ${expr(s.node)};`);
      continue;
    }
    const r = s.node;
    const acc = ref(r);
    const v = r.loop.name;
    if (r.op === "argmax") {
      const best = `best${r.id}`;
      out.push(`${indent}var ${acc}: i32 = 0;`);
      out.push(
        `${indent}var ${best}: ${wgslType(r.body.dtype)} = ${literal(lowest(r.body.dtype), r.body.dtype)};`,
      );
      out.push(`${indent}for (var ${v}: i32 = 0; ${v} < ${r.size}; ${v} = ${v} + 1) {`);
      out.push(...printStmts(s.body, indent + "  "));
      const x = ref(r.body);
      // A NaN wins over any number and keeps its place (PyTorch's and NumPy's argmax): tested by bits.
      const nan = DTYPE_INFO[r.body.dtype].isFloat
        ? ` || (${nanBits(x, r.body.dtype)} && !${nanBits(best, r.body.dtype)})`
        : "";
      out.push(`${indent}  if (${x} > ${best}${nan} || ${v} == 0) { ${best} = ${x}; ${acc} = ${v}; }`);
      out.push(`${indent}}`);
      continue;
    }
    const init = literal(r.op === "sum" ? 0 : lowest(r.dtype), r.dtype);
    out.push(`${indent}var ${acc}: ${wgslType(r.dtype)} = ${init};`);
    const update = r.op === "sum"
      ? `${acc} = ${acc} + ${ref(r.body)};`
      : `${acc} = ${extremum("max", acc, ref(r.body), r.dtype)};`;
    out.push(`${indent}for (var ${v}: i32 = 0; ${v} < ${r.size}; ${v} = ${v} + 1) {`);
    out.push(...printStmts(s.body, indent + "  "));
    out.push(`${indent}  ${update}`);
    out.push(`${indent}}`);
  }
  return out;
}

/** The statements and final expression computing `value`, for splicing into a function body. */
export function renderValue(value: KExpr, indent: string): { lines: string[]; result: string } {
  const stmts = linearize([value]);
  return { lines: printStmts(stmts, indent), result: ref(value) };
}

/** Converts a value of dtype `d` to its storage representation. */
export function toStorage(v: string, d: DType): string {
  return d === "bool" ? `select(0u, 1u, ${v})` : v;
}

/** Number of `vec4<u32>` in a kernel's parameter uniform (0: the kernel has no parameter binding). */
export function paramVec4s(kernel: Kernel): number {
  return Math.ceil((kernel.params?.length ?? 0) / 4);
}

/**
 * Binding declarations: output at binding 0, inputs from binding 1 (`vec4Inputs`: read as `vec4<f32>`), and the
 * parameter uniform after the inputs when the kernel has parameter slots.
 */
export function bindings(kernel: Kernel, vec4Inputs: ReadonlySet<string> = new Set()): string[] {
  const out = [
    `@group(0) @binding(0) var<storage, read_write> out0: array<${storageType(kernel.outDtype)}>;`,
  ];
  kernel.inputs.forEach((inp, i) => {
    const type = vec4Inputs.has(`in${i}`) ? `vec4<${storageType(inp.dtype)}>` : storageType(inp.dtype);
    out.push(`@group(0) @binding(${i + 1}) var<storage, read> in${i}: array<${type}>;`);
  });
  const vecs = paramVec4s(kernel);
  if (vecs > 0) {
    out.push(`struct Params_ { v: array<vec4<u32>, ${vecs}> }`);
    out.push(`@group(0) @binding(${kernel.inputs.length + 1}) var<uniform> ${PARAMS_VAR}: Params_;`);
  }
  return out;
}

/** Whether a kernel needs `enable f16;`, and the helper functions its nodes call. */
function needs(kernel: Kernel, roots: readonly KExpr[]): { f16: boolean; helpers: string[] } {
  const nodes = kNodes(roots);
  const f16 = kernel.outDtype === "f16" || kernel.inputs.some((i) => i.dtype === "f16") ||
    nodes.some((n) => n.dtype === "f16");
  const helpers: string[] = [];
  const need = (op: string) => nodes.some((n) => n.k === "alu" && n.op === op);
  if (need("tanh")) helpers.push(WGSL_HELPERS.tanh);
  if (need("log")) helpers.push(WGSL_HELPERS.log);
  if (need("pow")) helpers.push(WGSL_HELPERS.pow);
  if (nodes.some((n) => n.k === "rand")) helpers.push(WGSL_HELPERS.rand);
  return { f16, helpers };
}

/** Helper functions needed by the nodes of a kernel, plus `enable f16;` when needed. */
export function preamble(kernel: Kernel, roots: readonly KExpr[]): string[] {
  const { f16, helpers } = needs(kernel, roots);
  return [...(f16 ? ["enable f16;"] : []), ...helpers];
}

/** The WGSL array element type of each binding of a kernel: the output's, then each input's. */
function bindingTypes(kernel: Kernel, vec4Inputs: ReadonlySet<string>): string[] {
  return [
    storageType(kernel.outDtype),
    ...kernel.inputs.map((inp, i) =>
      vec4Inputs.has(`in${i}`) ? `vec4<${storageType(inp.dtype)}>` : storageType(inp.dtype)
    ),
  ];
}

/** Workgroups one dispatch may launch along each dimension (WebGPU's default `maxComputeWorkgroupsPerDimension`). */
export const MAX_GROUPS_PER_DIM = 65535;

/** Dispatch grid for `groups` workgroups: x up to the per-dimension limit, the rest in y. */
export function grid(groups: number, maxPerDim = MAX_GROUPS_PER_DIM): [number, number, number] {
  if (groups <= maxPerDim) return [Math.max(groups, 1), 1, 1];
  // Split evenly so that at most gy - 1 groups are launched in vain (not up to a whole row of 65,535).
  const gy = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / gy), gy, 1];
}

/**
 * A generated kernel's shader in pieces, so that several kernels can run in one shader (`render_merged.ts`): the
 * module-scope names a piece uses are the kernel's own (`out0`, `in<i>`, the parameter uniform `P`, and its
 * functions), and the entry point's body reads only `g`, the global invocation id.
 */
export interface KernelPieces {
  /** Whether the shader needs `enable f16;`. */
  readonly f16: boolean;
  /** Helper functions (shared by every kernel that calls them). */
  readonly helpers: readonly string[];
  /** WGSL element type of each binding: the output's (`out0`), then each input's (`in<i>`). */
  readonly bindingTypes: readonly string[];
  /** Size of the parameter uniform in `vec4<u32>` (0: none). */
  readonly paramVec4s: number;
  /** Module-scope functions of the kernel (a matmul's loads and epilogue). */
  readonly functions: readonly string[];
  /** Lines of the entry point's body. */
  readonly body: readonly string[];
  /** Workgroup size. */
  readonly workgroup: readonly [number, number, number];
  /** Whether the kernel runs loops (a kernel sharing a launch costs the others' workgroups part of them). */
  readonly loops: boolean;
}

/** A rendered shader with its dispatch size (and its pieces, for kernels that may share a shader). */
export interface RenderedKernel {
  /** The WGSL source. */
  readonly source: string;
  /** Workgroup counts. */
  readonly dispatch: [number, number, number];
  /** The shader in pieces; absent for kernels that must run alone (workgroup memory and barriers). */
  readonly pieces?: KernelPieces;
}

/**
 * Renders a kernel to WGSL. A kernel with a matmul spec goes through the template with the blocking `tile`, or the
 * one `policy` (default: the software policy, see `matmul_policy.ts`) chooses for its shape; `vec4: false` makes
 * the register template read every operand with scalar loads (the baseline of benchmarks and tests); `shuffle`
 * picks how a subgroup tile exchanges values (default `"native"`; `"emulated"` checks it without subgroups).
 */
export function renderWGSL(
  kernel: Kernel,
  opts: { tile?: MatmulTile; vec4?: boolean; policy?: MatmulPolicy; shuffle?: ShuffleMode } = {},
): RenderedKernel {
  // The template runs one batch per workgroup row of z: a batch past the dispatch limit runs the generic form.
  if (kernel.matmul !== null && (kernel.matmul.batch <= MAX_GROUPS_PER_DIM || kernel.body === null)) {
    const mm = kernel.matmul;
    const tile = opts.tile ?? (opts.policy ?? SOFTWARE_POLICY).choose(mm.m, mm.n, matmulDepth(mm));
    return renderMatmulKernel(kernel, mm, tile, opts.vec4 ?? true, opts.shuffle ?? "native");
  }
  if (kernel.row !== undefined) return renderRowKernel(kernel, kernel.row);
  const body = kernel.body!;
  const total = kernel.outShape.reduce((a, b) => a * b, 1);
  const groups = Math.ceil(total / WORKGROUP);
  const [gx] = grid(groups);
  const { lines, result } = renderValue(body, "  ");
  const main = [
    `  let gid = i32(g.x + g.y * ${gx * WORKGROUP}u);`,
    `  if (gid >= ${total}) { return; }`,
    ...lines,
    `  out0[gid] = ${toStorage(result, kernel.outDtype)};`,
  ];
  return invocationKernel(kernel, body, main, groups, kNodes([body]).some((e) => e.k === "reduce"));
}

/**
 * The shader and pieces of a kernel of `groups` workgroups of {@link WORKGROUP} invocations whose `main` body
 * computes `body` (one output, or one row of outputs, per invocation); `loops`: whether the body loops.
 */
function invocationKernel(
  kernel: Kernel,
  body: KExpr,
  main: string[],
  groups: number,
  loops: boolean,
): RenderedKernel {
  const src = [
    ...preamble(kernel, [body]),
    ...bindings(kernel),
    `@compute @workgroup_size(${WORKGROUP})`,
    `fn main(@builtin(global_invocation_id) g: vec3<u32>) {`,
    ...main,
    `}`,
  ].join("\n");
  const pieces: KernelPieces = {
    ...needs(kernel, [body]),
    bindingTypes: bindingTypes(kernel, new Set()),
    paramVec4s: paramVec4s(kernel),
    functions: [],
    body: main,
    workgroup: [WORKGROUP, 1, 1],
    loops,
  };
  return { source: src, dispatch: grid(groups), pieces };
}

/**
 * Renders a kernel in row form: one invocation per row of `row.length` outputs; the statements that do not depend
 * on `j` (the row's reductions) run once, then a loop over `j` computes and stores the row.
 */
function renderRowKernel(kernel: Kernel, row: KernelRow): RenderedKernel {
  const total = kernel.outShape.reduce((a, b) => a * b, 1);
  const rows = total / row.length;
  const groups = Math.ceil(rows / WORKGROUP);
  const [gx] = grid(groups);
  const dep = dependsOn(row.j);
  const stmts = linearize([row.body]);
  const once = stmts.filter((st) => !dep(st.node));
  const each = stmts.filter((st) => dep(st.node));
  const main = [
    `  let ${row.row.name} = i32(g.x + g.y * ${gx * WORKGROUP}u);`,
    `  if (${row.row.name} >= ${rows}) { return; }`,
    ...printStmts(once, "  "),
    `  for (var ${row.j.name}: i32 = 0; ${row.j.name} < ${row.length}; ${row.j.name} = ${row.j.name} + 1) {`,
    ...printStmts(each, "    "),
    `    out0[${row.row.name} * ${row.length} + ${row.j.name}] = ${
      toStorage(ref(row.body), kernel.outDtype)
    };`,
    `  }`,
  ];
  return invocationKernel(kernel, row.body, main, groups, true);
}

/** `index` as `c0 + Σ coef·v` over the template variables `b`, `m`, `n`, `k`; null when any other term occurs. */
function templateAffine(index: KExpr): { c0: number; coef: Record<string, number> } | null {
  const { terms, c } = linearForm(index);
  const coef: Record<string, number> = {};
  for (const [t, k] of terms) {
    if (t.k !== "var" || !["b", "m", "n", "k"].includes(t.name)) return null;
    coef[t.name] = k;
  }
  return { c0: c, coef };
}

/**
 * How a term's operand (A: variables b, m, k; B: b, k, n) could be read as `vec4<f32>`: a plain f32 load (or an
 * f16 load widened to f32), contiguous along k (`rowAxis` then has any stride that is a multiple of 4) or along
 * `rowAxis` (k's stride a multiple of 4), every other coefficient a multiple of 4. Whether its binding is read
 * anywhere else is decided by the caller.
 */
function vecCandidate(
  kernel: Kernel,
  mm: MatmulSpec,
  term: MatmulTerm,
  operand: KExpr,
  rowAxis: "m" | "n",
): { v: VecOperand; buf: number } | undefined {
  // f16 storage widened to f32 (`f32(in[i])`) reads as vec4<f16>, converted once per vec4.
  const half = operand.k === "alu" && operand.op === "cast" && operand.dtype === "f32" &&
    operand.args[0].k === "load" && operand.args[0].dtype === "f16";
  const value = half ? (operand as { args: readonly KExpr[] }).args[0] : operand;
  if (
    value.k !== "load" || kernel.inputs[value.buf].dtype !== (half ? "f16" : "f32") ||
    value.dtype !== kernel.inputs[value.buf].dtype
  ) {
    return undefined;
  }
  const aff = templateAffine(value.index);
  if (aff === null) return undefined;
  const { k = 0, b = 0, ...rest } = aff.coef;
  const row = rest[rowAxis] ?? 0;
  if (Object.keys(rest).some((v) => v !== rowAxis) || aff.c0 % 4 !== 0 || b % 4 !== 0) return undefined;
  const name = `in${value.buf}`;
  if (k === 1 && row % 4 === 0 && term.k % 4 === 0) {
    return { v: { name, axis: "k", c0: aff.c0, cb: b, cOther: row, half }, buf: value.buf };
  }
  const rows = rowAxis === "m" ? mm.m : mm.n;
  if (row === 1 && k % 4 === 0 && rows % 4 === 0) {
    return { v: { name, axis: rowAxis, c0: aff.c0, cb: b, cOther: k, half }, buf: value.buf };
  }
  return undefined;
}

/**
 * The vec4 reads of every term's operands: an operand is read as vec4 when it can be (see {@link vecCandidate})
 * and every read of its binding in the kernel is such an operand read with the same element type (a binding
 * declared `array<vec4<...>>` cannot be read element by element).
 */
function vecOperands(
  kernel: Kernel,
  mm: MatmulSpec,
  t: MatmulTile,
  vec4: boolean,
): { a?: VecOperand; b?: VecOperand }[] {
  const cands = mm.terms.map((term) => {
    if (!vec4) return { a: undefined, b: undefined };
    let a = vecCandidate(kernel, mm, term, term.a, "m");
    let b = vecCandidate(kernel, mm, term, term.b, "n");
    if (a?.v.axis === "m" && t.tm % 4 !== 0) a = undefined;
    if (b?.v.axis === "n" && t.tn % 4 !== 0) b = undefined;
    return { a, b };
  });
  // Bindings some read of which is not a vec4 operand read: the epilogue's loads, the loads inside operands that
  // are not plain loads, and plain operand loads that cannot be vec4.
  const scalarRead = new Set<number>();
  const halfRead = new Map<number, boolean>();
  const loadsOf = (roots: KExpr[]) =>
    kNodes(roots).filter((e) => e.k === "load") as (KExpr & { k: "load" })[];
  for (const e of loadsOf([mm.epilogue])) scalarRead.add(e.buf);
  mm.terms.forEach((term, i) => {
    for (const [op, cand] of [[term.a, cands[i].a], [term.b, cands[i].b]] as const) {
      if (cand === undefined) {
        for (const e of loadsOf([op])) scalarRead.add(e.buf);
        continue;
      }
      const h = cand.v.half ?? false;
      if (halfRead.has(cand.buf) && halfRead.get(cand.buf) !== h) scalarRead.add(cand.buf);
      halfRead.set(cand.buf, h);
    }
  });
  return cands.map((c) => ({
    a: c.a !== undefined && !scalarRead.has(c.a.buf) ? c.a.v : undefined,
    b: c.b !== undefined && !scalarRead.has(c.b.buf) ? c.b.v : undefined,
  }));
}

/** Renders a kernel that has a matmul spec through the tiled template. */
function renderMatmulKernel(
  kernel: Kernel,
  mm: MatmulSpec,
  t: MatmulTile,
  vec4: boolean,
  shuffle: ShuffleMode,
): RenderedKernel {
  const roots = [...mm.terms.flatMap((x) => [x.a, x.b]), mm.epilogue];
  const base = {
    batch: mm.batch,
    m: mm.m,
    n: mm.n,
    epilogue: renderValue(mm.epilogue, "  "),
    outType: wgslType(kernel.outDtype),
    store: (v: string) => toStorage(v, kernel.outDtype),
  };
  const plain = mm.terms.map((x) => ({
    k: x.k,
    loadA: renderValue(x.a, "  "),
    loadB: renderValue(x.b, "  "),
  }));
  if (t.bk !== undefined) {
    return renderMatmulShared({
      ...base,
      terms: plain,
      header: [...preamble(kernel, roots), ...bindings(kernel)],
    }, t);
  }
  if (t.subgroup) {
    return renderMatmulSubgroup(
      {
        ...base,
        terms: plain,
        header: [...preamble(kernel, roots), ...bindings(kernel)],
      },
      t,
      shuffle,
    );
  }
  const vecs = vecOperands(kernel, mm, t, vec4);
  const vec4Inputs = new Set(
    vecs.flatMap((v) => [v.a, v.b]).filter((v) => v !== undefined).map((v) => v.name),
  );
  const r = renderMatmul({
    ...base,
    terms: plain.map((x, i) => ({ ...x, vecA: vecs[i].a, vecB: vecs[i].b })),
    header: [...preamble(kernel, roots), ...bindings(kernel, vec4Inputs)],
  }, t);
  const pieces: KernelPieces = {
    ...needs(kernel, roots),
    bindingTypes: bindingTypes(kernel, vec4Inputs),
    paramVec4s: paramVec4s(kernel),
    functions: r.functions,
    body: r.body,
    workgroup: r.workgroup,
    loops: true,
  };
  return { source: r.source, dispatch: r.dispatch, pieces };
}
