/**
 * Options of the initialisations: the registry and the exported functions refuse an unknown key or a bad value with
 * an `OptionsError` naming the method, the key and the value.
 */
import { ok, rejects } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { Linear } from "../../lib/nn/linear.ts";
import {
  attachLora,
  cntloraEstimate,
  cntloraInit,
  cntloraInitLayers,
  cntloraTarget,
  type CntLoraTargetOptions,
  cordaInit,
  evaInit,
  evaInitLayers,
  type F32,
  gapInit,
  gaussianInit,
  getInitMethod,
  initBInit,
  loftqInit,
  loraGaInit,
  loraInit,
  loramInit,
  miloraInit,
  oloraInit,
  pissaInit,
} from "../../lib/init/mod.ts";
import { OptionsError } from "../../lib/options.ts";
import { TestRng } from "../_helpers.ts";

function matrix(rng: TestRng, m: number, n: number): F32 {
  return tensor(rng.normals(m * n), { shape: [m, n] }) as unknown as F32;
}

Deno.test("registry: an unknown or bad method option is an OptionsError naming the key and the value", async () => {
  const w = matrix(new TestRng(1), 8, 6);
  const pissa = getInitMethod("pissa");
  await rejects(pissa.init(w, { rank: 2, foo: 1 }), OptionsError);
  await rejects(pissa.init(w, { rank: 2, foo: 1 }), /^OptionsError: pissa: unknown option "foo"$/);
  await rejects(pissa.init(w, { rank: 2, niter: -1 }), /pissa: option "niter" must be >= 0, got -1/);
  await rejects(
    getInitMethod("loftq").init(w, { rank: 2, blockSize: 0 }),
    /loftq: option "blockSize" must be >= 1, got 0/,
  );
});

Deno.test("every exported init function checks all its options strictly, with the registry's schema", async () => {
  const rng = new TestRng(2);
  const w = matrix(rng, 24, 16);
  const grads = matrix(rng, 24, 16);
  const layers = [{ name: "l", weight: w, data: { activations: matrix(rng, 40, 16) } }];
  const bad = { rank: 2, foo: 1 } as Record<string, unknown>;
  const calls: [string, () => Promise<unknown>][] = [
    ["lora", () => loraInit(w, bad)],
    ["gaussian", () => gaussianInit(w, bad)],
    ["init-b", () => initBInit(w, bad)],
    ["pissa", () => pissaInit(w, bad)],
    ["milora", () => miloraInit(w, bad)],
    ["olora", () => oloraInit(w, bad)],
    ["loftq", () => loftqInit(w, bad)],
    ["loram", () => loramInit(w, bad)],
    ["corda", () => cordaInit(w, bad)],
    ["eva", () => evaInit(w, bad)],
    ["eva", () => evaInitLayers(layers, bad)],
    ["lora-ga", () => loraGaInit(w, bad)],
    ["cntlora", () => cntloraInit(w, bad)],
    ["cntlora", () => cntloraInitLayers(layers, bad)],
    ["gap-init", () => gapInit(w, bad)],
  ];
  for (const [name, call] of calls) {
    await rejects(
      async () => await call(),
      (e: Error) => e instanceof OptionsError && e.message === `${name}: unknown option "foo"`,
    );
  }
  // A misspelt option would otherwise run the default: the exact SVD, one LoftQ iteration.
  await rejects(
    pissaInit(w, { rank: 2, niters: 4 } as object),
    /^OptionsError: pissa: unknown option "niters"$/,
  );
  await rejects(
    loftqInit(w, { rank: 2, iters: 5 } as object),
    /^OptionsError: loftq: unknown option "iters"$/,
  );
  // Calibration data a method does not take is not one of its options.
  await rejects(
    pissaInit(w, { rank: 2, activations: grads } as object),
    /pissa: unknown option "activations"/,
  );
  // Values outside the schema, each of which changed the math.
  await rejects(
    loraGaInit(w, { rank: 2, grads, variant: "PEFT" as "peft" }),
    /lora-ga: option "variant" must be one of "official", "peft", got "PEFT"/,
  );
  await rejects(
    loraGaInit(w, { rank: 2, grads, gamma: Infinity }),
    /lora-ga: option "gamma" must be a finite number, got Infinity/,
  );
  await rejects(
    async () => await initBInit(w, { rank: 2, distribution: "gaussian" as "normal" }),
    /init-b: option "distribution" must be one of "uniform", "normal", got "gaussian"/,
  );
  await rejects(
    async () => await initBInit(w, { rank: 2, distribution: "normal", std: -1 }),
    /option "std" must be > 0, got -1/,
  );
  await rejects(
    async () => await initBInit(w, { rank: 2, distribution: "normal", std: NaN }),
    /option "std" must be a finite number, got NaN/,
  );
  await rejects(
    gapInit(w, { rank: 2, gap: matrix(rng, 1, 24).reshape([24]) as F32, complement: "random" as "zeros" }),
    /gap-init: option "complement" must be one of "zeros", "orthonormal", got "random"/,
  );
});

