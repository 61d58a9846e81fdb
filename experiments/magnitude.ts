/**
 * exp:magnitude — LoRAM's Section 2 ("The Primacy of Magnitude in Low-Rank Adaptation", Zhang et al., arXiv
 * 2507.06558) on a 5-layer MLP (width 400, LoRA rank 25 on every layer, α = r so s = 1) fine-tuned by regression
 * onto a fixed teacher network:
 *
 * (1) Proposition 1: are the learning rate η, the scaling factor s = α/r and the initialisation magnitude of A, B
 *     re-parametrisations of each other? (2) Proposition 2: do ‖A‖ and ‖B‖ stay nearly constant while the update
 *     ‖ΔW‖ grows far slower than full fine-tuning's ‖W − W₀‖, and faster with a larger initialisation magnitude?
 *
 *   deno task exp:magnitude            # default size (width 400, rank 25, 300 steps, seeds 0..4; Prop. 1 at
 *                                      # width 64, rank 8, 100 steps on the float64 reference backend)
 *   deno task exp:magnitude --quick    # width 96, rank 8, 60 steps, one seed
 *
 * The invariances (derived here; W₀ frozen, LoRA layer y = W_res·x + s·B·A·x with W_res = W₀ − s·B₀·A₀, loss
 * L(W) with G = ∂L/∂W at W = W_res + s·B·A, so ∂L/∂B = s·G·Aᵀ and ∂L/∂A = s·Bᵀ·G):
 *
 *   SGD:  B ← B − η·s·G·Aᵀ,  A ← A − η·s·Bᵀ·G. Substitute A' = a·A, B' = b·B, s' = s/(a·b) (same W at every
 *         step, hence the same G). The B-update stays consistent iff η'·s'·a = η·s·b and the A-update iff
 *         η'·s'·b = η·s·a, so a = b = c and η'·s' = η·s:
 *             (η, s, A₀, B₀)  ≡  (c²·η, s/c², c·A₀, c·B₀)     for any c > 0.
 *         Two invariants remain: η·s and s·c² (the magnitude of s·B₀·A₀, which is offset into W_res).
 *   Adam: the update −η·m̂/(√v̂ + ε) does not change when the gradient is multiplied by k > 0 if ε is multiplied by k
 *         too. With A' = c·A, B' = c·B, s' = s/c² the gradients are ∂L/∂A' = (s/c)·Bᵀ·G = (1/c)·∂L/∂A (and the same
 *         for B), so the normalised step is unchanged and the parameter step must be c times larger:
 *             (η, s, A₀, B₀, ε)  ≡  (c·η, s/c², c·A₀, c·B₀, ε/c)   (ε/c only matters where √v̂ ~ ε).
 *         So under Adam the learning rate trades linearly with the initialisation magnitude, under SGD
 *         quadratically; and the SGD rule applied to Adam (or vice versa) breaks the equivalence.
 *
 * With separate learning rates for A and B (A' = a·A, B' = b·B, s' = s/(a·b)): SGD needs η_A' = a²·η_A, η_B' = b²·η_B;
 * Adam η_A' = a·η_A, η_B' = b·η_B (ε/a, ε/b). Under Noise & Zeros (B₀ = 0, so b rescales nothing at the start) a = 1,
 * b = 1/k turns a k-times larger s into B's learning rate: LoRA+'s η_B·k ≡ α·k under Adam, η_B·k² ≡ α·k under SGD.
 *
 * The Prop. 1 runs use the reference CPU backend by default (every kernel computed in float64, deterministic, stored
 * as float32). With c a power of two every rescaling is exact in float32, so those pairs should agree to the bit (up to
 * non-deterministic GPU reductions); c = 3 shows the float32 rounding noise. Weight decay and gradient clipping are
 * off (both break the invariance). Writes results/magnitude/<timestamp>/: config.yaml, metrics.jsonl, runs/*.json
 * (`--resume <dir>` reuses finished ones), summary.json, summary.md and PNG + SVG plots.
 *
 * @module
 */
import { z } from "../deps.ts";
import {
  Adam,
  asF32,
  deriveSeed,
  type DeviceName,
  epochIndices,
  type F32,
  Linear,
  LORA_TRAINABLE,
  LoraLinear,
  loramInit,
  loramLogGain,
  Mlp,
  mse,
  type Optimizer,
  realize,
  replaceModule,
  Rng,
  SGD,
  type Tensor,
  tensor,
  Trainer,
  writeFileAtomicSync,
} from "../mod.ts";
import {
  accumulatedText,
  type Claim,
  deviceField,
  distinctList,
  formatAgainst,
  formatMeanStd,
  formatSpreadEnds,
  isNoSpread,
  LAST_TENTH_LABEL,
  lastTenthMean,
  lastTenthText,
  linePlot,
  type LineSeries,
  meanCurves,
  type MeanStd,
  meanStd,
  NO_SPREAD,
  pairedSpreadVerdict,
  resumeField,
  resumeOrRun,
  runMain,
  savedNumber,
  savedNumbers,
  startExperiment,
  type Verdict,
  writeReport,
} from "../lab/mod.ts";

type Scalar = Tensor<[], "f32">;

/** Prop. 1: the largest relative loss difference an equivalent run may show (float64 runs agree far closer). */
const EQUIV = 1e-4;
/** Prop. 1: the smallest relative loss difference that counts as a different trajectory. */
const BROKEN = 1e-2;

/**
 * The verdict on Prop. 1 for one group from the relative loss differences to the reference of the runs the rule
 * calls equivalent (`eq`) and of those that break it (`br`): reproduced when every equivalent run is below
 * {@link EQUIV} and every breaking one above {@link BROKEN}; not reproduced when an equivalent run is above
 * {@link BROKEN} (it is clearly not equivalent, whatever the breaking runs do) or when neither part holds;
 * inconclusive otherwise.
 */
export function prop1Verdict(eq: readonly number[], br: readonly number[]): Verdict {
  const eqOk = eq.every((r) => r < EQUIV);
  const brOk = br.every((r) => r > BROKEN);
  if (eqOk && brOk) return "reproduced";
  if (eq.some((r) => r > BROKEN) || (!eqOk && !brOk)) return "not reproduced";
  return "inconclusive";
}

