import assert from "node:assert/strict";
import { charVocab } from "../../lib/data/mod.ts";
import {
  COLOUR_NAMES,
  generateShapes,
  generateTextDomains,
  POSITION_NAMES,
  SHAPE_NAMES,
  type ShapesData,
} from "../../lab/generated.ts";
import { loadCorpus } from "../../lab/lm.ts";
import { TestRng } from "../_helpers.ts";

// ------------------------------------------------------------------------------------------------
// Shapes: an independent reading of the pixels, compared with the caption.
// ------------------------------------------------------------------------------------------------

/** Connected components (8-neighbourhood) of the lit pixels of image i, as lists of [x, y]. */
function components(data: ShapesData, i: number): [number, number][][] {
  const { size, images } = data;
  const lit = (x: number, y: number) => {
    const p = ((i * size + y) * size + x) * 3;
    return images[p] + images[p + 1] + images[p + 2] > 0;
  };
  const seen = new Uint8Array(size * size);
  const out: [number, number][][] = [];
  for (let y0 = 0; y0 < size; y0++) {
    for (let x0 = 0; x0 < size; x0++) {
      if (!lit(x0, y0) || seen[y0 * size + x0]) continue;
      const stack: [number, number][] = [[x0, y0]];
      seen[y0 * size + x0] = 1;
      const pixels: [number, number][] = [];
      while (stack.length > 0) {
        const [x, y] = stack.pop()!;
        pixels.push([x, y]);
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const nx = x + dx;
            const ny = y + dy;
            if (nx < 0 || ny < 0 || nx >= size || ny >= size || seen[ny * size + nx] || !lit(nx, ny)) {
              continue;
            }
            seen[ny * size + nx] = 1;
            stack.push([nx, ny]);
          }
        }
      }
      out.push(pixels);
    }
  }
  return out;
}

/** Names a component's shape from its geometry alone. */
function classifyShape(pixels: [number, number][]): string {
  const xs = pixels.map((p) => p[0]);
  const ys = pixels.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const area = (x1 - x0 + 1) * (y1 - y0 + 1);
  if (pixels.length === area) return "square";
  const has = (x: number, y: number) => pixels.some((p) => p[0] === x && p[1] === y);
  if (has(x0, y0) && has(x1, y0) && has(x0, y1) && has(x1, y1)) return "cross"; // an X touches all corners
  const rowWidth = (y: number) => pixels.filter((p) => p[1] === y).length;
  if (rowWidth(y0) < rowWidth(y1)) return "triangle";
  return "circle";
}

/** Which named colour an RGB mean is, by coarse channel thresholds written for this test. */
function nameColour([r, g, b]: number[]): string {
  const hi = (v: number) => v > 0.75;
  const lo = (v: number) => v < 0.35;
  if (hi(r) && hi(g) && hi(b)) return "white";
  if (hi(r) && hi(g) && lo(b)) return "yellow";
  if (hi(r) && g > 0.4 && g < 0.7 && lo(b)) return "orange";
  if (hi(r) && lo(g) && hi(b)) return "magenta";
  if (lo(r) && hi(g) && hi(b)) return "cyan";
  if (hi(r) && lo(g) && lo(b)) return "red";
  if (lo(r) && g > 0.6 && lo(b)) return "green";
  if (lo(r) && g < 0.5 && hi(b)) return "blue";
  return `unknown(${r.toFixed(2)}, ${g.toFixed(2)}, ${b.toFixed(2)})`;
}

const CAPTION = new RegExp(
  `^(a|an|two|three) (${COLOUR_NAMES.join("|")}) (circles?|squares?|triangles?|cross(?:es)?) ` +
    `(at the top left|at the top right|at the top|on the left|in the centre|on the right|` +
    `at the bottom left|at the bottom right|at the bottom)$`,
);
const COUNT_OF: Record<string, number> = { a: 1, an: 1, two: 2, three: 3 };

