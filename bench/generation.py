#!/usr/bin/env python
"""Generation speed: benchmarking.py's procedure vs the reference project's, same model, same examples.

    .venv/bin/python bench/generation.py            # ~2-4 min on 2 CPU cores (training the tiny model)
    .venv/bin/python bench/generation.py --examples 40 --train-steps 300

Both procedures run in this one process on the same tiny Phi model and the same held-out-style
examples (prompt = some lines of a McEval Kotlin solution, completion = the next lines):

* reference: batches of 10, right padding, max_new_tokens=512, no stop rule beyond EOS (which
  `generate` honours only once every row of a batch has produced it). Its predictions are scored
  on the new tokens only, which is kinder than the reference (it kept the prompt).
* ours (benchmarking.py's heldout task on a next-line dataset: its settings and stop rule):
  length-sorted batches of benchmarking.py's default size, left padding, KV cache, each row
  stopped at EOS or at the end of its line, EOS not allowed first, max_new_tokens = the heldout
  task's budget (longest completion in tokens + 8, as preprocess records completion lengths).

A randomly initialised model never says EOS, which would hide the effect of stop rules, so the
tiny model is first trained for a few hundred steps on prompt + completion + EOS (like train.py's
data). Reported: examples/s of each, the speed ratio (target >= 10x), and the mean edit
similarity of each (target: ours not lower). Results go to bench/out/generation.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codelora.config import BenchmarkConfig  # noqa: E402
from codelora.generation import generate  # noqa: E402
from codelora.metrics import edit_similarity  # noqa: E402
from codelora.modeling import make_tiny_phi, train_tokenizer  # noqa: E402
from codelora.benchmarking import settings_for  # noqa: E402
from codelora.tasks.heldout import HeldoutTask, completion_budget  # noqa: E402

MCEVAL = ROOT.parent / "shared" / "data" / "mceval_kotlin.jsonl"


def make_pairs(seed: int) -> list[tuple[str, str]]:
    """(prompt, completion) windows over the McEval Kotlin solutions, as preprocess_data.py's
    `next-line` mode cuts them: up to 12 lines of context ending at the end of a line's text, and
    "\n" + the next non-blank line (the cut sits before the newline, see codelora/windows.py)."""
    pairs = []
    for line in MCEVAL.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        lines = (rec["prompt"] + rec["canonical_solution"]).split("\n")
        for cut in range(3, len(lines)):
            if lines[cut].strip():
                pairs.append(("\n".join(lines[max(0, cut - 12) : cut]), "\n" + lines[cut]))
    random.Random(seed).shuffle(pairs)
    return pairs


def train_tiny(model, tokenizer, pairs, steps: int, seed: int) -> float:
    """Plain next-token training on prompt + completion + EOS; returns the final loss."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    texts = [p + c + tokenizer.eos_token for p, c in pairs]
    tokenizer.padding_side = "right"
    model.train()
    loss = torch.tensor(0.0)
    for step in range(steps):
        batch = [texts[(step * 16 + i) % len(texts)] for i in range(16)]
        enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=128)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    model.eval()
    return loss.item()


