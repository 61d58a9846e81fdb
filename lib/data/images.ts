/**
 * Image-dataset loaders over plain typed arrays: MNIST-style IDX files (gzip'd or raw), the UCI optdigits
 * CSV (8×8 digits with values 0..16) and the Noto emoji 32×32 RGBA pack with its `index.tsv`.
 *
 * @module
 */
import { gunzipSync } from "node:zlib";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";
import { readError } from "../io/paths.ts";
import { readUtf8 } from "./text.ts";

const GZIP_MAGIC_0 = 0x1f;
const GZIP_MAGIC_1 = 0x8b;
const IDX_IMAGES_MAGIC = 2051; // 0x00000803: unsigned byte, 3 dimensions
const IDX_LABELS_MAGIC = 2049; // 0x00000801: unsigned byte, 1 dimension

/**
 * Default limit, in bytes, on what a gzip'd image file may expand to: 2 GiB, about 45 times MNIST's training
 * images (47 MB), 4 times EMNIST's largest IDX file (549 MB) and over 100 times the emoji pack (about 15 MB). A
 * gzip stream can expand about a thousandfold, so a small corrupt or hostile file would otherwise fill memory.
 */
export const MAX_GUNZIP_BYTES = 2 ** 31;

/** Options of {@link loadMnist} and {@link loadEmojiPack}. */
export interface GunzipOptions {
  /** Largest size in bytes a gzip'd file may expand to; default {@link MAX_GUNZIP_BYTES} (2 GiB). */
  maxGunzipBytes?: number;
}

const GUNZIP_OPTIONS = z.object({ maxGunzipBytes: z.int().min(1) }).partial().strict();

/** Reads a file, naming the loader, the kind of file and the path when it cannot be read. */
async function readBytes(path: string, what: string, loader: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    throw readError(err, `${loader}: cannot read ${what} "${path}"`);
  }
}

/** Reads a file and gunzips it when it starts with the gzip magic bytes; errors name the file. */
async function readMaybeGzip(
  path: string,
  what: string,
  loader: string,
  maxBytes: number,
): Promise<Uint8Array> {
  const raw = await readBytes(path, what, loader);
  if (raw.length < 2 || raw[0] !== GZIP_MAGIC_0 || raw[1] !== GZIP_MAGIC_1) return raw;
  return gunzip(raw, { path, what, loader, maxBytes });
}

/**
 * Gunzips every member of `raw` (a gzip file may be several members one after another, as gunzip reads it),
 * refusing output longer than `maxBytes`.
 */
