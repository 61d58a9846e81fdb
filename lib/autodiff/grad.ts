/**
 * Reverse-mode autodiff over the lazy IR. `valueAndGrad(f)` calls `f` on a parameter tree, walks the graph of the
 * result backwards with the vjp table, and returns the gradients as lazy tensors in the same tree structure.
 * Nothing is computed until the caller realizes or reads the results.
 *
 * @module
 */
import { constNode, customVjpNode, mk, type Node, toposort } from "../ir/node.ts";
import { type CustomVjpArg, Op } from "../ir/ops.ts";
import { fmt, type Shape } from "../shape.ts";
import { Tensor } from "../tensor/tensor.ts";
import { VJP_RULES } from "./vjp.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";

const GRAD_OPTIONS = z.object({ hasAux: z.boolean().optional() }).strict();

/** A tree of tensors: a tensor, an array of trees, or an object of trees (module parameters, optimiser state). */
export type Params = Tensor | readonly Params[] | { readonly [key: string]: Params };

/** What a value that is not part of a parameter tree is, for an error message. */
function describe(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (typeof v === "string") return `a string (${JSON.stringify(v)})`;
  if (typeof v !== "object") return `a ${typeof v} (${String(v)})`;
  return `a ${Object.getPrototypeOf(v)?.constructor?.name ?? "object"}`;
}

/** The leaves of `p` below `prefix`; anything but a tensor, an array or a plain object is refused by path. */
function leavesOf(p: unknown, prefix: string, what: string): { path: string; tensor: Tensor }[] {
  if (p instanceof Tensor) return [{ path: prefix, tensor: p }];
  const proto = p !== null && typeof p === "object" ? Object.getPrototypeOf(p) : undefined;
  if (!Array.isArray(p) && proto !== Object.prototype && proto !== null) {
    // Object.entries would give a number no entries (it came back as {}) and fail on null with no path.
    const where = prefix === "" ? "the parameter tree" : `"${prefix}"`;
    const hint = proto !== undefined && !ArrayBuffer.isView(p)
      ? " (for a module, pass parameters(module))"
      : "";
    throw new TypeError(
      `${what}: ${where} is ${describe(p)}, not a tensor, an array or a plain object${hint}`,
    );
  }
  const out: { path: string; tensor: Tensor }[] = [];
  const entries: [string, unknown][] = Array.isArray(p)
    ? p.map((v, i) => [String(i), v])
    : Object.entries(p!);
  for (const [k, v] of entries) out.push(...leavesOf(v, prefix === "" ? k : `${prefix}.${k}`, what));
  return out;
}

/**
 * The leaves of a parameter tree with their dotted paths (`layers.3.attention.wq`), in a stable order. A value in
 * the tree that is not a tensor, an array or a plain object is an error naming its path.
 */
export function flattenParams(p: Params, prefix = ""): { path: string; tensor: Tensor }[] {
  return leavesOf(p, prefix, "flattenParams");
}

/** Rebuilds a tree shaped like `p` whose leaves are `leaves` (in {@link flattenParams} order). */
export function unflattenParams<P extends Params>(p: P, leaves: readonly Tensor[]): P {
  let i = 0;
  const build = (q: Params): Params => {
    if (q instanceof Tensor) return leaves[i++];
    if (Array.isArray(q)) return (q as readonly Params[]).map(build);
    return Object.fromEntries(
      Object.entries(q as { readonly [key: string]: Params }).map(([k, v]) => [k, build(v)]),
    );
  };
  const out = build(p) as P;
  if (i !== leaves.length) throw new Error(`unflattenParams: ${leaves.length} leaves for a tree of ${i}`);
  return out;
}

const isFloat = (n: Node) => n.dtype === "f32" || n.dtype === "f16";

function addNodes(a: Node, b: Node): Node {
  return mk(Op.Add, [a, b], null);
}