def reference_procedure(model, tokenizer, prompts: list[str]) -> list[str]:
    """The reference project's loop: batch 10, right padding, 512 new tokens, no stop rule."""
    tokenizer.padding_side = "right"
    preds = []
    for start in range(0, len(prompts), 10):
        enc = tokenizer(prompts[start : start + 10], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=512, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        preds += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return preds


def ours(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    preds = [""] * len(prompts)
    # Exactly what benchmarking.py does for a next-line heldout dataset: its settings, its stop rule.
    cfg = BenchmarkConfig()
    task = HeldoutTask(cfg)
    task.mode, task.max_new_tokens = "next-line", max_new_tokens
    settings = settings_for(task, cfg)
    for idx, batch in generate(model, tokenizer, prompts, settings, task.stop_rule(None)):
        for i, p in zip(idx, batch):
            preds[i] = p
    return preds


def timed(fn, *args) -> tuple[list[str], float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 200, not fewer: with 40 examples ours ran two batches and per-batch fixed costs dominated
    # (measured 9.4x at 40 vs 14.5x at 200 on the same model); real runs score hundreds.
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each procedure (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both procedures)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "out" / "generation.json"))
    args = parser.parse_args(argv)
    if not MCEVAL.is_file():
        parser.error(f"{MCEVAL} not found (the shared data directory must sit beside the repository)")
    # One intra-op thread for both procedures: for a model this small, OpenMP threads only add
    # synchronisation, and on a shared 2-core machine they spin against other processes (we
    # measured 7 ms/step with 1 thread vs 280 ms/step with 2 under load). Same setting for both,
    # so the ratio compares procedures, not thread scheduling.
    torch.set_num_threads(args.threads)

    pairs = make_pairs(args.seed)
    eval_pairs, train_pairs = pairs[: args.examples], pairs[args.examples :]
    model_dir = Path(args.output).parent / f"tiny-model-v2-seed{args.seed}-steps{args.train_steps}"  # v2: cuts before newlines
    if (model_dir / "config.json").is_file():  # trained before: reuse (training is not what we time)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        loss = float("nan")
        print(f"reusing the trained tiny model in {model_dir}")
    else:
        tokenizer = train_tokenizer([p + c for p, c in train_pairs], vocab_size=800)
        tokenizer.pad_token = tokenizer.eos_token
        model = make_tiny_phi(tokenizer, seed=args.seed, hidden_size=64, layers=2, heads=4)
        t0 = time.perf_counter()
        loss = train_tiny(model, tokenizer, train_pairs, args.train_steps, args.seed)
        print(f"trained tiny Phi ({sum(p.numel() for p in model.parameters()):,} params) for {args.train_steps} "
              f"steps in {time.perf_counter() - t0:.0f}s, final loss {loss:.2f}")
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token

    prompts = [p for p, _ in eval_pairs]
    refs = [c.rstrip() for _, c in eval_pairs]
    # the heldout task's budget: the preprocess stage records each completion's token count
    budget = completion_budget([len(tokenizer(c)["input_ids"]) for _, c in pairs])
    ours(model, tokenizer, prompts[:2], budget)  # warm-up (first-call allocations), not timed
    # interleaved repeats, median time: the machine is shared, single timings swing by ~30%
    ref_times, our_times = [], []
    for _ in range(args.repeats):
        ref_preds, seconds = timed(reference_procedure, model, tokenizer, prompts)
        ref_times.append(seconds)
        our_preds, seconds = timed(ours, model, tokenizer, prompts, budget)
        our_times.append(seconds)
    ref_s, our_s = statistics.median(ref_times), statistics.median(our_times)
    ref_es = statistics.fmean(edit_similarity(p.rstrip(), r) for p, r in zip(ref_preds, refs))
    our_es = statistics.fmean(edit_similarity(p.rstrip(), r) for p, r in zip(our_preds, refs))
    result = {
        "examples": len(prompts),
        "reference": {"seconds": round(ref_s, 2), "examples_per_s": round(len(prompts) / ref_s, 3), "es": round(ref_es, 2),
                      "procedure": "batch 10, right padding, max_new_tokens 512, no stop rule"},
        "ours": {"seconds": round(our_s, 2), "examples_per_s": round(len(prompts) / our_s, 3), "es": round(our_es, 2),
                 "procedure": f"batch {BenchmarkConfig().batch_size} length-sorted, left padding, KV cache, per-row stop at EOS or end of line, max_new_tokens {budget}"},
        "speedup": round(ref_s / our_s, 2),
        "repeats": args.repeats,
        "speedups_per_repeat": [round(r / o, 2) for r, o in zip(ref_times, our_times)],
        "torch_threads": torch.get_num_threads(),
        "train_steps": args.train_steps,
        "final_train_loss": None if loss != loss else round(loss, 3),  # NaN when the model was reused
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"reference: {result['reference']['examples_per_s']:.3f} ex/s, ES {ref_es:.2f}")
    print(f"ours:      {result['ours']['examples_per_s']:.3f} ex/s, ES {our_es:.2f}")
    print(f"speedup:   {result['speedup']:.1f}x (target >= 10x); ES not lower: {our_es >= ref_es}")
    # Lines for bench/run_all.py (its RESULT convention).
    print(f"RESULT generation_speedup={result['speedup']:.3g} target=>=10x ok={str(result['speedup'] >= 10).lower()}")
    print(f"RESULT generation_es_ours={our_es:.2f} target=>={ref_es:.2f} (reference) ok={str(our_es >= ref_es).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
