/**
 * Float64 host reference implementations for the linear-algebra tests: dense row-major matrices as
 * `{ rows, cols, data: Float64Array }`, Householder QR with LAPACK's sign convention, one-sided Jacobi SVD,
 * cyclic Jacobi for symmetric eigenproblems, test-matrix generators with prescribed spectra, and principal
 * angles between subspaces.
 */
import type { TestRng } from "../_helpers.ts";

/** A dense row-major float64 matrix. */
export interface M64 {
  rows: number;
  cols: number;
  data: Float64Array;
}

/** A matrix from row-major values. */
export function mat(rows: number, cols: number, data: ArrayLike<number>): M64 {
  if (data.length !== rows * cols) throw new Error(`mat: ${data.length} values for ${rows}x${cols}`);
  return { rows, cols, data: Float64Array.from(data) };
}

/** The zero matrix. */
export function zerosM(rows: number, cols: number): M64 {
  return { rows, cols, data: new Float64Array(rows * cols) };
}

/** The n×n identity. */
export function identity(n: number): M64 {
  const m = zerosM(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/** Element (i, j). */
export function at(a: M64, i: number, j: number): number {
  return a.data[i * a.cols + j];
}

/** Transpose. */
export function transpose(a: M64): M64 {
  const t = zerosM(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) {
    for (let j = 0; j < a.cols; j++) t.data[j * a.rows + i] = a.data[i * a.cols + j];
  }
  return t;
}

/** Matrix product. */
export function matmul(a: M64, b: M64): M64 {
  if (a.cols !== b.rows) throw new Error(`matmul: ${a.rows}x${a.cols} by ${b.rows}x${b.cols}`);
  const c = zerosM(a.rows, b.cols);
  for (let i = 0; i < a.rows; i++) {
    for (let k = 0; k < a.cols; k++) {
      const v = a.data[i * a.cols + k];
      if (v === 0) continue;
      for (let j = 0; j < b.cols; j++) c.data[i * b.cols + j] += v * b.data[k * b.cols + j];
    }
  }
  return c;
}

/** `a − b`. */
export function sub(a: M64, b: M64): M64 {
  return { rows: a.rows, cols: a.cols, data: a.data.map((v, i) => v - b.data[i]) };
}

/** Frobenius norm. */
export function fro(a: M64): number {
  let s = 0;
  for (const v of a.data) s += v * v;
  return Math.sqrt(s);
}

/** Largest absolute entry. */
export function maxAbs(a: M64): number {
  let m = 0;
  for (const v of a.data) m = Math.max(m, Math.abs(v));
  return m;
}

/** Columns [c0, c1) of a. */
export function colsOf(a: M64, c0: number, c1: number): M64 {
  const out = zerosM(a.rows, c1 - c0);
  for (let i = 0; i < a.rows; i++) {
    for (let j = c0; j < c1; j++) out.data[i * (c1 - c0) + j - c0] = at(a, i, j);
  }
  return out;
}

/** a · diag(d) (scales column j by d[j]). */
export function scaleCols(a: M64, d: ArrayLike<number>): M64 {
  return { rows: a.rows, cols: a.cols, data: a.data.map((v, i) => v * d[i % a.cols]) };
}

/** ‖AᵀA − I‖_F: how far the columns are from orthonormal. */
export function orthError(a: M64): number {
  return fro(sub(matmul(transpose(a), a), identity(a.cols)));
}

/** A Gaussian matrix from the test generator. */
export function gaussian(rng: TestRng, rows: number, cols: number, scale = 1): M64 {
  return { rows, cols, data: Float64Array.from({ length: rows * cols }, () => rng.normal() * scale) };
}

/** The matrix rounded to float32 (what a tensor made from it holds). */
export function toF32(a: M64): Float32Array {
  return Float32Array.from(a.data);
}

/** A matrix from float32 data read back from a tensor. */
export function fromF32(rows: number, cols: number, data: ArrayLike<number>): M64 {
  return mat(rows, cols, data);
}

/**
 * Householder QR with LAPACK's conventions (geqrf/orgqr): thin Q (m×k), R (k×n), k = min(m, n);
 * β = −sign(α)·‖[α; x]‖ (sign(0) = +), τ = 0 and R_kk = α when x = 0.
 */
export function householderQR(a: M64): { q: M64; r: M64 } {
  const m = a.rows, n = a.cols, k = Math.min(m, n);
  const w = Float64Array.from(a.data);
  const vs: Float64Array[] = [];
  const taus: number[] = [];
  for (let j = 0; j < k; j++) {
    let xn2 = 0;
    for (let i = j + 1; i < m; i++) xn2 += w[i * n + j] ** 2;
    const alpha = w[j * n + j];
    const v = new Float64Array(m);
    v[j] = 1;
    let tau = 0;
    if (xn2 > 0) {
      const nrm = Math.sqrt(alpha * alpha + xn2);
      const beta = alpha < 0 ? nrm : -nrm;
      tau = (beta - alpha) / beta;
      for (let i = j + 1; i < m; i++) v[i] = w[i * n + j] / (alpha - beta);
      w[j * n + j] = beta;
      for (let i = j + 1; i < m; i++) w[i * n + j] = 0;
      for (let c = j + 1; c < n; c++) {
        let s = 0;
        for (let i = j; i < m; i++) s += v[i] * w[i * n + c];
        for (let i = j; i < m; i++) w[i * n + c] -= tau * s * v[i];
      }
    }
    vs.push(v);
    taus.push(tau);
  }
  const r = zerosM(k, n);
  for (let i = 0; i < k; i++) for (let j = i; j < n; j++) r.data[i * n + j] = w[i * n + j];
  const q = zerosM(m, k);
  for (let i = 0; i < k; i++) q.data[i * k + i] = 1;
  for (let j = k - 1; j >= 0; j--) {
    const v = vs[j];
    for (let c = 0; c < k; c++) {
      let s = 0;
      for (let i = j; i < m; i++) s += v[i] * q.data[i * k + c];
      for (let i = j; i < m; i++) q.data[i * k + c] -= taus[j] * s * v[i];
    }
  }
  return { q, r };
}

/** Thin SVD by one-sided Jacobi in float64: U (m×k), s (descending), V (n×k). */
export function jacobiSVD(a: M64): { u: M64; s: Float64Array; v: M64 } {
  const wide = a.rows < a.cols;
  const w = wide ? transpose(a) : a;
  const m = w.rows, n = w.cols;
  const cols = Array.from({ length: n }, (_, j) => Float64Array.from({ length: m }, (_, i) => at(w, i, j)));
  const vcols = Array.from(
    { length: n },
    (_, j) => Float64Array.from({ length: n }, (_, i) => (i === j ? 1 : 0)),
  );
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const x = cols[p], y = cols[q];
        let al = 0, be = 0, ga = 0;
        for (let i = 0; i < m; i++) {
          al += x[i] * x[i];
          be += y[i] * y[i];
          ga += x[i] * y[i];
        }
        if (al === 0 || be === 0 || Math.abs(ga) <= 1e-15 * Math.sqrt(al * be)) continue;
        rotated = true;
        const zeta = (be - al) / (2 * ga);
        const t = (zeta < 0 ? -1 : 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t), s = c * t;
        for (const [u, z] of [[x, y], [vcols[p], vcols[q]]]) {
          for (let i = 0; i < u.length; i++) {
            const ui = u[i], zi = z[i];
            u[i] = c * ui - s * zi;
            z[i] = s * ui + c * zi;
          }
        }
      }
    }
    if (!rotated) break;
  }
  const norms = cols.map((c) => Math.sqrt(c.reduce((acc, v) => acc + v * v, 0)));
  const order = norms.map((_, i) => i).sort((i, j) => norms[j] - norms[i] || i - j);
  const u = zerosM(m, n), v = zerosM(n, n);
  const s = new Float64Array(n);
  order.forEach((src, k) => {
    s[k] = norms[src];
    for (let i = 0; i < m; i++) u.data[i * n + k] = s[k] > 0 ? cols[src][i] / s[k] : 0;
    for (let i = 0; i < n; i++) v.data[i * n + k] = vcols[src][i];
  });
  return wide ? { u: v, s, v: u } : { u, s, v };
}

/** Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix by cyclic Jacobi in float64. */
export function jacobiEigh(s0: M64): { values: Float64Array; vectors: M64 } {
  const n = s0.rows;
  const a = Float64Array.from(s0.data);
  const v = identity(n).data;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) off += a[i * n + j] ** 2;
    if (off < 1e-30 * (fro(s0) ** 2 + 1e-300)) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = (theta < 0 ? -1 : 1) / (Math.abs(theta) + Math.sqrt(1 + theta * theta));
        const c = 1 / Math.sqrt(1 + t * t), s = c * t;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => a[i * n + i] - a[j * n + j]);
  const values = Float64Array.from(order, (i) => a[i * n + i]);
  const vectors = zerosM(n, n);
  order.forEach((src, k) => {
    for (let i = 0; i < n; i++) vectors.data[i * n + k] = v[i * n + src];
  });
  return { values, vectors };
}

/** A random m×k matrix with orthonormal columns (QR of a Gaussian). */
export function randomOrthonormal(rng: TestRng, m: number, k: number): M64 {
  return householderQR(gaussian(rng, m, k)).q;
}

/** `U diag(s) Vᵀ` with random orthonormal U (m×k) and V (n×k), k = s.length: a matrix with spectrum s. */
export function withSpectrum(rng: TestRng, m: number, n: number, s: ArrayLike<number>): M64 {
  const u = randomOrthonormal(rng, m, s.length);
  const v = randomOrthonormal(rng, n, s.length);
  return matmul(scaleCols(u, s), transpose(v));
}

/** `n` values spaced geometrically from `hi` down to `lo`. */
export function geomspace(hi: number, lo: number, n: number): Float64Array {
  return Float64Array.from({ length: n }, (_, i) => hi * (lo / hi) ** (n === 1 ? 0 : i / (n - 1)));
}

/**
 * The largest principal angle (radians) between the column spaces of `a` and `b` (same number of columns),
 * computed from sines so that small angles are accurate: both bases are first re-orthonormalised in float64,
 * then sin θ_max = ‖(I − P_a) Q_b‖₂.
 */
export function largestPrincipalAngle(a: M64, b: M64): number {
  const qa = householderQR(a).q;
  const qb = householderQR(b).q;
  const proj = matmul(qa, matmul(transpose(qa), qb));
  const resid = sub(qb, proj);
  const s = jacobiSVD(resid).s;
  return Math.asin(Math.min(1, s[0]));
}
