/**
 * Exclusive ownership of a directory by one process: a lock file on which its owner holds the system's exclusive
 * lock (`tryLockSync`, which the system ends with the process), holding the owner's pid, host name, the time it took
 * the lock and (on Linux) when the process started. A file left by a process that no longer runs (killed, crashed;
 * its pid now another process's, started at another time) is stale: it is taken over, on the same host, by
 * exactly one process. A lock held by a live process, or by a process on another host, is refused with a message
 * naming the holder.
 *
 * @module
 */

/** What a lock file records about its holder. */
export interface LockHolder {
  /** Process id. */
  pid: number;
  /** Host name (`Deno.hostname()`). */
  host: string;
  /** When the lock was taken, ISO 8601. */
  since: string;
  /** What the holder is doing (e.g. the command line). */
  purpose: string;
  /**
   * When the process started ({@link processStartTime}): a live process with the pid but another start time is not
   * the holder. Absent where it cannot be told, and in files written before it was recorded.
   */
  started?: number;
}

/** Thrown by {@link acquireLock} when another live process holds the lock. */
export class LockedError extends Error {
  /** The lock file. */
  readonly path: string;
  /** Who holds it (null when the file could not be read). */
  readonly holder: LockHolder | null;

  /** An error for the lock at `path` held by `holder`. */
  constructor(path: string, holder: LockHolder | null, message: string) {
    super(message);
    this.name = "LockedError";
    this.path = path;
    this.holder = holder;
  }
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown-host"; // no --allow-sys
  }
}

/**
 * Whether a process with id `pid` runs on this host: `/proc/<pid>/stat` on Linux, `ps -o stat= -p` elsewhere. A
 * process that has ended but whose parent has not yet collected it (a zombie, state `Z`, or `X`: what a killed
 * experiment is until its shell or the system's first process reaps it, for good under a first process that reaps
 * nothing) no longer runs: it holds no lock and cannot be stopped. When it cannot be told (no permission, no `ps`),
 * it is taken to run, so a lock is never broken on a guess.
 *
 * @param pid Process id.
 * @returns False only when the process is known not to run.
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === Deno.pid) return true;
  let state: string;
  if (Deno.build.os === "linux") {
    try {
      // "<pid> (<command>) <state> ...": the command may hold spaces and parentheses, so read after the last ")".
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      state = stat.slice(stat.lastIndexOf(")") + 1).trim().charAt(0);
    } catch (err) {
      return !(err instanceof Deno.errors.NotFound);
    }
  } else {
    try {
      const out = new Deno.Command("ps", {
        args: ["-o", "stat=", "-p", String(pid)],
        stdout: "piped",
        stderr: "null",
      })
        .outputSync();
      if (!out.success) return false;
      state = new TextDecoder().decode(out.stdout).trim().charAt(0);
    } catch {
      return true;
    }
  }
  return state !== "Z" && state !== "X";
}

/**
 * When process `pid` started, in clock ticks after the system booted (field 22 of `/proc/<pid>/stat`, Linux), to tell
 * a process from a later one given the same pid; null where it cannot be told (another system, no such process).
 *
 * @param pid Process id.
 * @returns The start time, or null.
 */
export function processStartTime(pid: number): number | null {
  if (Deno.build.os !== "linux" || !Number.isInteger(pid) || pid <= 0) return null;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // After the command's closing ")" come fields 3 (state) onwards: field 22 is the 20th.
    const value = Number(stat.slice(stat.lastIndexOf(")") + 1).trim().split(/\s+/)[19]);
    return Number.isSafeInteger(value) && value >= 0 ? value : null;
  } catch {
    return null;
  }
}

/** Whether `holder` names a process running now: a live one with its pid and, where both are known, its start time. */
function holderRuns(holder: LockHolder): boolean {
  if (!processAlive(holder.pid)) return false;
  if (typeof holder.started !== "number") return true;
  const started = processStartTime(holder.pid);
  return started === null || started === holder.started;
}

/** A held lock; release it with {@link Lock.release} (or `using`). */
export class Lock {
  #path: string;
  #file: Deno.FsFile;
  #released = false;
  #onUnload: () => void;

