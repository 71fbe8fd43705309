"""Kotlin method generation with execution-based pass@k: mceval-kotlin, mbkp, humaneval-kt.

- mceval-kotlin (--mceval-data, McEval's Kotlin.jsonl) and mbkp (--mbkp-data, MBXP/mxeval
  format) share one record shape: `task_id`, `prompt` (doc comment + signature; MBXP's also opens
  the body with `{`), `canonical_solution` (may be null or absent: such records are skipped for
  ES/BLEU and counted), `test`, `entry_point`. ES and BLEU compare the prediction with the
  canonical solution, whitespace-collapsed (as CodeXGLUE's post_process does for methods).
- humaneval-kt (--humaneval-kt-data, MultiPL-E's HumanEval translation): `name`, `prompt` (ends
  with an open body), `tests`, `stop_tokens`; no reference solutions, so pass@k only. Its licence
  allows evaluation, never training: nothing in codelora reads it except this task. It also reads
  MXEval records (as mbkp does): JetBrains' expert-rewritten Kotlin HumanEval
  (`JetBrains/Kotlin_HumanEval`, 161 problems, the set behind Kotlin ML Pack's published pass@1),
  whose reference solutions then decide which problems are judgeable.

Each data flag takes a local JSON Lines file or a Hub dataset id (loaded with `datasets`; its only
split, or its `test` split).

Every program is prompt + completion + "\\n" + test, compiled with kotlinc and run with `java -ea`
(codelora.kotlin: batched compilation, one sandboxed JVM per program). The model's completion
ends where the method's braces close, helper functions after it kept (helper_aware_rule).

Judgeable: a problem whose reference solution passes (mceval, mbkp), or, without a reference,
whose tests compile against a `TODO()` body (a published test that is not valid Kotlin can never
pass). pass@k is reported over all problems and pass@1 also over the judgeable ones, with the
compiler version and the reason each other problem is not judgeable.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from codelora.cards import is_hub_id
from codelora.cleaning import normalize_whitespace
from codelora.kotlin import ExecutionResult, KotlinRunner, kotlin_program, kotlinc_version, require_kotlin
from codelora.metrics import pass_at_k
from codelora.sandbox import require_isolation
from codelora.stops import StopRule, brace_depth, helper_aware_rule
from codelora.tasks import Example, Task, TaskOptions, text_scores
from codelora.utils import UserError, read_jsonl

log = logging.getLogger(__name__)

# The benchmark files that ship with codelora (data/benchmarks/, package data as codelora/benchmarks,
# provenance and licences in its README), read when their data flag is not given. MBXP is not shipped.
SHIPPED_DATA_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
SHIPPED_DATA = {"mceval_data": "mceval_kotlin.jsonl", "humaneval_kt_data": "humaneval_kt.jsonl"}


def shipped_data(flag: str) -> Path | None:
    """The shipped copy of a data flag's file, or None where codelora ships none."""
    return SHIPPED_DATA_DIR / SHIPPED_DATA[flag] if flag in SHIPPED_DATA else None

PASS_KS = (1, 2, 5, 10, 20, 50, 100)


def pass_metrics(n_samples: int) -> tuple[str, ...]:
    """pass@k for every k in PASS_KS that n samples per problem can estimate (k <= n)."""
    return tuple(f"pass@{k}" for k in PASS_KS if k <= max(1, n_samples))


def stub_completion(prompt: str) -> str:
    """A body that compiles against any signature (`TODO()` has type Nothing) and closes the
    braces the prompt left open: compiling it checks the prompt and tests alone."""
    depth = brace_depth(prompt)
    return "    TODO()\n" + "}\n" * depth if depth > 0 else " {\n    TODO()\n}\n"


