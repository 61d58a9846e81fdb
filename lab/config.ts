/**
 * Strict configuration for experiment scripts: typed defaults in a zod schema, overridden by an optional
 * YAML file (`--config file.yaml`), overridden in turn by command-line flags. Unknown keys are rejected
 * wherever they appear, and every error names the key path, what was expected and what was given.
 *
 * Precedence, lowest first: the schema's own `.default(...)` values, `options.defaults`, each `--config`
 * file in the order given, then flags.
 *
 * Flags:
 * - `--key value` and `--key=value`; nested keys with dots: `--train.lr 0.1`; a value that starts with "--"
 *   only as `--key=--value` (`--prompt --steps 2` is a --prompt without its value, then --steps 2);
 * - kebab-case flags map to camelCase keys: `--batch-size 8` sets `batchSize` (`--batchSize 8` works too);
 * - booleans: `--flag`, `--no-flag`, `--flag=false` (and `--flag=null` where the key may be null);
 * - arrays: `--ranks 4,8,16` or `--ranks [4,8,16]`;
 * - repeatable flags that add one value each to an array key, as a script declares them
 *   (`repeatable: { method: "methods" }`: `--method a=lora --method b=pissa:niter=4`; no splitting at commas);
 * - `--config file.yaml` (repeatable) and `--help`/`-h`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { z } from "../deps.ts";
import type { ConfigSchema } from "../mod.ts";
import { parseYaml } from "./deps.ts";

export type { ConfigSchema };

/**
 * A configuration problem a person can fix: an unknown key, a value of the wrong type, an unreadable
 * YAML file. `issues` holds one line per problem; `message` joins them.
 *
 * Scripts print the message and exit with {@link ConfigError.exitCode} (2, or 0 for {@link ConfigHelp}).
 *
 * @example
 * ```ts
 * import { ConfigError, parseConfig } from "./config.ts";
 * import { z } from "../deps.ts";
 * try {
 *   parseConfig(z.object({ lr: z.number().default(0.1) }), ["--lr", "abc"], { name: "demo.ts" });
 * } catch (err) {
 *   if (!(err instanceof ConfigError)) throw err;
 *   console.error(err.message); // config key "lr": expected number, got "abc" (from flag --lr)
 * }
 * ```
 */
export class ConfigError extends Error {
  /** One line per problem found. */
  readonly issues: readonly string[];
  /** The process exit status a script should use: 2 for errors. */
  readonly exitCode: number = 2;

  /**
   * Create an error from its problem lines.
   *
   * @param issues One line per problem; must not be empty.
   */
  constructor(issues: readonly string[]) {
    super(issues.join("\n"));
    this.name = "ConfigError";
    this.issues = issues;
  }
}

/**
 * Thrown by {@link parseConfig} when `--help` or `-h` is given: `message` and `usage` hold the usage text,
 * and {@link ConfigError.exitCode} is 0, so the same `catch` block that handles errors prints the help.
 */
export class ConfigHelp extends ConfigError {
  /** The usage text listing every key. */
  readonly usage: string;
  /** The process exit status a script should use: 0, since asking for help is not an error. */
  override readonly exitCode: number = 0;

  /**
   * Create the help "error".
   *
   * @param usage The usage text.
   */
  constructor(usage: string) {
    super([usage]);
    this.name = "ConfigHelp";
    this.usage = usage;
  }
}

/** A deep partial of a configuration's input type: any subset of keys, at any depth. */
export type ConfigDefaults<T> = {
  [K in keyof T]?: T[K] extends readonly unknown[] ? T[K]
    : T[K] extends Record<string, unknown> ? ConfigDefaults<T[K]>
    : T[K];
};

/**
 * A zod schema of one configuration key whose value is a `T`, spelled structurally (as {@link ConfigSchema} is) so
 * that helpers building keys name no zod-internal types: `z.object({ key: field })` takes it as it takes any zod
 * schema.
 */
export interface ConfigField<T> {
  /** zod's internals, which carry the key's input and output types. */
  readonly _zod: { readonly input: unknown; readonly output: T };
}

/** The validated configuration type of a schema (what `z.output<S>` / `z.infer<S>` give). */
export type ConfigOf<S extends ConfigSchema> = S["_zod"]["output"];

/** The input type of a schema (what `z.input<S>` gives): defaults may be left out. */
export type ConfigInputOf<S extends ConfigSchema> = S["_zod"]["input"];

