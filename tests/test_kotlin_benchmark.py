"""benchmarking.py on the Kotlin execution tasks end to end: humaneval-kt, mceval-kotlin and an
MBXP file (written here) for two models in one command, with the pinned compiler, pass@k from
--n-samples, judgeable counts, per-problem verdicts; then the reference-execution cache. Each
task compiles all its programs (both models' and the judgeability checks) in one kotlinc call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codelora import benchmarking

MBXP = [  # mxeval's Kotlin shape: the prompt opens the body, the test is a `fun main` of checks
    {"task_id": "MBKP/1", "language": "kotlin", "entry_point": "addNums",
     "prompt": "/**\n * Write a function to add two numbers.\n */\nfun addNums(a : Int, b : Int) : Int {\n",
     "canonical_solution": "    return plus(a, b)\n}\n\nfun plus(a: Int, b: Int) = a + b\n",
     "test": "\nfun main() {\n    var x0 : Int = addNums(1, 2)\n    var v0 : Int = 3\n    if (x0 != v0) {\n"
             "        throw Exception(\"Exception -- test case 0 did not pass. x0 = \" + x0)\n    }\n}\n"},
    {"task_id": "MBKP/2", "language": "kotlin", "entry_point": "isEven", "canonical_solution": None,
     "prompt": "/**\n * Whether n is even.\n */\nfun isEven(n : Int) : Boolean {\n",
     "test": "check(isEven(2))\ncheck(!isEven(3))\n"},  # script style: top-level checks
]


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    from codelora.bootstrap import make_tiny_phi

    out = tmp_path_factory.mktemp("tiny-phi-kt")
    make_tiny_phi(tiny_tokenizer, out, seed=1, hidden_size=32, layers=2, heads=4)
    return out


def test_kotlin_tasks_two_models_one_command(tmp_path, tiny_model_dir, second_model_dir, mceval_data,
                                            humaneval_kt_data, monkeypatch):
    import codelora.tasks.kotlin as kotlin_task

    mbxp = tmp_path / "mbkp.jsonl"
    mbxp.write_text("".join(json.dumps(r) + "\n" for r in MBXP))
    out = tmp_path / "o"
    models = [str(tiny_model_dir), str(second_model_dir)]
    args = ["--models", *models, "--tasks", "humaneval-kt", "mceval-kotlin", "mbkp",
            "--humaneval-kt-data", str(humaneval_kt_data), "--mceval-data", str(mceval_data), "--mbkp-data", str(mbxp),
            "--sample", "2", "--n-samples", "2", "--temperature", "0.8", "--max-new-tokens", "4", "--batch-size", "4",
            "--output", str(out), "--allow-code-execution"]
    batches = []
    real = kotlin_task.KotlinRunner.execute
    monkeypatch.setattr(kotlin_task.KotlinRunner, "execute", lambda self, p: batches.append(len(p)) or real(self, p))
    assert benchmarking.main(args) == 0
    assert len(batches) == 3  # one batch per task: both models' programs and the judgeability checks
    summary = json.loads((out / "summary.json").read_text())
    for name in ("humaneval-kt", "mceval-kotlin", "mbkp"):
        info = summary["tasks"][name]
        assert info["kotlinc"] == "2.4.20" and "pass@2" in info["metrics"]
        for model in models:
            scores = info["models"][model]
            assert scores["kotlinc"] == "2.4.20" and scores["pass@1"] == 0.0  # 4 random tokens never pass
            # the same problems are judgeable for every model: those without a reason not to be
            assert scores["judgeable"] == info["judgeable"] == f"{2 - len(info['not_judgeable'])}/2"
        rows = [json.loads(x) for x in (out / "examples" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and {r["id"].rsplit("@", 1)[1] for r in rows} == {"0", "1"}  # 2 problems x 2 samples
        for row in rows:
            for model in models:
                assert row["scores"][model]["exec_status"] in {"compile_error", "failed", "timeout"}
                assert row["scores"][model]["compiles"] == int(row["scores"][model]["exec_status"] != "compile_error")
        for model in models:  # the share of programs that compile: the mean of the rows, with an interval
            share = 100 * sum(r["scores"][model]["compiles"] for r in rows) / len(rows)
            assert info["models"][model]["compiles"] == round(share, 2) and "compiles" in info["metrics"]
        assert "compiles" in info["delta_ci95"][models[1]]
    assert "es" not in summary["tasks"]["humaneval-kt"]["metrics"]  # no references to compare with
    mbkp = summary["tasks"]["mbkp"]
    assert mbkp["judgeable"] == "2/2" and mbkp["not_judgeable"] == {}  # MBKP/1's helper-using reference passes
    assert mbkp["models"][models[0]]["no_reference"] == 2  # MBKP/2's two samples: skipped for ES/BLEU
    table = (out / "results.md").read_text()
    assert "kotlinc 2.4.20; judgeable 2/2" in table and "pass@2" in table
    assert "execution results per example" in (out / "report.html").read_text()

    # a rerun executes only the predictions: the judgeability results come from the cache
    rows = [json.loads(x) for x in (out / "examples" / "mbkp.jsonl").read_text().splitlines()]
    programs = {(r["id"].rsplit("@", 1)[0], r["predictions"][m]) for r in rows for m in models}
    batches.clear()
    assert benchmarking.main([*args[:3], "--tasks", "mbkp", *args[7:]]) == 0
    assert batches == [len(programs)]  # the distinct predictions (up to 2 models x 4), no reference or stub


def test_cached_reference_verdicts_are_reused_only_from_the_same_compiler_and_settings(mceval_data):
    """The reference verdicts cached in `<task>-task-state.json` came from one kotlinc and one
    sandbox/timeout setting: after switching either, they are judged again, not reused."""
    from codelora.kotlin import ExecutionResult
    from codelora.tasks import TaskOptions, get_task

    def task(**kw):
        options = TaskOptions(mceval_data=str(mceval_data), allow_code_execution=True, **kw)
        return get_task("mceval-kotlin", options)

    verdict = ExecutionResult("passed", "", 1.0)
    first = task(exec_timeout=60.0)
    first.execution = {"Kotlin/1": verdict}
    state = json.loads(json.dumps(first.cached_state()))  # as the file holds it
    same = task(exec_timeout=60.0)
    same.restore_state(state)
    assert same.execution == {"Kotlin/1": verdict}
    for other in (task(exec_timeout=30.0), task(exec_timeout=60.0, unsafe_no_sandbox=True)):
        other.restore_state(state)
        assert other.execution == {}
    older = dict(state)
    older["runner"] = {**state["runner"], "kotlinc_version": "2.0.0"}  # another compiler
    again = task(exec_timeout=60.0)
    again.restore_state(older)
    assert again.execution == {}
    legacy = task(exec_timeout=60.0)
    legacy.restore_state({"reference_execution": state["reference_execution"]})  # from before the key
    assert legacy.execution == {}
    assert task(exec_timeout=60.0).cached_state() == {}  # nothing judged, nothing cached
