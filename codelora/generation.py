"""Batched, left-padded, KV-cached generation with per-task stop rules.

What the reference project got wrong and this module fixes: right padding (a decoder-only model
then continues from pad tokens), no stop rule (every example ran to 512 new tokens), and the
prompt kept in the prediction. Here prompts are left-padded, generation stops per row as soon as
the task's stop rule fires (EOS, end of line, end of function), and predictions are decoded from
the new tokens only, without special tokens, cut where the stop rule says.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from codelora.stops import StopRule, stop_at_eos

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    min_new_tokens: int = 0  # EOS is not allowed before this many new tokens
    batch_size: int = 16
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 0.2
    top_p: float = 0.95


# ---------------------------------------------------------------------------------- loading


def resolve_dtype(name: str):
    """`auto`: the project's one dtype policy (`modeling.compute_dtype`: fp32 on CPU, bf16 on a GPU
    that supports it, else fp16)."""
    import torch

    from codelora.modeling import compute_dtype

    return compute_dtype() if name == "auto" else getattr(torch, name)


def load_tokenizer(name: str):
    """`modeling.load_tokenizer`, set up for batched generation: left padding, and a long prompt
    truncated on the left so it keeps its end, next to the completion."""
    from codelora.modeling import load_tokenizer as load_checked

    tokenizer = load_checked(name)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer


def load_model(name: str, dtype: str = "auto"):
    """(model, tokenizer) ready for batched generation, through the one loader every stage uses
    (`modeling.load_base_model`: a Hub id, a directory, a GGUF file or a packaged model's short
    name); the tokenizer is checked first so that a directory without one fails before the weights
    load."""
    import torch

    from codelora.modeling import load_base_model

    tokenizer = load_tokenizer(name)
    model = load_base_model(name, dtype=resolve_dtype(dtype))
    model.config.use_cache = True  # the loader turns it off for training; generation wants it
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    return model, tokenizer


# ------------------------------------------------------------------------------- generation


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS, then any other end token the model's generation config names: a GGUF
    chat model's turn end besides the document end its completions are trained to end with
    (modeling.set_completion_eos)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for token in configured if isinstance(configured, list) else [configured]:
        if token is not None and token not in ids:
            ids.append(token)
    return ids


@dataclass
class GenerationStats:
    """Where generation's compute went, counted in token positions the model processed: prompt
    positions on the first forward (padding included) and one position per row per decoding step
    (a row that already stopped but is still computed, as `generate` does, is padding)."""

    prompt_tokens: int = 0
    prompt_padding: int = 0
    new_tokens: int = 0
    new_padding: int = 0

    @property
    def padding_fraction(self) -> float:
        total = self.prompt_tokens + self.prompt_padding + self.new_tokens + self.new_padding
        return (self.prompt_padding + self.new_padding) / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**self.__dict__, "padding_fraction": round(self.padding_fraction, 4)}


@functools.lru_cache(maxsize=8)
def _token_has(tokenizer, chars: str, vocab: int):
    """Bool tensor over token ids: does the token's text contain one of `chars`? Special tokens
    and ids past the tokenizer (a model's padded vocabulary) count as containing none."""
    import torch

    ids = range(min(vocab, len(tokenizer)))
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    flags = [any(c in t for c in chars) for t in texts] + [False] * (vocab - len(texts))
    return torch.tensor(flags, dtype=torch.bool)


def _might_stop(tokenizer, rules: Sequence[StopRule], rows: Sequence[int], new_tokens, vocab: int) -> list[int]:
    """The rows (indices into `rules`) whose stop rule might fire after `new_tokens` (one token per
    row, a tensor): those whose token contains one of the rule's triggers, and every row whose rule
    declares none."""
    by_trigger: dict[str | None, list[int]] = {}
    for pos, row in enumerate(rows):
        by_trigger.setdefault(getattr(rules[row], "triggers", None), []).append(pos)
    maybe: list[int] = []
    for chars, positions in by_trigger.items():
        if chars is None:
            maybe += positions
        elif chars:
            hit = _token_has(tokenizer, chars, vocab)[new_tokens[positions].cpu()]
            maybe += [p for p, h in zip(positions, hit.tolist()) if h]
    return sorted(maybe)


class _StopOnRule:
    """A StoppingCriteria: ask each row's stop rule, decoding only rows that might stop."""

    def __init__(self, tokenizer, prompt_len: int, rules: Sequence[StopRule], num_beams: int = 1,
                 vocab: int | None = None):
        self.tokenizer, self.prompt_len, self.rules, self.num_beams = tokenizer, prompt_len, rules, num_beams
        self.vocab = vocab or len(tokenizer)
        self.stopped_at: dict[int, int] = {}  # row -> new tokens it had when its rule fired

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.num_beams > 1:  # beams are reordered every step: ask every row about its whole text
            texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
            # beam search expands each prompt into rows in prompt order: num_beams of them, or the
            # 2 x num_beams candidates transformers' beam search checks, so count them per call
            per_prompt = max(1, len(texts) // len(self.rules))
            done = [self.rules[i // per_prompt](t) is not None for i, t in enumerate(texts)]
            return torch.tensor(done, device=input_ids.device)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        rows = [r for r in range(input_ids.shape[0]) if r not in self.stopped_at]  # generate keeps them stopped
        if not rows:
            return done
        maybe = _might_stop(self.tokenizer, self.rules, rows, input_ids[rows, -1], self.vocab)
        if maybe:
            rows = [rows[p] for p in maybe]
            texts = self.tokenizer.batch_decode(input_ids[rows, self.prompt_len :], skip_special_tokens=True)
            for row, text in zip(rows, texts):
                if self.rules[row](text) is not None:
                    done[row] = True
                    self.stopped_at[row] = input_ids.shape[1] - self.prompt_len
        return done


def vocab_size(model, tokenizer) -> int:
    """Token ids the model can emit (Phi-1.5 pads its 50,295-token vocabulary to 51,200)."""
    return max(len(tokenizer), int(getattr(model.config, "vocab_size", 0) or 0))


def context_limit(model, tokenizer, max_new_tokens: int) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    return max(8, int(limit) - max_new_tokens)


def _count_prompt(stats: GenerationStats | None, attention) -> None:
    if stats is not None:
        real = int(attention.sum())
        stats.prompt_tokens += real
        stats.prompt_padding += attention.numel() - real


def generate_batch(
    model, tokenizer, prompts: Sequence[str], settings: GenerationSettings, rule: StopRule | Sequence[StopRule],
    stats: GenerationStats | None = None, compacting: bool = True,
) -> list[str]:
    """Completions (prompt excluded, special tokens dropped, cut by the stop rule) for one batch;
    `rule` is one rule for all prompts or one per prompt; `stats` (when given) adds up the
    positions computed. Greedy decoding takes `_greedy_compacting` unless `compacting` is False
    (then `model.generate` with the token-id stop criterion; bench/generation.py times both)."""
    import torch
    from transformers import StoppingCriteriaList

    enc = tokenizer(
        list(prompts),
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=context_limit(model, tokenizer, settings.max_new_tokens),
    ).to(model.device)
    _count_prompt(stats, enc["attention_mask"])
    prompt_len = enc["input_ids"].shape[1]
    rules = [rule] * len(prompts) if callable(rule) else list(rule)
    if settings.num_beams == 1 and not settings.do_sample and compacting:
        return _greedy_compacting(model, tokenizer, enc, settings.max_new_tokens, rules, settings.min_new_tokens,
                                  stats)
    stops = StoppingCriteriaList()
    criterion = _StopOnRule(tokenizer, prompt_len, rules, settings.num_beams, vocab_size(model, tokenizer))
    if any(r is not stop_at_eos for r in rules):
        stops.append(criterion)
    kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        num_beams=settings.num_beams,
        do_sample=settings.do_sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(model, tokenizer),
        use_cache=True,
        stopping_criteria=stops,
        min_new_tokens=settings.min_new_tokens or None,
    )
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:  # silence "temperature is set but do_sample=False" from a model's generation_config
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        out = model.generate(**enc, **kwargs)
    new = out[:, prompt_len:]
    stop_ids = stop_token_ids(model, tokenizer)
    if stats is not None and settings.num_beams == 1:
        _count_new(stats, new, stop_ids, criterion.stopped_at)
    # Cut at the first stop id: an end token that is not a special token would survive decoding.
    rows = [next((row[:i] for i, t in enumerate(row) if t in stop_ids), row) for row in new.tolist()]
    return _cut(tokenizer.batch_decode(rows, skip_special_tokens=True), rules)


def _count_new(stats: GenerationStats, new, eos: Sequence[int], stopped_at: dict[int, int]) -> None:
    """`generate` computes every row until the last one stops: a row's positions after its EOS
    (any of the stop ids) or its stop rule fired are padding."""
    rows, steps = new.shape
    real = 0
    for row, tokens in enumerate(new.tolist()):
        length = stopped_at.get(row, steps)
        ends = [i for i, token in enumerate(tokens[:length]) if token in eos]
        if ends:
            length = ends[0] + 1
        real += length
    stats.new_tokens += real
    stats.new_padding += rows * steps - real


def _greedy_compacting(model, tokenizer, enc, max_new_tokens: int, rules: Sequence[StopRule],
                       min_new_tokens: int = 0, stats: GenerationStats | None = None) -> list[str]:
    """Greedy decoding with a KV cache that drops rows as soon as they finish.

    `generate` keeps computing every row until the last one stops (finished rows are fed pad
    tokens), so a batch costs rows x longest completion. Here a row leaves the batch, and its
    slice of the KV cache is freed, once it emits EOS or its stop rule fires, so a batch costs the
    sum of its completions' lengths. Greedy choices are the same as `generate(do_sample=False)`
    (tests/test_generation.py checks this); beams and sampling go through `generate`.

    Hand-written rather than `generate` + a StoppingCriteria because it measured faster at both
    sizes bench/generation.py runs (bench/RESULTS.md, "Which greedy path stays").
    """
    import torch

    eos = set(stop_token_ids(model, tokenizer))
    input_ids, attention = enc["input_ids"], enc["attention_mask"]
    n = input_ids.shape[0]
    generated: list[list[int]] = [[] for _ in range(n)]
    alive = list(range(n))  # original row index of each batch row
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at 0
    with torch.inference_mode():
        # logits of the last position only, as generate does: at Phi-1.5 scale all positions'
        # logits are batch x prompt x 51,200 floats (bench/generation.py measures the difference)
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                    logits_to_keep=1)
        cache = out.past_key_values
        for step in range(max_new_tokens):
            next_tokens = _greedy_tokens(out.logits[:, -1, :], eos, ban_eos=step < min_new_tokens)
            if stats is not None:
                stats.new_tokens += len(alive)
            vocab = out.logits.shape[-1]
            finished = _finished_rows(tokenizer, rules, eos, alive, generated, next_tokens, vocab)
            if len(finished) == len(alive):
                break
            if finished:
                keep = [row for row in range(len(alive)) if row not in finished]
                index = torch.tensor(keep, device=input_ids.device)
                for layer in cache.layers:
                    layer.batch_select_indices(index)
                alive = [alive[row] for row in keep]
                next_tokens, attention = next_tokens[index], attention[index]
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=-1)
            positions = attention.sum(-1, keepdim=True) - 1
            out = model(
                input_ids=next_tokens[:, None], attention_mask=attention, position_ids=positions,
                past_key_values=cache, use_cache=True,
            )
    return _cut([tokenizer.decode(tokens, skip_special_tokens=True) for tokens in generated], rules)


def _greedy_tokens(logits, eos: set[int], ban_eos: bool):
    """Each row's most likely token; EOS banned while `ban_eos`, as generate's
    MinNewTokensLengthLogitsProcessor does before min_new_tokens."""
    if ban_eos:
        logits = logits.clone()
        logits[:, list(eos)] = -float("inf")
    return logits.argmax(-1)


def _finished_rows(tokenizer, rules: Sequence[StopRule], eos: set[int], alive: list[int],
                   generated: list[list[int]], next_tokens, vocab: int) -> set[int]:
    """Add this step's tokens (EOS excepted) to `generated` and return the batch rows that are done:
    those that emitted EOS, and those whose stop rule fires now (decoded only where it might)."""
    tokens = next_tokens.tolist()
    for orig, tok in zip(alive, tokens):
        if tok not in eos:
            generated[orig].append(tok)
    finished = {row for row, tok in enumerate(tokens) if tok in eos}
    live = [row for row in range(len(alive)) if row not in finished]
    rows = [alive[row] for row in live]
    for pos in _might_stop(tokenizer, rules, rows, next_tokens[live], vocab) if rows else []:
        orig = rows[pos]
        if rules[orig](tokenizer.decode(generated[orig], skip_special_tokens=True)) is not None:
            finished.add(live[pos])
    return finished


def _cut(texts: Iterable[str], rules: Sequence[StopRule]) -> list[str]:
    """Each completion cut where its stop rule says (whole where the rule never fired)."""
    predictions = []
    for text, rule in zip(texts, rules):
        cut = rule(text)
        predictions.append(text if cut is None else text[:cut])
    return predictions


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of prompt indices, longest first, that put no padding in the first forward where
    the prompts allow it: prompts of one token length fill whole batches together (held-out
    windows are nearly all `prompt_tokens` long, so length sorting alone gains nothing there); the
    few left over from each length are pooled, length-sorted, into the remaining batches. That is
    no more batches than plain chunking, and at most one that is not full.

    Largest first (rows x longest prompt): an out-of-memory error shows up at once rather than at
    the end of a long run."""
    by_length: dict[int, list[int]] = {}
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        by_length.setdefault(lengths[i], []).append(i)
    full, rest = [], []
    for group in by_length.values():
        cut = len(group) - len(group) % batch_size
        full += [group[s : s + batch_size] for s in range(0, cut, batch_size)]
        rest += group[cut:]
    pooled = [rest[s : s + batch_size] for s in range(0, len(rest), batch_size)]
    return sorted(full + pooled, key=lambda b: -len(b) * lengths[b[0]])


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    settings: GenerationSettings,
    rule: StopRule | Sequence[StopRule],
    stats: GenerationStats | None = None,
    compacting: bool = True,
) -> Iterator[tuple[list[int], list[str]]]:
    """Yield (indices, predictions) batch by batch, in `plan_batches` order; `stats` (when
    given) adds up the positions computed, padding included."""
    limit = context_limit(model, tokenizer, settings.max_new_tokens)
    lengths = [min(len(ids), limit) for ids in tokenizer(list(prompts))["input_ids"]] if prompts else []
    for idx in plan_batches(lengths, settings.batch_size):
        batch_rule = rule if callable(rule) else [rule[i] for i in idx]
        yield idx, generate_batch(model, tokenizer, [prompts[i] for i in idx], settings, batch_rule, stats,
                                  compacting)
