"""The export's parity gate: does the GGUF, run by llama.cpp, complete code as well as the merged
model it came from, run by transformers?

Both runtimes decode greedily, one prompt at a time (an editor's request), from the same prompt
token ids, with the task's own stop rule, token budget and minimum length; the predictions are
decoded by the same tokenizer and scored by the task (codelora.tasks: `heldout` left to right,
`heldout-fim` PSM infilling). ES and EM are compared per example: the mean difference (GGUF minus
merged) with its paired-bootstrap 95% interval (codelora.benchmarking), and the export is refused
when the GGUF's mean is lower than the merged model's by more than the bound of its type (BOUNDS).
Both runtimes get the same number of CPU threads; tokens/s counts every generated token (a stop
token included) over the wall time of the whole set, prompt processing included.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codelora.stops import StopRule, stop_after_next_line, stop_at_line_end
from codelora.tasks import Example, Task

log = logging.getLogger(__name__)

# Largest drop (merged minus GGUF, points on 0..100) of mean ES / EM a type may show on a task.
# f16 stores the merged fp32 weights rounded to 11-bit mantissas; llama.cpp also sums in another
# order, so a near-tie between two tokens can flip and a prediction change from there on: a handful
# of examples in a few hundred, not a trend. The quantized bounds add what quantization costs a small
# model plus the noise of a 64-example sample (measured on a SmolLM2-135M finetune: README, "Use it
# in your editor").
BOUNDS: dict[str, dict[str, float]] = {
    "f16": {"es": 1.5, "em": 3.0},
    "q8_0": {"es": 2.5, "em": 5.0},
    "q4_0": {"es": 10.0, "em": 15.0},
}
MAX_CONTEXT = 4096  # llama.cpp context for the gate: prompt + completion fit; more is only memory


@dataclass
class Run:
    """One runtime's predictions on one task."""

    predictions: list[str]
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


@dataclass
class TaskSet:
    task: Task
    examples: list[Example]
    prompts: list[str] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)  # what both runtimes start from


def load_sets(dataset: str, split: str, names: Sequence[str], sample: int | None, seed: int) -> list[TaskSet]:
    """The held-out examples of each task, a seeded sample as the benchmark draws it."""
    from codelora.benchmarking import sample_examples
    from codelora.tasks import TaskOptions, get_task

    options = TaskOptions(dataset=dataset, heldout_split=split, sample=sample, seed=seed)
    sets = []
    for name in names:
        task = get_task(name, options)
        sets.append(TaskSet(task, sample_examples(task.load(), sample, seed)))
    return sets


def encode_prompts(sets: Sequence[TaskSet], model, tokenizer) -> None:
    """Each example's prompt for this tokenizer and its ids, truncated on the left as the
    benchmark's generation truncates them."""
    from codelora.generation import context_limit

    for ts in sets:
        ts.prompts = [ts.task.prompt_for(e, tokenizer) for e in ts.examples]
        limit = context_limit(model, tokenizer, ts.task.max_new_tokens)
        ts.ids = [tokenizer(p, truncation=True, max_length=limit)["input_ids"] for p in ts.prompts]


def run_transformers(model, tokenizer, ts: TaskSet) -> Run:
    """codelora's own greedy generation (benchmarking's path), batch size 1."""
    from codelora.generation import GenerationSettings, GenerationStats, generate

    settings = GenerationSettings(max_new_tokens=ts.task.max_new_tokens,
                                  min_new_tokens=ts.task.min_new_tokens, batch_size=1)
    stats, predictions = GenerationStats(), [""] * len(ts.examples)
    rules = [ts.task.stop_rule(e) for e in ts.examples]
    start = time.perf_counter()
    for idx, preds in generate(model, tokenizer, ts.prompts, settings, rules, stats):
        for i, p in zip(idx, preds):
            predictions[i] = p
    return Run(predictions, stats.new_tokens, time.perf_counter() - start)


def newline_from(rule: StopRule) -> int | None:
    """Where llama.cpp may stop early for a stop rule (the exact cut is the rule's): None = at
    EOS or the budget only, which is always correct, only slower."""
    return {stop_at_line_end: 0, stop_after_next_line: 1}.get(rule)


def run_llama(llm, tokenizer, ts: TaskSet) -> Run:
    """The same greedy decoding in llama.cpp, decoded and cut as transformers' predictions are."""
    eos = tokenizer.eos_token_id
    predictions, new_tokens, seconds = [], 0, 0.0
    for example, ids in zip(ts.examples, ts.ids):
        rule = ts.task.stop_rule(example)
        out = llm.complete(ids, ts.task.max_new_tokens, min_tokens=ts.task.min_new_tokens,
                           stop_ids=[eos] if eos is not None else [], stop_newline_from=newline_from(rule))
        text = tokenizer.decode([t for t in out["tokens"] if t != eos], skip_special_tokens=True)
        cut = rule(text)
        predictions.append(text if cut is None else text[:cut])
        new_tokens += len(out["tokens"])
        seconds += out["seconds"]
    return Run(predictions, new_tokens, seconds)


