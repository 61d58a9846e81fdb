import { equal, match } from "node:assert/strict";
import { type BackendFacts, chooseBackend, vulkanManifestDirs } from "../../lib/runtime/gpu_adapter.ts";

/** Facts of an imagined machine: its environment and the manifest directories and files it has. */
function facts(
  os: string,
  env: Record<string, string>,
  manifestDirs: string[] = [],
  files: string[] = [],
): BackendFacts {
  return {
    os,
    env: (n) => env[n],
    hasManifest: (d) => manifestDirs.includes(d),
    exists: (p) => files.includes(p),
  };
}

Deno.test("Vulkan is chosen on Linux only when no backend is set and a Vulkan driver manifest is found", () => {
  const home = { HOME: "/home/u" };
  equal(chooseBackend(facts("linux", home, ["/usr/share/vulkan/icd.d"])), "vulkan");
  equal(chooseBackend(facts("linux", home, ["/etc/vulkan/icd.d"])), "vulkan");
  equal(chooseBackend(facts("linux", home, ["/home/u/.local/share/vulkan/icd.d"])), "vulkan");
  // No manifest anywhere: Deno's default (its GL adapter) stays.
  equal(chooseBackend(facts("linux", home, ["/opt/vulkan/icd.d"])), null);
  // A backend the user set is never changed; an empty value counts as unset.
  equal(
    chooseBackend(facts("linux", { ...home, DENO_WEBGPU_BACKEND: "gl" }, ["/usr/share/vulkan/icd.d"])),
    null,
  );
  equal(
    chooseBackend(facts("linux", { ...home, DENO_WEBGPU_BACKEND: "" }, ["/usr/share/vulkan/icd.d"])),
    "vulkan",
  );
  // Other systems have no GL teardown to avoid.
  for (const os of ["darwin", "windows"]) {
    equal(chooseBackend(facts(os, home, ["/usr/share/vulkan/icd.d"])), null);
  }
});

Deno.test("the manifest search follows the Vulkan loader: XDG directories, and VK_DRIVER_FILES alone when set", () => {
  equal(
    vulkanManifestDirs((n) => ({ HOME: "/h" } as Record<string, string>)[n]).join(" "),
    "/etc/xdg/vulkan/icd.d /etc/vulkan/icd.d /h/.local/share/vulkan/icd.d /usr/local/share/vulkan/icd.d " +
      "/usr/share/vulkan/icd.d",
  );
  const env = { XDG_DATA_DIRS: "/nix/a:/nix/b", XDG_CONFIG_DIRS: "/cfg", XDG_DATA_HOME: "/dh" };
  equal(
    vulkanManifestDirs((n) => (env as Record<string, string>)[n]).join(" "),
    "/cfg/vulkan/icd.d /etc/vulkan/icd.d /dh/vulkan/icd.d /nix/a/vulkan/icd.d /nix/b/vulkan/icd.d",
  );
  equal(chooseBackend(facts("linux", env, ["/nix/b/vulkan/icd.d"])), "vulkan");
  // The loader reads only the named files then: a directory's manifest does not count, a named file that exists does.
  const named = { VK_DRIVER_FILES: "/x/lvp.json:/y/nv.json" };
  equal(chooseBackend(facts("linux", named, ["/usr/share/vulkan/icd.d"])), null);
  equal(chooseBackend(facts("linux", named, [], ["/y/nv.json"])), "vulkan");
  equal(chooseBackend(facts("linux", { VK_ICD_FILENAMES: "/x/lvp.json" }, [], ["/x/lvp.json"])), "vulkan");
});

/** Runs `code` in a fresh Deno whose environment lacks DENO_WEBGPU_BACKEND unless `backend` gives it. */
async function fresh(code: string, backend?: string): Promise<string> {
  const env = Deno.env.toObject();
  delete env.DENO_WEBGPU_BACKEND;
  if (backend !== undefined) env.DENO_WEBGPU_BACKEND = backend;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (out.code !== 0) throw new Error(`child failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

Deno.test("asking for the device loads no OpenGL driver where Vulkan is installed, and keeps a backend the user set", async () => {
  const lib = new URL("../../lib/runtime/realize.ts", import.meta.url).href;
  // What the child reports: the variable after the request, whether EGL is mapped, and what auto picked.
  const probe = `import { AUTO_DEVICE } from "${lib}";
    const maps = Deno.build.os === "linux" ? Deno.readTextFileSync("/proc/self/maps") : "";
    console.log(JSON.stringify({ backend: Deno.env.get("DENO_WEBGPU_BACKEND") ?? null,
      egl: /libEGL/.test(maps), reason: AUTO_DEVICE.reason }));`;
  const here = chooseBackend({
    os: Deno.build.os,
    env: (n) => (n === "DENO_WEBGPU_BACKEND" ? undefined : Deno.env.get(n)),
    hasManifest: (d) => {
      try {
        return [...Deno.readDirSync(d)].some((e) => e.name.endsWith(".json"));
      } catch {
        return false;
      }
    },
    exists: (p) => {
      try {
        return Deno.statSync(p).isFile;
      } catch {
        return false;
      }
    },
  });
  const got = JSON.parse(await fresh(probe));
  match(got.reason, /^auto: /);
  equal(got.backend, here, `the backend chosen on this machine (${got.reason})`);
  if (here === "vulkan") equal(got.egl, false, "EGL was loaded although Vulkan was chosen");
  const kept = JSON.parse(await fresh(probe, "gl"));
  equal(kept.backend, "gl");
});

Deno.test("a script without leave to read the environment keeps Deno's default and is never asked for it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/probe.ts`;
    await Deno.writeTextFile(
      file,
      `import { AUTO_DEVICE } from "${new URL("../../lib/runtime/realize.ts", import.meta.url).href}";
      console.log(AUTO_DEVICE.reason);`,
    );
    const env = Deno.env.toObject();
    delete env.DENO_WEBGPU_BACKEND;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--allow-read", file],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.code === 0 ? out.stdout : out.stderr);
    equal(out.code, 0, text);
    match(text, /^auto: /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
