/**
 * Plots as SVG text, written directly: line plots (linear or log axes, optional shaded bands), bar plots
 * (single or grouped, optional error bars) and heatmaps. Axes get "nice" ticks (1, 2 or 5 times a power of
 * ten) that cover the data, series get a colour-blind-friendly palette and a legend, and all text uses
 * 12–16 px sans-serif. Convert to PNG with `svgToPng` from `png.ts`.
 *
 * @module
 */
import { z } from "../deps.ts";
import { checkOptions, OptionsError, showValue } from "../mod.ts";

/** One line of a {@link linePlot}. */
export interface LineSeries {
  /** Legend entry. */
  name: string;
  /** X coordinates. */
  x: readonly number[];
  /** Y coordinates, same length as `x`; non-finite values break the line. */
  y: readonly number[];
  /** Optional shaded band around the line (e.g. mean ± std over seeds), same length as `x`. */
  band?: { low: readonly number[]; high: readonly number[] };
  /** CSS colour; taken from the palette when omitted. */
  color?: string;
  /** Draw the line dashed. */
  dashed?: boolean;
}

/** Options of {@link linePlot}. */
export interface LinePlotOptions {
  /** Title at the top. */
  title: string;
  /** X axis label. */
  xLabel?: string;
  /** Y axis label. */
  yLabel?: string;
  /** The lines, drawn in order with palette colours. */
  series: readonly LineSeries[];
  /** Logarithmic x axis (non-positive x values are dropped). */
  logX?: boolean;
  /** Logarithmic y axis (non-positive y values are dropped). */
  logY?: boolean;
  /**
   * Y range `[min, max]` (min < max; min > 0 with `logY`) to show instead of the data's (extended to nice ticks);
   * lines outside the axes are clipped.
   */
  yRange?: readonly [number, number];
  /** Draw a dot at every point; by default only when every series has at most 30 points. */
  markers?: boolean;
  /** Image width in px (default 720). */
  width?: number;
  /** Image height in px (default 440). */
  height?: number;
}

/** One group (one colour) of a grouped {@link barPlot}. */
export interface BarGroup {
  /** Legend entry. */
  name: string;
  /** One value per label. */
  values: readonly number[];
  /** Optional error-bar half-widths, one per label. */
  errors?: readonly number[];
}

/** Options shared by both forms of {@link barPlot}. */
export interface BarPlotCommon {
  /** Title at the top. */
  title: string;
  /** One label per bar (or per group of bars). */
  labels: readonly string[];
  /** X axis label. */
  xLabel?: string;
  /** Y axis label. */
  yLabel?: string;
  /** Logarithmic y axis (bars start at the bottom of the axis). */
  logY?: boolean;
  /** Image width in px (default 720). */
  width?: number;
  /** Image height in px (default 440). */
  height?: number;
}

/** Options of {@link barPlot}: either `values` (one bar per label) or `groups` (one bar per group and label). */
export type BarPlotOptions =
  & BarPlotCommon
  & (
    | { values: readonly number[]; errors?: readonly number[]; groups?: undefined }
    | { groups: readonly BarGroup[]; values?: undefined; errors?: undefined }
  );

/** Options of {@link heatmap}. */
export interface HeatmapOptions {
  /** Title at the top. */
  title: string;
  /** Column labels. */
  xLabels: readonly string[];
  /** Row labels, top to bottom. */
  yLabels: readonly string[];
  /** `values[row][col]`; non-finite cells are drawn grey. */
  values: readonly (readonly number[])[];
  /** X axis label. */
  xLabel?: string;
  /** Y axis label. */
  yLabel?: string;
  /** Colour scale range `[min, max]`, min < max; the data range when omitted. */
  colorRange?: readonly [number, number];
  /** Write each cell's value in it (default: when cells are large enough). */
  annotate?: boolean;
  /** Image width in px (default 720). */
  width?: number;
  /** Image height in px (default 480). */
  height?: number;
}

/** Options of {@link niceTicks}. */
export interface TickOptions {
  /** Roughly how many ticks, an integer of at least 2 (default 6). */
  count?: number;
  /** Powers of ten (and 2×, 5× within a single decade) for a log axis. */
  log?: boolean;
}

/** Colour-blind-friendly palette (Okabe–Ito, then a few distinct extras). */
export const PALETTE: readonly string[] = [
  "#0072B2",
  "#D55E00",
  "#009E73",
  "#CC79A7",
  "#E69F00",
  "#56B4E9",
  "#000000",
  "#8C564B",
  "#7F7F7F",
  "#BCBD22",
];

