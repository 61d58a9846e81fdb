/**
 * The Householder QR steps of `kernels/householder.wgsl.ts` (`hhStepWGSL`, `qStepWGSL`) as one WebAssembly job for
 * the wasm device, computing exactly what their host twins `hhStepHost` and `qStepHost` compute: the same float64
 * operations in the same order (float32 loads promoted, each dot product summed one row after another, `f64.sqrt`
 * for `Math.sqrt`, no fused multiply-add) and float32 stores rounded to nearest as a `Float32Array` store rounds, so
 * the wasm device gives the cpu device's results bit for bit.
 *
 * The job runs every step, one round of `sharedRounds` (the Jacobi sweep's) a step: the threads of the pool share
 * each step's columns and wait for a step's columns to be done before the next, so a factorisation costs one pool
 * job, not one a step. The sizes come from the parameter buffer, so one module serves every layout.
 *
 * @module
 */
import { type HouseholderLayout, reflectorCount, TINY_F32 } from "../../kernels/householder.wgsl.ts";
import type { CustomWasmKernel } from "../ir/ops.ts";
import { FnBuilder, lanesMask, ModuleBuilder } from "./wasm_encode.ts";
import { WASM_MAX_PAGES } from "./wasm_emit.ts";
import { LruCache } from "./lru.ts";
import {
  loop,
  passDistances,
  sharedRounds,
  SWEEP_GIVE_UP_SLEEPS,
  SWEEP_MAX_PARTS,
  SWEEP_PART_MIN_NS,
} from "./wasm_linalg.ts";

/** Columns whose dot products with the reflector one pass over the rows computes (two per float64 vector). */
const COLUMNS_PER_PASS = 4;

/** Which step a module computes: the factorisation's (`hhStepHost`) or Q's accumulation (`qStepHost`). */
type StepKind = "factor" | "q";

/**
 * Adds `step(start, end, scratch, C, taus, [Q,] params, k)` to `mb` and returns its index: the columns `start..end-1`
 * of step k (columns k+1.. of C for "factor", k.. of Q for "q") get reflector k applied as `applyHost` does, and for
 * "factor" the call with item 0 (column k+1) then computes reflector k+1 as `reflectHost` does. The dot products of
 * two columns run side by side in the two float64 lanes, each lane adding its column's terms one row after another;
 * the update, whose entries are independent, runs two rows at a time per float64 vector.
 */
