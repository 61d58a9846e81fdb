/**
 * The fused attention kernels of `kernels/attention.wgsl.ts` as WebAssembly modules for the wasm device: the same
 * math and layouts, in f32 with four lanes at a time, following the calling convention of the other wasm kernels
 * (`run(start, end, scratch, out, q, k, v, ...)` computes work items `start..end-1`, so the thread pool can split
 * them).
 *
 * Lanes run along keys (forward, queries) or queries (keys and values): four dot products at once, summed across
 * lanes with two rounds of shuffles, the exponentials of four scores in one `f32x4` exp (the routine of
 * `wasm_emit.ts`, within 2 ulp). A last group of fewer than four reads the last valid row again and masks its lanes
 * (a score of -inf, a weight of 0), so no loop has a scalar tail. Per row:
 *
 * - forward: the scores `scale·q·k_s` into the thread's scratch and their maximum `m`, then `p_s = exp(score_s -
 *   m)` and `l = Σ p_s`, then `O = Σ p_s v_s / l` and `L = m + log l` (two passes instead of the WGSL kernel's
 *   online softmax: the same value up to rounding);
 * - backward for queries: `Δ = dO·O`, `dS_s = exp(score_s - L)(dO·v_s - Δ)`, `dQ = scale Σ dS_s k_s`;
 * - backward for keys and values: over the `G` query heads of the group and the queries that see the key,
 *   `dV = Σ P dO` and `dK = scale Σ dS q`.
 *
 * With RoPE (`dims.rope`, the tables `cos` and `sin` as the last two inputs) each kernel rotates what it
 * reads, as the WGSL kernels do: the row it works on in registers (and its gradient back before storing it),
 * and the rows it loops over once per sequence into the thread's scratch (all keys of the sequence for the
 * forward and query passes, all its queries for the key/value pass), where the loops read them as they read
 * unrotated inputs. Rows are ordered by sequence, so a call rotates each sequence it meets once.
 *
 * @module
 */
import type { AttentionDims } from "../../kernels/attention.wgsl.ts";
import { FnBuilder, lanesMask, ModuleBuilder } from "./wasm_encode.ts";
import { Helpers, WASM_MAX_PAGES, type WasmKernel, type WasmRenderOptions } from "./wasm_emit.ts";
import { LruCache } from "./lru.ts";

/** Which of the three attention kernels. */
export type AttentionPass = "forward" | "backward_query" | "backward_key_value";

const f32x4 = (xs: readonly number[]) => new Uint8Array(new Float32Array(xs).buffer);
const i32x4 = (xs: readonly number[]) => new Uint8Array(new Int32Array(xs).buffer);

/** Where row `j` of a group of four lies: the byte address in i32 local `addr`, plus `offset` bytes. */
type Rows = (j: number) => { readonly addr: number; readonly offset: number };

/** The RoPE tables: the parameter indices of their byte addresses. */
interface Tables {
  readonly cos: number;
  readonly sin: number;
}

/** Emitting helpers over one function. */
class Emit {
  readonly f: FnBuilder;
  readonly help: Helpers;
  readonly #fma: boolean;
  constructor(f: FnBuilder, help: Helpers, fma: boolean) {
    this.f = f;
    this.help = help;
    this.#fma = fma;
  }

  /** `for (v = from; v < to; v += step) body()`, `from` and `to` pushed by the callbacks. */
  loop(v: number, from: () => void, to: () => void, step: number, body: () => void): void {
    const f = this.f;
    from();
    f.set(v);
    f.op("block").op("loop");
    f.get(v);
    to();
    f.op("i32.ge_s").op("br_if", 1);
    body();
    f.get(v).i32(step).op("i32.add").set(v);
    f.op("br", 0).op("end").op("end");
  }

  /** `acc = a·b + acc` (a, b, acc v128 locals; fused where relaxed SIMD is available). */
  madd(acc: number, a: () => void, b: () => void): void {
    const f = this.f;
    if (this.#fma) {
      a();
      b();
      f.get(acc).op("f32x4.relaxed_madd").set(acc);
    } else {
      f.get(acc);
      a();
      b();
      f.op("f32x4.mul").op("f32x4.add").set(acc);
    }
  }

  /** Pushes `[Σ lanes of x0, Σ x1, Σ x2, Σ x3]` for four v128 locals. */
  hsum4(x: readonly number[]): void {
    const f = this.f;
    const t0 = f.local("v128");
    const half = (a: number, b: number) => {
      f.get(a, b).op("i8x16.shuffle", lanesMask([0, 1, 4, 5]));
      f.get(a, b).op("i8x16.shuffle", lanesMask([2, 3, 6, 7]));
      f.op("f32x4.add");
    };
    half(x[0], x[1]);
    f.set(t0);
    const t1 = f.local("v128");
    half(x[2], x[3]);
    f.set(t1);
    f.get(t0, t1).op("i8x16.shuffle", lanesMask([0, 2, 4, 6]));
    f.get(t0, t1).op("i8x16.shuffle", lanesMask([1, 3, 5, 7]));
    f.op("f32x4.add");
  }

