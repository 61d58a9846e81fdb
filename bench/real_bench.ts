/**
 * Real-size benchmark: Hugging Face checkpoints with the shapes of SmolLM2-135M and Qwen2.5-0.5B (random weights,
 * written once as bf16 safetensors shards with their config.json under `.cache/real/`), loaded by `loadLlama`
 * (streaming, f16 storage where the adapter has `shader-f16`), then: load time, device memory held, forward
 * tokens/s (through the loss) and LoRA training tokens/s (rank 16 on all seven projections, AdamW), each row with
 * the adapter it ran on.
 *
 *   deno task bench:real [--models smollm2-135m,qwen2.5-0.5b] [--batch 1] [--tokens 128] [--steps 2]
 *     [--weight-dtype auto|f16|f32] [--cache-dir .cache/real] [--device webgpu|wasm|cpu]
 *
 * A model that the device cannot hold (a tensor larger than its largest storage binding) is reported as refused,
 * with the loader's message. Timed figures are medians over `--steps` repetitions after one warm-up (which
 * compiles the pipelines); each repetition ends with a readback of the loss, so it includes the device's work.
 *
 * @module
 */
import { parseFlags } from "./_args.ts";
import { writeTextFileAtomic } from "../lib/io/atomic.ts";
import { encodeBf16, type StEntry, writeSafetensors } from "../lib/io/safetensors.ts";
import { hfConfigFromLlama } from "../lib/models/hf.ts";
import { type LlamaConfig, llamaParameterShapes } from "../lib/models/llama.ts";
import { hfName } from "../lib/models/names.ts";
import { loadLlama } from "../lib/models/load.ts";
import { AdamW, functionalCall, type ParamDict, parameterCount } from "../lib/nn/mod.ts";
import { attachLora } from "../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../lib/lora/mod.ts";
import { valueAndGrad } from "../lib/autodiff/mod.ts";
import { getBackend, setDefaultDevice } from "../lib/runtime/realize.ts";
import { type Shape, type Tensor, tensor } from "../mod.ts";
import { median, table, watchHostLoad } from "./_timing.ts";

/** The shapes of the two public checkpoints (from their config.json files). */
const MODELS: Record<string, LlamaConfig> = {
  "smollm2-135m": {
    family: "llama",
    dim: 576,
    hiddenDim: 1536,
    nLayers: 30,
    nHeads: 9,
    nKvHeads: 3,
    vocabSize: 49152,
    seqLen: 8192,
    sharedClassifier: true,
    normEps: 1e-5,
    ropeTheta: 100000,
  },
  "qwen2.5-0.5b": {
    family: "qwen2",
    dim: 896,
    hiddenDim: 4864,
    nLayers: 24,
    nHeads: 14,
    nKvHeads: 2,
    vocabSize: 151936,
    seqLen: 32768,
    sharedClassifier: true,
    normEps: 1e-6,
    ropeTheta: 1000000,
    qkvBias: true,
  },
};

/** Shards of at most this many bytes, as `save_pretrained` splits large checkpoints. */
const SHARD_BYTES = 256 * 1024 * 1024;

/** Writes a random bf16 checkpoint of `config` to `dir` (normal 0.02 matrices, unit norms, zero biases). */
async function writeRandomCheckpoint(dir: string, config: LlamaConfig, seed: number): Promise<void> {
  const tmp = `${dir}.tmp-${Deno.pid}`;
  await Deno.mkdir(tmp, { recursive: true });
  let state = (seed * 2654435761) >>> 0 || 1;
  const uniform = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return ((state >>> 0) + 0.5) / 4294967296;
  };
  const shards: Map<string, StEntry>[] = [new Map()];
  let bytes = 0;
  for (const { name, shape } of llamaParameterShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    if (name.endsWith(".bias")) values.fill(0);
    else if (shape.length === 1) values.fill(1);
    else {
      for (let i = 0; i < n; i += 2) {
        const r = 0.02 * Math.sqrt(-2 * Math.log(uniform()));
        const a = 2 * Math.PI * uniform();
        values[i] = r * Math.cos(a);
        if (i + 1 < n) values[i + 1] = r * Math.sin(a);
      }
    }
    if (bytes + 2 * n > SHARD_BYTES && shards[shards.length - 1].size > 0) {
      shards.push(new Map());
      bytes = 0;
    }
    shards[shards.length - 1].set(hfName(name)!, { dtype: "BF16", shape, data: encodeBf16(values) });
    bytes += 2 * n;
  }
  const weightMap: Record<string, string> = {};
  for (const [i, shard] of shards.entries()) {
    const file = `model-${String(i + 1).padStart(5, "0")}-of-${
      String(shards.length).padStart(5, "0")
    }.safetensors`;
    await writeSafetensors(`${tmp}/${file}`, shard, { format: "pt" });
    for (const key of shard.keys()) weightMap[key] = file;
  }
  await writeTextFileAtomic(`${tmp}/model.safetensors.index.json`, JSON.stringify({ weight_map: weightMap }));
  const json = { ...hfConfigFromLlama(config), dtype: "bfloat16" };
  await writeTextFileAtomic(`${tmp}/config.json`, JSON.stringify(json, null, 2) + "\n");
  await Deno.rename(tmp, dir);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const mib = (b: number | undefined) => (b === undefined ? "—" : `${(b / 2 ** 20).toFixed(0)} MiB`);

