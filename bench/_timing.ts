/**
 * The timing discipline shared by the benchmarks in `bench/`, plus their command line and table printing.
 *
 * A measurement warms up first (the first call compiles the pipelines), calibrates how many iterations fill
 * about `targetMs`, then runs `reps` repetitions. A repetition starts the clock, runs the body `iters` times
 * (each run builds its tensors anew and submits them without waiting), waits for the queue once with
 * `sync()`, and stops the clock: time per iteration = elapsed / iters. The reported figure is the median over
 * the repetitions. The one `sync()` per repetition costs about 11 ms on lavapipe (it sleeps after the queue is
 * idle), so `targetMs` must be large against it; {@link measureSyncMs} measures that cost so reports can state it.
 *
 * @module
 */
import { parseFlags } from "./_args.ts";
import { deviceLine, getBackend, getDefaultDevice, getWebGPU } from "../lib/runtime/realize.ts";

/** Options of {@link timeIterations}. */
export interface TimeOptions {
  /** Waits until all submitted work is done (e.g. `(await getWebGPU()).sync()`). */
  readonly sync: () => Promise<void>;
  /** Repetitions; the median over them is reported. Default 5. */
  readonly reps?: number;
  /** Wall time one repetition should take, in ms (iterations are calibrated to it). Default 300. */
  readonly targetMs?: number;
  /** Most iterations in one repetition. Default 2000. */
  readonly maxIters?: number;
  /** Warm-up calls before calibration (the first compiles the pipelines). Default 2. */
  readonly warmup?: number;
}

/** What {@link timeIterations} measured. */
export interface Timing {
  /** Median time per iteration over the repetitions, in ms (queue drained at the end of each repetition). */
  readonly ms: number;
  /** Fastest repetition's time per iteration, in ms. */
  readonly minMs: number;
  /** Slowest repetition's time per iteration, in ms. */
  readonly maxMs: number;
  /** Iterations per repetition. */
  readonly iters: number;
  /** Repetitions. */
  readonly reps: number;
}

/** The median of a non-empty list. */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError("median of an empty list");
  const s = [...values].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Runs `body` `iters` times, then syncs; returns the elapsed ms. */
async function batch(body: () => Promise<void>, iters: number, sync: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) await body();
  await sync();
  return performance.now() - t0;
}

/**
 * Times `body` (one iteration: build the work anew and submit it) with warm-up, calibration and a median over
 * repetitions, synchronising with `opts.sync` at the end of every repetition.
 *
 * @example
 * ```ts
 * import { randn, realize } from "../mod.ts";
 * import { getWebGPU } from "../lib/runtime/realize.ts";
 * import { timeIterations } from "./_timing.ts";
 * const gpu = await getWebGPU();
 * const a = randn([64, 64], { seed: 1 });
 * await realize(a);
 * const t = await timeIterations(async () => {
 *   const c = a.matmul(a);
 *   await realize(c);
 *   c.dispose();
 * }, { sync: () => gpu.sync(), reps: 1, targetMs: 20 });
 * console.log(`${t.ms.toFixed(2)} ms per matmul`);
 * ```
 */
export async function timeIterations(body: () => Promise<void>, opts: TimeOptions): Promise<Timing> {
  return (await timeInterleaved([body], opts))[0];
}

/**
 * Times several bodies side by side: each is warmed up and calibrated on its own, then every repetition runs one
 * batch of each body in turn, so that a slow spell of the host (other processes on a software adapter) hits all
 * of them alike and their ratios stay meaningful. Returns one {@link Timing} per body, in order.
 *
 * @example
 * ```ts
 * import { randn, realize } from "../mod.ts";
 * import { getWebGPU } from "../lib/runtime/realize.ts";
 * import { timeInterleaved } from "./_timing.ts";
 * const gpu = await getWebGPU();
 * const x = randn([1 << 12], { seed: 1 });
 * await realize(x);
 * const run = (f: () => ReturnType<typeof x.exp>) => async () => {
 *   const y = f();
 *   await realize(y);
 *   y.dispose();
 * };
 * const [exp, sq] = await timeInterleaved([run(() => x.exp()), run(() => x.square())], {
 *   sync: () => gpu.sync(),
 *   reps: 1,
 *   targetMs: 20,
 * });
 * console.log(`exp / square time ratio: ${(exp.ms / sq.ms).toFixed(2)}`);
 * ```
 */
export async function timeInterleaved(
  bodies: readonly (() => Promise<void>)[],
  opts: TimeOptions,
): Promise<Timing[]> {
  const reps = opts.reps ?? 5;
  const targetMs = opts.targetMs ?? 300;
  const maxIters = opts.maxIters ?? 2000;
  const warmup = opts.warmup ?? 2;
  if (!(reps >= 1 && Number.isInteger(reps))) {
    throw new RangeError(`timeIterations: reps must be >= 1, got ${reps}`);
  }
  const iters: number[] = [];
  for (const body of bodies) {
    for (let i = 0; i < warmup; i++) await body();
    await opts.sync();
    // Calibrate: grow the batch until it takes at least half the target (the sync cost makes early guesses low).
    let n = 1;
    for (let round = 0; round < 6; round++) {
      const total = await batch(body, n, opts.sync);
      if (total >= targetMs / 2 || n >= maxIters) {
        n = Math.max(1, Math.min(maxIters, Math.round((n * targetMs) / total)));
        break;
      }
      n = Math.min(maxIters, Math.max(n * 2, Math.ceil((n * targetMs) / Math.max(total, 1e-3))));
    }
    iters.push(n);
  }
  const per: number[][] = bodies.map(() => []);
  for (let r = 0; r < reps; r++) {
    for (let b = 0; b < bodies.length; b++) {
      per[b].push((await batch(bodies[b], iters[b], opts.sync)) / iters[b]);
    }
  }
  return per.map((p, b) => ({
    ms: median(p),
    minMs: Math.min(...p),
    maxMs: Math.max(...p),
    iters: iters[b],
    reps,
  }));
}

