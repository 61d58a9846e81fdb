/**
 * Which kernels of a prepared sequence (and, where `mergeRuns` says so, of a one-off submission) may share a launch
 * (see `render_merged.ts`), per adapter:
 *
 * - `software` (llvmpipe/lavapipe), measured on lavapipe: a shader that runs several kernels costs every one of its
 *   workgroups part of the other kernels' loops (llvmpipe executes the branches a workgroup does not take with its
 *   lanes masked off), so a matmul merged with a wide elementwise kernel runs 4x slower than the two launched one
 *   after the other; kernels of one or two workgroups, which leave the other cores idle, run about 2x faster
 *   merged (four 512 x 64 · 64 x 8 products: 1.3 ms launched one by one, 0.65 ms in one launch). Only those, and
 *   loop-free kernels of a few workgroups (the optimiser's updates), share launches there. Row reductions (a
 *   norm's statistics) are fused into the kernels that broadcast them, one invocation per row.
 * - `gpu` (every other adapter): kernels of at most 64 workgroups, which cannot fill a GPU on their own, share
 *   launches; a GPU branches uniformly per workgroup at no cost. Row reductions keep kernels of their own (a row
 *   per invocation reads memory uncoalesced there). Textbook defaults: measure them on the GPU.
 *
 * `TESSERA_LAUNCH_POLICY=software` or `=gpu` sets the policy of the WebGPU device whatever the adapter (see
 * {@link namedLaunchPolicy}): on a GPU, to time the software policy beside its own (`deno task bench:train` once
 * with each); on lavapipe, to run the GPU policy's kernels and launches (results, kernel and launch counts; its
 * times there say nothing about a GPU).
 *
 * @module
 */
import { type AdapterTraits, isSoftwareAdapter } from "./matmul_policy.ts";

/** A launch policy: its name and which kernels may share a launch. */
export interface LaunchPolicy {
  /** Name (printed by benchmarks). */
  readonly name: string;
  /** Whether a kernel of `workgroups` workgroups, with loops or without, may share a launch with others. */
  mayShare(workgroups: number, loops: boolean): boolean;
  /**
   * Whether a reduction over whole rows is fused into the kernels that broadcast it (one invocation per row, see
   * `schedule.ts`): one launch and no round trip for a norm's statistics or a softmax's sums.
   */
  readonly rowKernels: boolean;
  /**
   * Whether one-off submissions (`run`: the eager path, a step that is not replayed) share launches too. They pay
   * the grouping on every call (about 1 ms of host time for a 39-kernel step), where a prepared sequence pays it
   * once.
   */
  readonly mergeRuns: boolean;
}

/** lavapipe: kernels that leave cores idle, and small loop-free ones. */
export const SOFTWARE_LAUNCHES: LaunchPolicy = {
  name: "software (kernels of at most 2 workgroups, loop-free ones of at most 64)",
  mayShare: (workgroups, loops) => workgroups <= 2 || (!loops && workgroups <= 64),
  rowKernels: true,
  // The device's work is the step there: the eager LoRA step of bench:peers ran 1.1x as fast merged.
  mergeRuns: true,
};

/** GPUs: kernels too small to fill the device. */
export const GPU_LAUNCHES: LaunchPolicy = {
  name: "gpu (kernels of at most 64 workgroups)",
  mayShare: (workgroups) => workgroups <= 64,
  // One invocation per row reads its row alone: uncoalesced on a GPU, where the statistics kernel and the
  // elementwise one both read coalesced. Off until measured.
  rowKernels: false,
  // A launch costs microseconds on a GPU, and an eager step is bound by its host work: keep runs as they are.
  mergeRuns: false,
};

/**
 * The launch policy of an adapter.
 *
 * @example
 * ```ts
 * import { launchPolicyFor } from "./launch_policy.ts";
 * console.log(launchPolicyFor({ description: "llvmpipe (LLVM 15.0.6, 256 bits)", isFallback: true }).name);
 * ```
 */
export function launchPolicyFor(a: AdapterTraits): LaunchPolicy {
  return isSoftwareAdapter(a) ? SOFTWARE_LAUNCHES : GPU_LAUNCHES;
}

/** The policies by the names `TESSERA_LAUNCH_POLICY` takes. */
export const LAUNCH_POLICIES: Readonly<Record<"software" | "gpu", LaunchPolicy>> = {
  software: SOFTWARE_LAUNCHES,
  gpu: GPU_LAUNCHES,
};

/**
 * The policy named `name` (a key of {@link LAUNCH_POLICIES}); any other name is refused, naming `source` (where
 * the name came from) and the names there are.
 *
 * @example
 * ```ts
 * import { namedLaunchPolicy } from "./launch_policy.ts";
 * console.log(namedLaunchPolicy("gpu").rowKernels); // false
 * ```
 */
export function namedLaunchPolicy(name: string, source = "TESSERA_LAUNCH_POLICY"): LaunchPolicy {
  if (Object.hasOwn(LAUNCH_POLICIES, name)) return LAUNCH_POLICIES[name as keyof typeof LAUNCH_POLICIES];
  const names = Object.keys(LAUNCH_POLICIES).map((k) => `"${k}"`).join(" or ");
  throw new RangeError(
    `${source} is ${JSON.stringify(name)}; the launch policies are ${names} (unset: chosen by the adapter)`,
  );
}
