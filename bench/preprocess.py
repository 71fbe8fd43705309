#!/usr/bin/env python
"""Preprocessing throughput against a raw batched fast-tokenizer encode, in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/preprocess.py            # demo corpus (~10 MB of stdlib)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/preprocess.py --repeat 3 --vocab-size 32000

Corpus: the offline demo corpus (the interpreter's standard library as a git repository, parsed by
parse_data.py); tokenizer: a byte-level BPE trained on it (no Hub here). Measured:

- baseline: `tokenizer(texts, add_special_tokens=False)` in batches of 1000 cleaned files — the
  floor for any pipeline that has to tokenize the text once;
- preprocess: the whole `run_preprocess` (read JSONL, clean, split, tokenize with offsets, cut
  windows, save_to_disk, stats), num_proc=1 and num_proc=2.

Throughput counts the same tokens (those of the cleaned files) for both, so the ratio is
baseline time / preprocess time. Target: ratio >= 0.5. Results also go to bench/out/preprocess.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codelora import demo  # noqa: E402
from codelora.cleaning import clean_text  # noqa: E402
from codelora.config import ParseConfig, PreprocessConfig  # noqa: E402
from codelora.preprocess import run_preprocess  # noqa: E402
from codelora.sources import run_parse  # noqa: E402
from codelora.utils import read_jsonl, setup_logging, write_json  # noqa: E402


def baseline(tokenizer, texts: list[str], batch: int = 1000) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), batch):
        tokens += sum(len(ids) for ids in tokenizer(texts[i:i + batch], add_special_tokens=False)["input_ids"])
    return tokens, time.perf_counter() - start


def timed_preprocess(raw: Path, tok_dir: Path, out: Path, num_proc: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run_preprocess(PreprocessConfig(input=str(raw), tokenizer=str(tok_dir), output=str(out), num_proc=num_proc))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench" / "out" / "preprocess"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=2, help="best of N for every measurement")
    args = parser.parse_args()
    setup_logging(False)
    work = Path(args.work)
    repo = demo.build_stdlib_repo(work / "stdlib-repo")
    tok_dir = work / f"tokenizer-{args.vocab_size}"
    tokenizer = demo.ensure_demo_tokenizer(tok_dir, repo, vocab_size=args.vocab_size)
    raw = work / "raw.jsonl"
    run_parse(ParseConfig(repo=[repo.resolve().as_uri()], extensions=[".py"], output=str(raw)))
    rows = list(read_jsonl(raw))
    corpus_bytes = sum(len(r["file_text"].encode()) for r in rows)
    texts = [t for t in (clean_text(r["file_text"]).text for r in rows) if t is not None]

    base = [baseline(tokenizer, texts) for _ in range(args.repeat)]
    tokens, t_base = base[0][0], min(t for _, t in base)
    t1 = min(timed_preprocess(raw, tok_dir, work / "ds1", 1) for _ in range(args.repeat))
    t2 = min(timed_preprocess(raw, tok_dir, work / "ds2", 2) for _ in range(args.repeat))
    result = {
        "corpus_mb": round(corpus_bytes / 1e6, 2), "files": len(rows), "cleaned_files": len(texts),
        "tokens": tokens, "vocab_size": len(tokenizer), "cpus": os.cpu_count(), "repeat": args.repeat,
        "baseline_s": round(t_base, 2), "baseline_tok_per_s": round(tokens / t_base),
        "preprocess_np1_s": round(t1, 2), "preprocess_np1_tok_per_s": round(tokens / t1),
        "preprocess_np2_s": round(t2, 2), "preprocess_np2_tok_per_s": round(tokens / t2),
        "ratio_np1_vs_baseline": round(t_base / t1, 3), "ratio_np2_vs_baseline": round(t_base / t2, 3),
        "speedup_np2_over_np1": round(t1 / t2, 3),
    }
    write_json(ROOT / "bench" / "out" / "preprocess.json", result)
    print(json.dumps(result, indent=2))
    print(f"preprocess {result['preprocess_np1_tok_per_s']:,} tok/s vs raw encode "
          f"{result['baseline_tok_per_s']:,} tok/s = {result['ratio_np1_vs_baseline']}x (target >= 0.5x); "
          f"num_proc=2 speedup {result['speedup_np2_over_np1']}x")
    # Lines for bench/run_all.py (its RESULT convention).
    ratio, speedup = result["ratio_np1_vs_baseline"], result["speedup_np2_over_np1"]
    print(f"RESULT preprocess_vs_raw_encode={ratio:.3g} target=>=0.5x ok={str(ratio >= 0.5).lower()}")
    print(f"RESULT preprocess_num_proc2_speedup={speedup:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
