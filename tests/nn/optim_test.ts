/**
 * Optimisers against hand-written float64 references over a few steps with fresh random parameters and
 * gradients, parameter groups with their own rate and decay, scheduled rates, clipping, state handling and
 * device memory staying flat across steps.
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { getBackend, getDefaultDevice, type Shape, type Tensor, tensor } from "../../mod.ts";
import {
  Adam,
  AdamW,
  clipByGlobalNorm,
  constantSchedule,
  cosineSchedule,
  globalNorm,
  linearSchedule,
  Module,
  type Optimizer,
  type ParamDict,
  PARAMS_PER_PACK,
  SGD,
  warmupLength,
} from "../../lib/nn/mod.ts";
import type { DeviceName } from "../../lib/ir/node.ts";
import { PACK_ALIGN } from "../../lib/nn/optim/optimizer.ts";
import { assertClose, TEST_SEED, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

/** Host state of one parameter in the reference. */
interface Ref {
  p: Float64Array;
  s1: Float64Array;
  s2: Float64Array;
}

/** Runs `steps` steps of `opt` on random gradients and the float64 `rule` side by side; compares every step. */
async function compare(
  make: (target: Record<string, Record<string, F>>) => Optimizer,
  rule: (r: Ref, g: Float64Array, lr: number, wd: number, t: number) => void,
  opts: { salt: number; lrs: Record<string, number>; wds: Record<string, number>; scales: number[] },
): Promise<void> {
  const rng = new TestRng(opts.salt);
  const shapes: Record<string, number[]> = { "enc.w": [3, 4], "enc.b": [4], "head.w": [4, 2] };
  const host: Record<string, Ref> = {};
  const target = { enc: {} as Record<string, F>, head: {} as Record<string, F> };
  for (const [path, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = rng.normals(n);
    host[path] = { p: Float64Array.from(v), s1: new Float64Array(n), s2: new Float64Array(n) };
    const [mod, key] = path.split(".");
    (target as Record<string, Record<string, F>>)[mod][key] = tensor(v, { shape }) as F;
  }
  const opt = make(target);
  const groupOf = (path: string) => opt.groupOf(path).name;
  for (let t = 1; t <= opts.scales.length; t++) {
    const grads: ParamDict = {};
    for (const [path, shape] of Object.entries(shapes)) {
      const g = rng.normals(host[path].p.length);
      grads[path] = tensor(g, { shape });
      rule(
        host[path],
        Float64Array.from(g),
        opts.lrs[groupOf(path)] * opts.scales[t - 1],
        opts.wds[groupOf(path)],
        t,
      );
    }
    await opt.step(grads, { lrScale: opts.scales[t - 1] });
    equal(opt.stepCount, t);
    for (const path of Object.keys(shapes)) {
      const [mod, key] = path.split(".");
      const now = (target as Record<string, Record<string, F>>)[mod][key];
      assertClose(await now.data(), host[path].p, {
        rtol: 2e-5,
        atol: 2e-6,
        what: `${path} after step ${t}`,
      });
    }
  }
}

const groups = [{ name: "head", params: /^head\./, lr: 0.05, weightDecay: 0.2 }];

Deno.test("SGD with momentum and weight decay matches float64, per group", async () => {
  await compare(
    (target) => new SGD(target, { lr: 0.1, momentum: 0.9, weightDecay: 0.01, groups }),
    (r, g, lr, wd) => {
      for (let i = 0; i < g.length; i++) {
        const d = g[i] + wd * r.p[i];
        r.s1[i] = 0.9 * r.s1[i] + d;
        r.p[i] -= lr * r.s1[i];
      }
    },
    {
      salt: 41,
      lrs: { default: 0.1, head: 0.05 },
      wds: { default: 0.01, head: 0.2 },
      scales: [1, 0.5, 0.25, 1],
    },
  );
});

Deno.test("SGD with Nesterov momentum, and plain SGD without state", async () => {
  await compare(
    (target) => new SGD(target, { lr: 0.2, momentum: 0.8, nesterov: true }),
    (r, g, lr) => {
      for (let i = 0; i < g.length; i++) {
        r.s1[i] = 0.8 * r.s1[i] + g[i];
        r.p[i] -= lr * (g[i] + 0.8 * r.s1[i]);
      }
    },
    { salt: 42, lrs: { default: 0.2 }, wds: { default: 0 }, scales: [1, 1, 1] },
  );
  await compare(
    (target) => new SGD(target, { lr: 0.3 }),
    (r, g, lr) => g.forEach((v, i) => (r.p[i] -= lr * v)),
    { salt: 43, lrs: { default: 0.3 }, wds: { default: 0 }, scales: [1, 0.3] },
  );
});

function adamRule(decoupled: boolean, b1 = 0.9, b2 = 0.999, eps = 1e-8) {
  return (r: Ref, g: Float64Array, lr: number, wd: number, t: number) => {
    for (let i = 0; i < g.length; i++) {
      let gi = g[i];
      if (decoupled) r.p[i] *= 1 - lr * wd;
      else gi += wd * r.p[i];
      r.s1[i] = b1 * r.s1[i] + (1 - b1) * gi;
      r.s2[i] = b2 * r.s2[i] + (1 - b2) * gi * gi;
      const mHat = r.s1[i] / (1 - b1 ** t);
      const vHat = r.s2[i] / (1 - b2 ** t);
      r.p[i] -= (lr * mHat) / (Math.sqrt(vHat) + eps);
    }
  };
}

Deno.test("Adam (L2 decay) matches float64 with a schedule and groups", async () => {
  await compare(
    (target) => new Adam(target, { lr: 0.01, weightDecay: 0.1, groups }),
    adamRule(false),
    {
      salt: 44,
      lrs: { default: 0.01, head: 0.05 },
      wds: { default: 0.1, head: 0.2 },
      scales: [0.25, 0.5, 1, 0.7],
    },
  );
});

Deno.test("AdamW (decoupled decay) matches float64, custom betas", async () => {
  await compare(
    (target) => new AdamW(target, { lr: 0.02, betas: [0.8, 0.95], eps: 1e-6, groups }),
    adamRule(true, 0.8, 0.95, 1e-6),
    {
      salt: 45,
      lrs: { default: 0.02, head: 0.05 },
      wds: { default: 0.01, head: 0.2 },
      scales: [1, 0.9, 0.8],
    },
  );
});

type Tree = { [k: string]: F | Tree };
const put = (t: Tree, path: string, v: F) => {
  const [head, ...rest] = path.split(".");
  if (rest.length === 0) t[head] = v;
  else put((t[head] ??= {}) as Tree, rest.join("."), v);
};
const at = (t: Tree, path: string): F => path.split(".").reduce((n: F | Tree, k) => (n as Tree)[k], t) as F;

Deno.test("packed updates: several parameters per kernel match float64, and per-parameter updates bit for bit", async () => {
  const shapes: Record<string, number[]> = {
    "a.w": [3, 5],
    "a.b": [5],
    "b.w": [2, 3, 2],
    "b.g": [1],
    c: [4, 4],
  };
  const paths = Object.keys(shapes);
  for (const device of ["cpu", "wasm", "webgpu"] as DeviceName[]) {
    const rng = new TestRng(48);
    const init = paths.map((p) => rng.normals(shapes[p].reduce((a, b) => a * b, 1)));
    const host: Record<string, Ref> = Object.fromEntries(paths.map((p, i) => {
      const n = init[i].length;
      return [p, { p: Float64Array.from(init[i]), s1: new Float64Array(n), s2: new Float64Array(n) }];
    }));
    const targets = [2, 1].map(() => {
      const t: Tree = {};
      paths.forEach((p, i) => put(t, p, tensor(init[i], { shape: shapes[p], device }) as F));
      return t;
    });
    const bGroup = [{ name: "b", params: /^b\./, lr: 0.03, weightDecay: 0.3 }];
    const [packed, single] = [2, 1].map((perPack, k) =>
      new AdamW(targets[k], { lr: 0.02, weightDecay: 0.1, groups: bGroup, paramsPerPack: perPack })
    );
    // Group "b" first (user groups come first), then the default group; at most two parameters per pack, each
    // starting at a multiple of PACK_ALIGN.
    deepEqual(packed.packs.map((p) => [p.key, p.paths, p.offsets, p.total]), [
      ["b/0", ["b.w", "b.g"], [0, PACK_ALIGN], PACK_ALIGN + 1],
      ["default/0", ["a.w", "a.b"], [0, PACK_ALIGN], PACK_ALIGN + 5],
      ["default/1", ["c"], [0], 16],
    ]);
    equal(single.packs.length, paths.length);
    const rule = adamRule(true);
    // Fresh gradients for step t, applied to the float64 reference (group "b" has its own rate and decay).
    const hostStep = (t: number) => {
      const g = paths.map((p) => rng.normals(host[p].p.length));
      paths.forEach((p, i) => {
        const b = p.startsWith("b.");
        rule(host[p], Float64Array.from(g[i]), b ? 0.03 : 0.02, b ? 0.3 : 0.1, t);
      });
      return Object.fromEntries(paths.map((p, i) => [p, tensor(g[i], { shape: shapes[p], device })]));
    };
    for (let t = 1; t <= 3; t++) {
      const grads = hostStep(t);
      for (const opt of [packed, single]) await opt.step(grads);
      equal(packed.currentPacks.size, 3, `${device}: after a step every parameter is a view of its pack`);
      for (const p of paths) {
        const got = await at(targets[0], p).data();
        assertClose(got, host[p].p, { rtol: 2e-5, atol: 2e-6, what: `${device}: ${p} after step ${t}` });
        deepEqual(
          got,
          await at(targets[1], p).data(),
          `${device}: ${p} packed and alone differ at step ${t}`,
        );
      }
    }
    // A parameter replaced from outside leaves its pack: the next update gathers the pack again.
    const fresh = rng.normals(15);
    put(targets[0], "a.w", tensor(fresh, { shape: [3, 5], device }) as F);
    host["a.w"].p = Float64Array.from(fresh);
    ok(!packed.currentPacks.has("default/0"), `${device}: a pack with a replaced parameter is not current`);
    await packed.step(hostStep(4));
    for (const p of paths) {
      assertClose(await at(targets[0], p).data(), host[p].p, {
        rtol: 2e-5,
        atol: 2e-6,
        what: `${device}: ${p}, step 4`,
      });
    }
  }
  // The default is the device's; a bad count is refused.
  const on = (device: DeviceName) =>
    new SGD(
      Object.fromEntries(paths.map((p) => [
        p,
        tensor(new Float32Array(shapes[p].reduce((a, b) => a * b, 1)).fill(1), { shape: shapes[p], device }),
      ])),
      { lr: 0.1 },
    );
  equal(on("webgpu").packs.length, Math.ceil(paths.length / PARAMS_PER_PACK.webgpu));
  equal(on("wasm").packs.length, Math.ceil(paths.length / PARAMS_PER_PACK.wasm));
  // A rule that reads a parameter as a whole keeps each parameter alone, and refuses to be packed.
  class WholeSgd extends SGD {
    protected override get elementwiseRule(): boolean {
      return false;
    }
  }
  const two = () => ({ u: tensor([1, 2], { device: "webgpu" }), w: tensor([3, 4], { device: "webgpu" }) });
  equal(new WholeSgd(two(), { lr: 0.1 }).packs.length, 2);
  throws(() => new WholeSgd(two(), { lr: 0.1, paramsPerPack: 2 }), /paramsPerPack 2 needs an elementwise/);
  throws(() => new SGD({ w: tensor([1, 2]) }, { lr: 0.1, paramsPerPack: 0 }), /paramsPerPack/);
  throws(() => new SGD({ w: tensor([1, 2]) }, { lr: 0.1, paramsPerPack: 1.5 }), /paramsPerPack/);
});

Deno.test("optimiser bookkeeping: frozen parameters, groups, state, disposal, flat memory", async () => {
  const rng = new TestRng(46);
  const mk = (shape: number[]) => tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape }) as F;
  const model = { base: { w: mk([8, 8]) }, lora_A: mk([2, 8]), lora_B: mk([8, 2]) };
  const frozen = model.base.w;
  const opt = new AdamW(model, {
    lr: 1e-3,
    trainable: /^lora_/,
    groups: [{ name: "B", params: ["lora_B"], lr: 16e-3 }],
  });
  deepEqual(opt.paths, ["lora_A", "lora_B"]);
  deepEqual(opt.groups.map((g) => [g.name, g.lr, g.paths]), [["B", 16e-3, ["lora_B"]], ["default", 1e-3, [
    "lora_A",
  ]]]);
  deepEqual(opt.learningRates(0.5), { B: 8e-3, default: 5e-4 });
  deepEqual(Object.keys(opt.stateDict()), [
    "exp_avg.lora_A",
    "exp_avg.lora_B",
    "exp_avg_sq.lora_A",
    "exp_avg_sq.lora_B",
  ]);
  throws(
    () => new AdamW(model, { lr: 1, groups: [{ name: "C", params: /lora_C/ }] }),
    /matches no trainable/,
  );
  // A listed path that names no parameter (misspelt) was dropped: lora_B went untrained, or into the default
  // group at the default rate.
  const typo = rng.next() < 0.5 ? "lora_b" : "lora_B.weight";
  throws(
    () => new AdamW(model, { lr: 1, trainable: ["lora_A", typo] }),
    new RegExp(
      `^RangeError: AdamW: trainable lists "${
        typo.replace(".", "\\.")
      }", which is no parameter of the target`,
    ),
  );
  throws(
    () =>
      new SGD(model, {
        lr: 1,
        trainable: /^lora_/,
        groups: [{ name: "B", params: [typo, "base.w"], lr: 16 }],
      }),
    new RegExp(
      `^RangeError: SGD: group "B" lists "${
        typo.replace(".", "\\.")
      }", "base\\.w", which are no trainable parameter`,
    ),
  );
  // Packs are keyed by group name: a second group "B" made lora_A take lora_B's update (and rate).
  throws(
    () =>
      new AdamW(model, {
        lr: 1,
        trainable: /^lora_/,
        groups: [{ name: "B", params: ["lora_B"] }, { name: "B", params: ["lora_A"], lr: 2 }],
      }),
    /groups 0 and 1 are both named "B"/,
  );
  throws(() => opt.update({ lora_A: mk([2, 8]) }), /no gradient for 1 parameter\(s\): lora_B/);
  throws(() => opt.update({ lora_A: mk([8, 2]), lora_B: mk([8, 2]) }), /gradient of "lora_A" is \[8, 2\]/);
  const pending = opt.update({ lora_A: mk([2, 8]), lora_B: mk([8, 2]) });
  throws(() => opt.commit(pending), /realize/);

  const be = await getBackend(getDefaultDevice());
  const oldA = model.lora_A;
  let live = 0;
  for (let step = 1; step <= 12; step++) {
    await opt.step({ lora_A: mk([2, 8]), lora_B: mk([8, 2]) });
    if (step === 4) live = be.stats().liveBuffers;
  }
  ok(model.lora_A !== oldA, "the target holds the new tensors");
  equal(model.base.w, frozen, "frozen parameters are untouched");
  await rejects(() => oldA.data(), /dispose/);
  // Only the gradients created by this test (12 × 2 host tensors, released at garbage collection) may remain.
  ok(be.stats().liveBuffers <= live + 16, `live buffers grew from ${live} to ${be.stats().liveBuffers}`);

  const saved = opt.stateDict();
  const restored = new AdamW(model, {
    lr: 1e-3,
    trainable: /^lora_/,
    groups: [{ name: "B", params: ["lora_B"] }],
  });
  restored.loadState(saved, opt.stepCount);
  equal(restored.stepCount, 12);
  throws(() => restored.loadState({ ...saved, "exp_avg.x": mk([1]) }, 1), /does not train: exp_avg.x/);
});

