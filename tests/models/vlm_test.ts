import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { refusedOptions, TEST_SEED, TestRng } from "../_helpers.ts";
import { concat, namedParameters, rand, tensor } from "../../mod.ts";
import type { F32 } from "../../lib/nn/linear.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../../lib/lora/mod.ts";
import {
  batchIndices,
  captionBatch,
  captionCuts,
  captionLoss,
  captionTensors,
  captionVocab,
  emojiVlmData,
  Projector,
  ToyVlm,
  VisionAttention,
  VisionMlp,
  type VlmConfig,
  type VlmData,
} from "../../lib/models/vlm.ts";
import { captionTrainer, modalityAnalysis, shapesVlmData, trainProjector } from "../../lab/toy_vlm.ts";

const EMOJI = "../shared/data/vl/noto_emoji32";
const haveEmoji = await Deno.stat(new URL(`../../${EMOJI}/index.tsv`, import.meta.url)).then(
  () => true,
  () => false,
);

function config(vocabSize: number, nClasses = 32): VlmConfig {
  return {
    imageSize: 16,
    channels: 3,
    patchSize: 4,
    visionDim: 32,
    visionLayers: 1,
    visionHeads: 4,
    visionMlp: 64,
    nClasses,
    lm: {
      dim: 32,
      hiddenDim: 64,
      nLayers: 1,
      nHeads: 4,
      nKvHeads: 2,
      vocabSize,
      seqLen: 64,
      sharedClassifier: true,
    },
  };
}

Deno.test("ToyVlm forward: shapes, visual tokens first, loss = cross-entropy of the text positions", async () => {
  const data = shapesVlmData({ n: 6, seed: 3 });
  const vocab = captionVocab(data.captions);
  const model = ToyVlm.random(config(vocab.size), { seed: 11 });
  equal(model.visualTokens, 16);
  const textLen = 36;
  const b = captionBatch(data, vocab, [0, 1, 2], textLen);
  const x = captionTensors(b, { batchSize: 3, size: 16, textLen });
  const logits = model.forward(x.images, x.tokens);
  equal(logits.shape.join(), `3,${16 + textLen},${vocab.size}`);
  // Independent cross-entropy over the text positions on the host.
  const host = (await logits.data()) as Float32Array;
  const v = vocab.size;
  let total = 0;
  let n = 0;
  for (let s = 0; s < 3; s++) {
    for (let j = 0; j < textLen; j++) {
      const target = b.targets[s * textLen + j];
      if (target === -100) continue;
      const row = host.subarray(((s * (16 + textLen)) + 16 + j) * v, ((s * (16 + textLen)) + 17 + j) * v);
      const mx = Math.max(...row);
      const lse = mx + Math.log(row.reduce((a, c) => a + Math.exp(c - mx), 0));
      total += lse - row[target];
      n++;
    }
  }
  const loss = await model.loss(x.images, x.tokens, x.targets).item();
  ok(Math.abs(loss - total / n) < 1e-4, `${loss} vs ${total / n}`);
  // The image changes the text predictions (the visual tokens are read).
  const other = rand([3, 16, 16, 3], { seed: 5 }) as F32;
  const l2 = await model.loss(other, x.tokens, x.targets).item();
  ok(Math.abs(l2 - loss) > 1e-6, "text loss must depend on the image");
});

Deno.test("ToyVlm refuses images other than [B, imageSize, imageSize, channels], before the tokens", () => {
  const model = ToyVlm.random(config(10), { seed: 0 });
  const tokens = tensor([[1, 2, 3], [4, 5, 6]], { dtype: "i32" });
  // [2, 8, 32, 3] and [2, 32, 8, 3] hold 16 patches of 4×4 like [2, 16, 16, 3], in the wrong places.
  for (
    const shape of [[2, 8, 32, 3], [2, 32, 8, 3], [2, 32, 32, 3], [2, 12, 12, 3], [2, 3, 16, 16], [
      2,
      16,
      16,
      4,
    ]]
  ) {
    const want = new RegExp(`ToyVlm: images must be \\[B, 16, 16, 3\\].*got \\[${shape.join(", ")}\\]`);
    throws(() => model.forward(rand(shape, { seed: 1 }) as F32, tokens), want);
    throws(() => model.encoder.classify(rand(shape, { seed: 1 }) as F32), /VisionEncoder: images must be/);
  }
  throws(
    () => model.forward(rand([16, 16, 3], { seed: 1 }) as F32, tokens),
    /images must be .*got \[16, 16, 3\]/,
  );
  equal(model.forward(rand([2, 16, 16, 3], { seed: 1 }) as F32, tokens).shape.join(), `2,${16 + 3},10`);
});