/** A relative loss difference of Prop. 1 as text, on the same side of {@link EQUIV} and {@link BROKEN} as its value. */
function formatRel(rel: number): string {
  return formatAgainst(rel, [EQUIV, BROKEN], 3);
}

/**
 * Prop. 1 as a claim for one group of runs: its rule, the relative loss differences as evidence and
 * {@link prop1Verdict}'s verdict on them.
 *
 * @param eq The runs the rule calls equivalent, each with its largest relative loss difference to its reference.
 * @param br The runs that break the rule, likewise.
 * @param context The group's name, the number of seeds the differences are the largest over, and the device.
 * @returns The claim.
 */
export function prop1Claim(
  eq: readonly { label: string; rel: number }[],
  br: readonly { label: string; rel: number }[],
  { group, seeds, device }: { group: string; seeds: number; device: string },
): Claim {
  return {
    claim:
      `Prop. 1 (${group}): the runs the rule calls equivalent follow the reference's loss trajectory, and ` +
      `the runs that break it do not.`,
    rule:
      `per seed, the max over steps of |ΔL| divided by that seed's reference's max |L| (same task, data ` +
      `order and adapter bases per seed), then the largest over ${seeds} seeds; reproduced when every equivalent run is below ${EQUIV} and ` +
      `every rule-breaking run above ${BROKEN}; not reproduced when an equivalent run is above ${BROKEN} (clearly ` +
      `not equivalent) or neither holds; inconclusive otherwise.`,
    evidence: `equivalent: ${eq.map((r) => `${r.label} ${formatRel(r.rel)}`).join(", ")}; breaking: ${
      br.map((r) => `${r.label} ${formatRel(r.rel)}`).join(", ")
    } (device ${device}).`,
    verdict: prop1Verdict(eq.map((r) => r.rel), br.map((r) => r.rel)),
  };
}

// ----- configuration -----

const Config = z.object({
  quick: z.boolean().default(false).describe("small sizes: a few minutes on a 2-core CPU"),
  seeds: distinctList(z.int(), {
    default: [0, 1, 2, 3, 4],
    description: "seeds (teacher, data, adapter bases)",
  }),
  width: z.number().int().positive().default(400).describe("MLP width (every layer is width × width)"),
  layers: z.number().int().min(2).default(5).describe("number of linear layers"),
  rank: z.number().int().positive().default(25).describe("LoRA rank r"),
  alpha: z.number().positive().optional().describe("lora_alpha (default r, so s = 1 as in the paper)"),
  steps: z.number().int().positive().default(300).describe("training steps"),
  batchSize: z.number().int().positive().default(64).describe("examples per batch"),
  // Optional rather than a default of 1, so that the configurations of runs from before it still resume.
  accumulate: z.number().int().positive().optional().describe(
    "batches per optimiser step (gradient accumulation; default 1): the step's gradient is their mean",
  ),
  examples: z.number().int().positive().default(4096).describe("training examples drawn from the teacher"),
  teacherRank: z.number().int().positive().default(8).describe("rank of the teacher's shift of each layer"),
  teacherShift: z.number().positive().default(0.5).describe("‖teacher − base‖_F / ‖base‖_F per layer"),
  sgdLr: z.number().positive().default(0.05).describe("SGD learning rate of the reference runs"),
  adamLr: z.number().positive().default(1e-3).describe("Adam learning rate of the reference runs"),
  fullLr: z.number().positive().optional().describe(
    "Adam learning rate of full fine-tuning (default: adamLr)",
  ),
  prop1Gain: z.number().positive().default(0.03).describe(
    "Prop. 1: initial ν[s·B₀·A₀]/ν[W] (LoRAM's fixed gain) of the reference runs",
  ),
  gains: distinctList(z.number().positive(), {
    default: [0.001, 0.03, 0.5],
    description:
      "Prop. 2: init magnitudes as LoRAM gains Q = ν[s·B₀·A₀]/ν[W] (the log gain at r = 25, K = 400 is 0.537)",
  }),
  readEvery: z.number().int().positive().default(25).describe("metrics read back every this many steps"),
  prop1Device: z.enum(["auto", "webgpu", "wasm", "cpu"]).default("cpu").describe(
    "device of the Prop. 1 runs (default cpu: the reference backend computes every kernel in float64, " +
      "deterministically, so rounding noise cannot decide an exact invariance)",
  ),
  prop1Width: z.number().int().positive().default(64).describe("MLP width of the Prop. 1 runs"),
  prop1Rank: z.number().int().positive().default(8).describe("LoRA rank of the Prop. 1 runs"),
  prop1Steps: z.number().int().positive().default(100).describe("training steps of the Prop. 1 runs"),
  resume: resumeField(),
  device: deviceField(),
});
type Config = z.infer<typeof Config>;

const QUICK = {
  seeds: [0],
  width: 96,
  rank: 8,
  steps: 60,
  batchSize: 32,
  examples: 1024,
  teacherRank: 4,
  readEvery: 30,
};

// ----- the task: a base MLP and a teacher that differs from it by a low-rank shift per layer -----

/** Host copies of the base MLP's weights (He-normal, no biases) and the teacher's data set. */
interface Task {
  base: Float32Array[];
  x: Float32Array;
  y: Float32Array;
}

function gaussian(rng: Rng, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

async function makeTask(cfg: Config, seed: number, device: DeviceName): Promise<Task> {
  const w = cfg.width;
  const rng = new Rng(deriveSeed(seed, "magnitude-task"));
  const base: Float32Array[] = [];
  const teacher: Float32Array[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const wb = gaussian(rng, w * w, Math.sqrt(2 / w));
    const u = gaussian(rng, w * cfg.teacherRank, 1);
    const v = gaussian(rng, w * cfg.teacherRank, 1);
    const shift = new Float64Array(w * w);
    for (let i = 0; i < w; i++) {
      for (let j = 0; j < w; j++) {
        let acc = 0;
        for (let k = 0; k < cfg.teacherRank; k++) {
          acc += u[i * cfg.teacherRank + k] * v[j * cfg.teacherRank + k];
        }
        shift[i * w + j] = acc;
      }
    }
    const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, t) => s + t * t, 0));
    const f = (cfg.teacherShift * norm(wb)) / norm(shift);
    base.push(wb);
    teacher.push(Float32Array.from(wb, (t, i) => t + f * shift[i]));
  }
  const x = gaussian(rng, cfg.examples * w, 1);
  const net = buildMlp(cfg, teacher, device);
  const y = await net.forward(tensor(x, { shape: [cfg.examples, w], device }) as F32).data() as Float32Array;
  return { base, x, y };
}

