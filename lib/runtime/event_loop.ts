/**
 * Turns of the event loop during long computations.
 *
 * Device memory of a tensor nobody references any more is released by a `FinalizationRegistry` callback, and
 * hash-consed IR nodes leave their table the same way. Those callbacks run only when the JavaScript engine gets
 * back to the event loop. A loop whose every `await` resolves at once (the CPU backend, or a WebGPU loop that never
 * reads back) never gets there, so it would keep every buffer it ever made alive. {@link yieldIfDue} hands control
 * to the event loop for one turn when {@link YIELD_INTERVAL_MS} of work have passed since the last turn; `realize`
 * calls it, so a loop that goes through it does not grow without end.
 *
 * That does not bound the memory to what a loop allocates in those milliseconds: a callback runs only after the
 * engine has collected its tensor, and the engine collects when its JavaScript heap grows, which device memory
 * does not make it do. A loop that dropped a 16 MiB result at each step held up to 1,200 MiB of them on wasm (and
 * 1,264 MiB on WebGPU) before collections released them. Memory is released at once, and then stays at what is
 * live, when a tensor is disposed: `t.dispose()`, or `using t = ...` for the end of a block.
 *
 * @module
 */

/**
 * Milliseconds of work between two turns of the event loop. A turn through `setImmediate` costs about 0.1 ms (one
 * through `setTimeout(…, 0)` about 2 ms, the timers' granularity; a message through a `MessageChannel` is
 * delivered without a real turn, so finalizers do not run), so this keeps the cost well under 1%.
 */
export const YIELD_INTERVAL_MS = 100;

let lastTurn = performance.now();

/**
 * One turn of the event loop: `setImmediate` (Deno, Node) runs its callback after the loop's pending work, the
 * finalizers' cleanup included; where it is missing (browsers), a zero timer.
 */
function nextTurn(): Promise<void> {
  const g = globalThis as { setImmediate?: (f: () => void) => unknown };
  if (typeof g.setImmediate === "function") return new Promise((resolve) => g.setImmediate!(resolve));
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Lets the event loop run (finalizers included) when more than {@link YIELD_INTERVAL_MS} have passed since it last
 * did; otherwise resolves at once.
 *
 * @example
 * ```ts
 * import { yieldIfDue } from "./event_loop.ts";
 * for (let i = 0; i < 1000; i++) await yieldIfDue();
 * ```
 */
export async function yieldIfDue(): Promise<void> {
  const now = performance.now();
  if (now - lastTurn < YIELD_INTERVAL_MS) return;
  await nextTurn();
  lastTurn = performance.now();
}
