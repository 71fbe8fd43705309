"""merge_lora.py: fold a LoRA adapter into its unquantized base and save one full model.

The base is always loaded unquantized (fp32) for the merge, whatever the adapter was trained on:
merging into a 4-bit model makes peft re-quantize W + BA, and the result is neither the trained
model nor the base. Before anything is written, logits of (base + adapter) and of the merged
model are compared on a probe batch — in fp32, to check the merge itself, and in the output
dtype, to check the cast — and a disagreement beyond the dtype's tolerance is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from codelora.config import MergeConfig, guard_stage_output, save_config
from codelora.contracts import write_output_marker
from codelora.fim import fit_embeddings
from codelora.utils import UserError, atomic_dir, check_local_or_hub

log = logging.getLogger(__name__)

EXAMPLES = """\
  python merge_lora.py --adapter runs/phi15-kotlin/adapter --output runs/phi15-kotlin/merged
  python merge_lora.py --adapter runs/phi15-kotlin/adapter --output runs/phi15-kotlin/merged \\
      --dtype bfloat16 --push-to-hub USER/phi15-kotlin
  python merge_lora.py --adapter USER/phi15-kotlin-lora --base-model ./phi-1_5 --output merged --overwrite
"""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Relative L2 error of logits (||merged - reference|| / ||reference||) allowed per dtype: fp32
# differs only by summation order; the half types by their 8/11-bit mantissas.
TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}
PROBE_TEXTS = (
    "fun main() {\n    val xs = listOf(1, 2, 3)\n",
    "def add(a, b):\n    return a + b\n",
    "class Greeter(val name: String) {\n",
    "import os\nfor root, dirs, files in os.walk('.'):\n",
)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class MergeMismatchError(UserError):
    """The merged model does not reproduce base + adapter."""


def resolve_adapter(adapter: str) -> tuple[dict[str, Any], Path | None]:
    """(adapter_config.json contents, local directory or None for a Hub repo), checked."""
    path = Path(adapter)
    if path.exists() or adapter.startswith((".", "/", "~")):
        if not path.is_dir():
            raise UserError(f"--adapter {adapter}: no such directory")
        config_file = path / "adapter_config.json"
        if not config_file.is_file():
            raise UserError(f"--adapter {adapter}: adapter_config.json is missing (is this an adapter directory?)")
        if not any((path / name).is_file() for name in WEIGHT_FILES):
            raise UserError(f"--adapter {adapter}: adapter weights are missing (expected {WEIGHT_FILES[0]})")
        check_safetensors(path / WEIGHT_FILES[0])
        try:
            return json.loads(config_file.read_text(encoding="utf-8")), path
        except json.JSONDecodeError as err:
            raise UserError(f"--adapter {adapter}: adapter_config.json is not valid JSON ({err})") from None
    from peft import PeftConfig

    try:
        return PeftConfig.from_pretrained(adapter).to_dict(), None
    except Exception as err:  # noqa: BLE001 - offline, missing repo, bad file: all "cannot load"
        raise UserError(f"--adapter {adapter}: cannot load adapter config ({type(err).__name__}: {err})") from None


def check_safetensors(file: Path) -> None:
    """A truncated or corrupt weights file, named, before anything heavy is loaded."""
    if not file.is_file():
        return
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                handle.get_slice(key).get_shape()
    except Exception as err:  # noqa: BLE001 - any failure to read the header means the same thing
        raise UserError(f"{file}: corrupt or truncated safetensors file ({type(err).__name__}: {err}); "
                        f"copy or train the adapter again") from None


def mismatch_summary(err: Exception) -> str:
    """torch's load_state_dict error is a header line then one line per tensor: keep the detail."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    sizes = [line for line in lines if line.startswith("size mismatch")]
    if sizes:
        more = f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""
        return f"{len(sizes)} tensor shape mismatch(es), e.g. {sizes[0][:400]}{more}"
    return " ".join(lines)[:600]


