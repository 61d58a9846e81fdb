/**
 * A worker thread of the wasm backend's pool (see `wasm_pool.ts` for the protocol): polls briefly, then blocks in
 * `Atomics.wait`, until a job is published, claims and runs chunks of it, counts them done, and waits again.
 *
 * @module
 */
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { claimChunk, CTL, type KernelFn, WORKER_POLL_MS, writeWorkerError } from "./wasm_pool.ts";

const { memory, control, port, thread } = workerData as {
  memory: WebAssembly.Memory;
  control: SharedArrayBuffer;
  port: MessagePort;
  thread: number;
};
const ctl = new Int32Array(control);
const kernels = new Map<number, KernelFn>();
const imports = { env: { mem: memory }, math: { sin: Math.sin, cos: Math.cos } };

/** Instantiates every kernel that has arrived on the port. */
function drain(): void {
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
    const { id, module, usesMath } = m.message as {
      id: number;
      module: WebAssembly.Module;
      usesMath: boolean;
    };
    const inst = new WebAssembly.Instance(module, usesMath ? imports : { env: imports.env });
    kernels.set(id, inst.exports.run as KernelFn);
  }
}

/** The kernel `id`, waiting briefly for its module when the message is still in flight. */
function kernel(id: number): KernelFn {
  for (let tries = 0;; tries++) {
    drain();
    const fn = kernels.get(id);
    if (fn !== undefined) return fn;
    if (tries > 1000) throw new Error(`wasm worker ${thread}: kernel ${id} never arrived`);
    Atomics.wait(ctl, CTL.stop, 0, 1);
  }
}

/**
 * Returns once the job counter is no longer `seen`: polls it for {@link WORKER_POLL_MS}, then sleeps on it (the
 * caller's notify wakes the worker, tens of microseconds later).
 */
function awaitJob(seen: number): void {
  const until = performance.now() + WORKER_POLL_MS;
  for (let i = 1; Atomics.load(ctl, CTL.gen) === seen; i++) {
    // The clock is read every 64 polls.
    if ((i & 63) === 0 && performance.now() > until) {
      Atomics.add(ctl, CTL.sleeping, 1);
      Atomics.wait(ctl, CTL.gen, seen);
      Atomics.sub(ctl, CTL.sleeping, 1);
      return;
    }
  }
}

function serve(): void {
  let seen = Atomics.load(ctl, CTL.gen);
  for (;;) {
    awaitJob(seen);
    const g = Atomics.load(ctl, CTL.gen);
    if (g === seen) continue;
    seen = g;
    if (Atomics.load(ctl, CTL.stop) !== 0) return;
    // Claims are checked against this job's generation, so a late wake-up never takes a newer job's chunk.
    const gen = g & 0x7ff;
    const chunks = ctl[CTL.chunks];
    const items = ctl[CTL.items];
    const chunk = ctl[CTL.chunk];
    const args = Array.from(ctl.subarray(CTL.args, CTL.args + ctl[CTL.nargs]));
    const scratch = ctl[CTL.scratch] + thread * ctl[CTL.stride];
    // The job may already be over (the other threads took every chunk): then the claim fails at once.
    let fn: KernelFn | null = null;
    for (let c = claimChunk(ctl, gen, chunks); c >= 0; c = claimChunk(ctl, gen, chunks)) {
      try {
        fn ??= kernel(ctl[CTL.kernel]);
        fn(c * chunk, Math.min(items, (c + 1) * chunk), scratch, ...args);
      } catch (e) {
        // The job's first failure keeps its message; counting the chunk done below publishes it to the caller.
        if (Atomics.compareExchange(ctl, CTL.error, 0, 1) === 0) {
          writeWorkerError(ctl, `wasm worker ${thread}: ${(e as Error).message}`);
        }
      }
      // The job ends at CTL.end chunks, fewer than `chunks` when a chunk threw on the calling thread.
      if (Atomics.add(ctl, CTL.done, 1) + 1 >= Atomics.load(ctl, CTL.end)) Atomics.notify(ctl, CTL.done);
    }
  }
}

// Loaded: the main thread no longer needs to keep the program alive for this worker.
parentPort?.postMessage({ ready: true });
serve();
