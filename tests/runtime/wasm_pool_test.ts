/**
 * The wasm thread pool when a chunk fails: a job whose chunk throws on the calling thread ends only when the chunks
 * that a worker took are done (the next job then counts and writes only its own chunks), a worker's failure
 * reads as that worker's message, never an earlier job's, workers poll for jobs only briefly (an idle pool uses no
 * CPU), and a thread count out of range names its variable.
 * The interleavings are forced: the calling thread's chunk waits until a worker has started one.
 */
import { deepEqual, equal, match, ok, rejects, throws } from "node:assert/strict";
import { ThreadPool, WORKER_POLL_MS } from "../../lib/runtime/wasm_pool.ts";
import { createWasmBackend, type WasmBackendOptions } from "../../lib/runtime/wasm.ts";
import { TestRng } from "../_helpers.ts";
import { FnBuilder, ModuleBuilder, type OpName } from "../../lib/codegen/wasm_encode.ts";
import { WASM_MAX_PAGES } from "../../lib/codegen/wasm_emit.ts";

/** Byte addresses in the test memory: one flag and two output words per job. */
const FLAG = [64, 68, 72, 76];
const OUT = [1024, 1032, 1040, 1048];

/**
 * A kernel `run(start, end, scratch, out, flag, spin)` that sets the i32 at `flag` to 1 and then, when `trap` is
 * null, counts to `spin` and writes 1 to the i32s `out[start..end)`; else runs the trapping instruction `trap`.
 */
function kernelBytes(trap: OpName | null): Uint8Array<ArrayBuffer> {
  const mb = new ModuleBuilder();
  mb.importMemory("env", "mem", { min: 1, max: WASM_MAX_PAGES, shared: true });
  const f = new FnBuilder(["i32", "i32", "i32", "i32", "i32", "i32"], []);
  const i = f.local("i32");
  f.get(4).i32(1).op("i32.store");
  if (trap === "unreachable") f.op("unreachable");
  else if (trap !== null) f.i32(1).i32(0).op(trap).op("drop");
  else {
    f.op("block").op("loop");
    f.get(i, 5).op("i32.ge_u").op("br_if", 1);
    f.get(i).i32(1).op("i32.add").set(i).op("br", 0);
    f.op("end").op("end");
    f.get(0).set(i);
    f.op("block").op("loop");
    f.get(i, 1).op("i32.ge_u").op("br_if", 1);
    f.get(3, i).i32(2).op("i32.shl").op("i32.add").i32(1).op("i32.store");
    f.get(i).i32(1).op("i32.add").set(i).op("br", 0);
    f.op("end").op("end");
  }
  mb.exportFunction("run", mb.addFunction(f));
  return mb.encode();
}

/** Counting that takes about 50 ms: a worker's chunk outlives by far the error thrown beside it. */
const SPIN = 50_000_000;

/**
 * A pool of the calling thread and one worker over a fresh memory, with kernels 1 (writes), 2 and 3 (trap), once
 * the worker runs chunks (a worker thread starts only while the event loop runs).
 */
async function testPool(): Promise<{ pool: ThreadPool; words: Int32Array }> {
  const memory = new WebAssembly.Memory({ initial: 1, maximum: WASM_MAX_PAGES, shared: true });
  const words = new Int32Array(memory.buffer);
  const pool = new ThreadPool(memory, 2);
  pool.share(1, await WebAssembly.compile(kernelBytes(null)), false);
  pool.share(2, await WebAssembly.compile(kernelBytes("unreachable")), false);
  pool.share(3, await WebAssembly.compile(kernelBytes("i32.div_u")), false);
  const started = FLAG[3];
  const deadline = performance.now() + 10_000;
  while (Atomics.load(words, started / 4) === 0) {
    if (performance.now() > deadline) throw new Error("the pool's worker never started");
    const sleep = () => Atomics.wait(words, 0, 0, 1);
    await pool.run({
      kernel: 1,
      fn: sleep,
      items: 4,
      chunk: 1,
      scratch: 0,
      stride: 0,
      args: [OUT[3], started, 0],
    });
    await new Promise((r) => setTimeout(r, 10));
  }
  return { pool, words };
}

