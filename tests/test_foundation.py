"""Foundation: Table 1 palette, one-line user errors, atomic outputs, run provenance, config precedence."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ggmnet.classes import (
    CLASS_COLOURS,
    COVER_COLOUR,
    COVER_INDEX,
    NUM_CLASSES,
    PAPER_SHARES_PERCENT,
    colourise,
)
from ggmnet.engine.config import POSITIVE_INT, Config, option
from ggmnet.engine.runio import atomic_path, write_json_atomic, write_run_metadata
from ggmnet.errors import UserError, cli_entry


def test_table1_palette_and_shares():
    assert NUM_CLASSES == 10
    # Table 1 printed values, column by column: Proterozoic (177, 153, 99), Granite (73, 251, 250).
    assert CLASS_COLOURS[1] == (177, 153, 99)
    assert CLASS_COLOURS[9] == (73, 251, 250)
    assert sum(PAPER_SHARES_PERCENT) == pytest.approx(100.0)
    rgb = colourise(np.array([[0, 9], [COVER_INDEX, 5]]))
    assert rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 1]) == (73, 251, 250)
    assert tuple(rgb[1, 0]) == COVER_COLOUR
    assert tuple(rgb[1, 1]) == (166, 76, 76)


def test_cli_entry_turns_user_error_into_exit_2(capsys):
    @cli_entry
    def main():
        raise UserError("--region 95,65,40,55: east (65) must be greater than west (95)")

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "error: --region 95,65,40,55" in err
    assert "Traceback" not in err


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"good": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"good": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_run_metadata_records_config_seed_versions(tmp_path):
    path = write_run_metadata(tmp_path, {"depth": 22}, seed=7)
    meta = json.loads(path.read_text())
    assert meta["seed"] == 7
    assert meta["config"] == {"depth": 22}
    assert meta["versions"]["numpy"] == np.__version__
    assert "git_commit" in meta


@dataclasses.dataclass
class _Options(Config):
    depth: int = option(22, "cells per branch", POSITIVE_INT)
    epochs: int = option(600, "total epochs", POSITIVE_INT)


def _parse(argv):
    return _Options.from_argv(_Options.parser("test", "a test command"), argv)


def test_config_precedence_defaults_yaml_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("depth: 16\nepochs: 3\n")
    args = _parse(["--config", str(cfg), "--epochs", "5"])
    assert (args.depth, args.epochs) == (16, 5)


def test_config_errors_are_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dept: 16\n")
    with pytest.raises(UserError, match="unknown option"):
        _parse(["--config", str(cfg)])
    with pytest.raises(UserError, match="no such file"):
        _parse(["--config", str(tmp_path / "missing.yaml")])
