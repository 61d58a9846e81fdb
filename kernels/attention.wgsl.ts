/**
 * Fused causal attention with grouped key/value heads, forward and backward, one invocation per row (a
 * FlashAttention-style online softmax: scores, mask, softmax and the weighted sum in one pass, never storing the
 * `T x S` score matrix).
 *
 * Layouts (contiguous, row-major): `q` is `[B, T, H, D]`, `k` and `v` are `[B, S, Hkv, D]`, query head `h` uses
 * key/value head `⌊h / G⌋` with `G = H / Hkv`; with `causal`, query `t` sees keys `0 .. t + S − T`, and with a
 * sliding `window` `W` only the last `W` of them, `t + S − T − W + 1 .. t + S − T` (transformers' sliding-window
 * mask `kv_idx > q_idx − W`). Scores are `scale · q·k`.
 *
 * - forward, per query row `(b, t, h)`: `O = Σ_s softmax_s(scores) v_s` and `L = logsumexp_s(scores)`; the result
 *   is `[O (B·T·H·D) | L (B·T·H)]`;
 * - backward for queries, per query row: `Δ = dO·O`, `P_s = exp(score_s − L)`, `dS_s = P_s (dO·v_s − Δ)`,
 *   `dQ = scale Σ_s dS_s k_s`; the result is `[dQ | Δ]`;
 * - backward for keys and values, per key row `(b, s, kh)` summing over the `G` query heads of the group and the
 *   queries that see the key: `dV = Σ P dO`, `dK = scale Σ dS q`; the result is `[dK | dV]`.
 *
 * With RoPE and `rotatedRows`, the forward also stores the rotated rows it reads, `[O | L | Q̃ | K̃]`, and the
 * backward kernels read them instead of rotating `q` and `k` again for every query-key pair (their inputs are
 * then `v, dO, forward[, query backward], cos, sin`: the tables still rotate each gradient row back once).
 *
 * `D` must be a multiple of 4 (rows are read as `vec4<f32>`); each invocation loops over at most `S` keys
 * (forward, queries) or `G·T` queries (keys and values). Every kernel has a float64 host twin with the same
 * loops, used by the CPU backend and the reference.
 *
 * @module
 */

/** The shapes and options of one attention. */
export interface AttentionDims {
  /** Batch. */
  readonly b: number;
  /** Queries per sequence. */
  readonly t: number;
  /** Keys per sequence (`>= t` when causal). */
  readonly s: number;
  /** Query heads. */
  readonly h: number;
  /** Key/value heads (divides `h`). */
  readonly hkv: number;
  /** Head size (a multiple of 4). */
  readonly d: number;
  /** Score scale. */
  readonly scale: number;
  /** Mask keys after each query's position. */
  readonly causal: boolean;
  /**
   * With `causal`: each query sees only the last `window` keys up to its position (itself included). Absent: all of
   * them; the kernels (and their keys) are then those without a window.
   */
  readonly window?: number;
  /**
   * Rotate queries and keys by RoPE inside the kernels (the last two inputs are then the tables `cos`, `sin`,
   * `[≥ S, D/2]`, rows by position): query `t` at position `t + S − T`, key `s` at `s`; the gradients of `q` and
   * `k` come back in the unrotated frame.
   */
  readonly rope?: boolean;
  /**
   * With `rope`: the forward's result also holds the rotated rows, `Q̃ = R(t + S − T)·q` and `K̃ = R(s)·k`
   * (see {@link forwardLayout}), and the backward kernels take `v, dO, forward[, query backward], cos, sin`
   * and read `Q̃`, `K̃` from it instead of rotating `q` and `k` once per query-key pair. The values are the
   * same bit for bit: the rows are rotated by the same expression, once.
   */
  readonly rotatedRows?: boolean;
}

/** Where the parts of the forward's result start (floats) and its size; `q` and `k` are 0 without rotated rows. */
export interface ForwardLayout {
  /** Start of the logsumexps `L` (after `O`). */
  readonly l: number;
  /** Start of `Q̃` (`B·T·H·D`, a multiple of 4 so that rows are read as vec4). */
  readonly q: number;
  /** Start of `K̃` (`B·S·Hkv·D`). */
  readonly k: number;
  /** Floats in the result. */
  readonly size: number;
}

