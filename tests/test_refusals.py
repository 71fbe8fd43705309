"""Issue 24, the rest: typed configs, refusals before the work, and what the tools say.

Each test reproduces one case of the issue (it failed before the fix) and checks the fix: a
wrong value or a wrong combination is one clear line before any model or data loads, and every
message and figure says what it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import shutil
import typing
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from codelora import benchmarking, cli, config, demo, training
from codelora.utils import UserError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def no_model_loads(monkeypatch):
    """Fail the test if any model is loaded: the refusal must come before."""
    from codelora import generation, modeling

    def fail(*args, **kwargs):
        pytest.fail("a model was loaded before the refusal")

    for module, name in (
        (modeling, "load_base_model"),
        (generation, "load_model"),
        (benchmarking, "load_model"),
        (training, "build_model"),
        (training, "prepare_data"),
    ):
        monkeypatch.setattr(module, name, fail)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def heldout_benchmark(model: Path, data: Path, out: Path, *extra: str) -> int:
    """benchmarking.py's exit code for `heldout` on `data`, two new tokens per example."""
    return benchmarking.main(["--models", str(model), "--tasks", "heldout", "--dataset", str(data),
                              "--output", str(out), "--max-new-tokens", "2", *extra])


def small_dataset(path: Path, tokenizer_name: str | None = None, fingerprint: str | None = None) -> Path:
    from conftest import make_prepared_dataset

    make_prepared_dataset(path)
    if tokenizer_name:
        stats = {"tokenizer": tokenizer_name, "windowing": {"mode": "lines"}}
        if fingerprint:
            stats["tokenizer_fingerprint"] = fingerprint
        (path / "stats.json").write_text(json.dumps(stats))
    return path


# ----------------------------------------------------------------------------------- typed configs


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_steps: ten", "max_steps: expected an integer, got 'ten'"),
        ("lora_r: 8.5", "lora_r: expected an integer, got 8.5"),
        ("load_in_4bit: maybe", "load_in_4bit: expected true or false (or null), got 'maybe'"),
        ("learning_rate: fast", "learning_rate: expected a number, got 'fast'"),
        ("target_modules: [q_proj, 3]", "target_modules[1]: expected a string, got 3"),
        ("resume: sometimes", "resume: expected one of no, yes, auto, got 'sometimes'"),
    ],
)
def test_a_mistyped_yaml_value_names_file_and_key_before_any_work(
    line, message, tmp_path, tiny_model_dir, monkeypatch, capsys
):
    no_model_loads(monkeypatch)
    path = tmp_path / "train.yaml"
    path.write_text(
        f"base_model: {tiny_model_dir}\ndataset: {tmp_path / 'ds'}\noutput_dir: {tmp_path / 'run'}\n{line}\n"
    )
    assert training.main(["--config", str(path)]) == 2
    assert one_error_line(capsys).startswith(f"train.py: error: {path}: {message}")
    assert not (tmp_path / "run").exists()
    # the same in a sectioned file names the section
    sectioned = tmp_path / "all.yaml"
    sectioned.write_text(yaml.safe_dump({"train": yaml.safe_load(path.read_text())}))
    assert training.main(["--config", str(sectioned)]) == 2
    assert f"{sectioned}: train.{message}" in one_error_line(capsys)


def test_a_number_yaml_reads_as_a_string_is_the_number(tmp_path):
    """PyYAML reads `3e-3` (no dot) as a string; it crashed training after the model loaded."""
    path = tmp_path / "train.yaml"
    path.write_text("learning_rate: 3e-3\nmax_steps: 1e3\nload_in_4bit: no\nepochs: 2\nresume: yes\n")
    cfg = config.build_config(config.TrainConfig, config.load_yaml(path), {}, section="train")
    assert (cfg.learning_rate, cfg.max_steps, cfg.load_in_4bit, cfg.epochs, cfg.resume) == (
        0.003,
        1000,
        False,
        2,
        "yes",
    )