/** Blocks until the i32 at byte `addr` is set (a worker started its chunk). */
function waitForFlag(words: Int32Array, addr: number): void {
  const deadline = performance.now() + 10_000;
  while (Atomics.load(words, addr / 4) === 0) {
    if (performance.now() > deadline) throw new Error(`no worker started a chunk (flag @${addr})`);
    Atomics.wait(words, addr / 4, 0, 1);
  }
}

/** A job of two one-item chunks of kernel `kernel` writing at `OUT[j]`, its flag `FLAG[j]`. */
function job(kernel: number, j: number, fn: (start: number, end: number) => void) {
  return { kernel, fn, items: 2, chunk: 1, scratch: 0, stride: 0, args: [OUT[j], FLAG[j], SPIN] };
}

Deno.test("wasm pool: after a chunk throws on the calling thread, the next job waits for all of its own chunks", async () => {
  const { pool, words } = await testPool();
  try {
    // The calling thread's chunk throws once the worker runs the other one.
    const failing = job(1, 0, () => {
      waitForFlag(words, FLAG[0]);
      throw new Error("chunk failed on the calling thread");
    });
    await rejects(pool.run(failing), /chunk failed on the calling thread/);
    deepEqual(Array.from(words.subarray(OUT[0] / 4, OUT[0] / 4 + 2)).sort(), [0, 1]);
    // The next job: the calling thread finishes its chunk while the worker still counts in the other.
    const next = job(1, 1, (start, end) => {
      waitForFlag(words, FLAG[1]);
      for (let i = start; i < end; i++) words[OUT[1] / 4 + i] = 1;
    });
    equal(pool.runSync(next, 10_000), true);
    deepEqual(Array.from(words.subarray(OUT[1] / 4, OUT[1] / 4 + 2)), [1, 1]);
  } finally {
    pool.close();
  }
});

Deno.test("wasm pool: a worker's failure reads as its own message, job after job", async () => {
  const { pool, words } = await testPool();
  try {
    const caller = (j: number) => () => waitForFlag(words, FLAG[j]);
    await rejects(pool.run(job(2, 0, caller(0))), { message: "wasm worker 1: unreachable" });
    // A second failure, after the event loop ran: its message, not the first one's.
    await new Promise((r) => setTimeout(r, 20));
    await rejects(pool.run(job(3, 1, caller(1))), (e: Error) => {
      match(e.message, /^wasm worker 1: .*divide by zero/);
      return true;
    });
    // A job that does not fail after them.
    words.fill(0, OUT[2] / 4, OUT[2] / 4 + 2);
    await pool.run(job(1, 2, (start, end) => {
      for (let i = start; i < end; i++) words[OUT[2] / 4 + i] = 1;
    }));
    deepEqual(Array.from(words.subarray(OUT[2] / 4, OUT[2] / 4 + 2)), [1, 1]);
  } finally {
    pool.close();
  }
});

