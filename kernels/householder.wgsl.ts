/**
 * Householder QR with LAPACK's conventions (geqrf + orgqr), on a column-major matrix: `cols` records of
 * `rows` floats, record j holding column j. Reflector k is `H_k = I − τ_k v vᵀ` with `v = [1; x]`, computed
 * like LAPACK's slarfg: for α = a_kk and ξ = ‖a_(k+1:, k)‖, ξ = 0 gives τ = 0 (H = I, R_kk = α); otherwise
 * β = −sign(α)·√(α² + ξ²) (with sign(0) = +), τ = (β − α)/β, x = a_(k+1:, k)/(α − β), R_kk = β. So R's
 * diagonal may be negative, exactly as in geqrf.
 *
 * H_k is orthogonal only when ξ is the norm of the x that is scaled into v. The shaders therefore sum the
 * squares scaled by the largest entry, as LAPACK's slassq does: a plain float32 sum of squares underflows once
 * a column's entries fall below about 1e-19 (repeated columns of a rank-deficient matrix leave residuals near
 * 1e-22), and τ then no longer matches v. Entries below the smallest normal float32 count as zero, in ξ and in
 * v alike, because WGSL lets a GPU flush them to zero in any operation; the host twins, which sum in float64
 * and need no scaling, follow the same rule so that every device builds the same reflectors.
 *
 * Launches (one submission, no read-back):
 * - {@link hhFirstWGSL} (1 workgroup) computes reflector 0.
 * - {@link hhStepWGSL}, dispatched with `cols − k − 1` workgroups for k = 0 .. K−2 (K = min(rows, cols)),
 *   applies reflector k to the columns right of k (one workgroup per column; the step index is read from
 *   `num_workgroups`). The workgroup of column k+1 then computes reflector k+1 from the column it has just
 *   updated (look-ahead), so each step is a single dispatch.
 * - {@link qInitWGSL} writes the first K columns of the identity, and {@link qStepWGSL}, dispatched with
 *   `K − k` workgroups for k = K−1 down to 0, applies H_k to them (backward accumulation, as in orgqr).
 * Each invocation loops about `rows / wg` times per pass, well inside llvmpipe's loop budget.
 *
 * The sizes come from a parameter buffer ({@link householderParams}), so one compiled shader per workgroup
 * size serves every matrix. With `guarded: true` every shader gets a last binding holding one u32; when it is
 * 0 the shader returns at once, so a factorisation can be queued and skipped on the GPU without a read-back.
 *
 * @module
 */

/** Geometry of a Householder factorisation (used by the host twins and {@link householderParams}). */
export interface HouseholderLayout {
  /** Rows of the matrix (floats per column record). */
  readonly rows: number;
  /** Columns of the matrix (records). */
  readonly cols: number;
  /** Whether the launches are guarded (see the module doc). */
  readonly guarded?: boolean;
}

/** What a compiled Householder shader depends on (the sizes come from the parameter buffer). */
export interface HouseholderVariant {
  /** Invocations per workgroup. */
  readonly wg: number;
  /** Adds a guard binding after the parameters (see the module doc). */
  readonly guarded?: boolean;
}

/** The parameter words of every Householder shader: rows, cols, K = min(rows, cols). */
export function householderParams(p: HouseholderLayout): Uint32Array {
  check(p);
  return Uint32Array.from([p.rows, p.cols, reflectorCount(p)]);
}

type HostBuffers = (Float32Array | Int32Array | Uint32Array)[];

/** Number of reflectors (and of columns of the thin Q): min(rows, cols). */
export function reflectorCount(p: HouseholderLayout): number {
  return Math.min(p.rows, p.cols);
}

function check(p: HouseholderLayout): void {
  if (p.rows < 1 || p.cols < 1) throw new RangeError(`householder: empty matrix ${p.rows}x${p.cols}`);
  if (p.cols > 65535) throw new RangeError(`householder: ${p.cols} columns exceed the dispatch limit 65535`);
}

