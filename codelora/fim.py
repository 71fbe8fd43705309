"""Fill-in-the-middle (FIM): sentinel tokens, middle shapes, and prompts, for any causal model.

FIM (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle") cuts a
document into prefix, middle and suffix and trains the model on a *reordered* sequence, so that an
ordinary left-to-right model learns to write the middle after seeing both sides:

    PSM  <fim_prefix> prefix <fim_suffix> suffix <fim_middle>   -> middle <EOS>
    SPM  <fim_prefix> <fim_suffix> suffix <fim_middle> prefix   -> middle <EOS>

SPM is the paper's "SPM variant" (its Appendix D) in which the prefix comes last, right before the
middle it continues, so the prefix/middle boundary is tokenized as in the file; BigCode's
StarCoder training uses the same arrangement. The middle (plus EOS) is what is trained on;
prefix and suffix are context. For every example `prefix + middle + suffix` is an exact slice of
the cleaned file (the windows' exactness invariant, see codelora.windows).

Sentinels: a tokenizer that already has FIM tokens keeps them (StarCoder's `<fim_prefix>` ...,
SantaCoder's `<fim-prefix>` ..., DeepSeek-Coder's and CodeLlama's are recognised). Otherwise the
three StarCoder names are added as special tokens. Their ids follow the tokenizer's last id; where
the embedding matrix already has rows past the tokenizer (Phi-1.5: 50,295 tokens, 51,200 rows),
they land in those unused rows and nothing is resized; otherwise the embeddings grow, with the new
rows set to the mean embedding (transformers' `mean_resizing`). Training then updates just those
rows with peft's `trainable_token_indices`.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from typing import Literal

from codelora.utils import UserError, arrow_column

log = logging.getLogger(__name__)

# (prefix, suffix, middle) sentinel spellings of known tokenizer families, first match wins.
KNOWN_SENTINELS: dict[str, tuple[str, str, str]] = {
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    "santacoder": ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
    # DeepSeek-Coder: begin = before the prefix, hole = where the middle goes, end = before the middle.
    "deepseek": ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    "codellama": ("▁<PRE>", "▁<SUF>", "▁<MID>"),
}
DEFAULT_FAMILY = "starcoder"

Shape = Literal["span", "line", "block"]
SHAPES: tuple[str, ...] = ("span", "line", "block")
MAX_BLOCK_LINES = 8  # longest multi-line middle: about a short loop or if-block


@dataclass(frozen=True)
class FimTokens:
    prefix: str
    suffix: str
    middle: str
    ids: tuple[int, int, int]
    family: str
    added: bool  # the tokenizer did not have them: they were added (and must be trained)

    @property
    def strings(self) -> tuple[str, str, str]:
        return self.prefix, self.suffix, self.middle


def detect_fim_tokens(tokenizer) -> FimTokens | None:
    """The tokenizer's own FIM sentinels, if it has a known family's complete set."""
    vocab = tokenizer.get_vocab()
    for family, names in KNOWN_SENTINELS.items():
        if all(name in vocab for name in names):
            ids = tuple(int(vocab[name]) for name in names)
            return FimTokens(*names, ids=ids, family=family, added=False)  # type: ignore[arg-type]
    return None


def add_fim_tokens(tokenizer) -> FimTokens:
    """Detect the tokenizer's sentinels or add StarCoder's as special tokens (in place)."""
    found = detect_fim_tokens(tokenizer)
    if found is not None:
        return found
    names = KNOWN_SENTINELS[DEFAULT_FAMILY]
    # Special, so they are never split and `skip_special_tokens` removes them from decoded text.
    tokenizer.add_special_tokens({"additional_special_tokens": list(names)}, replace_extra_special_tokens=False)
    ids = tuple(int(i) for i in tokenizer.convert_tokens_to_ids(list(names)))
    return FimTokens(*names, ids=ids, family=DEFAULT_FAMILY, added=True)  # type: ignore[arg-type]


def fit_embeddings(model, tokenizer) -> bool:
    """Make the model's embeddings cover every tokenizer id; True when they had to grow.

    Rows past the tokenizer's last id (Phi-1.5 pads its 50,295-token vocabulary to 51,200 rows)
    are reused as they are. New rows start at the mean embedding, which keeps the first logits of
    a new token ordinary instead of random (Hewitt 2021, "Initializing new word embeddings").
    """
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= rows:
        return False
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    log.info("resized embeddings from %d to %d rows for the FIM tokens", rows, len(tokenizer))
    return True


def name_embeddings(model, tokenizer, tokens: FimTokens) -> None:
    """Start each added sentinel's input row at the mean embedding of its name's words (`fim
    prefix`): rows that stay frozen must be told apart, and mean-resizing gives three near-equal
    rows (transformers samples them at 1e-9 times the embeddings' covariance). Averaging the
    embeddings of a new token's description is the usual start for a new token (Gee et al. 2022,
    "Fast Vocabulary Transfer for Language Model Compression")."""
    import torch

    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        for name, row in zip(tokens.strings, tokens.ids):
            words = re.sub(r"[^A-Za-z]+", " ", name).strip()
            ids = tokenizer(words, add_special_tokens=False)["input_ids"]
            weight[row] = weight[ids].mean(dim=0)


def trainable_token_indices(tokens: FimTokens) -> list[int]:
    """The embedding rows LoRA training must update: the sentinels, when they are new."""
    return list(tokens.ids) if tokens.added else []


# ------------------------------------------------------------------------------ middle shapes


def line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every non-blank line, end excluding its newline."""
    spans, start = [], 0
    for line in text.split("\n"):
        end = start + len(line)
        if line.strip():
            spans.append((start, end))
        start = end + 1
    return spans


