/**
 * Compiler fuzzing: seeded random expression graphs (broadcasting, views, reductions, matmuls, fused chains,
 * integer and boolean intermediates) evaluated on a backend and compared with the float64 reference interpreter.
 *
 * Run: `deno task fuzz --cases 500 [--seed 1] [--device auto|webgpu|wasm|cpu] [--views [--f16]] [--grad] [--replay]`.
 * Case i runs seed `campaignSeed(S, i)`: S, then steps of 2654435761 (mod 2³²). A mismatch prints its seed and the
 * graph; re-running with that seed, its flags and `--cases 1` reproduces it, and the case belongs in
 * tests/fuzz/regressions_test.ts.
 *
 * Values are kept O(1) (tanh/sigmoid squashing after growth-prone ops), so float32 error stays below ~1e-4 and any
 * indexing or fusion mistake, which moves values by O(1), stands out.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  checkDeviceChoice,
  concat,
  type DeviceChoice,
  deviceLine,
  type DeviceName,
  resolveDevice,
  type Shape,
  Tensor,
  tensor,
} from "../mod.ts";
import { evaluateReference, type RefValue } from "../lib/ir/reference.ts";
import { type Node, printGraph, toposort } from "../lib/ir/node.ts";
import { Op } from "../lib/ir/ops.ts";
import { leafValues } from "../lib/autodiff/gradcheck.ts";
import { backprop } from "../lib/autodiff/grad.ts";
import { getBackend, realizeNodes, type Recording } from "../lib/runtime/realize.ts";
import { BoundPlan, writeStorage } from "../lib/runtime/plan.ts";
import { allocData } from "../lib/dtype.ts";

type F = Tensor<Shape, "f32">;

/** A small deterministic generator for the fuzzer's choices. */
class Choice {
  #s: number;
  constructor(seed: number) {
    this.#s = (seed >>> 0) || 1;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)];
  }
}

/** One generated case: its output tensor and a description of how it was built. */
export interface FuzzCase {
  out: Tensor;
  steps: string[];
}

/** Options of {@link generateCase}. */
export interface GenerateOptions {
  /**
   * Also start from contiguous runs of a stored buffer at multiples of 64 elements (some empty, some of odd
   * lengths), as a parameter inside an optimiser's pack is: on WebGPU kernels bind them as ranges of the buffer.
   */
  views?: boolean;
  /** With `views`: the stored buffer holds f16 (its runs are cast to f32 where they are used). */
  f16?: boolean;
  /**
   * Check the backward graph instead: the gradients of `sum(out * w)` (w random) with respect to every f32 input,
   * as autodiff builds them, computed on the device against the float64 reference of the same graph.
   */
  grad?: boolean;
  /**
   * Also replay the realization's plan bound to storages of its own (as the compiled training step does), twice,
   * with new values in every f32 input each time, each run against the reference on those values.
   */
  replay?: boolean;
}

/**
 * The seed of case `i` of a campaign from seed `s0`: `s0` itself, then steps of 2654435761 (mod 2³²). The
 * generator takes a seed as its state, so consecutive seeds start alike (every seed from 1000 to 2999 begins with a
 * rank-1 input); steps of an odd number near 2³²·0.618 spread the first choices as independent seeds would.
 */
export function campaignSeed(s0: number, i: number): number {
  return (s0 + i * 2654435761) >>> 0;
}

