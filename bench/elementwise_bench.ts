/**
 * Throughput of generated (fused) elementwise, broadcast and reduction kernels through the public API, for
 * 2^16, 2^20 and 2^22 elements: each iteration builds the expression anew and realizes it; the queue is drained
 * once per repetition; median over repetitions. GB/s counts the f32 inputs read once plus the output written
 * once (what an ideal kernel moves); GFLOP/s counts the arithmetic of the definition, one per operation
 * (exp and tanh count as one). Every case is spot-checked against float64 host values before it is timed.
 *
 * Run: `deno run -A bench/elementwise_bench.ts [--quick] [--reps N] [--target-ms N]`
 * (also `deno bench -A bench/elementwise_bench.ts`: the same cases at 2^20 elements).
 *
 * @module
 */
import { randn, realize, type Tensor } from "../mod.ts";
import { getWebGPU, setDefaultDevice } from "../lib/runtime/realize.ts";
import {
  adapterLine,
  type BenchArgs,
  fmt,
  measureSyncMs,
  parseBenchArgs,
  table,
  timeInterleaved,
  watchHostLoad,
} from "./_timing.ts";

// The kernels compared here are WGSL (templates, tiles, shader variants): they run on the WebGPU device.
setDefaultDevice("webgpu");

/** An f32 tensor of any shape (the cases build with widened shapes). */
type F32 = Tensor<number[], "f32">;

/** One elementwise-family expression over `size` elements. */
interface ElementwiseCase {
  /** Row label. */
  readonly label: string;
  /** Shapes of the inputs for `size` elements. */
  readonly inputs: (size: number) => number[][];
  /** The lazy expression. */
  readonly build: (xs: readonly F32[]) => F32;
  /** Bytes an ideal kernel moves: f32 inputs read once + output written once. */
  readonly bytes: (size: number) => number;
  /** Arithmetic operations of the definition. */
  readonly flops: (size: number) => number;
  /** Float64 value of output element `i` from the host inputs. */
  readonly reference: (xs: readonly Float32Array[], i: number) => number;
}

const ROW = 1024;
const BCAST = 256;

