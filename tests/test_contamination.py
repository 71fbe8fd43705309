"""Benchmark contamination: files sharing a long word n-gram with a benchmark task are found."""

from __future__ import annotations

import json

import pytest

from codelora.contamination import contaminated_files, load_benchmarks, ngrams, token_string
from codelora.utils import UserError


def test_token_boundaries_and_ngrams():
    assert token_string("fun a(x: Int) =\n  x+1") == " fun a x Int x 1 "
    assert ngrams("a b c d", 3) == [" a b c ", " b c d "]
    assert ngrams("a b", 3) == []


def test_planted_copies_are_found_and_real_code_is_not(mceval_data, tmp_path):
    index = load_benchmarks([str(mceval_data)])
    tasks = [json.loads(line) for line in mceval_data.read_text().splitlines()]
    solution = tasks[3]["signature"] + " " + tasks[3]["canonical_solution"]
    reflowed = solution.replace("\n", "\n\n").replace("    ", "\t")  # re-indented copy: still found
    documented = next(t for t in tasks if len(t["docstring"].split()) >= 25)
    docstring = "/**\n * " + documented["docstring"] + "\n */\nfun mine() = 1\n"
    files = [("src/Copy.kt", "package x\n\n" + solution), ("src/Reflowed.kt", reflowed),
             ("src/Doc.kt", docstring),
             ("src/Own.kt", "package own\n\nfun main() {\n    for (i in 0 until 10) {\n        println(i)\n    }\n}\n")]
    flags, report = contaminated_files(index, files)
    assert flags == [True, True, True, False]
    assert report["files_hit"] == sum(flags) and report["benchmark_tasks"] == len(tasks)
    assert f"mceval_kotlin.jsonl:{tasks[3]['task_id']}" in report["examples"][0]["tasks"]
    assert report["tasks_hit"]["mceval_kotlin.jsonl"] >= 1


def test_missing_benchmark_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no-such.jsonl: no such file"):
        load_benchmarks([str(tmp_path / "no-such.jsonl")])