/** Builds the random graph of case `seed` on `device`. */
export function generateCase(seed: number, device: DeviceName, opts: GenerateOptions = {}): FuzzCase {
  const c = new Choice(seed);
  const steps: string[] = [];
  const randShape = (rank: number) =>
    Array.from({ length: rank }, () => c.pick([1, 2, 3, 5, 7, 8, 13, 64, 65]));
  const input = (shape: number[], dtype: "f32" | "f16" = "f32"): F => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = Float32Array.from({ length: n }, () => c.next() * 4 - 2);
    steps.push(`input [${shape}]${dtype === "f16" ? " f16" : ""}`);
    return tensor(data, { shape, device, dtype }) as unknown as F;
  };
  // One of the numbers that divide n (1 for n = 0), for a reshape to [d, n / d].
  const divisor = (n: number) => {
    const divs = [...Array(n + 1).keys()].filter((d) => d > 0 && n % d === 0);
    return c.pick(divs.length > 0 ? divs : [1]);
  };
  const partner = (s: readonly number[]): number[] => {
    // A shape that broadcasts with s: drop some leading dims, set some dims to 1.
    const drop = c.int(0, Math.min(1, s.length));
    return s.slice(drop).map((d) => (c.next() < 0.3 ? 1 : d));
  };
  const pool: F[] = [input(randShape(c.int(1, 3)))];
  if (opts.views) {
    const k = c.int(2, 4);
    const base = input(c.next() < 0.5 ? [k * 64 + c.int(0, 63)] : [k, 64], opts.f16 ? "f16" : "f32");
    for (let v = c.int(1, 3); v > 0; v--) {
      const at = 64 * c.int(0, k - 1);
      const len = Math.min(c.pick([0, 1, 3, 8, 37, 64, 100, 128]), base.size - at);
      const run = base.reshape([base.size]).slice([at, at + len]) as F;
      const rows = divisor(len);
      const shaped = len === 0 ? run : run.reshape([rows, -1]);
      pool.push((opts.f16 ? shaped.cast("f32") : shaped) as F);
      steps.push(`run [${at}, ${at + len}) as [${pool[pool.length - 1].shape}]`);
    }
  }
  const nOps = c.int(2, 9);
  for (let i = 0; i < nOps; i++) {
    const x = c.pick(pool);
    const r = x.ndim;
    const kind = c.int(0, 13);
    let y: F;
    switch (kind) {
      case 0: {
        const op = c.pick(
          ["exp", "sin", "cos", "sigmoid", "tanh", "abs", "neg", "relu", "gelu", "silu"] as const,
        );
        y = (op === "exp" ? x.tanh().exp() : x[op]()) as F;
        steps.push(op);
        break;
      }
      case 1: {
        const op = c.pick(["add", "sub", "mul", "maximum", "minimum"] as const);
        const other = c.next() < 0.5 && pool.length > 1 ? c.pick(pool) : input(partner(x.shape));
        try {
          y = x[op](other as F) as F;
        } catch {
          y = x[op](input(partner(x.shape))) as F;
        }
        y = y.tanh();
        steps.push(`${op} then tanh`);
        break;
      }
      case 2: {
        y = x.div(input(partner(x.shape)).abs().add(0.5)).tanh() as F;
        steps.push("div by (|y|+0.5) then tanh");
        break;
      }
      case 3: {
        if (r === 0) continue;
        const axis = c.int(-r, r - 1);
        const keepdims = c.next() < 0.5;
        const op = c.pick(["sum", "mean", "max", "min"] as const);
        // An empty axis (only runs of a stored buffer make one) has no maximum, and its mean divides by zero.
        if (op !== "sum" && x.shape[axis < 0 ? axis + r : axis] === 0) continue;
        y = x[op](axis as never, { keepdims }) as F;
        if (op === "sum") y = y.tanh();
        steps.push(`${op}(axis ${axis}, keepdims ${keepdims})`);
        break;
      }
      case 4: {
        if (r < 2) continue;
        const perm = [...Array(r).keys()].sort(() => c.next() - 0.5);
        y = x.permute(perm) as F;
        steps.push(`permute [${perm}]`);
        break;
      }
      case 5: {
        const n = x.size;
        const a = divisor(n);
        y = (n === 0 ? x : x.reshape([a, -1])) as F;
        steps.push(`reshape [${a}, -1]`);
        break;
      }
      case 6: {
        if (r === 0) continue;
        const spec = x.shape.map((d) => {
          if (c.next() < 0.4) return null;
          const step = c.pick([1, 1, 2, -1, 3]);
          const a = c.int(-d, d - 1);
          return [a, undefined, step] as [number, undefined, number];
        });
        y = x.slice(...spec) as F;
        steps.push(`slice ${JSON.stringify(spec)}`);
        break;
      }
      case 7: {
        if (r === 0) continue;
        const pads = x.shape.map(() => [c.int(0, 2), c.int(0, 2)] as [number, number]);
        y = x.pad(pads, c.pick([0, 1, -0.5])) as F;
        steps.push(`pad ${JSON.stringify(pads)}`);
        break;
      }
      case 8: {
        if (r === 0 || x.size > 5000 || x.shape[r - 1] === 0) continue;
        const k = x.shape[r - 1];
        const n = c.pick([1, 3, 8, 33, 70]);
        const w = input(c.next() < 0.5 ? [k, n] : [n, k]);
        y = (c.next() < 0.5 || w.shape[0] === k ? x.matmul(w.shape[0] === k ? w : w.T) : x.matmul(w.T)) as F;
        y = y.div(Math.sqrt(k)).tanh();
        steps.push(`matmul [${w.shape}] scaled, tanh`);
        break;
      }
      case 9: {
        const other = input(partner(x.shape));
        y = x.gt(other).where(x, other.mul(2)) as F;
        steps.push("where(x > y, x, 2y)");
        break;
      }
      case 10: {
        if (r === 0) continue;
        const axis = c.int(0, r - 1);
        if (x.shape[axis] === 0) continue;
        y = x.argmax(axis as never).cast("f32").div(Math.max(1, x.shape[axis])) as F;
        steps.push(`argmax(axis ${axis}) / n`);
        break;
      }
      case 11: {
        if (r === 0 || x.size === 0) continue;
        const axis = c.int(0, r - 1);
        y = x.softmax(axis);
        steps.push(`softmax(axis ${axis})`);
        break;
      }
      case 12: {
        if (r === 0) continue;
        const axis = c.int(0, r - 1);
        const other = x.mul(0.5).sin();
        y = concat([x, other], axis) as F;
        steps.push(`concat with sin(x/2) on axis ${axis}`);
        break;
      }
      default: {
        if (r === 0 || x.shape[0] === 0) continue;
        const n = c.int(1, 6);
        const idx = tensor(Int32Array.from({ length: n }, () => c.int(0, x.shape[0] - 1)), {
          dtype: "i32",
          device,
        });
        y = x.gather(idx, 0) as F;
        steps.push(`gather ${n} rows`);
      }
    }
    pool.push(y);
  }
  return { out: pool[pool.length - 1], steps };
}

