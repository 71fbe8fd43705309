"""Benchmark reports: markdown table, summary.json, bar chart PNG, self-contained HTML.

All files are written atomically. The HTML embeds the chart as a data: URI and its CSS inline,
so it can be mailed or attached to a model card as one file.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codelora import cards, metric_table
from codelora.utils import atomic_file, write_json

log = logging.getLogger(__name__)

N_SHOWN = 5  # examples per side (gains, losses) in the HTML


def metric_label(info: dict, metric: str) -> str:
    """The table's name for a task's metric: the task's own where it names one apart (heldout's
    "ES (token-spaced)" in the line modes), else the metric table's."""
    return (info.get("metric_labels") or {}).get(metric) or metric_table.metric(metric).heading


def _fmt(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.2f}"
    return "n/a"


def _fmt_delta(value: Any, ci: Any = None) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def short_name(model: str, models: Sequence[str] = ()) -> str:
    """The model's last path component, or as many trailing components as keep it apart from the
    other `models` (three local runs all end in `merged/`)."""
    parts = model.rstrip("/").split("/")
    others = [m.rstrip("/").split("/") for m in models if m != model]
    for k in range(1, len(parts) + 1):
        name = "/".join(parts[-k:])
        if all("/".join(o[-k:]) != name for o in others):
            return name
    return model


def results_table(summary: dict) -> str:
    """One row per task and metric; a column per model and a Δ column per non-baseline model."""
    models = summary["models"]
    base = models[0]
    header = ["task", "n", "metric", *[f"{short_name(m, models)}{' (base)' if m == base else ''}" for m in models]]
    header += [f"Δ {short_name(m, models)} − base [95% CI]" for m in models[1:]]
    rows = []
    for task, info in summary["tasks"].items():
        split = info.get("split")  # heldout: name a split other than test
        label = f"{task} ({split})" if split not in (None, "test") else task
        for metric in info["metrics"]:
            cells = [label, str(info["n"]), metric_label(info, metric)]
            cells += [_fmt(info["models"][m].get(metric)) for m in models]
            cells += [_fmt_delta(info["delta_vs_baseline"].get(m, {}).get(metric),
                                 info.get("delta_ci95", {}).get(m, {}).get(metric)) for m in models[1:]]
            rows.append(cells)
        judge = {m: info["models"][m].get("judgeable") for m in models if info["models"][m].get("judgeable")}
        if judge:
            first = next(iter(judge.values()))
            rows.append([task, "", f"pass@1 over judgeable ({first})",
                         *(_fmt(info["models"][m].get("pass@1_judgeable")) for m in models), *([""] * len(models[1:]))])
    notes = {info["models"][m].get("pass@1_note") for info in summary["tasks"].values() for m in models} - {None}
    formats = {task: ", ".join(f"{short_name(m, models)}: {info['models'][m]['prompt_format']}" for m in models)
               for task, info in summary["tasks"].items()
               if any("prompt_format" in info["models"][m] for m in models)}
    text = cards.markdown_table(header, rows, right=range(3, len(header))) + "\n"
    if len(models) > 1:
        text += (f"\n[95% CI]: paired bootstrap over the examples ({', '.join(metric_table.interval_labels())}); an "
                 "interval that excludes 0 is a difference that resampling the examples does not explain away.\n")
    if notes:
        text += "\n" + "\n".join(f"pass@1: {n}" for n in sorted(notes)) + "\n"
    task_notes = [f"{task}: {info['table_note']}" for task, info in summary["tasks"].items() if info.get("table_note")]
    # how a metric is computed where a task names it apart (heldout's token-spaced ES)
    task_notes += [f"{task} {text}" for task, info in summary["tasks"].items() if info.get("metric_labels")
                   for text in (info.get("metric_definitions") or {}).values()]
    if task_notes:  # how a task's numbers were made (n, prompt, decoding, normalisation)
        text += "\n" + "\n".join(task_notes) + "\n"
    for task, text_formats in formats.items():
        text += f"\n{task} prompts: {text_formats}\n"
    return text


def bar_chart_png(summary: dict) -> bytes:
    """Grouped bars: one group per task/metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = summary["models"]
    groups = [(t, m) for t, info in summary["tasks"].items() for m in info["metrics"]]
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4.0), dpi=100)
    for k, model in enumerate(models):
        values = []
        for task, metric in groups:
            v = summary["tasks"][task]["models"][model].get(metric)
            values.append(v if isinstance(v, (int, float)) else 0.0)
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width, label=short_name(model, models))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ticks = [f"{t}\n{metric_label(summary['tasks'][t], m)}" for t, m in groups]
    ax.set_xticks(range(len(groups)), ticks, fontsize=8)
    ax.set_ylabel("score (0-100)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.set_title("base vs finetuned")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.ex{border:1px solid #ddd;margin:1em 0;padding:.5em}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:.5em}
pre{background:#f6f8fa;padding:.5em;overflow:auto;max-height:24em;white-space:pre-wrap;margin:0}
.gain{color:#1a7f37}.loss{color:#cf222e}h3{margin-bottom:.2em}
"""


