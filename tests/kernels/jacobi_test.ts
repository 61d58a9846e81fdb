/**
 * The hand-written Jacobi kernels: the round (its circle ordering, the WGSL against its host twin, its wasm form bit for
 * bit against the host twin), the whole sweep of the CPU devices (its wasm form bit for bit against the round's host
 * twin, its rounds waiting for each other) and the one-kernel solve.
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { type Tensor, tensor } from "../../mod.ts";
import { jacobiSweepModule, jacobiSweepWasm, SWEEP_CONTROL_WORDS } from "../../lib/codegen/wasm_linalg.ts";
import { getBackend } from "../../lib/runtime/realize.ts";
import { HAS_RELAXED_SIMD, type WasmBackend } from "../../lib/runtime/wasm.ts";
import type { WasmFeatures } from "../../lib/ir/ops.ts";
import { runKernels } from "../../lib/tensor/custom.ts";
import {
  COUNTER_RESET_WGSL,
  counterResetHost,
  JACOBI_TINY,
  JACOBI_ZERO_REL,
  jacobiParams,
  jacobiRoundHost,
  jacobiRoundWGSL,
  jacobiSweepHost,
  nextSlot,
} from "../../kernels/jacobi.wgsl.ts";
import {
  JACOBI_SOLVE_WGSL,
  jacobiSolveHost,
  jacobiSolveParams,
  solveShape,
} from "../../kernels/jacobi_solve.wgsl.ts";
import { assertClose, debugLines, TEST_SEED, TestRng } from "../_helpers.ts";
import { joinLate } from "./_late_worker.ts";

Deno.test("jacobi ordering: one sweep meets every pair once and brings every record home", () => {
  for (const slots of [2, 4, 10, 64]) {
    let pos = Array.from({ length: slots }, (_, i) => i); // pos[slot] = record
    const met = new Set<string>();
    for (let r = 0; r < slots - 1; r++) {
      for (let w = 0; w < slots / 2; w++) {
        const a = pos[w], b = pos[slots - 1 - w];
        const key = `${Math.min(a, b)}-${Math.max(a, b)}`;
        equal(met.has(key), false, `pair ${key} met twice (slots ${slots})`);
        met.add(key);
      }
      const next = new Array<number>(slots);
      pos.forEach((rec, s) => (next[nextSlot(s, slots)] = rec));
      pos = next;
    }
    equal(met.size, (slots * (slots - 1)) / 2, `all pairs met (slots ${slots})`);
    deepEqual(pos, Array.from({ length: slots }, (_, i) => i), `records back home (slots ${slots})`);
  }
});

Deno.test("jacobi round: WGSL equals the host twin and orthogonalises each pair", async () => {
  const rng = new TestRng(901);
  const layout = { rows: 100, stride: 132, slots: 6 }; // longer than one pass of 64 lanes
  const tol = 1e-6;
  const data = rng.normals(layout.slots * layout.stride);
  const outs: Float32Array[] = [];
  const counts: number[] = [];
  for (const [device, wg] of [["cpu", 64], ["webgpu", 8], ["webgpu", 64]] as const) {
    const x = tensor(data, { shape: [layout.slots, layout.stride], device });
    const params = tensor(jacobiParams(layout, tol), { dtype: "u32", device });
    const floor = tensor([JACOBI_TINY], { device });
    const [y, cnt] = await runKernels([x, params, floor], [
      { shape: [layout.slots, layout.stride], dtype: "f32" },
      { shape: [1], dtype: "u32" },
    ], [
      { name: "reset", wgsl: COUNTER_RESET_WGSL, dispatch: [1, 1, 1], bindings: [4], host: counterResetHost },
      {
        name: "round",
        wgsl: jacobiRoundWGSL(wg),
        dispatch: [layout.slots / 2, 1, 1],
        bindings: [0, 3, 4, 1, 2],
        host: jacobiRoundHost(layout, tol),
      },
    ]);
    outs.push(await y.data() as Float32Array);
    counts.push((await cnt.data())[0]);
  }
  assertClose(outs[1], outs[0], { rtol: 1e-4, atol: 1e-5, what: "webgpu (wg 8) vs host twin" });
  assertClose(outs[2], outs[0], { rtol: 1e-4, atol: 1e-5, what: "webgpu (wg 64) vs host twin" });
  deepEqual(counts, [3, 3, 3], `every random pair rotated (TEST_SEED=${TEST_SEED})`);
  // Pair (w, slots-1-w) ends at (next(w), next(slots-1-w)); their first `rows` entries are now orthogonal.
  const y = outs[1];
  for (let w = 0; w < layout.slots / 2; w++) {
    const p = nextSlot(w, layout.slots) * layout.stride;
    const q = nextSlot(layout.slots - 1 - w, layout.slots) * layout.stride;
    let dot = 0, np = 0, nq = 0;
    for (let i = 0; i < layout.rows; i++) {
      dot += y[p + i] * y[q + i];
      np += y[p + i] ** 2;
      nq += y[q + i] ** 2;
    }
    const cos = Math.abs(dot) / Math.sqrt(np * nq);
    if (cos > 1e-5) throw new Error(`pair ${w}: cos ${cos} after rotation (TEST_SEED=${TEST_SEED})`);
  }
});

Deno.test("jacobi round: a column at or below the zero floor is left alone and not counted", async () => {
  const rng = new TestRng(903);
  const layout = { rows: 8, stride: 8, slots: 4 };
  const data = rng.normals(layout.slots * layout.stride);
  // Record 3 (paired with record 0 in the first round) has ‖x‖² = 64·1e-8², below a floor of 1e-14.
  for (let i = 0; i < 8; i++) data[3 * 8 + i] = 1e-8;
  for (const device of ["cpu", "webgpu"] as const) {
    const x = tensor(data, { shape: [layout.slots, layout.stride], device });
    const params = tensor(jacobiParams(layout, 1e-6), { dtype: "u32", device });
    const floor = tensor([1e-14], { device });
    const [y, cnt] = await runKernels([x, params, floor], [
      { shape: [layout.slots, layout.stride], dtype: "f32" },
      { shape: [1], dtype: "u32" },
    ], [
      { name: "reset", wgsl: COUNTER_RESET_WGSL, dispatch: [1, 1, 1], bindings: [4], host: counterResetHost },
      {
        name: "round",
        wgsl: jacobiRoundWGSL(8),
        dispatch: [layout.slots / 2, 1, 1],
        bindings: [0, 3, 4, 1, 2],
        host: jacobiRoundHost(layout, 1e-6),
      },
    ]);
    const out = await y.data() as Float32Array;
    // Records 0 and 3 keep their values (position 0 stays, position 3 moves to 1); 1 and 2 are rotated.
    deepEqual(Array.from(out.subarray(0, 8)), Array.from(data.subarray(0, 8)), `${device}: record 0`);
    deepEqual(Array.from(out.subarray(8, 16)), Array.from(data.subarray(24, 32)), `${device}: record 3`);
    equal((await cnt.data())[0], 1, `${device}: one counted rotation (TEST_SEED=${TEST_SEED})`);
  }
});

Deno.test("jacobi solve (one kernel): WGSL and host twin both give W = U diag(σ) Vᵀ with orthonormal U, V", async () => {
  const rng = new TestRng(902);
  // 21 x 9 with one zero column (its U column comes from the completion); an odd count adds a padding record.
  const layout = { rows: 21, cols: 9, sweeps: 30, tol: Math.sqrt(21) * 2 ** -24 };
  const { p4r, stride, slots } = solveShape(layout);
  const w = rng.normals(layout.rows * layout.cols).map((x, i) => (i % layout.cols === 4 ? 0 : x));
  const data = new Float32Array(slots * stride);
  for (let j = 0; j < layout.cols; j++) {
    for (let i = 0; i < layout.rows; i++) data[j * stride + i] = w[i * layout.cols + j];
    data[j * stride + p4r + j] = 1;
  }
  const sigmas: number[][] = [];
  for (const device of ["cpu", "webgpu"] as const) {
    const x = tensor(data, { shape: [slots, stride], device });
    const params = tensor(jacobiSolveParams(layout), { dtype: "u32", device });
    const [y] = await runKernels([x, params], [{ shape: [slots, stride], dtype: "f32" }], [
      {
        name: "solve",
        wgsl: JACOBI_SOLVE_WGSL,
        dispatch: [1, 1, 1],
        bindings: [2, 0, 1],
        host: jacobiSolveHost(layout),
      },
    ]);
    const r = await y.data() as Float32Array;
    const col = (j: number, off: number, n: number) =>
      Array.from(r.subarray(j * stride + off, j * stride + off + n));
    const sig = Array.from({ length: layout.cols }, (_, j) => r[j * stride + stride - 4]);
    sigmas.push([...sig].sort((a, b) => b - a));
    equal(sig[4], 0, `${device}: the zero column has σ = 0`);
    for (const [name, off, n] of [["U", 0, layout.rows], ["V", p4r, layout.cols]] as const) {
      for (let a = 0; a < layout.cols; a++) {
        for (let b = 0; b < layout.cols; b++) {
          const d = col(a, off, n).reduce((s, v, i) => s + v * col(b, off, n)[i], 0);
          if (Math.abs(d - (a === b ? 1 : 0)) > 2e-5) {
            throw new Error(`${device}: ${name}ᵀ${name} [${a}, ${b}] = ${d} (TEST_SEED=${TEST_SEED})`);
          }
        }
      }
    }
    // W = U diag(σ) Vᵀ.
    for (let i = 0; i < layout.rows; i++) {
      for (let k = 0; k < layout.cols; k++) {
        let v = 0;
        for (let j = 0; j < layout.cols; j++) v += r[j * stride + i] * sig[j] * r[j * stride + p4r + k];
        if (Math.abs(v - w[i * layout.cols + k]) > 1e-4) {
          throw new Error(`${device}: reconstruction [${i}, ${k}] = ${v}, want ${w[i * layout.cols + k]}`);
        }
      }
    }
  }
  assertClose(sigmas[1], sigmas[0], { rtol: 1e-5, atol: 1e-5, what: "σ on webgpu vs the host twin" });
});

/**
 * Records for a round: `m` matrix rows (zero-padded to the layout's rows) of Gaussian columns, among them zero
 * columns, a column below the zero floor, columns that are multiples of others (rank-deficient) and negative
 * zeros; the carried part random.
 */
