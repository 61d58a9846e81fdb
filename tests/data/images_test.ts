import assert from "node:assert/strict";
import {
  loadEmojiPack,
  loadMnist,
  loadOptdigits,
  MAX_GUNZIP_BYTES,
  rgbaOnWhite,
  Rng,
} from "../../lib/data/mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

const DATA_DIR = decodeURIComponent(new URL("../../../shared/data/", import.meta.url).pathname);
const haveData = (() => {
  try {
    return Deno.statSync(DATA_DIR).isDirectory;
  } catch {
    return false;
  }
})();

function histogram(values: Uint8Array, k: number): number[] {
  const counts = new Array(k).fill(0);
  for (const v of values) counts[v]++;
  return counts;
}

/** Builds an IDX file by hand: big-endian int32 header words followed by the payload bytes. */
function idxBytes(header: number[], payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 * header.length + payload.length);
  const view = new DataView(out.buffer);
  header.forEach((word, i) => view.setInt32(4 * i, word, false));
  out.set(payload, 4 * header.length);
  return out;
}

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

Deno.test({
  name: "loadMnist on the shared t10k files: 10k 28×28 images with the documented label counts",
  ignore: !haveData,
  fn: async () => {
    const dir = `${DATA_DIR}images/mnist`;
    const mnist = await loadMnist(`${dir}/t10k-images-idx3-ubyte.gz`, `${dir}/t10k-labels-idx1-ubyte.gz`);
    assert.equal(mnist.n, 10_000);
    assert.equal(mnist.rows, 28);
    assert.equal(mnist.cols, 28);
    assert.equal(mnist.images.length, 10_000 * 784);
    assert.equal(mnist.labels.length, 10_000);
    assert.deepEqual(histogram(mnist.labels, 10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    // The first test digit of MNIST is a 7. Digits sit on a zero background with some ink.
    assert.equal(mnist.labels[0], 7);
    let ink = 0;
    for (const p of mnist.images) if (p > 0) ink++;
    const fraction = ink / mnist.images.length;
    assert.ok(fraction > 0.1 && fraction < 0.3, `ink fraction ${fraction}`);
    // Border pixels of the first image are background.
    for (let x = 0; x < 28; x++) assert.equal(mnist.images[x], 0);
  },
});

Deno.test("loadMnist reads raw and gzip'd IDX files with identical, exact contents", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(31);
    const n = 5;
    const pixels = Uint8Array.from({ length: n * 4 * 3 }, () => 1 + rng.int(255));
    const labels = Uint8Array.from({ length: n }, () => rng.int(10));
    await Deno.writeFile(`${dir}/img.idx`, idxBytes([2051, n, 4, 3], pixels));
    await Deno.writeFile(`${dir}/lab.idx`, idxBytes([2049, n], labels));
    await Deno.writeFile(`${dir}/img.idx.gz`, await gzip(idxBytes([2051, n, 4, 3], pixels)));
    await Deno.writeFile(`${dir}/lab.idx.gz`, await gzip(idxBytes([2049, n], labels)));
    // Two gzip members one after another (as `cat a.gz b.gz` makes); gunzip reads their concatenation.
    const whole = idxBytes([2051, n, 4, 3], pixels);
    const members = [await gzip(whole.subarray(0, 30)), await gzip(whole.subarray(30))];
    await Deno.writeFile(`${dir}/img.idx.2.gz`, new Uint8Array([...members[0], ...members[1]]));
    await Deno.writeFile(`${dir}/lab.idx.2.gz`, await gzip(idxBytes([2049, n], labels)));
    for (const suffix of ["", ".gz", ".2.gz"]) {
      const data = await loadMnist(`${dir}/img.idx${suffix}`, `${dir}/lab.idx${suffix}`);
      assert.equal(data.n, n);
      assert.equal(data.rows, 4);
      assert.equal(data.cols, 3);
      assert.deepEqual(data.images, pixels);
      assert.deepEqual(data.labels, labels);
      assert.equal(data.images.byteOffset, 0);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadMnist errors name the file and the problem", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const pixels = Uint8Array.from({ length: 3 * 2 * 2 }, (_, i) => 10 + i);
    const labels = new Uint8Array([3, 1, 4]);
    const img = `${dir}/img.idx`;
    const lab = `${dir}/lab.idx`;
    await Deno.writeFile(img, idxBytes([2051, 3, 2, 2], pixels));
    await Deno.writeFile(lab, idxBytes([2049, 3], labels));

    const badMagic = `${dir}/bad_magic.idx`;
    await Deno.writeFile(badMagic, idxBytes([2052, 3, 2, 2], pixels));
    await assert.rejects(loadMnist(badMagic, lab), (err: Error) => {
      assert.match(err.message, /bad_magic\.idx/);
      assert.match(err.message, /expected magic 2051 but found 2052/);
      return true;
    });
    // Swapped arguments: the labels file is passed as images.
    await assert.rejects(
      loadMnist(lab, img),
      /lab\.idx": expected magic 2051 but found 2049 \(an IDX1 labels/,
    );

    const truncated = `${dir}/truncated.idx`;
    await Deno.writeFile(truncated, idxBytes([2051, 3, 2, 2], pixels.subarray(0, 7)));
    await assert.rejects(loadMnist(truncated, lab), (err: Error) => {
      assert.match(err.message, /truncated\.idx" is truncated/);
      assert.match(err.message, /3 images of 2×2/);
      assert.match(err.message, /has 23 bytes/);
      return true;
    });
    const truncatedGz = `${dir}/truncated.idx.gz`;
    const whole = await gzip(idxBytes([2051, 3, 2, 2], pixels));
    await Deno.writeFile(truncatedGz, whole.subarray(0, whole.length - 12));
    await assert.rejects(
      loadMnist(truncatedGz, lab),
      /truncated\.idx\.gz" looks gzip'd but could not be decompressed/,
    );

    const shortHeader = `${dir}/short.idx`;
    await Deno.writeFile(shortHeader, new Uint8Array([0, 0, 8, 3, 0, 0, 0]));
    await assert.rejects(loadMnist(shortHeader, lab), /short\.idx" is too short .* has 7 bytes/);

    const fewLabels = `${dir}/few_labels.idx`;
    await Deno.writeFile(fewLabels, idxBytes([2049, 2], labels.subarray(0, 2)));
    await assert.rejects(
      loadMnist(img, fewLabels),
      /hold 3 images but labels ".*few_labels\.idx" hold 2 labels/,
    );

    const labelsTruncated = `${dir}/lab_truncated.idx`;
    await Deno.writeFile(labelsTruncated, idxBytes([2049, 3], labels.subarray(0, 1)));
    await assert.rejects(loadMnist(img, labelsTruncated), /lab_truncated\.idx" is truncated/);

    const badLabel = `${dir}/lab_200.idx`;
    await Deno.writeFile(badLabel, idxBytes([2049, 3], new Uint8Array([3, 200, 4])));
    await assert.rejects(
      loadMnist(img, badLabel),
      /lab_200\.idx": the label at index 1 is 200; labels must be digits 0\.\.9/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "loadOptdigits on optdigits.tes / .tra: row counts, class counts, first row matches the CSV",
  ignore: !haveData,
  fn: async () => {
    const path = `${DATA_DIR}images/optdigits/optdigits.tes`;
    const tes = await loadOptdigits(path);
    assert.equal(tes.n, 1797);
    assert.equal(tes.images.length, 1797 * 64);
    assert.deepEqual(histogram(tes.labels, 10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    assert.ok(tes.images.every((v) => v <= 16));
    const secondLine = (await Deno.readTextFile(path)).split("\n")[1].trim().split(",").map(Number);
    assert.deepEqual(Array.from(tes.images.subarray(0, 64)), secondLine.slice(0, 64));
    assert.equal(tes.labels[0], secondLine[64]);

    const tra = await loadOptdigits(`${DATA_DIR}images/optdigits/optdigits.tra`);
    assert.equal(tra.n, 3823);
  },
});

Deno.test("loadOptdigits: header optional, malformed rows give the file and line number", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(8);
    const rows = Array.from(
      { length: 4 },
      () => [...Array.from({ length: 64 }, () => rng.int(17)), rng.int(10)],
    );
    const header = [...Array.from({ length: 64 }, (_, i) => `Block ${i + 1}`), "Class"].join(",");
    const body = rows.map((r) => r.join(","));

    const withHeader = `${dir}/with_header.csv`;
    await Deno.writeTextFile(withHeader, [header, ...body].join("\r\n") + "\r\n");
    const withoutHeader = `${dir}/without_header.csv`;
    await Deno.writeTextFile(withoutHeader, body.join("\n"));
    for (const path of [withHeader, withoutHeader]) {
      const data = await loadOptdigits(path);
      assert.equal(data.n, 4);
      assert.deepEqual(Array.from(data.images), rows.flatMap((r) => r.slice(0, 64)));
      assert.deepEqual(Array.from(data.labels), rows.map((r) => r[64]));
    }

    const short = `${dir}/short_row.csv`;
    await Deno.writeTextFile(short, [header, body[0], rows[1].slice(1).join(","), body[2]].join("\n"));
    await assert.rejects(loadOptdigits(short), (err: Error) => {
      assert.match(err.message, /short_row\.csv" line 3/);
      assert.match(err.message, /expected 65 comma-separated values .* but found 64/);
      return true;
    });
    const sixtyThree = `${dir}/sixty_three.csv`;
    await Deno.writeTextFile(sixtyThree, [header, rows[0].slice(2).join(",")].join("\n"));
    await assert.rejects(loadOptdigits(sixtyThree), /sixty_three\.csv" line 2: expected 65 .* found 63/);

    const outOfRange = `${dir}/out_of_range.csv`;
    const bad = [...rows[0]];
    bad[10] = 17;
    await Deno.writeTextFile(outOfRange, [body[0], bad.join(",")].join("\n"));
    await assert.rejects(
      loadOptdigits(outOfRange),
      /out_of_range\.csv" line 2: pixel 11 must be an integer in 0\.\.16 but found "17"/,
    );

    const badClass = `${dir}/bad_class.csv`;
    await Deno.writeTextFile(badClass, [header, [...rows[0].slice(0, 64), "x"].join(",")].join("\n"));
    await assert.rejects(
      loadOptdigits(badClass),
      /bad_class\.csv" line 2: the class .* 0\.\.9 but found "x"/,
    );

    // A first row with a corrupt first field is a data row with an error, not a header.
    const corruptFirst = `${dir}/corrupt_first.csv`;
    await Deno.writeTextFile(
      corruptFirst,
      [["?", ...rows[0].slice(1)].join(","), ...body.slice(1)].join("\n"),
    );
    await assert.rejects(
      loadOptdigits(corruptFirst),
      /corrupt_first\.csv" line 1: pixel 1 .* but found "\?"/,
    );

    const empties: [string, string | Uint8Array][] = [
      ["empty.csv", ""],
      ["header_only.csv", header + "\n"],
      ["cr_only.csv", "\r"],
    ];
    for (const [name, content] of empties) {
      const path = `${dir}/${name}`;
      await (typeof content === "string" ? Deno.writeTextFile(path, content) : Deno.writeFile(path, content));
      await assert.rejects(
        loadOptdigits(path),
        new RegExp(`${name.replace(".", "\\.")}" holds no data rows`),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadOptdigits refuses bytes that are not UTF-8 and skips only the exact Block 1,…,Class header", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new TestRng(5121);
    const rows = Array.from(
      { length: rng.int(1, 5) },
      () => [...Array.from({ length: 64 }, () => rng.int(0, 16)), rng.int(0, 9)].join(","),
    );
    const header = [...Array.from({ length: 64 }, (_, i) => `Block ${i + 1}`), "Class"];
    // A Latin-1 header ("é" is one byte 0xE9) before good rows, and a Latin-1 line alone.
    const latin1 = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
    const k = rng.int(0, 64);
    const accented = header.map((f, i) => (i === k ? `${f}é` : f)).join(",");
    for (
      const [name, bytes] of [
        ["latin1_header.csv", latin1([accented, ...rows].join("\n") + "\n")],
        ["latin1_line.csv", latin1("donnée\n")],
      ] as const
    ) {
      const path = `${dir}/${name}`;
      await Deno.writeFile(path, bytes);
      await assert.rejects(loadOptdigits(path), (e: Error) => {
        assert.equal(e.message, `optdigits file "${path}" is not valid UTF-8 (${bytes.length} bytes)`);
        return true;
      });
    }
    // Any first line other than the header is a data row: a near-header or stray text is refused at line 1.
    const near = header.map((f, i) => (i === k ? f.toUpperCase() : f)).join(",");
    for (const [name, first, found] of [["near_header.csv", near, 65], ["text.csv", "digits", 1]] as const) {
      const path = `${dir}/${name}`;
      await Deno.writeTextFile(path, [first, ...rows].join("\n"));
      await assert.rejects(loadOptdigits(path), new RegExp(`${name.replace(".", "\\.")}" line 1: `));
      if (found !== 65) {
        await assert.rejects(loadOptdigits(path), new RegExp(`expected 65 .* but found ${found}`));
      }
    }
    const spaced = `${dir}/spaced_header.csv`;
    await Deno.writeTextFile(spaced, [header.join(" , "), ...rows].join("\r\n"));
    assert.equal((await loadOptdigits(spaced)).n, rows.length, `TEST_SEED ${TEST_SEED}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "the shared optdigits files open with the exact header that loadOptdigits skips",
  ignore: !haveData,
  fn: async () => {
    const header = [...Array.from({ length: 64 }, (_, i) => `Block ${i + 1}`), "Class"].join(",");
    for (const f of ["optdigits.tes", "optdigits.tra"]) {
      const text = await Deno.readTextFile(`${DATA_DIR}images/optdigits/${f}`);
      assert.equal(text.split("\n")[0].replace(/\r$/, ""), header, f);
      assert.equal(
        (await loadOptdigits(`${DATA_DIR}images/optdigits/${f}`)).n,
        text.trim().split("\n").length - 1,
      );
    }
  },
});

Deno.test({
  name: "loadEmojiPack on the shared pack: 3526 images, 10 groups, index aligned with pixels",
  ignore: !haveData,
  fn: async () => {
    const dir = `${DATA_DIR}vl/noto_emoji32/`; // trailing slash on purpose
    const pack = await loadEmojiPack(dir);
    assert.equal(pack.n, 3526);
    assert.equal(pack.rgba.length, 14_442_496);
    assert.equal(pack.rows.length, 3526);
    assert.equal(new Set(pack.rows.map((r) => r.group)).size, 10);
    assert.deepEqual(pack.rows.map((r) => r.idx), Array.from({ length: 3526 }, (_, i) => i));
    assert.equal(pack.rows[0].name, "grinning face");
    assert.equal(pack.rows[0].group, "Smileys & Emotion");
    assert.equal(pack.rows[0].subgroup, "face-smiling");
    assert.equal(pack.rows[0].codepoints, "1F600");
    // Independent count of the index lines and a group count from the raw TSV.
    const tsv = (await Deno.readTextFile(`${dir}index.tsv`)).trimEnd().split("\n");
    assert.equal(tsv.length - 1, 3526);
    const flags = tsv.slice(1).filter((line) => line.split("\t")[4] === "Flags").length;
    assert.equal(pack.rows.filter((r) => r.group === "Flags").length, flags);
    // Every emoji has some opaque pixels and the corners of most are transparent.
    let transparentCorners = 0;
    for (let i = 0; i < pack.n; i++) {
      const base = i * 4096;
      let maxAlpha = 0;
      for (let p = 0; p < 1024; p++) maxAlpha = Math.max(maxAlpha, pack.rgba[base + 4 * p + 3]);
      assert.ok(maxAlpha > 0, `emoji ${i} is fully transparent`);
      if (pack.rgba[base + 3] === 0) transparentCorners++;
    }
    assert.ok(transparentCorners > pack.n / 2);

    const rgb = rgbaOnWhite(pack.rgba.subarray(0, 4096));
    assert.equal(rgb.length, 32 * 32 * 3);
    assert.ok(rgb.every((v) => v >= 0 && v <= 1));
  },
});

Deno.test("loadEmojiPack errors name the file: pixel size and index row mismatches", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const header = "idx\tcodepoints\tnoto_png\tstatus\tgroup\tsubgroup\temoji_version\tname";
    const row = (i: number) =>
      `${i}\t1F60${i}\tpng/32/x.png\tfully-qualified\tSmileys & Emotion\tface\tE1.0\tface ${i}`;
    const rng = new Rng(77);
    const pixels = Uint8Array.from({ length: 2 * 4096 }, () => rng.int(256));
    await Deno.writeFile(`${dir}/noto_emoji32_rgba.u8.gz`, await gzip(pixels));

    await Deno.writeTextFile(`${dir}/index.tsv`, [header, row(0), row(1)].join("\n") + "\n");
    const pack = await loadEmojiPack(dir);
    assert.equal(pack.n, 2);
    assert.deepEqual(pack.rgba, pixels);
    assert.deepEqual(pack.rows[1], {
      idx: 1,
      codepoints: "1F601",
      group: "Smileys & Emotion",
      subgroup: "face",
      name: "face 1",
    });

    await Deno.writeTextFile(`${dir}/index.tsv`, [header, row(0)].join("\n"));
    await assert.rejects(
      loadEmojiPack(dir),
      /index\.tsv" has 1 rows but ".*noto_emoji32_rgba\.u8\.gz" holds 2 images/,
    );

    await Deno.writeTextFile(`${dir}/index.tsv`, [header, row(0), row(5)].join("\n"));
    await assert.rejects(loadEmojiPack(dir), /index\.tsv" line 3: expected idx 1 but found "5"/);

    for (const idx of ["", "0x0", "+0", " 0"]) {
      await Deno.writeTextFile(`${dir}/index.tsv`, [header, row(0).replace(/^0/, idx), row(1)].join("\n"));
      await assert.rejects(
        loadEmojiPack(dir),
        new RegExp(`line 2: expected idx 0 but found "${idx.replace("+", "\\+")}"`),
      );
    }
    // "café" with é as the Latin-1 byte 0xE9
    const latin1 = new TextEncoder().encode([header, row(0), row(1).replace("face 1", "caf?")].join("\n"));
    latin1[latin1.lastIndexOf(0x3f)] = 0xe9;
    await Deno.writeFile(`${dir}/index.tsv`, latin1);
    await assert.rejects(loadEmojiPack(dir), /index\.tsv" is not valid UTF-8/);

    await Deno.writeTextFile(`${dir}/index.tsv`, [header.replace("\tname", ""), row(0), row(1)].join("\n"));
    await assert.rejects(loadEmojiPack(dir), /index\.tsv": header is missing column\(s\) name/);

    await Deno.writeFile(`${dir}/noto_emoji32_rgba.u8.gz`, await gzip(pixels.subarray(0, 4096 + 100)));
    await assert.rejects(loadEmojiPack(dir), /noto_emoji32_rgba\.u8\.gz" decompresses to 4196 bytes/);
    await Deno.writeFile(`${dir}/noto_emoji32_rgba.u8.gz`, await gzip(new Uint8Array(0)));
    await Deno.writeTextFile(`${dir}/index.tsv`, header + "\n");
    await assert.rejects(loadEmojiPack(dir), /noto_emoji32_rgba\.u8\.gz" holds no images/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rgbaOnWhite follows c·a/255 + 255·(1 − a/255), scaled to [0, 1]", () => {
  const rng = new Rng(11);
  const rgba = Uint8Array.from({ length: 4 * 50 }, () => rng.int(256));
  rgba.set([200, 100, 50, 0], 0); // fully transparent → white
  rgba.set([200, 100, 50, 255], 4); // opaque → the colour itself
  const rgb = rgbaOnWhite(rgba);
  assert.equal(rgb.length, 150);
  assert.deepEqual(Array.from(rgb.subarray(0, 3)), [1, 1, 1]);
  assert.deepEqual(Array.from(rgb.subarray(3, 6)), [200 / 255, 100 / 255, 50 / 255].map(Math.fround));
  for (let p = 0; p < 50; p++) {
    const a = rgba[4 * p + 3];
    for (let c = 0; c < 3; c++) {
      // Same blend written as a lerp between white and the colour.
      const expected = 1 - (a / 255) * (1 - rgba[4 * p + c] / 255);
      assert.ok(Math.abs(rgb[3 * p + c] - expected) < 1e-6);
    }
  }
  assert.throws(() => rgbaOnWhite(new Uint8Array(6)), /multiple of 4/);
});

Deno.test("loadMnist: a labels file with a wrong magic is named as such", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/img.idx`, idxBytes([2051, 1, 2, 2], new Uint8Array([1, 2, 3, 4])));
    await Deno.writeFile(`${dir}/lab.idx`, idxBytes([2051, 1], new Uint8Array([5])));
    await assert.rejects(
      loadMnist(`${dir}/img.idx`, `${dir}/lab.idx`),
      /IDX labels file ".*lab\.idx": expected magic 2049 but found 2051 \(an IDX3 images file\)/,
    );
    await Deno.writeFile(`${dir}/lab.idx`, idxBytes([0x12345678, 1], new Uint8Array([5])));
    await assert.rejects(loadMnist(`${dir}/img.idx`, `${dir}/lab.idx`), /found 305419896 \(0x12345678\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadMnist, loadOptdigits and loadEmojiPack name the loader and the path of a file they cannot read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/img.idx`, idxBytes([2051, 1, 2, 2], new Uint8Array([1, 2, 3, 4])));
    await Deno.writeFile(`${dir}/lab.idx`, idxBytes([2049, 1], new Uint8Array([5])));
    await Deno.mkdir(`${dir}/a_directory`);
    const missing = `${dir}/missing-${new TestRng(41).int(0, 1e9)}.gz`;
    const cases: [() => Promise<unknown>, string][] = [
      [() => loadMnist(missing, `${dir}/lab.idx`), `loadMnist: cannot read IDX images file "${missing}"`],
      [() => loadMnist(`${dir}/img.idx`, missing), `loadMnist: cannot read IDX labels file "${missing}"`],
      [
        () => loadMnist(`${dir}/a_directory`, `${dir}/lab.idx`),
        `loadMnist: cannot read IDX images file "${dir}/a_directory"`,
      ],
      [() => loadOptdigits(missing), `loadOptdigits: cannot read optdigits file "${missing}"`],
      [
        () => loadOptdigits(`${dir}/a_directory`),
        `loadOptdigits: cannot read optdigits file "${dir}/a_directory"`,
      ],
      [
        () => loadEmojiPack(`${dir}/nowhere`),
        `loadEmojiPack: cannot read emoji pixel file "${dir}/nowhere/noto_emoji32_rgba.u8.gz"`,
      ],
    ];
    for (const [load, wanted] of cases) {
      await assert.rejects(load(), (err: Error) => {
        assert.ok(err.message.startsWith(wanted), `${err.message} should start with ${wanted}`);
        assert.ok(err.cause instanceof Error, "the system's error is kept as the cause");
        assert.equal(err instanceof Deno.errors.NotFound, !wanted.includes("a_directory"), err.name);
        return true;
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadMnist and loadEmojiPack refuse a gzip'd file that expands past maxGunzipBytes, naming file and limit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const random = new TestRng(43);
    const n = random.int(2, 9);
    const rows = random.int(2, 9);
    const cols = random.int(2, 9);
    const pixels = Uint8Array.from({ length: n * rows * cols }, () => random.int(0, 255));
    const labels = Uint8Array.from({ length: n }, () => random.int(0, 9));
    const imageSize = 16 + pixels.length; // four header words, then the pixels
    await Deno.writeFile(`${dir}/img.gz`, await gzip(idxBytes([2051, n, rows, cols], pixels)));
    await Deno.writeFile(`${dir}/lab.gz`, await gzip(idxBytes([2049, n], labels)));

    // A file that expands to exactly the limit loads; one byte less of limit refuses it.
    const exact = await loadMnist(`${dir}/img.gz`, `${dir}/lab.gz`, { maxGunzipBytes: imageSize });
    assert.deepEqual(exact.images, pixels);
    await assert.rejects(
      loadMnist(`${dir}/img.gz`, `${dir}/lab.gz`, { maxGunzipBytes: imageSize - 1 }),
      (err: Error) => {
        assert.ok(
          err.message.startsWith(
            `loadMnist: IDX images file "${dir}/img.gz" expands to more than ${
              imageSize - 1
            } bytes when gunzipped`,
          ) && err.message.includes("maxGunzipBytes"),
          err.message,
        );
        return true;
      },
    );

    // Many gzip members of zeros (a thousandfold expansion each) stop at the limit, not at their end.
    const member = await gzip(new Uint8Array(1 << 20));
    const members = random.int(3, 6);
    const bomb = new Uint8Array(member.length * members);
    for (let i = 0; i < members; i++) bomb.set(member, i * member.length);
    await Deno.writeFile(`${dir}/bomb.gz`, bomb);
    const limit = random.int(1 << 20, (members << 20) - 1);
    await assert.rejects(
      loadMnist(`${dir}/bomb.gz`, `${dir}/lab.gz`, { maxGunzipBytes: limit }),
      new RegExp(
        `IDX images file ".*bomb\\.gz" expands to more than ${limit} bytes .*from ${bomb.length} gzip bytes`,
      ),
    );
    await Deno.mkdir(`${dir}/emoji`);
    await Deno.writeFile(`${dir}/emoji/noto_emoji32_rgba.u8.gz`, bomb);
    await assert.rejects(
      loadEmojiPack(`${dir}/emoji`, { maxGunzipBytes: limit }),
      new RegExp(
        `loadEmojiPack: emoji pixel file ".*noto_emoji32_rgba\\.u8\\.gz" expands to more than ${limit} bytes`,
      ),
    );

    // The default is documented as 2 GiB; a limit that is not a positive integer is refused by name.
    assert.equal(MAX_GUNZIP_BYTES, 2 ** 31);
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      await assert.rejects(
        loadMnist(`${dir}/img.gz`, `${dir}/lab.gz`, { maxGunzipBytes: bad }),
        /loadMnist: .*maxGunzipBytes/,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