/** Whether the forward stores the rotated rows for the backward kernels. */
function storesRotated(a: AttentionDims): boolean {
  return a.rope === true && a.rotatedRows === true;
}

/** The layout of the forward's result `[O | L]`, or `[O | L | Q̃ | K̃]` with rotated rows. */
export function forwardLayout(a: AttentionDims): ForwardLayout {
  const rows = a.b * a.t * a.h;
  const l = rows * a.d;
  if (!storesRotated(a)) return { l, q: 0, k: 0, size: l + rows };
  const q = 4 * Math.ceil((l + rows) / 4);
  const k = q + rows * a.d;
  return { l, q, k, size: k + a.b * a.s * a.hkv * a.d };
}

/** One kernel: WGSL, dispatch and its float64 host twin over `[result, ...inputs]`. */
export interface AttentionKernel {
  /** Identifies the kernel (dims included). */
  readonly key: string;
  /** Kernel name. */
  readonly name: string;
  /** Elements of the result. */
  readonly size: number;
  /** The shader. */
  readonly wgsl: string;
  /** Workgroup counts. */
  readonly dispatch: [number, number, number];
  /** The host twin. */
  readonly host: (buffers: HostArray[]) => void;
}

/** A writable host array (a typed array; float64 in the reference). */
export type HostArray = { [i: number]: number; readonly length: number };

const WG = 64;

/** Why `dims` cannot use the fused kernels (null when they can). */
export function attentionUnfit(dims: AttentionDims, loopBudget: number): string | null {
  const { t, s, h, hkv, d } = dims;
  if (d % 4 !== 0) return `head size ${d} is not a multiple of 4`;
  if (dims.rope && dims.causal && s !== t) return "in-kernel RoPE needs as many keys as queries";
  if (h % hkv !== 0) return `${h} heads are not a multiple of ${hkv} key/value heads`;
  if (dims.causal && s < t) return `${t} queries need at least as many keys, got ${s}`;
  if (dims.window !== undefined && !(dims.causal && Number.isSafeInteger(dims.window) && dims.window >= 1)) {
    return `a sliding window (${dims.window}) needs causal attention and a positive integer size`;
  }
  if (s > loopBudget || (h / hkv) * t > loopBudget) return "the loops would exceed the iteration budget";
  return null;
}

function dispatchFor(rows: number): [number, number, number] {
  const groups = Math.ceil(rows / WG);
  if (groups <= 65535) return [Math.max(groups, 1), 1, 1];
  const gy = Math.ceil(groups / 65535);
  return [Math.ceil(groups / gy), gy, 1];
}

function f32(x: number): string {
  const v = Math.fround(x);
  return Number.isInteger(v) ? `${v}.0` : `${v}`;
}

/** Lines computing `name = Σ_i dot(a[i], b[i])` over the `d/4` vec4s (unrolled). */
function dotLines(name: string, d4: number, a: (i: number) => string, b: (i: number) => string): string {
  const terms = Array.from({ length: d4 }, (_, i) => `dot(${a(i)}, ${b(i)})`);
  return `let ${name} = ${terms.join(" + ")};`;
}

function header(inputs: readonly string[], vec4Out: boolean, rope = false): string {
  const all = rope ? [...inputs, "rcos", "rsin"] : inputs;
  return [
    `@group(0) @binding(0) var<storage, read_write> out0: array<${vec4Out ? "vec4<f32>" : "f32"}>;`,
    ...all.map((n, i) =>
      `@group(0) @binding(${i + 1}) var<storage, read> ${n}: array<${
        n === "rcos" || n === "rsin" ? "vec2" : "vec4"
      }<f32>>;`
    ),
    ...(rope ? [ROPE_WGSL] : []),
  ].join("\n");
}

/**
 * WGSL of the rotation of one vec4 of a row at position `pos` (its pairs (x0, x1), (x2, x3) have angles `2i` and
 * `2i + 1`; `half` = D/2 angles per position) and of its transpose (for gradients).
 */