/**
 * Cotangents of `wrt` for the scalar-or-tensor `out` seeded with `seed` (same shape as `out`). Nodes of `wrt` that
 * `out` does not depend on get zeros.
 */
export function backprop(out: Node, wrt: readonly Node[], seed: Node): Node[] {
  const order = toposort([out]);
  // Custom-vjp nodes lead to their rule's inputs as well: include those subgraphs.
  const extra = order.filter((n) => n.op === Op.CustomVjp).flatMap((n) =>
    (n.arg as CustomVjpArg<Node>).inputs
  );
  const all = extra.length > 0 ? toposort([out, ...extra]) : order;
  const targets = new Set(wrt);
  // Which nodes depend on a target (only those need cotangents).
  const live = new Set<Node>();
  for (const n of all) {
    const srcs = n.op === Op.CustomVjp ? (n.arg as CustomVjpArg<Node>).inputs : n.src;
    if (targets.has(n) || srcs.some((s) => live.has(s))) live.add(n);
  }
  const grads = new Map<Node, Node>([[out, seed]]);
  for (let i = all.length - 1; i >= 0; i--) {
    const n = all[i];
    const g = grads.get(n);
    if (g === undefined || !live.has(n) || targets.has(n) && n.src.length === 0) continue;
    if (n.op === Op.CustomVjp) {
      const arg = n.arg as CustomVjpArg<Node>;
      const cts = arg.backward(g, n.src[0], arg.inputs);
      arg.inputs.forEach((inp, k) => {
        const c = cts[k];
        if (c === null || c === undefined || !live.has(inp)) return;
        if (c.shape.join() !== inp.shape.join()) {
          throw new Error(
            `customVjp backward returned shape ${fmt(c.shape)} for an input of shape ${fmt(inp.shape)}`,
          );
        }
        const prev = grads.get(inp);
        grads.set(inp, prev === undefined ? c : addNodes(prev, c));
      });
      continue;
    }
    const cts = (VJP_RULES[n.op] as (n: Node, g: Node) => (Node | null)[])(n, g);
    n.src.forEach((s, k) => {
      const c = cts[k];
      if (c === null || !live.has(s) || !isFloat(s)) return;
      const prev = grads.get(s);
      grads.set(s, prev === undefined ? c : addNodes(prev, c));
    });
  }
  return wrt.map((w) => grads.get(w) ?? constNode(0, w.shape, w.dtype, w.device));
}

/** Options of {@link valueAndGrad}. */
export interface GradOptions {
  /** `f` returns `[loss, aux]`; the result then carries `aux` too. */
  hasAux?: boolean;
}

/** What {@link valueAndGrad} returns. */
export interface ValueAndGrad<P extends Params, Aux> {
  /** The loss (a one-element tensor), lazy. */
  value: Tensor<[], "f32">;
  /** d loss / d p, shaped like `p`, lazy. */
  grads: P;
  /** Whatever `f` returned beside the loss (with `hasAux`). */
  aux: Aux;
}

/**
 * Turns a loss function into one that also returns the gradient with respect to its first argument (a tree of
 * f32 or f16 tensors; an integer or bool tensor, or a value that is not a tensor, is an error naming its path:
 * pass such inputs as further arguments). The loss must have one element. Gradients flow through every op;
 * `stopGradient` blocks them and `customVjp` replaces them. Reading a tensor's data inside `f` realizes it and
 * cuts the graph there. An unknown option or a `hasAux` that is not a boolean is an `OptionsError`.
 *
 * @example
 * ```ts
 * import { randn, valueAndGrad } from "../../mod.ts";
 * const w = randn([3, 2], { seed: 0 });
 * const x = randn([4, 3], { seed: 1 });
 * const lossFn = (p: { w: typeof w }) => x.matmul(p.w).square().mean();
 * const { value, grads } = valueAndGrad(lossFn)({ w });
 * console.log(await value.item(), (await grads.w.data()).length);
 * ```
 */