function checkCaptionsAgainstPixels(data: ShapesData): void {
  const { size } = data;
  for (let i = 0; i < data.n; i++) {
    const caption = data.captions[i];
    const match = CAPTION.exec(caption);
    assert.ok(match, `caption ${JSON.stringify(caption)} does not follow the grammar`);
    const [, quantity, colour, noun, phrase] = match;
    const count = COUNT_OF[quantity];
    const singular: Record<string, string> = {
      circles: "circle",
      squares: "square",
      triangles: "triangle",
      crosses: "cross",
    };
    const shape = singular[noun] ?? noun;
    const plural = noun !== shape;
    assert.equal(plural, count > 1, `number agreement in ${caption}`);
    if (count === 1) assert.equal(quantity === "an", /^[aeiou]/.test(colour), `article in ${caption}`);

    // Labels agree with the caption words.
    assert.equal(SHAPE_NAMES[data.labels.shape[i]], shape);
    assert.equal(COLOUR_NAMES[data.labels.colour[i]], colour);
    assert.equal(data.labels.count[i], count);
    assert.ok(phrase.endsWith(POSITION_NAMES[data.labels.position[i]]), `${phrase} vs label`);

    // Pixels agree with the caption.
    const parts = components(data, i);
    assert.equal(parts.length, count, `${caption}: found ${parts.length} shapes`);
    for (const part of parts) assert.equal(classifyShape(part), shape, `${caption} (image ${i})`);
    const mean = [0, 0, 0];
    let litPixels = 0;
    for (const part of parts) {
      for (const [x, y] of part) {
        const p = ((i * size + y) * size + x) * 3;
        for (let c = 0; c < 3; c++) mean[c] += data.images[p + c];
        litPixels++;
      }
    }
    assert.equal(nameColour(mean.map((v) => v / litPixels)), colour, caption);

    const centroid = (axis: 0 | 1) =>
      parts.reduce((acc, part) => acc + part.reduce((a, p) => a + p[axis], 0) / part.length, 0) /
      parts.length;
    const cy = centroid(1);
    const cx = centroid(0);
    const third = (size - 1) / 3;
    const vertical = cy < third ? "top" : cy > 2 * third ? "bottom" : "middle";
    const middleX = (size - 1) / 2;
    const horizontal = cx < middleX - size / 16 ? "left" : cx > middleX + size / 16 ? "right" : "centre";
    const expectedVertical = phrase.includes("top") ? "top" : phrase.includes("bottom") ? "bottom" : "middle";
    const expectedHorizontal = phrase.includes("left")
      ? "left"
      : phrase.includes("right")
      ? "right"
      : "centre";
    assert.equal(vertical, expectedVertical, `${caption}: centroid y ${cy}`);
    assert.equal(horizontal, expectedHorizontal, `${caption}: centroid x ${cx}`);
  }
}

Deno.test("generateShapes: captions match the drawn pixels (count, shape, colour, position) at several sizes", () => {
  for (const [size, seed] of [[16, 101], [24, 202], [32, 303], [12, 404]]) {
    const data = generateShapes({ n: 150, size, seed });
    assert.equal(data.images.length, 150 * size * size * 3);
    assert.equal(data.size, size);
    assert.ok(data.images.every((v) => v >= 0 && v <= 1));
    checkCaptionsAgainstPixels(data);
  }
});

Deno.test("generateShapes: every attribute value occurs, and the data are deterministic under the seed", () => {
  const a = generateShapes({ n: 400, seed: 9 });
  const b = generateShapes({ n: 400, seed: 9 });
  const c = generateShapes({ n: 400, seed: 10 });
  assert.deepEqual(a.images, b.images);
  assert.deepEqual(a.captions, b.captions);
  assert.deepEqual(a.labels, b.labels);
  assert.notDeepEqual(a.captions, c.captions);
  assert.notDeepEqual(a.images, c.images);
  assert.equal(new Set(a.labels.shape).size, SHAPE_NAMES.length);
  assert.equal(new Set(a.labels.colour).size, COLOUR_NAMES.length);
  assert.deepEqual([...new Set(a.labels.count)].sort(), [1, 2, 3]);
  assert.equal(new Set(a.labels.position).size, POSITION_NAMES.length);
  assert.throws(
    () => generateShapes({ n: 1, size: 8, seed: 0 }),
    /^OptionsError: generateShapes: option "size" must be >= 12, got 8$/,
  );
  assert.throws(() => generateShapes({ n: -1, seed: 0 }), /generateShapes: option "n" must be >= 0, got -1/);
  // A misspelt size was dropped: 16 px images instead of the 24 px asked for.
  assert.throws(
    () => generateShapes({ n: 1, seed: 0, sise: 24 } as never),
    /generateShapes: unknown option "sise"/,
  );
  assert.equal(generateShapes({ n: 2, seed: 0, size: 24 }).images.length, 2 * 24 * 24 * 3);
});

