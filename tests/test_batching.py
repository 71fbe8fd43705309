"""Training batches: labels on completion + EOS only (or the prompt too), prompts cut from the left,
length-grouped batches with little padding, deterministic per epoch."""

from __future__ import annotations

import pytest
import torch
from conftest import make_prepared_dataset

from codelora.batching import (
    IGNORE_INDEX,
    CompletionCollator,
    LengthGroupedSampler,
    encode_example,
    non_padding_fraction,
    prepare_data,
    tokenize_split,
)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return make_prepared_dataset(tmp_path_factory.mktemp("data") / "prepared")


def test_labels_of_a_real_batch_train_completion_and_eos_only(tiny_tokenizer, dataset_dir):
    import datasets

    tok = tiny_tokenizer
    eos = tok.eos_token_id
    ds = tokenize_split(datasets.load_from_disk(str(dataset_dir))["train"], tok, 64, "train")
    sampler = LengthGroupedSampler(ds["length"], 4, seed=0)
    batch_idx = sampler.batches()[1]
    features = [ds[i] for i in batch_idx]
    batch = CompletionCollator(pad_token_id=eos)(features)
    assert batch["input_ids"].shape[1] == max(f["length"] for f in features)  # padded to the longest only
    raw = datasets.load_from_disk(str(dataset_dir))["train"]
    for row, i in enumerate(batch_idx):
        f, labels, ids = features[row], batch["labels"][row], batch["input_ids"][row]
        n, p = f["length"], f["prompt_len"]
        assert (labels[:p] == IGNORE_INDEX).all()  # prompt ignored
        assert (labels[n:] == IGNORE_INDEX).all()  # padding ignored ...
        assert (ids[n:] == eos).all()  # ... although the pad id is the EOS id
        assert labels[n - 1].item() == eos  # the appended EOS is a target
        assert torch.equal(labels[p:n], ids[p:n])  # every completion token is a target
        assert (batch["attention_mask"][row] == (torch.arange(ids.numel()) < n).long()).all()
        completion = tok(raw[i]["completion"], add_special_tokens=False)["input_ids"]
        assert labels[p:n - 1].tolist() == completion  # the completion, exactly, then EOS


def test_without_completion_only_loss_train_labels_cover_the_prompt_and_eval_stays_on_completions(
        tiny_tokenizer, dataset_dir):
    from codelora.config import TrainConfig

    tok = tiny_tokenizer
    cfg = TrainConfig(dataset=str(dataset_dir), completion_only_loss=False, max_length=64, batch_size=4)
    data = prepare_data(cfg, tok, on_gpu=False)
    collate = CompletionCollator(pad_token_id=tok.eos_token_id)
    features = [data.train[i] for i in range(4)]
    batch = collate(features)
    for row, f in enumerate(features):
        n = f["length"]
        assert torch.equal(batch["labels"][row, :n], batch["input_ids"][row, :n])  # prompt tokens are targets
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
    assert data.eval is not None and "loss_start" not in data.eval.column_names
    f = data.eval[0]
    labels = collate([f])["labels"][0]
    assert (labels[:f["prompt_len"]] == IGNORE_INDEX).all() and (labels[f["prompt_len"]:] != IGNORE_INDEX).all()


def test_long_examples_lose_the_start_of_the_prompt_not_the_completion(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt, completion = "fun main() {\n" * 20, "    return a + b\n}\n"
    c_ids = tok(completion, add_special_tokens=False)["input_ids"]
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    enc = encode_example(tok, prompt, completion, max_length=len(c_ids) + 6)
    assert enc["length"] == len(c_ids) + 6
    assert enc["input_ids"][:5] == p_ids[-5:]  # the prompt's end survives
    assert enc["input_ids"][5:] == c_ids + [tok.eos_token_id]
    # A completion longer than max_length: cut on the right, and no EOS (the text goes on).
    enc = encode_example(tok, prompt, completion, max_length=3)
    assert enc["input_ids"] == c_ids[:3] and enc["prompt_len"] == 0


def test_length_grouping_cuts_padding_and_is_deterministic_per_epoch():
    lengths = [(i * 37) % 200 + 10 for i in range(400)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3)
    grouped = sampler.batches()
    assert sorted(i for b in grouped for i in b) == list(range(400))  # a permutation
    assert grouped == LengthGroupedSampler(lengths, 8, seed=3).batches()  # same seed, same order
    sampler.set_epoch(1)
    assert sampler.batches() != grouped  # a new order each epoch
    assert max(lengths[i] for i in grouped[0]) == max(lengths)  # longest batch first
    plain = [list(range(i, i + 8)) for i in range(0, 400, 8)]
    assert non_padding_fraction(lengths, grouped) > 0.95 > non_padding_fraction(lengths, plain)


def test_eos_after_fim_ends_only_fim_middles(tiny_tokenizer):
    """--eos-after fim: a window cut from a file is not its end, so only FIM middles (the text does
    end where the suffix begins) are followed by an EOS target; 'every' ends every completion."""
    import datasets

    tok = tiny_tokenizer
    rows = {"prompt": ["fun main() {\n", "<fim_prefix>fun f(<fim_suffix>)\n<fim_middle>"],
            "completion": ["    println(1)", "a: Int"], "fim": ["", "psm-span"]}
    ds = datasets.Dataset.from_dict(rows)
    for eos_after, ends in (("every", [True, True]), ("fim", [False, True])):
        encoded = tokenize_split(ds, tok, 64, "train", eos_after)
        for row, prompt, completion, end in zip(encoded, rows["prompt"], rows["completion"], ends):
            c_ids = tok(completion, add_special_tokens=False)["input_ids"]
            assert row["input_ids"][row["prompt_len"]:] == c_ids + ([tok.eos_token_id] if end else [])
            assert row["input_ids"][:row["prompt_len"]] == tok(prompt, add_special_tokens=False)["input_ids"]
