/**
 * Calibration helpers on a tiny two-layer network: recorded activations equal the layer inputs (flattened,
 * masked, stacked), modules are restored (also on error), and collected gradients equal the closed-form gradient
 * of the loss with respect to each weight, averaged over batches.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { getBackend, getDefaultDevice, type Shape, type Tensor, tensor } from "../../mod.ts";
import { collectActivations, collectGradients } from "../../lib/init/calibrate.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { Module, namedParameters } from "../../lib/nn/module.ts";
import { OptionsError } from "../../lib/options.ts";
import { assertClose, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;
const [D_IN, D_HID, D_OUT] = [5, 7, 3];

class TinyNet extends Module {
  fc1: Linear;
  fc2: Linear;
  aux: Linear;
  constructor(seed: number) {
    super();
    this.fc1 = new Linear(D_IN, D_HID, { seed });
    this.fc2 = new Linear(D_HID, D_OUT, { seed: seed + 1 });
    this.aux = new Linear(D_OUT, D_OUT, { seed: seed + 2 });
  }
  forward(x: F): F {
    return this.fc2.forward(this.fc1.forward(x).relu() as F) as F;
  }
}

/** Host float64 forward: pre-activation z1, hidden h and output y for row-major tokens x `[n, D_IN]`. */
async function hostForward(net: TinyNet, x: ArrayLike<number>) {
  const w1 = await net.fc1.weight.data(), b1 = await net.fc1.bias!.data();
  const w2 = await net.fc2.weight.data(), b2 = await net.fc2.bias!.data();
  const n = x.length / D_IN;
  const z1 = new Float64Array(n * D_HID), h = new Float64Array(n * D_HID), y = new Float64Array(n * D_OUT);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < D_HID; j++) {
      let s = b1[j];
      for (let k = 0; k < D_IN; k++) s += x[i * D_IN + k] * w1[j * D_IN + k];
      z1[i * D_HID + j] = s;
      h[i * D_HID + j] = Math.max(s, 0);
    }
    for (let j = 0; j < D_OUT; j++) {
      let s = b2[j];
      for (let k = 0; k < D_HID; k++) s += h[i * D_HID + k] * w2[j * D_HID + k];
      y[i * D_OUT + j] = s;
    }
  }
  return { z1, h, y, w2 };
}

Deno.test("collectActivations records the inputs of the targets and restores the model", async () => {
  const rng = new TestRng(1101);
  const net = new TinyNet(3);
  const fc1 = net.fc1, fc2 = net.fc2;
  const xs = [0, 1, 2].map(() => rng.normals(2 * 4 * D_IN)); // batches [2, 4, D_IN]: 8 tokens each
  let paths: string[] = [];
  const data = await collectActivations(net, ["fc1", "fc2"], (m, i) => {
    paths = namedParameters(m).map(([p]) => p);
    m.forward(tensor(xs[i], { shape: [2, 4, D_IN] }) as unknown as F);
  }, { batches: 3 });
  deepEqual(
    paths,
    ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "aux.weight", "aux.bias"],
    "same paths",
  );
  ok(net.fc1 === fc1 && net.fc2 === fc2, "the original modules are back");
  deepEqual(Object.keys(data), ["fc1", "fc2"]);
  deepEqual(data.fc1.activations!.shape, [3, 8, D_IN]);
  deepEqual(data.fc2.activations!.shape, [3, 8, D_HID]);
  assertClose(await data.fc1.activations!.data(), xs.flatMap((x) => Array.from(x)), { what: "fc1 inputs" });
  const hidden: number[] = [];
  for (const x of xs) hidden.push(...(await hostForward(net, x)).h);
  assertClose(await data.fc2.activations!.data(), hidden, { rtol: 1e-5, atol: 1e-6, what: "fc2 inputs" });
  // A RegExp on the whole path, as attachLora matches it.
  const re = await collectActivations(net, /fc\d/, (m) => {
    m.forward(tensor(xs[0], { shape: [8, D_IN] }) as unknown as F);
  });
  deepEqual(Object.keys(re), ["fc1", "fc2"]);
  deepEqual(re.fc1.activations!.shape, [1, 8, D_IN]);
});

