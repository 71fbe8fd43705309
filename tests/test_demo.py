"""The offline demo: its corpora as git repositories (JetBrains' Kotlin from the sources jars of the
installed compiler for `make demo`; the interpreter's stdlib and parts of the installed torch for
`make demo-python`), a local tokenizer, the gain breakdown, and the whole Kotlin pipeline end to end
on small slices of both corpora."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from datasets import Dataset, DatasetDict, load_from_disk

from codelora import demo
from tests.conftest import git


def test_build_stdlib_repo_is_committed_reproducible_and_reused(tmp_path):
    repo = demo.build_stdlib_repo(tmp_path / "a", max_files=30)
    tracked = git(repo, "ls-files").splitlines()
    assert len(tracked) == 30 and all(p.endswith(".py") for p in tracked)
    assert not any(part in demo.EXCLUDED_PARTS for p in tracked for part in p.split("/")[:-1])
    assert git(repo, "status", "--porcelain") == ""  # everything committed
    first = (repo / tracked[0]).read_bytes()
    assert first == (demo.stdlib_dir() / tracked[0]).read_bytes()
    sha = git(repo, "rev-parse", "HEAD")
    # fixed identity and dates: a rebuild elsewhere gives the same commit
    assert git(demo.build_stdlib_repo(tmp_path / "b", max_files=30), "rev-parse", "HEAD") == sha
    marker = repo / ".git" / "codelora-corpus-repo.json"
    stamp = marker.stat().st_mtime_ns
    assert demo.build_stdlib_repo(repo, max_files=30) == repo and marker.stat().st_mtime_ns == stamp
    demo.build_stdlib_repo(repo, max_files=20)  # a different request rebuilds
    assert len(git(repo, "ls-files").splitlines()) == 20


def test_build_target_repo_holds_the_torch_subpackages(tmp_path):
    repo = demo.build_target_repo(tmp_path / "t", max_files=25)
    tracked = git(repo, "ls-files").splitlines()
    assert len(tracked) == 25 and all(p.endswith(".py") for p in tracked)
    # every file comes from one of the chosen subpackages, and more than one subpackage is sampled
    subs = {p.split("/")[1] for p in tracked}
    assert all(p.startswith("torch/") for p in tracked) and subs <= set(demo.TARGET_SUBPACKAGES)
    assert len(subs) > 1
    pkg = demo.target_package_dir()
    assert (repo / tracked[-1]).read_bytes() == (pkg.parent / tracked[-1]).read_bytes()
    assert git(repo, "status", "--porcelain") == ""
    # disjoint from the stdlib corpus the base is pretrained on
    stdlib = {p.as_posix() for p in demo.stdlib_files()}
    assert not stdlib & set(tracked)
    sha = git(repo, "rev-parse", "HEAD")
    assert git(demo.build_target_repo(tmp_path / "u", max_files=25), "rev-parse", "HEAD") == sha


def test_kotlin_corpora_come_from_the_sources_jars_and_share_no_file(tmp_path):
    pretrain = demo.build_kotlin_pretrain_repo(tmp_path / "kotlin-stdlib-repo", max_files=30)
    target = demo.build_kotlin_target_repo(tmp_path / "kotlin-reflect-repo", max_files=20)
    tracked = {repo: git(repo, "ls-files").splitlines() for repo in (pretrain, target)}
    assert len(tracked[pretrain]) == 30 and len(tracked[target]) == 20
    for repo, jars in ((pretrain, demo.KOTLIN_PRETRAIN_JARS), (target, demo.KOTLIN_TARGET_JARS)):
        assert all(p.endswith(".kt") and p.split("/")[0] in jars for p in tracked[repo])
        assert len({p.split("/")[0] for p in tracked[repo]}) > 1  # spread over the jars, not the first one
        assert git(repo, "status", "--porcelain") == ""
        # each file is the jar entry, byte for byte
        jar, _, name = tracked[repo][-1].partition("/")
        with zipfile.ZipFile(demo.KOTLIN_LIB / f"{jar}-sources.jar") as archive:
            assert (repo / tracked[repo][-1]).read_bytes() == archive.read(name)
    # reproducible: the same commit from another build
    assert (git(demo.build_kotlin_target_repo(tmp_path / "again", max_files=20), "rev-parse", "HEAD")
            == git(target, "rev-parse", "HEAD"))
    # over the full corpora: stdlib-js's byte-identical copies of stdlib files are dropped, and no
    # finetuning file has the content of a pretraining file
    full_pretrain = demo.kotlin_sources(demo.KOTLIN_PRETRAIN_JARS)
    full_target = demo.kotlin_sources(demo.KOTLIN_TARGET_JARS, skip=demo._digests(full_pretrain))
    with zipfile.ZipFile(demo.KOTLIN_LIB / "kotlin-stdlib-js-sources.jar") as archive:
        js = [n for n in archive.namelist() if n.endswith(".kt")]
    assert 0 < sum(p.startswith("kotlin-stdlib-js/") for p in full_pretrain) < len(js)
    assert len(demo._digests(full_pretrain)) == len(full_pretrain)
    assert not demo._digests(full_pretrain) & demo._digests(full_target)
    assert len(full_target) > 400  # reflect + metadata: most of the ~475 .kt files
    # the general-loss corpus: the pretraining jars' files as parse_data.py records, none a target file
    general = [json.loads(x) for x in demo.build_kotlin_general_jsonl(tmp_path / "g.jsonl").read_text().splitlines()]
    assert len(general) == len(full_pretrain) and {r["path"] for r in general} == set(full_pretrain)
    assert all(r["file_text"].encode() == full_pretrain[r["path"]] for r in general)
    assert not {r["file_text"] for r in general} & {c.decode() for c in full_target.values()}


def test_kotlin_demo_without_the_compiler_says_make_kotlin(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "KOTLIN_LIB", tmp_path / "no-kotlinc" / "lib")
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--config", str(demo.DEFAULT_CONFIG)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("demo: error: the Kotlin demo's corpora are the sources jars")
    assert "run `make kotlin`" in err[0]
    assert not (tmp_path / ".demo").exists()


def test_demo_configs_name_their_corpora(tmp_path, monkeypatch, capsys):
    config = yaml.safe_load(demo.DEFAULT_CONFIG.read_text())
    assert demo.corpus_repo_paths(config) == ([Path(".demo/kotlin-stdlib-repo")], Path(".demo/kotlin-reflect-repo"))
    python = yaml.safe_load((demo.DEFAULT_CONFIG.parent / "demo-python.yaml").read_text())
    assert demo.corpus_repo_paths(python) == ([Path(".demo/stdlib-repo")], Path(".demo/pytorch-repo"))
    smollm2 = yaml.safe_load((demo.DEFAULT_CONFIG.parent / "demo-smollm2.yaml").read_text())
    assert demo.corpus_repo_paths(smollm2) == ([], Path(".demo/kotlin-reflect-repo"))  # a pretrained base
    assert Path(smollm2["benchmark"]["loss_data"]).name in demo.LOSS_CORPORA
    config["parse"]["repo"] = ["https://github.com/JetBrains/kotlin"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["demo: error: the demo config's parse.repo must name one local demo corpus path (directory "
                   "names: stdlib-repo, pytorch-repo, kotlin-stdlib-repo, kotlin-reflect-repo)"]
    assert not (tmp_path / ".demo").exists()  # refused before building anything


def test_gain_breakdown_splits_layout_from_content(tmp_path):
    """Four held-out windows with known predictions: the layout, content and seen/unseen numbers
    are what they must be."""
    corpus = tmp_path / "corpus.kt"
    corpus.write_text("fun seen() = 1\n")
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    (base_dir / "bootstrap.json").write_text(json.dumps({"file_list": [str(corpus)]}))
    dataset = tmp_path / "ds"
    DatasetDict({"train": Dataset.from_dict({"completion": ["\n    return x"]})}).save_to_disk(str(dataset))
    refs = ["\n    return x", "\n    val y = f(x)", "\nfun seen() = 1", "\n    if (a) b"]
    base_preds = ["\nreturn x", "\n    val y = g(x)", "\nfun seen() = 2", ""]
    tuned_preds = ["\n    return x", "\n  val   y = f(x)", "\nfun seen() = 1", "\n    if (a) b"]
    results = tmp_path / "results"
    (results / "examples").mkdir(parents=True)
    (results / "summary.json").write_text(json.dumps({"models": ["b", "t"]}))
    (results / "examples" / "heldout.jsonl").write_text("".join(
        json.dumps({"reference": r, "predictions": {"b": pb, "t": pt}}) + "\n"
        for r, pb, pt in zip(refs, base_preds, tuned_preds)))
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
            for line in demo.gain_breakdown(results, dataset, base_dir).splitlines() if line.startswith("| ")}
    # layout right: base only window 2 and 3; tuned: 1, 3, 4 (window 2 indents by 2, not 4)
    assert rows["line breaks + indentation exactly right (%)"][:3] == ["4", "50.00", "75.00"]
    # with whitespace squashed, windows 1 and 2 are exact for the tuned model
    content = rows["ES of the text with whitespace squashed (content)"]
    assert content[0] == "4" and float(content[2]) == 100.0
    assert rows["ES (raw text) where both models get line breaks + indentation right"][0] == "1"
    # window 1 is in train, window 3 in the base's corpus: two unseen windows remain
    assert rows["ES (raw text) where the reference is in neither train nor the base's corpus"][0] == "2"
    text = demo.gain_breakdown(results, dataset, base_dir)
    assert "in the finetuning train split (verbatim): 1/4 (25.0%)" in text
    assert "base's pretraining corpus: 1/4 (25.0%)" in text


def test_demo_runs_the_whole_pipeline(tmp_path, monkeypatch, capsys):
    """`make demo`'s code path on a scaled-down copy of configs/demo.yaml: the two Kotlin corpus
    repos from the sources jars, bootstrap, parse, preprocess, train, merge, benchmark; then the
    table, the gain breakdown and the report are there."""
    config = yaml.safe_load(demo.DEFAULT_CONFIG.read_text())
    config["bootstrap"].update(vocab_size=300, hidden_size=32, layers=2, heads=2, seq_length=64, batch_size=4,
                               steps=5, max_seconds=None)
    config["preprocess"].update(max_train_samples=64, num_proc=1, prompt_tokens=48, completion_tokens=16,
                                stride=48)
    config["train"].update(max_steps=4, batch_size=4, eval_steps=2, save_steps=2, max_length=96)
    config["benchmark"].update(sample=6, batch_size=6)
    config["export"].update(sample=3, types=["f16"])
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--config", str(path), "--max-files", "40"]) == 0
    out = capsys.readouterr().out
    assert "heldout" in out and "What the held-out gain is made of" in out and "demo: done" in out
    assert "Where the time went" in out  # each stage's seconds, from the marker the pipeline wrote
    # and how to run the export: the llama-server and Ollama commands of its EDITORS.md, in its folder
    hint = out[out.index("In your editor"):]
    assert f"cd {config['export']['output']}" in hint and "llama-server -m " in hint and "ollama create " in hint
    for stage in config["pipeline"]["stages"]:
        assert f"| stage {stage} |" in out and f"| stage {stage} | n/a |" not in out
    results = tmp_path / config["benchmark"]["output"]
    summary = json.loads((results / "summary.json").read_text())
    assert summary["models"] == config["benchmark"]["models"]
    assert summary["tasks"]["heldout"]["n"] == 6
    assert (results / "report.html").stat().st_size > 1000
    assert "| ES (raw text) | 6 |" in (results / "breakdown.md").read_text()
    merged = tmp_path / config["merge"]["output"] / "model.safetensors"
    assert merged.is_file()
    # the last stage: the merged model as GGUF, checked in llama.cpp by the parity gate
    exported = tmp_path / config["export"]["output"]
    assert len(list(exported.glob("*.gguf"))) == 1 and (exported / "Modelfile").is_file()
    assert (exported / "parity.md").read_text().rstrip().endswith("PASSED")
    dd = load_from_disk(str(tmp_path / config["preprocess"]["output"]))
    assert set(dd) == {"train", "validation", "test"} and len(dd["train"]) == 64
    # the model learned from the Kotlin corpora: pretrained on the stdlib jars, finetuned on reflect/metadata
    base_files = json.loads((tmp_path / config["bootstrap"]["output"] / "bootstrap.json").read_text())["file_list"]
    assert base_files and all("kotlin-stdlib-repo/kotlin-" in f and f.endswith(".kt") for f in base_files)
    assert {Path(p).parts[0] for p in dd["test"]["path"]} <= set(demo.KOTLIN_TARGET_JARS)
    # a second run finds every stage up to date and redoes nothing
    stamp = merged.stat().st_mtime_ns
    assert demo.main(["--config", str(path), "--max-files", "40"]) == 0
    assert capsys.readouterr().err.count(": up to date (") == len(config["pipeline"]["stages"])  # logs: stderr
    assert merged.stat().st_mtime_ns == stamp


def test_demo_maps_failures_to_exit_codes_like_every_stage(monkeypatch, capsys):
    """demo.main uses the stages' mapping: an unexpected failure is one line and exit 1, Ctrl-C 130."""
    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(demo, "run_demo", fail)
    assert demo.main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["demo: error: RuntimeError: disk on fire (rerun with --debug for a traceback)"]

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupt)
    assert demo.main([]) == 130
    assert capsys.readouterr().err.strip() == "demo: interrupted"


