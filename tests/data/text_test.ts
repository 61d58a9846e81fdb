import assert from "node:assert/strict";
import { loadSentiment, loadText, splitText } from "../../lib/data/mod.ts";

const DATA_DIR = decodeURIComponent(new URL("../../../shared/data/", import.meta.url).pathname);
const haveData = (() => {
  try {
    return Deno.statSync(DATA_DIR).isDirectory;
  } catch {
    return false;
  }
})();

function countOccurrences(bytes: Uint8Array, a: number, b?: number): number {
  let count = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === a && (b === undefined || bytes[i + 1] === b)) count++;
  }
  return count;
}

Deno.test({
  name: "loadText normalises CRLF on pg11 (Alice) and keeps it when asked",
  ignore: !haveData,
  fn: async () => {
    const path = `${DATA_DIR}text/gutenberg/pg11.txt`;
    const raw = await Deno.readFile(path);
    const crlf = countOccurrences(raw, 13, 10);
    assert.ok(crlf > 1000, `pg11 should be CRLF, found ${crlf} CRLF pairs`);
    const text = await loadText(path);
    // pg11 is ASCII: one char per byte, and each CRLF loses its CR.
    assert.equal(text.length, raw.length - crlf);
    assert.ok(!text.includes("\r\n"));
    assert.equal(text.split("\n").length, countOccurrences(raw, 10) + 1);
    const kept = await loadText(path, { normalizeNewlines: false });
    assert.equal(kept.length, raw.length);
    assert.equal(kept.split("\r\n").length - 1, crlf);
  },
});

Deno.test({
  name: "loadText + splitText on tinyshakespeare: size, alphabet and the 90/10 nanoGPT split",
  ignore: !haveData,
  fn: async () => {
    const text = await loadText(`${DATA_DIR}text/tinyshakespeare/input.txt`);
    assert.equal(text.length, 1_115_394);
    assert.equal(new Set(text).size, 65);
    const { train, val } = splitText(text);
    assert.equal(train.length, Math.floor(1_115_394 * 0.9));
    assert.equal(train + val, text);
    assert.ok(train.startsWith("First Citizen:"));
  },
});

Deno.test("splitText: fractions, surrogate pairs and bad fractions", () => {
  const text = "abcdefghijklmnopqrst"; // 20 chars
  assert.deepEqual(splitText(text, { valFraction: 0.25 }), { train: "abcdefghijklmno", val: "pqrst" });
  assert.deepEqual(splitText(text, { valFraction: 0 }), { train: text, val: "" });
  // 1 − 0.9 is a little under 0.1 in floating point; 0.9 of 1000 characters is still 900.
  const thousand = "x".repeat(1000);
  for (const [f, val] of [[0.9, 900], [0.7, 700], [0.1, 100], [0.25, 250]]) {
    assert.equal(splitText(thousand, { valFraction: f }).val.length, val, `valFraction ${f}`);
  }
  assert.equal(splitText("x".repeat(30), { valFraction: 0.1 }).val.length, 3);
  // "😀" is two UTF-16 code units; a cut between them moves back one unit.
  const emoji = "abcdefgh😀"; // length 10, floor(10 * 0.9) = 9 falls inside the pair
  const split = splitText(emoji);
  assert.equal(split.train, "abcdefgh");
  assert.equal(split.val, "😀");
  assert.throws(() => splitText(text, { valFraction: 1 }), /valFraction/);
  assert.throws(() => splitText(text, { valFraction: -0.1 }), /valFraction/);
});

for (const domain of ["amazon_cells", "imdb", "yelp"]) {
  Deno.test({
    name: `loadSentiment on ${domain}: 1000 lines, 500 positive / 500 negative`,
    ignore: !haveData,
    fn: async () => {
      const path = `${DATA_DIR}text/sentiment_labelled_sentences/${domain}_labelled.txt`;
      const examples = await loadSentiment(path);
      assert.equal(examples.length, 1000);
      assert.equal(examples.filter((e) => e.label === 1).length, 500);
      assert.equal(examples.filter((e) => e.label === 0).length, 500);
      // Independent parse of the first line: text before the tab, label after it.
      const firstLine = (await Deno.readTextFile(path)).split("\n")[0];
      const [sentence, label] = firstLine.split("\t");
      assert.equal(examples[0].sentence, sentence.trim());
      assert.equal(examples[0].label, Number(label));
      for (const e of examples) {
        assert.ok(e.sentence.length > 0 && !e.sentence.includes("\t"));
      }
    },
  });
}

Deno.test("loadSentiment errors name the file, the line and the problem", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const noTab = `${dir}/no_tab.txt`;
    await Deno.writeTextFile(noTab, "Great phone.\t1\nTerrible battery 0\nOk.\t1\n");
    await assert.rejects(loadSentiment(noTab), (err: Error) => {
      assert.match(err.message, /no_tab\.txt/);
      assert.match(err.message, /line 2/);
      assert.match(err.message, /no tab/);
      return true;
    });

    const badLabel = `${dir}/bad_label.txt`;
    await Deno.writeTextFile(badLabel, "Fine.\t0\nGood.\t1\nMeh.\t2\n");
    await assert.rejects(loadSentiment(badLabel), (err: Error) => {
      assert.match(err.message, /bad_label\.txt/);
      assert.match(err.message, /line 3/);
      assert.match(err.message, /label 0 or 1/);
      assert.match(err.message, /"2"/);
      return true;
    });

    const empty = `${dir}/empty.txt`;
    await Deno.writeTextFile(empty, "");
    await assert.rejects(loadSentiment(empty), /empty\.txt" holds no examples/);

    const blank = `${dir}/blank.txt`;
    await Deno.writeTextFile(blank, "Fine.\t0\n\nGood.\t1\n");
    await assert.rejects(loadSentiment(blank), /blank\.txt" line 2: .*empty/);

    const crlf = `${dir}/crlf.txt`;
    await Deno.writeTextFile(crlf, "Fine.  \t0\r\nGood.\t1\r\n");
    assert.deepEqual(await loadSentiment(crlf), [{ sentence: "Fine.", label: 0 }, {
      sentence: "Good.",
      label: 1,
    }]);

    const crOnly = `${dir}/cr_only.txt`;
    await Deno.writeTextFile(crOnly, "Fine.\t0\rGood.\t1\rBad.\t0\r");
    assert.deepEqual((await loadSentiment(crOnly)).map((e) => e.sentence), ["Fine.", "Good.", "Bad."]);

    const latin1 = `${dir}/latin1.txt`;
    await Deno.writeFile(latin1, new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x09, 0x31, 0x0a])); // "café" in Latin-1
    await assert.rejects(loadSentiment(latin1), /latin1\.txt" is not valid UTF-8/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadText and splitText refuse an unknown option key instead of dropping it", async () => {
  const path = `${await Deno.makeTempDir()}/crlf text.txt`;
  await Deno.writeTextFile(path, "a\r\nb");
  // Dropped, { normalizeNewline: false } gave "a\nb"; and { valfraction: 0.5 } split at the default 0.1.
  await assert.rejects(
    () => loadText(path, { normalizeNewline: false } as never),
    /loadText: unknown option "normalizeNewline"/,
  );
  assert.equal(await loadText(path, { normalizeNewlines: false }), "a\r\nb");
  assert.throws(
    () => splitText("abcdefghij", { valfraction: 0.5 } as never),
    /splitText: unknown option "valfraction"/,
  );
  assert.deepEqual(splitText("abcdefghij", { valFraction: 0.5 }), { train: "abcde", val: "fghij" });
});
