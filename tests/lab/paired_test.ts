import { equal, match, ok, throws } from "node:assert/strict";
import {
  formatPaired,
  MAX_PAIRS_NEEDED,
  pairedDifference,
  pairedVerdict,
  pairsNeeded,
  seedsNote,
  tQuantile975,
} from "../../lab/paired.ts";
import { formatNumber } from "../../lab/report.ts";
import { TestRng } from "../_helpers.ts";

/** scipy.stats.t.ppf(0.975, df) in float64 (scipy 1.x), by df. */
const T975_SCIPY: readonly (readonly [number, number])[] = [
  [1, 12.706204736174694],
  [2, 4.302652729749462],
  [3, 3.1824463052837078],
  [4, 2.7764451051977934],
  [5, 2.5705818356363146],
  [6, 2.4469118511449786],
  [7, 2.364624251592784],
  [8, 2.306004135204166],
  [9, 2.262157162798205],
  [10, 2.228138851986274],
  [11, 2.200985160091639],
  [12, 2.1788128296672284],
  [13, 2.1603686564627913],
  [14, 2.144786687917804],
  [15, 2.131449545559776],
  [16, 2.1199052992212546],
  [17, 2.1098155778333156],
  [18, 2.1009220402410382],
  [19, 2.0930240544083087],
  [20, 2.085963447265864],
  [21, 2.0796138447276795],
  [22, 2.0738730679040254],
  [23, 2.0686576104190486],
  [24, 2.0638985616280245],
  [25, 2.0595385527532972],
  [26, 2.0555294386428735],
  [27, 2.0518305164802846],
  [28, 2.0484071417952454],
  [29, 2.045229642132703],
  [30, 2.0422724563012378],
  [31, 2.039513446396408],
  [32, 2.0369333434601016],
  [40, 2.021075390306273],
  [50, 2.008559112100761],
  [60, 2.0002978220142604],
  [99, 1.9842169515864174],
  [100, 1.9839715185235518],
  [101, 1.983731002955606],
  [120, 1.9799304050824402],
  [150, 1.9759053308966201],
  [200, 1.9718962236339088],
  [500, 1.9647198374673676],
  [1000, 1.9623390808264083],
  [9999, 1.960201263621357],
];

Deno.test("pairedDifference: mean, sample std and 95% half-width of per-seed differences", () => {
  const a = Array.from({ length: 6 }, () => Math.random());
  const b = a.map((x) => x - 0.5 + 0.1 * Math.random());
  const d = pairedDifference(a, b);
  const diffs = a.map((x, i) => x - b[i]);
  const mean = diffs.reduce((s, x) => s + x, 0) / 6;
  const std = Math.sqrt(diffs.reduce((s, x) => s + (x - mean) ** 2, 0) / 5);
  ok(Math.abs(d.mean - mean) < 1e-12);
  ok(Math.abs(d.std - std) < 1e-12);
  // t(5) at 97.5% is 2.5705818356363146 (scipy).
  ok(Math.abs(d.half - 2.5705818356363146 * std / Math.sqrt(6)) < 1e-12);
  equal(d.n, 6);
  throws(() => pairedDifference([1, 2], [1]), /equally long/);
});

Deno.test("pairedVerdict: the sign of a clear difference, inconclusive when the interval covers 0", () => {
  const base = Array.from({ length: 5 }, () => 1 + Math.random());
  const noise = () => 0.01 * (Math.random() - 0.5);
  equal(pairedVerdict(pairedDifference(base.map((x) => x + 0.5 + noise()), base)), "reproduced");
  equal(pairedVerdict(pairedDifference(base.map((x) => x - 0.5 + noise()), base)), "not reproduced");
  // Differences +1, −1, +1, −1, +0.1: mean 0.02, interval far wider.
  equal(pairedVerdict(pairedDifference([1, -1, 1, -1, 0.1], [0, 0, 0, 0, 0])), "inconclusive");
  equal(pairedVerdict(pairedDifference([5], [1])), "inconclusive");
});

Deno.test("pairedVerdict refuses a threshold that is not a finite number, which it judged inconclusive", () => {
  const rng = new TestRng(4103);
  const b = Array.from({ length: 4 }, () => rng.next());
  const d = pairedDifference(b.map((x) => x + 1 + 0.01 * rng.next()), b);
  equal(pairedVerdict(d), "reproduced");
  for (const t of [NaN, Infinity, -Infinity]) {
    throws(() => pairedVerdict(d, t), /threshold must be a finite number/);
  }
});