async function main(): Promise<void> {
  const values = parseFlags("real_bench", Deno.args, {
    models: { type: "list", default: Object.keys(MODELS).join(","), choices: Object.keys(MODELS) },
    batch: { type: "int", default: 1 },
    tokens: { type: "int", default: 128 },
    steps: { type: "int", default: 2 },
    rank: { type: "int", default: 16 },
    "weight-dtype": { type: "string", default: "auto", choices: ["auto", "f16", "f32"] },
    "cache-dir": { type: "string", default: ".cache/real" },
    device: { type: "string", default: "webgpu", choices: ["webgpu", "wasm", "cpu"] },
  });
  const { batch, tokens, steps, rank } = values;
  const weightDtype = values["weight-dtype"] as "auto" | "f16" | "f32";
  const device = values.device as "webgpu" | "wasm" | "cpu";
  // The model loads onto `device`; the batches and the adapters are made on the default device, which must match
  // ("auto" picks wasm on a software adapter).
  setDefaultDevice(device);
  const be = await getBackend(device);
  const load = watchHostLoad();
  console.log(`adapter: ${be.description}; largest storage binding ${mib(be.maxBufferBytes)}`);
  const rows: string[][] = [];
  for (const key of values.models) {
    const config = MODELS[key];
    const dir = `${values["cache-dir"]}/${key}`;
    if (!(await exists(`${dir}/config.json`))) {
      console.log(`${key}: writing a random bf16 checkpoint to ${dir} ...`);
      await writeRandomCheckpoint(dir, config, 1);
    }
    const t0 = performance.now();
    console.error(`${key}: loading ${dir} ...`);
    let model;
    try {
      model = await loadLlama(dir, { device, weightDtype });
    } catch (err) {
      console.log(`${key}: refused: ${(err as Error).message}`);
      rows.push([key, "—", "refused", "—", "—", "—", "—", be.description]);
      continue;
    }
    const loadS = (performance.now() - t0) / 1000;
    const params = parameterCount(model);
    const afterLoad = be.stats().deviceBytes;
    const ids = Int32Array.from(
      { length: batch * (tokens + 1) },
      (_, i) => (i * 7919 + 13) % config.vocabSize,
    );
    const x = tensor(ids.filter((_, i) => i % (tokens + 1) !== tokens), {
      shape: [batch, tokens],
      dtype: "i32",
    });
    const y = tensor(ids.filter((_, i) => i % (tokens + 1) !== 0), { shape: [batch, tokens], dtype: "i32" });
    const I = (t: Tensor) => t as Tensor<Shape, "i32">;
    console.error(`${key}: loaded in ${loadS.toFixed(1)} s; forward passes ...`);
    const forwardMs: number[] = [];
    for (let s = 0; s <= steps; s++) {
      const f0 = performance.now();
      await model.loss(I(x), I(y)).item();
      console.error(
        `  forward ${s}: ${(performance.now() - f0).toFixed(0)} ms${s === 0 ? " (warm-up)" : ""}`,
      );
      if (s > 0) forwardMs.push(performance.now() - f0);
    }
    const afterForward = be.stats().deviceBytes;
    await attachLora(model, {
      targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
      rank,
      alpha: 2 * rank,
    });
    const opt = new AdamW(model, { lr: 1e-4, trainable: LORA_TRAINABLE });
    const lossOf = (p: ParamDict) => functionalCall(model, p, () => model.loss(I(x), I(y)));
    const trainMs: number[] = [];
    for (let s = 0; s <= steps; s++) {
      const s0 = performance.now();
      const { value, grads } = valueAndGrad(lossOf)(opt.params);
      await opt.step(grads, { realize: [value] });
      await value.item();
      console.error(
        `  LoRA step ${s}: ${(performance.now() - s0).toFixed(0)} ms${s === 0 ? " (warm-up)" : ""}`,
      );
      if (s > 0) trainMs.push(performance.now() - s0);
    }
    const afterTrain = be.stats().deviceBytes;
    const n = batch * tokens;
    const fwd = median(forwardMs), train = median(trainMs);
    console.log(
      `${key}: ${(params / 1e6).toFixed(1)}M parameters, loaded in ${
        loadS.toFixed(1)
      } s; device memory held: ` +
        `${mib(afterLoad)} after load, ${mib(afterForward)} after forward, ${
          mib(afterTrain)
        } after LoRA steps`,
    );
    rows.push([
      key,
      `${(params / 1e6).toFixed(1)}M`,
      `${loadS.toFixed(1)} s`,
      mib(afterTrain),
      `${(n / (fwd / 1000)).toFixed(1)} (${fwd.toFixed(0)} ms)`,
      `${(n / (train / 1000)).toFixed(1)} (${train.toFixed(0)} ms)`,
      `${batch}×${tokens}, r=${rank}`,
      be.description,
    ]);
  }
  console.log();
  console.log(table(
    [
      "model",
      "params",
      "load",
      "device memory (peak)",
      "forward tok/s",
      "LoRA train tok/s",
      "batch",
      "adapter",
    ],
    rows,
  ));
  console.log(load());
}

if (import.meta.main) await main();