function buildMlp(cfg: Config, weights: Float32Array[], device: DeviceName): Mlp {
  const w = cfg.width;
  const mlp = new Mlp(new Array(cfg.layers + 1).fill(w), { seed: 0, device });
  weights.forEach((data, l) => {
    replaceModule(mlp, `layers.${l}`, Linear.fromWeights(tensor(data, { shape: [w, w], device }) as F32));
  });
  return mlp;
}

// ----- one run -----

/** How one run adapts the base MLP. */
interface RunSpec {
  /** Name in tables and plots. */
  label: string;
  /** LoRA (A, B trained) or full fine-tuning (every weight trained). */
  mode: "lora" | "full";
  optimizer: "sgd" | "adam";
  lr: number;
  /** LoRAM fixed gain of the reference init: ν[s·B₀·A₀] = gain·ν[W]. */
  gain: number;
  /** A₀ ← c·A₀ (and B₀ ← c·B₀ unless `cB` is set). */
  c: number;
  /** B₀ ← cB·B₀ (default c). */
  cB?: number;
  /** B₀ = 0 (Noise & Zeros with the reference A₀). */
  zeroB?: boolean;
  /** B's learning rate is `lrB` times `lr` (separate rates for A and B, as LoRA+). */
  lrB?: number;
  /** s ← s·sFactor. */
  sFactor: number;
  /** Adam's ε (default 1e-8). */
  eps?: number;
}

/** What a run records. */
interface RunResult {
  label: string;
  seed: number;
  losses: number[];
  /** Per step (index 0 = before training): √Σ_l ‖A_l‖², √Σ_l ‖B_l‖², √Σ_l ‖s·B_l·A_l‖², and the update's norm. */
  normA: number[];
  normB: number[];
  normBA: number[];
  /** √Σ_l ‖s·(B_l·A_l − B₀·A₀)‖² (LoRA) or √Σ_l ‖W_l − W₀_l‖² (full fine-tuning). */
  normUpdate: number[];
  seconds: number;
}

/** What runs/*.json holds, for validated reuse. */
const MAGNITUDE_RUN = z.object({
  label: z.string(),
  seed: z.int(),
  losses: savedNumbers({ min: 1 }),
  normA: savedNumbers(),
  normB: savedNumbers(),
  normBA: savedNumbers(),
  normUpdate: savedNumbers(),
  seconds: savedNumber(),
});

function sumNorms(parts: F32[]): Scalar {
  let total = parts[0].square().sum() as Scalar;
  for (const p of parts.slice(1)) total = total.add(p.square().sum()) as Scalar;
  return total.sqrt() as Scalar;
}

async function train(spec: RunSpec, seed: number, task: Task, cfg: Config, device: DeviceName) {
  const w = cfg.width;
  const model = buildMlp(cfg, task.base, device);
  const alpha = cfg.alpha ?? cfg.rank;
  const lora: LoraLinear[] = [];
  const start: { a: F32; b: F32; s: number }[] = [];
  const w0: F32[] = [];
  if (spec.mode === "lora") {
    for (let l = 0; l < cfg.layers; l++) {
      const layer = model.layers[l] as Linear;
      const init = await loramInit(asF32(layer.weight), {
        rank: cfg.rank,
        alpha,
        gain: spec.gain,
        basis: "random-orthogonal",
        seed: deriveSeed(seed, "adapter", l),
      });
      const a = init.a.mul(spec.c) as F32;
      const b = init.b.mul(spec.zeroB ? 0 : spec.cB ?? spec.c) as F32;
      const scale = init.scale * spec.sFactor;
      const base = asF32(layer.weight).sub(b.matmul(a).mul(scale)) as F32;
      await realize(a, b, base);
      // Frozen copies of A₀, B₀ for the update norm (the trained ones are replaced every step).
      const a0 = a.mul(1) as F32;
      const b0 = b.mul(1) as F32;
      await realize(a0, b0);
      start.push({ a: a0, b: b0, s: scale });
      for (const t of [init.a, init.b, init.base]) t?.dispose();
      const wrapped = LoraLinear.wrap(layer, { a, b, base, rank: cfg.rank, alpha, scale });
      replaceModule(model, `layers.${l}`, wrapped);
      lora.push(wrapped);
    }
  } else {
    for (const layer of model.layers) {
      const copy = (layer as Linear).weight.mul(1) as F32;
      await realize(copy);
      w0.push(copy);
    }
  }
  const trainable = spec.mode === "lora" ? LORA_TRAINABLE : /weight$/;
  const groups = spec.lrB === undefined
    ? undefined
    : [{ name: "B", params: /(^|\.)lora_B\.weight$/, lr: spec.lr * spec.lrB }];
  const opt: Optimizer = spec.optimizer === "sgd"
    ? new SGD(model, { lr: spec.lr, trainable, groups })
    : new Adam(model, { lr: spec.lr, trainable, eps: spec.eps ?? 1e-8, groups });
  const layersOf = (m: Mlp) => m.layers as LoraLinear[];
  const track: Record<string, (m: Mlp) => Tensor> = spec.mode === "lora"
    ? {
      A: (m) => sumNorms(layersOf(m).map((l) => l.lora_A.weight)),
      B: (m) => sumNorms(layersOf(m).map((l) => l.lora_B.weight)),
      BA: (m) =>
        sumNorms(layersOf(m).map((l) => l.lora_B.weight.matmul(l.lora_A.weight).mul(l.scale) as F32)),
      update: (m) =>
        sumNorms(
          layersOf(m).map((l, i) =>
            l.lora_B.weight.matmul(l.lora_A.weight).sub(start[i].b.matmul(start[i].a)).mul(l.scale) as F32
          ),
        ),
    }
    : { update: (m) => sumNorms(m.layers.map((l, i) => asF32((l as Linear).weight).sub(w0[i]) as F32)) };
  // Norms before the first step.
  const initial: Record<string, number> = {};
  for (const [k, f] of Object.entries(track)) initial[k] = await f(model).item() as number;
  const trainer = new Trainer({
    model,
    optimizer: opt,
    // With accumulate k, step s takes the seed's batches (s − 1)·k + 1 .. s·k.
    batch: (step, micro) => {
      const at = (step - 1) * (cfg.accumulate ?? 1) + micro + 1;
      const idx = epochIndices(cfg.examples, { batchSize: cfg.batchSize, seed, step: at });
      const xb = new Float32Array(cfg.batchSize * w);
      const yb = new Float32Array(cfg.batchSize * w);
      idx.forEach((i, r) => {
        xb.set(task.x.subarray(i * w, (i + 1) * w), r * w);
        yb.set(task.y.subarray(i * w, (i + 1) * w), r * w);
      });
      return {
        x: tensor(xb, { shape: [cfg.batchSize, w], device }),
        y: tensor(yb, { shape: [cfg.batchSize, w], device }),
      };
    },
    loss: (m, b) => mse(m.forward(b.x as F32) as F32, b.y as F32),
    steps: cfg.steps,
    accumulate: cfg.accumulate ?? 1,
    readEvery: cfg.readEvery,
    track,
    progress: Deno.stderr.isTerminal() ? `${spec.label} seed ${seed}` : false,
    seed,
  });
  const t0 = performance.now();
  const records = await trainer.run();
  const seconds = (performance.now() - t0) / 1000;
  for (const t of [...start.flatMap((s) => [s.a, s.b]), ...w0]) t.dispose();
  const series = (k: string) =>
    k in initial
      ? [initial[k], ...records.map((r) => r[`norm/${k}`])]
      : new Array(records.length + 1).fill(NaN);
  return {
    label: spec.label,
    seed,
    losses: records.map((r) => r.loss),
    normA: series("A"),
    normB: series("B"),
    normBA: series("BA"),
    normUpdate: series("update"),
    seconds,
  } satisfies RunResult;
}

