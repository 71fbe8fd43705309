"""Memorization (longest span copied from train) and repetition of predictions."""

from __future__ import annotations

import random

from codelora.memorization import TrainIndex, is_repetitive, memorization, summarize


def words(rnd: random.Random, n: int) -> str:
    vocab = ["val", "x", "=", "listOf(1,", "2)", "fun", "foo()", "{", "}", "return", "it", "map", "filter"]
    return " ".join(rnd.choice(vocab) + str(rnd.randrange(50)) for _ in range(n))


def test_copied_spans_are_found_verified_and_measured():
    rnd = random.Random(0)
    train = [words(rnd, 200) for _ in range(20)]
    copied = " ".join(train[4].split()[30:60])  # 30 tokens straight from train
    stitched = " ".join(train[1].split()[:10]) + " " + " ".join(train[2].split()[:10])
    fresh = words(random.Random(99), 40)
    preds = [f"new stuff {copied} tail", stitched, fresh, ""]
    rows = memorization(TrainIndex.build(train), preds)
    assert rows[0]["copied_chars"] == len(copied) and rows[0]["verified"]
    assert rows[0]["copied_share"] == round(len(copied) / len(preds[0]), 4)
    # two 10-token pieces from different places: each piece is a run, the join is not in train
    assert 0 < rows[1]["copied_chars"] < len(stitched)
    assert rows[2]["copied_chars"] == 0 and not rows[2]["verified"]
    assert rows[3] == {"copied_chars": 0, "copied_share": 0.0, "verified": False, "repetitive": False,
                       "measurable": False, "short_in_train": None}
    summary = summarize(rows, preds)
    assert summary["predictions"] == 4 and summary["worst"][0]["index"] == 0
    assert summary["mean_copied_chars"] == round(sum(r["copied_chars"] for r in rows) / 4, 2)


def test_repetition():
    assert is_repetitive("foo(1)\nfoo(1)\nfoo(1)\nfoo(1)\n")
    assert is_repetitive("return x + y; return x + y; return x + y; ")
    assert not is_repetitive("val a = 1\nval b = 2\nreturn a + b\n}\n")


def test_benchmark_summary_table_and_html(tmp_path):
    from datasets import Dataset, DatasetDict

    from codelora.memorization import benchmark_memorization, memorization_html, memorization_markdown

    rnd = random.Random(1)
    train_text = [words(rnd, 120) for _ in range(5)]
    dd = DatasetDict({s: Dataset.from_dict({"prompt": [t[:200] for t in train_text],
                                             "completion": [t[200:] for t in train_text]}) for s in ("train", "test")})
    dd.save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "ds" / "stats.json").write_text(
        '{"leakage": {"test": {"counted": 10, "leaked": 1, "fraction": 0.1}}, "contamination": {"checked": true, '
        '"files_checked": 7, "files_hit": 2, "dropped": 2, "ngram": 20, "benchmark_tasks": 207, "tasks_hit": {}}}')
    copy = " ".join(train_text[2].split()[5:40])
    rows = {"heldout": [{"predictions": {"base": "fresh words only here", "tuned": copy}},
                        {"predictions": {"base": "a b a b", "tuned": copy + "\n" + copy}}]}
    mem = benchmark_memorization(str(tmp_path / "ds"), rows, ["base", "tuned"])
    assert mem["checked"] and mem["models"]["base"]["mean_copied_chars"] == 0
    assert mem["models"]["tuned"]["share_mostly_copied"] == 0.5  # the doubled copy is half copied
    assert rows["heldout"][0]["memorization"]["tuned"]["copied_chars"] == len(copy)
    assert mem["dataset_leakage"] == {"test": {"counted": 10, "leaked": 1, "fraction": 0.1}}
    summary = {"memorization": mem}
    table = memorization_markdown(summary)
    # 4-token predictions: no span to measure
    assert "| tuned |" in table and "test 10.00%" in table and "| base | 0/2 | n/a | n/a | n/a |" in table
    assert mem["dataset_contamination"]["files_hit"] == 2
    assert "2 of 7 files shared a 20-gram run with 207 benchmark tasks, 2 dropped" in table
    assert copy[:50] in memorization_html(summary)
    assert not benchmark_memorization(str(tmp_path / "nope"), rows, ["base"])["checked"]
