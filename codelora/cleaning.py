"""Cleaning before windowing: licence headers out, unlearnable files dropped, each with a reason.

A licence header is pure boilerplate: it is identical across thousands of files, so a model
trained on it learns to emit copyright notices. Only a comment at the very top of a file counts
(after an optional BOM, shebang line, Kotlin `@file:` annotations and blank lines), and only when
it reads like a licence and is not the documentation of the declaration right below it; any other
leading comment (a file's documentation) stays.

Line ends are made "\n" first: windows are cut at "\n", and a CRLF file would otherwise leave a
stray "\r" at the end of every prompt and completion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words that appear in licence/copyright notices and rarely in a file's own documentation.
_LICENSE_WORDS = re.compile(
    r"copyright|\(c\)\s*\d{4}|©|licen[cs]e|spdx-license-identifier|all rights reserved"
    r"|permission is hereby granted|without warranties|redistribution and use",
    re.IGNORECASE,
)
# The subset that only a notice has: a comment with one of these is a header even when code
# follows it directly; one that merely mentions a licence may be a declaration's documentation.
_NOTICE_WORDS = re.compile(
    r"copyright|\(c\)\s*\d{4}|©|spdx-license-identifier|all rights reserved|permission is hereby granted"
    r"|licensed (?:to|under)",
    re.IGNORECASE,
)
# A `#` line comment: `#` followed by space, `#`, or end of line -- so `#include` / `#define`
# (C preprocessor) and `#[attr]` are never mistaken for comments.
_HASH_COMMENT = re.compile(r"#(?:[ \t#]|$)")


@dataclass(frozen=True)
class CleanResult:
    text: str | None  # cleaned text, None when the file is dropped
    reason: str | None  # drop reason, None when kept
    license_stripped: bool = False


def _leading_comment(text: str, pos: int) -> int | None:
    """End offset of the comment block starting at `pos` (plus its trailing blank lines), or None."""
    if text.startswith("/*", pos):
        end = text.find("*/", pos + 2)
        if end < 0:
            return None  # unterminated: not a header we understand, leave the file alone
        end += 2
        # The rest of the closing line must be blank, else code shares the line with the comment.
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end + 1
        if text[end:line_end].strip():
            return None
        return line_end
    if text.startswith("//", pos) or _HASH_COMMENT.match(text, pos):
        marker = "//" if text.startswith("//", pos) else "#"
        end = pos
        while end < len(text):
            line_end = text.find("\n", end)
            line_end = len(text) if line_end < 0 else line_end + 1
            line = text[end:line_end].lstrip(" \t")
            if marker == "//" and line.startswith("//") or marker == "#" and _HASH_COMMENT.match(line):
                end = line_end
            else:
                break
        return end
    return None


# What may follow a header directly (no blank line between) without the header being the
# documentation of a declaration: package/import lines, more comments, preprocessor lines.
_NOT_A_DECLARATION = ("package ", "import ", "from ", "@file:", "#", "//", "/*", '"""', "'''", "using ",
                      "use ", "module ")


def _documents_next_line(text: str, end: int) -> bool:
    """True when the comment ending at `end` sits directly on a declaration (a KDoc/Javadoc or a
    line comment that documents a class or function): that is the code's documentation, even
    when it mentions a licence."""
    line_end = text.find("\n", end)
    line = text[end:len(text) if line_end < 0 else line_end].strip()
    return bool(line) and not line.startswith(_NOT_A_DECLARATION)


def _is_license_header(text: str, start: int, end: int) -> bool:
    if _NOTICE_WORDS.search(text, start, end):
        return True
    return _LICENSE_WORDS.search(text, start, end) is not None and not _documents_next_line(text, end)


def _file_annotations_end(text: str, pos: int) -> int:
    """End of the Kotlin `@file:` annotations (and the blank lines after them) at `pos`; an
    annotation's arguments may span lines, so lines are taken until its parentheses balance."""
    while text.startswith("@file:", pos):
        depth = 0
        while pos < len(text):
            line_end = text.find("\n", pos)
            line_end = len(text) if line_end < 0 else line_end + 1
            depth += text.count("(", pos, line_end) - text.count(")", pos, line_end)
            pos = line_end
            if depth <= 0:
                break
        pos = _skip_blank_lines(text, pos)
    return pos