Deno.test("collectActivations: label masks, ragged batches, errors restore the model", async () => {
  const rng = new TestRng(1102);
  const net = new TinyNet(5);
  const xs = [0, 1].map(() => rng.normals(6 * D_IN));
  const run = (m: TinyNet, i: number) => {
    m.forward(tensor(xs[i], { shape: [6, D_IN] }) as unknown as F);
  };
  // Keep tokens with (token + batch) even: 3 per batch.
  const even = (b: number) => Array.from({ length: 6 }, (_, j) => (j + b) % 2 === 0);
  const masked = await collectActivations(net, ["fc1"], run, { batches: 2, labelMask: even });
  deepEqual(masked.fc1.activations!.shape, [2, 3, D_IN]);
  const kept = [0, 1].flatMap((b) =>
    Array.from({ length: 6 }, (_, j) => j).filter((j) => (j + b) % 2 === 0).flatMap((j) =>
      Array.from(xs[b].subarray(j * D_IN, (j + 1) * D_IN))
    )
  );
  assertClose(await masked.fc1.activations!.data(), kept, { what: "kept tokens" });
  // Different kept counts: an error by default, or concatenated / trimmed on request.
  const uneven = (b: number) => Array.from({ length: 6 }, (_, j) => j < 2 + b);
  await rejects(
    collectActivations(net, ["fc1"], run, { batches: 2, labelMask: uneven }),
    /different token counts \(2, 3\)/,
  );
  const cat = await collectActivations(net, ["fc1"], run, {
    batches: 2,
    labelMask: uneven,
    ragged: "concat",
  });
  deepEqual(cat.fc1.activations!.shape, [5, D_IN]);
  const trim = await collectActivations(net, ["fc1"], run, { batches: 2, labelMask: uneven, ragged: "trim" });
  deepEqual(trim.fc1.activations!.shape, [2, 2, D_IN]);
  // The kept tokens, in order: all of them concatenated, or the first two of each batch.
  const first = (b: number, k: number) => Array.from(xs[b].subarray(0, k * D_IN));
  assertClose(await cat.fc1.activations!.data(), [...first(0, 2), ...first(1, 3)], { what: "concat" });
  assertClose(await trim.fc1.activations!.data(), [...first(0, 2), ...first(1, 2)], { what: "trim" });
  // A misspelt or bad option is refused, naming it: { labelmask } kept every token, { batch: 2 } ran once.
  const calls: number[] = [];
  const counted = (m: TinyNet, i: number) => void (calls.push(i), run(m, i));
  for (
    const [opts, message] of [
      [{ labelmask: even }, 'unknown option "labelmask"'],
      [{ batch: 2 }, 'unknown option "batch"'],
      [{ ragged: "trm" }, 'option "ragged" must be one of "error", "trim", "concat", got "trm"'],
      [{ batches: 1.5 }, 'option "batches" must be an integer, got 1.5'],
      [{ labelMask: [1, 0] }, 'option "labelMask" must be a function, got [1,0]'],
    ] as const
  ) {
    await rejects(
      collectActivations(net, ["fc1"], counted, opts as never),
      (e: Error) => e instanceof OptionsError && e.message === `collectActivations: ${message}`,
    );
  }
  deepEqual(calls, [], "nothing ran");
  // Errors: the modules are put back whatever happens.
  const fc1 = net.fc1;
  await rejects(
    collectActivations(net, ["fc1"], () => {
      throw new Error("boom");
    }),
    /boom/,
  );
  ok(net.fc1 === fc1 && net.fc1 instanceof Linear, "restored after an error");
  await rejects(collectActivations(net, ["fc1", "aux"], run), /"aux" was never called/);
  ok(net.aux instanceof Linear, "restored after a missing call");
  await rejects(collectActivations(net, ["nope"], run), /no Linear module/);
  await rejects(
    collectActivations(net, ["fc1"], run, { labelMask: () => [1, 0] }),
    /2 entries but layer "fc1" got 6/,
  );
});

