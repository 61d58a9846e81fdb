/**
 * Method specs: every adaptation an experiment compares is one line of configuration, so an ablation is a flag,
 * not a code change.
 *
 * On the command line, `--method NAME=INIT[:key=value,key=value...]` (repeatable): `--method
 * loram-g=loram:basis=gaussian`, `--method cnt-qr=cntlora:mode=x,split=qr`, `--method pissa16=pissa:niter=16`,
 * `--method dora=lora:useDora=true`. A bare `NAME` is the experiment's default method of that name, or a registered
 * initialisation run with its defaults (`--method pissa`); `--methods a,b` lists bare names. In YAML,
 * `methods: [{ name, init, options, rank, ... }]` (strings as on the command line work too).
 *
 * Besides the initialisation's own options (checked by its schema: unknown keys and wrong values are refused, naming
 * the method, the key and the value), a spec may set `rank`, `alpha`, `useRslora`, `useDora`, `lr` and `lrRatio`
 * (LoRA+: B's learning rate is `lrRatio` times A's); what it leaves out is the experiment's setting.
 *
 * @example
 * ```ts
 * import { formatMethod, parseMethod } from "./methods.ts";
 * const spec = parseMethod("dora8=lora:useDora=true,rank=8");
 * console.log(spec); // { name: "dora8", init: "lora", options: {}, useDora: true, rank: 8 }
 * console.log(formatMethod(spec)); // "dora8=lora:rank=8,useDora=true"
 * ```
 *
 * @module
 */
import { z } from "../deps.ts";
import {
  AdamW,
  attachLora,
  type AttachResult,
  getInitMethod,
  INIT_METHODS,
  type InitNeed,
  type LayerData,
  LORA_TRAINABLE,
  loraPlusOptions,
  showValue,
} from "../mod.ts";
import type { ConfigField } from "./config.ts";

/** One compared adaptation: a registered initialisation with its options, and the settings it changes. */
export interface MethodSpec {
  /** Name in tables, plots and run files (letters, digits and `._+-`). */
  readonly name: string;
  /** A registered initialisation (`INIT_METHODS`). */
  readonly init: string;
  /** The initialisation's own options, as given (its defaults apply to the rest). */
  readonly options: Readonly<Record<string, unknown>>;
  /** LoRA rank (default: the experiment's). */
  readonly rank?: number;
  /** lora_alpha (default: the experiment's). */
  readonly alpha?: number;
  /** rsLoRA scaling `alpha/√r`. */
  readonly useRslora?: boolean;
  /** DoRA (a trained magnitude per output row). */
  readonly useDora?: boolean;
  /** Learning rate (default: the experiment's). */
  readonly lr?: number;
  /** LoRA+: B (and DoRA magnitudes) learn `lrRatio` times faster than A. */
  readonly lrRatio?: number;
}

/** The settings a spec may change besides the initialisation's options. */
const SPEC_SETTINGS = z.object({
  rank: z.int().positive(),
  alpha: z.number().positive(),
  useRslora: z.boolean(),
  useDora: z.boolean(),
  lr: z.number().positive(),
  lrRatio: z.number().positive(),
}).partial().strict();

const SETTING_KEYS: ReadonlySet<string> = new Set(Object.keys(SPEC_SETTINGS.shape));

const NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/** A spec as YAML gives it. */
const SPEC_OBJECT = z.object({
  name: z.string(),
  init: z.string(),
  options: z.record(z.string(), z.unknown()).optional(),
}).catchall(z.unknown());

