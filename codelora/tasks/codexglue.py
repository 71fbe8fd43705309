"""codexglue: CodeXGLUE Python method generation (microsoft/codexglue_method_generation).

Each record holds `signature`, `body`, `docstring`, `id` in the dataset's token format: literals
normalised (<NUM_LIT:1>, <STR_LIT>, ...; string text with " " written U+0020 and "," U+002C),
comments dropped, layout tokens in the body (<EOL>, <INDENT>, <DEDENT>).

Prompt formats (`--codexglue-prompt`), both reported by name in summary.json and the table:
* natural (default): real Python a code model can continue: the decoded signature (which already
  ends in `:`), the docstring as an indented docstring, a newline. Fairer to a model such as
  Phi-1.5 that never saw the token format. Generation stops where the function really ends:
  Python's own `tokenize` reads the generated body, and the body is over at the first DEDENT
  below its first line's level (so continuation lines at column 0 inside strings, brackets, or
  after a backslash, and column-0 comments, do not end it); the prediction ends with the body's
  last statement. A body whose first line is at column 0 is one statement long.
* tokens: the dataset's own input, `signature<EOL>\"\"\"docstring\"\"\"<EOL>` with the literal
  placeholders left in (Method-Generation/code/run.py builds exactly this string; published
  results such as CodeGPT-adapted's used it). The token format marks no end of the body; a model
  trained on it emits EOS, and a <DEDENT> below the body's level also ends it.

Scoring is what Code-Code/Method-Generation/evaluator/evaluator.py prints for files holding one
answer / prediction per line: the answer line is post_process(body), a prediction line is
post_process(prediction) (layout tokens -> whitespace, placeholders decoded, whitespace
collapsed); ES is fuzz.ratio of the two lines, BLEU is `_bleu` over their whitespace tokens.
Two prediction lines are scored:
* `es`/`bleu`: the prediction normalised the way the references were (codexglue_tokens: the
  dataset's preprocess.py rules: literals emptied unless in the literal list, " "/"," escaped as
  U+0020/U+002C, numbers likewise, comments dropped), so the same code scores 100;
* `es_raw`/`bleu_raw`: the prediction as generated (what submitting it unchanged would give).
The literal list is `--codexglue-literals` (the dataset's literals.json) or, by default, every
literal value the loaded data shows. Both prediction files are written under evaluator/ beside
answers.txt so the official script can be run on them.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Sequence
from pathlib import Path

from codelora.metrics import codexglue_method_post_process, decode_literals
from codelora.stops import StopRule
from codelora.tasks import Example, Task, TaskOptions, text_scores
from codelora.tasks.codexglue_tokens import Literals, python_body_tokens, text_offset
from codelora.utils import UserError, read_jsonl

FIELDS = ("signature", "body", "docstring")
INDENT = "    "
PROMPT_FORMATS = {
    "natural": 'decoded Python, docstring indented under the signature',
    "tokens": 'the dataset\'s token format, signature<EOL>"""docstring"""<EOL>',
}


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
    """The natural prompt."""
    sig = decode_literals(signature).strip()
    doc = docstring.strip().replace('"""', r"\"\"\"")
    if doc.endswith("\\") or doc.endswith('"'):
        doc += " "  # a trailing backslash or quote would break the closing triple quote
    return f'{sig}\n{INDENT}"""{doc}"""\n'


def build_token_prompt(signature: str, docstring: str) -> str:
    """The dataset's own input, as Method-Generation/code/run.py concatenates it."""
    return signature + '<EOL>"""' + docstring + '"""<EOL>'


# ---------------------------------------------------------------------------------- stop rules


def stop_at_function_end(text: str) -> int | None:
    """Natural format: the length of the body in `text` once the function is known to be over
    (None while it may go on). Python's tokenizer decides: the body ends at the first DEDENT
    below the level of its first line, which only a new logical line can produce (never a
    continuation line inside a string or brackets, after a backslash, nor a comment line); the
    cut falls after the body's last statement. A body starting at column 0 is one statement."""
    lines = text.splitlines(keepends=True)
    depth = 0
    started = False
    last_statement_end: int | None = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.INDENT:
                depth += 1
            elif tok.type == tokenize.DEDENT:
                row = tok.start[0]
                if row > len(lines) or not lines[row - 1].strip():
                    break  # tokenize closing the blocks at the end of the text: more may come
                depth -= 1
                if depth <= 0:
                    return last_statement_end
            elif tok.type == tokenize.NEWLINE and tok.string:  # a complete logical line
                last_statement_end = text_offset(lines, tok.start)
                if depth == 0:  # column-0 body: that statement is all there is
                    return last_statement_end
            elif tok.type not in (tokenize.NL, tokenize.COMMENT):
                started = True
    except IndentationError:  # a line dedented to no earlier level: the body cannot go on there
        return last_statement_end if started else None
    except (tokenize.TokenError, SyntaxError):
        return None  # an open string or bracket at the end of the text: not finished
    return None


