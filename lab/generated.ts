/**
 * Built-in offline datasets, generated from a seed, so that a fresh clone can run every experiment
 * without downloads: captioned shape images and a source/target pair of synthetic text domains (encode them with
 * `charVocab` from the library's data module).
 *
 * @module
 */

import { checkOptions, deriveSeed, Rng } from "../mod.ts";
import { z } from "../deps.ts";

/** Shape names, indexed by the `shape` class label of {@linkcode generateShapes}. */
export const SHAPE_NAMES = ["circle", "square", "triangle", "cross"] as const;
/** Colour names, indexed by the `colour` class label of {@linkcode generateShapes}. */
export const COLOUR_NAMES = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "orange"] as const;
/**
 * Position names, indexed by the `position` class label of {@linkcode generateShapes}: the cells of a
 * 3×3 grid in row-major order.
 */
export const POSITION_NAMES = [
  "top left",
  "top",
  "top right",
  "left",
  "centre",
  "right",
  "bottom left",
  "bottom",
  "bottom right",
] as const;

const SHAPE_PLURALS = ["circles", "squares", "triangles", "crosses"] as const;
const POSITION_PHRASES = [
  "at the top left",
  "at the top",
  "at the top right",
  "on the left",
  "in the centre",
  "on the right",
  "at the bottom left",
  "at the bottom",
  "at the bottom right",
] as const;
const COUNT_WORDS = ["", "one", "two", "three"] as const;

/** RGB in [0, 1] for each entry of {@linkcode COLOUR_NAMES}. */
const COLOUR_RGB: readonly (readonly [number, number, number])[] = [
  [0.95, 0.1, 0.1], // red
  [0.1, 0.8, 0.15], // green
  [0.15, 0.3, 1.0], // blue
  [1.0, 0.9, 0.1], // yellow
  [0.1, 0.9, 0.9], // cyan
  [0.9, 0.15, 0.9], // magenta
  [1.0, 1.0, 1.0], // white
  [1.0, 0.55, 0.05], // orange
];

/** Options for {@linkcode generateShapes}. */
const SHAPES_OPTIONS = z.object({ n: z.int().min(0), size: z.int().min(12).optional(), seed: z.int() })
  .strict();

/** Options of {@link generateShapes}. */
export interface ShapesOptions {
  /** Number of images. */
  n: number;
  /** Image side in pixels, at least 12. Default 16. */
  size?: number;
  /** Seed of the generator; the same seed gives the same dataset. */
  seed: number;
}

/** Class labels of the shape images, one entry per image. */
export interface ShapesLabels {
  /** Index into {@linkcode SHAPE_NAMES}. */
  shape: Int32Array;
  /** Index into {@linkcode COLOUR_NAMES}. */
  colour: Int32Array;
  /** Number of shapes drawn, 1..3 (use `count - 1` as a 3-way class index). */
  count: Int32Array;
  /** Index into {@linkcode POSITION_NAMES}. */
  position: Int32Array;
}

/** Captioned procedural images. */
export interface ShapesData {
  /** `n × size × size × 3` float32 RGB in [0, 1], row-major (height, width, channel). */
  images: Float32Array;
  /** One caption per image, e.g. `"two red circles at the top left"`. */
  captions: string[];
  /** Integer class labels per image. */
  labels: ShapesLabels;
  /** Number of images. */
  n: number;
  /** Image side in pixels. */
  size: number;
}

/** Whether pixel (x, y) of an s×s box belongs to the given shape (pixel centres at x + 0.5, y + 0.5). */
function insideShape(shape: number, x: number, y: number, s: number): boolean {
  const u = x + 0.5;
  const v = y + 0.5;
  const h = s / 2;
  switch (shape) {
    case 0: // circle: disc of radius about s/2 (r² = h² − h/2 keeps the corner pixels out even when s = 3)
      return (u - h) ** 2 + (v - h) ** 2 <= h * h - h / 2;
    case 1: // square: the whole box
      return true;
    case 2: // triangle, apex up: half-width grows linearly from the top row to s/2 at the bottom row
      return Math.abs(u - h) <= (h * (y + 1)) / s;
    case 3: { // cross (an X): both diagonals, band half-width t
      const t = Math.max(0.5, s / 8);
      return Math.abs(u - v) <= t || Math.abs(u + v - s) <= t;
    }
    default:
      throw new RangeError(`unknown shape id ${shape}`);
  }
}

