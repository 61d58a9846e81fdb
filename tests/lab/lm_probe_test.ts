/**
 * LM probes: the initial update's size per module type against float64 norms of the attached layers, per-matrix
 * comparisons against direct formulas, Spearman's ρ against closed forms, and the paired and rank-order rules.
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { formatMeanStd, meanStd } from "../../lab/report.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { attachLora } from "../../lib/init/mod.ts";
import {
  adapterStates,
  compareAdapters,
  equivalenceClaim,
  magnitudeTable,
  orderClaim,
  pairedClaim,
  pairedDiff,
  pairedSpreadVerdict,
  spearman,
  thesisClaims,
  updateMagnitudes,
  weightNorms,
} from "../../lab/lm_probe.ts";
import { TestRng } from "../_helpers.ts";

function norm64(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

Deno.test("lm probe: ‖s·B₀·A₀‖/‖W‖ per module type matches float64 norms of the original weights", async () => {
  const rng = new TestRng(1801);
  const seed = rng.int(1, 1000);
  const model = {
    layers: [0, 1].map((i) => ({
      wq: new Linear(10, 12, { seed: seed + 3 * i, bias: false }),
      w2: new Linear(12, 8, { seed: seed + 3 * i + 1, bias: false }),
    })),
  };
  // The original weights, before PiSSA rewrites the base.
  const w = new Map<string, Float32Array>();
  for (const [i, l] of model.layers.entries()) {
    w.set(`layers.${i}.wq`, await l.wq.weight.data() as Float32Array);
    w.set(`layers.${i}.w2`, await l.w2.weight.data() as Float32Array);
  }
  const norms = await weightNorms(model, ["wq", "w2"]);
  for (const [p, v] of w) ok(Math.abs(norms[p] - norm64(v)) < 1e-4 * norm64(v), p);
  await attachLora(model, { targetModules: ["wq", "w2"], rank: 3, alpha: 6, init: "pissa", seed });
  const states = await adapterStates(model);
  const mag = updateMagnitudes(states, norms);
  for (const t of ["wq", "w2"]) {
    let num = 0, den = 0;
    for (const i of [0, 1]) {
      num += norm64(states.get(`layers.${i}.${t}`)!.delta) ** 2;
      den += norm64(w.get(`layers.${i}.${t}`)!) ** 2;
    }
    ok(Math.abs(mag[t] - Math.sqrt(num / den)) < 1e-6, `${t}: ${mag[t]}`);
    // PiSSA's s·B₀·A₀ is W's top-3 part: strictly inside (0, 1) of W's norm.
    ok(mag[t] > 0 && mag[t] < 1, `${t}: ${mag[t]}`);
  }
  ok(mag.all > 0 && mag.all < 1);
  throws(() => updateMagnitudes(states, {}), /no weight norm for layer/);
});

Deno.test("lm probe: per-matrix comparison matches its formulas; B₀ = 0 gives null cosines", () => {
  const rng = new TestRng(1802);
  const n = 12;
  const a0 = rng.normals(n), a1 = rng.normals(n), b1 = rng.normals(n);
  const d0 = rng.normals(n), d1 = rng.normals(n);
  const c = compareAdapters({ a: a0, b: b1, delta: d0 }, { a: a1, b: b1, delta: d1 });
  const dot = (x: Float32Array, y: Float32Array) => x.reduce((s, v, i) => s + v * y[i], 0);
  const travel = Float64Array.from(d1, (v, i) => v - d0[i]);
  ok(Math.abs(c.cosA! - dot(a0, a1) / (norm64(a0) * norm64(a1))) < 1e-6);
  ok(Math.abs(c.cosB! - 1) < 1e-6);
  ok(Math.abs(c.travelled - norm64(travel)) < 1e-5);
  ok(Math.abs(c.travelledOverInit! - norm64(travel) / norm64(d0)) < 1e-5);
  ok(Math.abs(c.travelledOverFinal! - norm64(travel) / norm64(d1)) < 1e-5);
  const cosT = travel.reduce((s, v, i) => s + v * d0[i], 0) / (norm64(travel) * norm64(d0));
  ok(Math.abs(c.cosTravel! - cosT) < 1e-5);
  const zero = new Float32Array(n);
  const z = compareAdapters({ a: a0, b: zero, delta: zero }, { a: a1, b: b1, delta: d1 });
  equal(z.cosB, null);
  equal(z.cosDelta, null);
  equal(z.travelledOverInit, null);
  ok(Math.abs(z.travelledOverFinal! - 1) < 1e-6);
});

Deno.test("lm probe: Spearman's ρ is 1 for any increasing map, −1 reversed, and 1 − 6Σd²/(n(n²−1)) without ties", () => {
  const rng = new TestRng(1803);
  const x = Array.from({ length: 9 }, () => rng.normal());
  equal(spearman(x, x.map((v) => Math.exp(3 * v))), 1);
  equal(spearman(x, x.map((v) => -(v ** 3))), -1);
  const y = Array.from({ length: 9 }, () => rng.normal());
  const rank = (v: number[]) => v.map((a) => v.filter((b) => b < a).length + 1);
  const rx = rank(x), ry = rank(y);
  const d2 = rx.reduce((s, r, i) => s + (r - ry[i]) ** 2, 0);
  ok(Math.abs(spearman(x, y) - (1 - (6 * d2) / (9 * 80))) < 1e-12);
  // Ties take their mean rank: ranks of [1, 1, 2] are [1.5, 1.5, 3].
  ok(Math.abs(spearman([1, 1, 2], [1, 2, 3]) - Math.sqrt(3) / 2) < 1e-12);
  throws(() => spearman([1], [1]), /two equally long series/);
  throws(() => spearman([1, NaN], [1, 2]), /non-finite/);
});

Deno.test("lm probe: the paired rule judges m ± 2·sd against the threshold", () => {
  const rng = new TestRng(1804);
  for (let i = 0; i < 40; i++) {
    const sd = 0.01 + rng.next();
    const k = rng.next() * 8 - 4;
    const t = rng.next() < 0.5 ? 0 : rng.next() * sd;
    const d = { mean: t + k * sd, std: sd, n: 5 };
    const want = k > 2 ? "reproduced" : k < -2 ? "not reproduced" : "inconclusive";
    equal(pairedSpreadVerdict(d, t), want, `k ${k}`);
  }
  equal(pairedSpreadVerdict({ mean: 10, std: 0, n: 2 }), "inconclusive");
  const a = [3, 4, 5, 6], b = [1, 2, 2, 3];
  const d = pairedDiff(a, b);
  ok(Math.abs(d.mean - 2.5) < 1e-12);
  ok(Math.abs(d.std - Math.sqrt(1 / 3)) < 1e-12);
  const c = pairedClaim("A beats B.", "B minus A", a, b);
  equal(c.verdict, "reproduced");
  ok(c.rule.includes("paired by seed") && c.rule.includes("4 seeds"));
  throws(() => pairedDiff([1, 2], [1]), /one of each per seed/);
  const base = [1, 2, 3, 4, 5].map(() => rng.next());
  const near = base.map((v) => v + 0.001 * (rng.next() - 0.5));
  equal(equivalenceClaim("A matches B.", "A minus B", near, base, 0.01).verdict, "reproduced");
  equal(
    equivalenceClaim("A matches B.", "A minus B", near.map((v) => v + 0.1), base, 0.01).verdict,
    "not reproduced",
  );
  const spread = 0.002 + 0.01 * rng.next();
  equal(
    equivalenceClaim(
      "A matches B.",
      "A minus B",
      // Differences centred exactly on the margin with a random spread: m ± 2·sd straddles it whatever is drawn.
      base.map((v, i) => v + 0.01 + spread * [-2, -1, 0, 1, 2][i]),
      base,
      0.01,
    )
      .verdict,
    "inconclusive",
  );
});

Deno.test("lm probe: a threshold that is not a number, or a margin of 0 or less, is refused by name", () => {
  const rng = new TestRng(1805);
  const b = Array.from({ length: 5 }, () => rng.next());
  // Equal pairs: every |difference| is 0, within any positive margin; a margin ≤ 0 judged it "not reproduced".
  for (const margin of [-0.5 * rng.next() - 0.01, 0, NaN, Infinity]) {
    throws(
      () => equivalenceClaim("A matches B.", "A minus B", b, b, margin),
      /margin must be a finite number > 0/,
    );
  }
  const a = b.map((v) => v + 1 + 0.01 * rng.next());
  for (const t of [NaN, Infinity]) {
    throws(
      () => pairedSpreadVerdict(pairedDiff(a, b), t),
      new RegExp(`threshold must be a finite number, got ${t}`),
    );
    throws(() => pairedClaim("A beats B.", "A minus B", a, b, undefined, t), /pairedClaim: threshold/);
  }
});

Deno.test("lm probe: the rank-order claim follows the sign and size of ρ over seeds", () => {
  const rng = new TestRng(1805);
  const points = (sign: number) =>
    [0, 1, 2, 3].flatMap((seed) =>
      ["a", "b", "c", "d", "e"].map((label, i) => ({
        label,
        seed,
        x: i + rng.next() * 0.1,
        y: sign * i + 0.01 * seed,
      }))
    );
  equal(orderClaim("init", points(-1)).verdict, "reproduced");
  equal(orderClaim("init", points(1)).verdict, "not reproduced");
  equal(orderClaim("init", points(-1).filter((p) => p.seed < 2)).verdict, "inconclusive");
  equal(orderClaim("init", points(-1).filter((p) => p.label < "c")).verdict, "inconclusive"); // 2 methods: no ρ
});

Deno.test("lm probe: the rank-order claim leaves out a seed with a non-finite value, as its rule says", () => {
  // y falls strictly with x in every seed, so each usable seed's ρ is −1 (closed form); seed 1 holds a diverged
  // run (NaN early loss) and seed 3 an infinite predictor: left out, 3 of 5 seeds remain, mean(−ρ) = 1, se 0.
  const rng = new TestRng(1806);
  const points = [0, 1, 2, 3, 4].flatMap((seed) =>
    ["a", "b", "c", "d"].map((label, i) => {
      const x = i + rng.next() * 0.5;
      return {
        label,
        seed,
        x: seed === 3 && i === 2 ? Infinity : x,
        y: seed === 1 && i === 0 ? NaN : 5 - x ** 2,
      };
    })
  );
  const c = orderClaim("init", points);
  equal(c.verdict, "reproduced");
  equal(c.rhos.length, 3);
  ok(c.rhos.every((r) => Math.abs(r + 1) < 1e-12), `ρ ${c.rhos}`);
  ok(c.rule.includes("3 of 5 seeds usable"), c.rule);
  ok(c.evidence.includes("left out: seeds 1, 3"), c.evidence);
});

Deno.test("lm probe: LoRAM's thesis is judged with both predictors, and not at all with fewer than 3 methods", () => {
  const rng = new TestRng(2207);
  // Early loss falls as the initial update grows (ρ = −1 per seed); the step-1 gradient norm rises with the loss
  // (ρ = +1): the first claim holds, the second does not.
  const runs = [0, 1, 2].flatMap((seed) =>
    ["a", "b", "c", "d"].map((label, i) => {
      const size = (i + 1) * (0.5 + rng.next());
      return { label, seed, magnitude: { all: size }, gradNorms: [10 - size, 1], early: 5 - size };
    })
  );
  const [byMagnitude, byGrad] = thesisClaims(runs, (r) => r.early);
  equal(byMagnitude.verdict, "reproduced");
  ok(byMagnitude.claim.includes("initial update") && byMagnitude.rhos.every((r) => Math.abs(r + 1) < 1e-12));
  equal(byGrad.verdict, "not reproduced");
  ok(byGrad.claim.includes("step-1 gradient norm") && byGrad.rhos.every((r) => Math.abs(r - 1) < 1e-12));
  equal(thesisClaims(runs.filter((r) => r.label < "c"), (r) => r.early).length, 0);
});

Deno.test("lm probe: the rank-order and equivalence rules print their minimum and the seeds they used", () => {
  // Seed 3's predictor is tied across methods, so its ρ is undefined: 3 of 4 seeds are usable, and the rule says so.
  const points = [0, 1, 2, 3].flatMap((seed) =>
    ["a", "b", "c", "d"].map((label, i) => ({ label, seed, x: seed === 3 ? 1 : i, y: -i }))
  );
  const c = orderClaim("init", points);
  equal(c.rhos.length, 3);
  ok(c.rule.includes("3 of 4 seeds usable (at least 3 seeds and 3 methods to judge)"), c.rule);
  ok(c.evidence.includes("left out: seed 3 (ρ undefined"), c.evidence);
  const e = equivalenceClaim("A matches B.", "A minus B", [1, 1], [1, 1], 0.01);
  equal(e.verdict, "inconclusive");
  ok(e.rule.includes("2 seeds (at least 3 to judge)"), e.rule);
});

Deno.test("lm_probe: orderClaim prints the mean ρ on the side of −0.5 its value is on", () => {
  const rng = new TestRng(2107);
  // Spearman's ρ of a permutation against 0..n−1 (no ties), in closed form: 1 − 6·Σd² / (n·(n² − 1)).
  const n = 30;
  const rho = (ranks: readonly number[]) =>
    1 - 6 * ranks.reduce((s, r, i) => s + (r - i) ** 2, 0) / (n * (n * n - 1));
  // The loss ranks of a seed: reversed (ρ = −1) with noise, so that ρ scatters around −0.5.
  const draw = () => {
    const noisy = Array.from({ length: n }, (_, i) => n - i + 14 * rng.normal());
    const order = noisy.map((v, i) => [v, i]).sort((a, b) => a[0] - b[0]).map(([, i]) => i);
    const ranks = new Array<number>(n);
    order.forEach((i, r) => (ranks[i] = r));
    return ranks;
  };
  let found = 0;
  for (let tries = 0; tries < 20_000 && found < 20; tries++) {
    const seeds = [draw(), draw(), draw()];
    const m = -seeds.map(rho).reduce((a, b) => a + b, 0) / 3;
    // Within 5e-4 of 0.5 and not on it: three decimals would print it as 0.500.
    if (!(Math.abs(m - 0.5) < 5e-4) || m === 0.5) continue;
    found++;
    const points = seeds.flatMap((ranks, seed) =>
      ranks.map((r, i) => ({ label: `m${i}`, seed, x: i, y: r }))
    );
    const c = orderClaim("init", points);
    const printed = Number(/mean ρ (\S+) ±/.exec(c.evidence)![1]);
    equal(Math.sign(printed + 0.5), Math.sign(-m + 0.5), `mean(−ρ) ${m}: ${c.evidence}`);
    if (c.verdict === "reproduced") ok(printed <= -0.5, c.evidence);
  }
  ok(found >= 5, `only ${found} draws near 0.5`);
});

Deno.test("lm_probe: paired and equivalence claims print the mean difference on the side of their threshold", () => {
  const rng = new TestRng(2108);
  const printedMean = (evidence: string) => Number(/paired difference (\S+) ±/.exec(evidence)![1]);
  let crossed = 0;
  for (let i = 0; i < 200; i++) {
    const t = rng.next() < 0.5 ? [0.01, 0.02, 0.05][rng.int(0, 2)] : 0.001 + 0.1 * rng.next();
    // A mean a relative 1e-3..1e-9 from the threshold (or on it), with a small spread: m ± 2·sd decides.
    const m = rng.next() < 0.1 ? t : t * (1 + (rng.next() < 0.5 ? -1 : 1) * 10 ** -rng.int(3, 9));
    const b = Array.from({ length: 5 }, () => rng.next());
    const a = b.map((v, j) => v + m + 1e-12 * [-2, -1, 0, 1, 2][j]);
    const d = pairedDiff(a, b);
    const side = Math.sign(d.mean - t);
    if (Math.sign(Number(d.mean.toFixed(4)) - t) !== side) crossed++;
    const paired = pairedClaim("A beats B.", "A minus B", a, b, undefined, t);
    equal(Math.sign(printedMean(paired.evidence) - t), side, `${d.mean} vs ${t}: ${paired.evidence}`);
    const equivalent = equivalenceClaim("A matches B.", "A minus B", a, b, t);
    equal(Math.sign(printedMean(equivalent.evidence) - t), side, `${d.mean} vs ${t}: ${equivalent.evidence}`);
  }
  ok(crossed > 10, `only ${crossed} means that four decimals would print across the threshold`);
});

Deno.test("lm_probe: paired and equivalence claims print the ends m ± 2·sd on the side of the threshold they are judged on", () => {
  const rng = new TestRng(2111);
  const num = String.raw`(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)`;
  const ends = (evidence: string, label: string) => {
    const hit = new RegExp(`${label.replaceAll("|", "\\|")} ${num}\\.\\.${num}\\.$`).exec(evidence);
    ok(hit !== null, `no ends in: ${evidence}`);
    return [Number(hit[1]), Number(hit[2])];
  };
  let crossed = 0;
  for (let i = 0; i < 300; i++) {
    // Five per-seed differences around a random mean with a random spread (float64, as the rule computes them).
    const scale = 10 ** -rng.int(0, 3);
    const mean = scale * (rng.next() * 4 - 2), spread = scale * (0.05 + rng.next());
    const b = Array.from({ length: 5 }, () => rng.next());
    const a = b.map((v) => v + mean + spread * rng.normal());
    const d = pairedDiff(a, b);
    const lo = d.mean - 2 * d.std, hi = d.mean + 2 * d.std;
    // A threshold within a relative 1e-4 of one end (or on it).
    const end = rng.next() < 0.5 ? lo : hi;
    const rel = rng.next() < 0.1 ? 0 : (rng.next() * 2 - 1) * 1e-4;
    const t = end * (1 + rel);
    const naiveLo = Number(d.mean.toFixed(4)) - 2 * Number(d.std.toFixed(4));
    const naiveHi = Number(d.mean.toFixed(4)) + 2 * Number(d.std.toFixed(4));
    if (Math.sign(naiveLo - t) !== Math.sign(lo - t) || Math.sign(naiveHi - t) !== Math.sign(hi - t)) {
      crossed++;
    }
    const paired = pairedClaim("A beats B.", "A minus B", a, b, undefined, t);
    const [pLo, pHi] = ends(paired.evidence, "m ± 2·sd");
    equal(Math.sign(pLo - t), Math.sign(lo - t), `${lo} vs ${t}: ${paired.evidence}`);
    equal(Math.sign(pHi - t), Math.sign(hi - t), `${hi} vs ${t}: ${paired.evidence}`);
    const read = pLo > t ? "reproduced" : pHi < t ? "not reproduced" : "inconclusive";
    equal(read, paired.verdict, `${t}: ${paired.evidence}`);
    equal(paired.verdict, pairedSpreadVerdict(d, t));
    // The equivalence rule's ends are |m| ∓ 2·sd against the margin, a positive one near either end.
    const m = Math.abs(d.mean);
    const aLo = m - 2 * d.std, aHi = m + 2 * d.std;
    const margin = (aLo > 0 && rng.next() < 0.5 ? aLo : aHi) * (1 + rel);
    const eq = equivalenceClaim("A matches B.", "A minus B", a, b, margin);
    const [eLo, eHi] = ends(eq.evidence, "|m| ± 2·sd");
    equal(Math.sign(eLo - margin), Math.sign(aLo - margin), `${aLo} vs ${margin}: ${eq.evidence}`);
    equal(Math.sign(eHi - margin), Math.sign(aHi - margin), `${aHi} vs ${margin}: ${eq.evidence}`);
    const eqRead = eHi < margin ? "reproduced" : eLo > margin ? "not reproduced" : "inconclusive";
    equal(eqRead, eq.verdict, `${margin}: ${eq.evidence}`);
  }
  ok(crossed > 10, `only ${crossed} draws whose ends, worked out from four decimals, cross the threshold`);
});

Deno.test("lm_probe: magnitudeTable renders one seed as one value, as formatMeanStd does", () => {
  const rng = new TestRng(48);
  const run = () => ({ q: rng.next(), v: rng.next(), all: rng.next() });
  const one = run(), two = [run(), run()];
  const table = magnitudeTable([{ name: "a", runs: [one] }, { name: "b", runs: two }], ["q", "v"]);
  deepEqual(table.rows[0], ["a", ...[one.q, one.v, one.all].map((x) => formatMeanStd(meanStd([x]), 3))]);
  ok(table.rows[0].slice(1).every((c) => String(c).endsWith("(one value)")), String(table.rows[0]));
  deepEqual(table.rows[1], [
    "b",
    ...(["q", "v", "all"] as const).map((k) => formatMeanStd(meanStd(two.map((r) => r[k])), 3)),
  ]);
});

Deno.test('lm probe: one seed reads "(one value)" in the paired and rank-order evidence, not "± 0"', () => {
  const rng = new TestRng(1809);
  const a = [1 + rng.next()], b = [rng.next()];
  const paired = pairedClaim("A beats B.", "A minus B", a, b);
  equal(paired.verdict, "inconclusive");
  ok(!paired.evidence.includes("±"), paired.evidence);
  ok(
    paired.evidence.startsWith(`${a[0].toFixed(4)} (one value) vs ${b[0].toFixed(4)} (one value)`),
    paired.evidence,
  );
  ok(paired.evidence.includes(`paired difference ${(a[0] - b[0]).toFixed(4)} (one value).`), paired.evidence);
  const same = equivalenceClaim("A matches B.", "A minus B", a, a, 0.01);
  ok(same.evidence.includes("(one value)") && !same.evidence.includes("±"), same.evidence);
  const points = ["a", "b", "c"].map((label, i) => ({ label, seed: 0, x: i + rng.next() * 0.1, y: -i }));
  const order = orderClaim("init", points);
  equal(order.rhos.length, 1);
  ok(order.evidence.includes(" (one value)") && !order.evidence.includes("±"), order.evidence);
  ok(!order.evidence.includes("se "), order.evidence);
});

Deno.test("lm probe: runs the same in every seed are inconclusive; methods that agree run by run match", () => {
  // Both runs of every pair the same in every seed (exactly, or but for an ulp): m ± 2·sd is then a point, which
  // read "reproduced" or "not reproduced" (and "matches" inside the margin) though the seeds repeated one
  // measurement. Runs that vary over the seeds with the same difference in each are a result: judged.
  const rng = new TestRng(5301);
  for (let trial = 0; trial < 20; trial++) {
    const n = rng.int(3, 8);
    const c = (trial % 2 === 0 ? 1 : -1) * rng.int(1, 4096) / 1024;
    const x = rng.int(1, 9) + rng.next();
    const k = Array(n).fill(x);
    const exact = k.map((v) => v + c);
    const ulp = k.map((v, i) => (i % 2 === 0 ? v + c : (v + c) * (1 + Number.EPSILON)));
    for (const [a, what] of [[exact, "exact"], [ulp, "an ulp apart"]] as const) {
      const d = pairedDiff(a, k);
      const at = `${what}, mean ${d.mean}, std ${d.std}`;
      equal(pairedSpreadVerdict(d), "inconclusive", at);
      const claim = pairedClaim("A beats B.", "A minus B", a, k);
      equal(claim.verdict, "inconclusive", at);
      ok(
        claim.evidence.includes("(n = " + n + ", the same values in every seed: no spread to judge by)"),
        at,
      );
      ok(!claim.evidence.includes("m ± 2·sd"), claim.evidence);
      ok(claim.rule.includes("inconclusive too when every seed gives the same values"), claim.rule);
      // A margin the point lies far inside (or outside): no verdict either way.
      for (const margin of [4 * Math.abs(d.mean), Math.abs(d.mean) / 4]) {
        const eq = equivalenceClaim("A matches B.", "A minus B", a, k, margin);
        equal(eq.verdict, "inconclusive", `${at}, margin ${margin}`);
        ok(eq.rule.includes("inconclusive too when every seed gives the same values"), eq.rule);
      }
    }
    // Runs that vary over the seeds: the same difference c in each is judged, and two methods equal run by run
    // match (a variant that reproduces its reference exactly, e.g. a mode that computes the same adapter).
    const runs = Array.from({ length: n }, (_, i) => 10 * i + rng.int(1, 9));
    equal(
      pairedSpreadVerdict(pairedDiff(runs.map((v) => v + c), runs)),
      c > 0 ? "reproduced" : "not reproduced",
    );
    equal(equivalenceClaim("A matches B.", "A minus B", runs, runs.slice(), 0.01).verdict, "reproduced");
  }
  // A small but real spread (1e-9, a million ulps of values near 1..100) keeps the verdicts.
  const b = Array.from({ length: 5 }, (_, i) => 20 * i + rng.next());
  const up = b.map((x) => x + 0.3 + 1e-9 * rng.normal());
  equal(pairedSpreadVerdict(pairedDiff(up, b)), "reproduced");
  equal(pairedSpreadVerdict(pairedDiff(b, up)), "not reproduced");
  equal(equivalenceClaim("A matches B.", "A minus B", up, b, 1).verdict, "reproduced");
  equal(equivalenceClaim("A matches B.", "A minus B", up, b, 0.1).verdict, "not reproduced");
});
