/**
 * A run's own `config.yaml` given back as `--config` repeats the run: its settings are read, the keys it records
 * beside them (the adapter, the set-up revision, what keys resolved to) are not taken for unknown settings, and a
 * file recorded by another set-up revision is refused naming it.
 */
import { deepEqual, equal, match } from "node:assert/strict";
import { parseYaml, stringifyYaml } from "../../lab/deps.ts";

const SCRIPT = new URL("../../experiments/eva.ts", import.meta.url).pathname;
const ARGS = ["--quick", "--device", "cpu", "--steps", "3", "--pretrain-steps", "8", "--calib-batches", "1"]
  .concat([
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
  ])
  .concat(["--batch-size", "4", "--seq-len", "16"]);

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

async function run(cwd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", SCRIPT, ...args], cwd }).output();
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** The per-run losses of a results directory, by file name. */
function losses(dir: string): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const e of Deno.readDirSync(`${dir}/runs`)) {
    if (e.name.endsWith(".json")) {
      out[e.name] = JSON.parse(Deno.readTextFileSync(`${dir}/runs/${e.name}`)).losses;
    }
  }
  return out;
}

Deno.test("exp:eva repeats a run from its config.yaml given as --config, and refuses one of another set-up", async () => {
  const cwd = await Deno.makeTempDir();
  try {
    const first = await run(cwd, ARGS);
    equal(first.code, 0, first.stderr.slice(-2000));
    const dir = `${cwd}/${/exp:eva → (\S+)/.exec(first.stdout)![1]}`;
    const recorded = parseYaml(Deno.readTextFileSync(`${dir}/config.yaml`)) as Record<string, unknown>;
    equal(typeof recorded.adapter, "string", "the record holds the adapter");
    equal(typeof recorded.setupRevision, "number", "the record holds the set-up revision");

    const again = await run(cwd, ["--config", `${dir}/config.yaml`]);
    equal(again.code, 0, again.stderr.slice(-2000));
    const dir2 = `${cwd}/${/exp:eva → (\S+)/.exec(again.stdout)![1]}`;
    const l1 = losses(dir);
    equal(Object.keys(l1).length, 2);
    deepEqual(losses(dir2), l1, "the same settings on the same device give the same losses");

    const other = `${cwd}/other.yaml`;
    Deno.writeTextFileSync(
      other,
      stringifyYaml({ ...recorded, setupRevision: Number(recorded.setupRevision) + 1 }),
    );
    const refused = await run(cwd, ["--config", other]);
    equal(refused.code, 2, refused.stdout);
    match(
      refused.stderr,
      /other\.yaml" was recorded by set-up revision \d+ of exp:eva .* remove setupRevision/,
    );
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
