/**
 * logsumexp with infinities gives PyTorch's answer on every device: a line of -inf gives -inf and a line holding +inf
 * gives +inf (the max that shifts the exponents is replaced by 0 where it is infinite, since x − max would be
 * inf − inf). Lines with some -inf entries keep their finite value, and softmax, logSoftmax and their gradients over
 * such lines are unchanged: 0 probability and 0 gradient at a -inf entry.
 */
import { ok } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { grad } from "../../lib/autodiff/grad.ts";
import { assertClose, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

/** Float64 closed form per line: +inf if any entry is +inf, -inf if all are -inf, else m + log Σ e^(x − m). */
function lse(row: number[]): number {
  if (row.includes(Infinity)) return Infinity;
  const m = Math.max(...row);
  if (m === -Infinity) return -Infinity;
  return m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
}

/** `lines` lines of `len` normal values (scale 3), about a third of the entries -inf, at least one finite. */
function masked(rng: TestRng, lines: number, len: number): number[][] {
  return Array.from({ length: lines }, () => {
    const row = Array.from({ length: len }, () => (rng.next() < 0.35 ? -Infinity : 3 * rng.normal()));
    row[rng.int(0, len - 1)] = 3 * rng.normal();
    return row;
  });
}

for (const device of ["cpu", "wasm", "webgpu"] as const) {
  Deno.test(`logsumexp over lines with infinities, softmax and logSoftmax over masked lines (${device})`, async () => {
    const rng = new TestRng(1401);
    const len = 9;
    const finite = masked(rng, 5, len);
    const plusInf = Array.from({ length: len }, () => rng.normal());
    const at = rng.int(0, len - 1);
    plusInf[at] = Infinity;
    plusInf[(at + rng.int(1, len - 1)) % len] = -Infinity;
    const rows = [...finite, Array(len).fill(-Infinity), plusInf];
    const x = tensor(Float32Array.from(rows.flat()), { shape: [rows.length, len], device }) as F;
    const got = Array.from(await x.logsumexp(1).data());
    // f32 rounding of a sum of 9 terms and one log: a few ulp of values of size ~10.
    assertClose(got, rows.map(lse), { rtol: 1e-5, atol: 1e-5, what: `${device} logsumexp` });
    ok(got[rows.length - 2] === -Infinity && got[rows.length - 1] === Infinity, `${device}: ${got}`);

    // Over lines with a finite max: softmax p = e^(x − lse), d logsumexp = p, and for a weighted sum Σ w·y,
    // d softmax = p·(w − Σ p·w), d logSoftmax = w − p·Σ w (PyTorch's rules; 0 and w at a -inf entry).
    const xf = tensor(Float32Array.from(finite.flat()), { shape: [finite.length, len], device }) as F;
    const w = finite.map(() => Array.from({ length: len }, () => rng.normal()));
    const wt = tensor(Float32Array.from(w.flat()), { shape: [finite.length, len], device }) as F;
    const p = finite.map((row) => row.map((v) => Math.exp(v - lse(row))));
    const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i], 0);
    const sum = (a: number[]) => a.reduce((s, v) => s + v, 0);
    const tol = { rtol: 1e-5, atol: 1e-6 };
    assertClose(await xf.softmax().data(), p.flat(), { ...tol, what: `${device} softmax` });
    assertClose(await grad((a: F) => a.logsumexp(1).sum())(xf).data(), p.flat(), {
      ...tol,
      what: `${device} d logsumexp`,
    });
    assertClose(
      await grad((a: F) => a.softmax().mul(wt).sum())(xf).data(),
      p.flatMap((pr, i) => pr.map((v, j) => v * (w[i][j] - dot(pr, w[i])))),
      { ...tol, what: `${device} d softmax` },
    );
    const logSoftmax = finite.flatMap((row) => row.map((v) => v - lse(row)));
    assertClose(await xf.logSoftmax().data(), logSoftmax, { ...tol, what: `${device} logSoftmax` });
    // Σ w·logSoftmax is -inf here; its gradient is finite.
    assertClose(
      await grad((a: F) => a.logSoftmax().mul(wt).sum())(xf).data(),
      p.flatMap((pr, i) => pr.map((v, j) => w[i][j] - v * sum(w[i]))),
      { ...tol, what: `${device} d logSoftmax` },
    );
  });
}

for (const device of ["cpu", "wasm", "webgpu"] as const) {
  Deno.test(`over an empty axis logsumexp is -inf and softmax, logSoftmax are empty, as in PyTorch (${device})`, async () => {
    const x = tensor(new Float32Array(0), { shape: [3, 0], device }) as F;
    const l = x.logsumexp(1);
    ok(l.shape.join() === "3", `shape ${l.shape}`);
    ok(Array.from(await l.data()).every((v) => v === -Infinity));
    ok(x.logsumexp(1, { keepdims: true }).shape.join() === "3,1");
    for (const y of [x.softmax(-1), x.logSoftmax(-1)]) {
      ok(y.shape.join() === "3,0" && (await y.data()).length === 0);
    }
    // Over the other, non-empty axis there is nothing to reduce per line either: shape [0].
    ok((await x.logsumexp(0).data()).length === 0);
  });
}
