/**
 * Seeded pseudo-random numbers for the io tests (mulberry32), so that every run draws fresh but
 * reproducible inputs.
 *
 * @module
 */

/** A seeded generator of uniform floats in [0, 1), integers and normal samples. */
export class Rng {
  #state: number;

  /** Start a generator from a 32-bit seed. */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    return Math.floor(this.next() * 4294967296);
  }

  /** Uniform integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** Standard normal sample (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

/** A seed that differs between runs; printed by the tests so a failure can be replayed. */
export function freshSeed(): number {
  let env: string | undefined;
  try {
    env = Deno.env.get("TESSERA_TEST_SEED");
  } catch {
    env = undefined; // no --allow-env: use a random seed
  }
  const seed = env !== undefined ? Number(env) >>> 0 : crypto.getRandomValues(new Uint32Array(1))[0];
  console.log(`seed ${seed} (replay with TESSERA_TEST_SEED=${seed})`);
  return seed;
}