def _skip_blank_lines(text: str, pos: int) -> int:
    while pos < len(text):
        line_end = text.find("\n", pos)
        line_end = len(text) if line_end < 0 else line_end + 1
        if text[pos:line_end].strip():
            break
        pos = line_end
    return pos


def strip_license_header(text: str) -> tuple[str, bool]:
    """Remove licence comment blocks at the top of `text`; returns (text, whether any was removed).

    Keeps a BOM and a shebang line (`#!...`), which must stay first for the file to work.
    Several consecutive licence blocks are all removed (files that carry two notices).
    """
    keep = ""
    if text.startswith("\ufeff"):
        keep, text = "\ufeff", text[1:]
    if text.startswith("#!"):
        line_end = text.find("\n")
        line_end = len(text) if line_end < 0 else line_end + 1
        keep, text = keep + text[:line_end], text[line_end:]
    # `@file:` annotations must stay before `package`; ktor and others put the header after them.
    annotations_end = _file_annotations_end(text, _skip_blank_lines(text, 0))
    keep, text = keep + text[:annotations_end], text[annotations_end:]
    pos = _skip_blank_lines(text, 0)
    stripped = False
    while pos < len(text):
        end = _leading_comment(text, pos)
        if end is None or not _is_license_header(text, pos, end):
            break
        pos = _skip_blank_lines(text, end)
        stripped = True
    if not stripped:
        return keep + text, False
    return keep + text[pos:], True


def count_code_lines(text: str) -> int:
    return sum(map(bool, map(str.strip, text.splitlines())))  # map/sum run in C


HEAD_CHARS = 1024


def has_code_lines(text: str, n: int) -> bool:
    """count_code_lines(text) >= n, from the first HEAD_CHARS characters when they hold n
    non-blank lines (they do in almost every file; splitting whole files was 1.2% of
    preprocessing on real Kotlin). A line the prefix cuts is counted only when its part in the
    prefix is non-blank, and then the whole line is too, so the prefix never counts more."""
    if count_code_lines(text[:HEAD_CHARS]) >= n:
        return True
    return len(text) > HEAD_CHARS and count_code_lines(text) >= n


# Byte tables for the two run checks below: translate() and a substring search run in C over
# the whole file at memory speed, where a regex tries a match at every position (together 9% of
# preprocessing on real Kotlin, issue 17). Digits are ASCII bytes; every other byte, including
# those of a multi-byte character, becomes a space.
_DIGIT_BYTES = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_SOLID_BYTES = bytes(0x20 if chr(b).isspace() else 0x78 for b in range(128)) + b"x" * 128  # str.split's spaces


def longest_digit_run(text: str, limit: int) -> bool:
    """True when `text` has a run of more than `limit` ASCII digits."""
    return b"0" * (limit + 1) in text.encode("utf-8", "surrogatepass").translate(_DIGIT_BYTES)


def longest_token_over(text: str, limit: int) -> bool:
    """True when `text` has a whitespace-free token longer than `limit` characters."""
    if len(text) <= limit:
        return False
    if text.isascii():  # one byte per character, and str.split's spaces are these bytes
        return b"x" * (limit + 1) in text.encode("ascii").translate(_SOLID_BYTES)
    # str.split() runs in C; a regex like \S{501,} rescans long tokens from every start offset.
    return max(map(len, text.split()), default=0) > limit


def clean_text(text: str, *, strip_license: bool = True, min_lines: int = 5, max_digit_run: int = 200,
               max_token_chars: int = 500, special_tokens: tuple[str, ...] = ()) -> CleanResult:
    """Apply every filter in a fixed order; the first failing one names the drop reason."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # CRLF and old-Mac CR line ends
    stripped = False
    if strip_license:
        text, stripped = strip_license_header(text)
    if not has_code_lines(text, min_lines):
        return CleanResult(None, "too_few_lines", stripped)
    if longest_digit_run(text, max_digit_run):
        return CleanResult(None, "long_digit_run", stripped)
    if longest_token_over(text, max_token_chars):
        return CleanResult(None, "long_token", stripped)
    # The tokenizer would turn a literal "<|endoftext|>" in source into a real EOS token, teaching
    # the model to stop mid-file; such files are rare, so drop them rather than escape them.
    if any(tok in text for tok in special_tokens):
        return CleanResult(None, "special_token_text", stripped)
    return CleanResult(text, None, stripped)


def normalize_whitespace(text: str) -> str:
    """Text with all whitespace runs collapsed: files equal under it share a split."""
    return " ".join(text.split())
