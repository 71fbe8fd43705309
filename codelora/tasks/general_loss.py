"""general-loss: did the finetune break what the base knew? The loss of each model on code of the
same language that the finetune never trained on.

A small model's pass@1 on HumanEval-Kotlin or McEval is 0 for base and finetune alike, so it
cannot show damage. The language-model loss can: each file of `--loss-data` (a parse_data.py JSON
Lines file, e.g. the Kotlin standard library when the finetune is on another project) is cut to its
first `--loss-tokens` tokens, and each model's mean next-token negative log-likelihood over them
(nats per token) is that file's score. Lower is better; a finetune that forgot general code
raises it, one that learnt the language's idiom may lower it. The benchmark computes the losses
while each model is loaded (they need the model, not generated text) and reports the paired
bootstrap interval of the difference over the files, as it does for ES.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from codelora.stops import StopRule, stop_at_eos
from codelora.tasks import Example, Task, TaskOptions
from codelora.utils import UserError, read_jsonl_numbered

LOSS_METRIC = "loss"


class GeneralLossTask(Task):
    name = "general-loss"
    metrics = (LOSS_METRIC,)
    generates = False  # scored by the model's loss on the text, not by what it writes
    max_new_tokens = 0

    def load(self) -> list[Example]:
        if not self.options.loss_data:
            raise UserError("general-loss: give the code to measure the loss on with --loss-data "
                            "(a parse_data.py JSON Lines file the finetune never trained on)")
        examples = []
        for lineno, rec in read_jsonl_numbered(self.options.loss_data):
            text, path = rec.get("file_text"), rec.get("path")
            if not isinstance(text, str) or not isinstance(path, str):
                raise UserError(f"general-loss: {self.options.loss_data}:{lineno}: expected the string fields "
                                "file_text and path (the format parse_data.py writes)")
            if text.strip():
                examples.append(Example(path, text, ""))
        if len(examples) > self.options.loss_files:  # a seeded sample, the same for every model
            examples = random.Random(self.options.seed).sample(examples, self.options.loss_files)
        return sorted(examples, key=lambda e: e.id)

    def stop_rule(self, example: Example) -> StopRule:
        return stop_at_eos

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> tuple[list[dict], dict]:
        """Empty rows: the benchmark adds each file's loss from its cache (add_losses)."""
        return [{} for _ in examples], {LOSS_METRIC: None, "n": len(examples)}

    def describe(self) -> dict:
        return {"table_note": f"loss = mean next-token loss (nats/token, lower is better) on the first "
                              f"{self.options.loss_tokens} tokens of each file of {self.options.loss_data}, "
                              "code the finetune never trained on"}


def text_losses(model, tokenizer, texts: Sequence[str], max_tokens: int, batch_size: int) -> list[tuple[float, int]]:
    """(mean next-token NLL in nats, tokens scored) of each text's first `max_tokens` tokens,
    batched with right padding (padding is masked out of the loss)."""
    import torch

    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    out: list[tuple[float, int]] = [(float("nan"), 0)] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = [i for i in order[start:start + batch_size] if len(ids[i]) > 1]
        if not idx:
            continue
        width = max(len(ids[i]) for i in idx)
        batch = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            batch[row, :len(ids[i])] = torch.tensor(ids[i])
            mask[row, :len(ids[i])] = 1
        with torch.inference_mode():
            logits = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:].to(device),
                                                reduction="none")
        target = mask[:, 1:].to(device).float()
        for row, i in enumerate(idx):
            count = int(target[row].sum())
            out[i] = (float((nll[row] * target[row]).sum()) / count, count)
    return out


def make_task(name: str, options: TaskOptions) -> GeneralLossTask:
    return GeneralLossTask(options)