const ROPE_WGSL = `fn rope_(x: vec4<f32>, pos: i32, i: i32, half: i32, back: bool) -> vec4<f32> {
  let c = rcos[(pos * half) / 2 + i];
  let s = select(rsin[(pos * half) / 2 + i], -rsin[(pos * half) / 2 + i], back);
  return vec4<f32>(x.x * c.x - x.y * s.x, x.x * s.x + x.y * c.x, x.z * c.y - x.w * s.y, x.z * s.y + x.w * c.y);
}`;

/** Host twin of `rope_` on elements `o .. o + D` of `x` (in place into `out` at `oo`). */
function ropeHost(
  x: HostArray,
  o: number,
  out: HostArray | Float64Array,
  oo: number,
  pos: number,
  a: AttentionDims,
  tables: { cos: HostArray; sin: HostArray },
  back: boolean,
): void {
  const half = a.d / 2;
  for (let p = 0; p < half; p++) {
    const c = tables.cos[pos * half + p];
    const sn = back ? -tables.sin[pos * half + p] : tables.sin[pos * half + p];
    const x0 = x[o + 2 * p];
    const x1 = x[o + 2 * p + 1];
    out[oo + 2 * p] = x0 * c - x1 * sn;
    out[oo + 2 * p + 1] = x0 * sn + x1 * c;
  }
}

function key(kind: string, a: AttentionDims): string {
  return `attention_${kind}(b=${a.b},t=${a.t},s=${a.s},h=${a.h},hkv=${a.hkv},d=${a.d},scale=${
    Math.fround(a.scale)
  },causal=${a.causal}${a.window === undefined ? "" : `,window=${a.window}`}${a.rope ? ",rope" : ""}${
    storesRotated(a) ? ",rotated" : ""
  })`;
}

/** The query row index and the head indices of an invocation (WGSL lines). */
function rowLines(a: AttentionDims, rows: number, beforeExit: readonly string[] = []): string[] {
  return [
    `  let row = i32(g.x + g.y * nwg.x * ${WG}u);`,
    ...beforeExit,
    `  if (row >= ${rows}) { return; }`,
    `  let h = row % ${a.h};`,
    `  let t = (row / ${a.h}) % ${a.t};`,
    `  let b = row / ${a.h * a.t};`,
    `  let kh = h / ${a.h / a.hkv};`,
    `  let last = ${a.causal ? `t + ${a.s - a.t}` : `${a.s - 1}`};`,
    ...(a.window === undefined ? [] : [`  let first = max(0, last - ${a.window - 1});`]),
  ];
}

/** WGSL of the first key a query row's loop visits: 0, or the first in its window. */
function firstKey(a: AttentionDims): string {
  return a.window === undefined ? "0" : "first";
}

/**
 * The forward kernel: result `[O | L]` (with rotated rows `[O | L | Q̃ | K̃]`, see {@link forwardLayout}),
 * inputs `q, k, v`.
 */
