"""Prompt/completion windows over a cleaned file, and file-level train/validation/test splits.

Windows are cut from the *text*, never decoded from tokens: the tokenizer only says where tokens
start (its character offsets), which sets the cut points and the token counts. So for every
window `prompt + completion == text[prompt_start:end]`, whitespace and newlines at both
boundaries included, whatever the tokenizer does (byte-level merges, trimmed offsets, characters
split across tokens).

Completion shapes (`mode`):

- `lines` (default): whole lines, as many as fit in `completion_tokens`. The cut points sit just
  *before* a newline: the prompt ends at the end of a line's text and the completion is
  "\n" + the following lines, without the newline that ends the last one; training appends EOS
  there. So the model learns to stop at a line end, which is what an editor needs (a cut in the
  middle of a token or line teaches it to stop anywhere). A single line longer than the budget
  is cut at the budget (counted in `cut_mid_line`).
- `line`: the rest of the current line, from a token boundary, without its newline
  (CodeXGLUE-style line completion).
- `next-line`: "\n" + the whole next line.
- `chunk`: exactly `completion_tokens` tokens from a token boundary, like the reference
  project's ~100-token chunks.

Why before the newline and not after it: byte-level BPE tokenizers (GPT-2's, Phi-1.5's, ours)
pre-tokenize a newline together with the next line's indentation ("\n   " + " return"). A cut
after the newline splits that token, so the prompt, tokenized alone as it is at inference, ends
in a lone "\n" token the base model has rarely seen, while each training completion ends with
a lone "\n" followed by EOS: the model learns "lone newline -> stop" and then answers every
prompt with nothing. A cut at a newline that starts a token keeps the tokens of prompt and
completion, tokenized apart, equal to the tokens of the file.

Consecutive windows start `stride` tokens apart; the prompt is the preceding context, at most
`prompt_tokens` tokens (cut at a token start, not at a line start, to use the whole budget).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

MODES = ("lines", "line", "next-line", "chunk")




@dataclass(frozen=True)
class Window:
    prompt_start: int  # character offsets into the file: prompt = text[prompt_start:split]
    split: int  # completion = text[split:end]
    end: int
    prompt_tokens: int
    completion_tokens: int
    cut_mid_line: bool = False  # a line-shaped completion had to stop at the token budget


def token_starts(offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Start offset of each token, made non-decreasing (byte-level BPE gives the pieces of one
    multi-byte character the same span; a max keeps bisect valid whatever a tokenizer returns).
    Vectorised: a file has ~10^4 tokens and this runs on every one (bench/preprocess.py)."""
    import numpy as np

    firsts = np.fromiter(map(itemgetter(0), offsets), dtype=np.int64, count=len(offsets))
    return np.maximum.accumulate(firsts).tolist()


def byte_lengths(tokenizer) -> Any:
    """Bytes of text each token id stands for (a numpy array), where a tokenizer maps text to
    tokens byte for byte: byte-level BPE (GPT-2, Phi-1.5, codelora's own) without normalizer,
    prefix space, offset trimming or whitespace-stripping added tokens. Else None.

    Why: reading `Encoding.offsets` builds a Python tuple per token, ~10x the cost of reading the
    ids, and ~15% of preprocessing on real Kotlin (bench/preprocess.py); token starts follow from
    the ids and these lengths (`token_starts_from_ids`)."""
    import json

    import numpy as np

    spec = json.loads(tokenizer.to_str())
    pre, post, model = spec.get("pre_tokenizer") or {}, spec.get("post_processor"), spec.get("model") or {}
    posts = post.get("processors", []) if post and post.get("type") == "Sequence" else [post] if post else []
    # TemplateProcessing only adds special tokens, which preprocessing does not ask for
    if (spec.get("normalizer") is not None or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space")
            or model.get("type") != "BPE" or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
            or any(p.get("type") not in ("ByteLevel", "TemplateProcessing") or p.get("trim_offsets") for p in posts)):
        return None
    lengths = np.full(tokenizer.get_vocab_size(with_added_tokens=True), -1, dtype=np.int64)
    for token, idx in model.get("vocab", {}).items():
        lengths[idx] = len(token)  # the byte-level alphabet spells each byte as one character
    for added in spec.get("added_tokens", []):
        if added.get("lstrip") or added.get("rstrip"):
            return None  # such a token also covers the whitespace beside it
        lengths[added["id"]] = len(added["content"].encode("utf-8"))
    return None if (lengths <= 0).any() else lengths


