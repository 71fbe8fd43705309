"""preprocess_data.py end to end on a parsed fixture repository, plus its bad inputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_from_disk

from codelora import preprocess
from codelora.cleaning import strip_license_header
from codelora.preprocess import main as preprocess_main
from codelora.sources import main as parse_main
from tests.conftest import make_git_repo

LICENSE = "/*\n * Copyright 2000-2024 Example Corp.\n * Licensed under the Apache License, Version 2.0\n */\n\n"


def kotlin_file(i: int) -> str:
    funcs = "".join(
        f"    fun op{i}_{j}(x: Int): Int {{\n        val y = x * {j + 1} + {i}\n        return y - {j}\n    }}\n\n"
        for j in range(6 + i % 5)
    )
    return f"package demo.p{i}\n\nimport kotlin.math.max\n\nclass Thing{i} {{\n{funcs}}}\n"


@pytest.fixture(scope="module")
def raw_jsonl(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pre")
    files = {f"src/Thing{i}.kt": (LICENSE if i % 2 == 0 else "") + kotlin_file(i) for i in range(40)}
    files["src/Short.kt"] = LICENSE + "package demo\n\nfun tiny() = 1\n"
    files["src/Huge.kt"] = kotlin_file(99) + "val table = \"" + "9" * 300 + "\"\n"
    files["src/Blob.kt"] = kotlin_file(98) + "val b = \"" + "QUJD" * 200 + "\"\n"
    files["src/Eos.kt"] = kotlin_file(97) + 'val marker = "<|endoftext|>"\n'
    # whitespace variants of one file: must land in one split
    files["a/Twin.kt"] = kotlin_file(500)
    files["b/Twin.kt"] = kotlin_file(500).replace("    ", "\t")
    files["c/Twin.kt"] = kotlin_file(500).replace("\n\n", "\n")
    repo = make_git_repo(root / "repo", files)
    out = root / "raw.jsonl"
    assert parse_main(["--repo", str(repo), "--output", str(out)]) == 0
    return out


def run_pre(raw_jsonl, tok_dir, out, *extra) -> dict:
    code = preprocess_main(["--input", str(raw_jsonl), "--tokenizer", str(tok_dir), "--output", str(out),
                            "--prompt-tokens", "48", "--completion-tokens", "24", "--stride", "24",
                            "--train-ratio", "0.8", "--validation-ratio", "0.1", *extra])
    assert code == 0
    return json.loads((out / "stats.json").read_text())


@pytest.fixture(scope="module")
def prepared(raw_jsonl, tiny_tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "ds"
    stats = run_pre(raw_jsonl, tiny_tokenizer_dir, out)
    return out, stats


def test_dataset_contract_and_stats(prepared, raw_jsonl):
    out, stats = prepared
    dd = load_from_disk(str(out))
    assert set(dd) == {"train", "validation", "test"}
    for split in dd.values():
        assert {"prompt", "completion", "path", "repo", "commit"} <= set(split.column_names)
        assert len(split) > 0
    assert stats["files"] == {"input": 47, "kept": 43, "license_stripped": 21, "dropped": {
        "too_few_lines": 1, "long_digit_run": 1, "long_token": 1, "special_token_text": 1}}
    assert stats["files_per_split"] == {"train": 35, "validation": 4, "test": 4}
    assert stats["examples"] == {s: len(dd[s]) for s in dd}
    assert stats["token_lengths"]["completion"]["max"] <= 24
    assert stats["token_lengths"]["prompt"]["max"] <= 48
    overlap = stats["test_completions_in_train"]
    assert overlap["test_completions"] == len(dd["test"])
    assert stats["parse"]["kept"] == 47 and stats["sources"][0]["commit"]
    assert (out / "config.yaml").is_file()


def test_windows_are_exact_slices_of_cleaned_files(prepared, raw_jsonl):
    out, _ = prepared
    cleaned = {}
    for line in raw_jsonl.read_text().splitlines():
        row = json.loads(line)
        cleaned[row["path"]] = strip_license_header(row["file_text"])[0]
    dd = load_from_disk(str(out))
    for split in dd.values():
        for row in split:
            text = cleaned[row["path"]]
            assert row["prompt"] + row["completion"] in text
            # lines mode: "\n" + whole lines, stopping just before a newline; no EOS text, no licence
            end = text.index(row["prompt"] + row["completion"]) + len(row["prompt"] + row["completion"])
            assert row["completion"].startswith("\n") and (end == len(text) or text[end] == "\n")
            assert "<|endoftext|>" not in row["completion"] + row["prompt"]
            assert "Copyright" not in row["prompt"] + row["completion"]


def test_split_by_file_and_whitespace_twins_together(prepared):
    out, _ = prepared
    dd = load_from_disk(str(out))
    where: dict[str, set] = {}
    for name, split in dd.items():
        for path in set(split["path"]):
            where.setdefault(path, set()).add(name)
    assert all(len(s) == 1 for s in where.values())
    twins = {next(iter(where[p])) for p in ("a/Twin.kt", "b/Twin.kt", "c/Twin.kt")}
    assert len(twins) == 1
    assert not {"src/Huge.kt", "src/Blob.kt", "src/Short.kt", "src/Eos.kt"} & set(where)


def test_max_train_samples_seeded_and_num_proc_identical(prepared, raw_jsonl, tiny_tokenizer_dir, tmp_path):
    out, stats = prepared
    full = load_from_disk(str(out))["train"]
    s1 = run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "a", "--max-train-samples", "50", "--num-proc", "2")
    a = load_from_disk(str(tmp_path / "a"))
    assert len(a["train"]) == 50 and s1["train_examples_before_sampling"] == len(full)
    full_pairs = set(zip(full["prompt"], full["completion"]))
    assert set(zip(a["train"]["prompt"], a["train"]["completion"])) <= full_pairs
    # same seed, one process: the very same sample and the same eval splits
    run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "b", "--max-train-samples", "50")
    b = load_from_disk(str(tmp_path / "b"))
    for s in ("train", "validation", "test"):
        assert a[s]["completion"] == b[s]["completion"]
    run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "c", "--max-train-samples", "50", "--seed", "7")
    assert load_from_disk(str(tmp_path / "c"))["train"]["completion"] != a["train"]["completion"]


@pytest.mark.parametrize("mode", ["line", "next-line", "chunk"])
def test_other_modes(mode, raw_jsonl, tiny_tokenizer_dir, tmp_path):
    stats = run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "ds", "--mode", mode)
    dd = load_from_disk(str(tmp_path / "ds"))
    comps = dd["train"]["completion"]
    if mode == "line":
        assert all("\n" not in c for c in comps)
    elif mode == "next-line":
        assert all(c.startswith("\n") and c.count("\n") == 1 for c in comps)
    else:
        assert stats["token_lengths"]["completion"]["p50"] == 24  # fixed-size chunks
    assert stats["examples"]["train"] == len(comps) > 0
    assert stats["windowing"] == {"mode": mode, "prompt_tokens": 48, "completion_tokens": 24, "stride": 24}


def test_push_to_hub_card(prepared, raw_jsonl, tiny_tokenizer_dir, tmp_path, monkeypatch):
    import codelora.hub as hub

    calls = {}
    monkeypatch.setattr(hub, "check_push_access", lambda repo_id: calls.setdefault("checked", "tok"))

    def fake_push(dd, repo_id, *, token, card, private=False):
        calls.update(repo_id=repo_id, token=token, card=card, splits={k: len(v) for k, v in dd.items()})
        return f"datasets/{repo_id}"

    monkeypatch.setattr(hub, "push_dataset", fake_push)
    stats = run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "ds", "--push-to-hub", "me/kotlin")
    assert calls["repo_id"] == "me/kotlin" and calls["token"] == "tok"
    assert calls["splits"] == stats["examples"]
    card = calls["card"]
    assert card.startswith("---\n") and stats["sources"][0]["commit"] in card
    assert f"| train | {stats['files_per_split']['train']} | {stats['examples']['train']} |" in card
    assert "dropped `long_digit_run`: 1" in card


# ------------------------------------------------------------------------------ bad inputs


def bad(argv, capsys, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "keep.txt").write_text("OLD")
    code = preprocess_main(argv + ["--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert (out / "keep.txt").read_text() == "OLD" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    return err.strip().splitlines()[-1]


def test_bad_inputs(raw_jsonl, tiny_tokenizer_dir, tmp_path, capsys, monkeypatch):
    tok = ["--tokenizer", str(tiny_tokenizer_dir)]
    out = tmp_path / "o" / "ds"
    assert "no such file" in bad(["--input", str(tmp_path / "missing.jsonl"), *tok], capsys, out)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"file_text": "x", "path": "a"}\n{not json\n')
    assert "broken.jsonl:2: malformed JSON line" in bad(["--input", str(broken), *tok], capsys, out)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": "x"}\n')
    assert "lacks a string file_text" in bad(["--input", str(wrong), *tok], capsys, out)
    assert "cannot load tokenizer" in bad(["--input", str(raw_jsonl), "--tokenizer", str(tmp_path / "nope")],
                                          capsys, out)
    assert "cannot load tokenizer 'no-such-org/no-such-tok'" in bad(
        ["--input", str(raw_jsonl), "--tokenizer", "no-such-org/no-such-tok"], capsys, out)
    assert "every file was dropped" in bad(["--input", str(raw_jsonl), *tok, "--min-lines", "10000"], capsys, out)
    # no way to push (offline, or no credentials): detected before the tokenizer is even loaded
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(preprocess, "load_tokenizer", lambda name: pytest.fail("work started"))
    assert "cannot push to me/ds" in bad(["--input", str(raw_jsonl), *tok, "--push-to-hub", "me/ds"], capsys, out)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert preprocess_main(["--input", str(raw_jsonl), *tok, "--output", str(blocker / "ds")]) == 2
    assert "not a writable directory" in capsys.readouterr().err
    assert preprocess_main(["--input", str(raw_jsonl), *tok, "--output", str(blocker)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert blocker.read_text() == "x"


def test_repeated_run_replaces_output(prepared, raw_jsonl, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "ds"
    run_pre(raw_jsonl, tiny_tokenizer_dir, out)
    before = Counter(load_from_disk(str(out))["train"]["path"])
    run_pre(raw_jsonl, tiny_tokenizer_dir, out, "--max-train-samples", "10")
    assert len(load_from_disk(str(out))["train"]) == 10 and sum(before.values()) > 10


def test_empty_split_keeps_the_schema(raw_jsonl, tiny_tokenizer_dir, tmp_path):
    code = preprocess_main(["--input", str(raw_jsonl), "--tokenizer", str(tiny_tokenizer_dir),
                            "--output", str(tmp_path / "ds"), "--train-ratio", "0.9", "--validation-ratio", "0"])
    assert code == 0
    dd = load_from_disk(str(tmp_path / "ds"))
    assert len(dd["validation"]) == 0 and len(dd["test"]) > 0
    assert dd["validation"].features == dd["train"].features
    assert dd["train"].features["commit"].dtype == "string"
