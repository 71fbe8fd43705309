"""export_gguf.py: merged model (or adapter + base) → GGUF with working infill, checked in llama.cpp.

The GGUF files load in llama.cpp, Ollama and the editors built on them, fill-in-the-middle included,
and the export is scored in a real llama.cpp against the model it came from before it is kept.

The file is written in Python with the `gguf` package (its GGUFWriter, tensor-name maps and numpy
quantizers): no llama.cpp checkout to build. What llama.cpp's own converter (`convert_hf_to_gguf.py`
in ggml-org/llama.cpp) does for the two architectures codelora trains was learned from it, not copied:

- Phi (`PhiForCausalLM`) is llama.cpp's `phi2`; llama (`LlamaForCausalLM`, e.g. SmolLM2) is `llama`,
  whose Q and K projections are stored with the two halves of each head's rotary dimensions
  interleaved (llama.cpp rotates adjacent pairs; transformers rotates the two halves): `permute_qk`.
- The vocabulary has one entry per embedding row: Phi-1.5 pads its 50,295 tokenizer ids to 51,200
  rows, and the rows past the tokenizer become `[PAD<i>]` entries of type UNUSED.
- The pre-tokenizer (the regex that splits text before BPE) is named by hand in
  `tokenizer.ggml.pre`: llama.cpp does not read tokenizer.json. `pre_tokenizer_name` reads it from
  the tokenizer's own pre-tokenizer: byte-level with GPT-2's regex is `gpt-2` (`phi-2` for Phi, the
  same regex in llama.cpp's llama-vocab.cpp), SmolLM2's split-every-digit + byte-level is `smollm`.
  A tokenizer codelora trained itself (codelora.bootstrap: ByteLevel, GPT-2 regex, no prefix space)
  is therefore `gpt-2`/`phi-2` exactly; the parity gate checks that llama.cpp tokenizes the prompts
  as transformers does.
- A tied output projection (SmolLM2) is left out for `llama`, which then reads the token embedding;
  `phi2` requires its own `output` tensor, so a tied Phi gets a copy.
- FIM: the sentinels codelora.fim adds (StarCoder's `<fim_prefix>`, `<fim_suffix>`, `<fim_middle>`)
  are control tokens and their ids go into `tokenizer.ggml.fim_pre/suf/mid_token_id` (+ pad/rep/sep
  where the tokenizer has `<fim_pad>`, `<repo_name>`, `<file_sep>`), which is what llama-server's
  `/infill` and node-llama-cpp's infill look for.

Types: f16 (2-D weights in half precision; norms and biases stay f32, as in llama.cpp's converter),
q8_0 and q4_0 (blocks of 32 weights with one scale; a tensor whose rows are not a multiple of 32
falls back to f16). In q4_0 the output projection stays q8_0: llama-quantize also keeps it at a
higher precision (its Q6_K, which the gguf package cannot quantize).

Beside the files: an Ollama `Modelfile`, `tabby.json`, Continue and llama.vscode snippets
(codelora.editors), and the parity table (codelora.parity), which refuses an export that scores
worse than the merged model beyond the bound of its type.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codelora.config import ExportConfig, save_config
from codelora.utils import UserError, atomic_dir, check_writable_parent

log = logging.getLogger(__name__)

EXAMPLES = """\
  python export_gguf.py --model runs/phi15-kotlin/merged --output runs/phi15-kotlin/gguf \\
      --dataset data/kotlin_prepared_dataset
  python export_gguf.py --model runs/smollm2-kotlin/merged --output gguf --types f16 --sample 32
  python export_gguf.py --adapter runs/phi15-kotlin/adapter --output gguf --no-parity --overwrite
