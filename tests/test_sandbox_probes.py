"""Hostile programs (issue 13), each a Kotlin program run through the path the benchmark uses: the
Kotlin task's `execute` (compile with kotlinc, run with java, both sandboxed).

The probes are compiled and run once per module (Kotlin compiles cost seconds); each test then
checks one thing the run did or did not get through. Host-side observations: a file written
outside the program's directory, a connection accepted on a host Unix socket, processes still
alive after the run (found by their unique `sleep` argument), the test process's memory while
the run printed 1 GiB.
"""

from __future__ import annotations

import os
import random
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from codelora.sandbox import MAX_PROCESSES
from codelora.tasks import Example, TaskOptions, get_task
from codelora.utils import UserError

EXEC_TIMEOUT = 120.0  # compile + run of one probe; generous: the machines are shared and loaded
HANG_LIMIT = 2 * EXEC_TIMEOUT + 60  # a run still going after this never returns by itself

ESCAPE = """\
import java.io.File
import java.net.StandardProtocolFamily
import java.net.UnixDomainSocketAddress
import java.nio.ByteBuffer
import java.nio.channels.SocketChannel

fun main() {
    try { File("@DIR@/escaped").writeText("written from the sandbox") } catch (e: Throwable) { println(e) }
    try {
        SocketChannel.open(StandardProtocolFamily.UNIX).use {
            it.connect(UnixDomainSocketAddress.of("@DIR@/host.sock"))
            it.write(ByteBuffer.wrap("hello from the sandbox".toByteArray()))
        }
    } catch (e: Throwable) { println(e) }
    // a daemon in its own session: outlives a kill of the run's process group
    try { ProcessBuilder("setsid", "sleep", "@DAEMON@").start() } catch (e: Throwable) { println(e) }
    // a grandchild in its own session holding the run's stdout and stderr open
    try { ProcessBuilder("setsid", "sleep", "@HOLDER@").inheritIO().start() } catch (e: Throwable) { println(e) }
}
"""

FLOOD = """\
fun main() {
    val line = "x".repeat(1023) + "\\n"
    val out = java.io.PrintStream(java.io.FileOutputStream(java.io.FileDescriptor.out), false)
    repeat(1 shl 20) { out.print(line) }  // 1 GiB
    out.flush()
}
"""

RESOURCES = """\
import kotlin.system.exitProcess

// native memory outside the Java heap (-Xmx does not bound it), reserved 256 MiB at a time
fun nativeMiB(): Int {
    val field = sun.misc.Unsafe::class.java.getDeclaredField("theUnsafe")
    field.isAccessible = true
    val unsafe = field.get(null) as sun.misc.Unsafe
    var mib = 0
    try { while (mib < 8192) { unsafe.allocateMemory(256L shl 20); mib += 256 } } catch (e: Throwable) {}
    return mib
}

// the same from a child JVM, which does not inherit this JVM's -Xmx
fun childMiB(): Int = try {
    val java = ProcessHandle.current().info().command().get()
    val mainClass = Throwable().stackTrace[0].className  // this file's class, e.g. p2.SolutionKt (batched build)
    val child = ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), mainClass, "child")
        .redirectErrorStream(true).start()
    val text = child.inputStream.bufferedReader().readText()
    child.waitFor()
    Regex("native=(\\\\d+)").find(text)?.groupValues?.get(1)?.toInt() ?: -1
} catch (e: Throwable) { -2 }

fun processes(): Int {
    val started = ArrayList<Process>()
    try { while (started.size < 1000) started.add(ProcessBuilder("sleep", "@SLEEP@").start()) } catch (e: Throwable) {}
    started.forEach { it.destroyForcibly() }
    return started.size
}

fun main(args: Array<String>) {
    if (args.isNotEmpty()) { println("native=" + nativeMiB()); return }
    val native = nativeMiB()
    val child = childMiB()
    val procs = processes()
    System.err.println("PROBE native=$native child=$child processes=$procs")
    exitProcess(3)
}
"""


def marker() -> str:
    """A `sleep` argument no other process on the machine has: finds the probe's processes."""
    return f"{random.randint(5000, 9000)}.{os.getpid()}{random.randint(100, 999)}"


def processes_with(arg: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if arg in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def kill_all(arg: str) -> None:
    for proc in processes_with(arg):
        try:
            proc.kill()
        except psutil.Error:
            pass


class UnixServer:
    """A listening Unix socket on the host that records every connection it accepts."""

    def __init__(self, path: Path):
        self.accepted = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)  # any uid may connect: only the sandbox's namespaces stop it
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.open = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.open:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.open = False
        self.thread.join()
        self.sock.close()


class PeakRss(threading.Thread):
    """Samples this process's resident memory while the probes run."""

    def __init__(self):
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.start_rss = self.peak = self.me.memory_info().rss
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.me.memory_info().rss)
            time.sleep(0.05)


def probe_task(mceval_data: Path, **cfg):
    base = dict(mceval_data=str(mceval_data), allow_code_execution=True, exec_timeout=EXEC_TIMEOUT,
                unsafe_no_sandbox=False)
    return get_task("mceval-kotlin", TaskOptions(**{**base, **cfg}))


def as_example(name: str, source: str) -> Example:
    """A probe as a benchmark example: its source in the solution file, where a completion's code
    runs, and a test that calls its `main`."""
    args = "arrayOf()" if "fun main(args" in source else ""
    return Example(name, f"{source}\nfun probe() = main({args})\n", "", {"test": "probe()\n"})


