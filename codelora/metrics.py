"""Metrics that reproduce the CodeXGLUE evaluators bit for bit, plus the `bleu.py` CLI.

Which evaluator each function mirrors (microsoft/CodeXGLUE, MIT):

* `codexglue_method_post_process`, `edit_similarity`, `corpus_bleu`:
  Code-Code/Method-Generation/evaluator/evaluator.py. Its ES is fuzzywuzzy's `fuzz.ratio` on
  post-processed lines; its BLEU is `_bleu(answers, predictions)` imported from the evaluator's
  `bleu.py`. That `bleu.py` is the tensorflow/nmt-derived one (`compute_bleu(..., smooth=True)`,
  the same file as Code-Code/code-to-code-trans/evaluator/bleu.py): smoothing (matches+1) /
  (possible+1) for *every* order 1..4, corpus-level counts, brevity penalty exp(1 - r/c). It is
  NOT the code-to-text `bleu.py` (computeMaps/bleuFromMaps, +1 smoothing only for n > 1,
  sentence-level average). `_bleu` reads the raw files (no post_process), `strip().split()`s each
  line, and returns `round(100 * bleu, 2)`.
* `codexglue_line_post_process`, `exact_match`: Code-Code/CodeCompletion-line/evaluator/evaluator.py
  (EM = `pred.split() == gt.split()`, ES = `fuzz.ratio(pred, gt)`, pred stripped, gt not).

Edit similarity backend: the evaluators call fuzzywuzzy's `fuzz.ratio`, which with
python-Levenshtein installed (0.12.x, what the 2020 evaluators ran with) is
`int(round(100 * Levenshtein.ratio(a, b)))`, and that C function returns
`(double)(lensum - ldist) / lensum` with lensum = len(a) + len(b) and ldist the insert/delete
(Indel) distance; 100 for equal strings and 0 when exactly one is empty (fuzzywuzzy's checks).
We compute that same expression from rapidfuzz's Indel distance (MIT). The order of the float
operations matters at exact .5 ties: python-Levenshtein >= 0.13 and rapidfuzz's own `fuzz.ratio`
compute `1 - ldist / lensum`, which for "a" vs "a" + 78 other characters is 2.500000000000002
(rounds to 3) where `(80 - 78) / 80 * 100` is exactly 2.5 (rounds half-to-even to 2, the
evaluators' number). fuzzywuzzy *without* python-Levenshtein falls back to
difflib.SequenceMatcher, whose ratio is not an edit distance at all. `ES_BACKEND` records this
in summary.json.

BLEU where the official code divides by zero (`compute_bleu` computes `translation_length /
reference_length` and then `1 / ratio`): our rule, the same for the library, the tasks and the
`bleu.py` CLI:
* the references hold no token at all (an empty reference corpus; "" vs "" included): BLEU is
  undefined and reported as None ("n/a"), never a number: smoothing would otherwise credit a
  prediction for matching nothing (one token against an empty reference would score 84.09);
* the references hold tokens but the predictions none: BLEU 0, the limit of the brevity penalty
  exp(1 - r/c) as c -> 0.
"""

from __future__ import annotations

import collections
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rapidfuzz
from rapidfuzz.distance import Indel

from codelora.utils import UserError

log = logging.getLogger(__name__)

ES_BACKEND = (
    f"rapidfuzz {rapidfuzz.__version__} Indel distance; ES = int(round(100 * (lensum - indel) / lensum)), "
    "Python 3 round half-to-even: fuzzywuzzy 0.18 fuzz.ratio with python-Levenshtein 0.12 (its ratio is "
    "(lensum - ldist) / lensum; python-Levenshtein >= 0.13 and rapidfuzz.fuzz.ratio compute 1 - ldist / lensum "
    "and can round the other way at exact .5 ties)"
)

# <STR_LIT:value>, <NUM_LIT:value>, <CHAR_LIT:value>; non-greedy and DOTALL as in the evaluators.
_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def decode_literals(code: str) -> str:
    """Replace CodeXGLUE literal placeholders the way both evaluators do.

    Bare placeholders become `0` / empty; valued ones become their value. The evaluators find
    all matches first and then `str.replace` each matched placeholder text in turn, which differs
    from a single `re.sub` only on contrived inputs (a value containing another placeholder); we
    keep their order of operations so the numbers agree on any input.
    """
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    for kind, value in _LITERAL.findall(code):
        code = code.replace(f"<{kind}_LIT:{value}>", value)
    return code


def codexglue_method_post_process(code: str) -> str:
    """Method-Generation evaluator's post_process: layout tokens, literals, collapsed whitespace."""
    code = code.replace("<EOL>", "\n").replace("<INDENT>", " ").replace("<DEDENT>", " ")
    return " ".join(decode_literals(code).split())


def codexglue_line_post_process(code: str) -> str:
    """CodeCompletion-line evaluator's post_process: literals only, whitespace kept."""
    return decode_literals(code)


def edit_similarity(prediction: str, reference: str) -> int:
    """fuzzywuzzy `fuzz.ratio` (python-Levenshtein backend): an integer 0..100."""
    if prediction == reference:  # fuzzywuzzy's check_for_equivalence comes first: ("", "") -> 100
        return 100
    if not prediction or not reference:  # then check_empty_string
        return 0
    total = len(prediction) + len(reference)
    ratio = (total - Indel.distance(prediction, reference)) / total
    return int(round(100 * ratio))  # fuzzywuzzy's utils.intr; Python 3 round is half-to-even


