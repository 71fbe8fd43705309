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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# A stop rule looks at the text generated so far (prompt excluded) and returns the length of the
# prediction to keep when the completion is finished, or None to go on.
#
# Optionally a rule says which characters can make it fire: `rule.triggers`, a string (set with
# `triggers(...)`). Its answer may turn from None to a cut only on a step whose new token contains
# one of them, so the generation loop finds the rows that might stop from token ids (one lookup per
# step) and decodes only those. A rule without `triggers` is asked at every step (always correct);
# "" means only EOS ends the completion.
StopRule = Callable[[str], int | None]


def triggers(chars: str) -> Callable[[StopRule], StopRule]:
    """Decorator: declare the characters that can make a stop rule fire (see StopRule)."""

    def mark(rule: StopRule) -> StopRule:
        rule.triggers = chars  # type: ignore[attr-defined]
        return rule

    return mark


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    min_new_tokens: int = 0  # EOS is not allowed before this many new tokens
    batch_size: int = 16
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 0.2
    top_p: float = 0.95


# --------------------------------------------------------------------------------- stop rules


@triggers("")
def stop_at_eos(text: str) -> int | None:
    """Only EOS ends the completion (handled by generate itself)."""
    return None


@triggers("\n")
def stop_at_line_end(text: str) -> int | None:
    """Line completion: the prediction is the rest of the current line."""
    cut = text.find("\n")
    return None if cut < 0 else cut


@triggers("\n")
def stop_after_next_line(text: str) -> int | None:
    """Next-line completion: the prediction is "\n" + one line (the newline it starts with is
    the one that ends the prompt's last line), so it ends at the following newline."""
    cut = text.find("\n", 1)
    return None if cut < 0 else cut


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def stop_at_dedent(text: str) -> int | None:
    """Indentation-delimited body (Python): finished at the first non-blank line indented less
    than the body's first line (the prompt ends with a newline, so the text starts a line).
    A body whose first line sits at column 0 cannot be told from what follows: one line only."""
    lines = text.split("\n")
    body_indent: int | None = None
    offset = 0
    for i, line in enumerate(lines):
        complete = i < len(lines) - 1  # the last piece may still grow
        if line.strip():  # indentation is fixed once a line has content
            if body_indent is None:
                body_indent = _indent(line)
                if body_indent == 0 and complete:
                    return offset + len(line)
            elif _indent(line) < body_indent:
                return max(offset - 1, 0)  # drop the newline before the dedented line
        offset += len(line) + 1
    return None


def brace_depth(code: str) -> int:
    """Net unclosed braces in `code` (strings and comments ignored); used for a prompt that
    already opened the function body (MBKP-style prompts end in `{`)."""
    return _scan_braces(code, 0, stop=False)[1]


def brace_rule(initial_depth: int = 0) -> StopRule:
    """Stop rule for a body whose prompt left `initial_depth` braces open."""
    if initial_depth <= 0:
        return stop_at_brace_close

    @triggers("}")  # only a closing brace can close the last open one
    def rule(text: str) -> int | None:
        return _scan_braces(text, initial_depth, stop=True)[0]

    return rule


@triggers("}\n")  # a brace closes the body; a newline ends an `= expression` body
def stop_at_brace_close(text: str) -> int | None:
    """Brace-delimited body (Kotlin, Java, C-like): finished when the braces opened in the
    generation are all closed again. Braces inside string/char literals and comments do not
    count. A body written as `= expression` ends at the end of its line."""
    stripped = text.lstrip()
    if stripped.startswith("="):
        start = len(text) - len(stripped)
        cut = text.find("\n", start)
        return None if cut < 0 else cut
    return _scan_braces(text, 0, stop=True)[0]


def _scan_braces(text: str, depth: int, stop: bool) -> tuple[int | None, int]:
    """(cut after the brace that closes everything, or None; final depth)."""
    opened = depth > 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            if end < 0:
                return None, depth
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                return None, depth
            i = end + 2
            continue
        elif text.startswith('"""', i):
            end = text.find('"""', i + 3)
            if end < 0:
                return None, depth
            i = end + 3
            continue
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        elif ch == "{":
            depth += 1
            opened = True
        elif ch == "}":
            depth -= 1
            if stop and opened and depth <= 0:
                return i + 1, depth
        i += 1
    return None, depth


