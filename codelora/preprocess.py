"""preprocess_data.py: raw JSON Lines → cleaned, windowed, file-split DatasetDict (+ stats.json).

Steps, each a `datasets.map` (batched, `num_proc` processes) over files, never over tokens:
1. clean: strip the licence header, drop short files and files with huge literals (counted);
2. split: every file goes to one split, chosen by a seeded shuffle of its whitespace-normalised
   content, so whitespace-variant copies cannot straddle train and test;
3. window: one batched fast-tokenizer call per batch of files (token starts from the ids where the
   tokenizer allows, else its offsets), then prompt/completion
   windows cut from the text (see codelora.windows).
The output stores text only (prompt, completion, path, repo, commit, and the two token counts);
training tokenizes again and appends the EOS token itself.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from codelora.cleaning import clean_text, normalize_whitespace
from codelora.config import PreprocessConfig, config_to_dict, guard_stage_output, save_config
from codelora.contracts import DATASET_STATS, read_parse_stats, tokenizer_fingerprint, write_output_marker
from codelora.contamination import contaminated_files, load_benchmarks
from codelora.leakage import completion_leakage, train_files_with_windows
from codelora.modeling import load_tokenizer
from codelora.neardup import (NUM_PERM, Batch, batches, drop_near_duplicates, near_duplicate_groups,
                              passage_hash_sets, permutations, signatures)
from codelora.utils import (
    UserError,
    arrow_column,
    atomic_dir,
    check_local_or_hub,
    read_jsonl_numbered,
    sigterm_as_interrupt,
    write_json,
)
from codelora.windows import (SPLITS, batch_window_arrays, byte_lengths, group_key, split_groups,
                              token_start_array, token_starts, token_starts_from_ids)

log = logging.getLogger(__name__)

DESCRIPTION = "Clean, window and split parse_data.py output into a prompt/completion DatasetDict."
EXAMPLES = """\
  # the reference run (Phi-1.5 tokenizer, 98/1/1 split by file, whole-line completions)
  python preprocess_data.py --input data/kotlin_code_raw.jsonl --tokenizer microsoft/phi-1_5 \\
      --output data/kotlin_prepared_dataset --max-train-samples 100000
  # reference-style ~100-token chunks, 4 processes, pushed to the Hub with a dataset card
  python preprocess_data.py --mode chunk --completion-tokens 100 --stride 100 --num-proc 4 \\
      --push-to-hub USER/kotlin-completions
"""

CLEAN_REASONS = ("too_few_lines", "long_digit_run", "long_token", "special_token_text")
WINDOW_COLUMNS = ("prompt", "completion", "path", "repo", "commit", "prompt_tokens", "completion_tokens",
                  "cut_mid_line", "file", "span_start", "span_end")
# what the stage itself reads (counts, leakage), never saved: the row of the window's file in its
# split and the window's characters in that file
WORK_COLUMNS = ("cut_mid_line", "file", "span_start", "span_end")


def window_features():
    """One schema for every split, also when a split is empty or all its commits are null."""
    from datasets import Features, Value

    types = {"prompt_tokens": "int32", "completion_tokens": "int32", "cut_mid_line": "bool", "file": "int64",
             "span_start": "int64", "span_end": "int64"}
    return Features({name: Value(types.get(name, "string")) for name in WINDOW_COLUMNS})


# ------------------------------------------------------------------------------ loading


def encoder_backend(tokenizer):
    """A private copy of the tokenizer's fast backend with truncation and padding switched off,
    so whole files are encoded (with offsets)."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"tokenizer {tokenizer.name_or_path!r} has no fast (Rust) backend; offsets need one")
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def _raw_records(path: str):
    for lineno, row in read_jsonl_numbered(path):
        text = row.get("file_text")
        if not isinstance(text, str) or not isinstance(row.get("path"), str):
            raise UserError(f"{path}:{lineno}: lacks a string file_text/path (not parse_data.py output?)")
        yield {"file_text": text, "path": row["path"], "repo": str(row.get("repo") or ""),
               "commit": row.get("commit")}


