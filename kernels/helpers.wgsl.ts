/**
 * Small WGSL helper functions the renderer splices into kernels that need them. Each mirrors a host function
 * (`Math.tanh`, `Math.pow`, `randUniform` in `lib/ir/rng.ts`) that the CPU backend and the reference use.
 *
 * @module
 */

/** Helper sources by name. */
export const WGSL_HELPERS = {
  /**
   * tanh without overflow for large |x| (some drivers return NaN from the builtin there). Below |x| = 0.625,
   * where 1 − e(-2|x|) loses digits, Cephes' tanhf polynomial x + x³·P(x²) (within 2 ulp of f32).
   */
  tanh: `fn tanh_(x: f32) -> f32 {
  let ax = abs(x);
  if (ax < 0.625) {
    let s = x * x;
    let p = (((-5.70498872745e-3 * s + 2.06390887954e-2) * s - 5.37397155531e-2) * s + 1.33314422036e-1) * s;
    return x + x * s * (p - 3.33332819422e-1);
  }
  let e = exp(-2.0 * ax);
  return sign(x) * (1.0 - e) / (1.0 + e);
}`,
  /**
   * pow as C's `pow` (PyTorch, NumPy) gives it: 1 for a zero exponent or a base of 1 (even with NaN), NaN for a
   * NaN otherwise and for a negative finite base with a non-integer exponent, the sign of a negative base (−0 and −∞
   * included) kept for odd integer exponents, and ±∞ exponents by whether |x| is above or below 1.
   */
  pow: `fn pow_(x: f32, y: f32) -> f32 {
  if (y == 0.0 || x == 1.0) { return 1.0; }
  let nan = bitcast<f32>(0x7fc00000u);
  let inf = bitcast<f32>(0x7f800000u);
  let ax = abs(x);
  let ay = abs(y);
  if ((bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u || (bitcast<u32>(y) & 0x7fffffffu) > 0x7f800000u) {
    return nan;
  }
  if (ay == inf) {
    if (ax == 1.0) { return 1.0; }
    return select(0.0, inf, (ax > 1.0) == (y > 0.0));
  }
  let whole = y == floor(y);
  if (x < 0.0 && ax != inf && !whole) { return nan; }
  var r: f32;
  if (ax == 0.0) {
    r = select(0.0, inf, y < 0.0);
  } else if (ax == inf) {
    r = select(0.0, inf, y > 0.0);
  } else {
    r = exp2(y * log2(ax));
  }
  if (whole && fract(y * 0.5) != 0.0 && (bitcast<u32>(x) & 0x80000000u) != 0u) { r = -r; }
  return r;
}`,
  /** The counter-based generator of lib/ir/rng.ts. */
  rand: `fn mix32_(x: u32) -> u32 {
  var h = x;
  h = h ^ (h >> 16u);
  h = h * 0x7feb352du;
  h = h ^ (h >> 15u);
  h = h * 0x846ca68bu;
  h = h ^ (h >> 16u);
  return h;
}
fn rand_(seed: u32, i: u32) -> f32 {
  let k = mix32_(seed ^ 0x9e3779b9u);
  let h = mix32_(mix32_(i + k) ^ seed);
  return f32(h >> 8u) * (1.0 / 16777216.0);
}`,
} as const;
