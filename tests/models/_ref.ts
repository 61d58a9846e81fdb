/**
 * A direct float64 host implementation of the Llama-2 forward pass, written the way llama2.c's `forward()` is
 * (one position at a time, interleaved RoPE pairs, query head h reading key/value head ⌊h / (nHeads / nKvHeads)⌋,
 * softmax over positions 0..pos), and random host weights for tests.
 */
import type { HostWeight, LlamaConfig } from "../../lib/models/llama.ts";
import type { TestRng } from "../_helpers.ts";

/** Names and shapes of a Llama model's weights, written out independently of the code under test. */
export function weightShapes(c: LlamaConfig): [string, number[]][] {
  const hd = c.dim / c.nHeads;
  const kv = hd * c.nKvHeads;
  const out: [string, number[]][] = [["tok_embeddings.weight", [c.vocabSize, c.dim]]];
  for (let l = 0; l < c.nLayers; l++) {
    out.push(
      [`layers.${l}.attention_norm.weight`, [c.dim]],
      [`layers.${l}.attention.wq.weight`, [c.dim, c.dim]],
      [`layers.${l}.attention.wk.weight`, [kv, c.dim]],
      [`layers.${l}.attention.wv.weight`, [kv, c.dim]],
      [`layers.${l}.attention.wo.weight`, [c.dim, c.dim]],
      [`layers.${l}.ffn_norm.weight`, [c.dim]],
      [`layers.${l}.feed_forward.w1.weight`, [c.hiddenDim, c.dim]],
      [`layers.${l}.feed_forward.w2.weight`, [c.dim, c.hiddenDim]],
      [`layers.${l}.feed_forward.w3.weight`, [c.hiddenDim, c.dim]],
    );
  }
  out.push(["norm.weight", [c.dim]]);
  if (!c.sharedClassifier) out.push(["output.weight", [c.vocabSize, c.dim]]);
  return out;
}

/** Random weights: matrices normal with std `scale / √in`, norm gains around 1. */
export function randomWeights(c: LlamaConfig, rng: TestRng, scale = 1): Map<string, HostWeight> {
  const out = new Map<string, HostWeight>();
  for (const [name, shape] of weightShapes(c)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = shape.length === 1
      ? Float32Array.from({ length: n }, () => 1 + 0.3 * rng.normal())
      : rng.normals(n, name === "tok_embeddings.weight" ? 1 : scale / Math.sqrt(shape[1]));
    out.set(name, { shape, data });
  }
  return out;
}

function matvec(w: ArrayLike<number>, x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < cols; i++) s += w[r * cols + i] * x[i];
    y[r] = s;
  }
  return y;
}

function rmsnorm(x: Float64Array, w: ArrayLike<number>, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const s = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * s * w[i]);
}

/** Logits `[T, V]` (row-major) of one token sequence, in float64 (sliding-window layers included). */
export function hostLogits(
  c: LlamaConfig,
  weights: Map<string, HostWeight>,
  tokens: readonly number[],
): Float64Array {
  const W = (name: string) => weights.get(name)!.data;
  const eps = c.normEps ?? 1e-5;
  const theta = c.ropeTheta ?? 1e4;
  const hd = c.dim / c.nHeads;
  const kvDim = hd * c.nKvHeads;
  const kvMul = c.nHeads / c.nKvHeads;
  const keys: Float64Array[][] = Array.from({ length: c.nLayers }, () => []);
  const values: Float64Array[][] = Array.from({ length: c.nLayers }, () => []);
  const out = new Float64Array(tokens.length * c.vocabSize);
  tokens.forEach((token, pos) => {
    let x = Float64Array.from(W("tok_embeddings.weight").subarray(token * c.dim, (token + 1) * c.dim));
    for (let l = 0; l < c.nLayers; l++) {
      const p = `layers.${l}`;
      const window = c.slidingWindow !== undefined && (c.slidingLayers?.[l] ?? true)
        ? c.slidingWindow
        : Infinity;
      const xb = rmsnorm(x, W(`${p}.attention_norm.weight`), eps);
      const q = matvec(W(`${p}.attention.wq.weight`), xb, c.dim, c.dim);
      const k = matvec(W(`${p}.attention.wk.weight`), xb, kvDim, c.dim);
      const v = matvec(W(`${p}.attention.wv.weight`), xb, kvDim, c.dim);
      for (let i = 0; i < c.dim; i += 2) {
        const freq = 1 / theta ** ((i % hd) / hd);
        const fcr = Math.cos(pos * freq);
        const fci = Math.sin(pos * freq);
        for (const vec of i < kvDim ? [q, k] : [q]) {
          const v0 = vec[i];
          const v1 = vec[i + 1];
          vec[i] = v0 * fcr - v1 * fci;
          vec[i + 1] = v0 * fci + v1 * fcr;
        }
      }
      keys[l].push(k);
      values[l].push(v);
      const att = new Float64Array(c.dim);
      for (let h = 0; h < c.nHeads; h++) {
        const kvh = Math.floor(h / kvMul);
        const scores = new Float64Array(pos + 1);
        for (let t = 0; t <= pos; t++) {
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i] * keys[l][t][kvh * hd + i];
          // A sliding layer sees positions pos − W + 1 .. pos only.
          scores[t] = t <= pos - window ? -Infinity : s / Math.sqrt(hd);
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let t = 0; t <= pos; t++) {
          for (let i = 0; i < hd; i++) att[h * hd + i] += (e[t] / z) * values[l][t][kvh * hd + i];
        }
      }
      const o = matvec(W(`${p}.attention.wo.weight`), att, c.dim, c.dim);
      x = x.map((xi, i) => xi + o[i]);
      const xf = rmsnorm(x, W(`${p}.ffn_norm.weight`), eps);
      const h1 = matvec(W(`${p}.feed_forward.w1.weight`), xf, c.hiddenDim, c.dim);
      const h3 = matvec(W(`${p}.feed_forward.w3.weight`), xf, c.hiddenDim, c.dim);
      const g = h1.map((a, i) => (a / (1 + Math.exp(-a))) * h3[i]);
      const f = matvec(W(`${p}.feed_forward.w2.weight`), g, c.dim, c.hiddenDim);
      x = x.map((xi, i) => xi + f[i]);
    }
    const xn = rmsnorm(x, W("norm.weight"), eps);
    const cls = c.sharedClassifier ? W("tok_embeddings.weight") : W("output.weight");
    out.set(matvec(cls, xn, c.vocabSize, c.dim), pos * c.vocabSize);
  });
  return out;
}

/** Negative log-likelihood of `target` under a row of logits, in float64. */
export function nllOf(logits: ArrayLike<number>, offset: number, n: number, target: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, logits[offset + i]);
  let z = 0;
  for (let i = 0; i < n; i++) z += Math.exp(logits[offset + i] - m);
  return Math.log(z) + m - logits[offset + target];
}
