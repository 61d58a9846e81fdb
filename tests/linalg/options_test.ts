/**
 * Options of the linear algebra: every function refuses an unknown key or a bad value with an `OptionsError` naming
 * the function, the key and the value, before any work; and nf4Dequantize refuses codes that are no NF4 code.
 */
import { equal, rejects } from "node:assert/strict";
import { type Tensor, tensor } from "../../mod.ts";
import {
  dstBasis,
  eigh,
  IncrementalPCA,
  nf4Dequantize,
  nf4Qdq,
  nf4Quantize,
  type Nf4Quantized,
  pinv,
  qr,
  svd,
  svdLowRank,
  type SvdOptions,
} from "../../lib/linalg/mod.ts";
import { refusedOptions, TestRng } from "../_helpers.ts";

// Options given as a caller might build them: misspelt keys and values of the wrong type included.
type Loose = Record<string, unknown>;

Deno.test("linalg: tol must lie in (0, 1) and sweeps be at least 1 in svd, eigh, pinv and IncrementalPCA", async () => {
  const rng = new TestRng(1101);
  const a = tensor(rng.normals(6 * 4), { shape: [6, 4] });
  const s = a.transpose().matmul(a);
  // tol is a threshold on the cosine of two columns: NaN (never exceeded) and 1 or more took the first sweep as
  // converged and returned unorthogonalised factors; with 0 no sweep would ever count as converged.
  for (
    const [tol, why] of [
      [NaN, "must be a finite number, got NaN"],
      [2, "must be < 1, got 2"],
      [1, "must be < 1, got 1"],
      [0, "must be > 0, got 0"],
      ["1e-6", 'must be a finite number, got "1e-6"'],
    ] as const
  ) {
    const bad = { tol } as Loose;
    const pattern = (fn: string) => new RegExp(`^${fn}: option "tol" ${why}$`);
    await refusedOptions(() => svd(a, bad), pattern("svd"));
    await refusedOptions(() => svd(a, { ...bad, fused: false }), pattern("svd"));
    await refusedOptions(() => eigh(s, bad), pattern("eigh"));
    await refusedOptions(() => pinv(a, bad), pattern("pinv"));
    await refusedOptions(() => new IncrementalPCA({ svd: bad }), /^IncrementalPCA: option "svd.tol" must/);
  }
  await refusedOptions(() => svd(a, { sweeps: 0 }), /^svd: option "sweeps" must be >= 1, got 0$/);
  await refusedOptions(() => eigh(s, { sweeps: 0 }), /^eigh: option "sweeps" must be >= 1, got 0$/);
  await refusedOptions(() => svdLowRank(a, 2, { sweeps: 0 }), /^svdLowRank: option "sweeps" must be >= 1/);
  await refusedOptions(() => svd(a, { check: -1 }), /^svd: option "check" must be >= 0, got -1$/);
});

