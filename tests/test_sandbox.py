"""The sandbox's isolation and limits (shell commands, fast), its refusal where isolation fails
(simulated), and Kotlin pass@1 on a handful of real McEval problems (kotlinc runs ~4 s each). The
hostile Kotlin programs of issue 13 are in test_sandbox_probes.py.

kotlinc and java are required, not optional: `make test` installs them (`make kotlin`), so a
missing compiler fails here instead of silently skipping the execution checks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import codelora.sandbox as sandbox
from codelora.kotlin import kotlin_available, kotlin_program, run_kotlin
from codelora.sandbox import isolation_error, run_sandboxed
from codelora.tasks import Example, TaskOptions, get_task
from codelora.utils import UserError

@pytest.fixture
def workdir():
    """A program directory under the system temp dir: pytest's own tmp_path is private to its user,
    and a root caller's sandbox runs as uid 65534, which could not reach it."""
    path = Path(tempfile.mkdtemp(prefix="codelora-test-"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def isolated_machine() -> None:
    """Marks a test that checks what bubblewrap isolates: it needs a machine where bwrap works (these
    do; `make kotlin` installs it) and says so in one line where it does not. The refusal on
    machines without isolation is tested separately, with a simulated failure."""
    reason = isolation_error()
    if reason:
        pytest.fail(f"this test needs working bubblewrap isolation: {reason}", pytrace=False)


def sh(script: str, cwd: Path, **kw):
    return run_sandboxed(["sh", "-c", script], cwd, **kw)


def failing_bwrap(directory: Path) -> Path:
    """A bwrap that fails as it does on a kernel refusing unprivileged user namespaces."""
    script = directory / "bwrap"
    script.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    script.chmod(0o755)
    return script


def test_network_is_cut_off(isolated_machine, workdir):
    # /proc/net/dev lists the interfaces of the reader's network namespace
    res = sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '", workdir, timeout=20)
    assert res.returncode == 0 and res.stdout.split() == ["lo"] and res.isolated


def test_timeout_kills_every_process_the_run_started(isolated_machine, workdir):
    # a grandchild in its own session (out of reach of a process-group kill) and a plain child
    tag = f"{os.getpid()}.{time.monotonic_ns() % 10**6}"
    res = sh(f"setsid sleep 7{tag} & sleep 8{tag} & sleep 60", workdir, timeout=3)
    assert res.timed_out and res.returncode is None
    left = [p for p in psutil.process_iter(["cmdline"]) if {f"7{tag}", f"8{tag}"} & set(p.info["cmdline"] or [])]
    # the kernel kills them as the sandbox's PID namespace ends; wait for that rather than guess a delay
    gone, alive = psutil.wait_procs(left, timeout=10)
    assert alive == []


@pytest.mark.parametrize("unsafe", [False, True])
def test_output_is_capped_while_it_is_read(isolated_machine, workdir, unsafe):
    res = sh("yes; echo never", workdir, timeout=60, max_output_bytes=4096, unsafe_no_sandbox=unsafe)
    assert res.output_capped and not res.timed_out and res.returncode != 0
    assert res.stdout == "y\n" * 2048 and res.isolated is not unsafe


def test_an_exited_program_returns_though_a_leftover_holds_its_output(workdir):
    # unisolated, a setsid grandchild survives and keeps stdout open: the run still returns
    tag = f"9{os.getpid()}.{time.monotonic_ns() % 10**6}"
    res = sh(f"setsid sleep {tag} & echo started", workdir, timeout=30, unsafe_no_sandbox=True)
    for proc in psutil.process_iter(["cmdline"]):
        if tag in (proc.info["cmdline"] or []):
            proc.kill()
    assert not res.timed_out and res.returncode == 0 and res.stdout == "started\n"


def test_memory_limit_home_and_environment(isolated_machine, workdir):
    res = sh("dd if=/dev/zero of=/dev/null bs=1G count=1", workdir, timeout=20, memory_mb=256)
    assert res.returncode != 0 and "memory exhausted" in res.stderr  # dd's 1 GiB buffer: RLIMIT_DATA
    res = sh("echo $HOME; env | wc -l; id -u; touch /usr/x || echo read-only", workdir, timeout=20)
    home, n_env, uid, usr = res.stdout.split()
    assert home == str(workdir) and int(n_env) <= 6 and uid == "65534" and usr == "read-only"


def test_a_private_directory_is_refused_for_a_root_caller(isolated_machine, tmp_path):
    if os.geteuid() != 0:  # explicit: only a root caller hands the run to uid 65534
        assert sh("true", tmp_path, timeout=20).returncode == 0
        return
    with pytest.raises(UserError, match="not reachable by uid 65534"):
        sh("true", tmp_path, timeout=20)  # pytest's tmp_path lies under a 0700 directory


def test_no_isolation_refuses_to_run(workdir, monkeypatch):
    monkeypatch.setattr(sandbox, "BWRAP", str(failing_bwrap(workdir)))
    assert "Permission denied" in isolation_error()
    with pytest.raises(UserError, match="cannot be isolated.*Permission denied.*--unsafe-no-sandbox"):
        sh("touch ran", workdir, timeout=10)
    assert not (workdir / "ran").exists()
    res = sh("touch ran", workdir, timeout=10, unsafe_no_sandbox=True)
    assert res.returncode == 0 and not res.isolated and (workdir / "ran").exists()


def test_kotlin_program_drops_the_script_style_main_call():
    program = kotlin_program("fun f(): Int", " { return 1 }", "fun main() {\n    assert(f() == 1)\n}\nmain()\n")
    assert program.tests.rstrip().endswith("}") and "\nmain()" not in program.tests + program.solution


def test_mceval_pass_at_1_executes_in_the_sandbox(mceval_data):
    assert kotlin_available(), "kotlinc/java missing: run `make kotlin`"
    cfg = TaskOptions(mceval_data=str(mceval_data), allow_code_execution=True, exec_timeout=60.0,
                          unsafe_no_sandbox=False)
    task = get_task("mceval-kotlin", cfg)
    examples = task.load()[:3]
    wrong = "{\n    return false\n}"  # Kotlin/1 asserts true for some inputs: compiles, then fails
    preds = [examples[0].reference, examples[1].reference, wrong]
    # the third row is problem 1 again (its reference program runs once) with a wrong body
    again = Example(examples[0].id + "-again", examples[0].prompt, examples[0].reference, examples[0].meta)
    per, corpus = task.score([examples[0], examples[1], again], preds)
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
