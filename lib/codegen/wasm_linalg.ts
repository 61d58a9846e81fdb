/**
 * The one-sided Jacobi sweep of `kernels/jacobi.wgsl.ts` (`jacobiSweepHost`, its round twin applied round after
 * round) as a WebAssembly module for the wasm device, computing exactly what the host twin computes: the same
 * float64 operations in the same order (float32 loads promoted, sums accumulated one term after another, `f64.sqrt`
 * for `Math.sqrt`, no fused multiply-add) and float32 stores rounded to nearest as a `Float32Array` store rounds, so
 * the wasm device gives the cpu device's results bit for bit. It follows the calling convention of the other wasm
 * kernels (`run(start, end, scratch, ...buffers)`, its work items the threads that join it), with the buffers in the
 * host twin's binding order, and reads the sizes from the round's parameter buffer, so one module serves every size.
 * WebGPU runs the rounds one launch each (`jacobiRoundWGSL`). `loop` serves the other linear-algebra modules too.
 *
 * @module
 */
import { JACOBI_EPS_ROTATE, type JacobiLayout } from "../../kernels/jacobi.wgsl.ts";
import type { CustomWasmKernel, WasmFeatures } from "../ir/ops.ts";
import { FnBuilder, lanesMask, ModuleBuilder } from "./wasm_encode.ts";
import { WASM_MAX_PAGES } from "./wasm_emit.ts";
import { LruCache } from "./lru.ts";

/**
 * Sets `dist[j − 1]` (j = 1 .. dist.length), the byte distance from item `w` to item w + j of a pass, to j·`unit`
 * while w + j < `end`, else to the distance of item w + j − 1 (0 for j = 1): items past the end repeat the one
 * before them (their results computed twice, used once). `w`, `end`, `unit` and `dist` are i32 locals.
 */
export function passDistances(
  f: FnBuilder,
  w: number,
  end: number,
  unit: number,
  dist: readonly number[],
): void {
  for (let j = 1; j <= dist.length; j++) {
    f.get(w).i32(j).op("i32.add").get(end).op("i32.lt_s").op("if", "i32");
    f.get(unit).i32(j).op("i32.mul").op("else");
    if (j === 1) f.i32(0);
    else f.get(dist[j - 2]);
    f.op("end").set(dist[j - 1]);
  }
}

