"""Golden fixtures from the reference implementation (transformers) for tessera's Hugging Face model loaders.

Writes tiny random checkpoints of every supported family and rotary variant into tests/fixtures/models/<name>/
(config.json and safetensors exactly as transformers saves them), each with expected.safetensors holding a batch
of token ids ("input_ids", I32 [2, 16]) and the logits transformers computes for it ("logits", F32 [2, 16, V]).
The tests compare tessera against these files, so neither CI nor a user needs Python.

Set-up, once (the venv stays out of git):
    python3 -m venv .venv-tools
    .venv-tools/bin/pip install --index-url file:///opt/pypi/simple --extra-index-url file:///opt/pypi-more/simple \
        "torch==2.13.0+cpu" transformers peft tokenizers safetensors
Run from the repository root:
    .venv-tools/bin/python tools/hf_fixtures.py            # rewrites tests/fixtures/models/
    .venv-tools/bin/python tools/hf_fixtures.py generate   # rewrites only generate_stops.json
    .venv-tools/bin/python tools/hf_fixtures.py generate_settings   # rewrites only generate_settings.json

Reference logits are computed in float32 (a bf16 checkpoint is read with dtype=float32, which widens its values
exactly), so they are the exact function of the stored weights.
"""

import json
import math
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import tokenizer_fixtures  # noqa: E402  (the tokenizers of tests/fixtures/tokenizers, built the same way)
OUT = ROOT / "tests" / "fixtures" / "models"

# Shapes shared by the fixtures: small enough that all of them together stay around a megabyte.
BASE = dict(
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
)

# Fixtures that carry a tokenizer (so they run on text: the example, generate, ppl): the vocabulary is the
# tokenizer's, padded to a multiple of 64 as Qwen pads its embedding.
TOKENIZERS = {"llama": "sentencepiece_legacy", "qwen2": "bytelevel_nobos"}

# name -> (config class name, config overrides, save dtype, legacy rewrite of config.json or None, shard size)
FIXTURES = {
    # Llama 2 style: default RoPE, untied classifier.
    "llama": ("LlamaConfig", dict(tie_word_embeddings=False), torch.float32, None, None),
    # Llama 3.x style: llama3 frequency scaling, theta 5e5, tied (as Llama-3.2-1B); head_dim 16 with 2 heads so the
    # frequencies fall in all three bands of the llama3 rule.
    "llama3": (
        "LlamaConfig",
        dict(
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=128,
            ),
            max_position_embeddings=1024,
        ),
        torch.float32,
        None,
        None,
    ),
    # The older spelling: top-level rope_theta and rope_scaling {"type": "linear"}, written by older transformers.
    "llama_linear_legacy": ("LlamaConfig", dict(tie_word_embeddings=False), torch.float32, "linear", None),
    # Llama with every bias, an explicit head_dim different from hidden/heads, bf16 weights in two shards.
    "llama_bias_bf16": (
        "LlamaConfig",
        dict(
            attention_bias=True,
            mlp_bias=True,
            head_dim=16,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=100000.0),
        ),
        torch.bfloat16,
        None,
        "60KB",
    ),
    # Qwen2 / Qwen2.5: q/k/v biases, tied (as Qwen2.5-0.5B), theta 1e6.
    "qwen2": (
        "Qwen2Config",
        dict(
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            use_sliding_window=False,
        ),
        torch.float32,
        None,
        None,
    ),
    # Qwen3: per-head q/k RMSNorm, head_dim 16 != hidden/heads = 8, tied.
    "qwen3": (
        "Qwen3Config",
        dict(
            head_dim=16,
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            use_sliding_window=False,
        ),
        torch.float32,
        None,
        None,
    ),
    # Mistral without a sliding window (as Mistral-7B-v0.3).
    "mistral": ("MistralConfig", dict(sliding_window=None, tie_word_embeddings=False), torch.float32, None, None),
}

