/**
 * tessera next to the JavaScript tensor libraries a user would otherwise pick, in one process, in two groups of
 * rows: on the same WebGPU adapter (tessera `webgpu`, TensorFlow.js with its WebGPU backend, jax-js
 * (`@jax-js/jax`, WebGPU device) and webgpu-torch), and on the CPU through WebAssembly (tessera `wasm`, jax-js's
 * `wasm` backend and TensorFlow.js's wasm backend; each uses its own SIMD and threads as it configures them).
 * Workloads (the CPU group runs the first three):
 *
 * - fp32 matmul `n×n · n×n` at n = 256, 512, 1024 (2048 with `--big`), each library's result checked against
 *   float64 host dot products on sampled entries before it is timed;
 * - one MLP training step 512→512→512 (relu, biases), batch 256, MSE loss: forward + backward + SGD;
 * - one LoRA training step of a Llama-style transformer block (RMSNorm, RoPE, causal attention, SwiGLU) with
 *   rank-8 adapters on q, k, v, o, only A and B trained, SGD. tessera uses `TransformerBlock` + `attachLora`;
 *   the peers a hand-written equivalent in their own idiom (tfjs: variables + `tf.train.sgd().minimize`;
 *   jax-js: `jit(valueAndGrad)` with the SGD update inside the jitted step);
 * - thin SVD of a 256×256 matrix where a peer has one (tessera: `lib/linalg` svd; jax-js: `np.linalg.svd`).
 *
 * Timing follows bench/_timing.ts: warm-up (compiles the pipelines), calibration of iterations per repetition,
 * repetitions interleaved across the libraries of a row (a slow spell of the shared host hits all alike), median
 * time per iteration. Each repetition ends with the library's own synchronisation:
 * tessera its device's `sync()`; TF.js (WebGPU) submits its pending command encoder (`backend.submitQueue()`)
 * and awaits `queue.onSubmittedWorkDone()` on its device (its wasm backend computes eagerly); jax-js is lazy, so
 * `jax.blockUntilReady` on the repetition's outputs. A failing peer is reported as "not available: <why>", never
 * given a number.
 *
 * Run: `deno run -A bench/peers.ts [--quick] [--big] [--json] [--reps N] [--target-ms N]
 * [--rows matmul,mlp,lora,svd] [--devices webgpu,wasm]`
 *
 * @module
 */
// Peers are bench-only dependencies: imported here and nowhere else (the library never depends on them).
// deno-lint-ignore no-import-prefix
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
// deno-lint-ignore no-import-prefix
import "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";
// deno-lint-ignore no-import-prefix
import "npm:@tensorflow/tfjs-backend-wasm@4.22.0";
// deno-lint-ignore no-import-prefix
import * as jax from "npm:@jax-js/jax@0.1.25";
import { parseFlags, refuse } from "./_args.ts";
import { realize, type Shape, type Tensor, tensor } from "../mod.ts";
import { deviceLine, getBackend, getWebGPU } from "../lib/runtime/realize.ts";
import { functionalCall, Mlp, type ParamDict, SGD, TransformerBlock } from "../lib/nn/mod.ts";
import { valueAndGrad } from "../lib/autodiff/mod.ts";
import { attachLora } from "../lib/init/mod.ts";
import { LORA_TRAINABLE } from "../lib/lora/mod.ts";
import { svd } from "../lib/linalg/mod.ts";
import { Rng } from "../lib/data/rng.ts";
import { adapterLine, fmt, median, table, watchHostLoad } from "./_timing.ts";

type F32 = Tensor<Shape, "f32">;
type JArray = jax.Array;
/** Host data (a typed array over a plain ArrayBuffer, as jax-js's `np.array` wants). */
type Host = Float32Array<ArrayBuffer>;
const np = jax.numpy;

/** One prepared workload of one library: an iteration body, the library's queue drain, and cleanup. */
interface Prepared {
  run(): Promise<void> | void;
  /** Re-checks the result after timing (a silently dropped submission would show here); throws if wrong. */
  recheck?(): Promise<void>;
  sync(): Promise<void>;
  dispose(): void;
}

/** A library in the comparison. */
interface Lib {
  readonly name: string;
  /** Initialises the library on its device; returns a description of that device. */
  init(): Promise<string>;
  matmul?(a: Host, b: Host, n: number): Promise<{ prep: Prepared; product(): Promise<Host> }>;
  mlp?(): Promise<Prepared>;
  lora?(): Promise<Prepared>;
  svd?(a: Host, n: number): Promise<{ prep: Prepared; s: Host }>;
}

// ---------------------------------------------------------------------------------------------------------
// Workload sizes and host data

const MLP = { batch: 256, sizes: [512, 512, 512], lr: 1e-3 } as const;
const BLOCK = { batch: 4, seq: 64, dim: 128, heads: 4, hidden: 352, rank: 8, alpha: 16, lr: 1e-3 } as const;
const SVD_SIZES = [64, 256];

