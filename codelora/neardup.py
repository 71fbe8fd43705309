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

from collections.abc import Sequence

import numpy as np

NUM_PERM = 128  # signature length: the Jaccard estimate's standard error is <= 0.5/sqrt(128) = 0.044
SHINGLE = 5  # tokens per shingle, as BigCode's near-dedup
# Distinct odd multipliers, one per shingle position: hash(shingle) = sum(mult[k] * hash(token k)),
# mod 2**32, vectorised with numpy instead of one Python hash call per shingle.
_MULT = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1], dtype=np.uint64)

# The hashing below works on a whole batch of files at once, on their UTF-8 bytes joined by "\n",
# with a few numpy passes and no Python call per file, token or line: per-token Python
# (re.findall, zlib.crc32 per distinct token, datasketch's per-value hashfunc) and then per-file
# numpy calls were 21% and 17% of preprocessing on real Kotlin (issue 17, bench/preprocess.py).
# A word is a run of [A-Za-z0-9_] and non-ASCII bytes: `\w+` on ASCII text; on other text every
# non-ASCII character counts as a word character (non-ASCII punctuation in comments joins words).
_WORD_BYTE = np.zeros(256, dtype=bool)
for _lo, _hi in ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("a"), ord("z")), (0x80, 0xFF)):
    _WORD_BYTE[_lo:_hi + 1] = True
_WORD_BYTE[ord("_")] = True
# what str.strip() strips, in ASCII
_SPACE_BYTE = np.array([b < 128 and chr(b).isspace() for b in range(256)])
# Polynomial span hashes mod 2**64: span = sum((byte_k + 1) * P**k); any odd P is invertible.
_P = 0x9E3779B97F4A7C15
_POWERS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


