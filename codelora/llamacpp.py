"""A real llama.cpp from Python: node-llama-cpp (`make llama` installs it in .tools/llama) driven
through tools/llama-run.mjs, one JSON line per request and per answer.

Greedy decoding starts from the exact token ids transformers would see, so a difference in what the
two runtimes generate is a difference in the model file, not in tokenization; `tokenize` asks
llama.cpp's own tokenizer separately (what an editor's text goes through).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codelora.utils import UserError

PROJECT = Path(__file__).resolve().parents[1]
RUNNER = PROJECT / "tools" / "llama-run.mjs"
RUNTIME = PROJECT / ".tools" / "llama"


def runtime_dir() -> Path:
    """The installed node-llama-cpp, or a UserError that says how to install it."""
    if shutil.which("node") is None:
        raise UserError("node is not installed: the llama.cpp runtime runs on Node.js "
                        "(Debian: apt-get install nodejs npm)")
    if not (RUNTIME / "node_modules" / "node-llama-cpp" / "package.json").is_file():
        raise UserError(f"llama.cpp runtime not installed in {RUNTIME}: run `make llama`")
    return RUNTIME


class LlamaCpp:
    """One GGUF loaded in llama.cpp; use as a context manager."""

    def __init__(self, gguf: str | Path, threads: int = 1, context: int = 1024):
        self.args = ["node", str(RUNNER), "--runtime", str(runtime_dir()), "--model", str(gguf),
                     "--threads", str(threads), "--context", str(context)]
        self.proc: subprocess.Popen | None = None
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty runtime cannot block

    def __enter__(self) -> LlamaCpp:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, encoding="utf-8", bufsize=1)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.proc is not None, "use LlamaCpp as a context manager"
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the runtime died: its error is read below
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            tail = " ".join(self.stderr.read().strip().splitlines()[-3:])
            raise RuntimeError(f"llama.cpp runtime exited: {tail or 'no message'}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"llama.cpp: {answer['error']}")
        return answer

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenization (special tokens written in the text are parsed)."""
        return self.request({"tokenize": text})["tokens"]

    def complete(self, tokens: Sequence[int], max_tokens: int, *, min_tokens: int = 0,
                 stop_ids: Sequence[int] = (), stop_newline_from: int | None = None) -> dict[str, Any]:
        """Greedy continuation of `tokens`: {"tokens": new ids (a stop id last, if one came),
        "text": llama.cpp's decoding, "seconds": wall time}."""
        return self.request({"tokens": list(tokens), "max_tokens": max_tokens, "min_tokens": min_tokens,
                             "stop_ids": list(stop_ids), "stop_newline_from": stop_newline_from})

    def infill(self, prefix: str, suffix: str, max_tokens: int) -> str:
        """node-llama-cpp's own infill: the FIM tokens are taken from the GGUF's metadata."""
        request = {"infill": {"prefix": prefix, "suffix": suffix}, "max_tokens": max_tokens}
        return self.request(request)["text"]
