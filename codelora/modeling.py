"""Model and tokenizer loading, the device/dtype policy, and LoRA configuration (the tiny models
built offline live in codelora.bootstrap)."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from codelora.utils import UserError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------- device and dtype policy

def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def compute_dtype():
    """The dtype matmuls run in: bf16 on a GPU that supports it, fp16 (with a warning) on one that
    does not, fp32 on CPU — where bf16 matmuls are ~140x slower than fp32."""
    import torch

    if not torch.cuda.is_available():
        return torch.float32
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    log.warning("this GPU does not support bf16: computing in fp16 (watch for overflow)")
    return torch.float16


def resolve_load_in_4bit(requested: bool | None) -> bool:
    """Default: 4-bit NF4 with CUDA (QLoRA), unquantized on CPU (NF4 on CPU works but is slow)."""
    return has_cuda() if requested is None else requested


def uses_fsdp() -> bool:
    """True inside an `accelerate launch` with an FSDP config (accelerate sets this variable)."""
    import os

    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def quantization_config(dtype):
    from transformers import BitsAndBytesConfig

    extra = {}
    if uses_fsdp():
        # FSDP flattens parameters of one dtype per unit: 4-bit weights must be stored in the
        # compute dtype, not uint8 (peft's "FSDP + QLoRA" guide).
        extra["bnb_4bit_quant_storage"] = dtype
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,  # quantize the quantization constants too: ~0.4 bit/param saved
        bnb_4bit_compute_dtype=dtype,
        **extra,
    )


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _tokenizer_source(name: str) -> str:
    """`name` itself for a Hub id, the expanded directory for a local path. A path that names no
    directory, or a directory without tokenizer files, is an error here: transformers would report
    the first as a malformed Hub id and build an *empty* tokenizer from config.json for the second."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in _TOKENIZER_FILES):
            raise UserError(f"model {name}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}) in the directory")
        return str(path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        raise UserError(f"tokenizer {name}: no such directory")
    return name


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The one tokenizer loader of every stage: checked, with an EOS token and a pad token.

    Phi has no pad token; EOS is reused for *padding* only. Labels and attention masks are built
    from explicit lengths, never by matching the pad id, so the EOS that ends each completion
    stays a trained target; generation pads on the left, where EOS is harmless.
    """
    from transformers import AutoTokenizer

    source = _tokenizer_source(name)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, HTTP errors: all the user's input
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load tokenizer {name!r}: {first}") from None
    if tok is None or len(tok) <= 1:
        raise UserError(f"cannot load tokenizer {name!r}: it is empty")
    if tok.eos_token_id is None:
        raise UserError(f"tokenizer of {name!r} has no EOS token; completions could not be terminated")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(
    name: str,
    *,
    load_in_4bit: bool = False,
    dtype=None,
    trust_remote_code: bool = False,
    device_map: Any = None,
):
    """Load a causal LM: 4-bit NF4 (double quantization, `dtype` compute) or unquantized in `dtype`.

    `dtype` defaults to `compute_dtype()`. Native transformers classes are used unless
    `trust_remote_code` is given (Phi is native since transformers 4.37).
    """
    from transformers import AutoModelForCausalLM


    dtype = dtype or compute_dtype()
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
        if not has_cuda() and importlib.util.find_spec("kernels") is None:
            # Said here, where it matters, instead of bitsandbytes' warning on every import.
            log.info("4-bit on CPU: bitsandbytes' faster CPU kernels need the optional `kernels` package")
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load base model {name!r}: {err}") from None
    # The KV cache is useless in training and conflicts with gradient checkpointing.
    model.config.use_cache = False
    log.info("loaded %s (%s%s)", name, "4-bit NF4, compute " if load_in_4bit else "", str(dtype).replace("torch.", ""))
    return model


# ------------------------------------------------------------------------------------------- LoRA


def _is_adaptable(module) -> bool:
    import torch

    if isinstance(module, (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)):
        return True
    # bitsandbytes' Linear4bit/Linear8bitLt subclass nn.Linear, but be explicit for other backends.
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def matching_modules(model, targets: Iterable[str]) -> dict[str, list[str]]:
    """For each target, the module names it selects with peft's list semantics (the full name, or
    its last dotted components, equal the target)."""
    names = [name for name, module in model.named_modules() if name and _is_adaptable(module)]
    return {t: [n for n in names if n == t or n.endswith(f".{t}")] for t in targets}


def validate_target_modules(model, targets: Iterable[str]) -> dict[str, list[str]]:
    """Fail loudly when a target selects nothing: peft would silently skip it, and a run with a
    misspelled target (or an architecture whose names differ, as Phi's did between its remote and
    native code) trains less than asked — or nothing at all."""

    found = matching_modules(model, targets)
    missing = [t for t, hits in found.items() if not hits]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and _is_adaptable(m)})
        raise UserError(
            f"--target-modules {' '.join(missing)} match no linear/embedding module of "
            f"{type(model).__name__}; available names: {' '.join(leaves)}"
        )
    return found


def lora_config(r: int, alpha: int, dropout: float, targets: Iterable[str], trainable_token_rows=()):
    """LoRA on `targets`; `trainable_token_rows`: input-embedding rows trained as well (new FIM
    sentinels), with peft's trainable tokens, which store only those rows."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        bias="none",
        task_type=TaskType.CAUSAL_LM,
        trainable_token_indices=list(trainable_token_rows) or None,
    )


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total). 4-bit weights are packed two per byte, so count their logical size."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if type(param).__name__ == "Params4bit":
            n *= 2
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def add_lora(model, *, r: int, alpha: int, dropout: float, targets: Iterable[str],
             quantized: bool = False, gradient_checkpointing: bool = False, trainable_token_rows=()):
    """Wrap `model` with fresh LoRA adapters on `targets` (validated first); log the counts."""
    from peft import get_peft_model, prepare_model_for_kbit_training


    targets = list(targets)
    found = validate_target_modules(model, targets)
    if quantized:
        # Casts norms to fp32 and enables input grads so checkpointed 4-bit blocks get gradients.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    with warnings.catch_warnings():
        # peft 0.21 reads the deprecated `is_gradient_checkpointing` property; nothing to act on.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        model = get_peft_model(model, lora_config(r, alpha, dropout, targets, trainable_token_rows))
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise UserError("LoRA produced no trainable parameters; check --target-modules")
    log.info(
        "LoRA r=%d alpha=%d on %d modules (%s): trainable %s / %s parameters (%.3f%%)",
        r, alpha, sum(len(v) for v in found.values()), ", ".join(targets),
        f"{trainable:,}", f"{total:,}", 100 * trainable / total,
    )
    return model


