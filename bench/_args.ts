/**
 * The command line of the benchmarks in `bench/`. Their figures are quoted, so a flag the script does not read
 * (`--step 40` for `--steps 40`), a flag given twice, or a value it cannot use (`--reps 0`, `--device wbgpu`) is
 * refused with one line naming it and what is accepted, and exit code 2, before anything runs; never ignored.
 * `--help` prints the usage and exits 0.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** How one flag is read; `min` (inclusive) defaults to 1 for `int`, and `number` takes finite values > 0. */
export type Flag =
  | { readonly type: "boolean" }
  | { readonly type: "int"; readonly default?: number; readonly min?: number }
  | { readonly type: "number"; readonly default?: number }
  | { readonly type: "string"; readonly default?: string; readonly choices?: readonly string[] }
  | { readonly type: "list"; readonly default?: string; readonly choices: readonly string[] };

/** The value a {@link Flag} gives: `undefined` where the flag has no default and was not given. */
export type FlagValue<F extends Flag> = F extends { type: "boolean" } ? boolean
  : F extends { type: "list"; default: string } ? string[]
  : F extends { type: "list" } ? string[] | undefined
  : F extends { type: "int" | "number"; default: number } ? number
  : F extends { type: "int" | "number" } ? number | undefined
  : F extends { default: string } ? string
  : string | undefined;

/** Prints `script: message` and the usage on one line to stderr and exits with code 2. */
export function refuse(script: string, message: string, usage = "--help lists the flags"): never {
  console.error(`${script}: ${message}. ${usage}`);
  Deno.exit(2);
}

/** The usage line of `flags`: `Usage: deno run -A bench/<script>.ts [--quick] [--reps N] ...`. */
export function usageLine(script: string, flags: Readonly<Record<string, Flag>>): string {
  const parts = Object.entries(flags).map(([name, f]) =>
    f.type === "boolean"
      ? `[--${name}]`
      : `[--${name} ${
        "choices" in f && f.choices ? f.choices.join("|") : f.type === "string" ? "VALUE" : "N"
      }]`
  );
  return `Usage: deno run -A bench/${script}.ts ${parts.join(" ")}`.trimEnd();
}

/**
 * Reads `argv` as `flags` say, or refuses it (see the module documentation); `--help` prints `help`.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./_args.ts";
 * const v = parseFlags("my_bench", ["--steps", "3"], { steps: { type: "int", default: 20 }, quick: { type: "boolean" } });
 * console.log(v.steps + 1, v.quick);
 * ```
 */
export function parseFlags<S extends Readonly<Record<string, Flag>>>(
  script: string,
  argv: readonly string[],
  flags: S,
  help: string = usageLine(script, flags),
): { [K in keyof S]: FlagValue<S[K]> } {
  const usage = usageLine(script, flags);
  const options: Record<string, { type: "boolean" | "string" }> = { help: { type: "boolean" } };
  for (const [name, f] of Object.entries(flags)) {
    options[name] = { type: f.type === "boolean" ? "boolean" : "string" };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false, tokens: true });
  } catch (e) {
    refuse(script, (e as Error).message.replace(/\s*\n\s*/g, " ").replace(/\.$/, ""), usage);
  }
  if (parsed.values.help) {
    console.log(help);
    Deno.exit(0);
  }
  const seen = new Set<string>();
  for (const t of parsed.tokens) {
    if (t.kind !== "option") continue;
    if (seen.has(t.name)) refuse(script, `--${t.name} is given twice`, usage);
    seen.add(t.name);
  }
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(flags)) {
    const raw = parsed.values[name];
    if (f.type === "boolean") {
      out[name] = raw === true;
      continue;
    }
    const text = typeof raw === "string" ? raw : f.default === undefined ? undefined : String(f.default);
    if (text === undefined) continue;
    const bad = (want: string): never => refuse(script, `--${name} must be ${want}, got "${text}"`, usage);
    if (f.type === "int") {
      const n = Number(text), min = f.min ?? 1;
      if (text.trim() === "" || !Number.isInteger(n) || n < min) bad(`an integer >= ${min}`);
      out[name] = n;
    } else if (f.type === "number") {
      const n = Number(text);
      if (text.trim() === "" || !(Number.isFinite(n) && n > 0)) bad("a number > 0");
      out[name] = n;
    } else if (f.type === "list") {
      const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
      const unknown = items.filter((s) => !f.choices.includes(s));
      if (unknown.length > 0 || items.length === 0) bad(`a comma-separated list of ${f.choices.join(", ")}`);
      out[name] = items;
    } else {
      if (f.choices !== undefined && !f.choices.includes(text)) bad(`one of ${f.choices.join(", ")}`);
      out[name] = text;
    }
  }
  return out as { [K in keyof S]: FlagValue<S[K]> };
}
