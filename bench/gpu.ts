/**
 * The GPU benchmark (`deno task bench:gpu`), for a machine with a real GPU (see bench/GPU.md for running it on a
 * bare Linux box with only the NVIDIA driver and Python + torch). It prints:
 *
 * 1. the adapter, and fp32 matmul at n = 4096 for each template variant (register-blocked, workgroup-shared) and
 *    the adapter's policy, in GFLOP/s and as a share of the GPU's fp32 peak (from a table of vendor figures by
 *    name, or `--peak-tflops`);
 * 2. the peers table (`bench/peers.ts`), run with `DENO_WEBGPU_BACKEND=vulkan`;
 * 3. a LoRA fine-tune at the SmolLM-135M shape (dim 576, 30 layers, 9/3 heads, SwiGLU 1536, vocab 49152; random
 *    weights: the time depends only on the shapes), r = 8, alpha 16 on q, k, v, o, gate, up, down, AdamW, clip 1,
 *    batch 8 x 256: tokens/s of tessera's Trainer (compiled step) next to the same fine-tune in PyTorch + PEFT in
 *    fp32 on the same GPU (`bench/peft_bench.py`, run when `python3` can import torch, transformers and peft).
 *
 * `--subgroups` asks for the adapter's `subgroups` feature (`TESSERA_SUBGROUP_MATMUL=1`): the matmul table then adds
 * the subgroup tiles, checked against the register-blocked result first (they are verified on lavapipe only with
 * emulated shuffles), and the adapter's policy becomes the subgroup one.
 *
 * `--quick` shrinks every size (n = 512, a 2-layer model, few steps) to check the script itself on any adapter.
 * Figures on a software adapter are printed with a warning: they say nothing about a GPU.
 *
 *   deno run -A bench/gpu.ts [--quick] [--subgroups] [--peak-tflops N] [--skip peers,torch] [--steps N]
 *
 * @module
 */
import { parseFlags, refuse } from "./_args.ts";
import { randn, realize, type Shape, type Tensor, tensor } from "../mod.ts";
import { getWebGPU } from "../lib/runtime/realize.ts";
import { lower } from "../lib/codegen/lower.ts";
import { renderWGSL } from "../lib/codegen/render_wgsl.ts";
import { CPU_TILE, GPU_SHARED_TILE, GPU_SUBGROUP_TILE, type MatmulTile } from "../kernels/matmul.wgsl.ts";
import { AdamW, deriveSeed } from "../lib/nn/mod.ts";
import { Trainer } from "../lib/train/mod.ts";
import { LlamaLM } from "../lib/models/llama.ts";
import { attachLora } from "../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../lib/lora/mod.ts";
import { Rng } from "../lib/data/rng.ts";
import { adapterLine, fmt, median, table, watchHostLoad } from "./_timing.ts";

type I32 = Tensor<Shape, "i32">;

/** Vendor fp32 (non-tensor-core) peaks in TFLOP/s, matched against the adapter description in this order. */
export const FP32_PEAK_TFLOPS: readonly [RegExp, number][] = [
  [/H100.*PCIe/i, 51.2],
  [/H100|H200|GH200/i, 66.9],
  [/A100/i, 19.5],
  [/L40S/i, 91.6],
  [/L40\b/i, 90.5],
  [/\bL4\b/i, 30.3],
  [/A10G/i, 31.2],
  [/\bA10\b/i, 31.2],
  [/RTX 4090/i, 82.6],
  [/RTX 3090/i, 35.6],
  [/\bT4\b/i, 8.1],
  [/V100/i, 15.7],
];

/** The fp32 peak for an adapter description, in TFLOP/s, or null when it is not in the table. */
export function fp32Peak(description: string): number | null {
  return FP32_PEAK_TFLOPS.find(([re]) => re.test(description))?.[1] ?? null;
}

/** The SmolLM-135M shape (and a tiny one for `--quick`). */
function modelConfig(quick: boolean) {
  return quick
    ? { dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 256 }
    : { dim: 576, hiddenDim: 1536, nLayers: 30, nHeads: 9, nKvHeads: 3, vocabSize: 49152, seqLen: 2048 };
}

/** Median ms of one `[n, n] · [n, n]` product with `tile` (undefined: the adapter's policy), over `reps`. */
async function timeMatmul(n: number, tile: MatmulTile | undefined, reps: number): Promise<number> {
  const be = await getWebGPU();
  const a = randn([n, n], { seed: 1, device: "webgpu" });
  const b = randn([n, n], { seed: 2, device: "webgpu" });
  await realize(a, b);
  const l = lower(a.matmul(b).node, () => false);
  const r = tile === undefined
    ? renderWGSL(l.kernel, { policy: be.matmulPolicy })
    : renderWGSL(l.kernel, { tile, policy: be.matmulPolicy });
  const out = be.alloc("f32", n * n);
  const step = {
    name: `matmul_${n}`,
    wgsl: r.source,
    dispatch: r.dispatch,
    host: () => {
      throw new Error("bench:gpu runs on WebGPU only");
    },
    buffers: [out, a.node.storage!, b.node.storage!],
  };
  await be.run([step]);
  await be.sync();
  // Enough launches per timing that the ~11 ms of a queue wait is small against them.
  let iters = 1;
  for (;;) {
    const t0 = performance.now();
    await be.run(Array(iters).fill(step));
    await be.sync();
    if (performance.now() - t0 > 300 || iters >= 256) break;
    iters *= 2;
  }
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await be.run(Array(iters).fill(step));
    await be.sync();
    times.push((performance.now() - t0) / iters);
  }
  out.release();
  a.dispose();
  b.dispose();
  return median(times);
}

