"""Golden adapter fixtures from PEFT, and the check of adapters tessera saves, for tessera's adapter files.

Writing fixtures (run tools/hf_fixtures.py first: the adapters sit on its tiny Llama and Qwen2 checkpoints):

    .venv-tools/bin/python tools/peft_fixtures.py            # rewrites tests/fixtures/adapters/
    .venv-tools/bin/python tools/peft_fixtures.py --only llama_lm_head   # writes that one fixture alone

For each base in (llama, qwen2) it saves, with PEFT itself, adapters of four kinds into
tests/fixtures/adapters/<base>_<kind>/ (adapter_config.json + adapter_model.safetensors as PEFT writes them):
  - lora:     r=4 on all seven projections, lora_dropout 0.05, A and B random (B non-zero);
  - rslora:   rsLoRA with a rank_pattern and an alpha_pattern (short and full-path keys), q/k/v/o;
  - dora:     DoRA on q_proj, v_proj and down_proj, A, B and the magnitudes perturbed;
  - pissa_2r: PiSSA, A and B perturbed as training would, saved with PEFT's conversion to a rank-2r LoRA of the
              original base (path_initial_model_for_weight_conversion).
and, for llama only:
  - patterns: rank_pattern and alpha_pattern keys that overlap (a regex, a partial path, a last name, an anchored
              path), so the first key in the file's order that matches decides, as PEFT's get_pattern_key does; the
              keys are given in sorted order, the order PEFT writes them in (and so reads them back);
  - lm_head:  v_proj and lm_head, whose files PEFT writes with lm_head's base weight
              ("lm_head.base_layer.weight", as for any targeted embedding layer), moved off the original base's so
              that the reference shows PEFT loading it over the base;
  - pissa_raw, olora_raw: PiSSA (r=4, alpha 8, a rank_pattern) and OLoRA (whose residual depends on the scale, alpha
              8 at r=4), A and B perturbed as training would, saved by plain save_pretrained (init_lora_weights kept,
              the residual base not saved): PeftModel.from_pretrained re-runs the init on the original base, so the
              reference is the trained model. Small: expected.safetensors holds the first 4 input ids and their
              logits only;
  - mica:     MiCA (init_lora_weights "mica": B the minor left singular vectors, frozen), A perturbed; its
              expected.safetensors metadata "trainable" lists (as a JSON array) the parameters PEFT trains after
              PeftModel.from_pretrained(base, dir, is_trainable=True), without "base_model.model." and ".default";
  - layers_int, layers_list, layers_pattern: adapters on some layers only (layers_to_transform): an int and no
              layers_pattern (the first numbered segment of a path is the layer index); a list with a list of
              layers_patterns (the first that matches a path gives its index) and, in target_modules, one full path
              of another layer (an exact name is adapted whatever its layer); a list with layers_pattern a string.
              Small, as pissa_raw.
Each directory also holds expected.safetensors: "input_ids" (the base fixture's), "logits" of
PeftModel.from_pretrained(base, dir) in float32, and "merged.<module>.weight" for every adapted module, the weights
merge_and_unload() gives.

Checking adapters tessera wrote (a tessera test writes them when TESSERA_PEFT_EXPORT is set):

    TESSERA_PEFT_EXPORT=/tmp/peft-export deno test -A tests/lora/peft_export_test.ts
    .venv-tools/bin/python tools/peft_fixtures.py --check /tmp/peft-export

Every subdirectory holding adapter_config.json and tessera_expected.safetensors ("input_ids", "logits" of tessera's
adapted model) is loaded by PeftModel.from_pretrained onto the original base named by base_model_name_or_path; the
script prints a table of the largest logit difference relative to the largest |logit| and exits 1 when one is above
1e-4.

Install the tools as tools/hf_fixtures.py says.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "fixtures" / "models"
OUT = ROOT / "tests" / "fixtures" / "adapters"
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base_model(name: str) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(MODELS / name, dtype=torch.float32).eval()


def perturb(model: torch.nn.Module, seed: int, scale: float) -> None:
    """Moves every adapter tensor by seeded noise, as training would (B becomes non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name and p.requires_grad:  # MiCA's frozen B stays as initialised
                p.add_(scale * torch.randn(p.shape, generator=g))


def config_for(kind: str) -> LoraConfig:
    if kind == "lora":
        return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=ALL)
    if kind == "rslora":
        return LoraConfig(
            r=4,
            lora_alpha=6,
            use_rslora=True,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            rank_pattern={"v_proj": 2, "model.layers.1.self_attn.q_proj": 8},
            alpha_pattern={"o_proj": 3},
        )
    if kind == "dora":
        return LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "down_proj"])
    if kind == "pissa_2r":
        return LoraConfig(r=4, lora_alpha=4, init_lora_weights="pissa", target_modules=["q_proj", "k_proj", "v_proj", "gate_proj"])
    if kind == "patterns":
        ranks = {r"^model\.layers\.0\.self_attn\.v_proj": 5, r"^model\.layers\.\d\.self_attn\.(q|k)_proj": 6,
                 "layers.1.self_attn.q_proj": 2, "q_proj": 3}
        alphas = {r"(?:o|v)_proj": 9, "k_proj": 12, r"self_attn\.k_proj": 3}
        return LoraConfig(r=4, lora_alpha=6, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          rank_pattern=dict(sorted(ranks.items())), alpha_pattern=dict(sorted(alphas.items())))
    if kind == "lm_head":
        return LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj", "lm_head"])
    if kind == "pissa_raw":
        return LoraConfig(r=4, lora_alpha=8, init_lora_weights="pissa", target_modules=["q_proj", "v_proj"],
                          rank_pattern={"v_proj": 2})
    if kind == "olora_raw":
        return LoraConfig(r=4, lora_alpha=8, init_lora_weights="olora", target_modules=["k_proj", "o_proj"])
    if kind == "mica":
        return LoraConfig(r=4, lora_alpha=8, init_lora_weights="mica", target_modules=["q_proj", "v_proj", "up_proj"])
    if kind == "layers_int":
        return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=1)
    if kind == "layers_list":
        return LoraConfig(r=4, lora_alpha=8, target_modules=["k_proj", "o_proj", "model.layers.1.mlp.up_proj"],
                          layers_to_transform=[0], layers_pattern=["blocks", "layers"])
    if kind == "layers_pattern":
        return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "gate_proj"], layers_to_transform=[1],
                          layers_pattern="layers")
    raise ValueError(kind)


