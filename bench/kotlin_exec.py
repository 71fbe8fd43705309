"""Kotlin execution throughput: batched compilation vs one kotlinc call per problem, same programs.

    python bench/kotlin_exec.py                  # the 157 HumanEval-Kotlin problems
    python bench/kotlin_exec.py --limit 20       # the first 20 (a quick look)

The programs: each HumanEval-Kotlin prompt (MultiPL-E, data/benchmarks/humaneval_kt.jsonl) with a
canned body `TODO()` (it compiles against every signature and throws when run), plus the
published tests. So every problem is compiled and run exactly as a model's completion would be;
the verdicts are `failed` (NotImplementedError) where the tests are valid Kotlin and
`compile_error` where they are not, and both paths must give the same verdict per problem.

Baseline: one kotlinc call per program, `workers` programs at a time (what codelora did before
batching: a pool of min(4, cores) workers). Batched: codelora.kotlin.KotlinRunner (one kotlinc
call for all, then one sandboxed `java` per program, one per core). Reported: problems/s of each
and their ratio (target >= 5x).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from codelora.kotlin import KotlinRunner, kotlin_program, kotlinc_version, require_kotlin
from codelora.tasks.kotlin import shipped_data, stub_completion
from codelora.utils import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SKIP_EXIT = 77  # bench/run_all.py: skipped, with the reason on stderr
TARGET = 5.0


def programs(path: Path, limit: int | None) -> list[str]:
    records = list(read_jsonl(path))[:limit]
    return [kotlin_program(r["prompt"], stub_completion(r["prompt"]), r["tests"]) for r in records]


def one_compile_per_problem(kotlinc: str, progs: list[str], workers: int) -> list[str]:
    def one(program: str) -> str:
        return KotlinRunner(kotlinc, workers=1).execute([program])[0].status

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, progs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shipped_data("humaneval_kt_data"))
    parser.add_argument("--limit", type=int, default=None, help="first N problems only")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="baseline's parallel compiles")
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"bench/kotlin_exec.py: error: {args.data} not found", file=sys.stderr)
        return 2
    kotlinc = require_kotlin()
    progs = programs(args.data, args.limit)
    print(f"kotlinc {kotlinc_version(kotlinc)}, {len(progs)} programs, {os.cpu_count()} cores")

    start = time.perf_counter()
    batched = [r.status for r in KotlinRunner(kotlinc).execute(progs)]
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    single = one_compile_per_problem(kotlinc, progs, args.workers)
    single_s = time.perf_counter() - start

    differ = [i for i, (a, b) in enumerate(zip(batched, single)) if a != b]
    counts = {s: batched.count(s) for s in sorted(set(batched))}
    print(f"verdicts {counts}; batched {batched_s:.1f} s, one compile per problem ({args.workers} workers) "
          f"{single_s:.1f} s")
    if differ:
        print(f"verdicts differ for problems {differ}: {[(batched[i], single[i]) for i in differ]}")
    ratio = single_s / batched_s
    print(f"RESULT kotlin_exec_batched_problems_per_s={len(progs) / batched_s:.4g}")
    print(f"RESULT kotlin_exec_single_problems_per_s={len(progs) / single_s:.4g}")
    print(f"RESULT kotlin_exec_verdicts_equal={int(not differ)} target=1 ok={str(not differ).lower()}")
    print(f"RESULT kotlin_exec_batched_speedup={ratio:.4g} target=>={TARGET:g}x ok={str(ratio >= TARGET).lower()}")
    return 0 if not differ else 1


if __name__ == "__main__":
    raise SystemExit(main())
