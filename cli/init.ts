/**
 * `deno task init`: initialise LoRA adapters for the weights in a safetensors file with any registered method.
 *
 *   deno task init --method M --weights W.safetensors --rank R --alpha A --out OUT.safetensors
 *     [--activations X.safetensors] [--grads G.safetensors] [--seed N] [--exact] [method options...]
 *
 * Every 2-D tensor `<layer>.weight` `[d_out, d_in]` of W is a layer. Calibration data: `<layer>.input` `[T, d_in]` or
 * `[NB, T, d_in]` (activations file); `<layer>.gap` `[d_out]` or `<layer>.z_text` / `<layer>.z_vision` `[N, d_out]`
 * (activations file, Gap-Init); `<layer>.grad` `[d_out, d_in]` or `[NB, d_out, d_in]` (grads file, LoRA-GA).
 * OUT holds `<layer>.lora_A.weight`, `<layer>.lora_B.weight` and, when it differs from W, `<layer>.base_layer.weight`;
 * layers given rank 0 are left out; the metadata records the method, its options and each layer's rank, alpha and
 * scale. Everything is validated and computed before anything is written, and OUT is written atomically.
 *
 * @module
 */
import { z } from "../deps.ts";
import { readSafetensors, type StEntry, toFloat32, writeSafetensors } from "../lib/io/safetensors.ts";
import { deriveSeed } from "../lib/nn/init.ts";
import { tensor } from "../lib/tensor/creation.ts";
import {
  type F32,
  getInitMethod,
  INIT_METHODS,
  type InitMethod,
  type LayerData,
  type LoraInit,
} from "../lib/init/mod.ts";
import { ConfigError, ConfigHelp, configUsage, parseConfig } from "../lib/util/config.ts";
import { deviceLine, resolveDevice } from "../lib/runtime/realize.ts";
import { DEVICE_CHOICES } from "../lib/runtime/device.ts";

const BASE = z.object({
  method: z.string().describe(`initialisation: ${Object.keys(INIT_METHODS).join(", ")}`),
  weights: z.string().describe("safetensors file with <layer>.weight tensors [d_out, d_in]"),
  out: z.string().describe("output safetensors file"),
  rank: z.number().int().positive().default(8).describe("LoRA rank r"),
  alpha: z.number().positive().optional().describe("lora_alpha (default: the rank, so s = 1)"),
  activations: z.string().optional().describe(
    "safetensors with <layer>.input (and Gap-Init's <layer>.gap / z_text / z_vision)",
  ),
  grads: z.string().optional().describe("safetensors with <layer>.grad (LoRA-GA)"),
  seed: z.number().int().default(0).describe("seed of every random draw"),
  useRslora: z.boolean().default(false).describe("rsLoRA scaling alpha/√r"),
  exact: z.boolean().default(false).describe(
    "deterministic variant where a method has a randomized one (exact SVD for PiSSA and LoRA-GA, exact inner SVD for EVA)",
  ),
  device: z.enum(DEVICE_CHOICES).default("auto").describe(
    "where to compute (auto: a hardware GPU, else wasm)",
  ),
});

/** The method named in the arguments (before full parsing), if any. */
function peekMethod(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--method") return args[i + 1];
    if (args[i].startsWith("--method=")) return args[i].slice("--method=".length);
  }
  return undefined;
}

/** `--help` text: the common options and every method's own options with defaults. */
export function initUsage(): string {
  const lines = [
    configUsage(BASE, {
      name: "deno task init",
      description: "Initialise LoRA adapters for a weights file.",
    }),
  ];
  for (const m of Object.values(INIT_METHODS)) {
    const keys = Object.keys(m.options.shape);
    lines.push(
      `\n--method ${m.name}  (${m.kind}; needs ${m.needs.join(", ") || "weights only"})\n  ${m.paper}`,
    );
    if (keys.length > 0) lines.push(configUsage(m.options, { name: `  ${m.name} options` }));
  }
  return lines.join("\n");
}

