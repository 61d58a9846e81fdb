/**
 * The claim builders the experiments export, on synthetic runs whose numbers make a careless verdict differ from the
 * stated rule's: diverged or NaN runs, comparisons with too little to compare, and methods that did not run.
 */
import { equal, match, ok } from "node:assert/strict";
import { steadyPairedClaim } from "../../experiments/cntlora.ts";

Deno.test("exp:cntlora: a Table 2 claim leaves diverged runs out and is inconclusive when under 3 seeds remain", () => {
  // Seed 2's cntlora-x run diverged at step 1: its A barely moved, so its cosine is near 1 and pushes toward
  // "reproduced"; with it, the three differences (0.2, 0.25, 0.3) clear the rule, without it two seeds are left.
  const runs = [
    ...[0.9, 0.95, 0.999].map((cosA, seed) => ({
      label: "cntlora-x",
      seed,
      cosA,
      ...(seed === 2 ? { divergedAt: 1 } : {}),
    })),
    ...[0.7, 0.7, 0.699].map((cosA, seed) => ({ label: "lora", seed, cosA })),
  ];
  const opts = {
    claim: "A₀ stays closer.",
    stat: "cos(A₀, A), cntlora-x minus lora",
    a: "cntlora-x",
    b: "lora",
    value: (r: { cosA: number }) => r.cosA,
    threshold: 0.01,
  };
  const c = steadyPairedClaim(runs, { ...opts, seeds: [0, 1, 2] });
  equal(c.verdict, "inconclusive");
  match(c.rule, /over the seeds where neither run diverged.*; 2 seeds \(at least 3 to judge\)/);
  match(c.note!, /Left out \(diverged\): cntlora-x seed 2 at step 1; 2 of 3 seeds remain\./);
  // With a fourth steady seed the rule has its three seeds again.
  const more = [...runs, { label: "cntlora-x", seed: 3, cosA: 0.92 }, { label: "lora", seed: 3, cosA: 0.69 }];
  const d = steadyPairedClaim(more, { ...opts, seeds: [0, 1, 2, 3] });
  equal(d.verdict, "reproduced");
  ok(d.evidence.includes("(n = 3)"), d.evidence);
});