function header(v: HouseholderVariant, bindings: string[]): string {
  const lines = [...bindings, "var<storage, read> params: array<u32>;"].map((b, i) =>
    `@group(0) @binding(${i}) ${b}`
  );
  if (v.guarded) {
    lines.push(`@group(0) @binding(${bindings.length + 1}) var<storage, read> guard: array<u32>;`);
  }
  lines.push(
    `const WG: u32 = ${v.wg}u;`,
    `const TINY: f32 = ${TINY_F32}f;`,
    `var<workgroup> red: array<f32, ${v.wg}>;`,
    `var<workgroup> red_scale: array<f32, ${v.wg}>;`,
    `var<workgroup> sh_a: f32;`,
    `var<workgroup> sh_b: f32;`,
    `var<workgroup> sh_c: f32;`,
    `var<workgroup> gflag: u32;`,
  );
  return lines.join("\n");
}

/** The smallest normal float32: smaller entries count as zero in a reflector (see the module doc). */
export const TINY_F32 = 1.17549435e-38;

/**
 * WGSL adding one entry to a lane's scaled sum of squares `acc = (scale, ssq)`, which stands for ssq·scale²
 * with scale the largest |entry| so far (slassq's update): no square of a small entry underflows.
 */
const ADD_SQUARE = `fn add_square(x: f32, acc: vec2<f32>) -> vec2<f32> {
  let a = abs(x);
  if (a < TINY) { return acc; }
  if (a > acc.x) {
    let r = acc.x / a;
    return vec2<f32>(a, fma(acc.y * r, r, 1.0));
  }
  let r = a / acc.x;
  return vec2<f32>(acc.x, fma(r, r, acc.y));
}`;

/** Reads the sizes, then exits early on a zero guard (in workgroup-uniform control flow). */
function prologue(v: HouseholderVariant): string {
  const lines = [`  let ROWS = params[0];`, `  let COLS = params[1];`, `  let KREF = params[2];`];
  if (v.guarded) {
    lines.push(
      `  if (lid == 0u) { gflag = guard[0]; }`,
      `  if (workgroupUniformLoad(&gflag) == 0u) { return; }`,
    );
  }
  return lines.join("\n");
}

/**
 * Finishes reflector `r` of column record `co` inside a workgroup: each invocation holds `acc` (its part of
 * the squared norm below the diagonal, as {@link ADD_SQUARE} keeps it) and `sh_a` holds α. Lane 0 merges the
 * parts into ξ and computes β = −sign(α)·hypot(α, ξ) (scaled too), τ and the scale; then every lane rewrites
 * the rows it owns (`i = o + lid + t·WG`), the lane owning row r storing β.
 */
function finishReflector(r: string, o: string, co: string): string {
  return `    red_scale[lid] = acc.x;
    red[lid] = acc.y;
    workgroupBarrier();
    if (lid == 0u) {
      var scale = 0.0;
      var ssq = 0.0;
      for (var t = 0u; t < WG; t = t + 1u) {
        let st = red_scale[t];
        if (st > scale) {
          let q = scale / st;
          ssq = fma(ssq * q, q, red[t]);
          scale = st;
        } else if (st > 0.0) {
          let q = st / scale;
          ssq = fma(red[t] * q, q, ssq);
        }
      }
      let alpha = sh_a;
      var tau = 0.0;
      var beta = alpha;
      var scal = 1.0;
      if (scale > 0.0) {
        let xi = scale * sqrt(ssq);
        let big = max(abs(alpha), xi);
        let ra = alpha / big;
        let rx = xi / big;
        let nrm = big * sqrt(fma(ra, ra, rx * rx));
        beta = select(-nrm, nrm, alpha < 0.0);
        tau = (beta - alpha) / beta;
        scal = 1.0 / (alpha - beta);
      }
      taus[${r}] = tau;
      sh_b = beta;
      sh_c = scal;
    }
    workgroupBarrier();
    let beta = sh_b;
    let scal = sh_c;
    for (var i = ${o} + lid; i < ROWS; i = i + WG) {
      if (i == ${r}) {
        C[${co} + i] = beta;
      } else if (i > ${r}) {
        let x = C[${co} + i];
        C[${co} + i] = select(0.0, x * scal, abs(x) >= TINY);
      }
    }`;
}

