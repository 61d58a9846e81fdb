/**
 * The sentiment task: parsing with clear errors, encoding (BOS, the sentence's end, ":", the label as the only
 * target), batches as pure functions of (seed, step), and scores against a direct read of the model's logits.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { type I32, LlamaLM, loadLlama, tensor, Tokenizer } from "../../mod.ts";
import { readLlama2c } from "../../lib/io/llama2c.ts";
import { loadSentiment } from "../../lib/data/mod.ts";
import {
  encodeSentiment,
  type Labelled,
  labelTokens,
  readSentiment,
  sentimentTask,
} from "../../lab/classify.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";
import { getBackend, getDefaultDevice } from "../../lib/runtime/realize.ts";

const DATA = new URL("../../../shared/data/", import.meta.url).pathname;
const TOK = `${DATA}models/stories260K/tok512.bin`;
const MODEL = `${DATA}models/stories260K/stories260K.bin`;
const SENT = `${DATA}text/sentiment_labelled_sentences`;
const have = (() => {
  try {
    Deno.statSync(TOK);
    Deno.statSync(MODEL);
    Deno.statSync(SENT);
    return true;
  } catch {
    return false;
  }
})();

Deno.test("classify: readSentiment parses sentence<TAB>label and names a bad line", async () => {
  const dir = await Deno.makeTempDir();
  Deno.writeTextFileSync(`${dir}/ok.txt`, "Great phone.\t1\nAwful.  \t0\r\n");
  deepEqual(await readSentiment(`${dir}/ok.txt`), [{ text: "Great phone.", label: 1 }, {
    text: "Awful.",
    label: 0,
  }]);
  Deno.writeTextFileSync(`${dir}/bad.txt`, "fine\t1\nno label here\n");
  await rejects(
    readSentiment(`${dir}/bad.txt`),
    /bad\.txt" line 2: expected "sentence<TAB>label" but found no tab/,
  );
  await rejects(readSentiment(`${dir}/missing.txt`), /missing\.txt": cannot read it/);
  Deno.writeTextFileSync(`${dir}/cr_only.txt`, "Fine.\t1\rBad.\t0\r");
  deepEqual((await readSentiment(`${dir}/cr_only.txt`)).map((e) => e.text), ["Fine.", "Bad."]);
  Deno.writeFileSync(`${dir}/latin1.txt`, new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x09, 0x31, 0x0a])); // "café" in Latin-1
  await rejects(readSentiment(`${dir}/latin1.txt`), /latin1\.txt" is not valid UTF-8/);
  Deno.writeTextFileSync(`${dir}/nothing.txt`, "");
  await rejects(readSentiment(`${dir}/nothing.txt`), /nothing\.txt" holds no examples/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("classify: readSentiment follows loadSentiment's rules: a blank line before the last is refused by line", async () => {
  // It skipped blank lines that loadSentiment refuses, so one file read two ways by the two readers.
  const dir = await Deno.makeTempDir();
  const rng = new TestRng(2208);
  const n = rng.int(3, 12);
  const blank = rng.int(1, n - 2);
  const lines = Array.from({ length: n }, (_, i) => (i === blank ? " " : `sentence ${i}.\t${rng.int(0, 1)}`));
  const path = `${dir}/blank_line.txt`;
  Deno.writeTextFileSync(path, lines.join(rng.next() < 0.5 ? "\n" : "\r\n") + "\n");
  const message = `"${path}" line ${blank + 1}: expected "sentence<TAB>label" but the line is empty`;
  await rejects(loadSentiment(path), (e: Error) => e.message.includes(message), `TEST_SEED=${TEST_SEED}`);
  await rejects(
    async () => await readSentiment(path),
    (e: Error) => e.message.includes(message),
    `TEST_SEED=${TEST_SEED}`,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("classify: readSentiment refuses a line whose sentence is empty, naming the file and the line", async () => {
  // "\t1" would otherwise be an example with no text: BOS ":" trained and scored as a sentence of label 1.
  const dir = await Deno.makeTempDir();
  const rng = new TestRng(2207);
  const n = rng.int(2, 12);
  const empty = rng.int(0, n - 1);
  const lines = Array.from(
    { length: n },
    (_, i) => `${i === empty ? " " : `sentence ${i}.`}\t${rng.int(0, 1)}`,
  );
  const path = `${dir}/empty_sentence.txt`;
  Deno.writeTextFileSync(path, lines.join("\n") + "\n");
  await rejects(
    readSentiment(path),
    (e: Error) =>
      e.message.includes(`"${path}" line ${empty + 1}:`) &&
      /sentence before the tab is empty/.test(e.message),
    `TEST_SEED=${TEST_SEED}`,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name:
    "classify: encoding keeps BOS and the sentence's end; the label is the one target, at the ':' position",
  ignore: !have,
  fn: async () => {
    const tok = await Tokenizer.load(TOK);
    const labels = labelTokens(tok);
    ok(labels[0] !== labels[1]);
    const rng = new TestRng(1811);
    const words = ["the", "food", "was", "not", "good", "and", "service", "slow", "great", "place"];
    const items = Array.from({ length: 6 }, (_, i) => ({
      text: Array.from({ length: rng.int(1, i < 3 ? 4 : 40) }, () => words[rng.int(0, words.length - 1)])
        .join(" "),
      label: (rng.next() < 0.5 ? 0 : 1) as 0 | 1,
    }));
    const seqLen = 16;
    const enc = encodeSentiment(items, tok, seqLen, labels);
    items.forEach((it, i) => {
      const full = [...tok.encode(`${it.text}:`)];
      const row = [...enc.x.subarray(i * seqLen, (i + 1) * seqLen)];
      const y = [...enc.y.subarray(i * seqLen, (i + 1) * seqLen)];
      const p = enc.pos[i];
      equal(row[0], tok.bosId);
      // The tokens up to the label position are the encoded text's end (all of it when it fits).
      const kept = full.length > seqLen ? [full[0], ...full.slice(full.length - (seqLen - 1))] : full;
      deepEqual(row.slice(0, p + 1), kept);
      equal(row[p], full.at(-1)); // ":"
      deepEqual(y.map((v, j) => (j === p ? labels[it.label] : v)), y);
      equal(y.filter((v) => v !== -100).length, 1);
      equal(enc.labels[i], it.label);
    });
  },
});

/** The task trained on Amazon with 20 held-out sentences, on the CPU. */
function amazonTask() {
  return sentimentTask({
    dir: SENT,
    tokenizer: TOK,
    trainDomain: "amazon",
    heldOut: 20,
    seqLen: 24,
    batchSize: 4,
    device: "cpu",
  });
}

