/**
 * Reader and writer for the safetensors format: an 8-byte little-endian u64 header length N, N bytes of
 * JSON header `{ name: { dtype, shape, data_offsets: [start, end] }, "__metadata__"?: { key: "value" } }`,
 * then the tensor data (little-endian, offsets relative to the end of the header).
 *
 * Data is always copied out of the file into fresh, aligned typed arrays, so entries never alias the
 * input bytes. In-memory representation per dtype:
 *
 * | dtype | `data` |
 * |---|---|
 * | F32 | `Float32Array` |
 * | F16, BF16 | `Float32Array` (decoded exactly), or the raw bits as `Uint16Array` with `{ rawHalf: true }` |
 * | F64 | `Float64Array` |
 * | I64 | `BigInt64Array` (lossless; use {@link toInt32} or {@link toFloat32} to convert) |
 * | I32 | `Int32Array` |
 * | U32 | `Uint32Array` |
 * | I8 | `Int8Array` |
 * | U8, BOOL | `Uint8Array` (BOOL holds 0 or 1: a nonzero byte reads as 1) |
 *
 * When writing, F16/BF16 entries accept either a `Float32Array` (rounded to nearest, ties to even) or a
 * `Uint16Array` of raw bits.
 *
 * @module
 */

import { writeFileAtomic } from "./atomic.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";

/** The safetensors dtypes this module reads and writes. */
export type StDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "U32" | "I8" | "U8" | "BOOL";

/** Typed arrays that can hold safetensors data in memory. */
export type StData =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint32Array
  | Uint8Array
  | Int8Array
  | BigInt64Array
  | Uint16Array;

/** One tensor: its dtype, its shape (row-major) and its elements. */
export type StEntry = {
  /** On-disk element type. */
  dtype: StDType;
  /** Dimensions, outermost first; `[]` for a scalar. */
  shape: number[];
  /** Elements in row-major order; see the module documentation for which array goes with which dtype. */
  data: StData;
};

/** The contents of a safetensors file. */
export type Safetensors = {
  /** Tensors by name, in the order of their data offsets in the file. */
  tensors: Map<string, StEntry>;
  /** The `__metadata__` string map (empty when the file has none). */
  metadata: Record<string, string>;
};

/** Options for {@link parseSafetensors} and {@link readSafetensors}. */
export type ParseSafetensorsOptions = {
  /** Keep F16/BF16 data as raw `Uint16Array` bits instead of decoding to `Float32Array` (default false). */
  rawHalf?: boolean;
};

/** Bytes per element for each dtype. */
export const ST_DTYPE_BYTES: Readonly<Record<StDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  U32: 4,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** The dtypes of the safetensors format (0.8) that this reader does not decode: refused as unsupported, not unknown. */
const ST_UNSUPPORTED_DTYPES: readonly string[] = [
  "I16",
  "U16",
  "U64",
  "C64",
  "F8_E4M3",
  "F8_E5M2",
  "F8_E4M3FNUZ",
  "F8_E5M2FNUZ",
  "F8_E8M0",
  "F6_E2M3",
  "F6_E3M2",
  "F4",
];

const PARSE_OPTIONS = z.object({ rawHalf: z.boolean() }).partial().strict();

/** Headers larger than this are rejected (same limit as the reference implementation). */
const MAX_HEADER_BYTES = 100_000_000;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** True when `s` names a dtype this module supports. */
export function isStDType(s: string): s is StDType {
  return Object.hasOwn(ST_DTYPE_BYTES, s);
}

// ---------------------------------------------------------------------------------------------------------
// Half-precision conversions (binary16 through the built-in Float16Array, the one f16 codec; bfloat16 by hand)
// ---------------------------------------------------------------------------------------------------------

/** Round float32 bits to bfloat16 bits, round-to-nearest-even; NaN stays NaN. */
function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Round each float32 value to IEEE binary16 (round to nearest, ties to even; values beyond ±65504 round
 * to ±Inf when past the halfway point 65520; NaN stays NaN).
 *
 * @example
 * ```ts
 * import { encodeF16 } from "./safetensors.ts";
 * encodeF16(new Float32Array([1, 65504, -2])); // Uint16Array [0x3c00, 0x7bff, 0xc000]
 * ```
 */
