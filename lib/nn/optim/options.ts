/**
 * The option schemas of the optimisers (kept out of the optimisers' modules so that the public API names no zod
 * type): {@link OPTIMIZER_FIELDS} for every optimiser's shared options, extended by each optimiser.
 *
 * @module
 */
import { z } from "../../../deps.ts";
import { opt } from "../../options.ts";

/** The schema of `OptimizerOptions`' fields, which every optimiser's options schema extends. */
export const OPTIMIZER_FIELDS = {
  lr: opt.nonNegative(),
  weightDecay: opt.nonNegative().optional(),
  trainable: opt.paramFilter().optional(),
  groups: z.array(
    z.object({
      name: z.string().min(1),
      params: opt.paramFilter(),
      lr: opt.nonNegative().optional(),
      weightDecay: opt.nonNegative().optional(),
    }).strict(),
  ).optional(),
  paramsPerPack: opt.count().optional(),
};

/** Options of `Adam` and `AdamW`. */
export const ADAM_OPTIONS = z.object({
  ...OPTIMIZER_FIELDS,
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).optional(),
  eps: opt.nonNegative().optional(),
}).strict();

/** Options of `SGD`. */
export const SGD_OPTIONS = z.object({
  ...OPTIMIZER_FIELDS,
  momentum: z.number().min(0).lt(1).optional(),
  nesterov: z.boolean().optional(),
}).strict();