def exact_match(prediction: str, reference: str) -> bool:
    """CodeXGLUE line-level EM: equal whitespace token sequences."""
    return prediction.split() == reference.split()


# ------------------------------------------------------------------------------------------ BLEU


def _ngram_counts(tokens: Sequence[str], max_order: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for order in range(1, max_order + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start : start + order])] += 1
    return counts


@dataclass(frozen=True)
class BleuResult:
    bleu: float | None  # 0..1; None where undefined (no reference tokens, see the module docstring)
    precisions: tuple[float, ...]
    brevity_penalty: float
    length_ratio: float
    translation_length: int
    reference_length: int

    @property
    def score(self) -> float | None:
        """As CodeXGLUE's `_bleu` reports it: 0..100 rounded to 2 decimals (None: undefined)."""
        return None if self.bleu is None else round(100 * self.bleu, 2)


def corpus_bleu_tokens(
    references: Sequence[Sequence[Sequence[str]]],
    translations: Sequence[Sequence[str]],
    max_order: int = 4,
    smooth: bool = True,
) -> BleuResult:
    """Corpus BLEU over pre-tokenized text (several references per segment allowed).

    Mirrors `compute_bleu` in CodeXGLUE's nmt-derived evaluator `bleu.py`: clipped n-gram matches
    against the per-n-gram maximum over a segment's references, summed over the corpus; the
    reference length is the *shortest* reference of each segment; n-gram orders a translation
    is too short for contribute no possible matches (so with smoothing such an order scores
    (m+1)/(0+1)). Segments pair up as in `zip` (the shorter list wins).

    Two inputs make the original divide by zero (see the module docstring for the rule): no
    reference tokens at all -> BLEU None (undefined); reference tokens but no translation tokens
    -> BLEU 0 (the limit bp -> 0).
    """
    matches = [0] * max_order
    possible = [0] * max_order
    ref_len = trans_len = 0
    for refs, trans in zip(references, translations):
        ref_len += min(len(r) for r in refs) if refs else 0
        trans_len += len(trans)
        merged: collections.Counter = collections.Counter()
        for ref in refs:
            merged |= _ngram_counts(ref, max_order)  # union = per-n-gram maximum
        overlap = _ngram_counts(trans, max_order) & merged  # intersection = clipped counts
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            if len(trans) - order + 1 > 0:
                possible[order - 1] += len(trans) - order + 1
    if smooth:
        precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    else:
        precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum(math.log(p) / max_order for p in precisions)) if min(precisions) > 0 else 0.0
    if ref_len == 0:
        return BleuResult(None, tuple(precisions), math.nan, math.inf if trans_len else math.nan, trans_len, 0)
    ratio = trans_len / ref_len
    bp = 1.0 if ratio > 1.0 else (math.exp(1 - 1.0 / ratio) if ratio > 0 else 0.0)
    return BleuResult(geo_mean * bp, tuple(precisions), bp, ratio, trans_len, ref_len)


def corpus_bleu(references: Sequence[str], predictions: Sequence[str]) -> BleuResult:
    """Smoothed BLEU-4 of one-line strings, tokenized as `_bleu` does (`strip().split()`)."""
    if len(references) != len(predictions):
        raise UserError(f"{len(predictions)} predictions for {len(references)} references")
    return corpus_bleu_tokens([[r.strip().split()] for r in references], [p.strip().split() for p in predictions])


def read_lines(path: str | Path) -> list[str]:
    """Lines as `open(path).readlines()` gives them (universal newlines, so \\r and \\r\\n split too;
    unlike str.splitlines, \\x0b, \\x0c, \\u2028 ... do not)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readlines()
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def bleu_files(references: str | Path, predictions: str | Path) -> BleuResult:
    refs, preds = read_lines(references), read_lines(predictions)
    if len(refs) != len(preds):  # the evaluator asserts the same before scoring
        raise UserError(f"{predictions} has {len(preds)} lines but {references} has {len(refs)}")
    return corpus_bleu(refs, preds)


# ------------------------------------------------------------------------------------------- CLI

EXAMPLES = """\
  python bleu.py --references refs.txt --predictions preds.txt
  # the numbers CodeXGLUE Method-Generation's evaluator prints for BLEU:
  python bleu.py --references evaluator/answers.txt --predictions evaluator/predictions.txt
"""


def run(cfg) -> int:
    result = bleu_files(cfg.references, cfg.predictions)
    precisions = " ".join(f"{p:.4f}" for p in result.precisions)
    if result.score is None:
        print("BLEU: n/a (the references hold no token; CodeXGLUE's bleu.py divides by zero there)")
    else:
        print(f"BLEU: {result.score}")
    print(
        f"precisions(1-4, smoothed): {precisions}  BP: {result.brevity_penalty:.4f}  "
        f"ratio: {result.length_ratio:.4f}  hyp_len: {result.translation_length}  ref_len: {result.reference_length}"
    )
    return 0


DESCRIPTION = ("Smoothed corpus BLEU-4 exactly as CodeXGLUE's method-generation evaluator computes it "
               "(one segment per line, whitespace tokens).")


def main(argv: Sequence[str] | None = None) -> int:
    from codelora.cli import run_command

    return run_command("bleu", argv)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k)
    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1), computed as the
    product 1 - prod_{i=n-c+1..n} (1 - k/i), which their paper gives as the numerically stable form."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
