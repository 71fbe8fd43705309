"""Leakage: held-out completions found verbatim in train windows (Aho–Corasick vs brute force)."""

from __future__ import annotations

import random

from codelora.leakage import completion_leakage, counted


def test_counts_match_brute_force_and_short_completions_are_apart():
    rnd = random.Random(0)
    alphabet = "ab\n }x"
    train = ["".join(rnd.choice(alphabet) for _ in range(400)) for _ in range(30)]
    completions = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 9))) for _ in range(300)]
    completions += [train[3][100:140], train[7][:60], "\n}", "\n    }\n}", "}})"]
    pairs = [(f"t{i % 7}.kt", c) for i, c in enumerate(completions)]
    report = completion_leakage(((f"train{i}.kt", t) for i, t in enumerate(train)), {"test": pairs}, top=3)
    test = report["test"]
    long_ones = [c for _p, c in pairs if counted(c)]
    expected = sum(any(c in t for t in train) for c in long_ones)
    assert test["counted"] == len(long_ones) and test["leaked"] == expected > 2
    assert test["short_not_counted"] == len(pairs) - len(long_ones) >= 3
    assert test["fraction"] == round(expected / len(long_ones), 4)
    top = test["top_completions"][0]
    assert top["chars"] == 60 and top["train_path"] == "train7.kt" and len(test["top_files"]) == 3
    assert not counted("\n    }\n}") and not counted("}})") and counted("}}})")


def test_nothing_held_out_or_nothing_leaked():
    report = completion_leakage(iter([("a.kt", "fun a() = 1")]), {"validation": [], "test": [("b.kt", "fun b()")]})
    assert report["validation"]["fraction"] == 0.0 and report["validation"]["counted"] == 0
    assert report["test"]["leaked"] == 0 and report["test"]["counted"] == 1