def token_starts_from_ids(text: str, ids: Sequence[int], lengths) -> list[int] | None:
    """`token_starts(offsets)` computed from token ids and `byte_lengths`: the character holding
    each token's first byte (for a character split across tokens that is where the tokenizer's
    offsets start too). None when the tokens do not spell the text's bytes exactly."""
    starts = token_start_array(text, ids, lengths)
    return None if starts is None else starts.tolist()


def token_start_array(text: str, ids: Sequence[int], lengths) -> Any:
    """`token_starts_from_ids` as a numpy array (what `batch_window_arrays` takes), or None."""
    import numpy as np

    if not ids:
        return np.zeros(0, dtype=np.int64)
    token_lengths = lengths[np.fromiter(ids, dtype=np.intp, count=len(ids))]  # faster than np.asarray
    ends = np.cumsum(token_lengths)
    starts = ends - token_lengths
    if text.isascii():  # one byte per character
        return starts if ends[-1] == len(text) else None
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    if ends[-1] != data.size:
        return None
    char_of_byte = np.cumsum((data & 0xC0) != 0x80) - 1  # continuation bytes are 10xxxxxx
    return char_of_byte[starts]


def _char_codes(text: str):
    """One integer per character of `text` (numpy): its bytes when ASCII, else UTF-32 codes."""
    import numpy as np

    if text.isascii():  # O(1) for CPython strings
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _newlines_at_tokens(newlines, starts, size: int):
    """The positions in `newlines` at which some token starts (`starts`), all below `size`: a
    mark per position (faster than searching each newline among the starts: bench/RESULTS.md)."""
    import numpy as np

    at_token = np.zeros(size, dtype=bool)
    at_token[starts] = True
    return newlines[at_token[newlines]]


def _newline_positions(texts: Sequence[str], base) -> Any:
    """Positions of the newlines of `texts`, each text's counted from its `base` (numpy)."""
    import numpy as np

    found = [np.flatnonzero(_char_codes(t) == 10) + b for t, b in zip(texts, base.tolist())]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


WINDOW_FIELDS = ("prompt_start", "split", "end", "prompt_tokens", "completion_tokens", "cut_mid_line")


def batch_window_arrays(texts: Sequence[str], starts: Sequence[Any], *, mode: str = "lines",
                        prompt_tokens: int = 256, completion_tokens: int = 64,
                        stride: int = 64) -> dict[str, Any]:
    """The windows of several files, file by file and in order, as numpy arrays named by
    WINDOW_FIELDS (positions within each file) plus `file`, the index of each window's file;
    `starts[i]` = token_starts(...) of texts[i], a list or an array.

    Every candidate window of every file is computed at once, with searchsorted over the token
    starts and line boundaries of the files laid end to end (one character apart, so no search
    crosses into the next file), instead of a Python loop with bisect per window (bench/RESULTS.md,
    preprocessing, has what windowing costs). The loop it replaces is kept as the plain
    definition in tests/test_windows.py, which checks the two agree on every mode."""
    import numpy as np

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    lay = _lay_out(texts, starts)
    file, cand = _candidates(lay.n, lay.size, stride)
    f_base, f_end, f_n, f_char, f_tok = (lay.base[file], lay.file_end[file], lay.n[file], lay.char_base[file],
                                         lay.tok_base[file])
    split, ok = _splits(lay, mode, lay.char_of[f_char + cand])
    ok &= (split > f_base) & (split < f_end)
    split_tok = np.searchsorted(lay.s, split) - f_tok
    # where the completion's token budget runs out
    budget_end = lay.char_of[f_char + np.minimum(split_tok + completion_tokens, f_n)]
    end, cut = _ends(lay, mode, split, budget_end)
    picked = _picked(texts, file, split, end, f_base, ok & (end > split))
    file, f_base, f_char, f_tok = file[picked], f_base[picked], f_char[picked], f_tok[picked]
    split, split_tok, end = split[picked], split_tok[picked], end[picked]
    prompt_tok = np.maximum(0, split_tok - prompt_tokens)
    return {"prompt_start": lay.char_of[f_char + prompt_tok] - f_base, "split": split - f_base,
            "end": end - f_base, "prompt_tokens": split_tok - prompt_tok,
            "completion_tokens": np.searchsorted(lay.s, end) - f_tok - split_tok, "cut_mid_line": cut[picked],
            "file": file}


