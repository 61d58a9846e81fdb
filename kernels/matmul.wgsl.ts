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

/**
 * An operand read as `vec4<f32>` straight from its binding (declared `array<vec4<f32>>`), for an operand that is
 * a plain load whose flat index is `c0 + cb·b + c·(row) + (axis)` with unit stride along `axis`:
 * - A along `"k"`: four steps of k per load (rows m); B along `"k"`: four steps of k per load (columns n);
 * - A along `"m"`: four rows per load; B along `"n"`: four columns per load.
 * `c0`, `cb` and the other coefficient are multiples of 4 (the renderer checks), so every load is aligned.
 * llvmpipe is bound by memory instructions, so a quarter of the loads is most of the speed-up.
 */
export interface VecOperand {
  /** Binding variable name, e.g. `in0`. */
  readonly name: string;
  /** The axis along which the operand is contiguous. */
  readonly axis: "k" | "m" | "n";
  /** Constant term of the flat index. */
  readonly c0: number;
  /** Coefficient of the batch index `b`. */
  readonly cb: number;
  /** Coefficient of the non-contiguous index (m or n for axis "k"; k otherwise). */
  readonly cOther: number;
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
  /** A read as `vec4` (then `loadA` is not used). */
  readonly vecA?: VecOperand;
  /** B read as `vec4` (then `loadB` is not used). */
  readonly vecB?: VecOperand;
}

/** Renders the template. Returns the WGSL source and the dispatch grid. */
export function renderMatmul(
  p: MatmulParts,
  tile: MatmulTile,
): { source: string; dispatch: [number, number, number] } {
  const { tm, tn, wm, wn } = tile;
  const { vecA, vecB } = p;
  if (vecA !== undefined && !(vecA.axis === "k" || (vecA.axis === "m" && tm % 4 === 0 && p.m % 4 === 0))) {
    throw new RangeError(
      `matmul template: A cannot be read as vec4 along ${vecA.axis} with tm=${tm}, M=${p.m}`,
    );
  }
  if (vecB !== undefined && !(vecB.axis === "k" || (vecB.axis === "n" && tn % 4 === 0 && p.n % 4 === 0))) {
    throw new RangeError(
      `matmul template: B cannot be read as vec4 along ${vecB.axis} with tn=${tn}, N=${p.n}`,
    );
  }
  // Four steps of k per iteration when an operand is read four k at a time.
  const k4 = vecA?.axis === "k" || vecB?.axis === "k";
  if (k4 && p.k % 4 !== 0) throw new RangeError(`matmul template: vec4 along k needs K % 4 = 0, got ${p.k}`);
  const L: string[] = [...p.header];
  if (vecA === undefined) {
    L.push(`fn loadA(b: i32, m: i32, k: i32) -> f32 {`, ...p.loadA.lines, `  return ${p.loadA.result};`, `}`);
  }
  if (vecB === undefined) {
    L.push(`fn loadB(b: i32, k: i32, n: i32) -> f32 {`, ...p.loadB.lines, `  return ${p.loadB.result};`, `}`);
  }
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
  // Vec4 index bases that do not change along k (divided by 4: every term is a multiple of 4).
  const base = (v: VecOperand, other: string) => `(${v.c0} + ${v.cb} * b + ${v.cOther} * ${other}) / 4`;
  if (vecA?.axis === "k") { for (let i = 0; i < tm; i++) L.push(`  let ra${i} = ${base(vecA, `mi${i}`)};`); }
  if (vecB?.axis === "k") { for (let j = 0; j < tn; j++) L.push(`  let rb${j} = ${base(vecB, `nj${j}`)};`); }
  // Along m (n): the 4-aligned group of rows (columns), clamped to the last whole group (M % 4 = 0).
  if (vecA?.axis === "m") {
    for (let q = 0; q < tm / 4; q++) L.push(`  let ma${q} = min(m0 + ${4 * q}, ${p.m - 4});`);
  }
  if (vecB?.axis === "n") {
    for (let q = 0; q < tn / 4; q++) L.push(`  let nb${q} = min(n0 + ${4 * q}, ${p.n - 4});`);
  }
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) L.push(`  var c${i}_${j}: f32 = 0.0;`);
  for (let i = 0; i < tm; i++) L.push(`  var a${i}: f32;`);
  for (let j = 0; j < tn; j++) L.push(`  var b${j}: f32;`);
  const fmas = (ind: string) => {
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn; j++) L.push(`${ind}c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
    }
  };
  // One operand's values at one step of k into `a0..`/`b0..` (`kx`: WGSL expression of k; `r`: its offset inside
  // a vec4 along k): through the spliced load function, from the vec4s read once per four k, or from vec4s along
  // m (n) that start at the 4-aligned groups `ma0..` (`nb0..`).
  const operandLoads = (
    ind: string,
    kx: string,
    r: number,
    o: {
      v: VecOperand | undefined;
      dst: string;
      count: number;
      scalar: (i: number) => string;
      group: string;
    },
  ) => {
    if (o.v === undefined) {
      for (let i = 0; i < o.count; i++) {
        L.push(`${ind}${o.dst}${i} = ${o.scalar(i)};`);
      }
    } else if (o.v.axis === "k") {
      for (let i = 0; i < o.count; i++) L.push(`${ind}${o.dst}${i} = v${o.dst}${i}[${r}];`);
    } else {
      for (let q = 0; q < o.count / 4; q++) {
        const idx = `(${o.v.c0} + ${o.v.cb} * b + ${o.v.cOther} * (${kx}) + ${o.group}${q}) / 4`;
        L.push(`${ind}let w${o.dst}${q} = ${o.v.name}[${idx}];`);
        for (let r2 = 0; r2 < 4; r2++) L.push(`${ind}${o.dst}${4 * q + r2} = w${o.dst}${q}[${r2}];`);
      }
    }
  };
  const loads = (ind: string, kx: string, r: number) => {
    operandLoads(ind, kx, r, {
      v: vecA,
      dst: "a",
      count: tm,
      scalar: (i) => `loadA(b, mi${i}, ${kx})`,
      group: "ma",
    });
    operandLoads(ind, kx, r, {
      v: vecB,
      dst: "b",
      count: tn,
      scalar: (j) => `loadB(b, ${kx}, nj${j})`,
      group: "nb",
    });
  };
  if (k4) {
    L.push(`  for (var kq: i32 = 0; kq < ${p.k / 4}; kq = kq + 1) {`);
    if (vecA?.axis === "k") {
      for (let i = 0; i < tm; i++) L.push(`    let va${i} = ${vecA.name}[ra${i} + kq];`);
    }
    if (vecB?.axis === "k") {
      for (let j = 0; j < tn; j++) L.push(`    let vb${j} = ${vecB.name}[rb${j} + kq];`);
    }
    for (let r = 0; r < 4; r++) {
      L.push(`    {`);
      loads("      ", `kq * 4 + ${r}`, r);
      fmas("      ");
      L.push(`    }`);
    }
    L.push(`  }`);
  } else {
    L.push(`  for (var k: i32 = 0; k < ${p.k}; k = k + 1) {`);
    loads("    ", "k", 0);
    fmas("    ");
    L.push(`  }`);
  }
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
