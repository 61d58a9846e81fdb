/**
 * The whole one-sided (Hestenes) Jacobi SVD of a small matrix in one kernel: one workgroup, one invocation per pair
 * of columns, every sweep and every round inside the shader (a barrier between rounds instead of a launch), and a
 * convergence test after each sweep that stops the loop without any read-back. For a matrix of at most
 * {@link SOLVE_MAX_COLS} columns this replaces `(cols − 1) · sweeps` launches of `jacobi.wgsl.ts` (693 at
 * 64 columns) and the Householder preconditioning with one launch.
 *
 * Records, `slots` of `stride` floats (`stride = p4(rows) + p4(cols) + 4`, `p4` rounding up to a multiple of 4):
 * `[w_j (rows, zero-padded) | v_j (cols, zero-padded) | σ_j, 0, 0, 0]`. The input holds the columns of W and the
 * identity; the output holds `u_j = b_j / σ_j`, `v_j` and `σ_j = ‖b_j‖`, where `W V = B` has orthogonal columns,
 * so `W = U diag(σ) Vᵀ` (unsorted). V is a product of rotations and orthonormal by construction. A column whose
 * `σ²` is at most `4 ·` {@link JACOBI_TINY} carries no direction: it is replaced by a fixed pseudo-random vector
 * orthonormalised against the other columns of U (classical Gram–Schmidt, twice), so U is orthonormal whatever
 * the rank.
 *
 * Round `r` of a sweep pairs the records at circle positions `p` and `slots − 1 − p`; the record at position
 * `p > 0` in round `r` is `(p − 1 + r) mod (slots − 1) + 1` (position 0 holds record 0), so records never move and
 * no second buffer is needed. The rotation is that of `jacobi.wgsl.ts` (Rutishauser's form, the same skip and
 * counting rules). Dot products and rotations take four vec4s per loop iteration; one shader serves every size
 * (the sizes come from a parameter buffer), and one invocation runs `(slots − 1) · sweeps · (rows + 2·cols) / 16` loop
 * iterations at most, plus the completion's; {@link solveSweepBudget} keeps the total inside llvmpipe's 65,535
 * (see DESIGN.md §1).
 *
 * @module
 */
import { WGSL_HELPERS } from "./helpers.wgsl.ts";
import { hostRotation, JACOBI_EPS_ROTATE, JACOBI_TINY } from "./jacobi.wgsl.ts";
import { randUniform } from "../lib/ir/rng.ts";

/** Most columns the one-kernel solver takes (one invocation per pair, 32 pairs). */
export const SOLVE_MAX_COLS = 64;
/** Most rows the one-kernel solver takes (longer columns leave too few sweeps inside the loop budget). */
export const SOLVE_MAX_ROWS = 128;
/** Seed of the pseudo-random vectors that complete U where a column is numerically zero. */
export const SOLVE_FILL_SEED = 0x51d0_c0de;

/** Geometry and stopping rule of one solve. */
export interface SolveLayout {
  /** Rows of W (length of each column). */
  readonly rows: number;
  /** Columns of W. */
  readonly cols: number;
  /** Most sweeps (the loop stops earlier once a sweep makes no rotation above `tol`). */
  readonly sweeps: number;
  /** Convergence threshold on |cos| between two columns. */
  readonly tol: number;
}

/** Sizes derived from a layout: the column and V parts padded to multiples of 16 floats, the record stride. */
export function solveShape(p: SolveLayout): { p4r: number; p4c: number; stride: number; slots: number } {
  if (!Number.isInteger(p.rows) || !Number.isInteger(p.cols) || p.cols < 1 || p.rows < p.cols) {
    throw new RangeError(`jacobi solve: need rows >= cols >= 1, got ${p.rows} x ${p.cols}`);
  }
  if (p.cols > SOLVE_MAX_COLS || p.rows > SOLVE_MAX_ROWS) {
    throw new RangeError(
      `jacobi solve: at most ${SOLVE_MAX_ROWS} x ${SOLVE_MAX_COLS}, got ${p.rows} x ${p.cols}`,
    );
  }
  if (!Number.isInteger(p.sweeps) || p.sweeps < 0) {
    throw new RangeError(`jacobi solve: bad sweeps ${p.sweeps}`);
  }
  // Padded to whole groups of four vec4s: the loops below take four vec4s per iteration.
  const p4r = Math.ceil(p.rows / 16) * 16;
  const p4c = Math.ceil(p.cols / 16) * 16;
  return { p4r, p4c, stride: p4r + p4c + 4, slots: p.cols + (p.cols % 2) };
}

function f32(v: number): string {
  const s = String(Math.fround(v));
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
}

