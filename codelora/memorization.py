"""Memorization and repetition of benchmark predictions: how much of each prediction is copied
verbatim from the training data, and whether it degenerates into repeating itself.

A finetuned model can raise edit similarity by reciting training text; these figures make that
visible beside the scores.

Longest copied span: the training windows' text (prompt + completion) is indexed by its
whitespace-token 8-grams (a sorted numpy array of 64-bit hashes: ~8 bytes per train token). In a
prediction, the longest run of consecutive tokens whose every 8-gram is in the index is the
candidate span; one Aho–Corasick pass over the train text then checks each candidate verbatim
(`verified`). A run whose 8-grams come from different places is reported unverified: the figure
is then an upper bound. Spans shorter than 8 tokens count as 0 (too short to call copying), so
a prediction of fewer than 8 tokens (most next-line completions) cannot show one: the report
says how many predictions are measurable, prints n/a where none is, and checks the short ones
whole instead: a short prediction of more than 3 non-space characters (leakage.counted) found
verbatim inside a train window, the measure preprocess's leakage figure uses for references.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

NGRAM = 8
_WORD = re.compile(r"\S+")
_REPEATED_RUN = re.compile(r"(.{12,}?)\1{2,}", re.DOTALL)  # a chunk of >= 12 chars, 3+ times in a row


def _gram_hashes(tokens: list[str]) -> np.ndarray:
    """64-bit hash of each run of NGRAM consecutive tokens (crc32 per token, mixed)."""
    if len(tokens) < NGRAM:
        return np.zeros(0, dtype=np.uint64)
    crc = {t: zlib.crc32(t.encode()) for t in dict.fromkeys(tokens)}
    ids = np.fromiter(map(crc.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
    width = len(ids) - NGRAM + 1
    acc = np.zeros(width, dtype=np.uint64)
    for k in range(NGRAM):
        acc = acc * np.uint64(0x100000001B3) + ids[k:k + width]
    return acc


@dataclass
class TrainIndex:
    grams: np.ndarray  # sorted distinct n-gram hashes of the train text
    texts: list[str]  # the train texts themselves, for the verbatim check

    @classmethod
    def build(cls, texts: Iterable[str]) -> TrainIndex:
        texts = list(texts)
        parts = [_gram_hashes(_WORD.findall(t)) for t in texts]
        grams = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)
        return cls(grams, texts)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        if not self.grams.size or not hashes.size:
            return np.zeros(hashes.size, dtype=bool)
        pos = np.searchsorted(self.grams, hashes).clip(max=self.grams.size - 1)
        return self.grams[pos] == hashes


def candidate_span(index: TrainIndex, prediction: str) -> str:
    """The longest run of the prediction's tokens whose every NGRAM-gram occurs in train."""
    matches = list(_WORD.finditer(prediction))
    hit = index.contains(_gram_hashes([m.group(0) for m in matches]))
    best, start, best_span = 0, None, ""
    for i, flag in enumerate([*hit.tolist(), False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            last = i - 1 + NGRAM - 1  # the last token of the run's last n-gram
            span = prediction[matches[start].start():matches[last].end()]
            if len(span) > best:
                best, best_span = len(span), span
            start = None
    return best_span


def verified_spans(index: TrainIndex, spans: list[str]) -> set[str]:
    """Which of `spans` occur verbatim in some train text (one Aho–Corasick pass)."""
    from codelora.leakage import build_automaton, found_in

    automaton = build_automaton(s for s in spans if s)
    return set(found_in(automaton, ((str(i), t) for i, t in enumerate(index.texts))))


def is_repetitive(prediction: str) -> bool:
    """Degenerate output: a chunk of >= 12 characters repeated 3+ times in a row, or at least 4
    non-blank lines of which at most half are distinct."""
    lines = [ln.strip() for ln in prediction.splitlines() if ln.strip()]
    if len(lines) >= 4 and len(set(lines)) * 2 <= len(lines):
        return True
    return _REPEATED_RUN.search(prediction) is not None


def _short_text(prediction: str) -> str:
    """The stripped prediction when it is too short for a copied span (< NGRAM tokens) but long
    enough for its presence in train to mean something (leakage.counted); else ""."""
    from codelora.leakage import counted

    text = prediction.strip()
    return text if len(_WORD.findall(text)) < NGRAM and counted(text) else ""


def memorization(index: TrainIndex, predictions: list[str]) -> list[dict[str, Any]]:
    """Per prediction: copied_chars, copied_share (of the prediction's characters), verified,
    repetitive; measurable (>= NGRAM tokens: a copied span can be found) and, for a short one worth
    checking, short_in_train (found whole, verbatim, in a train window; None when not checked)."""
    spans = [candidate_span(index, p) for p in predictions]
    short = [_short_text(p) for p in predictions]
    verified = verified_spans(index, spans + short)  # one pass over the train text for both
    return [{"copied_chars": len(s), "copied_share": round(len(s) / len(p), 4) if p else 0.0,
             "verified": bool(s) and s in verified, "repetitive": is_repetitive(p),
             "measurable": len(_WORD.findall(p)) >= NGRAM, "short_in_train": (t in verified) if t else None}
            for p, s, t in zip(predictions, spans, short, strict=True)]


def summarize(rows: list[dict[str, Any]], predictions: list[str], top: int = 5) -> dict[str, Any]:
    """Per-model figures for summary.json and the report: means, rates, the worst examples."""
    if not rows:
        return {"predictions": 0}
    chars = np.array([r["copied_chars"] for r in rows])
    share = np.array([r["copied_share"] for r in rows])
    worst = sorted(range(len(rows)), key=lambda i: -rows[i]["copied_chars"])[:top]
    short = [r["short_in_train"] for r in rows if r.get("short_in_train") is not None]
    return {
        "predictions": len(rows),
        # predictions long enough (>= NGRAM tokens) to show a copied span; the copied figures are 0 for
        # the rest
        "measurable": sum(bool(r.get("measurable")) for r in rows),
        "short_checked": len(short),
        "short_in_train_rate": round(sum(short) / len(short), 4) if short else None,
        "mean_copied_chars": round(float(chars.mean()), 2),
        "mean_copied_share": round(float(share.mean()), 4),
        "share_mostly_copied": round(float((share >= 0.5).mean()), 4),
        "repetitive_rate": round(float(np.mean([r["repetitive"] for r in rows])), 4),
        "worst": [{"index": i, **rows[i], "prediction": predictions[i][:400]} for i in worst if rows[i]["copied_chars"]],
    }


# ------------------------------------------------------------------------------ the benchmark report


def benchmark_memorization(dataset: str, rows: dict[str, list[dict]], models: list[str]) -> dict[str, Any]:
    """summary.json's `memorization`: per model, over the predictions of every task, against the
    train split of the prepared dataset; each row gets its figures under row["memorization"]."""
    from pathlib import Path

    path = Path(dataset).expanduser()
    if not (path / "dataset_dict.json").is_file():
        return {"checked": False, "reason": f"{dataset} is not a local prepared dataset (its train split is needed)"}
    from datasets import load_from_disk

    train = load_from_disk(str(path))["train"]
    index = TrainIndex.build(p + c for p, c in zip(train["prompt"], train["completion"]))
    result: dict[str, Any] = {"checked": True, "train_windows": len(train), "ngram": NGRAM, "models": {}}
    for model in models:
        where = [row for task_rows in rows.values() for row in task_rows]
        preds = [row["predictions"].get(model, "") for row in where]
        figures = memorization(index, preds)
        for row, fig in zip(where, figures):
            row.setdefault("memorization", {})[model] = fig
        result["models"][model] = summarize(figures, preds)
    from codelora.contracts import read_dataset_stats

    stats = read_dataset_stats(path) or {}
    leakage = stats.get("leakage") or {}
    result["dataset_leakage"] = {s: {k: r[k] for k in ("counted", "leaked", "fraction")} for s, r in leakage.items()}
    # What preprocess found of the benchmark tasks in the training files (--contamination-data).
    result["dataset_contamination"] = stats.get("contamination") or {"checked": False}
    return result


def _contamination_line(found: dict) -> str:
    if not found.get("checked"):
        return "Benchmark contamination of the train split: not checked (preprocess --contamination-data)."
    return (f"Benchmark contamination of the train split: {found['files_hit']} of {found['files_checked']} files "
            f"shared a {found['ngram']}-gram run with {found['benchmark_tasks']} benchmark tasks, "
            f"{found['dropped']} dropped.")


def memorization_markdown(summary: dict) -> str:
    """The memorization table under results.md's score table ('' when not measured)."""
    mem = summary.get("memorization") or {}
    if not mem.get("checked"):
        return ""
    lines = ["", "", f"Memorization: longest span of each prediction copied verbatim from the train split "
             f"({mem['train_windows']} windows); held-out leakage of the split: "
             + (", ".join(f"{s} {100 * r['fraction']:.2f}%" for s, r in mem.get("dataset_leakage", {}).items())
                or "not recorded"), "",
             _contamination_line(mem.get("dataset_contamination") or {}), "",
             "| model | measurable (>= 8 tokens) | mean copied chars | mean copied share | "
             "predictions >= 50% copied | short ones verbatim in train | repetitive |",
             "|---|---|---|---|---|---|---|"]
    few = []
    for model, s in mem["models"].items():
        if not s.get("predictions"):
            continue
        measurable = s.get("measurable", s["predictions"])
        copied = ([str(s["mean_copied_chars"]), f"{100 * s['mean_copied_share']:.1f}%",
                   f"{100 * s['share_mostly_copied']:.1f}%"] if measurable else ["n/a"] * 3)
        short = (f"{100 * s['short_in_train_rate']:.1f}% of {s['short_checked']}"
                 if s.get("short_in_train_rate") is not None else "n/a")
        lines.append(f"| {model} | {measurable}/{s['predictions']} | {' | '.join(copied)} | {short} | "
                     f"{100 * s['repetitive_rate']:.1f}% |")
        if 2 * measurable < s["predictions"]:
            few.append(model)
    if few:
        lines += ["", f"Copied spans count from {NGRAM} whitespace tokens up, and most predictions here are "
                  "shorter (single next lines, say): the copied columns count those as 0 (n/a where none is "
                  "measurable), so they say little here; the shorter ones of more than 3 non-space characters "
                  "are checked whole instead (found verbatim inside a train window)."]
    return "\n".join(lines) + "\n"


def memorization_html(summary: dict) -> str:
    """report.html's memorization section: the table and each model's worst copies."""
    import html

    text = memorization_markdown(summary)
    if not text:
        return ""
    parts = ["<h2>Memorization</h2>", f"<pre>{html.escape(text.strip())}</pre>"]
    for model, s in summary["memorization"]["models"].items():
        parts.append(f"<h3>Most copied: {html.escape(model)}</h3>")
        parts += [f"<p>{w['copied_chars']} chars ({100 * w['copied_share']:.0f}%)"
                  f"{', verified' if w['verified'] else ''}{', repetitive' if w['repetitive'] else ''}</p>"
                  f"<pre>{html.escape(w['prediction'])}</pre>" for w in s.get("worst", [])] or ["<p>none</p>"]
    return "\n".join(parts)