Deno.test("ToyVlm uses its LM's headDim and ropeScaling for the rotary tables", async () => {
  const images = rand([1, 16, 16, 3], { seed: 1 }) as F32;
  const tokens = tensor([[1, 2, 3, 4, 5, 6]], { dtype: "i32" });
  const withLm = (lm: Partial<VlmConfig["lm"]>) =>
    ToyVlm.random({ ...config(10), lm: { ...config(10).lm, ...lm } }, { seed: 0, lmStd: 0.5 });
  const plain = (await withLm({}).forward(images, tokens).data()) as Float32Array;
  const scaled = (await withLm({ ropeScaling: { type: "linear", factor: 8 } }).forward(images, tokens)
    .data()) as Float32Array;
  ok(plain.some((v, i) => Math.abs(v - scaled[i]) > 1e-3), "linear ×8 RoPE scaling must change the logits");
  // dim 32 with 4 heads of 16 (not 32 / 4 = 8)
  equal(withLm({ headDim: 16 }).forward(images, tokens).shape.join(), "1,22,10");
});

Deno.test("captionBatch: '\\n' + caption as input, caption + '\\n' as targets, padding ignored", () => {
  const data = shapesVlmData({ n: 4, seed: 9 });
  const vocab = captionVocab(data.captions);
  const t = 40;
  const b = captionBatch(data, vocab, [2, 0], t);
  for (const [i, k] of [2, 0].entries()) {
    const cap = data.captions[k];
    equal(vocab.decode(b.tokens.subarray(i * t + 1, i * t + 1 + cap.length)), cap);
    equal(vocab.decode(b.tokens.subarray(i * t, i * t + 1)), "\n");
    const tg = Array.from(b.targets.subarray(i * t, (i + 1) * t));
    equal(vocab.decode(tg.filter((v) => v !== -100)), cap + "\n");
    equal(tg.filter((v) => v === -100).length, t - cap.length - 1);
  }
  const px = 16 * 16 * 3;
  equal(b.images[px + 5], data.images[5]);
  // An index past the items, or a text too short for a character and its end, is named.
  throws(
    () => captionBatch(data, vocab, [0, 4], t),
    /index 4 \(position 1\) is not one of the 4 items \(0\.\.3\)/,
  );
  throws(() => captionBatch(data, vocab, [1.5], t), /index 1\.5/);
  throws(() => captionBatch(data, vocab, [0], 1), /textLen must be an integer >= 2/);
});

Deno.test("batchIndices: indices in 0..n-1 for positive integer sizes; any other n or batchSize is refused by name", () => {
  const rng = new TestRng(4411);
  const n = rng.int(1, 50), batchSize = rng.int(1, 40), seed = rng.int(0, 1e6), step = rng.int(1, 1000);
  const idx = batchIndices(n, batchSize, seed, step);
  equal(idx.length, batchSize, `TEST_SEED=${TEST_SEED}`);
  ok(idx.every((i) => Number.isInteger(i) && i >= 0 && i < n), `TEST_SEED=${TEST_SEED}`);
  // An empty set would give index 0 of nothing; a fractional or negative batch size a silently smaller batch.
  for (const bad of [0, -n, n + 0.5, NaN]) {
    throws(() => batchIndices(bad, batchSize, seed, step), new RegExp(`batchIndices: n .*${bad}`));
  }
  for (const bad of [0, -batchSize, batchSize + 0.5, Infinity]) {
    throws(() => batchIndices(n, bad, seed, step), new RegExp(`batchIndices: batchSize .*${bad}`));
  }
});

