/**
 * LoRAM's spectral gain Q[r] (Eq. 10) against closed forms: a geometric spectrum on a (signed, permuted) diagonal
 * matrix, equal singular values (Q[r] = r/K), a single non-zero one (Q[r] = 1/r), a matrix with a prescribed
 * spectrum through the device SVD, and the logarithmic gain of Algorithm 1.
 */
import { equal, ok, throws } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { compareGains, logGainCurve, spectralGainCurve, weightGains } from "../../lib/init/spectral_gain.ts";
import { loramLogGain } from "../../lib/init/loram.ts";
import { assertClose, TestRng } from "../_helpers.ts";
import { toF32, withSpectrum } from "../linalg/_ref64.ts";

/** Q[r] of the geometric spectrum s_i = c·ρ^(i−1): ((1−ρ^r)/(1−ρ))² / (r·(1−ρ^(2K))/(1−ρ²)). */
function geometricGain(rho: number, k: number): number[] {
  const total = (1 - rho ** (2 * k)) / (1 - rho * rho);
  return Array.from({ length: k }, (_, i) => ((1 - rho ** (i + 1)) / (1 - rho)) ** 2 / ((i + 1) * total));
}

Deno.test("spectral gain of a signed, permuted diagonal matrix matches the geometric closed form", async () => {
  const rng = new TestRng(1);
  const n = rng.int(12, 20);
  const m = rng.int(8, 11);
  const k = Math.min(n, m);
  const rho = 0.5 + 0.4 * rng.next();
  const c = 0.5 + 2 * rng.next();
  // Place c·ρ^i with random signs at random distinct (row, column) positions: the singular values are |c·ρ^i|.
  const rows = Array.from({ length: n }, (_, i) => i).sort(() => rng.next() - 0.5);
  const cols = Array.from({ length: m }, (_, i) => i).sort(() => rng.next() - 0.5);
  const w = new Float32Array(n * m);
  for (let i = 0; i < k; i++) w[rows[i] * m + cols[i]] = (rng.next() < 0.5 ? -1 : 1) * c * rho ** i;
  const g = await weightGains(tensor(w, { shape: [n, m] }));
  equal(g.k, k);
  assertClose(g.spectral, geometricGain(rho, k), { atol: 1e-5, rtol: 1e-5 });
  assertClose(g.logarithmic, Array.from({ length: k }, (_, i) => Math.log(i + 1) / Math.log(k)), {
    atol: 1e-12,
  });
});

Deno.test("spectral gain: equal singular values give r/K, a single one gives 1/r, Q[K] ≤ 1", () => {
  const rng = new TestRng(2);
  const k = rng.int(5, 40);
  const v = 0.1 + rng.next();
  assertClose(spectralGainCurve(new Array(k).fill(v)), Array.from({ length: k }, (_, i) => (i + 1) / k), {
    atol: 1e-12,
  });
  const one = new Array(k).fill(0);
  one[rng.int(0, k - 1)] = v;
  assertClose(spectralGainCurve(one), Array.from({ length: k }, (_, i) => 1 / (i + 1)), { atol: 1e-12 });
  const random = Array.from({ length: k }, () => rng.next());
  const q = spectralGainCurve(random);
  for (const x of q) ok(x >= 0 && x <= 1 + 1e-12, `Q out of [0, 1]: ${x}`);
  // Q[1] = s_max² / Σ s²
  const total = random.reduce((s, x) => s + x * x, 0);
  assertClose([q[0]], [Math.max(...random) ** 2 / total], { atol: 1e-12 });
});

Deno.test("spectral gain through the device SVD of U·diag(s)·Vᵀ matches the prescribed spectrum's", async () => {
  const rng = new TestRng(3);
  const n = rng.int(20, 30);
  const m = rng.int(14, 19);
  const s = Array.from({ length: m }, () => 0.05 + 3 * rng.next());
  const w = withSpectrum(rng, n, m, s);
  const g = await weightGains(tensor(toF32(w), { shape: [n, m] }));
  assertClose(g.spectral, spectralGainCurve(s), { atol: 2e-5, rtol: 1e-4 });
  const direct = compareGains(s);
  assertClose([g.meanAbsError], [direct.meanAbsError], { atol: 2e-5 });
});

Deno.test("logarithmic gain curve agrees with loramLogGain and rejects bad input", () => {
  const rng = new TestRng(4);
  const k = rng.int(2, 500);
  const curve = logGainCurve(k);
  const r = rng.int(1, k);
  assertClose([curve[r - 1]], [loramLogGain(r, k, k + rng.int(0, 9))], { atol: 1e-12 });
  equal(curve[k - 1], 1);
  throws(() => spectralGainCurve([]), /at least one/);
  throws(() => spectralGainCurve([1, -2]), /singular value 1 is -2/);
  throws(() => logGainCurve(0), /integer >= 1/);
});
