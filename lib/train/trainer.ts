/**
 * A training loop that keeps everything on the device and reads back at most once every `readEvery` steps,
 * while still recording every step.
 *
 * Each step builds one lazy graph (batch → loss → gradients → clipped update, plus the step's metrics), computes
 * it with a single `realize` together with the new parameters and optimiser state, and disposes the previous
 * step's parameter, state and batch buffers. By default the step is compiled: once two consecutive steps built the
 * same graph, later steps replay its kernels with the new batch and optimiser scalars, without building,
 * scheduling or binding anything (`compiled_step.ts`; bit for bit the same results). The step's metrics (loss, global and per-group gradient norms,
 * norms of tracked tensors, extra metrics from the loss function) are one small device vector; every
 * `readEvery` steps the pending vectors are stacked and read back with one `data()` call, then written to the
 * JSONL metrics file and shown on the progress bar.
 *
 * At each readback the loss and the gradient norms are checked: a NaN or an infinity stops the run with a
 * {@link NonFiniteError} naming the step, the parameter groups whose gradients were not finite and a checkpoint
 * of the last good state. To have one without reading parameters back, the trainer keeps device copies of the
 * trainable parameters and optimiser state as of the last two readbacks whose metrics were finite; the
 * checkpoint is written only when the run stops.
 *
 * @module
 */
