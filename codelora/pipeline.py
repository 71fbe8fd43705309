"""Run the whole chain from one YAML file: [bootstrap →] parse → preprocess → train → merge → benchmark.

Each stage's run function (config.STAGES) is called with the config built from its YAML section,
as `codelora <stage> --config FILE` does, so the pipeline adds no second code path. A stage is
skipped when its output exists and was made from the same resolved configuration and the same
inputs; an interrupted pipeline therefore continues where it stopped, and a changed setting reruns
the stage it belongs to and everything downstream of it.

usage:
  codelora pipeline --config configs/kotlin-phi-1_5.yaml
  codelora pipeline --config configs/demo.yaml --dry-run               # show what would run
  codelora pipeline --config configs/demo.yaml --force                 # redo everything
  codelora pipeline --config configs/demo.yaml --force-stages train    # redo train, then merge, benchmark
  codelora pipeline --config configs/demo.yaml --stages parse preprocess

How "up to date" is decided. After a stage succeeds, the pipeline writes `.codelora-stage.json`
inside its output directory (beside it, as `.NAME.codelora-stage.json`, for a file output) with:
  fingerprint  sha256 of the stage's resolved config (defaults < YAML section) and of the
               identity of every local input it names: an upstream output's `output_id`, a
               local git repository's HEAD commit, or a plain file's/directory's size+mtime listing;
  output_id    a fresh id for this output: downstream fingerprints include it, so a redone stage
               always invalidates what was built from its previous output;
  artifact     size and mtime of every file of the output, so an output edited, truncated or
               replaced by hand is not trusted (files added later, such as the cache files
               datasets writes beside a saved dataset, are allowed).
The marker is deleted before a stage runs, so a crash can never leave an old marker beside a new
output. Settings that do not change the artifact (push_to_hub, private, num_proc, resume,
overwrite: `opt(..., fingerprint=False)` in config.py) are left out of the fingerprint. Training
that was interrupted with the same fingerprint is continued from its last checkpoint (`--resume`);
checkpoints left by a different configuration are moved aside, not mixed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codelora.cli import parse_flags, run_guarded
from codelora.config import (
    SECTIONS,
    STAGES,
    PipelineConfig,
    Stage,
    build_config,
    config_to_dict,
    fingerprinted,
    guard_stage_output,
    load_yaml,
)
from codelora.contracts import ADAPTER, ATTEMPT, STAGE_MARKER, checkpoints_dir
from codelora.utils import UserError, atomic_file

log = logging.getLogger(__name__)

MARKER = STAGE_MARKER
HASH_LIMIT = 64 * 1024 * 1024  # input files up to this size are hashed; larger ones by size+mtime
LISTING_LIMIT = 100_000  # entries in a directory listing signature (a bound, not a real-world limit)


# ------------------------------------------------------------------------------ fingerprints


def marker_path(stage: Stage, artifact: Path) -> Path:
    return artifact / MARKER if stage.is_dir else artifact.with_name(f".{artifact.name}{MARKER}")


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _ignored(name: str) -> bool:
    """Files that are not part of an artifact: our markers, temp files, and the `cache-*.arrow`
    files datasets writes beside a saved dataset whenever a consumer maps over it."""
    return (
        name.endswith((MARKER, ATTEMPT))
        or ".tmp" in name
        or (name.startswith("cache-") and name.endswith(".arrow"))
    )


def artifact_entries(path: Path) -> dict[str, list[int]]:
    """relative path -> [size, mtime_ns] for the files of an output (a file output: one entry)."""
    if path.is_file():
        stat = path.stat()
        return {"": [stat.st_size, stat.st_mtime_ns]}
    entries = {}
    for i, item in enumerate(sorted(path.rglob("*"))):
        if i >= LISTING_LIMIT:
            break
        if item.is_file() and not _ignored(item.name):
            stat = item.stat()
            entries[item.relative_to(path).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return entries


def path_signature(path: Path) -> str:
    """Identity of a local input that no stage of this pipeline made (its markers say nothing).

    Files up to HASH_LIMIT are hashed (mtimes lie after a copy); directories are listed with
    size and mtime (datasets and models are large and only ever replaced whole).
    """
    if path.is_file() and path.stat().st_size <= HASH_LIMIT:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return "listing:" + _sha256(json.dumps(artifact_entries(path), sort_keys=True))


def read_marker(stage: Stage, artifact: Path) -> dict[str, Any] | None:
    """The marker, if present, readable, and still describing the artifact as it is now."""
    path = marker_path(stage, artifact)
    if not artifact.exists() or not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or not _unchanged(marker.get("artifact"), artifact):
        return None
    return marker


def _unchanged(recorded: Any, artifact: Path) -> bool:
    """Every file the stage wrote is still there, same size and mtime. Files added later (by a
    consumer, e.g. datasets' cache files) do not make an output stale; edits and deletions do."""
    if not isinstance(recorded, dict) or not recorded:
        return False
    current = artifact_entries(artifact)
    return all(current.get(rel) == value for rel, value in recorded.items())


def _git_head(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def input_identity(value: str, producers: dict[Path, Stage]) -> str | None:
    """What an input string refers to, when it is something local; None for Hub ids, URLs etc."""
    text = value[len("file://") :] if value.startswith("file://") else value
    if not text or "\n" in text or len(text) > 4096:
        return None
    path = Path(text).expanduser()
    try:
        if not path.exists():
            return None
        resolved = path.resolve()
    except OSError:
        return None
    producer = producers.get(resolved)
    if producer is not None:
        marker = read_marker(producer, resolved)
        if marker is not None:
            return f"output:{marker.get('output_id')}"
    if path.is_dir() and (path / ".git").exists():
        head = _git_head(path)
        if head:
            return f"git:{head}"
    return path_signature(path)


def stage_inputs(stage: Stage, cfg: Any) -> list[str]:
    """Every string setting except the stage's own output: the candidates for local inputs."""
    values = []
    for f in dataclasses.fields(cfg):
        if f.name == stage.output or not fingerprinted(f):
            continue
        value = getattr(cfg, f.name)
        items = value if isinstance(value, list) else [value]
        values += [v for v in items if isinstance(v, str)]
    return values


def fingerprint(stage: Stage, cfg: Any, producers: dict[Path, Stage]) -> tuple[str, dict[str, str]]:
    kept = {f.name for f in dataclasses.fields(cfg) if fingerprinted(f)}
    settings = {k: v for k, v in config_to_dict(cfg).items() if k in kept}
    inputs = {}
    for value in stage_inputs(stage, cfg):
        identity = input_identity(value, producers)
        if identity is not None:
            inputs[value] = identity
    blob = json.dumps(
        {"stage": stage.name, "config": settings, "inputs": inputs}, sort_keys=True, default=str
    )
    return _sha256(blob), inputs


# ------------------------------------------------------------------------------ running


@dataclass
class Plan:
    stage: Stage
    cfg: Any
    artifact: Path


def load_plans(pcfg: PipelineConfig, values: dict[str, Any]) -> list[Plan]:
    """Every selected stage's config, resolved and validated before anything runs."""
    unused = [k for k in values if k in STAGES and k not in pcfg.stages]
    if unused:
        log.info("config sections not selected by --stages: %s", ", ".join(unused))
    plans = []
    for name in pcfg.stages:
        stage = STAGES[name]
        cfg = build_config(stage.config, values, {}, section=name)
        plans.append(Plan(stage, cfg, stage.artifact(cfg)))
    return plans


def _status(plan: Plan, fp: str, forced: bool) -> tuple[bool, str]:
    """(run?, why) for one stage."""
    if forced:
        return True, "forced"
    if not plan.artifact.exists():
        return True, "no output yet"
    path = marker_path(plan.stage, plan.artifact)
    if not path.is_file():
        return True, "output not made by the pipeline (no marker)"
    marker = read_marker(plan.stage, plan.artifact)
    if marker is None:
        return True, "output changed since it was made"
    if marker.get("fingerprint") != fp:
        return True, "config or inputs changed"
    return False, "up to date"


def _stage_config(plan: Plan, fp: str) -> Any:
    """The stage's config as the pipeline runs it: replacing an output it decided to rebuild is
    intended (`overwrite`), and an interrupted train of this very fingerprint continues (`resume`)."""
    names = {f.name for f in dataclasses.fields(plan.cfg)}
    changes: dict[str, Any] = {}
    if "overwrite" in names and plan.artifact.exists():
        changes["overwrite"] = True
    if plan.stage.resumable and "resume" in names and _prepare_checkpoints(plan, fp):
        # auto: a crash may have left only incomplete checkpoints, which train.py sets aside;
        # then the stage starts over instead of failing on "no checkpoint to resume".
        changes["resume"] = "auto"
    return dataclasses.replace(plan.cfg, **changes) if changes else plan.cfg


def _prepare_checkpoints(plan: Plan, fp: str) -> bool:
    """True when checkpoints of an interrupted run with this very fingerprint can be continued.

    Checkpoints from any other configuration are moved aside (never deleted, never resumed).
    """
    out = Path(plan.cfg.output_dir)
    ckpts, attempt = checkpoints_dir(out), out / ATTEMPT
    has_ckpts = ckpts.is_dir() and any(ckpts.glob("checkpoint-*"))
    same = attempt.is_file() and json.loads(attempt.read_text(encoding="utf-8")).get("fingerprint") == fp
    if has_ckpts and not same:
        aside = out / f"checkpoints.superseded-{time.strftime('%Y%m%d-%H%M%S')}"
        ckpts.rename(aside)
        log.warning("moved checkpoints of a different configuration to %s", aside)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(attempt) as handle:
        json.dump({"fingerprint": fp}, handle)
    return has_ckpts and same


def guard_plan(plan: Plan) -> None:
    """The stage's own output guard (config.guard_stage_output), with the --overwrite the pipeline
    will give it: nothing the pipeline runs may replace an input, the working directory, or a
    directory another stage or the user wrote."""
    if not plan.stage.is_dir:
        return
    cfg = plan.cfg
    if "overwrite" in {f.name for f in dataclasses.fields(cfg)} and plan.artifact.exists():
        cfg = dataclasses.replace(cfg, overwrite=True)
    guard_stage_output(plan.stage.name, cfg)


# (downstream stage, its field, upstream stage, what the upstream stage writes): each downstream
# stage is meant to read the upstream one's output; `benchmark.models` must include it.
CHAIN = (
    ("preprocess", "input", "parse", lambda cfg: cfg.output),
    ("train", "base_model", "bootstrap", lambda cfg: cfg.output),
    ("train", "dataset", "preprocess", lambda cfg: cfg.output),
    ("merge", "adapter", "train", lambda cfg: str(Path(cfg.output_dir) / ADAPTER)),
    ("benchmark", "models", "merge", lambda cfg: cfg.output),
    ("benchmark", "dataset", "train", lambda cfg: cfg.dataset),
)
UPSTREAM_NAME = {"parse": "parse.output", "bootstrap": "bootstrap.output", "preprocess": "preprocess.output",
                 "train": "train.output_dir/adapter", "merge": "merge.output"}


def _same_place(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = _resolve(a), _resolve(b)
    return pa is not None and pa == pb


def check_chain(pcfg: PipelineConfig, values: dict[str, Any], source: str) -> None:
    """Refuse a config whose stages do not feed each other (train.dataset is not preprocess.output,
    benchmark.dataset is not train.dataset, ...): it would train on one dataset and score on
    another's held-out split. Checked for each pair of sections the file has where at least one of
    the two stages runs; --allow-broken-chain runs it anyway, with a warning."""
    configs = {}
    for name in STAGES:
        if name in values:
            try:
                configs[name] = build_config(STAGES[name].config, values, {}, section=name)
            except UserError:
                continue  # reported when the stage itself is built
    writers: dict[Path, str] = {}
    for name, cfg in configs.items():  # two stages writing one place: the second would replace the first
        if not STAGES[name].output:
            continue
        where = _resolve(str(getattr(cfg, STAGES[name].output)))
        if where in writers:
            first = writers[where]
            raise UserError(f"{source}: {first}.{STAGES[first].output} and {name}.{STAGES[name].output} "
                            f"name the same place ({where}); give each stage its own")
        writers[where] = name
    problems = []
    for down, field_name, up, writes in CHAIN:
        if down not in configs or up not in configs or not ({down, up} & set(pcfg.stages)):
            continue
        expected, got = writes(configs[up]), getattr(configs[down], field_name)
        upstream = "train.dataset" if (down, up) == ("benchmark", "train") else UPSTREAM_NAME[up]
        if isinstance(got, list):
            if not any(_same_place(g, expected) for g in got):
                problems.append(f"{down}.{field_name} {got} does not include {upstream} {expected}")
        elif not _same_place(got, expected):
            problems.append(f"{down}.{field_name} {got} is not {upstream} {expected}")
    if not problems:
        return
    text = "; ".join(problems)
    if pcfg.allow_broken_chain:
        log.warning("%s: the stages do not feed each other (--allow-broken-chain): %s", source, text)
        return
    raise UserError(f"{source}: the stages do not feed each other: {text}. Make them the same, or pass "
                    "--allow-broken-chain if that is what you mean")


def run_one(plan: Plan, fp: str, inputs: dict[str, str], debug: bool) -> int:
    stage = plan.stage
    guard_plan(plan)  # before _stage_config, which may write into train's output directory
    marker = marker_path(stage, plan.artifact)
    marker.unlink(missing_ok=True)  # a crash from here on must not leave an old marker trusted
    cfg = _stage_config(plan, fp)
    changed = {k: v for k, v in config_to_dict(cfg).items() if v != getattr(plan.cfg, k)}
    log.info("▶ %s%s", stage.name, "".join(f" {k}={v}" for k, v in changed.items()))
    start = time.monotonic()
    rc = run_guarded(stage.prog, debug, lambda: stage.run_function()(cfg))
    seconds = time.monotonic() - start
    if rc:
        return int(rc)
    if not plan.artifact.exists():
        raise UserError(f"stage {stage.name} finished but wrote no {plan.artifact}")
    with atomic_file(marker) as handle:
        json.dump(
            {
                "stage": stage.name,
                "fingerprint": fp,
                "output_id": uuid.uuid4().hex,
                "artifact": artifact_entries(plan.artifact),
                "inputs": inputs,
                "config": config_to_dict(plan.cfg),
                "seconds": round(seconds, 1),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            handle,
            indent=2,
            default=str,
        )
    if stage.resumable:
        (Path(plan.cfg.output_dir) / ATTEMPT).unlink(missing_ok=True)
    log.info("✔ %s done in %.1fs", stage.name, seconds)
    return 0


def run_pipeline(pcfg: PipelineConfig, values: dict[str, Any], debug: bool = False) -> int:
    """Run the selected stages of the sectioned config `values` (a loaded YAML file) in order."""
    plans = load_plans(pcfg, values)
    check_chain(pcfg, values, str(getattr(values, "path", "the config")))
    for plan in plans:  # every output checked before the first stage runs (again just before its own)
        guard_plan(plan)
    # Outputs of *every* stage the config describes can be inputs, not only the selected ones.
    producers = {p.artifact.resolve(): p.stage for p in plans}
    for name, stage in STAGES.items():
        if stage.output and name not in pcfg.stages:
            try:
                cfg = build_config(stage.config, values, {}, section=name)
            except UserError:
                continue  # a section that does not validate on its own is no producer
            producers.setdefault(stage.artifact(cfg).resolve(), stage)
    if not pcfg.dry_run:
        _check_credentials(plans)
    rebuilt: set[Path] = set()
    summary = []
    for plan in plans:
        fp, inputs = fingerprint(plan.stage, plan.cfg, producers)
        run, why = _status(plan, fp, pcfg.force or plan.stage.name in pcfg.force_stages)
        if pcfg.dry_run and not run:
            # Upstream stages that will run change this stage's inputs.
            upstream = [v for v in stage_inputs(plan.stage, plan.cfg) if _resolve(v) in rebuilt]
            if upstream:
                run, why = True, f"input {upstream[0]} will be rebuilt"
        if pcfg.dry_run:
            summary.append((plan.stage.name, "would run" if run else "skip", why))
            if run:
                rebuilt.add(plan.artifact.resolve())
            continue
        if not run:
            log.info("⏭ %s: %s (%s)", plan.stage.name, why, plan.artifact)
            _warn_unpushed(plan)
            summary.append((plan.stage.name, "skipped", why))
            continue
        log.info("%s: %s", plan.stage.name, why)
        rc = run_one(plan, fp, inputs, debug)
        if rc:
            log.error(
                "stage %s failed (exit code %d); finished stages are kept: rerun the same command "
                "to continue from %s",
                plan.stage.name,
                rc,
                plan.stage.name,
            )
            return rc
        summary.append((plan.stage.name, "ran", why))
    for name, status, why in summary:
        log.info("  %-10s %-9s because: %s", name, status, why)
    if pcfg.dry_run:
        for name, status, why in summary:
            print(f"{name:<10} {status:<9} {why}")
    return 0


def _check_credentials(plans: list[Plan]) -> None:
    """Every Hub target the run will push to, checked before the first stage starts: a missing or
    rejected token must not surface hours later, at the end of training."""
    from codelora import hub

    for target in dict.fromkeys(getattr(p.cfg, "push_to_hub", None) for p in plans):
        if target:
            hub.check_push_access(target)


def _resolve(value: str) -> Path | None:
    text = value[len("file://") :] if value.startswith("file://") else value
    try:
        return Path(text).expanduser().resolve() if text else None
    except (OSError, RuntimeError):
        return None


def _warn_unpushed(plan: Plan) -> None:
    target = getattr(plan.cfg, "push_to_hub", None)
    if target:
        log.warning(
            "%s was skipped, so nothing was pushed to %s: add --force-stages %s to push",
            plan.stage.name,
            target,
            plan.stage.name,
        )


PROG = "codelora pipeline"
DESCRIPTION = __doc__.split("\n\n")[0]
EXAMPLES = __doc__.split("usage:\n", 1)[1].split("\n\n")[0]


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])

    def parse_and_run() -> int:
        config_path, debug, flags = parse_flags(PipelineConfig, argv, PROG, DESCRIPTION, EXAMPLES)
        if not config_path:
            raise UserError("--config: the pipeline needs a sectioned YAML file (see configs/)")
        values = load_yaml(config_path)
        if not any(key in SECTIONS for key in values):  # else "unknown key for pipeline", misleading
            raise UserError(f"{config_path}: the pipeline needs a sectioned config (parse:, preprocess:, "
                            "train: ...; see configs/)")
        return run_pipeline(build_config(PipelineConfig, values, flags, section="pipeline"), values, debug)

    return run_guarded(PROG, debug, parse_and_run)


if __name__ == "__main__":
    raise SystemExit(main())
