import assert from "node:assert/strict";
import { z } from "../../deps.ts";
import { ConfigError, ConfigHelp, configUsage, parseConfig } from "../../lab/config.ts";
import { TestRng } from "../_helpers.ts";

/** Small seeded PRNG (mulberry32) so every run draws the same fresh values. */
/** A uniform generator for test `seed` (mixed with TEST_SEED, so every run draws fresh values). */
function rng(seed: number): () => number {
  const r = new TestRng(seed);
  return () => r.next();
}

const Schema = z.object({
  lr: z.number().positive().default(0.1).describe("learning rate"),
  steps: z.int().positive().default(100).describe("training steps"),
  batchSize: z.int().default(8).describe("examples per step"),
  useBias: z.boolean().default(false).describe("train biases too"),
  method: z.enum(["lora", "pissa", "olora"]).default("lora").describe("init method"),
  ranks: z.array(z.int()).default([4, 8]).describe("ranks to sweep"),
  tag: z.string().default("run").describe("free-form tag"),
  train: z.object({
    lr: z.number().default(0.001).describe("optimizer step size"),
    warmupSteps: z.int().default(10).describe("linear warmup"),
  }).prefault({}),
});

const tempRoot = Deno.makeTempDirSync({ prefix: "config_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tempRoot, { recursive: true }));
let tempCount = 0;

function tempYaml(text: string): string {
  const path = `${tempRoot}/config${tempCount++}.yaml`;
  Deno.writeTextFileSync(path, text);
  return path;
}

/** Run `fn`, which must throw a ConfigError, and return that error. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("config: schema defaults < options.defaults < YAML < flags", () => {
  const random = rng(11);
  const yamlLr = Number((random() * 0.5 + 0.01).toFixed(6));
  const flagLr = Number((random() * 0.5 + 0.6).toFixed(6));
  const yamlWarmup = 1 + Math.floor(random() * 50);
  const yamlSteps = 200 + Math.floor(random() * 100);
  const defaultSteps = 10 + Math.floor(random() * 50);
  const defaultBatch = 16 + Math.floor(random() * 16);
  const path = tempYaml(`lr: ${yamlLr}\nsteps: ${yamlSteps}\ntrain:\n  warmupSteps: ${yamlWarmup}\n`);
  const config = parseConfig(Schema, ["--config", path, "--lr", String(flagLr)], {
    name: "test.ts",
    defaults: { steps: defaultSteps, batchSize: defaultBatch },
  });
  assert.equal(config.lr, flagLr, "flag overrides YAML");
  assert.equal(config.steps, yamlSteps, "YAML overrides options.defaults");
  assert.equal(config.batchSize, defaultBatch, "options.defaults override schema defaults");
  assert.equal(config.train.warmupSteps, yamlWarmup, "nested YAML value");
  assert.equal(config.train.lr, 0.001, "nested schema default kept beside a nested YAML value");
  assert.equal(config.tag, "run");
  assert.deepEqual(config.ranks, [4, 8]);
});

Deno.test("config: later --config files override earlier ones, flags override both", () => {
  const a = tempYaml("steps: 5\ntag: first\n");
  const b = tempYaml("steps: 7\n");
  const config = parseConfig(Schema, ["--config", a, "--config", b, "--tag=cli"], { name: "t" });
  assert.equal(config.steps, 7);
  assert.equal(config.tag, "cli");
});

Deno.test("config: unknown key in YAML is rejected, naming the key and the file", () => {
  const path = tempYaml("lr: 0.2\ntrain:\n  lrr: 0.5\n");
  const err = configError(() => parseConfig(Schema, ["--config", path], { name: "t" }));
  assert.match(err.message, /unknown config key "train\.lrr"/);
  assert.ok(err.message.includes(path), err.message);
  assert.match(err.message, /did you mean "train\.lr"/);
  assert.equal(err.exitCode, 2);

  const top = tempYaml("learning_rate: 0.2\n");
  assert.match(
    configError(() => parseConfig(Schema, ["--config", top], { name: "t" })).message,
    /"learning_rate"/,
  );
});

Deno.test("config: unknown flag is rejected, naming the key", () => {
  const err = configError(() => parseConfig(Schema, ["--bogus", "3", "--steps", "4"], { name: "t" }));
  assert.match(err.message, /unknown config key "bogus" \(from flag --bogus\)/);
  assert.equal(err.issues.length, 1, `the value after an unknown flag is not a second error: ${err.message}`);
  const nested = configError(() => parseConfig(Schema, ["--train.warmup-stepz=3"], { name: "t" }));
  assert.match(nested.message, /unknown config key "train\.warmupStepz"/);
  assert.match(nested.message, /did you mean "train\.warmupSteps"/);
});

Deno.test("config: unknown key in options.defaults is rejected", () => {
  const defaults = { nope: 1 } as unknown as Record<string, never>;
  const err = configError(() => parseConfig(Schema, [], { name: "t", defaults }));
  assert.match(err.message, /unknown config key "nope"/);
});

Deno.test("config: a wrong type names the key path, the expected type and the value", () => {
  const err = configError(() => parseConfig(Schema, ["--train.lr", "abc"], { name: "t" }));
  assert.ok(err.message.includes(`config key "train.lr": expected number, got "abc"`), err.message);
  assert.ok(err.message.includes("--train.lr"), "names the flag the value came from");

  const path = tempYaml("steps: many\nmethod: dora\n");
  const fromYaml = configError(() => parseConfig(Schema, ["--config", path], { name: "t" }));
  assert.ok(fromYaml.message.includes(`config key "steps": expected integer, got "many"`), fromYaml.message);
  assert.ok(
    fromYaml.message.includes(`config key "method": expected one of "lora"|"pissa"|"olora", got "dora"`),
  );
  assert.equal(fromYaml.issues.length, 2, "every problem is reported at once");

  const frac = configError(() => parseConfig(Schema, ["--steps", "2.5"], { name: "t" }));
  assert.ok(frac.message.includes(`config key "steps": expected integer, got 2.5`), frac.message);
  const negative = configError(() => parseConfig(Schema, ["--lr", "-1"], { name: "t" }));
  assert.match(negative.message, /config key "lr": .*got -1/);
});

Deno.test("config: a missing required key says how to set it", () => {
  const Required = z.object({ dataPath: z.string().describe("where the data is") });
  const err = configError(() => parseConfig(Required, [], { name: "t" }));
  assert.match(err.message, /config key "dataPath": expected string, got nothing/);
  assert.match(err.message, /--data-path/);
  assert.equal(parseConfig(Required, ["--data-path", "x.txt"], { name: "t" }).dataPath, "x.txt");
});

Deno.test("config: numeric strings are coerced for number keys", () => {
  const random = rng(5);
  for (let i = 0; i < 20; i++) {
    const lr = random() * 10 ** -Math.floor(random() * 6);
    const text = random() < 0.5 ? lr.toExponential(3) : lr.toPrecision(5);
    const config = parseConfig(Schema, ["--lr", text, `--train.lr=${-lr}`], { name: "t" });
    assert.equal(config.lr, Number(text));
    assert.equal(config.train.lr, -lr);
  }
  const path = tempYaml(`lr: "0.25"\n`);
  assert.equal(parseConfig(Schema, ["--config", path], { name: "t" }).lr, 0.25);
});

Deno.test("config: kebab-case flags map to camelCase keys", () => {
  const random = rng(3);
  const batch = 1 + Math.floor(random() * 100);
  const warmup = 1 + Math.floor(random() * 100);
  const config = parseConfig(Schema, ["--batch-size", String(batch), `--train.warmup-steps=${warmup}`], {
    name: "t",
  });
  assert.equal(config.batchSize, batch);
  assert.equal(config.train.warmupSteps, warmup);
  assert.equal(parseConfig(Schema, ["--batchSize", "3"], { name: "t" }).batchSize, 3, "camelCase works too");
});

Deno.test("config: booleans: --flag, --no-flag, --flag=false, YAML", () => {
  assert.equal(parseConfig(Schema, [], { name: "t" }).useBias, false);
  assert.equal(parseConfig(Schema, ["--use-bias"], { name: "t" }).useBias, true);
  assert.equal(parseConfig(Schema, ["--use-bias", "--no-use-bias"], { name: "t" }).useBias, false);
  assert.equal(parseConfig(Schema, ["--use-bias=false"], { name: "t" }).useBias, false);
  assert.equal(parseConfig(Schema, ["--use-bias=true"], { name: "t" }).useBias, true);
  const path = tempYaml("useBias: true\n");
  assert.equal(parseConfig(Schema, ["--config", path], { name: "t" }).useBias, true);
  assert.equal(parseConfig(Schema, ["--config", path, "--no-use-bias"], { name: "t" }).useBias, false);
  const bad = configError(() => parseConfig(Schema, ["--use-bias=maybe"], { name: "t" }));
  assert.match(bad.message, /config key "useBias": expected boolean, got "maybe"/);
});

Deno.test("config: a boolean that may be null is set to null by --flag=null, as --help says", () => {
  const Nullable = z.object({ gate: z.boolean().nullable().default(false).describe("gate the update") });
  assert.equal(parseConfig(Nullable, ["--gate=null"], { name: "t" }).gate, null);
  assert.equal(parseConfig(Nullable, ["--gate=true"], { name: "t" }).gate, true);
  assert.equal(parseConfig(Nullable, ["--gate", "--no-gate"], { name: "t" }).gate, false);
  assert.match(
    configUsage(Nullable, { name: "t" }),
    /--gate, --no-gate +gate the update \(may be null: --gate=null\)/,
  );
  // Where null is not allowed, "null" is a wrong value as before.
  const bad = configError(() => parseConfig(Schema, ["--use-bias=null"], { name: "t" }));
  assert.match(bad.message, /config key "useBias": expected boolean, got "null" \(from flag --use-bias\)/);
});

Deno.test("config: arrays from comma lists or YAML flow sequences", () => {
  assert.deepEqual(parseConfig(Schema, ["--ranks", "2,16,64"], { name: "t" }).ranks, [2, 16, 64]);
  assert.deepEqual(parseConfig(Schema, ["--ranks", "[1, 3]"], { name: "t" }).ranks, [1, 3]);
  const err = configError(() => parseConfig(Schema, ["--ranks", "1,x"], { name: "t" }));
  assert.match(err.message, /config key "ranks\[1\]"/);
});

Deno.test("config: positional arguments and flags without values are rejected", () => {
  assert.match(
    configError(() => parseConfig(Schema, ["oops"], { name: "t" })).message,
    /unexpected argument "oops"/,
  );
  assert.match(
    configError(() => parseConfig(Schema, ["--lr"], { name: "t" })).message,
    /flag --lr needs a value/,
  );
});

Deno.test("config: a flag followed by another flag has no value; a value starting with -- is given inline", () => {
  const random = rng(12);
  const steps = 1 + Math.floor(random() * 1000);
  const lr = Number((random() * 0.9 + 0.01).toFixed(4));
  // The flag after --tag is read as a flag (--steps still sets steps), not taken as the tag.
  const issues = (args: string[]) => configError(() => parseConfig(Schema, args, { name: "t" })).issues;
  assert.deepEqual(issues(["--tag", "--steps", String(steps)]), ["flag --tag needs a value (string)"]);
  assert.deepEqual(issues(["--tag", "--use-bias", "--lr", String(lr)]), [
    "flag --tag needs a value (string)",
  ]);
  assert.deepEqual(issues(["--ranks", "--no-use-bias"]), ["flag --ranks needs a value (integer[])"]);
  assert.deepEqual(issues(["--config", "--tag", "x"]), ["flag --config needs a YAML file path"]);
  assert.deepEqual(issues(["--tag", "--", "x"]), [
    "flag --tag needs a value (string)",
    'unexpected argument "x": settings are given as --key value',
  ]);
  for (const help of ["--help", "-h"]) {
    assert.throws(() => parseConfig(Schema, ["--tag", help], { name: "t" }), ConfigHelp);
  }
  // Inline, any value is taken whole; a single dash (a negative number) is a value.
  const inline = parseConfig(Schema, [`--tag=--steps`, "--steps", String(steps), "--train.lr", `-${lr}`], {
    name: "t",
  });
  assert.deepEqual([inline.tag, inline.steps, inline.train.lr], ["--steps", steps, -lr]);
});

Deno.test("config: unreadable or invalid YAML files are reported with their path", () => {
  const missing = `${tempRoot}/missing.yaml`;
  assert.ok(
    configError(() => parseConfig(Schema, ["--config", missing], { name: "t" })).message.includes(missing),
  );
  const list = tempYaml("- 1\n- 2\n");
  assert.match(
    configError(() => parseConfig(Schema, ["--config", list], { name: "t" })).message,
    /must hold a mapping/,
  );
  // A group left empty (its keys commented out) overrides nothing: its defaults and the file's other keys hold.
  const random = rng(12);
  const steps = 1 + Math.floor(random() * 1000);
  const empty = tempYaml(`train:\n#  lr: 0.5\nsteps: ${steps}\n`);
  const fromEmpty = parseConfig(Schema, ["--config", empty, "--config", empty], { name: "t" });
  assert.deepEqual(fromEmpty.train, { lr: 0.001, warmupSteps: 10 });
  assert.equal(fromEmpty.steps, steps);
  const earlier = tempYaml("train:\n  warmupSteps: 3\n");
  assert.equal(
    parseConfig(Schema, ["--config", earlier, "--config", empty], { name: "t" }).train.warmupSteps,
    3,
    "an empty group in a later file keeps an earlier file's values",
  );
  const scalarGroup = tempYaml("train: 3\n");
  assert.match(
    configError(() => parseConfig(Schema, ["--config", scalarGroup], { name: "t" })).message,
    /config key "train": expected mapping, got 3/,
  );
});

Deno.test("config: --help lists every key with its type, default and description", () => {
  let help: ConfigHelp | undefined;
  try {
    parseConfig(Schema, ["--lr", "0.5", "--help"], { name: "exp.ts", description: "Does rank matter?" });
  } catch (err) {
    if (err instanceof ConfigHelp) help = err;
    else throw err;
  }
  assert.ok(help !== undefined, "--help throws ConfigHelp");
  assert.equal(help.exitCode, 0);
  assert.ok(help instanceof ConfigError, "one catch block handles both");
  const usage = help.usage;
  assert.equal(usage, configUsage(Schema, { name: "exp.ts", description: "Does rank matter?" }));
  assert.match(usage, /exp\.ts/);
  assert.match(usage, /Does rank matter\?/);
  const expected: [string, string, string, string][] = [
    ["--lr", "number", "0.1", "learning rate"],
    ["--steps", "integer", "100", "training steps"],
    ["--batch-size", "integer", "8", "examples per step"],
    ["--use-bias", "--no-use-bias", "false", "train biases too"],
    ["--method", `"lora"|"pissa"|"olora"`, `"lora"`, "init method"],
    ["--ranks", "integer[]", "[4,8]", "ranks to sweep"],
    ["--tag", "string", `"run"`, "free-form tag"],
    ["--train.lr", "number", "0.001", "optimizer step size"],
    ["--train.warmup-steps", "integer", "10", "linear warmup"],
  ];
  const lines = usage.split("\n");
  for (const [flag, type, dflt, description] of expected) {
    const line = lines.find((l) =>
      l.trimStart().startsWith(`${flag} `) || l.trimStart().startsWith(`${flag},`)
    );
    assert.ok(line !== undefined, `usage lists ${flag}:\n${usage}`);
    assert.ok(line.includes(type), `${flag} shows its type ${type}: ${line}`);
    assert.ok(line.includes(`(default: ${dflt})`), `${flag} shows its default ${dflt}: ${line}`);
    assert.ok(line.includes(description), `${flag} shows its description: ${line}`);
  }
  assert.match(usage, /--config <file\.yaml>/);
  const withDefaults = configUsage(Schema, { name: "t", defaults: { steps: 7 } });
  assert.match(withDefaults, /--steps <integer>\s+training steps \(default: 7\)/);
});

Deno.test("config: schema keys that clash with built-in flags are refused", () => {
  assert.throws(
    () => parseConfig(z.object({ config: z.string() }), [], { name: "t" }),
    /clashes with the built-in/,
  );
});