def load_raw(path: str, cache_dir: Path):
    """The raw records as an Arrow-backed Dataset in `cache_dir` (memory stays flat for big
    corpora), written 1000 records at a time by datasets' ArrowWriter: a third less time than
    Dataset.from_generator's builder, and a bad record's error reaches the user as it is."""
    from datasets import Dataset, Features, Value
    from datasets.arrow_writer import ArrowWriter

    features = Features({"file_text": Value("string"), "path": Value("string"), "repo": Value("string"),
                         "commit": Value("string")})
    target = cache_dir / "raw.arrow"
    records = _raw_records(path)
    with ArrowWriter(features=features, path=str(target)) as writer:
        while chunk := list(itertools.islice(records, 1000)):
            writer.write_batch({name: [record[name] for record in chunk] for name in features})
        count, _ = writer.finalize()
    if count == 0:
        raise UserError(f"{path}: no records")
    return Dataset.from_file(str(target))


def column(ds, name: str) -> list:
    """A whole column as a Python list, read through Arrow in one go (iterating `ds[name]` in
    datasets 5 formats row by row: ~100x slower on a million rows). Respects select() indices."""
    return arrow_column(ds, name).to_pylist()


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ map functions
# Module-level so datasets can pickle them into worker processes.


def _clean_batch(batch: dict[str, list], *, strip_license: bool, min_lines: int, max_digit_run: int,
                 max_token_chars: int, special_tokens: tuple[str, ...], near_dup: bool = False,
                 passages: bool = False) -> dict[str, list]:
    results = [clean_text(raw, strip_license=strip_license, min_lines=min_lines, max_digit_run=max_digit_run,
                          max_token_chars=max_token_chars, special_tokens=special_tokens)
               for raw in batch["file_text"]]
    texts = [res.text or "" for res in results]
    groups = [group_key(normalize_whitespace(t)) if t else "" for t in texts]
    # raw bytes (uint32 / uint64 arrays): no Python int per value on the way to Arrow and back.
    # Hashed in this thread: numpy releases the GIL, but hashing in worker threads beside the
    # cleaning ran no faster (bench/RESULTS.md), the two taking turns at the GIL.
    minhashes, shared = [b""] * len(texts), [b""] * len(texts)
    kept = [i for i, t in enumerate(texts) if t]
    if kept and (near_dup or passages):
        hashed = _hashes([texts[i] for i in kept], near_dup=near_dup, passages=passages)
        for i, row, hashes in zip(kept, *hashed):
            minhashes[i], shared[i] = row, hashes
    return {"text": texts, "drop_reason": [res.reason for res in results],
            "license_stripped": [res.license_stripped for res in results], "group": groups,
            "minhash": minhashes, "passages": shared}


def _hashes(texts: list[str], *, near_dup: bool, passages: bool) -> tuple[list[bytes], list[bytes]]:
    """Each text's MinHash signature and passage hashes as raw bytes (uint32 / uint64 arrays: no
    Python int per value on the way to Arrow and back); b"" for the ones not asked for."""
    rows, sets = [], []
    for run in batches(texts):  # ~0.5 MB at a time: the hashing takes ~40 bytes per byte of text
        joined = Batch(run)
        rows += [row.tobytes() for row in signatures(joined)] if near_dup else [b""] * len(run)
        sets += [h.tobytes() for h in passage_hash_sets(joined)] if passages else [b""] * len(run)
    return rows, sets


@functools.lru_cache(maxsize=4)
def _starts_lengths(tokenizer):
    """byte_lengths(tokenizer), once per tokenizer and process."""
    return byte_lengths(tokenizer)


def _file_starts(text: str, enc, lengths, tokenizer):
    """Token starts of one encoded file: from the ids where the tokenizer allows (see
    windows.byte_lengths), else from its offsets; both give the same starts. `enc` carries no
    offsets when `lengths` is given (encode_batch_fast), so a file whose ids do not spell its
    bytes is encoded again, with offsets."""
    starts = None if lengths is None else token_start_array(text, enc.ids, lengths)
    if starts is not None:
        return starts
    if lengths is not None:
        enc = tokenizer.encode(text, add_special_tokens=False)
    return token_starts(enc.offsets)


