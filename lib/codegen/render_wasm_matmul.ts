/**
 * The blocked SIMD matmul of the wasm backend (the GotoBLAS scheme): the output is cut into `MC x NC` blocks,
 * one work item each; per block and per `KC`-long slice of k, A's rows and B's columns are packed into the thread's
 * scratch (any fused prologue — transposes, casts, padding — is evaluated once per element while packing), and a
 * register-blocked micro-kernel accumulates `MR x NR` outputs in twelve f32x4 registers, reading the packed
 * panels sequentially (`MR·NR` multiply-adds per `MR + NR` loads; fused multiply-add through relaxed SIMD where
 * available). Panel sizes: the B micro-panel (`KC·NR` floats, 8 KiB) stays in L1 while the A block (`MC·KC`)
 * streams from L2. The epilogue (bias, activation, residual, any dtype) runs per element on the finished block.
 *
 * @module
 */
import type { Kernel, KExpr, MatmulSpec, MatmulTerm } from "./kexpr.ts";
import { linearForm } from "./kexpr.ts";
import { linearize } from "./linearize.ts";
import { FnBuilder, lanesMask } from "./wasm_encode.ts";
import { KEmitter, kernelModule, type WasmKernel, type WasmRenderOptions } from "./wasm_emit.ts";
import { classifyLanes, VEmitter } from "./wasm_vector.ts";

/** Rows of the micro-kernel's register block. */
export const MR = 6;
/** Columns of the micro-kernel's register block (two f32x4). */
export const NR = 8;
const KC_MAX = 256;
const MC_MAX = 96;
const NC_MAX = 128;

const up = (x: number, m: number) => Math.ceil(x / m) * m;

/**
 * The block sizes used for a product of this shape. Blocks of m and n are as even as the register block allows
 * (`ceil(m / MC_MAX)` blocks of about `m / blocks` rows), not `MC_MAX` rows and a short remainder: the blocks are
 * the work items split over threads, and with m = 512 (6 blocks) two threads ran 288 and 224 rows where they now
 * run 270 and 242. No block changes the order of a sum (each element of C adds its k terms in order, block after
 * block), so the results do not depend on `mc` and `nc`.
 */
export function matmulBlocking(m: number, n: number, k: number): { mc: number; nc: number; kc: number } {
  const even = (x: number, most: number, unit: number) => up(Math.ceil(x / Math.ceil(x / most)), unit);
  return {
    mc: Math.max(MR, even(m, MC_MAX, MR)),
    nc: Math.max(NR, even(n, NC_MAX, NR)),
    kc: Math.max(2, Math.min(KC_MAX, up(k, 2))),
  };
}

/**
 * Whether a product computes its transpose, Cᵀ = Bᵀ·Aᵀ: when C has at most `NR` rows and takes fewer `MR x NR`
 * register blocks that way. C = 8 x 64 (the weight gradient dA = dUᵀ·x of a rank-8 adapter, k = tokens) takes 11
 * blocks that way and 16 the other, a third of whose rows are padding. Every element still adds the same products in
 * the same order (a product of two floats, fused or not, does not depend on their order): the same bits.
 */
export function matmulSwapped(m: number, n: number): boolean {
  return m <= NR && up(n, MR) * up(m, NR) < up(m, MR) * up(n, NR);
}

/** `value` as `c0 + Σ coef·var` over the named template variables, or null. */
function affineLoad(
  value: KExpr,
  vars: readonly string[],
): { buf: number; c0: number; coef: Map<string, number> } | null {
  if (value.k !== "load" || value.dtype !== "f32") return null;
  const { terms, c } = linearForm(value.index);
  const coef = new Map<string, number>();
  for (const [t, k] of terms) {
    if (t.k !== "var" || !vars.includes(t.name)) return null;
    coef.set(t.name, k);
  }
  return { buf: value.buf, c0: c, coef };
}

/** The twelve f32x4 accumulators of a micro-kernel and its B and A registers. */
interface MicroRegs {
  readonly c: readonly number[];
  readonly b0: number;
  readonly b1: number;
  readonly a: number;
  /** An i32 local: the end of the B panel. */
  readonly end: number;
}

