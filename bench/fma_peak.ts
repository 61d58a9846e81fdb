/**
 * Peak f32 arithmetic of the adapter, measured with a pure-FMA kernel, and the matmul template's GFLOP/s as a
 * share of it.
 *
 * Each invocation keeps `chains` independent accumulators in registers and updates every one of them with
 * `acc = fma(acc, m, c)` `unroll` times per loop iteration (the body is unrolled in the WGSL source), for `loops`
 * iterations; `m` and `c` come from a buffer so nothing can be folded at compile time, and the sum of the
 * accumulators is stored so nothing is dead. One FMA counts as 2 flops. The loop runs only `loops` (64)
 * iterations, far under llvmpipe's silent 65,535-iterations-per-invocation cap; a check of 8 invocations against
 * the host twin would catch a truncated loop. Chain counts from 1 to 24 are timed side by side: one chain is
 * bound by the latency of the dependent FMAs, more chains hide it until the accumulators no longer fit in
 * registers; the best median is reported as the peak. (On lavapipe the outputs match an unfused multiply-then-add,
 * not a fused one, so each `fma` runs as a multiply and an add there; the flop count is the same.)
 *
 * This kernel exists only to measure the adapter, so its WGSL lives here rather than in `kernels/`.
 *
 * Run: `deno run -A bench/fma_peak.ts [--quick] [--reps N] [--target-ms N]`
 *
 * @module
 */
import { type Tensor, tensor } from "../mod.ts";
import { runKernels } from "../lib/tensor/custom.ts";
import { getWebGPU, setDefaultDevice } from "../lib/runtime/realize.ts";
import {
  adapterLine,
  type BenchArgs,
  fmt,
  parseBenchArgs,
  table,
  timeInterleaved,
  watchHostLoad,
} from "./_timing.ts";
import { type PreparedMatmul, prepareHandMatmul, prepareMatmul } from "./matmul_bench.ts";

// The kernels compared here are WGSL (templates, tiles, shader variants): they run on the WebGPU device.
setDefaultDevice("webgpu");

/** Shape of the FMA kernel. */
export interface FmaConfig {
  /** Independent accumulators per invocation. */
  readonly chains: number;
  /** FMAs per accumulator per loop iteration (unrolled in the source). */
  readonly unroll: number;
  /** Loop iterations per invocation (kept far under llvmpipe's 65,535 cap). */
  readonly loops: number;
  /** Workgroups of 64 invocations (at most 65,535). */
  readonly groups: number;
}

/** Invocations per workgroup of the FMA kernel. */
const WG = 64;
/** The FMA's multiplier and addend: the accumulators converge to c / (1 - m) = 10 and stay normal floats. */
const M = 0.9999;
const C = 0.001;

/** Flops of one dispatch (2 per FMA). */
export function fmaFlops(cfg: FmaConfig): number {
  return 2 * cfg.chains * cfg.unroll * cfg.loops * cfg.groups * WG;
}

/** Starting value of accumulator `j` of invocation `i`. */
function start(i: number, j: number): number {
  return Math.fround((i % 7) + 0.25 * j);
}

/** The WGSL of the FMA kernel: binding 0 holds [m, c], binding 1 one f32 per invocation. */
export function fmaWgsl(cfg: FmaConfig): string {
  const { chains, unroll, loops } = cfg;
  const L: string[] = [
    "@group(0) @binding(0) var<storage, read> params: array<f32>;",
    "@group(0) @binding(1) var<storage, read_write> out: array<f32>;",
    `@compute @workgroup_size(${WG})`,
    "fn main(@builtin(global_invocation_id) g: vec3<u32>) {",
    "  let i = g.x;",
    "  if (i >= arrayLength(&out)) { return; }",
    "  let m = params[0];",
    "  let c = params[1];",
    "  let base = f32(i % 7u);",
  ];
  for (let j = 0; j < chains; j++) L.push(`  var a${j} = base + ${(0.25 * j).toFixed(2)};`);
  L.push(`  for (var r: u32 = 0u; r < ${loops}u; r = r + 1u) {`);
  for (let u = 0; u < unroll; u++) {
    for (let j = 0; j < chains; j++) L.push(`    a${j} = fma(a${j}, m, c);`);
  }
  L.push("  }");
  L.push(`  out[i] = ${Array.from({ length: chains }, (_, j) => `a${j}`).join(" + ")};`);
  L.push("}");
  return L.join("\n");
}

/**
 * What the kernel stores for invocation `i` (the host twin), in float64 with f32 rounding after every FMA
 * (`fused`) or after the multiply and again after the add (unfused: WGSL allows either, and lavapipe does the
 * latter).
 */
