/**
 * IR nodes: immutable, hash-consed (building the same expression twice gives the same node, so common
 * subexpressions are shared), and lazy (nothing runs until a tensor is realized).
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { fmt, MAX_ELEMENTS, size } from "../shape.ts";
import { Op, type OpArgs, SHAPE_RULES } from "./ops.ts";
import { seed32 } from "./rng.ts";

/** Where a tensor's data lives. */
export type DeviceName = "webgpu" | "wasm" | "cpu";

/** Device memory owned by the runtime. The IR only knows how to let go of it. */
export interface Storage {
  /** The device the memory belongs to. */
  readonly device: DeviceName;
  /** Size in bytes. */
  readonly bytes: number;
  /** Returns the memory to the device's pool. Idempotent. */
  release(): void;
  /** True once released. */
  readonly released: boolean;
}

let nextId = 0;
const consTable = new Map<string, WeakRef<Node>>();
const consCleanup = new FinalizationRegistry<string>((key) => {
  const ref = consTable.get(key);
  if (ref !== undefined && ref.deref() === undefined) consTable.delete(key);
});
const storageCleanup = new FinalizationRegistry<Storage>((s) => s.release());

/** One IR node. Build them with {@link mk}, {@link bufferNode} and {@link constNode}. */
export class Node {
  /** Unique id, increasing in creation order (so ids give a valid topological order). */
  readonly id: number;
  /** The primitive. */
  readonly op: Op;
  /** Inputs. */
  readonly src: readonly Node[];
  /** Op-specific argument. */
  readonly arg: unknown;
  /** Result shape. */
  readonly shape: readonly number[];
  /** Result dtype. */
  readonly dtype: DType;
  /** Device of the result. */
  readonly device: DeviceName;
  /** Device memory of a Buffer node. */
  readonly storage: Storage | null;

  /** Use {@link mk} instead. */
  constructor(
    op: Op,
    src: readonly Node[],
    arg: unknown,
    shape: readonly number[],
    dtype: DType,
    device: DeviceName,
    storage: Storage | null,
  ) {
    this.id = nextId++;
    this.op = op;
    this.src = src;
    this.arg = arg;
    this.shape = shape;
    this.dtype = dtype;
    this.device = device;
    this.storage = storage;
  }