/** Max |x − y| / max |y| between the products of the same inputs with tiles `tile` and `base`. */
async function variantError(n: number, tile: MatmulTile, base: MatmulTile): Promise<number> {
  const be = await getWebGPU();
  const a = randn([n, n], { seed: 3, device: "webgpu" });
  const b = randn([n, n], { seed: 4, device: "webgpu" });
  await realize(a, b);
  const l = lower(a.matmul(b).node, () => false);
  const run = async (t: MatmulTile) => {
    const r = renderWGSL(l.kernel, { tile: t });
    const out = be.alloc("f32", n * n);
    await be.run([{
      name: "variant",
      wgsl: r.source,
      dispatch: r.dispatch,
      host: () => {},
      buffers: [out, a.node.storage!, b.node.storage!],
    }]);
    const data = await be.read(out, "f32", n * n);
    out.release();
    return data;
  };
  const x = await run(tile);
  const y = await run(base);
  a.dispose();
  b.dispose();
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    diff = Math.max(diff, Math.abs(x[i] - y[i]));
    scale = Math.max(scale, Math.abs(y[i]));
  }
  return diff / scale;
}

/** tokens/s of a LoRA fine-tune step of the 135M shape with tessera's Trainer. */
async function tesseraLora(quick: boolean, batch: number, seq: number, steps: number): Promise<number> {
  const config = { ...modelConfig(quick), sharedClassifier: true };
  const model = LlamaLM.random(config, { seed: 1 });
  await attachLora(model, {
    targetModules: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
    rank: 8,
    alpha: 16,
    init: "lora",
    seed: 0,
  });
  const trainer = new Trainer({
    model,
    optimizer: new AdamW(model, { lr: 1e-4, weightDecay: 0, trainable: LORA_TRAINABLE }),
    batch: (step) => {
      const rng = new Rng(deriveSeed(5, step));
      const ids = () => Int32Array.from({ length: batch * seq }, () => rng.int(config.vocabSize));
      return {
        x: tensor(ids(), { shape: [batch, seq], dtype: "i32" }),
        y: tensor(ids(), { shape: [batch, seq], dtype: "i32" }),
      };
    },
    loss: (m, b) => m.loss(b.x as I32, b.y as I32),
    steps: 1e9,
    clipNorm: 1,
    readEvery: steps,
    progress: false,
  });
  const be = await getWebGPU();
  await trainer.run({ until: 4 });
  await be.sync();
  const t0 = performance.now();
  await trainer.run({ until: 4 + steps });
  await be.sync();
  const ms = (performance.now() - t0) / steps;
  trainer.close();
  return (batch * seq * 1000) / ms;
}