export function encodeF16(values: Float32Array): Uint16Array {
  const half = Float16Array.from(values); // the language's own conversion: round to nearest, ties to even
  return new Uint16Array(half.buffer, half.byteOffset, half.length);
}

/**
 * Decode IEEE binary16 bits to float32 (exact: every binary16 value is a float32 value).
 *
 * @example
 * ```ts
 * import { decodeF16 } from "./safetensors.ts";
 * decodeF16(new Uint16Array([0x3c00, 0x0001])); // Float32Array [1, 2^-24]
 * ```
 */
export function decodeF16(bits: Uint16Array): Float32Array {
  return Float32Array.from(new Float16Array(bits.buffer, bits.byteOffset, bits.length));
}

/**
 * Round each float32 value to bfloat16 (round to nearest, ties to even; NaN stays NaN).
 *
 * @example
 * ```ts
 * import { encodeBf16 } from "./safetensors.ts";
 * encodeBf16(new Float32Array([1, -2])); // Uint16Array [0x3f80, 0xc000]
 * ```
 */
export function encodeBf16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32BitsToBf16Bits(bits[i]);
  return out;
}

/**
 * Decode bfloat16 bits to float32 (exact: bfloat16 is the top half of a float32).
 *
 * @example
 * ```ts
 * import { decodeBf16 } from "./safetensors.ts";
 * decodeBf16(new Uint16Array([0x3f80])); // Float32Array [1]
 * ```
 */
export function decodeBf16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16;
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Conversions of whole entries
// ---------------------------------------------------------------------------------------------------------

/**
 * The elements of any numeric entry as a `Float32Array`.
 *
 * F32 data is returned as is (same memory); everything else is converted into a new array: F16/BF16
 * raw bits are decoded, integers and booleans are converted numerically, rounded to the nearest float32
 * (ties to even) beyond 2^24 as numpy's `astype(float32)` does, I64 included.
 *
 * @example
 * ```ts
 * import { toFloat32 } from "./safetensors.ts";
 * toFloat32({ dtype: "I32", shape: [2], data: new Int32Array([3, -4]) }); // Float32Array [3, -4]
 * ```
 */
export function toFloat32(entry: StEntry): Float32Array {
  const { dtype, data } = entry;
  if (data instanceof Float32Array) return data;
  if (data instanceof Uint16Array) {
    if (dtype === "F16") return decodeF16(data);
    if (dtype === "BF16") return decodeBf16(data);
    throw new Error(`toFloat32: a Uint16Array holds raw F16/BF16 bits, but the entry's dtype is ${dtype}`);
  }
  if (data instanceof BigInt64Array) {
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) out[i] = bigIntToFloat32(data[i]);
    return out;
  }
  return Float32Array.from(data);
}

/**
 * `v` rounded once to the nearest float32, ties to even. Past 2^53 `Number(v)` already rounds to a float64, and
 * rounding that again to a float32 can land on the other side of a tie (2^53 + 2^29 + 1 gave 2^53, where numpy
 * and PyTorch give 2^53 + 2^30), so the 24 significant bits are rounded from the exact integer.
 */
function bigIntToFloat32(v: bigint): number {
  const magnitude = v < 0n ? -v : v;
  if (magnitude <= 2n ** 53n) return Math.fround(Number(v)); // exact as a float64: one rounding
  const drop = BigInt(magnitude.toString(2).length - 24);
  let kept = magnitude >> drop;
  const rest = magnitude - (kept << drop);
  const half = 1n << (drop - 1n);
  if (rest > half || (rest === half && (kept & 1n) === 1n)) kept += 1n;
  const rounded = Number(kept) * 2 ** Number(drop); // at most 25 bits times a power of two: exact
  return v < 0n ? -rounded : rounded;
}

/**
 * The elements of an integer or boolean entry as an `Int32Array`, checking that every value fits.
 * Meant for I64 index tensors (token ids, labels), which safetensors files from PyTorch store as int64.
 *
 * @param entry An I64, I32, U32, I8, U8 or BOOL entry.
 * @param name Tensor name used in error messages.
 *
 * @example
 * ```ts
 * import { toInt32 } from "./safetensors.ts";
 * toInt32({ dtype: "I64", shape: [2], data: new BigInt64Array([5n, -1n]) }); // Int32Array [5, -1]
 * ```
 */
