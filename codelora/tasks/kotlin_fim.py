"""mceval-kotlin-fim: fill in one line of McEval's Kotlin reference solutions, judged by execution.

The HumanEval-infilling (Bavarian et al. 2022, single-line) and SAFIM idea, in Kotlin: from every
McEval problem with a reference solution (the file `mceval-kotlin` reads, --mceval-data), each
line of the body that holds code (a letter or digit: not a lone brace) becomes one example. The
prefix is the problem's prompt (doc comment + signature) and the body up to that line, the middle
the whole line (its indentation included, its newline not), the suffix the rest of the body.
Generation stops at the end of the line.

Prompts and text scores are every infilling task's (codelora.tasks.infill: PSM for a model with
FIM tokens, the prefix alone for one without; ES/EM/BLEU, chrF, WER, token IoU, cosine). With
--allow-code-execution, prefix + prediction + suffix + test runs as mceval-kotlin's programs do
(codelora.tasks.kotlin: batched kotlinc, one sandboxed JVM per program): pass@1 says whether the
line is right in effect, which ES cannot (`i += 1` for `i++`). An example is judgeable when the
reference solution passes; every line of a problem shares that one program, run once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from codelora.fim import line_spans
from codelora.stops import StopRule, stop_at_line_end
from codelora.tasks import Example, TaskOptions
from codelora.tasks.infill import INFILL_METRICS, PROMPT_NOTE, InfillPrompts
from codelora.tasks.kotlin import KotlinTask

_CODE = re.compile(r"[A-Za-z0-9]")
MAX_NEW_TOKENS = 64  # one line; McEval's longest reference line is ~110 characters


def masked_lines(prompt: str, solution: str) -> list[tuple[int, str, str, str]]:
    """(line number in the body, prefix, middle, suffix) for every line of `solution` that holds
    code; prefix + middle + suffix == prompt + solution."""
    out = []
    for a, b in line_spans(solution):
        if _CODE.search(solution[a:b]):
            out.append((solution.count("\n", 0, a) + 1, prompt + solution[:a], solution[a:b], solution[b:]))
    return out


class KotlinFimTask(InfillPrompts, KotlinTask):
    text_metrics = INFILL_METRICS
    max_new_tokens = MAX_NEW_TOKENS
    min_new_tokens = 1  # a masked line is never empty
    data_flag = "mceval_data"

    def load(self) -> list[Example]:
        examples = []
        for problem in super().load():  # checks the data and the sandbox first
            for number, prefix, middle, suffix in masked_lines(problem.prompt, problem.reference):
                meta = {**problem.meta, "prefix": prefix, "suffix": suffix, "shape": "line",
                        "source_problem": problem.id, "line": number}
                examples.append(Example(f"{problem.id}:L{number}", prefix, middle, meta))
        return examples

    def stop_rule(self, example: Example) -> StopRule:
        return stop_at_line_end

    def completed(self, example: Example, completion: str) -> str:
        return completion + example.meta["suffix"]

    def text_scores(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        return self.infill_scores(examples, predictions)

    def describe(self) -> dict:
        return {**super().describe(), "shapes": ["line"], "prompt": PROMPT_NOTE,
                "middle": "each body line of McEval's reference solution that holds code, one example per line"}

    judge_rule = "lines of problems whose reference solution passes"


def make_task(name: str, options: TaskOptions) -> KotlinFimTask:
    return KotlinFimTask(name, options)
