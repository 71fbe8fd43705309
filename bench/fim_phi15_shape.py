#!/usr/bin/env python
"""FIM end to end on a Phi-1.5-shaped random model: preprocess -> train -> merge -> benchmark.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/fim_phi15_shape.py [--hidden 128 --layers 2]

Phi-1.5 has no FIM tokens, and its embedding matrix has more rows than its tokenizer has ids
(microsoft/phi-1_5: a GPT-2 byte-level BPE of 50,257 tokens + 38 added whitespace runs = 50,295
ids; vocab_size 51,200 rows). codelora puts the three sentinels it adds into spare rows (ids
50,295-50,297) instead of resizing. This run checks that on that exact shape, offline:

- tokenizer: a byte-level BPE trained to 50,257 tokens on local code (the Kotlin compiler's
  sources jars and the Python standard library), plus 38 whitespace runs like Phi-1.5's
  (2-31 spaces, 2-9 tabs): 50,295 ids;
- model: a random PhiForCausalLM with vocab_size 51,200 (untied head, partial rotary 0.5) but
  shrunk in width and depth (--hidden, --layers) so it trains on a CPU;
- data: kotlin-reflect's sources (the demo's project), --fim-rate 0.5.

Checked and reported (RESULT lines, bench/run_all.py convention): the sentinel ids, the embedding
rows before/after training and merging (no resize: 51,200 throughout), the embedding rows that
changed between base and merged (exactly the sentinels'), that the merged model loads with plain
Auto classes and has the sentinels, and the benchmark's prompt per model (base prefix-only, merged
PSM); plus each stage's seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from run_all import SKIP_EXIT, result_line  # bench/ is sys.path[0] when a script in it runs

PHI15_ROWS = 51_200  # microsoft/phi-1_5 config.json vocab_size
PHI15_BPE = 50_257  # GPT-2's byte-level BPE, <|endoftext|> included
# Phi-1.5's (CodeGen's) added tokens: runs of 31..2 spaces and 9..2 tabs
PHI15_WHITESPACE = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]


def local_code() -> list[str]:
    from codelora.demo import KOTLIN_LIB, stdlib_dir, stdlib_files

    texts = []
    for jar in sorted(KOTLIN_LIB.glob("*-sources.jar")):
        with zipfile.ZipFile(jar) as archive:
            texts += [archive.read(n).decode("utf-8", "replace") for n in archive.namelist() if n.endswith(".kt")]
    root = stdlib_dir()
    texts += [(root / p).read_text(encoding="utf-8", errors="replace") for p in stdlib_files()]
    return texts


def phi15_tokenizer(texts: list[str]):
    """A tokenizer with Phi-1.5's id count: 50,257 BPE tokens + its 38 whitespace runs."""
    from tokenizers import AddedToken

    from codelora.bootstrap import train_tokenizer

    tok = train_tokenizer(texts, vocab_size=PHI15_BPE, min_frequency=1)
    if len(tok) != PHI15_BPE:
        raise SystemExit(f"the local corpus gave {len(tok)} BPE tokens, not {PHI15_BPE}")
    tok.add_tokens([AddedToken(t, normalized=False) for t in PHI15_WHITESPACE])
    return tok


