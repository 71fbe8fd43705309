"""train.py on a tiny Phi: outputs, parameter deltas, resume, NaN guard, 4-bit CPU, DDP
(the batches themselves: test_batching.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_prepared_dataset
from transformers import TrainerCallback

from codelora import training

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return make_prepared_dataset(tmp_path_factory.mktemp("data") / "prepared")


def base_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--base-model", str(model_dir), "--dataset", str(data), "--output-dir", str(out),
            "--batch-size", "4", "--max-steps", "8", "--eval-steps", "4", "--save-steps", "4",
            "--logging-steps", "1", "--learning-rate", "3e-2", "--warmup-ratio", "0", "--lora-r", "4",
            "--lora-alpha", "8", "--max-length", "64", *extra]


def train_config(*args: str):
    from codelora.cli import parse_config
    from codelora.config import TrainConfig

    return parse_config(TrainConfig, list(args), "train.py", "", "", "train")[0]


class ModelSpy(TrainerCallback):
    """Keeps the trained model the Trainer hands to callbacks at the end of training."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


class CrashAt(TrainerCallback):
    """Raises (like a preempted job) at the start of optimizer step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step - 1:
            raise Crash(f"simulated preemption at step {self.step}")


class Crash(Exception):
    pass


def step_losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "train_metrics.json").read_text())["log_history"]
    return {row["step"]: row["loss"] for row in history if "loss" in row}


# ------------------------------------------------------------------------------------- end to end


def test_train_writes_adapter_and_changes_only_lora_weights(tiny_model_dir, dataset_dir, tmp_path, recwarn):
    import stat

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from codelora.modeling import add_lora
    from codelora.utils import seed_everything

    spy = ModelSpy()
    out = tmp_path / "run"
    old_umask = os.umask(0o022)
    notices: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = notices.append
    logging.getLogger("transformers").addHandler(catcher)
    try:
        training.train(train_config(*base_args(tiny_model_dir, dataset_dir, out, "--max-steps", "12")), callbacks=[spy])
    finally:
        os.umask(old_umask)
        logging.getLogger("transformers").removeHandler(catcher)
    # the model's configs carry the tokenizer's pad token before the Trainer looks, so it has
    # nothing to align and no "new PAD/BOS/EOS tokens" notice on every run
    assert not [r for r in notices if "PAD/BOS/EOS" in r.getMessage()]
    assert spy.model.config.pad_token_id == spy.model.generation_config.pad_token_id is not None
    # The known-harmless warnings every run printed (peft reading a deprecated property, pyarrow
    # on datasets' sort) are gone at their source; nothing was silenced globally.
    noise = ("is_gradient_checkpointing", "null_placement")
    assert not [w for w in recwarn if any(n in str(w.message) for n in noise)]
    # safetensors writes 0600; outputs follow the umask like every other file (0644 here), the
    # Trainer's checkpoints included (a team sharing a run folder reads them to resume or merge).
    checkpoint_files = [p for p in out.rglob("checkpoint-*/*") if p.is_file()]
    assert len(checkpoint_files) > 5
    for path in (out / "adapter" / "adapter_model.safetensors", out / "train_metrics.json", *checkpoint_files):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path

    adapter = out / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (adapter / name).is_file(), name
    assert not list(out.glob(".adapter*"))  # no temp dirs left behind
    assert (out / "config.yaml").is_file() and (out / "loss_curve.png").stat().st_size > 1000
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["global_step"] == 12 and metrics["eval_loss"] is not None
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert metrics["non_padding_fraction"] > 0.8
    # It learned: a random tiny model's logits move slowly through a random lm_head, so the
    # margins are small but well above step-to-step noise here.
    losses = step_losses(out)
    assert sum(losses[s] for s in (10, 11, 12)) / 3 < sum(losses[s] for s in (1, 2, 3)) / 3 - 0.05
    evals = [r["eval_loss"] for r in metrics["log_history"] if "eval_loss" in r]
    assert evals[-1] < evals[0]

    # LoRA weights moved from their initialisation; every base weight is bit-identical.
    trained = spy.model
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    seed_everything(42)
    fresh = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                     r=4, alpha=8, dropout=0.05, targets=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"])
    fresh_params = dict(fresh.named_parameters())
    base_params = dict(base.named_parameters())
    n_lora = 0
    for name, param in trained.named_parameters():
        if "lora_" in name:
            n_lora += 1
            assert param.requires_grad
            assert not torch.allclose(param, fresh_params[name]), f"{name} did not train"
        else:
            assert not param.requires_grad
            base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(param, base_params[base_name]), f"frozen {name} changed"
    assert n_lora == 2 * 6 * 2  # A and B on 6 module kinds in 2 layers
    saved = load_file(adapter / "adapter_model.safetensors")
    assert len(saved) == n_lora and any(t.abs().sum() > 0 for k, t in saved.items() if "lora_B" in k)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}


def test_unknown_target_module_fails_loudly(tiny_model_dir, dataset_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = training.main(base_args(tiny_model_dir, dataset_dir, out, "--target-modules", "q_proj", "query_key_value"))
    err = capsys.readouterr().err
    assert code == 2
    assert "query_key_value" in err and "match no" in err and "fc1" in err  # names what exists
    assert not (out / "adapter").exists()


def test_push_without_credentials_fails_before_training(tiny_model_dir, dataset_dir, tmp_path, monkeypatch, capsys,
                                                         no_hf_token):
    from codelora import batching

    loaded = []
    monkeypatch.setattr(batching, "load_prepared_dataset", lambda name: loaded.append(name))
    out = tmp_path / "run"
    code = training.main(base_args(tiny_model_dir, dataset_dir, out, "--push-to-hub", "someone/tiny-lora"))
    err = capsys.readouterr().err
    assert code == 2 and "no Hub credentials" in err
    assert loaded == [] and not out.exists()  # nothing loaded, nothing written


def test_resume_reproduces_the_uninterrupted_run(tiny_model_dir, dataset_dir, tmp_path):
    # Dropout 0 and two epochs (the resumed part crosses an epoch boundary, so the sampler's
    # per-epoch order must be reproduced too): 30 examples / batch 4 = 8 steps per epoch.
    args = ("--lora-dropout", "0", "--max-steps", "12", "--save-steps", "6", "--eval-steps", "6")
    full = tmp_path / "full"
    assert training.main(base_args(tiny_model_dir, dataset_dir, full, *args)) == 0

    # Crash (like a preempted job) during step 8, after checkpoint-6 was written.
    part = tmp_path / "part"
    with pytest.raises(Crash):
        training.train(train_config(*base_args(tiny_model_dir, dataset_dir, part, *args)), callbacks=[CrashAt(8)])
    assert not (part / "adapter").exists()
    assert (part / "checkpoints" / "checkpoint-6").is_dir()
    # A kill -9 during the save of checkpoint-7 would leave it half written: the model saved, the
    # optimizer, scheduler and trainer state not. --resume must skip it, not crash on it.
    partial = part / "checkpoints" / "checkpoint-7"
    partial.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(part / "checkpoints" / "checkpoint-6" / name, partial / name)

    assert training.main(base_args(tiny_model_dir, dataset_dir, part, *args, "--resume")) == 0
    a, b = step_losses(full), step_losses(part)
    assert set(range(7, 13)) <= set(b)
    for step in range(7, 13):
        assert b[step] == pytest.approx(a[step], abs=1e-5), step
    metrics = json.loads((part / "train_metrics.json").read_text())
    assert metrics["resumed_from"].endswith("checkpoint-6")
    ja = json.loads((full / "train_metrics.json").read_text())
    assert metrics["eval_loss"] == pytest.approx(ja["eval_loss"], abs=1e-5)
    # The whole run is reported, not just the resumed part: loss, tokens, and a throughput
    # over all the training time.
    assert metrics["train_loss"] == pytest.approx(ja["train_loss"], abs=1e-5)
    assert metrics["train_tokens"] == ja["train_tokens"]
    assert metrics["train_tokens_per_second"] == pytest.approx(metrics["train_tokens"] / metrics["train_runtime_s"])


def test_existing_checkpoints_need_resume(tiny_model_dir, dataset_dir, tmp_path, capsys):
    (tmp_path / "run" / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    code = training.main(base_args(tiny_model_dir, dataset_dir, tmp_path / "run"))
    assert code == 2 and "--resume" in capsys.readouterr().err


class PoisonLogits(TrainerCallback):
    """From optimizer step `step` on, the model's logits (so its loss) are NaN."""

    def __init__(self, step: int):
        self.step = step
        self.hook = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step - 1 and self.hook is None:
            self.hook = model.get_output_embeddings().register_forward_hook(lambda m, i, out: out * float("nan"))


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        tiny_model_dir, dataset_dir, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(training.NonFiniteError) as err:
        training.train(train_config(*base_args(tiny_model_dir, dataset_dir, out)), callbacks=[PoisonLogits(6)])
    err = str(err.value)
    assert "non-finite loss" in err and "step 6" in err and "checkpoint-4" in err
    assert (out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors").is_file()
    assert not (out / "checkpoints" / "checkpoint-8").exists()
    assert not (out / "adapter").exists() and not (out / "train_metrics.json").exists()


class PoisonGradient(TrainerCallback):
    """At optimizer step `step`, one LoRA weight's gradient is NaN while the loss stays finite
    (what --learning-rate 30 produced on the tiny model)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step - 1:
            param = next(p for n, p in model.named_parameters() if "lora_A" in n)
            handle = param.register_hook(lambda grad: (handle.remove(), grad * float("nan"))[1])


class PoisonWeights(TrainerCallback):
    """After optimizer step `step`, one LoRA weight holds an inf (e.g. an overflowing update)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "lora_B" in n)[0, 0] = float("inf")


