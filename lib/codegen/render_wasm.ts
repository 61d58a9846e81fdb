/**
 * The WebAssembly renderer: compiles a kernel to a module whose exported `run(start, end, scratch, out, in0, ...)`
 * computes work items `start..end-1` over one shared linear memory (pointers are byte offsets). A generic kernel
 * has one item per output element (the linearized statements of its body, see `wasm_emit.ts` for the semantics);
 * a kernel with a matmul spec goes through the blocked SIMD template of `render_wasm_matmul.ts`, one item per
 * output block.
 *
 * @module
 */
import type { Kernel, KernelRow, KExpr } from "./kexpr.ts";
import { dependsOn, kNodes } from "./kexpr.ts";
import { loopIterations } from "./verify.ts";
import type { FnBuilder } from "./wasm_encode.ts";
import { linearize } from "./linearize.ts";
import { KEmitter, kernelModule, type WasmKernel, type WasmRenderOptions } from "./wasm_emit.ts";
import { renderWasmMatmul } from "./render_wasm_matmul.ts";
import { classifyLanes, type Lane, prefersLoopLanes, reduceAlongLoop, VEmitter } from "./wasm_vector.ts";

export type { WasmKernel, WasmRenderOptions } from "./wasm_emit.ts";

/**
 * Renders a kernel to a wasm module. A matmul spec goes through the blocked SIMD template; a kernel with a row form
 * runs one row per work item ({@link renderWasmRows}); a generic kernel runs four outputs at a time
 * (`wasm_vector.ts`) when its values allow, one work item per group of four, with the last partial group in scalar
 * code; otherwise one output per item, with reductions that read along their own loop running four iterations at a
 * time.
 */
export function renderWasm(kernel: Kernel, opts: WasmRenderOptions): WasmKernel {
  if (kernel.matmul !== null) return renderWasmMatmul(kernel, kernel.matmul, opts);
  if (kernel.row !== undefined) return renderWasmRows(kernel, kernel.row, opts);
  const { mb, f, help, usesMath, out, bases, params } = kernelModule(kernel);
  const body = kernel.body!;
  const total = kernel.outShape.reduce((a, b) => a * b, 1);
  const em = new KEmitter(f, help, kernel, bases, params);
  const stmts = linearize([body]);
  const lanes = opts.simd === false || total < 8 ? null : classifyLanes(body);
  // When a reduction takes its lanes along its loop, the outputs go one at a time.
  const along = lanesAlongLoops(
    em,
    (l) => new VEmitter(f, help, kernel, bases, em, l),
    [body],
    lanes,
    opts.simd !== false,
  );
  const perOutput = 0.5 + 0.3 * kNodes([body]).length + 0.5 * loopIterations(body);
  const loop = countedLoop(f);
  const scalarOutput = (gid: number) => {
    em.vars.set("gid", gid);
    em.stmts(stmts);
    em.storeOut(out, () => f.get(gid), body);
  };
  if (lanes === null || along.size > 0) {
    const gid = f.local("i32");
    loop(gid, () => f.get(0), () => f.get(1), () => scalarOutput(gid));
    mb.exportFunction("run", mb.addFunction(f));
    return { bytes: mb.encode(), items: total, itemCost: perOutput, scratchBytes: 0, usesMath };
  }
  // Items are groups of four outputs: full groups in SIMD code, then the tail of total % 4 outputs.
  const full = Math.floor(total / 4);
  const vem = new VEmitter(f, help, kernel, bases, em, lanes);
  const g = f.local("i32");
  const gid0 = f.local("i32");
  loop(g, () => f.get(0), () => f.get(1).i32(full).get(1).i32(full).op("i32.lt_s").op("select"), () => {
    f.get(g).i32(2).op("i32.shl").set(gid0);
    em.vars.set("gid", gid0);
    vem.stmts(stmts);
    vem.store(out, gid0, body);
  });
  if (total % 4 !== 0) {
    const gid = f.local("i32");
    f.get(1).i32(full).op("i32.gt_s").op("if", "void");
    loop(gid, () => f.i32(4 * full), () => f.i32(total), () => scalarOutput(gid));
    f.op("end");
  }
  mb.exportFunction("run", mb.addFunction(f));
  // About a third of the scalar cost per output (index arithmetic and gathers stay per lane).
  return {
    bytes: mb.encode(),
    items: Math.ceil(total / 4),
    itemCost: 1.5 * perOutput,
    scratchBytes: 0,
    usesMath,
  };
}

/**
 * Lets the reductions among `roots` that read contiguous memory along their own loop (row sums) run four iterations
 * at a time along it, where that beats the lanes `outputs` of the kernel's outputs (null: none): installs `em`'s
 * loop hook, with `vector` making the four-lane emitter of given lanes. Returns the ids of those reductions.
 */
