/**
 * Turns of the event loop during long computations.
 *
 * Device memory of a tensor nobody references any more is released by a `FinalizationRegistry` callback, and
 * hash-consed IR nodes leave their table the same way. Those callbacks run only when the JavaScript engine gets
 * back to the event loop. A loop whose every `await` resolves at once (the CPU backend, or a WebGPU loop that never
 * reads back) never gets there, so it would keep every buffer it ever made alive. {@link yieldIfDue} hands control
 * to the event loop for one turn when {@link YIELD_INTERVAL_MS} of work have passed since the last turn; `realize`
 * calls it, so every computation that goes through it keeps memory flat.
 *
 * @module
 */

/**
 * Milliseconds of work between two turns of the event loop. A turn costs about 2 ms (the timers' granularity; a
 * message through a `MessageChannel` is cheaper but is delivered without a real turn, so finalizers do not run),
 * so this keeps the cost near 2% while bounding what a loop can hold to what it allocates in 100 ms.
 */
export const YIELD_INTERVAL_MS = 100;

let lastTurn = performance.now();

/** One turn of the event loop. */
function nextTurn(): Promise<void> {
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