def _window_batch(batch: dict[str, list], rows: list[int], *, tokenizer, mode: str, prompt_tokens: int,
                  completion_tokens: int, stride: int):
    import numpy as np
    import pyarrow as pa

    texts = batch["text"]
    lengths = _starts_lengths(tokenizer)
    if lengths is not None and texts:
        sample = min(texts, key=len)  # the shortest: a check, not a second encode of the batch
        first = tokenizer.encode(sample, add_special_tokens=False)
        if token_starts_from_ids(sample, first.ids, lengths) not in (None, token_starts(first.offsets)):
            # a tokenizer the fast path's checks let through but whose offsets differ: never cut
            # different windows, use the offsets (tests/test_windows.py checks the fast path)
            log.warning("token starts from ids differ from the tokenizer's offsets; using the offsets")
            lengths = None
    # Offsets are only needed without the ids path; not computing them (encode_batch_fast) makes
    # the encode ~20% faster on real Kotlin (bench/preprocess.py).
    encode = tokenizer.encode_batch if lengths is None else tokenizer.encode_batch_fast
    starts = [_file_starts(text, enc, lengths, tokenizer)
              for text, enc in zip(texts, encode(texts, add_special_tokens=False))]
    w = batch_window_arrays(texts, starts, mode=mode, prompt_tokens=prompt_tokens,
                            completion_tokens=completion_tokens, stride=stride)
    # An Arrow table straight from the numpy arrays: datasets writes it as it is, with no Python
    # int per value and no per-row cast to the features (~0.03 s on real Kotlin).
    file, prompt_start, split, end = (w[name].tolist() for name in ("file", "prompt_start", "split", "end"))
    text_of = [texts[f] for f in file]
    prompts = list(map(str.__getitem__, text_of, map(slice, prompt_start, split)))
    columns = {"prompt": pa.array(prompts, pa.string()),
               "completion": pa.array(list(map(str.__getitem__, text_of, map(slice, split, end))), pa.string()),
               "prompt_tokens": pa.array(w["prompt_tokens"].astype(np.int32)),
               "completion_tokens": pa.array(w["completion_tokens"].astype(np.int32)),
               "cut_mid_line": pa.array(w["cut_mid_line"]), "span_start": pa.array(w["prompt_start"]),
               "span_end": pa.array(w["end"]), "file": pa.array(np.asarray(rows, dtype=np.int64)[w["file"]])}
    for name in ("path", "repo", "commit"):
        columns[name] = pa.array(batch[name], pa.string()).take(pa.array(w["file"]))
    return pa.table([columns[name] for name in WINDOW_COLUMNS], names=list(WINDOW_COLUMNS))


# ------------------------------------------------------------------------------ splits


def decontaminate(kept, benchmarks, drop: bool):
    """The kept files less those that share a long n-gram with a benchmark task (unless `drop`
    is off), and the contamination report for stats.json (codelora.contamination)."""
    flags, report = contaminated_files(benchmarks, zip(column(kept, "path"), column(kept, "text")))
    report = {"checked": True, "files_checked": len(flags), "dropped": sum(flags) if drop else 0, **report}
    if drop and any(flags):
        kept = kept.select([i for i, hit in enumerate(flags) if not hit])
        if len(kept) == 0:
            raise UserError("every kept file is contaminated by the benchmark data; nothing to write")
    return kept, report



def assign_splits(keys: list[str], signatures: list[bytes], passages: list[bytes],
                  cfg: PreprocessConfig) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """File indices per split, near-duplicates grouped into one split (and, with --dedup near,
    dropped inside train), plus what the grouping found for stats.json."""
    import numpy as np

    threshold = cfg.near_dup_threshold
    sigs = [np.frombuffer(s, dtype=np.uint32) for s in signatures] if threshold < 1 else None
    shared = [np.frombuffer(p, dtype=np.uint64) for p in passages] if cfg.passage_max_files > 0 else None
    groups, links = near_duplicate_groups(keys, sigs, threshold, shared, cfg.passage_max_files)
    assignment = split_groups(groups, train_ratio=cfg.train_ratio, validation_ratio=cfg.validation_ratio,
                              seed=cfg.seed)
    by_split = {s: [i for i, a in enumerate(assignment) if a == s] for s in SPLITS}
    dropped: dict[str, int] = {}
    if cfg.dedup == "near":
        by_split["train"], dropped = drop_near_duplicates(by_split["train"], keys, groups, sigs, threshold)
    sizes = Counter(groups)
    return by_split, {
        "near_dup_threshold": threshold,
        "groups": len(sizes),
        "passage_max_files": cfg.passage_max_files,
        **links,
        "files_in_shared_groups": sum(n for n in sizes.values() if n > 1),
        "largest_group": max(sizes.values()),
        "dedup": cfg.dedup,
        "dedup_dropped": dropped,
    }


# ------------------------------------------------------------------------------ statistics


