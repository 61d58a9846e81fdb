/**
 * The evidence a claim prints agrees with its verdict: a number judged against a threshold is printed on the same
 * side of it as its value, so that judging the printed numbers by the stated rule gives the verdict the claim has.
 * Values are drawn a relative 1e-2..1e-9 from the thresholds, where rounding to a few digits used to cross them.
 */
import { equal, match, ok } from "node:assert/strict";
import {
  constancyClaim,
  growthClaim,
  prop1Claim,
  prop1Verdict,
  slowerClaim,
} from "../../experiments/magnitude.ts";
import { initShareClaim, stabilityClaim } from "../../experiments/eva.ts";
import { gainReport, type GainRow } from "../../experiments/spectral_gain.ts";
import { COLLAPSE_SPREAD, modalityRow, varianceClaim, visualSpread } from "../../experiments/vlm_dynamics.ts";
import { meanStd, tQuantile975 } from "../../lab/mod.ts";
import { TestRng } from "../_helpers.ts";

/** A value a relative distance 10^-k (k in 2..9) above or below `t`, or `t` itself. */
function near(rng: TestRng, t: number): number {
  if (rng.next() < 0.1) return t;
  return t * (1 + (rng.next() < 0.5 ? -1 : 1) * 10 ** -rng.int(2, 9));
}

/** The number printed after `label ` in `text` (a decimal or exponent literal). */
function printedAfter(text: string, label: string): number {
  const at = text.indexOf(`${label} `);
  ok(at >= 0, `"${label}" not in ${text}`);
  const m = /^-?[0-9.]+(e[+-]?[0-9]+)?/.exec(text.slice(at + label.length + 1));
  ok(m !== null, `no number after "${label}" in ${text}`);
  return Number(m[0]);
}

Deno.test("exp:magnitude: Prop. 1's evidence reads on the side of 1e-4 and 1e-2 its verdict is judged on", () => {
  // The rule's stated thresholds (EQUIV, BROKEN), as its text gives them.
  const [equiv, broken] = [1e-4, 1e-2];
  // The reported case: 9.9996e-5 is below 1e-4 (reproduced) and was printed 1.00e-4.
  const reported = prop1Claim([{ label: "eq", rel: 9.9996e-5 }], [{ label: "br", rel: 0.5 }], {
    group: "g",
    seeds: 3,
    device: "cpu",
  });
  equal(reported.verdict, "reproduced");
  ok(printedAfter(reported.evidence, "eq") < equiv, reported.evidence);
  ok(reported.rule.includes(`below ${equiv}`) && reported.rule.includes(`above ${broken}`), reported.rule);
  // The ratio is taken per seed, then the largest over seeds: the max |ΔL| over all seeds divided by the max loss
  // over all seeds is another number, so the rule says which.
  match(
    reported.rule,
    /^per seed, the max over steps of \|ΔL\| divided by that seed's reference's max \|L\|/,
  );
  match(reported.rule, /then the largest over 3 seeds;/);
  const rng = new TestRng(2101);
  for (let i = 0; i < 200; i++) {
    const eq = Array.from({ length: rng.int(1, 3) }, (_, j) => ({
      label: `eq${j}`,
      rel: near(rng, rng.next() < 0.7 ? equiv : broken),
    }));
    const br = Array.from({ length: rng.int(1, 3) }, (_, j) => ({
      label: `br${j}`,
      rel: near(rng, rng.next() < 0.7 ? broken : equiv),
    }));
    const c = prop1Claim(eq, br, { group: "g", seeds: 3, device: "cpu" });
    const shown = (rows: typeof eq) => rows.map((r) => printedAfter(c.evidence, r.label));
    equal(prop1Verdict(shown(eq), shown(br)), c.verdict, c.evidence);
  }
});

Deno.test("exp:magnitude: Prop. 2 (b) prints the ratio on the side of 1× and 2× its verdict is judged on", () => {
  const verdictOf = (s: string) => /\*\*([^*]+)\*\*/.exec(s)![1];
  const rule = (ratio: number) => (ratio >= 2 ? "reproduced" : ratio < 1 ? "not reproduced" : "inconclusive");
  const claim = (lora: number, full: number) =>
    slowerClaim([{ label: "lora-Q1", update: { mean: lora, std: 0.01, n: 3 } }], {
      update: { mean: full, std: 0.01, n: 3 },
    }, { seeds: 3, fullLr: 1e-3, loraLr: 1e-3 });
  // The reported case: a ratio of 1.996 was printed 2.00× beside "inconclusive".
  const reported = claim(1, 1.996);
  equal(verdictOf(reported), "inconclusive");
  ok(printedAfter(reported, "seed(s)") < 2, reported);
  const rng = new TestRng(2102);
  for (let i = 0; i < 200; i++) {
    const lora = 0.01 + rng.next();
    const full = lora * near(rng, rng.next() < 0.5 ? 2 : 1);
    const text = claim(lora, full);
    equal(rule(printedAfter(text, "seed(s)")), verdictOf(text), text);
    equal(verdictOf(text), rule(full / lora), text);
  }
});