/** Median wall time of `sync()` on an idle queue, in ms (the fixed cost folded into every repetition). */
export async function measureSyncMs(sync: () => Promise<void>, samples = 5): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    await sync();
    t.push(performance.now() - t0);
  }
  return median(t);
}

/** Command line of a benchmark script. */
export interface BenchArgs {
  /** Smaller sizes (a quick smoke run). */
  readonly quick: boolean;
  /** Repetitions per measurement (median reported). */
  readonly reps: number;
  /** Target wall time of one repetition, in ms. */
  readonly targetMs: number;
}

/**
 * Parses `--quick`, `--reps N` and `--target-ms N`; refuses anything else, naming the script (see `_args.ts`).
 *
 * @example
 * ```ts
 * import { parseBenchArgs } from "./_timing.ts";
 * const args = parseBenchArgs("matmul_bench", ["--quick"]);
 * console.log(args.quick, args.reps);
 * ```
 */
export function parseBenchArgs(script: string, argv: readonly string[]): BenchArgs {
  const v = parseFlags(script, argv, {
    quick: { type: "boolean" },
    reps: { type: "int" },
    "target-ms": { type: "number" },
  });
  return {
    quick: v.quick,
    reps: v.reps ?? (v.quick ? 3 : 5),
    targetMs: v["target-ms"] ?? (v.quick ? 150 : 300),
  };
}

/**
 * One line describing where the benchmark ran: the device (the default one, as `auto` or `TESSERA_DEVICE` picked
 * it, with its adapter), the WebGPU adapter and its launch policy, Deno version, host CPU count and the 1-minute
 * load average (on a software adapter or the wasm device, other processes on the host take the same cores).
 */
export async function adapterLine(): Promise<string> {
  const gpu = await getWebGPU();
  const cpus = navigator.hardwareConcurrency;
  let load = "";
  try {
    load = ` | load avg ${Deno.loadavg()[0].toFixed(2)}`;
  } catch {
    // loadavg needs --allow-sys; the line is complete without it
  }
  const device = await deviceLine();
  return `device: ${device} | webgpu adapter: ${gpu.description}, launch policy ${gpu.launchPolicy.name} | ` +
    `deno ${Deno.version.deno} | ${cpus} host CPUs${load}`;
}

/** Waits until every queued kernel of the default device has run (the `sync` of {@link timeIterations}). */
export async function defaultDeviceSync(): Promise<() => Promise<void>> {
  const be = await getBackend(getDefaultDevice()) as { sync?: () => Promise<void> };
  return () => be.sync?.() ?? Promise.resolve();
}

/** CPU time of the whole host and of this process, from `/proc` (Linux), in clock ticks. */
function cpuTicks(): { busy: number; total: number; self: number } | null {
  try {
    const stat = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = stat;
    const busy = user + nice + system + irq + softirq + (steal ?? 0);
    const own = Deno.readTextFileSync("/proc/self/stat");
    const fields = own.slice(own.lastIndexOf(")") + 2).split(" ").map(Number);
    // fields[0] is field 3 (state) of proc(5); utime and stime are fields 14 and 15, and the finished child
    // processes' cutime and cstime fields 16 and 17 (benchmarks that measure in child processes)
    const self = fields[11] + fields[12] + fields[13] + fields[14];
    if (![busy, idle, iowait, self].every(Number.isFinite)) return null;
    return { busy, total: busy + idle + iowait, self };
  } catch {
    return null; // not Linux, or no read permission: the report simply omits the line
  }
}

/**
 * Starts watching how much CPU other processes take while the benchmark runs (on a software adapter they compete
 * for the same cores, and every figure slows down with them). The returned function gives a sentence for the
 * report, or an empty string where `/proc` cannot be read.
 */
export function watchHostLoad(): () => string {
  const start = cpuTicks();
  return () => {
    const end = cpuTicks();
    if (start === null || end === null || end.total <= start.total) return "";
    const cpus = navigator.hardwareConcurrency;
    const perCpu = (end.total - start.total) / cpus;
    const others = Math.max(0, (end.busy - start.busy) - (end.self - start.self)) / perCpu;
    const own = (end.self - start.self) / perCpu;
    return `during this run the benchmark used ${fmt(own, 2)} and other processes ${fmt(others, 2)} of the ` +
      `host's ${cpus} CPUs (other processes slow every figure down)`;
  };
}

/** Formats a number with `digits` decimals, or in exponent form when it would print as zero. */
export function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return String(x);
  if (x !== 0 && Math.abs(x) < 10 ** -digits) return x.toExponential(1);
  return x.toFixed(digits);
}

/** Renders rows as an aligned Markdown table (numbers right-aligned, text left-aligned). */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const numeric = headers.map((_, c) =>
    rows.length > 0 && rows.every((r) => /^(-?[\d.]+(e[-+]?\d+)?[×%]?)?$/.test(r[c] ?? ""))
  );
  const cell = (s: string, c: number) => (numeric[c] ? s.padStart(widths[c]) : s.padEnd(widths[c]));
  const line = (r: readonly string[]) => `| ${r.map((s, c) => cell(s ?? "", c)).join(" | ")} |`;
  const rule = `| ${
    widths.map((w, c) => (numeric[c] ? "-".repeat(w - 1) + ":" : "-".repeat(w))).join(" | ")
  } |`;
  return [line(headers), rule, ...rows.map(line)].join("\n");
}
