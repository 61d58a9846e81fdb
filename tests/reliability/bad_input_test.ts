/**
 * Errors a person can act on (issue 9, item 1): bad input gives an error naming the file, key, tensor or kernel,
 * what was expected and what was found. Most cases are already tested beside the code they concern; this file
 * adds only the ones nothing else covers.
 *
 * | bad input                                   | covered by                                                                   |
 * | :------------------------------------------ | :--------------------------------------------------------------------------- |
 * | config key: wrong type, unknown key, path   | tests/util/config_test.ts (parseConfig); through an experiment's CLI: here   |
 * | config key through a CLI: unknown key       | tests/cli/models_cli_test.ts ("--help, unknown keys and missing files")      |
 * | malformed safetensors header                | tests/io/safetensors_test.ts ("parser rejects malformed files ...")          |
 * | truncated llama2.c checkpoint               | tests/io/llama2c_test.ts ("truncated or padded files ..."),                  |
 * |                                             | tests/models/hf_test.ts ("loaders name the file and what was expected")      |
 * | tokenizer file truncated                    | tests/io/tokenizer_test.ts ("tokenizer file errors name the file ...")       |
 * | tokenizer file garbage (another file type)  | here                                                                         |
 * | IDX bad magic                               | tests/data/images_test.ts ("loadMnist errors name the file ...",             |
 * |                                             | "a labels file with a wrong magic is named as such")                         |
 * | CSV bad row                                 | tests/data/images_test.ts ("loadOptdigits: ... malformed rows ..."),         |
 * |                                             | tests/data/text_test.ts ("loadSentiment errors name the file, the line ...") |
 * | model/adapter mismatch: shapes              | tests/lora/lora_test.ts ("adapters round-trip ...": "Mismatches name ...")   |
 * | model/adapter mismatch: missing module      | here                                                                         |
 * | no WebGPU adapter                           | tests/tensor/backend_test.ts ("... a missing adapter names the package ...") |
 * | buffer over the device limits               | tests/tensor/backend_test.ts ("a result larger than the device's ...")       |
 * | WebGPU shader compilation error             | tests/tensor/backend_test.ts ("an invalid hand-written shader ...")          |
 * | WebGPU validation error (bind group, usage) | here                                                                         |
 */
import { equal, match, ok, rejects } from "node:assert/strict";
import { runKernels, tensor } from "../../mod.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { attachLora } from "../../lib/init/mod.ts";
import { loadAdapter, saveAdapter } from "../../lib/lora/mod.ts";
import { serializeTokenizer, Tokenizer } from "../../lib/io/tokenizer.ts";
import { llama2cLayout, serializeLlama2c } from "../../lib/io/llama2c.ts";
import { TestRng } from "../_helpers.ts";

const EVA = new URL("../../experiments/eva.ts", import.meta.url).pathname;

/** Runs exp:eva with `args` in a fresh directory; returns its exit code, stderr and whether it wrote anything. */
async function evaCli(args: string[]): Promise<{ code: number; stderr: string; wrote: boolean }> {
  const cwd = await Deno.makeTempDir();
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", EVA, ...args],
      cwd,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const wrote = [...Deno.readDirSync(cwd)].length > 0;
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr), wrote };
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
}

Deno.test("an experiment's CLI names the bad config key, its path and the expected type, and writes nothing", async () => {
  const yaml = `${await Deno.makeTempDir()}/bad.yaml`;
  await Deno.writeTextFile(yaml, "rank: 8\nsteps: many\n");
  const [type, path, file] = await Promise.all([
    evaCli(["--rank", "abc"]),
    evaCli(["--methods", "lora,bogus"]),
    evaCli(["--config", yaml]),
  ]);
  for (const r of [type, path, file]) {
    equal(r.code, 2, r.stderr);
    ok(!r.wrote, "nothing written before the configuration is valid");
  }
  match(type.stderr, /config key "rank": expected integer, got "abc" \(from flag --rank\)/);
  match(path.stderr, /config key "methods\[1\]": expected one of "lora"\|"eva-rho1"\|.*got "bogus"/);
  match(file.stderr, /config key "steps": expected integer, got "many" \(from file ".*bad\.yaml"\)/);
  await Deno.remove(yaml);
});

