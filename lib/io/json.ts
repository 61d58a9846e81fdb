/**
 * JSON and JSON-lines files: {@link MetricsWriter} appends one JSON object per line to a `metrics.jsonl` file
 * with one unbuffered write per record, so a crash loses nothing that was logged; {@link readJsonl} reads such a
 * file back, tolerating a partially written last line; {@link writeJsonAtomic} replaces a whole JSON file
 * atomically.
 *
 * Non-finite numbers (a diverged loss) are written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`
 * rather than JSON's lossy `null`.
 *
 * @module
 */

import { writeFileAtomicSync } from "./atomic.ts";
import { readError } from "./paths.ts";
import { z } from "../../deps.ts";
import { checkOptions } from "../options.ts";

/** One record (line) of a metrics file. */
export type MetricRecord = Record<string, unknown>;

const encoder = new TextEncoder();
const WRITE_JSON_OPTIONS = z.object({ indent: z.int().min(0).max(10) }).partial().strict();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const lenientDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** Byte offset in `bytes` (which a fatal decoder refused) of the first sequence that is not UTF-8. */
function firstBadUtf8(bytes: Uint8Array): number {
  const text = lenientDecoder.decode(bytes);
  let at = text.indexOf("\uFFFD");
  while (at >= 0) {
    const offset = encoder.encode(text.slice(0, at)).length;
    // A U+FFFD that the bytes spell out (EF BF BD) is text, not a replaced sequence.
    if (bytes[offset] !== 0xef || bytes[offset + 1] !== 0xbf || bytes[offset + 2] !== 0xbd) return offset;
    at = text.indexOf("\uFFFD", at + 1);
  }
  return bytes.length;
}

/** JSON.stringify replacer keeping non-finite numbers (which JSON would turn into null) as strings. */
function keepNonFinite(_key: string, value: unknown): unknown {
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  if (typeof value === "bigint") return value.toString();
  return value;
}

/**
 * Serialize a value as JSON, keeping `NaN`/`Infinity` as strings and bigints as decimal strings.
 *
 * @param value Value to serialize.
 * @param indent Indentation for pretty-printing; none when omitted.
 * @returns The JSON text.
 */
export function toJson(value: unknown, indent?: number): string {
  const text = JSON.stringify(value, keepNonFinite, indent);
  if (text === undefined) throw new Error(`cannot serialize ${typeof value} as JSON`);
  return text;
}

function dirname(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return ".";
  return slash === 0 ? "/" : path.slice(0, slash);
}

function writeAll(file: Deno.FsFile, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
}

/**
 * Replace a JSON file atomically, pretty-printed with a trailing newline (see `writeFileAtomicSync`).
 * Non-finite numbers are kept as strings (see {@link toJson}).
 *
 * @param path File to create or replace.
 * @param value Value to serialize.
 * @param options `indent`: spaces per level (default 2).
 *
 * @example
 * ```ts
 * import { writeJsonAtomic } from "./json.ts";
 * const dir = Deno.makeTempDirSync();
 * writeJsonAtomic(`${dir}/summary.json`, { finalLoss: 0.42, steps: 1000 });
 * ```
 */
export function writeJsonAtomic(path: string, value: unknown, options: { indent?: number } = {}): void {
  checkOptions("writeJsonAtomic", WRITE_JSON_OPTIONS, options);
  writeFileAtomicSync(path, `${toJson(value, options.indent ?? 2)}\n`);
}

/** What {@link parseJsonl} found in a JSON-lines text. */
interface JsonlParse {
  records: MetricRecord[];
  /** Byte length of the prefix holding the complete records (including their newlines). */
  validBytes: number;
  /** Whether the last complete record lacks its trailing newline. */
  missingNewline: boolean;
}

function parseJsonl(bytes: Uint8Array, path: string): JsonlParse {
  const records: MetricRecord[] = [];
  let start = 0;
  let lineNumber = 0;
  let validBytes = 0;
  let missingNewline = false;
  while (start < bytes.length) {
    let end = bytes.indexOf(0x0a, start);
    const complete = end >= 0;
    if (!complete) end = bytes.length;
    lineNumber++;
    let line: string;
    try {
      line = strictDecoder.decode(bytes.subarray(start, end)).trim();
    } catch {
      if (!complete) break; // a multi-byte character cut by a crash mid-write
      const offset = start + firstBadUtf8(bytes.subarray(start, end));
      const found = Array.from(bytes.subarray(offset, offset + 4), (b) => b.toString(16).padStart(2, "0"));
      throw new Error(
        `"${path}" line ${lineNumber} is not valid UTF-8: the first bad sequence is at byte ${offset} ` +
          `(bytes from there: ${found.join(" ")})`,
      );
    }
    if (line !== "") {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (err) {
        if (!complete) break; // a partially written last line: the writer crashed mid-write
        const reason = err instanceof Error ? err.message : String(err);
        throw new Error(`"${path}" line ${lineNumber} is not valid JSON (${reason}): ${line.slice(0, 80)}`);
      }
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        if (!complete) break;
        throw new Error(`"${path}" line ${lineNumber} holds ${line.slice(0, 40)}, expected a JSON object`);
      }
      records.push(value as MetricRecord);
    }
    validBytes = complete ? end + 1 : end;
    missingNewline = !complete && line !== "";
    start = end + 1;
  }
  return { records, validBytes, missingNewline };
}