/** Options of {@link parseConfig} and {@link configUsage}. */
export interface ConfigOptions<S extends ConfigSchema> {
  /** Script name shown in the usage line, e.g. `experiments/rank_sweep.ts`. */
  name: string;
  /** One or two sentences shown at the top of `--help`: the question the script answers. */
  description?: string;
  /** Defaults that take precedence over the schema's `.default(...)` values but lose to YAML and flags. */
  defaults?: ConfigDefaults<ConfigInputOf<S>>;
  /**
   * Flags that add one value to an array key each time they are given, flag name → key (`{ method: "methods" }`):
   * each value is taken whole (commas included) and the values of all of them, after any given with the key's own
   * flag, form the key's list.
   */
  repeatable?: Readonly<Record<string, string>>;
  /**
   * Top-level keys that a run records beside its settings (a run's own `config.yaml` holds them): a `--config` file
   * may carry them, and each is handed to `take` with the file's path instead of being read as a setting.
   */
  records?: { readonly keys: readonly string[]; take(key: string, value: unknown, file: string): void };
}

/** What a flag value is converted to before validation. */
type LeafKind = "string" | "number" | "boolean" | "array" | "other";

/** One settable key of the schema (a field that is not itself an object). */
interface Leaf {
  /** Key path, e.g. `["train", "lr"]`. */
  readonly path: readonly string[];
  /** Dotted key, e.g. `train.lr`. */
  readonly key: string;
  /** The field's schema with wrappers (default, optional, nullable, ...) removed. */
  readonly core: z.ZodType;
  readonly kind: LeafKind;
  readonly nullable: boolean;
  readonly optional: boolean;
  readonly description?: string;
  readonly hasDefault: boolean;
  readonly defaultValue?: unknown;
}

/** The schema flattened: its leaves, and for every object (group) path its field names. */
interface SchemaIndex {
  readonly leaves: Map<string, Leaf>;
  readonly groups: Map<string, Map<string, z.ZodType>>;
}

/** Internal view of a zod schema's definition. */
interface ZodDefView {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  options?: readonly z.ZodType[];
  entries?: Record<string, string | number>;
  values?: readonly unknown[];
  shape?: Record<string, z.ZodType>;
  defaultValue?: unknown;
}

function defOf(schema: z.ZodType): ZodDefView {
  return (schema as unknown as { _zod: { def: ZodDefView } })._zod.def;
}

const WRAPPERS = new Set(["default", "prefault", "optional", "nullable", "readonly", "catch", "nonoptional"]);

/** Strip wrapper schemas, collecting what they say about the field. */
function unwrap(schema: z.ZodType): {
  core: z.ZodType;
  nullable: boolean;
  optional: boolean;
  description?: string;
  hasDefault: boolean;
  defaultValue?: unknown;
} {
  let current = schema;
  let nullable = false;
  let optional = false;
  let hasDefault = false;
  let defaultValue: unknown = undefined;
  let description: string | undefined = current.description;
  for (;;) {
    const def = defOf(current);
    if (def.type === "pipe" && def.in !== undefined) {
      current = def.in;
    } else if (WRAPPERS.has(def.type) && def.innerType !== undefined) {
      if (def.type === "nullable") nullable = true;
      if (def.type === "optional") optional = true;
      if ((def.type === "default" || def.type === "prefault") && !hasDefault) {
        hasDefault = true;
        defaultValue = def.defaultValue;
      }
      current = def.innerType;
    } else {
      break;
    }
    description ??= current.description;
  }
  return { core: current, nullable, optional, description, hasDefault, defaultValue };
}

function leafKind(core: z.ZodType): LeafKind {
  switch (defOf(core).type) {
    case "string":
    case "enum":
    case "literal":
      return isStringValued(core) ? "string" : "other";
    case "number":
      return "number";
    case "boolean":
      return "boolean";
    case "array":
      return "array";
    default:
      return "other";
  }
}

function isStringValued(core: z.ZodType): boolean {
  const def = defOf(core);
  if (def.type === "string") return true;
  if (def.type === "enum") return Object.values(def.entries ?? {}).every((v) => typeof v === "string");
  if (def.type === "literal") return (def.values ?? []).every((v) => typeof v === "string");
  return false;
}

