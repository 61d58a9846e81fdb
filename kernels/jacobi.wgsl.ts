/**
 * One round of the parallel one-sided (Hestenes) Jacobi method. The matrix lives in a buffer of `slots`
 * contiguous records of `stride` floats; the first `rows` floats of a record are a column of the matrix being
 * orthogonalised and the rest are carried along (the matching column of the accumulated rotation V). A round
 * pairs the record at position `i` with the one at `slots - 1 - i` (the circle method of round-robin
 * tournaments), rotates each pair so that their first `rows` entries become orthogonal, and writes the two
 * records to their positions for the next round in a second buffer: position 0 stays, positions 1..slots-1
 * move one step round the circle. After `slots - 1` rounds (one sweep) every pair has met once and every
 * record is back at its starting position, so no round index is needed and all rounds of all sweeps share one
 * shader, ping-ponging between two buffers.
 *
 * One workgroup handles one pair: each invocation accumulates a strided part of ‖x‖², ‖y‖² and xᵀy (reading
 * vec4s, so `rows` and `stride` must be multiples of 4), invocation 0 adds the partial sums (one barrier each
 * way) and computes the rotation, and all invocations then rotate and store. Each invocation loops
 * `(rows + stride) / (4·wg)` times per launch, far inside llvmpipe's loop budget. The sizes and the tolerance
 * come from a parameter buffer, so one compiled shader serves every matrix size.
 *
 * The rotation: with α = ‖x‖², β = ‖y‖², γ = xᵀy, ζ = (β − α)/(2γ), t = sign(ζ)/(|ζ| + √(1 + ζ²)),
 * c = 1/√(1 + t²), s = c·t and τ = s/(1 + c), the new pair is `(x − s(y + τx), y + s(x − τy))`, which equals
 * `(c·x − s·y, s·x + c·y)` in exact arithmetic. Rutishauser's form matters in float32: once t < 2⁻¹², c
 * rounds to exactly 1 and the textbook form grows every norm by t² per rotation, a bias that accumulated in V
 * to ‖VᵀV − I‖_F ≈ 5e-4 at n = 200 (against 2e-5 with this form, as good as float64 rotations stored in
 * float32). The rotation is skipped when either squared norm is at most the zero floor of binding 4 (a
 * numerically zero column, orthogonal to everything) or |γ| ≤ {@link JACOBI_EPS_ROTATE}·‖x‖‖y‖. A rotation
 * with |γ| > `tol`·‖x‖‖y‖ adds one to the counter in binding 2, so a sweep that leaves the counter at zero has
 * converged.
 *
 * The floor ({@link JACOBI_ZERO_REL}) is relative to the whole matrix because a column at the level of the
 * float32 rounding of the others has no direction of its own: every rotation with a large column x changes it
 * by about 2⁻²⁴‖x‖, its own size, so pairs of such columns kept rotating for sweeps after the rest had
 * converged (a rank-deficient matrix whose QR leaves its null space spread over the columns took 16 sweeps to
 * converge at n = 80 instead of 9).
 *
 * @module
 */

/** Squared column norms at or below this are treated as exactly zero (inputs are scaled to max |a| = 1). */
export const JACOBI_TINY = 1e-30;

/**
 * A column of W whose squared norm is at most this times ‖W‖_F² (or {@link JACOBI_TINY}) counts as zero: 2⁻²⁴‖W‖_F
 * is the size of rounding W to float32, so the float32 data does not determine a column that small (the QR and
 * the rotations leave the null space of a rank-deficient W at up to 0.45·2⁻²⁴‖W‖_F, measured at n = 80..256).
 */
export const JACOBI_ZERO_REL = 2 ** -48;

/** Pairs whose cosine is below this are left alone (it is below float32 rounding of the cosine itself). */
export const JACOBI_EPS_ROTATE = 2 ** -26;

/** Geometry of a Jacobi launch. */
export interface JacobiLayout {
  /** Entries of each record that enter the dot products (the matrix column). */
  readonly rows: number;
  /** Floats per record (rows + carried entries). */
  readonly stride: number;
  /** Number of records; must be even. */
  readonly slots: number;
}

/** Where the record at position `k` moves after a round (circle method; position 0 is fixed). */
export function nextSlot(k: number, slots: number): number {
  if (k === 0) return 0;
  return k === slots - 1 ? 1 : k + 1;
}

