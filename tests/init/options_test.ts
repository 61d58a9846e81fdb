/**
 * Options of the initialisations: the registry and the exported functions refuse an unknown key or a bad value with
 * an `OptionsError` naming the method, the key and the value.
 */
import { rejects } from "node:assert/strict";
import { tensor } from "../../mod.ts";
import { type F32, getInitMethod } from "../../lib/init/mod.ts";
import { OptionsError } from "../../lib/options.ts";
import { TestRng } from "../_helpers.ts";

function matrix(rng: TestRng, m: number, n: number): F32 {
  return tensor(rng.normals(m * n), { shape: [m, n] }) as unknown as F32;
}

Deno.test("registry: an unknown or bad method option is an OptionsError naming the key and the value", async () => {
  const w = matrix(new TestRng(1), 8, 6);
  const pissa = getInitMethod("pissa");
  await rejects(pissa.init(w, { rank: 2, foo: 1 }), OptionsError);
  await rejects(pissa.init(w, { rank: 2, foo: 1 }), /^OptionsError: pissa: unknown option "foo"$/);
  await rejects(pissa.init(w, { rank: 2, niter: -1 }), /pissa: option "niter" must be >= 0, got -1/);
  await rejects(
    getInitMethod("loftq").init(w, { rank: 2, blockSize: 0 }),
    /loftq: option "blockSize" must be >= 1, got 0/,
  );
});