@pytest.mark.parametrize("poison", ["gradient", "weights"])
def test_non_finite_gradients_or_weights_are_never_saved(tiny_model_dir, dataset_dir, tmp_path, poison):
    """The guard used to check the loss only: a NaN gradient with a finite loss stepped the
    optimizer, checkpoint-3 was written with non-finite weights, and step 4's error named it."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    callback = PoisonGradient(3) if poison == "gradient" else PoisonWeights(3)
    with pytest.raises(training.NonFiniteError) as err:
        training.train(train_config(*base_args(tiny_model_dir, dataset_dir, out, "--save-steps", "1", "--max-steps", "5")),
                       callbacks=[callback])
    message = str(err.value)
    expected = "non-finite gradient norm" if poison == "gradient" else "LoRA weight tensor(s) are non-finite"
    assert expected in message and "step 3" in message
    assert "Last good checkpoint: " in message and message.rstrip(")").split("Last good checkpoint: ")[1].startswith(
        str(out / "checkpoints" / "checkpoint-2"))
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-1", "checkpoint-2"]  # nothing from step 3 on was saved
    for name in ckpts:
        weights = load_file(out / "checkpoints" / name / "adapter_model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (out / "adapter").exists()


def test_resume_applies_a_changed_learning_rate_or_names_what_cannot_change(tiny_model_dir, dataset_dir, tmp_path,
                                                                            capsys):
    import math

    import yaml

    out = tmp_path / "run"
    args = base_args(tiny_model_dir, dataset_dir, out, "--lora-dropout", "0")  # lr 3e-2, cosine over 8 steps
    with pytest.raises(Crash):
        training.train(train_config(*args), callbacks=[CrashAt(6)])  # after checkpoint-4
    # Settings that define the model or the data stream cannot change: refused, each one named.
    assert training.main([*args, "--resume", "--batch-size", "2", "--lora-r", "8"]) == 2
    err = capsys.readouterr().err
    assert "batch_size 4 (now 2)" in err and "lora_r 4 (now 8)" in err and "checkpoint-4" in err
    # The learning rate (what the non-finite error advises to lower) is applied from step 5 on.
    assert training.main([*args, "--resume", "--learning-rate", "1e-2"]) == 0
    history = json.loads((out / "train_metrics.json").read_text())["log_history"]
    lrs = {row["step"]: row["learning_rate"] for row in history if "learning_rate" in row}
    for step in range(5, 9):  # the lr of step k is peak * cosine factor after k - 1 scheduler steps
        assert lrs[step] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 8)), rel=1e-6), step
    ran = yaml.safe_load((out / "config.yaml").read_text())
    assert ran["learning_rate"] == 1e-2  # config.yaml records what ran ...
    assert ran["resolved"]["changed_on_resume"] == {"learning_rate": [3e-2, 1e-2]}  # ... and what changed


def test_resume_without_a_checkpoint_is_an_error_unless_auto(tiny_model_dir, dataset_dir, tmp_path, capsys):
    out = tmp_path / "typo"
    assert training.main(base_args(tiny_model_dir, dataset_dir, out, "--resume")) == 2
    assert "no complete checkpoint" in capsys.readouterr().err and not out.exists()
    assert training.main(base_args(tiny_model_dir, dataset_dir, out, "--resume", "auto", "--max-steps", "2")) == 0
    assert json.loads((out / "train_metrics.json").read_text())["resumed_from"] is None


@pytest.fixture(scope="module")
def model_dir_64(tmp_path_factory, tiny_tokenizer) -> Path:
    """A tiny Phi whose layer widths (64, 256) are multiples of bitsandbytes' 4-bit block size (64):
    on CPUs with AVX512-BF16 its eval-mode path repacks 4-bit weights per block and fails on a
    32-wide layer, so 4-bit tests must use widths real models have, whatever the CPU."""
    from codelora.bootstrap import make_tiny_phi

    out = tmp_path_factory.mktemp("tiny-phi-64")
    make_tiny_phi(tiny_tokenizer, out, seed=0, hidden_size=64, layers=2, heads=4)
    return out


def test_4bit_nf4_trains_on_cpu(model_dir_64, dataset_dir, tmp_path):
    spy = ModelSpy()
    out = tmp_path / "run4"
    # --eval-steps 4 (base_args): the run evaluates in eval mode at step 4, the path that repacks weights.
    training.train(train_config(*base_args(model_dir_64, dataset_dir, out, "--load-in-4bit", "true", "--max-steps", "4")),
                   callbacks=[spy])
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["load_in_4bit"] is True and metrics["global_step"] == 4
    evals = [row for row in metrics["log_history"] if "eval_loss" in row]
    assert evals and all(torch.isfinite(torch.tensor(row["eval_loss"])) for row in evals)
    assert metrics["eval_loss"] == pytest.approx(evals[-1]["eval_loss"])
    model = spy.model
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in kinds  # the base really was quantized
    weight = model.base_model.model.model.layers[0].mlp.fc1.base_layer.weight
    assert type(weight).__name__ == "Params4bit" and weight.quant_type == "nf4"
    b = model.base_model.model.model.layers[0].mlp.fc1.lora_B["default"].weight
    assert b.dtype == torch.float32 and b.abs().sum() > 0  # fp32 compute; LoRA trained
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def readme_multiprocess_command(fsdp: bool) -> list[str]:
    """The README's documented two-process training command (DDP, or FSDP), as arguments."""
    import shlex

    lines = [line.strip() for line in (REPO / "README.md").read_text().splitlines()
             if line.strip().startswith("python train.py") and "--num-processes 2" in line
             and ("--accelerate-config" in line) == fsdp]
    assert len(lines) == 1, lines  # one documented way
    return shlex.split(lines[0])


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_with_the_readme_command(tiny_model_dir, dataset_dir, tmp_path, fsdp):
    """`accelerate launch --num_processes 2 train.py` (the old README) ran ONE process on CPU,
    silently. The README's commands now are the ones run here, with the tiny model swapped in."""
    out = tmp_path / "run"
    # CPU whatever the machine (a one-GPU machine could not run two GPU processes).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    python, script, *documented = readme_multiprocess_command(fsdp)
    assert (python, script) == ("python", "train.py")
    overrides = [*base_args(tiny_model_dir, dataset_dir, out, "--max-steps", "10", "--batch-size", "2"),
                 "--load-in-4bit", "false", "--grad-accum", "1", "--no-gradient-checkpointing"]
    cmd = [sys.executable, str(REPO / "train.py"), *documented, *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kind = "FSDP" if fsdp else "DDP"
    assert proc.stderr.count(f"training on 2 processes ({kind}") == 1  # it says so, once (the main process)
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_step"] == 10 and metrics["parallelism"] == kind
    losses = step_losses(out)
    assert losses[10] < losses[1]
    # Only the main process wrote: one adapter, no stray temp dirs from a second writer.
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        ".codelora-output.json", "adapter", "checkpoints", "config.yaml", "logs", "loss_curve.png",
        "train_metrics.json"]
    assert proc.stderr.count("adapter written to") == 1
    if fsdp:  # the gathered adapter is whole: every LoRA tensor of both layers, at full shape
        from safetensors.torch import load_file

        saved = load_file(out / "adapter" / "adapter_model.safetensors")
        assert len(saved) == 2 * 6 * 2 and all(torch.isfinite(t).all() for t in saved.values())
        assert {tuple(t.shape) for k, t in saved.items() if "fc1.lora_A" in k} == {(4, 32)}


