/**
 * Initialisations at the edges a researcher hits: a rank or data that cannot work for one layer of several, data
 * without variance, a zero gradient, a weight of lower rank than the adapter. Each either gives the method's result
 * or a clear error naming the layer and the values.
 */
import { deepEqual, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import {
  attachLora,
  cntloraInit,
  cordaInit,
  loftqInit,
  loraGaInit,
  loramInit,
  miloraInit,
  oloraInit,
  pissaInit,
} from "../../lib/init/mod.ts";
import { nf4Qdq } from "../../lib/linalg/nf4.ts";
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
      "rank 3): A and B both start at ≈ 0, and as the gradient of each is scaled by the other, the adapter does " +
      "not train",
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

/** Runs `f`, returning what it printed with `console.warn`, one string per call. */
async function warnings(f: () => Promise<unknown>): Promise<string[]> {
  const got: string[] = [];
  const original = console.warn;
  console.warn = (...args: unknown[]) => void got.push(args.join(" "));
  try {
    await f();
  } finally {
    console.warn = original;
  }
  return got;
}

const DEAD =
  "A and B both start at ≈ 0, and as the gradient of each is scaled by the other, the adapter does not train";

Deno.test("an init whose A and B both start at zero warns once per layer; a usable one does not", async () => {
  const rng = new TestRng(905);
  const [dOut, dIn, r] = [24, 16, 2];
  const zero = () => tensor(new Float32Array(dOut * dIn), { shape: [dOut, dIn] }) as unknown as F;
  const acts = () => rand(rng, [2, 20, dIn]);
  const zeroActs = tensor(new Float32Array(2 * 20 * dIn), { shape: [2, 20, dIn] }) as unknown as F;
  // A weight exactly on the NF4 grid: LoftQ has no quantisation error left to correct.
  const onGrid = await nf4Qdq(rand(rng, [dOut, dIn]));
  const cases: [string, () => Promise<{ a: F; b: F }>, string][] = [
    ["pissa", () => pissaInit(zero(), { rank: r }), `the [${dOut},${dIn}] weight has rank 0`],
    ["pissa", () => pissaInit(zero(), { rank: r, niter: 2 }), `the [${dOut},${dIn}] weight has rank 0`],
    ["milora", () => miloraInit(zero(), { rank: r }), `the [${dOut},${dIn}] weight has rank 0`],
    [
      "corda",
      () => cordaInit(zero(), { rank: r, activations: acts() }),
      `W·C_fix for the [${dOut},${dIn}] weight has rank 0`,
    ],
    ...[zero(), onGrid].map((w): [string, () => Promise<{ a: F; b: F }>, string] => [
      "loftq",
      () => loftqInit(w, { rank: r, iterations: 2 }),
      `the quantisation error W − Q of the [${dOut},${dIn}] weight has rank 0`,
    ]),
    [
      "loram",
      () => loramInit(zero(), { rank: r }),
      `B·A = β²·Φ_n·Φ_mᵀ, with β⁴ ∝ Q[r]·‖W‖_F² (Q[r] = ${
        (Math.log(r) / Math.log(dIn)).toPrecision(4)
      }) = 0 ` +
      `for the [${dOut},${dIn}] weight, has rank 0`,
    ],
    [
      "loram",
      () => loramInit(rand(rng, [dOut, dIn]), { rank: r, gain: 0 }),
      `B·A = β²·Φ_n·Φ_mᵀ, with β⁴ ∝ Q[r]·‖W‖_F² (Q[r] = 0.000) = 0 for the [${dOut},${dIn}] weight, has rank 0`,
    ],
    [
      "lora-ga",
      () => loraGaInit(zero(), { rank: r, grads: rand(rng, [dOut, dIn]), scale: "weightS" }),
      `the [${dOut},${dIn}] weight has rank 0`,
    ],
    ...[[zero(), acts()], [zero(), zeroActs]].flatMap(([w, x]) =>
      (["x", "s", "sh"] as const).map((mode): [string, () => Promise<{ a: F; b: F }>, string] => [
        "cntlora",
        () => cntloraInit(w, { rank: r, mode, activations: x }),
        `the update ΔW = W_est − W of the [${dOut},${dIn}] weight has rank 0`,
      ])
    ),
  ];
  for (const [method, run, of] of cases) {
    let res: { a: F; b: F } | undefined;
    const got = await warnings(async () => void (res = await run()));
    deepEqual(got, [
      `${method}: ${r} of the ${r} singular values the adapter starts from are numerically zero (${of}): ${DEAD}`,
    ]);
    for (const x of [res!.a, res!.b]) {
      const v = (await x.data()) as Float32Array;
      deepEqual(v.every((e) => Math.abs(e) < 1e-6), true, `${method}: the warned factors are ≈ 0`);
    }
  }
  // OLoRA (A = R = 0, B = Q orthonormal), CNTLoRA with p = 0 or 1 or the QR split keep one factor non-zero: that
  // trains like plain LoRA.
  const usable: [string, () => Promise<{ a: F; b: F }>][] = [
    ["olora", () => oloraInit(zero(), { rank: r })],
    ["cntlora p = 0", () => cntloraInit(zero(), { rank: r, p: 0, activations: acts() })],
    ["cntlora p = 1", () => cntloraInit(zero(), { rank: r, p: 1, activations: acts() })],
    ["cntlora qr", () => cntloraInit(zero(), { rank: r, split: "qr", activations: acts() })],
    // A fresh random weight and data: nothing is zero.
    ["pissa", () => pissaInit(rand(rng, [dOut, dIn]), { rank: r })],
    ["milora", () => miloraInit(rand(rng, [dOut, dIn]), { rank: r })],
    ["corda", () => cordaInit(rand(rng, [dOut, dIn]), { rank: r, mode: "kpm", activations: acts() })],
    ["loftq", () => loftqInit(rand(rng, [dOut, dIn]), { rank: r, iterations: 2 })],
    ["loram", () => loramInit(rand(rng, [dOut, dIn]), { rank: r })],
    [
      "lora-ga",
      () => loraGaInit(rand(rng, [dOut, dIn]), { rank: r, grads: rand(rng, [dOut, dIn]), scale: "weightS" }),
    ],
    ["cntlora", () => cntloraInit(rand(rng, [dOut, dIn]), { rank: r, activations: acts() })],
  ];
  for (const [what, run] of usable) {
    let res: { a: F; b: F } | undefined;
    deepEqual(await warnings(async () => void (res = await run())), [], what);
    const norms = await Promise.all(
      [res!.a, res!.b].map(async (x) => Math.max(...((await x.data()) as Float32Array).map(Math.abs))),
    );
    deepEqual(norms.some((n) => n > 0.1), true, `${what}: a factor is not zero`);
  }
  // LoRAM's exact gain is 0/0 for an all-zero weight: refused rather than NaN factors.
  await rejects(
    loramInit(zero(), { rank: r, gain: "exact" }),
    /^RangeError: loram: the exact gain .* is NaN for the \[24,16\] weight/,
  );
});
