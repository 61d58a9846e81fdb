/**
 * Static shape checks: each `@ts-expect-error` line must fail `deno check` (an unused directive is itself an
 * error), and the lines without it must type-check with the expected result types.
 */
import { equal, throws } from "node:assert/strict";
import { ones, runKernels, type Shape, type Tensor, tensor, zeros } from "../../mod.ts";
import { withShape } from "../../lib/tensor/tensor.ts";

type Eq<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const expectType = <T extends true>(_: T) => {};

function staticChecks(): void {
  const a = zeros([2, 3]);
  const b = zeros([3, 4]);
  const c = a.matmul(b);
  expectType<Eq<typeof c, Tensor<[2, 4], "f32">>>(true);
  // @ts-expect-error inner dimensions differ
  a.matmul(zeros([4, 4]));
  const batched = zeros([5, 2, 3]).matmul(zeros([3, 7]));
  expectType<Eq<typeof batched, Tensor<[5, 2, 7], "f32">>>(true);
  const vec = zeros([3]).matmul(zeros([3, 6]));
  expectType<Eq<typeof vec, Tensor<[6], "f32">>>(true);

  const s = a.add(zeros([3]));
  expectType<Eq<typeof s, Tensor<[2, 3], "f32">>>(true);
  const s2 = zeros([4, 1, 3]).mul(zeros([5, 1]));
  expectType<Eq<typeof s2, Tensor<[4, 5, 3], "f32">>>(true);
  // @ts-expect-error 3 and 4 do not broadcast
  a.add(zeros([4]));
  // @ts-expect-error dtypes differ
  a.add(zeros([2, 3], { dtype: "i32" }));

  const r = a.reshape([3, 2]);
  expectType<Eq<typeof r, Tensor<[3, 2], "f32">>>(true);
  // @ts-expect-error 6 elements cannot become 8
  a.reshape([4, 2]);

  const red = zeros([2, 3, 4]).sum(1);
  expectType<Eq<typeof red, Tensor<[2, 4], "f32">>>(true);
  const keep = zeros([2, 3, 4]).max(-1, { keepdims: true });
  expectType<Eq<typeof keep, Tensor<[2, 3, 1], "f32">>>(true);
  const all = zeros([2, 3]).sum();
  expectType<Eq<typeof all, Tensor<[], "f32">>>(true);
  // @ts-expect-error axis 3 is out of range for rank 3
  zeros([2, 3, 4]).sum(3);
  // @ts-expect-error axis -4 is out of range for rank 3
  zeros([2, 3, 4]).mean(-4);

  const t = zeros([2, 3]).T;
  expectType<Eq<typeof t, Tensor<[3, 2], "f32">>>(true);
  const lit = tensor([[1, 2, 3], [4, 5, 6]]);
  expectType<Eq<typeof lit, Tensor<[2, 3], "f32">>>(true);

  // Runtime sizes (plain number dims) pass the static checks; the runtime twins check them.
  const n: number = 7;
  const dyn = zeros([n, 3]).matmul(zeros([3, n]));
  expectType<Eq<typeof dyn, Tensor<[number, number], "f32">>>(true);
  // Any specific tensor is a Tensor.
  const general: Tensor = ones([2, 2]);
  void general;

  // runKernels gives each output its spec's dtype; withShape's rank must be the label's.
  const outs = () => runKernels([], [{ shape: [2], dtype: "u32" }, { shape: [3], dtype: "f32" }], []);
  expectType<Eq<Awaited<ReturnType<typeof outs>>, [Tensor<Shape, "u32">, Tensor<Shape, "f32">]>>(true);
  const plain: Tensor<Shape, "f32"> = zeros([2, 3]);
  expectType<Eq<ReturnType<typeof withShape<[2, 3]>>, Tensor<[2, 3], "f32">>>(true);
  // @ts-expect-error a rank-2 label checked against rank 3
  withShape<[2, 3]>(plain, 3);
}

Deno.test("static shape checks compile as intended", () => {
  equal(typeof staticChecks, "function");
});

Deno.test("withShape re-labels the same tensor and refuses a label whose rank or shape the tensor lacks", () => {
  const t = zeros([2, 3]) as Tensor<Shape, "f32">;
  equal(withShape<[number, number]>(t, 2), t);
  equal(withShape<[2, 3]>(t, [2, 3]), t);
  throws(() => withShape<[number]>(t, 1), /withShape: a tensor of shape \[2, 3\] labelled with rank 1/);
  throws(() => withShape<[3, 2]>(t, [3, 2]), /withShape: a tensor of shape \[2, 3\] labelled with \[3, 2\]/);
});
