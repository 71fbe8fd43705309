"""heldout-fim: fill in the middle of held-out files (the test split's windows).

From every held-out window (prompt + completion, an exact slice of a file no model trained on) the
task cuts seeded FIM examples of two shapes (codelora.fim): `line` (one whole line: an editor's
completion of an empty line) and `span` (random characters, the shape FIM is trained on). A model
whose tokenizer has FIM sentinels gets a PSM prompt (prefix and suffix); a model without them
(a base such as Phi-1.5) gets the prefix alone and continues left to right: the same examples and
references for both, and the table says which prompt each model got. A line middle stops at the
line's end; a span middle at EOS (which FIM training teaches), else at a budget sized from the
reference lengths.

Scores: CodeXGLUE's ES/EM/BLEU (codelora.metrics) and the seed evaluation's chrF, WER,
token-set IoU and embedding cosine (codelora.similarity; the benchmark computes the cosine with
each evaluated model), on the middle with trailing whitespace dropped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from codelora.fim import choose_middle, detect_fim_tokens, fim_prompt
from codelora.generation import StopRule, stop_at_eos, stop_at_line_end
from codelora.similarity import infill_scores
from codelora.tasks import Example, Task, text_scores
from codelora.tasks.heldout import HeldoutTask

SHAPES = ("line", "span")
# Span middles are cut back to this length: an infill is an edit, not a file. Its token budget
# allows ~2 characters per token (code BPE averages 3-4); a prefix-only model, which never learned
# to stop inside a file, runs to the budget on every span, so it is kept tight.
MAX_MIDDLE_CHARS = 160
MAX_NEW_TOKENS = 80


class HeldoutFimTask(HeldoutTask):
    name = "heldout-fim"
    metrics = ("es", "em", "bleu", "chrf", "wer", "token_iou", "cosine")
    per_model_prompts = True

    def load(self) -> list[Example]:
        examples = []
        for window in super().load():
            text = window.prompt + window.reference
            for shape in SHAPES:
                rng = random.Random(f"{self.cfg.seed}-{window.id}-{shape}")
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

    def prompt_format(self, tokenizer) -> str:
        return "fim-psm" if detect_fim_tokens(tokenizer) else "prefix-only"

    def prompt_for(self, example: Example, tokenizer) -> str:
        tokens = detect_fim_tokens(tokenizer)
        if tokens is None:
            return example.prompt  # the prefix: a left-to-right model sees what precedes the cursor
        return fim_prompt(example.meta["prefix"], example.meta["suffix"], tokens)

    def stop_rule(self, example: Example) -> StopRule:
        return stop_at_line_end if example.meta["shape"] == "line" else stop_at_eos

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        preds, refs = self.compared(examples, predictions)
        rows, corpus = text_scores(refs, preds)
        extra_rows, extra = infill_scores(preds, refs)
        for row, more, ex in zip(rows, extra_rows, examples):
            row.update(more, shape=ex.meta["shape"])
        return rows, {**corpus, **extra}

    def describe(self) -> dict:
        return {**super().describe(), "shapes": list(SHAPES),
                "prompt": "PSM for models with FIM tokens, the prefix alone for models without"}


def make_task(name: str, cfg) -> HeldoutFimTask:
    return HeldoutFimTask(cfg)
