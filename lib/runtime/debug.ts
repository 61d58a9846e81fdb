/**
 * The `DEBUG` environment variable: 1 prints kernels with their times, 3 the IR, 4 the generated code.
 * Read once; scripts without `--allow-env` simply get level 0.
 *
 * @module
 */

let level: number | null = null;

/** The current DEBUG level (0 when unset or when environment access is not permitted). */
export function debugLevel(): number {
  if (level === null) {
    level = 0;
    try {
      if (Deno.permissions.querySync({ name: "env", variable: "DEBUG" }).state === "granted") {
        level = Number(Deno.env.get("DEBUG") ?? "0") || 0;
      }
    } catch {
      level = 0;
    }
  }
  return level;
}

/** Overrides the DEBUG level (tests). */
export function setDebugLevel(l: number): void {
  level = l;
}