// ----- the runs -----

/** The ε of the runs whose Adam invariance needs a per-group ε/a, ε/b: so small that no √v̂ it meets is near it. */
const EPS0 = 1e-30;

/** A Prop. 1 run: its spec, the run it must match (or differ from), and the group of its claim. */
interface Prop1Spec {
  spec: RunSpec;
  ref: string;
  expect: "equivalent" | "different";
  rule: string;
  group: string;
}

/**
 * Prop. 1 pairs: each run is compared with its reference. Besides the one-rate rules (c = a = b), the general form
 * with separate learning rates for A and B: with A' = a·A, B' = b·B, s' = s/(a·b), SGD needs η_A' = a²·η_A and
 * η_B' = b²·η_B, Adam η_A' = a·η_A and η_B' = b·η_B (ε/a and ε/b; here ε ≈ 0). Under Noise & Zeros (B₀ = 0, so b
 * rescales nothing at the start) this makes LoRA+'s faster B the same as a larger α: SGD (η, k²·η_B, s) ≡ (η, η, k·s),
 * Adam (η, k·η_B, s) ≡ (η, η, k·s).
 */
function prop1Specs(cfg: Config): Prop1Spec[] {
  const g = cfg.prop1Gain;
  const run = (
    optimizer: "sgd" | "adam",
    label: string,
    o: { c?: number; cB?: number; sF?: number; lrF?: number; lrB?: number; eps?: number; zeroB?: boolean },
  ): RunSpec => ({
    label,
    mode: "lora",
    optimizer,
    lr: (optimizer === "sgd" ? cfg.sgdLr : cfg.adamLr) * (o.lrF ?? 1),
    gain: g,
    c: o.c ?? 1,
    cB: o.cB,
    sFactor: o.sF ?? 1,
    lrB: o.lrB,
    eps: o.eps,
    zeroB: o.zeroB,
  });
  const SGD1 = "SGD, one rate: (c²η, s/c², cA₀, cB₀)";
  const ADAM1 = "Adam, one rate: (cη, s/c², cA₀, cB₀, ε/c)";
  const SGD2 = "SGD, separate rates: (a²η_A, b²η_B, s/(ab), aA₀, bB₀)";
  const ADAM2 = "Adam, separate rates: (aη_A, bη_B, s/(ab), aA₀, bB₀), ε ≈ 0";
  const SGDNZ = "SGD, Noise & Zeros: LoRA+ with η_B × k² ≡ α × k";
  const ADAMNZ = "Adam, Noise & Zeros: LoRA+ with η_B × k ≡ α × k, ε ≈ 0";
  const e = (
    spec: RunSpec,
    ref: string,
    expect: "equivalent" | "different",
    rule: string,
    group: string,
  ) => ({
    spec,
    ref,
    expect,
    rule,
    group,
  });
  return [
    e(run("sgd", "sgd-ref", {}), "", "equivalent", "reference (η, s, A₀, B₀)", SGD1),
    e(
      run("sgd", "sgd-c2", { c: 2, sF: 1 / 4, lrF: 4 }),
      "sgd-ref",
      "equivalent",
      "(4η, s/4, 2A₀, 2B₀)",
      SGD1,
    ),
    e(
      run("sgd", "sgd-c3", { c: 3, sF: 1 / 9, lrF: 9 }),
      "sgd-ref",
      "equivalent",
      "(9η, s/9, 3A₀, 3B₀)",
      SGD1,
    ),
    e(
      run("sgd", "sgd-adam-rule", { c: 3, sF: 1 / 9, lrF: 3 }),
      "sgd-ref",
      "different",
      "Adam's rule under SGD: (3η, s/9, 3A₀, 3B₀)",
      SGD1,
    ),
    e(
      run("sgd", "sgd-no-init", { sF: 1 / 9, lrF: 9 }),
      "sgd-ref",
      "different",
      "η·s kept but init not rescaled: (9η, s/9, A₀, B₀)",
      SGD1,
    ),
    e(run("adam", "adam-ref", {}), "", "equivalent", "reference (η, s, A₀, B₀, ε)", ADAM1),
    e(
      run("adam", "adam-c2", { c: 2, sF: 1 / 4, lrF: 2, eps: 1e-8 / 2 }),
      "adam-ref",
      "equivalent",
      "(2η, s/4, 2A₀, 2B₀, ε/2)",
      ADAM1,
    ),
    e(
      run("adam", "adam-c3", { c: 3, sF: 1 / 9, lrF: 3, eps: 1e-8 / 3 }),
      "adam-ref",
      "equivalent",
      "(3η, s/9, 3A₀, 3B₀, ε/3)",
      ADAM1,
    ),
    e(
      run("adam", "adam-sgd-rule", { c: 3, sF: 1 / 9, lrF: 9, eps: 1e-8 / 3 }),
      "adam-ref",
      "different",
      "SGD's rule under Adam: (9η, s/9, 3A₀, 3B₀, ε/3)",
      ADAM1,
    ),
    // The general form: a = 2, b = 4 (powers of two: every rescaling is exact in float32).
    e(
      run("sgd", "sgd-ab", { c: 2, cB: 4, sF: 1 / 8, lrF: 4, lrB: 4 }),
      "sgd-ref",
      "equivalent",
      "a = 2, b = 4: (4η_A, 16η_B, s/8, 2A₀, 4B₀)",
      SGD2,
    ),
    e(
      run("sgd", "sgd-ab-one-rate", { c: 2, cB: 4, sF: 1 / 8, lrF: 8 }),
      "sgd-ref",
      "different",
      "one rate for both: (8η, 8η, s/8, 2A₀, 4B₀)",
      SGD2,
    ),
    e(run("adam", "adam-ref-eps0", { eps: EPS0 }), "", "equivalent", "reference, ε ≈ 0", ADAM2),
    e(
      run("adam", "adam-ab", { c: 2, cB: 4, sF: 1 / 8, lrF: 2, lrB: 2, eps: EPS0 }),
      "adam-ref-eps0",
      "equivalent",
      "a = 2, b = 4: (2η_A, 4η_B, s/8, 2A₀, 4B₀)",
      ADAM2,
    ),
    e(
      run("adam", "adam-ab-sgd-rule", { c: 2, cB: 4, sF: 1 / 8, lrF: 4, lrB: 4, eps: EPS0 }),
      "adam-ref-eps0",
      "different",
      "SGD's rates under Adam: (4η_A, 16η_B, s/8, 2A₀, 4B₀)",
      ADAM2,
    ),
    // Noise & Zeros: LoRA+ against a larger α (k = 2).
    e(run("sgd", "sgd-nz-alpha2", { zeroB: true, sF: 2 }), "", "equivalent", "B₀ = 0, α × 2", SGDNZ),
    e(
      run("sgd", "sgd-nz-plus4", { zeroB: true, lrB: 4 }),
      "sgd-nz-alpha2",
      "equivalent",
      "B₀ = 0, LoRA+ η_B = 4η_A",
      SGDNZ,
    ),
    e(
      run("sgd", "sgd-nz-plus2", { zeroB: true, lrB: 2 }),
      "sgd-nz-alpha2",
      "different",
      "B₀ = 0, LoRA+ η_B = 2η_A (Adam's ratio under SGD)",
      SGDNZ,
    ),
    e(
      run("adam", "adam-nz-alpha2", { zeroB: true, sF: 2, eps: EPS0 }),
      "",
      "equivalent",
      "B₀ = 0, α × 2",
      ADAMNZ,
    ),
    e(
      run("adam", "adam-nz-plus2", { zeroB: true, lrB: 2, eps: EPS0 }),
      "adam-nz-alpha2",
      "equivalent",
      "B₀ = 0, LoRA+ η_B = 2η_A",
      ADAMNZ,
    ),
    e(
      run("adam", "adam-nz-plus4", { zeroB: true, lrB: 4, eps: EPS0 }),
      "adam-nz-alpha2",
      "different",
      "B₀ = 0, LoRA+ η_B = 4η_A (SGD's ratio under Adam)",
      ADAMNZ,
    ),
  ];
}