/** Runs bench/peft_bench.py; its JSON result, or the reason it could not run. */
async function torchLora(
  quick: boolean,
  batch: number,
  seq: number,
  steps: number,
): Promise<{ tokensPerS: number; info: string } | { error: string }> {
  const script = new URL("peft_bench.py", import.meta.url).pathname;
  const c = modelConfig(quick);
  const args = [
    script,
    "--json",
    `--batch=${batch}`,
    `--seq=${seq}`,
    `--steps=${steps}`,
    `--dim=${c.dim}`,
    `--hidden=${c.hiddenDim}`,
    `--layers=${c.nLayers}`,
    `--heads=${c.nHeads}`,
    `--kv-heads=${c.nKvHeads}`,
    `--vocab=${c.vocabSize}`,
  ];
  try {
    const out = await new Deno.Command("python3", { args, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
      return { error: text.startsWith("{") ? JSON.parse(text).error : `python3 failed: ${err}` };
    }
    const r = JSON.parse(text.split("\n").at(-1)!);
    return { tokensPerS: r.tokens_per_s, info: `torch ${r.torch}, peft ${r.peft}, ${r.device}` };
  } catch (e) {
    return { error: `python3 not runnable: ${(e as Error).message}` };
  }
}

if (import.meta.main) {
  const values = parseFlags("gpu", Deno.args, {
    quick: { type: "boolean" },
    "peak-tflops": { type: "number" },
    skip: { type: "list", choices: ["matmul", "peers", "lora", "torch"] },
    steps: { type: "int" },
    batch: { type: "int" },
    seq: { type: "int" },
    subgroups: { type: "boolean" },
  });
  // --quick trains at sequence length 64; the LoRA part alone reads the step, batch and sequence flags, and the
  // matmul part alone the peak.
  if (values.quick && values.seq !== undefined) refuse("gpu", "--seq has no effect with --quick (64)");
  const unread = values.skip?.includes("lora") ? ["steps", "batch", "seq"] as const : [];
  for (const k of [...unread, ...(values.skip?.includes("matmul") ? ["peak-tflops"] as const : [])]) {
    if (values[k] !== undefined) refuse("gpu", `--${k} has no effect with --skip ${values.skip}`);
  }
  // Read when the device is created (below): asks for the subgroups feature.
  if (values.subgroups) Deno.env.set("TESSERA_SUBGROUP_MATMUL", "1");
  const quick = values.quick;
  const skip = new Set(values.skip ?? []);
  const steps = values.steps ?? (quick ? 3 : 20);
  const batch = values.batch ?? 8;
  const seq = values.seq ?? (quick ? 64 : 256);
  const be = await getWebGPU();
  console.log(`# bench:gpu${quick ? " [--quick]" : ""}`);
  console.log(await adapterLine());
  console.log(`matmul policy: ${be.matmulPolicy.name}`);
  if (be.isFallback || /llvmpipe|lavapipe|swiftshader/i.test(be.description)) {
    console.log("warning: a software adapter, not a GPU: the figures below say nothing about a GPU");
  }
  const peak = values["peak-tflops"] ?? fp32Peak(be.description);

  if (!skip.has("matmul")) {
    const n = quick ? 512 : 4096;
    const rows: string[][] = [];
    const variants: [string, MatmulTile | undefined][] = [
      ["adapter's policy", undefined],
      ["register-blocked 8x8 (vec4 reads)", CPU_TILE],
      ["workgroup-shared 64x64, k step 16", GPU_SHARED_TILE],
    ];
    if (be.device.features.has("subgroups" as GPUFeatureName)) {
      const err = await variantError(512, GPU_SUBGROUP_TILE, CPU_TILE);
      console.log(
        `subgroup tiles vs register-blocked at n = 512: max relative difference ${err.toExponential(1)}`,
      );
      variants.push(["subgroup 4x4 (8 lanes share A by shuffles)", GPU_SUBGROUP_TILE]);
    } else if (values.subgroups) {
      console.log("--subgroups: the adapter has no subgroups feature");
    }
    for (const [name, tile] of variants) {
      const ms = await timeMatmul(n, tile, quick ? 3 : 5);
      const tflops = (2 * n ** 3) / (ms * 1e9);
      rows.push([
        name,
        fmt(ms, 2),
        fmt(tflops * 1000, 0),
        peak === null ? "peak unknown (--peak-tflops)" : `${fmt((100 * tflops) / peak, 1)}% of ${peak}`,
      ]);
    }
    console.log(`\n## fp32 matmul ${n}x${n}·${n}x${n}`);
    console.log(table(["variant", "ms", "GFLOP/s", "share of fp32 peak (TFLOP/s)"], rows));
  }

  if (!skip.has("peers")) {
    console.log("\n## peers (bench/peers.ts, DENO_WEBGPU_BACKEND=vulkan)");
    const peers = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("peers.ts", import.meta.url).pathname, ...(quick ? ["--quick"] : [])],
      env: { DENO_WEBGPU_BACKEND: "vulkan" },
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!peers.success) console.log("peers: the run failed (see above)");
  }

  if (!skip.has("lora")) {
    const c = modelConfig(quick);
    console.log(
      `\n## LoRA fine-tune, ${
        quick ? "tiny model" : "SmolLM-135M shape"
      } (dim ${c.dim}, ${c.nLayers} layers, ` +
        `${c.nHeads}/${c.nKvHeads} heads, vocab ${c.vocabSize}), r=8 alpha 16 on 7 projections, AdamW, ` +
        `batch ${batch}x${seq}, fp32, ${steps} timed steps`,
    );
    // The load of other processes during each side, said beside the figures: on a shared host (or with PyTorch
    // on the CPU) threads competing for the cores slow one side far more than the other.
    const oursLoad = watchHostLoad();
    const ours = await tesseraLora(quick, batch, seq, steps);
    const loads = [`tessera: ${oursLoad()}`];
    const theirsLoad = watchHostLoad();
    const theirs = skip.has("torch")
      ? { error: "skipped (--skip torch)" }
      : await torchLora(quick, batch, seq, steps);
    if (!("error" in theirs)) loads.push(`PyTorch (its process counted as the benchmark's): ${theirsLoad()}`);
    const rows = [["tessera (Trainer, compiled step)", fmt(ours, 0), ""]];
    rows.push(
      "error" in theirs
        ? ["PyTorch + PEFT", "not available", theirs.error]
        : ["PyTorch + PEFT", fmt(theirs.tokensPerS, 0), theirs.info],
    );
    console.log(table(["implementation", "tokens/s", "notes"], rows));
    if (!("error" in theirs)) console.log(`tessera / PyTorch: ${fmt(ours / theirs.tokensPerS, 2)}×`);
    for (const l of loads) if (!l.endsWith(": ")) console.log(l);
  }
}