/**
 * Declares the registers of a micro-kernel and loads the accumulators from C (byte address in local `pc`), or
 * leaves them zero (`pc` null: wasm locals start at zero, the +0.0 that C's zero-filled block held).
 */
function microRegs(f: FnBuilder, pc: number | null, ldc: number): MicroRegs {
  const c: number[] = [];
  for (let i = 0; i < MR * 2; i++) c.push(f.local("v128"));
  const regs = { c, b0: f.local("v128"), b1: f.local("v128"), a: f.local("v128"), end: f.local("i32") };
  for (let r = 0; r < MR && pc !== null; r++) {
    for (let v = 0; v < 2; v++) f.get(pc).op("v128.load", r * ldc * 4 + v * 16).set(c[r * 2 + v]);
  }
  return regs;
}

/** Stores the accumulators back to C. */
function storeMicro(f: FnBuilder, g: MicroRegs, pc: number, ldc: number): void {
  for (let r = 0; r < MR; r++) {
    for (let v = 0; v < 2; v++) f.get(pc, g.c[r * 2 + v]).op("v128.store", r * ldc * 4 + v * 16);
  }
}

/** One step `u` of k: the B row at `pb + u·NR·4`, the A values of row r where `aAt(r)` pushes their address. */
function microStep(
  f: FnBuilder,
  g: MicroRegs,
  fma: boolean,
  pb: number,
  u: number,
  aAt: (r: number) => void,
): void {
  f.get(pb).op("v128.load", u * NR * 4).set(g.b0);
  f.get(pb).op("v128.load", u * NR * 4 + 16).set(g.b1);
  for (let r = 0; r < MR; r++) {
    aAt(r);
    f.set(g.a);
    for (const [v, bv] of [[0, g.b0], [1, g.b1]]) {
      const acc = g.c[r * 2 + v];
      if (fma) f.get(g.a, bv, acc).op("f32x4.relaxed_madd").set(acc);
      else f.get(acc, g.a, bv).op("f32x4.mul").op("f32x4.add").set(acc);
    }
  }
}

/** Accumulates packed A (local `pa`) times packed B (local `pb`) over `kcp` steps (local; even and > 0). */
function packedSteps(f: FnBuilder, g: MicroRegs, fma: boolean, pa: number, pb: number, kcp: number): void {
  // end = pb + kcp·NR·4
  f.get(pb).get(kcp).i32(NR * 4).op("i32.mul").op("i32.add").set(g.end);
  f.op("loop");
  for (let u = 0; u < 2; u++) {
    microStep(f, g, fma, pb, u, (r) => f.get(pa).op("v128.load32_splat", (u * MR + r) * 4));
  }
  f.get(pa).i32(2 * MR * 4).op("i32.add").set(pa);
  f.get(pb).i32(2 * NR * 4).op("i32.add").op("local.tee", pb).get(g.end).op("i32.lt_u").op("br_if", 0);
  f.op("end");
}

/**
 * Accumulates six rows of A read in place (locals `rows`: byte addresses at the block's first k, rows contiguous
 * along k) times packed B (local `pb`) over `kc` steps (local): two steps per iteration, then one more when `kc` is
 * odd (A is never read past k = kc).
 */
function directSteps(
  f: FnBuilder,
  g: MicroRegs,
  fma: boolean,
  rows: readonly number[],
  pb: number,
  kc: number,
): void {
  // end = pb + (kc & ~1)·NR·4: the pairs of k
  f.get(pb).get(kc).i32(-2).op("i32.and").i32(NR * 4).op("i32.mul").op("i32.add").set(g.end);
  f.get(kc).i32(2).op("i32.ge_s").op("if", "void").op("loop");
  for (let u = 0; u < 2; u++) {
    microStep(f, g, fma, pb, u, (r) => f.get(rows[r]).op("v128.load32_splat", u * 4));
  }
  for (let r = 0; r < MR; r++) f.get(rows[r]).i32(8).op("i32.add").set(rows[r]);
  f.get(pb).i32(2 * NR * 4).op("i32.add").op("local.tee", pb).get(g.end).op("i32.lt_u").op("br_if", 0);
  f.op("end").op("end");
  f.get(kc).i32(1).op("i32.and").op("if", "void");
  microStep(f, g, fma, pb, 0, (r) => f.get(rows[r]).op("v128.load32_splat", 0));
  f.op("end");
}

