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

/**
 * Blocking of the template: each invocation computes `tm x tn`; a workgroup is `wm x wn` invocations. With `bk`,
 * the workgroup-shared variant ({@link renderMatmulShared}): the workgroup stages `(tm·wm) x bk` of A and
 * `bk x (tn·wn)` of B in workgroup memory per step of `bk` along k, every invocation loading a share, so each
 * global value is read once per workgroup instead of once per invocation (what real GPUs want; on llvmpipe the
 * barriers cost more than they save).
 */
export interface MatmulTile {
  /** Output rows per invocation. */
  readonly tm: number;
  /** Output columns per invocation. */
  readonly tn: number;
  /** Invocations per workgroup along rows. */
  readonly wm: number;
  /** Invocations per workgroup along columns. */
  readonly wn: number;
  /** Depth of the workgroup-shared tiles along k (the shared variant), or undefined (registers only). */
  readonly bk?: number;
  /**
   * The subgroup variant ({@link renderMatmulSubgroup}): the `wn` invocations of a row of the workgroup share their
   * A values through subgroup shuffles instead of each loading all `tm` of them. Needs `wn >= tm`.
   */
  readonly subgroup?: boolean;
}

/**
 * A subgroup tile for GPUs with the `subgroups` feature: 8 lanes along n share each step's A values (one load per
 * lane instead of four), 4 x 4 outputs per invocation, 8 x 8 invocations.
 */
export const GPU_SUBGROUP_TILE: MatmulTile = { tm: 4, tn: 4, wm: 8, wn: 8, subgroup: true };

/** A workgroup-shared tile for GPUs: 64 x 64 outputs per workgroup of 16 x 16, 4 x 4 each, k in steps of 16. */
export const GPU_SHARED_TILE: MatmulTile = { tm: 4, tn: 4, wm: 16, wn: 16, bk: 16 };

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
  /** The binding holds f16 (read as `vec4<f16>`, widened to f32: f16 storage, f32 accumulation). */
  readonly half?: boolean;
  /** Constant term of the flat index. */
  readonly c0: number;
  /** Coefficient of the batch index `b`. */
  readonly cb: number;
  /** Coefficient of the non-contiguous index (m or n for axis "k"; k otherwise). */
  readonly cOther: number;
}

/** One product of the template: its contracted length and how its operands are read. */
export interface MatmulTermParts {
  /** Contracted dimension. */
  readonly k: number;
  /** Body of `loadA<t>(b, m, k) -> f32` (t: the term's position). */
  readonly loadA: Spliced;
  /** Body of `loadB<t>(b, k, n) -> f32`. */
  readonly loadB: Spliced;
  /** A read as `vec4` (then `loadA` is not used). */
  readonly vecA?: VecOperand;
  /** B read as `vec4` (then `loadB` is not used). */
  readonly vecB?: VecOperand;
}

/** Everything the template needs from the renderer. */
export interface MatmulParts {
  readonly header: readonly string[];
  readonly batch: number;
  readonly m: number;
  readonly n: number;
  /** The products, accumulated one after the other into the same registers. */
  readonly terms: readonly MatmulTermParts[];
  /** Body of `epi(b, m, n, acc) -> T` (T = `outType`; acc is the sum of the products). */
  readonly epilogue: Spliced;
  readonly outType: string;
  /** Wraps a value of `outType` for storing. */
  readonly store: (v: string) => string;
}

/** A vec4 read of `v` as `vec4<f32>` (widened from f16 storage). */
function widen(v: VecOperand, read: string): string {
  return v.half ? `vec4<f32>(${read})` : read;
}