class _Layout(NamedTuple):
    """A batch of files laid end to end, one character apart (numpy arrays, batch positions)."""

    s: Any  # every token start
    n: Any  # tokens per file
    size: Any  # characters per file
    base: Any  # where each file starts
    file_end: Any  # where each file ends
    tok_base: Any  # index of each file's first token in `s`
    newlines: Any  # every newline
    bounds: Any  # line boundaries: newlines where a token starts (see the module docstring), file ends
    char_base: Any  # char_of[char_base[f] + tok]: where token `tok` of file f starts (its file's
    char_of: Any  # start for the first, the end of the file past the last)


def _lay_out(texts: Sequence[str], starts: Sequence[Any]) -> _Layout:
    import numpy as np

    per_file = [np.asarray(st, dtype=np.int64) for st in starts]
    n = np.fromiter(map(len, per_file), dtype=np.int64, count=len(per_file))
    size = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    base = np.cumsum(size + 1) - (size + 1)
    s = np.concatenate([st + b for st, b in zip(per_file, base.tolist())] or [np.zeros(0, np.int64)])
    tok_base = np.cumsum(n) - n
    newlines = _newline_positions(texts, base)
    file_end = base + size
    span = int(file_end[-1]) + 1 if len(texts) else 0  # every position of the batch is below this
    bounds = np.sort(np.concatenate([_newlines_at_tokens(newlines, s, span), file_end]))
    char_base = np.cumsum(n + 1) - (n + 1)
    char_of = np.insert(s, tok_base + n, file_end)
    char_of[char_base[n > 0]] = base[n > 0]
    return _Layout(s, n, size, base, file_end, tok_base, newlines, bounds, char_base, char_of)


