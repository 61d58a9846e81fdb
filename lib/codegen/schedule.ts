/**
 * Scheduling: decides which nodes of an unrealized graph get their own kernel (are "materialized") and which are
 * fused into their consumers. The rules, in order:
 *
 * - every requested root and every node that feeds a different device step is materialized;
 * - views and elementwise ops are always fused (recomputed per consumer; the kernel IR shares common parts);
 * - a reduction or matmul is fused into its consumer only when that does not repeat its loop: a single consumer
 *   that is elementwise or a non-broadcasting view (so matmul + bias + relu is one kernel); for a matmul only an
 *   elementwise op or a reshape, which keep the tiled template's output order;
 * - a matmul's operands are materialized unless they are views of stored data (a fused prologue would be
 *   recomputed once per output row or column; autodiff's identity markers count as views);
 * - a hand-written kernel ({@link Op.Custom}) and each of its inputs are materialized;
 * - a view whose source is materialized anyway is not materialized itself (it would only copy);
 * - a kernel holds at most one matmul (or one sum of matmuls of one shape, accumulated by the template as one),
 *   at most `maxInputs` input buffers (the device's storage-buffer limit) and
 *   at most {@link LOOP_BUDGET} loop iterations in total (llvmpipe's per-invocation cap, see `split_loops.ts`);
 *   extra producers are materialized, largest first.
 *
 * @module
 */
import type { Node } from "../ir/node.ts";
import { toposort } from "../ir/node.ts";
import { ELEMENTWISE_OPS, Op, REDUCE_OPS } from "../ir/ops.ts";
import { LOOP_BUDGET, tripCount } from "./split_loops.ts";
import { matmulTerms } from "./matmul_terms.ts";

/** Options of {@link schedule}. */
export interface ScheduleOptions {
  /** Input buffers one kernel may bind (the output takes one more binding). */
  maxInputs: number;
  /** Materialize every non-view node (used by tests to compare fused with unfused execution). */
  noFusion?: boolean;
  /** Most loop iterations in one kernel (default {@link LOOP_BUDGET}, the llvmpipe cap). */
  loopBudget?: number;
}