def choose_middle(text: str, shape: Shape, rng: random.Random) -> tuple[int, int] | None:
    """Character offsets (a, b) of the middle, so text[:a] + text[a:b] + text[b:] == text.

    - `span`: two cut points drawn uniformly over the text (character level, as Bavarian et al.
      and BigCode do): teaches infilling anywhere, mid-token and mid-line included;
    - `line`: one whole non-blank line without its newline: the completion an editor offers
      for an empty line, and the seed project's evaluation (drop one line of a function);
    - `block`: 2..8 consecutive whole lines (the newlines between them included, not the last
      one): a loop body or an if-block.
    None when the text has no such middle (no non-blank line; fewer than two lines for a block).
    """
    if shape == "span":
        if not text:
            return None
        a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
        return a, b
    lines = line_spans(text)
    if shape == "line":
        return rng.choice(lines) if lines else None
    if shape == "block":
        if len(lines) < 2:
            return None
        size = rng.randint(2, min(MAX_BLOCK_LINES, len(lines)))
        first = rng.randrange(0, len(lines) - size + 1)
        return lines[first][0], lines[first + size - 1][1]
    raise UserError(f"unknown FIM middle shape {shape!r}; choose from {', '.join(SHAPES)}")


# ------------------------------------------------------------------------------------ prompts


def fim_prompt(prefix: str, suffix: str, tokens: FimTokens, spm: bool = False) -> str:
    """The text the model continues with the middle (see the module docstring for the orders)."""
    p, s, m = tokens.strings
    return f"{p}{s}{suffix}{m}{prefix}" if spm else f"{p}{prefix}{s}{suffix}{m}"


@dataclass(frozen=True)
class FimExample:
    prefix: str
    middle: str
    suffix: str
    shape: str
    spm: bool

    def prompt(self, tokens: FimTokens) -> str:
        return fim_prompt(self.prefix, self.suffix, tokens, self.spm)


