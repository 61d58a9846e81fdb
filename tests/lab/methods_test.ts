/** Method specs: the command-line form, YAML, validation by each initialisation's schema, and the config key. */
import { deepEqual, equal, match, throws } from "node:assert/strict";
import { z } from "../../deps.ts";
import {
  defaultLabels,
  formatMethod,
  methodsField,
  type MethodSpec,
  parseMethod,
} from "../../lab/methods.ts";
import { ConfigError, configUsage, parseConfig } from "../../lab/config.ts";
import { TestRng } from "../_helpers.ts";

Deno.test("method specs: the issue's examples read as written", () => {
  deepEqual(parseMethod("cnt-qr=cntlora:mode=x,split=qr"), {
    name: "cnt-qr",
    init: "cntlora",
    options: { mode: "x", split: "qr" },
  });
  deepEqual(parseMethod("pissa16=pissa:niter=16"), {
    name: "pissa16",
    init: "pissa",
    options: { niter: 16 },
  });
  deepEqual(parseMethod("dora=lora:useDora=true"), {
    name: "dora",
    init: "lora",
    options: {},
    useDora: true,
  });
  deepEqual(parseMethod("plus=lora:lr-ratio=4,rank=2,alpha=4,lr=0.01,use-rslora=false"), {
    name: "plus",
    init: "lora",
    options: {},
    lrRatio: 4,
    rank: 2,
    alpha: 4,
    lr: 0.01,
    useRslora: false,
  });
  // A bare name: a default of that name, else the initialisation itself.
  const defaults = [parseMethod("eva-rho1=eva:rho=1")];
  deepEqual(parseMethod("eva-rho1", defaults), defaults[0]);
  deepEqual(parseMethod("olora", defaults), { name: "olora", init: "olora", options: {} });
});

Deno.test("method specs: formatMethod and parseMethod are inverse on random specs", () => {
  const rng = new TestRng(1701);
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(0, xs.length - 1)];
  const makers: (() => MethodSpec)[] = [
    () => ({ name: "p", init: "pissa", options: { niter: rng.int(0, 30), exact: rng.int(0, 1) === 1 } }),
    () => ({ name: "l", init: "loram", options: { gain: pick(["log", "exact", 0.25]) } }),
    () => ({
      name: "c",
      init: "cntlora",
      options: { mode: pick(["x", "s", "sh"]), p: rng.int(0, 4) / 4, vas: rng.int(0, 1) === 1 },
    }),
    () => ({ name: "e", init: "eva", options: { rho: 1 + rng.int(0, 8) / 4, tau: 0.9 } }),
  ];
  for (let i = 0; i < 40; i++) {
    const spec: MethodSpec = {
      ...makers[rng.int(0, makers.length - 1)](),
      rank: rng.int(1, 64),
      lr: Number((rng.next() * 0.01 + 1e-4).toPrecision(6)),
      ...(rng.int(0, 1) === 1 ? { useDora: true } : {}),
      ...(rng.int(0, 1) === 1 ? { lrRatio: rng.int(2, 16) } : {}),
    };
    deepEqual(parseMethod(formatMethod(spec)), spec, formatMethod(spec));
  }
});

Deno.test("method specs: what the initialisation does not take, or takes otherwise, is refused by name", () => {
  throws(() => parseMethod("x=pissa:nitr=4"), /method "x=pissa:nitr=4": pissa option .*"nitr"/);
  throws(() => parseMethod("x=loram:basis=sine"), /loram option "basis": .*"dst"/);
  throws(() => parseMethod("x=cntlora:p=1.5"), /cntlora option "p"/);
  throws(() => parseMethod("x=nope"), /unknown initialisation "nope"; registered: lora, .*pissa/);
  throws(() => parseMethod("x=lora:rank=0"), /"rank"/);
  throws(() => parseMethod("x=lora:rank=2.5"), /"rank"/);
  throws(() => parseMethod("x=lora:useDora=maybe"), /"useDora"/);
  throws(() => parseMethod("x=lora:lr=-1"), /"lr"/);
  throws(() => parseMethod("x=lora:rank"), /expected key=value, got "rank"/);
  throws(() => parseMethod("x=lora:rank=2,rank=4"), /"rank" is given twice/);
  throws(() => parseMethod("a/b=lora"), /name "a\/b" must be letters/);
  throws(
    () => parseMethod("mystery", [parseMethod("a=lora")]),
    /method "mystery": expected one of "a" \(a default\), a registered initialisation \(lora, .*\) or NAME=INIT/,
  );
});