function checkLayout(p: JacobiLayout): void {
  if (p.slots < 2 || p.slots % 2 !== 0) {
    throw new RangeError(`jacobi: slots must be even and >= 2, got ${p.slots}`);
  }
  if (p.rows < 1 || p.stride < p.rows || p.rows % 4 !== 0 || p.stride % 4 !== 0) {
    throw new RangeError(
      `jacobi: need 1 <= rows <= stride, both multiples of 4, got rows ${p.rows}, stride ${p.stride}`,
    );
  }
  if (p.slots / 2 > 65535) throw new RangeError(`jacobi: ${p.slots} columns exceed the dispatch limit`);
}

/** Formats a number as a WGSL f32 literal. */
function f32(v: number): string {
  const s = String(Math.fround(v));
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
}

/**
 * WGSL of one round with `wg` invocations per workgroup (the same shader for every size). Bindings: 0 the
 * source records, 1 the destination records, 2 the rotation counter, 3 the parameters from {@link
 * jacobiParams}, 4 the zero floor (one f32: the larger of {@link JACOBI_TINY} and {@link JACOBI_ZERO_REL} times the squared
 * Frobenius norm of the columns).
 */
export function jacobiRoundWGSL(wg: number): string {
  return `// one-sided Jacobi round
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> cnt: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read> params: array<u32>;
@group(0) @binding(4) var<storage, read> zero_floor: array<f32>;
const WG: u32 = ${wg}u;
var<workgroup> red: array<f32, ${3 * wg}>;
var<workgroup> rot: vec2<f32>;
fn next_slot(k: u32, slots: u32) -> u32 {
  if (k == 0u) { return 0u; }
  if (k == slots - 1u) { return 1u; }
  return k + 1u;
}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ROWS4 = params[0];
  let STRIDE4 = params[1];
  let SLOTS = params[2];
  let TOL = bitcast<f32>(params[3]);
  let p = wid.x;
  let q = SLOTS - 1u - wid.x;
  let po = p * STRIDE4;
  let qo = q * STRIDE4;
  var a = 0.0;
  var b = 0.0;
  var g = 0.0;
  for (var i = lid; i < ROWS4; i = i + WG) {
    let x = src[po + i];
    let y = src[qo + i];
    a = a + dot(x, x);
    b = b + dot(y, y);
    g = g + dot(x, y);
  }
  red[lid] = a;
  red[WG + lid] = b;
  red[2u * WG + lid] = g;
  workgroupBarrier();
  if (lid == 0u) {
    var sa = 0.0;
    var sb = 0.0;
    var sg = 0.0;
    for (var k = 0u; k < WG; k = k + 1u) {
      sa = sa + red[k];
      sb = sb + red[WG + k];
      sg = sg + red[2u * WG + k];
    }
    var s = 0.0;
    var tau = 0.0;
    let scale = sqrt(sa) * sqrt(sb);
    let zero = zero_floor[0];
    if (sa > zero && sb > zero && abs(sg) > ${f32(JACOBI_EPS_ROTATE)} * scale) {
      let zeta = (sb - sa) / (2.0 * sg);
      var t: f32;
      if (abs(zeta) > 1e15) {
        t = 0.5 / zeta;
      } else {
        t = select(1.0, -1.0, zeta < 0.0) / (abs(zeta) + sqrt(1.0 + zeta * zeta));
      }
      let c = 1.0 / sqrt(1.0 + t * t);
      s = c * t;
      tau = s / (1.0 + c);
      if (abs(sg) > TOL * scale) {
        atomicAdd(&cnt[0], 1u);
      }
    }
    rot = vec2<f32>(s, tau);
  }
  workgroupBarrier();
  let s = rot.x;
  let tau = rot.y;
  let np = next_slot(p, SLOTS) * STRIDE4;
  let nq = next_slot(q, SLOTS) * STRIDE4;
  for (var i = lid; i < STRIDE4; i = i + WG) {
    let x = src[po + i];
    let y = src[qo + i];
    dst[np + i] = x - s * (y + tau * x);
    dst[nq + i] = y + s * (x - tau * y);
  }
}
`;
}

/** The parameter words of {@link jacobiRoundWGSL}: rows/4, stride/4, slots and the bits of the f32 `tol`. */
export function jacobiParams(p: JacobiLayout, tol: number): Uint32Array {
  checkLayout(p);
  const bits = new Uint32Array(new Float32Array([tol]).buffer)[0];
  return Uint32Array.from([p.rows / 4, p.stride / 4, p.slots, bits]);
}

