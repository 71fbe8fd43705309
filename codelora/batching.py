"""Prepared dataset -> training batches: load the DatasetDict, encode each example as
`prompt ids + completion ids + [EOS]` with its loss start, pad a batch to its own longest example
(labels by position, so the EOS that doubles as pad is still a target), and order examples so a
batch holds similar lengths (LengthGroupedSampler); the fraction of computed positions that are
real tokens is what this saves. `codelora.training` builds its Trainer from `prepare_data`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from codelora.config import TrainConfig
from codelora.fim import FIM_COLUMN, add_fim_tokens, dataset_uses_fim
from codelora.utils import UserError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value torch's cross-entropy skips
REQUIRED_COLUMNS = ("prompt", "completion")


def load_prepared_dataset(name: str):
    """A DatasetDict from a save_to_disk directory or a Hub dataset id, with the columns we need."""
    import datasets

    path = Path(name)
    try:
        if path.exists():
            dsd = datasets.load_from_disk(str(path))
        else:
            dsd = datasets.load_dataset(name)
    except FileNotFoundError as err:
        raise UserError(f"--dataset {name}: not a saved dataset ({err})") from None
    except Exception as err:  # noqa: BLE001 - Hub/offline/format errors all mean "cannot load"
        raise UserError(f"--dataset {name}: cannot load ({type(err).__name__}: {err})") from None
    if not isinstance(dsd, datasets.DatasetDict):
        raise UserError(f"--dataset {name}: expected a DatasetDict with train/validation/test splits")
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise UserError(f"--dataset {name}: no (or an empty) 'train' split")
    for split, ds in dsd.items():
        missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
        if missing:
            raise UserError(f"--dataset {name}: split '{split}' lacks column(s) {', '.join(missing)}")
    return dsd


def encode_example(tokenizer, prompt: str, completion: str, max_length: int, eos: bool = True) -> dict[str, Any]:
    """`prompt + completion + EOS` (no EOS when `eos` is false) as ids, with the prompt length
    (where the loss starts).

    Too long: the prompt is cut from the LEFT (its end is the context that matters) so completion
    and EOS survive; a completion that alone does not fit is cut from the right and then gets no
    EOS — the text does not end there, and teaching the model to stop there would be wrong.
    """
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
    if len(c_ids) > max_length:
        c_ids = c_ids[: max_length]  # drops the EOS (and the completion's tail)
        p_ids = []
    else:
        p_ids = p_ids[len(p_ids) - min(len(p_ids), max_length - len(c_ids)):]
    ids = p_ids + c_ids
    return {"input_ids": ids, "prompt_len": len(p_ids), "length": len(ids)}


def tokenize_split(ds, tokenizer, max_length: int, desc: str, eos_after: str = "every"):
    """Every row encoded (`encode_example`); EOS after every completion, or with `eos_after="fim"`
    only after FIM middles (config.TrainConfig.eos_after)."""
    ds = ds.map(
        lambda row: encode_example(tokenizer, row["prompt"], row["completion"], max_length,
                                   eos=eos_after == "every" or bool(row.get(FIM_COLUMN))),
        remove_columns=ds.column_names,
        desc=f"tokenizing {desc}",
    )
    # An example whose completion was empty and prompt cut to nothing carries no signal.
    return ds.filter(lambda row: row["length"] > row["prompt_len"], desc=f"filtering {desc}")


class CompletionCollator:
    """Right-pads a batch to its longest example; labels on completion + EOS positions, or from
    `loss_start` where an example has one (0: the prompt too, `--no-completion-only-loss`)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            ids = torch.as_tensor(f["input_ids"], dtype=torch.long)
            length, start = len(ids), int(f.get("loss_start", f["prompt_len"]))
            input_ids[i, :length] = ids
            attention_mask[i, :length] = 1
            # Positions, not ids: the EOS at the end is a target even though pad id == EOS id.
            labels[i, start:length] = ids[start:]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Random order, but each run of `batch_size` indices has similar lengths.

    Shuffle, cut into megabatches of `mega` batches, sort each megabatch by length (longest first)
    and shuffle the resulting batches; the globally longest batch goes first so an out-of-memory
    shows at step 1, not hours in. The order depends only on (seed, epoch) — not on the global
    RNG — so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mega: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        span = self.batch_size * self.mega
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: -self.lengths[i])
            batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        batches = [batches[i] for i in perm]
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
        return batches

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.lengths)


