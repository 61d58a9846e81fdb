/**
 * Training-step benchmark: time per step, tokens (or examples) per second, kernels per step and the host's share of
 * the Trainer on an MLP and on small Llama-style transformer LMs (RoPE + GQA attention, RMSNorm, SwiGLU), with
 * AdamW, global-norm clipping and one metrics readback per `--read-every` steps, as a real run does.
 *
 *   deno run -A bench/train_step_bench.ts [--steps 20] [--read-every 10] [--device webgpu]   one table
 *   deno run -A bench/train_step_bench.ts --vs /tmp/main-ref [--rounds 3] [--device wasm]   beside a checkout
 *   deno run -A bench/train_step_bench.ts --devices webgpu,wasm [--rounds 3]  side by side on two devices
 *   deno bench -A bench/train_step_bench.ts                                  one step per iteration
 *
 * With `--vs DIR` every case runs in fresh processes, alternating between this checkout and the one in DIR (e.g.
 * `git worktree add /tmp/main-ref main`), `--rounds` times each; the table gives the median ms/step of each side
 * and their ratio. `--devices A,B` does the same with this checkout on two devices (e.g. lavapipe's `webgpu`
 * against the `wasm` CPU device). `--device` (default `webgpu`) picks the device of the other modes (with
 * `--vs`, of both sides). The other checkout needs only the public API this script uses (`mod.ts`, `lib/nn`,
 * `lib/train`, `lib/models/llama.ts`, `lib/data/rng.ts`).
 *
 * Columns: ms/step is wall time per step after the warm-up steps (kernels compiled, the step compiled for replay);
 * kernels/step counts the kernels run per step (submitted through `run` or a prepared replay) and launches/step the
 * dispatches they take (on WebGPU independent kernels of one submission share a launch); host ms/step is the
 * wall time minus the time spent waiting for the device (in readbacks, and in `queue.submit`, which on Deno's
 * WebGPU returns only once the previous submission has finished), i.e. the JavaScript of building (or replaying)
 * the step and encoding it. On a software adapter the device's threads share the host's cores, so host time there
 * includes time lost to them. host CPU ms/step is the CPU time of the main (JavaScript) thread alone, from
 * `/proc` (Linux, 10 ms ticks: take it over 20 steps or more), which such contention does not inflate. warm-up s
 * is the wall time of the warm-up steps (building the model, compiling kernels, tracing the step; with `--vs` and
 * `--devices` every process compiles afresh, without Mesa's shader cache on disk), and pipelines the number of
 * pipelines (host functions on the CPU devices) the case made.
 *
 * @module
 */
import type { Shape, Tensor } from "../mod.ts";
import { adapterLine, fmt, table, watchHostLoad } from "./_timing.ts";
import { parseFlags, refuse } from "./_args.ts";

type F32 = Tensor<Shape, "f32">;
type I32 = Tensor<Shape, "i32">;

/** The library modules a case needs, imported from a checkout's root. */
interface Lib {
  mod: typeof import("../mod.ts");
  nn: typeof import("../lib/nn/mod.ts");
  train: typeof import("../lib/train/mod.ts");
  rng: typeof import("../lib/data/rng.ts");
  llama: typeof import("../lib/models/llama.ts");
}

async function loadLib(root: URL): Promise<Lib> {
  const at = (p: string) => new URL(p, root).href;
  return {
    mod: await import(at("mod.ts")),
    nn: await import(at("lib/nn/mod.ts")),
    train: await import(at("lib/train/mod.ts")),
    rng: await import(at("lib/data/rng.ts")),
    llama: await import(at("lib/models/llama.ts")),
  };
}

/** A trainer as the benchmark drives it. */
interface BenchTrainer {
  run(opts?: { until?: number }): Promise<unknown>;
  readonly step: number;
  readonly compileStats?: { traced: number; replayed: number };
}

