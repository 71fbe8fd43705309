"""export_gguf.py: tiny Phi and llama models with FIM sentinels → GGUF, loaded by a real llama.cpp
(node-llama-cpp from `make llama`) and compared with transformers token for token.

The models get weights drawn wider than a fresh init (std 0.3): a freshly initialised model's
next-token logits are nearly flat, so f16 rounding would flip near-ties and the comparison would
test luck, not the export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import corpus_texts

from codelora import export as export_mod
from codelora import parity
from codelora.export import permute_qk, pre_tokenizer_name, write_gguf
from codelora.fim import detect_fim_tokens, fim_prompt
from codelora.llamacpp import LlamaCpp
from codelora.utils import UserError

PROMPTS = ["fun add(a: Int, b: Int): Int {\n", "class Greeter(val name: String) {\n    fun greet",
           "def add(a, b):\n"]
PREFIX, SUFFIX = "fun fib(n: Int): Int {\n    if (n < 2) return n\n", "\n}\n"
NEW_TOKENS = 16
PAD_ROWS = 29  # embedding rows past the tokenizer, as Phi-1.5 has (50,295 ids, 51,200 rows)


def sharpen(model, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)


def saved_sharpened(model, seed: int, tokenizer, out: Path) -> Path:
    """`model`, sharpened with `seed`, saved with `tokenizer` into `out`."""
    sharpen(model, seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def fim_tokenizer():
    from codelora.bootstrap import train_tokenizer
    from codelora.fim import add_fim_tokens

    tok = train_tokenizer(corpus_texts(), vocab_size=400)
    add_fim_tokens(tok)
    return tok


@pytest.fixture(scope="module")
def phi_dir(tmp_path_factory, fim_tokenizer) -> Path:
    """A tiny Phi with FIM sentinels and more embedding rows than tokenizer ids (as Phi-1.5)."""
    from transformers import PhiForCausalLM

    from codelora.bootstrap import tiny_phi_config

    config = tiny_phi_config(fim_tokenizer, hidden_size=64, layers=2, heads=4, max_positions=512)
    config.vocab_size = len(fim_tokenizer) + PAD_ROWS
    return saved_sharpened(PhiForCausalLM(config), 1, fim_tokenizer, tmp_path_factory.mktemp("phi-fim"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, fim_tokenizer) -> Path:
    """A tiny llama (SmolLM2's shape in small: grouped-query attention, tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(fim_tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=fim_tokenizer.bos_token_id,
                         eos_token_id=fim_tokenizer.eos_token_id)
    return saved_sharpened(LlamaForCausalLM(config), 2, fim_tokenizer, tmp_path_factory.mktemp("llama-fim"))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from datasets import Dataset, DatasetDict

    def split(n: int, offset: int) -> Dataset:
        return Dataset.from_dict({
            "prompt": [f"fun f{i}(x: Int): Int {{\n" for i in range(offset, offset + n)],
            "completion": [f"    return x + {i}\n}}\n" for i in range(offset, offset + n)],
            "path": [f"src/F{i}.kt" for i in range(offset, offset + n)],
            "repo": ["demo"] * n,
        })

    out = tmp_path_factory.mktemp("ds") / "prepared"
    DatasetDict({"train": split(4, 0), "validation": split(2, 4), "test": split(6, 6)}).save_to_disk(str(out))
    return out


