"""LoRA fine-tune throughput in PyTorch + PEFT, fp32, for bench/gpu.ts.

The same fine-tune as tessera's side of `deno task bench:gpu`: a Llama-architecture LM with random weights of the
given shape (default SmolLM-135M: dim 576, 30 layers, 9 query / 3 key-value heads, SwiGLU 1536, vocab 49152, tied
embeddings), LoRA r=8, alpha 16, no dropout on q, k, v, o, gate, up and down projections, AdamW (lr 1e-4, no weight
decay), gradient clipping at norm 1, random token batches, fp32 throughout (TF32 off). Prints tokens per second
after warm-up steps, as one JSON line with --json.

    python3 bench/peft_bench.py [--json] [--batch 8] [--seq 256] [--steps 20] [--device cuda]

Needs torch, transformers and peft; when one is missing it prints {"error": ...} and exits with status 2.
"""

import argparse
import json
import sys
import time


def at_least(minimum: int):
    """An argparse type: an integer >= minimum, else an error naming the value (the flag is named by argparse)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def main() -> int:
    # Sizes and counts are checked here, before torch is imported: --steps 0 ended in a ZeroDivisionError after
    # building the model, and --steps -3 printed a negative throughput.
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--batch", type=at_least(1), default=8)
    p.add_argument("--seq", type=at_least(1), default=256)
    p.add_argument("--steps", type=at_least(1), default=20)
    p.add_argument("--warmup", type=at_least(0), default=4)
    p.add_argument("--dim", type=at_least(1), default=576)
    p.add_argument("--hidden", type=at_least(1), default=1536)
    p.add_argument("--layers", type=at_least(1), default=30)
    p.add_argument("--heads", type=at_least(1), default=9)
    p.add_argument("--kv-heads", type=at_least(1), default=3)
    p.add_argument("--vocab", type=at_least(1), default=49152)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    a = p.parse_args()

    def fail(msg: str) -> int:
        print(json.dumps({"error": msg}) if a.json else msg)
        return 2

    try:
        import torch
    except ImportError:
        return fail("torch is not installed")
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return fail("transformers is not installed (PEFT's Llama model comes from it)")
    try:
        import peft
        from peft import LoraConfig, get_peft_model
    except ImportError:
        return fail("peft is not installed")

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)

    config = LlamaConfig(
        vocab_size=a.vocab,
        hidden_size=a.dim,
        intermediate_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=max(2048, a.seq),
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(device=device, dtype=torch.float32)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        bias="none",
    )
    model = get_peft_model(model, lora)
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    gen = torch.Generator(device="cpu").manual_seed(5)

    def step() -> None:
        ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen).to(device)
        labels = torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen).to(device)
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / a.steps
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    result = {
        "tokens_per_s": a.batch * a.seq / seconds,
        "ms_per_step": seconds * 1000,
        "device": name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trainable_params": sum(q.numel() for q in params),
    }
    print(json.dumps(result) if a.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