# Sliding-window attention (a separate block: new fixtures go after the others, so existing seeds stay). The inputs
# are 16 tokens long, so a window of 5 hides most of each row's keys.
FIXTURES.update({
    # Mistral with a window on every layer.
    "mistral_sliding": ("MistralConfig", dict(sliding_window=5, tie_word_embeddings=False), torch.float32, None, None),
    # Qwen2 with use_sliding_window: layers from max_window_layers on slide (here layer 1), layer 0 is full.
    "qwen2_sliding": (
        "Qwen2Config",
        dict(
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            use_sliding_window=True,
            sliding_window=5,
            max_window_layers=1,
        ),
        torch.float32,
        None,
        None,
    ),
})

# YaRN (rope_type "yarn") and dynamic NTK, each with its own seed so that fixtures added to the table above keep theirs. With head_dim
# 16 the ramp between extrapolated and interpolated frequencies covers a few of the eight, so each fixture has
# frequencies on both sides of it and inside it. expected.safetensors also holds the reference's inverse frequencies
# ("rope_inv_freq") and, in its metadata, the factor that scales cos and sin ("rope_attention_scaling").
YARN_FIXTURES = {
    # As Qwen3's long-context configs: rope_parameters with factor 4 over an original context of 32, the default
    # betas (32, 1), truncation and attention factor (0.1·ln 4 + 1).
    "qwen3_yarn": (
        "Qwen3Config",
        dict(
            head_dim=16,
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=32
            ),
            use_sliding_window=False,
        ),
        torch.float32,
        None,
        None,
    ),
    # As Qwen2.5's configs: top-level rope_theta and rope_scaling {"type": "yarn"}, here with betas, mscale /
    # mscale_all_dim (which set the attention factor) and truncate false.
    "qwen2_yarn_legacy": (
        "Qwen2Config",
        dict(num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True, use_sliding_window=False),
        torch.float32,
        dict(
            rope_theta=100.0,
            type="yarn",
            factor=4.0,
            original_max_position_embeddings=32,
            beta_fast=16.0,
            beta_slow=2.0,
            mscale=0.8,
            mscale_all_dim=0.4,
            truncate=False,
        ),
        None,
    ),
    # An explicit attention_factor (which mscale no longer changes) and no original_max_position_embeddings (so
    # transformers takes max_position_embeddings).
    "llama_yarn_attention": (
        "LlamaConfig",
        dict(
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=False,
            rope_parameters=dict(
                rope_type="yarn", rope_theta=10000.0, factor=2.0, attention_factor=1.25, mscale=1.0, mscale_all_dim=2.0
            ),
        ),
        torch.float32,
        None,
        None,
    ),
    # Dynamic NTK: transformers changes the frequencies only for sequences longer than max_position_embeddings,
    # here 16, the length of the fixture's batch, so the batch fills the context and the frequencies are fixed.
    "llama_dynamic": (
        "LlamaConfig",
        dict(
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=False,
            max_position_embeddings=16,
            rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=3.5),
        ),
        torch.float32,
        None,
        None,
    ),
}
FIXTURES.update(YARN_FIXTURES)

