/**
 * A hand-optimised fp32 matmul for contiguous row-major operands, `C[M,N] = A[M,K] · B[K,N]`, written for
 * llvmpipe/lavapipe, whose cost is dominated by memory instructions: every load is a `vec4<f32>`. Each invocation
 * keeps an 8 x 8 block of C in sixteen `vec4` accumulators; per four steps of k it loads eight `vec4` of A (a
 * row's next four values) and eight of B (two per row of B), i.e. 16 loads for 256 FMAs, where a scalar kernel
 * with the same block needs 64. It needs M % 8 = 0, N % 8 = 0 and K % 4 = 0, and serves as the reference point
 * of `bench/matmul_bench.ts` (the share of a hand-written kernel the compiled template reaches).
 *
 * @module
 */

/** Shape constraints of {@link matmulVec4Wgsl}, as a message, or null when the shape fits. */
export function matmulVec4Unfit(m: number, k: number, n: number): string | null {
  if (m % 8 !== 0 || n % 8 !== 0 || k % 4 !== 0 || m <= 0 || n <= 0 || k <= 0) {
    return `matmulVec4 needs M and N multiples of 8 and K a multiple of 4, got M=${m}, K=${k}, N=${n}`;
  }
  return null;
}

/** WGSL of the kernel for one shape (bindings: 0 = C, 1 = A, 2 = B, all `vec4<f32>` arrays). */
export function matmulVec4Wgsl(m: number, k: number, n: number): string {
  const unfit = matmulVec4Unfit(m, k, n);
  if (unfit !== null) throw new RangeError(unfit);
  const k4 = k / 4;
  const n4 = n / 4;
  const L: string[] = [
    `// hand-optimised matmul ${m}x${k} · ${k}x${n}`,
    `@group(0) @binding(0) var<storage, read_write> c: array<vec4<f32>>;`,
    `@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;`,
    `@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;`,
    `@compute @workgroup_size(8, 8, 1)`,
    `fn main(@builtin(global_invocation_id) g: vec3<u32>) {`,
    `  let row0 = i32(g.y) * 8;`,
    `  let col4 = i32(g.x) * 2;`,
    `  if (row0 >= ${m} || col4 >= ${n4}) { return; }`,
  ];
  for (let i = 0; i < 8; i++) L.push(`  var acc${i}l = vec4<f32>(0.0);`, `  var acc${i}h = vec4<f32>(0.0);`);
  L.push(`  for (var kk: i32 = 0; kk < ${k4}; kk = kk + 1) {`);
  // Rows of B for k = 4kk + j: two vec4 each.
  for (let j = 0; j < 4; j++) {
    L.push(`    let bl${j} = b[(kk * 4 + ${j}) * ${n4} + col4];`);
    L.push(`    let bh${j} = b[(kk * 4 + ${j}) * ${n4} + col4 + 1];`);
  }
  for (let i = 0; i < 8; i++) {
    L.push(`    let a${i} = a[(row0 + ${i}) * ${k4} + kk];`);
    for (let j = 0; j < 4; j++) {
      const comp = "xyzw"[j];
      L.push(`    acc${i}l = fma(vec4<f32>(a${i}.${comp}), bl${j}, acc${i}l);`);
      L.push(`    acc${i}h = fma(vec4<f32>(a${i}.${comp}), bh${j}, acc${i}h);`);
    }
  }
  L.push(`  }`);
  for (let i = 0; i < 8; i++) {
    L.push(`  c[(row0 + ${i}) * ${n4} + col4] = acc${i}l;`);
    L.push(`  c[(row0 + ${i}) * ${n4} + col4 + 1] = acc${i}h;`);
  }
  L.push(`}`);
  return L.join("\n");
}

/** Workgroup counts of {@link matmulVec4Wgsl}: one invocation per 8 x 8 block, 8 x 8 invocations per group. */
export function matmulVec4Grid(m: number, n: number): [number, number, number] {
  return [Math.ceil(n / 64), Math.ceil(m / 64), 1];
}

/** The same product on host arrays (float64 accumulation), for the CPU backend and checks. */
export function matmulVec4Host(
  m: number,
  k: number,
  n: number,
): (buffers: (Float32Array | Int32Array | Uint32Array)[]) => void {
  return ([c, a, b]) => {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
        c[i * n + j] = s;
      }
    }
  };
}
