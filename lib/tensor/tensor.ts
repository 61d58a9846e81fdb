/**
 * `Tensor<S, D>`: a lazy, typed n-dimensional array. Methods only build IR; work happens when a tensor is
 * realized (`await t.data()`, `await realize(...)`). Static shape rules are in the signatures (see `shape.ts`),
 * and each has a runtime twin so that every misuse fails with a message naming the op and the shapes.
 *
 * @module
 */
import {
  allocData,
  checkDType,
  checkFloat,
  checkNumeric,
  checkSameDType,
  checkScalar,
  type DataArray,
  type DType,
  DTYPE_INFO,
  GATHER_FILL,
} from "../dtype.ts";
import {
  type AxisOk,
  broadcast,
  type BroadcastOk,
  type BroadcastShape,
  checkPermutation,
  checkShape,
  fmt,
  type MatmulOk,
  type MatmulShape,
  matmulShape,
  normAxes,
  normAxis,
  type Reduced,
  reduced,
  type ReshapeOk,
  reshapeShape,
  type Shape,
  size as sizeOf,
  type Transposed,
  type Writable,
} from "../shape.ts";
import {
  bufferNode,
  constNode,
  customVjpNode,
  type DeviceName,
  iotaNode,
  mk,
  type Node,
  releaseBufferNode,
  releasedBufferNode,
  type Storage,
} from "../ir/node.ts";
import { Op } from "../ir/ops.ts";
import { getBackend, HostStorage, realizeNodes, resolveStorage, uploadStorage } from "../runtime/realize.ts";
import { contiguousView } from "../runtime/plan.ts";

const NO_NODES: ReadonlySet<Node> = new Set();

/** Nested arrays as returned by {@link Tensor.toArray}. */
export type NestedArray = number | NestedArray[];

/** Operand of a binary op: a tensor of the same dtype, or a number that dtype holds exactly (see `checkScalar`). */
export type Operand<D extends DType> = Tensor<Shape, D> | number;

/**
 * A float32 tensor of any shape: the library's one name for it. Shape types pay at the public edges (creation,
 * `matmul`, layer signatures); inside, code works with plain `F32` and checks shapes at run time.
 */
export type F32 = Tensor<Shape, "f32">;

/** A float16 tensor of any shape (frozen weights stored at half size, computed with in f32). */
export type F16 = Tensor<Shape, "f16">;

/** An int32 tensor of any shape (token ids, targets, indices). */
export type I32 = Tensor<Shape, "i32">;

/**
 * A lazy n-dimensional array with shape `S` and dtype `D`.
 *
 * Tensors are covariant in shape and dtype (a `Tensor<[2, 3], "f32">` is a `Tensor`): the static shape checks sit
 * in method parameters, which TypeScript cannot measure variance through, so the annotation states it.
 */
// @ts-expect-error: variance annotation stated on purpose (see above); the checker cannot verify it through the conditional shape types.
export class Tensor<out S extends Shape = Shape, out D extends DType = DType> {
  #node: Node;

  /** Wraps an IR node. Users create tensors with `tensor`, `zeros`, `randn`, ... */
  constructor(node: Node) {
    this.#node = node;
  }

  /** The IR node currently behind this tensor. */
  get node(): Node {
    return this.#node;
  }

  /** The shape. */
  get shape(): S {
    return this.#node.shape as S;
  }

  /** The dtype. */
  get dtype(): D {
    return this.#node.dtype as D;
  }

  /** The device holding (or that will hold) the data. */
  get device(): DeviceName {
    return this.#node.device;
  }

  /** Number of axes. */
  get ndim(): number {
    return this.#node.shape.length;
  }

  /** Number of elements. */
  get size(): number {
    return this.#node.size;
  }

  /** True once the data exists in device memory (no pending computation). */
  get isRealized(): boolean {
    return this.#node.storage !== null;
  }

  /** Replaces the node after realization (runtime only). */
  setNode(n: Node): void {
    if (n.shape.join() !== this.#node.shape.join() || n.dtype !== this.#node.dtype) {
      throw new Error("setNode: shape or dtype differs");
    }
    this.#node = n;
  }

  #wrap<S2 extends Shape, D2 extends DType = D>(n: Node): Tensor<S2, D2> {
    const t = new Tensor<S2, D2>(n);
    // An op that changes nothing gives a tensor of its own on the same node (see holdTogether).
    if (n === this.#node) holdTogether(n, [this, t]);
    return t;
  }

