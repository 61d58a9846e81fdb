/** The hand-written Householder kernels: WGSL and wasm against the host twins, and the guard that skips them. */
import { deepEqual, equal } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { householderColumns } from "../../lib/linalg/qr.ts";
import { qrJobWasm } from "../../lib/codegen/wasm_householder.ts";
import {
  hhFirstHost,
  hhStepHost,
  householderParams,
  qInitHost,
  qStepHost,
  reflectorCount,
} from "../../kernels/householder.wgsl.ts";
import { getBackend } from "../../lib/runtime/realize.ts";
import type { WasmBackend } from "../../lib/runtime/wasm.ts";
import type { F32 } from "../../mod.ts";
import { assertClose, debugLines, TEST_SEED, TestRng } from "../_helpers.ts";
import { joinLate } from "./_late_worker.ts";

Deno.test("householder kernels: webgpu (workgroups of 8, 64, 256) equals the host twins", async () => {
  const rng = new TestRng(902);
  for (const [rows, cols] of [[23, 9], [7, 15], [300, 5]]) {
    const data = rng.normals(rows * cols);
    const run = async (device: "webgpu" | "cpu", wg?: number) => {
      const x = tensor(data, { shape: [cols, rows], device }) as unknown as F32;
      const f = await householderColumns(x, rows, cols, { wantQ: true, wg });
      return [await f.factored.data(), await f.taus.data(), await f.q!.data()] as Float32Array[];
    };
    const want = await run("cpu");
    for (const wg of [8, 64, 256]) {
      const got = await run("webgpu", wg);
      for (let i = 0; i < 3; i++) {
        assertClose(got[i], want[i], {
          rtol: 1e-4,
          atol: 1e-5,
          what: `${rows}x${cols} wg ${wg} output ${i}`,
        });
      }
    }
  }
});

Deno.test("householder kernels: a zero guard skips every launch but the copy, a non-zero one runs them", async () => {
  const rng = new TestRng(903);
  const data = rng.normals(8 * 5);
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const x = tensor(data, { shape: [5, 8], device }) as unknown as F32;
    for (const flag of [0, 1]) {
      const guard = tensor(Uint32Array.of(flag), { dtype: "u32", device });
      let f: Awaited<ReturnType<typeof householderColumns>> | null = null;
      const lines = await debugLines(async () =>
        f = await householderColumns(x, 8, 5, { wantQ: true, guard })
      );
      const [factored, taus, q] = [await f!.factored.data(), await f!.taus.data(), await f!.q!.data()];
      const what = `${device}, guard ${flag}`;
      if (flag === 0) {
        // The matrix is copied; τ and Q are left as cleared.
        deepEqual(bits(factored), bits(data), `${what}: factored = the input`);
        deepEqual(Array.from(taus), new Array(5).fill(0), `${what}: τ untouched (zeros)`);
        deepEqual(Array.from(q), new Array(40).fill(0), `${what}: Q untouched (zeros)`);
        if (device === "wasm") {
          // The CPU devices read the guard once and launch nothing else (the cpu device does not print its launches).
          const launched = lines.filter((l) => /^wasm qr_/.test(l)).map((l) => l.split(" ")[1]);
          deepEqual(launched, ["qr_copy"], `${what}: launches`);
        }
      } else {
        const plain = await householderColumns(x, 8, 5, { wantQ: true });
        assertClose(q, await plain.q!.data(), {
          rtol: 1e-6,
          atol: 1e-7,
          what: `${what}: guard 1 = unguarded`,
        });
      }
    }
  }
});

Deno.test("householder kernels: columns below the smallest normal float32 give H = I on every device", async () => {
  // Entries under 1.2e-38 count as zero: with them scaled into v, 1/(α − β) overflowed float32 (a column of
  // 1e-41 gives 1/(α − β) near 1e40) and Q became NaN. Both columns here are such, so Q is exactly I.
  const rows = 16, cols = 2;
  const data = Float32Array.from({ length: rows * cols }, (_, i) => (i % 3 - 1) * 1e-41 * (1 + (i % 5)));
  const identity = Float32Array.from({ length: cols * rows }, (_, i) => i % (rows + 1) === 0 ? 1 : 0);
  for (
    const [device, wg] of [["cpu", undefined], ["wasm", undefined], ["webgpu", 8], ["webgpu", 64]] as const
  ) {
    const x = tensor(data, { shape: [cols, rows], device }) as unknown as F32;
    const f = await householderColumns(x, rows, cols, { wantQ: true, wg });
    deepEqual(Array.from(await f.taus.data()), [0, 0], `${device} wg ${wg}: τ`);
    deepEqual(Array.from(await f.q!.data()), Array.from(identity), `${device} wg ${wg}: Q`);
  }
});

/** The bits of float32 values (deepEqual takes -0 for 0). */
function bits(a: ArrayLike<number>): Uint32Array {
  return new Uint32Array(Float32Array.from(a).buffer);
}

