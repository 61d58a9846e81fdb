/**
 * Parameter initialisers. Each returns a new concrete tensor made from host data, so every parameter has its
 * own buffer (see `module.ts` for why that matters). The random ones use the same counter-based generator as
 * `rand`/`randn`: `uniformParam(shape, 0, 1, { seed })` holds the values of `rand(shape, { seed })`, and
 * `normalParam(shape, 1, { seed })` those of `randn(shape, { seed })`, on every device.
 *
 * @module
 */
import { z } from "../../deps.ts";
import type { DeviceName } from "../ir/node.ts";
import { checkOptions, opt } from "../options.ts";
import { mix32, randUniform, seed32 } from "../ir/rng.ts";
import type { Shape, Writable } from "../shape.ts";
import { tensor } from "../tensor/creation.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** Options of the random initialisers. */
export interface InitOptions {
  /** Seed of the counter-based generator. */
  seed: number;
  /** Device of the new tensor (default: the default device). */
  device?: DeviceName;
}

const INIT_OPTIONS = z.object({ seed: opt.seed(), device: opt.device().optional() }).strict();
const CONSTANT_OPTIONS = z.object({ device: opt.device().optional() }).strict();

function count(shape: Shape, what: string): number {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`${what}: bad shape [${shape.join(", ")}]`);
  }
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * A seed for a part of a model, derived from a parent seed and a path of keys, so that submodules get
 * unrelated streams: `deriveSeed(seed, "layers", 3, "wq")`.
 *
 * @example
 * ```ts
 * import { deriveSeed } from "./init.ts";
 * deriveSeed(42, "fc1") !== deriveSeed(42, "fc2"); // true
 * ```
 */
export function deriveSeed(seed: number, ...keys: (string | number)[]): number {
  let h = mix32(seed32(seed, "deriveSeed") ^ 0x2545f491);
  for (const k of keys) {
    const s = String(k);
    for (let i = 0; i < s.length; i++) h = mix32((h ^ s.charCodeAt(i)) >>> 0);
    h = mix32((h ^ 0x9e3779b9) >>> 0);
  }
  return h;
}

/**
 * A tensor of values uniform in `[low, high)`.
 *
 * @example
 * ```ts
 * import { uniformParam } from "./init.ts";
 * const bound = 1 / Math.sqrt(64);
 * const w = uniformParam([32, 64], -bound, bound, { seed: 0 });
 * ```
 */
export function uniformParam<const S extends Shape>(
  shape: S,
  low: number,
  high: number,
  opts: InitOptions,
): Tensor<Writable<S>, "f32"> {
  checkOptions("uniformParam", INIT_OPTIONS, opts);
  const n = count(shape, "uniformParam");
  const seed = seed32(opts.seed, "uniformParam");
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = low + (high - low) * randUniform(seed, i);
  return tensor(data, { shape, device: opts.device });
}

/**
 * A tensor of normal values with mean 0 and standard deviation `std` (Box–Muller over pairs of uniforms, as
 * `randn`).
 *
 * @example
 * ```ts
 * import { normalParam } from "./init.ts";
 * const emb = normalParam([100, 16], 0.02, { seed: 1 });
 * ```
 */
export function normalParam<const S extends Shape>(
  shape: S,
  std: number,
  opts: InitOptions,
): Tensor<Writable<S>, "f32"> {
  checkOptions("normalParam", INIT_OPTIONS, opts);
  const n = count(shape, "normalParam");
  const seed = seed32(opts.seed, "normalParam");
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u1 = 1 - randUniform(seed, 2 * i);
    const u2 = randUniform(seed, 2 * i + 1);
    data[i] = std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  return tensor(data, { shape, device: opts.device });
}

/**
 * A tensor filled with `value`, with its own buffer (unlike `full`, whose lazy constants are shared).
 *
 * @example
 * ```ts
 * import { constantParam } from "./init.ts";
 * const gain = constantParam([64], 1);
 * ```
 */
export function constantParam<const S extends Shape>(
  shape: S,
  value: number,
  opts: { device?: DeviceName } = {},
): Tensor<Writable<S>, "f32"> {
  checkOptions("constantParam", CONSTANT_OPTIONS, opts);
  const data = new Float32Array(count(shape, "constantParam")).fill(value);
  return tensor(data, { shape, device: opts.device });
}
