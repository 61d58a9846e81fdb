/**
 * A plain buffer copy (`dst[i] = src[i]` for `i < n`, n from a parameter buffer), used to seed an in-place
 * factorisation with an input tensor inside the same submission. One compiled shader serves every size.
 *
 * @module
 */
import { grid } from "./householder.wgsl.ts";

/** WGSL copying the first `params[0]` floats of binding 0 into binding 1 (binding 2: the parameter). */
export const COPY_WGSL = `// copy params[0] floats
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = g.x + g.y * nwg.x * 64u;
  if (i < params[0]) { dst[i] = src[i]; }
}
`;

/** Host twin of {@link COPY_WGSL} for `n` floats. */
export function copyHost(n: number): (b: (Float32Array | Int32Array | Uint32Array)[]) => void {
  return ([src, dst]) => {
    for (let i = 0; i < n; i++) dst[i] = src[i];
  };
}

/** Dispatch grid of {@link COPY_WGSL} for `n` floats. */
export function copyGrid(n: number): [number, number, number] {
  return grid(n, 64);
}