/** Host twin of {@link jacobiRoundWGSL} (float64 arithmetic, float32 storage). */
export function jacobiRoundHost(
  p: JacobiLayout,
  tol: number,
): (buffers: (Float32Array | Int32Array | Uint32Array)[]) => void {
  checkLayout(p);
  const { rows, stride, slots } = p;
  const tolF = Math.fround(tol);
  return ([src, dst, cnt, _params, zeroFloor]) => {
    for (let w = 0; w < slots / 2; w++) {
      const po = w * stride;
      const qo = (slots - 1 - w) * stride;
      const rot = hostRotation(src, po, qo, rows, tolF, zeroFloor[0]);
      const s = rot?.s ?? 0;
      const tau = rot?.tau ?? 0;
      if (rot?.counts) cnt[0]++;
      const np = nextSlot(w, slots) * stride;
      const nq = nextSlot(slots - 1 - w, slots) * stride;
      for (let i = 0; i < stride; i++) {
        const x = src[po + i];
        const y = src[qo + i];
        dst[np + i] = x - s * (y + tau * x);
        dst[nq + i] = y + s * (x - tau * y);
      }
    }
  };
}

/**
 * One whole sweep (`slots − 1` rounds) on the host devices, as {@link jacobiRoundHost} applied round after round.
 * Bindings: 0 the source records, 1 and 2 the buffers the rounds ping-pong between (round 0 reads the source and
 * writes 1, odd rounds read 1 and write 2, even rounds after 0 read 2 and write 1, so the last round, an even one,
 * writes 1), 3 the rotation counter, 4 the parameters, 5 the zero floor, 6 the control words of the wasm form
 * (unused here). There is no WGSL form: WebGPU runs the rounds one launch each.
 */
export function jacobiSweepHost(
  p: JacobiLayout,
  tol: number,
): (buffers: (Float32Array | Int32Array | Uint32Array)[]) => void {
  const round = jacobiRoundHost(p, tol);
  return ([src, a, b, cnt, params, zeroFloor]) => {
    for (let r = 0; r < p.slots - 1; r++) {
      const from = r === 0 ? src : r % 2 === 1 ? a : b;
      round([from, r % 2 === 1 ? b : a, cnt, params, zeroFloor]);
    }
  };
}

/**
 * The rotation both host twins apply to the columns of `v` at `po` and `qo` (their first `n` entries), in float64:
 * with a = ‖p‖², b = ‖q‖², g = p·q, `s` and `tau = s / (1 + c)` of the rotation that makes them orthogonal, and
 * whether |g| > `tol`·‖p‖‖q‖ (a rotation that counts against convergence). Null when the pair needs none (a
 * squared norm at most `zero`, or g below {@link JACOBI_EPS_ROTATE}·‖p‖‖q‖).
 */
export function hostRotation(
  v: ArrayLike<number>,
  po: number,
  qo: number,
  n: number,
  tol: number,
  zero: number,
): { s: number; tau: number; counts: boolean } | null {
  let a = 0, b = 0, g = 0;
  for (let i = 0; i < n; i++) {
    const x = v[po + i];
    const y = v[qo + i];
    a += x * x;
    b += y * y;
    g += x * y;
  }
  const scale = Math.sqrt(a) * Math.sqrt(b);
  if (!(a > zero && b > zero && Math.abs(g) > JACOBI_EPS_ROTATE * scale)) return null;
  const zeta = (b - a) / (2 * g);
  const t = Math.abs(zeta) > 1e15
    ? 0.5 / zeta
    : (zeta < 0 ? -1 : 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
  const c = 1 / Math.sqrt(1 + t * t);
  const s = c * t;
  return { s, tau: s / (1 + c), counts: Math.abs(g) > tol * scale };
}

/** WGSL that sets the counter in binding 0 to zero (dispatch 1x1x1). */
export const COUNTER_RESET_WGSL = `// reset the Jacobi rotation counter
@group(0) @binding(0) var<storage, read_write> cnt: array<atomic<u32>>;
@compute @workgroup_size(1)
fn main() {
  atomicStore(&cnt[0], 0u);
}
`;

/** Host twin of {@link COUNTER_RESET_WGSL}. */
export function counterResetHost(buffers: (Float32Array | Int32Array | Uint32Array)[]): void {
  buffers[0][0] = 0;
}