def non_padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]],
                         pad_to: int | None = None, multiple_of: int | None = None) -> float:
    """Real tokens / token slots computed, for batches padded to their longest (or to `pad_to`)."""
    real = slots = 0
    for batch in batches:
        width = pad_to or max(lengths[i] for i in batch)
        if multiple_of:
            width = math.ceil(width / multiple_of) * multiple_of
        real += sum(lengths[i] for i in batch)
        slots += width * len(batch)
    return real / slots if slots else 1.0


# ------------------------------------------------------------------------------------------- run data


@dataclasses.dataclass
class TrainData:
    train: Any
    eval: Any | None
    sampler: LengthGroupedSampler | None
    non_padding_fraction: float
    fim_tokens: Any = None  # codelora.fim.FimTokens when the train split holds FIM examples


def prepare_data(cfg: TrainConfig, tokenizer, on_gpu: bool) -> TrainData:
    """Tokenized train/eval splits, the length-grouped sampler, and the padding it leaves."""
    dsd = load_prepared_dataset(cfg.dataset)
    train_raw = dsd["train"]
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train_raw):
        train_raw = train_raw.shuffle(seed=cfg.seed).select(range(cfg.max_train_samples))
    fim_tokens = None
    if dataset_uses_fim(train_raw):  # sentinels first, so each encodes as one token
        fim_tokens = add_fim_tokens(tokenizer)
    train_ds = tokenize_split(train_raw, tokenizer, cfg.max_length, "train", cfg.eos_after)
    if len(train_ds) == 0:
        raise UserError("no usable training examples after tokenization")
    if not cfg.completion_only_loss:  # train on prompt tokens too; eval loss stays on completions
        train_ds = train_ds.add_column("loss_start", [0] * len(train_ds))
    eval_ds = None
    if "validation" in dsd and len(dsd["validation"]) > 0:
        val = dsd["validation"]
        limit = resolve_max_eval_samples(cfg.max_eval_samples, on_gpu)
        if limit and limit < len(val):
            val = val.shuffle(seed=cfg.seed).select(range(limit))
        eval_ds = tokenize_split(val, tokenizer, cfg.max_length, "validation", cfg.eos_after)
        # Eval order is irrelevant to the loss: longest first makes its padding nearly free.
        lengths = eval_ds["length"]
        eval_ds = eval_ds.select(sorted(range(len(lengths)), key=lambda i: -lengths[i]))
        if len(eval_ds) == 0:
            eval_ds = None
    else:
        log.warning("no validation split: eval loss will not be computed")

    lengths = train_ds["length"]
    sampler = LengthGroupedSampler(lengths, cfg.batch_size, cfg.seed) if cfg.group_by_length else None
    first_batches = sampler.batches() if sampler else [
        list(range(i, min(i + cfg.batch_size, len(lengths)))) for i in range(0, len(lengths), cfg.batch_size)
    ]
    fill = non_padding_fraction(lengths, first_batches, multiple_of=pad_multiple(on_gpu))
    log.info("%d train examples, %s tokens; non-padding fraction %.3f (batch %d%s)", len(lengths),
             f"{sum(lengths):,}", fill, cfg.batch_size, ", length-grouped" if sampler else "")
    return TrainData(train_ds, eval_ds, sampler, fill, fim_tokens)


# Eval examples per evaluation when --max-eval-samples is not given: smaller on a CPU, where an
# eval is slow (bench/RESULTS.md, choices), so the eval loss is noisier there.
DEFAULT_EVAL_SAMPLES = {"cuda": 200, "cpu": 40}


def resolve_max_eval_samples(requested: int | None, on_gpu: bool) -> int | None:
    """None: the device default; 0: the whole validation split."""
    if requested is None:
        return DEFAULT_EVAL_SAMPLES["cuda" if on_gpu else "cpu"]
    return requested or None


def pad_multiple(on_gpu: bool) -> int | None:
    return 8 if on_gpu else None  # tensor-core friendly shapes on GPU; no gain on CPU
