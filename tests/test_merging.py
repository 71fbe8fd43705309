"""merge_lora.py: merged logits equal base + adapter; bad inputs are refused before writing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import KOTLIN_SNIPPETS, PYTHON_SNIPPETS

from codelora import merging, training


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A real adapter trained by train.py for a few steps (large LR: its effect must be visible)."""
    import datasets

    root = tmp_path_factory.mktemp("merge")
    texts = (KOTLIN_SNIPPETS + PYTHON_SNIPPETS) * 3
    rows = [{"prompt": t[:20], "completion": t[20:60], "path": f"f{i}", "repo": "r"} for i, t in enumerate(texts)]
    datasets.DatasetDict(train=datasets.Dataset.from_list(rows), validation=datasets.Dataset.from_list(rows[:4]),
                         test=datasets.Dataset.from_list(rows[:4])).save_to_disk(str(root / "data"))
    args = ["--base-model", str(tiny_model_dir), "--dataset", str(root / "data"), "--output-dir", str(root / "run"),
            "--max-steps", "6", "--batch-size", "4", "--learning-rate", "5e-2", "--lora-r", "4", "--lora-alpha", "16",
            "--eval-steps", "100", "--save-steps", "100", "--logging-steps", "1"]
    assert training.main(args) == 0
    return root / "run" / "adapter"


def reference_logits(model_dir: Path, adapter: Path, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        with_adapter = PeftModel.from_pretrained(base, str(adapter)).eval()(ids).logits
    return base_logits, with_adapter


def test_merged_model_reproduces_base_plus_adapter(tiny_model_dir, adapter_dir, tmp_path, tiny_tokenizer):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import os
    import stat

    out = tmp_path / "merged"
    old_umask = os.umask(0o022)
    try:
        assert merging.main(["--adapter", str(adapter_dir), "--output", str(out)]) == 0
    finally:
        os.umask(old_umask)
    # safetensors creates files 0600; the merged model follows the umask like the other outputs.
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "merge_config.yaml"):
        assert (out / name).is_file(), name
    weights = load_file(out / "model.safetensors")
    assert not any("lora" in k or "base_layer" in k for k in weights)  # a plain model, no peft leftovers
    assert all(t.dtype == torch.float32 for t in weights.values())

    ids = torch.tensor([tiny_tokenizer("fun fib(n: Int): Int {\n    if (n < 2)", add_special_tokens=False)["input_ids"]])
    base_logits, expected = reference_logits(tiny_model_dir, adapter_dir, ids)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        got = merged(ids).logits
    assert (expected - base_logits).abs().max() > 1e-2  # the adapter matters ...
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # ... and the merge keeps it exactly
    assert AutoTokenizer.from_pretrained(out).eos_token_id == tiny_tokenizer.eos_token_id


def test_bfloat16_output_and_overwrite(adapter_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "merged"
    assert merging.main(["--adapter", str(adapter_dir), "--output", str(out)]) == 0  # an earlier merge
    (out / "stale.txt").write_text("old")
    assert merging.main(["--adapter", str(adapter_dir), "--output", str(out), "--dtype", "bfloat16",
                         "--overwrite"]) == 0  # --overwrite replaces this stage's own output, whole
    assert not (out / "stale.txt").exists()
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}


