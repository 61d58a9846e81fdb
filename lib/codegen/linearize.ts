/**
 * Linearization: orders a kernel-IR DAG into statements with loop scopes. Each value is computed once, in the
 * outermost scope where all the loop counters it depends on exist (so loop-invariant work is hoisted out of
 * reduction loops). Both renderers print the same statement list.
 *
 * @module
 */
import type { KExpr, KReduce } from "./kexpr.ts";

/** A statement: bind one value, or run one reduction loop. */
export type Stmt =
  | { readonly kind: "let"; readonly node: KExpr }
  | { readonly kind: "loop"; readonly node: KReduce; readonly body: Stmt[] };

/** Values that renderers print inline instead of binding (literals, variables, the accumulator). */
export function isInline(e: KExpr): boolean {
  return e.k === "const" || e.k === "var" || e.k === "acc" || e.k === "param";
}

/** Orders the computation of `roots` into statements. `outerVars` are loop-free (function parameters). */
export function linearize(roots: readonly KExpr[]): Stmt[] {
  const deps = new Map<number, ReadonlySet<number>>();
  const loopVars = new Set<number>();
  const depsOf = (e: KExpr): ReadonlySet<number> => {
    const hit = deps.get(e.id);
    if (hit !== undefined) return hit;
    let d: Set<number>;
    switch (e.k) {
      case "const":
      case "acc":
      case "param":
        d = new Set();
        break;
      case "var":
        d = loopVars.has(e.id) ? new Set([e.id]) : new Set();
        break;
      case "load":
        d = new Set(depsOf(e.index));
        break;
      case "rand":
        d = new Set([...depsOf(e.index), ...depsOf(e.seed)]);
        break;
      case "alu":
        d = new Set(e.args.flatMap((a) => [...depsOf(a)]));
        break;
      case "reduce":
        loopVars.add(e.loop.id);
        d = new Set(depsOf(e.body));
        d.delete(e.loop.id);
        break;
    }
    deps.set(e.id, d);
    return d;
  };
  // Register loop variables first so dependency sets see them.
  const collect = (e: KExpr, seen: Set<number>) => {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    if (e.k === "reduce") {
      loopVars.add(e.loop.id);
      collect(e.body, seen);
    } else if (e.k === "alu") e.args.forEach((a) => collect(a, seen));
    else if (e.k === "load") collect(e.index, seen);
    else if (e.k === "rand") {
      collect(e.index, seen);
      collect(e.seed, seen);
    }
  };
  const seen = new Set<number>();
  roots.forEach((r) => collect(r, seen));

  interface Scope {
    loop: number | null;
    stmts: Stmt[];
  }
  const root: Scope = { loop: null, stmts: [] };
  const stack: Scope[] = [root];
  const emitted = new Map<number, Scope>();

  const emit = (e: KExpr): void => {
    if (isInline(e)) return;
    const prev = emitted.get(e.id);
    if (prev !== undefined && stack.includes(prev)) return;
    const d = depsOf(e);
    let target = root;
    for (const s of stack) if (s.loop !== null && d.has(s.loop)) target = s;
    if (e.k === "reduce") {
      // Hoisted parts of the body land in `target` before the loop statement itself.
      const inner: Scope = { loop: e.loop.id, stmts: [] };
      const depth = stack.indexOf(target);
      const saved = stack.splice(depth + 1);
      stack.push(inner);
      emit(e.body);
      stack.pop();
      stack.push(...saved);
      target.stmts.push({ kind: "loop", node: e, body: inner.stmts });
      emitted.set(e.id, target);
      return;
    }
    if (e.k === "alu") e.args.forEach(emit);
    if (e.k === "load" || e.k === "rand") emit(e.index);
    if (e.k === "rand") emit(e.seed);
    target.stmts.push({ kind: "let", node: e });
    emitted.set(e.id, target);
  };
  roots.forEach(emit);
  return root.stmts;
}