function addStepFunction(mb: ModuleBuilder, kind: StepKind): number {
  const START = 0, END = 1, C = 3, T = 4;
  const X = kind === "q" ? 5 : C;
  const P = kind === "q" ? 6 : 5;
  const K = P + 1;
  const f = new FnBuilder(Array.from({ length: K + 1 }, () => "i32" as const), []);
  const locals = (n: number, t: "i32" | "f64" | "v128") => Array.from({ length: n }, () => f.local(t));
  const [rowsB, kB, vo, w, xo, xc, off, last4, co, jB] = locals(10, "i32");
  // dist[c − 1]: bytes from column j to column j + c of a pass (see below).
  const dist = locals(COLUMNS_PER_PASS - 1, "i32");
  const [tau, xn2, alpha, nrm, beta, scal, x] = locals(7, "f64");
  const [tw, t, xv, vv, xa, xb, vlo, vhi, prod] = locals(9, "v128");
  const sums = locals(COLUMNS_PER_PASS / 2, "v128");

  /** Pushes the float64 of the float32 at byte address `base + off`. */
  const load = (base: number) => f.get(base, off).op("i32.add").op("f32.load", 0).op("f64.promote_f32");

  /** Column at `xc` ← H_k column: x_k −= t, x_i −= t·v_i (i > k), with t lane `lane` of `tw`. */
  const update = (lane: number) => {
    const xo = xc;
    f.get(tw).op("f64x2.extract_lane", lane).op("f64x2.splat").set(t);
    f.get(xo, kB).op("i32.add");
    f.get(xo, kB).op("i32.add").op("f32.load", 0).op("f64.promote_f32");
    f.get(t).op("f64x2.extract_lane", 0).op("f64.sub").op("f32.demote_f64").op("f32.store", 0);
    f.get(kB).i32(4).op("i32.add").set(off);
    // Four rows per iteration while they fit, in two float64 halves: x − t·v, rounded to float32.
    f.op("block").op("loop");
    f.get(off, last4).op("i32.gt_s").op("br_if", 1);
    f.get(xo, off).op("i32.add").op("v128.load", 0).set(xv);
    f.get(vo, off).op("i32.add").op("v128.load", 0).set(vv);
    f.get(xo, off).op("i32.add");
    for (const half of [0, 1]) {
      const high = (v: number) => {
        f.get(v);
        if (half === 1) f.get(v).op("i8x16.shuffle", lanesMask([2, 3, 2, 3]));
        f.op("f64x2.promote_low_f32x4");
      };
      high(xv);
      f.get(t);
      high(vv);
      f.op("f64x2.mul").op("f64x2.sub").op("f32x4.demote_f64x2_zero");
    }
    f.op("i8x16.shuffle", lanesMask([0, 1, 4, 5])).op("v128.store", 0);
    f.get(off).i32(16).op("i32.add").set(off);
    f.op("br", 0).op("end").op("end");
    loop(f, off, rowsB, 4, () => {
      f.get(xo, off).op("i32.add");
      load(xo);
      f.get(t).op("f64x2.extract_lane", 0);
      load(vo);
      f.op("f64.mul").op("f64.sub").op("f32.demote_f64").op("f32.store", 0);
    });
  };

  /** Pushes the byte address of row `off` of column j + c of the pass (c < COLUMNS_PER_PASS). */
  const at = (c: number) => {
    f.get(xo);
    if (c > 0) f.get(dist[c - 1]).op("i32.add");
    f.get(off).op("i32.add");
  };

  f.get(P).op("i32.load", 0).i32(4).op("i32.mul").set(rowsB);
  f.get(rowsB).i32(16).op("i32.sub").set(last4);
  f.get(K).i32(4).op("i32.mul").set(kB);
  f.get(K).get(rowsB).op("i32.mul").get(C).op("i32.add").set(vo);
  f.get(T, kB).op("i32.add").op("f32.load", 0).op("f64.promote_f32").set(tau);
  f.get(START).set(w);
  loop(f, w, END, COLUMNS_PER_PASS, () => {
    // Columns j = first + w .. j + 3: column j + c is dist[c − 1] bytes after column j.
    f.get(K).i32(kind === "factor" ? 1 : 0).op("i32.add").get(w).op("i32.add");
    f.get(rowsB).op("i32.mul").get(X).op("i32.add").set(xo);
    passDistances(f, w, END, rowsB, dist);
    // w = x_k, then w += v_i·x_i for i = k+1 .. rows−1: columns j + 2h (lane 0) and j + 2h + 1 (lane 1) in sums[h].
    f.get(kB).set(off);
    sums.forEach((acc, h) => {
      at(2 * h);
      f.op("f32.load", 0).op("f64.promote_f32").op("f64x2.splat");
      at(2 * h + 1);
      f.op("f32.load", 0).op("f64.promote_f32").op("f64x2.replace_lane", 1).set(acc);
    });
    f.get(kB).i32(4).op("i32.add").set(off);
    // Four rows per iteration while they fit: v_i..v_i+3 and each pair of columns' entries interleaved, promoted two
    // at a time; the terms added one row after another, as below.
    f.op("block").op("loop");
    f.get(off, last4).op("i32.gt_s").op("br_if", 1);
    f.get(vo, off).op("i32.add").op("v128.load", 0).set(vv);
    f.get(vv).op("f64x2.promote_low_f32x4").set(vlo);
    f.get(vv, vv).op("i8x16.shuffle", lanesMask([2, 3, 2, 3])).op("f64x2.promote_low_f32x4").set(vhi);
    sums.forEach((acc, h) => {
      at(2 * h);
      f.op("v128.load", 0).set(xa);
      at(2 * h + 1);
      f.op("v128.load", 0).set(xb);
      // Rows i, i+1 of both columns (xv), then rows i+2, i+3 (xb).
      f.get(xa, xb).op("i8x16.shuffle", lanesMask([0, 4, 1, 5])).set(xv);
      f.get(xa, xb).op("i8x16.shuffle", lanesMask([2, 6, 3, 7])).set(xb);
      for (let r = 0; r < 4; r++) {
        const pair = r < 2 ? xv : xb;
        const vs = r < 2 ? vlo : vhi;
        f.get(vs, vs).op("i8x16.shuffle", lanesMask(r % 2 === 0 ? [0, 1, 0, 1] : [2, 3, 2, 3]));
        f.get(pair);
        if (r % 2 === 1) f.get(pair).op("i8x16.shuffle", lanesMask([2, 3, 2, 3]));
        f.op("f64x2.promote_low_f32x4").op("f64x2.mul").set(prod);
        f.get(acc, prod).op("f64x2.add").set(acc);
      }
    });
    f.get(off).i32(16).op("i32.add").set(off);
    f.op("br", 0).op("end").op("end");
    loop(f, off, rowsB, 4, () => {
      load(vo);
      f.op("f64x2.splat").set(vlo);
      sums.forEach((acc, h) => {
        f.get(acc, vlo);
        at(2 * h);
        f.op("f32.load", 0).op("f64.promote_f32").op("f64x2.splat");
        at(2 * h + 1);
        f.op("f32.load", 0).op("f64.promote_f32").op("f64x2.replace_lane", 1);
        f.op("f64x2.mul").op("f64x2.add").set(acc);
      });
    });
    for (let c = 0; c < COLUMNS_PER_PASS; c++) {
      if (c > 0) f.get(w).i32(c).op("i32.add").get(END).op("i32.lt_s").op("if", "void");
      if (c % 2 === 0) f.get(tau).op("f64x2.splat").get(sums[c >> 1]).op("f64x2.mul").set(tw);
      f.get(xo);
      if (c > 0) f.get(dist[c - 1]).op("i32.add");
      f.set(xc);
      update(c % 2);
    }
    for (let c = 1; c < COLUMNS_PER_PASS; c++) f.op("end");
  });
  if (kind === "factor") {
    // Reflector k+1 from column k+1 (item 0), once it has H_k applied, when k + 1 < K.
    f.get(START).op("i32.eqz").get(K).i32(1).op("i32.add").get(P).op("i32.load", 8).op("i32.lt_s").op(
      "i32.and",
    );
    f.op("if", "void");
    f.get(kB).i32(4).op("i32.add").set(jB);
    f.get(vo, rowsB).op("i32.add").set(co);
    f.op("f64.const", 0).set(xn2);
    f.get(jB).i32(4).op("i32.add").set(off);
    loop(f, off, rowsB, 4, () => {
      load(co);
      f.set(x);
      f.get(x).op("f64.abs").op("f64.const", TINY_F32).op("f64.ge").op("if", "void");
      f.get(xn2).get(x, x).op("f64.mul").op("f64.add").set(xn2);
      f.op("end");
    });
    f.get(co, jB).op("i32.add").op("f32.load", 0).op("f64.promote_f32").set(alpha);
    // τ_j = (β − α)/β when ξ² > 0 (the column then rescaled), else 0.
    f.get(T, jB).op("i32.add");
    f.get(xn2).op("f64.const", 0).op("f64.gt").op("if", "f32");
    {
      f.get(alpha, alpha).op("f64.mul").get(xn2).op("f64.add").op("f64.sqrt").set(nrm);
      f.get(nrm).get(nrm).op("f64.neg").get(alpha).op("f64.const", 0).op("f64.lt").op("select").set(beta);
      f.op("f64.const", 1).get(alpha, beta).op("f64.sub").op("f64.div").set(scal);
      f.get(co, jB).op("i32.add").get(beta).op("f32.demote_f64").op("f32.store", 0);
      f.get(jB).i32(4).op("i32.add").set(off);
      loop(f, off, rowsB, 4, () => {
        f.get(co, off).op("i32.add");
        load(co);
        f.set(x);
        f.get(x, scal).op("f64.mul").op("f32.demote_f64").op("f32.const", 0);
        f.get(x).op("f64.abs").op("f64.const", TINY_F32).op("f64.ge").op("select").op("f32.store", 0);
      });
      f.get(beta, alpha).op("f64.sub").get(beta).op("f64.div").op("f32.demote_f64");
    }
    f.op("else").op("f32.const", 0).op("end").op("f32.store", 0);
    f.op("end");
  }
  return mb.addFunction(f);
}