export function toInt32(entry: StEntry, name = "tensor"): Int32Array {
  const { dtype, data } = entry;
  if (data instanceof Int32Array) return data;
  if (data instanceof BigInt64Array) {
    const out = new Int32Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (v > 2147483647n || v < -2147483648n) {
        throw new Error(`toInt32: ${dtype} tensor "${name}" element ${i} is ${v}, outside the int32 range`);
      }
      out[i] = Number(v);
    }
    return out;
  }
  if (data instanceof Uint32Array) {
    const out = new Int32Array(data.length);
    for (let i = 0; i < data.length; i++) {
      if (data[i] > 2147483647) {
        throw new Error(`toInt32: U32 tensor "${name}" element ${i} is ${data[i]}, outside the int32 range`);
      }
      out[i] = data[i];
    }
    return out;
  }
  if (data instanceof Int8Array || (data instanceof Uint8Array && (dtype === "U8" || dtype === "BOOL"))) {
    return Int32Array.from(data);
  }
  throw new Error(`toInt32: tensor "${name}" has dtype ${dtype}; only integer and BOOL tensors convert`);
}

// ---------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------

/** Reverse the byte order of each `width`-byte element in place (only used on big-endian hosts). */
function swapBytes(bytes: Uint8Array, width: number): void {
  if (width === 1) return;
  for (let i = 0; i < bytes.length; i += width) {
    for (let a = i, b = i + width - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

/** Copy `raw` (little-endian elements of `dtype`) into a fresh typed array. */
function decodeData(raw: Uint8Array, dtype: StDType, rawHalf: boolean): StData {
  const copy = raw.slice();
  if (!LITTLE_ENDIAN) swapBytes(copy, ST_DTYPE_BYTES[dtype]);
  const buf = copy.buffer;
  switch (dtype) {
    case "F64":
      return new Float64Array(buf);
    case "F32":
      return new Float32Array(buf);
    case "F16":
      return rawHalf ? new Uint16Array(buf) : decodeF16(new Uint16Array(buf));
    case "BF16":
      return rawHalf ? new Uint16Array(buf) : decodeBf16(new Uint16Array(buf));
    case "I64":
      return new BigInt64Array(buf);
    case "I32":
      return new Int32Array(buf);
    case "U32":
      return new Uint32Array(buf);
    case "I8":
      return new Int8Array(buf);
    case "U8":
      return copy;
    case "BOOL":
      // Any nonzero byte is true, as numpy's and PyTorch's bool read it: stored as 1, so it writes back.
      return copy.map((b) => (b === 0 ? 0 : 1));
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isNonNegativeInteger(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parse the bytes of a safetensors file.
 *
 * Checks, each with an error naming `source` and the tensor: the file holds the 8-byte length and the
 * declared header; the header is a JSON object; every dtype is known; every shape is a list of
 * non-negative integers; `data_offsets` is `[start, end]` with `start <= end` inside the data section
 * and `end - start` equal to the element count times the dtype size; in offset order each tensor starts where the
 * one before it ends (the first at 0) and the last ends at the end of the file, so there is no overlap, no gap and
 * no trailing byte, as the safetensors library requires; no name appears twice; `__metadata__` maps strings to
 * strings.
 *
 * @param bytes The whole file.
 * @param source Name used in error messages (the path, usually).
 * @param options See {@link ParseSafetensorsOptions}.
 *
 * @example
 * ```ts
 * import { parseSafetensors, serializeSafetensors } from "./safetensors.ts";
 * const bytes = serializeSafetensors({ w: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
 * const { tensors } = parseSafetensors(bytes);
 * tensors.get("w")!.data; // Float32Array [1, 2]
 * ```
 */
export function parseSafetensors(
  bytes: Uint8Array,
  source = "<bytes>",
  options: ParseSafetensorsOptions = {},
): Safetensors {
  checkOptions("parseSafetensors", PARSE_OPTIONS, options);
  if (bytes.length < 8) {
    throw new Error(
      `safetensors file "${source}" has ${bytes.length} bytes, fewer than the 8-byte header length field`,
    );
  }
  const declared = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true);
  const headerLength = checkHeaderLength(declared, bytes.length, source);
  const { specs, metadata } = parseHeader(
    bytes.subarray(8, 8 + headerLength),
    bytes.length - 8 - headerLength,
    source,
  );
  const dataStart = 8 + headerLength;
  const rawHalf = options.rawHalf ?? false;
  const tensors = new Map<string, StEntry>();
  for (const spec of specs) {
    const raw = bytes.subarray(dataStart + spec.start, dataStart + spec.end);
    tensors.set(spec.name, {
      dtype: spec.dtype,
      shape: spec.shape,
      data: decodeData(raw, spec.dtype, rawHalf),
    });
  }
  return { tensors, metadata };
}

/** One tensor's place in a safetensors file: dtype, shape and byte range relative to the data section. */
export type StSpec = { name: string; dtype: StDType; shape: number[]; start: number; end: number };

/** The header length after the 8-byte field, checked against the file size and the limit. */
function checkHeaderLength(declared: bigint, fileBytes: number, source: string): number {
  const available = fileBytes - 8;
  if (declared > BigInt(available)) {
    throw new Error(
      `safetensors header of "${source}" declares ${declared} bytes but the file has ${available} bytes after the length field`,
    );
  }
  const headerLength = Number(declared);
  if (headerLength > MAX_HEADER_BYTES) {
    throw new Error(
      `safetensors file "${source}" declares a ${headerLength}-byte header, above the ${MAX_HEADER_BYTES}-byte limit`,
    );
  }
  return headerLength;
}

/**
 * The keys that `text`, valid JSON holding an object, gives more than once in one object (each once, in order):
 * at the top level as the key itself (`"a"`), inside a tensor's entry or `__metadata__` as `"k" in "a"`.
 * JSON.parse keeps the last of them without a word, so two tensors of one name would leave one silently unread,
 * and a repeated `shape` or metadata key would hide the first value.
 */
function repeatedKeys(text: string): string[] {
  const repeated = new Set<string>();
  // One frame per open object or array; an object's frame holds the keys met so far and whether a key comes next.
  const stack: { keys: Set<string> | null; atKey: boolean; owner: string }[] = [];
  let lastKey = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const top = stack.at(-1);
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1; // a backslash escapes the next character
      if (top?.keys && top.atKey) {
        const key: string = JSON.parse(text.slice(i, end + 1)); // decodes escapes: "\u0061" is "a"
        if (top.keys.has(key)) {
          repeated.add(top.owner === "" ? JSON.stringify(key) : `${JSON.stringify(key)} in ${top.owner}`);
        }
        top.keys.add(key);
        top.atKey = false;
        lastKey = key;
      }
      i = end;
    } else if (c === "{" || c === "[") {
      // A value's object is named by the key it follows at the top level (a tensor, __metadata__).
      const owner = stack.length === 0 ? "" : stack.length === 1 ? JSON.stringify(lastKey) : top!.owner;
      stack.push({ keys: c === "{" ? new Set() : null, atKey: c === "{", owner });
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === "," && top?.keys) {
      top.atKey = true;
    }
  }
  return [...repeated];
}

/** Validates a header (see {@link parseSafetensors}); returns its tensors sorted by offset, and its metadata. */
function parseHeader(
  headerBytes: Uint8Array,
  dataLength: number,
  source: string,
): { specs: StSpec[]; metadata: Record<string, string> } {
  const where = `safetensors file "${source}"`;
  let headerText: string;
  try {
    headerText = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new Error(`${where} has a header that is not valid UTF-8`);
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const preview = headerText.length > 80 ? `${headerText.slice(0, 80)}…` : headerText;
    throw new Error(`${where} has a header that is not valid JSON (${reason}); header starts: ${preview}`);
  }
  if (!isPlainObject(header)) {
    throw new Error(`${where} has a JSON header that is not an object`);
  }
  const repeated = repeatedKeys(headerText);
  if (repeated.length > 0) {
    throw new Error(
      `${where} names ${repeated.join(", ")} more than once in its header; each tensor name (and ` +
        `"__metadata__"), and each key within an entry, must appear once`,
    );
  }

  const metadata: Record<string, string> = {};
  const rawMeta = header["__metadata__"];
  if (rawMeta !== undefined) {
    if (!isPlainObject(rawMeta)) {
      throw new Error(`${where} has "__metadata__" that is not an object of strings`);
    }
    for (const [key, value] of Object.entries(rawMeta)) {
      if (typeof value !== "string") {
        throw new Error(
          `${where} has metadata "${key}" of type ${
            value === null ? "null" : typeof value
          }; metadata values must be strings`,
        );
      }
      metadata[key] = value;
    }
  }

  const specs: StSpec[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const what = `${where}, tensor "${name}"`;
    if (!isPlainObject(info)) throw new Error(`${what}: header entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = info;
    if (typeof dtype !== "string" || !isStDType(dtype)) {
      const known = typeof dtype === "string" && ST_UNSUPPORTED_DTYPES.includes(dtype);
      throw new Error(
        `${what}: ${known ? "dtype" : "unknown dtype"} ${JSON.stringify(dtype)}${
          known ? " is a safetensors dtype that tessera does not support" : ""
        }; supported: ${Object.keys(ST_DTYPE_BYTES).join(", ")}`,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw new Error(`${what}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger)) {
      throw new Error(
        `${what}: data_offsets ${JSON.stringify(offsets)} is not [start, end] with non-negative integers`,
      );
    }
    const [start, end] = offsets as number[];
    if (start > end) throw new Error(`${what}: data_offsets [${start}, ${end}] has start after end`);
    if (end > dataLength) {
      throw new Error(
        `${what}: data_offsets [${start}, ${end}] reach past the data section, which has ${dataLength} bytes`,
      );
    }
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const expected = count * ST_DTYPE_BYTES[dtype];
    if (end - start !== expected) {
      throw new Error(
        `${what}: data_offsets [${start}, ${end}] span ${end - start} bytes but shape [${
          (shape as number[]).join(", ")
        }] of ${dtype} needs ${expected} bytes`,
      );
    }
    specs.push({ name, dtype, shape: (shape as number[]).slice(), start, end });
  }

  // As the safetensors library validates a file: in offset order, each tensor starts where the one before it ends
  // (an empty tensor too), and the last ends where the file does.
  specs.sort((a, b) => a.start - b.start || a.end - b.end);
  let previous: StSpec | undefined;
  let covered = 0;
  for (const spec of specs) {
    if (previous !== undefined && spec.start < covered) {
      throw new Error(
        `${where}: tensors "${previous.name}" [${previous.start}, ${previous.end}] and "${spec.name}" [${spec.start}, ${spec.end}] overlap`,
      );
    }
    if (spec.start > covered) {
      const before = previous === undefined
        ? "the data section starts at offset 0"
        : `"${previous.name}" [${previous.start}, ${previous.end}] ends at ${covered}`;
      throw new Error(
        `${where}: tensor "${spec.name}" [${spec.start}, ${spec.end}] leaves a gap of ${
          spec.start - covered
        } bytes ` +
          `(${before}); the safetensors library refuses data that is not one run of tensors`,
      );
    }
    previous = spec;
    covered = spec.end;
  }
  if (covered !== dataLength) {
    const last = previous === undefined
      ? "it holds no tensors"
      : `the last tensor, "${previous.name}", ends at ${covered}`;
    throw new Error(
      `${where}: ${
        dataLength - covered
      } trailing bytes after the tensors: the data section has ${dataLength} bytes ` +
        `but ${last}; the safetensors library refuses a file its tensors do not cover`,
    );
  }
  return { specs, metadata };
}

/** A safetensors file opened for reading one tensor at a time (see {@link openSafetensors}). */
export interface SafetensorsFile {
  /** The path it was opened from. */
  readonly path: string;
  /** Every tensor's dtype, shape and byte range, by name. */
  readonly specs: ReadonlyMap<string, StSpec>;
  /** The `__metadata__` string map. */
  readonly metadata: Record<string, string>;
  /** Reads and decodes one tensor (F16/BF16 as raw bits with `{ rawHalf: true }`). */
  read(name: string, options?: ParseSafetensorsOptions): Promise<StEntry>;
  /** Closes the file. */
  close(): void;
}

/**
 * Opens a safetensors file and validates its header without reading the data, so that tensors can be read one
 * at a time (a checkpoint larger than memory loads tensor by tensor). Close it when done.
 *
 * @example
 * ```ts
 * import { openSafetensors, writeSafetensors } from "./safetensors.ts";
 * const path = `${await Deno.makeTempDir()}/w.safetensors`;
 * await writeSafetensors(path, { w: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
 * const file = await openSafetensors(path);
 * console.log((await file.read("w")).data); // Float32Array [1, 2]
 * file.close();
 * ```
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot read safetensors file "${path}": ${reason}`, { cause: err });
  }
  try {
    const stat = await file.stat();
    if (!stat.isFile) {
      throw new Error(`cannot read safetensors file "${path}": it is not a file (a directory?)`);
    }
    const size = stat.size;
    const readAt = async (offset: number, length: number): Promise<Uint8Array> => {
      const out = new Uint8Array(length);
      await file.seek(offset, Deno.SeekMode.Start);
      let done = 0;
      while (done < length) {
        const n = await file.read(out.subarray(done));
        if (n === null) throw new Error(`safetensors file "${path}" ended after ${offset + done} bytes`);
        done += n;
      }
      return out;
    };
    if (size < 8) {
      throw new Error(
        `safetensors file "${path}" has ${size} bytes, fewer than the 8-byte header length field`,
      );
    }
    const lengthField = await readAt(0, 8);
    const declared = new DataView(lengthField.buffer).getBigUint64(0, true);
    const headerLength = checkHeaderLength(declared, size, path);
    const { specs, metadata } = parseHeader(await readAt(8, headerLength), size - 8 - headerLength, path);
    const byName = new Map(specs.map((s) => [s.name, s]));
    const dataStart = 8 + headerLength;
    return {
      path,
      specs: byName,
      metadata,
      async read(name: string, options: ParseSafetensorsOptions = {}): Promise<StEntry> {
        checkOptions("SafetensorsFile.read", PARSE_OPTIONS, options);
        const spec = byName.get(name);
        if (spec === undefined) throw new Error(`safetensors file "${path}" has no tensor "${name}"`);
        const raw = await readAt(dataStart + spec.start, spec.end - spec.start);
        return {
          dtype: spec.dtype,
          shape: spec.shape.slice(),
          data: decodeData(raw, spec.dtype, options.rawHalf ?? false),
        };
      },
      close: () => file.close(),
    };
  } catch (err) {
    file.close();
    throw err;
  }
}

/**
 * Read and parse a safetensors file (see {@link parseSafetensors} for what is checked).
 *
 * @example
 * ```ts
 * import { readSafetensors, writeSafetensors } from "./safetensors.ts";
 * const path = `${await Deno.makeTempDir()}/adapter_model.safetensors`;
 * await writeSafetensors(path, { "w.weight": { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
 * const { tensors, metadata } = await readSafetensors(path);
 * console.log(tensors.get("w.weight")?.shape, metadata);
 * ```
 */
export async function readSafetensors(
  path: string,
  options: ParseSafetensorsOptions = {},
): Promise<Safetensors> {
  checkOptions("readSafetensors", PARSE_OPTIONS, options);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot read safetensors file "${path}": ${reason}`, { cause: err });
  }
  return parseSafetensors(bytes, path, options);
}

// ---------------------------------------------------------------------------------------------------------
// Serialising
// ---------------------------------------------------------------------------------------------------------

/** Little-endian bytes of one entry's data, after checking that the array type fits the dtype. */
function encodeData(name: string, entry: StEntry): Uint8Array {
  const { dtype, data } = entry;
  const what = `cannot serialize tensor "${name}" (${dtype})`;
  const expect = (ok: boolean, wanted: string) => {
    if (!ok) throw new Error(`${what}: data is a ${data.constructor.name}, expected ${wanted}`);
  };
  let typed: StData;
  switch (dtype) {
    case "F64":
      expect(data instanceof Float64Array, "Float64Array");
      typed = data;
      break;
    case "F32":
      expect(data instanceof Float32Array, "Float32Array");
      typed = data;
      break;
    case "F16":
    case "BF16":
      expect(
        data instanceof Float32Array || data instanceof Uint16Array,
        "Float32Array (values) or Uint16Array (raw bits)",
      );
      if (data instanceof Float32Array) typed = dtype === "F16" ? encodeF16(data) : encodeBf16(data);
      else typed = data;
      break;
    case "I64":
      expect(data instanceof BigInt64Array, "BigInt64Array");
      typed = data;
      break;
    case "I32":
      expect(data instanceof Int32Array, "Int32Array");
      typed = data;
      break;
    case "U32":
      expect(data instanceof Uint32Array, "Uint32Array");
      typed = data;
      break;
    case "I8":
      expect(data instanceof Int8Array, "Int8Array");
      typed = data;
      break;
    case "U8":
      expect(data instanceof Uint8Array, "Uint8Array");
      typed = data;
      break;
    case "BOOL":
      expect(data instanceof Uint8Array, "Uint8Array of 0/1");
      for (let i = 0; i < data.length; i++) {
        if (data[i] > 1) throw new Error(`${what}: element ${i} is ${data[i]}; BOOL elements must be 0 or 1`);
      }
      typed = data;
      break;
    default:
      throw new Error(
        `cannot serialize tensor "${name}": unknown dtype ${JSON.stringify(dtype)}; supported: ${
          Object.keys(ST_DTYPE_BYTES).join(", ")
        }`,
      );
  }
  const out = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength).slice();
  if (!LITTLE_ENDIAN) swapBytes(out, ST_DTYPE_BYTES[dtype]);
  return out;
}

/**
 * Serialise tensors (and optional string metadata) to safetensors bytes.
 *
 * Tensors are laid out in sorted-name order (by UTF-16 code unit order, as `Array.prototype.sort`)
 * with no gaps; the JSON header lists `__metadata__` first (when given), then the tensors in that order, and is
 * padded with spaces so that the data section starts at a multiple of 8 bytes, as the reference implementation
 * does.
 *
 * @param tensors Tensors by name (a record or a map).
 * @param metadata Optional string-to-string metadata stored under `__metadata__`.
 *
 * @example
 * ```ts
 * import { serializeSafetensors } from "./safetensors.ts";
 * const bytes = serializeSafetensors(
 *   { "lora_A.weight": { dtype: "F16", shape: [1, 2], data: new Float32Array([0.5, -1]) } },
 *   { format: "pt" },
 * );
 * ```
 */
export function serializeSafetensors(
  tensors: Record<string, StEntry> | Map<string, StEntry>,
  metadata?: Record<string, string>,
): Uint8Array {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // The header's text is assembled here: an object would put integer-like names ("0") before "__metadata__" and
  // order them numerically, not as the data.
  const fields: string[] = [];
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") {
        throw new Error(
          `cannot serialize safetensors metadata "${key}": value is ${typeof value}, not a string`,
        );
      }
    }
    fields.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, entry] of entries) {
    if (name === "__metadata__") {
      throw new Error(`cannot serialize a tensor named "__metadata__": the name is reserved`);
    }
    const { shape, data } = entry;
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw new Error(
        `cannot serialize tensor "${name}": shape ${
          JSON.stringify(shape)
        } is not a list of non-negative integers`,
      );
    }
    const count = shape.reduce((a, b) => a * b, 1);
    if (data.length !== count) {
      throw new Error(
        `cannot serialize tensor "${name}": shape [${
          shape.join(", ")
        }] has ${count} elements but data has ${data.length}`,
      );
    }
    const raw = encodeData(name, entry);
    const spec = { dtype: entry.dtype, shape, data_offsets: [offset, offset + raw.length] };
    fields.push(`${JSON.stringify(name)}:${JSON.stringify(spec)}`);
    chunks.push(raw);
    offset += raw.length;
  }
  const json = new TextEncoder().encode(`{${fields.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/**
 * Serialise tensors with {@link serializeSafetensors} and write them atomically to `path`
 * (parent directories are created).
 *
 * @example
 * ```ts
 * import { writeSafetensors } from "./safetensors.ts";
 * const dir = await Deno.makeTempDir();
 * await writeSafetensors(`${dir}/adapter.safetensors`, {
 *   "lora_B.weight": { dtype: "F32", shape: [2, 1], data: new Float32Array([0, 0]) },
 * });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, StEntry> | Map<string, StEntry>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
