#!/usr/bin/env python
"""Near-duplicate grouping throughput and memory on >= 20k Kotlin files, against cleaning them.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dedup.py                 # 20,000 files
    HF_HUB_OFFLINE=1 .venv/bin/python bench/dedup.py --files 54000   # JetBrains/kotlin's size

The corpus: the real Kotlin sources of the `-sources.jar`s that `make kotlin` installs
(.tools/kotlinc/lib: stdlib, stdlib-js, reflect, kotlin-test ...), plus synthetic files made by
mutating them until there are `--files`: a third light copies (a few lines changed: near-duplicates
that must be grouped with their original), the rest heavy rewrites (identifiers renamed, lines
dropped and shuffled). Measured, in this process:

- baseline: what preprocess does per file anyway (clean_text + the whitespace-normalised hash);
- grouping: MinHash signatures + passage hashes (in batches of files), then LSH, passage index
  and connected components over all files (codelora.neardup, as preprocess_data.py runs it);
- peak RSS of the process after grouping (ru_maxrss), and the recall of light copies (grouped
  with their original).

RESULT lines: dedup_files_per_s, dedup_vs_clean (grouping time / baseline time), dedup_peak_rss_mb,
dedup_light_copy_recall (target >= 0.95).
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from run_all import result_line  # noqa: E402  (bench/ is sys.path[0] when a script in it runs)
from codelora.cleaning import clean_text, normalize_whitespace  # noqa: E402
from codelora.neardup import (Batch, batches, near_duplicate_groups, passage_hash_sets,  # noqa: E402
                              signatures)
from codelora.windows import group_key  # noqa: E402

_IDENT = re.compile(r"\b[a-z][A-Za-z0-9]{3,}\b")


def real_kotlin_files(lib: Path) -> list[str]:
    texts = []
    for jar in sorted(lib.glob("*-sources.jar")):
        with zipfile.ZipFile(jar) as zf:
            texts += [zf.read(n).decode("utf-8", "replace") for n in zf.namelist() if n.endswith(".kt")]
    return texts


def light_copy(text: str, rnd: random.Random) -> str:
    """A near-duplicate: about 3% of the lines replaced."""
    lines = text.split("\n")
    for i in rnd.sample(range(len(lines)), max(1, len(lines) // 33)):
        lines[i] = f"    val tweak{rnd.randrange(10**6)} = {rnd.randrange(10**6)}"
    return "\n".join(lines)


def heavy_rewrite(text: str, rnd: random.Random) -> str:
    """A different file: identifiers renamed, a third of the lines dropped, blocks shuffled."""
    suffix = f"X{rnd.randrange(10**6)}"
    text = _IDENT.sub(lambda m: m.group(0) + suffix if rnd.random() < 0.7 else m.group(0), text)
    lines = [ln for ln in text.split("\n") if rnd.random() > 0.33]
    blocks = [lines[i:i + 12] for i in range(0, len(lines), 12)]
    rnd.shuffle(blocks)
    return "\n".join(ln for b in blocks for ln in b)


def build_corpus(real: list[str], total: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    """`total` texts (the real ones first) and the (original, copy) index pairs of light copies."""
    rnd = random.Random(seed)
    texts, light = list(real), []
    while len(texts) < total:
        src = rnd.randrange(len(real))
        if rnd.random() < 1 / 3:
            light.append((src, len(texts)))
            texts.append(light_copy(real[src], rnd))
        else:
            texts.append(heavy_rewrite(real[src], rnd))
    return texts[:total], light


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--passage-max-files", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lib = ROOT / ".tools" / "kotlinc" / "lib"
    real = real_kotlin_files(lib)
    if not real:
        print(f"bench/dedup.py: no *-sources.jar in {lib} (run `make kotlin`)", file=sys.stderr)
        return 77
    texts, light = build_corpus(real, args.files, args.seed)
    mb = sum(map(len, texts)) / 1e6
    print(f"corpus: {len(texts)} files ({len(real)} real, {len(light)} light copies), {mb:.1f} MB")

    t0 = time.perf_counter()
    cleaned = [clean_text(t).text or t for t in texts]
    keys = [group_key(normalize_whitespace(t)) for t in cleaned]
    baseline = time.perf_counter() - t0

    t0 = time.perf_counter()
    sigs, passages = [], []
    for i in range(0, len(cleaned), 256):  # batches of files, as preprocess_data.py's cleaning map
        for run in batches(cleaned[i:i + 256]):
            joined = Batch(run)  # one joined byte array and prefix pass for both hashes
            sigs += list(signatures(joined))
            passages += passage_hash_sets(joined)
    t_sketch = time.perf_counter() - t0
    groups, links = near_duplicate_groups(keys, sigs, args.threshold, passages, args.passage_max_files)
    grouping = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    recall = sum(groups[a] == groups[b] for a, b in light) / max(1, len(light))
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    print(f"baseline (clean + exact key): {baseline:.1f} s; grouping {grouping:.1f} s "
          f"(signatures + passages {t_sketch:.1f} s, LSH + components {grouping - t_sketch:.1f} s); "
          f"links {links}; {len(sizes)} groups, largest {max(sizes.values())}; peak RSS {peak_mb:.0f} MB")
    print(result_line("dedup_files_per_s", len(texts) / grouping))
    print(result_line("dedup_vs_clean", grouping / baseline))
    print(result_line("dedup_peak_rss_mb", peak_mb))
    print(result_line("dedup_light_copy_recall", recall, target=">=0.95", ok=recall >= 0.95))
    return 0


if __name__ == "__main__":
    sys.exit(main())