/** A data value: any number, NaN and ±Infinity included (a plot skips them or draws them grey). */
const DATUM = z.custom<number>((v) => typeof v === "number", { message: "must be numbers" });
const DATA = z.array(DATUM);
/** An image size in px: a finite number > 0. */
const SIZE = z.number().gt(0);
/** An axis or colour range `[min, max]` of finite numbers, min < max. */
const RANGE = z.tuple([z.number(), z.number()]).refine(([lo, hi]) => lo < hi, {
  message: "must be [min, max] with min < max",
});
const TEXTS = { title: z.string(), xLabel: z.string().optional(), yLabel: z.string().optional() };
const SIZES = { width: SIZE.optional(), height: SIZE.optional() };
const TICK_OPTIONS = z.object({ count: z.int().min(2), log: z.boolean() }).partial().strict();
const LINE_SERIES = z.object({
  name: z.string(),
  x: DATA,
  y: DATA,
  band: z.object({ low: DATA, high: DATA }).strict().optional(),
  color: z.string().optional(),
  dashed: z.boolean().optional(),
}).strict();
const LINE_OPTIONS = z.object({
  ...TEXTS,
  ...SIZES,
  series: z.array(LINE_SERIES),
  logX: z.boolean().optional(),
  logY: z.boolean().optional(),
  yRange: RANGE.optional(),
  markers: z.boolean().optional(),
}).strict();
const BAR_OPTIONS = z.object({
  ...TEXTS,
  ...SIZES,
  labels: z.array(z.string()),
  logY: z.boolean().optional(),
  values: DATA.optional(),
  errors: DATA.optional(),
  groups: z.array(z.object({ name: z.string(), values: DATA, errors: DATA.optional() }).strict()).optional(),
}).strict();
const HEATMAP_OPTIONS = z.object({
  ...TEXTS,
  ...SIZES,
  xLabels: z.array(z.string()),
  yLabels: z.array(z.string()),
  values: z.array(DATA),
  colorRange: RANGE.optional(),
  annotate: z.boolean().optional(),
}).strict();

const FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";
const AXIS_COLOR = "#333333";
const GRID_COLOR = "#e4e4e4";

/** Escape text for use in SVG content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/**
 * 1, 2 or 5 times a power of ten close to `x` > 0 (rounded, or the next one up when `round` is false), as the
 * mantissa and the exponent, so that multiples of it can be written as exact decimals.
 */
function niceNumber(x: number, round: boolean): { m: number; e: number } {
  const exponent = Math.floor(Math.log10(x));
  const fraction = x / 10 ** exponent;
  let nice: number;
  if (round) nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  else nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice === 10 ? { m: 1, e: exponent + 1 } : { m: nice, e: exponent };
}

/**
 * Where `v` lies between `lo` and `hi` (0 at lo, 1 at hi). A span wider than the largest double (-1e308 to
 * 1e308) is measured in halves, so that it stays finite.
 */
function fraction(v: number, lo: number, hi: number): number {
  const t = (v - lo) / (hi - lo);
  return Number.isFinite(t) ? t : (v / 2 - lo / 2) / (hi / 2 - lo / 2);
}

/**
 * Evenly spaced "nice" tick values covering `[min, max]`: the first tick is ≤ `min` and the last ≥ `max`,
 * so `[ticks[0], ticks[ticks.length - 1]]` can serve as the axis range.
 *
 * @param min Smallest data value.
 * @param max Largest data value.
 * @param options Approximate tick count; log scale (powers of ten, with 2× and 5× ticks when the data span
 *   at most two decades).
 * @returns The ticks, ascending (at least two).
 *
 * @example
 * ```ts
 * import { niceTicks } from "./plot.ts";
 * console.log(niceTicks(0.13, 0.92)); // [0, 0.2, 0.4, 0.6, 0.8, 1]
 * console.log(niceTicks(3e-4, 2, { log: true })); // [0.0001, 0.001, 0.01, 0.1, 1, 10]
 * console.log(niceTicks(0.3, 4, { log: true })); // [0.2, 0.5, 1, 2, 5]
 * ```
 */
