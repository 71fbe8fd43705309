"""Run untrusted, model-written programs isolated by bubblewrap, within limits, failing closed.

Generated code is executed only when the user opts in (`--allow-code-execution`, as in
bigcode-evaluation-harness), and is treated as hostile: a finetuned model reproduces whatever its
training repository held, and benchmark files can be crafted. Each program runs under `bwrap`
(bubblewrap, what Flatpak uses) in new user, PID, network, mount, IPC, UTS and cgroup namespaces:

- file system: read-only /usr (and the /bin, /lib... links to it), a few read-only /etc entries
  (dynamic linker cache, alternatives, JRE config), the caller's read-only `ro_binds` (a compiler
  outside /usr), the program's own directory `cwd` as the only writable host path, and a private
  size-capped /tmp; nothing else of the host exists inside;
- identity: uid/gid 65534 inside; when the caller is root, bwrap itself runs as uid 65534 (so the
  process limit below holds: the kernel exempts uid 0 from RLIMIT_NPROC);
- no network at all (not even the host's Unix sockets: they live in the host's mount and network
  namespaces), no nested user namespaces, a new session (no terminal injection);
- lifetime: the program is PID 1's child in its own PID namespace, so when it exits, times out or
  the caller dies (--die-with-parent), the kernel kills every process it started, setsid daemons
  and grandchildren holding its stdout included.

Limits are rlimits set inside the sandbox with util-linux `prlimit` (inherited by every process
there): CPU seconds, file size, no core dumps, processes (RLIMIT_NPROC counts threads too, per user
namespace, so it bounds this run only) and memory as RLIMIT_DATA per process. RLIMIT_AS cannot bound
a JVM (it reserves far more address space than it uses and then fails to start); RLIMIT_DATA counts
only writable private mappings, i.e. what a process can actually fill (heap, malloc, thread stacks,
native buffers), so the JVM starts and native allocations outside -Xmx are still capped. The whole
tree's memory is bounded by processes x memory; an exact tree total needs a cgroup (not delegated
to unprivileged users on these machines). Output is read as it comes and the run is killed once a
stream passes its cap: nothing is buffered past it.

Fail closed: when bwrap is missing or the kernel refuses its namespaces, `run_sandboxed` raises one
UserError instead of running anything, unless the caller passes `unsafe_no_sandbox=True` (the
benchmark's `--unsafe-no-sandbox`): then programs run with the limits but without namespaces.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from codelora.utils import UserError

log = logging.getLogger(__name__)

BWRAP = "bwrap"  # looked up on PATH (Debian package bubblewrap; `make kotlin` installs it)
SANDBOX_ID = 65534  # "nobody": the uid/gid inside, and outside when the caller is root
MAX_OUTPUT_BYTES = 1 << 20  # per stream; a run printing more is killed there
MAX_FILE_BYTES = 64 << 20  # RLIMIT_FSIZE: the jar of a small Kotlin program is ~6 MB
MAX_PROCESSES = 256  # RLIMIT_NPROC (threads count): a JVM on a many-core machine runs ~100
MEMORY_MB = 2048  # RLIMIT_DATA per process
TMP_BYTES = 64 << 20  # the private /tmp (tmpfs, in RAM)
EXIT_GRACE = 1.0  # seconds to wait for the pipes to close after the program exited or was killed
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc entries programs need (the JRE reads /etc/java-*; /usr/bin/java links via /etc/alternatives);
# the rest of /etc (users, hosts, keys) stays out of the sandbox
ETC_ENTRIES = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "java-*")


@dataclass
class SandboxResult:
    returncode: int | None  # None: killed on timeout
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    output_capped: bool = False  # killed because a stream passed its cap
    isolated: bool = True  # False: ran without namespaces (unsafe_no_sandbox)


def isolation_error() -> str | None:
    """Why programs cannot be isolated on this machine, or None when bwrap works here."""
    return _probe(shutil.which(BWRAP), shutil.which("prlimit"))


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str | None, prlimit: str | None) -> str | None:
    # keyed by what the probe depends on, so a changed PATH (a test's failing bwrap) probes anew
    if not bwrap:
        return "bubblewrap (bwrap) is not installed (Debian package bubblewrap; `make kotlin` installs it)"
    if not prlimit:
        return "prlimit (util-linux) is not installed"
    with tempfile.TemporaryDirectory(prefix="codelora-probe-") as tmp:
        try:
            res = _run(["true"], Path(tmp), 30, bwrap=bwrap, prlimit=prlimit)
        except OSError as e:
            return f"{bwrap} cannot start: {e}"
    if res.returncode != 0:
        reason = res.stderr.strip().splitlines() or [f"exit status {res.returncode}"]
        return f"{bwrap} fails here: {reason[-1]}"
    return None


def require_isolation(unsafe_no_sandbox: bool = False) -> None:
    """Raise the one clear error when generated code would run unisolated without the user's consent."""
    if unsafe_no_sandbox:
        _warn_unisolated()
        return
    reason = isolation_error()
    if reason:
        raise UserError(f"refusing to run generated code: it cannot be isolated here ({reason}); "
                        "fix that, or pass --unsafe-no-sandbox to run it unisolated (trusted code only)")


