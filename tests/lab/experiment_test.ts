/** The resume-or-run loop of the experiments: which runs it accepts, and what it tells the user. */
import { deepEqual, equal, match, rejects } from "node:assert/strict";
import { z } from "../../deps.ts";
import { type FineTuneRun, fineTuneRunFields, resumeOrRun, trainResumable } from "../../lab/experiment.ts";
import { ResultsDir } from "../../lab/results.ts";
import { Trainer } from "../../lib/train/mod.ts";
import { assertClose, TestRng } from "../_helpers.ts";
import { mlpSetup } from "../train/_setup.ts";

const tempRoot = Deno.makeTempDirSync({ prefix: "experiment_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tempRoot, { recursive: true }));

const RUN = z.object(fineTuneRunFields());

/** A finished run of `steps` steps whose losses are drawn from `rng`. */
function fakeRun(label: string, seed: number, steps: number, rng: TestRng): FineTuneRun {
  const losses = Array.from({ length: steps }, () => rng.next());
  return {
    label,
    seed,
    losses,
    gradNorms: losses,
    valLoss: rng.next(),
    initSeconds: 0,
    trainSeconds: 0,
    ranks: {},
  };
}

Deno.test("resumeOrRun refuses two runs of one label and seed before running either, naming where each came from", async () => {
  const rng = new TestRng(1);
  const results = ResultsDir.create("dup", { root: tempRoot });
  const seed = rng.int(0, 1000);
  const ran: string[] = [];
  const run = (k: { label: string; seed: number }) => {
    ran.push(k.label);
    return Promise.resolve(fakeRun(k.label, k.seed, 2, rng));
  };
  const keys = [
    { label: "x", seed, origin: "--method x=cntlora:mode=x" },
    { label: "x-n1", seed, origin: "--method x-n1=lora" },
    { label: "x-n1", seed, origin: "Table 3's x with 1 calibration batch" },
  ];
  await rejects(
    resumeOrRun(results, keys, { schema: RUN, steps: 2 }, run),
    new RegExp(
      `^RangeError: run x-n1 seed ${seed} is asked for twice, by --method x-n1=lora and by Table 3's x with 1 ` +
        `calibration batch: both would be saved as runs/x-n1-seed${seed}\\.json`,
    ),
  );
  // Without an origin the message counts entries of the list; the same label at other seeds is not a repeat.
  await rejects(
    resumeOrRun(results, [{ label: "a", seed }, { label: "a", seed: seed + 1 }, { label: "a", seed }], {
      schema: RUN,
      steps: 2,
    }, run),
    /run a seed \d+ is asked for twice, by entry 1 of the run list and by entry 3 of the run list/,
  );
  deepEqual(ran, []);
  equal([...Deno.readDirSync(results.path)].some((e) => e.name === "runs"), false);
  // Distinct keys run, each once, and come back in order.
  const out = await resumeOrRun(results, keys.slice(0, 2), { schema: RUN, steps: 2 }, run);
  deepEqual(ran, ["x", "x-n1"]);
  deepEqual(out.map((r) => r.label), ["x", "x-n1"]);
  match(Deno.readTextFileSync(results.file(`runs/x-n1-seed${seed}.json`)), /"label": ?"x-n1"/);
  results.release();
});

Deno.test("resumeOrRun points a finished run shorter than the configuration to --extend, not to removing it", async () => {
  const rng = new TestRng(2);
  const results = ResultsDir.create("short", { root: tempRoot });
  const steps = rng.int(2, 9);
  const seed = rng.int(0, 1000);
  const file = `runs/m-seed${seed}.json`;
  await resumeOrRun(results, [{ label: "m", seed }], { schema: RUN, steps }, (k) => {
    return Promise.resolve(fakeRun(k.label, k.seed, steps, rng));
  });
  const before = Deno.readTextFileSync(results.file(file));
  const never = () => Promise.reject(new Error("a finished run was run again"));
  // An experiment that supports --extend passes extend: false without the flag.
  await rejects(
    resumeOrRun(results, [{ label: "m", seed }], { schema: RUN, steps: steps + 1, extend: false }, never),
    (err: Error) => {
      equal(
        err.message,
        `"${results.file(file)}" holds a finished run of ${steps} steps and this configuration has ${
          steps + 1
        }: ` +
          `continue it with --resume "${results.path}" --extend`,
      );
      return true;
    },
  );
  // A longer run, or a shorter one where runs cannot be extended, can only be run anew.
  for (const options of [{ steps: steps - 1, extend: false }, { steps: steps + 1 }]) {
    await rejects(
      resumeOrRun(results, [{ label: "m", seed }], { schema: RUN, ...options }, never),
      new RegExp(`holds a run of ${steps} steps but this configuration has ${options.steps}; remove it`),
    );
  }
  equal(Deno.readTextFileSync(results.file(file)), before);
  results.release();
});

Deno.test("trainResumable refuses to continue a run whose metrics file lacks the steps before its checkpoint", async () => {
  // With the metrics file gone (or begun after step 1), the resumed run's records started at the checkpoint's step
  // and its results listed the losses of the later steps only, as if they were the whole run.
  const rng = new TestRng(2);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 12 };
  const dir = await Deno.makeTempDir({ dir: tempRoot });
  const checkpoint = `${dir}/c.safetensors`;
  const metrics = `${dir}/m.jsonl`;
  const options = () => ({
    ...mlpSetup(seeds),
    readEvery: 2,
    metrics,
    checkpoint: { path: checkpoint, every: 3 },
  });
  const reference = new Trainer({ ...mlpSetup(seeds), readEvery: 2 });
  const want = (await reference.run()).map((r) => r.loss);
  reference.close();
  const stop = 3 * rng.int(1, 3);
  const first = new Trainer(options());
  await first.run({ until: stop });
  first.close();
  const text = await Deno.readTextFile(metrics);
  const lines = text.split("\n").filter((l) => l !== "");
  const cut = rng.int(1, stop - 1);
  for (const damage of ["gone", "begun later"]) {
    if (damage === "gone") await Deno.remove(metrics);
    else await Deno.writeTextFile(metrics, lines.slice(cut).map((l) => `${l}\n`).join(""));
    const missing = damage === "gone" ? `1-${stop}` : cut === 1 ? "1" : `1-${cut}`;
    await rejects(
      () => trainResumable(new Trainer(options()), { label: "r", checkpoint, metrics }),
      (e: Error) =>
        e.message.includes(`"${metrics}" has no record of step(s) ${missing}`) &&
        e.message.includes(`at step ${stop}`) && e.message.includes(`remove "${checkpoint}"`),
    );
  }
  // With its records, it continues to every step's record, the losses those of an uninterrupted run.
  await Deno.writeTextFile(metrics, text);
  const run = await trainResumable(new Trainer(options()), { label: "r", checkpoint, metrics });
  deepEqual(run.records.map((r) => r.step), Array.from({ length: 12 }, (_, i) => i + 1));
  assertClose(run.records.map((r) => r.loss), want, { rtol: 1e-6, atol: 1e-7 });
});

Deno.test("trainResumable refuses an option it does not take, naming it, and trains a valid call to its end", async () => {
  // A misspelt `previous` with the checkpoint gone retrained the finished run from scratch instead of refusing.
  const rng = new TestRng(3);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 4 };
  const dir = await Deno.makeTempDir({ dir: tempRoot });
  const paths = { checkpoint: `${dir}/c.safetensors`, metrics: `${dir}/m.jsonl` };
  const trainer = () =>
    new Trainer({
      ...mlpSetup(seeds),
      metrics: paths.metrics,
      checkpoint: { path: paths.checkpoint, every: 2 },
    });
  const misspelt = { label: "r", ...paths, previos: fakeRun("r", 1, 4, rng) };
  const refused = trainer();
  await rejects(() => trainResumable(refused, misspelt as never), /trainResumable: unknown option "previos"/);
  equal(await Deno.stat(paths.metrics).then(() => true, () => false), false, "nothing was trained");
  await rejects(
    () => trainResumable(refused, { label: "r", ...paths, metrics: "" }),
    /option "metrics" must be at least 1/,
  );
  refused.close();
  const reference = new Trainer({ ...mlpSetup(seeds), readEvery: 1 });
  const want = (await reference.run()).map((r) => r.loss);
  reference.close();
  const run = await trainResumable(trainer(), { label: "r", ...paths });
  assertClose(run.records.map((r) => r.loss), want, { rtol: 1e-6, atol: 1e-7 });
});

