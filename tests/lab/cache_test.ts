/**
 * The lab's cache entries: built into a temporary folder named as the atomic writes name theirs (bounded to 255
 * bytes, so a long key still works) and renamed into place; loaded afterwards without building.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { cachedEntry, cachedPretrained } from "../../lab/cache.ts";
import { TestRng } from "../_helpers.ts";

Deno.test("cachedEntry builds a long-named entry once (its temporary folder stays within 255 bytes) and reloads it", async () => {
  const rng = new TestRng(91);
  const root = await Deno.makeTempDir();
  // 250 bytes of key, with multibyte characters: '<key>.tmp-<pid>-<random>' would pass 255 (before: "File name
  // too long" after the whole build).
  const key = "é".repeat(100) + "k".repeat(50);
  const value = Array.from({ length: 5 }, () => rng.int(0, 1000));
  let builds = 0;
  const options = {
    root,
    key,
    marker: "v.json",
    what: "test entry",
    load: async (dir: string) => JSON.parse(await Deno.readTextFile(`${dir}/v.json`)) as number[],
    build: () => {
      builds++;
      return Promise.resolve(value);
    },
    save: async (v: number[], dir: string) => {
      ok(new TextEncoder().encode(dir.slice(dir.lastIndexOf("/") + 1)).length <= 255, dir);
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${dir}/v.json`, JSON.stringify(v));
    },
  };
  const first = await cachedEntry(options);
  deepEqual([first.value, first.cached], [value, false]);
  const again = await cachedEntry(options);
  deepEqual([again.value, again.cached, builds], [value, true, 1]);
  equal([...Deno.readDirSync(root)].length, 1, "no temporary folder left");
  await Deno.remove(root, { recursive: true });
});

Deno.test("cachedEntry names an entry directory without its marker before building, and builds nothing", async () => {
  const rng = new TestRng(92);
  const root = await Deno.makeTempDir();
  const key = `k${rng.int(0, 1e6)}`;
  await Deno.mkdir(`${root}/${key}`);
  await Deno.writeTextFile(`${root}/${key}/other.txt`, String(rng.next()));
  let builds = 0;
  await rejects(
    cachedEntry({
      root,
      key,
      marker: "v.json",
      what: "test entry",
      load: async (dir: string) => await Deno.readTextFile(`${dir}/v.json`),
      build: () => (builds++, Promise.resolve("v")),
      save: async (v: string, dir: string) => {
        await Deno.mkdir(dir, { recursive: true });
        await Deno.writeTextFile(`${dir}/v.json`, v);
      },
    }),
    new RegExp(`test entry "${root}/${key}" is incomplete: it has no v\\.json\\. Remove the directory`),
  );
  equal(builds, 0);
  deepEqual([...Deno.readDirSync(root)].map((e) => e.name), [key], "no temporary folder left");
  await Deno.remove(root, { recursive: true });
});

Deno.test("cachedPretrained refuses an option or a spec key it does not take, before building anything", async () => {
  // { cachedir } was dropped (the model went under .cache/base); a spec key it does not read changed the entry's
  // key yet not the model.
  const root = await Deno.makeTempDir();
  const spec = { model: {} as never, steps: 2, batchSize: 2, seqLen: 4, lr: 1e-3, seed: 0 };
  const tokens = new Int32Array(16);
  await rejects(
    cachedPretrained(spec, tokens, { cachedir: root } as never),
    /cachedPretrained: unknown option "cachedir"/,
  );
  await rejects(
    cachedPretrained({ ...spec, warmup: 0.1 } as never, tokens, { cacheDir: root }),
    /cachedPretrained: spec: unknown option "warmup"/,
  );
  await rejects(
    cachedPretrained({ ...spec, lr: NaN }, tokens, { cacheDir: root }),
    /option "lr" must be a finite/,
  );
  deepEqual([...Deno.readDirSync(root)], []);
  await Deno.remove(root);
});