Deno.test("optimisers refuse parameters added after them that their filter selects; paths, groups, frozen and re-initialised ones pass", async () => {
  const rng = new TestRng(47);
  const mk = (shape: number[]) => tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), { shape }) as F;
  /** A module holding a parameter it declares frozen. */
  class Frozen extends Module {
    lora_B = mk([4, 2]);
    get frozenParameters(): readonly string[] {
      return ["lora_B"];
    }
  }
  const model: Record<string, unknown> = { base: mk([4, 4]), lora_A: mk([2, 4]), lora_B: mk([4, 2]) };
  const byFilter = new AdamW(model, {
    lr: 1e-2,
    weightDecay: 0,
    trainable: /lora_/,
    groups: [{ name: "B", params: /B$/ }],
  });
  const byList = new SGD(model, { lr: 1e-2, trainable: ["lora_A"] });
  const grads = () => ({ lora_A: mk([2, 4]), lora_B: mk([4, 2]) });
  // Parameters the filter does not select, or that their module declares frozen, are no concern.
  model.extra = mk([3]);
  model.frozen = new Frozen();
  byFilter.update(grads());
  // A parameter replaced at its path (a re-initialisation) is trained from its new value: Adam's first step is
  // p - lr·g/(|g| + eps).
  model.lora_A = mk([2, 4]);
  const p = await (model.lora_A as F).data() as Float32Array;
  const g = grads();
  const gv = await g.lora_A.data() as Float32Array;
  await byFilter.step(g);
  assertClose(
    await (model.lora_A as F).data(),
    Array.from(p, (v, i) => v - 1e-2 * gv[i] / (Math.abs(gv[i]) + 1e-8)),
    { rtol: 1e-6, atol: 1e-7 },
  );
  // One the filter selects but the optimiser does not hold is refused by path, groups or not; a list selects none.
  model.lora_C = mk([2, 2]);
  throws(
    () => byFilter.update(grads()),
    /1 parameter\(s\) that the trainable filter selects.*"lora_C".*create the optimiser after/,
  );
  await byList.step({ lora_A: mk([2, 4]) });
  model.lora_C = undefined;
  byFilter.update(grads());
});