STOP_RULES: dict[str, StopRule] = {
    "eos": stop_at_eos,
    "line": stop_at_line_end,
    "dedent": stop_at_dedent,
    "brace": stop_at_brace_close,
}


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


def _context_limit(model, tokenizer, max_new_tokens: int) -> int:
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
        max_length=_context_limit(model, tokenizer, settings.max_new_tokens),
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
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    predictions = []
    for text, row_rule in zip(texts, rules):
        cut = row_rule(text)
        predictions.append(text if cut is None else text[:cut])
    return predictions


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

    Why hand-written rather than `generate` + a StoppingCriteria: bench/generation.py times both
    paths (fp32 CPU, one thread, 2 shared cores, identical predictions on every prompt) against a
    user's `generate` with a decode-every-row StoppingCriteria; medians of 3 interleaved repeats,
    per-repeat range in brackets, all 2026-11-24:
    - demo size (1.8M parameters, 256 held-out 192-token next-line prompts, batches of 16, 23 new
      tokens per row), `make bench` at load 7-14: this path 1.09x (0.75-1.73x), `generate` with
      this module's token-id stop checks (`compacting=False`) 0.81x (0.78-1.39x); an earlier run
      at load 18-20: 2.23x against 1.13x. A step is mostly Python overhead at this size, and
      generate spent 42% of its decoding positions (4,294 of 10,240) on rows already stopped;
    - Phi-1.5 size (1.42B random weights, prompts of 8-24 tokens, <=16 new tokens, ~6-7 per row):
      16 prompts in batches of 8 at load 9-10: this path 1.25x (1.04-1.74x), `compacting=False`
      0.90x (0.86-1.12x); `make bench`'s 8 prompts in one batch: 40.2 s against 43.9 s (1.20x
      and 1.27x of `generate` as medians of per-repeat ratios; this path faster in 2 of 3
      repeats). One decoding step's cost still grows with its rows there (batch 8 2.2 s, 4 1.8 s,
      1 0.9 s per step), and generate computed 146 positions for stopped rows against 110 real.
    So no dispatch by size: both take this path (bench/RESULTS.md has the latest `make bench`).
    Not measured on a GPU (none was lent), where a step's cost grows less with its rows.
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
            logits = out.logits[:, -1, :]
            if step < min_new_tokens:  # as generate's MinNewTokensLengthLogitsProcessor does
                logits = logits.clone()
                logits[:, list(eos)] = -float("inf")
            next_tokens = logits.argmax(-1)
            tokens = next_tokens.tolist()
            for orig, tok in zip(alive, tokens):
                if tok not in eos:
                    generated[orig].append(tok)
            if stats is not None:
                stats.new_tokens += len(alive)
            finished = {row for row, tok in enumerate(tokens) if tok in eos}
            live = [row for row in range(len(alive)) if row not in finished]
            rows = [alive[row] for row in live]
            for pos in _might_stop(tokenizer, rules, rows, next_tokens[live], logits.shape[-1]) if rows else []:
                orig = rows[pos]
                if rules[orig](tokenizer.decode(generated[orig], skip_special_tokens=True)) is not None:
                    finished.add(live[pos])
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
    predictions = []
    for tokens, rule in zip(generated, rules):
        text = tokenizer.decode(tokens, skip_special_tokens=True)
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
    limit = _context_limit(model, tokenizer, settings.max_new_tokens)
    lengths = [min(len(ids), limit) for ids in tokenizer(list(prompts))["input_ids"]] if prompts else []
    for idx in plan_batches(lengths, settings.batch_size):
        batch_rule = rule if callable(rule) else [rule[i] for i in idx]
        yield idx, generate_batch(model, tokenizer, [prompts[i] for i in idx], settings, batch_rule, stats,
                                  compacting)
