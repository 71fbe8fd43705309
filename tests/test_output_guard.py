"""Issue 24, data loss: every stage that writes a directory against every dangerous --output.

One small project is built once by the real stages (bootstrap → parse → preprocess → train →
merge → benchmark). Then each directory-writing stage is pointed, with --overwrite where it has
one, at its own input, a directory above its input, the working directory, and another stage's
output: each must refuse with one line that says what is in the way (never "pass --overwrite"),
and nothing anywhere in the project may change (a hash of the whole tree before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import KOTLIN_SNIPPETS, PYTHON_SNIPPETS, TINY_MODEL_ARGS, make_git_repo

from codelora import cli, demo

TINY_BOOT = ["--vocab-size", "300", *TINY_MODEL_ARGS, "--max-positions", "128", "--batch-size", "4",
             "--steps", "2", "--warmup-steps", "1"]
SMALL_WINDOWS = [
    "--prompt-tokens",
    "32",
    "--completion-tokens",
    "16",
    "--stride",
    "32",
    "--train-ratio",
    "0.6",
    "--validation-ratio",
    "0.2",
    "--min-lines",
    "2",
]


def benchmark_argv(w: Path) -> list[str]:
    """The benchmark of the project's base and merged models, without its output flag."""
    models = [str(w / "base"), str(w / "runs" / "r" / "merged")]
    return ["benchmark", "--models", *models, "--tasks", "heldout", "--dataset", str(w / "data" / "prepared"),
            "--sample", "2", "--max-new-tokens", "2", "--batch-size", "2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tree(root: Path) -> dict[str, str]:
    """Every file and directory under `root` (dot-files included) -> a hash of its content."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        out[base.relative_to(root).as_posix() + "/"] = "dir"
        for name in filenames:
            path = base / name
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """W/src/corpus (bootstrap's text), W/src/repo (the project), W/src/raw.jsonl, W/base (bootstrap),
    W/data/prepared (preprocess), W/runs/r (train, with merged/ from merge), W/results (benchmark)."""
    w = tmp_path_factory.mktemp("guard") / "w"
    corpus = w / "src" / "corpus"
    corpus.mkdir(parents=True)
    for i, text in enumerate((KOTLIN_SNIPPETS + PYTHON_SNIPPETS) * 4):
        (corpus / f"f{i}.py").write_text(text)
    files = {f"src/F{i}.kt": text * 3 for i, text in enumerate(KOTLIN_SNIPPETS * 4)}
    repo = make_git_repo(w / "src" / "repo", files)
    torch.set_num_threads(1)
    run = [
        [
            "bootstrap",
            "--inputs",
            str(corpus),
            "--extensions",
            ".py",
            "--output",
            str(w / "base"),
            *TINY_BOOT,
        ],
        ["parse", "--repo", str(repo), "--output", str(w / "src" / "raw.jsonl")],
        [
            "preprocess",
            "--input",
            str(w / "src" / "raw.jsonl"),
            "--tokenizer",
            str(w / "base"),
            "--output",
            str(w / "data" / "prepared"),
            *SMALL_WINDOWS,
        ],
        [
            "train",
            "--base-model",
            str(w / "base"),
            "--dataset",
            str(w / "data" / "prepared"),
            "--output-dir",
            str(w / "runs" / "r"),
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--save-steps",
            "1",
            "--eval-steps",
            "100",
            "--lora-r",
            "2",
            "--lora-alpha",
            "4",
            "--max-length",
            "64",
        ],
        [
            "merge",
            "--adapter",
            str(w / "runs" / "r" / "adapter"),
            "--output",
            str(w / "runs" / "r" / "merged"),
        ],
        [*benchmark_argv(w), "--output", str(w / "results")],
    ]
    for argv in run:
        assert cli.main(argv) == 0, argv
    (w / "notes.txt").write_text("the user's own file, in the working directory")
    return w


def stage_argv(stage: str, w: Path) -> list[str]:
    """The stage's command on the project's real inputs, without its output flag; --overwrite where
    the stage has one (the worst case)."""
    return {
        "merge": ["merge", "--adapter", str(w / "runs" / "r" / "adapter"), "--overwrite"],
        "bootstrap": [
            "bootstrap",
            "--inputs",
            str(w / "src" / "corpus"),
            "--extensions",
            ".py",
            *TINY_BOOT,
            "--overwrite",
        ],
        "preprocess": [
            "preprocess",
            "--input",
            str(w / "src" / "raw.jsonl"),
            "--tokenizer",
            str(w / "base"),
            *SMALL_WINDOWS,
            "--overwrite",
        ],
        "train": [
            "train",
            "--base-model",
            str(w / "base"),
            "--dataset",
            str(w / "data" / "prepared"),
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--lora-r",
            "2",
            "--max-length",
            "64",
        ],
        "benchmark": benchmark_argv(w),
    }[stage]


# (stage, what the output is, the output relative to the project; "." is the working directory)
CASES = [
    ("merge", "its input", "runs/r/adapter"),
    ("merge", "a directory above its input", "runs/r"),
    ("merge", "the working directory", "."),
    ("merge", "another stage's output", "data/prepared"),
    ("bootstrap", "its input", "src/corpus"),
    ("bootstrap", "a directory above its input", "src"),
    ("bootstrap", "the working directory", "."),
    ("bootstrap", "another stage's output", "runs/r/merged"),
    ("preprocess", "its input", "base"),
    ("preprocess", "a directory above its input", "src"),
    ("preprocess", "the working directory", "."),
    ("preprocess", "another stage's output", "runs/r"),
    ("train", "its input", "data/prepared"),
    ("train", "a directory above its input", "data"),
    ("train", "the working directory", "."),
    ("train", "another stage's output", "results"),
    ("benchmark", "its input", "data/prepared"),
    ("benchmark", "a directory above its input", "data"),
    ("benchmark", "the working directory", "."),
    ("benchmark", "another stage's output", "runs/r"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "what", "rel"), CASES, ids=[f"{s}-{w.replace(' ', '_')}" for s, w, _ in CASES]
)
def test_no_stage_replaces_or_fills_a_dangerous_output(project, stage, what, rel, monkeypatch, capsys):
    monkeypatch.chdir(project)
    flag = "--output-dir" if stage == "train" else "--output"
    before = tree(project)
    for out in {rel, str(project / rel)}:  # relative and absolute spellings
        code = cli.main([*stage_argv(stage, project), flag, out])
        err = capsys.readouterr().err.strip()
        assert code == 2, f"{stage} --output {out} ({what}) was not refused: {err}"
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"{flag} {out}:" in err and "--overwrite" not in err, err  # says what is in the way
        assert tree(project) == before, f"{stage} --output {out} ({what}) changed the project"


@pytest.mark.slow
def test_a_stage_still_replaces_or_continues_its_own_output(project, monkeypatch, capsys):
    """The guard lets through exactly what it should: a stage's own earlier output (marked)."""
    monkeypatch.chdir(project)
    from codelora.contracts import OUTPUT_MARKER

    merged = project / "runs" / "r" / "merged"
    assert json.loads((merged / OUTPUT_MARKER).read_text())["stage"] == "merge"
    code = cli.main(["merge", "--adapter", str(project / "runs" / "r" / "adapter"), "--output", str(merged)])
    err = capsys.readouterr().err
    assert code == 2 and "holds an earlier merge_lora.py output (pass --overwrite to replace it)" in err
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    assert cli.main([*stage_argv("merge", project), "--output", str(merged)]) == 0
    assert (merged / "model.safetensors").stat().st_mtime_ns != stamp
    # the benchmark continues into its own output: every prediction is cached (the merge rebuilt the
    # same weights), nothing is generated again
    assert cli.main([*stage_argv("benchmark", project), "--output", str(project / "results")]) == 0
    assert "examples to generate" not in capsys.readouterr().out


def test_an_empty_or_new_directory_is_used(tmp_path):
    from codelora.utils import guard_output_dir

    (tmp_path / "empty").mkdir()
    guard_output_dir(tmp_path / "empty", stage="merge", prog="merge_lora.py")
    guard_output_dir(tmp_path / "new" / "dir", stage="merge", prog="merge_lora.py")


def test_the_demo_never_replaces_a_directory_it_did_not_build(tmp_path, monkeypatch, capsys):
    """The demo's corpus repositories are rebuilt in place when their identity
    changes: only where the demo's own marker is, never a user's directory of the same name."""
    mine = tmp_path / "stdlib-repo"
    mine.mkdir()
    (mine / "thesis.tex").write_text("two years of work")
    before = tree(tmp_path)
    with pytest.raises(Exception, match="demo corpus .*stdlib-repo: holds files the demo did not write"):
        demo.build_stdlib_repo(mine, max_files=3)
    # through the command, with a demo config naming that directory
    config = {"bootstrap": {"inputs": [str(mine)]}, "parse": {"repo": [str(tmp_path / "pytorch-repo")]}}
    path = tmp_path / "demo.yaml"
    path.write_text(json.dumps(config))
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--config", str(path), "--max-files", "3"]) == 2
    err = capsys.readouterr().err
    assert "holds files the demo did not write (thesis.tex)" in err, err
    assert tree(tmp_path) == before
    # its own repository is rebuilt when asked for other files
    built = demo.build_stdlib_repo(tmp_path / "own" / "stdlib-repo", max_files=3)
    demo.build_stdlib_repo(built, max_files=4)


def test_the_pipeline_checks_every_output_before_the_first_stage(tmp_path, monkeypatch, capsys):
    """A pipeline whose merge would replace the training run is refused before bootstrap or parse
    run: nothing is written anywhere."""
    import yaml

    from codelora import pipeline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    config = {
        "pipeline": {"stages": ["parse", "preprocess", "train", "merge"]},
        "parse": {"repo": [str(tmp_path / "repo")], "output": "data/raw.jsonl"},
        "preprocess": {"input": "data/raw.jsonl", "tokenizer": "tok", "output": "data/ds"},
        "train": {"base_model": "base", "dataset": "data/ds", "output_dir": "."},
        "merge": {"adapter": "adapter", "output": "merged"},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    before = tree(tmp_path)
    assert pipeline.main(["--config", "p.yaml"]) == 2
    err = capsys.readouterr().err
    assert "--output-dir .: is the working directory" in err, err
    assert tree(tmp_path) == before


def test_parse_never_overwrites_a_file_it_did_not_write(tmp_path, monkeypatch, capsys):
    """parse_data.py writes a file: an existing one is replaced only when it is an earlier parse
    output (its .stats.json sidecar beside it), never a file of the user's."""
    repo = make_git_repo(tmp_path / "repo", {"a.kt": "fun a() = 1\n" * 5})
    mine = tmp_path / "README.md"
    mine.write_text("my notes")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["parse", "--repo", str(repo), "--output", "README.md"]) == 2
    assert "--output README.md: exists and is not a parse_data.py output" in capsys.readouterr().err
    assert mine.read_text() == "my notes"
    assert cli.main(["parse", "--repo", str(repo), "--output", "raw.jsonl"]) == 0
    assert cli.main(["parse", "--repo", str(repo), "--output", "raw.jsonl"]) == 0  # its own: replaced
