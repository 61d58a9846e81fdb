/**
 * Activation functions as plain functions (pass them where a layer takes an activation) and dropout with an
 * explicit seed.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { customVjp } from "../autodiff/grad.ts";
import { checkOptions, opt } from "../options.ts";
import type { Shape } from "../shape.ts";
import { rand, tensor } from "../tensor/creation.ts";
import { type F32, type Tensor, withShape } from "../tensor/tensor.ts";
import { mix32, seed32 } from "../ir/rng.ts";
import { Module } from "./module.ts";

/** An elementwise activation. */
export type Activation = <S extends Shape>(x: Tensor<S, "f32">) => Tensor<S, "f32">;

/**
 * `max(x, 0)`.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { relu } from "./activations.ts";
 * console.log(await relu(tensor([-1, 2])).toArray()); // [0, 2]
 * ```
 */
export function relu<S extends Shape>(x: Tensor<S, "f32">): Tensor<S, "f32"> {
  return x.relu();
}

/** GELU, tanh approximation (as `torch.nn.GELU(approximate="tanh")`). */
export function gelu<S extends Shape>(x: Tensor<S, "f32">): Tensor<S, "f32"> {
  return x.gelu();
}

/** SiLU / swish: `x · sigmoid(x)`. */
export function silu<S extends Shape>(x: Tensor<S, "f32">): Tensor<S, "f32"> {
  return x.silu();
}

/** `1 / (1 + e^−x)`. */
export function sigmoid<S extends Shape>(x: Tensor<S, "f32">): Tensor<S, "f32"> {
  return x.sigmoid();
}

/** Hyperbolic tangent. */
export function tanh<S extends Shape>(x: Tensor<S, "f32">): Tensor<S, "f32"> {
  return x.tanh();
}

/** The identity (no activation). */
export function identity<S extends Shape>(x: Tensor<S, "f32">): Tensor<S, "f32"> {
  return x;
}

/**
 * `x` where positive, `slope · x` elsewhere.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { leakyRelu } from "./activations.ts";
 * console.log(await leakyRelu(tensor([-2, 3]), 0.1).toArray()); // [-0.2, 3]
 * ```
 */
export function leakyRelu<S extends Shape>(x: Tensor<S, "f32">, slope = 0.01): Tensor<S, "f32"> {
  // A select, not max(x, slope·x): that maximum is slope·x below 0 only for slope ≤ 1, and Max splits the tie at
  // x = 0 into a gradient of (1 + slope)/2. The select's gradient is 1 where x > 0 and slope elsewhere, as
  // PyTorch's; a NaN fails x > 0 and comes out as slope·NaN.
  return x.gt(0).where(x, x.mul(slope));
}

const softplusOf = customVjp(
  (x: F32) => x.relu().add(x.abs().neg().exp().add(1).log()) as F32,
  // d log(1 + e^x) = σ(x) · g. Differentiating the stable form instead adds two kinks at 0 (relu's and |x|'s),
  // which gave 0 there, not σ(0) = ½.
  (g, _y, x) => [(g as F32).mul(x.sigmoid()) as F32],
);

/**
 * `log(1 + e^x)`, computed as `max(x, 0) + log(1 + e^−|x|)` so large inputs do not overflow, with gradient
 * `σ(x)`.
 */
export function softplus<S extends Shape>(x: Tensor<S, "f32">): Tensor<S, "f32"> {
  return withShape<S>(softplusOf(x), x.shape);
}

/** Rows of each random table dropout masks are built from. */
const ROWS = 64;
/** Seeds of the tables (fixed, so every mask of a given shape compiles to the same kernel). */
const TABLE_SEEDS = [0x0d0b0e11, 0x2f6b8c03, 0x51c7a9e5, 0x7a3d1f47] as const;

