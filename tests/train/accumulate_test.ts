/**
 * Gradient accumulation (`accumulate`): a step over k micro-batches of a mean loss is the step over them all together
 * (checked in float64 with SGD), replayed steps equal eager ones bit for bit, each micro-batch is asked for once per
 * step, and bad values are refused by name.
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import {
  type DeviceName,
  getDefaultDevice,
  setDefaultDevice,
  type Shape,
  type Tensor,
  tensor,
} from "../../mod.ts";
import { crossEntropy, Mlp, mse, namedParameters, SGD } from "../../lib/nn/mod.ts";
import { Trainer, type TrainerOptions } from "../../lib/train/mod.ts";
import { mlpSetup } from "./_setup.ts";
import { TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

/** Float64 SGD on one linear layer, loss mean((xWᵀ + b − y)²) over `x`'s rows, clipped to `clip`. */
function referenceSgd(
  w: Float64Array,
  b: Float64Array,
  steps: { x: Float64Array; y: Float64Array }[],
  dims: { n: number; d: number; o: number; lr: number; clip: number },
): { loss: number[]; norm: number[] } {
  const { n, d, o, lr, clip } = dims;
  const loss: number[] = [], norm: number[] = [];
  for (const { x, y } of steps) {
    const gw = new Float64Array(o * d), gb = new Float64Array(o);
    let l = 0;
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < o; c++) {
        let p = b[c];
        for (let i = 0; i < d; i++) p += x[r * d + i] * w[c * d + i];
        const e = p - y[r * o + c];
        l += e * e / (n * o);
        // d/dp of e² / (n·o) = 2e / (n·o)
        const g = 2 * e / (n * o);
        gb[c] += g;
        for (let i = 0; i < d; i++) gw[c * d + i] += g * x[r * d + i];
      }
    }
    const total = Math.sqrt([...gw, ...gb].reduce((a, v) => a + v * v, 0));
    const f = Math.min(1, clip / total);
    gw.forEach((g, i) => (w[i] -= lr * f * g));
    gb.forEach((g, i) => (b[i] -= lr * f * g));
    loss.push(l);
    norm.push(total);
  }
  return { loss, norm };
}

Deno.test("accumulating k = 3 micro-batches with SGD is the step on their concatenation, in float64 (cpu)", async () => {
  const rng = new TestRng(7);
  const [k, micro, d, o, steps] = [3, 4, 5, 2, 4];
  const data = Array.from({ length: steps * k }, () => ({
    x: rng.normals(micro * d),
    y: rng.normals(micro * o, 2),
  }));
  const calls: string[] = [];
  const model = new Mlp([d, o], { seed: rng.int(0, 2 ** 30), device: "cpu" });
  const start = Object.fromEntries(namedParameters(model));
  const w = Float64Array.from(await start["layers.0.weight"].data() as Float32Array);
  const b = Float64Array.from(await start["layers.0.bias"].data() as Float32Array);
  // Each step concatenates its k micro-batches into one batch of k·micro rows.
  const joined = Array.from({ length: steps }, (_, s) => {
    const parts = data.slice(s * k, (s + 1) * k);
    return {
      x: Float64Array.from(parts.flatMap((p) => [...p.x])),
      y: Float64Array.from(parts.flatMap((p) => [...p.y])),
    };
  });
  const dims = { n: k * micro, d, o, lr: 0.2 };
  // Binding at the first step at least, whose norm the clipping does not change.
  const clip = 0.9 * referenceSgd(w.slice(), b.slice(), joined, { ...dims, clip: Infinity }).norm[0];
  const trainer = new Trainer({
    model,
    optimizer: new SGD(model, { lr: 0.2 }),
    accumulate: k,
    batch: (step: number, j: number) => {
      calls.push(`${step}.${j}`);
      const { x, y } = data[(step - 1) * k + j];
      return {
        x: tensor(x, { shape: [micro, d], device: "cpu" }),
        y: tensor(y, { shape: [micro, o], device: "cpu" }),
      };
    },
    loss: (m, t) => mse(m.forward(t.x as F) as F, t.y as F) as F,
    steps,
    clipNorm: clip,
    progress: false,
  });
  const records = await trainer.run();
  const want = referenceSgd(w, b, joined, { ...dims, clip });
  deepEqual(calls, Array.from({ length: steps * k }, (_, i) => `${Math.floor(i / k) + 1}.${i % k}`));
  equal(records.length, steps);
  // Float32 against float64. Measured over 40 seeds: losses within 1.4e-7 and norms within 2.3e-7 relative, the
  // weight within 8e-7 of its largest element and the bias (two elements, sometimes both small) within 1.8e-6; the
  // bounds are about ten and five times those. A step on one micro-batch moves them by ~1e-1.
  records.forEach((r, i) => {
    ok(Math.abs(r.loss - want.loss[i]) < 2e-6 * want.loss[i], `loss ${i + 1}: ${r.loss} vs ${want.loss[i]}`);
    ok(
      Math.abs(r.grad_norm - want.norm[i]) < 2e-6 * want.norm[i],
      `norm ${i + 1}: ${r.grad_norm} vs ${want.norm[i]}`,
    );
  });
  const got = Object.fromEntries(
    await Promise.all(
      namedParameters(model).map(async ([p, t]) => [p, await t.data() as Float32Array] as const),
    ),
  );
  for (const [p, ref] of [["layers.0.weight", w], ["layers.0.bias", b]] as const) {
    const err = Math.max(...ref.map((v, i) => Math.abs(got[p][i] - v))) / Math.max(...ref.map(Math.abs));
    ok(err < 1e-5, `${p} differs by ${err} of its largest`);
  }
});