Deno.test("exp:magnitude: Prop. 2 (b) names the LoRA row its ratio divides by", () => {
  const rows = [1.4, 2.9, 1.9].map((mean, i) => ({ label: `lora-Q${i}`, update: { mean, std: 0.1, n: 3 } }));
  const text = slowerClaim(rows, { update: { mean: 2.5, std: 0.1, n: 3 } }, {
    seeds: 3,
    fullLr: 1e-3,
    loraLr: 1e-3,
  });
  // The ratio is full fine-tuning's mean over the largest LoRA mean (lora-Q1's): a reader needs the row to redo it.
  ok(text.includes("full fine-tuning's mean ÷ the largest LoRA mean (lora-Q1)"), text);
  equal(printedAfter(text, "seed(s)"), Number((2.5 / 2.9).toPrecision(3)), text);
});

Deno.test("exp:eva: the stability claim prints each agreement on the side of 0.7 and 0.9 its verdict is judged on", () => {
  const verdictOf = (s: string) => /\*\*([^*]+)\*\*/.exec(s)![1];
  const rule = (
    worst: number,
  ) => (worst >= 0.9 ? "reproduced" : worst < 0.7 ? "not reproduced" : "inconclusive");
  const names = ["batch size ×0.5", "batch size ×2", "other batches/order"];
  // The reported case: 0.8996 was printed 0.900, "0.9 or more", beside "inconclusive".
  const reported = stabilityClaim({ [names[0]]: 0.95, [names[1]]: 0.8996, [names[2]]: 0.97 });
  equal(verdictOf(reported), "inconclusive");
  ok(printedAfter(reported, names[1]) < 0.9, reported);
  const rng = new TestRng(2103);
  for (let i = 0; i < 200; i++) {
    const values = names.map(() => Math.min(1, near(rng, rng.next() < 0.5 ? 0.9 : 0.7)));
    const text = stabilityClaim(Object.fromEntries(names.map((n, j) => [n, values[j]])));
    equal(verdictOf(text), rule(Math.min(...values)), text);
    equal(rule(Math.min(...names.map((n) => printedAfter(text, n)))), verdictOf(text), text);
  }
});

Deno.test("exp:spectral-gain: the table and claims print each error on the side of the threshold it is judged on", () => {
  const rng = new TestRng(2104);
  const stats = (mean: number) => ({ mean, std: 0.01 + 0.05 * rng.next(), n: 4 });
  const row = (type: string, mae: number): GainRow => ({
    type,
    shape: [64, 64],
    k: 64,
    count: 4,
    mae: stats(mae),
    max: stats(3 * mae),
    signed: stats(mae / 2),
    q1: stats(0.5),
    controlMae: 0.3,
  });
  const overall = stats(0.1);
  // The reported case: an error of 0.09996, below 0.1 (reproduced), read 0.1 in the table.
  const reported = gainReport([row("wq", 0.09996)], { threshold: 0.1, overall, matrices: 4 });
  ok(Number(String(reported.table.rows[0][4]).split(" ")[0]) < 0.1, String(reported.table.rows[0][4]));
  ok(printedAfter(reported.claims[1], "mean |ΔQ|") < 0.1, reported.claims[1]);
  for (let i = 0; i < 100; i++) {
    const threshold = 0.02 + 0.2 * rng.next();
    const types = ["wq", "wk", "wv", "wo", "w1"].slice(0, rng.int(1, 5));
    const rows = types.map((t) => row(t, near(rng, threshold)));
    const { table, claims } = gainReport(rows, { threshold, overall, matrices: 4 * rows.length });
    rows.forEach((r, j) => {
      const below = r.mae.mean < threshold;
      // The table's cell, the per-type claim's number and its verdict all read as the value does.
      equal(Number(String(table.rows[j][4]).split(" ")[0]) < threshold, below, String(table.rows[j][4]));
      const claim = claims[1 + j];
      equal(printedAfter(claim, "mean |ΔQ|") < threshold, below, claim);
      equal(claim.endsWith(below ? "**reproduced**." : "**not reproduced**."), true, claim);
      // Listed above the threshold, it is printed at or above it.
      if (!below) {
        ok(Number(new RegExp(`${r.type} \\(([^)]+)\\)`).exec(claims[0])![1]) >= threshold, claims[0]);
      }
    });
  }
});

