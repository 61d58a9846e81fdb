/**
 * Running hand-written kernels (from `kernels/`) on tensors. Unlike tensor methods this is eager: the inputs are
 * realized, every step runs in one submission, and the outputs come back as realized tensors. Each step gives its
 * WGSL for GPUs and a host function with the same effect for the CPU backend.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { checkShape, size } from "../shape.ts";
import { bufferNode, type Storage } from "../ir/node.ts";
import type { RawStep } from "../runtime/backend.ts";
import { getBackend, getDefaultDevice, resolveStorage } from "../runtime/realize.ts";
import { realize, Tensor } from "./tensor.ts";

/** One launch in {@link runKernels}. */
export interface KernelLaunch {
  /** Name used in errors and DEBUG output. */
  name: string;
  /** The compute shader (entry point `main`); binding `i` is buffer `bindings[i]`. */
  wgsl: string;
  /** Workgroup counts (each at most 65,535). */
  dispatch: readonly [number, number, number];
  /** Indices into `[...inputs, ...outputs]`, one per shader binding, in binding order. */
  bindings: readonly number[];
  /** The same computation on host arrays (bound in the same order), for the CPU backend. */
  host: (buffers: (Float32Array | Int32Array | Uint32Array)[]) => void;
}

/** Description of one output buffer. */
export interface OutputSpec {
  /** Shape of the output tensor. */
  shape: readonly number[];
  /** Element type. */
  dtype: DType;
  /** Initial contents (zeros when omitted: outputs are cleared before the first launch). */
  init?: Float32Array | Int32Array | Uint32Array;
}

/**
 * Runs `launches` in order in one submission over the buffers `[...inputs, ...outputs]` and returns the outputs.
 * Inputs are never written by a well-formed launch list (bind them read-only in the WGSL).
 */
export async function runKernels(
  inputs: readonly Tensor[],
  outputs: readonly OutputSpec[],
  launches: readonly KernelLaunch[],
): Promise<Tensor[]> {
  if (inputs.length === 0 && outputs.length === 0) return [];
  const device = inputs[0]?.device;
  for (const t of inputs) {
    if (t.device !== device) throw new Error(`runKernels: inputs on devices ${device} and ${t.device}`);
  }
  const be = await getBackend(device ?? getDefaultDevice());
  await realize(...inputs);
  const inStorage: Storage[] = inputs.map((t) => resolveStorage(t.node.storage!, be));
  const outStorage = outputs.map((o) => {
    const shape = checkShape("runKernels", o.shape);
    const n = size(shape);
    const data = o.init ??
      (o.dtype === "i32" ? new Int32Array(n) : o.dtype === "f32" ? new Float32Array(n) : new Uint32Array(n));
    if (data.length !== n) {
      throw new RangeError(`runKernels: init of ${data.length} values for shape [${shape}]`);
    }
    return be.upload(o.dtype, data);
  });
  const all = [...inStorage, ...outStorage];
  const steps: RawStep[] = launches.map((l) => {
    for (const b of l.bindings) {
      if (!Number.isInteger(b) || b < 0 || b >= all.length) {
        throw new RangeError(`runKernels: launch ${l.name} binds buffer ${b} of ${all.length}`);
      }
    }
    return {
      name: l.name,
      wgsl: l.wgsl,
      dispatch: l.dispatch,
      host: l.host,
      buffers: l.bindings.map((b) => all[b]),
    };
  });
  await be.run(steps);
  return outputs.map((o, i) => new Tensor(bufferNode(outStorage[i], [...o.shape], o.dtype)));
}