// ------------------------------------------------------------------------------------------------
// Text domains
// ------------------------------------------------------------------------------------------------

/** Cross-entropy (nats/char) of `test` under an add-one smoothed character bigram model fit on `train`. */
function bigramCrossEntropy(train: string, test: string, alphabet: string[]): number {
  const index = new Map(alphabet.map((c, i) => [c, i]));
  const k = alphabet.length;
  const counts = new Float64Array(k * k).fill(1);
  const rowTotals = new Float64Array(k).fill(k);
  for (let i = 1; i < train.length; i++) {
    const a = index.get(train[i - 1])!;
    counts[a * k + index.get(train[i])!]++;
    rowTotals[a]++;
  }
  let nll = 0;
  for (let i = 1; i < test.length; i++) {
    const a = index.get(test[i - 1])!;
    nll -= Math.log(counts[a * k + index.get(test[i])!] / rowTotals[a]);
  }
  return nll / (test.length - 1);
}

Deno.test("generateTextDomains: deterministic, seed-dependent, exact sentence count, shared alphabet", () => {
  const a = generateTextDomains({ seed: 3, nSentences: 300 });
  const b = generateTextDomains({ seed: 3, nSentences: 300 });
  const c = generateTextDomains({ seed: 4, nSentences: 300 });
  assert.deepEqual(a, b);
  assert.notEqual(a.source, c.source);
  assert.notEqual(a.target, c.target);
  for (const text of [a.source, a.target]) {
    // Every sentence ends with the only full stop it contains.
    assert.equal(text.split(".").length - 1, 300);
    assert.ok(/^[a-z ,.\n]+$/.test(text));
    assert.ok(text.endsWith(".\n"));
  }
  assert.deepEqual(charVocab(a.source).itos, charVocab(a.target).itos);
  assert.equal(generateTextDomains({ seed: 0, nSentences: 0 }).source, "");
  assert.throws(() => generateTextDomains({ seed: 0, nSentences: 1.5 }), /nSentences/);
});

/** The sentences of a generated text (each ends with its only full stop). */
function sentencesOf(text: string): string[] {
  return text.split(/(?<=\.)\s+/).map((s) => s.trim()).filter((s) => s !== "");
}

Deno.test("generateTextDomains: held-out target sentences are none of the training text's, per seed", () => {
  const rng = new TestRng(0x7e47);
  // The sizes of exp:eva's corpus with and without --quick.
  for (const [n, nVal] of [[1500, 150], [4000, 400]]) {
    for (let trial = 0; trial < 2; trial++) {
      const seed = rng.int(0, 1_000_000);
      const d = generateTextDomains({ seed, nSentences: n, valSentences: nVal });
      const train = sentencesOf(d.target), val = sentencesOf(d.targetVal);
      assert.equal(train.length, n - nVal);
      assert.equal(val.length, nVal);
      const seen = new Set(train);
      const shared = val.filter((s) => seen.has(s));
      assert.equal(
        shared.length,
        0,
        `seed ${seed}: ${shared.length} of ${nVal} held-out sentences, e.g. "${shared[0]}"`,
      );
      // Same seed, same texts; the source does not depend on the held-out share.
      assert.deepEqual(generateTextDomains({ seed, nSentences: n, valSentences: nVal }), d);
      assert.equal(d.source, generateTextDomains({ seed, nSentences: n }).source);
      assert.deepEqual(charVocab(d.targetVal).itos, charVocab(d.target).itos);
    }
  }
  assert.throws(() => generateTextDomains({ seed: 0, nSentences: 10, valSentences: 11 }), /valSentences.*11/);
});

