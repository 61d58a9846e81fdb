/**
 * A sentence-classification task for a pretrained LM: the UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD
 * 2015; `../shared/data/text/sentiment_labelled_sentences`, three domains of 1000 sentences: Amazon phone reviews,
 * IMDB, Yelp) as `sentence:` → label token (`0` negative, `1` positive, each one token of the model's tokenizer).
 * The model is fine-tuned on one domain (cross-entropy at the label position only; every other target is the
 * ignore index) and tested on held-out sentences of that domain and on all sentences of the other two; accuracy
 * compares the two label tokens' logits at the label position.
 *
 * @module
 */
import { type DeviceName, type F32, type I32, type LlamaLM, tensor, Tokenizer } from "../mod.ts";
import { checkOptions, epochIndices, loadSentiment } from "../mod.ts";
import { z } from "../deps.ts";

/** The domains and their files. */
export const SENTIMENT_DOMAINS: Readonly<Record<string, string>> = {
  amazon: "amazon_cells_labelled.txt",
  imdb: "imdb_labelled.txt",
  yelp: "yelp_labelled.txt",
};

/** One labelled sentence. */
export interface Labelled {
  /** The sentence. */
  text: string;
  /** 0 negative, 1 positive. */
  label: 0 | 1;
}

/**
 * Reads one domain's file with {@link loadSentiment}'s rules (one `sentence<TAB>0|1` per line, UTF-8, lines ending
 * in LF, CRLF or a lone CR, a final empty line allowed): a blank line elsewhere, a line with no tab, a label other
 * than 0 or 1 or an empty sentence is an error naming the file and the line.
 *
 * @param path The file.
 * @returns Its sentences, in file order.
 */
export async function readSentiment(path: string): Promise<Labelled[]> {
  return (await loadSentiment(path)).map((e) => ({ text: e.sentence, label: e.label }));
}

/** Token sequences of labelled sentences, ready to batch. */
export interface EncodedSet {
  /** `[n, seqLen]` inputs: BOS, the sentence's last tokens, `:`, then padding. */
  x: Int32Array;
  /** `[n, seqLen]` targets: the label token at the `:` position, the ignore index (-100) elsewhere. */
  y: Int32Array;
  /** Per sequence, the position whose prediction is the label. */
  pos: Int32Array;
  /** Per sequence, 0 or 1. */
  labels: Int32Array;
  /** Sequences. */
  n: number;
  /** Sentences too long for `seqLen`, kept as BOS and their last tokens (their beginning dropped). */
  cut: number;
}

/** The label tokens of a tokenizer: the single tokens `0` and `1` take after `:`. */
export function labelTokens(tok: Tokenizer): [number, number] {
  const after = (s: string) => {
    const base = tok.encode("x:");
    const e = tok.encode(`x:${s}`);
    if (e.length !== base.length + 1 || !base.every((v, i) => e[i] === v)) {
      throw new RangeError(`the tokenizer does not encode label "${s}" after ":" as one token`);
    }
    return e[e.length - 1];
  };
  return [after("0"), after("1")];
}

/**
 * Encodes sentences as `BOS sentence ":"` (left-truncated to fit) followed by the label token as target.
 *
 * @param items The sentences.
 * @param tok The model's tokenizer.
 * @param seqLen Tokens per sequence.
 * @param label The two label tokens ({@link labelTokens}).
 * @returns The encoded set.
 */
export function encodeSentiment(
  items: readonly Labelled[],
  tok: Tokenizer,
  seqLen: number,
  label: readonly [number, number],
): EncodedSet {
  if (seqLen < 3) throw new RangeError(`encodeSentiment: seqLen must be at least 3, got ${seqLen}`);
  const n = items.length;
  const x = new Int32Array(n * seqLen).fill(tok.eosId);
  const y = new Int32Array(n * seqLen).fill(-100);
  const pos = new Int32Array(n);
  const labels = new Int32Array(n);
  let cut = 0;
  items.forEach((it, i) => {
    const e = tok.encode(`${it.text}:`);
    // BOS, then the sentence's last tokens (the end of a long review), then ":".
    if (e.length > seqLen) cut++;
    const body = e.length > seqLen ? [e[0], ...e.slice(e.length - (seqLen - 1))] : [...e];
    x.set(body, i * seqLen);
    pos[i] = body.length - 1;
    labels[i] = it.label;
    y[i * seqLen + pos[i]] = label[it.label];
  });
  return { x, y, pos, labels, n, cut };
}