  /** Pushes the f32 combination (`f32x4.add` or `f32x4.max`) of the four lanes of the v128 local `x`. */
  across(x: number, op: "f32x4.add" | "f32x4.max"): void {
    const f = this.f;
    const t = f.local("v128");
    f.get(x, x).op("i8x16.shuffle", lanesMask([2, 3, 0, 1])).get(x).op(op).set(t);
    f.get(t, t).op("i8x16.shuffle", lanesMask([1, 0, 3, 2])).get(t).op(op).op("f32x4.extract_lane", 0);
  }

  /** Pushes lane `l` of the v128 local `x` in every lane. */
  broadcast(x: number, l: number): void {
    this.f.get(x, x).op("i8x16.shuffle", lanesMask([l, l, l, l]));
  }

  /**
   * Sets the four v128 locals `acc[j] = Σ_i x[i] · mem[row_j + 16 i]`: partial dot products of the vector locals
   * `x` with four rows of memory.
   */
  dots4(acc: readonly number[], x: readonly number[], rows: Rows): void {
    const f = this.f;
    for (let j = 0; j < 4; j++) {
      const { addr, offset } = rows(j);
      f.get(x[0]).get(addr).op("v128.load", offset).op("f32x4.mul").set(acc[j]);
      for (let i = 1; i < x.length; i++) {
        this.madd(acc[j], () => f.get(x[i]), () => f.get(addr).op("v128.load", offset + 16 * i));
      }
    }
  }

  /** Four consecutive rows `stride` bytes apart from the address in i32 local `addr`. */
  static strided(addr: number, stride: number): Rows {
    return (j) => ({ addr, offset: j * stride });
  }

  /**
   * Four rows for the last, partial group: `out[j] = base + min(first + j, n - 1) · stride` (i32 locals `first`,
   * `n`, `base`; the addresses go to the i32 locals `out`), so that rows past the last one read it again.
   */
  clampedRows(out: readonly number[], base: number, first: number, n: number, stride: number): Rows {
    const f = this.f;
    const t = f.local("i32");
    const last = f.local("i32");
    f.get(n).i32(1).op("i32.sub").set(last);
    for (let j = 0; j < 4; j++) {
      f.get(first).i32(j).op("i32.add").set(t);
      f.get(t).get(last).get(t).get(last).op("i32.lt_s").op("select");
      f.i32(stride).op("i32.mul").get(base).op("i32.add").set(out[j]);
    }
    return (j) => ({ addr: out[j], offset: 0 });
  }

  /**
   * `for (v = 0; v + 4 <= n; v += 4) full(); if (v < n) tail();` (`v`, `n` i32 locals): groups of four rows, then
   * the last partial group.
   */
  groups(v: number, n: number, full: () => void, tail: () => void): void {
    const f = this.f;
    f.i32(0).set(v);
    f.op("block").op("loop");
    f.get(v).i32(4).op("i32.add").get(n).op("i32.gt_s").op("br_if", 1);
    full();
    f.get(v).i32(4).op("i32.add").set(v);
    f.op("br", 0).op("end").op("end");
    f.get(v).get(n).op("i32.lt_s").op("if", "void");
    tail();
    f.op("end");
  }

  /** Pushes a lane mask: all ones in lane j where `first + j < n` (i32 locals). */
  validLanes(first: number, n: number): void {
    this.f.get(first).op("i32x4.splat").op("v128.const", i32x4([0, 1, 2, 3])).op("i32x4.add");
    this.f.get(n).op("i32x4.splat").op("i32x4.lt_s");
  }

  /** Loads `count` consecutive v128s from the address in i32 local `addr`, each times `scale` (1: as is). */
  loadRow(addr: number, count: number, scale = 1): number[] {
    const f = this.f;
    return Array.from({ length: count }, (_, i) => {
      const x = f.local("v128");
      f.get(addr).op("v128.load", 16 * i);
      if (scale !== 1) f.op("v128.const", f32x4([scale, scale, scale, scale])).op("f32x4.mul");
      f.set(x);
      return x;
    });
  }

  /** Multiplies each of the v128 locals `xs` by `scale` in place. */
  scaleRow(xs: readonly number[], scale: number): void {
    const f = this.f;
    for (const x of xs) f.get(x).op("v128.const", f32x4([scale, scale, scale, scale])).op("f32x4.mul").set(x);
  }

