"""mceval-kotlin-fim: one masked line of McEval's reference bodies, per-model prompts, scored by
text and by executing prefix + prediction + suffix + test (one batched kotlinc call)."""

from __future__ import annotations

import json

import pytest

from codelora.kotlin import kotlin_available
from codelora.tasks import TaskOptions, get_task
from codelora.tasks.kotlin_fim import masked_lines


def fim_task(mceval_data, **cfg):
    base = dict(mceval_data=str(mceval_data), allow_code_execution=True, exec_timeout=60.0, unsafe_no_sandbox=False)
    return get_task("mceval-kotlin-fim", TaskOptions(**{**base, **cfg}))


def test_every_code_line_of_a_body_is_masked_once():
    prompt, body = "fun f(x: Int): Int", "{\n    val y = x + 1\n\n    return y\n}"
    cuts = masked_lines(prompt, body)
    assert [(n, m) for n, _, m, _ in cuts] == [(2, "    val y = x + 1"), (4, "    return y")]  # not `{`, `}`, blank
    assert all(p + m + s == prompt + body for _, p, m, s in cuts)


def test_lines_load_and_execute_with_the_suffix(mceval_data):
    assert kotlin_available(), "kotlinc/java missing: run `make kotlin`"
    task = fim_task(mceval_data)
    examples = task.load()
    first = [e for e in examples if e.meta["source_problem"] == "Kotlin/1"]
    assert len(first) == 7 and first[0].id == "Kotlin/1:L2"  # its 13 body lines, less the 6 lone braces
    assert all(e.prompt == e.meta["prefix"] and e.meta["prefix"].endswith("\n") for e in first)
    ret = next(e for e in first if e.reference.strip() == "return true")
    # the reference line passes; a wrong line compiles and fails; a broken line does not compile
    per, corpus = task.score([ret, ret, ret], [ret.reference, "                    return false", "return ("])
    assert [r["exec_status"] for r in per] == ["passed", "failed", "compile_error"]
    assert [r["pass"] for r in per] == [1, 0, 0] and corpus["pass@1"] == pytest.approx(100 / 3, abs=0.01)
    assert per[0]["em"] == 1 and per[1]["em"] == 0 and per[0]["chrf"] == 100.0
    assert corpus["judgeable"] == "1/1"  # one example (three predictions for it), its reference passes


def test_two_models_one_command(tmp_path, tiny_model_dir, fim_model_dir, mceval_data, monkeypatch):
    import codelora.tasks.kotlin as kotlin_task
    from codelora import benchmarking

    batches = []
    real = kotlin_task.KotlinRunner.execute
    monkeypatch.setattr(kotlin_task.KotlinRunner, "execute", lambda self, p: batches.append(len(p)) or real(self, p))
    out = tmp_path / "o"
    models = [str(tiny_model_dir), str(fim_model_dir)]
    assert benchmarking.main(["--models", *models, "--tasks", "mceval-kotlin-fim", "--mceval-data", str(mceval_data),
                              "--sample", "3", "--max-new-tokens", "6", "--output", str(out),
                              "--allow-code-execution"]) == 0
    assert len(batches) == 1  # both models' programs and the reference checks: one compile
    info = json.loads((out / "summary.json").read_text())["tasks"]["mceval-kotlin-fim"]
    assert info["models"][models[0]]["prompt_format"] == "prefix-only"
    assert info["models"][models[1]]["prompt_format"] == "fim-psm"
    assert set(info["metrics"]) >= {"es", "chrf", "cosine", "pass@1"}
    for model in models:
        assert info["models"][model]["judgeable"] == "3/3" and info["models"][model]["kotlinc"] == "2.4.20"
    rows = [json.loads(x) for x in (out / "examples" / "mceval-kotlin-fim.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(":L" in r["id"] for r in rows)
    table = (out / "results.md").read_text()
    assert "mceval-kotlin-fim prompts:" in table and "prefix-only" in table and "fim-psm" in table
