"""Run every benchmark script in bench/ and write bench/RESULTS.md with the ratios they report.

    python bench/run_all.py                      # all scripts (what `make bench` runs)
    python bench/run_all.py --only generation    # one script
    python bench/run_all.py --list

Convention for bench scripts: besides any human-readable output, print one line per measured
figure, on stdout, in this form (the first pair names the figure and gives its value):

    RESULT <name>=<number> target=<text> ok=true|false

e.g. `RESULT generation_speedup=12.4 target=>=10x ok=true`. `target` and `ok` are optional; a
figure without `ok` is reported, not judged. `result_line()` below formats one. Scripts run one at
a time (the machines have 2 cores; parallel runs would measure each other), from the repository
root, each with a time limit; the full output of each goes to bench/out/<script>.log.

A script that cannot measure on this machine (bench/train_gpu.py without CUDA) says why on stderr
and exits with SKIP_EXIT (77, the "skipped" code of automake and meson tests): it is reported as
skipped, with its reason, not as a failure. Run by hand it still exits non-zero.

Exit code: 0 when every script exited 0 or skipped and no figure has ok=false, else 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from codelora.utils import atomic_file

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SKIP_EXIT = 77
_RESULT = re.compile(r"^RESULT\s+(?P<name>[A-Za-z0-9_.:/-]+)=(?P<value>\S+)(?P<rest>.*)$")
_TARGET = re.compile(r"\btarget=(?P<target>.*?)(?=\s+ok=|\s*$)")
_OK = re.compile(r"\bok=(?P<ok>true|false)\b", re.IGNORECASE)


def result_line(name: str, value: float, target: str | None = None, ok: bool | None = None) -> str:
    """One figure in the RESULT convention (for bench scripts to print)."""
    parts = [f"RESULT {name}={value:.4g}"]
    if target is not None:
        parts.append(f"target={target}")
    if ok is not None:
        parts.append(f"ok={'true' if ok else 'false'}")
    return " ".join(parts)


@dataclass
class Figure:
    name: str
    value: str
    target: str = ""
    ok: bool | None = None


@dataclass
class ScriptRun:
    script: str
    returncode: int | None  # None: killed at the time limit
    seconds: float
    figures: list[Figure] = field(default_factory=list)
    tail: str = ""

    @property
    def skipped(self) -> bool:
        return self.returncode == SKIP_EXIT

    @property
    def skip_reason(self) -> str:
        """The script's last output line, where it says why it could not measure."""
        return (self.tail.splitlines() or ["no reason given"])[-1]

    @property
    def passed(self) -> bool:
        return self.skipped or (self.returncode == 0 and all(f.ok is not False for f in self.figures))


def parse_results(output: str) -> list[Figure]:
    figures = []
    for line in output.splitlines():
        match = _RESULT.match(line.strip())
        if not match:
            continue
        rest = match.group("rest")
        target = _TARGET.search(rest)
        ok = _OK.search(rest)
        figures.append(
            Figure(
                match.group("name"),
                match.group("value"),
                target.group("target").strip() if target else "",
                None if ok is None else ok.group("ok").lower() == "true",
            )
        )
    return figures


def discover(bench_dir: Path, only: list[str] | None = None) -> list[Path]:
    scripts = sorted(
        p for p in bench_dir.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    if only:
        wanted = {name.removesuffix(".py") for name in only}
        missing = wanted - {p.stem for p in scripts}
        if missing:
            raise SystemExit(f"run_all: no bench script named {', '.join(sorted(missing))}")
        scripts = [p for p in scripts if p.stem in wanted]
    return scripts


def run_script(script: Path, timeout: float, log_dir: Path) -> ScriptRun:
    start = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        output, code = proc.stdout + proc.stderr, proc.returncode
        figures = parse_results(proc.stdout)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        output, code, figures = out + f"\n[killed after {timeout:.0f} s]\n", None, parse_results(out)
    seconds = time.monotonic() - start
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{script.stem}.log").write_text(output, encoding="utf-8")
    tail = "\n".join(output.strip().splitlines()[-5:])
    return ScriptRun(script.name, code, seconds, figures, tail)


def render(runs: list[ScriptRun]) -> str:
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (bench/run_all.py) on {now}: {platform.machine()}, {os.cpu_count()} CPU "
        f"cores, Python {platform.python_version()}, torch {version('torch')}, transformers "
        f"{version('transformers')}. Ratios are measured in one run on this machine; rerun to compare.",
        "",
        "| script | figure | value | target | ok |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        if run.skipped:
            lines.append(f"| {run.script} | skipped: {run.skip_reason.replace('|', '/')} | | | — |")
        elif not run.figures:
            lines.append(f"| {run.script} | (no RESULT lines) | | | {'✗' if not run.passed else '—'} |")
        for fig in run.figures:
            mark = {True: "✓", False: "✗", None: "—"}[fig.ok]
            lines.append(
                f"| {run.script} | {fig.name} | {fig.value} | {fig.target.replace('|', '/')} | {mark} |"
            )
    lines += ["", "| script | exit code | seconds |", "|---|---|---|"]
    for run in runs:
        code = "timeout" if run.returncode is None else f"{run.returncode} (skipped)" if run.skipped else str(run.returncode)
        lines.append(f"| {run.script} | {code} | {run.seconds:.0f} |")
    failed = [r for r in runs if r.returncode != 0 and not r.skipped]
    if failed:
        lines += ["", "## Failures", ""]
        for run in failed:
            lines += [f"### {run.script}", "", "```", run.tail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run_all.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="run just these scripts (names without .py)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per script (default 1800)")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md", help="report path")
    parser.add_argument("--bench-dir", type=Path, default=BENCH, help="where the scripts are")
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    args = parser.parse_args(argv)
    scripts = discover(args.bench_dir, args.only)
    if args.list or not scripts:
        print("\n".join(p.name for p in scripts) or "no bench scripts found")
        return 0 if scripts else 1
    runs = []
    for script in scripts:
        print(f"run_all: {script.name} ...", flush=True)
        run = run_script(script, args.timeout, args.bench_dir / "out")
        status = ("skipped" if run.skipped else "ok" if run.passed
                  else "FAILED" if run.returncode != 0 else "target missed")
        print(
            f"run_all: {script.name}: {status} in {run.seconds:.0f} s, {len(run.figures)} figure(s)",
            flush=True,
        )
        if run.skipped:
            print(f"    {run.skip_reason}")
        for fig in run.figures:
            print(f"    {fig.name} = {fig.value}  target {fig.target or '-'}  ok {fig.ok}")
        runs.append(run)
    with atomic_file(args.output) as handle:  # a killed run never leaves a half-written report
        handle.write(render(runs))
    print(f"run_all: wrote {args.output}")
    return 0 if all(r.passed for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
