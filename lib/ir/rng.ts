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

/**
 * A seed as the 32 bits the generators take: itself in [0, 2³²); a seed outside that range (negative, or 2³² and
 * beyond) mixes its high part in, so that it does not fall on one inside (1 and 2³² + 1 would otherwise be one
 * stream). Throws on a seed that is not a safe integer.
 */
export function seed32(seed: number, what = "seed"): number {
  if (!Number.isSafeInteger(seed)) throw new TypeError(`${what}: seed must be a safe integer, got ${seed}`);
  const high = Math.floor(seed / 2 ** 32);
  return high === 0 ? seed >>> 0 : mix32(((seed >>> 0) ^ mix32((high >>> 0) ^ 0x7f4a7c15)) >>> 0);
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
