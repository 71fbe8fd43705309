"""Hub round trips against the loopback fake Hub (tests/hub_server.py), with the real clients.

Each artifact codelora publishes is pushed with codelora.hub and loaded back the way a user
would: `load_dataset(repo_id)`, `PeftModel.from_pretrained(base, repo_id)`,
`AutoModelForCausalLM.from_pretrained(repo_id)`; the models must give bit-identical logits.
"""

from __future__ import annotations

import json

import pytest
import torch
from hub_server import FakeHub, point_clients_at

from codelora import cards, hub
from codelora.config import PreprocessConfig
from codelora.utils import UserError

WRITE, READ, OTHER = "hf_test_write", "hf_test_read", "hf_other_user"


@pytest.fixture
def fake_hub(tmp_path):
    tokens = {WRITE: ("tester", "write"), READ: ("tester", "read"), OTHER: ("mallory", "write")}
    with FakeHub(tmp_path / "hub-server", tokens=tokens, orgs={"tester": ["codelora-org"]}) as server:
        yield server


@pytest.fixture
def hub_env(fake_hub, monkeypatch, tmp_path):
    """Clients pointed at the fake Hub, logged in with a write token."""
    point_clients_at(monkeypatch, fake_hub.url, tmp_path / "hf-home", WRITE)
    return fake_hub


def _ids(n: int = 12) -> torch.Tensor:
    return torch.arange(3, 3 + n).unsqueeze(0) % 300


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(ids).logits


# ------------------------------------------------------------------------------ round trips


def test_dataset_round_trip(hub_env, tmp_path):
    from datasets import Dataset, DatasetDict, load_dataset
    from huggingface_hub import DatasetCard

    sizes = {"train": 40, "validation": 5, "test": 7}
    dd = DatasetDict(
        {
            split: Dataset.from_dict(
                {
                    "prompt": [f"fun f{split}{i}(x: Int): Int {{\n" for i in range(n)],
                    "completion": [f"    return x + {i}\n}}\n" for i in range(n)],
                }
            )
            for split, n in sizes.items()
        }
    )
    stats = preprocess_stats(sources=[{"repo": "https://github.com/JetBrains/kotlin", "commit": "abc123def", "files": 11}],
                             files={"train": 8, "validation": 1, "test": 2}, examples=sizes)
    card = cards.dataset_card(stats, PreprocessConfig(), repo_id="tester/kotlin-ds", license="apache-2.0")
    token = hub.check_push_access("tester/kotlin-ds")
    hub.push_dataset(dd, "tester/kotlin-ds", token=token, card=card)

    back = load_dataset("tester/kotlin-ds")
    assert set(back) == set(sizes)
    for split in sizes:
        assert back[split]["prompt"] == dd[split]["prompt"]
        assert back[split]["completion"] == dd[split]["completion"]

    files = hub_env.repo_files("dataset", "tester/kotlin-ds")
    readme = files["README.md"].decode()
    meta = DatasetCard(readme).data.to_dict()
    assert meta["license"] == "apache-2.0" and "code" in meta["tags"]
    assert meta["task_categories"] == ["text-generation"]
    # push_to_hub's own metadata survives our card: split sizes and the split -> files mapping.
    assert {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]} == sizes
    assert meta["configs"][0]["config_name"] == "default"
    assert "abc123def" in readme and "| train | 8 | 40 |" in readme and "`exclude_dirs`" in readme
    assert 'load_dataset("tester/kotlin-ds")' in readme
    # Parquet shards travelled through the LFS batch API and a PUT, as on the real Hub without Xet.
    blobs = hub_env.repo_blobs("dataset", "tester/kotlin-ds")
    assert all(b.lfs for p, b in blobs.items() if p.endswith(".parquet"))
    assert any(method == "PUT" and path.startswith("/__lfs/upload/") for method, path in hub_env.requests)
    assert hub_env.unhandled == []


