"""parse_data.py: which files come out of a repository, why the others do not, and bad inputs."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest

from codelora import parse
from codelora.config import ParseConfig
from codelora.contracts import parse_stats_path
from codelora.parse import main as parse_main
from codelora.utils import UserError
from tests.conftest import git, make_git_repo

HEADER = "/*\n * Copyright 2010-2024 Example Corp.\n * Licensed under the Apache License, Version 2.0.\n */\n\n"
MAIN_KT = HEADER + "package demo\n\nfun main() {\n    println(\"hi\")\n}\n"
UTIL_KT = "package demo\n\nfun twice(x: Int): Int = x * 2\n\nfun thrice(x: Int): Int = x * 3\n"
HUGE_KT = "package demo\n\nval table = \"" + "1234567890" * 50 + "\"\n\nfun f() = table.length\n"
CRLF_KT = "package demo\r\n\r\nfun crlf(): Int {\r\n    return 1\r\n}\r\n"
SECRET = "SECRET-OUTSIDE-THE-REPO fun leaked() = 42\n"


@pytest.fixture
def kotlin_repo(tmp_path: Path) -> Path:
    """A repository holding one example of every kind of file parse_data must keep or drop."""
    outside = tmp_path / "outside" / "secret.kt"
    outside.parent.mkdir()
    outside.write_text(SECRET)
    root = make_git_repo(tmp_path / "repo", {
        "src/Main.kt": MAIN_KT,                          # kept (header stripped later, in preprocess)
        "src/Util.kt": UTIL_KT,                          # kept
        "src/Huge.kt": HUGE_KT,                          # kept here; preprocess drops it
        "src/Crlf.kt": CRLF_KT,                          # kept, byte for byte
        "src/nested/deep/Copy.kt": UTIL_KT,              # duplicate of src/Util.kt
        "src/Binary.kt": b"package demo\n\x00\x01\x02 binary payload \x00" * 4,  # binary
        "src/Latin1.kt": "package d\n// caf\u00e9 na\u00efve r\u00e9sum\u00e9 comment\n".encode("latin-1"),
        "src/Tiny.kt": "val x=1\n",                      # under --min-bytes
        "build/Generated.kt": UTIL_KT + "// generated\n",  # build output directory
        "third_party/lib/Vendored.kt": UTIL_KT + "// vendored\n",
        "README.md": "# readme, not Kotlin, long enough to pass the size filter\n",
        "scripts/build.gradle.kts": "plugins { kotlin(\"jvm\") version \"1.9.0\" }\n",
    })
    os.symlink(outside, root / "src" / "Evil.kt")  # tracked symlink to a file outside the repo
    os.symlink("/etc/passwd", root / "Passwd.kt")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "links")
    (root / "src" / "Untracked.kt").write_text(UTIL_KT + "// untracked\n")
    return root


def read_output(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = parse_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_kept_files_and_drop_reasons(kotlin_repo, tmp_path, capsys):
    out = tmp_path / "data" / "raw.jsonl"
    code, stdout, _ = run(["--repo", str(kotlin_repo), "--output", str(out)], capsys)
    assert code == 0
    rows = read_output(out)
    assert [r["path"] for r in rows] == ["src/Crlf.kt", "src/Huge.kt", "src/Main.kt", "src/Util.kt"]
    by_path = {r["path"]: r for r in rows}
    assert by_path["src/Main.kt"]["file_text"] == MAIN_KT
    assert by_path["src/Crlf.kt"]["file_text"] == CRLF_KT  # exact text: CRLF survives
    head = git(kotlin_repo, "rev-parse", "HEAD")
    for r in rows:
        assert r["commit"] == head
        assert r["repo"] == str(kotlin_repo.resolve())
        assert r["sha256"] == hashlib.sha256(r["file_text"].encode()).hexdigest()
    assert "SECRET" not in out.read_text() and "root:" not in out.read_text()

    stats = json.loads(parse_stats_path(out).read_text())
    # 12 tracked files + 2 tracked links; the untracked file is not even seen
    assert stats["seen"] == 14 and stats["kept"] == 4
    assert stats["dropped"] == {
        "extension": 2, "excluded_dir": 2, "symlink": 2, "too_small": 1, "binary": 1, "not_utf8": 1,
        "duplicate": 1,
    }
    assert "14 files seen, 4 kept" in stdout and "symlink 2" in stdout


def test_extensions_and_size_limits(kotlin_repo, tmp_path, capsys):
    out = tmp_path / "raw.jsonl"
    code, _, _ = run(["--repo", str(kotlin_repo), "--extensions", "kts", "--output", str(out)], capsys)
    assert code == 0
    assert [r["path"] for r in read_output(out)] == ["scripts/build.gradle.kts"]
    code, _, _ = run(["--repo", str(kotlin_repo), "--max-bytes", "200", "--output", str(out)], capsys)
    assert code == 0
    stats = json.loads(parse_stats_path(out).read_text())
    assert stats["dropped"]["too_large"] == 1  # Huge.kt (~560 bytes)


def test_file_url_branch_tag_and_sha(kotlin_repo, tmp_path, capsys):
    first = git(kotlin_repo, "rev-parse", "HEAD")
    git(kotlin_repo, "tag", "v1")
    (kotlin_repo / "src" / "Later.kt").write_text(UTIL_KT + "fun later() = 1\n")
    git(kotlin_repo, "add", "src/Later.kt")
    git(kotlin_repo, "commit", "-q", "-m", "later")
    url = kotlin_repo.resolve().as_uri()
    out = tmp_path / "raw.jsonl"
    for revision, expect_later in ((None, True), ("main", True), ("v1", False), (first, False)):
        argv = ["--repo", url, "--output", str(out)] + (["--revision", revision] if revision else [])
        code, _, err = run(argv, capsys)
        assert code == 0, err
        rows = read_output(out)
        assert ("src/Later.kt" in [r["path"] for r in rows]) is expect_later
        assert rows[0]["repo"] == url
        assert rows[0]["commit"] == (first if revision in ("v1", first) else git(kotlin_repo, "rev-parse", "HEAD"))


def test_local_revision_and_subdirectory(kotlin_repo, tmp_path, capsys):
    out = tmp_path / "raw.jsonl"
    (kotlin_repo / "src" / "Util.kt").write_text("package demo\n\nfun changed() = 0 // uncommitted\n")
    code, _, _ = run(["--repo", str(kotlin_repo / "src"), "--revision", "HEAD", "--output", str(out)], capsys)
    assert code == 0
    rows = read_output(out)
    assert all(r["path"].startswith("src/") for r in rows)
    # Committed content, not the dirty working tree.
    assert {r["path"]: r["file_text"] for r in rows}["src/Util.kt"] == UTIL_KT
    # Any revision git can name in the source works locally (here: before the links were added).
    code, _, _ = run(["--repo", str(kotlin_repo), "--revision", "HEAD~1", "--output", str(out)], capsys)
    assert code == 0
    stats = json.loads(parse_stats_path(out).read_text())
    assert stats["sources"][0]["commit"] == git(kotlin_repo, "rev-parse", "HEAD~1")
    assert "symlink" not in stats["dropped"] and stats["seen"] == 12


def test_plain_directory_does_not_follow_links(tmp_path, capsys):
    root = tmp_path / "plain"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "A.kt").write_text(UTIL_KT)
    secret = tmp_path / "secret.kt"
    secret.write_text(SECRET)
    os.symlink(secret, root / "pkg" / "Link.kt")
    os.symlink(tmp_path, root / "loop")  # a directory link: not descended into
    os.mkfifo(root / "pkg" / "Pipe.kt")  # opening a FIFO would block: must be skipped unread
    out = tmp_path / "raw.jsonl"
    code, _, err = run(["--repo", str(root), "--output", str(out)], capsys)
    assert code == 0, err
    rows = read_output(out)
    assert [(r["path"], r["commit"]) for r in rows] == [("pkg/A.kt", None)]
    stats = json.loads(parse_stats_path(out).read_text())
    assert stats["dropped"] == {"extension": 1, "symlink": 1, "not_regular": 1}


def test_multiple_repos_drop_cross_repo_duplicates(kotlin_repo, tmp_path, capsys):
    other = make_git_repo(tmp_path / "other", {"B.kt": UTIL_KT, "C.kt": UTIL_KT + "val c = 3\n"})
    out = tmp_path / "raw.jsonl"
    code, _, _ = run(["--repo", str(kotlin_repo), "--repo", str(other), "--output", str(out)], capsys)
    assert code == 0
    rows = read_output(out)
    assert [(Path(r["repo"]).name, r["path"]) for r in rows][-1] == ("other", "C.kt")
    assert len(rows) == 5


# ------------------------------------------------------------------------------ bad inputs


BAD_INPUTS = [
    (["--repo", "file:///nonexistent/repo.git"], "cannot clone file:///nonexistent/repo.git"),
    (["--repo", "https://127.0.0.1:9/nope.git"], "cannot clone https://127.0.0.1:9/nope.git"),
    (["--repo", "/no/such/dir"], "no such directory, and not a git URL"),
    (["--repo=--upload-pack=touch PWNED"], "must not begin with '-'"),
    (["--repo", "ext::sh -c touch% PWNED"], "ext:: transport"),
    (["--repo", "fd::17"], "ext:: transport"),
    (["--revision=--upload-pack=touch PWNED"], "--revision '--upload-pack=touch PWNED': must not begin"),
    (["--revision", "no-such-branch"], "unknown revision 'no-such-branch'"),
    (["--extensions", ".swift"], "no files matched (extensions .swift"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=[m.split()[0] + str(i) for i, (_, m) in
                                                              enumerate(BAD_INPUTS)])
def test_bad_input_one_line_error_nothing_written(extra, message, kotlin_repo, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "raw.jsonl"
    out.write_text("OLD CONTENTS\n")  # an existing (earlier) output stays untouched on failure
    parse_stats_path(out).write_text("{}")
    argv = ["--repo", str(kotlin_repo), "--output", str(out)]
    argv = [a for a in argv if not (extra[0].startswith("--repo") and a in ("--repo", str(kotlin_repo)))]
    code, stdout, err = run(argv + extra, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("parse_data.py: error: ") and message in lines[-1], err
    assert "Traceback" not in err
    assert out.read_text() == "OLD CONTENTS\n"
    assert parse_stats_path(out).read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temp left
        "outside", "raw.jsonl", "raw.jsonl.stats.json", "repo"]
    assert not (tmp_path / "PWNED").exists()


def test_unwritable_output(kotlin_repo, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run(["--repo", str(kotlin_repo), "--output", str(blocker / "raw.jsonl")], capsys)
    assert code == 2 and "cannot write" in err and "not a writable directory" in err
    code, _, err = run(["--repo", str(kotlin_repo), "--output", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in err


def test_clone_removed_on_error_and_interrupt(kotlin_repo, tmp_path, monkeypatch, capsys):
    clones = tmp_path / "tmp"
    clones.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(clones))
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy_mkdtemp(*args, **kwargs):
        made.append(Path(real_mkdtemp(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", spy_mkdtemp)
    out = tmp_path / "raw.jsonl"
    for exc, code in ((KeyboardInterrupt, 130), (OSError("disk on fire"), 1)):
        def boom(data, exc=exc):
            raise exc

        monkeypatch.setattr(parse, "decode_source", boom)
        assert parse_main(["--repo", kotlin_repo.resolve().as_uri(), "--output", str(out)]) == code
        assert made and not made[-1].exists()
        assert list(clones.iterdir()) == []
        assert not out.exists() and list(tmp_path.glob(".raw.jsonl*")) == []
    capsys.readouterr()


def test_classify_source_rejects_and_strips_credentials():
    src = parse.classify_source("https://user:s3cret@example.com/org/repo.git")
    assert src.kind == "url" and src.label == "https://example.com/org/repo.git"
    with pytest.raises(UserError, match="unsupported URL scheme 'ftp'"):
        parse.classify_source("ftp://example.com/repo.git")
    with pytest.raises(UserError, match="ext::"):
        parse.classify_source("EXT::sh -c id")
    assert parse.classify_source("git@github.com:JetBrains/kotlin.git").kind == "url"
    with pytest.raises(UserError, match="--min-bytes"):
        ParseConfig(min_bytes=10, max_bytes=10)


def test_repeated_repo_flag_accumulates():
    from codelora.cli import parse_config

    cfg, _ = parse_config(ParseConfig, ["--repo", "a", "--output", "o", "--repo", "b", "c"], "p", "", "", "parse")
    assert cfg.repo == ["a", "b", "c"] and cfg.output == "o"
    cfg, _ = parse_config(ParseConfig, ["--repo=a", "--repo=b"], "p", "", "", "parse")
    assert cfg.repo == ["a", "b"]
    cfg, _ = parse_config(ParseConfig, ["--repo", "a", "--repo=--upload-pack=x"], "p", "", "", "parse")
    assert cfg.repo == ["a", "--upload-pack=x"]  # kept, so classify_source rejects it by name
    with pytest.raises(UserError, match="must not begin with '-'"):
        parse.classify_source("--upload-pack=x")


def test_untracked_directory_inside_a_repository(kotlin_repo, tmp_path, capsys):
    ignored = kotlin_repo / "ignored"
    ignored.mkdir()
    (ignored / "A.kt").write_text(UTIL_KT)
    out = tmp_path / "raw.jsonl"
    code, _, err = run(["--repo", str(ignored), "--output", str(out)], capsys)
    assert code == 2 and "tracks no files there" in err and not out.exists()


# ------------------------------------------------------------------------------ damaged repositories


def test_non_utf8_file_name_is_kept_with_an_escaped_path(tmp_path, capsys):
    root = make_git_repo(tmp_path / "repo", {"src/Ok.kt": UTIL_KT})
    (root / "src" / os.fsdecode(b"caf\xe9.kt")).write_text(UTIL_KT + "// accented name\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "latin-1 name")
    out = tmp_path / "raw.jsonl"
    code, _, err = run(["--repo", str(root), "--output", str(out)], capsys)
    assert code == 0, err
    assert sorted(r["path"] for r in read_output(out)) == ["src/Ok.kt", "src/caf\\xe9.kt"]
    # the same for a plain directory
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / os.fsdecode(b"na\xefve.kt")).write_text(UTIL_KT)
    code, _, err = run(["--repo", str(plain), "--output", str(out)], capsys)
    assert code == 0, err
    assert [r["path"] for r in read_output(out)] == ["na\\xefve.kt"]


def _delete_blob(root: Path, rev_path: str) -> None:
    sha = git(root, "rev-parse", rev_path)
    (root / ".git" / "objects" / sha[:2] / sha[2:]).unlink()


def test_missing_blob_is_a_drop_reason_not_a_crash(tmp_path, capsys):
    root = make_git_repo(tmp_path / "repo", {"src/Ok.kt": UTIL_KT, "notes.txt": "filtered anyway\n",
                                             "src/Gone.kt": UTIL_KT + "// gone\n"})
    _delete_blob(root, "HEAD:notes.txt")
    out = tmp_path / "raw.jsonl"
    code, _, err = run(["--repo", str(root), "--output", str(out)], capsys)
    assert code == 0, err
    _delete_blob(root, "HEAD:src/Gone.kt")
    code, _, err = run(["--repo", str(root), "--output", str(out)], capsys)
    assert code == 0, err
    assert [r["path"] for r in read_output(out)] == ["src/Ok.kt"]
    side = json.loads(parse_stats_path(out).read_text())
    assert side["dropped"]["missing_blob"] == 1 and side["dropped"]["extension"] == 1


def test_bare_repository_without_config_inside_another_repository(tmp_path, capsys):
    parent = make_git_repo(tmp_path / "parent", {"Parent.kt": UTIL_KT + "// parent\n"})
    inner = make_git_repo(tmp_path / "inner", {"src/Inner.kt": UTIL_KT})
    bare = parent / "inner.git"
    git(tmp_path, "clone", "-q", "--bare", str(inner), str(bare))
    (bare / "config").unlink()  # git still reads it as a bare repository
    out = tmp_path / "raw.jsonl"
    code, _, err = run(["--repo", str(bare), "--output", str(out)], capsys)
    assert code == 0, err
    assert [r["path"] for r in read_output(out)] == ["src/Inner.kt"]
