/**
 * Which matmuls one kernel computes with the tiled template: a single Dot, or a sum of Dots of the same shape
 * (`x·Wᵀ + h·Bᵀ`, the input gradient `dy·W + dh·A` of a LoRA layer, the cotangents of several projections that read
 * one input). A sum is accumulated in one set of registers, term after term, so it costs one kernel and one store
 * instead of one kernel and one round trip through memory per product. The scheduler asks this module whether a
 * region's Dots may stay together; the lowering asks it which Dots become template terms.
 *
 * @module
 */
import type { Node } from "../ir/node.ts";
import { ELEMENTWISE_OPS, Op } from "../ir/ops.ts";

/** Ops between an addition and one of its products that keep the flat index (reshapes and identity markers). */
const THROUGH: ReadonlySet<Op> = new Set([Op.Reshape, Op.CustomVjp, Op.Detach]);

/** Most products one template kernel accumulates. */
export const MAX_MATMUL_TERMS = 8;

/** The products of a template kernel. */
export interface MatmulTerms {
  /** The Dots, in accumulation order (all of one shape). */
  readonly dots: readonly Node[];
  /** The node whose value is the sum of the products plus {@link extras} (the Dot itself when there is one). */
  readonly top: Node;
  /** Addends of {@link top} that are not products: the epilogue adds them to the accumulator. */
  readonly extras: readonly Node[];
}

/**
 * The products the template computes for the kernel of `root`, whose region stops at the nodes for which
 * `isInput` is true (and at stored data): every Dot of the region, when either there is one, or they are the
 * leaves (through reshapes and identity markers) of one tree of additions; each Dot is reached from the root only through elementwise
 * ops and reshapes (so the root's flat index is every Dot's flat index). Null when the region has no Dot or its
 * Dots cannot share one accumulator.
 */
export function matmulTerms(root: Node, isInput: (n: Node) => boolean): MatmulTerms | null {
  const inRegion = new Set<Node>();
  const stack = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (inRegion.has(n) || (n !== root && (n.storage !== null || isInput(n)))) continue;
    inRegion.add(n);
    stack.push(...n.src);
  }
  const dots = [...inRegion].filter((n) => n.op === Op.Dot);
  if (dots.length === 0 || dots.length > MAX_MATMUL_TERMS) return null;
  // Uses of each region node by region nodes (an operand used twice counts twice).
  const uses = new Map<Node, number>();
  for (const n of inRegion) for (const s of n.src) if (inRegion.has(s)) uses.set(s, (uses.get(s) ?? 0) + 1);
  // Number of the region's Dots below each node.
  const below = new Map<Node, Set<Node>>();
  const dotsBelow = (n: Node): Set<Node> => {
    let s = below.get(n);
    if (s === undefined) {
      s = new Set(n.op === Op.Dot ? [n] : []);
      below.set(n, s);
      if (n.op !== Op.Dot) {
        for (const c of n.src) if (inRegion.has(c)) { for (const d of dotsBelow(c)) s.add(d); }
      }
    }
    return s;
  };
  let top: Node;
  const terms: Node[] = [];
  const extras: Node[] = [];
  const tree = new Set<Node>();
  if (dots.length === 1) {
    top = dots[0];
    terms.push(top);
  } else {
    // The first-built addition that covers every Dot is where the products meet.
    const covering = [...inRegion].filter((n) => n.op === Op.Add && dotsBelow(n).size === dots.length);
    if (covering.length === 0) return null;
    top = covering.reduce((a, b) => (b.id < a.id ? b : a));
    const visit = (t: Node) => {
      if (t.op === Op.Add && inRegion.has(t) && (t === top || uses.get(t) === 1)) {
        tree.add(t);
        for (const s of t.src) visit(s);
        return;
      }
      let d = t;
      const chain: Node[] = [];
      while (THROUGH.has(d.op) && inRegion.has(d) && uses.get(d) === 1) {
        chain.push(d);
        d = d.src[0];
      }
      if (d.op === Op.Dot && inRegion.has(d) && uses.get(d) === 1) {
        terms.push(d);
        for (const c of chain) tree.add(c);
      } else extras.push(t);
    };
    visit(top);
    if (terms.length !== dots.length || new Set(terms).size !== terms.length) return null;
    if (extras.some((e) => inRegion.has(e) && dotsBelow(e).size > 0)) return null;
  }
  const shape = terms[0].shape.join();
  if (terms.some((d) => d.shape.join() !== shape || d.dtype !== "f32") || terms[0].size !== root.size) {
    return null;
  }
  // Every other region node on a path from the root down to a Dot maps indices one to one.
  for (const n of inRegion) {
    if (n === top || tree.has(n) || n.op === Op.Dot || dotsBelow(n).size === 0) continue;
    if (!ELEMENTWISE_OPS.has(n.op) && n.op !== Op.Reshape) return null;
  }
  return { dots: terms, top, extras };
}

/** Multiply-adds of the products. */
export function termFlops(t: MatmulTerms): number {
  return t.dots.reduce((a, d) => a + d.size * d.src[0].shape[d.src[0].shape.length - 1], 0);
}
