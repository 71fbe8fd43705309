"""CodeXGLUE's token conventions, applied to model output so that it is scored like the dataset.

The CodeXGLUE references are not raw source: each dataset was made by a preprocessing script
(microsoft/CodeXGLUE, MIT) that re-tokenised the code, normalised literals and dropped comments.
A model that writes the same code as real source scores far below 100 against them (a real
string literal against the reference's emptied `""`, `i++` against `i ++`). This module applies
the same conventions to predictions; each function names the script whose rules it follows.
The code is ours, written from those scripts' documented behaviour, because the scores must
agree with references produced by exactly those rules (no library reproduces them).

* Literals (`process_string` in every CodeXGLUE preprocess.py): a string literal keeps its
  lower-case prefix and quotes; its text, with " " written `U+0020` and "," written `U+002C`,
  is kept as `<STR_LIT:text>` when it is in the dataset's literal list (literals.json) and
  emptied to `<STR_LIT>` otherwise; numbers likewise become `<NUM_LIT:value>` / `<NUM_LIT>`;
  Java one-character '...' literals become `<CHAR_LIT...>`. The evaluators' post_process later
  turns `<STR_LIT>` into nothing, `<NUM_LIT>` into 0 and `<X_LIT:v>` into v.
* Python method bodies (Method-Generation/dataset/preprocess.py): blank lines dropped, the
  first line's indentation cut from every line, then Python's `tokenize`: tokens on one row
  keep their original spacing, a token on a new row is glued on without a space, comments
  vanish, NEWLINE/NL -> `<EOL>` (not twice in a row), INDENT -> `<INDENT>`, DEDENT -> `<DEDENT>`.
* Python lines (CodeCompletion-token/dataset/py150/preprocess.py): `tokenize` tokens joined by
  one space, comments and indentation dropped.
* Java lines (CodeCompletion-token/dataset/javaCorpus/preprocess.py): `javalang`'s tokenizer
  (the library that script used; it drops comments), values joined by one space.
* Kotlin lines (our own held-out split, no CodeXGLUE script): a small lexer in the same spirit.

Where a tokenizer stops on input it cannot read (an unterminated string or bracket at the end
of a prediction cut by the token budget), the tokens read so far are converted and the unread
rest is kept as written; the dataset's scripts dropped such a rest, but a prediction should not
lose text because the model ran out of tokens.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from codelora.utils import UserError

_PLACEHOLDER = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)  # as the evaluators' post_process
_SPECIAL_CHARS = {" ": "U+0020", ",": "U+002C"}  # process_string's special_chars, in its order
_QUOTES = ("'''", '"""', "'", '"')  # process_string's str_quote_options, in its order
_PREFIX = re.compile(r"^[a-z]+")  # process_string's qualifier_regex: lower-case prefixes only


@dataclass(frozen=True)
class Literals:
    """The literal values a dataset kept (everything else was emptied)."""

    strings: frozenset[str] = frozenset()
    numbers: frozenset[str] = frozenset()
    chars: frozenset[str] = frozenset()
    source: str = "none"

    @classmethod
    def from_json(cls, path: str | Path) -> Literals:
        """CodeXGLUE's literals.json: {"str": [...], "num": [...], "char": [...]}."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"literals file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not a JSON literals file ({err})") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in ("str", "num", "char")):
            raise UserError(f'{path}: expected {{"str": [...], "num": [...], "char": [...]}}')
        return cls(frozenset(map(str, data.get("str", []))), frozenset(map(str, data.get("num", []))),
                   frozenset(map(str, data.get("char", []))), f"{path.name} (literals.json)")

    @classmethod
    def from_texts(cls, texts: Iterable[str], source: str) -> Literals:
        """Every `<X_LIT:value>` that occurs in `texts`: a subset of the dataset's list (all the
        values its references can show), used when literals.json is not given."""
        found: dict[str, set[str]] = {"STR": set(), "NUM": set(), "CHAR": set()}
        for text in texts:
            for kind, value in _PLACEHOLDER.findall(text):
                found[kind].add(value)
        return cls(frozenset(found["STR"]), frozenset(found["NUM"]), frozenset(found["CHAR"]), source)

    @classmethod
    def for_dataset(cls, literal_file: str | None, records: Iterable[dict], fields: Iterable[str]) -> Literals:
        """literals.json when given, else the literals the records' `fields` show."""
        if literal_file:
            return cls.from_json(literal_file)
        fields = tuple(fields)
        texts = (rec[f] for rec in records for f in fields if isinstance(rec.get(f), str))
        return cls.from_texts(texts, "the literals the loaded data shows")

    def describe(self) -> str:
        return f"{self.source}: {len(self.strings)} str, {len(self.numbers)} num, {len(self.chars)} char"