interface LmConfig {
  vocab: number;
  dim: number;
  layers: number;
  nHeads: number;
  nKvHeads: number;
  hiddenDim: number;
  batch: number;
  seqLen: number;
}

interface Case {
  name: string;
  /** Tokens (or examples) per step. */
  tokens: number;
  unit: string;
  make: (lib: Lib, readEvery: number) => Promise<BenchTrainer>;
}

/** stories260K's checkpoint, when the shared data sits beside the repository. */
const STORIES = new URL("../../shared/data/models/stories260K/stories260K.bin", import.meta.url);

function haveStories(): boolean {
  try {
    return Deno.statSync(STORIES).isFile;
  } catch {
    return false;
  }
}

/** A Llama-style LM: embedding, pre-norm transformer blocks, final RMSNorm and an output projection. */
function benchLm(lib: Lib, c: LmConfig, seed: number) {
  const { Embedding, Linear, Module, RMSNorm, TransformerBlock, deriveSeed } = lib.nn;
  class BenchLm extends Module {
    tokEmb = new Embedding(c.vocab, c.dim, { seed: deriveSeed(seed, "emb"), std: 0.02 });
    layers = Array.from({ length: c.layers }, (_, i) =>
      new TransformerBlock(c.dim, {
        nHeads: c.nHeads,
        nKvHeads: c.nKvHeads,
        hiddenDim: c.hiddenDim,
        seed: deriveSeed(seed, "layers", i),
      }));
    norm = new RMSNorm(c.dim);
    output = new Linear(c.dim, c.vocab, { seed: deriveSeed(seed, "output"), bias: false });

    forward(ids: I32): Tensor<number[], "f32"> {
      let h = this.tokEmb.forward(ids) as F32;
      for (const layer of this.layers) h = layer.forward(h) as F32;
      return this.output.forward(this.norm.forward(h) as F32);
    }
  }
  return new BenchLm();
}

/**
 * A LoRA fine-tune of stories260K (rank 8, alpha 8 on wq, wk, wv, wo, w1, w2, w3; AdamW on the adapters only):
 * the real checkpoint when present, otherwise a random model of the same configuration (the timing depends only on
 * the shapes). Batches are random token windows.
 */
function storiesLoraCase(batch: number, seqLen: number): Case {
  const real = haveStories();
  return {
    name:
      `LoRA fine-tune of stories260K${real ? "" : " (random weights)"}, r=8 on 7 projections x 5 layers, ` +
      `batch ${batch}x${seqLen}`,
    tokens: batch * seqLen,
    unit: "tokens",
    make: async (lib, readEvery) => {
      const { LlamaLM } = lib.llama;
      const model = real ? await LlamaLM.fromLlama2c(STORIES.pathname) : LlamaLM.random({
        dim: 64,
        hiddenDim: 172,
        nLayers: 5,
        nHeads: 8,
        nKvHeads: 4,
        vocabSize: 512,
        seqLen: 512,
        sharedClassifier: true,
      }, { seed: 1 });
      await lib.mod.attachLora(model, {
        targetModules: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
        rank: 8,
        alpha: 8,
        init: "lora",
        seed: 0,
      });
      return new lib.train.Trainer({
        model,
        optimizer: new lib.nn.AdamW(model, { lr: 1e-3, weightDecay: 0, trainable: lib.mod.LORA_TRAINABLE }),
        batch: (step: number) => {
          const rng = new lib.rng.Rng(lib.nn.deriveSeed(4, step));
          const ids = () => {
            const a = new Int32Array(batch * seqLen);
            for (let i = 0; i < a.length; i++) a[i] = rng.int(512);
            return a;
          };
          return {
            x: lib.mod.tensor(ids(), { shape: [batch, seqLen], dtype: "i32" }),
            y: lib.mod.tensor(ids(), { shape: [batch, seqLen], dtype: "i32" }),
          };
        },
        loss: (m: typeof model, b: Record<string, Tensor>) => m.loss(b.x as I32, b.y as I32),
        steps: 1e9,
        clipNorm: 1,
        readEvery,
        progress: false,
      });
    },
  };
}

