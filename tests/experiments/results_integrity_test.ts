/**
 * Results that cannot be silently mixed, corrupted or wrong (issue 16), through exp:eva on the cpu device (shrunk
 * further than --quick):
 *
 * - item 1: `--resume` with a changed key (the learning rate, the step count) is refused naming each key with both
 *   values, and the record is left as it was; `--extend` makes a run longer, continues every run from its last
 *   checkpoint and records the extension;
 * - item 2: a directory whose lock a live process holds is refused naming the holder; a stale lock is taken over;
 * - item 3: `--resume` refuses a directory the experiment did not create (a user's own, another experiment's);
 * - item 4 and 13: duplicate or empty lists, and YAML's `.nan`, are configuration errors naming the key and value;
 * - item 9: `--data` without `--model`, and a tokenizer whose vocabulary differs from the model's, are refused
 *   saying what to pass;
 * - item 10: a reused run file with a `null` loss or nothing in it names the file and how to have it rerun;
 * - item 11: temporary files of interrupted writes are removed on resume; errors are one line, no stack trace;
 * - the report's init share column is what its header says, and runs under one label are refused;
 * - a run's own `config.yaml` given back as `--config` repeats the run, and is refused from another set-up.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { parseYaml, stringifyYaml } from "../../lab/deps.ts";
import { serializeTokenizer } from "../../lib/io/tokenizer.ts";
import { LM_SETUP_REVISION } from "../../lab/lm.ts";

const SCRIPT = new URL("../../experiments/eva.ts", import.meta.url).pathname;
const STORIES = new URL("../../../shared/data/models/stories260K/stories260K.bin", import.meta.url).pathname;
/** `args` without the `--pretrain-steps` flag and its value. */
function withoutPretrainSteps(args: readonly string[]): string[] {
  return args.filter((a, i) => a !== "--pretrain-steps" && args[i - 1] !== "--pretrain-steps");
}

const ARGS = [
  "--quick",
  "--device",
  "cpu",
  "--steps",
  "4",
  "--pretrain-steps",
  "10",
  "--calib-batches",
  "2",
  "--val-batches",
  "1",
  "--methods",
  "lora,pissa",
  "--seeds",
  "0",
  "--targets",
  "wq,wv",
  "--rank",
  "2",
  "--batch-size",
  "4",
  "--seq-len",
  "16",
];

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

interface Out {
  code: number;
  stdout: string;
  stderr: string;
}