def _wrong_value(tp):
    tp, _ = config._unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is list:
        return [{"a": 1}]
    if origin is typing.Literal:
        return "no-such-choice"
    return {bool: "maybe", int: "ten", float: "fast", str: 12}[tp]


@pytest.mark.parametrize(
    "cls", [s.config for s in config.STAGES.values()] + [config.PipelineConfig], ids=lambda c: c.__name__
)
def test_every_config_field_is_checked_against_its_type(cls, tmp_path):
    hints = typing.get_type_hints(cls)
    path = tmp_path / "c.yaml"
    for f in dataclasses.fields(cls):
        path.write_text(yaml.safe_dump({f.name: _wrong_value(hints[f.name])}))
        with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: {f.name}(\[0\])?: expected "):
            config.build_config(cls, config.load_yaml(path), {})


# ------------------------------------------------------------------------- refusals before the work


@pytest.mark.parametrize("task", ["humaneval-kt", "mceval-kotlin", "mceval-kotlin-fim", "mbkp"])
def test_an_execution_task_without_code_execution_is_refused_before_generating(
    task, tmp_path, tiny_model_dir, monkeypatch, capsys
):
    no_model_loads(monkeypatch)
    data = ["--mceval-data", "m.jsonl", "--mbkp-data", "b.jsonl", "--humaneval-kt-data", "h.jsonl"]
    out = tmp_path / "o"
    assert (
        benchmarking.main(["--models", str(tiny_model_dir), "--tasks", task, *data, "--output", str(out)])
        == 2
    )
    err = one_error_line(capsys)
    assert f"{task}: scored by compiling and running" in err and "--allow-code-execution" in err
    assert not out.exists()


def pipeline_config(tmp_path: Path, **changes) -> Path:
    sections = {
        "pipeline": {"stages": ["parse", "preprocess", "train", "merge", "benchmark"]},
        "parse": {"repo": [str(tmp_path / "repo")], "output": "data/raw.jsonl"},
        "preprocess": {"input": "data/raw.jsonl", "tokenizer": "tok", "output": "data/ds"},
        "train": {"base_model": "base", "dataset": "data/ds", "output_dir": "runs/r"},
        "merge": {"adapter": "runs/r/adapter", "output": "runs/r/merged"},
        "benchmark": {"models": ["base", "runs/r/merged"], "dataset": "data/ds", "output": "results"},
    }
    for key, value in changes.items():
        section, name = key.split("__")
        sections[section][name] = value
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train__dataset": "data/other"}, "train.dataset data/other is not preprocess.output data/ds"),
        ({"benchmark__dataset": "data/other"}, "benchmark.dataset data/other is not train.dataset data/ds"),
        (
            {"merge__adapter": "runs/x/adapter"},
            "merge.adapter runs/x/adapter is not train.output_dir/adapter",
        ),
        (
            {"benchmark__models": ["base", "other"]},
            "benchmark.models ['base', 'other'] does not include merge.output",
        ),
        ({"preprocess__input": "raw.jsonl"}, "preprocess.input raw.jsonl is not parse.output data/raw.jsonl"),
    ],
)
def test_a_pipeline_whose_stages_do_not_feed_each_other_is_refused(
    change, message, tmp_path, monkeypatch, capsys
):
    from codelora import pipeline

    monkeypatch.chdir(tmp_path)
    path = pipeline_config(tmp_path, **change)
    assert pipeline.main(["--config", str(path), "--dry-run"]) == 2
    err = one_error_line(capsys)
    assert message in err and "--allow-broken-chain" in err
    assert pipeline.main(["--config", str(path), "--dry-run", "--allow-broken-chain"]) == 0
    assert "do not feed each other (--allow-broken-chain)" in capsys.readouterr().err
    assert pipeline.main(["--config", str(pipeline_config(tmp_path)), "--dry-run"]) == 0


