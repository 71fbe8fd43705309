#!/usr/bin/env python
"""Why bench/preprocess.py times every run in a fresh process: in one long-lived process, each
tokenizer that has encoded leaves native memory and a slowdown behind for every later encode.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/tokenizer_drift.py      # ~2 min

A child process encodes the Kotlin corpus of bench/preprocess.py (run that first: it builds the
corpus and its tokenizer) with one kept tokenizer, times that (median of 3), then encodes it
`--tokenizers` more times, either each time with a freshly loaded tokenizer ("fresh") or with the
kept one ("reuse", the same work on one tokenizer), and times the kept tokenizer again. Reported:
the kept tokenizer's time after / before for each arm (medians over `--repeat` alternating pairs of
processes) and the resident memory each fresh tokenizer left behind. preprocess_data.py loads one
tokenizer per run, so a loop of runs in one process is the "fresh" arm, while a plain encode in the
same loop can reuse its tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run_all import result_line  # bench/ is sys.path[0] when a script in it runs

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "out" / "preprocess"


def child(arm: str, tokenizers: int) -> dict:
    from transformers import AutoTokenizer

    from codelora.cleaning import clean_text
    from codelora.preprocess import encoder_backend

    tok_dir = WORK / "tokenizer-kotlin-4096"
    texts = [t for t in (clean_text(json.loads(line)["file_text"]).text
                         for line in open(WORK / "raw-kotlin.jsonl", encoding="utf-8")) if t]
    wrapper = AutoTokenizer.from_pretrained(tok_dir)
    kept = encoder_backend(wrapper)

    def encode(backend) -> float:
        start = time.perf_counter()
        backend.encode_batch_fast(texts, add_special_tokens=False)
        return time.perf_counter() - start

    def rss_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    encode(kept)  # first-call costs
    before, rss_before = statistics.median(encode(kept) for _ in range(3)), rss_mb()
    for _ in range(tokenizers):
        encode(encoder_backend(AutoTokenizer.from_pretrained(tok_dir)) if arm == "fresh" else kept)
    after, rss_after = statistics.median(encode(kept) for _ in range(3)), rss_mb()
    return {"slowdown": after / before, "rss_mb_per_tokenizer": (rss_after - rss_before) / tokenizers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizers", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3, help="alternating pairs of child processes")
    parser.add_argument("--child", choices=["fresh", "reuse"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tokenizers)))
        return 0
    if not (WORK / "tokenizer-kotlin-4096" / "tokenizer.json").is_file():
        raise SystemExit("bench/tokenizer_drift.py: run bench/preprocess.py --corpora kotlin first "
                         "(it builds the corpus)")
    runs: dict[str, list[dict]] = {"fresh": [], "reuse": []}
    for _ in range(args.repeat):
        for arm in runs:
            cmd = [sys.executable, __file__, "--child", arm, "--tokenizers", str(args.tokenizers)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[arm].append(json.loads(out.strip().splitlines()[-1]))
    summary = {arm: {"slowdown_median": round(statistics.median(r["slowdown"] for r in rs), 3),
                     "slowdown_each": [round(r["slowdown"], 3) for r in rs],
                     "rss_mb_per_tokenizer": round(statistics.median(r["rss_mb_per_tokenizer"]
                                                                    for r in rs), 1)}
               for arm, rs in runs.items()}
    print(json.dumps(summary, indent=2))
    for arm in runs:
        print(result_line(f"tokenizer_drift_after_{args.tokenizers}_{arm}", summary[arm]["slowdown_median"]))
    print(result_line("tokenizer_rss_mb_per_fresh", summary["fresh"]["rss_mb_per_tokenizer"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