def test_a_merge_that_changes_the_logits_is_refused(adapter_dir, tmp_path, monkeypatch, capsys):
    real = merging.merge_adapter

    def corrupt(peft_model):
        model = real(peft_model)
        with torch.no_grad():
            model.model.layers[0].mlp.fc1.weight.mul_(1.5)  # e.g. a re-quantized or mis-scaled merge
        return model

    monkeypatch.setattr(merging, "merge_adapter", corrupt)
    out = tmp_path / "merged"
    assert merging.main(["--adapter", str(adapter_dir), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "disagrees with base + adapter" in err and "nothing written" in err
    assert not out.exists() and not list(tmp_path.glob(".merged*"))


def test_existing_output_is_refused_without_overwrite(adapter_dir, tmp_path, capsys):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):  # not a merge_lora.py output: never replaced, and not steered to
        assert merging.main(["--adapter", str(adapter_dir), "--output", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert "holds files merge_lora.py did not write (keep.txt)" in err and "--overwrite" not in err, err
        assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("broken", ["no-dir", "no-weights", "no-config"])
def test_missing_adapter_files(adapter_dir, tmp_path, capsys, broken):
    bad = tmp_path / "adapter"
    if broken != "no-dir":
        shutil.copytree(adapter_dir, bad)
        (bad / ("adapter_model.safetensors" if broken == "no-weights" else "adapter_config.json")).unlink()
    assert merging.main(["--adapter", str(bad), "--output", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    expected = {"no-dir": "no such directory", "no-weights": "adapter weights are missing",
                "no-config": "adapter_config.json is missing"}[broken]
    assert expected in err and not (tmp_path / "merged").exists()


@pytest.mark.parametrize("other", [{"hidden_size": 64}, {"hidden_size": 32, "layers": 3}])
def test_adapter_for_another_base_is_refused(adapter_dir, tmp_path, tiny_tokenizer, capsys, other):
    from codelora.bootstrap import make_tiny_phi

    other_base = tmp_path / "other-base"
    make_tiny_phi(tiny_tokenizer, other_base, seed=1, heads=4, **other)
    out = tmp_path / "merged"
    code = merging.main(["--adapter", str(adapter_dir), "--base-model", str(other_base), "--output", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not fit base model" in err
    # The detail, not just peft's header line: which tensor, and the two shapes.
    assert ("size mismatch for" in err and "torch.Size" in err) or "LoRA tensors" in err
    assert not out.exists()


def test_a_same_shaped_but_different_base_is_refused_unless_forced(adapter_dir, tmp_path, tiny_tokenizer, capsys):
    """Same architecture, other weights: it loaded, warned, and said "verified"."""
    from codelora.bootstrap import make_tiny_phi

    other_base = tmp_path / "same-shape"
    make_tiny_phi(tiny_tokenizer, other_base, seed=7, hidden_size=32, layers=2, heads=4)
    out = tmp_path / "merged"
    assert merging.main(["--adapter", str(adapter_dir), "--base-model", str(other_base), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not the base this adapter was trained on" in err and "--force" in err and str(other_base) in err
    assert not out.exists()
    assert merging.main(["--adapter", str(adapter_dir), "--base-model", str(other_base), "--output", str(out),
                         "--force"]) == 0
    assert (out / "model.safetensors").is_file()


def test_a_corrupt_adapter_file_is_named(adapter_dir, tmp_path, capsys):
    bad = tmp_path / "adapter"
    shutil.copytree(adapter_dir, bad)
    weights = bad / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated download
    assert merging.main(["--adapter", str(bad), "--output", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "corrupt" in err and not (tmp_path / "merged").exists()


def test_adapter_config_naming_another_base(adapter_dir, tmp_path, tiny_tokenizer, capsys):
    """The base is read from adapter_config.json: an adapter pointing at another model fails."""
    from codelora.bootstrap import make_tiny_phi

    other_base = tmp_path / "wide-base"
    make_tiny_phi(tiny_tokenizer, other_base, seed=1, hidden_size=64, heads=4)
    moved = tmp_path / "adapter"
    shutil.copytree(adapter_dir, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(other_base)
    (moved / "adapter_config.json").write_text(json.dumps(config))
    assert merging.main(["--adapter", str(moved), "--output", str(tmp_path / "merged")]) == 2
    assert str(other_base) in capsys.readouterr().err


def test_push_alias_and_credentials_checked_before_loading(adapter_dir, tmp_path, monkeypatch, capsys, no_hf_token):
    calls = []
    monkeypatch.setattr(merging, "resolve_adapter", lambda a: calls.append(a))
    out = tmp_path / "merged"
    assert merging.main(["--adapter", str(adapter_dir), "--output", str(out), "--hf_repository", "me/merged"]) == 2
    assert "cannot push to me/merged" in capsys.readouterr().err
    assert calls == [] and not out.exists()
    # Pushing the merged model into the adapter's own repo is refused outright.
    assert merging.main(["--adapter", "me/lora", "--output", str(out), "--push-to-hub", "me/lora"]) == 2
    assert "own repo" in capsys.readouterr().err
