"""codexglue-line: CodeXGLUE line-level code completion ({"input", "gt"} JSON Lines), Python or Java.

`input` is CodeXGLUE's token stream: tokens separated by spaces, `<s>` at the start, literal
placeholders, and for py150 `<EOL>` at line ends (javaCorpus inputs have no line breaks at all:
a whole file is one line). The prompt keeps the token spacing with `<EOL>` turned into real
newlines and literals decoded. `--codexglue-line-language` (default `auto`: python when any
input holds an `<EOL>`, else java) picks the end of a completion and its tokenizer:

* python (py150): the completion is the rest of the line (the README: "until the first <EOL>");
  blank lines before it are skipped. Predictions are re-spaced with Python's `tokenize`, the
  tokenizer py150 was made with, so `x=1e-5` becomes `x = 1e-5`.
* java (javaCorpus): the completion ends after the first `;` or `}`, or before the first `{`
  (the README: "until the first ; or { and } token (including ; or } token, but excluding {
  token)"; the official pipeline stops its beams on those tokens), outside literals and
  comments. Predictions are re-spaced with `javalang`, the tokenizer javaCorpus was made with,
  so `i++) {` becomes `i ++ ) {` and `a&&b||c` becomes `a && b || c`.

Re-spacing leaves a prediction already written in the dataset's spacing unchanged. Two
prediction lines are scored, each as Code-Code/CodeCompletion-line/evaluator/evaluator.py scores
a predictions.txt line (both files are written under evaluator/ with the answers):
pred = post_process(pred.strip()), gt = post_process(gt) (not stripped), ES = fuzz.ratio(pred,
gt), EM = pred.split() == gt.split():
* `es`/`em`: the re-spaced prediction with its literals normalised as the dataset normalised
  the references (a string literal not in the literal list becomes `"<STR_LIT>"`, i.e. `""`;
  numbers likewise; codexglue_tokens), the literal list being `--codexglue-line-literals` (the
  dataset's literals.json) or, by default, every literal value the loaded data shows;
* `es_raw`/`em_raw`: the re-spaced prediction with its literals as generated.
BLEU is not part of that evaluator and is not reported.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence

from codelora.metrics import codexglue_line_post_process, edit_similarity, exact_match
from codelora.stops import StopRule
from codelora.tasks import Example, Task, TaskOptions
from codelora.tasks.codexglue import decoding_label
from codelora.tasks.codexglue_tokens import Literals, java_line_tokens, java_statement_end, python_line_tokens
from codelora.utils import UserError, read_jsonl


def build_prompt(token_stream: str) -> str:
    text = token_stream.replace("<s>", "").replace("</s>", "")
    lines = [codexglue_line_post_process(part).strip() for part in text.split("<EOL>")]
    return "\n".join(lines)


def stop_at_first_line_end(text: str) -> int | None:
    """py150: the prediction ends at the first newline after some content (a natural model may
    open with a blank line where the token format has none)."""
    start = len(text) - len(text.lstrip("\n\r \t"))
    if start == len(text):
        return None
    cut = text.find("\n", start)
    return None if cut < 0 else cut


def detect_language(inputs: Sequence[str]) -> str:
    """py150 inputs hold `<EOL>` tokens; javaCorpus inputs (whole files on one line) never do."""
    return "python" if any("<EOL>" in text for text in inputs) else "java"


def writes_joined_shifts(texts: Sequence[str]) -> bool:
    """True when the data writes `>>`/`>>>` as single tokens (javalang, javaCorpus's tokenizer,
    writes them as separate `>`; a dataset made otherwise is followed)."""
    return any(tok in (">>", ">>>") for text in texts for tok in text.split())


class CodeXGlueLineTask(Task):
    name = "codexglue-line"
    max_new_tokens = 64  # the official pipeline allows 100 tokens of its BPE; lines average 7 tokens
    metrics = ("es", "em", "es_raw", "em_raw")
    literals = Literals()
    language: str = ""
    language_source: str = ""
    join_shifts = False

    def load(self) -> list[Example]:
        if not self.options.codexglue_line_data:
            raise UserError("codexglue-line: give --codexglue-line-data (a JSONL file of {input, gt})")
        source = self.options.codexglue_line_data
        records = []
        for n, rec in enumerate(read_jsonl(source), 1):
            if not isinstance(rec.get("input"), str) or not isinstance(rec.get("gt"), str):
                raise UserError(f"codexglue-line: {source}: record {n} needs string fields 'input' and 'gt'")
            records.append(rec)
        choice = self.options.codexglue_line_language
        self.language = detect_language([r["input"] for r in records]) if choice == "auto" else choice
        if self.language == "java":
            self.join_shifts = writes_joined_shifts([r["input"] + " " + r["gt"] for r in records])
        self.language_source = "detected" if choice == "auto" else "--codexglue-line-language"
        literal_file = self.options.codexglue_line_literals
        self.literals = Literals.for_dataset(literal_file, records, ("input", "gt"))
        return [
            Example(str(rec.get("id", n)), build_prompt(rec["input"]), rec["gt"], {"record": rec})
            for n, rec in enumerate(records)
        ]

    def stop_rule(self, example: Example) -> StopRule:
        return java_statement_end if self.language == "java" else stop_at_first_line_end

    def tokenizer(self, normalise: bool = True) -> Callable[[str], str]:
        """Re-spacing for the language; with `normalise`, literals replaced as the dataset did."""
        literals = self.literals if normalise else None
        if self.language == "java":
            return lambda line: java_line_tokens(line, literals, join_shifts=self.join_shifts)
        return lambda line: python_line_tokens(line, literals)

    def prediction_line(self, prediction: str, tokenize=None) -> str:
        """The predictions.txt line: placeholders decoded (a model trained on the token format
        writes them), then the dataset's token spacing for the language."""
        tokenize = tokenize or self.tokenizer()
        line = tokenize(codexglue_line_post_process(prediction.strip()))
        return line.replace("\r", " ").replace("\n", " ")  # one line in predictions.txt, whatever a literal held

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        variants = {"": self.tokenizer(normalise=True), "_raw": self.tokenizer(normalise=False)}
        rows = []
        for ex, pred in zip(examples, predictions):
            g = codexglue_line_post_process(ex.reference)
            row = {}
            for suffix, tokenize in variants.items():
                p = codexglue_line_post_process(self.prediction_line(pred, tokenize).strip())  # as the evaluator
                row |= {f"es{suffix}": edit_similarity(p, g), f"em{suffix}": int(exact_match(p, g))}
            rows.append(row)
        if not rows:
            return rows, {**{m: None for m in self.metrics}, "n": 0}
        corpus = {m: round((100 if m.startswith("em") else 1) * statistics.fmean(r[m] for r in rows), 2)
                  for m in self.metrics}
        return rows, {**corpus, "n": len(rows)}

    def evaluator_files(self, examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, str]:
        """answers.json / predictions.txt for CodeCompletion-line/evaluator/evaluator.py."""
        normalised, raw = self.tokenizer(normalise=True), self.tokenizer(normalise=False)
        return {
            "answers.json": "".join(json.dumps(e.meta["record"]) + "\n" for e in examples),
            "predictions.txt": "".join(self.prediction_line(p, normalised) + "\n" for p in predictions),
            "predictions_raw.txt": "".join(self.prediction_line(p, raw) + "\n" for p in predictions),
        }

    def describe(self) -> dict:
        info = {
            "evaluator": "CodeXGLUE Code-Code/CodeCompletion-line/evaluator/evaluator.py (ES, EM)",
            "language": f"{self.language} ({self.language_source})" if self.language else None,
            "stop": "first ; or } (kept) or { (dropped)" if self.language == "java" else "end of the line",
            "tokenizer": "javalang (javaCorpus's)" if self.language == "java" else "Python tokenize (py150's)",
            "normalisation": {"es, em": "literals normalised like the references",
                              "es_raw, em_raw": "literals as generated"},
            "literals": self.literals.describe(),
        }
        if self.language == "java":
            info["shift_operators"] = "joined (as the data writes them)" if self.join_shifts else "split, as javalang"
        if self.language:
            info["table_note"] = (f"{info['language']}; a completion ends at the {info['stop']}; predictions "
                                  f"re-spaced with {info['tokenizer']}; decoding: {decoding_label(self.options)}; "
                                  "ES/EM with literals normalised like the references, (raw) as generated")
        return info


def make_task(name: str, options: TaskOptions) -> Task:
    return CodeXGlueLineTask(options)