class Batch:
    """Texts as one array of their UTF-8 bytes joined by "\n" (so no word or line spans two
    texts), with the prefix hashes every span hash reads, made once for words and lines. Its
    arrays take ~40 bytes per byte of text: callers keep a batch to a few MB (`batches`)."""

    def __init__(self, texts: Sequence[str]):
        encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        self.count = len(texts)
        self.data = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)
        self.text_starts = np.r_[0, np.cumsum(sizes + 1)]  # where each text starts, then the end + 1
        self._prefix: np.ndarray | None = None

    def owner(self, positions: np.ndarray) -> np.ndarray:
        """The text each byte position belongs to; `positions` non-decreasing (one search per text,
        not per position: 2.7x faster on real Kotlin's word starts)."""
        per_text = np.diff(np.searchsorted(positions, self.text_starts[:self.count + 1]))
        return np.repeat(np.arange(self.count), per_text)

    def span_hashes(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """A 64-bit hash of each byte span data[s:e]: equal spans hash equal in any batch and process."""
        powers, inverse = _powers(self.data.size)
        if self._prefix is None:
            self._prefix = np.zeros(self.data.size + 1, dtype=np.uint64)
            np.cumsum((self.data + np.uint64(1)) * powers[:self.data.size], out=self._prefix[1:])
        return _fmix64((self._prefix[ends] - self._prefix[starts]) * inverse[starts])


def batches(texts: Sequence[str], max_bytes: int = 1 << 19) -> list[list[str]]:
    """`texts` cut, in order, into runs of at most `max_bytes` characters (a longer text alone).
    A Batch takes ~40 bytes per byte of text, so runs stay small: on the 6 MB of real Kotlin
    (bench/preprocess.py's corpus), 256-512 KB runs hash in 0.125 s, 4 MB runs in 0.16 s, and
    0.37 s the first time in a process (their temporaries are fresh pages to fault in)."""
    runs: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if runs[-1] and size + len(text) > max_bytes:
            runs.append([])
            size = 0
        runs[-1].append(text)
        size += len(text)
    return runs if runs[0] else []


def _batch(texts: Sequence[str] | Batch) -> Batch:
    return texts if isinstance(texts, Batch) else Batch(texts)


_POWERS_KEPT = 1 << 23  # bytes of a batch up to which the powers stay cached (2 x 64 MiB)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(P**k, P**-k) mod 2**64 for k <= n, grown by doubling and kept per process up to
    _POWERS_KEPT (both replaced in one assignment: a caller in another thread never reads a
    mismatched pair)."""
    current = _POWERS.get("pair")
    if current is None or current[0].size <= n:
        size = 1 << max(12, n.bit_length())
        pair = []
        for base in (_P, pow(_P, -1, 1 << 64)):
            powers = np.full(size, base, dtype=np.uint64)
            powers[0] = 1
            pair.append(np.cumprod(powers))  # wraps mod 2**64, as intended
        current = (pair[0], pair[1])
        if size <= _POWERS_KEPT:
            _POWERS["pair"] = current
    return current


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (Appleby; public domain): spreads every input bit."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _per_file(owners: np.ndarray, values: np.ndarray, n_files: int) -> list[np.ndarray]:
    """`values` (sorted by owner) cut into one array per file."""
    return np.split(values, np.searchsorted(owners, np.arange(1, n_files)))


def _distinct_per_file(owners: np.ndarray, values: np.ndarray, n_files: int) -> list[np.ndarray]:
    """The distinct values of each file, sorted (`owners` is non-decreasing)."""
    if values.size and int(values.max()) < 1 << 32:  # pack (owner, value): one sort, 3x a lexsort
        packed = np.sort((owners.astype(np.uint64) << np.uint64(32)) | values)
        owners, values = (packed >> np.uint64(32)).astype(np.int64), packed & np.uint64(0xFFFFFFFF)
    else:
        order = np.lexsort((values, owners))
        owners, values = owners[order], values[order]
    new = np.ones(owners.size, dtype=bool)
    new[1:] = (owners[1:] != owners[:-1]) | (values[1:] != values[:-1])
    return _per_file(owners[new], values[new], n_files)


def shingle_hash_sets(texts: Sequence[str] | Batch) -> list[np.ndarray]:
    """Per text, the distinct 32-bit hashes of its word 5-grams (one shingle of all its words for
    a text of fewer than 5 words, none for a text without words)."""
    batch = _batch(texts)
    return _distinct_per_file(*_shingles(batch), batch.count)


def _shingles(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """(owner, 32-bit hash) of every shingle of the batch, repeats included, in text order (so
    `owner` is non-decreasing)."""
    edges = np.flatnonzero(np.diff(_WORD_BYTE[batch.data], prepend=False, append=False))
    ids = batch.span_hashes(edges[0::2], edges[1::2])
    owner = batch.owner(edges[0::2])
    padded = np.r_[ids, np.zeros(SHINGLE - 1, dtype=np.uint64)]
    acc = np.zeros(ids.size, dtype=np.uint64)
    for k in range(SHINGLE):
        acc += padded[k:k + ids.size] * _MULT[k]
    last = np.arange(ids.size) + SHINGLE - 1  # the word that ends the shingle starting here
    whole = (last < ids.size) & (owner[np.minimum(last, ids.size - 1)] == owner)
    counts = np.bincount(owner, minlength=batch.count)
    for f in np.flatnonzero((counts > 0) & (counts < SHINGLE)):  # short texts: one shorter shingle
        first = np.searchsorted(owner, f)
        acc[first] = (ids[first:first + counts[f]] * _MULT[:counts[f]]).sum()
        whole[first] = True
    return owner[whole], acc[whole] & np.uint64(0xFFFFFFFF)


def shingle_hashes(text: str) -> np.ndarray:
    """Distinct 32-bit hashes of the word 5-grams of `text` (one shingle for a shorter file)."""
    return shingle_hash_sets([text])[0]


_PERMUTATIONS: dict[int, np.ndarray] = {}


def permutations(num_perm: int) -> np.ndarray:
    """datasketch's seed-1 affine32 permutations (a 2 x num_perm uint32 array), drawn once."""
    from datasketch import MinHash

    if num_perm not in _PERMUTATIONS:
        _PERMUTATIONS[num_perm] = MinHash(num_perm=num_perm, seed=1, scheme="affine32").permutations
    return _PERMUTATIONS[num_perm]


def minhashes(hash_sets: Sequence[np.ndarray], num_perm: int = NUM_PERM) -> np.ndarray:
    """One MinHash signature (a row, uint32) per set of 32-bit hashes: datasketch 2's "affine32"
    scheme (`MinHash(seed=1, scheme="affine32").update_batch`, equal value for value,
    tests/test_neardup.py): MurmurHash3's 32-bit finaliser, then h -> a*h + b mod 2**32, the
    minimum per permutation. Computed for all sets at once, one permutation at a time over
    contiguous arrays (8x faster than datasketch's (hashes x num_perm) matrix, and small)."""
    sizes = np.fromiter(map(len, hash_sets), dtype=np.int64, count=len(hash_sets))
    return _minhash_runs(np.concatenate(hash_sets) if hash_sets else np.zeros(0, np.uint32), sizes, num_perm)


def _minhash_runs(values: np.ndarray, sizes: np.ndarray, num_perm: int) -> np.ndarray:
    """`minhashes` of the consecutive runs of `values` of lengths `sizes`. A run may repeat a
    value: the minimum over a multiset is the minimum over its set."""
    a, b = permutations(num_perm)
    out = np.full((sizes.size, num_perm), 0xFFFFFFFF, dtype=np.uint32)
    if not sizes.sum():
        return out
    h = values.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    filled = np.flatnonzero(sizes)
    starts = (np.cumsum(sizes) - sizes)[filled]
    permuted = np.empty_like(h)
    for j in range(num_perm):
        np.multiply(h, a[j], out=permuted)
        permuted += b[j]
        out[filled, j] = np.minimum.reduceat(permuted, starts)
    return out


def minhash(hashes: np.ndarray, num_perm: int = NUM_PERM) -> np.ndarray:
    """The MinHash signature of one set of 32-bit hashes (see `minhashes`)."""
    return minhashes([hashes], num_perm)[0]


def signatures(texts: Sequence[str] | Batch, num_perm: int = NUM_PERM) -> np.ndarray:
    """The MinHash signatures of the texts' shingles, one row per text (fixed seed: reproducible):
    `minhashes(shingle_hash_sets(texts))`, without making the sets (their sort and split were a
    quarter of the time: 0.099 vs 0.075 s on real Kotlin, the same signatures)."""
    batch = _batch(texts)
    owner, values = _shingles(batch)
    return _minhash_runs(values, np.bincount(owner, minlength=batch.count), num_perm)


def signature(text: str, num_perm: int = NUM_PERM) -> np.ndarray:
    """The MinHash signature of a file's shingles (fixed seed: reproducible)."""
    return signatures([text], num_perm)[0]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures: the share of equal MinHash values."""
    return float(np.count_nonzero(a == b)) / len(a)


def _pairs_within(members: np.ndarray, block: int = 1 << 16):
    """Every pair (members[x], members[y]), x < y, as two arrays per block of <= ~`block` pairs."""
    m = members.size
    step = max(1, block // m)
    for r0 in range(0, m - 1, step):
        rows = np.arange(r0, min(r0 + step, m - 1))
        counts = m - rows - 1
        offsets = np.cumsum(counts) - counts
        yield (members[np.repeat(rows, counts)],
               members[np.arange(counts.sum()) + np.repeat(rows + 1 - offsets, counts)])


# datasketch's band count and width (MinHashLSH(threshold, num_perm).b, .r) for the default
# setting: datasketch picks them by integrating the false-positive and false-negative areas for
# every (b, r) with scipy (1,290 integrals, ~25 ms: 2% of preprocessing on real Kotlin), so the
# default's answer is kept here; tests/test_neardup.py checks it against datasketch.
KNOWN_BANDS = {(0.5, 128): (25, 5)}


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH uses for this threshold."""
    if (threshold, num_perm) in KNOWN_BANDS:
        return KNOWN_BANDS[threshold, num_perm]
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def similar_pairs(signatures: Sequence[np.ndarray], threshold: float) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose estimated Jaccard similarity is >= threshold.

    LSH banding (Mining of Massive Datasets, 3.4): files that agree on all rows of some band are
    candidates, then each candidate pair is checked with the full signatures. The band count and
    width are datasketch's (MinHashLSH's choice for this threshold, weighing false positives and
    negatives equally); the banding itself is a sort per band instead of datasketch's per-key
    Python storage, which cost ~2x the rest of the grouping on real Kotlin."""
    if len(signatures) < 2:
        return []
    sigs = np.stack(signatures)
    n, num_perm = sigs.shape
    candidates = []
    bands, rows = lsh_bands(threshold, num_perm)
    for start in range(0, bands * rows, rows):  # datasketch's hashranges
        band = sigs[:, start:start + rows]
        order = np.lexsort(band.T[::-1])
        ordered = band[order]
        same = np.r_[False, (ordered[1:] == ordered[:-1]).all(axis=1), False]
        run_edges = np.flatnonzero(np.diff(same.astype(np.int8)))  # [first+1, last+1) of each run
        for lo, hi in zip(run_edges[0::2], run_edges[1::2]):
            for i, j in _pairs_within(np.sort(order[lo:hi + 1])):
                candidates.append(i * n + j)
    if not candidates:
        return []
    codes = np.unique(np.concatenate(candidates))
    found = []
    for k in range(0, codes.size, 1 << 14):
        i, j = np.divmod(codes[k:k + (1 << 14)], n)
        agree = np.count_nonzero(sigs[i] == sigs[j], axis=1)
        keep = agree / num_perm >= threshold
        found += zip(i[keep].tolist(), j[keep].tolist())
    return found


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


def passage_hash_sets(texts: Sequence[str] | Batch) -> list[np.ndarray]:
    """Per text, the distinct 64-bit hashes of every run of PASSAGE_LINES consecutive non-blank
    lines (each stripped of ASCII whitespace) that holds at least PASSAGE_MIN_CHARS bytes once
    stripped."""
    batch = _batch(texts)
    data = batch.data
    newlines = np.flatnonzero(data == 10)
    line_starts, line_ends = np.r_[0, newlines + 1], np.r_[newlines, data.size]
    solid = np.flatnonzero(~_SPACE_BYTE[data])  # positions of non-space bytes
    first, past = np.searchsorted(solid, line_starts), np.searchsorted(solid, line_ends)
    kept = first < past  # the line holds a non-space byte
    starts, ends = solid[first[kept]], solid[past[kept] - 1] + 1
    ids, sizes, owner = batch.span_hashes(starts, ends), ends - starts, batch.owner(starts)
    width = max(0, ids.size - PASSAGE_LINES + 1)
    acc = np.zeros(width, dtype=np.uint64)
    chars = np.zeros(width, dtype=np.int64)
    for k in range(PASSAGE_LINES):
        acc = acc * np.uint64(0x100000001B3) + ids[k:k + width]  # wraps mod 2**64, like FNV
        chars += sizes[k:k + width]
    keep = (chars >= PASSAGE_MIN_CHARS) & (owner[:width] == owner[PASSAGE_LINES - 1:])  # in one file
    return _distinct_per_file(owner[:width][keep], acc[keep], batch.count)


def passage_hashes(text: str) -> np.ndarray:
    """The passage hashes of one text (see `passage_hash_sets`)."""
    return passage_hash_sets([text])[0]


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
    i, j = np.divmod(np.unique(owners[:-1][link] * len(hashes) + owners[1:][link]), len(hashes))
    return list(zip(i.tolist(), j.tolist()))