def test_train_refuses_a_dataset_windowed_with_another_tokenizer(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    from codelora.contracts import tokenizer_fingerprint
    from codelora.modeling import load_tokenizer

    own = tokenizer_fingerprint(load_tokenizer(str(tiny_model_dir)))
    other = small_dataset(tmp_path / "other", "some/other-tokenizer", "0" * 16)
    args = [
        "--base-model",
        str(tiny_model_dir),
        "--dataset",
        str(other),
        "--output-dir",
        str(tmp_path / "run"),
    ]
    monkeypatch.setattr(training, "build_model", lambda *a, **k: pytest.fail("model loaded"))
    assert training.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after train's "training on 1 process"
    assert err.startswith("train.py: error: --dataset ")
    assert (
        "was windowed with the tokenizer of some/other-tokenizer" in err
        and "--allow-tokenizer-mismatch" in err
    )

    reached = []

    def stop(cfg, tokenizer, on_gpu):
        reached.append(cfg.dataset)
        raise UserError("stop here")

    monkeypatch.setattr(training, "prepare_data", stop)
    assert training.main([*args, "--allow-tokenizer-mismatch"]) == 2 and reached  # past the check, warned
    assert "stop here" in capsys.readouterr().err
    same = small_dataset(tmp_path / "same", "another/name", own)  # another name, the same tokenizer
    assert training.main([*args[:2], "--dataset", str(same), "--output-dir", str(tmp_path / "run2")]) == 2
    assert "stop here" in capsys.readouterr().err


def test_preprocess_records_the_tokenizer_fingerprint(tmp_path, tiny_tokenizer_dir):
    from test_preprocess import kotlin_file
    from test_preprocess import raw_jsonl as _unused  # noqa: F401 - the fixture module is importable

    from codelora.contracts import read_dataset_stats, tokenizer_fingerprint
    from codelora.modeling import load_tokenizer
    from codelora.preprocess import main as preprocess_main

    raw = tmp_path / "raw.jsonl"
    raw.write_text(
        "".join(
            json.dumps({"file_text": kotlin_file(i), "path": f"src/F{i}.kt", "repo": "r", "commit": "c"})
            + "\n"
            for i in range(12)
        )
    )
    out = tmp_path / "ds"
    assert (
        preprocess_main(
            [
                "--input",
                str(raw),
                "--tokenizer",
                str(tiny_tokenizer_dir),
                "--output",
                str(out),
                "--train-ratio",
                "0.7",
                "--validation-ratio",
                "0.15",
            ]
        )
        == 0
    )
    assert read_dataset_stats(out)["tokenizer_fingerprint"] == tokenizer_fingerprint(
        load_tokenizer(str(tiny_tokenizer_dir))
    )


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train", "--base-model", "BASE", "--dataset", "data/nods"], "--dataset data/nods"),
        (["train", "--base-model", "models/nomodel", "--dataset", "DATA"], "--base-model models/nomodel"),
        (
            ["benchmark", "--models", "BASE", "models/nomodel", "--tasks", "heldout", "--dataset", "DATA"],
            "--models models/nomodel",
        ),
        (["merge", "--adapter", "runs/noadapter"], "--adapter runs/noadapter"),
    ],
)
def test_a_local_path_typo_is_no_such_directory_not_a_hub_error(
    argv, flag, tmp_path, tiny_model_dir, monkeypatch, capsys
):
    data = small_dataset(tmp_path / "data" / "prepared")
    (tmp_path / "models").mkdir()
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    no_model_loads(monkeypatch)
    argv = [str(tiny_model_dir) if a == "BASE" else str(data) if a == "DATA" else a for a in argv]
    assert cli.main([*argv, "--output" if argv[0] != "train" else "--output-dir", str(tmp_path / "out")]) == 2
    err = one_error_line(capsys)
    assert f"{flag}: no such directory" in err, err
    assert "Hub" not in err and "connect" not in err.lower()


