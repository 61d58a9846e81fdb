/**
 * Vector-Jacobian products: one row per primitive. Given a node `n = op(x, y, ...)` and the cotangent `g` of its
 * output (same shape), each rule returns the cotangent of every input (null where there is none: integer or
 * boolean inputs, comparison results, indices). Gradients are ordinary IR, so they fuse and run like any other
 * expression.
 *
 * @module
 */
import type { Node } from "../ir/node.ts";
import { iotaNode, mk } from "../ir/node.ts";
import { type CustomVjpArg, Op } from "../ir/ops.ts";
import type { Shape } from "../shape.ts";
import { type F32, Tensor } from "../tensor/tensor.ts";

const t = (n: Node): F32 => new Tensor<Shape, "f32">(n);
/** A vjp rule: cotangents of the inputs given the node and the cotangent of its output. */
export type VjpRule = (n: Node, g: Node) => (Node | null)[];

const none: VjpRule = (n) => n.src.map(() => null);

/** Sums `g` (shape of an expanded view) back to `shape` (the view's input, with 1s where it broadcast). */
function unexpand(g: Node, shape: readonly number[]): Node {
  const axes = shape.map((d, i) => (d === 1 && g.shape[i] !== 1 ? i : -1)).filter((i) => i >= 0);
  return axes.length === 0 ? g : mk(Op.Sum, [g], { axes });
}

/** Gradient of a strided slice along every axis: interleave zeros for the step, then pad to the input size. */
function unshrink(g: Node, n: Node): Node {
  const { start, step, len } = n.argOf(Op.Shrink);
  const inShape = n.src[0].shape;
  let x = t(g);
  for (let ax = 0; ax < inShape.length; ax++) {
    const L = len[ax];
    const s = step[ax];
    if (L === 0) return t(g).reshape([...g.shape]).sum().mul(0).expand([...inShape]).node; // empty slice: zero gradient
    let lo = start[ax];
    if (s < 0) {
      // Flip so the step is positive; the lowest input index touched is start + (L-1)·step.
      const spec = inShape.map((_, i) => (i === ax ? [null, null, -1] as [null, null, number] : null));
      x = x.slice(...spec);
      lo = start[ax] + (L - 1) * s;
    }
    const as = Math.abs(s);
    if (as > 1) {
      // [.., L, ..] -> [.., L, |s|, ..] (zeros after each element) -> [.., L·|s|, ..] -> keep (L-1)·|s|+1.
      const shp = [...x.shape];
      const inner = x.unsqueeze(ax + 1).pad(
        shp.map(() => [0, 0] as [number, number]).toSpliced(ax + 1, 0, [0, as - 1]),
      );
      const merged = inner.reshape([...shp.slice(0, ax), L * as, ...shp.slice(ax + 1)]);
      x = merged.slice(
        ...shp.map((_, i) => (i === ax ? [0, (L - 1) * as + 1] as [number, number] : null)),
      );
    }
    const extent = (L - 1) * as + 1;
    x = x.pad(
      x.shape.map((_, i) => (i === ax ? [lo, inShape[ax] - lo - extent] : [0, 0]) as [number, number]),
    );
  }
  return x.node;
}