async function eva(cwd: string, args: string[]): Promise<Out> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    cwd,
    env: { DEBUG: "0" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** Copies a results directory (its files, not its lock) to `to`. */
async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.name === ".lock") continue;
    if (e.isDirectory) await copyDir(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

const runFile = (dir: string) => `${dir}/runs/lora-seed0.json`;
const losses = (dir: string): number[] => JSON.parse(Deno.readTextFileSync(runFile(dir))).losses;
const noStack = (r: Out) => ok(!/^\s+at /m.test(r.stderr), `a stack trace reached the user:\n${r.stderr}`);

Deno.test("--resume: changed keys, locks, foreign directories, damaged run files, leftovers and --extend", async (t) => {
  const cwd = await Deno.makeTempDir();
  const first = await eva(cwd, ARGS);
  equal(first.code, 0, first.stderr.slice(-2000));
  const dir = `${cwd}/${/exp:eva → (\S+)/.exec(first.stdout)![1]}`;
  const arg = (d: string) => d.slice(cwd.length + 1);
  const original = losses(dir);
  equal(original.length, 4);

  await t.step(
    "the init share column is 100·init/(init + train) of the run files, as its header says",
    () => {
      const lines = Deno.readTextFileSync(`${dir}/summary.md`).split("\n");
      const head = lines.findIndex((l) => l.startsWith("| method |") && l.includes("init % of"));
      const cells = (line: string) => line.split("|").map((c) => c.trim());
      const columns = cells(lines[head]);
      const index = columns.indexOf("init % of (init + train) time");
      ok(index > 0, lines[head]);
      for (const label of ["lora", "pissa"]) {
        const r = JSON.parse(Deno.readTextFileSync(`${dir}/runs/${label}-seed0.json`));
        const row = lines.slice(head + 2).find((l) => l.startsWith(`| ${label} |`))!;
        const shown = Number(cells(row)[index].split(" ")[0]);
        const share = (100 * r.initSeconds) / (r.initSeconds + r.trainSeconds);
        ok(
          Math.abs(shown - share) <= 0.005 * share,
          `${label}: ${shown} shown, 100·init/(init + train) = ${share}`,
        );
      }
    },
  );

  await t.step("a changed learning rate and step count are refused, naming both values of each", async () => {
    const record = await Deno.readFile(`${dir}/config.yaml`);
    const r = await eva(cwd, [...ARGS, "--resume", arg(dir), "--lr", "0.01", "--steps", "8"]);
    equal(r.code, 2, r.stderr);
    match(
      r.stderr,
      /was run with a different configuration:\n {2}lr: 0\.003 in the run, 0\.01 now\n {2}steps: 4 in the run, 8 now\n/,
    );
    // config.yaml records the adapter and extensions beside the settings: it is no --config file, so the message
    // asks for the values, not for that file.
    match(
      r.stderr,
      /\nResume with the run's value of each key above \(.*\/config\.yaml records them all\), start a new run without --resume, or make the run longer with --extend \(only --steps may change\)\.\n/,
    );
    deepEqual(await Deno.readFile(`${dir}/config.yaml`), record, "config.yaml is not rewritten");
    noStack(r);
  });

  await t.step(
    "a recorded value that differs from the current one only past 80 characters is shown whole",
    async () => {
      // As when a run made on one device setting (a launch policy, a thread count) is resumed under another: the
      // device line is long and the difference sits at its end.
      const copy = `${cwd}/results/eva/long-adapter`;
      await copyDir(dir, copy);
      // The record --resume compares is experiment.json's (config.yaml is its readable copy).
      const file = `${copy}/experiment.json`;
      const record = JSON.parse(Deno.readTextFileSync(file));
      const now = String(record.config.adapter);
      const then = `${now}${", with an environment setting".repeat(3)}`;
      ok(then.length > 90, then);
      record.config.adapter = then;
      Deno.writeTextFileSync(file, JSON.stringify(record));
      const r = await eva(cwd, [...ARGS, "--resume", arg(copy)]);
      equal(r.code, 2, r.stderr);
      ok(
        r.stderr.includes(`  adapter: ${JSON.stringify(then)} in the run, ${JSON.stringify(now)} now\n`),
        r.stderr,
      );
      noStack(r);
    },
  );

  await t.step(
    "a run of an older set-up (data, calibration batches) is refused, naming both revisions",
    async () => {
      const old = `${cwd}/results/eva/older`;
      await copyDir(dir, old);
      const rec = JSON.parse(await Deno.readTextFile(`${old}/experiment.json`));
      equal(rec.config.setupRevision, LM_SETUP_REVISION);
      delete rec.config.setupRevision;
      await Deno.writeTextFile(`${old}/experiment.json`, JSON.stringify(rec));
      const r = await eva(cwd, [...ARGS, "--resume", arg(old)]);
      equal(r.code, 2, r.stderr);
      match(
        r.stderr,
        new RegExp(
          `was run with set-up revision \\(not set\\) of exp:eva \\(its data or calibration batches\\), now ` +
            `${LM_SETUP_REVISION}: its runs cannot be reused; start a new run without --resume`,
        ),
      );
      noStack(r);
    },
  );

  await t.step("a lock held by a live process is refused naming it", async () => {
    const holder = {
      pid: Deno.pid,
      host: Deno.hostname(),
      since: new Date().toISOString(),
      purpose: "the test",
    };
    await Deno.writeTextFile(`${dir}/.lock`, JSON.stringify(holder));
    const r = await eva(cwd, [...ARGS, "--resume", arg(dir)]);
    await Deno.remove(`${dir}/.lock`);
    equal(r.code, 2, r.stderr);
    match(r.stderr, new RegExp(`locked by process ${Deno.pid} on this host since .* \\(the test\\)`));
    noStack(r);
  });

  await t.step("directories the experiment did not create are refused and left alone", async () => {
    const own = `${cwd}/mine`;
    await Deno.mkdir(own);
    await Deno.writeTextFile(`${own}/config.yaml`, "my: settings\n");
    await Deno.writeTextFile(`${own}/summary.md`, "# my notes\n");
    const foreign = `${cwd}/results/cntlora/x`;
    await copyDir(dir, foreign);
    const rec = JSON.parse(await Deno.readTextFile(`${foreign}/experiment.json`));
    await Deno.writeTextFile(`${foreign}/experiment.json`, JSON.stringify({ ...rec, experiment: "cntlora" }));
    const [a, b] = await Promise.all([
      eva(cwd, [...ARGS, "--resume", "mine"]),
      eva(cwd, [...ARGS, "--resume", arg(foreign)]),
    ]);
    equal(a.code, 2, a.stderr);
    match(a.stderr, /"mine" is not a results directory of "eva" \(it has no experiment\.json\)/);
    equal(await Deno.readTextFile(`${own}/config.yaml`), "my: settings\n");
    equal(await Deno.readTextFile(`${own}/summary.md`), "# my notes\n");
    equal([...Deno.readDirSync(own)].length, 2);
    equal(b.code, 2, b.stderr);
    match(b.stderr, /holds results of "cntlora", not "eva"/);
  });

  await t.step(
    "a reused run file with a null loss, or an empty one, names the file and how to rerun it",
    async () => {
      const nullLoss = `${cwd}/results/eva/null-loss`;
      const empty = `${cwd}/results/eva/empty`;
      await copyDir(dir, nullLoss);
      await copyDir(dir, empty);
      const run = JSON.parse(await Deno.readTextFile(runFile(nullLoss)));
      run.losses[2] = null;
      await Deno.writeTextFile(runFile(nullLoss), JSON.stringify(run));
      await Deno.writeTextFile(runFile(empty), "{}");
      const [a, b] = await Promise.all([
        eva(cwd, [...ARGS, "--resume", arg(nullLoss)]),
        eva(cwd, [...ARGS, "--resume", arg(empty)]),
      ]);
      equal(a.code, 1, a.stderr);
      match(
        a.stderr,
        /"[^"]*null-loss\/runs\/lora-seed0\.json" does not hold what this experiment saves \("losses\[2\]": expected a number \(or "NaN", "Infinity", "-Infinity"\), got null\); remove it \(rm "[^"]*"\) and resume again/,
      );
      equal(b.code, 1, b.stderr);
      match(
        b.stderr,
        /"[^"]*empty\/runs\/lora-seed0\.json" does not hold what this experiment saves \("label"/,
      );
      for (const r of [a, b]) noStack(r);
    },
  );

  await t.step(
    "--extend makes the run longer from its checkpoints; a stale lock and leftovers are cleaned",
    async () => {
      // A lock left by a process that no longer runs, and temporary files of interrupted writes.
      const dead = {
        pid: 4_194_305,
        host: Deno.hostname(),
        since: "2020-01-01T00:00:00Z",
        purpose: "killed",
      };
      await Deno.writeTextFile(`${dir}/.lock`, JSON.stringify(dead));
      await Deno.writeTextFile(`${dir}/checkpoints/lora-seed0.safetensors.tmp-4194305-a1b2c3d4e5f6`, "half");
      await Deno.writeTextFile(`${dir}/runs/.pissa-seed0.json.4194305.0badf00d.tmp`, "half");
      const r = await eva(cwd, [...ARGS, "--resume", arg(dir), "--extend", "--steps", "6"]);
      equal(r.code, 0, r.stderr.slice(-2000));
      match(r.stdout, /removed 2 temporary file\(s\) left by interrupted writes/);
      match(r.stdout, /extended: steps 4 → 6 \(recorded in .*config\.yaml\)/);
      match(r.stdout, /lora seed 0: extending runs\/lora-seed0\.json from 4 to 6 steps/);
      const longer = losses(dir);
      equal(longer.length, 6);
      deepEqual(longer.slice(0, 4), original, "the first 4 steps are the run's own");
      const yaml = parseYaml(await Deno.readTextFile(`${dir}/config.yaml`)) as Record<string, unknown>;
      equal(yaml.steps, 6);
      deepEqual(
        (yaml.extended as { key: string; from: number; to: number }[]).map((e) => [e.key, e.from, e.to]),
        [
          ["steps", 4, 6],
        ],
      );
      ok(![...Deno.readDirSync(`${dir}/runs`)].some((e) => e.name.endsWith(".tmp")));
      // Shortening is not extending.
      const shorter = await eva(cwd, [...ARGS, "--resume", arg(dir), "--extend", "--steps", "5"]);
      equal(shorter.code, 2);
      match(shorter.stderr, /--extend makes the run longer: --steps must be more than the run's 6, got 5/);
      // Without --extend, a shorter run is refused with no hint to extend it.
      const fewer = await eva(cwd, [...ARGS, "--resume", arg(dir), "--steps", "5"]);
      equal(fewer.code, 2);
      match(fewer.stderr, /steps: 6 in the run, 5 now\n.* or start a new run without --resume\.\n/);
      ok(!fewer.stderr.includes("--extend"), fewer.stderr);
    },
  );
  await Deno.remove(cwd, { recursive: true });
});

