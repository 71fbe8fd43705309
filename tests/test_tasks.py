"""Tasks: prompt construction, data validation and scoring as the official evaluators score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codelora.metrics import corpus_bleu, edit_similarity
from codelora.stops import brace_depth
from codelora.tasks import Example, TaskOptions, get_task, task_names
from codelora.tasks.codexglue import build_prompt, decode_body
from codelora.tasks.codexglue_line import build_prompt as line_prompt
from codelora.utils import UserError



def cfg(**kw):
    return TaskOptions(**{"dataset": "", **kw})


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_registry():
    assert {"heldout", "codexglue", "codexglue-line", "mceval-kotlin", "mbkp", "humaneval-kt"} <= set(task_names())
    with pytest.raises(UserError, match="unknown task 'x'.*known: heldout"):
        get_task("x", cfg())


# ------------------------------------------------------------------------------- codexglue


def test_codexglue_prompt_has_one_colon_and_decoded_literals():
    prompt = build_prompt("def do_transform(self, v=<NUM_LIT:1>, s=<STR_LIT>):", "Apply it.")
    assert prompt == 'def do_transform(self, v=1, s=):\n    """Apply it."""\n'
    assert "::" not in prompt


def test_codexglue_body_decoding():
    body = "if not self.transform:<EOL><INDENT>return<EOL><DEDENT>try:<EOL><INDENT>x = <NUM_LIT:2><EOL>"
    assert decode_body(body) == "    if not self.transform:\n        return\n    try:\n        x = 2"


def test_codexglue_scores_are_the_evaluator_lines(tmp_path):
    rows = [
        {"signature": "def f(a):", "body": "if a:<EOL><INDENT>return <NUM_LIT><EOL><DEDENT>return a", "docstring": "d", "id": "f1:m0"},
        {"signature": "def g():", "body": "return '<STR_LIT:x>'", "docstring": "e", "id": "f1:m1"},
    ]
    task = get_task("codexglue", cfg(codexglue_data=str(write_jsonl(tmp_path / "t.jsonl", rows))))
    examples = task.load()
    assert [e.id for e in examples] == ["f1:m0", "f1:m1"]
    assert examples[0].meta["answer"] == "if a: return 0 return a"
    preds = ["    if a:\n        return 0\n    return a\n", "    return 'y'"]
    per, corpus = task.score(examples, preds)
    # line 1 equals the answer after whitespace collapsing; line 2 raw: "return 'y'" vs "return 'x'";
    # normalised, 'y' (not a literal the data keeps) is emptied as the dataset empties it: "return ''"
    assert per[0] == {"es": 100, "es_raw": 100}
    assert per[1]["es_raw"] == edit_similarity("return 'y'", "return 'x'") == 90
    assert per[1]["es"] == edit_similarity("return ''", "return 'x'") == 95  # 2 * 9 / 19
    assert corpus["es"] == 97.5 and corpus["es_raw"] == 95.0 and "em" not in corpus
    assert corpus["bleu_raw"] == corpus_bleu(["if a: return 0 return a", "return 'x'"],
                                             ["if a: return 0 return a", "return 'y'"]).score
    files = task.evaluator_files(examples, preds)
    assert files["answers.txt"] == "if a: return 0 return a\nreturn 'x'\n"
    assert files["predictions_raw.txt"] == "if a: return 0 return a\nreturn 'y'\n"
    assert files["predictions.txt"] == "if a: return 0 return a\nreturn ''\n"


def test_codexglue_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"signature": "def f():", "docstring": "d"}])
    with pytest.raises(UserError, match="record 1 lacks field"):
        get_task("codexglue", cfg(codexglue_data=str(path))).load()


# -------------------------------------------------------------------------- codexglue-line


def test_line_prompt_and_tokens():
    assert line_prompt("<s> import os <EOL> x = <NUM_LIT:3> <EOL> ") == "import os\nx = 3\n"


def test_line_scores_match_evaluator(tmp_path):
    rows = [{"input": "<s> def f ( ) : <EOL>", "gt": "return <NUM_LIT:1>"},
            {"input": "<s> x = 1 <EOL>", "gt": "y = x"}]
    task = get_task("codexglue-line", cfg(codexglue_line_data=str(write_jsonl(tmp_path / "l.jsonl", rows))))
    examples = task.load()
    per, corpus = task.score(examples, ["  return 1", "y=x+1"])
    assert per[0] == {"es": 100, "em": 1, "es_raw": 100, "em_raw": 1}
    assert per[1] == {"es": edit_similarity("y = x + 1", "y = x"), "em": 0, "es_raw": per[1]["es"], "em_raw": 0}
    assert corpus == {"es": round((100 + per[1]["es"]) / 2, 2), "em": 50.0, "n": 2,
                      "es_raw": round((100 + per[1]["es"]) / 2, 2), "em_raw": 50.0}


def test_line_needs_data():
    with pytest.raises(UserError, match="--codexglue-line-data"):
        get_task("codexglue-line", cfg()).load()


# ---------------------------------------------------------------------------------- kotlin


def test_mceval_loads_real_data_and_stops_at_the_closing_brace(mceval_data):
    task = get_task("mceval-kotlin", cfg(mceval_data=str(mceval_data)))
    examples = task.load()
    assert len(examples) == 50 and examples[0].id == "Kotlin/1"
    ex = examples[0]
    rule = task.stop_rule(ex)
    generated = ex.reference + "\n\nfun main() {}\n"
    assert generated[: rule(generated)] == ex.reference.rstrip()
    # an MBKP-style prompt that already opened the body
    mbkp = Example("m", "fun f(x: Int): Int {\n", "    return x\n}\n")
    assert brace_depth(mbkp.prompt) == 1
    text = "    if (x > 0) { return 1 }\n    return x\n}\nclass G {}"
    assert text[: task.stop_rule(mbkp)(text)] == "    if (x > 0) { return 1 }\n    return x\n}"


def test_mceval_without_execution_reports_why(mceval_data):
    task = get_task("mceval-kotlin", cfg(mceval_data=str(mceval_data)))
    examples = task.load()[:2]
    per, corpus = task.score(examples, [examples[0].reference, ""])
    assert per[0]["es"] == 100 and per[1]["es"] == 0
    assert corpus["pass@1"] is None and "--allow-code-execution" in corpus["pass@1_note"]


def test_mceval_missing_file_and_bad_line(tmp_path, mceval_data):
    with pytest.raises(UserError, match="data file not found"):
        get_task("mceval-kotlin", cfg(mceval_data=str(tmp_path / "none.jsonl"))).load()
    # MBXP is not shipped: its task names its flag
    with pytest.raises(UserError, match="mbkp: give the data file with --mbkp-data"):
        get_task("mbkp", cfg()).load()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(mceval_data.read_text().splitlines()[0] + "\nnot json\n")
    with pytest.raises(UserError, match=r"bad.jsonl:2: malformed JSON line"):
        get_task("mceval-kotlin", cfg(mceval_data=str(bad))).load()


def test_kotlin_tasks_read_the_shipped_data_without_a_flag(tmp_path, monkeypatch):
    """A clone with nothing beside it runs the Kotlin tasks: their data ships in data/benchmarks/
    (package data, listed in pyproject), read when no data flag is given, from any directory."""
    import tomllib

    import codelora
    from codelora.tasks import kotlin

    monkeypatch.chdir(tmp_path)
    mceval = get_task("mceval-kotlin", cfg()).load()
    assert len(mceval) == 50 and mceval[0].id == "Kotlin/1" and mceval[0].reference
    assert len(get_task("mceval-kotlin-fim", cfg()).load()) > 50  # one example per reference line
    humaneval = get_task("humaneval-kt", cfg()).load()
    assert len(humaneval) == 157 and humaneval[0].id == "HumanEval_0_has_close_elements"
    package = Path(codelora.__file__).parent
    globs = tomllib.loads((package.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for g in globs["codelora"] for p in package.glob(g)}
    wanted = {"mceval_kotlin.jsonl", "humaneval_kt.jsonl", "README.md", "LICENSE.MultiPL-E",
              "LICENSE.McEval-CC-BY-SA-4.0"}
    assert {package / "benchmarks" / name for name in wanted} <= shipped
    monkeypatch.setattr(kotlin, "SHIPPED_DATA_DIR", tmp_path / "gone")  # an install without the data
    with pytest.raises(UserError, match=r"humaneval-kt: the shipped data file .* is missing from this install; "
                       "reinstall codelora, or give a copy with --humaneval-kt-data"):
        get_task("humaneval-kt", cfg()).load()


def test_heldout_budget_comes_from_the_recorded_completion_lengths(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {"prompt": ["a\n", "b\n"], "completion": ["x\n", "y\n"], "path": ["p", "q"], "repo": ["r", "r"],
            "completion_tokens": [3, 17]}
    DatasetDict({"test": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    task = get_task("heldout", cfg(dataset=str(tmp_path / "ds")))
    assert task.max_new_tokens == 128  # before loading: the default
    examples = task.load()
    assert task.max_new_tokens == 17 + 8
    assert [e.reference for e in examples] == ["x\n", "y\n"] and examples[0].meta == {"path": "p", "repo": "r"}
    per, corpus = task.score(examples, ["x", "z\n"])  # trailing whitespace does not count
    assert [r["es"] for r in per] == [100, 0] and corpus["em"] == 50.0
    assert task.min_new_tokens == 1 and task.stop_rule(examples[0])("a\nb") is None  # no stats: EOS only


@pytest.mark.parametrize(("mode", "text", "kept"), [("line", "abc\ndef", "abc"),
                                                    ("next-line", "\n  abc\ndef", "\n  abc"),
                                                    ("lines", "\n  abc\ndef", None)])
def test_heldout_stop_rule_follows_the_recorded_windowing_mode(tmp_path, mode, text, kept):
    import json

    from datasets import Dataset, DatasetDict

    rows = {"prompt": ["a"], "completion": ["\nx"], "path": ["p"], "repo": ["r"]}
    DatasetDict({"test": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "ds" / "stats.json").write_text(json.dumps({"windowing": {"mode": mode}}))
    task = get_task("heldout", cfg(dataset=str(tmp_path / "ds")))
    examples = task.load()
    cut = task.stop_rule(examples[0])(text)
    assert (None if cut is None else text[:cut]) == kept


def test_tasks_read_the_benchmark_config_itself():
    """BenchmarkConfig extends TaskOptions: a task gets the config, no copy that could drift."""
    from codelora.config import BenchmarkConfig

    cfg = BenchmarkConfig(mceval_data="m.jsonl", exec_timeout=5.0, allow_code_execution=True)
    task = get_task("mceval-kotlin", cfg)
    assert task.options.exec_timeout == 5.0 and task.options.mceval_data == "m.jsonl"


def test_benchmark_output_is_kept_clear_of_every_task_input():
    """Every TaskOptions field that names a file is an input the benchmark's --output may not be."""
    from codelora.config import STAGES

    assert STAGES["benchmark"].inputs == (
        "models", "dataset", "codexglue_data", "codexglue_literals", "codexglue_line_data",
        "codexglue_line_literals", "mceval_data", "mbkp_data", "humaneval_kt_data", "loss_data", "kotlinc")


@pytest.mark.parametrize("source", ["flag", "yaml"])
def test_unknown_task_is_one_line_naming_the_registry(source, tmp_path, capsys):
    """--tasks is checked against the registry (flag or YAML) before anything is read or loaded."""
    from codelora.cli import main

    args = ["benchmark", "--models", str(tmp_path / "no-model"), "--output", str(tmp_path / "out")]
    if source == "flag":
        args += ["--tasks", "heldout", "foo"]
    else:
        (tmp_path / "c.yaml").write_text("benchmark:\n  tasks: [heldout, foo]\n")
        args += ["--config", str(tmp_path / "c.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tasks: unknown task 'foo'" in err
    assert err.rstrip().endswith(f"(known: {', '.join(task_names())})")
    assert not (tmp_path / "out").exists()
