/**
 * The WebAssembly renderer: compiles a kernel to a module whose exported `run(start, end, scratch, out, in0, ...)`
 * computes work items `start..end-1` over one shared linear memory (pointers are byte offsets). A generic kernel
 * has one item per output element (the linearized statements of its body, see `wasm_emit.ts` for the semantics);
 * a kernel with a matmul spec goes through the blocked SIMD template of `render_wasm_matmul.ts`, one item per
 * output block.
 *
 * @module
 */
import type { Kernel } from "./kexpr.ts";
import { kNodes, loopIterations } from "./kexpr.ts";
import { linearize } from "./linearize.ts";
import { KEmitter, kernelModule, type WasmKernel, type WasmRenderOptions } from "./wasm_emit.ts";
import { renderWasmMatmul } from "./render_wasm_matmul.ts";

export type { WasmKernel, WasmRenderOptions } from "./wasm_emit.ts";

/** Renders a kernel to a wasm module (a matmul spec goes through the blocked SIMD template). */
export function renderWasm(kernel: Kernel, opts: WasmRenderOptions): WasmKernel {
  if (kernel.matmul !== null) return renderWasmMatmul(kernel, kernel.matmul, opts);
  const { mb, f, help, usesMath, out, bases } = kernelModule(kernel);
  const body = kernel.body!;
  const total = kernel.outShape.reduce((a, b) => a * b, 1);
  const em = new KEmitter(f, help, kernel, bases);
  const gid = f.local("i32");
  em.vars.set("gid", gid);
  const stmts = linearize([body]);
  f.get(0).set(gid);
  f.get(0).get(1).op("i32.lt_s").op("if", "void");
  f.op("loop");
  em.stmts(stmts);
  em.storeOut(out, () => f.get(gid), body);
  f.get(gid).i32(1).op("i32.add").op("local.tee", gid).get(1).op("i32.lt_s").op("br_if", 0);
  f.op("end").op("end");
  mb.exportFunction("run", mb.addFunction(f));
  const nodes = kNodes([body]).length;
  return {
    bytes: mb.encode(),
    items: total,
    itemCost: 0.5 + 0.3 * nodes + 0.5 * loopIterations(body),
    scratchBytes: 0,
    usesMath,
  };
}
