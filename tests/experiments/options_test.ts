/**
 * Options an experiment would accept and then ignore are refused before anything is written: the refusal names
 * the option and its value, and no results directory is created.
 */
import { equal, match } from "node:assert/strict";
import { TestRng } from "../_helpers.ts";

/** Runs `experiments/<script>` with `args` in a fresh directory; its exit status, stderr and what it wrote. */
async function refusal(
  script: string,
  args: string[],
): Promise<{ code: number; stderr: string; wrote: string[] }> {
  const dir = await Deno.makeTempDir();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`../../experiments/${script}`, import.meta.url).pathname, ...args],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wrote = [...Deno.readDirSync(dir)].map((e) => e.name);
  await Deno.remove(dir, { recursive: true });
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr), wrote };
}

for (const script of ["vlm_dynamics.ts", "gap_init.ts"]) {
  Deno.test(`${script} refuses --held-out with --shift none (nothing is held out there)`, async () => {
    const r = await refusal(script, ["--quick", "--device", "cpu", "--shift", "none", "--held-out", "cyan"]);
    equal(r.code, 2, r.stderr);
    match(r.stderr, /--held-out \["cyan"\] is used only with --shift held-out, and --shift is none/);
    equal(r.wrote.length, 0, `wrote ${r.wrote}`);
  });
  Deno.test(`${script} refuses a --data directory without an emoji pack before it creates a results directory`, async () => {
    const missing = `no_pack_${new TestRng(7).int(0, 1 << 30)}`;
    const r = await refusal(script, ["--quick", "--device", "cpu", "--data", missing]);
    equal(r.code, 2, r.stderr);
    match(r.stderr, new RegExp(`--data "${missing}": no emoji pack at "${missing}"`));
    equal(r.wrote.length, 0, `wrote ${r.wrote}`);
  });
}

// Tiny sizes, so that an experiment that does not refuse ends soon.
const LM_TINY = ["--quick", "--device", "cpu", "--steps", "2", "--pretrain-steps", "2", "--targets", "wq"];
for (const script of ["eva.ts", "init_sweep.ts", "cntlora.ts"]) {
  Deno.test(`${script} refuses --train-domain and --sentiment-dir with --task lm (only the sentiment task reads them)`, async () => {
    const one = await refusal(script, [...LM_TINY, "--methods", "lora", "--train-domain", "imdb"]);
    equal(one.code, 2, one.stderr);
    match(one.stderr, /--train-domain imdb: used only with --task sentiment, and --task is lm/);
    equal(one.wrote.length, 0, `wrote ${one.wrote}`);
    const two = await refusal(script, [...LM_TINY, "--methods", "lora", "--sentiment-dir", "elsewhere"]);
    equal(two.code, 2, two.stderr);
    match(two.stderr, /--sentiment-dir "elsewhere": used only with --task sentiment/);
  });
}

Deno.test("magnitude.ts refuses --prop1-rank above --prop1-width before it creates a results directory", async () => {
  const rng = new TestRng(1);
  const width = rng.int(2, 16);
  const rank = width + rng.int(1, 8);
  const r = await refusal("magnitude.ts", [
    "--quick",
    "--device",
    "cpu",
    "--prop1-width",
    String(width),
    "--prop1-rank",
    String(rank),
    // A teacher of rank 1 fits every width: the default one would exceed a small --prop1-width and be refused first.
    "--teacher-rank",
    "1",
  ]);
  equal(r.code, 2, r.stderr);
  match(r.stderr, new RegExp(`--prop1-rank ${rank} exceeds --prop1-width ${width}`));
  equal(r.wrote.length, 0, `wrote ${r.wrote}`);
});

Deno.test("vlm_dynamics.ts records what --data auto resolved to, and --resume refuses a run it resolved otherwise", async () => {
  // "auto" is the emoji pack at ../shared/data/vl/noto_emoji32 when it is there: absent from a/a, present from b.
  const root = await Deno.makeTempDir();
  const withoutPack = `${root}/a/a`;
  const withPack = `${root}/b`;
  const pack = `${root}/shared/data/vl/noto_emoji32`;
  for (const dir of [withoutPack, withPack, pack]) await Deno.mkdir(dir, { recursive: true });
  for (const file of ["index.tsv", "noto_emoji32_rgba.u8.gz"]) {
    await Deno.writeTextFile(`${pack}/${file}`, "");
  }
  const tiny = ["--quick", "--device", "cpu", "--steps", "2", "--pretrain-steps", "2", "--seeds", "0"];
  const more = ["--methods", "lora", "--images", "40", "--val-batches", "1", "--calib-batches", "1"];
  const run = (cwd: string, extra: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../experiments/vlm_dynamics.ts", import.meta.url).pathname,
        ...tiny,
        ...more,
        ...extra,
      ],
      cwd,
      stdout: "piped",
      stderr: "piped",
    }).output();
  const first = await run(withoutPack, []);
  const stdout = new TextDecoder().decode(first.stdout);
  equal(first.code, 0, new TextDecoder().decode(first.stderr).slice(-2000));
  match(stdout, /generateShapes/);
  const dir = `${withoutPack}/${/exp:vlm-dynamics → (\S+)/.exec(stdout)![1]}`;
  const again = await run(withPack, ["--resume", dir]);
  const stderr = new TextDecoder().decode(again.stderr);
  equal(again.code, 2, stderr);
  match(stderr, /resolved\.data: "shapes" in the run, "emoji" now/);
  // No flag gives a resolved value back: the refusal does not send the user to the run's values.
  match(
    stderr,
    /Resume where resolved\.data resolves as in the run .* or start a new run without --resume\./s,
  );
  equal(/run's value of each key/.test(stderr), false, stderr);
  await Deno.remove(root, { recursive: true });
});

