"""FIM: middle shapes keep the exactness invariant; sentinels detected, added, placed and trained."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import corpus_texts
from hypothesis import given, settings
from hypothesis import strategies as st

from codelora import fim
from codelora.bootstrap import make_tiny_phi, train_tokenizer
from tests.test_preprocess import raw_jsonl, run_pre  # noqa: F401 - a module fixture and its runner

SOURCE = (
    "fun fib(n: Int): Int {\n"
    "    if (n < 2) return n\n"
    "\n"
    "    return fib(n - 1) + fib(n - 2)\n"
    "}\n"
)


def fresh_tokenizer():
    return train_tokenizer(corpus_texts(), vocab_size=400)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab \n\t{}é"), max_size=80), seed=st.integers(0, 10**6),
       shape=st.sampled_from(fim.SHAPES))
def test_prefix_middle_suffix_is_the_text(text, seed, shape):
    cut = fim.choose_middle(text, shape, random.Random(seed))
    if cut is None:
        assert shape != "span" or text == ""
        return
    a, b = cut
    assert 0 <= a <= b <= len(text)
    assert text[:a] + text[a:b] + text[b:] == text


def test_line_middle_is_one_whole_non_blank_line():
    lines = {line for line in SOURCE.split("\n") if line.strip()}
    for seed in range(30):
        a, b = fim.choose_middle(SOURCE, "line", random.Random(seed))
        assert SOURCE[a:b] in lines
        assert a == 0 or SOURCE[a - 1] == "\n"
        assert b == len(SOURCE) or SOURCE[b] == "\n"


def test_block_middle_is_two_or_more_whole_lines():
    for seed in range(30):
        a, b = fim.choose_middle(SOURCE, "block", random.Random(seed))
        middle = SOURCE[a:b]
        assert middle.count("\n") >= 1 and middle.strip()
        assert (a == 0 or SOURCE[a - 1] == "\n") and SOURCE[b] == "\n"
    assert fim.choose_middle("one line only\n", "block", random.Random(0)) is None


def test_unknown_shape_is_a_user_error():
    from codelora.utils import UserError

    with pytest.raises(UserError, match="shape"):
        fim.choose_middle(SOURCE, "word", random.Random(0))  # type: ignore[arg-type]


def test_psm_and_spm_prompts():
    tok = fresh_tokenizer()
    tokens = fim.add_fim_tokens(tok)
    assert fim.fim_prompt("A", "C", tokens) == "<fim_prefix>A<fim_suffix>C<fim_middle>"
    # SPM: the prefix comes last, right before the middle it continues.
    assert fim.fim_prompt("A", "C", tokens, spm=True) == "<fim_prefix><fim_suffix>C<fim_middle>A"
    ex = fim.make_fim_example(SOURCE, random.Random(3), shapes=("line",), spm_rate=0.0)
    assert ex.prefix + ex.middle + ex.suffix == SOURCE and not ex.spm
    assert ex.prompt(tokens).endswith("<fim_middle>")


def test_sentinels_are_added_once_and_encode_as_single_tokens(tmp_path):
    tok = fresh_tokenizer()
    before = len(tok)
    tokens = fim.add_fim_tokens(tok)
    assert tokens.added and tokens.ids == (before, before + 1, before + 2) and len(tok) == before + 3
    ids = tok(fim.fim_prompt("fun a", "}", tokens), add_special_tokens=False)["input_ids"]
    assert [i for i in ids if i >= before] == list(tokens.ids)  # never split into pieces
    assert tok.decode(ids, skip_special_tokens=True) == "fun a}"
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = fim.add_fim_tokens(AutoTokenizer.from_pretrained(tmp_path))
    assert not again.added and again.ids == tokens.ids  # reloaded: detected, not added twice


def test_a_tokenizer_with_starcoder_sentinels_keeps_its_own():
    tok = fresh_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]})
    n = len(tok)
    tokens = fim.add_fim_tokens(tok)
    assert not tokens.added and tokens.family == "starcoder" and len(tok) == n
    assert tokens.ids == tuple(tok.convert_tokens_to_ids(["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]))
    assert fim.trainable_token_indices(tokens) == []


def test_new_rows_start_at_the_mean_embedding():
    tok = fresh_tokenizer()
    model = make_tiny_phi(tok, hidden_size=32, layers=1, heads=4)
    old = model.get_input_embeddings().weight.detach().clone()
    tokens = fim.add_fim_tokens(tok)
    assert fim.fit_embeddings(model, tok) is True
    new = model.get_input_embeddings().weight.detach()
    assert new.shape[0] == len(tok) and torch.equal(new[: old.shape[0]], old)
    # transformers' mean_resizing samples around the mean; the mean of the new rows is close to it
    mean = old.mean(0)
    for i in tokens.ids:
        assert torch.linalg.norm(new[i] - mean) < torch.linalg.norm(old - mean, dim=1).mean()


def test_unused_rows_are_reused_without_resizing():
    """Phi-1.5's case: the embedding matrix has more rows than the tokenizer has tokens."""
    tok = fresh_tokenizer()
    model = make_tiny_phi(tok, hidden_size=32, layers=1, heads=4)
    model.resize_token_embeddings(448)  # like Phi-1.5's 51,200 rows for 50,295 tokens
    old = model.get_input_embeddings().weight.detach().clone()
    tokens = fim.add_fim_tokens(tok)
    assert fim.fit_embeddings(model, tok) is False
    assert model.get_input_embeddings().weight.shape[0] == 448 and max(tokens.ids) < 448
    assert torch.equal(model.get_input_embeddings().weight.detach(), old)