  /**
   * The RoPE factors of a row of `4·count` floats at the table row whose byte offset (`pos · D/2 · 4`) is in
   * the i32 local `at`. Vec4 `i` of the row holds the pairs of angles `2i` and `2i + 1`; its factors are the
   * v128 locals `c = (cos₂ᵢ, cos₂ᵢ, cos₂ᵢ₊₁, cos₂ᵢ₊₁)` and `s = (−sin₂ᵢ, sin₂ᵢ, −sin₂ᵢ₊₁, sin₂ᵢ₊₁)` (the
   * signs the other way round for the transpose, `back`), so that the rotated vec4 is `x·c + swap(x)·s`.
   */
  ropeFactors(tables: Tables, at: number, count: number, back: boolean): { c: number[]; s: number[] } {
    const f = this.f;
    const spread = lanesMask([0, 0, 1, 1]);
    const negative = back ? [0, 0x80000000, 0, 0x80000000] : [0x80000000, 0, 0x80000000, 0];
    const factor = (table: number, i: number, sign: number[] | null) => {
      const x = f.local("v128");
      // (a, b, a, b) from the two angles, spread to (a, a, b, b).
      f.get(table).get(at).op("i32.add").op("v128.load64_splat", 8 * i).op("local.tee", x).get(x);
      f.op("i8x16.shuffle", spread);
      if (sign !== null) f.op("v128.const", i32x4(sign)).op("v128.xor");
      f.set(x);
      return x;
    };
    const c: number[] = [];
    const s: number[] = [];
    for (let i = 0; i < count; i++) {
      c.push(factor(tables.cos, i, null));
      s.push(factor(tables.sin, i, negative));
    }
    return { c, s };
  }

  /**
   * Rotates the v128 locals `xs` in place by the factors of {@link ropeFactors}: each pair (x₀, x₁) becomes
   * `(x₀ cos − x₁ sin, x₀ sin + x₁ cos)` (the transpose for factors made `back`).
   */
  rotate(xs: readonly number[], factors: { readonly c: number[]; readonly s: number[] }): void {
    const f = this.f;
    xs.forEach((x, i) => {
      f.get(x).get(factors.c[i]).op("f32x4.mul");
      f.get(x, x).op("i8x16.shuffle", lanesMask([1, 0, 3, 2])).get(factors.s[i]).op("f32x4.mul");
      f.op("f32x4.add").set(x);
    });
  }

  /** Rotates the v128 locals `xs` (a row of `4·xs.length` floats) in place to the position `pos` pushes. */
  rotateAt(xs: readonly number[], tables: Tables, pos: () => void, back: boolean): void {
    const f = this.f;
    const at = f.local("i32");
    // The table row's byte offset: pos · D/2 floats of 4 bytes.
    pos();
    f.i32(8 * xs.length).op("i32.mul").set(at);
    this.rotate(xs, this.ropeFactors(tables, at, xs.length, back));
  }

  /** Declares `count` v128 locals set to zero. */
  zeros(count: number): number[] {
    const f = this.f;
    return Array.from({ length: count }, () => {
      const x = f.local("v128");
      f.op("v128.const", f32x4([0, 0, 0, 0])).set(x);
      return x;
    });
  }

  /** Stores `count` v128 locals at the address in i32 local `addr` (+ `offset` bytes), each times `scale`. */
  storeRow(addr: number, xs: readonly number[], offset: number, scale = 1): void {
    const f = this.f;
    xs.forEach((x, i) => {
      f.get(addr).get(x);
      if (scale !== 1) f.op("v128.const", f32x4([scale, scale, scale, scale])).op("f32x4.mul");
      f.op("v128.store", offset + 16 * i);
    });
  }
}

/** A module with the shared memory and `run(start, end, scratch, out, ...inputs)`. */
function moduleFor(inputs: number, fma: boolean): { mb: ModuleBuilder; e: Emit } {
  const mb = new ModuleBuilder();
  mb.importMemory("env", "mem", { min: 1, max: WASM_MAX_PAGES, shared: true });
  const help = new Helpers(mb, null);
  const f = new FnBuilder(Array.from({ length: 4 + inputs }, () => "i32" as const), []);
  return { mb, e: new Emit(f, help, fma) };
}

const START = 0;
const END = 1;
const SCRATCH = 2;
const OUT = 3;
const Q = 4;
const K = 5;
const V = 6;
const DOUT = 7;
const FWD = 8;
const BQ = 9;

/** The tables after the kernel's `inputs` inputs. */
function tablesAfter(inputs: number): Tables {
  return { cos: Q + inputs, sin: Q + inputs + 1 };
}

/**
 * Rotates one sequence's rows by RoPE into memory: `n` positions of `per` rows of `D` floats, read from the
 * byte address in the i32 local `src` on and written from the one in `dst` on; position `p` uses the table
 * row `p + shift`.
 */
function rotateRows(
  e: Emit,
  a: AttentionDims,
  tables: Tables,
  rows: { src: number; dst: number; n: number; per: number; shift: number },
): void {
  const f = e.f;
  const d4 = a.d / 4;
  const p = f.local("i32");
  const r = f.local("i32");
  const at = f.local("i32");
  const sp = f.local("i32");
  const dp = f.local("i32");
  f.get(rows.src).set(sp);
  f.get(rows.dst).set(dp);
  e.loop(p, () => f.i32(0), () => f.i32(rows.n), 1, () => {
    f.get(p).i32(rows.shift).op("i32.add").i32(2 * a.d).op("i32.mul").set(at);
    const factors = e.ropeFactors(tables, at, d4, false);
    e.loop(r, () => f.i32(0), () => f.i32(rows.per), 1, () => {
      const x = e.loadRow(sp, d4);
      e.rotate(x, factors);
      e.storeRow(dp, x, 0);
      f.get(sp).i32(a.d * 4).op("i32.add").set(sp);
      f.get(dp).i32(a.d * 4).op("i32.add").set(dp);
    });
  });
}

