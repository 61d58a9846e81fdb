/** What the golden trajectory tests share: reading the fixture's batches and comparing a run's records with it. */
import { ok } from "node:assert/strict";
import { type DeviceName, type Shape, type Tensor, tensor } from "../../mod.ts";
import { type StEntry, toFloat32 } from "../../lib/io/safetensors.ts";
import type { StepRecord } from "../../lib/train/mod.ts";

/** The settings every reference run records (expected.safetensors' metadata "options"). */
export interface TrajectorySettings {
  base: string;
  schedule: "cosine" | "linear";
  warmup: number;
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  clip: number;
  steps: number;
}

/** The float64 values of an F64 entry. */
export function toFloat64(e: StEntry): Float64Array {
  ok(e.dtype === "F64", `expected F64, got ${e.dtype}`);
  const b = e.data;
  return new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** HF's causal-LM labels as next-token targets: position t predicts labels[t + 1]; the last position predicts none. */
export function shiftLabels(labels: Int32Array, rows: number, t: number): Int32Array {
  const out = new Int32Array(rows * t).fill(-100);
  for (let r = 0; r < rows; r++) out.set(labels.subarray(r * t + 1, (r + 1) * t), r * t);
  return out;
}

/** Largest |a_i − b_i| / |b_i|, with the index where it is. */
export function worstRelative(got: ArrayLike<number>, want: ArrayLike<number>): { err: number; at: number } {
  let err = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) / Math.abs(want[i]);
    if (e > err) [err, at] = [e, i];
  }
  return { err, at };
}

/**
 * The Trainer's `batch` over the fixture's batches (`ids` and `labels`, `[n, rows, t]` flattened): micro-batch
 * `micro` of step `step` is batch (step − 1)·accumulate + micro, its labels shifted as transformers shifts them.
 */
export function fixtureBatches(
  ids: Int32Array,
  labels: Int32Array,
  [rows, t]: readonly [number, number],
  device: DeviceName,
  accumulate = 1,
): (step: number, micro: number) => { x: Tensor<Shape, "i32">; y: Tensor<Shape, "i32"> } {
  const size = rows * t;
  return (step, micro) => {
    const at = ((step - 1) * accumulate + micro) * size;
    return {
      x: tensor(ids.slice(at, at + size), { shape: [rows, t], dtype: "i32", device }),
      y: tensor(shiftLabels(labels.subarray(at, at + size), rows, t), {
        shape: [rows, t],
        dtype: "i32",
        device,
      }),
    };
  };
}

/**
 * Checks that clipping at `clip` binds on some but not all of the reference's steps, and that each step's loss and
 * gradient norm are within 3e-6 (relative) of the reference's (see the tests' comments for the bound).
 */
export function checkLossesAndNorms(
  what: string,
  records: readonly StepRecord[],
  tensors: ReadonlyMap<string, StEntry>,
  clip: number,
): void {
  const steps = records.length;
  ok(
    steps === tensors.get("loss")!.shape[0],
    `${what}: ${steps} records for ${tensors.get("loss")!.shape[0]} steps`,
  );
  const clipped = toFloat32(tensors.get("grad_norm")!).filter((n) => n > clip).length;
  ok(clipped > 0 && clipped < steps, `${what}: clipping binds on ${clipped} of ${steps} steps`);
  for (const k of ["loss", "grad_norm"] as const) {
    const got = records.map((r) => r[k]), want = toFloat32(tensors.get(k)!);
    const w = worstRelative(got, want);
    ok(w.err < 3e-6, `${what}: ${k} at step ${w.at + 1}: ${got[w.at]} vs ${want[w.at]}`);
  }
}
