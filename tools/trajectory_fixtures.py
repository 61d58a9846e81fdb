"""Golden fine-tuning trajectories (LoRA, and full) from transformers + PEFT + torch, for tessera's Trainer.

Run from the repository root (after tools/hf_fixtures.py, whose tiny checkpoints are the bases; install the tools as
that script says):

    .venv-tools/bin/python tools/trajectory_fixtures.py     # rewrites tests/fixtures/trajectories/

The output is the same bytes on every run (seeded generators, one thread, deterministic kernels).

For each of CASES it attaches a PEFT LoRA (rank 4, lora_dropout 0) to a base of tests/fixtures/models, moves A and B off
their initialisation by seeded noise (B non-zero, so the gradients reach A), saves that adapter with PEFT
(tests/fixtures/trajectories/<case>/adapter_config.json and adapter_model.safetensors: the start tessera loads), then
runs K = 8 steps of torch.optim.AdamW over the adapter with a warm-up + decay schedule and global-norm clipping on 8
fixed batches whose labels hold -100 at some positions, calling the model as transformers' Trainer does
(model(input_ids, labels=labels): the labels are shifted inside, and the loss is the mean over kept positions).
expected.safetensors holds:
  - "input_ids", "labels": I32 [K·m, batch, T], the m micro-batches of each step in order (m = 1: the batch of each
    step; m is the case's "accumulate", 1 where absent);
  - "loss", "grad_norm": F32 [K], each step's loss (with m > 1 the mean of its micro-batches' losses) and the global
    gradient norm before clipping (clip_grad_norm_'s return value);
  - "lr": F64 [K], the learning rate each step used (of the first group: A's with LoRA+), "lr_b" that of B (the same
    without LoRA+), and "hf_lr": F64 [K], the one transformers' get_*_schedule_with_warmup gives the same step (see
    below);
  - "final.<key>": the adapter's tensors after step K, keyed as in adapter_model.safetensors;
and its metadata "options" (JSON) the run's settings.

FULL_CASES are full fine-tunes (tests/train/full_trajectory_test.ts): every parameter of the base trains, starting
from the base's own weights in tests/fixtures/models (nothing else is saved for the start), with torch.optim.AdamW in
the two groups transformers' Trainer makes by default (Trainer.get_decay_parameter_names: no weight decay on biases
and norm gains). Their expected.safetensors has no "lr_b" (both groups run at the same rate), the input ids at -100
labels of row 1 are the base's pad token where it has one, "final.<name>" holds every parameter after step K under
transformers' names (a tied table once, as model.embed_tokens.weight), and "options" adds "tied" and "no_decay" (the
names of the undecayed parameters).

The schedule: transformers' LambdaLR is stepped after each optimiser step, so step k (1-based) uses the factor
f(k - 1) of get_*_schedule_with_warmup, which is 0 at the first step. tessera's schedules (lib/nn/optim/schedule.ts)
give step k the factor f(k) by design ("the first step is not wasted at zero"). The trajectory follows tessera's
convention (a LambdaLR of f(k)), so that the rest of the update can be compared; "hf_lr" records transformers'
rates so the test can state the one-step offset.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "trajectories"
STEPS, BATCH, T = 8, 2, 12

CASES = {
    # q_proj's rows are in the rotary layout tessera permutes; alpha / r = 2; cosine decay after 2 warm-up steps.
    "llama": dict(base="llama", seed=1, targets=["q_proj", "v_proj"], alpha=8, rslora=False, schedule="cosine",
                  warmup=2, lr=2e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1, clip=1.7),
    # Qwen3's k_proj (with its q/k RMSNorm) and an MLP projection, rsLoRA (alpha / sqrt(r) = 3); linear decay after
    # 3 warm-up steps.
    "qwen3": dict(base="qwen3", seed=2, targets=["k_proj", "down_proj"], alpha=6, rslora=True, schedule="linear",
                  warmup=3, lr=3e-2, betas=(0.8, 0.99), eps=1e-5, weight_decay=0.05, clip=2.0),
    # DoRA on Qwen2 (q/k/v biases) with PEFT's LoRA+ optimiser: B and the magnitudes at 4 x lr, weight decay on both
    # groups; cosine decay to 0 with no warm-up.
    "qwen2_dora_loraplus": dict(base="qwen2", seed=3, targets=["q_proj", "v_proj"], alpha=8, rslora=False, dora=True,
                                loraplus_ratio=4.0, schedule="cosine", warmup=0, lr=1e-2, betas=(0.9, 0.999),
                                eps=1e-8, weight_decay=0.02, clip=1.5),
    # Gradient accumulation over 3 micro-batches per step on Llama: each micro-batch's loss (the mean over its kept
    # positions) divided by 3 before its backward, as transformers' Trainer did before 4.46 and as tessera's
    # `accumulate` does: every micro-batch weighs the same, whatever its count of kept labels (transformers since 4.46
    # divides the summed token losses by the step's total count instead). Linear decay after 2 warm-up steps.
    "llama_accumulate": dict(base="llama", seed=4, targets=["q_proj", "v_proj"], alpha=8, rslora=False,
                             schedule="linear", warmup=2, lr=2e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1,
                             clip=0.9, accumulate=3),
}

# Full fine-tuning: every parameter of the base trains (embeddings, norms, projections, biases, the head), with
# torch.optim.AdamW in two groups split as transformers' Trainer splits them by default
# (Trainer.get_decay_parameter_names: no weight decay on biases and norm gains, decay on everything else).
FULL_CASES = {
    # Tied embeddings (the table is also the classifier) and a padding token: nn.Embedding(padding_idx=3) gives the
    # pad row no gradient through the lookup, only through the head; row 1's -100 tail holds the pad id. Cosine
    # decay after 2 warm-up steps.
    "llama_pad_full": dict(base="llama_pad", seed=5, schedule="cosine", warmup=2, lr=3e-3, betas=(0.9, 0.95),
                           eps=1e-6, weight_decay=0.1, clip=6.0),
    # An untied head and biases on every projection (stored in bf16, read widened to float32); linear decay after 1
    # warm-up step.
    "llama_bias_full": dict(base="llama_bias_bf16", seed=6, schedule="linear", warmup=1, lr=2e-3,
                            betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, clip=5.4),
}


def batches(seed: int, vocab: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n batches of random ids; labels are the ids with -100 on a prompt (row 0) and on padding (row 1)."""
    g = torch.Generator().manual_seed(1000 + seed)
    ids = torch.randint(0, vocab, (n, BATCH, T), generator=g)
    labels = ids.clone()
    for k in range(n):
        labels[k, 0, : 2 + k % 3] = -100
        labels[k, 1, T - 1 - k % 4 :] = -100
    return ids, labels


