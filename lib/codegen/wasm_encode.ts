/**
 * A small WebAssembly binary encoder: modules with one imported shared memory, imported and defined functions,
 * and exports; function bodies written instruction by instruction with the text-format names
 * (`f.op("f32.add")`, `f.op("local.get", x)`). Only the instructions the wasm renderers use are in the table
 * (core, saturating truncation, bulk memory, a few atomics, 128-bit SIMD and relaxed-SIMD fused multiply-add).
 *
 * @module
 */

/** A value type. */
export type ValType = "i32" | "i64" | "f32" | "f64" | "v128";

const VALTYPE: Record<ValType, number> = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** How an instruction's immediates are encoded. */
type Imm = "none" | "idx" | "i32" | "i64" | "f32" | "f64" | "mem" | "block" | "v128" | "lane" | "zero";

/** Opcode bytes (prefix and code) and immediate kind of every instruction the encoder knows. */
const OPS = {
  "unreachable": [0x00, "none"],
  "nop": [0x01, "none"],
  "block": [0x02, "block"],
  "loop": [0x03, "block"],
  "if": [0x04, "block"],
  "else": [0x05, "none"],
  "end": [0x0b, "none"],
  "br": [0x0c, "idx"],
  "br_if": [0x0d, "idx"],
  "return": [0x0f, "none"],
  "call": [0x10, "idx"],
  "drop": [0x1a, "none"],
  "select": [0x1b, "none"],
  "local.get": [0x20, "idx"],
  "local.set": [0x21, "idx"],
  "local.tee": [0x22, "idx"],
  "i32.load": [0x28, "mem"],
  "f32.load": [0x2a, "mem"],
  "f64.load": [0x2b, "mem"],
  "i32.load16_u": [0x2f, "mem"],
  "i32.store": [0x36, "mem"],
  "f32.store": [0x38, "mem"],
  "f64.store": [0x39, "mem"],
  "i32.store16": [0x3b, "mem"],
  "i32.const": [0x41, "i32"],
  "i64.const": [0x42, "i64"],
  "f32.const": [0x43, "f32"],
  "f64.const": [0x44, "f64"],
  "i32.eqz": [0x45, "none"],
  "i32.eq": [0x46, "none"],
  "i32.ne": [0x47, "none"],
  "i32.lt_s": [0x48, "none"],
  "i32.lt_u": [0x49, "none"],
  "i32.gt_s": [0x4a, "none"],
  "i32.gt_u": [0x4b, "none"],
  "i32.le_s": [0x4c, "none"],
  "i32.le_u": [0x4d, "none"],
  "i32.ge_s": [0x4e, "none"],
  "i32.ge_u": [0x4f, "none"],
  "f32.eq": [0x5b, "none"],
  "f32.ne": [0x5c, "none"],
  "f32.lt": [0x5d, "none"],
  "f32.gt": [0x5e, "none"],
  "f32.le": [0x5f, "none"],
  "f32.ge": [0x60, "none"],
  "f64.eq": [0x61, "none"],
  "f64.ne": [0x62, "none"],
  "f64.lt": [0x63, "none"],
  "f64.gt": [0x64, "none"],
  "f64.le": [0x65, "none"],
  "f64.ge": [0x66, "none"],
  "i32.clz": [0x67, "none"],
  "i32.add": [0x6a, "none"],
  "i32.sub": [0x6b, "none"],
  "i32.mul": [0x6c, "none"],
  "i32.div_s": [0x6d, "none"],
  "i32.div_u": [0x6e, "none"],
  "i32.rem_s": [0x6f, "none"],
  "i32.rem_u": [0x70, "none"],
  "i32.and": [0x71, "none"],
  "i32.or": [0x72, "none"],
  "i32.xor": [0x73, "none"],
  "i32.shl": [0x74, "none"],
  "i32.shr_s": [0x75, "none"],
  "i32.shr_u": [0x76, "none"],
  "i64.add": [0x7c, "none"],
  "i64.and": [0x83, "none"],
  "i64.or": [0x84, "none"],
  "i64.shl": [0x86, "none"],
  "i64.shr_u": [0x88, "none"],
  "f32.abs": [0x8b, "none"],
  "f32.neg": [0x8c, "none"],
  "f32.floor": [0x8e, "none"],
  "f32.trunc": [0x8f, "none"],
  "f32.nearest": [0x90, "none"],
  "f32.sqrt": [0x91, "none"],
  "f32.add": [0x92, "none"],
  "f32.sub": [0x93, "none"],
  "f32.mul": [0x94, "none"],
  "f32.div": [0x95, "none"],
  "f32.min": [0x96, "none"],
  "f32.max": [0x97, "none"],
  "f32.copysign": [0x98, "none"],
  "f64.abs": [0x99, "none"],
  "f64.neg": [0x9a, "none"],
  "f64.floor": [0x9c, "none"],
  "f64.trunc": [0x9d, "none"],
  "f64.nearest": [0x9e, "none"],
  "f64.sqrt": [0x9f, "none"],
  "f64.add": [0xa0, "none"],
  "f64.sub": [0xa1, "none"],
  "f64.mul": [0xa2, "none"],
  "f64.div": [0xa3, "none"],
  "f64.min": [0xa4, "none"],
  "f64.max": [0xa5, "none"],
  "f64.copysign": [0xa6, "none"],
  "i32.wrap_i64": [0xa7, "none"],
  "i64.extend_i32_s": [0xac, "none"],
  "i64.extend_i32_u": [0xad, "none"],
  "f32.convert_i32_s": [0xb2, "none"],
  "f32.convert_i32_u": [0xb3, "none"],
  "f32.demote_f64": [0xb6, "none"],
  "f64.convert_i32_s": [0xb7, "none"],
  "f64.convert_i32_u": [0xb8, "none"],
  "f64.promote_f32": [0xbb, "none"],
  "i32.reinterpret_f32": [0xbc, "none"],
  "i64.reinterpret_f64": [0xbd, "none"],
  "f32.reinterpret_i32": [0xbe, "none"],
  "f64.reinterpret_i64": [0xbf, "none"],
  "i32.trunc_sat_f32_s": [0xfc000, "none"],
  "i32.trunc_sat_f32_u": [0xfc001, "none"],
  "i32.trunc_sat_f64_s": [0xfc002, "none"],
  "memory.fill": [0xfc00b, "zero"],
  "memory.atomic.notify": [0xfe000, "mem"],
  "memory.atomic.wait32": [0xfe001, "mem"],
  "i32.atomic.load": [0xfe010, "mem"],
  "i32.atomic.rmw.add": [0xfe01e, "mem"],
  "i32.atomic.rmw.cmpxchg": [0xfe048, "mem"],
  "v128.load": [0xfd000, "mem"],
  "v128.load32_splat": [0xfd009, "mem"],
  "v128.load64_splat": [0xfd00a, "mem"],
  "v128.store": [0xfd00b, "mem"],
  "v128.const": [0xfd00c, "v128"],
  "i8x16.shuffle": [0xfd00d, "v128"],
  "i32x4.splat": [0xfd011, "none"],
  "f32x4.splat": [0xfd013, "none"],
  "f64x2.splat": [0xfd014, "none"],
  "i32x4.extract_lane": [0xfd01b, "lane"],
  "i32x4.replace_lane": [0xfd01c, "lane"],
  "f32x4.extract_lane": [0xfd01f, "lane"],
  "f32x4.replace_lane": [0xfd020, "lane"],
  "f64x2.extract_lane": [0xfd021, "lane"],
  "f64x2.replace_lane": [0xfd022, "lane"],
  "i32x4.eq": [0xfd037, "none"],
  "i32x4.ne": [0xfd038, "none"],
  "i32x4.lt_s": [0xfd039, "none"],
  "i32x4.lt_u": [0xfd03a, "none"],
  "i32x4.gt_s": [0xfd03b, "none"],
  "i32x4.gt_u": [0xfd03c, "none"],
  "f32x4.eq": [0xfd041, "none"],
  "f32x4.ne": [0xfd042, "none"],
  "f32x4.lt": [0xfd043, "none"],
  "f32x4.gt": [0xfd044, "none"],
  "f32x4.ge": [0xfd046, "none"],
  "f64x2.eq": [0xfd047, "none"],
  "f64x2.lt": [0xfd049, "none"],
  "f64x2.ge": [0xfd04c, "none"],
  "v128.not": [0xfd04d, "none"],
  "v128.and": [0xfd04e, "none"],
  "v128.andnot": [0xfd04f, "none"],
  "v128.or": [0xfd050, "none"],
  "v128.xor": [0xfd051, "none"],
  "v128.bitselect": [0xfd052, "none"],
  "f32x4.demote_f64x2_zero": [0xfd05e, "none"],
  "f64x2.promote_low_f32x4": [0xfd05f, "none"],
  "f32x4.nearest": [0xfd06a, "none"],
  "f64x2.nearest": [0xfd094, "none"],
  "i32x4.abs": [0xfd0a0, "none"],
  "i32x4.neg": [0xfd0a1, "none"],
  "i32x4.shl": [0xfd0ab, "none"],
  "i32x4.shr_s": [0xfd0ac, "none"],
  "i32x4.shr_u": [0xfd0ad, "none"],
  "i32x4.add": [0xfd0ae, "none"],
  "i32x4.sub": [0xfd0b1, "none"],
  "i32x4.mul": [0xfd0b5, "none"],
  "i32x4.min_s": [0xfd0b6, "none"],
  "i32x4.min_u": [0xfd0b7, "none"],
  "i32x4.max_s": [0xfd0b8, "none"],
  "i32x4.max_u": [0xfd0b9, "none"],
  "i64x2.extend_low_i32x4_s": [0xfd0c7, "none"],
  "i64x2.shl": [0xfd0cb, "none"],
  "i64x2.shr_u": [0xfd0cd, "none"],
  "f32x4.abs": [0xfd0e0, "none"],
  "f32x4.neg": [0xfd0e1, "none"],
  "f32x4.sqrt": [0xfd0e3, "none"],
  "f32x4.add": [0xfd0e4, "none"],
  "f32x4.sub": [0xfd0e5, "none"],
  "f32x4.mul": [0xfd0e6, "none"],
  "f32x4.div": [0xfd0e7, "none"],
  "f32x4.min": [0xfd0e8, "none"],
  "f32x4.max": [0xfd0e9, "none"],
  "f32x4.pmin": [0xfd0ea, "none"],
  "f32x4.pmax": [0xfd0eb, "none"],
  "f64x2.abs": [0xfd0ec, "none"],
  "f64x2.add": [0xfd0f0, "none"],
  "f64x2.sub": [0xfd0f1, "none"],
  "f64x2.mul": [0xfd0f2, "none"],
  "f64x2.div": [0xfd0f3, "none"],
  "f64x2.min": [0xfd0f4, "none"],
  "f64x2.max": [0xfd0f5, "none"],
  "f64x2.pmin": [0xfd0f6, "none"],
  "f64x2.pmax": [0xfd0f7, "none"],
  "i32x4.trunc_sat_f32x4_s": [0xfd0f8, "none"],
  "i32x4.trunc_sat_f32x4_u": [0xfd0f9, "none"],
  "f32x4.convert_i32x4_s": [0xfd0fa, "none"],
  "f32x4.convert_i32x4_u": [0xfd0fb, "none"],
  "i32x4.trunc_sat_f64x2_s_zero": [0xfd0fc, "none"],
  "f64x2.convert_low_i32x4_s": [0xfd0fe, "none"],
  "f32x4.relaxed_madd": [0xfd105, "none"],
  "f64x2.relaxed_madd": [0xfd107, "none"],
} as const satisfies Record<string, readonly [number, Imm]>;