/**
 * `run(start, end, scratch, C, taus, [Q,] params, [guard,] ctl)`: every step of the factorisation (0 .. K−2), then
 * with Q every step of its accumulation (from min(K, rows − 1) − 1 down to 0; Q must hold the identity already), as
 * one job of {@link sharedRounds} rounds, one round a step, run by every thread that calls it; `ctl` holds its
 * {@link SWEEP_CONTROL_WORDS} control words, zero when the job starts. A step of n columns whose estimated work
 * (`columnCost`) reaches {@link STEP_PART_MIN_NS} a part is cut into `parts` parts, part c its columns ⌈c·n/parts⌉ ..
 * ⌈(c+1)·n/parts⌉ − 1; a smaller one is left to part 0 whole (the other parts empty: cutting it would cost more in
 * moving columns between cores than it saves). Part 0 thus always holds the column that gives the next reflector,
 * and every column gets the host twin's bits whatever the split. With a guard holding 0 it does nothing. `giveUp`
 * as {@link jacobiSweepModule}'s. Exported for its tests.
 */
export function qrJobModule(
  parts: number,
  wantQ: boolean,
  guarded: boolean,
  giveUp = SWEEP_GIVE_UP_SLEEPS,
): Uint8Array<ArrayBuffer> {
  const mb = new ModuleBuilder();
  mb.importMemory("env", "mem", { min: 1, max: WASM_MAX_PAGES, shared: true });
  const factor = addStepFunction(mb, "factor");
  const qStep = addStepFunction(mb, "q");
  const START = 0, SCRATCH = 2, C = 3, T = 4, Q = 5;
  const P = wantQ ? 6 : 5;
  const G = P + 1;
  const CTL = P + 1 + (guarded ? 1 : 0);
  const f = new FnBuilder(Array.from({ length: CTL + 1 }, () => "i32" as const), []);
  const [kref, nf, rounds, items, s, split, at] = Array.from({ length: 7 }, () => f.local("i32"));
  if (guarded) {
    f.get(G).op("i32.load", 0).op("i32.eqz").op("if", "void").op("return").op("end");
  }
  f.get(P).op("i32.load", 8).set(kref);
  f.get(kref).i32(1).op("i32.sub").set(nf);
  f.get(nf);
  if (wantQ) {
    // min(K, rows − 1) steps of Q.
    f.get(kref).get(P).op("i32.load", 0).i32(1).op("i32.sub");
    f.get(kref).get(P).op("i32.load", 0).i32(1).op("i32.sub").op("i32.lt_u").op("select").op("i32.add");
  }
  f.set(rounds);
  /** Pushes the first item of part `p` (a local) plus `plus`: min(items, ⌈(p + plus)·items / split⌉). */
  const first = (p: number, plus: number) => {
    f.get(p).i32(plus).op("i32.add").get(items).op("i32.mul").get(split).i32(1).op("i32.sub").op("i32.add");
    f.get(split).op("i32.div_u").op("local.tee", at).get(items).get(at, items).op("i32.lt_u").op("select");
  };
  /** Sets `split`: `parts` when the step (columns `items`, step `s`) is worth that many, else 1 (part 0 alone). */
  const setSplit = () => {
    f.i32(parts).i32(1);
    f.get(items).op("f64.convert_i32_u");
    f.op("f64.const", COLUMN_NS).op("f64.const", ROW_NS);
    f.get(P).op("i32.load", 0).get(s).op("i32.sub").op("f64.convert_i32_s").op("f64.mul").op("f64.add");
    f.op("f64.mul").op("f64.const", parts * STEP_PART_MIN_NS).op("f64.ge").op("select").set(split);
  };
  sharedRounds(f, { parts, start: START, ctl: CTL, rounds, giveUp }, (round, part) => {
    f.get(round, nf).op("i32.lt_u").op("if", "void");
    {
      // Step s = round of the factorisation: columns s+1 .. cols−1.
      f.get(round).set(s);
      f.get(P).op("i32.load", 4).get(s).op("i32.sub").i32(1).op("i32.sub").set(items);
      setSplit();
      first(part, 0);
      first(part, 1);
      f.get(SCRATCH, C, T, P, s).op("call", factor);
    }
    f.op("else");
    {
      // Step s = rounds − 1 − round of Q: its columns s .. K−1.
      f.get(rounds).i32(1).op("i32.sub").get(round).op("i32.sub").set(s);
      f.get(kref, s).op("i32.sub").set(items);
      setSplit();
      first(part, 0);
      first(part, 1);
      f.get(SCRATCH, C, T).get(wantQ ? Q : C).get(P, s).op("call", qStep);
    }
    f.op("end");
  });
  mb.exportFunction("run", mb.addFunction(f));
  return mb.encode();
}

