import assert from "node:assert/strict";
import { barPlot, escapeXml, formatTick, heatmap, linePlot, niceTicks, viridis } from "../../lab/plot.ts";
import { TestRng } from "../_helpers.ts";

/** A uniform generator for test `seed` (mixed with TEST_SEED, so every run draws fresh values). */
function rng(seed: number): () => number {
  const r = new TestRng(seed);
  return () => r.next();
}

/**
 * Check that an SVG string is well-formed enough: every opening tag is closed in order, attributes are
 * quoted, and no raw `<` or `&` appears in text. Returns the element names in document order.
 */
function checkXml(svg: string): string[] {
  const stack: string[] = [];
  const names: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/y;
  let i = 0;
  while (i < svg.length) {
    const lt = svg.indexOf("<", i);
    const textPart = svg.slice(i, lt < 0 ? svg.length : lt);
    assert.ok(!/&(?!amp;|lt;|gt;|quot;|#39;)/.test(textPart), `unescaped & in text: ${textPart}`);
    assert.ok(!textPart.includes(">"), `stray > in text: ${textPart}`);
    if (lt < 0) break;
    tag.lastIndex = lt;
    const m = tag.exec(svg);
    assert.ok(m !== null, `malformed tag at ${lt}: ${svg.slice(lt, lt + 60)}`);
    const [whole, closing, name, , selfClosing] = m;
    if (closing) {
      assert.equal(stack.pop(), name, `closing </${name}> does not match`);
    } else {
      names.push(name);
      if (!selfClosing) stack.push(name);
    }
    i = lt + whole.length;
  }
  assert.deepEqual(stack, [], "every element is closed");
  assert.equal(names[0], "svg");
  return names;
}

/** Text content of every `<text>` element with the given font size and anchor. */
function texts(svg: string, size: number, anchor: string): string[] {
  const out: string[] = [];
  const re = /<text [^>]*font-size="(\d+)" text-anchor="(\w+)"[^>]*>([^<]*)<\/text>/g;
  for (const m of svg.matchAll(re)) if (Number(m[1]) === size && m[2] === anchor) out.push(m[3]);
  return out;
}

function unescape(text: string): string {
  return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#39;/g, "'")
    .replace(/&amp;/g, "&");
}

Deno.test("plot: niceTicks cover random ranges with evenly spaced 1/2/5 steps", () => {
  const random = rng(21);
  for (let trial = 0; trial < 500; trial++) {
    const scale = 10 ** Math.floor(random() * 16 - 8);
    const a = (random() - 0.3) * scale;
    const b = a + random() * scale * (random() < 0.1 ? 1e-6 : 1);
    const ticks = niceTicks(a, b);
    assert.ok(ticks[0] <= a && ticks.at(-1)! >= b, `[${a}, ${b}] not covered by ${ticks}`);
    assert.ok(ticks.length >= 2 && ticks.length <= 12, `tick count ${ticks.length} for [${a}, ${b}]`);
    const step = ticks[1] - ticks[0];
    // step = m·10^k for m in {1, 2, 5}: log10(step / m) is an integer up to the rounding of the tick values, which
    // the subtraction carries as 2 ulps of the larger tick: relative to the step, 2^-51·|tick|/step, and in log10
    // that divided by ln 10 (ticks near 59.25 in steps of 1e-9 are 1.5e-6 off in log10, past a fixed 1e-6).
    const big = Math.max(Math.abs(ticks[0]), Math.abs(ticks[1]));
    const tol = 1e-9 + (2 ** -51 * big) / step / Math.LN10;
    const isNice = (m: number) => Math.abs(Math.log10(step / m) - Math.round(Math.log10(step / m))) < tol;
    assert.ok([1, 2, 5].some(isNice), `step ${step} is not 1, 2 or 5 × 10^k`);
    for (let i = 1; i < ticks.length; i++) {
      assert.ok(Math.abs(ticks[i] - ticks[i - 1] - step) <= 1e-9 * Math.max(Math.abs(ticks[i]), step));
    }
    // The ticks are tight: dropping an end tick would uncover data.
    assert.ok(ticks[1] > a && ticks.at(-2)! < b || ticks.length === 2 || a === b);
  }
});

Deno.test("plot: log niceTicks cover random positive ranges with powers of ten (or 1/2/5 within few decades)", () => {
  const random = rng(22);
  for (let trial = 0; trial < 300; trial++) {
    const a = 10 ** (random() * 20 - 10);
    const b = a * 10 ** (random() * 8);
    const ticks = niceTicks(a, b, { log: true });
    assert.ok(ticks[0] <= a && ticks.at(-1)! >= b, `[${a}, ${b}] not covered by ${ticks}`);
    assert.ok(ticks.length >= 2);
    for (const t of ticks) {
      const mantissa = t / 10 ** Math.floor(Math.log10(t) + 1e-9);
      assert.ok([1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-6), `tick ${t}`);
    }
  }
  assert.throws(() => niceTicks(0, 1, { log: true }), /positive/);
});

Deno.test("plot: formatTick", () => {
  assert.equal(formatTick(0.30000000000000004, 0.1), "0.3");
  assert.equal(formatTick(2, 0.5), "2");
  assert.equal(formatTick(2.5, 0.5), "2.5");
  assert.equal(formatTick(1e-4), "1e-4");
  assert.equal(formatTick(2.5e6, 5e5), "2.5e6");
  assert.equal(formatTick(0), "0");
});

/** A random range: wide or narrow (down to a few units in the last place) at magnitudes 1e-30..1e30. */
function randomRange(random: () => number): [number, number] {
  const scale = 10 ** (random() * 60 - 30);
  const a = (random() - 0.3) * scale;
  const kind = random();
  if (kind < 0.4) return [a, a + random() * scale];
  if (kind < 0.8) return [a, a + Math.abs(a) * 10 ** -(1 + random() * 13)];
  // A few units in the last place wide.
  let b = a;
  for (let i = 1 + Math.floor(random() * 4); i > 0; i--) b = nextUp(b);
  return [a, b];
}

/** The next double above `x`. */
function nextUp(x: number): number {
  if (x === 0) return Number.MIN_VALUE;
  const bits = new BigInt64Array(new Float64Array([x]).buffer);
  bits[0] += x > 0 ? 1n : -1n;
  return new Float64Array(bits.buffer)[0];
}

/** Ticks of `[a, b]` are 2 to 12, increasing, finite, cover it, and have distinct labels that read back. */
function checkTicks(a: number, b: number): void {
  const ticks = niceTicks(a, b);
  const where = `[${a}, ${b}] → ${ticks}`;
  assert.ok(ticks.length >= 2 && ticks.length <= 12, `tick count ${ticks.length} for ${where}`);
  assert.ok(ticks.every(Number.isFinite), where);
  for (let i = 1; i < ticks.length; i++) assert.ok(ticks[i] > ticks[i - 1], `not increasing: ${where}`);
  assert.ok(ticks[0] <= a && ticks.at(-1)! >= b, `not covered: ${where}`);
  const step = ticks[1] - ticks[0];
  const labels = ticks.map((t) => formatTick(t, step));
  assert.equal(new Set(labels).size, labels.length, `labels ${labels} for ${where}`);
  // Each label is its tick to within half a step (the ends past ±1e308 are the largest double).
  labels.forEach((l, i) => {
    if (Math.abs(ticks[i]) < 1e308) {
      assert.ok(Math.abs(Number(l) - ticks[i]) <= step / 2, `label ${l} for ${ticks[i]} (${where})`);
    }
  });
}

Deno.test("plot: niceTicks at any magnitude, narrow or wide, give 2–12 increasing ticks with distinct labels", () => {
  const random = rng(26);
  for (let trial = 0; trial < 3000; trial++) {
    const [a, b] = randomRange(random);
    checkTicks(a, b);
  }
  // Ranges whose width is past the largest double, and single values at the ends of the doubles.
  for (const [a, b] of [[-1e308, 1e308], [-Number.MAX_VALUE, Number.MAX_VALUE], [0, Number.MAX_VALUE]]) {
    checkTicks(a, b);
  }
  for (const v of [Number.MAX_VALUE, -Number.MAX_VALUE, 5e-324, 1e-310, 1e-300]) checkTicks(v, v);
  checkTicks(-random() * 1.7e308, random() * 1.7e308);
  // Closed forms: steps of 0.5e-22 and of 0.1 at 1e5, labelled with the step's digits.
  assert.deepEqual(niceTicks(1e-22, 3e-22), [1e-22, 1.5e-22, 2e-22, 2.5e-22, 3e-22]);
  assert.deepEqual(niceTicks(-1e308, 1e308), [-1e308, -5e307, 0, 5e307, 1e308]);
  const t = niceTicks(100000.1, 100000.5);
  assert.deepEqual(t, [100000.1, 100000.2, 100000.3, 100000.4, 100000.5]);
  assert.deepEqual(t.map((v) => formatTick(v, 0.1)), [
    "1.000001e5",
    "1.000002e5",
    "1.000003e5",
    "1.000004e5",
    "1.000005e5",
  ]);
});

Deno.test("plot: linePlot at any magnitude draws finite coordinates inside the frame, with distinct y labels", () => {
  const random = rng(27);
  for (let trial = 0; trial < 40; trial++) {
    const [a, b] = trial === 0 ? [-1e308, 1e308] : trial === 1 ? [1e-28, 3e-28] : randomRange(random);
    const x = [1, 2, 3, 4];
    const y = [a, b, a + (b - a) * random(), b];
    const svg = linePlot({ title: "t", series: [{ name: "s", x, y }], markers: true });
    checkXml(svg);
    assert.ok(!/NaN|Infinity/.test(svg), `[${a}, ${b}]: a coordinate is not finite`);
    const labels = texts(svg, 12, "end");
    assert.ok(labels.length >= 2 && labels.length <= 12, `[${a}, ${b}]: ${labels.length} y ticks`);
    assert.equal(new Set(labels).size, labels.length, `[${a}, ${b}]: y labels ${labels}`);
    const clip = svg.match(
      /<clipPath id="plot-area"><rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"/,
    )!;
    const [, top, , h] = clip.slice(1).map(Number);
    for (const m of svg.matchAll(/<circle cx="[\d.-]+" cy="([\d.-]+)"/g)) {
      assert.ok(Number(m[1]) >= top - 1e-6 && Number(m[1]) <= top + h + 1e-6, `[${a}, ${b}]: cy ${m[1]}`);
    }
  }
});

Deno.test("plot: linePlot is well-formed, names title and series, and ticks cover the data", () => {
  const random = rng(23);
  const n = 60;
  const x = Array.from({ length: n }, (_, i) => 10 + i * 7);
  const series = ["LoRA r=8", "PiSSA r=8", "OLoRA & friends"].map((name, k) => ({
    name,
    x,
    y: x.map(() => (random() - 0.2) * 40 + k),
  }));
  const title = "Loss <vs> step";
  const svg = linePlot({ title, xLabel: "step", yLabel: "loss", series });
  const names = checkXml(svg);
  assert.ok(names.includes("path"));
  assert.ok(svg.includes(escapeXml(title)), "title present and escaped");
  for (const s of series) assert.ok(svg.includes(`>${escapeXml(s.name)}</text>`), `legend names ${s.name}`);

  const ys = series.flatMap((s) => s.y);
  const yTicks = texts(svg, 12, "end").map((t) => Number(unescape(t)));
  assert.ok(yTicks.length >= 2 && yTicks.every(Number.isFinite), `y ticks: ${yTicks}`);
  assert.ok(Math.min(...yTicks) <= Math.min(...ys) && Math.max(...yTicks) >= Math.max(...ys));
  const xTicks = texts(svg, 12, "middle").map(Number);
  assert.ok(Math.min(...xTicks) <= 10 && Math.max(...xTicks) >= x.at(-1)!, `x ticks: ${xTicks}`);

  // Every drawn point lies inside the plot frame (the clip rectangle).
  const clip = svg.match(
    /<clipPath id="plot-area"><rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"/,
  );
  assert.ok(clip !== null);
  const [left, top, w, h] = clip.slice(1).map(Number);
  let points = 0;
  for (const m of svg.matchAll(/<path d="([^"]+)"/g)) {
    for (const p of m[1].matchAll(/[ML]([\d.-]+) ([\d.-]+)/g)) {
      const px = Number(p[1]);
      const py = Number(p[2]);
      assert.ok(px >= left - 1e-6 && px <= left + w + 1e-6 && py >= top - 1e-6 && py <= top + h + 1e-6);
      points++;
    }
  }
  assert.equal(points, 3 * n, "one path vertex per data point");
});

Deno.test("plot: linePlot with logY drops non-positive values and breaks lines at NaN", () => {
  const x = [1, 2, 3, 4, 5, 6];
  const y = [100, 10, NaN, 0.5, -1, 0.02];
  const svg = linePlot({ title: "log", series: [{ name: "a", x, y }], logY: true, markers: true });
  checkXml(svg);
  const d = svg.match(/<path d="([^"]+)"/)![1];
  assert.equal((d.match(/M/g) ?? []).length, 3, `segments split at NaN and at the negative value: ${d}`);
  assert.equal((svg.match(/<circle /g) ?? []).length, 4);
  const yTicks = texts(svg, 12, "end").map(Number);
  assert.ok(Math.min(...yTicks) <= 0.02 && Math.max(...yTicks) >= 100, `${yTicks}`);
});

