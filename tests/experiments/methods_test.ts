/**
 * Methods from the command line reach an experiment: `exp:init-sweep --method g=loram:basis=gaussian --method
 * dora=lora:useDora=true` runs exactly those two methods, records their specs in config.yaml, and each run trains
 * what its spec says (DoRA's magnitudes are among the trained tensors of the DoRA run only).
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { parseYaml } from "../../lab/deps.ts";
import { readSafetensors } from "../../lib/io/safetensors.ts";

Deno.test("exp:init-sweep runs exactly the methods given with --method", async () => {
  const dir = await Deno.makeTempDir();
  const script = new URL("../../experiments/init_sweep.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      script,
      "--quick",
      "--steps",
      "3",
      "--pretrain-steps",
      "20",
      "--val-batches",
      "1",
      "--ranks",
      "2",
      "--method",
      "g=loram:basis=gaussian",
      "--method",
      "dora=lora:useDora=true",
    ],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(out.code, 0, new TextDecoder().decode(out.stderr).slice(-3000));
  const [run] = [...Deno.readDirSync(`${dir}/results/init-sweep`)].map((e) =>
    `${dir}/results/init-sweep/${e.name}`
  );
  deepEqual([...Deno.readDirSync(`${run}/runs`)].map((e) => e.name).sort(), [
    "dora-r2-seed0.json",
    "g-r2-seed0.json",
  ]);
  const config = parseYaml(Deno.readTextFileSync(`${run}/config.yaml`)) as { methods: unknown };
  deepEqual(config.methods, [
    { name: "g", init: "loram", options: { basis: "gaussian" } },
    { name: "dora", init: "lora", options: {}, useDora: true },
  ]);
  const trained = async (
    name: string,
  ) => [...(await readSafetensors(`${run}/checkpoints/${name}-r2-seed0.safetensors`)).tensors.keys()];
  ok((await trained("dora")).some((k) => k.endsWith("lora_magnitude_vector")), "DoRA trains magnitudes");
  ok(!(await trained("g")).some((k) => k.endsWith("lora_magnitude_vector")), "LoRAM does not");
  await Deno.remove(dir, { recursive: true });
});
