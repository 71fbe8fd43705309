"""Bootstrap a tiny base model offline: tokenizer + short pretraining of a small PhiForCausalLM.

The offline demo cannot download microsoft/phi-1_5, so it makes its own base model from text on
the machine. The model must already "know" the language a little (otherwise finetuning only
shows that training beats no training), and it must NOT have seen the finetuning files
(otherwise there is nothing left to adapt to): give it a part of the corpus disjoint from them.

usage:
  codelora bootstrap --inputs /usr/lib/python3.11/json /usr/lib/python3.11/email --output runs/demo/base
  codelora bootstrap --config configs/demo.yaml          # the `bootstrap:` section
  codelora bootstrap --inputs corpus/ --exclude 'test_*' --steps 200 --max-seconds 120

Writes OUTPUT/ (model.safetensors, config.json, generation_config.json, tokenizer files,
bootstrap.json with the corpus and loss numbers, bootstrap_config.yaml) atomically.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from codelora.config import BootstrapConfig, guard_stage_output, save_config
from codelora.contracts import write_output_marker
from codelora.utils import UserError, atomic_dir, seed_everything, write_json

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ tiny models
# `train_tokenizer` trains a byte-level BPE tokenizer with `tokenizers` (the same family as
# Phi-1.5's GPT-2/CodeGen tokenizer: one `<|endoftext|>` special token serving as BOS/EOS/UNK, no
# pad token — so the offline path exercises the same pad handling as the real one), and
# `make_tiny_phi` builds a randomly initialised native `PhiForCausalLM` from a small `PhiConfig`.

EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2):
    """Byte-level BPE trained on `texts`; returns a transformers PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Like GPT-2: no prefix space, byte-level so any text round-trips exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=2048,
    )


def tiny_phi_config(tokenizer, hidden_size: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 1024):
    from transformers import PhiConfig

    return PhiConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_positions,
        partial_rotary_factor=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def make_tiny_phi(tokenizer, out_dir: str | Path | None = None, seed: int = 0, **config_kwargs):
    """A randomly initialised PhiForCausalLM sized by `config_kwargs`; saved with the tokenizer
    to `out_dir` when given (a directory that from_pretrained can load like a Hub repo)."""
    import torch
    from transformers import GenerationConfig, PhiForCausalLM

    torch.manual_seed(seed)
    model = PhiForCausalLM(tiny_phi_config(tokenizer, **config_kwargs))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model


# ------------------------------------------------------------------------------ the stage


def collect_files(cfg: BootstrapConfig) -> list[Path]:
    """The pretraining files: explicit files as given, directories walked for `extensions`.

    Sorted, then (with --max-files) a seeded sample, so the same config reads the same files.
    """
    files: list[Path] = []
    for item in cfg.inputs:
        root = Path(item).expanduser()
        if root.is_file():
            candidates = [(root, root.name)]
        elif root.is_dir():
            candidates = [
                (p, p.relative_to(root).as_posix())
                for p in sorted(root.rglob("*"))
                if p.is_file() and p.suffix in cfg.extensions
            ]
        else:
            raise UserError(f"--inputs: {root} does not exist")
        for path, rel in candidates:
            if any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(path.name, pat) for pat in cfg.exclude):
                continue
            if "__pycache__" in path.parts or path.stat().st_size > cfg.max_file_bytes:
                continue
            files.append(path)
    files = sorted(set(files))
    if cfg.max_files is not None and len(files) > cfg.max_files:
        files = sorted(random.Random(cfg.seed).sample(files, cfg.max_files))
    return files


def read_texts(files: Sequence[Path]) -> list[str]:
    texts = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: not text to learn from
        if text.strip():
            texts.append(text)
    return texts


