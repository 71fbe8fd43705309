"""Model loading, LoRA configuration, and the tiny-model bootstrap used offline (tests, demo).

The bootstrap half: `train_tokenizer` trains a byte-level BPE tokenizer with `tokenizers` (the
same family as Phi-1.5's GPT-2/CodeGen tokenizer: one `<|endoftext|>` special token serving as
BOS/EOS/UNK, no pad token — so the offline path exercises the same pad handling as the real one),
and `make_tiny_phi` builds a randomly initialised native `PhiForCausalLM` from a small `PhiConfig`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

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
