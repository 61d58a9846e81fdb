/**
 * Initialisations at the edges a researcher hits: a rank or data that cannot work for one layer of several, data
 * without variance, a zero gradient, a weight of lower rank than the adapter. Each either gives the method's result
 * or a clear error naming the layer and the values.
 */
import { rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { NonFiniteWeightsError } from "../../lib/nn/finite.ts";
import { TestRng } from "../_helpers.ts";

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
  const row = rng.normals(16);
  const cases: [string, Float32Array][] = [
    ["constant", new Float32Array(40 * 16).fill(rng.normal())],
    ["zero", new Float32Array(40 * 16)],
    ["one row repeated", Float32Array.from({ length: 40 * 16 }, (_, i) => row[i % 16])],
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
