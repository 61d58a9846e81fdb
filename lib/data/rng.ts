/**
 * A small seeded pseudo-random generator for data work (shuffling, synthetic data, batch order).
 *
 * The generator is xoshiro128** (Blackman & Vigna, "Scrambled linear pseudorandom number generators",
 * 2018): 128 bits of state, period 2^128 - 1, 32-bit outputs. The state is filled from the seed with a
 * 32-bit SplitMix-style mixer, so nearby seeds (0, 1, 2, ...) give unrelated streams.
 *
 * @module
 */

const TWO_POW_32 = 4294967296;

/** A mutable indexable sequence: plain arrays and every typed array satisfy it. */
export interface MutableArrayLike<T> {
  /** Number of elements. */
  readonly length: number;
  /** Element access. */
  [index: number]: T;
}

/** One step of a 32-bit SplitMix-style mixer; returns the new counter and the mixed output. */
function splitMix32(counter: number): { counter: number; value: number } {
  const next = (counter + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  z ^= z >>> 16;
  return { counter: next, value: z >>> 0 };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * Seeded PRNG (xoshiro128**). Same seed, same stream, on every platform.
 *
 * @example
 * ```ts
 * import { Rng } from "./rng.ts";
 * const rng = new Rng(42);
 * const u = rng.next(); // in [0, 1)
 * const k = rng.int(10); // integer in 0..9
 * const z = rng.normal(); // standard normal
 * const order = rng.shuffle([0, 1, 2, 3]);
 * ```
 */
export class Rng {
  #s0 = 0;
  #s1 = 0;
  #s2 = 0;
  #s3 = 0;
  #spareNormal: number | null = null;

  /**
   * Creates a generator whose whole stream is determined by `seed`.
   *
   * @param seed any safe integer (negative values and values above 2^32 are allowed; all bits are used).
   * @throws {RangeError} when the seed is not a safe integer.
   */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`Rng seed must be a safe integer, got ${seed}`);
    }
    const low = seed >>> 0;
    const high = Math.floor(seed / TWO_POW_32) >>> 0;
    let counter = low ^ splitMix32(high ^ 0x5bd1e995).value;
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      const step = splitMix32(counter);
      counter = step.counter;
      words.push(step.value);
    }
    [this.#s0, this.#s1, this.#s2, this.#s3] = words;
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1; // the all-zero state is a fixed point
  }

  /** Next raw output: a uniformly distributed integer in [0, 2^32). */
  uint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.uint32() / TWO_POW_32;
  }

  /**
   * Uniform integer in [0, n), without modulo bias (rejection sampling).
   *
   * @param n exclusive upper bound, an integer in 1..2^32.
   * @throws {RangeError} when `n` is not an integer in 1..2^32.
   */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) {
      throw new RangeError(`Rng.int(n) needs an integer n in 1..2^32, got ${n}`);
    }
    const limit = TWO_POW_32 - (TWO_POW_32 % n); // largest multiple of n that fits in 32 bits
    let u = this.uint32();
    while (u >= limit) u = this.uint32();
    return u % n;
  }

  /** Standard normal sample (mean 0, variance 1), by the Box-Muller transform; pairs are cached. */
  normal(): number {
    if (this.#spareNormal !== null) {
      const spare = this.#spareNormal;
      this.#spareNormal = null;
      return spare;
    }
    const u1 = 1 - this.next(); // in (0, 1], so the log is finite
    const u2 = this.next();
    const radius = Math.sqrt(-2 * Math.log(u1));
    const angle = 2 * Math.PI * u2;
    this.#spareNormal = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }

  /**
   * Shuffles `arr` in place (Fisher-Yates) and returns it. Every permutation is equally likely.
   *
   * @example
   * ```ts
   * import { Rng } from "./rng.ts";
   * const perm = new Rng(7).shuffle(Int32Array.from({ length: 10 }, (_, i) => i));
   * ```
   */
  shuffle<A extends MutableArrayLike<unknown>>(arr: A): A {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = arr[i];
      arr[i] = arr[j];
      arr[j] = tmp;
    }
    return arr;
  }
}
