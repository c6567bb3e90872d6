"""Evaluation: hand-computed confusion matrices, scoring under the cover, the nearest-outcrop baseline, the CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from test_predict import save_checkpoint, write_scene
from torch import nn

from ggmnet.datasets.hiding import prior_channels
from ggmnet.datasets.prepare import prepare_dataset
from ggmnet.datasets.processing import ProcessingRecipe
from ggmnet.datasets.tiles import TileDataset
from ggmnet.datasets.windows import Scale, Window
from ggmnet.engine.runio import file_sha256
from ggmnet.inference.evaluate import evaluate, format_report, score_model
from ggmnet.inference.rules import nearest_outcrop_baseline
from ggmnet.retrain.cli import evaluate_main as main

C = 255  # cover


# --------------------------------------------------------------------------------------------- the baseline


def test_baseline_on_a_strip_by_hand():
    strip = np.array([[3, C, C, C, C, 7, C, C, 2, C, C]] * 3, dtype=np.uint8)
    expected = np.array([[3, 3, 3, 7, 7, 7, 7, 2, 2, 2, 2]] * 3)
    np.testing.assert_array_equal(nearest_outcrop_baseline(strip, fallback=0), expected)


def test_baseline_measures_distance_on_the_ground():
    labels = np.array([[C, C, 1],
                       [2, C, C]], dtype=np.uint8)
    # Square pixels: (0, 0) is 1 px from class 2 and 2 px from class 1.
    assert nearest_outcrop_baseline(labels, fallback=0)[0, 0] == 2
    # Rows 3 km apart, columns 1 km: class 1 is 2 km away, class 2 is 3 km.
    assert nearest_outcrop_baseline(labels, fallback=0, sampling=(3.0, 1.0))[0, 0] == 1


def test_baseline_without_outcrop_uses_the_fallback():
    np.testing.assert_array_equal(nearest_outcrop_baseline(np.full((2, 3), C, np.uint8), fallback=6), 6)


# ------------------------------------------------------------------------------------ scores on hand-made tiles

MASK_A = [[0, 0, C, C, C],
          [0, C, C, C, 2]]
# The true bedrock; on the outcrop pixels (0, 1) and (1, 0) it is deliberately NOT the label (7, 9 instead of 0):
# an evaluation reading the bedrock there would show rows 7 and 9.
BEDROCK_A = [[0, 7, 5, 5, 2],
             [9, 5, 5, 2, 2]]
MASK_B = [[C] * 5] * 2  # a tile with no outcrop: the baseline falls back
BEDROCK_B = [[1] * 5] * 2


def items(with_bedrock=True, image=None):
    out = []
    for i, (mask, bedrock) in enumerate(((MASK_A, BEDROCK_A), (MASK_B, BEDROCK_B))):
        item = {"image": torch.zeros(1, 2, 5) if image is None else image(torch.tensor(bedrock)),
                "mask": torch.tensor(mask), "window": i}
        if with_bedrock:
            item["bedrock"] = torch.tensor(bedrock)
        out.append(item)
    return out


def constant_model(cls):
    """Predicts ``cls`` at every pixel (logits from a bias alone)."""
    model = nn.Conv2d(1, 10, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.nn.functional.one_hot(torch.tensor(cls), 10).float() * 5.0)
    return model


def matrix(entries):
    m = np.zeros((10, 10), dtype=np.int64)
    for (i, j), n in entries.items():
        m[i, j] = n
    return m


def test_constant_model_scores_match_hand_confusion_matrices():
    scores = score_model(constant_model(3), items(), batch_size=2, fallback_class=1)
    # Outcrop: labels 0, 0, 0, 2, all predicted 3.
    np.testing.assert_array_equal(scores["outcrop"].matrix, matrix({(0, 3): 3, (2, 3): 1}))
    # Under the cover: tile A's cover pixels hold bedrock 5, 5, 2, 5, 5, 2; tile B's ten pixels bedrock 1.
    np.testing.assert_array_equal(scores["under_cover"].matrix, matrix({(5, 3): 4, (2, 3): 2, (1, 3): 10}))
    # Baseline on tile A: (0,2)->0, (0,3)->2, (0,4)->2, (1,1)->0, (1,2)->0, (1,3)->2; tile B -> fallback 1.
    np.testing.assert_array_equal(scores["nearest_outcrop_baseline"].matrix,
                                  matrix({(5, 0): 3, (5, 2): 1, (2, 2): 2, (1, 1): 10}))
    base = scores["nearest_outcrop_baseline"].compute()
    assert base["pixel_accuracy"] == pytest.approx(12 / 16)
    assert base["mpa"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)  # classes 1, 2 right; 5 never
    model = scores["under_cover"].compute()
    assert model["pixel_accuracy"] == 0.0 and model["iou"][3] is None


def test_oracle_model_is_perfect_under_cover_and_scored_against_labels_on_outcrop():
    """A model that outputs the bedrock itself (the image is its one-hot)."""
    one_hot = lambda b: torch.nn.functional.one_hot(b, 10).permute(2, 0, 1).float()  # noqa: E731
    scores = score_model(nn.Identity(), items(image=one_hot), batch_size=1, fallback_class=0)
    assert scores["under_cover"].compute()["pixel_accuracy"] == 1.0
    # On the outcrop it predicts the decoys 7 and 9 where the map says 0.
    np.testing.assert_array_equal(scores["outcrop"].matrix, matrix({(0, 0): 1, (0, 7): 1, (0, 9): 1, (2, 2): 1}))


def test_windows_give_the_baseline_km_distances():
    """A 1-degree window at 60 N rendered at 2 x 3 px: rows are 111.2 km apart, columns 1/2 deg * cos 60 deg
    = 27.8 km, which changes the nearest outcrop."""
    labels = np.array([[C, C, 1], [2, C, C]], dtype=np.uint8)
    bedrock = torch.tensor([[5, 6, 1], [2, 7, 8]])  # a distinct truth per cover pixel, to tell them apart
    item = [{"image": torch.zeros(1, 2, 3), "mask": torch.tensor(labels.astype(np.int64)), "bedrock": bedrock,
             "window": 4}]
    square = score_model(constant_model(0), item)["nearest_outcrop_baseline"].matrix
    at_60n = score_model(constant_model(0), item, windows=[Window(4, 1.0, 10.0, 11.0, 59.5, 60.5)])
    # Square pixels: (0,0) is 1 px from class 2, 2 px from class 1; (1,2) is 1 px from class 1, 2 px from 2.
    np.testing.assert_array_equal(square, matrix({(5, 2): 1, (6, 1): 1, (7, 2): 1, (8, 1): 1}))
    # On the ground: (0,0) is 55.6 km from class 1 and 111.2 km from class 2; (1,2) the other way round.
    np.testing.assert_array_equal(at_60n["nearest_outcrop_baseline"].matrix,
                                  matrix({(5, 1): 1, (6, 1): 1, (7, 2): 1, (8, 2): 1}))


def test_without_bedrock_only_the_outcrop_is_scored():
    scores = score_model(constant_model(0), items(with_bedrock=False))
    assert scores["under_cover"] is None and scores["nearest_outcrop_baseline"] is None
    assert scores["outcrop"].matrix[0, 0] == 3


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The small scene of test_predict prepared as a dataset: four 1-degree windows, one val, one test."""
    from test_predict import REGION

    folder = tmp_path_factory.mktemp("evaluate")
    paths = write_scene(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # less than the recipe's margin round the region
        data = prepare_dataset(paths["bouguer"], paths["labels"], folder / "data", region=REGION,
                               recipe=ProcessingRecipe(margin_km=50.0), bedrock=paths["bedrock"],
                               scales=(Scale(1.0, 1.0),), val_fraction=0.34)
    manifest = json.loads((data / "manifest.json").read_text())
    run = folder / "run" / "checkpoints"
    run.mkdir(parents=True)
    ckpt = save_checkpoint(run / "best.pt", normalisation=manifest["normalisation"],
                           manifest_sha256=file_sha256(data / "manifest.json"))
    return {"data": data, "checkpoint": ckpt, "run": folder / "run"}


def test_evaluate_cli_writes_reports_beside_the_checkpoint(prepared, capsys):
    """The stand-in checkpoint predicts class 0 everywhere, so each matrix is one column of known counts."""
    main(["--checkpoint", str(prepared["checkpoint"]), "--data", str(prepared["data"]), "--split", "test",
          "--device", "cpu"])
    printed = capsys.readouterr().out
    results = json.loads((prepared["run"] / "evaluation_test.json").read_text())
    markdown = (prepared["run"] / "evaluation_test.md").read_text()
    assert markdown in printed and "| IoU (%) |" in markdown and "Nearest-outcrop baseline" in markdown

    tiles = TileDataset(prepared["data"], "test", tile_size=32, return_bedrock=True)
    mask = np.stack([t["mask"].numpy() for t in tiles])
    bedrock = np.stack([t["bedrock"].numpy() for t in tiles])
    outcrop = np.bincount(mask[mask != C], minlength=10)
    hidden = np.bincount(bedrock[mask == C], minlength=10)
    assert outcrop.sum() > 0 and hidden.sum() > 0
    expected_outcrop = np.zeros((10, 10), dtype=np.int64)
    expected_outcrop[:, 0] = outcrop
    expected_hidden = np.zeros((10, 10), dtype=np.int64)
    expected_hidden[:, 0] = hidden
    np.testing.assert_array_equal(results["outcrop"]["confusion_matrix"], expected_outcrop)
    np.testing.assert_array_equal(results["under_cover"]["confusion_matrix"], expected_hidden)
    assert results["outcrop"]["pixel_accuracy"] == pytest.approx(outcrop[0] / outcrop.sum())
    np.testing.assert_array_equal(np.sum(results["nearest_outcrop_baseline"]["confusion_matrix"], axis=1), hidden)
    assert results["checkpoint_sha256"] == file_sha256(prepared["checkpoint"])
    assert results["trained_on_this_dataset"] is True and results["windows"] == len(tiles) == 1
    assert {"versions", "git_commit", "created_utc", "config"} <= set(results)


def test_evaluate_function_with_another_tile_size(prepared, tmp_path):
    results = evaluate(prepared["checkpoint"], prepared["data"], "val", tile_size=16, device="cpu",
                       out_dir=tmp_path, progress=False)
    assert results["tile_size"] == 16 and (tmp_path / "evaluation_val.json").is_file()
    scored = results["outcrop"]["pixels"] + results["under_cover"]["pixels"]
    assert scored == 16 * 16  # one val window: every pixel is outcrop or cover
    assert results["under_cover"]["pixels"] == results["nearest_outcrop_baseline"]["pixels"]
    assert results["under_cover"]["pixels"] == results["outcrop_prior_under_cover"]["pixels"]
    assert "# Evaluation on the val windows" in format_report(results)


def test_prediction_prior_channels_are_the_training_ones(prepared):
    """ggm-predict builds the geology-prior channels itself; they must equal the training tiles' own."""
    tiles = TileDataset(prepared["data"], "train", tile_size=24, geology_prior=True)
    for item in (tiles[0], tiles[1]):
        np.testing.assert_array_equal(item["image"][3:].numpy(), prior_channels(item["mask"].numpy()))
    cover = prior_channels(np.array([[0, C], [9, 3]]))[:, 0, 1]  # cover: not known, the nearest class (0) carried
    assert cover[10] == 0 and cover[0] == 1 and cover[11] == pytest.approx(1 / 32)


def test_cli_errors(prepared, tmp_path, capsys):
    def fails(args):
        with pytest.raises(SystemExit) as info:
            main(args)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and "Traceback" not in err
        return err

    err = fails(["--checkpoint", str(tmp_path / "nope.pt"), "--data", str(prepared["data"])])
    assert len(err.splitlines()) == 1 and "nope.pt" in err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    err = fails(["--checkpoint", str(corrupt), "--data", str(prepared["data"])])
    assert len(err.splitlines()) == 1 and "corrupt.pt" in err
    err = fails(["--checkpoint", str(prepared["checkpoint"]), "--data", str(tmp_path), "--device", "cpu"])
    assert len(err.splitlines()) == 1 and "manifest.json" in err
    assert "--split" in fails(["--checkpoint", str(prepared["checkpoint"]), "--split", "holdout"])
    moved = torch.load(prepared["checkpoint"], weights_only=True)
    moved["config"] = {"data": str(tmp_path / "gone")}
    torch.save(moved, tmp_path / "moved.pt")
    err = fails(["--checkpoint", str(tmp_path / "moved.pt"), "--device", "cpu"])
    assert len(err.splitlines()) == 1 and "--data" in err and "gone" in err
    assert not list(tmp_path.glob("evaluation_*"))
