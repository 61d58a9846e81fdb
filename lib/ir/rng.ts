/**
 * The counter-based generator behind `rand` / `randn`: element `i` of a tensor drawn with seed `s` is a pure
 * function of `(s, i)`, so every backend produces the same bits. The mixer is the 32-bit "lowbias32" integer
 * hash (multipliers 0x7feb352d and 0x846ca68b); the WGSL renderer emits the same arithmetic.
 *
 * @module
 */

/** One round of the 32-bit integer mixer. */
export function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** The raw 32 random bits of element `i` under `seed`. */
export function randBits(seed: number, i: number): number {
  const k = mix32(seed ^ 0x9e3779b9);
  return mix32((mix32((i + k) >>> 0) ^ seed) >>> 0);
}

/** Uniform value in [0, 1) with 24 random bits (exactly representable in f32). */
export function randUniform(seed: number, i: number): number {
  return (randBits(seed, i) >>> 8) / 16777216;
}
