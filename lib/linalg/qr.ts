/**
 * Thin QR by Householder reflections on the GPU (kernels/householder.wgsl.ts), with LAPACK's conventions.
 *
 * @module
 */
import { z } from "../../deps.ts";
import { COPY_WGSL, copyGrid, copyHost } from "../../kernels/copy.wgsl.ts";
import {
  grid,
  hhFirstHost,
  hhFirstWGSL,
  hhStepHost,
  hhStepWGSL,
  type HouseholderLayout,
  householderParams,
  type HouseholderVariant,
  qInitHost,
  qInitWGSL,
  qStepHost,
  qStepWGSL,
  reflectorCount,
} from "../../kernels/householder.wgsl.ts";
import type { KernelLaunch } from "../tensor/custom.ts";
import { runKernels } from "../tensor/custom.ts";
import { tensor } from "../tensor/creation.ts";
import { type F32, realize, type Tensor, withShape } from "../tensor/tensor.ts";
import { LOOP_BUDGET } from "../codegen/split_loops.ts";
import { qrJobWasm } from "../codegen/wasm_householder.ts";
import { SWEEP_CONTROL_WORDS } from "../codegen/wasm_linalg.ts";
import { checkOptions } from "../options.ts";
import { jacobiWorkgroup } from "./jacobi.ts";
import { absMaxScale, checkMatrix, iota, nonFinitePoison } from "./common.ts";

/**
 * Workgroup size for Householder kernels on columns of `rows`: the device's preference, grown (×4, up to 256)
 * until one invocation's loops (about 3·rows/wg + 2·wg iterations per launch) fit llvmpipe's loop budget.
 */
export function householderWorkgroup(rows: number, preferred: number): number {
  let wg = preferred;
  const loops = (w: number) => 3 * Math.ceil(rows / w) + 2 * w + 8;
  while (loops(wg) > LOOP_BUDGET && wg < 256) wg = Math.min(256, wg * 4);
  if (loops(wg) > LOOP_BUDGET) {
    throw new RangeError(
      `householder: columns of ${rows} rows exceed the per-invocation loop budget; split them`,
    );
  }
  return wg;
}

/** Result of {@link householderColumns}: everything column-major (record j = column j). */
export interface HouseholderFactors {
  /** The factored matrix, `cols` records of `rows`: R on and above the diagonal, reflectors below. */
  readonly factored: F32;
  /** The K = min(rows, cols) reflector coefficients τ. */
  readonly taus: F32;
  /** The thin Q, K records of `rows` (its columns), or null when not asked for. */
  readonly q: F32 | null;
}

/**
 * Householder QR of a matrix given column-major (`cols` rows of `rows` floats, i.e. the transpose), in one
 * submission: WebGPU launches every step on its own, the CPU devices run all steps in one launch (on wasm one pool
 * job, `qrJobWasm`), with the same results bit for bit as the cpu device's. With `guard` (a one-element u32 tensor)
 * every launch but the copy of the matrix is skipped when it holds 0: on the GPU each launch reads it, while the CPU
 * devices read it once (nothing to wait for) and launch only the copy, which leaves the same outputs (the factored
 * matrix the input, τ and Q zero). `wg` overrides the workgroup size (tests).
 */
