/** Misuse fails early with a message that names the op and the shapes or dtypes involved. */
import { deepEqual, equal, throws } from "node:assert/strict";
import { arange, concat, ones, rand, stack, tensor, zeros } from "../../mod.ts";
import type { Shape, Tensor } from "../../mod.ts";
import { crossEntropy } from "../../lib/nn/mod.ts";
import { boundsOf } from "../../lib/tensor/tensor.ts";
import { TestRng } from "../_helpers.ts";

const wide = <D extends "f32" | "i32">(t: Tensor<Shape, D>) => t as Tensor<number[], D>;

Deno.test("shape errors name the op and the shapes", () => {
  throws(
    () => wide(ones([2, 3])).matmul(wide(ones([4, 5]))),
    /Cannot matmul shapes \[2, 3\] and \[4, 5\]: inner dimensions 3 and 4 differ/,
  );
  throws(() => wide(ones([2, 3])).add(wide(ones([4]))), /Cannot add shapes \[2, 3\] and \[4\]/);
  throws(() => wide(ones([2, 3])).mul(wide(ones([3, 2]))), /Cannot mul shapes \[2, 3\] and \[3, 2\]/);
  throws(
    () => wide(ones([2, 3])).reshape([4, 2]),
    /Cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\] \(8 elements\)/,
  );
  throws(() => wide(ones([2, 3])).sum(2), /sum: axis 2 is out of range for shape \[2, 3\]/);
  throws(() => wide(ones([2, 3])).permute([0, 0]), /not a permutation of the axes of shape \[2, 3\]/);
  throws(() => wide(ones([2, 3])).slice(5), /index 5 is out of range for axis 0 of shape \[2, 3\]/);
  throws(
    () => wide(ones([2, 3])).expand([4, 3]),
    /Cannot expand shapes \[2, 3\] and \[4, 3\]|Cannot expand shape/,
  );
  throws(
    () => concat([ones([2, 3]), ones([3, 3])], 1),
    /Cannot concat \[2, 3\] f32, \[3, 3\] f32 along axis 1/,
  );
  // stack names itself, the axis and the shapes and dtypes (an axis past the new one was unsqueeze's error, a
  // dtype mismatch concat's).
  throws(
    () => stack([ones([2, 3]), ones([2, 3])], -4),
    /stack: axis -4 is out of range for tensors of shape \[2, 3\]/,
  );
  throws(() => stack([ones([2, 3]), ones([2, 3])], 3), /stack: axis 3 is out of range/);
  throws(
    () => stack([ones([2]), wide(ones([2], { dtype: "i32" })) as unknown as Tensor<Shape, "f32">]),
    /Cannot stack \[2\] f32, \[2\] i32/,
  );
  throws(() => wide(ones([0, 3])).max(0), /cannot reduce over an empty axis of shape \[0, 3\]/);
  throws(() => tensor([[1, 2], [3]]), /ragged nested array/);
  throws(
    () => tensor(new Float32Array(5), { shape: [2, 3] }),
    /5 values do not fill shape \[2, 3\] \(6 elements\)/,
  );
  throws(() => zeros([2, -1]), /invalid shape \[2, -1\]/);
  throws(() => zeros([NaN, 3]), /invalid shape \[NaN, 3\]/); // not JSON's [null,3]
  throws(() => arange(0, 5, 0), /step must be finite and non-zero/);
  // Options given where a number goes (arange(n, { device })) are named, not read as a stop of "[object Object]".
  const n = new TestRng(52).int(2, 100);
  throws(
    () => arange(n, { dtype: "i32" } as unknown as number),
    /arange: stop must be a number, got an object; options go after step/,
  );
  throws(
    () => arange(0, n, { dtype: "i32" } as unknown as number),
    /arange: step must be a number, got an object/,
  );
});

Deno.test("dtype errors name the op and the dtypes", () => {
  const i = ones([3], { dtype: "i32" }) as unknown as Tensor<Shape, "f32">;
  throws(() => ones([3]).add(i), /Cannot add tensors of dtypes f32 and i32; convert one with \.cast\(\)/);
  throws(() => ones([3], { dtype: "i32" }).exp(), /Cannot exp a tensor of dtype i32; it needs f32 or f16/);
  throws(() => ones([3], { dtype: "i32" }).softmax(), /Cannot softmax a tensor of dtype i32/);
  throws(() => ones([3]).where(1, 2), /where: condition must be bool, got f32/);
  throws(
    () => ones([3]).gather(ones([2]) as unknown as Tensor<Shape, "i32">),
    /gather: indices must be an i32 or u32 tensor/,
  );
  throws(() => ones([3]).cast("f64" as "f32"), /unknown dtype "f64"/);
  throws(() => rand([2], { seed: 1.5 }), /rand: option "seed" must be an integer, got 1\.5/);
});