export function attentionForward(a: AttentionDims): AttentionKernel {
  const d4 = a.d / 4;
  const rows = a.b * a.t * a.h;
  const krows = a.b * a.s * a.hkv;
  const layout = forwardLayout(a);
  const keep = storesRotated(a);
  const L: string[] = [header(["q", "k", "v"], false, a.rope)];
  L.push(`@compute @workgroup_size(${WG})`);
  L.push(`fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {`);
  // With rotated rows, invocation `row` also stores key row `row` rotated (before the query rows run out).
  const keyRow = [
    `  if (row < ${krows}) {`,
    `    let ks = (row / ${a.hkv}) % ${a.s};`,
    ...Array.from({ length: d4 }, (_, i) => [
      `    let kr${i} = ${rot(a, `k[row * ${d4} + ${i}]`, "ks", i)};`,
      ...[0, 1, 2, 3].map((c) => `    out0[${layout.k} + row * ${a.d} + ${4 * i + c}] = kr${i}[${c}];`),
    ]).flat(),
    `  }`,
  ];
  L.push(...rowLines(a, rows, keep ? keyRow : []));
  for (let i = 0; i < d4; i++) {
    L.push(`  let qr${i} = ${rot(a, `q[row * ${d4} + ${i}]`, qPos(a), i)};`);
    L.push(`  let q${i} = qr${i} * ${f32(a.scale)};`);
    if (keep) {
      for (let c = 0; c < 4; c++) L.push(`  out0[${layout.q} + row * ${a.d} + ${4 * i + c}] = qr${i}[${c}];`);
    }
  }
  for (let i = 0; i < d4; i++) L.push(`  var acc${i} = vec4<f32>(0.0);`);
  L.push(`  var m = bitcast<f32>(0xff800000u);`, `  var l = 0.0;`);
  L.push(`  for (var s = ${firstKey(a)}; s <= last; s = s + 1) {`);
  L.push(`    let kb = ((b * ${a.s} + s) * ${a.hkv} + kh) * ${d4};`);
  L.push(`    ${dotLines("sc", d4, (i) => `q${i}`, (i) => rot(a, `k[kb + ${i}]`, "s", i))}`);
  L.push(`    let mn = max(m, sc);`, `    let corr = exp(m - mn);`, `    let p = exp(sc - mn);`);
  L.push(`    l = l * corr + p;`);
  for (let i = 0; i < d4; i++) L.push(`    acc${i} = acc${i} * corr + p * v[kb + ${i}];`);
  L.push(`    m = mn;`, `  }`);
  L.push(`  let inv = 1.0 / l;`);
  for (let i = 0; i < d4; i++) {
    for (let c = 0; c < 4; c++) L.push(`  out0[row * ${a.d} + ${4 * i + c}] = acc${i}[${c}] * inv;`);
  }
  L.push(`  out0[${layout.l} + row] = m + log(l);`, `}`);
  return {
    key: key("forward", a),
    name: `attention_forward_${a.b}x${a.t}x${a.h}x${a.d}`,
    size: layout.size,
    wgsl: L.join("\n"),
    dispatch: dispatchFor(keep ? Math.max(rows, krows) : rows),
    host: ([out, q0, k0, v, cos, sin]) => {
      const acc = new Float64Array(a.d);
      const { q, k } = rotated(a, q0, k0, { cos, sin });
      if (keep) {
        for (let i = 0; i < rows * a.d; i++) out[layout.q + i] = q[i];
        for (let i = 0; i < krows * a.d; i++) out[layout.k + i] = k[i];
      }
      for (let row = 0; row < rows; row++) {
        const { b, t, kh, first, last } = rowOf(a, row);
        acc.fill(0);
        let m = -Infinity;
        let l = 0;
        for (let s = first; s <= last; s++) {
          const kb = ((b * a.s + s) * a.hkv + kh) * a.d;
          let sc = 0;
          for (let i = 0; i < a.d; i++) sc += q[row * a.d + i] * k[kb + i];
          sc *= a.scale;
          const mn = Math.max(m, sc);
          const corr = Math.exp(m - mn);
          const p = Math.exp(sc - mn);
          l = l * corr + p;
          for (let i = 0; i < a.d; i++) acc[i] = acc[i] * corr + p * v[kb + i];
          m = mn;
        }
        for (let i = 0; i < a.d; i++) out[row * a.d + i] = acc[i] / l;
        out[rows * a.d + row] = m + Math.log(l);
        void t;
      }
    },
  };
}

/** WGSL of the vec4 `x` (element group `i` of a row at position `pos`), rotated when the kernel applies RoPE. */
function rot(a: AttentionDims, x: string, pos: string, i: number, back = false): string {
  return a.rope ? `rope_(${x}, ${pos}, ${i}, ${a.d / 2}, ${back})` : x;
}

/** WGSL position of the query of the current row (`t` shifted to the end of the keys). */
function qPos(a: AttentionDims): string {
  return a.s === a.t ? "t" : `(t + ${a.s - a.t})`;
}

/** `q` and `k` rotated by RoPE when the kernels apply it (host twins; float64), else as they are. */
function rotated(
  a: AttentionDims,
  q: HostArray,
  k: HostArray,
  tables: { cos: HostArray; sin: HostArray },
): { q: HostArray; k: HostArray } {
  if (!a.rope) return { q, k };
  const rows = a.b * a.t * a.h;
  const krows = a.b * a.s * a.hkv;
  const qr = new Float64Array(rows * a.d);
  const kr = new Float64Array(krows * a.d);
  for (let row = 0; row < rows; row++) {
    const t = Math.floor(row / a.h) % a.t;
    ropeHost(q, row * a.d, qr, row * a.d, t + a.s - a.t, a, tables, false);
  }
  for (let r = 0; r < krows; r++) {
    const s = Math.floor(r / a.hkv) % a.s;
    ropeHost(k, r * a.d, kr, r * a.d, s, a, tables, false);
  }
  return { q: qr, k: kr };
}

