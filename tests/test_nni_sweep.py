"""The Table 4 depth sweep (:mod:`ggmnet.studies.depth_sweep`, ``experiments/nni_depth_sweep.py``): two tiny trials through NNI and the plain loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny_data import UNIT_CHANNELS, build_tiny_dataset

from ggmnet.errors import UserError
from ggmnet.search_space.genotype import Genotype

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "nni_depth_sweep.py"
# Two depths, the smallest the genotype contract allows (the paper's 16..24 are for GPUs).
DEPTHS = (2, 3)
# Each trial: a search (narrow units) of 2 epochs (1 warm-up) x 1 step and a retrain of 1 epoch x 1
# step, 2 tiles of 32 px.
TINY_SEARCH = dict(unit_channels=list(UNIT_CHANNELS), epochs=2, warmup_epochs=1, steps_per_epoch=1, tile_size=32,
                   crop_size=32, batch_size=2, val_tiles=2, num_workers=0, device="cpu", wandb_mode="disabled")
TINY_RETRAIN = dict(epochs=1, steps_per_epoch=1, tile_size=32, crop_size=32, batch_size=2, val_tiles=2,
                    image_every=1, val_images=1, num_workers=0, device="cpu", wandb_mode="disabled")
SWEEP_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def sweep():
    from ggmnet.studies import depth_sweep

    return depth_sweep


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("sweep-data"))


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads slow small ops tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check_outputs(out: Path, engine: str) -> list[dict]:
    """table4.json and table4.md hold one row per depth, each from a trial at that depth; returns the rows."""
    table = json.loads((out / "table4.json").read_text())
    assert table["engine"] == engine
    rows = table["rows"]
    assert [row["depth"] for row in rows] == list(DEPTHS)
    for row in rows:
        assert 0.0 <= row["fwiou"] <= 1.0 and 0.0 <= row["mpa"] <= 1.0
        assert row["parameters"] > 0 and row["paper"] is None  # depths 2 and 3 are not in the paper's table
        assert Genotype.load(row["genotype"]).depth == row["depth"]
        assert json.loads((out / f"depth{row['depth']}" / "trial.json").read_text())["depth"] == row["depth"]
        assert Path(row["search_dir"]).is_dir() and Path(row["retrain_dir"]).is_dir()
    # A deeper MRFEM has more parameters.
    assert rows[0]["parameters"] < rows[1]["parameters"]
    lines = [line for line in (out / "table4.md").read_text().splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| Depth of MRFEM | Parameters (M) | MPA (%) | FWIoU (%) |")
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["2", "3"]
    return rows


@pytest.mark.slow
def test_sweep_runs_two_tiny_trials_through_nni_without_a_listening_port(tiny_data, tmp_path):
    pytest.importorskip("nni", reason="NNI is not installed (pip install -e '.[sweeps]')")
    import psutil  # an NNI dependency

    (tmp_path / "search.yaml").write_text(yaml.safe_dump(TINY_SEARCH))
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump(TINY_RETRAIN))
    out = tmp_path / "sweep"
    # NNI lists its experiments in ~/nni-experiments: a HOME of its own keeps that out of the user's.
    env = {**os.environ, "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    import matplotlib

    env.setdefault("MPLCONFIGDIR", matplotlib.get_configdir())  # reuse the font cache of the real HOME
    command = [sys.executable, str(SCRIPT), "--engine", "nni", "--depths", ",".join(map(str, DEPTHS)),
               "--search-config", str(tmp_path / "search.yaml"), "--retrain-config", str(tmp_path / "retrain.yaml"),
               "--data", str(tiny_data), "--out", str(out)]
    listening = set()
    with open(tmp_path / "sweep.log", "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + SWEEP_TIMEOUT_S
            watched = psutil.Process(proc.pid)
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    for p in [watched, *watched.children(recursive=True)]:
                        listening |= {(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                                      if c.status == psutil.CONN_LISTEN}
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
                time.sleep(0.2)
        finally:
            if proc.poll() is None:  # past the deadline: stop the sweep and anything it started
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = (tmp_path / "sweep.log").read_text(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    # The sequential engine starts no NNI manager: nothing listened, and NNI's record says no port.
    assert not listening, f"the sweep listened on {sorted(listening)}"
    experiments = json.loads((tmp_path / "nni-experiments" / ".experiment").read_text())
    (record,) = experiments.values()
    assert record["port"] == "N/A" and record["status"] == "STOPPED"
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]

    rows = check_outputs(out, "nni")
    for row in rows:
        # What NNI recorded: the depth its strategy sampled for the trial and the metric the trial reported.
        assert row["nni"]["sample"] == {"depth": row["depth"]}
        assert row["nni"]["metric"] == pytest.approx(row["fwiou"])
        assert row["nni"]["status"] == "trained"


@pytest.mark.slow
def test_plain_loop_runs_when_nni_does_not_import(sweep, tiny_data, tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(sweep, "nni_available", lambda: (False, "No module named 'nni'"))
    table = sweep.run_depth_sweep(DEPTHS, out=tmp_path / "sweep", data=tiny_data,
                                  search={**TINY_SEARCH, "depth": 22}, retrain=TINY_RETRAIN)
    rows = check_outputs(tmp_path / "sweep", "loop")
    assert table["rows"] == rows and not any("nni" in row for row in rows)
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["config"]["engine"] == "loop"
    # A second sweep into the same folder is refused before any trial runs.
    with pytest.raises(UserError, match="already holds depth2"):
        sweep.run_depth_sweep(DEPTHS, out=tmp_path / "sweep", data=tiny_data, search=TINY_SEARCH,
                              retrain=TINY_RETRAIN, engine="loop")


def test_engine_nni_without_nni_is_a_one_line_error(sweep, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "nni_available", lambda: (False, "No module named 'nni'"))
    with pytest.raises(UserError, match=r"--engine nni: NNI does not import .*\[sweeps\]"):
        sweep.run_depth_sweep(DEPTHS, out=tmp_path / "sweep", engine="nni")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("kind, values, match", [
    ("search", {"out": "x"}, "search settings out: set by the sweep"),
    ("retrain", {"genotype": "g.json"}, "retrain settings genotype: set by the sweep"),
    ("retrain", {"model": "hrnet_w32"}, "Table 4 retrains ggmnet"),
])
def test_settings_the_sweep_owns_are_refused(sweep, tmp_path, kind, values, match):
    with pytest.raises(UserError, match=match):
        sweep.run_depth_sweep(DEPTHS, out=tmp_path / "sweep", engine="loop", **{kind: values})


def test_recipes_and_depths_are_checked(sweep, tmp_path):
    recipe = tmp_path / "search.yaml"
    recipe.write_text("depth: 22\nepochs: 2\n")
    assert sweep.load_recipe(recipe, "search") == {"depth": 22, "epochs": 2}
    recipe.write_text("epoch: 2\n")
    with pytest.raises(UserError, match="--search-config .*unknown option\\(s\\) epoch"):
        sweep.load_recipe(recipe, "search")
    with pytest.raises(UserError, match="--retrain-config .*no such file"):
        sweep.load_recipe(tmp_path / "missing.yaml", "retrain")
    assert sweep.parse_depths("16,18") == [16, 18]
    for bad in ("16,x", "16,16"):
        with pytest.raises(UserError, match="--depths"):
            sweep.parse_depths(bad)


def test_help_says_what_the_nni_engine_binds(sweep):
    text = " ".join(sweep.build_parser().format_help().split())
    assert "opens no port" in text and "cannot bind it to the loopback only" in text