export function niceTicks(min: number, max: number, options: TickOptions = {}): number[] {
  checkOptions("niceTicks", TICK_OPTIONS, options);
  if (!Number.isFinite(min) || !Number.isFinite(max)) {
    throw new Error(`niceTicks needs finite bounds, got [${min}, ${max}]`);
  }
  if (min > max) [min, max] = [max, min];
  const count = options.count ?? 6;
  if (options.log) {
    if (!(min > 0)) throw new Error(`a log axis needs positive values, got a minimum of ${min}`);
    let lo = Math.floor(Math.log10(min));
    if (10 ** (lo + 1) <= min) lo++;
    if (10 ** lo > min) lo--;
    let hi = Math.ceil(Math.log10(max));
    if (10 ** (hi - 1) >= max) hi--;
    if (10 ** hi < max) hi++;
    if (hi <= lo) hi = lo + 1;
    const decade = (e: number) => Number((10 ** e).toPrecision(12));
    if (hi - lo <= 2) {
      // Few decades: 1×, 2× and 5× ticks, trimmed to the smallest set still covering [min, max].
      const all: number[] = [];
      for (let e = lo; e < hi; e++) {
        all.push(decade(e), Number((2 * 10 ** e).toPrecision(12)), Number((5 * 10 ** e).toPrecision(12)));
      }
      all.push(decade(hi));
      const first = all.findLastIndex((t) => t <= min);
      const last = all.findIndex((t) => t >= max);
      // At least two ticks, so the axis has a non-empty range.
      if (first === last) return all.slice(Math.max(0, first - 1), Math.min(all.length, last + 2));
      return all.slice(first, last + 1);
    }
    const stride = Math.ceil((hi - lo) / (count + 2));
    lo = Math.floor(lo / stride) * stride;
    hi = Math.ceil(hi / stride) * stride;
    const ticks: number[] = [];
    for (let e = lo; e <= hi; e += stride) ticks.push(decade(e));
    return ticks;
  }
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min = Math.max(-Number.MAX_VALUE, min - pad);
    max = Math.min(Number.MAX_VALUE, max + pad);
  }
  // The step is found on the data divided by 10^k (values within ±10, so max − min cannot overflow), and each
  // tick i·m·10^(e+k) is read from its decimal text: the double nearest to it, at any magnitude, without the
  // rounding noise of i·step.
  const top = Math.max(Math.abs(min), Math.abs(max));
  const k = Math.floor(Math.log10(top));
  // 10^k loses precision below 1e-300 (subnormal from 1e-308, 0 from 1e-324): scale in two steps there.
  const scaled = (v: number) => (k < -300 ? (v * 1e300) / 10 ** (k + 300) : v / 10 ** k);
  const a = scaled(min);
  const b = scaled(max);
  const rounded = niceNumber((b - a) / (count - 1), true);
  // A step of a few units in the last place (a narrow range far from 0) would give ticks that round to the same
  // double: the step is at least 8 of them (of the smallest subnormal for subnormal data), which also keeps
  // |i| below 2^53.
  const least = niceNumber(scaled(8 * Math.max(top * Number.EPSILON, Number.MIN_VALUE)), false);
  const { m, e } = rounded.m * 10 ** rounded.e >= least.m * 10 ** least.e ? rounded : least;
  const step = m * 10 ** e;
  const tick = (i: number) =>
    Math.min(Number.MAX_VALUE, Math.max(-Number.MAX_VALUE, Number(`${i * m}e${e + k}`)));
  // The small tolerance avoids an extra tick from rounding (0.3 / 0.1 = 2.9999...); the corrections below then
  // restore the guarantee that the ticks cover [min, max] exactly (a step or two at most: a and b are within a
  // few units in the last place of min and max over 10^k). A tick past the largest double is that double.
  let lo = Math.floor(a / step + 1e-9);
  let hi = Math.ceil(b / step - 1e-9);
  for (let n = 0; n < 2 && tick(lo) > min; n++) lo--;
  for (let n = 0; n < 2 && tick(hi) < max; n++) hi++;
  const ticks: number[] = [];
  for (let i = lo; i <= hi; i++) ticks.push(tick(i));
  return ticks;
}

/**
 * Format a tick value: plain decimals, or `1e-5` style for very small or large numbers, with as many digits as
 * the tick spacing needs (`1.000001e5` for ticks 0.1 apart; 3 significant digits without a spacing).
 *
 * @param value The tick value.
 * @param step Spacing between ticks (for linear axes), or 0 for log axes.
 * @returns The label text.
 */
export function formatTick(value: number, step = 0): string {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  // Digits down to the step's (a step past the largest double, between ±1e308, counts as none).
  const spaced = step > 0 && Number.isFinite(step);
  const stepDigit = spaced ? Math.floor(Math.log10(step) + 1e-9) : 0;
  if (abs >= 1e5 || abs < 1e-3) {
    const digits = spaced ? Math.min(17, Math.max(1, Math.floor(Math.log10(abs) + 1e-9) - stepDigit + 1)) : 3;
    const [mantissa, exponent] = value.toExponential(digits - 1).split("e");
    return `${Number(mantissa)}e${Number(exponent)}`;
  }
  if (spaced) {
    const fixed = value.toFixed(Math.max(0, -stepDigit));
    return fixed.includes(".") ? fixed.replace(/\.?0+$/, "") : fixed;
  }
  return String(Number(value.toPrecision(6)));
}

