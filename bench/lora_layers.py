#!/usr/bin/env python
"""Training speed of LoRA on the top third of a llama model's layers (`--lora-layers`) against
LoRA on all of them, in one run; and on the top third, what two more choices of train.py save:
frozen rows for added FIM sentinels (`--no-train-token-rows`) against trained ones, and logits
only where a target is predicted (`training.target_logits_only`, always on) against all logits.

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

The sentinel runs add three embedding rows (peft's trainable tokens, as FIM training does): trained
rows need the gradient of the embedding output, so the backward pass runs through every layer
again; frozen ones do not. The logits runs put the loss on the last `--completion` tokens of each
row (a next-line window's completion), as completion-only training does.

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

from codelora.batching import IGNORE_INDEX  # noqa: E402
from codelora.modeling import add_lora  # noqa: E402
from codelora.training import target_logits_only  # noqa: E402

SETTINGS = {  # name: (LoRA on the top third?, sentinel rows: None / "trained" / "frozen", loss, logits)
    "all": (False, None, "all", "all"),
    "top": (True, None, "all", "all"),
    "rows_trained": (True, "trained", "completion", "targets"),
    "rows_frozen": (True, "frozen", "completion", "targets"),
    "logits_all": (True, None, "completion", "all"),
    "logits_targets": (True, None, "completion", "targets"),
}


def build_model(args: argparse.Namespace, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, tie_word_embeddings=True, max_position_embeddings=2048)
    return LlamaForCausalLM(config)


def tokens_per_second(args: argparse.Namespace, setting: str) -> float:
    """One fresh model with LoRA, a warm-up step, then `--steps` timed steps."""
    top, rows, loss_on, logits = SETTINGS[setting]
    model = add_lora(build_model(args, seed=0), r=16, alpha=32, dropout=0.0, targets=None,
                     layers=max(1, args.layers // 3) if top else None,
                     trainable_token_rows=[args.vocab - 3, args.vocab - 2, args.vocab - 1] if rows else (),
                     train_token_rows=rows != "frozen")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(args.steps + 1):
        ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator)
        ids[:, 0] = args.vocab - 3  # a sentinel in every row, as in a FIM example
        labels = ids.clone()
        if loss_on == "completion":
            labels[:, : args.seq - args.completion] = IGNORE_INDEX
        batch = {"input_ids": ids, "labels": labels}
        batches.append(target_logits_only(model, batch) if logits == "targets" else batch)
    start = 0.0
    for i, batch in enumerate(batches):
        if i == 1:  # the first step pays for allocations: not timed
            start = time.perf_counter()
        model(**batch).loss.backward()
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
    parser.add_argument("--completion", type=int, default=33, help="loss tokens per row (32 + EOS)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    top = max(1, args.layers // 3)
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for repeat in range(args.repeats):
        for name in SETTINGS:
            rates[name].append(tokens_per_second(args, name))
            print(f"repeat {repeat + 1}: {name}: {rates[name][-1]:.0f} tokens/s", flush=True)
    rate = {name: statistics.median(values) for name, values in rates.items()}
    print(f"median tokens/s: {', '.join(f'{name} {value:.0f}' for name, value in rate.items())} (top = top {top} "
          f"of {args.layers} layers; batch {args.batch} x {args.seq}, {args.steps} steps per repeat, "
          f"{torch.get_num_threads()} threads)")
    print(result_line("lora_all_layers_tokens_per_s", rate["all"]))
    print(result_line("lora_top_third_tokens_per_s", rate["top"]))
    print(result_line("lora_top_third_speedup", rate["top"] / rate["all"], target=">1", ok=rate["top"] > rate["all"]))
    frozen = rate["rows_frozen"] / rate["rows_trained"]
    print(result_line("frozen_token_rows_speedup", frozen, target=">1", ok=frozen > 1))
    targets = rate["logits_targets"] / rate["logits_all"]
    print(result_line("target_logits_speedup", targets, target=">1", ok=targets > 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