function gunzip(
  raw: Uint8Array,
  { path, what, loader, maxBytes }: { path: string; what: string; loader: string; maxBytes: number },
): Uint8Array {
  try {
    const out = gunzipSync(raw, { maxOutputLength: maxBytes });
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch (err) {
    if (err instanceof RangeError && (err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new Error(
        `${loader}: ${what} "${path}" expands to more than ${maxBytes} bytes when gunzipped (from ${raw.length} ` +
          `gzip bytes); if the file is genuine, raise the limit with the option maxGunzipBytes`,
      );
    }
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(
      `${what} "${path}" looks gzip'd but could not be decompressed (${raw.length} bytes): ${reason}`,
    );
  }
}

function describeIdxMagic(magic: number): string {
  if (magic === IDX_IMAGES_MAGIC) return "2051 (an IDX3 images file)";
  if (magic === IDX_LABELS_MAGIC) return "2049 (an IDX1 labels file)";
  return `${magic} (0x${(magic >>> 0).toString(16).padStart(8, "0")})`;
}

/** MNIST-style images and labels. */
export interface MnistData {
  /** Pixels, `n × rows × cols` uint8 row-major (0 = background, 255 = ink). */
  images: Uint8Array;
  /** One label per image. */
  labels: Uint8Array;
  /** Number of examples. */
  n: number;
  /** Image height. */
  rows: number;
  /** Image width. */
  cols: number;
}

/**
 * Loads an MNIST-style pair of IDX files (gzip'd or raw; gzip is detected from the magic bytes).
 * Checks the magic numbers (2051 images, 2049 labels), that each file holds exactly the bytes its header
 * declares, that both files hold the same number of examples and that every label is 0..9. Errors name the file and
 * what was found.
 *
 * @param imagesPath e.g. `t10k-images-idx3-ubyte.gz`.
 * @param labelsPath e.g. `t10k-labels-idx1-ubyte.gz`.
 * @param options `maxGunzipBytes`: the most a gzip'd file may expand to (default {@link MAX_GUNZIP_BYTES}, 2 GiB).
 * @throws {Error} on a file that cannot be read, a bad magic number, a truncated or oversized file, a gzip'd file that expands past the limit, mismatched counts or a label above 9.
 *
 * @example
 * ```ts
 * import { loadMnist } from "./images.ts";
 * const dir = "../shared/data/images/mnist";
 * const test = await loadMnist(`${dir}/t10k-images-idx3-ubyte.gz`, `${dir}/t10k-labels-idx1-ubyte.gz`);
 * // test.n === 10000, test.rows === 28, test.cols === 28
 * ```
 */
export async function loadMnist(
  imagesPath: string,
  labelsPath: string,
  options: GunzipOptions = {},
): Promise<MnistData> {
  checkOptions("loadMnist", GUNZIP_OPTIONS, options);
  const maxBytes = options.maxGunzipBytes ?? MAX_GUNZIP_BYTES;
  const imageBytes = await readMaybeGzip(imagesPath, "IDX images file", "loadMnist", maxBytes);
  const labelBytes = await readMaybeGzip(labelsPath, "IDX labels file", "loadMnist", maxBytes);

  const imageView = new DataView(imageBytes.buffer, imageBytes.byteOffset, imageBytes.byteLength);
  const imageMagic = imageBytes.length >= 4 ? imageView.getInt32(0, false) : -1;
  if (imageBytes.length >= 4 && imageMagic !== IDX_IMAGES_MAGIC) {
    throw new Error(
      `IDX images file "${imagesPath}": expected magic 2051 but found ${describeIdxMagic(imageMagic)}`,
    );
  }
  if (imageBytes.length < 16) {
    throw new Error(
      `IDX images file "${imagesPath}" is too short for its 16-byte header: it has ${imageBytes.length} bytes`,
    );
  }
  const n = imageView.getInt32(4, false);
  const rows = imageView.getInt32(8, false);
  const cols = imageView.getInt32(12, false);
  if (n < 0 || rows <= 0 || cols <= 0) {
    throw new Error(
      `IDX images file "${imagesPath}": header declares n=${n}, rows=${rows}, cols=${cols}; expected n >= 0 and positive sizes`,
    );
  }
  const expectedImageBytes = 16 + n * rows * cols;
  if (imageBytes.length !== expectedImageBytes) {
    const problem = imageBytes.length < expectedImageBytes ? "is truncated" : "has trailing bytes";
    throw new Error(
      `IDX images file "${imagesPath}" ${problem}: its header declares ${n} images of ${rows}×${cols} ` +
        `(${expectedImageBytes} bytes with the header) but the data has ${imageBytes.length} bytes`,
    );
  }

  const labelView = new DataView(labelBytes.buffer, labelBytes.byteOffset, labelBytes.byteLength);
  const labelMagic = labelBytes.length >= 4 ? labelView.getInt32(0, false) : -1;
  if (labelBytes.length >= 4 && labelMagic !== IDX_LABELS_MAGIC) {
    throw new Error(
      `IDX labels file "${labelsPath}": expected magic 2049 but found ${describeIdxMagic(labelMagic)}`,
    );
  }
  if (labelBytes.length < 8) {
    throw new Error(
      `IDX labels file "${labelsPath}" is too short for its 8-byte header: it has ${labelBytes.length} bytes`,
    );
  }
  const nLabels = labelView.getInt32(4, false);
  if (labelBytes.length !== 8 + nLabels) {
    const problem = labelBytes.length < 8 + nLabels ? "is truncated" : "has trailing bytes";
    throw new Error(
      `IDX labels file "${labelsPath}" ${problem}: its header declares ${nLabels} labels ` +
        `(${8 + nLabels} bytes with the header) but the data has ${labelBytes.length} bytes`,
    );
  }
  if (nLabels !== n) {
    throw new Error(
      `IDX files disagree: images "${imagesPath}" hold ${n} images but labels "${labelsPath}" hold ${nLabels} labels`,
    );
  }
  const labels = labelBytes.slice(8);
  const bad = labels.findIndex((label) => label > 9);
  if (bad >= 0) {
    throw new Error(
      `IDX labels file "${labelsPath}": the label at index ${bad} is ${labels[bad]}; ` +
        "labels must be digits 0..9",
    );
  }
  return {
    images: imageBytes.slice(16),
    labels,
    n,
    rows,
    cols,
  };
}

/** The UCI optdigits set: 8×8 images with 17 grey levels. */
export interface OptdigitsData {
  /** Pixels, `n × 64` uint8 row-major, each in 0..16. */
  images: Uint8Array;
  /** Class 0..9 per image. */
  labels: Uint8Array;
  /** Number of rows (examples). */
  n: number;
}

const OPTDIGITS_FIELDS = 65;
const INTEGER_PATTERN = /^-?\d+$/;
const OPTDIGITS_HEADER = [...Array.from({ length: 64 }, (_, i) => `Block ${i + 1}`), "Class"].join(",");

/**
 * Loads an optdigits CSV (`optdigits.tra` / `optdigits.tes`): each row has 64 integers in 0..16 (an 8×8
 * image, row-major) and then the class 0..9. A first line that is exactly the header `Block 1,…,Block 64,Class`
 * (the one the shared copies carry; fields trimmed) is skipped, so both the headered and the original UCI files
 * load; any other first line is read as a data row. Each row is validated; errors name the file and the
 * 1-based line number. A file that is not valid UTF-8 or holds no data rows is an error naming the file.
 *
 * @param path CSV file (UTF-8, LF or CRLF).
 * @throws {Error} on a file that cannot be read, bytes that are not UTF-8, a row with the wrong number of fields, a non-integer, a value out
 *   of range, or no rows.
 *
 * @example
 * ```ts
 * import { loadOptdigits } from "./images.ts";
 * const digits = await loadOptdigits("../shared/data/images/optdigits/optdigits.tes");
 * // digits.n === 1797; digits.images.length === 1797 * 64
 * ```
 */
export async function loadOptdigits(path: string): Promise<OptdigitsData> {
  const bytes = await readBytes(path, "optdigits file", "loadOptdigits");
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`optdigits file "${path}" is not valid UTF-8 (${bytes.length} bytes)`);
  }
  const lines = text.split("\n").map((line) => (line.endsWith("\r") ? line.slice(0, -1) : line));
  while (lines.length > 0 && lines[lines.length - 1].trim() === "") lines.pop();

  // Only the exact header is skipped; any other first line is a data row and checked as such.
  const header = lines.length > 0 && lines[0].split(",").map((f) => f.trim()).join(",") === OPTDIGITS_HEADER;
  const first = header ? 1 : 0;

  const n = lines.length - first;
  if (n === 0) {
    throw new Error(
      `optdigits file "${path}" holds no data rows` +
        (header ? ` (only the header line ${JSON.stringify(lines[0].slice(0, 40))})` : ""),
    );
  }
  const images = new Uint8Array(n * 64);
  const labels = new Uint8Array(n);
  for (let row = 0; row < n; row++) {
    const lineNumber = first + row + 1;
    const where = `optdigits file "${path}" line ${lineNumber}`;
    const fields = lines[first + row].split(",");
    if (fields.length !== OPTDIGITS_FIELDS) {
      throw new Error(
        `${where}: expected 65 comma-separated values (64 pixels + class) but found ${fields.length}`,
      );
    }
    for (let j = 0; j < OPTDIGITS_FIELDS; j++) {
      const field = fields[j].trim();
      const isClass = j === 64;
      const max = isClass ? 9 : 16;
      const value = Number(field);
      if (!INTEGER_PATTERN.test(field) || value < 0 || value > max) {
        const what = isClass ? "the class (value 65)" : `pixel ${j + 1}`;
        throw new Error(
          `${where}: ${what} must be an integer in 0..${max} but found ${JSON.stringify(field)}`,
        );
      }
      if (isClass) labels[row] = value;
      else images[row * 64 + j] = value;
    }
  }
  return { images, labels, n };
}

