/**
 * The one-sided (Hestenes) Jacobi driver behind {@link svd} and {@link eigh}: runs whole sweeps of
 * kernels/jacobi.wgsl.ts over records `[column; carried]` and returns the records (at their original
 * positions: a sweep of the circle ordering returns every record to where it started).
 *
 * @module
 */
import {
  COUNTER_RESET_WGSL,
  counterResetHost,
  JACOBI_TINY,
  JACOBI_ZERO_REL,
  type JacobiLayout,
  jacobiParams,
  jacobiRoundHost,
  jacobiRoundWGSL,
  jacobiSweepHost,
} from "../../kernels/jacobi.wgsl.ts";
import { jacobiSweepWasm, SWEEP_CONTROL_WORDS } from "../codegen/wasm_linalg.ts";
import { type KernelLaunch, runKernels } from "../tensor/custom.ts";
import { tensor } from "../tensor/creation.ts";
import type { F32, Tensor } from "../tensor/tensor.ts";
import type { DeviceName } from "../ir/node.ts";
import type { WasmFeatures } from "../ir/ops.ts";
import { debugLevel } from "../runtime/debug.ts";
import { getBackend } from "../runtime/realize.ts";

/** Unit roundoff of float32. */
export const F32_UNIT_ROUNDOFF = 2 ** -24;

/**
 * Default number of sweeps for `cols` columns of the QR-preconditioned matrix Rᵀ: `max(8, ⌈5 + 0.9·log2 n⌉)`
 * (8 at n ≤ 16, 11 at 64, 13 at 256, 14 at 1024, 16 at 4096). Cyclic Jacobi converges quadratically once the
 * columns are nearly orthogonal and the number of sweeps grows about logarithmically with n. Measured with
 * the convergence check (sweeps until one makes no rotation with |cos| > √n·2⁻²⁴, minus that last sweep) on
 * Gaussian, rank-deficient (rank n/3), 10⁶-conditioned and clustered spectra, square and 3:1 in both
 * directions: at most 5 sweeps at n = 8, 8 at 16–32, 10 at 64–256, 11 at 512; the default keeps 1–3 sweeps of
 * margin, because one sweep too few leaves orthogonality errors near 1e-3 while a sweep after convergence
 * changes nothing measurable. Rank n/2 with each dependent column next to its source (pairs of equal columns,
 * or every other column a combination of those before it), where the QR leaves the null space spread over all
 * of R, takes at most 9 sweeps at n = 80–512 because columns at the level of rounding count as zero (see
 * `JACOBI_ZERO_REL` in kernels/jacobi.wgsl.ts); rotating them too took 15–19.
 */
export function defaultSweeps(cols: number): number {
  return Math.max(8, Math.ceil(5 + 0.9 * Math.log2(Math.max(cols, 2))));
}

/** Rounds up to a multiple of 4 (the Jacobi kernel reads vec4). */
export function roundUp4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/**
 * Workgroup size for the Jacobi and Householder kernels on `device`: 8 on CPU rasterisers (llvmpipe/lavapipe,
 * where a barrier costs ~1.5 µs per SIMD group and one SIMD group per workgroup measured fastest: 80 ms
 * against 100–170 ms per sweep at n = 200), 64 elsewhere.
 */
export async function jacobiWorkgroup(device: DeviceName): Promise<number> {
  if (device !== "webgpu") return 64;
  const desc = (await getBackend(device)).description.toLowerCase();
  return /llvmpipe|lavapipe|swiftshader|software/.test(desc) ? 8 : 64;
}

/**
 * From this many records on, each sweep goes into its own submission (still without read-back), so that no
 * single submission keeps the GPU busy for seconds (some platforms reset a device after ~2 s).
 */
export const LARGE_SLOTS = 512;

/** Options of {@link jacobiSweeps}. */
export interface JacobiOptions {
  /** Sweeps to run (or the maximum, with `check`). */
  sweeps?: number;
  /**
   * Read the rotation counter back every `check` sweeps and stop once a sweep made no rotation with
   * |cos| > `tol` (one ~11 ms read-back per check). 0 or undefined: no read-back.
   */
  check?: number;
  /** Convergence threshold on |cos| between columns (default √rows · 2⁻²⁴). */
  tol?: number;
  /** Invocations per workgroup (default 64; see {@link jacobiWorkgroup}). */
  wg?: number;
}

/** What {@link jacobiSweeps} returns. */
export interface JacobiRun {
  /** The records after the last sweep, `[slots, stride]`. */
  records: F32;
  /** Sweeps run. */
  sweeps: number;
  /** Whether the last checked sweep made no rotation above `tol` (null when no check ran). */
  converged: boolean | null;
}