Deno.test({
  name: "classify: batches are pure in (seed, step); scores match the logits read directly",
  ignore: !have,
  fn: async () => {
    const task = await amazonTask();
    deepEqual(task.testDomains, ["amazon (held out)", "imdb", "yelp"]);
    ok(task.train.n <= 980 && task.train.n >= 960, `${task.train.n} training sentences`); // 980 less repeats
    const a = task.batch(3, 7), b = task.batch(3, 7), c = task.batch(4, 7);
    deepEqual(await a.x.data(), await b.x.data());
    const cx = await c.x.data();
    ok((await a.x.data()).some((v, i) => v !== cx[i]));
    const model = await loadLlama(MODEL, { device: "cpu" });
    // Score only the held-out part (20 sentences): compare with every logit read back.
    const scores = await task.score(model, ["amazon (held out)"]);
    const set = task.test["amazon (held out)"];
    const x = tensor(set.x, { shape: [set.n, 24], dtype: "i32", device: "cpu" }) as I32;
    const logits = await model.forward(x).data() as Float32Array;
    const v = model.config.vocabSize;
    let right = 0, nll = 0;
    for (let i = 0; i < set.n; i++) {
      const row = logits.subarray((i * 24 + set.pos[i]) * v, (i * 24 + set.pos[i] + 1) * v);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, t) => s + Math.exp(t - max), 0));
      nll += lse - row[task.labels[set.labels[i]]];
      if ((row[task.labels[1]] > row[task.labels[0]] ? 1 : 0) === set.labels[i]) right++;
    }
    const got = scores["amazon (held out)"];
    ok(Math.abs(got.accuracy - right / set.n) < 1e-12, `${got.accuracy} vs ${right / set.n}`);
    ok(Math.abs(got.loss - nll / set.n) < 1e-4 * (nll / set.n), `${got.loss} vs ${nll / set.n}`);
  },
});

