/**
 * The toy-VLM pieces exp:vlm-dynamics and exp:gap-init share: the pretraining, fine-tuning and validation images
 * (generated shapes: three fresh draws; the emoji pack: the same images, a continued stage) and the pretrained
 * base (cached under `.cache/`), with a one-line note on where it came from.
 *
 * @module
 */
import type { DeviceName } from "../lib/ir/node.ts";
import {
  type CachedVlm,
  cachedVlm,
  captionTrainer,
  defaultVlmSpec,
  loadVlmData,
  type ToyVlm,
  type VlmData,
} from "../lib/models/vlm.ts";
import type { CharVocab } from "../lib/data/generated.ts";
import { LORA_TRAINABLE } from "../lib/lora/mod.ts";
import type { ResultsDir } from "../lib/util/results.ts";

/** The configuration keys the VLM set-up reads. */
export interface VlmSettings {
  quick: boolean;
  data: string;
  images: number;
  pretrainSteps: number;
  textLen: number;
}

/** Data and base model of a VLM experiment. */
export interface VlmSetup {
  /** Pretraining images. */
  pre: VlmData;
  /** Fine-tuning images. */
  ft: VlmData;
  /** Validation images. */
  val: VlmData;
  /** The pretrained base. */
  base: CachedVlm;
  /** Where the base came from and its stage losses (first → last). */
  note: string;
}

/** Loads the images and the pretrained base (pretraining it once), and prints the data and base lines. */
export async function vlmSetup(cfg: VlmSettings, device: DeviceName): Promise<VlmSetup> {
  const pre = await loadVlmData(cfg.data, { n: cfg.images, seed: 0 });
  const ft = cfg.data === "shapes" ? await loadVlmData(cfg.data, { n: cfg.images, seed: 1 }) : pre;
  const val = cfg.data === "shapes" ? await loadVlmData(cfg.data, { n: 200, seed: 2 }) : pre;
  const spec = defaultVlmSpec(pre, {
    quick: cfg.quick,
    pretrainSteps: cfg.pretrainSteps,
    textLen: cfg.textLen,
  });
  const base = await cachedVlm(spec, pre, { device, progress: Deno.stderr.isTerminal() });
  const stages = Object.entries(base.stages)
    .map(([k, v]) => `${k} ${v.first.toFixed(3)} → ${v.last.toFixed(3)}`)
    .join(", ");
  const note =
    `${base.cached ? "cached" : "pretrained"} base in ${base.dir} (${base.seconds.toFixed(1)} s); ` +
    `stage losses first → last: ${stages}`;
  console.log(`data: ${pre.description}\nbase: ${note}`);
  return { pre, ft, val, base, note };
}

/** What {@link loraCaptionTrainer} reads: the fine-tuning data and the run's results directory and settings. */
export interface VlmRunContext {
  train: VlmData;
  vocab: CharVocab;
  results: ResultsDir;
  cfg: { steps: number; batchSize: number; lr: number; textLen: number };
}

/**
 * The caption trainer of one LoRA fine-tuning run (`label`, `seed`) of a VLM experiment: the adapters only,
 * cosine schedule with 10% warm-up, metrics to `metrics/<label>-seed<seed>.jsonl` (the caller closes the writer),
 * a progress bar on a terminal.
 */
export function loraCaptionTrainer(model: ToyVlm, ctx: VlmRunContext, label: string, seed: number) {
  const metrics = ctx.results.metrics({ file: `metrics/${label}-seed${seed}.jsonl` });
  const trainer = captionTrainer(model, ctx.train, ctx.vocab, {
    steps: ctx.cfg.steps,
    batchSize: ctx.cfg.batchSize,
    lr: ctx.cfg.lr,
    seed,
    textLen: ctx.cfg.textLen,
    warmupRatio: 0.1,
    trainable: LORA_TRAINABLE,
    metrics,
    progress: Deno.stderr.isTerminal() ? `${label} seed ${seed}` : false,
  });
  return { trainer, metrics };
}