/** `if (b != done) { body(); done = b; }` over the i32 locals `b` and `done`: work once per sequence. */
function oncePerSequence(e: Emit, b: number, done: number, body: () => void): void {
  const f = e.f;
  f.get(b).get(done).op("i32.ne").op("if", "void");
  body();
  f.get(b).set(done);
  f.op("end");
}

/**
 * Sets the i32 locals of a query row's indices: `b`, `t`, `kh`, the number of keys `n` it sees and the byte
 * offset `kv` of its first key/value row (`((b·S)·Hkv + kh)·D·4`). With a sliding window, `skip` (else null) holds
 * the byte offset of the first key the row sees from key 0 (`first·Hkv·D·4`), which the caller adds to the
 * addresses of its keys and values.
 */
function queryRow(
  e: Emit,
  a: AttentionDims,
  row: number,
): { b: number; t: number; kh: number; n: number; kv: number; skip: number | null } {
  const f = e.f;
  const t = f.local("i32");
  const b = f.local("i32");
  const kh = f.local("i32");
  const n = f.local("i32");
  const kv = f.local("i32");
  const g = a.h / a.hkv;
  f.get(row).i32(a.h).op("i32.div_u").i32(a.t).op("i32.rem_u").set(t);
  f.get(row).i32(a.h * a.t).op("i32.div_u").set(b);
  f.get(row).i32(a.h).op("i32.rem_u").i32(g).op("i32.div_u").set(kh);
  // Query t sees keys 0 .. t + S - T when causal, all S otherwise.
  if (a.causal) f.get(t).i32(a.s - a.t + 1).op("i32.add").set(n);
  else f.i32(a.s).set(n);
  f.get(b).i32(a.s * a.hkv).op("i32.mul").get(kh).op("i32.add").i32(a.d * 4).op("i32.mul").set(kv);
  if (a.window === undefined) return { b, t, kh, n, kv, skip: null };
  // With a window W the row sees keys first .. n − 1, first = max(0, n − W): n − first of them, from key first on.
  const first = f.local("i32");
  const skip = f.local("i32");
  f.get(n).i32(a.window).op("i32.sub").op("local.tee", first).i32(0).get(first).i32(0).op("i32.gt_s");
  f.op("select").set(first);
  f.get(n).get(first).op("i32.sub").set(n);
  f.get(first).i32(a.hkv * a.d * 4).op("i32.mul").set(skip);
  return { b, t, kh, n, kv, skip };
}

/** Moves the i32 locals `addrs` (key and value row addresses) to the first key in the row's window, if any. */
function skipTo(e: Emit, skip: number | null, addrs: readonly number[]): void {
  if (skip === null) return;
  for (const x of addrs) e.f.get(x).get(skip).op("i32.add").set(x);
}

/**
 * The sequence's keys rotated into memory from the i32 local `keys` on (once per sequence; `done`: the
 * sequence there), and the byte address of the row's first key there into the i32 local `kb`.
 */
function rotatedKeys(
  e: Emit,
  a: AttentionDims,
  tables: Tables,
  at: { b: number; kh: number; keys: number; done: number; kb: number },
): void {
  const f = e.f;
  oncePerSequence(e, at.b, at.done, () => {
    const src = f.local("i32");
    f.get(at.b).i32(a.s * a.hkv * a.d * 4).op("i32.mul").get(K).op("i32.add").set(src);
    rotateRows(e, a, tables, { src, dst: at.keys, n: a.s, per: a.hkv, shift: 0 });
  });
  f.get(at.kh).i32(a.d * 4).op("i32.mul").get(at.keys).op("i32.add").set(at.kb);
}

/**
 * Loads the row at the byte address in i32 local `addr` times scale, rotated first (RoPE, when there are `tables`) to
 * the position `pos` pushes.
 */
function scaledRow(
  e: Emit,
  a: AttentionDims,
  addr: number,
  tables: Tables | null,
  pos: () => void,
): number[] {
  if (tables === null) return e.loadRow(addr, a.d / 4, Math.fround(a.scale));
  const xs = e.loadRow(addr, a.d / 4);
  e.rotateAt(xs, tables, pos, false);
  e.scaleRow(xs, Math.fround(a.scale));
  return xs;
}

/** Loads the query row at the byte address in i32 local `qa`, rotated to its position (RoPE), times scale. */
function queryRegisters(e: Emit, a: AttentionDims, qa: number, t: number, tables: Tables | null): number[] {
  // Query t sits at position t + S - T.
  return scaledRow(e, a, qa, tables, () => e.f.get(t).i32(a.s - a.t).op("i32.add"));
}

