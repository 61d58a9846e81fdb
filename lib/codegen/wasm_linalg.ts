/**
 * The hand-written linear-algebra kernels of `kernels/jacobi.wgsl.ts` as WebAssembly modules for the wasm device,
 * computing exactly what their host twins compute: the same float64 operations in the same order (float32 loads
 * promoted, sums accumulated one term after another, `f64.sqrt` for `Math.sqrt`, no fused multiply-add) and
 * float32 stores rounded to nearest as a `Float32Array` store rounds, so the wasm device gives the cpu device's
 * results bit for bit. They follow the calling convention of the other wasm kernels (`run(start, end, scratch,
 * ...buffers)` computes work items `start..end-1`, so the thread pool can split them), with the buffers in the
 * WGSL kernel's binding order, and read the sizes from its parameter buffer, so one module serves every size.
 *
 * @module
 */
import { JACOBI_EPS_ROTATE, type JacobiLayout } from "../../kernels/jacobi.wgsl.ts";
import type { CustomWasmKernel } from "../ir/ops.ts";
import { FnBuilder, lanesMask, ModuleBuilder } from "./wasm_encode.ts";
import { WASM_MAX_PAGES } from "./wasm_emit.ts";
import { LruCache } from "./lru.ts";

/** `for (v = from(); v < limit; v += step) body()` over i32 local `v` and i32 local `limit`. */
function loop(f: FnBuilder, v: number, limit: number, step: number, body: () => void): void {
  f.op("block").op("loop");
  f.get(v, limit).op("i32.ge_s").op("br_if", 1);
  body();
  f.get(v).i32(step).op("i32.add").set(v);
  f.op("br", 0).op("end").op("end");
}

/** Pushes the circle method's next position of the record at the position in i32 local `k` (see `nextSlot`). */
function nextSlot(f: FnBuilder, k: number, slots: number): void {
  f.i32(0);
  f.i32(1).get(k).i32(1).op("i32.add");
  f.get(k).get(slots).i32(1).op("i32.sub").op("i32.eq").op("select");
  f.get(k).op("i32.eqz").op("select");
}

// Parameters of `run` of the Jacobi round: the item range, the scratch (unused), then the WGSL bindings.
const START = 0, END = 1, SRC = 3, DST = 4, CNT = 5, PARAMS = 6, FLOOR = 7;

/**
 * `run(start, end, scratch, src, dst, cnt, params, floor)`: pairs `start..end-1` of one Jacobi round, as
 * `jacobiRoundHost` computes them (its rotation is `hostRotation`). The dot products of two pairs run side by side in
 * the two float64 lanes, each lane summing its pair's terms one entry after another; the rotation, whose entries are
 * independent, runs two entries at a time (per lane the host's operations). Rotations that count add to a local
 * count, added to the counter once per call with an atomic add, so any split of the pairs over threads gives the
 * host's count.
 */
