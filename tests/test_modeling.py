"""modeling.py: pad-token policy, device/dtype policy, target-module validation, LoRA wrapping."""

from __future__ import annotations

import pytest
import torch

from codelora import modeling
from codelora.config import PHI_TARGET_MODULES
from codelora.utils import UserError


def test_tokenizer_gets_a_pad_token_without_losing_eos(tiny_tokenizer_dir):
    tok = modeling.load_tokenizer(str(tiny_tokenizer_dir))
    assert tok.pad_token_id is not None
    assert tok.eos_token_id is not None
    # EOS still encodes and decodes as itself: padding reuses its id, it is not redefined.
    ids = tok("fun main()" + tok.eos_token, add_special_tokens=False)["input_ids"]
    assert ids[-1] == tok.eos_token_id


def test_cpu_policy_is_fp32_without_quantization(monkeypatch):
    # The policy for a machine without CUDA, whatever machine runs the test (it asserted "no GPU").
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert modeling.compute_dtype() == torch.float32
    assert modeling.resolve_load_in_4bit(None) is False
    assert modeling.resolve_load_in_4bit(True) is True
    q = modeling.quantization_config(torch.float32)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float32


def test_load_base_model_is_native_phi_in_fp32(tiny_model_dir):
    model = modeling.load_base_model(str(tiny_model_dir), dtype=torch.float32)
    assert type(model).__name__ == "PhiForCausalLM"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.config.use_cache is False


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load base model"):
        modeling.load_base_model(str(tmp_path / "nope"), dtype=torch.float32)


def test_default_targets_match_every_phi_projection(tiny_model_dir):
    model = modeling.load_base_model(str(tiny_model_dir), dtype=torch.float32)
    found = modeling.validate_target_modules(model, PHI_TARGET_MODULES)
    # 2 layers: one of each per layer; `dense` must not also catch anything outside attention.
    assert {t: len(v) for t, v in found.items()} == {t: 2 for t in PHI_TARGET_MODULES}
    assert found["dense"] == ["model.layers.0.self_attn.dense", "model.layers.1.self_attn.dense"]


def test_a_target_matching_nothing_fails_and_lists_what_exists(tiny_model_dir):
    model = modeling.load_base_model(str(tiny_model_dir), dtype=torch.float32)
    # The names Phi had under trust_remote_code: peft would silently adapt only q_proj here.
    with pytest.raises(UserError) as err:
        modeling.add_lora(model, r=4, alpha=8, dropout=0.0, targets=["q_proj", "Wqkv", "out_proj"])
    message = str(err.value)
    assert "Wqkv out_proj" in message and "fc2" in message and "lm_head" in message
    assert not any("lora" in n for n, _ in model.named_parameters())  # nothing was wrapped


def test_add_lora_freezes_the_base_and_counts(tiny_model_dir, caplog):
    model = modeling.load_base_model(str(tiny_model_dir), dtype=torch.float32)
    total_before = sum(p.numel() for p in model.parameters())
    with caplog.at_level("INFO", logger="codelora"):
        peft_model = modeling.add_lora(model, r=4, alpha=8, dropout=0.0, targets=["fc1", "fc2"])
    trainable, total = modeling.count_parameters(peft_model)
    # fc1: 32->128, fc2: 128->32; LoRA r=4 adds 4*(in+out) per module, in 2 layers.
    assert trainable == 2 * 2 * 4 * (32 + 128)
    assert total == total_before + trainable
    assert all(("lora_" in n) == p.requires_grad for n, p in peft_model.named_parameters())
    assert f"trainable {trainable:,} / {total:,}" in caplog.text