def check_base_identity(adapter_dir: Path | None, base_name: str, force: bool) -> None:
    """Refuse a base other than the one the adapter was trained on (weights fingerprint)."""
    from codelora.modeling import BASE_IDENTITY_FILE, weights_fingerprint

    record = adapter_dir / BASE_IDENTITY_FILE if adapter_dir else None
    if record is None or not record.is_file():
        log.warning("the adapter records no identity of its base (%s absent): cannot check that %s is it",
                    BASE_IDENTITY_FILE, base_name)
        return
    trained_on = json.loads(record.read_text(encoding="utf-8"))
    expected, got = trained_on.get("weights_fingerprint"), weights_fingerprint(base_name)
    if expected is None or got is None:
        log.warning("cannot fingerprint the base weights of %s: not checked against the adapter's", base_name)
    elif expected != got:
        message = (f"base model {base_name} is not the base this adapter was trained on "
                   f"({trained_on.get('base_model')}): its weights differ (fingerprint {got[:12]} vs "
                   f"{expected[:12]}). Pass --force if it is the same model saved another way")
        if not force:
            raise UserError(message)
        log.warning("--force: %s", message)
    else:
        log.info("base model identity checked: %s has the weights the adapter was trained on", base_name)


def _adapter_tensor_count(adapter_dir: Path | None, adapter: str) -> int | None:
    """Number of tensors in the adapter file (local adapters only)."""
    if adapter_dir is None:
        return None
    st = adapter_dir / WEIGHT_FILES[0]
    if st.is_file():
        from safetensors import safe_open

        with safe_open(str(st), framework="pt") as handle:
            return sum("lora_" in key for key in handle.keys())  # trained embedding rows (FIM) aside
    return sum("lora_" in key for key in torch.load(adapter_dir / WEIGHT_FILES[1], map_location="cpu",
                                                    weights_only=True))