/**
 * The byte mask of an `i8x16.shuffle` that takes 32-bit lanes `lanes` (0-3 of the first operand, 4-7 of the
 * second).
 */
export function lanesMask(lanes: readonly number[]): Uint8Array {
  return new Uint8Array(lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]));
}

/** Names of the instructions the encoder knows. */
export type OpName = keyof typeof OPS;

/** A block's result: nothing, or one value. */
export type BlockType = ValType | "void";

/** Appends the unsigned LEB128 encoding of `n`. */
function uleb(out: number[], n: number): void {
  let v = n >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
}

/** Appends the signed LEB128 encoding of a bigint. */
function slebBig(out: number[], n: bigint): void {
  let v = n;
  for (;;) {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    const done = (v === 0n && (byte & 0x40) === 0) || (v === -1n && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return;
  }
}

function bytesOf(arr: ArrayBufferView): number[] {
  return [...new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength)];
}

function name(out: number[], s: string): void {
  const b = new TextEncoder().encode(s);
  uleb(out, b.length);
  out.push(...b);
}

/** One function body under construction. Locals are numbered after the parameters. */
export class FnBuilder {
  /** Parameter types. */
  readonly params: readonly ValType[];
  /** Result types. */
  readonly results: readonly ValType[];
  #locals: ValType[] = [];
  #code: number[] = [];
  /** Code run before the body: the set-up of {@link constV128}'s locals. */
  #prologue: number[] = [];
  #constants = new Map<string, number>();