/** A linear or log mapping from data values to pixels. */
class Scale {
  readonly lo: number;
  readonly hi: number;
  readonly ticks: number[];
  readonly log: boolean;
  #p0: number;
  #p1: number;

  constructor(ticks: number[], log: boolean, p0: number, p1: number) {
    this.ticks = ticks;
    this.lo = ticks[0];
    this.hi = ticks[ticks.length - 1];
    this.log = log;
    this.#p0 = p0;
    this.#p1 = p1;
  }

  map(v: number): number {
    const t = this.log
      ? (Math.log10(v) - Math.log10(this.lo)) / (Math.log10(this.hi) - Math.log10(this.lo))
      : fraction(v, this.lo, this.hi);
    return round2(this.#p0 + t * (this.#p1 - this.#p0));
  }

  label(v: number): string {
    return formatTick(v, this.log ? 0 : this.ticks.length > 1 ? this.ticks[1] - this.ticks[0] : 0);
  }
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}

/** Approximate rendered width of text in px (DejaVu Sans averages about 0.6 em per character). */
function textWidth(text: string, fontSize: number): number {
  return text.length * fontSize * 0.6;
}

function text(
  x: number,
  y: number,
  content: string,
  attrs: {
    size?: number;
    anchor?: "start" | "middle" | "end";
    weight?: string;
    fill?: string;
    rotate?: number;
  } = {},
): string {
  const transform = attrs.rotate === undefined ? "" : ` transform="rotate(${attrs.rotate} ${x} ${y})"`;
  return `<text x="${x}" y="${y}" font-size="${attrs.size ?? 12}" text-anchor="${attrs.anchor ?? "start"}"` +
    `${attrs.weight === undefined ? "" : ` font-weight="${attrs.weight}"`} fill="${
      attrs.fill ?? AXIS_COLOR
    }"` +
    `${transform}>${escapeXml(content)}</text>`;
}

function svgOpen(width: number, height: number, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="${FONT}">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    text(width / 2, 26, title, { size: 16, anchor: "middle", weight: "bold" }),
  ];
}

/** Plot area rectangle. */
interface Frame {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

/** Grid lines, tick marks, tick labels and axis labels for a y scale and (optionally) an x scale. */
function axes(frame: Frame, y: Scale, x: Scale | undefined, xLabel?: string, yLabel?: string): string[] {
  const out: string[] = [];
  for (const t of y.ticks) {
    const py = y.map(t);
    out.push(`<line x1="${frame.left}" y1="${py}" x2="${frame.right}" y2="${py}" stroke="${GRID_COLOR}"/>`);
    out.push(
      `<line x1="${frame.left - 5}" y1="${py}" x2="${frame.left}" y2="${py}" stroke="${AXIS_COLOR}"/>`,
    );
    out.push(text(frame.left - 8, py + 4, y.label(t), { anchor: "end" }));
  }
  if (x !== undefined) {
    for (const t of x.ticks) {
      const px = x.map(t);
      out.push(`<line x1="${px}" y1="${frame.top}" x2="${px}" y2="${frame.bottom}" stroke="${GRID_COLOR}"/>`);
      out.push(
        `<line x1="${px}" y1="${frame.bottom}" x2="${px}" y2="${frame.bottom + 5}" stroke="${AXIS_COLOR}"/>`,
      );
      out.push(text(px, frame.bottom + 19, x.label(t), { anchor: "middle" }));
    }
  }
  out.push(
    `<rect x="${frame.left}" y="${frame.top}" width="${frame.right - frame.left}" ` +
      `height="${frame.bottom - frame.top}" fill="none" stroke="${AXIS_COLOR}"/>`,
  );
  if (yLabel !== undefined && yLabel !== "") {
    const cy = (frame.top + frame.bottom) / 2;
    out.push(text(18, cy, yLabel, { size: 14, anchor: "middle", rotate: -90 }));
  }
  if (xLabel !== undefined && xLabel !== "") {
    out.push(text((frame.left + frame.right) / 2, frame.bottom + 42, xLabel, { size: 14, anchor: "middle" }));
  }
  return out;
}

/** Width of the y tick labels column. */
function yLabelWidth(scale: { ticks: number[]; label(v: number): string }): number {
  return Math.max(...scale.ticks.map((t) => textWidth(scale.label(t), 12)));
}

/** Legend entries stacked at the right of the plot area. */
function legend(
  frame: Frame,
  entries: readonly { name: string; color: string; dashed?: boolean; box?: boolean }[],
): string[] {
  const out: string[] = [];
  const x = frame.right + 14;
  entries.forEach((entry, i) => {
    const y = frame.top + 8 + i * 20;
    if (entry.box) {
      out.push(`<rect x="${x}" y="${y - 5}" width="18" height="11" fill="${entry.color}"/>`);
    } else {
      const dash = entry.dashed ? ` stroke-dasharray="6 4"` : "";
      out.push(
        `<line x1="${x}" y1="${y}" x2="${
          x + 18
        }" y2="${y}" stroke="${entry.color}" stroke-width="2.5"${dash}/>`,
      );
    }
    out.push(text(x + 24, y + 4, entry.name));
  });
  return out;
}

function legendWidth(names: readonly string[]): number {
  if (names.length === 0) return 0;
  return Math.min(260, Math.max(...names.map((n) => textWidth(n, 12)))) + 50;
}

function finiteRange(values: Iterable<number>, positiveOnly: boolean): [number, number] | undefined {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v) || (positiveOnly && v <= 0)) continue;
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return lo <= hi ? [lo, hi] : undefined;
}

