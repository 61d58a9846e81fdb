/**
 * A NaN or an infinity in the weight or the calibration data an initialisation computes from is refused with a
 * message naming the tensor, where an SVD or a PCA could lose it and return a finite, wrong init.
 */
import { rejects } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { type F32, getInitMethod, type LayerData } from "../../lib/init/mod.ts";
import { NonFiniteWeightsError } from "../../lib/nn/finite.ts";
import { TestRng } from "../_helpers.ts";

const [D_OUT, D_IN] = [12, 8];

function make(rng: TestRng, shape: number[], bad?: number): F32 {
  const data = rng.normals(shape.reduce((a, b) => a * b, 1));
  if (bad !== undefined) data[5] = bad;
  return tensor(data, { shape }) as unknown as F32;
}

/** The tensors each method computes from, besides those it only takes the shape of. */
const INPUTS: Record<string, readonly ("weight" | keyof LayerData)[]> = {
  pissa: ["weight"],
  milora: ["weight"],
  olora: ["weight"],
  loftq: ["weight"],
  loram: ["weight"],
  corda: ["weight", "activations"],
  eva: ["activations"],
  "lora-ga": ["weight", "grads"],
  cntlora: ["weight", "activations"],
  "gap-init": ["gap", "zText"],
};

for (const [name, keys] of Object.entries(INPUTS)) {
  Deno.test(`init ${name}: a NaN or an infinity in its inputs is refused, naming the tensor`, async () => {
    const method = getInitMethod(name);
    for (const key of keys) {
      for (const bad of [NaN, Infinity]) {
        const rng = new TestRng(70);
        const at = (k: string) => (k === key ? bad : undefined);
        const weight = make(rng, [D_OUT, D_IN], at("weight"));
        const data: LayerData = key === "zText"
          ? { zText: make(rng, [5, D_OUT], bad), zVision: make(rng, [5, D_OUT]) }
          : {
            activations: make(rng, [40, D_IN], at("activations")),
            grads: make(rng, [D_OUT, D_IN], at("grads")),
            gap: make(rng, [D_OUT], at("gap")),
          };
        // EVA and CNTLoRA run their multi-layer form on one layer named "layer".
        const where = name === "eva" || name === "cntlora" ? `layer.${key}` : key;
        await rejects(
          method.init(weight, { rank: 2, ...data }),
          (e: Error) =>
            e instanceof NonFiniteWeightsError &&
            e.message.startsWith(`${name}: NaN or infinite values in "${where}" [`) &&
            e.message.includes(`the first, element 5, is ${bad}`),
          `${name}: ${bad} in ${key}`,
        );
      }
    }
  });
}