function jacobiRoundModule(): Uint8Array<ArrayBuffer> {
  const mb = new ModuleBuilder();
  mb.importMemory("env", "mem", { min: 1, max: WASM_MAX_PAGES, shared: true });
  const f = new FnBuilder(Array.from({ length: 8 }, () => "i32" as const), []);
  const locals = (n: number, t: "i32" | "f64" | "v128") => Array.from({ length: n }, () => f.local(t));
  const [w, q, po, qo, np, nq, off, rowsB, strideB, slots, count, step] = locals(12, "i32");
  const [a, b, g, scale, zeta, t, c, s, tau, tol, zero] = locals(11, "f64");
  const [sv, tv, xv, yv, x0, x1, y0, y1, x2, y2, av, bv, gv] = locals(13, "v128");

  /** Sets `po` and `qo` to the byte addresses of the records of pair `w` (positions w and slots − 1 − w). */
  const addresses = () => {
    f.get(slots).i32(1).op("i32.sub").get(w).op("i32.sub").set(q);
    f.get(w).get(strideB).op("i32.mul").get(SRC).op("i32.add").set(po);
    f.get(q).get(strideB).op("i32.mul").get(SRC).op("i32.add").set(qo);
  };

  /** From a, b and g of pair `w`: its rotation, applied to its records and stored at their next positions. */
  const rotatePair = () => {
    addresses();
    f.get(a).op("f64.sqrt").get(b).op("f64.sqrt").op("f64.mul").set(scale);
    f.op("f64.const", 0).set(s);
    f.op("f64.const", 0).set(tau);
    // Rotate when a > zero && b > zero && |g| > EPS·scale.
    f.get(a, zero).op("f64.gt").get(b, zero).op("f64.gt").op("i32.and");
    f.get(g).op("f64.abs").op("f64.const", JACOBI_EPS_ROTATE).get(scale).op("f64.mul").op("f64.gt");
    f.op("i32.and").op("if", "void");
    {
      // zeta = (b − a)/(2g); t = |zeta| > 1e15 ? 0.5/zeta : (zeta < 0 ? −1 : 1)/(|zeta| + √(1 + zeta²)).
      f.get(b, a).op("f64.sub").op("f64.const", 2).get(g).op("f64.mul").op("f64.div").set(zeta);
      f.get(zeta).op("f64.abs").op("f64.const", 1e15).op("f64.gt").op("if", "f64");
      f.op("f64.const", 0.5).get(zeta).op("f64.div");
      f.op("else");
      f.op("f64.const", -1).op("f64.const", 1).get(zeta).op("f64.const", 0).op("f64.lt").op("select");
      f.get(zeta).op("f64.abs").op("f64.const", 1).get(zeta, zeta).op("f64.mul").op("f64.add").op("f64.sqrt");
      f.op("f64.add").op("f64.div");
      f.op("end").set(t);
      // c = 1/√(1 + t²), s = c·t, tau = s/(1 + c).
      f.op("f64.const", 1).op("f64.const", 1).get(t, t).op("f64.mul").op("f64.add").op("f64.sqrt");
      f.op("f64.div").set(c);
      f.get(c, t).op("f64.mul").set(s);
      f.get(s).op("f64.const", 1).get(c).op("f64.add").op("f64.div").set(tau);
      f.get(g).op("f64.abs").get(tol, scale).op("f64.mul").op("f64.gt");
      f.get(count).op("i32.add").set(count);
    }
    f.op("end");
    nextSlot(f, w, slots);
    f.get(strideB).op("i32.mul").get(DST).op("i32.add").set(np);
    nextSlot(f, q, slots);
    f.get(strideB).op("i32.mul").get(DST).op("i32.add").set(nq);
    f.get(s).op("f64x2.splat").set(sv);
    f.get(tau).op("f64x2.splat").set(tv);
    // (x, y) ← (x − s(y + tau·x), y + s(x − tau·y)), four entries per iteration in two f64x2 halves.
    f.i32(0).set(off);
    loop(f, off, strideB, 16, () => {
      f.get(po).get(off).op("i32.add").op("v128.load", 0).set(xv);
      f.get(qo).get(off).op("i32.add").op("v128.load", 0).set(yv);
      for (const [v, lo, hi] of [[xv, x0, x1], [yv, y0, y1]]) {
        f.get(v).op("f64x2.promote_low_f32x4").set(lo);
        f.get(v, v).op("i8x16.shuffle", lanesMask([2, 3, 2, 3])).op("f64x2.promote_low_f32x4").set(hi);
      }
      type AddSub = "f64x2.add" | "f64x2.sub";
      const rotated = (u: number, v: number, outer: AddSub, inner: AddSub) => {
        // u ∓ s·(v ± tau·u) in the host's order: tau·u, then v ± it, then s times that, then u ∓ it.
        f.get(u, sv, v, tv, u).op("f64x2.mul").op(inner).op("f64x2.mul").op(outer);
        f.op("f32x4.demote_f64x2_zero");
      };
      const sides = [[np, [x0, x1, y0, y1, "f64x2.sub", "f64x2.add"]], [nq, [
        y0,
        y1,
        x0,
        x1,
        "f64x2.add",
        "f64x2.sub",
      ]]];
      for (
        const [dst, [u0, u1, v0, v1, outer, inner]] of sides as [
          number,
          [number, number, number, number, AddSub, AddSub],
        ][]
      ) {
        f.get(dst).get(off).op("i32.add");
        rotated(u0, v0, outer, inner);
        rotated(u1, v1, outer, inner);
        f.op("i8x16.shuffle", lanesMask([0, 1, 4, 5])).op("v128.store", 0);
      }
    });
  };

  f.get(PARAMS).op("i32.load", 0).i32(16).op("i32.mul").set(rowsB);
  f.get(PARAMS).op("i32.load", 4).i32(16).op("i32.mul").set(strideB);
  f.get(PARAMS).op("i32.load", 8).set(slots);
  f.get(PARAMS).op("f32.load", 12).op("f64.promote_f32").set(tol);
  f.get(FLOOR).op("f32.load", 0).op("f64.promote_f32").set(zero);
  f.i32(0).set(count);
  f.get(START).set(w);
  loop(f, w, END, 1, () => {
    addresses();
    // a = ‖p‖², b = ‖q‖², g = p·q of pairs w (lane 0) and w + 1 (lane 1: records p + 1 and q − 1, `step` bytes
    // away; pair w again when it is the last one), each summed in entry order.
    f.get(w).i32(1).op("i32.add").get(END).op("i32.lt_s").op("if", "i32");
    f.get(strideB).op("else").i32(0).op("end").set(step);
    for (const v of [av, bv, gv]) f.op("v128.const", new Uint8Array(16)).set(v);
    f.i32(0).set(off);
    loop(f, off, rowsB, 16, () => {
      f.get(po).get(off).op("i32.add").op("v128.load", 0).set(xv);
      f.get(po).get(step).op("i32.add").get(off).op("i32.add").op("v128.load", 0).set(x2);
      f.get(qo).get(off).op("i32.add").op("v128.load", 0).set(yv);
      f.get(qo).get(step).op("i32.sub").get(off).op("i32.add").op("v128.load", 0).set(y2);
      for (let i = 0; i < 4; i++) {
        // Entry i of both pairs: (p_i, p'_i) and (q_i, q'_i).
        f.get(xv, x2).op("i8x16.shuffle", lanesMask([i, 4 + i, i, 4 + i])).op("f64x2.promote_low_f32x4").set(
          x0,
        );
        f.get(yv, y2).op("i8x16.shuffle", lanesMask([i, 4 + i, i, 4 + i])).op("f64x2.promote_low_f32x4").set(
          y0,
        );
        f.get(av).get(x0, x0).op("f64x2.mul").op("f64x2.add").set(av);
        f.get(bv).get(y0, y0).op("f64x2.mul").op("f64x2.add").set(bv);
        f.get(gv).get(x0, y0).op("f64x2.mul").op("f64x2.add").set(gv);
      }
    });
    f.get(av).op("f64x2.extract_lane", 0).set(a);
    f.get(bv).op("f64x2.extract_lane", 0).set(b);
    f.get(gv).op("f64x2.extract_lane", 0).set(g);
    rotatePair();
    f.get(w).i32(1).op("i32.add").get(END).op("i32.lt_s").op("if", "void");
    f.get(w).i32(1).op("i32.add").set(w);
    f.get(av).op("f64x2.extract_lane", 1).set(a);
    f.get(bv).op("f64x2.extract_lane", 1).set(b);
    f.get(gv).op("f64x2.extract_lane", 1).set(g);
    rotatePair();
    f.op("end");
  });
  f.get(count).op("if", "void");
  f.get(CNT).get(count).op("i32.atomic.rmw.add", 0).op("drop");
  f.op("end");
  mb.exportFunction("run", mb.addFunction(f));
  return mb.encode();
}

let jacobiBytes: Uint8Array<ArrayBuffer> | null = null;
const jacobiKernels = new LruCache<string, CustomWasmKernel>(64);

/**
 * The wasm form of one Jacobi round of `layout` (`jacobiRoundWGSL`, whose host twin is `jacobiRoundHost`): work
 * items are the `slots/2` column pairs. One module serves every layout; the kernel object is cached per layout.
 */
export function jacobiRoundWasm(layout: JacobiLayout): CustomWasmKernel {
  const key = `${layout.rows}|${layout.stride}|${layout.slots}`;
  let k = jacobiKernels.get(key);
  if (k === undefined) {
    jacobiBytes ??= jacobiRoundModule();
    // Per pair: the dot products over the column and the rotation of the whole record (ns; 0.38 µs a pair
    // measured at rows 172, stride 344 on a 2-core x86 host).
    k = {
      bytes: jacobiBytes,
      items: layout.slots / 2,
      itemCost: 10 + layout.rows / 2 + layout.stride,
      scratchBytes: 0,
      usesMath: false,
    };
    jacobiKernels.set(key, k);
  }
  return k;
}
