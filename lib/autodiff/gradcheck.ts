/**
 * Finite-difference gradient checking in float64. Both sides are evaluated by the float64 reference interpreter
 * (`lib/ir/reference.ts`), so the comparison is free of float32 rounding: central differences with step `eps` have
 * truncation error O(eps²·f''') and rounding error O(1e-16/eps), both far below the default tolerance.
 *
 * @module
 */
import { constNode, type Node, toposort } from "../ir/node.ts";
import { evaluateReference } from "../ir/reference.ts";
import { getBackend, HostStorage, resolveStorage } from "../runtime/realize.ts";
import { rand } from "../tensor/creation.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { backprop } from "./grad.ts";
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

const GRADCHECK_OPTIONS = z.object({
  eps: opt.positive().optional(),
  rtol: opt.nonNegative().optional(),
  atol: opt.nonNegative().optional(),
  seed: opt.seed().optional(),
}).strict();

/** Options of {@link gradcheck}. */
export interface GradcheckOptions {
  /** Central-difference step (default 1e-6). */
  eps?: number;
  /** Relative tolerance (default 1e-5). */
  rtol?: number;
  /** Absolute tolerance (default 1e-7). */
  atol?: number;
  /** Seed of the random projection that turns a non-scalar output into a scalar (default 0). */
  seed?: number;
}

/** Result of {@link gradcheck}. */
export interface GradcheckResult {
  /** Largest |analytic − numeric| over all input elements. */
  maxAbsError: number;
  /** Analytic gradients (float64), one per input. */
  analytic: Float64Array[];
  /** Finite-difference gradients (float64), one per input. */
  numeric: Float64Array[];
}

/** Float64 values of every realized leaf below `roots` (host data where it is still on the host). */
export async function leafValues(roots: readonly Node[]): Promise<Map<Node, Float64Array>> {
  const out = new Map<Node, Float64Array>();
  for (const n of toposort(roots)) {
    if (n.storage === null) continue;
    const s = n.storage;
    let data: ArrayLike<number>;
    if (s instanceof HostStorage && s.host !== null) data = s.host;
    else {
      const be = await getBackend(n.device);
      data = await be.read(resolveStorage(s, be), n.dtype, n.size);
    }
    out.set(n, Float64Array.from(data));
  }
  return out;
}

/**
 * Compares the autodiff gradient of `f` at `inputs` with central finite differences, both in float64. A non-scalar
 * output is reduced to `sum(out · R)` with a fixed random R, which checks the full vector-Jacobian product.
 * Throws with the input, element and both values when they disagree. An unknown option or a bad value (a step that
 * is not > 0, a tolerance below 0, anything but a finite number) is an `OptionsError` naming it.
 */
export async function gradcheck(
  f: (...xs: Tensor[]) => Tensor,
  inputs: readonly Tensor[],
  opts: GradcheckOptions = {},
): Promise<GradcheckResult> {
  checkOptions("gradcheck", GRADCHECK_OPTIONS, opts);
  const { eps = 1e-6, rtol = 1e-5, atol = 1e-7, seed = 0 } = opts;
  const out = f(...inputs);
  const loss = out.size === 1
    ? out.reshape([])
    : out.mul(rand(out.shape, { seed, device: out.device }).add(0.5) as Tensor).sum();
  const wrt = inputs.map((x) => x.node);
  for (const w of wrt) {
    if (w.storage === null) throw new Error("gradcheck: inputs must be concrete tensors (created from data)");
  }
  const grads = backprop(loss.node, wrt, constNode(1, [], loss.dtype, loss.device));
  const leaves = await leafValues([loss.node, ...grads]);
  for (const w of wrt) if (!leaves.has(w)) leaves.set(w, (await leafValues([w])).get(w)!);
  const evalWith = (m: Map<Node, Float64Array>, n: Node) =>
    evaluateReference(n, (leaf) => {
      const v = m.get(leaf);
      if (v === undefined) throw new Error(`gradcheck: no value for leaf ${leaf}`);
      return v;
    });
  const analytic = grads.map((g) => Float64Array.from(evalWith(leaves, g)));
  const numeric: Float64Array[] = [];
  let maxAbsError = 0;
  wrt.forEach((w, k) => {
    const base = leaves.get(w)!;
    const num = new Float64Array(base.length);
    for (let j = 0; j < base.length; j++) {
      const plus = new Map(leaves);
      const minus = new Map(leaves);
      const xp = base.slice();
      const xm = base.slice();
      xp[j] += eps;
      xm[j] -= eps;
      plus.set(w, xp);
      minus.set(w, xm);
      num[j] = (evalWith(plus, loss.node)[0] - evalWith(minus, loss.node)[0]) / (2 * eps);
      const err = Math.abs(num[j] - analytic[k][j]);
      maxAbsError = Math.max(maxAbsError, err);
      if (!(err <= atol + rtol * Math.abs(num[j]))) {
        throw new Error(
          `gradcheck: input ${k} (shape [${w.shape}]) element ${j}: autodiff ${analytic[k][j]}, ` +
            `finite differences ${num[j]} (|diff| ${err})`,
        );
      }
    }
    numeric.push(num);
  });
  return { maxAbsError, analytic, numeric };
}