def percentiles(values) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(values, dtype=np.int64)
    if arr.size == 0:
        return {}
    p = np.percentile(arr, [5, 25, 50, 75, 95, 99])
    return {"min": int(arr.min()), "p5": float(p[0]), "p25": float(p[1]), "p50": float(p[2]),
            "p75": float(p[3]), "p95": float(p[4]), "p99": float(p[5]), "max": int(arr.max()),
            "mean": round(float(arr.mean()), 2)}


# ------------------------------------------------------------------------------ the stage


def run_preprocess(cfg: PreprocessConfig) -> dict:
    from datasets import DatasetDict

    input_path, output = Path(cfg.input).expanduser(), Path(cfg.output).expanduser()
    token = _check_before_work(cfg, input_path, output)
    tokenizer = load_tokenizer(cfg.tokenizer)
    fingerprint = tokenizer_fingerprint(tokenizer)
    backend = encoder_backend(tokenizer)
    benchmarks = load_benchmarks(cfg.contamination_data, cfg.contamination_ngram) if cfg.contamination_data else None

    output.parent.mkdir(parents=True, exist_ok=True)
    # Intermediate Arrow files live beside the output (same disk, not a small /tmp) and go away.
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so the work directory is removed too.
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix=f".{output.name}.work-",
                                                             dir=output.parent) as work:
        raw = load_raw(str(input_path), Path(work))
        nproc = cfg.num_proc if cfg.num_proc > 1 and len(raw) >= 2 * cfg.num_proc else None
        kept, stats = _clean(raw, cfg, _special_tokens(tokenizer, cfg), nproc)
        stats["tokenizer_fingerprint"] = fingerprint  # of the tokenizer as loaded, before FIM adds sentinels
        stats["contamination"] = {"checked": False}
        if benchmarks is not None:
            kept, stats["contamination"] = decontaminate(kept, benchmarks, cfg.drop_contaminated)
        by_split, stats["grouping"] = assign_splits(column(kept, "group"), column(kept, "minhash"),
                                                    column(kept, "passages"), cfg)
        stats["files_per_split"] = {s: len(idx) for s, idx in by_split.items()}
        # own fingerprints: datasets would hash each index list with dill (twice the time)
        parent = kept._fingerprint
        files = DatasetDict({s: kept.select(idx, new_fingerprint=_fingerprint("split", parent, s, idx))
                             for s, idx in by_split.items()})
        windows = _windows(files, cfg, backend, stats)
        # measured on the plain windows, before FIM reorders a share of train into prefix/suffix
        heldout = {s: list(zip(column(windows[s], "path"), column(windows[s], "completion")))
                   for s in ("validation", "test")}
        leakage = completion_leakage(train_files_with_windows(files["train"], windows["train"]), heldout)
        windows = windows.remove_columns(list(WORK_COLUMNS))
        if cfg.fim_rate > 0:
            windows = _with_fim(windows, cfg, tokenizer, backend)
        stats = _final_stats(stats, windows, leakage, cfg, tokenizer, input_path)
        with atomic_dir(output) as tmp:
            # datasets 5.2 writes zero shards for an empty split, which load_from_disk then cannot
            # read; one explicit (empty) shard keeps an empty validation/test split loadable.
            windows.save_to_disk(str(tmp), num_shards={s: 1 for s in SPLITS if len(windows[s]) == 0} or None)
            write_json(tmp / DATASET_STATS, stats)
            save_config(cfg, tmp / "config.yaml")
            write_output_marker(tmp, "preprocess")

    print(format_summary(stats, output))
    if cfg.push_to_hub:
        _push(cfg, output, stats, token)
    return stats


def _check_before_work(cfg: PreprocessConfig, input_path: Path, output: Path) -> str | None:
    """Every check that can fail fast, before any heavy work; the Hub token when pushing."""
    if not input_path.is_file():
        raise UserError(f"--input {input_path}: no such file (run parse_data.py first)")
    guard_stage_output("preprocess", cfg)
    check_local_or_hub("--tokenizer", cfg.tokenizer)
    if not cfg.push_to_hub:
        return None
    from codelora.hub import check_push_access

    return check_push_access(cfg.push_to_hub)


def _special_tokens(tokenizer, cfg: PreprocessConfig) -> tuple[str, ...]:
    """Special-token texts a kept file must not spell; with FIM also the sentinels (a file that
    spells one would teach a fake FIM boundary)."""
    special = tuple(t for t in tokenizer.all_special_tokens if t)
    if cfg.fim_rate > 0:
        from codelora.fim import sentinel_strings

        special += sentinel_strings(tokenizer)
    return special