"""

ARCHITECTURES = {"PhiForCausalLM": "phi2", "LlamaForCausalLM": "llama"}
# FIM sentinel names beyond the three codelora.fim uses: StarCoder's pad/repo/file separators.
FIM_EXTRA = {"fim_pad": "<fim_pad>", "fim_rep": "<repo_name>", "fim_sep": "<file_sep>"}
BLOCK = 32  # weights per q8_0/q4_0 block


class ParityError(UserError):
    """A GGUF scores worse than the merged model beyond the bound of its type."""


@dataclass
class GgufFile:
    path: Path
    type: str
    arch: str
    pre: str
    size: int


# ------------------------------------------------------------------------------ model facts


def read_config(model_dir: Path) -> tuple[dict[str, Any], str]:
    """(config.json, llama.cpp architecture); a model codelora cannot export is a UserError."""
    file = model_dir / "config.json"
    if not file.is_file():
        raise UserError(f"{model_dir}: no config.json (is this a merged model directory?)")
    config = json.loads(file.read_text(encoding="utf-8"))
    names = config.get("architectures") or []
    arch = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
    if arch is None:
        raise UserError(f"{model_dir}: architecture {', '.join(names) or '?'} cannot be exported; "
                        f"supported: {', '.join(ARCHITECTURES)}")
    return config, arch


def rope_setting(config: dict[str, Any], key: str, default: float) -> float:
    """A rotary setting (rope_theta, partial_rotary_factor): transformers 5 keeps them in
    `rope_parameters`, older configs at the top level."""
    params = config.get("rope_parameters") or {}
    value = params.get(key, config.get(key))
    return float(default if value is None else value)


def load_state(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the model's safetensors files, as float32 numpy arrays."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights (merge_lora.py writes them)")
    state = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                state[key] = handle.get_tensor(key).float().numpy()
    return state


def permute_qk(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers' llama rotates the two halves of each head's dimensions; llama.cpp rotates
    adjacent pairs. Reordering each head's output rows from [half 1, half 2] to interleaved pairs
    makes llama.cpp's rotation compute what transformers computes."""
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


# ------------------------------------------------------------------------------ tensors


def gguf_tensors(arch: str, config: dict[str, Any],
                 state: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) of every tensor, renamed with the gguf package's map."""
    import gguf

    blocks = int(config["num_hidden_layers"])
    model_arch = gguf.MODEL_ARCH.PHI2 if arch == "phi2" else gguf.MODEL_ARCH.LLAMA
    mapping = gguf.get_tensor_name_map(model_arch, blocks)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    for name, data in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_freq_base
        new = mapping.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UserError(f"tensor {name} has no GGUF name for arch {arch}: cannot export this model")
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = permute_qk(data, heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = permute_qk(data, kv_heads)
        yield new, data
    if arch == "phi2" and "lm_head.weight" not in state:
        yield "output.weight", state["model.embed_tokens.weight"]  # phi2 needs its own output tensor


def tensor_type(name: str, data: np.ndarray, ftype: str, tied: bool):
    """The GGML type a tensor is stored as in a file of type `ftype`."""
    from gguf import GGMLQuantizationType as Q

    if data.ndim < 2 or name.endswith(".bias"):
        return Q.F32  # norms and biases: tiny, and precision-sensitive
    if ftype == "f16" or data.shape[-1] % BLOCK:
        return Q.F16
    output = name == "output.weight" or (tied and name == "token_embd.weight")
    return Q.Q8_0 if ftype == "q8_0" or output else Q.Q4_0


def add_tensors(writer, arch: str, config: dict[str, Any], state: dict[str, np.ndarray], ftype: str) -> None:
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    tied = "lm_head.weight" not in state
    for name, data in gguf_tensors(arch, config, state):
        qtype = tensor_type(name, data, ftype, tied)
        if qtype == Q.F32:
            writer.add_tensor(name, data.astype(np.float32))
        elif qtype == Q.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, quants.quantize(data, qtype), raw_dtype=qtype)


# ------------------------------------------------------------------------------ metadata


def add_hyperparameters(writer, arch: str, config: dict[str, Any], rows: int, ftype: str) -> None:
    from gguf import LlamaFileType

    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_freq_base(rope_setting(config, "rope_theta", 10000.0))
    writer.add_vocab_size(rows)
    if arch == "phi2":
        writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
        # Phi rotates only the first partial_rotary_factor of each head's dimensions (Phi-1.5: 32 of 64)
        writer.add_rope_dimension_count(int(rope_setting(config, "partial_rotary_factor", 1.0) * head_dim))
    else:
        writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
        writer.add_rope_dimension_count(head_dim)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    file_types = {"f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
                  "q4_0": LlamaFileType.MOSTLY_Q4_0}
    writer.add_file_type(file_types[ftype])