function forward(a: AttentionDims, fma: boolean): Uint8Array<ArrayBuffer> {
  const tables = a.rope ? tablesAfter(3) : null;
  const { mb, e } = moduleFor(tables === null ? 3 : 5, fma);
  const f = e.f;
  const d4 = a.d / 4;
  const rows = a.b * a.t * a.h;
  const ks = a.hkv * a.d * 4;
  const logf = e.help.logf();
  const row = f.local("i32");
  const s = f.local("i32");
  const qa = f.local("i32");
  const kb = f.local("i32");
  const vb = f.local("i32");
  const kp = f.local("i32");
  const sp = f.local("i32");
  const oa = f.local("i32");
  const m = f.local("f32");
  const l = f.local("f32");
  const mv = f.local("v128");
  const lv = f.local("v128");
  const sc = f.local("v128");
  const p = f.local("v128");
  const ka = [0, 1, 2, 3].map(() => f.local("i32"));
  const dots = [0, 1, 2, 3].map(() => f.local("v128"));
  const NEG_INF = f32x4([-Infinity, -Infinity, -Infinity, -Infinity]);
  // With RoPE: the rotated keys of sequence `done` after the scores in the scratch.
  const keys = f.local("i32");
  const done = f.local("i32");
  if (tables !== null) {
    f.get(SCRATCH).i32(scoresBytes(a)).op("i32.add").set(keys);
    f.i32(-1).set(done);
  }
  e.loop(row, () => f.get(START), () => f.get(END), 1, () => {
    const { b, t, kh, n, kv, skip } = queryRow(e, a, row);
    f.get(row).i32(a.d * 4).op("i32.mul").set(qa);
    f.get(qa).get(Q).op("i32.add").set(qa);
    if (tables === null) f.get(kv).get(K).op("i32.add").set(kb);
    else rotatedKeys(e, a, tables, { b, kh, keys, done, kb });
    f.get(kv).get(V).op("i32.add").set(vb);
    skipTo(e, skip, [kb, vb]);
    const qv = queryRegisters(e, a, qa, t, tables);
    // Scores of four keys at a time into the scratch (lanes past the last key: -inf), and their maximum.
    f.op("v128.const", NEG_INF).set(mv);
    const scores = (rows: Rows, masked: boolean) => {
      e.dots4(dots, qv, rows);
      e.hsum4(dots);
      if (masked) {
        f.op("v128.const", NEG_INF);
        e.validLanes(s, n);
        f.op("v128.bitselect");
      }
      f.set(sc);
      f.get(SCRATCH).get(s).i32(2).op("i32.shl").op("i32.add").get(sc).op("v128.store", 0);
      f.get(mv).get(sc).op("f32x4.max").set(mv);
    };
    e.groups(s, n, () => {
      f.get(s).i32(ks).op("i32.mul").get(kb).op("i32.add").set(kp);
      scores(Emit.strided(kp, ks), false);
    }, () => scores(e.clampedRows(ka, kb, s, n, ks), true));
    e.across(mv, "f32x4.max");
    f.set(m);
    // p = exp(score - m) in place (0 in the padding lanes), and l = Σ p.
    f.op("v128.const", f32x4([0, 0, 0, 0])).set(lv);
    e.loop(s, () => f.i32(0), () => f.get(n), 4, () => {
      f.get(SCRATCH).get(s).i32(2).op("i32.shl").op("i32.add").set(sp);
      f.get(sp).op("v128.load", 0).get(m).op("f32x4.splat").op("f32x4.sub");
      e.help.inlineVexp(f);
      f.set(sc);
      f.get(sp).get(sc).op("v128.store", 0);
      f.get(lv).get(sc).op("f32x4.add").set(lv);
    });
    e.across(lv, "f32x4.add");
    f.set(l);
    // O = Σ p_s v_s / l, four keys at a time, then one at a time.
    const acc = e.zeros(d4);
    const weigh = (pOffset: number, vOffset: number) => {
      f.get(sp).op("v128.load32_splat", pOffset).set(p);
      for (let i = 0; i < d4; i++) {
        e.madd(acc[i], () => f.get(p), () => f.get(kp).op("v128.load", vOffset + 16 * i));
      }
    };
    const at = () => {
      f.get(SCRATCH).get(s).i32(2).op("i32.shl").op("i32.add").set(sp);
      f.get(s).i32(ks).op("i32.mul").get(vb).op("i32.add").set(kp);
    };
    e.groups(s, n, () => {
      at();
      for (let j = 0; j < 4; j++) weigh(4 * j, j * ks);
    }, () => {
      e.loop(s, () => f.get(s), () => f.get(n), 1, () => {
        at();
        weigh(0, 0);
      });
    });
    f.get(row).i32(a.d * 4).op("i32.mul").get(OUT).op("i32.add").set(oa);
    const inv = f.local("v128");
    f.op("f32.const", 1).get(l).op("f32.div").op("f32x4.splat").set(inv);
    acc.forEach((x, i) => f.get(oa).get(x).get(inv).op("f32x4.mul").op("v128.store", 16 * i));
    // L = m + log l
    f.get(OUT).get(row).i32(2).op("i32.shl").op("i32.add");
    f.get(m).get(l).op("call", logf).op("f32.add").op("f32.store", rows * a.d * 4);
  });
  mb.exportFunction("run", mb.addFunction(f));
  return mb.encode();
}

