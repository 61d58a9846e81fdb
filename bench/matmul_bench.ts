/**
 * fp32 matmul throughput through the public API: `a.matmul(b)` (optionally with a fused bias + relu epilogue)
 * then `await realize(c)`, rebuilt every iteration, queue drained once per repetition; median over repetitions.
 * GFLOP/s = 2·M·N·K / time (the epilogue's 2·M·N is not counted). Next to the tiled template it times the naive
 * kernel (`realizeNodes(..., { noMatmulTemplate: true })`) on the same inputs, so the speed-up is a ratio
 * measured side by side. Every case is spot-checked against float64 host dot products before it is timed.
 *
 * Run: `deno run -A bench/matmul_bench.ts [--quick] [--reps N] [--target-ms N]`
 * (also `deno bench -A bench/matmul_bench.ts`: a smaller set with the naive kernel as the group baseline).
 *
 * @module
 */
import { type KernelLaunch, randn, realize, runKernels, type Tensor } from "../mod.ts";
import {
  matmulVec4Grid,
  matmulVec4Host,
  matmulVec4Unfit,
  matmulVec4Wgsl,
} from "../kernels/matmul_vec4.wgsl.ts";
import { getWebGPU, realizeNodes, setDefaultDevice } from "../lib/runtime/realize.ts";
import {
  adapterLine,
  type BenchArgs,
  fmt,
  measureSyncMs,
  parseBenchArgs,
  table,
  timeInterleaved,
  type Timing,
  watchHostLoad,
} from "./_timing.ts";

// The kernels compared here are WGSL (templates, tiles, shader variants): they run on the WebGPU device.
setDefaultDevice("webgpu");

/** One matmul product to time: `[m, k] x [k, n]`, optionally `relu(a·b + bias)`. */
export interface MatmulCase {
  /** Row label. */
  readonly label: string;
  /** Rows of the left operand. */
  readonly m: number;
  /** Shared dimension. */
  readonly k: number;
  /** Columns of the right operand. */
  readonly n: number;
  /** Fuse `+ bias[n]` and relu into the product. */
  readonly biasRelu?: boolean;
  /** Use the naive kernel instead of the tiled template (baseline). */
  readonly naive?: boolean;
}

/** A timed case. */
export interface MatmulResult {
  /** What was timed. */
  readonly case: MatmulCase;
  /** The measurement. */
  readonly timing: Timing;
  /** 2·M·N·K / median time, in GFLOP/s. */
  readonly gflops: number;
}

/** Square products `n x n x n`. */
function square(n: number, naive = false): MatmulCase {
  return { label: `${n}x${n} · ${n}x${n}${naive ? " (naive)" : ""}`, m: n, k: n, n, naive };
}

/** The default (or `--quick`) list of cases. */
export function matmulCases(quick: boolean): MatmulCase[] {
  const squares = (quick ? [64, 128, 256] : [64, 128, 256, 512, 1024]).map((n) => square(n));
  const rows = quick ? 512 : 2048;
  const d = quick ? 128 : 512;
  const mlp = quick ? 256 : 512;
  return [
    ...squares,
    { label: `LoRA down ${rows}x64 · 64x8`, m: rows, k: 64, n: 8 },
    { label: `LoRA up ${rows}x8 · 8x64`, m: rows, k: 8, n: 64 },
    { label: `LoRA down ${rows}x${d} · ${d}x8`, m: rows, k: d, n: 8 },
    { label: `LoRA up ${rows}x8 · 8x${d}`, m: rows, k: 8, n: d },
    { label: `relu(${mlp}x${mlp} · ${mlp}x${mlp} + bias)`, m: mlp, k: mlp, n: mlp, biasRelu: true },
  ];
}

/** Naive-kernel baselines for the side-by-side speed-up. */
export function naiveCases(quick: boolean): MatmulCase[] {
  return (quick ? [128, 256] : [256, 512]).map((n) => square(n, true));
}

