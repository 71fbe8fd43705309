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
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

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


def found_in(automaton, texts: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each pattern of `automaton` that occurs in some text → the label of the first such text.

    `texts` yields (label, text); a pattern is reported once, at its first occurrence.
    """
    hits: dict[str, str] = {}
    if not len(automaton):
        return hits
    for label, text in texts:
        for _end, (_idx, pattern) in automaton.iter(text):
            if pattern not in hits:
                hits[pattern] = label
    return hits


def train_windows(train) -> Iterator[tuple[str, str]]:
    """(path, prompt + completion) of every train window of a datasets.Dataset, read in batches."""
    for batch in train.select_columns(["path", "prompt", "completion"]).iter(batch_size=4096):
        yield from zip(batch["path"], map(str.__add__, batch["prompt"], batch["completion"]))


def completion_leakage(train_texts: Iterable[tuple[str, str]], heldout: dict[str, list[tuple[str, str]]],
                       top: int = 10) -> dict[str, Any]:
    """Leakage of each held-out split into train.

    `heldout` maps a split name to its (path, completion) pairs; `train_texts` yields
    (path, text) of the train windows. Returns per split: completions, counted (long enough),
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
