/**
 * Integer and bool tensors on every device: a number operand the tensor's dtype does not hold (1.5 or 3e9 for i32,
 * −1 for u32) is refused, where it was converted first (i32 [1, 2] `.lt(1.5)` gave [F, F], PyTorch [T, F]); numbers
 * the dtype holds keep PyTorch's integer results, with subtraction wrapping as the integer ops do.
 */
import { deepEqual, throws } from "node:assert/strict";
import { arange, type Shape, type Tensor, tensor } from "../../mod.ts";

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
}