import { valueAndGrad } from "../autodiff/grad.ts";
import {
  functionalCall,
  loadParameters,
  namedModules,
  namedParameters,
  type ParamDict,
} from "../nn/module.ts";
import { clipByGlobalNorm, sumOfSquares } from "../nn/optim/clip.ts";
import type { Optimizer } from "../nn/optim/optimizer.ts";
import type { Schedule } from "../nn/optim/schedule.ts";
import { stack, tensor } from "../tensor/creation.ts";
import { type F32, realize, Tensor } from "../tensor/tensor.ts";
import { getBackend, realizeNodes, type Recording, resolveStorage } from "../runtime/realize.ts";
import { bufferNode, type Storage } from "../ir/node.ts";
import { type CopySpec, copyStorages } from "../runtime/plan.ts";
import {
  baseStorage,
  leafRoles,
  mayReadStep,
  type MicroTrace,
  replayBlocker,
  ReplayedStep,
  type TracedStep,
} from "./compiled_step.ts";
import { type MetricRecord, MetricsWriter, readJsonl } from "../io/json.ts";
import { writeFileAtomicSync } from "../io/atomic.ts";
import { Progress } from "./progress.ts";
import {
  type Checkpoint,
  type ConfiguredModule,
  missingSteps,
  previousCheckpointPath,
  restoreLatestCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
import { resolve } from "node:path";
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

/** The tensors of one batch, by name. The trainer owns them and disposes them after the step. */
export type Batch = Record<string, Tensor>;

/** A loss with extra one-element metrics to record under their names. */
export interface LossOutput {
  /** The loss (one element). */
  loss: Tensor;
  /** Extra metrics (each one element), e.g. `{ accuracy }`. */
  metrics?: Record<string, Tensor>;
}

/**
 * One recorded step: `step` (1-based), `loss`, `grad_norm` (global, before clipping), `grad_norm/<group>` per
 * optimiser group, `lr` (the default group's rate, or the first group's where every parameter is in a named
 * group) and `lr/<group>` when there are several groups, `norm/<name>` per tracked tensor (after the step's update),
 * and the loss function's extra metrics.
 */
export type StepRecord =
  & { step: number; loss: number; grad_norm: number; lr: number }
  & Record<string, number>;

/** Periodic checkpoints. */
export interface CheckpointSchedule {
  /** The file (replaced atomically each time). */
  path: string;
  /** Save after every `every` steps (and after the last step of a run). */
  every: number;
  /**
   * Save only the trainable parameters (with the optimiser's state): for runs that rebuild the frozen rest
   * identically before resuming (e.g. a base model with adapters attached by a seeded init). Default false.
   */
  trainableOnly?: boolean;
}

/** Options of {@link Trainer}. */
export interface TrainerOptions<M extends object, B extends Batch> {
  /** The model; its parameters are replaced by each step. */
  model: M;
  /** The optimiser, created over `model` (its `trainable` filter decides what is trained). */
  optimizer: Optimizer;
  /**
   * The batch of a step, as fresh tensors (disposed after the step; a lazy one is computed and left lazy). Make it
   * a pure function of the run's seed and `step` (see `sampleWindows`) so a resumed run sees the same batches. It
   * must not read the model: while steps are replayed (`compile`), the model holds the parameters of the last time
   * it was brought up to date, not those of the previous step (a batch chosen by the model's own losses needs
   * `compile: false`). With `accumulate: k` it is called k times per step, as `batch(step, micro)` for micro-batch
   * `micro` = 0 .. k − 1 (all k before the step's first realization), each call giving new tensors; the data a run
   * reads is then micro-batch `(step − 1)·k + micro` of its stream, the same after a resume. Without accumulation
   * `micro` is 0.
   */
  batch?: (step: number, micro: number) => B;
  /**
   * The loss of `model` on `batch` at `step` (1-based); may return extra metrics. With `accumulate`, the loss of one
   * micro-batch, called once for each.
   */
  loss: (model: M, batch: B, step: number) => Tensor | LossOutput;
  /** Number of steps of the run. */
  steps: number;
  /** Learning-rate factor per step (default constant 1). */
  schedule?: Schedule;
  /** Clip gradients to this global L2 norm. */
  clipNorm?: number;
  /**
   * Micro-batches per optimiser step (gradient accumulation; default 1). Each step computes the gradients of the
   * loss on each of its `accumulate` micro-batches (see `batch`), one at a time, sums them on the device and takes
   * their mean: the gradient of the mean of the micro-batches' losses, which for a loss that is a mean over equally
   * sized micro-batches is the gradient of one step on them all together, with the activation memory of one
   * micro-batch. Clipping, the schedule, weight decay, `steps`, checkpoints and records count optimiser steps; a
   * record's `loss` and extra metrics are the means over the step's micro-batches, `grad_norm` the norm of the mean
   * gradient. Every micro-batch weighs the same: a loss that is a mean over a varying number of kept tokens (labels
   * of -100) is not weighted by its count, unlike transformers' Trainer since 4.46, which divides the summed token
   * losses of all micro-batches by their total count of kept tokens (`num_items_in_batch`). For that step, multiply
   * micro-batch j's loss by k·n_j / N (n_j its kept tokens, N the step's), e.g. as a batch entry `batch` computes
   * from the step's micro-batches. A resume with another value is refused as another configuration.
   */
  accumulate?: number;
  /** Read metrics back every this many steps (default 10). */
  readEvery?: number;
  /** Tensors whose Frobenius norm is recorded every step as `norm/<name>` (e.g. LoRA's ‖A‖, ‖B‖, ‖ΔW‖). */
  track?: Record<string, (model: M) => Tensor>;
  /** A metrics JSONL path or an open writer: one line per step, written as the values are read back. */
  metrics?: string | MetricsWriter;
  /** Progress bar on stderr (default: when stderr is a terminal); a string is used as the bar's label. */
  progress?: boolean | string;
  /**
   * Seed of the run, stored in checkpoints and checked when resuming: give the one `batch` draws from, which the
   * trainer cannot see otherwise (without it, a resume with another data seed is not noticed).
   */
  seed?: number;
  /** Save a checkpoint periodically. */
  checkpoint?: CheckpointSchedule;
  /** Called with each batch of records after they are read back. */
  onRecords?: (records: readonly StepRecord[]) => void;
  /**
   * Stop with a {@link NonFiniteError} when a read-back loss or gradient norm is NaN or infinite (default
   * true). While on, the trainer keeps two device copies of the trainable parameters and optimiser state.
   */
  stopOnNonFinite?: boolean;
  /**
   * Where the last good state is written when the run stops on a non-finite value (default:
   * `<checkpoint.path>.last-good`, or a new temporary file without a checkpoint schedule).
   */
  lastGoodPath?: string;
  /**
   * Compile the step (default true): once two consecutive steps build the same graph, later steps replay its
   * kernels with the new batch and step scalars instead of building, scheduling and binding it again (see
   * `compiled_step.ts`). The results are bit for bit those of `compile: false`. `loss` and `track` are then
   * called only while tracing, so they must build the same computation at every step from the model and the
   * batch; a `loss` that may read the `step` argument (declares it, has a default value or a rest parameter, or
   * mentions `arguments`) is traced at every step (still without recompiling).
   */
  compile?: boolean;
}

/** How many steps a trainer traced (built and scheduled) and how many it replayed. */
export interface CompileStats {
  /** Steps whose graph was built. */
  traced: number;
  /** Steps replayed from a compiled step. */
  replayed: number;
  /** Why the last traced step was not made replayable (null when it was, or before two traces). */
  blocker: string | null;
}

const TRAINER_OPTIONS = z.object({
  model: z.custom<object>((v) => typeof v === "object" && v !== null, { message: "must be a model object" }),
  optimizer: z.custom<Optimizer>((v) => typeof v === "object" && v !== null && "update" in v, {
    message: "must be an optimiser (new AdamW(model, ...))",
  }),
  batch: opt.fn().optional(),
  loss: opt.fn(),
  steps: opt.count(),
  schedule: opt.fn().optional(),
  clipNorm: opt.positive().optional(),
  accumulate: opt.count().optional(),
  readEvery: opt.count().optional(),
  track: z.record(z.string(), opt.fn()).optional(),
  metrics: z.union([
    z.string().min(1),
    z.custom<MetricsWriter>((v) => v instanceof MetricsWriter, { message: "must be a MetricsWriter" }),
  ]).optional(),
  progress: z.union([z.boolean(), z.string()]).optional(),
  seed: opt.seed().optional(),
  checkpoint: z.object({ path: z.string().min(1), every: opt.count(), trainableOnly: z.boolean().optional() })
    .strict().optional(),
  onRecords: opt.fn().optional(),
  stopOnNonFinite: z.boolean().optional(),
  lastGoodPath: z.string().min(1).optional(),
  compile: z.boolean().optional(),
}).strict();
const RESUME_OPTIONS = z.object({ allowChanged: z.boolean().optional() }).strict();

/**
 * Thrown by {@link Trainer.run} when a loss or gradient norm read back is NaN or infinite. Before it is thrown
 * the records up to the readback are written, the model and optimiser are reset to the last good state (the
 * latest one whose own loss was finite) and that state is saved as a checkpoint at {@link checkpoint}; resume a
 * new trainer from it (with a lower learning rate, a fixed loss, ...) with {@link Trainer.resume}.
 */
export class NonFiniteError extends Error {
  /** The first step whose loss or gradient norm was not finite. */
  readonly step: number;
  /** Optimiser groups whose gradient norm was not finite at that step (may be empty: only the loss was). */
  readonly groups: readonly string[];
  /** The metrics of that step. */
  readonly record: StepRecord;
  /** The checkpoint of the last good state, or `null` when no state had a finite loss. */
  readonly checkpoint: string | null;
  /** The step of that checkpoint (`null` with it). */
  readonly checkpointStep: number | null;

  /** An error for `record` (the first bad step), its bad `groups` and the saved last good state. */
  constructor(
    record: StepRecord,
    groups: readonly string[],
    saved: { path: string; step: number } | null,
  ) {
    const shown = Object.entries(record)
      .filter(([k]) => k === "loss" || k === "grad_norm" || k.startsWith("grad_norm/"))
      .map(([k, v]) => `${k} = ${v}`)
      .join(", ");
    const where = groups.length > 0
      ? `the gradients of parameter group(s) ${groups.map((g) => `"${g}"`).join(", ")} are not finite`
      : "every group's gradient norm is finite, the loss itself is not";
    const ckpt = saved === null
      ? "No state had a finite loss, so no checkpoint was written; check the initialisation and the loss."
      : `The last good state (after step ${saved.step}, whose loss was finite) is saved in "${saved.path}"; ` +
        "resume from it (Trainer.resume with allowChanged) with a lower learning rate, gradient clipping or a " +
        "fixed loss.";
    super(`Trainer: non-finite metrics at step ${record.step} (${shown}): ${where}. ${ckpt}`);
    this.name = "NonFiniteError";
    this.step = record.step;
    this.groups = groups;
    this.record = record;
    this.checkpoint = saved?.path ?? null;
    this.checkpointStep = saved?.step ?? null;
  }
}

/** A device copy of the trainable parameters with their optimiser state (`[1 + slots, total]` per pack). */
interface Snapshot {
  step: number;
  packed: Record<string, Tensor>;
}

/** Options of {@link Trainer.resume}. */
export interface ResumeOptions {
  /**
   * Continue although the run that wrote the checkpoint was configured differently (a lower learning rate after a
   * non-finite stop, say): the differences are returned in {@link ResumeInfo.changed}. Default false: refused.
   */
  allowChanged?: boolean;
}

/** What {@link Trainer.resume} continued from. */
export interface ResumeInfo {
  /** How this run's configuration differs from the checkpoint's (empty unless `allowChanged`). */
  changed: string[];
  /** The checkpoint file restored (the given path, or the previous one kept beside it). */
  path: string;
  /** The step it holds. */
  step: number;
  /** Files passed over because they could not be used, with the reason. */
  skipped: { path: string; reason: string }[];
}

/**
 * The values of equally long one-dimensional f32 metrics vectors, one after the other, with one wait for the
 * device: realized buffers are read together where the backend can (`readMany`), else they are stacked and read.
 */
async function readVectors(vectors: readonly Tensor[]): Promise<Float32Array> {
  const device = vectors[0].device;
  const be = await getBackend(device);
  if (
    be.readMany !== undefined &&
    vectors.every((v) => v.node.storage !== null && v.device === device && v.dtype === "f32")
  ) {
    const parts = await be.readMany(
      vectors.map((v) => ({
        storage: resolveStorage(v.node.storage!, be),
        dtype: "f32" as const,
        n: v.size,
      })),
    );
    const out = new Float32Array(vectors.reduce((a, v) => a + v.size, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
  const stacked = stack(vectors.map((v) => v as F32));
  try {
    return await stacked.data() as Float32Array;
  } finally {
    stacked.dispose();
  }
}

/** Options of {@link Trainer.run}. */
export interface RunOptions {
  /** Stop after this step (default: the run's `steps`). */
  until?: number;
}

/**
 * Runs training steps and records their metrics.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { crossEntropy, Mlp } from "../nn/mod.ts";
 * import { AdamW, cosineSchedule } from "../nn/optim/mod.ts";
 * import { epochIndices, Trainer } from "./mod.ts";
 *
 * // Two features in [-1, 1]; the class is whether they have the same sign.
 * const xs = Float32Array.from({ length: 256 * 2 }, (_, i) => Math.sin(1.7 * i));
 * const ys = Int32Array.from({ length: 256 }, (_, i) => (xs[2 * i] * xs[2 * i + 1] > 0 ? 1 : 0));
 * const model = new Mlp([2, 32, 2], { seed: 0 });
 * const trainer = new Trainer({
 *   model,
 *   optimizer: new AdamW(model, { lr: 1e-2 }),
 *   batch: (step) => {
 *     const idx = epochIndices(256, { batchSize: 32, seed: 0, step });
 *     const x = new Float32Array(64);
 *     idx.forEach((i, b) => x.set(xs.subarray(2 * i, 2 * i + 2), 2 * b));
 *     return {
 *       x: tensor(x, { shape: [32, 2], dtype: "f32" }),
 *       y: tensor(Int32Array.from(idx, (i) => ys[i]), { dtype: "i32" }),
 *     };
 *   },
 *   loss: (m, b) => crossEntropy(m.forward(b.x), b.y),
 *   steps: 100,
 *   schedule: cosineSchedule({ totalSteps: 100, warmupRatio: 0.1 }),
 *   clipNorm: 1,
 *   readEvery: 20,
 * });
 * const records = await trainer.run();
 * console.log(records[0].loss, records.at(-1)!.loss);
 * ```
 */
export class Trainer<M extends object, B extends Batch = Batch> {
  #o: TrainerOptions<M, B>;
  #step = 0;
  #readEvery: number;
  #history: StepRecord[] = [];
  #pending: { step: number; vector: Tensor; lrs: Record<string, number> }[] = [];
  #names: string[] | null = null;
  #auxNames: string[] | null = null;
  #writer: MetricsWriter | null = null;
  #ownsWriter = false;
  #progress: Progress | null = null;
  #progressStart = 0;
  #resumedFrom: number | null = null;
  #resumePath: string | null = null;
  /**
   * The checkpoint path resumed from when its file was damaged and the previous one was used instead: its next
   * periodic save replaces the damaged file without keeping it as the previous one, which holds the state resumed
   * from until a newer checkpoint is in place.
   */
  #damagedNewest: string | null = null;
  // The last state confirmed good (its loss was read back finite) and the newest state read back after finite
  // metrics (its own loss not yet seen): the two snapshots of the non-finite guard.
  #good: Snapshot | null = null;
  #candidate: Snapshot | null = null;
  #failed: NonFiniteError | null = null;
  #lastTrace: TracedStep | null = null;
  #replay: ReplayedStep | null = null;
  /** Whether the loss may read the step number (see `mayReadStep`): its steps are then traced, never replayed. */
  #lossReadsStep = false;
  #stats: CompileStats = { traced: 0, replayed: 0, blocker: null };
  /**
   * The shapes and dtypes of the batch of a step (the latest one built, or the one a resume checked), saved in
   * checkpoints: a resume builds that step's batch again and refuses other shapes (another batch size, say).
   */
  #batchShapes: { step: number; entries: Record<string, string> } | null = null;
  /** Fingerprints of the schedule's factors between the sampled steps (see `#runConfig`), once computed. */
  #scheduleValues: Record<string, string> | null = null;
  /** Fingerprints of the parameters the optimiser does not train (see `#frozenPrints`), once computed. */
  #frozen: Record<string, string> | null = null;
  /** Seconds spent in {@link run} before the current call (a resumed run: from its checkpoint on). */
  #seconds = 0;
  /** When the current {@link run} call started (null outside one). */
  #runStart: number | null = null;

  /** A trainer; nothing runs until {@link run}. */
  constructor(options: TrainerOptions<M, B>) {
    checkOptions("Trainer", TRAINER_OPTIONS, options);
    if (options.optimizer.target !== options.model) {
      throw new Error(
        "Trainer: the optimiser must be created over the same model object (new AdamW(model, ...))",
      );
    }
    // TRAINER_OPTIONS refused steps, readEvery, accumulate and checkpoint.every that are not positive integers and
    // a clipNorm that is not positive, naming the option and the value.
    this.#readEvery = options.readEvery ?? 10;
    if (options.lastGoodPath !== undefined && options.stopOnNonFinite === false) {
      throw new RangeError(
        `Trainer: lastGoodPath "${options.lastGoodPath}" is written when the run stops on a non-finite value; ` +
          `with stopOnNonFinite false it would never be`,
      );
    }
    // Files the run writes must be distinct: a checkpoint renamed over the metrics file would take every record.
    const ck = options.checkpoint?.path;
    const files: [string, string | undefined][] = [
      ["metrics", typeof options.metrics === "string" ? options.metrics : undefined],
      ["checkpoint.path", ck],
      ["the previous checkpoint", ck === undefined ? undefined : previousCheckpointPath(ck)],
      ["lastGoodPath", options.lastGoodPath ?? (ck === undefined ? undefined : `${ck}.last-good`)],
    ];
    const seen = new Map<string, string>();
    for (const [what, path] of files) {
      if (path === undefined) continue;
      const at = resolve(path);
      const other = seen.get(at);
      if (other !== undefined) throw new Error(`Trainer: ${what} and ${other} are the same file "${path}"`);
      seen.set(at, what);
    }
    this.#o = options;
    this.#lossReadsStep = mayReadStep(options.loss);
  }

  /** Steps completed. */
  get step(): number {
    return this.#step;
  }

  /** Every record read back so far (in this process), in step order. */
  get history(): readonly StepRecord[] {
    return this.#history;
  }

  /** The model. */
  get model(): M {
    return this.#o.model;
  }

  /** The optimiser. */
  get optimizer(): Optimizer {
    return this.#o.optimizer;
  }

  /**
   * Seconds this run has spent training in {@link run}: wall time, including the time before the checkpoint it was
   * resumed from (the steps redone after an interruption count once).
   */
  get trainSeconds(): number {
    return this.#seconds + (this.#runStart === null ? 0 : (performance.now() - this.#runStart) / 1000);
  }

  /** Traced and replayed step counts (see {@link TrainerOptions.compile}). */
  get compileStats(): Readonly<CompileStats> {
    return { ...this.#stats };
  }

  /**
   * Runs steps `step + 1 .. until` (default: to the end of the run). Returns the records of these steps; all of
   * them have been read back, written and checkpointed (when scheduled) when it resolves.
   */
  async run(opts: RunOptions = {}): Promise<StepRecord[]> {
    const until = opts.until ?? this.#o.steps;
    if (!Number.isInteger(until) || until < this.#step || until > this.#o.steps) {
      throw new RangeError(
        `Trainer.run: until must be an integer from the current step ${this.#step} to the run's steps ` +
          `${this.#o.steps}, got ${until}`,
      );
    }
    if (this.#failed !== null) {
      throw new Error(
        `Trainer.run: this trainer stopped on non-finite metrics at step ${this.#failed.step}; create a new ` +
          `trainer and resume it from the last good checkpoint${
            this.#failed.checkpoint === null ? "" : ` "${this.#failed.checkpoint}"`
          }`,
      );
    }
    const first = this.#history.length;
    if (until === this.#step) return [];
    this.#openMetrics();
    if (this.#guarded && this.#candidate === null) this.#candidate = await this.#snapshot();
    const label = typeof this.#o.progress === "string" ? this.#o.progress : "train";
    const enabled = this.#o.progress === undefined || typeof this.#o.progress === "string"
      ? undefined
      : this.#o.progress;
    this.#progress = new Progress(until - this.#step, { label, enabled });
    this.#progressStart = this.#step;
    this.#runStart = performance.now();
    try {
      while (this.#step < until) {
        const s = this.#step + 1;
        await this.#trainStep(s);
        if (s % this.#readEvery === 0 || s === until) await this.#flush();
        const ck = this.#o.checkpoint;
        if (ck !== undefined && (s % ck.every === 0 || s === until)) {
          await this.#save(ck.path, true, ck.trainableOnly ? this.#o.optimizer.paths : undefined);
        }
      }
      await this.#syncReplay();
    } catch (err) {
      // A run stopped by an error (a batch() that threw, a callback's) leaves the model and optimiser holding the
      // last completed step, as an eager run leaves them, also for a caller that closes the trainer next.
      await this.#syncReplay();
      throw err;
    } finally {
      this.#seconds = this.trainSeconds;
      this.#runStart = null;
      this.#progress.done();
      this.#progress = null;
    }
    if (this.#step >= this.#o.steps) {
      // The run is over (the model holds its last step, every record is written): the guard's copies, the replay's
      // buffers and the metrics file the trainer opened are let go now, not when the caller closes the trainer,
      // which a sweep that drops its trainers may never do.
      this.close();
    }
    return this.#history.slice(first);
  }

  /**
   * The batch of micro-batch `j` of step `s` (of `k`), checked: tensors, none disposed, none realized one that an
   * earlier micro-batch of the step gave (`given`, to which its tensors are added).
   */
  #batchOf(s: number, j: number, k: number, given: Set<Tensor>): B {
    const call = k === 1 ? `batch(${s})` : `batch(${s}, ${j})`;
    const batch = this.#o.batch?.(s, j) ?? ({} as B);
    for (const [name, t] of Object.entries(batch as Record<string, unknown>)) {
      if (!(t instanceof Tensor)) {
        throw new TypeError(
          `Trainer: ${call} entry "${name}" is ${t === null ? "null" : typeof t}, not a Tensor (make it ` +
            `with tensor(...))`,
        );
      }
      if (t.node.storage?.released) {
        throw new Error(
          `Trainer: ${call} entry "${name}" (${t}) was disposed: the trainer disposes each step's batch after ` +
            `the step, so batch() must make new tensors at every call, not give one kept from an earlier call`,
        );
      }
      if (given.has(t) && t.isRealized) {
        throw new Error(
          `Trainer: ${call} entry "${name}" (${t}) is a tensor an earlier micro-batch of step ${s} gave: the ` +
            `trainer disposes each micro-batch's tensors after it, so batch() must make new tensors at every call`,
        );
      }
    }
    for (const t of Object.values(batch)) given.add(t);
    return batch;
  }

  async #trainStep(s: number): Promise<void> {
    const { model, optimizer: opt, track = {} } = this.#o;
    const k = this.#o.accumulate ?? 1;
    const given = new Set<Tensor>();
    let batches = Array.from({ length: k }, (_, j) => this.#batchOf(s, j, k, given));
    this.#batchShapes = { step: s, entries: batchShapes(batches[0]) };
    const replay = this.#replay;
    if (replay !== null) {
      if (replay.valid(opt) && batches.every((b) => replay.fits(b))) {
        const scale = this.#o.schedule?.(s) ?? 1;
        let vector: Tensor;
        try {
          vector = await replay.run(batches, opt, scale);
        } catch (e) {
          // A refused step leaves the model as a traced one leaves it: holding the latest state.
          await this.#dropReplay();
          throw e;
        }
        for (const b of batches) disposeBatch(b);
        this.#pending.push({ step: s, vector, lrs: opt.learningRates(scale) });
        this.#step = s;
        this.#stats.replayed++;
        return;
      }
      await this.#dropReplay();
    }
    const compile = this.#o.compile ?? true;
    if (compile) {
      // A lazy batch entry is computed into a plain buffer first, so that a replay can take its place as an input.
      // The step reads (and disposes) that buffer; the entry itself stays lazy, as an eager step leaves it.
      const computed: B[] = [];
      for (const batch of batches) {
        const lazy = Object.entries(batch).filter(([, t]) => !t.isRealized).map(([n, t]) =>
          [n, new Tensor(t.node)] as const
        );
        await realize(...lazy.map(([, t]) => t));
        computed.push(lazy.length > 0 ? { ...batch, ...Object.fromEntries(lazy) } : batch);
      }
      batches = computed;
      // Parameters and state packed before the trace (as every update leaves them), so that this step builds the
      // graph the next one will: two traces, not three, make the step replayable.
      if (opt.currentPacks.size < opt.packs.length) {
        const packed = opt.packedState();
        await realize(...Object.values(packed));
        opt.adopt(packed, opt.stepCount);
      }
    }
    // Roles are told by storage identity, before the step's realization replaces anything (only a compiled step
    // reads them).
    const state = compile ? packStorages(opt) : null;
    const micro: MicroTrace[] = [];
    const { value, grads, aux, sums } = k === 1
      ? { ...this.#gradients(batches[0], s), sums: [] }
      : await this.#accumulate(batches, s, state, micro);
    const auxNames = Object.keys(aux);
    const groupSq = opt.groups.map((g) => sumOfSquares(g.paths.map((p) => grads[p])));
    let total = groupSq[0];
    for (const g of groupSq.slice(1)) total = total.add(g);
    const norm = total.sqrt() as Tensor<[], "f32">;
    const used = this.#o.clipNorm === undefined
      ? grads
      : clipByGlobalNorm(grads, this.#o.clipNorm, { norm }).grads;
    const scale = this.#o.schedule?.(s) ?? 1;
    const pending = opt.update(used, { lrScale: scale });
    const trackNames = Object.keys(track);
    const tracked = functionalCall(
      model,
      pending.params,
      () => trackNames.map((n) => (sumOfSquares([track[n](model)])).sqrt()),
    );
    const scalars: F32[] = [
      value as F32,
      norm as F32,
      ...groupSq.map((g) => g.sqrt() as F32),
      ...tracked,
      ...auxNames.map((n) => aux[n].reshape([]) as F32),
    ];
    if (this.#names === null) {
      this.#names = [
        "loss",
        "grad_norm",
        ...opt.groups.map((g) => `grad_norm/${g.name}`),
        ...trackNames.map((n) => `norm/${n}`),
        ...auxNames,
      ];
    }
    const vector = stack(scalars.map((t) => t.reshape([])));
    let rec: Recording | null = null;
    let roles: TracedStep["roles"] = [];
    let sameBatch: [string, string][] = [];
    if (compile) {
      // The update reads the batch, or (accumulating) the micro-batches' sums.
      const read = k === 1 ? batchStorages(batches[0]) : { storages: new Map(), sameBatch: [] };
      sameBatch = read.sameBatch;
      const roots = [...new Set([...pending.tensors, vector].map((t) => t.node))];
      const storages = await realizeNodes(roots, { record: (r) => (rec = r) });
      const leaves = new Map(roots.map((n, i) => [n, bufferNode(storages[i], n.shape, n.dtype)]));
      for (const t of [...pending.tensors, vector]) t.setNode(leaves.get(t.node)!);
      roles = leafRoles(
        rec!,
        state!,
        read.storages,
        pending.scalars.node.storage!,
        sumRoles(sums, opt.paths),
      );
    } else {
      await realize(...pending.tensors, vector);
    }
    const rootNodes = rec === null ? [] : (rec as Recording).roots;
    opt.commit(pending);
    if (k === 1) disposeBatch(batches[0]);
    for (const t of sums) t.dispose();
    this.#pending.push({ step: s, vector, lrs: opt.learningRates(scale) });
    this.#step = s;
    this.#stats.traced++;
    if (rec !== null) {
      await this.#considerReplay(rec, roles, sameBatch, pending.packed, vector, rootNodes, micro);
    }
  }

  /** The loss of `batch` at step `s`, its extra metrics (checked against earlier steps') and the gradients (lazy). */
  #gradients(batch: B, s: number): { value: Tensor; grads: ParamDict; aux: Record<string, Tensor> } {
    const { model, optimizer: opt } = this.#o;
    const lossOf = (p: ParamDict): [Tensor, Record<string, Tensor>] =>
      functionalCall(model, p, () => {
        const r = this.#o.loss(model, batch, s);
        return r instanceof Tensor ? [r, {}] : [r.loss, r.metrics ?? {}];
      });
    const { value, grads, aux } = valueAndGrad(lossOf, { hasAux: true })(opt.params);
    const auxNames = Object.keys(aux);
    if (this.#auxNames === null) this.#auxNames = auxNames;
    else if (auxNames.join() !== this.#auxNames.join()) {
      throw new Error(
        `Trainer: the loss returned metrics [${auxNames}] at step ${s} but [${this.#auxNames}] before`,
      );
    }
    for (const n of auxNames) {
      const t = aux[n];
      if (t.size !== 1) throw new RangeError(`Trainer: metric "${n}" has ${t.size} elements, expected 1`);
    }
    return { value, grads, aux };
  }

  /**
   * Sums the gradients, the loss and its metrics over the k micro-batches of step `s` into running sums that start
   * from zeros, one realization per micro-batch, so that one micro-batch's activations are alive at a time (a graph
   * of all of them would keep each one's until its last gradient is summed). Returns the means (the sums times 1 / k,
   * lazy) and the sums themselves, the gradients by `paths` order then the loss and metrics, for the caller to
   * dispose after the update. Given the parameter packs' storages (`state`), each realization is traced into `traces`.
   */
  async #accumulate(
    batches: readonly B[],
    s: number,
    state: ReadonlyMap<Storage, string> | null,
    traces: MicroTrace[],
  ): Promise<{ value: Tensor; grads: ParamDict; aux: Record<string, Tensor>; sums: Tensor[] }> {
    const paths = this.#o.optimizer.paths;
    let sums: Tensor[] = [];
    let auxNames: string[] = [];
    for (const batch of batches) {
      const { value, grads, aux } = this.#gradients(batch, s);
      auxNames = Object.keys(aux);
      const terms = [
        ...paths.map((p) => grads[p]),
        stack([value, ...auxNames.map((n) => aux[n].reshape([]))]),
      ];
      const prev = sums.length > 0
        ? sums
        : terms.map((t) =>
          tensor(new Float32Array(t.size), { shape: t.shape, dtype: "f32", device: t.device })
        );
      const next = terms.map((t, i) => prev[i].add(t));
      if (state !== null) {
        const read = batchStorages(batch);
        let rec: Recording | null = null;
        const storages = await realizeNodes(next.map((t) => t.node), { record: (r) => (rec = r) });
        next.forEach((t, i) => t.setNode(bufferNode(storages[i], t.shape, t.dtype)));
        const roles = leafRoles(rec!, state, read.storages, null, sumRoles(prev, paths));
        const accRoot = new Map(next.map((_, i) => [sumName(i, paths), i]));
        traces.push({ rec: rec!, roles, sameBatch: read.sameBatch, accRoot });
      } else await realize(...next);
      for (const t of prev) t.dispose();
      disposeBatch(batch);
      sums = next;
    }
    const mean = (t: Tensor) => t.mul(1 / batches.length) as Tensor;
    const metrics = sums[paths.length];
    return {
      value: mean(metrics.slice(0)),
      grads: Object.fromEntries(paths.map((p, i) => [p, mean(sums[i])])),
      aux: Object.fromEntries(auxNames.map((n, i) => [n, mean(metrics.slice(1 + i))])),
      sums,
    };
  }

  /** Makes the step replayable when this trace and the previous one agree (see `compiled_step.ts`). */
  async #considerReplay(
    rec: Recording,
    roles: TracedStep["roles"],
    sameBatch: TracedStep["sameBatch"],
    packed: Readonly<Record<string, Tensor>>,
    vector: Tensor,
    roots: readonly Storage[],
    micro: readonly MicroTrace[],
  ): Promise<void> {
    const rootIndex = new Map(roots.map((st, i) => [st, i]));
    const packedRoot = new Map<string, number>();
    for (const [path, t] of Object.entries(packed)) {
      const i = rootIndex.get(t.node.storage!);
      if (i !== undefined) packedRoot.set(path, i);
    }
    const trace: TracedStep = {
      rec,
      roles,
      sameBatch,
      micro,
      packedRoot,
      vectorRoot: rootIndex.get(vector.node.storage!) ?? -1,
    };
    const prev = this.#lastTrace;
    this.#lastTrace = trace;
    if (prev === null) return;
    const opt = this.#o.optimizer;
    this.#stats.blocker = this.#lossReadsStep
      ? "the loss function takes the step number"
      : trace.vectorRoot < 0 || packedRoot.size !== opt.packs.length
      ? "the step's outputs are not one update per parameter pack and a metrics vector"
      : replayBlocker(prev, trace, opt.packs.map((p) => p.key));
    if (this.#stats.blocker !== null) return;
    const be = await getBackend(vector.device);
    this.#replay = await ReplayedStep.create(be, trace, opt);
    this.#lastTrace = null;
  }

  /** Brings the model and optimiser up to date with the replayed steps. */
  async #syncReplay(): Promise<void> {
    await this.#replay?.sync(this.#o.optimizer);
  }

  /** Stops replaying (after bringing the model up to date); the next step traces again. */
  async #dropReplay(): Promise<void> {
    const r = this.#replay;
    if (r === null) return;
    this.#replay = null;
    if (r.ownsModel(this.#o.optimizer)) await r.sync(this.#o.optimizer);
    r.dispose();
  }

  get #guarded(): boolean {
    return this.#o.stopOnNonFinite ?? true;
  }

  /** Device copies of the current trainable parameters and optimiser state (computed, not read back). */
  async #snapshot(): Promise<Snapshot> {
    const opt = this.#o.optimizer;
    // While steps are replayed, the latest state lives in the replay: copy it from there (no hand-over).
    if (this.#replay !== null && this.#replay.valid(opt)) {
      return { step: this.#step, packed: await this.#replay.snapshot() };
    }
    const packed: Record<string, Tensor> = {};
    const copies: CopySpec[] = [];
    const be = await getBackend(opt.params[opt.paths[0]].device);
    for (const [key, t] of Object.entries(opt.packedState())) {
      // A current pack buffer is copied as it is; a gathering expression is computed into a fresh buffer.
      if (t.isRealized) {
        const dst = be.alloc("f32", t.size);
        copies.push({ src: resolveStorage(t.node.storage!, be), dst, dtype: "f32", n: t.size });
        packed[key] = new Tensor(bufferNode(dst, t.shape, "f32"));
      } else packed[key] = t;
    }
    await copyStorages(be, copies);
    await realize(...Object.values(packed));
    return { step: this.#step, packed };
  }

  #disposeSnapshot(snap: Snapshot | null): void {
    if (snap !== null) { for (const t of Object.values(snap.packed)) t.dispose(); }
  }

  #dropSnapshots(): void {
    this.#disposeSnapshot(this.#good);
    this.#disposeSnapshot(this.#candidate);
    this.#good = null;
    this.#candidate = null;
  }

  /**
   * Puts a snapshot back into the model and optimiser, saves it as a checkpoint and throws the error for the
   * first non-finite record.
   */
  async #stopNonFinite(bad: StepRecord): Promise<never> {
    const opt = this.#o.optimizer;
    const groups = opt.groups.map((g) => g.name).filter((g) => !Number.isFinite(bad[`grad_norm/${g}`]));
    // The candidate's own loss is that of the step after it: finite unless that step is the bad one.
    const cand = this.#candidate;
    const snap = cand !== null && bad.step > cand.step + 1 ? cand : this.#good;
    let saved: { path: string; step: number } | null = null;
    if (snap !== null) {
      const params: ParamDict = {};
      const state: ParamDict = {};
      for (const [key, packed] of Object.entries(snap.packed)) {
        const views = opt.unpack(key, packed);
        Object.assign(params, views.params);
        Object.assign(state, views.state);
      }
      loadParameters(this.#o.model, params);
      opt.loadState(state, snap.step);
      this.#step = snap.step;
      const path = this.#o.lastGoodPath ??
        (this.#o.checkpoint !== undefined
          ? `${this.#o.checkpoint.path}.last-good`
          : Deno.makeTempFileSync({ prefix: "tessera-", suffix: ".last-good.safetensors" }));
      await saveCheckpoint(path, this.#o.model, {
        optimizer: opt,
        step: snap.step,
        seed: this.#o.seed,
        metadata: await this.#metadata(false),
      });
      saved = { path, step: snap.step };
    }
    for (const s of [this.#good, this.#candidate]) if (s !== snap) this.#disposeSnapshot(s);
    // The trainer runs no further step: what only a run needs is let go now, as at the end of a run.
    this.#releaseReplay();
    this.#closeMetrics();
    this.#good = null;
    this.#candidate = null;
    this.#failed = new NonFiniteError(bad, groups, saved);
    throw this.#failed;
  }

  /** Reads back the pending metrics (one readback), records and writes them. */
  async #flush(): Promise<void> {
    // The model is brought up to date only where code outside the step may look at it (a callback); the metrics
    // and the guard's snapshot come from the replay itself.
    if (this.#o.onRecords !== undefined) await this.#syncReplay();
    if (this.#pending.length === 0) return;
    const pending = this.#pending;
    this.#pending = [];
    const values = await readVectors(pending.map((p) => p.vector));
    for (const p of pending) p.vector.dispose();
    const names = this.#names!;
    const groups = this.#o.optimizer.groups.map((g) => g.name);
    const records: StepRecord[] = pending.map((p, i) => {
      const r: Record<string, number> = { step: p.step };
      names.forEach((n, j) => (r[n] = values[i * names.length + j]));
      // The rate the optimiser was given: its default group's (LoRA+'s A), as PEFT and transformers log it.
      r.lr = p.lrs.default ?? p.lrs[groups[0]];
      if (groups.length > 1) { for (const g of groups) r[`lr/${g}`] = p.lrs[g]; }
      return r as StepRecord;
    });
    const checked = names.filter((n) => n === "loss" || n === "grad_norm" || n.startsWith("grad_norm/"));
    const bad = this.#guarded ? records.find((r) => checked.some((n) => !Number.isFinite(r[n]))) : undefined;
    if (this.#guarded && bad === undefined) {
      // Every step read back was finite: the candidate's loss (at the first of these steps) is confirmed.
      this.#disposeSnapshot(this.#good);
      this.#good = this.#candidate;
      this.#candidate = this.#step < this.#o.steps ? await this.#snapshot() : null;
    }
    for (const r of records) {
      this.#history.push(r);
      this.#writer?.write(r as MetricRecord);
    }
    const last = records[records.length - 1];
    this.#progress?.update(last.step - this.#progressStart, { loss: last.loss });
    this.#o.onRecords?.(records);
    if (bad !== undefined) await this.#stopNonFinite(bad);
  }

  #openMetrics(): void {
    const m = this.#o.metrics;
    if (m === undefined || this.#writer !== null) return;
    if (m instanceof MetricsWriter) {
      this.#writer = m;
      return;
    }
    if (this.#resumedFrom !== null) {
      // Keep the records up to the checkpoint; later ones (from a run that went on after it) are dropped.
      let kept: MetricRecord[] = [];
      try {
        kept = readJsonl(m).filter((r) => typeof r.step === "number" && r.step <= this.#resumedFrom!);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) {
          const ckpt = this.#resumePath!;
          throw new Error(
            `Trainer: cannot continue the records of metrics file "${m}": ${
              (err as Error).message
            }. Remove it ` +
              `and the checkpoints "${ckpt}" and "${previousCheckpointPath(ckpt)}" to run from the start`,
            { cause: err },
          );
        }
      }
      writeFileAtomicSync(m, kept.map((r) => `${JSON.stringify(r)}\n`).join(""));
      this.#writer = MetricsWriter.open(m, { resume: true });
    } else {
      this.#writer = MetricsWriter.open(m);
    }
    this.#ownsWriter = true;
  }

  /** Frees the replay's buffers and bindings (after {@link #syncReplay}); the next step traces again. */
  #releaseReplay(): void {
    this.#replay?.dispose();
    this.#replay = null;
    this.#lastTrace = null;
  }

  /** Closes the metrics file if the trainer opened it (a writer it was given stays open). */
  #closeMetrics(): void {
    if (this.#ownsWriter) this.#writer?.close();
    this.#writer = null;
    this.#ownsWriter = false;
  }

  /** Closes the metrics file if the trainer opened it, and frees the device copies kept for the guard. */
  close(): void {
    this.#dropSnapshots();
    this.#releaseReplay();
    this.#closeMetrics();
  }

  /** Closes the metrics file (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Reads back pending metrics, then writes a checkpoint of the model, the optimiser and the step (unless the
   * metrics are not finite: then the run's {@link NonFiniteError} is thrown and nothing is written at `path`).
   */
  async save(path: string): Promise<void> {
    await this.#save(path, false);
  }

  async #save(path: string, keepPrevious: boolean, paths?: readonly string[]): Promise<void> {
    await this.#flush();
    await this.#syncReplay();
    // Kept as the previous checkpoint, a damaged file would take the place of the only good one before the new
    // checkpoint is written (a run stopped during the write would have none left).
    const damaged = keepPrevious && this.#damagedNewest !== null && resolve(path) === this.#damagedNewest;
    await saveCheckpoint(path, this.#o.model, {
      optimizer: this.#o.optimizer,
      step: this.#step,
      seed: this.#o.seed,
      metadata: await this.#metadata(paths !== undefined),
      keepPrevious: keepPrevious && !damaged,
      paths,
    });
    if (damaged) this.#damagedNewest = null;
  }

  /**
   * Continues from a checkpoint: loads the parameters and optimiser state and sets the step. The periodic
   * checkpoints keep the one before the newest at `<path>.previous`; when `path` is missing or damaged that one is
   * used (see `restoreLatestCheckpoint`), and the returned `skipped` names what was passed over; the next periodic
   * checkpoint then replaces the damaged file and leaves that one in place. With a metrics path, records after the
   * checkpoint's step are dropped from the file and new ones appended; a file whose records stop short of the
   * checkpoint's step or skip steps before it (a last line cut short) is refused, naming the missing steps. A
   * configuration other than the checkpoint's (see `#runConfig`) is refused unless `allowChanged`, and so are other
   * batch shapes: the batch of the step whose shapes the checkpoint recorded is built once more to compare them. A
   * checkpoint of the trainable parameters only (`trainableOnly`) records fingerprints of the frozen ones, and another
   * base (other pretrained weights of the same shapes) is refused by path.
   *
   * The seed compared is the `seed` option, the only one the trainer sees: the data's seed lives in the `batch`
   * function, which cannot be read. A trainer given no `seed` compares none, and a `batch` function over another data
   * seed (with the same shapes) resumes unnoticed on other batches; give the seed the batches and dropout keys are
   * drawn from as `seed` to have it checked.
   */
  async resume(path: string, opts: ResumeOptions = {}): Promise<ResumeInfo> {
    // A misspelt key ({ allowChange: true }) is refused rather than read as no permission.
    checkOptions("Trainer.resume", RESUME_OPTIONS, opts);
    if (this.#step !== 0 || this.#pending.length > 0) {
      throw new Error("Trainer.resume: resume a fresh trainer, before running any step");
    }
    let changed: string[] = [];
    let checkedBatch: { step: number; entries: Record<string, string> } | null = null;
    const accept = async (ckpt: Checkpoint) => {
      if (ckpt.seed !== undefined && this.#o.seed !== undefined && ckpt.seed !== this.#o.seed) {
        throw new Error(
          `it was written by a run with seed ${ckpt.seed}, this one has seed ${this.#o.seed}; its batches would differ`,
        );
      }
      const run = ckpt.metadata.run;
      if (run !== undefined) {
        const then = JSON.parse(run) as Record<string, unknown>;
        const now = this.#runConfig();
        // Recorded since a later version: a checkpoint written before cannot tell, and is taken as it was.
        for (const key of LATER_RUN_KEYS) if (!(key in then)) delete now[key];
        // Before every configured module recorded its settings, LoRA layers alone did, and before `mlpActivation`
        // Mlp did not record its activation: the modules such a checkpoint has no record of are taken as they are.
        const before = MODULE_RECORD_KEYS.some((k) => !(k in then));
        if (before && typeof then.model === "object" && then.model !== null) {
          const had = then.model as Record<string, unknown>;
          now.model = Object.fromEntries(Object.entries(now.model as object).filter(([p]) => p in had));
        }
        changed = differences(then, now);
      }
      const batch = ckpt.metadata.batch;
      if (batch !== undefined) {
        const then = JSON.parse(batch) as { step: number; entries: Record<string, string> };
        const built = this.#o.batch?.(then.step, 0) ?? {};
        const entries = batchShapes(built);
        for (const t of Object.values(built)) if (t instanceof Tensor && t.isRealized) t.dispose();
        changed.push(...differences(then.entries, entries, "batch"));
        checkedBatch = { step: then.step, entries };
      }
      const frozen = ckpt.metadata.frozen;
      if (frozen !== undefined) {
        changed.push(...differences(JSON.parse(frozen), await this.#frozenPrints(), "frozen"));
      }
      if (changed.length > 0 && !opts.allowChanged) {
        throw new Error(
          `the run that wrote it was configured differently: ${changed.slice(0, 4).join("; ")}${
            changed.length > 4 ? `; ... (${changed.length} differences)` : ""
          }. Pass { allowChanged: true } ` +
            `to continue under this configuration`,
        );
      }
    };
    const restored = await restoreLatestCheckpoint(path, this.#o.model, {
      optimizer: this.#o.optimizer,
      accept: async (ckpt) => {
        await accept(ckpt);
        this.#checkMetricsReach(ckpt.step, path);
      },
    });
    const ckpt = restored.checkpoint;
    this.#step = ckpt.step;
    const seconds = Number(ckpt.metadata.seconds ?? 0);
    this.#seconds = Number.isFinite(seconds) && seconds >= 0 ? seconds : 0;
    this.#resumedFrom = ckpt.step;
    this.#resumePath = path;
    this.#batchShapes = checkedBatch;
    this.#damagedNewest = restored.skipped.some((s) => s.path === path) ? resolve(path) : null;
    return { path: restored.path, step: ckpt.step, skipped: restored.skipped, changed };
  }

  /**
   * Refuses to continue a metrics file whose records do not run without a gap up to the checkpoint's `step` (a last
   * line cut short, lost lines): the resumed run would append after the gap. A missing or unreadable file is left
   * to {@link #openMetrics}.
   */
  #checkMetricsReach(step: number, ckpt: string): void {
    const m = this.#o.metrics;
    if (typeof m !== "string") return;
    let steps: number[];
    try {
      steps = readJsonl(m).map((r) => r.step).filter((s): s is number => typeof s === "number" && s <= step);
    } catch {
      return;
    }
    // A file begun by a resumed run starts at that run's first step; an empty one has nothing to continue.
    if (steps.length === 0) return;
    const shown = missingSteps(new Set(steps), steps[0], step);
    if (shown === null) return;
    throw new Error(
      `it is at step ${step} but the metrics file "${m}" has no record of step(s) ${shown} (lines cut short or ` +
        `lost after the checkpoint was written), so the run's records would have a gap. Remove "${ckpt}" to ` +
        `continue from "${previousCheckpointPath(ckpt)}" if that one is before the gap, remove "${m}" to ` +
        `continue without the earlier records, or remove both checkpoints and "${m}" to run from the start`,
    );
  }

  /**
   * What a resumed run must share with the run that wrote its checkpoint, besides the model and the batches: the
   * run's length, seed and clipping, the learning-rate factors of the schedule (at 33 steps spread over the run,
   * readable, and as fingerprints of its factors at every step between them, `scheduleValues`, so that a schedule
   * that differs between the samples is told by the steps around the difference), the optimiser's description (kind,
   * hyperparameters, groups), the parameters each group trains, and the settings of the model's configured modules
   * (`ConfiguredModule`, e.g. LoRA's scale and dropout, a norm's epsilon, the RoPE base).
   */
  #runConfig(): Record<string, unknown> {
    const { steps, clipNorm, schedule, seed, accumulate = 1 } = this.#o;
    const at = this.#sampledSteps();
    return {
      steps,
      seed: seed ?? null,
      clipNorm: clipNorm ?? null,
      // Recorded where it is not 1, so that checkpoints from before it existed (all without accumulation) compare.
      ...(accumulate === 1 ? {} : { accumulate }),
      schedule: schedule === undefined ? null : Object.fromEntries(at.map((s) => [`step ${s}`, schedule(s)])),
      scheduleValues: this.#scheduleDigests(),
      optimizer: this.#o.optimizer.describe(),
      trainable: Object.fromEntries(this.#o.optimizer.groups.map((g) => [g.name, g.paths])),
      model: Object.fromEntries(
        namedModules(this.#o.model).flatMap(([p, m]) => isConfigured(m) ? [[p, m.runSettings()]] : []),
      ),
      // Marks a model record of every configured module (norms, attention, dropout), not LoRA layers alone.
      everyModule: true,
      // Marks a record of Mlp's activation.
      mlpActivation: true,
    };
  }

  /** The steps at which the schedule's factors are recorded as numbers: 33 spread over the run. */
  #sampledSteps(): number[] {
    const steps = this.#o.steps;
    return [...new Set(Array.from({ length: 33 }, (_, i) => 1 + Math.round(((steps - 1) * i) / 32)))];
  }

  /**
   * The fingerprints of the schedule's factors at the steps strictly between two sampled ones (the float64 bits of
   * each), keyed by the range (`"steps 33-63"`), or null without a schedule; computed once per trainer. A run of
   * 10⁶ steps takes one call of the schedule per step and 8 MB hashed: 0.14 to 0.32 s for a cosine schedule.
   */
  #scheduleDigests(): Record<string, string> | null {
    const schedule = this.#o.schedule;
    if (schedule === undefined || this.#scheduleValues !== null) return this.#scheduleValues;
    const at = this.#sampledSteps();
    const out: Record<string, string> = {};
    for (let i = 0; i + 1 < at.length; i++) {
      const [from, to] = [at[i] + 1, at[i + 1] - 1];
      if (from > to) continue;
      const values = new Float64Array(to - from + 1);
      for (let s = from; s <= to; s++) values[s - from] = schedule(s);
      out[`steps ${from}-${to}`] = fingerprint(values);
    }
    this.#scheduleValues = out;
    return out;
  }

  /**
   * The shape, dtype and fingerprint of the values of each parameter the optimiser does not train, by path:
   * what a checkpoint of the trainable parameters only (`trainableOnly`) leaves to be rebuilt identically. Computed
   * once per trainer, at its first such checkpoint or at a resume from one: the parameters are frozen. Each is read
   * back from the device once (a model of 135M f32 parameters: 540 MB read back and hashed).
   */
  async #frozenPrints(): Promise<Record<string, string>> {
    if (this.#frozen !== null) return this.#frozen;
    const trained = new Set(this.#o.optimizer.paths);
    const prints: Record<string, string> = {};
    for (const [path, t] of namedParameters(this.#o.model)) {
      if (trained.has(path)) continue;
      // A lazy parameter (a view of packed storage) is computed without being replaced by its result.
      const values = await (t.isRealized ? t : new Tensor(t.node)).data();
      prints[path] = `[${t.shape.join(", ")}] ${t.dtype} ${fingerprint(values)}`;
    }
    this.#frozen = prints;
    return prints;
  }

  /**
   * The trainer's metadata of a checkpoint: the run's configuration, its seconds, the batch's shapes and, for a
   * checkpoint of the trainable parameters only (`trainableOnly`), the fingerprints of the frozen ones.
   */
  async #metadata(trainableOnly: boolean): Promise<Record<string, string>> {
    return {
      run: JSON.stringify(this.#runConfig()),
      seconds: String(this.trainSeconds),
      ...(this.#batchShapes === null ? {} : { batch: JSON.stringify(this.#batchShapes) }),
      ...(trainableOnly ? { frozen: JSON.stringify(await this.#frozenPrints()) } : {}),
    };
  }
}

/** Keys of {@link Trainer}'s run configuration that earlier checkpoints do not have. */
const LATER_RUN_KEYS = ["trainable", "model", "scheduleValues", "everyModule", "mlpActivation"];

/** Keys of the run configuration marking a model record of modules that earlier checkpoints did not record. */
const MODULE_RECORD_KEYS = ["everyModule", "mlpActivation"];

/**
 * A 64-bit fingerprint (16 hex digits) of `data`'s bytes: two multiplicative hashes over its 32-bit words (FNV-1a's,
 * and one whose shift carries high bits down), the length in the second. Not a cryptographic hash: it tells values
 * changed by accident (another schedule, another base), several times faster than SHA-256 through `crypto.subtle`
 * (54 MB: 0.1 to 0.3 s against 0.5 to 1.5 s on a loaded two-core machine).
 */
function fingerprint(data: ArrayBufferView): string {
  let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (bytes.byteOffset % 4 !== 0) bytes = bytes.slice();
  const n = bytes.length >>> 2;
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, n);
  let a = 0x811c9dc5;
  let b = 0x9e3779b9 ^ bytes.length;
  // The bytes after the last whole word make one more word.
  let tail = 0;
  for (let j = 4 * n; j < bytes.length; j++) tail = (tail << 8) | bytes[j];
  for (let i = 0; i <= n; i++) {
    const w = i < n ? words[i] : tail;
    a = Math.imul(a ^ w, 0x01000193);
    b = Math.imul(b ^ w, 0x85ebca6b);
    b ^= b >>> 13;
  }
  const hex = (h: number) => (h >>> 0).toString(16).padStart(8, "0");
  return hex(a) + hex(b);
}

function isConfigured(m: object): m is ConfiguredModule {
  return typeof (m as Partial<ConfiguredModule>).runSettings === "function";
}

/** Each batch entry's shape and dtype, as `"[32, 432] f32"`. */
function batchShapes(batch: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(batch).map((
      [name, t],
    ) => [name, t instanceof Tensor ? `[${t.shape.join(", ")}] ${t.dtype}` : typeof t]),
  );
}

/** The leaves where two JSON values differ, as "path: then → now". */
function differences(then: unknown, now: unknown, path = ""): string[] {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;
  if (isObj(then) && isObj(now) && Array.isArray(then) === Array.isArray(now)) {
    const keys = [...new Set([...Object.keys(then), ...Object.keys(now)])];
    // An empty key (the model's own settings, at path "") adds nothing to the path.
    return keys.flatMap((k) =>
      differences(then[k], now[k], path === "" || k === "" ? path + k : `${path}.${k}`)
    );
  }
  const [a, b] = [JSON.stringify(then ?? null), JSON.stringify(now ?? null)];
  return a === b ? [] : [`${path} ${a} then, ${b} now`];
}

/** Disposes a batch's realized tensors (a lazy entry stays lazy). */
function disposeBatch(batch: Readonly<Record<string, Tensor>>): void {
  for (const t of Object.values(batch)) if (t.isRealized) t.dispose();
}

/** Each batch tensor's storage by name; one tensor under two names (an autoencoder's input and target) is one. */
function batchStorages(
  batch: Readonly<Record<string, Tensor>>,
): { storages: Map<Storage, string>; sameBatch: [string, string][] } {
  const storages = new Map<Storage, string>();
  const sameBatch: [string, string][] = [];
  for (const [name, t] of Object.entries(batch)) {
    const st = t.node.storage;
    if (st === null) continue;
    const first = storages.get(st);
    if (first !== undefined) sameBatch.push([first, name]);
    else storages.set(st, name);
  }
  return { storages, sameBatch };
}

/** The name of running sum `i` of an accumulating step: a parameter's path, then `#loss` (loss and metrics). */
function sumName(i: number, paths: readonly string[]): string {
  return i < paths.length ? paths[i] : "#loss";
}

/** The storage of each running sum (see {@link sumName}), by name. */
function sumRoles(sums: readonly Tensor[], paths: readonly string[]): Map<Storage, string> {
  return new Map(sums.map((t, i) => [t.node.storage!, sumName(i, paths)]));
}

/** The storage of each of the optimiser's current parameter packs, by pack key. */
function packStorages(opt: Optimizer): Map<Storage, string> {
  const state = new Map<Storage, string>();
  for (const [key, t] of opt.currentPacks) {
    const st = baseStorage(t);
    if (st !== null) state.set(st, key);
  }
  return state;
}
