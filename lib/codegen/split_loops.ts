/**
 * The loop-budget pass. llvmpipe (Mesa's CPU driver) counts loop iterations per invocation across *all* loops of
 * a shader, nested or sequential, and silently stops every loop once the count reaches 65,535 (measured: two
 * sequential loops of 40,000 run 65,534 iterations in total; a 3 x 32,768 nest runs 65,533). Splitting a loop
 * into a nest therefore does not help. This pass rewrites every reduction longer than {@link LOOP_BUDGET} into
 * two passes (chunks of at most the budget, then a reduction over the chunk results; an argmax keeps each chunk's
 * maximum and where it is), and the scheduler keeps the summed trip count of each fused kernel under the same
 * budget; the kernel verifier rejects anything over it.
 *
 * @module
 */
import { iotaNode, mk, type Node } from "../ir/node.ts";
import { Op } from "../ir/ops.ts";
import { toposort } from "../ir/node.ts";
import { lowest } from "../dtype.ts";

/** Most loop iterations one invocation may run (below llvmpipe's 65,535 with a margin for loop bookkeeping). */
export const LOOP_BUDGET = 60_000;

/** Trip count of a reduction node's loop (0 for other nodes). */
export function tripCount(n: Node): number {
  if (n.op === Op.Dot) return n.src[0].shape[n.src[0].shape.length - 1];
  if (n.op === Op.ArgMax) return n.src[0].shape[n.argOf(Op.ArgMax).axis];
  if (n.op === Op.Sum || n.op === Op.ReduceMax) {
    const axes = (n.arg as { axes: number[] }).axes;
    return axes.reduce((a, i) => a * n.src[0].shape[i], 1);
  }
  return 0;
}

/** Chunks of about √total elements (at least 1,024, at most the budget): enough parallel first-pass outputs. */
function chunking(total: number, limit: number): { len: number; chunks: number } {
  const target = Math.min(limit, Math.max(1024, Math.ceil(Math.sqrt(total))));
  const chunks = Math.ceil(total / target);
  return { len: Math.ceil(total / chunks), chunks };
}

/**
 * Whether a reduction should run in two passes: when its loop is over the budget, or when it is long and has so
 * few outputs that one pass would leave the device's cores idle.
 */
function shouldSplit(n: Node, limit: number): boolean {
  const trip = tripCount(n);
  return trip > limit || (trip > 16384 && n.size * 64 < trip && n.size < 1024);
}

/**
 * `x` with the reduced `axes` moved last, flattened and cut into `chunks` of `len` (the last padded with `pad`):
 * `[...kept, chunks, len]`, where `kept` are the sizes of the other axes in order.
 */
function chunked(x: Node, axes: readonly number[], limit: number, pad: number) {
  const keep = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const perm = [...keep, ...axes];
  let v = perm.every((p, i) => p === i) ? x : mk(Op.Permute, [x], { perm });
  const kept = keep.map((i) => x.shape[i]);
  const total = axes.reduce((a, i) => a * x.shape[i], 1);
  const { len, chunks } = chunking(total, limit);
  v = mk(Op.Reshape, [v], { shape: [...kept, total] });
  const pads = [...kept.map(() => [0, 0] as [number, number]), [0, len * chunks - total] as [number, number]];
  if (len * chunks !== total) v = mk(Op.Pad, [v], { pads, value: pad });
  return { v: mk(Op.Reshape, [v], { shape: [...kept, chunks, len] }), kept, len, chunks };
}

function splitReduce(n: Node, x: Node, limit: number): Node {
  const op = n.op as Op.Sum | Op.ReduceMax;
  const axes = (n.arg as { axes: number[] }).axes;
  const { v, kept } = chunked(x, axes, limit, op === Op.Sum ? 0 : lowest(x.dtype));
  const r = kept.length;
  return mk(Op.Reshape, [mk(op, [mk(op, [v], { axes: [r + 1] })], { axes: [r] })], { shape: [...n.shape] });
}