/**
 * Relative gap under which an argmax is decided by rounding: float32 values that went through a chain of a few
 * dozen ops and sums of up to ~100 terms may move by ~1e-5 relative, so two candidates closer than this may
 * come out in either order on the device while the float64 reference orders them one way.
 */
const ARGMAX_TIE = 1e-5;

/** Whether some argmax below `root` chooses between values within {@link ARGMAX_TIE} of each other (float64). */
export function argmaxNearTie(root: Node, leaf: (n: Node) => RefValue): boolean {
  for (const n of toposort([root])) {
    if (n.op !== Op.ArgMax) continue;
    const { axis } = n.argOf(Op.ArgMax);
    const src = n.src[0];
    const v = evaluateReference(src, leaf);
    const len = src.shape[axis];
    const inner = src.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const outer = src.size / Math.max(1, len * inner);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let best = -Infinity;
        let second = -Infinity;
        for (let k = 0; k < len; k++) {
          const x = v[(o * len + k) * inner + i];
          if (x > best) [second, best] = [best, x];
          else if (x > second) second = x;
        }
        if (best - second <= ARGMAX_TIE * Math.max(1, Math.abs(best))) return true;
      }
    }
  }
  return false;
}

/**
 * Runs case `seed`; returns null when it matches the reference (or differs only where an argmax chose between
 * values tied within rounding, see {@link ARGMAX_TIE}), else a description of the mismatch.
 */