/**
 * A line plot of one or more series, with a legend when there is more than one (or any named) series.
 *
 * @param options Title, axis labels, series and scales.
 * @returns The SVG document as a string.
 *
 * @example
 * ```ts
 * import { linePlot } from "./plot.ts";
 * const steps = [1, 2, 3, 4];
 * const svg = linePlot({
 *   title: "Training loss",
 *   xLabel: "step",
 *   yLabel: "loss",
 *   series: [{ name: "LoRA r=8", x: steps, y: [2.1, 1.7, 1.5, 1.4] }],
 * });
 * ```
 */
export function linePlot(options: LinePlotOptions): string {
  checkOptions("linePlot", LINE_OPTIONS, options);
  if (options.logY && options.yRange !== undefined && !(options.yRange[0] > 0)) {
    throw new OptionsError("linePlot", [
      `option "yRange" must be positive on a log y axis (logY), got ${showValue(options.yRange)}`,
    ]);
  }
  const width = options.width ?? 720;
  const height = options.height ?? 440;
  const logX = options.logX ?? false;
  const logY = options.logY ?? false;
  for (const s of options.series) {
    if (s.x.length !== s.y.length) {
      throw new Error(`linePlot series "${s.name}" has ${s.x.length} x values but ${s.y.length} y values`);
    }
    if (s.band !== undefined && (s.band.low.length !== s.x.length || s.band.high.length !== s.x.length)) {
      throw new Error(
        `linePlot series "${s.name}" band has ${s.band.low.length}/${s.band.high.length} low/high values, ` +
          `expected ${s.x.length}`,
      );
    }
  }
  const xs = finiteRange(options.series.flatMap((s) => s.x), logX) ?? (logX ? [1, 10] : [0, 1]);
  const yValues = options.series.flatMap((s) => [...s.y, ...(s.band?.low ?? []), ...(s.band?.high ?? [])]);
  const ys = options.yRange ?? finiteRange(yValues, logY) ?? (logY ? [1, 10] : [0, 1]);
  const yTicks = niceTicks(ys[0], ys[1], { log: logY });
  const xTicks = niceTicks(xs[0], xs[1], { log: logX, count: 7 });

  const names = options.series.map((s) => s.name);
  const showLegend = options.series.length > 1 || names.some((n) => n !== "");
  const provisionalY = new Scale(yTicks, logY, 0, 1);
  const left = 34 + yLabelWidth(provisionalY) + (options.yLabel ? 10 : 0);
  const frame: Frame = {
    left: Math.round(left),
    top: 44,
    right: Math.round(width - 20 - (showLegend ? legendWidth(names) : 0)),
    bottom: height - (options.xLabel ? 58 : 40),
  };
  const x = new Scale(xTicks, logX, frame.left, frame.right);
  const y = new Scale(yTicks, logY, frame.bottom, frame.top);
  const out = svgOpen(width, height, options.title);
  out.push(
    `<defs><clipPath id="plot-area"><rect x="${frame.left}" y="${frame.top}" ` +
      `width="${frame.right - frame.left}" height="${frame.bottom - frame.top}"/></clipPath></defs>`,
  );
  out.push(...axes(frame, y, x, options.xLabel, options.yLabel));

  const usable = (xv: number, yv: number) =>
    Number.isFinite(xv) && Number.isFinite(yv) && (!logX || xv > 0) && (!logY || yv > 0);
  const markers = options.markers ?? options.series.every((s) => s.x.length <= 30);
  const entries: { name: string; color: string; dashed?: boolean }[] = [];
  out.push(`<g clip-path="url(#plot-area)">`);
  options.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const dashed = s.dashed ?? i >= PALETTE.length;
    entries.push({ name: s.name, color, dashed });
    if (s.band !== undefined) {
      const { low, high } = s.band;
      const idx = s.x.map((_, j) => j).filter((j) => usable(s.x[j], low[j]) && usable(s.x[j], high[j]));
      if (idx.length > 1) {
        const upper = idx.map((j) => `${x.map(s.x[j])},${y.map(high[j])}`);
        const lower = idx.reverse().map((j) => `${x.map(s.x[j])},${y.map(low[j])}`);
        out.push(`<polygon points="${[...upper, ...lower].join(" ")}" fill="${color}" fill-opacity="0.18"/>`);
      }
    }
    let d = "";
    let penDown = false;
    for (let j = 0; j < s.x.length; j++) {
      if (!usable(s.x[j], s.y[j])) {
        penDown = false;
        continue;
      }
      d += `${penDown ? "L" : "M"}${x.map(s.x[j])} ${y.map(s.y[j])} `;
      penDown = true;
    }
    const dash = dashed ? ` stroke-dasharray="6 4"` : "";
    if (d !== "") {
      out.push(
        `<path d="${d.trim()}" fill="none" stroke="${color}" stroke-width="2" ` +
          `stroke-linejoin="round"${dash}/>`,
      );
    }
    if (markers) {
      for (let j = 0; j < s.x.length; j++) {
        if (usable(s.x[j], s.y[j])) {
          out.push(`<circle cx="${x.map(s.x[j])}" cy="${y.map(s.y[j])}" r="3" fill="${color}"/>`);
        }
      }
    }
  });
  out.push(`</g>`);
  if (showLegend) out.push(...legend(frame, entries));
  out.push(`</svg>`);
  return out.join("\n");
}

