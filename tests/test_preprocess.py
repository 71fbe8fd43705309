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
from codelora.parse import main as parse_main
from tests.conftest import make_git_repo

# short lines: each fits one completion (24 tokens of the tiny tokenizer), so no window is cut mid-line
KDOC = "    /**\n     * Compares this value\n     * with the other value\n     * for its order.\n     */\n"
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
    # a near-copy (one function rewritten) and a file that shares only a KDoc block with Thing7:
    # both must land in the split of what they copy
    files["d/Twin.kt"] = kotlin_file(500).replace("val y = x * 1 + 500", "val y = x shl 3")
    files["src/Thing7.kt"] = files["src/Thing7.kt"].replace("class Thing7 {\n", "class Thing7 {\n" + KDOC)
    files["e/Sibling.kt"] = "package demo.sibling\n\nclass Sibling {\n" + KDOC + "    fun other(): Int = 7\n}\n"
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
    assert stats["files"] == {"input": 49, "kept": 45, "license_stripped": 21, "dropped": {
        "too_few_lines": 1, "long_digit_run": 1, "long_token": 1, "special_token_text": 1}}
    assert stats["files_per_split"] == {"train": 37, "validation": 4, "test": 4}
    assert stats["examples"] == {s: len(dd[s]) for s in dd}
    assert stats["token_lengths"]["completion"]["max"] <= 24
    assert stats["token_lengths"]["prompt"]["max"] <= 48
    assert stats["grouping"]["jaccard_links"] >= 1 and stats["grouping"]["passage_links"] >= 1
    assert stats["grouping"]["files_in_shared_groups"] == 6 and stats["grouping"]["largest_group"] == 4
    assert stats["parse"]["kept"] == 49 and stats["sources"][0]["commit"]
    assert (out / "config.yaml").is_file()


def test_leakage_is_what_a_brute_force_search_finds(prepared):
    out, stats = prepared
    dd = load_from_disk(str(out))
    train_texts = [p + c for p, c in zip(dd["train"]["prompt"], dd["train"]["completion"])]
    for split in ("validation", "test"):
        comps = [c for c in dd[split]["completion"] if len(c.replace(" ", "").replace("\n", "")) > 3]
        leaked = sum(any(c in t for t in train_texts) for c in comps)
        report = stats["leakage"][split]
        assert (report["counted"], report["leaked"]) == (len(comps), leaked)
        assert report["completions"] == len(dd[split])


def test_dedup_near_drops_copies_inside_train(raw_jsonl, tiny_tokenizer_dir, tmp_path):
    stats = run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "ds", "--dedup", "near", "--train-ratio", "1.0",
                    "--validation-ratio", "0")
    # b/ and c/Twin.kt are whitespace variants of a/Twin.kt, d/Twin.kt a near-copy
    assert stats["grouping"]["dedup_dropped"] == {"exact_duplicate": 2, "near_duplicate": 1}
    paths = set(load_from_disk(str(tmp_path / "ds"))["train"]["path"])
    assert len(paths & {"a/Twin.kt", "b/Twin.kt", "c/Twin.kt", "d/Twin.kt"}) == 1
    assert stats["files_per_split"]["train"] == stats["files"]["kept"] - 3


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
    twins = {next(iter(where[p])) for p in ("a/Twin.kt", "b/Twin.kt", "c/Twin.kt", "d/Twin.kt")}
    assert len(twins) == 1
    assert where["e/Sibling.kt"] == where["src/Thing7.kt"]
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
    leak = stats["leakage"]["test"]
    assert f"| test | {leak['counted']} | {leak['leaked']} | {100 * leak['fraction']:.2f}% |" in card


# ------------------------------------------------------------------------------ bad inputs


