#!/usr/bin/env python
"""QLoRA training throughput and peak GPU memory on a Phi-1.5-sized model, codelora vs reference.

    .venv/bin/python bench/train_gpu.py                      # needs CUDA; ~5 min on one H100
    .venv/bin/python bench/train_gpu.py --steps 30 --json results/bench_train_gpu.json

The model is a PhiForCausalLM built from Phi-1.5's real configuration (hidden 2048, 24 layers,
32 heads, intermediate 8192, vocab 51200, partial rotary factor 0.5) with *random* weights —
speed and memory do not depend on the values, and no download is needed. It is saved once in
bf16 to a temporary directory so both setups load it through from_pretrained with 4-bit NF4
(double quantization) exactly as train.py does with the real checkpoint.

Batches are 8 x up to 512 tokens of prompt/completion examples whose lengths spread like
preprocess_data.py's windows. Compared, same LoRA (r=16, alpha=32 on q/k/v/dense/fc1/fc2), same
examples, same steps:

  reference   every row padded to 512, random order, fp16 compute, reentrant gradient
              checkpointing (peft's prepare_model_for_kbit_training default in the reference era)
  codelora    codelora.training.train(): batches padded to their longest with length grouping,
              bf16 compute, gradient checkpointing off (and, with --with-checkpointing, on and
              non-reentrant)

Reported per setup: real (non-padding) tokens/s, all tokens/s (padding included), peak
allocated GPU memory (torch.cuda.max_memory_allocated), and the non-padding fraction.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from codelora.config import PHI_TARGET_MODULES  # noqa: E402

# Phi-1.5's configuration (microsoft/phi-1_5 config.json), written out so no Hub access is needed.
PHI15_CONFIG = {
    "vocab_size": 51200,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 24,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 2048,
    "partial_rotary_factor": 0.5,
    "hidden_act": "gelu_new",
    "layer_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attention_dropout": 0.0,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
TARGETS = list(PHI_TARGET_MODULES)
SEQ = 512


def require_cuda() -> None:
    if not torch.cuda.is_available():
        print("bench/train_gpu.py: error: no CUDA device found; this benchmark measures GPU QLoRA training "
              "(run bench/train_throughput.py on CPU)", file=sys.stderr)
        sys.exit(77)  # bench/run_all.py's SKIP_EXIT: reported as skipped there, not as a failure


def build_model_dir(root: Path, tokenizer) -> Path:
    from transformers import GenerationConfig, PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    config = PhiConfig(**PHI15_CONFIG)
    with torch.device("cuda"):
        model = PhiForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0)
    out = root / "phi15-random"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def build_dataset(root: Path, n: int, seed: int) -> Path:
    """Kotlin-ish text windows: prompts of ~50-400 tokens, completions of ~10-64 tokens."""
    import datasets

    rng = random.Random(seed)
    words = ["val", "fun", "return", "if", "else", "listOf", "map", "filter", "it", "count", "name", "{", "}",
             "(", ")", "=", "+", "Int", "String", ":", "\n", "    "]
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(50, 400)))
        completion = " ".join(rng.choice(words) for _ in range(rng.randint(10, 64)))
        rows.append({"prompt": prompt, "completion": completion, "path": f"f{i}", "repo": "bench"})
    dsd = datasets.DatasetDict(train=datasets.Dataset.from_list(rows[:-16]),
                               validation=datasets.Dataset.from_list(rows[-16:]),
                               test=datasets.Dataset.from_list(rows[-16:]))
    dsd.save_to_disk(str(root / "data"))
    return root / "data"


def reference_run(model_dir: Path, data: Path, steps: int, batch: int, warmup: int) -> dict:
    """The reference setup: fixed 512-token rows, fp16 compute, reentrant checkpointing."""
    import datasets
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from codelora.modeling import load_tokenizer, lora_config, quantization_config
    from codelora.batching import CompletionCollator, tokenize_split

    tok = load_tokenizer(str(model_dir))
    ds = tokenize_split(datasets.load_from_disk(str(data))["train"], tok, SEQ, "reference")
    feats = [ds[i] for i in range(len(ds))]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16, device_map={"": 0},
                                                 quantization_config=quantization_config(torch.float16))
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": True})
    model = get_peft_model(model, lora_config(16, 32, 0.05, TARGETS))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    scaler = torch.amp.GradScaler("cuda")
    collate = CompletionCollator(tok.pad_token_id, pad_to_multiple_of=SEQ)  # every row padded to 512
    order = list(range(len(feats)))
    random.Random(0).shuffle(order)
    real = total = 0
    torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize()
            start, real, total = time.perf_counter(), 0, 0
        idx = order[(step * batch) % len(order):][:batch]
        b = {k: v.cuda() for k, v in collate([feats[i] for i in idx]).items()}
        real += int(b["attention_mask"].sum())
        total += b["input_ids"].numel()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(**b).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"real_tokens_per_s": real / seconds, "all_tokens_per_s": total / seconds,
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "non_padding_fraction": real / total}
    del model, opt
    torch.cuda.empty_cache()
    return result


def codelora_run(model_dir: Path, data: Path, root: Path, steps: int, batch: int, checkpointing: bool) -> dict:
    from codelora.config import TrainConfig
    from codelora.training import train

    torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(base_model=str(model_dir), dataset=str(data), output_dir=str(root / f"run-gc{int(checkpointing)}"),
                      load_in_4bit=True, batch_size=batch, max_steps=steps, max_length=SEQ, lora_r=16, lora_alpha=32,
                      gradient_checkpointing=checkpointing, eval_steps=10 * steps, save_steps=10 * steps,
                      logging_steps=max(1, steps // 5), max_eval_samples=8)
    metrics = train(cfg)
    result = {"real_tokens_per_s": metrics["train_tokens_per_second"],
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
              "non_padding_fraction": metrics["non_padding_fraction"],
              "note": "tokens/s over trainer.train(), which includes its setup, one eval and one checkpoint"}
    torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="reference loop: untimed first steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--examples", type=int, default=600)
    parser.add_argument("--with-checkpointing", action="store_true", help="also run codelora with checkpointing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    require_cuda()
    logging.basicConfig(level=logging.WARNING)

    from codelora.bootstrap import train_tokenizer

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="codelora-gpu-bench-") as tmp:
        root = Path(tmp)
        tok = train_tokenizer(["fun val return if else listOf map filter it count name Int String"] * 50,
                              vocab_size=300)
        model_dir = build_model_dir(root, tok)
        data = build_dataset(root, args.examples, seed=0)
        results["reference"] = reference_run(model_dir, data, args.steps, args.batch_size, args.warmup)
        results["codelora"] = codelora_run(model_dir, data, root, args.steps, args.batch_size, False)
        if args.with_checkpointing:
            results["codelora_checkpointing"] = codelora_run(model_dir, data, root, args.steps, args.batch_size, True)

    print(f"\n{torch.cuda.get_device_name(0)}; Phi-1.5-sized, 4-bit NF4, batch {args.batch_size} x <= {SEQ}")
    print(f"{'setup':<26}{'real tok/s':>12}{'peak GiB':>10}{'non-pad':>9}")
    for name, r in results.items():
        print(f"{name:<26}{r['real_tokens_per_s']:>12.0f}{r['peak_memory_gib']:>10.2f}{r['non_padding_fraction']:>9.3f}")
    ratio = results["codelora"]["real_tokens_per_s"] / results["reference"]["real_tokens_per_s"]
    print(f"codelora / reference real tokens/s: {ratio:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "config": PHI15_CONFIG,
                                         "batch_size": args.batch_size, "steps": args.steps, "results": results,
                                         "ratio_real_tokens_per_s": ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
