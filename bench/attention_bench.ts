/**
 * The fused attention kernels with RoPE (`kernels/attention.wgsl.ts`) on WebGPU, in the plain layout (each backward
 * kernel rotates every key, or query, it loops over: once per query-key pair) against the rotated-rows layout (the
 * forward stores the rotated rows once and the backward kernels read them). One iteration is a prepared run of the
 * three kernels of one layer: forward, backward for queries, backward for keys and values. The two layouts are
 * timed interleaved in one process, and their gradients are compared bit for bit before they are timed.
 *
 * Run: `deno run -A bench/attention_bench.ts [--quick] [--reps N] [--target-ms N]` (also `deno bench -A
 * bench/attention_bench.ts`: the stories260K case, the per-pair layout as the group baseline).
 *
 * @module
 */
import {
  attentionBackwardKeyValue,
  attentionBackwardQuery,
  type AttentionDims,
  attentionForward,
} from "../kernels/attention.wgsl.ts";
import type { RawStep } from "../lib/runtime/backend.ts";
import { getBackend, getWebGPU, resolveStorage, setDefaultDevice } from "../lib/runtime/realize.ts";
import { ropeTables } from "../lib/nn/attention.ts";
import { adapterLine, fmt, parseBenchArgs, table, timeInterleaved, watchHostLoad } from "./_timing.ts";

// The kernels compared here are WGSL: they run on the WebGPU device (and the header line says so).
setDefaultDevice("webgpu");

/** One attention shape to time. */
interface AttentionCase {
  readonly label: string;
  readonly dims: Omit<AttentionDims, "rope" | "rotatedRows" | "scale" | "causal">;
}

const CASES: readonly AttentionCase[] = [
  {
    label: "stories260K layer, batch 8x64 (8 heads, 4 kv heads, head 8)",
    dims: { b: 8, t: 64, s: 64, h: 8, hkv: 4, d: 8 },
  },
  {
    label: "SmolLM-135M layer, batch 2x256 (9 heads, 3 kv heads, head 64)",
    dims: { b: 2, t: 256, s: 256, h: 9, hkv: 3, d: 64 },
  },
];

/** Deterministic uniform values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = s / 2 ** 31 - 1;
  }
  return x;
}

/** The two layouts of case `c` prepared on WebGPU, checked to give the same gradients bit for bit. */
async function prepareLayouts(c: AttentionCase): Promise<{ runs: (() => Promise<void>)[]; dispose(): void }> {
  const be = await getBackend("webgpu");
  const base: AttentionDims = { ...c.dims, scale: 1 / Math.sqrt(c.dims.d), causal: true, rope: true };
  const { b, t, s, h, hkv, d } = base;
  const q = be.upload("f32", values(b * t * h * d, 1));
  const k = be.upload("f32", values(b * s * hkv * d, 2));
  const v = be.upload("f32", values(b * s * hkv * d, 3));
  const dout = be.upload("f32", values(b * t * h * d, 4));
  const rope = ropeTables(d, s, { device: "webgpu" });
  const tables = [rope.cos, rope.sin].map((t) => resolveStorage(t.node.storage!, be));
  const layouts = [false, true].map((rotatedRows) => {
    const a = { ...base, rotatedRows };
    const kernels = [attentionForward(a), attentionBackwardQuery(a), attentionBackwardKeyValue(a)];
    const [fwd, bq, bkv] = kernels.map((kn) => be.alloc("f32", kn.size));
    const qk = rotatedRows ? [] : [q, k];
    const buffers = [[fwd, q, k, v, ...tables], [bq, ...qk, v, dout, fwd, ...tables], [
      bkv,
      ...qk,
      v,
      dout,
      fwd,
      bq,
      ...tables,
    ]];
    const steps: RawStep[] = kernels.map((kn, i) => ({
      name: kn.name,
      wgsl: kn.wgsl,
      dispatch: kn.dispatch,
      host: kn.host,
      buffers: buffers[i],
    }));
    return { prepared: be.prepare!(steps), bq, bkv, sizes: kernels.map((kn) => kn.size) };
  });
  // Same gradients from both layouts, bit for bit (the rows are rotated by the same expressions).
  for (const l of layouts) await l.prepared.run();
  const [plain, kept] = await Promise.all(
    layouts.map(async (l) => [
      await be.read(l.bq, "f32", l.sizes[1]),
      await be.read(l.bkv, "f32", l.sizes[2]),
    ]),
  );
  for (let j = 0; j < 2; j++) {
    const x = new Uint32Array((plain[j] as Float32Array).buffer);
    const y = new Uint32Array((kept[j] as Float32Array).buffer);
    const at = x.findIndex((bits, i) => bits !== y[i]);
    if (at >= 0) {
      throw new Error(`attention_bench: ${c.label}: the layouts differ at ${j ? "dK|dV" : "dQ|Δ"}[${at}]`);
    }
  }
  return {
    runs: layouts.map((l) => () => l.prepared.run()),
    dispose: () => layouts.forEach((l) => l.prepared.dispose()),
  };
}

if (import.meta.main) {
  const args = parseBenchArgs("attention_bench", Deno.args);
  const gpu = await getWebGPU();
  const watch = watchHostLoad();
  console.log(await adapterLine());
  const rows: string[][] = [];
  for (const c of args.quick ? CASES.slice(0, 1) : CASES) {
    const layouts = await prepareLayouts(c);
    const [tp, tk] = await timeInterleaved(layouts.runs, {
      sync: () => gpu.sync(),
      reps: args.reps,
      targetMs: args.targetMs,
    });
    rows.push([c.label, fmt(tp.ms), fmt(tk.ms), `${fmt(tp.ms / tk.ms)}×`]);
    layouts.dispose();
  }
  console.log(
    table(
      ["three kernels of one layer (median ms)", "rotated per pair", "rotated rows kept", "speed-up"],
      rows,
    ),
  );
  console.log("Each figure includes one submission of the three kernels.");
  const load = watch();
  if (load) console.log(load);
  Deno.exit(0);
} else {
  let layouts: ReturnType<typeof prepareLayouts> | undefined;
  for (const [i, name] of ["rotated per pair", "rotated rows kept"].entries()) {
    Deno.bench({
      name: `attention, ${CASES[0].label}: ${name}`,
      group: "attention",
      baseline: i === 0,
      n: 10,
      warmup: 2,
      async fn() {
        layouts ??= prepareLayouts(CASES[0]);
        await (await layouts).runs[i]();
        await (await getWebGPU()).sync();
      },
    });
  }
}
