"""benchmarking.py: base vs finetuned models on each task; tables, JSON, JSONL, PNG and HTML.

Flow: validate everything cheap first (tasks known, data readable, every model has a tokenizer,
output writable), then per model: load once, generate every task's missing predictions in
batches, appending each finished batch to a per model/task cache (JSON Lines, fsync'ed); then
score all cached predictions and write the reports atomically. A crash or Ctrl-C loses only the
batch in flight; rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codelora.generation import GenerationSettings, GenerationStats, generate, load_model, load_tokenizer
from codelora.metric_table import METRICS, implementations, metric
from codelora.tasks import Example, Task, get_task
from codelora.contracts import write_output_marker
from codelora.utils import (Interrupted, UserError, atomic_file, check_local_or_hub, progress, seed_everything,
                            write_json, write_jsonl)

log = logging.getLogger(__name__)

EXAMPLES = """\
  # the reference workflow: phi-1.5 vs the merged finetune, on our held-out split and CodeXGLUE
  python benchmarking.py --models microsoft/phi-1_5 runs/phi15-kotlin/merged \\
      --tasks heldout codexglue mceval-kotlin --dataset data/kotlin_prepared_dataset \\
      --output results/phi15-kotlin --sample 200 --allow-code-execution
  # base phi-1.5 vs a Hub repo
  python benchmarking.py --hf_repository USER/phi15-kotlin --tasks heldout
  # CodeXGLUE from local files (offline)
  python benchmarking.py --models microsoft/phi-1_5 --tasks codexglue codexglue-line \\
      --codexglue-data test.jsonl --codexglue-line-data line_test.jsonl