/** One row of the emoji pack's `index.tsv`. */
export interface EmojiRow {
  /** Image index into the RGBA array. */
  idx: number;
  /** Unicode code points, space-separated hex (e.g. `1F44D 1F3FF`). */
  codepoints: string;
  /** CLDR group, e.g. `Smileys & Emotion` (10 groups). */
  group: string;
  /** CLDR subgroup, e.g. `face-smiling`. */
  subgroup: string;
  /** CLDR short name, e.g. `thumbs up: dark skin tone`. */
  name: string;
}

/** The Noto emoji 32×32 pack. */
export interface EmojiPack {
  /** `n × 32 × 32 × 4` uint8, RGBA with straight (non-premultiplied) alpha. */
  rgba: Uint8Array;
  /** Number of images. */
  n: number;
  /** One index row per image, in image order. */
  rows: EmojiRow[];
}

/** Side length of every emoji image in the pack. */
export const EMOJI_SIZE = 32;
const EMOJI_BYTES = EMOJI_SIZE * EMOJI_SIZE * 4;
const EMOJI_COLUMNS = [
  "idx",
  "codepoints",
  "noto_png",
  "status",
  "group",
  "subgroup",
  "emoji_version",
  "name",
];

/**
 * Loads the Noto emoji pack from a directory holding `noto_emoji32_rgba.u8.gz` (gzip of `N×32×32×4`
 * uint8 RGBA) and `index.tsv` (header `idx, codepoints, noto_png, status, group, subgroup, emoji_version,
 * name`). Checks that the pixel data is a whole number of images (at least one), that the index is UTF-8 with one
 * row per image whose `idx` is the row position in decimal digits, and that every row has all 8 columns.
 *
 * @param dir directory, e.g. `../shared/data/vl/noto_emoji32`.
 * @param options `maxGunzipBytes`: the most the pixel file may expand to (default {@link MAX_GUNZIP_BYTES}, 2 GiB).
 * @throws {Error} naming the file and the problem when the pack is inconsistent.
 *
 * @example
 * ```ts
 * import { loadEmojiPack, rgbaOnWhite } from "./images.ts";
 * const pack = await loadEmojiPack("../shared/data/vl/noto_emoji32");
 * const rgb = rgbaOnWhite(pack.rgba); // n × 32 × 32 × 3 floats in [0, 1]
 * ```
 */
