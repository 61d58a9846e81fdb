/**
 * The lab's cache entries: built into a temporary folder named as the atomic writes name theirs (bounded to 255
 * bytes, so a long key still works) and renamed into place; loaded afterwards without building. A build works in
 * the entry's working directory, kept when it stops and removed once the entry is in place; the base model's
 * pretraining, killed, continues from its checkpoint there to the model of an uninterrupted run; a process asking
 * for an entry another builds waits for it.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { cachedEntry, cachedPretrained, cacheKey, cacheWorkDir } from "../../lab/cache.ts";
import { loadCheckpoint } from "../../mod.ts";
import { evalUntil, TestRng } from "../_helpers.ts";

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

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);
const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** A text entry of `root` whose build counts itself and records the working directory it was given. */
function textEntry(root: string, key: string, build: (work: string) => Promise<string>) {
  return {
    root,
    key,
    marker: "v.json",
    what: "test entry",
    load: async (dir: string) => JSON.parse(await Deno.readTextFile(`${dir}/v.json`)) as string,
    build,
    save: async (v: string, dir: string) => {
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${dir}/v.json`, JSON.stringify(v));
    },
  };
}

Deno.test("cachedEntry keeps a failed build's working directory for the next build of the entry, and removes it once the entry is in place", async () => {
  const rng = new TestRng(93);
  const root = await Deno.makeTempDir();
  const key = `k${rng.int(0, 1e6)}`;
  const works: string[] = [];
  const failing = textEntry(root, key, async (work) => {
    works.push(work);
    await Deno.writeTextFile(`${work}/done.txt`, "half");
    throw new Error("stopped midway");
  });
  await rejects(cachedEntry(failing), /stopped midway/);
  const kept = await Deno.readTextFile(`${cacheWorkDir(root, key)}/done.txt`);
  // Another entry (another configuration) gets a working directory of its own, empty.
  const other = await cachedEntry(textEntry(root, `${key}x`, (work) => {
    works.push(work);
    return Promise.resolve(
      [...Deno.readDirSync(work)].map((e) => e.name).filter((n) => n !== ".lock").join(","),
    );
  }));
  equal(other.value, "");
  const done = await cachedEntry(textEntry(root, key, async (work) => {
    works.push(work);
    return await Deno.readTextFile(`${work}/done.txt`) + " and the rest";
  }));
  deepEqual([kept, done.value, done.cached], ["half", "half and the rest", false]);
  deepEqual(works, [cacheWorkDir(root, key), cacheWorkDir(root, `${key}x`), cacheWorkDir(root, key)]);
  deepEqual(
    [...Deno.readDirSync(root)].map((e) => e.name).sort(),
    [key, `${key}x`],
    "working directories left",
  );
  await Deno.remove(root, { recursive: true });
});

Deno.test("cachedEntry waits while another process builds the entry (holds its working directory's lock), then loads it", async () => {
  const rng = new TestRng(94);
  const root = await Deno.makeTempDir();
  const key = `k${rng.int(0, 1e6)}`;
  const work = cacheWorkDir(root, key);
  const lock = new URL("../../lab/lock.ts", import.meta.url).href;
  // The other process holds the lock, publishes the entry a moment later, removes its working directory and ends.
  const script = `import { acquireLock } from "${lock}";
await Deno.mkdir(${JSON.stringify(work)}, { recursive: true });
const lock = acquireLock(${JSON.stringify(`${work}/.lock`)}, "a test build");
console.log("locked");
await new Promise((resolve) => setTimeout(resolve, 800));
await Deno.mkdir(${JSON.stringify(`${root}/${key}.tmp-${Deno.pid}-0a`)});
await Deno.writeTextFile(${JSON.stringify(`${root}/${key}.tmp-${Deno.pid}-0a/v.json`)}, '"theirs"');
await Deno.rename(${JSON.stringify(`${root}/${key}.tmp-${Deno.pid}-0a`)}, ${
    JSON.stringify(`${root}/${key}`)
  });
await Deno.remove(${JSON.stringify(work)}, { recursive: true });
lock.release();`;
  const { child, stop } = await evalUntil(script, "locked", "the other process ended before taking the lock");
  let builds = 0;
  const entry = await cachedEntry(textEntry(root, key, () => (builds++, Promise.resolve("ours"))));
  equal((await child.status).code, 0);
  await stop();
  deepEqual([entry.value, entry.cached, builds], ["theirs", true, 0]);
  ok(!await exists(work), "a working directory was left");
  await Deno.remove(root, { recursive: true });
});

Deno.test("cachedPretrained killed (SIGKILL) during pretraining continues from its checkpoint, to the model of an uninterrupted run", async () => {
  const root = await Deno.makeTempDir();
  const spec = {
    model: {
      dim: 16,
      hiddenDim: 32,
      nLayers: 1,
      nHeads: 2,
      nKvHeads: 1,
      vocabSize: 32,
      seqLen: 16,
      sharedClassifier: true,
    },
    steps: 1500,
    batchSize: 4,
    seqLen: 16,
    lr: 3e-3,
    seed: 5,
  };
  const tokensOf = "Int32Array.from({ length: 4096 }, (_, i) => (i * 7 + (i >> 3)) % 32)";
  const tokens = Int32Array.from({ length: 4096 }, (_, i) => (i * 7 + (i >> 3)) % 32);
  const opts = { checkpointEvery: 50 };
  const key = cacheKey(JSON.stringify(spec), tokens);
  const checkpoint = `${cacheWorkDir(`${root}/a`, key)}/checkpoint.safetensors`;
  const cache = new URL("../../lab/cache.ts", import.meta.url).href;
  const script = `import { cachedPretrained } from "${cache}";
await cachedPretrained(${JSON.stringify(spec)}, ${tokensOf}, ${
    JSON.stringify({ ...opts, cacheDir: `${root}/a` })
  });`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  let ended = false;
  output.then(() => ended = true);
  while (!ended && !await exists(checkpoint)) await new Promise((resolve) => setTimeout(resolve, 10));
  if (!ended) child.kill("SIGKILL");
  const out = await output;
  equal(out.signal, "SIGKILL", `no checkpoint before the end: ${decode(out.stderr).slice(-2000)}`);
  ok(
    !await exists(`${root}/a/${key}/model.safetensors`),
    "the pretraining ended before the kill; lengthen it",
  );
  const step = (await loadCheckpoint(checkpoint)).step;
  ok(step > 0 && step % 50 === 0 && step < spec.steps, `checkpoint at step ${step}`);

  const resumed = await cachedPretrained(spec, tokens, { ...opts, cacheDir: `${root}/a` });
  deepEqual([resumed.cached, resumed.continuedFrom], [false, step]);
  ok(!await exists(`${root}/a/.partial`), "the working directory was left");
  const whole = await cachedPretrained(spec, tokens, { ...opts, cacheDir: `${root}/b` });
  deepEqual([whole.cached, whole.continuedFrom], [false, 0]);
  deepEqual(
    await Deno.readFile(`${root}/a/${key}/model.safetensors`),
    await Deno.readFile(`${root}/b/${key}/model.safetensors`),
  );
  const again = await cachedPretrained(spec, tokens, { ...opts, cacheDir: `${root}/a` });
  deepEqual([again.cached, again.continuedFrom], [true, 0]);
  await Deno.remove(root, { recursive: true });
});