Deno.test("a file that is not a tokenizer (a model checkpoint, text) is named as corrupt, not parsed", async () => {
  const rng = new TestRng(101);
  const dir = await Deno.makeTempDir();
  try {
    // Swapped --model/--tokenizer: a small llama2.c checkpoint given as the tokenizer.
    const config = {
      dim: 8,
      hiddenDim: 12,
      nLayers: 1,
      nHeads: 2,
      nKvHeads: 1,
      vocabSize: 20,
      seqLen: 8,
      sharedClassifier: true,
    };
    const weights = new Map(
      llama2cLayout(config).map(({ name, shape }) => [name, {
        shape,
        data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()),
      }]),
    );
    await Deno.writeFile(`${dir}/model.bin`, serializeLlama2c(config, weights));
    await rejects(
      Tokenizer.load(`${dir}/model.bin`),
      /tokenizer file ".*model\.bin" is truncated or corrupt: token \d+ declares -?\d+ bytes at byte \d+/,
    );
    // A text file.
    const words = ["the", "cat", "sat", "on", "a", "mat"];
    const text = Array.from({ length: 200 }, () => words[rng.int(0, words.length - 1)]).join(" ");
    await Deno.writeTextFile(`${dir}/story.txt`, text);
    await rejects(
      Tokenizer.load(`${dir}/story.txt`),
      /tokenizer file ".*story\.txt" is truncated or corrupt/,
    );
    // A real tokenizer with its max_token_length field overwritten by garbage.
    const tok = serializeTokenizer([{ piece: "a", score: 0 }, { piece: "b", score: -1 }]);
    new DataView(tok.buffer, tok.byteOffset).setInt32(0, -rng.int(1, 1000), true);
    await Deno.writeFile(`${dir}/tok.bin`, tok);
    await rejects(
      Tokenizer.load(`${dir}/tok.bin`),
      /tokenizer file ".*tok\.bin" declares a negative max_token_length/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an adapter for a module the model lacks names the module and the adapter file", async () => {
  const dir = await Deno.makeTempDir();
  const seed = new TestRng(102).int(0, 2 ** 20);
  const twoLayers = { layers: [0, 1].map((i) => ({ wq: new Linear(8, 8, { seed: seed + i }) })) };
  await attachLora(twoLayers, { targetModules: ["wq"], rank: 2, alpha: 4, init: "lora", seed });
  await saveAdapter(dir, twoLayers);
  const oneLayer = { layers: [{ wq: new Linear(8, 8, { seed }) }] };
  await rejects(
    loadAdapter(dir, oneLayer),
    /adapter ".*adapter_model\.safetensors": the model has no module "layers\.1\.wq"/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("WebGPU validation errors (not only shader compilation) name the kernel; the device stays usable", async () => {
  const x = tensor([1, 2, 3], { device: "webgpu" });
  const wgsl = `@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(1) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < 3u) { b[g.x] = a[g.x] * 2.0; }
}`;
  const launch = (name: string, bindings: number[]) =>
    runKernels([x], [{ shape: [3], dtype: "f32" }], [{
      name,
      wgsl,
      dispatch: [3, 1, 1],
      bindings,
      host: () => {},
    }]);
  // One buffer bound where the shader declares two.
  await rejects(launch("one_binding_short", [0]), /WebGPU error in kernel one_binding_short: .*bind/i);
  // The input bound both read-only and read-write.
  await rejects(launch("input_as_output", [0, 0]), /WebGPU error in kernel input_as_output: .*usage/i);
  const [y] = await launch("well_formed", [0, 1]);
  equal((await y.data()).join(), "2,4,6");
});