export async function loadEmojiPack(dir: string, options: GunzipOptions = {}): Promise<EmojiPack> {
  checkOptions("loadEmojiPack", GUNZIP_OPTIONS, options);
  const base = dir.replace(/[\\/]+$/, "");
  const pixelsPath = `${base}/noto_emoji32_rgba.u8.gz`;
  const indexPath = `${base}/index.tsv`;

  const rgba = await readMaybeGzip(
    pixelsPath,
    "emoji pixel file",
    "loadEmojiPack",
    options.maxGunzipBytes ?? MAX_GUNZIP_BYTES,
  );
  if (rgba.length % EMOJI_BYTES !== 0) {
    throw new Error(
      `emoji pixel file "${pixelsPath}" decompresses to ${rgba.length} bytes, ` +
        `which is not a whole number of 32×32×4 images (${EMOJI_BYTES} bytes each)`,
    );
  }
  const n = rgba.length / EMOJI_BYTES;
  if (n === 0) throw new Error(`emoji pixel file "${pixelsPath}" holds no images`);

  const text = await readUtf8(indexPath, "emoji index");
  const lines = text.split("\n").map((line) => (line.endsWith("\r") ? line.slice(0, -1) : line));
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const header = (lines[0] ?? "").split("\t");
  const column = new Map(header.map((name, i) => [name, i]));
  const missing = EMOJI_COLUMNS.filter((name) => !column.has(name));
  if (missing.length > 0) {
    throw new Error(
      `emoji index "${indexPath}": header is missing column(s) ${missing.join(", ")}; found ${
        JSON.stringify(header)
      }`,
    );
  }
  if (lines.length - 1 !== n) {
    throw new Error(
      `emoji index "${indexPath}" has ${lines.length - 1} rows but "${pixelsPath}" holds ${n} images`,
    );
  }
  const at = (fields: string[], name: string): string => fields[column.get(name)!];
  const rows: EmojiRow[] = [];
  for (let i = 1; i < lines.length; i++) {
    const fields = lines[i].split("\t");
    if (fields.length !== header.length) {
      throw new Error(
        `emoji index "${indexPath}" line ${
          i + 1
        }: expected ${header.length} tab-separated fields but found ${fields.length}`,
      );
    }
    const idx = /^\d+$/.test(at(fields, "idx")) ? Number(at(fields, "idx")) : NaN;
    if (idx !== i - 1) {
      throw new Error(
        `emoji index "${indexPath}" line ${i + 1}: expected idx ${i - 1} but found ${
          JSON.stringify(at(fields, "idx"))
        }`,
      );
    }
    rows.push({
      idx,
      codepoints: at(fields, "codepoints"),
      group: at(fields, "group"),
      subgroup: at(fields, "subgroup"),
      name: at(fields, "name"),
    });
  }
  return { rgba, n, rows };
}

/**
 * Composites straight-alpha RGBA pixels onto a white background: per channel
 * `(c·a/255 + 255·(1 − a/255)) / 255`, giving RGB floats in [0, 1] (3 values per input pixel).
 *
 * @param rgba uint8 RGBA pixels, length a multiple of 4.
 * @throws {RangeError} when the length is not a multiple of 4.
 *
 * @example
 * ```ts
 * import { rgbaOnWhite } from "./images.ts";
 * rgbaOnWhite(new Uint8Array([255, 0, 0, 0])); // transparent red → white: [1, 1, 1]
 * ```
 */
export function rgbaOnWhite(rgba: Uint8Array): Float32Array {
  if (rgba.length % 4 !== 0) {
    throw new RangeError(
      `rgbaOnWhite: expected RGBA data (length a multiple of 4) but got length ${rgba.length}`,
    );
  }
  const pixels = rgba.length / 4;
  const out = new Float32Array(pixels * 3);
  for (let p = 0; p < pixels; p++) {
    const alpha = rgba[4 * p + 3] / 255;
    for (let c = 0; c < 3; c++) {
      out[3 * p + c] = (rgba[4 * p + c] * alpha + 255 * (1 - alpha)) / 255;
    }
  }
  return out;
}