/** The spliced load functions of every term that reads its operand through them. */
function loadFunctions(p: MatmulParts, all: boolean): string[] {
  const L: string[] = [];
  const fn = (head: string, load: { lines: readonly string[]; result: string }) =>
    L.push(`fn ${head} -> f32 {`, ...load.lines, `  return ${load.result};`, `}`);
  p.terms.forEach((t, q) => {
    if (all || t.vecA === undefined) fn(`loadA${q}(b: i32, m: i32, k: i32)`, t.loadA);
    if (all || t.vecB === undefined) fn(`loadB${q}(b: i32, k: i32, n: i32)`, t.loadB);
  });
  L.push(
    `fn epi(b: i32, m: i32, n: i32, acc: f32) -> ${p.outType} {`,
    ...p.epilogue.lines,
    `  return ${p.epilogue.result};`,
    `}`,
  );
  return L;
}

/**
 * The register template rendered: the shader, its dispatch grid, and its pieces (module-scope functions and the
 * entry point's body in terms of `g`, the global invocation id) for a shader that runs several kernels.
 */
export interface RenderedMatmul {
  /** The complete shader. */
  readonly source: string;
  /** Workgroup counts. */
  readonly dispatch: [number, number, number];
  /** The load and epilogue functions. */
  readonly functions: readonly string[];
  /** Lines of `main`'s body. */
  readonly body: readonly string[];
  /** Workgroup size. */
  readonly workgroup: readonly [number, number, number];
}

/** Renders the template. Returns the WGSL source and the dispatch grid. */
export function renderMatmul(p: MatmulParts, tile: MatmulTile): RenderedMatmul {
  const { tm, tn, wm, wn } = tile;
  if (p.terms.length === 0) throw new RangeError("matmul template: no products to compute");
  for (const { vecA, vecB, k } of p.terms) {
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
    if ((vecA?.axis === "k" || vecB?.axis === "k") && k % 4 !== 0) {
      throw new RangeError(`matmul template: vec4 along k needs K % 4 = 0, got ${k}`);
    }
  }
  const functions = loadFunctions(p, false);
  const L: string[] = [];
  L.push(`  let b = i32(g.z);`, `  let m0 = i32(g.y) * ${tm};`, `  let n0 = i32(g.x) * ${tn};`);
  L.push(`  if (m0 >= ${p.m} || n0 >= ${p.n}) { return; }`);
  for (let i = 0; i < tm; i++) L.push(`  let mi${i} = min(m0 + ${i}, ${p.m - 1});`);
  for (let j = 0; j < tn; j++) L.push(`  let nj${j} = min(n0 + ${j}, ${p.n - 1});`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) L.push(`  var c${i}_${j}: f32 = 0.0;`);
  for (let i = 0; i < tm; i++) L.push(`  var a${i}: f32;`);
  for (let j = 0; j < tn; j++) L.push(`  var b${j}: f32;`);
  p.terms.forEach((t, q) => termLoop(L, p, t, q, tile));
  storeTile(L, p, tm, tn);
  const gx = Math.ceil(p.n / (tn * wn));
  const gy = Math.ceil(p.m / (tm * wm));
  const source = [
    ...p.header,
    ...functions,
    `@compute @workgroup_size(${wn}, ${wm}, 1)`,
    `fn main(@builtin(global_invocation_id) g: vec3<u32>) {`,
    ...L,
    `}`,
  ].join("\n");
  return { source, dispatch: [gx, gy, p.batch], functions, body: L, workgroup: [wn, wm, 1] };
}

/** Stores an invocation's `tm × tn` accumulators `c<i>_<j>` (at `m0 + i`, `n0 + j`) through the epilogue. */
function storeTile(L: string[], p: MatmulParts, tm: number, tn: number): void {
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) {
      L.push(
        `  if (m0 + ${i} < ${p.m} && n0 + ${j} < ${p.n}) { out0[(b * ${p.m} + m0 + ${i}) * ${p.n} + n0 + ${j}] = ${
          p.store(`epi(b, m0 + ${i}, n0 + ${j}, c${i}_${j})`)
        }; }`,
      );
    }
  }
}