def make_fim_example(text: str, rng: random.Random, *, shapes: tuple[str, ...] = SHAPES,
                     spm_rate: float = 0.5) -> FimExample | None:
    """One FIM example from `text` (a window of a file): a shape drawn from `shapes`, then the
    middle, then PSM or SPM (SPM with probability `spm_rate`). None when the text has no middle
    of the drawn shape."""
    shape = rng.choice(shapes)
    cut = choose_middle(text, shape, rng)  # type: ignore[arg-type]
    if cut is None:
        return None
    a, b = cut
    return FimExample(text[:a], text[a:b], text[b:], shape, rng.random() < spm_rate)


# ------------------------------------------------------------------------------ preprocessing

FIM_COLUMN = "fim"  # "" for a left-to-right example, else "<psm|spm>-<shape>"


def _fim_batch(batch: dict[str, list], indices: list[int], *, strings: tuple[str, str, str], rate: float,
               spm_rate: float, shapes: tuple[str, ...], seed: int, tokenizer) -> dict[str, list]:
    """Turn a seeded fraction `rate` of the windows into FIM examples (datasets.map, batched).

    Each row draws from its own RNG, seeded by (seed, row index), so the result does not depend
    on batch size or process count. The window's text (prompt + completion, an exact slice of
    its file) is what the middle is cut from.
    """
    tokens = FimTokens(*strings, ids=(-1, -1, -1), family="", added=False)
    out = {key: list(values) for key, values in batch.items()}
    out[FIM_COLUMN] = [""] * len(indices)
    counted: list[tuple[int, str, str]] = []
    for row, index in enumerate(indices):
        rng = random.Random(f"fim-{seed}-{index}")
        if rng.random() >= rate:
            continue
        ex = make_fim_example(batch["prompt"][row] + batch["completion"][row], rng, shapes=shapes,
                              spm_rate=spm_rate)
        if ex is None or not ex.middle.strip():
            continue  # nothing to learn from a whitespace-only middle: stays left-to-right
        out["prompt"][row], out["completion"][row] = ex.prompt(tokens), ex.middle
        out[FIM_COLUMN][row] = f"{'spm' if ex.spm else 'psm'}-{ex.shape}"
        counted.append((row, ex.prefix + ex.suffix, ex.middle))
    if counted and "prompt_tokens" in out:  # the counts describe what training will see
        # one encode for the batch (one per row was 2/3 of FIM preprocessing, bench/fim.py)
        encodings = tokenizer.encode_batch_fast([text for _row, *pair in counted for text in pair],
                                                add_special_tokens=False)
        for k, (row, _context, _middle) in enumerate(counted):
            out["prompt_tokens"][row] = len(encodings[2 * k]) + 3
            out["completion_tokens"][row] = len(encodings[2 * k + 1])
    return out


def apply_fim(ds, *, strings: tuple[str, str, str], rate: float, spm_rate: float, shapes: tuple[str, ...],
              seed: int, tokenizer, num_proc: int | None = None):
    """`ds` (a windows split) with a `fim` column and a fraction `rate` of its rows made FIM."""
    return ds.map(_fim_batch, batched=True, with_indices=True, num_proc=num_proc, desc="fim",
                  fn_kwargs={"strings": strings, "rate": rate, "spm_rate": spm_rate, "shapes": tuple(shapes),
                             "seed": seed, "tokenizer": tokenizer})


def sentinel_strings(tokenizer) -> tuple[str, str, str]:
    """The sentinels a dataset for this tokenizer is written with: its own, or StarCoder's
    (which train.py then adds to the tokenizer)."""
    found = detect_fim_tokens(tokenizer)
    return found.strings if found else KNOWN_SENTINELS[DEFAULT_FAMILY]


# ------------------------------------------------------------------------------ training


def dataset_uses_fim(ds) -> bool:
    """True when a prepared split holds FIM examples (preprocess_data.py --fim-rate > 0)."""
    return FIM_COLUMN in ds.column_names and any(arrow_column(ds, FIM_COLUMN).to_pylist())