def schedule_factor(c: dict):
    """transformers' get_*_schedule_with_warmup factor f(k) of the case's schedule over STEPS steps."""
    make = {"cosine": transformers.get_cosine_schedule_with_warmup,
            "linear": transformers.get_linear_schedule_with_warmup}[c["schedule"]]
    return make(torch.optim.SGD([torch.zeros(1)], lr=1.0), c["warmup"], STEPS).lr_lambdas[0]


def train(model, params: list, opt, c: dict, ids: torch.Tensor, labels: torch.Tensor,
          micro: int = 1) -> tuple[dict, dict]:
    """Runs the case's STEPS steps over `params` with `opt` and the case's schedule and clipping, step k (0-based)
    over batches k·micro .. k·micro + micro - 1, each micro-batch's loss divided by micro before its backward; returns
    the run's tensors of expected.safetensors but the finals ("lr_b": the last group's rates, LoRA+'s B group), and
    the losses and norms to print."""
    factor = schedule_factor(c)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(s + 1))
    losses, norms, lrs, lrs_b = [], [], [], []
    model.train()
    for k in range(STEPS):
        step_losses = []
        for j in range(micro):
            loss = model(input_ids=ids[k * micro + j], labels=labels[k * micro + j]).loss
            (loss / micro).backward()
            step_losses.append(loss.item())
        losses.append(sum(step_losses) / micro)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, c["clip"])))
        lrs.append(opt.param_groups[0]["lr"])
        lrs_b.append(opt.param_groups[-1]["lr"])
        opt.step()
        sched.step()
        opt.zero_grad()
    tensors = {
        "input_ids": ids.to(torch.int32).contiguous(),
        "labels": labels.to(torch.int32).contiguous(),
        "loss": torch.tensor(losses, dtype=torch.float32),
        "grad_norm": torch.tensor(norms, dtype=torch.float32),
        "lr": torch.tensor(lrs, dtype=torch.float64),
        "lr_b": torch.tensor(lrs_b, dtype=torch.float64),
        "hf_lr": torch.tensor([c["lr"] * factor(k) for k in range(STEPS)], dtype=torch.float64),
    }
    return tensors, {"loss": [round(x, 4) for x in losses], "grad_norm": [round(x, 4) for x in norms]}


