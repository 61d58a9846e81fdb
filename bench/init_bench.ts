/**
 * Timings of every registered LoRA initialisation (`INIT_METHODS`, whatever is registered when it runs, plus a few
 * option variants such as PiSSA's randomized SVD) on the projections of a 64-dim model (`[64, 64]` attention,
 * `[172, 64]` / `[64, 172]` MLP) and of a 1024-dim model (`[1024, 1024]`), at rank 8 (alpha 8).
 *
 *   deno run -A bench/init_bench.ts            # prints a Markdown table: method, layer, ms
 *   deno run -A bench/init_bench.ts --quick    # the 64-dim model only
 *   deno run -A bench/init_bench.ts --full     # no skipping at 1024 (may take many minutes on lavapipe)
 *   deno run -A bench/init_bench.ts --methods pissa,loram --reps 5
 *
 * Data-driven methods get generated calibration data of the right shapes: activations `[4, 64, d_in]` (64-dim
 * model) or `[2, 256, d_in]` (1024-dim model) with a decaying spectrum, gradients `[d_out, d_in]` of rank 8, and a
 * modality gap `[d_out]`. A time is the median over `--reps` calls after one warm-up (which compiles the
 * pipelines) for the 64-dim layers, and one call for the 1024-dim layer; each includes waiting for the queue
 * (about 11 ms on lavapipe). Before the 1024-dim layer every method is probed on a `[256, 256]` layer and
 * skipped, with a note, when its probe time × 100 exceeds `--budget-s` (default 120 s); `--full` runs them anyway.
 * The factor: a decomposition costs n³ (× 64 from 256 to 1024) times more Jacobi sweeps and worse cache use; on
 * lavapipe the SVD went from 2.6 s to 165 s (× 63) and LoRA-GA from 1.6 s to 183 s (× 116). A method whose
 * estimate is under 15 s gets a warm-up call at 1024 first (the first call compiles that shape's pipelines). Under `deno bench` the file registers every method (defaults) on
 * the `[64, 64]` layer.
 *
 * @module
 */
import { randn, realize, tensor } from "../mod.ts";
import { type F32, INIT_METHODS, type InitMethod, type LayerData, type LoraInit } from "../lib/init/mod.ts";
import { adapterLine, defaultDeviceSync, fmt, median, table } from "./_timing.ts";
import { parseFlags, refuse } from "./_args.ts";

const USAGE = "Usage: deno run -A bench/init_bench.ts [--quick] [--full] [--reps N] [--budget-s S] " +
  "[--methods a,b,...]";

/** An option variant timed in addition to a method's defaults (only when the method is registered). */
const VARIANTS: readonly { method: string; options: Record<string, unknown> }[] = [
  { method: "pissa", options: { niter: 4 } },
  { method: "pissa", options: { niter: 16 } },
  { method: "loftq", options: { iterations: 5 } },
  { method: "loram", options: { gain: "exact" } },
];

/** Time at [1024, 1024] ≈ time at [256, 256] × this (see the module documentation). */
const PROBE_FACTOR = 100;

function parse(argv: readonly string[]) {
  const v = parseFlags("init_bench", argv, {
    quick: { type: "boolean" },
    full: { type: "boolean" },
    reps: { type: "int", default: 3 },
    "budget-s": { type: "number" },
    methods: { type: "list", choices: Object.keys(INIT_METHODS) },
  }, USAGE);
  // --quick times no 1024-dim model, so nothing is skipped by the budget or run in full.
  if (v.quick && (v.full || v["budget-s"] !== undefined)) {
    refuse("init_bench", `--${v.full ? "full" : "budget-s"} has no effect with --quick`, USAGE);
  }
  if (v.full && v["budget-s"] !== undefined) {
    refuse("init_bench", "--budget-s has no effect with --full", USAGE);
  }
  return { ...v, budgetS: v["budget-s"] ?? 120, methods: v.methods ?? null };
}

/** One timed case: a method with options. */
interface Case {
  label: string;
  method: InitMethod;
  options: Record<string, unknown>;
}

/** A layer with its generated calibration data. */
interface Layer {
  label: string;
  weight: F32;
  data: LayerData;
}

/** A weight `[dOut, dIn]` and calibration data for it, generated on the device with fixed seeds. */
async function makeLayer(dOut: number, dIn: number, batches: number, tokens: number): Promise<Layer> {
  const seed = dOut * 7919 + dIn;
  const weight = randn([dOut, dIn], { seed }).mul(1 / Math.sqrt(dIn)) as unknown as F32;
  const decay = tensor(Float32Array.from({ length: dIn }, (_, i) => 0.97 ** i));
  const mixing = randn([dIn, dIn], { seed: seed + 1 }).mul(1 / Math.sqrt(dIn));
  const activations = randn([batches, tokens, dIn], { seed: seed + 2 }).mul(decay).matmul(
    mixing,
  ) as unknown as F32;
  const grads = randn([dOut, 8], { seed: seed + 3 }).matmul(randn([8, dIn], { seed: seed + 4 })).mul(
    1e-3,
  ) as unknown as F32;
  const gap = randn([dOut], { seed: seed + 5 }) as unknown as F32;
  await realize(weight, activations, grads, gap);
  return { label: `[${dOut}, ${dIn}]`, weight, data: { activations, grads, gap } };
}