Deno.test("linalg: tol is refused where nothing reads it (no check, not the one-kernel solver)", async () => {
  const rng = new TestRng(1103);
  const tol = 1e-6 * rng.int(1, 999);
  // More than 128 rows: the preconditioned solver, whose tol only counts rotations for check's read-backs (tol
  // 1e-7 and 0.5 gave the same factors).
  const [m, n] = [rng.int(129, 160), rng.int(2, 6)];
  const tall = tensor(rng.normals(m * n), { shape: [m, n] });
  const unread = (fn: string, key: string, solver: string) =>
    new RegExp(
      `^${fn}: option "${key}" is ${tol} but nothing reads it: ${solver} the solver runs every sweep, and tol is ` +
        `read only by the read-backs of "check" \\(>= 1\\) or by the one-kernel solver \\(fused, ` +
        `min\\(m, n\\) <= 64 and max\\(m, n\\) <= 128\\)$`,
    );
  await refusedOptions(() => svd(tall, { tol }), unread("svd", "tol", `for a ${m} x ${n} matrix`));
  await refusedOptions(
    () => svd(tall.transpose(), { tol }),
    unread("svd", "tol", `for a ${n} x ${m} matrix`),
  );
  await refusedOptions(() => pinv(tall, { tol }), unread("pinv", "tol", `for a ${m} x ${n} matrix`));
  const small = tensor(rng.normals(6 * 4), { shape: [6, 4] });
  await refusedOptions(() => svd(small, { tol, fused: false }), unread("svd", "tol", "with fused: false"));
  await refusedOptions(
    () => pinv(small, { tol, check: 0, fused: false }),
    unread("pinv", "tol", "with fused: false"),
  );
  const k = rng.int(65, 72);
  const g = tensor(rng.normals(k * k), { shape: [k, k] });
  await refusedOptions(
    () => eigh(g.add(g.transpose()), { tol }),
    unread("eigh", "tol", `for a ${k} x ${k} matrix`),
  );
  await refusedOptions(
    () => new IncrementalPCA({ nComponents: 2, svd: { tol } }).partialFit(tall),
    unread("IncrementalPCA.partialFit", "svd.tol", `for a ${m} x ${n} matrix`),
  );
  // Where tol is read it is taken: with check, and by the one-kernel solver (small matrices).
  const read: [Tensor<number[], "f32">, SvdOptions][] = [
    [small, { tol, fused: false, check: 1 }],
    [small, { tol }],
    [tall, { tol, check: 2 }],
  ];
  for (const [a, o] of read) equal((await svd(a, o)).s.shape[0], Math.min(...a.shape));
});

Deno.test("linalg: check is refused where the one-kernel solver runs (it stops at convergence, no read-back)", async () => {
  const rng = new TestRng(1104);
  const check = rng.int(1, 5);
  // At most 64 columns and 128 rows: the one-kernel solver, which check 1 and no check ran alike.
  const [m, n] = [rng.int(8, 128), rng.int(2, 8)];
  const a = tensor(rng.normals(m * n), { shape: [m, n] });
  const unread = (fn: string, key: string, solver: string) =>
    new RegExp(
      `^${fn}: option "${key}" is ${check} but nothing reads it: ${solver} the one-kernel solver runs, which ` +
        `stops at convergence without read-backs; check is read by the preconditioned solver \\(fused: false, ` +
        `or a matrix beyond min\\(m, n\\) <= 64 and max\\(m, n\\) <= 128\\)$`,
    );
  await refusedOptions(() => svd(a, { check }), unread("svd", "check", `for a ${m} x ${n} matrix`));
  await refusedOptions(
    () => svd(a.transpose(), { check }),
    unread("svd", "check", `for a ${n} x ${m} matrix`),
  );
  await refusedOptions(() => svd(a, { check, fused: true }), unread("svd", "check", "with fused: true"));
  await refusedOptions(
    () => pinv(a, { check, tol: 1e-6 }),
    unread("pinv", "check", `for a ${m} x ${n} matrix`),
  );
  const g = tensor(rng.normals(n * n), { shape: [n, n] });
  await refusedOptions(
    () => eigh(g.add(g.transpose()), { check }),
    unread("eigh", "check", `for a ${n} x ${n} matrix`),
  );
  await refusedOptions(
    () => new IncrementalPCA({ nComponents: 2, svd: { check } }).partialFit(a),
    unread("IncrementalPCA.partialFit", "svd.check", `for a ${m} x ${n} matrix`),
  );
  // check 0 is no read-back, and the preconditioned solver takes check.
  equal((await svd(a, { check: 0 })).s.shape[0], n);
  equal((await svd(a, { check, fused: false })).s.shape[0], n);
});