/**
 * The buffers of a backward kernel's host twin by name, `q` and `k` rotated: `[out, q, k, v, dO, fwd, (bq,) cos,
 * sin]`, or with rotated rows `[out, v, dO, fwd, (bq,) cos, sin]` and `q`, `k` the forward's `Q̃`, `K̃`.
 */
function backwardInputs(a: AttentionDims, buffers: readonly HostArray[], withBq: boolean) {
  const keep = storesRotated(a);
  const [out, ...rest] = buffers;
  const [q0, k0] = keep ? [] : rest.splice(0, 2);
  const [v, dout, fwd] = rest.splice(0, 3);
  const bq = withBq ? rest.shift()! : fwd;
  const [cos, sin] = rest;
  if (!keep) return { out, v, dout, fwd, bq, cos, sin, ...rotated(a, q0, k0, { cos, sin }) };
  const layout = forwardLayout(a);
  const part = (start: number, n: number): HostArray => Array.from({ length: n }, (_, i) => fwd[start + i]);
  const q = part(layout.q, a.b * a.t * a.h * a.d);
  const k = part(layout.k, a.b * a.s * a.hkv * a.d);
  return { out, v, dout, fwd, bq, cos, sin, q, k };
}

function rowOf(a: AttentionDims, row: number) {
  const h = row % a.h;
  const t = Math.floor(row / a.h) % a.t;
  const b = Math.floor(row / (a.h * a.t));
  const kh = Math.floor(h / (a.h / a.hkv));
  const last = a.causal ? t + a.s - a.t : a.s - 1;
  const first = a.window === undefined ? 0 : Math.max(0, last - a.window + 1);
  return { h, t, b, kh, first, last };
}

/**
 * WGSL of vec4 `i` of the rotated query row `row` and key row `kr` (vec4 indices `row·D/4`, `kr·D/4`): read from the
 * forward's result with rotated rows (`fwd`), else rotated from `q` and `k`.
 */
function rotatedRows(a: AttentionDims) {
  const layout = forwardLayout(a);
  const keep = storesRotated(a);
  return {
    query: (base: string, i: number) =>
      keep ? `fwd[${layout.q / 4} + ${base} + ${i}]` : rot(a, `q[${base} + ${i}]`, qPos(a), i),
    key: (base: string, pos: string, i: number) =>
      keep ? `fwd[${layout.k / 4} + ${base} + ${i}]` : rot(a, `k[${base} + ${i}]`, pos, i),
    inputs: (rest: readonly string[]) => keep ? rest.slice(2) : rest,
  };
}

/**
 * The backward kernel for queries: result `[dQ | Δ]`, inputs `q, k, v, dO, forward result` (with rotated rows
 * `v, dO, forward result`).
 */