function roundRecords(rng: TestRng, m: number, layout: { rows: number; stride: number; slots: number }) {
  const { rows, stride, slots } = layout;
  const data = new Float32Array(slots * stride);
  for (let j = 0; j < slots; j++) {
    const kind = rng.int(0, 9);
    for (let i = 0; i < stride; i++) {
      if (i >= m && i < rows) continue;
      const src = j > 0 ? data[rng.int(0, j - 1) * stride + i] : 0;
      data[j * stride + i] = i >= rows
        ? rng.normal()
        : kind === 0
        ? 0
        : kind === 1
        ? -0
        : kind === 2
        ? 1e-12 * rng.normal()
        : kind === 3
        ? 3 * src
        : rng.normal();
    }
  }
  let sum = 0;
  for (let j = 0; j < slots; j++) for (let i = 0; i < rows; i++) sum += data[j * stride + i] ** 2;
  return { data, floor: Math.max(JACOBI_TINY, JACOBI_ZERO_REL * sum) };
}

/** The bits of float32 values (deepEqual takes -0 for 0). */
function bits(a: ArrayLike<number>): Uint32Array {
  return new Uint32Array(Float32Array.from(a).buffer);
}

/**
 * The host twin's rounds, `sweeps` sweeps of them from `data` (ping-ponging between fresh arrays, the counter reset
 * when a sweep starts): the reference of the sweep kernels. Returns the records and the last sweep's count.
 */