function lmCase(name: string, c: LmConfig): Case {
  return {
    name,
    tokens: c.batch * c.seqLen,
    unit: "tokens",
    make: (lib, readEvery) => {
      const model = benchLm(lib, c, 1);
      return Promise.resolve(
        new lib.train.Trainer({
          model,
          optimizer: new lib.nn.AdamW(model, { lr: 1e-3 }),
          batch: (step: number) => {
            const rng = new lib.rng.Rng(lib.nn.deriveSeed(2, step));
            const ids = Int32Array.from({ length: c.batch * (c.seqLen + 1) }, () => rng.int(c.vocab));
            const x = new Int32Array(c.batch * c.seqLen);
            const y = new Int32Array(c.batch * c.seqLen);
            for (let b = 0; b < c.batch; b++) {
              x.set(ids.subarray(b * (c.seqLen + 1), b * (c.seqLen + 1) + c.seqLen), b * c.seqLen);
              y.set(ids.subarray(b * (c.seqLen + 1) + 1, (b + 1) * (c.seqLen + 1)), b * c.seqLen);
            }
            return {
              x: lib.mod.tensor(x, { shape: [c.batch, c.seqLen], dtype: "i32" }),
              y: lib.mod.tensor(y, { shape: [c.batch, c.seqLen], dtype: "i32" }),
            };
          },
          loss: (m: typeof model, b: Record<string, Tensor>) =>
            lib.nn.crossEntropy(m.forward(b.x as I32) as F32, b.y as I32),
          steps: 1e9,
          clipNorm: 1,
          readEvery,
          progress: false,
        }),
      );
    },
  };
}

const cases: Case[] = [
  {
    name: "MLP 784-256-10, batch 128",
    tokens: 128,
    unit: "examples",
    make: (lib, readEvery) => {
      const model = new lib.nn.Mlp([784, 256, 10], { seed: 1 });
      // Four batches drawn once and cycled: drawing 100,000 numbers in JavaScript every step would be most of the
      // host column, which is meant to show the library's own work (uploading a batch stays in it).
      const pool = Array.from({ length: 4 }, (_, i) => {
        const rng = new lib.rng.Rng(lib.nn.deriveSeed(3, i));
        return {
          x: Float32Array.from({ length: 128 * 784 }, () => rng.next()),
          y: Int32Array.from({ length: 128 }, () => rng.int(10)),
        };
      });
      return Promise.resolve(
        new lib.train.Trainer({
          model,
          optimizer: new lib.nn.AdamW(model, { lr: 1e-3 }),
          batch: (step: number) => {
            const b = pool[step % pool.length];
            return {
              x: lib.mod.tensor(b.x, { shape: [128, 784] }),
              y: lib.mod.tensor(b.y, { dtype: "i32" }),
            };
          },
          loss: (m: typeof model, b: Record<string, Tensor>) =>
            lib.nn.crossEntropy(m.forward(b.x as F32) as F32, b.y as I32),
          steps: 1e9,
          clipNorm: 1,
          readEvery,
          progress: false,
        }),
      );
    },
  },
  lmCase("transformer LM 2 layers, dim 32, 4/2 heads, batch 8x32", {
    vocab: 64,
    dim: 32,
    layers: 2,
    nHeads: 4,
    nKvHeads: 2,
    hiddenDim: 64,
    batch: 8,
    seqLen: 32,
  }),
  lmCase("transformer LM stories260K-sized: 5 layers, dim 64, 8/4 heads, batch 4x64", {
    vocab: 512,
    dim: 64,
    layers: 5,
    nHeads: 8,
    nKvHeads: 4,
    hiddenDim: 172,
    batch: 4,
    seqLen: 64,
  }),
  storiesLoraCase(8, 64),
];