/**
 * Generates captioned images of simple coloured shapes on a black background.
 *
 * Layout: the image holds a 3×3 grid of cells of side `s = floor((size - 2) / 3)` separated by one-pixel
 * gaps (the whole grid is shifted by a random offset when there is room). Each image picks one shape, one
 * colour, one grid row and a count of 1–3, then draws that many identical shapes in distinct random cells
 * of the row, so shapes never touch. The position word follows from the drawn cells: the row gives
 * top / (middle) / bottom and the mean occupied column gives left / (centre) / right, e.g. cells 0 and 1
 * of the top row give `"at the top left"`, cells 0 and 2 give `"at the top"`.
 *
 * @param options `n`, `seed` and `size` (default 16, at least 12).
 * @throws {RangeError} on a non-integer or too small `n` / `size`.
 *
 * @example
 * ```ts
 * import { generateShapes, SHAPE_NAMES } from "./generated.ts";
 * const data = generateShapes({ n: 100, seed: 1 });
 * data.captions[0]; // e.g. "two red circles at the top left"
 * SHAPE_NAMES[data.labels.shape[0]]; // "circle"
 * ```
 */
export function generateShapes(options: ShapesOptions): ShapesData {
  checkOptions("generateShapes", SHAPES_OPTIONS, options);
  const { n, size = 16, seed } = options;
  const rng = new Rng(seed);
  const s = Math.floor((size - 2) / 3);
  const slack = size - (3 * s + 2);
  const images = new Float32Array(n * size * size * 3);
  const captions: string[] = [];
  const labels: ShapesLabels = {
    shape: new Int32Array(n),
    colour: new Int32Array(n),
    count: new Int32Array(n),
    position: new Int32Array(n),
  };
  for (let i = 0; i < n; i++) {
    const shape = rng.int(SHAPE_NAMES.length);
    const colour = rng.int(COLOUR_NAMES.length);
    const count = 1 + rng.int(3);
    const row = rng.int(3);
    const columns = rng.shuffle([0, 1, 2]).slice(0, count);
    const offsetX = rng.int(slack + 1);
    const offsetY = rng.int(slack + 1);

    const meanColumn = columns.reduce((sum, c) => sum + c, 0) / count;
    const horizontal = meanColumn < 1 ? 0 : meanColumn > 1 ? 2 : 1;
    const position = 3 * row + horizontal;

    const rgb = COLOUR_RGB[colour];
    const imageBase = i * size * size * 3;
    for (const column of columns) {
      const left = offsetX + column * (s + 1);
      const top = offsetY + row * (s + 1);
      for (let y = 0; y < s; y++) {
        for (let x = 0; x < s; x++) {
          if (!insideShape(shape, x, y, s)) continue;
          const p = imageBase + ((top + y) * size + (left + x)) * 3;
          images[p] = rgb[0];
          images[p + 1] = rgb[1];
          images[p + 2] = rgb[2];
        }
      }
    }

    const colourName = COLOUR_NAMES[colour];
    const quantity = count === 1 ? (/^[aeiou]/.test(colourName) ? "an" : "a") : COUNT_WORDS[count];
    const noun = count === 1 ? SHAPE_NAMES[shape] : SHAPE_PLURALS[shape];
    captions.push(`${quantity} ${colourName} ${noun} ${POSITION_PHRASES[position]}`);
    labels.shape[i] = shape;
    labels.colour[i] = colour;
    labels.count[i] = count;
    labels.position[i] = position;
  }
  return { images, captions, labels, n, size };
}

// ---------------------------------------------------------------------------------------------------------
// Synthetic text domains
// ---------------------------------------------------------------------------------------------------------

/** Word lists and sentence templates of one synthetic domain. `{slot}` placeholders name a word list. */
interface Grammar {
  words: Record<string, readonly string[]>;
  /** Opening sentence of every story. */
  opening: readonly string[];
  /** Body sentences; each template has a relative weight. */
  body: readonly { template: string; weight: number }[];
  /** Closing sentence of every story. */
  closing: readonly string[];
  /** Story length in body sentences: min..max inclusive. */
  bodySentences: readonly [number, number];
}