Deno.test("modalityAnalysis: layer-0 statistics and gaps match a direct computation", async () => {
  const data = shapesVlmData({ n: 8, seed: 4 });
  const vocab = captionVocab(data.captions);
  const model = ToyVlm.random(config(vocab.size), { seed: 2 });
  const t = 36;
  const batch = captionBatch(data, vocab, [0, 1, 2, 3], t);
  const path = "lm.layers.0.attention.wq";
  const { stats, gapData, labelled, labelledCounts } = await modalityAnalysis(model, ["wq"], [batch], {
    size: 16,
    textLen: t,
  });
  // Direct: the input of layer 0's wq is attention_norm(concat(visual tokens, text embeddings)).
  const x = captionTensors(batch, { batchSize: 4, size: 16, textLen: t });
  const h0 = concat(
    [model.embedImages(x.images) as F32, model.lm.tok_embeddings.forward(x.tokens) as F32],
    1,
  );
  const inp = (await model.lm.layers[0].attention_norm.forward(h0 as F32).data()) as Float32Array;
  const d = 32;
  const vis: number[][] = [];
  const txt: number[][] = [];
  for (let s = 0; s < 4; s++) {
    for (let j = 0; j < 16 + t; j++) {
      const row = Array.from(inp.subarray((s * (16 + t) + j) * d, (s * (16 + t) + j + 1) * d));
      if (j < 16) vis.push(row);
      else if (batch.targets[s * t + j - 16] !== -100) txt.push(row);
    }
  }
  const meanVar = (rows: number[][]) => {
    let acc = 0;
    for (let f = 0; f < d; f++) {
      const m = rows.reduce((a, r) => a + r[f], 0) / rows.length;
      acc += rows.reduce((a, r) => a + (r[f] - m) ** 2, 0) / rows.length;
    }
    return acc / d;
  };
  ok(Math.abs(stats[path].visualVar - meanVar(vis)) < 1e-4 * Math.max(1, meanVar(vis)));
  ok(Math.abs(stats[path].textVar - meanVar(txt)) < 1e-4 * Math.max(1, meanVar(txt)));
  // The labelled positions (EVA as PEFT sees them) are exactly the text rows with a target, in order.
  equal(labelledCounts.join(), String(txt.length));
  equal(labelled[path].activations!.shape.join(), `1,${txt.length},${d}`);
  const lab = (await labelled[path].activations!.data()) as Float32Array;
  txt.forEach((row, i) =>
    row.forEach((v, f) => ok(Math.abs(lab[i * d + f] - v) < 1e-6, `labelled[${i}, ${f}]`))
  );
  // Gap of the first image: W·(mean text input − mean visual input).
  const zt = (await gapData[path].zText!.data()) as Float32Array;
  const zv = (await gapData[path].zVision!.data()) as Float32Array;
  equal(gapData[path].zText!.shape.join(), "4,32");
  const nt0 = batch.targets.subarray(0, t).filter((v) => v !== -100).length;
  const meanRows = (rows: number[][]) =>
    Array.from({ length: d }, (_, f) => rows.reduce((a, r) => a + r[f], 0) / rows.length);
  const mt = meanRows(txt.slice(0, nt0));
  const mv = meanRows(vis.slice(0, 16));
  const direct = (await model.lm.layers[0].attention.wq.forward(tensor([mt, mv])).data()) as Float32Array;
  for (let o = 0; o < 32; o++) {
    ok(Math.abs(zt[o] - direct[o]) < 1e-4, `zText[${o}]`);
    ok(Math.abs(zv[o] - direct[32 + o]) < 1e-4, `zVision[${o}]`);
  }
});