def pre_tokenizer_name(tokenizer_json: dict[str, Any], arch: str) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (see the module docstring)."""
    if (tokenizer_json.get("model") or {}).get("type") != "BPE" or tokenizer_json.get("normalizer"):
        raise UserError("only byte-level BPE tokenizers without a normalizer can be exported (pass "
                        "--pre-tokenizer to force a llama.cpp pre-tokenizer name)")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    byte_level = parts and parts[-1].get("use_regex", True) and not parts[-1].get("add_prefix_space", False)
    if kinds == ["ByteLevel"] and byte_level:
        return "phi-2" if arch == "phi2" else "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and byte_level:
        return "smollm"
    raise UserError(f"pre-tokenizer {kinds} matches none llama.cpp knows by name here (gpt-2, phi-2, "
                    "smollm); "
                    "pass --pre-tokenizer NAME if you know its llama.cpp name")


def vocab_entries(tokenizer, rows: int) -> tuple[list[str], list[int]]:
    """(token text, token type) for each of the `rows` embedding rows."""
    from gguf import TokenType

    if len(tokenizer) > rows:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows")
    by_id = {i: text for text, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(rows):
        if i in added:
            tokens.append(added[i].content)
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
        else:  # Phi-1.5's rows past its tokenizer
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
    return tokens, types


def adds_special(tokenizer, token_id: int | None, first: bool) -> bool:
    """Whether encoding puts `token_id` first (BOS) or last (EOS): what transformers does, which
    llama.cpp must repeat (it adds BOS for `llama` unless told not to)."""
    if token_id is None:
        return False
    ids = tokenizer("x")["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    return ids != bare and ids[0 if first else -1] == token_id


def add_tokenizer(writer, model_dir: Path, tokenizer, arch: str, rows: int, pre: str | None) -> str:
    """Vocabulary, merges, special ids, FIM ids; returns the pre-tokenizer name written."""
    import gguf

    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre = pre or pre_tokenizer_name(tokenizer_json, arch)
    tokens, types = vocab_entries(tokenizer, rows)
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=rows)
    special.add_special_token = {"bos": adds_special(tokenizer, tokenizer.bos_token_id, first=True),
                                 "eos": adds_special(tokenizer, tokenizer.eos_token_id, first=False)}
    special.chat_template = None  # a completion model: no chat template to carry
    special.add_to_gguf(writer, quiet=True)
    for key, token_id in fim_ids(tokenizer).items():
        writer.add_uint32(f"tokenizer.ggml.{key}_token_id", token_id)
    return pre


def fim_ids(tokenizer) -> dict[str, int]:
    """{fim_pre/suf/mid (+ fim_pad/rep/sep): id} for a tokenizer with FIM sentinels, else {}."""
    from codelora.fim import detect_fim_tokens

    found = detect_fim_tokens(tokenizer)
    if found is None:
        return {}
    ids = dict(zip(("fim_pre", "fim_suf", "fim_mid"), found.ids))
    vocab = tokenizer.get_vocab()
    ids.update({key: vocab[text] for key, text in FIM_EXTRA.items() if text in vocab})
    return ids


# ------------------------------------------------------------------------------ one file


def write_gguf(model_dir: Path, out: Path, ftype: str, pre: str | None = None,
               name: str | None = None) -> GgufFile:
    """Write `out`, a GGUF of type `ftype` (f16, q8_0, q4_0) of the model in `model_dir`."""
    import gguf

    from codelora.modeling import load_tokenizer

    config, arch = read_config(model_dir)
    state = load_state(model_dir)
    rows = int(state["model.embed_tokens.weight"].shape[0])
    tokenizer = load_tokenizer(str(model_dir))
    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_name(name or model_dir.name)
    add_hyperparameters(writer, arch, config, rows, ftype)
    pre = add_tokenizer(writer, model_dir, tokenizer, arch, rows, pre)
    add_tensors(writer, arch, config, state, ftype)
    writer.write_header_to_file(path=out)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    log.info("wrote %s (%s, %s, pre-tokenizer %s, %.1f MB)", out, arch, ftype, pre, out.stat().st_size / 1e6)
    return GgufFile(out, ftype, arch, pre, out.stat().st_size)


# ------------------------------------------------------------------------------ the stage


@dataclass
class ExportResult:
    files: list[GgufFile]
    table: str  # the parity table ("" without the gate)
    passed: bool
    failures: list[str]


def merged_source(cfg: ExportConfig, scratch: Path) -> Path:
    """The merged model to export: --model, or --adapter merged into its base in `scratch` with
    merge_lora.py's own checks (its logits verified against base + adapter)."""
    if cfg.model:
        path = Path(cfg.model)
        if not path.is_dir():
            raise UserError(f"--model {cfg.model}: no such directory (a merge_lora.py output)")
        return path
    from codelora.config import MergeConfig
    from codelora.merging import merge

    out = scratch / "merged"
    merge(MergeConfig(adapter=cfg.adapter, base_model=cfg.base_model, output=str(out), dtype="float32"))
    return out