/** Source domain: short, repetitive children's stories about animals. */
const SOURCE_GRAMMAR: Grammar = {
  words: {
    animal: ["cat", "dog", "bird", "fox", "rabbit", "mouse", "duck", "bear", "frog", "puppy"],
    adj: ["little", "happy", "big", "small", "brown", "soft", "kind", "sleepy", "lazy", "jolly"],
    verb: ["saw", "liked", "found", "chased", "helped", "met", "hugged", "jumped over", "visited", "kissed"],
    place: ["the garden", "the park", "the forest", "the pond", "the farm", "the hill", "the big tree"],
    thing: ["a ball", "a stick", "an apple", "a flower", "a box", "a hat", "a cake", "a quilt"],
    feeling: ["happy", "sad", "tired", "hungry", "scared", "glad", "sleepy", "excited"],
    name: ["tom", "lily", "ben", "mia", "sam", "zoe", "max", "jack"],
  },
  opening: [
    "once upon a time there was a {adj} {animal}.",
    "once upon a time a {adj} {animal} lived near {place}.",
  ],
  body: [
    { template: "the {adj} {animal} {verb} the {animal} in {place}.", weight: 4 },
    { template: "one day the {animal} found {thing} near {place}.", weight: 3 },
    { template: "the {animal} was very {feeling}.", weight: 3 },
    { template: "the {animal} and the {animal} played in {place}.", weight: 3 },
    { template: "{name} gave the {animal} {thing}.", weight: 2 },
    { template: "the {animal} said, let us play with {thing}.", weight: 2 },
    { template: "they ran and ran and the {animal} was {feeling}.", weight: 1 },
  ],
  closing: ["then the {animal} went home and slept.", "the {animal} and {name} were friends forever."],
  bodySentences: [3, 5],
};

/**
 * Target domain: the same story skeleton (opening, subject-verb-object sentences, closing) but a shifted
 * vocabulary (a seafaring log), longer templates with subordinate clauses and different word statistics.
 */
const TARGET_GRAMMAR: Grammar = {
  words: {
    animal: ["captain", "sailor", "pilot", "whale", "gull", "crab", "merchant", "keeper", "quartermaster"],
    adj: ["old", "grey", "brave", "weary", "salty", "quiet", "strange", "northern", "weathered"],
    verb: [
      "watched",
      "warned",
      "guided",
      "carried",
      "repaired",
      "signalled",
      "questioned",
      "rescued",
      "joined",
    ],
    place: [
      "the harbour",
      "the reef",
      "the northern coast",
      "the lower deck",
      "the bay",
      "the frozen strait",
    ],
    thing: ["a rope", "a lantern", "a compass", "a torn sail", "a chart", "an anchor", "a jar of oil"],
    feeling: ["uneasy", "proud", "restless", "soaked", "calm", "anxious", "exhausted"],
    name: ["morgan", "hale", "quincy", "jensen", "vasquez", "okafor", "zhukov"],
  },
  opening: [
    "the log of the {adj} {animal} begins at {place}.",
    "in the third week of the voyage the {adj} {animal} reached {place}.",
  ],
  body: [
    {
      template: "at dawn the {adj} {animal} {verb} the {animal} near {place}, and the wind rose.",
      weight: 3,
    },
    { template: "by nightfall the {animal} had {verb} the {adj} {animal}.", weight: 3 },
    { template: "although the sea was rough, {name} kept {thing} beside {place}.", weight: 2 },
    { template: "the crew grew {feeling} when the {animal} lost {thing}.", weight: 2 },
    { template: "{name} wrote that the {animal} seemed {feeling}, perhaps because of {place}.", weight: 2 },
    { template: "every hour the {animal} checked {thing} twice.", weight: 1 },
  ],
  closing: [
    "the entry ends with the {animal} resting at {place}.",
    "{name} signed the page and the {animal} put out the lantern.",
  ],
  bodySentences: [2, 4],
};

function pickWeighted<T extends { weight: number }>(rng: Rng, items: readonly T[]): T {
  const total = items.reduce((sum, item) => sum + item.weight, 0);
  let r = rng.next() * total;
  for (const item of items) {
    r -= item.weight;
    if (r < 0) return item;
  }
  return items[items.length - 1];
}

function fillTemplate(rng: Rng, template: string, words: Record<string, readonly string[]>): string {
  return template.replace(/\{(\w+)\}/g, (_, slot: string) => {
    const list = words[slot];
    if (list === undefined) throw new Error(`text grammar: template slot {${slot}} has no word list`);
    return list[rng.int(list.length)];
  });
}

/** Draws a sentence again where one fails `keep`, up to this many times (then the grammar cannot give one). */
const MAX_DRAWS = 10_000;

/**
 * Generates stories (one per line) until exactly `nSentences` sentences were written, each one that `keep` accepts
 * (a sentence `keep` refuses is drawn again, template and words, in the same place of the story).
 */