Deno.test("an option that the other options make unused is refused, never ignored", async () => {
  const rng = new TestRng(3);
  const w = matrix(rng, 24, 16);
  // Init[B]'s std is the normal distribution's; with the default uniform one it changed nothing.
  const std =
    /init-b: option "std" \(0\.01\) is the standard deviation of distribution "normal"; it does not apply to distribution "uniform"/;
  await rejects(async () => await initBInit(w, { rank: 2, std: 0.01 }), std);
  await rejects(getInitMethod("init-b").init(w, { rank: 2, std: 0.01 }), std);
  const normal = await initBInit(w, { rank: 2, distribution: "normal", std: 0.01 });
  const b = (await normal.b.data()) as Float32Array;
  // 48 draws of N(0, 0.01²): the largest is below 5σ.
  ok(b.every((v) => Math.abs(v) < 0.05) && b.some((v) => v !== 0), "std reaches the normal draw");
  // LoRAM's tracking mode sets β from the reference init: a gain would not be used.
  await rejects(
    loramInit(w, { rank: 2, gain: 0.9, trackingMode: "pissa" }),
    /loram: option "gain" \(0\.9\) is not used with trackingMode "pissa"/,
  );
  await rejects(getInitMethod("loram").init(w, { rank: 2, gain: "exact", trackingMode: "olora" }), /"gain"/);
  // Gap-Init takes the gap or the paired representations it is the mean of, not both.
  const gap = matrix(rng, 1, 24).reshape([24]) as F32;
  const [zText, zVision] = [matrix(rng, 3, 24), matrix(rng, 3, 24)];
  await rejects(
    gapInit(w, { rank: 1, gap, zText, zVision }),
    /gap-init: the gap is given both as "gap" and as "zText"\/"zVision"; give one of them/,
  );
  await rejects(
    gapInit(w, { rank: 1, gap, normalize: true }),
    /gap-init: option "normalize" \(true\) applies to each zText − zVision pair/,
  );
});

Deno.test("attachLora: a common option or layer data inside initOptions is refused", async () => {
  const rng = new TestRng(4);
  const net = () => ({ fc1: Linear.fromWeights(matrix(rng, 6, 4)) });
  const activations = matrix(rng, 20, 4);
  for (const init of ["pissa", "eva"]) {
    await rejects(
      attachLora(net(), {
        targetModules: ["fc1"],
        init,
        rank: 2,
        initOptions: { rank: 3 },
        data: { fc1: { activations } },
      }),
      /^OptionsError: attachLora: option "initOptions.rank" \(3\) is not a method option: set rank on the config itself$/,
    );
  }
  await rejects(
    attachLora(net(), { targetModules: ["fc1"], init: "eva", rank: 2, initOptions: { activations } }),
    /option "initOptions.activations" \(a f32 tensor \[20, 4\]\) is calibration data: give it per layer in data/,
  );
});

Deno.test("attachLora refuses data for a path that is no target, naming it and the targets", async () => {
  const rng = new TestRng(5);
  const net = () => ({
    fc1: Linear.fromWeights(matrix(rng, 6, 4)),
    fc2: Linear.fromWeights(matrix(rng, 6, 6)),
  });
  const fc1 = { activations: matrix(rng, 20, 4) };
  const fc2 = { activations: matrix(rng, 20, 6) };
  // Data collected for more layers than are adapted, and a misspelt path beside a right one: both were dropped.
  await rejects(
    attachLora(net(), { targetModules: ["fc1"], init: "eva", rank: 2, data: { fc1, fc2 } }),
    (e: Error) =>
      e instanceof OptionsError &&
      e.message ===
        'attachLora: option "data" has data for "fc2", which is no target module (the targets: "fc1")',
  );
  await rejects(
    attachLora(net(), {
      targetModules: ["fc1", "fc2"],
      init: "pissa",
      rank: 2,
      data: { fc1, fc02: fc2, x: fc2 },
    }),
    /^OptionsError: attachLora: option "data" has data for "fc02", "x", which are no target modules \(the targets: "fc1", "fc2"\)$/,
  );
  // Data for the targets only, of kinds the method may not read, is taken.
  const res = await attachLora(net(), {
    targetModules: ["fc1", "fc2"],
    init: "pissa",
    rank: 2,
    data: { fc1, fc2 },
  });
  ok(res.layers.join() === "fc1,fc2");
});

Deno.test("cntloraTarget and cntloraEstimate take the target's options only, checked", async () => {
  const rng = new TestRng(919);
  const w = matrix(rng, 8, 6);
  const x = matrix(rng, 20, 6);
  const opts = (o: Record<string, unknown>) => o as CntLoraTargetOptions;
  await rejects(
    () => cntloraTarget(w, x, opts({ mode: "x", split: "qr" })),
    /cntloraTarget: unknown option "split"/,
  );
  await rejects(() => cntloraTarget(w, x, opts({ mode: "cross" })), /cntloraTarget: option "mode"/);
  await rejects(() => cntloraEstimate(w, x, opts({ gram: "max" })), /cntloraEstimate: option "gram"/);
  // Valid target options still work, and an init with other options passes only these on.
  ok((await cntloraTarget(w, x, { mode: "s", gram: "mean" })).shape.join() === "8,6");
  const init = await cntloraInit(w, { rank: 2, activations: x, split: "qr", mode: "sh", c: 0.5 });
  ok(init.a.shape.join() === "2,6");
});