def _clean(raw, cfg: PreprocessConfig, special: tuple[str, ...], nproc: int | None):
    """(the kept, cleaned files, the stats so far: sources and file counts per drop reason)."""
    clean_kwargs = dict(strip_license=cfg.strip_license, min_lines=cfg.min_lines,
                        max_digit_run=cfg.max_digit_run, max_token_chars=cfg.max_token_chars,
                        special_tokens=special, near_dup=cfg.near_dup_threshold < 1,
                        passages=cfg.passage_max_files > 0)
    if nproc and clean_kwargs["near_dup"]:
        # drawn here, so that forked workers inherit them: each worker importing datasketch (and
        # scipy) to draw them cost ~0.3 s a run with --num-proc 2 on real Kotlin (bench/preprocess.py)
        permutations(NUM_PERM)
    cleaned = raw.map(_clean_batch, batched=True, batch_size=256, num_proc=nproc, fn_kwargs=clean_kwargs,
                      remove_columns=["file_text"], desc="cleaning",
                      new_fingerprint=_fingerprint("clean", raw._fingerprint, clean_kwargs))
    reasons = column(cleaned, "drop_reason")
    dropped = Counter(r for r in reasons if r)
    sources = Counter(zip(column(cleaned, "repo"), column(cleaned, "commit")))
    kept_idx = [i for i, r in enumerate(reasons) if r is None]
    if not kept_idx:
        raise UserError(f"every file was dropped by the filters ({dict(dropped)}); nothing to write")
    stats = {
        "sources": [{"repo": r, "commit": c, "files": n} for (r, c), n in sources.items()],
        "files": {"input": len(raw), "kept": len(kept_idx),
                  "license_stripped": int(sum(column(cleaned, "license_stripped"))),
                  "dropped": {r: dropped[r] for r in CLEAN_REASONS if dropped[r]}},
    }
    kept = cleaned.select(kept_idx, new_fingerprint=_fingerprint("kept", cleaned._fingerprint, kept_idx))
    return kept, stats


def _windows(files, cfg: PreprocessConfig, backend, stats: dict):
    """Each split's files cut into prompt/completion windows, train sampled to --max-train-samples;
    records the counts in `stats`."""
    from datasets import Dataset, DatasetDict

    window_kwargs = dict(tokenizer=backend, mode=cfg.mode, prompt_tokens=cfg.prompt_tokens,
                         completion_tokens=cfg.completion_tokens, stride=cfg.stride)
    wkey = {k: v for k, v in window_kwargs.items() if k != "tokenizer"} | {"tok": cfg.tokenizer}
    features = window_features()
    # 1000 files per encode_batch: the tokenizer parallelises within a batch (bench/RESULTS.md, choices)
    windows = DatasetDict({
        s: ds.map(_window_batch, batched=True, with_indices=True, batch_size=1000,
                  num_proc=cfg.num_proc if len(ds) >= 2 * cfg.num_proc and cfg.num_proc > 1 else None,
                  fn_kwargs=window_kwargs, remove_columns=ds.column_names, features=features, desc=f"windows ({s})",
                  new_fingerprint=_fingerprint("win", ds._fingerprint, wkey))
        if len(ds) else Dataset.from_dict({name: [] for name in WINDOW_COLUMNS}, features=features)
        for s, ds in files.items()
    })
    stats["completions_cut_mid_line"] = int(sum(sum(column(ds, "cut_mid_line")) for ds in windows.values()))
    if len(windows["train"]) == 0:
        raise UserError("no training windows: the kept files are too short for one window")
    stats["train_examples_before_sampling"] = before = len(windows["train"])
    if cfg.max_train_samples is not None and cfg.max_train_samples < before:
        pick = random.Random(cfg.seed).sample(range(before), cfg.max_train_samples)
        windows["train"] = windows["train"].select(sorted(pick))
    return windows


