/**
 * The wasm backend's thread pool: worker threads that share the backend's `WebAssembly.Memory` and run chunks of
 * one kernel's work items together with the calling thread.
 *
 * Protocol (one job at a time, over a small shared control block):
 * - the caller invalidates old claims, writes the job (kernel id, arguments, item and chunk counts), bumps the
 *   generation word and wakes the workers (`Atomics.notify`);
 * - every thread, the caller included, claims chunks with a compare-and-swap on one word that holds the job's
 *   generation and the next chunk index, so a thread that wakes late for an old job can never claim a chunk of a
 *   new one;
 * - the caller, once no chunk is left to claim, polls the done counter for at most {@link CALLER_POLL_MS}, then
 *   sleeps on it (`Atomics.wait`) for a short while, then, if workers are still busy, waits with
 *   `Atomics.waitAsync` so that the event loop runs (and notices a worker that died);
 * - a worker, after a job, polls the job counter for at most {@link WORKER_POLL_MS} (the next job of a run usually
 *   follows within that time), then blocks in `Atomics.wait`, so an idle pool burns no CPU. A worker woken from
 *   `Atomics.wait` starts tens of microseconds after the notify (over 100 µs on a loaded host), which made a split
 *   of less than ~0.1 ms of work no faster than one thread;
 * - a job is over only when every chunk that a thread claimed is done, also when a chunk threw: a chunk still
 *   running would count toward the next job's done counter (which then ended early, with outputs unwritten) and
 *   write into memory released after the error. A chunk that throws on the calling thread ends the claims; the
 *   error is thrown once the chunks the workers took are done. A worker whose chunk throws writes the message into
 *   the control block before counting the chunk done, so the caller reads it with the job's end.
 *
 * Compiled kernel modules reach the workers through a message port that they drain synchronously
 * (`receiveMessageOnPort`) when a job names a kernel they have not instantiated yet. Workers are unref'd: they
 * never keep a finished program alive.
 *
 * @module
 */
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads";

/** Word offsets in the control block. */
export const CTL = {
  /** Job counter (workers wait on it). */
  gen: 0,
  /** `(job counter & 0x7ff) << 20 | next chunk`. */
  claim: 1,
  /** Chunks finished. */
  done: 2,
  /** Chunks in the job. */
  chunks: 3,
  /** Kernel id. */
  kernel: 4,
  /** Work items in the job. */
  items: 5,
  /** Items per chunk. */
  chunk: 6,
  /** Number of kernel arguments after the scratch pointer. */
  nargs: 7,
  /** Scratch of thread 0 (byte address); thread t uses scratch + t·stride. */
  scratch: 8,
  /** Scratch bytes per thread. */
  stride: 9,
  /** Set by a worker whose chunk threw. */
  error: 10,
  /** Set when the pool shuts down. */
  stop: 11,
  /** Chunks done when the job is over: all of them, or those claimed before a chunk threw on the calling thread. */
  end: 12,
  /** Bytes of the failed worker's message, whose UTF-8 text follows the arguments (see {@link readWorkerError}). */
  errorBytes: 13,
  /** Workers asleep in `Atomics.wait` between jobs (past their poll; see {@link WORKER_POLL_MS}). */
  sleeping: 14,
  /** First kernel argument. */
  args: 16,
} as const;

/**
 * How long (ms) a worker polls for the next job before it sleeps. Measured on a shared 2-core host, a 50 µs kernel
 * split over two threads took 54 µs with sleeping workers and 27 µs with polling ones.
 */
export const WORKER_POLL_MS = 0.5;

/** How long (ms) the calling thread polls for the workers' last chunks before it sleeps. */
export const CALLER_POLL_MS = 0.2;

/** Most kernel arguments a job can carry. */
export const MAX_ARGS = 1024;

/** Most bytes of a worker's error message that the control block keeps. */
const MAX_ERROR_BYTES = 1024;

/** Words of the control block: the fields, the arguments and the error message. */
const CTL_WORDS = CTL.args + MAX_ARGS + MAX_ERROR_BYTES / 4;

/** Stores a worker's error message (cut to {@link MAX_ERROR_BYTES} bytes, on a character boundary) in `ctl`. */
export function writeWorkerError(ctl: Int32Array, message: string): void {
  // encodeInto refuses views of shared memory: encode into a private buffer, then copy.
  const text = new Uint8Array(MAX_ERROR_BYTES);
  const { written } = new TextEncoder().encodeInto(message, text);
  new Uint8Array(ctl.buffer, 4 * (CTL.args + MAX_ARGS), MAX_ERROR_BYTES).set(text.subarray(0, written));
  Atomics.store(ctl, CTL.errorBytes, written);
}

/** The message stored by {@link writeWorkerError}. */
export function readWorkerError(ctl: Int32Array): string {
  const bytes = Atomics.load(ctl, CTL.errorBytes);
  // slice() copies into private memory, which TextDecoder accepts.
  return new TextDecoder().decode(new Uint8Array(ctl.buffer, 4 * (CTL.args + MAX_ARGS), bytes).slice());
}