def preprocess_stats(sources, files, examples):
    """The parts of a preprocess stats.json the card reads (test_preprocess pushes a real one)."""
    return {
        "sources": sources,
        "files": {"input": 14, "kept": sum(files.values()), "license_stripped": 3, "dropped": {"too_few_lines": 2}},
        "parse": {"seen": 20, "kept": 14, "dropped": {"vendored": 6},
                  "config": {"min_bytes": 32, "exclude_dirs": ["build", "gen"], "repo": ["x"]}},
        "files_per_split": files, "examples": examples,
        "grouping": {"near_dup_threshold": 0.5, "passage_max_files": 5, "files_in_shared_groups": 2,
                     "largest_group": 2, "dedup_dropped": {}},
        "contamination": {"checked": False},
        "leakage": {"validation": {"counted": 4, "leaked": 1, "fraction": 0.25},
                    "test": {"counted": 8, "leaked": 0, "fraction": 0.0}},
    }


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir, tiny_tokenizer):
    """A LoRA adapter on the tiny Phi with non-zero B matrices (so it changes the logits)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "fc1"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    (out / ".codelora-stage.json").write_text("{}")  # a stage marker: must not be published
    return out, _logits(model, _ids())


def test_adapter_round_trip(hub_env, adapter_dir, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder, expected = adapter_dir
    hyper = {"lora_r": 4, "lora_alpha": 8, "learning_rate": 2e-4, "load_in_4bit": True, "max_steps": 10}
    card = cards.adapter_card(
        base_model=str(tiny_model_dir),
        dataset="tester/kotlin-ds",
        hyperparameters=hyper,
        eval_loss=1.25,
        repo_id="tester/adapter",
    )
    token = hub.check_push_access("tester/adapter")
    hub.push_folder(folder, "tester/adapter", token=token, card=card)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_logits = _logits(base, _ids())
    loaded = PeftModel.from_pretrained(base, "tester/adapter")
    got = _logits(loaded, _ids())
    assert torch.equal(got, expected)
    assert not torch.allclose(got, base_logits)  # the adapter really is applied

    blobs = hub_env.repo_blobs("model", "tester/adapter")
    assert ".codelora-stage.json" not in blobs
    assert blobs["adapter_model.safetensors"].lfs and not blobs["adapter_config.json"].lfs
    readme = hub_env.repo_files("model", "tester/adapter")["README.md"].decode()
    meta, body = cards.parse_card(readme)
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert "qlora" in meta["tags"] and meta["datasets"] == ["tester/kotlin-ds"]
    assert "base_model" not in meta  # a local path is not a Hub id: named in the text only
    assert str(tiny_model_dir) in body and "| `lora_r` | 4 |" in body and "| `eval_loss` | 1.25 |" in body
    # One commit with weights and card together (after the repo's initial commit).
    commits = [p for m, p in hub_env.requests if m == "POST" and p.endswith("/commit/main")]
    assert len(commits) == 1
    assert hub_env.unhandled == []


def test_merged_round_trip(hub_env, tmp_path, tiny_model_dir, tiny_tokenizer):
    import shutil

    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "merged"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "stale.bin").write_bytes(b"\0old shard")
    expected = _logits(AutoModelForCausalLM.from_pretrained(folder), _ids())
    token = hub.check_push_access("codelora-org/merged")  # an organisation the user belongs to
    hub.push_folder(folder, "codelora-org/merged", token=token, card=None)
    assert "stale.bin" in hub_env.repo_files("model", "codelora-org/merged")

    # Second push: the card arrives, the stale file leaves, in the same commit.
    (folder / "stale.bin").unlink()
    card = cards.merged_card(
        base_model="microsoft/phi-1_5",
        adapter="tester/adapter",
        dataset="tester/kotlin-ds",
        hyperparameters={"lora_r": 4, "max_steps": 10},
        model_name="phi-1_5-kotlin",
        repo_id="codelora-org/merged",
    )
    hub.push_folder(folder, "codelora-org/merged", token=token, card=card)

    model = AutoModelForCausalLM.from_pretrained("codelora-org/merged")
    assert torch.equal(_logits(model, _ids()), expected)
    tok = AutoTokenizer.from_pretrained("codelora-org/merged")
    text = "fun add(a: Int, b: Int): Int {\n    return a + b\n}\n"
    assert tok(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]

    files = hub_env.repo_files("model", "codelora-org/merged")
    assert "stale.bin" not in files and "model.safetensors" in files
    card_data = ModelCard(files["README.md"].decode()).data
    assert card_data.base_model == "microsoft/phi-1_5" and card_data.library_name == "transformers"
    # merge runs before the benchmark: no scores (model-index) on the card, the run's settings are
    assert card_data.eval_results is None and card_data.datasets == ["tester/kotlin-ds"]
    assert "| `lora_r` | 4 |" in files["README.md"].decode() and "# phi-1_5-kotlin" in files["README.md"].decode()
    assert hub_env.unhandled == []


def test_private_repo_is_invisible_to_others(hub_env, tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"a": 1}))
    hub.push_folder(folder, "tester/secret", token=WRITE, private=True)
    assert HfApi(token=WRITE).model_info("tester/secret").private is True
    for token in (OTHER, False):
        with pytest.raises(RepositoryNotFoundError):
            HfApi().model_info("tester/secret", token=token)


# ------------------------------------------------------------------------------ credentials


def test_missing_token_fails_before_any_request(fake_hub, monkeypatch, tmp_path):
    point_clients_at(monkeypatch, fake_hub.url, tmp_path / "home", token=None)
    with pytest.raises(UserError, match="no Hub credentials"):
        hub.check_push_access("tester/model")
    assert fake_hub.requests == []


@pytest.mark.parametrize(
    ("token", "repo_id", "message"),
    [
        ("hf_not_a_real_token", "tester/model", r"rejected the token \(HTTP 401\)"),
        (READ, "tester/model", "read-only"),
        (WRITE, "someone-else/model", "not a member of 'someone-else'"),
    ],
)
def test_bad_credentials_fail_with_one_clear_error(fake_hub, monkeypatch, tmp_path, token, repo_id, message):
    point_clients_at(monkeypatch, fake_hub.url, tmp_path / "home", token=token)
    with pytest.raises(UserError, match=message):
        hub.check_push_access(repo_id)
    # Only the whoami call was made: nothing created, nothing uploaded.
    assert fake_hub.requests == [("GET", "/api/whoami-v2")]


def test_offline_and_unreachable_hub_are_clear_errors(fake_hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    point_clients_at(monkeypatch, fake_hub.url, tmp_path / "home", token=WRITE)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        hub.check_push_access("tester/model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    dead = FakeHub(tmp_path / "dead").start()
    url = dead.url
    dead.stop()  # nothing listens there any more
    monkeypatch.setattr(constants, "ENDPOINT", url)
    with pytest.raises(UserError, match="cannot reach the Hub"):
        hub.check_push_access("tester/model")


def test_invalid_repo_id_is_rejected_without_network(fake_hub, monkeypatch, tmp_path):
    point_clients_at(monkeypatch, fake_hub.url, tmp_path / "home", token=WRITE)
    for bad in ("no-namespace", "a/b/c", "../etc", "user/na me", ""):
        with pytest.raises(UserError, match="invalid Hub repo id"):
            hub.check_push_access(bad)
    assert fake_hub.requests == []


# ------------------------------------------------------------------------------ cards


def test_dataset_card_is_standard_and_complete():
    from huggingface_hub import DatasetCard

    stats = preprocess_stats(sources=[{"repo": "a/b", "commit": "c0ffee", "files": 20},
                                      {"repo": "/local/repo", "commit": None, "files": 10}],
                             files={"train": 26, "validation": 2, "test": 2},
                             examples={"train": 1500, "validation": 10, "test": 12})
    text = cards.dataset_card(stats, PreprocessConfig(prompt_tokens=256))
    data = DatasetCard(text).data
    assert data.size_categories == ["1K<n<10K"] and data.license == "other"
    assert "| **total** | 30 | 1,522 |" in text
    assert "- dropped `too_few_lines`: 2" in text and "| `tokenizer` | microsoft/phi-1_5 |" in text
    assert "| `prompt_tokens` | 256 |" in text and "| `exclude_dirs` | build, gen |" in text
    assert "| validation | 4 | 1 | 25.00% |" in text and 'load_dataset("USER/NAME")' in text
    assert "| /local/repo | — | 10 |" in text and "`c0ffee`" in text


def test_adapter_card_names_hub_base_model(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "kotlin_prepared_dataset").mkdir(parents=True)  # trained from a local directory
    text = cards.adapter_card(
        base_model="microsoft/phi-1_5",
        dataset="data/kotlin_prepared_dataset",
        hyperparameters={"load_in_4bit": False, "lora_r": 16},
        eval_loss=2.0,
    )
    data = ModelCard(text).data
    assert data.base_model == "microsoft/phi-1_5" and data.library_name == "peft"
    assert "qlora" not in data.tags and "lora" in data.tags
    assert data.to_dict().get("datasets") is None  # a local dataset directory is no Hub link
    assert "| `eval_perplexity` | 7.3891 |" in text


def test_merged_card_without_benchmark_has_no_model_index():
    meta, body = cards.parse_card(cards.merged_card(base_model="/models/base", adapter="runs/x/adapter"))
    assert "model-index" not in meta and "base_model" not in meta and "## Benchmark" not in body
    assert meta["library_name"] == "transformers" and "/models/base" in body


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("microsoft/phi-1_5", True),
        ("data/x", True),
        ("./a/b", False),
        ("/abs/path", False),
        ("single", False),
        (None, False),
    ],
)
def test_is_hub_id(name, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cards.is_hub_id(name) is expected
    if name == "data/x":  # an existing local directory wins over the Hub reading
        (tmp_path / "data" / "x").mkdir(parents=True)
        assert cards.is_hub_id(name) is False


# ------------------------------------------------------------------------------ the fake itself


def test_fake_hub_ranges_chunked_bodies_and_unknown_routes(hub_env, tmp_path):
    import http.client
    from urllib.parse import urlsplit

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "data.txt").write_text("0123456789")
    hub.push_folder(folder, "tester/ranges", token=WRITE)
    host = urlsplit(hub_env.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)

    def request(method, path, body=None, headers=None, chunked=False):
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    status, headers, body = request(
        "GET", "/tester/ranges/resolve/main/data.txt", headers={"Range": "bytes=2-5"}
    )
    assert (status, body, headers["Content-Range"]) == (206, b"2345", "bytes 2-5/10")
    assert request("GET", "/tester/ranges/resolve/main/data.txt", headers={"Range": "bytes=-3"})[2] == b"789"
    assert request("GET", "/tester/ranges/resolve/main/data.txt", headers={"Range": "bytes=20-"})[0] == 416
    status, headers, _ = request("HEAD", "/tester/ranges/resolve/main/missing.txt")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and "X-Repo-Commit" in headers

    bad_card = json.dumps({"content": "---\nlicense: [unclosed\n---\n\n# x\n"}).encode()
    pieces = iter([bad_card[:10], bad_card[10:]])  # an iterable body is sent chunked
    status, _, body = request(
        "POST", "/api/validate-yaml", body=pieces, chunked=True, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and b"invalid YAML" in body

    assert request("GET", "/api/spaces/tester/x")[0] == 404
    assert hub_env.unhandled == [("GET", "/api/spaces/tester/x")]
    conn.close()


# ------------------------------------------------------------------- Hub datasets as task data

MXEVAL_HUMANEVAL = [  # JetBrains/Kotlin_HumanEval's fields (MXEval): the prompt opens the body
    {"task_id": "HumanEval_kotlin/0", "language": "kotlin", "entry_point": "hasCloseElements",
     "prompt": "/**\n * Whether any two numbers are closer than threshold.\n */\n"
               "fun hasCloseElements(numbers: List<Double>, threshold: Double): Boolean {\n",
     "canonical_solution": "    return numbers.indices.any { i -> numbers.indices.any { j -> i != j && "
                           "Math.abs(numbers[i] - numbers[j]) < threshold } }\n}\n",
     "test": "\nfun main() {\n    if (!hasCloseElements(listOf(1.0, 1.05), 0.1)) throw Exception(\"case 0\")\n}\n"},
    {"task_id": "HumanEval_kotlin/1", "language": "kotlin", "entry_point": "incr",
     "prompt": "/**\n * n plus one.\n */\nfun incr(n: Int): Int {\n",
     "canonical_solution": "    return n + 1\n}\n",
     "test": "\nfun main() {\n    if (incr(1) != 2) throw Exception(\"case 0\")\n}\n"},
]


def test_execution_task_reads_a_hub_dataset(hub_env, tmp_path, tiny_model_dir):
    """--humaneval-kt-data JetBrains/Kotlin_HumanEval: MXEval records from the Hub, references
    included, benchmarked like a local file."""
    from datasets import Dataset, DatasetDict

    from codelora import benchmarking
    from codelora.tasks import TaskOptions, get_task

    token = hub.check_push_access("tester/kotlin-humaneval")
    hub.push_dataset(DatasetDict(train=Dataset.from_list(MXEVAL_HUMANEVAL)), "tester/kotlin-humaneval",
                     token=token, card="---\nlicense: apache-2.0\n---\n")
    task = get_task("humaneval-kt", TaskOptions(dataset="", humaneval_kt_data="tester/kotlin-humaneval"))
    examples = task.load()
    assert [e.id for e in examples] == ["HumanEval_kotlin/0", "HumanEval_kotlin/1"]
    assert examples[1].reference == "    return n + 1\n}\n" and examples[1].meta["entry_point"] == "incr"
    assert examples[0].meta["test"] == MXEVAL_HUMANEVAL[0]["test"]
    assert "reference solution passes" in task.judge_rule  # judged by the references, as mbkp

    out = tmp_path / "bench"
    args = ["--models", str(tiny_model_dir), "--tasks", "humaneval-kt", "--humaneval-kt-data",
            "tester/kotlin-humaneval", "--max-new-tokens", "4", "--output", str(out), "--allow-code-execution"]
    assert benchmarking.main(args) == 0
    rows = [json.loads(line) for line in (out / "examples" / "humaneval-kt.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["HumanEval_kotlin/0", "HumanEval_kotlin/1"]

    with pytest.raises(UserError, match="humaneval-kt .--humaneval-kt-data.: cannot load the Hub dataset "
                                        "tester/no-such-set"):
        get_task("humaneval-kt", TaskOptions(dataset="", humaneval_kt_data="tester/no-such-set")).load()
