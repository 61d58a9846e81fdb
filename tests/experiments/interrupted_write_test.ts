/**
 * A results file that a resume writes again is replaced whole or not at all: a finished run of exp:spectral-gain and
 * of exp:magnitude (tiny sizes, cpu) is resumed under a file-size limit (`ulimit -f`) of half its metrics.jsonl, so
 * the kernel kills the process (SIGXFSZ) in the middle of writing that file, as a crash would. The finished run's
 * metrics.jsonl must keep its bytes (a write in place had cut it to the limit), the kill must have happened in that
 * write (its temporary file is left), and a plain resume afterwards removes the leftover and writes the same bytes.
 */
import { deepEqual, equal, ok } from "node:assert/strict";

const STORIES260K =
  new URL("../../../shared/data/models/stories260K/stories260K.bin", import.meta.url).pathname;

const EXPERIMENTS = [
  {
    name: "spectral_gain",
    task: "spectral-gain",
    args: ["--device", "cpu", "--model", STORIES260K, "--modules", "wq"],
    needs: STORIES260K,
  },
  {
    name: "magnitude",
    task: "magnitude",
    args: [
      ...["--quick", "--device", "cpu", "--width", "16", "--rank", "2", "--steps", "4", "--examples", "32"],
      ...["--batch-size", "16", "--prop1-width", "8", "--prop1-rank", "2", "--prop1-steps", "4"],
    ],
    needs: undefined,
  },
];

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

function exists(path: string | undefined): boolean {
  if (path === undefined) return true;
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Runs `deno run -A <script> <args>` in `cwd`, under a file-size limit of `blocks` KiB when given. */
function run(script: string, args: string[], cwd: string, blocks?: number): Promise<Deno.CommandOutput> {
  const command = blocks === undefined
    ? new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      cwd,
      stdout: "piped",
      stderr: "piped",
    })
    : new Deno.Command("bash", {
      // exec: the limit's signal ends the experiment's own process, not a shell around it. Deno's code cache (a
      // database far larger than the limit) is left alone, so that the limit stops the experiment's own writes only.
      args: [
        "-c",
        `ulimit -f ${blocks} && exec "$0" "$@"`,
        Deno.execPath(),
        "run",
        "-A",
        "--no-code-cache",
        script,
        ...args,
      ],
      cwd,
      stdout: "piped",
      stderr: "piped",
    });
  return command.output();
}

for (const e of EXPERIMENTS) {
  Deno.test({
    name: `exp:${e.task} killed while a resume rewrites metrics.jsonl leaves the finished run's file whole`,
    // ulimit and SIGXFSZ are POSIX.
    ignore: Deno.build.os === "windows" || !exists(e.needs),
    fn: async () => {
      const cwd = await Deno.makeTempDir();
      const script = new URL(`../../experiments/${e.name}.ts`, import.meta.url).pathname;
      try {
        const first = await run(script, e.args, cwd);
        equal(first.code, 0, decode(first.stderr).slice(-2000));
        const rel = new RegExp(`exp:${e.task} → (\\S+)`).exec(decode(first.stdout))?.[1];
        ok(rel !== undefined, decode(first.stdout).slice(0, 500));
        const dir = `${cwd}/${rel}`;
        const before = Deno.readFileSync(`${dir}/metrics.jsonl`);
        const blocks = Math.floor(before.length / 2048);
        ok(blocks >= 2, `metrics.jsonl has ${before.length} bytes: too small to be cut in the middle`);

        const killed = await run(script, [...e.args, "--resume", rel], cwd, blocks);
        equal(
          killed.signal,
          "SIGXFSZ",
          `not killed by the size limit: ${decode(killed.stderr).slice(-2000)}`,
        );
        const after = Deno.readFileSync(`${dir}/metrics.jsonl`);
        equal(after.length, before.length, "the killed write changed the finished run's metrics.jsonl");
        deepEqual(after, before);
        const left = [...Deno.readDirSync(dir)].map((f) => f.name).filter((n) =>
          n.startsWith("metrics.jsonl.tmp-")
        );
        equal(
          left.length,
          1,
          `the process was not killed while writing metrics.jsonl: ${
            [...Deno.readDirSync(dir)].map((f) => f.name)
          } ${decode(killed.stderr).slice(-1500)}`,
        );

        const resumed = await run(script, [...e.args, "--resume", rel], cwd);
        equal(resumed.code, 0, decode(resumed.stderr).slice(-2000));
        ok(!exists(`${dir}/${left[0]}`), "the resume left the interrupted write's temporary file");
        deepEqual(Deno.readFileSync(`${dir}/metrics.jsonl`), before);
      } finally {
        await Deno.remove(cwd, { recursive: true });
      }
    },
  });
}
