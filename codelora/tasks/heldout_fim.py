"""heldout-fim: fill in the middle of held-out files (the test split's windows).

From every held-out window (prompt + completion, an exact slice of a file no model trained on) the
task cuts seeded FIM examples of two shapes (codelora.fim): `line` (one whole line: an editor's
completion of an empty line) and `span` (random characters, the shape FIM is trained on). Prompts
(PSM, or the prefix alone for a model without FIM tokens) and scores are every infilling task's
(codelora.tasks.infill). A line middle stops at the line's end; a span middle at EOS (which FIM
training teaches), else at a budget sized from the reference lengths.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from codelora.fim import choose_middle
from codelora.stops import StopRule, stop_at_eos, stop_at_line_end
from codelora.tasks import Example, TaskOptions
from codelora.tasks.heldout import HeldoutTask
from codelora.tasks.infill import INFILL_METRICS, PROMPT_NOTE, InfillPrompts

SHAPES = ("line", "span")
# Span middles are cut back to this length: an infill is an edit, not a file. Its token budget
# allows ~2 characters per token (code BPE averages 3-4); a prefix-only model, which never learned
# to stop inside a file, runs to the budget on every span, so it is kept tight.
MAX_MIDDLE_CHARS = 160
MAX_NEW_TOKENS = 80


class HeldoutFimTask(InfillPrompts, HeldoutTask):
    name = "heldout-fim"
    metrics = INFILL_METRICS

    def load(self) -> list[Example]:
        examples = []
        for window in super().load():
            text = window.prompt + window.reference
            for shape in SHAPES:
                rng = random.Random(f"{self.options.seed}-{window.id}-{shape}")
                cut = choose_middle(text, shape, rng)
                if cut is None:
                    continue
                a, b = cut[0], min(cut[1], cut[0] + MAX_MIDDLE_CHARS)
                if not text[a:b].strip() or not text[:a].strip():
                    continue  # no middle to write, or no prefix a left-to-right model could start from
                meta = {**window.meta, "prefix": text[:a], "suffix": text[b:], "shape": shape}
                examples.append(Example(f"{window.id}-{shape}", text[:a], text[a:b], meta))
        self.max_new_tokens = MAX_NEW_TOKENS
        return examples

    def stop_rule(self, example: Example) -> StopRule:
        return stop_at_line_end if example.meta["shape"] == "line" else stop_at_eos

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        return self.infill_scores(examples, predictions)

    def describe(self) -> dict:
        return {**super().describe(), "shapes": list(SHAPES),
                "prompt": PROMPT_NOTE}


def make_task(name: str, options: TaskOptions) -> HeldoutFimTask:
    return HeldoutFimTask(options)