/** The MLP set-up of the compiled-step tests, with `k` micro-batches of 8 examples per step. */
function accumulating(k: number, steps: number, extra: Partial<TrainerOptions<Mlp, never>> = {}) {
  const base = mlpSetup({ initSeed: 11, runSeed: 12, steps, batchSize: 8 });
  const batch = base.batch!;
  return {
    ...base,
    accumulate: k,
    batch: (step: number, micro: number) => batch((step - 1) * k + micro + 1, 0),
    readEvery: 3,
    ...extra,
  } as TrainerOptions<Mlp, { x: Tensor; y: Tensor; key: Tensor }>;
}

for (const device of ["cpu", "wasm", "webgpu"] as DeviceName[]) {
  Deno.test(`${device}: replayed accumulating steps equal eager ones bit for bit (k = 3, AdamW, clipping)`, async () => {
    const before = getDefaultDevice();
    setDefaultDevice(device);
    try {
      const eager = new Trainer({ ...accumulating(3, 7), compile: false });
      const compiled = new Trainer(accumulating(3, 7));
      const a = await eager.run();
      const b = await compiled.run({ until: 4 });
      b.push(...await compiled.run());
      deepEqual(b, a);
      const params = (t: { model: Mlp }) =>
        Promise.all(
          namedParameters(t.model).map(async ([p, v]) => [p, Array.from(await v.data() as Float32Array)]),
        );
      deepEqual(await params(compiled), await params(eager));
      equal(compiled.compileStats.traced, 2, JSON.stringify(compiled.compileStats));
      equal(compiled.compileStats.replayed, 5);
    } finally {
      setDefaultDevice(before);
    }
  });
}

Deno.test("a realized tensor that two micro-batches of a step give is refused, naming the call and the entry", async () => {
  const o = accumulating(2, 3);
  const y = o.batch!(1, 0).y;
  const t = new Trainer({ ...o, batch: (s: number, j: number) => ({ ...o.batch!(s, j), y }) });
  await rejects(
    () => t.run(),
    /batch\(1, 1\) entry "y" .* is a tensor an earlier micro-batch of step 1 gave/,
  );
  t.close();
});

Deno.test("accumulate must be a positive integer", () => {
  for (const bad of [0, -2, 1.5, Number.NaN]) {
    throws(() => new Trainer({ ...accumulating(2, 3), accumulate: bad }), (e: Error) => {
      ok(e.message.includes("accumulate") && e.message.includes(String(bad)), e.message);
      return true;
    });
  }
});

