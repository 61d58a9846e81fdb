/**
 * Child of `launch_groups_test.ts` (run with `TESSERA_LAUNCH_POLICY` set): seven LoRA steps of a two-layer
 * transformer on WebGPU, eager and compiled, printed as JSON with the device's launch policy and description.
 */
import { deviceLine, getWebGPU, type Shape, type Tensor, tensor } from "../../mod.ts";
import { AdamW, crossEntropy, loadParameters, namedParameters } from "../../lib/nn/mod.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../../lib/lora/mod.ts";
import { Trainer } from "../../lib/train/mod.ts";
import { TinyLm } from "../train/_models.ts";
import { TestRng } from "../_helpers.ts";

type I = Tensor<Shape, "i32">;
type F = Tensor<Shape, "f32">;

const seed = Number(Deno.args[0]);
const be = await getWebGPU();
const runs = [];
for (const compile of [false, true]) {
  const cfg = { vocab: 29, dim: 24, layers: 2, nHeads: 6, nKvHeads: 2, hiddenDim: 40 };
  const ids = (step: number) => {
    const r = new TestRng(seed + step);
    return Int32Array.from({ length: 3 * 11 }, () => r.int(0, cfg.vocab - 1));
  };
  const model = new TinyLm(cfg, seed % 1000, "webgpu");
  await attachLora(model, { targetModules: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"], rank: 4, seed });
  // B starts at zero: a random B makes every adapter's path count from the first step.
  const r = new TestRng(seed + 1);
  const bs = namedParameters(model).filter(([path]) => path.endsWith("lora_B.weight"));
  loadParameters(
    model,
    Object.fromEntries(
      bs.map(([path, p]) => [path, tensor(r.normals(p.size, 0.1), { shape: p.shape, device: "webgpu" })]),
    ),
    { strict: true },
  );
  const t = new Trainer({
    model,
    optimizer: new AdamW(model, { lr: 1e-2, trainable: LORA_TRAINABLE }),
    batch: (step) => ({
      x: tensor(ids(step), { shape: [3, 11], dtype: "i32", device: "webgpu" }),
      y: tensor(ids(step + 1000), { shape: [3, 11], dtype: "i32", device: "webgpu" }),
    }),
    loss: (m, b) => crossEntropy(m.forward(b.x as I) as F, b.y as I),
    steps: 7,
    readEvery: 3,
    progress: false,
    compile,
  });
  const records = await t.run();
  const state: Record<string, number[]> = {};
  for (const [p, v] of namedParameters(model)) state[p] = Array.from(await v.data() as Float32Array);
  runs.push({ records, state, replayed: t.compileStats.replayed });
  t.close();
}
console.log(JSON.stringify({
  policy: be.launchPolicy.name,
  rowKernels: be.rowKernels,
  description: be.description,
  deviceLine: await deviceLine("webgpu"),
  runs,
}));