/** Realized inputs of a case (seeded). */
interface Inputs {
  a: Tensor<number[], "f32">;
  b: Tensor<number[], "f32">;
  bias: Tensor<number[], "f32"> | null;
}

async function makeInputs(c: MatmulCase, seed: number): Promise<Inputs> {
  const a = randn([c.m, c.k], { seed }) as unknown as Tensor<number[], "f32">;
  const b = randn([c.k, c.n], { seed: seed + 1 }) as unknown as Tensor<number[], "f32">;
  const bias = c.biasRelu ? randn([c.n], { seed: seed + 2 }) as unknown as Tensor<number[], "f32"> : null;
  await realize(...(bias === null ? [a, b] : [a, b, bias]));
  return { a, b, bias };
}

/** The lazy product of a case. */
function build(inp: Inputs): Tensor<number[], "f32"> {
  const c = inp.a.matmul(inp.b) as unknown as Tensor<number[], "f32">;
  return inp.bias === null ? c : c.add(inp.bias).relu();
}

/** One realization of the product; the result's device memory is released right away. */
async function runOnce(c: MatmulCase, inp: Inputs): Promise<void> {
  const out = build(inp);
  if (c.naive) {
    const [s] = await realizeNodes([out.node], { noMatmulTemplate: true });
    s.release();
  } else {
    await realize(out);
    out.dispose();
  }
}

/** Compares 16 sampled outputs with float64 host dot products; throws naming the case on a mismatch. */
async function spotCheck(c: MatmulCase, inp: Inputs, seed: number): Promise<void> {
  const out = build(inp);
  let got: Float32Array;
  if (c.naive) {
    const gpu = await getWebGPU();
    const [s] = await realizeNodes([out.node], { noMatmulTemplate: true });
    got = (await gpu.read(s, "f32", c.m * c.n)) as Float32Array;
    s.release();
  } else {
    got = (await out.data()) as Float32Array;
    out.dispose();
  }
  await checkSamples(c, inp, got, seed, "matmul bench");
}

/** Compares 16 sampled entries of `got` (the last one included) with float64 host products of the inputs. */
async function checkSamples(c: MatmulCase, inp: Inputs, got: Float32Array, seed: number, what: string) {
  const a = (await inp.a.data()) as Float32Array;
  const b = (await inp.b.data()) as Float32Array;
  const bias = inp.bias === null ? null : (await inp.bias.data()) as Float32Array;
  let s = seed >>> 0 || 1;
  const next = (hi: number) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % hi;
  };
  for (let t = 0; t < 16; t++) {
    const i = t === 0 ? c.m - 1 : next(c.m); // include the last row: edge tiles are clamped
    const j = t === 0 ? c.n - 1 : next(c.n);
    let acc = 0;
    let mag = 0;
    for (let p = 0; p < c.k; p++) {
      acc += a[i * c.k + p] * b[p * c.n + j];
      mag += Math.abs(a[i * c.k + p] * b[p * c.n + j]);
    }
    if (bias !== null) acc = Math.max(acc + bias[j], 0);
    const g = got[i * c.n + j];
    if (!(Math.abs(g - acc) <= 1e-5 * mag + 1e-6)) {
      throw new Error(`${what} "${c.label}": output [${i}, ${j}] is ${g}, host float64 gives ${acc}`);
    }
  }
}

/** A case ready to time: inputs realized, output spot-checked. */
export interface PreparedMatmul {
  /** The case. */
  readonly case: MatmulCase;
  /** One iteration: builds the product anew, realizes it and releases the result. */
  run(): Promise<void>;
  /** Releases the inputs. */
  dispose(): void;
}

/** Draws the inputs of `c` from `seed` (default 1234), realizes them and spot-checks one product. */
export async function prepareMatmul(c: MatmulCase, opts: { seed?: number } = {}): Promise<PreparedMatmul> {
  const seed = opts.seed ?? 1234;
  const inp = await makeInputs(c, seed);
  const dispose = () => {
    inp.a.dispose();
    inp.b.dispose();
    inp.bias?.dispose();
  };
  try {
    await spotCheck(c, inp, seed);
  } catch (e) {
    dispose();
    throw e;
  }
  return { case: c, run: () => runOnce(c, inp), dispose };
}