/** The k loop of term `q` of the register template (in a block of its own), accumulating into `c<i>_<j>`. */
function termLoop(L: string[], p: MatmulParts, t: MatmulTermParts, q: number, tile: MatmulTile): void {
  const { tm, tn } = tile;
  const { vecA, vecB } = t;
  // Four steps of k per iteration when an operand is read four k at a time.
  const k4 = vecA?.axis === "k" || vecB?.axis === "k";
  L.push(`  {`);
  // Vec4 index bases that do not change along k (divided by 4: every term is a multiple of 4).
  const base = (v: VecOperand, other: string) => `(${v.c0} + ${v.cb} * b + ${v.cOther} * ${other}) / 4`;
  if (vecA?.axis === "k") {
    for (let i = 0; i < tm; i++) {
      L.push(`    let ra${i} = ${base(vecA, `mi${i}`)};`);
    }
  }
  if (vecB?.axis === "k") {
    for (let j = 0; j < tn; j++) {
      L.push(`    let rb${j} = ${base(vecB, `nj${j}`)};`);
    }
  }
  // Along m (n): the 4-aligned group of rows (columns), clamped to the last whole group (M % 4 = 0).
  if (vecA?.axis === "m") {
    for (let g = 0; g < tm / 4; g++) L.push(`    let ma${g} = min(m0 + ${4 * g}, ${p.m - 4});`);
  }
  if (vecB?.axis === "n") {
    for (let g = 0; g < tn / 4; g++) L.push(`    let nb${g} = min(n0 + ${4 * g}, ${p.n - 4});`);
  }
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
      for (let g = 0; g < o.count / 4; g++) {
        const idx = `(${o.v.c0} + ${o.v.cb} * b + ${o.v.cOther} * (${kx}) + ${o.group}${g}) / 4`;
        L.push(`${ind}let w${o.dst}${g} = ${widen(o.v, `${o.v.name}[${idx}]`)};`);
        for (let r2 = 0; r2 < 4; r2++) L.push(`${ind}${o.dst}${4 * g + r2} = w${o.dst}${g}[${r2}];`);
      }
    }
  };
  const loads = (ind: string, kx: string, r: number) => {
    operandLoads(ind, kx, r, {
      v: vecA,
      dst: "a",
      count: tm,
      scalar: (i) => `loadA${q}(b, mi${i}, ${kx})`,
      group: "ma",
    });
    operandLoads(ind, kx, r, {
      v: vecB,
      dst: "b",
      count: tn,
      scalar: (j) => `loadB${q}(b, ${kx}, nj${j})`,
      group: "nb",
    });
  };
  if (k4) {
    L.push(`    for (var kq: i32 = 0; kq < ${t.k / 4}; kq = kq + 1) {`);
    if (vecA?.axis === "k") {
      for (let i = 0; i < tm; i++) L.push(`      let va${i} = ${widen(vecA, `${vecA.name}[ra${i} + kq]`)};`);
    }
    if (vecB?.axis === "k") {
      for (let j = 0; j < tn; j++) L.push(`      let vb${j} = ${widen(vecB, `${vecB.name}[rb${j} + kq]`)};`);
    }
    for (let r = 0; r < 4; r++) {
      L.push(`      {`);
      loads("        ", `kq * 4 + ${r}`, r);
      fmas("        ");
      L.push(`      }`);
    }
    L.push(`    }`);
  } else {
    L.push(`    for (var k: i32 = 0; k < ${t.k}; k = k + 1) {`);
    loads("      ", "k", 0);
    fmas("      ");
    L.push(`    }`);
  }
  L.push(`  }`);
}

/**
 * The workgroup-shared variant (`tile.bk` set): per step of `bk` along k, the workgroup's invocations load the
 * `(tm·wm) x bk` slice of A and the `bk x (tn·wn)` slice of B into workgroup memory (each through the spliced load
 * functions, clamped at the edges and zero past K), synchronise, and every invocation accumulates its `tm x tn`
 * block from workgroup memory. Control flow is uniform across the workgroup (no early return before a barrier).
 */