BASES = ["llama", "qwen2"]
KINDS = ["lora", "rslora", "dora", "pissa_2r"]
# Each fixture's seed: 10 * base index + kind index for the kinds of both bases, then those of llama alone.
SEEDS = {f"{b}_{k}": 10 * i + j for i, b in enumerate(BASES) for j, k in enumerate(KINDS)}
SEEDS |= {"llama_mica": 4, "llama_patterns": 5, "llama_lm_head": 6, "llama_pissa_raw": 7, "llama_olora_raw": 8,
          "llama_layers_int": 9, "llama_layers_list": 14, "llama_layers_pattern": 15}
# Fixtures kept small: the first 4 input ids and their logits only.
SMALL = ["pissa_raw", "olora_raw", "layers_int", "layers_list", "layers_pattern"]


def write_fixture(base: str, kind: str, seed: int) -> dict:
    torch.manual_seed(seed)
    model = get_peft_model(base_model(base), config_for(kind))
    out = OUT / f"{base}_{kind}"
    if out.exists():
        shutil.rmtree(out)
    if kind == "pissa_2r":
        initial = Path(tempfile.mkdtemp())
        model.peft_config["default"].init_lora_weights = True  # the initial adapter, saved as plain data
        model.save_pretrained(initial)
        model.peft_config["default"].init_lora_weights = "pissa"
        perturb(model, seed, 0.02)
        model.save_pretrained(out, path_initial_model_for_weight_conversion=str(initial))
        shutil.rmtree(initial)
    else:
        perturb(model, seed, 0.1)
        if kind == "lm_head":
            head = model.base_model.model.lm_head.base_layer.weight
            with torch.no_grad():
                head.add_(0.05 * torch.randn(head.shape, generator=torch.Generator().manual_seed(seed + 1)))
        model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)

    # The reference: PEFT loads the directory onto a fresh copy of the original base.
    loaded = PeftModel.from_pretrained(base_model(base), out).eval()
    ids = load_file(MODELS / base / "expected.safetensors")["input_ids"].long()
    if kind in SMALL:
        ids = ids[:1, :4]
    with torch.no_grad():
        logits = loaded(input_ids=ids).logits.float()
    if kind in SMALL:
        save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous()},
                  out / "expected.safetensors", metadata={"peft": peft.__version__})
        return {"max_abs_logit": float(logits.abs().max())}
    merged = loaded.merge_and_unload()
    tensors = {"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous()}
    adapted = {k.removeprefix("base_model.model.").rsplit(".lora_A.weight", 1)[0]
               for k in load_file(out / "adapter_model.safetensors") if k.endswith("lora_A.weight")}
    state = merged.state_dict()
    for module in sorted(adapted):
        tensors[f"merged.{module}.weight"] = state[f"{module}.weight"].float().contiguous()
    metadata = {"peft": peft.__version__, "transformers": transformers.__version__}
    if kind == "mica":
        trainable = PeftModel.from_pretrained(base_model(base), out, is_trainable=True)
        metadata["trainable"] = json.dumps(sorted(
            n.removeprefix("base_model.model.").replace(".default", "")
            for n, p in trainable.named_parameters() if p.requires_grad))
    save_file(tensors, out / "expected.safetensors", metadata=metadata)
    return {"modules": len(adapted), "max_abs_logit": float(logits.abs().max())}


def check(directory: Path) -> int:
    rows, failed = [], 0
    for sub in sorted(p for p in directory.iterdir() if (p / "tessera_expected.safetensors").exists()):
        cfg = json.loads((sub / "adapter_config.json").read_text())
        base_path = Path(cfg["base_model_name_or_path"])
        if not base_path.is_absolute():
            base_path = ROOT / base_path
        expected = load_file(sub / "tessera_expected.safetensors")
        try:
            model = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval(), sub
            ).eval()
            with torch.no_grad():
                logits = model(input_ids=expected["input_ids"].long()).logits.float()
            err = float((logits - expected["logits"]).abs().max() / expected["logits"].abs().max())
            ok = err <= 1e-4
            note = f"{err:.2e}"
        except Exception as e:  # a file PEFT refuses is a failure of the check, reported with PEFT's message
            ok, note = False, f"PEFT refused it: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        failed += not ok
        rows.append((sub.name, cfg.get("r"), cfg.get("use_rslora"), cfg.get("use_dora"), note, "ok" if ok else "FAIL"))
    print(f"PEFT {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
    print("| adapter | r | rsLoRA | DoRA | max |Δlogit| / max |logit| | verdict |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    if not rows:
        print(f"no adapter with tessera_expected.safetensors under {directory}")
        return 1
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", type=Path, help="check adapters tessera saved under this directory")
    parser.add_argument("--only", help="write this one fixture (<base>_<kind>) and leave the others")
    args = parser.parse_args()
    if args.check is not None:
        sys.exit(check(args.check))
    if args.only is not None and args.only not in SEEDS:
        parser.error(f"--only: no fixture {args.only!r}; the fixtures are {', '.join(SEEDS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, seed in SEEDS.items():
        if args.only is None or name == args.only:
            base, kind = name.split("_", 1)
            print(name, write_fixture(base, kind, seed=seed))


if __name__ == "__main__":
    main()