def model_name(cfg: ExportConfig, model_dir: Path) -> str:
    """--name, else the run's folder name (merge_lora.py writes RUN/merged; an adapter is RUN/adapter)."""
    if cfg.name:
        return cfg.name
    path = Path(cfg.adapter).resolve().parent if cfg.adapter else model_dir.resolve()
    return path.parent.name if path.name == "merged" else path.name


def export_files(cfg: ExportConfig, model_dir: Path, folder: Path) -> list[GgufFile]:
    """One GGUF per --types in `folder`, plus the editor files for the first of them."""
    from codelora.editors import write_editor_files
    from codelora.modeling import load_tokenizer

    stem = model_name(cfg, model_dir)
    files = [write_gguf(model_dir, folder / f"{stem}-{t}.gguf", t, cfg.pre_tokenizer, stem)
             for t in cfg.types]
    write_editor_files(folder, stem, files[0].path.name, load_tokenizer(str(model_dir)))
    return files


def run_export(cfg: ExportConfig) -> ExportResult:
    """Write the export (atomically) and run the parity gate; the demo calls this. A failed gate
    is returned, not raised: nothing is written then, and `table` says why."""
    from codelora.parity import check_exports, load_sets, table

    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise UserError(f"{output} already exists (pass --overwrite to replace it)")
    check_writable_parent(output)
    sets = load_sets(cfg.dataset, cfg.heldout_split, cfg.tasks, cfg.sample, cfg.seed) if cfg.parity else []
    if cfg.parity:
        from codelora.llamacpp import runtime_dir

        runtime_dir()  # not installed: say so before the work
    with tempfile.TemporaryDirectory(prefix=".export-", dir=output.resolve().parent) as scratch:
        model_dir = merged_source(cfg, Path(scratch))
        read_config(model_dir)  # an architecture we cannot export fails here, before any writing
        try:
            with atomic_dir(output, overwrite=cfg.overwrite) as tmp:
                files = export_files(cfg, model_dir, tmp)
                result = ExportResult(files, "", True, [])
                if cfg.parity:
                    report = check_exports(model_dir, files, sets, cfg.threads)
                    result = ExportResult(files, table(report), report.passed, report.failures)
                    (tmp / "parity.md").write_text(result.table, encoding="utf-8")
                    if not report.passed:
                        raise ParityError(report.failures[0])
                save_config(cfg, tmp / "export_config.yaml", files=[f.path.name for f in files])
        except ParityError:
            pass  # atomic_dir has thrown the export away; the caller decides how to fail
    for f in result.files:
        f.path = output / f.path.name  # where atomic_dir moved it
    return result


def export(cfg: ExportConfig) -> int:
    """The stage: the export, its parity table printed, a failed gate as one error line."""
    result = run_export(cfg)
    if result.table:
        print(result.table, end="")
    if not result.passed:
        raise ParityError(f"parity gate failed, nothing written: {result.failures[0]}"
                          + (f" (and {len(result.failures) - 1} more)" if len(result.failures) > 1 else ""))
    log.info("export written to %s: %s", cfg.output, ", ".join(f.path.name for f in result.files))
    return 0


DESCRIPTION = __doc__.split("\n", 1)[0]


def main(argv: Sequence[str] | None = None) -> int:
    from codelora.cli import run_command

    return run_command("export", argv)