def phi15_shaped_model(tok, out: Path, hidden: int, layers: int) -> Path:
    import torch
    from transformers import GenerationConfig, PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    config = PhiConfig(vocab_size=PHI15_ROWS, hidden_size=hidden, intermediate_size=4 * hidden,
                       num_hidden_layers=layers, num_attention_heads=max(1, hidden // 32), partial_rotary_factor=0.5,
                       max_position_embeddings=2048, tie_word_embeddings=False,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model = PhiForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def timed(stage: str, seconds: dict, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    seconds[stage] = round(time.perf_counter() - start, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--files", type=int, default=150, help="kotlin-reflect files for the dataset")
    parser.add_argument("--sample", type=int, default=48, help="benchmark examples per task")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codelora.benchmarking import main as bench_main
    from codelora.config import PreprocessConfig
    from codelora.demo import KOTLIN_LIB, kotlin_sources
    from codelora.fim import detect_fim_tokens
    from codelora.merging import main as merge_main
    from codelora.preprocess import run_preprocess
    from codelora.training import main as train_main
    from codelora.utils import write_jsonl

    if not (KOTLIN_LIB / "kotlin-reflect-sources.jar").is_file():
        print("skipped: the Kotlin compiler's sources jars are missing (run `make kotlin`)", file=sys.stderr)
        return SKIP_EXIT
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="codelora-fim-phi15-") as tmp:
        root = Path(tmp)
        tok = timed("tokenizer", seconds, phi15_tokenizer, local_code())
        base = phi15_shaped_model(tok, root / "base", args.hidden, args.layers)
        files = sorted(kotlin_sources(["kotlin-reflect"]).items())[: args.files]
        write_jsonl(root / "raw.jsonl", [{"file_text": c.decode("utf-8"), "path": p, "repo": "kotlin-reflect",
                                          "commit": None} for p, c in files])
        timed("preprocess", seconds, run_preprocess, PreprocessConfig(
            input=str(root / "raw.jsonl"), tokenizer=str(base), output=str(root / "data"), fim_rate=0.5,
            prompt_tokens=128, completion_tokens=32, stride=128, seed=42))
        run = root / "run"
        rc = timed("train", seconds, train_main, [
            "--base-model", str(base), "--dataset", str(root / "data"), "--output-dir", str(run), "--max-steps",
            str(args.steps), "--batch-size", "8", "--learning-rate", "1e-2", "--lora-r", "8", "--lora-alpha", "16",
            "--max-length", "192", "--eval-steps", str(args.steps), "--save-steps", str(args.steps),
            "--load-in-4bit", "false"])
        assert rc == 0, "train failed"
        assert timed("merge", seconds, merge_main, ["--adapter", str(run / "adapter"), "--output",
                                                    str(root / "merged")]) == 0, "merge failed"
        out = root / "results"
        rc = timed("benchmark", seconds, bench_main, [
            "--models", str(base), str(root / "merged"), "--tasks", "heldout", "heldout-fim", "--dataset",
            str(root / "data"), "--output", str(out), "--sample", str(args.sample), "--max-new-tokens", "16",
            "--dtype", "float32"])
        assert rc == 0, "benchmark failed"

        merged_tok = AutoTokenizer.from_pretrained(root / "merged")
        tokens = detect_fim_tokens(merged_tok)
        base_model = AutoModelForCausalLM.from_pretrained(base)
        merged = AutoModelForCausalLM.from_pretrained(root / "merged")
        before, after = base_model.get_input_embeddings().weight, merged.get_input_embeddings().weight
        changed = (before != after).any(dim=1).nonzero().flatten().tolist() if before.shape == after.shape else None
        summary = json.loads((out / "summary.json").read_text())
        fim_info = summary["tasks"]["heldout-fim"]
        result = {
            "tokenizer_ids_before": len(tok), "tokenizer_ids_after": len(merged_tok),
            "sentinel_ids": list(tokens.ids) if tokens else None,
            "embedding_rows_base": before.shape[0], "embedding_rows_merged": after.shape[0],
            "head_rows_merged": merged.get_output_embeddings().weight.shape[0],
            "changed_embedding_rows": changed,
            "prompt_format": {k: v["prompt_format"] for k, v in fim_info["models"].items()},
            "heldout_fim_es": {k: v["es"] for k, v in fim_info["models"].items()},
            "seconds": seconds, "hidden": args.hidden, "layers": args.layers, "train_steps": args.steps,
            "torch": torch.__version__,
        }
    print(json.dumps(result, indent=2))
    no_resize = result["embedding_rows_merged"] == PHI15_ROWS == result["head_rows_merged"]
    spare = tokens is not None and list(tokens.ids) == [50_295, 50_296, 50_297]
    only_sentinels = changed == sorted(tokens.ids) if tokens else False
    formats = sorted(result["prompt_format"].values()) == ["fim-psm", "prefix-only"]
    print(result_line("fim_phi15_embedding_rows", result["embedding_rows_merged"], target="51200", ok=no_resize))
    print(result_line("fim_phi15_sentinels_in_spare_rows", int(spare), target="1", ok=spare))
    print(result_line("fim_phi15_changed_rows", len(changed or []), target="3 (the sentinels')", ok=only_sentinels))
    print(result_line("fim_phi15_prompt_formats_ok", int(formats), target="1", ok=formats))
    print(result_line("fim_phi15_pipeline_s", sum(seconds.values())))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if no_resize and spare and only_sentinels and formats else 1


if __name__ == "__main__":
    sys.exit(main())