function roundsByHost(
  data: Float32Array,
  layout: { rows: number; stride: number; slots: number },
  tol: number,
  floor: number,
  rounds: { from: number; to: number },
) {
  let src = Float32Array.from(data);
  const cnt = new Uint32Array(1);
  for (let r = rounds.from; r < rounds.to; r++) {
    if (r % (layout.slots - 1) === 0) cnt[0] = 0;
    const dst = new Float32Array(data.length);
    jacobiRoundHost(layout, tol)([src, dst, cnt, jacobiParams(layout, tol), Float32Array.of(floor)]);
    src = dst;
  }
  return { records: src, count: cnt[0] };
}

/**
 * Records that no rotation of a round touches, whatever their positions: record j is non-zero only in the rows i
 * with i mod slots = j (normal values, and in every third record one below the smallest normal float32), so every
 * product of two records' entries has a zero factor and every p·q is exactly ±0; the other entries are +0 or −0 at
 * random. The host's unrotated update turns some −0 entries into +0 (x − 0·(y + 0·x) with x = −0 and y negative).
 */
function orthogonalRecords(rng: TestRng, layout: { rows: number; stride: number; slots: number }) {
  const { rows, stride, slots } = layout;
  const data = new Float32Array(slots * stride);
  for (let j = 0; j < slots; j++) {
    for (let i = 0; i < stride; i++) {
      const own = i < rows && i % slots === j;
      data[j * stride + i] = own
        ? (j % 3 === 2 && i < slots ? 3e-39 : 1) * rng.normal()
        : rng.next() < 0.5
        ? -0
        : 0;
    }
  }
  return data;
}