/** `for (; v < limit; v += step) body()` over i32 locals `v` and `limit` (`v` set by the caller). */
export function loop(f: FnBuilder, v: number, limit: number, step: number, body: () => void): void {
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

// Parameters of the pair function: the pair range, the source and destination records, the parameters, the floor.
const START = 0, END = 1, SRC = 2, DST = 3, PARAMS = 4, FLOOR = 5;

/** Pairs whose dot products one pass over their records computes together (two per float64 vector). */
const PAIRS_PER_PASS = 4;

/**
 * Adds `pairs(start, end, src, dst, params, floor) -> count` to `mb` and returns its index: pairs `start..end-1` of
 * one Jacobi round, as `jacobiRoundHost` computes them (its rotation is `hostRotation`), and how many of their
 * rotations count. The dot products of {@link PAIRS_PER_PASS} pairs run in one pass, two pairs side by side in the
 * two float64 lanes of a vector, each lane summing its pair's terms one entry after another (with `fma`, by fused
 * multiply-add: a product of two float32 values is exact in float64, so the sum rounds once either way); the
 * rotation, whose entries are independent, runs two entries at a time (per lane the host's operations). A pair that
 * needs no rotation gets the host's formula with s = τ = 0 in float32, four entries at a time: every intermediate
 * is then x, y or a signed zero, exact in both widths, so the bits are those of the float64 form (a −0 entry may
 * come out +0, as there). Every pair is computed alone, so any split of a round's pairs gives the host's bits.
 */
function addPairsFunction(mb: ModuleBuilder, fma: boolean): number {
  const f = new FnBuilder(Array.from({ length: 6 }, () => "i32" as const), ["i32"]);
  const locals = (n: number, t: "i32" | "f64" | "v128") => Array.from({ length: n }, () => f.local(t));
  const [w, q, po, qo, np, nq, off, rowsB, strideB, slots, count, rotate] = locals(12, "i32");
  const dist = locals(PAIRS_PER_PASS - 1, "i32");
  const [a, b, g, scale, zeta, t, c, s, tau, tol, zero] = locals(11, "f64");
  const [sv, tv, xv, yv, x0, x1, y0, y1, x2, y2] = locals(10, "v128");
  const sums = Array.from({ length: PAIRS_PER_PASS / 2 }, () => locals(3, "v128"));

  /** Sets `po` and `qo` to the byte addresses of the records of pair `w` (positions w and slots − 1 − w). */
  const addresses = () => {
    f.get(slots).i32(1).op("i32.sub").get(w).op("i32.sub").set(q);
    f.get(w).get(strideB).op("i32.mul").get(SRC).op("i32.add").set(po);
    f.get(q).get(strideB).op("i32.mul").get(SRC).op("i32.add").set(qo);
  };

  type AddSub = "f64x2.add" | "f64x2.sub";
  /** The two records of a pair after its rotation: [destination, u, v, outer, inner] with u' = u ∓ s·(v ± τ·u). */
  const sides = (): [number, number, number, AddSub, AddSub][] => [
    [np, x0, y0, "f64x2.sub", "f64x2.add"],
    [nq, y0, x0, "f64x2.add", "f64x2.sub"],
  ];

  /** From a, b and g of pair `w`: its rotation, applied to its records and stored at their next positions. */
  const rotatePair = () => {
    addresses();
    f.get(a).op("f64.sqrt").get(b).op("f64.sqrt").op("f64.mul").set(scale);
    f.op("f64.const", 0).set(s);
    f.op("f64.const", 0).set(tau);
    // Rotate when a > zero && b > zero && |g| > EPS·scale.
    f.get(a, zero).op("f64.gt").get(b, zero).op("f64.gt").op("i32.and");
    f.get(g).op("f64.abs").op("f64.const", JACOBI_EPS_ROTATE).get(scale).op("f64.mul").op("f64.gt");
    f.op("i32.and").op("local.tee", rotate).op("if", "void");
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
    f.i32(0).set(off);
    f.get(rotate).op("if", "void");
    {
      f.get(s).op("f64x2.splat").set(sv);
      f.get(tau).op("f64x2.splat").set(tv);
      // (x, y) ← (x − s(y + tau·x), y + s(x − tau·y)), four entries per iteration in two f64x2 halves.
      loop(f, off, strideB, 16, () => {
        f.get(po).get(off).op("i32.add").op("v128.load", 0).set(xv);
        f.get(qo).get(off).op("i32.add").op("v128.load", 0).set(yv);
        for (const [v, lo, hi] of [[xv, x0, x1], [yv, y0, y1]]) {
          f.get(v).op("f64x2.promote_low_f32x4").set(lo);
          f.get(v, v).op("i8x16.shuffle", lanesMask([2, 3, 2, 3])).op("f64x2.promote_low_f32x4").set(hi);
        }
        const high = (v: number) => v === x0 ? x1 : y1;
        for (const [dst, u, v, outer, inner] of sides()) {
          f.get(dst).get(off).op("i32.add");
          for (const [uh, vh] of [[u, v], [high(u), high(v)]]) {
            // u ∓ s·(v ± tau·u) in the host's order: tau·u, then v ± it, then s times that, then u ∓ it.
            f.get(uh, sv, vh, tv, uh).op("f64x2.mul").op(inner).op("f64x2.mul").op(outer);
            f.op("f32x4.demote_f64x2_zero");
          }
          f.op("i8x16.shuffle", lanesMask([0, 1, 4, 5])).op("v128.store", 0);
        }
      });
    }
    f.op("else");
    {
      // s = tau = +0: the same operations in float32 (see above), four entries per iteration.
      const z = new Uint8Array(16);
      loop(f, off, strideB, 16, () => {
        f.get(po).get(off).op("i32.add").op("v128.load", 0).set(x0);
        f.get(qo).get(off).op("i32.add").op("v128.load", 0).set(y0);
        for (const [dst, u, v, outer, inner] of sides()) {
          f.get(dst).get(off).op("i32.add");
          f.get(u).op("v128.const", z).get(v).op("v128.const", z).get(u);
          f.op("f32x4.mul").op(inner === "f64x2.add" ? "f32x4.add" : "f32x4.sub").op("f32x4.mul");
          f.op(outer === "f64x2.add" ? "f32x4.add" : "f32x4.sub").op("v128.store", 0);
        }
      });
    }
    f.op("end");
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
    // Pair w + j (j < PAIRS_PER_PASS) has its records `dist[j − 1]` bytes after p and before q.
    passDistances(f, w, END, strideB, dist);
    for (const v of sums.flat()) f.op("v128.const", new Uint8Array(16)).set(v);
    /** Pushes the byte address of entries `off..` of pair w + j's record at p (`sign` 1) or at q (−1). */
    const at = (base: number, j: number, sign: 1 | -1) => {
      f.get(base);
      if (j > 0) f.get(dist[j - 1]).op(sign > 0 ? "i32.add" : "i32.sub");
      f.get(off).op("i32.add");
    };
    // a = ‖p‖², b = ‖q‖², g = p·q of each pair, summed in entry order: pairs w + 2h (lane 0) and w + 2h + 1
    // (lane 1) in sums[h].
    f.i32(0).set(off);
    loop(f, off, rowsB, 16, () => {
      sums.forEach(([av, bv, gv], h) => {
        for (const [v, base, sign] of [[xv, po, 1], [x2, po, 1], [yv, qo, -1], [y2, qo, -1]] as const) {
          at(base, 2 * h + (v === x2 || v === y2 ? 1 : 0), sign);
          f.op("v128.load", 0).set(v);
        }
        // Entries 0, 1 of both pairs' records interleaved (lo), then entries 2, 3 (hi, in place of the second).
        for (const [u, v, lo] of [[xv, x2, x1], [yv, y2, y1]]) {
          f.get(u, v).op("i8x16.shuffle", lanesMask([0, 4, 1, 5])).set(lo);
          f.get(u, v).op("i8x16.shuffle", lanesMask([2, 6, 3, 7])).set(v);
        }
        for (let i = 0; i < 4; i++) {
          // Entry i of both pairs: (p_i, p'_i) in x0 and (q_i, q'_i) in y0.
          for (const [d, lo, hi] of [[x0, x1, x2], [y0, y1, y2]]) {
            const src = i < 2 ? lo : hi;
            f.get(src);
            if (i % 2 === 1) f.get(src).op("i8x16.shuffle", lanesMask([2, 3, 2, 3]));
            f.op("f64x2.promote_low_f32x4").set(d);
          }
          for (const [u, v, acc] of [[x0, x0, av], [y0, y0, bv], [x0, y0, gv]]) {
            if (fma) f.get(u, v, acc).op("f64x2.relaxed_madd").set(acc);
            else f.get(acc).get(u, v).op("f64x2.mul").op("f64x2.add").set(acc);
          }
        }
      });
    });
    for (let j = 0; j < PAIRS_PER_PASS; j++) {
      if (j > 0) {
        // Pair w + 1 (w moved on to the pair just rotated), when there is one.
        f.get(w).i32(1).op("i32.add").get(END).op("i32.lt_s").op("if", "void");
        f.get(w).i32(1).op("i32.add").set(w);
      }
      const [av, bv, gv] = sums[j >> 1];
      f.get(av).op("f64x2.extract_lane", j & 1).set(a);
      f.get(bv).op("f64x2.extract_lane", j & 1).set(b);
      f.get(gv).op("f64x2.extract_lane", j & 1).set(g);
      rotatePair();
    }
    for (let j = 1; j < PAIRS_PER_PASS; j++) f.op("end");
  });
  f.get(count);
  return mb.addFunction(f);
}

