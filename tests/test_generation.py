"""Generation: left padding == unbatched, prompt and special tokens excluded, stop rules obeyed
(the rules themselves: test_stops.py)."""

from __future__ import annotations

import pytest

from codelora import generation
from codelora.generation import GenerationSettings, generate, generate_batch, load_model
from codelora.stops import stop_at_brace_close, stop_at_eos, stop_at_line_end
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


def test_generate_sorts_and_returns_every_index(tiny):
    model, tok = tiny
    got = {}
    for idx, preds in generate(model, tok, PROMPTS, GenerationSettings(max_new_tokens=4, batch_size=3), stop_at_eos):
        got.update(zip(idx, preds))
    assert sorted(got) == list(range(len(PROMPTS)))


def test_beam_and_sampling_take_transformers_generate_with_our_stop_rule(tiny):
    """Beam search and sampling run transformers' generate with the settings given (the same
    tokens as calling it directly, with the same seed), and the stop rule still cuts each row."""
    import torch

    model, tok = tiny
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)

    def direct(**kwargs):
        out = model.generate(**enc, max_new_tokens=5, pad_token_id=tok.pad_token_id, **kwargs)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    beam = generate_batch(model, tok, PROMPTS[:2], GenerationSettings(max_new_tokens=5, num_beams=2), stop_at_eos)
    assert beam == direct(num_beams=2, do_sample=False)
    settings = GenerationSettings(max_new_tokens=5, do_sample=True, temperature=0.8, top_p=0.9)
    torch.manual_seed(3)
    sample = generate_batch(model, tok, PROMPTS[:2], settings, stop_at_eos)
    torch.manual_seed(3)
    assert sample == direct(do_sample=True, temperature=0.8, top_p=0.9)
    torch.manual_seed(3)
    cut = generate_batch(model, tok, PROMPTS[:2], settings, stop_at_line_end)
    assert cut == [text.split("\n")[0] for text in sample]


def test_model_without_tokenizer_is_a_user_error(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "weights-only")
    with pytest.raises(UserError, match="tokenizer"):
        load_model(str(tmp_path / "weights-only"))


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


@pytest.mark.parametrize("rule", [stop_at_line_end, stop_at_brace_close, stop_at_eos], ids=["line", "brace", "eos"])
def test_both_greedy_paths_predict_the_same_and_count_the_same_tokens(tiny, rule):
    """`compacting=False` (model.generate + the token-id stop criterion, what bench/generation.py
    times the compacting loop against) gives the same predictions and the same real new tokens;
    only generate's positions for rows that already stopped count as padding."""
    model, tok = tiny
    settings = GenerationSettings(max_new_tokens=12, min_new_tokens=2, batch_size=4)
    compact, through_generate = generation.GenerationStats(), generation.GenerationStats()
    ours = generate_batch(model, tok, PROMPTS, settings, rule, compact)
    theirs = generate_batch(model, tok, PROMPTS, settings, rule, through_generate, compacting=False)
    assert ours == theirs
    assert compact.new_tokens == through_generate.new_tokens > 0
    assert compact.new_padding == 0


# ------------------------------------------------------------------- speed without changing output


def test_first_forward_keeps_only_the_last_positions_logits(tiny, monkeypatch):
    """All prompt positions' logits are batch x prompt x vocab floats (3.4 GB at Phi-1.5 scale,
    batch 32 x 1,024); only the last position is used."""
    model, tok = tiny
    real_forward = model.forward
    shapes = []

    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        shapes.append(tuple(out.logits.shape))
        return out

    monkeypatch.setattr(model, "forward", forward)
    generate_batch(model, tok, PROMPTS, GenerationSettings(max_new_tokens=3), stop_at_line_end)
    assert shapes[0][:2] == (len(PROMPTS), 1)


def test_rows_are_decoded_only_when_their_token_might_stop_them(tiny, monkeypatch):
    """A line rule can only fire on a token containing a newline: no row is decoded on the other
    steps (the old loop decoded every row at every step)."""
    model, tok = tiny
    newline = tok("\n")["input_ids"][0]
    plain = next(i for i in range(len(tok)) if "\n" not in tok.decode([i]) and i != tok.eos_token_id)
    real_forward = model.forward
    calls = {"forward": 0, "decoded": 0}

    def forward(*args, **kwargs):  # a plain token at steps 1-5, then a newline
        out = real_forward(*args, **kwargs)
        calls["forward"] += 1
        out.logits[:, -1, :] = -1e9
        out.logits[:, -1, newline if calls["forward"] == 6 else plain] = 0.0
        return out

    real_decode, real_batch_decode = tok.decode, tok.batch_decode

    def decode(ids, *a, **k):
        calls["decoded"] += 1
        return real_decode(ids, *a, **k)

    def batch_decode(seqs, *a, **k):
        calls["decoded"] += len(seqs)
        return real_batch_decode(seqs, *a, **k)

    expected = [tok.decode([plain] * 5)] * 2
    generation._token_has(tok, "\n", generation.vocab_size(model, tok))  # the one-off vocabulary scan, cached
    monkeypatch.setattr(model, "forward", forward)
    monkeypatch.setattr(tok, "decode", decode)
    monkeypatch.setattr(tok, "batch_decode", batch_decode)
    preds = generate_batch(model, tok, PROMPTS[:2], GenerationSettings(max_new_tokens=20), stop_at_line_end)
    assert calls["forward"] == 6
    assert preds == expected
    # 2 rows checked once (step 6) + 2 final decodes; the old loop decoded 2 rows x 6 steps + 2
    assert calls["decoded"] <= 4


def test_plan_batches_puts_equal_lengths_together():
    lengths = [192] * 20 + [50, 191, 192, 100, 192, 30]
    batches = generation.plan_batches(lengths, 4)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 4 for b in batches)
    # 23 prompts of 192: five full batches without padding; the rest pooled, longest first
    unpadded = [b for b in batches if len({lengths[i] for i in b}) == 1 and len(b) == 4]
    assert len(unpadded) == 5
    assert lengths[batches[0][0]] == 192 and lengths[batches[-1][-1]] == 30


def test_generate_reports_its_padding(tiny):
    model, tok = tiny
    stats = generation.GenerationStats()
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[2]]  # two of one length, one shorter
    for _ in generate(model, tok, prompts, GenerationSettings(max_new_tokens=4, batch_size=2), stop_at_eos, stats):
        pass
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    # the two equal prompts share a batch: no prompt padding at all
    assert stats.prompt_tokens == sum(lengths) and stats.prompt_padding == 0
    assert 0 < stats.new_tokens <= 3 * 4
    assert 0.0 <= stats.padding_fraction < 1.0