Deno.test("jacobi sweep: the wasm form equals the host twin's rounds bit for bit, on 1 or 2 threads", async () => {
  const rng = new TestRng(905);
  const wasm = await getBackend("wasm") as WasmBackend;
  const threadsBefore = wasm.threads;
  const sweeps = 2;
  try {
    // [matrix rows, columns, layout, records]: an odd column count leaves a zero record (as svd pads); rows padded to
    // a multiple of 4; records without a carried part (stride = rows) as svd sweeps them when U is not formed; pair
    // counts of every remainder modulo 4 (the pairs whose dot products one pass computes); the rounds of the last
    // four have enough work to be split over 2 threads. "orthogonal": no pair is rotated (see orthogonalRecords).
    for (
      const [m, cols, layout, kind] of [
        [7, 1, { rows: 8, stride: 16, slots: 2 }, "gaussian"],
        [33, 9, { rows: 36, stride: 72, slots: 10 }, "gaussian"],
        [61, 64, { rows: 64, stride: 128, slots: 64 }, "gaussian"],
        [22, 14, { rows: 24, stride: 24, slots: 14 }, "orthogonal"],
        [172, 171, { rows: 172, stride: 344, slots: 172 }, "gaussian"],
        [172, 172, { rows: 172, stride: 172, slots: 172 }, "gaussian"],
        [201, 181, { rows: 204, stride: 392, slots: 182 }, "gaussian"],
        [130, 126, { rows: 132, stride: 132, slots: 126 }, "orthogonal"],
      ] as const
    ) {
      const data = kind === "orthogonal" ? orthogonalRecords(rng, layout) : roundRecords(rng, m, layout).data;
      const { rows, stride, slots } = layout;
      if (kind === "gaussian") {
        // Columns repeated exactly (their carried parts differ), and the padding records zero.
        for (let j = 2; j < cols; j += 7) {
          data.copyWithin(j * stride, (j - 1) * stride, (j - 1) * stride + rows);
        }
        data.fill(0, cols * stride);
      }
      let sum = 0;
      for (let j = 0; j < slots; j++) for (let i = 0; i < rows; i++) sum += data[j * stride + i] ** 2;
      const floor = Math.max(JACOBI_TINY, JACOBI_ZERO_REL * sum);
      const tol = 0.01 + 0.1 * rng.next();
      const want = roundsByHost(data, layout, tol, floor, { from: 0, to: sweeps * (slots - 1) });
      // The cpu device runs the sweep's host twin: the same rounds.
      const cpuHost = jacobiSweepHost(layout, tol);
      // Dot products summed by fused multiply-add and by multiply then add, where the runtime has the former.
      const variants = [false, true].filter((fma) => !fma || HAS_RELAXED_SIMD).flatMap((fma) =>
        [1, 2].map((threads) => ({ fma, threads }))
      );
      for (const { fma, threads } of variants) {
        wasm.setThreads(threads);
        const x = tensor(data, { shape: [slots, stride], device: "wasm" });
        const params = tensor(jacobiParams(layout, tol), { dtype: "u32", device: "wasm" });
        const zero = tensor([floor], { device: "wasm" });
        // As jacobiSweeps launches them: buffers 0 records, 1 parameters, 2 floor, 3 X, 4 Y, 5 counter, 6 control.
        const sweep = (src: number, first: number) => [{
          name: "reset",
          wgsl: null,
          dispatch: [1, 1, 1] as const,
          bindings: [5, 6],
          host: (b: (Float32Array | Int32Array | Uint32Array)[]) => b.forEach((a) => a.fill(0)),
        }, {
          name: "sweep",
          wgsl: null,
          dispatch: [1, 1, 1] as const,
          bindings: [src, first, 7 - first, 5, 1, 2, 6],
          host: () => {
            throw new Error("the host twin ran on the wasm device");
          },
          wasm: (features: WasmFeatures) => jacobiSweepWasm(layout, { ...features, relaxedSimd: fma }),
        }];
        let outs: Tensor[] = [];
        const lines = await debugLines(async () => {
          outs = await runKernels([x, params, zero], [
            { shape: [slots, stride], dtype: "f32" },
            { shape: [slots, stride], dtype: "f32" },
            { shape: [1], dtype: "u32" },
            { shape: [SWEEP_CONTROL_WORDS], dtype: "u32" },
          ], [...sweep(0, 3), ...sweep(3, 4)]);
        });
        const what = `${m} x ${cols} (${kind}) in ${
          JSON.stringify(layout)
        }, ${threads} thread(s), fma ${fma} (TEST_SEED=${TEST_SEED})`;
        // Two sweeps of an odd number of rounds: the second ends in Y.
        deepEqual(bits(await outs[1].data()), bits(want.records), `records after ${sweeps} sweeps, ${what}`);
        equal((await outs[2].data())[0], want.count, `counted rotations of the last sweep, ${what}`);
        const split = lines.filter((l) => /^wasm sweep 2 items x2/.test(l)).length;
        equal(split, threads === 2 && slots > 64 ? sweeps : 0, `sweeps split over 2 threads, ${what}`);
        if (kind === "orthogonal") equal(want.count, 0, `no rotation, ${what}`);
        if (threads === 1 && !fma) {
          // The sweep's host twin (what the cpu device runs) gives the same.
          const hx = [Float32Array.from(data), new Float32Array(data.length), new Float32Array(data.length)];
          const cnt = new Uint32Array(1);
          for (const [src, a, b] of [[0, 1, 2], [1, 2, 1]]) {
            cnt[0] = 0;
            cpuHost([hx[src], hx[a], hx[b], cnt, jacobiParams(layout, tol), Float32Array.of(floor)]);
          }
          deepEqual(bits(hx[2]), bits(want.records), `records of the sweep's host twin, ${what}`);
          equal(cnt[0], want.count, `count of the sweep's host twin, ${what}`);
        }
      }
    }
  } finally {
    wasm.setThreads(threadsBefore);
  }
});

