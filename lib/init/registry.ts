/**
 * The registry's entry type and the helper that turns a typed method function and its zod option schema into an
 * entry (the function validates the options with that schema, rejecting unknown ones; every error becomes a
 * rejected promise).
 *
 * Kinds: `zero` — `B·A = 0`, W untouched (output unchanged at step 0); `offset` — `W_res = W − s·B·A` (output
 * unchanged); `quantized` — the base becomes the quantised W (LoftQ); `target` — W untouched and `B·A ≠ 0` (CNTLoRA as
 * published: the model starts at an estimated target weight).
 *
 * @module
 */
import type { z } from "../../deps.ts";
import type { ConfigSchema } from "../options.ts";
import type { CommonInitOptions, F32, LayerData, LoraInit } from "./types.ts";

/** What a method promises about the adapted layer at step 0. */
export type InitKind = "zero" | "offset" | "quantized" | "target";

/** Calibration data a method may need. */
export type InitNeed = "activations" | "grads" | "gap";

/** One layer handed to a multi-layer initialisation. */
export interface InitLayer {
  /** Module path, e.g. `layers.0.attention.wq`. */
  name: string;
  /** `[d_out, d_in]`. */
  weight: F32;
  /** Calibration data of the layer. */
  data?: LayerData;
}

/** A registered initialisation method. */
export interface InitMethod {
  /** Name used by `attachLora({ init })` and `deno task init --method`. */
  readonly name: string;
  /** The paper (authors, title, arXiv id). */
  readonly paper: string;
  /** What it promises at step 0. */
  readonly kind: InitKind;
  /** Calibration data it needs. */
  readonly needs: readonly InitNeed[];
  /**
   * The calibration data it reads: what it needs and what its options may use (LoRAM's tracking mode); any other
   * data given to `init` is dropped.
   */
  readonly takes: readonly (keyof LayerData)[];
  /** Method-specific options (validated; unknown keys rejected). */
  readonly options: ConfigSchema & { readonly shape: Readonly<Record<string, unknown>> };
  /** Initialises one layer. `opts` holds the common options, the layer's data and the method's options. */
  readonly init: (
    weight: F32,
    opts: CommonInitOptions & LayerData & Record<string, unknown>,
  ) => Promise<LoraInit>;
  /**
   * Initialises several layers together (methods that distribute ranks across layers: EVA, CNTLoRA with VAS).
   * Absent: layers are initialised one by one with `init`.
   */
  readonly initLayers?: (
    layers: readonly InitLayer[],
    opts: CommonInitOptions & Record<string, unknown>,
  ) => Promise<Map<string, LoraInit>>;
}

/** The keys of a layer's calibration data (`LayerData`), which methods take beside their options. */
export const DATA_KEYS: ReadonlySet<string> = new Set(["activations", "grads", "gap", "zText", "zVision"]);

/** The calibration data each need stands for. */
const NEED_DATA: Readonly<Record<InitNeed, readonly (keyof LayerData)[]>> = {
  activations: ["activations"],
  grads: ["grads"],
  gap: ["gap", "zText", "zVision"],
};

/**
 * A registry entry from a method function `run` and its option schema. `run` checks every option itself (with the
 * same schema); the entry hands it the options as given, less the layer's calibration data it does not take.
 */
export function entry<S extends z.ZodObject>(
  m: Omit<InitMethod, "init" | "options" | "takes"> & {
    options: S;
    /** Calibration data the method takes besides what it needs (LoRAM's tracking mode). */
    takes?: readonly (keyof LayerData)[];
    run: (weight: F32, opts: CommonInitOptions & LayerData & z.input<S>) => Promise<LoraInit>;
  },
): InitMethod {
  const { run, takes, ...rest } = m;
  const data = new Set<string>([...m.needs.flatMap((n) => NEED_DATA[n]), ...(takes ?? [])]);
  return {
    ...rest,
    takes: [...data] as (keyof LayerData)[],
    init: async (weight, opts) => {
      const given = Object.entries(opts).filter(([k]) => !DATA_KEYS.has(k) || data.has(k));
      return await run(weight, Object.fromEntries(given) as CommonInitOptions & LayerData & z.input<S>);
    },
  };
}
