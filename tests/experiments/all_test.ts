/** exp:all passes its arguments to every experiment and reports each one, failures included. */
import { equal, match } from "node:assert/strict";

Deno.test("exp:all runs every experiment and writes results/REPORT.md (an unknown flag makes each fail fast)", async () => {
  const dir = await Deno.makeTempDir();
  const script = new URL("../../experiments/all.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, "--no-such-option", "1"],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(out.code, 0);
  const report = await Deno.readTextFile(`${dir}/results/REPORT.md`);
  for (
    const name of ["eva", "magnitude", "spectral_gain", "init-sweep", "vlm_dynamics", "cntlora", "gap_init"]
  ) {
    match(report, new RegExp(`## exp:${name}\\n\\n\\*\\*Failed\\*\\* \\(exit code 2`));
  }
  // Each experiment rejected the unknown key by name.
  match(new TextDecoder().decode(out.stderr), /no-such-option|noSuchOption/);
  await Deno.remove(dir, { recursive: true });
});
