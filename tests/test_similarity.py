"""The seed evaluation's infilling metrics: chrF, WER, token-set IoU, model-embedding cosine."""

from __future__ import annotations

import pytest
import torch

from codelora import similarity as sim
from codelora.metric_table import implementations


def test_chrf_bounds_and_order():
    assert sim.chrf("val x = 1", "val x = 1") == pytest.approx(100.0)
    assert sim.chrf("qqqq", "zzzz") == pytest.approx(0.0)
    close, far = sim.chrf("val x = 10", "val x = 1"), sim.chrf("var y = 2", "val x = 1")
    assert 0 < far < close < 100
    assert sim.chrf("", "") == 100.0 and sim.chrf("", "a") == 0.0


def test_wer_counts_word_edits_over_reference_words():
    assert sim.wer("a x c", "a b c") == pytest.approx(1 / 3)
    assert sim.wer("a b c d", "a b c") == pytest.approx(1 / 3)  # one insertion
    assert sim.wer("", "a b") == 1.0 and sim.wer("a", "") == 1.0 and sim.wer("", "") == 0.0


def test_token_iou_ignores_order_and_spacing():
    assert sim.token_iou("foo(bar)", "bar ( foo )") == 1.0
    assert sim.token_iou("x = 1", "y = 1") == pytest.approx(2 / 4)
    assert sim.token_iou("", "") == 1.0 and sim.token_iou("", "x") == 0.0


def test_infill_scores_summaries():
    rows, corpus = sim.infill_scores(["a b", "x"], ["a b", "y"])
    assert rows[0] == {"chrf": 100.0, "wer": 0.0, "token_iou": 1.0}
    assert rows[1]["wer"] == 1.0 and rows[1]["token_iou"] == 0.0
    assert corpus["wer"] == 50.0 and corpus["token_iou"] == 50.0 and 0 < corpus["chrf"] < 100
    impl = implementations(["chrf", "wer"])
    assert "sacrebleu" in impl["chrf"] and "jiwer" in impl["wer"]


def test_cosine_of_the_models_own_embeddings(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = tok.eos_token
    sims = sim.cosine_similarities(model, tok, ["return a + b", "", "fun main()", ""],
                                   ["return a + b", "x", "class Stack:", ""])
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] == 0.0 and sims[3] == 1.0
    assert -1.0 <= sims[2] < 0.9999


def test_cosine_embedding_does_not_depend_on_batch_mates(tiny_model_dir):
    """A text's embedding is the same alone and left-padded beside a longer text (positions count
    from its first real token, as in generation), so a score never depends on batch composition."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    alone = sim.mean_embeddings(model, tok, ["return a + b"])
    padded = sim.mean_embeddings(model, tok, ["return a + b", "class Stack:\n    def push(self, x): pass\n" * 3])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
