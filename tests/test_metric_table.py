"""The metric table (codelora.metric_table): one entry names a metric for every reader."""

from __future__ import annotations

from codelora import metric_table
from codelora.benchmarking import compare, metric_implementations
from codelora.metric_table import METRICS, Metric, implementations, metric
from codelora.report import results_table


class _Task:
    def __init__(self, metrics):
        self.metrics = metrics


def _summary(metrics, ci=None):
    models = ["base", "tuned"]
    return {"models": models, "tasks": {"t": {
        "n": 4, "metrics": list(metrics), "models": {m: {k: 1.0 for k in metrics} for m in models},
        "delta_vs_baseline": {"tuned": {k: 0.0 for k in metrics}}, "delta_ci95": {"tuned": ci or {}}}}}


def test_a_new_metric_is_one_entry(monkeypatch):
    """An entry alone gives the new metric its table label, its interval, its place in the interval
    note and its implementation in summary.json."""
    entry = Metric("lev", "Levenshtein", note="chars", mean_of="lev_row", scale=10.0,
                   implementation="python-Levenshtein distance")
    monkeypatch.setitem(METRICS, "lev", entry)
    table = results_table(_summary(["es", "lev"]))
    assert "| Levenshtein (chars) |" in table
    assert "Levenshtein" in table.split("[95% CI]: paired bootstrap over the examples (")[1].split(")")[0]
    assert metric_implementations({"t": _Task(("es", "lev"))})["lev"] == "python-Levenshtein distance"
    rows = [{"scores": {"base": {"lev_row": i}, "tuned": {"lev_row": i + 1}}} for i in range(5)]
    per_model = {"base": {"lev": 1.0}, "tuned": {"lev": 11.0}}
    deltas, intervals = compare(per_model, rows, ["lev"], ["base", "tuned"], seed=0)
    assert deltas["tuned"]["lev"] == 10.0 and intervals["tuned"]["lev"] == [10.0, 10.0]  # scale 10 x each +1


def test_corpus_metrics_get_no_interval():
    """BLEU and chrF are corpus statistics, not means of per-example scores: no bootstrap interval."""
    rows = [{"scores": {"base": {"es": i, "bleu": i}, "tuned": {"es": i + 2, "bleu": i}}} for i in range(5)]
    per_model = {"base": {"es": 2.0, "bleu": 10.0}, "tuned": {"es": 4.0, "bleu": 12.0}}
    deltas, intervals = compare(per_model, rows, ["es", "bleu"], ["base", "tuned"], seed=0)
    assert deltas["tuned"] == {"es": 2.0, "bleu": 2.0}
    assert intervals["tuned"] == {"es": [2.0, 2.0]}
    assert metric("bleu").mean_of is None and metric("chrf").mean_of is None


def test_pass_at_k_is_one_family():
    """pass@K for any K shows as itself; its implementation is recorded once, as pass@k, after the
    single metrics; only pass@1 (a mean of per-problem verdicts) gets an interval."""
    impl = implementations(["pass@1", "pass@5", "es", "compiles"])
    assert list(impl) == ["compiles", "es", "pass@k"]
    assert metric("pass@5").heading == "pass@5" and metric("pass@5").mean_of is None
    assert metric("pass@1").mean_of == "pass"


def test_unknown_names_show_as_themselves():
    assert metric("judge").heading == "judge" and implementations(["judge"]) == {}
    assert metric_table.metric("wer").heading == "WER (lower is better)"