/** Byte addresses of a sweep's buffers of `n` floats of records in a test memory. */
function sweepAddresses(n: number) {
  return {
    src: 0,
    a: 4 * n,
    b: 8 * n,
    cnt: 12 * n,
    params: 12 * n + 16,
    floor: 12 * n + 32,
    ctl: 12 * n + 48,
  };
}

Deno.test("jacobi sweep: a thread of the wasm sweep starts a round only once every pair of the one before is done", async () => {
  // A worker joins a sweep cut into two parts whose round 0 is done but for part 1 (claimed, as it were, by a thread
  // that lost its core): it must wait (and goes to sleep), claiming and writing nothing of round 1, until that part
  // is counted finished, then do rounds 1 to slots − 2 alone. Bit-exact comparisons on a real pool catch a round
  // that starts early only when a thread falls a round behind (round r + 1's pair w reads what round r's pairs
  // w − 1 and w + 1 wrote), which depends on the host's load; this test does not.
  const rng = new TestRng(906);
  // Long records, so that a round of 5 pairs is worth two parts.
  const layout = { rows: 800, stride: 1600, slots: 10 };
  const { stride, slots } = layout;
  const { data, floor } = roundRecords(rng, 797, layout);
  const kernel = jacobiSweepWasm(layout, { threads: 2, relaxedSimd: false });
  equal(kernel.items, 2, "two parts");
  const tol = 0.05;
  const round0 = roundsByHost(data, layout, tol, floor, { from: 0, to: 1 }).records;
  const want = roundsByHost(round0, layout, tol, floor, { from: 1, to: slots - 1 });
  const mem = new WebAssembly.Memory({ initial: 4, maximum: 4, shared: true });
  const n = slots * stride;
  const at = sweepAddresses(n);
  new Float32Array(mem.buffer, at.src, n).set(data);
  new Float32Array(mem.buffer, at.a, n).set(round0);
  new Uint32Array(mem.buffer, at.params, 4).set(jacobiParams(layout, tol));
  new Float32Array(mem.buffer, at.floor, 1)[0] = floor;
  const args = [0, 1, 0, at.src, at.a, at.b, at.cnt, at.params, at.floor, at.ctl];
  const ctl = await joinLate(kernel.bytes, mem, args, at.ctl, "round", () => {
    deepEqual(
      Array.from(new Float32Array(mem.buffer, at.b, n)),
      new Array(n).fill(0),
      "round 1 wrote records",
    );
  });
  const what = `(TEST_SEED=${TEST_SEED})`;
  // Rounds 1..slots-2 alone: the last (even) one writes a.
  deepEqual(bits(new Float32Array(mem.buffer, at.a, n)), bits(want.records), `records ${what}`);
  equal(new Uint32Array(mem.buffer, at.cnt, 1)[0], want.count, `counted rotations ${what}`);
  deepEqual(
    Array.from(ctl.subarray(0, 4)),
    [2 * (slots - 1), 0, slots - 1, slots - 1],
    `control words ${what}`,
  );
});

