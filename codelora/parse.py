"""parse_data.py: git repository (URL, file:// URL or local path) → one JSON line per source file.

Files are read from git's object database, never from a checkout: the clone is bare, `git ls-tree`
lists exactly what the commit tracks (untracked files cannot appear), and a symlink is a blob of
mode 120000 that is skipped by its mode, so a tracked `evil.kt -> /etc/passwd` is never opened.
A plain directory (not a git repository) is walked without following links.

Every record: file_text (the exact decoded bytes), path (relative, POSIX), repo, commit (resolved
SHA, null for a plain directory) and sha256 (of the bytes; used to drop exact duplicates).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from codelora.config import ParseConfig, config_to_dict
from codelora.contracts import parse_stats_path
from codelora.utils import UserError, atomic_file, check_writable_parent, sigterm_as_interrupt, write_json

log = logging.getLogger(__name__)

DESCRIPTION = "Extract the source files of git repositories into a JSON Lines file (one record per file)."
EXAMPLES = """\
  # the reference run: every .kt file of JetBrains/kotlin (shallow clone of the default branch)
  python parse_data.py
  # a local checkout (read from its commits, not its working tree), Kotlin sources and scripts
  python parse_data.py --repo ~/src/ktor --extensions .kt .kts --output data/ktor_code_raw.jsonl
  # a tag of a remote repository, several repositories into one file
  python parse_data.py --repo https://github.com/Kotlin/kotlinx.coroutines --revision 1.8.0 \\
      --repo https://github.com/square/okio --output data/kotlin_libs_code_raw.jsonl
"""

# Drop reasons, in the order the checks run (the summary prints them in this order).
REASONS = (
    "extension", "excluded_dir", "symlink", "submodule", "not_regular", "missing_blob",
    "too_small", "too_large", "binary", "not_utf8", "duplicate",
)

# Only these transports may be used, for the clone and anything git might fetch on the side
# (git honours GIT_ALLOW_PROTOCOL everywhere): no ext::, fd::, or other remote helpers.
_ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
_SCP_LIKE = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:")  # git@github.com:owner/repo.git
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class Source:
    """One --repo argument, classified."""

    spec: str  # as the user gave it
    kind: str  # "url" | "git" (local repository) | "dir" (plain directory)
    location: str  # URL to fetch, or absolute local path
    label: str  # written to each record's `repo` (credentials removed)
    prefix: str = ""  # for a subdirectory of a local repository: the subtree to read


@dataclass
class ParseStats:
    seen: int = 0
    kept: int = 0
    kept_bytes: int = 0
    dropped: Counter = field(default_factory=Counter)
    sources: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "seen": self.seen,
            "kept": self.kept,
            "kept_bytes": self.kept_bytes,
            "dropped": {r: self.dropped[r] for r in REASONS if self.dropped[r]},
            "sources": self.sources,
        }


# ------------------------------------------------------------------------------ input checks


def _strip_credentials(url: str) -> str:
    """https://user:token@host/x → https://host/x, so tokens never land in a dataset."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def check_user_string(value: str, what: str) -> None:
    """Refuse strings that git could read as an option or a command-running transport.

    GitPython passes `--` before the URL, but a revision or a helper URL is still interpreted
    by git; reject these outright rather than rely on every call site (CVE-2022-24439 class).
    """
    if not value or not value.strip():
        raise UserError(f"{what}: empty value")
    if value.lstrip().startswith("-"):
        raise UserError(f"{what} {value!r}: must not begin with '-' (it would be read as a git option)")
    if any(ch in value for ch in "\0\n\r"):
        raise UserError(f"{what} {value!r}: control characters are not allowed")


def classify_source(spec: str) -> Source:
    check_user_string(spec, "--repo")
    low = spec.strip().lower()
    if low.startswith("ext::") or "::" in low.split("/", 1)[0] or low.startswith("ext://"):
        raise UserError(f"--repo {spec!r}: the ext:: transport and other git remote helpers are not allowed")
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"--repo {spec!r}: not a directory or git repository")
        return _classify_local(spec, path.resolve())
    if _URL_SCHEME.match(spec) or _SCP_LIKE.match(spec):
        scheme = spec.split("://", 1)[0].lower() if "://" in spec else "ssh"
        if scheme not in _ALLOWED_PROTOCOLS.split(":") and scheme not in ("git+ssh", "ssh+git"):
            raise UserError(f"--repo {spec!r}: unsupported URL scheme '{scheme}' (use https, ssh, git or file)")
        return Source(spec, "url", spec, _strip_credentials(spec))
    raise UserError(f"--repo {spec!r}: no such directory, and not a git URL")


