/**
 * The benchmarks refuse a flag they do not read or a value they cannot use (bench/_args.ts): each run below
 * exits with code 2 before measuring anything, with one line that names the script, the flag and what is
 * accepted, where it used to run with the setting dropped (`--case 3` for `--cases 3`, `--reps 0.3` rounded to
 * no repetition) or stop on a stack trace.
 */
import { equal, match } from "node:assert/strict";

const BENCH = new URL("../../bench/", import.meta.url).pathname;

/** Runs `bench/<script>.ts` with `args`; returns its exit code, stdout and stderr. */
async function run(script: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${BENCH}${script}.ts`, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

Deno.test("a misspelt flag or a bad value is refused in one line, exit code 2, before any measurement", async () => {
  const cases: [string, string[], RegExp][] = [
    ["train_step_bench", ["--case", "3"], /--case is read only with --child \(--cases picks the cases\)/],
    ["train_step_bench", ["--step", "40"], /'--step'.*\[--steps N\]/],
    ["matmul_bench", ["--reps", "0.3"], /--reps must be an integer >= 1, got "0\.3".*\[--reps N\]/],
    ["real_bench", ["--device", "wbgpu"], /--device must be one of webgpu, wasm, cpu, got "wbgpu"/],
  ];
  const runs = await Promise.all(cases.map(([script, args]) => run(script, args)));
  runs.forEach((r, i) => {
    const [script, args, why] = cases[i];
    const what = `${script} ${args.join(" ")}`;
    equal(r.code, 2, `${what}: exit code ${r.code}; stderr: ${r.stderr}`);
    equal(r.stdout, "", `${what} printed ${r.stdout}`);
    equal(r.stderr.split("\n").length, 1, `${what}: ${r.stderr}`);
    match(r.stderr, new RegExp(`^${script}: `), what);
    match(r.stderr, why, what);
  });
});
