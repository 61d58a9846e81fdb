import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { z } from "../../deps.ts";
import { parseConfig } from "../../lab/config.ts";
import { COLOUR_NAMES } from "../../lab/generated.ts";
import {
  DEFAULT_HELD_OUT,
  EMOJI_DIR,
  hasEmojiPack,
  shiftedVlmData,
  subsetVlmData,
  VLM_DATA_FIELDS,
} from "../../lab/toy_vlm.ts";
import { loadEmojiPack } from "../../mod.ts";
import { TEST_SEED, TestRng } from "../_helpers.ts";

const colourOf = (label: number) => COLOUR_NAMES[label % 8];

Deno.test("shiftedVlmData shapes: pretraining never sees the held-out colours, fine-tuning sees only them", async () => {
  const n = 40 + Math.floor(Math.random() * 20);
  const { pre, ft, val } = await shiftedVlmData("shapes", { images: n, heldOut: ["cyan", "orange"] });
  equal(pre.n, n);
  equal(ft.n, n);
  equal(val.n, 200);
  for (const i of pre.labels) ok(!["cyan", "orange"].includes(colourOf(i)));
  for (const d of [ft, val]) for (const i of d.labels) ok(["cyan", "orange"].includes(colourOf(i)));
  // The colour words follow the images: no pretraining caption names a held-out colour.
  ok(pre.captions.every((c) => !/cyan|orange/.test(c)));
  ok(ft.captions.every((c) => /cyan|orange/.test(c)));
  await rejects(() => shiftedVlmData("shapes", { images: 8, heldOut: ["mauve"] }), /unknown: mauve/);
});

Deno.test("shiftedVlmData shapes: no validation image is a fine-tuning image (same pixels and caption)", async () => {
  const rng = new TestRng(4401);
  const colours = [...COLOUR_NAMES];
  const heldOut = Array.from(
    { length: rng.int(1, 4) },
    () => colours.splice(rng.int(0, colours.length - 1), 1)[0],
  );
  const images = rng.int(600, 1500);
  const { ft, val } = await shiftedVlmData("shapes", { images, heldOut });
  const px = 16 * 16 * 3;
  const key = (d: typeof ft, i: number) =>
    `${d.captions[i]}|${d.images.subarray(i * px, (i + 1) * px).join(",")}`;
  const seen = new Set(Array.from({ length: ft.n }, (_, i) => key(ft, i)));
  const shared = Array.from({ length: val.n }, (_, i) => i).filter((i) => seen.has(key(val, i)));
  equal(val.n, 200);
  equal(
    shared.length,
    0,
    `held out ${heldOut.join(", ")}, ${images} images: ${shared.length} of 200 validation images (first ` +
      `${shared.slice(0, 5).join(", ")}) are fine-tuning images (TEST_SEED ${TEST_SEED})`,
  );
});

Deno.test("the heldOut key takes the empty list its help promises (the source's default), by flag or YAML", () => {
  const Config = z.object({ ...VLM_DATA_FIELDS });
  const yaml = Deno.makeTempFileSync({ suffix: ".yaml" });
  Deno.writeTextFileSync(yaml, "heldOut: []\n");
  for (const args of [["--held-out", "[]"], ["--held-out", ""], ["--config", yaml], []]) {
    deepEqual(parseConfig(Config, args, { name: "t" }).heldOut, [], args.join(" "));
  }
  deepEqual(parseConfig(Config, ["--held-out", "cyan,white"], { name: "t" }).heldOut, ["cyan", "white"]);
  throws(() => parseConfig(Config, ["--held-out", "cyan,cyan"], { name: "t" }), /"cyan" is given twice/);
  Deno.removeSync(yaml);
});

Deno.test("subsetVlmData keeps images, captions and labels together", async () => {
  const { pre } = await shiftedVlmData("shapes", { images: 12 });
  const sub = subsetVlmData(pre, [5, 2], "two");
  const px = 16 * 16 * 3;
  deepEqual(sub.captions, [pre.captions[5], pre.captions[2]]);
  deepEqual([...sub.labels], [pre.labels[5], pre.labels[2]]);
  deepEqual([...sub.images.subarray(px)], [...pre.images.subarray(2 * px, 3 * px)]);
  ok(DEFAULT_HELD_OUT.shapes.every((c) => !pre.captions.some((t) => t.includes(c))));
});

Deno.test({
  name: "shiftedVlmData emoji: held-out groups split into disjoint fine-tuning and validation sets",
  ignore: !hasEmojiPack(),
  fn: async () => {
    const groups = ["Animals & Nature", "Food & Drink"];
    const { pre, ft, val } = await shiftedVlmData("emoji", { images: 500, heldOut: groups, seed: 3 });
    const pack = await loadEmojiPack(EMOJI_DIR);
    const inGroups = pack.rows.filter((r) => groups.includes(r.group)).length;
    equal(ft.n + val.n, inGroups);
    equal(pre.n, 500);
    const names = new Set(pack.rows.filter((r) => groups.includes(r.group)).map((r) => r.name.toLowerCase()));
    ok(ft.captions.every((c) => names.has(c) || [...names].some((x) => x.startsWith(c))));
    ok(pre.captions.every((c) => !names.has(c)));
    const seen = new Set(ft.captions);
    ok(val.captions.filter((c) => seen.has(c)).length <= 2, "validation names mostly unseen");
  },
});