Deno.test("plot: linePlot rejects series of unequal length, naming the series", () => {
  assert.throws(
    () => linePlot({ title: "t", series: [{ name: "bad one", x: [1, 2], y: [1] }] }),
    /"bad one"/,
  );
});

Deno.test("plot: barPlot draws one bar per value and group, with legend and error bars", () => {
  const random = rng(24);
  const labels = ["rank 4", "rank 8", "rank 16", "rank 32"];
  const groups = ["LoRA", "PiSSA", "OLoRA"].map((name) => ({
    name,
    values: labels.map(() => random() * 2 - 0.5),
    errors: labels.map(() => random() * 0.1),
  }));
  const svg = barPlot({ title: "Accuracy", labels, groups, yLabel: "acc" });
  checkXml(svg);
  const bars = [
    ...svg.matchAll(
      /<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="[\d.]+" fill="(#[0-9A-Fa-f]{6})"\/>/g,
    ),
  ]
    .filter((m) => m[1] !== "#ffffff");
  // 12 bars plus 3 legend swatches (the white background is excluded).
  assert.equal(bars.length, labels.length * groups.length + groups.length);
  for (const g of groups) assert.ok(svg.includes(`>${g.name}</text>`));
  for (const l of labels) assert.ok(svg.includes(`>${l}</text>`));
  const values = groups.flatMap((g) => g.values.flatMap((v, i) => [v - g.errors[i], v + g.errors[i]]));
  const yTicks = texts(svg, 12, "end").map(Number);
  assert.ok(Math.min(...yTicks) <= Math.min(0, ...values) && Math.max(...yTicks) >= Math.max(...values));

  const single = barPlot({ title: "Single", labels: ["a", "b"], values: [3, 5], errors: [0.5, 1] });
  checkXml(single);
  assert.throws(() => barPlot({ title: "x", labels: ["a", "b"], values: [1] }), /1 values for 2 labels/);
  assert.throws(
    () => barPlot({ title: "x", labels: ["a"], groups: [{ name: "G", values: [1], errors: [1, 2] }] }),
    /group "G" has 2 errors/,
  );
});

