/**
 * The kernel verifier between lowering and rendering: every load reads an input of its dtype, operands agree,
 * parameter slots exist, and one invocation stays within the device's loop budget.
 *
 * @module
 */
import { dependsOn, type Kernel, type KernelRow, type KExpr, kNodes, matmulDepth } from "./kexpr.ts";
import { linearize, type Stmt } from "./linearize.ts";
import { LOOP_BUDGET } from "./split_loops.ts";

/** Total loop iterations one invocation runs (loops nested in loops multiply). */
export function loopIterations(root: KExpr): number {
  const total = (stmts: readonly Stmt[], mult: number): number =>
    stmts.reduce(
      (a, s) => (s.kind === "loop" ? a + mult * s.node.size + total(s.body, mult * s.node.size) : a),
      0,
    );
  return total(linearize([root]), 1);
}

/** Loop iterations of one invocation of a row kernel: the row's own loops once, the rest once per element. */
export function rowLoopIterations(row: KernelRow): number {
  const dep = dependsOn(row.j);
  const cost = (stmts: readonly Stmt[], mult: number): number =>
    stmts.reduce(
      (a, s) => (s.kind === "loop" ? a + mult * s.node.size + cost(s.body, mult * s.node.size) : a),
      0,
    );
  let once = 0;
  let each = 0;
  for (const s of linearize([row.body])) {
    if (s.kind !== "loop") continue;
    const c = cost([s], 1);
    if (dep(s.node)) each += c;
    else once += c;
  }
  return once + row.length * (1 + each);
}

/**
 * Checks a kernel's internal consistency; throws naming the kernel and the problem. `loopBudget` is the device's
 * cap on loop iterations per invocation.
 */
export function verifyKernel(kernel: Kernel, loopBudget: number = LOOP_BUDGET): void {
  const fail = (msg: string): never => {
    throw new Error(`kernel ${kernel.name}: ${msg}`);
  };
  const roots = kernel.matmul !== null
    ? [...kernel.matmul.terms.flatMap((t) => [t.a, t.b]), kernel.matmul.epilogue]
    : kernel.body !== null
    ? [kernel.body, ...(kernel.row === undefined ? [] : [kernel.row.body])]
    : fail("has neither a body nor a matmul spec");
  for (const e of kNodes(roots)) {
    if (e.k === "load") {
      if (e.buf < 0 || e.buf >= kernel.inputs.length) fail(`load from missing input ${e.buf}`);
      if (kernel.inputs[e.buf].dtype !== e.dtype) fail(`load of input ${e.buf} with dtype ${e.dtype}`);
      if (e.index.dtype !== "i32") fail(`load index of dtype ${e.index.dtype}`);
    }
    if (e.k === "alu") {
      if (e.op === "where" && e.args[0].dtype !== "bool") fail("where condition is not bool");
      if (["add", "mul", "div", "max", "min", "pow"].includes(e.op) && e.args[0].dtype !== e.args[1].dtype) {
        fail(`${e.op} of ${e.args[0].dtype} and ${e.args[1].dtype}`);
      }
    }
    if (e.k === "reduce" && e.size < 0) fail("negative loop size");
    if (e.k === "param") {
      const dt = kernel.params?.[e.slot];
      if (dt === undefined) fail(`reads missing parameter slot ${e.slot}`);
      if (dt !== e.dtype) fail(`reads parameter slot ${e.slot} (${dt}) as ${e.dtype}`);
    }
    if (e.k === "rand" && e.seed.dtype !== "u32") fail(`generator seed of dtype ${e.seed.dtype}`);
  }
  if (kernel.matmul !== null && kernel.matmul.terms.length === 0) fail("has a matmul spec without products");
  if (kernel.row !== undefined) {
    const total = kernel.outShape.reduce((a, b) => a * b, 1);
    if (total % kernel.row.length !== 0) fail(`rows of ${kernel.row.length} do not divide ${total} outputs`);
    const rowTrips = rowLoopIterations(kernel.row);
    if (rowTrips > loopBudget) fail(`runs ${rowTrips} loop iterations per row (budget ${loopBudget})`);
  }
  const trips = kernel.matmul !== null ? matmulDepth(kernel.matmul) : loopIterations(kernel.body!);
  if (trips > loopBudget) fail(`runs ${trips} loop iterations per invocation (budget ${loopBudget})`);
  const outType = kernel.matmul !== null ? kernel.matmul.epilogue.dtype : kernel.body!.dtype;
  if (outType !== kernel.outDtype) fail(`body dtype ${outType} but output dtype ${kernel.outDtype}`);
}