Deno.test("clipByGlobalNorm scales by min(1, max/(norm + 1e-6)); globalNorm", async () => {
  const rng = new TestRng(47);
  const a = rng.normals(6, 3);
  const b = rng.normals(4, 3);
  const norm = Math.sqrt([...a, ...b].reduce((s, v) => s + v * v, 0));
  const grads = { a: tensor(a), b: tensor(b, { shape: [2, 2] }) };
  assertClose([await globalNorm(grads).item()], [norm], { rtol: 1e-6 });
  const clipped = clipByGlobalNorm(grads, 1);
  const scale = Math.min(1, 1 / (norm + 1e-6));
  assertClose(await clipped.grads.a.data(), Array.from(a, (v) => v * scale), { rtol: 1e-5 });
  assertClose(await clipped.grads.b.data(), Array.from(b, (v) => v * scale), { rtol: 1e-5 });
  const loose = clipByGlobalNorm(grads, norm * 2);
  assertClose(await loose.grads.a.data(), a, { rtol: 1e-6 });
});

Deno.test("schedules: warm-up s/W, then constant, linear or cosine decay to `final`", () => {
  const total = 100;
  const c = constantSchedule({ totalSteps: total, warmupRatio: 0.1 });
  deepEqual([c(1), c(5), c(10), c(11), c(100)], [0.1, 0.5, 1, 1, 1]);
  const l = linearSchedule({ totalSteps: total, warmupSteps: 20, final: 0.2 });
  for (const s of [1, 7, 20, 21, 60, 100, 150]) {
    const want = s <= 20 ? s / 20 : 1 - 0.8 * Math.min(1, (s - 20) / 80);
    assertClose([l(s)], [want], { rtol: 1e-12 });
  }
  const cos = cosineSchedule({ totalSteps: total, warmupRatio: 0.05 });
  for (const s of [1, 5, 6, 30, 52.5, 100]) {
    const want = s <= 5 ? s / 5 : 0.5 * (1 + Math.cos((Math.PI * (s - 5)) / 95));
    assertClose([cos(s)], [want], { rtol: 1e-12, atol: 1e-15 });
  }
  equal(cos(100), 0);
  equal(constantSchedule()(7), 1);
  // A final factor was ignored by the constant schedule (it stayed at 1): refused.
  throws(
    () => constantSchedule({ totalSteps: total, final: 0.1 }),
    /constantSchedule: final 0\.1 is for a decaying/,
  );
  // warmupRatio · totalSteps rounded up, against exact integer arithmetic: ratio m / 10^d of `total` steps is
  // ceil(m · total / 10^d) steps. In floating point 0.07 · 100 is 7.000000000000001 (it gave 8 steps).
  for (const [ratio, want] of [[0.07, 7], [0.14, 14], [0.28, 28], [0.55, 55], [0.071, 8]]) {
    equal(warmupLength({ totalSteps: 100, warmupRatio: ratio }), want, `warmupRatio ${ratio} of 100`);
  }
  equal(linearSchedule({ totalSteps: 100, warmupRatio: 0.07 })(7), 1);
  const rng = new TestRng(49);
  for (let k = 0; k < 2000; k++) {
    const scale = 10 ** rng.int(1, 4);
    const m = rng.int(0, scale);
    // Half the totals are multiples of 10^d, where the product is an integer and rounding may push it over.
    const total = rng.next() < 0.5 ? rng.int(1, 10) * scale : rng.int(1, 100_000);
    const want = Math.floor((m * total + scale - 1) / scale);
    const got = warmupLength({ totalSteps: total, warmupRatio: m / scale });
    equal(got, want, `warmupRatio ${m / scale} of ${total} steps (TEST_SEED=${TEST_SEED})`);
  }
  throws(() => cos(0), /steps start at 1/);
  throws(() => linearSchedule({ totalSteps: 10, warmupRatio: 2 }), /warmupRatio/);
});
