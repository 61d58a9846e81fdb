import { equal, match, ok, throws } from "node:assert/strict";
import {
  MAX_PAIRS_NEEDED,
  pairedDifference,
  pairedVerdict,
  pairsNeeded,
  seedsNote,
  tQuantile975,
} from "../../lab/paired.ts";

Deno.test("pairedDifference: mean, sample std and 95% half-width of per-seed differences", () => {
  const a = Array.from({ length: 6 }, () => Math.random());
  const b = a.map((x) => x - 0.5 + 0.1 * Math.random());
  const d = pairedDifference(a, b);
  const diffs = a.map((x, i) => x - b[i]);
  const mean = diffs.reduce((s, x) => s + x, 0) / 6;
  const std = Math.sqrt(diffs.reduce((s, x) => s + (x - mean) ** 2, 0) / 5);
  ok(Math.abs(d.mean - mean) < 1e-12);
  ok(Math.abs(d.std - std) < 1e-12);
  // t(5) at 97.5% is 2.571 (standard tables).
  ok(Math.abs(d.half - 2.571 * std / Math.sqrt(6)) < 1e-12);
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

Deno.test("tQuantile975 and pairsNeeded follow Student's t", () => {
  equal(tQuantile975(1), 12.706);
  equal(tQuantile975(30), 2.042);
  ok(Math.abs(tQuantile975(120) - 1.98) < 0.002); // table value 1.980
  throws(() => tQuantile975(0), /df/);
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
