"""The metrics tasks report, one entry each: the single place a metric is named and described.

A task lists metric names (`Task.metrics`) and puts their values in its scores; this table says,
for each name, what the report calls it, whether its Δ between models gets a paired-bootstrap
interval (metrics that are means of per-example scores; corpus statistics such as BLEU and chrF
do not), and what computed it (summary.json's `metric_implementations`). The benchmark's
intervals, summary.json, the report's labels and its interval note all read `METRICS`, so a new
metric is one entry here (plus the code that computes it).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass

from codelora.metrics import ES_BACKEND
from codelora.similarity import LAST_LAYER


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class Metric:
    name: str  # the key in a task's scores, `Task.metrics` and summary.json
    label: str  # the report's name for it (table rows, chart ticks, the interval note)
    note: str = ""  # said after the label in the table and chart: "WER (lower is better)"
    mean_of: str | None = None  # the per-example score it is the mean of (x scale): its Δ gets an interval
    scale: float = 1.0  # per-example score -> the reported 0..100 (or nats) scale
    implementation: str | None = None  # what computed it, for summary.json; None: not recorded
    implemented_as: str = ""  # the key of `implementation` in summary.json (default: name)

    @property
    def heading(self) -> str:
        return f"{self.label} ({self.note})" if self.note else self.label


PASS_AT_K = "pass@k"  # pass@1, pass@2, ...: one family, one implementation

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("es", "ES", mean_of="es", implementation=ES_BACKEND),
    Metric("em", "EM", mean_of="em", scale=100.0,
           implementation="codelora.metrics.exact_match: equal whitespace-token lists (CodeXGLUE line "
                          "evaluator)"),
    Metric(PASS_AT_K, PASS_AT_K, implemented_as=PASS_AT_K,
           implementation="codelora.metrics.pass_at_k: Chen et al. 2021's unbiased estimator over sandboxed "
                          "kotlinc + java -ea verdicts"),
    Metric("pass@1", "pass@1", mean_of="pass", scale=100.0, implemented_as=PASS_AT_K,
           implementation=None),  # recorded once for the family, under pass@k
    Metric("bleu", "BLEU",
           implementation="smoothed corpus BLEU-4 (CodeXGLUE nmt-derived bleu.py, smooth=True), "
                          "whitespace tokens"),
    Metric("es_raw", "ES", note="raw"),
    Metric("em_raw", "EM", note="raw"),
    Metric("bleu_raw", "BLEU", note="raw"),
    Metric("chrf", "chrF",
           implementation=f"sacrebleu {_version('sacrebleu')} CHRF(char_order=6, word_order=0, beta=2)"),
    Metric("wer", "WER", note="lower is better", mean_of="wer", scale=100.0,
           implementation=f"jiwer {_version('jiwer')} wer over whitespace words"),
    Metric("token_iou", "token IoU", mean_of="token_iou", scale=100.0,
           implementation="codelora.similarity.token_iou (regex code tokens)"),
    Metric("cosine", "cosine", note="own embeddings", mean_of="cosine", scale=100.0,
           implementation=(f"torch {_version('torch')} cosine_similarity of the evaluated model's own "
                           f"embeddings: hidden_states[{LAST_LAYER}] (last layer) mean-pooled over the "
                           "text's tokens, each text embedded alone; reported x100 (codelora.similarity)")),
    Metric("loss", "loss", mean_of="loss",
           implementation="codelora.tasks.general_loss.text_losses: mean next-token cross-entropy (nats) per "
                          "file, transformers forward pass"),
    Metric("compiles", "compiles", mean_of="compiles", scale=100.0,
           implementation="share of programs kotlinc compiles (sandboxed), prompt + completion + tests"),
)}


def metric(name: str) -> Metric:
    """The entry for `name`: pass@K for any K is the pass@k family's; a name not in the table is
    shown as itself, with no interval and no implementation."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith("pass@"):
        return dataclasses.replace(METRICS[PASS_AT_K], name=name, label=name)
    return Metric(name, name)


def implementations(names: Iterable[str]) -> dict[str, str]:
    """{metric: what computed it} for the metrics `names`, as summary.json records them: by name,
    sorted, with each family (pass@k) once, after the single metrics."""
    entries = [metric(n) for n in sorted(set(names))]
    out = {m.name: m.implementation for m in entries if m.implementation and not m.implemented_as}
    for key in sorted({m.implemented_as for m in entries if m.implemented_as}):
        out[key] = METRICS[key].implementation
    return out


def interval_labels() -> list[str]:
    """The labels of the metrics whose Δ gets a paired-bootstrap interval, in table order."""
    return [m.label for m in METRICS.values() if m.mean_of]