Deno.test("loadCorpus (generated): no validation sentence of the target domain is in its training text", async () => {
  for (const quick of [true, false]) {
    const corpus = await loadCorpus({ quick, pretrainSteps: 1 });
    // The corpus's vocabulary: characters of the generated domains (the same alphabet for every seed and size).
    const { source, target } = generateTextDomains({ seed: 1, nSentences: 200 });
    const v = charVocab(source + target);
    assert.equal(v.size, corpus.vocab);
    const train = new Set(sentencesOf(v.decode(corpus.train)));
    const val = sentencesOf(v.decode(corpus.val));
    assert.ok(val.length >= (quick ? 150 : 400), `${val.length} validation sentences`);
    const shared = val.filter((s) => train.has(s));
    assert.equal(
      shared.length,
      0,
      `quick ${quick}: ${shared.length} of ${val.length} in training, e.g. "${shared[0]}"`,
    );
  }
});

Deno.test("generateTextDomains: a model fit on the source has clearly higher loss on the target", () => {
  const train = generateTextDomains({ seed: 1, nSentences: 2000 });
  const heldOut = generateTextDomains({ seed: 2, nSentences: 500 });
  const alphabet = charVocab(train.source + train.target + heldOut.source + heldOut.target).itos.slice();
  const inDomain = bigramCrossEntropy(train.source, heldOut.source, alphabet);
  const shifted = bigramCrossEntropy(train.source, heldOut.target, alphabet);
  const adapted = bigramCrossEntropy(train.target, heldOut.target, alphabet);
  assert.ok(shifted > inDomain + 0.25, `source→source ${inDomain}, source→target ${shifted}`);
  assert.ok(adapted < shifted - 0.2, `target→target ${adapted}, source→target ${shifted}`);

  // Word level: the domains share function words but most target content words are new.
  const words = (text: string) => text.split(/[\s.,]+/).filter((w) => w.length > 0);
  const sourceWords = new Set(words(train.source));
  const targetTokens = words(heldOut.target);
  const unseen = targetTokens.filter((w) => !sourceWords.has(w)).length / targetTokens.length;
  assert.ok(unseen > 0.3 && unseen < 0.9, `unseen target word fraction ${unseen}`);
  for (const shared of ["the", "and", "was"]) {
    assert.ok(sourceWords.has(shared) && targetTokens.includes(shared));
  }
});

// ------------------------------------------------------------------------------------------------
// Character vocabulary
// ------------------------------------------------------------------------------------------------

Deno.test("charVocab: sorted code points, round trip, astral characters, helpful errors", () => {
  const vocab = charVocab("hello world");
  assert.deepEqual(vocab.itos, [" ", "d", "e", "h", "l", "o", "r", "w"]);
  assert.equal(vocab.size, 8);
  assert.equal(vocab.stoi.get("l"), 4);
  assert.deepEqual(Array.from(vocab.encode("hold")), [3, 5, 4, 1]);
  assert.equal(vocab.decode(vocab.encode("world hello")), "world hello");

  // An astral character is one token and sorts after every BMP character (by code point, not UTF-16 unit).
  const emoji = charVocab("a😀b\uffee");
  assert.deepEqual(emoji.itos, ["a", "b", "\uffee", "😀"]);
  assert.deepEqual(Array.from(emoji.encode("😀a")), [3, 0]);

  const { source } = generateTextDomains({ seed: 12, nSentences: 50 });
  const big = charVocab(source);
  assert.equal(big.decode(big.encode(source)), source);

  assert.throws(
    () => vocab.encode("hex"),
    /"x" \(U\+0078\) at position 2 is not in the 8-character vocabulary/,
  );
  assert.throws(() => vocab.decode([0, 8]), /id 8 at position 1 is outside 0\.\.7/);
});