class KotlinTask(Task):
    max_new_tokens = 384
    data_flag = "mceval_data"
    text_metrics: tuple[str, ...] = ("es", "em", "bleu")

    def __init__(self, name: str, options: TaskOptions):
        super().__init__(options)
        self.name = name
        self.n_samples = max(1, options.n_samples or 1)
        # "compiles": the share of programs kotlinc accepts, a graded signal where pass@1 is 0 for
        # base and finetune alike (a small model), and where a finetune that broke the base shows first.
        compiles = ("compiles",) if options.allow_code_execution else ()
        self.metrics = (*self.text_metrics, *pass_metrics(self.n_samples), *compiles)
        self.execution: dict[str, ExecutionResult] = {}  # problem id -> its reference's (or stub's) result
        self.judged: dict = {}  # what score() found, for describe()
        self.results: dict[str, ExecutionResult] = {}  # program text -> its result, this run

    # -- data

    def records(self) -> tuple[str, list[dict]]:
        """(where from, records): the data flag's JSON Lines file, or the Hub dataset it names."""
        given = getattr(self.options, self.data_flag)
        flag = "--" + self.data_flag.replace("_", "-")
        if given:
            path = Path(given)
            if path.is_file():
                return given, list(read_jsonl(path))
            if not is_hub_id(given) or given.endswith((".jsonl", ".json")):
                raise UserError(f"{self.name}: data file not found: {path} ({flag})")
            return given, hub_records(given, f"{self.name} ({flag})")
        path = shipped_data(self.data_flag)
        if path is None:
            raise UserError(f"{self.name}: give the data file with {flag} (codelora ships none for this task)")
        if not path.is_file():  # an install that left the package data out
            raise UserError(f"{self.name}: the shipped data file {path} is missing from this install; "
                            f"reinstall codelora, or give a copy with {flag} (source and licence: "
                            "data/benchmarks/README.md of the codelora repository)")
        return str(path), list(read_jsonl(path))

    def load(self) -> list[Example]:
        if self.options.allow_code_execution:  # refuse now, before any model generates, not at scoring
            require_isolation(self.options.unsafe_no_sandbox)
        source, records = self.records()
        examples = [self.example(rec, n, source) for n, rec in enumerate(records, 1)]
        skipped = sum(not e.reference for e in examples)
        if skipped:
            log.info("%s: %d of %d records have no reference solution: skipped for ES/BLEU", self.name,
                     skipped, len(examples))
        return examples

    def example(self, rec: dict, n: int, source: str) -> Example:
        missing = [f for f in ("prompt", "test") if not isinstance(rec.get(f), str)]
        if missing:
            raise UserError(f"{self.name}: {source}: record {n} lacks field(s) {', '.join(missing)}")
        reference = rec.get("canonical_solution")
        if reference is not None and not isinstance(reference, str):
            raise UserError(f"{self.name}: {source}: record {n}: canonical_solution is not a string")
        meta = {"test": rec["test"], "entry_point": rec.get("entry_point", "")}
        return Example(str(rec.get("task_id", n - 1)), rec["prompt"], reference or "", meta)

    def stop_rule(self, example: Example) -> StopRule:
        return helper_aware_rule(brace_depth(example.prompt))

    # -- execution

    def runner(self) -> KotlinRunner:
        return KotlinRunner(require_kotlin(self.options.kotlinc), self.options.exec_timeout,
                            unsafe_no_sandbox=self.options.unsafe_no_sandbox)

    def completed(self, example: Example, completion: str) -> str:
        """What follows the prompt in the program: the completion (an infilling task adds the
        code after the hole)."""
        return completion

    def execute(self, examples: Sequence[Example], completions: Sequence[str]) -> list[ExecutionResult]:
        """Results of prompt + completion + test; each distinct program is compiled and run once
        per task (samples often repeat, and `prepare` runs everything in one batch up front)."""
        programs = [kotlin_program(e.prompt, self.completed(e, c), e.meta["test"])
                    for e, c in zip(examples, completions)]
        todo = list(dict.fromkeys(p for p in programs if p not in self.results))
        if todo:
            self.results.update(zip(todo, self.runner().execute(todo)))
        return [self.results[p] for p in programs]

    def runner_key(self) -> dict:
        """What the verdicts depend on besides the programs: the compiler and how it runs them."""
        kotlinc = require_kotlin(self.options.kotlinc)
        return {"kotlinc": kotlinc, "kotlinc_version": kotlinc_version(kotlinc),
                "exec_timeout": self.options.exec_timeout, "sandbox": not self.options.unsafe_no_sandbox}

    def cached_state(self) -> dict:
        """The reference (or stub) verdicts, with the compiler and settings that gave them: the
        judgeability checks need not run again while those stay the same."""
        if not self.execution:
            return {}
        return {"runner": self.runner_key(),
                "reference_execution": {p: dataclasses.asdict(r) for p, r in self.execution.items()}}

    def restore_state(self, state: dict) -> None:
        if not self.options.allow_code_execution or "reference_execution" not in state:
            return
        if state.get("runner") != self.runner_key():  # another kotlinc, timeout or sandbox setting
            log.info("%s: the cached reference verdicts came from another compiler or setting; "
                     "judging them again", self.name)
            return
        self.execution = {p: ExecutionResult(**r) for p, r in state["reference_execution"].items()}

    def prepare(self, examples: Sequence[Example], predictions: dict[str, Sequence[str]]) -> None:
        """Execute every model's predictions and the judgeability checks in one batch, before
        `score` asks for them model by model (one kotlinc call instead of one per model)."""
        if not self.options.allow_code_execution:
            return
        problems = {problem_id(e): e for e in examples}
        pairs = [(e, c) for preds in predictions.values() for e, c in zip(examples, preds)]
        pairs += [(e, e.reference or stub_completion(e.prompt)) for p, e in problems.items() if p not in self.execution]
        self.execute([e for e, _ in pairs], [c for _, c in pairs])

    def judgeability(self, examples: Sequence[Example]) -> dict[str, tuple[bool, str]]:
        """{problem: (judgeable, why not)}: its reference passes, or without one, its tests compile
        against a stub body. Executed once per problem (the benchmark caches `self.execution`)."""
        problems = {problem_id(e): e for e in examples}
        todo = [(p, e) for p, e in problems.items() if p not in self.execution]
        if todo:
            log.info("%s: checking which of %d problems the compiler can judge", self.name, len(todo))
            refs = [(e.reference or stub_completion(e.prompt)) for _, e in todo]
            for (p, _), res in zip(todo, self.execute([e for _, e in todo], refs)):
                self.execution[p] = res
        verdicts = {}
        for p, e in problems.items():
            res = self.execution[p]
            if e.reference:
                ok, why = res.passed, f"reference solution: {res.status}: {res.detail}"
            else:  # the stub throws NotImplementedError when run: compiling is what it checks
                ok, why = res.status in ("passed", "failed"), f"tests do not compile against a stub body: {res.detail}"
            verdicts[p] = (ok, "" if ok else why.strip()[:300])
        return verdicts

    # -- scores

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        rows, corpus = self.text_scores(examples, predictions)
        if not self.options.allow_code_execution:
            for m in pass_metrics(self.n_samples):
                corpus[m] = None
            corpus["pass@1_note"] = "not run: pass --allow-code-execution to execute generated code (sandboxed)"
            return rows, corpus
        kotlinc = require_kotlin(self.options.kotlinc)
        results = self.execute(examples, predictions)
        verdicts = self.judgeability(examples)
        for row, ex, res in zip(rows, examples, results):
            row.update({"pass": int(res.passed), "compiles": int(res.status != "compile_error"),
                        "exec_status": res.status, "exec_detail": res.detail[:500],
                        "judgeable": int(verdicts[problem_id(ex)][0]), "problem": problem_id(ex)})
        corpus.update(self.pass_scores(rows, verdicts))
        corpus["compiles"] = round(100 * sum(row["compiles"] for row in rows) / len(rows), 2) if rows else None
        corpus["kotlinc"] = kotlinc_version(kotlinc)
        self.judged = {"kotlinc": corpus["kotlinc"], "judgeable": corpus["judgeable"],
                       "not_judgeable": {p: why for p, (ok, why) in sorted(verdicts.items()) if not ok}}
        return rows, corpus

    def text_scores(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        """ES/EM/BLEU over the examples that have a reference; the rest get empty rows, counted."""
        keep = [i for i, e in enumerate(examples) if e.reference]
        scored, corpus = text_scores([normalize_whitespace(examples[i].reference) for i in keep],
                                     [normalize_whitespace(predictions[i]) for i in keep])
        rows: list[dict] = [{} for _ in examples]
        for i, row in zip(keep, scored):
            rows[i] = row
        corpus["n"] = len(examples)
        corpus["no_reference"] = len(examples) - len(keep)
        return rows, corpus

    def pass_scores(self, rows: Sequence[dict], verdicts: dict[str, tuple[bool, str]]) -> dict:
        """pass@k averaged over problems (Chen et al. 2021's unbiased estimator with the n samples
        of each problem), and pass@1 over the judgeable problems."""
        passes: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            passes[row["problem"]].append(row["pass"])
        out: dict = {}
        for metric in pass_metrics(self.n_samples):
            k = int(metric.split("@")[1])
            values = [pass_at_k(len(v), sum(v), k) for v in passes.values() if len(v) >= k]
            out[metric] = round(100 * sum(values) / len(values), 2) if values else None
        judge = [p for p in passes if verdicts[p][0]]
        out["pass@1_judgeable"] = (round(100 * sum(pass_at_k(len(passes[p]), sum(passes[p]), 1) for p in judge)
                                         / len(judge), 2) if judge else None)
        out["judgeable"] = f"{len(judge)}/{len(passes)}"
        return out

    def describe(self) -> dict:
        if not self.options.allow_code_execution:
            return {"execution": "off"}
        how = "WITHOUT isolation (--unsafe-no-sandbox)" if self.options.unsafe_no_sandbox else "isolated by bubblewrap"
        info = {"execution": f"kotlinc (batched) + java -ea per program in codelora.sandbox, {how}", **self.judged}
        if self.judged:
            why = "; ".join(f"{p}: {r.splitlines()[0] if r else ''}" for p, r in self.judged["not_judgeable"].items())
            info["table_note"] = (f"kotlinc {self.judged['kotlinc']}; judgeable {self.judged['judgeable']} "
                                  f"({self.judge_rule})" + (f"; not judgeable: {why}" if why else ""))
        return info

    judge_rule = "problems whose reference solution passes; without one, whose tests compile"


class HumanEvalKotlin(KotlinTask):
    """HumanEval in Kotlin: MultiPL-E's translation (no references, so pass@k only) or an MXEval
    one such as JetBrains/Kotlin_HumanEval (references: they decide judgeability)."""

    data_flag = "humaneval_kt_data"
    text_metrics = ()
    judge_rule = "problems whose published tests compile against a stub body"

    def example(self, rec: dict, n: int, source: str) -> Example:
        if "tests" not in rec and "test" in rec:  # MXEval fields, as mbkp reads them
            self.judge_rule = KotlinTask.judge_rule
            return super().example(rec, n, source)
        missing = [f for f in ("name", "prompt", "tests") if not isinstance(rec.get(f), str)]
        if missing:
            raise UserError(f"{self.name}: {source}: record {n} lacks field(s) {', '.join(missing)}")
        return Example(rec["name"], rec["prompt"], "", {"test": rec["tests"], "stop_tokens": rec.get("stop_tokens")})


def hub_records(repo_id: str, what: str) -> list[dict]:
    """The records of a Hub dataset: its only split, or its `test` split."""
    from datasets import load_dataset

    try:
        splits = load_dataset(repo_id)
    except Exception as err:  # noqa: BLE001 - offline, no such repo, unreadable files: the user's input
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{what}: cannot load the Hub dataset {repo_id} ({first})") from None
    names = list(splits)
    split = names[0] if len(names) == 1 else "test" if "test" in names else None
    if split is None:
        raise UserError(f"{what}: Hub dataset {repo_id} has splits {', '.join(names)}; expected one, or a test split")
    log.info("%s: %d records from the Hub dataset %s (split %s)", what, len(splits[split]), repo_id, split)
    return list(splits[split])


def problem_id(example: Example) -> str:
    """The problem an example (one of --n-samples samples) belongs to."""
    return example.meta.get("problem", example.id)


def make_task(name: str, options: TaskOptions) -> Task:
    if name == "humaneval-kt":
        return HumanEvalKotlin(name, options)
    task = KotlinTask(name, options)
    task.data_flag = "mbkp_data" if name == "mbkp" else "mceval_data"
    return task