/** The micro-kernel `micro(pa, pb, pc, kcp)`: C[MR x NR] (row stride `ldc` floats) += Ap · Bp over kcp steps. */
function microKernel(ldc: number, fma: boolean): FnBuilder {
  const f = new FnBuilder(["i32", "i32", "i32", "i32"], []);
  const g = microRegs(f, 2, ldc);
  packedSteps(f, g, fma, 0, 1, 3);
  storeMicro(f, g, 2, ldc);
  return f;
}

/**
 * The micro-kernel reading A in place: `microA(a0..a5, pb, pc, kc)` with `a0..a5` the byte addresses of six rows of
 * A at the block's first k (rows contiguous along k), B packed as for {@link microKernel}.
 */
function microKernelDirectA(ldc: number, fma: boolean): FnBuilder {
  const f = new FnBuilder([...Array.from({ length: MR }, () => "i32" as const), "i32", "i32", "i32"], []);
  const g = microRegs(f, MR + 1, ldc);
  directSteps(f, g, fma, Array.from({ length: MR }, (_, r) => r), MR, MR + 2);
  storeMicro(f, g, MR + 1, ldc);
  return f;
}

/**
 * The micro-kernel of a product (or sum of products) whose every k fits one block: `microSum(...terms, pc)` with per
 * term the address of its packed A panel (or, for A read in place, its six row addresses) and of its packed B
 * panel. The terms accumulate one after the other in the same registers, from zero, in the order and with the
 * operations of one {@link microKernel} / {@link microKernelDirectA} call per term on a zero-filled C, so the sums
 * are the same bits; C is stored once, never zero-filled nor loaded, and a sum makes one call, not one per term.
 */
function microKernelSum(
  ldc: number,
  fma: boolean,
  terms: readonly { direct: boolean; k: number }[],
): FnBuilder {
  const params = terms.reduce((n, t) => n + (t.direct ? MR : 1) + 1, 0);
  const f = new FnBuilder(Array.from({ length: params + 1 }, () => "i32" as const), []);
  const g = microRegs(f, null, ldc);
  const kc = f.local("i32");
  let at = 0;
  for (const t of terms) {
    f.i32(t.direct ? t.k : up(t.k, 2)).set(kc);
    if (t.direct) {
      directSteps(f, g, fma, Array.from({ length: MR }, (_, r) => at + r), at + MR, kc);
      at += MR + 1;
    } else {
      packedSteps(f, g, fma, at, at + 1, kc);
      at += 2;
    }
  }
  storeMicro(f, g, params, ldc);
  return f;
}

