/**
 * A long loop that never waits for anything (run by memory_test.ts in a process of its own, with `--expose-gc`):
 * `steps` realizations of a small update on `device`, dropping each previous result. Every `every` steps, without
 * letting the event loop run, it collects garbage and prints one JSON line with the step, the JS heap in use and
 * the device's live bytes.
 *
 *   deno run -A --v8-flags=--expose-gc tests/runtime/_memory_loop.ts cpu 10000 1000
 */
import { getBackend, tensor } from "../../mod.ts";
import { realize } from "../../lib/tensor/tensor.ts";
import type { DeviceName } from "../../lib/ir/node.ts";
import { TestRng } from "../_helpers.ts";

const device = Deno.args[0] as DeviceName;
const steps = Number(Deno.args[1]);
const every = Number(Deno.args[2]);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc");
const be = await getBackend(device);
const n = 1024;
const rng = new TestRng(71);
let w = tensor(rng.normals(n), { device });
const target = tensor(rng.normals(n), { device });
for (let step = 1; step <= steps; step++) {
  const start = performance.now();
  // One gradient step on |w - target|² (a handful of nodes per step, as in any training loop).
  const next = w.sub(w.sub(target).mul(0.01));
  await realize(next);
  w = next;
  // The rest of a step's host work (a real step takes milliseconds): 0.3 ms, without letting the event loop run.
  while (performance.now() - start < 0.3) { /* busy */ }
  if (step % every === 0) {
    gc();
    const { heapUsed } = Deno.memoryUsage();
    console.log(JSON.stringify({ step, heapUsed, liveBytes: be.stats().liveBytes }));
  }
}