/** Invocations of the solve's one workgroup: one per pair of at most {@link SOLVE_MAX_COLS} columns. */
const WG = SOLVE_MAX_COLS / 2;

/**
 * The parameter words of {@link JACOBI_SOLVE_WGSL}: rows, the column part, V part and record in vec4s, slots,
 * columns, most sweeps and the bits of the f32 `tol`.
 */
export function jacobiSolveParams(p: SolveLayout): Uint32Array {
  const { p4r, p4c, stride, slots } = solveShape(p);
  const bits = new Uint32Array(new Float32Array([p.tol]).buffer)[0];
  return Uint32Array.from([p.rows, p4r / 4, p4c / 4, stride / 4, slots, p.cols, p.sweeps, bits]);
}

// A loop over `n` vec4s (a multiple of 4) at four per iteration, with `body(offset)` for each of the four.
function loop4(ind: string, n: string, body: (i: string) => string): string[] {
  return [
    `${ind}for (var i = 0u; i < ${n}; i = i + 4u) {`,
    ...[0, 1, 2, 3].map((e) => `${ind}  ${body(`i + ${e}u`)}`),
    `${ind}}`,
  ];
}

/**
 * The solve's shader, the same for every size (the sizes come from the parameter buffer and are made uniform
 * with `workgroupUniformLoad`). Bindings: 0 the output records (read-write), 1 the input records, 2 the
 * parameters of {@link jacobiSolveParams}. Dispatch one workgroup.
 */