const Config = z.object({
  seeds: z.array(z.int()).default([0]),
  methods: methodsField(["lora", "eva-rho2=eva:rho=2", "pissa"], { provides: ["activations", "grads"] }),
});
const options = { name: "demo.ts", repeatable: { method: "methods" } };
const names = (args: string[]) => parseConfig(Config, args, options).methods.map((m) => m.name);

Deno.test("methods key: defaults, repeated --method, bare names, --methods lists and YAML", () => {
  deepEqual(names([]), ["lora", "eva-rho2", "pissa"]);
  const cfg = parseConfig(
    Config,
    ["--method", "g=loram:gain=0.5", "--method", "dora=lora:useDora=true"],
    options,
  );
  deepEqual(cfg.methods, [
    { name: "g", init: "loram", options: { gain: 0.5 } },
    { name: "dora", init: "lora", options: {}, useDora: true },
  ]);
  deepEqual(names(["--method", "eva-rho2", "--method", "milora"]), ["eva-rho2", "milora"]);
  deepEqual(names(["--methods", "pissa,lora"]), ["pissa", "lora"]);
  deepEqual(names(["--methods", "pissa", "--method", "c=cntlora:mode=sh,c=2"]), ["pissa", "c"]);
  const dir = Deno.makeTempDirSync();
  const yaml = `${dir}/methods.yaml`;
  Deno.writeTextFileSync(
    yaml,
    "methods:\n  - lora\n  - name: cnt-qr\n    init: cntlora\n    options: { mode: x, split: qr }\n    rank: 4\n",
  );
  deepEqual(parseConfig(Config, ["--config", yaml], options).methods, [
    { name: "lora", init: "lora", options: {} },
    { name: "cnt-qr", init: "cntlora", options: { mode: "x", split: "qr" }, rank: 4 },
  ]);
  // Flags replace the file's list.
  deepEqual(names(["--config", yaml, "--method", "pissa"]), ["pissa"]);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("methods key: errors name the entry, the key and where it came from", () => {
  const fails = (args: string[], pattern: RegExp) =>
    throws(() => parseConfig(Config, args, options), (e: unknown) => {
      equal((e as Error).constructor, ConfigError);
      match((e as Error).message, pattern);
      return true;
    });
  fails(
    ["--method", "x=pissa:niter=-1"],
    /config key "methods\[0\]": pissa option "niter".*\(from flag --method\)/,
  );
  fails(["--method", "a=lora", "--method", "a=pissa"], /config key "methods": "a" is given twice/);
  fails(["--method", "gap=gap-init"], /gap-init needs gap, which this experiment does not provide/);
  fails(["--methods", ""], /needs at least one method/);
  fails(["--method"], /flag --method needs a value/);
  const usage = configUsage(Config, options);
  match(usage, /--method <value>\s+add one entry to --methods/);
  match(usage, /--methods .*default: \["lora","eva-rho2=eva:rho=2","pissa"\]/);
});

Deno.test("defaultLabels: a claim's label counts only while it runs the default method of that name", () => {
  const defaults = ["lora", "eva-rho2=eva:rho=2", "pissa"];
  const run = ["lora=pissa", "eva-rho2=eva:rho=2", "dora=lora:useDora=true", "pissa=pissa:exact=true"]
    .map((m) => parseMethod(m, defaults.map((d) => parseMethod(d))));
  const { ok: judged, note } = defaultLabels(defaults, run);
  deepEqual(["lora", "eva-rho2", "dora", "pissa"].map(judged), [false, true, true, false]);
  equal(
    note,
    'Not judged: the claims name the default methods, and "lora" ran lora=pissa, "pissa" ran pissa=pissa:exact=true here.',
  );
  equal(defaultLabels(defaults, defaults.map((d) => parseMethod(d))).note, null);
});
