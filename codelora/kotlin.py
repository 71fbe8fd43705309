"""Kotlin toolchain and execution: find kotlinc/java, build a program from prompt + completion +
test, compile many programs in one kotlinc call and run each one alone, every step inside
`codelora.sandbox.run_sandboxed`.

Why batched: a kotlinc call costs seconds of JVM start and compiler warm-up whatever it compiles,
while running a compiled program costs a fraction of a second. So the programs of a benchmark are
compiled together, each in its own package (`p0`, `p1`, ...: the same function name in two
programs never clashes), into one jar per batch; then each runs in its own sandboxed `java`
process with its own time limit. A compile error in one program must not fail the others:
kotlinc names the file of each error, so the named files are set aside as compile errors and the
rest is compiled again; a failure that names no file (or a compiler timeout) splits the batch in
two (bisection) until the culprit stands alone.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from codelora.sandbox import run_sandboxed
from codelora.stops import brace_depth
from codelora.utils import UserError, progress

log = logging.getLogger(__name__)


@dataclass
class ExecutionResult:
    status: str  # passed | failed | compile_error | timeout
    detail: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ------------------------------------------------------------------------------------ toolchain

# `make kotlin` installs the pinned compiler in the checkout's .tools/ (tools/install-kotlin.sh): found
# beside the package in a source checkout, or in the working directory when the package is installed
# elsewhere (pip install .); otherwise kotlinc on PATH.
_INSTALL = Path(".tools") / "kotlinc" / "bin" / "kotlinc"
PROJECT_KOTLINC = Path(__file__).resolve().parents[1] / _INSTALL


def project_kotlinc() -> Path | None:
    """The project's kotlinc (`make kotlin`), if there is one."""
    return next((p for p in (PROJECT_KOTLINC, Path.cwd() / _INSTALL) if p.is_file()), None)


def kotlinc_command(override: str | None = None) -> str | None:
    """The kotlinc to use: `override` (--kotlinc) when given, else the project's, else PATH's;
    symlinks resolved (the sandbox binds only the real install directory, so a path through a
    symlinked .tools/ would not exist inside it)."""
    if override:
        found = override if Path(override).is_file() else shutil.which(override)
    elif project := project_kotlinc():
        home = project.resolve().parents[1]
        if os.geteuid() == 0:  # the sandbox then runs as uid 65534, who must reach the install
            home = reachable_install(home)
        return str(home / "bin" / "kotlinc")
    else:
        found = shutil.which("kotlinc")
    return str(Path(found).resolve()) if found else None


def reachable_install(home: Path) -> Path:
    """`home` itself, or, where a private directory hides it from the sandbox's uid (a clone under
    `mktemp -d`, mode 700), a world-readable mirror of it in the temp directory: hard links where
    the file system allows (instant), copies elsewhere. Keyed by the install's path and version."""
    import hashlib

    from codelora.sandbox import private_parent

    if private_parent(home) is None:
        return home
    version = (home / ".version").read_text().strip() if (home / ".version").is_file() else "unknown"
    key = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    mirror = Path(tempfile.gettempdir()) / f"codelora-kotlinc-{version}-{key}"
    if not (mirror / "bin" / "kotlinc").is_file():
        staging = Path(tempfile.mkdtemp(prefix=f".{mirror.name}.", dir=mirror.parent))
        try:
            shutil.copytree(home, staging / "k", copy_function=_link_or_copy)
            os.chmod(staging, 0o755)
            if not mirror.exists():  # another process may have made it meanwhile
                os.replace(staging / "k", mirror)
                log.info("kotlinc: %s is behind a private directory; the sandbox uses the mirror %s", home, mirror)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return mirror


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def java_command() -> str:
    return str(Path(shutil.which("java") or "java").resolve())


def java_home() -> Path:
    return Path(java_command()).parents[1]


def kotlin_binds(kotlinc: str) -> list[Path]:
    """The compiler's and the JRE's install directories, for the sandbox to read (either may live
    outside /usr: `make kotlin` puts kotlinc in .tools/)."""
    tools = [kotlinc, shutil.which("java") or "java"]
    return [Path(t).resolve().parents[1] for t in tools if Path(t).is_absolute()]


