/**
 * The base-model cache: experiments that need a pretrained base (a small LM trained on generated text, the toy VLM)
 * pretrain it once, save it under a directory keyed by everything that determines it (model config, training
 * settings, a hash of the data), and load it from there on every later run ({@link cachedEntry}; the LM's entry
 * is {@link cachedPretrained}).
 *
 * A process killed while building an entry loses nothing it checkpointed: the build works in the entry's working
 * directory (`<root>/.partial/<key>/`, see {@link cacheWorkDir}), which a later request of the same entry continues
 * from (the LM's pretraining resumes from its last checkpoint, written every 50 steps, and ends bit for bit as an
 * uninterrupted run) and which is removed once the entry is in place. One process builds an entry at a time (it
 * holds the lock of the working directory); another asking for it meanwhile waits, then loads it.
 *
 * @module
 */
import { z } from "../deps.ts";
import {
  AdamW,
  checkFinite,
  checkOptions,
  cosineSchedule,
  type DeviceName,
  hasCheckpoint,
  type I32,
  type LlamaConfig,
  LlamaLM,
  namedParameters,
  readHf,
  removeTemporaries,
  sampleWindows,
  saveHf,
  temporaryPath,
  tensor,
  Trainer,
} from "../mod.ts";
import { acquireLock, type Lock, LockedError, processAlive } from "./lock.ts";

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

const PRETRAIN_SPEC = z.object({
  model: z.custom<LlamaConfig>((v) => typeof v === "object" && v !== null, { message: "must be an object" }),
  steps: z.int().min(1),
  batchSize: z.int().min(1),
  seqLen: z.int().min(1),
  lr: z.number().gt(0),
  seed: z.int(),
}).strict();
const CACHE_OPTIONS = z.object({
  cacheDir: z.string().min(1),
  device: z.enum(["webgpu", "wasm", "cpu"]),
  progress: z.boolean(),
  checkpointEvery: z.int().min(1),
})
  .partial().strict();

/** Options of {@link cachedPretrained}. */
export interface CacheOptions {
  /** Root of the cache (default `.cache/base`). */
  cacheDir?: string;
  /** Device of the model. */
  device?: DeviceName;
  /** Show a progress bar while pretraining. */
  progress?: boolean;
  /** Steps between the pretraining's checkpoints, from which a killed build continues (default 50). */
  checkpointEvery?: number;
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
 * The working directory of entry `key` under `root`: `<root>/.partial/<key>/`, keyed as the entry is, so that a
 * build of another entry (another configuration) never continues from it.
 *
 * @param root Root of the cache.
 * @param key The entry's key.
 * @returns The directory.
 */
export function cacheWorkDir(root: string, key: string): string {
  return `${root}/.partial/${key}`;
}

/** How often a process waiting for another's build of an entry looks again. */
const WAIT_MS = 500;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** How {@link cachedEntry} finds, loads, builds and saves one entry. */
export interface CacheEntryOptions<T> {
  /** Root of the cache (e.g. `.cache/base`). */
  root: string;
  /** The entry's key (e.g. from {@link cacheKey}): its directory is `root/key`. */
  key: string;
  /** The file whose presence marks a complete entry (e.g. `model.safetensors`). */
  marker: string;
  /** What the entry is, for errors (e.g. "cached base model"). */
  what: string;
  /** Loads the entry from its directory (and checks it). */
  load: (dir: string) => Promise<T>;
  /**
   * Makes the value when the entry is absent (pretraining). `work` is the entry's working directory
   * ({@link cacheWorkDir}), which this process alone uses while it builds: what the build leaves there (a
   * checkpoint) is kept when it stops (an error, a killed process) for the next build of the same entry to continue
   * from, and removed once the entry is in place.
   */
  build: (work: string) => Promise<T>;
  /** Writes the value into a (temporary) directory. */
  save: (value: T, dir: string) => Promise<void>;
}

/** A value from the cache. */
export interface CacheEntry<T> {
  /** The value. */
  value: T;
  /** True when it was loaded, false when built. */
  cached: boolean;
  /** The entry's directory. */
  dir: string;
  /** Seconds spent loading or building. */
  seconds: number;
}

/**
 * Takes the lock of the working directory `work` for this process, waiting while another process holds it (it
 * builds the same entry); null when the entry's `marker` file appears meanwhile (that process finished it).
 */
async function lockWork(work: string, marker: string, what: string): Promise<Lock | null> {
  let told = false;
  while (!(await exists(marker))) {
    try {
      await Deno.mkdir(work, { recursive: true });
      return acquireLock(`${work}/.lock`, `building ${what}`);
    } catch (err) {
      // NotFound: the holder removed the directory as it finished, between our mkdir and our open.
      if (!(err instanceof LockedError || err instanceof Deno.errors.NotFound)) throw err;
      if (err instanceof LockedError && !told) {
        console.error(`${what}: waiting for its build (${err.message})`);
      }
      told ||= err instanceof LockedError;
    }
    await new Promise((resolve) => setTimeout(resolve, WAIT_MS));
  }
  return null;
}

/**
 * A cached value: loaded from `root/key/` when its `marker` file is there, else built and saved (to a temporary
 * directory renamed into place, so an interrupted run never leaves a half-written entry; what interrupted runs left
 * is removed first). The build works in the entry's working directory ({@link cacheWorkDir}) under its lock: a
 * build killed or failed leaves there what it saved (a checkpoint) for the next request of the entry to continue
 * from, another process asking for the entry meanwhile waits and loads it, and the directory is removed once the
 * entry is in place. An entry that cannot be loaded (a damaged or half-copied file, non-finite weights) is one
 * error naming its directory and how to rebuild it.
 *
 * @param options Where the entry is and how to load, build and save it.
 * @returns The value and where it came from.
 */
export async function cachedEntry<T>(options: CacheEntryOptions<T>): Promise<CacheEntry<T>> {
  const dir = `${options.root}/${options.key}`;
  const marker = `${dir}/${options.marker}`;
  const t0 = performance.now();
  const seconds = () => (performance.now() - t0) / 1000;
  const load = async (): Promise<CacheEntry<T>> => {
    let value: T;
    try {
      value = await options.load(dir);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`${options.what} "${dir}" cannot be used: ${reason}. ${rebuildHint(dir)}`, {
        cause: err,
      });
    }
    return { value, cached: true, dir, seconds: seconds() };
  };
  removeTemporaries(options.root, { alive: processAlive });
  if (await exists(marker)) return await load();
  // Entries appear whole (renamed into place), so a directory without its marker is not one being written: it was
  // damaged or put there by hand, and the build would end in a rename that cannot replace it.
  const incomplete = () =>
    new Error(`${options.what} "${dir}" is incomplete: it has no ${options.marker}. ${rebuildHint(dir)}`);
  if (await exists(dir)) throw incomplete();
  const work = cacheWorkDir(options.root, options.key);
  const lock = await lockWork(work, marker, options.what);
  if (lock === null) return await load();
  try {
    // Built by the process whose lock this one took over as it finished.
    if (await exists(marker)) return await load();
    // Ours alone: what killed builders' atomic writes (a checkpoint's) left there.
    removeTemporaries(work, { owners: "all" });
    const value = await options.build(work);
    // Named as the atomic writes name theirs: bounded to 255 bytes, and removed by removeTemporaries when left.
    const tmp = temporaryPath(dir);
    await options.save(value, tmp);
    await Deno.mkdir(options.root, { recursive: true });
    try {
      await Deno.rename(tmp, dir);
    } catch (e) {
      await Deno.remove(tmp, { recursive: true });
      // A concurrent run may have won the race; anything else in the way is named.
      if (!(await exists(marker))) throw await exists(dir) ? incomplete() : e;
    }
    return { value, cached: false, dir, seconds: seconds() };
  } finally {
    if (await exists(marker)) {
      await Deno.remove(work, { recursive: true }).catch(() => {});
      await Deno.remove(`${options.root}/.partial`).catch(() => {}); // when no other entry's is there
    }
    lock.release();
  }
}

