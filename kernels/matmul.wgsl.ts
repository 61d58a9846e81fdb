/**
 * The tiled, register-blocked matmul template. Each invocation computes a `tm x tn` block of outputs held in
 * registers, loading `tm` values of A and `tn` of B per step of k (so `tm*tn` FMAs per `tm+tn` loads: llvmpipe
 * is bound by loads, about 12 cycles each, so large blocks pay). The loads and the epilogue are functions spliced
 * in by the renderer, so any fused prologue (transposes, casts, scaling) and epilogue (bias, activation, residual)
 * run inside this one kernel. Rows and columns past the edge are clamped on load and skipped on store. The k loop
 * is the only loop, and the scheduler keeps it within llvmpipe's per-invocation iteration budget.
 *
 * @module
 */

/** Register blocking of the template: each invocation computes `tm x tn`; a workgroup is `wm x wn` invocations. */
export interface MatmulTile {
  readonly tm: number;
  readonly tn: number;
  readonly wm: number;
  readonly wn: number;
}

/** A tile that suits llvmpipe/lavapipe: big register blocks, 8x8 invocations. */
export const CPU_TILE: MatmulTile = { tm: 8, tn: 8, wm: 8, wn: 8 };
/** A smaller block for small products (fewer wasted edge lanes). */
export const SMALL_TILE: MatmulTile = { tm: 4, tn: 4, wm: 8, wn: 8 };

/** One spliced function: statements and the returned expression. */
export interface Spliced {
  readonly lines: readonly string[];
  readonly result: string;
}

/** Everything the template needs from the renderer. */
export interface MatmulParts {
  readonly header: readonly string[];
  readonly batch: number;
  readonly m: number;
  readonly n: number;
  readonly k: number;
  /** Body of `loadA(b, m, k) -> f32`. */
  readonly loadA: Spliced;
  /** Body of `loadB(b, k, n) -> f32`. */
  readonly loadB: Spliced;
  /** Body of `epi(b, m, n, acc) -> T` (T = `outType`). */
  readonly epilogue: Spliced;
  readonly outType: string;
  /** Wraps a value of `outType` for storing. */
  readonly store: (v: string) => string;
}

/** Renders the template. Returns the WGSL source and the dispatch grid. */
export function renderMatmul(
  p: MatmulParts,
  tile: MatmulTile,
): { source: string; dispatch: [number, number, number] } {
  const { tm, tn, wm, wn } = tile;
  const L: string[] = [...p.header];
  L.push(`fn loadA(b: i32, m: i32, k: i32) -> f32 {`, ...p.loadA.lines, `  return ${p.loadA.result};`, `}`);
  L.push(`fn loadB(b: i32, k: i32, n: i32) -> f32 {`, ...p.loadB.lines, `  return ${p.loadB.result};`, `}`);
  L.push(
    `fn epi(b: i32, m: i32, n: i32, acc: f32) -> ${p.outType} {`,
    ...p.epilogue.lines,
    `  return ${p.epilogue.result};`,
    `}`,
  );
  L.push(`@compute @workgroup_size(${wn}, ${wm}, 1)`);
  L.push(`fn main(@builtin(global_invocation_id) g: vec3<u32>) {`);
  L.push(`  let b = i32(g.z);`, `  let m0 = i32(g.y) * ${tm};`, `  let n0 = i32(g.x) * ${tn};`);
  L.push(`  if (m0 >= ${p.m} || n0 >= ${p.n}) { return; }`);
  for (let i = 0; i < tm; i++) L.push(`  let mi${i} = min(m0 + ${i}, ${p.m - 1});`);
  for (let j = 0; j < tn; j++) L.push(`  let nj${j} = min(n0 + ${j}, ${p.n - 1});`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) L.push(`  var c${i}_${j}: f32 = 0.0;`);
  for (let i = 0; i < tm; i++) L.push(`  var a${i}: f32;`);
  for (let j = 0; j < tn; j++) L.push(`  var b${j}: f32;`);
  L.push(`  for (var k: i32 = 0; k < ${p.k}; k = k + 1) {`);
  for (let i = 0; i < tm; i++) L.push(`    a${i} = loadA(b, mi${i}, k);`);
  for (let j = 0; j < tn; j++) L.push(`    b${j} = loadB(b, k, nj${j});`);
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) L.push(`    c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
  }
  L.push(`  }`);
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) {
      L.push(
        `  if (m0 + ${i} < ${p.m} && n0 + ${j} < ${p.n}) { out0[(b * ${p.m} + m0 + ${i}) * ${p.n} + n0 + ${j}] = ${
          p.store(`epi(b, m0 + ${i}, n0 + ${j}, c${i}_${j})`)
        }; }`,
      );
    }
  }
  L.push(`}`);
  const gx = Math.ceil(p.n / (tn * wn));
  const gy = Math.ceil(p.m / (tm * wm));
  return { source: L.join("\n"), dispatch: [gx, gy, p.batch] };
}

/**
 * Float64 reference of what the template computes: `epi(b, m, n, Σ_k loadA(b,m,k) * loadB(b,k,n))` for every
 * output, with the loads and epilogue as host functions. Used by the kernel tests.
 */
export function matmulReference(
  batch: number,
  m: number,
  n: number,
  k: number,
  loadA: (b: number, m: number, k: number) => number,
  loadB: (b: number, k: number, n: number) => number,
  epi: (b: number, m: number, n: number, acc: number) => number,
): Float64Array {
  const out = new Float64Array(batch * m * n);
  for (let bi = 0; bi < batch; bi++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let p = 0; p < k; p++) acc += loadA(bi, i, p) * loadB(bi, p, j);
        out[(bi * m + i) * n + j] = epi(bi, i, j, acc);
      }
    }
  }
  return out;
}
