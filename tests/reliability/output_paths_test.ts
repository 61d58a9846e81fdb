/**
 * Outputs never overwrite inputs (issue 16, item 5): `deno task init --out` naming the weights file (by any
 * spelling: a relative path, `..`, a symbolic link, a hard link) or a calibration file is refused before anything is
 * read or written, and an output inside an input directory is refused by the same check.
 */
import { deepEqual, rejects, throws } from "node:assert/strict";
import { runInit } from "../../cli/init.ts";
import { writeSafetensors } from "../../lib/io/safetensors.ts";
import { refuseOutputOnInput } from "../../lib/io/paths.ts";
import { TestRng } from "../_helpers.ts";

Deno.test("init refuses an --out that is its --weights or --activations file, by any spelling", async () => {
  const rng = new TestRng(701);
  const dir = await Deno.makeTempDir();
  const weights = `${dir}/w.safetensors`;
  await writeSafetensors(weights, { "blk.q.weight": { dtype: "F32", shape: [6, 4], data: rng.normals(24) } });
  await writeSafetensors(`${dir}/x.safetensors`, {
    "blk.q.input": { dtype: "F32", shape: [5, 4], data: rng.normals(20) },
  });
  const before = await Deno.readFile(weights);
  await Deno.symlink(weights, `${dir}/link.safetensors`);
  await Deno.link(weights, `${dir}/hard.safetensors`);
  await Deno.mkdir(`${dir}/sub`);
  // A link followed by "..": the system goes up from the link's target (elsewhere), not from the link's folder.
  await Deno.mkdir(`${dir}/b`);
  await Deno.symlink(`${dir}/sub`, `${dir}/b/l`);
  const args = (out: string, extra: string[] = []) => [
    "--method",
    "pissa",
    "--weights",
    weights,
    "--rank",
    "2",
    "--device",
    "cpu",
    "--out",
    out,
    ...extra,
  ];
  for (
    const out of [
      weights,
      `${dir}/sub/../w.safetensors`,
      `${dir}/link.safetensors`,
      `${dir}/hard.safetensors`,
      `${dir}/b/l/../w.safetensors`,
    ]
  ) {
    await rejects(
      runInit(args(out)),
      /--out ".*" is the --weights input ".*w\.safetensors": writing it would replace the input/,
      out,
    );
  }
  await rejects(
    runInit(args(`${dir}/x.safetensors`, ["--activations", `${dir}/x.safetensors`])),
    /--out ".*x\.safetensors" is the --activations input/,
  );
  deepEqual(await Deno.readFile(weights), before, "the weights file is untouched");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an output inside an input directory is refused; one beside it is fine", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/model`);
  await Deno.writeTextFile(`${dir}/model/config.json`, "{}");
  const input = [{ flag: "--model", path: `${dir}/model` }];
  throws(
    () => refuseOutputOnInput({ flag: "--out", path: `${dir}/model/adapter.safetensors` }, input),
    /--out ".*adapter\.safetensors" lies inside the --model input directory ".*model"/,
  );
  throws(() => refuseOutputOnInput({ flag: "--out", path: `${dir}/model` }, input), /is the --model input/);
  refuseOutputOnInput({ flag: "--out", path: `${dir}/model-adapter.safetensors` }, input);
  // Through a link followed by "..", into the directory; and a path whose missing tail climbs back into it.
  await Deno.mkdir(`${dir}/model/deep`);
  await Deno.symlink(`${dir}/model/deep`, `${dir}/l`);
  throws(
    () => refuseOutputOnInput({ flag: "--out", path: `${dir}/l/../a.safetensors` }, input),
    /lies inside/,
  );
  throws(
    () => refuseOutputOnInput({ flag: "--out", path: `${dir}/none/../model/a.safetensors` }, input),
    /lies inside/,
  );
  await Deno.remove(dir, { recursive: true });
});
