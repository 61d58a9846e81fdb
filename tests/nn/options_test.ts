/**
 * Every options object of the layers, losses and functions of `lib/nn` and of the tensor constructors is checked:
 * an unknown key (a PyTorch option the library does not implement, such as `label_smoothing`) or a bad value is an
 * `OptionsError` naming the function, the key and the value, never silently ignored (which gave the plain loss
 * for `{ labelSmoothing: 0.5 }`, the sum for `{ reduction: "avg" }` and a LayerNorm with weights for
 * `{ elementwiseAffine: false }`).
 */
import { deepEqual, ok, throws } from "node:assert/strict";
import {
  arange,
  Attention,
  causalAttention,
  checkFinite,
  constantParam,
  crossEntropy,
  dropout,
  dropoutKey,
  Embedding,
  eye,
  full,
  LayerNorm,
  layerNorm,
  Linear,
  loadParameters,
  Mlp,
  mse,
  namedParameters,
  normalParam,
  ones,
  parameterCount,
  parameters,
  rand,
  randn,
  RMSNorm,
  rmsNorm,
  ropeInverseFrequencies,
  ropeTables,
  SwiGLU,
  tensor,
  TransformerBlock,
  uniformParam,
  zeros,
} from "../../mod.ts";
import { refusedOptions, TestRng } from "../_helpers.ts";

const rng = new TestRng(907);

const refused = refusedOptions;

const x = tensor([[1, 2, 3, 10]]);
const logits = tensor([[0, 1, 2], [2, 1, 0]]);
const targets = tensor([1, 0], { dtype: "i32" });
const qkv = () => randn([1, 3, 2, 4], { seed: rng.int(0, 999) });

Deno.test("losses refuse options they do not implement and reductions they do not know", async () => {
  // torch.nn.functional.cross_entropy(label_smoothing=0.5) differs from the plain loss: not silently the plain one.
  await refused(
    () => crossEntropy(logits, targets, { labelSmoothing: 0.5 } as never),
    /^crossEntropy: unknown option "labelSmoothing"$/,
  );
  await refused(
    () => crossEntropy(logits, targets, { reduction: "avg" } as never),
    /^crossEntropy: option "reduction" must be one of "mean", "sum", "none", got "avg"$/,
  );
  await refused(
    () => crossEntropy(logits, targets, { ignoreIndex: 1.5 }),
    /option "ignoreIndex" must be an integer/,
  );
  await refused(
    () => crossEntropy(logits, targets, { weights: 1 } as never),
    /option "weights" must be a tensor/,
  );
  await refused(
    () => mse(x, x, { reduction: "batchmean" } as never),
    /^mse: option "reduction" must be one of "mean", "sum", "none", got "batchmean"$/,
  );
  // Valid options keep their meaning: the sum of the two rows is twice their mean.
  const mean = await crossEntropy(logits, targets).item();
  const sum = await crossEntropy(logits, targets, { reduction: "sum" }).item();
  ok(Math.abs(sum - 2 * mean) < 1e-5, `sum ${sum} vs 2 × mean ${mean}`);
});

Deno.test("norms refuse unknown keys and bad epsilons; LayerNorm without affine has no parameters", async () => {
  await refused(() => rmsNorm(x, undefined, { addUnitOffset: true } as never), /^rmsNorm: unknown option/);
  await refused(
    () => layerNorm(x, undefined, undefined, { eps: -1 }),
    /^layerNorm: option "eps" must be >= 0, got -1$/,
  );
  await refused(
    () => new LayerNorm(4, { elementwiseAffine: false } as never),
    /^LayerNorm: unknown option "elementwiseAffine"$/,
  );
  await refused(
    () => new RMSNorm(4, { eps: NaN }),
    /^RMSNorm: option "eps" must be a finite number, got NaN$/,
  );
  await refused(() => new RMSNorm(4, { device: "gpu" } as never), /option "device" must be one of/);
  // A bias asked for beside affine: false was dropped: the layer had no parameters and normalised only.
  await refused(
    () => new LayerNorm(4, { affine: false, bias: true }),
    /^LayerNorm: option "bias" is true but "affine" is false/,
  );
  deepEqual(Object.keys(parameters(new LayerNorm(4, { affine: false }))), []);
  deepEqual(Object.keys(parameters(new LayerNorm(4, { affine: false, bias: false }))), []);
  deepEqual(Object.keys(parameters(new LayerNorm(4, { bias: false }))), ["weight"]);
});