Deno.test("pairedVerdict judges by the exact t interval: a mean just inside it is inconclusive", () => {
  // Random differences with their mean set just inside the exact 95% interval's edge (lower bound −1e-4·se
  // below 0): inconclusive by the stated rule, whatever the sample. A t(n−1) a few 1e-3 too small (the
  // rounded tables and 1.96 + 2.4/df beyond 30 were) would put the interval above 0 and read "reproduced".
  const rng = new TestRng(4101);
  for (const [df, q] of T975_SCIPY.filter(([df]) => df >= 3 && df <= 60)) {
    const n = df + 1;
    const raw = Array.from({ length: n }, () => rng.normal());
    const m = raw.reduce((s, x) => s + x, 0) / n;
    const centred = raw.map((x) => x - m);
    const se = Math.sqrt(centred.reduce((s, x) => s + x * x, 0) / (n - 1)) / Math.sqrt(n);
    const shift = (q - 1e-4) * se;
    const zeros = centred.map(() => 0);
    equal(pairedVerdict(pairedDifference(centred.map((x) => x + shift), zeros)), "inconclusive", `n ${n}`);
    equal(
      pairedVerdict(pairedDifference(centred.map((x) => x + (q + 1e-4) * se), zeros)),
      "reproduced",
      `n ${n}`,
    );
  }
});

Deno.test("formatPaired prints the interval's ends on the side of the threshold the verdict judges them on", () => {
  // Random differences shifted so that one end of the exact 95% interval (mean ∓ half, what pairedVerdict compares)
  // lies within 1e-4 relative of a non-zero threshold: four digits would often print that end as the threshold
  // itself, or past it. Parsed back, each printed end must be on its exact value's side, and so read as the verdict.
  const rng = new TestRng(4102);
  let crossing = 0;
  for (let trial = 0; trial < 300; trial++) {
    const n = rng.int(3, 8);
    const t = (0.01 + rng.next()) * (rng.next() < 0.5 ? -1 : 1);
    const raw = Array.from({ length: n }, () => rng.normal() * Math.abs(t) * (0.01 + rng.next()));
    const d0 = pairedDifference(raw, raw.map(() => 0));
    const target = t * (1 + (2 * rng.next() - 1) * 1e-4);
    const shift = trial % 2 === 0 ? target + d0.half - d0.mean : target - d0.half - d0.mean;
    const b = raw.map(() => 1 + rng.next());
    const d = pairedDifference(b.map((x, i) => x + raw[i] + shift), b);
    const [lo, hi] = [d.mean - d.half, d.mean + d.half];
    const near = trial % 2 === 0 ? lo : hi;
    if (Math.sign(Number(formatNumber(near, 4)) - t) !== Math.sign(near - t)) crossing++;
    const text = formatPaired(d, 4, { against: [t] });
    const m = /, interval (.+?)\.\.(.+?), \d+ pairs\)$/.exec(text);
    ok(m !== null, `no interval in ${text}`);
    const [shownLo, shownHi] = [Number(m[1]), Number(m[2])];
    const at = `${text} against ${t} (exact ends ${lo}, ${hi})`;
    equal(Math.sign(shownLo - t), Math.sign(lo - t), at);
    equal(Math.sign(shownHi - t), Math.sign(hi - t), at);
    const read = shownLo > t ? "reproduced" : shownHi < t ? "not reproduced" : "inconclusive";
    equal(pairedVerdict(d, t), read, at);
  }
  // The draw reaches the case the test is about: four digits alone put the end on the threshold's other side.
  ok(crossing > 10, `only ${crossing} of 300 ends would cross at four digits`);
});

