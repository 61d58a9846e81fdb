/**
 * Trainers dropped before their last step, never closed (run by compiled_step_test.ts in a process of its own, with
 * `--expose-gc`): first one trainer stopped at `steps - 2` and closed, to measure what closing frees (its replay),
 * then `runs` trainers stopped there and dropped. After each, it collects garbage (letting finalizers run) and
 * prints one JSON line with the device's live buffers.
 *
 *   deno run -A --v8-flags=--expose-gc tests/train/_abandoned_trainers.ts wasm 6 12 1234 5678
 */
import { getBackend, setDefaultDevice } from "../../mod.ts";
import type { DeviceName } from "../../lib/ir/node.ts";
import { Trainer } from "../../lib/train/mod.ts";
import { mlpSetup } from "./_setup.ts";

const device = Deno.args[0] as DeviceName;
const [runs, steps, initSeed, runSeed] = Deno.args.slice(1).map(Number);
const exposed = (globalThis as { gc?: () => void }).gc;
if (exposed === undefined) throw new Error("run with --v8-flags=--expose-gc");
const gc: () => void = exposed;
setDefaultDevice(device);
const be = await getBackend(device);

async function collect(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 0));
  }
  return be.stats().liveBuffers;
}

async function stopped() {
  const t = new Trainer({ ...mlpSetup({ initSeed, runSeed, steps }), readEvery: 4, stopOnNonFinite: false });
  await t.run({ until: steps - 2 });
  if (t.compileStats.replayed === 0) throw new Error(`no step replayed: ${JSON.stringify(t.compileStats)}`);
  return t;
}

const closed = await stopped();
const live = be.stats().liveBuffers;
closed.close();
console.log(JSON.stringify({ replayBuffers: live - be.stats().liveBuffers }));
for (let run = 1; run <= runs; run++) {
  await stopped();
  console.log(JSON.stringify({ run, liveBuffers: await collect() }));
}