def string_placeholder(token: str, literals: Literals, *, java: bool = False) -> str:
    """A string literal token as CodeXGLUE's process_string writes it."""
    prefix_match = _PREFIX.search(token)
    prefix = prefix_match[0] if prefix_match else ""
    body = _PREFIX.sub("", token)
    text, start, end = body, "", ""
    for quote in _QUOTES:
        if body.startswith(quote):
            start, text = quote, text[len(quote) :]
            if body.endswith(quote):
                end, text = quote, text[: -len(quote)]
            break
    is_char = java and len(text) == 1 and start == "'"  # decided before the special characters
    for char, escaped in _SPECIAL_CHARS.items():
        text = text.replace(char, escaped)
    kind, known = ("CHAR", literals.chars) if is_char else ("STR", literals.strings)
    return f"{prefix}{start}<{kind}_LIT:{text}>{end}" if text in known else f"{prefix}{start}<{kind}_LIT>{end}"


def number_placeholder(value: str, literals: Literals) -> str:
    return f"<NUM_LIT:{value}>" if value in literals.numbers else "<NUM_LIT>"


# ------------------------------------------------------------------------------------ Python


@dataclass(frozen=True)
class PyToken:
    type: int
    string: str
    start: tuple[int, int]
    end: tuple[int, int]


def text_offset(lines: list[str], pos: tuple[int, int]) -> int:
    """The index in "".join(lines) of tokenize's (row, col) position (rows count from 1)."""
    row, col = pos
    return sum(len(line) for line in lines[: row - 1]) + col


def python_tokens(code: str) -> tuple[list[PyToken], str]:
    """(tokens `tokenize` read, the text after the last of them that it could not read: "" when
    it read everything). f-strings come back as one STRING token on every Python version (3.12
    splits them into FSTRING_* pieces; the datasets were made with one token per literal)."""
    lines = code.splitlines(keepends=True)
    tokens: list[PyToken] = []
    fstring: list[PyToken] = []  # open FSTRING_START..FSTRING_END pieces, nesting included
    fstring_start = getattr(tokenize, "FSTRING_START", None)
    fstring_end = getattr(tokenize, "FSTRING_END", None)
    depth = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if fstring_start is not None and (tok.type == fstring_start or depth):
                depth += (tok.type == fstring_start) - (tok.type == fstring_end)
                fstring.append(PyToken(tok.type, tok.string, tok.start, tok.end))
                if depth == 0:
                    first, last = fstring[0], fstring[-1]
                    text = code[text_offset(lines, first.start) : text_offset(lines, last.end)]
                    tokens.append(PyToken(tokenize.STRING, text, first.start, last.end))
                    fstring = []
                continue
            tokens.append(PyToken(tok.type, tok.string, tok.start, tok.end))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        last_end = fstring[0].start if fstring else (tokens[-1].end if tokens else (1, 0))
        return tokens, code[text_offset(lines, last_end) :]
    return tokens, ""


_LAYOUT = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT,
           tokenize.ENCODING, tokenize.ENDMARKER}


def python_line_tokens(line: str, literals: Literals | None = None) -> str:
    """One Python line in py150's token spacing (`x=f(a,'b c')` -> `x = f ( a , 'b c' )`);
    with `literals`, string and number literals are replaced as that dataset replaced them."""
    tokens, rest = python_tokens(line.strip())
    out = []
    for tok in tokens:
        value = " ".join(tok.string.split())
        if tok.type in _LAYOUT or not value:
            continue
        if literals is not None and tok.type == tokenize.STRING:
            value = string_placeholder(value, literals)
        elif literals is not None and tok.type == tokenize.NUMBER:
            value = number_placeholder(value, literals)
        out.append(value)
    return " ".join(out + rest.split())


def _method_body_layout(code: str) -> str:
    """Method-Generation's preprocess() for a top-level function: blank lines dropped and the
    body's leading indentation (counted in spaces on the first line) cut from every line."""
    lines = [line for line in code.split("\n") if line.strip()]
    if not lines:
        return ""
    indent = len(lines[0]) - len(lines[0].lstrip(" "))
    return "".join(line[indent:] + "\n" for line in lines)


def python_body_tokens(code: str, literals: Literals) -> str:
    """A generated method body as Method-Generation's preprocess.py wrote the references'
    `body` field (token format with `<EOL>`/`<INDENT>`/`<DEDENT>` and literal placeholders)."""
    text = _method_body_layout(code)
    tokens, rest = python_tokens(text)
    out: list[str] = []
    previous_eol = False
    last_end = (0, 0)
    for tok in tokens:
        value = " ".join(tok.string.split())
        piece = ""
        if tok.type == tokenize.STRING:
            piece, previous_eol = string_placeholder(value, literals), False
        elif tok.type == tokenize.NUMBER:
            piece, previous_eol = number_placeholder(value, literals), False
        elif tok.type in (tokenize.NEWLINE, tokenize.NL):
            if not previous_eol:
                piece, previous_eol = "<EOL>", True
        elif tok.type in (tokenize.COMMENT, tokenize.ENCODING, tokenize.ENDMARKER):
            pass  # comments vanish; like the script, a comment does not reset previous_eol
        elif tok.type == tokenize.INDENT:
            piece, previous_eol = "<INDENT>", False
        elif tok.type == tokenize.DEDENT:
            piece, previous_eol = "<DEDENT>", False
        else:
            piece, previous_eol = value, False
        # same row: the original gap; a new row: glued on (the script's spacing rule)
        gap = " " * (tok.start[1] - last_end[1]) if tok.start[0] == last_end[0] else ""
        out.append(gap + piece)
        last_end = tok.end
    return "".join(out) + rest