# ------------------------------------------------------------------------------ base identity

BASE_IDENTITY_FILE = "codelora_base.json"  # in an adapter directory: which base weights it was trained on


def weight_files(name: str) -> list[Path]:
    """The base's safetensors files: a local directory's, or those in the Hub cache (no download)."""
    path = Path(name)
    if path.is_dir():
        return sorted(path.glob("*.safetensors"))
    try:
        from huggingface_hub import snapshot_download

        root = snapshot_download(name, allow_patterns=["*.safetensors"], local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, not a repo: no fingerprint, not an error
        return []
    return sorted(Path(root).glob("*.safetensors"))


def weights_fingerprint(name: str) -> str | None:
    """sha256 over every tensor's name, dtype, shape and first values, read from the files.

    The raw file bytes, not the loaded model: a 4-bit training load and an fp32 merge load of the
    same files agree. Reading a slice of each tensor costs milliseconds, even for Phi-1.5; two
    models of one architecture (or two finetunes of one base) differ in those values.
    """
    import hashlib

    import torch
    from safetensors import safe_open

    files = weight_files(name)
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in sorted(handle.keys()):
                part = handle.get_slice(key)
                shape = part.get_shape()
                digest.update(f"{key}|{part.get_dtype()}|{shape}".encode())
                values = part[:1] if shape else handle.get_tensor(key)
                digest.update(values.flatten()[:256].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
