#!/usr/bin/env python
"""Training speed of LoRA on the top third of a llama model's layers (`--lora-layers`) against
LoRA on all of them, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/lora_layers.py     # a small llama: 12 layers x 256
    HF_HUB_OFFLINE=1 .venv/bin/python bench/lora_layers.py --layers 30 --hidden 576 --mlp 1536 \
        --heads 9 --kv-heads 3 --vocab 49152                       # SmolLM2-135M's shape (slow on 2 cores)

The model is a randomly initialised LlamaForCausalLM (grouped-query attention, tied embeddings;
by default 12 layers x 256, MLP 768, 4 query / 2 key-value heads, vocabulary 8,192): a step costs
what it costs with trained weights. Both runs put LoRA r16 on the seven llama projections
(codelora.modeling.add_lora with the default targets) and train the same random batches with AdamW,
fp32 on CPU; the only difference is `layers=None` against `layers=<a third of them>`. With LoRA on
the top layers only, no gradient is needed below the lowest adapted layer, so autograd never
records those layers and the backward pass stops there.

Throughput is tokens (batch x sequence) per second of the training steps, after one warm-up
step; the two settings alternate over `--repeats` rounds and the median of each is compared.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from run_all import result_line  # noqa: E402  (bench/ is sys.path[0] when a script in it runs)

from codelora.modeling import add_lora  # noqa: E402


def build_model(args: argparse.Namespace, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, tie_word_embeddings=True, max_position_embeddings=2048)
    return LlamaForCausalLM(config)


def tokens_per_second(args: argparse.Namespace, lora_layers: int | None) -> float:
    """One fresh model with LoRA, a warm-up step, then `--steps` timed steps."""
    model = add_lora(build_model(args, seed=0), r=16, alpha=32, dropout=0.0, targets=None, layers=lora_layers)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator)
               for _ in range(args.steps + 1)]
    start = 0.0
    for i, ids in enumerate(batches):
        if i == 1:  # the first step pays for allocations: not timed
            start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return args.steps * args.batch * args.seq / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--mlp", type=int, default=768)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=160, help="tokens per row (a 128 + 32 next-line window)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    top = max(1, args.layers // 3)
    rates: dict[str, list[float]] = {"all": [], "top": []}
    for repeat in range(args.repeats):
        for name, layers in (("all", None), ("top", top)):
            rates[name].append(tokens_per_second(args, layers))
            print(f"repeat {repeat + 1}: LoRA on {'all ' + str(args.layers) if layers is None else f'top {top}'} "
                  f"layers: {rates[name][-1]:.0f} tokens/s", flush=True)
    all_rate, top_rate = statistics.median(rates["all"]), statistics.median(rates["top"])
    print(f"median tokens/s: all {args.layers} layers {all_rate:.0f}, top {top} {top_rate:.0f} "
          f"(batch {args.batch} x {args.seq}, {args.steps} steps per repeat, {torch.get_num_threads()} threads)")
    print(result_line("lora_all_layers_tokens_per_s", all_rate))
    print(result_line("lora_top_third_tokens_per_s", top_rate))
    print(result_line("lora_top_third_speedup", top_rate / all_rate, target=">1", ok=top_rate > all_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