Deno.test("attention refuses dropout and rope scaling it does not implement, and windows that are no size", async () => {
  const [q, k, v] = [qkv(), qkv(), qkv()];
  await refused(
    () => causalAttention(q, k, v, { dropout: 0.9, drop: 1 } as never),
    /^causalAttention: unknown options "dropout", "drop"$/,
  );
  await refused(() => causalAttention(q, k, v, { window: 0 }), /option "window" must be >= 1, got 0/);
  throws(
    () => causalAttention(q, k, v, { window: 2, causal: false }),
    { message: "causalAttention: a sliding window (2) needs causal attention" },
  );
  await refused(
    () => new Attention(8, { nHeads: 2, seed: 0, window: 1.5 }),
    /option "window" must be an integer/,
  );
  await refused(() => causalAttention(q, k, v, { scale: NaN }), /option "scale" must be a finite number/);
  await refused(
    () => new Attention(8, { nHeads: 2, seed: 0, ropeScaling: { type: "linear", factor: 4 } } as never),
    /^Attention: unknown option "ropeScaling"$/,
  );
  await refused(
    () => new Attention(8, { nHeads: 0, seed: 0 }),
    /^Attention: option "nHeads" must be >= 1, got 0$/,
  );
  // Without RoPE the base is never read: theta 5 and 5e5 gave the same layer.
  const theta = rng.int(1, 1e6);
  await refused(
    () => new Attention(8, { nHeads: 2, seed: 0, rope: false, ropeTheta: theta }),
    new RegExp(
      `^Attention: option "ropeTheta" is ${theta} but "rope" is false: without rotary embeddings it changes nothing$`,
    ),
  );
  ok(new Attention(8, { nHeads: 2, seed: 0, rope: true, ropeTheta: theta }));
  ok(new Attention(8, { nHeads: 2, seed: 0, rope: false }));
  // Without RoPE a start or tables given to forward were ignored: the output was that of start 0.
  const plain = new Attention(8, { nHeads: 2, seed: 0, rope: false });
  const start = rng.int(1, 100);
  const x = randn([1, 3, 8], { seed: rng.int(0, 2 ** 30) });
  await refused(
    () => plain.forward(x, { start }),
    new RegExp(
      `^Attention.forward: option "start" is ${start} but the layer was built with "rope": false: without`,
    ),
  );
  await refused(
    () => plain.forward(x, { rope: new Attention(8, { nHeads: 2, seed: 0 }).rope(3, start, x.device) }),
    /^Attention.forward: option "rope" is given \(rotary tables\) but the layer was built with "rope": false/,
  );
  ok(plain.forward(x));
  const attn = new Attention(8, { nHeads: 2, seed: 0 });
  await refused(
    () => attn.forward(randn([1, 2, 8]), { offset: 3 } as never),
    /^Attention.forward: unknown option/,
  );
  await refused(
    () => new TransformerBlock(8, { nHeads: 2, hiddenDim: 12, seed: 0, dropout: 0.1 } as never),
    /^TransformerBlock: unknown option "dropout"$/,
  );
  await refused(
    () => ropeTables(4, 2, { scaling: { type: "longrope", factor: 2 } } as never),
    /^ropeTables: option "scaling.type" must be one of "linear", "llama3", "yarn", "dynamic", got "longrope"$/,
  );
  await refused(() => ropeTables(4, 2, { start: -1 }), /option "start" must be >= 0, got -1/);
  await refused(
    () =>
      ropeInverseFrequencies(
        4,
        1e4,
        { type: "linear", factor: 2, originalMaxPositionEmbeddings: 8 } as never,
      ),
    /^ropeInverseFrequencies: scaling: unknown option "originalMaxPositionEmbeddings"$/,
  );
});

