"""codexglue: CodeXGLUE Python method generation (microsoft/codexglue_method_generation).

Each record holds `signature`, `body`, `docstring`, `id` with CodeXGLUE's literal normalisation
(<NUM_LIT:1>, <STR_LIT>, ...) and layout tokens in the body (<EOL>, <INDENT>, <DEDENT>). The
prompt is real Python the model can continue: the decoded signature (which already ends in `:`
— the reference project appended another), the docstring as a docstring, and a newline. The
body is generated until the first line indented less than the body (end of the function).

Scoring is what Code-Code/Method-Generation/evaluator/evaluator.py prints for files holding one
answer / prediction per line: the answer line is post_process(body), the prediction line is
post_process(prediction) (whitespace collapsed, so a multi-line body becomes one line); ES is
fuzz.ratio of the two, BLEU is `_bleu` over whitespace tokens of those lines. The task also
writes those two files so the official evaluator can be run on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codelora.generation import StopRule, stop_at_dedent
from codelora.metrics import codexglue_method_post_process, decode_literals
from codelora.tasks import Example, Task, text_scores
from codelora.utils import UserError, read_jsonl

FIELDS = ("signature", "body", "docstring")
INDENT = "    "


def decode_body(body: str, level: int = 1) -> str:
    """Layout tokens -> real Python: <EOL> ends a line, each leading <INDENT>/<DEDENT> moves the
    indentation one level; literal placeholders are decoded as the evaluator decodes them."""
    lines = []
    for raw in decode_literals(body).split("<EOL>"):
        text = raw.strip()
        while text.startswith(("<INDENT>", "<DEDENT>")):
            level += 1 if text.startswith("<INDENT>") else -1
            text = text[len("<INDENT>") :].lstrip()
        text = text.replace("<INDENT>", " ").replace("<DEDENT>", " ")  # stray ones: as the evaluator
        if text:
            lines.append(INDENT * max(level, 0) + text)
    return "\n".join(lines)


def build_prompt(signature: str, docstring: str) -> str:
    sig = decode_literals(signature).strip()
    doc = docstring.strip().replace('"""', r"\"\"\"")
    if doc.endswith("\\") or doc.endswith('"'):
        doc += " "  # a trailing backslash or quote would break the closing triple quote
    return f'{sig}\n{INDENT}"""{doc}"""\n'


def load_records(source: str) -> list[dict]:
    path = Path(source)
    if path.is_file() or source.endswith((".jsonl", ".json")):
        records = list(read_jsonl(path))
    else:  # a Hub dataset id
        try:
            from datasets import load_dataset

            records = list(load_dataset(source, split="test"))
        except Exception as err:  # noqa: BLE001 - any Hub/offline failure is the user's input here
            raise UserError(f"codexglue: cannot load {source} ({str(err).splitlines()[0]})") from None
    for n, rec in enumerate(records, 1):
        missing = [f for f in FIELDS if not isinstance(rec.get(f), str)]
        if missing:
            raise UserError(f"codexglue: {source}: record {n} lacks field(s) {', '.join(missing)}")
    return records


class CodeXGlueMethodTask(Task):
    name = "codexglue"
    max_new_tokens = 256  # CodeXGLUE methods average 89 tokens; most end well before this

    def load(self) -> list[Example]:
        source = self.cfg.codexglue_data or "microsoft/codexglue_method_generation"
        examples = []
        for n, rec in enumerate(load_records(source)):
            examples.append(
                Example(
                    str(rec.get("id", n)),
                    build_prompt(rec["signature"], rec["docstring"]),
                    decode_body(rec["body"]),
                    {"answer": codexglue_method_post_process(rec["body"].strip())},
                )
            )
        return examples

    def stop_rule(self, example: Example) -> StopRule:
        return stop_at_dedent

    def prediction_line(self, prediction: str) -> str:
        return codexglue_method_post_process(prediction.strip())

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        # post_process is idempotent, so scoring these lines equals the evaluator reading the files
        return text_scores([e.meta["answer"] for e in examples], [self.prediction_line(p) for p in predictions])

    def evaluator_files(self, examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, str]:
        """answers.txt / predictions.txt contents for Method-Generation/evaluator/evaluator.py."""
        return {
            "answers.txt": "".join(e.meta["answer"] + "\n" for e in examples),
            "predictions.txt": "".join(self.prediction_line(p) + "\n" for p in predictions),
        }

    def describe(self) -> dict:
        return {"evaluator": "CodeXGLUE Code-Code/Method-Generation/evaluator/evaluator.py (ES, BLEU)"}


def make_task(name: str, cfg) -> Task:
    return CodeXGlueMethodTask(cfg)
