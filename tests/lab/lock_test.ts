/**
 * The results lock under real concurrency: several processes (separate Deno processes) try, at the same instants,
 * to take each of many locks (one round per lock, the rounds a few milliseconds apart), and report whether they
 * hold it while all of them still run. At most one may hold a lock; with no lock file, with a file left by a process
 * that no longer runs, and with an empty file left long ago by a crash, exactly one takes it. Rerun a failure with
 * the printed TEST_SEED.
 */
import { equal, ok } from "node:assert/strict";
import { TEST_SEED, TestRng } from "../_helpers.ts";

const LOCK_MODULE = new URL("../../lab/lock.ts", import.meta.url).href;
const ROUNDS = 150;
const GAP_MS = 20;

// A contender: announces it is ready, waits for the common start time, then in each round tries that round's lock
// at the round's instant; it reports every round and holds what it took until the parent says "done" (so every
// report describes the same moment).
const CONTENDER = `
const [dir, id, rounds, gap] = Deno.args;
const { acquireLock } = await import(${JSON.stringify(LOCK_MODULE)});
const exists = (p) => { try { Deno.statSync(p); return true; } catch { return false; } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
Deno.writeTextFileSync(dir + "/ready-" + id, "");
while (!exists(dir + "/start")) await sleep(5);
const at = Number(Deno.readTextFileSync(dir + "/start"));
const locks = [];
const reports = [];
for (let r = 0; r < Number(rounds); r++) {
  while (Date.now() < at + r * Number(gap)) { /* spin so all contenders try together */ }
  try {
    locks.push(acquireLock(dir + "/" + r + "/.lock", "contender " + id));
    reports.push("held");
  } catch (err) {
    reports.push(err.name === "LockedError" ? "refused" : "error " + err.message);
  }
}
Deno.writeTextFileSync(dir + "/report-" + id + ".part", JSON.stringify(reports));
Deno.renameSync(dir + "/report-" + id + ".part", dir + "/report-" + id);
while (!exists(dir + "/done")) await sleep(5);
for (const lock of locks) lock.release();
`;

const exists = (p: string) => {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
};

async function waitFor(dir: string, prefix: string, n: number): Promise<void> {
  const pattern = new RegExp(`^${prefix}-\\d+$`);
  for (let tries = 0; tries < 6000; tries++) {
    if ([...Deno.readDirSync(dir)].filter((e) => pattern.test(e.name)).length === n) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${n} ${prefix} files in ${dir}`);
}

/** Runs the rounds with `n` contenders on `dir/<round>/.lock`; returns each round's reports. */
async function contend(dir: string, n: number): Promise<string[][]> {
  const children = Array.from({ length: n }, (_, i) =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=js", CONTENDER, dir, String(i), String(ROUNDS), String(GAP_MS)],
      stdout: "null",
      stderr: "inherit",
    }).spawn());
  try {
    await waitFor(dir, "ready", n);
    Deno.writeTextFileSync(`${dir}/start`, String(Date.now() + 100));
    await waitFor(dir, "report", n);
    const reports: string[][] = Array.from(
      { length: n },
      (_, i) => JSON.parse(Deno.readTextFileSync(`${dir}/report-${i}`)),
    );
    return Array.from({ length: ROUNDS }, (_, r) => reports.map((each) => each[r]));
  } finally {
    Deno.writeTextFileSync(`${dir}/done`, "");
    for (const child of children) await child.status;
  }
}

/** The pid of a process that has ended (one for the whole file). */
let dead: number | undefined;
async function deadPid(): Promise<number> {
  if (dead === undefined) {
    const child = new Deno.Command(Deno.execPath(), { args: ["eval", ""], stdout: "null" }).spawn();
    await child.status;
    dead = child.pid;
  }
  return dead;
}

const SCENARIOS: Record<string, (path: string) => Promise<void>> = {
  "no lock file": () => Promise.resolve(),
  "a lock left by a process that no longer runs": async (path) => {
    const holder = {
      pid: await deadPid(),
      host: Deno.hostname(),
      since: "2026-01-01T00:00:00.000Z",
      purpose: "x",
    };
    Deno.writeTextFileSync(path, JSON.stringify(holder));
  },
  "an empty lock file left by a crash long ago": (path) => {
    Deno.writeTextFileSync(path, "");
    Deno.utimeSync(path, new Date(0), new Date(0));
    return Promise.resolve();
  },
};

for (const [name, prepare] of Object.entries(SCENARIOS)) {
  Deno.test(`acquireLock: exactly one of several processes at once takes it, with ${name}`, async () => {
    const n = new TestRng(0x10c + name.length).int(6, 8);
    const dir = Deno.makeTempDirSync({ prefix: "lock_test_" });
    try {
      for (let r = 0; r < ROUNDS; r++) {
        Deno.mkdirSync(`${dir}/${r}`);
        await prepare(`${dir}/${r}/.lock`);
      }
      const rounds = await contend(dir, n);
      const bad = rounds.map((reports, r) => ({
        r,
        held: reports.filter((x) => x === "held").length,
        reports,
      }))
        .filter((x) => x.held !== 1 || x.reports.some((y) => y !== "held" && y !== "refused"));
      equal(
        bad.length,
        0,
        `rounds where not exactly one of ${n} processes held the lock: ` +
          bad.map((x) => `round ${x.r}: ${x.held} (${x.reports.join(", ")})`).join("; ") +
          ` (TEST_SEED=${TEST_SEED})`,
      );
      // Each holder removed its lock on release; the file taken over (if any) went with it.
      const left = Array.from({ length: ROUNDS }, (_, r) => r).filter((r) => exists(`${dir}/${r}/.lock`));
      ok(left.length === 0, `lock files outlived their holders in rounds ${left}`);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
}

Deno.test("acquireLock: a file naming this process's own pid, left by an earlier process, is taken over; a lock this process holds is refused", async () => {
  const { acquireLock } = await import(LOCK_MODULE);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/.lock`;
  // As a restarted container leaves it: an earlier process with the same pid wrote it and ended.
  const stale = {
    pid: Deno.pid,
    host: Deno.hostname(),
    since: "2020-01-01T00:00:00.000Z",
    purpose: "earlier",
  };
  await Deno.writeTextFile(path, JSON.stringify(stale) + "\n");
  const lock = acquireLock(path, "now");
  ok(JSON.parse(await Deno.readTextFile(path)).since !== stale.since, "the file names the new holder");
  let refused = "";
  try {
    acquireLock(path, "again");
  } catch (e) {
    refused = (e as Error).message;
  }
  ok(/\(this one\)/.test(refused), `a second take in the same process: ${JSON.stringify(refused)}`);
  lock[Symbol.dispose]();
  await Deno.remove(dir, { recursive: true });
});