# -------------------------------------------------------------------------------------- Java


def java_line_tokens(line: str, literals: Literals | None = None, *, join_shifts: bool = False) -> str:
    """One Java line in javaCorpus's token spacing (`i++) {` -> `i ++ ) {`), by `javalang`'s
    tokenizer as that dataset was made; with `literals`, literals replaced as it replaced them.

    javalang writes `>>` and `>>>` as separate `>` tokens (it cannot tell them from generics'
    closing `> >`), so javaCorpus has `a > > > b`. With `join_shifts` (for data that writes
    `>>`/`>>>` as single tokens) `>`s that touch in the prediction are joined back."""
    import javalang

    text = line.strip()
    out: list[str] = []
    cursor = 0
    try:
        for tok in javalang.tokenizer.tokenize(text):
            kind = type(tok).__name__
            value = tok.value
            start = text.index(value, cursor)
            touching = start == cursor and out and out[-1].endswith(">")
            cursor = start + len(value)
            if literals is not None and kind in ("String", "Character"):
                value = string_placeholder(value, literals, java=True)
            elif literals is not None and ("Integer" in kind or "FloatingPoint" in kind):
                value = number_placeholder(value, literals)
            if join_shifts and touching and value.startswith(">") and set(out[-1]) == {">"}:
                out[-1] += value
            else:
                out.append(value)
    except (javalang.tokenizer.LexerError, ValueError):
        pass  # an unterminated literal: the rest stays as written
    return " ".join(out + text[cursor:].split())


def java_statement_end(text: str) -> int | None:
    """Where javaCorpus's line ends in `text`: after the first `;` or `}`, or before the first
    `{` (CodeCompletion-line README: "until the first ; or { and } token (including ; or }
    token, but excluding { token)"), outside string/char literals and comments; None while none
    has come (an unterminated literal or comment at the end may still close)."""
    for match in _JAVA_SCAN.finditer(text):
        token = match.group()
        if token in (";", "}"):
            return match.end()
        if token == "{":
            return match.start()
        if match.group("open"):
            return None
    return None


_JAVA_SCAN = re.compile(
    r"""  "(?:\\.|[^"\\\n])*"  |  '(?:\\.|[^'\\\n])*'     # closed literals: skipped
        | //[^\n]*\n  |  /\*.*?\*/                      # closed comments: skipped
        | (?P<open>["']|//|/\*)                         # an opening that has not closed yet
        | [;{}]
    """,
    re.X | re.S,
)


# ------------------------------------------------------------------------------------ Kotlin

_KOTLIN_TOKEN = re.compile(
    r'''"""(?:.|\n)*?"""|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'   # strings, chars, whole
    | //[^\n]*|/\*(?:.|\n)*?\*/                                     # comments (dropped)
    | `[^`\n]*`                                                     # `quoted identifiers`
    | 0[xX][0-9a-fA-F_]+[uU]?[lL]?|0[bB][01_]+[uU]?[lL]?           # hex, binary
    | (?:\d[\d_]*)?\.\d[\d_]*(?:[eE][+-]?\d+)?[fFdD]?               # .5, 1.5e-3f
    | \d[\d_]*(?:[eE][+-]?\d+[fFdD]?|[fFdD]|[uU]?[lL]?)             # 10, 1_000L, 1e-5, 2f
    | [A-Za-z_]\w*                                                  # identifiers, keywords
    | \.\.<|===|!==|\?\.|\?:|!!|::|\.\.|->|&&|\|\||\+\+|--|[-+*/%=!<>]=   # operators
    | \S                                                            # anything else: one char
    ''',
    re.X,
)


def kotlin_line_tokens(line: str) -> str:
    """One Kotlin line with one space between tokens (comments dropped): `i++) {` -> `i ++ ) {`."""
    return " ".join(t for t in _KOTLIN_TOKEN.findall(line.strip()) if not t.startswith(("//", "/*")))


LINE_TOKENIZERS = {"python": python_line_tokens, "java": java_line_tokens, "kotlin": kotlin_line_tokens}


def line_tokenizer_for(path: str):
    """The line tokenizer for a source file: by extension, Kotlin's (C-like enough) for others."""
    suffix = Path(path).suffix.lower()
    return LINE_TOKENIZERS[{".py": "python", ".java": "java"}.get(suffix, "kotlin")]
