"""heldout: complete the prompts of our own dataset's test split (files never seen in training).

`--heldout-split validation` scores the validation split instead: choose hyperparameters on it,
and report the test split once, so the reported gain is not the best of several looks at test.

The dataset is the preprocess stage's DatasetDict (train/validation/test; prompt, completion,
path, repo). The model was trained to emit EOS after each completion, so generation stops at
EOS; where the dataset's stats.json says its completions are single lines (`line`,
`next-line` modes), generation also stops at that line's end, for every model alike (a base
model never learned where our completions stop). Completions are never empty, so EOS may not
be the first token: without a separator the prompt ends exactly where training completions
end, and a finetuned model would otherwise sometimes answer with nothing. The prediction is
compared with the completion after trailing whitespace is dropped; single-line completions are
scored as CodeXGLUE's line-level task scores them (both sides re-spaced by the file type's line
tokenizer, EM = equal tokens), so `for(i in 0 until n){` matches `for (i in 0 until n) {`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codelora.contracts import dataset_mode
from codelora.stops import StopRule, stop_after_next_line, stop_at_eos, stop_at_line_end
from codelora.tasks import Example, Task, TaskOptions, text_scores
from codelora.tasks.codexglue_tokens import line_tokenizer_for
from codelora.utils import UserError

REQUIRED = ("prompt", "completion")
DEFAULT_MAX_NEW_TOKENS = 128
ES_TOKEN_SPACED = "ES (token-spaced)"  # the line modes' ES: both sides re-spaced before fuzz.ratio
SLACK_TOKENS = 8  # room for EOS and for a model tokenizer that splits a little finer


def completion_budget(completion_token_counts: list[int]) -> int:
    """max_new_tokens for completions known to be at most max(counts) tokens long.

    Every row keeps generating until the *last* row of its batch stops, so an over-generous
    budget costs the whole batch; the preprocess stage bounds completions (--completion-tokens)
    and records each one's length, which gives a tight, safe budget.
    """
    return max(completion_token_counts, default=DEFAULT_MAX_NEW_TOKENS - SLACK_TOKENS) + SLACK_TOKENS


class HeldoutTask(Task):
    name = "heldout"
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS  # or from the dataset's completion_tokens column
    min_new_tokens = 1  # references are never empty (preprocess drops whitespace-only ones)
    mode: str | None = None  # the preprocess windowing mode, from stats.json

    @property
    def split(self) -> str:
        return self.options.heldout_split

    def load(self) -> list[Example]:
        from datasets import DatasetDict, load_from_disk

        path = Path(self.options.dataset)
        if not path.is_dir():
            raise UserError(f"heldout: dataset directory not found: {path} (run preprocess_data.py first)")
        try:
            data = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"heldout: {path} is not a saved dataset ({err})") from None
        split = self.split
        if not isinstance(data, DatasetDict) or split not in data:
            raise UserError(f"heldout: {path} has no '{split}' split")
        test = data[split]
        missing = [c for c in REQUIRED if c not in test.column_names]
        if missing:
            raise UserError(f"heldout: {path} {split} split lacks column(s) {', '.join(missing)}")
        self.mode = dataset_mode(path) or self.mode
        if "completion_tokens" in test.column_names:
            self.max_new_tokens = completion_budget([int(n) for n in test["completion_tokens"]])
        examples = []
        for i, row in enumerate(test):
            meta = {k: row[k] for k in ("path", "repo") if k in row}
            examples.append(Example(f"{split}-{i}", row["prompt"], row["completion"], meta))
        return examples

    def stop_rule(self, example: Example) -> StopRule:
        return {"line": stop_at_line_end, "next-line": stop_after_next_line}.get(self.mode or "", stop_at_eos)

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        refs, preds = [e.reference.rstrip() for e in examples], [p.rstrip() for p in predictions]
        if self.mode in ("line", "next-line"):  # scored as CodeXGLUE line-level: one token spacing
            spell = [line_tokenizer_for(e.meta.get("path", "")) for e in examples]
            refs = [f(r) for f, r in zip(spell, refs)]
            preds = [f(p) for f, p in zip(spell, preds)]
        return text_scores(refs, preds)

    def describe(self) -> dict:
        info = {"split": self.split}
        if self.mode in ("line", "next-line"):
            info["line_scoring"] = ("as CodeXGLUE line-level: reference and prediction re-spaced by one tokenizer "
                                    "per file type (Kotlin/other: codexglue_tokens.kotlin_line_tokens; .py: Python "
                                    "tokenize; .java: javalang), EM = equal token lists, ES = fuzz.ratio")
            # Named apart from the demo breakdown's "ES (raw text)", which scores the text as generated.
            info["metric_labels"] = {"es": ES_TOKEN_SPACED, "em": "EM (token-spaced)"}
            info["metric_definitions"] = {
                "es": f"{ES_TOKEN_SPACED}: fuzz.ratio of reference and prediction after both are re-spaced "
                      "by the file type's line tokenizer (one space between tokens; the leading line break and "
                      "the indentation dropped)"}
        else:
            info["metric_definitions"] = {
                "es": "ES: fuzz.ratio of reference and prediction as generated, trailing whitespace dropped"}
        return info


def make_task(name: str, options: TaskOptions) -> Task:
    return HeldoutTask(options)
