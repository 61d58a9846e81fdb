/**
 * Adapter files in Hugging Face PEFT's format, so adapters move between tessera and PEFT:
 *
 * - `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight` `[r, d_in]`,
 *   `base_model.model.<module>.lora_B.weight` `[d_out, r]` and, with DoRA,
 *   `base_model.model.<module>.lora_magnitude_vector` `[d_out]` (float32);
 * - `adapter_config.json`: `peft_type: "LORA"`, `r`, `lora_alpha`, `target_modules`, `use_rslora`, `use_dora`,
 *   `rank_pattern`, `alpha_pattern`, `lora_dropout`, `init_lora_weights` and PEFT's other standard keys;
 * - `base_model_weights.safetensors`, only when an initialisation rewrote base weights (offset inits, LoftQ):
 *   `base_model.model.<module>.base_layer.weight`, the weight the adapted layer must use.
 *
 * Loading accepts names with or without the `base_model.model.` prefix.
 *
 * @module
 */
import { readSafetensors, type StEntry, toFloat32, writeSafetensors } from "../io/safetensors.ts";
import { writeTextFileAtomic } from "../io/atomic.ts";
import { getAt, namedParameters, replaceModule } from "../nn/module.ts";
import { checkFinite } from "../nn/finite.ts";
import { Linear } from "../nn/linear.ts";
import { tensor } from "../tensor/creation.ts";
import type { F32 } from "../init/types.ts";
import { loraScale } from "../init/types.ts";
import { LoraLinear } from "./linear.ts";
import { loraLayers } from "./attach.ts";

const PREFIX = "base_model.model.";

/** Options of {@link saveAdapter}. */
export interface SaveAdapterOptions {
  /** `base_model_name_or_path` in the config. */
  baseModel?: string;
  /** The initialisation used (`init_lora_weights`: true for plain LoRA, else the method name). */
  init?: string;
  /** Dropout used in training (`lora_dropout`). */
  dropout?: number;
  /** Whether rsLoRA scaling was used. */
  useRslora?: boolean;
}

/** PEFT's `adapter_config.json` fields that tessera reads and writes. */
export interface AdapterConfig {
  /** Always "LORA". */
  peft_type: "LORA";
  /** Default rank. */
  r: number;
  /** Default alpha. */
  lora_alpha: number;
  /** Adapted module names. */
  target_modules: string[];
  /** rsLoRA scaling. */
  use_rslora: boolean;
  /** DoRA. */
  use_dora: boolean;
  /** Per-module ranks differing from `r`. */
  rank_pattern: Record<string, number>;
  /** Per-module alphas differing from `lora_alpha`. */
  alpha_pattern: Record<string, number>;
  /** Dropout. */
  lora_dropout: number;
  /** true (PEFT default init) or the method name. */
  init_lora_weights: boolean | string;
  /** Base model name. */
  base_model_name_or_path: string | null;
  /** Other PEFT keys are kept as read. */
  [key: string]: unknown;
}

async function toEntry(t: F32): Promise<StEntry> {
  return { dtype: "F32", shape: [...t.shape], data: await t.data() as Float32Array };
}

function mostCommon(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0][0]; // ties: the larger value
}

/** Writes the model's adapters to `dir` (created if needed) in PEFT's format. */
export async function saveAdapter(
  dir: string,
  model: object,
  opts: SaveAdapterOptions = {},
): Promise<AdapterConfig> {
  const layers = loraLayers(model);
  if (layers.length === 0) throw new Error("saveAdapter: the model has no LoRA layers");
  await Deno.mkdir(dir, { recursive: true });
  const tensors: Record<string, StEntry> = {};
  const bases: Record<string, StEntry> = {};
  for (const [path, l] of layers) {
    tensors[`${PREFIX}${path}.lora_A.weight`] = await toEntry(l.lora_A.weight);
    tensors[`${PREFIX}${path}.lora_B.weight`] = await toEntry(l.lora_B.weight);
    if (l.lora_magnitude_vector !== undefined) {
      tensors[`${PREFIX}${path}.lora_magnitude_vector`] = await toEntry(l.lora_magnitude_vector);
    }
    if (l.baseRewritten) bases[`${PREFIX}${path}.base_layer.weight`] = await toEntry(l.base_layer.weight);
  }
  const r = mostCommon(layers.map(([, l]) => l.rank));
  const alpha = mostCommon(layers.map(([, l]) => l.alpha));
  const config: AdapterConfig = {
    peft_type: "LORA",
    task_type: null,
    r,
    lora_alpha: alpha,
    target_modules: layers.map(([p]) => p),
    use_rslora: opts.useRslora ?? false,
    use_dora: layers.some(([, l]) => l.lora_magnitude_vector !== undefined),
    rank_pattern: Object.fromEntries(layers.filter(([, l]) => l.rank !== r).map(([p, l]) => [p, l.rank])),
    alpha_pattern: Object.fromEntries(
      layers.filter(([, l]) => l.alpha !== alpha).map(([p, l]) => [p, l.alpha]),
    ),
    lora_dropout: opts.dropout ?? 0,
    bias: "none",
    fan_in_fan_out: false,
    init_lora_weights: opts.init === undefined || opts.init === "lora" ? true : opts.init,
    modules_to_save: null,
    inference_mode: true,
    base_model_name_or_path: opts.baseModel ?? null,
    revision: null,
    layers_to_transform: null,
    layers_pattern: null,
  };
  const meta = { format: "pt", producer: "tessera" };
  await writeSafetensors(`${dir}/adapter_model.safetensors`, tensors, meta);
  if (Object.keys(bases).length > 0) {
    await writeSafetensors(`${dir}/base_model_weights.safetensors`, bases, meta);
  }
  await writeTextFileAtomic(`${dir}/adapter_config.json`, JSON.stringify(config, null, 2) + "\n");
  return config;
}