/** Claims the next chunk of job generation `gen` (11 bits); -1 when none is left or the job is over. */
export function claimChunk(ctl: Int32Array, gen: number, chunks: number): number {
  for (;;) {
    const v = Atomics.load(ctl, CTL.claim);
    if (v >>> 20 !== gen) return -1;
    const c = v & 0xfffff;
    if (c >= chunks) return -1;
    if (Atomics.compareExchange(ctl, CTL.claim, v, v + 1) === v) return c;
  }
}

/** A kernel's entry point: `run(start, end, scratch, ...args)`. */
export type KernelFn = (start: number, end: number, scratch: number, ...args: number[]) => void;

/** What a job needs besides its arguments. */
export interface PoolJob {
  /** Kernel id known to the workers (see {@link ThreadPool.share}). */
  readonly kernel: number;
  /** The kernel on the calling thread. */
  readonly fn: KernelFn;
  /** Work items. */
  readonly items: number;
  /** Items per chunk. */
  readonly chunk: number;
  /** Scratch of thread 0 and bytes per thread. */
  readonly scratch: number;
  readonly stride: number;
  /** Output and input pointers. */
  readonly args: readonly number[];
}

/** A worker thread stopped working (it could not start, or died): the pool can no longer be used. */
export class PoolFailure extends Error {
  /** `message` says which worker and why. */
  constructor(message: string) {
    super(message);
    this.name = "PoolFailure";
  }
}

/** Workers sharing one memory; see the module documentation for the protocol. */
export class ThreadPool {
  /** Threads that run a job: the workers plus the calling thread. */
  readonly threads: number;
  readonly #memory: WebAssembly.Memory;
  readonly #ctl: Int32Array;
  readonly #workers: Worker[] = [];
  readonly #ports: MessagePort[] = [];
  readonly #shared = new Set<number>();
  #failure: string | null = null;
  /** What a chunk of the latest job threw on the calling thread, thrown when the job is over. */
  #thrown: { error: unknown } | null = null;

  /** A pool of `threads - 1` workers over `memory`, started with the first job. */
  constructor(memory: WebAssembly.Memory, threads: number) {
    this.threads = threads;
    this.#memory = memory;
    this.#ctl = new Int32Array(new SharedArrayBuffer(4 * CTL_WORDS));
  }

