"""Windows: prompt + completion is an exact slice of the file (property), shapes, and splits."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codelora.windows import (MODES, WINDOW_FIELDS, Window, _char_codes, _newlines_at_tokens, batch_window_arrays,
                              make_windows, split_groups, token_starts)

# Code-like pieces plus the characters tokenizers get wrong: tabs, CRLF, trailing spaces, blank
# lines, multi-byte and astral characters (split across byte-level tokens), no final newline.
PIECES = ["fun ", "val x = 1", "{", "}", "    ", "\t", "\n", "\n\n", "\r\n", "  \n", "// é ü\n",
          "\"héllo 🙂\"", "return a + b", "if (x) ", "println(x)", "日本語", " ", "x" * 30, "😀😀"]
files = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), min_size=1, max_size=120).map("".join)


def token_newlines(text: str, starts: list[int]) -> list[int]:
    """The line boundaries windowing uses: the newlines of `text` where a token starts."""
    import numpy as np

    newlines = np.flatnonzero(_char_codes(text) == 10)
    return _newlines_at_tokens(newlines, np.asarray(starts, dtype=np.int64), len(text)).tolist()


def windows_for(tok, text, **kw):
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    return make_windows(text, token_starts(enc.offsets), **kw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=files, mode=st.sampled_from(MODES), prompt_tokens=st.integers(1, 40),
       completion_tokens=st.integers(1, 30), stride=st.integers(1, 30))
def test_prompt_plus_completion_is_an_exact_slice(tiny_tokenizer, text, mode, prompt_tokens,
                                                  completion_tokens, stride):
    starts = set(token_starts(tiny_tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).offsets))
    wins = windows_for(tiny_tokenizer, text, mode=mode, prompt_tokens=prompt_tokens,
                       completion_tokens=completion_tokens, stride=stride)
    splits = [w.split for w in wins]
    assert splits == sorted(set(splits))  # in order, no duplicate windows
    for w in wins:
        prompt, completion = text[w.prompt_start:w.split], text[w.split:w.end]
        assert 0 <= w.prompt_start < w.split < w.end <= len(text)
        assert prompt + completion == text[w.prompt_start:w.end]
        assert prompt and completion.strip()
        assert 0 < w.prompt_tokens <= prompt_tokens and w.completion_tokens <= completion_tokens
        at_line_end = w.end == len(text) or text[w.end] == "\n"  # stops just before a newline
        if mode in ("lines", "next-line"):
            assert completion[0] == "\n"  # starts at the newline ending the prompt's last line
            assert w.split in starts  # ... where a token starts, so the cut splits no token
        if mode != "chunk":
            assert at_line_end or w.cut_mid_line
        if mode == "line":
            assert "\n" not in completion  # the rest of one line
        if mode == "next-line":
            assert "\n" not in completion[1:]  # one whole line
        if w.prompt_start > 0:  # the prompt is cut to its budget only when the file is longer
            assert w.prompt_tokens == prompt_tokens


def loop_windows(text: str, starts: list[int], *, mode: str = "lines", prompt_tokens: int = 256,
                 completion_tokens: int = 64, stride: int = 64) -> list[Window]:
    """The plain definition of the windows, one candidate at a time (codelora's implementation
    until issue 17 vectorised it as `batch_window_arrays`)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    n, size = len(starts), len(text)
    if n < 2 or size == 0:
        return []
    # Line boundaries: newlines where a token starts (see the module docstring), then the end.
    newlines = sorted(p for p in set(starts) if p < size and text[p] == "\n")
    bounds = [*newlines, size]

    def char_of(tok: int) -> int:  # where token `tok` starts (the end of the text past the last)
        return 0 if tok <= 0 else (starts[tok] if tok < n else size)

    def tok_at(pos: int) -> int:  # index of the first token starting at or after `pos`
        return bisect_left(starts, pos)

    # Completion starts every `stride` tokens; a file shorter than one stride still gets one window.
    candidates = range(stride, n, stride) if n > stride else [n // 2]
    windows: list[Window] = []
    seen: set[int] = set()
    for cand in candidates:
        cut_mid_line = False
        if mode in ("lines", "next-line"):
            i = bisect_left(newlines, char_of(cand))  # the first line boundary at or after it
            split = newlines[i] if i < len(newlines) else size
        else:
            split = char_of(cand)
            if mode == "line" and text[split] == "\n":
                continue  # nothing left of this line to complete
        if split <= 0 or split >= size or split in seen:
            continue
        split_tok = tok_at(split)
        budget_end = char_of(split_tok + completion_tokens)  # where the token budget runs out
        if mode == "chunk":
            end = budget_end
        elif mode == "lines":
            last = bounds[bisect_right(bounds, budget_end) - 1]  # last boundary within the budget
            end, cut_mid_line = (last, False) if last > split else (budget_end, True)
        else:  # "line" / "next-line": up to (not including) the newline ending that line
            nl = text.find("\n", split + 1 if mode == "next-line" else split)
            end = size if nl < 0 else nl
            if end > budget_end:
                end, cut_mid_line = budget_end, True
        if end <= split or not text[split:end].strip():
            continue  # nothing to learn from a whitespace-only completion
        seen.add(split)
        prompt_tok = max(0, split_tok - prompt_tokens)
        windows.append(Window(char_of(prompt_tok), split, end, split_tok - prompt_tok,
                              tok_at(end) - split_tok, cut_mid_line))
    return windows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=files, mode=st.sampled_from(MODES), prompt_tokens=st.integers(1, 40),
       completion_tokens=st.integers(1, 30), stride=st.integers(1, 30))