/** What one measurement of a case gives. */
interface Measured {
  msPerStep: number;
  /** Kernels run per step. */
  kernelsPerStep: number;
  /** Launches (dispatches) per step: fewer than kernels where independent kernels share a launch. */
  launchesPerStep?: number;
  hostMsPerStep: number;
  /** CPU time of the main (JavaScript) thread per step, in ms, or null where `/proc` cannot be read. */
  hostCpuMsPerStep: number | null;
  traced: number | null;
  replayed: number | null;
  /** Wall time of the warm-up steps (kernels compiled, steps traced), in ms. */
  warmupMs?: number;
  /** Pipelines (or host functions) the case added to the backend's cache, warm-up and timed steps together. */
  pipelines?: number;
}

/**
 * Runs `warmup` steps (compiling the kernels and, where the trainer compiles steps, the step), then `steps` timed
 * steps of case `c` with the library `lib`, counting launches and the time spent waiting for the device: in
 * readbacks, and in `queue.submit`, which on Deno's WebGPU returns only once the previous submission has finished
 * (one submission in flight).
 */
async function measure(
  lib: Lib,
  c: Case,
  steps: number,
  warmup: number,
  readEvery: number,
  device = "webgpu",
): Promise<Measured> {
  // The cases build their tensors on the default device (which may be "auto": set it to the one measured).
  lib.mod.setDefaultDevice(device as Parameters<typeof lib.mod.setDefaultDevice>[0]);
  const be = device === "webgpu" ? await lib.mod.getWebGPU() : await lib.mod.getBackend(
    device as Parameters<typeof lib.mod.getBackend>[0],
  ) as Awaited<ReturnType<typeof lib.mod.getWebGPU>>;
  let counting = false;
  let kernels = 0;
  let launches = 0;
  let waiting = 0;
  // Waits inside a timed wait (a readback's own submission) are not counted twice.
  let inWait = 0;
  const timed = async <T>(f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    inWait++;
    try {
      return await f();
    } finally {
      inWait--;
      if (counting && inWait === 0) waiting += performance.now() - t0;
    }
  };
  const { run, read } = be;
  // Only WebGPU has a queue whose submit waits for the previous submission.
  const queue: { submit(buffers: GPUCommandBuffer[]): void } = "device" in be
    ? be.device.queue
    : { submit: () => {} };
  const submit = queue.submit;
  const prepare = (be as {
    prepare?: (s: readonly unknown[]) => { run(...a: unknown[]): Promise<void>; readonly launches?: number };
  }).prepare;
  be.run = async (s) => {
    await run.call(be, s);
    if (counting) {
      kernels += s.length;
      // WebGPU runs independent kernels of one submission in one launch and says how many it made.
      launches += (be as { lastRunLaunches?: number }).lastRunLaunches ?? s.length;
    }
  };
  be.read = (...args) => timed(() => read.apply(be, args));
  const readMany = (be as { readMany?: (...a: unknown[]) => Promise<unknown> }).readMany;
  if (readMany !== undefined) {
    (be as { readMany?: unknown }).readMany = (...args: unknown[]) => timed(() => readMany.apply(be, args));
  }
  queue.submit = (buffers: GPUCommandBuffer[]) => {
    const t0 = performance.now();
    submit.call(queue, buffers);
    if (counting && inWait === 0) waiting += performance.now() - t0;
  };
  if (prepare !== undefined) {
    (be as { prepare?: unknown }).prepare = (s: readonly unknown[]) => {
      const p = prepare.call(be, s);
      return {
        ...p,
        run: (...args: unknown[]) => {
          if (counting) {
            kernels += s.length;
            launches += p.launches ?? s.length;
          }
          return p.run(...args);
        },
      };
    };
  }
  try {
    const pipelines0 = be.stats().cachedKernels;
    const w0 = performance.now();
    const trainer = await c.make(lib, readEvery);
    await trainer.run({ until: warmup });
    await be.sync();
    const warmupMs = performance.now() - w0;
    const before = trainer.compileStats;
    counting = true;
    const cpu0 = mainThreadCpuMs();
    const t0 = performance.now();
    await trainer.run({ until: warmup + steps });
    await timed(() => be.sync());
    const ms = performance.now() - t0;
    const cpu1 = mainThreadCpuMs();
    counting = false;
    const after = trainer.compileStats;
    return {
      msPerStep: ms / steps,
      kernelsPerStep: kernels / steps,
      launchesPerStep: launches / steps,
      hostMsPerStep: (ms - waiting) / steps,
      hostCpuMsPerStep: cpu0 === null || cpu1 === null ? null : (cpu1 - cpu0) / steps,
      traced: after === undefined || before === undefined ? null : after.traced - before.traced,
      replayed: after === undefined || before === undefined ? null : after.replayed - before.replayed,
      warmupMs,
      pipelines: be.stats().cachedKernels - pipelines0,
    };
  } finally {
    be.run = run;
    be.read = read;
    if (readMany !== undefined) (be as { readMany?: unknown }).readMany = readMany;
    queue.submit = submit;
    if (prepare !== undefined) (be as { prepare?: unknown }).prepare = prepare;
  }
}