/** `use-dora` → `useDora`. */
function camel(key: string): string {
  return key.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** A value written on the command line: a number, a boolean, or the text itself. */
function valueOf(text: string): unknown {
  if (text === "true") return true;
  if (text === "false") return false;
  if (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) return Number(text);
  return text;
}

function problems(error: z.ZodError): string {
  return error.issues.map((i) => {
    const key = i.path.join(".");
    return key === "" ? i.message : `"${key}": ${i.message}`;
  }).join("; ");
}

/**
 * Checks a spec: a usable name, a registered initialisation, its options by the initialisation's schema and the
 * other settings by theirs. Throws a RangeError naming the spec, the key and the value.
 */
function checked(spec: MethodSpec): MethodSpec {
  if (!NAME.test(spec.name)) {
    throw new RangeError(
      `name ${showValue(spec.name)} must be letters, digits and ._+- (it names the run's files)`,
    );
  }
  if (!(spec.init in INIT_METHODS)) {
    throw new RangeError(
      `unknown initialisation ${showValue(spec.init)}; registered: ${Object.keys(INIT_METHODS).join(", ")}`,
    );
  }
  const method = getInitMethod(spec.init);
  const own = (method.options as unknown as z.ZodObject).strict().safeParse(spec.options);
  if (!own.success) throw new RangeError(`${spec.init} option ${problems(own.error)}`);
  const { name: _n, init: _i, options: _o, ...settings } = spec;
  const rest = SPEC_SETTINGS.safeParse(settings);
  if (!rest.success) throw new RangeError(problems(rest.error));
  return spec;
}

/** Splits `key=value,key=value` into the initialisation's options and the spec's settings. */
function readPairs(text: string): { options: Record<string, unknown>; settings: Record<string, unknown> } {
  const options: Record<string, unknown> = {};
  const settings: Record<string, unknown> = {};
  for (const pair of text.split(",")) {
    const eq = pair.indexOf("=");
    if (eq <= 0 || eq === pair.length - 1) {
      throw new RangeError(`expected key=value, got ${showValue(pair)}`);
    }
    const key = camel(pair.slice(0, eq).trim());
    const into = SETTING_KEYS.has(key) ? settings : options;
    if (key in into) throw new RangeError(`"${key}" is given twice`);
    into[key] = valueOf(pair.slice(eq + 1).trim());
  }
  return { options, settings };
}

/**
 * Reads one method spec: `NAME=INIT[:key=value,...]`, or a bare `NAME` (one of `defaults`, else a registered
 * initialisation with its defaults). Throws a RangeError naming the problem.
 *
 * @param text The spec as written on the command line.
 * @param defaults The experiment's default methods, which bare names refer to.
 * @returns The checked spec.
 */
export function parseMethod(text: string, defaults: readonly MethodSpec[] = []): MethodSpec {
  try {
    return readMethod(text, defaults);
  } catch (err) {
    throw new RangeError(`method ${showValue(text)}: ${(err as Error).message}`, { cause: err });
  }
}

/** {@link parseMethod} with errors that do not repeat the text. */
function readMethod(text: string, defaults: readonly MethodSpec[]): MethodSpec {
  const eq = text.indexOf("=");
  if (eq < 0) {
    const name = text.trim();
    const given = defaults.find((d) => d.name === name);
    if (given !== undefined) return given;
    if (name in INIT_METHODS) return checked({ name, init: name, options: {} });
    const known = defaults.length > 0
      ? `one of ${defaults.map((d) => showValue(d.name)).join("|")} (a default), `
      : "";
    throw new RangeError(
      `expected ${known}a registered initialisation (${Object.keys(INIT_METHODS).join(", ")}) or ` +
        `NAME=INIT[:key=value,...]`,
    );
  }
  const name = text.slice(0, eq).trim();
  const rest = text.slice(eq + 1);
  const colon = rest.indexOf(":");
  const init = (colon < 0 ? rest : rest.slice(0, colon)).trim();
  const pairs = colon < 0 ? { options: {}, settings: {} } : readPairs(rest.slice(colon + 1));
  return checked({ name, init, options: pairs.options, ...pairs.settings });
}

/**
 * Which labels still run the experiment's default method of that name: a claim names methods by their default
 * labels ("pissa", "eva-rho2"), and is judged only where the label runs that method (`--method lora=pissa` makes
 * "lora" PiSSA). `note` names the others, for the report (null when there are none).
 *
 * Any option that differs from the default makes another method (`pissa=pissa:exact=true` is not the default
 * "pissa"), unless the experiment names that spec among `variants`: the specs its claims are stated for besides the
 * defaults (e.g. the configuration of the source a claim comes from).
 *
 * @param defaults The experiment's default method specs.
 * @param methods The methods run.
 * @param variants Other specs under a default's name that the claims also hold for.
 * @returns A test of each label, and the note.
 */
export function defaultLabels(
  defaults: readonly string[],
  methods: readonly MethodSpec[],
  variants: readonly string[] = [],
): { ok: (label: string) => boolean; note: string | null } {
  const standard = defaults.map((d) => parseMethod(d));
  const accepted = new Set([...defaults, ...variants].map((d) => formatMethod(parseMethod(d))));
  const changed = methods.filter((m) =>
    standard.some((x) => x.name === m.name) && !accepted.has(formatMethod(m))
  );
  const off = new Set(changed.map((m) => m.name));
  return {
    ok: (label) => !off.has(label),
    note: changed.length === 0
      ? null
      : `Not judged: the claims name the default methods, and ${
        changed.map((m) => `"${m.name}" ran ${formatMethod(m)}`).join(", ")
      } here.`,
  };
}

/**
 * Refuses a method named like a run the experiment derives (a Table 3 variant `cntlora-x-n1`, a noise ablation
 * `gap-r1-noise1`): both would be saved under that label, and one would reuse the other's result. Called before
 * anything trains, so the message can say which `--method` to rename.
 *
 * @param methods The methods given.
 * @param derived The labels the experiment derives, each with what runs under it.
 * @throws RangeError naming the method, the label and the derived run.
 *
 * @example
 * ```ts
 * import { checkDerivedLabels, parseMethod } from "./methods.ts";
 * const methods = [parseMethod("gap-r1-noise1=lora:rank=1")];
 * checkDerivedLabels(methods, [{ label: "gap-r2", what: "Gap-Init at rank 2" }]); // passes
 * // checkDerivedLabels(methods, [{ label: "gap-r1-noise1", what: "..." }]) throws: --method gap-r1-noise1=lora...
 * ```
 */
export function checkDerivedLabels(
  methods: readonly MethodSpec[],
  derived: readonly { label: string; what: string }[],
): void {
  for (const d of derived) {
    const m = methods.find((x) => x.name === d.label);
    if (m === undefined) continue;
    throw new RangeError(
      `--method ${
        formatMethod(m)
      }: "${d.label}" is also the label of ${d.what}, and the two runs would share ` +
        `one result file; rename the --method label (e.g. --method ${
          formatMethod({ ...m, name: `my-${m.name}` })
        })`,
    );
  }
}

/**
 * A spec as one command-line line, `NAME=INIT[:key=value,...]` (options, then settings, each sorted by key; a bare
 * `NAME` for an initialisation run as it is under its own name), which {@link parseMethod} reads back to the same
 * spec.
 *
 * @param spec The spec.
 * @returns Its line.
 */
export function formatMethod(spec: MethodSpec): string {
  const { name, init, options, ...settings } = spec;
  const pairs = [
    ...Object.entries(options).sort(([a], [b]) => a.localeCompare(b)),
    ...Object.entries(settings).filter(([, v]) => v !== undefined).sort(([a], [b]) => a.localeCompare(b)),
  ].map(([k, v]) => `${k}=${v}`);
  if (pairs.length === 0) return name === init ? name : `${name}=${init}`;
  return `${name}=${init}:${pairs.join(",")}`;
}

/** A spec from YAML (`{ name, init, options, rank, ... }`), checked. */
function fromObject(value: z.infer<typeof SPEC_OBJECT>): MethodSpec {
  const { name, init, options, ...settings } = value;
  return checked({ name, init, options: options ?? {}, ...settings } as MethodSpec);
}

/** Options of {@link methodsField}. */
export interface MethodsFieldOptions {
  /** The calibration data the experiment can give an initialisation (default: none). */
  provides?: readonly InitNeed[];
  /** The key's `--help` text (default: what a spec is). */
  description?: string;
}

/**
 * The schema of an experiment's `methods` key: a non-empty list of specs (command-line strings or YAML objects), each
 * checked, names distinct, and every initialisation's data among what the experiment `provides`. Its default is
 * `defaults`; `--help` shows them as written.
 *
 * @param defaults The experiment's default methods, as command-line lines.
 * @param options What calibration data the experiment provides, and the key's description.
 * @returns The schema (its output is `MethodSpec[]`).
 *
 * @example
 * ```ts
 * import { methodsField } from "./methods.ts";
 * import { parseConfig } from "./config.ts";
 * import { z } from "../deps.ts";
 * const Config = z.object({ methods: methodsField(["lora", "pissa4=pissa:niter=4"]) });
 * const cfg = parseConfig(Config, ["--method", "g=loram:basis=random-orthogonal", "--method", "pissa4"], {
 *   name: "demo.ts",
 *   repeatable: { method: "methods" },
 * });
 * console.log(cfg.methods.map((m) => m.name)); // ["g", "pissa4"]
 * ```
 */
export function methodsField(
  defaults: readonly string[],
  options: MethodsFieldOptions = {},
): ConfigField<MethodSpec[]> {
  const parsedDefaults: MethodSpec[] = [];
  for (const d of defaults) parsedDefaults.push(parseMethod(d, parsedDefaults));
  const provides = new Set(options.provides ?? []);
  const entry = z.union([z.string(), SPEC_OBJECT]);
  return z.array(entry).min(1, "needs at least one method").transform((entries, ctx) => {
    const out: MethodSpec[] = [];
    for (const [i, e] of entries.entries()) {
      try {
        const spec = typeof e === "string" ? readMethod(e, parsedDefaults) : fromObject(e);
        const missing = getInitMethod(spec.init).needs.filter((n) => !provides.has(n));
        if (missing.length > 0) {
          throw new RangeError(
            `method "${spec.name}": ${spec.init} needs ${
              missing.join(" and ")
            }, which this experiment does not ` +
              `provide (it provides ${[...provides].join(", ") || "no calibration data"})`,
          );
        }
        if (out.some((s) => s.name === spec.name)) {
          ctx.issues.push({
            code: "custom",
            message: `${showValue(spec.name)} is given twice (each method name names its own runs)`,
            input: entries,
            path: [],
          });
          return z.NEVER;
        }
        out.push(spec);
      } catch (err) {
        ctx.issues.push({ code: "custom", message: (err as Error).message, input: e, path: [i] });
        return z.NEVER;
      }
    }
    return out;
  }).prefault([...defaults]).describe(
    options.description ??
      "the compared methods, NAME=INIT[:key=value,...] each (init options, rank, alpha, useRslora, useDora, lr, lrRatio)",
  );
}

/** What {@link attachMethod} uses where a spec sets nothing. */
export interface AttachMethodOptions {
  /** The modules to adapt (PEFT's `target_modules`). */
  targets: readonly string[] | RegExp;
  /** The experiment's rank. */
  rank: number;
  /** The experiment's lora_alpha. */
  alpha: number;
  /** Calibration data per module path (data-driven inits). */
  data?: Readonly<Record<string, LayerData>>;
  /** The run's seed. */
  seed: number;
}

/**
 * Adapts `model` as `method` says: its initialisation with its options, and its rank, alpha, rsLoRA and DoRA where
 * it sets them (the experiment's rank and alpha otherwise).
 *
 * @param model The model (its target `Linear` layers become LoRA layers).
 * @param method The spec.
 * @param options Targets, the experiment's rank and alpha, calibration data and the seed.
 * @returns What `attachLora` did.
 */
export function attachMethod(
  model: object,
  method: MethodSpec,
  options: AttachMethodOptions,
): Promise<AttachResult> {
  return attachLora(model, {
    targetModules: options.targets,
    rank: method.rank ?? options.rank,
    alpha: method.alpha ?? options.alpha,
    useRslora: method.useRslora,
    useDora: method.useDora,
    init: method.init,
    initOptions: method.options,
    data: options.data,
    seed: options.seed,
  });
}

/**
 * The optimiser of a LoRA fine-tuning run under `method`: AdamW on the adapters only, without weight decay, at the
 * method's learning rate (`lr` otherwise); with `lrRatio`, LoRA+ (B and DoRA magnitudes `lrRatio` times faster).
 *
 * @param model The adapted model.
 * @param method The spec.
 * @param lr The experiment's learning rate.
 * @returns The optimiser.
 */
export function methodOptimizer(model: object, method: MethodSpec, lr: number): AdamW {
  const rate = method.lr ?? lr;
  return method.lrRatio === undefined
    ? new AdamW(model, { lr: rate, weightDecay: 0, trainable: LORA_TRAINABLE })
    : new AdamW(model, loraPlusOptions({ lr: rate, ratio: method.lrRatio }));
}

/** One ablation group: the specs it compares, each against the comparator named first in its pair. */
export interface AblationGroup {
  /** What the group varies. */
  readonly title: string;
  /** `[comparator, variant]` pairs of method specs (as on the command line). */
  readonly pairs: readonly (readonly [string, string])[];
}

/**
 * LoRAM's Table 4 ablations (Zhang et al., arXiv 2507.06558, Sec. 4.3) as method specs: the gain (Algorithm 1's
 * logarithmic gain against the exact spectral gain of Eq. 10 and fixed gains), the basis (the DST-I basis against a
 * random orthogonal and a Gaussian one), and tracking mode (β chosen so that ν[B·A] matches a reference
 * initialisation's) next to each reference it tracks. Every pair runs with the experiment's seeds, so each
 * comparison is paired by seed (exp:init-sweep `--ablations`).
 *
 * @example
 * ```ts
 * import { ablationSpecs, LORAM_ABLATIONS, parseMethod } from "./methods.ts";
 * console.log(LORAM_ABLATIONS.map((g) => g.title)); // ["gain", "basis", "tracking mode"]
 * console.log(ablationSpecs(LORAM_ABLATIONS).map((s) => parseMethod(s).name).includes("loram-track-pissa")); // true
 * ```
 */
export const LORAM_ABLATIONS: readonly AblationGroup[] = [
  {
    title: "gain",
    pairs: [
      ["loram", "loram-exact=loram:gain=exact"],
      ["loram", "loram-q0.05=loram:gain=0.05"],
      ["loram", "loram-q0.5=loram:gain=0.5"],
    ],
  },
  {
    title: "basis",
    pairs: [
      ["loram", "loram-ortho=loram:basis=random-orthogonal"],
      ["loram", "loram-gauss=loram:basis=gaussian"],
    ],
  },
  {
    title: "tracking mode",
    pairs: (["pissa", "milora", "olora", "corda", "lora-ga"] as const).map((ref) =>
      [ref, `loram-track-${ref}=loram:trackingMode=${ref}`] as const
    ),
  },
];

/** Every distinct spec of the groups, comparators first, in order. */
export function ablationSpecs(groups: readonly AblationGroup[]): string[] {
  const out: string[] = [];
  for (const g of groups) for (const s of g.pairs.flat()) if (!out.includes(s)) out.push(s);
  return out;
}
