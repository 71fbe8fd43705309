"""Stop rules: when a generated completion is finished, and where to cut it.

A task picks one per example (EOS only, end of line, end of the next line, closing brace, or the
Kotlin rule that keeps helper functions after a method); `codelora.generation` asks it while
decoding. Plain string functions, no torch: tasks import them without importing the decoder.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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
        elif text.startswith("/*", i) or text.startswith('"""', i):  # block comment, raw string
            close = "*/" if ch == "/" else '"""'
            end = text.find(close, i + len(close))
            if end < 0:
                return None, depth
            i = end + len(close)
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


# ---------------------------------------------------------------- Kotlin: methods with helpers

_HELPER = re.compile(
    r"(?:(?:private|internal|public|inline|tailrec|suspend|infix|operator)\s+)*fun\s+(?:<[^>]*>\s*)?"
    r"(?:[\w.<>]+\.)?(\w+)\s*\("
)


def helper_aware_rule(initial_depth: int):
    """Stop rule for a method body whose prompt left `initial_depth` braces open: the body ends
    where its braces close, unless what follows is a top-level helper function (`fun name(`,
    not `main`; McEval's reference solutions define some after the method): then the helper is
    kept and the rule looks again after it. Undecided while the next line is too short to tell."""
    body_end = brace_rule(initial_depth)

    def rule(text: str) -> int | None:
        end = body_end(text)
        while end is not None:
            rest = text[end:]
            start = len(rest) - len(rest.lstrip())
            line_end = rest.find("\n", start)
            head = rest[start:] if line_end < 0 else rest[start:line_end]
            helper = _HELPER.match(head)
            if helper is None:
                decided = line_end >= 0 or "(" in head or len(head) > 80
                could_grow = re.fullmatch(r"[\w\s<>.,]*", head) is not None
                return end if decided or not could_grow or not _maybe_helper(head) else None
            if helper.group(1) == "main":
                return end
            if "{" not in head:  # `fun f(x: Int) = expression`: one line
                if line_end < 0:
                    return None
                end = end + line_end
                continue
            inner = brace_rule(0)(rest[start:])
            end = None if inner is None else end + start + inner
        return None

    return rule


def _maybe_helper(head: str) -> bool:
    """Whether `head` (a line being generated) can still grow into `fun name(`."""
    words = head.split()
    modifiers = {"private", "internal", "public", "inline", "tailrec", "suspend", "infix", "operator"}
    for i, word in enumerate(words):
        last = i == len(words) - 1 and not head[-1:].isspace()
        if word == "fun":
            return True
        if word in modifiers:
            continue
        return last and any(m.startswith(word) for m in [*modifiers, "fun"])
    return True
