/**
 * Integer and bool tensors on every device: a number operand the tensor's dtype does not hold (1.5 or 3e9 for i32,
 * −1 for u32) is refused, where it was converted first (i32 [1, 2] `.lt(1.5)` gave [F, F], PyTorch [T, F]); numbers
 * the dtype holds keep PyTorch's integer results, with subtraction wrapping as the integer ops do. Arithmetic,
 * ordering and reductions on bool are refused before any kernel is built (bool [1, 1, 0] summed to 1 on cpu, 2 on
 * wasm and a shader error on webgpu); u32 subtraction, minimum and i32 min agree on every device.
 */
import { deepEqual, throws } from "node:assert/strict";
import { arange, concat, type Shape, type Tensor, tensor } from "../../mod.ts";

const DEVICES = ["cpu", "wasm", "webgpu"] as const;
type I = Tensor<Shape, "i32">;
type U = Tensor<Shape, "u32">;

for (const device of DEVICES) {
  const i32 = (v: number[]) => tensor(v, { dtype: "i32", device }) as I;
  const u32 = (v: number[]) => tensor(v, { dtype: "u32", device }) as U;
  const bool = (v: number[]) => tensor(v, { dtype: "bool", device }) as Tensor<Shape, "bool">;
  const values = async (t: Tensor) => Array.from(await t.data() as ArrayLike<number>);

  Deno.test(`${device}: a number an integer or bool tensor's dtype does not hold is refused, naming op, dtype and value`, () => {
    const refusal = (op: string, d: string, v: number) =>
      new RegExp(
        `^TypeError: Cannot ${op} a tensor of dtype ${d} and the number ${v}, which ${d} does not hold; cast`,
      );
    // PyTorch: int32 [1, 2] < 1.5 is [True, False], == 1.5 [False, False], >= 1.5 [False, True]; * 1.5 is [1.5, 3].
    throws(() => i32([1, 2]).lt(1.5), refusal("lt", "i32", 1.5));
    throws(() => i32([1, 2]).eq(1.5), refusal("eq", "i32", 1.5));
    throws(() => i32([1, 2]).ge(1.5), refusal("ge", "i32", 1.5));
    throws(() => i32([1, 2]).mul(1.5), refusal("mul", "i32", 1.5));
    throws(() => i32([1, 2]).add(0.5), refusal("add", "i32", 0.5));
    throws(() => i32([1, 2]).sub(0.5), refusal("sub", "i32", 0.5));
    throws(() => i32([5]).maximum(5.5), refusal("maximum", "i32", 5.5));
    throws(() => i32([5]).minimum(5.5), refusal("minimum", "i32", 5.5));
    throws(() => i32([0]).lt(3e9), refusal("lt", "i32", 3000000000));
    throws(() => u32([0, 5]).gt(-1), refusal("gt", "u32", -1));
    throws(() => u32([0, 5]).div(2 ** 32), refusal("div", "u32", 4294967296));
    throws(() => bool([1, 0]).eq(2), refusal("eq", "bool", 2));
    throws(() => bool([1, 0]).where(i32([1, 2]), 0.5), refusal("where", "i32", 0.5));
    throws(() => i32([1, 2]).pad([[1, 0]], 0.5), refusal("pad", "i32", 0.5));
  });

  Deno.test(`${device}: numbers the dtype holds give PyTorch's integer results; subtraction wraps`, async () => {
    deepEqual(await values(i32([1, 2]).lt(2)), [1, 0]);
    deepEqual(await values(i32([1, 2]).mul(3)), [3, 6]);
    deepEqual(await values(i32([7, -7]).div(2)), [3, -3]); // truncates, as torch.div(rounding_mode="trunc")
    deepEqual(await values(u32([0, 5]).ge(0)), [1, 1]);
    deepEqual(await values(bool([1, 0]).eq(1)), [1, 0]);
    // 3 − 1 and 0 − 1 = 2³² − 1 in u32; 5 − (−2³¹) = 5 + 2³¹ wraps to −2³¹ + 5 in i32.
    deepEqual(await values(u32([3, 0]).sub(1)), [2, 4294967295]);
    deepEqual(await values(i32([5, -3]).sub(-(2 ** 31))), [-2147483643, 2147483645]);
    // An integer arange with a fractional step counts as torch.arange(0, 2, 0.5, dtype=torch.int32): [0, 0, 1, 1].
    deepEqual(await values(arange(0, 2, 0.5, { dtype: "i32", device })), [0, 0, 1, 1]);
    deepEqual(await values(arange(5, 0, -1, { dtype: "u32", device })), [5, 4, 3, 2, 1]);
  });

  Deno.test(`${device}: arithmetic, ordering and reductions on bool are refused; equality, where and concat work`, async () => {
    const b = bool([1, 1, 0]);
    const refusal = (op: string) =>
      new RegExp(`^TypeError: Cannot ${op} a tensor of dtype bool; cast it to i32 first`);
    for (
      const [op, f] of [
        ["add", () => b.add(b)],
        ["sub", () => b.sub(b)],
        ["mul", () => b.mul(b)],
        ["div", () => b.div(b)],
        ["maximum", () => b.maximum(b)],
        ["minimum", () => b.minimum(b)],
        ["lt", () => b.lt(b)],
        ["gt", () => b.gt(b)],
        ["le", () => b.le(b)],
        ["ge", () => b.ge(b)],
        ["neg", () => b.neg()],
        ["abs", () => b.abs()],
        ["square", () => b.square()],
        ["sum", () => b.sum()],
        ["max", () => b.max()],
        ["argmax", () => b.argmax(0)],
        ["matmul", () => b.reshape([1, 3]).matmul(b.reshape([3, 1]))],
      ] as const
    ) throws(f, refusal(op), op);
    // PyTorch counts trues as torch.tensor([True, True, False]).sum() = 2: here after the cast it asks for.
    deepEqual(await values(b.cast("i32").sum()), [2]);
    deepEqual(await values(b.eq(bool([1, 0, 0]))), [1, 0, 1]);
    deepEqual(await values(b.where(i32([1, 2, 3]), 0)), [1, 2, 0]);
    deepEqual(await values(concat([b, bool([1])])), [1, 1, 0, 1]);
  });

  Deno.test(`${device}: u32 subtraction wraps, integer minimum and i32 min are exact at the range ends`, async () => {
    // u32: 3 − 1 = 2, 1 − 2 wraps to 2³² − 1 (as C's uint32_t); −x wraps the same way.
    deepEqual(await values(u32([3, 1]).sub(u32([1, 2]))), [2, 4294967295]);
    deepEqual(await values(u32([0, 1]).neg()), [0, 4294967295]);
    // torch.minimum: min(0, 5) = 0 in u32, min(−2³¹, 0) = −2³¹ in i32 (−max(−a, −b) gave 5 and 0).
    deepEqual(await values(u32([0, 7]).minimum(u32([5, 3]))), [0, 3]);
    deepEqual(await values(u32([0, 7]).minimum(5)), [0, 5]);
    deepEqual(await values(i32([-(2 ** 31), 7]).minimum(i32([0, 3]))), [-2147483648, 3]);
    deepEqual(await values(i32([-(2 ** 31), 0, 5]).min()), [-2147483648]);
    deepEqual(await values((i32([2 ** 31 - 1, -(2 ** 31), 3, 4]).reshape([2, 2]) as I).min(1)), [
      -2147483648,
      3,
    ]);
    deepEqual(await values(u32([2 ** 32 - 1, 3]).max()), [4294967295]);
  });
}