def test_lora_with_trainable_token_indices_changes_only_the_sentinel_rows():
    from peft import LoraConfig, get_peft_model

    tok = fresh_tokenizer()
    model = make_tiny_phi(tok, hidden_size=32, layers=1, heads=4)
    tokens = fim.add_fim_tokens(tok)
    fim.fit_embeddings(model, tok)
    before = model.get_input_embeddings().weight.detach().clone()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        trainable_token_indices={"embed_tokens": fim.trainable_token_indices(tokens)})
    peft_model = get_peft_model(model, config)
    optim = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-1)
    text = fim.fim_prompt("fun add(a: Int", "\n}\n", tokens) + "): Int = a + b"
    batch = tok(text, return_tensors="pt")
    for _ in range(3):
        loss = peft_model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    merged = peft_model.merge_and_unload()
    after = merged.get_input_embeddings().weight.detach()
    changed = sorted(torch.nonzero((after != before).any(dim=1)).flatten().tolist())
    assert changed == sorted(tokens.ids)


# ------------------------------------------------------------------------------ preprocessing


def _parts(prompt: str, kind: str) -> tuple[str, str]:
    """(prefix, suffix) of a stored FIM prompt (StarCoder sentinels)."""
    p, s, m = fim.KNOWN_SENTINELS["starcoder"]
    if kind.startswith("spm"):
        assert prompt.startswith(p + s)
        suffix, prefix = prompt[len(p + s):].split(m)
    else:
        assert prompt.startswith(p) and prompt.endswith(m)
        prefix, suffix = prompt[len(p):-len(m)].split(s)
    return prefix, suffix


def _unfim(prompt: str, completion: str, kind: str) -> str:
    """prefix + middle + suffix from a stored FIM example."""
    prefix, suffix = _parts(prompt, kind)
    return prefix + completion + suffix


def test_preprocess_fim_rate_keeps_every_example_an_exact_slice(raw_jsonl, tiny_tokenizer_dir, tmp_path):
    import json

    from datasets import load_from_disk

    from codelora.cleaning import strip_license_header

    stats = run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "ds", "--fim-rate", "0.5", "--fim-spm-rate", "0.5")
    dd = load_from_disk(str(tmp_path / "ds"))
    cleaned = {json.loads(line)["path"]: strip_license_header(json.loads(line)["file_text"])[0]
               for line in raw_jsonl.read_text().splitlines()}
    kinds = dd["train"]["fim"]
    n_fim = sum(1 for k in kinds if k)
    assert 0.3 < n_fim / len(kinds) < 0.7  # a seeded fraction of 0.5
    assert {k.split("-")[0] for k in kinds if k} == {"psm", "spm"}
    assert {k.split("-")[1] for k in kinds if k} == {"span", "line", "block"}
    assert stats["fim"]["examples"] == n_fim and stats["fim"]["sentinels"] == list(fim.KNOWN_SENTINELS["starcoder"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    count = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    for row in dd["train"]:
        text = cleaned[row["path"]]
        if row["fim"]:
            assert row["completion"].strip()  # a middle worth training on
            assert _unfim(row["prompt"], row["completion"], row["fim"]) in text
            # the token counts describe the FIM example: prefix + suffix + 3 sentinels, the middle
            context = "".join(_parts(row["prompt"], row["fim"]))
            assert (row["prompt_tokens"], row["completion_tokens"]) == (count(context) + 3, count(row["completion"]))
        else:
            assert row["prompt"] + row["completion"] in text
    assert set(dd["validation"]["fim"]) == {""} and set(dd["test"]["fim"]) == {""}


def test_preprocess_fim_is_seeded_and_off_by_default(raw_jsonl, tiny_tokenizer_dir, tmp_path):
    from datasets import load_from_disk

    run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "a", "--fim-rate", "0.3")
    run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "b", "--fim-rate", "0.3")
    a, b = (load_from_disk(str(tmp_path / n))["train"] for n in "ab")
    assert a["prompt"] == b["prompt"] and a["completion"] == b["completion"]
    stats = run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "c")
    assert stats["fim"] is None and "fim" not in load_from_disk(str(tmp_path / "c"))["train"].column_names


