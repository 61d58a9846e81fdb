/**
 * The registry's entry type and the helper that turns a typed method function and its zod option schema into an
 * entry (validating options, rejecting unknown ones, and turning every error into a rejected promise).
 *
 * Kinds: `zero` — `B·A = 0`, W untouched (output unchanged at step 0); `offset` — `W_res = W − s·B·A` (output
 * unchanged); `quantized` — the base becomes the quantised W (LoftQ); `target` — W untouched and `B·A ≠ 0` (CNTLoRA as
 * published: the model starts at an estimated target weight).
 *
 * @module
 */
import type { z } from "../../deps.ts";
import { checkOptions, type ConfigSchema } from "../options.ts";
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

/**
 * Splits `opts` into common options, layer data and method options, and checks the method options strictly: an
 * unknown key or a bad value throws an `OptionsError` naming the method, the key and the value.
 */
export function parseOptions<S extends z.ZodObject>(
  method: string,
  schema: S,
  opts: Record<string, unknown>,
): z.infer<S> {
  const {
    rank: _r,
    alpha: _a,
    useRslora: _u,
    seed: _s,
    activations: _x,
    grads: _g,
    gap: _p,
    zText: _t,
    zVision: _v,
    ...rest
  } = opts;
  return checkOptions(method, schema.strict(), rest) as z.infer<S>;
}

/** A registry entry from a method function `run` and its option schema. */
export function entry<S extends z.ZodObject>(
  m: Omit<InitMethod, "init" | "options"> & {
    options: S;
    run: (weight: F32, opts: CommonInitOptions & LayerData & z.infer<S>) => Promise<LoraInit>;
  },
): InitMethod {
  const { run, ...rest } = m;
  return {
    ...rest,
    init: async (weight, opts) => {
      const own = parseOptions(m.name, m.options, opts);
      const { rank, alpha, useRslora, seed, activations, grads, gap, zText, zVision } = opts;
      return await run(weight, {
        rank,
        alpha,
        useRslora,
        seed,
        activations,
        grads,
        gap,
        zText,
        zVision,
        ...own,
      });
    },
  };
}