def fake_earlier_output(out: Path) -> dict[str, str]:
    """A directory that looks like an earlier preprocess output (what --overwrite may replace)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"dataset_dict.json": '{"splits": ["train", "validation", "test"]}',
             "stats.json": json.dumps({"windowing": {"mode": "lines"}}), "keep.txt": "OLD"}
    for name, text in files.items():
        (out / name).write_text(text)
    return files


def bad(argv, capsys, out: Path) -> str:
    files = fake_earlier_output(out)
    code = preprocess_main(argv + ["--output", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_text() for p in out.iterdir()} == files  # the earlier output is intact
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    return err.strip()


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
    assert "no such directory" in bad(["--input", str(raw_jsonl), "--tokenizer", str(tmp_path / "nope")],
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


def test_repeated_run_replaces_output_only_with_overwrite(prepared, raw_jsonl, tiny_tokenizer_dir, tmp_path,
                                                          capsys):
    out = tmp_path / "ds"
    run_pre(raw_jsonl, tiny_tokenizer_dir, out)
    before = Counter(load_from_disk(str(out))["train"]["path"])
    code = preprocess_main(["--input", str(raw_jsonl), "--tokenizer", str(tiny_tokenizer_dir), "--output", str(out)])
    assert code == 2 and "pass --overwrite" in capsys.readouterr().err
    assert Counter(load_from_disk(str(out))["train"]["path"]) == before
    run_pre(raw_jsonl, tiny_tokenizer_dir, out, "--max-train-samples", "10", "--overwrite")
    assert len(load_from_disk(str(out))["train"]) == 10 and sum(before.values()) > 10


def test_empty_split_keeps_the_schema(raw_jsonl, tiny_tokenizer_dir, tmp_path):
    code = preprocess_main(["--input", str(raw_jsonl), "--tokenizer", str(tiny_tokenizer_dir),
                            "--output", str(tmp_path / "ds"), "--train-ratio", "0.9", "--validation-ratio", "0"])
    assert code == 0
    dd = load_from_disk(str(tmp_path / "ds"))
    assert len(dd["validation"]) == 0 and len(dd["test"]) > 0
    assert dd["validation"].features == dd["train"].features
    assert dd["train"].features["commit"].dtype == "string"


# ------------------------------------------------------------------------------ the data stage's defects


def test_output_that_is_not_our_dataset_is_never_deleted(raw_jsonl, tiny_tokenizer_dir, tmp_path, capsys,
                                                          monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    own_input = work / "raw.jsonl"
    own_input.write_bytes(raw_jsonl.read_bytes())
    (work / "notes.txt").write_text("mine")
    tok = ["--tokenizer", str(tiny_tokenizer_dir)]
    for extra in ([], ["--overwrite"]):
        code = preprocess_main(["--input", str(raw_jsonl), *tok, "--output", str(work), *extra])
        err = capsys.readouterr().err
        assert code == 2 and "holds files preprocess_data.py did not write (notes.txt, raw.jsonl)" in err, err
        code = preprocess_main(["--input", str(own_input), *tok, "--output", str(work), *extra])
        err = capsys.readouterr().err
        assert code == 2 and "holds --input" in err, err
        assert sorted(p.name for p in work.iterdir()) == ["notes.txt", "raw.jsonl"]
    # `--output .` (the working directory, or any directory above it) is refused before any work
    monkeypatch.chdir(work)
    monkeypatch.setattr(preprocess, "load_tokenizer", lambda name: pytest.fail("work started"))
    for out in (".", "..", str(work)):
        code = preprocess_main(["--input", str(own_input), *tok, "--output", out, "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2 and "--output" in err, err
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt", "raw.jsonl"]
    # an empty directory holds nothing to lose: it is used
    monkeypatch.undo()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_pre(raw_jsonl, tiny_tokenizer_dir, empty)["files"]["kept"] == 45


def test_input_errors_name_the_file_and_line(raw_jsonl, tiny_tokenizer_dir, tmp_path, capsys):
    tok = ["--tokenizer", str(tiny_tokenizer_dir)]
    out = tmp_path / "o" / "ds"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert bad(["--input", str(empty), *tok], capsys, out).endswith(f"{empty}: no records")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    assert bad(["--input", str(blank), *tok], capsys, out).endswith(f"{blank}: no records")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"file_text": "x", "path": "a"}\n{"file_text": "caf\xe9", "path": "b"}\n')
    assert f"{latin}:2: not UTF-8" in bad(["--input", str(latin), *tok], capsys, out)
    gap = tmp_path / "gap.jsonl"
    gap.write_text('{"file_text": "x", "path": "a"}\n\n\n{"file_text": "y"}\n')
    assert f"{gap}:4: lacks a string" in bad(["--input", str(gap), *tok], capsys, out)
    missing_dir = tmp_path / "no" / "such-tokenizer"
    for spec in (str(missing_dir), "./no-such-tokenizer-dir", "~/no-such-tokenizer-dir"):
        err = bad(["--input", str(raw_jsonl), "--tokenizer", spec], capsys, out)
        assert "no such directory" in err and "repo id" not in err.lower(), err


def test_sigterm_leaves_no_work_directory(raw_jsonl, tiny_tokenizer_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out" / "ds"
    started = tmp_path / "started"
    # The real CLI in a child process, held inside the work directory (by a slow split) until killed.
    script = (
        "import sys, time, pathlib\n"
        "from codelora import preprocess\n"
        "real = preprocess.split_groups\n"
        "def slow(*a, **k):\n"
        f"    pathlib.Path({str(started)!r}).write_text('x')\n"
        "    time.sleep(60)\n"
        "    return real(*a, **k)\n"
        "preprocess.split_groups = slow\n"
        "sys.exit(preprocess.main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, "--input", str(raw_jsonl), "--tokenizer",
                             str(tiny_tokenizer_dir), "--output", str(out)],
                            cwd=Path(__file__).resolve().parents[1], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), proc.communicate(timeout=30)
    assert [p.name for p in out.parent.iterdir() if ".work-" in p.name]  # the work dir exists now
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert list(out.parent.iterdir()) == []


def test_dataset_card_size_categories_are_the_hubs():
    from codelora.cards import _size_category

    assert [_size_category(n) for n in (5, 5_000, 50_000_000, 500_000_000, 5 * 10**9, 2 * 10**12)] == [
        "n<1K", "1K<n<10K", "10M<n<100M", "100M<n<1B", "1B<n<10B", "n>1T"]


def test_contaminated_files_are_dropped_or_reported(raw_jsonl, mceval_data, tiny_tokenizer_dir, tmp_path, capsys):
    tasks = [json.loads(line) for line in mceval_data.read_text().splitlines()]
    planted = tmp_path / "planted.jsonl"
    solution = "package leak\n\n" + tasks[0]["signature"] + " " + tasks[0]["canonical_solution"] + "\n"
    planted.write_text(raw_jsonl.read_text() + json.dumps({"file_text": solution, "path": "leak/Sol.kt"}) + "\n")
    stats = run_pre(planted, tiny_tokenizer_dir, tmp_path / "a", "--contamination-data", str(mceval_data))
    report = stats["contamination"]
    assert report["checked"] and report["files_hit"] == 1 and report["dropped"] == 1
    assert report["examples"][0]["path"] == "leak/Sol.kt" and report["tasks_hit"] == {"mceval_kotlin.jsonl": 1}
    assert stats["files"]["kept"] - 1 == sum(stats["files_per_split"].values())
    dd = load_from_disk(str(tmp_path / "a"))
    assert all("leak/Sol.kt" not in set(dd[s]["path"]) for s in dd)
    kept = run_pre(planted, tiny_tokenizer_dir, tmp_path / "b", "--contamination-data", str(mceval_data),
                   "--no-drop-contaminated")
    assert kept["contamination"]["files_hit"] == 1 and kept["contamination"]["dropped"] == 0
    assert not run_pre(raw_jsonl, tiny_tokenizer_dir, tmp_path / "c")["contamination"]["checked"]
    # a missing benchmark file fails before any work
    code = preprocess_main(["--input", str(raw_jsonl), "--tokenizer", str(tiny_tokenizer_dir), "--output",
                            str(tmp_path / "d"), "--contamination-data", str(tmp_path / "nope.jsonl")])
    assert code == 2 and "nope.jsonl: no such file" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_column_reads_through_select_indices():
    """column() reads the Arrow table straight through a select()'s indices mapping; it must
    give what row-by-row access gives, for a plain dataset, a select, a select of a select (the
    mapping composed), a shuffle, and an empty select."""
    from datasets import Dataset

    ds = Dataset.from_dict({"n": list(range(50)), "s": [f"r{i}" for i in range(50)],
                            "b": [bytes([i]) * (i % 3) for i in range(50)]})
    views = {"plain": ds, "select": ds.select([7, 3, 3, 40]),
             "select of select": ds.select(range(10, 50, 2)).select([5, 0, 19]),
             "shuffle": ds.shuffle(seed=1), "empty": ds.select([])}
    for label, view in views.items():
        for name in ("n", "s", "b"):
            assert preprocess.column(view, name) == [row[name] for row in view], (label, name)
    assert preprocess.column(views["select of select"], "n") == [20, 10, 48]