/**
 * CPU time (user + system) the main thread has used, in ms, from `/proc/<pid>/task/<pid>/stat` (Linux; clock
 * ticks of 10 ms, so take it over many steps); null where it cannot be read. The device's own threads (llvmpipe's
 * workers, the driver's) are other threads: this is the host's share of a step, whatever they do meanwhile.
 */
function mainThreadCpuMs(): number | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${Deno.pid}/task/${Deno.pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    const ticks = f[11] + f[12]; // utime and stime, fields 14 and 15 of proc(5)
    return Number.isFinite(ticks) ? ticks * 10 : null;
  } catch {
    return null;
  }
}

const HERE = new URL("../", import.meta.url);

/**
 * The median of a figure over measurements, with `digits` decimals: "-" where none has it (the main thread's
 * CPU time off Linux, figures that an older checkout does not report).
 */
function medianCell(
  ms: readonly Measured[],
  figure: (m: Measured) => number | null | undefined,
  digits: number,
) {
  const xs = ms.map(figure).filter((x): x is number => x !== null && x !== undefined);
  return xs.length === 0 ? "-" : fmt(median(xs), digits);
}

/** CPU time of the main thread per step, in ms. */
const cpuCell = (ms: readonly Measured[]) => medianCell(ms, (m) => m.hostCpuMsPerStep, 1);
/** Warm-up time, in s. */
const warmupCell = (ms: readonly Measured[]) =>
  medianCell(ms, (m) => (m.warmupMs === undefined ? undefined : m.warmupMs / 1000), 1);
/** Pipelines compiled. */
const pipelinesCell = (ms: readonly Measured[]) => medianCell(ms, (m) => m.pipelines, 0);