const RESERVED = new Set(["config", "help"]);

function indexSchema(schema: ConfigSchema): SchemaIndex {
  const leaves = new Map<string, Leaf>();
  const groups = new Map<string, Map<string, z.ZodType>>();
  const visit = (shape: Record<string, z.ZodType>, prefix: readonly string[]) => {
    groups.set(prefix.join("."), new Map(Object.entries(shape)));
    for (const [name, field] of Object.entries(shape)) {
      const path = [...prefix, name];
      if (prefix.length === 0 && RESERVED.has(name)) {
        throw new Error(`config schema key "${name}" clashes with the built-in --${name} flag; rename it`);
      }
      const info = unwrap(field);
      const def = defOf(info.core);
      if (def.type === "object" && def.shape !== undefined) {
        visit(def.shape, path);
        continue;
      }
      leaves.set(path.join("."), { path, key: path.join("."), kind: leafKind(info.core), ...info });
    }
  };
  visit((schema as unknown as z.ZodObject).shape as Record<string, z.ZodType>, []);
  return { leaves, groups };
}

/** `learningRate` → `learning-rate`. */
function toKebab(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();
}

/** `learning-rate` → `learningRate`. */
function toCamel(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** The preferred flag spelling of a key: each segment in kebab case. */
function flagName(leaf: Leaf): string {
  return leaf.path.map(toKebab).join(".");
}

/** A short human-readable rendering of a value given in the configuration. */
function show(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "number") return String(value); // NaN and ±Infinity (YAML .nan, .inf) as themselves
  let text: string;
  try {
    text = JSON.stringify(value, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v)) ??
      String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** Human name of the type a schema accepts, as shown in errors and `--help`. */
function describeType(schema: z.ZodType): string {
  const info = unwrap(schema);
  const core = info.core;
  const def = defOf(core);
  let name: string;
  switch (def.type) {
    case "number": {
      const format = (core as unknown as { format?: string | null }).format;
      name = format !== undefined && format !== null && /int/.test(format) ? "integer" : "number";
      break;
    }
    case "enum":
      name = Object.values(def.entries ?? {}).map((v) => JSON.stringify(v)).join("|");
      break;
    case "literal":
      name = (def.values ?? []).map((v) => JSON.stringify(v)).join("|");
      break;
    case "union":
      name = (def.options ?? []).map((o) => describeType(o)).join("|");
      break;
    case "array":
      name = def.element === undefined ? "array" : `${describeType(def.element)}[]`;
      if (name.includes("|")) name = `(${name.slice(0, -2)})[]`;
      break;
    case "object":
      name = "mapping";
      break;
    case "record":
      name = "mapping";
      break;
    default:
      name = def.type;
  }
  return info.nullable ? `${name}|null` : name;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Deep merge: objects merge key by key, anything else (arrays included) replaces. */
function mergeInto(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isPlainObject(v) && isPlainObject(out[k]) ? mergeInto(out[k] as Record<string, unknown>, v) : v;
  }
  return out;
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const segment of path.slice(0, -1)) {
    if (!isPlainObject(node[segment])) node[segment] = {};
    node = node[segment] as Record<string, unknown>;
  }
  node[path[path.length - 1]] = value;
}

function getPath(source: unknown, path: readonly PropertyKey[]): unknown {
  let node: unknown = source;
  for (const segment of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<PropertyKey, unknown>)[segment];
  }
  return node;
}

/** Levenshtein distance, for "did you mean" suggestions. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row.push(Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)));
    }
    prev = row;
  }
  return prev[b.length];
}

function suggest(given: string, candidates: Iterable<string>): string {
  const normalized = given.split(".").map(toCamel).join(".").toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(normalized, candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  if (best === undefined || bestDistance > Math.max(2, Math.floor(normalized.length / 3))) return "";
  return ` (did you mean "${best}"?)`;
}

const NUMBER_PATTERN = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?Infinity$|^NaN$/;
const TRUE_WORDS = new Set(["true", "yes", "on", "1"]);
const FALSE_WORDS = new Set(["false", "no", "off", "0"]);

/** Convert a string to the leaf's type where that is unambiguous; otherwise return it unchanged. */
function coerceString(leaf: Leaf, text: string): unknown {
  switch (leaf.kind) {
    case "number":
      return NUMBER_PATTERN.test(text.trim()) ? Number(text.trim()) : text;
    case "boolean": {
      const lower = text.trim().toLowerCase();
      if (TRUE_WORDS.has(lower)) return true;
      if (FALSE_WORDS.has(lower)) return false;
      return text;
    }
    default:
      return text;
  }
}