Deno.test("exp:vlm-dynamics: the variance claim prints its interval's ends on the side of 2 and 3 they are judged on", () => {
  const rule = (lo: number, hi: number) =>
    lo >= 2 && hi <= 3 ? "reproduced" : hi < 2 || lo > 3 ? "not reproduced" : "inconclusive";
  const interval = (evidence: string) => {
    const m = /95% interval (\S+)\.\.([^)]+)\)/.exec(evidence);
    ok(m !== null, evidence);
    return [Number(m[1]), Number(m[2])];
  };
  const rng = new TestRng(2105);
  for (let i = 0; i < 200; i++) {
    const n = rng.int(2, 6);
    const noise = Array.from({ length: n }, () => 0.05 * rng.normal());
    const s = meanStd(noise);
    const half = tQuantile975(n - 1) * s.std / Math.sqrt(n);
    // Centre the draws so that one end of the interval lies near 2 or 3.
    const end = near(rng, rng.next() < 0.5 ? 2 : 3);
    const centre = rng.next() < 0.5 ? end + half : end - half;
    const ratios = noise.map((x) => x - s.mean + centre);
    const c = varianceClaim(ratios, { calibBatches: 4, perLayer: { "layers.0.wq": centre }, spreads: [0.5] });
    const exact = meanStd(ratios);
    const h = tQuantile975(n - 1) * exact.std / Math.sqrt(n);
    equal(c.verdict, rule(exact.mean - h, exact.mean + h), c.evidence);
    const [lo, hi] = interval(c.evidence);
    equal(rule(lo, hi), c.verdict, c.evidence);
  }
});

Deno.test("exp:vlm-dynamics: the variance claim is inconclusive where the visual tokens collapsed", () => {
  const rng = new TestRng(2107);
  for (let i = 0; i < 100; i++) {
    // Visual tokens x = μ + σ·z per feature (z of mean 0, variance 1): variance σ², mean square μ² + σ².
    const mu = 0.5 + rng.next();
    const collapsed = rng.next() < 0.5;
    // A spread a factor 2..10 below or above the threshold.
    const target = COLLAPSE_SPREAD * (collapsed ? 1 / (2 + 8 * rng.next()) : 2 + 8 * rng.next());
    const sigma2 = target * mu * mu / (1 - target);
    const layer = (textVar: number) => ({
      visualVar: sigma2,
      textVar,
      visualMeanSq: mu * mu + sigma2,
      textMeanSq: 1,
      inputGapNorm: mu,
    });
    // Three draws of two layers whose ratios lie at 2.5 ± 0.01: reproduced, were the tokens not collapsed.
    const draws = [0, 1, 2].map((k) => ({
      "L0.wq": layer(sigma2 / (2.5 + 0.01 * (k - 1))),
      "L0.w2": layer(sigma2 / (2.5 - 0.01 * (k - 1))),
    }));
    const spreads = draws.map(visualSpread);
    for (const v of spreads) ok(Math.abs(v - target) <= 1e-12 * target, `${v} for ${target}`);
    const ratios = draws.map((d) =>
      Math.sqrt(Object.values(d).reduce((a, s) => a * s.visualVar / s.textVar, 1))
    );
    const c = varianceClaim(ratios, { calibBatches: 4, perLayer: { "L0.wq": 2.5 }, spreads });
    equal(c.verdict, collapsed ? "inconclusive" : "reproduced", c.evidence);
    equal(c.note !== undefined, collapsed, c.note);
    ok(c.rule.includes(`under ${COLLAPSE_SPREAD}`), c.rule);
  }
});