def _classify_local(spec: str, path: Path) -> Source:
    """A local git repository (work tree, bare, or a subdirectory of one), or a plain directory."""
    import git

    bare_dir = _bare_git_dir(path)
    if bare_dir is not None:
        return Source(spec, "git", str(bare_dir), str(bare_dir))
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return Source(spec, "dir", str(path), str(path))
    try:
        top = Path(repo.working_tree_dir or repo.git_dir).resolve()
    finally:
        repo.close()
    prefix = path.relative_to(top).as_posix() if path != top and path.is_relative_to(top) else ""
    if prefix == ".git" or prefix.startswith(".git/"):
        prefix = ""
    return Source(spec, "git", str(top), str(top), prefix)


def _bare_git_dir(path: Path) -> Path | None:
    """The repository directory when git itself reads `path` as a bare repository, else None.

    Asked of git, not GitPython: GitPython takes a bare repository without a `config` file (which
    git accepts) for a subdirectory of the enclosing work tree.
    """
    import git

    try:
        bare, git_dir = git.Git(str(path)).rev_parse("--is-bare-repository", "--absolute-git-dir").split("\n")
    except (git.GitCommandError, ValueError):
        return None
    return Path(git_dir).resolve() if bare.strip() == "true" else None


# ------------------------------------------------------------------------------ git plumbing


def _git_env() -> dict[str, str]:
    env = {
        "GIT_ALLOW_PROTOCOL": _ALLOWED_PROTOCOLS,
        "GIT_TERMINAL_PROMPT": "0",  # a private or missing https repo fails instead of prompting
        "GCM_INTERACTIVE": "never",
        "GIT_LFS_SKIP_SMUDGE": "1",
    }
    if "GIT_SSH_COMMAND" not in os.environ and "GIT_SSH" not in os.environ:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"  # never wait for a password
    return env


def _git_error(err: Exception) -> str:
    """The `fatal:`/`error:` lines of a git failure, joined into one line."""
    text = str(getattr(err, "stderr", "") or err)
    found = []
    for line in text.splitlines():
        for tag in ("fatal:", "error:"):
            if tag in line:
                found.append(line.split(tag, 1)[1].strip().rstrip("'").strip())
                break
    return "; ".join(found) if found else (text.strip().splitlines() or ["git failed"])[-1]


def _resolve(repo, rev: str) -> str:
    """`rev` as a full commit SHA; `repo` is a git.Repo or a git.Git command runner."""
    import git

    runner = repo if isinstance(repo, git.Git) else repo.git
    return runner.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}").strip()


@contextlib.contextmanager
def checkout_source(src: Source, revision: str | None, depth: int) -> Iterator[tuple[object, str]]:
    """Yield (bare GitPython Repo, resolved commit SHA) for a git source; the clone is deleted after.

    Remote and file:// URLs: `git init --bare` + `git fetch --depth N URL REV` (one shallow
    transfer that works for branches, tags and full SHAs alike). Local repositories:
    `git clone --bare --shared`, which copies no objects (it borrows the source's object store
    through alternates), so even a multi-GB local repository costs nothing.
    """
    import git

    env = _git_env()
    tmp = Path(tempfile.mkdtemp(prefix="codelora-clone-"))
    repo = None
    try:
        if src.kind == "git":
            # Resolve in the source repository itself, so every revision the user can name there
            # works (HEAD~3, origin/main, a worktree's HEAD); the clone borrows all its objects.
            rev = revision or "HEAD"
            try:
                # git.Git, not git.Repo: git's own discovery (see _bare_git_dir)
                commit = _resolve(git.Git(src.location), rev)
            except git.GitCommandError:
                what = f"unknown revision {rev!r}" if revision else "it has no commits"
                raise UserError(f"cannot read {src.spec}: {what}") from None
            try:
                repo = git.Repo.clone_from(src.location, tmp / "repo", bare=True, shared=True, env=env)
            except git.GitCommandError as err:
                raise UserError(f"cannot clone {src.spec}: {_git_error(err)}") from None
        else:
            repo = git.Repo.init(tmp / "repo", bare=True)
            repo.git.update_environment(**env)
            rev = revision or "HEAD"
            depth_args = [f"--depth={depth}"] if depth > 0 else []
            log.info("fetching %s (%s%s)", src.label, rev, f", depth {depth}" if depth else "")
            try:
                repo.git.fetch(*depth_args, "--no-tags", "--", src.location, rev)
            except git.GitCommandError as err:
                raise UserError(_fetch_failure(repo, src, revision, err)) from None
            commit = _resolve(repo, "FETCH_HEAD")
        yield repo, commit
    finally:
        if repo is not None:
            repo.close()  # stop GitPython's persistent cat-file processes before deleting
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_failure(repo, src: Source, revision: str | None, err: Exception) -> str:
    """Tell an unreachable repository apart from an unknown revision (one cheap ls-remote)."""
    import git

    if revision is not None:
        try:
            repo.git.ls_remote("--", src.location, "HEAD")
        except git.GitCommandError:
            pass
        else:
            return (f"unknown revision {revision!r} in {src.label} "
                    "(give a branch, a tag or a full commit SHA)")
    return f"cannot clone {src.label}: {_git_error(err)}"


