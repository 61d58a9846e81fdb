/**
 * Exclusive ownership of a directory by one process: a lock file created with an exclusive create (`createNew`),
 * holding the owner's pid, host name and start time. A lock left by a process that no longer runs (killed, crashed)
 * is stale: it is taken over, on the same host. A lock held by a live process, or by a process on another host,
 * is refused with a message naming the holder.
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
 * Whether a process with id `pid` runs on this host: `/proc/<pid>` on Linux, `ps -p` elsewhere. When it cannot be
 * told (no permission, no `ps`), it is taken to run, so a lock is never broken on a guess.
 *
 * @param pid Process id.
 * @returns False only when the process is known not to run.
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === Deno.pid) return true;
  if (Deno.build.os === "linux") {
    try {
      Deno.statSync(`/proc/${pid}`);
      return true;
    } catch (err) {
      return !(err instanceof Deno.errors.NotFound);
    }
  }
  try {
    const out = new Deno.Command("ps", { args: ["-p", String(pid)], stdout: "null", stderr: "null" })
      .outputSync();
    return out.success;
  } catch {
    return true;
  }
}

function readHolder(path: string): LockHolder | null {
  try {
    const value = JSON.parse(Deno.readTextFileSync(path));
    if (typeof value?.pid === "number" && typeof value?.host === "string") return value as LockHolder;
  } catch {
    // unreadable or half-written: handled by the caller
  }
  return null;
}

/** A held lock; release it with {@link Lock.release} (or `using`). */
export class Lock {
  #path: string;
  #released = false;
  #onUnload: () => void;

  /** Use {@link acquireLock}. */
  constructor(path: string) {
    this.#path = path;
    this.#onUnload = () => this.release();
    // Released when the process ends normally or through Deno.exit (an interrupt handler's exit included); a
    // process that is killed leaves a stale lock, which the next acquireLock takes over.
    globalThis.addEventListener("unload", this.#onUnload);
  }

  /** The lock file. */
  get path(): string {
    return this.#path;
  }

  /** Removes the lock file if it is still this process's. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    globalThis.removeEventListener("unload", this.#onUnload);
    const holder = readHolder(this.#path);
    if (holder !== null && holder.pid === Deno.pid && holder.host === hostname()) {
      try {
        Deno.removeSync(this.#path);
      } catch {
        // already gone
      }
    }
  }

  /** Releases the lock (for `using`). */
  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * Takes the lock file `path` for this process: created exclusively with the pid, host, time and `purpose`. A stale
 * lock (its process no longer runs on this host, or the file is empty or unreadable and older than a minute) is
 * replaced. Throws a {@link LockedError} naming the holder otherwise.
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
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const file = Deno.openSync(path, { write: true, createNew: true });
      try {
        file.writeSync(new TextEncoder().encode(JSON.stringify(me) + "\n"));
      } finally {
        file.close();
      }
      return new Lock(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const holder = readHolder(path);
    if (holder === null) {
      // Being written right now by its creator, or left empty by a crash between create and write.
      let age = 0;
      try {
        age = Date.now() - (Deno.statSync(path).mtime?.getTime() ?? Date.now());
      } catch {
        continue; // removed meanwhile: try again
      }
      if (age < 60_000) {
        throw new LockedError(
          path,
          null,
          `"${path}" is being taken by another process; if none is running, remove the file and try again`,
        );
      }
    } else if (holder.host !== me.host) {
      throw new LockedError(
        path,
        holder,
        `locked by process ${holder.pid} on host "${holder.host}" since ${holder.since} (${holder.purpose}); ` +
          `if that process no longer runs, remove "${path}"`,
      );
    } else if (holder.pid === me.pid || processAlive(holder.pid)) {
      throw new LockedError(
        path,
        holder,
        `locked by process ${holder.pid}${holder.pid === me.pid ? " (this one)" : ""} on this host since ` +
          `${holder.since} (${holder.purpose}); wait for it to finish or stop it`,
      );
    }
    // Stale: its process is gone. Move it aside (atomically, so two processes breaking it at once cannot remove
    // each other's new lock), put back what was moved if it is not the stale lock, and try again.
    const aside = `${path}.stale-${Deno.pid}`;
    try {
      Deno.renameSync(path, aside);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue;
      throw err;
    }
    const moved = readHolder(aside);
    if (holder !== null && (moved?.pid !== holder.pid || moved?.since !== holder.since)) {
      try {
        Deno.linkSync(aside, path);
      } catch {
        // a third process took it meanwhile; its create won
      }
    }
    Deno.removeSync(aside);
  }
  throw new LockedError(path, readHolder(path), `could not take the lock "${path}": it keeps changing hands`);
}