export function fmaReference(cfg: FmaConfig, i: number, opts: { fused?: boolean } = {}): number {
  const fused = opts.fused ?? true;
  const m = Math.fround(M);
  const c = Math.fround(C);
  let sum = 0;
  for (let j = 0; j < cfg.chains; j++) {
    let a = start(i, j);
    for (let s = 0; s < cfg.unroll * cfg.loops; s++) {
      a = fused ? Math.fround(a * m + c) : Math.fround(Math.fround(a * m) + c);
    }
    sum += a;
  }
  return sum;
}

/** Runs the FMA kernel once; returns the output tensor (one value per invocation). */
async function runFma(cfg: FmaConfig, params: Tensor, wgsl: string): Promise<Tensor> {
  const count = cfg.groups * WG;
  const [out] = await runKernels([params], [{ shape: [count], dtype: "f32" }], [{
    name: `fma_peak_${cfg.chains}x${cfg.unroll}x${cfg.loops}`,
    wgsl,
    dispatch: [cfg.groups, 1, 1],
    bindings: [0, 1],
    host: ([, o]) => {
      for (let i = 0; i < count; i++) o[i] = fmaReference(cfg, i);
    },
  }]);
  return out;
}

/** Result of one FMA configuration. */
export interface FmaResult {
  /** The configuration. */
  readonly config: FmaConfig;
  /** Median ms per dispatch. */
  readonly ms: number;
  /** Iterations × repetitions behind the median. */
  readonly iters: number;
  /** Measured GFLOP/s (median repetition). */
  readonly gflops: number;
  /** GFLOP/s of the fastest repetition. */
  readonly bestGflops: number;
}

/** An FMA configuration ready to time: pipeline compiled, output checked against the host twin. */
export interface PreparedFma {
  /** The configuration. */
  readonly config: FmaConfig;
  /** One dispatch of the kernel (its output is released right away). */
  run(): Promise<void>;
  /** Releases the parameter buffer. */
  dispose(): void;
}

/** Compiles and runs the kernel of `cfg` once, checking 8 invocations against the host twin. */
export async function prepareFma(cfg: FmaConfig): Promise<PreparedFma> {
  const params = tensor([M, C]);
  const wgsl = fmaWgsl(cfg);
  const first = await runFma(cfg, params, wgsl);
  const got = (await first.data()) as Float32Array;
  first.dispose();
  for (const i of [0, 1, 2, 3, 6, 100, got.length - 2, got.length - 1]) {
    // One missing loop iteration moves the sum far more than the tolerance (1e-5 relative).
    const fused = fmaReference(cfg, i);
    const unfused = fmaReference(cfg, i, { fused: false });
    const tol = 1e-5 * Math.abs(fused);
    if (!(got[i] >= Math.min(fused, unfused) - tol && got[i] <= Math.max(fused, unfused) + tol)) {
      params.dispose();
      throw new Error(
        `fma_peak (${cfg.chains} chains x ${cfg.unroll} unrolled x ${cfg.loops} loops): invocation ${i} stored ` +
          `${got[i]}, the host twin gives ${fused} (fused) or ${unfused} (unfused): a truncated loop or a ` +
          `miscompiled kernel`,
      );
    }
  }
  return {
    config: cfg,
    run: async () => (await runFma(cfg, params, wgsl)).dispose(),
    dispose: () => params.dispose(),
  };
}

/**
 * Times the FMA kernels of `configs` side by side (interleaved repetitions), after checking each.
 *
 * @example
 * ```ts
 * import { benchFma } from "./fma_peak.ts";
 * const [r] = await benchFma([{ chains: 12, unroll: 20, loops: 4, groups: 16 }], { reps: 1, targetMs: 20 });
 * console.log(`${r.gflops.toFixed(1)} GFLOP/s`);
 * ```
 */
export async function benchFma(
  configs: readonly FmaConfig[],
  opts: { reps: number; targetMs: number },
): Promise<FmaResult[]> {
  const gpu = await getWebGPU();
  const prepared: PreparedFma[] = [];
  try {
    for (const cfg of configs) prepared.push(await prepareFma(cfg));
    const timings = await timeInterleaved(prepared.map((p) => p.run), {
      sync: () => gpu.sync(),
      reps: opts.reps,
      targetMs: opts.targetMs,
      warmup: 1,
    });
    return configs.map((cfg, i) => ({
      config: cfg,
      ms: timings[i].ms,
      iters: timings[i].iters,
      gflops: fmaFlops(cfg) / (timings[i].ms * 1e6),
      bestGflops: fmaFlops(cfg) / (timings[i].minMs * 1e6),
    }));
  } finally {
    for (const p of prepared) p.dispose();
  }
}