def _candidates(n, size, stride: int) -> tuple[Any, Any]:
    """(file, token) of each candidate completion start: every `stride` tokens; a file shorter
    than one stride still gets one window."""
    import numpy as np

    usable = (n >= 2) & (size > 0)
    count = np.where(usable, np.where(n > stride, (n - 1) // stride, 1), 0)
    file = np.repeat(np.arange(len(size)), count)
    step = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    return file, np.where(n[file] > stride, (step + 1) * stride, n[file] // 2)


def _splits(lay: _Layout, mode: str, at_candidate) -> tuple[Any, Any]:
    """(split, usable) per candidate: where the completion starts for `mode`."""
    import numpy as np

    if mode in ("lines", "next-line"):  # the first line boundary at or after the candidate
        return lay.bounds[np.searchsorted(lay.bounds, at_candidate)], np.ones(at_candidate.size, dtype=bool)
    split, newlines = at_candidate, lay.newlines
    # "line": nothing left of this line to complete when it starts at its newline
    at = np.minimum(np.searchsorted(newlines, split), max(newlines.size - 1, 0))
    ok = np.ones(split.size, dtype=bool) if mode == "chunk" or not newlines.size else newlines[at] != split
    return split, ok


def _ends(lay: _Layout, mode: str, split, budget_end) -> tuple[Any, Any]:
    """(end, cut mid-line) per candidate: where the completion stops for `mode`."""
    import numpy as np

    if mode == "chunk":
        return budget_end, np.zeros(split.size, dtype=bool)
    if mode == "lines":
        last = lay.bounds[np.searchsorted(lay.bounds, budget_end, side="right") - 1]  # last one in budget
        cut = last <= split
        return np.where(cut, budget_end, last), cut
    # "line" / "next-line": up to (not including) the newline ending that line, or the file's end
    line_ends = np.sort(np.concatenate([lay.newlines, lay.file_end]))
    after = np.searchsorted(line_ends, split + 1 if mode == "next-line" else split)
    end = line_ends[np.minimum(after, line_ends.size - 1)]  # (past the end only where split is not ok)
    cut = end > budget_end
    return np.where(cut, budget_end, end), cut


def _picked(texts: Sequence[str], file, split, end, f_base, ok) -> Any:
    """The candidates kept: usable, not whitespace only, the first of each split."""
    import numpy as np

    picked = np.flatnonzero(ok)
    # nothing to learn from a whitespace-only completion (a str method per candidate: cheaper
    # than a prefix count over every character of the files)
    local_split, local_end = (split - f_base)[picked].tolist(), (end - f_base)[picked].tolist()
    blank = [texts[f][a:b].isspace() for f, a, b in zip(file[picked].tolist(), local_split, local_end)]
    picked = picked[~np.array(blank, dtype=bool)] if blank else picked
    # the first window of each split (splits never decrease, so repeats are adjacent)
    return picked[np.diff(split[picked], prepend=-1) != 0]


def make_windows(text: str, starts, *, mode: str = "lines", prompt_tokens: int = 256,
                 completion_tokens: int = 64, stride: int = 64) -> list[Window]:
    """All windows of one file, in order; `starts` = token_starts(...) of this text."""
    arrays = batch_window_arrays([text], [starts], mode=mode, prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens, stride=stride)
    return [Window(*row) for row in zip(*(arrays[name].tolist() for name in WINDOW_FIELDS))]


# ------------------------------------------------------------------------------ splits


SPLITS = ("train", "validation", "test")


def split_groups(keys: Sequence[str], *, train_ratio: float, validation_ratio: float,
                 seed: int) -> list[str]:
    """Assign each file to a split by its group key (files with one key share a split).

    Groups are taken in a seeded shuffled order into validation, then test, while they fit that
    split's share of the *files*; the rest is train. A group bigger than a held-out split's share
    (a large cluster of near-twins) goes to train: holding it out would overfill the split, and
    cutting it would leak. Every non-zero held-out ratio gets at least one group when there are
    three or more, so a small corpus still has a validation and a test split.
    """
    sizes = Counter(keys)
    groups = sorted(sizes)
    # Sorted first, so the result depends only on the keys and the seed, not on input order.
    random.Random(seed).shuffle(groups)
    test_ratio = max(0.0, 1.0 - train_ratio - validation_ratio)
    ratios = {"validation": validation_ratio, "test": test_ratio if test_ratio > 1e-9 else 0.0}
    targets = {s: round(len(keys) * r) for s, r in ratios.items()}
    filled = {s: 0 for s in ratios}
    assign: dict[str, str] = {}
    for key in groups:
        assign[key] = "train"
        for split, target in targets.items():
            first = filled[split] == 0 and ratios[split] > 0 and len(groups) >= 3 and sizes[key] <= max(target, 1)
            if filled[split] + sizes[key] <= target or first:
                assign[key] = split
                filled[split] += sizes[key]
                break
    return [assign[k] for k in keys]


def group_key(normalized_text: str) -> str:
    return hashlib.sha256(normalized_text.encode("utf-8")).hexdigest()