def kotlin_available(override: str | None = None) -> bool:
    return bool(kotlinc_command(override) and shutil.which("java"))


@functools.lru_cache(maxsize=8)
def kotlinc_version(kotlinc: str) -> str:
    """'2.4.20' from `kotlinc -version` ('info: kotlinc-jvm 2.4.20 (JRE 17...)'), for the report."""
    try:
        out = subprocess.run([kotlinc, "-version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"kotlinc {kotlinc} does not run: {exc}") from exc
    found = re.search(r"kotlinc-jvm (\S+)", out.stdout + out.stderr)
    if not found:
        raise UserError(f"{kotlinc} -version printed no kotlinc-jvm version: {(out.stdout + out.stderr).strip()[:200]}")
    return found.group(1)


def require_kotlin(override: str | None = None) -> str:
    """The kotlinc to use, or one UserError saying how to get one."""
    kotlinc = kotlinc_command(override)
    if override and not kotlinc:
        raise UserError(f"--kotlinc {override}: not found")
    if not kotlinc or not shutil.which("java"):
        raise UserError("--allow-code-execution needs kotlinc and java (run `make kotlin`, or give --kotlinc PATH)")
    return kotlinc


# ------------------------------------------------------------------------------------ programs

_IMPORT = re.compile(r"^[ \t]*import[ \t]+[\w.*` ]+(?:[ \t]+as[ \t]+\w+)?[ \t]*;?[ \t]*$", re.M)
_MODIFIER = (r"(?:public|private|internal|protected|inline|tailrec|suspend|operator|infix|data|sealed|enum"
             r"|abstract|open|inner|value|annotation|const|lateinit|override|external|expect|actual)\s")
# Lines that open a top-level declaration (or close one, or are blank/comments); any other line at
# brace depth 0 of a test is a statement: legal in a script (.kts), a syntax error in a .kt file.
_DECLARATION = re.compile(
    r"^\s*(?:$|//|/\*|\*|}|@|import\b|package\b|fun\b|val\b|var\b|class\b|object\b|interface\b|typealias\b"
    rf"|{_MODIFIER})"
)
_TEST_MAIN = "codeloraTestMain"


def _script_statements(test: str) -> tuple[str, list[str]]:
    """(the test's declarations, its top-level statements in order). A statement runs on until
    the braces it opens are closed again (a multi-line `check(...) { ... }` stays whole)."""
    lines = test.split("\n")
    kept: list[str] = []
    statements: list[str] = []
    depth = 0
    target: list[str] | None = None
    for line in lines:
        if depth == 0:
            target = kept if _DECLARATION.match(line) else statements
        target.append(line)
        depth = max(0, depth + brace_depth(line))
    return "\n".join(kept), statements


_TEST_PACKAGE = "t"  # the tests' package inside a program's own: p3 holds the solution, p3.t the tests
# The name a top-level declaration line introduces: `fun <T> List<T>.name(`, `class Name`, `val T.name`.
_NAME = re.compile(rf"^\s*((?:{_MODIFIER}\s*)*)(?:fun\b[^(=]*?(\w+)\s*\(|(?:class|object|interface|typealias)\s+(\w+)"
                   r"|(?:val|var)\s+(?:[\w<>?, ]+\.)?(\w+))")
_NONCE = "codeloraRunNonce"
# The entry point, in a file (class) of its own: the tests' file may have top-level initialisers
# that call the solution, and those run when its class is first used, which is after this read.
_TESTS = "codeloraTests"
_RUNNER = (f"fun main() {{\n    val {_NONCE} = readlnOrNull()\n    {_TESTS}()\n    println()\n"
           f"    println({_NONCE})\n}}\n")


@dataclass(frozen=True)
class KotlinProgram:
    """A benchmark program as three files: the solution (prompt + completion, package `pN`), the
    tests and the entry point (both package `pN.t`), kept apart so that a completion cannot decide
    its own verdict:
    - the tests import only the names the *prompt* declares, so a helper the completion adds
      (`fun assert(value: Boolean) {}`, `fun check(...)`) cannot shadow the assertions they call
      (same-package declarations would win over Kotlin's default imports);
    - `main` (its own file, Runner.kt) first reads a nonce from standard input (fresh for every
      run, through a pipe, so it is gone once read), runs the tests, then prints it; a run passes
      only if it exits 0 AND its last line is that nonce. A completion that exits early
      (`exitProcess(0)`), or makes a failed run exit 0 (`Runtime.halt(0)` in a shutdown hook),
      never printed it. The solution's own
      initialisers run at its first call, after the nonce was read.
    What this does not stop: code written against this harness that digs the nonce out of `main`'s
    stack frame by debugger-level means; the sandbox still bounds what such code can reach."""

    solution: str
    tests: str
    prompt_names: tuple[str, ...] = ()

    def sources(self, package: str) -> dict[str, str]:
        """{file name: source}: the solution in `package`, the tests in `package`.t importing the
        prompt's names."""
        tests = _with_imports(self.tests, [f"import {package}.{n}" for n in self.prompt_names])
        return {"Solution.kt": in_package(self.solution, package),
                "Main.kt": in_package(tests, f"{package}.{_TEST_PACKAGE}"),
                "Runner.kt": in_package(_RUNNER, f"{package}.{_TEST_PACKAGE}")}


def declared_names(code: str) -> list[str]:
    """Names of the non-private top-level functions, classes, objects, properties and type
    aliases `code` declares (lines at brace depth 0), in order, each once."""
    names: list[str] = []
    depth = 0
    for line in code.split("\n"):
        found = _NAME.match(line) if depth == 0 else None
        if found and "private" not in found.group(1):
            names.append(next(g for g in found.groups()[1:] if g))
        depth = max(0, depth + brace_depth(line))
    return list(dict.fromkeys(n for n in names if n != "main"))


def _imports(code: str) -> list[str]:
    return [m.group(0).strip() for m in _IMPORT.finditer(code)]


def _with_imports(code: str, extra: Sequence[str]) -> str:
    """`code` with its `import` lines (anywhere; Kotlin only allows them at the top) and `extra`
    moved to the top."""
    imports = list(dict.fromkeys([*_imports(code), *extra]))
    if not imports:
        return code
    return "\n".join(imports) + "\n\n" + _IMPORT.sub("", code)


def tests_as_main(test: str) -> str:
    """The tests as a .kt file with one entry, `codeloraTests()`, which _RUNNER's `main` calls
    between reading the run's nonce and printing it (KotlinProgram). A test written script-style
    (top-level `check(...)` calls, McEval's trailing `main()` call) has its top-level statements
    run from there; a `main` the test defines itself is renamed and called."""
    declarations, statements = _script_statements(test)
    defined = re.search(r"\bfun\s+main\s*\(\s*(\w?)", declarations)
    declarations = re.sub(r"\bfun(\s+)main(?=\s*\()", rf"fun\1{_TEST_MAIN}", declarations)
    body = [re.sub(r"\bmain(?=\s*\()", _TEST_MAIN, s) for s in statements if s.strip()]
    if not body and defined:
        body = [f"{_TEST_MAIN}({'arrayOf()' if defined.group(1) else ''})"]
    lines = "".join(f"    {line}\n" for line in "\n".join(body).split("\n")) if body else ""
    return f"{declarations}\n\nfun {_TESTS}() {{\n{lines}}}\n"


def kotlin_program(prompt: str, completion: str, test: str) -> KotlinProgram:
    """prompt + completion (the solution file) and the test (the tests' file, which also gets the
    prompt's imports): a KotlinProgram."""
    return KotlinProgram(_with_imports(f"{prompt}{completion}\n", []),
                         _with_imports(tests_as_main(test), _imports(prompt)), tuple(declared_names(prompt)))


Program = str | KotlinProgram  # a plain program (one file, passes on exit 0) or a benchmark's


def _sources(program: Program, package: str) -> dict[str, str]:
    return program.sources(package) if isinstance(program, KotlinProgram) else {"Main.kt": in_package(program, package)}


def in_package(program: str, package: str) -> str:
    """`program` moved into `package` (replacing a package line it has), so many programs
    compile side by side without their names clashing."""
    body = re.sub(r"^[ \t]*package[ \t]+[\w.]+[ \t]*;?[ \t]*$", "", program, count=1, flags=re.M)
    return f"package {package}\n\n{body}"


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------------------------- execution

# RLIMIT_DATA per JVM beyond its -Xmx: thread stacks, metaspace, code cache and GC tables
# (kotlinc with -Xmx512m fails to start its threads under 700 MB, runs under 1024 MB)
JVM_OVERHEAD_MB = 1024
JVM_OPTIONS = ("-XX:MaxMetaspaceSize=256m", "-Xss8m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
COMPILER_HEAP_MB = 1536
# A kotlinc call may take this long plus so much per program before it counts as hung (then its
# batch is bisected). Generous: on 2 loaded cores 50 small programs took 79 s of wall time.
COMPILE_TIMEOUT = 120.0
COMPILE_SECONDS_PER_PROGRAM = 5.0
BATCH_SIZE = 200  # programs per kotlinc call: bounds the compiler's memory


@dataclass
class KotlinRunner:
    """Compiles programs in batches and runs each alone; `timeout` bounds each program's run
    (each compiler call: COMPILE_TIMEOUT and COMPILE_SECONDS_PER_PROGRAM)."""

    kotlinc: str
    timeout: float = 30.0
    memory_mb: int = 512
    workers: int = 0  # parallel runs; 0: one per CPU core
    unsafe_no_sandbox: bool = False  # --unsafe-no-sandbox: limits only, no isolation
    deadline: float | None = None  # time.monotonic() by which everything must be done (run_kotlin)

    def _limit(self, seconds: float) -> float:
        if self.deadline is None:
            return seconds
        return max(1.0, min(seconds, self.deadline - time.monotonic()))

    def execute(self, programs: Sequence[Program]) -> list[ExecutionResult]:
        results: dict[int, ExecutionResult] = {}
        with tempfile.TemporaryDirectory(prefix="codelora-ktb-") as tmp:
            root = Path(tmp)
            root.chmod(0o755)  # the sandbox's uid (run as root: "nobody") must reach the batch dirs
            jars: dict[int, Path] = {}
            # One kotlinc call compiles a whole batch: the bar moves when a call ends.
            with progress(len(programs), "kotlinc: compiled", unit="program") as bar:
                for start in range(0, len(programs), BATCH_SIZE):
                    indices = list(range(start, min(start + BATCH_SIZE, len(programs))))
                    self._compile(programs, indices, root, jars, results)
                    bar.update(len(indices))
            workers = self.workers or max(1, os.cpu_count() or 1)
            with ThreadPoolExecutor(workers) as pool, progress(len(jars), "java: ran", unit="program") as bar:
                runs = {pool.submit(self._run, i, programs[i], jars[i], root): i for i in sorted(jars)}
                for run in as_completed(runs):
                    results[runs[run]] = run.result()
                    bar.update(1)
        return [results[i] for i in range(len(programs))]

    def _sandbox(self, *read_only: Path) -> dict:
        """run_sandboxed's isolation arguments: the compiler's and JRE's directories (and `read_only`,
        e.g. a batch's jar) readable inside."""
        return {"ro_binds": [*kotlin_binds(self.kotlinc), *read_only], "unsafe_no_sandbox": self.unsafe_no_sandbox}

    # -- compile

    def _compile(self, programs: Sequence[Program], indices: list[int], root: Path, jars: dict[int, Path],
                 results: dict[int, ExecutionResult]) -> None:
        """Compile `indices` into one jar; set aside the programs kotlinc blames, bisect otherwise."""
        while indices:
            out = root / f"batch{min(indices)}-{len(indices)}"
            out.mkdir()
            files = []
            for i in indices:
                (out / f"p{i}").mkdir()
                for name, source in _sources(programs[i], f"p{i}").items():
                    (out / f"p{i}" / name).write_text(source, encoding="utf-8")
                    files.append(f"p{i}/{name}")
            limit = max(COMPILE_TIMEOUT, self.timeout) + COMPILE_SECONDS_PER_PROGRAM * len(indices)
            compiled = run_sandboxed(
                [self.kotlinc, *files, "-include-runtime", "-nowarn", "-d", "batch.jar"],
                out, self._limit(limit), memory_mb=COMPILER_HEAP_MB + JVM_OVERHEAD_MB,
                env={"JAVA_OPTS": f"-Xmx{COMPILER_HEAP_MB}m -XX:+UseSerialGC", "JAVA_HOME": str(java_home())},
                **self._sandbox(),
            )
            per_file = compiled.seconds / len(indices)
            if compiled.returncode == 0 and (out / "batch.jar").is_file():
                jars.update({i: out / "batch.jar" for i in indices})
                return
            if len(indices) == 1:
                status = "timeout" if compiled.timed_out else "compile_error"
                detail = "compile timed out" if compiled.timed_out else _tail(compiled.stderr, 12)
                results[indices[0]] = ExecutionResult(status, detail, compiled.seconds)
                return
            blamed = {} if compiled.timed_out else _errors_by_file(compiled.stderr, indices)
            if not blamed:
                log.info("kotlinc: batch of %d failed without naming a file; bisecting", len(indices))
                half = len(indices) // 2
                self._compile(programs, indices[:half], root, jars, results)
                indices = indices[half:]
                continue
            for i, errors in blamed.items():
                results[i] = ExecutionResult("compile_error", _tail(errors, 12), per_file)
            indices = [i for i in indices if i not in blamed]

    # -- run

    def _run(self, index: int, program: Program, jar: Path, root: Path) -> ExecutionResult:
        """A KotlinProgram passes when it exits 0 with the run's nonce as its last line; a plain
        program (str) when it exits 0."""
        cwd = root / f"run{index}"
        cwd.mkdir()
        tests = isinstance(program, KotlinProgram)
        nonce = secrets.token_hex(16) if tests else None
        main = f"p{index}.{_TEST_PACKAGE}.RunnerKt" if tests else f"p{index}.MainKt"
        ran = run_sandboxed(
            [java_command(), f"-Xmx{self.memory_mb}m", *JVM_OPTIONS, "-ea", "-cp", str(jar), main],
            cwd, self._limit(self.timeout), memory_mb=self.memory_mb + JVM_OVERHEAD_MB,
            stdin=None if nonce is None else nonce + "\n", **self._sandbox(jar.parent),
        )
        if ran.timed_out:
            return ExecutionResult("timeout", "run timed out", ran.seconds)
        if ran.returncode != 0:
            return ExecutionResult("failed", _tail(ran.stderr or ran.stdout), ran.seconds)
        if nonce is not None and ran.stdout.rstrip("\n").rpartition("\n")[2] != nonce:
            return ExecutionResult("failed", "exited 0 before its tests finished (their end marker is missing)\n"
                                   + _tail(ran.stderr or ran.stdout), ran.seconds)
        return ExecutionResult("passed", "", ran.seconds)


_ERROR_LINE = re.compile(r"^p(\d+)/\w+\.kt:\d+:\d+: error: ", re.M)


def _errors_by_file(stderr: str, indices: Sequence[int]) -> dict[int, str]:
    """{program index: its error messages} from kotlinc's `p3/Main.kt:5:9: error: ...` lines (each
    message runs until the next file-located line)."""
    wanted = set(indices)
    found: dict[int, list[str]] = {}
    starts = list(_ERROR_LINE.finditer(stderr))
    located = [m.start() for m in re.finditer(r"^p\d+/\w+\.kt:\d+:\d+: ", stderr, re.M)] + [len(stderr)]
    for match in starts:
        i = int(match.group(1))
        if i in wanted:
            end = next(p for p in located if p > match.start())
            found.setdefault(i, []).append(stderr[match.start():end].rstrip())
    return {i: "\n".join(msgs) for i, msgs in found.items()}


def run_kotlin(program: Program, timeout: float = 30.0, memory_mb: int = 512, kotlinc: str | None = None,
               unsafe_no_sandbox: bool = False) -> ExecutionResult:
    """One program compiled alone and run with `java -ea`; `timeout` covers compile + run."""
    runner = KotlinRunner(require_kotlin(kotlinc), timeout, memory_mb, unsafe_no_sandbox=unsafe_no_sandbox,
                          deadline=time.monotonic() + timeout)
    return runner.execute([program])[0]