function backwardQuery(a: AttentionDims, fma: boolean): Uint8Array<ArrayBuffer> {
  const tables = a.rope ? tablesAfter(5) : null;
  const { mb, e } = moduleFor(tables === null ? 5 : 7, fma);
  const f = e.f;
  const d4 = a.d / 4;
  const rows = a.b * a.t * a.h;
  const ks = a.hkv * a.d * 4;
  const row = f.local("i32");
  const s = f.local("i32");
  const ra = f.local("i32");
  const kb = f.local("i32");
  const vb = f.local("i32");
  const kp = f.local("i32");
  const vp = f.local("i32");
  const lse = f.local("f32");
  const delta = f.local("f32");
  const ds = f.local("v128");
  const dsj = f.local("v128");
  const ka = [0, 1, 2, 3].map(() => f.local("i32"));
  const va = [0, 1, 2, 3].map(() => f.local("i32"));
  const sc = [0, 1, 2, 3].map(() => f.local("v128"));
  const dp = [0, 1, 2, 3].map(() => f.local("v128"));
  // With RoPE: the rotated keys of sequence `done` in the scratch.
  const done = f.local("i32");
  if (tables !== null) f.i32(-1).set(done);
  e.loop(row, () => f.get(START), () => f.get(END), 1, () => {
    const { b, t, kh, n, kv, skip } = queryRow(e, a, row);
    if (tables === null) f.get(kv).get(K).op("i32.add").set(kb);
    else rotatedKeys(e, a, tables, { b, kh, keys: SCRATCH, done, kb });
    f.get(kv).get(V).op("i32.add").set(vb);
    skipTo(e, skip, [kb, vb]);
    // The row's byte offset in q, dO and the forward's O.
    f.get(row).i32(a.d * 4).op("i32.mul").set(ra);
    const at = (base: number) => {
      const x = f.local("i32");
      f.get(ra).get(base).op("i32.add").set(x);
      return x;
    };
    const qv = queryRegisters(e, a, at(Q), t, tables);
    const dov = e.loadRow(at(DOUT), d4);
    const ov = e.loadRow(at(FWD), d4);
    // Δ = dO·O
    const dd = f.local("v128");
    f.get(dov[0], ov[0]).op("f32x4.mul").set(dd);
    for (let i = 1; i < d4; i++) e.madd(dd, () => f.get(dov[i]), () => f.get(ov[i]));
    e.across(dd, "f32x4.add");
    f.set(delta);
    f.get(FWD).get(row).i32(2).op("i32.shl").op("i32.add").op("f32.load", rows * a.d * 4).set(lse);
    const dq = e.zeros(d4);
    const group = (keys: Rows, values: Rows, masked: boolean) => {
      e.dots4(sc, qv, keys);
      e.dots4(dp, dov, values);
      // dS = exp(score - L) (dO·v - Δ), 0 in lanes past the last key.
      e.hsum4(sc);
      f.get(lse).op("f32x4.splat").op("f32x4.sub");
      e.help.inlineVexp(f);
      e.hsum4(dp);
      f.get(delta).op("f32x4.splat").op("f32x4.sub").op("f32x4.mul");
      if (masked) {
        f.op("v128.const", f32x4([0, 0, 0, 0]));
        e.validLanes(s, n);
        f.op("v128.bitselect");
      }
      f.set(ds);
      for (let j = 0; j < 4; j++) {
        e.broadcast(ds, j);
        f.set(dsj);
        const { addr, offset } = keys(j);
        for (let i = 0; i < d4; i++) {
          e.madd(dq[i], () => f.get(dsj), () => f.get(addr).op("v128.load", offset + 16 * i));
        }
      }
    };
    e.groups(s, n, () => {
      f.get(s).i32(ks).op("i32.mul").set(kp);
      f.get(kp).get(vb).op("i32.add").set(vp);
      f.get(kp).get(kb).op("i32.add").set(kp);
      group(Emit.strided(kp, ks), Emit.strided(vp, ks), false);
    }, () => group(e.clampedRows(ka, kb, s, n, ks), e.clampedRows(va, vb, s, n, ks), true));
    // dQ back in the unrotated frame (the transpose of the query's rotation).
    if (tables !== null) e.rotateAt(dq, tables, () => f.get(t).i32(a.s - a.t).op("i32.add"), true);
    const oa = at(OUT);
    e.storeRow(oa, dq, 0, Math.fround(a.scale));
    f.get(OUT).get(row).i32(2).op("i32.shl").op("i32.add").get(delta).op("f32.store", rows * a.d * 4);
  });
  mb.exportFunction("run", mb.addFunction(f));
  return mb.encode();
}