def _final_stats(parts: dict, windows, leakage: dict, cfg: PreprocessConfig, tokenizer, input_path: Path) -> dict:
    """stats.json, in its documented key order."""
    def lengths(name: str) -> dict:
        return percentiles([v for s in SPLITS for v in column(windows[s], name)])

    return {
        "input": str(input_path),
        "tokenizer": cfg.tokenizer,
        # train.py refuses a base model whose tokenizer differs (token budgets and EOS are this one's)
        "tokenizer_fingerprint": parts["tokenizer_fingerprint"],
        "sources": parts["sources"],
        "files": parts["files"],
        "files_per_split": parts["files_per_split"],
        "examples": {s: len(windows[s]) for s in SPLITS},
        "train_examples_before_sampling": parts["train_examples_before_sampling"],
        "completions_cut_mid_line": parts["completions_cut_mid_line"],
        "fim": _fim_stats(windows["train"], cfg, tokenizer) if cfg.fim_rate > 0 else None,
        # the benchmark's heldout task reads the mode to pick its stop rule
        "windowing": {"mode": cfg.mode, "prompt_tokens": cfg.prompt_tokens,
                      "completion_tokens": cfg.completion_tokens, "stride": cfg.stride},
        "token_lengths": {"prompt": lengths("prompt_tokens"), "completion": lengths("completion_tokens")},
        "grouping": parts["grouping"],
        "contamination": parts["contamination"],
        # the share of held-out completions found verbatim in a train window (codelora.leakage)
        "leakage": leakage,
        "parse": read_parse_stats(input_path),
        "config": config_to_dict(cfg),
    }


def _push(cfg: PreprocessConfig, output: Path, stats: dict, token: str | None) -> None:
    from datasets import load_from_disk

    from codelora.cards import dataset_card
    from codelora.hub import push_dataset

    # Reload: the in-memory DatasetDict pointed at the work directory, which is gone now.
    url = push_dataset(load_from_disk(str(output)), cfg.push_to_hub, token=token,
                       card=dataset_card(stats, cfg, repo_id=cfg.push_to_hub), private=cfg.private)
    print(f"  pushed to {url}")


def _with_fim(windows, cfg: PreprocessConfig, tokenizer, backend):
    """A fraction of the train windows made FIM (codelora.fim); every split gets the `fim` column,
    so all splits share one schema. Validation and test stay left-to-right: the benchmark's FIM
    task cuts its own seeded FIM examples from the test files."""
    from codelora.fim import FIM_COLUMN, apply_fim, sentinel_strings

    train = apply_fim(windows["train"], strings=sentinel_strings(tokenizer), rate=cfg.fim_rate,
                      spm_rate=cfg.fim_spm_rate, shapes=tuple(cfg.fim_shapes), seed=cfg.seed, tokenizer=backend)
    others = {s: windows[s].add_column(FIM_COLUMN, [""] * len(windows[s])) for s in SPLITS if s != "train"}
    return type(windows)({"train": train, **others})


def _fim_stats(train, cfg: PreprocessConfig, tokenizer) -> dict:
    from codelora.fim import FIM_COLUMN, sentinel_strings

    kinds = Counter(column(train, FIM_COLUMN))
    kinds.pop("", None)
    return {"rate": cfg.fim_rate, "spm_rate": cfg.fim_spm_rate, "shapes": list(cfg.fim_shapes),
            "sentinels": list(sentinel_strings(tokenizer)), "examples": sum(kinds.values()),
            "by_kind": dict(sorted(kinds.items()))}


def format_summary(stats: dict, output: Path) -> str:
    files, ex = stats["files"], stats["examples"]
    dropped = ", ".join(f"{k} {v}" for k, v in files["dropped"].items()) or "none"
    grouping, leak, contamination = stats["grouping"], stats["leakage"]["test"], stats["contamination"]
    contaminated = (f"  benchmark contamination: {contamination['files_hit']} of {contamination['files_checked']} "
                    f"files hit, {contamination['dropped']} dropped\n" if contamination["checked"] else
                    "  benchmark contamination: not checked (no --contamination-data)\n")
    dedup = ", ".join(f"{k} {v}" for k, v in grouping["dedup_dropped"].items() if v)
    return (
        f"preprocess_data.py: {files['input']} files, {files['kept']} kept "
        f"({files['license_stripped']} licence headers stripped); dropped: {dropped}\n"
        f"  near-duplicates (Jaccard >= {grouping['near_dup_threshold']}): {grouping['files_in_shared_groups']} "
        f"files in shared groups, largest {grouping['largest_group']}"
        + (f"; dropped inside train: {dedup}" if dedup else "") + "\n"
        + contaminated
        + f"  examples: train {ex['train']}, validation {ex['validation']}, test {ex['test']} -> {output}\n"
        f"  test completions found in train windows: {leak['leaked']}/{leak['counted']} "
        f"({100 * leak['fraction']:.2f}%; {leak['short_not_counted']} of <= 3 non-space characters not counted)"
    )


def main(argv: list[str] | None = None) -> int:
    from codelora.cli import run_command

    return run_command("preprocess", argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
