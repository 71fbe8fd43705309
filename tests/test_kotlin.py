"""Kotlin programs: building them (script-style tests, imports, packages), pass@k, and batched
compilation (one kotlinc call for several programs, a compile error isolated from the others).
kotlinc calls cost seconds: one batch here. The stop rule that keeps helper functions: test_stops.py."""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import pytest

import codelora.kotlin as kotlin
from codelora.kotlin import KotlinRunner, declared_names, in_package, kotlin_program, kotlinc_version, require_kotlin
from codelora.metrics import pass_at_k


def test_pass_at_k_equals_its_combinatorial_definition():
    for n, k in product(range(1, 12), repeat=2):
        if k > n:
            continue
        for c in range(n + 1):
            exact = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_program_runs_script_style_tests_from_main():
    program = kotlin_program("fun f(x: Int): Int", " = x + 1", "check(f(1) == 2)\ncheck(f(2) == 3) {\n  \"f(2)\"\n}\n")
    assert program.solution == "fun f(x: Int): Int = x + 1\n"
    # the statements run from main, between reading the run's nonce and printing it
    assert ("fun codeloraTests() {\n    check(f(1) == 2)\n    check(f(2) == 3) {\n      \"f(2)\"\n    }\n}"
            in program.tests)
    mceval = kotlin_program("fun f(): Int", " { return 1 }", "fun main() {\n    assert(f() == 1)\n}\nmain()\n")
    assert "fun codeloraTestMain() {" in mceval.tests and "    codeloraTestMain()\n}" in mceval.tests
    imported = kotlin_program("import kotlin.math.max\nfun f(): Int", " { return 1 }", "import kotlin.math.abs\nfun main() { }")
    assert imported.solution.startswith("import kotlin.math.max\n")
    assert imported.tests.startswith("import kotlin.math.abs\nimport kotlin.math.max\n")  # the prompt's too
    files = imported.sources("p7")
    assert files["Solution.kt"].splitlines()[0] == "package p7"
    # the tests see only what the prompt declares, never a helper the completion adds
    assert files["Main.kt"].splitlines()[:4] == ["package p7.t", "", "import kotlin.math.abs", "import kotlin.math.max"]
    assert "import p7.f" in files["Main.kt"]
    # the entry point reads the run's nonce before anything of the tests' file or the solution runs
    assert files["Runner.kt"].startswith("package p7.t\n\nfun main() {\n    val codeloraRunNonce = readlnOrNull()\n"
                                         "    codeloraTests()\n")
    assert in_package("package a.b\nfun f() = 1\n", "p7").splitlines()[0] == "package p7"


def test_declared_names_are_the_prompts_top_level_names():
    prompt = ("import kotlin.math.abs\n\n/**\n * doc\n */\ndata class Point(val x: Int, var y: Int)\n"
              "private fun hidden() = 1\nval String.twice: String get() = this + this\nenum class Color { RED }\n"
              "typealias Grid = List<List<Int>>\nfun <T> List<T>.second(): T {\n    val inner = 1\n    return this[1]\n}\n"
              "fun solve(p: Point): Int {\n")
    assert declared_names(prompt) == ["Point", "twice", "Color", "Grid", "second", "solve"]


PROGRAMS = {
    # two programs defining the same names: their packages keep them apart
    "passes": kotlin_program("fun twice(x: Int): Int", " = helper(x)\nfun helper(x: Int) = 2 * x",
                             "fun main() {\n    assert(twice(2) == 4)\n}\nmain()\n"),
    "fails": kotlin_program("fun twice(x: Int): Int", " = x", "check(twice(2) == 4) { \"twice(2)\" }\n"),
    "compile_error": kotlin_program("fun twice(x: Int): Int", " = \"s\"", "fun main() {\n    twice(1)\n}\n"),
    "script_passes": kotlin_program("fun inc(x: Int): Int", " {\n    return x + 1\n}",
                                    "check(inc(1) == 2)\ncheck(inc(-1) == 0)\n"),
    "timeout": "fun main() {\n    while (true) {}\n}\n",
    # hostile completions that must not pass tests they fail: exit 0 before the tests end, shadow
    # the assertion functions with helpers the stop rule keeps, or turn a failure's exit status to 0
    "exits_early": kotlin_program("fun twice(x: Int): Int", " {\n    kotlin.system.exitProcess(0)\n}",
                                  "fun main() {\n    assert(twice(2) == 4)\n}\nmain()\n"),
    "shadows_assert": kotlin_program("fun twice(x: Int): Int", " = x\nfun assert(value: Boolean) {}\n"
                                     "fun check(value: Boolean, lazyMessage: () -> Any) {}",
                                     "fun main() {\n    assert(twice(2) == 4)\n    check(twice(3) == 6) { 3 }\n}\n"),
    "halts_in_hook": kotlin_program(
        "fun twice(x: Int): Int",
        " {\n    Runtime.getRuntime().addShutdownHook(Thread { Runtime.getRuntime().halt(0) })\n    return x\n}",
        "check(twice(2) == 4)\n"),
    # a test whose top-level initialiser calls the solution: that must not run before the nonce is read
    "steals_nonce": kotlin_program(
        "fun twice(x: Int): Int", " {\n    println(readlnOrNull())\n    kotlin.system.exitProcess(0)\n}",
        "val result = twice(2)\nfun main() {\n    assert(result == 4)\n}\n"),
}


