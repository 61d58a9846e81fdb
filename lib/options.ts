/**
 * Validation of the library's options objects: each public function or constructor that takes an options object
 * checks it against a zod schema with {@link checkOptions}, so a value that would change the math in a way the code
 * does not support (a rank of 0, a NaN learning rate, a negative alpha, a misspelt key) is refused with one message
 * naming the function, every bad key and its value, as the command-line configuration does for scripts.
 *
 * @module
 */
import { z } from "../deps.ts";
import { DTYPES } from "./dtype.ts";

/** A bad options object: `issues` holds one line per problem, each naming the key and the value given. */
export class OptionsError extends RangeError {
  /** One line per problem. */
  readonly issues: readonly string[];

  /** An error of `where` (the function) with its problem lines. */
  constructor(where: string, issues: readonly string[]) {
    super(`${where}: ${issues.join("; ")}`);
    this.name = "OptionsError";
    this.issues = issues;
  }
}

/**
 * A short rendering of a value given as an option (non-finite numbers, tensors and functions included), cut to
 * `max` characters (default 80).
 */
export function showValue(value: unknown, max = 80): string {
  if (value === undefined) return "nothing";
  if (typeof value === "number") return Object.is(value, -0) ? "-0" : String(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return "a function";
  if (value instanceof RegExp) return String(value);
  if (typeof value === "object" && value !== null && "shape" in value && "dtype" in value) {
    const t = value as { shape: unknown; dtype: unknown };
    if (Array.isArray(t.shape)) return `a ${String(t.dtype)} tensor [${t.shape.join(", ")}]`;
  }
  let text: string;
  try {
    text = JSON.stringify(value, (_k, v) => {
      if (typeof v === "number" && !Number.isFinite(v)) return String(v);
      if (typeof v === "function") return "<function>";
      if (v instanceof RegExp) return String(v);
      return v;
    }) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

/** Up to six names, then ", ...": the names there are, beside a refusal of names that are not. */
export function shortList(names: readonly string[]): string {
  return `${names.slice(0, 6).join(", ")}${names.length > 6 ? ", ..." : ""}`;
}

/**
 * `"a", which is <noun>` or `"a", "b", which are <plural>`: the names a refusal lists (a misspelt path in a list of
 * paths, say).
 */
export function namesWhich(names: readonly string[], noun: string, plural = noun): string {
  return `${names.map((n) => `"${n}"`).join(", ")}, which ${
    names.length > 1 ? `are ${plural}` : `is ${noun}`
  }`;
}

function valueAt(source: unknown, path: readonly PropertyKey[]): unknown {
  let node: unknown = source;
  for (const key of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

function keyName(path: readonly PropertyKey[]): string {
  let out = "";
  for (const k of path) out += typeof k === "number" ? `[${k}]` : out === "" ? String(k) : `.${String(k)}`;
  return out;
}

const TYPE_NAMES: Record<string, string> = {
  number: "a finite number",
  int: "an integer",
  string: "a string",
  boolean: "true or false",
  array: "an array",
  object: "an object",
  function: "a function",
};

/** What a bound says, e.g. `>= 1` or `at least 1 item`. */
function bound(
  issue: { origin?: string; minimum?: unknown; maximum?: unknown; inclusive?: boolean },
  min: boolean,
) {
  const limit = min ? issue.minimum : issue.maximum;
  if (issue.origin === "array" || issue.origin === "set") {
    return `${min ? "at least" : "at most"} ${limit} item${limit === 1 ? "" : "s"}`;
  }
  if (issue.origin === "string") return `${min ? "at least" : "at most"} ${limit} characters long`;
  return `${min ? ">" : "<"}${issue.inclusive ? "=" : ""} ${limit}`;
}

/** One line for one zod issue: the key, what it must be, and the value given. */
function describe(issue: z.core.$ZodIssue, input: unknown): string {
  const path = issue.path;
  const key = path.length === 0 ? "the options" : `option "${keyName(path)}"`;
  const got = showValue(valueAt(input, path));
  switch (issue.code) {
    case "invalid_type":
      if (valueAt(input, path) === undefined) return `${key} is required`;
      return `${key} must be ${TYPE_NAMES[issue.expected] ?? issue.expected}, got ${got}`;
    case "too_small":
    case "too_big": {
      const verb = issue.origin === "array" || issue.origin === "set" ? "have" : "be";
      return `${key} must ${verb} ${bound(issue, issue.code === "too_small")}, got ${got}`;
    }
    case "invalid_value":
      return `${key} must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, got ${got}`;
    case "not_multiple_of":
      return `${key} must be a multiple of ${issue.divisor}, got ${got}`;
    case "unrecognized_keys": {
      const where = path.length === 0 ? "" : ` of "${keyName(path)}"`;
      return `unknown option${issue.keys.length === 1 ? "" : "s"}${where} ${
        issue.keys.map((k) => `"${k}"`).join(", ")
      }`;
    }
    case "invalid_union":
      // A discriminated union names its accepted discriminator values (`options`).
      if ("options" in issue && Array.isArray(issue.options)) {
        return `${key} must be one of ${issue.options.map((v) => JSON.stringify(v)).join(", ")}, got ${got}`;
      }
      return `${key} must be ${issue.errors.length > 0 ? "one of the accepted forms" : "valid"}, got ${got}`;
    default:
      return `${key} ${issue.message}, got ${got}`;
  }
}

/**
 * Validates `value` against `schema` and returns the parsed value (defaults applied), or throws an
 * {@link OptionsError} naming `where`, each bad key and its value.
 *
 * @param where The function or constructor, e.g. `"attachLora"`.
 * @param schema The options' schema (usually `z.object({...}).strict()`).
 * @param value The options given.
 * @returns The parsed options.
 *
 * @example
 * ```ts
 * import { checkOptions, OptionsError } from "./options.ts";
 * import { z } from "../deps.ts";
 * const Schema = z.object({ rank: z.int().min(1) }).strict();
 * try {
 *   checkOptions("demo", Schema, { rank: 0 });
 * } catch (err) {
 *   console.log((err as OptionsError).message); // demo: option "rank" must be >= 1, got 0
 * }
 * ```
 */
export function checkOptions<S extends OptionsSchema>(
  where: string,
  schema: S,
  value: unknown,
): S["_zod"]["output"];
export function checkOptions(where: string, schema: OptionsSchema, value: unknown): unknown {
  // Spelled structurally in the signature (public APIs name no zod-internal type); every schema here is zod's.
  const result = (schema as OptionsSchema & Pick<z.ZodType, "safeParse">).safeParse(value);
  if (!result.success) throw new OptionsError(where, result.error.issues.map((i) => describe(i, value)));
  return result.data;
}

/**
 * Throws an {@link OptionsError} for each of `keys` given in `opts` when `layers` (existing parts) are given too:
 * those options describe new parts, and would have no effect.
 */
export function refuseWithLayers(where: string, opts: object, keys: readonly string[]): void {
  if ((opts as { layers?: unknown }).layers === undefined) return;
  const given = keys.filter((k) => (opts as Record<string, unknown>)[k] !== undefined);
  if (given.length > 0) {
    throw new OptionsError(
      where,
      given.map((k) => `option "${k}" describes new parts; with "layers" it would have no effect`),
    );
  }
}

/**
 * Throws a RangeError unless `value`, a size given as an argument rather than an option, is an integer >= 1,
 * naming `where` and the argument (`Linear: outFeatures must be a positive integer, got 0`): a layer refuses its
 * sizes itself, where a zero or fractional size would otherwise surface later in an initialiser or a reshape.
 */
export function checkSize(where: string, name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${where}: ${name} must be a positive integer, got ${showValue(value)}`);
  }
}

/** Schema pieces the library's options share. */
export const opt = {
  /** A finite number. */
  number: (): z.ZodNumber => z.number(),
  /** A finite number > 0. */
  positive: (): z.ZodNumber => z.number().gt(0),
  /** A finite number >= 0. */
  nonNegative: (): z.ZodNumber => z.number().min(0),
  /** An integer >= 1. */
  count: (): z.ZodNumber => z.int().min(1),
  /** An integer >= 0. */
  index: (): z.ZodNumber => z.int().min(0),
  /** An integer seed (any safe integer). */
  seed: (): z.ZodNumber => z.int(),
  /** A probability-like fraction in [0, 1]. */
  fraction: (): z.ZodNumber => z.number().min(0).max(1),
  /** A function (any signature). */
  fn: (): z.ZodType<(...args: never[]) => unknown> =>
    z.custom<(...args: never[]) => unknown>((v) => typeof v === "function", {
      message: "must be a function",
    }),
  /** A device name. */
  device: (): z.ZodEnum<{ webgpu: "webgpu"; wasm: "wasm"; cpu: "cpu" }> => z.enum(["webgpu", "wasm", "cpu"]),
  /** A dtype name. */
  dtype: (): z.ZodType<string> => z.enum(DTYPES as [string, ...string[]]),
  /** A tensor (any shape and dtype; the function checks those itself). */
  tensor: (): z.ZodType<object> =>
    z.custom<object>(
      (v) => typeof v === "object" && v !== null && "shape" in v && "dtype" in v && "node" in v,
      {
        message: "must be a tensor",
      },
    ),
  /** Any object (parts a layer is built around; the function checks what it needs). */
  object: (): z.ZodType<object> =>
    z.custom<object>((v) => typeof v === "object" && v !== null, { message: "must be an object" }),
  /** Which parameters: a RegExp over paths, a list of paths, or a predicate `(path, tensor) => boolean`. */
  paramFilter: (): z.ZodType<RegExp | readonly string[] | ((...args: never[]) => unknown)> =>
    z.union([z.instanceof(RegExp), z.array(z.string()), opt.fn()]),
} as const;

/** A zod schema (of options, say), spelled structurally so that public APIs name no zod-internal types. */
export interface OptionsSchema {
  /** zod's internals, which carry the schema's input and output types. */
  readonly _zod: { readonly input: unknown; readonly output: unknown };
}

/**
 * A `z.object(...)` schema of options or of a configuration, spelled structurally so that public APIs name no
 * zod-internal types (the lab's configuration parser and the init registry take one).
 */
export interface ConfigSchema extends OptionsSchema {
  /** The object's fields. */
  readonly shape: unknown;
}