def tokenizer_agreement(llm, sets: Sequence[TaskSet]) -> tuple[int, int]:
    """(prompts llama.cpp tokenizes exactly as transformers does, prompts compared); prompts the
    gate truncated are compared in full."""
    same = total = 0
    for ts in sets:
        for prompt, ids in zip(ts.prompts, ts.ids):
            total += 1
            same += llm.tokenize(prompt)[-len(ids):] == ids
    return same, total


def compare(ts: TaskSet, merged: Run, gguf: Run) -> dict[str, Any]:
    """ES/EM of both runs, the GGUF's difference with its paired-bootstrap interval."""
    from codelora.benchmarking import paired_bootstrap_ci

    rows_m, _ = ts.task.score(ts.examples, merged.predictions)
    rows_g, _ = ts.task.score(ts.examples, gguf.predictions)
    result: dict[str, Any] = {"task": ts.task.name, "n": len(ts.examples),
                              "identical": sum(a == b for a, b in zip(merged.predictions, gguf.predictions))}
    for key, scale in (("es", 1.0), ("em", 100.0)):
        a = [scale * r[key] for r in rows_m]
        b = [scale * r[key] for r in rows_g]
        ci = paired_bootstrap_ci(a, b)
        result[key] = {"merged": statistics.fmean(a), "gguf": statistics.fmean(b),
                       "delta": statistics.fmean(b) - statistics.fmean(a), "ci95": list(ci) if ci else None}
    result["tokens_per_s"] = {"merged": merged.tokens_per_second, "gguf": gguf.tokens_per_second}
    return result


def failures(row: dict[str, Any], ftype: str) -> list[str]:
    """What in `row` (one type, one task) is past the type's bound."""
    bad = []
    for key, bound in BOUNDS[ftype].items():
        drop = -row[key]["delta"]
        if drop > bound:
            bad.append(f"{ftype} {row['task']}: {key.upper()} {row[key]['gguf']:.1f} vs merged "
                       f"{row[key]['merged']:.1f} (drop {drop:.1f} > bound {bound:g})")
    return bad


@dataclass
class Report:
    rows: list[dict[str, Any]]  # one per (type, task)
    failures: list[str]
    tokenization: dict[str, list[int]]  # type -> [prompts tokenized alike, prompts]

    @property
    def passed(self) -> bool:
        return not self.failures


def check_exports(model_dir: Path, files: Sequence[Any], sets: Sequence[TaskSet], threads: int = 1) -> Report:
    """Score `sets` with the merged model (transformers) and each GGUF in `files` (llama.cpp)."""
    import torch

    from codelora.generation import load_model
    from codelora.llamacpp import LlamaCpp

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the same CPU for both runtimes
    try:
        model, tokenizer = load_model(str(model_dir), dtype="float32")
        encode_prompts(sets, model, tokenizer)
        merged = [run_transformers(model, tokenizer, ts) for ts in sets]
        context = min(MAX_CONTEXT, int(getattr(model.config, "max_position_embeddings", 2048)))
        del model
    finally:
        torch.set_num_threads(previous)
    rows, bad, tokenization = [], [], {}
    for file in files:
        with LlamaCpp(file.path, threads=threads, context=context) as llm:
            tokenization[file.type] = list(tokenizer_agreement(llm, sets))
            for ts, ref in zip(sets, merged):
                scores = compare(ts, ref, run_llama(llm, tokenizer, ts))
                row = {"type": file.type, "size_mb": file.size / 1e6, **scores}
                log.info("parity %s %s: ES %.1f -> %.1f, EM %.1f -> %.1f, %d/%d identical, tok/s %.1f -> %.1f",
                         file.type, row["task"], row["es"]["merged"], row["es"]["gguf"], row["em"]["merged"],
                         row["em"]["gguf"], row["identical"], row["n"], *row["tokens_per_s"].values())
                rows.append(row)
                bad += failures(row, file.type)
    return Report(rows, bad, tokenization)


def _interval(metric: dict[str, Any]) -> str:
    ci = metric["ci95"]
    band = f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else ""
    return f"{metric['delta']:+.1f}{band}"


def table(report: Report) -> str:
    """The parity table (Markdown), the gate's verdict last."""
    lines = ["| type | task | n | ES merged | ES gguf | ΔES [95% CI] | EM merged | EM gguf | ΔEM [95% CI] | "
             "identical | MB | tok/s transformers | tok/s llama.cpp |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        es, em, tps = r["es"], r["em"], r["tokens_per_s"]
        lines.append(f"| {r['type']} | {r['task']} | {r['n']} | {es['merged']:.1f} | {es['gguf']:.1f} "
                     f"| {_interval(es)} "
                     f"| {em['merged']:.1f} | {em['gguf']:.1f} | {_interval(em)} | {r['identical']}/{r['n']} "
                     f"| {r['size_mb']:.1f} | {tps['merged']:.1f} | {tps['gguf']:.1f} |")
    lines.append("")
    for ftype, (same, total) in report.tokenization.items():
        lines.append(f"{ftype}: llama.cpp tokenizes {same}/{total} prompts exactly as transformers does.")
    bounds = "; ".join(f"{t}: ES {b['es']:g}, EM {b['em']:g}" for t, b in BOUNDS.items())
    lines.append(f"Gate: the GGUF's mean may be lower than the merged model's by at most ({bounds}) points.")
    lines.append("PASSED" if report.passed else "FAILED: " + "; ".join(report.failures))
    return "\n".join(lines) + "\n"
