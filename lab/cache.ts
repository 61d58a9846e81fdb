/**
 * The base-model cache: experiments that need a pretrained base (a small LM trained on generated text, say)
 * pretrain it once, save it in Hugging Face format under a directory keyed by everything that determines it (model
 * config, training settings, a hash of the data), and load it from there on every later run.
 *
 * @module
 */
import {
  AdamW,
  checkFinite,
  cosineSchedule,
  type DeviceName,
  type LlamaConfig,
  LlamaLM,
  namedParameters,
  readHf,
  removeTemporaries,
  sampleWindows,
  saveHf,
  tensor,
  Trainer,
} from "../mod.ts";
import { processAlive } from "./lock.ts";

/** How a base model is pretrained. */
export interface PretrainSpec {
  /** Architecture. */
  model: LlamaConfig;
  /** Optimiser steps. */
  steps: number;
  /** Sequences per batch. */
  batchSize: number;
  /** Tokens per sequence. */
  seqLen: number;
  /** Peak learning rate (AdamW, cosine decay with 5% warm-up). */
  lr: number;
  /** Seed of the initialisation and the batches. */
  seed: number;
}

/** Options of {@link cachedPretrained}. */
export interface CacheOptions {
  /** Root of the cache (default `.cache/base`). */
  cacheDir?: string;
  /** Device of the model. */
  device?: DeviceName;
  /** Show a progress bar while pretraining. */
  progress?: boolean;
}

/** FNV-1a over a string and an integer array, as 16 hex digits (two 32-bit lanes). */
export function cacheKey(text: string, data: Int32Array): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ data.length;
  for (let i = 0; i < text.length; i++) {
    h1 = Math.imul(h1 ^ text.charCodeAt(i), 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ text.charCodeAt(i), 0x5bd1e995) >>> 0;
  }
  for (let i = 0; i < data.length; i++) {
    h1 = Math.imul(h1 ^ data[i], 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ (data[i] + i), 0x5bd1e995) >>> 0;
  }
  return h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0");
}

/** What to do about a cache entry that cannot be used. */
export function rebuildHint(dir: string): string {
  return `Remove the directory "${dir}" (rm -r "${dir}") and run again: it is rebuilt from scratch`;
}

/**
 * Loads a cache entry with `load`, turning any failure (a damaged or half-copied file, non-finite weights) into one
 * error that names the entry and how to rebuild it.
 */
export async function loadCacheEntry<T>(
  dir: string,
  what: string,
  load: () => Promise<T>,
): Promise<T> {
  try {
    return await load();
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`${what} "${dir}" cannot be used: ${reason}. ${rebuildHint(dir)}`, { cause: err });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The base model pretrained on `tokens` as `spec` says: loaded from the cache when present, else trained and
 * saved (to a temporary directory renamed into place, so an interrupted run never leaves a half-written model;
 * what interrupted runs left is removed first). A cached model that cannot be read or holds non-finite weights is
 * an error naming its directory and how to rebuild it.
 */
export async function cachedPretrained(
  spec: PretrainSpec,
  tokens: Int32Array,
  opts: CacheOptions = {},
): Promise<{ model: LlamaLM; cached: boolean; dir: string; seconds: number }> {
  const key = cacheKey(JSON.stringify(spec), tokens);
  const root = opts.cacheDir ?? ".cache/base";
  const dir = `${root}/${key}`;
  const t0 = performance.now();
  removeTemporaries(root, { alive: processAlive });
  if (await exists(`${dir}/model.safetensors`)) {
    const model = await loadCacheEntry(dir, "cached base model", async () => {
      const { config, weights } = await readHf(dir);
      const m = LlamaLM.fromWeights(config, weights, { device: opts.device, source: dir });
      await checkFinite(namedParameters(m), { what: "its weights" });
      return m;
    });
    return { model, cached: true, dir, seconds: (performance.now() - t0) / 1000 };
  }
  const model = LlamaLM.random(spec.model, { seed: spec.seed, device: opts.device });
  const trainer = new Trainer({
    model,
    optimizer: new AdamW(model, { lr: spec.lr, weightDecay: 0.01 }),
    batch: (step) => {
      const { x, y } = sampleWindows(tokens, {
        batchSize: spec.batchSize,
        seqLen: spec.seqLen,
        seed: spec.seed,
        step,
      });
      const shape = [spec.batchSize, spec.seqLen];
      return {
        x: tensor(x, { shape, dtype: "i32", device: opts.device }),
        y: tensor(y, { shape, dtype: "i32", device: opts.device }),
      };
    },
    loss: (m, b) => m.loss(b.x as never, b.y as never),
    steps: spec.steps,
    schedule: cosineSchedule({ totalSteps: spec.steps, warmupRatio: 0.05 }),
    clipNorm: 1,
    readEvery: 50,
    progress: opts.progress ? "pretraining base" : false,
    seed: spec.seed,
  });
  await trainer.run();
  const tmp = `${dir}.tmp-${Deno.pid}-${Math.floor(Math.random() * 1e9)}`;
  await saveHf(model, tmp);
  await Deno.mkdir(dir.slice(0, dir.lastIndexOf("/")), { recursive: true });
  try {
    await Deno.rename(tmp, dir);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true });
    if (!(await exists(`${dir}/model.safetensors`))) throw e; // a concurrent run may have won the race
  }
  return { model, cached: false, dir, seconds: (performance.now() - t0) / 1000 };
}
