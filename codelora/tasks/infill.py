"""What every fill-in-the-middle task shares: per-model prompts and the infilling scores.

An infilling example keeps its prefix and suffix in `meta` and its prefix as `Example.prompt`. A
model whose tokenizer has FIM sentinels (codelora.fim) gets a PSM prompt, prefix and suffix; a
model without them (a base such as Phi-1.5) gets the prefix alone and continues left to right: the
same examples and references for both, and the table says which prompt each model got.

Scores, on the middle with trailing whitespace dropped: CodeXGLUE's ES/EM/BLEU (codelora.metrics)
and the seed evaluation's chrF, WER and token-set IoU (codelora.similarity); the embedding cosine
is added by the benchmark, which has the model loaded (codelora.benchmarking.embed_missing).
"""

from __future__ import annotations

from collections.abc import Sequence

from codelora.fim import detect_fim_tokens, fim_prompt
from codelora.similarity import infill_scores
from codelora.tasks import Example, text_scores

INFILL_METRICS = ("es", "em", "bleu", "chrf", "wer", "token_iou", "cosine")
PROMPT_NOTE = "PSM for models with FIM tokens, the prefix alone for models without"


class InfillPrompts:
    """Mixin for a Task whose examples carry meta["prefix"], meta["suffix"] and meta["shape"]."""

    per_model_prompts = True

    def prompt_format(self, tokenizer) -> str:
        return "fim-psm" if detect_fim_tokens(tokenizer) else "prefix-only"

    def prompt_for(self, example: Example, tokenizer) -> str:
        tokens = detect_fim_tokens(tokenizer)
        if tokens is None:
            return example.meta["prefix"]  # a left-to-right model sees what precedes the cursor
        return fim_prompt(example.meta["prefix"], example.meta["suffix"], tokens)

    def infill_scores(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        """ES/EM/BLEU, chrF/WER/IoU per example (with the middle's shape) and for the corpus."""
        preds, refs = self.compared(examples, predictions)  # type: ignore[attr-defined]
        rows, corpus = text_scores(refs, preds)
        extra_rows, extra = infill_scores(preds, refs)
        for row, more, ex in zip(rows, extra_rows, examples):
            row.update(more, shape=ex.meta["shape"])
        return rows, {**corpus, **extra}