function lanesAlongLoops(
  em: KEmitter,
  vector: (lanes: Map<number, Lane>) => VEmitter,
  roots: readonly KExpr[],
  outputs: Map<number, Lane> | null,
  simd: boolean,
): ReadonlySet<number> {
  const along = new Map<number, Map<number, Lane>>();
  if (simd) {
    for (const r of kNodes(roots)) {
      if (r.k !== "reduce" || r.op === "argmax" || r.size < 8) continue;
      const l = classifyLanes(r.body, r.loop.name);
      if (l !== null && prefersLoopLanes(r, outputs, l)) along.set(r.id, l);
    }
  }
  if (along.size > 0) {
    em.loopHook = (r, rbody) => {
      const l = along.get(r.id);
      if (l === undefined) return false;
      reduceAlongLoop(em, vector(l), r, rbody);
      return true;
    };
  }
  return new Set(along.keys());
}

/** `loop(v, from, to, body)` emits `for (v = from; v < to; v++) body` into `f`, `from` and `to` pushed by callbacks. */
function countedLoop(f: FnBuilder): (v: number, from: () => void, to: () => void, inner: () => void) => void {
  return (v, from, to, inner) => {
    from();
    f.set(v);
    f.get(v);
    to();
    f.op("i32.lt_s").op("if", "void").op("loop");
    inner();
    f.get(v).i32(1).op("i32.add").op("local.tee", v);
    to();
    f.op("i32.lt_s").op("br_if", 0).op("end").op("end");
  };
}

/**
 * Renders a kernel in row form: one work item per row of `row.length` outputs. The statements that do not depend
 * on `j` (the row's reductions, each computed once) run first, those over contiguous memory four iterations at a
 * time along their own loop; then the row's outputs, four at a time (lanes along `j`) when its values allow, the
 * last partial group in scalar code.
 */
function renderWasmRows(kernel: Kernel, row: KernelRow, opts: WasmRenderOptions): WasmKernel {
  const { mb, f, help, usesMath, out, bases, params } = kernelModule(kernel);
  const total = kernel.outShape.reduce((a, b) => a * b, 1);
  const rows = total / row.length;
  const em = new KEmitter(f, help, kernel, bases, params);
  const dep = dependsOn(row.j);
  const stmts = linearize([row.body]);
  const once = stmts.filter((s) => !dep(s.node));
  const each = stmts.filter((s) => dep(s.node));
  const along = lanesAlongLoops(
    em,
    (l) => new VEmitter(f, help, kernel, bases, em, l),
    once.map((s) => s.node),
    null,
    opts.simd !== false,
  );
  const lanes = opts.simd === false || row.length < 8 ? null : classifyLanes(row.body, row.j.name);
  const quads = lanes === null ? 0 : Math.floor(row.length / 4);
  const loop = countedLoop(f);
  const r = f.local("i32");
  const j = f.local("i32");
  const base = f.local("i32");
  em.vars.set(row.row.name, r);
  em.vars.set(row.j.name, j);
  const outIndex = () => f.get(base).get(j).op("i32.add");
  loop(r, () => f.get(0), () => f.get(1), () => {
    f.get(r).i32(row.length).op("i32.mul").set(base);
    em.stmts(once);
    if (lanes !== null && quads > 0) {
      const vem = new VEmitter(f, help, kernel, bases, em, lanes);
      const q = f.local("i32");
      loop(q, () => f.i32(0), () => f.i32(quads), () => {
        f.get(q).i32(2).op("i32.shl").set(j);
        vem.stmts(each);
        vem.storeAt(out, outIndex, row.body);
      });
    }
    if (quads * 4 < row.length) {
      loop(j, () => f.i32(quads * 4), () => f.i32(row.length), () => {
        em.stmts(each);
        em.storeOut(out, outIndex, row.body);
      });
    }
  });
  mb.exportFunction("run", mb.addFunction(f));
  // The cost model of the other generic kernels (0.5 ns per loop iteration, 0.3 per value), four-lane code at 1.5
  // times the scalar cost per four: the row's reductions once, then its outputs.
  const lanesFactor = (four: boolean) => (four ? 1.5 / 4 : 1);
  const onceCost = once.reduce(
    (a, s) =>
      a + (s.kind === "loop" ? 0.5 * loopIterations(s.node) * lanesFactor(along.has(s.node.id)) : 0.3),
    0,
  );
  const eachValues = kNodes(each.map((s) => s.node)).filter(dep).length;
  const eachLoops = each.reduce((a, s) => a + (s.kind === "loop" ? loopIterations(s.node) : 0), 0);
  const perOutput = (0.3 * eachValues + 0.5 * eachLoops) * lanesFactor(quads > 0);
  const itemCost = 0.5 + onceCost + row.length * perOutput;
  return { bytes: mb.encode(), items: rows, itemCost, scratchBytes: 0, usesMath };
}