Deno.test("exp:vlm-dynamics: the per-modality table prints each base statistic to its significant digits", () => {
  const rng = new TestRng(2106);
  const close = (printed: string, value: number, rel: number) =>
    ok(Math.abs(Number(printed) - value) <= rel * Math.abs(value), `${printed} for ${value}`);
  for (let i = 0; i < 100; i++) {
    // Visual-token variances a thousandth of the text tokens' and below, as a quick base gives them.
    const base = {
      visualVar: 10 ** (8 * rng.next() - 7),
      textVar: 10 ** (4 * rng.next() - 3),
      visualMeanSq: 1,
      textMeanSq: 1,
      inputGapNorm: 10 ** (3 * rng.next() - 2),
    };
    const [layer, visual, text, ratio, gap, after] = modalityRow("L0.wq", base, [[base, base]]);
    equal(layer, "L0.wq");
    close(visual, base.visualVar, 5e-4);
    close(text, base.textVar, 5e-4);
    close(ratio, base.visualVar / base.textVar, 5e-3);
    close(gap, base.inputGapNorm, 5e-4);
    close(after.split(" ± ")[0], base.visualVar / base.textVar, 5e-3);
  }
});

Deno.test("exp:eva: the init-cost claim prints the mean share on the side of 1% its value is on", () => {
  const rng = new TestRng(2106);
  for (let i = 0; i < 100; i++) {
    // Three seeds whose shares of init / (init + train) lie a hair apart, near 1% (the rule: m ± 2·sd against 1).
    const share = near(rng, 1);
    const runs = [0, 1, 2].map(() => {
      const s = share * (1 + 1e-12 * rng.normal());
      const trainSeconds = 100 + 100 * rng.next();
      return { initSeconds: s * trainSeconds / (100 - s), trainSeconds, losses: Array(1000).fill(1) };
    });
    const c = initShareClaim(runs, 1000);
    const exact = meanStd(runs.map((r) => (100 * r.initSeconds) / (r.initSeconds + r.trainSeconds))).mean;
    const printed = Number(/^(\S+) ±/.exec(c.evidence)![1]);
    equal(Math.sign(printed - 1), Math.sign(exact - 1), `${exact}: ${c.evidence}`);
    if (c.verdict === "reproduced") ok(printed < 1, c.evidence);
    if (c.verdict === "not reproduced") ok(printed > 1, c.evidence);
  }
});

Deno.test("exp:eva: the init-cost claim prints the ends m ± 2·sd on the side of 1% they are judged on", () => {
  const rng = new TestRng(2112);
  const num = String.raw`(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)`;
  const share = (r: { initSeconds: number; trainSeconds: number }) =>
    (100 * r.initSeconds) / (r.initSeconds + r.trainSeconds);
  let crossed = 0;
  for (let i = 0; i < 200; i++) {
    // Three seeds' shares with a random spread, moved so that m + 2·sd (or m − 2·sd) lies a relative 1e-4 from 1.
    const sd = 0.01 + 0.3 * rng.next();
    const raw = [0, 1, 2].map(() => sd * rng.normal());
    const s0 = meanStd(raw);
    const upper = rng.next() < 0.5;
    const end = upper ? s0.mean + 2 * s0.std : s0.mean - 2 * s0.std;
    const target = 1 + (rng.next() < 0.1 ? 0 : (rng.next() * 2 - 1) * 1e-4);
    const runs = raw.map((v) => {
      const s = v + target - end;
      const trainSeconds = 100 + 100 * rng.next();
      return { initSeconds: s * trainSeconds / (100 - s), trainSeconds, losses: Array(1000).fill(1) };
    });
    const exact = meanStd(runs.map(share));
    const lo = exact.mean - 2 * exact.std, hi = exact.mean + 2 * exact.std;
    const naive = Number(exact.mean.toPrecision(3)) + (upper ? 2 : -2) * Number(exact.std.toPrecision(2));
    if (Math.sign(naive - 1) !== Math.sign((upper ? hi : lo) - 1)) crossed++;
    const c = initShareClaim(runs, 1000);
    const hit = new RegExp(`m ± 2·sd ${num}\\.\\.${num}%`).exec(c.evidence);
    ok(hit !== null, c.evidence);
    const [pLo, pHi] = [Number(hit[1]), Number(hit[2])];
    equal(Math.sign(pLo - 1), Math.sign(lo - 1), `${lo}: ${c.evidence}`);
    equal(Math.sign(pHi - 1), Math.sign(hi - 1), `${hi}: ${c.evidence}`);
    equal(pHi < 1 ? "reproduced" : pLo > 1 ? "not reproduced" : "inconclusive", c.verdict, c.evidence);
  }
  ok(crossed > 10, `only ${crossed} draws whose end, worked out from the printed mean and sd, crosses 1`);
});

