"""Run untrusted, model-written programs: temp dir, time limit, memory limit, no network.

Generated code is executed only when the user opts in (`--allow-code-execution`, as in
bigcode-evaluation-harness): a model can write `rm -rf ~` as easily as a sort function. Each
program runs in a fresh temporary directory (also its HOME), with a minimal environment, in its
own process group (killed as a whole on timeout, so no stray JVM survives), under rlimits (CPU
seconds, file size, no core dumps) and, where the kernel allows unprivileged user namespaces,
inside a new network namespace (`unshare --net`), i.e. with no network at all.

Memory: RLIMIT_AS cannot bound a JVM (it reserves far more address space than it uses and then
fails to start), so JVM memory is bounded by -Xmx/-XX:MaxMetaspaceSize instead; other commands
get RLIMIT_AS.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 1 << 20  # per stream; a program printing forever is cut here
MAX_FILE_BYTES = 64 << 20  # RLIMIT_FSIZE: the jar of a small program is ~5 MB


@dataclass
class SandboxResult:
    returncode: int | None  # None: killed on timeout
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


@functools.lru_cache(maxsize=1)
def network_isolation() -> tuple[str, ...]:
    """Command prefix that cuts the network off, or () where the kernel refuses it."""
    prefix = ("unshare", "--net", "--map-root-user")
    if shutil.which("unshare"):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return prefix
    log.warning("sandbox: no network namespace available (unshare --net failed); programs run with the host network")
    return ()


def _limits(cpu_seconds: int, memory_bytes: int | None):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return apply


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_sandboxed(
    argv: Sequence[str],
    cwd: Path,
    timeout: float,
    memory_mb: int | None = 1024,
    env: dict[str, str] | None = None,
    isolate_network: bool = True,
) -> SandboxResult:
    """Run `argv` in `cwd` within the limits; never raises for the program's own failures."""
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LANG": "C.UTF-8", "TMPDIR": str(cwd)}
    base_env.update(env or {})
    prefix = network_isolation() if isolate_network else ()
    memory = memory_mb * (1 << 20) if memory_mb else None
    start = time.monotonic()
    proc = subprocess.Popen(
        [*prefix, *argv],
        cwd=cwd,
        env=base_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # own process group: killpg reaches every child
        preexec_fn=_limits(int(timeout) + 1, memory),
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, err = proc.communicate()
    finally:
        _kill_group(proc)  # daemons or forked children left behind by a finished program
    return SandboxResult(
        None if timed_out else proc.returncode,
        out[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
        err[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
        timed_out,
        time.monotonic() - start,
    )


# ------------------------------------------------------------------------------------- Kotlin


@dataclass
class ExecutionResult:
    status: str  # passed | failed | compile_error | timeout
    detail: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# `make kotlin` installs the pinned compiler here (tools/install-kotlin.sh); otherwise kotlinc on PATH.
PROJECT_KOTLINC = Path(__file__).resolve().parents[1] / ".tools" / "kotlinc" / "bin" / "kotlinc"


def kotlinc_command() -> str | None:
    if PROJECT_KOTLINC.is_file():
        return str(PROJECT_KOTLINC)
    return shutil.which("kotlinc")


def kotlin_available() -> bool:
    return bool(kotlinc_command() and shutil.which("java"))


_TRAILING_MAIN_CALL = re.compile(r"\n[ \t]*main\(\)[ \t;]*\s*$")


def kotlin_program(prompt: str, completion: str, test: str) -> str:
    """prompt + completion + test, without the test's script-style top-level `main()` call
    (McEval's tests end with one; in a .kt file it is a syntax error, and `fun main` runs anyway)."""
    test = _TRAILING_MAIN_CALL.sub("\n", "\n" + test).lstrip("\n")
    return f"{prompt}{completion}\n\n{test}\n"


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_kotlin(program: str, timeout: float = 30.0, memory_mb: int = 512) -> ExecutionResult:
    """Compile with kotlinc and run with `java -ea` (so `assert` checks), both sandboxed; the
    timeout covers compile + run together."""
    deadline = time.monotonic() + timeout
    jvm_memory = f"-Xmx{memory_mb}m -XX:MaxMetaspaceSize=256m -Xss8m"
    with tempfile.TemporaryDirectory(prefix="codelora-kt-") as tmp:
        cwd = Path(tmp)
        (cwd / "Main.kt").write_text(program, encoding="utf-8")
        compiled = run_sandboxed(
            [kotlinc_command() or "kotlinc", "Main.kt", "-include-runtime", "-nowarn", "-d", "main.jar"],
            cwd, max(1.0, deadline - time.monotonic()), memory_mb=None, env={"JAVA_OPTS": jvm_memory},
        )
        if compiled.timed_out:
            return ExecutionResult("timeout", "compile timed out", compiled.seconds)
        if compiled.returncode != 0 or not (cwd / "main.jar").is_file():
            return ExecutionResult("compile_error", _tail(compiled.stderr), compiled.seconds)
        ran = run_sandboxed(
            ["java", *jvm_memory.split(), "-ea", "-jar", "main.jar"],
            cwd, max(1.0, deadline - time.monotonic()), memory_mb=None,
        )
        seconds = compiled.seconds + ran.seconds
        if ran.timed_out:
            return ExecutionResult("timeout", "run timed out", seconds)
        if ran.returncode != 0:
            return ExecutionResult("failed", _tail(ran.stderr or ran.stdout), seconds)
        return ExecutionResult("passed", "", seconds)
