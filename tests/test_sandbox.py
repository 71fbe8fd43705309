"""Sandbox limits, and Kotlin pass@1 on a handful of real McEval problems (kotlinc runs ~4 s each).

kotlinc and java are required, not optional: `make test` installs them (`make kotlin`), so a
missing compiler fails here instead of silently skipping the execution checks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil

from codelora.sandbox import kotlin_available, kotlin_program, network_isolation, run_kotlin, run_sandboxed
from codelora.tasks import get_task



def py(code: str, tmp_path: Path, **kw):
    return run_sandboxed([sys.executable, "-c", code], tmp_path, **kw)


def test_network_is_cut_off(tmp_path):
    assert network_isolation(), "unshare --net should work on these machines"
    res = py("import socket; print(sorted(n for _, n in socket.if_nameindex()))", tmp_path, timeout=20)
    assert res.returncode == 0 and res.stdout.strip() == "['lo']"


def test_timeout_kills_the_whole_process_group(tmp_path):
    # the child forks a grandchild that would outlive a plain kill of the child
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open('grandchild.pid', 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    res = py(code, tmp_path, timeout=3)
    assert res.timed_out and res.returncode is None
    assert time.monotonic() - start < 10
    pid = int((tmp_path / "grandchild.pid").read_text())
    time.sleep(0.2)
    try:  # gone, or a zombie waiting for a reaper (this container's init may not reap)
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass


def test_memory_limit_and_home(tmp_path):
    res = py("x = bytearray(1 << 31)", tmp_path, timeout=20, memory_mb=256)
    assert res.returncode != 0 and "MemoryError" in res.stderr
    res = py("import os; print(os.environ['HOME'], len(os.environ))", tmp_path, timeout=20)
    home, n_env = res.stdout.split()
    assert home == str(tmp_path) and int(n_env) <= 6


def test_kotlin_program_drops_the_script_style_main_call():
    program = kotlin_program("fun f(): Int", " { return 1 }", "fun main() {\n    assert(f() == 1)\n}\nmain()\n")
    assert program.rstrip().endswith("}") and "\nmain()" not in program


def test_mceval_pass_at_1_executes_in_the_sandbox(mceval_data):
    assert kotlin_available(), "kotlinc/java missing: run `make kotlin`"
    cfg = SimpleNamespace(mceval_data=str(mceval_data), allow_code_execution=True, exec_timeout=60.0)
    task = get_task("mceval-kotlin", cfg)
    examples = task.load()[:3]
    wrong = "{\n    return false\n}"  # Kotlin/1 asserts true for some inputs: compiles, then fails
    preds = [examples[0].reference, examples[1].reference, wrong]
    # the third row is problem 1 again (its reference runs once) with a wrong body
    per, corpus = task.score([examples[0], examples[1], examples[0]], preds)
    assert [r["pass"] for r in per] == [1, 1, 0]
    assert per[2]["exec_status"] == "failed" and "AssertionError" in per[2]["exec_detail"]
    assert [r["judgeable"] for r in per] == [1, 1, 1]
    assert corpus["pass@1"] == round(200 / 3, 2) and corpus["judgeable"] == "3/3"


def test_kotlin_infinite_loop_times_out():
    start = time.monotonic()
    res = run_kotlin("fun main() {\n    while (true) {}\n}\n", timeout=10)
    assert res.status == "timeout"
    assert time.monotonic() - start < 14
    assert run_kotlin("fun main() { val x: Int = \"s\" }", timeout=30).status == "compile_error"