/** Loss and accuracy of a model on a set. */
export interface ClassifyScore {
  /** Mean cross-entropy of the label token (over the whole vocabulary). */
  loss: number;
  /**
   * Share of sequences whose right label token has the larger logit of the two; a sequence where either logit is
   * not finite counts as wrong.
   */
  accuracy: number;
}

const SENTIMENT_OPTIONS = z.object({
  dir: z.string(),
  tokenizer: z.string(),
  trainDomain: z.string(),
  heldOut: z.int().min(1).optional(),
  seqLen: z.int().min(1),
  batchSize: z.int().min(1),
  device: z.enum(["webgpu", "wasm", "cpu"]),
}).strict();

/** Options of {@link sentimentTask}. */
export interface SentimentOptions {
  /** The directory of the three files. */
  dir: string;
  /** The model's tokenizer file. */
  tokenizer: string;
  /** The domain to fine-tune on (the other two are test domains). */
  trainDomain: string;
  /** Sentences of the training domain held out for its own test (default 200). */
  heldOut?: number;
  /** Tokens per sequence. */
  seqLen: number;
  /** Sequences per batch. */
  batchSize: number;
  /** The device. */
  device: DeviceName;
}

/** The classification task of an LM experiment. */
export interface SentimentTask {
  /** The training domain and the test domains. */
  readonly trainDomain: string;
  /** Every domain tested: the training domain's held-out part first. */
  readonly testDomains: readonly string[];
  /** The label tokens (negative, positive). */
  readonly labels: readonly [number, number];
  /** Training sequences. */
  readonly train: EncodedSet;
  /** Test sets by domain. */
  readonly test: Readonly<Record<string, EncodedSet>>;
  /**
   * Training batch `step`, a pure function of (seed, step): an epoch-wise shuffle of the training set
   * (`batchSize` sequences unless given).
   */
  batch(seed: number, step: number, batchSize?: number): { x: I32; y: I32 };
  /** Loss and accuracy on each test domain (or on the given ones). */
  score(model: LlamaLM, domains?: readonly string[]): Promise<Record<string, ClassifyScore>>;
  /** A description for reports. */
  readonly description: string;
}

/** A deterministic shuffle of `n` indices (a permutation drawn from `seed`). */
function shuffled(n: number, seed: number): number[] {
  return [...epochIndices(n, { batchSize: n, seed, step: 1 })];
}

/**
 * The task: `trainDomain`'s sentences (less `heldOut`, a fixed random subset, and the repeats of held-out sentences)
 * for training; the held-out ones and every sentence of the other domains for testing.
 */