Deno.test("exp:magnitude: Prop. 2 (c) prints each pair's ends d ± 2·s on the side of 0 they are judged on", () => {
  const rng = new TestRng(2113);
  const num = String.raw`(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)`;
  let crossed = 0;
  for (let i = 0; i < 200; i++) {
    // Three gains whose neighbouring differences d of mean ‖ΔW‖ lie a relative 1e-4 from 2·s (s = √(sd₁² + sd₂²)).
    const sds = [0, 1, 2].map(() => 0.01 + 0.2 * rng.next());
    const means = [1 + rng.next()];
    for (let k = 1; k < 3; k++) {
      const s = Math.hypot(sds[k], sds[k - 1]);
      const sign = rng.next() < 0.5 ? 1 : -1;
      means.push(means[k - 1] + sign * 2 * s * (1 + (rng.next() < 0.1 ? 0 : (rng.next() * 2 - 1) * 1e-4)));
    }
    const rows = means.map((mean, k) => ({
      label: `g${k}`,
      ba0: { mean: 10 ** (k - 3), std: 0, n: 3 },
      update: { mean, std: sds[k], n: 3 },
    }));
    const c = growthClaim(rows, 3);
    const text = /d ± 2·s per pair (.*)\.$/.exec(c.evidence);
    ok(text !== null, c.evidence);
    const printed = [...text[1].matchAll(new RegExp(`${num}\\.\\.${num}`, "g"))].map((h) => [+h[1], +h[2]]);
    equal(printed.length, 2, c.evidence);
    for (let k = 1; k < 3; k++) {
      const d = means[k] - means[k - 1], s = Math.hypot(sds[k], sds[k - 1]);
      const [lo, hi] = printed[k - 1];
      equal(Math.sign(lo), Math.sign(d - 2 * s), `${d - 2 * s}: ${c.evidence}`);
      equal(Math.sign(hi), Math.sign(d + 2 * s), `${d + 2 * s}: ${c.evidence}`);
      if (Math.sign(Number((d / s).toFixed(2)) - 2) !== Math.sign(d - 2 * s) && d > 0) crossed++;
    }
    const read = printed.every(([lo]) => lo > 0)
      ? "reproduced"
      : printed.some(([, hi]) => hi < 0)
      ? "not reproduced"
      : "inconclusive";
    equal(read, c.verdict, c.evidence);
  }
  ok(crossed > 10, `only ${crossed} pairs whose d/s, to two decimals, read on the other side of 2`);
});

Deno.test("exp:magnitude: Prop. 2 (a) prints the larger change's ends mean ± 2·se on the side of 10% they are judged on", () => {
  const rng = new TestRng(2114);
  const num = String.raw`(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)`;
  let crossed = 0;
  for (let i = 0; i < 200; i++) {
    // The larger of two mean changes with its standard error over n seeds, an end a relative 1e-4 from 0.1.
    const n = rng.int(2, 6);
    const std = 0.001 + 0.05 * rng.next();
    const se = std / Math.sqrt(n);
    const upper = rng.next() < 0.5;
    const end = 0.1 * (1 + (rng.next() < 0.1 ? 0 : (rng.next() * 2 - 1) * 1e-4));
    const worst = { mean: upper ? end - 2 * se : end + 2 * se, std, n };
    const other = { mean: worst.mean * rng.next(), std: 0.01, n };
    const [aChange, bChange] = rng.next() < 0.5 ? [worst, other] : [other, worst];
    const text = constancyClaim({ label: "lora", aChange, bChange }, n, 100);
    const hit = new RegExp(`the larger's mean ± 2·se ${num}\\.\\.${num}%`).exec(text);
    ok(hit !== null, text);
    const lo = 100 * worst.mean - 2 * 100 * se, hi = 100 * worst.mean + 2 * 100 * se;
    const [pLo, pHi] = [Number(hit[1]), Number(hit[2])];
    equal(Math.sign(pLo - 10), Math.sign(lo - 10), `${lo}: ${text}`);
    equal(Math.sign(pHi - 10), Math.sign(hi - 10), `${hi}: ${text}`);
    const read = pHi < 10 ? "reproduced" : pLo >= 10 ? "not reproduced" : "inconclusive";
    ok(text.endsWith(`**${read}**.`), `${read}: ${text}`);
    // The old evidence: the larger mean alone, three digits; an end worked out from it and 2·se to two digits.
    const naive = Number((100 * worst.mean).toPrecision(3)) +
      (upper ? 2 : -2) * Number((100 * se).toPrecision(2));
    if (Math.sign(naive - 10) !== Math.sign((upper ? hi : lo) - 10)) crossed++;
  }
  ok(crossed > 10, `only ${crossed} draws whose end, worked out from rounded numbers, crosses 10%`);
});
