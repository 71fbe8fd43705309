"""benchmarking.py end to end on tiny models: outputs, cache/resume, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from codelora import benchmarking
from codelora.benchmarking import PredictionCache, model_slug
from codelora.tasks import Example


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from datasets import Dataset, DatasetDict

    def split(n: int, offset: int) -> Dataset:
        rows = {
            "prompt": [f"fun f{i}(x: Int): Int {{\n" for i in range(offset, offset + n)],
            "completion": [f"    return x + {i}\n}}\n" for i in range(offset, offset + n)],
            "path": [f"src/F{i}.kt" for i in range(offset, offset + n)],
            "repo": ["demo"] * n,
        }
        return Dataset.from_dict(rows)

    out = tmp_path_factory.mktemp("ds") / "prepared"
    DatasetDict({"train": split(4, 0), "validation": split(2, 4), "test": split(5, 6)}).save_to_disk(str(out))
    return out


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 'finetuned' model: same architecture, different weights."""
    from codelora.bootstrap import make_tiny_phi

    out = tmp_path_factory.mktemp("tiny-phi-ft")
    make_tiny_phi(tiny_tokenizer, out, seed=1, hidden_size=32, layers=2, heads=4)
    return out


def run(args: list[str]) -> int:
    return benchmarking.main(args)