export function attentionBackwardQuery(a: AttentionDims): AttentionKernel {
  const d4 = a.d / 4;
  const rows = a.b * a.t * a.h;
  const lBase = (rows * a.d) / 4; // vec4 index where L starts in the forward result
  const rr = rotatedRows(a);
  const L: string[] = [header(rr.inputs(["q", "k", "v", "dout", "fwd"]), false, a.rope)];
  L.push(`@compute @workgroup_size(${WG})`);
  L.push(`fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {`);
  L.push(...rowLines(a, rows));
  for (let i = 0; i < d4; i++) {
    L.push(`  let q${i} = ${rr.query(`row * ${d4}`, i)} * ${f32(a.scale)};`);
    L.push(`  let do${i} = dout[row * ${d4} + ${i}];`);
    L.push(`  var dq${i} = vec4<f32>(0.0);`);
  }
  L.push(`  ${dotLines("delta", d4, (i) => `do${i}`, (i) => `fwd[row * ${d4} + ${i}]`)}`);
  L.push(`  let lse = fwd[${lBase} + row / 4][row % 4];`);
  L.push(`  for (var s = ${firstKey(a)}; s <= last; s = s + 1) {`);
  L.push(`    let kb = ((b * ${a.s} + s) * ${a.hkv} + kh) * ${d4};`);
  for (let i = 0; i < d4; i++) L.push(`    let k${i} = ${rr.key("kb", "s", i)};`);
  L.push(`    ${dotLines("sc", d4, (i) => `q${i}`, (i) => `k${i}`)}`);
  L.push(`    ${dotLines("dp", d4, (i) => `do${i}`, (i) => `v[kb + ${i}]`)}`);
  L.push(`    let ds = exp(sc - lse) * (dp - delta);`);
  for (let i = 0; i < d4; i++) L.push(`    dq${i} = dq${i} + ds * k${i};`);
  L.push(`  }`);
  for (let i = 0; i < d4; i++) {
    L.push(`  let dqo${i} = ${rot(a, `dq${i}`, qPos(a), i, true)};`);
    for (let c = 0; c < 4; c++) {
      L.push(`  out0[row * ${a.d} + ${4 * i + c}] = dqo${i}[${c}] * ${f32(a.scale)};`);
    }
  }
  L.push(`  out0[${rows * a.d} + row] = delta;`, `}`);
  return {
    key: key("backward_query", a),
    name: `attention_backward_query_${a.b}x${a.t}x${a.h}x${a.d}`,
    size: rows * (a.d + 1),
    wgsl: L.join("\n"),
    dispatch: dispatchFor(rows),
    host: (buffers) => {
      const { out, q, k, v, dout, fwd, cos, sin } = backwardInputs(a, buffers, false);
      const dq = new Float64Array(a.d);
      for (let row = 0; row < rows; row++) {
        const { b, kh, first, last } = rowOf(a, row);
        let delta = 0;
        for (let i = 0; i < a.d; i++) delta += dout[row * a.d + i] * fwd[row * a.d + i];
        const lse = fwd[rows * a.d + row];
        dq.fill(0);
        for (let s = first; s <= last; s++) {
          const kb = ((b * a.s + s) * a.hkv + kh) * a.d;
          let sc = 0;
          let dp = 0;
          for (let i = 0; i < a.d; i++) {
            sc += q[row * a.d + i] * k[kb + i];
            dp += dout[row * a.d + i] * v[kb + i];
          }
          const ds = Math.exp(sc * a.scale - lse) * (dp - delta);
          for (let i = 0; i < a.d; i++) dq[i] += ds * k[kb + i];
        }
        if (a.rope) {
          const t = Math.floor(row / a.h) % a.t;
          ropeHost(dq.slice(), 0, dq, 0, t + a.s - a.t, a, { cos, sin }, true);
        }
        for (let i = 0; i < a.d; i++) out[row * a.d + i] = dq[i] * a.scale;
        out[rows * a.d + row] = delta;
      }
    },
  };
}

/**
 * The backward kernel for keys and values: result `[dK | dV]`, inputs `q, k, v, dO, forward, query backward`
 * (with rotated rows `v, dO, forward, query backward`).
 */
