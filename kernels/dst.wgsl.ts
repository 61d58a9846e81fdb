/**
 * The orthonormal DST-I basis `Φ[i, j] = √(2/(n+1))·sin((i+1)(j+1)π/(n+1))` (first r columns). The argument
 * is reduced exactly in integers, `k = (i+1)(j+1) mod 2(n+1)`, and the value read from a table of the
 * 2(n+1) possible values computed in float64 on the host, so every entry is the correctly rounded float32 of
 * the exact value — a float32 `sin` of an argument up to ~n·r would lose about log2(n·r) bits, and WGSL only
 * promises an absolute error of 2⁻¹¹ for `sin`.
 *
 * @module
 */
import { grid } from "./householder.wgsl.ts";

/** The table of `√(2/(n+1))·sin(kπ/(n+1))` for k = 0 .. 2n+1, in float64. */
export function dstTable(n: number): Float64Array {
  const c = Math.sqrt(2 / (n + 1));
  return Float64Array.from({ length: 2 * (n + 1) }, (_, k) => c * Math.sin((k * Math.PI) / (n + 1)));
}

/** WGSL filling the n×r basis. Bindings: 0 table (f32), 1 out (f32, row-major n×r), 2 parameters `[n, r]`. */
export const DST_WGSL = `// DST-I basis columns
@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = params[0];
  let r = params[1];
  let idx = g.x + g.y * nwg.x * 64u;
  if (idx >= n * r) { return; }
  let i = idx / r;
  let j = idx % r;
  out[idx] = table[((i + 1u) * (j + 1u)) % (2u * (n + 1u))];
}
`;

/** Host twin of {@link DST_WGSL}. */
export function dstHost(n: number, r: number): (b: (Float32Array | Int32Array | Uint32Array)[]) => void {
  return ([table, out]) => {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < r; j++) out[i * r + j] = table[((i + 1) * (j + 1)) % (2 * (n + 1))];
    }
  };
}

/** Dispatch grid of {@link DST_WGSL}. */
export function dstGrid(n: number, r: number): [number, number, number] {
  return grid(n * r, 64);
}
