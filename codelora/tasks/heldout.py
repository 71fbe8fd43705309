"""heldout: complete the prompts of our own dataset's test split (files never seen in training).

The dataset is the preprocess stage's DatasetDict (train/validation/test; prompt, completion,
path, repo). A completion is whole lines and the model was trained to emit EOS after it, so
generation stops at EOS only, and the prediction is compared with the completion after
trailing whitespace is dropped (the final newline before EOS is a formatting detail).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from codelora.generation import StopRule, stop_at_eos
from codelora.tasks import Example, Task, text_scores
from codelora.utils import UserError

REQUIRED = ("prompt", "completion")
DEFAULT_MAX_NEW_TOKENS = 128
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

    def load(self) -> list[Example]:
        from datasets import DatasetDict, load_from_disk

        path = Path(self.cfg.dataset)
        if not path.is_dir():
            raise UserError(f"heldout: dataset directory not found: {path} (run preprocess_data.py first)")
        try:
            data = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"heldout: {path} is not a saved dataset ({err})") from None
        if not isinstance(data, DatasetDict) or "test" not in data:
            raise UserError(f"heldout: {path} has no 'test' split")
        test = data["test"]
        missing = [c for c in REQUIRED if c not in test.column_names]
        if missing:
            raise UserError(f"heldout: {path} test split lacks column(s) {', '.join(missing)}")
        if "completion_tokens" in test.column_names:
            self.max_new_tokens = completion_budget([int(n) for n in test["completion_tokens"]])
        examples = []
        for i, row in enumerate(test):
            meta = {k: row[k] for k in ("path", "repo") if k in row}
            examples.append(Example(f"test-{i}", row["prompt"], row["completion"], meta))
        return examples

    def stop_rule(self, example: Example) -> StopRule:
        return stop_at_eos

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        return text_scores([e.reference.rstrip() for e in examples], [p.rstrip() for p in predictions])


def make_task(name: str, cfg) -> Task:
    return HeldoutTask(cfg)
