/** `deno task init`: writes adapters that load back into the LoRA layer like a script's, and fails cleanly. */
import { deepEqual, equal, match, ok, rejects } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { initUsage, runInit } from "../../cli/init.ts";
import { readSafetensors, toFloat32, writeSafetensors } from "../../lib/io/safetensors.ts";
import { Linear } from "../../lib/nn/linear.ts";
import { attachLora, INIT_METHODS, loramInit } from "../../lib/init/mod.ts";
import { loadAdapter, LoraLinear } from "../../lib/lora/mod.ts";
import { loadLlama } from "../../lib/models/load.ts";
import { assertClose, TestRng } from "../_helpers.ts";

type F = Tensor<Shape, "f32">;

async function weightsFile(rng: TestRng, dir: string) {
  const layers = { "blk.q": [12, 10], "blk.v": [6, 10] } as const;
  const entries = Object.fromEntries(
    Object.entries(layers).map((
      [k, s],
    ) => [`${k}.weight`, { dtype: "F32" as const, shape: [...s], data: rng.normals(s[0] * s[1], 0.3) }]),
  );
  await writeSafetensors(`${dir}/w.safetensors`, {
    ...entries,
    "blk.norm": { dtype: "F32", shape: [10], data: rng.normals(10) },
  });
  return entries;
}