/** Renders a kernel with a matmul spec. */
export function renderWasmMatmul(kernel: Kernel, mm: MatmulSpec, opts: WasmRenderOptions): WasmKernel {
  const { mb, f, help, usesMath, out, bases, params } = kernelModule(kernel);
  // A sum of products accumulates every term into the same block accumulators, one term after the other.
  const depth = Math.max(...mm.terms.map((t) => t.k));
  // Swapped, the template's rows are C's columns and its A and B are B's and A's columns and rows.
  const swap = opts.swap !== false && matmulSwapped(mm.m, mm.n);
  const [rowsOf, colsOf] = swap ? [mm.n, mm.m] : [mm.m, mm.n];
  const { mc: MC, nc: NC, kc: KC } = matmulBlocking(rowsOf, colsOf, depth);
  const mBlocks = Math.ceil(rowsOf / MC);
  const nBlocks = Math.ceil(colsOf / NC);
  const micro = mb.addFunction(microKernel(NC, opts.relaxedSimd));
  // A read in place when its rows are contiguous along k (x·W, x·Wᵀ with x row-major): no packing of A.
  const direct = mm.terms.map((t) => {
    const affA = swap ? null : affineLoad(t.a, ["b", "m", "k"]);
    return affA !== null && affA.coef.get("k") === 1 ? affA : null;
  });
  const microA = direct.every((d) => d === null)
    ? -1
    : mb.addFunction(microKernelDirectA(NC, opts.relaxedSimd));
  // A product (or sum of products) whose every k fits one block packs every term's panels, then sums all terms
  // per register block in one call (`microKernelSum`).
  const live = [...mm.terms.keys()].filter((q) => mm.terms[q].k > 0);
  const summed = live.length > 0 && depth <= KC && opts.sumTerms !== false;
  const microSum = summed
    ? mb.addFunction(
      microKernelSum(
        NC,
        opts.relaxedSimd,
        live.map((q) => ({ direct: direct[q] !== null, k: mm.terms[q].k })),
      ),
    )
    : -1;
  // Scratch: packed A (MC x KC), packed B (KC x NC), the block's accumulators (MC x NC); for a sum, the packed
  // panels of every term (MC x k and k x NC, k rounded up to even) one after the other.
  const panels = new Map<number, { a: number; b: number }>();
  let summedBytes = 0;
  for (const q of summed ? live : []) {
    const kp = up(mm.terms[q].k, 2);
    const a = summedBytes;
    summedBytes += direct[q] === null ? MC * kp * 4 : 0;
    panels.set(q, { a, b: summedBytes });
    summedBytes += kp * NC * 4;
  }
  const AP = 0;
  const BP = MC * KC * 4;
  const CB = summed ? summedBytes : BP + KC * NC * 4;
  const scratchBytes = CB + MC * NC * 4;

  const L = () => f.local("i32");
  const [item, bi, m0, n0, mc, nc, mp, np, pc, kc, kcp, ip, jp, r, kk, kAbs, dst, src, row, i, j] = Array
    .from(
      { length: 21 },
      L,
    );
  const SCR = 2;
  const em = new KEmitter(f, help, kernel, bases, params);
  em.vars.set("b", bi);

  /** for (v = 0; v < limit; v++) { body } with `limit` a local. */
  const forLocal = (v: number, limit: number, body: () => void) => {
    f.i32(0).set(v);
    f.get(limit).i32(0).op("i32.gt_s").op("if", "void").op("loop");
    body();
    f.get(v).i32(1).op("i32.add").op("local.tee", v).get(limit).op("i32.lt_s").op("br_if", 0);
    f.op("end").op("end");
  };

  /**
   * Packs one operand: `panels` panels of `width` rows (A: rows m; B: columns n), each `kcp` steps of k with
   * `width` consecutive floats per step. `rowVar` is the template variable of the row (m or n).
   */
  const pack = (
    value: KExpr,
    rowVar: "m" | "n",
    first: number,
    count: number,
    panels: number,
    width: number,
    scratchOff: number,
  ) => {
    const aff = affineLoad(value, ["b", rowVar, "k"]);
    const stmts = aff === null ? linearize([value]) : [];
    em.vars.set(rowVar, row);
    em.vars.set("k", kAbs);
    // Rows contiguous in memory (B row-major, A transposed): a whole panel step is `width` consecutive floats.
    const contiguous = aff !== null && aff.coef.get(rowVar) === 1;
    // Rows contiguous along k (B = Wᵀ, as Linear reads W): eight rows of four steps, transposed in registers.
    const alongK = aff !== null && !contiguous && aff.coef.get("k") === 1 && width === NR &&
      (aff.coef.get(rowVar) ?? 0) > 0;
    forLocal(ip, panels, () => {
      if (contiguous || alongK) {
        const cb = aff!.coef.get("b") ?? 0;
        const ck = aff!.coef.get("k") ?? 0;
        const cr = aff!.coef.get(rowVar) ?? 0;
        // A full panel: copy `width` floats per step of k (16-byte pieces, then 8 bytes for a width of 6).
        f.get(first).get(ip).i32(width).op("i32.mul").op("i32.add").set(row);
        f.get(row).i32(width).op("i32.add").get(first).get(count).op("i32.add").op("i32.le_s");
        f.op("if", "void");
        f.get(SCR).i32(scratchOff).op("i32.add").get(ip).i32(width).op("i32.mul").get(kcp).op("i32.mul")
          .i32(2).op("i32.shl").op("i32.add").set(dst);
        f.get(bases[aff!.buf]).i32(aff!.c0).get(bi).i32(cb).op("i32.mul").op("i32.add").get(row).i32(cr)
          .op("i32.mul").op("i32.add").get(pc).i32(ck).op("i32.mul").op("i32.add").i32(2).op("i32.shl")
          .op("i32.add").set(src);
        if (alongK) transposePanel(cr);
      }
      if (contiguous) {
        const ck = aff!.coef.get("k") ?? 0;
        const copy = (zero: boolean) => {
          for (let o = 0; o + 4 <= width; o += 4) {
            f.get(dst);
            if (zero) f.op("v128.const", new Uint8Array(16));
            else f.get(src).op("v128.load", o * 4);
            f.op("v128.store", o * 4);
          }
          if (width % 4 === 2) {
            f.get(dst);
            if (zero) f.op("f64.const", 0);
            else f.get(src).op("f64.load", (width - 2) * 4);
            f.op("f64.store", (width - 2) * 4);
          }
        };
        forLocal(kk, kc, () => {
          copy(false);
          f.get(dst).i32(width * 4).op("i32.add").set(dst);
          f.get(src).i32(ck * 4).op("i32.add").set(src);
        });
        f.get(kcp).get(kc).op("i32.gt_s").op("if", "void");
        copy(true);
        f.op("end");
      }
      if (contiguous || alongK) f.op("else"); // a panel at the edge: row by row below
      f.i32(0).set(r);
      f.op("loop");
      // row = first + ip·width + r; dst = scratch + off + (ip·width·kcp + r)·4
      f.get(first).get(ip).i32(width).op("i32.mul").op("i32.add").get(r).op("i32.add").set(row);
      f.get(SCR).i32(scratchOff).op("i32.add").get(ip).i32(width).op("i32.mul").get(kcp).op("i32.mul").get(r)
        .op("i32.add").i32(2).op("i32.shl").op("i32.add").set(dst);
      // Rows past the block's edge are zeros.
      f.get(row).get(first).get(count).op("i32.add").op("i32.lt_s").op("if", "void");
      if (aff !== null) {
        // src = in + 4·(c0 + cb·b + crow·row + ck·pc), stepping 4·ck per k.
        const cb = aff.coef.get("b") ?? 0;
        const cr = aff.coef.get(rowVar) ?? 0;
        const ck = aff.coef.get("k") ?? 0;
        f.get(bases[aff.buf]).i32(aff.c0).get(bi).i32(cb).op("i32.mul").op("i32.add").get(row).i32(cr)
          .op("i32.mul").op("i32.add").get(pc).i32(ck).op("i32.mul").op("i32.add").i32(2).op("i32.shl")
          .op("i32.add").set(src);
        forLocal(kk, kc, () => {
          f.get(dst, src).op("f32.load").op("f32.store");
          f.get(dst).i32(width * 4).op("i32.add").set(dst);
          f.get(src).i32(ck * 4).op("i32.add").set(src);
        });
      } else {
        forLocal(kk, kc, () => {
          // The prologue is a function of (b, row, k) with k the absolute index pc + kk.
          f.get(pc, kk).op("i32.add").set(kAbs);
          f.get(dst);
          em.stmts(stmts);
          em.push(value);
          f.op("f32.store");
          f.get(dst).i32(width * 4).op("i32.add").set(dst);
        });
      }
      f.op("else");
      forLocal(kk, kc, () => {
        f.get(dst).op("f32.const", 0).op("f32.store");
        f.get(dst).i32(width * 4).op("i32.add").set(dst);
      });
      f.op("end");
      // The pad step when kc is odd.
      f.get(kcp).get(kc).op("i32.gt_s").op("if", "void").get(dst).op("f32.const", 0).op("f32.store").op(
        "end",
      );
      f.get(r).i32(1).op("i32.add").op("local.tee", r).i32(width).op("i32.lt_s").op("br_if", 0);
      f.op("end");
      if (contiguous || alongK) f.op("end");
    });
  };

  /**
   * Packs a full panel of NR rows that lie `cr` floats apart and run along k (from `src` to `dst`): per four steps
   * of k, two 4 x 4 blocks transposed with shuffles; the last `kc % 4` steps one float at a time; a zero pad step.
   */
  const transposePanel = (cr: number) => {
    const v = [0, 1, 2, 3].map(() => f.local("v128"));
    const t = [0, 1, 2, 3].map(() => f.local("v128"));
    const shuffle = (a: number, b: number, lanes: number[]) =>
      f.get(a, b).op("i8x16.shuffle", lanesMask(lanes));
    f.i32(0).set(kk);
    f.op("block").op("loop");
    f.get(kk).i32(4).op("i32.add").get(kc).op("i32.gt_s").op("br_if", 1);
    for (let h = 0; h < 2; h++) {
      for (let j = 0; j < 4; j++) f.get(src).op("v128.load", (h * 4 + j) * cr * 4).set(v[j]);
      // (r0k0, r1k0, r0k1, r1k1), (r0k2, r1k2, r0k3, r1k3) and the same of rows 2 and 3; then step k of rows 0-3.
      shuffle(v[0], v[1], [0, 4, 1, 5]).set(t[0]);
      shuffle(v[0], v[1], [2, 6, 3, 7]).set(t[1]);
      shuffle(v[2], v[3], [0, 4, 1, 5]).set(t[2]);
      shuffle(v[2], v[3], [2, 6, 3, 7]).set(t[3]);
      for (let j = 0; j < 4; j++) {
        f.get(dst);
        shuffle(t[j >> 1], t[2 + (j >> 1)], j % 2 === 0 ? [0, 1, 4, 5] : [2, 3, 6, 7]);
        f.op("v128.store", (j * NR + h * 4) * 4);
      }
    }
    f.get(dst).i32(4 * NR * 4).op("i32.add").set(dst);
    f.get(src).i32(16).op("i32.add").set(src);
    f.get(kk).i32(4).op("i32.add").set(kk);
    f.op("br", 0).op("end").op("end");
    f.op("block").op("loop");
    f.get(kk).get(kc).op("i32.ge_s").op("br_if", 1);
    for (let j = 0; j < NR; j++) f.get(dst).get(src).op("f32.load", j * cr * 4).op("f32.store", j * 4);
    f.get(dst).i32(NR * 4).op("i32.add").set(dst);
    f.get(src).i32(4).op("i32.add").set(src);
    f.get(kk).i32(1).op("i32.add").set(kk);
    f.op("br", 0).op("end").op("end");
    f.get(kcp).get(kc).op("i32.gt_s").op("if", "void");
    for (let o = 0; o < NR; o += 4) f.get(dst).op("v128.const", new Uint8Array(16)).op("v128.store", o * 4);
    f.op("end");
  };

  /** Packs the template's A (B's columns when swapped) and B (A's rows when swapped) of a term. */
  const packA = (t: MatmulTerm, at: number) => pack(swap ? t.b : t.a, swap ? "n" : "m", m0, mc, mp, MR, at);
  const packB = (t: MatmulTerm, at: number) => pack(swap ? t.a : t.b, swap ? "m" : "n", n0, nc, np, NR, at);

  // for item in start..end
  f.get(0).set(item);
  f.get(0).get(1).op("i32.lt_s").op("if", "void").op("loop");
  {
    // item = (bi·mBlocks + mi)·nBlocks + ni
    f.get(item).i32(nBlocks).op("i32.rem_u").i32(NC).op("i32.mul").set(n0);
    f.get(item).i32(nBlocks).op("i32.div_u").i32(mBlocks).op("i32.rem_u").i32(MC).op("i32.mul").set(m0);
    f.get(item).i32(nBlocks * mBlocks).op("i32.div_u").set(bi);
    const minTo = (dstL: number, cap: number, total: number, start: number) => {
      f.i32(cap).i32(total).get(start).op("i32.sub").i32(cap).i32(total).get(start).op("i32.sub").op(
        "i32.lt_s",
      )
        .op("select").set(dstL);
    };
    minTo(mc, MC, rowsOf, m0);
    minTo(nc, NC, colsOf, n0);
    f.get(mc).i32(MR - 1).op("i32.add").i32(MR).op("i32.div_u").set(mp);
    f.get(nc).i32(NR - 1).op("i32.add").i32(NR).op("i32.div_u").set(np);
    if (!summed) f.get(SCR).i32(CB).op("i32.add").i32(0).i32(MC * NC * 4).op("memory.fill");
    /** Pushes the six row addresses of term `q`'s A read in place, at row panel `i` and k = pc. */
    const pushRows = (q: number) => {
      // Row addresses in[c0 + cb·b + cm·row + pc], rows past M clamped to the last (never stored).
      const directA = direct[q]!;
      const cb = directA.coef.get("b") ?? 0;
      const cm = directA.coef.get("m") ?? 0;
      for (let r = 0; r < MR; r++) {
        f.get(bases[directA.buf]).i32(directA.c0).get(bi).i32(cb).op("i32.mul").op("i32.add");
        f.get(m0).get(i).i32(MR).op("i32.mul").op("i32.add").i32(r).op("i32.add").set(row);
        f.get(row).i32(mm.m - 1).get(row).i32(mm.m - 1).op("i32.lt_s").op("select").i32(cm).op("i32.mul");
        f.op("i32.add").get(pc).op("i32.add").i32(2).op("i32.shl").op("i32.add");
      }
    };
    /** Pushes the address of panel `index` (local) of `width` rows of a packed operand at `offset`. */
    const pushPanel = (offset: number, index: number, width: number, steps: () => void) => {
      f.get(SCR).i32(offset).op("i32.add").get(index).i32(width * 4).op("i32.mul");
      steps();
      f.op("i32.mul").op("i32.add");
    };
    const pushC = () => {
      f.get(SCR).i32(CB).op("i32.add").get(i).i32(MR * NC * 4).op("i32.mul").op("i32.add").get(jp)
        .i32(NR * 4).op("i32.mul").op("i32.add");
    };
    if (summed) {
      // Every term's panels, then one call per register block.
      f.i32(0).set(pc);
      for (const q of live) {
        const term = mm.terms[q];
        f.i32(term.k).set(kc);
        f.i32(up(term.k, 2)).set(kcp);
        if (direct[q] === null) packA(term, panels.get(q)!.a);
        packB(term, panels.get(q)!.b);
      }
      // Row panels outside, so that the rows of A read in place are addressed once per panel.
      const rows = new Map(
        live.filter((q) => direct[q] !== null).map((q) => [q, Array.from({ length: MR }, L)]),
      );
      forLocal(i, mp, () => {
        for (const [q, locals] of rows) {
          pushRows(q);
          for (let r = MR - 1; r >= 0; r--) f.set(locals[r]);
        }
        forLocal(jp, np, () => {
          for (const q of live) {
            const steps = () => f.i32(up(mm.terms[q].k, 2));
            if (direct[q] !== null) f.get(...rows.get(q)!);
            else pushPanel(panels.get(q)!.a, i, MR, steps);
            pushPanel(panels.get(q)!.b, jp, NR, steps);
          }
          pushC();
          f.op("call", microSum);
        });
      });
    }
    // for each term, for pc in 0, KC, ... < K
    for (const [q, term] of summed ? [] : mm.terms.entries()) {
      const directA = direct[q];
      if (term.k === 0) continue;
      f.i32(0).set(pc);
      f.op("loop");
      f.i32(KC).i32(term.k).get(pc).op("i32.sub").i32(KC).i32(term.k).get(pc).op("i32.sub").op("i32.lt_s")
        .op("select").set(kc);
      f.get(kc).i32(1).op("i32.add").i32(-2).op("i32.and").set(kcp);
      if (directA === null) packA(term, AP);
      packB(term, BP);
      forLocal(jp, np, () => {
        forLocal(i, mp, () => {
          const steps = () => f.get(kcp);
          if (directA !== null) pushRows(q);
          else pushPanel(AP, i, MR, steps);
          pushPanel(BP, jp, NR, steps);
          pushC();
          if (directA !== null) f.get(kc).op("call", microA);
          else f.get(kcp).op("call", micro);
        });
      });
      f.get(pc).i32(KC).op("i32.add").op("local.tee", pc).i32(term.k).op("i32.lt_s").op("br_if", 0);
      f.op("end");
    }
    // Epilogue over the block: out[(b·M + m)·N + n] = epi(b, m, n, acc), four columns at a time where the
    // epilogue allows (its lanes run along n), the last nc % 4 columns one by one; swapped, the block's rows are n
    // and its columns m, one by one.
    const mVar = f.local("i32");
    const nVar = f.local("i32");
    const acc = f.local("f32");
    const accV = f.local("v128");
    em.vars.set("m", mVar);
    em.vars.set("n", nVar);
    em.acc = acc;
    const epi = linearize([mm.epilogue]);
    const lanes = opts.simd === false || swap ? null : classifyLanes(mm.epilogue, "n");
    const vem = lanes === null ? null : new VEmitter(f, help, kernel, bases, em, lanes);
    if (vem !== null) vem.acc = accV;
    const nc4 = f.local("i32");
    f.get(nc).i32(vem === null ? 0 : -4).op("i32.and").set(nc4);
    const outIndex = () => {
      f.get(bi).i32(mm.m).op("i32.mul").get(mVar).op("i32.add").i32(mm.n).op("i32.mul").get(nVar).op(
        "i32.add",
      );
    };
    const cbuf = () => {
      f.get(SCR).i32(CB).op("i32.add").get(i).i32(NC).op("i32.mul").get(j).op("i32.add").i32(2).op("i32.shl")
        .op("i32.add");
    };
    forLocal(i, mc, () => {
      f.get(m0, i).op("i32.add").set(swap ? nVar : mVar);
      if (vem !== null) {
        f.i32(0).set(j);
        f.get(nc4).i32(0).op("i32.gt_s").op("if", "void").op("loop");
        f.get(n0, j).op("i32.add").set(swap ? mVar : nVar);
        cbuf();
        f.op("v128.load").set(accV);
        vem.stmts(epi);
        vem.storeAt(out, outIndex, mm.epilogue);
        f.get(j).i32(4).op("i32.add").op("local.tee", j).get(nc4).op("i32.lt_s").op("br_if", 0);
        f.op("end").op("end");
      }
      f.get(nc4).set(j);
      f.get(j).get(nc).op("i32.lt_s").op("if", "void").op("loop");
      f.get(n0, j).op("i32.add").set(swap ? mVar : nVar);
      cbuf();
      f.op("f32.load").set(acc);
      em.stmts(epi);
      em.storeOut(out, outIndex, mm.epilogue);
      f.get(j).i32(1).op("i32.add").op("local.tee", j).get(nc).op("i32.lt_s").op("br_if", 0);
      f.op("end").op("end");
    });
  }
  f.get(item).i32(1).op("i32.add").op("local.tee", item).get(1).op("i32.lt_s").op("br_if", 0);
  f.op("end").op("end");
  mb.exportFunction("run", mb.addFunction(f));
  const flopsPerItem = 2 * MC * NC * Math.max(mm.terms.reduce((a, t) => a + t.k, 0), 1);
  return {
    bytes: mb.encode(),
    items: mm.batch * mBlocks * nBlocks,
    // About 20 GFLOP/s per thread once packed, plus the epilogue.
    itemCost: flopsPerItem / 20 + MC * NC,
    scratchBytes,
    usesMath,
  };
}
