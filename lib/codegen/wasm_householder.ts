/**
 * The Householder QR steps of `kernels/householder.wgsl.ts` (`hhStepWGSL`, `qStepWGSL`) as WebAssembly modules for
 * the wasm device, computing exactly what their host twins `hhStepHost` and `qStepHost` compute: the same float64
 * operations in the same order (float32 loads promoted, each dot product summed one row after another, `f64.sqrt`
 * for `Math.sqrt`, no fused multiply-add) and float32 stores rounded to nearest as a `Float32Array` store rounds, so
 * the wasm device gives the cpu device's results bit for bit.
 *
 * A step's work items are the columns it updates, so the thread pool may split them; the step index k is not in the
 * module but passed after the buffers (`CustomWasmKernel.args`), and the sizes come from the parameter buffer, so
 * one module per kind of step (and guard) serves every layout and every step.
 *
 * @module
 */
import { type HouseholderLayout, reflectorCount, TINY_F32 } from "../../kernels/householder.wgsl.ts";
import type { CustomWasmKernel } from "../ir/ops.ts";
import { FnBuilder, lanesMask, ModuleBuilder } from "./wasm_encode.ts";
import { WASM_MAX_PAGES } from "./wasm_emit.ts";
import { LruCache } from "./lru.ts";
import { loop } from "./wasm_linalg.ts";

/** Columns whose dot products with the reflector one pass over the rows computes (two per float64 vector). */
const COLUMNS_PER_PASS = 4;

/** Which step a module computes: the factorisation's (`hhStepHost`) or Q's accumulation (`qStepHost`). */
type StepKind = "factor" | "q";

/**
 * `run(start, end, scratch, C, taus, [Q,] params, [guard,] k)`: the columns `start..end-1` of step k (columns k+1..
 * of C for "factor", k.. of Q for "q") get reflector k applied as `applyHost` does, and for "factor" the call with
 * item 0 (column k+1) then computes reflector k+1 as `reflectHost` does. The dot products of two columns run side by
 * side in the two float64 lanes, each lane adding its column's terms one row after another; the update, whose
 * entries are independent, runs two rows at a time per float64 vector.
 */
function stepModule(kind: StepKind, guarded: boolean): Uint8Array<ArrayBuffer> {
  const START = 0, END = 1, C = 3, T = 4;
  const X = kind === "q" ? 5 : C;
  const P = kind === "q" ? 6 : 5;
  const G = P + 1;
  const K = P + 1 + (guarded ? 1 : 0);
  const mb = new ModuleBuilder();
  mb.importMemory("env", "mem", { min: 1, max: WASM_MAX_PAGES, shared: true });
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

  if (guarded) {
    f.get(G).op("i32.load", 0).op("i32.eqz").op("if", "void").op("return").op("end");
  }
  f.get(P).op("i32.load", 0).i32(4).op("i32.mul").set(rowsB);
  f.get(rowsB).i32(16).op("i32.sub").set(last4);
  f.get(K).i32(4).op("i32.mul").set(kB);
  f.get(K).get(rowsB).op("i32.mul").get(C).op("i32.add").set(vo);
  f.get(T, kB).op("i32.add").op("f32.load", 0).op("f64.promote_f32").set(tau);
  f.get(START).set(w);
  loop(f, w, END, COLUMNS_PER_PASS, () => {
    // Columns j = first + w .. j + 3: column j + c is dist[c − 1] bytes after column j while w + c < end, else the
    // column before it again (its sums computed twice, used once).
    f.get(K).i32(kind === "factor" ? 1 : 0).op("i32.add").get(w).op("i32.add");
    f.get(rowsB).op("i32.mul").get(X).op("i32.add").set(xo);
    for (let c = 1; c < COLUMNS_PER_PASS; c++) {
      f.get(w).i32(c).op("i32.add").get(END).op("i32.lt_s").op("if", "i32");
      f.get(rowsB).i32(c).op("i32.mul").op("else");
      if (c === 1) f.i32(0);
      else f.get(dist[c - 2]);
      f.op("end").set(dist[c - 1]);
    }
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
  mb.exportFunction("run", mb.addFunction(f));
  return mb.encode();
}

const modules = new Map<string, Uint8Array<ArrayBuffer>>();
/** Per layout, the kernel of each step (built on first use). */
const kernels = new LruCache<string, (CustomWasmKernel | undefined)[]>(64);

/** The cached kernel of step `k`, built by `make` on first use. */
function cached(key: string, k: number, make: () => CustomWasmKernel): CustomWasmKernel {
  let steps = kernels.get(key);
  if (steps === undefined) {
    steps = [];
    kernels.set(key, steps);
  }
  return steps[k] ??= make();
}

function moduleOf(kind: StepKind, guarded: boolean): Uint8Array<ArrayBuffer> {
  const key = `${kind}|${guarded}`;
  let bytes = modules.get(key);
  if (bytes === undefined) {
    bytes = stepModule(kind, guarded);
    modules.set(key, bytes);
  }
  return bytes;
}

/**
 * Estimated nanoseconds of one column of a step over `rows − k` rows: the dot product and the update (0.8 ns a row
 * measured on a 2-core x86 host at 521 rows).
 */
function columnCost(rows: number, k: number): number {
  return 10 + 0.8 * (rows - k);
}

function checkStep(what: string, p: HouseholderLayout, k: number, limit: number): void {
  if (!Number.isInteger(k) || k < 0 || k >= limit) {
    throw new RangeError(`${what}: step ${k} outside 0..${limit - 1} for a ${p.rows}x${p.cols} matrix`);
  }
}

/**
 * The wasm form of step k of the factorisation (`hhStepWGSL`, host twin `hhStepHost`): work items are the columns
 * k+1 .. cols−1; the item of column k+1 also computes reflector k+1. Bindings as the WGSL's: matrix, τ, parameters,
 * [guard].
 */
export function hhStepWasm(p: HouseholderLayout, k: number): CustomWasmKernel {
  checkStep("hhStepWasm", p, k, reflectorCount(p) - 1);
  return cached(`factor|${p.rows}|${p.cols}|${p.guarded === true}`, k, () => ({
    bytes: moduleOf("factor", p.guarded === true),
    items: p.cols - k - 1,
    itemCost: columnCost(p.rows, k),
    scratchBytes: 0,
    usesMath: false,
    args: [k],
  }));
}

/**
 * The wasm form of step k of Q's backward accumulation (`qStepWGSL`, host twin `qStepHost`): work items are the
 * columns k .. K−1 of Q. Bindings as the WGSL's: factored matrix, τ, Q, parameters, [guard].
 */
export function qStepWasm(p: HouseholderLayout, k: number): CustomWasmKernel {
  const kref = reflectorCount(p);
  checkStep("qStepWasm", p, k, kref);
  return cached(`q|${p.rows}|${p.cols}|${p.guarded === true}`, k, () => ({
    bytes: moduleOf("q", p.guarded === true),
    items: kref - k,
    itemCost: columnCost(p.rows, k),
    scratchBytes: 0,
    usesMath: false,
    args: [k],
  }));
}