Deno.test("wasm pool: workers poll for the next job only briefly: an idle pool burns no CPU", async () => {
  const { pool, words } = await testPool();
  try {
    // Jobs back to back, each within the workers' poll window of the one before: all chunks are done.
    for (let j = 0; j < 50; j++) {
      words.fill(0, OUT[0] / 4, OUT[0] / 4 + 2);
      equal(
        pool.runSync({
          ...job(1, 0, (start, end) => words.fill(1, OUT[0] / 4 + start, OUT[0] / 4 + end)),
          args: [OUT[0], FLAG[0], 1000],
        }, 10_000),
        true,
      );
      deepEqual(Array.from(words.subarray(OUT[0] / 4, OUT[0] / 4 + 2)), [1, 1]);
    }
    // Then idle: past WORKER_POLL_MS the worker sleeps in Atomics.wait, where a worker that kept polling would burn
    // a core. (Counted by the pool, not from the process's CPU time, which other tests running beside this one
    // share.)
    const workers = pool.threads - 1;
    await new Promise((r) => setTimeout(r, 20 + WORKER_POLL_MS));
    const deadline = performance.now() + 2_000;
    while (pool.sleepingWorkers < workers && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    equal(pool.sleepingWorkers, workers, "workers asleep after the poll window");
  } finally {
    pool.close();
  }
});

Deno.test("wasm backend: TESSERA_THREADS out of range names the variable", () => {
  const before = Deno.env.get("TESSERA_THREADS");
  try {
    Deno.env.set("TESSERA_THREADS", "999");
    throws(() => createWasmBackend(), {
      message: 'TESSERA_THREADS must be a decimal integer in [1, 256], got "999"',
    });
    Deno.env.set("TESSERA_THREADS", "0");
    throws(() => createWasmBackend(), {
      message: 'TESSERA_THREADS must be a decimal integer in [1, 256], got "0"',
    });
  } finally {
    if (before === undefined) Deno.env.delete("TESSERA_THREADS");
    else Deno.env.set("TESSERA_THREADS", before);
  }
  throws(() => createWasmBackend({ threads: 999 }), {
    message: 'createWasmBackend: option "threads" must be <= 256, got 999',
  });
});

Deno.test("wasm backend: TESSERA_THREADS takes decimal digits only, naming the variable and the value", () => {
  const rng = new TestRng(137);
  const n = rng.int(1, 4);
  const before = Deno.env.get("TESSERA_THREADS");
  try {
    // Each reads as n (or 10) under Number(), which took them.
    for (const bad of [`0x${n}`, `0o${n}`, `0b1`, `${n}e0`, "1e1", ` ${n} `, `${n}.0`, `+${n}`, `${n}.5`]) {
      Deno.env.set("TESSERA_THREADS", bad);
      throws(() => createWasmBackend(), {
        name: "RangeError",
        message: `TESSERA_THREADS must be a decimal integer in [1, 256], got ${JSON.stringify(bad)}`,
      });
    }
    for (const good of [`${n}`, `0${n}`]) {
      Deno.env.set("TESSERA_THREADS", good);
      const be = createWasmBackend();
      try {
        equal(be.threads, n);
      } finally {
        be.close();
      }
    }
  } finally {
    if (before === undefined) Deno.env.delete("TESSERA_THREADS");
    else Deno.env.set("TESSERA_THREADS", before);
  }
});

Deno.test("wasm backend: TESSERA_THREADS above the hardware threads warns with both numbers", () => {
  const cores = navigator.hardwareConcurrency;
  const before = Deno.env.get("TESSERA_THREADS");
  const warn = console.warn;
  const warned: string[] = [];
  console.warn = (...a: unknown[]) => warned.push(a.join(" "));
  try {
    for (const n of [cores, Math.min(cores + 1 + new TestRng(91).int(0, 3), 256)]) {
      warned.length = 0;
      Deno.env.set("TESSERA_THREADS", String(n));
      const be = createWasmBackend();
      be.close();
      if (n <= cores) deepEqual(warned, [], `TESSERA_THREADS=${n} on ${cores} hardware threads`);
      else {
        equal(
          warned.length,
          1,
          `TESSERA_THREADS=${n} on ${cores} hardware threads: ${JSON.stringify(warned)}`,
        );
        ok(
          warned[0].includes(`TESSERA_THREADS=${n}`) && warned[0].includes(`${cores} hardware threads`),
          warned[0],
        );
      }
    }
  } finally {
    console.warn = warn;
    if (before === undefined) Deno.env.delete("TESSERA_THREADS");
    else Deno.env.set("TESSERA_THREADS", before);
  }
});

Deno.test("createWasmBackend refuses an unknown option, naming it: { thread: 1 } ran on every hardware thread", () => {
  const rng = new TestRng(136);
  const n = rng.int(1, 4);
  const be = createWasmBackend({ threads: n });
  try {
    equal(be.threads, n);
  } finally {
    be.close();
  }
  throws(() => createWasmBackend({ thread: n } as WasmBackendOptions), {
    name: "OptionsError",
    message: 'createWasmBackend: unknown option "thread"',
  });
  throws(() => createWasmBackend({ threads: n + 0.5 }), {
    message: `createWasmBackend: option "threads" must be an integer, got ${n + 0.5}`,
  });
});