Deno.test("init command: adapters load into the LoRA layer and match a script's attachLora", async () => {
  const rng = new TestRng(60);
  const dir = await Deno.makeTempDir();
  const w = await weightsFile(rng, dir);
  const res = await runInit([
    "--method",
    "init-b",
    "--weights",
    `${dir}/w.safetensors`,
    "--rank",
    "3",
    "--alpha",
    "6",
    "--out",
    `${dir}/out.safetensors`,
    "--seed",
    "7",
    "--distribution",
    "normal",
    "--device",
    "cpu",
  ]);
  deepEqual(res.layers["blk.q"], { rank: 3, alpha: 6, scale: 2 });
  const { tensors, metadata } = await readSafetensors(`${dir}/out.safetensors`);
  deepEqual([...tensors.keys()].sort(), [
    "blk.q.lora_A.weight",
    "blk.q.lora_B.weight",
    "blk.v.lora_A.weight",
    "blk.v.lora_B.weight",
  ]);
  equal(metadata.method, "init-b");
  equal(JSON.parse(metadata.options).distribution, "normal");
  // The same init from a script (same seed) gives the same adapters and the same outputs.
  const model = {
    blk: {
      q: Linear.fromWeights(tensor(w["blk.q.weight"].data, { shape: [12, 10] }) as F),
      v: Linear.fromWeights(tensor(w["blk.v.weight"].data, { shape: [6, 10] }) as F),
    },
  };
  await attachLora(model, {
    targetModules: ["q", "v"],
    rank: 3,
    alpha: 6,
    init: "init-b",
    initOptions: { distribution: "normal" },
    seed: 7,
  });
  const x = tensor(rng.normals(4 * 10), { shape: [4, 10] }) as unknown as F;
  for (const name of ["q", "v"] as const) {
    const layer = model.blk[name] as unknown as LoraLinear;
    const a = tensors.get(`blk.${name}.lora_A.weight`)!;
    const b = tensors.get(`blk.${name}.lora_B.weight`)!;
    assertClose(toFloat32(b), await layer.lora_B.weight.data(), { rtol: 0, atol: 0, what: `${name} B` });
    const fromFile = LoraLinear.wrap(Linear.fromWeights(layer.base_layer.weight), {
      a: tensor(toFloat32(a), { shape: a.shape }) as F,
      b: tensor(toFloat32(b), { shape: b.shape }) as F,
      rank: 3,
      alpha: 6,
      scale: 2,
    });
    // Give both a non-zero A so the comparison exercises B.
    const aNew = tensor(rng.normals(30), { shape: [3, 10] }) as F;
    fromFile.lora_A.weight = aNew;
    layer.lora_A.weight = aNew;
    assertClose(await fromFile.forward(x).data(), await layer.forward(x).data(), { rtol: 1e-6, atol: 1e-6 });
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("init command: bad input gives an error naming the problem, and writes nothing", async () => {
  const rng = new TestRng(61);
  const dir = await Deno.makeTempDir();
  await weightsFile(rng, dir);
  const base = ["--weights", `${dir}/w.safetensors`, "--out", `${dir}/out.safetensors`, "--device", "cpu"];
  await rejects(
    runInit(["--method", "nope", ...base]),
    /unknown LoRA init method "nope"; known: lora, gaussian, init-b/,
  );
  await rejects(
    runInit(["--method", "lora", ...base, "--rank", "13"]),
    /layer "blk.q": lora: rank 13 is not possible for a \[12, 10\] weight/,
  );
  await rejects(runInit(["--method", "lora", ...base, "--bogus", "1"]), /bogus/);
  await rejects(
    runInit(["--method", "lora", "--weights", `${dir}/missing.safetensors`, "--out", `${dir}/o.safetensors`]),
    /missing\.safetensors/,
  );
  let exists = true;
  try {
    await Deno.stat(`${dir}/out.safetensors`);
  } catch {
    exists = false;
  }
  ok(!exists, "nothing written on failure");
  const help = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../cli/init.ts", import.meta.url).pathname, "--help"],
    stdout: "piped",
  });
  const out = new TextDecoder().decode((await help.output()).stdout);
  match(out, /--method init-b/);
  match(out, /distribution/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("init command on a Hugging Face directory writes a PEFT adapter directory that reloads exactly", async () => {
  const base = new URL("../fixtures/models/qwen2", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  const res = await runInit([
    "--method",
    "pissa",
    "--weights",
    base,
    "--rank",
    "4",
    "--alpha",
    "8",
    "--targets",
    "q_proj,v_proj",
    "--exact",
    "--out",
    `${dir}/adapter`,
  ]);
  deepEqual(Object.keys(res.layers).sort(), [
    "layers.0.attention.wq",
    "layers.0.attention.wv",
    "layers.1.attention.wq",
    "layers.1.attention.wv",
  ]);
  const config = JSON.parse(await Deno.readTextFile(`${dir}/adapter/adapter_config.json`));
  deepEqual(config.target_modules, ["q_proj", "v_proj"]);
  equal(config.r, 8); // PiSSA as a rank-2r LoRA of the original base, at init exactly zero: [B0, -B0]·[A0; A0]
  equal(config.init_lora_weights, true);
  // On the original base the adapter changes nothing at init (B'·A' = B0·A0 − B0·A0).
  const model = await loadLlama(base);
  const ids = tensor([[3, 17, 42, 9, 100, 250]], { dtype: "i32" }) as Tensor<Shape, "i32">;
  const plain = await model.forward(ids).data();
  await loadAdapter(`${dir}/adapter`, model);
  assertClose(await model.forward(ids).data(), plain, { rtol: 1e-5, atol: 1e-5 });
  // Data-driven methods calibrate on text with the model's tokenizer; without it the error says what to pass.
  await Deno.writeTextFile(`${dir}/calib.txt`, "The quick brown fox jumps over the lazy dog. ".repeat(40));
  const eva = await runInit([
    "--method",
    "eva",
    "--weights",
    base,
    "--rank",
    "2",
    "--calibration-text",
    `${dir}/calib.txt`,
    "--calibration-seq-len",
    "32",
    "--out",
    `${dir}/eva`,
  ]);
  ok(Object.values(eva.layers).some((l) => l.rank > 0));
  await rejects(
    runInit(["--method", "corda", "--weights", base, "--out", `${dir}/corda`]),
    /method "corda" needs --calibration-text/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("init command on a Hugging Face directory refuses, before computing, to write over its calibration text", async () => {
  const rng = new TestRng(63);
  const base = new URL("../fixtures/models/llama", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  const text = Array.from({ length: 200 }, () => "abcdefghij ".slice(rng.int(0, 9))).join("");
  const run = (out: string, calibration: string) =>
    runInit(["--method", "eva", "--weights", base, "--rank", "2", "--device", "cpu"]
      .concat(["--out", out, "--calibration-text", calibration, "--calibration-seq-len", "16"]));
  // Each file saveAdapter writes (or removes) in the adapter directory is an output.
  await Deno.mkdir(`${dir}/out`);
  for (const file of ["adapter_model.safetensors", "adapter_config.json", "base_model_weights.safetensors"]) {
    const path = `${dir}/out/${file}`;
    await Deno.writeTextFile(path, text);
    await rejects(run(`${dir}/out`, path), (e: Error) => {
      equal(
        e.message,
        `--out's file "${dir}/out/${file}" is the --calibration-text input "${path}": writing it would replace ` +
          `the input; choose another output path`,
      );
      return true;
    });
    equal(await Deno.readTextFile(path), text);
    await Deno.remove(path);
  }
  // OUT given as the text itself is refused by name, where mkdir failed after the calibration.
  await Deno.writeTextFile(`${dir}/calib.txt`, text);
  await rejects(
    run(`${dir}/calib.txt`, `${dir}/calib.txt`),
    /^ConfigError: --out ".*calib\.txt" is the --calibration-text input/,
  );
  await Deno.writeTextFile(`${dir}/other.txt`, text);
  await rejects(
    run(`${dir}/other.txt`, `${dir}/calib.txt`),
    /^ConfigError: --out ".*other\.txt" is not a directory; with a Hugging Face model directory as --weights/,
  );
  equal(await Deno.readTextFile(`${dir}/calib.txt`), text);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("init --help: one usage line and one --config/--help row, each method's options under its name", () => {
  const help = initUsage();
  equal(help.match(/^Usage:/gm)?.length, 1, help);
  equal(help.match(/^ {2}--config <file\.yaml> /gm)?.length, 1, help);
  equal(help.match(/^ {2}--help, -h /gm)?.length, 1, help);
  for (const m of Object.values(INIT_METHODS)) {
    const block = help.split("\n\n").find((b) => b.startsWith(`--method ${m.name} `));
    ok(block !== undefined, `a block for ${m.name}`);
    // One row per option, after the name and paper lines; a long flag has its text on a line of its own.
    const rows = block.split("\n").slice(2).join("\n").split(/\n(?= {2}--)/).filter((r) => r !== "");
    const shape = m.options.shape as Record<string, { description?: string }>;
    equal(rows.length, Object.keys(shape).length, block);
    Object.entries(shape).forEach(([key, field], i) => {
      const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      ok(rows[i].startsWith(`  ${flag} `) || rows[i].startsWith(`  ${flag},`), `${m.name}: ${rows[i]}`);
      ok(rows[i].includes(field.description!), `${m.name}: ${rows[i]}`);
    });
  }
});

Deno.test("init command passes on only the method options given, so their defaults cannot conflict", async () => {
  const rng = new TestRng(62);
  const dir = await Deno.makeTempDir();
  const w = await weightsFile(rng, dir);
  const base = ["--weights", `${dir}/w.safetensors`, "--out", `${dir}/out.safetensors`, "--device", "cpu"];
  await runInit(["--method", "loram", ...base, "--rank", "2", "--tracking-mode", "pissa"]);
  const { tensors, metadata } = await readSafetensors(`${dir}/out.safetensors`);
  deepEqual(JSON.parse(metadata.options), {
    rank: 2,
    alpha: 2,
    useRslora: false,
    seed: 0,
    trackingMode: "pissa",
  });
  const weight = w["blk.q.weight"];
  const direct = await loramInit(tensor(weight.data, { shape: weight.shape }) as F, {
    rank: 2,
    trackingMode: "pissa",
  });
  assertClose(toFloat32(tensors.get("blk.q.lora_B.weight")!), await direct.b.data(), {
    rtol: 1e-6,
    atol: 1e-7,
  });
  await rejects(
    runInit(["--method", "init-b", ...base, "--std", "0.01"]),
    /init-b: option "std" \(0\.01\) is the standard deviation of distribution "normal"/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("init command: an output on an input is a usage error, status 2 with the message alone", async () => {
  const dir = await Deno.makeTempDir();
  const weights = `${dir}/w.safetensors`;
  const bytes = crypto.getRandomValues(new Uint8Array(64));
  await Deno.writeFile(weights, bytes);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../cli/init.ts", import.meta.url).pathname, "--method", "pissa"]
      .concat(["--weights", weights, "--rank", "2", "--device", "cpu", "--out", weights]),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  equal(out.code, 2, stderr);
  match(
    stderr,
    /^--out ".*w\.safetensors" is the --weights input ".*w\.safetensors": writing it would replace/,
  );
  deepEqual(await Deno.readFile(weights), bytes, "the input is untouched");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("init command with a weights file refuses the Hugging Face options, which it would ignore", async () => {
  const dir = await Deno.makeTempDir();
  await weightsFile(new TestRng(62), dir);
  const base = ["--method", "lora", "--weights", `${dir}/w.safetensors`, "--out", `${dir}/o.safetensors`];
  // --targets blk.q adapted blk.v as well, and the calibration sizes were dropped without a word.
  await rejects(
    runInit([...base, "--device", "cpu", "--targets", "blk.q"]),
    /^ConfigError: --targets needs a Hugging Face model directory as --weights; ".*w\.safetensors" is a weights file/,
  );
  await rejects(
    runInit([...base, "--device", "cpu", "--calibration-batches", "2", "--calibration-seq-len", "16"]),
    /--calibration-batches, --calibration-seq-len need a Hugging Face model directory as --weights/,
  );
  await rejects(Deno.stat(`${dir}/o.safetensors`), Deno.errors.NotFound, "nothing written");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("init command on a Hugging Face directory refuses a --targets entry that matches no projection", async () => {
  const base = new URL("../fixtures/models/qwen2", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  // A misspelt "q_prj" was dropped: v_proj alone was adapted and the adapter written.
  await rejects(
    runInit(["--method", "lora", "--weights", base, "--targets", "v_proj,q_prj", "--out", `${dir}/adapter`]),
    /^ConfigError: --targets "q_prj" matches no projection of ".*qwen2"; its projections: wq, q_proj, wk, k_proj/,
  );
  await rejects(Deno.stat(`${dir}/adapter`), Deno.errors.NotFound, "nothing written");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("init command: calibration data a method would drop is refused; LoRAM's tracking mode calibrates on text", async () => {
  const base = new URL("../fixtures/models/qwen2", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  const rng = new TestRng(71);
  const words = ["the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "sun", "all", "day"];
  const text = Array.from({ length: 400 }, () => words[rng.int(0, words.length - 1)]);
  await Deno.writeTextFile(`${dir}/calib.txt`, text.join(" "));
  const seed = `${rng.int(0, 99)}`;
  const hf = (method: string[], out: string) =>
    runInit(
      [...method, "--weights", base, "--rank", "2", "--targets", "q_proj,v_proj", "--seed", seed, "--out"]
        .concat([`${dir}/${out}`, "--calibration-text", `${dir}/calib.txt`, "--calibration-seq-len", "16"]),
    );
  // PiSSA reads no calibration data: the text was accepted and dropped (a missing file too).
  await rejects(
    hf(["--method", "pissa"], "pissa"),
    /--calibration-text ".*calib\.txt" is given, but method "pissa"/,
  );
  // LoRAM tracking CorDA needs the activations: it stopped with "needs the layer's activations" though a text was
  // given. Tracking sets ν[B·A] = ν[B_ref·A_ref] of CorDA run with the same rank, seed and data.
  const nu = async (out: string, method: string[]) => {
    await hf(method, out);
    const { tensors } = await readSafetensors(`${dir}/${out}/adapter_model.safetensors`);
    const magnitudes: Record<string, number> = {};
    for (const [key, a] of tensors) {
      if (!key.endsWith("lora_A.weight")) continue;
      // An offset method is saved as [B0, −B0]·[A0; A0]: ν of B0·A0 from the first r rows of A and columns of B.
      const b = tensors.get(key.replace("lora_A", "lora_B"))!;
      const [r2, m] = a.shape;
      const n = b.shape[0];
      const [av, bv] = [toFloat32(a), toFloat32(b)];
      let sum = 0;
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < m; j++) {
          let v = 0;
          for (let k = 0; k < r2 / 2; k++) v += bv[i * r2 + k] * av[k * m + j];
          sum += v * v;
        }
      }
      magnitudes[key] = sum / (n * m);
    }
    return magnitudes;
  };
  const corda = await nu("corda", ["--method", "corda"]);
  const loram = await nu("loram", ["--method", "loram", "--tracking-mode", "corda"]);
  deepEqual(Object.keys(loram).sort(), Object.keys(corda).sort());
  equal(Object.keys(corda).length, 4);
  for (const [k, v] of Object.entries(corda)) {
    ok(v > 0, k);
    assertClose([loram[k]], [v], { rtol: 1e-4, atol: 0, what: k });
  }
  // A weights file's --activations or --grads that the method would drop is refused the same way.
  await weightsFile(rng, dir);
  await rejects(
    runInit(
      ["--method", "pissa", "--weights", `${dir}/w.safetensors`, "--activations", `${dir}/w.safetensors`]
        .concat(["--out", `${dir}/o.safetensors`]),
    ),
    /^ConfigError: --activations is given, but method "pissa" reads no calibration data/,
  );
  await Deno.remove(dir, { recursive: true });
});
