"""The retrain loop: exact resume, checkpoints that score what they say, dashboards, and ``retrain`` errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import retrain_config

from ggmnet.datasets.tiles import TileDataset
from ggmnet.errors import UserError
from ggmnet.metrics import ConfusionMatrix
from ggmnet.models import load_model
from ggmnet.retrain.cli import build_retrain_parser, train_main
from ggmnet.retrain.train import RetrainConfig, run_retrain
from ggmnet.search_space.genotype import default_genotype


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads slow small ops tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tiny_genotype, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("retrain-run") / "run"
    return out, run_retrain(retrain_config(tiny_dataset, tiny_genotype, out))


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_after_an_interruption_reaches_the_same_weights(finished_run, tiny_dataset, tiny_genotype, tmp_path):
    reference = _checkpoint(finished_run[0] / "checkpoints" / "last.pt")
    out = tmp_path / "interrupted"

    def stop_after_two(epoch: int, record: dict) -> None:
        if epoch == 2:  # the first SGD epoch is done: momentum buffers and warm-up state exist
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_retrain(retrain_config(tiny_dataset, tiny_genotype, out), on_epoch_end=stop_after_two)
    interrupted = _checkpoint(out / "checkpoints" / "last.pt")
    assert interrupted["epoch"] == 2 and interrupted["phase"] == "sgd"

    # Resume without --genotype: the architecture comes from the checkpoint.
    run_retrain(retrain_config(tiny_dataset, None, out, resume=True))
    resumed = _checkpoint(out / "checkpoints" / "last.pt")
    assert resumed["epoch"] == reference["epoch"] == 3
    assert resumed["model"].keys() == reference["model"].keys()
    different = [k for k in reference["model"] if not torch.equal(resumed["model"][k], reference["model"][k])]
    assert not different
    momentum = [s["momentum_buffer"] for s in reference["optimizer"]["state"].values()]
    assert momentum and all(torch.equal(a["momentum_buffer"], b) for a, b in
                            zip(resumed["optimizer"]["state"].values(), momentum))
    assert resumed["scheduler"] == reference["scheduler"]
    assert resumed["metrics"]["latest"] == reference["metrics"]["latest"]
    # The run did train: the weights moved away from the seeded initialisation of epoch 2's checkpoint.
    assert not all(torch.equal(interrupted["model"][k], reference["model"][k]) for k in reference["model"])


def test_checkpoints_hold_the_contract_and_score_what_they_say(finished_run, tiny_dataset):
    out, summary = finished_run
    last = _checkpoint(out / "checkpoints" / "last.pt")
    assert last["format"] == "ggmnet-checkpoint" and last["version"] == 1 and last["epoch"] == 3
    assert last["phase"] == "sgd" and last["scheduler"]["switch_epoch"] == 1
    assert {"optimizer", "scheduler", "rng", "scaler"} <= last.keys()
    assert last["model_config"]["name"] == "ggmnet" and last["model_config"]["deformable"] is True
    data = last["data"]
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert data["region"] == [80.0, 84.0, 44.0, 47.0] and data["spacing_deg"] == pytest.approx([0.1, 0.1])
    assert data["recipe"] == manifest["recipe"] and data["normalisation"] == manifest["normalisation"]
    assert data["channels"] == "pseudocolour" and data["tile_size"] == 32 and data["geology_prior"] is False
    assert not any(k.startswith("module.") for k in last["model"])

    model, best = load_model(out / "checkpoints" / "best.pt")
    assert not {"optimizer", "scheduler", "rng", "scaler"} & best.keys()
    assert best["epoch"] == summary["best_epoch"]
    assert best["metrics"]["latest"]["fwiou"] == summary["best_val_fwiou"]
    # Re-score the best weights on the same two validation tiles: the stored scores must come back.
    config = last["config"]
    val = TileDataset(tiny_dataset, "val", tile_size=32, crop_size=None, augment=False, seed=config["seed"])
    ids = sorted(np.random.default_rng(config["seed"]).permutation(len(val))[:2].tolist())
    matrix = ConfusionMatrix()
    with torch.no_grad():
        for i in ids:
            item = val[i]
            matrix.update(model(item["image"][None]).argmax(1)[0], item["mask"])
    scores = matrix.compute()
    assert scores["fwiou"] == pytest.approx(best["metrics"]["latest"]["fwiou"], abs=1e-12)
    assert scores["iou"] == pytest.approx(best["metrics"]["latest"]["iou"])


def test_dashboards_are_written_locally(finished_run):
    out, _ = finished_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["train/sgd"] for r in rows] == [0, 1, 1]
    # Adam at 1e-3, then SGD's warm-up from 1e-3 / 3 rising by (2/3)(1e-3)/5 per epoch.
    assert [r["train/lr"] for r in rows] == pytest.approx([1e-3, 1e-3 / 3, 1e-3 / 3 + 2e-3 / 15])
    for key in ("train/loss", "val/loss", "train/fwiou", "val/fwiou", "val/mpa", "val/miou"):
        assert all(isinstance(r[key], float) for r in rows), key
    table = json.loads((out / "tables" / "val_per_class.json").read_text())
    assert table["columns"][:3] == ["class", "name", "IoU"] and len(table["rows"]) == 10
    images = {p.name for p in (out / "images").iterdir()}
    assert "val_confusion_3.png" in images
    assert any(n.endswith("_3_prediction.png") for n in images)
    assert any(n.endswith("_3_ground_truth.png") for n in images)
    assert (out / "curves.png").stat().st_size > 0 and (out / "run.json").is_file()
    assert json.loads((out / "genotype.json").read_text())["depth"] == 2
    artifacts = [json.loads(line)["type"] for line in (out / "artifacts.jsonl").read_text().splitlines()]
    assert artifacts == ["genotype", "model"]


def test_an_existing_run_is_not_overwritten_and_resume_keeps_settings(finished_run, tiny_dataset, tiny_genotype):
    out, _ = finished_run
    before = (out / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a retrain run"):
        run_retrain(retrain_config(tiny_dataset, tiny_genotype, out))
    with pytest.raises(UserError, match="the run used --batch-size 2, not 3"):
        run_retrain(retrain_config(tiny_dataset, tiny_genotype, out, resume=True, batch_size=3))
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_a_baseline_trains_resumes_and_loads_without_a_genotype(tiny_dataset, tmp_path):
    out = tmp_path / "fasterseg"

    def stop_after_one(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    config = {"model": "fasterseg", "epochs": 2}
    with pytest.raises(KeyboardInterrupt):
        run_retrain(retrain_config(tiny_dataset, None, out, **config), on_epoch_end=stop_after_one)
    # Resumed, the network keeps the arguments the run recorded (base_channels), not only the dataset's.
    run_retrain(retrain_config(tiny_dataset, None, out, resume=True, **config))
    model, checkpoint = load_model(out / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 2
    assert checkpoint["model_config"] == {"name": "fasterseg", "in_channels": 3, "num_classes": 10,
                                          "base_channels": 14}
    assert not (out / "genotype.json").exists()


def _cli_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_errors_exit_2_with_one_line(tiny_dataset, tmp_path, capsys):
    base = ["--data", str(tiny_dataset), "--out", str(tmp_path / "run"), "--device", "cpu", "--wandb-mode",
            "disabled", "--tile-size", "32", "--crop-size", "24", "--batch-size", "2", "--num-workers", "0"]
    err = _cli_error(base, capsys)
    assert "error: --genotype: required for --model ggmnet" in err
    err = _cli_error(["--genotype", str(tmp_path / "missing.json"), *base], capsys)
    assert "--genotype" in err and "missing.json: no such file" in err
    four = tmp_path / "four.json"
    default_genotype(depth=2, in_channels=4).save(four)
    err = _cli_error(["--genotype", str(four), *base, "--batch-size", "1"], capsys)
    assert "--batch-size 1" in err
    err = _cli_error(["--genotype", str(four), *base, "--bedrock-targets", "2"], capsys)
    assert "--bedrock-targets" in err and "a share in [0, 1]" in err
    err = _cli_error(["--genotype", str(four), *base, "--well-radius", "-1"], capsys)
    assert "--well-radius" in err and "a distance of at least 0 grid nodes" in err
    err = _cli_error(["--genotype", str(four), *base, "--bedrock-targets", "0.5"], capsys)
    assert str(tiny_dataset) in err and "no bedrock grid (only synthetic datasets do)" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_searched_genotype_retrains_with_the_outcrop_input_unedited(tiny_dataset, tmp_path):
    # nas-search writes the input width it searched with (3 pseudo-colour channels); the outcrop-conditioned
    # recipe adds 12 outcrop channels. The stem follows the data: the same JSON retrains either way, and
    # the checkpoint records the width it was built with. (Before: "in_channels 3 does not match the
    # dataset's 15 input channels".)
    genotype = tmp_path / "searched.json"
    default_genotype(depth=2, in_channels=3).save(genotype)
    out = tmp_path / "outcrop"
    run_retrain(retrain_config(tiny_dataset, genotype, out, epochs=1, geology_prior=True))
    model, checkpoint = load_model(out / "checkpoints" / "best.pt")
    assert checkpoint["model_config"]["genotype"]["in_channels"] == 15 and model.in_channels == 15
    assert checkpoint["data"]["geology_prior"] is True
    assert json.loads(genotype.read_text())["in_channels"] == 3  # the user's file is left as it was
    with torch.no_grad():
        assert model(torch.zeros(1, 15, 32, 32)).shape == (1, 10, 32, 32)


@pytest.mark.parametrize("recipe", ["retrain_cpu.yaml", "retrain_cpu_long.yaml", "retrain_paper.yaml",
                                    "retrain_cpu_outcrop.yaml"])
def test_experiment_recipes_are_valid_configs(recipe):
    path = Path(__file__).resolve().parents[1] / "experiments" / recipe
    config = RetrainConfig.from_argv(build_retrain_parser(), ["--config", str(path), "--genotype", "g.json"])
    if recipe == "retrain_paper.yaml":
        assert (config.epochs, config.tile_size, config.crop_size, config.batch_size) == (600, 2048, 1024, 4)
        assert config.switch_epoch is None and config.lr == 1e-3 and config.ablation == "ours"
        assert (config.top_k_fraction, config.class_weighting, config.instance_weighting) == (0.15, "median_frequency",
                                                                                              True)
        assert config.pixels_per_degree is None and config.augment == "paper" and config.deformable is None
    else:
        assert config.device == "cpu" and config.pixels_per_degree == 15 and config.crop_size is None
        assert config.deformable is False and config.augment == "d4" and config.top_k_fraction == 1.0
        assert (config.epochs, config.steps_per_epoch) == ((80, 100) if "long" in recipe else (10, 100))
        assert config.class_weighting == ("uniform" if "long" in recipe else "sqrt_median_frequency")
        assert config.geology_prior == ("outcrop" in recipe)


def test_fixed_resolution_run_validates_on_the_region_map_and_evaluate_agrees(tiny_dataset, tiny_genotype, tmp_path):
    # 10 px per degree on the tiny dataset's 0.1-degree grid: one pixel per node; validation maps the region
    # and scores the validation windows at their nodes, beside the commonest-class rule, and ggm-evaluate of
    # best.pt scores the same windows the same way.
    from ggmnet.inference.evaluate import evaluate

    out = tmp_path / "fixed"
    records = []
    config = retrain_config(tiny_dataset, tiny_genotype, out, pixels_per_degree=10.0, tile_size=32, crop_size=None,
                            augment="d4", class_weighting="uniform", instance_weighting=False, top_k_fraction=1.0)
    summary = run_retrain(config, on_epoch_end=lambda epoch, record: records.append(record))
    assert config.crop_size is None
    best = _checkpoint(out / "checkpoints" / "best.pt")
    assert best["data"]["pixels_per_degree"] == 10.0
    for record in records:
        assert 0.0 <= record["val/fwiou"] <= 1.0 and record["val/loss"] > 0
        assert 0.0 < record["val/commonest_pixel_accuracy"] < 1.0
    results = evaluate(out / "checkpoints" / "best.pt", tiny_dataset, "val", device="cpu", out_dir=tmp_path / "eval",
                       progress=False)
    assert results["outcrop"]["fwiou"] == pytest.approx(summary["best_val_fwiou"], abs=1e-9)
    assert results["commonest_class"]["pixel_accuracy"] == pytest.approx(
        records[best["epoch"] - 1]["val/commonest_pixel_accuracy"], abs=1e-9)
    assert "scored at the grid nodes" in results["report"]


def test_train_and_score_trains_once_then_finds_the_finished_run(tiny_dataset, tiny_genotype, tmp_path):
    from ggmnet.studies.trial import train_and_score

    out = tmp_path / "study"
    flags = ["--genotype", str(tiny_genotype), "--data", str(tiny_dataset), "--out", str(out), "--epochs", "1",
             "--steps-per-epoch", "1", "--tile-size", "32", "--pixels-per-degree", "10", "--batch-size", "2",
             "--num-workers", "0", "--device", "cpu", "--wandb-mode", "disabled"]
    first = train_and_score(flags, splits=("val", "train"))
    checkpoint = _checkpoint(out / "checkpoints" / "best.pt")
    assert first["parameters"] == sum(p.numel() for p in load_model(out / "checkpoints" / "best.pt")[0].parameters())
    assert first["val"]["outcrop"]["fwiou"] == pytest.approx(checkpoint["metrics"]["best"]["scores"]["fwiou"])
    assert first["train"]["commonest_class"] is not None and first["steps"] == 1
    again = train_and_score(flags, splits=("val",))
    assert again["seconds"] == first["seconds"] and again["val"] == first["val"]


def test_ema_checkpoints_the_weights_average_and_resumes_exactly(tiny_dataset, tiny_genotype, tmp_path, monkeypatch):
    """``ema_decay``: ``model`` is the moving average of the trained weights after every step (computed here
    by hand from the recorded weights: step 1 copies, then decay min(X, 1 - t^(-2/3))), validation scores it,
    ``last.pt`` keeps the trained weights too, and an interrupted run resumes to the same average."""
    from ggmnet.retrain.train import Retrainer

    trained: list[dict[str, torch.Tensor]] = []
    original = Retrainer.train_step

    def recording(self, batch):
        out = original(self, batch)
        trained.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return out

    monkeypatch.setattr(Retrainer, "train_step", recording)
    out = tmp_path / "ema"
    run_retrain(retrain_config(tiny_dataset, tiny_genotype, out, ema_decay=0.45))
    last = _checkpoint(out / "checkpoints" / "last.pt")
    assert len(trained) == 6
    expected = {k: v.clone() for k, v in trained[0].items()}
    for t, weights in enumerate(trained[1:], start=2):
        decay = min(0.45, 1 - t ** (-2 / 3))
        for k, v in weights.items():
            expected[k] = decay * expected[k] + (1 - decay) * v if v.is_floating_point() else v
    floats = [k for k, v in expected.items() if v.is_floating_point()]
    assert all(torch.allclose(last["model"][k], expected[k], atol=1e-6) for k in floats)
    assert all(torch.equal(last["trained_model"][k], trained[-1][k]) for k in expected)
    assert any(not torch.allclose(last["model"][k], trained[-1][k]) for k in floats)

    # validation scored the average: the last epoch's stored scores are those of last.pt's "model"
    model, best = load_model(out / "checkpoints" / "best.pt")
    assert best["model"].keys() == last["model"].keys() and "trained_model" not in best
    model.load_state_dict(last["model"])
    val = TileDataset(tiny_dataset, "val", tile_size=32, crop_size=None, augment=False, seed=0)
    ids = sorted(np.random.default_rng(0).permutation(len(val))[:2].tolist())
    matrix = ConfusionMatrix()
    with torch.no_grad():
        for i in ids:
            item = val[i]
            matrix.update(model(item["image"][None]).argmax(1)[0], item["mask"])
    assert matrix.compute()["iou"] == pytest.approx(last["metrics"]["latest"]["iou"])

    resumed_out = tmp_path / "ema-interrupted"

    def stop_after_one(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_retrain(retrain_config(tiny_dataset, tiny_genotype, resumed_out, ema_decay=0.45),
                    on_epoch_end=stop_after_one)
    run_retrain(retrain_config(tiny_dataset, None, resumed_out, resume=True, ema_decay=0.45))
    resumed = _checkpoint(resumed_out / "checkpoints" / "last.pt")
    for key in ("model", "trained_model"):
        assert all(torch.equal(resumed[key][k], last[key][k]) for k in last[key]), key
    assert resumed["metrics"]["latest"] == last["metrics"]["latest"]


def test_a_run_saved_before_an_option_existed_resumes_with_its_default(tiny_dataset, tiny_genotype, tmp_path):
    """A checkpoint whose config lacks a later option (here cover_augment and ema_decay) ran with that option's
    default: resuming with the default continues it, anything else is refused."""
    out = tmp_path / "old"

    def stop_after_one(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_retrain(retrain_config(tiny_dataset, tiny_genotype, out), on_epoch_end=stop_after_one)
    last = out / "checkpoints" / "last.pt"
    state = _checkpoint(last)
    for key in ("cover_augment", "ema_decay"):
        del state["config"][key]
    torch.save(state, last)
    with pytest.raises(UserError, match="the run used --cover-augment 0.0, not 0.5"):
        run_retrain(retrain_config(tiny_dataset, None, out, resume=True, cover_augment=0.5))
    summary = run_retrain(retrain_config(tiny_dataset, None, out, resume=True))
    assert summary["epochs"] == 3


def test_warm_start_adds_zero_outcrop_channels_and_keeps_the_map(finished_run, tmp_path):
    # --init-from the gravity-only best.pt into the same architecture with 12 more input channels: the new
    # channels start at zero, so whatever the outcrop input, the network maps as the gravity-only one does.
    from ggmnet.models import build_model
    from ggmnet.retrain.train import warm_start

    source, checkpoint = load_model(finished_run[0] / "checkpoints" / "best.pt")
    config = json.loads(json.dumps(checkpoint["model_config"]))
    config["genotype"]["in_channels"] = 15
    model = build_model(config)
    warm_start(model, str(finished_run[0] / "checkpoints" / "best.pt"))
    model.eval()
    gravity = torch.rand(2, 3, 32, 32)
    outcrop = torch.rand(2, 12, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(torch.cat([gravity, outcrop], 1)), source(gravity))
    with pytest.raises(UserError, match="--init-from .*not this architecture"):
        warm_start(build_model({"name": "unet", "in_channels": 15, "num_classes": 10}),
                   str(finished_run[0] / "checkpoints" / "best.pt"))
