/**
 * Device memory of gradient accumulation: a LoRA step over k micro-batches of b sequences (`accumulate: k`)
 * against one step over a batch of k·b, compiled (replayed) and not, on a stories260K-shaped model (random weights,
 * rank 8 on the seven projections of 5 layers).
 *
 *   deno run -A bench/accumulate_memory_bench.ts [--k 4] [--b 4] [--seq 128] [--steps 8] [--device webgpu]
 *
 * Each case runs in a fresh process; the figure is the backend's `deviceBytes` after the run: every buffer it holds,
 * live or pooled, and a WebGPU backend never frees a pooled buffer, so it is the most the run held at once (only
 * WebGPU reports it). Also shown: the wall time per step after the first three (two traced, the first replay).
 *
 * @module
 */
import { parseFlags } from "./_args.ts";

const flags = parseFlags("accumulate_memory_bench", Deno.args, {
  k: { type: "int", default: 4 },
  b: { type: "int", default: 4 },
  seq: { type: "int", default: 128 },
  steps: { type: "int", default: 8, min: 4 },
  device: { type: "string", default: "webgpu", choices: ["webgpu", "wasm", "cpu"] },
  child: { type: "string", default: "" },
});

if (flags.child !== "") {
  const [k, b, compile] = flags.child.split(",");
  const lib = await import("../mod.ts");
  const nn = await import("../lib/nn/mod.ts");
  const { Trainer } = await import("../lib/train/mod.ts");
  const { LlamaLM } = await import("../lib/models/llama.ts");
  const { Rng } = await import("../lib/data/rng.ts");
  type I32 = import("../mod.ts").Tensor<import("../mod.ts").Shape, "i32">;
  const device = flags.device as import("../mod.ts").DeviceName;
  lib.setDefaultDevice(device);
  const model = LlamaLM.random({
    dim: 64,
    hiddenDim: 172,
    nLayers: 5,
    nHeads: 8,
    nKvHeads: 4,
    vocabSize: 512,
    seqLen: 512,
    sharedClassifier: true,
  }, { seed: 1 });
  await lib.attachLora(model, {
    targetModules: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
    rank: 8,
    alpha: 8,
    init: "lora",
    seed: 0,
  });
  const [micro, rows, seq] = [Number(k), Number(b), flags.seq];
  const trainer = new Trainer({
    model,
    optimizer: new nn.AdamW(model, { lr: 1e-3, trainable: lib.LORA_TRAINABLE }),
    accumulate: micro,
    batch: (step: number, j: number) => {
      const rng = new Rng(nn.deriveSeed(4, step, j));
      const ids = () => Int32Array.from({ length: rows * seq }, () => rng.int(512));
      return {
        x: lib.tensor(ids(), { shape: [rows, seq], dtype: "i32" }),
        y: lib.tensor(ids(), { shape: [rows, seq], dtype: "i32" }),
      };
    },
    loss: (m, t) => m.loss(t.x as I32, t.y as I32),
    steps: flags.steps,
    clipNorm: 1,
    readEvery: flags.steps,
    compile: compile === "1",
    progress: false,
  });
  // Two steps traced and the first replay (its bindings prepared) are left out of the time.
  await trainer.run({ until: 3 });
  const t0 = performance.now();
  await trainer.run();
  const ms = (performance.now() - t0) / (flags.steps - 3);
  const stats = (await lib.getBackend(device)).stats();
  console.log(JSON.stringify({ deviceBytes: stats.deviceBytes ?? null, ms, ...trainer.compileStats }));
  Deno.exit(0);
}

const rows: string[][] = [];
for (const compile of [1, 0]) {
  for (const [k, b] of [[flags.k, flags.b], [1, flags.k * flags.b]]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, "--child", `${k},${b},${compile}`, ...Deno.args],
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`case k=${k} b=${b} failed`);
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
    const mib = r.deviceBytes === null ? "n/a" : (r.deviceBytes / 2 ** 20).toFixed(1);
    rows.push([
      compile ? "compiled" : "traced",
      `${k} x ${b} x ${flags.seq}`,
      mib,
      r.ms.toFixed(0),
      `${r.traced}/${r.replayed}`,
    ]);
  }
}
const head = ["step", "micro-batches x rows x seq", "device MiB", "ms/step", "traced/replayed"];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i])).join("  "));