/** Host version of the reflector of column `j` (rows from `j`), in place. */
function reflectHost(c: Float32Array, taus: Float32Array, rows: number, j: number): void {
  const co = j * rows;
  // In float64 the square of a float32 cannot underflow, so the plain sum is exact enough; entries below
  // TINY_F32 count as zero as in the shaders.
  let xn2 = 0;
  for (let i = j + 1; i < rows; i++) {
    if (Math.abs(c[co + i]) >= TINY_F32) xn2 += c[co + i] * c[co + i];
  }
  const alpha = c[co + j];
  if (xn2 > 0) {
    const nrm = Math.sqrt(alpha * alpha + xn2);
    const beta = alpha < 0 ? nrm : -nrm;
    taus[j] = (beta - alpha) / beta;
    const scal = 1 / (alpha - beta);
    c[co + j] = beta;
    for (let i = j + 1; i < rows; i++) c[co + i] = Math.abs(c[co + i]) >= TINY_F32 ? c[co + i] * scal : 0;
  } else {
    taus[j] = 0;
  }
}

/** Applies reflector k (stored in column record k of `c`) to record `j` of `x` (rows from k). */
function applyHost(
  c: Float32Array,
  taus: Float32Array,
  x: Float32Array,
  rows: number,
  k: number,
  j: number,
): void {
  const vo = k * rows;
  const xo = j * rows;
  let w = x[xo + k];
  for (let i = k + 1; i < rows; i++) w += c[vo + i] * x[xo + i];
  const tw = taus[k] * w;
  x[xo + k] -= tw;
  for (let i = k + 1; i < rows; i++) x[xo + i] -= tw * c[vo + i];
}

function guardHost(p: HouseholderLayout, b: HostBuffers, index: number): boolean {
  return !p.guarded || b[index][0] !== 0;
}

/** WGSL computing reflector 0. Bindings: 0 matrix (read_write), 1 τ (read_write), 2 parameters, [3 guard]. */
export function hhFirstWGSL(v: HouseholderVariant): string {
  return `// Householder QR: first reflector
${header(v, ["var<storage, read_write> C: array<f32>;", "var<storage, read_write> taus: array<f32>;"])}
${ADD_SQUARE}
@compute @workgroup_size(${v.wg})
fn main(@builtin(local_invocation_index) lid: u32) {
${prologue(v)}
  var acc = vec2<f32>(0.0, 0.0);
  for (var i = lid; i < ROWS; i = i + WG) {
    let x = C[i];
    if (i == 0u) { sh_a = x; } else { acc = add_square(x, acc); }
  }
${finishReflector("0u", "0u", "0u")}
}
`;
}

/** Host twin of {@link hhFirstWGSL}. */
export function hhFirstHost(p: HouseholderLayout): (b: HostBuffers) => void {
  check(p);
  return (b) => {
    if (!guardHost(p, b, 3)) return;
    reflectHost(b[0] as Float32Array, b[1] as Float32Array, p.rows, 0);
  };
}

/**
 * WGSL of step k (k = cols − 1 − num_workgroups.x): applies reflector k to columns k+1.. and computes
 * reflector k+1. Bindings: 0 matrix (read_write), 1 τ (read_write), 2 parameters, [3 guard].
 */
export function hhStepWGSL(v: HouseholderVariant): string {
  return `// Householder QR: apply reflector k and compute reflector k+1
${header(v, ["var<storage, read_write> C: array<f32>;", "var<storage, read_write> taus: array<f32>;"])}
${ADD_SQUARE}
@compute @workgroup_size(${v.wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
${prologue(v)}
  let k = COLS - 1u - nwg.x;
  let j = k + 1u + wid.x;
  let vo = k * ROWS;
  let co = j * ROWS;
  var part = 0.0;
  for (var i = k + lid; i < ROWS; i = i + WG) {
    let v = select(C[vo + i], 1.0, i == k);
    part = fma(v, C[co + i], part);
  }
  red[lid] = part;
  workgroupBarrier();
  if (lid == 0u) {
    var w = 0.0;
    for (var t = 0u; t < WG; t = t + 1u) { w = w + red[t]; }
    sh_a = taus[k] * w;
  }
  workgroupBarrier();
  let tw = sh_a;
  workgroupBarrier();
  // Only workgroup 0 (column k+1) builds the next reflector; the others skip the norm.
  let next = wid.x == 0u;
  var acc = vec2<f32>(0.0, 0.0);
  for (var i = k + lid; i < ROWS; i = i + WG) {
    let v = select(C[vo + i], 1.0, i == k);
    let nv = C[co + i] - tw * v;
    C[co + i] = nv;
    if (i == k + 1u) { sh_a = nv; }
    if (next && i > k + 1u) { acc = add_square(nv, acc); }
  }
  if (wid.x == 0u && k + 1u < KREF) {
${finishReflector("j", "k", "co")}
  }
}
`;
}

