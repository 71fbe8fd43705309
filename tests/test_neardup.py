"""Near-duplicate grouping (MinHash + LSH, shared passages, union closure) and in-train dedup."""

from __future__ import annotations

import random

import numpy as np

from codelora.neardup import (
    batches,
    components,
    drop_near_duplicates,
    jaccard,
    minhash,
    near_duplicate_groups,
    passage_hash_sets,
    passage_hashes,
    shared_passage_pairs,
    shingle_hash_sets,
    shingle_hashes,
    signature,
    signatures,
    similar_pairs,
)


def kotlin_source(seed: int, functions: int = 30) -> str:
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta"]
    body = []
    for j in range(functions):
        a, b = rnd.sample(words, 2)
        body.append(f"    fun {a}{seed}x{j}({b}: Int): Int {{\n        val {a} = {b} * {rnd.randint(2, 999)}\n"
                    f"        return {a} + {rnd.randint(0, 99)}\n    }}\n")
    return f"package p{seed}\n\nclass C{seed} {{\n" + "\n".join(body) + "}\n"


def mutate(text: str, share: float, seed: int) -> str:
    """Replace a share of the lines with new ones (a near-copy)."""
    rnd = random.Random(seed)
    lines = text.split("\n")
    for i in rnd.sample(range(len(lines)), int(len(lines) * share)):
        lines[i] = f"    val changed{seed}_{i} = {rnd.randint(0, 10**6)}"
    return "\n".join(lines)


def test_minhash_estimates_jaccard_of_shingles():
    a = kotlin_source(1)
    b = mutate(a, 0.1, 7)
    sa, sb = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    exact = len(sa & sb) / len(sa | sb)
    assert abs(jaccard(signature(a), signature(b)) - exact) < 0.15  # 128 permutations: s.e. <= 0.044
    assert jaccard(signature(a), signature(a)) == 1.0
    assert jaccard(signature(a), signature(kotlin_source(2))) < 0.2
    # layout and punctuation do not change the shingles
    assert np.array_equal(shingle_hashes(a), shingle_hashes(a.replace("    ", "\t").replace("(", " ( ")))


def test_minhash_equals_datasketch_value_for_value():
    """The numpy signature is datasketch 2's affine32 MinHash of the same hashes, exactly."""
    from datasketch import MinHash

    for text in (kotlin_source(3), "one two three", "", "x " * 20000):
        hashes = shingle_hashes(text)
        reference = MinHash(num_perm=128, seed=1, scheme="affine32", hashfunc=int)
        reference.update_batch(hashes.tolist())
        assert np.array_equal(minhash(hashes), reference.hashvalues)
        assert np.array_equal(signature(text), reference.hashvalues)


def test_similar_pairs_is_datasketch_lsh_then_the_threshold():
    """The numpy banding finds exactly the pairs datasketch's MinHashLSH query finds, checked
    against the threshold, on a corpus with near-copies, chains and a cluster of many twins."""
    from datasketch import MinHash, MinHashLSH

    bases = [kotlin_source(i, 20) for i in range(30)]
    texts = bases + [mutate(bases[i % 6], 0.03 * (i % 10), i) for i in range(60)]  # 6 clusters of 11
    sigs = [signature(t) for t in texts]
    for threshold in (0.3, 0.5, 0.8):
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        sketches = [MinHash(num_perm=128, seed=1, scheme="affine32", hashvalues=s) for s in sigs]
        for i, m in enumerate(sketches):
            lsh.insert(i, m)
        expected = sorted({(i, j) for i, m in enumerate(sketches) for j in lsh.query(m)
                           if j > i and jaccard(sigs[i], sigs[j]) >= threshold})
        assert similar_pairs(sigs, threshold) == expected and len(expected) >= 10


def test_lsh_bands_are_datasketchs():
    """The kept answer for the default setting, and the computed one for others, are MinHashLSH's."""
    from datasketch import MinHashLSH

    from codelora.config import PreprocessConfig
    from codelora.neardup import KNOWN_BANDS, NUM_PERM, lsh_bands

    assert (PreprocessConfig().near_dup_threshold, NUM_PERM) in KNOWN_BANDS  # the default is kept
    for threshold, num_perm in [*KNOWN_BANDS, (0.3, 128), (0.85, 64)]:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        assert lsh_bands(threshold, num_perm) == (lsh.b, lsh.r)


def test_word_and_line_hashes_ignore_what_they_should():
    a = kotlin_source(4)
    # words: non-ASCII text is word bytes; digits/underscores too
    assert shingle_hashes("été à la plage ok") .size == 1
    assert not np.array_equal(shingle_hashes("a_b c d e f"), shingle_hashes("a b c d e f"))
    # lines: indentation and trailing blanks do not change a passage; blank lines do not count
    reindented = "\n".join("\t" + ln.strip() + "  " if ln.strip() else "" for ln in a.split("\n"))
    assert np.array_equal(passage_hashes(a), passage_hashes(reindented))
    assert np.array_equal(passage_hashes(a), passage_hashes(a.replace("\n", "\n\n")))
    assert not np.array_equal(passage_hashes(a), passage_hashes(a.replace("return", "yield")))


