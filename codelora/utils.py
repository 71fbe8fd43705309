"""Small shared helpers: the user-error type, atomic writes, JSON Lines, seeding, logging."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("codelora")


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None, fingerprint: bool = True,
        **meta: Any) -> Any:
    """A documented dataclass field, one CLI flag (codelora.config): a help text (list defaults via
    `factory`). `fingerprint=False`: the setting says where to publish or how fast to run, not what
    to build, so the pipeline does not rebuild an output when only it changed. `local_input=True`:
    the setting names a local input the stage's output must keep clear of (config.Stage.inputs)."""
    meta = {"help": help, "fingerprint": fingerprint, **meta}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class UserError(Exception):
    """A mistake in the user's input: reported as one line, no traceback, non-zero exit."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) with what to do next: how to continue, what was kept."""

    def __init__(self, advice: str):
        super().__init__(advice)
        self.advice = advice


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def check_writable_parent(path: Path) -> None:
    """Fail early (before heavy work) when `path` cannot be created."""
    parent = path.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UserError(f"cannot write {path}: {probe} is not a writable directory")


def local_path(value: str | Path | None) -> Path | None:
    """The local file or directory an input setting names (`file://` URLs included), or None for
    a Hub id, a URL or a path that does not exist."""
    if value is None:
        return None
    text = str(value)
    text = text[len("file://"):] if text.startswith("file://") else text
    if not text or "://" in text or "\n" in text:
        return None
    path = Path(text).expanduser()
    try:
        return path.resolve() if path.exists() else None
    except (OSError, RuntimeError):
        return None


def check_local_or_hub(flag: str, value: str | None) -> None:
    """A setting that takes "a Hub id or a local directory": a value that can only be a local path
    (starts with ., / or ~, ends with /, has more than one /, or whose first part is a directory
    here, as `data/` is in `data/nods`) and does not exist is a typo, not a Hub id: say so, instead
    of a Hub connection error."""
    if not value or "://" in value:
        return
    path = Path(value).expanduser()
    if path.exists():
        return
    parts = Path(value).parts
    first = Path(parts[0]) if parts else None
    local = (value.startswith((".", "/", "~")) or value.endswith("/") or len(parts) > 2
             or (len(parts) == 2 and first is not None and first.is_dir()))
    if local:
        near = path.parent if path.parent.is_dir() else None
        hint = f" ({near}/ holds {_listing(near, 5)})" if near is not None and any(near.iterdir()) else ""
        raise UserError(f"{flag} {value}: no such directory{hint}")


def _listing(folder: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def guard_output_dir(output: str | Path, *, stage: str, prog: str, flag: str = "--output",
                     inputs: Mapping[str, Iterable[str | Path | None]] = {},
                     overwrite: bool | None = False) -> None:
    """Refuse, before any work, an output directory whose replacement (or whose filling) could lose
    anything but this stage's own earlier output; the one guard of every stage that writes a directory.

    Refused whatever the flags: the working directory or a directory above it; a directory that is
    an input, holds one, or lies inside one (`inputs`: flag -> the local paths it names; Hub ids and
    paths that do not exist are skipped); a file; a non-empty directory this stage did not write (no
    contracts.OUTPUT_MARKER of its own, nor the files its older versions always wrote). A directory
    this stage did write is replaced only with `overwrite=True`; `overwrite=None` is for the stages
    that continue into their own output (train's checkpoints, benchmark's prediction cache). The
    message says what is in the way, never how to force it.
    """
    from codelora.contracts import output_owner

    path = Path(output).expanduser()
    where = path.resolve()
    cwd = Path.cwd().resolve()
    shown = f"{flag} {output}"
    if where == cwd:
        raise UserError(f"{shown}: is the working directory; name a new directory for the output")
    if where in cwd.parents:
        raise UserError(f"{shown}: holds the working directory {cwd}; name a new directory for the output")
    for in_flag, values in inputs.items():
        for value in values:
            source = local_path(value)
            if source is None:
                continue
            if source == where:
                raise UserError(f"{shown}: is {in_flag} {value} itself; name another directory")
            if source.is_relative_to(where):
                raise UserError(f"{shown}: holds {in_flag} {value}; name another directory")
            if source.is_dir() and where.is_relative_to(source):
                raise UserError(f"{shown}: is inside {in_flag} {value} (it would be read back as input); "
                                "name a directory outside it")
    if path.exists() and not path.is_dir():
        raise UserError(f"{shown} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        owner = output_owner(path)
        if owner != stage:
            what = (f"an output of the {owner} stage" if owner
                    else f"files {prog} did not write ({_listing(path)})")
            raise UserError(f"{shown}: holds {what}; refusing to replace or add to it: name a new or "
                            "empty directory")
        if overwrite is False:
            raise UserError(f"{shown}: holds an earlier {prog} output (pass --overwrite to replace it)")
    check_writable_parent(path)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp directory beside `path`; it replaces `path` only if the block succeeds.

    An existing `path` stays untouched until the new one is complete. With overwrite=False an
    existing `path` is an error.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; name a new directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        apply_umask(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def progress(total: int, desc: str, unit: str):
    """A progress bar on stderr with the count, the rate and an ETA that follows the recent rate
    (tqdm's smoothing). On a terminal it redraws twice a second; into a log file a line every 30 s
    at most, plus the final one."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


def apply_umask(folder: Path) -> None:
    """Give files written into `folder` by libraries that create them 0600 (safetensors does) the
    permissions the umask gives every other output, keeping any execute bits."""
    mask = _umask()
    for item in folder.rglob("*"):
        if item.is_file() and not item.is_symlink():
            os.chmod(item, (item.stat().st_mode & 0o777 | 0o666) & ~mask)


def arrow_column(ds, name: str):
    """A datasets.Dataset's column as one pyarrow ChunkedArray, read straight from its Arrow table
    through the indices mapping a select()/shuffle() leaves. `ds.with_format("arrow")[name]` gives
    the same but deep-copies the dataset and hashes a new fingerprint on every call (~1.3 ms; a
    preprocessing run reads ~30 columns), and goes through the mapping row by row (~100 ms for
    50,000 selected rows, against ~1 ms here)."""
    data = ds.data.column(name)
    indices = ds._indices  # a one-column table of row numbers, or None (datasets' own attribute)
    return data if indices is None else data.take(indices.column(0))


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows atomically; returns the number written."""
    n = 0
    with atomic_file(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield JSON objects; a malformed line is a UserError naming the file and line number."""
    for _lineno, obj in read_jsonl_numbered(path):
        yield obj


def read_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line, so later checks can name the line too;
    a line that is not UTF-8 or not a JSON object is a UserError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    with open(path, "rb") as handle:  # bytes: a decoding error is then reported with its line
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}:{lineno}: not UTF-8 (byte {raw[err.start]:#04x} at column "
                                f"{err.start + 1})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while temporary files exist, so `finally` blocks remove them."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