/** Reads `adapter_config.json` with clear errors. */
export async function readAdapterConfig(dir: string): Promise<AdapterConfig> {
  const path = `${dir}/adapter_config.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new Error(`cannot read adapter config "${path}": ${(e as Error).message}`);
  }
  const c = raw as Partial<AdapterConfig>;
  if (c.peft_type !== undefined && c.peft_type !== "LORA") {
    throw new Error(
      `adapter config "${path}": peft_type is ${JSON.stringify(c.peft_type)}, only "LORA" is supported`,
    );
  }
  for (const k of ["r", "lora_alpha"] as const) {
    if (typeof c[k] !== "number") throw new Error(`adapter config "${path}": "${k}" must be a number`);
  }
  return {
    ...c,
    peft_type: "LORA",
    r: c.r!,
    lora_alpha: c.lora_alpha!,
    target_modules: c.target_modules ?? [],
    use_rslora: c.use_rslora ?? false,
    use_dora: c.use_dora ?? false,
    rank_pattern: c.rank_pattern ?? {},
    alpha_pattern: c.alpha_pattern ?? {},
    lora_dropout: c.lora_dropout ?? 0,
    init_lora_weights: c.init_lora_weights ?? true,
    base_model_name_or_path: c.base_model_name_or_path ?? null,
  };
}

function patternLookup(pattern: Record<string, number>, path: string): number | undefined {
  for (const [k, v] of Object.entries(pattern)) if (path === k || path.endsWith(`.${k}`)) return v;
  return undefined;
}

/**
 * Attaches the adapters stored in `dir` (PEFT format) to `model`, whose target modules must still be plain
 * `Linear` layers of matching shapes. Returns the adapted module paths.
 */
export async function loadAdapter(dir: string, model: object): Promise<string[]> {
  const config = await readAdapterConfig(dir);
  const file = `${dir}/adapter_model.safetensors`;
  const { tensors } = await readSafetensors(file);
  let bases = new Map<string, StEntry>();
  try {
    bases = (await readSafetensors(`${dir}/base_model_weights.safetensors`)).tensors;
  } catch (e) {
    if (!(e instanceof Error && /No such file|not found/i.test(e.message))) throw e;
  }
  const strip = (k: string) => (k.startsWith(PREFIX) ? k.slice(PREFIX.length) : k);
  const byModule = new Map<string, Map<string, StEntry>>();
  for (const [k, v] of tensors) {
    const m = /^(.*)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$/.exec(strip(k));
    if (m === null) throw new Error(`adapter "${file}": unexpected tensor "${k}"`);
    const entry = byModule.get(m[1]) ?? new Map<string, StEntry>();
    entry.set(m[2], v);
    byModule.set(m[1], entry);
  }
  const layers: [string, LoraLinear][] = [];
  for (const [path, parts] of byModule) {
    const a = parts.get("lora_A.weight");
    const b = parts.get("lora_B.weight");
    if (a === undefined || b === undefined) {
      throw new Error(`adapter "${file}": module "${path}" needs both lora_A.weight and lora_B.weight`);
    }
    let target: unknown;
    try {
      target = getAt(model, path);
    } catch {
      throw new Error(`adapter "${file}": the model has no module "${path}"`);
    }
    if (!(target instanceof Linear)) {
      throw new Error(`adapter "${file}": module "${path}" is not a plain Linear layer (already adapted?)`);
    }
    const [dOut, dIn] = target.weight.shape;
    const rank = a.shape[0];
    if (
      a.shape.length !== 2 || a.shape[1] !== dIn || b.shape.length !== 2 || b.shape[0] !== dOut ||
      b.shape[1] !== rank
    ) {
      throw new Error(
        `adapter "${file}": module "${path}" has lora_A [${a.shape}] and lora_B [${b.shape}], which do not fit ` +
          `its [${dOut}, ${dIn}] weight`,
      );
    }
    const alpha = patternLookup(config.alpha_pattern, path) ?? config.lora_alpha;
    const dev = target.weight.device;
    const mk = (e: StEntry) => tensor(toFloat32(e), { shape: e.shape, device: dev }) as F32;
    const baseEntry = bases.get(`${PREFIX}${path}.base_layer.weight`) ??
      bases.get(`${path}.base_layer.weight`);
    if (baseEntry !== undefined && baseEntry.shape.join() !== `${dOut},${dIn}`) {
      throw new Error(
        `adapter: base weight of "${path}" is [${baseEntry.shape}], expected [${dOut}, ${dIn}]`,
      );
    }
    const layer = LoraLinear.wrap(target, {
      a: mk(a),
      b: mk(b),
      base: baseEntry === undefined ? undefined : mk(baseEntry),
      rank,
      alpha,
      scale: loraScale(alpha, rank, config.use_rslora),
    });
    const mag = parts.get("lora_magnitude_vector");
    if (mag !== undefined) {
      if (mag.shape.join() !== `${dOut}`) {
        throw new Error(
          `adapter "${file}": lora_magnitude_vector of "${path}" is [${mag.shape}], expected [${dOut}]`,
        );
      }
      layer.lora_magnitude_vector = mk(mag);
    }
    layers.push([path, layer]);
  }
  // Checked before the model is touched: a damaged adapter leaves it as it was.
  await checkFinite(
    layers.flatMap(([path, layer]) => namedParameters(layer).map(([k, t]) => [`${path}.${k}`, t] as const)),
    { what: `adapter "${dir}"` },
  );
  const loaded: string[] = [];
  for (const [path, layer] of layers) {
    replaceModule(model, path, layer);
    loaded.push(path);
  }
  return loaded;
}