# ------------------------------------------------------------------------------ benchmark


def test_heldout_fim_prompts_per_model_and_scores(tmp_path, tiny_model_dir, fim_model_dir):
    import json

    from conftest import make_prepared_dataset
    from transformers import AutoTokenizer

    from codelora.benchmarking import main as bench_main
    from codelora.tasks import TaskOptions, get_task

    data = make_prepared_dataset(tmp_path / "prepared")
    out = tmp_path / "results"
    args = ["--models", str(tiny_model_dir), str(fim_model_dir), "--tasks", "heldout-fim", "--dataset", str(data),
            "--output", str(out), "--batch-size", "8", "--sample", "8", "--max-new-tokens", "12"]
    assert bench_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    info = summary["tasks"]["heldout-fim"]
    assert info["models"][str(tiny_model_dir)]["prompt_format"] == "prefix-only"
    assert info["models"][str(fim_model_dir)]["prompt_format"] == "fim-psm"
    for model in (str(tiny_model_dir), str(fim_model_dir)):
        assert {"es", "em", "bleu", "chrf", "wer", "token_iou", "cosine"} <= set(info["models"][model])
    rows = [json.loads(line) for line in (out / "examples" / "heldout-fim.jsonl").read_text().splitlines()]
    # the cosine is the evaluated model's own: recomputed here from each model's hidden states
    from codelora.generation import load_model
    from codelora.similarity import cosine_similarities

    for model in (str(tiny_model_dir), str(fim_model_dir)):
        preds = [r["predictions"][model].rstrip() for r in rows]
        expected = cosine_similarities(*load_model(model, "float32"), preds, [r["reference"].rstrip() for r in rows])
        assert [r["scores"][model]["cosine"] for r in rows] == pytest.approx(expected, abs=1e-4)
        assert info["models"][model]["cosine"] == pytest.approx(100 * sum(expected) / len(expected), abs=0.01)
    assert "cosine" in info["delta_ci95"][str(fim_model_dir)]
    impl = summary["metric_implementations"]
    assert "sacrebleu" in impl["chrf"] and "jiwer" in impl["wer"] and "rapidfuzz" in impl["es"]
    assert "hidden_states[-1]" in impl["cosine"] and "mean-pooled" in impl["cosine"]
    assert {r["scores"][str(fim_model_dir)]["shape"] for r in rows} == {"line", "span"}
    assert "heldout-fim prompts:" in (out / "results.md").read_text()
    # the same example, phrased for each model: sentinels only where the tokenizer has them
    task = get_task("heldout-fim", TaskOptions(dataset=str(data), seed=42, heldout_split="test"))
    ex = task.load()[0]
    assert ex.meta["prefix"] + ex.reference + ex.meta["suffix"] == ex.prompt + ex.reference + ex.meta["suffix"]
    plain = task.prompt_for(ex, AutoTokenizer.from_pretrained(tiny_model_dir))
    infill = task.prompt_for(ex, AutoTokenizer.from_pretrained(fim_model_dir))
    assert plain == ex.meta["prefix"] and "<fim_" not in plain
    assert infill == f"<fim_prefix>{ex.meta['prefix']}<fim_suffix>{ex.meta['suffix']}<fim_middle>"


def test_cosine_cache_of_a_model_rebuilt_at_the_same_path_is_a_new_one(tmp_path):
    from codelora.benchmarking import cosine_cache_path
    from codelora.tasks.heldout_fim import HeldoutFimTask

    task, tok = HeldoutFimTask(None), fresh_tokenizer()
    make_tiny_phi(tok, tmp_path / "m", seed=1, hidden_size=32, layers=2, heads=4)
    first = cosine_cache_path(tmp_path / "out", str(tmp_path / "m"), task)
    assert cosine_cache_path(tmp_path / "out", str(tmp_path / "m"), task) == first
    make_tiny_phi(tok, tmp_path / "m", seed=2, hidden_size=32, layers=2, heads=4)  # a merge redone
    assert cosine_cache_path(tmp_path / "out", str(tmp_path / "m"), task) != first


