/**
 * Checkpoints: a run stopped halfway and resumed from its checkpoint (into a freshly built, differently
 * initialised model) records the same loss trajectory as an uninterrupted run; the metrics file keeps exactly
 * one line per step; the file holds every parameter and the optimiser state; mismatches are refused.
 */
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { AdamW, Mlp, namedParameters, SGD } from "../../lib/nn/mod.ts";
import {
  CheckpointMismatchError,
  loadCheckpoint,
  previousCheckpointPath,
  restoreCheckpoint,
  restoreLatestCheckpoint,
  saveCheckpoint,
  Trainer,
} from "../../lib/train/mod.ts";
import { parseSafetensors, serializeSafetensors } from "../../lib/io/safetensors.ts";
import type { Tensor } from "../../mod.ts";
import { readJsonl } from "../../lib/io/json.ts";
import { assertClose, refusedOptions, TestRng } from "../_helpers.ts";
import { loraMlpSetup, mlpSetup } from "./_setup.ts";

Deno.test("resuming from a checkpoint reproduces the uninterrupted loss trajectory", async () => {
  const rng = new TestRng(71);
  const initSeed = rng.int(0, 2 ** 30);
  const runSeed = rng.int(0, 2 ** 30);
  const steps = 40;
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/checkpoint.safetensors`;
  const metrics = `${dir}/metrics.jsonl`;

  const whole = new Trainer({ ...mlpSetup({ initSeed, runSeed, steps }), readEvery: 8 });
  const reference = await whole.run();

  // A run that dies after step 24 (simulated by a callback that throws once the metrics of step 24 are written);
  // its last checkpoint is from step 20, so steps 21..24 are redone after resuming.
  const first = new Trainer({
    ...mlpSetup({ initSeed, runSeed, steps }),
    readEvery: 8,
    metrics,
    checkpoint: { path: ckpt, every: 20 },
    onRecords: (records) => {
      if (records.at(-1)!.step === 24) throw new Error("simulated crash");
    },
  });
  await rejects(() => first.run(), /simulated crash/);
  first.close();
  equal(readJsonl(metrics).length, 24);

  const saved = await loadCheckpoint(ckpt);
  equal(saved.step, 20);
  equal(saved.seed, runSeed);
  equal((saved.optimizer as { name: string }).name, "AdamW");
  // The file stores tensors in sorted-name order.
  deepEqual(Object.keys(saved.params), [
    "layers.0.bias",
    "layers.0.weight",
    "layers.1.bias",
    "layers.1.weight",
  ]);
  equal(Object.keys(saved.state).length, 8);

  // A fresh trainer with a different initialisation: everything must come from the checkpoint.
  const resumed = new Trainer({
    ...mlpSetup({ initSeed: initSeed + 1, runSeed, steps }),
    readEvery: 8,
    metrics,
    checkpoint: { path: ckpt, every: 20 },
  });
  await resumed.resume(ckpt);
  equal(resumed.step, 20);
  const rest = await resumed.run();
  resumed.close();
  deepEqual(rest.map((r) => r.step), Array.from({ length: 20 }, (_, i) => i + 21));
  for (const key of ["loss", "grad_norm", "norm/layers.0.weight", "accuracy", "lr"]) {
    assertClose(
      rest.map((r) => r[key]),
      reference.slice(20).map((r) => r[key]),
      { rtol: 1e-6, atol: 1e-7, what: `resumed ${key}` },
    );
  }
  assertClose(first.history.map((r) => r.loss), reference.slice(0, 24).map((r) => r.loss), {
    rtol: 0,
    atol: 0,
  });

  const lines = readJsonl(metrics);
  deepEqual(lines.map((r) => r.step), Array.from({ length: steps }, (_, i) => i + 1));
  assertClose(lines.map((r) => r.loss as number), reference.map((r) => r.loss), { rtol: 1e-6, atol: 1e-7 });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resume refuses a metrics file without the records up to the checkpoint, naming the missing steps", async () => {
  const rng = new TestRng(74);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 12 };
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/checkpoint.safetensors`;
  const metrics = `${dir}/metrics.jsonl`;
  const options = () => ({ ...mlpSetup(seeds), readEvery: 2, metrics, checkpoint: { path: ckpt, every: 3 } });
  const reference = await new Trainer({ ...mlpSetup(seeds), readEvery: 2 }).run();
  const first = new Trainer(options());
  await first.run({ until: 6 });
  first.close();
  // The last line (step 6, the checkpoint's step) cut short by 2 to 20 bytes (not just its newline), as outside damage leaves it.
  const text = await Deno.readTextFile(metrics);
  await Deno.writeTextFile(metrics, text.slice(0, text.length - rng.int(2, 20)));
  const missingLast = new Trainer(options());
  await rejects(
    () => missingLast.resume(ckpt),
    (e: Error) =>
      e.message.includes(`it is at step 6 but the metrics file "${metrics}" has no record of step(s) 6 `) &&
      e.message.includes(`continue from "${previousCheckpointPath(ckpt)}"`),
  );
  // A line lost in the middle is named as well.
  const lines = text.split("\n");
  await Deno.writeTextFile(metrics, [...lines.slice(0, 1), ...lines.slice(3)].join("\n"));
  await rejects(() => new Trainer(options()).resume(ckpt), /has no record of step\(s\) 2-3 /);
  // The remedy it names: without the newest checkpoint the run continues from the previous one (step 3), redoes
  // steps 4..6 and records every step once.
  await Deno.writeTextFile(metrics, text.slice(0, text.length - rng.int(2, 20)));
  await Deno.remove(ckpt);
  const resumed = new Trainer(options());
  equal((await resumed.resume(ckpt)).step, 3);
  await resumed.run();
  resumed.close();
  const written = readJsonl(metrics);
  deepEqual(written.map((r) => r.step), Array.from({ length: 12 }, (_, i) => i + 1));
  assertClose(written.map((r) => r.loss as number), reference.map((r) => r.loss), { rtol: 1e-6, atol: 1e-7 });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resume refuses a checkpoint of another optimiser or seed", async () => {
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/c.safetensors`;
  const t = new Trainer({ ...mlpSetup({ initSeed: 1, runSeed: 2, steps: 4 }), readEvery: 2 });
  await t.run({ until: 2 });
  await t.save(ckpt);
  const sgd = mlpSetup({ initSeed: 1, runSeed: 2, steps: 4 });
  await rejects(
    () => new Trainer({ ...sgd, optimizer: new SGD(sgd.model, { lr: 0.1, momentum: 0.9 }) }).resume(ckpt),
    /does not fit this run: the run that wrote it was configured differently: optimizer\.name "AdamW" then, "SGD" now/,
  );
  await rejects(
    () => new Trainer(mlpSetup({ initSeed: 1, runSeed: 3, steps: 4 })).resume(ckpt),
    /seed 2, this one has seed 3/,
  );
  await Deno.writeTextFile(`${dir}/x.safetensors`, "not a checkpoint");
  await rejects(() => loadCheckpoint(`${dir}/x.safetensors`), /x\.safetensors/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resume refuses a changed configuration by key, before touching the model; allowChanged continues", async () => {
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/c.safetensors`;
  const seeds = { initSeed: 5, runSeed: 6, steps: 8 };
  const t = new Trainer({ ...mlpSetup(seeds), readEvery: 2 });
  await t.run({ until: 4 });
  await t.save(ckpt);
  const changes: [string, (s: ReturnType<typeof mlpSetup>) => void, RegExp][] = [
    ["clipNorm", (s) => (s.clipNorm = 0.1), /clipNorm 2 then, 0\.1 now/],
    ["steps", (s) => (s.steps = 16), /steps 8 then, 16 now/],
    ["no seed", (s) => (s.seed = undefined), /seed 6 then, null now/],
    ["schedule", (s) => (s.schedule = undefined), /schedule \{"step 1"/],
    [
      "weight decay",
      (s) => (s.optimizer = new AdamW(s.model, { lr: 4e-3, weightDecay: 0.5 })),
      /weightDecay/,
    ],
  ];
  for (const [what, edit, re] of changes) {
    const s = mlpSetup(seeds);
    edit(s);
    const before = await Promise.all(namedParameters(s.model).map(([, p]) => p.data()));
    await rejects(() => new Trainer(s).resume(ckpt), re, what);
    const after = await Promise.all(namedParameters(s.model).map(([, p]) => p.data()));
    deepEqual(after, before, `${what}: the refused checkpoint was not loaded`);
  }
  // Allowed on request (a lower learning rate after a non-finite stop, say): the differences are returned.
  const s = mlpSetup(seeds);
  s.clipNorm = 0.5;
  const r = new Trainer(s);
  const info = await r.resume(ckpt, { allowChanged: true });
  deepEqual(info.changed, ["clipNorm 2 then, 0.5 now"]);
  equal(r.step, 4);
  // Another model: refused as not fitting the run, not as a damaged file to delete.
  const other = mlpSetup(seeds);
  const model = new Mlp([12, 7, 3], { seed: 1 });
  await rejects(
    () =>
      new Trainer({ ...other, model, optimizer: new AdamW(model, { lr: 4e-3 }) } as typeof other).resume(
        ckpt,
      ),
    (err: Error) => err instanceof CheckpointMismatchError && !/Remove/.test(err.message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a LoRA run with dropout resumes with the masks an uninterrupted run draws", async () => {
  for (const compile of [false, true]) {
    const dir = await Deno.makeTempDir();
    const make = async () =>
      new Trainer(
        await loraMlpSetup(50, { steps: 8, compile, checkpoint: { path: `${dir}/c.safetensors`, every: 4 } }),
      );
    const whole = await (await make()).run();
    const first = await make();
    await first.run({ until: 4 });
    first.close();
    const resumed = await make();
    await resumed.resume(`${dir}/c.safetensors`);
    // The training time of the first part carries over (it was 0 in a resumed run).
    const before = Number((await loadCheckpoint(`${dir}/c.safetensors`)).metadata.seconds);
    ok(
      before > 0 && before <= first.trainSeconds,
      `checkpoint seconds ${before}, first part ${first.trainSeconds}`,
    );
    equal(resumed.trainSeconds, before);
    deepEqual(await resumed.run(), whole.slice(4), `compile ${compile}`);
    ok(resumed.trainSeconds > before);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the trainer refuses shared output files, steps past the run and batch entries that are not tensors", async () => {
  const s = mlpSetup({ initSeed: 1, runSeed: 2, steps: 4 });
  throws(
    () =>
      new Trainer({ ...s, metrics: "/tmp/x/run.out", checkpoint: { path: "/tmp/x/./run.out", every: 2 } }),
    /checkpoint\.path and metrics are the same file/,
  );
  throws(
    () =>
      new Trainer({ ...s, lastGoodPath: "/tmp/x/c.previous", checkpoint: { path: "/tmp/x/c", every: 2 } }),
    /lastGoodPath and the previous checkpoint are the same file/,
  );
  await rejects(
    () => new Trainer(s).run({ until: 5 }),
    /until must be an integer from the current step 0 to the run's steps 4, got 5/,
  );
  const bad = new Trainer({
    ...s,
    batch: (step) => ({ ...s.batch!(step, 0), x: [1, 2, 3] as unknown as Tensor }),
  });
  await rejects(() => bad.run(), /batch\(1\) entry "x" is object, not a Tensor/);
});

Deno.test("saveCheckpoint refuses a step or seed that loadCheckpoint would refuse; loading names a bad key", async () => {
  const rng = new TestRng(72);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/c.safetensors`;
  const model = new Mlp([3, 5, 2], { seed: rng.int(0, 1000) });
  const optimizer = new AdamW(model, { lr: 1e-2 });
  const step = rng.int(1, 10_000);
  const seed = -rng.int(1, 2 ** 40); // a negative seed is a seed
  await saveCheckpoint(path, model, { optimizer, step, seed, keepPrevious: true });
  const good = await loadCheckpoint(path);
  deepEqual([good.step, good.seed], [step, seed]);
  // Refused before anything is written or rotated: the good checkpoint stays where it was.
  for (const bad of [-rng.int(1, 100), step + 0.5, NaN, Infinity, 2 ** 53]) {
    await rejects(
      saveCheckpoint(path, model, { optimizer, step: bad, keepPrevious: true }),
      new RangeError(`saveCheckpoint: step must be a non-negative integer, got ${bad}`),
    );
  }
  for (const bad of [NaN, seed + 0.5, -Infinity]) {
    await rejects(
      saveCheckpoint(path, model, { optimizer, step, seed: bad, keepPrevious: true }),
      new RangeError(`saveCheckpoint: seed must be a safe integer, got ${bad}`),
    );
  }
  equal((await loadCheckpoint(path)).step, step);
  await rejects(Deno.stat(previousCheckpointPath(path)), Deno.errors.NotFound);
  // A file written otherwise: each reserved key is read as saveCheckpoint writes it, or refused by name.
  const { tensors, metadata } = parseSafetensors(await Deno.readFile(path));
  const altered = async (key: string, value: string) => {
    const file = `${dir}/${key}.safetensors`;
    await Deno.writeFile(file, serializeSafetensors(tensors, { ...metadata, [key]: value }));
    return file;
  };
  for (const text of ["", " 7", "1e3", "0x10", "07", "-3", "2.5"]) {
    const file = await altered("step", text);
    await rejects(loadCheckpoint(file), (e: Error) => {
      equal(
        e.message,
        `checkpoint "${file}" has a bad step ${JSON.stringify(text)}; expected a non-negative integer`,
      );
      return true;
    });
  }
  for (const text of ["NaN", "1.5", ""]) {
    const file = await altered("seed", text);
    await rejects(loadCheckpoint(file), new RegExp(`has a bad seed "${text}"; expected a safe integer`));
  }
  const optimizerFile = await altered("optimizer", "{oops");
  await rejects(
    loadCheckpoint(optimizerFile),
    new RegExp(`^Error: checkpoint "${optimizerFile}": metadata "optimizer" is not valid JSON \\(`),
  );
  await rejects(
    loadCheckpoint(await altered("modules", "[1, 2]")),
    /modules\.safetensors": metadata "modules" is \[1, 2\], not a JSON object/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name: "saveCheckpoint with keepPrevious keeps the checkpoint's permissions and the one before at .previous",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    const rng = new TestRng(73);
    const dir = await Deno.makeTempDir();
    const path = `${dir}/c.safetensors`;
    const model = new Mlp([3, 4, 2], { seed: rng.int(0, 1000) });
    const steps = [rng.int(1, 100), rng.int(101, 200), rng.int(201, 300)];
    await saveCheckpoint(path, model, { step: steps[0], keepPrevious: true });
    // A private checkpoint: before, the next save renamed it aside and wrote a fresh file, 0644 under umask 022.
    await Deno.chmod(path, 0o600);
    for (const [i, step] of steps.slice(1).entries()) {
      await saveCheckpoint(path, model, { step, keepPrevious: true });
      equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      equal((await loadCheckpoint(path)).step, step);
      equal((await loadCheckpoint(previousCheckpointPath(path))).step, steps[i]);
    }
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test("a run resumed from .previous past a damaged checkpoint keeps that one until a newer is written", async () => {
  const rng = new TestRng(74);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 16 };
  const dir = await Deno.makeTempDir();
  const ckpt = `${dir}/c.safetensors`;
  const make = () =>
    new Trainer({ ...mlpSetup(seeds), readEvery: 2, checkpoint: { path: ckpt, every: 4 }, compile: false });
  const reference = new Trainer({ ...mlpSetup(seeds), readEvery: 2, compile: false });
  await reference.run({ until: 12 });
  // A run that stops after step 9 (checkpoints after steps 4, 8 and 9); then the newest is cut short.
  const first = make();
  await first.run({ until: 9 });
  first.close();
  const size = (await Deno.stat(ckpt)).size;
  await Deno.truncate(ckpt, rng.int(1, size - 1));
  const resumed = make();
  const info = await resumed.resume(ckpt);
  deepEqual([info.path, info.step, info.skipped.map((s) => s.path)], [previousCheckpointPath(ckpt), 8, [
    ckpt,
  ]]);
  // The next save replaces the damaged file and leaves the state resumed from at .previous (it used to move the
  // damaged file there first, so that a run stopped while writing had no usable checkpoint left).
  await resumed.run({ until: 12 });
  equal((await loadCheckpoint(previousCheckpointPath(ckpt))).step, 8);
  const saved = await loadCheckpoint(ckpt);
  equal(saved.step, 12);
  for (const [p, t] of namedParameters(reference.model)) {
    deepEqual(await saved.params[p].data(), await t.data(), p);
  }
  // From then on the newest is kept as the previous one, as always.
  await resumed.run();
  equal((await loadCheckpoint(previousCheckpointPath(ckpt))).step, 12);
  equal((await loadCheckpoint(ckpt)).step, 16);
  resumed.close();
  reference.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("checkpoint functions and Trainer.resume refuse an unknown option or a bad value by name", async () => {
  const rng = new TestRng(75);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/c.safetensors`;
  const model = new Mlp([3, 4, 2], { seed: rng.int(0, 1000) });
  const optimizer = new AdamW(model, { lr: 1e-2 });
  const step = rng.int(1, 1000);
  const seed = rng.int(0, 2 ** 30);
  // Each was dropped: keepPrevios kept no .previous, devcie loaded on the default device, optimiser left the
  // optimiser's state where it was, allowChange read as no permission.
  await refusedOptions(
    () => saveCheckpoint(path, model, { optimizer, step, keepPrevios: true } as never),
    /^saveCheckpoint: unknown option "keepPrevios"$/,
  );
  await refusedOptions(
    () => saveCheckpoint(path, model, { step, metadata: { note: 3 } } as never),
    /^saveCheckpoint: option "metadata.note" must be a string, got 3$/,
  );
  await rejects(Deno.stat(path), Deno.errors.NotFound);
  await saveCheckpoint(path, model, { optimizer, step, seed, metadata: { note: "kept" } });
  await refusedOptions(
    () => loadCheckpoint(path, { devcie: "cpu" } as never),
    /^loadCheckpoint: unknown option "devcie"$/,
  );
  await refusedOptions(
    () => loadCheckpoint(path, { device: "tpu" } as never),
    /^loadCheckpoint: option "device" must be one of "webgpu", "wasm", "cpu", got "tpu"$/,
  );
  for (const restore of [restoreCheckpoint, restoreLatestCheckpoint]) {
    await refusedOptions(
      () => restore(path, model, { optimiser: optimizer } as never),
      new RegExp(`^${restore.name}: unknown option "optimiser"$`),
    );
  }
  await refusedOptions(
    () => restoreCheckpoint(path, model, { optimizer: { lr: 1 } } as never),
    /^restoreCheckpoint: option "optimizer" must be an optimiser \(new AdamW\(model, \.\.\.\)\), got \{"lr":1\}$/,
  );
  const loaded = await loadCheckpoint(path, { device: "cpu" });
  deepEqual(
    [loaded.step, loaded.seed, loaded.metadata, loaded.params["layers.0.weight"].device],
    [step, seed, { note: "kept" }, "cpu"],
  );
  const fresh = new AdamW(model, { lr: 1e-2 });
  equal((await restoreCheckpoint(path, model, { optimizer: fresh })).step, step);
  equal(fresh.stepCount, step);
  await Deno.remove(dir, { recursive: true });

  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 4 };
  const runDir = await Deno.makeTempDir();
  const ckpt = `${runDir}/c.safetensors`;
  await new Trainer({ ...mlpSetup(seeds), checkpoint: { path: ckpt, every: 2 } }).run();
  await refusedOptions(
    () => new Trainer(mlpSetup(seeds)).resume(ckpt, { allowChange: true } as never),
    /^Trainer\.resume: unknown option "allowChange"$/,
  );
  await refusedOptions(
    () => new Trainer(mlpSetup(seeds)).resume(ckpt, { allowChanged: "yes" } as never),
    /^Trainer\.resume: option "allowChanged" must be true or false, got "yes"$/,
  );
  equal((await new Trainer(mlpSetup(seeds)).resume(ckpt, { allowChanged: false })).step, seeds.steps);
  await Deno.remove(runDir, { recursive: true });
});

Deno.test("saveCheckpoint refuses a paths entry that names no parameter, naming it and the parameters", async () => {
  // A misspelt path was dropped: that tensor was never saved, and a restore left it at its fresh value.
  const rng = new TestRng(76);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/c.safetensors`;
  const model = new Mlp([3, 4, 2], { seed: rng.int(0, 1000) });
  await refusedOptions(
    () => saveCheckpoint(path, model, { paths: ["layers.0.weight", "layers.1.bais"] }),
    /^saveCheckpoint: option "paths" lists "layers\.1\.bais", which is no parameter of the model \(its parameters: layers\.0\.weight, layers\.0\.bias, layers\.1\.weight, layers\.1\.bias\)$/,
  );
  await rejects(Deno.stat(path), Deno.errors.NotFound);
  const kept = ["layers.0.weight", "layers.1.bias"];
  await saveCheckpoint(path, model, { paths: kept });
  const { params } = await loadCheckpoint(path);
  deepEqual(Object.keys(params).sort(), kept);
  const byPath = new Map(namedParameters(model));
  for (const p of kept) deepEqual(await params[p].toArray(), await byPath.get(p)!.toArray());
  await Deno.remove(dir, { recursive: true });
});
