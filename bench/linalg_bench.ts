/**
 * Timings of the GPU linear algebra (lib/linalg): qr, svd (with its default core, and QR-preconditioned sweeps:
 * `fused: false`), svdLowRank (q = 16, niter = 4) and eigh on n×n
 * Gaussian matrices (eigh: their symmetric part), for n = 64, 256, 1024.
 *
 *   deno run -A bench/linalg_bench.ts          # prints a table (one timed call per size after a warm-up)
 *   deno bench -A bench/linalg_bench.ts        # the same cases as Deno.bench entries (n = 64, 256 only)
 *
 * Environment: LINALG_BENCH_SIZES=64,256 picks the sizes; LINALG_BENCH_4096=1 adds n = 4096 (may not finish
 * on a CPU adapter such as lavapipe: the Jacobi SVD moves O(n³) data per sweep). Every run prints the
 * adapter. Times include the submission and one small read-back (~11 ms on lavapipe) that waits for the GPU.
 *
 * @module
 */
import { randn, type Tensor } from "../mod.ts";
import { adapterLine } from "./_timing.ts";
import { parseFlags, refuse } from "./_args.ts";
import { eigh, qr, svd, svdLowRank } from "../lib/linalg/mod.ts";
import { defaultSweeps } from "../lib/linalg/jacobi.ts";

type Mat = Tensor<[number, number], "f32">;

const USAGE = "Usage: [LINALG_BENCH_SIZES=64,256] [LINALG_BENCH_4096=1] deno run -A bench/linalg_bench.ts";

// Takes no flags: the sizes come from the environment (below).
if (import.meta.main) parseFlags("linalg_bench", Deno.args, {}, USAGE);
// A bad variable is refused as a bad flag is (one line, exit code 2), not with a stack trace; sizes are decimal
// digits ("0x40" was read as 64).
const big = Deno.env.get("LINALG_BENCH_4096");
if (big !== undefined && big !== "1") {
  refuse("linalg_bench", `LINALG_BENCH_4096 must be 1 or unset, got ${JSON.stringify(big)}`, USAGE);
}
// `deno bench` (the bench task) defaults to the sizes that finish in seconds on a CPU adapter.
const defaultSizes = import.meta.main ? "64,256,1024" : "64,256";
const sizesText = Deno.env.get("LINALG_BENCH_SIZES") ?? defaultSizes;
const sizes = sizesText.split(",").map((part) => /^[0-9]+$/.test(part) ? Number(part) : NaN)
  .concat(big === "1" ? [4096] : []);
if (sizes.some((n) => !Number.isSafeInteger(n) || n < 2)) {
  refuse(
    "linalg_bench",
    `LINALG_BENCH_SIZES must be sizes >= 2 separated by commas, got ${JSON.stringify(sizesText)}`,
    USAGE,
  );
}

/** The operations under test; each resolves once its result has been read back (the GPU is idle). */
const ops: Record<string, (a: Mat, sym: Mat) => Promise<number>> = {
  qr: async (a) => (await (await qr(a)).r.slice(0, 0).data())[0],
  svd: async (a) => (await (await svd(a)).s.slice([0, 1]).data())[0],
  // The QR-preconditioned sweeps, which n ≤ 64 would otherwise skip for the one-kernel solver.
  "svd fused=false": async (a) => (await (await svd(a, { fused: false })).s.slice([0, 1]).data())[0],
  "svdLowRank q=16 niter=4": async (a) =>
    (await (await svdLowRank(a, 16, { niter: 4, seed: 1 })).s.slice([0, 1]).data())[0],
  eigh: async (_, s) => (await (await eigh(s)).values.slice([0, 1]).data())[0],
};

/** Nominal flop counts (for a GFLOP/s column where one is meaningful). */
function flops(op: string, n: number): number | null {
  if (op === "qr") return (8 / 3) * n ** 3; // R (4n³/3) and Q (4n³/3)
  return null;
}

async function inputs(n: number): Promise<[Mat, Mat]> {
  const a = randn([n, n], { seed: n }) as unknown as Mat;
  const s = a.add(a.transpose()).mul(0.5) as unknown as Mat;
  await a.realize();
  await s.realize();
  return [a, s];
}

const adapter = await adapterLine();

if (import.meta.main) {
  console.log(adapter);
  console.log(`sizes: ${sizes.join(", ")} (Jacobi sweeps per size: ${sizes.map(defaultSweeps).join(", ")})`);
  console.log("| op | n | ms | GFLOP/s |");
  console.log("|---|---:|---:|---:|");
  for (const n of sizes) {
    const [a, s] = await inputs(n);
    for (const [name, op] of Object.entries(ops)) {
      if (n <= 256) await op(a, s); // warm-up: compiles the pipelines for this size
      const t0 = performance.now();
      await op(a, s);
      const ms = performance.now() - t0;
      const f = flops(name, n);
      console.log(`| ${name} | ${n} | ${ms.toFixed(1)} | ${f === null ? "" : (f / ms / 1e6).toFixed(3)} |`);
    }
    a.dispose();
    s.dispose();
  }
} else {
  console.log(adapter);
  for (const n of sizes) {
    const [a, s] = await inputs(n);
    for (const [name, op] of Object.entries(ops)) {
      Deno.bench(
        `${name} n=${n}`,
        { group: name, n: n >= 1024 ? 1 : 3, warmup: n >= 1024 ? 0 : 1 },
        async () => {
          await op(a, s);
        },
      );
    }
  }
}
