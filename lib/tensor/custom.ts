/**
 * Running hand-written kernels (from `kernels/`) on tensors. Unlike tensor methods this is eager: the inputs are
 * realized, every step runs in one submission, and the outputs come back as realized tensors. Each step gives its
 * WGSL for GPUs and a host function with the same effect for the CPU backend.
 *
 * @module
 */
import type { DType } from "../dtype.ts";
import { checkShape, type Shape, size } from "../shape.ts";
import { bufferNode, mk, type Storage } from "../ir/node.ts";
import {
  type CustomKernelArg,
  type CustomWasmKernel,
  type HostBuffer,
  Op,
  type WasmFeatures,
} from "../ir/ops.ts";
import type { RawStep } from "../runtime/backend.ts";
import { getBackend, getDefaultDevice, resolveStorage } from "../runtime/realize.ts";
import { realize, Tensor } from "./tensor.ts";

/** One launch in {@link runKernels}. */
export interface KernelLaunch {
  /** Name used in errors and DEBUG output. */
  name: string;
  /**
   * The compute shader (entry point `main`); binding `i` is buffer `bindings[i]`. Null for a launch of the CPU
   * devices only (`cpu`, `wasm`): {@link runKernels} refuses it on WebGPU.
   */
  wgsl: string | null;
  /** Workgroup counts (each at most 65,535; unused without WGSL). */
  dispatch: readonly [number, number, number];
  /** Indices into `[...inputs, ...outputs]`, one per shader binding, in binding order. */
  bindings: readonly number[];
  /** The same computation on host arrays (bound in the same order), for the CPU backend. */
  host: (buffers: (Float32Array | Int32Array | Uint32Array)[]) => void;
  /** Optional: the same computation as a WebAssembly module (buffers in binding order), run by the wasm device. */
  wasm?: (features: WasmFeatures) => CustomWasmKernel;
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

/** The tensors {@link runKernels} returns: one per output spec, with that spec's dtype. */
export type KernelOutputs<O extends readonly OutputSpec[]> = {
  -readonly [K in keyof O]: Tensor<Shape, O[K] extends { dtype: infer T extends DType } ? T : DType>;
};

/**
 * Runs `launches` in order in one submission over the buffers `[...inputs, ...outputs]` and returns the outputs.
 * Inputs are never written by a well-formed launch list (bind them read-only in the WGSL).
 */
export function runKernels<const O extends readonly OutputSpec[]>(
  inputs: readonly Tensor[],
  outputs: O,
  launches: readonly KernelLaunch[],
): Promise<KernelOutputs<O>>;
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
  const hostOnly = launches.find((l) => l.wgsl === null);
  if (hostOnly !== undefined && be.name === "webgpu") {
    throw new Error(
      `runKernels: launch ${hostOnly.name} has no WGSL and runs on the cpu and wasm devices only, not webgpu`,
    );
  }
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
      wasm: l.wasm,
      buffers: l.bindings.map((b) => all[b]),
    };
  });
  await be.run(steps);
  return outputs.map((o, i) => new Tensor(bufferNode(outStorage[i], [...o.shape], o.dtype)));
}

/** A hand-written kernel for {@link customKernel}: everything of {@link CustomKernelArg} but its serializer. */
export type CustomKernelSpec = Omit<CustomKernelArg, "toJSON" | "host"> & {
  /** The same computation on host arrays `[result, ...inputs]`. */
  readonly host: (buffers: HostBuffer[]) => void;
};

/**
 * A lazy hand-written kernel over `inputs` (all on one device): a graph node like any other (its own kernel, in
 * the same submission as the rest), unlike {@link runKernels}. It has no derivative of its own; give it one with
 * `customVjp`.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { customKernel } from "./custom.ts";
 * const x = tensor([1, 2, 3, 4]);
 * const doubled = customKernel({
 *   key: "double_4",
 *   name: "double_4",
 *   shape: [4],
 *   dtype: "f32",
 *   wgsl: `@group(0) @binding(0) var<storage, read_write> out0: array<f32>;
 * @group(0) @binding(1) var<storage, read> x: array<f32>;
 * @compute @workgroup_size(4) fn main(@builtin(global_invocation_id) g: vec3<u32>) { out0[g.x] = 2.0 * x[g.x]; }`,
 *   dispatch: [1, 1, 1],
 *   host: ([out, a]) => { for (let i = 0; i < 4; i++) out[i] = 2 * a[i]; },
 * }, [x]);
 * console.log(await doubled.toArray()); // [2, 4, 6, 8]
 * ```
 */
export function customKernel(spec: CustomKernelSpec, inputs: readonly Tensor[]): Tensor {
  if (inputs.length === 0) throw new RangeError(`customKernel ${spec.name}: needs at least one input`);
  const arg: CustomKernelArg = { ...spec, toJSON: () => spec.key };
  return new Tensor(mk(Op.Custom, inputs.map((t) => t.node), arg));
}