/** `frac(a + b)` for a, b multiples of 2^-24 in [0, 1), exact in float32 on every device. */
function addMod1(a: Tensor<Shape, "f32">, b: Tensor<Shape, "f32">): Tensor<Shape, "f32"> {
  const d = a.sub(b.neg().add(1)) as Tensor<Shape, "f32">;
  return d.ge(0).where(d, a.add(b)) as Tensor<Shape, "f32">;
}

/**
 * A dropout key: one row index (0..63) into each of the four random tables masks are cut from. Make one with
 * {@link dropoutKey}; it is a small device tensor, so a new key each step compiles no new kernel.
 */
export type DropoutKey = Tensor<[4], "i32">;

const DEVICE_OPTIONS = z.object({ device: opt.device().optional() }).strict();
const DROPOUT_OPTIONS = z.object({
  seed: opt.seed().optional(),
  key: opt.tensor().optional(),
  salt: z.int().optional(),
  training: z.boolean().optional(),
}).strict();

function keyRows(seed: number): Int32Array {
  if (!Number.isInteger(seed)) throw new TypeError(`dropout: seed must be an integer, got ${seed}`);
  const s = seed32(seed, "dropout");
  return Int32Array.from(TABLE_SEEDS, (_, t) => mix32((s ^ Math.imul(t + 1, 0x68e31da4)) >>> 0) % ROWS);
}

/**
 * The dropout key of a seed, uploaded to `device`. Several dropout sites can share one key by giving each a
 * different `salt`; put the step's key in the batch so that the trainer disposes it after the step.
 *
 * @example
 * ```ts
 * import { ones } from "../tensor/creation.ts";
 * import { dropout, dropoutKey } from "./activations.ts";
 * const key = dropoutKey(1234);
 * const a = dropout(ones([8, 8]), 0.1, { key, salt: 0 });
 * const b = dropout(ones([8, 8]), 0.1, { key, salt: 1 }); // an independent mask
 * ```
 */
export function dropoutKey(seed: number, opts: { device?: Tensor["device"] } = {}): DropoutKey {
  checkOptions("dropoutKey", DEVICE_OPTIONS, opts);
  return tensor(keyRows(seed), { dtype: "i32", shape: [4], device: opts.device });
}

/**
 * Uniform values in [0, 1) for a dropout mask of `n` elements. The key picks one row of each of four fixed
 * random tables (`rand([64, n])` with fixed seeds); the salt shifts each pick (modulo 64); the rows are added
 * modulo 1, which is again uniform, and independent between two picks that differ in at least one row (64⁴
 * combinations). Only the key tensor changes between masks, so all of them share one compiled kernel, and a
 * lazily generated table costs nothing on the device (only the picked elements are computed).
 */
function maskUniforms(n: number, key: DropoutKey, salt: number): Tensor<Shape, "f32"> {
  const device = key.device;
  let u: Tensor<Shape, "f32"> | null = null;
  for (const [t, tableSeed] of TABLE_SEEDS.entries()) {
    const shift = mix32((Math.imul(salt >>> 0, 0x2c1b3c6d) ^ tableSeed) >>> 0) % ROWS;
    const picked = (key as Tensor<Shape, "i32">).slice([t, t + 1]).add(shift) as Tensor<Shape, "i32">;
    const row = picked.ge(ROWS).where(picked.sub(ROWS), picked) as Tensor<Shape, "i32">;
    const ut = rand([ROWS, n], { seed: tableSeed, device }).gather(row, 0) as Tensor<Shape, "f32">;
    u = u === null ? ut : addMod1(u, ut);
  }
  return u!.reshape([n]);
}

/** Options of {@link dropout}: a `seed`, or a `key` with a `salt`. */
export interface DropoutOptions {
  /** The mask's seed: the same seed gives the same mask. Uploads a small key tensor (freed at garbage collection). */
  seed?: number;
  /** A key from {@link dropoutKey}, instead of `seed`: no allocation per call. */
  key?: DropoutKey;
  /** Distinguishes the masks of several sites sharing one key (integer, default 0). */
  salt?: number;
  /** Apply dropout (default true); false returns `x` unchanged (evaluation). */
  training?: boolean;
}