def test_a_corrupt_second_model_is_named_before_the_first_one_generates(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    data = small_dataset(tmp_path / "data")
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    monkeypatch.setattr(benchmarking, "generate", lambda *a, **k: pytest.fail("the first model generated"))
    out = tmp_path / "o"
    assert (
        benchmarking.main(
            [
                "--models",
                str(tiny_model_dir),
                str(broken),
                "--tasks",
                "heldout",
                "--dataset",
                str(data),
                "--output",
                str(out),
            ]
        )
        == 2
    )
    err = one_error_line(capsys)
    assert f"--models {broken}: model.safetensors is corrupt or truncated" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------- said wrong


def test_heldout_es_is_named_apart_from_the_breakdowns_es_everywhere():
    """The table's next-line ES re-spaces both sides; the breakdown's does not. Each says which it is."""
    from codelora.report import results_table
    from codelora.tasks import TaskOptions, get_task

    task = get_task("heldout", TaskOptions())
    task.mode = "next-line"
    info = task.describe()
    assert info["metric_labels"]["es"] == "ES (token-spaced)"
    summary = {
        "models": ["b", "t"],
        "tasks": {
            "heldout": {
                "n": 2,
                "metrics": ["es", "em"],
                "models": {"b": {"es": 19.49, "em": 7.7}, "t": {"es": 26.43, "em": 11.2}},
                "delta_vs_baseline": {"t": {"es": 6.94, "em": 3.5}},
                "delta_ci95": {},
                **info,
            }
        },
    }
    table = results_table(summary)
    assert "| heldout | 2 | ES (token-spaced) | 19.49 | 26.43 |" in table
    assert (
        "heldout ES (token-spaced): fuzz.ratio of reference and prediction after both are re-spaced" in table
    )
    assert "| ES |" not in table
    assert demo.BREAKDOWN_ROWS[0] == ("es_raw", "ES (raw text)")
    assert all(
        "ES" not in label or "ES (raw text)" in label or "whitespace squashed" in label
        for _, label in demo.BREAKDOWN_ROWS
    )


def test_the_breakdown_says_which_es_it_is_and_saves_its_numbers(tmp_path):
    from datasets import Dataset, DatasetDict

    base_dir = tmp_path / "base"
    base_dir.mkdir()
    (base_dir / "bootstrap.json").write_text(json.dumps({"file_list": []}))
    dataset = tmp_path / "ds"
    DatasetDict({"train": Dataset.from_dict({"completion": ["\n    return x"]})}).save_to_disk(str(dataset))
    results = tmp_path / "results"
    (results / "examples").mkdir(parents=True)
    (results / "summary.json").write_text(json.dumps({"models": ["b", "t"]}))
    rows = [("\n    return x", "\nreturn x", "\n    return x"), ("\n    val y = 1", "", "\n    val y = 1")]
    (results / "examples" / "heldout.jsonl").write_text(
        "".join(json.dumps({"reference": r, "predictions": {"b": b, "t": t}}) + "\n" for r, b, t in rows)
    )
    text = demo.write_breakdown({"benchmark": {"dataset": str(dataset), "models": [str(base_dir)]}}, results)
    assert "| ES (raw text) | 2 |" in text and "| ES |" not in text
    assert "ES (raw text): fuzz.ratio of the reference and the prediction as generated" in text
    saved = json.loads((results / "breakdown.json").read_text())
    assert saved["rows"]["es_raw"]["finetuned"] == 100.0 and saved["definitions"]["es_raw"].startswith(
        "ES (raw text)"
    )
    assert saved["test_in_train"] == {"count": 1, "share": 50.0}


def test_the_readme_demo_figures_are_generated_from_the_saved_run():
    """Every number in the README's demo-figures block comes from bench/demo_run.json, which only
    `python -m codelora.demo --readme` writes, from a demo run's summary.json and breakdown.json."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = demo.readme_figures_block(readme)
    assert block is not None, "the README lost its demo-figures block"
    if block == f"{demo.README_BEGIN}\n{demo.README_END}":  # no figures cited (yet): no run to match
        assert not demo.DEMO_RUN.exists(), "bench/demo_run.json is saved but the README does not show it"
        return
    run = json.loads(demo.DEMO_RUN.read_text(encoding="utf-8"))
    assert block == demo.readme_block(run), "README demo figures differ from bench/demo_run.json: regenerate"
    assert run["codelora_commit"] and not run["codelora_commit"].endswith("-dirty")


def test_readme_figures_come_from_the_summary_and_breakdown(tmp_path):
    summary = {
        "models": ["b", "t"],
        "tasks": {
            "heldout": {
                "n": 286,
                "metric_labels": {"es": "ES (token-spaced)", "em": "EM (token-spaced)"},
                "models": {"b": {"es": 19.49, "em": 7.69}, "t": {"es": 26.43, "em": 11.19}},
                "delta_vs_baseline": {"t": {"es": 6.94, "em": 3.5}},
                "delta_ci95": {"t": {"es": [3.9, 10.3], "em": [1.4, 5.9]}},
            }
        },
    }
    rows = {
        key: {"label": label, "n": 286, "base": 25.95, "finetuned": 33.42, "delta": 7.47, "ci95": [4.0, 11.0]}
        for key, label in demo.BREAKDOWN_ROWS
    }
    rows["layout_exact"].update(base=37.41, finetuned=49.3)
    rows["es_raw_unseen"].update(n=206, delta=3.86, ci95=[1.2, 6.5])
    breakdown = {
        "windows": 286,
        "rows": rows,
        "test_in_train": {"count": 74, "share": 25.9},
        "codelora_commit": "abc123",
    }
    text = demo.readme_paragraph(demo.run_figures(summary, breakdown))
    for figure in (
        "abc123",
        "286 held-out windows",
        "ES (token-spaced) 19.49 → 26.43, +6.94 [+3.90, +10.30]",
        "EM (token-spaced) 7.69 → 11.19",
        "37.4% → 49.3%",
        "on the 206 windows",
        "+3.86 [+1.20, +6.50]",
        "25.9% of test completions",
        "ES (raw text) 25.95 → 33.42",
    ):
        assert figure in text, figure
    # --readme rewrites only the block, from the results directory
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps(summary))
    (results / "breakdown.json").write_text(json.dumps(breakdown))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{demo.README_BEGIN}\nold figures\n{demo.README_END}\n\nrest\n")
    demo.update_readme(results, readme, tmp_path / "run.json")
    assert (
        readme.read_text() == f"intro\n\n{demo.readme_block(demo.run_figures(summary, breakdown))}\n\nrest\n"
    )
    assert json.loads((tmp_path / "run.json").read_text())["windows"] == 286


def test_memorization_of_next_line_predictions_says_why_it_reads_zero():
    """Spans under 8 tokens are not counted as copying, so single next lines read 0.0% by
    construction: the report says how many are measurable, prints n/a, and checks short ones whole."""
    from codelora.memorization import TrainIndex, memorization, memorization_markdown, summarize

    index = TrainIndex.build(["fun a() {\n    val total = compute(x)\n}\n"])
    preds = ["    val total = compute(x)", "}", "    val other = thing(y)"]
    rows = memorization(index, preds)
    assert [r["measurable"] for r in rows] == [False, False, False]
    assert [r["short_in_train"] for r in rows] == [True, None, False]
    s = summarize(rows, preds)
    assert s["measurable"] == 0 and s["short_checked"] == 2 and s["short_in_train_rate"] == 0.5
    summary = {
        "memorization": {"checked": True, "train_windows": 1, "dataset_leakage": {}, "models": {"m": s}}
    }
    text = memorization_markdown(summary)
    assert "| m | 0/3 | n/a | n/a | n/a | 50.0% of 2 |" in text
    assert "Copied spans count from 8 whitespace tokens up" in text


def test_ctrl_c_in_training_says_which_checkpoint_is_complete(tmp_path, tiny_model_dir, capsys):
    from transformers import TrainerCallback

    data = small_dataset(tmp_path / "data")

    class CtrlC(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    cfg = config.TrainConfig(
        base_model=str(tiny_model_dir),
        dataset=str(data),
        output_dir=str(out),
        max_steps=6,
        batch_size=4,
        save_steps=2,
        eval_steps=100,
        lora_r=2,
        max_length=64,
    )
    assert cli.run_guarded("train.py", False, lambda: training.train(cfg, callbacks=[CtrlC()])) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert (
        "train.py: interrupted; " in err and "checkpoint-2 (step 2) is the newest complete checkpoint" in err
    )
    assert "--resume" in err
    # before any checkpoint: rerunning starts over
    assert training.interrupt_advice(cfg, tmp_path / "none").startswith("no checkpoint yet")


def test_ctrl_c_in_the_benchmark_says_how_many_predictions_are_cached(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    data = small_dataset(tmp_path / "data")
    real = benchmarking.generate

    def crashing(*a, **k):
        for item in real(*a, **k):
            yield item
            raise KeyboardInterrupt

    monkeypatch.setattr(benchmarking, "generate", crashing)
    out = tmp_path / "o"
    assert heldout_benchmark(tiny_model_dir, data, out, "--batch-size", "2") == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"benchmarking.py: interrupted; rerun the same command to continue: 2 of 10 predictions are "
        f"cached in {out / 'cache'} (only the batch in flight was lost)"
    )


def test_demo_max_files_zero_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--max-files", "0"])
    assert exit_info.value.code == 2 and "--max-files: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(UserError, match="at least 1"):
        demo._pick([Path("a")], 0)


@pytest.mark.parametrize("command", [*config.STAGES, "pipeline", "demo"])
def test_help_says_each_default_once(command):
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = re.sub(r"\s+", " ", out.getvalue())
    for option in re.split(r" (?=--[a-z])", text):
        assert option.count("(default:") <= 1, option


def test_an_unknown_command_is_named(capsys):
    assert cli.main(["foo"]) == 2
    err = capsys.readouterr().err
    assert "codelora: error: unknown command 'foo'; choose from bootstrap, parse" in err


def test_the_first_eta_does_not_ask_for_sample_when_sample_was_given(tmp_path, tiny_model_dir, capsys):
    assert "--sample first" not in benchmarking.estimate_line("m", "t", 5, None, "x", sampled=True)
    assert "--sample first" in benchmarking.estimate_line("m", "t", 5, None, "x", sampled=False)
    data = small_dataset(tmp_path / "data")
    assert heldout_benchmark(tiny_model_dir, data, tmp_path / "o", "--sample", "2") == 0
    out = capsys.readouterr().out
    assert "examples to generate (no rate measured yet" in out and "--sample first" not in out


def test_make_lint_has_its_tool():
    """`make lint` runs ruff from the venv: it is pinned with everything else `make venv` installs."""
    import importlib.util

    pins = dict(
        line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line
    )
    assert "ruff" in pins
    assert "-m ruff check" in (REPO / "Makefile").read_text()
    assert importlib.util.find_spec("ruff") is not None


def test_readme_names_what_make_kotlin_needs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    prereq = readme[readme.index("Prerequisites:") : readme.index("These work on a fresh clone")]
    for need in ("npm", "apt-get", "user namespaces", "bubblewrap", "java"):
        assert need in prereq, need


def test_argparse_types_are_unchanged_for_flags():
    """Flags keep argparse's own typing: `--lora-r 8.5` is an argparse error (exit 2), as before."""
    parser = cli.make_parser(config.TrainConfig, "train.py", "")
    with pytest.raises(SystemExit):
        parser.parse_args(["--lora-r", "8.5"])
    assert isinstance(parser, argparse.ArgumentParser)


def test_two_pipeline_stages_writing_one_place_are_refused(tmp_path, monkeypatch, capsys):
    from codelora import pipeline

    monkeypatch.chdir(tmp_path)
    path = pipeline_config(tmp_path, merge__output="results")
    assert pipeline.main(["--config", str(path), "--dry-run", "--allow-broken-chain"]) == 2
    assert "merge.output and benchmark.output name the same place" in one_error_line(capsys)