/**
 * Prop. 2 (c) as a claim: ‖ΔW‖ grows faster with a larger initialisation magnitude. The gains are ordered by their
 * mean ‖s·B₀·A₀‖, and each neighbouring pair compared by its mean final ‖ΔW‖ (unpaired: d the larger gain's mean
 * minus the smaller's, s = √(sd₁² + sd₂²) of their stds over seeds). Reproduced when every d > 2·s, not reproduced
 * when some d < −2·s (an inversion beyond the spread), else inconclusive, and with fewer than 3 seeds or 3 gains;
 * a pair whose s is 0 or rounding noise of d (both rows the same in every seed) judges nothing, as the paired rule
 * reads a difference with no spread.
 *
 * @param rows Per gain, its label and the mean ± std over seeds of ‖s·B₀·A₀‖ and of the final ‖ΔW‖.
 * @param seeds The number of seeds of each row.
 * @returns The claim.
 */
export function growthClaim(
  rows: readonly { label: string; ba0: MeanStd; update: MeanStd }[],
  seeds: number,
): Claim {
  const sorted = [...rows].sort((a, b) => a.ba0.mean - b.ba0.mean);
  const steps = sorted.slice(1).map((r, i) => ({
    d: r.update.mean - sorted[i].update.mean,
    s: Math.hypot(r.update.std, sorted[i].update.std),
    // Equal values but for rounding spread by ε of their own size, not of the difference's.
    scale: Math.max(Math.abs(r.update.mean), Math.abs(sorted[i].update.mean)),
  }));
  const finite = steps.every((x) => Number.isFinite(x.d) && Number.isFinite(x.s));
  // Each pair by the spread rule of the paired claims (d against 2·s, at least 3 seeds).
  const per = steps.map((x) => pairedSpreadVerdict({ mean: x.d, std: x.s, n: seeds, scale: x.scale }));
  const verdict: Verdict = rows.length < 3 || !finite
    ? "inconclusive"
    : per.every((v) => v === "reproduced")
    ? "reproduced"
    : per.some((v) => v === "not reproduced")
    ? "not reproduced"
    : "inconclusive";
  return {
    claim: "Prop. 2 (c): ‖ΔW‖ grows faster with a larger initialisation magnitude.",
    rule:
      `the gains ordered by mean ‖s·B₀·A₀‖; each neighbouring pair compared by the mean final ‖ΔW‖ over ` +
      `seeds (unpaired), d the larger gain's minus the smaller's and s = √(sd₁² + sd₂²) of their stds: reproduced ` +
      `when every d > 2·s, not reproduced when some d < −2·s, else inconclusive; a pair whose s is 0 or rounding ` +
      `noise of d (the same values in every seed) judges nothing; ${rows.length} gains and ${seeds} seeds (at ` +
      `least 3 of each to judge).`,
    evidence: `final ‖ΔW‖ by increasing ‖s·B₀·A₀‖: ${
      sorted.map((r) => `${r.label} ${formatMeanStd(r.update, 4)}`).join(" < ")
    }; d ± 2·s per pair ${
      steps.map((x) => `${formatAgainst(x.d - 2 * x.s, [0], 3)}..${formatAgainst(x.d + 2 * x.s, [0], 3)}`)
        .join(", ") || "— (nothing to compare)"
    }.`,
    verdict,
  };
}

