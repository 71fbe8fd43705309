"""Stop rules: where each one cuts a completion, and the triggers contract the decoder relies on."""

from __future__ import annotations

import json
import random

import pytest

from codelora.stops import (
    brace_rule,
    helper_aware_rule,
    stop_after_next_line,
    stop_at_brace_close,
    stop_at_line_end,
)


def test_line_rule():
    assert stop_at_line_end("x = 1") is None
    assert stop_at_line_end("x = 1\ny") == 5


def test_next_line_rule():
    assert stop_after_next_line("\n    return x\n    y") == len("\n    return x")
    assert stop_after_next_line("\n    return x") is None


def test_brace_rule_ignores_strings_and_comments():
    text = ' {\n    val s = "}{" // }\n    /* } */ if (a) { b() }\n    return \'}\'\n}\nfun next() {'
    cut = stop_at_brace_close(text)
    assert text[:cut].endswith("return '}'\n}")
    assert stop_at_brace_close(" {\n  if (a) {\n") is None
    assert stop_at_brace_close(" = a + b\nfun x()") == len(" = a + b")


def test_brace_rule_skips_raw_strings_and_unclosed_comments():
    text = ' {\n    val s = """ } """\n    return 1\n}'
    assert stop_at_brace_close(text) == len(text)
    assert stop_at_brace_close(" {\n  /* } ") is None  # an unclosed block comment hides the brace
    assert stop_at_brace_close(' {\n  val s = """ }') is None


@pytest.mark.parametrize("rule", [stop_at_line_end, stop_after_next_line, stop_at_brace_close, brace_rule(2)],
                         ids=["line", "next-line", "brace", "brace-depth-2"])
def test_a_rule_fires_only_on_a_token_with_one_of_its_triggers(rule, tiny_tokenizer):
    """The triggers contract (see StopRule) on random token sequences rich in braces, quotes,
    comments and newlines: whenever a rule's answer turns from None to a cut, the new token holds
    a trigger character, so checking only those steps finds every stop."""
    tok = tiny_tokenizer
    pieces = [tok.decode([i]) for i in range(len(tok))]
    code_like = [p for p in pieces if any(c in p for c in '{}"\'/*\n=')] or pieces
    rng = random.Random(0)
    for _ in range(300):
        text, fired = "", False
        for _ in range(30):
            piece = rng.choice(code_like if rng.random() < 0.6 else pieces)
            before = rule(text) is not None
            text += piece
            if rule(text) is not None and not before:
                assert any(c in piece for c in rule.triggers), (text, piece)
                fired = True
                break
        assert fired or rule(text) is None


# ------------------------------------------------------------------- Kotlin: methods with helpers


def test_stop_rule_keeps_mceval_reference_helpers(mceval_data):
    records = [json.loads(line) for line in mceval_data.read_text().splitlines()]
    with_helpers = 0
    for rec in records:
        ref = rec["canonical_solution"].rstrip()
        generated = ref + "\n\nfun main() {\n    println(1)\n}\n"
        rule = helper_aware_rule(0)
        assert generated[: rule(generated)] == ref, rec["task_id"]
        if brace_rule(0)(generated) < len(ref):  # the plain brace rule cuts the helpers off
            with_helpers += 1
    assert with_helpers >= 1  # McEval has references with helpers after the method


def test_stop_rule_waits_to_tell_and_ends_at_other_code():
    rule = helper_aware_rule(1)  # an MBXP/HumanEval prompt opened the body
    assert rule("    return 1\n}\n\nfu") is None  # may still become `fun helper(`
    assert rule("    return 1\n}\n\nfun ma") is None
    text = "    return 1\n}\n\nfun main() {"
    assert text[: rule(text)] == "    return 1\n}"
    text = "    return h(1)\n}\nprivate fun h(x: Int) = x + 1\nclass Extra"
    assert text[: rule(text)] == "    return h(1)\n}\nprivate fun h(x: Int) = x + 1"
    text = "    return 1\n}\n// a comment\n"
    assert text[: rule(text)] == "    return 1\n}"