"""


# ------------------------------------------------------------------------------------ cache


def model_slug(name: str) -> str:
    """A readable, unique directory name for a model: Hub ids as owner--name, local dirs by
    their name plus a hash of the absolute path (two `merged/` dirs must not share a cache)."""
    path = Path(name)
    if path.exists():
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        base = path.resolve().name
    else:
        digest, base = "", name.replace("/", "--")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", base)
    return f"{slug}-{digest}" if digest else slug


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


class PredictionCache:
    """Append-only JSON Lines of {id, prompt_sha, prediction}, one line per finished example.

    The file name carries a hash of the generation settings, so changing them starts a new cache
    instead of mixing predictions made differently. A torn last line (killed mid-write) is
    dropped; a line whose prompt changed (new data under an old id) is ignored.
    """

    def __init__(self, path: Path):
        self.path = path

    def load(self, examples: Sequence[Example]) -> dict[str, str]:
        if not self.path.is_file():
            return {}
        wanted = {e.id: _sha(e.prompt) for e in examples}
        done: dict[str, str] = {}
        with open(self.path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: dropping an unfinished cache line", self.path, lineno)
                    continue
                if wanted.get(row.get("id")) == row.get("prompt_sha"):
                    done[row["id"]] = row["prediction"]
        return done

    def append(self, rows: Sequence[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# --------------------------------------------------------------------------------- pipeline


def sample_examples(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))  # stable order, same for every model
    return [examples[i] for i in keep]


def expand_samples(examples: list[Example], n: int) -> list[Example]:
    """n examples per problem (ids `problem@j`, meta["problem"] = problem), for pass@k: each is
    generated and scored on its own, and the task groups them back by problem."""
    if n <= 1:
        return examples
    return [Example(f"{e.id}@{j}", e.prompt, e.reference, {**e.meta, "problem": e.id}) for e in examples for j in range(n)]


def settings_for(task: Task, cfg) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=cfg.max_new_tokens or task.max_new_tokens,
        min_new_tokens=task.min_new_tokens,
        batch_size=cfg.batch_size,
        num_beams=cfg.num_beams,
        do_sample=cfg.do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
    )


def model_identity(name: str) -> str:
    """What a model's predictions depend on besides the settings: its weights (read cheaply,
    modeling.weights_fingerprint) and its tokenizer files. A model rebuilt at the same path (a merge
    redone) has a new identity, so its old predictions are never scored as its own."""
    from codelora.modeling import model_source, weights_fingerprint

    digest = hashlib.sha256((weights_fingerprint(name) or name).encode())
    path = Path(model_source(name))  # a GGUF base: its converted directory
    for file in sorted(path.glob("*token*.json")) if path.is_dir() else ():
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def cache_path(out: Path, model: str, task: Task, settings: GenerationSettings, seed: int) -> Path:
    key = json.dumps({**settings.__dict__, "seed": seed if settings.do_sample else None,
                      "model": model_identity(model)}, sort_keys=True)
    return out / "cache" / model_slug(model) / f"{task.name}-{_sha(key)[:8]}.jsonl"


def earlier_rate(out: Path, model: str, task: str) -> float | None:
    """Examples/s this model generated for this task in the last run that wrote out/summary.json
    (a --sample run first gives the full run its time estimate)."""
    try:
        rate = json.loads((out / "summary.json").read_text(encoding="utf-8"))["timing"][model][task]["examples_per_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def estimate_line(model: str, task: str, count: int, rate: float | None, measured: str,
                  sampled: bool = False) -> str:
    if rate is None:
        advice = ("an estimate follows from the first batch" if sampled
                  else "run with --sample first for an estimate")
        return f"{model} / {task}: {count} examples to generate (no rate measured yet: {advice})"
    return f"{model} / {task}: {count} examples to generate, about {duration(count / rate)} at {rate:.3g} examples/s ({measured})"


def generate_missing(model_name: str, tasks: dict[str, Task], data: dict[str, list[Example]], cfg, out: Path) -> dict:
    """Fill the caches of one model; returns {task: seconds, examples generated}. Prints a time
    estimate per task before the model loads (from the last run's rate), then a progress bar per
    task. The first batch is no estimate: batches run largest first, so it is the slowest."""
    todo = {}
    for name, task in tasks.items():
        if not task.generates:
            continue
        settings = settings_for(task, cfg)
        cache = PredictionCache(cache_path(out, model_name, task, settings, cfg.seed))
        done = cache.load(data[name])
        missing = [e for e in data[name] if e.id not in done]
        if missing:
            todo[name] = (task, settings, cache, missing)
            print(estimate_line(model_name, name, len(missing), earlier_rate(out, model_name, name),
                                "measured by the last run in this output directory", cfg.sample_for(name) is not None),
                  flush=True)
        log.info("%s / %s: %d cached, %d to generate", model_name, name, len(done), len(missing))
    stats: dict[str, Any] = {}
    if not todo:
        return stats
    try:
        model, tokenizer = load_model(model_name, cfg.dtype)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise UserError(f"--models {model_name}: cannot load it ({type(err).__name__}: "
                        f"{str(err)[:300]})") from None
    for name, (task, settings, cache, missing) in todo.items():
        seed_everything(cfg.seed)
        start = time.perf_counter()
        rules = [task.stop_rule(e) for e in missing]
        prompts = [task.prompt_for(e, tokenizer) for e in missing]
        positions = GenerationStats()
        with progress(len(missing), f"{model_name} / {name}", unit="ex") as bar:
            for idx, preds in generate(model, tokenizer, prompts, settings, rules, positions):
                cache.append([{"id": missing[i].id, "prompt_sha": _sha(missing[i].prompt), "prediction": p}
                              for i, p in zip(idx, preds)])
                bar.update(len(idx))
        seconds = time.perf_counter() - start
        stats[name] = {"generated": len(missing), "seconds": round(seconds, 2),
                       "examples_per_s": round(len(missing) / seconds, 3) if seconds else None,
                       # share of the token positions computed that were padding (as training reports)
                       "padding_fraction": round(positions.padding_fraction, 4)}
    del model
    return stats


# ------------------------------------------------------------------- model-dependent metrics

EMBEDDING_METRIC = "cosine"  # needs the evaluated model itself, so it is computed while it is loaded


def cosine_cache_path(out: Path, model: str, task: Task) -> Path:
    """Per model identity, like the predictions: a model rebuilt at the same path embeds anew."""
    return out / "cache" / model_slug(model) / f"{task.name}-cosine-{model_identity(model)[:8]}.jsonl"


def _pair_key(prediction: str, reference: str) -> str:
    return _sha(prediction + "\0" + reference)


def load_scores(path: Path, key: str, value: str) -> dict[str, float]:
    """{row[key]: row[value]} from a score cache (JSON Lines, appended; a torn last line is dropped)."""
    known = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        known[row[key]] = float(row[value])
    return known


def load_cosines(path: Path) -> dict[str, float]:
    """{pair key: cosine} from a cosine cache."""
    return load_scores(path, "key", "cosine")


def embed_missing(model_name: str, tasks: dict[str, Task], data: dict[str, list[Example]], cfg, out: Path) -> None:
    """Cache the embedding cosine (codelora.similarity) of every cached prediction of this model
    against its reference, for the tasks that report it. Keyed by the two texts, so a rerun only
    embeds new pairs; the model is loaded only when there is something to embed."""
    from codelora.similarity import cosine_similarities

    loaded = None
    for name, task in tasks.items():
        if EMBEDDING_METRIC not in task.metrics:
            continue
        examples = data[name]
        done = PredictionCache(cache_path(out, model_name, task, settings_for(task, cfg), cfg.seed)).load(examples)
        preds, refs = task.compared(examples, [done.get(e.id, "") for e in examples])
        path = cosine_cache_path(out, model_name, task)
        known = load_cosines(path)
        todo = list(dict.fromkeys((p, r) for p, r in zip(preds, refs) if _pair_key(p, r) not in known))
        if not todo:
            continue
        if loaded is None:
            loaded = load_model(model_name, cfg.dtype)
        sims = cosine_similarities(*loaded, [p for p, _ in todo], [r for _, r in todo])
        PredictionCache(path).append([{"key": _pair_key(p, r), "cosine": s} for (p, r), s in zip(todo, sims)])
        log.info("%s / %s: embedded %d prediction/reference pairs", model_name, name, len(todo))


def add_cosines(task: Task, examples: Sequence[Example], preds: Sequence[str], per_example: list[dict],
                corpus: dict, path: Path) -> None:
    """Each row's cached cosine and the corpus mean (x100, like token IoU); None if any is missing."""
    known = load_cosines(path)
    values = [known.get(_pair_key(p, r)) for p, r in zip(*task.compared(examples, preds))]
    for row, value in zip(per_example, values):
        if value is not None:
            row[EMBEDDING_METRIC] = round(value, 4)
    complete = values and all(v is not None for v in values)
    corpus[EMBEDDING_METRIC] = round(100 * sum(values) / len(values), 2) if complete else None  # type: ignore[arg-type]


def loss_cache_path(out: Path, model: str, task: Task) -> Path:
    return out / "cache" / model_slug(model) / f"{task.name}-loss{task.options.loss_tokens}-{model_identity(model)[:8]}.jsonl"


def load_losses(path: Path) -> dict[str, float]:
    """{example id: loss} from a loss cache."""
    return load_scores(path, "id", "loss")


def losses_missing(model_name: str, tasks: dict[str, Task], data: dict[str, list[Example]], cfg, out: Path) -> dict:
    """Cache this model's loss on each text of the tasks scored by the model itself (general-loss);
    returns {task: seconds, texts scored}."""
    from codelora.tasks.general_loss import text_losses

    loaded, stats = None, {}
    for name, task in tasks.items():
        if task.generates:
            continue
        path = loss_cache_path(out, model_name, task)
        known = load_losses(path)
        todo = [e for e in data[name] if e.id not in known]
        if not todo:
            continue
        loaded = loaded or load_model(model_name, cfg.dtype)
        start = time.perf_counter()
        losses = text_losses(*loaded, [e.prompt for e in todo], task.options.loss_tokens, cfg.batch_size)
        PredictionCache(path).append([{"id": e.id, "loss": loss, "tokens": n} for e, (loss, n) in zip(todo, losses)])
        stats[name] = {"scored": len(todo), "seconds": round(time.perf_counter() - start, 2)}
        log.info("%s / %s: loss on %d texts", model_name, name, len(todo))
    return stats


def add_losses(examples: Sequence[Example], per_example: list[dict], corpus: dict, path: Path) -> None:
    """Each row's cached loss and their mean; None if any is missing."""
    known = load_losses(path)
    values = [known.get(e.id) for e in examples]
    for row, value in zip(per_example, values):
        if value is not None:
            row["loss"] = round(value, 4)
    complete = values and all(v is not None for v in values)
    corpus["loss"] = round(sum(values) / len(values), 4) if complete else None  # type: ignore[arg-type]


def metric_implementations(tasks: dict[str, Task]) -> dict[str, str]:
    """Which implementation (package and version) computed each metric the tasks report."""
    return implementations(m for task in tasks.values() for m in task.metrics)


def validate(cfg) -> tuple[dict[str, Task], dict[str, list[Example]]]:
    """Everything cheap that can be wrong, before any model loads."""
    from codelora.config import guard_stage_output

    # --output at a dataset, a run or the working directory would lose their config.yaml
    guard_stage_output("benchmark", cfg)
    tasks = {name: get_task(name, cfg) for name in dict.fromkeys(cfg.tasks)}  # cfg is a TaskOptions
    executing = [name for name, task in tasks.items() if any(m.startswith("pass@") for m in task.metrics)]
    if executing and not cfg.allow_code_execution:
        # else every completion is generated (hours at full size) only to be reported n/a
        raise UserError(f"{', '.join(executing)}: scored by compiling and running the generated Kotlin "
                        "(pass@k), which needs --allow-code-execution (sandboxed; `make kotlin` installs the "
                        "compiler); add it, or leave the task out")
    data = {}
    for name, task in tasks.items():
        examples = task.load()
        if not examples:
            raise UserError(f"{name}: no examples")
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            raise UserError(f"{name}: example ids are not unique")
        data[name] = expand_samples(sample_examples(examples, cfg.sample_for(name), cfg.seed), task.n_samples)
    for model in cfg.models:
        check_local_or_hub("--models", model)  # a path typo is "no such directory", not a Hub error
        load_tokenizer(model)  # a model without a tokenizer fails here, not after hours of work
        check_model_files(model)  # a corrupt second model fails here, not after the first one's generation
    return tasks, data


def check_model_files(model: str) -> None:
    """A local model's config.json and safetensors headers, read without loading any weight: a
    truncated or corrupt file is reported with the model's name before any model generates."""
    path = Path(model)
    if not path.is_dir():
        return
    config = path / "config.json"
    if config.is_file():
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"--models {model}: config.json is not valid JSON ({err})") from None
    from safetensors import safe_open

    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                for key in handle.keys():
                    handle.get_slice(key).get_shape()
        except Exception as err:  # noqa: BLE001 - any failure to read the header means the same
            raise UserError(f"--models {model}: {weights.name} is corrupt or truncated "
                            f"({type(err).__name__}: {err}); nothing was generated") from None