/**
 * Inverted dropout: zeroes each element with probability `rate` and scales the rest by `1/(1 − rate)`, so the
 * expectation is unchanged. The mask is a pure function of the key (or seed), the salt and the shape, and is
 * the same on every device: use a different key each step (e.g. `dropoutKey(deriveSeed(seed, "dropout", step))`)
 * and a different salt per site. All keys share one compiled kernel, so a new key every step costs no
 * recompilation. `{ seed }` is `{ key: dropoutKey(seed) }`.
 *
 * @example
 * ```ts
 * import { ones } from "../tensor/creation.ts";
 * import { dropout } from "./activations.ts";
 * const y = dropout(ones([1000]), 0.1, { seed: 7 }); // about 100 zeros, the rest 1/0.9
 * ```
 */
export function dropout<S extends Shape>(
  x: Tensor<S, "f32">,
  rate: number,
  opts: DropoutOptions,
): Tensor<S, "f32"> {
  checkOptions("dropout", DROPOUT_OPTIONS, opts);
  if (!(rate >= 0 && rate < 1)) throw new RangeError(`dropout: rate must be in [0, 1), got ${rate}`);
  if ((opts.seed === undefined) === (opts.key === undefined)) {
    throw new TypeError("dropout: pass exactly one of seed and key");
  }
  const salt = opts.salt ?? 0;
  if (!Number.isInteger(salt)) throw new TypeError(`dropout: salt must be an integer, got ${salt}`);
  if (opts.seed !== undefined) keyRows(opts.seed);
  if (rate === 0 || opts.training === false) return x;
  const key = opts.key ?? dropoutKey(opts.seed!, { device: x.device });
  if (key.shape.join() !== "4" || key.dtype !== "i32" || key.device !== x.device) {
    throw new TypeError(`dropout: key must be an i32 tensor [4] on ${x.device} (see dropoutKey)`);
  }
  const n = x.size;
  if (n * ROWS >= 2 ** 31) {
    throw new RangeError(`dropout: ${n} elements exceed the ${2 ** 31 / ROWS}-element limit`);
  }
  const keep = maskUniforms(n, key, salt).ge(rate).where(1 / (1 - rate), 0) as Tensor<Shape, "f32">;
  const w: F32 = x;
  return withShape<S>(w.mul(keep.reshape(x.shape as Shape) as Tensor<Shape, "f32">), x.shape);
}

/**
 * A dropout layer. `forward(x, seed)` drops with the given seed; `forward(x)` (no seed) is the identity, for
 * evaluation.
 *
 * @example
 * ```ts
 * import { randn } from "../tensor/creation.ts";
 * import { Dropout } from "./activations.ts";
 * const drop = new Dropout(0.1);
 * const train = drop.forward(randn([4, 8], { seed: 0 }), 123);
 * const evaluate = drop.forward(randn([4, 8], { seed: 0 }));
 * ```
 */
export class Dropout extends Module {
  #rate: number;

  /** A layer dropping with probability `rate`. */
  constructor(rate: number) {
    super();
    if (!(rate >= 0 && rate < 1)) throw new RangeError(`Dropout: rate must be in [0, 1), got ${rate}`);
    this.#rate = rate;
  }

  /** The drop probability. */
  get rate(): number {
    return this.#rate;
  }

  /** The settings a resumed run must share with the run that wrote its checkpoint (`ConfiguredModule`). */
  runSettings(): Record<string, number> {
    return { rate: this.#rate };
  }

  /** Drops with `seed` (a number or a {@link DropoutKey}), or returns `x` unchanged without one. */
  forward<S extends Shape>(x: Tensor<S, "f32">, seed?: number | DropoutKey, salt = 0): Tensor<S, "f32"> {
    if (seed === undefined) return x;
    return typeof seed === "number"
      ? dropout(x, this.#rate, { seed, salt })
      : dropout(x, this.#rate, { key: seed, salt });
  }
}