@functools.cache
def _warn_unisolated() -> None:  # once per process, not once per program
    log.warning("sandbox: --unsafe-no-sandbox: generated programs run WITHOUT isolation (limits only)")


def _mounts(cwd: Path, ro_binds: Sequence[Path]) -> list[str]:
    """bwrap's file-system arguments: system dirs and `ro_binds` read-only, `cwd` writable."""
    args = ["--tmpfs", "/", "--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for entry in sorted(p for pattern in ETC_ENTRIES for p in Path("/etc").glob(pattern)):
        args += ["--ro-bind", str(entry), str(entry)]
    for path in ro_binds:
        args += ["--ro-bind", str(Path(path).resolve()), str(Path(path).resolve())]
    return [*args, "--bind", str(cwd.resolve()), str(cwd.resolve())]


def private_parent(path: Path) -> Path | None:
    """The first directory on the way to `path` that SANDBOX_ID cannot pass, or None."""
    for parent in [*reversed(Path(path).resolve().parents), Path(path).resolve()]:
        st = parent.stat()
        if not (st.st_mode & 0o001 or st.st_uid == SANDBOX_ID):
            return parent
    return None


def _check_reachable(paths: Sequence[Path]) -> None:
    """bwrap runs as SANDBOX_ID when the caller is root, and can only bind what that uid can reach:
    say which path is hidden behind a private directory (a project under /root, pytest's tmp)."""
    for path in paths:
        parent = private_parent(path)
        if parent is not None:
            raise UserError(f"sandbox: {path} is not reachable by uid {SANDBOX_ID}, as which programs run: "
                            f"{parent} is private (mode {parent.stat().st_mode & 0o777:o}); use a world-readable "
                            "location")


def bwrap_argv(bwrap: str, prlimit: str, argv: Sequence[str], cwd: Path, ro_binds: Sequence[Path],
               cpu_seconds: int, memory_mb: int | None, processes: int, file_bytes: int,
               isolate_network: bool) -> list[str]:
    """The full command line: bwrap's namespaces and mounts, then prlimit's limits, then `argv`."""
    return [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", *(() if isolate_network else ("--share-net",)),
        "--die-with-parent", "--new-session", "--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID),
        "--hostname", "sandbox", *_mounts(cwd, ro_binds), "--chdir", str(cwd.resolve()),
        "--", *limits_argv(prlimit, cpu_seconds, memory_mb, processes, file_bytes), *argv,
    ]


def limits_argv(prlimit: str, cpu_seconds: int, memory_mb: int | None, processes: int | None,
                file_bytes: int) -> list[str]:
    limits = [f"--cpu={cpu_seconds}", f"--fsize={file_bytes}", "--core=0"]
    if processes:
        limits.append(f"--nproc={processes}")
    if memory_mb:
        limits.append(f"--data={memory_mb << 20}")
    return [prlimit, *limits, "--"]


def _environment(cwd: Path, env: dict[str, str] | None) -> dict[str, str]:
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd.resolve()), "LANG": "C.UTF-8",
            "TMPDIR": str(cwd.resolve())}
    return {**base, **(env or {})}


