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
 *   extra producers are materialized, largest first;
 * - with `rowKernels`, a reduction over trailing axes (and elementwise ops of it) that is broadcast back is not
 *   materialized but recomputed once per row by each kernel that reads it, which then runs one invocation per
 *   row; a kernel that cannot (a path that moves elements, a matmul, the loop budget) gets it materialized.
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
  /**
   * Fuse a reduction over trailing axes into the kernels that broadcast it back (a norm's statistics into the
   * normalisation, a softmax's maximum and sum into its output): such a kernel runs one invocation per row and
   * computes the reduction once per row (`lower.ts`, row mode). Default false.
   */
  rowKernels?: boolean;
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
  // Row values: unmaterialized [rows, 1...] values computed from reductions over trailing axes of length L, to be
  // recomputed once per row by the row-mode kernels that broadcast them (Expand back to length L).
  const rowLen = new Map<Node, number>();
  // Full-size values heavy only through row values broadcast back (their own row length).
  const rowWide = new Map<Node, number>();
  // Nodes that may be fused into their consumers without repeating their loops (see `fusable` below).
  const fusableNodes = new Set<Node>();
  const rows = opts.rowKernels === true && !opts.noFusion;
  const scan: RowScan = { materialized, heavy, rowLen, rowWide };
  for (const n of nodes) {
    if (opts.noFusion && !isLeaf(n) && !(n.op === Op.Reshape || n.op === Op.Permute || n.op === Op.Expand)) {
      materialized.add(n);
    }
    const h = repeatsLoop(n, materialized, (s) => heavy.get(s) === true);
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
    const len = rows && h && !dotted ? rowValueLength(n, scan) : null;
    if (len !== null) rowLen.set(n, len);
    if (rows && h && !dotted && len === null) {
      const wide = rowWideLength(n, scan);
      if (wide !== null) rowWide.set(n, wide);
    }
    if (fusable) fusableNodes.add(n);
    if (h && !fusable) {
      // A row value may feed elementwise ops of its shape and broadcasts; a full-size value made of broadcast row
      // values may feed elementwise ops and reductions of the same rows (recomputed by each, elementwise work).
      const wide = rowWide.get(n);
      const rowOnly = (len !== null &&
        cons.every((c) => (sameShape(c, n) && ELEMENTWISE_OPS.has(c.op)) || broadcastsRow(c, len))) ||
        (wide !== undefined &&
          cons.every((c) => (sameShape(c, n) && ELEMENTWISE_OPS.has(c.op)) || rowReduceLength(c) === wide));
      if (!rowOnly) materialized.add(n);
    }
  }
  // A matmul reads each element of A once per output column and each element of B once per output row, so an
  // elementwise chain fused into its operand would be recomputed that many times: materialize operands that are
  // more than views of stored data.
  const VIEWS: ReadonlySet<Op> = new Set([Op.Reshape, Op.Permute, Op.Expand, Op.Shrink, Op.Pad]);
  // Autodiff markers are identities: an operand that is a marked view of stored data (or of a value that is already
  // a kernel) reads that buffer; a marked computed value is materialized at the marker, with its computation fused
  // in, so the value is stored once.
  const IDENTITY: ReadonlySet<Op> = new Set([Op.CustomVjp, Op.Detach]);
  for (const d of nodes) {
    if (d.op !== Op.Dot) continue;
    for (let s of d.src) {
      while (VIEWS.has(s.op) && s.storage === null) s = s.src[0];
      let inner = s;
      while ((VIEWS.has(inner.op) || IDENTITY.has(inner.op)) && inner.storage === null) inner = inner.src[0];
      if (inner.storage !== null || isLeaf(inner) || inner.op === Op.Cast || materialized.has(inner)) {
        continue;
      }
      materialized.add(s);
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
      // A kernel that broadcasts row values runs in row mode: it must keep the flat index on every path to the
      // broadcast, hold no matmul, and fit the loop budget with its per-element loops run once per row element.
      const rowed = region.filter((n) => n !== root && rowLen.has(n) && !materialized.has(n));
      const rowMode = rowed.length > 0 && !rowLen.has(root);
      if (rowMode) {
        const len = rowLen.get(rowed[0])!;
        const inRow = new Set(rowed);
        const perRow = loops.filter((n) => inRow.has(n));
        const perElement = loops.filter((n) => !inRow.has(n));
        const trips = perRow.reduce((a, n) => a + tripCount(n), 0) +
          len * (1 + perElement.reduce((a, n) => a + tripCount(n), 0));
        if (
          rowed.some((n) => rowLen.get(n) !== len) || root.size % len !== 0 || dots.length + ownDot > 0 ||
          !rowPathsKeepIndex(region, inRow) || trips > (opts.loopBudget ?? LOOP_BUDGET)
        ) {
          // The region's row values (and the full-size values made of them) are scheduled as without row kernels:
          // in order, each heavy one that its consumers would repeat becomes a kernel of its own.
          const inRegion = new Set(region);
          const heavyNow = new Map<Node, boolean>();
          for (const n of nodes) {
            if (!inRegion.has(n) || materialized.has(n) || (!rowLen.has(n) && !rowWide.has(n))) continue;
            rowLen.delete(n);
            rowWide.delete(n);
            const h = repeatsLoop(n, materialized, (s) => (heavyNow.get(s) ?? heavy.get(s)) === true);
            heavyNow.set(n, h);
            if (h && !fusableNodes.has(n)) materialized.add(n);
          }
          changed = true;
          continue;
        }
      }
      if (!rowMode && loops.reduce((a, n) => a + tripCount(n), 0) > (opts.loopBudget ?? LOOP_BUDGET)) {
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
        if (inner.length === 0) {
          const custom = root.op === Op.Custom;
          const what = custom
            ? `kernel "${root.argOf(Op.Custom).name}"`
            : `${root.op} [${root.shape.join(", ")}]`;
          throw new RangeError(
            `${what} reads ${inputs.size} buffers; this device binds at most ${opts.maxInputs} per kernel besides ` +
              `its output${
                custom ? " (the op's composed form, e.g. causalAttention's { fused: false }, fits)" : ""
              }`,
          );
        }
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

/** Longest row a row-mode kernel takes (it loops over its row once per row reduction and once to store). */
export const ROW_MAX = 4096;
/** Fewest rows a reduction needs to be a row value (each row is one invocation of the kernels that read it). */
export const ROW_MIN_ROWS = 16;

function sameShape(a: Node, b: Node): boolean {
  return a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}

/** Length of the rows a Sum or ReduceMax over trailing axes reduces into at least {@link ROW_MIN_ROWS} rows (else null). */
export function rowReduceLength(n: Node): number | null {
  if (n.op !== Op.Sum && n.op !== Op.ReduceMax) return null;
  const axes = [...(n.arg as { axes: number[] }).axes].sort((a, b) => a - b);
  const r = n.src[0].shape.length;
  if (axes.length === 0 || axes.some((a, i) => a !== r - axes.length + i)) return null;
  const len = axes.reduce((a, i) => a * n.src[0].shape[i], 1);
  // A few rows would leave a row kernel too few invocations (a full reduction is one row).
  return len >= 2 && len <= ROW_MAX && n.size >= ROW_MIN_ROWS ? len : null;
}

/**
 * Whether `n` holds a loop that fusing it into a consumer would repeat: it reduces, or it reads an unmaterialized
 * computed value that does (`heavy`).
 */
function repeatsLoop(n: Node, materialized: ReadonlySet<Node>, heavy: (s: Node) => boolean): boolean {
  return REDUCE_OPS.has(n.op) || heavySources(n, materialized, heavy).length > 0;
}

/** The sources of `n` that are computed, not materialized, and hold a loop (`heavy`). */
function heavySources(n: Node, materialized: ReadonlySet<Node>, heavy: (s: Node) => boolean): Node[] {
  return n.src.filter((s) => s.storage === null && !materialized.has(s) && heavy(s));
}

/** What the row-value rules read while the scheduler walks the graph. */
interface RowScan {
  readonly materialized: ReadonlySet<Node>;
  /** Whether each node visited so far holds a loop its consumers would repeat. */
  readonly heavy: ReadonlyMap<Node, boolean>;
  /** Row length of each row value found so far. */
  readonly rowLen: ReadonlyMap<Node, number>;
  /** Row length of each full-size value heavy only through row values broadcast back. */
  readonly rowWide: ReadonlyMap<Node, number>;
}

/**
 * The row length when `n` is a row value: a reduction over trailing axes of an input that holds no loop of its own
 * other than row values of the same length broadcast back (softmax's sum of `exp(x − max)`), or an elementwise op
 * of row values of one length and of its own shape (null otherwise).
 */
function rowValueLength(n: Node, { materialized, heavy, rowLen, rowWide }: RowScan): number | null {
  const heavySrc = heavySources(n, materialized, (s) => heavy.get(s) === true);
  const own = rowReduceLength(n);
  if (own !== null) return heavySrc.every((s) => rowWide.get(s) === own) ? own : null;
  if (!ELEMENTWISE_OPS.has(n.op) || heavySrc.length === 0) return null;
  const len = rowLen.get(heavySrc[0]);
  if (len === undefined) return null;
  return heavySrc.every((s) => rowLen.get(s) === len && sameShape(s, n)) ? len : null;
}

/**
 * The row length when `n` is a full-size value heavy only through row values broadcast back: such a broadcast, or
 * an elementwise op of those (and of light values) of its own shape (null otherwise).
 */
function rowWideLength(n: Node, { materialized, heavy, rowLen, rowWide }: RowScan): number | null {
  if (n.op === Op.Expand) {
    const len = rowLen.get(n.src[0]);
    return len !== undefined && !materialized.has(n.src[0]) && broadcastsRow(n, len) ? len : null;
  }
  if (!ELEMENTWISE_OPS.has(n.op)) return null;
  const heavySrc = heavySources(n, materialized, (s) => heavy.get(s) === true);
  const len = heavySrc.length === 0 ? undefined : rowWide.get(heavySrc[0]);
  if (len === undefined) return null;
  return heavySrc.every((s) => rowWide.get(s) === len && sameShape(s, n)) ? len : null;
}

/** Whether `c` broadcasts a `[rows, 1...]` row value back over trailing axes of total length `len`. */
function broadcastsRow(c: Node, len: number): boolean {
  if (c.op !== Op.Expand) return false;
  const from = c.src[0].shape;
  const to = c.shape;
  const first = to.findIndex((d, i) => d !== from[i]);
  if (first < 0) return false;
  if (from.slice(first).some((d) => d !== 1)) return false;
  return to.slice(first).reduce((a, b) => a * b, 1) === len;
}

/**
 * Whether every node of a kernel's region on a path from its root to a broadcast of a row value keeps the flat
 * index (elementwise ops and reshapes), so that consecutive outputs of a row share the row value.
 */
function rowPathsKeepIndex(region: readonly Node[], rowed: ReadonlySet<Node>): boolean {
  const inRegion = new Set(region);
  const memo = new Map<Node, boolean>();
  // Does n lead (inside the region) to a broadcast of a row value?
  const leads = (n: Node): boolean => {
    let r = memo.get(n);
    if (r !== undefined) return r;
    memo.set(n, false);
    r = n.op === Op.Expand && rowed.has(n.src[0])
      ? true
      : n.src.some((s) => inRegion.has(s) && !rowed.has(s) && leads(s));
    memo.set(n, r);
    return r;
  };
  for (const n of region) {
    if (rowed.has(n) || !leads(n)) continue;
    if (n.op === Op.Expand && rowed.has(n.src[0])) continue;
    if (!ELEMENTWISE_OPS.has(n.op) && n.op !== Op.Reshape) return false;
  }
  return true;
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