/** Most parts a sweep's rounds are cut into (one per thread; more threads share them). */
export const SWEEP_MAX_PARTS = 16;

/**
 * Least estimated work (ns) of one part of a round: every round ends with a wait for all parts, which cost as much as
 * it saved at 64 records of 64 rows (5.4 µs of pairs a round: 0.61–0.71 ms a sweep on two threads, 0.66–0.73 on one,
 * on a 2-core x86 host); 80 records (8.4 µs) took 0.68–0.73 ms on two threads, 1.10–1.14 on one.
 */
export const SWEEP_PART_MIN_NS = 4_000;

/** Control words of the sweep: the finished parts, the sleepers, and one claim word per part. */
export const SWEEP_CONTROL_WORDS = 2 + SWEEP_MAX_PARTS;

/**
 * Polls of the finished parts before a thread of the sweep sleeps until the next part is finished (about 0.1 ms:
 * with 4,096 polls a sweep of 172 records on two threads took 5.5 ms, with 65,536 4.8, mostly woken by a notify).
 */
const SWEEP_SPINS = 65536;

/**
 * Sleeps of 1 ms that end with no part finished, in one round, after which a waiting thread of the sweep traps
 * (about a minute): a thread that trapped inside its part (only a bad address can make one) never counts it
 * finished, and the threads waiting for it would otherwise keep the job, and the program, waiting for ever. The
 * trap ends their chunk with an error, and the job with it.
 */