Deno.test("trainResumable making a finished run longer refuses a run that differs in more than its length", async () => {
  // The trainer resumes with { allowChanged } there (the steps and the schedule change on purpose): another batch
  // size went through and trained the added steps on batches the finished run never had.
  const rng = new TestRng(4);
  const seeds = { initSeed: rng.int(0, 2 ** 30), runSeed: rng.int(0, 2 ** 30), steps: 4 };
  const dir = await Deno.makeTempDir({ dir: tempRoot });
  const paths = { checkpoint: `${dir}/c.safetensors`, metrics: `${dir}/m.jsonl` };
  const trainer = (steps: number, batchSize?: number) =>
    new Trainer({
      ...mlpSetup({ ...seeds, steps, batchSize }),
      metrics: paths.metrics,
      checkpoint: { path: paths.checkpoint, every: 2 },
    });
  await trainResumable(trainer(4), { label: "r", ...paths });
  const previous = fakeRun("r", 1, 4, rng);
  const size = rng.int(3, 9);
  const other = trainer(6, size);
  await rejects(
    () => trainResumable(other, { label: "r", ...paths, previous }),
    (e: Error) =>
      e.message.includes("cannot make run r longer: more than its length changed: batch.x") &&
      e.message.includes(`[${size}, `),
  );
  other.close();
  // Only longer: it goes on to the added steps.
  const run = await trainResumable(trainer(6), { label: "r", ...paths, previous });
  deepEqual(run.records.map((r) => r.step), [1, 2, 3, 4, 5, 6]);
});
