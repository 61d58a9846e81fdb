/**
 * A one-line progress bar on stderr: steps done of total, a few named values (loss, ...), steps per
 * second and the estimated time left. It draws only when stderr is a terminal, at most ten times a second
 * by default, and is silent otherwise (CI logs, redirected output), so scripts can use it unconditionally.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions, checkSize, opt, showValue } from "../options.ts";

/** Named values shown after the bar; numbers are shown with 4 significant digits. */
export type ProgressValues = Record<string, number | string>;

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /** Text before the bar, e.g. `"train"`. */
  label?: string;
  /** Minimum milliseconds between redraws (default 100, i.e. at most 10 redraws per second). */
  minIntervalMs?: number;
  /** Draw even if stderr is not a terminal (true) or never draw (false); by default ask stderr. */
  enabled?: boolean;
  /** Where the text goes; stderr when omitted. */
  write?: (text: string) => void;
  /** Clock in milliseconds; `performance.now` when omitted. */
  now?: () => number;
  /** Line width; the terminal width (or 100) when omitted. */
  columns?: number;
}

const PROGRESS_OPTIONS = z.object({
  label: z.string().optional(),
  minIntervalMs: opt.nonNegative().optional(),
  enabled: z.boolean().optional(),
  write: opt.fn().optional(),
  now: opt.fn().optional(),
  columns: opt.count().optional(),
}).strict();

/**
 * Format a duration in seconds as `42s`, `3m07s` or `2h05m`.
 *
 * @param seconds Duration; non-finite or negative gives `?`.
 * @returns The formatted duration.
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function formatValue(value: number | string): string {
  if (typeof value === "string") return value;
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(2) : value.toPrecision(4);
}

const encoder = new TextEncoder();

function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

function terminalColumns(): number {
  try {
    return Deno.consoleSize().columns;
  } catch {
    return 100;
  }
}

/**
 * A progress bar for a loop of known length.
 *
 * @example
 * ```ts
 * import { Progress } from "./progress.ts";
 * const progress = new Progress(100, { label: "train" });
 * for (let step = 1; step <= 100; step++) {
 *   progress.update(step, { loss: 1 / step });
 * }
 * progress.done();
 * ```
 */
export class Progress {
  #total: number;
  #label: string;
  #minIntervalMs: number;
  #enabled: boolean;
  #write: (text: string) => void;
  #now: () => number;
  #columns: number | undefined;
  #start: number;
  #lastDraw = -Infinity;
  #step = 0;
  #values: ProgressValues = {};
  #drawn = false;
  #finished = false;

  /**
   * Create a bar (nothing is drawn until the first update).
   *
   * @param total Number of steps: a positive integer.
   * @param options Label, redraw interval, output and clock.
   */
  constructor(total: number, options: ProgressOptions = {}) {
    checkOptions("Progress", PROGRESS_OPTIONS, options);
    // An infinite or fractional total drew a bar that never fills (2/Infinity 0%) or never reaches its end.
    checkSize("Progress", "total", total);
    this.#total = total;
    this.#label = options.label ?? "";
    this.#minIntervalMs = options.minIntervalMs ?? 100;
    this.#enabled = options.enabled ?? stderrIsTerminal();
    this.#write = options.write ?? ((text) => Deno.stderr.writeSync(encoder.encode(text)));
    this.#now = options.now ?? (() => performance.now());
    this.#columns = options.columns;
    this.#start = this.#now();
  }

  /** Steps done so far. */
  get step(): number {
    return this.#step;
  }

  /** Average steps per second since the bar was created. */
  get rate(): number {
    const seconds = (this.#now() - this.#start) / 1000;
    return seconds > 0 ? this.#step / seconds : 0;
  }

  /**
   * Set the number of steps done and (optionally) the values shown; redraws if enough time has passed.
   *
   * @param step Steps done: an integer >= 0 (clamped to the total).
   * @param values Named values to show; they replace the previous ones with the same names.
   */
  update(step: number, values: ProgressValues = {}): void {
    // A negative step failed inside the bar's drawing ("Invalid count value"), NaN drew "NaN/10 NaN%".
    if (!Number.isSafeInteger(step) || step < 0) {
      throw new RangeError(`Progress.update: step must be an integer >= 0, got ${showValue(step)}`);
    }
    this.#step = Math.min(step, this.#total);
    this.#values = { ...this.#values, ...values };
    const now = this.#now();
    if (now - this.#lastDraw >= this.#minIntervalMs || this.#step === this.#total) this.#draw(now);
  }

  /**
   * Advance by `count` steps (default 1).
   *
   * @param count Steps to add.
   * @param values Named values to show.
   */
  tick(count = 1, values: ProgressValues = {}): void {
    this.update(this.#step + count, values);
  }

  /**
   * Print a line of text above the bar (the bar is redrawn below it). When the bar is disabled the text
   * still goes to the output, so logs are not lost.
   *
   * @param text The line to print.
   */
  log(text: string): void {
    this.#write(`${this.#enabled && this.#drawn ? "\r\x1b[K" : ""}${text}\n`);
    if (this.#enabled && this.#drawn && !this.#finished) this.#draw(this.#now());
  }

  /** Draw the final state and end the line. Calling it again does nothing. */
  done(): void {
    if (this.#finished) return;
    if (this.#enabled) {
      this.#draw(this.#now());
      this.#write("\n");
    }
    this.#finished = true;
  }

  /** The bar's current text (without control characters). */
  render(): string {
    const elapsed = (this.#now() - this.#start) / 1000;
    const rate = elapsed > 0 ? this.#step / elapsed : 0;
    const eta = rate > 0 ? (this.#total - this.#step) / rate : NaN;
    const fraction = this.#step / this.#total;
    const valueText = Object.entries(this.#values).map(([k, v]) => `${k} ${formatValue(v)}`).join("  ");
    const stats = [
      `${this.#step}/${this.#total}`,
      `${Math.floor(fraction * 100)}%`,
      valueText,
      `${formatValue(rate)} it/s`,
      this.#step >= this.#total ? formatDuration(elapsed) : `ETA ${formatDuration(eta)}`,
    ].filter((part) => part !== "").join("  ");
    const head = this.#label === "" ? "" : `${this.#label} `;
    const columns = this.#columns ?? terminalColumns();
    const barWidth = Math.max(0, Math.min(30, columns - head.length - stats.length - 4));
    const filled = Math.round(fraction * barWidth);
    const bar = barWidth > 0 ? `[${"#".repeat(filled)}${".".repeat(barWidth - filled)}] ` : "";
    const line = `${head}${bar}${stats}`;
    return line.length > columns - 1 ? line.slice(0, Math.max(0, columns - 1)) : line;
  }

  #draw(now: number): void {
    if (!this.#enabled || this.#finished) return;
    this.#lastDraw = now;
    this.#drawn = true;
    this.#write(`\r${this.render()}\x1b[K`);
  }
}