Deno.test("a resumed accumulating run asks for the same micro-batches and ends as the whole run; another k is refused", async () => {
  const rng = new TestRng(31);
  const until = rng.int(1, 5);
  const options = () => accumulating(3, 6, { seed: 12, progress: false });
  const dir = await Deno.makeTempDir();
  const path = `${dir}/c.safetensors`;
  try {
    const whole = new Trainer({ ...options(), compile: false });
    const all = await whole.run();
    const first = new Trainer(options());
    await first.run({ until });
    await first.save(path);
    first.close();
    const calls: string[] = [];
    const o = options();
    const resumed = new Trainer({
      ...o,
      batch: (s: number, j: number) => {
        calls.push(`${s}.${j}`);
        return o.batch!(s, j);
      },
    });
    deepEqual((await resumed.resume(path)).changed, []);
    // The resume builds micro-batch 0 of the checkpoint's step once more to compare its shapes.
    deepEqual(calls.splice(0), [`${until}.0`]);
    const rest = await resumed.run();
    deepEqual(
      calls,
      Array.from({ length: 3 * (6 - until) }, (_, i) => `${until + 1 + Math.floor(i / 3)}.${i % 3}`),
    );
    deepEqual(rest, all.slice(until));
    const params = (t: { model: Mlp }) =>
      Promise.all(
        namedParameters(t.model).map(async ([p, v]) => [p, Array.from(await v.data() as Float32Array)]),
      );
    deepEqual(await params(resumed), await params(whole));
    for (const [k, shown] of [[2, "2"], [1, "null"]] as const) {
      await rejects(
        () => new Trainer({ ...options(), accumulate: k }).resume(path),
        (e: Error) => e.message.includes(`accumulate 3 then, ${shown} now`),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("each micro-batch's loss weighted by k·n/N gives transformers' token-weighted step (n kept targets of N)", async () => {
  // The mean of k micro-batch losses, each a mean over its n_j kept targets times k·n_j/N, is Σ_j (sum of its target
  // losses) / N: the mean over all N kept targets of the step, the loss of the concatenated batch.
  const rng = new TestRng(41);
  const [k, micro, d, classes, steps] = [3, 6, 5, 4, 3];
  const data = Array.from({ length: steps * k }, () => {
    const y = Int32Array.from({ length: micro }, () => rng.int(0, classes - 1));
    // Each micro-batch keeps a different number of targets (1 to micro).
    y.fill(-100, rng.int(1, micro));
    return { x: rng.normals(micro * d), y };
  });
  const kept = (y: Int32Array) => y.filter((v) => v !== -100).length;
  const seed = rng.int(0, 2 ** 30);
  const run = async (accumulate: number) => {
    const model = new Mlp([d, 8, classes], { seed, device: "cpu" });
    const t = new Trainer({
      model,
      optimizer: new SGD(model, { lr: 0.5 }),
      accumulate,
      batch: (step: number, j: number) => {
        const parts = data.slice((step - 1) * k, step * k);
        const mine = accumulate === 1 ? parts : [parts[j]];
        const n = mine.reduce((a, p) => a + kept(p.y), 0);
        const total = parts.reduce((a, p) => a + kept(p.y), 0);
        return {
          x: tensor(Float32Array.from(mine.flatMap((p) => [...p.x])), {
            shape: [mine.length * micro, d],
            device: "cpu",
          }),
          y: tensor(Int32Array.from(mine.flatMap((p) => [...p.y])), { dtype: "i32", device: "cpu" }),
          w: tensor([accumulate * n / total], { shape: [], device: "cpu" }),
        };
      },
      loss: (m, b) => crossEntropy(m.forward(b.x as F) as F, b.y as Tensor<Shape, "i32">).mul(b.w as F) as F,
      steps,
      progress: false,
    });
    const records = await t.run();
    const params = await Promise.all(
      namedParameters(model).map(async ([, v]) => [...await v.data() as Float32Array]),
    );
    return { records, params: params.flat() };
  };
  const [joined, micros] = [await run(1), await run(k)];
  // Both float32, summed in other orders. Measured over 30 seeds: losses within 2.1e-7 and norms within 1.1e-7
  // relative, parameters within 1e-7 of the largest; the bounds are about ten times those.
  joined.records.forEach((r, i) => {
    const m = micros.records[i];
    ok(Math.abs(m.loss - r.loss) < 2e-6 * r.loss, `loss ${i + 1}: ${m.loss} vs ${r.loss}`);
    ok(
      Math.abs(m.grad_norm - r.grad_norm) < 2e-6 * r.grad_norm,
      `norm ${i + 1}: ${m.grad_norm} vs ${r.grad_norm}`,
    );
  });
  const scale = Math.max(...joined.params.map(Math.abs));
  const err = Math.max(...joined.params.map((v, i) => Math.abs(micros.params[i] - v))) / scale;
  ok(err < 1e-6, `parameters differ by ${err} of the largest`);
});
