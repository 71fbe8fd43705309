"""mceval-kotlin / mbkp: Kotlin method generation with execution-based pass@1.

Records (McEval's Kotlin.jsonl and MBKP/MultiPL-E-style files alike) hold `task_id`, `prompt`
(doc comment + signature; MBKP's also opens the body with `{`), `canonical_solution`, `test`,
`entry_point`. The model continues the prompt until the function's braces close. ES and BLEU
compare the prediction with the canonical solution (whitespace-collapsed, as CodeXGLUE's
post_process does for method generation). pass@1: prompt + prediction + test compiled with
kotlinc and run with `java -ea` in the sandbox (opt-in). Because the compiler may be too old
for some problems (Debian's kotlinc 1.3 fails 8 of McEval's 50 even with the reference
solution), the reference solutions are executed too and pass@1 is also reported over the
problems the compiler can judge.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from codelora.generation import StopRule, brace_depth, brace_rule
from codelora.sandbox import ExecutionResult, kotlin_available, kotlin_program, require_isolation, run_kotlin
from codelora.tasks import Example, Task, text_scores
from codelora.utils import UserError, read_jsonl

log = logging.getLogger(__name__)

FIELDS = ("prompt", "canonical_solution", "test")
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "mceval_kotlin.jsonl"


def collapse(code: str) -> str:
    return " ".join(code.split())


class KotlinTask(Task):
    max_new_tokens = 384
    metrics = ("es", "em", "bleu", "pass@1")

    def __init__(self, name: str, cfg):
        super().__init__(cfg)
        self.name = name
        self.execution: dict = {}

    def load(self) -> list[Example]:
        if self.cfg.allow_code_execution:  # refuse now, before any model generates, not at scoring
            require_isolation(self.cfg.unsafe_no_sandbox)
        source = Path(self.cfg.mceval_data) if self.cfg.mceval_data else DEFAULT_DATA
        if not source.is_file():
            raise UserError(f"{self.name}: data file not found: {source} (give --mceval-data)")
        examples = []
        for n, rec in enumerate(read_jsonl(source), 1):
            missing = [f for f in FIELDS if not isinstance(rec.get(f), str)]
            if missing:
                raise UserError(f"{self.name}: {source}: record {n} lacks field(s) {', '.join(missing)}")
            meta = {"test": rec["test"], "entry_point": rec.get("entry_point", "")}
            examples.append(Example(str(rec.get("task_id", n - 1)), rec["prompt"], rec["canonical_solution"], meta))
        return examples

    def stop_rule(self, example: Example) -> StopRule:
        return brace_rule(brace_depth(example.prompt))

    def execute(self, examples: Sequence[Example], completions: Sequence[str]) -> list[ExecutionResult]:
        programs = [kotlin_program(e.prompt, c, e.meta["test"]) for e, c in zip(examples, completions)]
        workers = max(1, min(4, (os.cpu_count() or 2)))  # each kotlinc is a JVM using ~1 core

        def one(program: str) -> ExecutionResult:
            return run_kotlin(program, timeout=self.cfg.exec_timeout, unsafe_no_sandbox=self.cfg.unsafe_no_sandbox)

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, programs))

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        rows, corpus = text_scores([collapse(e.reference) for e in examples], [collapse(p) for p in predictions])
        if not self.cfg.allow_code_execution:
            corpus["pass@1"] = None
            corpus["pass@1_note"] = "not run: pass --allow-code-execution to execute generated code (sandboxed)"
            return rows, corpus
        if not kotlin_available():
            raise UserError(f"{self.name}: --allow-code-execution needs kotlinc and java on PATH (make kotlin)")
        results = self.execute(examples, predictions)
        references = self.reference_results(examples)
        judgeable = [r.passed for r in references]
        for row, res, ok in zip(rows, results, judgeable):
            row.update({"pass": int(res.passed), "exec_status": res.status, "exec_detail": res.detail[:500],
                        "judgeable": int(ok)})
        n = len(rows)
        n_judge = sum(judgeable)
        passed = sum(r["pass"] for r in rows)
        passed_judge = sum(r["pass"] for r, ok in zip(rows, judgeable) if ok)
        corpus.update({
            "pass@1": round(100 * passed / n, 2) if n else None,
            "pass@1_judgeable": round(100 * passed_judge / n_judge, 2) if n_judge else None,
            "judgeable": f"{n_judge}/{n}",
        })
        return rows, corpus

    def reference_results(self, examples: Sequence[Example]) -> list[ExecutionResult]:
        """Execution results of the canonical solutions; cached in memory for the run (the
        benchmark also caches them on disk via `self.execution`)."""
        todo = list({e.id: e for e in examples if e.id not in self.execution}.values())
        if todo:
            log.info("%s: executing %d reference solutions to see which problems the compiler can judge",
                     self.name, len(todo))
            for ex, res in zip(todo, self.execute(todo, [e.reference for e in todo])):
                self.execution[ex.id] = res
        return [self.execution[e.id] for e in examples]

    def describe(self) -> dict:
        if not self.cfg.allow_code_execution:
            return {"execution": "off"}
        how = "WITHOUT isolation (--unsafe-no-sandbox)" if self.cfg.unsafe_no_sandbox else "isolated by bubblewrap"
        return {"execution": f"kotlinc + java -ea in codelora.sandbox, {how}"}


def make_task(name: str, cfg) -> Task:
    return KotlinTask(name, cfg)