function need(file: string | undefined, flag: string, method: string): string {
  if (file === undefined) throw new ConfigError([`method "${method}" needs --${flag}`]);
  return file;
}

/** Result of {@link runInit}. */
export interface InitRun {
  /** Layers initialised, with rank, alpha and scale (rank 0 = left out). */
  layers: Record<string, { rank: number; alpha: number; scale: number }>;
  /** The output file. */
  out: string;
  /** The device it computed on, with its adapter (and why `auto` picked it). */
  device: string;
}

/** Runs the command on `args` (throws {@link ConfigError} / {@link ConfigHelp}, or an error naming the layer). */
export async function runInit(args: readonly string[]): Promise<InitRun> {
  const name = peekMethod(args);
  if (args.includes("--help") || args.includes("-h")) throw new ConfigHelp(initUsage());
  if (name === undefined) throw new ConfigError(["--method is required; see --help for the list of methods"]);
  let method: InitMethod;
  try {
    method = getInitMethod(name);
  } catch (e) {
    throw new ConfigError([(e as Error).message]);
  }
  const schema = BASE.extend(method.options.shape as Record<string, z.ZodType>);
  const cfg = parseConfig(schema, args, { name: "deno task init" }) as
    & z.infer<typeof BASE>
    & Record<string, unknown>;
  const device = resolveDevice(cfg.device);
  const own: Record<string, unknown> = {};
  for (const k of Object.keys(method.options.shape)) if (cfg[k] !== undefined) own[k] = cfg[k];
  // --exact picks the deterministic variant; without it each method keeps its own default.
  if (cfg.exact && "exact" in method.options.shape) own.exact = true;
  if (cfg.exact && "exactSvd" in method.options.shape) own.exactSvd = true;

  const { tensors: weights } = await readSafetensors(cfg.weights);
  const layers = [...weights].filter(([k, v]) => k.endsWith(".weight") && v.shape.length === 2);
  if (layers.length === 0) throw new Error(`"${cfg.weights}" has no 2-D <layer>.weight tensor`);
  // Calibration files are read when the method needs them or when they are given (options such as LoRAM's
  // tracking mode may use them).
  const acts = method.needs.some((n) => n === "activations" || n === "gap") || cfg.activations !== undefined
    ? (await readSafetensors(need(cfg.activations, "activations", name))).tensors
    : new Map<string, StEntry>();
  const grads = method.needs.includes("grads") || cfg.grads !== undefined
    ? (await readSafetensors(need(cfg.grads, "grads", name))).tensors
    : new Map<string, StEntry>();
  const toT = (e: StEntry) => tensor(toFloat32(e), { shape: e.shape, device }) as unknown as F32;

  const inputs: { name: string; weight: F32; data: LayerData }[] = [];
  for (const [key, w] of layers) {
    const layer = key.slice(0, -".weight".length);
    const [dOut, dIn] = w.shape;
    const data: LayerData = {};
    const x = acts.get(`${layer}.input`);
    if (method.needs.includes("activations") || x !== undefined) {
      if (x === undefined) throw new Error(`layer "${layer}": "${cfg.activations}" has no ${layer}.input`);
      if ((x.shape.length !== 2 && x.shape.length !== 3) || x.shape[x.shape.length - 1] !== dIn) {
        throw new Error(
          `layer "${layer}": ${layer}.input is [${x.shape}], expected [T, ${dIn}] or [NB, T, ${dIn}]`,
        );
      }
      data.activations = toT(x);
    }
    if (method.needs.includes("grads") || grads.has(`${layer}.grad`)) {
      const g = grads.get(`${layer}.grad`);
      if (g === undefined) throw new Error(`layer "${layer}": "${cfg.grads}" has no ${layer}.grad`);
      if (g.shape.slice(-2).join() !== `${dOut},${dIn}` || g.shape.length > 3) {
        throw new Error(
          `layer "${layer}": ${layer}.grad is [${g.shape}], expected [${dOut}, ${dIn}] or [NB, ${dOut}, ${dIn}]`,
        );
      }
      data.grads = toT(g);
    }
    if (method.needs.includes("gap")) {
      const gap = acts.get(`${layer}.gap`);
      const zt = acts.get(`${layer}.z_text`);
      const zv = acts.get(`${layer}.z_vision`);
      if (gap !== undefined) {
        if (gap.shape.join() !== `${dOut}`) {
          throw new Error(`layer "${layer}": ${layer}.gap is [${gap.shape}], expected [${dOut}]`);
        }
        data.gap = toT(gap);
      } else if (zt !== undefined && zv !== undefined) {
        for (const [n, e] of [["z_text", zt], ["z_vision", zv]] as const) {
          if (e.shape.length !== 2 || e.shape[1] !== dOut) {
            throw new Error(`layer "${layer}": ${layer}.${n} is [${e.shape}], expected [N, ${dOut}]`);
          }
        }
        data.zText = toT(zt);
        data.zVision = toT(zv);
      } else {
        throw new Error(
          `layer "${layer}": "${cfg.activations}" has neither ${layer}.gap nor ${layer}.z_text/z_vision`,
        );
      }
    }
    inputs.push({ name: layer, weight: toT(w), data });
  }

  const common = { rank: cfg.rank, alpha: cfg.alpha ?? cfg.rank, useRslora: cfg.useRslora, seed: cfg.seed };
  const results = new Map<string, LoraInit>();
  if (method.initLayers !== undefined) {
    for (const [k, v] of await method.initLayers(inputs, { ...common, ...own })) results.set(k, v);
  } else {
    for (const l of inputs) {
      try {
        results.set(
          l.name,
          await method.init(l.weight, { ...own, ...l.data, ...common, seed: deriveSeed(cfg.seed, l.name) }),
        );
      } catch (e) {
        throw new Error(`layer "${l.name}": ${(e as Error).message}`);
      }
    }
  }
  const out: Record<string, StEntry> = {};
  const summary: InitRun["layers"] = {};
  for (const l of inputs) {
    const r = results.get(l.name);
    if (r === undefined || r.rank === 0) {
      summary[l.name] = { rank: 0, alpha: 0, scale: 0 };
      continue;
    }
    const entry = async (t: F32): Promise<StEntry> => ({
      dtype: "F32",
      shape: [...t.shape],
      data: await t.data() as Float32Array,
    });
    out[`${l.name}.lora_A.weight`] = await entry(r.a);
    out[`${l.name}.lora_B.weight`] = await entry(r.b);
    if (r.base !== undefined) out[`${l.name}.base_layer.weight`] = await entry(r.base);
    summary[l.name] = { rank: r.rank, alpha: r.alpha, scale: r.scale };
  }
  await writeSafetensors(cfg.out, out, {
    format: "pt",
    method: name,
    options: JSON.stringify({ ...common, ...own }),
    layers: JSON.stringify(summary),
  });
  return { layers: summary, out: cfg.out, device: await deviceLine(cfg.device) };
}

if (import.meta.main) {
  try {
    const r = await runInit(Deno.args);
    const n = Object.values(r.layers).filter((l) => l.rank > 0).length;
    console.log(`wrote ${n} adapter(s) to ${r.out} (device: ${r.device})`);
    for (const [k, v] of Object.entries(r.layers)) {
      console.log(`  ${k}: rank ${v.rank}, alpha ${v.alpha}, scale ${v.scale}`);
    }
  } catch (e) {
    if (e instanceof ConfigHelp) {
      console.log(e.usage);
      Deno.exit(0);
    }
    console.error(`init: ${(e as Error).message}`);
    Deno.exit(e instanceof ConfigError ? e.exitCode : 1);
  }
}
