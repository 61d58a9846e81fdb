/**
 * Checking that weights are finite: after loading a model, an adapter or a checkpoint, and after an
 * initialisation, a NaN or an infinity anywhere would otherwise surface only as a NaN perplexity, `<unk>` text or a
 * diverged run.
 *
 * The check runs on the device: each tensor's `Σ x·0` is NaN exactly when the tensor holds a NaN or an infinity
 * (IEEE: NaN·0 = ∞·0 = NaN, and a NaN survives every later addition), all the sums are stacked into one vector and
 * read back once. The product with a literal zero is the one form the WGSL renderer writes with integer operations
 * on the operand's bits (see `codegen/render_wgsl.ts`), so no shader compiler can simplify it away. Only the tensors
 * found bad are read back, to count their non-finite values and name the first.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";
import { stack } from "../tensor/creation.ts";
import type { F32, Tensor } from "../tensor/tensor.ts";

/** One tensor found holding NaN or infinite values. */
export interface NonFiniteTensor {
  /** The tensor's name (parameter path, file key, ...). */
  name: string;
  /** Its shape. */
  shape: readonly number[];
  /** How many of its values are NaN or ±Infinity. */
  count: number;
  /** Flat index of the first one. */
  first: number;
  /** That value (`NaN`, `Infinity` or `-Infinity`). */
  value: number;
}

const CHECK_FINITE_OPTIONS = z.object({ what: z.string(), hint: z.string().optional() }).strict();

/** Options of {@link checkFinite}. */
export interface CheckFiniteOptions {
  /** What holds the tensors, for the message: e.g. `model "stories260K.bin"` or `the init "pissa"'s output`. */
  what: string;
  /** What the user can do about it, appended to the message (e.g. how to rebuild a cache). */
  hint?: string;
}

/**
 * Thrown by {@link checkFinite}: names every tensor holding NaN or infinite values, with the count and the first
 * such element of each.
 */
export class NonFiniteWeightsError extends Error {
  /** The tensors found bad, in the order given. */
  readonly tensors: readonly NonFiniteTensor[];

  /** An error for `tensors` of `what`, with an optional `hint`. */
  constructor(what: string, tensors: readonly NonFiniteTensor[], hint?: string) {
    const shown = tensors.slice(0, 5).map((t) =>
      `"${t.name}" [${t.shape.join(", ")}] (${t.count} of them; the first, element ${t.first}, is ${t.value})`
    );
    const more = tensors.length > 5 ? `, and ${tensors.length - 5} more tensors` : "";
    super(`${what}: NaN or infinite values in ${shown.join(", ")}${more}${hint ? `. ${hint}` : ""}`);
    this.name = "NonFiniteWeightsError";
    this.tensors = tensors;
  }
}

/** The count and first index of non-finite values in host data. */
function scan(data: ArrayLike<number>): { count: number; first: number; value: number } {
  let count = 0;
  let first = -1;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      if (first < 0) first = i;
      count++;
    }
  }
  return { count, first, value: first < 0 ? 0 : data[first] };
}

/**
 * Throws a {@link NonFiniteWeightsError} naming every float tensor of `tensors` that holds a NaN or an infinity.
 * All tensors are checked in one submission with one readback of one value per tensor (integer tensors are
 * skipped: they cannot hold either); nothing else is read back unless something is found.
 *
 * @param tensors `[name, tensor]` pairs (e.g. `namedParameters(model)`), all on one device.
 * @param options What holds them and what to do about it, for the message.
 *
 * @example
 * ```ts
 * import { tensor } from "../tensor/creation.ts";
 * import { checkFinite, NonFiniteWeightsError } from "./finite.ts";
 * await checkFinite([["w", tensor([1, 2, 3])]], { what: "my weights" }); // passes
 * try {
 *   await checkFinite([["w", tensor([1, NaN, 3])]], { what: "my weights" });
 * } catch (err) {
 *   console.log((err as NonFiniteWeightsError).tensors[0].first); // 1
 * }
 * ```
 */
export async function checkFinite(
  tensors: readonly (readonly [string, Tensor])[],
  options: CheckFiniteOptions,
): Promise<void> {
  checkOptions("checkFinite", CHECK_FINITE_OPTIONS, options);
  const floats = tensors.filter(([, t]) => (t.dtype === "f32" || t.dtype === "f16") && t.size > 0);
  if (floats.length === 0) return;
  const sums = floats.map(([, t]) => {
    const x = (t.dtype === "f32" ? t : t.cast("f32")) as F32;
    return x.reshape([t.size]).mul(0).sum() as F32;
  });
  const flags = await stack(sums).data();
  const bad: NonFiniteTensor[] = [];
  for (let i = 0; i < floats.length; i++) {
    if (Number.isFinite(flags[i])) continue;
    const [name, t] = floats[i];
    const found = scan(await t.data());
    // The device saw a NaN or an infinity; the host copy always shows it (both keep every f32 value as it is).
    bad.push({ name, shape: [...t.shape], ...found });
  }
  if (bad.length > 0) throw new NonFiniteWeightsError(options.what, bad, options.hint);
}
