"""Metrics against hand-computed values (CodeXGLUE evaluator semantics, see codelora/metrics.py)."""

from __future__ import annotations

import math

import pytest

from codelora import metrics
from codelora.metrics import (
    codexglue_line_post_process,
    codexglue_method_post_process,
    corpus_bleu,
    corpus_bleu_tokens,
    edit_similarity,
    exact_match,
)


def bleu100(refs: list[str], preds: list[str]) -> float:
    return corpus_bleu(refs, preds).score


# ------------------------------------------------------------------------------------ BLEU


def test_identical_is_100():
    assert bleu100(["a b c d e"], ["a b c d e"]) == 100.0


def test_short_prediction_brevity_penalty():
    # matches 2,1,0,0 of possible 2,1,0,0 -> smoothed precisions all 1; bp = exp(1 - 6/2)
    result = corpus_bleu(["a b c d e f"], ["a b"])
    assert result.precisions == (1.0, 1.0, 1.0, 1.0)
    assert result.brevity_penalty == pytest.approx(math.exp(-2))
    assert result.score == round(100 * math.exp(-2), 2) == 13.53


def test_no_overlap_is_not_zero_with_plus_one_smoothing():
    # matches 0 of possible 4,3,2,1 -> precisions 1/5, 1/4, 1/3, 1/2 (smoothing applies to 1-grams too)
    result = corpus_bleu(["a b c d"], ["w x y z"])
    assert result.precisions == pytest.approx((1 / 5, 1 / 4, 1 / 3, 1 / 2))
    assert result.score == round(100 * (1 / 120) ** 0.25, 2) == 30.21


def test_clipped_counts():
    # "the" thrice vs once in the reference: 1-gram matches clip to 1 of 3
    result = corpus_bleu(["the cat"], ["the the the"])
    assert result.precisions == pytest.approx((2 / 4, 1 / 3, 1 / 2, 1 / 1))
    assert result.brevity_penalty == 1.0  # hypothesis longer than the reference
    assert result.score == round(100 * (1 / 12) ** 0.25, 2) == 53.73


def test_corpus_level_counts_not_sentence_average():
    # segment 1 perfect (3 tokens), segment 2 empty prediction: counts pool over the corpus
    result = corpus_bleu(["a b c", "x y"], ["a b c", ""])
    assert (result.translation_length, result.reference_length) == (3, 5)
    assert result.precisions == (1.0, 1.0, 1.0, 1.0)
    assert result.score == round(100 * math.exp(1 - 5 / 3), 2) == 51.34


def test_empty_predictions_give_zero_instead_of_division_by_zero():
    assert bleu100(["a b", "c"], ["", "   "]) == 0.0


def test_empty_references_give_undefined_bleu_not_a_number():
    # the official compute_bleu divides by zero here; our rule (metrics.py docstring): None
    one_token = corpus_bleu([""], ["a"])
    assert one_token.bleu is None and one_token.score is None  # was 84.09: credit for matching nothing
    assert corpus_bleu(["", "  "], ["", ""]).score is None  # was 100
    assert corpus_bleu(["", ""], ["x", ""]).score is None
    # one non-empty reference makes it defined again: empty predictions -> 0 (bp -> 0)
    assert corpus_bleu(["", "a"], ["", ""]).score == 0.0


def test_whitespace_tokens_and_multiple_references():
    assert bleu100(["  a\tb  c d \n"], ["a b c d"]) == 100.0
    # shortest reference length is used; n-gram counts are the max over references
    result = corpus_bleu_tokens([[["a", "b"], ["a", "b", "c", "d"]]], [["a", "b", "c", "d"]])
    assert result.reference_length == 2 and result.score == 100.0


def test_length_mismatch_is_an_error():
    with pytest.raises(metrics.UserError):
        corpus_bleu(["a"], ["a", "b"])


# --------------------------------------------------------------------------- ES, EM, post-process


def test_edit_similarity_matches_fuzzywuzzy_levenshtein():
    assert edit_similarity("abc", "abd") == 67  # (6 - 2) / 6
    assert edit_similarity("", "") == 100  # fuzzywuzzy: equivalence check first
    assert edit_similarity("a", "") == 0 and edit_similarity("", "a") == 0
    # 100 * 2/16 = 12.5 -> 12 (half-to-even, as fuzzywuzzy's intr on Python 3); 37.5 -> 38
    assert edit_similarity("a", "a" + "b" * 14) == 12
    assert edit_similarity("abc", "abc" + "z" * 10) == 38
    assert isinstance(edit_similarity("x", "y"), int)


def test_edit_similarity_tie_follows_python_levenshtein_0_12():
    # lensum 80, indel 78: (80 - 78) / 80 * 100 is exactly 2.5 -> 2 (half-to-even), as
    # python-Levenshtein 0.12's (lensum - ldist) / lensum; 1 - 78 / 80 gives 2.500000000000002 -> 3
    import rapidfuzz
    from rapidfuzz import fuzz

    a, b = "a", "a" + "x" * 78
    assert edit_similarity(a, b) == 2
    assert round(fuzz.ratio(a, b)) == 3  # why the backend is recorded: another formula, another ES
    assert f"rapidfuzz {rapidfuzz.__version__}" in metrics.ES_BACKEND
    assert "python-Levenshtein 0.12" in metrics.ES_BACKEND and "half-to-even" in metrics.ES_BACKEND


def test_exact_match_is_whitespace_token_equality():
    assert exact_match("a  = b\n", "a = b")
    assert not exact_match("a=b", "a = b")


def test_method_post_process():
    body = 'if x:<EOL><INDENT>return "<STR_LIT:utf-8>" + <STR_LIT><EOL><DEDENT>y = <NUM_LIT> + <NUM_LIT:3>'
    assert codexglue_method_post_process(body) == 'if x: return "utf-8" + y = 0 + 3'


def test_line_post_process_keeps_whitespace():
    assert codexglue_line_post_process("f ( <NUM_LIT:2> ,  <CHAR_LIT> )") == "f ( 2 ,   )"


# ------------------------------------------------------------------------------------- CLI


def test_bleu_cli(tmp_path, capsys):
    refs, preds = tmp_path / "refs.txt", tmp_path / "preds.txt"
    refs.write_text("the cat\na b c d\n", encoding="utf-8")
    preds.write_text("the the the\r\nw x y z", encoding="utf-8")  # \r\n and a missing final newline
    assert metrics.main(["--references", str(refs), "--predictions", str(preds)]) == 0
    out = capsys.readouterr().out
    expected = corpus_bleu(["the cat", "a b c d"], ["the the the", "w x y z"]).score
    assert f"BLEU: {expected}" in out


def test_bleu_cli_empty_references_print_n_a(tmp_path, capsys):
    refs, preds = tmp_path / "refs.txt", tmp_path / "preds.txt"
    refs.write_text("\n\n", encoding="utf-8")
    preds.write_text("a\n\n", encoding="utf-8")
    assert metrics.main(["--references", str(refs), "--predictions", str(preds)]) == 0
    assert "BLEU: n/a" in capsys.readouterr().out


def test_bleu_cli_errors(tmp_path, capsys):
    refs, preds = tmp_path / "refs.txt", tmp_path / "preds.txt"
    refs.write_text("a\nb\n", encoding="utf-8")
    preds.write_text("a\n", encoding="utf-8")
    assert metrics.main(["--references", str(refs), "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 1 lines but" in err
    assert metrics.main(["--references", str(tmp_path / "nope.txt"), "--predictions", str(preds)]) == 2
    assert "no such file" in capsys.readouterr().err