def test_gpu_policy_is_bf16_or_fp16_with_4bit(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert modeling.compute_dtype() == torch.bfloat16 and modeling.resolve_load_in_4bit(None) is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with caplog.at_level("WARNING", logger="codelora"):
        assert modeling.compute_dtype() == torch.float16
    assert "does not support bf16" in caplog.text


@pytest.mark.parametrize(("cuda", "bf16", "expected"), [(False, False, torch.float32), (True, True, torch.bfloat16),
                                                         (True, False, torch.float16)])
def test_generation_and_training_share_one_dtype_policy(monkeypatch, cuda, bf16, expected):
    """The benchmark's `--dtype auto` gave bf16 on any GPU, also one without bf16 support."""
    from codelora.generation import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    assert resolve_dtype("auto") == modeling.compute_dtype() == expected
    assert resolve_dtype("float16") == torch.float16


def test_one_tokenizer_loader_for_every_stage(tiny_model_dir, tiny_tokenizer_dir, tmp_path):
    """preprocess, training/merge and generation load through modeling.load_tokenizer: the same
    checks (no such directory, a directory without tokenizer files) and the same pad token."""
    from transformers import AutoModelForCausalLM

    from codelora import generation, preprocess

    assert preprocess.load_tokenizer is modeling.load_tokenizer
    tok = generation.load_tokenizer(str(tiny_tokenizer_dir))
    assert tok.pad_token_id == tok.eos_token_id and tok.padding_side == tok.truncation_side == "left"
    with pytest.raises(UserError, match="no such directory"):
        modeling.load_tokenizer(str(tmp_path / "nope"))
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "weights-only")
    with pytest.raises(UserError, match="no tokenizer files"):
        modeling.load_tokenizer(str(tmp_path / "weights-only"))


def test_4bit_weights_are_stored_in_the_compute_dtype_under_fsdp(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert modeling.quantization_config(torch.bfloat16).bnb_4bit_quant_storage == torch.uint8  # bitsandbytes' default
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with an FSDP config sets
    assert modeling.quantization_config(torch.bfloat16).bnb_4bit_quant_storage == torch.bfloat16


def test_bitsandbytes_kernels_notice_is_dropped_and_nothing_else(caplog):
    import logging

    bnb_log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level("WARNING"):
        bnb_log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'")
        bnb_log.warning("some other bitsandbytes problem")
    assert "kernels-community" not in caplog.text and "some other bitsandbytes problem" in caplog.text


# ------------------------------------------------------------------- LoRA targets by architecture

LLAMA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_default_targets_follow_the_architecture(tiny_model_dir, tiny_llama_dir):
    """Phi's names on a llama base select nothing: the default comes from the base's architecture."""
    phi = modeling.load_base_model(str(tiny_model_dir), dtype=torch.float32)
    assert modeling.default_targets(phi) == list(PHI_TARGET_MODULES)
    llama = modeling.load_base_model(str(tiny_llama_dir), dtype=torch.float32)
    with pytest.raises(UserError, match="dense fc1 fc2 match no linear"):
        modeling.validate_target_modules(llama, PHI_TARGET_MODULES)
    peft_model = modeling.add_lora(llama, r=2, alpha=4, dropout=0.0, targets=None)
    adapted = peft_model.targeted_module_names
    assert len(adapted) == 7 * 3 and {n.rsplit(".", 1)[-1] for n in adapted} == LLAMA_TARGETS


def test_an_unknown_architecture_gets_all_linear():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32))
    assert modeling.default_targets(model) == ["all-linear"]
    adapted = modeling.add_lora(model, r=2, alpha=4, dropout=0.0, targets=None).targeted_module_names
    # every linear (Conv1D) layer of both blocks, not the output head
    assert {n.rsplit(".", 1)[-1] for n in adapted} == {"c_attn", "c_proj", "c_fc"} and len(adapted) == 2 * 4


def test_lora_layers_adapts_and_trains_only_the_top_layers(tiny_llama_dir):
    llama = modeling.load_base_model(str(tiny_llama_dir), dtype=torch.float32)
    with pytest.raises(UserError, match="has only 3 layers"):
        modeling.add_lora(llama, r=2, alpha=4, dropout=0.0, targets=None, layers=4)
    peft_model = modeling.add_lora(llama, r=2, alpha=4, dropout=0.0, targets=None, layers=1)
    assert len(peft_model.targeted_module_names) == 7
    assert all(".layers.2." in n for n in peft_model.targeted_module_names)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.2." in n for n in trainable)
    peft_model.train()
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    peft_model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if p.requires_grad)


def test_benchmark_loads_models_through_the_one_loader(tiny_model_dir, monkeypatch):
    """generation.load_model (the benchmark's) had its own from_pretrained: GGUF files and short
    names must reach it through modeling.load_base_model too."""
    from codelora import generation

    seen = []
    real = modeling.load_base_model
    monkeypatch.setattr(modeling, "load_base_model", lambda name, **kw: seen.append(name) or real(name, **kw))
    model, _ = generation.load_model(str(tiny_model_dir), "float32")
    assert seen == [str(tiny_model_dir)]
    assert model.config.use_cache is True and not model.training  # set up for generation, not training