def test_a_batch_hashes_each_file_as_alone():
    """Files hashed together (joined bytes) get what each gets alone: no word, shingle or
    passage spans two files, whatever the files' ends look like."""
    texts = [kotlin_source(5), "", "one two", "   \n\n", "a b c d e f g", "naïve → café ok\n" * 9,
             kotlin_source(6, 3).rstrip("\n"), "x", kotlin_source(5), "a b c d e f " * 50]
    alone = [(shingle_hash_sets([t])[0], passage_hash_sets([t])[0], signatures([t])[0]) for t in texts]
    together = zip(shingle_hash_sets(texts), passage_hash_sets(texts), signatures(texts))
    for (sh, ps, sig), (sh2, ps2, sig2) in zip(alone, together, strict=True):
        assert np.array_equal(sh, sh2) and np.array_equal(ps, ps2) and np.array_equal(sig, sig2)
    assert [len(sh) for sh, _, _ in alone][:5] == [len(alone[0][0]), 0, 1, 0, 3]


def test_batches_are_runs_of_a_few_bytes_in_order():
    assert batches(["aaa", "bbb", "c" * 10, "d", "e"], max_bytes=5) == [["aaa"], ["bbb"], ["c" * 10], ["d", "e"]]
    assert batches([]) == [] and batches(["", ""], max_bytes=1) == [["", ""]]


def test_similar_pairs_finds_near_copies_only():
    bases = [kotlin_source(i) for i in range(20)]
    texts = bases + [mutate(bases[3], 0.1, 1), mutate(bases[5], 0.1, 2), mutate(bases[8], 0.6, 3)]
    pairs = similar_pairs([signature(t) for t in texts], threshold=0.5)
    assert pairs == [(3, 20), (5, 21)]  # the 60% rewrite of file 8 is no longer a near-copy


def test_groups_are_closed_under_union_and_order_free():
    a = kotlin_source(1)
    b = mutate(a, 0.03, 1)  # a ~ b (Jaccard ~0.86)
    c = mutate(b, 0.03, 2)  # b ~ c (~0.89)
    d = mutate(c, 0.03, 3)  # c ~ d (~0.88), while a and d are below the threshold (~0.69)
    others = [kotlin_source(i) for i in range(10, 16)]
    texts = [a, b, c, d, *others]
    keys = [f"k{i}" for i in range(len(texts))]
    assert jaccard(signature(a), signature(d)) < 0.75
    groups, links = near_duplicate_groups(keys, [signature(t) for t in texts], 0.75)
    assert len(set(groups[:4])) == 1 and len(set(groups)) == 7 and links["jaccard_links"] >= 3
    order = list(reversed(range(len(texts))))
    again, _ = near_duplicate_groups([keys[i] for i in order], [signature(texts[i]) for i in order], 0.75)
    assert dict(zip([keys[i] for i in order], again)) == dict(zip(keys, groups))
    assert components(4, [(0, 1), (2, 3), (1, 2)]).tolist() == [0, 0, 0, 0]


def test_shared_rare_passages_link_files_but_boilerplate_does_not():
    doc = ("    /**\n     * Compares this value with the specified value for order.\n"
           "     * Returns zero if this value is equal to the specified other value.\n     */\n")
    boiler = "import kotlin.collections.List\nimport kotlin.collections.Map\nimport kotlin.text.Regex\n"
    texts = [boiler + kotlin_source(i, 8) for i in range(8)]
    texts[2] = texts[2].replace("class C2 {\n", "class C2 {\n" + doc)
    texts[6] = texts[6].replace("class C6 {\n", "class C6 {\n" + doc)
    hashes = [passage_hashes(t) for t in texts]
    # the import block is in all 8 files (> max_files): boilerplate, no link; the KDoc is in 2
    assert shared_passage_pairs(hashes, max_files=5) == [(2, 6)]
    assert components(8, shared_passage_pairs(hashes, max_files=8)).tolist() == [0] * 8  # chains all
    # `}` lines are never a passage on their own
    assert passage_hashes("}\n}\n}\n}\n").size == 0


def test_drop_near_duplicates_inside_a_split_counts_reasons():
    a = kotlin_source(1)
    texts = [a, a, mutate(a, 0.05, 1), kotlin_source(2)]
    keys = ["k0", "k0", "k2", "k3"]
    groups = ["g", "g", "g", "k3"]
    sigs = [signature(t) for t in texts]
    kept, reasons = drop_near_duplicates([0, 1, 2, 3], keys, groups, sigs, 0.5)
    assert kept == [0, 3] and reasons == {"exact_duplicate": 1, "near_duplicate": 1}
    kept, reasons = drop_near_duplicates([0, 1, 2, 3], keys, groups, None, 1.0)
    assert kept == [0, 2, 3] and reasons == {"exact_duplicate": 1, "near_duplicate": 0}