def token_stream(tokenizer, texts: Sequence[str]):
    """All texts as one 1-D LongTensor, each followed by EOS (the document boundary)."""
    import torch

    ids: list[int] = []
    for enc in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step: int, cfg: BootstrapConfig) -> float:
    """Linear warmup then cosine decay to 10% of the peak (nanoGPT's schedule)."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def get_batch(stream, seq_length: int, batch_size: int, generator):
    """Random windows of seq_length+1 tokens: inputs and next-token targets."""
    import torch

    starts = torch.randint(0, len(stream) - seq_length - 1, (batch_size,), generator=generator)
    block = torch.stack([stream[s : s + seq_length + 1] for s in starts.tolist()])
    return block[:, :-1], block[:, 1:]


def estimate_loss(model, stream, seq_length: int, max_batches: int = 8) -> float:
    """Mean next-token loss over consecutive windows of `stream` (deterministic, no sampling)."""
    import torch
    import torch.nn.functional as F

    n = min(max_batches * 8, (len(stream) - 1) // seq_length)
    if n < 1:
        raise UserError("eval split too short: add text or raise --eval-fraction")
    windows = stream[: n * seq_length + 1]
    x = windows[:-1].view(n, seq_length)
    y = windows[1:].view(n, seq_length)
    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, n, 8):
            logits = model(x[i : i + 8]).logits
            losses.append(
                F.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), y[i : i + 8].reshape(-1), reduction="sum"
                ).item()
            )
    model.train()
    return sum(losses) / (n * seq_length)


def pretrain(model, train_stream, eval_stream, cfg: BootstrapConfig) -> dict[str, Any]:
    """Plain fp32 AdamW loop; returns loss numbers and how far it got."""
    import torch
    import torch.nn.functional as F

    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices decay; norms and biases don't
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    initial = estimate_loss(model, eval_stream, cfg.seq_length)
    log.info(
        "pretraining %d steps of %d x %d tokens; eval loss before: %.3f",
        cfg.steps,
        cfg.batch_size,
        cfg.seq_length,
        initial,
    )
    model.train()
    start, step, loss_value = time.monotonic(), 0, float("nan")
    for step in range(cfg.steps):
        for group in optim.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = get_batch(train_stream, cfg.seq_length, cfg.batch_size, generator)
        logits = model(x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        loss_value = loss.item()
        elapsed = time.monotonic() - start
        if step % 25 == 0 or step == cfg.steps - 1:
            log.info(
                "step %d/%d  loss %.3f  lr %.2e  %.0fs",
                step + 1,
                cfg.steps,
                loss_value,
                lr_at(step, cfg),
                elapsed,
            )
        if cfg.max_seconds is not None and elapsed > cfg.max_seconds:
            log.info("time budget of %.0fs reached after %d steps", cfg.max_seconds, step + 1)
            break
    final = estimate_loss(model, eval_stream, cfg.seq_length)
    seconds = time.monotonic() - start
    log.info("eval loss %.3f -> %.3f in %.0fs", initial, final, seconds)
    return {
        "steps_done": step + 1,
        "seconds": round(seconds, 2),
        "last_train_loss": loss_value,
        "eval_loss_before": initial,
        "eval_loss_after": final,
    }


def bootstrap(cfg: BootstrapConfig) -> Path:
    import torch

    out = Path(cfg.output)
    guard_stage_output("bootstrap", cfg)
    files = collect_files(cfg)
    texts = read_texts(files)
    if not texts:
        raise UserError(
            f"no text files found in {', '.join(cfg.inputs)} (extensions: {' '.join(cfg.extensions)})"
        )
    n_chars = sum(len(t) for t in texts)
    log.info("bootstrap corpus: %d files, %.1f MB of text", len(texts), n_chars / 1e6)

    seed_everything(cfg.seed)
    torch.manual_seed(cfg.seed)
    tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size)
    stream = token_stream(tokenizer, texts)
    n_eval = max(int(len(stream) * cfg.eval_fraction), cfg.seq_length + 1)
    if len(stream) - n_eval < cfg.seq_length + 2:
        raise UserError(f"corpus too small: {len(stream)} tokens for --seq-length {cfg.seq_length}; add text")
    # The held-out tail: a contiguous stretch of documents the model never trains on.
    train_stream, eval_stream = stream[:-n_eval], stream[-n_eval:]
    model = make_tiny_phi(tokenizer, seed=cfg.seed, hidden_size=cfg.hidden_size, layers=cfg.layers,
                          heads=cfg.heads, max_positions=cfg.max_positions)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %d layers x %d wide, %.2fM parameters, vocabulary %d",
             cfg.layers, cfg.hidden_size, n_params / 1e6, len(tokenizer))
    stats = pretrain(model, train_stream, eval_stream, cfg)
    info = {"files": len(texts), "characters": n_chars, "tokens": len(stream), "train_tokens": len(train_stream),
            "eval_tokens": len(eval_stream), "vocab_size": len(tokenizer), "parameters": n_params, **stats,
            "file_list": [str(p) for p in files]}
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_config(cfg, tmp / "bootstrap_config.yaml")
        write_json(tmp / "bootstrap.json", info)
        write_output_marker(tmp, "bootstrap")
    log.info("wrote %s", out)
    return out


DESCRIPTION = __doc__.split("\n\n")[0]
EXAMPLES = __doc__.split("usage:\n", 1)[1].split("\n\n")[0]


def main(argv: Sequence[str] | None = None) -> int:
    from codelora.cli import run_command

    return run_command("bootstrap", argv)


if __name__ == "__main__":
    raise SystemExit(main())
