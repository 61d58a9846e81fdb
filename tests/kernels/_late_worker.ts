/**
 * The harness of the tests in which a Web Worker joins a wasm job of shared rounds (a Jacobi sweep, a Householder QR)
 * whose round 0 has one part left: the control words say one part finished and both parts of round 0 claimed, so
 * the worker must sleep, claiming and writing nothing of round 1, until the test counts that part done; then it
 * runs the job to its end alone.
 */
import { deepEqual, equal } from "node:assert/strict";
import { SWEEP_CONTROL_WORDS } from "../../lib/codegen/wasm_linalg.ts";

/**
 * Runs module `bytes` with `args` on a worker sharing `mem`, with the control words at byte `ctlAt` set as above;
 * once the worker sleeps, checks that the job has not ended and that no part of round 1 is claimed, calls
 * `whileWaiting` (to check that nothing of round 1 was written), counts round 0's last part done and waits for the
 * job to end. `round` names a round in the messages ("round", "step").
 */
export async function joinLate(
  bytes: Uint8Array,
  mem: WebAssembly.Memory,
  args: readonly number[],
  ctlAt: number,
  round: string,
  whileWaiting: () => void,
): Promise<Int32Array> {
  // Control words: parts finished, sleepers, then each part's claimed rounds.
  const ctl = new Int32Array(mem.buffer, ctlAt, SWEEP_CONTROL_WORDS);
  ctl.set([1, 0, 1, 1]);
  const code = `self.onmessage = (e) => {
    const { bytes, mem, args } = e.data;
    new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { mem } }).exports.run(...args);
    self.postMessage("done");
  };`;
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  const worker = new Worker(url, { type: "module" });
  try {
    let finished = false;
    const done = new Promise<void>((resolve) => {
      worker.onmessage = () => {
        finished = true;
        resolve();
      };
    });
    worker.postMessage({ bytes, mem, args });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    for (let i = 0; i < 500 && Atomics.load(ctl, 1) === 0; i++) await sleep(10);
    equal(Atomics.load(ctl, 1), 1, `the worker sleeps, waiting for ${round} 0`);
    await sleep(50);
    equal(finished, false, `the job ended while a part of ${round} 0 was unfinished`);
    deepEqual([Atomics.load(ctl, 2), Atomics.load(ctl, 3)], [1, 1], `parts claimed for ${round} 1`);
    whileWaiting();
    Atomics.add(ctl, 0, 1);
    Atomics.notify(ctl, 0);
    await done;
    return ctl;
  } finally {
    worker.terminate();
    URL.revokeObjectURL(url);
  }
}
