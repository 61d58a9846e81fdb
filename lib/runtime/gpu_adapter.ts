/**
 * How tessera asks the runtime for a WebGPU adapter. On Linux, Deno's WebGPU starts every backend it was built
 * with when it first looks for an adapter — Vulkan, and OpenGL through EGL — even though it then picks the Vulkan
 * adapter. The EGL side loads Mesa's GL driver, whose teardown (a worker's runtime ending: `eglTerminate`, then
 * `dlclose` of `swrast_dri.so`) can run while the process exits on another thread; the process then dies after
 * its work is done, with a segmentation fault or `corrupted size vs. prev_size in fastbins` (seen on Mesa 22.3 in
 * a few of every hundred processes that ran WebGPU in many workers or parallel test modules; a core dump shows
 * `__cxa_finalize` of `swrast_dri.so` under `libEGL_mesa`'s `dlclose` on a worker's thread while the main thread
 * waits in `exit`). So when no backend is chosen (`DENO_WEBGPU_BACKEND` unset)
 * and a Vulkan driver is installed, tessera chooses Vulkan before the first request: the GL driver is then never
 * loaded. A machine without a Vulkan driver keeps Deno's default (the GL adapter); a backend set by the user is
 * never changed, and a script without leave to read and set the variable (or to read the driver directories)
 * keeps Deno's default without being asked for it.
 *
 * @module
 */

/** The variable Deno reads, once per runtime, when it first looks for an adapter. */
export const BACKEND_VARIABLE = "DENO_WEBGPU_BACKEND";

/** What the backend rule needs to know of the machine. */
export interface BackendFacts {
  /** `Deno.build.os`. */
  readonly os: string;
  /** The environment variable's value (undefined when unset or unreadable). */
  readonly env: (name: string) => string | undefined;
  /** Whether `dir` holds a Vulkan driver manifest (a `.json` file). */
  readonly hasManifest: (dir: string) => boolean;
  /** Whether the file exists. */
  readonly exists: (path: string) => boolean;
}

/**
 * The directories the Vulkan loader searches for driver manifests on Linux: `icd.d` under every
 * `$XDG_CONFIG_DIRS` entry (default `/etc/xdg`), `/etc`, `$XDG_DATA_HOME` (default `~/.local/share`) and every
 * `$XDG_DATA_DIRS` entry (default `/usr/local/share:/usr/share`).
 */
export function vulkanManifestDirs(env: (name: string) => string | undefined): string[] {
  const list = (name: string, fallback: string) => (env(name) || fallback).split(":").filter((d) => d !== "");
  const home = env("HOME");
  const dataHome = env("XDG_DATA_HOME") || (home ? `${home}/.local/share` : "");
  return [
    ...list("XDG_CONFIG_DIRS", "/etc/xdg"),
    "/etc",
    ...(dataHome ? [dataHome] : []),
    ...list("XDG_DATA_DIRS", "/usr/local/share:/usr/share"),
  ].map((d) => `${d}/vulkan/icd.d`);
}

/**
 * The backend tessera chooses before the first adapter request, or null to leave Deno's choice alone: `"vulkan"`
 * on Linux when `DENO_WEBGPU_BACKEND` is unset (or empty) and a Vulkan driver manifest is found — the files named
 * by `VK_DRIVER_FILES` or `VK_ICD_FILENAMES` when set (the loader then reads only those), else a `.json` in one of
 * {@link vulkanManifestDirs}.
 */
export function chooseBackend(f: BackendFacts): "vulkan" | null {
  if (f.os !== "linux" || (f.env(BACKEND_VARIABLE) ?? "") !== "") return null;
  const named = f.env("VK_DRIVER_FILES") || f.env("VK_ICD_FILENAMES");
  if (named) return named.split(":").some((p) => p !== "" && f.exists(p)) ? "vulkan" : null;
  return vulkanManifestDirs(f.env).some((d) => f.hasManifest(d)) ? "vulkan" : null;
}

/** Whether this process may use `what` without a prompt (a prompt would stop a script that never asked for it). */
function granted(what: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(what).state === "granted";
  } catch {
    return false;
  }
}

/** The facts of this process; anything the permissions do not grant reads as absent. */
function processFacts(): BackendFacts {
  return {
    os: Deno.build.os,
    env: (name) => (granted({ name: "env", variable: name }) ? Deno.env.get(name) : undefined),
    hasManifest: (dir) => {
      if (!granted({ name: "read", path: dir })) return false;
      try {
        for (const e of Deno.readDirSync(dir)) if (e.name.endsWith(".json")) return true;
      } catch {
        // missing or unreadable: no manifest here
      }
      return false;
    },
    exists: (path) => {
      if (!granted({ name: "read", path })) return false;
      try {
        return Deno.statSync(path).isFile;
      } catch {
        return false;
      }
    },
  };
}

/** The backend this process chose (null: Deno's default, or one the user set), once decided. */
let chosen: "vulkan" | null | undefined;

/** Applies {@link chooseBackend} to this process once; returns the backend tessera set, or null. */
export function chooseProcessBackend(): "vulkan" | null {
  if (chosen !== undefined) return chosen;
  chosen = null;
  if (typeof Deno === "undefined") return chosen;
  // Without leave to read and set the variable, Deno's default stays.
  if (!granted({ name: "env", variable: BACKEND_VARIABLE })) return chosen;
  const pick = chooseBackend(processFacts());
  if (pick !== null) {
    Deno.env.set(BACKEND_VARIABLE, pick);
    chosen = pick;
  }
  return chosen;
}

/**
 * `navigator.gpu.requestAdapter` after {@link chooseProcessBackend}; null where the runtime has no WebGPU or no
 * adapter.
 */
export async function requestGpuAdapter(): Promise<GPUAdapter | null> {
  if (typeof navigator === "undefined" || navigator.gpu === undefined) return null;
  chooseProcessBackend();
  return await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
}

/** A line for errors: the backend tessera chose and why, or "" when it chose none. */
export function chosenBackendNote(): string {
  return chosen
    ? `tessera set ${BACKEND_VARIABLE}=${chosen} because a Vulkan driver is installed; set ` +
      `${BACKEND_VARIABLE}=gl to use OpenGL instead`
    : "";
}