function generateDomain(
  rng: Rng,
  grammar: Grammar,
  nSentences: number,
  keep: (sentence: string) => boolean = () => true,
): string {
  const lines: string[] = [];
  let written = 0;
  while (written < nSentences) {
    const [lo, hi] = grammar.bodySentences;
    const planned = 2 + lo + rng.int(hi - lo + 1);
    const length = Math.min(planned, nSentences - written);
    const sentences: string[] = [];
    for (let k = 0; k < length; k++) {
      const place = k === 0 ? "opening" : k === planned - 1 ? "closing" : "body";
      const draw = () => {
        if (place === "body") return pickWeighted(rng, grammar.body).template;
        const list = grammar[place];
        return list[rng.int(list.length)];
      };
      let sentence = fillTemplate(rng, draw(), grammar.words);
      for (let tries = 1; !keep(sentence); tries++) {
        if (tries === MAX_DRAWS) {
          throw new RangeError(
            `text grammar: no ${place} sentence of the wanted share in ${MAX_DRAWS} draws (the held-out split ` +
              `leaves this place of the story none)`,
          );
        }
        sentence = fillTemplate(rng, draw(), grammar.words);
      }
      sentences.push(sentence);
    }
    lines.push(sentences.join(" "));
    written += length;
  }
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`;
}

/** The share of distinct target sentences held out for validation (when validation sentences are asked for). */
const VAL_SHARE = 0.1;

/** Whether `sentence` belongs to the validation share of seed `seed`: a hash of both, not the order drawn. */
function isValSentence(seed: number, sentence: string): boolean {
  return deriveSeed(seed, "validation sentence", sentence) / 2 ** 32 < VAL_SHARE;
}

/** Options for {@linkcode generateTextDomains}. */
export interface TextDomainsOptions {
  /** Seed; the same seed gives the same texts. */
  seed: number;
  /** Sentences per domain. Default 2000 (about 100 kB of text per domain). */
  nSentences?: number;
  /**
   * Of the target domain's `nSentences`, how many are held out as {@linkcode TextDomains.targetVal}. Default 0.
   * When more than 0, the distinct target sentences are split by a hash with the seed: a tenth can only be drawn
   * for validation and the rest only for training, so no validation sentence is in the training text.
   */
  valSentences?: number;
}

/** A pair of synthetic text domains. */
export interface TextDomains {
  /** Source ("pretraining") domain: short animal stories, one story per line. */
  source: string;
  /** Target ("fine-tuning") domain: seafaring log entries with the same skeleton, one entry per line. */
  target: string;
  /** Held-out target-domain entries (`valSentences` sentences, none of them in `target`); empty without them. */
  targetVal: string;
}

/**
 * Generates two synthetic English-like text domains for domain-shift experiments. Both are lowercase
 * ASCII (letters, space, `.`, `,`, newline) built from small grammars that share a story skeleton
 * and function words ("the", "and", "was"...), but the target swaps the content vocabulary (animal
 * stories → a ship's log), uses longer templates with subordinate clauses and different word
 * frequencies, so a small language model trained on `source` has clearly higher loss on `target` before
 * fine-tuning. Build a character vocabulary from `source + target` so both can be encoded.
 *
 * @param options `seed`, `nSentences` (default 2000, per domain) and `valSentences` (default 0; of the target's).
 * @throws {RangeError} when `nSentences` is not a non-negative integer, or `valSentences` is not one of at most
 * `nSentences`.
 *
 * @example
 * ```ts
 * import { charVocab } from "../mod.ts";
 * import { generateTextDomains } from "./generated.ts";
 * const { source, target } = generateTextDomains({ seed: 0, nSentences: 500 });
 * const vocab = charVocab(source + target);
 * const ids = vocab.encode(source);
 * ```
 */
export function generateTextDomains(options: TextDomainsOptions): TextDomains {
  const { seed, nSentences = 2000, valSentences = 0 } = options;
  if (!Number.isInteger(nSentences) || nSentences < 0) {
    throw new RangeError(`generateTextDomains: nSentences must be an integer >= 0, got ${nSentences}`);
  }
  if (!Number.isInteger(valSentences) || valSentences < 0 || valSentences > nSentences) {
    throw new RangeError(
      `generateTextDomains: valSentences must be an integer in [0, nSentences = ${nSentences}], got ${valSentences}`,
    );
  }
  const rng = new Rng(seed);
  // Independent streams for the domains and the held-out target text, all derived from the seed.
  const sourceRng = new Rng(rng.uint32());
  const targetRng = new Rng(rng.uint32());
  const valRng = new Rng(rng.uint32());
  const held = valSentences > 0;
  return {
    source: generateDomain(sourceRng, SOURCE_GRAMMAR, nSentences),
    target: generateDomain(
      targetRng,
      TARGET_GRAMMAR,
      nSentences - valSentences,
      held ? (s) => !isValSentence(seed, s) : undefined,
    ),
    targetVal: generateDomain(valRng, TARGET_GRAMMAR, valSentences, (s) => isValSentence(seed, s)),
  };
}
