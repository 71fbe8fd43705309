"""codexglue (method generation) on fixtures in the dataset's own format.

Records are JSONL with the token-format fields `signature`, `body`, `docstring`, `id` (literals
as <STR_LIT>/<STR_LIT:v>/<NUM_LIT:v>, " " inside a kept literal written U+0020, layout tokens).
Expected numbers are derived by hand from the official evaluator's definitions
(Method-Generation/evaluator/evaluator.py: post_process, then fuzz.ratio and `_bleu`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codelora.generation import GenerationSettings, generate_batch, load_model
from codelora.metrics import corpus_bleu
from codelora.report import results_table
from codelora.tasks import TaskOptions, get_task
from codelora.tasks.codexglue import build_token_prompt, stop_at_body_dedent, stop_at_function_end
from codelora.tasks.codexglue_tokens import Literals, python_body_tokens

RECORDS = [
    {"signature": "def greet(name):", "docstring": "Say hello.",
     "body": 'msg = "<STR_LIT>" + name<EOL>print(msg, "<STR_LIT:helloU+0020world>")<EOL>return <NUM_LIT:0><EOL>',
     "id": "f1:m0"},
    {"signature": "def scale(x, k=<NUM_LIT:2>):", "docstring": "Scale x by k.",
     "body": "if k:<EOL><INDENT>return x * k<EOL><DEDENT>return x<EOL>", "id": "f1:m1"},
]


def cfg(path: Path, **kw) -> TaskOptions:
    return TaskOptions(**{"codexglue_data": str(path), **kw})


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


def test_real_code_scores_like_the_reference_once_normalised(data):
    task = get_task("codexglue", cfg(data))
    examples = task.load()
    assert examples[0].meta["answer"] == 'msg = "" + name print(msg, "helloU+0020world") return 0'
    # what a model writes: real literals, a comment; the same code as the reference
    preds = ['    msg = "Hi " + name  # greet\n    print(msg, "hello world")\n    return 0',
             "    if k:\n        return x * k\n    return x"]
    per, corpus = task.score(examples, preds)
    assert [r["es"] for r in per] == [100, 100]
    assert corpus["es"] == 100.0 and corpus["bleu"] == 100.0
    # raw: 'msg = "Hi " + name # greet print(msg, "hello world") return 0' (61 characters) vs the
    # 55-character answer: every answer character has its match in order except the 6 of
    # "U+0020" (the raw line has a " " there), so the LCS is 49: ES = round(200 * 49 / 116) = 84
    raw_line = 'msg = "Hi " + name # greet print(msg, "hello world") return 0'
    assert task.prediction_line(preds[0]) == raw_line
    assert per[0]["es_raw"] == round(100 * 2 * 49 / (61 + 55)) == 84 and per[1]["es_raw"] == 100
    assert corpus["es_raw"] == round((84 + 100) / 2, 2)
    assert corpus["bleu_raw"] == corpus_bleu([e.meta["answer"] for e in examples],
                                             [raw_line, "if k: return x * k return x"]).score
    files = task.evaluator_files(examples, preds)
    assert files["predictions.txt"].splitlines() == files["answers.txt"].splitlines()
    assert files["predictions_raw.txt"].splitlines()[0] == raw_line


def test_normalisation_follows_the_datasets_rules():
    lits = Literals(frozenset({"helloU+0020world", "a,b"}), frozenset({"1", "2"}))
    code = ('    s = r"x" + b\'\' + "a,b" + R"up"  # c\n'
            "    n = 1 + 2.5 + 2\n"
            "    t = f(a,\n"
            "          b)\n")
    tokens = python_body_tokens(code, lits)
    # the lower-case prefix stays, unlisted text is emptied, "," is written U+002C before the
    # lookup (so "a,b" is not found), an upper-case prefix is not a prefix: the whole token goes
    assert tokens.startswith('s = r"<STR_LIT>" + b\'<STR_LIT>\' + "<STR_LIT>" + <STR_LIT>  <EOL>')
    assert "n = <NUM_LIT:1> + <NUM_LIT> + <NUM_LIT:2><EOL>" in tokens
    assert tokens.endswith("t = f(a,<EOL>b)<EOL>")  # a continuation line is glued on, no space


def test_a_prediction_in_the_token_format_scores_as_given(data):
    task = get_task("codexglue", cfg(data, codexglue_prompt="tokens"))
    examples = task.load()
    assert examples[0].prompt == 'def greet(name):<EOL>"""Say hello."""<EOL>'
    assert examples[1].prompt == build_token_prompt("def scale(x, k=<NUM_LIT:2>):", "Scale x by k.")
    preds = [RECORDS[0]["body"], "if k:<EOL><INDENT>return x<EOL><DEDENT>return x"]
    per, corpus = task.score(examples, preds)
    assert per[0] == {"es": 100, "es_raw": 100}
    # "if k: return x return x" (23) vs "if k: return x * k return x" (27): LCS 23 -> 46/50 -> 92
    assert per[1] == {"es": 92, "es_raw": 92}
    info = task.describe()
    assert info["prompt_format"].startswith("tokens") and info["decoding"] == "greedy"


def test_stop_rule_keeps_column_0_continuation_lines():
    body = ('    query = """\nSELECT *\nFROM t\n"""\n'
            "    args = dict(a=1,\nb=2)\n"
            "# a note at column 0\n"
            "    total = 1 + \\\n2\n"
            "    return query, args, total\n")
    generated = body + "\n\ndef next_function():\n    pass\n"
    assert generated[: stop_at_function_end(generated)] == body.rstrip("\n")
    for cut in range(len(body)):  # still inside the body: the rule waits
        assert stop_at_function_end(body[:cut]) is None, body[:cut]
    assert stop_at_function_end("return 1\nclass X:") == len("return 1")  # column-0 body: one statement
    assert stop_at_function_end("    if x:\n        y = 1\n      z = 2\n") == len("    if x:\n        y = 1")


def test_token_format_stop_rule():
    assert stop_at_body_dedent("if a:<EOL><INDENT>return<EOL><DEDENT>x<EOL>") is None
    text = "if a:<EOL><INDENT>return<EOL><DEDENT>x<EOL><DEDENT>def g():"
    assert text[: stop_at_body_dedent(text)] == "if a:<EOL><INDENT>return<EOL><DEDENT>x<EOL>"


def test_literal_file_and_table_note(data, tmp_path):
    lits = tmp_path / "literals.json"
    lits.write_text(json.dumps({"str": ["hi"], "num": ["0"], "char": []}))
    task = get_task("codexglue", cfg(data, codexglue_literals=str(lits), sample=1, num_beams=5))
    examples = task.load()
    # "hello world" is not in this list, so the reference's kept literal is not matched any more
    assert task.normalised_line('    print(msg, "hello world")') == 'print(msg, "")'
    info = task.describe()
    assert info["literals"].startswith("literals.json") and info["decoding"] == "beam search, 5 beams"
    summary = {"models": ["m"], "tasks": {"codexglue": {"n": 1, "metrics": list(task.metrics), "models": {"m": {}},
                                                       "delta_vs_baseline": {}, **info}}}
    table = results_table(summary)
    assert "| ES (raw) |" in table and "| BLEU (raw) |" in table
    assert "n = 1 of 2 records (a seeded --sample" in table and "prompt: natural" in table
    assert "decoding: beam search, 5 beams" in table
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    from codelora.utils import UserError

    with pytest.raises(UserError, match="expected"):
        get_task("codexglue", cfg(data, codexglue_literals=str(bad))).load()


def test_batched_beam_search_with_stop_rules_equals_unbatched(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), dtype="float32")
    prompts = ["def f(x):\n    return", 'class Stack:\n    def push(self, x):\n        """Push."""\n']
    settings = GenerationSettings(max_new_tokens=12, num_beams=3, batch_size=2)
    rules = [stop_at_function_end, stop_at_function_end]
    batched = generate_batch(model, tok, prompts, settings, rules)
    single = [generate_batch(model, tok, [p], settings, [r])[0] for p, r in zip(prompts, rules)]
    assert batched == single
    for pred in batched:  # each is cut where its rule says, or ran out of tokens
        cut = stop_at_function_end(pred)
        assert cut is None or cut == len(pred)


def test_full_set_time_estimate_is_printed_before_generating(tmp_path, tiny_model_dir, data, capsys):
    from codelora.benchmarking import duration, estimate_line, main

    assert estimate_line("m", "codexglue", 20_000, 2.0, "x") == (
        "m / codexglue: 20000 examples to generate, about 2.8 h at 2 examples/s (x)")
    assert duration(100) == "2 min" and duration(30) == "30 s"
    out = tmp_path / "o"
    args = ["--models", str(tiny_model_dir), "--tasks", "codexglue", "--codexglue-data", str(data),
            "--max-new-tokens", "2", "--output", str(out)]
    assert main([*args, "--sample", "1"]) == 0
    first = capsys.readouterr().out
    assert "1 examples to generate (no rate measured yet" in first
    assert "n = 1 of 2 records (a seeded --sample" in first and "decoding: greedy" in first
    rate = json.loads((out / "summary.json").read_text())["timing"][str(tiny_model_dir)]["codexglue"]["examples_per_s"]
    assert main(args) == 0  # the full set: one example cached, one left, estimated at the sample's rate
    second = capsys.readouterr().out
    assert f"1 examples to generate, about {duration(1 / rate)} at {rate:.3g} examples/s" in second
    assert "n = 2 of 2 records (the full test set)" in second