export const SWEEP_GIVE_UP_SLEEPS = 60_000;

/**
 * Emits into `f` the rounds of a job that every thread calling it shares (the machinery of
 * {@link jacobiSweepModule}, whose doc says why it is so): each of the `rounds` rounds (an i32 local) is cut into
 * `parts` parts, and a call with work items from `start` (an i32 parameter) owns part `start mod parts`. Each round a
 * thread claims its own part first, then any part no thread has claimed, runs `part(round, part)` (i32 locals) for
 * each part it claimed and counts it finished, and waits until every part of the round is finished before the next.
 * Control words at `ctl` (an i32 parameter, {@link SWEEP_CONTROL_WORDS} of them, zero when the job starts): the
 * finished parts, the sleepers, and the rounds for which each part is claimed. A thread starts at the round in
 * progress; it polls the finished parts, then sleeps on them (counted among the sleepers, woken by a thread that
 * finishes a part), and traps after `giveUp` sleeps of one round that end with no part finished.
 */
export function sharedRounds(
  f: FnBuilder,
  o: { parts: number; start: number; ctl: number; rounds: number; giveUp: number },
  part: (round: number, part: number) => void,
): void {
  const { parts, ctl, rounds } = o;
  const [round, own, i, p, need, spins, seen, nParts, idle] = Array.from({ length: 9 }, () => f.local("i32"));
  f.get(o.start).i32(parts).op("i32.rem_u").set(own);
  f.i32(parts).set(nParts);
  // Start at the round in progress: every part of the rounds before it is finished.
  f.get(ctl).op("i32.atomic.load", 0).i32(parts).op("i32.div_u").set(round);
  f.op("block").op("loop");
  {
    f.get(round, rounds).op("i32.ge_u").op("br_if", 1);
    f.i32(0).set(i);
    loop(f, i, nParts, 1, () => {
      f.get(own, i).op("i32.add").i32(parts).op("i32.rem_u").set(p);
      // Claim the part for this round: its claim word goes from round to round + 1 unless a thread came first.
      f.get(ctl).get(p).i32(4).op("i32.mul").op("i32.add");
      f.get(round).get(round).i32(1).op("i32.add").op("i32.atomic.rmw.cmpxchg", 8);
      f.get(round).op("i32.eq").op("if", "void");
      {
        part(round, p);
        f.get(ctl).i32(1).op("i32.atomic.rmw.add", 0).op("drop");
        f.get(ctl).op("i32.atomic.load", 4).op("if", "void");
        f.get(ctl).i32(0x7fffffff).op("memory.atomic.notify", 0).op("drop");
        f.op("end");
      }
      f.op("end");
    });
    f.get(round).i32(1).op("i32.add").set(round);
    // Wait until every part of the round is finished: poll, then sleep until a finished part wakes the sleepers
    // (or 1 ms passed).
    f.get(round).i32(parts).op("i32.mul").set(need);
    f.i32(0).set(spins);
    f.i32(0).set(idle);
    f.op("block").op("loop");
    {
      f.get(ctl).op("i32.atomic.load", 0).get(need).op("i32.ge_u").op("br_if", 1);
      f.get(spins).i32(1).op("i32.add").op("local.tee", spins).i32(SWEEP_SPINS).op("i32.lt_u").op("br_if", 0);
      f.get(ctl).i32(1).op("i32.atomic.rmw.add", 4).op("drop");
      f.get(ctl).op("i32.atomic.load", 0).op("local.tee", seen).get(need).op("i32.lt_u").op("if", "void");
      // 2: timed out. Give up after `giveUp` of them in this round.
      f.get(ctl).get(seen).op("i64.const", 1_000_000).op("memory.atomic.wait32", 0).i32(2).op("i32.eq");
      f.op("if", "void");
      f.get(idle).i32(1).op("i32.add").op("local.tee", idle).i32(o.giveUp).op("i32.ge_u");
      f.op("if", "void").op("unreachable").op("end");
      f.op("end");
      f.op("end");
      f.get(ctl).i32(-1).op("i32.atomic.rmw.add", 4).op("drop");
      f.op("br", 0);
    }
    f.op("end").op("end");
    f.op("br", 0);
  }
  f.op("end").op("end");
}

