"""Leakage: held-out completions found verbatim in train windows (Aho–Corasick vs brute force)."""

from __future__ import annotations

import random

from codelora.leakage import completion_leakage, counted, train_files_with_windows


def train_windows(train):
    """(path, prompt + completion) of every train window: the plain definition of what leakage
    searches (preprocess scans the files within their windows instead)."""
    for batch in train.select_columns(["path", "prompt", "completion"]).iter(batch_size=4096):
        yield from zip(batch["path"], map(str.__add__, batch["prompt"], batch["completion"]))


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


def test_scanning_files_within_their_windows_finds_what_scanning_the_windows_finds():
    """preprocess scans each train file once and keeps the matches that lie inside one window:
    the same report as scanning every window's text, with windows that overlap, leave gaps,
    and a file without windows."""
    from datasets import Dataset

    rnd = random.Random(1)
    files = ["".join(rnd.choice("ab\n }x") for _ in range(300)) for _ in range(12)]
    rows = []
    for f, text in enumerate(files):
        start = 0
        while f != 4 and start < len(text) - 20:
            a, b = start, min(len(text), start + rnd.randint(20, 60))
            rows.append({"file": f, "span_start": a, "span_end": b, "path": f"f{f}.kt",
                         "prompt": text[a:(a + b) // 2], "completion": text[(a + b) // 2:b]})
            start += rnd.randint(5, 70)
    windows = Dataset.from_list(rows)
    train = Dataset.from_dict({"path": [f"f{i}.kt" for i in range(len(files))], "text": files})
    pieces = [text[i:i + rnd.randint(4, 40)] for text in files for i in rnd.sample(range(260), 20)]
    heldout = {"test": [("t.kt", piece) for piece in pieces]}
    by_windows = completion_leakage(train_windows(windows), heldout)
    assert completion_leakage(train_files_with_windows(train, windows), heldout) == by_windows
    assert 20 < by_windows["test"]["leaked"] < by_windows["test"]["counted"] - 20  # both outcomes, often