def test_vectorised_windows_equal_the_loop(tiny_tokenizer, text, mode, prompt_tokens, completion_tokens, stride):
    starts = token_starts(tiny_tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).offsets)
    kw = dict(mode=mode, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, stride=stride)
    assert make_windows(text, starts, **kw) == loop_windows(text, starts, **kw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(files | st.sampled_from(["", "x", "\n", "a\nb"]), min_size=1, max_size=6),
       mode=st.sampled_from(MODES), prompt_tokens=st.integers(1, 40), completion_tokens=st.integers(1, 30),
       stride=st.integers(1, 30))
def test_files_windowed_together_get_the_windows_each_gets_alone(tiny_tokenizer, texts, mode, prompt_tokens,
                                                                 completion_tokens, stride):
    """preprocess cuts a batch of files at once (laid end to end): each file gets exactly the
    windows the loop gives it alone, including empty and one-token files."""
    kw = dict(mode=mode, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, stride=stride)
    encode = tiny_tokenizer.backend_tokenizer.encode
    starts = [token_starts(encode(t, add_special_tokens=False).offsets) for t in texts]
    arrays = batch_window_arrays(texts, starts, **kw)
    together = [(f, Window(*row)) for f, *row in zip(*(arrays[k].tolist() for k in ("file", *WINDOW_FIELDS)))]
    alone = [(f, w) for f, (t, st_) in enumerate(zip(texts, starts)) for w in loop_windows(t, st_, **kw)]
    assert together == alone


def test_lines_mode_keeps_boundary_whitespace(tiny_tokenizer):
    text = "".join(f"fun f{i}(x: Int): Int {{\n    return x + {i}\n}}\n\n" for i in range(30))
    wins = windows_for(tiny_tokenizer, text, mode="lines", prompt_tokens=50, completion_tokens=20, stride=20)
    assert len(wins) > 10
    for w in wins:
        completion = text[w.split:w.end]
        assert completion.startswith("\n") and (w.end == len(text) or text[w.end] == "\n")
        assert not w.cut_mid_line
    # indentation and blank lines at the start of a completion survive (the reference stripped them)
    assert any(text[w.split:w.end].startswith("\n    return") for w in wins)
    assert any(text[w.split:w.end].startswith("\n\nfun") for w in wins)


def test_lines_cut_keeps_the_files_tokens(tiny_tokenizer):
    """Prompt and completion tokenized apart (as training and inference do) give the file's own
    tokens: no token straddles the cut, so no lone-newline token is taught to precede EOS."""
    text = "".join(f"class C{i}:\n    def m(self):\n        return {i}\n\n" for i in range(20))
    enc = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    wins = windows_for(tiny_tokenizer, text, mode="lines", prompt_tokens=30, completion_tokens=12, stride=10)
    assert len(wins) > 5
    for w in wins:
        apart = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"]
                 for t in (text[: w.split], text[w.split: w.end])]
        whole = tiny_tokenizer(text[: w.end], add_special_tokens=False)["input_ids"]
        assert apart[0] + apart[1] == whole
        assert enc[: len(whole)] == whole or w.end == len(text)


def test_chunk_mode_token_budget_and_coverage(tiny_tokenizer):
    text = "".join(f"val v{i} = listOf({i}, {i + 1})\n" for i in range(100))
    enc = tiny_tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    wins = make_windows(text, token_starts(enc.offsets), mode="chunk", prompt_tokens=64,
                        completion_tokens=16, stride=16)
    # consecutive chunks tile the file: each completion ends where the next one starts
    assert all(a.end == b.split for a, b in zip(wins, wins[1:]))
    assert wins[-1].end == len(text)
    assert all(w.completion_tokens == 16 for w in wins[:-1])