/**
 * `run(start, end, scratch, src, a, b, cnt, params, floor, ctl)`: one whole sweep, the `slots − 1` rounds of
 * `jacobiSweepHost` (round 0 reads src and writes a, then the rounds ping-pong between a and b), run by every thread
 * that calls it. Every round is cut into `parts` ranges of consecutive pairs, and its work items are `parts`
 * tickets: a call is one thread joining the sweep, whatever its range, and owns part `start mod parts`. In each
 * round a joined thread claims its own part first, then any other part no thread has claimed (a thread that joins
 * late, or never, leaves its part to the others), computes the parts it claimed and counts them finished, and waits
 * until every part of the round is finished before the next. Owning a part keeps the records where they are:
 * round r + 1's pair w reads what round r's pairs w − 1 and w + 1 wrote, so a thread mostly reads what it wrote
 * itself (parts claimed in turn moved most records between cores every round, slower on two threads than on one).
 * Part c's claim word `ctl[2 + c]` holds the rounds for which it is claimed (a claim moves it from r to r + 1 with a
 * compare-and-swap); `ctl[0]` counts finished parts. A thread waits only after claiming what it can, so the sweep
 * ends whether workers join early, late or never; a thread that joins starts at the round in progress, and one that
 * joins after the sweep returns at once. A thread waits by polling `ctl[0]`, then, if the others still have not
 * finished the round (one of them lost its core to another process), sleeping on it (`memory.atomic.wait32`),
 * counted in `ctl[1]`: a thread that finishes a part wakes the sleepers; `opts.giveUp` sleeps of a round that time
 * out make it trap (default {@link SWEEP_GIVE_UP_SLEEPS}). The control words must be zero when the sweep starts.
 * Rotations that count are added to the counter once per call. `opts.fma` sums the dot products by relaxed-SIMD
 * fused multiply-add (the same bits; default false). Exported for its tests.
 */