def test_end_to_end_outputs(tmp_path, tiny_model_dir, second_model_dir, dataset_dir, capsys):
    out = tmp_path / "results"
    args = ["--models", str(tiny_model_dir), str(second_model_dir), "--tasks", "heldout",
            "--dataset", str(dataset_dir), "--output", str(out), "--max-new-tokens", "8", "--batch-size", "2"]
    assert run(args) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "| heldout | 5 | ES |" in printed and "Δ" in printed
    # a progress bar per model and task, counting examples, with the rate
    bars = [line for line in captured.err.replace("\r", "\n").splitlines() if "/ heldout: 100%" in line]
    assert [line.split(" / ")[0] for line in bars] == [str(tiny_model_dir), str(second_model_dir)]
    assert all(re.search(r"\| 5/5 \[[0-9:]+<00:00, +[0-9.]+(ex/s|s/ex)\]$", line) for line in bars), bars

    summary = json.loads((out / "summary.json").read_text())
    models = summary["models"]
    heldout = summary["tasks"]["heldout"]
    assert heldout["n"] == 5
    # each model's timing says how much of generation's compute went to padding
    assert all(0.0 <= summary["timing"][m]["heldout"]["padding_fraction"] < 1.0 for m in models)
    rows = [json.loads(line) for line in (out / "examples" / "heldout.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {"prompt", "reference", "predictions", "scores"} <= set(rows[0])
    # the corpus ES is the mean of the per-example ES, and the delta is finetuned - base
    for m in models:
        mean = sum(r["scores"][m]["es"] for r in rows) / len(rows)
        assert heldout["models"][m]["es"] == round(mean, 2)
        assert heldout["models"][m]["missing"] == 0
    assert heldout["delta_vs_baseline"][models[1]]["es"] == round(
        heldout["models"][models[1]]["es"] - heldout["models"][models[0]]["es"], 2)
    # a paired-bootstrap interval for the per-example metrics, none for corpus BLEU
    ci = heldout["delta_ci95"][models[1]]
    assert set(ci) == {"es", "em"}
    diffs = [r["scores"][models[1]]["es"] - r["scores"][models[0]]["es"] for r in rows]
    assert min(diffs) <= ci["es"][0] <= heldout["delta_vs_baseline"][models[1]]["es"] + 0.01
    assert heldout["delta_vs_baseline"][models[1]]["es"] - 0.01 <= ci["es"][1] <= max(diffs)
    assert f"[{ci['es'][0]:+.2f}, {ci['es'][1]:+.2f}]" in printed
    assert (out / "results.md").read_text() in printed
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "Best gains" in page
    assert (out / "config.yaml").is_file()


def test_rerun_continues_from_cache(tmp_path, tiny_model_dir, dataset_dir, monkeypatch):
    out = tmp_path / "results"
    args = ["--models", str(tiny_model_dir), "--tasks", "heldout", "--dataset", str(dataset_dir),
            "--output", str(out), "--max-new-tokens", "6", "--batch-size", "2"]

    # crash after the first batch: its predictions must survive
    real = benchmarking.generate
    calls = {"n": 0}

    def crashing(*a, **k):
        for item in real(*a, **k):
            yield item
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(benchmarking, "generate", crashing)
    assert run(args) == 130
    caches = list((out / "cache").rglob("heldout-*.jsonl"))
    assert len(caches) == 1 and len(caches[0].read_text().splitlines()) == 2

    # the rerun generates only the 3 missing examples
    generated = []

    def counting(model, tok, prompts, *a, **k):
        generated.extend(prompts)
        yield from real(model, tok, prompts, *a, **k)

    monkeypatch.setattr(benchmarking, "generate", counting)
    assert run(args) == 0
    assert len(generated) == 3
    assert len(caches[0].read_text().splitlines()) == 5
    # a third run loads no model at all
    monkeypatch.setattr(benchmarking, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert run(args) == 0


def test_heldout_validation_split(tmp_path, tiny_model_dir, dataset_dir, capsys):
    """Tuning looks at validation; the test split stays unseen until the one reported run."""
    out = tmp_path / "results"
    args = ["--models", str(tiny_model_dir), "--tasks", "heldout", "--dataset", str(dataset_dir),
            "--output", str(out), "--max-new-tokens", "4", "--heldout-split", "validation"]
    assert run(args) == 0
    assert "| heldout (validation) | 2 | ES |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"]["heldout"]["n"] == 2 and summary["tasks"]["heldout"]["split"] == "validation"
    rows = [json.loads(line) for line in (out / "examples" / "heldout.jsonl").read_text().splitlines()]
    # the validation split's rows (F4, F5), not the test split's
    assert sorted(r["reference"] for r in rows) == ["    return x + 4\n}\n", "    return x + 5\n}\n"]
    with pytest.raises(SystemExit) as exc:  # only test and validation are held out
        run([*args[:-1], "train"])
    assert exc.value.code == 2


def test_cache_ignores_torn_line_and_changed_prompt(tmp_path):
    cache = PredictionCache(tmp_path / "c.jsonl")
    ex = [Example("a", "p1", "r"), Example("b", "p2", "r")]
    cache.append([{"id": "a", "prompt_sha": benchmarking._sha("p1"), "prediction": "x"},
                  {"id": "b", "prompt_sha": benchmarking._sha("OLD"), "prediction": "y"}])
    with open(cache.path, "a") as handle:
        handle.write('{"id": "b", "predic')  # killed mid-write
    assert cache.load(ex) == {"a": "x"}


def test_sample_is_seeded_and_shared(dataset_dir, tmp_path, tiny_model_dir):
    exs = [Example(str(i), "p", "r") for i in range(10)]
    a = benchmarking.sample_examples(exs, 3, seed=1)
    assert a == benchmarking.sample_examples(exs, 3, seed=1)
    assert [e.id for e in a] == sorted((e.id for e in a), key=int) and len(a) == 3
    assert benchmarking.sample_examples(exs, 30, seed=1) == exs


def test_model_slug_distinguishes_local_dirs(tmp_path):
    (tmp_path / "a" / "merged").mkdir(parents=True)
    (tmp_path / "b" / "merged").mkdir(parents=True)
    assert model_slug("microsoft/phi-1_5") == "microsoft--phi-1_5"
    assert model_slug(str(tmp_path / "a" / "merged")) != model_slug(str(tmp_path / "b" / "merged"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tasks", "nope"], "unknown task 'nope'"),
        (["--tasks", "heldout", "--dataset", "/no/such/dir"], "dataset directory not found"),
        (["--tasks", "codexglue-line", "--codexglue-line-data", "/no/such.jsonl"], "no such file"),
        (["--tasks", "codexglue", "--codexglue-data", "BAD"], ":2: malformed JSON line"),
        (["--tasks", "heldout", "--models", "WEIGHTS"], "tokenizer"),
    ],
)
def test_bad_input_is_one_clear_line(extra, message, tmp_path, dataset_dir, tiny_model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"signature": "def f():", "body": "pass", "docstring": "d", "id": "1"}\n{oops\n')
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    extra = [str(bad) if e == "BAD" else str(weights) if e == "WEIGHTS" else e for e in extra]
    args = ["--models", str(tiny_model_dir), "--dataset", str(dataset_dir), "--output", str(tmp_path / "o"), *extra]
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_codexglue_and_mceval_through_the_cli(tmp_path, tiny_model_dir, mceval_data, capsys):
    """Method generation end to end: evaluator files for the official script. An execution task
    without --allow-code-execution is refused before anything is generated (it used to generate
    every completion and then report pass@1 as n/a; tests/test_tasks.py checks the task's own note)."""
    data = tmp_path / "cg.jsonl"
    rows = [{"signature": f"def f{i}(a=<NUM_LIT:1>):", "body": "return a<EOL>", "docstring": "d", "id": f"f{i}"}
            for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    args = ["--models", str(tiny_model_dir), "--codexglue-data", str(data), "--mceval-data", str(mceval_data),
            "--sample", "2", "--max-new-tokens", "6", "--output", str(out)]
    assert run([*args, "--tasks", "codexglue", "mceval-kotlin"]) == 2 and not out.exists()
    assert "mceval-kotlin: scored by compiling and running" in capsys.readouterr().err
    assert run([*args, "--tasks", "codexglue"]) == 0
    answers = (out / "evaluator" / "codexglue" / "answers.txt").read_text()
    assert answers.splitlines() == ["return a", "return a"]
    preds = list((out / "evaluator" / "codexglue").glob("*.predictions.txt"))
    assert len(preds) == 1 and len(preds[0].read_text().splitlines()) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"]["codexglue"]["n"] == 2
    # --task-sample: one task's own sample size beside --sample; a bad entry is one line, nothing made
    out2 = tmp_path / "o2"
    args2 = [*args[:6], "--max-new-tokens", "6", "--output", str(out2), "--tasks", "codexglue"]
    assert run([*args2, "--task-sample", "codexglue=1"]) == 0
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["tasks"]["codexglue"]["n"] == 1 and summary["task_sample"] == {"codexglue": 1}
    capsys.readouterr()
    for bad, message in (("codexglue=0", "expected TASK=N"), ("heldout=3", "heldout is not in --tasks")):
        assert run([*args2[:-2], "--output", str(tmp_path / "o3"), "--tasks", "codexglue", "--task-sample", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and not (tmp_path / "o3").exists()


def test_paired_bootstrap_ci():
    ci = benchmarking.paired_bootstrap_ci
    assert ci([1, 2, 3], [1, 2, 3]) == (0.0, 0.0)
    assert ci([10, 50, 90, 20], [15, 55, 95, 25]) == (5.0, 5.0)  # a constant gain has no spread
    assert ci([1], [2]) is None
    # Large-sample check: the percentile interval of a mean matches the normal approximation
    # mean +- 1.96 sd / sqrt(n) (the difference here is +2 with sd 10 by construction).
    import numpy as np

    rng = np.random.default_rng(3)
    base = rng.uniform(0, 100, 4000)
    diff = rng.normal(2.0, 10.0, 4000)
    lo, hi = ci(base.tolist(), (base + diff).tolist(), seed=1)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert abs(lo - (diff.mean() - half)) < 0.1 and abs(hi - (diff.mean() + half)) < 0.1
    assert lo > 0  # a real +2 gain over 4000 examples is resolved
    # paired: the base's own spread (sd ~29) does not widen the interval of the difference
    assert hi - lo < 2 * half + 0.2
    assert ci(base.tolist(), (base + diff).tolist(), seed=1) == (lo, hi)  # seeded: reproducible


def test_report_names_models_apart():
    from codelora.report import results_table, short_name

    models = ["/x/.demo/base", "/x/runs/r16/merged", "/x/runs/r64/merged", "microsoft/phi-1_5"]
    assert [short_name(m, models) for m in models] == ["base", "r16/merged", "r64/merged", "phi-1_5"]
    assert short_name("/x/runs/r16/merged") == "merged"  # alone, the last component suffices
    task = {"n": 1, "metrics": ["es"], "models": {m: {"es": 1.0} for m in models},
            "delta_vs_baseline": {m: {"es": 0.0} for m in models[1:]}}
    header = results_table({"models": models, "tasks": {"heldout": task}}).splitlines()[0]
    assert "| base (base) | r16/merged | r64/merged | phi-1_5 |" in header
    assert "Δ r16/merged − base" in header and "Δ r64/merged − base" in header


def test_compare_is_a_pure_function_of_the_scores():
    """Δ against the first model on every numeric metric; an interval only for the metrics that
    are means of per-example scores (ES, EM, pass@1), not for corpus BLEU."""
    per_model = {"base": {"es": 50.0, "bleu": 10.0, "note": "x"}, "tuned": {"es": 75.0, "bleu": 12.5, "note": "y"}}
    rows = [{"scores": {"base": {"es": 50.0}, "tuned": {"es": 75.0}}} for _ in range(4)]
    deltas, intervals = benchmarking.compare(per_model, rows, ["es", "bleu", "note"], ["base", "tuned"], seed=0)
    assert deltas == {"tuned": {"es": 25.0, "bleu": 2.5}}
    assert intervals == {"tuned": {"es": [25.0, 25.0]}}  # every example gains exactly 25
    assert benchmarking.compare(per_model, rows, ["es"], ["base"], seed=0) == ({}, {})


def test_a_model_rebuilt_at_the_same_path_is_not_scored_from_its_old_predictions(tmp_path, tiny_tokenizer,
                                                                                   dataset_dir):
    """The prediction cache is keyed by the model's identity (its weights), not its path: a merge
    redone into the same directory gets its predictions generated again."""
    import shutil

    from codelora.bootstrap import make_tiny_phi

    model, out = tmp_path / "merged", tmp_path / "results"
    args = ["--models", str(model), "--tasks", "heldout", "--dataset", str(dataset_dir), "--output", str(out),
            "--max-new-tokens", "6", "--batch-size", "2"]
    predictions = {}
    for seed in (1, 2):
        shutil.rmtree(model, ignore_errors=True)
        make_tiny_phi(tiny_tokenizer, model, seed=seed, hidden_size=32, layers=2, heads=4)
        assert run(args) == 0
        rows = [json.loads(x) for x in (out / "examples" / "heldout.jsonl").read_text().splitlines()]
        predictions[seed] = [r["predictions"][str(model)] for r in rows]
    assert predictions[1] != predictions[2]  # the rebuilt model's own predictions, not the cached ones
    assert len(list((out / "cache").rglob("heldout-*.jsonl"))) == 2
    assert run(args) == 0  # the same model again: served from its cache, nothing new
    assert len(list((out / "cache").rglob("heldout-*.jsonl"))) == 2


def test_general_loss_is_each_models_own_loss_with_an_interval(tmp_path, tiny_model_dir, second_model_dir, capsys,
                                                               monkeypatch):
    """general-loss scores each model by its loss on code it never trained on: per file, the same
    number transformers' own loss gives for that file's first --loss-tokens tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import KOTLIN_SNIPPETS

    data = tmp_path / "general.jsonl"
    files = [{"file_text": text * 3, "path": f"std/F{i}.kt"} for i, text in enumerate(KOTLIN_SNIPPETS)]
    data.write_text("".join(json.dumps(f) + "\n" for f in files + [{"file_text": "  \n", "path": "blank.kt"}]))
    out = tmp_path / "results"
    args = ["--models", str(tiny_model_dir), str(second_model_dir), "--tasks", "general-loss", "--loss-data",
            str(data), "--loss-tokens", "24", "--loss-files", "4", "--batch-size", "3", "--output", str(out)]
    assert run(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    info = summary["tasks"]["general-loss"]
    assert info["n"] == 4  # a seeded sample of the 5 non-blank files
    rows = [json.loads(x) for x in (out / "examples" / "general-loss.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for model in (tiny_model_dir, second_model_dir):
        lm = AutoModelForCausalLM.from_pretrained(model).eval()
        for row in rows:
            ids = torch.tensor([tok(row["prompt"], add_special_tokens=False)["input_ids"][:24]])
            with torch.no_grad():
                expected = lm(input_ids=ids, labels=ids).loss.item()
            assert row["scores"][str(model)]["loss"] == pytest.approx(expected, abs=1e-3)
        mean = sum(r["scores"][str(model)]["loss"] for r in rows) / len(rows)
        assert info["models"][str(model)]["loss"] == pytest.approx(mean, abs=1e-3)
    lo, hi = info["delta_ci95"][str(second_model_dir)]["loss"]
    assert lo <= info["delta_vs_baseline"][str(second_model_dir)]["loss"] <= hi
    assert "nats/token" in capsys.readouterr().out
    # a rerun reads the losses from the cache: no model is loaded
    def no_load(*a, **k):
        raise AssertionError("loaded a model")

    monkeypatch.setattr(benchmarking, "load_model", no_load)
    assert run(args) == 0


def test_general_loss_needs_its_data(tmp_path, tiny_model_dir, capsys):
    assert run(["--models", str(tiny_model_dir), "--tasks", "general-loss", "--output", str(tmp_path / "o")]) == 2
    assert "general-loss: give the code to measure the loss on with --loss-data" in capsys.readouterr().err