Deno.test("emojiVlmData: start and count checked by name; default captions fit the default textLen with their end", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const header = "idx\tcodepoints\tnoto_png\tstatus\tgroup\tsubgroup\temoji_version\tname";
    const names = ["face", "raised back of hand: medium-light skin tone", "flag: wales"];
    const rows = names.map((name, i) =>
      `${i}\t1F60${i}\tx.png\tfully-qualified\tg${i % 2}\ts\tE1.0\t${name}`
    );
    await Deno.writeTextFile(`${dir}/index.tsv`, [header, ...rows].join("\n") + "\n");
    await Deno.writeFile(`${dir}/noto_emoji32_rgba.u8.gz`, new Uint8Array(3 * 32 * 32 * 4).fill(200));
    for (const start of [-3, 1.5, 3]) {
      await assertRejects(
        emojiVlmData(dir, { start, count: 1 }),
        `start ${start} must be an integer row in 0..2`,
      );
    }
    for (const count of [0, 2.5]) {
      await assertRejects(emojiVlmData(dir, { count }), `count ${count} must be a positive integer`);
    }
    const data = await emojiVlmData(dir, { size: 8 });
    equal(data.n, 3);
    equal(data.captions[1], names[1].slice(0, 39));
    const vocab = captionVocab(data.captions);
    for (let k = 0; k < data.n; k++) {
      const { targets } = captionBatch(data, vocab, [k], 40);
      equal(vocab.decode(Array.from(targets).filter((v) => v !== -100)), data.captions[k] + "\n");
    }
    equal(
      (await emojiVlmData(dir, { start: 1, count: 5 })).captions.join(),
      [names[1].slice(0, 39), names[2]].join(),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("captionCuts counts the captions a batch shows cut, at load and by textLen, and says to what length", () => {
  const rng = new TestRng(3117);
  const n = rng.int(20, 60);
  const maxCaption = rng.int(8, 20);
  const letters = "abcdefghij ";
  const whole = Array.from(
    { length: n },
    () => Array.from({ length: rng.int(1, 30) }, () => letters[rng.int(0, letters.length - 1)]).join(""),
  );
  const data = {
    ...shapesVlmData({ n, seed: 0 }),
    captions: whole.map((c) => c.slice(0, maxCaption)),
    uncutLengths: Int32Array.from(whole, (c) => c.length),
  };
  const vocab = captionVocab(data.captions);
  for (const textLen of [2, rng.int(3, maxCaption), maxCaption + 1, maxCaption + 5]) {
    // Reference: the caption as a batch shows it (its targets before the end marker) against the whole name.
    const { targets } = captionBatch(data, vocab, Array.from({ length: n }, (_, i) => i), textLen);
    const shown = Array.from({ length: n }, (_, i) => {
      const row = Array.from(targets.subarray(i * textLen, (i + 1) * textLen)).filter((v) => v !== -100);
      return vocab.decode(row.slice(0, -1));
    });
    const cutRows = whole.map((c, i) => [c, shown[i]]).filter(([c, s]) => c !== s);
    const cuts = captionCuts(data, textLen);
    equal(cuts.cut, cutRows.length, `textLen ${textLen}, maxCaption ${maxCaption} (TEST_SEED ${TEST_SEED})`);
    equal(cuts.n, n);
    deepEqual(cuts.keptLengths, [...new Set(cutRows.map(([, s]) => s.length))].sort((a, b) => a - b));
    if (cutRows.length > 0) {
      ok(cuts.text.startsWith(`${cutRows.length} of ${n} captions cut to their first `), cuts.text);
    } else ok(cuts.text.startsWith("no caption cut"), cuts.text);
  }
  // Without uncutLengths only the textLen cut is seen.
  const plain = { ...data, uncutLengths: undefined };
  equal(captionCuts(plain, maxCaption + 1).cut, 0);
  throws(() => captionCuts(data, 1), /textLen must be an integer >= 2/);
});

Deno.test({
  name: "emojiVlmData's description counts the names it cuts (the shared pack, against its index.tsv)",
  ignore: !haveEmoji,
  async fn() {
    const dir = new URL(`../../${EMOJI}`, import.meta.url).pathname;
    const names = (await Deno.readTextFile(`${dir}/index.tsv`)).split("\n").slice(1).filter((l) => l !== "")
      .map((l) => Array.from(l.split("\t")[7].toLowerCase()));
    const rng = new TestRng(3118);
    const maxCaption = rng.int(12, 39);
    const data = await emojiVlmData(dir, { maxCaption });
    const cut = names.filter((c) => c.length > maxCaption).length;
    ok(cut > 0);
    ok(
      data.description.includes(
        `${cut} of ${names.length} names cut to their first ${maxCaption} characters`,
      ),
      data.description,
    );
    // At a textLen that fits the cut captions, the cut ones are exactly the loader's.
    equal(captionCuts(data, maxCaption + 1).cut, cut);
    equal(captionCuts(data, 12).cut, names.filter((c) => c.length > 11).length);
  },
});

async function assertRejects(p: Promise<unknown>, message: string): Promise<void> {
  await p.then(
    () => ok(false, `expected an error containing "${message}"`),
    (err: Error) => ok(err.message.includes(message), `"${err.message}" should contain "${message}"`),
  );
}

async function lossFalls(data: VlmData, label: string) {
  const vocab = captionVocab(data.captions);
  const model = ToyVlm.random(config(vocab.size, data.nClasses), { seed: 1, lmStd: 0.2 });
  const evalOpts = { batches: 1, batchSize: 16, seed: 99, textLen: 24 };
  const before = await captionLoss(model, data, vocab, evalOpts);
  await trainProjector(model, data, vocab, { steps: 12, batchSize: 8, lr: 3e-2, seed: 0, textLen: 24 });
  const afterB = await captionLoss(model, data, vocab, evalOpts);
  ok(afterB < before - 0.05, `${label} stage b: caption loss ${before} → ${afterB} should fall`);
  await attachLora(model, { targetModules: ["wq", "wv", "w1", "w2"], rank: 4, alpha: 8, seed: 0 });
  await captionTrainer(model, data, vocab, {
    steps: 12,
    batchSize: 8,
    lr: 3e-2,
    seed: 1,
    textLen: 24,
    trainable: LORA_TRAINABLE,
  }).run();
  const afterC = await captionLoss(model, data, vocab, evalOpts);
  ok(afterC < afterB - 0.05, `${label} stage c: caption loss ${afterB} → ${afterC} should fall`);
}

Deno.test("captionLoss is the mean over labelled tokens (float64 from the logits), not the mean of batch means", async () => {
  const rng = new TestRng(5150);
  const n = 12;
  const alphabet = "abcdefgh ";
  // Captions of 1 to 30 characters, so that batches differ in labelled tokens.
  const captions = Array.from(
    { length: n },
    () => Array.from({ length: rng.int(1, 30) }, () => alphabet[rng.int(0, alphabet.length - 1)]).join(""),
  );
  const data: VlmData = {
    images: Float32Array.from({ length: n * 16 * 16 * 3 }, () => rng.next()),
    captions,
    labels: Int32Array.from({ length: n }, () => rng.int(0, 3)),
    nClasses: 4,
    n,
    size: 16,
    description: "random captions",
  };
  const vocab = captionVocab(captions);
  const model = ToyVlm.random(config(vocab.size, 4), { seed: rng.int(0, 1e6), lmStd: 1, device: "cpu" });
  const opts = { batches: 4, batchSize: 2, seed: rng.int(0, 1e6), textLen: 32, device: "cpu" as const };
  let sum = 0, count = 0;
  const batchMeans: number[] = [];
  for (let i = 1; i <= opts.batches; i++) {
    const host = captionBatch(data, vocab, batchIndices(n, opts.batchSize, opts.seed, i), opts.textLen);
    const b = captionTensors(host, { batchSize: opts.batchSize, size: 16, textLen: opts.textLen }, "cpu");
    const logits = (await model.forward(b.images, b.tokens).data()) as Float32Array;
    const v = vocab.size, p = model.visualTokens, t = opts.textLen;
    let s = 0, c = 0;
    for (let r = 0; r < opts.batchSize; r++) {
      for (let j = 0; j < t; j++) {
        const y = host.targets[r * t + j];
        if (y === -100) continue;
        const row = logits.subarray((r * (p + t) + p + j) * v, (r * (p + t) + p + j + 1) * v);
        const max = Math.max(...row);
        const z = row.reduce((a, x) => a + Math.exp(x - max), 0);
        s += Math.log(z) + max - row[y];
        c++;
      }
    }
    sum += s;
    count += c;
    batchMeans.push(s / c);
  }
  const perToken = sum / count;
  const meanOfMeans = batchMeans.reduce((a, x) => a + x, 0) / batchMeans.length;
  const got = await captionLoss(model, data, vocab, opts);
  // f32 logits and a f32 sum of 4 weighted batch losses: 1e-5 relative is well above their rounding.
  ok(
    Math.abs(got - perToken) <= 1e-5 * perToken,
    `captionLoss ${got}, per-token ${perToken} (TEST_SEED ${TEST_SEED})`,
  );
  if (Math.abs(meanOfMeans - perToken) > 1e-4 * perToken) {
    ok(Math.abs(got - meanOfMeans) > 1e-5 * perToken, "the mean of batch means is not what is measured");
  }
  await rejects(
    captionLoss(model, data, vocab, { ...opts, batches: 0 }),
    /batches must be a positive integer, got 0/,
  );
});

Deno.test("caption loss falls in stage b (projector) and stage c (LoRA) on generated shapes", async () => {
  await lossFalls(shapesVlmData({ n: 16, seed: 7 }), "shapes");
});

Deno.test("the training stages and shapesVlmData refuse an option they do not take, before training", async () => {
  // Each was dropped: { warmupratio: 0.5 } warmed up over the default 5%, { sise: 24 } drew 16 px images.
  const data = shapesVlmData({ n: 4, seed: 2 });
  const vocab = captionVocab(data.captions);
  const model = ToyVlm.random(config(vocab.size, data.nClasses), { seed: 1 });
  const before = await namedParameters(model.projector)[0][1].toArray();
  const stage = { steps: 2, batchSize: 2, lr: 1e-2, seed: 0 };
  await refusedOptions(
    () => trainProjector(model, data, vocab, { ...stage, warmupratio: 0.5 } as never),
    /^trainProjector: unknown option "warmupratio"$/,
  );
  await refusedOptions(
    () => captionTrainer(model, data, vocab, { ...stage, lr: NaN, trainable: /^projector\./ }),
    /^captionTrainer: option "lr" must be a finite number, got NaN$/,
  );
  await refusedOptions(
    () => shapesVlmData({ n: 4, seed: 2, sise: 24 } as never),
    /shapesVlmData: unknown option "sise"/,
  );
  deepEqual(await namedParameters(model.projector)[0][1].toArray(), before);
});

Deno.test({
  name: "caption loss falls in stage b and c on a slice of the emoji pack",
  ignore: !haveEmoji,
  fn: async () => {
    const data = await emojiVlmData(new URL(`../../${EMOJI}`, import.meta.url).pathname, {
      start: 100,
      count: 16,
      maxCaption: 22,
    });
    equal(data.n, 16);
    equal(data.images.length, 16 * 16 * 16 * 3);
    ok(data.images.every((v) => v >= 0 && v <= 1));
    await lossFalls(data, "emoji");
  },
});

Deno.test("the encoder's layers refuse sizes by their own name, before building anything", () => {
  const o = { seed: 1 };
  throws(() => new VisionAttention(8, 3, o), /VisionAttention: heads 3 does not divide dim 8/);
  throws(() => new VisionAttention(0, 2, o), /VisionAttention: dim must be a positive integer, got 0/);
  throws(() => new VisionMlp(8, 2.5, o), /VisionMlp: hidden must be a positive integer, got 2\.5/);
  throws(() => new Projector(8, 0, o), /Projector: outDim must be a positive integer, got 0/);
  // Sizes that fit build.
  equal((new VisionAttention(8, 2, o).q_proj as unknown as { weight: F32 }).weight.shape.join(), "8,8");
});

Deno.test("ToyVlm.random refuses an unknown option or a bad lmStd by name; lmStd sets the LM's weights' spread", async () => {
  const seed = new TestRng(82).int(0, 2 ** 30);
  // Dropped before: { lmstd: 0.5 } drew the LM at the default 0.02; a bad lmStd was named as LlamaLM.random's std.
  await refusedOptions(
    () => ToyVlm.random(config(40), { seed, lmstd: 0.5 } as never),
    /^ToyVlm\.random: unknown option "lmstd"$/,
  );
  await refusedOptions(
    () => ToyVlm.random(config(40), { seed, lmStd: 0 }),
    /^ToyVlm\.random: option "lmStd" must be > 0, got 0$/,
  );
  const lmStd = 0.5;
  const vlm = ToyVlm.random(config(40), { seed, lmStd, device: "cpu" });
  // The embedding is normal(0, lmStd): 40·32 draws put the sample deviation within 8% of it.
  const emb = await vlm.lm.tok_embeddings.weight.data() as Float32Array;
  const sd = Math.sqrt(emb.reduce((s, v) => s + v * v, 0) / emb.length);
  ok(Math.abs(sd / lmStd - 1) < 0.08, `sample deviation ${sd}`);
  equal(vlm.lm.tok_embeddings.weight.device, "cpu");
});