Deno.test("householder kernels: the wasm job of all steps equals the cpu device bit for bit, on 1 or 2 threads", async () => {
  const rng = new TestRng(904);
  const wasm = await getBackend("wasm") as WasmBackend;
  const threadsBefore = wasm.threads;
  // [rows, cols, what]: the first is large enough for its first steps to be split over two threads.
  const cases: [number, number, string][] = [
    [400, 120, "tall"],
    [31, 31, "square"],
    [50, 1, "one column"],
    [5, 9, "wide, 5 rows"],
    [7, 3, "7 rows"],
    [24, 10, "a zero column and one below the smallest normal float32"],
    [23, 7, "terms that cancel"],
  ];
  try {
    for (const [rows, cols, what] of cases) {
      const data = rng.normals(rows * cols);
      if (cols === 10) {
        // Column 0 is zero below its first entry (H_0 = I), so column 1 reaches reflector 1 as given: a diagonal
        // entry, entries of a few 1e-39 (below the smallest normal float32: they count as zero) and one of 3e-37.
        data.fill(0, 1, rows);
        for (let i = 2; i < rows; i++) data[rows + i] = (rng.next() - 0.5) * 4e-39;
        data[rows + 9] = 3e-37;
        data.fill(0, 2 * rows, 3 * rows); // column 2 is zero
      }
      if (cols === 7) {
        // Step 0's dot products cancel exactly in rows 5 and 7 and in rows 10 and 12 (reflector 0 equal there, the
        // columns' entries ±2^30·u), so the small terms between them round differently in any other order: they
        // are summed one row after another, as the host twin sums them.
        for (const r of [5, 10]) {
          data[r] = data[r + 2] = 1;
          for (let j = 1; j < cols; j++) {
            data[j * rows + r] = 2 ** 30 * (1 + rng.next());
            data[j * rows + r + 2] = -data[j * rows + r];
          }
        }
      }
      for (const guard of [undefined, 0, 1]) {
        const run = async (device: "cpu" | "wasm") => {
          const x = tensor(data, { shape: [cols, rows], device }) as unknown as F32;
          const g = guard === undefined ? undefined : tensor(Uint32Array.of(guard), { dtype: "u32", device });
          const f = await householderColumns(x, rows, cols, { wantQ: true, guard: g });
          return [await f.factored.data(), await f.taus.data(), await f.q!.data()];
        };
        const want = await run("cpu");
        for (const threads of [1, 2]) {
          wasm.setThreads(threads);
          let got: ArrayLike<number>[] = [];
          const lines = await debugLines(async () => got = await run("wasm"));
          const label =
            `${rows}x${cols} (${what}), guard ${guard}, ${threads} thread(s) (TEST_SEED=${TEST_SEED})`;
          ["factored matrix", "taus", "Q"].forEach((name, i) =>
            deepEqual(bits(got[i]), bits(want[i]), `${name}, ${label}`)
          );
          // Every step in one pool job.
          const steps = lines.filter((l) => /^wasm qr_(q_)?steps? /.test(l));
          equal(steps.length, guard === 0 ? 0 : 1, `launches of steps, ${label}`);
          equal(steps.some((l) => l.includes("(host)")), false, `the steps ran their host twin, ${label}`);
          const split = steps.some((l) => /^wasm qr_steps 2 items x2 /.test(l));
          equal(split, threads === 2 && rows === 400 && guard !== 0, `steps split over 2 threads, ${label}`);
        }
      }
    }
  } finally {
    wasm.setThreads(threadsBefore);
  }
});

Deno.test("householder kernels: a thread of the wasm job starts a step only once every column of the one before is done", async () => {
  // A worker joins a job cut into two parts whose step 0 is done but for part 1 (claimed, as it were, by a thread
  // that lost its core): it must wait (and goes to sleep), claiming and writing nothing of step 1, until that part
  // is counted finished, then do every other step alone, giving the host twins' bits.
  const rng = new TestRng(905);
  const p = { rows: 800, cols: 40 };
  const { rows, cols } = p;
  const k = reflectorCount(p);
  const kernel = qrJobWasm(p, true, 2);
  equal(kernel.items, 2, "two parts");
  const prm = householderParams(p);
  const c = Float32Array.from(rng.normals(rows * cols));
  const taus = new Float32Array(k);
  hhFirstHost(p)([c, taus, prm]);
  hhStepHost(p, 0)([c, taus, prm]);
  const identity = new Float32Array(k * rows);
  qInitHost(p)([identity, prm]);
  // What the host twins give from there.
  const [wc, wt, wq] = [c.slice(), taus.slice(), identity.slice()];
  for (let s = 1; s < k - 1; s++) hhStepHost(p, s)([wc, wt, prm]);
  for (let s = Math.min(k, rows - 1) - 1; s >= 0; s--) qStepHost(p, s)([wc, wt, wq, prm]);
  const mem = new WebAssembly.Memory({ initial: 8, maximum: 8, shared: true });
  const at = { c: 0, t: 4 * rows * cols, q: 4 * (rows * cols + k), p: 4 * (2 * rows * cols + k), ctl: 0 };
  at.ctl = at.p + 16;
  const view = (o: number, n: number) => new Float32Array(mem.buffer, o, n);
  view(at.c, rows * cols).set(c);
  view(at.t, k).set(taus);
  view(at.q, k * rows).set(identity);
  new Uint32Array(mem.buffer, at.p, 3).set(prm);
  const ctl = await joinLate(
    kernel.bytes,
    mem,
    [0, 1, 0, at.c, at.t, at.q, at.p, at.ctl],
    at.ctl,
    "step",
    () => {
      deepEqual(bits(view(at.c, rows * cols)), bits(c), "step 1 wrote the matrix");
      deepEqual(bits(view(at.t, k)), bits(taus), "step 1 wrote τ");
    },
  );
  const what = `(TEST_SEED=${TEST_SEED})`;
  deepEqual(bits(view(at.c, rows * cols)), bits(wc), `factored matrix ${what}`);
  deepEqual(bits(view(at.t, k)), bits(wt), `τ ${what}`);
  deepEqual(bits(view(at.q, k * rows)), bits(wq), `Q ${what}`);
  const rounds = k - 1 + Math.min(k, rows - 1);
  deepEqual(Array.from(ctl.subarray(0, 4)), [2 * rounds, 0, rounds, rounds], `control words ${what}`);
});
