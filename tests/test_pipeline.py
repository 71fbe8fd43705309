"""codelora pipeline: stage order, skipping up-to-date stages, reruns on change, resume after a crash.

The stages are small fakes installed as the real stage modules (sys.modules), each exposing the
run function config.STAGES names, so the pipeline is exercised exactly as it drives the real ones:
the config built from the stage's section, plus the settings the pipeline changes. They write
small artifacts derived from their inputs and config, so staleness is observable.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest
import yaml
from conftest import git, make_git_repo

from codelora import cli, pipeline
from codelora.config import (
    STAGES,
    BenchmarkConfig,
    BootstrapConfig,
    MergeConfig,
    ParseConfig,
    PreprocessConfig,
    TrainConfig,
    build_config,
)
from codelora.utils import UserError, atomic_dir, write_json

CALLS: list[tuple[str, object]] = []  # (stage, the config its run function got)
CRASH: dict[str, int] = {}  # stage -> exit code to return once, after leaving partial work behind


def _fake_stage(name: str, cls: type, work) -> types.ModuleType:
    module = types.ModuleType(f"fake_{name}")

    def run(cfg):
        assert type(cfg) is cls
        CALLS.append((name, cfg))
        return work(cfg)

    setattr(module, STAGES[name].run, run)
    return module


def _parse(cfg: ParseConfig):
    root = Path(cfg.repo[0].removeprefix("file://"))
    files = sorted(p for p in root.rglob("*") if p.suffix in cfg.extensions and ".git" not in p.parts)
    rows = [{"path": p.name, "text": p.read_text()} for p in files]
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.output).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _preprocess(cfg: PreprocessConfig):
    rows = [json.loads(line) for line in Path(cfg.input).read_text().splitlines()]
    with atomic_dir(cfg.output) as tmp:
        write_json(tmp / "data.json", {"n": len(rows), "stride": cfg.stride, "tokenizer": cfg.tokenizer})


def _train(cfg: TrainConfig):
    out = Path(cfg.output_dir)
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()) and cfg.resume == "no":
        raise UserError(f"{ckpts} already holds checkpoints: pass --resume")  # as training.py does
    if code := CRASH.pop("train", None):
        (ckpts / "checkpoint-5").mkdir(parents=True, exist_ok=True)
        return code
    data = json.loads((Path(cfg.dataset) / "data.json").read_text())
    with atomic_dir(out / "adapter") as tmp:
        write_json(
            tmp / "adapter.json", {"lr": cfg.learning_rate, "examples": data["n"], "resumed": cfg.resume != "no"}
        )


def _merge(cfg: MergeConfig):
    if Path(cfg.output).exists() and not cfg.overwrite:
        raise UserError(f"{cfg.output} already exists (pass --overwrite to replace it)")  # as merging.py does
    adapter = json.loads((Path(cfg.adapter) / "adapter.json").read_text())
    with atomic_dir(cfg.output, overwrite=cfg.overwrite) as tmp:
        write_json(tmp / "model.json", {"adapter": adapter})


def _benchmark(cfg: BenchmarkConfig):
    # Like benchmarking.py: predictions cached inside the output, keyed by the model's identity
    # (its weights), not its path, and reused on rerun; the pipeline never clears them.
    out = Path(cfg.output)
    cache = out / "cache.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    scores = {}
    for model in cfg.models:
        weights = Path(model) / "model.json"
        content = weights.read_text() if weights.is_file() else model
        scores[model] = cached.setdefault(f"{model}@{hashlib.sha256(content.encode()).hexdigest()}", content)
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(cached))
    write_json(out / "results.json", {"models": cfg.models, "scores": scores})


def _bootstrap(cfg: BootstrapConfig):
    with atomic_dir(cfg.output) as tmp:
        write_json(tmp / "config.json", {"steps": cfg.steps})


FAKES = {
    "parse": (ParseConfig, _parse),
    "preprocess": (PreprocessConfig, _preprocess),
    "train": (TrainConfig, _train),
    "merge": (MergeConfig, _merge),
    "benchmark": (BenchmarkConfig, _benchmark),
    "bootstrap": (BootstrapConfig, _bootstrap),
}


@pytest.fixture(autouse=True)
def fake_stages(monkeypatch):
    CALLS.clear()
    CRASH.clear()
    for name, (cls, work) in FAKES.items():
        monkeypatch.setitem(sys.modules, STAGES[name].module, _fake_stage(name, cls, work))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A source repo and a sectioned config whose paths are relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    make_git_repo(tmp_path / "src", {"a.kt": "fun a() = 1\n", "b.kt": "fun b() = 2\n", "c.txt": "no"})
    config = {
        "pipeline": {"stages": ["parse", "preprocess", "train", "merge", "benchmark"]},
        "bootstrap": {"inputs": ["src"], "output": "runs/base"},
        "parse": {"repo": [f"file://{tmp_path / 'src'}"], "output": "data/raw.jsonl"},
        "preprocess": {"input": "data/raw.jsonl", "output": "data/prepared", "tokenizer": "runs/base"},
        "train": {"base_model": "runs/base", "dataset": "data/prepared", "output_dir": "runs/demo"},
        "merge": {"adapter": "runs/demo/adapter", "output": "runs/demo/merged"},
        "benchmark": {
            "models": ["runs/base", "runs/demo/merged"],
            "dataset": "data/prepared",
            "output": "results/demo",
        },
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def ran() -> list[str]:
    names = [name for name, _ in CALLS]
    CALLS.clear()
    return names


def edit(path: Path, section: str, **values) -> None:
    config = yaml.safe_load(path.read_text())
    config[section].update(values)
    path.write_text(yaml.safe_dump(config))


ALL = ["parse", "preprocess", "train", "merge", "benchmark"]


def test_runs_in_order_then_skips_everything(project, tmp_path):
    assert pipeline.main(["--config", str(project)]) == 0
    assert ran() == ALL
    # each stage got the config its section describes, nothing changed on a first run
    values = yaml.safe_load(project.read_text())
    assert all(cfg == build_config(type(cfg), values, {}, section=name) for name, cfg in CALLS)
    marker = json.loads((tmp_path / "runs/demo/adapter" / pipeline.MARKER).read_text())
    assert marker["stage"] == "train" and marker["config"]["dataset"] == "data/prepared"
    assert "data/prepared" in marker["inputs"] and marker["inputs"]["data/prepared"].startswith("output:")
    assert (
        tmp_path / "data/.raw.jsonl.codelora-stage.json"
    ).is_file()  # a file output's marker sits beside it
    before = (tmp_path / "runs/demo/merged/model.json").stat().st_mtime_ns

    assert pipeline.main(["--config", str(project)]) == 0
    assert ran() == []
    assert (tmp_path / "runs/demo/merged/model.json").stat().st_mtime_ns == before


def test_changed_setting_reruns_its_stage_and_everything_downstream(project, tmp_path):
    assert pipeline.main(["--config", str(project)]) == 0
    ran()
    edit(project, "train", learning_rate=1e-3)
    assert pipeline.main(["--config", str(project)]) == 0
    assert ran() == ["train", "merge", "benchmark"]
    assert json.loads((tmp_path / "runs/demo/merged/model.json").read_text())["adapter"]["lr"] == 1e-3
    # A setting that does not change the artifact leaves it alone.
    edit(project, "preprocess", num_proc=2)
    assert pipeline.main(["--config", str(project)]) == 0
    assert ran() == []


def test_new_commit_in_source_repo_reruns_from_parse(project, tmp_path):
    assert pipeline.main(["--config", str(project)]) == 0
    ran()
    (tmp_path / "src" / "d.kt").write_text("fun d() = 4\n")
    git(tmp_path / "src", "add", "-A")
    git(tmp_path / "src", "commit", "-q", "-m", "more")
    assert pipeline.main(["--config", str(project)]) == 0
    assert ran() == ALL
    assert json.loads((tmp_path / "data/prepared/data.json").read_text())["n"] == 3


def test_interrupted_pipeline_continues_where_it_stopped(project, tmp_path):
    CRASH["train"] = 1
    assert pipeline.main(["--config", str(project)]) == 1
    assert ran() == ["parse", "preprocess", "train"]
    assert not (tmp_path / "runs/demo/adapter").exists()

    assert pipeline.main(["--config", str(project)]) == 0
    calls = list(CALLS)
    assert ran() == ["train", "merge", "benchmark"]
    # same configuration: continue from its checkpoint, with `auto`: checkpoints a crash left
    # incomplete are set aside and training starts over
    assert calls[0][1].resume == "auto"
    assert json.loads((tmp_path / "runs/demo/adapter/adapter.json").read_text())["resumed"] is True


def test_checkpoints_of_another_configuration_are_moved_aside_not_resumed(project, tmp_path):
    CRASH["train"] = 1
    assert pipeline.main(["--config", str(project)]) == 1
    edit(project, "train", learning_rate=5e-4)
    ran()
    assert pipeline.main(["--config", str(project)]) == 0
    train_cfg = next(cfg for name, cfg in CALLS if name == "train")
    assert train_cfg.resume == "no"
    assert len(list((tmp_path / "runs/demo").glob("checkpoints.superseded-*"))) == 1


def test_hand_edited_output_is_rebuilt(project, tmp_path):
    assert pipeline.main(["--config", str(project)]) == 0
    ran()
    (tmp_path / "runs/demo/merged/model.json").write_text('{"tampered": true}')
    assert pipeline.main(["--config", str(project)]) == 0
    merge_cfg = next(cfg for name, cfg in CALLS if name == "merge")
    assert ran() == ["merge", "benchmark"]
    assert merge_cfg.overwrite is True  # merge refuses to replace its output without it
    assert "tampered" not in (tmp_path / "runs/demo/merged/model.json").read_text()


def test_files_added_by_consumers_do_not_make_an_output_stale(project, tmp_path):
    assert pipeline.main(["--config", str(project)]) == 0
    ran()
    # datasets writes cache-*.arrow beside a saved dataset when train/benchmark map over it.
    (tmp_path / "data/prepared/cache-0123abcd.arrow").write_bytes(b"arrow")
    (tmp_path / "runs/demo/merged/notes.txt").write_text("added later")
    assert pipeline.main(["--config", str(project)]) == 0
    assert ran() == []
    (tmp_path / "data/prepared/data.json").unlink()  # a file the stage wrote is gone: rebuild
    assert pipeline.main(["--config", str(project)]) == 0
    assert ran() == ["preprocess", "train", "merge", "benchmark"]


def test_failed_stage_leaves_no_marker_to_trust(project, tmp_path):
    assert pipeline.main(["--config", str(project)]) == 0
    edit(project, "train", learning_rate=1e-3)
    CRASH["train"] = 3
    assert pipeline.main(["--config", str(project)]) == 3
    assert not (tmp_path / "runs/demo/adapter" / pipeline.MARKER).exists()
    edit(project, "train", learning_rate=2e-4)  # back to the original setting: still rebuilt
    ran()
    assert pipeline.main(["--config", str(project)]) == 0
    assert ran()[0] == "train"


def test_force_and_force_stages(project):
    assert pipeline.main(["--config", str(project)]) == 0
    ran()
    assert pipeline.main(["--config", str(project), "--force-stages", "merge"]) == 0
    assert ran() == ["merge", "benchmark"]
    assert pipeline.main(["--config", str(project), "--force"]) == 0
    assert ran() == ALL


def test_dry_run_plans_without_running(project, capsys):
    assert pipeline.main(["--config", str(project), "--dry-run"]) == 0
    assert ran() == []
    out = capsys.readouterr().out
    assert out.count("would run") == 5 and "no output yet" in out
    assert pipeline.main(["--config", str(project)]) == 0
    edit(project, "preprocess", stride=32)
    ran()
    capsys.readouterr()
    assert pipeline.main(["--config", str(project), "--dry-run"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["parse"].startswith("skip")
    assert lines["preprocess"].startswith("would run") and "config or inputs changed" in lines["preprocess"]
    assert "will be rebuilt" in lines["train"] and "will be rebuilt" in lines["benchmark"]
    assert ran() == []


def test_bootstrap_stage_feeds_downstream(project, tmp_path):
    edit(project, "pipeline", stages=["bootstrap", *ALL])
    assert pipeline.main(["--config", str(project)]) == 0
    assert ran() == ["bootstrap", *ALL]
    edit(project, "bootstrap", steps=7)
    assert pipeline.main(["--config", str(project)]) == 0
    # preprocess (tokenizer), train (base model) and benchmark (baseline model) all read it.
    assert ran() == ["bootstrap", "preprocess", "train", "merge", "benchmark"]


def test_through_the_codelora_command(project):
    assert cli.main(["pipeline", "--config", str(project), "--stages", "parse", "preprocess"]) == 0
    assert ran() == ["parse", "preprocess"]


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("flat", [], "needs a sectioned config"),
        ("ok", ["--stages", "deploy"], "unknown stage"),
        ("none", [], "--config: the pipeline needs"),
        ("badtrain", [], "give --epochs > 0 or --max-steps > 0"),
    ],
)
def test_config_errors_fail_before_any_stage(project, tmp_path, capsys, setup, args, message):
    if setup == "flat":
        project.write_text(yaml.safe_dump({"output": "x"}))
    if setup == "badtrain":
        edit(project, "train", epochs=0, max_steps=-1)
    argv = [] if setup == "none" else ["--config", str(project)]
    assert pipeline.main([*argv, *args]) == 2
    assert message in capsys.readouterr().err
    assert ran() == []


# ------------------------------------------------------------------------------ shipped configs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _plans(name: str) -> dict[str, object]:
    from codelora.config import PipelineConfig, build_config, load_yaml

    values = load_yaml(CONFIGS / name)
    pcfg = build_config(PipelineConfig, values, {}, section="pipeline")
    return {p.stage.name: p for p in pipeline.load_plans(pcfg, values)}


@pytest.mark.parametrize("name", ["kotlin-phi-1_5.yaml", "demo.yaml"])
def test_shipped_configs_validate_and_chain_stage_to_stage(name):
    plans = _plans(name)
    cfg = {k: p.cfg for k, p in plans.items()}
    art = {k: str(p.artifact) for k, p in plans.items()}
    assert cfg["preprocess"].input == art["parse"]
    assert cfg["train"].dataset == art["preprocess"] == cfg["benchmark"].dataset
    assert cfg["merge"].adapter == art["train"]
    assert cfg["benchmark"].models[-1] == art["merge"]  # finetuned last, baseline first
    assert (
        cfg["benchmark"].models[0]
        == cfg["train"].base_model
        == (cfg["merge"].base_model or cfg["train"].base_model)
    )
    assert cfg["preprocess"].tokenizer == cfg["train"].base_model


def test_reference_config_is_the_kotlin_qlora_run():
    cfg = {k: p.cfg for k, p in _plans("kotlin-phi-1_5.yaml").items()}
    assert cfg["parse"].repo == ["https://github.com/JetBrains/kotlin"] and cfg["parse"].extensions == [".kt"]
    assert cfg["train"].base_model == "microsoft/phi-1_5" and cfg["train"].load_in_4bit is True
    assert set(cfg["benchmark"].tasks) == {"heldout", "codexglue", "mceval-kotlin", "humaneval-kt"}


@pytest.mark.parametrize("name, base_repo, target_repo", [
    ("demo.yaml", ".demo/kotlin-stdlib-repo", ".demo/kotlin-reflect-repo"),
    ("demo-python.yaml", ".demo/stdlib-repo", ".demo/pytorch-repo"),
])
def test_demo_config_is_offline_and_keeps_bootstrap_and_finetune_files_apart(name, base_repo, target_repo):
    plans = _plans(name)
    cfg = {k: p.cfg for k, p in plans.items()}
    stages = ["bootstrap", "parse", "preprocess", "train", "merge", "benchmark"]
    # the Kotlin demo ends with the GGUF export of its merged model (and the llama.cpp parity gate)
    assert list(plans) == stages + (["export"] if name == "demo.yaml" else [])
    if name == "demo.yaml":
        assert cfg["export"].model == str(plans["merge"].artifact)
    assert cfg["train"].base_model == str(plans["bootstrap"].artifact)
    # The base pretrains on one repository and the finetune reads another (Kotlin's stdlib and
    # reflect/metadata, or Python's stdlib and torch: disjoint by construction, test_demo checks
    # their files), never on each other's.
    assert [Path(p) for p in cfg["bootstrap"].inputs] == [Path(base_repo)]
    assert cfg["parse"].repo == [target_repo]
    # Nothing names the Hub: every model, tokenizer and dataset is a local path under .demo/.
    local = [
        cfg["preprocess"].tokenizer,
        cfg["train"].base_model,
        *cfg["benchmark"].models,
        cfg["train"].dataset,
    ]
    assert all(p.startswith(".demo/") for p in local)
    assert cfg["train"].load_in_4bit is False
    if name == "demo.yaml":  # the Kotlin demo trains with FIM and scores infilling beside completion
        assert cfg["benchmark"].tasks == ["heldout", "heldout-fim"]
        assert cfg["preprocess"].fim_rate == 0.5  # the FIM rate of Bavarian et al. 2022 and StarCoder
    else:
        assert cfg["benchmark"].tasks == ["heldout"]
    assert (
        cfg["bootstrap"].max_positions
        >= cfg["preprocess"].prompt_tokens + cfg["preprocess"].completion_tokens
    )


def test_push_credentials_are_checked_before_the_first_stage(project, tmp_path, monkeypatch, capsys):
    from hub_server import FakeHub, point_clients_at

    edit(project, "merge", push_to_hub="tester/merged")
    with FakeHub(tmp_path / "hub", tokens={"hf_good": ("tester", "write")}) as server:
        point_clients_at(monkeypatch, server.url, tmp_path / "hf-home", token="hf_revoked")
        assert pipeline.main(["--config", str(project)]) == 2
        assert "rejected the token (HTTP 401)" in capsys.readouterr().err
        assert ran() == []  # not even parse ran
        point_clients_at(monkeypatch, server.url, tmp_path / "hf-home", token=None)
        assert pipeline.main(["--config", str(project), "--dry-run"]) == 0  # a dry run pushes nothing


def test_rebuilt_model_is_not_scored_from_stale_benchmark_caches(project, tmp_path):
    assert pipeline.main(["--config", str(project)]) == 0
    edit(project, "train", learning_rate=1e-3)
    assert pipeline.main(["--config", str(project)]) == 0
    scores = json.loads((tmp_path / "results/demo/results.json").read_text())["scores"]
    assert '"lr": 0.001' in scores["runs/demo/merged"]  # the new model's output, not the cached old one
