#!/usr/bin/env python
"""The cost of isolating a generated program: compile-and-run under bubblewrap vs the same without it.

    .venv/bin/python bench/sandbox_cost.py                    # 3 McEval reference programs, 2 rounds
    .venv/bin/python bench/sandbox_cost.py --programs 5 --rounds 3

Each McEval Kotlin reference solution (data/benchmarks/mceval_kotlin.jsonl) is compiled with kotlinc
and run with java by `run_kotlin`, once sandboxed (bwrap: namespaces, mounts, uid 65534) and once
with `unsafe_no_sandbox=True` (the same rlimits through prlimit, no bwrap), alternating which goes
first so that drift in the machine's load hits both alike. Measured:

- overhead: median over (program, round) pairs of (sandboxed - unsandboxed) seconds, divided by
  the median unsandboxed compile-and-run time. Target: < 0.10 (isolation adds under 10 %).
- bwrap_start_ms: the fixed cost alone, `true` run sandboxed vs unsandboxed (median of 20 each);
  the compile-and-run pairs are noisy on a shared machine, this one is not.

Needs kotlinc + java (`make kotlin`) and working bwrap; exits 77 (skipped) where either is missing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from run_all import SKIP_EXIT, result_line  # noqa: E402  (bench/ is sys.path[0] when a script in it runs)
from codelora.kotlin import kotlin_available, kotlin_program, run_kotlin  # noqa: E402
from codelora.tasks.kotlin import shipped_data  # noqa: E402
from codelora.sandbox import isolation_error, run_sandboxed  # noqa: E402
from codelora.utils import read_jsonl, write_json  # noqa: E402

DATA = shipped_data("mceval_data")
TARGET = 0.10


def reference_programs(path: Path, n: int) -> list[str]:
    return [kotlin_program(r["prompt"], r["canonical_solution"], r["test"]) for r in list(read_jsonl(path))[:n]]


def timed_run(program: str, unsafe: bool) -> float:
    start = time.perf_counter()
    result = run_kotlin(program, timeout=300, unsafe_no_sandbox=unsafe)
    if not result.passed:
        raise SystemExit(f"sandbox_cost: a reference program did not pass ({'un' if unsafe else ''}sandboxed): "
                         f"{result.status} {result.detail}")
    return time.perf_counter() - start


def start_cost_ms(repeats: int = 20) -> float:
    """Median extra milliseconds of starting `true` under bwrap rather than directly."""
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="codelora-bench-") as tmp:
        for _ in range(repeats):
            for unsafe in (False, True):
                start = time.perf_counter()
                run_sandboxed(["true"], Path(tmp), timeout=30, unsafe_no_sandbox=unsafe)
                times[unsafe].append(time.perf_counter() - start)
    return 1000 * (statistics.median(times[False]) - statistics.median(times[True]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="McEval Kotlin JSONL")
    parser.add_argument("--programs", type=int, default=3, help="reference programs to time")
    parser.add_argument("--rounds", type=int, default=2, help="sandboxed/unsandboxed pairs per program")
    args = parser.parse_args()
    reason = isolation_error() or (None if kotlin_available() else "kotlinc/java missing (make kotlin)")
    if reason or not args.data.is_file():
        print(f"sandbox_cost: cannot measure here: {reason or f'{args.data} not found'}", file=sys.stderr)
        return SKIP_EXIT
    programs = reference_programs(args.data, args.programs)
    pairs = []
    for rnd in range(args.rounds):
        for i, program in enumerate(programs):
            order = (False, True) if (rnd + i) % 2 == 0 else (True, False)
            seconds = {unsafe: timed_run(program, unsafe) for unsafe in order}
            pairs.append((seconds[False], seconds[True]))
            print(f"program {i} round {rnd}: sandboxed {seconds[False]:.2f} s, unsandboxed {seconds[True]:.2f} s")
    plain = statistics.median(p for _, p in pairs)
    overhead = statistics.median(s - p for s, p in pairs) / plain
    start_ms = start_cost_ms()
    write_json(ROOT / "bench" / "out" / "sandbox_cost.json", {
        "pairs_sandboxed_unsandboxed_s": pairs, "median_unsandboxed_s": plain, "overhead": overhead,
        "bwrap_start_ms": start_ms})
    print(f"median unsandboxed compile-and-run {plain:.2f} s; isolation adds {100 * overhead:.1f} % "
          f"(bwrap start {start_ms:.0f} ms per process, 2 per program)")
    print(result_line("sandbox_overhead", overhead, target=f"<{TARGET}", ok=overhead < TARGET))
    print(result_line("bwrap_start_ms", start_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
