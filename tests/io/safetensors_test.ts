import assert from "node:assert/strict";
import {
  decodeBf16,
  decodeF16,
  encodeBf16,
  encodeF16,
  openSafetensors,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  type StEntry,
  toFloat32,
  toInt32,
  writeSafetensors,
} from "../../lib/io/mod.ts";
import { freshSeed, Rng } from "./_rng.ts";
import { TestRng } from "../_helpers.ts";

// ---------------------------------------------------------------------------------------------------------
// Independent oracles for half-precision rounding, computed in float64 from the format definitions.
// ---------------------------------------------------------------------------------------------------------

/** Value of binary16 bits from the definition (-1)^s · 2^(e-15) · (1 + m/1024), subnormals 2^-14 · m/1024. */
function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0x1f) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * Math.pow(2, -14) * (m / 1024);
  return sign * Math.pow(2, e - 15) * (1 + m / 1024);
}

/** All non-negative finite binary16 values, indexed by bits 0..0x7bff (increasing). */
const HALF_TABLE = Array.from({ length: 0x7c00 }, (_, b) => halfValue(b));

/** Nearest binary16 bits to x (ties to even mantissa), found by search over the value table. */
function oracleF16(x: number): number {
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  // 65520 is the midpoint between the largest finite value 65504 and the next step 65536 (= overflow).
  if (a >= 65520) return sign | 0x7c00;
  let lo = 0;
  let hi = HALF_TABLE.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (HALF_TABLE[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  if (HALF_TABLE[lo] === a || lo === HALF_TABLE.length - 1) return sign | lo;
  const below = a - HALF_TABLE[lo];
  const above = HALF_TABLE[lo + 1] - a;
  if (below < above) return sign | lo;
  if (above < below) return sign | (lo + 1);
  return sign | (lo % 2 === 0 ? lo : lo + 1);
}

/** Value of bfloat16 bits from the definition (8-bit exponent, 7-bit mantissa). */
function bf16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 7) & 0xff;
  const m = bits & 0x7f;
  if (e === 0xff) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * Math.pow(2, -126) * (m / 128);
  return sign * Math.pow(2, e - 127) * (1 + m / 128);
}

/** Nearest bfloat16 bits to a float32 value (ties to even); the two candidates bracket its bits. */
function oracleBf16(x: number): number {
  const f = new Float32Array([x]);
  const bits = new Uint32Array(f.buffer)[0];
  const lo = bits >>> 16; // truncation: same sign, magnitude not above |x|
  const loMag = Math.abs(bf16Value(lo));
  if (loMag === Math.abs(x)) return lo;
  const hi = lo + 1;
  // Past the largest finite value the next step is 2^128 (which becomes Inf).
  const hiMag = (hi & 0x7fff) === 0x7f80 ? Math.pow(2, 128) : Math.abs(bf16Value(hi));
  const a = Math.abs(x);
  if (a - loMag < hiMag - a) return lo;
  if (hiMag - a < a - loMag) return hi;
  return lo % 2 === 0 ? lo : hi;
}

/** Random float32 values spread over many binades, plus exact ties between neighbouring halves. */
function randomHalfInputs(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const kind = i % 4;
    if (kind === 0) {
      out[i] = rng.normal() * Math.pow(2, rng.int(-10, 10));
    } else if (kind === 1) {
      out[i] = (rng.next() < 0.5 ? -1 : 1) * Math.pow(2, rng.int(-27, 17)) * (1 + rng.next());
    } else if (kind === 2) {
      const k = rng.int(0, 0x7bfe); // midpoint of two adjacent finite halves: an exact tie
      out[i] = (rng.next() < 0.5 ? -1 : 1) * (HALF_TABLE[k] + HALF_TABLE[k + 1]) / 2;
    } else {
      out[i] = rng.normal();
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Half conversions
// ---------------------------------------------------------------------------------------------------------

Deno.test("f16 encoding matches known IEEE bit patterns", () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff], // largest finite
    [65519, 0x7bff], // just below the overflow midpoint
    [65520, 0x7c00], // the midpoint rounds to even, which is Inf
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [0, 0x0000],
    [-0, 0x8000],
    [Math.pow(2, -14), 0x0400], // smallest normal
    [Math.pow(2, -24), 0x0001], // smallest subnormal
    [1023 * Math.pow(2, -24), 0x03ff], // largest subnormal
    [Math.pow(2, -25), 0x0000], // tie between 0 and 2^-24: to even (0)
    [3 * Math.pow(2, -25), 0x0002], // tie between 1 and 2 ulps: to even (2)
    [1.5 * Math.pow(2, -25), 0x0001], // above the tie
    [1 + Math.pow(2, -11), 0x3c00], // tie: 1 (even) wins over 1 + 2^-10
    [1 + 3 * Math.pow(2, -11), 0x3c02], // tie: 1 + 2^-9 (even) wins
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
  ];
  const bits = encodeF16(new Float32Array(cases.map(([v]) => v)));
  cases.forEach(([value, expected], i) => {
    assert.equal(
      bits[i],
      expected,
      `f16(${value}) = 0x${bits[i].toString(16)}, expected 0x${expected.toString(16)}`,
    );
  });
  const nan = encodeF16(new Float32Array([NaN]))[0];
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x03ff, 0, "NaN must not turn into Inf");
});