/** The vjp of every op. */
export const VJP_RULES: { [O in Op]: VjpRule } = {
  [Op.Buffer]: none,
  [Op.Const]: none,
  [Op.Iota]: none,
  [Op.Rand]: none,
  // d(-x) = -g
  [Op.Neg]: (_n, g) => [t(g).neg().node],
  // d(1/x) = -1/x² · g
  [Op.Recip]: (n, g) => [t(g).mul(t(n).square()).neg().node],
  // d(e^x) = e^x · g
  [Op.Exp]: (n, g) => [t(g).mul(t(n)).node],
  // d(log x) = g / x
  [Op.Log]: (n, g) => [t(g).div(t(n.src[0])).node],
  // d(√x) = g / (2√x)
  [Op.Sqrt]: (n, g) => [t(g).div(t(n).mul(2)).node],
  // d(sin x) = cos x · g
  [Op.Sin]: (n, g) => [t(g).mul(t(n.src[0]).cos()).node],
  // d(cos x) = -sin x · g
  [Op.Cos]: (n, g) => [t(g).mul(t(n.src[0]).sin()).neg().node],
  // d(tanh x) = (1 - tanh² x) · g
  [Op.Tanh]: (n, g) => [t(g).mul(t(n).square().neg().add(1)).node],
  // d|x| = sign(x) · g (0 at 0)
  [Op.Abs]: (n, g) => {
    const x = t(n.src[0]);
    return [x.lt(0).where(t(g).neg(), x.gt(0).where(t(g), 0)).node];
  },
  // Float-to-float casts pass the gradient (converted back); casts to or from integers have none.
  [Op.Cast]: (n, g) => {
    const from = n.src[0].dtype;
    const float = (d: string) => d === "f32" || d === "f16";
    return [float(from) && float(n.dtype) ? t(g).cast(from).node : null];
  },
  // d(x + y) = (g, g)
  [Op.Add]: (_n, g) => [g, g],
  // d(x·y) = (g·y, g·x)
  [Op.Mul]: (n, g) => [t(g).mul(t(n.src[1])).node, t(g).mul(t(n.src[0])).node],
  // d(x/y) = (g/y, -g·x/y²)
  [Op.Div]: (n, g) => {
    const y = t(n.src[1]);
    return [t(g).div(y).node, t(g).mul(t(n)).div(y).neg().node];
  },
  // d max(x, y): g goes to the larger input, split evenly on ties; where either is NaN (the result is NaN) each
  // input gets all of g, as torch.maximum's derivative (neither is smaller than the other, nor equal to it).
  [Op.Max]: (n, g) => {
    const [x, y] = [t(n.src[0]), t(n.src[1])];
    const half = x.eq(y).where<"f32">(0.5, 1);
    const wx = x.lt(y).where<"f32">(0, half);
    const wy = y.lt(x).where<"f32">(0, half);
    return [t(g).mul(wx).node, t(g).mul(wy).node];
  },
  // d(x^y) = (y·x^(y-1)·g, x^y·log x·g), the first taken as 0 where y = 0 (0·0^-1 would be NaN at x = 0, as
  // PyTorch), the second as 0 where x ≤ 0
  [Op.Pow]: (n, g) => {
    const [x, y] = [t(n.src[0]), t(n.src[1])];
    const dx = y.eq(0).where(0, t(g).mul(y).mul(x.pow(y.sub(1))));
    const dy = x.gt(0).where(t(g).mul(t(n)).mul(x.log()), 0);
    return [dx.node, dy.node];
  },
  [Op.CmpLt]: none,
  [Op.CmpEq]: none,
  // d where(c, a, b) = (-, where(c, g, 0), where(c, 0, g))
  [Op.Where]: (n, g) => {
    const c = new Tensor<Shape, "bool">(n.src[0]);
    return [null, c.where(t(g), 0).node, c.where(0, t(g)).node];
  },
  // d sum = g broadcast back over the reduced axes
  [Op.Sum]: (n, g) => [mk(Op.Expand, [g], { shape: [...n.src[0].shape] })],
  // d max = g to the positions equal to the max, split evenly among ties
  [Op.ReduceMax]: (n, g) => {
    const { axes } = n.argOf(Op.ReduceMax);
    const x = t(n.src[0]);
    const full = [...n.src[0].shape];
    const hit = x.eq(t(mk(Op.Expand, [n], { shape: full }))).cast("f32");
    const count = t(mk(Op.Sum, [hit.node], { axes }));
    const share = t(mk(Op.Expand, [t(g).div(count).node], { shape: full }));
    return [hit.mul(share).node];
  },
  [Op.ArgMax]: none,
  // d(A·B) = (g·Bᵀ, Aᵀ·g)
  [Op.Dot]: (n, g) => {
    const [a, b] = [t(n.src[0]), t(n.src[1])];
    return [mk(Op.Dot, [g, b.transpose().node], null), mk(Op.Dot, [a.transpose().node, g], null)];
  },
  [Op.Reshape]: (n, g) => [mk(Op.Reshape, [g], { shape: [...n.src[0].shape] })],
  [Op.Permute]: (n, g) => {
    const { perm } = n.argOf(Op.Permute);
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return [mk(Op.Permute, [g], { perm: inv })];
  },
  [Op.Expand]: (n, g) => [unexpand(g, n.src[0].shape)],
  [Op.Shrink]: (n, g) => [unshrink(g, n)],
  [Op.Pad]: (n, g) => {
    const { pads } = n.argOf(Op.Pad);
    return [mk(Op.Shrink, [g], {
      start: pads.map(([a]) => a),
      step: pads.map(() => 1),
      len: [...n.src[0].shape],
    })];
  },
  // d gather = scatter-add of g into the gathered positions, as a one-hot matrix product.
  [Op.Gather]: (n, g) => {
    const { axis } = n.argOf(Op.Gather);
    const [x, index] = n.src;
    const pre = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const post = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const size = x.shape[axis];
    const p = index.size;
    const idx = new Tensor<Shape, "i32">(index);
    const oh = idx.cast("i32").reshape([p, 1]).eq(
      new Tensor<Shape, "i32">(iotaNode(size, "i32", x.device)),
    )
      .cast("f32");
    const ohT = oh.transpose().reshape([1, size, p]).expand([pre, size, p]);
    const g3 = t(g).reshape([pre, p, post]);
    const gx = mk(Op.Dot, [ohT.node, g3.node], null);
    return [mk(Op.Reshape, [gx], { shape: [...x.shape] }), null];
  },
  [Op.Detach]: none,
  [Op.Custom]: (n) => {
    throw new Error(
      `autodiff: the hand-written kernel ${
        n.argOf(Op.Custom).name
      } has no derivative rule; wrap it in customVjp`,
    );
  },
  [Op.CustomVjp]: (n, g) => {
    // The output's own graph is not differentiated; the rule's inputs get the user's cotangents (see backprop).
    void (n.arg as CustomVjpArg<Node>);
    void g;
    return [null];
  },
};
