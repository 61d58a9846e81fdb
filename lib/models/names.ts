/**
 * Module and parameter names of `LlamaLM` in Hugging Face's convention (`transformers` module paths), and
 * back. Kept apart from the checkpoint code so that the model itself can answer LoRA's name matching.
 *
 * @module
 */

/** tessera module path → Hugging Face module path inside one decoder layer. */
const LAYER_MODULES: Record<string, string> = {
  "attention.wq": "self_attn.q_proj",
  "attention.wk": "self_attn.k_proj",
  "attention.wv": "self_attn.v_proj",
  "attention.wo": "self_attn.o_proj",
  "attention.q_norm": "self_attn.q_norm",
  "attention.k_norm": "self_attn.k_norm",
  "feed_forward.w1": "mlp.gate_proj",
  "feed_forward.w2": "mlp.down_proj",
  "feed_forward.w3": "mlp.up_proj",
  "attention_norm": "input_layernorm",
  "ffn_norm": "post_attention_layernorm",
};
const TOP_MODULES: Record<string, string> = {
  tok_embeddings: "model.embed_tokens",
  norm: "model.norm",
  output: "lm_head",
};

/**
 * Tessera module path → the `transformers` module path (`layers.3.attention.wq` → `model.layers.3.self_attn.q_proj`),
 * or `undefined` for a path that is not a module of these models.
 *
 * @example
 * ```ts
 * import { hfModulePath } from "./names.ts";
 * hfModulePath("layers.3.feed_forward.w1"); // "model.layers.3.mlp.gate_proj"
 * ```
 */
export function hfModulePath(path: string): string | undefined {
  if (Object.hasOwn(TOP_MODULES, path)) return TOP_MODULES[path];
  const m = /^layers\.(\d+)\.(.+)$/.exec(path);
  if (m === null || !Object.hasOwn(LAYER_MODULES, m[2])) return undefined;
  return `model.layers.${m[1]}.${LAYER_MODULES[m[2]]}`;
}

/**
 * The inverse of {@link hfModulePath}: `model.layers.3.self_attn.q_proj` → `layers.3.attention.wq`.
 *
 * @example
 * ```ts
 * import { modulePathFromHf } from "./names.ts";
 * modulePathFromHf("model.layers.0.mlp.down_proj"); // "layers.0.feed_forward.w2"
 * ```
 */
export function modulePathFromHf(path: string): string | undefined {
  for (const [ours, theirs] of Object.entries(TOP_MODULES)) if (path === theirs) return ours;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(path);
  if (m === null) return undefined;
  for (const [ours, theirs] of Object.entries(LAYER_MODULES)) {
    if (m[2] === theirs) return `layers.${m[1]}.${ours}`;
  }
  return undefined;
}

/** Tessera parameter name → Hugging Face tensor name, or `undefined` for a name that is not a model parameter. */
export function hfName(name: string): string | undefined {
  const m = /^(.+)\.(weight|bias)$/.exec(name);
  if (m === null) return undefined;
  const module = hfModulePath(m[1]);
  return module === undefined ? undefined : `${module}.${m[2]}`;
}

/** Short names of the projections in both conventions (`q_proj` → `wq`), for LoRA `targetModules`. */
export const HF_PROJECTION_NAMES: Readonly<Record<string, string>> = {
  q_proj: "wq",
  k_proj: "wk",
  v_proj: "wv",
  o_proj: "wo",
  gate_proj: "w1",
  up_proj: "w3",
  down_proj: "w2",
};

/**
 * Reorders the rows of a tessera `wq`/`wk` (`[nHeads·hd, in]`, interleaved RoPE pairs) into Hugging Face's
 * layout (rotate-half): within each head, rows `0, 2, 4, ..., 1, 3, 5, ...`. A bias or a per-head norm gain is
 * the case `inFeatures = 1`.
 *
 * @example
 * ```ts
 * import { ropeRowsFromHf, ropeRowsToHf } from "./names.ts";
 * const w = Float32Array.from({ length: 8 }, (_, i) => i); // one head of size 4, in = 2
 * const hf = ropeRowsToHf(w, 1, 2); // rows 0, 2, 1, 3: [0, 1, 4, 5, 2, 3, 6, 7]
 * ropeRowsFromHf(hf, 1, 2); // back to [0, 1, ..., 7]
 * ```
 */
export function ropeRowsToHf(w: Float32Array, nHeads: number, inFeatures: number): Float32Array {
  return permuteRows(w, nHeads, inFeatures, true);
}

/** The inverse of {@link ropeRowsToHf}: Hugging Face `q_proj`/`k_proj` rows back to tessera's interleaved layout. */
export function ropeRowsFromHf(w: Float32Array, nHeads: number, inFeatures: number): Float32Array {
  return permuteRows(w, nHeads, inFeatures, false);
}

function permuteRows(w: Float32Array, nHeads: number, inF: number, toHf: boolean): Float32Array {
  const rows = w.length / inF;
  const hd = rows / nHeads;
  if (!Number.isInteger(rows) || !Number.isInteger(hd) || hd % 2 !== 0) {
    throw new RangeError(
      `RoPE row permutation: ${w.length} values are not ${nHeads} heads of an even size times ${inF} columns`,
    );
  }
  const half = hd / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const interleaved = (h * hd + 2 * i + j) * inF;
        const halves = (h * hd + j * half + i) * inF;
        const [from, to] = toHf ? [interleaved, halves] : [halves, interleaved];
        out.set(w.subarray(from, from + inF), to);
      }
    }
  }
  return out;
}
