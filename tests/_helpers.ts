/**
 * Test helpers: fresh seeded random inputs (the seed is printed in every failure so a run can be repeated with
 * TEST_SEED), the float64 reference value of any tensor, and closeness assertions with explicit tolerances.
 */
import type { Tensor } from "../mod.ts";
import { evaluateReference } from "../lib/ir/reference.ts";
import { leafValues } from "../lib/autodiff/gradcheck.ts";
import { OptionsError } from "../lib/options.ts";
import { debugLevel, setDebugLevel } from "../lib/runtime/debug.ts";

/** Seed of this test process: TEST_SEED if set, else fresh. */
export const TEST_SEED: number = (() => {
  const env = Deno.env.get("TEST_SEED");
  return env !== undefined ? Number(env) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
})();

/** A small xorshift generator for host-side test data. */
export class TestRng {
  #s: number;
  /** Seeded from TEST_SEED mixed with `salt`, so each test draws its own stream. */
  constructor(salt: number) {
    this.#s = ((TEST_SEED ^ Math.imul(salt + 1, 0x9e3779b1)) >>> 0) || 1;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** Standard normal. */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  /** `n` normal values as Float32Array. */
  normals(n: number, scale = 1): Float32Array {
    return Float32Array.from({ length: n }, () => this.normal() * scale);
  }
}

/**
 * Float64 reference values of `t` (the unscheduled interpreter in lib/ir/reference.ts). Take it before `t` is
 * realized: the reference of a stored tensor would be its own stored value, so a comparison could never fail
 * (`assertClose(await t.data(), await reference(t))` evaluates `t.data()` first).
 */
export async function reference(t: Tensor): Promise<Float64Array> {
  if (t.node.storage !== null) {
    throw new Error(
      `reference: ${t.node} is stored (already realized); take the reference before realizing it`,
    );
  }
  const leaves = await leafValues([t.node]);
  return evaluateReference(t.node, (n) => leaves.get(n)!);
}

/** Options of {@link assertClose}. */
export interface CloseOptions {
  /** Relative tolerance. */
  rtol?: number;
  /** Absolute tolerance. */
  atol?: number;
  /** Per-element absolute tolerance (added to atol). */
  atolEach?: ArrayLike<number>;
  /** Prefix of the failure message. */
  what?: string;
}

/** Asserts |got - want| <= atol + rtol·|want| elementwise (NaN matches NaN, infinities must match exactly). */
export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, opts: CloseOptions = {}): void {
  const { rtol = 1e-5, atol = 1e-6, what = "values" } = opts;
  if (got.length !== want.length) {
    throw new Error(`${what}: length ${got.length} != ${want.length} (TEST_SEED=${TEST_SEED})`);
  }
  for (let i = 0; i < got.length; i++) {
    const g = Number(got[i]);
    const w = Number(want[i]);
    if (Number.isNaN(w) && Number.isNaN(g)) continue;
    if (!Number.isFinite(w) || !Number.isFinite(g)) {
      if (g === w) continue;
    } else {
      const tol = atol + (opts.atolEach?.[i] ?? 0) + rtol * Math.abs(w);
      if (Math.abs(g - w) <= tol) continue;
    }
    throw new Error(
      `${what}: element ${i}: got ${g}, want ${w} (|diff| ${Math.abs(g - w)}, rtol ${rtol}, atol ${atol}) ` +
        `(TEST_SEED=${TEST_SEED})`,
    );
  }
}

/** `fn` throws (or rejects with) an OptionsError whose message matches `pattern`. */
export async function refusedOptions(fn: () => unknown, pattern: RegExp): Promise<void> {
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  if (!(err instanceof OptionsError)) {
    throw new Error(`expected an OptionsError matching ${pattern}, got ${err}`);
  }
  if (!pattern.test(err.message)) {
    throw new Error(`expected an OptionsError matching ${pattern}, got "${err.message}"`);
  }
}

/** max |a − b| / max |b|: the error relative to the largest reference value (logits against a reference). */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relError: lengths ${a.length} and ${b.length} differ`);
  let err = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return err / scale;
}

/** The first argument of every `console.error` call `run` makes at DEBUG level 1 (launches, solver sweeps). */
export async function debugLines(run: () => Promise<unknown>): Promise<string[]> {
  const level = debugLevel();
  const log = console.error;
  const lines: string[] = [];
  console.error = (...args: unknown[]) => lines.push(String(args[0]));
  setDebugLevel(1);
  try {
    await run();
  } finally {
    setDebugLevel(level);
    console.error = log;
  }
  return lines;
}

/**
 * Starts `deno eval` of the TypeScript `script` and reads its stdout until it holds `marker`; throws `ended` when the
 * process ends first. Returns the process, what it printed, and `stop()`, which ends the reading of its stdout.
 */
export async function evalUntil(
  script: string,
  marker: string,
  ended: string,
): Promise<{ child: Deno.ChildProcess; printed: string; stop: () => Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let printed = "";
  while (!printed.includes(marker)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(ended);
    printed += value;
  }
  return { child, printed, stop: () => reader.cancel() };
}
