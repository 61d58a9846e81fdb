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
  /** pow with the sign rules of Math.pow for negative bases and zero. */
  pow: `fn pow_(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  let ax = abs(x);
  if (ax == 0.0) { return select(0.0, bitcast<f32>(0x7f800000u), y < 0.0); }
  var r = exp2(y * log2(ax));
  if (x < 0.0) {
    if (y != floor(y)) { return bitcast<f32>(0x7fc00000u); }
    if (fract(y * 0.5) != 0.0) { r = -r; }
  }
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