# ------------------------------------------------------------------------------ file listing


@dataclass
class Entry:
    path: str  # relative POSIX path (record's `path`)
    kind: str  # "file" | "symlink" | "submodule" | "missing" (blob absent from the repository) | "other"
    size: int
    ref: str  # blob SHA (git) or absolute path (plain directory)


def list_git_files(repo, commit: str, prefix: str = "") -> list[Entry]:
    """Every path the commit tracks, with mode-derived kind and blob size (no blob is read)."""
    args = ["-r", "-l", "-z", "--full-tree", commit]
    if prefix:
        args += ["--", prefix]
    out = repo.git.ls_tree(*args, strip_newline_in_stdout=False, stdout_as_string=False)
    entries = []
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, path = record.split(b"\t", 1)
        mode, _type, sha, size = meta.decode("ascii").split()
        kind = {"120000": "symlink", "160000": "submodule"}.get(mode, "file")
        if size == "BAD":  # ls-tree's word for a blob that is not in the object database
            kind, size = "missing", "0"
        entries.append(Entry(display_path(path), kind, int(size) if size != "-" else 0, sha))
    return sorted(entries, key=lambda e: e.path)


def display_path(raw: bytes | str) -> str:
    """A file name as a JSON-safe string: UTF-8 names as they are, other bytes as `\\xNN` escapes
    (git and POSIX allow any bytes in a name; a record must still be valid UTF-8)."""
    data = os.fsencode(raw) if isinstance(raw, str) else raw
    return data.decode("utf-8", "backslashreplace")