def test_batch_compiles_once_and_isolates_the_compile_error(monkeypatch, capsys):
    kotlinc = require_kotlin()
    assert kotlinc_version(kotlinc) == "2.4.20"  # the pinned compiler of `make kotlin`
    calls = []
    real = kotlin.run_sandboxed

    def spy(argv, *args, **kwargs):
        calls.append(argv)
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(kotlin, "run_sandboxed", spy)
    results = KotlinRunner(kotlinc, timeout=8.0).execute(list(PROGRAMS.values()))
    by_name = dict(zip(PROGRAMS, results))
    assert {name: r.status for name, r in by_name.items()} == {
        "passes": "passed", "fails": "failed", "compile_error": "compile_error", "script_passes": "passed",
        "timeout": "timeout", "exits_early": "failed", "shadows_assert": "failed", "halts_in_hook": "failed",
        "steals_nonce": "failed"}
    assert "p2/Solution.kt" in by_name["compile_error"].detail and "mismatch" in by_name["compile_error"].detail
    assert "twice(2)" in by_name["fails"].detail  # the failed check's message: the stderr tail
    assert "before its tests finished" in by_name["exits_early"].detail
    assert "AssertionError" in by_name["shadows_assert"].detail  # kotlin's assert ran, not the helper
    compiles = [argv for argv in calls if argv[0] == kotlinc]
    # all nine in one call (three files each, one for the plain program); kotlinc named the broken
    # file, so the other eight compile once more
    assert [len([a for a in argv if a.endswith(".kt")]) for argv in compiles] == [25, 22]
    assert len(calls) - len(compiles) == 8  # one java process per compiled program
    # progress: how many programs are compiled, then how many of the compiled ones have run
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "kotlinc: compiled: 100%" in err and "9/9" in err
    assert "java: ran: 100%" in err and "8/8" in err


def test_install_behind_a_private_directory_runs_from_a_reachable_mirror(tmp_path, monkeypatch):
    """A clone under `mktemp -d` (mode 700): the sandbox's uid 65534 cannot reach its .tools/kotlinc.
    kotlinc_command() then hands out a world-readable hard-linked mirror, and programs still run."""
    import os
    import shutil

    from codelora.sandbox import private_parent

    real_home = kotlin.PROJECT_KOTLINC.resolve().parents[1]
    require_kotlin()
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    hidden.chmod(0o700)  # whatever the umask
    home = hidden / "kotlinc"

    shutil.copytree(real_home, home, copy_function=os.link, symlinks=True)
    assert private_parent(home) is not None  # pytest's own tmp is private too
    mirror = kotlin.reachable_install(home)
    assert private_parent(mirror) is None and mirror != home
    assert (mirror / "bin" / "kotlinc").read_bytes() == (home / "bin" / "kotlinc").read_bytes()
    assert os.access(mirror / "bin" / "kotlinc", os.X_OK)
    assert kotlin.reachable_install(home) == mirror  # made once, then reused

    monkeypatch.setattr(kotlin, "PROJECT_KOTLINC", home / "bin" / "kotlinc")
    kotlinc = kotlin.kotlinc_command()
    if os.geteuid() == 0:
        assert kotlinc == str(mirror / "bin" / "kotlinc")
    try:
        [result] = KotlinRunner(kotlinc, timeout=8.0).execute([PROGRAMS["passes"]])
        assert result.status == "passed", result.detail
    finally:
        shutil.rmtree(mirror)


def test_project_kotlinc_is_found_in_the_working_directory_of_an_installed_package(tmp_path, monkeypatch):
    """Installed with `pip install .`, the package is not beside the checkout's .tools/: the
    compiler `make kotlin` installed is then found from the working directory."""
    monkeypatch.setattr(kotlin, "PROJECT_KOTLINC", tmp_path / "site-packages" / ".tools" / "kotlinc" / "bin" / "kotlinc")
    monkeypatch.chdir(tmp_path)
    assert kotlin.project_kotlinc() is None
    installed = tmp_path / ".tools" / "kotlinc" / "bin" / "kotlinc"
    installed.parent.mkdir(parents=True)
    installed.write_text("#!/bin/sh\n")
    assert kotlin.project_kotlinc() == Path.cwd() / ".tools" / "kotlinc" / "bin" / "kotlinc"