/** Host twin of {@link hhStepWGSL}; `k` is the step (the WGSL reads it from the dispatch size). */
export function hhStepHost(p: HouseholderLayout, k: number): (b: HostBuffers) => void {
  check(p);
  const kref = reflectorCount(p);
  return (b) => {
    if (!guardHost(p, b, 3)) return;
    const c = b[0] as Float32Array;
    const taus = b[1] as Float32Array;
    for (let j = k + 1; j < p.cols; j++) applyHost(c, taus, c, p.rows, k, j);
    if (k + 1 < kref) reflectHost(c, taus, p.rows, k + 1);
  };
}

/** Dispatch grid for `n` elementwise invocations of `wg` lanes (2-D past 65,535 workgroups). */
export function grid(n: number, wg: number): [number, number, number] {
  const groups = Math.max(1, Math.ceil(n / wg));
  if (groups <= 65535) return [groups, 1, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y, 1];
}

/** WGSL writing the first K columns of the identity (K records of `rows`). Bindings: Q, params, guard. */
export function qInitWGSL(v: HouseholderVariant): string {
  const guard = v.guarded ? `@group(0) @binding(2) var<storage, read> guard: array<u32>;` : "";
  return `// Householder QR: identity columns for Q
@group(0) @binding(0) var<storage, read_write> Q: array<f32>;
@group(0) @binding(1) var<storage, read> params: array<u32>;
${guard}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  ${v.guarded ? "if (guard[0] == 0u) { return; }" : ""}
  let rows = params[0];
  let idx = g.x + g.y * nwg.x * 64u;
  if (idx >= rows * params[2]) { return; }
  let j = idx / rows;
  let i = idx % rows;
  Q[idx] = select(0.0, 1.0, i == j);
}
`;
}

/** Host twin of {@link qInitWGSL}. */
export function qInitHost(p: HouseholderLayout): (b: HostBuffers) => void {
  check(p);
  const kref = reflectorCount(p);
  return (b) => {
    if (!guardHost(p, b, 2)) return;
    const q = b[0];
    q.fill(0, 0, p.rows * kref);
    for (let j = 0; j < kref; j++) q[j * p.rows + j] = 1;
  };
}

/**
 * WGSL of one backward accumulation step k (k = K − num_workgroups.x): Q[:, k:] ← H_k Q[:, k:].
 * Bindings: 0 factored matrix (read), 1 τ (read), 2 Q (read_write), 3 parameters, [4 guard].
 */
export function qStepWGSL(v: HouseholderVariant): string {
  return `// Householder QR: apply reflector k to Q
${
    header(v, [
      "var<storage, read> C: array<f32>;",
      "var<storage, read> taus: array<f32>;",
      "var<storage, read_write> Q: array<f32>;",
    ])
  }
@compute @workgroup_size(${v.wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
${prologue(v)}
  let k = KREF - nwg.x;
  let j = k + wid.x;
  let vo = k * ROWS;
  let qo = j * ROWS;
  var part = 0.0;
  for (var i = k + lid; i < ROWS; i = i + WG) {
    let v = select(C[vo + i], 1.0, i == k);
    part = fma(v, Q[qo + i], part);
  }
  red[lid] = part;
  workgroupBarrier();
  if (lid == 0u) {
    var w = 0.0;
    for (var t = 0u; t < WG; t = t + 1u) { w = w + red[t]; }
    sh_a = taus[k] * w;
  }
  workgroupBarrier();
  let tw = sh_a;
  for (var i = k + lid; i < ROWS; i = i + WG) {
    let v = select(C[vo + i], 1.0, i == k);
    Q[qo + i] = Q[qo + i] - tw * v;
  }
}
`;
}

/** Host twin of {@link qStepWGSL} for step `k`. */
export function qStepHost(p: HouseholderLayout, k: number): (b: HostBuffers) => void {
  check(p);
  const kref = reflectorCount(p);
  return (b) => {
    if (!guardHost(p, b, 4)) return;
    const c = b[0] as Float32Array;
    const taus = b[1] as Float32Array;
    const q = b[2] as Float32Array;
    for (let j = k; j < kref; j++) applyHost(c, taus, q, p.rows, k, j);
  };
}