function dataFor(method: InitMethod, data: LayerData): LayerData {
  const out: LayerData = {};
  if (method.needs.includes("activations")) out.activations = data.activations;
  if (method.needs.includes("grads")) out.grads = data.grads;
  if (method.needs.includes("gap")) out.gap = data.gap;
  return out;
}

function disposeInit(r: LoraInit): void {
  for (const t of [r.a, r.b, r.base]) t?.dispose();
}

/** Runs one initialisation and waits for the device; returns the elapsed ms and the result's rank. */
async function timeOnce(
  c: Case,
  layer: Layer,
  sync: () => Promise<void>,
): Promise<{ ms: number; rank: number }> {
  const t0 = performance.now();
  const r = await c.method.init(layer.weight, {
    rank: 8,
    alpha: 8,
    seed: 1,
    ...dataFor(c.method, layer.data),
    ...c.options,
  });
  await sync();
  const ms = performance.now() - t0;
  disposeInit(r);
  return { ms, rank: r.rank };
}

function describe(options: Record<string, unknown>): string {
  const keys = Object.keys(options);
  return keys.length === 0 ? "" : ` {${keys.map((k) => `${k}: ${JSON.stringify(options[k])}`).join(", ")}}`;
}

if (import.meta.main) {
  const args = parse(Deno.args);
  const sync = await defaultDeviceSync();
  console.log(await adapterLine());
  const names = args.methods ?? Object.keys(INIT_METHODS);
  const cases: Case[] = [];
  for (const name of names) {
    const method = INIT_METHODS[name];
    cases.push({ label: name, method, options: {} });
    for (const v of VARIANTS) {
      if (v.method === name) {
        cases.push({ label: `${name}${describe(v.options)}`, method, options: v.options });
      }
    }
  }
  console.log(`methods: ${cases.map((c) => c.label).join(", ")}`);
  const rows: string[][] = [];
  const small = [
    await makeLayer(64, 64, 4, 64),
    await makeLayer(172, 64, 4, 64),
    await makeLayer(64, 172, 4, 64),
  ];
  for (const c of cases) {
    for (const layer of small) {
      try {
        await timeOnce(c, layer, sync); // warm-up: compiles the pipelines for this shape
        const times: number[] = [];
        let rank = 0;
        for (let i = 0; i < args.reps; i++) {
          const t = await timeOnce(c, layer, sync);
          times.push(t.ms);
          rank = t.rank;
        }
        rows.push([
          c.label,
          c.method.kind,
          layer.label,
          fmt(median(times), 1),
          `median of ${args.reps}, rank ${rank}`,
        ]);
      } catch (e) {
        rows.push([c.label, c.method.kind, layer.label, "", `error: ${(e as Error).message.slice(0, 120)}`]);
      }
      console.log(`| ${rows.at(-1)!.join(" | ")} |`);
    }
  }
  if (!args.quick) {
    const probe = await makeLayer(256, 256, 2, 256);
    const big = await makeLayer(1024, 1024, 2, 256);
    for (const c of cases) {
      let note = "one call";
      try {
        if (!args.full) {
          await timeOnce(c, probe, sync); // warm-up at the probe size
          const p = await timeOnce(c, probe, sync);
          const estimate = (p.ms * PROBE_FACTOR) / 1000;
          if (estimate > args.budgetS) {
            const msg =
              `skipped: [256, 256] took ${fmt(p.ms, 0)} ms, ×${PROBE_FACTOR} ≈ ${fmt(estimate, 0)} s > ` +
              `${args.budgetS} s budget (--full runs it)`;
            rows.push([c.label, c.method.kind, big.label, "", msg]);
            console.log(`| ${rows.at(-1)!.join(" | ")} |`);
            continue;
          }
          note = `one call (probe [256, 256]: ${fmt(p.ms, 0)} ms)`;
          if (estimate < 15) {
            await timeOnce(c, big, sync);
            note = `one call after a warm-up (probe [256, 256]: ${fmt(p.ms, 0)} ms)`;
          }
        }
        const t = await timeOnce(c, big, sync);
        rows.push([c.label, c.method.kind, big.label, fmt(t.ms, 1), `${note}, rank ${t.rank}`]);
      } catch (e) {
        rows.push([c.label, c.method.kind, big.label, "", `error: ${(e as Error).message.slice(0, 120)}`]);
      }
      console.log(`| ${rows.at(-1)!.join(" | ")} |`);
    }
  }
  console.log();
  console.log(await adapterLine());
  console.log(table(["method", "kind", "layer", "ms", "note"], rows));
}

if (!import.meta.main) {
  // `deno bench`: every registered method (defaults) on the [64, 64] layer.
  const sync = await defaultDeviceSync();
  const layer = await makeLayer(64, 64, 4, 64);
  for (const method of Object.values(INIT_METHODS)) {
    Deno.bench(`init ${method.name} [64, 64]`, { group: "init", n: 3, warmup: 1 }, async () => {
      await timeOnce({ label: method.name, method, options: {} }, layer, sync);
    });
  }
}
