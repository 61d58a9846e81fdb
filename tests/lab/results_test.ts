import assert from "node:assert/strict";
import { parseYaml } from "../../lab/deps.ts";
import { readJsonl } from "../../lib/io/json.ts";
import { configDifferences, gitInfo, ResultsDir, runTimestamp } from "../../lab/results.ts";
import { mdTable, meanStd, summarizeMetric } from "../../lab/report.ts";
import { parseMethod } from "../../lab/methods.ts";
import { evalUntil, TestRng } from "../_helpers.ts";

/** A uniform generator for test `seed` (mixed with TEST_SEED, so every run draws fresh values). */
function rng(seed: number): () => number {
  const r = new TestRng(seed);
  return () => r.next();
}

const tempRoot = Deno.makeTempDirSync({ prefix: "results_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tempRoot, { recursive: true }));

function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
}

Deno.test("results: directory layout results/<name>/<UTC timestamp>/ with a suffix on collision", () => {
  const root = `${tempRoot}/layout`;
  const when = new Date(Date.UTC(2025, 0, 9, 7, 5, 3));
  const a = ResultsDir.create("rank_sweep", { root, startedAt: when });
  assert.equal(a.path, `${root}/rank_sweep/20250109-070503`);
  assert.equal(runTimestamp(when), "20250109-070503");
  assert.ok(Deno.statSync(a.path).isDirectory);
  const b = ResultsDir.create("rank_sweep", { root, startedAt: when });
  assert.equal(b.path, `${root}/rank_sweep/20250109-070503-2`);
  assert.equal(a.file("adapter.bin"), `${a.path}/adapter.bin`);
  assert.throws(() => a.file("../escape.txt"), /must stay inside/);
  assert.throws(() => ResultsDir.create("bad/name", { root }), /results name/);
});

Deno.test("results: config.yaml, metrics.jsonl, summary.json and summary.md", async () => {
  const random = rng(41);
  const run = ResultsDir.create("demo", { root: `${tempRoot}/files` });
  const config = {
    rank: 1 + Math.floor(random() * 64),
    lr: random() * 1e-2,
    method: "pissa",
    train: { steps: 7 },
  };
  run.writeConfig(config);
  assert.deepEqual(parseYaml(Deno.readTextFileSync(`${run.path}/config.yaml`)), config);

  const losses = Array.from({ length: 5 }, () => random());
  {
    using metrics = run.metrics();
    losses.forEach((loss, step) => metrics.write({ step, loss }));
  }
  assert.deepEqual(readJsonl(`${run.path}/metrics.jsonl`).map((r) => r.loss), losses);

  const value = run.time("train", () => {
    busyWait(30);
    return 42;
  });
  assert.equal(value, 42);
  const asyncValue = await run.time("eval", async () => {
    await new Promise((resolve) => setTimeout(resolve, 30));
    return "done";
  });
  assert.equal(asyncValue, "done");
  const stop = run.startTimer("train");
  busyWait(10);
  const seconds = stop();
  assert.ok(seconds >= 0.01);

  run.writeSummary({ finalLoss: losses.at(-1), perStep: losses });
  const summary = JSON.parse(Deno.readTextFileSync(`${run.path}/summary.json`));
  assert.equal(summary.finalLoss, losses.at(-1));
  assert.deepEqual(summary.perStep, losses);
  assert.equal(summary.run.name, "demo");
  assert.equal(summary.run.dir, run.path);
  assert.ok(summary.run.timings.train >= 0.04, `train timing ${summary.run.timings.train}`);
  assert.ok(summary.run.timings.eval >= 0.025, `eval timing ${summary.run.timings.eval}`);
  assert.ok(summary.run.wallSeconds >= summary.run.timings.train);
  assert.ok(summary.run.git.revision === "unknown" || /^[0-9a-f]{40}$/.test(summary.run.git.revision));
  assert.equal(new Date(summary.run.startedAt).getTime(), run.startedAt.getTime());

  const table = mdTable(["rank", "loss"], [[config.rank, losses[0]]]);
  run.writeMarkdown(`# Demo\n\n${table}`);
  assert.equal(Deno.readTextFileSync(`${run.path}/summary.md`), `# Demo\n\n${table}`);
  const names = [...Deno.readDirSync(run.path)].map((e) => e.name).sort();
  // Besides the results: the record of the experiment and the lock this process holds until it releases it.
  assert.deepEqual(names, [
    ".lock",
    "config.yaml",
    "experiment.json",
    "metrics.jsonl",
    "summary.json",
    "summary.md",
  ]);
  assert.deepEqual(JSON.parse(Deno.readTextFileSync(`${run.path}/experiment.json`)).config, config);
  run.release();
  assert.ok(![...Deno.readDirSync(run.path)].some((e) => e.name === ".lock"));
});

Deno.test("results: create, open, metrics and writeMarkdown refuse an option they do not take, naming it", () => {
  const random = rng(43);
  const root = `${tempRoot}/options`;
  const run = ResultsDir.create("opts", { root });
  const losses = Array.from({ length: 3 + Math.floor(random() * 4) }, () => random());
  {
    using metrics = run.metrics();
    losses.forEach((loss, i) => metrics.write({ step: i + 1, loss }));
  }
  // A misspelt `resume` emptied the file it was meant to continue: refused, and the records stay.
  assert.throws(() => run.metrics({ resum: true } as never), /ResultsDir\.metrics: unknown option "resum"/);
  assert.throws(
    () => run.metrics({ resume: "yes" } as never),
    /option "resume" must be true or false, got "yes"/,
  );
  assert.deepEqual(readJsonl(run.file("metrics.jsonl")).map((r) => r.loss), losses);
  {
    using metrics = run.metrics({ resume: true });
    assert.deepEqual(metrics.records.map((r) => r.loss), losses);
  }
  assert.throws(() => run.writeMarkdown("# x", { fiel: "a.md" } as never), /unknown option "fiel"/);
  run.release();
  // A misspelt `root` wrote under ./results; a bad start time named the directory "NaNNaN...".
  const elsewhere = `${root}/elsewhere`;
  assert.throws(
    () => ResultsDir.create("opts", { rooot: elsewhere } as never),
    /create: unknown option "rooot"/,
  );
  assert.throws(() => ResultsDir.create("opts", { root: "" }), /option "root" must be at least 1 characters/);
  assert.throws(() => ResultsDir.create("opts", { root, startedAt: new Date(NaN) }), /option "startedAt"/);
  assert.throws(
    () => ResultsDir.open(run.path, "opts", { gitcwd: "." } as never),
    /open: unknown option "gitcwd"/,
  );
  assert.deepEqual([...Deno.readDirSync(`${root}/opts`)].map((e) => e.name), [run.path.split("/").at(-1)]);
});

Deno.test("results: git revision matches git itself in a fresh repository, 'unknown' outside one", () => {
  const repo = `${tempRoot}/repo`;
  Deno.mkdirSync(repo);
  const git = (...args: string[]) =>
    new Deno.Command("git", {
      args,
      cwd: repo,
      stdout: "piped",
      stderr: "piped",
      env: { GIT_CONFIG_NOSYSTEM: "1" },
    })
      .outputSync();
  let available = true;
  try {
    available = git("init", "-q").success;
  } catch {
    available = false;
  }
  if (!available) {
    assert.deepEqual(gitInfo({ cwd: repo }), { revision: "unknown", dirty: null });
    return;
  }
  assert.deepEqual(gitInfo({ cwd: repo }), { revision: "unknown", dirty: null }, "no commit yet");
  Deno.writeTextFileSync(`${repo}/a.txt`, "a\n");
  git("add", "a.txt");
  assert.ok(git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init").success);
  const head = new TextDecoder().decode(git("rev-parse", "HEAD").stdout).trim();
  assert.deepEqual(gitInfo({ cwd: repo }), { revision: head, dirty: false });
  Deno.writeTextFileSync(`${repo}/a.txt`, "changed\n");
  assert.deepEqual(gitInfo({ cwd: repo }), { revision: head, dirty: true });
  const run = ResultsDir.create("git", { root: `${tempRoot}/gitruns`, gitCwd: repo });
  assert.equal(run.git.revision, head);
});

Deno.test("results: mdTable layout, alignment and escaping", () => {
  const table = mdTable(["method", "loss", "note"], [["LoRA", 1.23456, "a|b"], [
    "PiSSA",
    0.000012345,
    "x\ny",
  ]]);
  const lines = table.trimEnd().split("\n");
  assert.equal(lines.length, 4);
  assert.equal(lines[0], "| method | loss | note |");
  assert.equal(lines[1], "| :--- | ---: | :--- |");
  assert.equal(lines[2], "| LoRA | 1.235 | a\\|b |");
  assert.equal(lines[3], "| PiSSA | 1.234e-5 | x<br>y |");
  assert.ok(table.endsWith("\n"));
  assert.throws(() => mdTable(["a", "b"], [["only one"]]), /row 0 has 1 cells, expected 2/);
});

Deno.test("results: meanStd matches a direct two-pass computation", () => {
  const random = rng(42);
  for (let trial = 0; trial < 20; trial++) {
    const n = 2 + Math.floor(random() * 30);
    const values = Array.from({ length: n }, () => random() * 100 - 30);
    const { mean, std, n: count } = meanStd(values);
    const expectedMean = values.reduce((a, b) => a + b, 0) / n;
    const expectedVar = values.reduce((a, b) => a + (b - expectedMean) ** 2, 0) / (n - 1);
    assert.equal(count, n);
    assert.ok(Math.abs(mean - expectedMean) < 1e-9);
    assert.ok(Math.abs(std - Math.sqrt(expectedVar)) < 1e-9);
  }
  assert.deepEqual(meanStd([3.5]), { mean: 3.5, std: 0, n: 1 });
  assert.deepEqual(meanStd([2, 4]), { mean: 3, std: Math.SQRT2, n: 2 });
  assert.throws(() => meanStd([]), /at least one value/);
});

Deno.test("results: configDifferences compares nested keys and lists, ignoring the keys given", () => {
  const random = rng(43);
  const lr = random();
  const stored = { lr, seeds: [0, 1], train: { steps: 100, clip: NaN }, resume: undefined };
  const current = { lr: lr * 2, seeds: [0, 1], train: { steps: 100, clip: NaN }, resume: "results/x" };
  assert.deepEqual(configDifferences(stored, current, new Set(["resume"])), [
    { key: "lr", stored: lr, current: lr * 2 },
  ]);
  assert.deepEqual(configDifferences(stored, { ...current, lr, seeds: [1, 0] }, new Set(["resume"])), [
    { key: "seeds", stored: [0, 1], current: [1, 0] },
  ]);
  // Objects inside lists (method specs) are compared whatever the order of their keys.
  const a = parseMethod("a=lora:rank=8,alpha=2");
  const b = parseMethod("a=lora:alpha=2,rank=8");
  assert.notEqual(JSON.stringify(a), JSON.stringify(b));
  assert.deepEqual(configDifferences({ methods: [a] }, { methods: [b] }), []);
  const entries = Array.from({ length: 6 }, (_, i) => [`k${i}`, { v: random(), w: [random()] }] as const);
  const shuffled = [...entries].sort(() => random() - 0.5).map(([k, v]) => [k, { w: v.w, v: v.v }] as const);
  assert.deepEqual(
    configDifferences({ list: [Object.fromEntries(entries)] }, {
      list: [Object.fromEntries(shuffled)],
    }),
    [],
  );
  assert.deepEqual(configDifferences({ methods: [a] }, { methods: [{ ...b, rank: 4 }] }).map((d) => d.key), [
    "methods",
  ]);
  assert.deepEqual(configDifferences({ a: { b: 1 } }, { a: { c: 1 } }), [
    { key: "a.b", stored: 1, current: undefined },
    { key: "a.c", stored: undefined, current: 1 },
  ]);
});

Deno.test("results: summarizeMetric matches an independent computation", () => {
  const random = rng(12);
  const losses = Array.from({ length: 40 }, () => random() * 3);
  const records: Record<string, unknown>[] = losses.map((loss, i) => ({ step: i, loss }));
  records.splice(5, 0, { step: -1, note: "no loss here" });
  records.push({ step: 99, loss: "NaN" });
  const s = summarizeMetric(records, "loss", { tail: 5 });
  assert.ok(s !== undefined);
  let min = losses[0];
  let max = losses[0];
  let sum = 0;
  for (const v of losses) {
    min = v < min ? v : min;
    max = v > max ? v : max;
    sum += v;
  }
  const tail = losses.slice(35);
  assert.equal(s.count, 40);
  assert.equal(s.nonFinite, 1);
  assert.equal(s.first, losses[0]);
  assert.equal(s.last, losses[39]);
  assert.equal(s.min, min);
  assert.equal(s.max, max);
  assert.ok(Math.abs(s.mean - sum / 40) < 1e-12);
  assert.ok(Math.abs(s.tailMean - (tail[0] + tail[1] + tail[2] + tail[3] + tail[4]) / 5) < 1e-12);
  assert.equal(summarizeMetric(records, "absent"), undefined);
});

Deno.test("results: a run killed and resumed records the wall time of both processes, from the first's start", async () => {
  const root = `${tempRoot}/killed`;
  const module = new URL("../../lab/results.ts", import.meta.url).href;
  // The first process writes how long it has worked beside its results until it is killed.
  const script = `import { ResultsDir } from "${module}";
const run = ResultsDir.create("killed", { root: ${JSON.stringify(root)} });
const start = performance.now();
console.log(run.path);
for (;;) {
  run.writeJson("progress.json", { seconds: (performance.now() - start) / 1000 });
  await new Promise((resolve) => setTimeout(resolve, 50));
}`;
  const { child, printed, stop } = await evalUntil(
    script,
    "\n",
    "the first process ended before printing its directory",
  );
  const path = printed.trim();
  await new Promise((resolve) => setTimeout(resolve, 700));
  child.kill("SIGKILL");
  await child.status;
  await stop();
  const first = JSON.parse(Deno.readTextFileSync(`${path}/progress.json`)).seconds;
  assert.ok(first >= 0.5, `the first process worked ${first} s`);
  const created = JSON.parse(Deno.readTextFileSync(`${path}/experiment.json`)).createdAt;

  const resumed = ResultsDir.open(path, "killed");
  busyWait(300);
  resumed.writeSummary({});
  const { run } = JSON.parse(Deno.readTextFileSync(`${path}/summary.json`));
  assert.equal(run.startedAt, created);
  assert.equal(run.segments.length, 2);
  assert.ok(
    run.segments[0].seconds >= first,
    `first segment ${run.segments[0].seconds} s, worked ${first} s`,
  );
  assert.ok(run.segments[1].seconds >= 0.3, `second segment ${run.segments[1].seconds} s`);
  assert.ok(Math.abs(run.wallSeconds - run.segments[0].seconds - run.segments[1].seconds) < 1e-9);
  assert.ok(run.wallSeconds >= first + 0.3, `wall ${run.wallSeconds} s`);
  // What the summary says is kept for the next resume: a third process adds its part to the two.
  resumed.release();
  const third = ResultsDir.open(path, "killed");
  busyWait(100);
  third.writeSummary({});
  const again = JSON.parse(Deno.readTextFileSync(`${path}/summary.json`)).run;
  assert.equal(again.segments.length, 3);
  assert.ok(
    again.wallSeconds >= run.wallSeconds + 0.1,
    `wall ${again.wallSeconds} s after ${run.wallSeconds} s`,
  );
  assert.equal(again.startedAt, created);
  third.release();
});