export function renderMatmulShared(
  p: MatmulParts,
  tile: MatmulTile,
): { source: string; dispatch: [number, number, number] } {
  const { tm, tn, wm, wn } = tile;
  const bk = tile.bk;
  if (bk === undefined || !(Number.isInteger(bk) && bk > 0)) {
    throw new RangeError(`matmul template: the shared variant needs a positive integer bk, got ${bk}`);
  }
  const bm = tm * wm;
  const bn = tn * wn;
  const threads = wm * wn;
  if (p.terms.length === 0) throw new RangeError("matmul template: no products to compute");
  const L: string[] = [...p.header, ...loadFunctions(p, true)];
  L.push(`var<workgroup> tileA: array<f32, ${bm * bk}>;`, `var<workgroup> tileB: array<f32, ${bk * bn}>;`);
  L.push(`@compute @workgroup_size(${wn}, ${wm}, 1)`);
  L.push(
    `fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {`,
    `  let b = i32(wg.z);`,
    `  let m0 = i32(wg.y) * ${bm};`,
    `  let n0 = i32(wg.x) * ${bn};`,
    `  let ty = i32(lid.y);`,
    `  let tx = i32(lid.x);`,
    `  let tid = ty * ${wn} + tx;`,
  );
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) L.push(`  var c${i}_${j}: f32 = 0.0;`);
  p.terms.forEach((t, q) => {
    L.push(`  for (var k0 = 0; k0 < ${t.k}; k0 = k0 + ${bk}) {`);
    // A: consecutive invocations take consecutive k of one row (coalesced for row-major A).
    L.push(`    for (var e = tid; e < ${bm * bk}; e = e + ${threads}) {`);
    L.push(`      let i = e / ${bk};`, `      let kk = e % ${bk};`, `      let gk = k0 + kk;`);
    L.push(
      `      tileA[kk * ${bm} + i] = select(0.0, loadA${q}(b, min(m0 + i, ${p.m - 1}), min(gk, ${
        t.k - 1
      })), gk < ${t.k});`,
    );
    L.push(`    }`);
    L.push(`    for (var e = tid; e < ${bk * bn}; e = e + ${threads}) {`);
    L.push(`      let kk = e / ${bn};`, `      let j = e % ${bn};`, `      let gk = k0 + kk;`);
    L.push(
      `      tileB[kk * ${bn} + j] = select(0.0, loadB${q}(b, min(gk, ${t.k - 1}), min(n0 + j, ${
        p.n - 1
      })), gk < ${t.k});`,
    );
    L.push(`    }`, `    workgroupBarrier();`);
    L.push(`    for (var kk = 0; kk < ${bk}; kk = kk + 1) {`);
    for (let i = 0; i < tm; i++) L.push(`      let a${i} = tileA[kk * ${bm} + ty * ${tm} + ${i}];`);
    for (let j = 0; j < tn; j++) L.push(`      let b${j} = tileB[kk * ${bn} + tx * ${tn} + ${j}];`);
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn; j++) L.push(`      c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
    }
    L.push(`    }`, `    workgroupBarrier();`, `  }`);
  });
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) {
      const m = `m0 + ty * ${tm} + ${i}`;
      const n = `n0 + tx * ${tn} + ${j}`;
      L.push(
        `  if (${m} < ${p.m} && ${n} < ${p.n}) { out0[(b * ${p.m} + ${m}) * ${p.n} + ${n}] = ${
          p.store(`epi(b, ${m}, ${n}, c${i}_${j})`)
        }; }`,
      );
    }
  }
  L.push(`}`);
  return { source: L.join("\n"), dispatch: [Math.ceil(p.n / bn), Math.ceil(p.m / bm), p.batch] };
}

/**
 * How the subgroup variant exchanges values: `"native"` with WGSL's `subgroupShuffle` (needs the adapter's
 * `subgroups` feature, and subgroups made of whole rows of the workgroup: lanes numbered by local invocation index,
 * subgroup size a multiple of `wn`), or `"emulated"` through workgroup memory and barriers with the same lane
 * arithmetic, so that adapters without subgroups (lavapipe) can check the variant's indexing.
 */
export type ShuffleMode = "native" | "emulated";

/**
 * The subgroup variant of the register template (`tile.subgroup`): per step of k, lane `x < tm` of each row of
 * `wn` lanes loads A at row `m0 + x` and the row's lanes take the `tm` values from those lanes by shuffles; B is
 * loaded as in {@link renderMatmul}. Control flow is uniform (no early return: loads are clamped and stores
 * guarded), as shuffles and barriers require. Operands go through the spliced load functions (no vec4 reads).
 */
export function renderMatmulSubgroup(
  p: MatmulParts,
  tile: MatmulTile,
  mode: ShuffleMode,
): { source: string; dispatch: [number, number, number] } {
  const { tm, tn, wm, wn } = tile;
  if (!tile.subgroup || wn < tm) {
    throw new RangeError(
      `matmul template: the subgroup variant needs subgroup set and wn >= tm, got wn ${wn}, tm ${tm}`,
    );
  }
  if (p.terms.length === 0) throw new RangeError("matmul template: no products to compute");
  const L: string[] = mode === "native" ? ["enable subgroups;"] : [];
  L.push(...p.header, ...loadFunctions(p, true));
  if (mode === "native") {
    L.push(`fn shuffle_(v: f32, lane: u32, li: u32) -> f32 {`, `  return subgroupShuffle(v, lane);`, `}`);
  } else {
    L.push(
      `var<workgroup> lanes_: array<f32, ${wn * wm}>;`,
      `fn shuffle_(v: f32, lane: u32, li: u32) -> f32 {`,
      `  workgroupBarrier();`,
      `  lanes_[li] = v;`,
      `  workgroupBarrier();`,
      `  return lanes_[lane];`,
      `}`,
    );
  }
  L.push(`@compute @workgroup_size(${wn}, ${wm}, 1)`);
  L.push(
    `fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,`,
    `        @builtin(local_invocation_index) li: u32${
      mode === "native" ? ", @builtin(subgroup_invocation_id) sid: u32" : ""
    }) {`,
    `  let b = i32(g.z);`,
    `  let m0 = i32(g.y) * ${tm};`,
    `  let n0 = i32(g.x) * ${tn};`,
    // The lane of this row's lane 0 (emulated: lanes are local invocation indices).
    `  let row0 = ${mode === "native" ? "sid" : "li"} - lid.x;`,
    `  let mine = min(m0 + i32(min(lid.x, ${tm - 1}u)), ${p.m - 1});`,
  );
  for (let j = 0; j < tn; j++) L.push(`  let nj${j} = min(n0 + ${j}, ${p.n - 1});`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) L.push(`  var c${i}_${j}: f32 = 0.0;`);
  p.terms.forEach((t, q) => {
    L.push(`  for (var k: i32 = 0; k < ${t.k}; k = k + 1) {`);
    L.push(`    let own = loadA${q}(b, mine, k);`);
    for (let i = 0; i < tm; i++) L.push(`    let a${i} = shuffle_(own, row0 + ${i}u, li);`);
    for (let j = 0; j < tn; j++) L.push(`    let b${j} = loadB${q}(b, k, nj${j});`);
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn; j++) L.push(`    c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
    }
    L.push(`  }`);
  });
  storeTile(L, p, tm, tn);
  L.push(`}`);
  return {
    source: L.join("\n"),
    dispatch: [Math.ceil(p.n / (tn * wn)), Math.ceil(p.m / (tm * wm)), p.batch],
  };
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
