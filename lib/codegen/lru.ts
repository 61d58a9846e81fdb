/**
 * A bounded map that evicts its least recently used entry: the compiler's and the backends' caches use it, so a
 * long session that meets many shapes keeps a fixed amount of compiled code.
 *
 * @module
 */

/**
 * A map holding at most `capacity` entries; reading or writing an entry makes it the most recent, and adding one
 * past the capacity evicts the least recent (passed to `onEvict`).
 *
 * @example
 * ```ts
 * import { LruCache } from "./lru.ts";
 * const cache = new LruCache<string, number>(2);
 * cache.set("a", 1);
 * cache.set("b", 2);
 * cache.get("a");
 * cache.set("c", 3); // evicts "b"
 * console.log(cache.has("b"), cache.size); // false 2
 * ```
 */
export class LruCache<K, V> {
  #map = new Map<K, V>();
  readonly #capacity: number;
  readonly #onEvict: ((key: K, value: V) => void) | undefined;
  readonly #weigh: ((key: K, value: V) => number) | undefined;
  readonly #maxWeight: number;
  #weight = 0;
  #evictions = 0;

  /**
   * A cache of at most `capacity` (a positive integer) entries, and, with `weigh`, of at most `maxWeight` in
   * total weight (the most recent entry is kept even when it alone weighs more).
   */
  constructor(
    capacity: number,
    opts: { onEvict?: (key: K, value: V) => void; weigh?: (key: K, value: V) => number; maxWeight?: number } =
      {},
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`LruCache: capacity must be a positive integer, got ${capacity}`);
    }
    this.#capacity = capacity;
    this.#onEvict = opts.onEvict;
    this.#weigh = opts.weigh;
    this.#maxWeight = opts.maxWeight ?? Infinity;
  }

  /** The entry of `key` (made most recent), or undefined. */
  get(key: K): V | undefined {
    const v = this.#map.get(key);
    if (v === undefined) return undefined;
    this.#map.delete(key);
    this.#map.set(key, v);
    return v;
  }

  /** Whether `key` has an entry (does not change the order). */
  has(key: K): boolean {
    return this.#map.has(key);
  }

  /** Stores `value` under `key` as the most recent entry, evicting the least recent one when full. */
  set(key: K, value: V): void {
    this.delete(key);
    this.#map.set(key, value);
    this.#weight += this.#weigh?.(key, value) ?? 0;
    while (this.#map.size > this.#capacity || (this.#weight > this.#maxWeight && this.#map.size > 1)) {
      const [k, v] = this.#map.entries().next().value!;
      this.delete(k);
      this.#evictions++;
      this.#onEvict?.(k, v);
    }
  }

  /** Removes `key`'s entry (without calling `onEvict`). */
  delete(key: K): boolean {
    const v = this.#map.get(key);
    if (v === undefined) return false;
    this.#weight -= this.#weigh?.(key, v) ?? 0;
    return this.#map.delete(key);
  }

  /** Total weight of the entries (0 without `weigh`). */
  get weight(): number {
    return this.#weight;
  }

  /** Number of entries. */
  get size(): number {
    return this.#map.size;
  }

  /** The most entries kept. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Entries evicted so far. */
  get evictions(): number {
    return this.#evictions;
  }

  /** The values, least recent first. */
  values(): IterableIterator<V> {
    return this.#map.values();
  }

  /** Removes every entry (without calling `onEvict`). */
  clear(): void {
    this.#map.clear();
    this.#weight = 0;
  }
}