/** Zeroes the rotation counter and the sweep's control words before a sweep on the CPU devices. */
function sweepResetHost(buffers: (Float32Array | Int32Array | Uint32Array)[]): void {
  for (const b of buffers) b.fill(0);
}

/**
 * Runs Jacobi sweeps over `records` (shape `[slots, stride]`, slots even; the first `rows` entries of each
 * record are the columns to orthogonalise). Columns whose squared norm is at most `JACOBI_ZERO_REL` times that
 * of all columns together count as zero (see kernels/jacobi.wgsl.ts). Without `check` all sweeps go into one
 * submission (one per sweep from {@link LARGE_SLOTS} records on) and nothing is read back. WebGPU launches the
 * rounds one by one; the CPU devices run a sweep per launch (`jacobiSweepHost`, and on wasm one pool job whose
 * threads share the rounds), with the same results bit for bit.
 */
export async function jacobiSweeps(records: F32, rows: number, opts: JacobiOptions = {}): Promise<JacobiRun> {
  const [slots, stride] = records.shape;
  const layout: JacobiLayout = { rows, stride, slots };
  const tol = opts.tol ?? Math.sqrt(rows) * F32_UNIT_ROUNDOFF;
  const total = opts.sweeps ?? defaultSweeps(slots);
  const check = opts.check ?? 0;
  const wgsl = jacobiRoundWGSL(opts.wg ?? await jacobiWorkgroup(records.device));
  const host = jacobiRoundHost(layout, tol);
  const perSweep = records.device !== "webgpu";
  const sweepHost = jacobiSweepHost(layout, tol);
  const sweepWasm = (features: WasmFeatures) => jacobiSweepWasm(layout, features);
  const params = tensor(jacobiParams(layout, tol), { dtype: "u32", device: records.device });
  // Rotations keep ‖W‖_F, so the floor computed once holds for every sweep.
  const floor = records.slice(null, [0, rows]).square().sum().mul(JACOBI_ZERO_REL).maximum(JACOBI_TINY)
    .reshape([1]) as F32;
  const rounds = slots - 1;
  let current: F32 = records;
  let done = 0;
  let converged: boolean | null = null;
  while (done < total) {
    const chunk = Math.min(check > 0 ? check : slots >= LARGE_SLOTS ? 1 : total, total - done);
    // Buffers: 0 = input records, 1 = parameters, 2 = zero floor, 3 = X, 4 = Y, 5 = counter, 6 = the sweep's
    // control words (CPU devices).
    const launches: KernelLaunch[] = [];
    let src = 0;
    let t = 0;
    for (let s = 0; s < chunk; s++) {
      if (perSweep) {
        // Round t writes X when t is even; a sweep has an odd number of rounds, so its last writes where its first
        // does.
        const first = t % 2 === 0 ? 3 : 4;
        launches.push({
          name: "jacobi_reset",
          wgsl: null,
          dispatch: [1, 1, 1],
          bindings: [5, 6],
          host: sweepResetHost,
        }, {
          name: "jacobi_sweep",
          wgsl: null,
          dispatch: [1, 1, 1],
          bindings: [src, first, 7 - first, 5, 1, 2, 6],
          host: sweepHost,
          wasm: sweepWasm,
        });
        src = first;
        t += rounds;
        continue;
      }
      launches.push({
        name: "jacobi_reset",
        wgsl: COUNTER_RESET_WGSL,
        dispatch: [1, 1, 1],
        bindings: [5],
        host: counterResetHost,
      });
      for (let r = 0; r < rounds; r++, t++) {
        const dst = t % 2 === 0 ? 3 : 4;
        launches.push({
          name: "jacobi_round",
          wgsl,
          dispatch: [slots / 2, 1, 1],
          bindings: [src, dst, 5, 1, 2],
          host,
        });
        src = dst;
      }
    }
    const [x, y, cnt, control] = await runKernels([current, params, floor], [
      { shape: [slots, stride], dtype: "f32" },
      { shape: [slots, stride], dtype: "f32" },
      { shape: [1], dtype: "u32" },
      ...(perSweep ? [{ shape: [SWEEP_CONTROL_WORDS], dtype: "u32" as const }] : []),
    ], launches) as [F32, F32, Tensor<number[], "u32">, Tensor<number[], "u32">?];
    control?.dispose();
    const last = src === 3 ? x : y;
    (src === 3 ? y : x).dispose();
    if (current !== records) current.dispose();
    current = last;
    done += chunk;
    if (check > 0) {
      const rotations = (await cnt.data())[0];
      converged = rotations === 0;
      if (converged) {
        cnt.dispose();
        break;
      }
    }
    cnt.dispose();
  }
  params.dispose();
  floor.dispose();
  if (debugLevel() >= 1) {
    console.error(`jacobi: ${slots} records of ${stride}, ${done} sweeps, converged ${converged}`);
  }
  return { records: current, sweeps: done, converged };
}