# ------------------------------------------------------------------------------ train + merge


@pytest.mark.parametrize("rows", ["trained", "frozen"])
def test_fim_dataset_trains_sentinels_and_merges_into_a_plain_model(rows, raw_jsonl, tiny_tokenizer_dir,
                                                                   tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codelora.merging import main as merge_main
    from codelora.training import main as train_main

    run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "ds", "--fim-rate", "0.5")
    run = tmp_path / "run"
    frozen = ["--no-train-token-rows", "--lora-layers", "1"] if rows == "frozen" else []
    assert train_main(["--base-model", str(tiny_model_dir), "--dataset", str(tmp_path / "ds"), "--output-dir",
                       str(run), "--max-steps", "3", "--batch-size", "4", "--learning-rate", "5e-2",
                       "--lora-r", "4", "--lora-alpha", "8", "--max-length", "128", "--eval-steps", "3",
                       "--save-steps", "3", *frozen]) == 0
    assert merge_main(["--adapter", str(run / "adapter"), "--output", str(tmp_path / "merged")]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    tokens = fim.detect_fim_tokens(tok)
    assert tokens is not None and tokens.ids == (400, 401, 402)  # added after the 400-token vocabulary
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    new, old = merged.get_input_embeddings().weight, base.get_input_embeddings().weight
    assert new.shape[0] == len(tok) == old.shape[0] + 3
    assert torch.equal(new[: old.shape[0]], old)  # LoRA left the existing rows alone
    named = torch.stack([old[tok(words, add_special_tokens=False)["input_ids"]].mean(0)
                         for words in ("fim prefix", "fim suffix", "fim middle")])
    if rows == "frozen":  # the adapter kept the rows training started from, and they differ
        assert torch.equal(new[list(tokens.ids)], named)
        assert len({tuple(row.tolist()) for row in named}) == 3
    else:
        assert not torch.allclose(new[list(tokens.ids)], named)
    ids = tok(fim.fim_prompt("fun add(a: Int", "}\n", tokens), return_tensors="pt")["input_ids"]
    assert merged.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3


# ------------------------------------------------------------------------------ decoding


def test_greedy_beam_and_sampling_write_the_middle_a_model_learned(tmp_path):
    """Every decoding mode the benchmark offers (greedy fast path, --num-beams, --do-sample) infills
    FIM prompts in a padded batch: a tiny model taught two PSM examples writes their middles."""
    from codelora.generation import GenerationSettings, generate, load_model
    from codelora.stops import stop_at_eos, stop_at_line_end

    tok = fresh_tokenizer()
    tokens = fim.add_fim_tokens(tok)
    model = make_tiny_phi(tok, seed=3, hidden_size=32, layers=2, heads=4)
    cases = [("fun add(a: Int, b: Int): Int {\n    ", "return a + b", "\n}\n"),
             ("class Stack {\n    val items = mutableListOf<Int>()\n    fun push(x: Int) = ", "items.add(x)", "\n}\n")]
    texts = [fim.fim_prompt(p, s, tokens) + m + tok.eos_token for p, m, s in cases]
    tok.pad_token = tok.eos_token
    batch = tok(texts, return_tensors="pt", padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(100):  # memorise both sequences (right padding here, masked out of the loss)
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model, tok = load_model(str(tmp_path / "m"), "float32")  # left padding, as the benchmark loads it
    prompts = [fim.fim_prompt(p, s, tokens) for p, _, s in cases]
    modes = {"greedy": GenerationSettings(max_new_tokens=12, batch_size=2),
             "beams": GenerationSettings(max_new_tokens=12, batch_size=2, num_beams=3),
             "sampling": GenerationSettings(max_new_tokens=12, batch_size=2, do_sample=True, temperature=0.3)}
    for mode, settings in modes.items():
        torch.manual_seed(0)
        for rules in ([stop_at_eos, stop_at_eos], [stop_at_line_end, stop_at_eos]):
            got = {i: p for idx, preds in generate(model, tok, prompts, settings, rules) for i, p in zip(idx, preds)}
            assert [got[0], got[1]] == [m for _, m, _ in cases], mode