def _example_html(row: dict, models: list[str], metric: str, delta: float) -> str:
    cls = "gain" if delta >= 0 else "loss"
    prompt_tail = "\n".join(row["prompt"].splitlines()[-15:])
    cols = [f"<div><b>reference</b><pre>{html.escape(row['reference'])}</pre></div>"]
    for m in models:
        score = row["scores"][m].get(metric)
        cols.append(f"<div><b>{html.escape(short_name(m, models))}</b> ({metric} {_fmt(score)})"
                    f"<pre>{html.escape(row['predictions'][m])}</pre></div>")
    return (f"<div class='ex'><b>{html.escape(row['id'])}</b> <span class='{cls}'>Δ{metric} {delta:+.0f}</span>"
            f"<details><summary>prompt (last lines)</summary><pre>{html.escape(prompt_tail)}</pre></details>"
            f"<div class='cols'>{''.join(cols)}</div></div>")


def _execution_html(task_rows: list[dict], models: list[str]) -> str:
    """Per-problem execution verdicts (passed / failed / compile_error / timeout) of each model,
    with the program's stderr tail; empty for a task that executes nothing."""
    if not any("exec_status" in r["scores"].get(m, {}) for r in task_rows for m in models):
        return ""
    head = "".join(f"<th>{html.escape(short_name(m, models))}</th>" for m in models)
    lines = [f"<details><summary>execution results per example</summary><table><tr><th>example</th>{head}</tr>"]
    for row in task_rows:
        cells = []
        for m in models:
            score = row["scores"].get(m, {})
            status = html.escape(str(score.get("exec_status", "")))
            detail = score.get("exec_detail", "")
            cells.append(f"<td>{status}" + (f"<pre>{html.escape(detail)}</pre>" if detail else "") + "</td>")
        lines.append(f"<tr><td>{html.escape(row['id'])}</td>{''.join(cells)}</tr>")
    return "".join(lines) + "</table></details>"


def html_report(summary: dict, rows: dict[str, list[dict]], table_md: str, png: bytes) -> str:
    models = summary["models"]
    base = models[0]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>codelora benchmark</title>"
             f"<style>{_CSS}</style></head><body><h1>Benchmark: {html.escape(', '.join(models))}</h1>"]
    parts.append("<table><tr>")
    md_lines = [ln for ln in table_md.splitlines() if ln.startswith("|")]
    for i, line in enumerate(md_lines):
        if i == 1:
            continue
        tag = "th" if i == 0 else "td"
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        parts.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
    parts.append("</table>")
    parts.append(f"<p><img alt='bar chart' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>")
    parts.append(f"<p>ES backend: {html.escape(summary.get('es_backend', ''))}</p>")
    for task, task_rows in rows.items():
        parts.append(f"<h2>{html.escape(task)}</h2>")
        parts.append(_execution_html(task_rows, models))
        if len(models) < 2 or not task_rows:
            continue
        target = models[-1]
        metric = "es"
        scored = [(r["scores"][target].get(metric, 0) - r["scores"][base].get(metric, 0), r) for r in task_rows]
        scored.sort(key=lambda x: x[0], reverse=True)
        gains = [x for x in scored[:N_SHOWN] if x[0] > 0]
        losses = [x for x in reversed(scored[-N_SHOWN:]) if x[0] < 0]
        es_name = metric_label(summary["tasks"].get(task, {}), metric)
        parts.append(f"<h3 class='gain'>Best gains ({html.escape(short_name(target, models))} vs base, "
                     f"{html.escape(es_name)})</h3>")
        parts += [_example_html(r, models, metric, d) for d, r in gains] or ["<p>none</p>"]
        parts.append("<h3 class='loss'>Worst losses</h3>")
        parts += [_example_html(r, models, metric, d) for d, r in losses] or ["<p>none</p>"]
    from codelora.memorization import memorization_html

    parts.append(memorization_html(summary))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(summary: dict, rows: dict[str, list[dict]], out: Path) -> str:
    """summary.json, results.md, scores.png, report.html under `out`; returns the table."""
    from codelora.memorization import memorization_markdown

    table = results_table(summary)
    memorized = memorization_markdown(summary)  # its own table, so not in the HTML score table
    write_json(out / "summary.json", summary)
    with atomic_file(out / "results.md") as handle:
        handle.write(table + memorized)
    png = bar_chart_png(summary)
    with atomic_file(out / "scores.png", "wb") as handle:
        handle.write(png)
    with atomic_file(out / "report.html") as handle:
        handle.write(html_report(summary, rows, table, png))
    return table + memorized
