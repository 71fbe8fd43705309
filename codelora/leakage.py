"""How much of the held-out data the training data already contains, measured verbatim.

Leakage: the share of held-out (test, validation) completions that occur as a substring of some
train window (its prompt + completion, so a copy across the prompt/completion boundary counts
too). A completion of at most `MIN_NONSPACE` non-space characters (`}`, `})`, `end`) is common to
every file and says nothing about the split, so it is left out of the count and reported apart.

The search is one Aho–Corasick automaton (pyahocorasick, a maintained C implementation) over the
held-out completions, fed every train window once: time linear in the train text plus the
matches, instead of one `in` per pair.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from codelora.utils import arrow_column

log = logging.getLogger(__name__)

MIN_NONSPACE = 3  # completions with at most this many non-space characters are not counted


def nonspace_chars(text: str) -> int:
    return len(text) - sum(map(str.isspace, text))


def counted(completion: str) -> bool:
    """Whether a completion is long enough for its presence in train to mean anything."""
    return len(completion) > MIN_NONSPACE and nonspace_chars(completion) > MIN_NONSPACE


def build_automaton(patterns: Iterable[str]):
    """An Aho–Corasick automaton whose value for each distinct pattern is its index in the list."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for idx, pattern in enumerate(dict.fromkeys(patterns)):
        automaton.add_word(pattern, (idx, pattern))
    if len(automaton):
        automaton.make_automaton()
    return automaton


def found_in(automaton, texts: Iterable[tuple]) -> dict[str, str]:
    """Each pattern of `automaton` that occurs in some text → the label of the first such text.

    `texts` yields (label, text), or (label, text, spans) where spans = (starts, reach) describes
    windows of the text: starts non-decreasing, reach[k] the furthest end among windows 0..k.
    With spans, only an occurrence that lies inside one window counts. A pattern is reported
    once, at its first occurrence.
    """
    hits: dict[str, str] = {}
    if not len(automaton):
        return hits
    for label, text, *spans in texts:
        starts, reach = spans[0] if spans else (None, None)
        for end, (_idx, pattern) in automaton.iter(text):
            if pattern in hits:
                continue
            if starts is not None:  # a window that starts at or before the match and ends after it
                k = bisect_right(starts, end + 1 - len(pattern))
                if k == 0 or reach[k - 1] < end + 1:
                    continue
            hits[pattern] = label
    return hits


def train_files_with_windows(files, windows) -> Iterator[tuple[str, str, tuple[list[int], list[int]]]]:
    """(path, text, spans) of every train file that has a window, for `found_in`: finds what
    scanning each window's prompt + completion finds, scanning each file once instead (the windows
    overlap: 4x the text on real Kotlin, and the scan was 7% of preprocessing). `windows` carries
    `file` (row in `files`), `span_start` and `span_end` (the window's characters in the file),
    in file order."""
    import numpy as np

    owner, span_start, span_end = (arrow_column(windows, name).to_numpy()
                                   for name in ("file", "span_start", "span_end"))
    rows, first = np.unique(owner, return_index=True)
    bounds = np.append(first, owner.size)
    picked = files.select(rows.tolist()).select_columns(["path", "text"])
    k = 0
    for batch in picked.iter(batch_size=256):
        for path, text in zip(batch["path"], batch["text"]):
            lo, hi = bounds[k], bounds[k + 1]
            k += 1
            yield path, text, (span_start[lo:hi].tolist(), np.maximum.accumulate(span_end[lo:hi]).tolist())


def completion_leakage(train_texts: Iterable[tuple], heldout: dict[str, list[tuple[str, str]]],
                       top: int = 10) -> dict[str, Any]:
    """Leakage of each held-out split into train.

    `heldout` maps a split name to its (path, completion) pairs; `train_texts` yields
    (path, text) of the train windows, or (path, text, spans) of the train files (`found_in`).
    Returns per split: completions, counted (long enough),
    leaked (counted ones found in train), fraction = leaked / counted, short (not counted), the
    files with most leaked completions, and the longest leaked completions with a train file
    that holds each.
    """
    wanted = [c for pairs in heldout.values() for _path, c in pairs if counted(c)]
    automaton = build_automaton(wanted)
    hits = found_in(automaton, train_texts)
    report: dict[str, Any] = {}
    for split, pairs in heldout.items():
        long_pairs = [(p, c) for p, c in pairs if counted(c)]
        leaked = [(p, c) for p, c in long_pairs if c in hits]
        per_file = Counter(p for p, _c in leaked)
        longest = sorted({c: p for p, c in leaked}.items(), key=lambda pc: (-len(pc[0]), pc[1]))[:top]
        report[split] = {
            "completions": len(pairs),
            "counted": len(long_pairs),
            "short_not_counted": len(pairs) - len(long_pairs),
            "leaked": len(leaked),
            "fraction": round(len(leaked) / len(long_pairs), 4) if long_pairs else 0.0,
            "top_files": [{"path": p, "leaked": n} for p, n in per_file.most_common(top)],
            "top_completions": [{"completion": c[:200], "chars": len(c), "heldout_path": p,
                                 "train_path": hits[c]} for c, p in longest],
        }
    return report
