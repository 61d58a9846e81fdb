import assert from "node:assert/strict";
import { MetricsWriter, readJsonl, writeJsonAtomic } from "../../lib/io/json.ts";
import { writeFileAtomicSync } from "../../lib/io/atomic.ts";
import { TestRng } from "../_helpers.ts";

/** A uniform generator for test `seed` (mixed with TEST_SEED, so every run draws fresh values). */
function rng(seed: number): () => number {
  const r = new TestRng(seed);
  return () => r.next();
}

const tempRoot = Deno.makeTempDirSync({ prefix: "metrics_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(tempRoot, { recursive: true }));
let tempCount = 0;
function tempPath(name: string): string {
  return `${tempRoot}/${tempCount++}/${name}`;
}

function randomRecords(seed: number, n: number, firstStep = 1): Record<string, unknown>[] {
  const random = rng(seed);
  return Array.from({ length: n }, (_, i) => ({
    step: firstStep + i,
    loss: 5 * random() + 0.1,
    lr: random() * 1e-3,
    phase: random() < 0.5 ? "train" : "eval",
    grads: [random(), random()],
  }));
}

Deno.test("metrics: written lines read back equal, one JSON object per line", () => {
  const path = tempPath("metrics.jsonl");
  const records = randomRecords(1, 25);
  const writer = MetricsWriter.open(path);
  for (const r of records) writer.write(r);
  assert.equal(writer.count, records.length);
  // Each write reaches the file immediately (no buffering): read before closing.
  assert.deepEqual(readJsonl(path), records);
  writer.close();
  const lines = Deno.readTextFileSync(path).split("\n");
  assert.equal(lines.length, records.length + 1, "one line per record plus the final newline");
  assert.equal(lines.at(-1), "");
  assert.deepEqual(JSON.parse(lines[3]), records[3]);
  assert.throws(() => writer.write({ step: 0 }), /already closed/);
});

Deno.test("metrics: non-finite numbers survive as strings", () => {
  const path = tempPath("metrics.jsonl");
  using writer = MetricsWriter.open(path);
  writer.write({ step: 1, loss: NaN, grad: Infinity, low: -Infinity });
  assert.deepEqual(readJsonl(path), [{ step: 1, loss: "NaN", grad: "Infinity", low: "-Infinity" }]);
});

Deno.test("metrics: reopening with resume keeps records and appends; without resume starts empty", () => {
  const path = tempPath("metrics.jsonl");
  const first = randomRecords(2, 10);
  const second = randomRecords(3, 7, 11);
  {
    using writer = MetricsWriter.open(path);
    for (const r of first) writer.write(r);
  }
  {
    using writer = MetricsWriter.open(path, { resume: true });
    assert.deepEqual(writer.records, first);
    for (const r of second) writer.write(r);
  }
  assert.deepEqual(readJsonl(path), [...first, ...second]);
  {
    using writer = MetricsWriter.open(path);
    assert.equal(writer.records.length, 0);
  }
  assert.deepEqual(readJsonl(path), []);
});

Deno.test("metrics: a partially written last line is tolerated and cut off on resume", () => {
  const path = tempPath("metrics.jsonl");
  const records = randomRecords(4, 6);
  {
    using writer = MetricsWriter.open(path);
    for (const r of records) writer.write(r);
  }
  const full = JSON.stringify({ step: 7, loss: 0.5 });
  Deno.writeTextFileSync(path, full.slice(0, 11), { append: true }); // a crash mid-write
  assert.deepEqual(readJsonl(path), records);

  const extra = { step: 7, loss: 0.25 };
  {
    using writer = MetricsWriter.open(path, { resume: true });
    assert.deepEqual(writer.records, records);
    writer.write(extra);
  }
  assert.deepEqual(readJsonl(path), [...records, extra]);
  assert.ok(!Deno.readTextFileSync(path).includes(full.slice(0, 11) + "{"), "partial line removed");
});

Deno.test("metrics: a complete last line without newline is kept, and resume does not glue onto it", () => {
  const path = tempPath("metrics.jsonl");
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  Deno.writeTextFileSync(path, `{"step":1}\n{"step":2}`);
  assert.deepEqual(readJsonl(path), [{ step: 1 }, { step: 2 }]);
  {
    using writer = MetricsWriter.open(path, { resume: true });
    writer.write({ step: 3 });
  }
  assert.deepEqual(readJsonl(path), [{ step: 1 }, { step: 2 }, { step: 3 }]);
});

Deno.test("metrics: a corrupt line in the middle is an error naming file and line", () => {
  const path = tempPath("metrics.jsonl");
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  Deno.writeTextFileSync(path, `{"step":1}\n{"step":\n{"step":3}\n`);
  assert.throws(
    () => readJsonl(path),
    (err: Error) => err.message.includes(path) && /line 2/.test(err.message),
  );
  Deno.writeTextFileSync(path, `{"step":1}\n[1,2]\n`);
  assert.throws(() => readJsonl(path), /line 2 .*expected a JSON object/);
});

Deno.test("readJsonl names itself and the path of a file it cannot read", () => {
  const missing = tempPath(`missing-${new TestRng(17).int(0, 1e9)}.jsonl`);
  const directory = tempPath("a_directory");
  Deno.mkdirSync(directory, { recursive: true });
  for (const path of [missing, directory]) {
    assert.throws(() => readJsonl(path), (err: Error) => {
      assert.ok(
        err.message.startsWith(`readJsonl: cannot read JSON-lines file "${path}": `),
        `unexpected message: ${err.message}`,
      );
      assert.ok(err.cause instanceof Error, "the system's error is kept as the cause");
      // A missing file stays a NotFound, which callers that take it as an empty file test for.
      assert.equal(err instanceof Deno.errors.NotFound, path === missing, `${err.name}: ${err.message}`);
      return true;
    });
  }
});

Deno.test("readJsonl refuses bytes that are not UTF-8 with the line and the byte offset of the first bad one", () => {
  const path = tempPath("metrics.jsonl");
  const random = new TestRng(23);
  const utf8 = new TextEncoder();
  // Sequences a UTF-8 decoder replaces by U+FFFD: a lone continuation byte, a byte never in UTF-8, a 3-byte
  // sequence cut short, an overlong "/" and an encoded surrogate; the bad sequence starts at their first byte.
  const badSequences = [[0x80], [0xff], [0xe2, 0x82], [0xc0, 0xaf], [0xed, 0xa0, 0x80]];
  for (const bad of badSequences) {
    const records = randomRecords(random.int(0, 1e6), random.int(2, 6));
    const badLine = random.int(1, records.length - 1); // 0-based; never the last line
    const head = utf8.encode(records.slice(0, badLine).map((r) => `${JSON.stringify(r)}\n`).join(""));
    // A genuine U+FFFD (EF BF BD) and some other multi-byte text before the bad bytes, at a random place.
    const before = utf8.encode(`{"note":"é\uFFFD${"x".repeat(random.int(0, 20))}`);
    const after = utf8.encode(`"}\n${records.slice(badLine).map((r) => `${JSON.stringify(r)}\n`).join("")}`);
    const bytes = new Uint8Array([...head, ...before, ...bad, ...after]);
    Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    Deno.writeFileSync(path, bytes);
    const offset = head.length + before.length;
    assert.throws(() => readJsonl(path), (err: Error) => {
      assert.ok(
        err.message.includes(`"${path}" line ${badLine + 1} is not valid UTF-8`) &&
          err.message.includes(`at byte ${offset} `),
        `bad ${bad}: expected line ${badLine + 1} and byte ${offset}, got: ${err.message}`,
      );
      return true;
    });
  }
  // A last line cut inside a multi-byte character by a crash mid-write is ignored, as a cut JSON line is.
  const records = randomRecords(random.int(0, 1e6), 3);
  const cut = utf8.encode(`{"note":"€`).slice(0, -1);
  Deno.writeFileSync(
    path,
    new Uint8Array([...utf8.encode(records.map((r) => `${JSON.stringify(r)}\n`).join("")), ...cut]),
  );
  assert.deepEqual(readJsonl(path), records);
});

Deno.test("metrics: writeJsonAtomic replaces the file and leaves no temporary files", () => {
  const path = tempPath("summary.json");
  const random = rng(9);
  const a = { loss: random(), steps: Math.floor(random() * 1000) };
  const b = { loss: random(), nested: { values: [random(), random()] } };
  writeJsonAtomic(path, a);
  assert.deepEqual(JSON.parse(Deno.readTextFileSync(path)), a);
  writeJsonAtomic(path, b);
  assert.deepEqual(JSON.parse(Deno.readTextFileSync(path)), b);
  writeFileAtomicSync(`${path}.txt`, "hello\n");
  const dir = path.slice(0, path.lastIndexOf("/"));
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assert.deepEqual(names, ["summary.json", "summary.json.txt"]);
});

Deno.test("metrics: MetricsWriter.open refuses an option it does not take, before emptying the file", () => {
  // { resum: true } was dropped, and the file it was meant to continue was emptied.
  const path = `${Deno.makeTempDirSync()}/m.jsonl`;
  const rows = [{ step: 1, loss: 0.5 }, { step: 2, loss: 0.25 }];
  {
    using writer = MetricsWriter.open(path);
    for (const r of rows) writer.write(r);
  }
  assert.throws(
    () => MetricsWriter.open(path, { resum: true } as never),
    /MetricsWriter\.open: unknown option "resum"/,
  );
  assert.throws(
    () => MetricsWriter.open(path, { resume: 1 } as never),
    /option "resume" must be true or false, got 1/,
  );
  using writer = MetricsWriter.open(path, { resume: true });
  assert.deepEqual(writer.records, rows);
});

Deno.test("writeJsonAtomic refuses a misspelt or out-of-range indent", () => {
  const path = `${Deno.makeTempDirSync()}/summary.json`;
  // Dropped, { indnet: 0 } wrote two-space indentation; JSON.stringify clamps an indent of 12 to 10.
  assert.throws(() => writeJsonAtomic(path, { a: 1 }, { indnet: 0 } as never), /unknown option "indnet"/);
  assert.throws(() => writeJsonAtomic(path, { a: 1 }, { indent: 12 }), /writeJsonAtomic: .*"indent"/);
  writeJsonAtomic(path, { a: 1 }, { indent: 0 });
  assert.equal(Deno.readTextFileSync(path), '{"a":1}\n');
});

Deno.test("MetricsWriter.open({ resume: true }) names itself and the path of a metrics file it cannot read", () => {
  // A directory where the file should be: the system's "Is a directory" came through alone.
  const path = tempPath(`metrics-dir-${new TestRng(18).int(0, 1e9)}.jsonl`);
  Deno.mkdirSync(path, { recursive: true });
  assert.throws(() => MetricsWriter.open(path, { resume: true }), (err: Error) => {
    assert.ok(
      err.message.startsWith(`MetricsWriter.open: cannot read metrics file "${path}" to continue it: `),
      `unexpected message: ${err.message}`,
    );
    assert.ok(err.cause instanceof Error, "the system's error is kept as the cause");
    return true;
  });
});
