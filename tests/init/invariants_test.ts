/**
 * The invariant suite over every registered initialisation: shapes and dtypes, determinism under a seed, the
 * identity its kind promises (`B·A = 0`; `base + s·B·A = W`; a quantised base; an untouched base), the layer's
 * output unchanged at step 0 where promised, and a clear error for an impossible rank. It runs on the default
 * device and on wasm (the same on a machine without a hardware GPU).
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { type DeviceName, getDefaultDevice, type Shape, type Tensor, tensor } from "../../mod.ts";
import { INIT_METHODS, type LayerData, type LoraInit } from "../../lib/init/mod.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { LoraLinear } from "../../lib/lora/linear.ts";
import { assertClose, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;
const [D_OUT, D_IN, RANK] = [24, 16, 4];

function inputs(rng: TestRng, device: DeviceName) {
  const mk = (shape: number[], scale = 1) =>
    tensor(rng.normals(shape.reduce((a, b) => a * b, 1), scale), { shape, device }) as unknown as F;
  const weight = mk([D_OUT, D_IN], 0.3);
  // Activations with a decaying spectrum (data-driven methods need more than isotropic noise).
  const basis = mk([D_IN, D_IN]);
  const coeff = tensor(
    Float32Array.from({ length: 3 * 40 * D_IN }, (_, i) => rng.normal() * 0.8 ** (i % D_IN)),
    { shape: [3, 40, D_IN], device },
  ) as unknown as F;
  const data: LayerData = {
    activations: coeff.matmul(basis) as F,
    grads: mk([D_OUT, 5]).matmul(mk([5, D_IN])) as F,
    gap: mk([D_OUT]),
  };
  return { weight, data };
}

async function values(t: F | undefined): Promise<Float32Array | null> {
  return t === undefined ? null : (await t.data()) as Float32Array;
}

const DEVICES: DeviceName[] = [...new Set<DeviceName>([getDefaultDevice(), "wasm"])];

for (const method of Object.values(INIT_METHODS)) {
  for (const device of DEVICES) {
    Deno.test(`init invariants: ${method.name} (${device})`, async () => {
      const rng = new TestRng(50 + method.name.length);
      const { weight, data } = inputs(rng, device);
      const opts = { rank: RANK, alpha: 8, seed: 3, ...data };
      const r1: LoraInit = await method.init(weight, opts);
      equal(r1.rank, RANK, "rank");
      deepEqual(r1.a.shape, [RANK, D_IN], "A is [r, d_in]");
      deepEqual(r1.b.shape, [D_OUT, RANK], "B is [d_out, r]");
      equal(r1.a.dtype, "f32");
      equal(r1.b.dtype, "f32");
      equal(r1.scale, 8 / RANK, "s = alpha / r");
      // Determinism under a seed.
      const r2 = await method.init(weight, opts);
      deepEqual(await values(r2.a), await values(r1.a), "same seed, same A");
      deepEqual(await values(r2.b), await values(r1.b), "same seed, same B");
      const w = (await weight.data()) as Float32Array;
      const ba = (await r1.b.matmul(r1.a).mul(r1.scale).data()) as Float32Array;
      const wNorm = Math.sqrt(w.reduce((s, v) => s + v * v, 0));
      switch (method.kind) {
        case "zero":
          ok(r1.base === undefined, "zero-product inits leave W untouched");
          ok(ba.every((v) => v === 0), "B·A = 0");
          break;
        case "offset": {
          ok(r1.base !== undefined, "offset inits rewrite W");
          const base = (await r1.base!.data()) as Float32Array;
          // f32 rounding of W − s·B·A and of s·B·A: a few ulp of ‖W‖.
          assertClose(base.map((v, i) => v + ba[i]), w, {
            rtol: 1e-5,
            atol: 1e-5 * wNorm,
            what: "base + s·B·A = W",
          });
          ok(ba.some((v) => v !== 0), "offset inits have a non-zero B·A");
          break;
        }
        case "quantized":
          ok(r1.base !== undefined, "quantising inits replace W by its quantised version");
          break;
        case "target":
          ok(r1.base === undefined, "target inits leave W untouched");
          break;
      }
      if (method.kind === "zero" || method.kind === "offset") {
        const layer = Linear.fromWeights(weight);
        const x = tensor(rng.normals(5 * D_IN), { shape: [5, D_IN], device }) as unknown as F;
        const lora = LoraLinear.wrap(layer, r1);
        assertClose(await lora.forward(x).data(), await layer.forward(x).data(), {
          rtol: 1e-4,
          atol: 1e-4,
          what: "output unchanged at step 0",
        });
      }
      await rejects(method.init(weight, { ...opts, rank: 1000 }), /rank 1000/);
    });
  }
}