/** Turn the text of a flag value into a value of the leaf's type (validation happens later). */
function flagValue(leaf: Leaf, text: string): unknown {
  if (leaf.nullable && leaf.kind !== "string" && text === "null") return null;
  switch (leaf.kind) {
    case "string":
    case "number":
    case "boolean":
      return coerceString(leaf, text);
    case "array": {
      const element = defOf(leaf.core).element;
      const trimmed = text.trim();
      if (trimmed.startsWith("[")) return parseYamlOrText(trimmed);
      if (trimmed === "") return [];
      const parts = trimmed.split(",").map((part) => part.trim());
      if (element !== undefined && leafKind(unwrap(element).core) === "string") return parts;
      return parts.map((part) => parseYamlOrText(part));
    }
    case "other":
      return parseYamlOrText(text);
  }
}

function parseYamlOrText(text: string): unknown {
  try {
    const value = parseYaml(text);
    return value === undefined ? text : value;
  } catch {
    return text;
  }
}

/** Where each leaf's final value came from, for error messages. */
type Sources = Map<string, string>;

/**
 * Check that every key of a (YAML or defaults) object is in the schema, recording where leaves came from; a group
 * given as null (empty in YAML) is removed, so that it overrides nothing.
 */
function checkKeys(
  index: SchemaIndex,
  value: Record<string, unknown>,
  prefix: readonly string[],
  origin: string,
  sources: Sources,
  issues: string[],
): void {
  const group = index.groups.get(prefix.join("."));
  if (group === undefined) return;
  for (const [name, child] of Object.entries(value)) {
    const path = [...prefix, name];
    const key = path.join(".");
    if (!group.has(name)) {
      const where = prefix.length === 0 ? "" : ` under "${prefix.join(".")}"`;
      const known = [...group.keys()].join(", ");
      issues.push(
        `unknown config key "${key}" ${origin}${suggest(key, index.leaves.keys())}; ` +
          `known keys${where}: ${known}`,
      );
      continue;
    }
    if (index.groups.has(key)) {
      if (isPlainObject(child)) {
        checkKeys(index, child, path, origin, sources, issues);
      } else if (child === null) {
        // An empty group in YAML (`train:` with its keys commented out) sets nothing: its defaults stay.
        delete value[name];
      } else if (child !== undefined) {
        issues.push(`config key "${key}": expected mapping, got ${show(child)} ${origin}`);
      }
    } else {
      sources.set(key, origin);
    }
  }
}

function readYamlConfig(path: string, issues: string[]): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    issues.push(`cannot read config file "${path}": ${err instanceof Error ? err.message : String(err)}`);
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (err) {
    issues.push(
      `config file "${path}" is not valid YAML: ${err instanceof Error ? err.message : String(err)}`,
    );
    return undefined;
  }
  if (parsed === null || parsed === undefined) return {};
  if (!isPlainObject(parsed)) {
    issues.push(`config file "${path}" must hold a mapping of keys to values, but holds ${show(parsed)}`);
    return undefined;
  }
  return parsed;
}

/** The result of reading the command line (before YAML files are read). */
interface ParsedFlags {
  help: boolean;
  configFiles: string[];
  values: Record<string, unknown>;
}

/** The array leaves named by `repeatable` (flag → key), checked to exist. */
function repeatableLeaves(
  index: SchemaIndex,
  repeatable: Readonly<Record<string, string>> = {},
): Map<string, Leaf> {
  const out = new Map<string, Leaf>();
  for (const [flag, key] of Object.entries(repeatable)) {
    const leaf = index.leaves.get(key);
    if (leaf === undefined || leaf.kind !== "array") {
      throw new Error(`repeatable flag --${flag}: the schema has no array key "${key}"`);
    }
    if (index.leaves.has(toCamel(flag))) {
      throw new Error(`repeatable flag --${flag} clashes with a key of its name`);
    }
    out.set(flag, leaf);
  }
  return out;
}

