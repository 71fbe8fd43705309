"""codelora bootstrap: tokenizer + short pretraining, run end to end through its CLI entry point."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import KOTLIN_SNIPPETS, PYTHON_SNIPPETS, TINY_MODEL_ARGS

from codelora import bootstrap
from codelora.config import BootstrapConfig

TINY = ["--vocab-size", "320", *TINY_MODEL_ARGS, "--max-positions", "64", "--batch-size", "8",
        "--learning-rate", "3e-3", "--warmup-steps", "5"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def corpus(tmp_path):
    """A directory of small Python and Kotlin files, plus files that must be left out."""
    root = tmp_path / "corpus"
    for i in range(12):
        for j, text in enumerate(PYTHON_SNIPPETS):
            path = root / f"pkg{i % 3}" / f"mod{i}_{j}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.replace("add", f"add{i}"), encoding="utf-8")
    (root / "pkg0" / "test_skip.py").write_text("SKIPPED = 1\n" * 50, encoding="utf-8")
    (root / "pkg0" / "notes.txt").write_text("not python\n", encoding="utf-8")
    (root / "pkg0" / "blob.py").write_bytes(b"\xff\xfe\x00binary")
    extra = tmp_path / "Extra.kt"
    extra.write_text("\n".join(KOTLIN_SNIPPETS), encoding="utf-8")
    return root, extra


def test_collect_files_respects_extensions_excludes_and_sampling(corpus):
    root, extra = corpus
    cfg = BootstrapConfig(inputs=[str(root), str(extra)], exclude=["test_*"])
    files = bootstrap.collect_files(cfg)
    names = {p.name for p in files}
    assert "test_skip.py" not in names and "notes.txt" not in names and "Extra.kt" in names
    assert len(files) == 12 * len(PYTHON_SNIPPETS) + 2  # + blob.py (dropped later as non-UTF-8) + Extra.kt
    assert len(bootstrap.read_texts(files)) == len(files) - 1
    sample = BootstrapConfig(inputs=[str(root)], max_files=5, seed=3)
    assert bootstrap.collect_files(sample) == bootstrap.collect_files(sample)  # seeded: same files each time
    assert len(bootstrap.collect_files(sample)) == 5


def test_bootstrap_pretrains_a_loadable_model(corpus, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codelora.bootstrap import make_tiny_phi

    root, extra = corpus
    out = tmp_path / "base"
    rc = bootstrap.main(
        [
            "--inputs",
            str(root),
            str(extra),
            "--exclude",
            "test_*",
            "--output",
            str(out),
            "--steps",
            "40",
            *TINY,
        ]
    )
    assert rc == 0
    stats = json.loads((out / "bootstrap.json").read_text())
    assert stats["files"] == 12 * len(PYTHON_SNIPPETS) + 1 and stats["steps_done"] == 40
    # It learned: held-out loss well below the untrained model's (~ln 320 = 5.8).
    assert stats["eval_loss_before"] > 5.0
    assert stats["eval_loss_after"] < stats["eval_loss_before"] - 2.0

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "PhiForCausalLM" and model.config.max_position_embeddings == 64
    assert tokenizer.eos_token == "<|endoftext|>" and len(tokenizer) == stats["vocab_size"] <= 320
    assert tokenizer.decode(tokenizer("def add(a, b):\n")["input_ids"]) == "def add(a, b):\n"

    # Every parameter moved away from its initialisation (same seed, same tokenizer).
    init = make_tiny_phi(tokenizer, seed=0, hidden_size=32, layers=2, heads=4, max_positions=64).state_dict()
    trained = model.state_dict()
    unchanged = [name for name, value in init.items() if torch.equal(value, trained[name])]
    assert unchanged == []
    assert (out / "bootstrap_config.yaml").is_file()
    assert not list(tmp_path.glob(".base.*"))  # no temp dirs left behind


def test_time_budget_stops_early(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "base"
    assert (
        bootstrap.main(
            ["--inputs", str(root), "--output", str(out), "--steps", "10000", "--max-seconds", "0.5", *TINY]
        )
        == 0
    )
    assert json.loads((out / "bootstrap.json").read_text())["steps_done"] < 10000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--inputs: give at least one"),
        (["--inputs", "/no/such/dir"], "does not exist"),
        (["--inputs", "{empty}"], "no text files found"),
        (["--inputs", "{empty}", "--hidden-size", "30", "--heads", "4"], "multiple of --heads"),
    ],
)
def test_bad_input_is_one_clear_error(args, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in args]
    assert bootstrap.main([*args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