Deno.test("tQuantile975 and pairsNeeded follow Student's t", () => {
  // Relative error 1e-10: the closed form up to df 100 agrees to about 1e-14, the expansion beyond to 4e-11.
  for (const [df, q] of T975_SCIPY) {
    ok(Math.abs(tQuantile975(df) - q) <= 1e-10 * q, `df ${df}: ${tQuantile975(df)} vs scipy ${q}`);
  }
  // Closed forms: t(1) = tan(0.475π); for df 2, P(|T| ≤ t) = t/√(t² + 2), so t = 0.95·√(2/(1 − 0.95²)).
  ok(Math.abs(tQuantile975(1) - Math.tan(0.475 * Math.PI)) < 1e-12);
  ok(Math.abs(tQuantile975(2) - 0.95 * Math.sqrt(2 / (1 - 0.95 ** 2))) < 1e-13);
  throws(() => tQuantile975(0), /df/);
  throws(() => tQuantile975(2.5), /df/);
  // Mean 1, std 1: n = 7 is the first with t(n−1)/√n < 1 (t(6) = 2.447 → 0.925; t(5) = 2.571 → 1.05).
  equal(pairsNeeded({ mean: 1, std: 1, n: 3, half: 0 }), 7);
  equal(pairsNeeded({ mean: 0, std: 1, n: 3, half: 0 }), null);
  // One pair has no spread to go on (its std is 0 by convention), and NaN is no mean: no estimate, not 2 or "0".
  throws(() => pairsNeeded(pairedDifference([0.5], [0.49])), /1 pair\(s\) .* gives no estimate/);
  throws(() => pairsNeeded(pairedDifference([NaN, 1], [0, 0])), /mean NaN/);
});

Deno.test("pairsNeeded and seedsNote tell a difference beyond 10 000 pairs from a mean of 0", () => {
  // The smallest n with t(n−1)·std/√n < |mean| is 10 000 for a std just below √10000/t(9999) (and above
  // √9999/t(9998)); just above it, more than 10 000 pairs are needed.
  const edge = Math.sqrt(MAX_PAIRS_NEEDED) / tQuantile975(MAX_PAIRS_NEEDED - 1);
  const below = Math.sqrt(MAX_PAIRS_NEEDED - 1) / tQuantile975(MAX_PAIRS_NEEDED - 2);
  equal(pairsNeeded({ mean: 1, std: (edge + below) / 2, n: 3, half: 0 }), MAX_PAIRS_NEEDED);
  equal(pairsNeeded({ mean: 1, std: edge * (1 + 1e-9), n: 3, half: 0 }), Infinity);
  // Differences 0.001, 0, 1, −1: mean 2.5e-4 with std 0.82 needs about (1.96·0.82/2.5e-4)² ≈ 4e7 pairs.
  const far = pairedDifference([1.001, 0, 2, -1], [1, 0, 1, 0]);
  equal(pairsNeeded(far), Infinity);
  match(seedsNote(far, 2, 30), /more than 10,000 seeds/);
  match(seedsNote(pairedDifference([1, -1, 0], [0, 0, 0]), 2, 30), /mean difference is 0/);
  match(
    seedsNote(pairedDifference([1, -1, 0.5], [0, 0, 0]), 2, 30),
    /^about \d+ seeds .* min on this device$/,
  );
});