/**
 * Whether a command-line argument is a flag (`--steps`, `--no-stop`, `--`, `-h`), which is never taken as the value
 * of the flag before it: `--prompt --steps 2` is a --prompt without its value, then --steps 2. A value that starts
 * with "--" is given inline: `--prompt=--x`.
 *
 * @param arg One command-line argument.
 * @returns True when `arg` starts with "--" or is "-h".
 */
export function isFlag(arg: string): boolean {
  return arg.startsWith("--") || arg === "-h";
}

/**
 * `parseArgs`' tokens of `args`, except that a flag followed by another flag gets no value: `parseArgs` (not strict)
 * takes the next argument whatever it is, so the rest is read again from that flag on.
 */
function flagTokens(
  args: readonly string[],
  options: Record<string, { type: "string" | "boolean"; short?: string }>,
) {
  const parse = (rest: string[]) =>
    parseArgs({ args: rest, options, strict: false, allowPositionals: true, tokens: true }).tokens;
  const out: ReturnType<typeof parse> = [];
  let start = 0;
  for (;;) {
    let next = -1;
    for (const t of parse(args.slice(start))) {
      if (t.kind === "option" && t.value !== undefined && !t.inlineValue && isFlag(t.value)) {
        out.push({ ...t, index: t.index + start, value: undefined, inlineValue: undefined });
        next = start + t.index + 1;
        break;
      }
      out.push({ ...t, index: t.index + start });
    }
    if (next < 0) return out;
    start = next;
  }
}

function readFlags(
  index: SchemaIndex,
  args: readonly string[],
  sources: Sources,
  issues: string[],
  repeatable: ReadonlyMap<string, Leaf>,
): ParsedFlags {
  const byName = new Map<string, Leaf>();
  const negated = new Map<string, Leaf>();
  for (const leaf of index.leaves.values()) {
    for (const name of new Set([leaf.key, flagName(leaf)])) {
      byName.set(name, leaf);
      if (leaf.kind === "boolean") {
        negated.set(`no-${name}`, leaf);
        negated.set(`no${name[0].toUpperCase()}${name.slice(1)}`, leaf);
      }
    }
  }
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    config: { type: "string" },
    help: { type: "boolean", short: "h" },
  };
  for (const [name, leaf] of byName) options[name] = { type: leaf.kind === "boolean" ? "boolean" : "string" };
  for (const name of negated.keys()) options[name] = { type: "boolean" };
  for (const name of repeatable.keys()) options[name] = { type: "string" };
  const repeated = new Map<Leaf, unknown[]>();

  const tokens = flagTokens(args, options);
  const result: ParsedFlags = { help: false, configFiles: [], values: {} };
  // The argument after an unknown flag is taken to be that flag's value, not reported a second time.
  let swallowIndex = -1;
  for (const token of tokens) {
    if (token.kind === "positional" && token.index === swallowIndex) continue;
    if (token.kind === "positional") {
      issues.push(`unexpected argument ${show(token.value)}: settings are given as --key value`);
      continue;
    }
    if (token.kind !== "option") continue;
    const { name, rawName, value } = token;
    if (name === "help" || name === "h") {
      result.help = true;
      continue;
    }
    if (name === "config") {
      if (value === undefined || value === "") issues.push(`flag --config needs a YAML file path`);
      else result.configFiles.push(value);
      continue;
    }
    const repeatedLeaf = repeatable.get(name);
    if (repeatedLeaf !== undefined) {
      if (value === undefined || value === "") {
        issues.push(`flag ${rawName} needs a value (one ${repeatedLeaf.key} entry)`);
        continue;
      }
      repeated.set(repeatedLeaf, [...(repeated.get(repeatedLeaf) ?? []), value]);
      sources.set(repeatedLeaf.key, `(from flag ${rawName})`);
      continue;
    }
    const negatedLeaf = negated.get(name);
    if (negatedLeaf !== undefined) {
      if (value !== undefined) {
        issues.push(`flag ${rawName} takes no value, got ${show(value)}`);
        continue;
      }
      setPath(result.values, negatedLeaf.path, false);
      sources.set(negatedLeaf.key, `(from flag ${rawName})`);
      continue;
    }
    const leaf = byName.get(name);
    if (leaf === undefined) {
      const key = name.split(".").map(toCamel).join(".");
      issues.push(
        `unknown config key "${key}" (from flag ${rawName})${suggest(key, index.leaves.keys())}; ` +
          `run with --help to list every key`,
      );
      if (!token.inlineValue) swallowIndex = token.index + 1;
      continue;
    }
    if (leaf.kind === "boolean") {
      setPath(result.values, leaf.path, value === undefined ? true : flagValue(leaf, value));
    } else if (value === undefined) {
      issues.push(`flag ${rawName} needs a value (${describeType(leaf.core)})`);
      continue;
    } else {
      setPath(result.values, leaf.path, flagValue(leaf, value));
    }
    sources.set(leaf.key, `(from flag ${rawName})`);
  }
  for (const [leaf, values] of repeated) {
    const given = getPath(result.values, leaf.path);
    setPath(result.values, leaf.path, [...(Array.isArray(given) ? given : []), ...values]);
  }
  return result;
}