# A pad token: transformers' embedding is nn.Embedding(padding_idx=pad_token_id), so the table's row for it gets no
# gradient from the lookup. The batch holds the pad token at every fourth position, and expected.safetensors also
# holds random "targets" (I32 [2, 16]) and the gradient of their mean cross-entropy with respect to the embedding
# table ("embed_grad", F32 [V, hidden]); tied, so the pad row still gets the classifier's share.
PAD_FIXTURES = {
    "llama_pad": (
        "LlamaConfig",
        dict(tie_word_embeddings=True, pad_token_id=3, bos_token_id=1, eos_token_id=2),
        torch.float32,
        None,
        None,
    ),
}
FIXTURES.update(PAD_FIXTURES)
SEEDS = {
    "qwen3_yarn": 100,
    "qwen2_yarn_legacy": 101,
    "llama_yarn_attention": 102,
    "llama_dynamic": 103,
    "llama_pad": 104,
}


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights large enough that logits vary (std 0.02 would make them almost constant)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def legacy_rewrite(path: Path, kind: str | dict) -> None:
    """Rewrites config.json into the pre-rope_parameters spelling (top-level rope_theta, rope_scaling): a type with
    factor 2 and theta 20000, or the rope_scaling dict given, whose "rope_theta" goes to the top level."""
    cfg = json.loads(path.read_text())
    cfg.pop("rope_parameters", None)
    if isinstance(kind, dict):
        scaling = dict(kind)
        cfg["rope_theta"] = scaling.pop("rope_theta")
        cfg["rope_scaling"] = scaling
    else:
        cfg["rope_theta"] = 20000.0
        cfg["rope_scaling"] = {"type": kind, "factor": 2.0}
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def write_fixture(name: str, seed: int) -> dict:
    cls_name, overrides, dtype, legacy, shard = FIXTURES[name]
    overrides = dict(overrides)
    if name in TOKENIZERS:
        tok, _ = tokenizer_fixtures.build(TOKENIZERS[name])
        overrides["vocab_size"] = math.ceil(tok.get_vocab_size(with_added_tokens=True) / 64) * 64
    cfg = getattr(transformers, cls_name)(**{**BASE, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    randomize(model, seed)
    model = model.to(dtype)
    out = OUT / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, **kwargs)
    for extra in ("generation_config.json",):
        (out / extra).unlink(missing_ok=True)
    if legacy:
        legacy_rewrite(out / "config.json", legacy)
    if name in TOKENIZERS:
        tokenizer_fixtures.save(TOKENIZERS[name], str(out))

    # The reference: transformers reads the directory back (so it interprets config.json as written) in float32.
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1000 + seed)
    ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=g)
    with torch.no_grad():
        logits = ref(input_ids=ids).logits.float()
    tensors = {"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous()}
    if name in PAD_FIXTURES:
        ids[:, ::4] = cfg.pad_token_id
        targets = torch.randint(0, cfg.vocab_size, (2, 16), generator=g)
        logits = ref(input_ids=ids).logits.float()
        torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1)).backward()
        grad = ref.model.embed_tokens.weight.grad
        tensors = {
            "input_ids": ids.to(torch.int32).contiguous(),
            "logits": logits.detach().contiguous(),
            "targets": targets.to(torch.int32).contiguous(),
            "embed_grad": grad.float().contiguous(),
        }
    metadata = {"transformers": transformers.__version__, "torch": torch.__version__}
    rotary = ref.model.rotary_emb
    if rotary.rope_type in ("yarn", "dynamic"):
        tensors["rope_inv_freq"] = rotary.inv_freq.float().contiguous()
        metadata["rope_attention_scaling"] = repr(float(rotary.attention_scaling))
    save_file(tensors, out / "expected.safetensors", metadata=metadata)
    loaded = AutoConfig.from_pretrained(out)
    return {
        "architecture": type(ref).__name__,
        "dtype": str(dtype).removeprefix("torch."),
        "rope_parameters": getattr(loaded, "rope_parameters", None),
        "max_abs_logit": float(logits.abs().max()),
        "files": sorted(p.name for p in out.iterdir()),
        "tokenizer": TOKENIZERS.get(name),
    }


# Where generation stops (a separate block; it reads the llama fixture and writes generate_stops.json beside the
# fixtures). transformers' generate stops at the eos_token_id of generation_config.json when the directory has one
# (config.json is then not consulted), else at config.json's; each case copies the llama fixture, writes the files
# it names, and records the greedy continuation transformers generates (the stop token last, when it stops).
GENERATE_PROMPT = "Once upon"
GENERATE_STEPS = 24


def generate_variant(src: Path, name: str, generation: dict | None, config_keys: dict | None) -> Path:
    """A copy of checkpoint `src` in /tmp with `generation` as its generation_config.json (none when None) and
    `config_keys` set in its config.json."""
    d = Path("/tmp") / f"tessera_generate_{name}"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src, d)
    if generation is not None:
        (d / "generation_config.json").write_text(json.dumps(generation) + "\n")
    if config_keys is not None:
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **config_keys}, indent=2) + "\n")
    return d