Deno.test("formatPaired prints a std that is rounding noise of the mean as 0, as formatMeanStd does", () => {
  // Equal differences have an exact std of 0; their float mean rounds, and the float std is then a few ulps.
  const values = [0.7, 0.1, 1 + new TestRng(48).next()];
  const noisy = values.map((v) => pairedDifference([v, v, v], [0, 0, 0])).filter((d) => d.std > 0);
  ok(noisy.length > 0, "no equal differences with a float std above 0");
  // With no spread there is no interval to print: the text says so, as pairedVerdict reads it inconclusive.
  for (const d of noisy) {
    match(formatPaired(d), /^\S+ ± 0 \(3 pairs, the same values in every pair: no spread/);
  }
  // A spread beyond a few ulps of the mean is still shown.
  const apart = pairedDifference([1, 1 + 1e-12, 1], [0, 0, 0]);
  match(formatPaired(apart), new RegExp(`^\\S+ ± ${formatNumber(apart.std, 3).replace(".", "\\.")} \\(`));
});

Deno.test("seedsNote prints runs under a second and totals under a minute in significant digits", () => {
  const d = pairedDifference([1, -1, 0.5, 0.8], [0, 0, 0, 0]);
  const pairs = pairsNeeded(d);
  ok(typeof pairs === "number" && Number.isFinite(pairs), `pairs ${pairs}`);
  const fast = 0.4 + 0.05 * new TestRng(50).next();
  const total = pairs * 2 * fast;
  ok(total < 60, `total ${total}`);
  match(
    seedsNote(d, 2, fast),
    new RegExp(` × ${formatNumber(fast, 2)} s ≈ ${formatNumber(total, 2)} s on this`),
  );
  const slow = 120 / pairs;
  match(
    seedsNote(d, 2, slow),
    new RegExp(`≈ ${formatNumber((pairs * 2 * slow) / 60, 2)} min on this device$`),
  );
  ok(!seedsNote(d, 2, fast).includes(" 0 s") && !seedsNote(d, 2, fast).includes("0 min"));
});

/** Distinct integers from 1 to 1000, `n` of them: values whose sums with a dyadic constant are exact. */
function distinctInts(rng: TestRng, n: number): number[] {
  const out = new Set<number>();
  while (out.size < n) out.add(rng.int(1, 1000));
  return [...out];
}

Deno.test("pairedVerdict: runs that are the same in every seed are inconclusive; runs that vary by the same difference are judged", () => {
  // x an integer and c a multiple of 1/1024: every a − b is c exactly. With the same runs in every seed the 95%
  // interval is the point c, which read "reproduced" (c > 0) or "not reproduced" (c < 0) though the seeds varied
  // nothing; with runs that vary over the seeds, the same difference in each is what the pairing found.
  const rng = new TestRng(5201);
  for (let trial = 0; trial < 20; trial++) {
    const n = rng.int(2, 8);
    const c = (trial % 2 === 0 ? 1 : -1) * rng.int(1, 4096) / 1024;
    const x = rng.int(1, 1000);
    const same = pairedDifference(Array(n).fill(x + c), Array(n).fill(x));
    equal(same.std, 0);
    equal(same.mean, c);
    equal(pairedVerdict(same), "inconclusive", `c ${c}, n ${n}`);
    equal(pairedVerdict(same, c / 2), "inconclusive");
    equal(
      formatPaired(same),
      `${formatNumber(c, 4)} ± 0 (${n} pairs, the same values in every pair: no spread, no interval)`,
    );
    // No estimate of the seeds needed: a spread of 0 made 2 pairs look enough.
    throws(() => pairsNeeded(same), new RegExp(`${n} pairs of the same values .* give no estimate`));
    const note = seedsNote(same, 2, 30);
    match(note, /no number of seeds is estimated/);
    ok(!/about \d+ seeds/.test(note), note);
    // The runs vary over the seeds (distinct b), their difference does not: judged by the interval, a point.
    const b = distinctInts(rng, n);
    const d = pairedDifference(b.map((v) => v + c), b);
    equal(d.std, 0);
    equal(pairedVerdict(d), c > 0 ? "reproduced" : "not reproduced", `c ${c}, n ${n}`);
    match(formatPaired(d), /, interval .*\.\..*, \d+ pairs\)$/);
  }
});

Deno.test("pairedVerdict: runs the same in every seed up to rounding repeat one measurement", () => {
  // One side the same value in every seed but for an ulp (computed twice in another order, say), the other exact:
  // neither varies over the seeds, so the pairs repeat one measurement, though the differences' std is above 0.
  const rng = new TestRng(5202);
  for (let trial = 0; trial < 20; trial++) {
    const n = rng.int(3, 8);
    const v = 1 + rng.next();
    const a = Array.from({ length: n }, (_, i) => (i % 2 === 0 ? v : v + v * Number.EPSILON));
    ok(a.some((x) => x !== v), "no value an ulp apart");
    const b = Array(n).fill(0); // a − 0 keeps the ulp
    const d = pairedDifference(a, b);
    ok(d.std > 0, `std ${d.std}`);
    equal(pairedVerdict(d), "inconclusive", `std ${d.std}`);
    match(formatPaired(d), /the same values in every pair/);
    throws(() => pairsNeeded(d), /give no estimate/);
    // Differences of runs that vary (0.1 + k) − k spread by rounding of k: a constant difference, judged.
    const k = distinctInts(rng, n);
    equal(pairedVerdict(pairedDifference(k.map((x) => 0.1 + x), k)), "reproduced");
  }
});

Deno.test("pairedVerdict: a small but real spread keeps its verdict", () => {
  // Differences c + 1e-9·z (z standard normal, values near 1..1000): a spread a million ulps wide, an interval
  // clear of 0 by far.
  const rng = new TestRng(5203);
  for (let trial = 0; trial < 20; trial++) {
    const n = rng.int(3, 8);
    const b = distinctInts(rng, n).map((x) => x + rng.next());
    const c = (trial % 2 === 0 ? 1 : -1) * (0.05 + rng.next());
    const d = pairedDifference(b.map((x) => x + c + 1e-9 * rng.normal()), b);
    ok(d.std > 1e-11, `std ${d.std}`);
    equal(pairedVerdict(d), c > 0 ? "reproduced" : "not reproduced", `c ${c}`);
    match(formatPaired(d), /, interval .*\.\..*, \d+ pairs\)$/);
    equal(pairsNeeded(d), 2);
  }
});