  /** A constant with this tensor's dtype and device, broadcast to `shape`. */
  #const(value: number, shape: readonly number[], dtype: DType = this.dtype): Node {
    return constNode(value, shape, dtype, this.device);
  }

  /** Broadcasts a node to `shape` (rank-extend with leading 1s, then Expand). */
  static expandNode(n: Node, shape: readonly number[]): Node {
    if (n.shape.join() === shape.join()) return n;
    let x = n;
    if (x.shape.length < shape.length) {
      x = mk(Op.Reshape, [x], { shape: [...new Array(shape.length - x.shape.length).fill(1), ...x.shape] });
    }
    if (x.op === Op.Const) return constNode(x.argOf(Op.Const).value, shape, x.dtype, x.device);
    return x.shape.join() === shape.join() ? x : mk(Op.Expand, [x], { shape: [...shape] });
  }

  #operand(op: string, other: Operand<D>): Node {
    if (typeof other === "number") return this.#const(checkScalar(op, this.dtype, other), []);
    if (!(other instanceof Tensor)) {
      throw new TypeError(`${op}: expected a Tensor or a number, got ${typeof other}`);
    }
    checkSameDType(op, this.dtype, other.dtype);
    return other.#node;
  }

  #binary(op: Op, name: string, other: Operand<D>, dtype?: DType): Node {
    if (op !== Op.CmpEq) checkNumeric(name, this.dtype);
    const b = this.#operand(name, other);
    const shape = broadcast(name, this.shape, b.shape);
    return mk(op, [Tensor.expandNode(this.#node, shape), Tensor.expandNode(b, shape)], null, dtype);
  }

  #unary(op: Op, name: string, float = true): Tensor<S, D> {
    if (float) checkFloat(name, this.dtype);
    checkNumeric(name, this.dtype);
    return this.#wrap(mk(op, [this.#node], null));
  }

  // ----- elementwise binary -----

  /** Elementwise sum with broadcasting. */
  add(other: number): Tensor<S, D>;
  /** Elementwise sum with broadcasting. */
  add<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, D>;
  add(other: Operand<D>): unknown {
    return this.#wrap(this.#binary(Op.Add, "add", other));
  }
  /** Elementwise difference with broadcasting. */
  sub(other: number): Tensor<S, D>;
  /** Elementwise difference with broadcasting. */
  sub<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, D>;
  sub(other: Operand<D>): unknown {
    checkNumeric("sub", this.dtype);
    if (typeof other !== "number") return this.#wrap(this.#binary(Op.Add, "sub", other.neg()));
    checkScalar("sub", this.dtype, other);
    // x − v = x + (−v), with −v wrapped into the integer dtype's range as integer addition wraps.
    const neg = this.dtype === "i32" ? -other | 0 : this.dtype === "u32" ? -other >>> 0 : -other;
    return this.#wrap(this.#binary(Op.Add, "sub", neg));
  }
  /** Elementwise product with broadcasting. */
  mul(other: number): Tensor<S, D>;
  /** Elementwise product with broadcasting. */
  mul<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, D>;
  mul(other: Operand<D>): unknown {
    return this.#wrap(this.#binary(Op.Mul, "mul", other));
  }
  /** Elementwise quotient with broadcasting (integer division truncates; an integer x / 0 is x, as in WGSL). */
  div(other: number): Tensor<S, D>;
  /** Elementwise quotient with broadcasting (integer division truncates; an integer x / 0 is x, as in WGSL). */
  div<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, D>;
  div(other: Operand<D>): unknown {
    return this.#wrap(this.#binary(Op.Div, "div", other));
  }
  /** Elementwise power with broadcasting; negative bases need integer exponents. */
  pow(other: number): Tensor<S, D>;
  /** Elementwise power with broadcasting; negative bases need integer exponents. */
  pow<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, D>;
  pow(other: Operand<D>): unknown {
    checkFloat("pow", this.dtype);
    return this.#wrap(this.#binary(Op.Pow, "pow", other));
  }
  /** Elementwise maximum with broadcasting. */
  maximum(other: number): Tensor<S, D>;
  /** Elementwise maximum with broadcasting. */
  maximum<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, D>;
  maximum(other: Operand<D>): unknown {
    return this.#wrap(this.#binary(Op.Max, "maximum", other));
  }
  /** Elementwise minimum with broadcasting. */
  minimum(other: number): Tensor<S, D>;
  /** Elementwise minimum with broadcasting. */
  minimum<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, D>;
  minimum(other: Operand<D>): unknown {
    if (typeof other === "number") checkScalar("minimum", this.dtype, other);
    if (!DTYPE_INFO[this.dtype].isFloat) {
      // −max(−a, −b) is wrong where integer negation wraps (u32 0, i32 −2³¹): pick the smaller one instead.
      const less = this.#wrap<Shape, "bool">(this.#binary(Op.CmpLt, "minimum", other));
      return less.where(this.#l, other as Tensor<Shape, D> | number);
    }
    const b = typeof other === "number" ? -other : other.neg();
    return this.#wrap<Shape, D>(this.neg().#binary(Op.Max, "minimum", b)).neg();
  }
  /** `this < other` elementwise. */
  lt(other: number): Tensor<S, "bool">;
  /** `this < other` elementwise. */
  lt<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, "bool">;
  lt(other: Operand<D>): unknown {
    return this.#wrap(this.#binary(Op.CmpLt, "lt", other));
  }
  /** `this > other` elementwise. */
  gt(other: number): Tensor<S, "bool">;
  /** `this > other` elementwise. */
  gt<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, "bool">;
  gt(other: Operand<D>): unknown {
    return this.#wrap(this.#gtNode("gt", other));
  }
  /** `this <= other` elementwise. */
  le(other: number): Tensor<S, "bool">;
  /** `this <= other` elementwise. */
  le<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, "bool">;
  le(other: Operand<D>): unknown {
    if (DTYPE_INFO[this.dtype].isFloat) {
      return this.#orEqual(this.#binary(Op.CmpLt, "le", other), "le", other);
    }
    return this.#wrap<S, "bool">(this.#gtNode("le", other)).logicalNot();
  }
  /** `this >= other` elementwise. */
  ge(other: number): Tensor<S, "bool">;
  /** `this >= other` elementwise. */
  ge<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, "bool">;
  ge(other: Operand<D>): unknown {
    if (DTYPE_INFO[this.dtype].isFloat) return this.#orEqual(this.#gtNode("ge", other), "ge", other);
    return this.#wrap<S, "bool">(this.#binary(Op.CmpLt, "ge", other)).logicalNot();
  }

  /**
   * `strict` or `this == other`: a float `<=` or `>=`, false where either side is NaN (the negation of the strict
   * opposite, enough for integers, would be true there).
   */
  #orEqual(strict: Node, name: string, other: Operand<D>): Tensor<Shape, "bool"> {
    const s = this.#wrap<Shape, "bool">(strict);
    return s.where(s, this.#wrap<Shape, "bool">(this.#binary(Op.CmpEq, name, other)));
  }
  /** `this == other` elementwise. */
  eq(other: number): Tensor<S, "bool">;
  /** `this == other` elementwise. */
  eq<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, "bool">;
  eq(other: Operand<D>): unknown {
    return this.#wrap(this.#binary(Op.CmpEq, "eq", other));
  }
  /** `this != other` elementwise. */
  ne(other: number): Tensor<S, "bool">;
  /** `this != other` elementwise. */
  ne<S2 extends Shape>(other: Tensor<S2, D> & BroadcastOk<S, S2>): Tensor<BroadcastShape<S, S2>, "bool">;
  ne(other: Operand<D>): unknown {
    return this.#wrap<S, "bool">(this.#binary(Op.CmpEq, "ne", other)).logicalNot();
  }

  #gtNode(name: string, other: Operand<D>): Node {
    checkNumeric(name, this.dtype);
    const b = this.#operand(name, other);
    const shape = broadcast(name, this.shape, b.shape);
    return mk(Op.CmpLt, [Tensor.expandNode(b, shape), Tensor.expandNode(this.#node, shape)], null);
  }

  /** Logical not of a bool tensor. */
  logicalNot(): Tensor<S, "bool"> {
    if (this.dtype !== "bool") throw new TypeError(`logicalNot needs a bool tensor, got ${this.dtype}`);
    return this.#wrap(mk(Op.CmpEq, [this.#node, this.#const(0, this.shape)], null));
  }

  /** Picks `a` where this (bool) tensor is true, else `b`: with both of this tensor's shape (or numbers), that shape. */
  where<T extends DType>(a: Tensor<S, T> | number, b: Tensor<S, T> | number): Tensor<S, T>;
  /** Picks `a` where this (bool) tensor is true, else `b`; all three broadcast. */
  where<T extends DType>(a: Tensor<Shape, T> | number, b: Tensor<Shape, T> | number): Tensor<number[], T>;
  where<T extends DType>(a: Tensor<Shape, T> | number, b: Tensor<Shape, T> | number): Tensor<Shape, T> {
    if (this.dtype !== "bool") throw new TypeError(`where: condition must be bool, got ${this.dtype}`);
    const dt = a instanceof Tensor ? a.dtype : b instanceof Tensor ? b.dtype : "f32";
    const an = a instanceof Tensor ? a.#node : constNode(checkScalar("where", dt, a), [], dt, this.device);
    const bn = b instanceof Tensor ? b.#node : constNode(checkScalar("where", dt, b), [], dt, this.device);
    checkSameDType("where", an.dtype, bn.dtype);
    const shape = broadcast("where", broadcast("where", this.shape, an.shape), bn.shape);
    return this.#wrap(mk(Op.Where, [this.#node, an, bn].map((n) => Tensor.expandNode(n, shape)), null));
  }

  // ----- elementwise unary -----

  /** `-x`. */
  neg(): Tensor<S, D> {
    return this.#unary(Op.Neg, "neg", false);
  }
  /** `1/x`. */
  reciprocal(): Tensor<S, D> {
    return this.#unary(Op.Recip, "reciprocal");
  }
  /** `e^x`. */
  exp(): Tensor<S, D> {
    return this.#unary(Op.Exp, "exp");
  }
  /** Natural logarithm. */
  log(): Tensor<S, D> {
    return this.#unary(Op.Log, "log");
  }
  /** Square root. */
  sqrt(): Tensor<S, D> {
    return this.#unary(Op.Sqrt, "sqrt");
  }
  /** `1/sqrt(x)`. */
  rsqrt(): Tensor<S, D> {
    return this.sqrt().reciprocal();
  }
  /** Sine. */
  sin(): Tensor<S, D> {
    return this.#unary(Op.Sin, "sin");
  }
  /** Cosine. */
  cos(): Tensor<S, D> {
    return this.#unary(Op.Cos, "cos");
  }
  /** Hyperbolic tangent. */
  tanh(): Tensor<S, D> {
    return this.#unary(Op.Tanh, "tanh");
  }
  /** `|x|`. */
  abs(): Tensor<S, D> {
    return this.#unary(Op.Abs, "abs", false);
  }
  /** `x*x`. */
  square(): Tensor<S, D> {
    checkNumeric("square", this.dtype);
    return this.#wrap(mk(Op.Mul, [this.#node, this.#node], null));
  }
  /** `1/(1+e^-x)`, with gradient `σ(x)(1 − σ(x))`. */
  sigmoid(): Tensor<S, D> {
    checkFloat("sigmoid", this.dtype);
    // Differentiating the composite multiplies e^-x (inf below x ≈ -88.7) by 1/(1+e^-x)² (0 there): NaN.
    // d σ(x) = σ(x)(1 − σ(x)) · g
    const value = this.neg().exp().add(1).reciprocal().#node;
    return this.#wrap(customVjpNode(value, [this.#node], (g, out) => {
      const s = new Tensor<Shape, D>(out);
      return [new Tensor<Shape, D>(g).mul(s.mul(s.neg().add(1))).#node];
    }));
  }
  /** This tensor with its shape widened to `Shape` (for internal composites). */
  get #l(): Tensor<Shape, D> {
    return this;
  }
  /** `max(x, 0)` (the value of `maximum(0)`), with gradient 1 where `x > 0` and 0 elsewhere, 0 at `x = 0` too. */
  relu(): Tensor<S, D> {
    // The value is Max, whose single use of x keeps a matmul's epilogue fused; the gradient is relu's own, since
    // Max's splits a tie evenly (½ at x = 0).
    const value = this.maximum(0).#node;
    return this.#wrap(customVjpNode(value, [this.#node], (g, _out, [x]) => {
      const dx = new Tensor<Shape, D>(x).gt(0).where(new Tensor<Shape, D>(g), 0);
      return [dx.#node];
    }));
  }
  /** GELU, tanh approximation: `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))`. */
  gelu(): Tensor<S, D> {
    checkFloat("gelu", this.dtype);
    const x = this.#l;
    const inner = x.add(x.square().mul(x).mul(0.044715)).mul(Math.sqrt(2 / Math.PI));
    return withShape<S, D>(x.mul(0.5).mul(inner.tanh().add(1)), this.shape);
  }
  /** SiLU (swish): `x * sigmoid(x)`. */
  silu(): Tensor<S, D> {
    return withShape<S, D>(this.#l.mul(this.#l.sigmoid()), this.shape);
  }

  /** Converts to another dtype (float→int truncates toward zero and saturates). */
  cast<T extends DType>(dtype: T): Tensor<S, T> {
    checkDType(dtype, "cast");
    if (dtype === (this.dtype as DType)) return this.#wrap(this.#node);
    return this.#wrap(mk(Op.Cast, [this.#node], { dtype }, dtype));
  }

  // ----- reductions -----

  #reduce(
    op: Op.Sum | Op.ReduceMax,
    name: string,
    axis: number | readonly number[] | undefined,
    keepdims: boolean,
  ): Node {
    checkNumeric(name, this.dtype);
    const axes = normAxes(name, this.shape, axis);
    if (op === Op.ReduceMax && axes.some((a) => this.shape[a] === 0)) {
      throw new RangeError(`${name}: cannot reduce over an empty axis of shape ${fmt(this.shape)}`);
    }
    // A sum over an empty axis is the constant 0, a launch parameter: a loop that runs zero times leaves a 0 the
    // shader compiler sees, and lavapipe folds 0 / x to 0 through it (the mean of an empty axis was 0, not NaN).
    const empty = op === Op.Sum && axes.some((a) => this.shape[a] === 0);
    const r = empty
      ? constNode(0, reduced(this.shape, axes, true), this.dtype, this.device)
      : mk(op, [this.#node], { axes });
    const out = reduced(this.shape, axes, keepdims);
    return keepdims ? r : mk(Op.Reshape, [r], { shape: out });
  }

  /** Sum over `axis` (all axes when omitted). */
  sum<A extends number | undefined = undefined, K extends boolean = false>(
    axis?: A & AxisArg<S, A>,
    opts?: { keepdims?: K },
  ): Tensor<Reduced<S, A, K>, D> {
    return this.#wrap(this.#reduce(Op.Sum, "sum", axis, opts?.keepdims ?? false));
  }
  /** Sum over several axes. */
  sumAxes(axes: readonly number[], opts: { keepdims?: boolean } = {}): Tensor<number[], D> {
    return this.#wrap(this.#reduce(Op.Sum, "sum", axes, opts.keepdims ?? false));
  }
  /** Mean over `axis` (all axes when omitted). */
  mean<A extends number | undefined = undefined, K extends boolean = false>(
    axis?: A & AxisArg<S, A>,
    opts?: { keepdims?: K },
  ): Tensor<Reduced<S, A, K>, D> {
    checkFloat("mean", this.dtype);
    const axes = normAxes("mean", this.shape, axis);
    const count = axes.reduce((a, i) => a * this.shape[i], 1);
    const s = this.#wrap<Shape, D>(this.#reduce(Op.Sum, "mean", axes, opts?.keepdims ?? false));
    return withShape<Reduced<S, A, K>, D>(s.div(count));
  }
  /** Maximum over `axis` (all axes when omitted). */
  max<A extends number | undefined = undefined, K extends boolean = false>(
    axis?: A & AxisArg<S, A>,
    opts?: { keepdims?: K },
  ): Tensor<Reduced<S, A, K>, D> {
    return this.#wrap(this.#reduce(Op.ReduceMax, "max", axis, opts?.keepdims ?? false));
  }
  /** Minimum over `axis` (all axes when omitted). */
  min<A extends number | undefined = undefined, K extends boolean = false>(
    axis?: A & AxisArg<S, A>,
    opts?: { keepdims?: K },
  ): Tensor<Reduced<S, A, K>, D> {
    if (this.dtype === "u32" || this.dtype === "bool") {
      throw new TypeError(`min over ${this.dtype} is not supported; cast to i32 or f32 first`);
    }
    const keep = opts?.keepdims ?? false;
    if (this.dtype === "i32") {
      // min x = ~max(~x) with ~x = −x − 1, an order-reversing map of i32 onto itself (−x alone wraps at −2³¹).
      const flip = (t: Tensor<Shape, D>) => t.neg().add(-1) as Tensor<Shape, D>;
      return flip(this.#wrap(flip(this.#l).#reduce(Op.ReduceMax, "min", axis, keep))) as Tensor<
        Reduced<S, A, K>,
        D
      >;
    }
    return this.#wrap<Shape, D>(this.neg().#reduce(Op.ReduceMax, "min", axis, keep)).neg() as Tensor<
      Reduced<S, A, K>,
      D
    >;
  }
  /** Index of the maximum along `axis` (the first one on ties; the first NaN where there is one, as in PyTorch), as i32. */
  argmax<A extends number, K extends boolean = false>(
    axis: A & AxisArg<S, A>,
    opts?: { keepdims?: K },
  ): Tensor<Reduced<S, A, K>, "i32"> {
    checkNumeric("argmax", this.dtype);
    const ax = normAxis("argmax", this.shape, axis);
    if (this.shape[ax] === 0) {
      throw new RangeError(`argmax: axis ${axis} of shape ${fmt(this.shape)} is empty`);
    }
    const r = mk(Op.ArgMax, [this.#node], { axis: ax });
    const keep = opts?.keepdims ?? false;
    return this.#wrap(keep ? r : mk(Op.Reshape, [r], { shape: reduced(this.shape, [ax], false) }));
  }
  /** Variance over `axis` with `correction` (0 = population variance, numpy's default; 1 = sample). */
  var<A extends number | undefined = undefined, K extends boolean = false>(
    axis?: A & AxisArg<S, A>,
    opts?: { keepdims?: K; correction?: number },
  ): Tensor<Reduced<S, A, K>, D> {
    checkFloat("var", this.dtype);
    const axes = normAxes("var", this.shape, axis);
    const count = axes.reduce((a, i) => a * this.shape[i], 1);
    const mu = this.#wrap<Shape, D>(this.#reduce(Op.Sum, "var", axes, true)).div(count);
    const d = this.#l.sub(mu).square();
    const ss = d.#reduce(Op.Sum, "var", axes, opts?.keepdims ?? false);
    return withShape<Reduced<S, A, K>, D>(
      this.#wrap<Shape, D>(ss).div(Math.max(count - (opts?.correction ?? 0), 0)),
    );
  }
  /** `log(sum(exp(x)))` over `axis`, computed stably. */
  logsumexp<A extends number | undefined = undefined, K extends boolean = false>(
    axis?: A & AxisArg<S, A>,
    opts?: { keepdims?: K },
  ): Tensor<Reduced<S, A, K>, D> {
    checkFloat("logsumexp", this.dtype);
    const axes = normAxes("logsumexp", this.shape, axis);
    if (axes.some((a) => this.shape[a] === 0)) {
      // The log of an empty sum: −∞, as in PyTorch.
      const shape = reduced(this.shape, axes, opts?.keepdims ?? false);
      return this.#wrap(this.#const(-Infinity, shape));
    }
    const max = this.#wrap<Shape, D>(this.#reduce(Op.ReduceMax, "logsumexp", axes, true));
    // An infinite max (all -inf, or a +inf) shifts by 0, as in PyTorch: x − max would be inf − inf = NaN where the
    // result is -inf or +inf.
    const m = max.abs().eq(Infinity).where(0, max);
    const s = this.#l.sub(m).exp().#reduce(Op.Sum, "logsumexp", axes, true);
    const out = this.#wrap<Shape, D>(s).log().add(m);
    return withShape<Reduced<S, A, K>, D>(
      opts?.keepdims ? out : out.reshape(reduced(this.shape, axes, false)),
    );
  }
  /** Softmax along `axis` (default: last). */
  softmax(axis = -1): Tensor<S, D> {
    checkFloat("softmax", this.dtype);
    const ax = normAxis("softmax", this.shape, axis);
    if (this.shape[ax] === 0) return this.#wrap(this.#node); // no element to normalise: empty, as in PyTorch
    const m = this.#wrap<Shape, D>(this.#reduce(Op.ReduceMax, "softmax", [ax], true));
    const e = this.#l.sub(m).exp();
    const s = this.#wrap<Shape, D>(e.#reduce(Op.Sum, "softmax", [ax], true));
    return withShape<S, D>(e.div(s), this.shape);
  }
  /** Log-softmax along `axis` (default: last). */
  logSoftmax(axis = -1): Tensor<S, D> {
    checkFloat("logSoftmax", this.dtype);
    const ax = normAxis("logSoftmax", this.shape, axis);
    if (this.shape[ax] === 0) return this.#wrap(this.#node); // no element to normalise: empty, as in PyTorch
    return withShape<S, D>(this.#l.sub(this.#l.logsumexp(ax, { keepdims: true })), this.shape);
  }

  // ----- movement -----

  /** Same data, new shape (one dimension may be -1). */
  reshape<const S2 extends Shape>(shape: S2 & ReshapeOk<S, S2>): Tensor<Writable<S2>, D> {
    const to = reshapeShape(this.shape, shape as S2);
    if (to.join() === this.shape.join()) return this.#wrap(this.#node);
    return this.#wrap(mk(Op.Reshape, [this.#node], { shape: to }));
  }
  /** Flattens to 1-D. */
  flatten(): Tensor<[number], D> {
    return this.reshape([this.size] as [number]) as Tensor<[number], D>;
  }
  /** Reorders the axes. */
  permute(perm: readonly number[]): Tensor<number[], D> {
    const p = checkPermutation("permute", this.shape, perm);
    if (p.every((v, i) => v === i)) return this.#wrap(this.#node);
    return this.#wrap(mk(Op.Permute, [this.#node], { perm: p }));
  }
  /** Swaps the last two axes (a 1-D tensor is returned unchanged). */
  transpose(): Tensor<Transposed<S>, D> {
    const r = this.ndim;
    if (r < 2) return this.#wrap(this.#node);
    const perm = [...Array(r).keys()];
    [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
    return withShape<Transposed<S>, D>(this.permute(perm));
  }
  /** Matrix transpose (last two axes), as a property. */
  get T(): Tensor<Transposed<S>, D> {
    return this.transpose();
  }
  /** Broadcasts to `shape` (numpy rules). */
  expand<const S2 extends Shape>(shape: S2): Tensor<Writable<S2>, D> {
    checkShape("expand", shape);
    const out = broadcast("expand", this.shape, shape);
    if (out.join() !== shape.join()) {
      throw new RangeError(`Cannot expand shape ${fmt(this.shape)} to ${fmt(shape)}`);
    }
    return this.#wrap(Tensor.expandNode(this.#node, shape));
  }
  /** Inserts a size-1 axis at `axis`. */
  unsqueeze(axis: number): Tensor<number[], D> {
    const ax = axis < 0 ? axis + this.ndim + 1 : axis;
    if (!Number.isInteger(ax) || ax < 0 || ax > this.ndim) {
      throw new RangeError(`unsqueeze: axis ${axis} is out of range for shape ${fmt(this.shape)}`);
    }
    const s = [...this.shape];
    s.splice(ax, 0, 1);
    return this.reshape(s as number[]) as Tensor<number[], D>;
  }
  /** Removes size-1 axes (all, or the given one). */
  squeeze(axis?: number): Tensor<number[], D> {
    if (axis === undefined) {
      return this.reshape(this.shape.filter((d) => d !== 1) as number[]) as Tensor<number[], D>;
    }
    const ax = normAxis("squeeze", this.shape, axis);
    if (this.shape[ax] !== 1) {
      throw new RangeError(`squeeze: axis ${axis} of shape ${fmt(this.shape)} is not 1`);
    }
    return this.reshape(this.shape.filter((_, i) => i !== ax) as number[]) as Tensor<number[], D>;
  }
  /**
   * Numpy-style basic slicing: one entry per leading axis, each a number (picks and removes the axis), `null`
   * (whole axis) or `[start, end, step]` with Python semantics (negative indices, omitted ends, negative steps).
   */
  slice(
    ...spec: (number | null | readonly [(number | null)?, (number | null)?, (number | null)?])[]
  ): Tensor<number[], D> {
    if (spec.length > this.ndim) {
      throw new RangeError(`slice: ${spec.length} indices for shape ${fmt(this.shape)}`);
    }
    const start: number[] = [];
    const step: number[] = [];
    const len: number[] = [];
    const keep: number[] = [];
    this.shape.forEach((n, i) => {
      const s = spec[i];
      if (typeof s === "number") {
        const j = s < 0 ? s + n : s;
        if (!Number.isInteger(j) || j < 0 || j >= n) {
          throw new RangeError(`slice: index ${s} is out of range for axis ${i} of shape ${fmt(this.shape)}`);
        }
        start.push(j), step.push(1), len.push(1);
        return;
      }
      keep.push(i);
      if (s !== null && s !== undefined && !Array.isArray(s)) {
        throw new TypeError(
          `slice: entry ${i} must be an index, a [start, end, step] range or null, got ${s}`,
        );
      }
      const [a0, b0, c] = s ?? [];
      const a = a0 ?? undefined;
      const b = b0 ?? undefined;
      const st = c ?? 1;
      if (!Number.isInteger(st) || st === 0) {
        throw new RangeError(`slice: step must be a non-zero integer, got ${st}`);
      }
      for (const [what, v] of [["start", a], ["end", b]] as const) {
        if (v !== undefined && !Number.isInteger(v)) {
          throw new RangeError(`slice: ${what} must be an integer or null, got ${v} for axis ${i}`);
        }
      }
      const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
      let lo: number;
      let hi: number;
      if (st > 0) {
        lo = a === undefined ? 0 : clamp(a < 0 ? a + n : a, 0, n);
        hi = b === undefined ? n : clamp(b < 0 ? b + n : b, 0, n);
      } else {
        lo = a === undefined ? n - 1 : clamp(a < 0 ? a + n : a, -1, n - 1);
        hi = b === undefined ? -1 : clamp(b < 0 ? b + n : b, -1, n - 1);
      }
      const count = Math.max(0, Math.ceil((hi - lo) / st));
      start.push(count > 0 ? lo : 0), step.push(st), len.push(count);
    });
    let node = this.#node;
    const trivial = start.every((v) => v === 0) && step.every((v) => v === 1) &&
      len.every((v, i) => v === this.shape[i]);
    if (!trivial) node = mk(Op.Shrink, [node], { start, step, len });
    const out = keep.map((i) => len[i]);
    return this.#wrap(out.join() === node.shape.join() ? node : mk(Op.Reshape, [node], { shape: out }));
  }
  /** Pads each axis with `[before, after]` elements of `value` (default 0). */
  pad(pads: readonly (readonly [number, number])[], value = 0): Tensor<number[], D> {
    if (
      pads.length !== this.ndim ||
      pads.some((p) => p.length !== 2 || p.some((v) => !Number.isInteger(v) || v < 0))
    ) {
      throw new RangeError(
        `pad: need one [before, after] pair of non-negative integers per axis of ${fmt(this.shape)}`,
      );
    }
    checkScalar("pad", this.dtype, value);
    if (pads.every(([a, b]) => a === 0 && b === 0)) return this.#wrap(this.#node);
    return this.#wrap(
      mk(Op.Pad, [this.#node], { pads: pads.map(([a, b]) => [a, b] as [number, number]), value }),
    );
  }
  /**
   * Elements of this tensor at `indices` along `axis`: the result's shape puts the indices' shape there. Indices
   * on the host outside `0 .. n − 1` are refused; one computed on the device gives NaN (floats), the lowest i32,
   * the largest u32 or true there, with no gradient, as `jnp.take`'s fill mode.
   */
  gather(indices: Tensor<Shape, "i32" | "u32">, axis = 0): Tensor<number[], D> {
    const ax = normAxis("gather", this.shape, axis);
    if (!(indices instanceof Tensor) || (indices.dtype !== "i32" && indices.dtype !== "u32")) {
      throw new TypeError(`gather: indices must be an i32 or u32 tensor`);
    }
    // Kernels cannot throw; indices still on the host are checked here, so a token id past a vocabulary is an
    // error, not a row of NaN.
    const n = this.shape[ax];
    checkHostValues(indices, {
      op: "gather",
      noun: "index",
      limit: n,
      rule: `is outside axis ${ax} of [${this.shape.join(", ")}] (0..${n - 1})`,
    });
    return this.#wrap(mk(Op.Gather, [this.#node, indices.#node], { axis: ax }));
  }
  /**
   * One-hot encoding of an integer tensor: a new last axis of size `n` (f32 by default). Indices on the host
   * outside 0..n-1 are refused, as `gather` refuses them; one computed on the device (where nothing can throw) gives
   * a row of gather's fill value instead of a row of zeros that would pass for a valid line: NaN for floats, the
   * lowest i32, the largest u32, true for bool.
   */
  oneHot<T extends DType = "f32">(n: number, dtype: T = "f32" as T): Tensor<number[], T> {
    if (this.dtype !== "i32" && this.dtype !== "u32") {
      throw new TypeError(`oneHot needs integer indices, got ${this.dtype}`);
    }
    if (!Number.isInteger(n) || n < 0) {
      throw new RangeError(`oneHot: n must be a non-negative integer, got ${n}`);
    }
    checkHostValues(this, {
      op: "oneHot",
      noun: "index",
      limit: n,
      rule: `is outside the ${n} classes (0..${n - 1})`,
    });
    // Not this.cast("i32") on i32 indices: that would be a second tensor holding this one's buffer until it is
    // collected, so disposing the indices (a batch's targets) would free nothing until then.
    const idx: Tensor<Shape, "i32"> = this.dtype === "i32"
      ? (this as Tensor<Shape, "i32">)
      : this.cast("i32");
    const x = idx.unsqueeze(-1);
    const iota = new Tensor<Shape, "i32">(iotaNode(n, "i32", this.device));
    // inside = 0 <= x < n (a u32 index of 2³¹ or more is negative as i32); rows inside keep their bits (a select).
    const inside = x.ge(0).where(x.lt(n), x.ge(0));
    return inside.where(x.eq(iota).cast(dtype), GATHER_FILL[dtype]) as Tensor<number[], T>;
  }

  // ----- matmul -----

  /** Matrix product with numpy semantics (batched, broadcast batch dims, 1-D operands promoted). */
  matmul<S2 extends Shape>(other: Tensor<S2, D> & MatmulOk<S, S2>): Tensor<MatmulShape<S, S2>, D> {
    if (!(other instanceof Tensor)) throw new TypeError("matmul: expected a Tensor");
    const b0 = other as Tensor<S2, D>;
    const out = matmulShape(this.shape, b0.shape);
    checkSameDType("matmul", this.dtype, b0.dtype);
    checkNumeric("matmul", this.dtype);
    let a = this.#node;
    let b = b0.#node;
    if (a.shape.length === 1) a = mk(Op.Reshape, [a], { shape: [1, a.shape[0]] });
    if (b.shape.length === 1) b = mk(Op.Reshape, [b], { shape: [b.shape[0], 1] });
    const batch = broadcast("matmul", a.shape.slice(0, -2), b.shape.slice(0, -2));
    const [m, k] = a.shape.slice(-2);
    const n = b.shape[b.shape.length - 1];
    a = Tensor.expandNode(a, [...batch, m, k]);
    b = Tensor.expandNode(b, [...batch, k, n]);
    let r = mk(Op.Dot, [a, b], null);
    if (r.shape.join() !== out.join()) r = mk(Op.Reshape, [r], { shape: out });
    return this.#wrap(r);
  }

  // ----- data -----

  /** Computes this tensor (if needed) and keeps the result in device memory. */
  async realize(): Promise<this> {
    await realize(this);
    return this;
  }

  /**
   * Computes the tensor and copies it to the host as a typed array (f16 is widened to Float32Array). A view that
   * is a contiguous run of stored data (a parameter inside an optimiser's pack) is read from that data and stays
   * a view: reading it changes nothing the optimiser or a compiled step relies on.
   */
  async data(): Promise<DataArray<D>> {
    const run = await this.#storedRun();
    if (run !== null) return run;
    await realize(this);
    const st = this.#node.storage!;
    if (this.size === 0) return allocData(this.dtype, 0);
    const be = await getBackend(this.device);
    return (await be.read(resolveStorage(st, be), this.dtype, this.size)) as DataArray<D>;
  }

  /**
   * The elements of this tensor read from the stored data it is a contiguous view of, without computing anything;
   * null when it is not such a view, or the device cannot read from the run's offset.
   */
  async #storedRun(): Promise<DataArray<D> | null> {
    if (this.#node.storage !== null || this.size === 0 || DTYPE_INFO[this.dtype].bytes !== 4) return null;
    const run = contiguousView(this.#node, NO_NODES);
    if (run === null || run.base.storage === null) return null;
    const be = await getBackend(this.device);
    const base = resolveStorage(run.base.storage, be);
    const at = run.offset * 4;
    let from = at === 0 ? base : null;
    if (be.range !== undefined && at % be.viewAlign! === 0) from = be.range(base, at, this.size * 4);
    return from === null ? null : (await be.read(from, this.dtype, this.size)) as DataArray<D>;
  }

  /** The data as nested arrays. */
  async toArray(): Promise<NestedArray> {
    const d = Array.from(await this.data() as ArrayLike<number>);
    const build = (off: number, axis: number): NestedArray => {
      if (axis === this.ndim) return d[off];
      const stride = sizeOf(this.shape.slice(axis + 1));
      return Array.from({ length: this.shape[axis] }, (_, i) => build(off + i * stride, axis + 1));
    };
    return build(0, 0);
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new RangeError(`item() needs a one-element tensor, got shape ${fmt(this.shape)}`);
    }
    return (await this.data())[0];
  }

  /** Copies the tensor to another device (to its own device: a tensor of its own over the same memory). */
  async to(device: DeviceName): Promise<Tensor<S, D>> {
    if (device === this.device) return this.#wrap(this.#node);
    if (!(["cpu", "wasm", "webgpu"] as unknown[]).includes(device)) {
      throw new TypeError(`to: unknown device ${JSON.stringify(device)}; expected "cpu", "wasm" or "webgpu"`);
    }
    const d = await this.data();
    return fromData(d as ArrayLike<number>, this.shape, this.dtype, device) as Tensor<S, D>;
  }

  /**
   * Releases the device memory now (instead of at garbage collection). Using the tensor afterwards throws. Memory
   * that other tensors hold too (what `reshape`, `cast` or `to` returned unchanged from this one, a tensor realized
   * from the same expression in the same `realize`) stays until the last of them is disposed or collected; a lazy
   * tensor (not yet computed) has no memory to release. Lazy tensors built from this one (views, sums) read its
   * memory when they are computed: dispose it after computing them.
   */
  dispose(): void {
    const n = this.#node;
    if (n.storage === null) return;
    if (holdersOf(n).some((t) => t !== this)) this.#node = releasedBufferNode(n);
    else releaseBufferNode(n);
  }

  /** Supports `using t = ...`. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** `Tensor([2, 3] f32 on webgpu)` */
  toString(): string {
    return `Tensor(${fmt(this.shape)} ${this.dtype} on ${this.device}${this.isRealized ? "" : ", lazy"})`;
  }
}

/** Valid axis argument: `undefined` or an axis of S. */
export type AxisArg<S extends Shape, A> = A extends number ? AxisOk<S, A> : unknown;

/**
 * `t` itself (no new tensor, no op) with its static shape type re-labelled `S`: the library's single place where a
 * static shape is asserted rather than derived. Code inside works with plain tensors (`F32`); a public function
 * whose declared result shape is computed (`Reduced<S, A, K>`, `Transposed<S>`) or holds run-time sizes
 * (`[M, number]`) returns its plain result through here. `expect`, a rank or a whole shape, is checked: a
 * mismatch is a bug in the library, and the error names both.
 */
export function withShape<S extends Shape, D extends DType = "f32">(
  t: Tensor<Shape, D>,
  expect?: S["length"] | Shape,
): Tensor<S, D> {
  const bad = typeof expect === "number"
    ? t.ndim !== expect
    : expect !== undefined && t.shape.join() !== expect.join();
  if (bad) {
    const want = typeof expect === "number" ? `rank ${expect}` : fmt(expect!);
    throw new Error(`withShape: a tensor of shape ${fmt(t.shape)} labelled with ${want}`);
  }
  return t as Tensor<S, D>;
}

/** Makes a tensor from host values (copied; converted to `dtype`). */
export function fromData(
  data: ArrayLike<number>,
  shape: readonly number[],
  dtype: DType,
  device: DeviceName,
): Tensor {
  const n = sizeOf(shape);
  if (data.length !== n) {
    throw new RangeError(`tensor: ${data.length} values do not fill shape ${fmt(shape)} (${n} elements)`);
  }
  const arr = allocData(dtype, n);
  // Integers are truncated toward zero, as PyTorch does; one the dtype cannot hold (or NaN) is refused, where the
  // typed array would wrap it.
  const int = dtype === "i32" || dtype === "u32";
  const [lo, hi] = dtype === "i32" ? [-(2 ** 31), 2 ** 31 - 1] : [0, 2 ** 32 - 1];
  for (let i = 0; i < n; i++) {
    const v = Number(data[i]);
    if (int && !(Math.trunc(v) >= lo && Math.trunc(v) <= hi)) {
      throw new RangeError(`tensor: value ${data[i]} at index ${i} does not fit dtype ${dtype}`);
    }
    // f16 values are held widened to f32 on the host: round them as the device will store them, so that the
    // host copy (read by the float64 reference before any upload) is the tensor's value. Any value but ±0 is
    // true as bool (NaN too, as a cast gives it).
    arr[i] = dtype === "bool" ? (v !== 0 ? 1 : 0) : dtype === "f16" ? Math.f16round(v) : v;
  }
  return new Tensor(bufferNode(new HostStorage(device, dtype, arr), shape, dtype));
}

/** A range that integer host data must stay in: `0 ≤ v < limit`, or `v = allow`. */
export interface HostBound {
  /** The op that checks them ("gather"). */
  readonly op: string;
  /** What a value is to the op ("index"). */
  readonly noun: string;
  /** One past the largest valid value. */
  readonly limit: number;
  /** A value valid besides the range (an ignore index). */
  readonly allow?: number;
  /** The rule the values break, to end an error message ("is outside axis 0 of [5, 2] (0..4)"). */
  readonly rule: string;
}

/** The bounds recorded for host data by the ops that checked it, by storage. */
const hostBounds = new WeakMap<Storage, HostBound[]>();

/**
 * A RangeError naming the first element of `values` (of `shape`) outside `bound`, its position and the rule, the
 * message starting with `who`; null when every element is inside.
 */
export function outOfBound(
  values: ArrayLike<number>,
  shape: readonly number[],
  bound: HostBound,
  who: string,
): RangeError | null {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if ((v < 0 || v >= bound.limit) && v !== bound.allow) {
      return new RangeError(
        `${who}: ${bound.noun} ${v} (element ${i} of [${shape.join(", ")}]) ${bound.rule}`,
      );
    }
  }
  return null;
}

/**
 * Checks `t`'s values against `bound` if they are still host data, not yet uploaded (a tensor made from numbers
 * and not used so far; others would need a wait for the device), throwing a RangeError naming the first one
 * outside; records the bound with them, so that a compiled step replaying a graph built from `t` can check the
 * values that later take their place ({@link boundsOf}).
 */
export function checkHostValues(t: Tensor, bound: HostBound): void {
  const st = t.node.storage;
  if (!(st instanceof HostStorage) || st.host === null) return;
  const err = outOfBound(st.host, t.shape, bound, bound.op);
  if (err !== null) throw err;
  // Once per rule: a tensor gathered from again and again (an evaluation loop) keeps one bound, not one per call.
  const known = hostBounds.get(st) ?? [];
  if (!known.some((b) => b.op === bound.op && b.limit === bound.limit && b.allow === bound.allow)) {
    hostBounds.set(st, [...known, bound]);
  }
}

/** The bounds recorded for the host data of storage `s` by {@link checkHostValues}. */
export function boundsOf(s: Storage): readonly HostBound[] {
  return hostBounds.get(s) ?? [];
}

/**
 * Computes several tensors in one submission and keeps them in device memory (no readback). Each tensor's
 * pending expression is replaced by its stored result; a tensor created from host data is uploaded now (so a
 * loader can let the host copy go).
 */
export async function realize(...tensors: Tensor[]): Promise<void> {
  const byDevice = new Map<DeviceName, Map<Node, Tensor[]>>();
  const waits: Promise<void>[] = [];
  try {
    for (const t of new Set(tensors)) {
      const n = t.node;
      if (n.storage !== null) {
        await uploadStorage(n.storage);
        continue;
      }
      const pending = realizing.get(n);
      if (pending !== undefined) {
        waits.push(pending.run.then((leaves) => giveLeaf(n, leaves[pending.index], [t], pending.tensors)));
        continue;
      }
      const byNode = byDevice.get(t.device) ?? new Map<Node, Tensor[]>();
      byDevice.set(t.device, byNode);
      const same = byNode.get(n);
      if (same === undefined) byNode.set(n, [t]);
      else same.push(t);
    }
    for (const byNode of byDevice.values()) {
      const nodes = [...byNode.keys()];
      const run = realizeNodes(nodes).then((st) => nodes.map((n, i) => bufferNode(st[i], n.shape, n.dtype)));
      nodes.forEach((n, index) => realizing.set(n, { run, index, tensors: byNode.get(n)! }));
      try {
        const leaves = await run;
        nodes.forEach((n, i) => giveLeaf(n, leaves[i], byNode.get(n)!));
      } finally {
        for (const n of nodes) if (realizing.get(n)?.run === run) realizing.delete(n);
      }
    }
  } catch (e) {
    // The realizations waited for are settled first: their own failure is not left unhandled.
    await Promise.allSettled(waits);
    throw e;
  }
  await Promise.all(waits);
}

/**
 * Lazy nodes being computed by a {@link realize} call, with the buffer nodes they become: a realize of the same
 * tensor meanwhile (two `data()` calls not awaited one after the other) waits for that result instead of
 * computing it again.
 */
const realizing = new WeakMap<Node, { run: Promise<Node[]>; index: number; tensors: readonly Tensor[] }>();

/**
 * Gives the buffer node `leaf` computed for the lazy node `n` to `tensors` and to the tensors holding `n` with
 * them, each unless it moved on from `n` meanwhile; they hold it together with those of `given` (the tensors it
 * was given to before) that still hold it.
 */
function giveLeaf(n: Node, leaf: Node, tensors: readonly Tensor[], given: readonly Tensor[] = []): void {
  const all = [...new Set([...tensors, ...holdersOf(n)])].filter((t) => t.node === n);
  for (const t of all) t.setNode(leaf);
  const holding = [...all, ...given.filter((t) => t.node === leaf)];
  if (holding.length > 1) holdTogether(leaf, holding);
}

/**
 * Tensors holding one node together, weakly: those given one buffer node by {@link realize} (several tensors
 * built from one hash-consed expression) and a tensor with what an op returns unchanged (`reshape` to its own
 * shape, `cast` to its own dtype, `to` its own device). Realizing one of them realizes all that still hold the
 * node; disposing one releases the memory only when none of the others still holds it. Most nodes have one
 * tensor and no entry.
 */
const coHolders = new WeakMap<Node, WeakRef<Tensor>[]>();

/** Records `tensors` as holding `n` together, dropping entries that no longer hold it. */
function holdTogether(n: Node, tensors: readonly Tensor[]): void {
  const live = (coHolders.get(n) ?? []).filter((r) => r.deref()?.node === n);
  for (const t of tensors) if (!live.some((r) => r.deref() === t)) live.push(new WeakRef(t));
  coHolders.set(n, live);
}

/** The live tensors recorded as holding `n` that still hold it. */
function holdersOf(n: Node): Tensor[] {
  const out: Tensor[] = [];
  for (const r of coHolders.get(n) ?? []) {
    const t = r.deref();
    if (t !== undefined && t.node === n) out.push(t);
  }
  return out;
}

/** Storage bytes of a tensor's elements. */
export function byteSize(t: Tensor): number {
  return t.size * DTYPE_INFO[t.dtype].bytes;
}