def _start(argv: Sequence[str], cwd: Path, env: dict[str, str], drop_root: bool,
           stdin: str | None = None) -> subprocess.Popen:
    identity = {"user": SANDBOX_ID, "group": SANDBOX_ID, "extra_groups": []} if drop_root else {}
    source = subprocess.DEVNULL
    if stdin is not None:  # a pipe filled and closed up front: small inputs only (pipe buffer, 64 KiB)
        source, writer = os.pipe()
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(stdin.encode())
    try:
        return subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # own process group: killpg reaches bwrap (or the unisolated tree)
            **identity,
        )
    finally:
        if stdin is not None:
            os.close(source)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, bool, bool]:
    """(stdout, stderr, timed_out, capped): reads both pipes as data comes, keeping at most `cap`
    bytes of each; kills the run at the deadline or once a stream passes the cap. Returns at most
    EXIT_GRACE after the program ended, even if something it left behind still holds a pipe."""
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    timed_out = capped = False
    pidfd = os.pidfd_open(proc.pid)
    with selectors.DefaultSelector() as sel:
        for stream in bufs:
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        stop = deadline
        while len(sel.get_map()) > (1 if pidfd in sel.get_map() else 0):
            now = time.monotonic()
            if now >= stop:
                if proc.poll() is None:
                    timed_out = True
                    _kill_group(proc)
                break
            for key, _ in sel.select(stop - now):
                if key.fileobj == pidfd:  # the program ended: its pipes should close soon
                    sel.unregister(pidfd)
                    stop = min(stop, time.monotonic() + EXIT_GRACE)
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                room = max(0, cap - len(buf))
                buf += chunk[:room]
                capped = capped or len(chunk) > room
            if capped:
                _kill_group(proc)
                break
    os.close(pidfd)
    _kill_group(proc)  # unisolated runs: whatever the program left in its group
    proc.wait()
    for stream in bufs:
        stream.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, capped


def run_sandboxed(
    argv: Sequence[str],
    cwd: Path,
    timeout: float,
    memory_mb: int | None = MEMORY_MB,
    env: dict[str, str] | None = None,
    isolate_network: bool = True,
    *,
    ro_binds: Sequence[Path] = (),
    max_processes: int = MAX_PROCESSES,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
    unsafe_no_sandbox: bool = False,
    stdin: str | None = None,
) -> SandboxResult:
    """Run `argv` in `cwd` (its only writable host directory) within the limits; never raises for
    the program's own failures. `memory_mb` caps each process's writable memory (RLIMIT_DATA; None:
    no cap), `ro_binds` are extra host directories it may read (a compiler outside /usr). When the
    caller is root, `cwd` is handed to the sandbox's uid. `stdin` is what the program reads on its
    standard input (through a pipe: once read it is gone, even via /proc/self/fd/0); none: /dev/null.
    Raises UserError when isolation does not work here, unless `unsafe_no_sandbox`."""
    require_isolation(unsafe_no_sandbox)
    return _run(argv, cwd, timeout, memory_mb, env, isolate_network, ro_binds, max_processes, max_file_bytes,
                max_output_bytes, bwrap=None if unsafe_no_sandbox else shutil.which(BWRAP),
                prlimit=shutil.which("prlimit"), stdin=stdin)


def _run(argv: Sequence[str], cwd: Path, timeout: float, memory_mb: int | None = MEMORY_MB,
         env: dict[str, str] | None = None, isolate_network: bool = True, ro_binds: Sequence[Path] = (),
         max_processes: int = MAX_PROCESSES, max_file_bytes: int = MAX_FILE_BYTES,
         max_output_bytes: int = MAX_OUTPUT_BYTES, *, bwrap: str | None, prlimit: str | None,
         stdin: str | None = None) -> SandboxResult:
    """run_sandboxed without the isolation check: under `bwrap`, or unisolated when it is None."""
    limits = (int(timeout) + 1, memory_mb, max_processes, max_file_bytes)
    drop_root = bool(bwrap) and os.geteuid() == 0
    if bwrap:
        command = bwrap_argv(bwrap, prlimit, argv, cwd, ro_binds, *limits, isolate_network)
        if drop_root:
            _check_reachable([cwd.parent, *ro_binds])
            os.chown(cwd, SANDBOX_ID, SANDBOX_ID)
    else:  # no user namespace: RLIMIT_NPROC would count all the caller's processes, not this run's
        cpu, memory, _, file_bytes = limits
        command = [*(limits_argv(prlimit, cpu, memory, None, file_bytes) if prlimit else ()), *argv]
    start = time.monotonic()
    proc = _start(command, cwd, _environment(cwd, env), drop_root, stdin)
    out, err, timed_out, capped = _collect(proc, start + timeout, max_output_bytes)
    return SandboxResult(
        None if timed_out else proc.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        timed_out,
        time.monotonic() - start,
        capped,
        bool(bwrap),
    )
