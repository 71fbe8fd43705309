"""The config machinery every stage shares: precedence, validation, one-line errors."""

from __future__ import annotations

import pytest

from codelora.cli import main as cli_main
from codelora.cli import parse_config
from codelora.config import ParseConfig, PreprocessConfig, TrainConfig, save_config
from codelora.utils import UserError


def test_defaults_yaml_then_cli_precedence(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("parse:\n  max_bytes: 5000\n  min-bytes: 10\n  extensions: kts\ntrain:\n  lora_r: 4\n")
    cfg, _ = parse_config(ParseConfig, ["--config", str(cfg_file), "--max_bytes", "7000"], "p", "", "", "parse")
    assert cfg.max_bytes == 7000  # CLI beats YAML
    assert cfg.min_bytes == 10  # YAML beats default; dashed key accepted
    assert cfg.extensions == [".kts"]  # a scalar becomes a list, and the dot is added
    assert cfg.repo == ["https://github.com/JetBrains/kotlin"]  # default kept
    tcfg, _ = parse_config(TrainConfig, ["--config", str(cfg_file)], "t", "", "", "train")
    assert tcfg.lora_r == 4


def test_flat_yaml_and_unknown_key(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("stride: 9\n")
    cfg, _ = parse_config(PreprocessConfig, ["--config", str(flat)], "p", "", "", "preprocess")
    assert cfg.stride == 9
    flat.write_text("strid: 9\n")
    with pytest.raises(UserError, match="unknown config key 'strid'"):
        parse_config(PreprocessConfig, ["--config", str(flat)], "p", "", "", "preprocess")


def test_validation_in_post_init():
    with pytest.raises(UserError, match="min-bytes"):
        ParseConfig(min_bytes=10, max_bytes=5)
    with pytest.raises(UserError, match="train-ratio"):
        PreprocessConfig(train_ratio=0.9, validation_ratio=0.2)


def test_bool_flags_and_saved_config(tmp_path):
    cfg, _ = parse_config(TrainConfig, ["--no-group-by-length", "--load-in-4bit", "true"], "t", "", "", "train")
    assert cfg.group_by_length is False and cfg.load_in_4bit is True
    save_config(cfg, tmp_path / "out" / "config.yaml", note="x")
    text = (tmp_path / "out" / "config.yaml").read_text()
    assert "group_by_length: false" in text and "note: x" in text


def test_cli_unknown_command(capsys):
    assert cli_main(["nope"]) == 2
    assert "usage: codelora" in capsys.readouterr().err


def test_atomic_outputs_have_ordinary_permissions(tmp_path):
    import os
    import stat

    from codelora.utils import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


@pytest.mark.parametrize("extra", ["trian:\n  lora_r: 4\n", "max_steps: 5\n"])
def test_sectioned_yaml_refuses_unknown_top_level_keys(tmp_path, extra):
    """A misspelled section (`trian:`) or a flat key beside sections was silently ignored."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("parse:\n  max_bytes: 5000\n" + extra)
    bad = extra.split(":")[0]
    for cls, section in ((ParseConfig, "parse"), (TrainConfig, "train")):
        with pytest.raises(UserError, match=f"unknown top-level key '{bad}'") as err:
            parse_config(cls, ["--config", str(cfg_file)], "p", "", "", section)
        assert "train" in str(err.value)  # names the sections that exist


def test_cli_names_a_missing_dependency_instead_of_not_implemented(monkeypatch, capsys):
    """A stage module that fails to import because a package is missing is not 'not implemented'."""
    import sys

    monkeypatch.delitem(sys.modules, "codelora.training", raising=False)
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    assert cli_main(["train", "--help"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not implemented" not in err[0]
    assert err[0].startswith("codelora: error: train needs the Python package 'transformers'")