export async function runCase(
  seed: number,
  device: DeviceName,
  opts: GenerateOptions = {},
): Promise<string | null> {
  const { out, steps } = generateCase(seed, device, opts);
  let roots = [out];
  if (opts.grad) {
    const wrt = toposort([out.node]).filter((n) => n.storage !== null && n.dtype === "f32");
    const c = new Choice(seed ^ 0x2545f491);
    const w = tensor(Float32Array.from({ length: out.size }, () => c.next() * 2 - 1), {
      shape: out.shape,
      device,
    });
    roots = backprop(out.node, wrt, w.node).map((n) => new Tensor(n));
    steps.push(`gradients of sum(out * w) with respect to ${wrt.length} inputs`);
  }
  const nodes = roots.map((t) => t.node);
  const leaves = await leafValues(nodes);
  const flags = FLAGS.filter((f) => opts[f]).map((f) => ` --${f}`).join("");
  // Each run's values of the roots, and the leaf values they were computed from.
  const runs: { got: ArrayLike<number>[]; leaf: (n: Node) => RefValue; what: string }[] = [];
  let rec: Recording | undefined;
  // A root may be an input itself (every op of the case skipped): it is read, and takes no part in a replay.
  const computed = nodes.filter((n) => n.storage === null);
  const firsts = await realizeNodes(computed, { record: (r) => (rec = r) });
  const be = await getBackend(device);
  runs.push({
    got: await Promise.all(
      nodes.map((n) =>
        n.storage !== null ? new Tensor(n).data() : be.read(firsts[computed.indexOf(n)], "f32", n.size)
      ),
    ),
    leaf: (n) => leaves.get(n)!,
    what: "",
  });
  for (const st of firsts) st.release();
  if (opts.replay && rec !== undefined && computed.length === nodes.length) {
    const r = rec;
    const inputs = r.leafNodes.map((n) => be.alloc(n.dtype, n.size));
    const bound = new BoundPlan(be, r.plan, { leaves: inputs, params: r.params });
    try {
      for (let round = 1; round <= 2; round++) {
        const c = new Choice(seed ^ Math.imul(round, 0x9e3779b1));
        const values = new Map<Node, Float64Array>();
        for (const [i, n] of r.leafNodes.entries()) {
          // New f32 values; other inputs (gather indices) keep theirs.
          const data = allocData(n.dtype, n.size);
          leaves.get(n)!.forEach((v, k) => (data[k] = n.dtype === "f32" ? c.next() * 4 - 2 : v));
          values.set(n, Float64Array.from(data));
          await writeStorage(be, inputs[i], n.dtype, data);
        }
        await bound.run();
        runs.push({
          got: await Promise.all(nodes.map((n, j) => be.read(bound.root(j), "f32", n.size))),
          leaf: (n) => values.get(n)!,
          what: ` (replay ${round})`,
        });
      }
    } finally {
      bound.dispose();
      for (const st of inputs) st.release();
    }
  }
  for (const run of runs) {
    for (let j = 0; j < nodes.length; j++) {
      const want = evaluateReference(nodes[j], run.leaf);
      for (let i = 0; i < want.length; i++) {
        const w = want[i];
        const g = run.got[j][i];
        if (Math.abs(g - w) <= 1e-3 + 1e-3 * Math.abs(w)) continue;
        if (argmaxNearTie(nodes[j], run.leaf)) break;
        return `seed ${seed}${flags} (${device})${run.what}: element ${i} of [${
          nodes[j].shape
        }]: got ${g}, ` +
          `want ${w}\n  steps: ${steps.join(" | ")}\n${printGraph([nodes[j]])}`;
      }
    }
  }
  return null;
}

/** The modes of {@link GenerateOptions}, as command-line flags. */
const FLAGS = ["views", "f16", "grad", "replay"] as const;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      cases: { type: "string", default: "200" },
      seed: { type: "string", default: "1" },
      device: { type: "string", default: "auto" },
      views: { type: "boolean", default: false },
      f16: { type: "boolean", default: false },
      grad: { type: "boolean", default: false },
      replay: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "deno task fuzz [--cases N=200] [--seed S=1] [--device auto|webgpu|wasm|cpu] [--views [--f16]] [--grad] [--replay]",
    );
    Deno.exit(0);
  }
  const n = Number(values.cases);
  const s0 = Number(values.seed);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`--cases must be a positive integer, got ${values.cases}`);
  }
  if (!Number.isInteger(s0) || s0 < 0 || s0 >= 2 ** 32) {
    throw new Error(`--seed must be an integer in [0, 2^32), got ${values.seed}`);
  }
  const device = resolveDevice(checkDeviceChoice(values.device, "--device"));
  console.log(`device: ${await deviceLine(values.device as DeviceChoice)}`);
  const opts = { views: values.views, f16: values.f16, grad: values.grad, replay: values.replay };
  let failures = 0;
  for (let i = 0; i < n; i++) {
    const msg = await runCase(campaignSeed(s0, i), device, opts);
    if (msg !== null) {
      failures++;
      console.log(`MISMATCH ${msg}`);
    }
  }
  const modes = FLAGS.filter((f) => opts[f]).map((f) => ` --${f}`).join("");
  console.log(
    `fuzz: ${n} cases${modes} from seed ${s0} on ${device}: ${n - failures} passed, ${failures} failed`,
  );
  if (failures > 0) Deno.exit(1);
}