/** Prop. 2 (a): the relative change of ‖A‖ and ‖B‖ under which they count as "nearly constant" (10%). */
const CONSTANT_CHANGE = 0.1;

/**
 * Prop. 2 (a) as a judged sentence: ‖A‖ and ‖B‖ stay nearly constant during LoRA training. The larger of the two mean
 * relative changes over seeds, with its standard error: reproduced when mean + 2·se is under
 * {@link CONSTANT_CHANGE}, not reproduced when mean − 2·se is at or above it, inconclusive between, with one seed,
 * and when every seed gives the same change (`isNoSpread`: the seeds then repeat one measurement).
 * The ends are printed (in %) on the side of the limit they are judged on.
 *
 * @param r A LoRA run's label and the mean ± std over seeds of the relative changes of ‖A‖ and ‖B‖.
 * @param seeds The number of seeds.
 * @param steps The training steps.
 * @returns The sentence, with the verdict in bold.
 */
export function constancyClaim(
  r: { label: string; aChange: MeanStd; bChange: MeanStd },
  seeds: number,
  steps: number,
): string {
  const limit = 100 * CONSTANT_CHANGE;
  // The larger of the two changes, with its standard error over the seeds, in %.
  const worst = r.aChange.mean >= r.bChange.mean ? r.aChange : r.bChange;
  const se = worst.std / Math.sqrt(Math.max(worst.n, 1));
  const lo = 100 * worst.mean - 2 * 100 * se, hi = 100 * worst.mean + 2 * 100 * se;
  const verdict = seeds < 2
    ? "inconclusive (one seed)"
    : isNoSpread(worst.std, worst.mean, worst.n)
    ? `inconclusive (${NO_SPREAD})`
    : hi < limit
    ? "reproduced"
    : lo >= limit
    ? "not reproduced"
    : "inconclusive";
  return `Prop. 2 (a), ${r.label}: ‖A‖ and ‖B‖ stay nearly constant during LoRA training (relative change from the ` +
    `start to the end of ${steps} steps, |‖·‖ end − ‖·‖ start| / ‖·‖ start, mean over seeds: ‖A‖ ${
      formatAgainst(100 * r.aChange.mean, [limit], 3)
    }%, ‖B‖ ${formatAgainst(100 * r.bChange.mean, [limit], 3)}%, ${
      formatSpreadEnds(lo, hi, [limit], 3, "the larger's mean ± 2·se")
    }%; rule: the larger of the two over ${seeds} seed(s), reproduced when its mean + 2·se is under ${limit}%, not ` +
    `reproduced when its mean − 2·se is at or above it, inconclusive between, with one seed and with the same ` +
    `change in every seed): **${verdict}**.`;
}

/** Prop. 2 (b): the ratio of full fine-tuning's mean ‖ΔW‖ to the largest LoRA mean that counts as "far". */
const FAR = 2;

/**
 * Prop. 2 (b) as a judged sentence: LoRA's ‖ΔW‖ grows far slower than full fine-tuning's ‖W − W₀‖. The ratio of
 * full fine-tuning's mean final ‖ΔW‖ to the largest LoRA row's: reproduced at {@link FAR}× or more, not reproduced
 * below 1×, inconclusive between and with one seed.
 *
 * @param loraRows Per LoRA run, its label and the mean ± std over seeds of its final ‖ΔW‖.
 * @param full Full fine-tuning's.
 * @param context The number of seeds and the two learning rates (Adam).
 * @returns The sentence, with the verdict in bold.
 */
export function slowerClaim(
  loraRows: readonly { label: string; update: MeanStd }[],
  full: { update: MeanStd },
  { seeds, fullLr, loraLr }: { seeds: number; fullLr: number; loraLr: number },
): string {
  // The LoRA row whose mean is largest: the ratio divides by it, and the sentence names it.
  const largest = loraRows.reduce((a, b) => (b.update.mean > a.update.mean ? b : a));
  const ratio = full.update.mean / largest.update.mean;
  const verdict = seeds < 2
    ? "inconclusive (one seed)"
    : ratio >= FAR
    ? "reproduced"
    : ratio < 1
    ? "not reproduced"
    : "inconclusive";
  return `Prop. 2 (b): LoRA's ‖ΔW‖ grows far slower than full fine-tuning's ‖W − W₀‖ (final ${
    loraRows.map((r) => `${r.label} ${r.update.mean.toFixed(4)}`).join(", ")
  } vs full ${
    full.update.mean.toFixed(4)
  } at learning rate ${fullLr} (LoRA ${loraLr}); full fine-tuning's mean ÷ the largest LoRA mean ` +
    `(${largest.label}), means over ${seeds} seed(s) ${
      formatAgainst(ratio, [1, FAR], 3)
    }×; rule: "far" = ≥ ${FAR}×, not reproduced below 1×, ` +
    `inconclusive between and with one seed): **${verdict}** (the comparison depends on the two learning rates; ` +
    `both are Adam).`;
}

function prop2Specs(cfg: Config): RunSpec[] {
  return [
    ...cfg.gains.map((g): RunSpec => ({
      label: `lora-Q${g}`,
      mode: "lora",
      optimizer: "adam",
      lr: cfg.adamLr,
      gain: g,
      c: 1,
      sFactor: 1,
    })),
    {
      label: "full-ft",
      mode: "full",
      optimizer: "adam",
      lr: cfg.fullLr ?? cfg.adamLr,
      gain: 0,
      c: 1,
      sFactor: 1,
    },
  ];
}

