#!/usr/bin/env python
"""The cost of fill-in-the-middle: FIM preprocessing against plain windows, and FIM generation.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/fim.py [--repeat 2] [--fim-rate 0.5]

Corpus: JetBrains' Kotlin standard library sources (`kotlin-stdlib-sources.jar` of the compiler that
`make kotlin` installs), written as parse_data.py records; tokenizer: a byte-level BPE trained on
them. Measured in one run:

- preprocess: `run_preprocess` with --fim-rate 0 and with --fim-rate R (best of --repeat each);
  the ratio plain time / FIM time says what FIM costs (1.0 = nothing);
- generation: examples/s of heldout-fim prompts on a small random Phi whose tokenizer has the
  sentinels (PSM prompts, EOS/line stops), against the same examples as prefix-only prompts on the
  same model: what the longer FIM prompt (prefix + suffix) costs at generation time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
import zipfile
from pathlib import Path

from codelora.config import PreprocessConfig
from codelora.fim import add_fim_tokens, choose_middle, fim_prompt
from codelora.generation import GenerationSettings, generate
from codelora.stops import stop_at_line_end
from codelora.bootstrap import make_tiny_phi, train_tokenizer
from codelora.preprocess import run_preprocess
from codelora.utils import setup_logging, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
JAR = ROOT / ".tools" / "kotlinc" / "lib" / "kotlin-stdlib-sources.jar"
SKIP_EXIT = 77


def kotlin_records(jar: Path, limit: int) -> list[dict]:
    with zipfile.ZipFile(jar) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".kt"))[:limit]
        return [{"file_text": zf.read(n).decode("utf-8"), "path": n, "repo": jar.name, "commit": None} for n in names]


def timed_preprocess(raw: Path, tok_dir: Path, out: Path, fim_rate: float) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run_preprocess(PreprocessConfig(input=str(raw), tokenizer=str(tok_dir), output=str(out), fim_rate=fim_rate,
                                    prompt_tokens=192, completion_tokens=32, stride=128))
    return time.perf_counter() - start


def generation_rates(tokenizer, texts: list[str], n: int) -> tuple[float, float]:
    """(FIM examples/s, prefix-only examples/s) on the same middles and the same model."""
    import torch

    tokens = add_fim_tokens(tokenizer)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"  # as generation.load_tokenizer
    model = make_tiny_phi(tokenizer, hidden_size=128, layers=4, heads=4).eval()
    torch.manual_seed(0)
    rng = random.Random(0)
    cases = []
    for text in texts:
        window = text[:1200]
        cut = choose_middle(window, "line", rng)
        if cut and window[: cut[0]].strip():
            cases.append((window[: cut[0]], window[cut[1]:]))
        if len(cases) == n:
            break
    settings = GenerationSettings(max_new_tokens=24, batch_size=16)
    rules = [stop_at_line_end] * len(cases)
    rates = []
    for prompts in ([fim_prompt(p, s, tokens) for p, s in cases], [p for p, _ in cases]):
        start = time.perf_counter()
        for _ in generate(model, tokenizer, prompts, settings, rules):
            pass
        rates.append(len(prompts) / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench" / "out" / "fim"))
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--fim-rate", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3, help="best of N, interleaved")
    parser.add_argument("--examples", type=int, default=64)
    args = parser.parse_args()
    setup_logging(False)
    if not JAR.is_file():
        print(f"skipped: {JAR} not found (run `make kotlin`)", file=sys.stderr)
        return SKIP_EXIT
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    records = kotlin_records(JAR, args.files)
    raw = work / "raw.jsonl"
    write_jsonl(raw, records)
    tokenizer = train_tokenizer([r["file_text"] for r in records], vocab_size=2048)
    tok_dir = work / "tokenizer"
    tokenizer.save_pretrained(tok_dir)
    times: dict[float, list[float]] = {0.0: [], args.fim_rate: []}
    for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere hits both alike
        for rate in times:
            times[rate].append(timed_preprocess(raw, tok_dir, work / f"rate-{rate}", rate))
    plain, fim = min(times[0.0]), min(times[args.fim_rate])
    fim_rate_s, prefix_rate_s = generation_rates(tokenizer, [r["file_text"] for r in records], args.examples)
    result = {"files": len(records), "fim_rate": args.fim_rate, "preprocess_plain_s": round(plain, 2),
              "preprocess_fim_s": round(fim, 2), "preprocess_plain_over_fim": round(plain / fim, 3),
              "generation_fim_examples_per_s": round(fim_rate_s, 2),
              "generation_prefix_only_examples_per_s": round(prefix_rate_s, 2),
              "generation_fim_over_prefix_only": round(fim_rate_s / prefix_rate_s, 3)}
    print(json.dumps(result, indent=2))
    print(f"RESULT fim_preprocess_vs_plain={result['preprocess_plain_over_fim']:.3g}")
    print(f"RESULT fim_generation_examples_per_s={result['generation_fim_examples_per_s']:.4g}")
    print(f"RESULT fim_generation_vs_prefix_only={result['generation_fim_over_prefix_only']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