export function attentionBackwardKeyValue(a: AttentionDims): AttentionKernel {
  const d4 = a.d / 4;
  const rows = a.b * a.t * a.h;
  const krows = a.b * a.s * a.hkv;
  const g = a.h / a.hkv;
  const lBase = (rows * a.d) / 4;
  const rr = rotatedRows(a);
  const L: string[] = [header(rr.inputs(["q", "k", "v", "dout", "fwd", "bq"]), false, a.rope)];
  L.push(`@compute @workgroup_size(${WG})`);
  L.push(`fn main(@builtin(global_invocation_id) gi: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {`);
  L.push(`  let kr = i32(gi.x + gi.y * nwg.x * ${WG}u);`, `  if (kr >= ${krows}) { return; }`);
  L.push(
    `  let kh = kr % ${a.hkv};`,
    `  let s = (kr / ${a.hkv}) % ${a.s};`,
    `  let b = kr / ${a.hkv * a.s};`,
  );
  L.push(`  let first = ${a.causal ? `max(0, s - ${a.s - a.t})` : "0"};`);
  // With a window, key s is seen by the queries at positions s .. s + W − 1 only.
  const end = a.window === undefined ? `${a.t}` : "end";
  if (a.window !== undefined) {
    const shift = a.window - (a.s - a.t);
    L.push(`  let end = min(${a.t}, s ${shift < 0 ? "-" : "+"} ${Math.abs(shift)});`);
  }
  for (let i = 0; i < d4; i++) {
    L.push(`  let k${i} = ${rr.key(`kr * ${d4}`, "s", i)} * ${f32(a.scale)};`);
    L.push(`  let v${i} = v[kr * ${d4} + ${i}];`);
    L.push(`  var dk${i} = vec4<f32>(0.0);`, `  var dv${i} = vec4<f32>(0.0);`);
  }
  L.push(`  for (var j = 0; j < ${g}; j = j + 1) {`);
  L.push(`    let h = kh * ${g} + j;`);
  L.push(`    for (var t = first; t < ${end}; t = t + 1) {`);
  L.push(`      let row = (b * ${a.t} + t) * ${a.h} + h;`);
  L.push(`      let qb = row * ${d4};`);
  for (let i = 0; i < d4; i++) L.push(`      let q${i} = ${rr.query("qb", i)};`);
  L.push(`      ${dotLines("sc", d4, (i) => `q${i}`, (i) => `k${i}`)}`);
  L.push(`      ${dotLines("dp", d4, (i) => `dout[qb + ${i}]`, (i) => `v${i}`)}`);
  L.push(`      let p = exp(sc - fwd[${lBase} + row / 4][row % 4]);`);
  L.push(`      let ds = p * (dp - bq[${lBase} + row / 4][row % 4]);`);
  for (let i = 0; i < d4; i++) {
    L.push(`      dv${i} = dv${i} + p * dout[qb + ${i}];`);
    L.push(`      dk${i} = dk${i} + ds * q${i};`);
  }
  L.push(`    }`, `  }`);
  for (let i = 0; i < d4; i++) {
    L.push(`  let dko${i} = ${rot(a, `dk${i}`, "s", i, true)};`);
    for (let c = 0; c < 4; c++) {
      L.push(`  out0[kr * ${a.d} + ${4 * i + c}] = dko${i}[${c}] * ${f32(a.scale)};`);
      L.push(`  out0[${krows * a.d} + kr * ${a.d} + ${4 * i + c}] = dv${i}[${c}];`);
    }
  }
  L.push(`}`);
  return {
    key: key("backward_key_value", a),
    name: `attention_backward_kv_${a.b}x${a.s}x${a.hkv}x${a.d}`,
    size: 2 * krows * a.d,
    wgsl: L.join("\n"),
    dispatch: dispatchFor(krows),
    host: (buffers) => {
      const { out, q, k, v, dout, fwd, bq, cos, sin } = backwardInputs(a, buffers, true);
      const dk = new Float64Array(a.d);
      const dv = new Float64Array(a.d);
      for (let kr = 0; kr < krows; kr++) {
        const kh = kr % a.hkv;
        const s = Math.floor(kr / a.hkv) % a.s;
        const b = Math.floor(kr / (a.hkv * a.s));
        const first = a.causal ? Math.max(0, s - (a.s - a.t)) : 0;
        const end = a.window === undefined ? a.t : Math.min(a.t, s + a.window - (a.s - a.t));
        dk.fill(0);
        dv.fill(0);
        for (let j = 0; j < g; j++) {
          const h = kh * g + j;
          for (let t = first; t < end; t++) {
            const row = (b * a.t + t) * a.h + h;
            let sc = 0;
            let dp = 0;
            for (let i = 0; i < a.d; i++) {
              sc += q[row * a.d + i] * k[kr * a.d + i];
              dp += dout[row * a.d + i] * v[kr * a.d + i];
            }
            const p = Math.exp(sc * a.scale - fwd[rows * a.d + row]);
            const ds = p * (dp - bq[rows * a.d + row]);
            for (let i = 0; i < a.d; i++) {
              dv[i] += p * dout[row * a.d + i];
              dk[i] += ds * q[row * a.d + i];
            }
          }
        }
        if (a.rope) ropeHost(dk.slice(), 0, dk, 0, s, a, { cos, sin }, true);
        for (let i = 0; i < a.d; i++) {
          out[kr * a.d + i] = dk[i] * a.scale;
          out[krows * a.d + kr * a.d + i] = dv[i];
        }
      }
    },
  };
}