Deno.test("jacobi sweep: a thread of the wasm sweep whose round never ends traps instead of waiting for ever", () => {
  // Part 1 of round 0 is claimed by a thread that never counts it finished (one that trapped inside it): with a
  // bound of 3 timed-out sleeps the joining thread must trap, not hang, and must not have started round 1.
  const layout = { rows: 8, stride: 8, slots: 10 };
  const { slots, stride } = layout;
  const n = slots * stride;
  const mem = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  const rng = new TestRng(907);
  const at = sweepAddresses(n);
  new Float32Array(mem.buffer, at.a, n).set(Float32Array.from({ length: n }, () => rng.normal()));
  new Uint32Array(mem.buffer, at.params, 4).set(jacobiParams(layout, 0.05));
  const ctl = new Int32Array(mem.buffer, at.ctl, SWEEP_CONTROL_WORDS);
  ctl.set([1, 0, 1, 1]);
  const run = new WebAssembly.Instance(new WebAssembly.Module(jacobiSweepModule(2, { giveUp: 3 })), {
    env: { mem },
  })
    .exports
    .run as (...a: number[]) => void;
  const t0 = performance.now();
  throws(
    () => run(0, 1, 0, at.src, at.a, at.b, at.cnt, at.params, at.floor, at.ctl),
    (e: unknown) => e instanceof WebAssembly.RuntimeError && /unreachable/.test(e.message),
  );
  const ms = performance.now() - t0;
  ok(ms >= 3, `gave up after ${ms.toFixed(1)} ms, before its 3 sleeps of 1 ms`);
  deepEqual(
    [Atomics.load(ctl, 0), Atomics.load(ctl, 2), Atomics.load(ctl, 3)],
    [1, 1, 1],
    "round 1 was claimed",
  );
  deepEqual(Array.from(new Float32Array(mem.buffer, at.b, n)), new Array(n).fill(0), "round 1 wrote records");
});