/**
 * The hand-optimised `vec4` kernel of `kernels/matmul_vec4.wgsl.ts` on the inputs of a plain case (no epilogue),
 * spot-checked like the template; the reference point for the template's share of a hand-written kernel.
 */
export async function prepareHandMatmul(
  c: MatmulCase,
  opts: { seed?: number } = {},
): Promise<PreparedMatmul> {
  if (c.biasRelu || c.naive) throw new RangeError(`prepareHandMatmul: "${c.label}" must be a plain product`);
  const unfit = matmulVec4Unfit(c.m, c.k, c.n);
  if (unfit !== null) throw new RangeError(`prepareHandMatmul: "${c.label}": ${unfit}`);
  const seed = opts.seed ?? 1234;
  const inp = await makeInputs(c, seed);
  const launch: KernelLaunch = {
    name: `hand_matmul_vec4_${c.m}x${c.k}x${c.n}`,
    wgsl: matmulVec4Wgsl(c.m, c.k, c.n),
    dispatch: matmulVec4Grid(c.m, c.n),
    bindings: [2, 0, 1],
    host: matmulVec4Host(c.m, c.k, c.n),
  };
  const once = () => runKernels([inp.a, inp.b], [{ shape: [c.m, c.n], dtype: "f32" }], [launch]);
  const dispose = () => {
    inp.a.dispose();
    inp.b.dispose();
  };
  try {
    const [out] = await once();
    const got = (await out.data()) as Float32Array;
    out.dispose();
    await checkSamples(c, inp, got, seed, "hand matmul");
  } catch (e) {
    dispose();
    throw e;
  }
  return {
    case: c,
    run: async () => {
      const [out] = await once();
      out.dispose();
    },
    dispose,
  };
}

/**
 * Times several cases side by side (see `timeInterleaved`): each repetition runs a batch of every case in turn,
 * so a slow spell of the host slows all of them alike.
 *
 * @example
 * ```ts
 * import { benchMatmuls } from "./matmul_bench.ts";
 * const [tiled, naive] = await benchMatmuls([
 *   { label: "128", m: 128, k: 128, n: 128 },
 *   { label: "128 naive", m: 128, k: 128, n: 128, naive: true },
 * ], { reps: 1, targetMs: 20 });
 * console.log(`speed-up ${(naive.timing.ms / tiled.timing.ms).toFixed(1)}x`);
 * ```
 */
export async function benchMatmuls(
  cases: readonly MatmulCase[],
  opts: { reps: number; targetMs: number; seed?: number },
): Promise<MatmulResult[]> {
  const gpu = await getWebGPU();
  const prepared: PreparedMatmul[] = [];
  try {
    for (const c of cases) prepared.push(await prepareMatmul(c, opts));
    const timings = await timeInterleaved(prepared.map((p) => p.run), {
      sync: () => gpu.sync(),
      reps: opts.reps,
      targetMs: opts.targetMs,
      warmup: 1,
    });
    return cases.map((c, i) => ({
      case: c,
      timing: timings[i],
      gflops: (2 * c.m * c.n * c.k) / (timings[i].ms * 1e6),
    }));
  } finally {
    for (const p of prepared) p.dispose();
  }
}

/**
 * Times one case (spot check, warm-up, calibrated repetitions).
 *
 * @example
 * ```ts
 * import { benchMatmul } from "./matmul_bench.ts";
 * const r = await benchMatmul({ label: "64", m: 64, k: 64, n: 64 }, { reps: 1, targetMs: 20 });
 * console.log(`${r.gflops.toFixed(2)} GFLOP/s`);
 * ```
 */