Deno.test("duplicate, empty and NaN settings, and mismatched or missing companions, are refused up front", async () => {
  const cwd = await Deno.makeTempDir();
  await Deno.writeTextFile(`${cwd}/nan.yaml`, "lr: .nan\n");
  await Deno.writeTextFile(`${cwd}/text.txt`, "Once upon a time there was a cat. ".repeat(200));
  // A tokenizer with 1,188 tokens for a model with 512.
  const pieces = Array.from(
    { length: 1188 },
    (_, i) => ({ piece: i < 256 ? `<0x${i}>` : `t${i}`, score: -i }),
  );
  await Deno.writeFile(`${cwd}/tok1188.bin`, serializeTokenizer(pieces));
  const [seeds, methods, empty, nan, data, vocab] = await Promise.all([
    eva(cwd, [...ARGS, "--seeds", "0,0"]),
    eva(cwd, [...ARGS, "--methods", "lora,lora"]),
    eva(cwd, [...ARGS, "--seeds", ""]),
    eva(cwd, [...ARGS, "--config", "nan.yaml"]),
    eva(cwd, [...ARGS, "--data", "text.txt"]),
    // --pretrain-steps sizes the generated base only, and is refused beside --model.
    eva(cwd, [
      ...withoutPretrainSteps(ARGS),
      "--model",
      STORIES,
      "--tokenizer",
      "tok1188.bin",
      "--data",
      "text.txt",
    ]),
  ]);
  for (const r of [seeds, methods, empty, nan, data]) equal(r.code, 2, r.stderr);
  match(seeds.stderr, /config key "seeds": 0 is given twice \(each value may appear once/);
  match(methods.stderr, /config key "methods": "lora" is given twice/);
  match(empty.stderr, /config key "seeds": needs at least one value, got \[\] \(from flag --seeds\)/);
  match(nan.stderr, /config key "lr": expected number, got NaN \(from file "nan\.yaml"\)/);
  match(
    data.stderr,
    /--data needs --model and --tokenizer: the built-in base is pretrained on the generated/,
  );
  equal(vocab.code, 1, vocab.stderr);
  match(
    vocab.stderr,
    /the data has a vocabulary of 1188 tokens \(tokenizer "tok1188\.bin"\) but model ".*stories260K\.bin" has 512: pass --tokenizer with the tokenizer the model was trained with/,
  );
  noStack(vocab);
  // Nothing but the vocabulary check (which needs the files loaded) got as far as a results directory.
  equal([...Deno.readDirSync(`${cwd}/results/eva`)].length, 1);
  await Deno.remove(cwd, { recursive: true });
});

Deno.test("exp:eva judges a claim only on the method it names, and an odd batch size reaches the report", async () => {
  const cwd = await Deno.makeTempDir();
  // "lora" runs PiSSA here, and "eva-rho2" is EVA at an odd batch size (its stability check halves it).
  const args = ARGS.map((a, i) =>
    a === "lora,pissa" ? "lora=pissa,eva-rho2" : ARGS[i - 1] === "--batch-size" ? "5" : a
  );
  const r = await eva(cwd, args);
  equal(r.code, 0, r.stderr);
  match(r.stdout, /Not judged: the claims name the default methods, and "lora" ran lora=pissa here/);
  ok(!/converges faster than Noise & Zeros/.test(r.stdout), "a claim about LoRA was judged on PiSSA's runs");
  match(r.stdout, /EVA's components are stable across calibration batch sizes/);
  await Deno.remove(cwd, { recursive: true });
});

Deno.test("a --method named like a run the experiment derives is refused before anything runs", async () => {
  const cwd = await Deno.makeTempDir();
  const run = async (script: string, args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(`../../experiments/${script}`, import.meta.url).pathname, ...args],
      cwd,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: decode(out.stderr) };
  };
  const cnt = ["--quick", "--seeds", "0", "--calib-counts", "1", "--method", "cntlora-x=cntlora:mode=x"];
  const [n1, mean, fixed, noise] = await Promise.all([
    run("cntlora.ts", [...cnt, "--method", "cntlora-x-n1=lora"]),
    run("cntlora.ts", [...cnt, "--method", "cntlora-x-mean-n1=pissa"]),
    run("cntlora.ts", [...cnt, "--method", "cntlora-x-fixed=lora", "--calib-batches", "3"]),
    run("gap_init.ts", [
      "--quick",
      "--noise",
      "1",
      "--method",
      "gap-r1",
      "--method",
      "gap-r1-noise1=lora:rank=1",
    ]),
  ]);
  for (const r of [n1, mean, fixed, noise]) {
    equal(r.code, 2, r.stderr);
    match(r.stderr, /and the two runs would share one result file; rename the --method label/);
  }
  match(
    n1.stderr,
    /--method cntlora-x-n1=lora: "cntlora-x-n1" is also the label of Table 3's cntlora-x, Gram XXᵀ \(literal\), with 1 calibration batch/,
  );
  match(mean.stderr, /"cntlora-x-mean-n1" is also the label of Table 3's cntlora-x, Gram XXᵀ\/b, with 1 /);
  match(fixed.stderr, /"cntlora-x-fixed" is also the label of Table 3's cntlora-x, Gram XXᵀ, .* with all 3 /);
  match(
    noise.stderr,
    /--method gap-r1-noise1=lora:rank=1: "gap-r1-noise1" is also the label of the noise ablation/,
  );
  deepEqual([...Deno.readDirSync(cwd)], [], "nothing was written");
  await Deno.remove(cwd, { recursive: true });
});

/** The per-run losses of a results directory, by run file. */
function runLosses(dir: string): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const e of Deno.readDirSync(`${dir}/runs`)) {
    if (e.name.endsWith(".json")) {
      out[e.name] = JSON.parse(Deno.readTextFileSync(`${dir}/runs/${e.name}`)).losses;
    }
  }
  return out;
}