export async function householderColumns(
  colMajor: F32,
  rows: number,
  cols: number,
  opts: { wantQ: boolean; guard?: Tensor<number[], "u32">; wg?: number },
): Promise<HouseholderFactors> {
  const dev = colMajor.device;
  const guarded = opts.guard !== undefined;
  const p: HouseholderLayout = { rows, cols, guarded };
  const v = { wg: opts.wg ?? householderWorkgroup(rows, await jacobiWorkgroup(dev)), guarded };
  const k = reflectorCount(p);
  const params = tensor(householderParams(p), { dtype: "u32", device: dev });
  const size = tensor(Uint32Array.of(rows * cols), { dtype: "u32", device: dev });
  // Buffers: inputs [matrix, params, size, guard?], then outputs [factored, taus, Q].
  const inputs: Tensor[] = [colMajor, params, size, ...(opts.guard ? [opts.guard] : [])];
  const P = 1;
  const g = guarded ? [3] : [];
  const C = inputs.length, T = C + 1, Q = C + 2;
  const launches: KernelLaunch[] = [{
    name: "qr_copy",
    wgsl: COPY_WGSL,
    dispatch: copyGrid(rows * cols),
    bindings: [0, C, 2],
    host: copyHost(rows * cols),
  }, {
    name: "qr_first",
    wgsl: hhFirstWGSL(v),
    dispatch: [1, 1, 1],
    bindings: [C, T, P, ...g],
    host: hhFirstHost(p),
  }];
  const perJob = dev !== "webgpu";
  if (perJob) {
    // CPU devices: Q's identity first (the factorisation does not touch it), then every step in one launch, on
    // wasm one pool job whose threads share each step's columns.
    if (opts.wantQ) launches.push(qInit(p, v, Q, P, g));
    const CTL = Q + 1;
    const qb = opts.wantQ ? [Q] : [];
    launches.push({
      name: "qr_steps",
      wgsl: null,
      dispatch: [1, 1, 1],
      bindings: [C, T, ...qb, P, ...g, CTL],
      host: stepsHost(p, opts.wantQ),
      wasm: (features) => qrJobWasm(p, opts.wantQ, features.threads),
    });
  } else {
    const step = hhStepWGSL(v);
    for (let s = 0; s < k - 1; s++) {
      launches.push({
        name: "qr_step",
        wgsl: step,
        dispatch: [cols - s - 1, 1, 1],
        bindings: [C, T, P, ...g],
        host: hhStepHost(p, s),
      });
    }
    if (opts.wantQ) {
      launches.push(qInit(p, v, Q, P, g));
      const qStep = qStepWGSL(v);
      // Reflector rows-1 (a 1x1 block) is always the identity.
      for (let s = Math.min(k, rows - 1) - 1; s >= 0; s--) {
        launches.push({
          name: "qr_q_step",
          wgsl: qStep,
          dispatch: [k - s, 1, 1],
          bindings: [C, T, Q, P, ...g],
          host: qStepHost(p, s),
        });
      }
    }
  }
  const outputs = [
    { shape: [cols, rows], dtype: "f32" as const },
    { shape: [k], dtype: "f32" as const },
    { shape: opts.wantQ ? [k, rows] : [1], dtype: "f32" as const },
    ...(perJob ? [{ shape: [SWEEP_CONTROL_WORDS], dtype: "u32" as const }] : []),
  ];
  const skip = opts.guard !== undefined && dev !== "webgpu" && (await opts.guard.data())[0] === 0;
  const [factored, taus, q, control] = await runKernels(
    inputs,
    outputs,
    skip ? launches.slice(0, 1) : launches,
  ) as F32[];
  params.dispose();
  size.dispose();
  control?.dispose();
  if (!opts.wantQ) q.dispose();
  return { factored, taus, q: opts.wantQ ? q : null };
}

/** Q's identity (`qInitWGSL`), into binding `q`. */
function qInit(
  p: HouseholderLayout,
  v: HouseholderVariant,
  q: number,
  prm: number,
  g: number[],
): KernelLaunch {
  return {
    name: "qr_q_init",
    wgsl: qInitWGSL(v),
    dispatch: grid(p.rows * reflectorCount(p), 64),
    bindings: [q, prm, ...g],
    host: qInitHost(p),
  };
}

/**
 * Host twin of the steps' job ({@link qrJobWasm}): bindings matrix, τ, [Q,] parameters, [guard,] control words (not
 * used); the steps of the factorisation, then with Q those of its accumulation, each as its own launch computes it.
 */
function stepsHost(
  p: HouseholderLayout,
  wantQ: boolean,
): (b: (Float32Array | Int32Array | Uint32Array)[]) => void {
  const k = reflectorCount(p);
  const factor = Array.from({ length: k - 1 }, (_, s) => hhStepHost(p, s));
  const qSteps = wantQ ? Array.from({ length: Math.min(k, p.rows - 1) }, (_, s) => qStepHost(p, s)) : [];
  return (b) => {
    const [c, t] = b;
    const rest = b.slice(wantQ ? 3 : 2, b.length - 1); // parameters, [guard]
    for (const step of factor) step([c, t, ...rest]);
    for (let s = qSteps.length - 1; s >= 0; s--) qSteps[s]([c, t, b[2], ...rest]);
  };
}

