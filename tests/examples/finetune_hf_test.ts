/**
 * examples/finetune_hf.ts runs end to end on a Hugging Face fixture directory (tests/fixtures/models/qwen2: a tiny
 * Qwen2 with its byte-level tokenizer) and a text written here: it prints a finite held-out loss before and a lower
 * one after, and writes the adapter files.
 */
import { ok } from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("examples/finetune_hf.ts fine-tunes an HF fixture with PiSSA and saves the adapter", async () => {
  const dir = await Deno.makeTempDir();
  const sentences = [
    "The small cat sat by the window and watched the birds.",
    "Every morning the dog ran to the gate to greet the mail carrier.",
    "A little boat sailed across the quiet lake at dawn.",
  ];
  const text = Array.from({ length: 40 }, (_, i) => sentences[i % 3]).join(" ");
  await Deno.writeTextFile(`${dir}/text.txt`, text);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}examples/finetune_hf.ts`,
      "--model",
      `${ROOT}tests/fixtures/models/qwen2`,
      "--text",
      `${dir}/text.txt`,
      "--steps",
      "8",
      "--batch",
      "2",
      "--seq-len",
      "32",
      "--out",
      `${dir}/adapter`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  ok(out.success, new TextDecoder().decode(out.stderr));
  const m = /loss before (\S+), after (\S+) \(8 steps\)/.exec(stdout);
  ok(m !== null, stdout);
  const [before, after] = [Number(m[1]), Number(m[2])];
  ok(Number.isFinite(before) && Number.isFinite(after) && after < before, stdout);
  for (const f of ["adapter_config.json", "adapter_model.safetensors"]) {
    ok((await Deno.stat(`${dir}/adapter/${f}`)).isFile, f);
  }
  await Deno.remove(dir, { recursive: true });
});