export const JACOBI_SOLVE_WGSL: string = [
  `// one-sided Jacobi SVD of a small matrix in one workgroup`,
  WGSL_HELPERS.rand,
  `@group(0) @binding(0) var<storage, read_write> rec: array<vec4<f32>>;`,
  `@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;`,
  `@group(0) @binding(2) var<storage, read> params: array<u32>;`,
  `var<workgroup> prm: array<u32, 8>;`,
  `var<workgroup> rotated: atomic<u32>;`,
  `var<workgroup> again: u32;`,
  `var<workgroup> bad: array<u32, ${SOLVE_MAX_COLS}>;`,
  `var<workgroup> done: array<u32, ${SOLVE_MAX_COLS}>;`,
  `var<workgroup> coef: array<f32, ${SOLVE_MAX_COLS}>;`,
  `var<workgroup> part: array<f32, ${WG}>;`,
  `var<workgroup> scale: f32;`,
  `fn at(pos: u32, r: u32, slots: u32) -> u32 {`,
  `  if (pos == 0u) { return 0u; }`,
  `  return (pos - 1u + r) % (slots - 1u) + 1u;`,
  `}`,
  `@compute @workgroup_size(${WG})`,
  `fn main(@builtin(local_invocation_index) lid: u32) {`,
  `  if (lid < 8u) { prm[lid] = params[lid]; }`,
  `  let ROWS = workgroupUniformLoad(&prm[0]);`,
  `  let R4 = workgroupUniformLoad(&prm[1]);`,
  `  let C4 = workgroupUniformLoad(&prm[2]);`,
  `  let S4 = workgroupUniformLoad(&prm[3]);`,
  `  let SLOTS = workgroupUniformLoad(&prm[4]);`,
  `  let COLS = workgroupUniformLoad(&prm[5]);`,
  `  let SWEEPS = workgroupUniformLoad(&prm[6]);`,
  `  let TOL = bitcast<f32>(workgroupUniformLoad(&prm[7]));`,
  `  let PAIRS = SLOTS / 2u;`,
  `  for (var i = lid; i < SLOTS * S4; i = i + ${WG}u) { rec[i] = src[i]; }`,
  `  storageBarrier();`,
  `  for (var sweep = 0u; sweep < SWEEPS; sweep = sweep + 1u) {`,
  `    if (lid == 0u) { atomicStore(&rotated, 0u); }`,
  `    workgroupBarrier();`,
  `    for (var r = 0u; r < SLOTS - 1u; r = r + 1u) {`,
  `      if (lid < PAIRS) {`,
  `        let po = at(lid, r, SLOTS) * S4;`,
  `        let qo = at(SLOTS - 1u - lid, r, SLOTS) * S4;`,
  `        var a = 0.0;`,
  `        var b = 0.0;`,
  `        var g = 0.0;`,
  ...loop4(
    "        ",
    "R4",
    (i) =>
      `{ let x = rec[po + ${i}]; let y = rec[qo + ${i}]; a = a + dot(x, x); b = b + dot(y, y); g = g + dot(x, y); }`,
  ),
  `        let nrm = sqrt(a) * sqrt(b);`,
  `        if (a > ${f32(JACOBI_TINY)} && b > ${f32(JACOBI_TINY)} && abs(g) > ${
    f32(JACOBI_EPS_ROTATE)
  } * nrm) {`,
  `          let zeta = (b - a) / (2.0 * g);`,
  `          var t: f32;`,
  `          if (abs(zeta) > 1e15) {`,
  `            t = 0.5 / zeta;`,
  `          } else {`,
  `            t = select(1.0, -1.0, zeta < 0.0) / (abs(zeta) + sqrt(1.0 + zeta * zeta));`,
  `          }`,
  `          let c = 1.0 / sqrt(1.0 + t * t);`,
  `          let s = c * t;`,
  `          let tau = s / (1.0 + c);`,
  `          if (abs(g) > TOL * nrm) { atomicAdd(&rotated, 1u); }`,
  ...loop4(
    "          ",
    "R4 + C4",
    (i) =>
      `{ let x = rec[po + ${i}]; let y = rec[qo + ${i}]; ` +
      `rec[po + ${i}] = x - s * (y + tau * x); rec[qo + ${i}] = y + s * (x - tau * y); }`,
  ),
  `        }`,
  `      }`,
  `      storageBarrier();`,
  `    }`,
  `    workgroupBarrier();`,
  `    if (lid == 0u) { again = atomicLoad(&rotated); }`,
  `    if (workgroupUniformLoad(&again) == 0u) { break; }`,
  `  }`,
  // σ and the normalised columns (each invocation owns records lid and lid + WG).
  `  for (var j = lid; j < SLOTS; j = j + ${WG}u) {`,
  `    let o = j * S4;`,
  `    var n2 = 0.0;`,
  ...loop4("    ", "R4", (i) => `{ let x = rec[o + ${i}]; n2 = n2 + dot(x, x); }`),
  `    let sig = sqrt(n2);`,
  `    let good = n2 > ${f32(4 * JACOBI_TINY)};`,
  `    let inv = select(0.0, 1.0 / sig, good);`,
  ...loop4("    ", "R4", (i) => `rec[o + ${i}] = rec[o + ${i}] * inv;`),
  `    rec[o + S4 - 1u] = vec4<f32>(sig, 0.0, 0.0, 0.0);`,
  `    bad[j] = select(1u, 0u, good || j >= COLS);`,
  `    done[j] = select(0u, 1u, good && j < COLS);`,
  `  }`,
  `  storageBarrier();`,
  `  workgroupBarrier();`,
  // Completion: each numerically zero column becomes a pseudo-random unit vector orthogonal to the others.
  `  for (var j = 0u; j < COLS; j = j + 1u) {`,
  `    if (workgroupUniformLoad(&bad[j]) == 0u) { continue; }`,
  `    let o = j * S4;`,
  `    for (var q = lid; q < R4; q = q + ${WG}u) {`,
  `      var w = vec4<f32>(0.0);`,
  `      for (var e = 0u; e < 4u; e = e + 1u) {`,
  `        let row = q * 4u + e;`,
  `        if (row < ROWS) { w[e] = rand_(${SOLVE_FILL_SEED}u, j * ROWS + row) - 0.5; }`,
  `      }`,
  `      rec[o + q] = w;`,
  `    }`,
  `    storageBarrier();`,
  `    for (var twice = 0u; twice < 2u; twice = twice + 1u) {`,
  `      for (var k = lid; k < SLOTS; k = k + ${WG}u) {`,
  `        var cf = 0.0;`,
  `        if (done[k] != 0u) {`,
  `          let ko = k * S4;`,
  ...loop4("          ", "R4", (i) => `cf = cf + dot(rec[ko + ${i}], rec[o + ${i}]);`),
  `        }`,
  `        coef[k] = cf;`,
  `      }`,
  `      workgroupBarrier();`,
  `      for (var q = lid; q < R4; q = q + ${WG}u) {`,
  `        var w = rec[o + q];`,
  `        for (var k = 0u; k < SLOTS; k = k + 1u) { w = w - coef[k] * rec[k * S4 + q]; }`,
  `        rec[o + q] = w;`,
  `      }`,
  `      storageBarrier();`,
  `      workgroupBarrier();`,
  `    }`,
  `    var mine = 0.0;`,
  `    for (var q = lid; q < R4; q = q + ${WG}u) { let w = rec[o + q]; mine = mine + dot(w, w); }`,
  `    part[lid] = mine;`,
  `    workgroupBarrier();`,
  `    if (lid == 0u) {`,
  `      var n2 = 0.0;`,
  `      for (var k = 0u; k < ${WG}u; k = k + 1u) { n2 = n2 + part[k]; }`,
  `      scale = 1.0 / sqrt(n2);`,
  `      done[j] = 1u;`,
  `    }`,
  `    workgroupBarrier();`,
  `    for (var q = lid; q < R4; q = q + ${WG}u) { rec[o + q] = rec[o + q] * scale; }`,
  `    storageBarrier();`,
  `  }`,
  `}`,
].join("\n");