/** FMAs in the unrolled loop body, whatever the chain count (divisible by every entry of `CHAINS`). */
const FMAS_PER_LOOP = 240;
/** Chain counts tried: latency hiding grows with the count until the accumulators no longer fit in registers. */
const CHAINS = [1, 2, 4, 8, 12, 16, 24];

async function main(args: BenchArgs): Promise<void> {
  const load = watchHostLoad();
  console.log(`# FMA peak and matmul share${args.quick ? " [--quick]" : ""}`);
  console.log(await adapterLine());
  // FMAS_PER_LOOP FMAs per loop iteration, spread over 1..24 independent chains; 64 loop iterations.
  const groups = args.quick ? 256 : 1024;
  const configs: FmaConfig[] = CHAINS.map((chains) => ({
    chains,
    unroll: FMAS_PER_LOOP / chains,
    loops: 64,
    groups,
  }));
  const gflop = fmaFlops(configs[0]) / 1e9;
  console.log(
    `kernel: ${groups * WG} invocations x ${FMAS_PER_LOOP * 64} FMAs each (${fmt(gflop, 2)} GFLOP per ` +
      `dispatch), ${args.reps} reps of ~${args.targetMs} ms\n`,
  );
  const results = await benchFma(configs, args);
  console.log(table(
    ["chains x unroll x loops", "ms / dispatch (median)", "iters", "GFLOP/s", "best-rep GFLOP/s"],
    results.map((r) => [
      `${r.config.chains} x ${r.config.unroll} x ${r.config.loops}`,
      fmt(r.ms, 2),
      `${r.iters}`,
      fmt(r.gflops, 2),
      fmt(r.bestGflops, 2),
    ]),
  ));
  const peak = Math.max(...results.map((r) => r.gflops));
  const top = results.find((r) => r.gflops === peak)!;
  console.log(
    `\nmeasured FMA peak: ${fmt(peak, 2)} GFLOP/s (median; best repetition ${
      fmt(top.bestGflops, 2)
    }), with ` +
      `${top.config.chains} independent chains per invocation; one chain is bound by FMA latency, not throughput`,
  );

  // The share: the peak kernel and the matmuls again, interleaved, so both sides see the same host.
  const sizes = args.quick ? [256, 512] : [512, 1024];
  const gpu = await getWebGPU();
  const fma = await prepareFma(top.config);
  const mms: PreparedMatmul[] = [];
  const hands: PreparedMatmul[] = [];
  try {
    for (const n of sizes) mms.push(await prepareMatmul({ label: `${n}`, m: n, k: n, n }));
    for (const n of sizes) hands.push(await prepareHandMatmul({ label: `${n} hand`, m: n, k: n, n }));
    const [tf, ...rest] = await timeInterleaved([
      fma.run,
      ...mms.map((m) => m.run),
      ...hands.map((h) => h.run),
    ], {
      sync: () => gpu.sync(),
      reps: args.reps,
      targetMs: args.targetMs,
      warmup: 1,
    });
    const peakNow = fmaFlops(top.config) / (tf.ms * 1e6);
    const bestNow = fmaFlops(top.config) / (tf.minMs * 1e6);
    console.log(
      `re-measured side by side with the matmuls: ${fmt(peakNow, 2)} GFLOP/s (best repetition ${
        fmt(bestNow, 2)
      })\n`,
    );
    const tm = rest.slice(0, sizes.length);
    const th = rest.slice(sizes.length);
    const rows = sizes.map((n, i) => {
      const g = (2 * n ** 3) / (tm[i].ms * 1e6);
      const best = (2 * n ** 3) / (tm[i].minMs * 1e6);
      const hand = (2 * n ** 3) / (th[i].ms * 1e6);
      return [
        `${n}x${n} · ${n}x${n}`,
        fmt(tm[i].ms, 2),
        fmt(g, 2),
        `${fmt((100 * g) / peakNow, 1)}%`,
        fmt(best, 2),
        `${fmt((100 * best) / bestNow, 1)}%`,
        fmt(hand, 2),
        `${fmt((100 * g) / hand, 0)}%`,
      ];
    });
    console.log(table(
      [
        "matmul (tiled template)",
        "ms (median)",
        "GFLOP/s",
        "share of peak",
        "best-rep GFLOP/s",
        "best share",
        "hand-optimised vec4 GFLOP/s",
        "share of hand kernel",
      ],
      rows,
    ));
  } finally {
    fma.dispose();
    for (const m of [...mms, ...hands]) m.dispose();
  }
  const note = load();
  if (note) console.log(`\n${note}`);
}

if (import.meta.main) {
  await main(parseBenchArgs("fma_peak", Deno.args));
}
