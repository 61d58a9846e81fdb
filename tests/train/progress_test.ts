import assert from "node:assert/strict";
import { formatDuration, Progress } from "../../lib/train/progress.ts";
import { refusedOptions, TestRng } from "../_helpers.ts";

/** A fake clock and output sink. */
function harness() {
  const state = { now: 0, writes: [] as string[] };
  return {
    state,
    options: { now: () => state.now, write: (text: string) => void state.writes.push(text), columns: 120 },
  };
}

Deno.test("progress: silent when disabled (stderr not a terminal)", () => {
  const { state, options } = harness();
  const progress = new Progress(10, { ...options, enabled: false });
  for (let i = 1; i <= 10; i++) {
    state.now += 500;
    progress.update(i, { loss: 1 / i });
  }
  progress.done();
  assert.deepEqual(state.writes, []);
});

Deno.test("progress: redraws are throttled, the final step is always drawn", () => {
  const { state, options } = harness();
  const total = 1000;
  const progress = new Progress(total, { ...options, enabled: true, minIntervalMs: 100 });
  // 1000 steps over 2 simulated seconds: at most 2000 / 100 + 1 throttled draws plus the final one.
  for (let i = 1; i <= total; i++) {
    state.now += 2;
    progress.update(i, { loss: 2 / i });
  }
  const draws = state.writes.filter((w) => w.startsWith("\r"));
  assert.ok(draws.length >= 20 && draws.length <= 22, `${draws.length} redraws`);
  assert.match(draws.at(-1)!, /1000\/1000/);
  assert.match(draws.at(-1)!, /100%/);
  progress.done();
  assert.equal(state.writes.at(-1), "\n");
});

Deno.test("progress: rate, ETA and values in the rendered line", () => {
  const { state, options } = harness();
  const progress = new Progress(100, { ...options, enabled: true, label: "train" });
  state.now = 5000;
  progress.update(25, { loss: 0.123456, phase: "warmup" });
  const line = progress.render();
  // 25 steps in 5 s = 5 it/s, 75 steps left = 15 s.
  assert.match(line, /^train \[/);
  assert.match(line, /25\/100/);
  assert.match(line, /25%/);
  assert.match(line, /loss 0\.1235/);
  assert.match(line, /phase warmup/);
  assert.match(line, /5 it\/s/);
  assert.match(line, /ETA 15s/);
  assert.ok(line.length < 120);
  progress.tick(5);
  assert.equal(progress.step, 30);
});

Deno.test("progress: log prints above the bar; formatDuration", () => {
  const { state, options } = harness();
  const progress = new Progress(4, { ...options, enabled: true });
  progress.update(1);
  progress.log("checkpoint saved");
  assert.ok(state.writes.some((w) => w.includes("checkpoint saved\n")));
  assert.match(state.writes.at(-1)!, /1\/4/, "bar redrawn after the message");
  assert.equal(formatDuration(42), "42s");
  assert.equal(formatDuration(187), "3m07s");
  assert.equal(formatDuration(7500), "2h05m");
  assert.equal(formatDuration(NaN), "?");
  assert.throws(() => new Progress(0), /positive/);
});

Deno.test("progress: a total that is not a positive integer is refused, naming the value", () => {
  const { options } = harness();
  const rng = new TestRng(31);
  const fraction = rng.int(1, 50) + 0.5;
  for (const bad of [Infinity, -Infinity, NaN, 0, -rng.int(1, 50), fraction]) {
    assert.throws(
      () => new Progress(bad, options),
      (err: unknown) =>
        err instanceof RangeError && err.message === `Progress: total must be a positive integer, got ${bad}`,
    );
  }
  const total = rng.int(1, 50);
  assert.match(new Progress(total, { ...options, minIntervalMs: 0 }).render(), new RegExp(` 0/${total} `));
});

Deno.test("progress: a step that is not an integer >= 0 is refused, naming the value", () => {
  const { state, options } = harness();
  const rng = new TestRng(32);
  const total = rng.int(5, 50);
  const progress = new Progress(total, { ...options, enabled: true, minIntervalMs: 0 });
  for (const bad of [NaN, -rng.int(1, 50), rng.int(0, 3) + 0.5, Infinity]) {
    assert.throws(
      () => progress.update(bad),
      (err: unknown) =>
        err instanceof RangeError &&
        err.message === `Progress.update: step must be an integer >= 0, got ${bad}`,
    );
  }
  assert.throws(() => progress.tick(-1), /Progress\.update: step must be an integer >= 0, got -1$/);
  // Past the total is clamped to it, as documented.
  progress.update(total + 1);
  assert.match(state.writes.at(-1)!, new RegExp(`\\] ${total}/${total}  100% `));
});

Deno.test("progress: an unknown option or a bad value is refused by name", async () => {
  const { options } = harness();
  // Dropped: { lable } drew no label, and a NaN minIntervalMs never redrew before the last step.
  await refusedOptions(
    () => new Progress(4, { ...options, lable: "train" } as never),
    /^Progress: unknown option "lable"$/,
  );
  for (const bad of [NaN, -1]) {
    await refusedOptions(
      () => new Progress(4, { ...options, minIntervalMs: bad }),
      new RegExp(`^Progress: option "minIntervalMs" must be .*, got ${bad}$`),
    );
  }
  await refusedOptions(
    () => new Progress(4, { ...options, columns: 0 }),
    /^Progress: option "columns" must be >= 1, got 0$/,
  );
  assert.match(
    new Progress(4, { ...options, label: "train", minIntervalMs: 0 }).render(),
    /^train \[\.+\] 0\/4 /,
  );
});