/** GELU, tanh approximation, in float64 (the definition `Tensor.gelu` implements). */
function gelu(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

/** The five cases of the benchmark. */
const ELEMENTWISE_CASES: readonly ElementwiseCase[] = [
  {
    label: "x + 1",
    inputs: (n) => [[n]],
    build: ([x]) => x.add(1),
    bytes: (n) => 8 * n,
    flops: (n) => n,
    reference: ([x], i) => x[i] + 1,
  },
  {
    label: "gelu(x·y + z)",
    inputs: (n) => [[n], [n], [n]],
    build: ([x, y, z]) => x.mul(y).add(z).gelu(),
    bytes: (n) => 16 * n,
    // mul, add; gelu: x², ·x, ·0.044715, +x, ·√(2/π), tanh, +1, ·0.5, · = 11 per element
    flops: (n) => 11 * n,
    reference: ([x, y, z], i) => gelu(x[i] * y[i] + z[i]),
  },
  {
    label: `[n/${BCAST}, ${BCAST}] + [${BCAST}]`,
    inputs: (n) => [[n / BCAST, BCAST], [BCAST]],
    build: ([x, v]) => x.add(v) as unknown as F32,
    bytes: (n) => 4 * (n + BCAST) + 4 * n,
    flops: (n) => n,
    reference: ([x, v], i) => x[i] + v[i % BCAST],
  },
  {
    label: `sum(-1) of [n/${ROW}, ${ROW}]`,
    inputs: (n) => [[n / ROW, ROW]],
    build: ([x]) => x.sum(-1) as unknown as F32,
    bytes: (n) => 4 * n + 4 * (n / ROW),
    flops: (n) => n,
    reference: ([x], r) => {
      let s = 0;
      for (let j = 0; j < ROW; j++) s += x[r * ROW + j];
      return s;
    },
  },
  {
    label: `softmax(-1) of [n/${ROW}, ${ROW}]`,
    inputs: (n) => [[n / ROW, ROW]],
    build: ([x]) => x.softmax(-1),
    bytes: (n) => 8 * n,
    // max, subtract, exp, sum, divide = 5 per element
    flops: (n) => 5 * n,
    reference: ([x], i) => {
      const r = Math.floor(i / ROW);
      let m = -Infinity;
      for (let j = 0; j < ROW; j++) m = Math.max(m, x[r * ROW + j]);
      let s = 0;
      for (let j = 0; j < ROW; j++) s += Math.exp(x[r * ROW + j] - m);
      return Math.exp(x[i] - m) / s;
    },
  },
];

/** A timed case. */
interface ElementwiseResult {
  /** Case label. */
  readonly label: string;
  /** Elements of the (largest) input. */
  readonly size: number;
  /** Median ms per iteration. */
  readonly ms: number;
  /** Fastest and slowest repetition, ms per iteration. */
  readonly range: readonly [number, number];
  /** Iterations per repetition and repetitions. */
  readonly iters: number;
  /** Repetitions. */
  readonly reps: number;
  /** Ideal bytes / time, GB/s (1e9 bytes). */
  readonly gbps: number;
  /** Definition flops / time, GFLOP/s. */
  readonly gflops: number;
}

async function makeInputs(c: ElementwiseCase, size: number, seed: number): Promise<F32[]> {
  const xs = c.inputs(size).map((s, i) => randn(s, { seed: seed + i }) as unknown as F32);
  await realize(...xs);
  return xs;
}

/** Compares 16 sampled outputs (always including the last one) with float64 host values. */
async function spotCheck(c: ElementwiseCase, xs: readonly F32[], seed: number): Promise<void> {
  const out = c.build(xs);
  const got = (await out.data()) as Float32Array;
  out.dispose();
  const host = await Promise.all(xs.map(async (x) => (await x.data()) as Float32Array));
  let s = seed >>> 0 || 1;
  for (let t = 0; t < 16; t++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const i = t === 0 ? got.length - 1 : s % got.length;
    const want = c.reference(host, i);
    // A row sum of ROW standard normals is about √ROW in size; f32 rounding stays far below 1e-4·√ROW, while a
    // truncated loop would miss whole elements (errors of order 1).
    const tol = c.label.startsWith("sum") ? 1e-4 * Math.sqrt(ROW) : 1e-5 * Math.abs(want) + 1e-6;
    if (!(Math.abs(got[i] - want) <= tol)) {
      throw new Error(
        `elementwise bench "${c.label}" (${xs[0].size} elements): output ${i} is ${got[i]}, ` +
          `host float64 gives ${want}`,
      );
    }
  }
}

/** One row of the benchmark: a case at a size. */
interface Job {
  readonly c: ElementwiseCase;
  readonly size: number;
}

/**
 * Times the jobs side by side (spot check each, then interleaved repetitions: a slow spell of the host slows all
 * rows alike).
 */
async function benchElementwise(
  jobs: readonly Job[],
  opts: { reps: number; targetMs: number; seed?: number },
): Promise<ElementwiseResult[]> {
  const gpu = await getWebGPU();
  const seed = opts.seed ?? 4321;
  const inputs: F32[][] = [];
  try {
    for (const { c, size } of jobs) {
      const xs = await makeInputs(c, size, seed);
      inputs.push(xs);
      await spotCheck(c, xs, seed);
    }
    const timings = await timeInterleaved(
      jobs.map(({ c }, j) => async () => {
        const out = c.build(inputs[j]);
        await realize(out);
        out.dispose();
      }),
      { sync: () => gpu.sync(), reps: opts.reps, targetMs: opts.targetMs, warmup: 1 },
    );
    return jobs.map(({ c, size }, j) => {
      const t = timings[j];
      return {
        label: c.label,
        size,
        ms: t.ms,
        range: [t.minMs, t.maxMs] as const,
        iters: t.iters,
        reps: t.reps,
        gbps: c.bytes(size) / (t.ms * 1e6),
        gflops: c.flops(size) / (t.ms * 1e6),
      };
    });
  } finally {
    for (const x of inputs.flat()) x.dispose();
  }
}

/** `2^k` for sizes that are powers of two. */
function pow2(n: number): string {
  const k = Math.log2(n);
  if (Number.isInteger(k)) return `2^${k}`;
  return n === 65535 * 64 ? "65535·64" : `${n}`;
}

async function main(args: BenchArgs): Promise<void> {
  const load = watchHostLoad();
  const gpu = await getWebGPU();
  const sizes = args.quick ? [1 << 16, 1 << 18] : [1 << 16, 1 << 20, 1 << 22];
  console.log(`# elementwise / broadcast / reduction kernels (f32)${args.quick ? " [--quick]" : ""}`);
  console.log(await adapterLine());
  console.log(
    `idle sync() costs ${fmt(await measureSyncMs(() => gpu.sync()), 1)} ms, paid once per repetition ` +
      `(${args.reps} reps of ~${args.targetMs} ms each). GB/s = (f32 inputs + output) bytes / time.\n`,
  );
  const jobs: Job[] = ELEMENTWISE_CASES.flatMap((c) => sizes.map((size) => ({ c, size })));
  // Diagnostics: x + 1 just below 2^22 (65,535 workgroups of 64: one dispatch row; 2^22 needs a second row of
  // the grid), and on 64 elements (the fixed cost of one realize: scheduling, rendering, bind groups, submit).
  const extra: Job[] = [
    ...(args.quick ? [] : [{ c: ELEMENTWISE_CASES[0], size: 65535 * 64 }]),
    { c: ELEMENTWISE_CASES[0], size: 64 },
  ];
  const results = await benchElementwise([...jobs, ...extra], args);
  const rows = results.map((r, j) => {
    const c = [...jobs, ...extra][j].c;
    return [
      r.label,
      pow2(r.size),
      fmt(r.ms, 3),
      `${fmt(r.range[0], 3)}–${fmt(r.range[1], 3)}`,
      `${r.iters}×${r.reps}`,
      fmt(r.gbps, 3),
      fmt(r.gflops, 3),
      fmt(c.bytes(r.size) / (r.range[0] * 1e6), 3),
    ];
  });
  const headers = ["op", "n", "ms (median)", "ms range", "iters×reps", "GB/s", "GFLOP/s", "best-rep GB/s"];
  console.log(table(headers, rows.slice(0, jobs.length)));
  console.log("\ndiagnostics (see the comments in the source):\n");
  console.log(table(headers, rows.slice(jobs.length)));
  const note = load();
  if (note) console.log(`\n${note}`);
}

/** `deno bench` entries: every case at 2^20 elements, four realizations per call. */
function registerDenoBench(): void {
  const size = 1 << 20;
  const perCall = 4;
  for (const c of ELEMENTWISE_CASES) {
    let inputs: Promise<F32[]> | null = null;
    Deno.bench({
      name: `${c.label} (2^20) ×${perCall}`,
      group: "elementwise",
      n: 5,
      warmup: 1,
      async fn(b) {
        const gpu = await getWebGPU();
        inputs ??= makeInputs(c, size, 4321);
        const xs = await inputs;
        b.start();
        for (let i = 0; i < perCall; i++) {
          const out = c.build(xs);
          await realize(out);
          out.dispose();
        }
        await gpu.sync();
        b.end();
      },
    });
  }
}

if (import.meta.main) {
  await main(parseBenchArgs("elementwise_bench", Deno.args));
} else {
  registerDenoBench(); // a no-op unless the file runs under `deno bench`
}