export function jacobiSweepModule(
  parts: number,
  opts: { fma?: boolean; giveUp?: number } = {},
): Uint8Array<ArrayBuffer> {
  const giveUp = opts.giveUp ?? SWEEP_GIVE_UP_SLEEPS;
  const mb = new ModuleBuilder();
  mb.importMemory("env", "mem", { min: 1, max: WASM_MAX_PAGES, shared: true });
  const pairs = addPairsFunction(mb, opts.fma === true);
  const f = new FnBuilder(Array.from({ length: 10 }, () => "i32" as const), []);
  const [rounds, half, count] = Array.from({ length: 3 }, () => f.local("i32"));
  // run's parameters: 0 start, 1 end, 2 scratch, 3 src, 4 a, 5 b, 6 cnt, 7 params, 8 floor, 9 ctl.
  const [START, S, A, B, CNT, PRM, FLR, CTL] = [0, 3, 4, 5, 6, 7, 8, 9];
  /** Pushes the first pair of part `p` (a local): ⌊p · half / parts⌋. */
  const firstPair = (push: () => void) => {
    push();
    f.get(half).op("i32.mul").i32(parts).op("i32.div_u");
  };
  f.get(PRM).op("i32.load", 8).i32(1).op("i32.shr_u").set(half);
  f.get(PRM).op("i32.load", 8).i32(1).op("i32.sub").set(rounds);
  f.i32(0).set(count);
  sharedRounds(f, { parts, start: START, ctl: CTL, rounds, giveUp }, (round, part) => {
    firstPair(() => f.get(part));
    firstPair(() => f.get(part).i32(1).op("i32.add"));
    // Round 0 reads src; odd rounds read a and write b, even ones read b and write a.
    f.get(S);
    f.get(A, B).get(round).i32(1).op("i32.and").op("select");
    f.get(round).op("i32.eqz").op("select");
    f.get(B, A).get(round).i32(1).op("i32.and").op("select");
    f.get(PRM, FLR).op("call", pairs).get(count).op("i32.add").set(count);
  });
  f.get(count).op("if", "void");
  f.get(CNT).get(count).op("i32.atomic.rmw.add", 0).op("drop");
  f.op("end");
  mb.exportFunction("run", mb.addFunction(f));
  return mb.encode();
}

const jacobiKernels = new LruCache<string, CustomWasmKernel>(64);

const sweepBytes = new Map<string, Uint8Array<ArrayBuffer>>();

/**
 * The wasm form of one whole Jacobi sweep of `layout` (`jacobiSweepHost`) for a pool of `features.threads` threads:
 * its work items are one ticket per part of the rounds (see {@link jacobiSweepModule}), as many as threads (at most
 * {@link SWEEP_MAX_PARTS}) but with {@link SWEEP_PART_MIN_NS} of a round's estimated work per part, each costed at
 * its share of the sweep, so the pool hands every thread one ticket. The dot products use fused multiply-add where
 * `features.relaxedSimd` says the runtime has it (the same bits either way). The kernel object is cached per
 * layout, thread count and that feature.
 */
export function jacobiSweepWasm(layout: JacobiLayout, features: WasmFeatures): CustomWasmKernel {
  const { threads, relaxedSimd: fma } = features;
  // Per pair: the dot products over the column and the rotation of the whole record (ns; 0.38 µs a pair measured
  // at rows 172, stride 344 on a 2-core x86 host with two pairs a pass; the four-pair pass is ~1.3× faster, and the
  // estimate, which only decides how a sweep is split, was left as it was).
  const pairCost = 10 + layout.rows / 2 + layout.stride;
  const roundCost = (layout.slots / 2) * pairCost;
  const parts = Math.max(1, Math.min(threads, SWEEP_MAX_PARTS, Math.floor(roundCost / SWEEP_PART_MIN_NS)));
  const key = `sweep|${layout.rows}|${layout.stride}|${layout.slots}|${parts}|${fma}`;
  let k = jacobiKernels.get(key);
  if (k === undefined) {
    let bytes = sweepBytes.get(`${parts}|${fma}`);
    if (bytes === undefined) sweepBytes.set(`${parts}|${fma}`, bytes = jacobiSweepModule(parts, { fma }));
    k = {
      bytes,
      items: parts,
      itemCost: Math.ceil(((layout.slots - 1) * roundCost) / parts),
      scratchBytes: 0,
      usesMath: false,
    };
    jacobiKernels.set(key, k);
  }
  return k;
}