export async function sentimentTask(opts: SentimentOptions): Promise<SentimentTask> {
  checkOptions("sentimentTask", SENTIMENT_OPTIONS, opts);
  if (!(opts.trainDomain in SENTIMENT_DOMAINS)) {
    throw new RangeError(
      `trainDomain must be one of ${Object.keys(SENTIMENT_DOMAINS).join(", ")}, got ${
        JSON.stringify(opts.trainDomain)
      }`,
    );
  }
  const tok = await Tokenizer.load(opts.tokenizer);
  const labels = labelTokens(tok);
  const all: Record<string, Labelled[]> = {};
  for (const [d, f] of Object.entries(SENTIMENT_DOMAINS)) all[d] = await readSentiment(`${opts.dir}/${f}`);
  const own = all[opts.trainDomain];
  const held = opts.heldOut ?? 200;
  if (!(held >= 1 && held < own.length)) {
    throw new RangeError(`heldOut must be in 1..${own.length - 1}, got ${held}`);
  }
  const order = shuffled(own.length, 4242);
  const heldItems = order.slice(0, held).map((i) => own[i]);
  // The files repeat a few sentences ("Works great." twice in Amazon's): a repeat of a held-out sentence is not
  // trained on, or the held-out score would test sentences the model was fine-tuned on.
  const heldTexts = new Set(heldItems.map((it) => it.text));
  const trainItems = order.slice(held).map((i) => own[i]).filter((it) => !heldTexts.has(it.text));
  const enc = (items: readonly Labelled[]) => encodeSentiment(items, tok, opts.seqLen, labels);
  const train = enc(trainItems);
  const testDomains = [
    `${opts.trainDomain} (held out)`,
    ...Object.keys(all).filter((d) => d !== opts.trainDomain),
  ];
  const test: Record<string, EncodedSet> = { [testDomains[0]]: enc(heldItems) };
  for (const d of testDomains.slice(1)) test[d] = enc(all[d]);
  const { seqLen, batchSize, device } = opts;
  // `n` rows (default: one per index); the rows past the indices are padding: EOS inputs, ignored targets.
  const rows = (set: EncodedSet, idx: ArrayLike<number>, n = idx.length) => {
    const x = new Int32Array(n * seqLen).fill(tok.eosId), y = new Int32Array(n * seqLen).fill(-100);
    for (let r = 0; r < idx.length; r++) {
      x.set(set.x.subarray(idx[r] * seqLen, (idx[r] + 1) * seqLen), r * seqLen);
      y.set(set.y.subarray(idx[r] * seqLen, (idx[r] + 1) * seqLen), r * seqLen);
    }
    const shape = [n, seqLen];
    return {
      x: tensor(x, { shape, dtype: "i32", device }) as I32,
      y: tensor(y, { shape, dtype: "i32", device }) as I32,
    };
  };
  return {
    trainDomain: opts.trainDomain,
    testDomains,
    labels,
    train,
    test,
    description:
      `sentiment (UCI labelled sentences): sentence → label token, fine-tuned on ${opts.trainDomain} ` +
      `(${train.n} sentences), tested on ${
        testDomains.map((d) => `${d} (${test[d].n})`).join(", ")
      }; ${seqLen} tokens per sequence, a longer sentence cut to its last ${seqLen - 2} tokens (after BOS, ` +
      `before ":"): ${
        [["training", train] as const, ...testDomains.map((d) => [d, test[d]] as const)]
          .map(([d, set]) => `${set.cut} of ${set.n} ${d}`).join(", ")
      }`,
    batch: (seed, step, size = batchSize) =>
      rows(train, epochIndices(train.n, { batchSize: size, seed, step })),
    async score(model, domains = testDomains) {
      const out: Record<string, ClassifyScore> = {};
      for (const d of domains) {
        const set = test[d];
        if (set === undefined) {
          throw new RangeError(`no test domain "${d}"; there are ${testDomains.join(", ")}`);
        }
        // Every chunk of a set has the same rows, the last one padded with rows that have no label: kernels are
        // specialised to shapes (on WebGPU kept for the life of the process), and a ragged last chunk compiled a
        // set of its own for each remainder.
        const chunk = Math.min(64, set.n);
        let lossSum = 0, right = 0;
        for (let s = 0; s < set.n; s += chunk) {
          const idx = Array.from({ length: Math.min(chunk, set.n - s) }, (_, i) => s + i);
          const { x, y } = rows(set, idx, chunk);
          // The logits at each sequence's label position: a one-hot mask over positions, summed out.
          const mask = new Float32Array(chunk * seqLen);
          idx.forEach((i, r) => (mask[r * seqLen + set.pos[i]] = 1));
          const m = tensor(mask, { shape: [chunk, seqLen, 1], device }) as F32;
          const logits = model.forward(x) as F32;
          const at = logits.mul(m).sum(1) as F32;
          const [sel, loss] = await Promise.all([at.data(), model.loss(x, y).item()]);
          const v = logits.shape[2];
          idx.forEach((i, r) => {
            const neg = (sel as Float32Array)[r * v + labels[0]],
              pos = (sel as Float32Array)[r * v + labels[1]];
            // A non-finite logit (a diverged model) predicts neither label: it counts as wrong (`pos > neg` alone
            // reads NaN as a prediction of 0, and a diverged model would score the share of negatives).
            const finite = Number.isFinite(neg) && Number.isFinite(pos);
            if (finite && (pos > neg ? 1 : 0) === set.labels[i]) right++;
          });
          lossSum += (loss as number) * idx.length;
        }
        out[d] = { loss: lossSum / set.n, accuracy: right / set.n };
      }
      return out;
    },
  };
}