  /** A function with these parameter and result types. */
  constructor(params: readonly ValType[], results: readonly ValType[]) {
    this.params = params;
    this.results = results;
  }

  /** Declares a new local of type `t`; returns its index. */
  local(t: ValType): number {
    this.#locals.push(t);
    return this.params.length + this.#locals.length - 1;
  }

  /**
   * Appends one instruction. Immediates by kind: an index (local, function, branch depth), a constant, a block
   * type, a lane, or for memory instructions the byte offset (the natural alignment is used).
   */
  op(name: OpName, imm?: number | bigint | BlockType | Uint8Array): this {
    // A v128 constant reads a local set once at the start (see constV128).
    if (name === "v128.const") return this.get(this.constV128(imm as Uint8Array));
    const [code, kind] = OPS[name] as readonly [number, Imm];
    const c = this.#code;
    if (code > 0xff) {
      // Prefixed: 0xfc (saturating truncation, bulk memory), 0xfd (SIMD) or 0xfe (atomics), then the LEB128
      // sub-opcode.
      c.push(code >> 12);
      uleb(c, code & 0xfff);
    } else c.push(code);
    switch (kind) {
      case "none":
        break;
      case "idx":
      case "lane":
        if (typeof imm !== "number") throw new TypeError(`${name} needs a numeric immediate`);
        if (kind === "lane") c.push(imm);
        else uleb(c, imm);
        break;
      case "i32":
        slebBig(c, BigInt((imm as number) | 0));
        break;
      case "i64":
        slebBig(c, BigInt.asIntN(64, BigInt(imm as number | bigint)));
        break;
      case "f32":
        c.push(...bytesOf(new Float32Array([imm as number])));
        break;
      case "f64":
        c.push(...bytesOf(new Float64Array([imm as number])));
        break;
      case "mem": {
        const bytes = name.startsWith("v128")
          ? (name === "v128.load32_splat" ? 4 : name === "v128.load64_splat" ? 8 : 16)
          : name.includes("16")
          ? 2
          : name.startsWith("f64")
          ? 8
          : 4;
        uleb(c, Math.log2(bytes));
        uleb(c, (imm as number | undefined) ?? 0);
        break;
      }
      case "block":
        c.push(imm === undefined || imm === "void" ? 0x40 : VALTYPE[imm as ValType]);
        break;
      case "v128":
        c.push(...(imm as Uint8Array));
        break;
      case "zero":
        c.push(0);
        break;
    }
    return this;
  }