_LAYOUT_TOKEN = re.compile(r"<(INDENT|DEDENT)>")


def stop_at_body_dedent(text: str) -> int | None:
    """Token format: a <DEDENT> that closes more levels than the body opened ends it."""
    level = 0
    for match in _LAYOUT_TOKEN.finditer(text):
        level += 1 if match.group(1) == "INDENT" else -1
        if level < 0:
            return match.start()
    return None


# ------------------------------------------------------------------------------------- data


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


def decoding_label(options: TaskOptions) -> str:
    if options.do_sample:
        return f"sampling (temperature {options.temperature}, top-p {options.top_p}, seed {options.seed})"
    beams = options.num_beams
    return f"beam search, {beams} beams" if beams > 1 else "greedy"


class CodeXGlueMethodTask(Task):
    name = "codexglue"
    max_new_tokens = 256  # as the official pipeline (max_gen_len 256); methods average 89 tokens
    metrics = ("es", "bleu", "es_raw", "bleu_raw")
    literals = Literals()
    total = 0

    @property
    def prompt_style(self) -> str:
        """--codexglue-prompt: natural or tokens (the same for every model, unlike `prompt_format`)."""
        return self.options.codexglue_prompt

    def load(self) -> list[Example]:
        source = self.options.codexglue_data or "microsoft/codexglue_method_generation"
        records = load_records(source)
        self.total = len(records)
        literal_file = self.options.codexglue_literals
        self.literals = Literals.for_dataset(literal_file, records, ("signature", "body"))
        build = build_token_prompt if self.prompt_style == "tokens" else build_prompt
        return [
            Example(
                str(rec.get("id", n)),
                build(rec["signature"], rec["docstring"]),
                decode_body(rec["body"]),
                {"answer": codexglue_method_post_process(rec["body"].strip())},
            )
            for n, rec in enumerate(records)
        ]

    def stop_rule(self, example: Example) -> StopRule:
        return stop_at_body_dedent if self.prompt_style == "tokens" else stop_at_function_end

    def prediction_line(self, prediction: str) -> str:
        """The prediction as generated, as the evaluator reads it."""
        return codexglue_method_post_process(prediction.strip())

    def normalised_line(self, prediction: str) -> str:
        """The prediction re-tokenised like the references (literals, comments, layout)."""
        code = decode_body(prediction, level=1) if self.prompt_style == "tokens" else prediction
        return codexglue_method_post_process(python_body_tokens(code, self.literals).strip())

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        # post_process is idempotent, so scoring these lines equals the evaluator reading the files
        answers = [e.meta["answer"] for e in examples]
        rows, corpus = text_scores(answers, [self.normalised_line(p) for p in predictions])
        raw_rows, raw = text_scores(answers, [self.prediction_line(p) for p in predictions])
        for row, raw_row in zip(rows, raw_rows):
            del row["em"]  # not part of this evaluator
            row["es_raw"] = raw_row["es"]
        corpus.pop("em")
        corpus.update(es_raw=raw["es"], bleu_raw=raw["bleu"])
        return rows, corpus

    def evaluator_files(self, examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, str]:
        """answers.txt and the two prediction files for Method-Generation/evaluator/evaluator.py."""
        return {
            "answers.txt": "".join(e.meta["answer"] + "\n" for e in examples),
            "predictions.txt": "".join(self.normalised_line(p) + "\n" for p in predictions),
            "predictions_raw.txt": "".join(self.prediction_line(p) + "\n" for p in predictions),
        }

    def describe(self) -> dict:
        sample = self.options.sample
        n = min(sample, self.total) if sample else self.total
        scope = "the full test set" if n == self.total else "a seeded --sample; drop --sample for all of them"
        normalisation = ("predictions re-tokenised like the references (dataset preprocess.py rules: literals "
                         f"emptied unless listed, {self.literals.source}; comments dropped)")
        return {
            "evaluator": "CodeXGLUE Code-Code/Method-Generation/evaluator/evaluator.py (ES, BLEU)",
            "prompt_format": f"{self.prompt_style} ({PROMPT_FORMATS[self.prompt_style]})",
            "decoding": decoding_label(self.options),
            "normalisation": {"es, bleu": normalisation, "es_raw, bleu_raw": "predictions as generated"},
            "literals": self.literals.describe(),
            "test_records": self.total,
            "table_note": (f"n = {n} of {self.total} records ({scope}); prompt: {self.prompt_style}; "
                           f"decoding: {decoding_label(self.options)}; ES/BLEU on predictions normalised like the "
                           "references (literals, comments), ES/BLEU (raw) on predictions as generated"),
        }


def make_task(name: str, options: TaskOptions) -> Task:
    return CodeXGlueMethodTask(options)
