"""Near-duplicate files: MinHash signatures, LSH candidate pairs, groups closed under union.

A split by file leaks when near-copies of a file (twin modules, a jdbc and an r2dbc variant of one
test, a file and its generated sibling) land on both sides: a test completion is then already in
train, nearly verbatim. So files are grouped before splitting: two files whose estimated Jaccard
similarity of word 5-gram shingles reaches `threshold` are linked, links are closed transitively
(connected components), and every group goes to one split.

The recipe follows the near-deduplication of The Stack / StarCoder (BigCode): shingles are
5-grams of the file's alphanumeric tokens (punctuation and layout ignored), MinHash over them
and LSH banding to find candidate pairs without comparing all pairs (datasketch's MinHash and
MinHashLSH; Broder 1997, Leskovec et al., Mining of Massive Datasets ch. 3). BigCode drops
pairs at Jaccard >= 0.85 to deduplicate; for an honest split the bar is lower (default 0.5,
see `PreprocessConfig.near_dup_threshold`): a file that shares half of its shingles with a
train file shares whole blocks of lines with it, and those blocks are what a held-out
completion would be found in. Candidate pairs are checked against the threshold with the full
signatures, so LSH's false positives do not merge groups.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

NUM_PERM = 128  # signature length: the Jaccard estimate's standard error is <= 0.5/sqrt(128) = 0.044
SHINGLE = 5  # tokens per shingle, as BigCode's near-dedup
_TOKEN = re.compile(r"\w+")
# Distinct odd multipliers, one per shingle position: hash(shingle) = sum(mult[k] * hash(token k)),
# mod 2**32, vectorised with numpy instead of one Python hash call per shingle.
_MULT = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1], dtype=np.uint64)


def shingle_hashes(text: str) -> np.ndarray:
    """Distinct 32-bit hashes of the word 5-grams of `text` (one shingle for a shorter file)."""
    tokens = _TOKEN.findall(text)
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    ids = _crc32_each(tokens)
    n = min(SHINGLE, len(ids))
    width = len(ids) - n + 1
    acc = np.zeros(width, dtype=np.uint64)
    for k in range(n):
        acc += ids[k:k + width] * _MULT[k]
    return np.unique(acc & np.uint64(0xFFFFFFFF))


def _crc32_each(strings: list[str]) -> np.ndarray:
    """crc32 of each string (stable across processes, unlike hash()), computed once per distinct
    string: a file repeats most of its tokens and lines."""
    crc = {u: zlib.crc32(u.encode()) for u in dict.fromkeys(strings)}
    return np.fromiter(map(crc.__getitem__, strings), dtype=np.uint64, count=len(strings))


_PERMUTATIONS: dict[int, object] = {}


def _minhash(num_perm: int, **kwargs):
    """A datasketch MinHash with the seed-1 permutations, drawn once per process (drawing them
    is most of the cost of a small file's signature)."""
    from datasketch import MinHash

    if num_perm not in _PERMUTATIONS:
        _PERMUTATIONS[num_perm] = MinHash(num_perm=num_perm, seed=1).permutations
    return MinHash(num_perm=num_perm, seed=1, permutations=_PERMUTATIONS[num_perm], scheme="affine32", **kwargs)


def signature(text: str, num_perm: int = NUM_PERM) -> np.ndarray:
    """The MinHash signature of a file's shingles (datasketch, fixed seed: reproducible)."""
    m = _minhash(num_perm, hashfunc=_identity)
    hashes = shingle_hashes(text)
    if hashes.size:
        m.update_batch(hashes.tolist())
    return m.hashvalues


def _identity(value: int) -> int:  # shingles arrive already hashed (module-level: picklable)
    return value


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures: the share of equal MinHash values."""
    return float(np.count_nonzero(a == b)) / len(a)


def similar_pairs(signatures: Sequence[np.ndarray], threshold: float) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose estimated Jaccard similarity is >= threshold."""
    from datasketch import MinHashLSH

    if not signatures:
        return []
    num_perm = len(signatures[0])
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sketches = [_minhash(num_perm, hashvalues=s) for s in signatures]
    with lsh.insertion_session() as session:
        for i, m in enumerate(sketches):
            session.insert(i, m, check_duplication=False)
    pairs = set()
    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            if j > i and jaccard(signatures[i], signatures[j]) >= threshold:
                pairs.add((i, j))
    return sorted(pairs)


def components(n: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Connected-component label of each of `n` items linked by `pairs` (the union-find closure)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not pairs:
        return np.arange(n)
    rows, cols = np.array(pairs, dtype=np.int64).T
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def near_duplicate_groups(keys: Sequence[str], signatures: Sequence[np.ndarray] | None, threshold: float,
                          passages: Sequence[np.ndarray] | None = None,
                          passage_max_files: int = 0) -> tuple[list[str], dict[str, int]]:
    """Each file's group key after merging near-duplicates (Jaccard >= threshold) and files that
    share a rare passage, and how many links of each kind were found.

    `keys` are the files' exact keys (equal for whitespace-variant copies); a merged group takes
    the smallest key of its members, so the result does not depend on the order of the files.
    """
    # exact copies share one key already: link them, and compare each distinct key once
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    distinct = list(first)
    jaccard_pairs = similar_pairs([signatures[first[k]] for k in distinct], threshold) if signatures else []
    passage_pairs = (shared_passage_pairs([passages[first[k]] for k in distinct], passage_max_files)
                     if passages and passage_max_files > 0 else [])
    pairs = sorted(set(jaccard_pairs) | set(passage_pairs))
    labels = components(len(distinct), pairs)
    group_of_label: dict[int, str] = {}
    for key, label in zip(distinct, labels.tolist()):
        group_of_label[label] = min(key, group_of_label.get(label, key))
    merged = {key: group_of_label[label] for key, label in zip(distinct, labels.tolist())}
    return [merged[k] for k in keys], {"jaccard_links": len(jaccard_pairs), "passage_links": len(passage_pairs)}


def drop_near_duplicates(indices: Sequence[int], keys: Sequence[str], groups: Sequence[str],
                         signatures: Sequence[np.ndarray] | None, threshold: float) -> tuple[list[int], dict]:
    """`indices` less the files that copy one kept before them, and the count per reason.

    In order, a file is kept unless its group already holds a kept file with the same exact key
    (`exact_duplicate`) or with estimated Jaccard >= threshold (`near_duplicate`). A file linked
    to the group only through a chain of others is compared with the kept files themselves, so
    it survives when it is not similar to any of them.
    """
    kept_in: dict[str, list[int]] = {}
    out: list[int] = []
    reasons = {"exact_duplicate": 0, "near_duplicate": 0}
    for i in indices:
        reps = kept_in.setdefault(groups[i], [])
        if any(keys[r] == keys[i] for r in reps):
            reasons["exact_duplicate"] += 1
        elif signatures is not None and any(jaccard(signatures[r], signatures[i]) >= threshold for r in reps):
            reasons["near_duplicate"] += 1
        else:
            reps.append(i)
            out.append(i)
    return out, reasons


# ------------------------------------------------------------------------------ shared passages
# Jaccard misses the commonest leak between files that are not near-copies as a whole: an `expect`
# and its `actual`, a JVM and a JS variant, share their long KDoc blocks and a few functions while
# the rest differs (Jaccard 0.1-0.3). A held-out completion taken from such a block is in train.
# So files that share a passage of PASSAGE_LINES consecutive non-blank lines are linked too, as
# long as the passage is rare (in at most `max_files` files): boilerplate that every file has
# (import lists, closing braces) would chain the whole corpus into one group.

PASSAGE_LINES = 3
PASSAGE_MIN_CHARS = 40  # non-space characters in the passage: `}` `}` `}` is not a passage


def passage_hashes(text: str) -> np.ndarray:
    """Distinct 64-bit hashes of every run of PASSAGE_LINES consecutive non-blank lines (each
    stripped) that holds at least PASSAGE_MIN_CHARS non-space characters."""
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if len(lines) < PASSAGE_LINES:
        return np.zeros(0, dtype=np.uint64)
    ids = _crc32_each(lines)
    sizes = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))  # stripped: ~non-space
    width = len(lines) - PASSAGE_LINES + 1
    acc = np.zeros(width, dtype=np.uint64)
    chars = np.zeros(width, dtype=np.int64)
    for k in range(PASSAGE_LINES):
        acc = acc * np.uint64(0x100000001B3) + ids[k:k + width]  # wraps mod 2**64, like FNV
        chars += sizes[k:k + width]
    return np.unique(acc[chars >= PASSAGE_MIN_CHARS])


def shared_passage_pairs(hashes: Sequence[np.ndarray], max_files: int) -> list[tuple[int, int]]:
    """Pairs (i, j) of files that share a passage held by 2..max_files files; each passage's
    files are linked as a chain (enough for connected components)."""
    if not hashes:
        return []
    owners = np.repeat(np.arange(len(hashes), dtype=np.int64), [len(h) for h in hashes])
    values = np.concatenate(hashes) if owners.size else np.zeros(0, dtype=np.uint64)
    order = np.argsort(values, kind="stable")
    values, owners = values[order], owners[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    counts = np.diff(np.r_[starts, values.size])
    per_entry = np.repeat(counts, counts)  # how many files hold each entry's passage
    # a passage's files are consecutive after the sort (a file holds each passage once): link
    # each to the next, for the passages held by 2..max_files files
    link = (values[1:] == values[:-1]) & (per_entry[:-1] <= max_files)
    pairs = np.unique(np.stack([owners[:-1][link], owners[1:][link]], axis=1), axis=0)
    return [(int(i), int(j)) for i, j in pairs.tolist()]