def transformers_greedy(model_dir: Path, prompts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, greedy new ids up to and including EOS) per prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids, new = [], []
    for prompt in prompts:
        x = tok(prompt)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([x]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        ids.append(x)
        new.append(out[0, len(x):].tolist())
    return ids, new


def check_against_transformers(model_dir: Path, gguf: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    fim = detect_fim_tokens(tok)
    prompts = [*PROMPTS, fim_prompt(PREFIX, SUFFIX, fim)]
    ids, expected = transformers_greedy(model_dir, prompts)
    with LlamaCpp(gguf) as llm:
        for prompt, x, want in zip(prompts, ids, expected):
            assert llm.tokenize(prompt) == x, prompt  # llama.cpp's tokenizer, sentinels included
            got = llm.complete(x, NEW_TOKENS, stop_ids=[tok.eos_token_id])["tokens"]
            assert got == want, prompt
        # node-llama-cpp's own infill finds the FIM tokens in the metadata and builds the PSM prompt
        text = llm.infill(PREFIX, SUFFIX, NEW_TOKENS)
    middle = [t for t in expected[-1] if t != tok.eos_token_id]
    assert text == tok.decode(middle, skip_special_tokens=True)


def test_phi_gguf_completes_and_infills_like_transformers(phi_dir, tmp_path):
    file = write_gguf(phi_dir, tmp_path / "phi.gguf", "f16")
    assert (file.arch, file.pre) == ("phi2", "phi-2")
    check_against_transformers(phi_dir, file.path)


def test_llama_gguf_completes_and_infills_like_transformers(llama_dir, tmp_path):
    file = write_gguf(llama_dir, tmp_path / "llama.gguf", "f16")
    assert (file.arch, file.pre) == ("llama", "gpt-2")
    check_against_transformers(llama_dir, file.path)


def test_llama_gguf_read_back_by_transformers(llama_dir, tmp_path):
    """transformers' own GGUF reader (it undoes the Q/K permutation) is a second, independent check."""
    from transformers import AutoModelForCausalLM

    write_gguf(llama_dir, tmp_path / "llama.gguf", "f16")
    ref = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="llama.gguf", dtype=torch.float32).eval()
    x = torch.tensor([[292, 331, 8, 65, 26, 271, 12, 286, 26, 271]]) % ref.config.vocab_size
    with torch.no_grad():
        a, b = ref(x).logits, back(x).logits
    assert float((a - b).norm() / a.norm()) < 1e-2  # f16 weights
    assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_llama_without_qk_permutation_is_wrong(llama_dir, tmp_path, monkeypatch):
    """The permutation is what makes llama.cpp's rotary embedding agree: without it, it does not."""
    ids, expected = transformers_greedy(llama_dir, PROMPTS)
    monkeypatch.setattr(export_mod, "permute_qk", lambda weight, heads: weight)
    file = write_gguf(llama_dir, tmp_path / "unpermuted.gguf", "f16")
    with LlamaCpp(file.path) as llm:
        got = [llm.complete(x, NEW_TOKENS)["tokens"] for x in ids]
    assert got != [[t for t in want] for want in expected]


def test_permute_qk_interleaves_each_heads_halves():
    w = torch.arange(8.0).reshape(8, 1).numpy()  # 2 heads of 4 rows: [0 1 | 2 3], [4 5 | 6 7]
    assert permute_qk(w, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_metadata_padding_fim_and_special_ids(phi_dir, fim_tokenizer, tmp_path):
    from gguf import GGUFReader, TokenType

    write_gguf(phi_dir, tmp_path / "phi.gguf", "q8_0")
    reader = GGUFReader(tmp_path / "phi.gguf")

    def value(key: str):
        return reader.fields[key].contents()

    rows = len(fim_tokenizer) + PAD_ROWS
    assert value("general.architecture") == "phi2" and value("tokenizer.ggml.pre") == "phi-2"
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == rows
    assert tokens[-1] == f"[PAD{rows - 1}]" and types[-1] == TokenType.UNUSED
    fim = detect_fim_tokens(fim_tokenizer)
    assert [value(f"tokenizer.ggml.{k}_token_id") for k in ("fim_pre", "fim_suf", "fim_mid")] == list(fim.ids)
    assert all(types[i] == TokenType.CONTROL for i in fim.ids)
    assert value("tokenizer.ggml.eos_token_id") == fim_tokenizer.eos_token_id
    assert value("tokenizer.ggml.add_bos_token") is False  # transformers adds none: llama.cpp must not
    assert len(value("tokenizer.ggml.merges")) > 0
    kinds = {t.name.rsplit(".", 1)[0]: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q"] == "Q8_0" and kinds["output_norm"] == "F32"


def test_pre_tokenizer_names():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    bpe = {"model": {"type": "BPE"}, "normalizer": None}
    assert pre_tokenizer_name({**bpe, "pre_tokenizer": byte_level}, "phi2") == "phi-2"
    assert pre_tokenizer_name({**bpe, "pre_tokenizer": byte_level}, "llama") == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    smollm = {"type": "Sequence", "pretokenizers": [digits, byte_level]}
    assert pre_tokenizer_name({**bpe, "pre_tokenizer": smollm}, "llama") == "smollm"
    with pytest.raises(UserError, match="pre-tokenizer"):
        pre_tokenizer_name({**bpe, "pre_tokenizer": {"type": "Metaspace"}}, "llama")
    with pytest.raises(UserError, match="byte-level BPE"):
        pre_tokenizer_name({"model": {"type": "Unigram"}}, "llama")


def run(args: list[str]) -> int:
    return export_mod.main(args)


def test_export_stage_writes_files_and_passes_the_gate(phi_dir, dataset_dir, tmp_path, capsys):
    out = tmp_path / "gguf"
    assert run(["--model", str(phi_dir), "--output", str(out), "--dataset", str(dataset_dir),
                "--types", "f16", "q8_0", "--name", "tiny"]) == 0
    assert sorted(p.name for p in out.glob("*.gguf")) == ["tiny-f16.gguf", "tiny-q8_0.gguf"]
    table = (out / "parity.md").read_text()
    assert table.rstrip().endswith("PASSED")
    assert "| f16 | heldout-fim |" in table and "| q8_0 | heldout |" in table
    assert "f16: llama.cpp tokenizes 14/14 prompts exactly as transformers does." in table
    assert table in capsys.readouterr().out
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./tiny-f16.gguf" in modelfile
    assert "{{- if .Suffix }}<fim_prefix>{{ .Prompt }}<fim_suffix>" in modelfile
    assert 'PARAMETER stop "<|endoftext|>"' in modelfile
    tabby = json.loads((out / "tabby.json").read_text())
    assert tabby["prompt_template"] == "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"
    assert "{{{prefix}}}" in (out / "continue-config.yaml").read_text()


def test_failed_gate_is_one_line_and_writes_nothing(phi_dir, dataset_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(parity.BOUNDS, "f16", {"es": -101.0, "em": -101.0})  # no result can pass
    out = tmp_path / "gguf"
    assert run(["--model", str(phi_dir), "--output", str(out), "--dataset", str(dataset_dir),
                "--types", "f16", "--sample", "3", "--tasks", "heldout"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "parity gate failed, nothing written: f16 heldout: ES" in errors[0]
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--types", "q5_k"], "--types: choose from f16 q8_0 q4_0"),
    (["--adapter", "x"], "give exactly one of --model"),
])
def test_bad_options_are_one_line(args, message, phi_dir, tmp_path, capsys):
    assert run(["--model", str(phi_dir), "--output", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err


def test_unsupported_architecture_is_refused(tiny_model_dir, tmp_path, capsys):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    assert run(["--model", str(other), "--output", str(tmp_path / "o"), "--no-parity"]) == 2
    assert "architecture GPT2LMHeadModel cannot be exported" in capsys.readouterr().err