def write_case(name: str, c: dict) -> dict:
    torch.manual_seed(c["seed"])
    # A relative path, so that adapter_config.json's base_model_name_or_path does not depend on the checkout.
    base = AutoModelForCausalLM.from_pretrained(f"tests/fixtures/models/{c['base']}", dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=c["alpha"], lora_dropout=0.0, target_modules=c["targets"],
                        use_rslora=c["rslora"], use_dora=c.get("dora", False))
    model = get_peft_model(base, config)
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(c["seed"])
    with torch.no_grad():
        for p in params:  # A moves off its init, B becomes non-zero, as after some training
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    out = OUT / name
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        out.mkdir(parents=True)
        shutil.copy(Path(tmp) / "adapter_model.safetensors", out)
        # target_modules is a set inside PEFT, saved in the order of Python's string hashing, which changes from run
        # to run: it is written sorted, in PEFT's own format (sorted keys, indent 2).
        saved = json.loads((Path(tmp) / "adapter_config.json").read_text())
        saved["target_modules"] = sorted(saved["target_modules"])
        (out / "adapter_config.json").write_text(json.dumps(saved, indent=2, sort_keys=True))
    keys = list(load_file(out / "adapter_model.safetensors"))

    adam = dict(lr=c["lr"], betas=c["betas"], eps=c["eps"])
    if "loraplus_ratio" in c:
        opt = create_loraplus_optimizer(model, torch.optim.AdamW, loraplus_lr_ratio=c["loraplus_ratio"],
                                        loraplus_weight_decay=c["weight_decay"], **adam)
    else:
        opt = torch.optim.AdamW(params, weight_decay=c["weight_decay"], **adam)
    # Micro-batches per step (gradient accumulation).
    micro = c.get("accumulate", 1)
    ids, labels = batches(c["seed"], base.config.vocab_size, STEPS * micro)
    tensors, printed = train(model, params, opt, c, ids, labels, micro)
    state = peft.get_peft_model_state_dict(model)
    tensors |= {f"final.{k}": state[k].detach().float().contiguous() for k in keys}
    options = {k: v for k, v in c.items() if k != "seed"} | {"steps": STEPS, "rank": 4}
    versions = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
                "peft": peft.__version__}
    save_file(tensors, out / "expected.safetensors", metadata={"options": json.dumps(options | versions)})
    return printed


def write_full_case(name: str, c: dict) -> dict:
    """A full fine-tune of the base's own weights (the start tessera loads from tests/fixtures/models)."""
    torch.manual_seed(c["seed"])
    model = AutoModelForCausalLM.from_pretrained(f"tests/fixtures/models/{c['base']}", dtype=torch.float32)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == bool(model.config.tie_word_embeddings), f"{name}: tie_word_embeddings says {not tied}"
    named = list(model.named_parameters())  # a tied tensor once, as model.embed_tokens.weight
    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    no_decay = [n for n, _ in named if n not in decay]
    params = [p for _, p in named]
    opt = torch.optim.AdamW([
        {"params": [p for n, p in named if n in decay], "weight_decay": c["weight_decay"]},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ], lr=c["lr"], betas=c["betas"], eps=c["eps"])
    ids, labels = batches(c["seed"], model.config.vocab_size, STEPS)
    pad = model.config.pad_token_id
    if pad is not None:  # padding holds the pad token: row 1's -100 tail
        ids[:, 1][labels[:, 1] == -100] = pad
    tensors, printed = train(model, params, opt, c, ids, labels)
    del tensors["lr_b"]  # both groups run at the same rate
    tensors |= {f"final.{n}": p.detach().float().contiguous() for n, p in named}
    options = {k: v for k, v in c.items() if k != "seed"} | {"steps": STEPS, "tied": tied, "no_decay": no_decay}
    versions = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    out = OUT / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_file(tensors, out / "expected.safetensors", metadata={"options": json.dumps(options | versions)})
    return printed


def main() -> None:
    os.chdir(ROOT)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for name, c in CASES.items():
        print(name, write_case(name, c))
    for name, c in FULL_CASES.items():
        print(name, write_full_case(name, c))


if __name__ == "__main__":
    main()
