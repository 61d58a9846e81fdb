import assert from "node:assert/strict";
import { removeTemporaries, writeFileAtomic, writeTextFileAtomic } from "../../lib/io/mod.ts";
import { freshSeed, Rng } from "./_rng.ts";

async function listNames(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

Deno.test("writeFileAtomic writes bytes and text, replaces files, creates parents and leaves no temp files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(freshSeed());
    const bytes = Uint8Array.from({ length: 5000 }, () => rng.int(0, 255));
    const path = `${dir}/a/b/data.bin`;
    await writeFileAtomic(path, bytes);
    assert.deepEqual(await Deno.readFile(path), bytes);

    const replacement = Uint8Array.from({ length: 17 }, () => rng.int(1, 255));
    await writeFileAtomic(path, replacement);
    assert.deepEqual(await Deno.readFile(path), replacement);

    const textPath = `${dir}/a/notes.txt`;
    await writeTextFileAtomic(textPath, "héllo ✓\n");
    assert.equal(await Deno.readTextFile(textPath), "héllo ✓\n");
    await writeFileAtomic(textPath, "second");
    assert.equal(await Deno.readTextFile(textPath), "second");

    assert.deepEqual(await listNames(`${dir}/a/b`), ["data.bin"]);
    assert.deepEqual(await listNames(`${dir}/a`), ["b", "notes.txt"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic failure removes the temp file and leaves the target untouched", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The target is a non-empty directory, so the final rename must fail.
    const target = `${dir}/target`;
    await Deno.mkdir(target);
    await Deno.writeTextFile(`${target}/keep.txt`, "original");
    await assert.rejects(
      writeFileAtomic(target, "new contents"),
      (err: Error) => err.message.includes(`could not write "${target}" atomically`),
    );
    assert.deepEqual(await listNames(dir), ["target"], "no temporary file left behind");
    assert.equal(await Deno.readTextFile(`${target}/keep.txt`), "original");

    // A parent path that is a file cannot become a directory: the error names the path.
    const file = `${dir}/plain`;
    await Deno.writeTextFile(file, "x");
    await assert.rejects(
      writeFileAtomic(`${file}/child.bin`, new Uint8Array([1])),
      (err: Error) =>
        err.message.includes(`could not write "${file}/child.bin": cannot make its folder "${file}"`),
    );
    assert.equal(await Deno.readTextFile(file), "x");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic keeps the permissions of the file it replaces; a new file gets those of a plain write", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(freshSeed());
    const mode = (path: string) => Deno.statSync(path).mode! & 0o777;
    for (const bits of [0o600, 0o640, 0o604, 0o700, 0o666, rng.int(0o400, 0o777)]) {
      const path = `${dir}/key-${bits.toString(8)}.bin`;
      await Deno.writeFile(path, new Uint8Array([rng.int(0, 255)]));
      Deno.chmodSync(path, bits);
      await writeFileAtomic(path, Uint8Array.from({ length: 9 }, () => rng.int(0, 255)));
      assert.equal(mode(path).toString(8), bits.toString(8));
    }
    Deno.writeTextFileSync(`${dir}/plain.txt`, "x");
    await writeTextFileAtomic(`${dir}/atomic.txt`, "x");
    assert.equal(mode(`${dir}/atomic.txt`), mode(`${dir}/plain.txt`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic writes names up to 255 bytes, takes only / as a separator on POSIX, and refuses a folder path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(freshSeed());
    // Names of 240 to 255 bytes, some of 2- and 3-byte characters: the temporary name must fit as well.
    for (let i = 0; i < 8; i++) {
      let name = "";
      const length = rng.int(240, 255);
      while (new TextEncoder().encode(name).length < length - 3) name += ["a", "é", "✓"][rng.int(0, 2)];
      name += "b".repeat(length - new TextEncoder().encode(name).length);
      const text = `file ${i}`;
      await writeTextFileAtomic(`${dir}/${name}`, text);
      assert.equal(await Deno.readTextFile(`${dir}/${name}`), text);
      assert.deepEqual(await listNames(dir), [name]);
      await Deno.remove(`${dir}/${name}`);
    }
    // On POSIX a backslash is part of a name: a\b.bin is one file, not b.bin in a folder a.
    await writeFileAtomic(`${dir}/a\\b.bin`, new Uint8Array([rng.int(0, 255)]));
    assert.deepEqual(await listNames(dir), ["a\\b.bin"]);
    // A path that ends in "/" names a folder: refused before the folder is made.
    for (const path of [`${dir}/sub/`, `${dir}/sub/..`, `${dir}/sub/.`]) {
      await assert.rejects(
        writeFileAtomic(path, "x"),
        new Error(`could not write "${path}": it names a folder, not a file`),
      );
    }
    assert.deepEqual(await listNames(dir), ["a\\b.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("removeTemporaries refuses a misspelt option instead of removing nothing", () => {
  const dir = Deno.makeTempDirSync();
  const left = `${dir}/ckpt.safetensors.tmp-999999-a1b2c3`;
  Deno.writeTextFileSync(left, "half a file");
  // Dropped, { owner: "all" } kept the default "dead" with every pid taken as alive: nothing was removed.
  assert.throws(
    () => removeTemporaries(dir, { owner: "all" } as never),
    /removeTemporaries: unknown option "owner"/,
  );
  assert.throws(() => removeTemporaries(dir, { owners: "any" } as never), /removeTemporaries: .*"owners"/);
  assert.deepEqual(removeTemporaries(dir, { owners: "all" }), [left]);
});
