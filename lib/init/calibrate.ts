/**
 * Calibration data for the data-driven initialisations: the inputs of target `Linear` layers recorded during
 * forward passes (EVA, CNTLoRA) and full weight gradients averaged over batches (LoRA-GA), as `LayerData` per
 * module path, ready for `attachLora({ data })`.
 *
 * @module
 */
import { valueAndGrad } from "../autodiff/grad.ts";
import { findTargets } from "../nn/targets.ts";
import { type F16, linear, type LinearLayer } from "../nn/linear.ts";
import type { Linear } from "../nn/linear.ts";
import { Module, replaceModule } from "../nn/module.ts";
import { concat, stack, tensor } from "../tensor/creation.ts";
import { type I32, realize, type Tensor } from "../tensor/tensor.ts";
import type { F32, LayerData } from "./types.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

const COLLECT_ACTIVATIONS_OPTIONS = z.object({
  batches: opt.count().optional(),
  labelMask: opt.fn().optional(),
  ragged: z.enum(["error", "trim", "concat"]).optional(),
}).strict();

/** Options of {@link collectActivations}. */
export interface CollectActivationsOptions {
  /** How many times `run` is called (default 1); `run` receives the call's index. */
  batches?: number;
  /**
   * Which tokens to keep, per recorded batch (the layer's n-th call): one entry per token of the flattened input
   * (all axes but the last), kept when truthy — e.g. `attention_mask && labels != -100` as PEFT's EVA does.
   * Absent or returning `undefined`: every token is kept.
   */
  labelMask?: (batch: number) => ArrayLike<number | boolean> | undefined;
  /**
   * What to do when the recorded batches of a layer have different token counts (e.g. after masking), since
   * `LayerData.activations` stacks them as `[NB, T, d_in]`: `"error"` (default), `"trim"` (keep the first T_min
   * tokens of each batch) or `"concat"` (one batch `[ΣT, d_in]`).
   */
  ragged?: "error" | "trim" | "concat";
}

/** Stands in for a `Linear` while recording its inputs; its public fields are the layer's own tensors. */
class RecordingLinear extends Module implements LinearLayer {
  weight: F32 | F16;
  declare bias?: F32;
  #record: (x: F32) => void;

  constructor(layer: Linear, record: (x: F32) => void) {
    super();
    this.weight = layer.weight;
    if (layer.bias !== undefined) this.bias = layer.bias;
    this.#record = record;
  }

  get inFeatures(): number {
    return this.weight.shape[1];
  }

  get outFeatures(): number {
    return this.weight.shape[0];
  }

  forward(x: F32): Tensor<number[], "f32"> {
    this.#record(x);
    return linear(x, this.weight, this.bias);
  }
}

function checkTargets(model: object, targets: readonly string[] | RegExp, what: string): [string, Linear][] {
  const found = findTargets(model, targets);
  if (found.length === 0) {
    throw new RangeError(`${what}: no Linear module of the model matches ${String(targets)}`);
  }
  return found;
}

/**
 * Records the inputs of every target `Linear` (names matched as PEFT's `target_modules`, or a RegExp on the whole
 * path, as `attachLora` does) while `run(model, i)` is called `batches` times. Each target is temporarily replaced by
 * a recording module with the same parameter tensors (so parameter paths and `functionalCall` keep working) and put
 * back afterwards, also when `run` throws. Every call of a layer is one calibration batch: its input `[..., d_in]`
 * is flattened to tokens `[T, d_in]`, masked by `labelMask`, and the batches are stacked to `[NB, T, d_in]`.
 * Kernels are specialised to shapes (on WebGPU kept for the life of the process): each batch's kept tokens are
 * gathered into a power-of-two number of rows, but the result has the kept count, so every new count (or, with
 * `"concat"`, every new list of counts) compiles the kernels that assemble it and those of the init that reads it.
 * Layers that were never called are an error, and so is an unknown option or a bad value (an `OptionsError` naming
 * it, before `run` is called).
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { Linear } from "../nn/linear.ts";
 * import { collectActivations } from "./calibrate.ts";
 * const model = { fc1: new Linear(8, 16, { seed: 0 }), fc2: new Linear(16, 4, { seed: 1 }) };
 * const data = await collectActivations(model, ["fc1", "fc2"], (m, i) => {
 *   m.fc2.forward(m.fc1.forward(randn([2, 5, 8], { seed: i })).relu());
 * }, { batches: 3 });
 * console.log(data.fc1.activations?.shape, data.fc2.activations?.shape); // [3, 10, 8] [3, 10, 16]
 * ```
 */