  /**
   * A local holding the v128 constant `bytes`, set once at the function's start; `op("v128.const", bytes)` pushes
   * it. V8 rebuilds a `v128.const` wherever it appears (a few instructions each), also inside loops; a local is a
   * register or stack slot read.
   */
  constV128(bytes: Uint8Array): number {
    const key = bytes.join(",");
    let l = this.#constants.get(key);
    if (l === undefined) {
      l = this.local("v128");
      this.#constants.set(key, l);
      this.#prologue.push(0xfd);
      uleb(this.#prologue, OPS["v128.const"][0] & 0xfff);
      this.#prologue.push(...bytes, OPS["local.set"][0]);
      uleb(this.#prologue, l);
    }
    return l;
  }

  /** `local.get` of each index in turn. */
  get(...locals: number[]): this {
    for (const l of locals) this.op("local.get", l);
    return this;
  }

  /** `local.set`. */
  set(local: number): this {
    return this.op("local.set", local);
  }

  /** An i32 constant. */
  i32(v: number): this {
    return this.op("i32.const", v);
  }

  /** The encoded body (locals and code, closing `end` included). */
  encode(): number[] {
    const out: number[] = [];
    const groups: [ValType, number][] = [];
    for (const t of this.#locals) {
      const last = groups[groups.length - 1];
      if (last !== undefined && last[0] === t) last[1]++;
      else groups.push([t, 1]);
    }
    uleb(out, groups.length);
    for (const [t, n] of groups) {
      uleb(out, n);
      out.push(VALTYPE[t]);
    }
    out.push(...this.#prologue, ...this.#code, 0x0b);
    return out;
  }
}

/** A function import. */
interface FnImport {
  module: string;
  field: string;
  type: number;
}

/**
 * A module under construction. Functions are indexed imports first, then definitions, in the order added;
 * import every function before defining any.
 */
export class ModuleBuilder {
  #types: string[] = [];
  #imports: FnImport[] = [];
  #funcs: { type: number; body: FnBuilder }[] = [];
  #exports: { name: string; func: number }[] = [];
  #memory: { module: string; field: string; min: number; max: number; shared: boolean } | null = null;

  #type(params: readonly ValType[], results: readonly ValType[]): number {
    const key = `${params.join(",")}>${results.join(",")}`;
    let i = this.#types.indexOf(key);
    if (i < 0) {
      i = this.#types.length;
      this.#types.push(key);
    }
    return i;
  }

  /** Imports the module's memory (`min` and `max` in 64 KiB pages). */
  importMemory(module: string, field: string, opts: { min: number; max: number; shared: boolean }): void {
    this.#memory = { module, field, ...opts };
  }

  /** Imports a function; returns its index. */
  importFunction(module: string, field: string, params: ValType[], results: ValType[]): number {
    if (this.#funcs.length > 0) throw new Error("wasm encoder: import functions before defining any");
    this.#imports.push({ module, field, type: this.#type(params, results) });
    return this.#imports.length - 1;
  }

  /** Index the next defined function will get (for calls between functions). */
  nextFunctionIndex(): number {
    return this.#imports.length + this.#funcs.length;
  }

  /** Adds a defined function; returns its index. */
  addFunction(body: FnBuilder): number {
    this.#funcs.push({ type: this.#type(body.params, body.results), body });
    return this.#imports.length + this.#funcs.length - 1;
  }

  /** Exports function `func` under `name`. */
  exportFunction(name: string, func: number): void {
    this.#exports.push({ name, func });
  }

  /** The binary module. */
  encode(): Uint8Array<ArrayBuffer> {
    const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    const section = (id: number, content: number[]) => {
      out.push(id);
      uleb(out, content.length);
      for (const b of content) out.push(b);
    };
    const types: number[] = [];
    uleb(types, this.#types.length);
    for (const key of this.#types) {
      const [p, r] = key.split(">").map((s) => (s === "" ? [] : s.split(",") as ValType[]));
      types.push(0x60);
      uleb(types, p.length);
      for (const t of p) types.push(VALTYPE[t]);
      uleb(types, r.length);
      for (const t of r) types.push(VALTYPE[t]);
    }
    section(1, types);
    const imports: number[] = [];
    uleb(imports, this.#imports.length + (this.#memory === null ? 0 : 1));
    if (this.#memory !== null) {
      const m = this.#memory;
      name(imports, m.module);
      name(imports, m.field);
      imports.push(0x02, m.shared ? 0x03 : 0x01);
      uleb(imports, m.min);
      uleb(imports, m.max);
    }
    for (const im of this.#imports) {
      name(imports, im.module);
      name(imports, im.field);
      imports.push(0x00);
      uleb(imports, im.type);
    }
    section(2, imports);
    const funcs: number[] = [];
    uleb(funcs, this.#funcs.length);
    for (const f of this.#funcs) uleb(funcs, f.type);
    section(3, funcs);
    const exports: number[] = [];
    uleb(exports, this.#exports.length);
    for (const e of this.#exports) {
      name(exports, e.name);
      exports.push(0x00);
      uleb(exports, e.func);
    }
    section(7, exports);
    const code: number[] = [];
    uleb(code, this.#funcs.length);
    for (const f of this.#funcs) {
      const body = f.body.encode();
      uleb(code, body.length);
      for (const b of body) code.push(b);
    }
    section(10, code);
    return new Uint8Array(out);
  }
}