  /** Use {@link acquireLock}. */
  constructor(path: string, file: Deno.FsFile) {
    this.#path = path;
    this.#file = file;
    this.#onUnload = () => this.release();
    // Released when the process ends normally or through Deno.exit (an interrupt handler's exit included); a
    // process that is killed leaves the file, whose system lock ends with the process, so the next acquireLock
    // takes it over.
    globalThis.addEventListener("unload", this.#onUnload);
  }

  /** The lock file. */
  get path(): string {
    return this.#path;
  }

  /** Removes the lock file, then ends the system lock on it. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    globalThis.removeEventListener("unload", this.#onUnload);
    // Removed while still locked: a process that opened it meanwhile finds, once it has the system lock, that the
    // path no longer names the file it locked, and starts again.
    if (sameFile(this.#path, this.#file)) {
      try {
        Deno.removeSync(this.#path);
      } catch {
        // already gone
      }
    }
    this.#file.close();
  }

  /** Releases the lock (for `using`). */
  [Symbol.dispose](): void {
    this.release();
  }
}

/** Whether `path` still names the file open as `file` (same device and inode). */
function sameFile(path: string, file: Deno.FsFile): boolean {
  let named: Deno.FileInfo;
  try {
    named = Deno.statSync(path);
  } catch {
    return false;
  }
  const open = file.statSync();
  if (named.ino === null || open.ino === null) return true; // no inode numbers (Windows): files cannot be removed while open there
  return named.ino === open.ino && named.dev === open.dev;
}

function readOpen(file: Deno.FsFile): string {
  file.seekSync(0, Deno.SeekMode.Start);
  const size = file.statSync().size;
  const bytes = new Uint8Array(size);
  let done = 0;
  while (done < size) {
    const n = file.readSync(bytes.subarray(done));
    if (n === null) break;
    done += n;
  }
  return new TextDecoder().decode(bytes.subarray(0, done));
}

function parseHolder(text: string): LockHolder | null {
  try {
    const value = JSON.parse(text);
    if (typeof value?.pid === "number" && typeof value?.host === "string") return value as LockHolder;
  } catch {
    // empty or half-written
  }
  return null;
}

function heldMessage(holder: LockHolder, me: LockHolder): string {
  const where = holder.host === me.host ? "this host" : `host "${holder.host}"`;
  return `locked by process ${holder.pid}${holder.pid === me.pid ? " (this one)" : ""} on ${where} since ` +
    `${holder.since} (${holder.purpose}); wait for it to finish or stop it`;
}

/**
 * Takes the lock file `path` for this process. Mutual exclusion is the system's exclusive lock on the open file
 * (`tryLockSync`), which ends with its process however it ends, so exactly one of any number of processes that
 * try at once holds it, and a file left by a killed process is taken over by exactly one. The holder writes its
 * pid, host, time and `purpose` into the file, for the message another process gets. A file that names a live
 * process on this host that holds no system lock on it (a holder that does not take one; unless that process started
 * at another time than the holder, which makes it a later process given the holder's pid), or a process on another
 * host (whose locks this host may not see), is refused too; one naming this process's own pid was left by an
 * earlier process with that pid (a restarted container's) and is taken over. Throws a {@link LockedError} naming
 * the holder.
 *
 * @param path The lock file, e.g. `results/eva/20260101-120000/.lock`.
 * @param purpose What this process is doing, recorded for the message another process would see.
 * @returns The held lock.
 *
 * @example
 * ```ts
 * import { acquireLock } from "./lock.ts";
 * const dir = Deno.makeTempDirSync();
 * using lock = acquireLock(`${dir}/.lock`, "an example");
 * ```
 */
export function acquireLock(path: string, purpose: string): Lock {
  const me: LockHolder = { pid: Deno.pid, host: hostname(), since: new Date().toISOString(), purpose };
  const started = processStartTime(Deno.pid);
  if (started !== null) me.started = started;
  for (let attempt = 0; attempt < 3; attempt++) {
    const file = Deno.openSync(path, { read: true, write: true, create: true });
    let keep = false;
    try {
      if (!file.tryLockSync(true)) {
        const holder = parseHolder(readOpen(file));
        throw new LockedError(
          path,
          holder,
          holder === null
            ? `"${path}" is being taken by another process; wait for it to finish or stop it`
            : heldMessage(holder, me),
        );
      }
      // Its holder may have released it (removed the file) between our open and our lock: start again.
      if (!sameFile(path, file)) continue;
      const holder = parseHolder(readOpen(file));
      if (holder !== null && holder.host !== me.host) {
        throw new LockedError(
          path,
          holder,
          `locked by process ${holder.pid} on host "${holder.host}" since ${holder.since} (${holder.purpose}); ` +
            `if that process no longer runs, remove "${path}"`,
        );
      }
      // A file naming this process's own pid was left by an earlier process with the same pid (a restarted
      // container's): this process would hold the system's lock if it held the file.
      // A live process with its pid that started at another time than the holder got that pid after the holder ended.
      if (holder !== null && holder.pid !== me.pid && holderRuns(holder)) {
        throw new LockedError(path, holder, heldMessage(holder, me));
      }
      // Ours: none holds it, and what it names (if anything) has ended.
      file.truncateSync(0);
      file.seekSync(0, Deno.SeekMode.Start);
      const bytes = new TextEncoder().encode(JSON.stringify(me) + "\n");
      for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
      keep = true;
      return new Lock(path, file);
    } finally {
      if (!keep) file.close();
    }
  }
  throw new LockedError(path, null, `could not take the lock "${path}": it keeps changing hands`);
}
