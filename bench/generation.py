#!/usr/bin/env python
"""Generation speed: codelora's `generate` against what an experienced user writes instead.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generation.py              # both sizes, ~10-15 min on 2 busy cores
    HF_HUB_OFFLINE=1 .venv/bin/python bench/generation.py --sizes demo --repeats 5

Primary baseline ("hf"): `model.generate` on the same left-padded batches of 16 that codelora plans
(`plan_batches`: length-sorted, equal lengths together), greedy, the same max/min_new_tokens, and the
same stop rule wrapped in a `StoppingCriteria` the way a user writes one (decode the new tokens of
every row at every step, ask the rule); predictions cut by the rule afterwards. "hf_unsorted" is the
same on batches of 16 in the input order. Both must give identical predictions to ours (checked and
reported). Secondary line ("seed"): the seed project's procedure (batch 10, right padding, 512 new
tokens, no stop), on `--seed-examples` prompts once, compared per example.

Two sizes, both in this process, fp32 on CPU, one intra-op thread for every procedure:

* demo: a demo-shaped Phi (hidden 128, 4 layers, 4 heads, BPE vocabulary 4,096; configs/demo.yaml)
  bootstrapped here (`--bootstrap-steps`, at most `--bootstrap-seconds`) on the interpreter's standard library (the demo's base
  corpus; cached in bench/out), prompted with 256 held-out next-line windows (192-token prompts,
  32-token completions) cut from the installed torch package (the demo's finetuning corpus), with
  the heldout task's next-line stop rule and budget;
* phi15: a randomly initialised Phi with Phi-1.5's sizes (hidden 2048, 24 layers, 32 heads,
  intermediate 8192, vocabulary 51,200, partial rotary 0.5; 1.42B parameters, no download), short
  prompts (the first 8-24 tokens of the demo prompts) and up to 16 new tokens, line stop rule. A
  random model never ends a line by itself, so the newline token's output bias is raised until it
  is the greedy choice at about 5% of the prompts' last positions (`--phi-newline-share`; rows then
  stop at different steps, as real completions do, after ~7 tokens on average: reported as
  new_tokens_per_row, so a run that stopped rows after 2 tokens, timing no decoding, shows);
  ids past the demo tokenizer's 4,096 get a -1e4 bias (Phi-1.5 pads its vocabulary the same way).
  Also measured here: the peak memory (VmHWM, reset through /proc/self/clear_refs) of one prompt
  forward with every position's logits, as generation.py computed them before, and with the last
  position's only (`logits_to_keep=1`, now).

Which greedy path generation.py keeps is decided here: "ours_generate" is codelora's `generate`
with `compacting=False` (`model.generate` + the module's token-id StoppingCriteria in place of
`_greedy_compacting`), timed beside the others at both sizes and reported as
generation_<size>_generate_path_vs_generate; `_greedy_compacting`'s docstring has the figures.
When there is a single batch the input-order baseline is the same batch and is not run.

Ratios are medians of interleaved repeats (the machine is shared; single timings swing); the
per-repeat spread is reported. Results: bench/out/generation.json and RESULT lines for run_all.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from codelora import demo, generation, stops  # noqa: E402
from codelora.config import BootstrapConfig  # noqa: E402
from codelora.generation import GenerationSettings, GenerationStats, plan_batches  # noqa: E402
from codelora.tasks.heldout import completion_budget  # noqa: E402
from codelora.utils import setup_logging, write_json  # noqa: E402
from codelora.windows import make_windows, token_starts  # noqa: E402

OUT = ROOT / "bench" / "out"


# ------------------------------------------------------------------------------ models and data


def demo_model(steps: int, seconds: float):
    """A demo-shaped base model bootstrapped on the stdlib for `steps` or `seconds`, whichever
    ends first (cached: training is not what we time; it only has to end lines and say EOS)."""
    from codelora.bootstrap import bootstrap
    from transformers import AutoModelForCausalLM

    out = OUT / f"generation-demo-base-steps{steps}-{seconds:g}s"
    if not (out / "config.json").is_file():
        root = demo.stdlib_dir()
        files = [root / f for f in demo.stdlib_files(max_files=600)]
        bootstrap(BootstrapConfig(inputs=[str(f) for f in files], vocab_size=4096, hidden_size=128, layers=4,
                                  heads=4, max_positions=512, seq_length=224, steps=steps, max_seconds=seconds,
                                  output=str(out)))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    return model, generation.load_tokenizer(str(out))


def heldout_windows(tok, n: int, seed: int) -> tuple[list[str], list[int]]:
    """`n` next-line windows (prompt <= 192 tokens, completion <= 32) from the torch corpus, as
    preprocess_data.py cuts them for configs/demo.yaml; (prompts, completion token counts)."""
    prompts, counts = [], []
    root = demo.target_package_dir().parent
    for rel in demo.target_files(max_files=120):
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
        for w in make_windows(text, token_starts(enc.offsets), mode="next-line", prompt_tokens=192,
                              completion_tokens=32, stride=64):
            prompts.append(text[w.prompt_start:w.split])
            counts.append(w.completion_tokens)
    pick = random.Random(seed).sample(range(len(prompts)), min(n, len(prompts)))
    return [prompts[i] for i in pick], counts


def phi15_model(tok):
    """Random weights with Phi-1.5's sizes (no download), initialised cheaply."""
    from transformers import PhiConfig, PhiForCausalLM
    from transformers.initialization import no_init_weights

    config = PhiConfig(vocab_size=51200, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                       num_attention_heads=32, partial_rotary_factor=0.5, max_position_embeddings=2048,
                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    with no_init_weights():
        model = PhiForCausalLM(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, config.initializer_range, generator=gen)
            elif "layernorm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        model.lm_head.bias[len(tok):] = -1e4
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval()


def make_newlines_common(model, tok, prompts: list[str], share: float = 0.25) -> None:
    """Raise the newline token's output bias until it is the greedy choice for about `share` of
    the prompts' last positions (measured once, on the prompts themselves)."""
    newline = tok("\n")["input_ids"][0]
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = model(**enc, logits_to_keep=1).logits[:, -1, :]
    gap = logits.max(-1).values - logits[:, newline]
    with torch.no_grad():
        model.lm_head.bias[newline] += float(torch.quantile(gap, share)) + 1e-3


# ------------------------------------------------------------------------------ the procedures


def ours(model, tok, prompts, settings, rule, compacting: bool = True) -> tuple[list[str], GenerationStats]:
    """codelora's `generate`; `compacting=False` takes its `model.generate` path (token-id stops)."""
    preds = [""] * len(prompts)
    stats = GenerationStats()
    for idx, batch in generation.generate(model, tok, prompts, settings, rule, stats, compacting=compacting):
        for i, p in zip(idx, batch):
            preds[i] = p
    return preds, stats


class UserStop:
    """The StoppingCriteria a user writes: decode every row's new tokens, ask the rule."""

    def __init__(self, tok, prompt_len: int, rule):
        self.tok, self.prompt_len, self.rule = tok, prompt_len, rule

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tok.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([self.rule(t) is not None for t in texts])


def hf(model, tok, prompts, settings, rule, batches) -> list[str]:
    from transformers import StoppingCriteriaList

    tok.padding_side = "left"
    preds = [""] * len(prompts)
    for idx in batches:
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True)
        plen = enc["input_ids"].shape[1]
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=settings.max_new_tokens,
                                 min_new_tokens=settings.min_new_tokens or None, pad_token_id=tok.pad_token_id,
                                 stopping_criteria=StoppingCriteriaList([UserStop(tok, plen, rule)]),
                                 temperature=None, top_p=None, top_k=None)
        for i, text in zip(idx, tok.batch_decode(out[:, plen:], skip_special_tokens=True)):
            cut = rule(text)
            preds[i] = text if cut is None else text[:cut]
    return preds