@pytest.fixture(scope="module")
def probes(mceval_data):
    """Runs the three probe programs once; returns what the host saw."""
    host = Path(tempfile.mkdtemp(prefix="codelora-probe-"))
    os.chmod(host, 0o777)  # writable by any uid: only the sandbox's mount namespace protects it
    daemon, holder, sleeper = marker(), marker(), marker()
    sources = {
        "escape": ESCAPE.replace("@DIR@", str(host)).replace("@DAEMON@", daemon).replace("@HOLDER@", holder),
        "flood": FLOOD,
        "resources": RESOURCES.replace("@SLEEP@", sleeper),
    }
    server = UnixServer(host / "host.sock")
    rss = PeakRss()
    rss.start()
    task = probe_task(mceval_data)
    results: dict = {}

    def run() -> None:
        names = list(sources)
        out = task.execute([as_example(n, s) for n, s in sources.items()], [""] * len(names))
        results.update(zip(names, out))

    runner = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    runner.start()
    runner.join(HANG_LIMIT)
    hung = runner.is_alive()
    if hung:  # unblock it: kill what holds its pipes
        kill_all(holder)
        runner.join(60)
    seconds = time.monotonic() - start
    rss.running = False
    rss.join()
    time.sleep(0.5)  # processes killed with the run are reaped by then
    seen = {"daemon": processes_with(daemon), "holder": processes_with(holder), "sleeper": processes_with(sleeper)}
    for arg in (daemon, holder, sleeper):
        kill_all(arg)
    server.close()
    yield SimpleNamespace(results=results, hung=hung, seconds=seconds, host=host, accepted=server.accepted,
                          alive=seen, rss_growth=rss.peak - rss.start_rss)
    for path in host.iterdir():
        path.unlink()
    host.rmdir()


def resource_counts(probes) -> dict[str, int]:
    detail = probes.results["resources"].detail
    found = re.search(r"PROBE native=(-?\d+) child=(-?\d+) processes=(\d+)", detail)
    assert found, f"the resources probe reported nothing: {probes.results['resources']}"
    return dict(zip(("native", "child", "processes"), map(int, found.groups())))


def test_probe_cannot_write_outside_its_directory(probes):
    assert not (probes.host / "escaped").exists()


def test_probe_cannot_connect_to_a_host_unix_socket(probes):
    assert probes.accepted == 0


def test_probe_setsid_daemon_does_not_outlive_the_run(probes):
    assert probes.alive["daemon"] == []


def test_probe_grandchild_holding_stdout_does_not_hang_the_run(probes):
    assert not probes.hung
    assert probes.alive["holder"] == []
    assert probes.results["escape"].status == "passed"  # the program itself exits at once


def test_probe_1gib_of_output_is_not_buffered(probes):
    assert probes.results["flood"].status != "passed"  # cut off at the output cap
    assert probes.rss_growth < 256 << 20, f"the benchmark process grew by {probes.rss_growth >> 20} MiB"


def test_probe_native_memory_is_bounded(probes):
    counts = resource_counts(probes)
    assert 0 <= counts["native"] < 2048, counts  # of 8192 MiB asked; run_kotlin's cap is 1536 MiB


def test_probe_child_process_memory_is_bounded(probes):
    counts = resource_counts(probes)
    assert 0 <= counts["child"] < 2048, counts  # -1/-2: the child did not even start


def test_probe_process_count_is_bounded(probes):
    counts = resource_counts(probes)
    assert counts["processes"] < MAX_PROCESSES, counts  # of 1000 asked (its JVM's threads count too)
    assert probes.alive["sleeper"] == []


HELLO = 'fun main() {\n    println("hello")\n}\n'


def forget_isolation_probe() -> None:
    """The sandbox probes the machine once per process; these tests change the machine under it."""
    import codelora.sandbox as sandbox

    for value in vars(sandbox).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


def test_execution_refused_when_isolation_fails(monkeypatch, tmp_path, mceval_data):
    # a machine whose kernel refuses namespaces: bwrap (and unshare) exist but fail, as they do there
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("bwrap", "unshare"):
        script = fake_bin / name
        script.write_text(f"#!/bin/sh\necho '{name}: setting up uid map: Permission denied' >&2\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    forget_isolation_probe()
    try:
        task = probe_task(mceval_data)
        with pytest.raises(UserError, match="--unsafe-no-sandbox"):
            task.load()  # refused before any model generates: the benchmark stops at once
        with pytest.raises(UserError, match="--unsafe-no-sandbox"):
            task.execute([as_example("hello", HELLO)], [""])
        unsafe = probe_task(mceval_data, unsafe_no_sandbox=True)
        assert unsafe.execute([as_example("hello", HELLO)], [""])[0].status == "passed"
    finally:
        forget_isolation_probe()


def test_benchmark_cli_refuses_before_generating(monkeypatch, tmp_path, capsys, mceval_data):
    from codelora import benchmarking

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    script = fake_bin / "bwrap"
    script.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    forget_isolation_probe()
    try:
        out = tmp_path / "results"
        # a model that does not exist: the refusal must come before any model is looked at
        code = benchmarking.main(["--models", str(tmp_path / "no-such-model"), "--tasks", "mceval-kotlin",
                                  "--mceval-data", str(mceval_data), "--allow-code-execution", "--output", str(out)])
    finally:
        forget_isolation_probe()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot be isolated" in err[0] and "--unsafe-no-sandbox" in err[0]
    assert not out.exists()
