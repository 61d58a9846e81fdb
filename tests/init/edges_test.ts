/**
 * Initialisations at the edges a researcher hits: a rank or data that cannot work for one layer of several, data
 * without variance, a zero gradient, a weight of lower rank than the adapter. Each either gives the method's result
 * or a clear error naming the layer and the values.
 */
import { deepEqual, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { attachLora, miloraInit, pissaInit } from "../../lib/init/mod.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { NonFiniteWeightsError } from "../../lib/nn/finite.ts";
import { assertClose, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

const rand = (rng: TestRng, shape: number[]) =>
  tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape }) as unknown as F;

/** Two 16 -> 24 layers, q and v. */
const twoLayers = (rng: TestRng) => ({
  q: new Linear(16, 24, { seed: rng.int(0, 999) }),
  v: new Linear(16, 24, { seed: rng.int(0, 999) }),
});

Deno.test("attachLora names the layer whose initialisation fails", async () => {
  const rng = new TestRng(901);
  await rejects(
    attachLora(twoLayers(rng), { targetModules: ["q", "v"], rank: 4, rankPattern: { v: 17 }, init: "pissa" }),
    (e: Error) =>
      e instanceof RangeError &&
      /^attachLora: layer "v": pissa: rank 17 is not possible for a \[24, 16\] weight/.test(e.message),
  );
  // CorDA divides each sample by its maximum: all-zero activations of one layer.
  const data = {
    q: { activations: rand(rng, [40, 16]) },
    v: { activations: tensor(new Float32Array(640), { shape: [40, 16] }) as unknown as F },
  };
  await rejects(
    attachLora(twoLayers(rng), { targetModules: ["q", "v"], rank: 4, init: "corda", data }),
    /^RangeError: attachLora: layer "v": corda: a sample of the activations \[40,16\] has maximum 0/,
  );
  const grads = { q: { grads: rand(rng, [24, 16]) }, v: { grads: rand(rng, [16, 24]) } };
  await rejects(
    attachLora(twoLayers(rng), { targetModules: ["q", "v"], rank: 2, init: "lora-ga", data: grads }),
    /^RangeError: attachLora: layer "v": lora-ga: grads are \[16,24\], expected \[24, 16\]/,
  );
  // A NaN in one weight is named by its path.
  const model = twoLayers(rng);
  const w = (await model.v.weight.data()) as Float32Array;
  w[7] = NaN;
  model.v.weight = tensor(w, { shape: [24, 16] }) as unknown as F;
  await rejects(
    attachLora(model, { targetModules: ["q", "v"], rank: 4, init: "pissa" }),
    (e: Error) =>
      e instanceof NonFiniteWeightsError &&
      /NaN or infinite values in "v\.weight" \[24, 16\]/.test(e.message),
  );
});

Deno.test("EVA refuses a layer whose activations have no variance, naming it", async () => {
  const rng = new TestRng(902);
  // A repeated row of random floats centres to float32 rounding of its mean, not always to 0: several rows.
  const rows = Array.from({ length: 4 }, () => rng.normals(16));
  const cases: [string, Float32Array][] = [
    ["constant", new Float32Array(40 * 16).fill(rng.normal())],
    ["zero", new Float32Array(40 * 16)],
    ...rows.map((row, k): [string, Float32Array] => [
      `row ${k} repeated`,
      Float32Array.from({ length: 40 * 16 }, (_, i) => row[i % 16]),
    ]),
  ];
  for (const [what, values] of cases) {
    const data = {
      q: { activations: rand(rng, [40, 16]) },
      v: { activations: tensor(values, { shape: [40, 16] }) as unknown as F },
    };
    await rejects(
      attachLora(twoLayers(rng), { targetModules: ["q", "v"], rank: 4, init: "eva", data }),
      /^RangeError: eva: layer "v" has activations without variance: every token of its \d+ fitted batch\(es\) of \[40,16\]/,
      what,
    );
  }
});

Deno.test("LoRA-GA refuses a zero gradient, naming the layer", async () => {
  const rng = new TestRng(903);
  for (const zero of [[24, 16], [3, 24, 16]]) {
    const data = {
      q: { grads: rand(rng, [24, 16]) },
      v: { grads: tensor(new Float32Array(zero.reduce((a, b) => a * b)), { shape: zero }) as unknown as F },
    };
    await rejects(
      attachLora(twoLayers(rng), { targetModules: ["q", "v"], rank: 2, init: "lora-ga", data }),
      new RegExp(`^RangeError: attachLora: layer "v": lora-ga: the gradient \\[${zero}\\] is zero`),
    );
  }
});

/** A `[dOut, dIn]` weight of rank `k`: a product of Gaussian factors, accumulated in float64. */
function lowRank(rng: TestRng, dOut: number, dIn: number, k: number): F {
  const u = rng.normals(dOut * k);
  const v = rng.normals(k * dIn);
  const w = new Float32Array(dOut * dIn);
  for (let i = 0; i < dOut; i++) {
    for (let j = 0; j < dIn; j++) {
      let acc = 0;
      for (let c = 0; c < k; c++) acc += u[i * k + c] * v[c * dIn + j];
      w[i * dIn + j] = acc;
    }
  }
  return tensor(w, { shape: [dOut, dIn] }) as unknown as F;
}

Deno.test("PiSSA and MiLoRA warn when the adapter starts from singular values the weight does not have", async () => {
  const rng = new TestRng(904);
  const warnings: string[] = [];
  const original = console.warn;
  console.warn = (...args: unknown[]) => void warnings.push(args.join(" "));
  try {
    const w = lowRank(rng, 32, 24, 3);
    await pissaInit(w, { rank: 3 });
    await pissaInit(rand(rng, [32, 24]), { rank: 8 });
    await miloraInit(rand(rng, [32, 24]), { rank: 8 });
    deepEqual(warnings, [], "no warning where every singular value used is non-zero");
    const p = await pissaInit(w, { rank: 5 });
    const m = await miloraInit(w, { rank: 2 });
    deepEqual(warnings, [
      "pissa: 2 of the 5 singular values the adapter starts from are numerically zero (the [32,24] weight has " +
      "rank 3): those rows of A and columns of B start at ≈ 0 and get almost no gradient",
      "milora: 2 of the 2 singular values the adapter starts from are numerically zero (the [32,24] weight has " +
      "rank 3): those rows of A and columns of B start at ≈ 0 and get almost no gradient",
    ]);
    // The split itself is still the method's: base + s·B·A = W.
    const want = (await w.data()) as Float32Array;
    for (const r of [p, m]) {
      const got = (await r.base!.add(r.b.matmul(r.a).mul(r.scale)).data()) as Float32Array;
      const norm = Math.sqrt(want.reduce((s, x) => s + x * x, 0));
      assertClose(got, want, { atol: 1e-5 * norm, what: "base + s·B·A = W" });
    }
  } finally {
    console.warn = original;
  }
});
