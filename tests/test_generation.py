"""Generation: stop rules, left padding == unbatched, prompt and special tokens excluded."""

from __future__ import annotations

import pytest

from codelora import generation
from codelora.generation import (
    GenerationSettings,
    generate,
    generate_batch,
    load_model,
    stop_at_brace_close,
    stop_at_dedent,
    stop_at_eos,
    stop_at_line_end,
)
from codelora.utils import UserError

PROMPTS = [
    "fun add(a: Int, b: Int): Int {\n    return",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n",
    "fun",
    "object Counter {\n    private var count = 0\n",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype="float32")


# ------------------------------------------------------------------------------- stop rules


def test_line_rule():
    assert stop_at_line_end("x = 1") is None
    assert stop_at_line_end("x = 1\ny") == 5


def test_dedent_rule():
    body = "    if x:\n        return 1\n\n    return 2\n"
    assert stop_at_dedent(body) is None  # still inside the body
    text = body + "def other():\n"
    assert text[: stop_at_dedent(text)] == "    if x:\n        return 1\n\n    return 2"
    assert stop_at_dedent(body + "  ") is None  # a dedent is only known once the line has content
    assert stop_at_dedent("return 1\nclass X:") == len("return 1")  # column-0 body: one line


def test_brace_rule_ignores_strings_and_comments():
    text = ' {\n    val s = "}{" // }\n    /* } */ if (a) { b() }\n    return \'}\'\n}\nfun next() {'
    cut = stop_at_brace_close(text)
    assert text[:cut].endswith("return '}'\n}")
    assert stop_at_brace_close(" {\n  if (a) {\n") is None
    assert stop_at_brace_close(" = a + b\nfun x()") == len(" = a + b")


# ------------------------------------------------------------------------------- generation


def test_left_padding_batched_equals_unbatched(tiny):
    model, tok = tiny
    settings = GenerationSettings(max_new_tokens=12, batch_size=4)
    batched = generate_batch(model, tok, PROMPTS, settings, stop_at_eos)
    single = [generate_batch(model, tok, [p], settings, stop_at_eos)[0] for p in PROMPTS]
    assert batched == single
    assert all(isinstance(p, str) and p for p in batched)
    # the prompt is not part of the prediction
    assert not any(pred.startswith(prompt) for pred, prompt in zip(batched, PROMPTS))


def _force_token_at(monkeypatch, model, token_id: int, step: int) -> dict:
    """Make the model emit `token_id` at generation step `step` (1-based); count forward calls."""
    real_forward = model.forward
    calls = {"n": 0}

    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == step:
            out.logits[:, -1, :] = -1e9
            out.logits[:, -1, token_id] = 0.0
        return out

    monkeypatch.setattr(model, "forward", forward)
    return calls


def test_line_stop_ends_generation_early(tiny, monkeypatch):
    model, tok = tiny
    newline = tok("\n")["input_ids"]
    assert len(newline) == 1
    calls = _force_token_at(monkeypatch, model, newline[0], step=3)
    settings = GenerationSettings(max_new_tokens=40, batch_size=2)
    preds = generate_batch(model, tok, PROMPTS[:2], settings, stop_at_line_end)
    assert calls["n"] == 3  # stopped right after the newline, not after 40 tokens
    assert all("\n" not in p and p for p in preds)


def test_eos_ends_generation_and_is_dropped(tiny, monkeypatch):
    model, tok = tiny
    calls = _force_token_at(monkeypatch, model, tok.eos_token_id, step=2)
    pred = generate_batch(model, tok, ["fun"], GenerationSettings(max_new_tokens=10), stop_at_eos)[0]
    assert calls["n"] == 2
    assert tok.eos_token not in pred
    assert len(tok(pred)["input_ids"]) == 1  # the one token before EOS


@pytest.mark.parametrize("num_beams", [1, 2])
def test_min_new_tokens_bans_eos_first(tiny, monkeypatch, num_beams):
    """A model that wants EOS at once still gives a non-empty completion with min_new_tokens=1,
    and EOS after that first token still ends it (greedy fast path and generate alike)."""
    model, tok = tiny
    real_forward = model.forward
    calls = {"n": 0}

    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] <= 2:  # EOS is the top choice at steps 1 and 2, by a wide margin
            out.logits[:, -1, tok.eos_token_id] = out.logits[:, -1, :].max() + 50.0
        return out

    monkeypatch.setattr(model, "forward", forward)
    settings = GenerationSettings(max_new_tokens=10, min_new_tokens=1, num_beams=num_beams)
    pred = generate_batch(model, tok, ["fun"], settings, stop_at_eos)[0]
    assert len(tok(pred, add_special_tokens=False)["input_ids"]) == 1  # one token, then EOS
    calls["n"] = 0
    assert generate_batch(model, tok, ["fun"], GenerationSettings(max_new_tokens=10), stop_at_eos)[0] == ""


def test_next_line_rule():
    from codelora.generation import stop_after_next_line

    assert stop_after_next_line("\n    return x\n    y") == len("\n    return x")
    assert stop_after_next_line("\n    return x") is None


def test_generate_sorts_and_returns_every_index(tiny):
    model, tok = tiny
    got = {}
    for idx, preds in generate(model, tok, PROMPTS, GenerationSettings(max_new_tokens=4, batch_size=3), stop_at_eos):
        got.update(zip(idx, preds))
    assert sorted(got) == list(range(len(PROMPTS)))


def test_beam_and_sampling_options_run(tiny):
    model, tok = tiny
    beam = generate_batch(model, tok, PROMPTS[:2], GenerationSettings(max_new_tokens=5, num_beams=2), stop_at_eos)
    sample = generate_batch(model, tok, PROMPTS[:2], GenerationSettings(max_new_tokens=5, do_sample=True), stop_at_eos)
    assert len(beam) == len(sample) == 2


def test_model_without_tokenizer_is_a_user_error(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "weights-only")
    with pytest.raises(UserError, match="tokenizer"):
        load_model(str(tmp_path / "weights-only"))
    assert generation.STOP_RULES["line"] is stop_at_line_end


def test_compacting_greedy_equals_transformers_generate(tiny):
    """The fast greedy path must choose exactly the tokens `generate(do_sample=False)` chooses."""
    model, tok = tiny
    settings = GenerationSettings(max_new_tokens=10, batch_size=4)
    ours = generate_batch(model, tok, PROMPTS, settings, stop_at_eos)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    theirs = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert ours == theirs
    # beams take the transformers path and still return one prediction per prompt
    assert len(generate_batch(model, tok, PROMPTS, GenerationSettings(max_new_tokens=4, num_beams=2), stop_at_eos)) == 4
