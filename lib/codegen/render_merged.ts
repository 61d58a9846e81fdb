/**
 * Several generated kernels in one shader, launched by one dispatch: each kernel (a *branch*) keeps its own grid of
 * workgroups, the shader's workgroups are the branches' grids laid end to end, and each workgroup runs the branch
 * its index falls in, with the global invocation id that branch would have had on its own. Independent kernels of a
 * compiled step (the projections that read one input, the weight gradients, the optimiser updates) then cost one
 * launch between them instead of one each; on a software adapter, where every launch costs a fixed ~0.3 ms and a
 * small kernel leaves most cores idle, that is most of the step.
 *
 * Branches share bindings: the caller numbers the shader's bindings and maps each branch's output and inputs to
 * them (one buffer read by several branches is bound once). Every branch's parameters sit in one uniform at the
 * branch's own offset. Only kernels whose pieces exist (no workgroup memory, no barriers: the generic kernel and
 * the register-blocked matmul) can be branches, each with at most {@link MERGED_WORKGROUP} invocations per
 * workgroup.
 *
 * @module
 */
import { grid, type KernelPieces, PARAMS_VAR, type RenderedKernel } from "./render_wgsl.ts";

/** Invocations per workgroup of a merged shader (a branch with fewer leaves the rest idle). */
export const MERGED_WORKGROUP = 64;

/** One binding of a merged shader. */
export interface MergedBinding {
  /** WGSL element type of the array. */
  readonly type: string;
  /** Whether a branch writes it. */
  readonly write: boolean;
}

/** One kernel of a merged shader. */
export interface MergedBranch {
  /** The kernel's pieces (see `render_wgsl.ts`). */
  readonly pieces: KernelPieces;
  /** The kernel's own workgroup counts. */
  readonly dispatch: readonly [number, number, number];
  /** Shader binding of each of the kernel's bindings: its output, then each input. */
  readonly bindings: readonly number[];
  /** Offset of the kernel's parameters in the shared uniform, in `vec4<u32>`. */
  readonly paramBase: number;
}

/** Workgroups of a kernel's own grid. */
export function workgroupsOf(dispatch: readonly [number, number, number]): number {
  return dispatch[0] * dispatch[1] * dispatch[2];
}

/** Whether a kernel with these pieces can be a branch of a merged shader. */
export function canMerge(pieces: KernelPieces | undefined): pieces is KernelPieces {
  return pieces !== undefined &&
    pieces.workgroup[0] * pieces.workgroup[1] * pieces.workgroup[2] <= MERGED_WORKGROUP;
}

/**
 * The shader running `branches` (see the module comment) over `bindings`, with a parameter uniform of
 * `paramVec4s` vectors after the storage bindings when it is not 0.
 */
export function renderMerged(
  branches: readonly MergedBranch[],
  bindings: readonly MergedBinding[],
  paramVec4s: number,
): RenderedKernel {
  if (branches.length === 0) throw new RangeError("renderMerged: no kernels to merge");
  const L: string[] = [];
  if (branches.some((b) => b.pieces.f16)) L.push("enable f16;");
  L.push(...new Set(branches.flatMap((b) => b.pieces.helpers)));
  bindings.forEach((b, i) => {
    const access = b.write ? "read_write" : "read";
    L.push(`@group(0) @binding(${i}) var<storage, ${access}> bind${i}: array<${b.type}>;`);
  });
  if (paramVec4s > 0) {
    L.push(`struct Params_ { v: array<vec4<u32>, ${paramVec4s}> }`);
    L.push(`@group(0) @binding(${bindings.length}) var<uniform> ${PARAMS_VAR}: Params_;`);
  }
  let start = 0;
  const calls: string[] = [];
  branches.forEach((br, j) => {
    const p = br.pieces;
    if (!canMerge(p)) throw new RangeError(`renderMerged: kernel ${j} cannot share a shader`);
    if (br.bindings.length !== p.bindingTypes.length) {
      throw new RangeError(
        `renderMerged: kernel ${j} has ${p.bindingTypes.length} bindings, given ${br.bindings.length}`,
      );
    }
    br.bindings.forEach((g, i) => {
      const b = bindings[g];
      if (b === undefined || b.type !== p.bindingTypes[i] || (i === 0 && !b.write)) {
        throw new RangeError(`renderMerged: binding ${i} of kernel ${j} does not match shader binding ${g}`);
      }
    });
    const rename = (line: string) =>
      line.replace(/\b(out0|in\d+|loadA\d+|loadB\d+|epi)\b|\bP\.v\[(\d+)\]/g, (m, name, slot) => {
        if (slot !== undefined) return `${PARAMS_VAR}.v[${Number(slot) + br.paramBase}]`;
        if (name === "out0") return `bind${br.bindings[0]}`;
        if (name.startsWith("in")) return `bind${br.bindings[1 + Number(name.slice(2))]}`;
        return `${m}_${j}`;
      });
    L.push(...p.functions.map(rename));
    const [sx, sy, sz] = p.workgroup;
    const [gx, gy] = br.dispatch;
    const threads = sx * sy * sz;
    L.push(`fn kernel_${j}(w: u32, li: u32) {`);
    if (threads < MERGED_WORKGROUP) L.push(`  if (li >= ${threads}u) { return; }`);
    L.push(
      `  let g = vec3<u32>((w % ${gx}u) * ${sx}u + li % ${sx}u, ((w / ${gx}u) % ${gy}u) * ${sy}u + (li / ${sx}u) % ${sy}u,` +
        ` (w / ${gx * gy}u) * ${sz}u + li / ${sx * sy}u);`,
    );
    L.push(...p.body.map(rename), `}`);
    const n = workgroupsOf(br.dispatch);
    calls.push(
      `  ${j === 0 ? "" : "} else "}if (w < ${start + n}u) {`,
      `    kernel_${j}(w - ${start}u, li);`,
    );
    start += n;
  });
  const dispatch = grid(start);
  L.push(
    `@compute @workgroup_size(${MERGED_WORKGROUP})`,
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {`,
    `  let w = wg.x + wg.y * ${dispatch[0]}u;`,
    ...calls,
    `  }`,
    `}`,
  );
  return { source: L.join("\n"), dispatch };
}
