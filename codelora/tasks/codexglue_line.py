"""codexglue-line: CodeXGLUE line-level code completion ({"input", "gt"} JSON Lines).

`input` is CodeXGLUE's token stream: tokens separated by spaces, `<s>` at the start, `<EOL>` for
line ends, literal placeholders. The prompt keeps the token spacing (the model continues in the
same style) with `<EOL>` turned into real newlines and literals decoded; the prediction is the
rest of the line. Predictions written without spaces between tokens are re-spaced with a small
lexer, so `pred.split() == gt.split()` compares tokens as the evaluator intends.

Scores mirror Code-Code/CodeCompletion-line/evaluator/evaluator.py: pred = post_process(pred.strip()),
gt = post_process(gt) (not stripped), ES = fuzz.ratio(pred, gt), EM = pred.split() == gt.split().
BLEU is not part of that evaluator and is not reported.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

from codelora.generation import StopRule, stop_at_line_end
from codelora.metrics import codexglue_line_post_process, edit_similarity, exact_match
from codelora.tasks import Example, Task
from codelora.utils import UserError, read_jsonl

_TOKEN = re.compile(
    r"""[rbuRBUfF]{0,2}(?:'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")   # string literals, whole
    | \d[\w.]*                                                  # numbers
    | \w+                                                       # identifiers, keywords
    | \*\*=|//=|>>=|<<=|->|==|!=|<=|>=|\*\*|//|<<|>>|[-+*/%&|^@]=|:=|\.\.\.   # operators
    | \S                                                        # anything else, one char
    """,
    re.X,
)


def space_tokens(code: str) -> str:
    """`x=f(a,'b c')` -> `x = f ( a , 'b c' )`: CodeXGLUE's token spacing."""
    return " ".join(_TOKEN.findall(code))


def build_prompt(token_stream: str) -> str:
    text = token_stream.replace("<s>", "").replace("</s>", "")
    lines = [codexglue_line_post_process(part).strip() for part in text.split("<EOL>")]
    return "\n".join(lines)


class CodeXGlueLineTask(Task):
    name = "codexglue-line"
    max_new_tokens = 64
    metrics = ("es", "em")

    def load(self) -> list[Example]:
        if not self.cfg.codexglue_line_data:
            raise UserError("codexglue-line: give --codexglue-line-data (a JSONL file of {input, gt})")
        examples = []
        source = self.cfg.codexglue_line_data
        for n, rec in enumerate(read_jsonl(source), 1):
            if not isinstance(rec.get("input"), str) or not isinstance(rec.get("gt"), str):
                raise UserError(f"codexglue-line: {source}: record {n} needs string fields 'input' and 'gt'")
            examples.append(Example(str(rec.get("id", n - 1)), build_prompt(rec["input"]), rec["gt"]))
        return examples

    def stop_rule(self, example: Example) -> StopRule:
        return stop_at_line_end

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        rows = []
        for ex, pred in zip(examples, predictions):
            submitted = space_tokens(codexglue_line_post_process(pred.strip()))  # the predictions.txt line
            p = codexglue_line_post_process(submitted.strip())  # ... and what the evaluator does with it
            g = codexglue_line_post_process(ex.reference)
            rows.append({"es": edit_similarity(p, g), "em": int(exact_match(p, g))})
        if not rows:
            return rows, {"es": None, "em": None, "n": 0}
        return rows, {
            "es": round(statistics.fmean(r["es"] for r in rows), 2),
            "em": round(100 * statistics.fmean(r["em"] for r in rows), 2),
            "n": len(rows),
        }

    def describe(self) -> dict:
        return {"evaluator": "CodeXGLUE Code-Code/CodeCompletion-line/evaluator/evaluator.py (ES, EM)"}


def make_task(name: str, cfg) -> Task:
    return CodeXGlueLineTask(cfg)