def list_dir_files(root: Path) -> list[Entry]:
    """All entries under a plain directory; links are reported, never followed."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        base = Path(dirpath)
        # A symlinked directory appears in dirnames but os.walk does not descend into it;
        # report it so the summary accounts for it.
        for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]:
            full = base / name
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                kind = "symlink"
            elif stat.S_ISREG(st.st_mode):
                kind = "file"
            else:
                kind = "other"
            entries.append(Entry(display_path(full.relative_to(root).as_posix()), kind, st.st_size, str(full)))
    return sorted(entries, key=lambda e: e.path)


def read_plain_file(path: str) -> bytes:
    # O_NOFOLLOW: if the file was swapped for a link after listing, refuse rather than follow.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


# ------------------------------------------------------------------------------ filtering


def path_filter(entry: Entry, cfg: ParseConfig) -> str | None:
    """The drop reason decidable without reading the file, or None."""
    name = entry.path.rsplit("/", 1)[-1]
    if not any(name.endswith(ext) and len(name) > len(ext) for ext in cfg.extensions):
        return "extension"
    excluded = set(cfg.exclude_dirs)
    if any(part in excluded for part in entry.path.split("/")[:-1]):
        return "excluded_dir"
    if entry.kind != "file":
        return {"symlink": "symlink", "submodule": "submodule", "missing": "missing_blob"}.get(
            entry.kind, "not_regular")
    if entry.size < cfg.min_bytes:
        return "too_small"
    if entry.size > cfg.max_bytes:
        return "too_large"
    return None


def decode_source(data: bytes) -> tuple[str | None, str | None]:
    """(text, None) for a UTF-8 text file, else (None, reason)."""
    # Like git's own heuristic: a NUL byte means binary (UTF-8 text never contains one).
    if b"\0" in data:
        return None, "binary"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "not_utf8"


def iter_records(cfg: ParseConfig, stats: ParseStats) -> Iterator[dict]:
    """Records of every kept file of every --repo, in order; updates `stats` as it goes."""
    from tqdm.auto import tqdm

    seen_hashes: set[str] = set()
    sources = [classify_source(spec) for spec in cfg.repo]  # validate all before any clone
    for src in sources:
        with contextlib.ExitStack() as stack:
            if src.kind == "dir":
                if cfg.revision:
                    raise UserError(f"--revision: {src.spec} is not a git repository")
                commit, entries, reader = None, list_dir_files(Path(src.location)), read_plain_file
            else:
                repo, commit = stack.enter_context(checkout_source(src, cfg.revision, cfg.depth))
                entries = list_git_files(repo, commit, src.prefix)

                def reader(sha: str, repo=repo) -> bytes:
                    return repo.odb.stream(bytes.fromhex(sha)).read()

            if src.prefix and not entries:
                raise UserError(f"--repo {src.spec}: lies inside the git repository {src.location}, which "
                                "tracks no files there (copy it elsewhere to read it as a plain directory)")
            stats.sources.append({"repo": src.label, "commit": commit, "files": len(entries)})
            stats.seen += len(entries)
            candidates = []
            for entry in entries:
                reason = path_filter(entry, cfg)
                if reason:
                    stats.dropped[reason] += 1
                else:
                    candidates.append(entry)
            log.info("%s @ %s: %d entries, %d candidates", src.label, (commit or "working dir")[:12],
                     len(entries), len(candidates))
            for entry in tqdm(candidates, desc=f"reading {Path(src.label).name}", unit="file",
                              disable=None, leave=False):
                data = reader(entry.ref)
                # Re-check the size on the bytes actually read (a plain file may have changed).
                if not cfg.min_bytes <= len(data) <= cfg.max_bytes:
                    stats.dropped["too_small" if len(data) < cfg.min_bytes else "too_large"] += 1
                    continue
                text, reason = decode_source(data)
                digest = hashlib.sha256(data).hexdigest()
                if reason is None and digest in seen_hashes:
                    reason = "duplicate"
                if reason:
                    stats.dropped[reason] += 1
                    continue
                seen_hashes.add(digest)
                stats.kept += 1
                stats.kept_bytes += len(data)
                yield {"file_text": text, "path": entry.path, "repo": src.label, "commit": commit,
                       "sha256": digest}


# ------------------------------------------------------------------------------ the stage


def format_summary(stats: ParseStats, output: Path) -> str:
    dropped = ", ".join(f"{r} {stats.dropped[r]}" for r in REASONS if stats.dropped[r]) or "none"
    return (f"parse_data.py: {stats.seen} files seen, {stats.kept} kept "
            f"({stats.kept_bytes / 1e6:.1f} MB) -> {output}\n  dropped: {dropped}")


def run_parse(cfg: ParseConfig) -> ParseStats:
    output = Path(cfg.output)
    if output.is_dir():
        raise UserError(f"--output {output} is a directory; give a file path")
    if output.exists() and not parse_stats_path(output).is_file():
        # an earlier parse_data.py output has its sidecar; anything else there is the user's
        raise UserError(f"--output {output}: exists and is not a parse_data.py output (no "
                        f"{parse_stats_path(output).name} beside it); name a new file")
    check_writable_parent(output)
    if cfg.revision is not None:
        check_user_string(cfg.revision, "--revision")
    for spec in cfg.repo:  # fail on a bad --repo before cloning any other
        classify_source(spec)

    stats = ParseStats()
    with sigterm_as_interrupt(), atomic_file(output) as handle:
        for record in iter_records(cfg, stats):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        if stats.kept == 0:  # raising inside the block discards the temp file
            exts = " ".join(cfg.extensions)
            raise UserError(f"no files matched (extensions {exts}; {stats.seen} files seen; "
                            f"dropped: {dict(stats.dropped) or 'none'})")
    write_json(parse_stats_path(output), {"config": config_to_dict(cfg), **stats.as_dict()})
    print(format_summary(stats, output))
    return stats


def main(argv: list[str] | None = None) -> int:
    from codelora.cli import run_command

    return run_command("parse", argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