def test_long_line_is_cut_at_the_budget(tiny_tokenizer):
    text = "val a = 1\n" * 5 + "val s = " + " + ".join(f"x{i}" for i in range(200)) + "\nval b = 2\n"
    wins = windows_for(tiny_tokenizer, text, mode="lines", prompt_tokens=8, completion_tokens=10, stride=3)
    assert any(w.cut_mid_line and w.completion_tokens == 10 for w in wins)


def test_short_file_gets_one_window_and_tiny_file_none(tiny_tokenizer):
    text = "fun a() = 1\nfun b() = 2\nfun c() = 3\n"
    assert len(windows_for(tiny_tokenizer, text, mode="lines", stride=1000)) == 1
    assert windows_for(tiny_tokenizer, "x", mode="chunk") == []
    with pytest.raises(ValueError, match="unknown mode"):
        make_windows(text, [0, 1], mode="words")


def test_token_starts_monotone():
    assert token_starts([(0, 1), (1, 3), (1, 3), (3, 4)]) == [0, 1, 1, 3]
    assert token_starts([(0, 2), (5, 6), (4, 5)]) == [0, 5, 5]
    assert token_starts([]) == [] and token_newlines("a\nb", []) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=files)
def test_token_newlines_are_the_newlines_where_a_token_starts(tiny_tokenizer, text):
    """The vectorised line boundaries equal their plain definition."""
    starts = token_starts(tiny_tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).offsets)
    assert token_newlines(text, starts) == sorted({p for p in starts if p < len(text) and text[p] == "\n"})


def test_split_groups_seeded_by_group_and_ratios():
    keys = [f"k{i % 500}" for i in range(1000)]  # every group holds two files
    a = split_groups(keys, train_ratio=0.8, validation_ratio=0.1, seed=1)
    assert a == split_groups(list(keys), train_ratio=0.8, validation_ratio=0.1, seed=1)
    assert a != split_groups(keys, train_ratio=0.8, validation_ratio=0.1, seed=2)
    by_group = {}
    for k, s in zip(keys, a):
        assert by_group.setdefault(k, s) == s  # one group, one split
    assert Counter(by_group.values()) == {"train": 400, "validation": 50, "test": 50}
    # reordering the input does not move any group
    rev = split_groups(keys[::-1], train_ratio=0.8, validation_ratio=0.1, seed=1)
    assert dict(zip(keys[::-1], rev)) == by_group
    # a tiny corpus still gets one validation and one test group at 98/1/1
    assert Counter(split_groups(["a", "b", "c", "d"], train_ratio=0.98, validation_ratio=0.01, seed=0)) == \
        {"train": 2, "validation": 1, "test": 1}
    assert split_groups(["a", "b"], train_ratio=1.0, validation_ratio=0.0, seed=0) == ["train", "train"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=files)
def test_token_starts_from_ids_equal_the_tokenizers_offsets(tiny_tokenizer, text):
    """The fast path (ids + byte lengths) gives exactly the starts the offsets give, on text
    with multi-byte and astral characters split across byte-level tokens."""
    from codelora.windows import byte_lengths, token_starts_from_ids

    backend = tiny_tokenizer.backend_tokenizer
    lengths = byte_lengths(backend)
    assert lengths is not None  # codelora's own tokenizer is plain byte-level BPE
    enc = backend.encode(text, add_special_tokens=False)
    assert token_starts_from_ids(text, enc.ids, lengths) == token_starts(enc.offsets)


def test_byte_lengths_refuses_tokenizers_whose_offsets_differ(tiny_tokenizer):
    """A normalizer or trimmed offsets move token starts away from byte counts: no fast path."""
    import json

    from tokenizers import Tokenizer

    from codelora.windows import byte_lengths

    spec = json.loads(tiny_tokenizer.backend_tokenizer.to_str())
    trimmed = {**spec, "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                          "use_regex": True}}
    lowered = {**spec, "normalizer": {"type": "Lowercase"}}
    for variant in (trimmed, lowered):
        assert byte_lengths(Tokenizer.from_str(json.dumps(variant))) is None


def test_split_groups_fill_by_files_and_keep_a_giant_group_in_train():
    # one cluster of 300 near-twins and 700 single files: validation and test get ~10% of the
    # files each, and the cluster (too big for either) stays whole in train
    keys = ["giant"] * 300 + [f"k{i}" for i in range(700)]
    for seed in range(5):
        a = split_groups(keys, train_ratio=0.8, validation_ratio=0.1, seed=seed)
        assert set(a[:300]) == {"train"}
        assert Counter(a) == {"train": 800, "validation": 100, "test": 100}