/**
 * A bar plot: one bar per label (`values`, optional `errors`), or grouped bars with a legend (`groups`).
 *
 * @param options Title, labels, and either `values` or `groups`.
 * @returns The SVG document as a string.
 *
 * @example
 * ```ts
 * import { barPlot } from "./plot.ts";
 * const svg = barPlot({
 *   title: "Final accuracy",
 *   labels: ["r=4", "r=8", "r=16"],
 *   groups: [
 *     { name: "LoRA", values: [0.81, 0.84, 0.85], errors: [0.01, 0.01, 0.02] },
 *     { name: "PiSSA", values: [0.83, 0.86, 0.86] },
 *   ],
 *   yLabel: "accuracy",
 * });
 * ```
 */
export function barPlot(options: BarPlotOptions): string {
  checkOptions("barPlot", BAR_OPTIONS, options);
  if ((options.values === undefined) === (options.groups === undefined)) {
    throw new OptionsError("barPlot", [
      options.values === undefined
        ? `option "values" or "groups" is required`
        : `options "values" and "groups" were both given; give one (a group holds its own values)`,
    ]);
  }
  if (options.groups !== undefined && options.errors !== undefined) {
    throw new OptionsError("barPlot", [
      `option "errors" goes with "values"; with "groups" each group has its own`,
    ]);
  }
  const width = options.width ?? 720;
  const height = options.height ?? 440;
  const logY = options.logY ?? false;
  const grouped = options.groups !== undefined;
  const groups: readonly BarGroup[] = options.groups ??
    [{ name: "", values: options.values ?? [], errors: options.errors }];
  const n = options.labels.length;
  for (const g of groups) {
    const what = grouped ? `barPlot group "${g.name}"` : "barPlot";
    if (g.values.length !== n) throw new Error(`${what} has ${g.values.length} values for ${n} labels`);
    if (g.errors !== undefined && g.errors.length !== n) {
      throw new Error(`${what} has ${g.errors.length} errors for ${n} labels`);
    }
  }
  const extremes: number[] = logY ? [] : [0];
  for (const g of groups) {
    g.values.forEach((v, i) => {
      const e = Math.abs(g.errors?.[i] ?? 0);
      extremes.push(v - e, v + e, v);
    });
  }
  const range = finiteRange(extremes, logY) ?? (logY ? [1, 10] : [0, 1]);
  const yTicks = niceTicks(range[0], range[1], { log: logY });

  const names = grouped ? groups.map((g) => g.name) : [];
  const provisionalY = new Scale(yTicks, logY, 0, 1);
  const left = Math.round(34 + yLabelWidth(provisionalY) + (options.yLabel ? 10 : 0));
  const right = Math.round(width - 20 - (grouped ? legendWidth(names) : 0));
  const slot = (right - left) / Math.max(1, n);
  const longest = Math.max(0, ...options.labels.map((l) => textWidth(l, 12)));
  const rotate = longest > slot - 6;
  const labelSpace = rotate ? Math.min(140, longest * 0.75 + 16) : 22;
  const frame: Frame = { left, top: 44, right, bottom: height - labelSpace - (options.xLabel ? 40 : 18) };
  const y = new Scale(yTicks, logY, frame.bottom, frame.top);
  const out = svgOpen(width, height, options.title);
  out.push(...axes(frame, y, undefined, undefined, options.yLabel));
  if (options.xLabel) {
    out.push(
      text((frame.left + frame.right) / 2, height - 14, options.xLabel, { size: 14, anchor: "middle" }),
    );
  }
  const base = logY ? y.lo : Math.min(Math.max(0, y.lo), y.hi);
  const basePx = y.map(base);
  const barWidth = (slot * 0.8) / groups.length;
  options.labels.forEach((label, i) => {
    const cx = frame.left + slot * (i + 0.5);
    if (rotate) {
      out.push(text(cx, frame.bottom + 16, label, { anchor: "end", rotate: -35 }));
    } else {
      out.push(text(cx, frame.bottom + 18, label, { anchor: "middle" }));
    }
    groups.forEach((g, k) => {
      const v = g.values[i];
      if (!Number.isFinite(v) || (logY && v <= 0)) return;
      const color = PALETTE[k % PALETTE.length];
      const x0 = round2(frame.left + slot * i + slot * 0.1 + k * barWidth);
      const py = y.map(v);
      const top = Math.min(py, basePx);
      out.push(
        `<rect x="${x0}" y="${top}" width="${round2(barWidth * 0.92)}" height="${
          round2(Math.abs(basePx - py))
        }" ` +
          `fill="${color}"/>`,
      );
      const e = g.errors?.[i];
      if (e !== undefined && Number.isFinite(e) && e !== 0) {
        const ex = round2(x0 + barWidth * 0.46);
        const lo = logY && v - Math.abs(e) <= 0 ? frame.bottom : y.map(v - Math.abs(e));
        const hi = y.map(v + Math.abs(e));
        out.push(
          `<line x1="${ex}" y1="${lo}" x2="${ex}" y2="${hi}" stroke="${AXIS_COLOR}" stroke-width="1.5"/>`,
        );
        for (const cap of [lo, hi]) {
          out.push(
            `<line x1="${ex - 4}" y1="${cap}" x2="${
              ex + 4
            }" y2="${cap}" stroke="${AXIS_COLOR}" stroke-width="1.5"/>`,
          );
        }
      }
    });
  });
  if (!logY && y.lo < 0) {
    out.push(
      `<line x1="${frame.left}" y1="${basePx}" x2="${frame.right}" y2="${basePx}" stroke="${AXIS_COLOR}"/>`,
    );
  }
  if (grouped) {
    out.push(
      ...legend(
        frame,
        groups.map((g, k) => ({ name: g.name, color: PALETTE[k % PALETTE.length], box: true })),
      ),
    );
  }
  out.push(`</svg>`);
  return out.join("\n");
}

