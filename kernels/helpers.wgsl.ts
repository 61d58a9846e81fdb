/**
 * Small WGSL helper functions the renderer splices into kernels that need them. Each mirrors a host function
 * (`Math.tanh`, `Math.log`, `Math.pow`, `randUniform` in `lib/ir/rng.ts`) that the CPU backend and the reference use.
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
   * Natural log within a few ulp of f32 everywhere. The builtin's error is absolute (WGSL allows 2^-21 on
   * [0.5, 2]), so near 1, where log x is small, it kept none of the digits: log(1 - 2^-24) came out 6e6 ulp off on
   * lavapipe, and randn, whose radius is sqrt(-2 log(1 - u)), was off by up to 1e-2 relative for its small
   * values. Here x = m·2^e with m in [√½, √2), and log m = 2 atanh(s) with s = (m - 1)/(m + 1), |s| < 0.172, by its
   * series to s^9 (the next term is under 2^-27 of the sum); ln 2 is split so that e·ln2_hi is exact.
   */
  log: `fn log_(x: f32) -> f32 {
  if (x != x || x < 0.0) { return bitcast<f32>(0x7fc00000u); }
  if (x == 0.0) { return bitcast<f32>(0xff800000u); }
  if (x == bitcast<f32>(0x7f800000u)) { return x; }
  let fr = frexp(x);
  var m = fr.fract;
  var e = f32(fr.exp);
  if (m < 0.70710678) {
    m = m * 2.0;
    e = e - 1.0;
  }
  let s = (m - 1.0) / (m + 1.0);
  let z = s * s;
  let p = 2.0 * s + 2.0 * s * z * (0.33333333 + z * (0.2 + z * (0.14285715 + z * 0.11111111)));
  return e * 0.693145751953125 + (e * 1.4286068e-6 + p);
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