export function valueAndGrad<P extends Params, A extends unknown[], Aux = undefined>(
  f: (p: P, ...args: A) => Tensor | [Tensor, Aux],
  opts: GradOptions = {},
): (p: P, ...args: A) => ValueAndGrad<P, Aux> {
  checkOptions("valueAndGrad", GRAD_OPTIONS, opts);
  return (p: P, ...args: A) => {
    const leaves = leavesOf(p, "", "valueAndGrad");
    for (const { path, tensor } of leaves) {
      if (!isFloat(tensor.node)) {
        // A gradient with respect to an integer or bool leaf came back as zeros of its dtype.
        const where = path === "" ? "the parameter tree" : `"${path}"`;
        throw new TypeError(
          `valueAndGrad: ${where} is a tensor of dtype ${tensor.dtype}; gradients are taken with respect to f32 ` +
            `and f16 tensors only (pass other inputs as further arguments of f)`,
        );
      }
    }
    const res = f(p, ...args);
    let loss: Tensor;
    let aux = undefined as Aux;
    if (opts.hasAux) {
      if (!Array.isArray(res) || res.length !== 2) {
        throw new TypeError("valueAndGrad with hasAux: f must return [loss, aux]");
      }
      [loss, aux] = res as [Tensor, Aux];
    } else {
      if (!(res instanceof Tensor)) {
        throw new TypeError("valueAndGrad: f must return a Tensor (use { hasAux: true } for [loss, aux])");
      }
      loss = res;
    }
    if (loss.size !== 1) {
      throw new RangeError(`valueAndGrad: the loss must have one element, got shape ${fmt(loss.shape)}`);
    }
    if (loss.dtype !== "f32" && loss.dtype !== "f16") {
      throw new TypeError(`valueAndGrad: the loss must be a float, got ${loss.dtype}`);
    }
    const seed = constNode(1, loss.shape, loss.dtype, loss.device);
    const g = backprop(loss.node, leaves.map((l) => l.tensor.node), seed);
    const grads = unflattenParams(p, g.map((n) => new Tensor(n)));
    const value = (loss.ndim === 0 ? loss : loss.reshape([])) as Tensor<[], "f32">;
    return { value, grads, aux };
  };
}

/** The gradient of a one-element loss with respect to the first argument (a tree of f32 or f16 tensors). */
export function grad<P extends Params, A extends unknown[]>(
  f: (p: P, ...args: A) => Tensor,
): (p: P, ...args: A) => P {
  const vg = valueAndGrad(f);
  return (p: P, ...args: A) => vg(p, ...args).grads;
}

/** The same values, with no gradient flowing back through them. */
export function stopGradient<S extends Shape, D extends Tensor["dtype"]>(x: Tensor<S, D>): Tensor<S, D> {
  return new Tensor(mk(Op.Detach, [x.node], null)) as Tensor<S, D>;
}

/**
 * Defines a function with a hand-written backward pass: `forward(...inputs)` computes the value; `backward(g, out,
 * ...inputs)` returns one cotangent (or null) per input, each shaped like that input. Use it for fused ops whose
 * derivative is simpler than the one autodiff would build (e.g. softmax cross-entropy).
 */
export function customVjp<A extends Tensor[], R extends Tensor>(
  forward: (...inputs: A) => R,
  backward: (g: Tensor, out: R, ...inputs: A) => (Tensor | null)[],
): (...inputs: A) => R {
  return (...inputs: A) => {
    const out = forward(...inputs);
    const node = customVjpNode(out.node, inputs.map((x) => x.node), (g, o, ins) => {
      const r = backward(new Tensor(g), new Tensor(o) as R, ...(ins.map((x) => new Tensor(x)) as A));
      if (r.length !== ins.length) {
        throw new Error(`customVjp backward returned ${r.length} cotangents for ${ins.length} inputs`);
      }
      return r.map((x) => (x === null ? null : x.node));
    });
    return new Tensor(node) as R;
  };
}