// ----- main -----

function maxDiff(a: readonly number[], b: readonly number[]): number {
  let m = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function main(): Promise<void> {
  const { cfg, device, adapter, results } = await startExperiment(Config, {
    task: "magnitude",
    dir: "magnitude",
    description:
      "LoRAM §2: learning rate, scaling factor and init magnitude (Prop. 1); norm growth (Prop. 2)",
    quick: QUICK,
    check: (c) => {
      if (c.rank > c.width) throw new RangeError(`--rank ${c.rank} exceeds --width ${c.width}`);
      // The teacher of the Prop. 1 runs has their width.
      for (const [flag, width] of [["--width", c.width], ["--prop1-width", c.prop1Width]] as const) {
        if (c.teacherRank > width) {
          throw new RangeError(
            `--teacher-rank ${c.teacherRank} exceeds ${flag} ${width}: a layer's shift has rank at most its width`,
          );
        }
      }
      if (c.prop1Rank > c.prop1Width) {
        throw new RangeError(`--prop1-rank ${c.prop1Rank} exceeds --prop1-width ${c.prop1Width}`);
      }
    },
  });
  const p1 = prop1Specs(cfg);
  const p2 = prop2Specs(cfg);
  // Prop. 1 runs at their own size on their own device (the reference backend by default); Prop. 2 at the main one.
  const p1Cfg: Config = { ...cfg, width: cfg.prop1Width, rank: cfg.prop1Rank, steps: cfg.prop1Steps };
  const p1Device = cfg.prop1Device === "auto" ? device : cfg.prop1Device;
  // Each seed's task (base, teacher, data) is made once per size, when the first of its runs needs it.
  const tasks = new Map<string, Promise<Task>>();
  const taskOf = (seed: number, c: Config, dev: DeviceName) => {
    const key = `${seed}/${c.width}/${dev}`;
    if (!tasks.has(key)) tasks.set(key, makeTask(c, seed, dev));
    return tasks.get(key)!;
  };
  const describe = (r: RunResult) =>
    `loss ${r.losses[0].toFixed(4)} (step 1), ${lastTenthText(r.losses)}, ‖update‖ ${
      r.normUpdate.at(-1)!.toFixed(4)
    }, ${r.seconds.toFixed(1)} s`;
  const p1Runs = await resumeOrRun(
    results,
    cfg.seeds.flatMap((seed) => p1.map((p) => ({ label: p.spec.label, seed, spec: p.spec }))),
    { schema: MAGNITUDE_RUN, steps: p1Cfg.steps, describe },
    async (k) => train(k.spec, k.seed, await taskOf(k.seed, p1Cfg, p1Device), p1Cfg, p1Device),
  );
  const p2Runs = await resumeOrRun(
    results,
    cfg.seeds.flatMap((seed) => p2.map((spec) => ({ label: spec.label, seed, spec }))),
    { schema: MAGNITUDE_RUN, steps: cfg.steps, describe },
    async (k) => train(k.spec, k.seed, await taskOf(k.seed, cfg, device), cfg, device),
  );
  const runs = [...p1Runs, ...p2Runs];
  // Atomically: a process killed while writing it (on --resume too) leaves the file it replaces whole.
  writeFileAtomicSync(
    results.file("metrics.jsonl"),
    runs.flatMap((r) =>
      r.losses.map((loss, i) =>
        JSON.stringify({
          run: r.label,
          seed: r.seed,
          step: i + 1,
          loss,
          normA: r.normA[i + 1],
          normB: r.normB[i + 1],
          normBA: r.normBA[i + 1],
          normUpdate: r.normUpdate[i + 1],
        })
      )
    ).join("\n") + "\n",
  );

  // ----- Proposition 1 -----
  const get = (label: string, seed: number) => runs.find((r) => r.label === label && r.seed === seed)!;
  const p1Rows = p1.filter((p) => p.ref !== "").map((p) => {
    const rel = cfg.seeds.map((s) => {
      const a = get(p.spec.label, s).losses;
      const b = get(p.ref, s).losses;
      return maxDiff(a, b) / Math.max(...b.map(Math.abs));
    });
    const abs = cfg.seeds.map((s) => maxDiff(get(p.spec.label, s).losses, get(p.ref, s).losses));
    return {
      label: p.spec.label,
      ref: p.ref,
      rule: p.rule,
      expect: p.expect,
      group: p.group,
      abs: Math.max(...abs),
      rel: Math.max(...rel),
    };
  });
  const p1Table = {
    heading: `Proposition 1 (SGD lr ${cfg.sgdLr}, Adam lr ${cfg.adamLr}, init gain ${cfg.prop1Gain}; width ` +
      `${p1Cfg.width}, rank ${p1Cfg.rank}, ${p1Cfg.steps} steps on ${p1Device})`,
    note: "The last column is taken per seed, each seed's max |ΔL| over its reference's max |L|, then the " +
      "largest over seeds: not the max |ΔL| column over the max L of all seeds.",
    columns: [
      "run",
      "vs",
      "rule",
      "expected",
      "max |ΔL| over steps and seeds",
      "max over seeds of (max |ΔL| / ref. max |L|) per seed",
    ],
    rows: p1Rows.map((
      r,
    ) => [r.label, r.ref, r.rule, r.expect, r.abs.toExponential(2), formatRel(r.rel)]),
  };
  const claims: (Claim | string)[] = [];
  for (const group of [...new Set(p1.map((p) => p.group))]) {
    const rows = p1Rows.filter((r) => r.group === group);
    const eq = rows.filter((r) => r.expect === "equivalent");
    const br = rows.filter((r) => r.expect === "different");
    claims.push(prop1Claim(eq, br, { group, seeds: cfg.seeds.length, device: p1Device }));
  }

  // ----- Proposition 2 -----
  const byLabel = (label: string) => runs.filter((r) => r.label === label);
  // The mean over a label's seeds, step by step: meanCurves numbers the values from step 1 (losses); the norms'
  // first value is the state before training, step 0.
  const curve = (label: string, key: (r: RunResult) => readonly number[]) =>
    meanCurves(runs, [label], key)[0];
  const fromStep0 = (c: LineSeries): LineSeries => ({ ...c, x: c.x.map((step) => step - 1) });
  const rel = (xs: number[]) => Math.abs(xs.at(-1)! - xs[0]) / xs[0];
  const p2Rows = p2.map((spec) => {
    const rs = byLabel(spec.label);
    return {
      label: spec.label,
      loss: meanStd(rs.map((r) => lastTenthMean(r.losses))),
      a0: meanStd(rs.map((r) => r.normA[0])),
      aChange: meanStd(rs.map((r) => rel(r.normA))),
      b0: meanStd(rs.map((r) => r.normB[0])),
      bChange: meanStd(rs.map((r) => rel(r.normB))),
      ba0: meanStd(rs.map((r) => r.normBA[0])),
      ba: meanStd(rs.map((r) => r.normBA.at(-1)!)),
      update: meanStd(rs.map((r) => r.normUpdate.at(-1)!)),
    };
  });
  const isFull = (l: string) => l === "full-ft";
  const p2Table = {
    heading: `Proposition 2 (Adam; LoRA lr ${cfg.adamLr}, full fine-tuning lr ${cfg.fullLr ?? cfg.adamLr})`,
    columns: [
      "run",
      LAST_TENTH_LABEL,
      "‖A₀‖",
      "|Δ‖A‖|/‖A₀‖",
      "‖B₀‖",
      "|Δ‖B‖|/‖B₀‖",
      "‖s·B₀·A₀‖",
      "final ‖s·B·A‖",
      "final ‖ΔW‖ (update)",
    ],
    rows: p2Rows.map((r) => [
      r.label,
      formatMeanStd(r.loss),
      isFull(r.label) ? "—" : formatMeanStd(r.a0, 3),
      isFull(r.label) ? "—" : formatMeanStd(r.aChange, 3),
      isFull(r.label) ? "—" : formatMeanStd(r.b0, 3),
      isFull(r.label) ? "—" : formatMeanStd(r.bChange, 3),
      isFull(r.label) ? "—" : formatMeanStd(r.ba0, 3),
      isFull(r.label) ? "—" : formatMeanStd(r.ba, 3),
      formatMeanStd(r.update, 4),
    ]),
  };
  const loraRows = p2Rows.filter((r) => !isFull(r.label));
  const full = p2Rows.find((r) => isFull(r.label))!;
  const seeds = cfg.seeds.length;
  for (const r of loraRows) claims.push(constancyClaim(r, seeds, cfg.steps));
  claims.push(slowerClaim(loraRows, full, { seeds, fullLr: cfg.fullLr ?? cfg.adamLr, loraLr: cfg.adamLr }));
  claims.push(growthClaim(loraRows, seeds));

  // ----- report -----
  const plots: Record<string, string> = {};
  for (const opt of ["sgd", "adam"] as const) {
    const labels = p1.filter((p) => p.spec.optimizer === opt && p.group.includes("one rate")).map((p) =>
      p.spec.label
    );
    plots[`prop1_${opt}`] = linePlot({
      title: `Prop. 1 (${opt === "sgd" ? "SGD" : "Adam"}): loss of equivalent and rule-breaking runs`,
      xLabel: "step",
      yLabel: "MSE",
      logY: true,
      series: labels.map((l, i) => {
        const m = curve(l, (r) => r.losses);
        return { name: l, x: m.x, y: m.y, dashed: i > 0 && i < 3 };
      }),
    });
  }
  const loraLabels = p2.filter((s) => s.mode === "lora").map((s) => s.label);
  plots.prop2_norms = linePlot({
    title: "Prop. 2: ‖A‖ (solid) and ‖B‖ (dashed) over training",
    xLabel: "step",
    yLabel: "Frobenius norm (all layers)",
    logY: true,
    series: loraLabels.flatMap((l) => [
      { ...fromStep0(curve(l, (r) => r.normA)), name: `${l} ‖A‖` },
      { ...fromStep0(curve(l, (r) => r.normB)), name: `${l} ‖B‖`, dashed: true },
    ]),
  });
  plots.prop2_update = linePlot({
    title: "Prop. 2: ‖ΔW‖ — LoRA ‖s(BA − B₀A₀)‖ vs full fine-tuning ‖W − W₀‖",
    xLabel: "step",
    yLabel: "Frobenius norm (all layers)",
    series: p2.map((s) => fromStep0(curve(s.label, (r) => r.normUpdate))),
  });
  plots.prop2_loss = linePlot({
    title: "Prop. 2 runs: training loss",
    xLabel: "step",
    yLabel: "MSE",
    logY: true,
    series: p2.map((s) => curve(s.label, (r) => r.losses)),
  });
  await writeReport(results, {
    title: "exp:magnitude",
    setting:
      `Adapter: ${adapter}. ${cfg.layers}-layer ReLU MLP, width ${cfg.width} (He-normal base, no biases), ` +
      `LoRA rank ${cfg.rank} on every layer, α = ${
        cfg.alpha ?? cfg.rank
      }; regression (MSE) onto a teacher whose ` +
      `layers are the base's plus a rank-${cfg.teacherRank} shift of relative size ${cfg.teacherShift}; ` +
      `${cfg.examples} examples, batch ${cfg.batchSize}${
        accumulatedText(cfg.accumulate)
      }, ${cfg.steps} steps, seeds ${cfg.seeds.join(", ")}. ` +
      `Adapters start from LoRAM's init with a fixed gain Q (ν[s·B₀·A₀] = Q·ν[W], random orthonormal bases, offset ` +
      `into W); no weight decay, no clipping. LoRAM's log gain at r = ${cfg.rank}, K = ${cfg.width} would be ${
        loramLogGain(cfg.rank, cfg.width, cfg.width).toFixed(3)
      }.`,
    tables: [p1Table, p2Table],
    notes: [
      `Norms are √Σ over layers of the squared Frobenius norms; ‖ΔW‖ (update) is ‖s·(B·A − B₀·A₀)‖ for LoRA (the ` +
      `change of the effective weight, B₀·A₀ being offset into W) and ‖W − W₀‖ for full fine-tuning.`,
    ],
    claims,
    plots,
    data: { config: cfg, adapter, prop1: p1Rows, prop2: p2Rows },
  });
}

if (import.meta.main) await runMain("magnitude", main);