Deno.test("plot: heatmap has one cell per value and a colour bar", () => {
  const random = rng(25);
  const rows = 3;
  const cols = 5;
  const values = Array.from({ length: rows }, () => Array.from({ length: cols }, () => random() * 4 - 1));
  const svg = heatmap({
    title: "Grid",
    xLabels: Array.from({ length: cols }, (_, c) => `lr${c}`),
    yLabels: Array.from({ length: rows }, (_, r) => `r${r}`),
    values,
  });
  checkXml(svg);
  const lo = Math.min(...values.flat());
  const hi = Math.max(...values.flat());
  // The extreme cells get the ends of the colour map.
  assert.ok(svg.includes(`fill="${viridis(0)}"`) && svg.includes(`fill="${viridis(1)}"`));
  assert.equal(viridis(0), "#440154");
  assert.equal(viridis(1), "#fde725");
  assert.ok(lo < hi);
  assert.throws(
    () => heatmap({ title: "t", xLabels: ["a"], yLabels: ["b"], values: [[1, 2]] }),
    /row 0 has 2/,
  );
});

Deno.test("plot: linePlot, barPlot, heatmap and niceTicks refuse unknown keys, bad sizes and reversed ranges", () => {
  const series = [{ name: "a", x: [1, 2, 3], y: [1, 10, 1000] }];
  const misspelt = { title: "t", series, logy: true } as never;
  assert.throws(() => linePlot(misspelt), /linePlot: unknown option "logy"/);
  assert.throws(
    () => linePlot({ title: "t", series, width: NaN }),
    /linePlot: option "width" must be a finite/,
  );
  assert.throws(
    () => linePlot({ title: "t", series, height: 0 }),
    /linePlot: option "height" must be > 0, got 0/,
  );
  assert.throws(
    () => linePlot({ title: "t", series, yRange: [100, 1] }),
    /linePlot: option "yRange" must be \[min, max\] with min < max, got \[100,1\]/,
  );
  assert.throws(
    () => linePlot({ title: "t", series, yRange: [0, 1], logY: true }),
    /linePlot: option "yRange" must be positive/,
  );
  const badSeries = [{ name: "a", x: [1], y: [1], dashd: true }] as never;
  assert.throws(
    () => linePlot({ title: "t", series: badSeries }),
    /linePlot: unknown option of "series\[0\]" "dashd"/,
  );
  const both = { title: "t", labels: ["a"], values: [1], groups: [{ name: "g", values: [2] }] };
  assert.throws(
    () => barPlot(both as never),
    /barPlot: options "values" and "groups"/,
  );
  assert.throws(
    () => barPlot({ title: "t", labels: ["a"], values: [1], width: -5 }),
    /barPlot: option "width" must be > 0/,
  );
  const cells = { title: "t", xLabels: ["a", "b"], yLabels: ["r"], values: [[1, 2]] };
  assert.throws(
    () => heatmap({ ...cells, colorRange: [1, 1] }),
    /heatmap: option "colorRange" must be \[min, max\]/,
  );
  assert.throws(
    () => heatmap({ ...cells, anotate: false } as never),
    /unknown option "anotate"/,
  );
  assert.throws(() => niceTicks(0, 1, { count: NaN }), /niceTicks: option "count" must be/);
  // The valid spellings still draw: a log y axis over three decades has the decade ticks, at the given size.
  const svg = linePlot({ title: "t", series, logY: true, width: 300, height: 200 });
  assert.deepEqual(texts(svg, 12, "end"), ["1", "10", "100", "1000"]);
  assert.ok(svg.startsWith(`<svg xmlns="http://www.w3.org/2000/svg" width="300" height="200"`));
});