/** The upper-triangular R (K×cols) of column-major factors (`cols` records of `rows`), as a lazy tensor. */
export function upperR(factored: F32, rows: number, cols: number): F32 {
  const k = Math.min(rows, cols);
  const rt = factored.slice(null, [0, k]).transpose(); // [k, cols], rt[i, j] = factored[j, i]
  const dev = factored.device;
  const i = iota(k, dev).reshape([k, 1]);
  const j = iota(cols, dev).reshape([1, cols]) as F32;
  return i.le(j).where(rt, 0) as F32;
}

const QR_OPTIONS = z.object({ wantQ: z.boolean().optional() }).strict();

/** Options of {@link qr}. */
export interface QrOptions {
  /** Also form Q (default true). With `false` only R is computed (half the work) and `q` is null. */
  wantQ?: boolean;
}

/** Thin QR factors of an m×n matrix, K = min(m, n). `Q` is the type of `q` (null when Q was not formed). */
export interface QrResult<M extends number, N extends number, Q = Tensor<[M, number], "f32">> {
  /** m×K with orthonormal columns. */
  q: Q;
  /** K×n upper triangular (upper trapezoidal when n > m). */
  r: Tensor<[number, N], "f32">;
}

/**
 * Thin (reduced) QR decomposition `A = Q R` by Householder reflections, computed on the device of `a` in one
 * submission without read-back.
 *
 * Conventions are LAPACK's (`geqrf` + `orgqr`, as in `numpy.linalg.qr` and `torch.linalg.qr`): reflector k
 * maps the column below the diagonal onto `β e_k` with `β = −sign(α)·‖x‖` where α is the diagonal entry, so
 * **R's diagonal entries may be negative** (R_kk < 0 whenever α ≥ 0); a column that is already zero below the
 * diagonal gets τ = 0 and keeps its diagonal entry. For a full-rank input the result therefore equals
 * LAPACK's up to rounding. The input is scaled by `1/max|a|` internally (R is scaled back), so the sums of
 * squares cannot overflow. Q is orthonormal to float32 rounding even when `a` is rank-deficient. The input must
 * be finite: NaN or infinite entries give all-NaN factors on every device.
 *
 * Cost: about `2mn² − 2n³/3` flops for R and as much again for Q, in `2·min(m, n)` dispatches.
 *
 * @example
 * ```ts
 * import { randn } from "../../mod.ts";
 * import { qr } from "./mod.ts";
 * const a = randn([6, 4], { seed: 1 });
 * const { q, r } = await qr(a);
 * console.log(q.shape, r.shape); // [6, 4] [4, 4]
 * ```
 */
export async function qr<M extends number, N extends number>(
  a: Tensor<[M, N], "f32"> | F32,
  opts?: QrOptions & { wantQ?: true },
): Promise<QrResult<M, N>>;
/** R only: `q` is null. */
export async function qr<M extends number, N extends number>(
  a: Tensor<[M, N], "f32"> | F32,
  opts: QrOptions & { wantQ: false },
): Promise<QrResult<M, N, null>>;
export async function qr<M extends number, N extends number>(
  a: Tensor<[M, N], "f32"> | F32,
  opts: QrOptions = {},
): Promise<QrResult<M, N, Tensor<[M, number], "f32"> | null>> {
  const [m, n] = checkMatrix("qr", a);
  const wantQ = checkOptions("qr", QR_OPTIONS, opts).wantQ ?? true;
  const x = a;
  const scale = absMaxScale(x);
  const xin = x.transpose().div(scale) as F32;
  const poison = nonFinitePoison(x);
  await realize(scale, xin, poison); // one pass over a (possibly lazy) input
  const f = await householderColumns(xin, m, n, { wantQ });
  const r = upperR(f.factored, m, n).mul(scale).add(poison) as F32;
  const q = f.q === null ? null : f.q.transpose().add(poison) as F32;
  await (q === null ? realize(r) : realize(r, q));
  for (const t of [scale, xin, poison, f.factored, f.taus]) t.dispose();
  f.q?.dispose();
  return {
    q: q === null ? null : withShape<[M, number]>(q, 2),
    r: withShape<[number, N]>(r, 2),
  };
}