BOOTSTRAP_RESAMPLES = 2000


def paired_bootstrap_ci(base: Sequence[float], other: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval for mean(other - base) by the paired bootstrap: the same examples are
    drawn, with replacement, for both models (Koehn 2004, "Statistical significance tests for
    machine translation evaluation"; Efron & Tibshirani 1993, ch. 13). An interval that excludes
    0 says the difference is unlikely to be an accident of which examples were sampled. None for
    fewer than 2 examples."""
    import numpy as np

    diff = np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    n = len(diff)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 500):  # chunks bound the index matrix at 500 x n
        k = min(500, resamples - start)
        means[start : start + k] = diff[rng.integers(0, n, size=(k, n))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return round(float(lo), 2), round(float(hi), 2)


def score_all(tasks: dict[str, Task], data: dict[str, list[Example]], cfg, out: Path) -> tuple[dict, dict]:
    """(summary per task, per-example rows per task) from the caches."""
    summary: dict[str, Any] = {}
    rows: dict[str, list[dict]] = {}
    for name, task in tasks.items():
        examples = data[name]
        settings = settings_for(task, cfg)
        per_model: dict[str, Any] = {}
        task_rows = [
            {"id": e.id, "prompt": e.prompt, "reference": e.reference, "predictions": {}, "scores": {}} for e in examples
        ]
        state_cache = out / "cache" / f"{name}-task-state.json"
        if state_cache.is_file():
            task.restore_state(json.loads(state_cache.read_text()))
        cached = {model: PredictionCache(cache_path(out, model, task, settings, cfg.seed)).load(examples)
                  for model in cfg.models}
        start = time.perf_counter()  # the Kotlin tasks compile and run every model's programs here
        task.prepare(examples, {m: [done.get(e.id, "") for e in examples] for m, done in cached.items()})
        prepare_seconds = round(time.perf_counter() - start, 1)
        for model in cfg.models:
            done = cached[model]
            preds = [done.get(e.id, "") for e in examples]
            per_example, corpus = task.score(examples, preds)
            if EMBEDDING_METRIC in task.metrics:
                add_cosines(task, examples, preds, per_example, corpus, cosine_cache_path(out, model, task))
            if not task.generates:
                add_losses(examples, per_example, corpus, loss_cache_path(out, model, task))
            corpus["missing"] = sum(e.id not in done for e in examples)
            if task.per_model_prompts:
                corpus["prompt_format"] = task.prompt_format(load_tokenizer(model))
            per_model[model] = corpus
            for row, pred, scores in zip(task_rows, preds, per_example):
                row["predictions"][model] = pred
                row["scores"][model] = scores
        if state := task.cached_state():
            write_json(state_cache, state)
        write_evaluator_files(task, examples, task_rows, cfg.models, out / "evaluator" / name)
        deltas, intervals = compare(per_model, task_rows, task.metrics, cfg.models, cfg.seed)
        summary[name] = {"n": len(examples), "metrics": list(task.metrics), "models": per_model,
                         "prepare_seconds": prepare_seconds,  # Kotlin: compiling + running the programs
                         "delta_vs_baseline": deltas, "delta_ci95": intervals, **task.describe()}
        rows[name] = task_rows
    return summary, rows


def write_evaluator_files(task: Task, examples: list[Example], task_rows: list[dict], models: Sequence[str],
                          folder: Path) -> None:
    """The files the task's official evaluator reads: one answers file per task, predictions per model."""
    for model in models:
        files = task.evaluator_files(examples, [r["predictions"][model] for r in task_rows])
        for fname, text in files.items():
            target = folder / (fname if fname.startswith("answers.") else f"{model_slug(model)}.{fname}")
            with atomic_file(target) as handle:
                handle.write(text)


def compare(per_model: dict[str, dict], task_rows: list[dict], metrics: Sequence[str], models: Sequence[str],
            seed: int) -> tuple[dict, dict]:
    """(Δ of each model against the first on each metric, the paired-bootstrap 95% interval of the
    Δs of metrics that are means of per-example scores): a pure function of the scores."""
    base = models[0]
    deltas, intervals = {}, {}
    for model in models[1:]:
        deltas[model] = {
            m: round(per_model[model][m] - per_model[base][m], 2)
            for m in metrics
            if isinstance(per_model[model].get(m), (int, float)) and isinstance(per_model[base].get(m), (int, float))
        }
        intervals[model] = {}
        for m in deltas[model]:
            # an interval for the metrics that are means of per-example scores (metric_table), not corpus BLEU
            key, scale = metric(m).mean_of, metric(m).scale
            if key is None or not all(key in r["scores"][model] and key in r["scores"][base] for r in task_rows):
                continue
            ci = paired_bootstrap_ci([scale * r["scores"][base][key] for r in task_rows],
                                     [scale * r["scores"][model][key] for r in task_rows], seed=seed)
            if ci is not None:
                intervals[model][m] = list(ci)
    return deltas, intervals


def interrupt_advice(tasks: dict[str, Task], data: dict[str, list[Example]], cfg, out: Path) -> str:
    """How many predictions an interrupted run keeps, and how to continue it."""
    cached = total = 0
    for model in cfg.models:
        for name, task in tasks.items():
            path = cache_path(out, model, task, settings_for(task, cfg), cfg.seed)
            cached += len(PredictionCache(path).load(data[name]))
            total += len(data[name])
    return (f"rerun the same command to continue: {cached} of {total} predictions are cached in "
            f"{out / 'cache'} (only the batch in flight was lost)")


def run(cfg) -> int:
    from codelora.config import save_config
    from codelora.report import write_reports

    tasks, data = validate(cfg)
    out = Path(cfg.output)
    write_output_marker(out, "benchmark")  # what a rerun continues into (its prediction cache)
    save_config(cfg, out / "config.yaml")
    timing = {}
    try:
        for model in cfg.models:
            timing[model] = generate_missing(model, tasks, data, cfg, out)
            timing[model].update(losses_missing(model, tasks, data, cfg, out))
            embed_missing(model, tasks, data, cfg, out)
    except KeyboardInterrupt:
        raise Interrupted(interrupt_advice(tasks, data, cfg, out)) from None
    summary_tasks, rows = score_all(tasks, data, cfg, out)
    from codelora.memorization import benchmark_memorization

    memorization = benchmark_memorization(cfg.dataset, rows, cfg.models)  # also adds per-row figures
    for name, task_rows in rows.items():
        write_jsonl(out / "examples" / f"{name}.jsonl", task_rows)
    summary = {
        "models": cfg.models,
        "baseline": cfg.models[0],
        "tasks": summary_tasks,
        "es_backend": METRICS["es"].implementation,
        "bleu": METRICS["bleu"].implementation,
        "metric_implementations": metric_implementations(tasks),
        "generation": {"num_beams": cfg.num_beams, "do_sample": cfg.do_sample, "seed": cfg.seed,
                       "batch_size": cfg.batch_size, "padding": "left", "kv_cache": True},
        "timing": timing,
        "memorization": memorization,
        "sample": cfg.sample,
        "task_sample": {name: cfg.sample_for(name) for name in cfg.tasks if cfg.sample_for(name) != cfg.sample},
        "delta_ci95": f"paired bootstrap over examples, {BOOTSTRAP_RESAMPLES} resamples, percentile 95% "
                      "interval of the mean difference (ES, EM, pass@1, WER, token IoU, cosine, loss, compiles; not the corpus-level BLEU and chrF)",
    }
    table = write_reports(summary, rows, out)
    print(table)
    log.info("wrote %s", out)
    return 0


DESCRIPTION = ("Benchmark a base model against finetuned models on code-completion tasks "
               "(ES, EM, BLEU, pass@1); the first model is the baseline.")


def main(argv: Sequence[str] | None = None) -> int:
    from codelora.cli import run_command

    return run_command("benchmark", argv)