  /** How many of the pool's workers sleep between jobs now (those still polling for one do not). */
  get sleepingWorkers(): number {
    return Atomics.load(this.#ctl, CTL.sleeping);
  }

  /** Why the pool stopped working, or null. */
  get failure(): string | null {
    return this.#failure;
  }

  /**
   * Starts the workers. Each keeps the program alive until its module has loaded (a program that ends while a
   * worker still loads would report the aborted load), then is unref'd.
   */
  #start(): void {
    // Worker threads start from file or data URLs only: a remote copy of tessera starts them from a data URL that
    // imports the worker module by its full URL.
    const file = new URL("./wasm_worker.ts", import.meta.url);
    const url = file.protocol === "file:"
      ? file
      : new URL(`data:text/javascript,${encodeURIComponent(`import ${JSON.stringify(file.href)};`)}`);
    for (let t = 1; t < this.threads; t++) {
      const { port1, port2 } = new MessageChannel();
      let w: Worker;
      try {
        w = new Worker(url, {
          workerData: { memory: this.#memory, control: this.#ctl.buffer, port: port2, thread: t },
          transferList: [port2],
        });
      } catch (e) {
        // No worker threads here (permissions, an unsupported URL): the calling thread works alone.
        this.#failure ??= `worker threads unavailable: ${(e as Error).message}`;
        return;
      }
      w.on("error", (e: Error) => {
        this.#failure ??= `wasm worker thread ${t} failed: ${e.message}`;
        w.unref();
      });
      w.on("exit", () => {
        this.#failure ??= `wasm worker thread ${t} exited`;
      });
      w.on("message", (m: { ready?: boolean }) => {
        if (m.ready) w.unref();
      });
      this.#workers.push(w);
      this.#ports.push(port1);
    }
  }

  /** Sends a compiled kernel to the workers (once per id). */
  share(id: number, module: WebAssembly.Module, usesMath: boolean): void {
    if (this.#workers.length === 0) this.#start();
    if (this.#shared.has(id)) return;
    this.#shared.add(id);
    for (const p of this.#ports) p.postMessage({ id, module, usesMath });
  }

  /**
   * Runs a job on every thread; resolves when all its chunks are done. Throws {@link PoolFailure} when a worker
   * has stopped (the job's outputs are then incomplete: run the kernel again on the calling thread), or the
   * error of a chunk that failed (a worker's reads `wasm worker 2: ...`) once no chunk of the job still runs.
   */
  async run(job: PoolJob): Promise<void> {
    if (!this.runSync(job, 0)) await this.finish();
  }

  /**
   * Runs a job on every thread, the calling one included, then blocks the calling thread (polling for at most
   * {@link CALLER_POLL_MS}, then in `Atomics.wait`) for at most `waitMs` until the chunks the workers took are done.
   * Returns true when the job is over (errors are thrown as by {@link run}); false when workers are still busy: then
   * {@link finish} must be awaited before the next job. A worker that dies is only noticed by the event loop, so
   * keep `waitMs` short.
   */
  runSync(job: PoolJob, waitMs: number): boolean {
    if (this.#failure !== null) throw new PoolFailure(this.#failure);
    if (this.#workers.length === 0) this.#start();
    if (job.args.length > MAX_ARGS) throw new RangeError(`wasm pool: ${job.args.length} kernel arguments`);
    const ctl = this.#ctl;
    const chunks = Math.ceil(job.items / job.chunk);
    if (chunks > 0xfffff) throw new RangeError(`wasm pool: ${chunks} chunks in one job`);
    // The job's generation is the low 11 bits of the counter that the workers wait on.
    const gen = (Atomics.load(ctl, CTL.gen) + 1) & 0x7ff;
    // Invalidate every claim of the previous job before touching the descriptor it was read from.
    Atomics.store(ctl, CTL.claim, gen << 20);
    ctl[CTL.kernel] = job.kernel;
    ctl[CTL.items] = job.items;
    ctl[CTL.chunk] = job.chunk;
    ctl[CTL.nargs] = job.args.length;
    ctl[CTL.scratch] = job.scratch;
    ctl[CTL.stride] = job.stride;
    ctl.set(job.args, CTL.args);
    ctl[CTL.chunks] = chunks;
    // The previous job is over (every claimed chunk done): nothing of it can still set these.
    Atomics.store(ctl, CTL.error, 0);
    Atomics.store(ctl, CTL.end, chunks);
    Atomics.store(ctl, CTL.done, 0);
    Atomics.add(ctl, CTL.gen, 1);
    Atomics.notify(ctl, CTL.gen);
    this.#thrown = null;
    let mine = 0;
    try {
      const call = [0, 0, job.scratch, ...job.args];
      for (let c = claimChunk(ctl, gen, chunks); c >= 0; c = claimChunk(ctl, gen, chunks)) {
        call[0] = c * job.chunk;
        call[1] = Math.min(job.items, (c + 1) * job.chunk);
        job.fn.apply(null, call as Parameters<KernelFn>);
        mine++;
      }
    } catch (e) {
      // No chunk is claimed after this one; the job ends when the claimed ones, this one included, are done.
      const claimed = Atomics.exchange(ctl, CTL.claim, (gen << 20) | 0xfffff) & 0xfffff;
      Atomics.store(ctl, CTL.end, Math.min(claimed, chunks));
      this.#thrown = { error: e };
      mine++;
    }
    if (mine > 0) Atomics.add(ctl, CTL.done, mine);
    const deadline = waitMs > 0 ? performance.now() + waitMs : 0;
    const pollUntil = Math.min(deadline, performance.now() + CALLER_POLL_MS);
    while (Atomics.load(ctl, CTL.done) < Atomics.load(ctl, CTL.end) && performance.now() < pollUntil) {
      // The workers' chunks usually end within microseconds of the caller's: a sleep would add a wake-up.
    }
    for (;;) {
      const done = Atomics.load(ctl, CTL.done);
      if (done >= Atomics.load(ctl, CTL.end)) break;
      const left = deadline - performance.now();
      if (left <= 0) return false;
      Atomics.wait(ctl, CTL.done, done, left);
    }
    this.#checkError();
    return true;
  }

  /** Waits (without blocking the event loop) until the job started by {@link runSync} is over. */
  async finish(): Promise<void> {
    const ctl = this.#ctl;
    const end = Atomics.load(ctl, CTL.end);
    if (Atomics.load(ctl, CTL.done) < end) {
      // A pending waitAsync alone does not keep every event loop alive (the test runner's does not count it):
      // hold a timer while waiting.
      const alive = setTimeout(() => {}, 2 ** 30);
      try {
        for (;;) {
          const done = Atomics.load(ctl, CTL.done);
          if (done >= end) break;
          // Check now and then that no worker died holding a chunk.
          const w = Atomics.waitAsync(ctl, CTL.done, done, 1000);
          if (w.async && (await w.value) === "timed-out" && this.#failure !== null) {
            throw new PoolFailure(this.#failure);
          }
        }
      } finally {
        clearTimeout(alive);
      }
    }
    this.#checkError();
  }

  /** Throws what failed in the job that is now over: the calling thread's error first, else a worker's. */
  #checkError(): void {
    if (this.#thrown !== null) throw this.#thrown.error;
    if (Atomics.load(this.#ctl, CTL.error) !== 0) throw new Error(readWorkerError(this.#ctl));
  }

  /** Stops the workers. */
  close(): void {
    Atomics.store(this.#ctl, CTL.stop, 1);
    Atomics.add(this.#ctl, CTL.gen, 1);
    Atomics.notify(this.#ctl, CTL.gen);
    for (const w of this.#workers) w.terminate();
    for (const p of this.#ports) p.close();
  }
}