export async function benchMatmul(
  c: MatmulCase,
  opts: { reps: number; targetMs: number; seed?: number },
): Promise<MatmulResult> {
  return (await benchMatmuls([c], opts))[0];
}

/** A result as a table row. */
function row(r: MatmulResult): string[] {
  const t = r.timing;
  return [
    r.case.label,
    `${r.case.m}`,
    `${r.case.k}`,
    `${r.case.n}`,
    fmt(t.ms, 3),
    `${fmt(t.minMs, 3)}–${fmt(t.maxMs, 3)}`,
    `${t.iters}×${t.reps}`,
    fmt(r.gflops, 3),
    fmt((2 * r.case.m * r.case.n * r.case.k) / (t.minMs * 1e6), 3),
  ];
}

const HEADERS = [
  "product",
  "M",
  "K",
  "N",
  "ms (median)",
  "ms range",
  "iters×reps",
  "GFLOP/s",
  "best-rep GFLOP/s",
];

/** Runs every case and prints the tables. */
async function main(args: BenchArgs): Promise<void> {
  const load = watchHostLoad();
  const gpu = await getWebGPU();
  console.log(`# matmul (fp32) through a.matmul(b) + realize${args.quick ? " [--quick]" : ""}`);
  console.log(await adapterLine());
  console.log(
    `idle sync() costs ${fmt(await measureSyncMs(() => gpu.sync()), 1)} ms, paid once per repetition ` +
      `(${args.reps} reps of ~${args.targetMs} ms each).\n`,
  );
  const results = await benchMatmuls(matmulCases(args.quick), args);
  console.log(table(HEADERS, results.map(row)));

  console.log("\n## tiled template vs naive kernel (same inputs, timed side by side in this run)\n");
  const pairs: string[][] = [];
  const pairRows: string[][] = [];
  for (const c of naiveCases(args.quick)) {
    const [naive, tiled] = await benchMatmuls([c, {
      ...c,
      naive: false,
      label: c.label.replace(" (naive)", ""),
    }], args);
    pairRows.push(row(naive), row(tiled));
    pairs.push([
      `${c.m}x${c.k} · ${c.k}x${c.n}`,
      fmt(naive.timing.ms, 3),
      fmt(tiled.timing.ms, 3),
      fmt(naive.gflops, 3),
      fmt(tiled.gflops, 3),
      `${fmt(naive.timing.ms / tiled.timing.ms, 1)}×`,
    ]);
  }
  console.log(table(HEADERS, pairRows));
  console.log();
  console.log(
    table(["product", "naive ms", "tiled ms", "naive GFLOP/s", "tiled GFLOP/s", "speed-up"], pairs),
  );
  const note = load();
  if (note) console.log(`\n${note}`);
}

/** `deno bench` entries: naive vs tiled at 256 (naive is the group baseline), and two LoRA shapes. */
function registerDenoBench(): void {
  const perCall = 4;
  const entry = (c: MatmulCase, group: string, baseline = false) => {
    let inputs: Promise<Inputs> | null = null;
    Deno.bench({
      name: `${c.label} ×${perCall}`,
      group,
      baseline,
      n: 5,
      warmup: 1,
      async fn(b) {
        const gpu = await getWebGPU();
        inputs ??= makeInputs(c, 1234);
        const inp = await inputs;
        b.start();
        for (let i = 0; i < perCall; i++) await runOnce(c, inp);
        await gpu.sync();
        b.end();
      },
    });
  };
  entry(square(256, true), "matmul 256", true);
  entry(square(256), "matmul 256");
  entry({ label: "LoRA down 2048x64 · 64x8", m: 2048, k: 64, n: 8 }, "LoRA");
  entry({ label: "LoRA up 2048x8 · 8x64", m: 2048, k: 8, n: 64 }, "LoRA");
}

if (import.meta.main) {
  await main(parseBenchArgs("matmul_bench", Deno.args));
} else {
  registerDenoBench(); // a no-op unless the file runs under `deno bench`
}