function splitDot(n: Node, a: Node, b: Node, limit: number): Node {
  const r = a.shape.length;
  const batch = a.shape.slice(0, r - 2);
  const [m, k] = a.shape.slice(r - 2);
  const nn = b.shape[r - 1];
  const { len, chunks } = chunking(k, limit);
  const zero = (rank: number) => new Array(rank).fill(0).map(() => [0, 0] as [number, number]);
  let ap = a;
  let bp = b;
  if (len * chunks !== k) {
    ap = mk(Op.Pad, [a], { pads: [...zero(r - 1), [0, len * chunks - k]], value: 0 });
    bp = mk(Op.Pad, [b], { pads: [...zero(r - 2), [0, len * chunks - k], [0, 0]], value: 0 });
  }
  const bi = batch.map((_, i) => i);
  ap = mk(Op.Reshape, [ap], { shape: [...batch, m, chunks, len] });
  ap = mk(Op.Permute, [ap], { perm: [...bi, r - 1, r - 2, r] });
  bp = mk(Op.Reshape, [bp], { shape: [...batch, chunks, len, nn] });
  const d = mk(Op.Dot, [ap, bp], null);
  const s = mk(Op.Sum, [d], { axes: [r - 2] });
  return mk(Op.Reshape, [s], { shape: [...n.shape] });
}

/**
 * An argmax over `total` > limit elements in two passes: per chunk, the maximum and the index of its first
 * occurrence; then the first chunk that holds the largest maximum, and the index inside it. Chunks come in order
 * and each keeps its first maximum, so the result is the first occurrence overall, as one pass gives.
 */
function splitArgMax(n: Node, x: Node, limit: number): Node {
  // The padding is the lowest value, which never wins: the first maximum is always a real element.
  const { v, kept, len, chunks } = chunked(x, [n.argOf(Op.ArgMax).axis], limit, lowest(x.dtype));
  const k = kept.length;
  const within = mk(Op.ArgMax, [v], { axis: k + 1 }); // [...kept, chunks, 1]
  const chunk = mk(Op.ArgMax, [mk(Op.ReduceMax, [v], { axes: [k + 1] })], { axis: k }); // [...kept, 1, 1]
  const perChunk = [...kept, chunks, 1];
  const ones = kept.map(() => 1);
  const column = (values: Node) =>
    mk(Op.Expand, [mk(Op.Reshape, [values], { shape: [...ones, chunks, 1] })], {
      shape: perChunk,
    });
  // Where each chunk starts, c·len, as the first column of 0, 1, ... laid out [chunks, len] (the graph's constants
  // are launch parameters fixed before this pass, so it makes none).
  const grid = mk(Op.Reshape, [iotaNode(chunks * len, "i32", x.device)], { shape: [chunks, len] });
  const starts = mk(Op.Shrink, [grid], { start: [0, 0], step: [1, 1], len: [chunks, 1] });
  const found = mk(Op.Add, [within, column(starts)], null); // each chunk's first maximum, as an index of the axis
  const chosen = mk(Op.CmpEq, [
    column(iotaNode(chunks, "i32", x.device)),
    mk(Op.Expand, [chunk], { shape: perChunk }),
  ], null);
  const picked = mk(Op.Mul, [found, mk(Op.Cast, [chosen], { dtype: "i32" })], null);
  return mk(Op.Reshape, [mk(Op.Sum, [picked], { axes: [k] })], { shape: [...n.shape] });
}

/** Rewrites reductions longer than `limit` into two passes. Returns the (possibly new) roots, same order. */
export function splitLongLoops(roots: readonly Node[], limit = LOOP_BUDGET): Node[] {
  const order = toposort(roots);
  const long = (n: Node) => (n.op === Op.ArgMax ? tripCount(n) > limit : shouldSplit(n, limit));
  if (!order.some(long)) return [...roots];
  const map = new Map<Node, Node>();
  for (const n of order) {
    if (n.storage !== null || n.src.length === 0) {
      map.set(n, n);
      continue;
    }
    const src = n.src.map((s) => map.get(s)!);
    let out: Node;
    if ((n.op === Op.Sum || n.op === Op.ReduceMax) && shouldSplit(n, limit)) {
      out = splitReduce(n, src[0], limit);
    } else if (n.op === Op.Dot && tripCount(n) > limit) out = splitDot(n, src[0], src[1], limit);
    else if (n.op === Op.ArgMax && tripCount(n) > limit) out = splitArgMax(n, src[0], limit);
    else if (src.every((s, i) => s === n.src[i])) out = n;
    // A custom-gradient marker is the identity on values; realization needs only the value.
    else if (n.op === Op.CustomVjp) out = src[0];
    else out = mk(n.op, src, n.arg as never, n.dtype);
    map.set(n, out);
  }
  return roots.map((r) => map.get(r)!);
}