def test_shipped_fsdp_config_is_valid_for_accelerate_and_phi():
    from accelerate.commands.config.config_args import load_config_from_file
    from transformers.models.phi import modeling_phi

    cfg = load_config_from_file(str(REPO / "configs" / "accelerate" / "fsdp-phi.yaml"))
    assert cfg.distributed_type == "FSDP" and cfg.fsdp_config["fsdp_version"] == 2
    # The layer class it wraps must exist under that name, or FSDP would wrap nothing.
    assert hasattr(modeling_phi, cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])
    assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # checkpoints --resume/merge can read


@pytest.mark.parametrize("architecture", ["phi", "llama"])
def test_target_logits_only_gives_the_same_loss_and_gradients(architecture, tiny_tokenizer):
    """The training loss asks the model for logits only where a target is predicted; the loss and
    every LoRA and sentinel-row gradient must be those of the full logits, within fp32 rounding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from codelora.batching import CompletionCollator
    from codelora.bootstrap import make_tiny_phi
    from codelora.modeling import add_lora

    torch.manual_seed(0)
    if architecture == "phi":
        model = make_tiny_phi(tiny_tokenizer, None, seed=0, hidden_size=32, layers=2, heads=4)
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             tie_word_embeddings=True))
    model = add_lora(model, r=4, alpha=8, dropout=0.0, targets=None, trainable_token_rows=[12, 30])  # ids in the batch
    for param in model.parameters():
        if param.requires_grad:  # LoRA's B starts at zero: move it, so every gradient is non-trivial
            param.data.normal_(0, 0.1)
    features = [{"input_ids": list(range(10, 10 + n)), "prompt_len": p} for n, p in ((24, 15), (19, 17), (12, 4))]
    batch = CompletionCollator(pad_token_id=0)(features)
    trimmed = training.target_logits_only(model, batch)
    # the positions that predict a target: row 3's (targets 4..11) and row 1's (15..23), row 2's inside them
    assert trimmed["logits_to_keep"].tolist() == [*range(3, 11), *range(14, 23)]
    results = []
    for inputs in (batch, trimmed):
        model.zero_grad()
        out = model(**inputs, num_items_in_batch=torch.tensor(19))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((out.loss.detach(), out.logits.shape[1], grads))
    (full, full_width, full_grads), (kept, kept_width, kept_grads) = results
    assert (full_width, kept_width) == (24, 17)
    torch.testing.assert_close(kept, full, rtol=1e-6, atol=1e-6)
    assert full_grads.keys() == kept_grads.keys() and len(full_grads) > 2
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(kept_grads[name], grad, rtol=1e-5, atol=1e-7)
    every = CompletionCollator(pad_token_id=0)([{"input_ids": [1, 2, 3], "prompt_len": 0, "loss_start": 0}])
    assert training.target_logits_only(model, every) is every  # every position is a target: unchanged


@pytest.mark.parametrize("train_rows", [True, False])
def test_frozen_sentinel_rows_stop_the_backward_pass_at_the_lowest_adapted_layer(train_rows, tiny_tokenizer):
    """--no-train-token-rows: nothing below the lowest LoRA layer needs a gradient, so autograd
    never runs the lower layers' backward (the step's saving); trained rows need all of it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from codelora.modeling import add_lora

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2))
    model = add_lora(model, r=4, alpha=8, dropout=0.0, targets=None, trainable_token_rows=[12, 30], layers=1,
                     train_token_rows=train_rows)
    reached = []
    for i, layer in enumerate(model.get_base_model().model.layers):
        layer.register_full_backward_hook(lambda module, grad_in, grad_out, i=i: reached.append(i))
    ids = torch.tensor([list(range(10, 34))])
    model(input_ids=ids, labels=ids).loss.backward()
    rows = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n]
    assert rows and all(p.requires_grad is train_rows for p in rows)
    assert sorted(reached) == ([0, 1, 2] if train_rows else [2])
