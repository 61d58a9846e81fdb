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
    // Its flags are kebab-case like every other benchmark's.
    ["train_step_bench", ["--readEvery", "5"], /'--readEvery'.*\[--read-every N\]/],
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

/** Whether `python3` runs here (peft_bench.py reads its flags before importing torch, so plain Python suffices). */
async function hasPython(): Promise<boolean> {
  try {
    return (await new Deno.Command("python3", { args: ["-c", ""], stdout: "null", stderr: "null" }).output())
      .success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "peft_bench.py refuses a step count, warm-up or size it cannot use, naming the flag and the value",
  ignore: !await hasPython(),
  fn: async () => {
    // --steps 0 ended in a ZeroDivisionError after building the model, and --steps -3 printed a negative throughput.
    const cases: [string[], string][] = [
      [["--steps", "0"], "argument --steps: must be an integer >= 1, got '0'"],
      [["--steps=-3"], "argument --steps: must be an integer >= 1, got '-3'"],
      [["--steps", "2.5"], "argument --steps: must be an integer >= 1, got '2.5'"],
      [["--warmup=-1"], "argument --warmup: must be an integer >= 0, got '-1'"],
      [["--batch", "0"], "argument --batch: must be an integer >= 1, got '0'"],
      [["--kv-heads", "0"], "argument --kv-heads: must be an integer >= 1, got '0'"],
    ];
    for (const [args, why] of cases) {
      const out = await new Deno.Command("python3", {
        args: [`${BENCH}peft_bench.py`, "--json", ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr).trim();
      equal(out.code, 2, `${args.join(" ")}: exit code ${out.code}; stderr: ${stderr}`);
      equal(new TextDecoder().decode(out.stdout), "", args.join(" "));
      equal(stderr.split("\n").at(-1), `peft_bench.py: error: ${why}`, args.join(" "));
    }
  },
});

Deno.test("linalg_bench refuses a bad LINALG_BENCH_* variable in one line naming it and the value, exit code 2", async () => {
  // They ended on a thrown error with its stack ("LINALG_BENCH_SIZES: bad size NaN"), and "0x40" ran n = 64.
  const cases: [Record<string, string>, string][] = [
    [{ LINALG_BENCH_4096: "yes" }, 'LINALG_BENCH_4096 must be 1 or unset, got "yes"'],
    [{ LINALG_BENCH_SIZES: "64,x" }, 'LINALG_BENCH_SIZES must be sizes >= 2 separated by commas, got "64,x"'],
    [{ LINALG_BENCH_SIZES: "0x40" }, 'LINALG_BENCH_SIZES must be sizes >= 2 separated by commas, got "0x40"'],
    [{ LINALG_BENCH_SIZES: "64,1" }, 'LINALG_BENCH_SIZES must be sizes >= 2 separated by commas, got "64,1"'],
  ];
  for (const [env, why] of cases) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${BENCH}linalg_bench.ts`],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const what = JSON.stringify(env);
    const stderr = new TextDecoder().decode(out.stderr).trim();
    equal(out.code, 2, `${what}: exit code ${out.code}; stderr: ${stderr}`);
    equal(new TextDecoder().decode(out.stdout), "", what);
    equal(
      stderr,
      `linalg_bench: ${why}. Usage: [LINALG_BENCH_SIZES=64,256] [LINALG_BENCH_4096=1] deno run -A bench/linalg_bench.ts`,
      what,
    );
  }
});
