/**
 * Keeping outputs off inputs: a command that writes a file refuses an output path that is one of its input files
 * (by any spelling: relative, through a symbolic link, or a hard link to the same file) or lies inside one of its
 * input directories, before it reads or computes anything.
 *
 * @module
 */

/** A path given on the command line, with the flag that gave it (for the message). */
export interface NamedPath {
  /** The flag, e.g. `--weights`. */
  flag: string;
  /** The path as given (undefined: the flag was not given). */
  path: string | undefined;
}

/** `path` made absolute and normalised as text (`.` and `..` removed): right only where no part is a link. */
function lexical(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return `/${out.join("/")}`;
}

/**
 * The real path of `path`: the longest leading part that exists is resolved by the system (links, and `..` after a
 * link, as opening the path would follow them); the missing rest, which holds no link, is appended as text.
 */
function realPath(path: string): string {
  const parts = (path.startsWith("/") ? path : `${Deno.cwd()}/${path}`).split("/").filter((p) => p !== "");
  for (let k = parts.length; k > 0; k--) {
    try {
      const real = Deno.realPathSync(`/${parts.slice(0, k).join("/")}`);
      return lexical(`${real}/${parts.slice(k).join("/")}`);
    } catch {
      // this part does not exist (yet): try its parent
    }
  }
  return lexical(parts.join("/"));
}

function statOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

/**
 * Throws a RangeError when `output` would overwrite an input: it resolves to the same file as an input file (also
 * through a symbolic or hard link), or to a path inside an input directory.
 *
 * @param output The output path and its flag.
 * @param inputs The input paths and their flags (those not given are skipped).
 *
 * @example
 * ```ts
 * import { refuseOutputOnInput } from "./paths.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/w.safetensors`, "");
 * refuseOutputOnInput({ flag: "--out", path: `${dir}/out.safetensors` }, [{ flag: "--weights", path: `${dir}/w.safetensors` }]);
 * // refuseOutputOnInput({ flag: "--out", path: `${dir}/./w.safetensors` }, ...) throws
 * ```
 */
export function refuseOutputOnInput(output: NamedPath, inputs: readonly NamedPath[]): void {
  if (output.path === undefined) return;
  const out = realPath(output.path);
  const outInfo = statOrNull(out);
  for (const input of inputs) {
    if (input.path === undefined) continue;
    const real = realPath(input.path);
    const info = statOrNull(real);
    const sameFile = out === real ||
      (outInfo !== null && info !== null && outInfo.ino !== null && outInfo.ino === info.ino &&
        outInfo.dev === info.dev);
    if (sameFile) {
      throw new RangeError(
        `${output.flag} "${output.path}" is the ${input.flag} input "${input.path}": writing it would replace the ` +
          `input; choose another output path`,
      );
    }
    if (info?.isDirectory && out.startsWith(`${real.replace(/\/$/, "")}/`)) {
      throw new RangeError(
        `${output.flag} "${output.path}" lies inside the ${input.flag} input directory "${input.path}": writing ` +
          `there could replace its files; choose an output path outside it`,
      );
    }
  }
}

/**
 * The error for a file that cannot be read: `what` (the reader and the path) and the system's reason, with the
 * system's error as the cause and its kind kept, so that a caller that takes a missing file as empty still finds
 * a `Deno.errors.NotFound`.
 */
export function readError(err: unknown, what: string): Error {
  const reason = err instanceof Error ? err.message : String(err);
  const Kind = err instanceof Deno.errors.NotFound
    ? Deno.errors.NotFound
    : err instanceof Deno.errors.PermissionDenied
    ? Deno.errors.PermissionDenied
    : Error;
  return new Kind(`${what}: ${reason}`, { cause: err });
}