/** Launches per step (a checkout that does not report them launches each kernel). */
function launchesOf(m: Measured): number {
  return m.launchesPerStep ?? m.kernelsPerStep;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Runs one case in a fresh process against the checkout at `root` on `device`; returns its measurement. */
async function child(
  root: URL,
  caseIndex: number,
  steps: number,
  warmup: number,
  readEvery: number,
  device = "webgpu",
) {
  const args = [
    "run",
    "-A",
    new URL("bench/train_step_bench.ts", HERE).pathname,
    "--child",
    "--lib",
    root.pathname,
    "--case",
    String(caseIndex),
    "--steps",
    String(steps),
    "--warmup",
    String(warmup),
    "--read-every",
    String(readEvery),
    "--device",
    device,
  ];
  // Mesa's shader cache on disk would let every round after the first skip compiling: each compiles afresh.
  const env = { MESA_SHADER_CACHE_DISABLE: "true" };
  const out = await new Deno.Command(Deno.execPath(), { args, env, stdout: "piped", stderr: "inherit" })
    .output();
  if (!out.success) throw new Error(`bench child for case ${caseIndex} on ${root.pathname} failed`);
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!;
  return JSON.parse(text) as Measured;
}

/** The usage lines of the module comment. */
const USAGE =
  `deno run -A bench/train_step_bench.ts [--steps 20] [--warmup 5] [--read-every 10] [--device webgpu]
  [--cases 0,1,...] | --vs DIR [--rounds 3] [--device wasm] | --devices A,B [--rounds 3]`;

/**
 * The command line. `--child`, `--lib` and `--case` are how the side-by-side modes start one case in a fresh
 * process; each refuses the flags of a mode it is not in.
 */
function parseCli() {
  const devices = ["auto", "webgpu", "wasm", "cpu"];
  const v = parseFlags("train_step_bench", Deno.args, {
    steps: { type: "int", default: 20 },
    warmup: { type: "int", default: 5 },
    "read-every": { type: "int", default: 10 },
    vs: { type: "string" },
    rounds: { type: "int" },
    cases: { type: "list", choices: cases.map((_, i) => String(i)) },
    child: { type: "boolean" },
    lib: { type: "string" },
    case: { type: "string", choices: cases.map((_, i) => String(i)) },
    device: { type: "string", choices: devices },
    devices: { type: "list", choices: devices },
  }, USAGE);
  const fail = (message: string) => refuse("train_step_bench", message);
  if (v.child && (v.lib === undefined || v.case === undefined)) fail("--child needs --lib and --case");
  if (!v.child && (v.lib !== undefined || v.case !== undefined)) {
    fail(`--${v.lib !== undefined ? "lib" : "case"} is read only with --child (--cases picks the cases)`);
  }
  if (v.rounds !== undefined && v.vs === undefined && v.devices === undefined) {
    fail("--rounds is read only with --vs or --devices");
  }
  if (v.devices !== undefined && v.devices.length !== 2) {
    fail(`--devices takes two devices, got ${v.devices}`);
  }
  if (v.devices !== undefined && v.device !== undefined) fail("--device is not read beside --devices");
  return {
    ...v,
    device: v.device ?? "webgpu",
    rounds: v.rounds ?? 3,
    readEvery: v["read-every"],
    picked: (v.cases ?? cases.map((_, i) => String(i))).map(Number),
  };
}

if (import.meta.main) {
  const values = parseCli();
  const { device, steps, warmup, readEvery, picked } = values;
  if (values.child) {
    const root = new URL(`file://${values.lib!.replace(/\/?$/, "/")}`);
    const lib = await loadLib(root);
    console.log(
      JSON.stringify(await measure(lib, cases[Number(values.case)], steps, warmup, readEvery, device)),
    );
  } else if (values.vs !== undefined || values.devices !== undefined) {
    // Two sides, each a checkout and a device: another checkout on --device (--vs), or two devices here.
    const devices = values.devices ?? [device, device];
    const other = values.vs !== undefined ? new URL(`file://${values.vs.replace(/\/?$/, "/")}`) : HERE;
    const [otherDevice, myDevice] = devices;
    const rounds = values.rounds;
    const lib = await loadLib(HERE);
    await lib.mod.getWebGPU();
    console.log(await adapterLine());
    for (const d of new Set(devices)) console.log(`device ${await lib.mod.deviceLine(d as never)}`);
    console.log(
      `${steps} timed steps after ${warmup} warm-up steps, readback every ${readEvery}; each case ${rounds} ` +
        `rounds of fresh processes alternating ${other.pathname} on ${otherDevice} ("other") and this checkout on ` +
        `${myDevice} ("this"); medians`,
    );
    const load = watchHostLoad();
    const rows: string[][] = [];
    for (const i of picked) {
      const mine: Measured[] = [];
      const theirs: Measured[] = [];
      for (let r = 0; r < rounds; r++) {
        // Alternate which side goes first, so a drift in host load does not favour one side.
        if (r % 2 === 0) {
          theirs.push(await child(other, i, steps, warmup, readEvery, otherDevice));
          mine.push(await child(HERE, i, steps, warmup, readEvery, myDevice));
        } else {
          mine.push(await child(HERE, i, steps, warmup, readEvery, myDevice));
          theirs.push(await child(other, i, steps, warmup, readEvery, otherDevice));
        }
      }
      const [a, b] = [median(theirs.map((m) => m.msPerStep)), median(mine.map((m) => m.msPerStep))];
      rows.push([
        cases[i].name,
        fmt(a, 1),
        fmt(b, 1),
        `${fmt(a / b, 2)}×`,
        fmt(median(theirs.map((m) => m.kernelsPerStep)), 0),
        fmt(median(mine.map((m) => m.kernelsPerStep)), 0),
        fmt(median(theirs.map(launchesOf)), 0),
        fmt(median(mine.map(launchesOf)), 0),
        fmt(median(theirs.map((m) => m.hostMsPerStep)), 1),
        fmt(median(mine.map((m) => m.hostMsPerStep)), 1),
        cpuCell(mine),
        warmupCell(theirs),
        warmupCell(mine),
        pipelinesCell(theirs),
        pipelinesCell(mine),
      ]);
      const each = (ms: Measured[]) => ms.map((m) => fmt(m.msPerStep, 1)).join(", ");
      console.error(`done: ${cases[i].name} (ms/step by round: other ${each(theirs)}; this ${each(mine)})`);
    }
    console.log(table([
      "case",
      "other ms/step",
      "this ms/step",
      "speed-up",
      "other kernels",
      "this kernels",
      "other launches",
      "this launches",
      "other host ms",
      "this host ms",
      "this host CPU ms",
      "other warm-up s",
      "this warm-up s",
      "other pipelines",
      "this pipelines",
    ], rows));
    const l = load();
    if (l) console.log(l);
  } else {
    const lib = await loadLib(HERE);
    await lib.mod.getWebGPU();
    console.log(await adapterLine());
    console.log(`device ${await lib.mod.deviceLine(device as never)}`);
    console.log(
      `${steps} timed steps after ${warmup} warm-up steps, one metrics readback every ${readEvery} steps`,
    );
    const load = watchHostLoad();
    const rows: string[][] = [];
    for (const i of picked) {
      const c = cases[i];
      const r = await measure(lib, c, steps, warmup, readEvery, device);
      rows.push([
        c.name,
        fmt(r.msPerStep, 1),
        `${fmt((c.tokens * 1000) / r.msPerStep, 0)} ${c.unit}/s`,
        fmt(r.kernelsPerStep, 0),
        fmt(launchesOf(r), 0),
        fmt(r.hostMsPerStep, 2),
        `${fmt((100 * r.hostMsPerStep) / r.msPerStep, 0)}%`,
        cpuCell([r]),
        r.replayed === null ? "-" : `${r.replayed}/${steps}`,
        warmupCell([r]),
        pipelinesCell([r]),
      ]);
    }
    console.log(
      table([
        "case",
        "ms/step",
        "throughput",
        "kernels/step",
        "launches/step",
        "host ms/step",
        "host share",
        "host CPU ms/step",
        "replayed",
        "warm-up s",
        "pipelines",
      ], rows),
    );
    const l = load();
    if (l) console.log(l);
  }
} else {
  for (const c of cases) {
    let trainer: BenchTrainer | null = null;
    Deno.bench({
      name: `train step: ${c.name}`,
      n: 10,
      warmup: 3,
      async fn() {
        trainer ??= await c.make(await loadLib(HERE), 1);
        await trainer.run({ until: trainer.step + 1 });
      },
    });
  }
}