function backwardKeyValue(a: AttentionDims, fma: boolean): Uint8Array<ArrayBuffer> {
  const tables = a.rope ? tablesAfter(6) : null;
  const { mb, e } = moduleFor(tables === null ? 6 : 8, fma);
  const f = e.f;
  const d4 = a.d / 4;
  const rows = a.b * a.t * a.h;
  const krows = a.b * a.s * a.hkv;
  const g = a.h / a.hkv;
  const qs = a.h * a.d * 4;
  const kr = f.local("i32");
  const kh = f.local("i32");
  const s = f.local("i32");
  const b = f.local("i32");
  const first = f.local("i32");
  const nq = f.local("i32");
  const j = f.local("i32");
  const u = f.local("i32");
  const row0 = f.local("i32");
  const qb = f.local("i32");
  const ob = f.local("i32");
  const lb = f.local("i32");
  const qp = f.local("i32");
  const op = f.local("i32");
  const lp = f.local("i32");
  const p = f.local("v128");
  const ds = f.local("v128");
  const w = f.local("v128");
  const qa = [0, 1, 2, 3].map(() => f.local("i32"));
  const oa = [0, 1, 2, 3].map(() => f.local("i32"));
  const la = [0, 1, 2, 3].map(() => f.local("i32"));
  const sc = [0, 1, 2, 3].map(() => f.local("v128"));
  const dp = [0, 1, 2, 3].map(() => f.local("v128"));
  // With RoPE: the rotated queries of sequence `done` in the scratch.
  const done = f.local("i32");
  if (tables !== null) f.i32(-1).set(done);
  e.loop(kr, () => f.get(START), () => f.get(END), 1, () => {
    f.get(kr).i32(a.hkv).op("i32.rem_u").set(kh);
    f.get(kr).i32(a.hkv).op("i32.div_u").i32(a.s).op("i32.rem_u").set(s);
    f.get(kr).i32(a.hkv * a.s).op("i32.div_u").set(b);
    if (tables !== null) {
      oncePerSequence(e, b, done, () => {
        const src = f.local("i32");
        f.get(b).i32(a.t * a.h * a.d * 4).op("i32.mul").get(Q).op("i32.add").set(src);
        // Query t sits at position t + S - T.
        rotateRows(e, a, tables, { src, dst: SCRATCH, n: a.t, per: a.h, shift: a.s - a.t });
      });
    }
    // Queries first .. T-1 see key s.
    if (a.causal) {
      f.get(s).i32(a.s - a.t).op("i32.sub").op("local.tee", first).i32(0).get(first).i32(0).op("i32.gt_s");
      f.op("select").set(first);
    } else f.i32(0).set(first);
    if (a.window === undefined) f.i32(a.t).get(first).op("i32.sub").set(nq);
    else {
      // With a window W, queries first .. min(T, s + W − (S − T)) − 1 see key s (none when that is empty).
      f.get(s).i32(a.window - (a.s - a.t)).op("i32.add").op("local.tee", nq).i32(a.t).get(nq).i32(a.t);
      f.op("i32.lt_s").op("select").get(first).op("i32.sub").set(nq);
      // None when the key lies before every query's window.
      f.get(nq).i32(0).get(nq).i32(0).op("i32.gt_s").op("select").set(nq);
    }
    const ka = f.local("i32");
    f.get(kr).i32(a.d * 4).op("i32.mul").set(ka);
    const kaddr = f.local("i32");
    f.get(ka).get(K).op("i32.add").set(kaddr);
    const vaddr = f.local("i32");
    f.get(ka).get(V).op("i32.add").set(vaddr);
    const kv = scaledRow(e, a, kaddr, tables, () => f.get(s));
    const vv = e.loadRow(vaddr, d4);
    // Where query row r is read: q itself (q + r·D·4), or the sequence's rotated rows in the scratch.
    const qbase = f.local("i32");
    if (tables === null) f.get(Q).set(qbase);
    else f.get(SCRATCH).get(b).i32(a.t * a.h * a.d * 4).op("i32.mul").op("i32.sub").set(qbase);
    const dk = e.zeros(d4);
    const dv = e.zeros(d4);
    const group = (qRows: Rows, oRows: Rows, lRows: Rows, masked: boolean) => {
      e.dots4(sc, kv, qRows);
      e.dots4(dp, vv, oRows);
      // L and Δ of the four query rows (logsumexp after O in the forward's result, Δ after dQ in bq's).
      const gather = (base: number) => {
        for (let l = 0; l < 4; l++) {
          const { addr, offset } = lRows(l);
          f.get(addr).get(base).op("i32.add");
          if (l === 0) f.op("v128.load32_splat", rows * a.d * 4 + offset);
          else f.op("f32.load", rows * a.d * 4 + offset).op("f32x4.replace_lane", l);
        }
      };
      // P = exp(score - L), 0 in lanes past the last query; dS = P (dO·v - Δ).
      e.hsum4(sc);
      gather(FWD);
      f.op("f32x4.sub");
      e.help.inlineVexp(f);
      if (masked) {
        f.op("v128.const", f32x4([0, 0, 0, 0]));
        e.validLanes(u, nq);
        f.op("v128.bitselect");
      }
      f.set(p);
      e.hsum4(dp);
      gather(BQ);
      f.op("f32x4.sub").get(p).op("f32x4.mul").set(ds);
      for (let l = 0; l < 4; l++) {
        const o = oRows(l);
        const q = qRows(l);
        e.broadcast(p, l);
        f.set(w);
        for (let i = 0; i < d4; i++) {
          e.madd(dv[i], () => f.get(w), () => f.get(o.addr).op("v128.load", o.offset + 16 * i));
        }
        e.broadcast(ds, l);
        f.set(w);
        for (let i = 0; i < d4; i++) {
          e.madd(dk[i], () => f.get(w), () => f.get(q.addr).op("v128.load", q.offset + 16 * i));
        }
      }
    };
    e.loop(j, () => f.i32(0), () => f.i32(g), 1, () => {
      // row0 = (b·T + first)·H + kh·G + j: the first query row of head kh·G + j that sees the key.
      f.get(b).i32(a.t).op("i32.mul").get(first).op("i32.add").i32(a.h).op("i32.mul");
      f.get(kh).i32(g).op("i32.mul").op("i32.add").get(j).op("i32.add").set(row0);
      f.get(row0).i32(a.d * 4).op("i32.mul").set(qb);
      f.get(qb).get(DOUT).op("i32.add").set(ob);
      f.get(qb).get(qbase).op("i32.add").set(qb);
      f.get(row0).i32(2).op("i32.shl").set(lb);
      e.groups(u, nq, () => {
        f.get(u).i32(qs).op("i32.mul").set(qp);
        f.get(qp).get(ob).op("i32.add").set(op);
        f.get(qp).get(qb).op("i32.add").set(qp);
        f.get(u).i32(a.h * 4).op("i32.mul").get(lb).op("i32.add").set(lp);
        group(Emit.strided(qp, qs), Emit.strided(op, qs), Emit.strided(lp, a.h * 4), false);
      }, () => {
        group(
          e.clampedRows(qa, qb, u, nq, qs),
          e.clampedRows(oa, ob, u, nq, qs),
          e.clampedRows(la, lb, u, nq, a.h * 4),
          true,
        );
      });
    });
    // dK back in the unrotated frame (the transpose of the key's rotation).
    if (tables !== null) e.rotateAt(dk, tables, () => f.get(s), true);
    const at = f.local("i32");
    f.get(kr).i32(a.d * 4).op("i32.mul").get(OUT).op("i32.add").set(at);
    e.storeRow(at, dk, 0, Math.fround(a.scale));
    e.storeRow(at, dv, krows * a.d * 4);
  });
  mb.exportFunction("run", mb.addFunction(f));
  return mb.encode();
}

