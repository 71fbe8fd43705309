"""bench/run_all.py: runs each bench script, collects its RESULT lines, writes RESULTS.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "run_all", Path(__file__).resolve().parents[1] / "bench" / "run_all.py"
)
run_all = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("run_all", run_all)  # dataclasses look their module up there
_SPEC.loader.exec_module(run_all)


def test_parse_results_reads_the_convention():
    out = "\n".join(
        [
            "warming up",
            "RESULT speedup=12.5 target=>=10x ok=true",
            "RESULT fill=0.91 target=>= 0.95 ok=false",
            "  RESULT tokens_per_s=1234",
            "RESULTS are in",
            run_all.result_line("ratio", 1.23456, ">=1.0", True),
        ]
    )
    figs = [(f.name, f.value, f.target, f.ok) for f in run_all.parse_results(out)]
    assert figs == [
        ("speedup", "12.5", ">=10x", True),
        ("fill", "0.91", ">= 0.95", False),
        ("tokens_per_s", "1234", "", None),
        ("ratio", "1.235", ">=1.0", True),
    ]


@pytest.fixture
def bench_dir(tmp_path):
    scripts = {
        "fast.py": "print('RESULT speedup=3.5 target=>=2x ok=true')\nprint('RESULT memory_ratio=0.5')\n",
        "slow_target.py": "print('RESULT fill=0.8 target=>=0.95 ok=false')\n",
        "crash.py": "import sys\nprint('RESULT partial=1 ok=true')\nsys.exit('boom: out of memory')\n",
        "_helper.py": "raise SystemExit('helpers are not run')\n",
    }
    for name, code in scripts.items():
        (tmp_path / name).write_text(code)
    return tmp_path


def test_runs_every_script_and_writes_the_report(bench_dir, tmp_path):
    report = tmp_path / "RESULTS.md"
    rc = run_all.main(["--bench-dir", str(bench_dir), "--output", str(report), "--timeout", "60"])
    assert rc == 1  # one target missed, one crash
    text = report.read_text()
    assert "| fast.py | speedup | 3.5 | >=2x | ✓ |" in text
    assert "| fast.py | memory_ratio | 0.5 |  | — |" in text
    assert "| slow_target.py | fill | 0.8 | >=0.95 | ✗ |" in text
    assert "| crash.py | 1 |" in text and "boom: out of memory" in text
    assert "_helper" not in text
    assert (bench_dir / "out" / "crash.log").read_text().strip().endswith("boom: out of memory")
    assert not list(tmp_path.glob(".RESULTS.md.*"))  # written atomically, no temp left


def test_only_and_all_passing_exit_zero(bench_dir, tmp_path):
    report = tmp_path / "R.md"
    assert run_all.main(["--bench-dir", str(bench_dir), "--output", str(report), "--only", "fast"]) == 0
    assert "slow_target" not in report.read_text()
    with pytest.raises(SystemExit, match="no bench script named nope"):
        run_all.main(["--bench-dir", str(bench_dir), "--only", "nope"])


def test_time_limit_is_reported(tmp_path):
    (tmp_path / "hang.py").write_text("import time\nprint('RESULT early=1', flush=True)\ntime.sleep(60)\n")
    report = tmp_path / "R.md"
    assert run_all.main(["--bench-dir", str(tmp_path), "--output", str(report), "--timeout", "2"]) == 1
    text = report.read_text()
    assert "| hang.py | timeout |" in text and "| hang.py | early | 1 |" in text


def test_skip_exit_is_reported_as_skipped_not_failed(bench_dir, tmp_path):
    (bench_dir / "gpu_only.py").write_text(
        "import sys\nprint('gpu_only.py: error: no CUDA device found', file=sys.stderr)\nsys.exit(77)\n")
    report = tmp_path / "R.md"
    assert run_all.main(["--bench-dir", str(bench_dir), "--output", str(report),
                         "--only", "fast", "gpu_only"]) == 0
    text = report.read_text()
    assert "| gpu_only.py | skipped: gpu_only.py: error: no CUDA device found | | | — |" in text
    assert "| gpu_only.py | 77 (skipped) |" in text and "## Failures" not in text
    # any other non-zero exit is still a failure
    (bench_dir / "gpu_only.py").write_text("import sys\nsys.exit(2)\n")
    assert run_all.main(["--bench-dir", str(bench_dir), "--output", str(report), "--only", "gpu_only"]) == 1


def test_gpu_bench_skips_without_cuda(monkeypatch, capsys):
    import torch

    spec = importlib.util.spec_from_file_location("train_gpu", Path(__file__).resolve().parents[1] / "bench" / "train_gpu.py")
    train_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_gpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        train_gpu.require_cuda()
    assert exc.value.code == run_all.SKIP_EXIT
    assert "no CUDA device found" in capsys.readouterr().err
