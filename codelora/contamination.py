"""Benchmark contamination: training files that contain a long run of a benchmark task's text.

A model finetuned on a file that holds a benchmark's prompt, solution or tests can score on that
benchmark by recall. Before training, every kept file is checked against the benchmark data in
use (HumanEval-Kotlin, McEval, CodeXGLUE JSON Lines; given explicitly with
`--contamination-data`) and, unless told otherwise, a file that shares an n-gram of
`CONTAMINATION_NGRAM` word tokens with any task is dropped.

Why n-grams of words: StarCoder's decontamination (Li et al. 2023, "StarCoder: may the source
be with you!", §4.2/§5: files holding HumanEval/MBPP docstrings or solutions, APPS docstrings,
GSM8K questions or DS-1000 prompts were removed) matches benchmark text verbatim; GPT-3 (Brown
et al. 2020, appendix C) flags 13-gram overlaps. Matching runs of alphanumeric tokens, with
punctuation and layout ignored, catches a copy that was re-indented or re-wrapped as well; 20
tokens (about two lines of code, a sentence of a docstring) is long enough that generic code such
as `for (i in 0 until n)` or a `fun main()` header never reaches it.

All n-grams of the benchmark go into one Aho–Corasick automaton (pyahocorasick) over the files'
token strings, so the check is one pass over the corpus.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codelora.utils import UserError, read_jsonl_numbered

log = logging.getLogger(__name__)

CONTAMINATION_NGRAM = 20
_TOKEN = re.compile(r"\w+")
# Fields that name a task rather than hold its text.
_ID_FIELDS = ("task_id", "name", "id", "entry_point", "level", "language")


def token_string(text: str) -> str:
    """The text's word tokens joined by single spaces, with a space at both ends, so that an
    n-gram pattern " a b c " can only match at token boundaries."""
    return " " + " ".join(_TOKEN.findall(text)) + " "


def ngrams(text: str, n: int) -> list[str]:
    """Every run of `n` consecutive word tokens of `text`, as a pattern for token_string()."""
    tokens = _TOKEN.findall(text)
    return [" " + " ".join(tokens[i:i + n]) + " " for i in range(len(tokens) - n + 1)]


@dataclass
class BenchmarkIndex:
    """The n-grams of a set of benchmark tasks, each mapped to the tasks that contain it."""

    n: int
    owners: dict[str, set[str]] = field(default_factory=dict)  # n-gram -> {"file: task id"}
    tasks: int = 0
    automaton: Any = None

    def add(self, label: str, text: str) -> None:
        for gram in ngrams(text, self.n):
            self.owners.setdefault(gram, set()).add(label)

    def build(self) -> BenchmarkIndex:
        import ahocorasick

        self.automaton = ahocorasick.Automaton()
        for gram in self.owners:
            self.automaton.add_word(gram, gram)
        if self.owners:
            self.automaton.make_automaton()
        return self

    def matches(self, text: str) -> list[str]:
        """The benchmark n-grams that occur in `text`, in order of appearance (each once)."""
        if not self.owners:
            return []
        return list(dict.fromkeys(gram for _end, gram in self.automaton.iter(token_string(text))))


def load_benchmarks(paths: Iterable[str], n: int = CONTAMINATION_NGRAM) -> BenchmarkIndex:
    """Index every string field (prompt, solution, tests, docstring, input, gt ...) of every
    record of the given JSON Lines files; a task is labelled `FILE:ID` (its task_id or name, else
    its line number)."""
    index = BenchmarkIndex(n)
    for path in paths:
        source = Path(path).expanduser()
        if not source.is_file():
            raise UserError(f"--contamination-data {path}: no such file")
        for lineno, record in read_jsonl_numbered(source):
            task = next((str(record[k]) for k in _ID_FIELDS[:3] if isinstance(record.get(k), str | int)),
                        f"line {lineno}")
            label = f"{source.name}:{task}"
            index.tasks += 1
            for key, value in record.items():
                if isinstance(value, str) and key not in _ID_FIELDS:
                    index.add(label, value)
    log.info("contamination: %d tasks, %d distinct %d-grams", index.tasks, len(index.owners), n)
    return index.build()


def contaminated_files(index: BenchmarkIndex, files: Iterable[tuple[str, str]],
                       top: int = 10) -> tuple[list[bool], dict[str, Any]]:
    """For each (path, text): whether it shares an n-gram with a benchmark task; and a report
    (files hit, tasks hit per benchmark file, the first examples with the matched text)."""
    flags: list[bool] = []
    tasks_hit: set[str] = set()
    examples: list[dict[str, Any]] = []
    for path, text in files:
        grams = index.matches(text)
        flags.append(bool(grams))
        if not grams:
            continue
        owners = sorted(set().union(*(index.owners[g] for g in grams)))
        tasks_hit.update(owners)
        if len(examples) < top:
            examples.append({"path": path, "tasks": owners[:5], "ngrams": len(grams),
                             "text": grams[0].strip()[:200]})
    per_benchmark: dict[str, int] = {}
    for label in tasks_hit:
        name = label.split(":", 1)[0]
        per_benchmark[name] = per_benchmark.get(name, 0) + 1
    return flags, {"ngram": index.n, "benchmark_tasks": index.tasks, "files_hit": sum(flags),
                   "tasks_hit": dict(sorted(per_benchmark.items())), "examples": examples}