Deno.test({
  name: "classify: no held-out sentence is trained on, repeats in the file included",
  ignore: !have,
  fn: async () => {
    const rng = new TestRng(1812);
    const dir = await Deno.makeTempDir();
    // Few distinct sentences, so that most are repeated and the held-out ones recur among the rest.
    const pool = Array.from({ length: rng.int(8, 20) }, (_, i) => `review ${i} was ${rng.int(0, 9)}`);
    const n = rng.int(40, 80);
    const own = Array.from(
      { length: n },
      () => ({ text: pool[rng.int(0, pool.length - 1)], label: rng.int(0, 1) }),
    );
    Deno.writeTextFileSync(`${dir}/yelp_labelled.txt`, own.map((e) => `${e.text}\t${e.label}\n`).join(""));
    for (const f of ["amazon_cells_labelled.txt", "imdb_labelled.txt"]) {
      Deno.writeTextFileSync(`${dir}/${f}`, "a\t1\n");
    }
    const heldOut = rng.int(1, 10);
    const seqLen = 32;
    const task = await sentimentTask({
      dir,
      tokenizer: TOK,
      trainDomain: "yelp",
      heldOut,
      seqLen,
      batchSize: 4,
      device: "cpu",
    });
    const rows = (x: Int32Array, count: number) =>
      Array.from({ length: count }, (_, i) => x.subarray(i * seqLen, (i + 1) * seqLen).join(","));
    const held = new Set(rows(task.test["yelp (held out)"].x, heldOut));
    const trained = rows(task.train.x, task.train.n);
    equal(trained.filter((r) => held.has(r)).length, 0, `TEST_SEED ${TEST_SEED}`);
    // Every other sentence of the file is trained on (each row encoded on its own).
    const tok = await Tokenizer.load(TOK);
    const each = rows(encodeSentiment(own as Labelled[], tok, seqLen, task.labels).x, n);
    equal(task.train.n, each.filter((r) => !held.has(r)).length);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name:
    "classify: test sets of other sizes score with the kernels of one chunk size, as unchunked logits say",
  ignore: !have,
  fn: async () => {
    // Kernels are specialised to shapes (on WebGPU kept for the life of the process): the last, ragged chunk of
    // every set compiled a set of kernels for its remainder (70 and 100 sentences: chunks of 6 and 36 rows).
    const rng = new TestRng(1813);
    const dir = await Deno.makeTempDir();
    const words = ["the", "food", "was", "not", "good", "and", "service", "slow", "great", "place"];
    const lines = (n: number) =>
      Array.from({ length: n }, () => {
        const text = Array.from({ length: rng.int(1, 8) }, () => words[rng.int(0, words.length - 1)]).join(
          " ",
        );
        return `${text}\t${rng.int(0, 1)}\n`;
      }).join("");
    const sizes = { amazon_cells_labelled: 70, imdb_labelled: 100, yelp_labelled: 30 };
    for (const [f, n] of Object.entries(sizes)) Deno.writeTextFileSync(`${dir}/${f}.txt`, lines(n));
    const device = getDefaultDevice();
    const seqLen = 16;
    const task = await sentimentTask({
      dir,
      tokenizer: TOK,
      trainDomain: "yelp",
      seqLen,
      batchSize: 4,
      heldOut: 10,
      device,
    });
    await Deno.remove(dir, { recursive: true });
    const model = await loadLlama(MODEL, { device });
    const be = await getBackend(device);
    const v = model.config.vocabSize;
    const amazon = await task.score(model, ["amazon"]);
    const kernels = be.stats().cachedKernels;
    const scores = { ...amazon, ...await task.score(model, ["imdb"]) };
    equal(be.stats().cachedKernels, kernels, "a set of another size compiled new kernels");
    for (const [d, got] of Object.entries(scores)) {
      // Every sentence in one forward pass, its label position read back.
      const set = task.test[d];
      const x = tensor(set.x, { shape: [set.n, seqLen], dtype: "i32", device }) as I32;
      const logits = await model.forward(x).data() as Float32Array;
      let right = 0, nll = 0;
      for (let i = 0; i < set.n; i++) {
        const row = logits.subarray((i * seqLen + set.pos[i]) * v, (i * seqLen + set.pos[i] + 1) * v);
        const max = Math.max(...row);
        nll += max + Math.log(row.reduce((a, t) => a + Math.exp(t - max), 0)) -
          row[task.labels[set.labels[i]]];
        if ((row[task.labels[1]] > row[task.labels[0]] ? 1 : 0) === set.labels[i]) right++;
      }
      equal(got.accuracy, right / set.n, d);
      ok(Math.abs(got.loss - nll / set.n) < 1e-4 * (nll / set.n), `${d}: ${got.loss} vs ${nll / set.n}`);
    }
  },
});

Deno.test({
  name: "classify: a diverged model (NaN logits) scores 0, not the share of negative labels",
  ignore: !have,
  fn: async () => {
    const task = await amazonTask();
    const { config, weights } = await readLlama2c(MODEL);
    // One NaN in the final norm's weight reaches every logit of every position.
    const norm = weights.get("norm.weight")!;
    norm.data[new TestRng(1812).int(0, norm.data.length - 1)] = NaN;
    const model = LlamaLM.fromWeights(config, weights, { device: "cpu" });
    const set = task.test["amazon (held out)"];
    ok(set.labels.some((l) => l === 0), "the held-out set has negative sentences");
    const got = (await task.score(model, ["amazon (held out)"]))["amazon (held out)"];
    equal(got.accuracy, 0);
    ok(Number.isNaN(got.loss));
  },
});

Deno.test({
  name: "classify: the task's description counts, per set, the sentences cut to their last tokens",
  ignore: !have,
  fn: async () => {
    const rng = new TestRng(1813);
    const domains = ["amazon", "imdb", "yelp"];
    const trainDomain = domains[rng.int(0, 2)];
    const seqLen = rng.int(24, 72);
    const task = await sentimentTask({
      dir: SENT,
      tokenizer: TOK,
      trainDomain,
      seqLen,
      batchSize: 4,
      device: "cpu",
    });
    const tok = await Tokenizer.load(TOK);
    const files: Record<string, string> = {
      amazon: "amazon_cells_labelled.txt",
      imdb: "imdb_labelled.txt",
      yelp: "yelp_labelled.txt",
    };
    const where = `trainDomain ${trainDomain}, seqLen ${seqLen} (TEST_SEED ${TEST_SEED})`;
    const isCut = (s: string) => tok.encode(`${s}:`).length > seqLen;
    for (const d of domains.filter((d) => d !== trainDomain)) {
      const sentences = (await loadSentiment(`${SENT}/${files[d]}`)).map((e) => e.sentence);
      const cut = sentences.filter(isCut).length;
      equal(task.test[d].cut, cut, `${d}: ${where}`);
      ok(task.description.includes(`${cut} of ${sentences.length} ${d}`), `${task.description}; ${where}`);
    }
    // The training domain's two sets: each row traced back to its sentence (the row of each sentence alone).
    const own = (await loadSentiment(`${SENT}/${files[trainDomain]}`)).map((e) => e.sentence);
    const cutOfRow = new Map<string, boolean>();
    for (const s of own) {
      const row = encodeSentiment([{ text: s, label: 0 }], tok, seqLen, task.labels).x.join(",");
      ok((cutOfRow.get(row) ?? isCut(s)) === isCut(s), `two sentences share a row: ${where}`);
      cutOfRow.set(row, isCut(s));
    }
    const count = (x: Int32Array, n: number) =>
      Array.from({ length: n }, (_, i) => x.subarray(i * seqLen, (i + 1) * seqLen).join(","))
        .filter((r) => cutOfRow.get(r)).length;
    const held = task.test[`${trainDomain} (held out)`];
    for (const [name, set] of [["training", task.train], [`${trainDomain} (held out)`, held]] as const) {
      const cut = count(set.x, set.n);
      equal(set.cut, cut, `${name}: ${where}`);
      ok(task.description.includes(`${cut} of ${set.n} ${name}`), `${task.description}; ${where}`);
    }
  },
});

Deno.test("sentimentTask refuses an option it does not take or a bad value, before reading any file", async () => {
  // { heldout: 50 } was dropped: 200 sentences were held out, not the 50 asked for.
  const opts = {
    dir: "/nonexistent",
    tokenizer: "/nonexistent",
    trainDomain: "amazon",
    seqLen: 24,
    batchSize: 4,
  };
  await rejects(
    sentimentTask({ ...opts, device: "cpu", heldout: 50 } as never),
    /^OptionsError: sentimentTask: unknown option "heldout"$/,
  );
  await rejects(
    sentimentTask({ ...opts, device: "gpu" } as never),
    /option "device" must be one of "webgpu"/,
  );
  await rejects(sentimentTask({ ...opts, device: "cpu", seqLen: 0 }), /option "seqLen" must be >= 1, got 0/);
});