Deno.test("layers, initialisers, dropout and parameter helpers refuse unknown keys and bad values", async () => {
  await refused(() => new Linear(2, 2, { seed: 0, bais: false } as never), /^Linear: unknown option "bais"$/);
  await refused(
    () => new Linear(2, 2, { seed: 0.5 }),
    /^Linear: option "seed" must be an integer, got 0\.5$/,
  );
  await refused(() => new Embedding(4, 2, { seed: 0, paddingIdx: 0 } as never), /^Embedding: unknown option/);
  await refused(() => new Mlp([2, 2], { seed: 0, dropout: 0.1 } as never), /^Mlp: unknown option "dropout"$/);
  await refused(() => new SwiGLU(2, 4, { seed: 0, activation: "gelu" } as never), /^SwiGLU: unknown option/);
  await refused(
    () => uniformParam([2], 0, 1, { seed: 0, bias: true } as never),
    /^uniformParam: unknown option/,
  );
  await refused(
    () => normalParam([2], 1, { seed: NaN }),
    /^normalParam: option "seed" must be a finite number, got NaN$/,
  );
  await refused(() => constantParam([2], 1, { eps: 1 } as never), /^constantParam: unknown option "eps"$/);
  await refused(
    () => dropout(ones([6]), 0.5, { seed: 1, scale: false } as never),
    /^dropout: unknown option "scale"$/,
  );
  await refused(() => dropout(ones([6]), 0.5, { seed: 1, salt: 0.5 }), /option "salt" must be an integer/);
  await refused(
    () => dropoutKey(1, { device: "gpu" } as never),
    /^dropoutKey: option "device" must be one of/,
  );
  const layer = new Linear(2, 1, { seed: 0 });
  await refused(
    () => namedParameters(layer, { trainable: true } as never),
    /^namedParameters: unknown option/,
  );
  await refused(() => parameters(layer, { filter: 3 } as never), /^parameters: option "filter" must be/);
  await refused(() => parameterCount(layer, { frozen: true } as never), /^parameterCount: unknown option/);
  await refused(
    () => loadParameters(layer, {}, { strict: "no" } as never),
    /option "strict" must be true or false/,
  );
  await refused(
    () => checkFinite([], { what: "w", where: "x" } as never),
    /^checkFinite: unknown option "where"$/,
  );
  // Valid options keep their meaning.
  deepEqual(Object.keys(parameters(new Linear(2, 1, { seed: 0, bias: false }))), ["weight"]);
  deepEqual(await dropout(ones([4]), 0.5, { seed: 1, training: false }).toArray(), [1, 1, 1, 1]);
});

Deno.test("tensor constructors refuse unknown keys, unknown dtypes and devices, and a dtype rand cannot make", async () => {
  await refused(() => tensor([1, 2], { dtpye: "i32" } as never), /^tensor: unknown option "dtpye"$/);
  await refused(() => tensor([1], { device: "gpu" } as never), /^tensor: option "device" must be one of/);
  await refused(() => zeros([2], { dtype: "f64" } as never), /^zeros: option "dtype" must be one of/);
  await refused(() => ones([2], { requiresGrad: true } as never), /^ones: unknown option "requiresGrad"$/);
  await refused(() => full([2], 1, { fill: 1 } as never), /^full: unknown option "fill"$/);
  await refused(() => arange(3, undefined, 1, { endpoint: true } as never), /^arange: unknown option/);
  await refused(() => eye(2, 2, { k: 1 } as never), /^eye: unknown option "k"$/);
  // rand and randn make f32 only: an i32 request gave f32 values silently.
  await refused(
    () => rand([2], { dtype: "i32" } as never),
    /^rand: option "dtype" must be one of "f32", got "i32"$/,
  );
  await refused(() => randn([2], { seed: 1.5 }), /^randn: option "seed" must be an integer, got 1\.5$/);
  deepEqual(await tensor([1, 2], { dtype: "i32" }).toArray(), [1, 2]);
});

Deno.test("blocks built from given layers refuse options that describe new parts, and sizes the parts do not have", async () => {
  const dim = 8;
  const ffn = new SwiGLU(dim, 12, { seed: 1 });
  const attention = new Attention(dim, { nHeads: 2, nKvHeads: 1, seed: 2 });
  const parts = { w1: ffn.w1, w2: ffn.w2, w3: ffn.w3 };
  await refused(
    () => new SwiGLU(dim, 12, { layers: parts, bias: true }),
    /option "bias" describes new parts/,
  );
  const proj = { wq: attention.wq, wk: attention.wk, wv: attention.wv, wo: attention.wo };
  await refused(
    () => new Attention(dim, { nHeads: 2, nKvHeads: 1, layers: proj, qkNorm: true, headDim: 4 }),
    /option "headDim" describes new parts.*option "qkNorm" describes new parts/,
  );
  const layers = {
    attention_norm: new RMSNorm(dim),
    attention,
    ffn_norm: new RMSNorm(dim),
    feed_forward: ffn,
  };
  await refused(
    () => new TransformerBlock(dim, { nHeads: 2, hiddenDim: 12, layers, normEps: 1e-6 }),
    /option "normEps" describes new parts/,
  );
  await refused(
    () => new TransformerBlock(dim, { nHeads: 4, nKvHeads: 1, hiddenDim: 16, layers }),
    /option "nHeads" is 4, but the given layers have 2; option "hiddenDim" is 16, but the given layers have 12/,
  );
  // Consistent sizes build the block around the parts.
  ok(new TransformerBlock(dim, { nHeads: 2, nKvHeads: 1, hiddenDim: 12, layers }).feed_forward === ffn);
});