/** Coerce numeric and boolean strings (e.g. quoted YAML values) for number and boolean leaves. */
function coerceLeaves(index: SchemaIndex, merged: Record<string, unknown>): void {
  for (const leaf of index.leaves.values()) {
    const value = getPath(merged, leaf.path);
    if (typeof value === "string" && (leaf.kind === "number" || leaf.kind === "boolean")) {
      setPath(merged, leaf.path, coerceString(leaf, value));
    }
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const segment of path) {
    if (typeof segment === "number") out += `[${segment}]`;
    else out += out === "" ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

function lowerFirst(text: string): string {
  return text.length === 0 ? text : text[0].toLowerCase() + text.slice(1);
}

/** One actionable line per zod issue. */
function describeIssue(
  issue: z.core.$ZodIssue,
  index: SchemaIndex,
  merged: Record<string, unknown>,
  sources: Sources,
): string {
  const key = formatPath(issue.path);
  const value = getPath(merged, issue.path);
  const leaf = index.leaves.get(issue.path.map(String).join("."));
  // An issue inside a leaf's value (an entry of a list) comes from where the leaf did.
  let owner: Leaf | undefined;
  for (let n = issue.path.length; n > 0 && owner === undefined; n--) {
    owner = index.leaves.get(issue.path.slice(0, n).map(String).join("."));
  }
  const origin = owner === undefined ? undefined : sources.get(owner.key);
  const suffix = origin === undefined ? "" : ` ${origin}`;
  let what: string;
  switch (issue.code) {
    case "invalid_type":
    case "invalid_union": {
      const expected = leaf !== undefined
        ? describeType(leaf.core)
        : issue.code === "invalid_type"
        ? issue.expected
        : "a valid value";
      if (value === undefined && leaf !== undefined) {
        return `config key "${key}": expected ${expected}, got nothing ` +
          `(it is required: pass --${flagName(leaf)} or set it in a --config file)`;
      }
      what = `expected ${expected}`;
      break;
    }
    case "invalid_value":
      what = `expected one of ${issue.values.map((v) => JSON.stringify(v)).join("|")}`;
      break;
    case "unrecognized_keys":
      return `unknown config key(s) ${
        issue.keys.map((k) => `"${formatPath([...issue.path, k])}"`).join(", ")
      }`;
    default:
      what = lowerFirst(issue.message);
  }
  return `config key "${key}": ${what}, got ${show(value)}${suffix}`;
}

/**
 * Parse and validate a script's configuration from command-line arguments and optional YAML files.
 *
 * Throws {@link ConfigError} listing every problem (unknown keys in YAML, flags or defaults; values of the
 * wrong type; unreadable files), and {@link ConfigHelp} when `--help`/`-h` is given. Callers print
 * `err.message` and exit with `err.exitCode` (see {@link cliConfig}, which does exactly that).
 *
 * Numeric strings are accepted for number keys (`--lr 1e-3`), and `true/false/yes/no/1/0` for booleans.
 *
 * @param schema A `z.object` whose fields have `.default(...)` values and `.describe(...)` texts; nested
 *   `z.object` fields become dotted keys (give them `.prefault({})` so their own defaults apply).
 * @param args The command-line arguments, usually `Deno.args`.
 * @param options Script name, description and extra defaults.
 * @returns The validated configuration, typed as `z.output<S>` (see {@link ConfigOf}).
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * import { z } from "../deps.ts";
 * const Config = z.object({
 *   rank: z.int().positive().default(8).describe("LoRA rank"),
 *   train: z.object({ lr: z.number().default(1e-3).describe("learning rate") }).prefault({}),
 * });
 * const config = parseConfig(Config, ["--train.lr", "0.01"], { name: "demo.ts" });
 * console.log(config.rank, config.train.lr); // 8 0.01
 * ```
 */
export function parseConfig<S extends ConfigSchema>(
  schema: S,
  args: readonly string[],
  options: ConfigOptions<S>,
): ConfigOf<S> {
  const index = indexSchema(schema);
  const issues: string[] = [];
  const sources: Sources = new Map();
  const flags = readFlags(index, args, sources, issues, repeatableLeaves(index, options.repeatable));
  if (flags.help) throw new ConfigHelp(configUsage(schema, options));

  let merged: Record<string, unknown> = {};
  if (options.defaults !== undefined) {
    const defaults = structuredClone(options.defaults) as Record<string, unknown>;
    checkKeys(index, defaults, [], "(from the script's defaults)", sources, issues);
    merged = mergeInto(merged, defaults);
  }
  for (const file of flags.configFiles) {
    const fromFile = readYamlConfig(file, issues);
    if (fromFile === undefined) continue;
    for (const key of options.records?.keys ?? []) {
      if (!(key in fromFile) || index.groups.get("")?.has(key)) continue;
      options.records!.take(key, fromFile[key], file);
      delete fromFile[key];
    }
    checkKeys(index, fromFile, [], `(from file "${file}")`, sources, issues);
    merged = mergeInto(merged, fromFile);
  }
  merged = mergeInto(merged, flags.values);
  if (issues.length > 0) throw new ConfigError(issues);

  coerceLeaves(index, merged);
  const result = (schema as unknown as z.ZodObject).safeParse(merged);
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((issue) => describeIssue(issue, index, merged, sources)));
  }
  return result.data as ConfigOf<S>;
}