Deno.test({
  name: "acquireLock: the lock of a process killed and not yet reaped (a zombie) is taken over",
  // A zombie needs a parent that does not wait for its child (bash exec-ing into sleep), and is seen in /proc.
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const { acquireLock, processAlive } = await import(LOCK_MODULE);
    const dir = await Deno.makeTempDir();
    const path = `${dir}/.lock`;
    const holder = `const { acquireLock } = await import(${JSON.stringify(LOCK_MODULE)});
acquireLock(Deno.args[0], "killed holder");
Deno.writeTextFileSync(Deno.args[1], "");
await new Promise(() => setInterval(() => {}, 1000));`;
    // bash starts the holder, records its pid, and becomes a sleep that never collects it once it is killed.
    const parent = new Deno.Command("bash", {
      args: [
        "-c",
        `"$0" eval "$1" "$2" "$3" & echo $! > "$4"; exec sleep 60`,
        Deno.execPath(),
        holder,
        path,
        `${dir}/held`,
        `${dir}/pid`,
      ],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    try {
      const deadline = Date.now() + 30_000;
      while (!exists(`${dir}/held`)) {
        ok(Date.now() < deadline, "the holder took no lock within 30 s");
        await new Promise((r) => setTimeout(r, 20));
      }
      const pid = Number(Deno.readTextFileSync(`${dir}/pid`));
      equal(JSON.parse(Deno.readTextFileSync(path)).pid, pid);
      Deno.kill(pid, "SIGKILL");
      // Killed, it stays in the process table as a zombie for as long as its parent sleeps.
      while (!/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`))) {
        ok(Date.now() < deadline, "the killed holder did not become a zombie within 30 s");
        await new Promise((r) => setTimeout(r, 20));
      }
      equal(processAlive(pid), false, `processAlive(${pid}) of a zombie`);
      // The process's other threads may still be ending (and its files, with their system locks, still open) for a
      // moment after its first thread shows as a zombie: that refusal passes, the one for a zombie holder did not.
      let lock;
      for (;;) {
        try {
          lock = acquireLock(path, "after the kill");
          break;
        } catch (err) {
          ok(Date.now() < deadline, `the lock of the zombie ${pid} was not taken over within 30 s: ${err}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      equal(JSON.parse(Deno.readTextFileSync(path)).pid, Deno.pid);
      lock[Symbol.dispose]();
    } finally {
      parent.kill("SIGKILL");
      await parent.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "acquireLock: a file naming a live process that started at another time than its holder is taken over",
  // Start times are read from /proc.
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const { acquireLock } = await import(LOCK_MODULE);
    // Field 22 of /proc/<pid>/stat, counted from the end of the command's parentheses (field 2).
    const startTime = (pid: number) => {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[22 - 3]);
    };
    const rng = new TestRng(405);
    const dir = await Deno.makeTempDir();
    const path = `${dir}/.lock`;
    // An unrelated live process that has the pid the crashed holder had.
    const other = new Deno.Command("sleep", { args: ["60"], stdout: "null" }).spawn();
    try {
      const started = startTime(other.pid);
      ok(typeof started === "number" && started > 0, `start time of process ${other.pid}: ${started}`);
      const holder = {
        pid: other.pid,
        host: Deno.hostname(),
        since: "2020-01-01T00:00:00.000Z",
        purpose: "crashed",
      };
      const write = (fields: Record<string, unknown>) =>
        Deno.writeTextFileSync(path, JSON.stringify({ ...holder, ...fields }) + "\n");
      // Its own start time, or none recorded (a file written before start times were): it may be the holder.
      for (const fields of [{ started }, {}]) {
        write(fields);
        let refused = "";
        try {
          acquireLock(path, "now")[Symbol.dispose]();
        } catch (e) {
          refused = (e as Error).message;
        }
        ok(
          refused.startsWith(`locked by process ${other.pid} on this host`),
          `${JSON.stringify(fields)}: ${refused}`,
        );
      }
      write({ started: started + rng.int(1, 1000) * (rng.next() < 0.5 ? -1 : 1) });
      const lock = acquireLock(path, "after the crash");
      const written = JSON.parse(Deno.readTextFileSync(path));
      equal(written.pid, Deno.pid);
      equal(written.started, startTime(Deno.pid));
      lock[Symbol.dispose]();
    } finally {
      other.kill("SIGKILL");
      await other.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