def test_demo_configs_ship_inside_the_package(tmp_path, monkeypatch):
    """The default config is package data (no reach into the checkout), and a shipped config is
    found by its name from any directory."""
    import tomllib

    import codelora

    package = Path(codelora.__file__).parent
    assert demo.DEFAULT_CONFIG.parent == package / "configs" and demo.DEFAULT_CONFIG.is_file()
    globs = tomllib.loads((package.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for g in globs["codelora"] for p in package.glob(g)}
    assert {demo.DEFAULT_CONFIG, demo.CONFIGS / "demo-python.yaml"} <= shipped
    monkeypatch.chdir(tmp_path)
    assert demo.shipped_config(Path("demo-python.yaml")) == demo.CONFIGS / "demo-python.yaml"
    (tmp_path / "demo-python.yaml").write_text("parse: {}\n")  # a file of that name here wins
    assert demo.shipped_config(Path("demo-python.yaml")) == Path("demo-python.yaml")
    assert demo.shipped_config(Path("sub/demo.yaml")) == Path("sub/demo.yaml")  # a path is never replaced


def test_the_readme_real_model_figures_are_generated_from_the_saved_run():
    """The real-model demo's README block is what bench/demo_smollm2_run.json renders to (or empty,
    with no saved run): no figure in it is typed by hand."""
    readme = (Path(demo.__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for name, saved in demo.TABLE_RUNS.items():
        begin, end = demo.table_markers(name)
        block = demo.readme_figures_block(readme, begin, end)
        assert block is not None, f"the README lost the {name} figures block"
        block = block[len(begin):-len(end)].strip("\n")
        if not block:
            assert not saved.exists(), f"{saved.name} is saved but the README does not show it"
            continue
        run = json.loads(saved.read_text(encoding="utf-8"))
        assert block == demo.readme_table(run), f"README figures differ from {saved.name}: regenerate"
        assert run["codelora_commit"] and not run["codelora_commit"].endswith("-dirty")


def test_real_model_readme_table_comes_from_the_summary_and_the_run_time(tmp_path):
    summary = {
        "models": ["base", "tuned"],
        "tasks": {
            "heldout": {"n": 255, "split": "test", "metrics": ["es", "em"], "metric_labels": {"es": "ES (token-spaced)"},
                        "models": {"base": {"es": 48.2, "em": 20.0}, "tuned": {"es": 51.4, "em": None}},
                        "delta_vs_baseline": {"tuned": {"es": 3.2}}, "delta_ci95": {"tuned": {"es": [0.5, 6.1]}}},
            "general-loss": {"n": 48, "metrics": ["loss", "pass@1"],
                             "models": {"base": {"loss": 2.37, "pass@1": None}, "tuned": {"loss": 2.26}},
                             "delta_vs_baseline": {"tuned": {"loss": -0.11}}, "delta_ci95": {}},
        },
    }
    summary["task_sample"] = {"general-loss": 48}
    timing = {"commit": "abc123", "seconds": 812.4, "rows": [["stage train", "300"], ["  heldout: base", "61"]]}
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps(summary))
    (results / demo.DEMO_TIME_FILE).write_text(json.dumps(timing))
    readme = tmp_path / "README.md"
    begin, end = demo.table_markers("demo-smollm2.yaml")
    readme.write_text(f"intro\n\n{begin}\nold\n{end}\n\nrest\n")
    text = demo.update_readme_table("demo-smollm2.yaml", results, readme, tmp_path / "run.json")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert "| heldout (test) | 255 | ES (token-spaced) | 48.20 | 51.40 | +3.20 [+0.50, +6.10] |" in rows
    assert "| heldout (test) | 255 | EM | 20.00 | n/a | n/a |" in rows
    assert "| general-loss (seeded sample) | 48 | loss | 2.37 | 2.26 | -0.11 |" in rows
    assert not any("pass@1" in line for line in rows)  # no value for either model: no row
    assert "| stage train | 300 |" in rows and "the demo itself 812 s" in text and "abc123" in text
    assert readme.read_text() == f"intro\n\n{begin}\n{text}\n{end}\n\nrest\n"
    assert json.loads((tmp_path / "run.json").read_text())["seconds"] == 812.4
    (results / demo.DEMO_TIME_FILE).unlink()
    with pytest.raises(demo.UserError, match="demo_time.json is missing"):
        demo.update_readme_table("demo-smollm2.yaml", results, readme, tmp_path / "run.json")