/** Bytes of the forward's scores in the scratch: `4·⌈S/4⌉` floats. */
function scoresBytes(a: AttentionDims): number {
  return 16 * Math.ceil(a.s / 4);
}

/** Bytes of one sequence's rotated rows in the scratch (RoPE): its keys, or its queries (key/value pass). */
function rotatedBytes(a: AttentionDims, pass: AttentionPass): number {
  if (!a.rope) return 0;
  return (pass === "backward_key_value" ? a.t * a.h : a.s * a.hkv) * a.d * 4;
}

/** Average number of keys a query sees (forward and query passes) or queries a key is seen by (key pass). */
function meanLoop(a: AttentionDims, pass: AttentionPass): number {
  if (!a.causal) return pass === "backward_key_value" ? (a.h / a.hkv) * a.t : a.s;
  const perQuery = Math.min(a.s - a.t + (a.t + 1) / 2, a.window ?? Infinity);
  return pass === "backward_key_value" ? ((a.h / a.hkv) * a.t * perQuery) / a.s : perQuery;
}

const cache = new LruCache<string, WasmKernel>(64);

/**
 * The wasm module of one attention kernel (cached by dims and options). Items are query rows (`B·T·H`) for the
 * forward and query passes and key rows (`B·S·Hkv`) for the key/value pass; the forward uses `4·⌈S/4⌉` floats of
 * scratch per thread, and with RoPE each pass one sequence's rotated keys (`S·Hkv·D` floats) or, for the
 * key/value pass, queries (`T·H·D`) besides.
 */
export function attentionWasm(pass: AttentionPass, a: AttentionDims, opts: WasmRenderOptions): WasmKernel {
  if (a.d % 4 !== 0 || a.h % a.hkv !== 0 || (a.causal && a.s < a.t)) {
    throw new RangeError(`attentionWasm: unsupported dims ${JSON.stringify(a)}`);
  }
  const key = `${pass}|${JSON.stringify(a)}|${opts.relaxedSimd}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const fma = opts.relaxedSimd;
  const bytes = pass === "forward"
    ? forward(a, fma)
    : pass === "backward_query"
    ? backwardQuery(a, fma)
    : backwardKeyValue(a, fma);
  const items = pass === "backward_key_value" ? a.b * a.s * a.hkv : a.b * a.t * a.h;
  // About a nanosecond per key and row of four floats (measured on a 2-core x86 host), plus the row's set-up.
  // With RoPE: the item's own row rotated (and its gradient back), its share of its sequence's rotated rows.
  const perSequence = items / a.b;
  const rotations = a.rope ? 2 + rotatedBytes(a, pass) / (a.d * 4) / perSequence : 0;
  const itemCost = 20 + (meanLoop(a, pass) * (pass === "forward" ? 1 : 2) + 2 * rotations) * (a.d / 4);
  const k: WasmKernel = {
    bytes,
    items,
    itemCost,
    scratchBytes: (pass === "forward" ? scoresBytes(a) : 0) + rotatedBytes(a, pass),
    usesMath: false,
  };
  cache.set(key, k);
  return k;
}