Deno.test("linalg: an unknown option key or a bad value is refused by name in every function", async () => {
  const rng = new TestRng(1102);
  const a = tensor(rng.normals(6 * 4), { shape: [6, 4] });
  const s = a.transpose().matmul(a);
  await refusedOptions(() => svd(a, { sweep: 3 } as Loose), /^svd: unknown option "sweep"$/);
  await refusedOptions(
    () => svd(a, { flip: "x" } as Loose),
    /^svd: option "flip" must be one of "u", "v", got "x"$/,
  );
  await refusedOptions(() => eigh(s, { sweep: 3 } as Loose), /^eigh: unknown option "sweep"$/);
  await refusedOptions(() => eigh(s, { order: "up" } as Loose), /^eigh: option "order" must be one of/);
  await refusedOptions(() => pinv(a, { flip: "v" } as Loose), /^pinv: unknown option "flip"$/);
  await refusedOptions(() => pinv(a, { rcond: -1 }), /^pinv: option "rcond" must be >= 0, got -1$/);
  await refusedOptions(() => qr(a, { wantq: false } as Loose), /^qr: unknown option "wantq"$/);
  await refusedOptions(() => qr(a, { wantQ: "no" } as Loose), /^qr: option "wantQ" must be true or false/);
  // svdLowRank took any flip other than "u" as "v".
  await refusedOptions(
    () => svdLowRank(a, 2, { flip: "x" } as Loose),
    /^svdLowRank: option "flip" must be one of/,
  );
  await refusedOptions(() => svdLowRank(a, 2, { iters: 4 } as Loose), /^svdLowRank: unknown option "iters"$/);
  await refusedOptions(
    () => svdLowRank(a, 2, { seed: 1.5 }),
    /^svdLowRank: option "seed" must be an integer/,
  );
  await refusedOptions(() => new IncrementalPCA({ components: 2 } as Loose), /unknown option "components"$/);
  await refusedOptions(
    () => new IncrementalPCA({ nComponents: 0 }),
    /option "nComponents" must be >= 1, got 0$/,
  );
  await refusedOptions(
    () => new IncrementalPCA({ lowRank: { q: 4, niters: 2 } } as Loose),
    /^IncrementalPCA: unknown option of "lowRank" "niters"$/,
  );
  // With lowRank the exact SVD's options were never read: sweeps 1 and sweeps 40 with check gave the same fit.
  const sweeps = rng.int(1, 40);
  await refusedOptions(
    () => new IncrementalPCA({ lowRank: { q: 4 }, svd: { sweeps } }),
    new RegExp(
      `^IncrementalPCA: option "svd" is \\{"sweeps":${sweeps}\\} but "lowRank" is given: the randomized SVD ` +
        `does not read the exact SVD's options$`,
    ),
  );
  // partialFit dropped an unknown key: { checkedfinite: true } still read the batch back to check it.
  await refusedOptions(
    () => new IncrementalPCA().partialFit(a, { checkedfinite: true } as Loose),
    /^IncrementalPCA.partialFit: unknown option "checkedfinite"$/,
  );
  await refusedOptions(() => nf4Quantize(a, { block: 64 } as Loose), /^nf4Quantize: unknown option "block"$/);
  await refusedOptions(() => nf4Qdq(a, { blockSize: 0 }), /^nf4Qdq: option "blockSize" must be >= 1, got 0$/);
  await refusedOptions(() => dstBasis(8, 2, { dev: "cpu" } as Loose), /^dstBasis: unknown option "dev"$/);
});

Deno.test("nf4Dequantize refuses codes above 15 on every device (the kernels would read them as 15)", async () => {
  for (const device of ["cpu", "wasm", "webgpu"] as const) {
    const q: Nf4Quantized = {
      codes: tensor(Uint32Array.of(3, 15, 16, 200), { dtype: "u32", device }),
      absmax: tensor([1], { device }),
      blockSize: 64,
    };
    await rejects(
      () => nf4Dequantize(q),
      /^RangeError: nf4Dequantize: codes must be 0\.\.15, got 16 at element 2 \(the largest is 200\)$/,
      device,
    );
  }
});