/** Viridis colour map anchors (perceptually uniform, colour-blind friendly). */
const VIRIDIS: readonly [number, number, number][] = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [253, 231, 37],
];

/**
 * The viridis colour for `t` in [0, 1] (clamped), as `#rrggbb`.
 *
 * @param t Position on the colour scale.
 * @returns The colour.
 */
export function viridis(t: number): string {
  const c = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(c));
  const f = c - i;
  const rgb = VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
  return `#${rgb.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * A heatmap of a matrix with labelled rows and columns and a colour bar.
 *
 * @param options Title, labels and `values[row][col]`.
 * @returns The SVG document as a string.
 *
 * @example
 * ```ts
 * import { heatmap } from "./plot.ts";
 * const svg = heatmap({
 *   title: "Final loss",
 *   xLabels: ["1e-4", "1e-3"],
 *   yLabels: ["r=4", "r=8"],
 *   values: [[1.9, 1.5], [1.8, 1.4]],
 *   xLabel: "learning rate",
 *   yLabel: "rank",
 * });
 * ```
 */
export function heatmap(options: HeatmapOptions): string {
  checkOptions("heatmap", HEATMAP_OPTIONS, options);
  const width = options.width ?? 720;
  const height = options.height ?? 480;
  const rows = options.yLabels.length;
  const cols = options.xLabels.length;
  if (options.values.length !== rows) {
    throw new Error(`heatmap has ${options.values.length} rows of values for ${rows} y labels`);
  }
  options.values.forEach((row, r) => {
    if (row.length !== cols) {
      throw new Error(`heatmap row ${r} has ${row.length} values for ${cols} x labels`);
    }
  });
  const range = options.colorRange ?? finiteRange(options.values.flat(), false) ?? [0, 1];
  const cTicks = niceTicks(range[0], range[1], { count: 5 });
  const [c0, c1] = options.colorRange ?? [range[0], range[1] === range[0] ? range[0] + 1 : range[1]];

  const rowLabelWidth = Math.max(0, ...options.yLabels.map((l) => textWidth(l, 12)));
  const colLabelWidth = Math.max(0, ...options.xLabels.map((l) => textWidth(l, 12)));
  const frame: Frame = {
    left: Math.round(30 + rowLabelWidth + (options.yLabel ? 14 : 0)),
    top: 44,
    right: width - 110,
    bottom: 0,
  };
  const slot = (frame.right - frame.left) / Math.max(1, cols);
  const rotate = colLabelWidth > slot - 6;
  frame.bottom = Math.round(
    height - (rotate ? Math.min(140, colLabelWidth * 0.75 + 16) : 24) - (options.xLabel ? 40 : 10),
  );
  const cw = (frame.right - frame.left) / Math.max(1, cols);
  const ch = (frame.bottom - frame.top) / Math.max(1, rows);
  const out = svgOpen(width, height, options.title);
  const annotate = options.annotate ?? (cw >= 36 && ch >= 18);
  const scale = (v: number) => fraction(v, c0, c1);
  options.values.forEach((row, r) => {
    row.forEach((v, c) => {
      const fill = Number.isFinite(v) ? viridis(scale(v)) : "#cccccc";
      const x0 = round2(frame.left + c * cw);
      const y0 = round2(frame.top + r * ch);
      out.push(`<rect x="${x0}" y="${y0}" width="${round2(cw)}" height="${round2(ch)}" fill="${fill}"/>`);
      if (annotate && Number.isFinite(v)) {
        const ink = scale(v) > 0.6 ? "#000000" : "#ffffff";
        out.push(text(round2(x0 + cw / 2), round2(y0 + ch / 2 + 4), formatTick(Number(v.toPrecision(3))), {
          anchor: "middle",
          size: 11,
          fill: ink,
        }));
      }
    });
  });
  out.push(
    `<rect x="${frame.left}" y="${frame.top}" width="${frame.right - frame.left}" ` +
      `height="${frame.bottom - frame.top}" fill="none" stroke="${AXIS_COLOR}"/>`,
  );
  options.yLabels.forEach((label, r) => {
    out.push(text(frame.left - 6, round2(frame.top + (r + 0.5) * ch + 4), label, { anchor: "end" }));
  });
  options.xLabels.forEach((label, c) => {
    const cx = round2(frame.left + (c + 0.5) * cw);
    out.push(
      rotate
        ? text(cx, frame.bottom + 14, label, { anchor: "end", rotate: -35 })
        : text(cx, frame.bottom + 18, label, { anchor: "middle" }),
    );
  });
  if (options.yLabel) {
    out.push(
      text(16, (frame.top + frame.bottom) / 2, options.yLabel, { size: 14, anchor: "middle", rotate: -90 }),
    );
  }
  if (options.xLabel) {
    out.push(
      text((frame.left + frame.right) / 2, height - 14, options.xLabel, { size: 14, anchor: "middle" }),
    );
  }
  // Colour bar: 20 stripes from c0 (bottom) to c1 (top), with ticks inside [c0, c1].
  const bx = frame.right + 24;
  const stripes = 20;
  const barHeight = frame.bottom - frame.top;
  for (let i = 0; i < stripes; i++) {
    const y0 = round2(frame.top + (barHeight * (stripes - 1 - i)) / stripes);
    out.push(
      `<rect x="${bx}" y="${y0}" width="16" height="${round2(barHeight / stripes + 0.5)}" ` +
        `fill="${viridis((i + 0.5) / stripes)}"/>`,
    );
  }
  out.push(
    `<rect x="${bx}" y="${frame.top}" width="16" height="${barHeight}" fill="none" stroke="${AXIS_COLOR}"/>`,
  );
  const step = cTicks.length > 1 ? cTicks[1] - cTicks[0] : 0;
  for (const t of cTicks) {
    if (t < Math.min(c0, c1) - 1e-12 || t > Math.max(c0, c1) + 1e-12) continue;
    const py = round2(frame.bottom - scale(t) * barHeight);
    out.push(`<line x1="${bx + 16}" y1="${py}" x2="${bx + 21}" y2="${py}" stroke="${AXIS_COLOR}"/>`);
    out.push(text(bx + 24, py + 4, formatTick(t, step)));
  }
  out.push(`</svg>`);
  return out.join("\n");
}
