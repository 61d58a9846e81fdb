/** Reports: the verdict rule, mean curves over seeds, and what writeReport puts in summary.md, summary.json and plots. */
import { deepEqual, equal, match, ok, throws } from "node:assert/strict";
import {
  formatAgainst,
  formatMeanStd,
  formatNumber,
  judged,
  LAST_TENTH_LABEL,
  lastTenthCount,
  lastTenthMean,
  lastTenthText,
  mdTable,
  meanCurves,
  meanStd,
  summarizeMetric,
  verdictFor,
  writeCombinedMetrics,
  writeReport,
} from "../../lab/report.ts";
import { readJsonl } from "../../lib/io/json.ts";
import { ResultsDir } from "../../lab/results.ts";
import { linePlot } from "../../lab/plot.ts";
import { formatPaired, pairedDifference } from "../../lab/paired.ts";
import { formatPairedDiff, pairedDiff } from "../../lab/lm_probe.ts";
import { TestRng } from "../_helpers.ts";

Deno.test("report: the verdict is 'reproduced' beyond twice the spread, 'not reproduced' below minus twice", () => {
  const rng = new TestRng(1901);
  for (let i = 0; i < 50; i++) {
    const spread = 0.01 + rng.next();
    const k = rng.next() * 6 - 3;
    const want = k > 2 ? "reproduced" : k < -2 ? "not reproduced" : "inconclusive";
    equal(verdictFor(k * spread, spread, 3), want, `diff ${k}·spread`);
  }
  match(verdictFor(10, 0, 1), /^inconclusive \(one seed/);
  // Several seeds with no spread (0, or rounding noise of the difference) repeat one measurement: no verdict.
  for (const diff of [10, -10, 0.1]) {
    match(verdictFor(diff, 0, 3), /^inconclusive \(no spread over the seeds/);
    match(verdictFor(diff, Math.abs(diff) * Number.EPSILON, 5), /^inconclusive \(no spread over the seeds/);
  }
  // A negative or NaN spread and a seed count that is not a positive integer are no evidence of anything.
  throws(() => verdictFor(0.1, -1, 3), /spread must be a number ≥ 0, got -1/);
  throws(() => verdictFor(0.1, NaN, 3), /spread must be a number ≥ 0, got NaN/);
  for (const seeds of [NaN, 0, 2.5, -3]) {
    throws(() => verdictFor(1, 0.1, seeds), new RegExp(`seeds must be a positive integer, got ${seeds}`));
  }
  equal(judged("A beats B", "1 vs 2", "reproduced"), "A beats B (1 vs 2): **reproduced**.");
});

Deno.test("report: mean curves average the runs of a label step by step, with a min..max band", () => {
  const rng = new TestRng(1902);
  const runs = [0, 1, 2].map((seed) => ({
    label: "a",
    seed,
    losses: Array.from({ length: 5 + seed }, () => rng.next()),
  }));
  const [curve] = meanCurves(runs, ["a"], (r) => r.losses);
  deepEqual(curve.x, [1, 2, 3, 4, 5]); // the steps every run has
  for (let i = 0; i < 5; i++) {
    const xs = runs.map((r) => r.losses[i]);
    ok(Math.abs(curve.y[i] - xs.reduce((s, v) => s + v, 0) / 3) < 1e-12);
    equal(curve.band!.low[i], Math.min(...xs));
    equal(curve.band!.high[i], Math.max(...xs));
  }
  equal(meanCurves([runs[0]], ["a"], (r) => r.losses)[0].band, undefined);
  // A label without runs has no curve: named, where the minimum over no lengths made an array of length Infinity.
  throws(
    () => meanCurves(runs, ["a", "b"], (r) => r.losses),
    /meanCurves: no run is labelled "b" \(the runs' labels: "a"\)/,
  );
  throws(
    () => meanCurves(runs.slice(0, 0), ["a"], (r) => r.losses),
    /no run is labelled "a" \(the runs' labels: none, no runs\)/,
  );
});

Deno.test("report: writeReport writes the setting, tables, claims and plots", async () => {
  const root = await Deno.makeTempDir();
  const results = ResultsDir.create("demo", { root });
  results.writeConfig({ steps: 3 });
  const plot = linePlot({ title: "loss", series: [{ name: "a", x: [1, 2], y: [2, 1] }] });
  const original = console.log;
  console.log = () => {};
  try {
    const md = await writeReport(results, {
      title: "exp:demo",
      setting: "Setting paragraph.",
      tables: [
        { columns: ["method", "loss"], rows: [["a", 1.5]] },
        { heading: "More", note: "A note.", columns: ["x"], rows: [[2]] },
      ],
      claims: [judged("A is good", "1.5", "reproduced")],
      plots: { loss: plot },
      data: { rows: [1, 2] },
      notes: ["A closing note."],
    });
    equal(Deno.readTextFileSync(results.file("summary.md")).trimEnd(), md);
    match(md, /^# exp:demo\n\nSetting paragraph\.\n\n\| method \| loss \|\n/);
    match(md, /\n## More\n\nA note\.\n\n\| x \|\n/);
    match(md, /\nA closing note\.\n\n## Claims\n\n- A is good \(1\.5\): \*\*reproduced\*\*\.\n/);
    match(md, /\nPlots: loss\.png \(SVG beside each\)\.$/);
    const summary = JSON.parse(Deno.readTextFileSync(results.file("summary.json")));
    deepEqual(summary.rows, [1, 2]);
    deepEqual(summary.claims, ["A is good (1.5): **reproduced**."]);
    ok(Deno.statSync(results.file("loss.svg")).size > 0);
    ok(Deno.statSync(results.file("loss.png")).size > 0);
    // No claim applies: the report says so instead of an empty list.
    const none = await writeReport(results, {
      title: "exp:demo",
      setting: "s",
      tables: [],
      claims: [],
      plots: {},
      data: {},
    });
    match(none, /## Claims\n\n- None of this experiment's claims applies to the methods run/);
  } finally {
    console.log = original;
    results.release();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("report: writeCombinedMetrics keeps a diverged run's NaN and infinities (they were written as null)", async () => {
  const root = await Deno.makeTempDir();
  const results = ResultsDir.create("demo", { root });
  const loss = new TestRng(44).next() + 1;
  writeCombinedMetrics(results, [{
    label: "a",
    seed: 0,
    losses: [loss, NaN, Infinity],
    gradNorms: [1, -Infinity, NaN],
  }]);
  const text = Deno.readTextFileSync(results.file("metrics.jsonl"));
  ok(!text.includes("null"), text);
  const back = readJsonl(results.file("metrics.jsonl"));
  // The metrics format keeps non-finite numbers as strings (lib/io/json.ts).
  deepEqual(back.map((r) => [r.loss, r.grad_norm]), [[loss, 1], ["NaN", "-Infinity"], ["Infinity", "NaN"]]);
  await Deno.remove(root, { recursive: true });
});

Deno.test("report: formatMeanStd shows one value as such, not as a spread of 0", () => {
  const x = 1 + new TestRng(45).next();
  equal(formatMeanStd(meanStd([x])), `${Number(x.toPrecision(4))} (one value)`);
  match(formatMeanStd(meanStd([x, x + 1])), /^\S+ ± 0\.707$/);
});

Deno.test("report: formatMeanStd prints a std of equal values that is rounding noise as 0", () => {
  // Equal values have an exact std of 0; their float mean rounds, and the float std is then a few ulps.
  const values = [0.7, 0.1, 1 + new TestRng(47).next()].map((v) => [v, v, v]);
  const noisy = values.filter((xs) => meanStd(xs).std > 0);
  ok(noisy.length > 0, "no equal values with a float std above 0");
  for (const xs of noisy) match(formatMeanStd(meanStd(xs)), /^\S+ ± 0$/);
  // A spread beyond a few ulps of the mean is still shown.
  const apart = [1, 1 + 1e-12];
  equal(formatMeanStd(meanStd(apart)), `1 ± ${formatNumber(meanStd(apart).std, 3)}`);
});

Deno.test("report: formatPairedDiff prints a std that is rounding noise of the mean as 0, as formatMeanStd does", () => {
  const values = [0.7, 0.1, 1 + new TestRng(49).next()];
  const noisy = values.map((v) => pairedDiff([v, v, v], [0, 0, 0])).filter((d) => d.std > 0);
  ok(noisy.length > 0, "no equal differences with a float std above 0");
  // With no spread the rules' ends give way to the reason they read it inconclusive.
  for (const d of noisy) {
    match(
      formatPairedDiff(d),
      /^\S+ ± 0\.0000 \(n = 3, the same values in every seed: no spread to judge by\)$/,
    );
  }
  const apart = pairedDiff([1, 1.1, 1], [0, 0, 0]);
  equal(formatPairedDiff(apart), `${apart.mean.toFixed(4)} ± ${apart.std.toFixed(4)} (n = 3)`);
});

Deno.test("report: formatNumber takes 1 to 21 significant digits and refuses others by name", () => {
  const x = 1 + new TestRng(46).next();
  equal(formatNumber(x, 1), String(Number(x.toPrecision(1))));
  equal(formatNumber(x, 21), String(Number(x.toPrecision(21))));
  for (const digits of [0, 22, 2.5, NaN]) {
    throws(
      () => formatNumber(x, digits),
      new RegExp(`digits must be an integer from 1 to 21, got ${digits}`),
    );
  }
});

Deno.test("report: formatNumber picks exponent form after rounding, so it never shows more digits than asked", () => {
  const rng = new TestRng(47);
  // Just under 1e6: rounded to 4 digits it is 1.000e+6 (it read 1000000, seven digits); just under 1e-3 it rounds
  // up into the fixed range.
  equal(formatNumber(999999.9), "1.000e+6");
  equal(formatNumber(-999_999.6), "-1.000e+6");
  equal(formatNumber(0.00099996), "0.001");
  for (let i = 0; i < 200; i++) {
    const v = (rng.next() < 0.5 ? -1 : 1) * 10 ** (rng.next() * 12 - 6) * (1 + rng.next());
    const digits = rng.int(1, 8);
    const shown = formatNumber(v, digits);
    const rounded = Number(v.toPrecision(digits));
    equal(Number(shown), rounded, `${v} to ${digits}: ${shown}`);
    if (!Number.isInteger(v)) {
      const big = Math.abs(rounded) >= 1e6 || Math.abs(rounded) < 1e-3;
      equal(shown.includes("e"), big, `${v} to ${digits}: ${shown}`);
    }
  }
});

Deno.test("report: formatAgainst prints a number on the same side of each threshold as its value", () => {
  const rng = new TestRng(48);
  const side = (a: number, t: number) => Math.sign(a - t);
  let widened = 0;
  for (let i = 0; i < 500; i++) {
    // Thresholds of any magnitude; the value a relative distance of 1e-1..1e-16 from one of them, or on it.
    const thresholds = Array.from(
      { length: rng.int(1, 3) },
      () => (rng.next() < 0.2 ? -1 : 1) * 10 ** (rng.next() * 16 - 8) * (1 + rng.next()),
    );
    const t = thresholds[rng.int(0, thresholds.length - 1)];
    const value = rng.next() < 0.1 ? t : t * (1 + (rng.next() < 0.5 ? -1 : 1) * 10 ** -rng.int(1, 16));
    const digits = rng.int(1, 6);
    const text = formatAgainst(value, thresholds, digits);
    const printed = Number(text);
    for (const th of thresholds) equal(side(printed, th), side(value, th), `${value} vs ${th}: ${text}`);
    // The fewest digits that do: the plain text where it already agrees, else one digit fewer would not.
    const plain = formatNumber(value, digits);
    if (thresholds.every((th) => side(Number(plain), th) === side(value, th))) equal(text, plain);
    else {
      widened++;
      let fewer = digits;
      while (formatNumber(value, fewer + 1) !== text) fewer++;
      ok(thresholds.some((th) => side(Number(formatNumber(value, fewer)), th) !== side(value, th)), text);
    }
  }
  ok(widened > 100, `only ${widened} of 500 values needed more digits: the draw tests little`);
  // Exactly on a threshold reads as equal to it; the reported cases read on their own side.
  equal(formatAgainst(2, [1, 2], 3), "2");
  equal(formatAgainst(0.9, [0.7, 0.9], 3), "0.9");
  equal(formatAgainst(1.996, [1, 2], 3), "1.996");
  equal(formatAgainst(9.9996e-5, [1e-4, 1e-2], 3), "9.9996e-5");
  equal(formatAgainst(Infinity, [2]), "Infinity");
  equal(formatAgainst(NaN, [2]), "NaN");
  throws(() => formatAgainst(1, [0.5, NaN]), /thresholds must be numbers, got \[0\.5, NaN\]/);
});

Deno.test("report: formatMeanStd prints the mean against a rule's thresholds when given them", () => {
  const rng = new TestRng(49);
  const std = 0.01 + 0.1 * rng.next();
  equal(formatMeanStd({ mean: 0.09996, std, n: 4 }, 3), `0.1 ± ${formatNumber(std, 2)}`);
  equal(
    formatMeanStd({ mean: 0.09996, std, n: 4 }, 3, { against: [0.1] }),
    `0.09996 ± ${formatNumber(std, 2)}`,
  );
  equal(formatMeanStd({ mean: 0.09996, std: 0, n: 1 }, 3, { against: [0.1] }), "0.09996 (one value)");
});

Deno.test("report: the tail mean averages the last `tail` values; a tail or a format option it cannot honour is refused", () => {
  const rng = new TestRng(1905);
  const values = Array.from({ length: 6 + rng.int(0, 5) }, () => rng.next());
  const records = values.map((loss) => ({ loss }));
  const tail = rng.int(1, values.length);
  const want = values.slice(values.length - tail).reduce((s, v) => s + v, 0) / tail;
  ok(Math.abs(summarizeMetric(records, "loss", { tail })!.tailMean - want) < 1e-12);
  // A tail of 0 averaged the last value, NaN every value, and a misspelt key the default 10.
  for (const bad of [{ tail: 0 }, { tail: NaN }, { tail: 2.5 }, { tails: 2 }]) {
    throws(
      () => summarizeMetric(records, "loss", bad as never),
      /summarizeMetric: (option "tail"|unknown option)/,
    );
  }
  // Digits or alignments misspelt or too many were dropped.
  throws(() => mdTable(["a"], [[values[0]]], { digit: 2 } as never), /mdTable: unknown option "digit"/);
  throws(
    () => mdTable(["a"], [[values[0]]], { align: ["left", "right"] }),
    /"align" has 2 entries for 1 columns/,
  );
  // A misspelt `against` printed a mean just under 2 as "2", the threshold it is judged against.
  const near = [2 - 1e-5 * (1 + rng.next()), 2 - 1e-5 * (1 + rng.next())];
  ok(Number(formatMeanStd(meanStd(near), 4, { against: [2] }).split(" ")[0]) < 2);
  throws(
    () => formatMeanStd(meanStd(near), 4, { againts: [2] } as never),
    /formatMeanStd: unknown option "againts"/,
  );
  const zeros = near.map(() => 0);
  throws(
    () => formatPaired(pairedDifference(near, zeros), 4, { againts: [2] } as never),
    /formatPaired: unknown/,
  );
  throws(() => formatPairedDiff(pairedDiff(near, zeros), 4, { against: [NaN] }), /option "against\[0\]"/);
  throws(
    () => formatPairedDiff(pairedDiff(near, zeros), 4, { absolut: true } as never),
    /unknown option "absolut"/,
  );
});

Deno.test("report: lastTenthMean averages the last ⌈n/10⌉ values, in closed form on an arithmetic sequence", () => {
  // Values c + d·i (i = 1..n): the mean of the last k is c + d·(n − (k − 1)/2), k = ⌈n/10⌉.
  const rng = new TestRng(5401);
  for (const n of [1, 2, 9, 10, 11, 19, 20, 21, 99, 100, 101, 1000, rng.int(2, 5000)]) {
    const c = 1 + rng.next(), d = -rng.next() / n;
    const values = Array.from({ length: n }, (_, i) => c + d * (i + 1));
    const k = Math.ceil(n / 10);
    equal(lastTenthCount(n), k);
    const want = c + d * (n - (k - 1) / 2);
    ok(
      Math.abs(lastTenthMean(values) - want) <= 1e-13 * Math.abs(want),
      `n ${n}: ${lastTenthMean(values)} vs ${want}`,
    );
  }
  // Exactly a tenth of a multiple of 10 (0.1·30 rounds to 3.0000000000000004, whose ceiling is 4).
  equal(lastTenthCount(30), 3);
  equal(lastTenthCount(70), 7);
  // A single value, and the last step alone when the window is one step.
  const x = rng.next();
  equal(lastTenthMean([x]), x);
  equal(lastTenthText([2, 1, x]), `${LAST_TENTH_LABEL} (step 3) ${x.toFixed(4)}`);
  const noisy = Array.from({ length: 40 }, () => rng.next());
  equal(
    lastTenthText(noisy),
    `${LAST_TENTH_LABEL} (steps 37–40) ${((noisy[36] + noisy[37] + noisy[38] + noisy[39]) / 4).toFixed(4)}`,
  );
  // A diverged run's NaN stays visible.
  ok(Number.isNaN(lastTenthMean([1, 2, NaN])));
  throws(() => lastTenthMean([]), /needs at least one recorded value, got n = 0/);
});