  /** The argument, typed by the op. */
  argOf<O extends Op>(op: O): OpArgs[O] {
    if (this.op !== op) throw new Error(`IR: node ${this.id} is ${this.op}, not ${op}`);
    return this.arg as OpArgs[O];
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** `%12 = Add(%3, %7) [4, 8] f32` */
  toString(): string {
    const a = this.arg === null
      ? ""
      : this.op === Op.CustomVjp
      ? " <custom vjp>"
      : ` ${JSON.stringify(this.arg)}`;
    return `%${this.id} = ${this.op}(${this.src.map((s) => `%${s.id}`).join(", ")})${a} ${
      fmt(this.shape)
    } ${this.dtype}`;
  }
}

/** Builds (or finds) the node `op(src...)` with its shape and dtype derived by the op's shape rule. */
export function mk<O extends Op>(op: O, src: readonly Node[], arg: OpArgs[O], dtype?: DType): Node {
  // Its argument holds nodes and a function: it is never hash-consed (and would be costly to key).
  if (op === Op.CustomVjp) throw new Error("IR: build CustomVjp nodes with customVjpNode, not mk");
  const device = src[0].device;
  for (const s of src) {
    if (s.device !== device) {
      throw new Error(
        `Cannot combine tensors on devices ${device} and ${s.device} in ${op}; move one with .to()`,
      );
    }
  }
  const rule = SHAPE_RULES[op] as (s: readonly Node[], a: OpArgs[O]) => { shape: number[]; dtype: DType };
  const r = rule(src, arg);
  // Kernels index elements with 32-bit integers: a larger view, even one sliced before it is computed, had its
  // element indices wrap (a [65536, 1] + [1, 65537] sum reshaped to [65537, 65536] read row 0 for its last row).
  const n = size(r.shape);
  if (n > MAX_ELEMENTS) {
    const from = src.map((s) => fmt(s.shape)).join(" and ");
    throw new RangeError(
      `${op} of ${from}: the result ${fmt(r.shape)} has ${n} elements, more than a tensor holds (2^31 - 1)`,
    );
  }
  const dt = dtype ?? r.dtype;
  const key = `${op}|${dt}|${device}|${r.shape.join(",")}|${src.map((s) => s.id).join(",")}|${argKey(arg)}`;
  const hit = consTable.get(key)?.deref();
  if (hit !== undefined) return hit;
  const node = new Node(op, src, arg, r.shape, dt, device, null);
  consTable.set(key, new WeakRef(node));
  consCleanup.register(node, key);
  return node;
}

/** A number as a cache key: unlike `String` and JSON, tells −0 from 0 and NaN from ±∞. */
function numberKey(v: number): string {
  return Object.is(v, -0) ? "-0" : String(v);
}

/**
 * An op's argument as a cache key: its JSON, with every number that JSON would write as another's text (−0 as
 * 0, NaN and ±∞ as null) written by {@link numberKey} instead, so a pad with fill ∞ never reuses one with NaN.
 */
export function argKey(arg: unknown): string {
  return JSON.stringify(
    arg,
    (_, v) => typeof v === "number" && (!Number.isFinite(v) || Object.is(v, -0)) ? `#${numberKey(v)}` : v,
  );
}

/** A leaf node over device memory. The memory is released when the node is garbage-collected. */
export function bufferNode(storage: Storage, shape: readonly number[], dtype: DType): Node {
  const node = new Node(Op.Buffer, [], null, [...shape], dtype, storage.device, storage);
  storageCleanup.register(node, storage, node);
  return node;
}

/** Releases a buffer node's memory now instead of at garbage collection. */
export function releaseBufferNode(node: Node): void {
  if (node.storage === null) return;
  storageCleanup.unregister(node);
  node.storage.release();
}

/** Memory let go of: reading it throws as reading released memory does. */
class ReleasedStorage implements Storage {
  readonly device: DeviceName;
  readonly bytes = 0;
  readonly released = true;
  constructor(device: DeviceName) {
    this.device = device;
  }
  release(): void {}
}

/**
 * A buffer node of `node`'s shape, dtype and device over no memory: what a disposed tensor holds when other
 * tensors still hold its memory (using it throws "tensor used after dispose()").
 */
export function releasedBufferNode(node: Node): Node {
  return new Node(Op.Buffer, [], null, node.shape, node.dtype, node.device, new ReleasedStorage(node.device));
}

/** A constant of the given shape (hash-consed). */
export function constNode(value: number, shape: readonly number[], dtype: DType, device: DeviceName): Node {
  const key = `${Op.Const}|${dtype}|${device}|${shape.join(",")}||${numberKey(value)}`;
  const hit = consTable.get(key)?.deref();
  if (hit !== undefined) return hit;
  const node = new Node(Op.Const, [], { value }, [...shape], dtype, device, null);
  consTable.set(key, new WeakRef(node));
  consCleanup.register(node, key);
  return node;
}

/** `0, 1, ..., n-1` (hash-consed). */
export function iotaNode(n: number, dtype: DType, device: DeviceName): Node {
  const key = `${Op.Iota}|${dtype}|${device}|${n}||null`;
  const hit = consTable.get(key)?.deref();
  if (hit !== undefined) return hit;
  const node = new Node(Op.Iota, [], null, [n], dtype, device, null);
  consTable.set(key, new WeakRef(node));
  consCleanup.register(node, key);
  return node;
}

/** Uniform [0, 1) f32 values from the counter-based generator, one per element of `shape`. */
export function randNode(seed: number, shape: readonly number[], device: DeviceName): Node {
  const s = seed32(seed, "rand");
  const key = `${Op.Rand}|f32|${device}|${shape.join(",")}||${s}`;
  const hit = consTable.get(key)?.deref();
  if (hit !== undefined) return hit;
  const node = new Node(Op.Rand, [], { seed: s }, [...shape], "f32", device, null);
  consTable.set(key, new WeakRef(node));
  consCleanup.register(node, key);
  return node;
}

/** An identity node whose gradient `backward` computes (never hash-consed: each call is its own rule). */
export function customVjpNode(
  output: Node,
  inputs: readonly Node[],
  backward: (cotangent: Node, output: Node, inputs: readonly Node[]) => (Node | null)[],
): Node {
  return new Node(
    Op.CustomVjp,
    [output],
    { inputs, backward },
    output.shape,
    output.dtype,
    output.device,
    null,
  );
}

/** All unrealized ancestors of `roots` (and the roots), in topological order (inputs first). */
export function toposort(roots: readonly Node[]): Node[] {
  const seen = new Set<Node>();
  const out: Node[] = [];
  const stack: [Node, number][] = roots.map((r) => [r, 0]);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [n, i] = top;
    if (i === 0 && seen.has(n)) {
      stack.pop();
      continue;
    }
    if (i === 0) seen.add(n);
    if (i < n.src.length) {
      top[1]++;
      const c = n.src[i];
      if (!seen.has(c)) stack.push([c, 0]);
    } else {
      stack.pop();
      out.push(n);
    }
  }
  return out;
}

/** Prints the graph below `roots`, one node per line (`DEBUG=3`). */
export function printGraph(roots: readonly Node[]): string {
  return toposort(roots).map((n) => n.toString()).join("\n");
}