def attach_adapter(base, adapter: str, adapter_dir: Path | None, base_name: str):
    """PeftModel(base, adapter), refusing an adapter whose shapes or modules do not fit `base`."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base, adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        raise UserError(f"adapter {adapter} does not fit base model {base_name}: {mismatch_summary(err)}") from None
    # Same module names and shapes but a different layout (e.g. more layers) loads with a warning
    # and leaves some LoRA weights at their no-op init: count what the file actually provided.
    expected = _adapter_tensor_count(adapter_dir, adapter)
    present = sum(1 for name, _ in model.named_parameters() if "lora_" in name)
    if expected is not None and present != expected:
        raise UserError(f"adapter {adapter} does not fit base model {base_name}: the adapter holds {expected} "
                        f"LoRA tensors but the base takes {present} (was it trained on another model?)")
    model.eval()
    return model


def probe_batch(tokenizer, device) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(PROBE_TEXTS), return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


@torch.no_grad()
def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**batch).logits.float()
    # Compare only real positions: padded ones are arbitrary.
    return out[batch["attention_mask"].bool()]


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).norm() / ref.norm().clamp_min(1e-12))


def merge_adapter(peft_model):
    """W <- W + (alpha/r) B A in every adapted layer; returns the plain transformers model."""
    return peft_model.merge_and_unload(progressbar=False, safe_merge=True)


def _run_config(adapter_dir: Path | None) -> dict[str, Any]:
    """The training run's config.yaml (beside adapter/), for the model card; {} when absent."""
    import yaml

    from codelora.contracts import run_config_of

    if adapter_dir is None or not run_config_of(adapter_dir).is_file():
        return {}
    try:
        data = yaml.safe_load(run_config_of(adapter_dir).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except yaml.YAMLError:
        return {}


def merge(cfg: MergeConfig) -> dict[str, Any]:
    from codelora.modeling import load_base_model, load_tokenizer

    output = Path(cfg.output)
    token = _check_before_work(cfg, output)
    adapter_config, adapter_dir = resolve_adapter(cfg.adapter)
    base_name = _base_name(cfg, adapter_config)

    # fp32 and unquantized, whatever the adapter was trained on (see the module docstring).
    base = load_base_model(base_name, load_in_4bit=False, dtype=torch.float32,
                           trust_remote_code=cfg.trust_remote_code)
    tok_source = str(adapter_dir) if adapter_dir and (adapter_dir / "tokenizer_config.json").is_file() else base_name
    tokenizer = load_tokenizer(tok_source, cfg.trust_remote_code)
    # Tokens training added (FIM sentinels) need their rows before the adapter's go in.
    fit_embeddings(base, tokenizer)
    batch = probe_batch(tokenizer, base.device)
    base_logits = logits_of(base, batch)
    peft_model = attach_adapter(base, cfg.adapter, adapter_dir, base_name)
    check_base_identity(adapter_dir, base_name, cfg.force)
    reference = logits_of(peft_model, batch)
    adapter_effect = relative_error(base_logits, reference)
    merged, fp32_error, dtype_error = verified_merge(peft_model, batch, reference, cfg.dtype)
    log.info("merge verified: adapter changes logits by %.2e; merged differs from base + adapter by %.2e "
             "(fp32) / %.2e (%s)", adapter_effect, fp32_error, dtype_error, cfg.dtype)

    merged.config.use_cache = True  # training turned it off; generation wants it
    info = {"base_model": base_name, "adapter": cfg.adapter, "dtype": cfg.dtype, "adapter_effect": adapter_effect,
            "logit_error_fp32": fp32_error, "logit_error_dtype": dtype_error}
    save_merged(merged, tokenizer, cfg, output, info)
    if cfg.push_to_hub:
        _push(cfg, output, adapter_dir, base_name, token)
    return info


def save_merged(merged, tokenizer, cfg: MergeConfig, output: Path, info: dict[str, Any]) -> None:
    """Write the merged model as one directory, atomically: what merge_lora.py outputs. The place
    where an output format plugs in: today a transformers directory (safetensors, config.json,
    generation_config.json, the tokenizer), which from_pretrained, the benchmark and export_gguf.py
    (GGUF for llama.cpp) read; the config and the verification beside it, then the pipeline marker."""
    with atomic_dir(output, overwrite=cfg.overwrite) as tmp:
        merged.save_pretrained(tmp)  # safetensors + config.json + generation_config.json
        tokenizer.save_pretrained(tmp)
        save_config(cfg, tmp / "merge_config.yaml", verification=info)
        write_output_marker(tmp, "merge")
    log.info("merged model written to %s", output)


def _check_before_work(cfg: MergeConfig, output: Path) -> str | None:
    """Cheap checks first: a bad output path, a push that cannot happen. The Hub token when pushing."""
    from codelora import hub

    guard_stage_output("merge", cfg)
    check_local_or_hub("--adapter", cfg.adapter)
    check_local_or_hub("--base-model", cfg.base_model)
    if not cfg.push_to_hub:
        return None
    if cfg.push_to_hub == cfg.adapter:
        raise UserError("--push-to-hub names the adapter's own repo; push the merged model to a repo of its own")
    return hub.check_push_access(cfg.push_to_hub)


def _base_name(cfg: MergeConfig, adapter_config: dict[str, Any]) -> str:
    """--base-model, else the base the adapter names."""
    named_base = adapter_config.get("base_model_name_or_path")
    base_name = cfg.base_model or named_base
    if not base_name:
        raise UserError(f"--adapter {cfg.adapter}: adapter_config.json names no base model; pass --base-model")
    if cfg.base_model and named_base and cfg.base_model != named_base:
        log.warning("--base-model %s overrides the adapter's base %s", cfg.base_model, named_base)
    return base_name


def verified_merge(peft_model, batch, reference, dtype: str):
    """(merged model in `dtype`, its relative logit error against base + adapter in fp32, and in
    `dtype`); MergeMismatchError when either is past its TOLERANCE."""
    merged = merge_adapter(peft_model)
    merged.eval()
    fp32_error = relative_error(logits_of(merged, batch), reference)
    if fp32_error > TOLERANCE["float32"]:
        raise MergeMismatchError(
            f"merged model disagrees with base + adapter (relative logit error {fp32_error:.2e} > "
            f"{TOLERANCE['float32']:.0e} in float32); nothing written")
    if dtype == "float32":
        return merged, fp32_error, fp32_error
    merged = merged.to(DTYPES[dtype])
    dtype_error = relative_error(logits_of(merged, batch), reference)
    if dtype_error > TOLERANCE[dtype]:
        raise MergeMismatchError(
            f"merged model in {dtype} disagrees with base + adapter (relative logit error "
            f"{dtype_error:.2e} > {TOLERANCE[dtype]:.0e}); try --dtype float32; nothing written")
    return merged, fp32_error, dtype_error


def _push(cfg: MergeConfig, output: Path, adapter_dir: Path | None, base_name: str, token: str | None) -> None:
    from codelora import cards, hub

    run = _run_config(adapter_dir)
    hyper = {k: run[k] for k in ("lora_r", "lora_alpha", "learning_rate", "max_steps", "epochs", "batch_size")
             if k in run}
    card = cards.merged_card(base_model=base_name, adapter=cfg.adapter, dataset=run.get("dataset"),
                             hyperparameters=hyper or None, repo_id=cfg.push_to_hub)
    hub.push_folder(output, cfg.push_to_hub, token=token, card=card, private=cfg.private)


DESCRIPTION = __doc__.split("\n", 1)[0]


def main(argv: Sequence[str] | None = None) -> int:
    from codelora.cli import run_command

    return run_command("merge", argv)