def write_generate_stops() -> None:
    src = OUT / "llama"
    tok = transformers.AutoTokenizer.from_pretrained(src)
    prompt = tok(GENERATE_PROMPT, return_tensors="pt").input_ids

    def greedy(d: Path, eos=...) -> tuple[list[int], object]:
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        kwargs = {} if eos is ... else {"eos_token_id": eos}
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=GENERATE_STEPS, do_sample=False, pad_token_id=0, **kwargs)
        return out[0, prompt.shape[1]:].tolist(), model.generation_config.eos_token_id

    free, _ = greedy(src, eos=None)
    # Stop ids that do come up: the first token new at step 3 or later, and one that never does.
    x = next(t for i, t in enumerate(free) if i >= 3 and t not in free[:i] and t not in (1, 2))
    never = next(t for t in range(3, 64) if t not in free)
    cases = [
        ("generation_config_list", {"bos_token_id": 1, "eos_token_id": [never, x]}, ...),
        ("generation_config_without_eos", {"bos_token_id": 1}, x),
        ("config_list", None, [2, x]),
        ("config_default", None, ...),
    ]
    records = []
    for name, generation, config_eos in cases:
        d = generate_variant(src, name, generation, None if config_eos is ... else {"eos_token_id": config_eos})
        generated, eos = greedy(d)
        shutil.rmtree(d)
        record = {"name": name, "generation_config": generation, "eos_token_id": eos, "generated": generated}
        if config_eos is not ...:
            record["config_eos_token_id"] = config_eos
        records.append(record)
    fixture = {
        "transformers": transformers.__version__,
        "model": "llama",
        "prompt": GENERATE_PROMPT,
        "prompt_ids": prompt[0].tolist(),
        "steps": GENERATE_STEPS,
        "cases": records,
    }
    (OUT / "generate_stops.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print("generate_stops", json.dumps([(r["name"], len(r["generated"])) for r in records]))


# Generation settings transformers' greedy generate applies (a separate block, writing generate_settings.json):
# repetition_penalty from generation_config.json, or from config.json when there is no such file; sampling keys
# under do_sample false change nothing.
SETTINGS_CASES = [
    ("generation_config_penalty", {"eos_token_id": None, "repetition_penalty": 1.3}, None),
    ("generation_config_penalty_below_one", {"eos_token_id": None, "repetition_penalty": 0.7}, None),
    ("generation_config_greedy_sampling_keys",
     {"eos_token_id": None, "do_sample": False, "temperature": 0.3, "top_k": 5, "top_p": 0.5,
      "repetition_penalty": 1.2}, None),
    ("config_penalty", None, {"repetition_penalty": 1.5, "eos_token_id": None}),
]


def write_generate_settings() -> None:
    src = OUT / "llama"
    tok = transformers.AutoTokenizer.from_pretrained(src)
    prompt = tok(GENERATE_PROMPT, return_tensors="pt").input_ids
    records = []
    for name, generation, config_keys in SETTINGS_CASES:
        d = generate_variant(src, name, generation, config_keys)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=GENERATE_STEPS, pad_token_id=0)
        shutil.rmtree(d)
        records.append({"name": name, "generation_config": generation, "config": config_keys,
                        "generated": out[0, prompt.shape[1]:].tolist()})
    fixture = {"transformers": transformers.__version__, "model": "llama", "prompt": GENERATE_PROMPT,
               "prompt_ids": prompt[0].tolist(), "steps": GENERATE_STEPS, "cases": records}
    (OUT / "generate_settings.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print("generate_settings", json.dumps([(r["name"], r["generated"][:10]) for r in records]))


def main() -> None:
    if sys.argv[1:] == ["generate"]:
        write_generate_stops()
        return
    if sys.argv[1:] == ["generate_settings"]:
        write_generate_settings()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {}
    for i, name in enumerate(FIXTURES):
        summary[name] = write_fixture(name, seed=SEEDS.get(name, i))
        print(name, json.dumps(summary[name]))
    (OUT / "README.md").write_text(
        "Written by `tools/hf_fixtures.py` with transformers "
        f"{transformers.__version__} and torch {torch.__version__}; do not edit by hand.\n\n"
        + "".join(f"- `{k}`: {v['architecture']}, {v['dtype']}, rope {json.dumps(v['rope_parameters'])}"
                  f"{', tokenizer ' + v['tokenizer'] if v['tokenizer'] else ''}\n"
                  for k, v in summary.items())
        + "\n`generate_stops.json`: transformers' greedy `generate` on `llama` with the stop ids of"
        " generation_config.json or config.json.\n"
    )
    write_generate_stops()
    write_generate_settings()


if __name__ == "__main__":
    main()