Deno.test("f16 decoding of every bit pattern matches the format definition and re-encodes exactly", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const values = decodeF16(all);
  const back = encodeF16(values);
  for (let b = 0; b < 65536; b++) {
    const expected = halfValue(b);
    if (Number.isNaN(expected)) {
      assert.ok(Number.isNaN(values[b]), `0x${b.toString(16)} should decode to NaN`);
      continue;
    }
    assert.ok(
      Object.is(values[b], expected),
      `0x${b.toString(16)} decoded to ${values[b]}, expected ${expected}`,
    );
    assert.equal(back[b], b, `0x${b.toString(16)} did not survive decode -> encode`);
  }
});

Deno.test("f16 rounding of random float32 values matches a float64 nearest-value search", () => {
  const rng = new Rng(freshSeed());
  const xs = randomHalfInputs(rng, 20000);
  const bits = encodeF16(xs);
  for (let i = 0; i < xs.length; i++) {
    const expected = oracleF16(xs[i]);
    assert.equal(
      bits[i],
      expected,
      `f16(${xs[i]}) = 0x${bits[i].toString(16)}, expected 0x${expected.toString(16)}`,
    );
  }
});

Deno.test("bf16 rounding matches known patterns and a float64 nearest-value search", () => {
  const known: [number, number][] = [
    [1, 0x3f80],
    [-2, 0xc000],
    [1 + Math.pow(2, -8), 0x3f80], // tie: to even
    [1 + 3 * Math.pow(2, -8), 0x3f82], // tie: to even
    [3.4028234663852886e38, 0x7f80], // float32 max rounds past the largest bf16 to Inf
    [-0, 0x8000],
  ];
  const knownBits = encodeBf16(new Float32Array(known.map(([v]) => v)));
  known.forEach(([v, e], i) => assert.equal(knownBits[i], e, `bf16(${v})`));
  assert.ok(Number.isNaN(decodeBf16(encodeBf16(new Float32Array([NaN])))[0]));

  const rng = new Rng(freshSeed());
  const xs = new Float32Array(20000);
  const u = new Uint32Array(xs.buffer);
  for (let i = 0; i < xs.length; i++) {
    do u[i] = rng.u32(); while ((u[i] & 0x7f800000) === 0x7f800000); // any finite float32
    if (i % 3 === 0) u[i] = (u[i] & 0xffff0000) | 0x8000; // exact tie
  }
  const bits = encodeBf16(xs);
  const decoded = decodeBf16(bits);
  for (let i = 0; i < xs.length; i++) {
    assert.equal(bits[i], oracleBf16(xs[i]), `bf16(${xs[i]})`);
    const expected = bf16Value(bits[i]);
    assert.ok(
      Object.is(decoded[i], expected),
      `decode 0x${bits[i].toString(16)}: ${decoded[i]} vs ${expected}`,
    );
  }
});

// ---------------------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------------------

