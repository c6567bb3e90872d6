"""The paper's tables (:mod:`ggmnet.studies.paper_tables`, ``experiments/paper_tables.py``): its options and the tables it writes from a run's results (values by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ggmnet.studies import paper


@pytest.fixture(scope="module")
def tables():
    from ggmnet.studies import paper_tables

    return paper_tables


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--depths", "20", "expected depths in 16-24 including 22"),
        ("--depths", "22,26", "expected depths in 16-24 including 22"),
        ("--depths", "a,22", "expected comma-separated integers"),
        ("--depths", "", "expected comma-separated integers"),
        ("--depths", "22,16,22", "a depth is given twice"),
        ("--splits", "blocks,random", "expected random or spatial-block, or both comma-separated"),
        ("--splits", "random,random", "expected random or spatial-block, or both comma-separated"),
    ],
)
def test_bad_options_are_a_one_line_error(tables, tmp_path, capsys, option, value, expected):
    with pytest.raises(SystemExit) as stop:
        tables.main(["--scale", "smoke", "--out", str(tmp_path / "out"), option, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f": error: {option} {value}: {expected}" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_depths_and_splits_parse(tables):
    assert tables.parse_depths("22,16") == (16, 22)
    assert tables.parse_depths("16,18,20,22,24") == paper.DEPTHS
    assert tables.parse_splits("spatial-block,random") == ["spatial-block", "random"]


def _scores(mpa: float, fwiou: float) -> dict:
    iou = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    accuracy = [0.05 + x for x in iou]
    return {"val": {"outcrop": {"mpa": mpa, "fwiou": fwiou, "iou": iou, "accuracy": accuracy}}}


def test_tables_from_results_with_a_partial_depth_sweep(tables, tmp_path):
    rows5 = {row: _scores(0.30 + k / 100, 0.20 + k / 100) for k, row in enumerate(tables.ABLATION_ROWS)}
    table6 = {"ggmnet": rows5["ours"], "unet": _scores(0.28, 0.19)}
    results = {
        "random": {"table4": [{"depth": 16, "parameters": 860_000, "mpa": 0.5, "fwiou": 0.361},
                              {"depth": 22, "parameters": 2_490_000, "mpa": 0.541, "fwiou": 0.368}],
                   "table5": rows5, "table6": table6},
        "spatial-block": {"table4": [{"depth": 22, "parameters": 2_490_000, "mpa": 0.329, "fwiou": 0.194}],
                          "table5": rows5, "table6": table6},
    }
    both = ["random", "spatial-block"]
    speed = {"ggmnet": {"network": "ggmnet", "splits": both, "parameters_m": 2.49, "gflops_1024": 30.04,
                        "images_per_s": 0.5, "timing_px": 1024},
             "unet": {"network": "unet", "splits": both, "parameters_m": 24.4, "gflops_1024": 252.8,
                      "images_per_s": 0.25, "timing_px": 1024}}
    tables.write_tables(results, speed, tmp_path, "cpu")

    table4 = (tmp_path / "table4.md").read_text().splitlines()
    # Depth 16 was run on the random split only: the spatial-block cells say so; no depth that was not run.
    assert "| 16 | 0.86 | 50.0 | 36.10 | -- | -- | -- | 4.7 | 50.9 | 36.8 |" in table4
    assert "| 22 | 2.49 | 54.1 | 36.80 | 2.49 | 32.9 | 19.40 | 10.3 | 63.1 | 42.88 |" in table4
    assert not any(line.startswith(("| 18 ", "| 20 ", "| 24 ")) for line in table4)

    table5 = (tmp_path / "table5.md").read_text().splitlines()
    assert "| ours | 34.0 | 24.00 | 34.0 | 24.00 | 63.1 | 42.88 |" in table5
    table6 = (tmp_path / "table6.md").read_text().splitlines()
    assert "| unet | 24.40 | 252.8 | 0.25 | 28.0 | 19.00 | 28.0 | 19.00 | -- | -- | -- |" in table6
    table7 = (tmp_path / "table7.md").read_text().splitlines()
    from ggmnet.classes import CLASS_NAMES

    # class 5: IoU 0.5, accuracy 0.55; the paper's Table 7 gives 50.3 and 82.7.
    assert f"| {CLASS_NAMES[5]} | 50.0 | 55.0 | 50.0 | 55.0 | 50.3 | 82.7 |" in table7
    assert "| all (FWIoU, MPA) | 24.00 | 34.0 | 24.00 | 34.0 | 42.88 | 63.1 |" in table7


def test_each_split_gets_its_own_row_where_its_network_differs(tables, tmp_path, monkeypatch):
    # Each split searched its own GGMNet (different sizes); the U-Net is the same network in both.
    import ggmnet.models as models

    configs = {"g-random": {"width": 1}, "g-blocks": {"width": 2}, "u-random": {"u": 1}, "u-blocks": {"u": 1}}
    monkeypatch.setattr(models, "load_model", lambda path: (None, {"model_config": configs[path.parts[-3]]}))
    monkeypatch.setattr(models, "build_model", lambda config: config)
    monkeypatch.setattr(models, "model_size", lambda build, size, channels: (sum(build().values()), 10.0))
    monkeypatch.setattr(tables, "inference_rate", lambda build, size, device: 1.0 / sum(build().values()))
    results = {split: {"table6": {"ggmnet": {"run": str(tmp_path / f"g-{key}"), **_scores(mpa, 0.2)},
                                  "unet": {"run": str(tmp_path / f"u-{key}"), **_scores(0.3, 0.2)}},
                       "table4": [], "table5": {}}
               for split, key, mpa in (("random", "random", 0.5), ("spatial-block", "blocks", 0.3))}
    speed = tables.sizes_and_speed(results, 256, "cpu")
    assert {label: (m["network"], m["splits"], m["parameters_m"], m["images_per_s"]) for label, m in speed.items()} == {
        "ggmnet (random)": ("ggmnet", ["random"], 1, 1.0),
        "ggmnet (spatial-block)": ("ggmnet", ["spatial-block"], 2, 0.5),
        "unet": ("unet", ["random", "spatial-block"], 1, 1.0),
    }
    for split in results.values():
        split["table4"] = [{"depth": 22, "parameters": 1000, "mpa": 0.3, "fwiou": 0.2}]
        split["table5"] = {row: split["table6"]["ggmnet"] for row in tables.ABLATION_ROWS}
    tables.write_tables(results, speed, tmp_path, "cpu")
    table6 = (tmp_path / "table6.md").read_text().splitlines()
    assert "| ggmnet (random) | 1.00 | 10.0 | 1.00 | 50.0 | 20.00 | -- | -- | 10.3 | 63.1 | 42.88 |" in table6
    assert "| ggmnet (spatial-block) | 2.00 | 10.0 | 0.50 | -- | -- | 30.0 | 20.00 | 10.3 | 63.1 | 42.88 |" in table6
    assert "| unet | 1.00 | 10.0 | 1.00 | 30.0 | 20.00 | 30.0 | 20.00 | -- | -- | -- |" in table6


class _FakeRunner:
    """Records the searches and retrains :func:`run_split` asks for, training nothing."""

    def __init__(self, out):
        self.out, self.gpus, self.searched, self.trained = out, 1, [], []

    def search(self, data, out, depth):
        self.searched.append(depth)
        return out / "genotype.json"

    def retrain(self, data, out, extra):
        self.trained.append(out.name)
        return {"parameters": 1000, "run": str(out), "seconds": 360.0, **_scores(0.3, 0.2)}


def _finished_sweep(root, depths):
    sweep = root / "spatial-block" / "depth-sweep"
    rows = [{"depth": d, "parameters": 1000 * d, "genotype": str(sweep / f"depth{d}" / "genotype.json"),
             "fwiou": d / 100, "mpa": d / 50, "retrain_dir": "r", "search_dir": "s"} for d in depths]
    for d in depths:
        (sweep / f"depth{d}").mkdir(parents=True)
    (sweep / "table4.json").write_text(json.dumps({"rows": rows, "engine": "loop"}))


def test_a_sweep_of_fewer_depths_is_not_reused_for_more(tables, tmp_path):
    # After a --depths 22 run, asking for 16 and 22 must search depth 16, not reuse the one-row Table 4.
    _finished_sweep(tmp_path, [22])
    runner = _FakeRunner(tmp_path)
    rows = tables.run_split(runner, "spatial-block", "data", "loop", (16, 22))
    assert runner.searched == [16, 22]
    assert [row["depth"] for row in rows["table4"]] == [16, 22]


def test_a_sweep_that_covers_the_depths_is_reused_for_them_only(tables, tmp_path):
    _finished_sweep(tmp_path, [16, 18, 20, 22, 24])
    runner = _FakeRunner(tmp_path)
    rows = tables.run_split(runner, "spatial-block", "data", "loop", (22,))
    assert runner.searched == []
    assert [(row["depth"], row["fwiou"]) for row in rows["table4"]] == [(22, 0.22)]
    assert rows["genotype"].endswith("depth22/genotype.json")
    # Nine trainings of 6 minutes: ablations a-d and ours (Table 6's GGMNet), four baselines.
    assert rows["tables56_training_hours"] == pytest.approx(9 * 0.1)
    assert runner.trained == [f"ablation-{r}" for r in tables.ABLATION_ROWS] + [
        f"baseline-{b}" for b in tables.BASELINES]


@pytest.mark.slow
def test_smoke_scale_end_to_end_and_a_rerun_trains_nothing(tables, tiny_dataset, tmp_path):
    out = tmp_path / "tables"
    argv = ["--scale", "smoke", "--out", str(out), "--splits", "spatial-block", "--data-blocks", str(tiny_dataset),
            "--depths", "22"]
    assert tables.main(argv) == 0
    for name in ("table4.md", "table5.md", "table6.md", "table7.md", "results.json", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    first = json.loads((out / "results.json").read_text())
    rows = first["results"]["spatial-block"]
    assert [row["depth"] for row in rows["table4"]] == [22]
    assert set(rows["table5"]) == set(tables.ABLATION_ROWS)
    assert set(rows["table6"]) == {"ggmnet", *tables.BASELINES}
    # Each ablation row trained with its own components: deformable convolutions in rows d and ours only.
    for row, result in rows["table5"].items():
        config = json.loads((Path(result["run"]) / "run.json").read_text())["config"]
        assert config["ablation"] == row
        assert config["deformable"] == (row in ("d", "ours")), row
    table5 = (out / "table5.md").read_text()
    ours = rows["table5"]["ours"]["val"]["outcrop"]
    assert f"| ours | {100 * ours['mpa']:.1f} | {100 * ours['fwiou']:.2f} | 63.1 | 42.88 |" in table5

    # A rerun finds every run finished: no checkpoint is written again, and the figures are the same.
    checkpoints = sorted(out.rglob("*.pt"))
    stamps = {path: path.stat().st_mtime_ns for path in checkpoints}
    assert tables.main(argv) == 0
    assert {path: path.stat().st_mtime_ns for path in checkpoints} == stamps
    second = json.loads((out / "results.json").read_text())
    for row in tables.ABLATION_ROWS:
        assert second["results"]["spatial-block"]["table5"][row]["val"] == rows["table5"][row]["val"]
    assert (out / "table5.md").read_text() == table5