def seed_procedure(model, tok, prompts) -> list[str]:
    """The seed project's loop: batch 10, right padding, 512 new tokens, no stop rule."""
    tok.padding_side = "right"
    preds = []
    for start in range(0, len(prompts), 10):
        enc = tok(prompts[start:start + 10], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=512, do_sample=False, pad_token_id=tok.pad_token_id,
                                 temperature=None, top_p=None, top_k=None)
        preds += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    tok.padding_side = "left"
    return preds


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def compare(model, tok, prompts, settings, rule, repeats: int, unsorted_baseline: bool = True) -> dict:
    """Interleaved repeats of every procedure on the same prompts; medians, spreads, identity.
    "ours_generate" is codelora's `generate` through `model.generate` + its token-id stop
    criterion instead of the compacting loop: the alternative the greedy path is chosen against."""
    lengths = [len(ids) for ids in tok(prompts)["input_ids"]]
    planned = plan_batches(lengths, settings.batch_size)
    unsorted = [list(range(s, min(s + settings.batch_size, len(prompts))))
                for s in range(0, len(prompts), settings.batch_size)]
    runs = {
        "ours": lambda: ours(model, tok, prompts, settings, rule),
        "ours_generate": lambda: ours(model, tok, prompts, settings, rule, compacting=False),
        "hf": lambda: (hf(model, tok, prompts, settings, rule, planned), None),
    }
    if unsorted_baseline:
        runs["hf_unsorted"] = lambda: (hf(model, tok, prompts, settings, rule, unsorted), None)
    ours(model, tok, prompts[:2], settings, rule)  # warm-up (allocations, vocab scan)
    times: dict[str, list[float]] = {name: [] for name in runs}
    preds, stats = {}, {}
    for _ in range(repeats):
        for name, run in runs.items():
            (preds[name], st), seconds = timed(run)
            times[name].append(seconds)
            if st is not None:
                stats[name] = st.as_dict()
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {"examples": len(prompts), "batches": len(planned), "max_new_tokens": settings.max_new_tokens,
              "min_new_tokens": settings.min_new_tokens, "repeats": repeats,
              "seconds": {n: round(s, 3) for n, s in median.items()},
              "seconds_per_repeat": {n: [round(s, 3) for s in t] for n, t in times.items()},
              "padding": stats,
              "unsorted_prompt_padding": round(1 - sum(lengths) / sum(
                  len(b) * max(lengths[i] for i in b) for b in unsorted), 4)}
    for ours_name in ("ours", "ours_generate"):
        for base in [n for n in runs if n.startswith("hf")]:
            ratios = [b / o for b, o in zip(times[base], times[ours_name])]
            result[f"{ours_name}_vs_{base}"] = {"median": round(statistics.median(ratios), 3),
                                                "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
            result[f"{ours_name}_identical_to_{base}"] = sum(a == b for a, b in zip(preds[ours_name], preds[base]))
    # how much decoding the timings contain: tokens generated per row until its stop
    result["new_tokens_per_row"] = round(stats["ours"]["new_tokens"] / len(prompts), 2)
    return result


# ------------------------------------------------------------------------------ memory


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_forward_bytes(model, input_ids, **kwargs) -> int:
    """Peak resident memory above the level before one forward (Linux: VmHWM reset to VmRSS)."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _vm("VmRSS")
    with torch.inference_mode():
        out = model(input_ids=input_ids, use_cache=True, **kwargs)
        del out
    return _vm("VmHWM") - before


# ------------------------------------------------------------------------------ main


def run_demo(args) -> dict:
    model, tok = demo_model(args.bootstrap_steps, args.bootstrap_seconds)
    prompts, counts = heldout_windows(tok, args.examples, args.seed)
    budget = completion_budget(counts)  # the heldout task's max_new_tokens for this dataset
    settings = GenerationSettings(max_new_tokens=budget, min_new_tokens=1, batch_size=16)
    result = compare(model, tok, prompts, settings, stops.stop_after_next_line, args.repeats)
    if args.seed_examples:
        sub = prompts[:args.seed_examples]
        _, t_seed = timed(seed_procedure, model, tok, sub)
        _, t_ours = timed(ours, model, tok, sub, settings, stops.stop_after_next_line)
        result["seed_procedure"] = {"examples": len(sub), "seconds": round(t_seed, 2),
                                    "ours_seconds": round(t_ours, 2), "speedup": round(t_seed / t_ours, 2)}
    result["model"] = {"parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tok),
                       "bootstrap_steps": args.bootstrap_steps,
                       "bootstrap_seconds": args.bootstrap_seconds}
    return result


def run_phi15(args) -> dict:
    _, tok = demo_model(args.bootstrap_steps, args.bootstrap_seconds)
    prompts, _ = heldout_windows(tok, args.phi_examples, args.seed + 1)
    rng = random.Random(args.seed)
    prompts = [tok.decode(tok(p)["input_ids"][-rng.randint(8, 24):]) for p in prompts]  # short prompts
    t0 = time.perf_counter()
    model = phi15_model(tok)
    build_s = time.perf_counter() - t0
    if args.phi_newline_share > 0:
        make_newlines_common(model, tok, prompts, args.phi_newline_share)
    settings = GenerationSettings(max_new_tokens=args.phi_new_tokens, min_new_tokens=1,
                                  batch_size=args.phi_batch_size)
    # in input order the batches differ from the planned ones only when there are several
    unsorted = len(prompts) > args.phi_batch_size
    result = compare(model, tok, prompts, settings, stops.stop_at_line_end, args.phi_repeats, unsorted)
    # memory of one prompt forward: all positions' logits (before) vs the last one's (now)
    ids = torch.randint(0, len(tok), (args.mem_batch, args.mem_tokens), generator=torch.Generator().manual_seed(0))
    full = peak_forward_bytes(model, ids)
    last = peak_forward_bytes(model, ids, logits_to_keep=1)
    result["prompt_forward_memory"] = {
        "batch": args.mem_batch, "tokens": args.mem_tokens,
        "peak_mb_all_logits": round(full / 2**20, 1), "peak_mb_last_logits": round(last / 2**20, 1),
        "all_logits_mb_expected": round(args.mem_batch * args.mem_tokens * 51200 * 4 / 2**20, 1)}
    result["model"] = {"parameters": sum(p.numel() for p in model.parameters()), "build_seconds": round(build_s, 1)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=["demo", "phi15"], default=["demo", "phi15"])
    parser.add_argument("--examples", type=int, default=256, help="held-out prompts at demo size")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed runs at demo size")
    parser.add_argument("--seed-examples", type=int, default=48, help="prompts for the seed procedure (0: skip)")
    parser.add_argument("--bootstrap-steps", type=int, default=300)
    parser.add_argument("--bootstrap-seconds", type=float, default=150, help="pretraining time budget")
    # 8 prompts in one batch of 8, 3 repeats: ~7 min at load 10 (16 prompts in 2 batches: 15 min)
    parser.add_argument("--phi-examples", type=int, default=8)
    parser.add_argument("--phi-batch-size", type=int, default=8)
    parser.add_argument("--phi-new-tokens", type=int, default=16)
    parser.add_argument("--phi-repeats", type=int, default=3)
    parser.add_argument("--phi-newline-share", type=float, default=0.05,
                        help="raise the newline bias until it is the greedy choice at this share of the "
                             "prompts' last positions (0: no bias; a random model then never stops a line)")
    parser.add_argument("--mem-batch", type=int, default=2)
    parser.add_argument("--mem-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (every procedure)")
    parser.add_argument("--output", default=str(OUT / "generation.json"))
    args = parser.parse_args(argv)
    setup_logging(False)
    # One intra-op thread for every procedure: on a shared 2-core machine OpenMP threads spin
    # against other processes; the same setting for all, so ratios compare procedures.
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    result = {"load_average_1min_at_start": round(load, 2), "torch_threads": torch.get_num_threads()}
    for size in args.sizes:
        result[size] = run_demo(args) if size == "demo" else run_phi15(args)
        print(json.dumps({size: result[size]}, indent=2), flush=True)
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    write_json(Path(args.output), result)
    for size in args.sizes:
        r = result[size]
        for base in [b for b in ("hf", "hf_unsorted") if f"ours_vs_{b}" in r]:
            ratio = r[f"ours_vs_{base}"]["median"]
            print(f"RESULT generation_{size}_vs_generate{base[2:]}={ratio:.3g} target=>=1.0x ok={str(ratio >= 1.0).lower()}")
        # the greedy path not taken, for the record of why the kept one is kept
        print(f"RESULT generation_{size}_generate_path_vs_generate={r['ours_generate_vs_hf']['median']:.3g}")
        print(f"RESULT generation_{size}_new_tokens_per_row={r['new_tokens_per_row']:.3g}")
        # both greedy paths must give exactly the user's predictions
        same = min(r["ours_identical_to_hf"], r["ours_generate_identical_to_hf"])
        print(f"RESULT generation_{size}_identical_outputs={same / r['examples']:.3g} target=1.0 "
              f"ok={str(same == r['examples']).lower()}")
        pad = r["padding"]["ours"]["padding_fraction"]
        print(f"RESULT generation_{size}_padding_fraction={pad:.3g}")
        if "seed_procedure" in r:
            print(f"RESULT generation_{size}_vs_seed_procedure={r['seed_procedure']['speedup']:.3g}")
        if "prompt_forward_memory" in r:
            m = r["prompt_forward_memory"]
            print(f"RESULT generation_{size}_prompt_forward_peak_mb_before={m['peak_mb_all_logits']:.4g}")
            print(f"RESULT generation_{size}_prompt_forward_peak_mb_after={m['peak_mb_last_logits']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
