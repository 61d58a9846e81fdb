/**
 * Blockwise NF4 quantisation with the bitsandbytes code table (QLoRA's 4-bit NormalFloat, `blocksize` 64 by
 * default): each block of consecutive elements of the flattened tensor stores its absolute maximum in
 * float32, and each element the index of the nearest table value to `x·(1/absmax)`. The decision uses the
 * midpoints between neighbouring table values as float32 thresholds, with `x > t` choosing the upper code and
 * an exact tie the lower one (bitsandbytes' `dQuantizeNF4`). An all-zero block has absmax 0 and every element
 * gets the code of 0.0. Dequantisation is `table[code]·absmax`.
 *
 * Both shaders take their sizes from a parameter buffer, so one compiled shader serves every size. The host
 * twins round every step to float32 (`Math.fround`) so that they decide exactly like the GPU; only the
 * division `1/absmax`, which WGSL allows to be off by 2.5 ulp, can differ, by one ulp, on some adapters.
 *
 * @module
 */
import { grid } from "./householder.wgsl.ts";

/** The 16 NF4 code values of bitsandbytes (`create_normal_map(offset=0.9677083)` normalised to [-1, 1]). */
export const NF4_CODE_TABLE: readonly number[] = [
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
];

/** The 15 decision thresholds: midpoints of neighbouring code values, rounded to float32. */
export const NF4_THRESHOLDS: readonly number[] = NF4_CODE_TABLE.slice(1).map((v, i) =>
  Math.fround((NF4_CODE_TABLE[i] + v) / 2)
);

function lit(v: number): string {
  const s = String(Math.fround(v));
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
}

/**
 * WGSL quantising blocks: one invocation per block. Bindings: 0 x (f32, read), 1 codes (u32, one per
 * element), 2 absmax (f32, one per block), 3 parameters `[n, blockSize, blocks]`.
 */
export const NF4_QUANTIZE_WGSL: string = `// NF4 blockwise quantisation
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> codes: array<u32>;
@group(0) @binding(2) var<storage, read_write> absmax: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = params[0];
  let bs = params[1];
  let b = g.x + g.y * nwg.x * 64u;
  if (b >= params[2]) { return; }
  let start = b * bs;
  let end = min(start + bs, n);
  var m = 0.0;
  for (var i = start; i < end; i = i + 1u) { m = max(m, abs(x[i])); }
  absmax[b] = m;
  let inv = select(0.0, 1.0 / m, m > 0.0);
  for (var i = start; i < end; i = i + 1u) {
    let v = x[i] * inv;
    var c = 0u;
${NF4_THRESHOLDS.map((t) => `    c = c + select(0u, 1u, v > ${lit(t)});`).join("\n")}
    codes[i] = c;
  }
}
`;

/** Host twin of {@link NF4_QUANTIZE_WGSL} for `n` elements in blocks of `blockSize`. */
export function nf4QuantizeHost(
  n: number,
  blockSize: number,
): (b: (Float32Array | Int32Array | Uint32Array)[]) => void {
  return ([x, codes, absmax]) => {
    for (let start = 0, b = 0; start < n; start += blockSize, b++) {
      const end = Math.min(start + blockSize, n);
      let m = 0;
      for (let i = start; i < end; i++) m = Math.max(m, Math.abs(x[i]));
      absmax[b] = m;
      const inv = m > 0 ? Math.fround(1 / m) : 0;
      for (let i = start; i < end; i++) {
        const v = Math.fround(x[i] * inv);
        let c = 0;
        for (const t of NF4_THRESHOLDS) if (v > t) c++;
        codes[i] = c;
      }
    }
  };
}

/**
 * WGSL dequantising: one invocation per element. Bindings: 0 codes (u32), 1 absmax (f32), 2 out (f32),
 * 3 parameters `[n, blockSize, blocks]`.
 */
export const NF4_DEQUANTIZE_WGSL: string = `// NF4 dequantisation
@group(0) @binding(0) var<storage, read> codes: array<u32>;
@group(0) @binding(1) var<storage, read> absmax: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = g.x + g.y * nwg.x * 64u;
  if (i >= params[0]) { return; }
  var table = array<f32, 16>(${NF4_CODE_TABLE.map(lit).join(", ")});
  out[i] = table[min(codes[i], 15u)] * absmax[i / params[1]];
}
`;

/** Host twin of {@link NF4_DEQUANTIZE_WGSL}. */
export function nf4DequantizeHost(
  n: number,
  blockSize: number,
): (b: (Float32Array | Int32Array | Uint32Array)[]) => void {
  const table = NF4_CODE_TABLE.map(Math.fround);
  return ([codes, absmax, out]) => {
    for (let i = 0; i < n; i++) {
      out[i] = Math.fround(table[Math.min(codes[i], 15)] * absmax[Math.floor(i / blockSize)]);
    }
  };
}

/** The parameter words of both shaders. */
export function nf4Params(n: number, blockSize: number): Uint32Array {
  return Uint32Array.from([n, blockSize, Math.ceil(n / blockSize)]);
}

/** Dispatch grids: quantisation (one invocation per block) and dequantisation (one per element). */
export function nf4Grids(n: number, blockSize: number): {
  quantize: [number, number, number];
  dequantize: [number, number, number];
} {
  return { quantize: grid(Math.ceil(n / blockSize), 64), dequantize: grid(n, 64) };
}
