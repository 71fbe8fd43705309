"""The seed project's infilling metrics, from maintained libraries where they exist.

Beside CodeXGLUE's ES/EM/BLEU (codelora.metrics), infilling is scored as the seed evaluation did:

- chrF: sacrebleu's `CHRF` (Popović 2015; character 6-grams, beta 2), per example and corpus;
- WER: jiwer's word error rate over whitespace words (edits / reference words);
- token-set IoU: |tokens(pred) ∩ tokens(ref)| / |tokens(pred) ∪ tokens(ref)| over code tokens
  (identifiers, numbers, and each punctuation character): rewards the right names in any order;
- cosine similarity of the evaluated model's own embeddings of prediction and reference, as the
  seed used the model under test: each text is run through the model on its own (no prefix or
  suffix), and its embedding is the mean over its tokens of the last hidden layer
  (`hidden_states[LAST_LAYER]`, for Phi the output of the final LayerNorm). Each model embeds with
  its own weights, so the score says how close the model itself finds its answer to the
  reference; it is not a fixed yardstick shared by base and finetuned (chrF, ES are).

Which package and version computed each number (summary.json) is recorded in
codelora.metric_table, beside each metric's label and interval.

Empty strings have no words or tokens; the rules chosen: two empty strings agree perfectly
(chrF 100, WER 0, IoU 1, cosine 1); an empty side against a non-empty one scores chrF 0,
WER 1 (every reference word missed, or, for an empty reference, every word inserted), IoU 0.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

_CODE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|[^\sA-Za-z0-9_]")
LAST_LAYER = -1  # hidden_states[-1]: the final layer's output (after the final norm in Phi)


def chrf(prediction: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    if not prediction and not reference:
        return 100.0
    return float(CHRF().sentence_score(prediction, [reference]).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    from sacrebleu.metrics import CHRF

    return round(float(CHRF().corpus_score(list(predictions), [list(references)]).score), 2)


def wer(prediction: str, reference: str) -> float:
    import jiwer

    ref_words, pred_words = reference.split(), prediction.split()
    if not ref_words:
        return 0.0 if not pred_words else 1.0
    if not pred_words:
        return 1.0
    return float(jiwer.wer(" ".join(ref_words), " ".join(pred_words)))


def token_iou(prediction: str, reference: str) -> float:
    pred, ref = set(_CODE_TOKEN.findall(prediction)), set(_CODE_TOKEN.findall(reference))
    if not pred and not ref:
        return 1.0
    return len(pred & ref) / len(pred | ref)


def mean_embeddings(model, tokenizer, texts: Sequence[str], batch_size: int = 16):
    """One vector per text: the mean of the model's last hidden layer over the text's tokens
    (an empty text gets a zero vector)."""
    import torch

    from codelora.modeling import takes_logits_to_keep

    vectors = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        if enc["input_ids"].shape[1] == 0:
            vectors.append(torch.zeros(len(chunk), model.config.hidden_size))
            continue
        # positions count from each text's first real token, as in generation (left padding)
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            # logits_to_keep=1: the hidden states are all this needs, the vocabulary projection of
            # every position is a fifth of SmolLM2's forward
            skip = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}
            hidden = model(**enc, position_ids=positions, output_hidden_states=True,
                           **skip).hidden_states[LAST_LAYER].float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        vectors.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu())
    return torch.cat(vectors) if vectors else torch.zeros(0, model.config.hidden_size)


def cosine_similarities(model, tokenizer, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    import torch

    a = mean_embeddings(model, tokenizer, predictions)
    b = mean_embeddings(model, tokenizer, references)
    sims = torch.nn.functional.cosine_similarity(a, b, dim=-1).tolist()
    # Two empty texts are the same text; one empty side has no direction to compare.
    return [1.0 if not p and not r else (0.0 if not p or not r else s)
            for p, r, s in zip(predictions, references, sims)]


def infill_scores(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[dict], dict]:
    """Per-example chrF/WER/IoU and their corpus summaries (chrF at corpus level, the rest means)."""
    rows = [{"chrf": round(chrf(p, r), 2), "wer": round(wer(p, r), 4), "token_iou": round(token_iou(p, r), 4)}
            for p, r in zip(predictions, references)]
    if not rows:
        return rows, {"chrf": None, "wer": None, "token_iou": None}
    return rows, {
        "chrf": corpus_chrf(predictions, references),
        "wer": round(100 * statistics.fmean(r["wer"] for r in rows), 2),
        "token_iou": round(100 * statistics.fmean(r["token_iou"] for r in rows), 2),
    }