// A run's own config.yaml given back as --config repeats the run: the keys it records beside its settings (the
// adapter, the set-up revision, what keys resolved to) are not unknown settings; another set-up revision is refused.
Deno.test("exp:eva repeats a run from its config.yaml given as --config, and refuses one of another set-up", async () => {
  const cwd = await Deno.makeTempDir();
  try {
    const first = await eva(cwd, ARGS);
    equal(first.code, 0, first.stderr.slice(-2000));
    const dir = `${cwd}/${/exp:eva → (\S+)/.exec(first.stdout)![1]}`;
    const recorded = parseYaml(Deno.readTextFileSync(`${dir}/config.yaml`)) as Record<string, unknown>;
    equal(typeof recorded.adapter, "string", "the record holds the adapter");
    equal(typeof recorded.setupRevision, "number", "the record holds the set-up revision");

    const again = await eva(cwd, ["--config", `${dir}/config.yaml`]);
    equal(again.code, 0, again.stderr.slice(-2000));
    const dir2 = `${cwd}/${/exp:eva → (\S+)/.exec(again.stdout)![1]}`;
    const l1 = runLosses(dir);
    equal(Object.keys(l1).length, 2);
    deepEqual(runLosses(dir2), l1, "the same settings on the same device give the same losses");

    const other = `${cwd}/other.yaml`;
    Deno.writeTextFileSync(
      other,
      stringifyYaml({ ...recorded, setupRevision: Number(recorded.setupRevision) + 1 }),
    );
    const refused = await eva(cwd, ["--config", other]);
    equal(refused.code, 2, refused.stdout);
    match(
      refused.stderr,
      /other\.yaml" was recorded by set-up revision \d+ of exp:eva .* remove setupRevision/,
    );
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