/**
 * The `--help` text: usage line, description, and one line per key with its flag, type, default and
 * description.
 *
 * @param schema The configuration schema.
 * @param options Script name, description and extra defaults (shown as the defaults).
 * @returns The usage text (no trailing newline).
 *
 * @example
 * ```ts
 * import { configUsage } from "./config.ts";
 * import { z } from "../deps.ts";
 * console.log(configUsage(z.object({ lr: z.number().default(0.1).describe("learning rate") }), { name: "demo.ts" }));
 * ```
 */
export function configUsage<S extends ConfigSchema>(schema: S, options: ConfigOptions<S>): string {
  const command = options.name.startsWith("deno ") ? options.name : `deno run -A ${options.name}`;
  const lines = [`Usage: ${command} [--config file.yaml] [--key value ...]`];
  if (options.description !== undefined) lines.push("", options.description);
  lines.push("", "Options (flags override --config files, which override defaults):");
  const rows = optionRows(schema, options);
  rows.push(["--config <file.yaml>", "read settings from a YAML file (repeatable; flags override it)"]);
  rows.push(["--help, -h", "print this help and exit"]);
  lines.push(...alignRows(rows));
  return lines.join("\n");
}

/**
 * The option lines of {@link configUsage} alone: no usage line and no --config/--help rows, for a command that
 * lists a second schema's options under its own usage (the options of each of `deno task init`'s methods).
 *
 * @param schema The configuration schema.
 * @returns One line (or two, for a long flag) per key, indented by two spaces.
 *
 * @example
 * ```ts
 * import { configOptionsUsage } from "./config.ts";
 * import { z } from "../deps.ts";
 * console.log(configOptionsUsage(z.object({ niter: z.int().default(2).describe("power iterations") })));
 * ```
 */
export function configOptionsUsage<S extends ConfigSchema>(schema: S): string {
  return alignRows(optionRows(schema, { name: "" })).join("\n");
}

