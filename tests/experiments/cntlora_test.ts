/**
 * exp:cntlora's cost figures, on a tiny run (cpu device) where CNTLoRA-X's initial update is 1e30 times ‖W‖, so that
 * it diverges at its first step, and the calibration (40 batches) takes longer than the training that is left: the
 * diverged run's training time leaves the calibration out, the "init % of train time" column is 100·init/train of
 * the run files, and the init-cost claim, with one seed, is inconclusive under the 3-seed rule of the paired claims.
 */
import { equal, match, ok } from "node:assert/strict";

/** The cell of `column` in the row of `method`, in the first table of `md` that has that column. */
function cell(md: string, column: string, method: string): string {
  const lines = md.split("\n");
  const head = lines.findIndex((l) => l.startsWith("| method |") && l.includes(`| ${column} |`));
  ok(head >= 0, `no table with the column "${column}"`);
  const cells = (line: string) => line.split("|").map((c) => c.trim());
  const index = cells(lines[head]).indexOf(column);
  const row = lines.slice(head + 2).find((l) => l.startsWith(`| ${method} |`))!;
  return cells(row)[index];
}

Deno.test("exp:cntlora: a diverged run's training time, the init share column and the one-seed init-cost claim", async () => {
  const cwd = await Deno.makeTempDir();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../../experiments/cntlora.ts", import.meta.url).pathname,
      ...["--quick", "--device", "cpu", "--pretrain-steps", "5", "--steps", "4", "--seeds", "0"],
      ...["--calib-batches", "40", "--calib-counts", "", "--val-batches", "1", "--batch-size", "2"],
      ...["--seq-len", "16", "--targets", "wq"],
      ...["--method", "cntlora-x=cntlora:mode=x,relativeNorm=1e30", "--method", "lora"],
    ],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(out.code, 0, new TextDecoder().decode(out.stderr).slice(-3000));
  const [dir] = [...Deno.readDirSync(`${cwd}/results/cntlora`)].map((e) =>
    `${cwd}/results/cntlora/${e.name}`
  );
  const run = (label: string) => JSON.parse(Deno.readTextFileSync(`${dir}/runs/${label}-seed0.json`));
  const diverged = run("cntlora-x");
  equal(diverged.divergedAt, 1);
  // Before, the clock of a diverged run started before the calibration: its training time exceeded its init time.
  ok(
    diverged.trainSeconds < diverged.initSeconds,
    `train ${diverged.trainSeconds} s counts the ${diverged.initSeconds} s of initialisation`,
  );
  const md = Deno.readTextFileSync(`${dir}/summary.md`);
  for (const label of ["cntlora-x", "lora"]) {
    const r = run(label);
    const shown = Number(cell(md, "init % of train time", label).split(" ")[0]);
    const share = (100 * r.initSeconds) / r.trainSeconds;
    ok(Math.abs(shown - share) <= 0.005 * share, `${label}: ${shown} shown, 100·init/train = ${share}`);
  }
  match(
    md,
    /\*\*inconclusive\*\* — cntlora-x's initialisation is cheap next to training .* else inconclusive, and inconclusive when every seed gives the same share .*; 1 seeds \(at least 3 to judge\)\./,
  );
  // The share's unit stays with its number when there is one seed.
  match(md, /[0-9.]+% \(one value\) \([0-9.]+ s\)\./);
  await Deno.remove(cwd, { recursive: true });
});