/** Seeded standard-normal host data (the same numbers go to every library). */
function hostNormal(n: number, seed: number, scale = 1): Host {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

/** Causal mask as an additive bias `[seq, seq]`: 0 where key ≤ query, -1e9 above the diagonal. */
function causalBias(t: number): Host {
  const m = new Float32Array(t * t);
  for (let i = 0; i < t; i++) for (let j = i + 1; j < t; j++) m[i * t + j] = -1e9;
  return m;
}

/** RoPE tables `[seq, headDim/2]` (theta 1e4, interleaved pairs as llama2.c). */
function ropeHost(t: number, d: number): { cos: Host; sin: Host } {
  const half = d / 2;
  const cos = new Float32Array(t * half);
  const sin = new Float32Array(t * half);
  for (let p = 0; p < t; p++) {
    for (let i = 0; i < half; i++) {
      const ang = p / 10000 ** ((2 * i) / d);
      cos[p * half + i] = Math.cos(ang);
      sin[p * half + i] = Math.sin(ang);
    }
  }
  return { cos, sin };
}

/** Frozen and trainable host weights of the hand-written LoRA block (peer layout: `[in, out]`). */
function blockHostWeights() {
  const { dim, hidden, rank } = BLOCK;
  const w = (i: number, o: number, seed: number) => hostNormal(i * o, seed, 1 / Math.sqrt(i));
  return {
    frozen: {
      wq: w(dim, dim, 11),
      wk: w(dim, dim, 12),
      wv: w(dim, dim, 13),
      wo: w(dim, dim, 14),
      w1: w(dim, hidden, 15),
      w3: w(dim, hidden, 16),
      w2: w(hidden, dim, 17),
      n1: new Float32Array(dim).fill(1),
      n2: new Float32Array(dim).fill(1),
    },
    // A random (Kaiming-like), B zero: the standard LoRA start; the step cost does not depend on the values.
    train: {
      aq: w(dim, rank, 21),
      ak: w(dim, rank, 22),
      av: w(dim, rank, 23),
      ao: w(dim, rank, 24),
      bq: new Float32Array(rank * dim),
      bk: new Float32Array(rank * dim),
      bv: new Float32Array(rank * dim),
      bo: new Float32Array(rank * dim),
    },
  };
}

const FROZEN_SHAPES: Record<string, number[]> = {
  wq: [BLOCK.dim, BLOCK.dim],
  wk: [BLOCK.dim, BLOCK.dim],
  wv: [BLOCK.dim, BLOCK.dim],
  wo: [BLOCK.dim, BLOCK.dim],
  w1: [BLOCK.dim, BLOCK.hidden],
  w3: [BLOCK.dim, BLOCK.hidden],
  w2: [BLOCK.hidden, BLOCK.dim],
  n1: [BLOCK.dim],
  n2: [BLOCK.dim],
};
const trainShape = (k: string) => (k.startsWith("a") ? [BLOCK.dim, BLOCK.rank] : [BLOCK.rank, BLOCK.dim]);

// ---------------------------------------------------------------------------------------------------------
// tessera

/** Waits for every queued kernel of a tessera device. */
async function tesseraSync(device: "webgpu" | "wasm"): Promise<() => Promise<void>> {
  const be = (await getBackend(device)) as unknown as { sync(): Promise<void> };
  return () => be.sync();
}

/** tessera on one device (the GPU group uses `webgpu`, the CPU group `wasm`). */
function tesseraOn(device: "webgpu" | "wasm"): Lib {
  return {
    name: "tessera",
    async init() {
      if (device === "webgpu") return (await getWebGPU()).description;
      return await deviceLine(device);
    },
    async matmul(a, b, n) {
      const gpu = { sync: await tesseraSync(device) };
      const ta = tensor(a, { shape: [n, n], device }) as F32;
      const tb = tensor(b, { shape: [n, n], device }) as F32;
      await realize(ta, tb);
      return {
        product: async () => (await ta.matmul(tb).data()) as Host,
        prep: {
          async run() {
            const c = ta.matmul(tb);
            await realize(c);
            c.dispose();
          },
          sync: () => gpu.sync(),
          dispose() {
            ta.dispose();
            tb.dispose();
          },
        },
      };
    },
    async mlp() {
      const gpu = { sync: await tesseraSync(device) };
      const model = new Mlp(MLP.sizes, { seed: 1, device });
      const x = tensor(hostNormal(MLP.batch * MLP.sizes[0], 2), {
        shape: [MLP.batch, MLP.sizes[0]],
        device,
      }) as F32;
      const y = tensor(hostNormal(MLP.batch * MLP.sizes[2], 3), {
        shape: [MLP.batch, MLP.sizes[2]],
        device,
      }) as F32;
      await realize(x, y);
      const opt = new SGD(model, { lr: MLP.lr });
      const lossOf = (p: ParamDict) =>
        functionalCall(model, p, () => model.forward(x).sub(y).square().mean());
      return {
        async run() {
          const { value, grads } = valueAndGrad(lossOf)(opt.params);
          await opt.step(grads, { realize: [value] });
          value.dispose();
        },
        sync: () => gpu.sync(),
        dispose() {
          x.dispose();
          y.dispose();
        },
      };
    },
    async lora() {
      const gpu = { sync: await tesseraSync(device) };
      const { batch, seq, dim } = BLOCK;
      const block = new TransformerBlock(dim, {
        nHeads: BLOCK.heads,
        hiddenDim: BLOCK.hidden,
        seed: 1,
        device,
      });
      await attachLora(block, {
        targetModules: ["wq", "wk", "wv", "wo"],
        rank: BLOCK.rank,
        alpha: BLOCK.alpha,
        seed: 2,
      });
      const x = tensor(hostNormal(batch * seq * dim, 4), { shape: [batch, seq, dim], device }) as F32;
      const y = tensor(hostNormal(batch * seq * dim, 5), { shape: [batch, seq, dim], device }) as F32;
      await realize(x, y);
      const opt = new SGD(block, { lr: BLOCK.lr, trainable: LORA_TRAINABLE });
      const lossOf = (p: ParamDict) =>
        functionalCall(block, p, () => block.forward(x).sub(y).square().mean());
      return {
        async run() {
          const { value, grads } = valueAndGrad(lossOf)(opt.params);
          await opt.step(grads, { realize: [value] });
          value.dispose();
        },
        sync: () => gpu.sync(),
        dispose() {
          x.dispose();
          y.dispose();
        },
      };
    },
    async svd(a, n) {
      const gpu = { sync: await tesseraSync(device) };
      const ta = tensor(a, { shape: [n, n], device }) as unknown as Tensor<[number, number], "f32">;
      await realize(ta);
      const first = await svd(ta);
      const s = (await first.s.data()) as Host;
      first.u.dispose();
      first.vh.dispose();
      return {
        s,
        prep: {
          async run() {
            const r = await svd(ta);
            r.u.dispose();
            r.s.dispose();
            r.vh.dispose();
          },
          sync: () => gpu.sync(),
          dispose: () => ta.dispose(),
        },
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// TensorFlow.js (WebGPU and wasm backends)

/** The parts of tfjs-backend-webgpu's backend object used to drain its queue (not in tfjs-core's types). */
interface TfWebGpuBackend {
  commandEncoder: unknown;
  endComputePassEncoder(): void;
  submitQueue(): void;
  queue: GPUQueue;
}

async function tfSync(): Promise<void> {
  const be = tf.backend() as unknown as TfWebGpuBackend;
  // The open compute pass must be ended first: finishing an encoder with an open pass is a validation error,
  // which Deno drops silently, and the batch would never run.
  if (be.commandEncoder != null) {
    be.endComputePassEncoder();
    be.submitQueue();
  }
  await be.queue.onSubmittedWorkDone();
}

/** Makes `backend` TF.js's current backend (every op runs on the current one); throws when it cannot. */
async function tfUse(backend: "webgpu" | "wasm"): Promise<void> {
  if (tf.getBackend() === backend) return;
  if (!(await tf.setBackend(backend))) throw new Error(`tf.setBackend('${backend}') returned false`);
  await tf.ready();
}

/** TensorFlow.js on one backend; the tensors of a row's workload are created with that backend current. */
function tfjsOn(backend: "webgpu" | "wasm"): Lib {
  const sync = backend === "webgpu" ? tfSync : () => Promise.resolve();
  return {
    name: `tfjs-${backend}`,
    async init() {
      await tfUse(backend);
      if (backend === "wasm") {
        const simd = await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT");
        const threads = await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT");
        return `wasm backend (SIMD ${simd ? "on" : "off"}, threads ${threads ? "on" : "off"})`;
      }
      const be = tf.backend() as unknown as { adapterInfo?: { vendor?: string }; device?: GPUDevice };
      const info = (be.device as unknown as { adapterInfo?: GPUAdapterInfo })?.adapterInfo;
      return info?.description || `vendor ${be.adapterInfo?.vendor ?? "?"}`;
    },
    async matmul(a, b, n) {
      await tfUse(backend);
      const ta = tf.tensor2d(a, [n, n]);
      const tb = tf.tensor2d(b, [n, n]);
      return {
        product: async () => {
          const c = tf.matMul(ta, tb);
          const d = (await c.data()) as Host;
          c.dispose();
          return d;
        },
        prep: {
          run() {
            tf.matMul(ta, tb).dispose();
          },
          sync,
          dispose() {
            ta.dispose();
            tb.dispose();
          },
        },
      };
    },
    async mlp() {
      await tfUse(backend);
      const [i, h, o] = MLP.sizes;
      const v = (shape: number[], seed: number, scale: number) =>
        tf.variable(tf.tensor(hostNormal(shape.reduce((p, q) => p * q), seed, scale), shape));
      const w1 = v([i, h], 31, 1 / Math.sqrt(i));
      const b1 = v([h], 32, 0.01);
      const w2 = v([h, o], 33, 1 / Math.sqrt(h));
      const b2 = v([o], 34, 0.01);
      const x = tf.tensor2d(hostNormal(MLP.batch * i, 2), [MLP.batch, i]);
      const y = tf.tensor2d(hostNormal(MLP.batch * o, 3), [MLP.batch, o]);
      const opt = tf.train.sgd(MLP.lr);
      const loss = () => tf.relu(x.matMul(w1).add(b1)).matMul(w2).add(b2).sub(y).square().mean() as tf.Scalar;
      return {
        run() {
          opt.minimize(loss, false, [w1, b1, w2, b2]);
        },
        sync,
        dispose() {
          for (const t of [w1, b1, w2, b2, x, y]) t.dispose();
          opt.dispose();
        },
      };
    },
    async lora() {
      await tfUse(backend);
      const { batch: B, seq: T, dim: D, heads: H, rank } = BLOCK;
      const hd = D / H;
      const s = BLOCK.alpha / rank;
      const host = blockHostWeights();
      const fr: Record<string, tf.Tensor> = {};
      for (const [k, v] of Object.entries(host.frozen)) fr[k] = tf.tensor(v, FROZEN_SHAPES[k]);
      const tr: Record<string, tf.Variable> = {};
      for (const [k, v] of Object.entries(host.train)) tr[k] = tf.variable(tf.tensor(v, trainShape(k)));
      const rope = ropeHost(T, hd);
      const cos = tf.tensor(rope.cos, [T, 1, hd / 2]);
      const sin = tf.tensor(rope.sin, [T, 1, hd / 2]);
      const mask = tf.tensor(causalBias(T), [T, T]);
      const x = tf.tensor2d(hostNormal(B * T * D, 4), [B * T, D]);
      const y = tf.tensor2d(hostNormal(B * T * D, 5), [B * T, D]);
      const rms = (v: tf.Tensor, w: tf.Tensor) => v.mul(tf.rsqrt(v.square().mean(-1, true).add(1e-5))).mul(w);
      const lora = (v: tf.Tensor, w: string) =>
        v.matMul(fr[`w${w}`]).add(v.matMul(tr[`a${w}`]).matMul(tr[`b${w}`]).mul(s));
      const applyRope = (v: tf.Tensor) => {
        const p = v.reshape([B, T, H, hd / 2, 2]);
        const x0 = p.slice([0, 0, 0, 0, 0], [B, T, H, hd / 2, 1]).reshape([B, T, H, hd / 2]);
        const x1 = p.slice([0, 0, 0, 0, 1], [B, T, H, hd / 2, 1]).reshape([B, T, H, hd / 2]);
        return tf.stack([x0.mul(cos).sub(x1.mul(sin)), x0.mul(sin).add(x1.mul(cos))], -1).reshape([
          B,
          T,
          H,
          hd,
        ]);
      };
      const loss = () => {
        const hn = rms(x, fr.n1);
        const q = applyRope(lora(hn, "q").reshape([B, T, H, hd])).transpose([0, 2, 1, 3]);
        const k = applyRope(lora(hn, "k").reshape([B, T, H, hd])).transpose([0, 2, 1, 3]);
        const v = lora(hn, "v").reshape([B, T, H, hd]).transpose([0, 2, 1, 3]);
        const att = tf.softmax(tf.matMul(q, k, false, true).mul(1 / Math.sqrt(hd)).add(mask));
        const o = tf.matMul(att, v).transpose([0, 2, 1, 3]).reshape([B * T, D]);
        const h1 = x.add(lora(o, "o"));
        const f = rms(h1, fr.n2);
        const ffn = tf.mul(tf.sigmoid(f.matMul(fr.w1)).mul(f.matMul(fr.w1)), f.matMul(fr.w3)).matMul(fr.w2);
        return h1.add(ffn).sub(y).square().mean() as tf.Scalar;
      };
      const opt = tf.train.sgd(BLOCK.lr);
      const vars = Object.values(tr);
      return {
        run() {
          opt.minimize(loss, false, vars);
        },
        sync,
        dispose() {
          for (const t of [...Object.values(fr), ...vars, cos, sin, mask, x, y]) t.dispose();
          opt.dispose();
        },
      };
    },
    // TF.js has no SVD (tf.linalg offers qr, gramSchmidt and bandPart only).
  };
}

// ---------------------------------------------------------------------------------------------------------
// jax-js (WebGPU or wasm device). Ownership: every function consumes its array arguments; `.ref` keeps one alive.
// Arrays go to jax-js's default device, set when a workload is prepared.

/** A jax-js queue drain: submits and awaits the outputs gathered since the last drain, then frees them. */
function jaxPending() {
  let pending: JArray[] = [];
  return {
    add(a: JArray) {
      pending.push(a);
    },
    async sync() {
      const done = pending;
      pending = [];
      await jax.blockUntilReady(done);
      for (const a of done) a.dispose();
    },
  };
}

function jaxOn(device: "webgpu" | "wasm"): Lib {
  return {
    name: `jax-js-${device}`,
    async init() {
      const devices = await jax.init();
      if (!devices.includes(device)) throw new Error(`jax.init() found no ${device} device (got ${devices})`);
      jax.defaultDevice(device);
      if (device === "wasm") return "wasm device";
      const info = (jax.getWebGPUDevice() as unknown as { adapterInfo?: GPUAdapterInfo }).adapterInfo;
      return info?.description ?? "unknown adapter";
    },
    async matmul(a, b, n) {
      jax.defaultDevice(device);
      const ja = np.array(a).reshape([n, n]);
      const jb = np.array(b).reshape([n, n]);
      await jax.blockUntilReady([ja, jb]);
      const q = jaxPending();
      return {
        product: async () => (await np.matmul(ja.ref, jb.ref).data()) as Host,
        prep: {
          run() {
            q.add(np.matmul(ja.ref, jb.ref));
          },
          sync: () => q.sync(),
          dispose() {
            ja.dispose();
            jb.dispose();
          },
        },
      };
    },
    async mlp() {
      jax.defaultDevice(device);
      const [i, h, o] = MLP.sizes;
      const arr = (shape: number[], seed: number, scale: number) =>
        np.array(hostNormal(shape.reduce((p, q) => p * q), seed, scale)).reshape(shape);
      type P = { w1: JArray; b1: JArray; w2: JArray; b2: JArray };
      let params: P = {
        w1: arr([i, h], 31, 1 / Math.sqrt(i)),
        b1: arr([h], 32, 0.01),
        w2: arr([h, o], 33, 1 / Math.sqrt(h)),
        b2: arr([o], 34, 0.01),
      };
      const x = arr([MLP.batch, i], 2, 1);
      const y = arr([MLP.batch, o], 3, 1);
      const lossFn = (p: P, xb: JArray, yb: JArray) => {
        const hid = jax.nn.relu(np.matmul(xb, p.w1).add(p.b1));
        return np.square(np.matmul(hid, p.w2).add(p.b2).sub(yb)).mean();
      };
      const step = jax.jit((p: P, xb: JArray, yb: JArray) => {
        const [loss, g] = jax.valueAndGrad(lossFn)(jax.tree.ref(p), xb, yb);
        const next = jax.tree.map((w: JArray, gw: JArray) => w.sub(gw.mul(MLP.lr)), p, g as P) as P;
        return [loss, next] as [JArray, P];
      });
      await jax.blockUntilReady([params, x, y]);
      return {
        run() {
          const [loss, next] = step(params, x.ref, y.ref);
          loss.dispose();
          params = next;
        },
        async sync() {
          await jax.blockUntilReady(params);
        },
        dispose() {
          jax.tree.dispose(params);
          x.dispose();
          y.dispose();
          step.dispose();
        },
      };
    },
    async lora() {
      jax.defaultDevice(device);
      const { batch: B, seq: T, dim: D, heads: H, rank } = BLOCK;
      const hd = D / H;
      const s = BLOCK.alpha / rank;
      const host = blockHostWeights();
      type Tr = Record<string, JArray>;
      const frozen: Tr = {};
      for (const [k, v] of Object.entries(host.frozen)) frozen[k] = np.array(v).reshape(FROZEN_SHAPES[k]);
      let train: Tr = {};
      for (const [k, v] of Object.entries(host.train)) train[k] = np.array(v).reshape(trainShape(k));
      const rope = ropeHost(T, hd);
      frozen.cos = np.array(rope.cos).reshape([T, 1, hd / 2]);
      frozen.sin = np.array(rope.sin).reshape([T, 1, hd / 2]);
      frozen.mask = np.array(causalBias(T)).reshape([T, T]);
      const x = np.array(hostNormal(B * T * D, 4)).reshape([B * T, D]);
      const y = np.array(hostNormal(B * T * D, 5)).reshape([B * T, D]);

      const rms = (v: JArray, w: JArray) => {
        const r = np.reciprocal(np.sqrt(np.mean(np.square(v.ref), -1, { keepdims: true }).add(1e-5)));
        return v.mul(r).mul(w);
      };
      const lora = (v: JArray, w: JArray, a: JArray, b: JArray) =>
        np.matmul(v.ref, w).add(np.matmul(np.matmul(v, a), b).mul(s));
      const applyRope = (v: JArray, cos: JArray, sin: JArray) => {
        const p = v.reshape([B, T, H, hd / 2, 2]);
        const x0 = p.ref.slice([], [], [], [], 0);
        const x1 = p.slice([], [], [], [], 1);
        const r0 = x0.ref.mul(cos.ref).sub(x1.ref.mul(sin.ref));
        const r1 = x0.mul(sin).add(x1.mul(cos));
        return np.stack([r0, r1], -1).reshape([B, T, H, hd]);
      };
      const lossFn = (t: Tr, f: Tr, xb: JArray, yb: JArray) => {
        const hn = rms(xb.ref, f.n1);
        const q = applyRope(lora(hn.ref, f.wq, t.aq, t.bq).reshape([B, T, H, hd]), f.cos.ref, f.sin.ref)
          .transpose([0, 2, 1, 3]);
        const k = applyRope(lora(hn.ref, f.wk, t.ak, t.bk).reshape([B, T, H, hd]), f.cos, f.sin)
          .transpose([0, 2, 3, 1]);
        const v = lora(hn, f.wv, t.av, t.bv).reshape([B, T, H, hd]).transpose([0, 2, 1, 3]);
        const att = jax.nn.softmax(np.matmul(q, k).mul(1 / Math.sqrt(hd)).add(f.mask), -1);
        const o = np.matmul(att, v).transpose([0, 2, 1, 3]).reshape([B * T, D]);
        const h1 = xb.add(lora(o, f.wo, t.ao, t.bo));
        const fn = rms(h1.ref, f.n2);
        const gate = jax.nn.silu(np.matmul(fn.ref, f.w1));
        const ffn = np.matmul(gate.mul(np.matmul(fn, f.w3)), f.w2);
        return np.square(h1.add(ffn).sub(yb)).mean();
      };
      const step = jax.jit((t: Tr, f: Tr, xb: JArray, yb: JArray) => {
        const [loss, g] = jax.valueAndGrad(lossFn)(jax.tree.ref(t), f, xb, yb);
        const next = jax.tree.map((w: JArray, gw: JArray) => w.sub(gw.mul(BLOCK.lr)), t, g as Tr) as Tr;
        return [loss, next] as [JArray, Tr];
      });
      await jax.blockUntilReady([frozen, train, x, y]);
      return {
        run() {
          const [loss, next] = step(train, jax.tree.ref(frozen), x.ref, y.ref);
          loss.dispose();
          train = next;
        },
        async sync() {
          await jax.blockUntilReady(train);
        },
        dispose() {
          jax.tree.dispose(train);
          jax.tree.dispose(frozen);
          x.dispose();
          y.dispose();
          step.dispose();
        },
      };
    },
    async svd(a, n) {
      jax.defaultDevice(device);
      const ja = np.array(a).reshape([n, n]);
      await jax.blockUntilReady(ja);
      const [u0, s0, vh0] = np.linalg.svd(ja.ref, { fullMatrices: false });
      u0.dispose();
      vh0.dispose();
      const s = (await s0.data()) as Host;
      const q = jaxPending();
      return {
        s,
        prep: {
          run() {
            const [u, sv, vh] = np.linalg.svd(ja.ref, { fullMatrices: false });
            q.add(u);
            q.add(sv);
            q.add(vh);
          },
          sync: () => q.sync(),
          dispose: () => ja.dispose(),
        },
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// webgpu-torch: tried on a 64×64 product; reported as not available when it fails.

const webgpuTorch: Lib = {
  name: "webgpu-torch",
  async init() {
    // deno-lint-ignore no-import-prefix
    const torch = await import("npm:webgpu-torch@0.3.5");
    const log = console.log;
    console.log = () => {}; // it prints its whole GPUDevice on init
    let ok: boolean;
    try {
      ok = await torch.initWebGPUAsync();
    } finally {
      console.log = log;
    }
    if (!ok) throw new Error("initWebGPUAsync() returned false");
    const t = torch.tensor([[1, 2], [3, 4]]);
    const c = t.mm(t);
    const got = (await c.toArrayAsync()) as number[][];
    if (got[1][1] !== 22) {
      throw new Error(`2x2 product gave ${JSON.stringify(got)}, expected [[7,10],[15,22]]`);
    }
    return "its own device";
  },
};

// ---------------------------------------------------------------------------------------------------------
// Timing: interleaved repetitions, each library drained with its own sync

interface Timed {
  ms: number;
  minMs: number;
  maxMs: number;
  iters: number;
  reps: number;
}

async function batch(p: Prepared, iters: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) await p.run();
  await p.sync();
  return performance.now() - t0;
}

/** Warm-up and calibration per library, then `reps` rounds that run one batch of every library in turn. */
async function timeRow(preps: Prepared[], reps: number, targetMs: number): Promise<Timed[]> {
  const iters: number[] = [];
  for (const p of preps) {
    await p.run();
    await p.sync();
    let n = 1;
    for (let round = 0; round < 6; round++) {
      const total = await batch(p, n);
      if (total >= targetMs / 2 || n >= 2000) {
        n = Math.max(1, Math.min(2000, Math.round((n * targetMs) / total)));
        break;
      }
      n = Math.min(2000, Math.max(n * 2, Math.ceil((n * targetMs) / Math.max(total, 1e-3))));
    }
    iters.push(n);
  }
  const per: number[][] = preps.map(() => []);
  for (let r = 0; r < reps; r++) {
    for (let i = 0; i < preps.length; i++) per[i].push((await batch(preps[i], iters[i])) / iters[i]);
  }
  return per.map((p, i) => ({
    ms: median(p),
    minMs: Math.min(...p),
    maxMs: Math.max(...p),
    iters: iters[i],
    reps,
  }));
}

/** Compares 16 sampled entries of `got` (n×n) with float64 dot products of `a·b`; returns the worst error. */
function checkMatmul(a: Host, b: Host, got: Host, n: number, lib: string): number {
  const rng = new Rng(77);
  let worst = 0;
  for (let t = 0; t < 16; t++) {
    const i = t === 0 ? n - 1 : rng.int(n);
    const j = t === 0 ? n - 1 : rng.int(n);
    let acc = 0;
    let mag = 0;
    for (let p = 0; p < n; p++) {
      acc += a[i * n + p] * b[p * n + j];
      mag += Math.abs(a[i * n + p] * b[p * n + j]);
    }
    const err = Math.abs(got[i * n + j] - acc) / mag;
    worst = Math.max(worst, err);
    if (!(err <= 1e-5)) {
      throw new Error(`${lib} matmul ${n}: entry [${i}, ${j}] is ${got[i * n + j]}, float64 gives ${acc}`);
    }
  }
  return worst;
}

/**
 * Checks singular values `s` of the n×n matrix `a` against float64 host invariants: Σ s² = ‖A‖²_F (holds after any
 * orthogonal rotations) and Σ s⁴ = ‖AᵀA‖²_F (holds only once AᵀA is diagonalised, so it catches an unconverged
 * or truncated Jacobi). Returns the larger relative error.
 */
function checkSvd(a: Host, s: Host, n: number, lib: string): number {
  let fro = 0;
  for (const v of a) fro += v * v;
  let gram = 0;
  const col = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    col.fill(0);
    for (let r = 0; r < n; r++) {
      const ari = a[r * n + i];
      for (let j = 0; j < n; j++) col[j] += ari * a[r * n + j];
    }
    for (let j = 0; j < n; j++) gram += col[j] * col[j];
  }
  let s2 = 0;
  let s4 = 0;
  for (const v of s) {
    s2 += v * v;
    s4 += v ** 4;
  }
  const e2 = Math.abs(s2 - fro) / fro;
  const e4 = Math.abs(s4 - gram) / gram;
  if (!(e2 <= 1e-4 && e4 <= 1e-3)) {
    throw new Error(
      `${lib} svd: Σs² = ${s2} vs ‖A‖²_F = ${fro} (rel. ${e2.toExponential(1)}), Σs⁴ = ${s4} vs ‖AᵀA‖²_F = ` +
        `${gram} (rel. ${e4.toExponential(1)})`,
    );
  }
  return Math.max(e2, e4);
}

// ---------------------------------------------------------------------------------------------------------
// Driver

interface Cell {
  timing?: Timed;
  error?: string;
  /** Worst relative error of the correctness check, where there is one. */
  check?: number;
}

interface RowResult {
  workload: string;
  /** FLOPs of one iteration (matmul rows only), for GFLOP/s. */
  flops?: number;
  cells: Record<string, Cell>;
  /** Best peer's median ms / tessera's median ms (> 1: tessera is faster). */
  speedVsBestPeer?: number;
  bestPeer?: string;
}

function message(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split("\n")[0].slice(0, 300);
}

type Getter = (lib: Lib) => (() => Promise<{ prep: Prepared; check?: number }>) | undefined;

async function runRow(
  workload: string,
  libs: readonly Lib[],
  get: Getter,
  opts: { reps: number; targetMs: number; flops?: number },
): Promise<RowResult> {
  const cells: Record<string, Cell> = {};
  const ready: { lib: Lib; prep: Prepared }[] = [];
  for (const lib of libs) {
    const make = get(lib);
    if (make === undefined) {
      cells[lib.name] = { error: `not available: ${lib.name} has no such operation` };
      continue;
    }
    try {
      const { prep, check } = await make();
      ready.push({ lib, prep });
      cells[lib.name] = { check };
    } catch (e) {
      cells[lib.name] = { error: `not available: ${message(e)}` };
    }
  }
  try {
    const timings = await timeRow(ready.map((r) => r.prep), opts.reps, opts.targetMs);
    ready.forEach((r, i) => (cells[r.lib.name].timing = timings[i]));
  } catch (e) {
    // A failure while timing one library aborts the row's shared loop: time the others alone.
    for (const r of ready) {
      try {
        cells[r.lib.name].timing = (await timeRow([r.prep], opts.reps, opts.targetMs))[0];
      } catch (e2) {
        cells[r.lib.name] = { error: `not available: failed while timing: ${message(e2 ?? e)}` };
      }
    }
  } finally {
    for (const r of ready) {
      try {
        await r.prep.recheck?.();
      } catch (e) {
        cells[r.lib.name] = { error: `not available: result wrong after timing: ${message(e)}` };
      }
      try {
        r.prep.dispose();
      } catch {
        // cleanup of a peer that already failed: nothing more to report
      }
    }
  }
  const row: RowResult = { workload, flops: opts.flops, cells };
  const own = cells.tessera?.timing;
  let best: [string, number] | null = null;
  for (const [name, c] of Object.entries(cells)) {
    if (name === "tessera" || c.timing === undefined) continue;
    if (best === null || c.timing.ms < best[1]) best = [name, c.timing.ms];
  }
  if (own !== undefined && best !== null) {
    row.speedVsBestPeer = best[1] / own.ms;
    row.bestPeer = best[0];
  }
  return row;
}

function parse(argv: readonly string[]) {
  const v = parseFlags("peers", argv, {
    quick: { type: "boolean" },
    big: { type: "boolean" },
    json: { type: "boolean" },
    reps: { type: "int" },
    "target-ms": { type: "number" },
    rows: { type: "list", default: "matmul,mlp,lora,svd", choices: ["matmul", "mlp", "lora", "svd"] },
    devices: { type: "list", default: "webgpu,wasm", choices: ["webgpu", "wasm"] },
  });
  if (v.quick && v.big) {
    refuse("peers", "--big has no effect with --quick (n = 256, 512 only)");
  }
  return {
    ...v,
    reps: v.reps ?? (v.quick ? 3 : 5),
    targetMs: v["target-ms"] ?? (v.quick ? 150 : 300),
    rows: new Set(v.rows),
    devices: new Set(v.devices),
  };
}

/** The libraries of one device group, in column order. */
interface Group {
  readonly device: "webgpu" | "wasm";
  readonly title: string;
  readonly libs: readonly Lib[];
}

const GROUPS: readonly Group[] = [
  {
    device: "webgpu",
    title: "GPU: the WebGPU adapter",
    libs: [tesseraOn("webgpu"), tfjsOn("webgpu"), jaxOn("webgpu"), webgpuTorch],
  },
  { device: "wasm", title: "CPU: WebAssembly", libs: [tesseraOn("wasm"), jaxOn("wasm"), tfjsOn("wasm")] },
];

/** The rows of one group (the CPU group skips SVD: its peers have no wasm SVD worth timing). */
async function runGroup(
  group: Group,
  args: ReturnType<typeof parse>,
  log: (s: string) => void,
): Promise<{ rows: RowResult[]; names: string[]; peers: Record<string, string> }> {
  const libs: Lib[] = [];
  const peers: Record<string, string> = {};
  for (const lib of group.libs) {
    try {
      const adapter = await lib.init();
      peers[lib.name] = `ok: ${adapter}`;
      if (lib.matmul !== undefined || lib.mlp !== undefined) libs.push(lib);
    } catch (e) {
      peers[lib.name] = `not available: ${message(e)}`;
    }
  }
  log(`\n## ${group.title}`);
  for (const [name, st] of Object.entries(peers)) log(`- ${name}: ${st}`);
  const rows: RowResult[] = [];
  const opts = { reps: args.reps, targetMs: args.targetMs };
  if (args.rows.has("matmul")) {
    const sizes = args.quick ? [256, 512] : [256, 512, 1024, ...(args.big ? [2048] : [])];
    for (const n of sizes) {
      const a = hostNormal(n * n, 100 + n);
      const b = hostNormal(n * n, 200 + n);
      const row = await runRow(`matmul ${n}×${n}·${n}×${n}`, libs, (lib) => {
        const mm = lib.matmul;
        if (mm === undefined) return undefined;
        return async () => {
          const { prep, product } = await mm(a, b, n);
          prep.recheck = async () => void checkMatmul(a, b, await product(), n, lib.name);
          try {
            return { prep, check: checkMatmul(a, b, await product(), n, lib.name) };
          } catch (e) {
            prep.dispose();
            throw e;
          }
        };
      }, { ...opts, flops: 2 * n * n * n });
      rows.push(row);
      log(`done: ${row.workload}`);
    }
  }
  if (args.rows.has("mlp")) {
    const row = await runRow(
      `MLP step ${MLP.sizes.join("→")}, batch ${MLP.batch} (fwd+bwd+SGD)`,
      libs,
      (lib) => (lib.mlp === undefined ? undefined : async () => ({ prep: await lib.mlp!() })),
      opts,
    );
    rows.push(row);
    log(`done: ${row.workload}`);
  }
  if (args.rows.has("lora")) {
    const row = await runRow(
      `LoRA step, block dim ${BLOCK.dim}, ${BLOCK.heads} heads, ffn ${BLOCK.hidden}, ` +
        `${BLOCK.batch}×${BLOCK.seq} tokens, r=${BLOCK.rank} on q,k,v,o`,
      libs,
      (lib) => (lib.lora === undefined ? undefined : async () => ({ prep: await lib.lora!() })),
      opts,
    );
    rows.push(row);
    log(`done: ${row.workload}`);
  }
  if (args.rows.has("svd") && group.device === "webgpu") {
    for (const n of SVD_SIZES) {
      const a = hostNormal(n * n, 300 + n);
      const row = await runRow(`SVD ${n}×${n} (thin, U, S, Vᵀ)`, libs, (lib) => {
        const f = lib.svd;
        if (f === undefined) return undefined;
        return async () => {
          const { prep, s } = await f(a, n);
          try {
            return { prep, check: checkSvd(a, s, n, lib.name) };
          } catch (e) {
            prep.dispose();
            throw e;
          }
        };
      }, { ...opts, reps: Math.min(opts.reps, 3) });
      rows.push(row);
      log(`done: ${row.workload}`);
    }
  }
  return { rows, names: libs.map((l) => l.name), peers };
}

async function main(): Promise<void> {
  const args = parse(Deno.args);
  const load = watchHostLoad();
  const log = args.json ? () => {} : (s: string) => console.log(s);
  const header = await adapterLine();
  log(`# tessera vs JavaScript peers (fp32, same process)${args.quick ? " [--quick]" : ""}`);
  log(header);
  log(
    `timing: warm-up, calibrated iterations, ${args.reps} interleaved repetitions of ~${args.targetMs} ms, median`,
  );
  const results: { group: Group; rows: RowResult[]; names: string[]; peers: Record<string, string> }[] = [];
  for (const group of GROUPS) {
    if (!args.devices.has(group.device)) continue;
    results.push({ group, ...await runGroup(group, args, log) });
  }
  const note = load();
  if (args.json) {
    console.log(JSON.stringify(
      {
        adapter: header,
        reps: args.reps,
        groups: results.map((r) => ({ device: r.group.device, peers: r.peers, rows: r.rows })),
        host: note,
      },
      null,
      2,
    ));
    return;
  }
  for (const { group, rows, names } of results) {
    const reasons: string[] = [];
    const cellText = (c: Cell | undefined, flops?: number) => {
      if (c === undefined) return "";
      if (c.error !== undefined) {
        reasons.push(c.error);
        return `not available (${reasons.length})`;
      }
      const t = c.timing!;
      return flops === undefined ? fmt(t.ms, 1) : `${fmt(t.ms, 1)} (${fmt(flops / (t.ms * 1e6), 2)} GF/s)`;
    };
    const body = rows.map((r) => [
      r.workload,
      ...names.map((n) => cellText(r.cells[n], r.flops)),
      r.speedVsBestPeer === undefined ? "" : `${fmt(r.speedVsBestPeer, 2)}× vs ${r.bestPeer}`,
    ]);
    log(`\n## ${group.title}\n`);
    log(table(["workload (median ms per iteration)", ...names, "tessera speed vs best peer"], body));
    reasons.forEach((r, i) => log(`(${i + 1}) ${r}`));
    const spreads = rows.flatMap((r) =>
      Object.entries(r.cells).filter(([, c]) => c.timing).map(([n, c]) =>
        `${n} ${fmt(c.timing!.minMs, 1)}–${fmt(c.timing!.maxMs, 1)} ms (${c.timing!.iters}×${c.timing!.reps})`
      ).map((s) => `${r.workload}: ${s}`)
    );
    log("\nrepetition ranges (iterations × repetitions):\n" + spreads.map((s) => `  ${s}`).join("\n"));
  }
  log("\nspeed vs best peer = best peer's median time / tessera's median time (> 1: tessera faster).");
  if (note) log(`\n${note}`);
}

if (import.meta.main) {
  await main();
  // jax-js's wasm device keeps the process alive after its last use (@jax-js/jax 0.1.25: a script that runs one
  // matmul on it never exits), so the benchmark ends here once its report is out.
  Deno.exit(0);
}
