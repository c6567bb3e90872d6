"""Tracker: local copies of everything, W&B offline/disabled without a network, mode resolution."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from ggmnet.classes import CLASS_COLOURS
from ggmnet.engine.tracking import Tracker, plot_curves, read_metrics, resolve_wandb_mode


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """No credentials, W&B files in tmp_path, offline unless a test says otherwise."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    return tmp_path


def test_mode_resolution(offline_env, monkeypatch):
    assert resolve_wandb_mode(None) == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode(None) == "offline"  # no credentials
    with pytest.warns(UserWarning, match="without credentials"):
        assert resolve_wandb_mode("online") == "offline"
    home = offline_env / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (home / ".netrc").chmod(0o600)
    assert resolve_wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode(None) == "offline"
    with pytest.raises(ValueError):
        resolve_wandb_mode("sometimes")


def test_local_copies_without_wandb(offline_env):
    out = offline_env / "run"
    image = np.zeros((4, 5, 3), dtype=np.uint8)
    image[1, 2] = (10, 20, 30)
    labels = np.array([[0, 1, 255, 9, 2]] * 4)
    with Tracker(out, enabled=False) as tr:
        assert tr.mode == "disabled" and not tr.active
        tr.log({"train/loss": np.float32(0.5), "val/fwiou": 0.25, "lr": float("nan")}, step=1)
        tr.log({"train/loss": 0.25}, step=2)
        tr.log_table("per-class", ["class", "iou"], [["Ar", None], ["Pt", 0.5]], step=2)
        png = tr.log_image("val/tile", image, step=3, masks={"prediction": labels})
        tr.log_heatmap("confusion", np.array([[0.9, 0.1], [0.3, 0.7]]), x_labels=["a", "b"],
                       y_labels=["a", "b"], step=3)
        tr.summary({"best_fwiou": 0.3})
        tr.summary({"epochs": 2})
        tr.log_artifact(png, name="tile", type="image")
    rows = read_metrics(out)
    assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 0.5), (2, 0.25)]
    assert rows[0]["val/fwiou"] == 0.25 and rows[0]["lr"] is None and "time" in rows[0]
    assert json.loads((out / "tables" / "per-class.json").read_text()) == {
        "columns": ["class", "iou"], "rows": [["Ar", None], ["Pt", 0.5]], "step": 2}
    assert png == out / "images" / "val_tile_3.png"
    assert np.array_equal(np.asarray(Image.open(png)), image)
    overlay = np.asarray(Image.open(out / "images" / "val_tile_3_prediction.png"))
    assert tuple(overlay[0, 0]) == CLASS_COLOURS[0] and tuple(overlay[0, 3]) == CLASS_COLOURS[9]
    assert (out / "images" / "confusion_3.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text()) == {"best_fwiou": 0.3, "epochs": 2}
    assert json.loads((out / "artifacts.jsonl").read_text())["name"] == "tile"
    assert not (out / "wandb").exists()
    with pytest.raises(ValueError):
        Tracker(out, enabled=False).log_image("bad", np.zeros((4, 4)), step=0)


def test_non_main_rank_writes_nothing(offline_env):
    tr = Tracker(offline_env / "rank1", is_main=False)
    tr.log({"a": 1}, step=0)
    tr.summary({"a": 1})
    assert tr.log_image("x", np.zeros((2, 2, 3), np.uint8)) is None
    tr.finish()
    assert not (offline_env / "rank1").exists()


def test_wandb_failure_falls_back_to_local(offline_env, monkeypatch):
    import wandb

    def refuse(*args, **kwargs):
        raise TimeoutError("no answer from the service\nsecond line")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.warns(UserWarning, match="W&B could not start .TimeoutError: no answer from the service.;"):
        tr = Tracker(offline_env / "run")
    assert not tr.active
    tr.log({"loss": 1.0}, step=0)
    tr.finish()
    assert read_metrics(offline_env / "run")[0]["loss"] == 1.0


def test_wandb_disabled_mode(offline_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with Tracker(offline_env / "run") as tr:
        assert tr.mode == "disabled" and not tr.active
        tr.log({"loss": 1.0}, step=0)
    assert len(read_metrics(offline_env / "run")) == 1


def test_wandb_offline_round_trip(offline_env):
    out = offline_env / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning: W&B really started
        tr = Tracker(out, config={"lr": 0.001}, name="test", job_type="retrain")
    with tr:
        assert tr.mode == "offline" and tr.active
        for step in range(3):
            tr.log({"train/loss": 1.0 / (step + 1), "val/fwiou": 0.1 * step}, step=step)
        tr.log_image("tile", np.full((8, 8, 3), 100, np.uint8), step=2, caption="c",
                     masks={"prediction": np.zeros((8, 8), int), "ground_truth": np.ones((8, 8), int)})
        tr.log_table("scores", ["k", "v"], [["a", 1]], step=2)
        tr.summary({"best": 0.2})
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert [f.stat().st_size > 0 for f in runs[0].glob("run-*.wandb")] == [True]
    assert json.loads((out / "wandb_run.json").read_text())["mode"] == "offline"
    assert [r["step"] for r in read_metrics(out)] == [0, 1, 2]


def test_plot_curves_keeps_last_value_of_repeated_steps(offline_env, monkeypatch):
    out = offline_env / "run"
    with Tracker(out, enabled=False) as tr:
        for step, loss in [(0, 3.0), (1, 2.0), (1, 1.5), (2, 1.0)]:
            tr.log({"train/loss": loss, "val/loss": loss + 0.5, "val/fwiou": 0.1 * step}, step=step)
    import matplotlib.pyplot as plt

    calls = []
    original = plt.Axes.plot

    def spy(ax, x, y, *args, **kwargs):
        calls.append((kwargs.get("label"), list(x), list(y)))
        return original(ax, x, y, *args, **kwargs)

    monkeypatch.setattr(plt.Axes, "plot", spy)
    png = plot_curves(out, ["loss", "fwiou"], out / "curves.png")
    assert png.stat().st_size > 0
    assert calls == [("train", [0, 1, 2], [3.0, 1.5, 1.0]), ("val", [0, 1, 2], [3.5, 2.0, 1.5]),
                     ("val", [0, 1, 2], [0.0, 0.1, 0.2])]


def test_heatmaps_write_their_values_only_when_few_enough_to_read(offline_env, monkeypatch):
    import matplotlib.axes

    from ggmnet.engine.tracking import ANNOTATED_CELLS

    written = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, x, y, s, **kw: (written.append(s),
                                                                                   original(self, x, y, s, **kw))[1])
    with Tracker(offline_env / "run", enabled=False) as tr:
        tr.log_heatmap("confusion", np.array([[0.9, 0.1], [0.3, 0.7]]), x_labels=["a", "b"], y_labels=["a", "b"])
        assert written == ["0.9", "0.1", "0.3", "0.7"]
        big = np.full((22, 21), 0.5)  # a depth-22 search's layers x (3 branches x 7 operators)
        assert big.size > ANNOTATED_CELLS
        tr.log_heatmap("arch/op", big, x_labels=[str(i) for i in range(21)], y_labels=[str(i) for i in range(22)])
        assert len(written) == 4 and (offline_env / "run" / "images" / "arch_op.png").stat().st_size > 0
