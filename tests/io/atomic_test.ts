import assert from "node:assert/strict";
import { writeFileAtomic, writeTextFileAtomic } from "../../lib/io/mod.ts";
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