/**
 * Host twin of {@link JACOBI_SOLVE_WGSL} for one layout, over `[output records, input records, parameters]`
 * (float64 arithmetic, values stored in the arrays' own precision), with the same ordering, rotations, stopping
 * rule and completion.
 */
export function jacobiSolveHost(
  p: SolveLayout,
): (buffers: (Float32Array | Int32Array | Uint32Array)[]) => void {
  const { p4r, stride, slots } = solveShape(p);
  const tol = Math.fround(p.tol);
  const at = (pos: number, r: number) => (pos === 0 ? 0 : ((pos - 1 + r) % (slots - 1)) + 1);
  return ([rec, src]) => {
    rec.set(src.subarray(0, slots * stride));
    for (let sweep = 0; sweep < p.sweeps; sweep++) {
      let rotated = 0;
      for (let r = 0; r < slots - 1; r++) {
        for (let w = 0; w < slots / 2; w++) {
          const po = at(w, r) * stride;
          const qo = at(slots - 1 - w, r) * stride;
          const rot = hostRotation(rec, po, qo, p4r, tol, JACOBI_TINY);
          if (rot === null) continue;
          const { s, tau } = rot;
          if (rot.counts) rotated++;
          for (let i = 0; i < stride - 4; i++) {
            const x = rec[po + i];
            const y = rec[qo + i];
            rec[po + i] = x - s * (y + tau * x);
            rec[qo + i] = y + s * (x - tau * y);
          }
        }
      }
      if (rotated === 0) break;
    }
    const done = new Array<boolean>(slots).fill(false);
    const bad: number[] = [];
    for (let j = 0; j < slots; j++) {
      const o = j * stride;
      let n2 = 0;
      for (let i = 0; i < p4r; i++) n2 += rec[o + i] * rec[o + i];
      const sig = Math.sqrt(n2);
      const good = n2 > 4 * JACOBI_TINY;
      for (let i = 0; i < p4r; i++) rec[o + i] = good ? rec[o + i] / sig : 0;
      rec.fill(0, o + stride - 4, o + stride);
      rec[o + stride - 4] = sig;
      if (j < p.cols) {
        if (good) done[j] = true;
        else bad.push(j);
      }
    }
    for (const j of bad) {
      const o = j * stride;
      for (let i = 0; i < p4r; i++) {
        rec[o + i] = i < p.rows ? randUniform(SOLVE_FILL_SEED, j * p.rows + i) - 0.5 : 0;
      }
      for (let pass = 0; pass < 2; pass++) {
        const coef = new Array<number>(slots).fill(0);
        for (let k = 0; k < slots; k++) {
          if (!done[k]) continue;
          let cf = 0;
          for (let i = 0; i < p4r; i++) cf += rec[k * stride + i] * rec[o + i];
          coef[k] = cf;
        }
        for (let i = 0; i < p4r; i++) {
          let w = rec[o + i];
          for (let k = 0; k < slots; k++) w -= coef[k] * rec[k * stride + i];
          rec[o + i] = w;
        }
      }
      let n2 = 0;
      for (let i = 0; i < p4r; i++) n2 += rec[o + i] * rec[o + i];
      const inv = 1 / Math.sqrt(n2);
      for (let i = 0; i < p4r; i++) rec[o + i] *= inv;
      done[j] = true;
    }
  };
}

/**
 * Most sweeps a solve of this size may run within `budget` loop iterations per invocation (llvmpipe stops every
 * loop at 65,535 in total, silently): the copy, the completion's worst case (every column zero) and, per sweep,
 * `slots − 1` rounds of the dot and rotation loops.
 */
export function solveSweepBudget(rows: number, cols: number, budget: number): number {
  const { p4r, p4c, stride, slots } = solveShape({ rows, cols, sweeps: 0, tol: 0 });
  const wg = WG;
  const r4 = p4r / 4;
  const perRound = 1 + r4 / 4 + (r4 + p4c / 4) / 4;
  const copy = Math.ceil((slots * stride) / 4 / wg);
  const perColumn = Math.ceil(r4 / wg) * (2 + 2 * slots + 2) + 2 * Math.ceil(slots / wg) * (1 + r4 / 4) + wg +
    4;
  const fixed = copy + 2 * Math.ceil(slots / wg) * (1 + r4 / 4) + cols * perColumn;
  return Math.max(0, Math.floor((budget - fixed) / ((slots - 1) * perRound + 2)));
}

/** The launch of one solve: one workgroup. */
export const SOLVE_DISPATCH: readonly [number, number, number] = [1, 1, 1];