/** The ordered list of nodes to materialize (each becomes one kernel), inputs before their consumers. */
export function schedule(roots: readonly Node[], opts: ScheduleOptions): Node[] {
  const nodes = toposort(roots).filter((n) => n.storage === null);
  const consumers = new Map<Node, Node[]>();
  for (const n of nodes) {
    for (const s of n.src) {
      if (s.storage !== null) continue;
      const list = consumers.get(s) ?? [];
      list.push(n);
      consumers.set(s, list);
    }
  }
  const materialized = new Set<Node>(roots.filter((r) => r.storage === null));
  const isLeaf = (n: Node) => n.op === Op.Const || n.op === Op.Iota || n.op === Op.Rand;
  // heavy: contains a loop that fusion would repeat.
  const heavy = new Map<Node, boolean>();
  // dotted: the node's fused region holds a matmul.
  const hasDot = new Map<Node, boolean>();
  // A hand-written kernel is its own kernel, and reads each input as a contiguous buffer of its own.
  const pinned = new Set<Node>();
  for (const n of nodes) {
    if (n.op !== Op.Custom) continue;
    materialized.add(n);
    for (const s of n.src) {
      if (s.storage === null) {
        materialized.add(s);
        pinned.add(s);
      }
    }
  }
  for (const n of nodes) {
    if (opts.noFusion && !isLeaf(n) && !(n.op === Op.Reshape || n.op === Op.Permute || n.op === Op.Expand)) {
      materialized.add(n);
    }
    const h = REDUCE_OPS.has(n.op) ||
      n.src.some((s) => s.storage === null && !materialized.has(s) && heavy.get(s));
    heavy.set(n, h);
    const dotted = n.op === Op.Dot ||
      n.src.some((s) => s.storage === null && !materialized.has(s) && hasDot.get(s));
    hasDot.set(n, dotted);
    const cons = consumers.get(n) ?? [];
    // A matmul keeps the tiled template only while its kernel stores in the Dot's own element order, so a
    // permuting, shrinking or padding consumer of a matmul gets its own (cheap, memory-bound) kernel.
    const fusable = cons.length <= 1 &&
      cons.every((c) =>
        ELEMENTWISE_OPS.has(c.op) || c.op === Op.Reshape ||
        (!dotted && (c.op === Op.Permute || c.op === Op.Shrink || c.op === Op.Pad))
      );
    if (h && !fusable) materialized.add(n);
  }
  // A matmul reads each element of A once per output column and each element of B once per output row, so an
  // elementwise chain fused into its operand would be recomputed that many times: materialize operands that are
  // more than views of stored data.
  const VIEWS: ReadonlySet<Op> = new Set([Op.Reshape, Op.Permute, Op.Expand, Op.Shrink, Op.Pad]);
  // Autodiff markers are identities: an operand that is a view of a marked value reads that value's buffer.
  const IDENTITY: ReadonlySet<Op> = new Set([Op.CustomVjp, Op.Detach]);
  for (const d of nodes) {
    if (d.op !== Op.Dot) continue;
    for (let s of d.src) {
      while ((VIEWS.has(s.op) || IDENTITY.has(s.op)) && s.storage === null) s = s.src[0];
      if (s.storage === null && !isLeaf(s) && s.op !== Op.Cast) materialized.add(s);
    }
  }
  // A view materialized above because its source looked heavy only copies once that source has become a kernel
  // of its own (a matmul operand, say): fuse it back into its consumers as index arithmetic.
  const rootSet = new Set(roots);
  for (const n of nodes) {
    if (!materialized.has(n) || rootSet.has(n) || pinned.has(n) || !VIEWS.has(n.op)) continue;
    let s = n.src[0];
    while (VIEWS.has(s.op) && s.storage === null && !materialized.has(s)) s = s.src[0];
    if (s.storage !== null || materialized.has(s)) materialized.delete(n);
  }
  // Per-kernel limits: one matmul, bounded input count.
  let changed = true;
  while (changed) {
    changed = false;
    for (const root of nodes.filter((n) => materialized.has(n))) {
      const region = fusedRegion(root, materialized);
      const dots = region.filter((n) => n !== root && n.op === Op.Dot);
      const ownDot = root.op === Op.Dot ? 1 : 0;
      // A sum of products of one shape is one template kernel (see matmul_terms.ts).
      const summed = dots.length > 1 && ownDot === 0 &&
        matmulTerms(root, (n) => materialized.has(n)) !== null;
      if (dots.length + ownDot > 1 && !summed) {
        const extra = dots.sort((a, b) => b.size - a.size).slice(1 - ownDot);
        for (const d of extra) materialized.add(d);
        changed = true;
        continue;
      }
      const loops = region.filter((n) => REDUCE_OPS.has(n.op));
      if (loops.reduce((a, n) => a + tripCount(n), 0) > (opts.loopBudget ?? LOOP_BUDGET)) {
        const inner = loops.filter((n) => n !== root).sort((a, b) => tripCount(b) - tripCount(a));
        if (inner.length === 0) throw new Error(`schedule: ${root} needs ${tripCount(root)} loop iterations`);
        materialized.add(inner[0]);
        changed = true;
        continue;
      }
      const inputs = regionInputs(region, materialized, root);
      if (inputs.size > opts.maxInputs) {
        // Cut off the biggest part of the region that fits in one kernel (a long chain of sums is cut into a
        // few kernels, not peeled one link at a time); failing that, the root's input with the most inputs.
        const inner = region.filter((n) => n !== root && !isLeaf(n));
        if (inner.length === 0) throw new Error(`schedule: ${root} needs ${inputs.size} input buffers`);
        const sizes = new Map(
          inner.map((n) => [n, regionInputs(fusedRegion(n, materialized), materialized, n).size]),
        );
        const fitting = inner.filter((n) => sizes.get(n)! <= opts.maxInputs && sizes.get(n)! > 1);
        const pick = fitting.length > 0
          ? fitting.reduce((a, b) => (sizes.get(b)! > sizes.get(a)! ? b : a))
          : inner.reduce((a, b) => (sizes.get(b)! > sizes.get(a)! ? b : a));
        materialized.add(pick);
        changed = true;
      }
    }
  }
  return nodes.filter((n) => materialized.has(n));
}

/** The nodes computed inside `root`'s kernel. */
export function fusedRegion(root: Node, materialized: ReadonlySet<Node>): Node[] {
  const out: Node[] = [];
  const seen = new Set<Node>();
  const stack = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    out.push(n);
    for (const s of n.src) if (s.storage === null && !materialized.has(s)) stack.push(s);
  }
  return out;
}

function regionInputs(region: readonly Node[], materialized: ReadonlySet<Node>, root: Node): Set<Node> {
  const inputs = new Set<Node>();
  for (const n of region) {
    for (const s of n.src) if (s.storage !== null || (materialized.has(s) && s !== root)) inputs.add(s);
  }
  return inputs;
}