export async function collectActivations<T extends object>(
  model: T,
  targets: readonly string[] | RegExp,
  run: (model: T, batch: number) => void | Promise<void>,
  opts: CollectActivationsOptions = {},
): Promise<Record<string, LayerData>> {
  checkOptions("collectActivations", COLLECT_ACTIVATIONS_OPTIONS, opts);
  const calls = opts.batches ?? 1;
  const found = checkTargets(model, targets, "collectActivations");
  const recorded = new Map<string, Kept[]>(found.map(([p]) => [p, []]));
  const pending: F32[] = [];
  const swapped: [string, Linear][] = [];
  try {
    for (const [path, layer] of found) {
      const list = recorded.get(path)!;
      const d = layer.weight.shape[1];
      const rec = new RecordingLinear(layer, (x) => {
        const all = x.reshape([-1, d]) as F32;
        const mask = opts.labelMask?.(list.length);
        const kept = mask === undefined
          ? { rows: all, count: all.shape[0] }
          : applyMask(path, list.length, all, mask);
        list.push(kept);
        pending.push(kept.rows);
      });
      replaceModule(model, path, rec);
      swapped.push([path, layer]);
    }
    for (let i = 0; i < calls; i++) {
      await run(model, i);
      // Compute what this call recorded now, so the lazy graphs do not pile up.
      await realize(...pending.splice(0));
    }
  } finally {
    for (const [path, layer] of swapped.reverse()) {
      const rec = replaceModule(model, path, layer) as RecordingLinear;
      // Tensors the run put into the recording module (e.g. loadParameters) go back into the layer.
      if (rec instanceof RecordingLinear) {
        layer.weight = rec.weight;
        if (rec.bias !== undefined) layer.bias = rec.bias;
      }
    }
  }
  const out: Record<string, LayerData> = {};
  for (const [path, list] of recorded) {
    if (list.length === 0) {
      throw new RangeError(`collectActivations: layer "${path}" was never called during run`);
    }
    out[path] = { activations: stackBatches(path, list, opts.ragged ?? "error") };
  }
  return out;
}

/** A batch's kept tokens: the first `count` rows of `rows`, the rest padding. */
interface Kept {
  rows: F32;
  count: number;
}

/**
 * The kept tokens of one batch, gathered into a power-of-two number of rows at most `n` (the padding repeats the
 * first kept row): kernels are specialised to shapes, so gathering exactly the kept count compiled a kernel per count.
 */
function applyMask(path: string, batch: number, tokens: F32, mask: ArrayLike<number | boolean>): Kept {
  const n = tokens.shape[0];
  if (mask.length !== n) {
    throw new RangeError(
      `collectActivations: labelMask(${batch}) has ${mask.length} entries but layer "${path}" got ${n} tokens`,
    );
  }
  const keep: number[] = [];
  for (let i = 0; i < n; i++) if (mask[i]) keep.push(i);
  if (keep.length === 0) {
    throw new RangeError(`collectActivations: labelMask(${batch}) keeps no token of layer "${path}"`);
  }
  if (keep.length === n) return { rows: tokens, count: n };
  const idx = new Int32Array(Math.min(2 ** Math.ceil(Math.log2(keep.length)), n)).fill(keep[0]);
  idx.set(keep);
  const rows = tokens.gather(tensor(idx, { dtype: "i32", device: tokens.device }) as I32, 0);
  return { rows, count: keep.length };
}

function stackBatches(path: string, list: Kept[], ragged: "error" | "trim" | "concat"): F32 {
  const counts = list.map((t) => t.count);
  const min = Math.min(...counts);
  const first = (t: Kept, k: number) => (t.rows.shape[0] === k ? t.rows : t.rows.slice([0, k])) as F32;
  if (counts.every((c) => c === min)) return stack(list.map((t) => first(t, min)), 0);
  switch (ragged) {
    case "concat":
      return concat(list.map((t) => first(t, t.count)), 0);
    case "trim":
      return stack(list.map((t) => first(t, min)), 0);
    default:
      throw new RangeError(
        `collectActivations: the batches of layer "${path}" have different token counts (${
          counts.join(", ")
        }); ` +
          `activations are stacked as [NB, T, d_in], so make the batches equal or pass ragged: "trim" or "concat"`,
      );
  }
}

/**
 * The gradient of a loss with respect to the full weight of every target `Linear`, averaged over `batches`
 * (LoRA-GA's preprocessing: `G = (1/n) Σ_batches ∂L/∂W`), as `LayerData.grads` `[d_out, d_in]` per module path.
 * Each batch is one `valueAndGrad` call over the target weights; `lossFn(model, batch)` must return a one-element
 * tensor computed with the model's current tensors. The model is not changed.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { Linear } from "../nn/linear.ts";
 * import { collectGradients } from "./calibrate.ts";
 * const model = { fc1: new Linear(8, 16, { seed: 0 }), fc2: new Linear(16, 1, { seed: 1 }) };
 * const batches = [0, 1].map((i) => randn([4, 8], { seed: i }));
 * const data = await collectGradients(model, ["fc1", "fc2"], (m, x) =>
 *   m.fc2.forward(m.fc1.forward(x).relu()).square().mean(), batches);
 * console.log(data.fc1.grads?.shape); // [16, 8]
 * ```
 */
export async function collectGradients<T extends object, B>(
  model: T,
  targets: readonly string[] | RegExp,
  lossFn: (model: T, batch: B) => Tensor,
  batches: Iterable<B> | AsyncIterable<B>,
): Promise<Record<string, LayerData>> {
  const found = checkTargets(model, targets, "collectGradients");
  const params: Record<string, Tensor> = Object.fromEntries(found.map(([p, l]) => [p, l.weight]));
  // The weights are the model's own tensors, so the loss depends on them directly: no parameter swap needed.
  const step = valueAndGrad((_p: Record<string, Tensor>, batch: B) => lossFn(model, batch));
  let sums: Record<string, F32> | null = null;
  let n = 0;
  for await (const batch of batches) {
    const { grads } = step(params, batch);
    const next: Record<string, F32> = {};
    for (const [path] of found) {
      const g = grads[path] as F32;
      next[path] = (sums === null ? g : sums[path].add(g)) as F32;
    }
    await realize(...Object.values(next));
    sums = next;
    n++;
  }
  if (sums === null) throw new RangeError("collectGradients: batches is empty");
  const out: Record<string, LayerData> = {};
  for (const [path] of found) {
    const mean = sums[path].div(n);
    out[path] = { grads: mean };
  }
  await realize(...Object.values(out).map((d) => d.grads!));
  return out;
}
