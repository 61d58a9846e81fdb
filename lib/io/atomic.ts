/**
 * Atomic file writes: data goes to a temporary file next to the target, is flushed to disk, and is then
 * renamed over the target, so a reader never sees a half-written file and a failed write leaves the
 * original untouched.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { checkOptions, opt } from "../options.ts";

const REMOVE_OPTIONS = z.object({
  recursive: z.boolean(),
  owners: z.enum(["dead", "all"]),
  alive: opt.fn(),
}).partial().strict();

/** Where the last folder separator of `path` is (-1: none): "/", and on Windows "\\" too. */
function lastSeparator(path: string): number {
  const slash = path.lastIndexOf("/");
  return Deno.build.os === "windows" ? Math.max(slash, path.lastIndexOf("\\")) : slash;
}

/** Directory part of a path ("." when there is none). */
function dirname(path: string): string {
  const slash = lastSeparator(path);
  if (slash < 0) return ".";
  if (slash === 0) return path.slice(0, 1);
  return path.slice(0, slash);
}

/** Last component of a path. */
function basename(path: string): string {
  return path.slice(lastSeparator(path) + 1);
}

/** A short random hex string for temporary file names. */
function randomSuffix(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The longest file name, in UTF-8 bytes (NAME_MAX on Linux and macOS; Windows' 255 UTF-16 units are never fewer). */
const NAME_MAX_BYTES = 255;

/**
 * A temporary name for `path`, in its folder: `<name>.tmp-<pid>-<random>` with the name cut short where the whole
 * would pass 255 bytes (see {@link temporaryOwner}). For writers that fill a file or folder and rename it into place.
 *
 * @param path The file or folder to be replaced.
 * @returns The temporary path.
 */
export function temporaryPath(path: string): string {
  return `${dirname(path)}/${temporaryName(basename(path))}`;
}

/**
 * The temporary file's name for target `name`: `<name>.tmp-<pid>-<random>`, with `name` cut short (at a character)
 * where the whole would pass {@link NAME_MAX_BYTES}, so that a target of a legal long name can be written too.
 */
function temporaryName(name: string): string {
  const suffix = `.tmp-${Deno.pid}-${randomSuffix()}`;
  const encoder = new TextEncoder();
  let room = NAME_MAX_BYTES - suffix.length;
  let kept = "";
  for (const ch of name) {
    room -= encoder.encode(ch).length;
    if (room < 0) break;
    kept += ch;
  }
  return `${kept}${suffix}`;
}

/** The permission bits of the file at `path`, or undefined where there is none (or the platform has none). */
function permissions(path: string): number | undefined {
  try {
    const info = Deno.statSync(path);
    return info.isFile && info.mode !== null ? info.mode & 0o777 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Write `data` to `path` atomically.
 *
 * The bytes are written to `<path>.tmp-<pid>-<random>` in the same directory (the name cut short where it would
 * pass 255 bytes), flushed with `fsync` where the platform allows it, given the permissions of the file it
 * replaces, and then renamed over `path` (a rename within one directory is atomic on POSIX file systems and on
 * NTFS). Missing parent directories are created. If anything fails, the temporary file is removed, the original
 * file (if any) is left as it was, and the error is rethrown with the path in its message. A path that ends in a
 * separator names a folder and is refused before any folder is made.
 *
 * @param path File to create or replace.
 * @param data Bytes to write; a string is written as UTF-8.
 *
 * @example
 * ```ts
 * import { writeFileAtomicSync } from "./atomic.ts";
 * const dir = Deno.makeTempDirSync();
 * writeFileAtomicSync(`${dir}/run/weights.bin`, new Uint8Array([1, 2, 3]));
 * ```
 */
export function writeFileAtomicSync(path: string, data: Uint8Array | string): void {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const name = basename(path);
  if (name === "" || name === "." || name === "..") {
    throw new Error(`could not write "${path}": it names a folder, not a file`);
  }
  const dir = dirname(path);
  try {
    Deno.mkdirSync(dir, { recursive: true });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`could not write "${path}": cannot make its folder "${dir}": ${reason}`, { cause: err });
  }
  const tmp = temporaryPath(path);
  // The file keeps who may read it, from before the data is written: a fresh file gets 0666 less the umask, and a
  // 0600 file replaced through one became 0644.
  const mode = permissions(path);
  let file: Deno.FsFile | undefined;
  try {
    file = Deno.openSync(tmp, { write: true, createNew: true, mode });
    if (mode !== undefined) Deno.chmodSync(tmp, mode); // exactly: the umask may have taken bits away
    let written = 0;
    while (written < bytes.length) {
      written += file.writeSync(bytes.subarray(written));
    }
    try {
      file.syncDataSync();
    } catch {
      // Some file systems (or platforms) do not support fsync; the rename is still atomic.
    }
    file.close();
    file = undefined;
    Deno.renameSync(tmp, path);
  } catch (err) {
    if (file !== undefined) {
      try {
        file.close();
      } catch {
        // already closed
      }
    }
    try {
      Deno.removeSync(tmp);
    } catch {
      // the temporary file may never have been created
    }
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`could not write "${path}" atomically (via temporary file "${tmp}"): ${reason}`, {
      cause: err,
    });
  }
  syncDirectory(dir);
}

/**
 * {@link writeFileAtomicSync} for async code: the same steps, and a rejected promise on failure.
 *
 * @param path File to create or replace.
 * @param data Bytes to write; a string is written as UTF-8.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./atomic.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(`${dir}/run1/weights.bin`, new Uint8Array([1, 2, 3]));
 * ```
 */
export function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  try {
    writeFileAtomicSync(path, data);
    return Promise.resolve();
  } catch (err) {
    return Promise.reject(err);
  }
}

/** Flush a directory entry change (the rename) to disk where the platform supports it. */
function syncDirectory(dir: string): void {
  if (Deno.build.os === "windows") return;
  try {
    const handle = Deno.openSync(dir, { read: true });
    try {
      handle.syncSync();
    } finally {
      handle.close();
    }
  } catch {
    // Not every platform lets a directory be opened or synced; the data itself is already written.
  }
}

/**
 * Write a UTF-8 text file atomically (see {@link writeFileAtomic}).
 *
 * @param path File to create or replace.
 * @param text Text to write as UTF-8.
 *
 * @example
 * ```ts
 * import { writeTextFileAtomic } from "./atomic.ts";
 * const dir = await Deno.makeTempDir();
 * await writeTextFileAtomic(`${dir}/config.json`, JSON.stringify({ lr: 1e-3 }));
 * ```
 */
export function writeTextFileAtomic(path: string, text: string): Promise<void> {
  return writeFileAtomic(path, text);
}

/**
 * The pid in the name of a temporary file or directory that an atomic write of this library leaves when its process
 * is killed mid-write: `<name>.tmp-<pid>-<random>` ({@link writeFileAtomic}, the model caches' directories) or
 * `.<name>.<pid>.<random>.tmp` (what earlier versions' JSON writer left); undefined for any other name.
 *
 * @param name A file or directory name (no directory part).
 * @returns The pid of the process that was writing it, or undefined.
 */
export function temporaryOwner(name: string): number | undefined {
  const m = /\.tmp-(\d+)-[0-9a-f]+$/.exec(name) ?? /^\..+\.(\d+)\.[0-9a-f]+\.tmp$/.exec(name);
  return m === null ? undefined : Number(m[1]);
}

/** Options of {@link removeTemporaries}. */
export interface RemoveTemporariesOptions {
  /** Look into subdirectories too (default false). */
  recursive?: boolean;
  /**
   * Which writers' leftovers to remove: `"dead"` (default) only those of processes that no longer run on this
   * host; `"all"` every one, for a directory this process owns exclusively (e.g. under its lock).
   */
  owners?: "dead" | "all";
  /** Tells whether a pid still runs (default: always true, so only `owners: "all"` removes anything). */
  alive?: (pid: number) => boolean;
}

/**
 * Removes the temporary files and directories that interrupted atomic writes left in `dir` (see
 * {@link temporaryOwner}). A missing `dir` is not an error.
 *
 * @param dir The directory to clean.
 * @param options Recursion and whose leftovers to remove.
 * @returns The paths removed.
 *
 * @example
 * ```ts
 * import { removeTemporaries } from "./atomic.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/ckpt.safetensors.tmp-999999-a1b2c3`, "half a file");
 * console.log(removeTemporaries(dir, { owners: "all" })); // [".../ckpt.safetensors.tmp-999999-a1b2c3"]
 * ```
 */
export function removeTemporaries(dir: string, options: RemoveTemporariesOptions = {}): string[] {
  checkOptions("removeTemporaries", REMOVE_OPTIONS, options);
  const removed: string[] = [];
  const alive = options.alive ?? (() => true);
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return removed;
    throw err;
  }
  for (const entry of entries) {
    const path = `${dir}/${entry.name}`;
    const owner = temporaryOwner(entry.name);
    if (owner !== undefined && (options.owners === "all" || !alive(owner))) {
      try {
        Deno.removeSync(path, { recursive: true });
        removed.push(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    } else if (options.recursive && entry.isDirectory) {
      removed.push(...removeTemporaries(path, options));
    }
  }
  return removed;
}