const COLUMN_NS = 10, ROW_NS = 0.8;

/**
 * Estimated nanoseconds of one column of a step over `rows − k` rows: the dot product and the update (0.8 ns a row
 * measured on a 2-core x86 host at 521 rows).
 */
function columnCost(rows: number, k: number): number {
  return COLUMN_NS + ROW_NS * (rows - k);
}

/** Least estimated work (ns) of a part of a step of {@link qrJobModule}: a smaller step is left to part 0. */
const STEP_PART_MIN_NS = 4_000;

const jobBytes = new Map<string, Uint8Array<ArrayBuffer>>();
const jobKernels = new LruCache<string, CustomWasmKernel>(64);

/**
 * The wasm form of every step of a factorisation (and of Q's accumulation with `wantQ`) as one pool job
 * ({@link qrJobModule}) for a pool of `threads` threads: its work items are one ticket per part of the steps, as many
 * as threads (at most {@link SWEEP_MAX_PARTS}) but with {@link SWEEP_PART_MIN_NS} of a step's mean estimated work per
 * part, each costed at its share of the job, so the pool hands every thread one ticket. Bindings: matrix, τ, [Q,]
 * parameters, [guard,] control words.
 */
export function qrJobWasm(p: HouseholderLayout, wantQ: boolean, threads: number): CustomWasmKernel {
  const kref = reflectorCount(p);
  const guarded = p.guarded === true;
  let total = 0, rounds = kref - 1;
  for (let s = 0; s < kref - 1; s++) total += (p.cols - s - 1) * columnCost(p.rows, s);
  if (wantQ) {
    const nq = Math.min(kref, p.rows - 1);
    for (let s = 0; s < nq; s++) total += (kref - s) * columnCost(p.rows, s);
    rounds += nq;
  }
  const perRound = total / Math.max(1, rounds);
  const parts = Math.max(1, Math.min(threads, SWEEP_MAX_PARTS, Math.floor(perRound / SWEEP_PART_MIN_NS)));
  const key = `${p.rows}|${p.cols}|${guarded}|${wantQ}|${parts}`;
  let k = jobKernels.get(key);
  if (k === undefined) {
    const bytesKey = `${parts}|${wantQ}|${guarded}`;
    let bytes = jobBytes.get(bytesKey);
    if (bytes === undefined) jobBytes.set(bytesKey, bytes = qrJobModule(parts, wantQ, guarded));
    k = { bytes, items: parts, itemCost: Math.ceil(total / parts), scratchBytes: 0, usesMath: false };
    jobKernels.set(key, k);
  }
  return k;
}
