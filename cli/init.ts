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
 * With a Hugging Face model directory as `--weights`, the adapters go on the model's projections (`--targets`,
 * Hugging Face or tessera names; default all seven), data-driven methods calibrate on `--calibration-text` (tokenized
 * with the model's own tokenizer), and OUT is an adapter directory that PEFT loads onto that base
 * (`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(W), OUT)`):
 *
 *   deno task init --method pissa --weights path/to/SmolLM2-135M --rank 16 --alpha 32 --out adapter/
 *
 * @module
 */
import { z } from "../deps.ts";
import { readSafetensors, type StEntry, toFloat32, writeSafetensors } from "../lib/io/safetensors.ts";
import { deriveSeed } from "../lib/nn/init.ts";
import { checkFinite } from "../lib/nn/finite.ts";
import { refuseOutputOnInput } from "../lib/io/paths.ts";
import { initTensors } from "../lib/init/mod.ts";
import { tensor } from "../lib/tensor/creation.ts";
import {
  type F32,
  getInitMethod,
  INIT_METHODS,
  type InitMethod,
  type LayerData,
  type LoraInit,
} from "../lib/init/mod.ts";
import {
  ConfigError,
  ConfigHelp,
  configOptionsUsage,
  configUsage,
  exitWithError,
  isFlag,
  parseConfig,
} from "../lab/config.ts";
import type { Shape } from "../lib/shape.ts";
import type { Tensor } from "../lib/tensor/tensor.ts";
import { loadLlama } from "../lib/models/load.ts";
import { checkTokenizerFits, loadTokenizer } from "../lib/io/load_tokenizer.ts";
import { loadText } from "../lib/data/text.ts";
import { sampleWindows } from "../lib/train/batches.ts";
import { attachLora } from "../lib/init/mod.ts";
import { findTargets, moduleNames } from "../lib/nn/targets.ts";
import { ADAPTER_FILES, saveAdapter } from "../lib/lora/mod.ts";
import { collectActivations, collectGradients } from "../lib/init/calibrate.ts";
import { deviceLine, resolveDevice } from "../lib/runtime/realize.ts";
import { DEVICE_CHOICES } from "../lib/runtime/device.ts";

/** Defaults of the options that apply to a Hugging Face model directory only. */
const HF_DEFAULTS = {
  targets: "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
  calibrationBatches: 4,
  calibrationSeqLen: 128,
} as const;

const BASE = z.object({
  method: z.string().describe(`initialisation: ${Object.keys(INIT_METHODS).join(", ")}`),
  weights: z.string().describe(
    "safetensors file with <layer>.weight tensors [d_out, d_in], or a Hugging Face model directory",
  ),
  out: z.string().describe("output safetensors file (an adapter directory for a Hugging Face model)"),
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
  device: z.enum(DEVICE_CHOICES).optional().describe(
    "where to compute (default: TESSERA_DEVICE, else auto: a hardware GPU, else wasm)",
  ),
  // The Hugging Face options have no schema default, so that one given with a weights file can be refused.
  targets: z.string().optional().describe(
    `Hugging Face model: comma-separated projections to adapt (default: ${HF_DEFAULTS.targets})`,
  ),
  calibrationText: z.string().optional().describe(
    "Hugging Face model: text file the data-driven methods calibrate on (the model's tokenizer)",
  ),
  calibrationBatches: z.number().int().positive().optional().describe(
    `Hugging Face model: calibration batches (default: ${HF_DEFAULTS.calibrationBatches})`,
  ),
  calibrationSeqLen: z.number().int().positive().optional().describe(
    `Hugging Face model: tokens per calibration batch, one sequence each (default: ${HF_DEFAULTS.calibrationSeqLen})`,
  ),
});

/** The flag of each option that applies to a Hugging Face model directory only. */
const HF_FLAGS = {
  targets: "--targets",
  calibrationText: "--calibration-text",
  calibrationBatches: "--calibration-batches",
  calibrationSeqLen: "--calibration-seq-len",
} as const;

/** The file key of each kind of calibration data (`<layer>.<key>`). */
const CALIBRATION_KEYS: Record<keyof LayerData, string> = {
  activations: "input",
  grads: "grad",
  gap: "gap",
  zText: "z_text",
  zVision: "z_vision",
};

/** The method named in the arguments (before full parsing), if any. */
function peekMethod(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--method") {
      const value = args[i + 1];
      if (value === undefined || isFlag(value)) {
        throw new ConfigError([
          `flag --method needs a value (one of ${Object.keys(INIT_METHODS).join(", ")})`,
        ]);
      }
      return value;
    }
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
    if (keys.length > 0) lines.push(configOptionsUsage(m.options));
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
  if (args.includes("--help") || args.includes("-h")) throw new ConfigHelp(initUsage());
  const name = peekMethod(args);
  if (name === undefined) throw new ConfigError(["--method is required; see --help for the list of methods"]);
  let method: InitMethod;
  try {
    method = getInitMethod(name);
  } catch (e) {
    throw new ConfigError([(e as Error).message]);
  }
  // The method applies its own defaults: only the options given are passed on (a default gain would conflict with a
  // LoRAM tracking mode, a default distribution with Init[B]'s std).
  const given = Object.entries(method.options.shape as Record<string, z.ZodType>).map(([k, f]) =>
    [k, f instanceof z.ZodDefault ? z.optional(f.unwrap()).describe(f.description ?? k) : f] as const
  );
  const schema = BASE.extend(Object.fromEntries(given));
  const cfg = parseConfig(schema, args, { name: "deno task init" }) as
    & z.infer<typeof BASE>
    & Record<string, unknown>;
  const device = resolveDevice(cfg.device);
  const own: Record<string, unknown> = {};
  for (const k of Object.keys(method.options.shape)) if (cfg[k] !== undefined) own[k] = cfg[k];
  // --exact picks the deterministic variant; without it each method keeps its own default.
  if (cfg.exact && "exact" in method.options.shape) own.exact = true;
  if (cfg.exact && "exactSvd" in method.options.shape) own.exactSvd = true;

  const hf = await isDirectory(cfg.weights);
  try {
    refuseOutputsOnInputs(cfg, hf);
  } catch (e) {
    // An output on an input is a usage error, as a bad flag is: status 2, with the message alone.
    if (e instanceof RangeError) throw new ConfigError([e.message]);
    throw e;
  }
  if (hf) return await initHfModel(cfg, method, own);
  const hfOnly = Object.entries(HF_FLAGS).filter(([k]) => cfg[k] !== undefined).map(([, flag]) => flag);
  if (hfOnly.length > 0) {
    throw new ConfigError([
      `${hfOnly.join(", ")} ${hfOnly.length === 1 ? "needs" : "need"} a Hugging Face model directory as ` +
      `--weights; "${cfg.weights}" is a weights file, whose every <layer>.weight is adapted`,
    ]);
  }
  const { tensors: weights } = await readSafetensors(cfg.weights);
  const layers = [...weights].filter(([k, v]) => k.endsWith(".weight") && v.shape.length === 2);
  if (layers.length === 0) throw new Error(`"${cfg.weights}" has no 2-D <layer>.weight tensor`);
  // Calibration files are read when the method needs them or when they are given (options such as LoRAM's
  // tracking mode may use them); one the method would drop is refused.
  const dropped = [
    ...(cfg.activations !== undefined && !method.takes.some((k) => k !== "grads") ? ["--activations"] : []),
    ...(cfg.grads !== undefined && !method.takes.includes("grads") ? ["--grads"] : []),
  ];
  if (dropped.length > 0) {
    throw new ConfigError([
      `${dropped.join(" and ")} ${
        dropped.length > 1 ? "are" : "is"
      } given, but method "${method.name}" reads ` +
      `${method.takes.length === 0 ? "no calibration data" : `only ${method.takes.join(", ")}`}`,
    ]);
  }
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
  await checkFinite(inputs.map((l) => [`${l.name}.weight`, l.weight] as const), {
    what: `weights file "${cfg.weights}"`,
  });
  const calibration = inputs.flatMap((l) =>
    Object.entries(l.data).map(([k, t]) =>
      [`${l.name}.${CALIBRATION_KEYS[k as keyof LayerData]}`, t] as const
    )
  );
  const calibrationFiles = [cfg.activations, cfg.grads].filter((f) => f !== undefined).map((f) => `"${f}"`);
  await checkFinite(calibration, { what: `calibration file ${calibrationFiles.join(" / ")}` });

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
  await checkFinite(initTensors(results), {
    what: `the "${name}" initialisation's output`,
    hint: "Nothing was written; check the method's options",
  });
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

/**
 * Refuses, before anything is read, every file the run would write that is one of its inputs or lies inside an input
 * directory: OUT itself, or, as an adapter directory (`hf`), OUT and each file saveAdapter writes or removes there.
 */
function refuseOutputsOnInputs(cfg: z.infer<typeof BASE>, hf: boolean): void {
  const inputs = [
    { flag: "--weights", path: cfg.weights },
    { flag: "--activations", path: cfg.activations },
    { flag: "--grads", path: cfg.grads },
    { flag: "--calibration-text", path: cfg.calibrationText },
  ];
  refuseOutputOnInput({ flag: "--out", path: cfg.out }, inputs);
  if (!hf) return;
  for (const file of Object.values(ADAPTER_FILES)) {
    refuseOutputOnInput({ flag: "--out's file", path: `${cfg.out}/${file}` }, inputs);
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** `--weights` is a Hugging Face model directory: attach to its projections and write a PEFT adapter directory. */
async function initHfModel(
  cfg: z.infer<typeof BASE> & Record<string, unknown>,
  method: InitMethod,
  own: Record<string, unknown>,
): Promise<InitRun> {
  if (cfg.activations !== undefined || cfg.grads !== undefined) {
    throw new ConfigError([
      "with a Hugging Face model directory, calibration comes from --calibration-text, not --activations/--grads",
    ]);
  }
  if (await exists(cfg.out) && !await isDirectory(cfg.out)) {
    throw new ConfigError([
      `--out "${cfg.out}" is not a directory; with a Hugging Face model directory as --weights, --out is the adapter ` +
      `directory to write`,
    ]);
  }
  const device = resolveDevice(cfg.device);
  const model = await loadLlama(cfg.weights, { device });
  const calibrationBatches = cfg.calibrationBatches ?? HF_DEFAULTS.calibrationBatches;
  const calibrationSeqLen = cfg.calibrationSeqLen ?? HF_DEFAULTS.calibrationSeqLen;
  const targetList = cfg.targets ?? HF_DEFAULTS.targets;
  const targets = targetList.split(",").map((t) => t.trim()).filter((t) => t.length > 0);
  refuseUnmatchedTargets(model, targets, cfg.weights);
  let data: Record<string, LayerData> | undefined;
  const reads = (k: keyof LayerData) => method.takes.includes(k);
  if (cfg.calibrationText !== undefined && !reads("activations") && !reads("grads")) {
    throw new ConfigError([
      `--calibration-text "${cfg.calibrationText}" is given, but method "${method.name}" reads no calibration ` +
      `data from a language model`,
    ]);
  }
  if (method.needs.length > 0 || cfg.calibrationText !== undefined) {
    if (cfg.calibrationText === undefined) {
      throw new ConfigError([
        `method "${method.name}" needs --calibration-text (a text file to calibrate on)`,
      ]);
    }
    if (method.needs.includes("gap")) {
      throw new ConfigError([
        `method "${method.name}" needs a modality gap, which a language model does not have`,
      ]);
    }
    const tokenizer = await loadTokenizer(cfg.weights);
    checkTokenizerFits(tokenizer, cfg.weights, model.config.vocabSize, cfg.weights);
    const ids = Int32Array.from(tokenizer.encode(await loadText(cfg.calibrationText)));
    const t = Math.min(calibrationSeqLen, model.config.seqLen);
    const batches = Array.from({ length: calibrationBatches }, (_, i) => {
      const { x, y } = sampleWindows(ids, { batchSize: 1, seqLen: t, seed: cfg.seed, step: i + 1 });
      return {
        x: tensor(x, { shape: [1, t], dtype: "i32", device }) as Tensor<Shape, "i32">,
        y: tensor(y, { shape: [1, t], dtype: "i32", device }) as Tensor<Shape, "i32">,
      };
    });
    // What the method reads: LoRAM's tracking mode may use either, so it gets both when given a text.
    const paths = targetsOf(model, targets);
    const acts = reads("activations")
      ? await collectActivations(model, paths, (m, i) => void m.forward(batches[i].x), {
        batches: batches.length,
      })
      : {};
    const grads = reads("grads")
      ? await collectGradients(model, paths, (m, b) => m.loss(b.x, b.y), batches)
      : {};
    data = Object.fromEntries(paths.map((p) => [p, { ...acts[p], ...grads[p] }]));
  }
  const res = await attachLora(model, {
    targetModules: targets,
    rank: cfg.rank,
    alpha: cfg.alpha ?? cfg.rank,
    useRslora: cfg.useRslora,
    init: method.name,
    initOptions: own,
    data,
    seed: cfg.seed,
  });
  await saveAdapter(cfg.out, model, { baseModel: cfg.weights });
  return { layers: res.perLayer, out: cfg.out, device: await deviceLine(cfg.device) };
}

/**
 * Refuses each `--targets` entry that selects no projection of the model (a misspelt name was dropped while the
 * others were adapted), naming it and the projection names the model answers to.
 */
function refuseUnmatchedTargets(model: object, targets: readonly string[], weights: string): void {
  const unmatched = targets.filter((t) => findTargets(model, [t]).length === 0);
  if (unmatched.length === 0) return;
  const names = new Set(
    findTargets(model, /.*/).flatMap(([p]) =>
      moduleNames(model, p).map((n) => n.slice(n.lastIndexOf(".") + 1))
    ),
  );
  throw new ConfigError([
    `--targets ${unmatched.map((t) => `"${t}"`).join(", ")} ${
      unmatched.length === 1 ? "matches" : "match"
    } ` +
    `no projection of "${weights}"; its projections: ${[...names].join(", ")}`,
  ]);
}

/** The module paths `targets` selects (Hugging Face or tessera names), for the calibration helpers. */
function targetsOf(model: object, targets: string[]): string[] {
  return findTargets(model, targets).map(([p]) => p);
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
    exitWithError("init", e);
  }
}