Deno.test("a result of more than 2^31 - 1 elements is refused when built, not computed with wrapped indices", async () => {
  // Built lazily and sliced before it is computed, a [65536, 65537] view needs no memory, but its element indices
  // (up to 2^32 + 65535) wrapped at 2^32: the last row of its [65537, 65536] reshape read row 0.
  const rows = wide(arange(0, 65536, 1, { dtype: "i32" }).reshape([65536, 1]));
  throws(
    () => rows.add(wide(zeros([1, 65537], { dtype: "i32" }))),
    /Cannot add shapes \[65536, 1\] and \[1, 65537\]: the result \[65536, 65537\] has 4295032832 elements, more than a tensor holds \(2\^31 - 1\)/,
  );
  throws(
    () => wide(ones([50000, 4])).matmul(wide(ones([4, 50000]))),
    /Cannot matmul shapes \[50000, 4\] and \[4, 50000\]: the result \[50000, 50000\] has 2500000000 elements/,
  );
  throws(
    () => wide(ones([3, 1, 1, 1])).matmul(wide(ones([1, 2 ** 30, 1, 1]))),
    /Cannot matmul shapes \[3, 1, 1, 1\] and \[1, 1073741824, 1, 1\]: the result \[3, 1073741824, 1, 1\] has/,
  );
  throws(
    () => wide(ones([46340, 46341])).pad([[0, 46340], [0, 0]]),
    /Pad of \[46340, 46341\]: the result \[92680, 46341\] has 4294883880 elements, more than a tensor holds/,
  );
  throws(
    () => wide(ones([2, 1])).add(wide(ones([1, 2 ** 30]))),
    /the result \[2, 1073741824\] has 2147483648/,
  );
  equal(wide(ones([1, 2 ** 31 - 1])).add(wide(ones([1, 1]))).size, 2 ** 31 - 1);
  // Just below the limit, a [46340, 46341] view reshaped to [46341, 46340] reads its last row right on every device.
  const [r, c] = [46340, 46341];
  const rng = new TestRng(71);
  const from = rng.int(0, r - 8);
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const rowOf = arange(0, r, 1, { dtype: "i32", device }).reshape([r, 1]).add(
      zeros([1, c], { dtype: "i32", device }),
    );
    const colOf = arange(0, c, 1, { dtype: "i32", device }).reshape([1, c]).add(
      zeros([r, 1], { dtype: "i32", device }),
    );
    const last = (t: Tensor<Shape, "i32">) => wide(t).reshape([c, r]).slice(c - 1, [from, from + 8]).data();
    const flat = Array.from({ length: 8 }, (_, j) => (c - 1) * r + from + j);
    deepEqual(Array.from(await last(rowOf)), flat.map((f) => Math.floor(f / c)), device);
    deepEqual(Array.from(await last(colOf)), flat.map((f) => f % c), device);
  }
});

Deno.test("tensors on different devices cannot be combined", () => {
  const a = ones([2], { device: "cpu" });
  const b = tensor([1, 2], { device: "webgpu" });
  throws(() => a.add(b), /Cannot combine tensors on devices cpu and webgpu/);
  // A loss names itself and what is where, not the op deep inside it that first meets the two devices.
  const logits = ones([3, 4], { device: "cpu" });
  const targets = tensor([0, 1, 2], { dtype: "i32", device: "wasm" });
  throws(() => crossEntropy(logits, targets), /crossEntropy: targets are on wasm and logits on cpu/);
  const weights = ones([3], { device: "wasm" });
  const here = tensor([0, 1, 2], { dtype: "i32", device: "cpu" });
  throws(
    () => crossEntropy(logits, here, { weights }),
    /crossEntropy: weights are on wasm and logits on cpu/,
  );
});

Deno.test("using a disposed tensor throws instead of reading freed memory", async () => {
  const t = tensor([1, 2, 3]);
  await t.realize();
  const y = t.mul(2);
  t.dispose();
  let msg = "";
  try {
    await y.data();
  } catch (e) {
    msg = (e as Error).message;
  }
  if (!/used after dispose/.test(msg)) {
    throw new Error(`expected a dispose error, got ${JSON.stringify(msg)}`);
  }
});

Deno.test("indices and targets past their axis are errors that name the value, where they are still on the host", () => {
  const table = tensor(Float32Array.from({ length: 10 }, (_, i) => i), { shape: [5, 2] });
  throws(
    () => table.gather(tensor([1, 7, 0], { dtype: "i32" }), 0),
    /gather: index 7 \(element 1 of \[3\]\) is outside axis 0 of \[5, 2\] \(0\.\.4\)/,
  );
  throws(() => table.gather(tensor([-1], { dtype: "i32" }), 0), /index -1 .* outside axis 0/);
  // The range is recorded for a replayed step once, however often the same indices are gathered with.
  const ids = tensor([1, 0], { dtype: "i32" });
  for (let i = 0; i < 3; i++) table.gather(ids, 0);
  equal(boundsOf(ids.node.storage!).length, 1);
  throws(
    () => table.gather(tensor([0, 2], { dtype: "i32" }), 1),
    /index 2 .* outside axis 1 of \[5, 2\] \(0\.\.1\)/,
  );
  const logits = tensor(Float32Array.from({ length: 12 }, (_, i) => Math.sin(i)), {
    shape: [3, 4],
  }) as Tensor<
    Shape,
    "f32"
  >;
  throws(
    () => crossEntropy(logits, tensor([0, 4, 1], { dtype: "i32" })),
    /crossEntropy: target 4 \(element 1 of \[3\]\) is neither one of the 4 classes \(0\.\.3\) nor the ignore index -100/,
  );
  // The ignore index is a valid target; so is any other ignore index the caller names.
  crossEntropy(logits, tensor([0, -100, 3], { dtype: "i32" }));
  crossEntropy(logits, tensor([0, 7, 3], { dtype: "i32" }), { ignoreIndex: 7 });
});