const STORIES = new URL("../../../shared/data/models/stories260K/", import.meta.url).pathname;
const HAS_STORIES = (() => {
  try {
    return Deno.statSync(`${STORIES}stories260K.bin`).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name:
    "the LM experiments and spectral_gain.ts refuse --pretrain-steps with --model (it sizes the generated base)",
  ignore: !HAS_STORIES,
  fn: async () => {
    const steps = String(new TestRng(2).int(2, 50));
    const model = ["--device", "cpu", "--model", `${STORIES}stories260K.bin`, "--pretrain-steps", steps];
    const lm = [
      "--quick",
      "--steps",
      "2",
      "--targets",
      "wq",
      "--methods",
      "lora",
      "--tokenizer",
      `${STORIES}tok512.bin`,
    ];
    const data = ["--data", `${STORIES}LICENSE.llama2.c-MIT.txt`];
    for (
      const [script, args] of [["eva.ts", [...lm, ...data, ...model]], ["spectral_gain.ts", model]] as const
    ) {
      const r = await refusal(script, [...args]);
      equal(r.code, 2, `${script}: ${r.stderr}`);
      match(
        r.stderr,
        new RegExp(`--pretrain-steps ${steps}: used only for the generated base model, and --model`),
      );
      equal(r.wrote.length, 0, `wrote ${r.wrote}`);
    }
    const quick = await refusal("spectral_gain.ts", [
      "--quick",
      "--device",
      "cpu",
      "--model",
      `${STORIES}stories260K.bin`,
    ]);
    equal(quick.code, 2, quick.stderr);
    match(quick.stderr, /--quick: used only for the generated base model/);
  },
});

Deno.test("gap_init.ts refuses --grad-steps above --steps (it measured fewer steps than its report names)", async () => {
  const rng = new TestRng(3);
  const steps = rng.int(1, 5);
  const grad = steps + rng.int(1, 5);
  const tiny = ["--quick", "--device", "cpu", "--pretrain-steps", "2", "--seeds", "0", "--methods", "lora"];
  const r = await refusal("gap_init.ts", [
    ...tiny,
    "--data",
    "shapes",
    "--steps",
    String(steps),
    "--grad-steps",
    String(grad),
  ]);
  equal(r.code, 2, r.stderr);
  match(r.stderr, new RegExp(`--grad-steps ${grad} exceeds --steps ${steps}`));
  equal(r.wrote.length, 0, `wrote ${r.wrote}`);
});

Deno.test("magnitude.ts refuses --teacher-rank above --width (the report named a rank the shift cannot have)", async () => {
  const rng = new TestRng(4);
  const width = rng.int(4, 16);
  const teacher = width + rng.int(1, 8);
  const r = await refusal("magnitude.ts", [
    "--quick",
    "--device",
    "cpu",
    "--width",
    String(width),
    "--rank",
    "2",
    "--teacher-rank",
    String(teacher),
    "--steps",
    "3",
    "--prop1-steps",
    "2",
    "--prop1-width",
    "4",
    "--prop1-rank",
    "2",
    "--examples",
    "32",
    "--batch-size",
    "8",
    "--seeds",
    "0",
  ]);
  equal(r.code, 2, r.stderr);
  match(r.stderr, new RegExp(`--teacher-rank ${teacher} exceeds --width ${width}`));
  equal(r.wrote.length, 0, `wrote ${r.wrote}`);
  // The Prop. 1 runs' teacher has --prop1-width.
  const p1 = await refusal("magnitude.ts", [
    "--quick",
    "--device",
    "cpu",
    "--teacher-rank",
    "8",
    "--prop1-width",
    "4",
  ]);
  equal(p1.code, 2, p1.stderr);
  match(p1.stderr, /--teacher-rank 8 exceeds --prop1-width 4/);
});

Deno.test("vlm_dynamics.ts refuses --eva-positions labelled when no method is calibrated on activations", async () => {
  const tiny = ["--quick", "--device", "cpu", "--steps", "2", "--pretrain-steps", "2", "--seeds", "0"];
  const r = await refusal("vlm_dynamics.ts", [
    ...tiny,
    "--data",
    "shapes",
    "--methods",
    "lora,pissa",
    "--eva-positions",
    "labelled",
  ]);
  equal(r.code, 2, r.stderr);
  match(
    r.stderr,
    /--eva-positions labelled: used only by methods calibrated on activations \(e\.g\. eva\), and --methods lora,pissa has none/,
  );
  equal(r.wrote.length, 0, `wrote ${r.wrote}`);
});

Deno.test("an input path that does not exist is refused by flag and path before a results directory is made", async () => {
  const missing = `/nonexistent-${new TestRng(3).int(1, 1e9)}`;
  const cases: [string, string[], string][] = [
    ["spectral_gain.ts", ["--model", `${missing}/model.bin`], "--model"],
    ["eva.ts", [
      "--model",
      `${missing}/m.bin`,
      "--tokenizer",
      `${missing}/t.bin`,
      "--data",
      `${missing}/d.txt`,
    ], "--data"],
    [
      "cntlora.ts",
      ["--task", "sentiment", "--model", `${missing}/m.bin`, "--tokenizer", `${missing}/t.bin`],
      "--model",
    ],
  ];
  for (const [script, args, flag] of cases) {
    const r = await refusal(script, ["--quick", "--device", "cpu", ...args]);
    equal(r.code, 2, r.stderr);
    match(r.stderr, new RegExp(`${flag} "${missing}/[a-z.]+": no such file or directory`));
    equal(r.wrote.length, 0, `${script} wrote ${r.wrote}`);
  }
});