/** Each key's flag, with its type, and its description, default and whether it is required. */
function optionRows<S extends ConfigSchema>(schema: S, options: ConfigOptions<S>): [string, string][] {
  const index = indexSchema(schema);
  const rows: [string, string][] = [];
  for (const leaf of index.leaves.values()) {
    const flag = leaf.kind === "boolean"
      ? `--${flagName(leaf)}, --no-${flagName(leaf)}`
      : `--${flagName(leaf)} <${describeType(leaf.core)}${leaf.nullable ? "|null" : ""}>`;
    const fromOptions = getPath(options.defaults, leaf.path);
    const parts: string[] = [];
    if (leaf.description !== undefined) parts.push(leaf.description);
    if (leaf.kind === "boolean" && leaf.nullable) parts.push(`(may be null: --${flagName(leaf)}=null)`);
    if (fromOptions !== undefined) parts.push(`(default: ${show(fromOptions)})`);
    else if (leaf.hasDefault && leaf.defaultValue !== undefined) {
      parts.push(`(default: ${show(leaf.defaultValue)})`);
    } else if (leaf.optional || leaf.hasDefault) parts.push("(optional)");
    else parts.push("(required)");
    rows.push([flag, parts.join(" ")]);
  }
  for (const [flag, leaf] of repeatableLeaves(index, options.repeatable)) {
    rows.push([
      `--${flag} <value>`,
      `add one entry to --${flagName(leaf)} (repeatable; the value is taken whole)`,
    ]);
  }
  return rows;
}

/** Rows as `  flag  text`, the texts aligned after the longest flag up to 44 characters (a longer one gets its text
 * on the next line). */
function alignRows(rows: readonly [string, string][]): string[] {
  const width = Math.min(44, Math.max(...rows.map(([flag]) => flag.length)));
  return rows.map(([flag, text]) =>
    flag.length > width ? `  ${flag}\n  ${" ".repeat(width)}  ${text}` : `  ${flag.padEnd(width)}  ${text}`
  );
}

/** Options of {@link cliConfig}. */
export interface CliConfigOptions<S extends ConfigSchema> extends ConfigOptions<S> {
  /** Arguments to parse; `Deno.args` when omitted. */
  args?: readonly string[];
}

/**
 * {@link parseConfig} for the top of a script: on `--help` prints the usage to stdout and exits 0; on a
 * {@link ConfigError} prints it to stderr and exits 2.
 *
 * @param schema The configuration schema.
 * @param options Script name, description, extra defaults and (optionally) the arguments.
 * @returns The validated configuration.
 *
 * @example
 * ```ts ignore
 * import { cliConfig } from "./config.ts";
 * import { z } from "../deps.ts";
 * const config = cliConfig(z.object({ seed: z.int().default(0) }), { name: "experiments/demo.ts" });
 * ```
 */
export function cliConfig<S extends ConfigSchema>(schema: S, options: CliConfigOptions<S>): ConfigOf<S> {
  try {
    return parseConfig(schema, options.args ?? Deno.args, options);
  } catch (err) {
    if (err instanceof ConfigHelp) {
      console.log(err.usage);
      Deno.exit(0);
    }
    if (err instanceof ConfigError) {
      console.error(err.message);
      Deno.exit(err.exitCode);
    }
    throw err;
  }
}

/** Whether `DEBUG` is set to something other than `0` (readable only with env permission). */
function debugOn(): boolean {
  try {
    const v = Deno.env.get("DEBUG");
    return v !== undefined && v !== "" && v !== "0";
  } catch {
    return false;
  }
}

/**
 * The one-line report of an error for a command named `prefix`: `prefix: message`, without repeating the prefix
 * when the message already starts with it (or with its last word, as library errors name their function).
 *
 * @param prefix The command, e.g. `generate` or `deno task exp:eva`.
 * @param err What was thrown.
 * @returns The text to print.
 */
export function errorReport(prefix: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const word = prefix.split(/[\s:]+/).filter(Boolean).at(-1) ?? prefix;
  if (message.startsWith(`${prefix}:`) || message.startsWith(`${word}:`)) return message;
  return `${prefix}: ${message}`;
}

/**
 * Ends a command after an error: `--help` prints its usage (status 0), a {@link ConfigError} its message (status
 * 2), anything else one line from {@link errorReport} (status `status`), with the stack trace only when `DEBUG`
 * is set.
 *
 * @param prefix The command, e.g. `generate`.
 * @param err What was thrown.
 * @param status Exit status for errors other than configuration errors (default 1).
 */
export function exitWithError(prefix: string, err: unknown, status = 1): never {
  if (err instanceof ConfigHelp) {
    console.log(err.usage);
    Deno.exit(0);
  }
  if (err instanceof ConfigError) {
    console.error(err.message);
    Deno.exit(err.exitCode);
  }
  console.error(errorReport(prefix, err));
  if (debugOn() && err instanceof Error && err.stack) console.error(err.stack);
  Deno.exit(status);
}