function randomShape(rng: Rng): number[] {
  const rank = rng.int(0, 3);
  return Array.from({ length: rank }, () => rng.int(1, 6));
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** One random tensor per dtype (never all zeros). */
function randomTensors(rng: Rng): Record<string, StEntry> {
  const s = () => randomShape(rng);
  const f32 = (n: number) => Float32Array.from({ length: n }, () => rng.normal() * 3);
  const shapes = Array.from({ length: 10 }, s);
  const big = (): bigint => {
    const hi = BigInt(rng.u32());
    const lo = BigInt(rng.u32());
    return BigInt.asIntN(64, (hi << 32n) | lo);
  };
  const i64 = BigInt64Array.from({ length: size(shapes[5]) }, big);
  i64[0] = -(2n ** 63n); // extremes survive exactly
  if (i64.length > 1) i64[1] = 2n ** 63n - 1n;
  const bool = Uint8Array.from({ length: size(shapes[9]) }, () => (rng.next() < 0.5 ? 0 : 1));
  bool[0] = 1;
  return {
    "a.f32": { dtype: "F32", shape: shapes[0], data: f32(size(shapes[0])) },
    "b.f16": { dtype: "F16", shape: shapes[1], data: f32(size(shapes[1])) },
    "c.bf16": { dtype: "BF16", shape: shapes[2], data: f32(size(shapes[2])) },
    "d.f64": {
      dtype: "F64",
      shape: shapes[3],
      data: Float64Array.from({ length: size(shapes[3]) }, () => rng.normal() * 1e10),
    },
    "e.i32": {
      dtype: "I32",
      shape: shapes[4],
      data: Int32Array.from({ length: size(shapes[4]) }, () => rng.u32() | 0),
    },
    "f.i64": { dtype: "I64", shape: shapes[5], data: i64 },
    "g.u8": {
      dtype: "U8",
      shape: shapes[6],
      data: Uint8Array.from({ length: size(shapes[6]) }, () => rng.int(1, 255)),
    },
    "h.i8": {
      dtype: "I8",
      shape: shapes[7],
      data: Int8Array.from({ length: size(shapes[7]) }, () => rng.int(-128, 127) || 1),
    },
    "i.u32": {
      dtype: "U32",
      shape: shapes[8],
      data: Uint32Array.from({ length: size(shapes[8]) }, () => rng.u32()),
    },
    "j.bool": { dtype: "BOOL", shape: shapes[9], data: bool },
  };
}

Deno.test("safetensors round trip preserves every dtype, shape and the metadata", () => {
  const rng = new Rng(freshSeed());
  for (let trial = 0; trial < 20; trial++) {
    const tensors = randomTensors(rng);
    const metadata = { format: "pt", note: `trial ${trial} ✓`, empty: "" };
    const bytes = serializeSafetensors(tensors, metadata);
    const parsed = parseSafetensors(bytes, "roundtrip.safetensors");
    assert.deepEqual(parsed.metadata, metadata);
    assert.deepEqual([...parsed.tensors.keys()].sort(), Object.keys(tensors).sort());
    for (const [name, entry] of Object.entries(tensors)) {
      const got = parsed.tensors.get(name)!;
      assert.equal(got.dtype, entry.dtype, name);
      assert.deepEqual(got.shape, entry.shape, name);
      if (entry.dtype === "F16" || entry.dtype === "BF16") {
        const src = entry.data as Float32Array;
        assert.ok(got.data instanceof Float32Array, `${name} decodes to Float32Array`);
        for (let i = 0; i < src.length; i++) {
          const expected: number = entry.dtype === "F16"
            ? halfValue(oracleF16(src[i]))
            : bf16Value(oracleBf16(src[i]));
          assert.equal(got.data[i], expected, `${name}[${i}] from ${src[i]}`);
        }
        const raw = parseSafetensors(bytes, "raw", { rawHalf: true }).tensors.get(name)!;
        assert.ok(raw.data instanceof Uint16Array);
        assert.deepEqual(
          Array.from(raw.data as Uint16Array),
          Array.from(src, entry.dtype === "F16" ? oracleF16 : oracleBf16),
        );
      } else {
        assert.equal(got.data.constructor, entry.data.constructor, name);
        assert.deepEqual(got.data, entry.data, name);
      }
    }
    // Raw F16 bits written back give identical bytes.
    const raw = parseSafetensors(bytes, "raw", { rawHalf: true });
    assert.deepEqual(serializeSafetensors(raw.tensors, raw.metadata), bytes);
  }
});

Deno.test("safetensors layout: padded header, metadata first, sorted contiguous little-endian data", () => {
  const rng = new Rng(freshSeed());
  for (let trial = 0; trial < 30; trial++) {
    const tensors = randomTensors(rng);
    const names = Object.keys(tensors);
    // shuffle insertion order; the file must not depend on it
    for (let i = names.length - 1; i > 0; i--) {
      const j = rng.int(0, i);
      [names[i], names[j]] = [names[j], names[i]];
    }
    const shuffled = new Map(names.map((n) => [n, tensors[n]]));
    const metadata = trial % 2 === 0 ? { k: "v".repeat(trial) } : undefined;
    const bytes = serializeSafetensors(shuffled, metadata);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = Number(view.getBigUint64(0, true));
    assert.equal((8 + n) % 8, 0, "data section starts at a multiple of 8");
    const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    const trimmed = headerText.trimEnd();
    assert.ok(n - trimmed.length < 8, "at most 7 padding bytes");
    assert.match(headerText.slice(trimmed.length), /^ *$/, "padding is spaces");
    const header = JSON.parse(headerText);
    const keys = Object.keys(header);
    if (metadata) assert.equal(keys[0], "__metadata__");
    const tensorKeys = keys.filter((k) => k !== "__metadata__");
    assert.deepEqual(tensorKeys, [...tensorKeys].sort());
    let offset = 0;
    for (const name of [...Object.keys(tensors)].sort()) {
      const [start, end] = header[name].data_offsets;
      assert.equal(start, offset, `${name} follows the previous tensor`);
      offset = end;
    }
    assert.equal(8 + n + offset, bytes.length, "no trailing bytes");
    // F32 data is little-endian at the declared offset.
    const f32 = tensors["a.f32"].data as Float32Array;
    const base = 8 + n + header["a.f32"].data_offsets[0];
    for (let i = 0; i < f32.length; i++) assert.equal(view.getFloat32(base + 4 * i, true), f32[i]);
    const u32 = tensors["i.u32"].data as Uint32Array;
    const ubase = 8 + n + header["i.u32"].data_offsets[0];
    for (let i = 0; i < u32.length; i++) assert.equal(view.getUint32(ubase + 4 * i, true), u32[i]);
  }
});

Deno.test("readSafetensors / writeSafetensors round trip through a file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(freshSeed());
    const tensors = randomTensors(rng);
    const path = `${dir}/nested/model.safetensors`;
    await writeSafetensors(path, tensors, { format: "pt" });
    const { tensors: back, metadata } = await readSafetensors(path);
    assert.deepEqual(metadata, { format: "pt" });
    assert.deepEqual(back.get("e.i32")!.data, tensors["e.i32"].data);
    assert.deepEqual(back.get("f.i64")!.data, tensors["f.i64"].data);
    await assert.rejects(readSafetensors(`${dir}/missing.safetensors`), /missing\.safetensors/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("toFloat32 and toInt32 convert entries and check the int32 range", () => {
  const rng = new Rng(freshSeed());
  const ints = Array.from({ length: 50 }, () => rng.int(-2147483648, 2147483647));
  const i64: StEntry = { dtype: "I64", shape: [50], data: BigInt64Array.from(ints, (v) => BigInt(v)) };
  assert.deepEqual(Array.from(toInt32(i64)), ints);
  assert.deepEqual(Array.from(toFloat32(i64)), ints.map(Math.fround));
  const tooBig: StEntry = { dtype: "I64", shape: [2], data: new BigInt64Array([1n, 2n ** 31n]) };
  assert.throws(() => toInt32(tooBig, "labels"), /"labels" element 1 is 2147483648/);
  const bits = new Uint16Array([0x3c00, 0xc000, 0x0001]);
  assert.deepEqual(Array.from(toFloat32({ dtype: "F16", shape: [3], data: bits })), [
    1,
    -2,
    Math.pow(2, -24),
  ]);
  assert.deepEqual(Array.from(toFloat32({ dtype: "BF16", shape: [1], data: new Uint16Array([0x3f80]) })), [
    1,
  ]);
  const u8 = Uint8Array.from({ length: 20 }, () => rng.int(0, 255));
  assert.deepEqual(Array.from(toFloat32({ dtype: "U8", shape: [20], data: u8 })), Array.from(u8));
  assert.throws(
    () => toInt32({ dtype: "F32", shape: [1], data: new Float32Array([1.5]) }, "w"),
    /"w" has dtype F32/,
  );
});

/**
 * Whether `got` is the float32 nearest to the integer `v`, ties to the even significand, checked against its two
 * float32 neighbours with exact integer distances (for |v| >= 2^24, where float32 values are integers).
 */
function isNearestFloat32(v: bigint, got: number): boolean {
  if (Math.fround(got) !== got || (v < 0n) !== (got < 0)) return false;
  const magnitude = v < 0n ? -v : v;
  const bits = new Uint32Array(new Float32Array([Math.abs(got)]).buffer)[0];
  const valueOf = (b: number) => BigInt(new Float32Array(new Uint32Array([b]).buffer)[0]);
  const distance = (f: bigint) => (magnitude > f ? magnitude - f : f - magnitude);
  const here = distance(valueOf(bits));
  return [bits - 1, bits + 1].every((b) => {
    const there = distance(valueOf(b));
    return there > here || (there === here && (bits & 1) === 0);
  });
}

Deno.test("toFloat32 rounds I64 once to the nearest float32, as numpy and PyTorch do", () => {
  // [value, numpy's np.array([value], dtype=np.int64).astype(np.float32)] (torch's .float() gives the same).
  const golden: [bigint, number][] = [
    [2n ** 53n + 2n ** 29n + 1n, 9007200328482816],
    [2n ** 62n + 2n ** 38n + 1n, 4611686568183201792],
    [-(2n ** 53n + 2n ** 29n + 1n), -9007200328482816],
    [2n ** 53n + 2n ** 29n, 9007199254740992],
    [2n ** 53n + 3n * 2n ** 29n, 9007201402224640],
    [2n ** 63n - 1n, 9223372036854775808],
    [-(2n ** 63n), -9223372036854775808],
    [2n ** 24n + 1n, 16777216],
    [2n ** 24n + 3n, 16777220],
    [2n ** 60n + 2n ** 36n + 2n ** 35n - 1n, 1152921642045800448],
    [-(2n ** 55n + 2n ** 31n + 1n), -36028801313931264],
  ];
  const fromNumpy = toFloat32({
    dtype: "I64",
    shape: [golden.length],
    data: BigInt64Array.from(golden, ([v]) => v),
  });
  assert.deepEqual(Array.from(fromNumpy), golden.map(([, f]) => f));
  // Fresh values at and around the halfway points between float32 neighbours m·2^s and (m + 1)·2^s.
  const rng = new Rng(freshSeed());
  const values: bigint[] = [];
  for (let i = 0; i < 2000; i++) {
    const m = BigInt(rng.int(2 ** 23, 2 ** 24 - 1));
    const s = BigInt(rng.int(1, 39));
    const half = 1n << (s - 1n);
    const offsets = [half, half - 1n, half + 1n, BigInt(rng.int(0, 2 ** 20)) % (2n * half)];
    const v = (m << s) + offsets[rng.int(0, 3)];
    values.push(rng.next() < 0.5 ? -v : v);
  }
  const got = toFloat32({ dtype: "I64", shape: [values.length], data: BigInt64Array.from(values) });
  values.forEach((v, i) => assert.ok(isNearestFloat32(v, got[i]), `${v} became ${got[i]}`));
});

Deno.test("BOOL reads any nonzero byte as 1, as numpy and PyTorch do, and writes it back", () => {
  const rng = new Rng(freshSeed());
  const n = rng.int(1, 64);
  const bytes = Uint8Array.from({ length: n }, () => (rng.next() < 0.3 ? 0 : rng.int(1, 255)));
  const file = makeFile({ m: { dtype: "BOOL", shape: [n], data_offsets: [0, n] } }, bytes);
  const read = parseSafetensors(file).tensors;
  assert.deepEqual(read.get("m")!.data, bytes.map((b) => (b === 0 ? 0 : 1)));
  const back = parseSafetensors(serializeSafetensors(read)).tensors.get("m")!.data;
  assert.deepEqual(back, read.get("m")!.data);
  // safetensors.numpy.load and safetensors.torch.load of bytes [2, 0, 255, 1], as uint8: [1, 0, 1, 1].
  const fixed = makeFile(
    { m: { dtype: "BOOL", shape: [4], data_offsets: [0, 4] } },
    new Uint8Array([2, 0, 255, 1]),
  );
  assert.deepEqual(parseSafetensors(fixed).tensors.get("m")!.data, new Uint8Array([1, 0, 1, 1]));
});

// ---------------------------------------------------------------------------------------------------------
// Malformed files
// ---------------------------------------------------------------------------------------------------------

/** A file with the given header text and data bytes; `declared` overrides the length field. */
function makeFile(header: string | object, data: Uint8Array, declared?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declared ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("safetensors parser rejects malformed files with errors naming the file and tensor", () => {
  const data = new Uint8Array(32).map((_, i) => i + 1);
  const ok = { w: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] } };
  // sanity: the well-formed base case parses
  assert.deepEqual(parseSafetensors(makeFile(ok, data.subarray(0, 16)), "ok").tensors.get("w")!.shape, [
    2,
    2,
  ]);

  const cases: [string, Uint8Array, RegExp][] = [
    ["shorter than the length field", new Uint8Array(5), /"bad\.st" has 5 bytes, fewer than the 8-byte/],
    [
      "header length beyond file size",
      makeFile(ok, data, 1000n),
      /header of "bad\.st" declares 1000 bytes but the file has \d+ bytes/,
    ],
    ["bad JSON", makeFile('{"w": {"dtype": "F32",', data), /"bad\.st" has a header that is not valid JSON/],
    ["header not an object", makeFile("[1, 2]", data), /"bad\.st" has a JSON header that is not an object/],
    [
      "unknown dtype",
      makeFile({ w: { dtype: "F7", shape: [2], data_offsets: [0, 2] } }, data),
      /"bad\.st", tensor "w": unknown dtype "F7"; supported: F64, F32/,
    ],
    ...["I16", "U16", "U64", "F8_E4M3", "F8_E5M2"].map((dtype): [string, Uint8Array, RegExp] => [
      `unsupported dtype ${dtype}`,
      makeFile({ w: { dtype, shape: [2], data_offsets: [0, 2] } }, data),
      new RegExp(
        `"bad\\.st", tensor "w": dtype "${dtype}" is a safetensors dtype that tessera does not support`,
      ),
    ]),
    [
      "offsets not matching shape x dtype",
      makeFile({ w: { dtype: "F32", shape: [3, 2], data_offsets: [0, 16] } }, data),
      /tensor "w": data_offsets \[0, 16\] span 16 bytes but shape \[3, 2\] of F32 needs 24 bytes/,
    ],
    [
      "offsets out of range",
      makeFile({ w: { dtype: "F64", shape: [5], data_offsets: [0, 40] } }, data),
      /tensor "w": data_offsets \[0, 40\] reach past the data section, which has 32 bytes/,
    ],
    [
      "start after end",
      makeFile({ w: { dtype: "U8", shape: [0], data_offsets: [8, 4] } }, data),
      /tensor "w": data_offsets \[8, 4\] has start after end/,
    ],
    [
      "overlapping offsets",
      makeFile({
        a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
        b: { dtype: "F32", shape: [2], data_offsets: [12, 20] },
      }, data),
      /"bad\.st": tensors "a" \[0, 16\] and "b" \[12, 20\] overlap/,
    ],
    [
      "non-string metadata",
      makeFile({ __metadata__: { epochs: 3 }, ...ok }, data),
      /"bad\.st" has metadata "epochs" of type number; metadata values must be strings/,
    ],
    [
      "metadata not an object",
      makeFile({ __metadata__: "x", ...ok }, data),
      /"bad\.st" has "__metadata__" that is not an object/,
    ],
    [
      "negative shape",
      makeFile({ w: { dtype: "U8", shape: [-1], data_offsets: [0, 0] } }, data),
      /tensor "w": shape \[-1\] is not a list of non-negative integers/,
    ],
    [
      "missing data_offsets",
      makeFile({ w: { dtype: "U8", shape: [1] } }, data),
      /tensor "w": data_offsets undefined is not \[start, end\]/,
    ],
    ["entry not an object", makeFile({ w: 3 }, data), /tensor "w": header entry is not an object/],
  ];
  for (const [label, bytes, pattern] of cases) {
    assert.throws(() => parseSafetensors(bytes, "bad.st"), pattern, label);
  }
});

Deno.test("safetensors refuses a gap before or between tensors and trailing bytes, as the safetensors library does", async () => {
  const rng = new TestRng(71);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/gap.safetensors`;
  // n F32 tensors of random lengths, listed in random order; `gaps[i]` bytes lie before tensor i and `tail` after.
  const build = (lengths: number[], gaps: number[], tail: number) => {
    const header: Record<string, unknown> = {};
    const parts: number[] = [];
    let at = 0;
    lengths.forEach((len, i) => {
      at += gaps[i];
      for (let k = 0; k < gaps[i]; k++) parts.push(rng.int(0, 255));
      header[`t${i}`] = { dtype: "F32", shape: [len], data_offsets: [at, at + 4 * len] };
      for (let k = 0; k < 4 * len; k++) parts.push(rng.int(0, 255));
      at += 4 * len;
    });
    for (let k = 0; k < tail; k++) parts.push(rng.int(0, 255));
    const order = Object.keys(header).sort(() => rng.next() - 0.5);
    return makeFile(Object.fromEntries(order.map((k) => [k, header[k]])), new Uint8Array(parts));
  };
  const check = async (bytes: Uint8Array, pattern: RegExp, label: string) => {
    assert.throws(() => parseSafetensors(bytes, path), pattern, label);
    await Deno.writeFile(path, bytes);
    await assert.rejects(readSafetensors(path), pattern, label);
    await assert.rejects(openSafetensors(path), pattern, label);
  };
  for (let trial = 0; trial < 6; trial++) {
    const n = rng.int(1, 5);
    const lengths = Array.from({ length: n }, () => rng.int(0, 6));
    lengths[rng.int(0, n - 1)] ||= 1; // at least one tensor holds data
    const none = new Array(n).fill(0);
    // The contiguous file parses, whatever order the header lists the tensors in (empty ones included).
    assert.equal(parseSafetensors(build(lengths, none, 0), path).tensors.size, n);

    // The gap goes before a tensor that holds data (two empty tensors at one offset may come in either order).
    const holding = lengths.flatMap((len, i) => (len > 0 ? [i] : []));
    const g = holding[rng.int(0, holding.length - 1)];
    const gap = rng.int(1, 9);
    const gaps = none.map((_, i) => (i === g ? gap : 0));
    const start = gap + 4 * lengths.slice(0, g).reduce((a, b) => a + b, 0);
    const end = start + 4 * lengths[g];
    const escaped = path.replaceAll(".", "\\.");
    await check(
      build(lengths, gaps, 0),
      new RegExp(
        `safetensors file "${escaped}": tensor "t${g}" \\[${start}, ${end}\\] leaves a gap of ${gap} bytes ` +
          `\\((the data section starts at offset 0|"t\\d+" \\[\\d+, ${start - gap}\\] ends at ${
            start - gap
          })\\)`,
      ),
      `gap of ${gap} before t${g} of lengths ${lengths}`,
    );
    const tail = rng.int(1, 9);
    const total = 4 * lengths.reduce((a, b) => a + b, 0);
    await check(
      build(lengths, none, tail),
      new RegExp(
        `safetensors file "${escaped}": ${tail} trailing bytes after the tensors: the data section has ` +
          `${total + tail} bytes but the last tensor, "t\\d+", ends at ${total}`,
      ),
      `${tail} trailing bytes after lengths ${lengths}`,
    );
  }
  // A file with no tensors and data bytes is refused too; an empty tensor that lies inside another overlaps it.
  await check(
    makeFile({ __metadata__: { k: "v" } }, new Uint8Array(rng.int(1, 9))),
    /but it holds no tensors/,
    "none",
  );
  await check(
    makeFile({
      a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
      e: { dtype: "F32", shape: [0], data_offsets: [8, 8] },
    }, new Uint8Array(16)),
    /tensors "a" \[0, 16\] and "e" \[8, 8\] overlap/,
    "empty inside",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors parser refuses a name given twice in the header, however it is spelled", () => {
  const rng = new Rng(freshSeed());
  const n = rng.int(1, 4);
  const entry = (k: number) =>
    `{"dtype":"F32","shape":[${n}],"data_offsets":[${4 * n * k},${4 * n * (k + 1)}]}`;
  const data = Float32Array.from({ length: 4 * n }, () => rng.normal());
  const bytes = new Uint8Array(data.buffer);
  const twice: [string, string][] = [
    [`{"a":${entry(0)},"a":${entry(1)}}`, `"a"`],
    [`{"a":${entry(0)},"b":${entry(1)},"\\u0061":${entry(2)}}`, `"a"`],
    [`{"__metadata__":{"k":"v"},"w":${entry(0)},"__metadata__":{}}`, `"__metadata__"`],
    // Inside one object: JSON.parse kept the last, so the first value was hidden.
    [`{"__metadata__":{"k":"v","k":"w"},"w":${entry(0)}}`, `"k" in "__metadata__"`],
    [`{"w":{"dtype":"F32","shape":[${n}],"shape":[${n}],"data_offsets":[0,${4 * n}]}}`, `"shape" in "w"`],
  ];
  for (const [header, name] of twice) {
    assert.throws(
      () => parseSafetensors(makeFile(header, bytes), "dup.st"),
      (e: Error) => {
        assert.equal(
          e.message,
          `safetensors file "dup.st" names ${name} more than once in its header; each tensor name (and ` +
            `"__metadata__"), and each key within an entry, must appear once`,
        );
        return true;
      },
    );
  }
  // Names that hold quotes, backslashes, commas and braces, and metadata keys that are tensor names, are no repeats.
  const tricky = `{"__metadata__":{"a":"a","q":"\\""},"x\\",\\"a":${entry(0)},"q\\\\":${entry(1)},` +
    `"{a}":${entry(2)},"a":${entry(3)}}`;
  const names = [...parseSafetensors(makeFile(tricky, bytes)).tensors.keys()];
  assert.deepEqual(names, ['x","a', "q\\", "{a}", "a"]);
});

Deno.test("safetensors header lists __metadata__ first and the tensors in data order, integer-like names too", () => {
  const rng = new Rng(freshSeed());
  const names = [...new Set(Array.from({ length: rng.int(3, 8) }, () => String(rng.int(0, 999))))].concat(
    "w",
  );
  const tensors = Object.fromEntries(
    names.map((
      name,
    ) => [name, { dtype: "F32" as const, shape: [1], data: new Float32Array([rng.normal()]) }]),
  );
  const bytes = serializeSafetensors(tensors, { format: "pt" });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.ok(text.startsWith('{"__metadata__":{"format":"pt"},'), text);
  const sorted = [...names].sort();
  const at = sorted.map((name) => text.indexOf(`"${name}":{"dtype"`));
  assert.deepEqual(at, [...at].sort((a, b) => a - b), `header order ${text}`);
  const { tensors: back } = parseSafetensors(bytes);
  for (const name of sorted) assert.deepEqual(back.get(name)!.data, tensors[name].data, name);
  assert.deepEqual([...back.keys()], sorted, "the data is in sorted-name order");
});

Deno.test("safetensors writer rejects inconsistent entries", () => {
  assert.throws(
    () => serializeSafetensors({ w: { dtype: "F32", shape: [3], data: new Float32Array(2).fill(1) } }),
    /tensor "w": shape \[3\] has 3 elements but data has 2/,
  );
  assert.throws(
    () => serializeSafetensors({ w: { dtype: "I32", shape: [2], data: new Float32Array([1, 2]) } }),
    /tensor "w" \(I32\): data is a Float32Array, expected Int32Array/,
  );
  assert.throws(
    () => serializeSafetensors({ m: { dtype: "BOOL", shape: [2], data: new Uint8Array([1, 2]) } }),
    /element 1 is 2; BOOL elements must be 0 or 1/,
  );
  assert.throws(
    () => serializeSafetensors({ __metadata__: { dtype: "U8", shape: [1], data: new Uint8Array([1]) } }),
    /reserved/,
  );
});

Deno.test("parseSafetensors, readSafetensors and SafetensorsFile.read refuse a misspelt rawHalf", async () => {
  // 1.5 is 0x3e00 in binary16; dropped, { rawhalf: true } gave the decoded Float32Array [1.5] instead of the bits.
  const bytes = serializeSafetensors({ w: { dtype: "F16", shape: [1], data: new Uint16Array([0x3e00]) } });
  assert.throws(() => parseSafetensors(bytes, "w", { rawhalf: true } as never), /unknown option "rawhalf"/);
  assert.deepEqual(
    parseSafetensors(bytes, "w", { rawHalf: true }).tensors.get("w")!.data,
    new Uint16Array([0x3e00]),
  );
  const path = `${await Deno.makeTempDir()}/w w.safetensors`;
  await Deno.writeFile(path, bytes);
  await assert.rejects(
    () => readSafetensors(path, { raw: true } as never),
    /readSafetensors: unknown option "raw"/,
  );
  const file = await openSafetensors(path);
  try {
    await assert.rejects(
      () => file.read("w", { rawhalf: true } as never),
      /SafetensorsFile\.read: unknown option/,
    );
  } finally {
    file.close();
  }
});
