/** Misuse fails early with a message that names the op and the shapes or dtypes involved. */
import { equal, throws } from "node:assert/strict";
import { arange, concat, ones, rand, stack, tensor, zeros } from "../../mod.ts";
import type { Shape, Tensor } from "../../mod.ts";
import { crossEntropy } from "../../lib/nn/mod.ts";
import { boundsOf } from "../../lib/tensor/tensor.ts";

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

Deno.test("tensors on different devices cannot be combined", () => {
  const a = ones([2], { device: "cpu" });
  const b = tensor([1, 2], { device: "webgpu" });
  throws(() => a.add(b), /Cannot combine tensors on devices cpu and webgpu/);
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