/**
 * Read a JSON-lines file: one JSON object per line; blank lines are skipped.
 *
 * A last line that is incomplete (no trailing newline and not valid UTF-8 or not valid JSON, as left by a crash
 * mid-write) is ignored; an invalid line anywhere else is an error naming the file and line (and, for bytes that
 * are not UTF-8, the byte offset of the first bad sequence).
 *
 * @param path File to read.
 * @returns The records in file order.
 * @throws {Error} naming the file when it cannot be read, and the file and line for a line that is not a JSON object.
 *
 * @example
 * ```ts
 * import { MetricsWriter, readJsonl } from "./json.ts";
 * const path = `${Deno.makeTempDirSync()}/metrics.jsonl`;
 * using writer = MetricsWriter.open(path);
 * writer.write({ step: 1, loss: 2.5 });
 * console.log(readJsonl(path)); // [{ step: 1, loss: 2.5 }]
 * ```
 */
export function readJsonl(path: string): MetricRecord[] {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (err) {
    throw readError(err, `readJsonl: cannot read JSON-lines file "${path}"`);
  }
  return parseJsonl(bytes, path).records;
}

const OPEN_OPTIONS = z.object({ resume: z.boolean() }).partial().strict();

/** Options of {@link MetricsWriter.open}. */
export interface MetricsWriterOptions {
  /**
   * Keep the records already in the file (available as {@link MetricsWriter.records}) and append after
   * them; a partially written last line is cut off first. When false (the default) the file is emptied.
   */
  resume?: boolean;
}

/**
 * Appends one JSON object per line to a metrics file. Each {@link MetricsWriter.write} is a single
 * unbuffered write of a complete line, so everything written survives a crash of the process.
 *
 * @example
 * ```ts
 * import { MetricsWriter } from "./json.ts";
 * const path = `${Deno.makeTempDirSync()}/metrics.jsonl`;
 * using metrics = MetricsWriter.open(path);
 * for (let step = 1; step <= 3; step++) metrics.write({ step, loss: 1 / step });
 * ```
 */
export class MetricsWriter {
  #file: Deno.FsFile | undefined;
  #path: string;
  #records: MetricRecord[];
  #count = 0;

  private constructor(path: string, file: Deno.FsFile, records: MetricRecord[]) {
    this.#path = path;
    this.#file = file;
    this.#records = records;
  }

  /**
   * Open (creating it and its directory if needed) a metrics file for appending.
   *
   * @param path The `.jsonl` file.
   * @param options `resume` to keep existing records.
   * @returns The writer; close it with {@link MetricsWriter.close} or a `using` declaration.
   */
  static open(path: string, options: MetricsWriterOptions = {}): MetricsWriter {
    checkOptions("MetricsWriter.open", OPEN_OPTIONS, options);
    Deno.mkdirSync(dirname(path), { recursive: true });
    let records: MetricRecord[] = [];
    if (options.resume) {
      let bytes: Uint8Array | undefined;
      try {
        bytes = Deno.readFileSync(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) {
          throw readError(err, `MetricsWriter.open: cannot read metrics file "${path}" to continue it`);
        }
      }
      if (bytes !== undefined) {
        const parsed = parseJsonl(bytes, path);
        records = parsed.records;
        if (parsed.validBytes < bytes.length) Deno.truncateSync(path, parsed.validBytes);
        if (parsed.missingNewline) {
          const file = Deno.openSync(path, { append: true });
          try {
            writeAll(file, encoder.encode("\n"));
          } finally {
            file.close();
          }
        }
      }
    }
    const file = Deno.openSync(path, { create: true, append: true, truncate: false, write: true });
    if (!options.resume) file.truncateSync(0);
    return new MetricsWriter(path, file, records);
  }

  /** The file being written. */
  get path(): string {
    return this.#path;
  }

  /** Records that were already in the file when it was opened with `resume: true` (empty otherwise). */
  get records(): readonly MetricRecord[] {
    return this.#records;
  }

  /** Number of records written through this writer. */
  get count(): number {
    return this.#count;
  }

  /**
   * Append one record as a single line.
   *
   * @param record A JSON-serializable object; non-finite numbers are kept as strings.
   */
  write(record: MetricRecord): void {
    if (this.#file === undefined) throw new Error(`metrics file "${this.#path}" is already closed`);
    const line = toJson(record);
    if (!line.startsWith("{")) throw new Error(`metrics record must be an object, got ${line.slice(0, 40)}`);
    writeAll(this.#file, encoder.encode(`${line}\n`));
    this.#count++;
  }

  /** Close the file; further writes throw. Closing twice is harmless. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  /** Closes the file (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }
}
