/**
 * The toy-VLM pieces exp:vlm-dynamics and exp:gap-init share: the pretraining, fine-tuning and validation images
 * (generated shapes: three fresh draws; the emoji pack: the same images, a continued stage) and the pretrained
 * base (cached under `.cache/`), with a one-line note on where it came from.
 *
 * @module
 */
import type { DeviceName } from "../lib/ir/node.ts";
import { type CachedVlm, cachedVlm, defaultVlmSpec, loadVlmData, type VlmData } from "../lib/models/vlm.ts";

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