/**
 * The base model pretrained on `tokens` as `spec` says: loaded from the cache when present, else trained and
 * saved (to a temporary directory renamed into place, so an interrupted run never leaves a half-written model;
 * what interrupted runs left is removed first). The pretraining writes a checkpoint every `checkpointEvery` steps
 * in the entry's working directory ({@link cacheWorkDir}); a process killed while pretraining loses only the steps
 * after the last one, and the next request of the same model continues from it (`continuedFrom`), to the model an
 * uninterrupted run gives, bit for bit. A cached model that cannot be read or holds non-finite weights is an error
 * naming its directory and how to rebuild it.
 */
export async function cachedPretrained(
  spec: PretrainSpec,
  tokens: Int32Array,
  opts: CacheOptions = {},
): Promise<{ model: LlamaLM; cached: boolean; dir: string; seconds: number; continuedFrom: number }> {
  checkOptions("cachedPretrained: spec", PRETRAIN_SPEC, spec);
  checkOptions("cachedPretrained", CACHE_OPTIONS, opts);
  let continuedFrom = 0;
  const entry = await cachedEntry({
    root: opts.cacheDir ?? ".cache/base",
    key: cacheKey(JSON.stringify(spec), tokens),
    marker: "model.safetensors",
    what: "cached base model",
    load: async (dir) => {
      const { config, weights } = await readHf(dir);
      const m = LlamaLM.fromWeights(config, weights, { device: opts.device, source: dir });
      await checkFinite(namedParameters(m), { what: "its weights" });
      return m;
    },
    build: async (work) => {
      const model = LlamaLM.random(spec.model, { seed: spec.seed, device: opts.device });
      const checkpoint = `${work}/checkpoint.safetensors`;
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
            x: tensor(x, { shape, dtype: "i32", device: opts.device }) as I32,
            y: tensor(y, { shape, dtype: "i32", device: opts.device }) as I32,
          };
        },
        loss: (m, b) => m.loss(b.x, b.y),
        steps: spec.steps,
        schedule: cosineSchedule({ totalSteps: spec.steps, warmupRatio: 0.05 }),
        clipNorm: 1,
        readEvery: 50,
        progress: opts.progress ? "pretraining base" : false,
        seed: spec.seed,
        checkpoint: { path: checkpoint, every: opts.checkpointEvery ?? 50 },
      });
      if (await hasCheckpoint(checkpoint)) {
        try {
          continuedFrom = (await trainer.resume(checkpoint)).step;
        } catch (err) {
          const reason = err instanceof Error ? err.message : String(err);
          throw new Error(
            `cached base model: cannot continue its interrupted pretraining: ${reason}. Remove "${work}" to ` +
              `pretrain it from the start`,
            { cause: err },
          );
        }
        console.error(
          `cached base model: continuing its pretraining from its checkpoint at step ${continuedFrom} of ${spec.steps}`,
        );
      }
      await trainer.run();
      trainer.close();
      return model;
    },
    save: (model, dir) => saveHf(model, dir),
  });
  return { model: entry.value, cached: entry.cached, dir: entry.dir, seconds: entry.seconds, continuedFrom };
}