Deno.test("collectActivations: masks keeping other counts of tokens compile no new kernels", async () => {
  const rng = new TestRng(1103);
  const net = new TinyNet(7);
  const xs = [0, 1, 2].map(() => rng.normals(12 * D_IN));
  const run = (m: TinyNet, i: number) => {
    m.forward(tensor(xs[i], { shape: [12, D_IN] }) as unknown as F);
  };
  // Batch b keeps its first counts[b] tokens; the trimmed result is the first 5 of each.
  const collect = async (counts: number[]) => {
    const labelMask = (b: number) => Array.from({ length: 12 }, (_, j) => j < counts[b]);
    const data = await collectActivations(net, ["fc1"], run, { batches: 3, labelMask, ragged: "trim" });
    deepEqual(data.fc1.activations!.shape, [3, 5, D_IN]);
    const want = xs.flatMap((x) => Array.from(x.subarray(0, 5 * D_IN)));
    deepEqual(Array.from(await data.fc1.activations!.data()), want, `counts ${counts}`);
  };
  const be = await getBackend(getDefaultDevice());
  await collect([5, 6, 7]);
  const kernels = be.stats().cachedKernels;
  await collect([8, 5, 6]);
  await collect([7, 8, 5]);
  equal(be.stats().cachedKernels, kernels, "new kept counts compiled new kernels");
});

Deno.test("collectGradients equals the closed-form gradient averaged over batches", async () => {
  const rng = new TestRng(1103);
  const net = new TinyNet(7);
  const n = 6;
  const batches = [0, 1].map(() => ({ x: rng.normals(n * D_IN), y: rng.normals(n * D_OUT) }));
  const w1Before = net.fc1.weight;
  const data = await collectGradients(net, ["fc1", "fc2"], (m, b) => {
    const out = m.forward(tensor(b.x, { shape: [n, D_IN] }) as unknown as F);
    return out.sub(tensor(b.y, { shape: [n, D_OUT] })).square().mean();
  }, batches);
  ok(net.fc1.weight === w1Before, "the model is not changed");
  // L = mean((y' − y)²): dy' = 2(y' − y)/(n·D_OUT); dW2 = dy'ᵀ h; dW1 = ((dy' W2) ⊙ [z1 > 0])ᵀ x.
  const g1 = new Float64Array(D_HID * D_IN), g2 = new Float64Array(D_OUT * D_HID);
  for (const b of batches) {
    const { z1, h, y, w2 } = await hostForward(net, b.x);
    const dy = y.map((v, i) => (2 * (v - b.y[i])) / (n * D_OUT) / batches.length);
    for (let i = 0; i < n; i++) {
      for (let o = 0; o < D_OUT; o++) {
        for (let k = 0; k < D_HID; k++) g2[o * D_HID + k] += dy[i * D_OUT + o] * h[i * D_HID + k];
      }
      for (let k = 0; k < D_HID; k++) {
        if (z1[i * D_HID + k] <= 0) continue;
        let dh = 0;
        for (let o = 0; o < D_OUT; o++) dh += dy[i * D_OUT + o] * w2[o * D_HID + k];
        for (let j = 0; j < D_IN; j++) g1[k * D_IN + j] += dh * b.x[i * D_IN + j];
      }
    }
  }
  deepEqual(data.fc1.grads!.shape, [D_HID, D_IN]);
  deepEqual(data.fc2.grads!.shape, [D_OUT, D_HID]);
  assertClose(await data.fc1.grads!.data(), g1, { rtol: 1e-4, atol: 1e-6, what: "dL/dW1" });
  assertClose(await data.fc2.grads!.data(), g2, { rtol: 1e-4, atol: 1e-6, what: "dL/dW2" });
  await rejects(collectGradients(net, ["fc1"], () => net.fc1.weight.sum(), []), /empty/);
  equal(Object.keys(data).length, 2);
});
